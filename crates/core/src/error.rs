//! The errors a command can fail with before anything is stored.

use serde::{Deserialize, Serialize};

/// A close match offered when an address is unknown or ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub id: String,
    pub nickname: String,
    /// Whether the session is on the roster now (false: known, away).
    pub present: bool,
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.id.starts_with("op:") {
            write!(f, "{}", self.id)
        } else {
            let away = if self.present { "" } else { ", away" };
            write!(f, "{} ({}{away})", self.nickname, self.id)
        }
    }
}

fn list(matches: &[Match]) -> String {
    if matches.is_empty() {
        return String::new();
    }
    let names: Vec<String> = matches.iter().map(ToString::to_string).collect();
    format!("; did you mean: {}", names.join(", "))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("unknown recipient {address:?}{}", list(.close))]
    UnknownRecipient { address: String, close: Vec<Match> },
    #[error("ambiguous recipient {address:?} matches {}", list(.matches).trim_start_matches("; did you mean: "))]
    AmbiguousRecipient {
        address: String,
        matches: Vec<Match>,
    },
    #[error("unknown room {room:?}{}", if .close.is_empty() { String::new() } else { format!("; known rooms: {}", .close.join(", ")) })]
    UnknownRoom { room: String, close: Vec<String> },
    #[error("unknown session {0:?}")]
    UnknownSession(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl CoreError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// A stable machine-readable code for the JSON API.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::UnknownRecipient { .. } => "unknown_recipient",
            CoreError::AmbiguousRecipient { .. } => "ambiguous_recipient",
            CoreError::UnknownRoom { .. } => "unknown_room",
            CoreError::UnknownSession(_) => "unknown_session",
            CoreError::Invalid { .. } => "invalid_input",
        }
    }
}
