//! What the installer does to one file, in terms both the JSON and TOML editors
//! share: the edits, the errors, and the record that lets uninstall undo them.

use serde::{Deserialize, Serialize};

use super::json_merge::{self, JsonDoc, JsonEdit};
use super::toml_merge::{self, TomlEdit};

/// Why a settings file cannot be edited. Nothing is written when one occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// Not valid JSON/TOML, at a 1-based line and column.
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    /// Valid, but muster's keys hold something muster cannot edit safely.
    Shape(String),
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::Syntax {
                line,
                column,
                reason,
            } => write!(f, "line {line}, column {column}: {reason}"),
            EditError::Shape(why) => write!(f, "{why}"),
        }
    }
}

/// Something install created (`prior` = None) or replaced (`prior` = the old value,
/// as JSON or TOML text) at a key path, so a structural uninstall can put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undo {
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<String>,
}

impl Undo {
    pub fn created(path: &[String]) -> Undo {
        Undo {
            path: path.to_vec(),
            prior: None,
        }
    }
}

/// How muster's part of a file is written.
#[derive(Debug, Clone)]
pub enum FileEdits {
    Json(Vec<JsonEdit>),
    Toml(Vec<TomlEdit>),
    /// A file that is muster's alone (the opencode plugin).
    Whole(String),
}

impl FileEdits {
    pub fn format_name(&self) -> &'static str {
        match self {
            FileEdits::Json(_) => "JSON",
            FileEdits::Toml(_) => "TOML",
            FileEdits::Whole(_) => "text",
        }
    }

    /// The file's text with muster installed, and what install created or replaced.
    /// `current` is None when the file does not exist.
    pub fn install(&self, current: Option<&str>) -> Result<(String, Vec<Undo>), EditError> {
        match self {
            FileEdits::Json(edits) => {
                let mut doc = match current {
                    Some(text) => JsonDoc::parse(text)?,
                    None => JsonDoc::empty(),
                };
                let undo = json_merge::install(&mut doc, edits)?;
                Ok((doc.render(), undo))
            }
            FileEdits::Toml(edits) => {
                let mut doc = toml_merge::parse(current.unwrap_or(""))?;
                let undo = toml_merge::install(&mut doc, edits)?;
                Ok((doc.to_string(), undo))
            }
            FileEdits::Whole(text) => Ok((text.clone(), Vec::new())),
        }
    }

    /// The file's text with muster's entries taken out, or None if nothing of the file
    /// should remain (muster's own file, or an emptied file that install created).
    pub fn uninstall(
        &self,
        current: &str,
        undo: &[Undo],
        created: bool,
    ) -> Result<Option<String>, EditError> {
        let text = match self {
            FileEdits::Json(edits) => {
                let mut doc = JsonDoc::parse(current)?;
                json_merge::uninstall(&mut doc, edits, undo);
                if created && doc.root.is_empty() {
                    return Ok(None);
                }
                doc.render()
            }
            FileEdits::Toml(edits) => {
                let mut doc = toml_merge::parse(current)?;
                toml_merge::uninstall(&mut doc, edits, undo);
                let text = doc.to_string();
                if created && text.trim().is_empty() {
                    return Ok(None);
                }
                text
            }
            FileEdits::Whole(_) => return Ok(None),
        };
        Ok(Some(text))
    }
}
