//! The shim link (`/ws`): typed JSON frames between a `muster mcp` shim and
//! the daemon. Requests carry ids and get replies; the daemon pushes mail;
//! either side may ping. One text frame holds one JSON object.

use serde::{Deserialize, Serialize};

use crate::api::{ErrorDetail, RegisterRequest};
use crate::{Message, Millis, Session};

/// Bumped on any incompatible change; the daemon refuses other versions.
pub const LINK_PROTOCOL: u32 = 2;

/// Read buffer of each end of the link. tungstenite zero-fills the free part
/// of its read buffer (up to this much) before every read, so its 128 KiB
/// default cost a 128 KiB memset per frame; frames are a few KiB, and a
/// larger one is still read whole, in reads of this size.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// How often a shim pings; the daemon drops a link silent for three times this.
pub const HEARTBEAT_MS: Millis = 10_000;

/// Frames a shim sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame: who this link speaks for, and whether it can show pushes.
    Hello {
        protocol: u32,
        /// The session this link speaks for. With `per_call`, its id is
        /// empty and its other fields describe every session a call names.
        session: RegisterRequest,
        /// The shim can write `notifications/claude/channel` to its harness
        /// now: its MCP client has finished a handshake. A shim that links
        /// before that says false, then `Ready` once it can.
        can_push: bool,
        /// The harness names the session on each call (Codex, opencode,
        /// Gemini CLI): the link acts, per request, for that session.
        #[serde(default)]
        per_call: bool,
    },
    /// An operation, answered by a `Reply` with the same id. `session` names
    /// who acts on a per-call link (and must match a session link's own).
    Request {
        id: u64,
        op: Op,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// These pushed messages were written to the agent's harness.
    Delivered {
        message_ids: Vec<String>,
    },
    /// Whether the shim can write pushes from now on (its MCP client
    /// finished a handshake). Until then the daemon pushes nothing to it, so
    /// no sender waits on a shim that cannot write.
    Ready {
        can_push: bool,
    },
    Ping {
        at: Millis,
    },
}

/// Frames the daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `Hello`: the session as registered (none on a per-call link).
    Welcome {
        protocol: u32,
        session: Option<Session>,
    },
    /// Answer to a `Request`: `result` on success, else `error`.
    Reply {
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorDetail>,
    },
    /// Mail for the linked session; the shim answers `Delivered` once written out.
    Push {
        message: Message,
    },
    Pong {
        at: Millis,
    },
    /// The link is refused or closing (bad hello, protocol mismatch).
    Fatal {
        error: ErrorDetail,
    },
}

/// What a session can ask of the daemon; the MCP tools map onto these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Whoami,
    Roster {
        #[serde(default)]
        all: bool,
    },
    Send {
        to: String,
        body: String,
        #[serde(default)]
        reply_to: Option<String>,
    },
    Broadcast {
        room: String,
        body: String,
    },
    Read {
        #[serde(default)]
        all: bool,
        #[serde(default)]
        limit: Option<usize>,
    },
    Ack {
        #[serde(default)]
        ids: Vec<String>,
        #[serde(default)]
        all: bool,
    },
    Wait {
        timeout_s: u64,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    Rooms,
    SetStatus {
        text: String,
    },
    Thread {
        message_id: String,
    },
    Reserve {
        paths: Vec<String>,
        #[serde(default = "default_true")]
        exclusive: bool,
        #[serde(default)]
        ttl_s: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
    },
    Release {
        #[serde(default)]
        paths: Vec<String>,
    },
    Reservations,
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_as_tagged_json() {
        let f = ClientFrame::Request {
            id: 7,
            op: Op::Send {
                to: "x".into(),
                body: "hi".into(),
                reply_to: None,
            },
            session: None,
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(
            text,
            r#"{"type":"request","id":7,"op":{"op":"send","to":"x","body":"hi","reply_to":null}}"#
        );
        assert_eq!(serde_json::from_str::<ClientFrame>(&text).unwrap(), f);
        let r: ServerFrame =
            serde_json::from_str(r#"{"type":"reply","id":7,"result":{"a":1}}"#).unwrap();
        assert!(matches!(
            r,
            ServerFrame::Reply {
                id: 7,
                result: Some(_),
                error: None
            }
        ));
    }
}
