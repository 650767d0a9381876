//! muster's durable store. The daemon keeps the live roster and unread mail
//! in memory and writes every change here first; at start it loads the
//! snapshot back. History (read mail) is queried from here.
//!
//! [`Store`] is the seam a PostgreSQL implementation will fill; [`sqlite`]
//! is the embedded default.

pub mod sqlite;

use async_trait::async_trait;
use muster_core::{
    Delivery, DeliveryState, Membership, Message, Millis, Reservation, Room, Session,
};

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("write failed: {0}")]
    Write(String),
    #[error("the store's writer has stopped")]
    WriterGone,
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One change to durable state. A batch of changes is applied in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace a session (all fields).
    PutSession(Session),
    /// Refresh a session's wall-clock `last_seen_at` (the hook backstop).
    TouchSession {
        id: String,
        last_seen_at: Millis,
    },
    /// Forget a session entirely (retention); its deliveries stay until pruned.
    ForgetSession {
        id: String,
    },
    /// A new message with one delivery record per recipient.
    PutMessage {
        message: Message,
        deliveries: Vec<Delivery>,
    },
    /// Move a delivery forward; a state that is not ahead of the stored one changes nothing.
    AdvanceDelivery {
        message_id: String,
        recipient: String,
        state: DeliveryState,
        at: Millis,
    },
    /// Acknowledge every delivery of a recipient's up to and including `upto` (a message id).
    AckUpTo {
        recipient: String,
        upto: String,
        at: Millis,
    },
    PutRoom(Room),
    JoinRoom(Membership),
    LeaveRoom {
        room: String,
        session_id: String,
    },
    /// Insert or replace a reservation (by id).
    PutReservation(Reservation),
    DeleteReservation {
        id: String,
    },
    /// Every reservation a session holds (it left the roster).
    DeleteReservationsOf {
        session_id: String,
    },
}

/// What the daemon loads at start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// Every known session, on the roster or away.
    pub sessions: Vec<Session>,
    pub rooms: Vec<Room>,
    pub memberships: Vec<Membership>,
    /// Deliveries still `queued` or `pushed`, with their messages, oldest first.
    pub unread: Vec<(Message, Delivery)>,
    /// Reservations, expired ones included (the daemon drops those).
    pub reservations: Vec<Reservation>,
}

/// A recipient's view of one message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InboxEntry {
    #[serde(flatten)]
    pub message: Message,
    pub state: DeliveryState,
}

/// Which mail of a recipient to list, newest last.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxQuery {
    pub recipient: String,
    /// Include mail already surfaced or acked.
    pub include_read: bool,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub messages: u64,
    pub deliveries: u64,
    pub sessions: u64,
}

/// A submitted write: resolves once it is durable (or has failed).
pub type Commit =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'static>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Everything the daemon needs in memory.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Queues the changes for one transaction *now*, in call order, and
    /// returns a future that resolves when they are durable. Submitting under
    /// the caller's own lock makes the store's order the caller's order.
    fn submit(&self, changes: Vec<Change>) -> Commit;
    /// Applies the changes in one transaction; durable when this returns.
    async fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.submit(changes).await
    }
    /// Queues changes for the next batch without waiting (liveness touches,
    /// whose loss on a crash costs nothing).
    fn apply_later(&self, changes: Vec<Change>);
    /// A recipient's mail, oldest first, at most `limit` (the newest ones).
    async fn inbox(&self, query: InboxQuery) -> Result<Vec<InboxEntry>, StoreError>;
    /// One message by id.
    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError>;
    /// Every delivery record of one message, by recipient.
    async fn deliveries(&self, message_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// The thread `id` belongs to (its root and every reply below it),
    /// oldest first, as far as `reader` (a principal) sent or received it.
    async fn thread(&self, id: &str, reader: &str) -> Result<Vec<Message>, StoreError>;
    /// Deletes messages sent before `cutoff` with their deliveries, and
    /// forgets sessions that left the roster before it.
    async fn prune(&self, cutoff: Millis) -> Result<PruneReport, StoreError>;
}
