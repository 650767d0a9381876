//! Whether a store's writes are succeeding: [`WriteHealth`], kept by a
//! backend's writer and read by the daemon (`/healthz`, `/metrics`).
//!
//! The writer reports each batch: [`WriteHealth::wrote`] when it committed,
//! [`WriteHealth::failed`] when the backend failed underneath (a full disk,
//! an I/O error, a lost connection), never for a request the store refused
//! on its merits (a duplicate id). The store is *degraded* from a failure
//! until the next write that commits. On the hot path (every healthy batch)
//! this costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What kind of fault a failed write met, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The disk (or the database's size limit) is full.
    Full,
    /// The file system or the device failed (or is read-only).
    Io,
    /// The database stayed locked by someone else past the wait.
    Busy,
    /// No connection to the database server.
    Connection,
    /// Anything else the backend reported, including a writer that panicked.
    Other,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Full,
        FaultKind::Io,
        FaultKind::Busy,
        FaultKind::Connection,
        FaultKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Full => "full",
            FaultKind::Io => "io",
            FaultKind::Busy => "busy",
            FaultKind::Connection => "connection",
            FaultKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The fault the most recent write met: what, in words, and since when
/// writes have been failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// The backend's own words, say "database or disk is full".
    pub reason: String,
    /// When the first of the failures in a row came.
    pub since: Instant,
}

impl Fault {
    /// How long writes have been failing.
    pub fn for_how_long(&self) -> Duration {
        self.since.elapsed()
    }
}

/// A store's write health, shared by its writer and its readers.
#[derive(Debug)]
pub struct WriteHealth {
    degraded: AtomicBool,
    /// The most recent batch of requests failed; a store's own probe
    /// succeeding does not clear it (see [`WriteHealth::probed`]).
    requests_failing: AtomicBool,
    fault: Mutex<Option<Fault>>,
    errors: [AtomicU64; FaultKind::ALL.len()],
}

impl Default for WriteHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteHealth {
    pub const fn new() -> Self {
        WriteHealth {
            degraded: AtomicBool::new(false),
            requests_failing: AtomicBool::new(false),
            fault: Mutex::new(None),
            errors: [const { AtomicU64::new(0) }; FaultKind::ALL.len()],
        }
    }

    /// The store's own small probe write committed: the fault may be over
    /// (health says so), but requests, which write more, may still fail at
    /// the edge of a full disk, so [`WriteHealth::requests_failing`] stays
    /// until one of theirs commits.
    pub fn probed(&self) {
        if self.degraded.load(Ordering::Relaxed) {
            *self.lock() = None;
            self.degraded.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the most recent batch of requests failed (and none has
    /// committed since): a hook then hands out no mail, whose surfacing
    /// could not be recorded.
    pub fn requests_failing(&self) -> bool {
        self.requests_failing.load(Ordering::Relaxed)
    }

    /// A write of requests committed: whatever failed before is over.
    pub fn wrote(&self) {
        self.requests_failing.store(false, Ordering::Relaxed);
        if self.degraded.load(Ordering::Relaxed) {
            *self.lock() = None;
            self.degraded.store(false, Ordering::Relaxed);
        }
    }

    /// `requests` write requests failed with a fault of the backend.
    pub fn failed(&self, kind: FaultKind, reason: impl std::fmt::Display, requests: u64) {
        if requests > 0 {
            self.requests_failing.store(true, Ordering::Relaxed);
        }
        self.errors[kind.index()].fetch_add(requests, Ordering::Relaxed);
        let mut fault = self.lock();
        let since = fault.as_ref().map_or_else(Instant::now, |f| f.since);
        *fault = Some(Fault {
            kind,
            reason: reason.to_string(),
            since,
        });
        self.degraded.store(true, Ordering::Relaxed);
    }

    /// Whether the most recent write failed (one atomic load).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The fault the most recent write met, if it failed.
    pub fn fault(&self) -> Option<Fault> {
        if !self.is_degraded() {
            return None;
        }
        self.lock().clone()
    }

    /// Write requests failed by a fault since the store opened, by kind.
    pub fn errors(&self) -> [(FaultKind, u64); FaultKind::ALL.len()] {
        FaultKind::ALL.map(|k| (k, self.errors[k.index()].load(Ordering::Relaxed)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Fault>> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a failure degrades the store until the next write commits,
    // keeps the start of a run of failures, and counts every failed request
    // by kind.
    #[test]
    fn degraded_from_a_failure_until_the_next_write() {
        let h = WriteHealth::new();
        assert!(!h.is_degraded());
        assert_eq!(h.fault(), None);
        h.wrote();
        h.failed(FaultKind::Full, "database or disk is full", 3);
        let first = h.fault().expect("degraded");
        assert_eq!(
            (first.kind, first.reason.as_str()),
            (FaultKind::Full, "database or disk is full")
        );
        h.failed(FaultKind::Io, "disk I/O error", 1);
        let second = h.fault().expect("still degraded");
        assert_eq!(second.kind, FaultKind::Io);
        assert_eq!(
            second.since, first.since,
            "the run of failures began at the first"
        );
        h.wrote();
        assert!(!h.is_degraded());
        assert_eq!(h.fault(), None);
        let counts: Vec<(&str, u64)> = h.errors().iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            counts,
            [
                ("full", 3),
                ("io", 1),
                ("busy", 0),
                ("connection", 0),
                ("other", 0)
            ]
        );
        // A new run of failures starts its own clock.
        h.failed(FaultKind::Full, "database or disk is full", 1);
        assert!(h.fault().unwrap().since >= first.since);
    }
}
