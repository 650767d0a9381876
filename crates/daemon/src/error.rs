//! Errors as the API answers them: a status and an `ErrorBody`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use muster_core::api::{ErrorBody, ErrorDetail};
use muster_core::{CoreError, Match};
use muster_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub matches: Vec<Match>,
    /// When a refused request may be tried again (a 429), in ms.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            matches: Vec::new(),
            retry_after_ms: None,
        }
    }

    /// 429: over a rate limit; `Retry-After` and `retry_after_ms` say when
    /// one more will be taken.
    pub fn rate_limited(what: impl std::fmt::Display, retry_after_ms: u64) -> Self {
        ApiError {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("{what}; retry in {retry_after_ms} ms"),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::UnknownRecipient { .. }
            | CoreError::UnknownSession(_)
            | CoreError::UnknownRoom { .. } => StatusCode::NOT_FOUND,
            CoreError::AmbiguousRecipient { .. } => StatusCode::CONFLICT,
            CoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
        };
        let matches = match &e {
            CoreError::UnknownRecipient { close, .. } => close.clone(),
            CoreError::AmbiguousRecipient { matches, .. } => matches.clone(),
            _ => Vec::new(),
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
            matches,
            retry_after_ms: None,
        }
    }
}

/// The code of a refusal because another daemon sharing the store decided
/// first (a nickname, a reservation); the daemon decides again before it
/// answers with it.
pub const DECIDED_ELSEWHERE: &str = "decided_elsewhere";

/// A decision another daemon won is made again at most this many times.
pub const DECIDE_AGAIN: usize = 5;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Conflict(what) = &e {
            return Self::new(
                StatusCode::CONFLICT,
                DECIDED_ELSEWHERE,
                format!("another muster daemon decided first ({what}); try again"),
            );
        }
        tracing::error!("store error: {e}");
        Self::store_unavailable(format!("nothing was stored: {e}"))
    }
}

impl ApiError {
    /// A read of the store that failed. Unlike a failed write (the
    /// [`From`] above), nothing was asked to be stored, so the answer says
    /// the read failed rather than "nothing was stored".
    pub fn unread(e: StoreError) -> Self {
        tracing::error!("store read error: {e}");
        Self::store_unavailable(format!("could not read the store: {e}"))
    }

    fn store_unavailable(message: String) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }

    /// Whether another daemon decided first (see [`DECIDED_ELSEWHERE`]).
    pub fn decided_elsewhere(&self) -> bool {
        self.code == DECIDED_ELSEWHERE
    }

    pub fn detail(self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_string(),
            message: self.message,
            matches: self.matches,
        }
    }
}

/// On a 429 response: when the client may try again, in ms (the guard
/// holds the answer that long, at most `RATE_LIMITED_HOLD_MS`).
#[derive(Debug, Clone, Copy)]
pub struct RetryAfter(pub u64);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let Some(retry_ms) = self.retry_after_ms else {
            return (
                status,
                Json(ErrorBody {
                    error: self.detail(),
                }),
            )
                .into_response();
        };
        // The error shape every answer has, plus when to come back: whole
        // seconds in the header (rounded up), exact in the body.
        let mut body = serde_json::to_value(ErrorBody {
            error: self.detail(),
        })
        .unwrap_or_default();
        body["error"]["retry_after_ms"] = retry_ms.into();
        let secs = retry_ms.div_ceil(1_000).max(1);
        let mut response = (
            status,
            [(axum::http::header::RETRY_AFTER, secs.to_string())],
            Json(body),
        )
            .into_response();
        response.extensions_mut().insert(RetryAfter(retry_ms));
        response
    }
}
