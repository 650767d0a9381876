//! A `muster mcp` shim for a peer session, driven by hand over stdio (as in
//! claude_code.rs): it is initialized like a client would, and its stdout
//! lines are collected, so a test can see the channel notifications (live
//! pushes) the peer receives. Needs `common` (for `muster_cmd`) in the test crate.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{muster_cmd, wait_until, TestDaemon};

pub struct PeerShim {
    pub id: String,
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PeerShim {
    /// Starts the shim as session `session` (MUSTER_SESSION_ID, channels on) and
    /// waits until the daemon shows it linked.
    pub fn start(daemon: &TestDaemon, session: &str) -> Self {
        let mut child = muster_cmd(&daemon.url)
            .arg("mcp")
            .env("MUSTER_SESSION_ID", session)
            .env_remove("MUSTER_HARNESS")
            .env("MUSTER_CHANNELS", "on")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn muster mcp");
        let mut stdin = child.stdin.take().unwrap();
        for line in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                "capabilities": {}, "clientInfo": {"name": "peer", "version": "1"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ] {
            writeln!(stdin, "{line}").unwrap();
        }
        // Keep stdin open (closing it ends the shim) until the shim is killed.
        std::thread::spawn(move || {
            let _keep = stdin;
            std::thread::sleep(Duration::from_secs(300));
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let peer = PeerShim {
            id: session.to_string(),
            child,
            lines,
        };
        let linked = wait_until(Duration::from_secs(10), || {
            let roster = daemon.get("/api/v1/roster").1;
            roster["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == session && s["link"] == "link")
        });
        assert!(linked.is_some(), "the peer shim {session} did not link to the daemon");
        peer
    }

    /// The first channel notification whose content holds `needle`.
    pub fn channel_with(&self, needle: &str, limit: Duration) -> Option<Value> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("shim wrote non-JSON {line:?}: {e}"));
            if v["method"] == "notifications/claude/channel"
                && v["params"]["content"].as_str().is_some_and(|c| c.contains(needle))
            {
                return Some(v);
            }
        }
        None
    }
}

impl Drop for PeerShim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
