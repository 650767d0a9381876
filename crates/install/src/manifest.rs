//! The record of what `muster install` wrote, kept in
//! `$XDG_STATE_HOME/muster/installs.json`, so `--uninstall` can put each file
//! back byte for byte, or, if the user changed it since, take out only muster's part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::edit::Undo;
use super::Error;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default = "version")]
    pub version: u32,
    /// Keyed by the file's absolute path.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, FileRecord>,
}

fn version() -> u32 {
    1
}

/// What install did to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub harness: String,
    /// Whether the file was there before muster's first install touched it.
    pub existed: bool,
    /// The copy of its bytes from before that first change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// SHA-256 of the bytes muster last wrote.
    pub sha256: String,
    /// False once an install edited a file the user had changed after an earlier
    /// install: the backup no longer holds everything the user wants kept.
    pub restorable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undo: Vec<Undo>,
    /// Directories install created for the file, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs_created: Vec<PathBuf>,
}

impl Manifest {
    /// Reads the manifest; a missing file is an empty manifest.
    pub fn load(path: &Path) -> Result<Manifest, Error> {
        match super::files::read(path) {
            Ok(None) => Ok(Manifest {
                version: 1,
                ..Manifest::default()
            }),
            Ok(Some(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::ManifestInvalid {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(source) => Err(Error::ManifestUnreadable {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        super::files::write_atomic(path, text.as_bytes())
    }
}
