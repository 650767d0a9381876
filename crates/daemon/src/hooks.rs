//! `/hook/{event}`: Claude Code's and Codex's hook JSON taken as is, answered
//! in the harness's JSON form (`hookSpecificOutput` named for the firing event).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use muster_core::inbox;
use muster_core::protocol::{Harness, HookEvent};
use muster_core::token::Grant;
use muster_core::validate::json_len;
use muster_core::{Activity, Millis};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::hook_forms;
use crate::hub::{Hub, Moment, Observed};
use crate::reservations::GuardMode;
use crate::scopes::grant_of;
use crate::scopes::Credential;
use crate::surfacing::{json_response, Surfacing};

/// The fields muster reads from a hook payload; everything else is ignored.
#[derive(Debug, Deserialize)]
pub struct HookPayload {
    pub session_id: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub hook_event_name: Option<String>,
    #[serde(default)]
    pub tool_name: Option<String>,
    /// The tool's arguments (read for the paths an edit writes; never stored).
    #[serde(default)]
    pub tool_input: Option<serde_json::Value>,
    /// Codex sends a turn id; Claude Code does not.
    #[serde(default)]
    pub turn_id: Option<serde_json::Value>,
    /// Message ids `muster hook` found in the harness's transcript since its
    /// last call (or in this payload's prompt): the model has seen them.
    #[serde(default)]
    pub muster_seen: Vec<String>,
    /// Whether `muster hook` could read the transcript: only then does a
    /// push missing from it count as dropped.
    #[serde(default)]
    pub muster_transcript_read: bool,
}

/// Most Stop hooks held in a row (since the last user prompt): each holds
/// for new mail only, and this bounds two agents answering each other
/// inside one never-ending turn.
const MAX_HOLDS_IN_ROW: u8 = 5;

/// Most seen ids taken from one hook call.
const MAX_SEEN_PER_HOOK: usize = 500;

#[derive(Debug, Deserialize)]
pub struct HookQuery {
    pub harness: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// A header saying no: `off`, `0`, `false` or `no`.
fn is_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "off" | "0" | "false" | "no"
    )
}

fn empty_answer() -> Response {
    (StatusCode::OK, [("content-type", "application/json")], "{}").into_response()
}

pub async fn handle(
    State(hub): State<Arc<Hub>>,
    event: Result<Path<String>, PathRejection>,
    query: Result<Query<HookQuery>, QueryRejection>,
    headers: HeaderMap,
    credential: Option<Extension<Credential>>,
    ApiJson(payload): ApiJson<HookPayload>,
) -> Result<Response, ApiError> {
    // axum's own rejections (an event or query that is not UTF-8 once
    // percent-decoded) answer in plain text; every hook failure is JSON.
    let Path(event) = event.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let started = Instant::now();
    let Some(event) = HookEvent::parse(&event) else {
        let known: Vec<&str> = HookEvent::ALL.iter().map(|e| e.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_hook",
            format!(
                "unknown hook event {event:?}; muster takes {}",
                known.join(", ")
            ),
        ));
    };
    let grant = grant_of(&credential);
    let answer = answer(&hub, event, query, &headers, grant, payload).await;
    hub.metrics.hook_latency(event, started.elapsed());
    answer
}

impl Hub {
    /// `/hook/{event}` on its own: [`handle`] behind the same extractors the
    /// router gives it, without the router's middleware (token, budgets).
    /// For the fuzz targets (`crates/fuzzing`), which drive a hook call's
    /// parsing and answering in memory.
    #[doc(hidden)]
    pub fn hook_route(self: &Arc<Self>) -> axum::Router {
        axum::Router::new()
            .route("/hook/{event}", axum::routing::post(handle))
            .with_state(self.clone())
    }
}

/// Which harness's hook this is: named by the query or a header, else
/// told apart by its payload.
fn harness_of(
    query: HookQuery,
    headers: &HeaderMap,
    payload: &HookPayload,
) -> Result<Harness, ApiError> {
    match query
        .harness
        .or_else(|| header(headers, "x-muster-harness"))
    {
        Some(name) => Harness::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = Harness::ALL.iter().map(|h| h.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown harness {name:?}; muster's hooks answer {}",
                known.join(", ")
            ))
        }),
        // Codex sends a turn id; Claude Code does not.
        None if payload.turn_id.is_some() => Ok(Harness::Codex),
        None => Ok(Harness::Claude),
    }
}

/// What a hook call tells the roster about its session.
fn observed(
    id: &str,
    event: HookEvent,
    harness: Harness,
    headers: &HeaderMap,
    payload: &HookPayload,
) -> Observed {
    let (activity, tool) = match event {
        // Idle only once the stop is known not to be held (`stop_answer`).
        HookEvent::Stop => (None, None),
        HookEvent::PreToolUse => (Some(Activity::Busy), payload.tool_name.clone()),
        HookEvent::SessionStart => (Some(Activity::Idle), None),
        HookEvent::PromptSubmit | HookEvent::PostToolUse | HookEvent::SessionEnd => {
            (Some(Activity::Busy), None)
        }
    };
    Observed {
        id: id.to_string(),
        harness: Some(harness.as_str().to_string()),
        host: header(headers, "x-muster-host"),
        operator: header(headers, "x-muster-operator"),
        pid: header(headers, "x-muster-pid").and_then(|p| p.parse().ok()),
        cwd: payload.cwd.clone(),
        activity,
        tool,
        ..Observed::default()
    }
}

async fn answer(
    hub: &Arc<Hub>,
    event: HookEvent,
    query: HookQuery,
    headers: &HeaderMap,
    grant: Option<&Grant>,
    payload: HookPayload,
) -> Result<Response, ApiError> {
    let Some(id) = payload.session_id.clone().filter(|s| !s.is_empty()) else {
        return Err(ApiError::bad_request("the hook payload has no session_id"));
    };
    hub.authorize_session(grant, &id)?;
    if id.len() <= muster_core::limits::MAX_SESSION_ID_LEN {
        // A longer id is refused as invalid below, and is kept by no bucket.
        hub.take_hook(&id)?;
    }
    if event == HookEvent::SessionEnd {
        muster_core::validate::session_id(&id)?;
        // Should the store refuse it, the session stays (the sweeper takes
        // it later); the harness is answered either way.
        store_may_fail(hub.remove_session(&id, "session-end").await.map(drop))?;
        return Ok(empty_answer());
    }
    let harness = harness_of(query, headers, &payload)?;
    let named_input = hook_forms::gemini_tool_input(
        harness,
        event,
        &id,
        payload.tool_name.as_deref(),
        payload.tool_input.as_ref(),
    );
    // A session the store cannot record is answered from memory as it
    // stands (a new one as nobody: no identity, no mail).
    store_may_fail(
        hub.observe(Observed {
            by: grant.cloned(),
            ..observed(&id, event, harness, headers, &payload)
        })
        .await
        .map(drop),
    )?;
    let previous_boundary = note(hub, &id, event, headers, &payload).await;
    let transcript_read = payload.muster_transcript_read;
    let event_name = payload
        .hook_event_name
        .clone()
        .filter(|n| !n.is_empty() && n.len() < 64)
        .unwrap_or_else(|| event.harness_name().to_string());
    let mut context = String::new();
    if event == HookEvent::PreToolUse {
        match guard(hub, &id, harness, &event_name, &payload) {
            Err(refusal) => return Ok(*refusal),
            Ok(warning) => context.extend(warning),
        }
    }
    // Collision notices ride on any answer that can carry context.
    if event != HookEvent::Stop {
        add_notices(hub, &id, &mut context);
    }
    let moment = match event {
        HookEvent::SessionStart | HookEvent::PromptSubmit => Moment::TurnStart,
        HookEvent::PostToolUse => Moment::MidTurn,
        HookEvent::Stop => Moment::Stop,
        HookEvent::PreToolUse | HookEvent::SessionEnd => {
            if let Some(input) = named_input {
                return Ok(hook_forms::tool_input_answer(&event_name, input, &context));
            }
            return Ok(context_answer(
                &event_name,
                &context,
                hub.surfacing(id, Vec::new()),
            ));
        }
    };
    if event == HookEvent::SessionStart {
        context = with_identity(hub, &id, context);
    }
    let turn = Turn {
        id,
        moment,
        previous_boundary,
        transcript_read,
    };
    Ok(mail_answer(
        hub,
        turn,
        harness,
        headers,
        &event_name,
        context,
    ))
}

/// A hook's store write that failed underneath is no reason to leave the
/// harness without an answer: only bad input is refused.
fn store_may_fail(result: Result<(), ApiError>) -> Result<(), ApiError> {
    match result {
        Err(e) if e.code == "store_unavailable" => {
            tracing::warn!(
                "a hook answers without what the store refused: {}",
                e.message
            );
            Ok(())
        }
        other => other,
    }
}

/// Records what a hook call says beyond the roster: the run it came from
/// and whether it may be woken, where its turn is, and the mail its
/// transcript shows the model saw. Returns its previous request boundary.
async fn note(
    hub: &Hub,
    id: &str,
    event: HookEvent,
    headers: &HeaderMap,
    payload: &HookPayload,
) -> Millis {
    let wake_off = header(headers, "x-muster-wake").map(|v| is_off(&v));
    hub.note_wake_headers(id, header(headers, "x-muster-run").as_deref(), wake_off);
    let previous_boundary = hub.note_hook(id, event);
    let seen: Vec<String> = payload
        .muster_seen
        .iter()
        .take(MAX_SEEN_PER_HOOK)
        .cloned()
        .collect();
    hub.mark_seen(id, &seen).await;
    previous_boundary
}

/// Appends the session's collision notices (taken once) to `context`.
fn add_notices(hub: &Hub, id: &str, context: &mut String) {
    for notice in hub.take_notices(id) {
        if !context.is_empty() {
            context.push('\n');
        }
        context.push_str(&format!("<muster-notice>{notice}</muster-notice>"));
    }
}

/// A hook at a moment that can carry mail, and what says which.
struct Turn {
    id: String,
    moment: Moment,
    previous_boundary: Millis,
    transcript_read: bool,
}

/// The answer with the mail this moment may hand the model, after `context`.
fn mail_answer(
    hub: &Arc<Hub>,
    turn: Turn,
    harness: Harness,
    headers: &HeaderMap,
    event_name: &str,
    mut context: String,
) -> Response {
    let Turn { id, moment, .. } = turn;
    // While the store cannot write, no mail is handed out: its surfacing
    // would live in memory only (see `Hub::mark_surfaced`), and a daemon
    // that stopped before the store took it would offer it again. It waits
    // unread until writes succeed: a request's, not only the store's own
    // one-page probe, which can fit where a request does not.
    let store = hub.metrics.store();
    let (messages, mut surfacing) = if store.is_degraded() || store.requests_failing() {
        (Vec::new(), hub.surfacing(id.clone(), Vec::new()))
    } else {
        hub.claim_for_hook(&id, moment, turn.previous_boundary, turn.transcript_read)
    };
    let mail = (!messages.is_empty()).then(|| {
        let refs: Vec<&muster_core::Message> = messages.iter().map(|m| &**m).collect();
        let hint = format!("or read it now with `muster inbox --as {id}`");
        let mail = inbox::render_mail(&refs, json_len(&context), &hint);
        surfacing.keep_first(mail.included);
        mail
    });
    if moment == Moment::Stop {
        // A harness about to exit whatever the answer (`opencode run`) says
        // `X-Muster-Hold: off`: holding would mark mail delivered that no
        // model request will carry.
        let holdable = header(headers, "x-muster-hold").is_none_or(|v| !is_off(&v));
        let mail = mail.filter(|_| holdable).map(|m| m.text);
        return stop_answer(hub, &id, harness, mail, surfacing);
    }
    if let Some(mail) = mail {
        if moment == Moment::MidTurn {
            hub.metrics.deliveries_mid_turn.add(mail.included as u64);
        }
        if !context.is_empty() {
            context.push('\n');
        }
        context.push_str(&mail.text);
    }
    context_answer(event_name, &context, surfacing)
}

/// The session's identity note (who it is, a few of its peers) before `context`.
fn with_identity(hub: &Hub, id: &str, context: String) -> String {
    let Some((me, peers, total)) = hub.identity(id, inbox::IDENTITY_PEERS_SHOWN) else {
        return context;
    };
    let peers: Vec<&muster_core::Session> = peers.iter().collect();
    let identity = inbox::render_identity(&me, &peers, total);
    if context.is_empty() {
        identity
    } else {
        format!("{identity}\n{context}")
    }
}

/// The edit guard on a pre-tool-use: the refusal to answer with (deny, or
/// ask the person), or a warning for the answer's context.
fn guard(
    hub: &Hub,
    id: &str,
    harness: Harness,
    event_name: &str,
    payload: &HookPayload,
) -> Result<Option<String>, Box<Response>> {
    let input = payload.tool_input.clone().unwrap_or_default();
    let Some(verdict) = payload
        .tool_name
        .as_deref()
        .and_then(|tool| hub.check_edit(id, tool, &input))
    else {
        return Ok(None);
    };
    match verdict.mode {
        GuardMode::Deny | GuardMode::Ask => {
            let ask = verdict.mode == GuardMode::Ask;
            let refusal = hook_forms::refusal(harness, event_name, ask, &verdict.reason);
            Err(Box::new(refusal))
        }
        GuardMode::Warn => Ok(Some(verdict.reason)),
        GuardMode::Off => Ok(None),
    }
}

/// The Stop hook's answer. With urgent mail unread (and the hold bound not
/// reached), the turn is kept going with the mail (`hook_forms::hold`). Each message holds once, since holding surfaces it,
/// so the continuation's own Stop (`stop_hook_active`) ends the turn unless
/// newer mail came. Otherwise the session is idle now, and mail that could not hold it
/// may wake it.
fn stop_answer(
    hub: &Arc<Hub>,
    id: &str,
    harness: Harness,
    mail: Option<String>,
    surfacing: Surfacing,
) -> Response {
    if let Some(mail) = mail {
        if hub.hold_stop(id, MAX_HOLDS_IN_ROW) {
            hub.metrics.stops_held.inc();
            let body = hook_forms::hold(harness, &mail);
            return json_response(
                StatusCode::OK,
                serde_json::to_vec(&body).unwrap_or_default(),
                surfacing,
            );
        }
    }
    // Released before going idle, so a wake sees the mail as undelivered.
    drop(surfacing);
    hub.went_idle(id);
    empty_answer()
}

fn context_answer(event_name: &str, context: &str, surfacing: Surfacing) -> Response {
    if context.is_empty() {
        return empty_answer();
    }
    let body = json!({
        "hookSpecificOutput": {"hookEventName": event_name, "additionalContext": context}
    });
    // Serializing a Value cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    json_response(StatusCode::OK, bytes, surfacing)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower_service::Service;

    use super::*;

    #[tokio::test]
    async fn an_event_or_query_that_is_not_utf8_is_refused_in_json() {
        // Proves the hook_payload fuzz target's input `pre%%…%e0coe` (and a
        // query like it): axum's plain-text rejection was the answer.
        let dir = tempfile::tempdir().unwrap();
        let store = muster_store_sqlite::SqliteStore::open(dir.path().join("m.db")).unwrap();
        let config = crate::Config::new("127.0.0.1:0", dir.path());
        let hub = Hub::load(config, Arc::new(store), "sqlite".into())
            .await
            .unwrap();
        for uri in ["/hook/pre%25%e0coe", "/hook/stop?harness=%ff"] {
            let request = Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(r#"{"session_id":"s-1"}"#))
                .unwrap();
            let response = hub.hook_route().call(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["error"]["code"], "invalid_input", "{uri}: {answer}");
        }
    }
}
