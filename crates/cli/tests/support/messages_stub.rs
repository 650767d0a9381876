//! A scripted stub of the Anthropic Messages API on 127.0.0.1:0, for driving
//! a real Claude Code offline (`ANTHROPIC_BASE_URL=<stub.url>`).
//!
//! - `POST /v1/messages` with `"stream": true` answers with server-sent events
//!   (`message_start`, `content_block_start`, `content_block_delta`,
//!   `content_block_stop`, `message_delta`, `message_stop`) for the next
//!   scripted [`Turn`]; with the queue empty it answers [`DEFAULT_REPLY`].
//! - `POST /v1/messages` without `stream` answers one JSON message. Such a
//!   request takes a scripted turn only if it offers tools (a main-loop
//!   request); side requests (titles and the like) get [`DEFAULT_REPLY`].
//! - `POST /v1/messages/count_tokens` answers a rough count.
//! - `HEAD|GET /api/hello` (Claude Code's connectivity probe, made when
//!   nonessential traffic is not disabled) answers 200.
//! - Anything else is logged on stderr and recorded (see [`MessagesStub::unknown`])
//!   and answered 404 in the API's error shape.
//!
//! Every request is recorded with its body as JSON, for the test to inspect.
//! [`MessagesStub::hold`] makes streaming requests wait until
//! [`MessagesStub::release`], so a test can look at the world mid-turn.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// What the stub says when nothing is scripted.
pub const DEFAULT_REPLY: &str = "OK from the stub.";

/// The stub's answer to one main-loop request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// A text block; `stop_reason: "end_turn"`.
    Text(String),
    /// A `tool_use` block; `stop_reason: "tool_use"`.
    ToolUse { name: String, input: Value },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Turn::ToolUse { name: name.into(), input }
    }
}

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent (Claude Code adds `?beta=true`).
    pub uri: String,
    /// The body parsed as JSON; `Value::String` if it was not JSON, `Null` if empty.
    pub body: Value,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
    /// Whether this is a model request (`POST /v1/messages`).
    pub fn is_message(&self) -> bool {
        self.method == "POST" && self.path() == "/v1/messages"
    }
}

struct Shared {
    turns: Mutex<VecDeque<Turn>>,
    log: Mutex<Vec<Recorded>>,
    unknown: Mutex<Vec<String>>,
    /// `true`: streaming requests are answered; `false`: they wait.
    open: tokio::sync::watch::Sender<bool>,
    ids: AtomicU64,
}

impl Shared {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_stub{:08}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

/// The running stub. Stops serving when dropped.
pub struct MessagesStub {
    /// `http://127.0.0.1:PORT`, the value for `ANTHROPIC_BASE_URL`.
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MessagesStub {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Messages API stub");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (open, _) = tokio::sync::watch::channel(true);
        let shared = Arc::new(Shared {
            turns: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
            open,
            ids: AtomicU64::new(1),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::Builder::new()
            .name("messages-stub".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("stub runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
                        let state = state.clone();
                        async move { handle(state, method, uri, body).await }
                    });
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
                // Connections a harness left open do not keep the thread alive.
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn the stub thread");
        MessagesStub { url, shared, shutdown: Some(stop_tx) }
    }

    /// Queues a turn for the next main-loop request.
    pub fn push(&self, turn: Turn) {
        self.shared.turns.lock().unwrap().push_back(turn);
    }

    /// Turns still queued.
    pub fn pending(&self) -> usize {
        self.shared.turns.lock().unwrap().len()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// How many requests were recorded so far: a mark for [`Self::message_bodies_since`].
    pub fn mark(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Bodies of every `POST /v1/messages` so far.
    pub fn message_bodies(&self) -> Vec<Value> {
        self.message_bodies_since(0)
    }

    /// Bodies of the `POST /v1/messages` recorded after `mark`.
    pub fn message_bodies_since(&self, mark: usize) -> Vec<Value> {
        let log = self.shared.log.lock().unwrap();
        log.iter().skip(mark).filter(|r| r.is_message()).map(|r| r.body.clone()).collect()
    }

    /// `METHOD URI` of each request the stub did not recognise.
    pub fn unknown(&self) -> Vec<String> {
        self.shared.unknown.lock().unwrap().clone()
    }

    /// From now on, streaming `/v1/messages` requests are recorded at once but
    /// answered only after [`Self::release`].
    pub fn hold(&self) {
        self.shared.open.send_replace(false);
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.shared.open.send_replace(true);
    }

    /// Waits until `n` model requests were recorded after `mark`.
    pub fn wait_for_messages(&self, mark: usize, n: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.message_bodies_since(mark).len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for MessagesStub {
    fn drop(&mut self) {
        self.release();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(state: Arc<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let uri_text = uri.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| uri.path().to_string());
    state.log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        uri: uri_text.clone(),
        body: parsed.clone(),
    });

    match (&method, uri.path()) {
        (&Method::POST, "/v1/messages") => {
            if parsed["stream"] == json!(true) {
                let mut open = state.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
                let turn = state.turns.lock().unwrap().pop_front().unwrap_or_else(|| Turn::text(DEFAULT_REPLY));
                stream_answer(&state, &parsed, &turn)
            } else {
                let main_loop = parsed["tools"].as_array().is_some_and(|t| !t.is_empty());
                let turn = if main_loop { state.turns.lock().unwrap().pop_front() } else { None };
                let turn = turn.unwrap_or_else(|| Turn::text(DEFAULT_REPLY));
                json_answer(&state, &parsed, &turn)
            }
        }
        (&Method::POST, "/v1/messages/count_tokens") => {
            let tokens = (parsed.to_string().len() / 4).max(1);
            axum::Json(json!({ "input_tokens": tokens })).into_response()
        }
        (&Method::HEAD | &Method::GET, "/api/hello") => StatusCode::OK.into_response(),
        _ => {
            let what = format!("{method} {uri_text}");
            eprintln!("messages_stub: unknown request {what}");
            state.unknown.lock().unwrap().push(what.clone());
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({
                    "type": "error",
                    "error": { "type": "not_found_error", "message": format!("the stub does not serve {what}") }
                })),
            )
                .into_response()
        }
    }
}

fn model_of(req: &Value) -> Value {
    req.get("model").cloned().filter(Value::is_string).unwrap_or_else(|| json!("claude-stub"))
}

fn usage(req: &Value, output_tokens: usize) -> Value {
    json!({
        "input_tokens": (req.to_string().len() / 4).max(1),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// The content block (complete), its stop reason and a rough token count.
fn block_of(state: &Shared, turn: &Turn) -> (Value, &'static str, usize) {
    match turn {
        Turn::Text(text) => (json!({ "type": "text", "text": text }), "end_turn", text.len() / 4 + 1),
        Turn::ToolUse { name, input } => (
            json!({ "type": "tool_use", "id": state.next_id("toolu"), "name": name, "input": input }),
            "tool_use",
            input.to_string().len() / 4 + 1,
        ),
    }
}

fn json_answer(state: &Shared, req: &Value, turn: &Turn) -> Response {
    let (block, stop_reason, out) = block_of(state, turn);
    axum::Json(json!({
        "id": state.next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model_of(req),
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage(req, out),
    }))
    .into_response()
}

fn stream_answer(state: &Shared, req: &Value, turn: &Turn) -> Response {
    let (block, stop_reason, out) = block_of(state, turn);
    let mut events: Vec<(&str, Value)> = vec![(
        "message_start",
        json!({
            "type": "message_start",
            "message": {
                "id": state.next_id("msg"),
                "type": "message",
                "role": "assistant",
                "model": model_of(req),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(req, 1),
            }
        }),
    )];
    match turn {
        Turn::Text(text) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in halves(text) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
        }
        Turn::ToolUse { input, .. } => {
            let mut start = block.clone();
            start["input"] = json!({});
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": start}),
            ));
            for piece in halves(&input.to_string()) {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
        }
    }
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": out}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));

    let mut body = String::new();
    for (name, data) in events {
        body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `s` in two pieces split at a char boundary, so deltas really accumulate.
fn halves(s: &str) -> Vec<String> {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    let (a, b) = s.split_at(mid);
    [a, b].into_iter().filter(|p| !p.is_empty()).map(str::to_string).collect()
}
