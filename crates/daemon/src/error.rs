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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            matches: Vec::new(),
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
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store error: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("nothing was stored: {e}"),
        )
    }
}

impl ApiError {
    pub fn detail(self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_string(),
            message: self.message,
            matches: self.matches,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (
            status,
            Json(ErrorBody {
                error: self.detail(),
            }),
        )
            .into_response()
    }
}
