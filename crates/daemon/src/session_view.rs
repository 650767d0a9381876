//! `GET /api/v1/sessions/{id}`: one session (by id, nickname or unique id
//! prefix, whether on the roster or gone) with its latest changes of
//! activity, which the roster keeps in memory (`SessionEntry::recent_activity`):
//! the dashboard's page of a session.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use muster_core::api::SessionView;
use muster_core::CoreError;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::state::Principal;

pub(crate) async fn session(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let st = hub.lock();
    let unknown = || ApiError::from(CoreError::UnknownSession(id.clone()));
    if id.trim().starts_with("op:") {
        return Err(unknown());
    }
    let Principal::Session(found) = st.principal(Some(&id), &hub.config.operator)? else {
        return Err(unknown());
    };
    let entry = st.entry(&found).ok_or_else(unknown)?;
    Ok(Json(SessionView {
        session: entry.session().clone(),
        activity: entry.recent_activity(),
    }))
}
