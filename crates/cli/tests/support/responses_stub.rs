//! A scripted stub of the OpenAI Responses API on 127.0.0.1:0, for driving a
//! real Codex CLI offline (a `model_providers.<name>` with `base_url =
//! "<stub.url>/v1"` and `wire_api = "responses"`).
//!
//! - `POST /v1/responses` answers with server-sent events (`response.created`,
//!   `response.output_item.added`, `response.output_text.delta` for text,
//!   `response.output_item.done`, `response.completed`) for the next scripted
//!   [`Turn`]; with the queue empty it answers [`DEFAULT_REPLY`].
//! - Anything else is logged on stderr, recorded (see [`ResponsesStub::unknown`])
//!   and answered 404 in the API's error shape.
//!
//! Every request is recorded with its headers and its body as JSON.
//! [`ResponsesStub::hold`] makes model requests wait until
//! [`ResponsesStub::release`], so a test can look at the world mid-turn.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// What the stub says when nothing is scripted.
pub const DEFAULT_REPLY: &str = "OK from the stub.";

/// The stub's answer to one model request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// An assistant message with one `output_text`.
    Text(String),
    /// A `function_call` output item; `namespace` is how Codex groups MCP
    /// tools (`mcp__<server>`), `arguments` is sent as JSON text.
    Call {
        namespace: Option<String>,
        name: String,
        arguments: Value,
    },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    /// A call of MCP tool `tool` on server `server`, as Codex offers it.
    pub fn mcp_call(server: &str, tool: &str, arguments: Value) -> Self {
        Turn::Call {
            namespace: Some(format!("mcp__{server}")),
            name: tool.into(),
            arguments,
        }
    }
}

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Value::String` if it was not JSON, `Null` if empty.
    pub body: Value,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
    /// Whether this is a model request (`POST /v1/responses`).
    pub fn is_model(&self) -> bool {
        self.method == "POST" && self.path() == "/v1/responses"
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    turns: Mutex<VecDeque<Turn>>,
    log: Mutex<Vec<Recorded>>,
    unknown: Mutex<Vec<String>>,
    /// `true`: model requests are answered; `false`: they wait.
    open: tokio::sync::watch::Sender<bool>,
    ids: AtomicU64,
}

impl Shared {
    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}_stub{:08}", self.ids.fetch_add(1, Ordering::Relaxed))
    }
}

/// The running stub. Stops serving when dropped.
pub struct ResponsesStub {
    /// `http://127.0.0.1:PORT` (the provider's `base_url` is this plus `/v1`).
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ResponsesStub {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Responses API stub");
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
            .name("responses-stub".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("stub runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app =
                        Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                            let state = state.clone();
                            async move { handle(state, method, uri, headers, body).await }
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
        ResponsesStub {
            url,
            shared,
            shutdown: Some(stop_tx),
        }
    }

    /// Queues a turn for the next model request.
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

    /// Bodies of every model request so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies_since(0)
    }

    /// Bodies of the model requests recorded after `mark`.
    pub fn bodies_since(&self, mark: usize) -> Vec<Value> {
        let log = self.shared.log.lock().unwrap();
        log.iter()
            .skip(mark)
            .filter(|r| r.is_model())
            .map(|r| r.body.clone())
            .collect()
    }

    /// `METHOD URI` of each request the stub did not recognise.
    pub fn unknown(&self) -> Vec<String> {
        self.shared.unknown.lock().unwrap().clone()
    }

    /// From now on, model requests are recorded at once but answered only after [`Self::release`].
    pub fn hold(&self) {
        self.shared.open.send_replace(false);
    }

    /// Answers the held requests and stops holding.
    pub fn release(&self) {
        self.shared.open.send_replace(true);
    }

    /// Waits until `n` model requests were recorded after `mark`.
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

impl Drop for ResponsesStub {
    fn drop(&mut self) {
        self.release();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle(state: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let uri_text = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    state.log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        uri: uri_text.clone(),
        headers,
        body: parsed.clone(),
    });

    match (&method, uri.path()) {
        (&Method::POST, "/v1/responses") => {
            let mut open = state.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
            let turn = state
                .turns
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Turn::text(DEFAULT_REPLY));
            stream_answer(&state, &parsed, &turn)
        }
        _ => {
            let what = format!("{method} {uri_text}");
            eprintln!("responses_stub: unknown request {what}");
            state.unknown.lock().unwrap().push(what.clone());
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": {"type": "invalid_request_error", "message": format!("the stub does not serve {what}")}})),
            )
                .into_response()
        }
    }
}

fn stream_answer(state: &Shared, req: &Value, turn: &Turn) -> Response {
    let response_id = state.next_id("resp");
    let model = req
        .get("model")
        .cloned()
        .filter(Value::is_string)
        .unwrap_or_else(|| json!("stub-model"));
    let response = |status: &str, output: Value| json!({"id": response_id, "object": "response", "created_at": 0, "model": model, "status": status, "output": output});
    let mut events: Vec<(&str, Value)> = vec![(
        "response.created",
        json!({"type": "response.created", "response": response("in_progress", json!([]))}),
    )];
    let item = match turn {
        Turn::Text(text) => {
            let id = state.next_id("msg");
            let done = json!({"type": "message", "id": id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]});
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"type": "message", "id": id, "role": "assistant", "status": "in_progress", "content": []}}),
            ));
            for piece in halves(text) {
                events.push((
                    "response.output_text.delta",
                    json!({"type": "response.output_text.delta", "item_id": id, "output_index": 0, "content_index": 0, "delta": piece}),
                ));
            }
            done
        }
        Turn::Call {
            namespace,
            name,
            arguments,
        } => {
            let mut call = json!({"type": "function_call", "id": state.next_id("fc"), "call_id": state.next_id("call"),
                "name": name, "arguments": arguments.to_string(), "status": "completed"});
            if let Some(ns) = namespace {
                call["namespace"] = json!(ns);
            }
            events.push((
                "response.output_item.added",
                json!({"type": "response.output_item.added", "output_index": 0, "item": call}),
            ));
            call
        }
    };
    events.push((
        "response.output_item.done",
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    let mut completed = response("completed", json!([item]));
    let input_tokens = (req.to_string().len() / 4).max(1);
    completed["usage"] = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input_tokens + 5});
    events.push((
        "response.completed",
        json!({"type": "response.completed", "response": completed}),
    ));

    let mut body = String::new();
    for (name, data) in events {
        body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
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
