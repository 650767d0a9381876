//! Shared test support: a real `muster serve` on an ephemeral port with its
//! own data directory, the `muster` binary as a client, and raw HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_muster");

/// A daemon process under test. Killed (SIGKILL) when dropped.
pub struct TestDaemon {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestDaemon {
    /// A daemon on a fresh data directory, with extra `serve` flags.
    pub fn start(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut d = Self::start_in(tmp.path(), args);
        d._tmp = Some(tmp);
        d
    }

    /// A daemon on an existing data directory (for restarts).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", args)
    }

    /// As [`TestDaemon::start_in`], on `bind` (a port its shims already
    /// look at, for a daemon started again where the last one was).
    pub fn start_on(data_dir: &Path, bind: &str, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", bind, "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("MUSTER_URL")
            .env_remove("MUSTER_TOKEN")
            // A developer's own store or socket settings never leak into a test daemon.
            .env_remove("MUSTER_STORE")
            .env_remove("MUSTER_UNIX_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn muster serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("muster serve printed no listening line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        TestDaemon {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `limit` for the process to exit; returns
    /// whether it exited in time (and with status 0).
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Runs `muster <args>` against this daemon, acting as nobody in particular.
    pub fn muster(&self, args: &[&str]) -> Output {
        muster_cmd(&self.url)
            .args(args)
            .output()
            .expect("run muster")
    }

    /// Runs `muster <args>` and parses its `--json` stdout, asserting success.
    pub fn muster_json(&self, args: &[&str]) -> Value {
        let out = self.muster(args);
        assert!(
            out.status.success(),
            "muster {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "muster {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Feeds a hook payload to `muster hook <event>` as a harness would; returns stdout.
    pub fn hook(&self, event: &str, payload: &Value) -> String {
        let mut child = muster_cmd(&self.url)
            .args(["hook", event])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn muster hook");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(payload.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "hook must exit 0");
        assert!(
            out.stderr.is_empty(),
            "hook wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The daemon's local key, read from its file as its user's clients do.
    pub fn key(&self) -> String {
        key_for(&self.url)
    }

    /// An HTTP client that shows this daemon's local key on every request,
    /// as muster's own clients do.
    pub fn http(&self) -> reqwest::blocking::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            muster_daemon::local_key::HEADER,
            self.key().parse().expect("a key is a header value"),
        );
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .unwrap()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http()
            .get(format!("{}{path}", self.url))
            .send()
            .expect("GET");
        status_json(resp)
    }

    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        let resp = self
            .http()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST");
        status_json(resp)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, body.to_string())
    }

    /// The ids of `as_`'s unread mail, oldest first (at most `limit`).
    pub fn inbox_ids(&self, as_: &str, limit: usize) -> Vec<String> {
        let (status, inbox) = self.get(&format!("/api/v1/inbox?as={as_}&limit={limit}"));
        assert_eq!(status, 200, "{inbox}");
        inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Session ids on the roster now.
    pub fn roster_ids(&self) -> Vec<String> {
        let (status, v) = self.get("/api/v1/roster");
        assert_eq!(status, 200);
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn status(&self) -> Value {
        self.get("/api/v1/status").1
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `muster` with the daemon URL set and no session identity inherited from
/// whatever runs the tests (a Claude Code session would export one). It
/// never starts a daemon on first use: a test that stops its daemon means
/// it to stay down (`autostart.rs` tests that start).
pub fn muster_cmd(url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("MUSTER_URL", url)
        .env("MUSTER_AUTOSTART", "0")
        .env("MUSTER_OPERATOR", "tester")
        // Shims started by tests have no Claude Code parent to show pushes
        // (detected from its command line); the tests act as one that does.
        .env("MUSTER_CHANNELS", "on")
        .env("XDG_CONFIG_HOME", "/nonexistent-muster-test-config")
        .env_remove("MUSTER_SESSION_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID")
        .env_remove("MUSTER_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// The local key of the daemon at `url`, read as its user's clients do.
pub fn key_for(url: &str) -> String {
    muster_daemon::local_key::for_url(url).expect("the daemon wrote its local key")
}

/// A plain HTTP client: it shows no key unless a request adds one.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn status_json(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A Claude Code hook payload for `event`.
pub fn payload(session_id: &str, event_name: &str) -> Value {
    serde_json::json!({
        "session_id": session_id,
        "transcript_path": format!("/tmp/{session_id}.jsonl"),
        "cwd": "/tmp",
        "hook_event_name": event_name,
        "permission_mode": "default",
        "prompt": "carry on",
        "source": "startup",
    })
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `additionalContext` of a hook answer, or None if it carries none.
pub fn context_of(stdout: &str) -> Option<String> {
    if stdout.trim().is_empty() {
        return None;
    }
    let v: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("hook printed non-JSON ({e}): {stdout}"));
    v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .map(str::to_string)
}

/// `threads` threads each send `per_thread` messages from `from` to `to`
/// over HTTP at once, each asserting a 200; the ids acknowledged, in no order.
pub fn send_concurrently(
    url: &str,
    from: &'static str,
    to: &'static str,
    threads: usize,
    per_thread: usize,
) -> Vec<String> {
    let workers: Vec<_> = (0..threads)
        .map(|w| {
            let url = url.to_string();
            std::thread::spawn(move || {
                let (client, key) = (http(), key_for(&url));
                (0..per_thread)
                    .map(|i| {
                        let resp = client
                            .post(format!("{url}/api/v1/messages"))
                            .header(muster_daemon::local_key::HEADER, &key)
                            .json(&serde_json::json!({"as": from, "to": to, "body": format!("w{w} m{i}")}))
                            .send()
                            .expect("send");
                        assert_eq!(resp.status(), 200);
                        let v: Value = resp.json().unwrap();
                        v["message"]["id"].as_str().unwrap().to_string()
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

/// Runs `cmd` (a prepared `muster mcp`), shakes hands as an MCP client,
/// calls `whoami` until the link is up or refused for good, and returns the
/// answer's text and whether it was a tool error, read within 10 s.
pub fn shim_whoami(mut cmd: Command) -> (String, bool) {
    use serde_json::json;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Until the link is up (or refused for good) a call answers at once
    // that the daemon is unreachable; ask again until it says something else.
    let start = Instant::now();
    let mut id = 1;
    let answer = loop {
        id += 1;
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "whoami", "arguments": {}}});
        writeln!(stdin, "{call}").unwrap();
        let result = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("the shim answered");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                break v["result"].clone();
            }
        };
        let text = result["content"][0]["text"].as_str().unwrap().to_string();
        let is_error = result["isError"] == true;
        if !(is_error && text.contains("not reachable"))
            || start.elapsed() > Duration::from_secs(10)
        {
            break (text, is_error);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let _ = child.wait();
    answer
}
