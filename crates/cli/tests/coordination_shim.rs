//! Coordination through linked stdio shims (`muster mcp` driven by hand)
//! against a real daemon: @mentions push, wait_for_message blocks and is
//! cancelled cleanly, and the MCP `reserve` tool refuses bad input (issue 4).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHANNEL: &str = "notifications/claude/channel";

/// A shim whose stdout is read back: answers by request id, notifications kept aside.
struct Driven {
    child: Child,
    lines: Receiver<Value>,
    notifications: Vec<Value>,
    next_id: u64,
}

impl Driven {
    fn start(d: &TestDaemon, session: &str, cwd: Option<&Path>) -> Self {
        let mut cmd = muster_cmd(&d.url);
        cmd.arg("mcp")
            .env("MUSTER_SESSION_ID", session)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ =
                    tx.send(serde_json::from_str(&line).expect("the shim writes only JSON-RPC"));
            }
        });
        let mut me = Driven {
            child,
            lines,
            notifications: Vec::new(),
            next_id: 1,
        };
        me.send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        );
        me.answer(0, Duration::from_secs(10));
        me.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        me
    }

    fn send(&mut self, v: Value) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{v}").unwrap();
    }

    fn answer(&mut self, id: u64, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(v) if v["id"] == id => return v,
                Ok(v) if v.get("id").is_none() => self.notifications.push(v),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no answer to request {id} within {limit:?}");
    }

    /// Sends a tools/call and returns its request id without waiting.
    fn start_call(&mut self, tool: &str, args: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}),
        );
        id
    }

    /// Calls a tool; returns the `result` (with `isError` and `content`).
    fn call(&mut self, tool: &str, args: Value) -> Value {
        let v = self.call_raw(tool, args);
        v.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{tool}: no result: {v}"))
    }

    /// Calls a tool; returns the whole JSON-RPC answer.
    fn call_raw(&mut self, tool: &str, args: Value) -> Value {
        let id = self.start_call(tool, args);
        self.answer(id, Duration::from_secs(15))
    }

    /// Collects notifications for `limit`.
    fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(v) if v.get("id").is_none() => self.notifications.push(v),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn channel_pushes(&self) -> Vec<&Value> {
        self.notifications
            .iter()
            .filter(|n| n["method"] == CHANNEL)
            .collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The JSON a successful tool call answered with.
fn ok_json(result: &Value) -> Value {
    assert_ne!(result["isError"], true, "the call failed: {result}");
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {result}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn roster_entry(d: &TestDaemon, id: &str) -> Option<Value> {
    let (status, v) = d.get("/api/v1/roster");
    assert_eq!(status, 200);
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
}

/// Waits until `id` is on the roster with its shim link up; returns its nickname.
fn linked(d: &TestDaemon, id: &str) -> String {
    wait_until(Duration::from_secs(10), || {
        roster_entry(d, id).is_some_and(|s| s["link"] == "link" && s["link_up"] == true)
    })
    .unwrap_or_else(|| panic!("{id} never linked: {:?}", roster_entry(d, id)));
    roster_entry(d, id).unwrap()["nickname"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A gauge from the daemon's /metrics.
fn gauge(d: &TestDaemon, name: &str) -> u64 {
    let text = d
        .http()
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

fn links(d: &TestDaemon) -> u64 {
    gauge(d, "muster_links")
}

/// Waits until the daemon has a wait_for_message waiting for mail.
fn until_waiting(d: &TestDaemon) {
    wait_until(Duration::from_secs(5), || {
        gauge(d, "muster_mail_waits") == 1
    })
    .expect("the wait_for_message reached the daemon and waits");
}

fn prompt_submit(d: &TestDaemon, id: &str) -> Option<String> {
    context_of(&d.hook(
        "prompt-submit",
        &json!({"session_id": id, "hook_event_name": "UserPromptSubmit", "cwd": "/tmp"}),
    ))
}

const A: &str = "e0000000-0000-4000-8000-00000000000a";
const B: &str = "e0000000-0000-4000-8000-00000000000b";
const C: &str = "e0000000-0000-4000-8000-00000000000c";

// Proves @mentions: a room message naming B pushes a channel notification to
// B only; C (also linked, also in `everyone`) gets no push and sees it as
// ambient mail at its next prompt-submit; the sender is told B "pushed", C "queued".
#[test]
fn a_mention_pushes_to_the_mentioned_session_only() {
    let d = TestDaemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/sessions", &json!({"id": A, "cwd": "/tmp"}))
            .0,
        200
    );
    let mut b = Driven::start(&d, B, None);
    let mut c = Driven::start(&d, C, None);
    let nick_b = linked(&d, B);
    linked(&d, C);

    let body = format!("@{nick_b} please look at the failing test");
    let (status, sent) = d.post_json(
        "/api/v1/broadcast",
        &json!({"as": A, "room": "everyone", "body": body}),
    );
    assert_eq!(status, 200, "{sent}");
    let state_of = |id: &str| {
        sent["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["recipient"] == id)
            .map(|v| v["state"].clone())
    };
    assert_eq!(state_of(B), Some(json!("pushed")), "{sent}");
    assert_eq!(state_of(C), Some(json!("queued")), "{sent}");
    assert_eq!(state_of(A), None, "the sender is not a recipient: {sent}");
    assert_eq!(
        sent["state"], "queued",
        "not every recipient got it live: {sent}"
    );

    b.drain(Duration::from_millis(500));
    c.drain(Duration::from_millis(500));
    let pushes = b.channel_pushes();
    assert_eq!(
        pushes.len(),
        1,
        "B got exactly one push: {:?}",
        b.notifications
    );
    assert!(
        pushes[0]["params"]["content"]
            .as_str()
            .unwrap()
            .contains("please look"),
        "{}",
        pushes[0]
    );
    assert_eq!(
        pushes[0]["params"]["meta"]["message_id"], sent["message"]["id"],
        "{}",
        pushes[0]
    );
    assert!(
        c.channel_pushes().is_empty(),
        "C is not interrupted: {:?}",
        c.notifications
    );

    let ctx_c = prompt_submit(&d, C).expect("C sees the room mail at its next turn");
    assert!(
        ctx_c.contains("please look") && ctx_c.contains("room #everyone"),
        "{ctx_c}"
    );
    assert_eq!(
        prompt_submit(&d, B),
        None,
        "B already had it pushed: not surfaced again"
    );

    // A room message mentioning nobody pushes to nobody.
    let (_, quiet) = d.post_json(
        "/api/v1/broadcast",
        &json!({"as": A, "room": "everyone", "body": "lunch at 12"}),
    );
    assert!(
        quiet["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "queued"),
        "{quiet}"
    );
    b.drain(Duration::from_millis(300));
    assert_eq!(b.channel_pushes().len(), 1, "no push without a mention");
}

// Proves wait_for_message returns at once when mail is already unread.
#[test]
fn wait_returns_at_once_when_mail_is_unread() {
    let d = TestDaemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/sessions", &json!({"id": A, "cwd": "/tmp"}))
            .0,
        200
    );
    let mut w = Driven::start(&d, B, None);
    linked(&d, B);
    let (status, v) = d.post_json(
        "/api/v1/messages",
        &json!({"as": A, "to": B, "body": "already here"}),
    );
    assert_eq!(status, 200, "{v}");
    let started = Instant::now();
    let got = ok_json(&w.call("wait_for_message", json!({"timeout_s": 30})));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "already here"),
        "{got}"
    );
    assert_ne!(got["timed_out"], true);
}

/// Starts a wait_for_message (timeout 20 s) on `w`, sends `send` once the
/// daemon has it waiting, and returns the tool's answer and how long the
/// whole wait took.
fn wait_across(d: &TestDaemon, w: &mut Driven, path: &str, send: Value) -> (Value, Duration) {
    let started = Instant::now();
    let id = w.start_call("wait_for_message", json!({"timeout_s": 20}));
    until_waiting(d);
    let (status, v) = d.post_json(path, &send);
    assert_eq!(status, 200, "{v}");
    let answer = w.answer(id, Duration::from_secs(25));
    (ok_json(&answer["result"]), started.elapsed())
}

// Proves wait_for_message blocks until a direct message arrives (sent once
// the daemon shows the call waiting) and returns it then, well before its
// 20 s timeout.
#[test]
fn wait_blocks_until_direct_mail_arrives() {
    let d = TestDaemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/sessions", &json!({"id": A, "cwd": "/tmp"}))
            .0,
        200
    );
    let mut w = Driven::start(&d, B, None);
    linked(&d, B);
    let (got, took) = wait_across(
        &d,
        &mut w,
        "/api/v1/messages",
        json!({"as": A, "to": B, "body": "your answer"}),
    );
    assert_ne!(got["timed_out"], true, "{got}");
    assert!(
        took < Duration::from_secs(5),
        "it returned when the mail came, not at the timeout: {took:?} {got}"
    );
    assert_eq!(gauge(&d, "muster_mail_waits"), 0, "the wait is over");
    assert!(
        got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "your answer"),
        "{got}"
    );
}

// Proves wait_for_message also wakes for room mail (ambient, never pushed).
#[test]
fn wait_blocks_until_room_mail_arrives() {
    let d = TestDaemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/sessions", &json!({"id": A, "cwd": "/tmp"}))
            .0,
        200
    );
    let mut w = Driven::start(&d, B, None);
    linked(&d, B);
    let send = json!({"as": A, "room": "everyone", "body": "room news"});
    let (got, took) = wait_across(&d, &mut w, "/api/v1/broadcast", send);
    assert_ne!(got["timed_out"], true, "{got}");
    assert!(
        took < Duration::from_secs(5),
        "not at the timeout: {took:?} {got}"
    );
    assert!(
        got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "room news"),
        "{got}"
    );
}

// Proves wait_for_message with no mail returns timed_out after timeout_s,
// and refuses a timeout over 600 s.
#[test]
fn wait_times_out_without_mail() {
    let d = TestDaemon::start(&[]);
    let mut w = Driven::start(&d, B, None);
    linked(&d, B);
    let started = Instant::now();
    let got = ok_json(&w.call("wait_for_message", json!({"timeout_s": 1})));
    let took = started.elapsed();
    assert_eq!(got["timed_out"], true, "{got}");
    assert_eq!(got["messages"], json!([]), "{got}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let too_long = w.call_raw("wait_for_message", json!({"timeout_s": 601}));
    assert!(
        too_long.get("error").is_some() || too_long["result"]["isError"] == true,
        "{too_long}"
    );
}

// Proves a wait cancelled by its shim dying claims nothing: mail sent after
// the shim is gone stays unread and surfaces at the session's next hook.
#[test]
fn a_killed_waiter_loses_no_mail() {
    let d = TestDaemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/sessions", &json!({"id": A, "cwd": "/tmp"}))
            .0,
        200
    );
    let mut w = Driven::start(&d, B, None);
    linked(&d, B);
    w.start_call("wait_for_message", json!({"timeout_s": 60}));
    until_waiting(&d);
    w.kill();
    wait_until(Duration::from_secs(5), || links(&d) == 0).expect("the daemon saw the link drop");
    wait_until(Duration::from_secs(5), || {
        gauge(&d, "muster_mail_waits") == 0
    })
    .expect("the dead shim's wait was cancelled");

    let (status, v) = d.post_json(
        "/api/v1/messages",
        &json!({"as": A, "to": B, "body": "sent after the waiter died"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "queued", "no live link to push to: {v}");
    let ctx = prompt_submit(&d, B).expect("the mail surfaces at B's next hook");
    assert!(ctx.contains("sent after the waiter died"), "{ctx}");
    assert_eq!(prompt_submit(&d, B), None, "once");
}

// Proves the MCP `reserve` tool grants, refuses a conflict naming the holder,
// and answers bad input (malformed globs, paths outside the repository,
// zero, negative and huge TTLs, no or too many paths, long reason) with
// errors, granting nothing.
#[test]
fn mcp_reserve_grants_refuses_and_rejects_bad_input() {
    let d = TestDaemon::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().canonicalize().unwrap().join("proj");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let mut a = Driven::start(&d, A, Some(&repo));
    let mut b = Driven::start(&d, B, Some(&repo.join("src")));
    let nick_a = linked(&d, A);
    linked(&d, B);

    let many: Vec<String> = (0..65).map(|i| format!("f{i}.rs")).collect();
    let bad = [
        json!({"paths": ["src/[ab].rs"]}),
        json!({"paths": ["src/{a,b}.rs"]}),
        json!({"paths": ["/etc/passwd"]}),
        json!({"paths": ["../../../../x"]}),
        json!({"paths": ["a.rs"], "ttl_s": 0}),
        json!({"paths": ["a.rs"], "ttl_s": -5}),
        json!({"paths": ["a.rs"], "ttl_s": 10_000_000}),
        json!({"paths": []}),
        json!({}),
        json!({"paths": many}),
        json!({"paths": ["a.rs"], "reason": "r".repeat(201)}),
        json!({"paths": "a.rs"}),
        json!({"paths": ["a.rs"], "exclusive": "yes"}),
    ];
    for args in bad {
        // A refusal is a tool error, or (for arguments of the wrong type) a JSON-RPC error.
        let answer = a.call_raw("reserve", args.clone());
        let why = if let Some(e) = answer.get("error") {
            e["message"].as_str().unwrap_or_default().to_string()
        } else {
            assert_eq!(answer["result"]["isError"], true, "{args}: {answer}");
            answer["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert!(!why.is_empty(), "{args}: the error says why: {answer}");
        let list = ok_json(&a.call("reservations", json!({})));
        assert_eq!(list["reservations"], json!([]), "{args} granted nothing");
    }

    let granted = ok_json(&a.call(
        "reserve",
        json!({"paths": ["src/a.rs"], "reason": "mcp claim", "ttl_s": 600}),
    ));
    assert_eq!(
        granted["reservations"][0]["pattern"], "src/a.rs",
        "{granted}"
    );
    let refused = b.call("reserve", json!({"paths": ["a.rs", "b.rs"]}));
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains(&nick_a) && text.contains("mcp claim") && text.contains(A),
        "{text}"
    );
    let list = ok_json(&b.call("reservations", json!({})));
    assert_eq!(
        list["reservations"].as_array().unwrap().len(),
        1,
        "all or nothing: {list}"
    );
    assert_eq!(ok_json(&a.call("release", json!({})))["released"], 1);
    assert!(
        ok_json(&b.call("reserve", json!({"paths": ["a.rs"]})))["reservations"][0]["pattern"]
            == "src/a.rs"
    );
}
