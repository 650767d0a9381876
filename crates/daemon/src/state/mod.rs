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
use muster_core::liveness::{self, Clock, Observation, Policy, Reason};
use muster_core::{
    automatic_rooms_of, nickname, operator_principal, CoreError, DeliveryState, Message, Millis,
    Session, Target,
};
use muster_store::{Change, Snapshot};
use tokio::sync::mpsc;

mod files;
mod links;
mod mailboxes;
mod rooms;

pub use files::Files;
pub use links::Links;
pub use mailboxes::Mailboxes;
pub use rooms::{NamedRoom, Rooms};

/// A session and what the daemon tracks about it beyond the stored record.
#[derive(Debug)]
pub struct SessionEntry {
    pub session: Session,
    /// Monotonic time the link went down (or the daemon started).
    pub link_down_since: Millis,
    /// The `last_seen_at` last written to the store; touches are coalesced.
    pub persisted_seen: Millis,
    /// The directory its reservations' paths are relative to (its
    /// checkout's root, or its working directory outside any), with the
    /// `cwd` it was resolved for. Resolved outside the lock when the session
    /// is observed (it reads the file system), so no check under the lock
    /// does I/O.
    pub root: Option<(String, String)>,
    /// Monotonic time of the session's latest hook after which its harness
    /// sends the model a request (see `Hub::note_hook`; 0 before any).
    pub last_boundary: Millis,
    /// Stop hooks held in a row with mail since the last user prompt; a
    /// bound, so two agents can never keep each other in one endless turn.
    pub holds_in_row: u8,
    /// A held stop's continuation is due: Gemini CLI fires its BeforeAgent
    /// (prompt-submit) again for it, which must not count as a new prompt.
    pub continuation_due: bool,
    /// What can start a turn in it when it is idle (see `wake`).
    pub wake: WakeState,
}

/// A session's side of waking: which run (a `muster run`, an opencode
/// plugin) its hooks came from, and the cooldown.
#[derive(Debug, Default)]
pub struct WakeState {
    /// The run id its hooks carry (`X-Muster-Run`).
    pub run: Option<String>,
    /// The session asked never to be woken.
    pub off: bool,
    /// Monotonic time of its last wake.
    pub last: Option<Millis>,
    /// A wake is scheduled for this monotonic time (the cooldown's end, or
    /// just after the turn ended).
    pub pending: Option<Millis>,
    /// Monotonic time its last turn ended (a Stop that was not held).
    pub idle_since: Millis,
    /// Wakes sent since its last turn started; a wake that started no turn
    /// (the line was typed into a dialog, or not submitted) is sent again
    /// once the cooldown ends, a bounded number of times.
    pub unanswered: u8,
}

/// A connected waker: the process that can start turns for one run.
#[derive(Debug)]
pub struct Waker {
    /// Identifies the stream, so a stale one cannot unregister a newer.
    pub conn: u64,
    /// `pty`, `opencode` or `codex`.
    pub how: String,
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
    sessions: HashMap<String, SessionEntry>,
    nicknames: HashMap<String, String>,
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
}

impl Directory for State {
    fn by_id(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id).map(|e| &e.session)
    }
    fn by_nickname(&self, nickname: &str) -> Option<&Session> {
        self.nicknames.get(nickname).and_then(|id| self.by_id(id))
    }
    fn sessions(&self) -> Box<dyn Iterator<Item = &Session> + '_> {
        Box::new(self.sessions.values().map(|e| &e.session))
    }
}

impl State {
    /// State as loaded at start. Every linked session gets a fresh grace
    /// window from `mono_now` (the daemon's start).
    pub fn from_snapshot(snapshot: Snapshot, mono_now: Millis) -> Self {
        let mut state = State {
            sessions: HashMap::new(),
            nicknames: HashMap::new(),
            rooms: Rooms::default(),
            links: Links::default(),
            mail: Mailboxes::default(),
            ids: ulid::Generator::new(),
            files: Files::default(),
            wakers: HashMap::new(),
        };
        for r in snapshot.reservations {
            state.files.put(r);
        }
        for session in snapshot.sessions {
            state.insert_session(session, mono_now);
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

    pub fn insert_session(&mut self, session: Session, mono_now: Millis) {
        self.nicknames
            .insert(session.nickname.clone(), session.id.clone());
        let persisted_seen = session.last_seen_at;
        self.sessions.insert(
            session.id.clone(),
            SessionEntry {
                session,
                link_down_since: mono_now,
                persisted_seen,
                root: None,
                last_boundary: 0,
                holds_in_row: 0,
                continuation_due: false,
                wake: WakeState::default(),
            },
        );
    }

    pub fn entry(&self, id: &str) -> Option<&SessionEntry> {
        self.sessions.get(id)
    }

    pub fn entry_mut(&mut self, id: &str) -> Option<&mut SessionEntry> {
        self.sessions.get_mut(id)
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.by_id(id)
    }

    pub fn known_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn present(&self) -> impl Iterator<Item = &Session> {
        self.sessions
            .values()
            .map(|e| &e.session)
            .filter(|s| s.present())
    }

    /// Sessions sorted by arrival, for the roster.
    pub fn roster(&self, include_away: bool) -> Vec<Session> {
        let mut out: Vec<Session> = self
            .sessions
            .values()
            .map(|e| &e.session)
            .filter(|s| include_away || s.present())
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            a.connected_at
                .cmp(&b.connected_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        out
    }

    /// A nickname for a new session id.
    pub fn new_nickname(&self, id: &str) -> String {
        nickname::generate(id, |n| self.nicknames.contains_key(n))
    }

    /// The sessions the liveness policy removes now. Decided in place,
    /// under the caller's lock, cloning only the ids to remove: at 100,000
    /// sessions copying every id would hold the lock ten times longer.
    pub fn doomed(
        &self,
        policy: &Policy,
        clock: Clock,
        links_known: bool,
    ) -> Vec<(String, Reason)> {
        let view = self
            .sessions
            .values()
            .filter(|e| e.session.present())
            .map(|e| {
                let observation = Observation {
                    link: e.session.link,
                    link_up: e.session.link_up,
                    link_down_since: e.link_down_since,
                    last_seen_at: e.session.last_seen_at,
                };
                (&e.session.id, observation)
            });
        liveness::sweep(policy, view, clock, links_known)
    }

    /// Forgets sessions that retention dropped from the store.
    pub fn forget_left_before(&mut self, cutoff: Millis) {
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|e| e.session.left_at.is_some_and(|t| t < cutoff))
            .map(|e| e.session.id.clone())
            .collect();
        for id in gone {
            self.forget(&id);
        }
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
                kind: "automatic".into(),
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
            kind: "named".into(),
            members: named.members.keys().map(|id| self.member(id)).collect(),
        }
    }

    pub fn named_room(&self, name: &str) -> Option<RoomView> {
        self.rooms.get(name).map(|r| self.named_view(r))
    }

    /// A new time-ordered message id.
    pub fn next_message_id(&mut self) -> String {
        // The generator only fails when 2^80 ids are made in one millisecond.
        self.ids
            .generate()
            .map(|u| u.to_string())
            .unwrap_or_else(|_| ulid::Ulid::new().to_string())
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

    /// Sessions whose hooks named `run`.
    pub fn sessions_of_run(&self, run: &str) -> Vec<String> {
        self.sessions
            .values()
            .filter(|e| e.wake.run.as_deref() == Some(run))
            .map(|e| e.session.id.clone())
            .collect()
    }

    /// The session's record as it leaves the roster at `now`; none if it
    /// is unknown or already gone.
    pub fn leaving(&self, id: &str, now: Millis) -> Option<Session> {
        let e = self.sessions.get(id)?;
        if e.session.left_at.is_some() {
            return None;
        }
        let mut session = e.session.clone();
        session.left_at = Some(now);
        Some(session)
    }

    /// Moves a session's `last_seen_at` forward in memory only. The one
    /// deliberate exception to "durable state changes by `apply`": a hook
    /// or link frame refreshes it many times a second, and the store gets
    /// it coalesced, at most once a second, as a `TouchSession` (losing the
    /// latest second in a crash costs nothing).
    pub fn heard(&mut self, id: &str, wall_now: Millis) -> Option<&mut SessionEntry> {
        let e = self.sessions.get_mut(id)?;
        e.session.last_seen_at = e.session.last_seen_at.max(wall_now);
        Some(e)
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
            Change::PutSession(session) => self.put_session(session, mono_now),
            Change::TouchSession { id, last_seen_at } => {
                if let Some(e) = self.sessions.get_mut(id) {
                    e.session.last_seen_at = e.session.last_seen_at.max(*last_seen_at);
                    e.persisted_seen = e.persisted_seen.max(*last_seen_at);
                }
            }
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
        }
    }

    /// See [`Mailboxes::settle`]: a message applied by `PutMessage` is
    /// offered to readers once stored, or leaves memory if the store refused it.
    pub fn settle_message(&mut self, message_id: &str, recipients: &[String], stored: bool) {
        self.mail.settle(message_id, recipients, stored);
    }

    /// Inserts or replaces a session's stored record, keeping its live state.
    fn put_session(&mut self, session: &Session, mono_now: Millis) {
        let Some(entry) = self.sessions.get_mut(&session.id) else {
            self.insert_session(session.clone(), mono_now);
            return;
        };
        if entry.session.nickname != session.nickname {
            self.nicknames.remove(&entry.session.nickname);
            self.nicknames
                .insert(session.nickname.clone(), session.id.clone());
        }
        let live = (entry.session.link_up, entry.session.wake.take());
        entry.session = session.clone();
        (entry.session.link_up, entry.session.wake) = live;
        entry.persisted_seen = entry.persisted_seen.max(session.last_seen_at);
    }

    /// Forgets a session entirely, with its memberships (as the store does).
    fn forget(&mut self, id: &str) {
        if let Some(e) = self.sessions.remove(id) {
            self.nicknames.remove(&e.session.nickname);
        }
        self.rooms.forget_member(id);
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
        State::from_snapshot(Snapshot::default(), 0)
    }

    fn session(id: &str, nickname: &str, at: Millis) -> Session {
        Session::new(id, nickname, at)
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
        entry.session.link_up = true;
        entry.session.wake = Some("pty".into());

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
        assert_eq!(st.known_count(), 1);
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
        assert_eq!(st.known_count(), 1);
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
    fn a_departing_session_is_described_before_anything_changes() {
        let mut st = state();
        st.apply(&Change::PutSession(session("s1", "a", 0)), 0);
        let left = st.leaving("s1", 50).unwrap();
        assert_eq!(left.left_at, Some(50));
        assert!(st.session("s1").unwrap().present(), "nothing changed yet");
        st.apply(&Change::PutSession(left), 0);
        assert!(st.leaving("s1", 60).is_none(), "already gone");
        assert!(st.leaving("nobody", 60).is_none());
    }
}
