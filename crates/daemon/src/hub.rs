//! The hub: every operation of the daemon, whichever route it came by.
//!
//! The rules for every change: decide under the lock, from memory, which
//! `Change`s an operation makes; apply them to memory and submit them to the
//! store in that same critical section ([`Hub::commit`]), so memory and
//! store take the same changes in the same order; answer only once the
//! store has made them durable, so nothing acknowledged is lost. A new
//! message is offered to no reader before it is durable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use muster_core::api::{
    AckRequest, AckResponse, BroadcastRequest, DeliveryView, Inbox, InboxMessage, RegisterRequest,
    RoomRequest, RoomView, SendRequest, SendResponse, Status, Thread, ThreadDelivery,
    UpdateSessionRequest,
};
use muster_core::limits::{RateLimiter, MAX_FIELD_CHARS, MAX_NAME_LEN, MAX_STATUS_CHARS};
use muster_core::liveness::Policy;
use muster_core::protocol::{HookEvent, SendOutcome};
use muster_core::{
    validate, Activity, CoreError, Delivery, DeliveryState, Message, Millis, Session, Target,
};
use muster_store::shared::Shared;
use muster_store::{Change, Commit, InboxQuery, Store};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::events::Bus;
use crate::metrics::Metrics;
use crate::state::{Claim, Principal, State};
use crate::surfacing::{Settle, Settler, Surfacing};
use crate::{gitinfo, Config};

/// Touches of `last_seen_at` closer together than this are not written
/// again; the hook backstop is measured in minutes.
const TOUCH_PERSIST_MS: Millis = 1_000;

/// A push that a harness shows reaches an idle session's transcript within
/// this (Claude Code starts the turn in about 120 ms); a turn-start hook
/// that finds an older push missing from the transcript surfaces it.
pub(crate) const PUSH_SHOWN_WITHIN_MS: Millis = 2_000;

/// Where in a session's turn a hook fires; it decides which mail the hook
/// may hand to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Session start or a user prompt: all mail nothing delivered yet.
    TurnStart,
    /// After a tool ran: urgent mail only (direct and @mentions).
    MidTurn,
    /// The turn is about to end: urgent mail holds it.
    Stop,
}

/// What a hook call or registration tells us about a session.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub id: String,
    pub harness: Option<String>,
    pub host: Option<String>,
    pub operator: Option<String>,
    pub pid: Option<u32>,
    pub cwd: Option<String>,
    pub project: Option<String>,
    pub branch: Option<String>,
    pub status: Option<String>,
    pub activity: Option<Activity>,
    /// The tool the agent is about to run (its name only).
    pub tool: Option<String>,
    /// The token the caller came with, if any: a bound one may observe only
    /// its own sessions, and a session it registers is its own.
    pub by: Option<muster_core::token::Grant>,
}

pub struct Hub {
    pub config: Config,
    /// Shared with refused commits, which take their changes back.
    state: Arc<Mutex<State>>,
    pub(crate) store: Arc<dyn Store>,
    pub events: Bus,
    pub metrics: Metrics,
    pub clock: Clock,
    started_at: Millis,
    store_desc: String,
    links_known: AtomicBool,
    /// Cancelled when the daemon stops: long-lived streams and links end.
    pub shutdown: CancellationToken,
    /// Where answers settle the mail they claimed (see `surfacing`).
    settler: Settler,
    /// Rate buckets for sends (by sender) and hook calls (by session).
    /// A lock of its own, taken after the state's when both are.
    rates: Mutex<Rates>,
    /// The team side of a store several daemons share (see `cluster`).
    pub(crate) shared: Option<Arc<dyn Shared>>,
    /// Held while the other daemons' changes are applied: one catch-up at a time.
    pub(crate) following: tokio::sync::Mutex<()>,
    /// The hub itself, for work a `&self` method hands to tasks.
    pub(crate) me: Weak<Hub>,
    /// Why the daemon stopped itself, if it did (see `cluster`).
    pub stopped_because: std::sync::OnceLock<String>,
    /// The tokens made with `muster token create` (see `tokens`).
    pub(crate) tokens: crate::tokens::Registry,
}

/// The per-session rate buckets.
#[derive(Default)]
struct Rates {
    sends: RateLimiter,
    hooks: RateLimiter,
}

fn check_field(field: &'static str, value: &Option<String>, max: usize) -> Result<(), CoreError> {
    value
        .as_deref()
        .map_or(Ok(()), |v| validate::text(field, v, max))
}

impl Observed {
    fn validate(&self) -> Result<(), CoreError> {
        validate::session_id(&self.id)?;
        check_field("harness", &self.harness, MAX_NAME_LEN)?;
        check_field("host", &self.host, MAX_FIELD_CHARS)?;
        check_field("cwd", &self.cwd, MAX_FIELD_CHARS)?;
        check_field("project", &self.project, MAX_FIELD_CHARS)?;
        check_field("branch", &self.branch, MAX_FIELD_CHARS)?;
        check_field("status", &self.status, MAX_STATUS_CHARS)?;
        check_field("tool", &self.tool, MAX_FIELD_CHARS)?;
        if let Some(op) = self.operator.as_deref().filter(|o| !o.is_empty()) {
            validate::name("operator", op)?;
        }
        Ok(())
    }
}

impl From<RegisterRequest> for Observed {
    fn from(r: RegisterRequest) -> Self {
        Observed {
            id: r.id,
            harness: r.harness,
            host: r.host,
            operator: r.operator,
            pid: r.pid,
            cwd: r.cwd,
            project: r.project,
            branch: r.branch,
            status: r.status,
            activity: None,
            tool: None,
            by: None,
        }
    }
}

/// Sets `field` to `value` if given and different; says whether it changed.
fn set<T: PartialEq>(field: &mut T, value: Option<T>) -> bool {
    match value {
        Some(v) if *field != v => {
            *field = v;
            true
        }
        _ => false,
    }
}

/// How a session observation must be persisted.
enum Persist {
    /// Identity or fields changed: written before the caller is answered.
    Now,
    /// Only activity changed: written with the next batch.
    Later,
    /// Only `last_seen_at` moved: a coalesced touch, if due.
    Touch,
}

/// What a send reports over all its recipients.
fn outcome(views: &[DeliveryView]) -> SendOutcome {
    let pushed = |v: &DeliveryView| v.state == DeliveryState::Pushed;
    if views.is_empty() {
        SendOutcome::None
    } else if views.iter().all(pushed) {
        SendOutcome::Pushed
    } else if views.iter().all(|v| pushed(v) || v.woken) {
        SendOutcome::Woken
    } else {
        SendOutcome::Queued
    }
}

/// Session ids @mentioned in a body, by nickname or session id.
pub(crate) fn mentioned(body: &str, st: &State) -> Vec<String> {
    let mut ids = Vec::new();
    for name in muster_core::wake::mentions(body) {
        if let Some(s) = st
            .session(name)
            .or_else(|| muster_core::address::Directory::by_nickname(st, name))
        {
            if !ids.contains(&s.id) {
                ids.push(s.id.clone());
            }
        }
    }
    ids
}

/// The hub's settler task: runs what answers report of the mail they
/// claimed (see `surfacing`), until the hub is gone.
async fn settle(hub: Weak<Hub>, mut settlements: UnboundedReceiver<Settle>) {
    while let Some(settle) = settlements.recv().await {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        match settle {
            Settle::Surfaced { recipient, ids } => {
                // Each in a task of its own, as before: a slow store write
                // must not hold up other releases.
                tokio::spawn(async move { hub.mark_surfaced(&recipient, &ids).await });
            }
            Settle::Released { recipient, ids } => hub.lock().mail.unclaim(&recipient, &ids),
        }
    }
}

/// Submits `changes` again, waiting longer each time (up to 5 s), until
/// the store takes them or stops. For marks that memory holds already:
/// they only move deliveries forward, so a late one changes no outcome.
async fn record_until_stored(store: Arc<dyn Store>, recipient: String, changes: Vec<Change>) {
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        tokio::time::sleep(wait).await;
        match store.submit(changes.clone()).await {
            Ok(()) => {
                tracing::info!("recorded surfaced mail for {recipient} once the store could write");
                return;
            }
            Err(muster_store::StoreError::Stopped) => return,
            Err(_) => wait = (wait * 2).min(std::time::Duration::from_secs(5)),
        }
    }
}

impl Hub {
    pub async fn load(
        config: Config,
        store: Arc<dyn Store>,
        store_desc: String,
    ) -> anyhow::Result<Arc<Hub>> {
        Self::load_shared(config, store, store_desc, None).await
    }

    /// [`Hub::load`] on a store other daemons may share (`shared` is its
    /// team side): memory starts at the log position the snapshot has.
    pub async fn load_shared(
        config: Config,
        store: Arc<dyn Store>,
        store_desc: String,
        shared: Option<Arc<dyn Shared>>,
    ) -> anyhow::Result<Arc<Hub>> {
        let clock = config.clock.clone();
        let (mut snapshot, seq) = match &shared {
            Some(shared) => shared.load_at().await?,
            None => (store.load().await?, 0),
        };
        let tokens = crate::tokens::Registry::new(std::mem::take(&mut snapshot.tokens));
        let mut state = State::from_snapshot(snapshot, clock.now());
        state.applied_seq = seq;
        let (settler, settlements) = tokio::sync::mpsc::unbounded_channel();
        let metrics = Metrics::for_store(store.health());
        let hub = Arc::new_cyclic(|me| Hub {
            me: me.clone(),
            config,
            state: Arc::new(Mutex::new(state)),
            store,
            events: Bus::new(),
            metrics,
            started_at: clock.wall(),
            clock,
            store_desc,
            links_known: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            settler,
            rates: Mutex::new(Rates::default()),
            shared,
            following: tokio::sync::Mutex::new(()),
            stopped_because: std::sync::OnceLock::new(),
            tokens,
        });
        tokio::spawn(settle(Arc::downgrade(&hub), settlements));
        Ok(hub)
    }

    /// A claim on `ids` of `recipient`'s mail, settled when its answer is
    /// written (surfaced) or dropped (released).
    pub(crate) fn surfacing(&self, recipient: String, ids: Vec<String>) -> Surfacing {
        Surfacing::new(self.settler.clone(), recipient, ids)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-changed in a
        // way worse than refusing all service, so recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `changes` to memory and submits them to the store, in the
    /// caller's critical section (`st` is the hub's lock): the one way the
    /// daemon's durable state changes. The commit resolves once they are
    /// durable. If the store refuses them, the commit takes them back in
    /// memory before it resolves (see `state::Undo`: session records,
    /// reservations, rooms and memberships, each unless changed again
    /// since), so memory holds what the store has; the error reaches the
    /// caller. A new message settles by `Mailboxes::settle` instead.
    pub(crate) fn commit(&self, st: &mut State, changes: Vec<Change>) -> Commit {
        self.commit_as(st, changes, false)
    }

    /// [`commit`](Self::commit), for changes no answer waits on: the store
    /// may hold them a moment to commit them with the next write
    /// (`Store::submit_unhurried`).
    pub(crate) fn commit_unhurried(&self, st: &mut State, changes: Vec<Change>) -> Commit {
        self.commit_as(st, changes, true)
    }

    fn commit_as(&self, st: &mut State, changes: Vec<Change>, unhurried: bool) -> Commit {
        if changes.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let mut undo = st.undo_of(&changes);
        let mono = self.clock.mono();
        for change in &changes {
            st.apply(change, mono);
        }
        st.note_applied(&mut undo);
        let commit = if unhurried {
            self.store.submit_unhurried(changes)
        } else {
            self.store.submit(changes)
        };
        if undo.is_empty() {
            return commit;
        }
        let (state, clock) = (self.state.clone(), self.clock.clone());
        // A task of its own: the undo must run even if the caller stops
        // waiting (hyper drops a handler's future when its client hangs up).
        let watched = tokio::spawn(async move {
            let result = commit.await;
            if let Err(e) = &result {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                let undone = st.undo(undo, clock.mono());
                tracing::warn!("the store refused a change ({e}); {undone} taken back in memory");
            }
            result
        });
        Box::pin(async move {
            watched.await.unwrap_or_else(|e| {
                Err(muster_store::StoreError::Write(format!(
                    "the commit's task ended: {e}"
                )))
            })
        })
    }

    /// As [`Hub::commit`], for changes whose loss in a crash costs nothing
    /// (activity, coalesced touches): written with the next batch, unawaited.
    pub(crate) fn commit_later(&self, st: &mut State, changes: Vec<Change>) {
        let mono = self.clock.mono();
        for change in &changes {
            st.apply(change, mono);
        }
        self.store.apply_later(changes);
    }

    /// Takes one send from `sender`'s budget, or refuses (429) saying when
    /// the next will be taken.
    pub(crate) fn take_send(&self, sender: &str) -> Result<(), ApiError> {
        let rate = self.config.send_rate;
        let now = self.clock.mono();
        let taken = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sends
            .take(sender, rate, now);
        taken.map_err(|retry| {
            self.metrics.rate_limited_sends.inc();
            ApiError::rate_limited(
                format!(
                    "{sender} is sending too fast (limit {}/s, bursts of {})",
                    rate.per_sec, rate.burst
                ),
                retry,
            )
        })
    }

    /// Takes one hook call from `session`'s budget, or refuses (429).
    pub(crate) fn take_hook(&self, session: &str) -> Result<(), ApiError> {
        let rate = self.config.hook_rate;
        let now = self.clock.mono();
        let taken = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hooks
            .take(session, rate, now);
        taken.map_err(|retry| {
            self.metrics.rate_limited_hooks.inc();
            ApiError::rate_limited(
                format!(
                    "session {session} is calling hooks too fast (limit {}/s, bursts of {})",
                    rate.per_sec, rate.burst
                ),
                retry,
            )
        })
    }

    pub fn mark_links_known(&self) {
        self.links_known.store(true, Ordering::Release);
    }

    pub fn policy(&self) -> Policy {
        Policy {
            stale_after_ms: self.config.stale_after.as_millis() as Millis,
            hook_backstop_ms: self.config.hook_backstop.as_millis() as Millis,
        }
    }

    /// Registers or refreshes a session from a hook call or the API.
    /// Fields a shim link owns (`link`, `can_push`) are never changed here.
    /// Returns the session and whether it (re)joined the roster.
    pub async fn observe(&self, obs: Observed) -> Result<(Session, bool), ApiError> {
        let mut attempt = 0;
        loop {
            match self.observe_once(obs.clone()).await {
                // Another daemon gave its nickname out first: learn of that
                // session, then pick another.
                Err(e) if e.decided_elsewhere() && attempt < crate::error::DECIDE_AGAIN => {
                    attempt += 1;
                    self.catch_up().await?;
                }
                answer => return answer,
            }
        }
    }

    async fn observe_once(&self, mut obs: Observed) -> Result<(Session, bool), ApiError> {
        obs.validate()?;
        self.fill_git_info(&mut obs);
        let root = self.resolve_root(&obs.id, obs.cwd.as_deref());
        let now = self.clock.wall();
        let (session, arrived, persist, commit) = {
            let mut st = self.lock();
            let known = st.session(&obs.id).cloned();
            // Decided here, under the lock: two tokens registering one new
            // id at once, the second finds the first's.
            crate::scopes::may_act_for(obs.by.as_ref(), &obs.id, known.as_ref())?;
            let is_new = known.is_none();
            let mut s = known.unwrap_or_else(|| {
                let nickname = st.roster.new_nickname(&obs.id);
                let mut s = Session::new(&obs.id, &nickname, now);
                s.owner = obs
                    .by
                    .as_ref()
                    .filter(|g| g.is_bound())
                    .and_then(|g| g.token_id.clone());
                s
            });
            let arrived = is_new || s.left_at.is_some();
            if s.left_at.is_some() {
                s.left_at = None;
                s.connected_at = now;
            }
            let mut changed = arrived;
            changed |= set(&mut s.harness, obs.harness.filter(|h| !h.is_empty()));
            changed |= set(&mut s.host, obs.host.filter(|h| !h.is_empty()));
            changed |= set(&mut s.operator, obs.operator.filter(|o| !o.is_empty()));
            changed |= set(&mut s.pid, obs.pid.map(Some));
            changed |= set(&mut s.cwd, obs.cwd.filter(|c| !c.is_empty()));
            changed |= set(&mut s.project, obs.project);
            changed |= set(&mut s.branch, obs.branch);
            changed |= set(&mut s.status, obs.status);
            let mut active = set(&mut s.activity, obs.activity);
            active |= set(&mut s.last_tool, obs.tool.map(Some));
            s.last_seen_at = s.last_seen_at.max(now);
            let persist = if changed {
                Persist::Now
            } else if active {
                Persist::Later
            } else {
                Persist::Touch
            };
            let commit = match persist {
                Persist::Now => Some(self.commit(&mut st, vec![Change::PutSession(s.clone())])),
                Persist::Later => {
                    self.commit_later(&mut st, vec![Change::PutSession(s.clone())]);
                    None
                }
                Persist::Touch => {
                    let due = st
                        .entry(&s.id)
                        .is_some_and(|e| s.last_seen_at - e.persisted_seen >= TOUCH_PERSIST_MS);
                    if due {
                        let touch = Change::TouchSession {
                            id: s.id.clone(),
                            last_seen_at: s.last_seen_at,
                        };
                        self.commit_later(&mut st, vec![touch]);
                    } else {
                        st.roster.heard(&s.id, now);
                    }
                    None
                }
            };
            if let Some(entry) = st.entry_mut(&s.id) {
                // Heard now: the sweeper counts its silence from here.
                entry.heard_mono = self.clock.mono();
                if let Some(root) = root {
                    entry.root = Some(root);
                }
            }
            let session = st.session(&s.id).cloned().unwrap_or(s);
            (session, arrived, persist, commit)
        };
        if let Some(commit) = commit {
            // Refused, memory took it back: it shows what the store has.
            commit.await?;
        }
        match persist {
            Persist::Now if arrived => {
                self.metrics.sessions_joined.inc();
                self.events.publish("session.joined", || json!(session));
            }
            Persist::Now | Persist::Later => {
                self.events.publish("session.updated", || json!(session))
            }
            Persist::Touch => {}
        }
        Ok((session, arrived))
    }

    /// Fills project and branch from the working directory when the caller
    /// did not give them and the directory is new to us.
    fn fill_git_info(&self, obs: &mut Observed) {
        let Some(cwd) = obs.cwd.as_deref().filter(|c| !c.is_empty()) else {
            return;
        };
        if obs.project.is_some() {
            return;
        }
        let known_cwd = self.lock().session(&obs.id).is_some_and(|s| s.cwd == cwd);
        if known_cwd {
            return;
        }
        let (project, branch) = gitinfo::detect(cwd);
        obs.project = Some(project);
        obs.branch = obs.branch.take().or(Some(branch));
    }

    /// The root for a session's reservations when it works in `cwd`, read
    /// from the file system without the lock; none if it is already known
    /// for that directory (or there is no directory).
    fn resolve_root(&self, id: &str, cwd: Option<&str>) -> Option<(String, String)> {
        let cwd = cwd.filter(|c| !c.is_empty())?;
        let known = self
            .lock()
            .entry(id)
            .is_some_and(|e| e.root.as_ref().is_some_and(|(c, _)| c == cwd));
        if known {
            return None;
        }
        let root = gitinfo::repo_root(cwd).unwrap_or_else(|| cwd.to_string());
        Some((cwd.to_string(), root))
    }

    /// A session's reservation root for its current directory, resolving
    /// (outside the lock) and keeping it if it is not known yet.
    pub(crate) fn session_root(&self, session: &Session) -> Option<String> {
        if session.cwd.is_empty() {
            return None;
        }
        let known = self.lock().entry(&session.id).and_then(|e| {
            e.root
                .as_ref()
                .filter(|(cwd, _)| *cwd == session.cwd)
                .map(|(_, root)| root.clone())
        });
        if known.is_some() {
            return known;
        }
        let (cwd, root) = self.resolve_root(&session.id, Some(&session.cwd))?;
        if let Some(entry) = self.lock().entry_mut(&session.id) {
            entry.root = Some((cwd, root.clone()));
        }
        Some(root)
    }

    pub async fn register(&self, req: RegisterRequest) -> Result<Session, ApiError> {
        Ok(self.observe(req.into()).await?.0)
    }

    pub async fn update_session(
        &self,
        id: &str,
        req: UpdateSessionRequest,
    ) -> Result<Session, ApiError> {
        check_field("status", &req.status, MAX_STATUS_CHARS)?;
        if let Some(allowed) = req.wake {
            if self.lock().entry(id).is_none() {
                return Err(CoreError::UnknownSession(id.to_string()).into());
            }
            self.set_wake_allowed(id, allowed);
        }
        let (session, commit) = {
            let mut st = self.lock();
            let mut session = st
                .session(id)
                .cloned()
                .ok_or_else(|| CoreError::UnknownSession(id.to_string()))?;
            set(&mut session.status, req.status);
            let commit = self.commit(&mut st, vec![Change::PutSession(session.clone())]);
            (st.session(id).cloned().unwrap_or(session), commit)
        };
        commit.await?;
        self.events.publish("session.updated", || json!(session));
        Ok(session)
    }

    /// Takes a session off the roster now (`session-end`, `DELETE`, or the
    /// sweeper). Its mail and memberships stay for its return.
    pub async fn remove_session(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Option<Session>, ApiError> {
        let now = self.clock.wall();
        let (session, commit) = {
            let mut st = self.lock();
            let Some(session) = st.roster.leaving(id, now) else {
                return Ok(None);
            };
            // Its claims end with it; its mail and memberships wait for its return.
            let mut changes = vec![Change::PutSession(session.clone())];
            changes.extend(Hub::reservations_end(&st, id));
            let commit = self.commit(&mut st, changes);
            (st.session(id).cloned().unwrap_or(session), commit)
        };
        // Refused, memory took it back: the session stays, with its claims.
        commit.await?;
        self.metrics.sessions_left.inc();
        self.events.publish(
            "session.left",
            || json!({"session": session, "reason": reason}),
        );
        Ok(Some(session))
    }

    fn principal(&self, st: &State, as_: Option<&str>) -> Result<Principal, ApiError> {
        Ok(st.principal(as_, &self.config.operator)?)
    }

    pub async fn send(self: &Arc<Self>, req: SendRequest) -> Result<SendResponse, ApiError> {
        validate::body(&req.body)?;
        if let Some(r) = req.reply_to.as_deref() {
            self.check_reply_to(r).await?;
        }
        let (message, recipients) = {
            let mut st = self.lock();
            let sender = self.principal(&st, req.as_.as_deref())?;
            self.take_send(&sender.key())?;
            let target = st.resolve(&req.to, &self.config.operator)?;
            let recipients = match &target {
                Target::Session(id) => vec![id.clone()],
                // A person reads it in their inbox; their live sessions get
                // it too, framed for the agent to relay, not to act on.
                Target::Operator(name) => {
                    let mut r = vec![muster_core::operator_principal(name)];
                    r.extend(
                        st.present()
                            .filter(|s| s.operator == *name && s.id != sender.key())
                            .map(|s| s.id.clone()),
                    );
                    r
                }
                Target::Room(_) => {
                    return Err(CoreError::invalid("to", "use broadcast for rooms").into())
                }
            };
            let message =
                self.new_message(&mut st, &sender, target, req.reply_to, req.body, req.via);
            (message, recipients)
        };
        self.deliver(message, recipients).await
    }

    pub async fn broadcast(
        self: &Arc<Self>,
        req: BroadcastRequest,
    ) -> Result<SendResponse, ApiError> {
        validate::body(&req.body)?;
        let room = req.room.trim().trim_start_matches('#').to_string();
        validate::name("room", &room)?;
        let (message, recipients) = {
            let mut st = self.lock();
            let sender = self.principal(&st, req.as_.as_deref())?;
            self.take_send(&sender.key())?;
            let recipients = st.room_recipients(&room, &sender.key())?;
            let message = self.new_message(
                &mut st,
                &sender,
                Target::Room(room),
                None,
                req.body,
                req.via,
            );
            (message, recipients)
        };
        self.deliver(message, recipients).await
    }

    async fn check_reply_to(&self, id: &str) -> Result<(), ApiError> {
        if id.len() > 64 || self.store.message(id).await?.is_none() {
            return Err(
                CoreError::invalid("reply_to", format!("no message with id {id:?}")).into(),
            );
        }
        Ok(())
    }

    fn new_message(
        &self,
        st: &mut State,
        sender: &Principal,
        to: Target,
        reply_to: Option<String>,
        body: String,
        via: muster_core::SentVia,
    ) -> Message {
        Message {
            id: st.next_message_id(),
            from: sender.key(),
            from_nickname: st.display_name(sender),
            to,
            reply_to,
            body,
            sent_at: self.clock.wall(),
            via,
        }
    }

    /// Stores a message with a queued delivery per recipient, then makes it
    /// visible to hooks and readers, pushes it where it goes live, and
    /// tells the sender what became of it. Answered only once durable.
    async fn deliver(
        self: &Arc<Self>,
        message: Message,
        recipients: Vec<String>,
    ) -> Result<SendResponse, ApiError> {
        self.store_message(&message, &recipients).await?;
        let message = Arc::new(message);
        let mut views = self.delivery_views(&recipients);
        // Direct mail to a session goes out live where its link can show it;
        // room mail stays ambient, except for the sessions it @mentions.
        let live = self.live_recipients(&message, &recipients);
        self.push_live(&message, &live, &mut views).await;
        self.metrics.messages_sent.inc();
        self.metrics.deliveries_queued.add(views.len() as u64);
        let state = outcome(&views);
        self.events.publish(
            "message.sent",
            || json!({"message": &*message, "deliveries": &views}),
        );
        Ok(SendResponse {
            message: (*message).clone(),
            state,
            deliveries: views,
        })
    }

    /// Applies and commits a new message with a queued delivery per
    /// recipient; it is offered to readers only once the commit resolved.
    async fn store_message(
        &self,
        message: &Message,
        recipients: &[String],
    ) -> Result<(), ApiError> {
        let deliveries: Vec<Delivery> = recipients
            .iter()
            .map(|r| Delivery {
                message_id: message.id.clone(),
                recipient: r.clone(),
                state: DeliveryState::Queued,
                updated_at: message.sent_at,
            })
            .collect();
        let put = Change::PutMessage {
            message: message.clone(),
            deliveries,
        };
        let commit = self.commit(&mut self.lock(), vec![put]);
        let stored = commit.await;
        self.lock()
            .settle_message(&message.id, recipients, stored.is_ok());
        Ok(stored?)
    }

    /// Each recipient as the sender sees it, queued to begin with.
    fn delivery_views(&self, recipients: &[String]) -> Vec<DeliveryView> {
        let st = self.lock();
        recipients
            .iter()
            .map(|r| {
                let (nickname, present) = match st.entry(r) {
                    Some(e) => (e.session().nickname.clone(), e.session().present()),
                    None => (r.trim_start_matches("op:").to_string(), true),
                };
                DeliveryView {
                    recipient: r.clone(),
                    nickname,
                    state: DeliveryState::Queued,
                    present,
                    woken: false,
                }
            })
            .collect()
    }

    /// Pushes the message to each of `live` and records in `views` what
    /// came of it; a recipient it could not be pushed to may be woken.
    async fn push_live(
        self: &Arc<Self>,
        message: &Arc<Message>,
        live: &[String],
        views: &mut [DeliveryView],
    ) {
        // Several mentioned sessions confirm in parallel, not one after another.
        let pushes = live.iter().map(|recipient| async move {
            match self.push_and_confirm(recipient, message).await {
                DeliveryState::Queued => self.pushed_elsewhere(recipient, &message.id).await,
                pushed => pushed,
            }
        });
        for (recipient, state) in live
            .iter()
            .zip(futures_util::future::join_all(pushes).await)
        {
            if let Some(v) = views.iter_mut().find(|v| v.recipient == *recipient) {
                v.state = state;
                // Not pushed: an idle recipient with a waker gets a turn
                // started for it; pushed: only if the push is not shown.
                if state == DeliveryState::Pushed {
                    self.wake_if_push_not_shown(recipient);
                } else {
                    v.woken = self.consider_wake(recipient);
                }
            }
        }
    }

    /// A principal's mail: unread (and with `all`, earlier mail too). What
    /// was unread is marked surfaced once the answer has been written.
    pub async fn inbox(
        self: &Arc<Self>,
        as_: Option<&str>,
        all: bool,
        limit: usize,
    ) -> Result<(Inbox, Surfacing), ApiError> {
        let limit = limit.clamp(1, 1_000);
        let (principal, claimed) = {
            let mut st = self.lock();
            let p = self.principal(&st, as_)?.key();
            let claimed = st.mail.claim(&p, Claim::All, None);
            (p, claimed)
        };
        let ids = claimed.iter().map(|(m, _)| m.id.clone()).collect();
        // Dropped on any early return, which releases the claim.
        let mut surfacing = self.surfacing(principal.clone(), ids);
        // By id: the store's view (with `all`) overlaid by what this read claimed.
        let mut by_id: std::collections::BTreeMap<String, InboxMessage> = Default::default();
        if all {
            // One more than shown, to tell whether older history exists.
            let query = InboxQuery {
                recipient: principal.clone(),
                include_read: true,
                limit: limit + 1,
            };
            for e in self.store.inbox(query).await.map_err(ApiError::unread)? {
                by_id.insert(
                    e.message.id.clone(),
                    InboxMessage {
                        message: e.message,
                        state: e.state,
                    },
                );
            }
        }
        for (m, state) in claimed {
            by_id.insert(
                m.id.clone(),
                InboxMessage {
                    message: (*m).clone(),
                    state,
                },
            );
        }
        // Unread mail is shown oldest first (the rest comes next time);
        // history shows the newest.
        let skip = if all {
            by_id.len().saturating_sub(limit)
        } else {
            0
        };
        let matched = by_id.len();
        let truncated = matched > limit;
        // Unread mail is all in memory, so its count is exact; history is
        // known only up to the limit and one more.
        let total = (!all || !truncated).then_some(matched);
        let messages: Vec<InboxMessage> = by_id.into_values().skip(skip).take(limit).collect();
        // Only what is shown may be marked surfaced; the rest stays unread.
        let shown: std::collections::HashSet<&str> =
            messages.iter().map(|m| m.message.id.as_str()).collect();
        surfacing.keep_only(&shown);
        Ok((
            Inbox {
                principal,
                messages,
                truncated,
                total,
            },
            surfacing,
        ))
    }

    /// Mail for a hook answer at `moment`: what nothing has delivered yet
    /// (at a turn's start everything queued; mid-turn and at the stop only
    /// urgent mail), plus pushes the harness evidently dropped: pushed long
    /// enough ago that a shown push would be in the transcript by now, and
    /// not reported seen by a hook that read the transcript.
    pub fn claim_for_hook(
        self: &Arc<Self>,
        session_id: &str,
        moment: Moment,
        previous_boundary: Millis,
        transcript_read: bool,
    ) -> (Vec<Arc<Message>>, Surfacing) {
        let claimed = {
            let mut st = self.lock();
            let mono = self.clock.mono();
            let (claim, pushed_before) = match moment {
                // An idle Claude Code starts a turn for a shown push within
                // about 120 ms; older pushes not in the transcript were dropped.
                Moment::TurnStart => (Claim::Queued, mono - PUSH_SHOWN_WITHIN_MS),
                // Mid-turn a shown push enters the next model request (the
                // one after the next tool result), so only pushes from
                // before the previous request boundary must be in the
                // transcript by now.
                Moment::MidTurn | Moment::Stop => (Claim::Urgent, previous_boundary),
            };
            // Without the transcript nothing says a push was dropped.
            st.mail
                .claim(session_id, claim, transcript_read.then_some(pushed_before))
        };
        let messages: Vec<Arc<Message>> = claimed.into_iter().map(|(m, _)| m).collect();
        let ids = messages.iter().map(|m| m.id.clone()).collect();
        (messages, self.surfacing(session_id.to_string(), ids))
    }

    /// Records a hook call of `id` (`event`); returns when its previous
    /// *request boundary* was (monotonic, 0 if none): the last hook after
    /// which the harness sent the model a request (session start, a user
    /// prompt, a tool result). A user prompt restarts the count of held
    /// stops; the prompt-submit of a held stop's continuation does not.
    pub(crate) fn note_hook(&self, id: &str, event: HookEvent) -> Millis {
        let now = self.clock.mono();
        let mut st = self.lock();
        let Some(entry) = st.entry_mut(id) else {
            return 0;
        };
        match event {
            HookEvent::PromptSubmit => {
                // A turn started: whatever woke it was answered.
                entry.wake.unanswered = 0;
                if entry.continuation_due {
                    entry.continuation_due = false;
                } else {
                    entry.holds_in_row = 0;
                }
            }
            HookEvent::Stop => entry.continuation_due = false,
            HookEvent::SessionStart
            | HookEvent::PreToolUse
            | HookEvent::PostToolUse
            | HookEvent::SessionEnd => {}
        }
        let previous = entry.last_boundary;
        if event.starts_a_request() {
            entry.last_boundary = now;
        }
        previous
    }

    /// Whether a Stop of `id` may be held once more (and counts it).
    pub(crate) fn hold_stop(&self, id: &str, max_in_row: u8) -> bool {
        let mut st = self.lock();
        let Some(entry) = st.entry_mut(id) else {
            return false;
        };
        if entry.holds_in_row >= max_in_row {
            return false;
        }
        entry.holds_in_row += 1;
        entry.continuation_due = true;
        true
    }

    /// The session's turn ended: it is idle, and urgent mail that did not
    /// hold the turn may wake it (after the cooldown if one runs).
    pub(crate) fn went_idle(self: &Arc<Self>, id: &str) {
        let session = {
            let mut st = self.lock();
            let Some(entry) = st.entry_mut(id) else {
                return;
            };
            entry.wake.idle_since = self.clock.mono();
            if entry.session().activity == Activity::Idle {
                None
            } else {
                let mut session = entry.session().clone();
                session.activity = Activity::Idle;
                self.commit_later(&mut st, vec![Change::PutSession(session)]);
                st.session(id).cloned()
            }
        };
        if let Some(session) = session {
            self.events.publish("session.updated", || json!(session));
        }
        self.consider_wake(id);
    }

    /// The hook client found these messages in the harness's transcript:
    /// they reached the model. Advances what was surfaced or pushed to
    /// `seen` (ids that are not this session's mail change nothing), and
    /// takes pushed mail out of the hooks' way for good.
    pub(crate) async fn mark_seen(&self, id: &str, ids: &[String]) {
        let ids: Vec<String> = ids.iter().filter(|m| m.len() == 26).cloned().collect();
        if ids.is_empty() {
            return;
        }
        let now = self.clock.wall();
        let changes = ids
            .iter()
            .map(|m| Change::AdvanceDelivery {
                message_id: m.clone(),
                recipient: id.to_string(),
                state: DeliveryState::Seen,
                at: now,
            })
            .collect();
        let commit = self.commit(&mut self.lock(), changes);
        if let Err(e) = commit.await {
            tracing::warn!("could not record seen mail for {id}: {e}");
            return;
        }
        self.metrics.deliveries_seen.add(ids.len() as u64);
        self.events.publish(
            "delivery.updated",
            || json!({"recipient": id, "message_ids": ids, "state": "seen"}),
        );
    }

    /// Called once an answer carrying mail has been written.
    pub(crate) async fn mark_surfaced(&self, recipient: &str, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let now = self.clock.wall();
        let changes: Vec<Change> = ids
            .iter()
            .map(|id| Change::AdvanceDelivery {
                message_id: id.clone(),
                recipient: recipient.to_string(),
                state: DeliveryState::Surfaced,
                at: now,
            })
            .collect();
        // Memory takes the mark when the store has answered: until then the
        // mail stays claimed (no other answer offers it).
        let stored = self.store.submit(changes.clone()).await;
        {
            let mut st = self.lock();
            let mono = self.clock.mono();
            for change in &changes {
                st.apply(change, mono);
            }
        }
        // Refused (a backend fault: a mark of a delivery is never refused on
        // its merits), memory keeps the mark all the same: the answer is
        // written, so the model has this mail, and offering it again would
        // hand it over twice. The store is asked again until it takes it.
        if let Err(e) = stored {
            tracing::warn!(
                "could not record surfaced mail for {recipient} yet ({e}); \
                 it is not offered again, and is recorded once the store can write"
            );
            let (store, recipient) = (self.store.clone(), recipient.to_string());
            tokio::spawn(record_until_stored(store, recipient, changes));
        }
        self.metrics.deliveries_surfaced.add(ids.len() as u64);
        self.events.publish(
            "delivery.updated",
            || json!({"recipient": recipient, "message_ids": ids, "state": "surfaced"}),
        );
    }

    pub async fn ack(&self, req: AckRequest) -> Result<AckResponse, ApiError> {
        if req.ids.is_empty() && !req.all {
            return Err(
                CoreError::invalid("ids", "name the message ids to ack, or set all").into(),
            );
        }
        if req.ids.len() > 10_000 {
            return Err(CoreError::invalid("ids", "at most 10,000 ids at once").into());
        }
        let now = self.clock.wall();
        let principal = self.principal(&self.lock(), req.as_.as_deref())?.key();
        let mut changes: Vec<Change> = req
            .ids
            .iter()
            .map(|id| Change::AdvanceDelivery {
                message_id: id.clone(),
                recipient: principal.clone(),
                state: DeliveryState::Acked,
                at: now,
            })
            .collect();
        let mut ids = req.ids.clone();
        if req.all {
            // Everything up to the newest message id that exists now.
            let upto = self.lock().next_message_id();
            changes.push(Change::AckUpTo {
                recipient: principal.clone(),
                upto,
                at: now,
            });
            ids = self
                .store
                .inbox(InboxQuery {
                    recipient: principal.clone(),
                    include_read: true,
                    limit: 100_000,
                })
                .await?
                .into_iter()
                .filter(|e| e.state < DeliveryState::Acked)
                .map(|e| e.message.id)
                .collect();
        }
        let commit = self.commit(&mut self.lock(), changes);
        commit.await?;
        self.events.publish(
            "delivery.updated",
            || json!({"recipient": principal, "message_ids": ids, "state": "acked"}),
        );
        Ok(AckResponse { acked: ids.len() })
    }

    pub async fn join(&self, req: RoomRequest) -> Result<RoomView, ApiError> {
        let room = req.room.trim().trim_start_matches('#').to_string();
        validate::name("room", &room)?;
        if muster_core::is_automatic_room(&room) {
            return Err(CoreError::invalid(
                "room",
                format!(
                    "{room} is automatic: its members follow each session's project and operator"
                ),
            )
            .into());
        }
        let now = self.clock.wall();
        let (changes, view, member) = {
            let mut st = self.lock();
            let Principal::Session(id) = self.principal(&st, req.as_.as_deref())? else {
                return Err(CoreError::invalid("as", "only sessions join rooms").into());
            };
            let changes = st.rooms.joining(&room, &id, now);
            let joined = !changes.is_empty();
            let commit = self.commit(&mut st, changes);
            let view = st
                .named_room(&room)
                .ok_or_else(|| ApiError::internal("room vanished"))?;
            ((joined, commit), view, id)
        };
        let (joined, commit) = changes;
        commit.await?;
        if joined {
            self.events
                .publish("room.joined", || json!({"room": room, "session": member}));
        }
        Ok(view)
    }

    pub async fn leave(&self, req: RoomRequest) -> Result<RoomView, ApiError> {
        let room = req.room.trim().trim_start_matches('#').to_string();
        let view = {
            let mut st = self.lock();
            let Principal::Session(id) = self.principal(&st, req.as_.as_deref())? else {
                return Err(CoreError::invalid("as", "only sessions leave rooms").into());
            };
            if !st.rooms.is_member(&room, &id) {
                return Err(CoreError::invalid("room", format!("not a member of {room:?}")).into());
            }
            let leave = Change::LeaveRoom {
                room: room.clone(),
                session_id: id.clone(),
            };
            let commit = self.commit(&mut st, vec![leave]);
            (st.named_room(&room), id, commit)
        };
        let (view, member, commit) = (view.0, view.1, view.2);
        commit.await?;
        self.events
            .publish("room.left", || json!({"room": room, "session": member}));
        view.ok_or_else(|| ApiError::internal("room vanished"))
    }

    /// A thread, as far as the reader sent or received it.
    pub async fn thread(&self, as_: Option<&str>, message_id: &str) -> Result<Thread, ApiError> {
        if message_id.is_empty() || message_id.len() > 64 {
            return Err(CoreError::invalid("message_id", "not a message id").into());
        }
        let reader = self.principal(&self.lock(), as_)?.key();
        let messages = self.store.thread(message_id, &reader).await;
        let messages = messages.map_err(ApiError::unread)?;
        if messages.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "unknown_message",
                format!("no message {message_id:?} that you sent or received"),
            ));
        }
        let mut deliveries = Vec::new();
        for m in messages.iter().filter(|m| m.from == reader) {
            for d in self.store.deliveries(&m.id).await? {
                let st = self.lock();
                let nickname = st.display_name(&Principal::Session(d.recipient.clone()));
                let nickname = nickname.trim_start_matches("op:").to_string();
                // A push is confirmed to its sender before its mark is
                // stored (see `Hub::on_delivered`): memory is ahead then.
                let pushed_in_memory = d.state == DeliveryState::Queued
                    && st.mail.is_pushed(&d.recipient, &d.message_id);
                drop(st);
                deliveries.push(ThreadDelivery {
                    state: if pushed_in_memory {
                        DeliveryState::Pushed
                    } else {
                        d.state
                    },
                    message_id: d.message_id,
                    recipient: d.recipient,
                    nickname,
                    updated_at: d.updated_at,
                });
            }
        }
        Ok(Thread {
            messages,
            deliveries,
        })
    }

    pub fn roster(&self, all: bool) -> Vec<Session> {
        self.lock().roster.sorted(all)
    }

    pub fn rooms(&self) -> Vec<RoomView> {
        self.lock().room_views()
    }

    /// The session's identity, up to `shown` live peers, and how many peers
    /// there are in all, for `session-start`.
    pub fn identity(&self, id: &str, shown: usize) -> Option<(Session, Vec<Session>, usize)> {
        let st = self.lock();
        let me = st.session(id)?.clone();
        let mut total = 0;
        let mut peers = Vec::with_capacity(shown);
        for s in st.present().filter(|s| s.id != id) {
            total += 1;
            if peers.len() < shown {
                peers.push(s.clone());
            }
        }
        Some((me, peers, total))
    }

    pub fn status(&self) -> Status {
        let st = self.lock();
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: muster_core::api::API_VERSION,
            started_at: self.started_at,
            store: self.store_desc.clone(),
            data_dir: self.config.data_dir.display().to_string(),
            operator: self.config.operator.clone(),
            sessions_present: st.present().count(),
            sessions_known: st.roster.known_count(),
            unread_deliveries: st.mail.unread_total(),
            stale_after_ms: self.config.stale_after.as_millis() as Millis,
            hook_backstop_ms: self.config.hook_backstop.as_millis() as Millis,
            sweep_interval_ms: self.config.sweep_interval.as_millis() as Millis,
            retention_ms: self.config.retention.as_millis() as Millis,
        }
    }

    /// One pass of the sweeper: decide on a snapshot, then remove.
    pub async fn sweep_once(&self) -> usize {
        // In a team, one daemon decides for all.
        if !self.leads_sweep().await {
            return 0;
        }
        self.expire_reservations();
        let clock = self.clock.now();
        let links_known = self.links_known.load(Ordering::Acquire);
        let doomed = self
            .lock()
            .roster
            .doomed(&self.policy(), clock, links_known);
        self.metrics.sweeps.inc();
        let mut removed = 0;
        for (id, reason) in doomed {
            match self.remove_session(&id, reason.as_str()).await {
                Ok(Some(_)) => {
                    removed += 1;
                    self.metrics.swept(reason);
                    tracing::info!(session = %id, reason = reason.as_str(), "swept");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(session = %id, "sweep could not remove session: {}", e.message)
                }
            }
        }
        removed
    }

    /// Enforces retention: old mail and long-gone sessions are deleted.
    pub async fn prune_once(&self) -> anyhow::Result<muster_store::PruneReport> {
        let cutoff = self.clock.wall() - self.config.retention.as_millis() as Millis;
        let report = self.store.prune(cutoff).await?;
        let mut st = self.lock();
        st.mail.prune(cutoff);
        st.forget_left_before(cutoff);
        Ok(report)
    }
}
