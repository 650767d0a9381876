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
                panic!(
                    "claude {:?} did not finish within {RUN_LIMIT:?}; stderr: {}",
                    self.args,
                    read(&self.err)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (out, err) = (read(&self.out), read(&self.err));
        assert!(
            status.success(),
            "claude {:?} exited with {status}\nstdout: {out}\nstderr: {err}",
            self.args
        );
        let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!(
                "claude {:?} printed no JSON result ({e})\nstdout: {out}\nstderr: {err}",
                self.args
            )
        });
        assert_eq!(
            result["is_error"], false,
            "claude {:?} reported an error: {result}\nstderr: {err}",
            self.args
        );
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
        assert!(
            install.status.success(),
            "muster install claude failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        Harness {
            bin,
            daemon,
            stub,
            project,
            home,
            runs: std::cell::Cell::new(0),
        }
    }

    /// Starts `claude <args> --output-format json` in the project, offline.
    fn spawn(&self, args: &[&str]) -> Running {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out = self.home.path().join(format!("run{n}.stdout"));
        let err = self.home.path().join(format!("run{n}.stderr"));
        // Nothing of the environment running the tests leaks in (a Claude
        // Code session running them would export its own variables).
        let child = self
            .command()
            .args(args)
            .args(["--output-format", "json"])
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        Running {
            child,
            out,
            err,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Runs `claude <args>` to the end; returns its JSON result.
    fn run(&self, args: &[&str]) -> Value {
        self.spawn(args).finish()
    }

    /// The offline environment every `claude` here runs with.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(self.project.path())
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", self.home.path())
            // Hooks that run after the test's daemon stopped must not start one.
            .env("MUSTER_AUTOSTART", "0")
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("TMPDIR", std::env::temp_dir())
            .env("ANTHROPIC_BASE_URL", &self.stub.url)
            .env("ANTHROPIC_API_KEY", "sk-ant-test-offline")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            // For the hooks and the shim, which inherit Claude Code's environment.
            .env("MUSTER_URL", &self.daemon.url)
            .env("MUSTER_OPERATOR", "tester");
        cmd
    }

    /// Starts `claude -p --input-format stream-json <args>`: one process
    /// that runs a turn for each prompt written to it and stays up (its
    /// `muster mcp` shim linked) between turns.
    fn live(&self, args: &[&str]) -> Live {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out = self.home.path().join(format!("live{n}.stdout"));
        let err = self.home.path().join(format!("live{n}.stderr"));
        let mut child = self
            .command()
            .args([
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        let stdin = child.stdin.take();
        Live {
            child,
            stdin,
            out,
            err,
        }
    }

    /// A peer session (registered over the API, no harness) in the project.
    fn peer(&self) -> String {
        let peer = new_uuid();
        let (status, v) = self.daemon.post_json(
            "/api/v1/sessions",
            &json!({"id": peer, "cwd": self.project.path().to_str().unwrap()}),
        );
        assert_eq!(status, 200, "{v}");
        peer
    }

    /// `from` sends `body` to `to` over the API; the send answer.
    fn send(&self, from: &str, to: &str, body: &str) -> Value {
        let (status, v) = self.daemon.post_json(
            "/api/v1/messages",
            &json!({"as": from, "to": to, "body": body}),
        );
        assert_eq!(status, 200, "{v}");
        v
    }

    /// The state of message `id`'s delivery to `recipient`, as its sender `from` reads it.
    fn delivery_state(&self, id: &str, from: &str, recipient: &str) -> String {
        let (status, v) = self
            .daemon
            .get(&format!("/api/v1/messages/{id}/thread?as={from}"));
        assert_eq!(status, 200, "{v}");
        let d = v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["message_id"] == id && d["recipient"] == recipient)
            .unwrap_or_else(|| panic!("no delivery of {id} to {recipient}: {v}"));
        d["state"].as_str().unwrap().to_string()
    }

    /// The session on the live roster, if it is there.
    fn on_roster(&self, id: &str) -> Option<Value> {
        let (status, v) = self.daemon.get("/api/v1/roster");
        assert_eq!(status, 200, "{v}");
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
    }

    /// Bodies of the main-loop model requests (those offering tools) after `mark`.
    fn turn_bodies(&self, mark: usize) -> Vec<Value> {
        main_loop(self.stub.bodies_since(mark))
    }
}

/// A `claude -p --input-format stream-json` process; killed if the test ends while it runs.
struct Live {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: PathBuf,
    err: PathBuf,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Live {
    /// Writes one user prompt: a turn starts.
    fn prompt(&mut self, text: &str) {
        use std::io::Write;
        let line = json!({"type": "user", "message": {"role": "user", "content": text}});
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .expect("write a prompt to claude");
    }

    /// The `result` lines printed so far: one per finished turn.
    fn results(&self) -> Vec<Value> {
        sandbox::json_lines(&read(&self.out))
            .into_iter()
            .filter(|v| v["type"] == "result")
            .collect()
    }

    /// Waits until `n` turns have finished; returns the last one's result.
    fn wait_results(&self, n: usize) -> Value {
        let done = wait_until(RUN_LIMIT, || self.results().len() >= n);
        assert!(
            done.is_some(),
            "claude finished {} of {n} turns\nstdout: {}\nstderr: {}",
            self.results().len(),
            read(&self.out),
            read(&self.err)
        );
        let last = self.results()[n - 1].clone();
        assert_eq!(last["is_error"], false, "the turn failed: {last}");
        last
    }

    /// Closes stdin: claude ends the session and exits.
    fn close(mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.child.try_wait().expect("wait for claude").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "claude did not exit after its input closed; stderr: {}",
            read(&self.err)
        );
    }
}

/// The main-loop requests among model request bodies: those that offer tools
/// (side requests such as titles offer none).
fn main_loop(bodies: Vec<Value>) -> Vec<Value> {
    bodies
        .into_iter()
        .filter(|b| b["tools"].as_array().is_some_and(|t| !t.is_empty()))
        .collect()
}

/// A marker unique to one test message.
fn marker(prefix: &str) -> String {
    format!("{prefix}{}", new_uuid().replace('-', ""))
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
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Claude Code made no model request; stderr: {}",
        read(&run.err)
    );
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
    assert_eq!(
        me["activity"], "busy",
        "UserPromptSubmit marks the session busy: {me}"
    );
    let cwd = h.project.path().canonicalize().unwrap();
    assert_eq!(
        Path::new(me["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        cwd,
        "{me}"
    );
    let nickname = me["nickname"].as_str().unwrap().to_string();
    h.stub.release();

    let result = run.finish();
    assert_eq!(result["session_id"], id.as_str(), "{result}");
    assert_eq!(result["result"], "hello from the stub", "{result}");
    assert!(
        h.stub.unknown().is_empty(),
        "Claude Code called paths the stub does not serve: {:?}",
        h.stub.unknown()
    );

    let bodies = h.stub.bodies();
    let with_identity: Vec<&Value> = bodies
        .iter()
        .filter(|b| count(b, "<muster-identity>") > 0)
        .collect();
    assert!(
        !with_identity.is_empty(),
        "no model request carries muster's identity: {bodies:?}"
    );
    let first = with_identity[0];
    assert_eq!(
        count(first, "<muster-identity>"),
        1,
        "the identity is injected once: {first}"
    );
    assert!(
        count(first, &nickname) > 0,
        "the identity names the nickname {nickname}: {first}"
    );
    assert!(
        count(first, &id) > 0,
        "the identity names the session id: {first}"
    );

    // SessionEnd ran: the session left the roster but stays known.
    assert!(
        wait_until(Duration::from_secs(10), || !h
            .daemon
            .roster_ids()
            .contains(&id))
        .is_some(),
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
    assert!(
        known_session(&h.daemon, &id).is_some(),
        "the first run registered {id}"
    );

    let marker = format!("MAILMARK{}", new_uuid().replace('-', ""));
    let sent = h.daemon.muster_json(&[
        "send",
        &id,
        &format!("please rebase onto main ({marker})"),
        "--json",
    ]);
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
    assert_eq!(
        count(&fresh_part(&bodies[0]), &marker),
        1,
        "the mail arrives with this turn: {}",
        bodies[0]
    );
    assert!(
        wait_until(Duration::from_secs(5), || h.daemon.status()
            ["unread_deliveries"]
            == 0)
        .is_some(),
        "the delivery is marked surfaced: {}",
        h.daemon.status()
    );

    let mark = h.stub.mark();
    h.run(&["-p", "third", "--resume", &id]);
    let bodies = h.stub.bodies_since(mark);
    assert!(!bodies.is_empty(), "the third run made no model request");
    for body in &bodies {
        assert_eq!(
            count(&fresh_part(body), &marker),
            0,
            "the third turn carries the mail again: {body}"
        );
        assert!(
            count(body, &marker) <= 1,
            "the mail is in the transcript at most once: {body}"
        );
    }
}

// Proves a scripted `tool_use` makes Claude Code run the tool, fire PreToolUse (muster records the tool name) and send the result back.
#[test]
fn a_scripted_tool_call_runs_through_pre_tool_use() {
    let h = Harness::new();
    let id = new_uuid();
    let file = h.project.path().join("notes.txt");
    std::fs::write(&file, "TOOLRESULT-4711\n").unwrap();
    h.stub.push(Turn::tool_use(
        "Read",
        json!({ "file_path": file.to_str().unwrap() }),
    ));
    h.stub.push(Turn::text("read it"));

    let result = h.run(&["-p", "read notes.txt", "--session-id", &id]);
    assert_eq!(result["result"], "read it", "{result}");
    assert_eq!(h.stub.pending(), 0, "both scripted turns were used");

    let bodies = h.stub.bodies();
    let after_tool = bodies
        .iter()
        .find(|b| count(b, "tool_result") > 0)
        .expect("a request carries the tool result");
    assert!(
        count(after_tool, "TOOLRESULT-4711") > 0,
        "the Read result reaches the model: {after_tool}"
    );

    let me = known_session(&h.daemon, &id).expect("the session is known");
    assert_eq!(
        me["last_tool"], "Read",
        "PreToolUse told muster the tool's name: {me}"
    );
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
        roster["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == peer_id.as_str() && s["link"] == "link")
    });
    assert!(linked.is_some(), "the peer shim linked to the daemon");

    let marker = format!("PUSHMARK{}", new_uuid().replace('-', ""));
    h.stub.push(Turn::tool_use(
        "mcp__muster__send_message",
        json!({"to": peer_id, "body": format!("tests pass on my side ({marker})")}),
    ));
    h.stub.push(Turn::text("sent"));
    let id = new_uuid();
    let result = h.run(&[
        "-p",
        "tell the peer",
        "--session-id",
        &id,
        "--allowedTools",
        "mcp__muster__send_message",
    ]);
    assert_eq!(result["result"], "sent", "{result}");

    let bodies = h.stub.bodies();
    let tool_result = bodies
        .iter()
        .find(|b| count(b, "tool_result") > 0)
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"));
    assert!(
        count(tool_result, "pushed") > 0,
        "the model is told the message was pushed: {tool_result}"
    );

    let push = peer
        .channel_with(&marker, Duration::from_secs(10))
        .expect("the peer shim got the channel notification");
    let meta = push["params"]["meta"].as_object().unwrap();
    assert_eq!(
        meta["from"],
        id.as_str(),
        "the push names the Claude session as sender: {push}"
    );
    assert!(
        meta.values().all(Value::is_string),
        "meta values are strings: {push}"
    );
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
    let result = h.run(&[
        "-p",
        "widen the id column",
        "--session-id",
        &id,
        "--allowedTools",
        "Edit",
    ]);
    assert_eq!(result["result"], "ok, leaving it", "{result}");

    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id int);\n",
        "the edit did not happen"
    );
    let bodies = h.stub.bodies();
    let tool_result = bodies
        .iter()
        .find(|b| count(b, "tool_result") > 0)
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"));
    assert!(
        count(tool_result, holder_nick) > 0,
        "the refusal names the holder {holder_nick}: {tool_result}"
    );
    assert!(
        count(tool_result, "migrating the schema") > 0,
        "and why they hold it: {tool_result}"
    );

    // Control: once released, the same scripted edit goes through.
    holder.release(&h.daemon);
    h.stub.push(Turn::tool_use(
        "Edit",
        json!({"file_path": file.to_str().unwrap(), "old_string": "int", "new_string": "bigint"}),
    ));
    h.stub.push(Turn::text("done"));
    h.run(&[
        "-p",
        "widen it now",
        "--resume",
        &id,
        "--allowedTools",
        "Edit",
    ]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id bigint);\n",
        "the edit went through"
    );
}

// Proves mid-turn delivery in a real Claude Code turn of three Bash calls: a direct message sent while the first tool (`sleep 3`) runs is in the model request right after that tool's result (from the PostToolUse hook), exactly once, and in no later request as new content; a room message sent at the same moment (ambient) is in none of that turn's requests and arrives with the next turn's first request, once; the direct message ends `seen`.
#[test]
fn mail_sent_during_a_tool_reaches_the_request_after_its_result() {
    let h = Harness::new();
    let id = new_uuid();
    let peer = h.peer();
    h.stub.push(Turn::tool_use(
        "Bash",
        json!({"command": "sleep 3", "description": "wait three seconds"}),
    ));
    h.stub.push(Turn::tool_use(
        "Bash",
        json!({"command": "echo second-step", "description": "second step"}),
    ));
    h.stub.push(Turn::tool_use(
        "Bash",
        json!({"command": "echo third-step", "description": "third step"}),
    ));
    h.stub.push(Turn::text("three steps done"));
    let run = h.spawn(&[
        "-p",
        "run the three steps",
        "--session-id",
        &id,
        "--allowedTools",
        "Bash",
    ]);

    // PreToolUse of the first Bash call has fired: `sleep 3` is running.
    let running = wait_until(RUN_LIMIT, || {
        h.on_roster(&id).is_some_and(|s| s["last_tool"] == "Bash")
    });
    assert!(
        running.is_some(),
        "the first Bash call never started; stderr: {}",
        read(&run.err)
    );
    assert_eq!(
        h.turn_bodies(0).len(),
        1,
        "the first tool is still running: {:?}",
        h.turn_bodies(0)
    );
    let direct = marker("DIRECTMARK");
    let ambient = marker("AMBIENTMARK");
    let sent = h.send(&peer, &id, &format!("stop after this step ({direct})"));
    assert_eq!(
        sent["state"], "queued",
        "no channel shown, so nothing is pushed: {sent}"
    );
    let (status, room) = h.daemon.post_json(
        "/api/v1/broadcast",
        &json!({"as": peer, "room": "everyone", "body": format!("lunch at noon ({ambient})")}),
    );
    assert_eq!(status, 200, "{room}");
    assert_eq!(
        room["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["recipient"] == id.as_str())
            .count(),
        1,
        "{room}"
    );
    assert_eq!(
        h.turn_bodies(0).len(),
        1,
        "both were sent while the first tool ran"
    );

    let result = run.finish();
    assert_eq!(result["result"], "three steps done", "{result}");
    let bodies = h.turn_bodies(0);
    assert_eq!(
        bodies.len(),
        4,
        "one model request per step and one for the answer: {bodies:?}"
    );
    assert_eq!(count(&bodies[0], &direct), 0, "{}", bodies[0]);
    assert!(
        count(&fresh_part(&bodies[1]), "tool_result") > 0,
        "request 1 follows the first tool's result: {}",
        bodies[1]
    );
    assert_eq!(
        count(&fresh_part(&bodies[1]), &direct),
        1,
        "the request after the first tool's result carries the mail once: {}",
        bodies[1]
    );
    assert_eq!(count(&bodies[1], &direct), 1, "{}", bodies[1]);
    for (i, body) in bodies.iter().enumerate().skip(2) {
        assert_eq!(
            count(&fresh_part(body), &direct),
            0,
            "request {i} carries the mail again as new content: {body}"
        );
        assert!(
            count(body, &direct) <= 1,
            "request {i} holds the mail more than once: {body}"
        );
    }
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(
            count(body, &ambient),
            0,
            "ambient room mail waits for the next turn, yet request {i} has it: {body}"
        );
    }
    let message_id = sent["message"]["id"].as_str().unwrap();
    assert_eq!(
        h.delivery_state(message_id, &peer, &id),
        "seen",
        "a later hook found the mail in the transcript"
    );

    let mark = h.stub.mark();
    h.run(&["-p", "next", "--resume", &id]);
    let next = h.turn_bodies(mark);
    assert!(!next.is_empty(), "the next turn made no model request");
    assert_eq!(
        count(&fresh_part(&next[0]), &ambient),
        1,
        "the next turn's first request carries the room mail once: {}",
        next[0]
    );
    assert_eq!(count(&fresh_part(&next[0]), &direct), 0, "{}", next[0]);
    let total: usize = next.iter().map(|b| count(&fresh_part(b), &ambient)).sum();
    assert_eq!(total, 1, "{next:?}");
}

// Proves the hold at the stop in a real Claude Code turn: direct mail sent while the turn's final model request is held (so it is unread when the turn would end) makes the Stop hook keep the turn going: Claude Code sends exactly one more model request, carrying the mail (the Stop hook's reason), not in the earlier one; the Stop after it ends the turn (no third request), and the roster shows the session idle, still live.
#[test]
fn a_turn_ending_with_direct_mail_unread_continues_with_it() {
    let h = Harness::new();
    let id = new_uuid();
    let peer = h.peer();
    h.stub.push(Turn::text("first answer"));
    h.stub.push(Turn::text("answered the mail"));
    let mut live = h.live(&["--session-id", &id]);
    h.stub.hold();
    live.prompt("say something");
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        read(&live.err)
    );
    let mark = marker("STOPMARK");
    let sent = h.send(
        &peer,
        &id,
        &format!("one more thing before you stop ({mark})"),
    );
    assert_eq!(sent["state"], "queued", "{sent}");
    assert_eq!(h.on_roster(&id).expect("on the roster")["activity"], "busy");
    h.stub.release();

    let result = live.wait_results(1);
    assert_eq!(
        result["result"], "answered the mail",
        "the held turn went on to a second answer: {result}"
    );
    let bodies = h.turn_bodies(0);
    assert_eq!(
        bodies.len(),
        2,
        "exactly one more request after the held stop: {bodies:?}"
    );
    assert_eq!(count(&bodies[0], &mark), 0, "{}", bodies[0]);
    // The Stop hook's reason ("Stop hook feedback") says why the turn goes
    // on; the mail itself comes as the Stop hook's context (Claude Code
    // renders a reason twice): the_held_stop_puts_the_mail_in_the_request_once.
    let fresh = fresh_part(&bodies[1]);
    let feedback: Vec<&Value> = fresh
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user" && count(m, "Stop hook feedback") > 0)
        .collect();
    assert_eq!(
        feedback.len(),
        1,
        "the continuation has the Stop hook's reason: {fresh}"
    );
    assert!(
        count(feedback[0], "muster mail") > 0 && count(feedback[0], &mark) == 0,
        "the reason points at the mail, which is not in it: {}",
        feedback[0]
    );
    assert_eq!(count(&fresh, &mark), 1, "the mail, once: {fresh}");
    assert_eq!(h.stub.pending(), 0);
    // No third request: the second Stop let the turn end.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.turn_bodies(0).len(), 2, "{:?}", h.turn_bodies(0));
    let me = h.on_roster(&id).expect("the session is still live");
    assert_eq!(me["activity"], "idle", "the second Stop made it idle: {me}");
    assert_eq!(
        h.delivery_state(sent["message"]["id"].as_str().unwrap(), &peer, &id),
        "seen",
        "the second Stop found the mail in the transcript"
    );
    live.close();
}

// Proves the mail that holds a Claude Code stop reaches the model once: the continuation request carries it exactly once. (Claude Code 2.1.332 renders a Stop hook's `reason` twice — a user "Stop hook feedback" message and a system "Stop hook blocking error" message — but its `hookSpecificOutput.additionalContext` once.)
#[test]
fn the_held_stop_puts_the_mail_in_the_request_once() {
    let h = Harness::new();
    let id = new_uuid();
    let peer = h.peer();
    h.stub.push(Turn::text("first answer"));
    h.stub.push(Turn::text("answered the mail"));
    h.stub.hold();
    let run = h.spawn(&["-p", "say something", "--session-id", &id]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        read(&run.err)
    );
    let mark = marker("ONCEMARK");
    h.send(&peer, &id, &format!("read me once ({mark})"));
    h.stub.release();
    run.finish();
    let bodies = h.turn_bodies(0);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        count(&bodies[1], &mark),
        1,
        "the continuation request carries the mail exactly once: {}",
        fresh_part(&bodies[1])
    );
}

// Proves `seen` with a real Claude Code: mail surfaced by the UserPromptSubmit hook is `surfaced` while that turn's model request is still unanswered (no hook has run since), and the next hook (the turn's Stop, which reads the transcript) makes it `seen`, as the sender reads it from the thread.
#[test]
fn surfaced_mail_becomes_seen_at_the_next_hook() {
    let h = Harness::new();
    let id = new_uuid();
    let peer = h.peer();
    h.run(&["-p", "hello", "--session-id", &id]);
    let mark = marker("SEENMARK");
    let sent = h.send(&peer, &id, &format!("did you see this? ({mark})"));
    let message_id = sent["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(h.delivery_state(&message_id, &peer, &id), "queued");

    let mark_req = h.stub.mark();
    h.stub.hold();
    let run = h.spawn(&["-p", "next", "--resume", &id]);
    assert!(
        h.stub.wait_for_requests(mark_req, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        read(&run.err)
    );
    assert_eq!(
        count(&fresh_part(&h.turn_bodies(mark_req)[0]), &mark),
        1,
        "UserPromptSubmit surfaced the mail"
    );
    assert_eq!(
        h.delivery_state(&message_id, &peer, &id),
        "surfaced",
        "no hook has read the transcript since"
    );
    h.stub.release();
    run.finish();
    assert_eq!(
        h.delivery_state(&message_id, &peer, &id),
        "seen",
        "the Stop hook found it in the transcript"
    );
}

// Proves a push Claude Code drops is not lost: a shim that claims pushes (Claude Code launched with --dangerously-load-development-channels server:muster, which `-p` ignores) takes a send while the resumed session is idle between turns (answered `pushed`), Claude Code shows nothing, and the turn prompted more than 2 s later gets the mail in its first model request from UserPromptSubmit (the transcript lacks it), exactly once in the turn; the delivery is `surfaced` then and `seen` after the turn's Stop.
#[test]
fn a_push_claude_code_dropped_surfaces_with_the_next_prompt() {
    let h = Harness::new();
    let id = new_uuid();
    let peer = h.peer();
    h.run(&["-p", "hello", "--session-id", &id]);

    let mut live = h.live(&[
        "--resume",
        &id,
        "--dangerously-load-development-channels",
        "server:muster",
    ]);
    let ready = wait_until(RUN_LIMIT, || {
        h.on_roster(&id)
            .is_some_and(|s| s["link"] == "link" && s["link_up"] == true && s["can_push"] == true)
    });
    assert!(
        ready.is_some(),
        "the resumed session's shim never took pushes: {:?}; stderr: {}",
        h.on_roster(&id),
        read(&live.err)
    );
    assert_eq!(
        h.on_roster(&id).unwrap()["activity"],
        "idle",
        "idle between turns"
    );
    let mark = marker("DROPMARK");
    let requests_before = h.stub.mark();
    let sent = h.send(&peer, &id, &format!("are you there? ({mark})"));
    assert_eq!(sent["state"], "pushed", "the shim wrote the push: {sent}");
    let message_id = sent["message"]["id"].as_str().unwrap().to_string();
    // Dropped: no turn starts, and after 2 s the daemon no longer expects it in the transcript.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        h.stub.bodies_since(requests_before).len(),
        0,
        "-p showed the push and started a turn"
    );
    assert_eq!(h.delivery_state(&message_id, &peer, &id), "pushed");

    h.stub.hold();
    live.prompt("carry on");
    assert!(
        h.stub.wait_for_requests(requests_before, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        read(&live.err)
    );
    let first = h.turn_bodies(requests_before)[0].clone();
    assert_eq!(
        count(&fresh_part(&first), &mark),
        1,
        "the turn's first request carries the dropped push once: {first}"
    );
    assert_eq!(
        h.delivery_state(&message_id, &peer, &id),
        "surfaced",
        "UserPromptSubmit surfaced it"
    );
    h.stub.release();
    live.wait_results(1);
    let bodies = h.turn_bodies(requests_before);
    let total: usize = bodies.iter().map(|b| count(&fresh_part(b), &mark)).sum();
    assert_eq!(
        total,
        1,
        "exactly once in the turn's {} request(s): {bodies:?}",
        bodies.len()
    );
    assert_eq!(
        h.delivery_state(&message_id, &peer, &id),
        "seen",
        "the Stop hook found it in the transcript"
    );
    live.close();
}
