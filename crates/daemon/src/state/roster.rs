//! The roster: every known session by id and by nickname, with what the
//! daemon tracks about each beyond its stored record. The record changes
//! only through `State::apply` (the `pub(super)` methods); the rest is live.

use std::collections::{HashMap, VecDeque};

use muster_core::api::{ActivityChange, RosterCursor, ACTIVITY_KEPT};
use muster_core::liveness::{self, Clock, Observation, Policy, Reason};
use muster_core::{nickname, Activity, Millis, Session};

/// A session and what the daemon tracks about it beyond the stored record.
#[derive(Debug)]
pub struct SessionEntry {
    /// The stored record (with the live `link_up` and `wake`): read it with
    /// [`SessionEntry::session`]; it changes only through `State::apply`.
    session: Session,
    /// Monotonic time the link went down (or the daemon started).
    pub link_down_since: Millis,
    /// The `last_seen_at` last written to the store; touches are coalesced.
    pub persisted_seen: Millis,
    /// Monotonic time of the last hook call or registration naming it (for
    /// a session loaded at start, the silence its `last_seen_at` showed
    /// then, carried over). The sweeper measures silence by this, so a wall
    /// clock set forward or back sweeps no one early or late; `last_seen_at`
    /// (wall) is what survives a restart.
    pub heard_mono: Millis,
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
    /// The other daemon it is linked to, as that daemon's heartbeat says
    /// (team mode; see `cluster`).
    pub linked_elsewhere: Option<String>,
    /// Its latest changes of activity, made when its record changes
    /// (`Roster::put`); none until the first, so a session that never
    /// changes costs one pointer.
    recent: Option<Box<RecentActivity>>,
}

/// A session's last [`ACTIVITY_KEPT`] changes of activity or tool, oldest
/// first (live, never stored: the dashboard's activity over time).
#[derive(Debug, Default)]
struct RecentActivity(VecDeque<Mark>);

/// One change: 32 bytes, and the tool's name when it names one.
#[derive(Debug)]
struct Mark {
    at: Millis,
    activity: Activity,
    tool: Option<Box<str>>,
}

/// A tool name longer than this is kept cut (hooks send names, not
/// arguments, but a harness may send anything).
const TOOL_KEPT_BYTES: usize = 64;

impl RecentActivity {
    fn note(&mut self, session: &Session) {
        if self.0.len() == ACTIVITY_KEPT {
            self.0.pop_front();
        }
        let tool = session.last_tool.as_deref().map(|t| {
            let mut end = t.len().min(TOOL_KEPT_BYTES);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            Box::from(&t[..end])
        });
        self.0.push_back(Mark {
            at: session.last_seen_at,
            activity: session.activity,
            tool,
        });
    }
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

impl SessionEntry {
    /// The session's record.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether a shim link is attached now (live, never stored).
    pub fn set_link_up(&mut self, up: bool) {
        self.session.link_up = up;
    }

    /// How an idle turn can be started now (live, never stored).
    pub fn set_wake_label(&mut self, label: Option<String>) {
        self.session.wake = label;
    }

    /// Its latest changes of activity or tool, oldest first.
    pub fn recent_activity(&self) -> Vec<ActivityChange> {
        let marks = self.recent.iter().flat_map(|r| r.0.iter());
        marks
            .map(|m| ActivityChange {
                at: m.at,
                activity: m.activity,
                tool: m.tool.as_deref().map(str::to_string),
            })
            .collect()
    }

    /// Notes the record's activity and tool if they differ from `before`'s.
    fn note_activity(&mut self, before: Option<&Session>) {
        let s = &self.session;
        let changed = match before {
            Some(b) => b.activity != s.activity || b.last_tool != s.last_tool,
            None => s.activity != Activity::Unknown,
        };
        if changed {
            self.recent.get_or_insert_with(Box::default).note(s);
        }
    }
}

/// Frees `session`'s nickname, unless it names another session by now: in
/// a team, a session another daemon gave the nickname to first may have
/// arrived before this one's record was taken back.
fn release_nickname(nicknames: &mut HashMap<String, String>, session: &Session) {
    if nicknames.get(&session.nickname) == Some(&session.id) {
        nicknames.remove(&session.nickname);
    }
}

#[derive(Default)]
pub struct Roster {
    sessions: HashMap<String, SessionEntry>,
    nicknames: HashMap<String, String>,
}

impl Roster {
    pub(super) fn insert(&mut self, session: Session, mono_now: Millis) {
        self.nicknames
            .insert(session.nickname.clone(), session.id.clone());
        let persisted_seen = session.last_seen_at;
        self.sessions.insert(
            session.id.clone(),
            SessionEntry {
                session,
                link_down_since: mono_now,
                persisted_seen,
                heard_mono: mono_now,
                root: None,
                last_boundary: 0,
                holds_in_row: 0,
                continuation_due: false,
                wake: WakeState::default(),
                linked_elsewhere: None,
                recent: None,
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
        self.sessions.get(id).map(|e| &e.session)
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
    pub fn sorted(&self, include_away: bool) -> Vec<Session> {
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

    /// One page of the roster in its order (arrival, then id): the first
    /// `limit` sessions after `after`, how many the whole roster holds, and
    /// whether more follow the page. Only the page is copied: copying all
    /// of 10,000 sessions to send a few hundred held the lock for
    /// milliseconds.
    pub fn page(
        &self,
        include_away: bool,
        after: Option<&RosterCursor>,
        limit: usize,
    ) -> (Vec<Session>, usize, bool) {
        fn key(s: &Session) -> (Millis, &str) {
            (s.connected_at, s.id.as_str())
        }
        let mut total = 0;
        let mut candidates: Vec<&Session> = Vec::new();
        for s in self.sessions.values().map(|e| &e.session) {
            if !include_away && !s.present() {
                continue;
            }
            total += 1;
            if after.is_none_or(|c| key(s) > (c.connected_at, c.id.as_str())) {
                candidates.push(s);
            }
        }
        let more = candidates.len() > limit;
        if more {
            candidates.select_nth_unstable_by(limit, |a, b| key(a).cmp(&key(b)));
            candidates.truncate(limit);
        }
        candidates.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        (candidates.into_iter().cloned().collect(), total, more)
    }

    /// A nickname for a new session id.
    pub fn new_nickname(&self, id: &str) -> String {
        nickname::generate(id, |n| self.nicknames.contains_key(n))
    }

    /// The sessions the liveness policy removes now. Decided in place,
    /// under the caller's lock, cloning only the ids to remove: at 100,000
    /// sessions copying every id would hold the lock ten times longer.
    /// Silence is monotonic time since the session was last heard
    /// (`heard_mono`), given to the policy as the wall time it would be
    /// had the wall clock not been set since.
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
                    last_seen_at: clock.wall - (clock.mono - e.heard_mono).max(0),
                };
                (&e.session.id, observation)
            });
        liveness::sweep(policy, view, clock, links_known)
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

    /// Inserts or replaces a session's stored record, keeping its live state.
    pub(super) fn put(&mut self, session: &Session, mono_now: Millis) {
        let Some(entry) = self.sessions.get_mut(&session.id) else {
            self.insert(session.clone(), mono_now);
            if let Some(entry) = self.sessions.get_mut(&session.id) {
                entry.note_activity(None);
            }
            return;
        };
        if entry.session.nickname != session.nickname {
            release_nickname(&mut self.nicknames, &entry.session);
            self.nicknames
                .insert(session.nickname.clone(), session.id.clone());
        }
        let live = (entry.session.link_up, entry.session.wake.take());
        let before = std::mem::replace(&mut entry.session, session.clone());
        (entry.session.link_up, entry.session.wake) = live;
        entry.persisted_seen = entry.persisted_seen.max(session.last_seen_at);
        entry.note_activity(Some(&before));
    }

    /// Forgets a session and its nickname.
    pub(super) fn forget(&mut self, id: &str) {
        if let Some(e) = self.sessions.remove(id) {
            release_nickname(&mut self.nicknames, &e.session);
        }
    }

    /// Ids of sessions that left the roster before `cutoff`.
    pub fn left_before(&self, cutoff: Millis) -> Vec<String> {
        self.sessions
            .values()
            .filter(|e| e.session.left_at.is_some_and(|t| t < cutoff))
            .map(|e| e.session.id.clone())
            .collect()
    }

    pub fn by_nickname(&self, nickname: &str) -> Option<&Session> {
        self.nicknames.get(nickname).and_then(|id| self.session(id))
    }

    pub fn all(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|e| &e.session)
    }

    /// Moves a session's durable `last_seen_at` with a coalesced touch.
    pub(super) fn touch(&mut self, id: &str, last_seen_at: Millis) {
        if let Some(e) = self.sessions.get_mut(id) {
            e.session.last_seen_at = e.session.last_seen_at.max(last_seen_at);
            e.persisted_seen = e.persisted_seen.max(last_seen_at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five sessions, two of them arriving at the same moment, one away.
    fn roster() -> Roster {
        let mut roster = Roster::default();
        for (id, at) in [("e", 30), ("b", 10), ("d", 20), ("c", 20), ("a", 40)] {
            let mut s = Session::new(id, &format!("nick-{id}"), at);
            s.connected_at = at;
            s.left_at = (id == "a").then_some(50);
            roster.insert(s, 0);
        }
        roster
    }

    fn ids(page: &[Session]) -> Vec<&str> {
        page.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn pages_walk_the_roster_in_arrival_order_once_each() {
        let roster = roster();
        let (first, total, more) = roster.page(false, None, 2);
        assert_eq!((ids(&first), total, more), (vec!["b", "c"], 4, true));
        let after = RosterCursor::after(first.last().unwrap());
        let (second, total, more) = roster.page(false, Some(&after), 2);
        assert_eq!((ids(&second), total, more), (vec!["d", "e"], 4, false));
        let after = RosterCursor::after(second.last().unwrap());
        let (third, _, more) = roster.page(false, Some(&after), 2);
        assert_eq!((ids(&third), more), (Vec::<&str>::new(), false));
        // The whole roster, and the sessions that left too.
        assert_eq!(ids(&roster.page(false, None, 10).0), ["b", "c", "d", "e"]);
        let (all, total, _) = roster.page(true, None, 10);
        assert_eq!((ids(&all), total), (vec!["b", "c", "d", "e", "a"], 5));
        assert_eq!(
            ids(&roster.sorted(true)),
            ids(&all),
            "the order of the unpaged roster"
        );
    }

    #[test]
    fn a_session_keeps_its_last_activity_changes_only_when_they_change() {
        let mut roster = Roster::default();
        let mut s = Session::new("s", "nick-s", 1);
        roster.put(&s, 0);
        assert!(roster.entry("s").unwrap().recent.is_none(), "nothing yet");
        s.activity = Activity::Idle;
        roster.put(&s, 0);
        s.last_seen_at = 5;
        roster.put(&s, 0);
        assert_eq!(roster.entry("s").unwrap().recent_activity().len(), 1);
        for i in 0..40 {
            s.last_seen_at = 10 + i;
            s.activity = Activity::Busy;
            s.last_tool = Some(format!("tool-{i}-{}", "é".repeat(40)));
            roster.put(&s, 0);
        }
        let recent = roster.entry("s").unwrap().recent_activity();
        assert_eq!(recent.len(), ACTIVITY_KEPT);
        let last = recent.last().unwrap();
        assert_eq!((last.at, last.activity), (49, Activity::Busy));
        let tool = last.tool.as_deref().unwrap();
        assert!(tool.starts_with("tool-39-") && tool.len() <= TOOL_KEPT_BYTES);
        assert_eq!(recent[0].at, 49 - ACTIVITY_KEPT as Millis + 1);
        assert_eq!(std::mem::size_of::<Mark>(), 32);
        // A session loaded at start keeps nothing until it changes.
        let mut loaded = Session::new("t", "nick-t", 1);
        loaded.activity = Activity::Busy;
        roster.insert(loaded, 0);
        assert!(roster.entry("t").unwrap().recent.is_none());
    }

    #[test]
    fn a_page_starts_after_its_cursor_even_when_that_session_is_gone() {
        let roster = roster();
        let gone = RosterCursor {
            connected_at: 20,
            id: "cc".into(),
        };
        assert_eq!(ids(&roster.page(false, Some(&gone), 10).0), ["d", "e"]);
    }
}
