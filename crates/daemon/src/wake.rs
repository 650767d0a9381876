//! Waking idle sessions: a *waker* (`muster run`'s pty, muster's opencode
//! plugin, `muster run codex`'s app-server client) holds the stream
//! `GET /api/v1/wake?run=<id>&how=<pty|opencode|codex>` open; hooks that
//! carry `X-Muster-Run: <id>` bind their session to that run. When urgent
//! mail (direct, or an @mention) reaches a bound session that is idle, the
//! daemon sends the waker a `wake` event and the waker starts a turn, whose
//! prompt-submit hook then surfaces the mail.
//!
//! At most one wake per session per cooldown (`--wake-cooldown`); mail that
//! arrives within it is woken for when it ends, if the session is still
//! idle and the mail still undelivered. A session opts out with
//! `X-Muster-Wake: off` on its hooks (`MUSTER_WAKE=off`) or
//! `PATCH /api/v1/sessions/{id}` `{"wake": false}`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use muster_core::api::WakeEvent;
use muster_core::token::Grant;
use muster_core::wake::{self, Due, HOW, WAKE_PROMPT};
use muster_core::{Activity, Millis};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::hub::{Hub, PUSH_SHOWN_WITHIN_MS};
use crate::scopes::{grant_of, may_hold_run, Credential};
use crate::state::{State as HubState, Waker};

/// Longest run id accepted (`run-` and 16 hex digits is typical).
const MAX_RUN_LEN: usize = 64;
/// Wake events a waker may fall behind by before more are dropped (each
/// one is a whole turn; a backlog is pointless).
const WAKE_QUEUE: usize = 16;

/// A turn that just ended leaves its TUI busy redrawing for a moment; a
/// line typed into it then can land in its input without being submitted
/// (seen with Claude Code), so a wake waits this long after a Stop.
const AFTER_STOP_MS: Millis = 500;

/// Wakes sent again for the same idle spell when one started no turn.
const MAX_UNANSWERED: u8 = 3;

static NEXT_WAKER: AtomicU64 = AtomicU64::new(1);

/// Whether `run` is a usable run id: short, printable, no separators that
/// could be confused in logs or headers.
pub fn valid_run(run: &str) -> bool {
    !run.is_empty()
        && run.len() <= MAX_RUN_LEN
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[derive(Debug, Deserialize)]
pub struct WakeQuery {
    run: String,
    how: String,
}

/// `GET /api/v1/wake`: registers the caller as the run's waker while the
/// stream is open. A newer stream for the same run replaces an older one
/// (a token's, only one it opened itself: see `scopes::may_hold_run`).
pub async fn stream(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    Query(query): Query<WakeQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if !valid_run(&query.run) {
        return Err(ApiError::bad_request(format!(
            "run must be 1 to {MAX_RUN_LEN} letters, digits, '-', '_' or '.'"
        )));
    }
    if !HOW.contains(&query.how.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("how must be one of {}", HOW.join(", ")),
        ));
    }
    let grant = grant_of(&credential);
    let (tx, rx) = mpsc::channel(WAKE_QUEUE);
    let conn = NEXT_WAKER.fetch_add(1, Ordering::Relaxed);
    let waker = Waker {
        conn,
        how: query.how.clone(),
        owner: grant
            .filter(|g| g.is_bound())
            .and_then(|g| g.token_id.clone()),
        tx,
    };
    hub.attach_waker(&query.run, waker, grant)?;
    // Unregisters when the stream is dropped (the waker went away).
    let guard = WakerGuard {
        hub: hub.clone(),
        run: query.run.clone(),
        conn,
    };
    let ready = SseEvent::default().event("ready").data("{}");
    let wakes = ReceiverStream::new(rx).map(move |event: WakeEvent| {
        let _alive = &guard;
        Ok(SseEvent::default()
            .event("wake")
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().event("error")))
    });
    let stopping = hub.shutdown.clone().cancelled_owned();
    let events = stream::once(async move { Ok(ready) })
        .chain(wakes)
        .take_until(stopping);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct WakerGuard {
    hub: Arc<Hub>,
    run: String,
    conn: u64,
}

impl Drop for WakerGuard {
    fn drop(&mut self) {
        self.hub.detach_waker(&self.run, self.conn);
    }
}

/// The roster's `wake` for a session: how it can be woken now, `off`, or none.
fn wake_label(st: &HubState, id: &str) -> Option<String> {
    let entry = st.entry(id)?;
    if entry.wake.off {
        return Some("off".into());
    }
    let run = entry.wake.run.as_deref()?;
    st.wakers.get(run).map(|w| w.how.clone())
}

/// Recomputes the live `wake` field of the sessions bound to `run`.
fn relabel_run(st: &mut HubState, run: &str) -> Vec<String> {
    let ids: Vec<String> = st.roster.sessions_of_run(run);
    for id in &ids {
        let label = wake_label(st, id);
        if let Some(e) = st.entry_mut(id) {
            e.set_wake_label(label);
        }
    }
    ids
}

impl Hub {
    fn attach_waker(&self, run: &str, waker: Waker, grant: Option<&Grant>) -> Result<(), ApiError> {
        let ids = {
            let mut st = self.lock();
            let held_by = st.wakers.get(run).map(|w| w.owner.as_deref());
            let bound = st.roster.sessions_of_run(run);
            let sessions: Vec<&muster_core::Session> =
                bound.iter().filter_map(|id| st.session(id)).collect();
            may_hold_run(grant, run, held_by, &sessions)?;
            st.wakers.insert(run.to_string(), waker);
            relabel_run(&mut st, run)
        };
        tracing::info!(run, sessions = ids.len(), "waker attached");
        self.events
            .publish("waker.attached", || json!({"run": run, "sessions": ids}));
        Ok(())
    }

    fn detach_waker(&self, run: &str, conn: u64) {
        let mut st = self.lock();
        if st.wakers.get(run).is_none_or(|w| w.conn != conn) {
            return;
        }
        st.wakers.remove(run);
        relabel_run(&mut st, run);
        drop(st);
        self.events
            .publish("waker.detached", || json!({"run": run}));
    }

    /// What a hook says about waking its session: the run it belongs to
    /// (`X-Muster-Run`) and whether it opted out (`X-Muster-Wake: off`).
    pub(crate) fn note_wake_headers(&self, id: &str, run: Option<&str>, off: Option<bool>) {
        let mut st = self.lock();
        let Some(entry) = st.entry_mut(id) else {
            return;
        };
        let mut changed = false;
        if let Some(run) = run.filter(|r| valid_run(r)) {
            if entry.wake.run.as_deref() != Some(run) {
                entry.wake.run = Some(run.to_string());
                changed = true;
            }
        }
        if let Some(off) = off {
            changed |= entry.wake.off != off;
            entry.wake.off = off;
        }
        if changed {
            let label = wake_label(&st, id);
            if let Some(e) = st.entry_mut(id) {
                e.set_wake_label(label);
            }
        }
    }

    /// `PATCH /api/v1/sessions/{id}` `{"wake": bool}`.
    pub(crate) fn set_wake_allowed(&self, id: &str, allowed: bool) {
        self.note_wake_headers(id, None, Some(!allowed));
    }

    /// Starts a turn in `id` if it is idle, wakeable, has urgent mail
    /// nothing delivered, and its cooldown allows; inside the cooldown (or
    /// just after a turn ended), a wake is scheduled for its end. Returns
    /// whether the session is being woken: a wake went out now or goes out
    /// within `AFTER_STOP_MS`.
    pub(crate) fn consider_wake(self: &Arc<Self>, id: &str) -> bool {
        let cooldown = self.config.wake_cooldown.as_millis() as Millis;
        let mut st = self.lock();
        let now = self.clock.mono();
        let Some(entry) = st.entry(id) else {
            return false;
        };
        let idle = entry.session().present() && entry.session().activity == Activity::Idle;
        if let Some(at) = entry.wake.pending {
            // Already scheduled: this mail goes with that wake.
            return idle && !entry.wake.off && at - now <= AFTER_STOP_MS;
        }
        if !idle || entry.wake.off {
            return false;
        }
        let Some(run) = entry.wake.run.clone() else {
            return false;
        };
        if !st.wakers.contains_key(&run) {
            return false;
        }
        let urgent = st.mail.urgent_undelivered(id, now - PUSH_SHOWN_WITHIN_MS);
        if urgent.is_empty() {
            return false;
        }
        let (last, idle_since) = st
            .entry(id)
            .map_or((None, 0), |e| (e.wake.last, e.wake.idle_since));
        let settling = AFTER_STOP_MS - (now - idle_since);
        let due = match wake::due(last, now, cooldown) {
            Due::In(wait) => Due::In(wait.max(settling)),
            Due::Now if settling > 0 => Due::In(settling),
            Due::Now => Due::Now,
        };
        match due {
            Due::In(wait) => {
                if let Some(e) = st.entry_mut(id) {
                    e.wake.pending = Some(now + wait);
                }
                drop(st);
                self.schedule_wake(id.to_string(), wait);
                wait <= AFTER_STOP_MS
            }
            Due::Now => {
                if st
                    .entry(id)
                    .is_some_and(|e| e.wake.unanswered >= MAX_UNANSWERED)
                {
                    return false;
                }
                let event = WakeEvent {
                    session: id.to_string(),
                    message_ids: urgent,
                    prompt: WAKE_PROMPT.into(),
                };
                let sent = st
                    .wakers
                    .get(&run)
                    .is_some_and(|w| w.tx.try_send(event).is_ok());
                if sent {
                    if let Some(e) = st.entry_mut(id) {
                        e.wake.last = Some(now);
                        e.wake.unanswered += 1;
                        // Looked at again when the cooldown ends: still idle
                        // with the mail undelivered means the wake started no turn.
                        e.wake.pending = Some(now + cooldown);
                    }
                }
                drop(st);
                if sent {
                    self.schedule_wake(id.to_string(), cooldown);
                    self.metrics.wakes.inc();
                    self.events
                        .publish("session.woken", || json!({"id": id, "run": run}));
                }
                sent
            }
        }
    }

    /// A push just went to `id`. If it is idle and wakeable, a shown push
    /// starts a turn in it at once; if none started by the time a shown one
    /// would have, the harness dropped the push (channels off for the
    /// account), and the session is woken for it instead.
    pub(crate) fn wake_if_push_not_shown(self: &Arc<Self>, id: &str) {
        let wakeable = {
            let st = self.lock();
            st.entry(id).is_some_and(|e| {
                e.session().activity == Activity::Idle
                    && !e.wake.off
                    && e.wake
                        .run
                        .as_ref()
                        .is_some_and(|r| st.wakers.contains_key(r))
            })
        };
        if wakeable {
            let hub = self.clone();
            let id = id.to_string();
            let until = self.clock.mono() + PUSH_SHOWN_WITHIN_MS + 100;
            tokio::spawn(async move {
                tokio::select! {
                    _ = hub.clock.sleep_until(until) => {}
                    _ = hub.shutdown.cancelled() => return,
                }
                hub.consider_wake(&id);
            });
        }
    }

    /// Re-considers a wake once the cooldown has passed.
    fn schedule_wake(self: &Arc<Self>, id: String, wait: Millis) {
        let hub = self.clone();
        let until = self.clock.mono() + wait.max(0);
        tokio::spawn(async move {
            tokio::select! {
                _ = hub.clock.sleep_until(until) => {}
                _ = hub.shutdown.cancelled() => return,
            }
            if let Some(e) = hub.lock().entry_mut(&id) {
                e.wake.pending = None;
            }
            hub.consider_wake(&id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_and_plain() {
        // Proves what a run id may be: the ids `muster run` makes pass; empty, long or odd ones are refused.
        assert!(valid_run("run-0123456789abcdef"));
        assert!(valid_run("opencode-4242.a_b"));
        assert!(!valid_run(""));
        assert!(!valid_run(&"r".repeat(65)));
        assert!(!valid_run("run 1"));
        assert!(!valid_run("run\n1"));
    }
}
