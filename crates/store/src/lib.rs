//! muster's durable store, backend-neutral: the [`Store`] trait, the
//! [`Change`]s it applies, what it loads and lists ([`Snapshot`],
//! [`InboxQuery`], [`InboxEntry`], [`HistoryQuery`], [`SearchQuery`],
//! [`PruneReport`]) and its error ([`StoreError`]). The daemon keeps the
//! live roster and unread mail in memory and writes every change here; at
//! start it loads the snapshot back. History (read mail) and full-text
//! search ([`search`]) are queried from here.
//!
//! No backend lives in this crate: `muster-store-sqlite` is the embedded
//! default. With the `conformance` feature, [`conformance`] holds the
//! store's contract as tests that every backend runs unchanged.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod health;
pub mod job;
pub mod search;
pub mod shared;

use std::sync::Arc;

use async_trait::async_trait;
use muster_core::token::TokenRecord;
use muster_core::{
    Delivery, DeliveryState, Membership, Message, Millis, Reservation, Room, Session, Target,
};

/// Why a store operation failed. A failed submit applied nothing of its
/// changes; whatever the variant, the caller may go on using the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed underneath (its database, driver or connection).
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// What is stored cannot be read as muster's data (or was written by a
    /// newer muster).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A submit (or prune) was refused, say for a message id that is
    /// already stored; the text names the cause.
    #[error("write failed: {0}")]
    Write(String),
    /// The backend could not write at all (a full disk, an I/O error, a
    /// lost connection): nothing of the request was applied, and later
    /// writes are tried afresh.
    #[error("the store cannot write: {0}")]
    Unavailable(String),
    /// Another daemon sharing the store decided first (a nickname it gave
    /// out, reservations it changed since this daemon last caught up):
    /// nothing of the submit was applied; catch up and decide again.
    #[error("another daemon decided first: {0}")]
    Conflict(String),
    /// The store has stopped taking work.
    #[error("the store has stopped")]
    Stopped,
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// Wraps a backend's own error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// One change to durable state. The changes of one submit are applied
/// together or not at all. A store that several daemons share logs them
/// (as JSON, see [`shared`]), and every daemon applies the others' in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Insert or replace a session (every stored field; `link_up` and `wake`
    /// are live state and load as `false` and `None`).
    PutSession(Session),
    /// Refresh a session's wall-clock `last_seen_at` (the hook backstop);
    /// never moves it backwards, and an unknown session changes nothing.
    TouchSession { id: String, last_seen_at: Millis },
    /// Forget a session and its room memberships (retention); its
    /// deliveries stay until their messages are pruned.
    ForgetSession { id: String },
    /// A new message with one delivery record per recipient. An id that is
    /// already stored fails the submit.
    PutMessage {
        message: Message,
        deliveries: Vec<Delivery>,
    },
    /// Move a delivery forward; a state that is not ahead of the stored one,
    /// or a delivery that does not exist, changes nothing (not even
    /// `updated_at`).
    AdvanceDelivery {
        message_id: String,
        recipient: String,
        state: DeliveryState,
        at: Millis,
    },
    /// Acknowledge every delivery of a recipient's whose message id is at
    /// most `upto`. Ids compare as byte strings, which orders the daemon's
    /// ULIDs by time; `upto` need not be a stored id.
    AckUpTo {
        recipient: String,
        upto: String,
        at: Millis,
    },
    /// Create a room; a room of that name already stored is kept as it is.
    PutRoom(Room),
    /// Add a member; a membership already stored is kept as it is.
    JoinRoom(Membership),
    /// Remove one membership, if there is one (the room stays).
    LeaveRoom { room: String, session_id: String },
    /// Insert or replace a reservation (by id).
    PutReservation(Reservation),
    /// Remove a reservation, if there is one.
    DeleteReservation { id: String },
    /// Every reservation a session holds (it left the roster).
    DeleteReservationsOf { session_id: String },
    /// A guard, no change: fails the whole submit with
    /// [`StoreError::Conflict`] if another daemon sharing the store logged a
    /// reservation change after log position `seq` (what this daemon had
    /// applied when it decided). A store no other daemon writes to passes it.
    ReservationsUnchangedSince { seq: u64 },
    /// A new token (see `muster_core::token`). A token id already stored,
    /// or a name a live token has, fails the submit (with
    /// [`StoreError::Conflict`] where several daemons share the store).
    PutToken(TokenRecord),
    /// Revoke a token; one already revoked, or unknown, changes nothing.
    RevokeToken { id: String, at: Millis },
}

impl Change {
    /// Whether the change touches reservations (what
    /// [`Change::ReservationsUnchangedSince`] guards).
    pub fn touches_reservations(&self) -> bool {
        matches!(
            self,
            Change::PutReservation(_)
                | Change::DeleteReservation { .. }
                | Change::DeleteReservationsOf { .. }
        )
    }
}

/// What the daemon loads at start: one consistent state (no commit is ever
/// half in it).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Every known session, on the roster or away, by `connected_at`, then id.
    pub sessions: Vec<Session>,
    /// By name.
    pub rooms: Vec<Room>,
    /// By room, then `joined_at`.
    pub memberships: Vec<Membership>,
    /// Deliveries still `queued` or `pushed`, with their messages, by
    /// message id (oldest first), then recipient.
    pub unread: Vec<(Message, Delivery)>,
    /// Reservations, expired ones included (the daemon drops those), by
    /// `created_at`, then id.
    pub reservations: Vec<Reservation>,
    /// Every token, revoked ones included, by `created_at`, then id.
    pub tokens: Vec<TokenRecord>,
}

/// A recipient's view of one message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InboxEntry {
    #[serde(flatten)]
    pub message: Message,
    pub state: DeliveryState,
}

/// Which mail of a recipient to list.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxQuery {
    pub recipient: String,
    /// Include mail already surfaced, seen or acked (else only `queued` and
    /// `pushed`).
    pub include_read: bool,
    /// At most this many, the newest ones; `usize::MAX` lists them all.
    pub limit: usize,
}

/// Which messages a history lists (or a search looks in): newest first,
/// a page of `limit` ending before a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    /// Only what this principal (a session id or `op:<name>`) sent or has
    /// a delivery for; `None`: everyone's messages.
    pub reader: Option<String>,
    /// Only messages addressed to this session, person or room.
    pub to: Option<Target>,
    /// Only messages whose id is below this one (the last id of the page
    /// before); it need not be a stored id.
    pub before: Option<String>,
    /// At most this many, the newest ones; `usize::MAX` lists them all.
    pub limit: usize,
}

impl HistoryQuery {
    /// Everyone's messages, the newest `limit`.
    pub fn newest(limit: usize) -> Self {
        HistoryQuery {
            reader: None,
            to: None,
            before: None,
            limit,
        }
    }
}

/// A full-text search of message bodies: the messages `within` lists
/// whose body holds every word of `text` (see [`search`] for what a word
/// and a match are).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    pub text: String,
    pub within: HistoryQuery,
}

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub messages: u64,
    pub deliveries: u64,
    pub sessions: u64,
}

/// A submitted write: resolves once it is durable, or with the error that
/// kept all of it out.
pub type Commit =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'static>>;

/// A durable store of muster's state.
///
/// - **Durability**: when a [`Commit`] resolves `Ok`, its changes survive
///   the process and the store being dropped and opened again.
/// - **Ordering**: writes take effect in the order they were submitted,
///   whenever their futures are awaited; within a submit, changes apply in
///   list order. [`submit`](Store::submit) and
///   [`apply_later`](Store::apply_later) take their place in that order
///   when called, [`apply`](Store::apply) and [`prune`](Store::prune) when
///   first polled.
/// - **Atomicity**: a submit is applied whole or not at all; on error,
///   nothing of it is applied, and writes before and after it are
///   unaffected.
/// - **Reads** (`load`, `inbox`, `message`, `deliveries`, `thread`,
///   `history`, `search`) see every write whose commit has resolved.
/// - **Faults**: a write the backend fails underneath (a full disk, an I/O
///   error, a lost connection) fails its requests with the backend's words,
///   and the writer goes on: the next write is tried afresh, so writes
///   resume by themselves once the fault clears. [`health`](Store::health)
///   says meanwhile that the most recent write failed, and why.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Everything the daemon needs in memory, as one consistent snapshot.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Queues the changes as one atomic write *now*, ordered after every
    /// write submitted before this call, and returns a future that resolves
    /// once they are durable (or refused). Submitting under the caller's own
    /// lock makes the store's order the caller's order.
    fn submit(&self, changes: Vec<Change>) -> Commit;
    /// [`submit`](Store::submit), for a write that holds nobody up until it
    /// is durable (its waiter only logs a failure): the backend may hold it
    /// a few milliseconds to commit it together with the next write, so the
    /// write that follows it does not wait for a commit of its own first.
    fn submit_unhurried(&self, changes: Vec<Change>) -> Commit {
        self.submit(changes)
    }
    /// [`submit`](Store::submit), then waits: durable when this returns `Ok`.
    async fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.submit(changes).await
    }
    /// Queues changes like [`submit`](Store::submit), in the same order,
    /// but nobody waits: a failure is only logged, and the changes are
    /// durable once any write submitted after them has resolved. For writes
    /// whose loss on a crash costs nothing (liveness touches).
    fn apply_later(&self, changes: Vec<Change>);
    /// A recipient's mail as `query` selects it, ordered by message id
    /// (oldest first): the newest `limit` of it.
    async fn inbox(&self, query: InboxQuery) -> Result<Vec<InboxEntry>, StoreError>;
    /// One message by id, read or not.
    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError>;
    /// Every delivery record of one message, by recipient.
    async fn deliveries(&self, message_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// The thread `id` belongs to (its root and every reply below it),
    /// oldest first, as far as `reader` (a principal) sent or received it;
    /// at most 1,000 messages, and empty for an unknown id.
    async fn thread(&self, id: &str, reader: &str) -> Result<Vec<Message>, StoreError>;
    /// Messages as `query` selects them, newest (highest id) first.
    async fn history(&self, query: HistoryQuery) -> Result<Vec<Message>, StoreError>;
    /// The messages `query.within` selects whose body matches `query.text`
    /// ([`search`]), newest first. A text with no word matches nothing;
    /// no text is ever read as the backend's query syntax.
    async fn search(&self, query: SearchQuery) -> Result<Vec<Message>, StoreError>;
    /// Deletes messages sent before `cutoff` with their deliveries, and
    /// forgets sessions (with their memberships) that left the roster
    /// before it; rooms stay. Ordered and atomic like a submit, and durable
    /// when it returns.
    async fn prune(&self, cutoff: Millis) -> Result<PruneReport, StoreError>;
    /// Whether writes are succeeding (see [`health::WriteHealth`]); the
    /// same one for the store's life. A store that does not track its
    /// writes reports a health that is never degraded.
    fn health(&self) -> Arc<health::WriteHealth> {
        Arc::new(health::WriteHealth::new())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    // Proves `conformance_tests!` runs every behaviour `conformance` defines,
    // so no backend silently skips one added later.
    #[test]
    fn conformance_macro_lists_every_behaviour() {
        let source = include_str!("conformance.rs");
        let defined: BTreeSet<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split('<').next())
            .collect();
        let start = source.find("macro_rules! conformance_tests").unwrap();
        let end = start + source[start..].find("(@current $harness:expr;").unwrap();
        let listed: BTreeSet<&str> = source[start..end]
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert!(defined.len() >= 20, "found the behaviours: {defined:?}");
        assert_eq!(defined, listed);
    }
}
