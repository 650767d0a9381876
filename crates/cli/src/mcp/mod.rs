//! `muster mcp`: the per-session stdio MCP server a harness launches. It
//! links to the daemon for its session, offers muster's tools, and writes
//! inbound mail to the harness as `notifications/claude/channel` — only
//! after the client has finished a handshake (`initialize` + `initialized`,
//! or the 2026-07-28 `server/discover`), and reporting each one delivered only
//! once it was written out. It exits when stdin closes or its parent dies.

mod link;
mod stdio;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use muster_core::api::{ErrorDetail, RegisterRequest};
use muster_core::link::{JsonText, Op};
use muster_core::protocol::Harness;
use muster_core::Message;
use muster_mcp::{channel_line, CallContext, Executor, McpServer};
use rmcp::ServiceExt;

use self::link::Link;

/// Runs a tool's operation over the link.
struct LinkExecutor {
    link: Link,
    /// The harness names the session on each call.
    per_call: bool,
}

impl Executor for LinkExecutor {
    async fn execute(&self, op: Op, call: CallContext) -> Result<JsonText, ErrorDetail> {
        // A per-call link acts for the session the harness named: Codex's
        // `_meta.sessionId`, or the `_session_id` muster's plugin/hook adds.
        let session = if self.per_call {
            call.meta_session.or(call.arg_session)
        } else {
            None
        };
        self.link.request(op, session).await
    }
}

/// Where the shim learns everything it needs from its environment.
pub struct ShimEnv {
    pub url: String,
    pub session_id: Option<String>,
    pub operator: String,
    pub host: String,
    pub harness: String,
    /// `MUSTER_CHANNELS=off` says the harness does not show channel pushes.
    pub channels: bool,
    /// The daemon's bearer token, when it requires one (`MUSTER_TOKEN` or
    /// the config file's `token`).
    pub token: Option<String>,
    /// How to start the daemon if nothing listens at its loopback address
    /// when the shim first links (see `autostart`).
    pub autostart: Option<crate::autostart::Plan>,
}

impl ShimEnv {
    pub fn from_process(url: String, operator: String, host: String) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        ShimEnv {
            autostart: crate::autostart::Plan::for_client(
                &url,
                &crate::config::Env::from_process(),
            ),
            url,
            session_id: var("MUSTER_SESSION_ID").or_else(|| var("CLAUDE_CODE_SESSION_ID")),
            operator,
            host,
            harness: var("MUSTER_HARNESS").unwrap_or_else(|| "claude".into()),
            channels: match var("MUSTER_CHANNELS").as_deref() {
                Some("off" | "0" | "false" | "no") => false,
                Some(_) => true,
                None => parent_shows_channels(),
            },
            token: None,
        }
    }
}

/// Whether the process that started us shows muster's channel: Claude Code
/// displays `notifications/claude/channel` only when launched with
/// `--channels …` or `--dangerously-load-development-channels …` naming this
/// server, and says nothing of it in the MCP handshake, so we read its
/// command line. When in doubt, no: mail then reaches the agent through its
/// hooks instead of being pushed where nobody sees it.
fn parent_shows_channels() -> bool {
    let parent = std::os::unix::process::parent_id();
    parent_args(parent).is_some_and(|args| names_muster_channel(&args))
}

/// A process's command line: from /proc on Linux.
#[cfg(target_os = "linux")]
fn parent_args(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// A process's command line: from `ps` where there is no /proc (macOS,
/// the BSDs). Split at spaces, which the flags looked for never contain.
#[cfg(not(target_os = "linux"))]
fn parent_args(pid: u32) -> Option<Vec<String>> {
    let out = std::process::Command::new("ps")
        .args(["-ww", "-o", "command=", "-p", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    })
}

/// Whether a command line turns on a channel naming muster.
fn names_muster_channel(args: &[String]) -> bool {
    const FLAGS: [&str; 2] = ["--channels", "--dangerously-load-development-channels"];
    args.iter().enumerate().any(|(i, arg)| {
        let value = FLAGS.iter().find_map(|flag| {
            if arg == flag {
                args.get(i + 1).map(String::as_str)
            } else {
                arg.strip_prefix(flag)
                    .and_then(|rest| rest.strip_prefix('='))
            }
        });
        value.is_some_and(|v| v.contains("muster"))
    })
}

/// `http://host:port` → `ws://host:port/ws`.
pub fn ws_url(url: &str) -> anyhow::Result<String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = url.strip_prefix("https://") {
        format!("wss://{r}")
    } else {
        bail!("the daemon URL {url:?} must start with http://");
    };
    Ok(format!("{}/ws", rest.trim_end_matches('/')))
}

/// Runs the shim until the client closes stdin or the parent process dies,
/// whichever comes first (even before the client has initialized).
pub async fn run(env: ShimEnv) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    tokio::select! {
        served = serve(env, parent) => served,
        _ = parent_died(parent) => {
            tracing::info!("parent process {parent} is gone; exiting");
            Ok(())
        }
    }
}

async fn serve(env: ShimEnv, parent: u32) -> anyhow::Result<()> {
    // A harness whose MCP server is told the session on each call, not at start.
    let per_call = env.session_id.is_none()
        && Harness::parse(&env.harness).is_some_and(Harness::names_session_per_call);
    let session_id = match env.session_id {
        Some(id) => {
            muster_core::validate::session_id(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            id
        }
        None if per_call => String::new(),
        None => bail!(
            "muster mcp needs to know its session: set MUSTER_SESSION_ID (Claude Code sets \
             CLAUDE_CODE_SESSION_ID for the servers it starts), or MUSTER_HARNESS=codex|opencode|gemini \
             for a harness that names the session on each call. No id is invented."
        ),
    };
    let session = RegisterRequest {
        id: session_id,
        harness: Some(env.harness),
        host: Some(env.host),
        operator: Some(env.operator),
        pid: Some(parent),
        cwd: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        ..RegisterRequest::default()
    };
    // Per-call harnesses cannot show channel pushes; their mail comes by hooks.
    // Nothing is pushed until the MCP client has finished a handshake.
    let hello = link::Hello {
        session,
        can_push: false,
        wants_push: env.channels && !per_call,
        per_call,
    };
    let ws_urls = crate::config::split_urls(&env.url)
        .map(ws_url)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (link, pushes) = Link::start(ws_urls, env.token, hello.clone(), env.autostart);
    let mut server = McpServer::new(Arc::new(LinkExecutor {
        link: link.clone(),
        per_call,
    }));
    if hello.wants_push {
        // The only connection on which today's Claude Code shows pushes.
        server = server.legacy_only();
    }
    // The client's stdio passes through a guard that answers malformed
    // lines itself; the MCP server sees only JSON-RPC messages.
    // Tool calls from a client past the classic handshake skip rmcp's
    // service loop (muster-mcp's quick path); everything else goes to rmcp.
    let quick = server.clone();
    let transport = stdio::StdioTransport::new(stdio::stdin(), stdio::stdout()).with_quick_path(
        Box::new(move |line| {
            quick
                .quick_call(line)
                .map(|answer| Box::pin(answer) as stdio::QuickAnswer)
        }),
    );
    // Pushes are written straight to the output, not through rmcp's
    // service loop (the same line; three task hand-offs fewer per push).
    let output = transport.output();
    let service = server
        .clone()
        .serve(transport)
        .await
        .context("the MCP client did not initialize")?;
    // rmcp returns once the lifecycle is chosen. With `initialize` the client
    // still owes `notifications/initialized` (the handler records it); with
    // the 2026-07-28 revision there is no peer info and nothing more to wait for.
    if service.peer().peer_info().is_none() {
        server.mark_ready(service.peer().clone());
    }

    // Pushes wait until the client has finished a handshake (either
    // revision's), then the daemon is told and they go out in order.
    let pusher = tokio::spawn(push_when_ready(server, link, pushes, output));

    let reason = service.waiting().await;
    tracing::info!("MCP client closed ({reason:?}); exiting");
    pusher.abort();
    Ok(())
}

/// Writes the daemon's pushes to the client once it can take them, telling
/// the daemon it is ready first and which pushes were written after.
async fn push_when_ready<W: tokio::io::AsyncWrite + Unpin>(
    server: McpServer<LinkExecutor>,
    link: Link,
    mut pushes: tokio::sync::mpsc::Receiver<Message>,
    output: stdio::Output<W>,
) {
    let Some(peer) = server.ready().await else {
        return;
    };
    if is_claude_code(&peer) {
        // Claude Code 2.1.332 registers its channel handler some 20 ms
        // after it has its tool list; a push before that is dropped
        // without a trace, so the daemon hears "ready" only after it.
        let _ = tokio::time::timeout(Duration::from_secs(2), server.tools_listed()).await;
        tokio::time::sleep(CLAUDE_CHANNEL_SETTLE).await;
    }
    link.ready().await;
    while let Some(message) = pushes.recv().await {
        match output.send_line(&channel_line(&message)).await {
            Ok(()) => link.delivered(vec![message.id]).await,
            Err(e) => {
                tracing::warn!("could not write a push to the client: {e}");
                return;
            }
        }
    }
}

/// How long after Claude Code's `tools/list` its channel handler is surely
/// listening (measured: 16–20 ms).
const CLAUDE_CHANNEL_SETTLE: Duration = Duration::from_millis(250);

/// Whether the MCP client introduced itself as Claude Code (classic
/// handshake; the 2026-07-28 one carries no client info here, and on it
/// Claude Code shows no pushes anyway).
fn is_claude_code(peer: &rmcp::service::Peer<rmcp::RoleServer>) -> bool {
    peer.peer_info()
        .is_some_and(|info| info.client_info.name == "claude-code")
}

/// Resolves when the process that started us has exited (we are re-parented).
async fn parent_died(parent: u32) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_flags_naming_muster_turn_pushes_on() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(names_muster_channel(&args(&[
            "claude",
            "--dangerously-load-development-channels",
            "server:muster"
        ])));
        assert!(names_muster_channel(&args(&[
            "claude",
            "--channels=plugin:muster@local"
        ])));
        assert!(!names_muster_channel(&args(&[
            "claude",
            "--channels",
            "plugin:other@x"
        ])));
        assert!(!names_muster_channel(&args(&[
            "claude",
            "-p",
            "talk to muster"
        ])));
        assert!(!names_muster_channel(&args(&["claude", "--channels"])));
    }

    #[test]
    fn ws_url_from_http() {
        assert_eq!(
            ws_url("http://127.0.0.1:7420").unwrap(),
            "ws://127.0.0.1:7420/ws"
        );
        assert_eq!(
            ws_url("http://localhost:1/").unwrap(),
            "ws://localhost:1/ws"
        );
        assert!(ws_url("ftp://x").is_err());
    }
}
