//! The records muster keeps: sessions, messages, deliveries and rooms.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// How a session reaches the daemon; the sweeper applies a different rule to each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// Talks only through hooks or HTTP MCP: live while `last_seen_at` is recent.
    #[default]
    Hooks,
    /// A shim link is or was attached: live while the link is up, plus a grace window.
    Link,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Hooks => "hooks",
            LinkKind::Link => "link",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hooks" => Some(LinkKind::Hooks),
            "link" => Some(LinkKind::Link),
            _ => None,
        }
    }
}

/// What the agent is doing, as its hooks last told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    #[default]
    Unknown,
    Idle,
    Busy,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Unknown => "unknown",
            Activity::Idle => "idle",
            Activity::Busy => "busy",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "idle" => Activity::Idle,
            "busy" => Activity::Busy,
            _ => Activity::Unknown,
        }
    }
}

/// One agent session. `id` is the harness's own session id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub nickname: String,
    pub harness: String,
    pub host: String,
    pub operator: String,
    pub pid: Option<u32>,
    pub cwd: String,
    /// Name of the repository root the session works in (empty if none).
    pub project: String,
    pub branch: String,
    pub status: String,
    pub activity: Activity,
    /// Name of the last tool the agent ran (never its arguments).
    pub last_tool: Option<String>,
    /// Whether the session can take live pushes (a shim with channels shown).
    pub can_push: bool,
    pub link: LinkKind,
    /// A shim link is attached right now. Live state, never stored: a
    /// session loaded from the store starts with it false.
    #[serde(default)]
    pub link_up: bool,
    /// How an idle turn of this session can be started by mail (`pty` for
    /// `muster run`, `opencode` for its plugin, `codex` for app-server), or
    /// `off` when it opted out; `None` when nothing can wake it. Live state,
    /// never stored.
    #[serde(default)]
    pub wake: Option<String>,
    pub connected_at: Millis,
    /// Wall clock of the last hook call or link activity; persisted, so the
    /// hook-only backstop survives restarts.
    pub last_seen_at: Millis,
    /// When the session left the roster; `None` while it is on it. A session
    /// that left stays known, so mail to it waits for its return.
    pub left_at: Option<Millis>,
    /// The id of the token that registered the session, when one did (see
    /// `token`): then only that token (or an admin) may act for it. `None`
    /// for sessions the daemon's own user registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Session {
    /// A fresh session with only its identity and clock set.
    pub fn new(id: &str, nickname: &str, now: Millis) -> Self {
        Session {
            id: id.to_string(),
            nickname: nickname.to_string(),
            harness: String::new(),
            host: String::new(),
            operator: String::new(),
            pid: None,
            cwd: String::new(),
            project: String::new(),
            branch: String::new(),
            status: String::new(),
            activity: Activity::Unknown,
            last_tool: None,
            can_push: false,
            link: LinkKind::Hooks,
            link_up: false,
            wake: None,
            connected_at: now,
            last_seen_at: now,
            left_at: None,
            owner: None,
        }
    }

    pub fn present(&self) -> bool {
        self.left_at.is_none()
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Target {
    /// One session, by id.
    Session(String),
    /// A person, by operator name.
    Operator(String),
    /// A room, by its full name (`everyone`, `project:x`, `op:x` or a named room).
    Room(String),
}

impl Target {
    /// The address as stored and shown: a session id, `op:<name>` or `#<room>`.
    pub fn address(&self) -> String {
        match self {
            Target::Session(id) => id.clone(),
            Target::Operator(name) => operator_principal(name),
            Target::Room(room) => format!("#{room}"),
        }
    }

    pub fn parse_address(s: &str) -> Target {
        if let Some(room) = s.strip_prefix('#') {
            Target::Room(room.to_string())
        } else if let Some(op) = s.strip_prefix("op:") {
            Target::Operator(op.to_string())
        } else {
            Target::Session(s.to_string())
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Session(_) | Target::Operator(_) => "direct",
            Target::Room(_) => "room",
        }
    }
}

/// The principal string of an operator (a person): `op:<name>`. Session ids
/// never contain `:`, so the two never collide.
pub fn operator_principal(name: &str) -> String {
    format!("op:{name}")
}

/// A message as sent. Deliveries are kept per recipient beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Time-ordered id (a ULID): sorting by id sorts by send time.
    pub id: String,
    /// Sender principal: a session id or `op:<name>`.
    pub from: String,
    /// Sender's nickname at send time (the operator name for a person).
    pub from_nickname: String,
    pub to: Target,
    pub reply_to: Option<String>,
    pub body: String,
    pub sent_at: Millis,
    /// How the sender was authenticated when it sent this.
    #[serde(default)]
    pub via: SentVia,
}

/// A message without its body, serialized as [`Message`] is but for that
/// field: what its own sender is told it sent (the sender wrote the body;
/// echoed, a long message would take as much of its context again).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MessageHead<'a> {
    pub id: &'a str,
    pub from: &'a str,
    pub from_nickname: &'a str,
    pub to: &'a Target,
    pub reply_to: Option<&'a str>,
    pub sent_at: Millis,
    pub via: SentVia,
}

impl<'a> From<&'a Message> for MessageHead<'a> {
    fn from(m: &'a Message) -> Self {
        MessageHead {
            id: &m.id,
            from: &m.from,
            from_nickname: &m.from_nickname,
            to: &m.to,
            reply_to: m.reply_to.as_deref(),
            sent_at: m.sent_at,
            via: m.via,
        }
    }
}

/// How a message's sender was authenticated when it sent it: whether the
/// agent spoke for itself, or someone spoke for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SentVia {
    /// Sent before muster recorded this.
    #[default]
    Unrecorded,
    /// The sending session's own shim link: its agent's tool call.
    Link,
    /// The sending session's own MCP session over HTTP (`/mcp`).
    Mcp,
    /// A session's own shell: the CLI, naming the session through the
    /// environment the harness set (`MUSTER_SESSION_ID`), not `--as`.
    SessionShell,
    /// A person as themselves (the CLI, the API).
    Person,
    /// A person on the daemon's machine spoke for the session (`--as`).
    OnBehalf,
    /// A holder of the daemon's token spoke for the session.
    Token,
}

impl SentVia {
    /// Whether someone other than the sending session's own agent spoke
    /// for it (the recipient is told).
    pub fn spoken_for(self) -> bool {
        matches!(self, SentVia::OnBehalf | SentVia::Token)
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SentVia::Unrecorded => "unrecorded",
            SentVia::Link => "link",
            SentVia::Mcp => "mcp",
            SentVia::SessionShell => "session_shell",
            SentVia::Person => "person",
            SentVia::OnBehalf => "on_behalf",
            SentVia::Token => "token",
        }
    }

    /// The stored name read back; an unknown one is `None`.
    pub fn parse(name: &str) -> Option<SentVia> {
        [
            SentVia::Unrecorded,
            SentVia::Link,
            SentVia::Mcp,
            SentVia::SessionShell,
            SentVia::Person,
            SentVia::OnBehalf,
            SentVia::Token,
        ]
        .into_iter()
        .find(|v| v.as_str() == name)
    }
}

/// How far a message has got with one recipient. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Stored; will surface at the recipient's next turn.
    Queued,
    /// Written to the recipient's live link.
    Pushed,
    /// Put into the agent's context by a hook, or read by a tool or the CLI.
    Surfaced,
    /// Found in the harness's own transcript: the model had it in its context.
    Seen,
    /// The recipient said it has dealt with it.
    Acked,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Pushed => "pushed",
            DeliveryState::Surfaced => "surfaced",
            DeliveryState::Seen => "seen",
            DeliveryState::Acked => "acked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(DeliveryState::Queued),
            "pushed" => Some(DeliveryState::Pushed),
            "surfaced" => Some(DeliveryState::Surfaced),
            "seen" => Some(DeliveryState::Seen),
            "acked" => Some(DeliveryState::Acked),
            _ => None,
        }
    }
    /// Unread: not yet in the agent's context by any route.
    pub fn is_unread(self) -> bool {
        self == DeliveryState::Queued
    }
}

/// A message's progress with one recipient (a session id or `op:<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub message_id: String,
    pub recipient: String,
    pub state: DeliveryState,
    pub updated_at: Millis,
}

/// A named room that sessions join by name. Automatic rooms (`everyone`,
/// `project:<name>`, `op:<name>`) are derived from the roster and not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub name: String,
    pub created_by: String,
    pub created_at: Millis,
}

/// A session's membership of a named room; it sees messages sent after `joined_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub room: String,
    pub session_id: String,
    pub joined_at: Millis,
}

/// The kinds of automatic room, derived from session fields.
pub fn automatic_rooms_of(session: &Session) -> Vec<String> {
    let mut rooms = vec!["everyone".to_string()];
    if !session.project.is_empty() {
        rooms.push(format!("project:{}", session.project));
    }
    if !session.operator.is_empty() {
        rooms.push(format!("op:{}", session.operator));
    }
    rooms
}

/// Whether a room name is one of the automatic kinds.
pub fn is_automatic_room(name: &str) -> bool {
    name == "everyone" || name.starts_with("project:") || name.starts_with("op:")
}

/// A session's claim on a path or glob within one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub session_id: String,
    /// Absolute path of the repository root the pattern is relative to.
    pub root: String,
    /// Normalized pattern relative to `root` (see `paths`).
    pub pattern: String,
    pub exclusive: bool,
    pub reason: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl Reservation {
    pub fn live(&self, now: Millis) -> bool {
        self.expires_at > now
    }

    /// Whether this claim and another cannot both be held: same repository,
    /// overlapping patterns, and at least one of them exclusive.
    pub fn conflicts_with(&self, root: &str, pattern: &str, exclusive: bool) -> bool {
        self.root == root
            && (self.exclusive || exclusive)
            && crate::paths::overlaps(&self.pattern, pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_head_is_the_message_but_its_body() {
        // Proves the head serializes every field of a message, in the same
        // order, but the body: a field added to `Message` and not to
        // `MessageHead` fails here.
        let m = Message {
            id: "01ABC".into(),
            from: "s-1".into(),
            from_nickname: "swift-otter".into(),
            to: Target::Room("general".into()),
            reply_to: Some("01AAA".into()),
            body: "the body".into(),
            sent_at: 7,
            via: SentVia::Link,
        };
        let mut whole = serde_json::to_value(&m).unwrap();
        whole.as_object_mut().unwrap().shift_remove("body");
        let head = serde_json::to_value(MessageHead::from(&m)).unwrap();
        assert_eq!(head, whole);
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&head), keys(&whole));
    }
}
