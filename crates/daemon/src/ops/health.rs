//! `/healthz`: `200 ok` while the store writes; `503` with one line saying
//! why while its most recent write failed (the daemon still serves, but
//! nothing new can be stored), back to `200` once a write succeeds again.
//! Reads two atomics and, when degraded, one small lock: cheap enough to
//! poll.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_store::health::WriteHealth;

use crate::hub::Hub;

/// The one-line reason the daemon is degraded, or `None` when it is not:
/// "degraded: the store cannot write: database or disk is full (since 12 s)".
pub fn degraded_reason(store: &WriteHealth) -> Option<String> {
    let fault = store.fault()?;
    let reason = fault.reason.lines().next().unwrap_or_default();
    Some(format!(
        "degraded: the store cannot write: {reason} (since {} s)",
        fault.for_how_long().as_secs()
    ))
}

pub async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match degraded_reason(hub.metrics.store()) {
        None => (StatusCode::OK, plain, "ok\n".to_string()).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            format!("{reason}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_store::health::FaultKind;

    // Proves the reason is one line naming the store's own words and how
    // long it has lasted, and that there is none once a write succeeds.
    #[test]
    fn the_reason_is_one_line_while_degraded_and_none_after() {
        let h = WriteHealth::new();
        assert_eq!(degraded_reason(&h), None);
        h.failed(FaultKind::Full, "database or disk is full\nmore detail", 1);
        assert_eq!(
            degraded_reason(&h).as_deref(),
            Some("degraded: the store cannot write: database or disk is full (since 0 s)")
        );
        h.wrote();
        assert_eq!(degraded_reason(&h), None);
    }
}
