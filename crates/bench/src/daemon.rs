//! An in-process daemon on a loopback port with a throwaway data directory.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::StatusCode;
use muster_daemon::{Config, Daemon};
use serde_json::json;
use tempfile::TempDir;

use crate::http::{snippet, Conn};

pub struct Running {
    pub daemon: Daemon,
    pub dir: TempDir,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr
    }

    /// Stops the daemon (bounded) and hands back the data directory.
    pub async fn stop(self) -> anyhow::Result<TempDir> {
        match tokio::time::timeout(Duration::from_secs(30), self.daemon.stop()).await {
            Ok(r) => r?,
            Err(_) => bail!("the daemon did not stop within 30 s"),
        }
        Ok(self.dir)
    }
}

pub async fn start(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Running> {
    let dir = tempfile::Builder::new()
        .prefix("muster-bench-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let mut config = Config::new("127.0.0.1:0", dir.path());
    config.operator = "bench".into();
    tweak(&mut config);
    let daemon = muster_daemon::start(config).await.context("cannot start the daemon")?;
    if !daemon.addr.ip().is_loopback() {
        bail!("the daemon bound {}, not loopback", daemon.addr);
    }
    Ok(Running { daemon, dir })
}

/// Registers sessions the way Claude Code does: a `session-start` hook each.
pub async fn register_by_hook(addr: SocketAddr, ids: &[String]) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    for id in ids {
        let body = json!({
            "session_id": id,
            "cwd": "/tmp",
            "hook_event_name": "SessionStart",
            "source": "startup",
        });
        let (status, answer) = tokio::time::timeout(
            Duration::from_secs(10),
            conn.post("/hook/session-start", Bytes::from(body.to_string())),
        )
        .await
        .context("session-start took over 10 s")??;
        if status != StatusCode::OK {
            bail!("session-start for {id} answered {status}: {}", snippet(&answer));
        }
    }
    Ok(())
}

/// `GET /api/v1/status`.
pub async fn status(addr: SocketAddr) -> anyhow::Result<muster_core::api::Status> {
    let mut conn = Conn::connect(addr).await?;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), conn.get("/api/v1/status"))
        .await
        .context("status took over 10 s")??;
    if status != StatusCode::OK {
        bail!("GET /api/v1/status answered {status}: {}", snippet(&body));
    }
    serde_json::from_slice(&body).context("GET /api/v1/status answered something that is not a Status")
}
