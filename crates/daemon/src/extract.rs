//! Request extractors whose every failure is a JSON 4xx (`ApiError`), for
//! the JSON API and the hooks alike.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body whose every failure is a clear JSON 4xx: not sent as
/// `Content-Type: application/json` (415), too large, not UTF-8, empty,
/// malformed or of the wrong shape.
pub struct ApiJson<T>(pub T);

/// Refuses (415) a body not sent as `Content-Type: application/json`
/// (parameters such as `charset` allowed). A web page can send `text/plain`,
/// form or multipart bodies anywhere without asking; JSON only after a
/// preflight the daemon refuses.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::CONTENT_TYPE);
    let essence = given
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    if essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json")) {
        return Ok(());
    }
    let got = match given {
        Some(v) => format!("Content-Type {:?}", String::from_utf8_lossy(v.as_bytes())),
        None => "no Content-Type".to_string(),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "the request body must be sent as Content-Type: application/json (this one has {got})"
        ),
    ))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        // A body trickled in a byte at a time holds its connection no longer than this.
        let limit = std::time::Duration::from_millis(muster_core::limits::BODY_READ_TIMEOUT_MS);
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        limit.as_secs()
                    ),
                )
            })?;
        let bytes = read.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(inner)
                if inner.to_string().contains("length limit")
                    || inner.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is over the size limit",
                )
            }
            other => ApiError::new(other.status(), "bad_body", other.body_text()),
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; a JSON object is expected",
        ));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ApiError::bad_request(format!(
            "the request body is not valid UTF-8 ({e})"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_data() {
            "has the wrong shape"
        } else {
            "is not valid JSON"
        };
        ApiError::bad_request(format!("the request body {what}: {e}"))
    })
}

/// Query parameters whose parse failures are JSON 4xx too.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(query).map(ApiQuery)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::bad_request("bad query"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::bad_request(format!("bad query parameters: {}", e.body_text())))
}
