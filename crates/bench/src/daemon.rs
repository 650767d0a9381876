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
    let daemon = muster_daemon::start(config)
        .await
        .context("cannot start the daemon")?;
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
            bail!(
                "session-start for {id} answered {status}: {}",
                snippet(&answer)
            );
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
    serde_json::from_slice(&body)
        .context("GET /api/v1/status answered something that is not a Status")
}

/// The daemon as its own process: `muster serve` on a loopback port with a
/// throwaway data directory, so its CPU can be read apart from the bench's.
pub struct ServeChild {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Bytes of the daemon's stderr kept for error messages (the rest is drained).
const SERVE_STDERR_KEEP: usize = 4_096;

impl ServeChild {
    /// Starts `<muster> serve --bind 127.0.0.1:0` and waits for the line that
    /// names the port it bound.
    pub async fn start(muster: &std::path::Path) -> anyhow::Result<ServeChild> {
        let dir = tempfile::Builder::new()
            .prefix("muster-bench-")
            .tempdir()
            .context("cannot create a temp dir")?;
        Self::start_in(muster, dir, "127.0.0.1:0").await
    }

    /// Starts `<muster> serve --bind <bind>` on `dir` (a restart passes the
    /// data directory and address of the daemon it replaces).
    pub async fn start_in(
        muster: &std::path::Path,
        dir: TempDir,
        bind: &str,
    ) -> anyhow::Result<ServeChild> {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(muster)
            .arg("serve")
            .arg("--bind")
            .arg(bind)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("MUSTER_TOKEN")
            .env_remove("MUSTER_BIND")
            .env_remove("MUSTER_URL")
            .env("MUSTER_OPERATOR", "bench")
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", muster.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().context("no stderr pipe")?;
        let stderr = crate::shim::keep_stderr(stderr_pipe, SERVE_STDERR_KEEP);
        let mut lines = BufReader::new(stdout).lines();
        let said = |stderr: &std::sync::Arc<std::sync::Mutex<String>>| {
            let kept = stderr.lock().unwrap_or_else(|p| p.into_inner());
            snippet(kept.trim().as_bytes())
        };
        let addr = loop {
            let line = match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
            {
                Err(_) => bail!(
                    "muster serve said nothing within 20 s (stderr: {})",
                    said(&stderr)
                ),
                Ok(Err(e)) => bail!("reading muster serve's stdout failed: {e}"),
                Ok(Ok(None)) => {
                    // Give stderr a moment to be read.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    bail!("muster serve exited (stderr: {})", said(&stderr))
                }
                Ok(Ok(Some(line))) => line,
            };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: SocketAddr =
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .parse()
                        .with_context(|| format!("cannot read the address in {line:?}"))?;
                break addr;
            }
        };
        if !addr.ip().is_loopback() {
            bail!("muster serve bound {addr}, not loopback");
        }
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServeChild {
            child,
            addr,
            dir,
            stderr,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the daemon said on stderr, for an error message.
    pub fn said(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        snippet(kept.trim().as_bytes())
    }

    /// `kill -9`: no shutdown code runs. Hands back the data directory.
    pub async fn kill9(mut self) -> TempDir {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        self.dir
    }

    /// Stops the daemon (its data directory is thrown away, so no grace is
    /// needed) and fails if it had already exited.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "muster serve exited early ({status}; stderr: {})",
                self.said()
            );
        }
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        Ok(())
    }
}
