//! The stdio shim's life cycle against a real daemon: it links, it unlinks
//! when its client closes stdin, and it exits when its client or
//! its parent goes away.

mod common;
#[path = "support/peer_shim.rs"]
mod peer_shim;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use peer_shim::{discover_meta, Handshake, PeerShim};
use serde_json::{json, Value};

/// `muster_links` from /metrics: shim links attached now.
fn links(d: &TestDaemon) -> u64 {
    let text = d
        .http()
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("muster_links "))
        .unwrap()
        .parse()
        .unwrap()
}

/// A shim for `session`, initialized by hand; its stdin stays open until dropped.
fn shim(d: &TestDaemon, session: &str) -> Child {
    let mut child = muster_cmd(&d.url)
        .arg("mcp")
        .env("MUSTER_SESSION_ID", session)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    for line in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    child
}

fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// Proves the shim's end of the linked rule: a shim links, and once its
// client closes stdin the shim exits and the daemon sees the link drop.
// (What the daemon does with a link up and after it drops is tested in
// process: crates/daemon/tests/time.rs.)
#[test]
fn a_shim_whose_client_closes_stdin_exits_and_unlinks() {
    let d = TestDaemon::start(&[]);
    let id = "70000000-0000-4000-8000-000000000001";
    let mut child = shim(&d, id);
    wait_until(Duration::from_secs(5), || links(&d) == 1).expect("the shim linked");

    drop(child.stdin.take());
    assert!(
        exited_within(&mut child, Duration::from_secs(3)),
        "the shim exits when stdin closes"
    );
    wait_until(Duration::from_secs(3), || links(&d) == 0).expect("the daemon saw the link go");
}

// Proves the shim exits when the process that started it dies, even if its
// stdin stays open and its client never initialized.
#[test]
fn shim_exits_when_its_parent_dies() {
    let d = TestDaemon::start(&[]);
    let pidfile = tempfile::NamedTempFile::new().unwrap();
    // sh starts the shim (stdin: a pipe from a long sleep), records its pid, and exits.
    let script = format!(
        "sleep 30 | MUSTER_SESSION_ID=orphan-1 '{BIN}' mcp & echo $! > '{}'; sleep 0.5",
        pidfile.path().display()
    );
    let mut sh = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("MUSTER_URL", &d.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(sh.wait().unwrap().success());
    let pid: u32 = std::fs::read_to_string(pidfile.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = |pid: u32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    let gone = wait_until(Duration::from_secs(3), || !alive(pid));
    assert!(
        gone.is_some(),
        "the shim (pid {pid}) outlived its parent by 3 s"
    );
}

/// A shim whose stdout answers are read back by request id.
struct Driven {
    child: Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Driven {
    fn start(d: &TestDaemon, env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut cmd = muster_cmd(&d.url);
        cmd.arg("mcp").stdin(Stdio::piped()).stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
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
        let mut me = Driven { child, lines };
        me.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "codex-like", "version": "1"}}}));
        me.answer(1);
        me.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        me
    }

    fn send(&mut self, v: serde_json::Value) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{v}").unwrap();
    }

    fn answer(&self, id: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(v) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if v["id"] == id {
                    return v;
                }
            }
        }
        panic!("no answer to request {id}");
    }

    /// Calls a tool with the given `_meta`, returning the JSON-RPC answer.
    fn call(
        &mut self,
        id: u64,
        tool: &str,
        args: serde_json::Value,
        meta: serde_json::Value,
    ) -> serde_json::Value {
        let mut params = json!({"name": tool, "arguments": args});
        if !meta.is_null() {
            params["_meta"] = meta;
        }
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}));
        self.answer(id)
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Proves per-call identity: a shim for a harness that names the session on
// each call (MUSTER_HARNESS=codex, no session variable) acts for exactly the
// session in `_meta.sessionId` or `_session_id`, registers it, and refuses a
// call that names none.
#[test]
fn per_call_shim_acts_for_the_session_each_call_names() {
    let d = TestDaemon::start(&[]);
    let mut shim = Driven::start(&d, &[("MUSTER_HARNESS", "codex")]);
    let (a, b) = (
        "80000000-0000-4000-8000-00000000000a",
        "80000000-0000-4000-8000-00000000000b",
    );
    assert_eq!(d.post_json("/api/v1/sessions", &json!({"id": b})).0, 200);

    let sent = shim.call(
        2,
        "send_message",
        json!({"to": b, "body": "from codex"}),
        json!({"sessionId": a}),
    );
    let text = sent["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{sent}"));
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        v["message"]["from"], a,
        "acts as the session in _meta.sessionId: {v}"
    );
    // The sender is told what became of its message, not its own body again.
    assert_eq!(v["state"], "queued", "{v}");
    assert_eq!(v["deliveries"][0]["recipient"], b, "{v}");
    assert!(
        v["message"]["id"].is_string() && v["message"].get("body").is_none(),
        "{v}"
    );
    let me = d.get("/api/v1/roster").1["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a)
        .cloned();
    assert_eq!(
        me.expect("the named session was registered")["harness"],
        "codex"
    );

    let who = shim.call(
        3,
        "whoami",
        json!({"_session_id": b}),
        serde_json::Value::Null,
    );
    let text = who["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(text).unwrap()["id"],
        b,
        "or the one in _session_id"
    );

    let anon = shim.call(4, "whoami", json!({}), serde_json::Value::Null);
    assert_eq!(
        anon["result"]["isError"], true,
        "a call naming no session is refused: {anon}"
    );
    assert!(
        anon["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("names no session"),
        "{anon}"
    );
}

/// `can_push` of a session as the roster shows it, once the session is linked.
fn linked_can_push(d: &TestDaemon, id: &str, expected: bool) -> Option<bool> {
    let mut found = None;
    // A shim links first and says it takes pushes once its client's handshake is done.
    wait_until(Duration::from_secs(10), || {
        let roster = d.get("/api/v1/roster").1;
        found = roster["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id && s["link_up"] == true)
            .map(|s| s["can_push"].as_bool().unwrap());
        found == Some(expected)
    });
    found
}

// Proves pushes are only claimed where they are shown: a shim whose parent was not launched with a channel naming muster (and no MUSTER_CHANNELS) declines pushes, so its mail comes through hooks; one whose parent's command line has `--dangerously-load-development-channels server:muster` takes them.
#[test]
fn channel_display_is_detected_from_the_parent_command_line() {
    let d = TestDaemon::start(&[]);
    let start = |id: &str, flags: &str| {
        // The shim claims pushes only after its client's handshake.
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let script =
            format!("(printf '%s\\n' '{init}' '{initialized}'; sleep 30) | '{BIN}' mcp; true");
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script, "sh"]);
        if !flags.is_empty() {
            cmd.args(flags.split(' '));
        }
        cmd.env("MUSTER_URL", &d.url)
            .env("MUSTER_SESSION_ID", id)
            .env("XDG_CONFIG_HOME", "/nonexistent-muster-test-config")
            .env_remove("MUSTER_CHANNELS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut plain = start("c0000000-plain", "");
    let mut shown = start(
        "c0000000-shown",
        "--dangerously-load-development-channels server:muster",
    );
    assert_eq!(
        linked_can_push(&d, "c0000000-plain", false),
        Some(false),
        "no flag: no pushes"
    );
    assert_eq!(
        linked_can_push(&d, "c0000000-shown", true),
        Some(true),
        "the channel flag: pushes"
    );
    for child in [&mut plain, &mut shown] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Sends `body` to `to` as the operator; returns the answer and how long it took.
fn timed_send(d: &TestDaemon, to: &str, body: &str) -> (Value, Duration) {
    let started = Instant::now();
    let (status, answer) = d.post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{answer}");
    (answer, started.elapsed())
}

// Proves defect 1 of the delivery issue is gone: a client that speaks only the
// 2026-07-28 revision (`server/discover`, `tools/list`; no initialize, no
// initialized), as Claude Code 2.1.332 does, gets live pushes: the send
// answers `pushed` at once and the channel line reaches the client.
#[test]
fn a_discover_only_client_gets_pushes() {
    let d = TestDaemon::start(&[]);
    let peer = PeerShim::start_with(
        &d,
        "d1500000-0000-4000-8000-000000000001",
        Handshake::Discover,
    );
    let (answer, took) = timed_send(&d, &peer.id, "after discover");
    assert_eq!(answer["state"], "pushed", "{answer}");
    assert!(
        took < Duration::from_millis(400),
        "a send to a ready shim took {took:?}"
    );
    let line = peer
        .channel_with("after discover", Duration::from_secs(5))
        .expect("the channel line reached the client");
    assert_eq!(
        line["params"]["meta"]["message_id"],
        answer["message"]["id"]
    );
}

// Proves no sender waits on a shim that cannot write: a shim whose client has
// not finished any handshake is linked but takes no pushes, so a send to it
// answers `queued` without waiting out a confirm window; once the client
// finishes its handshake, the waiting mail is pushed to it, once.
#[test]
fn a_shim_before_its_handshake_never_stalls_a_sender() {
    let d = TestDaemon::start(&[]);
    let mut peer =
        PeerShim::start_with(&d, "d1500000-0000-4000-8000-000000000002", Handshake::None);
    let (answer, took) = timed_send(&d, &peer.id, "before the handshake");
    assert_eq!(answer["state"], "queued", "{answer}");
    assert!(
        took < Duration::from_millis(400),
        "a send to a shim without a handshake took {took:?}"
    );
    peer.send_line(&json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": discover_meta()}}));
    peer.send_line(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": discover_meta()}}));
    let pushes: Vec<Value> = peer
        .lines_within(Duration::from_secs(2))
        .into_iter()
        .filter(|l| l["method"] == "notifications/claude/channel")
        .collect();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(
        pushes[0]["params"]["meta"]["message_id"],
        answer["message"]["id"]
    );
}

// Proves a shim that means to push steers Claude Code onto the one connection
// kind on which it shows pushes: with channels on, `server/discover` is
// refused with "method not found" (Claude Code 2.1.332 then falls back to
// `initialize`); with channels off it is answered, and the modern revision
// is used.
#[test]
fn server_discover_is_refused_only_by_a_shim_that_pushes() {
    let d = TestDaemon::start(&[]);
    for (channels, refused) in [("on", true), ("off", false)] {
        let mut child = muster_cmd(&d.url)
            .arg("mcp")
            .env(
                "MUSTER_SESSION_ID",
                format!("d1500000-0000-4000-8000-00000000000{}", refused as u8),
            )
            .env("MUSTER_CHANNELS", channels)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": discover_meta()}});
        writeln!(child.stdin.as_mut().unwrap(), "{discover}").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        if refused {
            assert_eq!(
                answer["error"]["code"], -32601,
                "channels {channels}: {answer}"
            );
        } else {
            assert!(
                answer["result"]["supportedVersions"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty()),
                "{answer}"
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A counter from /metrics, by its whole name with labels.
fn metric(d: &TestDaemon, name: &str) -> u64 {
    let text = d
        .http()
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

// Proves the link's transport choice: a shim of a loopback daemon links over
// the daemon's Unix socket (in a directory only this user can enter, the
// file 0600), a shim told MUSTER_UNIX_SOCKET=off links over TCP, both work,
// and the socket file goes when the daemon stops.
#[cfg(unix)]
#[test]
fn a_shim_links_over_the_unix_socket_and_over_tcp_when_told_to() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut d = TestDaemon::start(&[]);
    let port = d.url.rsplit(':').next().unwrap().to_string();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let dir = runtime.join(format!("muster-{uid}"));
    let socket = dir.join(format!("{port}.sock"));
    let meta = std::fs::metadata(&dir).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), uid);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(metric(&d, "muster_connections_total{listener=\"unix\"}"), 0);

    let mut over_unix = shim(&d, "70000000-0000-4000-8000-0000000000a1");
    wait_until(Duration::from_secs(5), || links(&d) == 1).expect("the first shim linked");
    assert_eq!(metric(&d, "muster_connections_total{listener=\"unix\"}"), 1);

    let mut over_tcp = muster_cmd(&d.url)
        .arg("mcp")
        .env("MUSTER_SESSION_ID", "70000000-0000-4000-8000-0000000000a2")
        .env("MUSTER_UNIX_SOCKET", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), || links(&d) == 2).expect("the second shim linked");
    assert_eq!(
        metric(&d, "muster_connections_total{listener=\"unix\"}"),
        1,
        "MUSTER_UNIX_SOCKET=off links over TCP"
    );
    // Both links count as live sessions.
    let roster = d.muster_json(&["roster", "--json"]);
    assert_eq!(roster["sessions"].as_array().unwrap().len(), 2, "{roster}");

    for shim in [&mut over_unix, &mut over_tcp] {
        drop(shim.stdin.take());
        let _ = shim.wait();
    }
    assert!(
        d.terminate(Duration::from_secs(10)),
        "the daemon stops cleanly"
    );
    assert!(!socket.exists(), "the socket file goes with the daemon");
}

/// Starts a shim for `session` with `token` (none: no MUSTER_TOKEN) and,
/// when given, another runtime directory (where it finds neither the
/// daemon's socket nor its key); its `whoami` answer (see [`shim_whoami`]).
fn whoami_with_token(
    d: &TestDaemon,
    session: &str,
    token: Option<&str>,
    runtime_dir: Option<&Path>,
) -> (String, bool) {
    let mut cmd = muster_cmd(&d.url);
    cmd.arg("mcp").env("MUSTER_SESSION_ID", session);
    if let Some(token) = token {
        cmd.env("MUSTER_TOKEN", token);
    }
    if let Some(dir) = runtime_dir {
        cmd.env("XDG_RUNTIME_DIR", dir);
    }
    shim_whoami(cmd)
}

// Proves token mode works for agents: with `serve --token`, a shim given
// the token (MUSTER_TOKEN) links and its tool calls run as its session; a
// shim that has neither the token nor the daemon's local key (it runs
// elsewhere: another runtime directory), or a wrong token, is told in so
// many words that it was refused, instead of looping on "unreachable". The
// daemon's own user needs no token: its shims show the local key.
#[test]
fn a_shim_links_to_a_token_daemon_with_its_token_and_says_so_without_it() {
    let d = TestDaemon::start(&["--token", "sekrit-token-1"]);
    let elsewhere = tempfile::tempdir().unwrap();
    let (text, is_error) = whoami_with_token(
        &d,
        "70000000-0000-4000-8000-0000000000b1",
        Some("sekrit-token-1"),
        Some(elsewhere.path()),
    );
    assert!(!is_error, "{text}");
    let me: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(me["id"], "70000000-0000-4000-8000-0000000000b1", "{me}");

    for token in [None, Some("wrong-token")] {
        let (text, is_error) = whoami_with_token(
            &d,
            "70000000-0000-4000-8000-0000000000b2",
            token,
            Some(elsewhere.path()),
        );
        assert!(is_error, "{token:?}: {text}");
        assert!(text.contains("refused this shim"), "{token:?}: {text}");
        assert!(text.contains("Bearer <token>"), "{token:?}: {text}");
        assert!(
            !text.contains("sekrit"),
            "the token is never echoed: {text}"
        );
    }

    let (text, is_error) =
        whoami_with_token(&d, "70000000-0000-4000-8000-0000000000b3", None, None);
    assert!(
        !is_error,
        "the daemon's own user links with its key: {text}"
    );
}

/// Message ids of the channel notifications among `lines`, in order.
fn channel_ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["method"] == "notifications/claude/channel")
        .map(|l| {
            l["params"]["meta"]["message_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

// Proves a push the shim writes to its agent while its link is down is
// confirmed on the next link and never shown twice: the test does not read
// the shim's stdout while 20 pushes of 6,000 characters arrive, so about
// ten fill the pipe and the rest wait in the shim unconfirmed; the daemon
// is killed with kill -9, the test then reads them all (written, so
// confirmed, with no link up) and restarts the daemon on the same port and
// data directory. The agent gets each of the 20 messages exactly once, and
// the restarted daemon records every one as pushed.
#[test]
fn pushes_written_while_the_link_is_down_are_confirmed_after_it_and_shown_once() {
    let mut first = TestDaemon::start(&[]);
    let port: u16 = first.url.rsplit(':').next().unwrap().parse().unwrap();
    let id = "relink-peer";
    let mut child = muster_cmd(&first.url)
        .arg("mcp")
        .env("MUSTER_SESSION_ID", id)
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
    assert_eq!(linked_can_push(&first, id, true), Some(true));

    let body = |i: usize| format!("{i:02} {}", "x".repeat(5_997));
    let senders: Vec<_> = (0..20)
        .map(|i| {
            let (url, key, text) = (first.url.clone(), first.key(), body(i));
            std::thread::spawn(move || {
                let v: Value = http()
                    .post(format!("{url}/api/v1/messages"))
                    .header(muster_daemon::local_key::HEADER, key)
                    .json(&json!({"to": id, "body": text}))
                    .send()
                    .and_then(|r| r.json())
                    .expect("send");
                (
                    v["message"]["id"].as_str().unwrap().to_string(),
                    v["message"]["from"].as_str().unwrap().to_string(),
                    v["state"].clone(),
                )
            })
        })
        .collect();
    let sent: Vec<(String, String, Value)> =
        senders.into_iter().map(|s| s.join().unwrap()).collect();
    let unconfirmed = sent
        .iter()
        .filter(|(_, _, state)| *state == "queued")
        .count();
    assert!(
        unconfirmed > 0,
        "the full pipe left pushes unconfirmed: {sent:?}"
    );
    first.kill9();

    // Now the agent reads: what the shim writes from here on, it writes
    // with no link up.
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
        }
    });
    let mut got: Vec<Value> = Vec::new();
    wait_until(Duration::from_secs(5), || {
        got.extend(lines.try_iter());
        channel_ids(&got).len() >= sent.len()
    });

    let second = TestDaemon::start_on(&first.data_dir, &format!("127.0.0.1:{port}"), &[]);
    let relinked = wait_until(Duration::from_secs(10), || {
        second.get("/api/v1/roster").1["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id && s["link_up"] == true && s["can_push"] == true)
    });
    assert!(
        relinked.is_some(),
        "the shim re-linked to the restarted daemon"
    );
    let from = sent[0].1.clone();
    let thread = |m: &str| {
        second
            .get(&format!("/api/v1/messages/{m}/thread?as={from}"))
            .1
    };
    let pushed = |m: &str| {
        thread(m)["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["recipient"] == id && d["state"] == "pushed")
    };
    let all_pushed = wait_until(Duration::from_secs(5), || {
        sent.iter().all(|(m, _, _)| pushed(m))
    });
    assert!(
        all_pushed.is_some(),
        "not recorded as pushed: {:?}",
        sent.iter()
            .filter(|(m, _, _)| !pushed(m))
            .map(|(m, _, _)| thread(m))
            .collect::<Vec<_>>()
    );
    // Time for any second push of them to reach the agent.
    std::thread::sleep(Duration::from_secs(1));
    got.extend(lines.try_iter());

    let mut shown = channel_ids(&got);
    shown.sort();
    let mut expected: Vec<String> = sent.into_iter().map(|(m, _, _)| m).collect();
    expected.sort();
    assert_eq!(shown, expected, "each message shown once");
    let _ = child.kill();
    let _ = child.wait();
}
