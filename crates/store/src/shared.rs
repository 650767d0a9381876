//! A store several daemons share (team mode): the seam between the daemon
//! and a backend that more than one daemon writes to (PostgreSQL).
//!
//! The database is the system of record. Every submit a daemon makes is
//! also logged as one [`Logged`] entry with a sequence number: sequence
//! order is commit order, so a daemon that applies the other daemons'
//! entries in sequence order ends up with the memory the database has. It
//! learns of new entries from [`Shared::notifications`], and reads them by
//! sequence ([`Shared::changes_after`]), so a missed notification or a
//! reconnect loses nothing. Beside the log: each daemon's heartbeat with the
//! sessions linked to it ([`Shared::heartbeat`]), and one sweep leader
//! ([`Shared::lead`]).

use async_trait::async_trait;
use muster_core::Millis;
use tokio::sync::watch;

use crate::{Change, Snapshot, StoreError};

/// One logged submit: what one daemon committed in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its place in the log: one more than the entry committed before it.
    pub seq: u64,
    /// The daemon that committed it ([`Shared::daemon_id`]).
    pub origin: String,
    pub changes: Vec<Change>,
}

/// A session linked to another daemon, as that daemon's last heartbeat said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    pub session_id: String,
    /// The daemon it is linked to.
    pub daemon: String,
    /// How long ago, by the database's clock, that daemon last heartbeat.
    pub heartbeat_age_ms: Millis,
}

/// What a store shared by several daemons offers beyond [`crate::Store`].
#[async_trait]
pub trait Shared: Send + Sync + 'static {
    /// This daemon's id in the log and among the heartbeats; new at every
    /// start, so a restarted daemon never inherits its old links.
    fn daemon_id(&self) -> &str;
    /// [`crate::Store::load`], with the log position the snapshot is
    /// consistent with: every entry up to it is in the snapshot, none after.
    async fn load_at(&self) -> Result<(Snapshot, u64), StoreError>;
    /// Logged entries after `seq`, every origin's, oldest first, at most
    /// `limit`; this daemon's own come without their changes (it has them).
    /// The first entry's `seq` is `seq + 1` unless the log was pruned past
    /// it (the caller then cannot catch up entry by entry).
    async fn changes_after(&self, seq: u64, limit: usize) -> Result<Vec<Logged>, StoreError>;
    /// Changes whenever an entry may have been logged (a notification, or
    /// the listener reconnecting, when it may have missed some).
    fn notifications(&self) -> watch::Receiver<u64>;
    /// Records that this daemon is alive and that `linked` are the sessions
    /// linked to it now; answers the links of every other daemon that has
    /// heartbeat recently enough to still matter.
    async fn heartbeat(&self, linked: Vec<String>) -> Result<Vec<PeerLink>, StoreError>;
    /// Whether this daemon leads the sweep now: it takes the lead if no one
    /// holds it, and keeps it until its connection to the database ends.
    async fn lead(&self) -> bool;
    /// A clean stop: this daemon's heartbeat and links are removed, so the
    /// others stop counting its sessions as linked at once.
    async fn leave(&self);
}
