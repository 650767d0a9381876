//! Taking back changes the store refused, so memory holds what the store
//! has. Before a change list is applied, [`State::undo_of`] notes what
//! memory holds of everything it touches; after, [`State::note_applied`]
//! notes what the changes made of it. If the commit is refused,
//! [`State::undo`] puts back each thing still as the changes left it; a
//! thing changed again since was changed by a later change list, built on
//! this one, that settles it itself.
//!
//! Covered: session records (`PutSession`), reservations (`PutReservation`,
//! `DeleteReservation`, `DeleteReservationsOf`), rooms (`PutRoom`) and
//! memberships (`JoinRoom`, `LeaveRoom`). Mail has its own: a new message
//! is pending until stored (`Mailboxes::settle`), and a surfacing mark
//! reaches memory only once stored.

use muster_core::{Membership, Millis, Reservation, Room, Session};
use muster_store::Change;

use super::State;

enum Entry {
    Session {
        id: String,
        previous: Option<Box<Session>>,
        applied: Option<Box<Session>>,
    },
    Reservation {
        id: String,
        previous: Option<Reservation>,
        applied: Option<Reservation>,
    },
    Room {
        name: String,
        previous: Option<Room>,
        applied: Option<Room>,
    },
    Member {
        room: String,
        session_id: String,
        previous: Option<Millis>,
        applied: Option<Millis>,
    },
}

/// What memory held before a change list, and what the list made of it.
#[must_use = "an Undo does nothing unless given to State::undo on a refused commit"]
pub struct Undo {
    entries: Vec<Entry>,
}

impl Undo {
    /// Whether the changes touch nothing an undo covers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl State {
    fn reservation(&self, id: &str) -> Option<Reservation> {
        self.files.get(id).cloned()
    }

    fn room_record(&self, name: &str) -> Option<Room> {
        self.rooms.get(name).map(|n| n.room.clone())
    }

    fn joined_at(&self, room: &str, session_id: &str) -> Option<Millis> {
        self.rooms
            .get(room)
            .and_then(|n| n.members.get(session_id).copied())
    }

    /// What memory holds now of everything `changes` touch; call it before
    /// applying them, and [`State::note_applied`] after.
    pub fn undo_of(&self, changes: &[Change]) -> Undo {
        let mut entries = Vec::new();
        for change in changes {
            match change {
                Change::PutSession(s) => entries.push(Entry::Session {
                    id: s.id.clone(),
                    previous: self.session(&s.id).cloned().map(Box::new),
                    applied: None,
                }),
                Change::PutReservation(r) => entries.push(Entry::Reservation {
                    id: r.id.clone(),
                    previous: self.reservation(&r.id),
                    applied: None,
                }),
                Change::DeleteReservation { id } => entries.push(Entry::Reservation {
                    id: id.clone(),
                    previous: self.reservation(id),
                    applied: None,
                }),
                Change::DeleteReservationsOf { session_id } => {
                    for r in self.files.all().filter(|r| r.session_id == *session_id) {
                        entries.push(Entry::Reservation {
                            id: r.id.clone(),
                            previous: Some(r.clone()),
                            applied: None,
                        });
                    }
                }
                Change::PutRoom(room) => entries.push(Entry::Room {
                    name: room.name.clone(),
                    previous: self.room_record(&room.name),
                    applied: None,
                }),
                Change::JoinRoom(Membership {
                    room, session_id, ..
                })
                | Change::LeaveRoom { room, session_id } => entries.push(Entry::Member {
                    room: room.clone(),
                    session_id: session_id.clone(),
                    previous: self.joined_at(room, session_id),
                    applied: None,
                }),
                // Touches cost nothing to lose; mail settles by its own rules.
                Change::TouchSession { .. }
                | Change::ForgetSession { .. }
                | Change::PutMessage { .. }
                | Change::AdvanceDelivery { .. }
                | Change::AckUpTo { .. }
                | Change::ReservationsUnchangedSince { .. }
                // Memory takes tokens only once stored (`tokens`).
                | Change::PutToken(_)
                | Change::RevokeToken { .. } => {}
            }
        }
        Undo { entries }
    }

    /// Notes what the changes made of each thing `undo` covers.
    pub fn note_applied(&self, undo: &mut Undo) {
        for entry in &mut undo.entries {
            match entry {
                Entry::Session { id, applied, .. } => {
                    *applied = self.session(id).cloned().map(Box::new)
                }
                Entry::Reservation { id, applied, .. } => *applied = self.reservation(id),
                Entry::Room { name, applied, .. } => *applied = self.room_record(name),
                Entry::Member {
                    room,
                    session_id,
                    applied,
                    ..
                } => *applied = self.joined_at(room, session_id),
            }
        }
    }

    /// The store refused the changes: puts back, last first, each thing
    /// memory still holds as they left it. Returns how many it put back.
    pub fn undo(&mut self, undo: Undo, mono_now: Millis) -> usize {
        let mut undone = 0;
        for entry in undo.entries.into_iter().rev() {
            let put_back = match entry {
                Entry::Session {
                    previous, applied, ..
                } => applied.is_some_and(|applied| {
                    self.undo_put_session(&applied, previous.as_deref(), mono_now)
                }),
                Entry::Reservation {
                    id,
                    previous,
                    applied,
                } => {
                    let unchanged = self.reservation(&id) == applied;
                    if unchanged && previous != applied {
                        match previous {
                            Some(r) => self.files.put(r),
                            None => self.files.delete(&id),
                        }
                    }
                    unchanged
                }
                Entry::Room {
                    name,
                    previous,
                    applied,
                } => {
                    let unchanged = self.room_record(&name) == applied;
                    if unchanged && previous != applied {
                        match previous {
                            Some(room) => self.rooms.put(room),
                            // A room the store never had, unless someone
                            // joined it since (their join settles it).
                            None => self.rooms.remove_if_empty(&name),
                        }
                    }
                    unchanged
                }
                Entry::Member {
                    room,
                    session_id,
                    previous,
                    applied,
                } => {
                    let unchanged = self.joined_at(&room, &session_id) == applied;
                    if unchanged && previous != applied {
                        match previous {
                            Some(joined_at) => self.rooms.join(&Membership {
                                room,
                                session_id,
                                joined_at,
                            }),
                            None => self.rooms.leave(&room, &session_id),
                        }
                    }
                    unchanged
                }
            };
            undone += usize::from(put_back);
        }
        undone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Room;
    use muster_store::Snapshot;

    fn claim(id: &str, expires_at: Millis) -> Reservation {
        Reservation {
            id: id.into(),
            session_id: "s1".into(),
            root: "/w".into(),
            pattern: "src/lib.rs".into(),
            exclusive: true,
            reason: String::new(),
            created_at: 0,
            expires_at,
        }
    }

    fn applied(st: &mut State, changes: Vec<Change>) -> Undo {
        let mut undo = st.undo_of(&changes);
        for c in &changes {
            st.apply(c, 0);
        }
        st.note_applied(&mut undo);
        undo
    }

    // Proves an undo puts back exactly what the refused list changed, and
    // leaves alone what a later list changed again.
    #[test]
    fn an_undo_puts_back_what_is_unchanged_since_and_only_that() {
        let mut st = State::from_snapshot(
            Snapshot::default(),
            muster_core::liveness::Clock { wall: 0, mono: 0 },
        );
        let first = applied(&mut st, vec![Change::PutReservation(claim("r1", 100))]);
        assert_eq!(st.undo(first, 0), 1);
        assert!(st.files.get("r1").is_none(), "a refused new claim is gone");

        let _stored = applied(&mut st, vec![Change::PutReservation(claim("r1", 100))]);
        let renewal = applied(&mut st, vec![Change::PutReservation(claim("r1", 200))]);
        let again = applied(&mut st, vec![Change::PutReservation(claim("r1", 300))]);
        assert_eq!(st.undo(renewal, 0), 0, "renewed again since: left alone");
        assert_eq!(st.files.get("r1").unwrap().expires_at, 300);
        assert_eq!(st.undo(again, 0), 1);
        assert_eq!(st.files.get("r1").unwrap().expires_at, 200);

        let room = Room {
            name: "crew".into(),
            created_by: "s1".into(),
            created_at: 5,
        };
        let join = applied(
            &mut st,
            vec![
                Change::PutRoom(room),
                Change::JoinRoom(Membership {
                    room: "crew".into(),
                    session_id: "s1".into(),
                    joined_at: 5,
                }),
            ],
        );
        assert_eq!(st.undo(join, 0), 2);
        assert!(st.rooms.get("crew").is_none());
    }
}
