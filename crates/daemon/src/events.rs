//! The change feed behind `/api/v1/events`: a broadcast of `Event`s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use muster_core::api::Event;
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it is told it lagged.
const CAPACITY: usize = 4_096;

pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
    seq: AtomicU64,
}

impl Bus {
    pub fn new() -> Self {
        Bus {
            tx: broadcast::channel(CAPACITY).0,
            seq: AtomicU64::new(0),
        }
    }

    /// Publishes an event; `data` is only built when someone is listening,
    /// which keeps the hot paths free of JSON work.
    pub fn publish(&self, kind: &str, data: impl FnOnce() -> serde_json::Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.tx.send(Arc::new(Event {
            seq,
            at,
            kind: kind.to_string(),
            data: data(),
        }));
    }

    /// Event streams open now.
    pub fn streams(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
