//! Named rooms and their members: durable, changed only through
//! `State::apply` (the `pub(super)` methods). Automatic rooms are derived
//! from the roster and live nowhere.

use std::collections::BTreeMap;

use muster_core::{Membership, Millis, Room};
use muster_store::Change;

#[derive(Debug, Clone)]
pub struct NamedRoom {
    pub room: Room,
    /// Member session id → when it joined.
    pub members: BTreeMap<String, Millis>,
}

#[derive(Default)]
pub struct Rooms {
    by_name: BTreeMap<String, NamedRoom>,
}

impl Rooms {
    /// Adds a room, or replaces its record and keeps its members.
    pub(super) fn put(&mut self, room: Room) {
        match self.by_name.get_mut(&room.name) {
            Some(named) => named.room = room,
            None => {
                let named = NamedRoom {
                    room,
                    members: BTreeMap::new(),
                };
                self.by_name.insert(named.room.name.clone(), named);
            }
        }
    }

    /// Adds a member of an existing room (a membership of an unknown room
    /// is dropped: the room's record comes first in every change list).
    pub(super) fn join(&mut self, m: &Membership) {
        if let Some(named) = self.by_name.get_mut(&m.room) {
            named.members.insert(m.session_id.clone(), m.joined_at);
        }
    }

    pub(super) fn leave(&mut self, room: &str, session_id: &str) {
        if let Some(named) = self.by_name.get_mut(room) {
            named.members.remove(session_id);
        }
    }

    /// Removes a room that has no members (a new room the store refused).
    pub(super) fn remove_if_empty(&mut self, name: &str) {
        if self.by_name.get(name).is_some_and(|r| r.members.is_empty()) {
            self.by_name.remove(name);
        }
    }

    /// Drops a session from every room (it is forgotten).
    pub(super) fn forget_member(&mut self, session_id: &str) {
        for named in self.by_name.values_mut() {
            named.members.remove(session_id);
        }
    }

    pub fn get(&self, name: &str) -> Option<&NamedRoom> {
        self.by_name.get(name)
    }

    /// Every named room, by name.
    pub fn all(&self) -> impl Iterator<Item = &NamedRoom> {
        self.by_name.values()
    }

    /// Whether `session_id` is a member of the named room.
    pub fn is_member(&self, room: &str, session_id: &str) -> bool {
        self.by_name
            .get(room)
            .is_some_and(|r| r.members.contains_key(session_id))
    }

    /// The changes that make `session_id` a member of `room`: the room if
    /// it is new, and the membership if it is not one already.
    pub fn joining(&self, room: &str, session_id: &str, now: Millis) -> Vec<Change> {
        let mut changes = Vec::new();
        let named = self.by_name.get(room);
        if named.is_none() {
            changes.push(Change::PutRoom(Room {
                name: room.to_string(),
                created_by: session_id.to_string(),
                created_at: now,
            }));
        }
        if named.is_none_or(|r| !r.members.contains_key(session_id)) {
            changes.push(Change::JoinRoom(Membership {
                room: room.to_string(),
                session_id: session_id.to_string(),
                joined_at: now,
            }));
        }
        changes
    }
}
