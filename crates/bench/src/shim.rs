//! One `muster mcp` child driven as an MCP client drives it: piped stdio,
//! JSON-RPC requests written to its stdin, and a task reading its stdout
//! into [`Event`]s stamped when each line was read.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::http::snippet;

pub const CHANNEL_METHOD: &str = "notifications/claude/channel";
/// One call (or message) not answered within this is an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a shim's stderr kept for error messages (the rest is drained).
const STDERR_KEEP: usize = 4_096;

/// What a shim's stdout said, stamped when the line was read.
pub enum Event {
    /// A JSON-RPC answer: `Ok(state)` (`pushed`, `queued`, or empty for
    /// answers without one) or `Err(text)` for errors and tool errors.
    Answer {
        id: u64,
        at: Instant,
        outcome: Result<String, String>,
    },
    Channel {
        at: Instant,
        content: String,
    },
    /// A line that is not JSON-RPC: the stdout protocol is broken.
    Garbage(String),
    Closed(String),
}

pub fn parse_line(line: &str, at: Instant) -> Option<Event> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Some(Event::Garbage(snippet(line.as_bytes())));
    };
    if let Some(method) = v.get("method").and_then(Value::as_str) {
        if method != CHANNEL_METHOD {
            return None;
        }
        let content = v["params"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return Some(Event::Channel { at, content });
    }
    let id = v.get("id").and_then(Value::as_u64)?;
    if let Some(err) = v.get("error") {
        let text = err["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Some(Event::Answer {
            id,
            at,
            outcome: Err(text),
        });
    }
    let result = &v["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    if result["isError"].as_bool() == Some(true) {
        return Some(Event::Answer {
            id,
            at,
            outcome: Err(text.to_string()),
        });
    }
    let state = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|t| t["state"].as_str().map(str::to_string))
        .unwrap_or_default();
    Some(Event::Answer {
        id,
        at,
        outcome: Ok(state),
    })
}

/// Drains a child's stderr in a task, keeping its first `keep` bytes for
/// error messages (a child must never block on a full pipe).
pub fn keep_stderr(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    keep: usize,
) -> Arc<Mutex<String>> {
    let kept = Arc::new(Mutex::new(String::new()));
    let into = kept.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4_096];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                return;
            }
            let mut text = into.lock().unwrap_or_else(|p| p.into_inner());
            if text.len() < keep {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    kept
}

/// One `muster mcp` child with piped stdio and a task reading its stdout.
pub struct Shim {
    pub id: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub stderr: Arc<Mutex<String>>,
    pub next_id: u64,
}

impl Shim {
    pub fn spawn(bin: &Path, url: &str, id: &str, cwd: &Path) -> anyhow::Result<Shim> {
        let mut child = Command::new(bin)
            .arg("mcp")
            .env("MUSTER_URL", url)
            // The bench runs its own daemon; a shim that finds it down (a
            // restart) must not start another on the developer's data dir.
            .env("MUSTER_AUTOSTART", "0")
            .env("MUSTER_SESSION_ID", id)
            .env("MUSTER_HARNESS", "claude")
            .env("MUSTER_CHANNELS", "on")
            .env_remove("CLAUDE_CODE_SESSION_ID")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} mcp", bin.display()))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().context("no stderr pipe")?;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let at = Instant::now();
                        if let Some(event) = parse_line(&line, at) {
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Event::Closed("its stdout closed".into()));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Event::Closed(format!("reading its stdout failed: {e}")));
                        return;
                    }
                }
            }
        });
        let stderr = keep_stderr(stderr_pipe, STDERR_KEEP);
        Ok(Shim {
            id: id.to_string(),
            child,
            stdin: Some(stdin),
            events,
            stderr,
            next_id: 1,
        })
    }

    /// What the shim said on stderr, for an error message.
    pub fn said(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let text = kept.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!(" (its stderr: {})", snippet(text.as_bytes()))
        }
    }

    pub async fn write(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut line = message.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().context("the shim's stdin is closed")?;
        stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("writing to shim {} failed", self.id))?;
        stdin.flush().await?;
        Ok(())
    }

    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        Ok(id)
    }

    /// MCP handshake: `initialize`, its answer, `notifications/initialized`.
    pub async fn initialize(&mut self) -> anyhow::Result<()> {
        let params = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "muster-bench", "version": env!("CARGO_PKG_VERSION")},
        });
        let id = self.request("initialize", params).await?;
        let limit = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(limit, self.events.recv())
                .await
                .with_context(|| {
                    format!(
                        "shim {} did not answer initialize within {CALL_TIMEOUT:?}",
                        self.id
                    )
                })?;
            match event {
                Some(Event::Answer {
                    id: got, outcome, ..
                }) if got == id => match outcome {
                    Ok(_) => break,
                    Err(e) => bail!("shim {} refused initialize: {e}", self.id),
                },
                Some(Event::Closed(why)) | Some(Event::Garbage(why)) => {
                    bail!("shim {} before initializing: {why}{}", self.id, self.said())
                }
                None => bail!("shim {}'s reader stopped{}", self.id, self.said()),
                Some(_) => {}
            }
        }
        self.write(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
    }

    /// Closes stdin (the shim exits by itself), then kills what is left. Bounded.
    pub async fn stop(mut self) {
        self.stdin.take();
        if tokio::time::timeout(Duration::from_millis(500), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shim_lines() {
        let at = Instant::now();
        let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"{\n  \"state\": \"pushed\"\n}"}],"isError":false}}"#;
        match parse_line(answer, at) {
            Some(Event::Answer {
                id: 7,
                outcome: Ok(s),
                ..
            }) => assert_eq!(s, "pushed"),
            _ => panic!("not a pushed answer"),
        }
        let tool_error = r#"{"jsonrpc":"2.0","id":8,"result":{"content":[{"type":"text","text":"no such session"}],"isError":true}}"#;
        assert!(matches!(
            parse_line(tool_error, at),
            Some(Event::Answer {
                id: 8,
                outcome: Err(_),
                ..
            })
        ));
        let rpc_error = r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"bad"}}"#;
        assert!(matches!(
            parse_line(rpc_error, at),
            Some(Event::Answer {
                id: 9,
                outcome: Err(_),
                ..
            })
        ));
        let push = r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"bench-ser-p0-n3","meta":{"message_id":"01X"}}}"#;
        match parse_line(push, at) {
            Some(Event::Channel { content, .. }) => assert_eq!(content, "bench-ser-p0-n3"),
            _ => panic!("not a channel push"),
        }
        assert!(parse_line(r#"{"jsonrpc":"2.0","method":"notifications/other"}"#, at).is_none());
        assert!(matches!(parse_line("hello", at), Some(Event::Garbage(_))));
    }
}
