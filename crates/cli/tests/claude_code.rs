//! End to end with the real Claude Code binary, offline: `claude -p` runs
//! whole turns against a scripted local Messages API stub, with muster's
//! hooks (`muster hook <event>`) in the project's `.claude/settings.json`
//! talking to a real `muster serve`.
//!
//! The binary comes from `MUSTER_CLAUDE_BIN` (set by .ci/run), else from the
//! cache `scripts/install-claude-code.sh` installs into. Without it these
//! tests fail, saying how to install it.

mod common;
#[path = "support/messages_stub.rs"]
mod messages_stub;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use messages_stub::{MessagesStub, Turn};
use peer_shim::PeerShim;
use sandbox::{after_last, count, harness_bin, known_session, new_uuid, read, reserved_schema};
use serde_json::{json, Value};

/// How long one `claude -p` run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The Claude Code executable, or a failure that says how to get it.
fn claude_bin() -> PathBuf {
    harness_bin(
        "MUSTER_CLAUDE_BIN",
        "claude-code/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        "install-claude-code.sh",
    )
}

/// A daemon, a stub, a project directory whose settings hook Claude Code up
/// to the daemon, and a throwaway HOME.
struct Harness {
    bin: PathBuf,
    daemon: TestDaemon,
    stub: MessagesStub,
    project: tempfile::TempDir,
    home: tempfile::TempDir,
    runs: std::cell::Cell<u32>,
}

/// A `claude` process; killed if the test ends while it runs.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    args: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits for the run to end; asserts it succeeded; returns its `--output-format json` result.
    fn finish(mut self) -> Value {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for claude") {
                break status;
            }
            if start.elapsed() > RUN_LIMIT {
                panic!("claude {:?} did not finish within {RUN_LIMIT:?}; stderr: {}", self.args, read(&self.err));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out, err) = (read(&self.out), read(&self.err));
        assert!(status.success(), "claude {:?} exited with {status}\nstdout: {out}\nstderr: {err}", self.args);
        let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!("claude {:?} printed no JSON result ({e})\nstdout: {out}\nstderr: {err}", self.args)
        });
        assert_eq!(result["is_error"], false, "claude {:?} reported an error: {result}\nstderr: {err}", self.args);
        result
    }
}

impl Harness {
    fn new() -> Self {
        let bin = claude_bin();
        let daemon = TestDaemon::start(&[]);
        let stub = MessagesStub::start();
        let project = tempfile::tempdir().expect("project dir");
        let home = tempfile::tempdir().expect("home dir");
        // The project is set up the way a user would: `muster install claude`
        // (hooks in .claude/settings.json, the MCP server in .mcp.json). Its
        // install record goes to the throwaway home, never the real one.
        let install = muster_cmd(&daemon.url)
            .args(["install", "claude", "--project"])
            .arg(project.path())
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", home.path().join(".local/state"))
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .output()
            .expect("run muster install");
        assert!(install.status.success(), "muster install claude failed: {}", String::from_utf8_lossy(&install.stderr));
        Harness { bin, daemon, stub, project, home, runs: std::cell::Cell::new(0) }
    }

    /// Starts `claude <args> --output-format json` in the project, offline.
    fn spawn(&self, args: &[&str]) -> Running {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out = self.home.path().join(format!("run{n}.stdout"));
        let err = self.home.path().join(format!("run{n}.stderr"));
        let child = Command::new(&self.bin)
            .args(args)
            .args(["--output-format", "json"])
            .current_dir(self.project.path())
            // Nothing of the environment running the tests leaks in (a Claude
            // Code session running them would export its own variables).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("TMPDIR", std::env::temp_dir())
            .env("ANTHROPIC_BASE_URL", &self.stub.url)
            .env("ANTHROPIC_API_KEY", "sk-ant-test-offline")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            // For the hooks, which inherit Claude Code's environment.
            .env("MUSTER_URL", &self.daemon.url)
            .env("MUSTER_OPERATOR", "tester")
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        Running { child, out, err, args: args.iter().map(|s| s.to_string()).collect() }
    }

    /// Runs `claude <args>` to the end; returns its JSON result.
    fn run(&self, args: &[&str]) -> Value {
        self.spawn(args).finish()
    }
}

/// The part of a request this turn added: the messages after the last assistant message.
fn fresh_part(body: &Value) -> Value {
    after_last(&body["messages"], "assistant")
}

// Proves a real `claude -p` puts its --session-id on muster's roster (harness "claude") via hooks and its model request carries muster's identity.
#[test]
fn claude_session_joins_the_roster_and_the_model_sees_its_identity() {
    let h = Harness::new();
    let id = new_uuid();
    h.stub.push(Turn::text("hello from the stub"));

    // Hold the model's answer so the roster can be read mid-turn.
    h.stub.hold();
    let run = h.spawn(&["-p", "hello", "--session-id", &id]);
    assert!(h.stub.wait_for_requests(0, 1, RUN_LIMIT), "Claude Code made no model request; stderr: {}", read(&run.err));
    let (status, roster) = h.daemon.get("/api/v1/roster");
    assert_eq!(status, 200);
    let me = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| panic!("session {id} is not on the roster mid-turn: {roster}"))
        .clone();
    assert_eq!(me["harness"], "claude", "{me}");
    assert_eq!(me["activity"], "busy", "UserPromptSubmit marks the session busy: {me}");
    let cwd = h.project.path().canonicalize().unwrap();
    assert_eq!(Path::new(me["cwd"].as_str().unwrap()).canonicalize().unwrap(), cwd, "{me}");
    let nickname = me["nickname"].as_str().unwrap().to_string();
    h.stub.release();

    let result = run.finish();
    assert_eq!(result["session_id"], id.as_str(), "{result}");
    assert_eq!(result["result"], "hello from the stub", "{result}");
    assert!(h.stub.unknown().is_empty(), "Claude Code called paths the stub does not serve: {:?}", h.stub.unknown());

    let bodies = h.stub.bodies();
    let with_identity: Vec<&Value> = bodies.iter().filter(|b| count(b, "<muster-identity>") > 0).collect();
    assert!(!with_identity.is_empty(), "no model request carries muster's identity: {bodies:?}");
    let first = with_identity[0];
    assert_eq!(count(first, "<muster-identity>"), 1, "the identity is injected once: {first}");
    assert!(count(first, &nickname) > 0, "the identity names the nickname {nickname}: {first}");
    assert!(count(first, &id) > 0, "the identity names the session id: {first}");

    // SessionEnd ran: the session left the roster but stays known.
    assert!(
        wait_until(Duration::from_secs(10), || !h.daemon.roster_ids().contains(&id)).is_some(),
        "SessionEnd did not take {id} off the roster"
    );
    let gone = known_session(&h.daemon, &id).expect("a session that left stays known");
    assert!(!gone["left_at"].is_null(), "{gone}");
    assert_eq!(gone["nickname"], nickname.as_str(), "{gone}");
}

// Proves mail sent to a Claude Code session between runs reaches its next `--resume` run's model request exactly once, and is not injected again.
#[test]
fn mail_reaches_the_resumed_session_exactly_once() {
    let h = Harness::new();
    let id = new_uuid();
    h.run(&["-p", "hello", "--session-id", &id]);
    assert!(known_session(&h.daemon, &id).is_some(), "the first run registered {id}");

    let marker = format!("MAILMARK{}", new_uuid().replace('-', ""));
    let sent = h.daemon.muster_json(&["send", &id, &format!("please rebase onto main ({marker})"), "--json"]);
    assert_eq!(sent["state"], "queued", "{sent}");
    assert_eq!(sent["deliveries"][0]["recipient"], id.as_str(), "{sent}");

    let mark = h.stub.mark();
    let second = h.run(&["-p", "next", "--resume", &id]);
    assert_eq!(second["session_id"], id.as_str(), "{second}");
    let bodies = h.stub.bodies_since(mark);
    assert!(!bodies.is_empty(), "the resumed run made no model request");
    let total: usize = bodies.iter().map(|b| count(b, &marker)).sum();
    assert_eq!(
        total,
        1,
        "the mail appears exactly once across the run's {} model request(s): {bodies:?}",
        bodies.len()
    );
    assert_eq!(count(&fresh_part(&bodies[0]), &marker), 1, "the mail arrives with this turn: {}", bodies[0]);
    assert!(
        wait_until(Duration::from_secs(5), || h.daemon.status()["unread_deliveries"] == 0).is_some(),
        "the delivery is marked surfaced: {}",
        h.daemon.status()
    );

    let mark = h.stub.mark();
    h.run(&["-p", "third", "--resume", &id]);
    let bodies = h.stub.bodies_since(mark);
    assert!(!bodies.is_empty(), "the third run made no model request");
    for body in &bodies {
        assert_eq!(count(&fresh_part(body), &marker), 0, "the third turn carries the mail again: {body}");
        assert!(count(body, &marker) <= 1, "the mail is in the transcript at most once: {body}");
    }
}

// Proves a scripted `tool_use` makes Claude Code run the tool, fire PreToolUse (muster records the tool name) and send the result back.
#[test]
fn a_scripted_tool_call_runs_through_pre_tool_use() {
    let h = Harness::new();
    let id = new_uuid();
    let file = h.project.path().join("notes.txt");
    std::fs::write(&file, "TOOLRESULT-4711\n").unwrap();
    h.stub.push(Turn::tool_use("Read", json!({ "file_path": file.to_str().unwrap() })));
    h.stub.push(Turn::text("read it"));

    let result = h.run(&["-p", "read notes.txt", "--session-id", &id]);
    assert_eq!(result["result"], "read it", "{result}");
    assert_eq!(h.stub.pending(), 0, "both scripted turns were used");

    let bodies = h.stub.bodies();
    let after_tool = bodies.iter().find(|b| count(b, "tool_result") > 0).expect("a request carries the tool result");
    assert!(count(after_tool, "TOOLRESULT-4711") > 0, "the Read result reaches the model: {after_tool}");

    let me = known_session(&h.daemon, &id).expect("the session is known");
    assert_eq!(me["last_tool"], "Read", "PreToolUse told muster the tool's name: {me}");
}

// Proves a scripted `tool_use` of mcp__muster__send_message in a real Claude Code run (set up by `muster install claude`) goes through `muster mcp` and reaches a peer shim as a live channel notification, and the tool result tells the model it was pushed.
#[test]
fn claude_send_message_reaches_a_peer_shim_live() {
    // `muster install claude` put the server in .mcp.json and approved it;
    // Claude Code starts it with its own environment (MUSTER_URL included).
    let h = Harness::new();
    let peer_id = new_uuid();
    let peer = PeerShim::start(&h.daemon, &peer_id);
    let linked = wait_until(Duration::from_secs(10), || {
        let roster = h.daemon.get("/api/v1/roster").1;
        roster["sessions"].as_array().unwrap().iter().any(|s| s["id"] == peer_id.as_str() && s["link"] == "link")
    });
    assert!(linked.is_some(), "the peer shim linked to the daemon");

    let marker = format!("PUSHMARK{}", new_uuid().replace('-', ""));
    h.stub.push(Turn::tool_use(
        "mcp__muster__send_message",
        json!({"to": peer_id, "body": format!("tests pass on my side ({marker})")}),
    ));
    h.stub.push(Turn::text("sent"));
    let id = new_uuid();
    let result = h.run(&["-p", "tell the peer", "--session-id", &id, "--allowedTools", "mcp__muster__send_message"]);
    assert_eq!(result["result"], "sent", "{result}");

    let bodies = h.stub.bodies();
    let tool_result = bodies
        .iter()
        .find(|b| count(b, "tool_result") > 0)
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"));
    assert!(count(tool_result, "pushed") > 0, "the model is told the message was pushed: {tool_result}");

    let push = peer.channel_with(&marker, Duration::from_secs(10)).expect("the peer shim got the channel notification");
    let meta = push["params"]["meta"].as_object().unwrap();
    assert_eq!(meta["from"], id.as_str(), "the push names the Claude session as sender: {push}");
    assert!(meta.values().all(Value::is_string), "meta values are strings: {push}");
}

// Proves the edit guard in a real Claude Code run: a scripted `Edit` of a file another session holds exclusively is refused by the PreToolUse hook, the file is untouched, and the refusal, naming the holder, reaches the model in the tool result.
#[test]
fn claude_edit_of_a_reserved_file_is_refused_with_the_holder_named() {
    let h = Harness::new();
    let (file, holder) = reserved_schema(&h.daemon, h.project.path());
    let holder_nick = &holder.nickname;

    h.stub.push(Turn::tool_use(
        "Edit",
        json!({"file_path": file.to_str().unwrap(), "old_string": "int", "new_string": "bigint"}),
    ));
    h.stub.push(Turn::text("ok, leaving it"));
    let id = new_uuid();
    let result = h.run(&["-p", "widen the id column", "--session-id", &id, "--allowedTools", "Edit"]);
    assert_eq!(result["result"], "ok, leaving it", "{result}");

    assert_eq!(std::fs::read_to_string(&file).unwrap(), "create table t (id int);\n", "the edit did not happen");
    let bodies = h.stub.bodies();
    let tool_result = bodies
        .iter()
        .find(|b| count(b, "tool_result") > 0)
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"));
    assert!(count(tool_result, holder_nick) > 0, "the refusal names the holder {holder_nick}: {tool_result}");
    assert!(count(tool_result, "migrating the schema") > 0, "and why they hold it: {tool_result}");

    // Control: once released, the same scripted edit goes through.
    holder.release(&h.daemon);
    h.stub.push(Turn::tool_use(
        "Edit",
        json!({"file_path": file.to_str().unwrap(), "old_string": "int", "new_string": "bigint"}),
    ));
    h.stub.push(Turn::text("done"));
    h.run(&["-p", "widen it now", "--resume", &id, "--allowedTools", "Edit"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "create table t (id bigint);\n", "the edit went through");
}
