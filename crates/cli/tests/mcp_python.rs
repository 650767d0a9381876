//! muster's MCP servers driven by an MCP client from another code base than
//! rmcp: the official Python SDK (PyPI `mcp`, pinned in
//! scripts/install-python-mcp.sh), through the small driver
//! tests/mcp_clients/client.py, over stdio (`muster mcp`, the per-session
//! shim) and Streamable HTTP (`/mcp` on the daemon).
//!
//! The interpreter comes from `MUSTER_PYTHON` (set by .ci/run), else from
//! the venv the install script creates. Without it these tests fail, saying
//! how to install it.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHANNEL: &str = "notifications/claude/channel";
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_clients/client.py");
/// How long one driver command may take before the test gives up on it.
const ANSWER_LIMIT: Duration = Duration::from_secs(40);

const TOOLS: [&str; 11] = [
    "whoami",
    "roster",
    "send_message",
    "broadcast",
    "read_messages",
    "ack_messages",
    "wait_for_message",
    "join_room",
    "leave_room",
    "rooms",
    "set_status",
];

/// The venv python with the MCP SDK, or a failure that says how to get it.
fn python() -> PathBuf {
    const HOW: &str = "run scripts/install-python-mcp.sh (it creates a venv with the pinned Python MCP SDK, \
                       mcp==2.3.0, and prints its python's path) and export MUSTER_PYTHON=<that path>";
    if let Some(p) = std::env::var_os("MUSTER_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "MUSTER_PYTHON={} does not exist: {HOW}",
            p.display()
        );
        return p;
    }
    let cache = std::env::var_os("MUSTER_HARNESS_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/muster-harnesses"))
        })
        .expect("neither MUSTER_HARNESS_CACHE nor HOME is set");
    let p = cache.join("py/bin/python");
    assert!(
        p.exists(),
        "the Python MCP SDK is not installed (MUSTER_PYTHON is unset and {} does not exist): {HOW}",
        p.display()
    );
    p
}

/// One client.py process: an initialized Python MCP client session.
struct PyClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// The server's `initialize` result.
    init: Value,
    name: String,
}

impl PyClient {
    /// `client.py` with the muster test environment and `args`; waits for its first line.
    fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self, Value> {
        let mut cmd = Command::new(python());
        cmd.arg(DRIVER)
            .args(args)
            .env("MUSTER_BIN", BIN)
            .env("MUSTER_OPERATOR", "tester")
            .env("XDG_CONFIG_HOME", "/nonexistent-muster-test-config")
            .env("RUST_LOG", "warn")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("MUSTER_URL")
            .env_remove("MUSTER_SESSION_ID")
            .env_remove("CLAUDE_CODE_SESSION_ID")
            .env_remove("MUSTER_TOKEN")
            .env("MUSTER_CHANNELS", "on")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {DRIVER}: {e}", python().display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        let mut client = PyClient {
            child,
            stdin,
            lines,
            init: Value::Null,
            name: name.to_string(),
        };
        let first = client.next_line();
        match first.get("initialized") {
            Some(init) => {
                client.init = init.clone();
                Ok(client)
            }
            None => Err(first),
        }
    }

    /// A stdio shim (`muster mcp`) for `session` against `url`, with extra env.
    fn stdio(url: &str, session: &str, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("MUSTER_URL", url), ("MUSTER_SESSION_ID", session)];
        all.extend_from_slice(env);
        Self::spawn(session, &["stdio"], &all).unwrap_or_else(|e| {
            panic!("the Python client could not initialize `muster mcp` for {session}: {e}")
        })
    }

    fn next_line(&mut self) -> Value {
        let line = self.lines.recv_timeout(ANSWER_LIMIT).unwrap_or_else(|e| {
            panic!(
                "client.py ({}) gave no answer within {ANSWER_LIMIT:?}: {e}",
                self.name
            )
        });
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("client.py ({}) printed non-JSON ({e}): {line}", self.name))
    }

    /// Sends one driver command and returns its answer.
    fn cmd(&mut self, command: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}")
            .and_then(|_| stdin.flush())
            .expect("write to client.py");
        self.next_line()
    }

    fn list_tools(&mut self) -> Vec<Value> {
        let v = self.cmd(json!({"list_tools": true}));
        v["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list failed: {v}"))
            .clone()
    }

    /// `tools/call`: `{"result": CallToolResult}` or `{"error": {code, message}}`.
    fn call(&mut self, tool: &str, args: Value) -> Value {
        self.cmd(json!({"call": tool, "args": args}))
    }

    /// A call that must succeed; returns its text content parsed as JSON.
    fn call_ok(&mut self, tool: &str, args: Value) -> Value {
        let v = self.call(tool, args.clone());
        let result = v
            .get("result")
            .unwrap_or_else(|| panic!("{tool} {args} failed: {v}"));
        assert_eq!(
            result["isError"], false,
            "{tool} {args} answered a tool error: {v}"
        );
        let text = result["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{tool}: no text content: {v}"));
        serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{tool}: text is not JSON ({e}): {text}"))
    }

    /// The next notification within `timeout`, if any.
    fn notification(&mut self, timeout: Duration) -> Option<Value> {
        let v = self.cmd(json!({"wait_notification": {"timeout": timeout.as_secs_f64()}}));
        let n = v
            .get("notification")
            .unwrap_or_else(|| panic!("wait_notification failed: {v}"));
        (!n.is_null()).then(|| n.clone())
    }

    /// Every notification that arrives until `quiet` passes without one.
    fn drain_notifications(&mut self, quiet: Duration) -> Vec<Value> {
        std::iter::from_fn(|| self.notification(quiet)).collect()
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        // Closing stdin ends the driver, which closes the shim's stdin in turn.
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `muster serve` on a given address and data directory (a restart); killed (SIGKILL) when dropped.
struct Serve(Child);

impl Serve {
    fn start(data_dir: &std::path::Path, bind: &str, flags: &[&str], expect_url: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", bind, "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("RUST_LOG", "warn")
            .env_remove("MUSTER_URL")
            .env_remove("MUSTER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn muster serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let serve = Serve(child);
        assert!(
            line.contains(expect_url),
            "the daemon did not come back on {expect_url}: {line:?}"
        );
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The roster entry for `id` (including sessions that left), if any.
fn roster_entry(d: &TestDaemon, id: &str) -> Option<Value> {
    let (status, v) = d.get("/api/v1/roster?all=true");
    assert_eq!(status, 200, "{v}");
    v["sessions"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
}

fn is_linked(d: &TestDaemon, id: &str) -> bool {
    roster_entry(d, id).is_some_and(|s| s["link"] == "link")
}

/// Waits until `id` is on the roster with a live link; returns its nickname.
fn linked_nickname(d: &TestDaemon, id: &str) -> String {
    assert!(
        wait_until(Duration::from_secs(10), || is_linked(d, id)).is_some(),
        "{id} never showed as linked: {:?}",
        roster_entry(d, id)
    );
    roster_entry(d, id).unwrap()["nickname"]
        .as_str()
        .unwrap()
        .to_string()
}

/// B's prompt-submit hook answer, as Claude Code would ask for it.
fn prompt_submit(d: &TestDaemon, id: &str) -> Option<String> {
    context_of(&d.hook(
        "prompt-submit",
        &json!({"session_id": id, "hook_event_name": "UserPromptSubmit", "cwd": "/tmp"}),
    ))
}

/// Asserts `n` is a channel notification carrying `body` with string-only
/// meta, and returns its meta.
fn assert_channel(n: &Value, body: &str, from: &str) -> serde_json::Map<String, Value> {
    assert_eq!(n["method"], CHANNEL, "{n}");
    assert_eq!(n["params"]["content"], body, "the body is the content: {n}");
    let meta = n["params"]["meta"]
        .as_object()
        .unwrap_or_else(|| panic!("meta is an object: {n}"))
        .clone();
    for (k, v) in &meta {
        assert!(v.is_string(), "meta.{k} must be a string: {n}");
        assert!(
            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "meta key {k:?}: {n}"
        );
    }
    for k in ["message_id", "from", "from_nickname", "kind", "sent_at"] {
        assert!(meta.contains_key(k), "meta.{k} is present: {n}");
    }
    assert_eq!(meta["from"], from, "{n}");
    meta
}

// Proves a non-rmcp client (Python SDK) initializes the stdio shim, sees all
// eleven tools with object schemas and short instructions, and that a send
// from shim A to shim B answers "pushed", arrives at B as a
// notifications/claude/channel with string-only meta naming the message,
// and is then not surfaced again by B's prompt-submit hook.
#[test]
fn stdio_send_is_pushed_to_the_other_shim_once() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "a1a1a1a1-0000-4000-8000-000000000001",
        "b2b2b2b2-0000-4000-8000-000000000002",
    );
    let mut ca = PyClient::stdio(&d.url, a, &[]);

    let instructions = ca.init["instructions"]
        .as_str()
        .expect("the server gives instructions");
    assert!(
        instructions.chars().count() < 1_500,
        "instructions are {} chars",
        instructions.chars().count()
    );
    assert_eq!(ca.init["serverInfo"]["name"], "muster", "{}", ca.init);
    assert!(
        ca.init["capabilities"]["experimental"]["claude/channel"].is_object(),
        "{}",
        ca.init
    );
    assert!(ca.init["capabilities"]["tools"].is_object(), "{}", ca.init);

    let tools = ca.list_tools();
    let names: BTreeSet<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for tool in TOOLS {
        assert!(names.contains(tool), "{tool} is offered: {names:?}");
    }
    for t in &tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert!(
            t["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{t}"
        );
    }

    let mut cb = PyClient::stdio(&d.url, b, &[]);
    linked_nickname(&d, a);
    let nick_b = linked_nickname(&d, b);
    assert_eq!(ca.call_ok("whoami", json!({}))["id"], a);

    let body = "python says: please review src/lib.rs";
    let sent = ca.call_ok("send_message", json!({"to": nick_b, "body": body}));
    assert_eq!(
        sent["state"], "pushed",
        "B's shim confirmed the push: {sent}"
    );
    let id = sent["message"]["id"]
        .as_str()
        .expect("the answer names the message")
        .to_string();

    let n = cb
        .notification(Duration::from_secs(5))
        .expect("B's client receives the channel notification");
    let meta = assert_channel(&n, body, a);
    assert_eq!(meta["message_id"], id.as_str());
    assert_eq!(meta["kind"], "direct", "{n}");

    // The daemon holds it as pushed: B's next turn has no copy, and it is not
    // counted unread (the gauge is "deliveries not yet surfaced or pushed").
    let ctx = prompt_submit(&d, b);
    assert!(
        !ctx.as_deref().unwrap_or("").contains(body),
        "a pushed message is not surfaced again: {ctx:?}"
    );
    assert!(
        cb.drain_notifications(Duration::from_millis(500))
            .is_empty(),
        "pushed once"
    );
    assert_eq!(
        d.status()["unread_deliveries"],
        0,
        "a pushed delivery still counts as unread"
    );
}

// Proves MUSTER_CHANNELS=off makes the shim decline pushes: the send answers
// "queued", B's client gets no notification, and B's next prompt-submit hook
// carries the message instead.
#[test]
fn stdio_channels_off_falls_back_to_the_hook() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "a1a1a1a1-0000-4000-8000-000000000011",
        "b2b2b2b2-0000-4000-8000-000000000012",
    );
    let mut ca = PyClient::stdio(&d.url, a, &[]);
    let mut cb = PyClient::stdio(&d.url, b, &[("MUSTER_CHANNELS", "off")]);
    linked_nickname(&d, a);
    let nick_b = linked_nickname(&d, b);
    assert_eq!(roster_entry(&d, b).unwrap()["can_push"], false);

    let body = "channels are off, read this at your next turn";
    let sent = ca.call_ok("send_message", json!({"to": nick_b, "body": body}));
    assert_eq!(sent["state"], "queued", "{sent}");
    assert_eq!(
        cb.notification(Duration::from_secs(2)),
        None,
        "no push to a shim with channels off"
    );
    let ctx = prompt_submit(&d, b).expect("B's next turn carries mail");
    assert!(ctx.contains(body), "{ctx}");
}

// Proves `muster mcp` without a session id (neither MUSTER_SESSION_ID nor
// CLAUDE_CODE_SESSION_ID) exits non-zero at once, says why on stderr, and
// writes nothing to stdout (the protocol channel); a Python client facing it
// gets an error instead of hanging.
#[test]
fn stdio_without_a_session_id_refuses_cleanly() {
    let d = TestDaemon::start(&[]);
    let mut child = muster_cmd(&d.url)
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muster mcp");
    let stdin = child.stdin.take();
    assert!(
        wait_until(Duration::from_secs(10), || matches!(
            child.try_wait(),
            Ok(Some(_))
        ))
        .is_some(),
        "muster mcp without a session id must exit by itself"
    );
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MUSTER_SESSION_ID") && err.contains("CLAUDE_CODE_SESSION_ID"),
        "{err}"
    );

    let refused = PyClient::spawn(
        "no-session",
        &["stdio"],
        &[("MUSTER_URL", &d.url), ("MCP_CLIENT_TIMEOUT", "10")],
    );
    let err = refused
        .err()
        .expect("the Python client cannot initialize a shim with no session");
    assert!(err["error"]["message"].is_string(), "{err}");
    assert_eq!(d.status()["sessions_known"], 0, "nothing registered");
}

// Proves bad tool calls from a Python client are refused without storing
// anything (unknown tool and wrong argument types as JSON-RPC -32602, an
// oversized body as an error) and the shim keeps answering; and records what
// a malformed JSON line does.
#[test]
fn stdio_bad_input_is_refused_and_the_shim_keeps_answering() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "a1a1a1a1-0000-4000-8000-000000000021",
        "b2b2b2b2-0000-4000-8000-000000000022",
    );
    let mut ca = PyClient::stdio(&d.url, a, &[]);
    let _cb = PyClient::stdio(&d.url, b, &[]);
    linked_nickname(&d, a);
    let nick_b = linked_nickname(&d, b);

    let protocol_errors = [
        ("no_such_tool", json!({})),
        ("send_message", json!({"to": 5, "body": "x"})),
        ("send_message", json!({"to": nick_b, "body": ["x"]})),
        ("send_message", json!({"to": nick_b})),
        ("broadcast", json!({"room": {}, "body": "x"})),
        ("read_messages", json!({"limit": "ten"})),
        ("ack_messages", json!({"ids": "all"})),
        ("wait_for_message", json!({"timeout_s": "soon"})),
        ("join_room", json!({"name": 7})),
        ("set_status", json!({"text": null})),
    ];
    for (tool, args) in protocol_errors {
        let v = ca.call(tool, args.clone());
        assert_eq!(
            v["error"]["code"], -32602,
            "{tool} {args} is invalid params: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }

    let big = "x".repeat(7_000);
    let v = ca.call("send_message", json!({"to": nick_b, "body": big}));
    let refused = v["error"]["code"].is_i64() || v["result"]["isError"] == true;
    assert!(
        refused,
        "an oversized body is refused: {}",
        &v.to_string()[..300.min(v.to_string().len())]
    );
    let said = v["error"]["message"]
        .as_str()
        .or(v["result"]["content"][0]["text"].as_str())
        .unwrap_or("");
    assert!(
        said.contains("too large") || said.contains("6000") || said.contains("6,000"),
        "{said}"
    );
    eprintln!(
        "oversized body answered: {}",
        &v.to_string()[..300.min(v.to_string().len())]
    );

    assert_eq!(d.status()["unread_deliveries"], 0, "nothing was stored");
    let read = ca.call_ok("read_messages", json!({"all": true}));
    eprintln!("A's mail after the bad calls: {read}");

    // A malformed line gets a JSON-RPC parse error with a null id.
    let raw =
        ca.cmd(json!({"raw": "{\"jsonrpc\": \"2.0\", \"id\": 99, \"method\": ", "wait": 1.5}));
    let error_with = |answer: &Value, code: i64| -> Value {
        let lines = answer["server_lines"]
            .as_array()
            .expect("raw answers the lines seen");
        let line = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l.as_str().unwrap_or("")).ok())
            .find(|v| v["error"]["code"] == code)
            .unwrap_or_else(|| panic!("no JSON-RPC error {code} in {answer}"));
        assert!(line["id"].is_null(), "the error has a null id: {line}");
        line
    };
    error_with(&raw, -32700);
    // Well-formed JSON that is no JSON-RPC message gets an invalid-request error.
    let not_rpc = ca.cmd(json!({"raw": "{\"foo\": 1}", "wait": 1.0}));
    error_with(&not_rpc, -32600);
    assert!(
        not_rpc["exit_code"].is_null(),
        "the shim died on a non-JSON-RPC line: {not_rpc}"
    );

    // Still answering, and still nothing stored.
    assert!(
        raw["exit_code"].is_null(),
        "the shim died on a malformed line: {raw}"
    );
    assert_eq!(
        ca.call_ok("whoami", json!({}))["id"],
        a,
        "the shim still answers"
    );
    assert!(ca.list_tools().len() >= TOOLS.len());
    assert_eq!(d.status()["unread_deliveries"], 0, "nothing was stored");
}

// Proves live shims survive a daemon kill -9 and restart on the same port
// and data: both sessions are back on the roster as linked within 2 s, the
// sweeper (stale after 3 s) does not remove them, and a message pushed
// before the crash and one sent after it each reach B exactly once.
#[test]
fn stdio_shims_relink_after_the_daemon_is_killed() {
    let flags = ["--stale-after", "3s", "--sweep-interval", "100ms"];
    let mut d = TestDaemon::start(&flags);
    let port = d
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let (a, b) = (
        "a1a1a1a1-0000-4000-8000-000000000031",
        "b2b2b2b2-0000-4000-8000-000000000032",
    );
    let mut ca = PyClient::stdio(&d.url, a, &[]);
    let mut cb = PyClient::stdio(&d.url, b, &[]);
    linked_nickname(&d, a);
    let nick_b = linked_nickname(&d, b);

    let before = ca.call_ok(
        "send_message",
        json!({"to": nick_b, "body": "sent before the crash"}),
    );
    assert_eq!(before["state"], "pushed", "{before}");
    let before_id = before["message"]["id"].as_str().unwrap().to_string();
    let mut seen = vec![cb
        .notification(Duration::from_secs(5))
        .expect("the first push arrives")];

    d.kill9();
    // Same port and data directory. (TestDaemon::start_in always passes
    // `--bind 127.0.0.1:0`, and clap refuses a second --bind.) `d`'s helpers
    // talk to its URL, which is the restarted daemon's too.
    let _restarted_daemon = Serve::start(&d.data_dir, &format!("127.0.0.1:{port}"), &flags, &d.url);
    let restarted = Instant::now();

    // The roster's `link` is the session's kind of liveness, persisted: it
    // reads "link" straight after the restart, before any shim is back. A
    // tool call through each shim is what proves its link is up again (a
    // shim answers "not reachable" at once while it is re-linking).
    for (client, id) in [(&mut ca, a), (&mut cb, b)] {
        let mut last = Value::Null;
        let relinked = wait_until(Duration::from_secs(5), || {
            last = client.call("whoami", json!({}));
            last["result"]["isError"] == false
        });
        assert!(
            relinked.is_some(),
            "{id}'s shim did not re-link within 5 s of the restart: {last}"
        );
        let took = restarted.elapsed();
        eprintln!("{id}'s shim answered again {took:?} after the restart");
        assert!(
            took <= Duration::from_secs(2),
            "{id}'s shim re-linked, but only {took:?} after the restart (limit 2 s)"
        );
        assert!(
            is_linked(&d, id),
            "{id} is on the roster as linked: {:?}",
            roster_entry(&d, id)
        );
    }

    let after = ca.call_ok(
        "send_message",
        json!({"to": nick_b, "body": "sent after the restart"}),
    );
    assert_eq!(after["state"], "pushed", "{after}");
    let after_id = after["message"]["id"].as_str().unwrap().to_string();

    // Past the stale-after horizon the sweeper has run many times: both stay.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(restarted.elapsed()));
    for id in [a, b] {
        assert!(
            d.roster_ids().contains(&id.to_string()),
            "{id} was swept: {:?}",
            roster_entry(&d, id)
        );
        assert!(
            is_linked(&d, id),
            "{id} is still linked: {:?}",
            roster_entry(&d, id)
        );
    }

    seen.extend(cb.drain_notifications(Duration::from_millis(1_500)));
    let ids: Vec<&str> = seen
        .iter()
        .map(|n| n["params"]["meta"]["message_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        ids.iter().filter(|i| **i == before_id).count(),
        1,
        "the pre-crash message once: {ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|i| **i == after_id).count(),
        1,
        "the post-restart message once: {ids:?}"
    );
    assert_eq!(ids.len(), 2, "nothing else was pushed: {seen:?}");
    let ctx = prompt_submit(&d, b).unwrap_or_default();
    assert!(
        !ctx.contains("sent before the crash") && !ctx.contains("sent after the restart"),
        "{ctx}"
    );
    assert_eq!(
        d.status()["unread_deliveries"],
        0,
        "pushed deliveries still count as unread"
    );
}

// Proves the daemon's Streamable HTTP endpoint (/mcp) serves the Python
// SDK's HTTP client for the session named by X-Muster-Session: it lists the
// tools and a send_message from there reaches a stdio shim as a channel
// notification; naming no session, or one the daemon does not know, is refused.
#[test]
fn http_mcp_serves_the_session_named_in_the_header() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "a1a1a1a1-0000-4000-8000-000000000041",
        "b2b2b2b2-0000-4000-8000-000000000042",
    );
    let (status, v) = d.post_json("/api/v1/sessions", &json!({"id": a}));
    assert_eq!(status, 200, "{v}");
    let mut cb = PyClient::stdio(&d.url, b, &[]);
    let nick_b = linked_nickname(&d, b);
    let endpoint = format!("{}/mcp", d.url);

    let key = d.key();
    let keyed = [("MUSTER_KEY", key.as_str())];
    let mut ca = PyClient::spawn("http-a", &["http", &endpoint, a], &keyed).unwrap_or_else(|e| {
        panic!("the Python SDK's Streamable HTTP client could not initialize {endpoint}: {e}")
    });
    assert_eq!(ca.init["serverInfo"]["name"], "muster", "{}", ca.init);
    let tools = ca.list_tools();
    let names: BTreeSet<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for tool in TOOLS {
        assert!(
            names.contains(tool),
            "{tool} is offered over HTTP: {names:?}"
        );
    }
    assert_eq!(
        ca.call_ok("whoami", json!({}))["id"],
        a,
        "the call acts as the header's session"
    );

    let body = "from python over streamable http";
    let sent = ca.call_ok("send_message", json!({"to": nick_b, "body": body}));
    assert_eq!(sent["state"], "pushed", "{sent}");
    let n = cb
        .notification(Duration::from_secs(5))
        .expect("B's shim gets the channel notification");
    let meta = assert_channel(&n, body, a);
    assert_eq!(meta["message_id"], sent["message"]["id"]);

    let limit = [("MCP_CLIENT_TIMEOUT", "10"), ("MUSTER_KEY", key.as_str())];
    for (label, args) in [
        (
            "no X-Muster-Session header",
            vec!["http", endpoint.as_str()],
        ),
        (
            "an unknown session",
            vec![
                "http",
                endpoint.as_str(),
                "c3c3c3c3-0000-4000-8000-000000000043",
            ],
        ),
    ] {
        match PyClient::spawn(label, &args, &limit) {
            Err(e) => eprintln!("{label}: refused at initialize: {e}"),
            Ok(mut c) => {
                // Initialize may be allowed; then every tool call must be refused.
                let v = c.call("whoami", json!({}));
                let refused = v.get("error").is_some() || v["result"]["isError"] == true;
                assert!(refused, "{label}: whoami must be refused: {v}");
                let v = c.call(
                    "send_message",
                    json!({"to": nick_b, "body": "should not go"}),
                );
                let refused = v.get("error").is_some() || v["result"]["isError"] == true;
                assert!(refused, "{label}: send_message must be refused: {v}");
                eprintln!("{label}: initialize allowed, calls refused: {v}");
            }
        }
    }
    assert_eq!(
        cb.notification(Duration::from_millis(500)),
        None,
        "nothing from refused callers"
    );
    assert_eq!(
        d.status()["unread_deliveries"],
        0,
        "only the pushed delivery was stored, and it is not unread"
    );
}
