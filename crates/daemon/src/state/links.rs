//! Live shim links: each session's current link (its writer's channel and
//! the pushes it has not confirmed yet), and the senders waiting for a push
//! to be confirmed. Nothing here is stored.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};

use crate::surfacing::Outgoing;

/// The daemon's end of a live shim link.
#[derive(Debug)]
struct LinkHandle {
    /// Identifies the connection, so a stale one cannot detach a newer.
    conn: u64,
    tx: mpsc::Sender<Outgoing>,
    /// Pushed message ids not yet confirmed written by the shim.
    in_flight: HashSet<String>,
}

#[derive(Default)]
pub struct Links {
    by_session: HashMap<String, LinkHandle>,
    /// Senders waiting for a push to be confirmed, by message id.
    waiters: HashMap<String, oneshot::Sender<()>>,
}

impl Links {
    /// Makes `conn` the session's link. Returns the pushes the link it
    /// replaced never confirmed (a re-link before the old connection was
    /// noticed gone), for their claims to be released.
    pub fn attach(&mut self, session: &str, conn: u64, tx: mpsc::Sender<Outgoing>) -> Vec<String> {
        let link = LinkHandle {
            conn,
            tx,
            in_flight: HashSet::new(),
        };
        self.by_session
            .insert(session.to_string(), link)
            .map(|old| old.in_flight.into_iter().collect())
            .unwrap_or_default()
    }

    /// Detaches `conn` if it is still the session's link: the pushes it
    /// never confirmed; none if another link (or none) is current.
    pub fn detach(&mut self, session: &str, conn: u64) -> Option<Vec<String>> {
        if !self.is_current(session, conn) {
            return None;
        }
        let link = self.by_session.remove(session)?;
        Some(link.in_flight.into_iter().collect())
    }

    /// Whether `conn` is the session's current link.
    pub fn is_current(&self, session: &str, conn: u64) -> bool {
        self.by_session.get(session).is_some_and(|l| l.conn == conn)
    }

    pub fn is_up(&self, session: &str) -> bool {
        self.by_session.contains_key(session)
    }

    /// Links up now.
    pub fn count(&self) -> usize {
        self.by_session.len()
    }

    /// The session's link: its connection and a sender to its writer.
    pub fn sender(&self, session: &str) -> Option<(u64, mpsc::Sender<Outgoing>)> {
        self.by_session.get(session).map(|l| (l.conn, l.tx.clone()))
    }

    /// Records a push of `message_id` that is going out on `conn` by a
    /// place already reserved in its queue; false if `conn` is no longer
    /// the session's link.
    pub fn note_push(&mut self, session: &str, conn: u64, message_id: &str) -> bool {
        match self.by_session.get_mut(session) {
            Some(link) if link.conn == conn => {
                link.in_flight.insert(message_id.to_string());
                true
            }
            _ => false,
        }
    }

    /// Frames waiting for the links' writers: all together, and the most on one.
    pub fn queued(&self) -> (usize, usize) {
        self.by_session
            .values()
            .map(|l| l.tx.max_capacity() - l.tx.capacity())
            .fold((0, 0), |(sum, max), n| (sum + n, max.max(n)))
    }

    /// Queues a push of `message_id` on the session's link, without
    /// waiting; false if there is no link or its writer is full or gone
    /// (the mail stays queued: hooks surface it, or a re-link pushes it).
    pub fn push(&mut self, session: &str, message_id: &str, out: Outgoing) -> bool {
        let Some(link) = self.by_session.get_mut(session) else {
            return false;
        };
        if link.tx.try_send(out).is_err() {
            return false;
        }
        link.in_flight.insert(message_id.to_string());
        true
    }

    /// The shim wrote this push out.
    pub fn confirmed(&mut self, session: &str, message_id: &str) {
        if let Some(link) = self.by_session.get_mut(session) {
            link.in_flight.remove(message_id);
        }
    }

    /// Waits for the confirmation of a push of `message_id`.
    pub fn await_confirmation(&mut self, message_id: &str) -> oneshot::Receiver<()> {
        let (done, confirmed) = oneshot::channel();
        self.waiters.insert(message_id.to_string(), done);
        confirmed
    }

    /// Nobody waits for this push's confirmation any more.
    pub fn stop_waiting(&mut self, message_id: &str) {
        self.waiters.remove(message_id);
    }

    /// Tells whoever waits that these pushes are confirmed (and recorded).
    pub fn tell_confirmed(&mut self, message_ids: &[String]) {
        for id in message_ids {
            if let Some(done) = self.waiters.remove(id) {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_slot_is_two_pointers() {
        // Every link's writer queue is a tokio channel, which allocates its
        // slots 32 at a time: at 10,000 idle links an inline frame (384
        // bytes) cost about 4 KB each, so frames are boxed.
        assert_eq!(std::mem::size_of::<Outgoing>(), 16);
    }

    #[tokio::test]
    async fn a_stale_connection_cannot_detach_a_newer_one() {
        let mut links = Links::default();
        let (tx, _rx) = mpsc::channel(4);
        assert!(links.attach("s", 1, tx.clone()).is_empty());
        assert!(links.push(
            "s",
            "m1",
            muster_core::link::ServerFrame::Pong { at: 0 }.into()
        ));
        // A re-link hands back what the old link never confirmed.
        assert_eq!(links.attach("s", 2, tx), ["m1"]);
        assert_eq!(links.detach("s", 1), None, "conn 1 is not current");
        assert!(links.is_up("s"));
        assert_eq!(links.detach("s", 2), Some(Vec::new()));
        assert!(!links.is_up("s"));
        assert!(!links.push(
            "s",
            "m2",
            muster_core::link::ServerFrame::Pong { at: 0 }.into()
        ));
    }

    #[tokio::test]
    async fn a_full_link_takes_no_more_pushes() {
        // Proves the queue per link is bounded: past it a push is refused
        // (the mail stays queued), never buffered.
        let mut links = Links::default();
        let (tx, _rx) = mpsc::channel(2);
        links.attach("s", 1, tx);
        let pong = || muster_core::link::ServerFrame::Pong { at: 0 }.into();
        assert!(links.push("s", "m1", pong()));
        assert!(links.push("s", "m2", pong()));
        assert!(!links.push("s", "m3", pong()));
        assert_eq!(links.queued(), (2, 2));
        assert!(links.note_push("s", 1, "m4"));
        assert!(!links.note_push("s", 2, "m5"), "not the current link");
        let mut unconfirmed = links.detach("s", 1).unwrap();
        unconfirmed.sort();
        assert_eq!(unconfirmed, ["m1", "m2", "m4"]);
    }

    #[tokio::test]
    async fn a_waiting_sender_hears_only_of_its_own_push() {
        let mut links = Links::default();
        let mine = links.await_confirmation("m1");
        let other = links.await_confirmation("m2");
        links.tell_confirmed(&["m1".into()]);
        assert_eq!(mine.await, Ok(()));
        links.stop_waiting("m2");
        assert!(other.await.is_err(), "given up on, never confirmed");
    }
}
