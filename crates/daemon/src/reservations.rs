//! File reservations, the edit guard, and collision notices.
//!
//! A reservation is a session's claim on paths or globs in one repository,
//! exclusive or shared, until it expires, is released, or its holder leaves
//! the roster. Conflicts are decided under the hub's lock, so among any
//! number of racing sessions exactly one gets an exclusive claim.

use std::collections::HashSet;

use axum::http::StatusCode;
use muster_core::api::{
    CheckRequest, ReleaseRequest, ReleaseResponse, ReservationView, Reservations, ReserveRequest,
    DEFAULT_TTL_S, MAX_TTL_S,
};
use muster_core::inbox::format_utc;
use muster_core::limits::MAX_STATUS_CHARS;
use muster_core::paths::{self, MAX_PATTERN_LEN};
use muster_core::{validate, CoreError, Match, Millis, Reservation, Session};
use muster_store::Change;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::gitinfo;
use crate::hub::Hub;
use crate::state::{Principal, State};

/// Most paths one request may reserve or release.
const MAX_PATHS: usize = 64;

/// What the edit guard does when an edit targets a path another session
/// holds exclusively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuardMode {
    /// Refuse the tool call (the harness tells the model why).
    #[default]
    Deny,
    /// Ask the person at the keyboard.
    Ask,
    /// Let it through, with a warning in the agent's context.
    Warn,
    Off,
}

impl GuardMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(GuardMode::Deny),
            "ask" => Ok(GuardMode::Ask),
            "warn" => Ok(GuardMode::Warn),
            "off" => Ok(GuardMode::Off),
            other => Err(format!(
                "unknown edit-guard mode {other:?}; use deny, ask, warn or off"
            )),
        }
    }
}

/// The guard's verdict on one tool call.
pub struct Verdict {
    pub mode: GuardMode,
    pub reason: String,
}

/// A session's paths mean nothing without a working directory.
fn no_directory() -> ApiError {
    CoreError::invalid(
        "as",
        "this session has no working directory, so its paths mean nothing",
    )
    .into()
}

fn describe_holder(st: &State, r: &Reservation) -> String {
    let nickname = st
        .session(&r.session_id)
        .map_or(r.session_id.as_str(), |s| s.nickname.as_str());
    let reason = if r.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", validate::clean_peer_text(&r.reason))
    };
    format!(
        "{} is held {} by {nickname} (session {}) until {}{reason}. Reach them with send_message to={nickname}.",
        r.pattern,
        if r.exclusive { "exclusively" } else { "shared" },
        r.session_id,
        format_utc(r.expires_at)
    )
}

fn view(st: &State, r: &Reservation) -> ReservationView {
    let nickname = st
        .session(&r.session_id)
        .map(|s| s.nickname.clone())
        .unwrap_or_default();
    ReservationView {
        reservation: r.clone(),
        nickname,
    }
}

impl State {
    /// Live reservations of sessions still on the roster.
    pub fn live_reservations(&self, now: Millis) -> impl Iterator<Item = &Reservation> {
        self.files.all().filter(move |r| {
            r.live(now) && self.session(&r.session_id).is_some_and(Session::present)
        })
    }

    /// Other sessions' live claims that conflict with this one.
    fn conflicts(
        &self,
        me: &str,
        root: &str,
        pattern: &str,
        exclusive: bool,
        now: Millis,
    ) -> Vec<&Reservation> {
        self.live_reservations(now)
            .filter(|r| r.session_id != me && r.conflicts_with(root, pattern, exclusive))
            .collect()
    }
}

/// Refuses the whole request, naming each holder, if any pattern conflicts
/// with another session's live claim.
fn refuse_conflicts(
    st: &State,
    me: &str,
    root: &str,
    patterns: &[String],
    exclusive: bool,
    now: Millis,
) -> Result<(), ApiError> {
    let mut refusals: Vec<String> = Vec::new();
    let mut holders: Vec<Match> = Vec::new();
    for pattern in patterns {
        for r in st.conflicts(me, root, pattern, exclusive, now) {
            refusals.push(format!("{pattern}: {}", describe_holder(st, r)));
            if !holders.iter().any(|h| h.id == r.session_id) {
                let nickname = st
                    .session(&r.session_id)
                    .map(|s| s.nickname.clone())
                    .unwrap_or_default();
                holders.push(Match {
                    id: r.session_id.clone(),
                    nickname,
                    present: true,
                });
            }
        }
    }
    if refusals.is_empty() {
        return Ok(());
    }
    let mut e = ApiError::new(
        StatusCode::CONFLICT,
        "reservation_conflict",
        format!("not reserved (nothing was):\n- {}", refusals.join("\n- ")),
    );
    e.matches = holders;
    Err(e)
}

impl Hub {
    fn session_principal(&self, st: &State, as_: Option<&str>) -> Result<Session, ApiError> {
        match st.principal(as_, &self.config.operator)? {
            Principal::Session(id) => st
                .session(&id)
                .filter(|s| s.present())
                .cloned()
                .ok_or_else(|| CoreError::UnknownSession(id).into()),
            Principal::Operator(_) => {
                Err(CoreError::invalid("as", "only sessions hold reservations").into())
            }
        }
    }

    /// Grants every path or none: a conflict with any refuses them all,
    /// naming each holder. In a team, the database has the last word: a
    /// grant another daemon's reservation raced is decided again on what
    /// that daemon granted.
    pub async fn reserve(&self, req: ReserveRequest) -> Result<Reservations, ApiError> {
        let mut attempt = 0;
        loop {
            match self.reserve_once(req.clone()).await {
                Err(e) if e.decided_elsewhere() && attempt < crate::error::DECIDE_AGAIN => {
                    attempt += 1;
                    self.catch_up().await?;
                }
                answer => return answer,
            }
        }
    }

    async fn reserve_once(&self, req: ReserveRequest) -> Result<Reservations, ApiError> {
        if req.paths.is_empty() || req.paths.len() > MAX_PATHS {
            return Err(CoreError::invalid(
                "paths",
                format!("give 1 to {MAX_PATHS} paths or globs"),
            )
            .into());
        }
        let ttl_s = req.ttl_s.unwrap_or(DEFAULT_TTL_S);
        if ttl_s == 0 || ttl_s > MAX_TTL_S {
            return Err(CoreError::invalid(
                "ttl_s",
                format!("must be from 1 to {MAX_TTL_S} seconds"),
            )
            .into());
        }
        let reason = req.reason.unwrap_or_default();
        validate::text("reason", &reason, MAX_STATUS_CHARS)?;
        let now = self.clock.wall();
        let me = self.session_principal(&self.lock(), req.as_.as_deref())?;
        let root = self.session_root(&me).ok_or_else(no_directory)?;
        let mut patterns = Vec::with_capacity(req.paths.len());
        for p in &req.paths {
            let pattern = paths::normalize(p, &me.cwd, &root)?;
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
        let (granted, commit) = {
            let mut st = self.lock();
            refuse_conflicts(&st, &me.id, &root, &patterns, req.exclusive, now)?;
            // Decided on what memory has of the log: granted only if no
            // other daemon changed reservations since.
            let mut changes = Vec::new();
            if self.shared.is_some() {
                changes.push(Change::ReservationsUnchangedSince {
                    seq: st.applied_seq,
                });
            }
            let mut granted = Vec::new();
            for pattern in patterns {
                // Re-reserving one's own pattern renews it in place.
                let existing = st.files.own(&me.id, &root, &pattern).map(|r| r.id.clone());
                let r = Reservation {
                    id: existing.unwrap_or_else(|| st.next_message_id()),
                    session_id: me.id.clone(),
                    root: root.clone(),
                    pattern,
                    exclusive: req.exclusive,
                    reason: reason.clone(),
                    created_at: now,
                    expires_at: now + (ttl_s as Millis) * 1_000,
                };
                granted.push(view(&st, &r));
                changes.push(Change::PutReservation(r));
            }
            (granted, self.commit(&mut st, changes))
        };
        commit.await?;
        self.events
            .publish("reservation.granted", || json!({"reservations": &granted}));
        Ok(Reservations {
            reservations: granted,
        })
    }

    /// Releases the named paths (as normalized) or, with none, everything the session holds.
    pub async fn release(&self, req: ReleaseRequest) -> Result<ReleaseResponse, ApiError> {
        if req.paths.len() > MAX_PATHS {
            return Err(CoreError::invalid("paths", format!("at most {MAX_PATHS} at once")).into());
        }
        let me = self.session_principal(&self.lock(), req.as_.as_deref())?;
        let wanted: Option<HashSet<String>> = if req.paths.is_empty() {
            None
        } else {
            let root = self.session_root(&me).ok_or_else(no_directory)?;
            Some(
                req.paths
                    .iter()
                    .map(|p| paths::normalize(p, &me.cwd, &root))
                    .collect::<Result<_, _>>()?,
            )
        };
        let (ids, commit) = {
            let mut st = self.lock();
            let ids: Vec<String> = st
                .files
                .all()
                .filter(|r| {
                    r.session_id == me.id && wanted.as_ref().is_none_or(|w| w.contains(&r.pattern))
                })
                .map(|r| r.id.clone())
                .collect();
            let changes = ids
                .iter()
                .map(|id| Change::DeleteReservation { id: id.clone() })
                .collect();
            let commit = self.commit(&mut st, changes);
            (ids, commit)
        };
        commit.await?;
        if !ids.is_empty() {
            self.events.publish(
                "reservation.released",
                || json!({"session": me.id, "ids": ids}),
            );
        }
        Ok(ReleaseResponse {
            released: ids.len(),
        })
    }

    /// The exclusive claims of other live sessions on these absolute paths
    /// (for the git pre-commit guard, which knows files, not sessions).
    pub fn check_paths(&self, req: CheckRequest) -> Result<Reservations, ApiError> {
        if req.paths.len() > 10_000 {
            return Err(CoreError::invalid("paths", "at most 10,000 at once").into());
        }
        let now = self.clock.wall();
        // Each path's checkout, read from the file system before the lock.
        let mut located: Vec<(String, String)> = Vec::with_capacity(req.paths.len());
        for path in &req.paths {
            if !path.starts_with('/') || path.len() > MAX_PATTERN_LEN {
                return Err(CoreError::invalid(
                    "paths",
                    format!("{path:?} must be an absolute path"),
                )
                .into());
            }
            let dir = path
                .rsplit_once('/')
                .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
            let Some(root) = gitinfo::repo_root(dir) else {
                continue;
            };
            if let Ok(rel) = paths::normalize(path, &root, &root) {
                located.push((root, rel));
            }
        }
        let st = self.lock();
        let me = match st.principal(req.as_.as_deref(), &self.config.operator)? {
            Principal::Session(id) => Some(id),
            Principal::Operator(_) => None,
        };
        let mut hits: Vec<ReservationView> = Vec::new();
        for (root, rel) in &located {
            for r in st.live_reservations(now) {
                let mine = me.as_deref() == Some(r.session_id.as_str());
                if !mine
                    && r.exclusive
                    && r.root == *root
                    && paths::matches(&r.pattern, rel)
                    && !hits.iter().any(|h| h.reservation.id == r.id)
                {
                    hits.push(view(&st, r));
                }
            }
        }
        Ok(Reservations { reservations: hits })
    }

    pub fn reservations(&self) -> Reservations {
        let now = self.clock.wall();
        let st = self.lock();
        Reservations {
            reservations: st.live_reservations(now).map(|r| view(&st, r)).collect(),
        }
    }

    /// The change ending a departing session's claims (it left the
    /// roster); none if it holds none.
    pub(crate) fn reservations_end(st: &State, session_id: &str) -> Option<Change> {
        st.files
            .holds_any(session_id)
            .then(|| Change::DeleteReservationsOf {
                session_id: session_id.to_string(),
            })
    }

    /// Expired claims and old write records, dropped on each sweep.
    pub(crate) fn expire_reservations(&self) {
        let now = self.clock.wall();
        let window = self.config.collision_window.as_millis() as Millis;
        let (expired, commit) = {
            let mut st = self.lock();
            let expired = st.files.expired(now);
            st.files.forget_writes_before(now, window);
            let changes: Vec<Change> = expired
                .iter()
                .map(|id| Change::DeleteReservation { id: id.clone() })
                .collect();
            let commit = (!changes.is_empty()).then(|| self.commit(&mut st, changes));
            (expired, commit)
        };
        if let Some(commit) = commit {
            tokio::spawn(async move {
                if let Err(e) = commit.await {
                    tracing::warn!("could not delete expired reservations: {e}");
                }
            });
            self.events
                .publish("reservation.expired", || json!({"ids": expired}));
        }
    }

    /// The edit guard and collision tracking for a tool about to run:
    /// returns the verdict if the tool writes a file another live session
    /// holds exclusively; records the write otherwise.
    pub fn check_edit(&self, session_id: &str, tool: &str, input: &Value) -> Option<Verdict> {
        let mode = self.config.edit_guard;
        let targets = written_paths(tool, input);
        if targets.is_empty() {
            return None;
        }
        let now = self.clock.wall();
        let window = self.config.collision_window.as_millis() as Millis;
        let me = self.lock().session(session_id)?.clone();
        let root = self.session_root(&me)?;
        let mut st = self.lock();
        let rels: Vec<String> = targets
            .iter()
            .filter_map(|p| paths::normalize(p, &me.cwd, &root).ok())
            .collect();
        let mut refusals = Vec::new();
        for rel in &rels {
            for r in st.live_reservations(now) {
                if r.session_id != me.id
                    && r.exclusive
                    && r.root == root
                    && paths::matches(&r.pattern, rel)
                {
                    refusals.push(format!("{rel}: {}", describe_holder(&st, r)));
                }
            }
        }
        if !refusals.is_empty() && mode != GuardMode::Off {
            return Some(Verdict {
                mode,
                reason: format!(
                    "muster: another agent session holds this file.\n- {}\nCoordinate before editing, or work elsewhere.",
                    refusals.join("\n- ")
                ),
            });
        }
        for rel in rels {
            record_write(&mut st, &me, &root, rel, now, window);
        }
        None
    }

    /// Notes waiting for a session (collision notices), taken once.
    pub fn take_notices(&self, session_id: &str) -> Vec<String> {
        self.lock().files.take_notices(session_id)
    }
}

/// Remembers a write; if another session wrote the same file within the
/// window, both are told at their next hook, once per pair and file.
fn record_write(
    st: &mut State,
    me: &Session,
    root: &str,
    rel: String,
    now: Millis,
    window: Millis,
) {
    let minutes = window / 60_000;
    for collision in st.files.record_write(&me.id, root, &rel, now, window) {
        let other = collision.other;
        let other_nick = st
            .session(&other)
            .map(|s| s.nickname.clone())
            .unwrap_or_else(|| other.clone());
        st.files.notify(&me.id, format!(
            "{rel} was also edited by {other_nick} (session {other}) in the last {minutes} minutes; check with them before going on."
        ));
        st.files.notify(&other, format!(
            "{rel} was also edited by {} (session {}) in the last {minutes} minutes; check with them before going on.",
            me.nickname, me.id
        ));
    }
}

impl Hub {
    /// [`written_paths`], reachable from outside the crate for the fuzz
    /// targets (`crates/fuzzing`).
    #[doc(hidden)]
    pub fn written_paths(tool: &str, input: &Value) -> Vec<String> {
        written_paths(tool, input)
    }
}

/// The files a tool call would write: Claude Code's Edit, Write, MultiEdit
/// and NotebookEdit; Gemini CLI's write_file and replace; opencode's edit
/// and write; and any call carrying an apply_patch patch (Codex runs it as
/// its own tool or through its shell). Other shell writes are out of scope.
pub fn written_paths(tool: &str, input: &Value) -> Vec<String> {
    let field = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| input.get(*k).and_then(Value::as_str))
            .map(str::to_string)
    };
    let named = match tool {
        "Edit" | "Write" | "MultiEdit" | "write_file" | "replace" | "edit" | "write" => {
            field(&["file_path", "filePath"])
        }
        "NotebookEdit" => field(&["notebook_path"]),
        _ => None,
    };
    let mut paths: Vec<String> = named.into_iter().collect();
    for p in patch_paths(input) {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    paths
}

/// Paths named by `*** Add/Update/Delete File:` (and `*** Move to:`) lines
/// in any string of an apply_patch call.
fn patch_paths(input: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut visit = vec![input];
    while let Some(v) = visit.pop() {
        match v {
            Value::String(s) => {
                for line in s.lines() {
                    let line = line.trim();
                    for prefix in [
                        "*** Add File:",
                        "*** Update File:",
                        "*** Delete File:",
                        "*** Move to:",
                    ] {
                        if let Some(p) = line.strip_prefix(prefix) {
                            let p = p.trim();
                            if !p.is_empty()
                                && p.len() <= MAX_PATTERN_LEN
                                && !out.iter().any(|o| o == p)
                            {
                                out.push(p.to_string());
                            }
                        }
                    }
                }
            }
            Value::Array(items) => visit.extend(items),
            Value::Object(map) => visit.extend(map.values()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_files_edit_tools_write() {
        assert_eq!(
            written_paths("Edit", &json!({"file_path": "/r/a.rs", "old_string": "x"})),
            ["/r/a.rs"]
        );
        assert_eq!(
            written_paths("NotebookEdit", &json!({"notebook_path": "n.ipynb"})),
            ["n.ipynb"]
        );
        assert!(written_paths("Read", &json!({"file_path": "/r/a.rs"})).is_empty());
        assert!(written_paths("Bash", &json!({"command": "echo > a"})).is_empty());
        let patch = "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-x\n+y\n*** Add File: src/b.rs\n+z\n*** End Patch";
        assert_eq!(
            written_paths("apply_patch", &json!({"command": ["apply_patch", patch]})),
            ["src/a.rs", "src/b.rs"]
        );
        // Codex 0.171 runs apply_patch through its shell.
        let heredoc = format!("apply_patch <<'EOF'\n{patch}\nEOF");
        assert_eq!(
            written_paths("Bash", &json!({"command": heredoc})),
            ["src/a.rs", "src/b.rs"]
        );
        assert_eq!(
            written_paths("write_file", &json!({"file_path": "g.rs", "content": "x"})),
            ["g.rs"]
        );
        assert_eq!(
            written_paths("edit", &json!({"filePath": "/r/o.rs"})),
            ["/r/o.rs"]
        );
    }
}
