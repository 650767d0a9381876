//! End to end with the real Gemini CLI, offline: `muster install gemini` sets
//! up a temporary project (its `.gemini/settings.json`, and the folder trusted
//! in the temporary home), then `gemini -p` runs whole turns against a scripted
//! local Gemini API stub, with muster's hooks (SessionStart, BeforeAgent,
//! BeforeTool naming the session in muster's tool calls, AfterTool carrying
//! mail mid-turn, AfterAgent holding a stop for unread mail, SessionEnd) and
//! its MCP server talking to a real `muster serve`.
//!
//! What Gemini CLI 0.61.0 does that these tests rely on: every hook's input
//! has `transcript_path`, the session's chat recording
//! (`~/.gemini/tmp/<project>/chats/session-<time>-<id8>.jsonl`, JSON lines:
//! a metadata line, then one line per message — user entries with their
//! parts, hook context included; gemini entries, rewritten with
//! `toolCalls[].result` once tools ran; `$set` updates), written before the
//! model request that carries it, so the next hook finds muster's message
//! ids there. An AfterAgent answer `decision: block` sends its `reason` as
//! the next user text and fires BeforeAgent again for that continuation.
//!
//! The CLI comes from `MUSTER_GEMINI_BIN` (set by .ci/run), else from the
//! cache `scripts/install-gemini.sh` installs into. Without it these tests
//! fail, saying how to install it.

mod common;
#[path = "support/gemini_stub.rs"]
mod gemini_stub;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use gemini_stub::{GeminiStub, Turn};
use peer_shim::PeerShim;
use sandbox::{
    after_last, count, harness_bin, json_lines, known_session, new_uuid, read, reserved_schema,
    snapshot, Running, Sandbox,
};
use serde_json::{json, Value};

/// How long one `gemini -p` may take before the test gives up on it (a run takes about 2 s).
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn gemini_bin() -> PathBuf {
    harness_bin(
        "MUSTER_GEMINI_BIN",
        "gemini/node_modules/@google/gemini-cli/bundle/gemini.js",
        "install-gemini.sh",
    )
}

/// The user's own Gemini CLI settings before muster is installed: a pinned
/// model (no router request), API-key auth, and no usage statistics or
/// telemetry (they would look up hosts on the internet).
fn user_settings() -> String {
    serde_json::to_string_pretty(&json!({
        "model": {"name": "gemini-2.5-flash"},
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
    }))
    .unwrap()
}

/// A daemon, a stub, and a sandbox whose project has muster installed for Gemini CLI.
struct Harness {
    bin: PathBuf,
    daemon: TestDaemon,
    stub: GeminiStub,
    sb: Sandbox,
    runs: std::cell::Cell<u32>,
}

impl Harness {
    fn new() -> Self {
        let h = Self::bare();
        h.sb.install("gemini", &[]);
        h
    }

    fn bare() -> Self {
        let bin = gemini_bin();
        let daemon = TestDaemon::start(&[]);
        let stub = GeminiStub::start();
        let sb = Sandbox::new();
        sb.write(&sb.home.join(".gemini/settings.json"), &user_settings());
        Harness {
            bin,
            daemon,
            stub,
            sb,
            runs: std::cell::Cell::new(0),
        }
    }

    /// The files `muster install gemini --project` touches.
    fn config_files(&self) -> Vec<PathBuf> {
        vec![
            self.sb.project.join(".gemini/settings.json"),
            self.sb.home.join(".gemini/trustedFolders.json"),
        ]
    }

    /// Starts `gemini -p <prompt> <args> --output-format json` in the project, offline.
    fn spawn(&self, prompt: &str, args: &[&str]) -> Running {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut cmd = Command::new(&self.bin);
        self.sb
            .env(&mut cmd)
            .args(["-p", prompt])
            .args(args)
            .args(["--output-format", "json"])
            .current_dir(&self.sb.project)
            .env("GEMINI_API_KEY", "test-offline")
            .env("GOOGLE_GEMINI_BASE_URL", &self.stub.url)
            // One process (no relaunch with a bigger heap), so the test kills the real one.
            .env("GEMINI_CLI_NO_RELAUNCH", "true")
            // For the hooks and muster's MCP server, which inherit Gemini CLI's environment.
            .env("MUSTER_URL", &self.daemon.url)
            .env("MUSTER_OPERATOR", "tester");
        Running::spawn(cmd, &self.sb.home, &format!("gemini-run{n}"))
    }

    /// Waits for the run; returns its `--output-format json` result.
    fn finish(&self, running: Running) -> Value {
        let err = running.err.clone();
        let out = running.finish(RUN_LIMIT);
        let result: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!(
                "gemini printed no JSON result ({e}): {out}\nstderr: {}",
                read(&err)
            )
        });
        assert!(
            result.get("error").is_none_or(Value::is_null),
            "gemini reported an error: {result}"
        );
        result
    }

    /// Runs a new session with the id `id`.
    fn run(&self, id: &str, prompt: &str) -> Value {
        let result = self.finish(self.spawn(prompt, &["--session-id", id]));
        assert_eq!(result["session_id"], id, "{result}");
        result
    }

    /// Runs another turn of session `id`.
    fn resume(&self, id: &str, prompt: &str) -> Value {
        let result = self.finish(self.spawn(prompt, &["--resume", id]));
        assert_eq!(
            result["session_id"], id,
            "the resumed run is the same session: {result}"
        );
        result
    }
}

/// The contents this turn added: those after the last model turn.
fn fresh_part(body: &Value) -> Value {
    after_last(&body["contents"], "model")
}

/// The first tool result (`functionResponse` part) the model was sent.
fn function_response(bodies: &[Value]) -> Value {
    bodies
        .iter()
        .flat_map(|b| b["contents"].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .find(|p| p.get("functionResponse").is_some())
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"))
}

// Proves a real `gemini -p` in a project set up only by `muster install gemini` (settings and folder trust; no --skip-trust) is on muster's roster mid-turn under its own session id, its model request carries muster's identity, and SessionEnd takes it off the roster.
#[test]
fn gemini_session_joins_the_roster_under_its_own_id() {
    let h = Harness::new();
    let id = new_uuid();
    h.stub.push(Turn::text("hello from the stub"));
    h.stub.hold();
    let running = h.spawn("hello", &["--session-id", &id]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Gemini CLI made no model request; stderr: {}",
        running.stderr()
    );
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
    assert_eq!(me["harness"], "gemini", "{me}");
    assert_eq!(
        me["activity"], "busy",
        "BeforeAgent marks the session busy: {me}"
    );
    assert_eq!(Path::new(me["cwd"].as_str().unwrap()), h.sb.project, "{me}");
    let nickname = me["nickname"].as_str().unwrap().to_string();
    h.stub.release();

    let result = h.finish(running);
    assert_eq!(result["session_id"], id.as_str(), "{result}");
    assert_eq!(result["response"], "hello from the stub", "{result}");
    assert!(
        h.stub.unknown().is_empty(),
        "Gemini CLI called paths the stub does not serve: {:?}",
        h.stub.unknown()
    );
    let first = &h.stub.bodies()[0];
    // Gemini CLI escapes hook context (`&lt;muster-identity&gt;`), so the tag is counted without its brackets.
    assert_eq!(
        count(first, "muster-identity&gt;"),
        2,
        "the identity is injected once (opening and closing tag): {first}"
    );
    assert!(
        count(first, &nickname) > 0 && count(first, &id) > 0,
        "the identity names {nickname} and {id}: {first}"
    );
    let gone = known_session(&h.daemon, &id).expect("a session that left stays known");
    assert!(
        !gone["left_at"].is_null(),
        "SessionEnd took the session off the roster: {gone}"
    );
}

// Proves mail sent to a Gemini CLI session between turns reaches the model request of its next turn (`gemini --resume`) exactly once, and the turn after that does not carry it again.
#[test]
fn mail_reaches_the_next_gemini_turn_exactly_once() {
    let h = Harness::new();
    let id = new_uuid();
    h.run(&id, "hello");
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

    let mark = h.stub.mark();
    h.resume(&id, "next");
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
    h.resume(&id, "third");
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

// Proves a scripted call of mcp_muster_send_message in a real Gemini CLI run gets `_session_id` from muster's BeforeTool hook answer, is sent as the Gemini session through the installed `muster mcp`, and reaches a peer shim as a live channel notification; the tool result tells the model it was pushed.
#[test]
fn gemini_send_message_is_attributed_and_pushed_live() {
    let h = Harness::new();
    let peer = PeerShim::start(&h.daemon, &new_uuid());
    let marker = format!("PUSHMARK{}", new_uuid().replace('-', ""));
    h.stub.push(Turn::call(
        "mcp_muster_send_message",
        json!({"to": peer.id, "body": format!("tests pass ({marker})")}),
    ));
    h.stub.push(Turn::text("sent"));
    let id = new_uuid();

    let result = h.run(&id, "tell the peer");
    assert_eq!(result["response"], "sent", "{result}");
    assert_eq!(h.stub.pending(), 0, "both scripted turns were used");

    let push = peer
        .channel_with(&marker, Duration::from_secs(10))
        .expect("the peer shim got the channel notification");
    assert_eq!(
        push["params"]["meta"]["from"],
        id.as_str(),
        "the push names the Gemini session as sender: {push}"
    );
    let bodies = h.stub.bodies();
    let response = function_response(&bodies);
    assert!(
        count(&response, "pushed") > 0,
        "the model is told the message was pushed: {response}"
    );
    assert!(
        count(&response, &id) > 0,
        "the result names the sender {id}: {response}"
    );
}

// Proves `muster install gemini --uninstall` after a real Gemini CLI run leaves the project's .gemini/settings.json and the user's ~/.gemini/trustedFolders.json byte for byte as they were before install.
#[test]
fn gemini_uninstall_restores_the_config_files() {
    let h = Harness::bare();
    let before = snapshot(&h.config_files());
    let out = h.sb.install("gemini", &[]);
    assert!(
        out.contains("marked trusted"),
        "install says what it trusted: {out}"
    );
    assert_ne!(
        snapshot(&h.config_files()),
        before,
        "install changed nothing"
    );
    h.run(&new_uuid(), "hello");
    h.sb.install("gemini", &["--uninstall"]);
    assert_eq!(
        snapshot(&h.config_files()),
        before,
        "uninstall did not restore the files"
    );
}

// Proves `muster install gemini --user` alone (~/.gemini/settings.json; nothing in the project) makes a real `gemini -p` in a folder the user trusted register its session, give the model its identity, and name the session in muster's tool calls through the BeforeTool answer.
#[test]
fn gemini_user_install_works_in_a_trusted_folder() {
    let h = Harness::bare();
    // The user trusted this folder in Gemini CLI: a user install trusts no folder itself.
    let trust = json!({ h.sb.project.to_str().unwrap(): "TRUST_FOLDER" });
    h.sb.write(
        &h.sb.home.join(".gemini/trustedFolders.json"),
        &trust.to_string(),
    );
    h.sb.install_user("gemini", &[]);
    h.stub.push(Turn::call("mcp_muster_whoami", json!({})));
    h.stub.push(Turn::text("done"));
    let id = new_uuid();

    let result = h.run(&id, "who am i");
    assert_eq!(result["response"], "done", "{result}");
    let me = known_session(&h.daemon, &id).unwrap_or_else(|| panic!("{id} is not known to muster"));
    assert_eq!(me["harness"], "gemini", "{me}");
    let bodies = h.stub.bodies();
    assert_eq!(
        count(&bodies[0], "muster-identity&gt;"),
        2,
        "the identity is injected once: {}",
        bodies[0]
    );
    let response = function_response(&bodies);
    assert!(
        count(&response, &format!("\\\"id\\\":\\\"{id}\\\"")) > 0,
        "whoami answered for {id}: {response}"
    );
    assert!(
        !h.sb.project.join(".gemini").exists(),
        "a user install writes nothing into the project"
    );
}

// Proves muster's edit guard in a real Gemini CLI run: a scripted `replace` of a file another session reserved is refused by the BeforeTool hook (Gemini's `decision: deny` form), the file is untouched and the tool result the model gets names the holder and why they hold it; once released, the same scripted edit goes through.
#[test]
fn gemini_edit_of_a_reserved_file_is_refused_with_the_holder_named() {
    let h = Harness::new();
    let (file, holder) = reserved_schema(&h.daemon, &h.sb.project);
    let holder_nick = &holder.nickname;

    let edit = json!({"file_path": file.to_str().unwrap(), "old_string": "id int", "new_string": "id bigint",
        "instruction": "widen the id column"});
    h.stub.push(Turn::call("replace", edit.clone()));
    h.stub.push(Turn::text("ok, leaving it"));
    let id = new_uuid();
    // Headless Gemini CLI offers edit tools only when edits are auto-approved.
    let result = h.finish(h.spawn(
        "widen the id column",
        &["--session-id", &id, "--approval-mode", "auto_edit"],
    ));
    assert_eq!(result["response"], "ok, leaving it", "{result}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id int);\n",
        "the edit did not happen"
    );
    let bodies = h.stub.bodies();
    let response = function_response(&bodies);
    assert!(
        count(&response, holder_nick) > 0,
        "the refusal names the holder {holder_nick}: {response}"
    );
    assert!(
        count(&response, "migrating the schema") > 0,
        "and why they hold it: {response}"
    );

    // Control: once released, the same scripted edit goes through.
    holder.release(&h.daemon);
    h.stub.push(Turn::call("replace", edit));
    h.stub.push(Turn::text("done"));
    let result = h.finish(h.spawn(
        "widen it now",
        &["--resume", &id, "--approval-mode", "auto_edit"],
    ));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id bigint);\n",
        "the edit went through: {result}"
    );
}

/// The session `id` on the roster now (Null if it is not there).
fn roster_entry(h: &Harness, id: &str) -> Value {
    let (status, roster) = h.daemon.get("/api/v1/roster");
    assert_eq!(status, 200, "{roster}");
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Sends `body` from the operator to `to`; returns the send answer.
fn send(h: &Harness, to: &str, body: &str) -> Value {
    let (status, answer) = h
        .daemon
        .post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The delivery state of `message` for `recipient`, as its sender reads it in the thread.
fn delivery_state(h: &Harness, message: &str, recipient: &str) -> String {
    let (status, thread) = h.daemon.get(&format!("/api/v1/messages/{message}/thread"));
    assert_eq!(status, 200, "{thread}");
    thread["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["message_id"] == message && d["recipient"] == recipient)
        .map(|d| d["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// A marker unique to this call, to find one message's text in model requests.
fn marker(prefix: &str) -> String {
    format!("{prefix}{}", new_uuid().replace('-', ""))
}

/// The chat recording files Gemini CLI keeps under `~/.gemini/tmp` (its `transcript_path`s).
fn recordings(h: &Harness) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "jsonl") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&h.sb.home.join(".gemini/tmp"), &mut out);
    out
}

// Proves mid-turn delivery in a real `gemini -p` turn of three tool calls: a
// direct message sent while the first tool (`sleep 3`) runs reaches the model
// in the request that follows that tool's result (inside the tool result, as
// AfterTool `additionalContext`), exactly once; no later request carries it
// as new content (only as that earlier tool result in the history); a room
// message sent at the same moment is in none of this turn's requests
// (ambient mail waits for the next turn); and the next hook, having read the
// transcript Gemini CLI names in `transcript_path`, advances the direct
// delivery to `seen` while the room delivery stays `queued`.
#[test]
fn mail_sent_during_a_gemini_tool_reaches_the_request_after_its_result() {
    let h = Harness::new();
    let id = new_uuid();
    let direct = marker("MIDDIRECT");
    let ambient = marker("MIDROOM");
    h.stub.push(Turn::call(
        "run_shell_command",
        json!({"command": "sleep 3"}),
    ));
    h.stub.push(Turn::call(
        "run_shell_command",
        json!({"command": "echo two"}),
    ));
    h.stub.push(Turn::call(
        "run_shell_command",
        json!({"command": "echo three"}),
    ));
    h.stub.push(Turn::text("all done"));
    // Headless Gemini CLI offers the shell tool only when tools are auto-approved.
    let running = h.spawn(
        "run three commands",
        &["--session-id", &id, "--approval-mode", "yolo"],
    );

    // The first tool is running: its BeforeTool hook named it and no second model request came yet.
    let started = wait_until(RUN_LIMIT, || {
        roster_entry(&h, &id)["last_tool"] == "run_shell_command"
    });
    assert!(
        started.is_some(),
        "the first tool never started: {}\nstderr: {}",
        roster_entry(&h, &id),
        running.stderr()
    );
    assert_eq!(
        h.stub.bodies().len(),
        1,
        "the sleep is still running when the mail is sent"
    );
    let sent = send(&h, &id, &format!("stop and rebase ({direct})"));
    assert_eq!(sent["state"], "queued", "{sent}");
    let direct_id = sent["message"]["id"].as_str().unwrap().to_string();
    let (status, room) = h.daemon.post_json(
        "/api/v1/broadcast",
        &json!({"room": "everyone", "body": format!("lunch at noon ({ambient})")}),
    );
    assert_eq!(status, 200, "{room}");
    let room_id = room["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        h.stub.bodies().len(),
        1,
        "the mail was sent before the sleep ended"
    );

    let result = h.finish(running);
    assert_eq!(result["response"], "all done", "{result}");
    assert_eq!(h.stub.pending(), 0, "every scripted turn was used");
    let bodies = h.stub.bodies();
    assert_eq!(
        bodies.len(),
        4,
        "one request per tool result and the first: {bodies:?}"
    );
    assert_eq!(
        count(&bodies[0], &direct),
        0,
        "the mail was not there before it was sent"
    );
    let after_sleep = fresh_part(&bodies[1]);
    assert_eq!(
        count(&after_sleep, &direct),
        1,
        "the request after the sleep's result carries the direct mail once: {after_sleep}"
    );
    assert_eq!(
        count(&after_sleep, "functionResponse"),
        1,
        "and that is the request with the sleep's result: {after_sleep}"
    );
    assert_eq!(count(&after_sleep, "sleep 3"), 0, "{after_sleep}");
    for (n, body) in bodies.iter().enumerate().skip(2) {
        assert_eq!(
            count(&fresh_part(body), &direct),
            0,
            "request {n} carries the mail as new content: {body}"
        );
        assert_eq!(
            count(body, &direct),
            1,
            "request {n} has it once, in the history: {body}"
        );
    }
    for (n, body) in bodies.iter().enumerate() {
        assert_eq!(
            count(body, &ambient),
            0,
            "request {n} carries the ambient room mail: {body}"
        );
    }
    assert_eq!(delivery_state(&h, &direct_id, &id), "seen");
    assert_eq!(delivery_state(&h, &room_id, &id), "queued");
    let recording = recordings(&h)
        .into_iter()
        .map(|p| read(&p))
        .find(|t| t.contains(&id))
        .expect("Gemini CLI recorded the session");
    // The recording (JSON lines) holds the mail where the model got it: in
    // the tool call's recorded result and in the functionResponse user entry.
    let holding: Vec<Value> = json_lines(&recording)
        .into_iter()
        .filter(|entry| count(entry, &direct_id) > 0)
        .collect();
    assert_eq!(holding.len(), 2, "{recording}");
    assert_eq!(holding[0]["type"], "gemini", "{}", holding[0]);
    assert_eq!(
        count(&holding[0]["toolCalls"][0]["result"], &direct_id),
        1,
        "{}",
        holding[0]
    );
    assert_eq!(holding[1]["type"], "user", "{}", holding[1]);
    assert_eq!(
        count(&holding[1]["content"][0]["functionResponse"], &direct_id),
        1,
        "{}",
        holding[1]
    );
}

// Proves the hold at the stop in a real `gemini -p` turn: direct mail sent
// while the turn's last model request is held by the stub is unread when the
// turn would end, so muster's AfterAgent hook answers `decision: block` with
// the mail as the reason and Gemini CLI sends one more model request whose
// new user text carries the mail exactly once; that continuation's own
// AfterAgent (`stop_hook_active`) lets the turn end: no further request. The
// mail reaches `seen` (the continuation's AfterAgent found it in the chat
// recording named by `transcript_path`), and the continuation's user entry
// in that recording holds it.
#[test]
fn a_gemini_turn_ending_with_direct_mail_unread_continues_once_with_it() {
    let h = Harness::new();
    let id = new_uuid();
    let direct = marker("STOPDIRECT");
    h.stub.push(Turn::text("first answer"));
    h.stub.push(Turn::text("read the mail"));
    h.stub.hold();
    let running = h.spawn("hello", &["--session-id", &id]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "Gemini CLI made no model request; stderr: {}",
        running.stderr()
    );
    let sent = send(&h, &id, &format!("one more thing ({direct})"));
    assert_eq!(sent["state"], "queued", "{sent}");
    let direct_id = sent["message"]["id"].as_str().unwrap().to_string();
    h.stub.release();

    let result = h.finish(running);
    let bodies = h.stub.bodies();
    assert_eq!(
        bodies.len(),
        2,
        "the held stop made exactly one more request: {bodies:?}\n{result}"
    );
    assert_eq!(h.stub.pending(), 0, "both scripted turns were used");
    assert_eq!(count(&bodies[0], &direct), 0, "{}", bodies[0]);
    let fresh = fresh_part(&bodies[1]);
    assert_eq!(
        count(&fresh, &direct),
        1,
        "the continuation carries the mail once, as new content: {fresh}"
    );
    assert_eq!(count(&bodies[1], &direct), 1, "{}", bodies[1]);
    assert_eq!(
        count(&fresh, &format!("id=\\\"{direct_id}\\\"")),
        1,
        "framed as muster mail with its id: {fresh}"
    );
    assert_eq!(
        fresh.as_array().unwrap().len(),
        1,
        "one user entry: {fresh}"
    );
    assert_eq!(fresh[0]["role"], "user", "{fresh}");
    assert_eq!(
        count(&bodies[1], "first answer"),
        1,
        "the first answer is in the history: {}",
        bodies[1]
    );
    assert_eq!(delivery_state(&h, &direct_id, &id), "seen");
    let recording = recordings(&h)
        .into_iter()
        .map(|p| read(&p))
        .find(|t| t.contains(&id))
        .expect("Gemini CLI recorded the session");
    let holding: Vec<Value> = json_lines(&recording)
        .into_iter()
        .filter(|entry| count(entry, &direct_id) > 0)
        .collect();
    assert_eq!(holding.len(), 1, "{recording}");
    assert_eq!(holding[0]["type"], "user", "{}", holding[0]);
    assert_eq!(count(&holding[0]["content"], &direct), 1, "{}", holding[0]);
}
