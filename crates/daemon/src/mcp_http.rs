//! `/mcp`: muster's MCP server over Streamable HTTP, for harnesses that
//! connect to an HTTP MCP server directly. Tool calls run in the daemon for
//! the session the request names; such a session is hook-only (no link), so
//! each call also counts as seeing it.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use muster_core::api::ErrorDetail;
use muster_core::link::{JsonText, Op};
use muster_mcp::{CallContext, Executor, McpServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::error::ApiError;
use crate::hub::{Hub, Observed};

/// Runs calls in the hub for the session the request names. One executor
/// serves one MCP session, which is bound to the first muster session it
/// acts for: it can never act for another.
pub struct HubExecutor {
    hub: Arc<Hub>,
    bound: Mutex<Option<String>>,
}

impl Executor for HubExecutor {
    async fn execute(&self, op: Op, call: CallContext) -> Result<JsonText, ErrorDetail> {
        self.run(op, call).await.map_err(ApiError::detail)
    }
}

impl HubExecutor {
    /// The session this call acts for: the one named, if this MCP session
    /// is not yet bound to another.
    fn bind(&self, named: String) -> Result<String, ApiError> {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        match bound.as_deref() {
            Some(id) if id != named => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_session",
                format!("this MCP session speaks for session {id}, not {named}"),
            )),
            Some(_) => Ok(named),
            None => {
                *bound = Some(named.clone());
                Ok(named)
            }
        }
    }

    async fn run(&self, op: Op, call: CallContext) -> Result<JsonText, ApiError> {
        let hub = &self.hub;
        let Some(named) = call
            .session_header
            .or(call.meta_session)
            .or(call.arg_session)
        else {
            return Err(ApiError::bad_request(
                "this call names no session: send the X-Muster-Session header (or _meta.sessionId) with your session id",
            ));
        };
        if hub.lock().session(&named).is_none() {
            return Err(muster_core::CoreError::UnknownSession(named).into());
        }
        hub.authorize_session(call.grant.as_ref(), &named)?;
        let session = self.bind(named)?;
        hub.observe(Observed {
            id: session.clone(),
            by: call.grant.clone(),
            ..Observed::default()
        })
        .await?;
        let (value, surfacing) = hub.execute(&session, muster_core::SentVia::Mcp, op).await?;
        // The answer is handed to rmcp here; there is no later point to hook.
        if let Some(s) = surfacing {
            s.complete();
        }
        Ok(value)
    }
}

/// The `/mcp` service, to nest in the router.
pub fn service(
    hub: Arc<Hub>,
) -> StreamableHttpService<McpServer<HubExecutor>, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default();
    config.max_request_body_bytes = hub.config.max_request_bytes;
    // Host and Origin are checked by the router's guard for every route,
    // with the token rules; rmcp's own loopback list would refuse a daemon
    // bound beyond loopback with a token.
    config = config.disable_allowed_hosts();
    config.cancellation_token = hub.shutdown.child_token();
    // A fresh executor (and so a fresh binding) for every MCP session.
    let factory = move || {
        Ok(McpServer::new(Arc::new(HubExecutor {
            hub: hub.clone(),
            bound: Mutex::new(None),
        })))
    };
    StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config)
}
