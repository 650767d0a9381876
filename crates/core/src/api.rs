//! The JSON shapes of the daemon's `/api/v1` API, shared by the daemon, the
//! CLI and the tests so the two sides cannot drift apart.
//!
//! Routes (all JSON; errors are `ErrorBody` with a 4xx/5xx status):
//!
//! | method & path | body / query | answer |
//! |---|---|---|
//! | `GET /api/v1/roster` | `?all=true` adds sessions that left; `?limit=N&after=C` pages | `Roster` |
//! | `POST /api/v1/sessions` | `RegisterRequest` | `Session` |
//! | `GET /api/v1/sessions/{id}` | — | `SessionView` (id, nickname or unique prefix) |
//! | `PATCH /api/v1/sessions/{id}` | `UpdateSessionRequest` | `Session` |
//! | `DELETE /api/v1/sessions/{id}` | — | `Session` (now away) |
//! | `POST /api/v1/messages` | `SendRequest` | `SendResponse` |
//! | `POST /api/v1/broadcast` | `BroadcastRequest` | `SendResponse` |
//! | `GET /api/v1/inbox` | `?as=…&all=true&limit=N` | `Inbox` (marks what it shows surfaced) |
//! | `POST /api/v1/inbox/ack` | `AckRequest` | `AckResponse` |
//! | `GET /api/v1/rooms` | — | `Rooms` |
//! | `POST /api/v1/rooms/join` | `RoomRequest` | `RoomView` |
//! | `POST /api/v1/rooms/leave` | `RoomRequest` | `RoomView` |
//! | `GET /api/v1/events` | — | server-sent events, each `Event` |
//! | `GET /api/v1/messages/{id}/thread` | `?as=…` | `Thread` |
//! | `GET /api/v1/messages` | `?as=…&to=…&limit=N&before=ID` | `MessagePage`: history, newest first |
//! | `GET /api/v1/search` | `?q=…&as=…&to=…&limit=N&before=ID` | `MessagePage`: messages whose body has the words |
//! | `GET /api/v1/reservations` | — | `Reservations` |
//! | `POST /api/v1/reservations` | `ReserveRequest` | `Reservations` (what was granted; 409 names the holders) |
//! | `POST /api/v1/reservations/release` | `ReleaseRequest` | `ReleaseResponse` |
//! | `POST /api/v1/reservations/check` | `CheckRequest` | `Reservations` (the claims in the way) |
//! | `GET /api/v1/status` | — | `Status` |
//!
//! `as` names who acts: a session (id, nickname or unique id prefix) or a
//! person as `op:<name>`. Omitted, it is the daemon's own operator.

use serde::{Deserialize, Serialize};

use crate::{DeliveryState, Message, Millis, Reservation, Session};

pub const API_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unknown_recipient`, `invalid_input`, `body_too_large`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
    /// Close matches for an unknown or ambiguous address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<crate::Match>,
}

/// The roster in arrival order, whole or one page of it (`?limit=N`, then
/// `?after=<next>` for the page that follows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Roster {
    pub sessions: Vec<Session>,
    /// Sessions on the roster (with `?all=true`, those that left too),
    /// whether or not this answer holds them all.
    #[serde(default)]
    pub total: usize,
    /// This answer is a page: sessions of the roster are not in it.
    #[serde(default)]
    pub partial: bool,
    /// Where the next page starts (`?after=`); none when no session follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A place in the roster's order (arrival, then id) that a page starts
/// after: `<connected_at>.<session id>`. It names no position, so a page
/// is not thrown off by sessions that join or leave between the requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterCursor {
    pub connected_at: Millis,
    pub id: String,
}

impl RosterCursor {
    pub fn after(session: &Session) -> Self {
        RosterCursor {
            connected_at: session.connected_at,
            id: session.id.clone(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        let connected_at = at.parse().ok()?;
        (!id.is_empty()).then(|| RosterCursor {
            connected_at,
            id: id.to_string(),
        })
    }
}

impl std::fmt::Display for RosterCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.connected_at, self.id)
    }
}

/// One session with its recent activity, for the dashboard's page of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionView {
    pub session: Session,
    /// Its latest changes of activity or tool, oldest first: at most
    /// [`ACTIVITY_KEPT`], kept in memory since the daemon started.
    #[serde(default)]
    pub activity: Vec<ActivityChange>,
}

/// How many activity changes the daemon keeps per session.
pub const ACTIVITY_KEPT: usize = 32;

/// A session's activity (or last tool) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityChange {
    /// When the session was last heard as it changed (wall clock).
    pub at: Millis,
    pub activity: crate::Activity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// Registers a session or refreshes it; fields left out keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub id: String,
    #[serde(default)]
    pub harness: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateSessionRequest {
    #[serde(default)]
    pub status: Option<String>,
    /// `false`: never start a turn in this session for mail; `true` allows it again.
    #[serde(default)]
    pub wake: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    pub to: String,
    pub body: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// `as` named the session the way its own shell does (the CLI took it
    /// from `MUSTER_SESSION_ID`), not with `--as`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_from_env: bool,
    /// How the caller was authenticated: the daemon sets it, a request
    /// cannot.
    #[serde(skip)]
    pub via: crate::SentVia,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BroadcastRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    pub room: String,
    pub body: String,
    /// As [`SendRequest::as_from_env`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_from_env: bool,
    /// As [`SendRequest::via`].
    #[serde(skip)]
    pub via: crate::SentVia,
}

/// One recipient's delivery as the sender is told it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryView {
    /// Session id or `op:<name>`.
    pub recipient: String,
    pub nickname: String,
    pub state: DeliveryState,
    /// Whether the recipient is on the roster now (false: mail waits for its return).
    pub present: bool,
    /// An idle recipient was woken to read it (a turn was started for it).
    #[serde(default)]
    pub woken: bool,
}

/// What the daemon tells a waker (`GET /api/v1/wake`, event `wake`): start
/// a turn in this idle session, whose mail is waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeEvent {
    pub session: String,
    /// The urgent mail that caused the wake (it surfaces with the turn).
    pub message_ids: Vec<String>,
    /// The one short line to put into the session.
    pub prompt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendResponse {
    pub message: Message,
    /// What became of it, over all recipients.
    pub state: crate::protocol::SendOutcome,
    pub deliveries: Vec<DeliveryView>,
}

impl SendResponse {
    /// The answer for the agent whose tool call sent the message: all of
    /// it but the message's body, which that agent has just written.
    pub fn for_sender(&self) -> SentAnswer<'_> {
        SentAnswer {
            message: (&self.message).into(),
            state: self.state,
            deliveries: &self.deliveries,
        }
    }
}

/// A [`SendResponse`] as its sender's tool result (see `for_sender`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SentAnswer<'a> {
    pub message: crate::MessageHead<'a>,
    pub state: crate::protocol::SendOutcome,
    pub deliveries: &'a [DeliveryView],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxMessage {
    #[serde(flatten)]
    pub message: Message,
    /// The state before this read (what the recipient had not yet seen is `queued` or `pushed`).
    pub state: DeliveryState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inbox {
    /// Whose inbox: a session id or `op:<name>`.
    pub principal: String,
    pub messages: Vec<InboxMessage>,
    /// More messages matched than `messages` holds: the limit cut older
    /// history (with `all`) or later unread mail (without). False from a
    /// daemon that predates the field.
    #[serde(default)]
    pub truncated: bool,
    /// How many messages matched in all, when the daemon knows it: always for
    /// unread mail; with `all`, only when nothing was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    /// Message ids to ack; empty with `all` acks everything received so far.
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AckResponse {
    pub acked: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    pub room: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoomMember {
    pub id: String,
    pub nickname: String,
    pub present: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomView {
    pub name: String,
    pub kind: crate::protocol::RoomKind,
    pub members: Vec<RoomMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rooms {
    pub rooms: Vec<RoomView>,
}

/// One change, as streamed on `/api/v1/events` (SSE `event:` is `kind`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at: Millis,
    /// `session.joined`, `session.updated`, `session.left`, `message.sent`,
    /// `delivery.updated`, `room.joined`, `room.left`, `sweep`.
    pub kind: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub api_version: u32,
    pub started_at: Millis,
    pub store: String,
    pub data_dir: String,
    pub operator: String,
    pub sessions_present: usize,
    pub sessions_known: usize,
    pub unread_deliveries: usize,
    pub stale_after_ms: Millis,
    pub hook_backstop_ms: Millis,
    pub sweep_interval_ms: Millis,
    pub retention_ms: Millis,
}

/// Default reservation lifetime, and the longest allowed.
pub const DEFAULT_TTL_S: u64 = 1_800;
pub const MAX_TTL_S: u64 = 86_400;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    /// Paths or globs, relative to the session's working directory or absolute.
    pub paths: Vec<String>,
    /// Exclusive (the default) or shared.
    #[serde(default = "yes")]
    pub exclusive: bool,
    /// Seconds until the claim lapses (default 1,800, at most 86,400).
    #[serde(default)]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    /// Paths or globs to release; none releases everything the session holds.
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseResponse {
    pub released: usize,
}

/// A reservation with its holder's nickname.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReservationView {
    #[serde(flatten)]
    pub reservation: Reservation,
    pub nickname: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservations {
    pub reservations: Vec<ReservationView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thread {
    pub messages: Vec<Message>,
    /// How far each message the reader sent got with each recipient
    /// (`queued` → `pushed` → `surfaced` → `seen` → `acked`): whether the
    /// recipient's model has it in its context yet.
    #[serde(default)]
    pub deliveries: Vec<ThreadDelivery>,
}

/// A page of messages, newest first: history (`GET /api/v1/messages`) or
/// search results (`GET /api/v1/search`). With `as`, only what that reader
/// sent or has a delivery for; `to` keeps what was addressed to one
/// session, person or room (`#room`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// The next page's `before` (the last id here); `null` on the last page.
    pub next: Option<String>,
    /// More messages match than this page holds.
    pub partial: bool,
}

/// A page's size when the request names none.
pub const PAGE_DEFAULT: usize = 50;
/// The largest page a request may ask for.
pub const PAGE_MAX: usize = 500;
/// The longest search text, in characters.
pub const SEARCH_MAX_CHARS: usize = 512;

/// One recipient's progress with one message of a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadDelivery {
    pub message_id: String,
    pub recipient: String,
    pub nickname: String,
    pub state: DeliveryState,
    pub updated_at: Millis,
}

/// Which of these files (absolute paths) others hold exclusively; `as`, if
/// a session, is not in its own way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    #[serde(default, rename = "as")]
    pub as_: Option<String>,
    pub paths: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roster_cursor_reads_back_what_it_wrote() {
        let cursor = RosterCursor {
            connected_at: 1_733_000_000_123,
            id: "a.b-c".into(),
        };
        assert_eq!(cursor.to_string(), "1733000000123.a.b-c");
        assert_eq!(RosterCursor::parse(&cursor.to_string()), Some(cursor));
        for bad in ["", "12", "12.", "x.id", ".id", "1e3.id"] {
            assert_eq!(RosterCursor::parse(bad), None, "{bad:?}");
        }
    }
}
