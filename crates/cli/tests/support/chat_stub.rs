//! A scripted stub of the OpenAI Chat Completions API on 127.0.0.1:0, for
//! driving a real opencode offline (a provider using
//! `@ai-sdk/openai-compatible` with `baseURL = "<stub.url>/v1"`).
//!
//! - `POST /v1/chat/completions` with `"stream": true` answers with
//!   `chat.completion.chunk` lines as server-sent events, then `data: [DONE]`;
//!   without `stream` it answers one `chat.completion`. A request that offers
//!   tools (a main-loop request) takes the next scripted [`Turn`]; others (a
//!   title request) and requests when the queue is empty get [`DEFAULT_REPLY`].
//! - Anything else is logged on stderr, recorded (see [`ChatStub::unknown`])
//!   and answered 404 in the API's error shape.
//!
//! Every request is recorded with its body as JSON. [`ChatStub::hold`] makes
//! main-loop requests wait until [`ChatStub::release`].

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
    /// Assistant content; `finish_reason: "stop"`.
    Text(String),
    /// One `tool_calls` entry; `finish_reason: "tool_calls"`.
    ToolCall { name: String, arguments: Value },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Turn::ToolCall {
            name: name.into(),
            arguments,
        }
    }
}

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    /// The body parsed as JSON; `Value::String` if it was not JSON, `Null` if empty.
    pub body: Value,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
    /// Whether this is a model request (`POST /v1/chat/completions`).
    pub fn is_model(&self) -> bool {
        self.method == "POST" && self.path() == "/v1/chat/completions"
    }
}

/// Whether a request offers tools: the agent's own loop, not a side request.
pub fn is_main_loop(body: &Value) -> bool {
    body["tools"].as_array().is_some_and(|t| !t.is_empty())
}

struct Shared {
    turns: Mutex<VecDeque<Turn>>,
    log: Mutex<Vec<Recorded>>,
    unknown: Mutex<Vec<String>>,
    /// `true`: main-loop requests are answered; `false`: they wait.
    open: tokio::sync::watch::Sender<bool>,
    ids: AtomicU64,
}

impl Shared {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_stub{:08}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

/// The running stub. Stops serving when dropped.
pub struct ChatStub {
    /// `http://127.0.0.1:PORT` (the provider's `baseURL` is this plus `/v1`).
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ChatStub {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Chat Completions stub");
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
            .name("chat-stub".into())
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
                rt.shutdown_timeout(Duration::from_millis(100));
            })
            .expect("spawn the stub thread");
        ChatStub {
            url,
            shared,
            shutdown: Some(stop_tx),
        }
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

    /// How many requests were recorded so far: a mark for [`Self::bodies_since`].
    pub fn mark(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Bodies of every main-loop model request so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies_since(0)
    }

    /// Bodies of the main-loop model requests recorded after `mark`.
    pub fn bodies_since(&self, mark: usize) -> Vec<Value> {
        let log = self.shared.log.lock().unwrap();
        log.iter()
            .skip(mark)
            .filter(|r| r.is_model() && is_main_loop(&r.body))
            .map(|r| r.body.clone())
            .collect()
    }

    /// `METHOD URI` of each request the stub did not recognise.
    pub fn unknown(&self) -> Vec<String> {
        self.shared.unknown.lock().unwrap().clone()
    }

    /// From now on, main-loop requests are recorded at once but answered only after [`Self::release`].
    pub fn hold(&self) {
        self.shared.open.send_replace(false);
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.shared.open.send_replace(true);
    }

    /// Waits until `n` main-loop requests were recorded after `mark`.
    pub fn wait_for_requests(&self, mark: usize, n: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.bodies_since(mark).len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for ChatStub {
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
    let uri_text = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| uri.path().to_string());
    state.log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        uri: uri_text.clone(),
        body: parsed.clone(),
    });

    match (&method, uri.path()) {
        (&Method::POST, "/v1/chat/completions") => {
            let turn = if is_main_loop(&parsed) {
                let mut open = state.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
                state.turns.lock().unwrap().pop_front()
            } else {
                None
            };
            let turn = turn.unwrap_or_else(|| Turn::text(DEFAULT_REPLY));
            if parsed["stream"] == json!(true) {
                stream_answer(&state, &parsed, &turn)
            } else {
                json_answer(&state, &parsed, &turn)
            }
        }
        _ => {
            let what = format!("{method} {uri_text}");
            eprintln!("chat_stub: unknown request {what}");
            state.unknown.lock().unwrap().push(what.clone());
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": {"type": "invalid_request_error", "message": format!("the stub does not serve {what}")}})),
            )
                .into_response()
        }
    }
}

fn model_of(req: &Value) -> Value {
    req.get("model")
        .cloned()
        .filter(Value::is_string)
        .unwrap_or_else(|| json!("stub-model"))
}

fn usage(req: &Value) -> Value {
    let prompt = (req.to_string().len() / 4).max(1);
    json!({"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5})
}

fn tool_call(state: &Shared, name: &str, arguments: &Value) -> Value {
    json!({"index": 0, "id": state.next_id("call"), "type": "function",
        "function": {"name": name, "arguments": arguments.to_string()}})
}

fn json_answer(state: &Shared, req: &Value, turn: &Turn) -> Response {
    let (message, finish) = match turn {
        Turn::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Turn::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [tool_call(state, name, arguments)]}),
            "tool_calls",
        ),
    };
    axum::Json(json!({
        "id": state.next_id("chatcmpl"), "object": "chat.completion", "created": 0, "model": model_of(req),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage(req),
    }))
    .into_response()
}

fn stream_answer(state: &Shared, req: &Value, turn: &Turn) -> Response {
    let id = state.next_id("chatcmpl");
    let model = model_of(req);
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices});
    let mut chunks = Vec::new();
    let finish = match turn {
        Turn::Text(text) => {
            for (i, piece) in halves(text).into_iter().enumerate() {
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": piece})
                } else {
                    json!({"content": piece})
                };
                chunks.push(chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}])));
            }
            "stop"
        }
        Turn::ToolCall { name, arguments } => {
            let delta = json!({"role": "assistant", "tool_calls": [tool_call(state, name, arguments)]});
            chunks.push(chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}])));
            "tool_calls"
        }
    };
    chunks.push(chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])));
    let mut last = chunk(json!([]));
    last["usage"] = usage(req);
    chunks.push(last);

    let mut body = String::new();
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `s` in two pieces split at a char boundary, so deltas really accumulate.
fn halves(s: &str) -> Vec<String> {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    let (a, b) = s.split_at(mid);
    [a, b]
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}
