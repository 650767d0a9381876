//! A `muster mcp` shim for a peer session, driven by hand over stdio (as in
//! claude_code.rs): it is initialized like a client would, and its stdout
//! lines are collected, so a test can see the channel notifications (live
//! pushes) the peer receives. Needs `common` (for `muster_cmd`) in the test crate.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{muster_cmd, wait_until, TestDaemon};

pub struct PeerShim {
    pub id: String,
    child: Child,
    /// Kept open: closing it ends the shim.
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    /// With `start_listed`: each daemon the shim linked to (its `ws://`
    /// address, from the shim's log) and when that line was read.
    links: Option<std::sync::mpsc::Receiver<(Instant, String)>>,
}

/// How the test's client opens the MCP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// `initialize` + `notifications/initialized` (MCP up to 2025-11-25).
    Initialize,
    /// `server/discover` then `tools/list`, and nothing else: the 2026-07-28
    /// revision, which Claude Code 2.1.332 speaks.
    Discover,
    /// No handshake at all: the shim links but cannot write pushes.
    None,
}

/// The `_meta` every 2026-07-28 request carries.
pub fn discover_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "peer", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    })
}

impl PeerShim {
    /// Starts the shim as session `session` (MUSTER_SESSION_ID, channels on),
    /// opened with a classic handshake, and waits until the daemon shows it
    /// linked and taking pushes.
    pub fn start(daemon: &TestDaemon, session: &str) -> Self {
        Self::start_with(daemon, session, Handshake::Initialize)
    }

    /// As `start`, with the handshake given. Without one, waits only for the link.
    pub fn start_with(daemon: &TestDaemon, session: &str, handshake: Handshake) -> Self {
        let mut cmd = muster_cmd(&daemon.url);
        cmd.stderr(Stdio::inherit());
        Self::launch(cmd, daemon, session, handshake, None)
    }

    /// As `start`, with MUSTER_URL set to `urls`, a list of daemons tried
    /// in order, `daemon` (where it should link first) among them; the
    /// shim's log is read for the daemons it links to (`next_link`) and
    /// passed on to the test's stderr.
    pub fn start_listed(daemon: &TestDaemon, urls: &str, session: &str) -> Self {
        let mut cmd = muster_cmd(urls);
        cmd.env("RUST_LOG", "warn,muster::mcp::link=info")
            .stderr(Stdio::piped());
        let (tx, links) = std::sync::mpsc::channel();
        Self::launch(
            cmd,
            daemon,
            session,
            Handshake::Initialize,
            Some((tx, links)),
        )
    }

    /// The next daemon the shim linked to (`start_listed` only): its
    /// `ws://` address and when the shim said so, within `limit`.
    pub fn next_link(&self, limit: Duration) -> Option<(Instant, String)> {
        let links = self
            .links
            .as_ref()
            .expect("a shim started with start_listed");
        links.recv_timeout(limit).ok()
    }

    fn launch(
        mut cmd: Command,
        daemon: &TestDaemon,
        session: &str,
        handshake: Handshake,
        links: Option<LinkLog>,
    ) -> Self {
        let mut child = cmd
            .arg("mcp")
            .env("MUSTER_SESSION_ID", session)
            .env_remove("MUSTER_HARNESS")
            .env("MUSTER_CHANNELS", "on")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn muster mcp");
        let links = links.map(|(tx, links)| {
            read_links(child.stderr.take().expect("stderr piped"), tx);
            links
        });
        let mut stdin = child.stdin.take().unwrap();
        let lines = match handshake {
            Handshake::Initialize => vec![
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                    "capabilities": {}, "clientInfo": {"name": "peer", "version": "1"}}}),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            ],
            Handshake::Discover => vec![
                json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": discover_meta()}}),
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": discover_meta()}}),
            ],
            Handshake::None => Vec::new(),
        };
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
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
            stdin,
            lines,
            links,
        };
        let linked = wait_until(Duration::from_secs(10), || {
            let roster = daemon.get("/api/v1/roster").1;
            roster["sessions"].as_array().unwrap().iter().any(|s| {
                s["id"] == session
                    && s["link"] == "link"
                    && s["link_up"] == true
                    && (handshake == Handshake::None || s["can_push"] == true)
            })
        });
        assert!(
            linked.is_some(),
            "the peer shim {session} did not link to the daemon"
        );
        peer
    }

    /// Writes one JSON-RPC line to the shim, as its client.
    pub fn send_line(&mut self, line: &Value) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// Calls a tool as the shim's client and returns the JSON-RPC answer
    /// (`result`, or `error` for a call refused before it ran), read
    /// within 15 s; other lines read meanwhile are dropped.
    pub fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Value {
        self.send_line(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("shim wrote non-JSON {line:?}: {e}"));
            if v["id"] == id {
                return v;
            }
        }
        panic!("{tool}: no answer to request {id} within 15 s");
    }

    /// Every stdout line the shim wrote within `limit`.
    pub fn lines_within(&self, limit: Duration) -> Vec<Value> {
        let start = Instant::now();
        let mut out = Vec::new();
        while start.elapsed() < limit {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(50)) {
                out.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("shim wrote non-JSON {line:?}: {e}")),
                );
            }
        }
        out
    }

    /// The first channel notification whose content holds `needle`.
    pub fn channel_with(&self, needle: &str, limit: Duration) -> Option<Value> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("shim wrote non-JSON {line:?}: {e}"));
            if v["method"] == "notifications/claude/channel"
                && v["params"]["content"]
                    .as_str()
                    .is_some_and(|c| c.contains(needle))
            {
                return Some(v);
            }
        }
        None
    }
}

/// Where a listed shim's links are told, and where they are read.
type LinkLog = (
    std::sync::mpsc::Sender<(Instant, String)>,
    std::sync::mpsc::Receiver<(Instant, String)>,
);

/// Reads the shim's log to its end, passing every line on to stderr, and
/// sends each "linked to muster" line's daemon address, stamped when read.
fn read_links(stderr: std::process::ChildStderr, tx: std::sync::mpsc::Sender<(Instant, String)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if !line.contains("linked to muster") {
                continue;
            }
            let daemon = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("daemon="))
                .unwrap_or_else(|| panic!("no daemon= in the shim's link line {line:?}"));
            let _ = tx.send((Instant::now(), daemon.to_string()));
        }
    });
}

impl Drop for PeerShim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
