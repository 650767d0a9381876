//! The router: `/healthz`, `/metrics`, `/hook/{event}`, `/api/v1/…`, and the
//! guards every request passes (who is calling: token, local key or a
//! signed-in dashboard; Host against DNS rebinding; and nothing a web page
//! can send: foreign or `null` Origin, non-JSON bodies).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use muster_core::api::{
    AckRequest, AckResponse, BroadcastRequest, CheckRequest, Inbox, RegisterRequest,
    ReleaseRequest, ReleaseResponse, Reservations, ReserveRequest, RoomRequest, RoomView, Rooms,
    Roster, RosterCursor, SendRequest, SendResponse, Thread, UpdateSessionRequest,
};
use muster_core::token::{Grant, Scope};
use muster_core::{SentVia, Session};
use serde::Deserialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::access::{self, Access};
use crate::error::{ApiError, RetryAfter};
use crate::extract::{ApiJson, ApiQuery};
use crate::hooks;
use crate::hub::{Hub, Observed};
use crate::metrics::Gauges;
use crate::scopes::{grant_of, Credential};
use crate::surfacing::json_response;
use crate::token_admin as tokens;

pub fn router(hub: Arc<Hub>, access: Arc<Access>) -> Router {
    let limit = hub.config.max_request_bytes;
    let api = Router::new()
        .route("/roster", get(roster))
        .route("/status", get(status))
        .route("/sessions", post(register))
        .route(
            "/sessions/{id}",
            get(crate::session_view::session)
                .patch(update_session)
                .delete(remove_session),
        )
        .route("/messages", post(send))
        .route("/broadcast", post(broadcast))
        .route("/inbox", get(inbox))
        .route("/inbox/ack", post(ack))
        .route("/rooms", get(rooms))
        .route("/rooms/join", post(join))
        .route("/rooms/leave", post(leave))
        .route("/events", get(events))
        .route("/wake", get(crate::wake::stream))
        .route("/messages/{id}/thread", get(thread))
        .route("/messages", get(crate::history::history))
        .route("/search", get(crate::history::search))
        .route("/reservations", get(reservations).post(reserve))
        .route("/reservations/release", post(release))
        .route("/reservations/check", post(check))
        .route("/dashboard/link", post(access::sign_in_link))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/revoke", post(tokens::revoke));
    Router::new()
        .route("/", get(dashboard))
        .route(
            "/login",
            get(access::sign_in).post(access::sign_in_with_token),
        )
        .route("/healthz", get(crate::ops::health::healthz))
        .route("/metrics", get(metrics))
        .route("/hook/{event}", post(hooks::handle))
        .route("/ws", get(crate::link::upgrade))
        .nest_service("/mcp", crate::mcp_http::service(hub.clone()))
        .nest("/api/v1", api)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see `muster --help`",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(hub.clone(), guard))
        .layer(Extension(access))
        .with_state(hub)
}

/// Refuses callers [`Access`] does not let in (no token, no local key, no
/// signed-in dashboard), requests whose Host is not this machine's
/// loopback (DNS rebinding), and anything a web page could send
/// ([`browser_refusal`]).
async fn guard(
    State(hub): State<Arc<Hub>>,
    Extension(access): Extension<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let token = hub.config.token.as_deref().filter(|t| !t.is_empty());
    match access.check(token, &hub.tokens, &request) {
        Ok(credential) => {
            // The grant on its own too, for what reads it without knowing
            // this crate's types (the `/mcp` service's tool calls).
            if let Some(grant) = credential.grant() {
                request.extensions_mut().insert(grant.clone());
            }
            request.extensions_mut().insert(credential);
        }
        Err(refused) => return refused.into_response(),
    }
    if token.is_none() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !host.is_empty() && !is_loopback_authority(host) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!("Host {host:?} is not loopback"),
            )
            .into_response();
        }
    }
    if let Some(refused) = browser_refusal(&request) {
        return refused.into_response();
    }
    let response = match take_connection_budget(&hub, &request) {
        Err(refused) => refused.into_response(),
        Ok(()) => next.run(request).await,
    };
    if let Some(RetryAfter(ms)) = response.extensions().get::<RetryAfter>() {
        // Held, so a loop that retries at once is slowed to a few tries a
        // second per connection instead of costing the daemon thousands.
        let hold = (*ms).min(muster_core::limits::RATE_LIMITED_HOLD_MS);
        tokio::time::sleep(std::time::Duration::from_millis(hold)).await;
    }
    response
}

/// One connection's budget of sends and hook calls, whatever sessions they
/// name (a flood of made-up session ids is bounded here). Each accepted
/// connection puts its own in its requests' extensions.
#[derive(Clone)]
pub(crate) struct ConnectionBudget(pub Arc<std::sync::Mutex<muster_core::limits::TokenBucket>>);

/// Sends and hook calls spend the connection's budget; over it, 429.
fn take_connection_budget(hub: &Hub, request: &Request) -> Result<(), ApiError> {
    let path = request.uri().path();
    let spends = *request.method() == Method::POST
        && (path.starts_with("/hook/")
            || path == "/api/v1/messages"
            || path == "/api/v1/broadcast");
    let Some(budget) = request.extensions().get::<ConnectionBudget>() else {
        return Ok(());
    };
    if !spends {
        return Ok(());
    }
    let rate = hub.config.connection_rate;
    let taken = budget
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take(rate, hub.clock.mono());
    taken.map_err(|retry| {
        hub.metrics.rate_limited_connections.inc();
        ApiError::rate_limited(
            format!(
                "this connection is sending too fast (limit {} sends and hook calls/s, bursts of {})",
                rate.per_sec, rate.burst
            ),
            retry,
        )
    })
}

/// Why a request is refused as one a web page sent, if it is: an `Origin`
/// other than the daemon's own (`null` included: a sandboxed iframe's), a
/// `Sec-Fetch-Site` other than `same-origin` or `none` (a page's `no-cors`
/// GET, image or script carries no Origin but says where it comes from), or
/// a body that is not `Content-Type: application/json` (a form post or a
/// beacon: a page can send those cross-origin without a preflight, never
/// JSON). Only the dashboard page itself (static, revealing nothing) may be
/// linked to from anywhere. muster's own clients send no Origin and JSON.
fn browser_refusal(request: &Request) -> Option<ApiError> {
    let headers = request.headers();
    let dashboard =
        request.uri().path() == "/" && matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        if !host.is_some_and(|host| is_own_origin(&origin, host)) {
            let own = host.map_or_else(String::new, |h| format!(" (http://{h})"));
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "Origin {origin:?} is not this daemon's own origin{own}; muster takes no requests from other web pages"
                ),
            ));
        }
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = String::from_utf8_lossy(site.as_bytes());
        if !dashboard && site != "same-origin" && site != "none" {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "a request from another web page (Sec-Fetch-Site: {site}); muster takes no requests from other web pages"
                ),
            ));
        }
    }
    if carries_body(request) {
        if let Err(e) = crate::extract::require_json(headers) {
            return Some(e);
        }
    }
    None
}

const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// POST, PUT and PATCH always take a body; anything else does if it says so.
fn carries_body(request: &Request) -> bool {
    if matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) {
        return true;
    }
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `origin` (`http://127.0.0.1:7420`) names the authority the request was
/// sent to (`host`), so the page sending it is one this daemon served.
fn is_own_origin(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host))
}

/// `127.0.0.1:7420`, `localhost`, `[::1]:7420` and the like.
fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Deserialize)]
struct RosterQuery {
    #[serde(default)]
    all: bool,
    /// At most this many sessions (a page); none: all of them.
    #[serde(default)]
    limit: Option<usize>,
    /// The page starts after this place (a page's `next`).
    #[serde(default)]
    after: Option<String>,
}

/// The roster, whole (as before paging) or a page of it: at 10,000
/// sessions the whole roster is over 3 MB, which a dashboard redrawing on
/// every event cannot ask for each time.
async fn roster(
    State(hub): State<Arc<Hub>>,
    ApiQuery(q): ApiQuery<RosterQuery>,
) -> Result<Json<Roster>, ApiError> {
    if q.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(text) => Some(RosterCursor::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "after {text:?} is not a roster place: pass a page's `next` as it came"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(usize::MAX);
    let (sessions, total, more) = hub.lock().roster.page(q.all, after.as_ref(), limit);
    let next = more
        .then(|| sessions.last().map(|s| RosterCursor::after(s).to_string()))
        .flatten();
    Ok(Json(Roster {
        partial: sessions.len() < total,
        sessions,
        total,
        next,
    }))
}

async fn status(State(hub): State<Arc<Hub>>) -> Json<muster_core::api::Status> {
    Json(hub.status())
}

async fn register(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<Json<Session>, ApiError> {
    let observed = Observed {
        by: grant_of(&credential).cloned(),
        ..req.into()
    };
    Ok(Json(hub.observe(observed).await?.0))
}

async fn update_session(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateSessionRequest>,
) -> Result<Json<Session>, ApiError> {
    hub.authorize_session(grant_of(&credential), &id)?;
    hub.update_session(&id, req).await.map(Json)
}

async fn remove_session(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    hub.authorize_session(grant_of(&credential), &id)?;
    match hub.remove_session(&id, "removed").await? {
        Some(s) => Ok(Json(s)),
        None => match hub.roster(true).into_iter().find(|s| s.id == id) {
            Some(s) => Ok(Json(s)),
            None => Err(muster_core::CoreError::UnknownSession(id).into()),
        },
    }
}

/// How a sender over the API was authenticated: a person as themselves
/// (no session named), or for a session by a token, by its own shell
/// (the CLI took the session from the harness's environment), or by a
/// person with `--as`. An agent token is its sessions' own: from the
/// session's shell it is the session speaking.
fn sent_via(as_: Option<&str>, as_from_env: bool, grant: Option<&Grant>) -> SentVia {
    let for_session = as_
        .map(str::trim)
        .is_some_and(|a| !a.is_empty() && !a.starts_with("op:"));
    match (for_session, grant) {
        (false, _) => SentVia::Person,
        (true, Some(g)) if as_from_env && g.scope == Scope::Agent => SentVia::SessionShell,
        (true, Some(_)) => SentVia::Token,
        (true, None) if as_from_env => SentVia::SessionShell,
        (true, None) => SentVia::OnBehalf,
    }
}

async fn send(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(mut req): ApiJson<SendRequest>,
) -> Result<Json<SendResponse>, ApiError> {
    let grant = grant_of(&credential);
    hub.authorize(grant, req.as_.as_deref())?;
    req.via = sent_via(req.as_.as_deref(), req.as_from_env, grant);
    hub.send(req).await.map(Json)
}

async fn broadcast(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(mut req): ApiJson<BroadcastRequest>,
) -> Result<Json<SendResponse>, ApiError> {
    let grant = grant_of(&credential);
    hub.authorize(grant, req.as_.as_deref())?;
    req.via = sent_via(req.as_.as_deref(), req.as_from_env, grant);
    hub.broadcast(req).await.map(Json)
}

#[derive(Deserialize)]
struct InboxQuery {
    #[serde(rename = "as")]
    as_: Option<String>,
    #[serde(default)]
    all: bool,
    limit: Option<usize>,
}

async fn inbox(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Response, ApiError> {
    // Listing marks mail surfaced: it is acting for the reader.
    hub.authorize(grant_of(&credential), q.as_.as_deref())?;
    let (inbox, surfacing): (Inbox, _) = hub
        .inbox(q.as_.as_deref(), q.all, q.limit.unwrap_or(100))
        .await?;
    let bytes = serde_json::to_vec(&inbox).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json_response(StatusCode::OK, bytes, surfacing))
}

async fn ack(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(req): ApiJson<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    hub.authorize(grant_of(&credential), req.as_.as_deref())?;
    hub.ack(req).await.map(Json)
}

async fn rooms(State(hub): State<Arc<Hub>>) -> Json<Rooms> {
    Json(Rooms { rooms: hub.rooms() })
}

async fn join(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(req): ApiJson<RoomRequest>,
) -> Result<Json<RoomView>, ApiError> {
    hub.authorize(grant_of(&credential), req.as_.as_deref())?;
    hub.join(req).await.map(Json)
}

async fn leave(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(req): ApiJson<RoomRequest>,
) -> Result<Json<RoomView>, ApiError> {
    hub.authorize(grant_of(&credential), req.as_.as_deref())?;
    hub.leave(req).await.map(Json)
}

#[derive(Deserialize)]
struct AsQuery {
    #[serde(rename = "as")]
    as_: Option<String>,
}

async fn thread(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AsQuery>,
) -> Result<Json<Thread>, ApiError> {
    hub.authorize_read(grant_of(&credential), q.as_.as_deref())?;
    hub.thread(q.as_.as_deref(), &id).await.map(Json)
}

async fn reservations(State(hub): State<Arc<Hub>>) -> Json<Reservations> {
    Json(hub.reservations())
}

async fn reserve(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<Json<Reservations>, ApiError> {
    hub.authorize(grant_of(&credential), req.as_.as_deref())?;
    hub.reserve(req).await.map(Json)
}

async fn release(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<Json<ReleaseResponse>, ApiError> {
    hub.authorize(grant_of(&credential), req.as_.as_deref())?;
    hub.release(req).await.map(Json)
}

async fn check(
    State(hub): State<Arc<Hub>>,
    ApiJson(req): ApiJson<CheckRequest>,
) -> Result<Json<Reservations>, ApiError> {
    hub.check_paths(req).map(Json)
}

/// Server-sent events: a `ready` event first (so a client knows it is
/// subscribed), then every change; `lagged` if the client fell behind.
async fn events(
    State(hub): State<Arc<Hub>>,
    credential: Option<Extension<Credential>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Every message's body goes by on it.
    crate::scopes::must_read_everything(grant_of(&credential), "the event stream")?;
    let rx = hub.events.subscribe();
    let ready = SseEvent::default()
        .event("ready")
        .data(format!("{{\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION")));
    let stopping = hub.shutdown.clone().cancelled_owned();
    let changes = BroadcastStream::new(rx).map(|item| {
        Ok(match item {
            Ok(event) => SseEvent::default()
                .event(event.kind.as_str())
                .id(event.seq.to_string())
                .json_data(&*event)
                .unwrap_or_else(|_| SseEvent::default().event("error")),
            Err(BroadcastStreamRecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
        })
    });
    // The stream ends when the daemon stops, so shutdown need not wait for clients.
    let events = stream::once(async move { Ok(ready) })
        .chain(changes)
        .take_until(stopping);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The web dashboard: one static page that reads the JSON API and follows
/// the event stream. It writes peer text with `textContent` only.
const DASHBOARD: &str = include_str!("../assets/dashboard.html");

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Only this origin's API; no third-party anything.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        DASHBOARD,
    )
}

async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let gauges = {
        let status = hub.status();
        let (links, (link_queued, link_queued_max)) = {
            let st = hub.lock();
            (st.links.count(), st.links.queued())
        };
        Gauges {
            sessions_present: status.sessions_present,
            sessions_known: status.sessions_known,
            links,
            unread: status.unread_deliveries,
            event_streams: hub.events.streams(),
            link_queued,
            link_queued_max,
        }
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hub.metrics.render(&gauges),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_never_parses_data_as_html() {
        // Proves the page writes daemon data only as text: peer text cannot inject markup or script.
        assert!(!DASHBOARD.contains("innerHTML") && !DASHBOARD.contains("outerHTML"));
        assert!(!DASHBOARD.contains("insertAdjacentHTML") && !DASHBOARD.contains("document.write"));
        assert!(DASHBOARD.contains("textContent"));
    }

    #[test]
    fn own_origin_is_exactly_the_authority_asked() {
        for (origin, host) in [
            ("http://127.0.0.1:7420", "127.0.0.1:7420"),
            ("http://LOCALHOST:7420", "localhost:7420"),
            ("https://[::1]:7420", "[::1]:7420"),
        ] {
            assert!(is_own_origin(origin, host), "{origin} {host}");
        }
        for (origin, host) in [
            ("null", "127.0.0.1:7420"),
            ("http://127.0.0.1:8000", "127.0.0.1:7420"),
            ("http://localhost:7420", "127.0.0.1:7420"),
            ("http://127.0.0.1", "127.0.0.1:7420"),
            ("http://127.0.0.1:7420.evil.example", "127.0.0.1:7420"),
            ("file://", "127.0.0.1:7420"),
            ("127.0.0.1:7420", "127.0.0.1:7420"),
            ("http://", ""),
        ] {
            assert!(!is_own_origin(origin, host), "{origin} {host}");
        }
    }

    #[test]
    fn loopback_authorities() {
        for ok in [
            "127.0.0.1:7420",
            "localhost",
            "LOCALHOST:1",
            "[::1]:7420",
            "127.1.2.3",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "10.0.0.1:7420",
            "evil.localhost.example:80",
            "[2001:db8::1]:80",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
