//! Hook calls: the daemon's `/hook/{event}` handler (`Hub::hook_route`:
//! the real extractors, payload parsing, roster update, edit guard and
//! answer), on a real `Hub` held in memory (see `store`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use muster_core::api::{RegisterRequest, ReserveRequest, SendRequest};
use muster_core::limits::Rate;
use muster_daemon::{Clock, Config, Hub, ManualClock};
use serde_json::Value;
use tower::ServiceExt;

use crate::runtime::block_on;
use crate::store::NullStore;

/// A peer already on the roster, holding `src/**` of its repository.
const PEER: &str = "peer-fuzz-0001";
const PEER_CWD: &str = "/fuzz/repo";

/// First line: `<event> [<harness>] [<header>=<value>]…` (the URL's event,
/// its `?harness=`, `X-Muster-<header>` headers); the rest: the payload.
/// The call is made, mail is sent to its session, and the call is made
/// again (so its answer can carry or hold for the mail). Every answer is a
/// JSON 2xx or 4xx, never a server error; a context answer names its event.
pub fn hook_payload(data: &[u8]) {
    let (head, body) = crate::first_line(data);
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let Some(request) = HookCall::parse(head) else {
        return;
    };
    block_on(async {
        let hub = scenario().await;
        answered_well(&hub, &request, body).await;
        let Some(id) = session_of(body) else {
            return;
        };
        let mail = SendRequest {
            as_: Some(PEER.into()),
            to: id,
            body: "<b>review</b> src/a.rs & reply".into(),
            reply_to: None,
            as_from_env: false,
            via: muster_core::SentVia::OnBehalf,
        };
        if hub.send(mail).await.is_ok() {
            answered_well(&hub, &request, body).await;
        }
    });
}

/// A hook call's URL and headers, as read from the input's first line.
struct HookCall {
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HookCall {
    fn parse(head: &str) -> Option<HookCall> {
        let mut words = head.split(' ');
        // One path segment, as the router's `/hook/{event}` takes it; any
        // other path is another route's (or the router's bare 404).
        let event = words
            .next()
            .filter(|e| !e.is_empty() && !e.contains(['/', '?', '#']))?;
        let mut uri = format!("/hook/{event}");
        let mut headers = Vec::new();
        for word in words {
            match word.split_once('=') {
                Some((name, value)) => {
                    let name = HeaderName::try_from(format!("x-muster-{name}")).ok()?;
                    headers.push((name, HeaderValue::try_from(value).ok()?));
                }
                None => uri.push_str(&format!("?harness={word}")),
            }
        }
        uri.parse::<axum::http::Uri>().ok()?;
        Some(HookCall { uri, headers })
    }

    fn request(&self, body: &[u8]) -> Request<Body> {
        let mut request = Request::post(&self.uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("the URI parsed");
        for (name, value) in &self.headers {
            request.headers_mut().append(name, value.clone());
        }
        request
    }
}

/// A fresh daemon state: the peer on the roster with its reservation.
/// Rates are unlimited: every input is its own burst.
async fn scenario() -> Arc<Hub> {
    let mut config = Config::new("127.0.0.1:0", "/nonexistent/muster-fuzz");
    config.clock = Clock::Manual(ManualClock::new(1_750_000_000_000));
    config.hook_rate = Rate::new(0, 0);
    config.send_rate = Rate::new(0, 0);
    let hub = Hub::load(config, Arc::new(NullStore), "null".into())
        .await
        .expect("an empty store loads");
    let peer = RegisterRequest {
        id: PEER.into(),
        harness: Some("claude".into()),
        cwd: Some(PEER_CWD.into()),
        ..RegisterRequest::default()
    };
    hub.register(peer).await.expect("the peer registers");
    let claim = ReserveRequest {
        as_: Some(PEER.into()),
        paths: vec!["src/**".into()],
        exclusive: true,
        ttl_s: None,
        reason: Some("refactoring".into()),
    };
    hub.reserve(claim).await.expect("the peer reserves");
    hub
}

/// The payload's session id, if it has one worth mailing.
fn session_of(body: &[u8]) -> Option<String> {
    let payload: Value = serde_json::from_slice(body).ok()?;
    let id = payload.get("session_id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_string())
}

async fn answered_well(hub: &Arc<Hub>, call: &HookCall, body: &[u8]) {
    let response = hub
        .hook_route()
        .oneshot(call.request(body))
        .await
        .expect("the router is infallible");
    check(response).await;
}

async fn check(response: Response<Body>) {
    let status = response.status();
    assert!(
        status.is_success() || status.is_client_error(),
        "answered {status}"
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("an in-memory body")
        .to_bytes();
    let answer: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"));
    assert!(answer.is_object(), "answer is not an object: {answer}");
    if let Some(output) = answer.get("hookSpecificOutput") {
        assert!(output["hookEventName"].is_string(), "{answer}");
    }
}
