//! muster's MCP server, shared by the stdio shim (`muster mcp`) and the
//! daemon's `/mcp` route: the tool list, argument checking, who a call says
//! it comes from ([`CallContext`]), the handshake tracking pushes wait for,
//! and the `claude/channel` push. What a tool call does is left to an
//! [`Executor`]: the shim forwards it over its link, `/mcp` runs it in the
//! daemon. No transport lives here; each user brings its own.

use std::future::Future;
use std::sync::Arc;

mod quick;

use muster_core::api::ErrorDetail;
use muster_core::link::{JsonText, Op};
use muster_core::tools::{self, INSTRUCTIONS, TOOLS};
use muster_core::validate::clean_peer_text;
use muster_core::{inbox::format_utc, Message};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomNotification,
    DiscoverRequestMethod, DiscoverResult, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, ServerNotification, Tool,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;
use tokio::sync::watch;

/// The method Claude Code shows as a `<channel>` in the model's context.
pub const CHANNEL_METHOD: &str = "notifications/claude/channel";

/// Who a tool call says it comes from, by each route a harness may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// `X-Muster-Session` header of an HTTP MCP request.
    pub session_header: Option<String>,
    /// `params._meta.sessionId` (Codex puts its session there).
    pub meta_session: Option<String>,
    /// A `_session_id` argument (added by muster's opencode plugin and Gemini hook).
    pub arg_session: Option<String>,
    /// The token an HTTP MCP request came with, as the daemon's guard
    /// found it (never anything the request says of itself).
    pub grant: Option<muster_core::token::Grant>,
}

impl CallContext {
    fn of(request: &CallToolRequestParams, context: &RequestContext<RoleServer>) -> Self {
        let parts = context.extensions.get::<http::request::Parts>();
        let header = parts
            .and_then(|p| p.headers.get("x-muster-session"))
            .and_then(|v| v.to_str().ok());
        let empty = JsonObject::new();
        let mut call = CallContext::from_fields(
            header,
            request.meta.as_ref().map(|m| &m.0 .0),
            request.arguments.as_ref().unwrap_or(&empty),
        );
        if call.meta_session.is_none() {
            call.meta_session = text(context.meta.0 .0.get("sessionId"));
        }
        call.grant = parts.and_then(|p| p.extensions.get::<muster_core::token::Grant>().cloned());
        call
    }

    /// From a call's parts: the `X-Muster-Session` header, `params._meta`
    /// and the arguments.
    pub fn from_fields(header: Option<&str>, meta: Option<&JsonObject>, args: &JsonObject) -> Self {
        CallContext {
            session_header: header.map(str::to_string).filter(|s| !s.is_empty()),
            meta_session: text(meta.and_then(|m| m.get("sessionId"))),
            arg_session: text(args.get("_session_id")),
            grant: None,
        }
    }
}

/// A non-empty string field.
fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

/// Runs a tool's operation for the session a call belongs to.
pub trait Executor: Send + Sync + 'static {
    fn execute(
        &self,
        op: Op,
        call: CallContext,
    ) -> impl Future<Output = Result<JsonText, ErrorDetail>> + Send;
}

pub struct McpServer<E> {
    executor: Arc<E>,
    /// Refuse the 2026-07-28 `server/discover`, so the client opens with a
    /// classic `initialize`: Claude Code 2.1.332 delivers channel pushes only
    /// on such a connection ("a modern protocol revision has no unsolicited
    /// notification path"), so a shim that means to push must ask for it.
    legacy_only: bool,
    /// Set once the client has finished either handshake: the classic
    /// `notifications/initialized`, or the 2026-07-28 `server/discover`
    /// (current Claude Code sends no initialize at all).
    peer: watch::Sender<Option<Peer<RoleServer>>>,
    /// Set once a `tools/list` has been answered.
    listed: watch::Sender<bool>,
}

impl<E> Clone for McpServer<E> {
    fn clone(&self) -> Self {
        McpServer {
            executor: self.executor.clone(),
            legacy_only: self.legacy_only,
            peer: self.peer.clone(),
            listed: self.listed.clone(),
        }
    }
}

impl<E: Executor> McpServer<E> {
    pub fn new(executor: Arc<E>) -> Self {
        McpServer {
            executor,
            legacy_only: false,
            peer: watch::channel(None).0,
            listed: watch::channel(false).0,
        }
    }

    /// A server that answers `server/discover` with "method not found", so
    /// clients fall back to `initialize` (see `legacy_only`).
    pub fn legacy_only(mut self) -> Self {
        self.legacy_only = true;
        self
    }

    /// Records that the client finished the 2026-07-28 handshake (its first
    /// request with inline metadata after `server/discover`): no
    /// `initialized` will come, and notifications can go out now.
    pub fn mark_ready(&self, peer: Peer<RoleServer>) {
        self.peer.send_replace(Some(peer));
    }

    /// Resolves once the client has asked for the tool list (the last step
    /// of Claude Code's start-up before it listens for channel pushes).
    pub async fn tools_listed(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    /// Resolves to the client's peer once it has completed a handshake;
    /// pushes wait for this so none is sent before the client can take it.
    pub async fn ready(&self) -> Option<Peer<RoleServer>> {
        let mut rx = self.peer.subscribe();
        let peer = rx.wait_for(Option::is_some).await.ok()?;
        peer.clone()
    }
}

impl<E: Executor> McpServer<E> {
    /// Runs one tool call (rmcp's `call_tool`). Unknown tools and wrong
    /// argument types are protocol errors: the call never ran. Failures of
    /// a call that ran are tool errors the agent can read.
    pub async fn run_tool(
        &self,
        name: &str,
        args: &JsonObject,
        call: CallContext,
    ) -> Result<CallToolResult, McpError> {
        Ok(match self.run_call(name, args, call).await? {
            ToolOutcome::Answer(value) => text_result(&value),
            ToolOutcome::Failed(text) => CallToolResult::error(vec![ContentBlock::text(text)]),
        })
    }

    /// Runs one tool call, its outcome as text (the shim's quick path
    /// writes it without building rmcp's result types).
    pub async fn run_call(
        &self,
        name: &str,
        args: &JsonObject,
        call: CallContext,
    ) -> Result<ToolOutcome, McpError> {
        let op = tools::parse_call(name, args)
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        Ok(match self.executor.execute(op, call).await {
            Ok(value) => ToolOutcome::Answer(value),
            Err(e) => {
                let mut text = e.message;
                for m in &e.matches {
                    text.push_str(&format!("\n- {m}"));
                }
                ToolOutcome::Failed(text)
            }
        })
    }
}

/// What a tool call that ran came to: its answer (compact JSON), or why it
/// failed, in words for the agent.
pub enum ToolOutcome {
    Answer(JsonText),
    Failed(String),
}

/// The tool list as MCP describes it.
pub fn tool_list() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|t| {
            let schema: JsonObject = match (t.schema)() {
                Value::Object(map) => map,
                _ => JsonObject::new(),
            };
            Tool::new_with_raw(t.name, Some(t.description.into()), schema)
        })
        .collect()
}

/// A tool's answer as compact JSON: every byte lands in the agent's context.
fn text_result(value: &JsonText) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value.as_str())])
}

impl<E: Executor> ServerHandler for McpServer<E> {
    fn get_info(&self) -> ServerConfig {
        let mut experimental = std::collections::BTreeMap::new();
        experimental.insert("claude/channel".to_string(), JsonObject::new());
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_experimental_with(experimental)
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("muster", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.listed.send_replace(true);
        Ok(ListToolsResult::with_all_items(tool_list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let call = CallContext::of(&request, &context);
        let args = request.arguments.unwrap_or_default();
        Ok(self.run_tool(&request.name, &args, call).await?.into())
    }

    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, McpError> {
        if self.legacy_only {
            return Err(McpError::method_not_found::<DiscoverRequestMethod>());
        }
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // send_replace stores the value even when nobody is subscribed yet.
        self.peer.send_replace(Some(context.peer.clone()));
    }
}

/// The channel notification for one message: the body (escaped peer text)
/// as content, and string-only meta whose keys are letters, digits and `_`.
pub fn channel_params(m: &Message) -> Value {
    serde_json::to_value(ChannelParams::of(m)).unwrap_or(Value::Null)
}

/// The whole `claude/channel` notification line for one message (newline
/// included), the bytes rmcp writes for [`channel_params`] but written
/// straight from the message: a push is the shim's most frequent write,
/// and building rmcp's notification and a JSON tree first cost it about a
/// quarter of its instructions per push (callgrind).
pub fn channel_line(m: &Message) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        jsonrpc: &'static str,
        method: &'static str,
        params: ChannelParams<'a>,
    }
    let line = Line {
        jsonrpc: "2.0",
        method: CHANNEL_METHOD,
        params: ChannelParams::of(m),
    };
    // Only strings and string-keyed structs: serializing cannot fail.
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// What a channel notification carries, in the order it is written.
#[derive(serde::Serialize)]
struct ChannelParams<'a> {
    content: String,
    meta: ChannelMeta<'a>,
}

#[derive(serde::Serialize)]
struct ChannelMeta<'a> {
    message_id: &'a str,
    from: &'a str,
    from_nickname: String,
    kind: &'static str,
    sent_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spoken_for: Option<&'static str>,
    /// Claude Code's own SendMessage reaches only Claude Code sessions; a
    /// reply through it would never reach a muster peer.
    reply_with: &'static str,
}

impl<'a> ChannelParams<'a> {
    fn of(m: &'a Message) -> Self {
        ChannelParams {
            content: clean_peer_text(&m.body),
            meta: ChannelMeta {
                message_id: &m.id,
                from: &m.from,
                from_nickname: clean_peer_text(&m.from_nickname),
                kind: m.to.kind(),
                sent_at: format_utc(m.sent_at),
                reply_to: m.reply_to.as_deref(),
                spoken_for: muster_core::inbox::spoken_for(m.via),
                reply_with: "muster send_message",
            },
        }
    }
}

/// Writes one message to the client as a `claude/channel` notification;
/// returns once the transport has taken it.
pub async fn push_channel(peer: &Peer<RoleServer>, m: &Message) -> Result<(), ServiceError> {
    let notification = CustomNotification::new(CHANNEL_METHOD, Some(channel_params(m)));
    peer.send_notification(ServerNotification::CustomNotification(notification))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Target;

    #[test]
    fn channel_meta_is_strings_with_plain_keys() {
        let m = Message {
            id: "01ABC".into(),
            from: "s-1".into(),
            from_nickname: "swift-otter".into(),
            to: Target::Session("s-2".into()),
            reply_to: Some("01AAA".into()),
            body: "look at <this>\u{202E}".into(),
            sent_at: 0,
            via: Default::default(),
        };
        let p = channel_params(&m);
        assert_eq!(p["content"], "look at &lt;this&gt;");
        for (k, v) in p["meta"].as_object().unwrap() {
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{k}"
            );
            assert!(v.is_string(), "{k}");
        }
    }

    #[test]
    fn the_channel_line_is_what_rmcp_writes_for_the_notification() {
        // Proves the shim's direct push line is byte for byte the line rmcp
        // writes for the same notification, with and without the optional
        // meta (a reply, mail spoken for an agent), escapes included.
        let mut m = Message {
            id: "01ABC".into(),
            from: "s-1".into(),
            from_nickname: "swift-otter".into(),
            to: Target::Session("s-2".into()),
            reply_to: None,
            body: "line one\nsaid \"hi\" <b>\u{202E}\t\u{1F600}".into(),
            sent_at: 1_764_000_000_123,
            via: Default::default(),
        };
        let rmcp_line = |m: &Message| {
            let notification =
                rmcp::model::CustomNotification::new(CHANNEL_METHOD, Some(channel_params(m)));
            let message = rmcp::service::TxJsonRpcMessage::<RoleServer>::notification(
                rmcp::model::ServerNotification::CustomNotification(notification),
            );
            let mut line = serde_json::to_vec(&message).unwrap();
            line.push(b'\n');
            String::from_utf8(line).unwrap()
        };
        let plain = String::from_utf8(channel_line(&m)).unwrap();
        assert_eq!(plain, rmcp_line(&m));
        assert!(!plain.contains("reply_to") && !plain.contains("spoken_for"));
        m.reply_to = Some("01AAA".into());
        m.to = Target::Room("general".into());
        m.via = muster_core::SentVia::OnBehalf;
        let full = String::from_utf8(channel_line(&m)).unwrap();
        assert_eq!(full, rmcp_line(&m));
        let v: Value = serde_json::from_str(&full).unwrap();
        assert_eq!(v["params"]["meta"]["reply_to"], "01AAA");
        assert_eq!(v["params"]["meta"]["kind"], "room");
        assert_eq!(full.matches('\n').count(), 1, "one line");
    }

    #[test]
    fn every_tool_is_listed_with_an_object_schema() {
        let tools = tool_list();
        assert_eq!(tools.len(), TOOLS.len());
        assert!(tools
            .iter()
            .all(|t| t.input_schema.get("type") == Some(&serde_json::json!("object"))));
    }
}
