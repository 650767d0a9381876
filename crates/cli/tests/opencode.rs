//! End to end with the real opencode binary, offline: `muster install
//! opencode` sets up a temporary project (its `opencode.json` and muster's
//! plugin), then `opencode run` runs whole turns against a scripted local Chat
//! Completions stub, with muster's plugin (session events, mail, `_session_id`
//! on muster's tool calls) and its MCP server talking to a real `muster serve`.
//!
//! The binary comes from `MUSTER_OPENCODE_BIN` (set by .ci/run), else from the
//! cache `scripts/install-opencode.sh` installs into; that script also keeps
//! the plugin dependencies opencode would otherwise fetch from npm on first
//! start. Without them these tests fail, saying how to install them.

#[path = "support/chat_stub.rs"]
mod chat_stub;
mod common;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chat_stub::{ChatStub, Turn};
use common::*;
use peer_shim::PeerShim;
use sandbox::{
    after_last, cache_root, count, harness_bin, json_lines, known_session, new_uuid, read, reserved_schema, snapshot,
    Running, Sandbox,
};
use serde_json::{json, Value};

/// How long one `opencode run` may take before the test gives up on it (a run takes about 4 s).
const RUN_LIMIT: Duration = Duration::from_secs(40);

fn opencode_bin() -> PathBuf {
    harness_bin(
        "MUSTER_OPENCODE_BIN",
        "opencode/node_modules/opencode-ai/bin/opencode.exe",
        "install-opencode.sh",
    )
}

/// What opencode installs from npm into each config directory on first start
/// (`scripts/install-opencode.sh` keeps a copy next to the binary).
fn plugin_deps(bin: &Path) -> PathBuf {
    let beside = bin.ancestors().nth(4).map(|d| d.join("plugin-deps"));
    [beside, Some(cache_root().join("opencode/plugin-deps"))]
        .into_iter()
        .flatten()
        .find(|d| d.join("package-lock.json").is_file() && d.join("node_modules").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "opencode's plugin dependencies are not cached beside {}: run scripts/install-opencode.sh",
                bin.display()
            )
        })
}

/// The project's own opencode.json before muster is installed: a provider that is the stub.
fn project_config(stub: &ChatStub) -> String {
    serde_json::to_string_pretty(&json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"stub": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "stub",
            "options": {"baseURL": format!("{}/v1", stub.url), "apiKey": "sk-test-offline"},
            "models": {"m": {"name": "m", "tool_call": true}},
        }},
        "model": "stub/m",
        "small_model": "stub/m",
        "autoupdate": false,
        "share": "disabled",
    }))
    .unwrap()
}

/// A daemon, a stub, and a sandbox whose project has muster installed for opencode.
struct Harness {
    bin: PathBuf,
    daemon: TestDaemon,
    stub: ChatStub,
    sb: Sandbox,
    runs: std::cell::Cell<u32>,
}

/// One finished `opencode run --format json`.
struct Run {
    id: String,
    events: Vec<Value>,
}

impl Run {
    fn texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "text")
            .map(|e| e["part"]["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Harness {
    fn new() -> Self {
        let h = Self::bare();
        h.sb.install("opencode", &[]);
        h
    }

    /// Everything but the install: the project's config, and opencode's own
    /// plugin dependencies already in place in both of its config directories.
    fn bare() -> Self {
        let bin = opencode_bin();
        let deps = plugin_deps(&bin);
        let daemon = TestDaemon::start(&[]);
        let stub = ChatStub::start();
        let sb = Sandbox::new();
        sb.write(&sb.project.join("opencode.json"), &project_config(&stub));
        for dir in [sb.project.join(".opencode"), sb.config_home().join("opencode")] {
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(deps.join(file), dir.join(file)).unwrap();
            }
            std::os::unix::fs::symlink(deps.join("node_modules"), dir.join("node_modules")).unwrap();
        }
        Harness {
            bin,
            daemon,
            stub,
            sb,
            runs: std::cell::Cell::new(0),
        }
    }

    /// The files `muster install opencode --project` touches.
    fn config_files(&self) -> Vec<PathBuf> {
        vec![
            self.sb.project.join("opencode.json"),
            self.sb.project.join(".opencode/plugins/muster.js"),
        ]
    }

    /// Starts `opencode run <args> --format json` in the project, offline.
    fn spawn(&self, args: &[&str]) -> Running {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut cmd = Command::new(&self.bin);
        self.sb
            .env(&mut cmd)
            .arg("run")
            .args(args)
            .args(["--format", "json"])
            .current_dir(&self.sb.project)
            // Nothing beyond loopback: no models.dev catalog, no update check, no share, no LSP downloads.
            .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
            .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
            .env("OPENCODE_DISABLE_SHARE", "1")
            .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
            .env("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1")
            // For muster's plugin (inside opencode) and its MCP server.
            .env("MUSTER_URL", &self.daemon.url)
            .env("MUSTER_OPERATOR", "tester");
        Running::spawn(cmd, &self.sb.home, &format!("opencode-run{n}"))
    }

    fn finish(&self, running: Running) -> Run {
        let err = running.err.clone();
        let out = running.finish(RUN_LIMIT);
        let events = json_lines(&out);
        let id = events
            .iter()
            .find_map(|e| e["sessionID"].as_str())
            .unwrap_or_else(|| panic!("opencode printed no session event: {out}\nstderr: {}", read(&err)))
            .to_string();
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "step_finish" && e["part"]["reason"] == "stop"),
            "the turn did not finish: {out}\nstderr: {}",
            read(&err)
        );
        Run { id, events }
    }

    fn run(&self, prompt: &str) -> Run {
        self.finish(self.spawn(&[prompt]))
    }

    /// Runs another turn of session `id`.
    fn resume(&self, id: &str, prompt: &str) -> Run {
        let run = self.finish(self.spawn(&["--session", id, prompt]));
        assert_eq!(run.id, id, "the continued run is the same session");
        run
    }
}

/// The messages this turn added: those after the last assistant message.
fn fresh_part(body: &Value) -> Value {
    after_last(&body["messages"], "assistant")
}

/// The first tool result (`role: "tool"` message) the model was sent.
fn tool_result(bodies: &[Value]) -> Value {
    bodies
        .iter()
        .flat_map(|b| b["messages"].as_array().cloned().unwrap_or_default())
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no request carries the tool result: {bodies:?}"))
}

// Proves a real `opencode run` in a project set up only by `muster install opencode` puts its session on muster's roster mid-turn under opencode's own session id (through muster's plugin), and the model's request carries muster's identity for it.
#[test]
fn opencode_session_joins_the_roster_under_its_own_id() {
    let h = Harness::new();
    h.stub.push(Turn::text("hello from the stub"));
    h.stub.hold();
    let running = h.spawn(&["hello"]);
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "opencode made no model request; stderr: {}",
        running.stderr()
    );
    let (status, roster) = h.daemon.get("/api/v1/roster");
    assert_eq!(status, 200);
    let mine: Vec<Value> = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["harness"] == "opencode")
        .cloned()
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one opencode session is on the roster mid-turn: {roster}\nstderr: {}",
        running.stderr()
    );
    let me = &mine[0];
    assert_eq!(me["activity"], "busy", "the prompt marked the session busy: {me}");
    assert_eq!(me["operator"], "tester", "the plugin names the operator: {me}");
    assert!(
        me["pid"].as_u64().is_some() && me["host"] != "",
        "the plugin names opencode's pid and host: {me}"
    );
    assert_eq!(Path::new(me["cwd"].as_str().unwrap()), h.sb.project, "{me}");
    let nickname = me["nickname"].as_str().unwrap().to_string();
    h.stub.release();

    let run = h.finish(running);
    assert_eq!(
        me["id"],
        run.id.as_str(),
        "the roster names the session by opencode's own id"
    );
    assert!(run.id.starts_with("ses_"), "{}", run.id);
    assert_eq!(run.texts(), ["hello from the stub"], "{:?}", run.events);
    assert!(
        h.stub.unknown().is_empty(),
        "opencode called paths the stub does not serve: {:?}",
        h.stub.unknown()
    );
    let first = &h.stub.bodies()[0];
    assert_eq!(
        count(first, "<muster-identity>"),
        1,
        "the identity is injected once: {first}"
    );
    assert!(
        count(first, &nickname) > 0 && count(first, &run.id) > 0,
        "the identity names {nickname}: {first}"
    );
}

// Proves mail sent to an opencode session between turns reaches the model request of its next turn (`opencode run --session`) exactly once, and the turn after that does not carry it again.
#[test]
fn mail_reaches_the_next_opencode_turn_exactly_once() {
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
    assert!(!bodies.is_empty(), "the continued run made no model request");
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
        wait_until(Duration::from_secs(5), || h.daemon.status()["unread_deliveries"] == 0).is_some(),
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

// Proves a scripted call of muster_send_message in a real opencode run carries `_session_id` (set by muster's plugin), is sent as the opencode session through the installed `muster mcp`, and reaches a peer shim as a live channel notification; the tool result tells the model it was pushed.
#[test]
fn opencode_send_message_is_attributed_and_pushed_live() {
    let h = Harness::new();
    let peer = PeerShim::start(&h.daemon, &new_uuid());
    let marker = format!("PUSHMARK{}", new_uuid().replace('-', ""));
    h.stub.push(Turn::tool_call(
        "muster_send_message",
        json!({"to": peer.id, "body": format!("tests pass ({marker})")}),
    ));
    h.stub.push(Turn::text("sent"));

    let run = h.run("tell the peer");
    assert_eq!(run.texts(), ["sent"], "{:?}", run.events);
    assert_eq!(h.stub.pending(), 0, "both scripted turns were used");
    let call = run
        .events
        .iter()
        .find(|e| e["type"] == "tool_use" && e["part"]["tool"] == "muster_send_message")
        .unwrap_or_else(|| panic!("no muster_send_message call in {:?}", run.events));
    assert_eq!(call["part"]["state"]["status"], "completed", "{call}");
    assert_eq!(
        call["part"]["state"]["input"]["_session_id"],
        run.id.as_str(),
        "the plugin named the session: {call}"
    );

    let push = peer
        .channel_with(&marker, Duration::from_secs(10))
        .expect("the peer shim got the channel notification");
    assert_eq!(
        push["params"]["meta"]["from"],
        run.id.as_str(),
        "the push names the opencode session as sender: {push}"
    );
    let bodies = h.stub.bodies();
    let result = tool_result(&bodies);
    assert!(
        count(&result, "pushed") > 0,
        "the model is told the message was pushed: {result}"
    );
}

// Proves `muster install opencode --uninstall` after a real opencode run leaves the project's opencode.json and plugin file byte for byte as they were before install.
#[test]
fn opencode_uninstall_restores_the_config_files() {
    let h = Harness::bare();
    let before = snapshot(&h.config_files());
    h.sb.install("opencode", &[]);
    assert_ne!(snapshot(&h.config_files()), before, "install changed nothing");
    h.run("hello");
    h.sb.install("opencode", &["--uninstall"]);
    assert_eq!(
        snapshot(&h.config_files()),
        before,
        "uninstall did not restore the files"
    );
    assert!(
        !h.sb.project.join(".opencode/plugins").exists(),
        "the plugins dir install created is gone"
    );
}

// Proves `muster install opencode --user` alone (plugin and server in ~/.config/opencode, nothing in the project) makes a real `opencode run` register its session, give the model its identity, and name the session in muster's tool calls.
#[test]
fn opencode_user_install_works_in_any_project() {
    let h = Harness::bare();
    h.sb.install_user("opencode", &[]);
    h.stub.push(Turn::tool_call("muster_whoami", json!({})));
    h.stub.push(Turn::text("done"));

    let run = h.run("who am i");
    assert_eq!(run.texts(), ["done"], "{:?}", run.events);
    let me = known_session(&h.daemon, &run.id).unwrap_or_else(|| panic!("{} is not known to muster", run.id));
    assert_eq!(me["harness"], "opencode", "{me}");
    let bodies = h.stub.bodies();
    assert_eq!(
        count(&bodies[0], "<muster-identity>"),
        1,
        "the identity is injected once: {}",
        bodies[0]
    );
    let result = tool_result(&bodies);
    assert!(
        count(&result, &format!("\\\"id\\\":\\\"{}\\\"", run.id)) > 0,
        "whoami answered for {}: {result}",
        run.id
    );
    assert!(
        !h.sb.project.join(".opencode/plugins").exists(),
        "a user install writes nothing into the project"
    );
}

// Proves muster's edit guard in a real opencode run: a scripted `edit` of a file another session reserved is refused by muster's plugin (tool.execute.before throws), the file is untouched and the tool result the model gets names the holder and why they hold it; once released, the same scripted edit goes through.
#[test]
fn opencode_edit_of_a_reserved_file_is_refused_with_the_holder_named() {
    let h = Harness::new();
    let (file, holder) = reserved_schema(&h.daemon, &h.sb.project);
    let holder_nick = &holder.nickname;

    let edit = json!({"filePath": file.to_str().unwrap(), "oldString": "int", "newString": "bigint"});
    h.stub.push(Turn::tool_call("edit", edit.clone()));
    h.stub.push(Turn::text("ok, leaving it"));
    let run = h.run("widen the id column");
    assert_eq!(run.texts(), ["ok, leaving it"], "{:?}", run.events);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id int);\n",
        "the edit did not happen"
    );
    let call = run
        .events
        .iter()
        .find(|e| e["type"] == "tool_use" && e["part"]["tool"] == "edit")
        .unwrap_or_else(|| panic!("no edit call in {:?}", run.events));
    assert_eq!(
        call["part"]["state"]["status"], "error",
        "opencode reports the edit refused: {call}"
    );
    let bodies = h.stub.bodies();
    let result = tool_result(&bodies);
    assert!(
        count(&result, holder_nick) > 0,
        "the refusal names the holder {holder_nick}: {result}"
    );
    assert!(
        count(&result, "migrating the schema") > 0,
        "and why they hold it: {result}"
    );

    // Control: once released, the same scripted edit goes through.
    holder.release(&h.daemon);
    h.stub.push(Turn::tool_call("edit", edit));
    h.stub.push(Turn::text("done"));
    let run2 = h.resume(&run.id, "widen it now");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "create table t (id bigint);\n",
        "the edit went through: {:?}",
        run2.events
    );
}
