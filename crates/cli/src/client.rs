//! The HTTP client the CLI commands share, and the errors they end with.

use std::error::Error as _;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use muster_core::api::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::autostart::{self, Outcome, Plan};
use crate::config;

/// How long a normal command waits for the daemon, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Process exit codes.
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_UNREACHABLE: i32 = 3;

/// Why a command failed, in the terms its exit code and message need.
#[derive(Debug)]
pub enum ClientError {
    /// No answer: refused, timed out, connection lost.
    Unreachable { url: String, reason: String },
    /// No TLS with an https:// daemon: its certificate was refused, or it
    /// does not speak TLS; `reason` says which and what to do.
    Untrusted { url: String, reason: String },
    /// The daemon answered with an error.
    Api { body: ErrorBody },
    /// The daemon answered something this client cannot read.
    Protocol(String),
    /// Refused before any request was made (bad config, bad input).
    Local(String),
}

impl ClientError {
    pub fn local(message: impl Into<String>) -> Self {
        ClientError::Local(message.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable { .. } | ClientError::Untrusted { .. } => EXIT_UNREACHABLE,
            _ => EXIT_FAILURE,
        }
    }

    /// The error as the daemon's `ErrorBody` shape, so `--json` callers always get one form.
    pub fn to_body(&self) -> ErrorBody {
        let detail = |code: &str, message: String| ErrorDetail {
            code: code.to_string(),
            message,
            matches: Vec::new(),
        };
        ErrorBody {
            error: match self {
                ClientError::Api { body, .. } => body.error.clone(),
                ClientError::Unreachable { .. } => detail("daemon_unreachable", self.to_string()),
                ClientError::Untrusted { .. } => detail("tls_failed", self.to_string()),
                ClientError::Protocol(_) => detail("bad_answer", self.to_string()),
                ClientError::Local(_) => detail("invalid_input", self.to_string()),
            },
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { url, reason } => {
                write!(f, "cannot reach the muster daemon at {url} ({reason}); start it with `muster serve`")
            }
            ClientError::Untrusted { url, reason } => {
                write!(
                    f,
                    "cannot reach the muster daemon at {url} securely: {reason}"
                )
            }
            ClientError::Api { body, .. } => write!(f, "{}", body.error.message),
            ClientError::Protocol(why) => write!(f, "unexpected answer from the daemon: {why}"),
            ClientError::Local(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A short human reason for a transport failure: "connection refused",
/// "timed out", or the innermost cause.
pub fn transport_reason(err: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = err;
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "timed out".into(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        innermost = cause;
        source = cause.source();
    }
    if err.is_timeout() {
        return "timed out".into();
    }
    let text = innermost.to_string();
    // reqwest's own outer message repeats the URL; the inner cause is what a person needs.
    text.strip_prefix("error sending request for url")
        .map(|_| "request failed".to_string())
        .unwrap_or(text)
}

/// Turns a non-2xx answer into an `ErrorBody`, synthesising one if the body is not one.
pub fn error_from_answer(status: reqwest::StatusCode, bytes: &[u8]) -> ClientError {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return ClientError::Api { body };
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let snippet: String = text.chars().take(200).collect();
    let message = if snippet.is_empty() {
        format!("the daemon answered {status}")
    } else {
        format!("the daemon answered {status}: {snippet}")
    };
    let code = match status.as_u16() {
        401 => "unauthorized".to_string(),
        404 => "not_found".to_string(),
        413 => "body_too_large".to_string(),
        other => format!("http_{other}"),
    };
    ClientError::Api {
        body: ErrorBody {
            error: ErrorDetail {
                code,
                message,
                matches: Vec::new(),
            },
        },
    }
}

/// A client of the daemon at one address, or of a team's daemons at
/// several (`config::resolve_url`'s list), tried in order.
pub struct Client {
    http: reqwest::Client,
    /// The addresses, in the order given; never empty.
    bases: Vec<String>,
    /// The address that took the last request: tried first next time, so
    /// a dead one early in the list costs one failed connect per command.
    answered: AtomicUsize,
    token: Option<String>,
    /// How to start the daemon when its loopback address refuses the
    /// connection (see `autostart`): tried once per client, and only before
    /// any daemon took a connection from it.
    autostart: Option<Plan>,
    autostart_tried: AtomicBool,
}

impl Client {
    /// A client for normal request/answer commands (10 s overall).
    /// `list` is one daemon URL, or several separated by commas.
    pub fn new(list: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::build(list, token, Some(REQUEST_TIMEOUT))
    }

    /// A client for long-lived streams: bounded connect, no overall timeout.
    pub fn streaming(list: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::build(list, token, None)
    }

    fn build(
        list: &str,
        token: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<Self, ClientError> {
        let bases: Vec<String> = config::split_urls(list).map(str::to_string).collect();
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            // The daemon is on loopback or a directly reachable team host; an
            // HTTP_PROXY meant for the internet must not swallow these calls.
            .no_proxy()
            .user_agent(concat!("muster/", env!("CARGO_PKG_VERSION")));
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        if bases.iter().any(|b| crate::tls::is_tls_url(b)) {
            builder = builder
                .use_preconfigured_tls(crate::tls::client_config().map_err(ClientError::Local)?);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::local(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            bases,
            answered: AtomicUsize::new(0),
            token,
            autostart: None,
            autostart_tried: AtomicBool::new(false),
        })
    }

    /// This client starts the daemon by `plan` when nothing listens at its
    /// address (once).
    pub fn with_autostart(mut self, plan: Option<Plan>) -> Self {
        self.autostart = plan;
        self
    }

    /// The address that took the last request (the first, before any).
    pub fn base(&self) -> &str {
        &self.bases[self.answered.load(Ordering::Relaxed)]
    }

    fn request(&self, base: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        // Read at every request, for this address: a daemon restarted since
        // has a new key, and each local daemon has its own.
        if let Some(key) = muster_daemon::local_key::for_url(base) {
            req = req.header(muster_daemon::local_key::HEADER, key);
        }
        req
    }

    /// Sends the request `finish` completes to each address in turn, from
    /// the one that answered last, until one takes the connection. Only a
    /// failed connection moves on: a request a daemon took may have been
    /// acted on (a send stored), so it never goes to another daemon,
    /// whatever came of it.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        finish: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let first = self.answered.load(Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in (0..self.bases.len()).map(|k| (first + k) % self.bases.len()) {
            let base = &self.bases[i];
            match finish(self.request(base, method.clone(), path))
                .send()
                .await
            {
                Err(e) if e.is_connect() => failed.push((base.as_str(), e)),
                taken => {
                    self.answered.store(i, Ordering::Relaxed);
                    // A daemon was there: one that goes away later (`muster
                    // top` rides out restarts) is not started by this client.
                    self.autostart_tried.store(true, Ordering::Relaxed);
                    return taken.map_err(|e| transport_error(base, &e));
                }
            }
        }
        let Some(started) = self.start_daemon(&failed).await else {
            return Err(none_connected(&failed));
        };
        let i = match started {
            Ok(i) => i,
            Err(why) => return Err(with_reason(none_connected(&failed), &why)),
        };
        let base = &self.bases[i];
        match finish(self.request(base, method, path)).send().await {
            Err(e) if e.is_connect() => Err(transport_error(base, &e)),
            taken => {
                self.answered.store(i, Ordering::Relaxed);
                taken.map_err(|e| transport_error(base, &e))
            }
        }
    }

    /// Starts the daemon when the address auto-start serves refused the
    /// connection, once per client: the index of that address once it
    /// answers, or why not. `None` when auto-start does not apply.
    async fn start_daemon(
        &self,
        failed: &[(&str, reqwest::Error)],
    ) -> Option<Result<usize, String>> {
        let plan = self.autostart.clone()?;
        let refused = failed
            .iter()
            .any(|(url, e)| *url == plan.url && is_refused(e));
        if !refused || self.autostart_tried.swap(true, Ordering::Relaxed) {
            return None;
        }
        let i = self.bases.iter().position(|b| *b == plan.url)?;
        let deadline = std::time::Instant::now() + autostart::CLIENT_WAIT;
        let asked = plan.clone();
        let outcome = tokio::task::spawn_blocking(move || asked.ensure(deadline))
            .await
            .unwrap_or_else(|e| Outcome::Failed(format!("starting it failed ({e})")));
        Some(match outcome {
            Outcome::Started { pid } => {
                eprintln!("{}", autostart::started_note(&plan, pid));
                Ok(i)
            }
            Outcome::Running => Ok(i),
            Outcome::Failed(why) => Err(why),
        })
    }

    /// The answer of the address that took the request broke off.
    fn lost(&self, err: &reqwest::Error) -> ClientError {
        transport_error(self.base(), err)
    }

    /// Sends a request and reads a JSON answer, or the error the daemon gave.
    async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        finish: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, path, finish).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.lost(&e))?;
        if !status.is_success() {
            return Err(error_from_answer(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("{status} with a body that is not JSON ({e})"))
        })
    }

    /// GET with query pairs; the answer as raw JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.exchange(reqwest::Method::GET, path, |r| r.query(query))
            .await
    }

    /// POST a JSON body; the answer as raw JSON.
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Value, ClientError> {
        self.exchange(reqwest::Method::POST, path, |r| r.json(body))
            .await
    }

    /// GET a plain-text endpoint such as `/healthz`; any 2xx counts.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.send(reqwest::Method::GET, path, |r| r).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.lost(&e))?;
        if !status.is_success() {
            return Err(error_from_answer(status, &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Opens a streaming GET (server-sent events) and checks its status.
    pub async fn open_stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .send(reqwest::Method::GET, path, |r| {
                r.header(reqwest::header::ACCEPT, "text/event-stream")
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(error_from_answer(status, &bytes));
        }
        Ok(resp)
    }
}

/// Whether nothing listened where `err` tried to connect.
pub fn is_refused(err: &reqwest::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// An unreachable error with what came of starting the daemon added to its reason.
fn with_reason(err: ClientError, why: &str) -> ClientError {
    match err {
        ClientError::Unreachable { url, reason } => ClientError::Unreachable {
            url,
            reason: format!("{reason}; {why}"),
        },
        other => other,
    }
}

/// A transport failure at `url`: untrusted TLS, or unreachable and why.
fn transport_error(url: &str, err: &reqwest::Error) -> ClientError {
    let url = url.to_string();
    match crate::tls::failure(err) {
        Some(reason) => ClientError::Untrusted { url, reason },
        None => ClientError::Unreachable {
            url,
            reason: transport_reason(err),
        },
    }
}

/// Why no address took a request: a TLS failure first (a person must fix
/// it), else every address with its reason, said once when they share it.
fn none_connected(failed: &[(&str, reqwest::Error)]) -> ClientError {
    let errors: Vec<ClientError> = failed
        .iter()
        .map(|(url, e)| transport_error(url, e))
        .collect();
    combine(errors)
}

/// One error for several addresses' failures (see `none_connected`).
fn combine(mut errors: Vec<ClientError>) -> ClientError {
    if let Some(i) = errors
        .iter()
        .position(|e| matches!(e, ClientError::Untrusted { .. }))
    {
        return errors.swap_remove(i);
    }
    let mut failures: Vec<(String, String)> = errors
        .into_iter()
        .filter_map(|e| match e {
            ClientError::Unreachable { url, reason } => Some((url, reason)),
            _ => None,
        })
        .collect();
    if failures.len() == 1 {
        let (url, reason) = failures.remove(0);
        return ClientError::Unreachable { url, reason };
    }
    let urls: Vec<&str> = failures.iter().map(|(u, _)| u.as_str()).collect();
    let reason = if failures.windows(2).all(|w| w[0].1 == w[1].1) {
        failures.first().map(|(_, r)| r.clone()).unwrap_or_default()
    } else {
        let each: Vec<String> = failures.iter().map(|(u, r)| format!("{u}: {r}")).collect();
        each.join("; ")
    };
    ClientError::Unreachable {
        url: either_of(&urls),
        reason,
    }
}

/// `a`, `a or b`, `a, b or c`.
fn either_of(urls: &[&str]) -> String {
    match urls {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Reads a typed answer out of raw JSON, as a protocol error if the shape is wrong.
pub fn decode<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ClientError> {
    serde_json::from_value(value)
        .map_err(|e| ClientError::Protocol(format!("{what} in an unknown shape ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_and_plain_answers_synthesised() {
        // Proves a daemon ErrorBody is kept as is, and a non-JSON error still becomes one with a code.
        let json = br#"{"error":{"code":"unknown_recipient","message":"unknown recipient \"x\"","matches":[{"id":"abc","nickname":"calm-heron","present":true}]}}"#;
        let ClientError::Api { body } = error_from_answer(reqwest::StatusCode::NOT_FOUND, json)
        else {
            panic!()
        };
        assert_eq!(body.error.code, "unknown_recipient");
        assert_eq!(body.error.matches.len(), 1);

        let err = error_from_answer(reqwest::StatusCode::UNAUTHORIZED, b"missing token");
        assert_eq!(err.to_body().error.code, "unauthorized");
        assert!(err.to_string().contains("missing token"));
        assert_eq!(err.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn several_unreachable_daemons_are_named_in_one_error() {
        // Proves a list that no daemon answered is one error naming every
        // address, its reason said once when they share it and per address
        // when not, and that a TLS refusal wins (a person must fix it).
        let down = |url: &str, reason: &str| ClientError::Unreachable {
            url: url.into(),
            reason: reason.into(),
        };
        let err = combine(vec![
            down("http://a:1", "connection refused"),
            down("http://b:2", "connection refused"),
            down("http://c:3", "connection refused"),
        ]);
        assert_eq!(
            err.to_string(),
            "cannot reach the muster daemon at http://a:1, http://b:2 or http://c:3 (connection refused); start it with `muster serve`"
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        let err = combine(vec![
            down("http://a:1", "connection refused"),
            down("http://b:2", "timed out"),
        ]);
        assert_eq!(
            err.to_string(),
            "cannot reach the muster daemon at http://a:1 or http://b:2 (http://a:1: connection refused; http://b:2: timed out); start it with `muster serve`"
        );
        let one = combine(vec![down("http://a:1", "connection refused")]);
        assert_eq!(
            one.to_string(),
            down("http://a:1", "connection refused").to_string()
        );
        let tls = combine(vec![
            down("http://a:1", "connection refused"),
            ClientError::Untrusted {
                url: "https://b:2".into(),
                reason: "its certificate is not trusted".into(),
            },
        ]);
        assert_eq!(
            tls.to_string(),
            "cannot reach the muster daemon at https://b:2 securely: its certificate is not trusted"
        );
    }

    #[test]
    fn unreachable_names_the_url_and_the_fix() {
        // Proves the unreachable message tells the URL, the reason and `muster serve`, with exit code 3.
        let err = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach the muster daemon at http://127.0.0.1:1 (connection refused); start it with `muster serve`"
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(err.to_body().error.code, "daemon_unreachable");
    }
}
