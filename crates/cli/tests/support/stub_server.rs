//! The server under the scripted model-API stubs (messages_stub.rs,
//! responses_stub.rs, chat_stub.rs, gemini_stub.rs), for driving a real
//! harness offline. Each stub is an [`Api`]: which requests are model requests
//! and how its wire format answers a [`Api::Turn`]. The rest is here:
//!
//! - It serves on 127.0.0.1:0 from its own thread and tokio runtime, and stops
//!   when the [`StubServer`] is dropped.
//! - Every request is recorded (method, URI, headers, body as JSON) before it
//!   is answered, for the test to inspect.
//! - Model requests take the next scripted turn from the queue
//!   ([`StubServer::push`]); with the queue empty, or where the API says the
//!   request takes none, they are answered [`DEFAULT_REPLY`].
//! - [`StubServer::hold`] makes the model requests the API marks as held wait
//!   until [`StubServer::release`], so a test can look at the world mid-turn.
//! - Anything the API does not serve is logged on stderr, recorded (see
//!   [`StubServer::unknown`]) and answered 404 in the API's error shape.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// What a stub says when nothing is scripted.
pub const DEFAULT_REPLY: &str = "OK from the stub.";

/// One request a stub received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Value::String` if it was not JSON, `Null` if empty.
    pub body: Value,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a `POST` to `path`.
    pub fn is_post(&self, path: &str) -> bool {
        self.method == "POST" && self.path() == path
    }
}

/// How a stub answers one request.
pub enum Route {
    /// A model request. It waits out a hold if `held`, then is answered with
    /// the next scripted turn if `scripted` (else, or with the queue empty,
    /// with [`DEFAULT_REPLY`]).
    Model { held: bool, scripted: bool },
    /// Answered at once with this.
    Answer(Response),
    /// Not served: logged, recorded and answered 404.
    Unknown,
}

/// One model API: its request shapes and its wire format.
pub trait Api: Send + Sync + 'static {
    /// The stub's answer to one model request.
    type Turn: Send + 'static;
    /// For the thread's name and the log lines.
    const NAME: &'static str;
    /// The turn that answers plain `text`.
    fn text(text: &str) -> Self::Turn;
    /// How to answer `req` (already recorded).
    fn route(req: &Recorded) -> Route;
    /// Whether `req` is one of the model requests [`StubServer::bodies`] returns.
    fn is_model(req: &Recorded) -> bool;
    /// The answer to model request `req` with `turn`.
    fn answer(req: &Recorded, turn: &Self::Turn, ids: &Ids) -> Response;
    /// The 404 body for a request the stub does not serve (`what` is `METHOD URI`).
    fn not_found(what: &str) -> Value;
}

/// Ids unique within one stub: `<prefix>_stub00000001`, …
pub struct Ids(AtomicU64);

impl Ids {
    pub fn next(&self, prefix: &str) -> String {
        format!("{prefix}_stub{:08}", self.0.fetch_add(1, Ordering::Relaxed))
    }
}

struct Shared<T> {
    turns: Mutex<VecDeque<T>>,
    log: Mutex<Vec<Recorded>>,
    unknown: Mutex<Vec<String>>,
    /// `true`: held model requests are answered; `false`: they wait.
    open: tokio::sync::watch::Sender<bool>,
    ids: Ids,
}

/// A running stub of API `A`. Stops serving when dropped.
pub struct StubServer<A: Api> {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared<A::Turn>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    api: PhantomData<A>,
}

impl<A: Api> StubServer<A> {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind {}: {e}", A::NAME));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (open, _) = tokio::sync::watch::channel(true);
        let shared = Arc::new(Shared {
            turns: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            unknown: Mutex::new(Vec::new()),
            open,
            ids: Ids(AtomicU64::new(1)),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::Builder::new()
            .name(A::NAME.replace('_', "-"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("stub runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new().fallback(
                        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                            let state = state.clone();
                            async move { handle::<A>(state, method, uri, headers, body).await }
                        },
                    );
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
        StubServer {
            url,
            shared,
            shutdown: Some(stop_tx),
            api: PhantomData,
        }
    }

    /// Queues a turn for the next scripted model request.
    pub fn push(&self, turn: A::Turn) {
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

    /// Bodies of every model request ([`Api::is_model`]) so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies_since(0)
    }

    /// Bodies of the model requests ([`Api::is_model`]) recorded after `mark`.
    pub fn bodies_since(&self, mark: usize) -> Vec<Value> {
        let log = self.shared.log.lock().unwrap();
        log.iter()
            .skip(mark)
            .filter(|r| A::is_model(r))
            .map(|r| r.body.clone())
            .collect()
    }

    /// `METHOD URI` of each request the stub did not recognise.
    pub fn unknown(&self) -> Vec<String> {
        self.shared.unknown.lock().unwrap().clone()
    }

    /// From now on, held model requests are recorded at once but answered only after [`Self::release`].
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

impl<A: Api> Drop for StubServer<A> {
    fn drop(&mut self) {
        self.release();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn handle<A: Api>(
    state: Arc<Shared<A::Turn>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Recorded {
        method: method.to_string(),
        uri: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| uri.path().to_string()),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        },
    };
    state.log.lock().unwrap().push(req.clone());

    match A::route(&req) {
        Route::Model { held, scripted } => {
            if held {
                let mut open = state.open.subscribe();
                let _ = open.wait_for(|open| *open).await;
            }
            let turn = if scripted {
                state.turns.lock().unwrap().pop_front()
            } else {
                None
            };
            let turn = turn.unwrap_or_else(|| A::text(DEFAULT_REPLY));
            A::answer(&req, &turn, &state.ids)
        }
        Route::Answer(response) => response,
        Route::Unknown => {
            let what = format!("{} {}", req.method, req.uri);
            eprintln!("{}: unknown request {what}", A::NAME);
            state.unknown.lock().unwrap().push(what.clone());
            (StatusCode::NOT_FOUND, axum::Json(A::not_found(&what))).into_response()
        }
    }
}

/// Whether a request offers tools: the agent's own loop, not a side request.
pub fn is_main_loop(body: &Value) -> bool {
    body["tools"].as_array().is_some_and(|t| !t.is_empty())
}

/// The request's `model`, else `default`.
pub fn model_of(req: &Value, default: &str) -> Value {
    req.get("model")
        .cloned()
        .filter(Value::is_string)
        .unwrap_or_else(|| json!(default))
}

/// A rough token count of `v`.
pub fn rough_tokens(v: &Value) -> usize {
    (v.to_string().len() / 4).max(1)
}

/// A server-sent-events response with `body`.
pub fn sse(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A server-sent-events response of named events (`event: NAME` and `data: JSON`).
pub fn sse_events(events: Vec<(&str, Value)>) -> Response {
    let mut body = String::new();
    for (name, data) in events {
        body.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    sse(body)
}

/// `s` in two pieces split at a char boundary, so deltas really accumulate.
pub fn halves(s: &str) -> Vec<String> {
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
