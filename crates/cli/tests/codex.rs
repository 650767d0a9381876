//! End to end with the real Codex CLI binary, offline: `muster install codex`
//! sets up a temporary project and `$CODEX_HOME`, then `codex exec` runs whole
//! turns against a scripted local Responses API stub, with muster's hooks and
//! its MCP server (`muster mcp`, per-call identity from `_meta.sessionId`)
//! talking to a real `muster serve`.
//!
//! The binary comes from `MUSTER_CODEX_BIN` (set by .ci/run), else from the
//! cache `scripts/install-codex.sh` installs into. Without it these tests
//! fail, saying how to install it.

mod common;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/responses_stub.rs"]
mod responses_stub;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use peer_shim::PeerShim;
use responses_stub::{ResponsesStub, Turn};
use sandbox::{
    after_last, count, harness_bin, json_lines, known_session, new_uuid, read, reserved_schema,
    snapshot, Running, Sandbox,
};
use serde_json::{json, Value};

/// How long one `codex exec` may take before the test gives up on it (a run takes about a second).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The variable `codex` reads the stub's (fake) API key from.
const KEY_VAR: &str = "MUSTER_TEST_STUB_KEY";

fn codex_bin() -> PathBuf {
    harness_bin("MUSTER_CODEX_BIN", "codex/bin/codex", "install-codex.sh")
}

/// The user's own Codex config before muster is installed: a model provider
/// that is the stub, and nothing that reaches beyond loopback (plugin sync and
/// analytics would look up hosts on the internet).
fn user_config(stub: &ResponsesStub) -> String {
    format!(
        "# the tester's own Codex setup\nmodel = \"stub-model\"\nmodel_provider = \"stub\"\n\
         check_for_update_on_startup = false\n\n[model_providers.stub]\nname = \"stub\"\n\
         base_url = \"{}/v1\"\nenv_key = \"{KEY_VAR}\"\nwire_api = \"responses\"\n\n\
         [features]\nplugins = false\n\n[analytics]\nenabled = false\n",
        stub.url
    )
}

/// A daemon, a stub, and a sandbox whose project has muster installed for Codex.
struct Harness {
    bin: PathBuf,
    daemon: TestDaemon,
    stub: ResponsesStub,
    sb: Sandbox,
    runs: std::cell::Cell<u32>,
}

/// One finished `codex exec --json` run.
struct Run {
    /// The session (thread) id from the `thread.started` event.
    id: String,
    events: Vec<Value>,
}

impl Run {
    fn agent_text(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
            .map(|e| e["item"]["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn thread_id(events: &[Value]) -> Option<String> {
    events
        .iter()
        .find(|e| e["type"] == "thread.started")
        .and_then(|e| e["thread_id"].as_str())
        .map(str::to_string)
}

impl Harness {
    /// Lays down the user's Codex config, then installs muster into the project.
    fn new() -> Self {
        let h = Self::bare();
        h.sb.install("codex", &[]);
        h
    }

    /// Everything but the install.
    fn bare() -> Self {
        let bin = codex_bin();
        let daemon = TestDaemon::start(&[]);
        let stub = ResponsesStub::start();
        let sb = Sandbox::new();
        sb.write(&sb.codex_home().join("config.toml"), &user_config(&stub));
        Harness {
            bin,
            daemon,
            stub,
            sb,
            runs: std::cell::Cell::new(0),
        }
    }

    /// The files `muster install codex --project` touches.
    fn config_files(&self) -> Vec<PathBuf> {
        vec![
            self.sb.project.join(".codex/config.toml"),
            self.sb.project.join(".codex/hooks.json"),
            self.sb.codex_home().join("config.toml"),
        ]
    }

    /// Starts `codex exec <args> --json` in the project, offline.
    fn spawn(&self, args: &[&str]) -> Running {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut cmd = Command::new(&self.bin);
        self.sb
            .env(&mut cmd)
            .arg("exec")
            .args(args)
            .args(["--json", "--skip-git-repo-check"])
            .current_dir(&self.sb.project)
            .env(KEY_VAR, "sk-test-offline")
            // For the hooks and (through env_vars) muster's MCP server.
            .env("MUSTER_URL", &self.daemon.url)
            .env("MUSTER_OPERATOR", "tester");
        Running::spawn(cmd, &self.sb.home, &format!("codex-run{n}"))
    }

    fn finish(&self, running: Running) -> Run {
        let err = running.err.clone();
        let events = json_lines(&running.finish(RUN_LIMIT));
        let id = thread_id(&events).unwrap_or_else(|| {
            panic!(
                "codex printed no thread.started: {events:?}\nstderr: {}",
                read(&err)
            );
        });
        assert!(
            events.iter().any(|e| e["type"] == "turn.completed"),
            "the turn did not complete: {events:?}\nstderr: {}",
            read(&err)
        );
        Run { id, events }
    }

    /// Runs a new session with `prompt`.
    fn run(&self, prompt: &str) -> Run {
        self.finish(self.spawn(&[prompt]))
    }

    /// Runs another turn of session `id`.
    fn resume(&self, id: &str, prompt: &str) -> Run {
        let run = self.finish(self.spawn(&["resume", id, prompt]));
        assert_eq!(run.id, id, "the resumed run is the same session");
        run
    }
}

/// The input items this turn added: those after the last assistant message.
fn fresh_part(body: &Value) -> Value {
    after_last(&body["input"], "assistant")
}

/// The first tool result (`function_call_output` input item) the model was sent.
fn tool_output(bodies: &[Value]) -> Value {
    bodies
        .iter()
        .flat_map(|b| b["input"].as_array().cloned().unwrap_or_default())
        .find(|i| i["type"] == "function_call_output")
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"))
}

// Proves a real `codex exec` in a project set up only by `muster install codex` runs muster's hooks (trusted by the install, no bypass flag): the session is on the roster mid-turn under Codex's own thread id, and the model's request carries muster's identity for it.
#[test]
fn codex_session_joins_the_roster_under_its_own_id() {
    let h = Harness::new();
    h.stub.push(Turn::text("hello from the stub"));
    h.stub.hold();
    let running = h.spawn(&["hello"]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Codex made no model request; stderr: {}",
        running.stderr()
    );
    let id = thread_id(&json_lines(&running.stdout()))
        .expect("thread.started is printed before the model request");
    let (status, roster) = h.daemon.get("/api/v1/roster");
    assert_eq!(status, 200);
    let me = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap_or_else(|| {
            panic!(
                "session {id} is not on the roster mid-turn: {roster}\nstderr: {}",
                running.stderr()
            )
        })
        .clone();
    assert_eq!(me["harness"], "codex", "{me}");
    assert_eq!(
        me["activity"], "busy",
        "UserPromptSubmit marks the session busy: {me}"
    );
    assert_eq!(Path::new(me["cwd"].as_str().unwrap()), h.sb.project, "{me}");
    let nickname = me["nickname"].as_str().unwrap().to_string();
    h.stub.release();

    let run = h.finish(running);
    assert_eq!(
        run.agent_text(),
        ["hello from the stub"],
        "{:?}",
        run.events
    );
    assert!(
        h.stub.unknown().is_empty(),
        "Codex called paths the stub does not serve: {:?}",
        h.stub.unknown()
    );
    let first = &h.stub.bodies()[0];
    assert_eq!(
        count(first, "<muster-identity>"),
        1,
        "the identity is injected once: {first}"
    );
    assert!(
        count(first, &nickname) > 0 && count(first, &id) > 0,
        "the identity names {nickname} and {id}: {first}"
    );
    let me = known_session(&h.daemon, &id).unwrap();
    assert_eq!(me["activity"], "idle", "Stop marked the session idle: {me}");
}

// Proves mail sent to a Codex session between turns reaches the model request of its next turn (`codex exec resume`) exactly once, and the turn after that does not carry it again.
#[test]
fn mail_reaches_the_next_codex_turn_exactly_once() {
    let h = Harness::new();
    let first = h.run("hello");
    assert!(
        known_session(&h.daemon, &first.id).is_some(),
        "the first run registered {}",
        first.id
    );

    let marker = format!("MAILMARK{}", new_uuid().replace('-', ""));
    let sent = h.daemon.muster_json(&[
        "send",
        &first.id,
        &format!("please rebase onto main ({marker})"),
        "--json",
    ]);
    assert_eq!(sent["state"], "queued", "{sent}");

    let mark = h.stub.mark();
    h.resume(&first.id, "next");
    let bodies = h.stub.bodies_since(mark);
    assert!(!bodies.is_empty(), "the resumed run made no model request");
    let total: usize = bodies.iter().map(|b| count(b, &marker)).sum();
    assert_eq!(
        total,
        1,
        "the mail appears exactly once across the run's {} request(s): {bodies:?}",
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
    h.resume(&first.id, "third");
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
            "the mail is in the history at most once: {body}"
        );
    }
}

// Proves a scripted call of muster's send_message in a real Codex run goes through the installed `muster mcp` (per-call identity from `_meta.sessionId`), is sent as the Codex session, and reaches a peer shim as a live channel notification; the tool result tells the model it was pushed.
#[test]
fn codex_send_message_is_attributed_and_pushed_live() {
    let h = Harness::new();
    let peer = PeerShim::start(&h.daemon, &new_uuid());
    let marker = format!("PUSHMARK{}", new_uuid().replace('-', ""));
    h.stub.push(Turn::mcp_call(
        "muster",
        "send_message",
        json!({"to": peer.id, "body": format!("tests pass ({marker})")}),
    ));
    h.stub.push(Turn::text("sent"));

    let run = h.run("tell the peer");
    assert_eq!(run.agent_text(), ["sent"], "{:?}", run.events);
    assert_eq!(h.stub.pending(), 0, "both scripted turns were used");
    let call = run
        .events
        .iter()
        .find(|e| e["type"] == "item.completed" && e["item"]["type"] == "mcp_tool_call")
        .unwrap_or_else(|| panic!("no MCP tool call in {:?}", run.events));
    assert_eq!(call["item"]["status"], "completed", "{call}");

    let push = peer
        .channel_with(&marker, Duration::from_secs(10))
        .expect("the peer shim got the channel notification");
    assert_eq!(
        push["params"]["meta"]["from"],
        run.id.as_str(),
        "the push names the Codex session as sender: {push}"
    );
    let bodies = h.stub.bodies();
    let output = tool_output(&bodies);
    assert!(
        count(&output, "pushed") > 0,
        "the model is told the message was pushed: {output}"
    );
    assert!(
        count(&output, &run.id) > 0,
        "the result names the sender {}: {output}",
        run.id
    );
}

// Proves `muster install codex --uninstall` after a real Codex run leaves the project's .codex files and the user's $CODEX_HOME/config.toml byte for byte as they were before install.
#[test]
fn codex_uninstall_restores_the_config_files() {
    let h = Harness::bare();
    let before = snapshot(&h.config_files());
    let out = h.sb.install("codex", &[]);
    assert!(
        out.contains("marked trusted"),
        "install says what it trusted: {out}"
    );
    assert_ne!(
        snapshot(&h.config_files()),
        before,
        "install changed nothing"
    );
    h.run("hello");
    h.sb.install("codex", &["--uninstall"]);
    assert_eq!(
        snapshot(&h.config_files()),
        before,
        "uninstall did not restore the files"
    );
    assert!(
        !h.sb.project.join(".codex").exists(),
        "the .codex dir install created is gone"
    );
}

// Proves `muster install codex --user` alone (nothing written into the project) makes a real `codex exec` run muster's hooks from $CODEX_HOME (trusted by the install) and its MCP server: the session registers under its thread id, the model sees its identity, and a muster tool call acts for that session.
#[test]
fn codex_user_install_works_in_any_project() {
    let h = Harness::bare();
    h.sb.install_user("codex", &[]);
    h.stub.push(Turn::mcp_call("muster", "whoami", json!({})));
    h.stub.push(Turn::text("done"));

    let run = h.run("who am i");
    assert_eq!(run.agent_text(), ["done"], "{:?}", run.events);
    let me = known_session(&h.daemon, &run.id)
        .unwrap_or_else(|| panic!("{} is not known to muster", run.id));
    assert_eq!(me["harness"], "codex", "{me}");
    let bodies = h.stub.bodies();
    assert_eq!(
        count(&bodies[0], "<muster-identity>"),
        1,
        "the identity is injected once: {}",
        bodies[0]
    );
    let output = tool_output(&bodies);
    assert!(
        count(&output, &format!("\\\"id\\\":\\\"{}\\\"", run.id)) > 0,
        "whoami answered for {}: {output}",
        run.id
    );
    assert!(
        !h.sb.project.join(".codex").exists(),
        "a user install writes nothing into the project"
    );
}

/// A scripted call of Codex's shell tool (`exec_command`) running apply_patch
/// on `file` (relative to the project), widening its id column.
fn patch_call(file: &str) -> Turn {
    let patch = format!(
        "*** Begin Patch\n*** Update File: {file}\n@@\n-create table t (id int);\n+create table t (id bigint);\n*** End Patch"
    );
    Turn::Call {
        namespace: None,
        name: "exec_command".into(),
        arguments: json!({"cmd": format!("apply_patch <<'EOF'\n{patch}\nEOF\n")}),
    }
}

// Proves muster's edit guard in a real Codex run: a scripted apply_patch (through Codex's shell tool) on a file another session reserved is refused by the PreToolUse hook, the file is untouched and the tool result the model gets names the holder and why they hold it; once released, the same scripted patch goes through.
#[test]
fn codex_patch_of_a_reserved_file_is_refused_with_the_holder_named() {
    let h = Harness::new();
    let (file, holder) = reserved_schema(&h.daemon, &h.sb.project);
    let holder_nick = &holder.nickname;

    h.stub.push(patch_call("schema.sql"));
    h.stub.push(Turn::text("ok, leaving it"));
    // `codex exec` is read-only by default; workspace-write lets the control's patch land.
    let run = h.finish(h.spawn(&["--sandbox", "workspace-write", "widen the id column"]));
    assert_eq!(run.agent_text(), ["ok, leaving it"], "{:?}", run.events);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id int);\n",
        "the patch did not happen"
    );
    let bodies = h.stub.bodies();
    let output = tool_output(&bodies);
    assert!(
        count(&output, holder_nick) > 0,
        "the refusal names the holder {holder_nick}: {output}"
    );
    assert!(
        count(&output, "migrating the schema") > 0,
        "and why they hold it: {output}"
    );

    // Control: once released, the same scripted patch goes through.
    holder.release(&h.daemon);
    h.stub.push(patch_call("schema.sql"));
    h.stub.push(Turn::text("done"));
    let run2 = h.finish(h.spawn(&[
        "--sandbox",
        "workspace-write",
        "resume",
        &run.id,
        "widen it now",
    ]));
    assert_eq!(run2.id, run.id, "the resumed run is the same session");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id bigint);\n",
        "the patch went through: {:?}",
        run2.events
    );
}

// ---------------------------------------------------------------- when mail reaches the model

/// A scripted call of Codex's shell tool (`exec_command`) running `cmd`.
fn shell(cmd: &str) -> Turn {
    Turn::Call {
        namespace: None,
        name: "exec_command".into(),
        arguments: json!({"cmd": cmd}),
    }
}

/// `POST /api/v1/messages` as the operator; the answer.
fn send(daemon: &TestDaemon, to: &str, body: &str) -> Value {
    let (status, answer) = daemon.post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{answer}");
    answer
}

/// `POST /api/v1/broadcast` as the operator; the answer.
fn broadcast(daemon: &TestDaemon, room: &str, body: &str) -> Value {
    let (status, answer) =
        daemon.post_json("/api/v1/broadcast", &json!({"room": room, "body": body}));
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A fresh marker word for one message.
fn marker(prefix: &str) -> String {
    format!("{prefix}{}", new_uuid().replace('-', ""))
}

/// The position of the first input item of `body` that satisfies `pred`.
fn position(body: &Value, pred: impl Fn(&Value) -> bool) -> Option<usize> {
    body["input"].as_array()?.iter().position(pred)
}

/// The input items `body` adds to `previous` (Codex resends the whole
/// conversation each time; asserts that `previous` is its start).
fn new_items(previous: &Value, body: &Value) -> Value {
    let (old, new) = (
        previous["input"].as_array().unwrap(),
        body["input"].as_array().unwrap(),
    );
    assert!(
        new.len() >= old.len() && new[..old.len()] == old[..],
        "a model request does not extend the one before it:\nbefore: {previous}\nafter: {body}"
    );
    Value::Array(new[old.len()..].to_vec())
}

/// Delivery state of `message` for `recipient`, read by its sender (the operator).
fn delivery_state(daemon: &TestDaemon, message: &str, recipient: &str) -> String {
    let (status, thread) = daemon.get(&format!("/api/v1/messages/{message}/thread"));
    assert_eq!(status, 200, "{thread}");
    thread["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["message_id"] == message && d["recipient"] == recipient)
        .map(|d| d["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

// Proves mid-turn delivery in a real Codex turn of three shell calls (`sleep 3`, `true`, `true`, then text): a direct message sent while `sleep 3` runs (after the first model request, before the second) is in the very next model request, as a developer message (PostToolUse additionalContext) placed with that tool's call and output, exactly once; the two later requests carry it only as the same history item, never as new content; an ambient room message sent at the same moment is in none of the turn's requests.
#[test]
fn direct_mail_sent_while_a_tool_runs_reaches_the_next_model_request_once() {
    let h = Harness::new();
    h.stub.push(shell("sleep 3"));
    h.stub.push(shell("true"));
    h.stub.push(shell("true"));
    h.stub.push(Turn::text("all done"));
    let running = h.spawn(&["run three commands"]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Codex made no model request; stderr: {}",
        running.stderr()
    );
    let id = thread_id(&json_lines(&running.stdout()))
        .expect("thread.started comes before the model request");
    let direct = marker("DIRECTMARK");
    let ambient = marker("AMBIENTMARK");
    let sent = send(&h.daemon, &id, &format!("stop and rebase ({direct})"));
    let room = broadcast(
        &h.daemon,
        "everyone",
        &format!("lunch is at noon ({ambient})"),
    );
    assert_eq!(sent["state"], "queued", "{sent}");
    assert_eq!(
        room["deliveries"][0]["recipient"],
        id.as_str(),
        "the session is in the room: {room}"
    );
    assert_eq!(
        h.stub.bodies().len(),
        1,
        "both were sent while the first tool ran (no second request yet)"
    );

    let run = h.finish(running);
    assert_eq!(run.agent_text(), ["all done"], "{:?}", run.events);
    let bodies = h.stub.bodies();
    assert_eq!(
        bodies.len(),
        4,
        "one request per tool call plus the final one: {bodies:?}"
    );
    assert_eq!(
        count(&bodies[0], &direct),
        0,
        "the first request predates the mail"
    );

    let second = &bodies[1];
    assert_eq!(
        count(second, &direct),
        1,
        "the mail is in the next request once: {second}"
    );
    let call = position(second, |i| i["type"] == "function_call").expect("the first call");
    let output = position(second, |i| i["type"] == "function_call_output").expect("its output");
    let mail = position(second, |i| i.to_string().contains(&direct)).unwrap();
    assert_eq!(
        (call + 1, output),
        (mail, mail + 1),
        "the mail sits with the first tool's call and output: {second}"
    );
    let item = &second["input"][mail];
    assert_eq!(
        (item["type"].as_str(), item["role"].as_str()),
        (Some("message"), Some("developer")),
        "{item}"
    );
    let text = item["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("<muster-mail>") && text.ends_with("</muster-mail>"),
        "{text}"
    );
    assert_eq!(
        count(
            item,
            &format!(
                "<message id=\\\"{}\\\"",
                sent["message"]["id"].as_str().unwrap()
            )
        ),
        1,
        "{item}"
    );

    for k in 2..4 {
        assert_eq!(
            count(&new_items(&bodies[k - 1], &bodies[k]), &direct),
            0,
            "request {k} carries the mail again as new content: {}",
            bodies[k]
        );
        assert_eq!(
            count(&bodies[k], &direct),
            1,
            "request {k} has it once, as history"
        );
    }
    for (k, body) in bodies.iter().enumerate() {
        assert_eq!(
            count(body, &ambient),
            0,
            "the ambient room message is in request {k}: {body}"
        );
    }
    let message = sent["message"]["id"].as_str().unwrap();
    assert_eq!(
        delivery_state(&h.daemon, message, &id),
        "seen",
        "the later hooks found it in the rollout"
    );
    let room_id = room["message"]["id"].as_str().unwrap();
    assert_eq!(
        delivery_state(&h.daemon, room_id, &id),
        "queued",
        "ambient mail waits for the next turn"
    );
}

// Proves the hold at the stop in a real Codex turn: with direct mail sent while the turn's final model request is held by the stub, the Stop hook keeps the turn going: exactly one more model request follows, whose new input is the model's answer and one user message carrying the mail (Codex wraps the hook's reason in <hook_prompt>, escaping its tags), once; the second stop ends the turn normally (no third request), and the session is idle.
#[test]
fn a_turn_ending_with_direct_mail_unread_continues_once_with_it() {
    let h = Harness::new();
    h.stub.push(Turn::text("first answer"));
    h.stub.push(Turn::text("read the mail"));
    h.stub.hold();
    let running = h.spawn(&["hello"]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Codex made no model request; stderr: {}",
        running.stderr()
    );
    let id = thread_id(&json_lines(&running.stdout()))
        .expect("thread.started comes before the model request");
    let direct = marker("STOPMARK");
    let sent = send(&h.daemon, &id, &format!("stop and rebase ({direct})"));
    assert_eq!(sent["state"], "queued", "{sent}");
    h.stub.release();

    let run = h.finish(running);
    assert_eq!(
        run.agent_text(),
        ["first answer", "read the mail"],
        "{:?}",
        run.events
    );
    let bodies = h.stub.bodies();
    assert_eq!(
        bodies.len(),
        2,
        "one held stop, then a normal one: {bodies:?}"
    );
    assert_eq!(count(&bodies[0], &direct), 0);
    let new = new_items(&bodies[0], &bodies[1]);
    let new = new.as_array().unwrap();
    assert_eq!(new.len(), 2, "{new:?}");
    assert_eq!(
        (
            new[0]["role"].as_str(),
            new[0]["content"][0]["text"].as_str()
        ),
        (Some("assistant"), Some("first answer")),
        "{new:?}"
    );
    assert_eq!(new[1]["role"], "user", "{new:?}");
    let text = new[1]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("<hook_prompt hook_run_id=\"stop:"),
        "{text}"
    );
    assert!(text.contains("&lt;muster-mail&gt;"), "{text}");
    let message = sent["message"]["id"].as_str().unwrap();
    assert_eq!(text.matches(&direct).count(), 1, "{text}");
    assert_eq!(
        text.matches(&format!("id=\"{message}\"")).count(),
        1,
        "{text}"
    );
    assert_eq!(
        count(&bodies[1], &direct),
        1,
        "the mail is in the request once: {}",
        bodies[1]
    );
    let me = known_session(&h.daemon, &id).unwrap();
    assert_eq!(
        me["activity"], "idle",
        "the second stop ended the turn: {me}"
    );
    assert_eq!(
        delivery_state(&h.daemon, message, &id),
        "seen",
        "the second Stop hook found the mail in the rollout"
    );
}

/// Codex's transcript (rollout) of session `id`, the file its hooks get as `transcript_path`.
fn rollout(sb: &Sandbox, id: &str) -> PathBuf {
    let found = Command::new("find")
        .arg(sb.codex_home().join("sessions"))
        .args(["-name", &format!("rollout-*-{id}.jsonl")])
        .output()
        .unwrap();
    let paths: Vec<PathBuf> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(paths.len(), 1, "one rollout for {id}: {paths:?}");
    paths[0].clone()
}

/// `(type, payload.type, payload.role)` of each rollout line that holds `needle`.
fn rollout_entries_with(path: &Path, needle: &str) -> Vec<(String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    read(path)
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("rollout line is not JSON ({e}): {l}"));
            (
                s(&v["type"]),
                s(&v["payload"]["type"]),
                s(&v["payload"]["role"]),
            )
        })
        .collect()
}

// Proves `seen` with Codex's own transcript: the hooks' transcript_path is the rollout JSONL, which records the PostToolUse context as a developer message (a response_item) holding the message id; while the model request right after that tool is held (no hook has run since), the delivery is `surfaced`; after the next tool's hooks have read the rollout it is `seen`.
#[test]
fn mail_surfaced_mid_turn_is_seen_once_the_rollout_shows_it() {
    let h = Harness::new();
    h.stub.push(shell("sleep 2"));
    h.stub.push(shell("sleep 2"));
    h.stub.push(Turn::text("done"));
    let running = h.spawn(&["two commands"]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Codex made no model request; stderr: {}",
        running.stderr()
    );
    let id = thread_id(&json_lines(&running.stdout()))
        .expect("thread.started comes before the model request");
    // Hold only once the first request was answered (a hold applies to requests still waiting).
    let commands_started = |n: usize| {
        wait_until(RUN_LIMIT, || {
            json_lines(&running.stdout())
                .iter()
                .filter(|e| e["type"] == "item.started" && e["item"]["type"] == "command_execution")
                .count()
                == n
        })
        .is_some()
    };
    assert!(
        commands_started(1),
        "the first command never started: {}",
        running.stdout()
    );
    h.stub.hold();
    let direct = marker("SEENMARK");
    let sent = send(&h.daemon, &id, &format!("check the build ({direct})"));
    let message = sent["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(h.stub.bodies().len(), 1, "sent while the first tool runs");

    // The request after the first tool is held: PostToolUse surfaced the mail, no hook ran since.
    assert!(
        h.stub.wait_for_requests(0, 2, RUN_LIMIT),
        "{}",
        running.stderr()
    );
    assert_eq!(count(&h.stub.bodies()[1], &direct), 1);
    assert_eq!(delivery_state(&h.daemon, &message, &id), "surfaced");
    let path = rollout(&h.sb, &id);
    let developer_message = [(
        "response_item".to_string(),
        "message".to_string(),
        "developer".to_string(),
    )];
    let entries = rollout_entries_with(&path, &format!("<message id=\\\"{message}\\\""));
    assert_eq!(
        entries, developer_message,
        "before the request is even answered, the rollout holds the hook context as the developer message the model got: {}",
        read(&path)
    );

    h.stub.release();
    assert!(
        commands_started(2),
        "the second command never started: {}",
        running.stdout()
    );
    h.stub.hold();
    assert!(
        h.stub.wait_for_requests(0, 3, RUN_LIMIT),
        "{}",
        running.stderr()
    );
    assert_eq!(
        delivery_state(&h.daemon, &message, &id),
        "seen",
        "the second tool's hooks read the rollout"
    );
    h.stub.release();
    let run = h.finish(running);
    assert_eq!(run.agent_text(), ["done"], "{:?}", run.events);

    let entries = rollout_entries_with(&path, &format!("<message id=\\\"{message}\\\""));
    assert_eq!(
        entries,
        developer_message,
        "and still once at the end: {}",
        read(&path)
    );
}
