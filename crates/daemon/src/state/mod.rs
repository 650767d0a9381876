//! The daemon's in-memory state: the roster, named rooms, unread mail and
//! reservations, with the live parts (links, claims, wake bookkeeping) beside
//! them. Its durable part is also in the store, and changes only by
//! [`State::apply`] of a [`Change`], in the same critical section as the
//! store's submit of it (`Hub::commit`); this is the fast copy the hot paths
//! read. It is only touched under the hub's lock, and does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use muster_core::address::{self, Directory};
use muster_core::api::{RoomMember, RoomView};
use muster_core::protocol::RoomKind;
use muster_core::{
    automatic_rooms_of, operator_principal, CoreError, DeliveryState, Message, Millis, Session,
    Target,
};
use muster_store::{Change, Snapshot};
use tokio::sync::mpsc;

mod files;
mod links;
mod mailboxes;
mod rooms;
mod roster;
mod undo;

pub use files::Files;
pub use links::Links;
pub use mailboxes::Mailboxes;
pub use rooms::{NamedRoom, Rooms};
pub use roster::{Roster, SessionEntry};

/// A connected waker: the process that can start turns for one run.
#[derive(Debug)]
pub struct Waker {
    /// Identifies the stream, so a stale one cannot unregister a newer.
    pub conn: u64,
    /// `pty`, `opencode` or `codex`.
    pub how: String,
    /// The token that opened the stream, if one bound to its sessions did.
    pub owner: Option<String>,
    pub tx: mpsc::Sender<muster_core::api::WakeEvent>,
}

/// Which unread mail an answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Everything unread, pushed included (a read by a tool or the CLI).
    All,
    /// Mail nothing has delivered yet (a turn's start).
    Queued,
    /// Undelivered mail that may interrupt: direct mail and @mentions
    /// (mid-turn, at the stop).
    Urgent,
}

/// Who acts: a session or a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Session(String),
    Operator(String),
}

impl Principal {
    /// The recipient/sender string stored with messages: a session id or `op:<name>`.
    pub fn key(&self) -> String {
        match self {
            Principal::Session(id) => id.clone(),
            Principal::Operator(name) => operator_principal(name),
        }
    }
}

pub struct State {
    /// Every known session.
    pub roster: Roster,
    /// Named rooms and their members.
    pub rooms: Rooms,
    /// Live shim links and the senders waiting on their pushes.
    pub links: Links,
    /// Unread mail and its claims.
    pub mail: Mailboxes,
    ids: ulid::Generator,
    /// Reservations, recent writes and collision notices.
    pub files: Files,
    /// Connected wakers by run id.
    pub wakers: HashMap<String, Waker>,
    /// With a store other daemons share: the last change-log entry applied
    /// here (every entry up to it is in memory; see `cluster`).
    pub applied_seq: u64,
    /// The newest message id another daemon made: ids made here come after
    /// it, so ids stay ordered across daemons whose clocks differ a little.
    newest_elsewhere: Option<ulid::Ulid>,
}

impl Directory for State {
    fn by_id(&self, id: &str) -> Option<&Session> {
        self.roster.session(id)
    }
    fn by_nickname(&self, nickname: &str) -> Option<&Session> {
        self.roster.by_nickname(nickname)
    }
    fn sessions(&self) -> Box<dyn Iterator<Item = &Session> + '_> {
        Box::new(self.roster.all())
    }
}

/// The roster's reads, for callers that hold the whole state.
impl State {
    pub fn entry(&self, id: &str) -> Option<&SessionEntry> {
        self.roster.entry(id)
    }

    pub fn entry_mut(&mut self, id: &str) -> Option<&mut SessionEntry> {
        self.roster.entry_mut(id)
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.roster.session(id)
    }

    pub fn present(&self) -> impl Iterator<Item = &Session> {
        self.roster.present()
    }
}

impl State {
    /// State as loaded at start (`now`). Every linked session gets a fresh
    /// grace window from the daemon's start; every session's silence so far
    /// is what its stored `last_seen_at` shows at `now.wall`.
    pub fn from_snapshot(snapshot: Snapshot, now: muster_core::liveness::Clock) -> Self {
        let mono_now = now.mono;
        let mut state = State {
            roster: Roster::default(),
            rooms: Rooms::default(),
            links: Links::default(),
            mail: Mailboxes::default(),
            ids: ulid::Generator::new(),
            files: Files::default(),
            wakers: HashMap::new(),
            applied_seq: 0,
            newest_elsewhere: None,
        };
        for r in snapshot.reservations {
            state.files.put(r);
        }
        for session in snapshot.sessions {
            let silent_for = (now.wall - session.last_seen_at).max(0);
            let id = session.id.clone();
            state.roster.insert(session, mono_now);
            if let Some(entry) = state.roster.entry_mut(&id) {
                entry.heard_mono = mono_now - silent_for;
            }
        }
        for room in snapshot.rooms {
            state.rooms.put(room);
        }
        for m in &snapshot.memberships {
            state.rooms.join(m);
        }
        let mut messages: HashMap<String, Arc<Message>> = HashMap::new();
        for (message, delivery) in snapshot.unread {
            let message = messages
                .entry(message.id.clone())
                .or_insert_with(|| Arc::new(message))
                .clone();
            // Pushed before this daemon started: the next hook that cannot
            // find it in the transcript surfaces it.
            let pushed_at = (delivery.state == DeliveryState::Pushed).then_some(Millis::MIN);
            state.add_unread_at(
                message,
                &delivery.recipient,
                delivery.state,
                pushed_at,
                false,
            );
        }
        state
    }

    /// Who acts for a request: `op:<name>`, or a known session by id,
    /// nickname or unique prefix; nobody named means the daemon's operator.
    pub fn principal(
        &self,
        as_: Option<&str>,
        default_operator: &str,
    ) -> Result<Principal, CoreError> {
        let Some(as_) = as_.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Principal::Operator(default_operator.to_string()));
        };
        if let Some(name) = as_.strip_prefix("op:") {
            muster_core::validate::name("operator", name)?;
            return Ok(Principal::Operator(name.to_string()));
        }
        match address::resolve(self, as_, None) {
            Ok(Target::Session(id)) => Ok(Principal::Session(id)),
            Ok(_) | Err(CoreError::UnknownRecipient { .. }) => {
                Err(CoreError::UnknownSession(as_.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// The nickname shown for a principal.
    pub fn display_name(&self, p: &Principal) -> String {
        match p {
            Principal::Session(id) => self
                .session(id)
                .map(|s| s.nickname.clone())
                .unwrap_or_else(|| id.clone()),
            Principal::Operator(name) => name.clone(),
        }
    }

    pub fn resolve(&self, to: &str, self_operator: &str) -> Result<Target, CoreError> {
        address::resolve(self, to, Some(self_operator))
    }

    /// Recipients of a room message: members at send time, the sender excluded.
    pub fn room_recipients(&self, room: &str, sender: &str) -> Result<Vec<String>, CoreError> {
        let mut out: Vec<String> = if muster_core::is_automatic_room(room) {
            self.present()
                .filter(|s| automatic_rooms_of(s).iter().any(|r| r == room))
                .map(|s| s.id.clone())
                .collect()
        } else if let Some(named) = self.rooms.get(room) {
            named.members.keys().cloned().collect()
        } else {
            let known = self.room_views().into_iter().map(|r| r.name);
            let mut close: Vec<(f64, String)> = known
                .map(|n| (strsim_score(room, &n), n))
                .filter(|(s, _)| *s > 0.7)
                .collect();
            close.sort_by(|a, b| b.0.total_cmp(&a.0));
            return Err(CoreError::UnknownRoom {
                room: room.to_string(),
                close: close.into_iter().take(5).map(|(_, n)| n).collect(),
            });
        };
        out.retain(|r| r != sender);
        out.sort();
        Ok(out)
    }

    /// Every room: automatic ones that have members now, then named ones.
    pub fn room_views(&self) -> Vec<RoomView> {
        let mut automatic: BTreeMap<String, Vec<RoomMember>> = BTreeMap::new();
        for s in self.present() {
            for room in automatic_rooms_of(s) {
                automatic.entry(room).or_default().push(self.member(&s.id));
            }
        }
        let mut views: Vec<RoomView> = automatic
            .into_iter()
            .map(|(name, members)| RoomView {
                name,
                kind: RoomKind::Automatic,
                members,
            })
            .collect();
        for named in self.rooms.all() {
            views.push(self.named_view(named));
        }
        views
    }

    fn member(&self, id: &str) -> RoomMember {
        let s = self.session(id);
        RoomMember {
            id: id.to_string(),
            nickname: s.map(|s| s.nickname.clone()).unwrap_or_default(),
            present: s.is_some_and(Session::present),
        }
    }

    fn named_view(&self, named: &NamedRoom) -> RoomView {
        RoomView {
            name: named.room.name.clone(),
            kind: RoomKind::Named,
            members: named.members.keys().map(|id| self.member(id)).collect(),
        }
    }

    pub fn named_room(&self, name: &str) -> Option<RoomView> {
        self.rooms.get(name).map(|r| self.named_view(r))
    }

    /// A new time-ordered message id, after every id seen from other daemons.
    pub fn next_message_id(&mut self) -> String {
        // The generator only fails when 2^80 ids are made in one millisecond.
        let id = self.ids.generate().unwrap_or_else(|_| ulid::Ulid::new());
        match self.newest_elsewhere {
            Some(newest) if id <= newest => {
                // Past `newest` by a random step, not by one: every daemon
                // that saw `newest` would make newest + 1, and two of them
                // the same id (seen in `muster-bench team` as a refused
                // send: "duplicate key … messages_pkey"). A carry out of
                // the random part moves to the next millisecond, still in
                // order.
                let step = (ulid::Ulid::new().random() & u128::from(u64::MAX)).max(1);
                let next = ulid::Ulid(newest.0.saturating_add(step));
                self.newest_elsewhere = Some(next);
                next.to_string()
            }
            _ => id.to_string(),
        }
    }

    /// Another daemon made the id `id` (a message or reservation it logged).
    pub fn note_id_elsewhere(&mut self, id: &str) {
        if let Ok(id) = ulid::Ulid::from_string(id) {
            if self.newest_elsewhere.is_none_or(|newest| id > newest) {
                self.newest_elsewhere = Some(id);
            }
        }
    }

    fn add_unread_at(
        &mut self,
        message: Arc<Message>,
        recipient: &str,
        state: DeliveryState,
        pushed_at: Option<Millis>,
        pending: bool,
    ) {
        let nickname = self.session(recipient).map_or("", |s| s.nickname.as_str());
        let urgent = muster_core::wake::is_urgent(&message, recipient, nickname);
        self.mail
            .add(message, recipient, state, urgent, pushed_at, pending);
    }

    /// Applies one durable change to memory: the only way the durable part
    /// of memory (stored sessions, unread mail and its delivery states,
    /// rooms and memberships, reservations) changes. The hub calls it for
    /// each change it submits to the store, in the same critical section
    /// (`Hub::commit`), so memory and store take the same changes in the
    /// same order. `mono_now` stamps pushes. A change already in effect
    /// changes nothing; live state (links, claims, wake bookkeeping, the
    /// session's `link_up` and `wake`) is kept as it is.
    pub fn apply(&mut self, change: &Change, mono_now: Millis) {
        match change {
            Change::PutSession(session) => self.roster.put(session, mono_now),
            Change::TouchSession { id, last_seen_at } => self.roster.touch(id, *last_seen_at),
            Change::ForgetSession { id } => self.forget(id),
            Change::PutMessage {
                message,
                deliveries,
            } => {
                let message = Arc::new(message.clone());
                for d in deliveries {
                    self.add_unread_at(message.clone(), &d.recipient, d.state, None, true);
                }
            }
            Change::AdvanceDelivery {
                message_id,
                recipient,
                state,
                ..
            } => match state {
                DeliveryState::Queued => {}
                DeliveryState::Pushed => self.mail.mark_pushed(recipient, message_id, mono_now),
                DeliveryState::Seen => self.mail.remove_seen(recipient, message_id),
                DeliveryState::Surfaced | DeliveryState::Acked => {
                    self.mail.remove(recipient, message_id)
                }
            },
            Change::AckUpTo {
                recipient, upto, ..
            } => self.mail.remove_up_to(recipient, upto),
            Change::PutRoom(room) => self.rooms.put(room.clone()),
            Change::JoinRoom(m) => self.rooms.join(m),
            Change::LeaveRoom { room, session_id } => self.rooms.leave(room, session_id),
            Change::PutReservation(r) => self.files.put(r.clone()),
            Change::DeleteReservation { id } => self.files.delete(id),
            Change::DeleteReservationsOf { session_id } => self.files.delete_of(session_id),
            Change::ReservationsUnchangedSince { .. } => {}
            // The hub's token registry keeps tokens (see `tokens`).
            Change::PutToken(_) | Change::RevokeToken { .. } => {}
        }
    }

    /// Takes back a `PutSession` the store refused, so memory holds what
    /// the store has: the record goes back to `previous`, or the session
    /// (new, then) is forgotten. Only while memory still holds `applied`
    /// (live fields and `last_seen_at` aside): a later change of the
    /// record was built on this one and settles it itself. Says whether it
    /// took it back.
    pub fn undo_put_session(
        &mut self,
        applied: &Session,
        previous: Option<&Session>,
        mono_now: Millis,
    ) -> bool {
        let Some(current) = self.session(&applied.id) else {
            return false;
        };
        let mut same = applied.clone();
        (same.link_up, same.wake, same.last_seen_at) =
            (current.link_up, current.wake.clone(), current.last_seen_at);
        if same != *current {
            return false;
        }
        match previous {
            Some(p) => {
                let mut p = p.clone();
                p.last_seen_at = p.last_seen_at.max(current.last_seen_at);
                self.roster.put(&p, mono_now);
            }
            None => self.forget(&applied.id),
        }
        true
    }

    /// See [`Mailboxes::settle`]: a message applied by `PutMessage` is
    /// offered to readers once stored, or leaves memory if the store refused it.
    pub fn settle_message(&mut self, message_id: &str, recipients: &[String], stored: bool) {
        self.mail.settle(message_id, recipients, stored);
    }

    /// Forgets a session entirely, with its memberships (as the store does).
    fn forget(&mut self, id: &str) {
        self.roster.forget(id);
        self.rooms.forget_member(id);
        self.mail.forget_waiter(id);
    }

    /// Forgets sessions that retention dropped from the store.
    pub fn forget_left_before(&mut self, cutoff: Millis) {
        for id in self.roster.left_before(cutoff) {
            self.forget(&id);
        }
    }
}

fn strsim_score(a: &str, b: &str) -> f64 {
    let (a, b) = (a.to_lowercase(), b.to_lowercase());
    let contains = if b.contains(&a) || a.contains(&b) {
        0.9
    } else {
        0.0
    };
    f64::max(contains, address::similarity(&a, &b))
}

#[cfg(test)]
mod tests {
    //! `State` alone: no store, no clock but the times each test passes in.
    use super::*;
    use muster_core::{Delivery, Reservation};

    fn state() -> State {
        State::from_snapshot(
            Snapshot::default(),
            muster_core::liveness::Clock { wall: 0, mono: 0 },
        )
    }

    fn session(id: &str, nickname: &str, at: Millis) -> Session {
        Session::new(id, nickname, at)
    }

    // Proves message ids stay ordered across daemons: after an id another
    // daemon made (one a minute ahead of this daemon's clock), every id
    // made here sorts after it, and they keep increasing.
    #[test]
    fn ids_made_here_follow_the_newest_seen_elsewhere() {
        let mut st = state();
        let ahead = ulid::Ulid::from_parts(ulid::Ulid::new().timestamp_ms() + 60_000, 7);
        st.note_id_elsewhere(&ahead.to_string());
        let first = st.next_message_id();
        let second = st.next_message_id();
        assert!(first > ahead.to_string(), "{first} after {ahead}");
        assert!(second > first);
        // An older id seen later changes nothing.
        st.note_id_elsewhere(&ulid::Ulid::from_parts(1, 1).to_string());
        assert!(st.next_message_id() > second);
        // Garbage is ignored.
        st.note_id_elsewhere("not an id");
        assert!(st.next_message_id() > second);
    }

    // Proves two daemons that saw the same newest id elsewhere make
    // different ids after it (each used to make that id + 1, the same one).
    #[test]
    fn two_daemons_past_the_same_id_make_different_ids() {
        let ahead = ulid::Ulid::from_parts(ulid::Ulid::new().timestamp_ms() + 60_000, 7);
        let (mut b, mut c) = (state(), state());
        b.note_id_elsewhere(&ahead.to_string());
        c.note_id_elsewhere(&ahead.to_string());
        let made_b: Vec<String> = (0..100).map(|_| b.next_message_id()).collect();
        let made_c: Vec<String> = (0..100).map(|_| c.next_message_id()).collect();
        assert!(made_b[0] > ahead.to_string() && made_c[0] > ahead.to_string());
        let all: std::collections::HashSet<&String> = made_b.iter().chain(&made_c).collect();
        assert_eq!(all.len(), 200, "an id made twice");
    }

    fn message(id: &str, from: &str, to: &str, body: &str) -> Message {
        Message {
            id: id.into(),
            from: from.into(),
            from_nickname: from.into(),
            to: Target::Session(to.into()),
            reply_to: None,
            body: body.into(),
            sent_at: 1_000,
            via: Default::default(),
        }
    }

    fn put_message(id: &str, from: &str, to: &str) -> Change {
        Change::PutMessage {
            message: message(id, from, to, "hi"),
            deliveries: vec![Delivery {
                message_id: id.into(),
                recipient: to.into(),
                state: DeliveryState::Queued,
                updated_at: 1_000,
            }],
        }
    }

    fn advance(id: &str, to: &str, state: DeliveryState) -> Change {
        Change::AdvanceDelivery {
            message_id: id.into(),
            recipient: to.into(),
            state,
            at: 2_000,
        }
    }

    /// Ids of the mail a claim takes now (and gives back, so the next sees it too).
    fn claimable(
        st: &mut State,
        to: &str,
        claim: Claim,
        pushed_before: Option<Millis>,
    ) -> Vec<String> {
        let ids: Vec<String> = st
            .mail
            .claim(to, claim, pushed_before)
            .into_iter()
            .map(|(m, _)| m.id.clone())
            .collect();
        st.mail.unclaim(to, &ids);
        ids
    }

    #[test]
    fn a_put_session_adds_then_replaces_the_record_but_keeps_live_state() {
        let mut st = state();
        st.apply(&Change::PutSession(session("s1", "brave-otter", 10)), 5);
        assert_eq!(
            st.by_nickname("brave-otter").map(|s| s.id.as_str()),
            Some("s1")
        );
        let entry = st.entry_mut("s1").unwrap();
        entry.set_link_up(true);
        entry.set_wake_label(Some("pty".into()));

        let mut renamed = session("s1", "calm-heron", 10);
        renamed.status = "reviewing".into();
        st.apply(&Change::PutSession(renamed), 6);
        let s = st.session("s1").unwrap();
        assert_eq!(
            (s.status.as_str(), s.link_up, s.wake.as_deref()),
            ("reviewing", true, Some("pty"))
        );
        assert!(st.by_nickname("brave-otter").is_none());
        assert_eq!(
            st.by_nickname("calm-heron").map(|s| s.id.as_str()),
            Some("s1")
        );
        assert_eq!(st.roster.known_count(), 1);
    }

    #[test]
    fn a_touch_only_moves_last_seen_forward() {
        let mut st = state();
        st.apply(&Change::PutSession(session("s1", "a", 100)), 0);
        let touch = |at| Change::TouchSession {
            id: "s1".into(),
            last_seen_at: at,
        };
        st.apply(&touch(500), 0);
        st.apply(&touch(300), 0);
        assert_eq!(st.session("s1").unwrap().last_seen_at, 500);
        assert_eq!(st.entry("s1").unwrap().persisted_seen, 500);
        // A touch of a session nobody knows changes nothing.
        st.apply(
            &Change::TouchSession {
                id: "nobody".into(),
                last_seen_at: 9,
            },
            0,
        );
        assert_eq!(st.roster.known_count(), 1);
    }

    #[test]
    fn a_new_message_is_offered_to_no_reader_until_it_is_stored() {
        let mut st = state();
        st.apply(&Change::PutSession(session("b", "b", 0)), 0);
        st.apply(&put_message("01A", "a", "b"), 0);
        assert!(claimable(&mut st, "b", Claim::All, None).is_empty());
        assert!(!st.mail.has_unread("b"));
        assert_eq!(st.mail.unread_total(), 0);
        assert!(!st.mail.claim_one("b", "01A"));

        st.settle_message("01A", &["b".into()], true);
        assert_eq!(claimable(&mut st, "b", Claim::Queued, None), ["01A"]);
        assert_eq!(st.mail.unread_total(), 1);

        // One the store refused leaves memory, and nobody ever saw it.
        st.apply(&put_message("01B", "a", "b"), 0);
        st.settle_message("01B", &["b".into()], false);
        assert!(st.mail.unread_message("b", "01B").is_none());
        assert_eq!(claimable(&mut st, "b", Claim::All, None), ["01A"]);
    }

    #[test]
    fn a_push_takes_mail_out_of_turn_hooks_until_it_is_evidently_dropped() {
        let mut st = state();
        st.apply(&put_message("01A", "a", "b"), 0);
        st.settle_message("01A", &["b".into()], true);
        assert!(st.mail.awaiting_push("b", "01A"));
        st.apply(&advance("01A", "b", DeliveryState::Pushed), 7_000);
        assert!(!st.mail.awaiting_push("b", "01A"));
        // A turn's start does not take a push it cannot know was dropped…
        assert!(claimable(&mut st, "b", Claim::Queued, None).is_empty());
        assert!(claimable(&mut st, "b", Claim::Queued, Some(7_000)).is_empty());
        // …takes it once the push is older than a shown one would be…
        assert_eq!(claimable(&mut st, "b", Claim::Queued, Some(7_001)), ["01A"]);
        // …and a read always shows it.
        assert_eq!(claimable(&mut st, "b", Claim::All, None), ["01A"]);
        // A second push record changes nothing (its time stays the first).
        st.apply(&advance("01A", "b", DeliveryState::Pushed), 9_000);
        assert_eq!(claimable(&mut st, "b", Claim::Queued, Some(7_001)), ["01A"]);
    }

    #[test]
    fn surfaced_acked_and_seen_mail_leaves_the_unread_set() {
        let mut st = state();
        for id in ["01A", "01B", "01C", "01D"] {
            st.apply(&put_message(id, "a", "b"), 0);
            st.settle_message(id, &["b".into()], true);
        }
        st.apply(&advance("01A", "b", DeliveryState::Surfaced), 0);
        st.apply(&advance("01B", "b", DeliveryState::Acked), 0);
        // Seen mail that an answer is carrying right now stays until that
        // answer settles it; unclaimed seen mail goes at once.
        assert!(st.mail.claim_one("b", "01C"));
        st.apply(&advance("01C", "b", DeliveryState::Seen), 0);
        st.apply(&advance("01D", "b", DeliveryState::Seen), 0);
        assert!(st.mail.unread_message("b", "01C").is_some());
        assert!(st.mail.unread_message("b", "01D").is_none());
        st.mail.unclaim("b", &["01C".into()]);
        assert_eq!(claimable(&mut st, "b", Claim::All, None), ["01C"]);
        // Queued is where every delivery starts: advancing to it is nothing.
        st.apply(&advance("01C", "b", DeliveryState::Queued), 0);
        assert_eq!(claimable(&mut st, "b", Claim::All, None), ["01C"]);
    }

    #[test]
    fn ack_up_to_takes_exactly_the_mail_up_to_that_id() {
        let mut st = state();
        for id in ["01A", "01B", "01C"] {
            st.apply(&put_message(id, "a", "b"), 0);
            st.settle_message(id, &["b".into()], true);
        }
        st.apply(&put_message("01A", "a", "c"), 0);
        st.settle_message("01A", &["c".into()], true);
        st.apply(
            &Change::AckUpTo {
                recipient: "b".into(),
                upto: "01B".into(),
                at: 0,
            },
            0,
        );
        assert_eq!(claimable(&mut st, "b", Claim::All, None), ["01C"]);
        assert_eq!(claimable(&mut st, "c", Claim::All, None), ["01A"]);
    }

    #[test]
    fn joining_says_what_changes_and_apply_makes_it_so() {
        let mut st = state();
        let first = st.rooms.joining("crew", "s1", 10);
        assert_eq!(first.len(), 2, "{first:?}"); // the room, then the membership
        assert!(
            matches!(&first[0], Change::PutRoom(r) if r.name == "crew" && r.created_by == "s1")
        );
        for c in &first {
            st.apply(c, 0);
        }
        assert!(st.rooms.is_member("crew", "s1"));
        assert!(
            st.rooms.joining("crew", "s1", 11).is_empty(),
            "already a member"
        );
        let second = st.rooms.joining("crew", "s2", 12);
        assert!(matches!(second.as_slice(), [Change::JoinRoom(m)] if m.session_id == "s2"));
        for c in &second {
            st.apply(c, 0);
        }
        let members: Vec<String> = st
            .named_room("crew")
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(members, ["s1", "s2"]);
        st.apply(
            &Change::LeaveRoom {
                room: "crew".into(),
                session_id: "s1".into(),
            },
            0,
        );
        assert!(!st.rooms.is_member("crew", "s1"));
        assert!(st.rooms.is_member("crew", "s2"));
    }

    #[test]
    fn reservations_come_and_go_by_change() {
        let mut st = state();
        let r = |id: &str, who: &str| Reservation {
            id: id.into(),
            session_id: who.into(),
            root: "/repo".into(),
            pattern: "src/**".into(),
            exclusive: true,
            reason: String::new(),
            created_at: 0,
            expires_at: 60_000,
        };
        for c in [r("r1", "s1"), r("r2", "s1"), r("r3", "s2")] {
            st.apply(&Change::PutReservation(c), 0);
        }
        st.apply(&Change::DeleteReservation { id: "r3".into() }, 0);
        let ids: Vec<&str> = st.files.all().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        st.apply(
            &Change::DeleteReservationsOf {
                session_id: "s1".into(),
            },
            0,
        );
        assert_eq!(st.files.all().count(), 0);
    }

    #[test]
    fn forgetting_a_session_drops_it_its_nickname_and_its_memberships() {
        let mut st = state();
        st.apply(&Change::PutSession(session("s1", "brave-otter", 0)), 0);
        for c in st.rooms.joining("crew", "s1", 0) {
            st.apply(&c, 0);
        }
        st.apply(&Change::ForgetSession { id: "s1".into() }, 0);
        assert!(st.session("s1").is_none());
        assert!(st.by_nickname("brave-otter").is_none());
        assert!(!st.rooms.is_member("crew", "s1"));
    }

    #[test]
    fn a_refused_put_session_is_taken_back_unless_changed_since() {
        let mut st = state();
        // A new session the store refused is forgotten, nickname and all.
        let new = session("s1", "brave-otter", 10);
        st.apply(&Change::PutSession(new.clone()), 0);
        st.entry_mut("s1").unwrap().set_link_up(true);
        assert!(st.undo_put_session(&new, None, 0));
        assert!(st.session("s1").is_none());
        assert!(st.by_nickname("brave-otter").is_none());

        // A changed record goes back to the one stored, seen time kept.
        let stored = session("s2", "calm-heron", 10);
        st.apply(&Change::PutSession(stored.clone()), 0);
        let mut moved = stored.clone();
        moved.cwd = "/elsewhere".into();
        moved.last_seen_at = 50;
        st.apply(&Change::PutSession(moved.clone()), 0);
        assert!(st.undo_put_session(&moved, Some(&stored), 0));
        let s = st.session("s2").unwrap();
        assert_eq!((s.cwd.as_str(), s.last_seen_at), (stored.cwd.as_str(), 50));

        // Changed again since: that later change settles it, not this undo.
        st.apply(&Change::PutSession(moved.clone()), 0);
        let mut later = moved.clone();
        later.status = "reviewing".into();
        st.apply(&Change::PutSession(later), 0);
        assert!(!st.undo_put_session(&moved, Some(&stored), 0));
        assert_eq!(st.session("s2").unwrap().status, "reviewing");
    }

    #[test]
    fn a_departing_session_is_described_before_anything_changes() {
        let mut st = state();
        st.apply(&Change::PutSession(session("s1", "a", 0)), 0);
        let left = st.roster.leaving("s1", 50).unwrap();
        assert_eq!(left.left_at, Some(50));
        assert!(st.session("s1").unwrap().present(), "nothing changed yet");
        st.apply(&Change::PutSession(left), 0);
        assert!(st.roster.leaving("s1", 60).is_none(), "already gone");
        assert!(st.roster.leaving("nobody", 60).is_none());
    }
}
