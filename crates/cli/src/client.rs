//! The HTTP client the CLI commands share, and the errors they end with.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use muster_core::api::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

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

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for normal request/answer commands (10 s overall).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::build(base, token, Some(REQUEST_TIMEOUT))
    }

    /// A client for long-lived streams: bounded connect, no overall timeout.
    pub fn streaming(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::build(base, token, None)
    }

    fn build(
        base: &str,
        token: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<Self, ClientError> {
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
        if crate::tls::is_tls_url(base) {
            builder = builder
                .use_preconfigured_tls(crate::tls::client_config().map_err(ClientError::Local)?);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::local(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: base.to_string(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        // Read at every request: a daemon restarted since has a new key.
        if let Some(key) = muster_daemon::local_key::for_url(&self.base) {
            req = req.header(muster_daemon::local_key::HEADER, key);
        }
        req
    }

    fn unreachable(&self, err: &reqwest::Error) -> ClientError {
        let url = self.base.clone();
        match crate::tls::failure(err) {
            Some(reason) => ClientError::Untrusted { url, reason },
            None => ClientError::Unreachable {
                url,
                reason: transport_reason(err),
            },
        }
    }

    /// Sends a request and reads a JSON answer, or the error the daemon gave.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(error_from_answer(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("{status} with a body that is not JSON ({e})"))
        })
    }

    /// GET with query pairs; the answer as raw JSON.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.exchange(self.request(reqwest::Method::GET, path).query(query))
            .await
    }

    /// POST a JSON body; the answer as raw JSON.
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Value, ClientError> {
        self.exchange(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// GET a plain-text endpoint such as `/healthz`; any 2xx counts.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(error_from_answer(status, &bytes));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Opens a streaming GET (server-sent events) and checks its status.
    pub async fn open_stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(error_from_answer(status, &bytes));
        }
        Ok(resp)
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
