//! Names muster shares with the harnesses and its own clients on the wire:
//! hook events, the harnesses it speaks to, what a send reports, and the
//! kinds of room. Each is parsed once where it arrives (a route, a flag)
//! and matched exhaustively from then on, so adding one is a compile error
//! everywhere it must be handled.

use serde::{Deserialize, Serialize};

/// The hook events the daemon serves at `/hook/{event}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    SessionStart,
    PromptSubmit,
    PreToolUse,
    PostToolUse,
    Stop,
    SessionEnd,
}

impl HookEvent {
    pub const ALL: [HookEvent; 6] = [
        HookEvent::SessionStart,
        HookEvent::PromptSubmit,
        HookEvent::PreToolUse,
        HookEvent::PostToolUse,
        HookEvent::Stop,
        HookEvent::SessionEnd,
    ];

    /// The path segment, as in `/hook/{event}`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::SessionStart => "session-start",
            HookEvent::PromptSubmit => "prompt-submit",
            HookEvent::PreToolUse => "pre-tool-use",
            HookEvent::PostToolUse => "post-tool-use",
            HookEvent::Stop => "stop",
            HookEvent::SessionEnd => "session-end",
        }
    }

    pub fn parse(s: &str) -> Option<HookEvent> {
        HookEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Claude Code's name for it (`hookEventName`), used when a payload
    /// does not say.
    pub fn harness_name(self) -> &'static str {
        match self {
            HookEvent::SessionStart => "SessionStart",
            HookEvent::PromptSubmit => "UserPromptSubmit",
            HookEvent::PreToolUse => "PreToolUse",
            HookEvent::PostToolUse => "PostToolUse",
            HookEvent::Stop => "Stop",
            HookEvent::SessionEnd => "SessionEnd",
        }
    }

    /// After it, the harness sends the model a request (a *request
    /// boundary*): a session's start, a user prompt, a tool's result.
    pub fn starts_a_request(self) -> bool {
        matches!(
            self,
            HookEvent::SessionStart | HookEvent::PromptSubmit | HookEvent::PostToolUse
        )
    }
}

impl std::fmt::Display for HookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The harnesses muster plugs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Harness {
    /// Claude Code.
    Claude,
    /// Codex CLI.
    Codex,
    Opencode,
    /// Gemini CLI.
    Gemini,
}

impl Harness {
    pub const ALL: [Harness; 4] = [
        Harness::Claude,
        Harness::Codex,
        Harness::Opencode,
        Harness::Gemini,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Harness::Claude => "claude",
            Harness::Codex => "codex",
            Harness::Opencode => "opencode",
            Harness::Gemini => "gemini",
        }
    }

    pub fn parse(s: &str) -> Option<Harness> {
        Harness::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// Its MCP server is told the session on each call rather than at start
    /// (one server process serves every session of the harness).
    pub fn names_session_per_call(self) -> bool {
        match self {
            Harness::Claude => false,
            Harness::Codex | Harness::Opencode | Harness::Gemini => true,
        }
    }
}

impl std::fmt::Display for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a send tells its sender about delivery, over all recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendOutcome {
    /// Every recipient's shim wrote it to its harness live.
    Pushed,
    /// Every recipient has it live or is being woken for it.
    Woken,
    /// At least one recipient gets it at its next hook or read.
    Queued,
    /// Nobody to deliver to (a room with no other members).
    None,
}

impl SendOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Pushed => "pushed",
            SendOutcome::Woken => "woken",
            SendOutcome::Queued => "queued",
            SendOutcome::None => "none",
        }
    }
}

/// Where a room's members come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// Derived from the roster: `everyone`, `project:<name>`, `op:<name>`.
    Automatic,
    /// Joined by name.
    Named,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_serializes_as_on_the_wire() {
        for e in HookEvent::ALL {
            assert_eq!(HookEvent::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        for h in Harness::ALL {
            assert_eq!(Harness::parse(h.as_str()), Some(h));
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
        }
        for o in [
            SendOutcome::Pushed,
            SendOutcome::Woken,
            SendOutcome::Queued,
            SendOutcome::None,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(
            serde_json::to_value(RoomKind::Automatic).unwrap(),
            "automatic"
        );
        assert_eq!(HookEvent::parse("PreToolUse"), None, "route names only");
        assert_eq!(Harness::parse("Claude"), None);
    }
}
