//! The terms the JSON and TOML editors share: why a file cannot be edited,
//! and the record that lets uninstall undo an edit.

use serde::{Deserialize, Serialize};

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
