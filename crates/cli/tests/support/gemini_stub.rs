//! A scripted stub of the Gemini API (`generativelanguage`, v1beta) on
//! 127.0.0.1:0, for driving a real Gemini CLI offline
//! (`GOOGLE_GEMINI_BASE_URL=<stub.url>`, `GEMINI_API_KEY=<anything>`).
//!
//! - `POST /v1beta/models/MODEL:streamGenerateContent?alt=sse` answers one
//!   server-sent event `data: {"candidates": [...]}`; `:generateContent`
//!   answers the same object as JSON. A request that offers tools (the agent's
//!   own loop) takes the next scripted [`Turn`]; others, and requests when the
//!   queue is empty, get [`DEFAULT_REPLY`].
//! - `POST …:countTokens` answers a rough count.
//! - Anything else is logged on stderr, recorded (see [`GeminiStub::unknown`])
//!   and answered 404 in the API's error shape.
//!
//! Every request is recorded with its body as JSON. [`GeminiStub::hold`] makes
//! main-loop requests wait until [`GeminiStub::release`].

#![allow(dead_code)]

use std::collections::VecDeque;
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
    /// A `text` part; `finishReason: "STOP"`.
    Text(String),
    /// A `functionCall` part (Gemini CLI names MCP tools `mcp_<server>_<tool>`).
    Call { name: String, args: Value },
}

impl Turn {
    pub fn text(s: impl Into<String>) -> Self {
        Turn::Text(s.into())
    }
    pub fn call(name: impl Into<String>, args: Value) -> Self {
        Turn::Call {
            name: name.into(),
            args,
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
    /// Whether this is a model request (`…:streamGenerateContent` or `…:generateContent`).
    pub fn is_model(&self) -> bool {
        self.method == "POST"
            && (self.path().ends_with(":streamGenerateContent") || self.path().ends_with(":generateContent"))
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
}

/// The running stub. Stops serving when dropped.
pub struct GeminiStub {
    /// `http://127.0.0.1:PORT`, the value for `GOOGLE_GEMINI_BASE_URL`.
    pub url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GeminiStub {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Gemini API stub");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (open, _) = tokio::sync::watch::channel(true);
        let shared = Arc::new(Shared {
            turns: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
            open,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::Builder::new()
            .name("gemini-stub".into())
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
        GeminiStub {
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

impl Drop for GeminiStub {
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
    let recorded = Recorded {
        method: method.to_string(),
        uri: uri_text.clone(),
        body: parsed.clone(),
    };
    let is_model = recorded.is_model();
    state.log.lock().unwrap().push(recorded);

    let path = uri.path();
    if method == Method::POST && is_model {
        let turn = if is_main_loop(&parsed) {
            let mut open = state.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
            state.turns.lock().unwrap().pop_front()
        } else {
            None
        };
        let answer = answer(&parsed, &turn.unwrap_or_else(|| Turn::text(DEFAULT_REPLY)));
        if path.ends_with(":streamGenerateContent") {
            let body = format!("data: {answer}\r\n\r\n");
            return (
                [
                    (header::CONTENT_TYPE, "text/event-stream"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
                .into_response();
        }
        return axum::Json(answer).into_response();
    }
    if method == Method::POST && path.ends_with(":countTokens") {
        return axum::Json(json!({"totalTokens": (parsed.to_string().len() / 4).max(1)})).into_response();
    }
    let what = format!("{method} {uri_text}");
    eprintln!("gemini_stub: unknown request {what}");
    state.unknown.lock().unwrap().push(what.clone());
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": {"code": 404, "status": "NOT_FOUND", "message": format!("the stub does not serve {what}")}})),
    )
        .into_response()
}

fn answer(req: &Value, turn: &Turn) -> Value {
    let part = match turn {
        Turn::Text(text) => json!({"text": text}),
        Turn::Call { name, args } => json!({"functionCall": {"name": name, "args": args}}),
    };
    let prompt = (req.to_string().len() / 4).max(1);
    json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": 5, "totalTokenCount": prompt + 5},
        "modelVersion": "stub-model",
    })
}
