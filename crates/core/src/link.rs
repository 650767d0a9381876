//! The shim link (`/ws`): typed JSON frames between a `muster mcp` shim and
//! the daemon. Requests carry ids and get replies; the daemon pushes mail;
//! either side may ping. One text frame holds one JSON object.

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::api::{ErrorDetail, RegisterRequest};
use crate::{Message, Millis, Session};

/// Bumped on any incompatible change; the daemon refuses other versions.
pub const LINK_PROTOCOL: u32 = 2;

/// Read buffer of a shim's end of the link. tungstenite zero-fills the free
/// part of its read buffer (up to this much) before every read, so its 128
/// KiB default cost a 128 KiB memset per frame, and 8 KiB still about a
/// fifth of a shim's instructions per message (callgrind). A shim's frames
/// are a reply or a push of a few hundred bytes; a larger one (a push of a
/// 6,000-character body) is still read whole, in reads of this size. The
/// daemon's end reads with 2 KiB too (`LINK_READ_BUFFER`).
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// How often a shim pings; the daemon drops a link silent for three times this.
pub const HEARTBEAT_MS: Millis = 10_000;

/// Frames a shim sends.
///
/// Decoded by hand (see [`Fields`]), encoded by the derive.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
///
/// Decoded by hand (see [`Fields`]), encoded by the derive.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        result: Option<JsonText>,
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
    /// Full-text search of the mail the session sent or got, newest first.
    Search {
        query: String,
        #[serde(default)]
        limit: Option<usize>,
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

/// A JSON value kept as its compact text. A reply's result is written by
/// the daemon once and shown to the agent as that same text, so the shim
/// passes it through instead of parsing it into a tree and printing it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The value's compact text (what `Value::to_string` prints).
    pub fn from_value(value: &serde_json::Value) -> Self {
        // A `Value` always serializes; its text is valid JSON by construction.
        let text = value.to_string();
        JsonText(RawValue::from_string(text).unwrap_or_else(|_| null_text()))
    }

    /// A value's compact text, serialized straight to text (no tree in
    /// between, and no second read to check it).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(JsonText)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree, for callers that look inside it.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

fn null_text() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<'de> Deserialize<'de> for ClientFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fields::deserialize(d)?
            .client_frame()
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ServerFrame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fields::deserialize(d)?
            .server_frame()
            .map_err(serde::de::Error::custom)
    }
}

/// A frame's top-level fields, each kept as its raw JSON text, so that each
/// is decoded straight into its type once the frame's `type` is known.
/// serde's derive for an internally tagged enum first copies the whole frame
/// into an intermediate tree (profiled: a seventh of a shim's CPU per
/// message), and cannot hand a reply's result on as text. Frames are JSON
/// text, which is all this decodes (`serde_json::from_str`/`from_slice`).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key, borrowed from the frame unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a link frame (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(4);
                while let Some((Key(name), value)) = map.next_entry::<Key, &RawValue>()? {
                    if fields.iter().any(|(k, _)| *k == name) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{name}`"
                        )));
                    }
                    fields.push((name, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

const CLIENT_KINDS: &[&str] = &["hello", "request", "delivered", "ready", "ping"];
const SERVER_KINDS: &[&str] = &["welcome", "reply", "push", "pong", "fatal"];

impl<'a> Fields<'a> {
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    fn decode<T: DeserializeOwned>(name: &str, raw: &RawValue) -> serde_json::Result<T> {
        serde_json::from_str(raw.get())
            .map_err(|e| serde::de::Error::custom(format_args!("field `{name}`: {e}")))
    }

    /// A field without a default: missing is an error.
    fn required<T: DeserializeOwned>(&self, name: &'static str) -> serde_json::Result<T> {
        match self.raw(name) {
            Some(raw) => Self::decode(name, raw),
            None => Err(serde::de::Error::missing_field(name)),
        }
    }

    /// A field with a default (an `Option` defaults to none).
    fn defaulted<T: DeserializeOwned + Default>(&self, name: &str) -> serde_json::Result<T> {
        self.raw(name)
            .map_or(Ok(T::default()), |raw| Self::decode(name, raw))
    }

    /// A field kept as its text (`null` or missing: none). The frame's
    /// parse already checked it is JSON, so it is copied, not read again:
    /// a reply's result is most of the bytes a shim reads per call.
    fn json_text(&self, name: &str) -> Option<JsonText> {
        self.raw(name)
            .filter(|raw| raw.get() != "null")
            .map(|raw| JsonText(raw.to_owned()))
    }

    fn kind(&self, known: &'static [&'static str]) -> serde_json::Result<Cow<'a, str>> {
        let Some(raw) = self.raw("type") else {
            return Err(serde::de::Error::missing_field("type"));
        };
        let Key(kind) = serde_json::from_str(raw.get())?;
        if !known.contains(&&*kind) {
            return Err(serde::de::Error::unknown_variant(&kind, known));
        }
        Ok(kind)
    }

    fn client_frame(&self) -> serde_json::Result<ClientFrame> {
        Ok(match &*self.kind(CLIENT_KINDS)? {
            "hello" => ClientFrame::Hello {
                protocol: self.required("protocol")?,
                session: self.required("session")?,
                can_push: self.required("can_push")?,
                per_call: self.defaulted("per_call")?,
            },
            "request" => ClientFrame::Request {
                id: self.required("id")?,
                op: self.required("op")?,
                session: self.defaulted("session")?,
            },
            "delivered" => ClientFrame::Delivered {
                message_ids: self.required("message_ids")?,
            },
            "ready" => ClientFrame::Ready {
                can_push: self.required("can_push")?,
            },
            _ => ClientFrame::Ping {
                at: self.required("at")?,
            },
        })
    }

    fn server_frame(&self) -> serde_json::Result<ServerFrame> {
        Ok(match &*self.kind(SERVER_KINDS)? {
            "welcome" => ServerFrame::Welcome {
                protocol: self.required("protocol")?,
                session: self.defaulted("session")?,
            },
            "reply" => ServerFrame::Reply {
                id: self.required("id")?,
                result: self.json_text("result"),
                error: self.defaulted("error")?,
            },
            "push" => ServerFrame::Push {
                message: self.required("message")?,
            },
            "pong" => ServerFrame::Pong {
                at: self.required("at")?,
            },
            _ => ServerFrame::Fatal {
                error: self.required("error")?,
            },
        })
    }
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
            serde_json::from_str(r#"{"type":"reply","id":7,"result":{"a": 1}}"#).unwrap();
        let ServerFrame::Reply {
            id: 7,
            result: Some(result),
            error: None,
        } = r
        else {
            panic!("not the reply: {r:?}");
        };
        // The result is passed on as the text it came as.
        assert_eq!(result.as_str(), r#"{"a": 1}"#);
    }

    fn client(text: &str) -> Result<ClientFrame, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    fn server(text: &str) -> Result<ServerFrame, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    fn refused<T: std::fmt::Debug>(got: Result<T, String>, why: &str) {
        match got {
            Err(e) => assert!(e.contains(why), "{e:?} does not say {why:?}"),
            Ok(frame) => panic!("{frame:?} was taken; expected an error saying {why:?}"),
        }
    }

    #[test]
    fn every_client_frame_round_trips() {
        let session = RegisterRequest {
            id: "s1".into(),
            harness: Some("claude".into()),
            ..RegisterRequest::default()
        };
        let frames = [
            ClientFrame::Hello {
                protocol: LINK_PROTOCOL,
                session: session.clone(),
                can_push: true,
                per_call: true,
            },
            ClientFrame::Request {
                id: 3,
                op: Op::Read {
                    all: true,
                    limit: Some(2),
                },
                session: Some("s2".into()),
            },
            ClientFrame::Delivered {
                message_ids: vec!["a".into(), "b".into()],
            },
            ClientFrame::Ready { can_push: false },
            ClientFrame::Ping { at: 5 },
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            assert_eq!(client(&text), Ok(frame), "{text}");
        }
        // Field order, defaults, escapes and unknown fields are as serde's.
        let text = format!(
            r#"{{"session":{},"can_push":false,"type":"hello","protocol":2}}"#,
            serde_json::to_string(&session).unwrap()
        );
        assert_eq!(
            client(&text),
            Ok(ClientFrame::Hello {
                protocol: 2,
                session,
                can_push: false,
                per_call: false
            })
        );
        assert_eq!(
            client(r#"{"type":"p\u0069ng","\u0061t":1,"extra":[1,{"x":null}]}"#),
            Ok(ClientFrame::Ping { at: 1 })
        );
        assert_eq!(
            client(r#"{"type":"request","id":1,"op":{"op":"whoami"},"session":null}"#),
            Ok(ClientFrame::Request {
                id: 1,
                op: Op::Whoami,
                session: None
            })
        );
    }

    #[test]
    fn a_wrong_client_frame_is_refused_with_its_reason() {
        refused(
            client(r#"{"type":"hello","protocol":2,"session":{"id":"s"}}"#),
            "missing field `can_push`",
        );
        refused(
            client(r#"{"type":"request","id":1,"op":{"op":"nope"}}"#),
            "unknown variant `nope`",
        );
        refused(
            client(r#"{"type":"request","op":{"op":"whoami"}}"#),
            "missing field `id`",
        );
        refused(
            client(r#"{"type":"ping","at":1,"at":2}"#),
            "duplicate field `at`",
        );
        refused(
            client(r#"{"type":"ping","at":"soon"}"#),
            "field `at`: invalid type: string \"soon\"",
        );
        refused(
            client(r#"{"type":"bogus"}"#),
            "unknown variant `bogus`, expected one of `hello`",
        );
        refused(client(r#"{"at":1}"#), "missing field `type`");
        refused(client(r#"{"type":7}"#), "invalid type: integer `7`");
        refused(client("[1,2]"), "expected a link frame");
        refused(client("{"), "EOF");
    }

    #[test]
    fn every_server_frame_round_trips() {
        let message: Message = serde_json::from_str(
            r#"{"id":"01J","from":"a","from_nickname":"x","to":{"kind":"session","name":"b"},"reply_to":null,"body":"hi \"there\"","sent_at":9}"#,
        )
        .unwrap();
        let error = ErrorDetail {
            code: "c".into(),
            message: "m".into(),
            matches: vec![crate::error::Match {
                id: "a".into(),
                nickname: "x".into(),
                present: true,
            }],
        };
        let frames = [
            ServerFrame::Welcome {
                protocol: 2,
                session: None,
            },
            ServerFrame::Reply {
                id: 4,
                result: Some(JsonText::from_value(
                    &serde_json::json!({"state": "pushed"}),
                )),
                error: None,
            },
            ServerFrame::Reply {
                id: 5,
                result: None,
                error: Some(error.clone()),
            },
            ServerFrame::Push { message },
            ServerFrame::Pong { at: 3 },
            ServerFrame::Fatal { error },
        ];
        for frame in frames {
            let text = serde_json::to_string(&frame).unwrap();
            assert_eq!(server(&text), Ok(frame), "{text}");
        }
        assert_eq!(
            server(r#"{"type":"welcome","protocol":2}"#),
            Ok(ServerFrame::Welcome {
                protocol: 2,
                session: None
            })
        );
        assert_eq!(
            server(r#"{"type":"reply","id":4,"result":null}"#),
            Ok(ServerFrame::Reply {
                id: 4,
                result: None,
                error: None
            })
        );
    }

    #[test]
    fn a_wrong_server_frame_is_refused_with_its_reason() {
        refused(server(r#"{"type":"push"}"#), "missing field `message`");
        refused(
            server(r#"{"type":"reply","result":1}"#),
            "missing field `id`",
        );
        refused(
            server(r#"{"type":"fatal","error":{}}"#),
            "field `error`: missing field `code`",
        );
        refused(
            server(r#"{"type":"pong","at":3,"at":4}"#),
            "duplicate field `at`",
        );
        refused(
            server(r#"{"type":"hello"}"#),
            "unknown variant `hello`, expected one of `welcome`",
        );
        refused(server("null"), "expected a link frame");
    }
}
