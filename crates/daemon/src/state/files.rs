//! What the daemon knows about files: reservations (durable; they change
//! only through `State::apply`, the `pub(super)` methods), and the recent
//! writes and collision notices the edit guard keeps (live).

use std::collections::{BTreeMap, HashMap};

use muster_core::{Millis, Reservation};

#[derive(Default)]
pub struct Files {
    /// File reservations by id.
    reservations: BTreeMap<String, Reservation>,
    /// Recent file writes, for collision notices: (root, path) → (session, when).
    recent_writes: HashMap<(String, String), Vec<(String, Millis)>>,
    /// Notes waiting for a session's next hook answer (collision notices).
    notices: HashMap<String, Vec<String>>,
}

/// Another session wrote the same file within the window.
pub struct Collision {
    pub other: String,
}

impl Files {
    pub(super) fn put(&mut self, r: Reservation) {
        self.reservations.insert(r.id.clone(), r);
    }

    pub(super) fn delete(&mut self, id: &str) {
        self.reservations.remove(id);
    }

    pub(super) fn delete_of(&mut self, session_id: &str) {
        self.reservations.retain(|_, r| r.session_id != session_id);
    }

    /// One reservation by id, expired or not.
    pub fn get(&self, id: &str) -> Option<&Reservation> {
        self.reservations.get(id)
    }

    /// Every reservation, expired ones included, by id.
    pub fn all(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// The id of `session_id`'s reservation of exactly this pattern, if any.
    pub fn own(&self, session_id: &str, root: &str, pattern: &str) -> Option<&Reservation> {
        self.all()
            .find(|r| r.session_id == session_id && r.root == root && r.pattern == pattern)
    }

    /// Whether the session holds any reservation.
    pub fn holds_any(&self, session_id: &str) -> bool {
        self.all().any(|r| r.session_id == session_id)
    }

    /// Ids of reservations no longer live at `now`.
    pub fn expired(&self, now: Millis) -> Vec<String> {
        self.all()
            .filter(|r| !r.live(now))
            .map(|r| r.id.clone())
            .collect()
    }

    /// Remembers that `session_id` wrote `(root, rel)` at `now`, forgetting
    /// writes older than `window`. Returns the other sessions that wrote it
    /// within the window, if this is the session's first write of it there
    /// (a pair is told once per file).
    pub fn record_write(
        &mut self,
        session_id: &str,
        root: &str,
        rel: &str,
        now: Millis,
        window: Millis,
    ) -> Vec<Collision> {
        let writers = self
            .recent_writes
            .entry((root.to_string(), rel.to_string()))
            .or_default();
        writers.retain(|(_, at)| now - at < window);
        let first_time = !writers.iter().any(|(s, _)| s == session_id);
        let others: Vec<Collision> = writers
            .iter()
            .filter(|(s, _)| s != session_id)
            .map(|(s, _)| Collision { other: s.clone() })
            .collect();
        writers.retain(|(s, _)| s != session_id);
        writers.push((session_id.to_string(), now));
        if first_time {
            others
        } else {
            Vec::new()
        }
    }

    /// Forgets writes older than `window` at `now`.
    pub fn forget_writes_before(&mut self, now: Millis, window: Millis) {
        self.recent_writes.retain(|_, writers| {
            writers.retain(|(_, at)| now - at < window);
            !writers.is_empty()
        });
    }

    /// Leaves a note for the session's next hook answer.
    pub fn notify(&mut self, session_id: &str, note: String) {
        self.notices
            .entry(session_id.to_string())
            .or_default()
            .push(note);
    }

    /// The notes waiting for a session, taken once.
    pub fn take_notices(&mut self, session_id: &str) -> Vec<String> {
        self.notices.remove(session_id).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_writing_one_file_within_the_window_is_told_once() {
        let mut files = Files::default();
        let w = 600_000;
        assert!(files.record_write("a", "/r", "x.rs", 0, w).is_empty());
        let told: Vec<String> = files
            .record_write("b", "/r", "x.rs", 1_000, w)
            .into_iter()
            .map(|c| c.other)
            .collect();
        assert_eq!(told, ["a"]);
        assert!(
            files.record_write("b", "/r", "x.rs", 2_000, w).is_empty(),
            "told already"
        );
        assert!(
            files.record_write("a", "/r", "y.rs", 2_000, w).is_empty(),
            "another file"
        );
        // Past the window the old write is forgotten.
        assert!(files.record_write("c", "/r", "x.rs", 1_000 + w, w).len() == 1);
        files.forget_writes_before(10 * w, w);
        assert!(files.record_write("d", "/r", "x.rs", 10 * w, w).is_empty());
    }
}
