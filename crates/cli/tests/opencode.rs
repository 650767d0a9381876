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
    after_last, cache_root, count, harness_bin, json_lines, known_session, new_uuid, read,
    reserved_schema, snapshot, Running, Sandbox,
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
        Self::with_daemon(&[])
    }

    /// Installed, with extra `muster serve` flags for the daemon.
    fn with_daemon(serve_args: &[&str]) -> Self {
        let h = Self::bare_with(serve_args);
        h.sb.install("opencode", &[]);
        h
    }

    /// Everything but the install: the project's config, and opencode's own
    /// plugin dependencies already in place in both of its config directories.
    fn bare() -> Self {
        Self::bare_with(&[])
    }

    fn bare_with(serve_args: &[&str]) -> Self {
        let bin = opencode_bin();
        let deps = plugin_deps(&bin);
        let daemon = TestDaemon::start(serve_args);
        let stub = ChatStub::start();
        let sb = Sandbox::new();
        sb.write(&sb.project.join("opencode.json"), &project_config(&stub));
        for dir in [
            sb.project.join(".opencode"),
            sb.config_home().join("opencode"),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            for file in ["package.json", "package-lock.json"] {
                std::fs::copy(deps.join(file), dir.join(file)).unwrap();
            }
            std::os::unix::fs::symlink(deps.join("node_modules"), dir.join("node_modules"))
                .unwrap();
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
        let mut cmd = self.command();
        cmd.arg("run").args(args).args(["--format", "json"]);
        Running::spawn(cmd, &self.sb.home, &format!("opencode-run{n}"))
    }

    /// `opencode` in the project, offline, with muster's plugin pointed at the daemon.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        self.sb
            .env(&mut cmd)
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
        cmd
    }

    /// A headless `opencode serve` in the project (one process, many turns),
    /// with extra environment; returns once its HTTP API answers.
    fn serve(&self, env: &[(&str, &str)]) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = self.command();
        cmd.args([
            "serve",
            "--port",
            &port.to_string(),
            "--hostname",
            "127.0.0.1",
        ]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let running = Running::spawn(cmd, &self.sb.home, &format!("opencode-serve{port}"));
        let served = Served {
            url: format!("http://127.0.0.1:{port}"),
            running,
        };
        // With a fresh data directory opencode never answers the first request
        // (seen with 1.18.33: it hangs past any timeout; the next one is answered
        // at once), so each try gives up quickly.
        let quick = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let up = wait_until(RUN_LIMIT, || {
            quick
                .get(format!("{}/session", served.url))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        assert!(
            up.is_some(),
            "opencode serve did not answer; stderr: {}",
            served.running.stderr()
        );
        served
    }

    fn finish(&self, running: Running) -> Run {
        let err = running.err.clone();
        let out = running.finish(RUN_LIMIT);
        let events = json_lines(&out);
        let id = events
            .iter()
            .find_map(|e| e["sessionID"].as_str())
            .unwrap_or_else(|| {
                panic!(
                    "opencode printed no session event: {out}\nstderr: {}",
                    read(&err)
                )
            })
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

/// A running `opencode serve` and its HTTP API.
struct Served {
    url: String,
    running: Running,
}

impl Served {
    /// `POST /session`: a new session's id.
    fn create_session(&self) -> String {
        let resp = http()
            .post(format!("{}/session", self.url))
            .json(&json!({}))
            .send()
            .expect("POST /session");
        assert!(
            resp.status().is_success(),
            "POST /session: {}",
            resp.status()
        );
        let v: Value = resp.json().expect("a session");
        v["id"].as_str().expect("a session id").to_string()
    }

    /// `POST /session/:id/prompt_async`: starts a turn with `text` as the user's message.
    fn prompt(&self, id: &str, text: &str) {
        let resp = http()
            .post(format!("{}/session/{id}/prompt_async", self.url))
            .json(&json!({"parts": [{"type": "text", "text": text}]}))
            .send()
            .expect("POST prompt_async");
        assert!(
            resp.status().is_success(),
            "prompt_async: {}; stderr: {}",
            resp.status(),
            self.running.stderr()
        );
    }

    /// Whether opencode says session `id` is running a turn (`GET /session/status` lists only those that are).
    fn busy(&self, id: &str) -> bool {
        let v: Value = http()
            .get(format!("{}/session/status", self.url))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        v.get(id).is_some_and(|s| s["type"] != "idle")
    }
}

/// The session `id` on the roster now (Null if absent).
fn on_roster(daemon: &TestDaemon, id: &str) -> Value {
    let (status, roster) = daemon.get("/api/v1/roster");
    assert_eq!(status, 200, "{roster}");
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the daemon has session `id` idle (its turn's stop was not held).
fn wait_idle(daemon: &TestDaemon, id: &str) -> Value {
    let mut last = Value::Null;
    let idle = wait_until(RUN_LIMIT, || {
        last = on_roster(daemon, id);
        last["activity"] == "idle"
    });
    assert!(idle.is_some(), "{id} never went idle: {last}");
    last
}

/// Sends `body` to `to` as the daemon's operator through the API; returns the answer.
fn send(daemon: &TestDaemon, to: &str, body: &str) -> Value {
    let (status, v) = daemon.post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits (polling every 2 ms) for the first model request after `mark`; returns how long it took.
fn next_request(stub: &ChatStub, mark: usize, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if !stub.bodies_since(mark).is_empty() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// A marker unique to one test's mail.
fn marker(kind: &str) -> String {
    format!("{kind}{}", new_uuid().replace('-', ""))
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
    assert_eq!(
        me["activity"], "busy",
        "the prompt marked the session busy: {me}"
    );
    assert_eq!(
        me["operator"], "tester",
        "the plugin names the operator: {me}"
    );
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
    assert!(
        !bodies.is_empty(),
        "the continued run made no model request"
    );
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
    assert_ne!(
        snapshot(&h.config_files()),
        before,
        "install changed nothing"
    );
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
    let me = known_session(&h.daemon, &run.id)
        .unwrap_or_else(|| panic!("{} is not known to muster", run.id));
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

    let edit =
        json!({"filePath": file.to_str().unwrap(), "oldString": "int", "newString": "bigint"});
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

// Proves the wake with the real opencode: a session of a long-lived `opencode serve` whose first turn ended is shown on the roster as wakeable by opencode (`wake: "opencode"`, through the plugin's wake stream and run id); a direct message to it answers `woken`, and with no prompt from the test a second turn starts whose first model request carries the mail exactly once (in what that turn added), and no request after it carries the mail again.
#[test]
fn an_idle_opencode_session_is_woken_by_direct_mail() {
    let h = Harness::new();
    let oc = h.serve(&[]);
    let id = oc.create_session();
    h.stub.push(Turn::text("first turn done"));
    oc.prompt(&id, "hello");
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "the first turn made no model request; stderr: {}",
        oc.running.stderr()
    );
    let me = wait_idle(&h.daemon, &id);
    assert_eq!(
        me["wake"], "opencode",
        "the roster says the plugin can wake it: {me}"
    );
    assert_eq!(
        h.stub.bodies().len(),
        1,
        "the first turn made one model request"
    );

    let mail = marker("WAKEMARK");
    let mark = h.stub.mark();
    h.stub.push(Turn::text("read it"));
    let sent = send(
        &h.daemon,
        &id,
        &format!("please look at the failing build ({mail})"),
    );
    let latency = next_request(&h.stub, mark, Duration::from_secs(10));
    assert_eq!(sent["state"], "woken", "{sent}");
    assert_eq!(sent["deliveries"][0]["woken"], true, "{sent}");
    let latency =
        latency.unwrap_or_else(|| panic!("no turn started; stderr: {}", oc.running.stderr()));
    eprintln!("wake latency: {} ms", latency.as_millis());

    wait_idle(&h.daemon, &id);
    let bodies = h.stub.bodies_since(mark);
    assert_eq!(
        bodies.len(),
        1,
        "the woken turn made one model request: {bodies:?}"
    );
    assert_eq!(
        count(&fresh_part(&bodies[0]), &mail),
        1,
        "the woken turn carries the mail once: {}",
        bodies[0]
    );
    assert_eq!(
        count(&bodies[0], &mail),
        1,
        "and nowhere else in the request: {}",
        bodies[0]
    );
    assert_eq!(h.stub.pending(), 0, "the scripted reply was used");
    assert_eq!(
        count(&fresh_part(&bodies[0]), "New muster mail for you"),
        1,
        "the turn's prompt is the daemon's wake line: {}",
        bodies[0]
    );
    assert_eq!(metric(&h.daemon, "muster_wakes_total"), 1, "one wake");
    assert_eq!(
        hooks_posted(&h.daemon, "prompt-submit"),
        2,
        "the test's prompt and the wake's"
    );
}

// Proves mid-turn delivery with the real opencode: in one `opencode run` turn of three scripted `bash` calls and a final text, a direct message (from the operator) sent while the first call runs (`sleep 3`, after it touched a file the test waits for) reaches the model in the very next request, appended to that tool's result by the plugin's `tool.execute.after`, exactly once; the later requests of the turn carry it only as that same history (once, not in what they add). A room message without a mention, sent at the same moment, is in none of the turn's requests and arrives with the next turn instead, once.
#[test]
fn direct_mail_reaches_a_running_opencode_turn_after_the_next_tool() {
    let h = Harness::new();
    let started = h.sb.project.join("first-tool-started");
    let bash = |command: String| {
        Turn::tool_call(
            "bash",
            json!({"command": command, "description": "a scripted step"}),
        )
    };
    h.stub
        .push(bash(format!("touch {} && sleep 3", started.display())));
    h.stub.push(bash("echo second".into()));
    h.stub.push(bash("echo third".into()));
    h.stub.push(Turn::text("all three done"));
    let running = h.spawn(&["run the three steps"]);
    assert!(
        wait_until(RUN_LIMIT, || started.exists()).is_some(),
        "the first tool never ran; stderr: {}",
        running.stderr()
    );
    let me = on_roster(&h.daemon, &known_id(&h.daemon));
    assert_eq!(
        me["wake"],
        Value::Null,
        "a one-shot `opencode run` offers no wake: {me}"
    );
    let direct = marker("DIRECTMARK");
    let ambient = marker("ROOMMARK");
    let sent = h.daemon.muster_json(&[
        "send",
        &known_id(&h.daemon),
        &format!("stop after this step ({direct})"),
        "--json",
    ]);
    assert_eq!(
        sent["state"], "queued",
        "the session is busy, so the mail waits: {sent}"
    );
    let room = h.daemon.muster_json(&[
        "broadcast",
        "everyone",
        &format!("lunch is at noon ({ambient})"),
        "--json",
    ]);
    assert_eq!(
        room["deliveries"].as_array().map(Vec::len),
        Some(1),
        "the room reaches the session: {room}"
    );
    let run = h.finish(running);
    assert_eq!(run.texts(), ["all three done"], "{:?}", run.events);

    let bodies = h.stub.bodies();
    assert_eq!(
        bodies.len(),
        4,
        "one model request per step and one for the text: {bodies:?}"
    );
    assert_eq!(
        count(&bodies[0], &direct),
        0,
        "sent after the first request: {}",
        bodies[0]
    );
    let first_result = fresh_part(&bodies[1]);
    assert_eq!(
        first_result.as_array().map(Vec::len),
        Some(1),
        "{first_result}"
    );
    assert_eq!(first_result[0]["role"], "tool", "{first_result}");
    assert_eq!(
        count(&first_result[0], &direct),
        1,
        "the mail rides on the first tool's result: {}",
        bodies[1]
    );
    assert_eq!(
        count(&bodies[1], &direct),
        1,
        "exactly once in that request: {}",
        bodies[1]
    );
    for body in &bodies[2..] {
        assert_eq!(
            count(&fresh_part(body), &direct),
            0,
            "a later request adds the mail again: {body}"
        );
        assert_eq!(count(body, &direct), 1, "it is only history there: {body}");
    }
    for body in &bodies {
        assert_eq!(
            count(body, &ambient),
            0,
            "room mail waits for the next turn: {body}"
        );
    }
    assert_eq!(
        metric(&h.daemon, "muster_mid_turn_deliveries_total"),
        1,
        "one message mid-turn"
    );
    assert_eq!(
        hooks_posted(&h.daemon, "post-tool-use"),
        3,
        "one post-tool-use per tool"
    );

    let mark = h.stub.mark();
    h.resume(&run.id, "next");
    let next = h.stub.bodies_since(mark);
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        count(&fresh_part(&next[0]), &ambient),
        1,
        "the room mail comes with the next turn: {}",
        next[0]
    );
    assert_eq!(count(&next[0], &ambient), 1, "once: {}", next[0]);
    assert_eq!(
        count(&fresh_part(&next[0]), &direct),
        0,
        "the direct mail is not surfaced again: {}",
        next[0]
    );
}

/// The one opencode session on the roster.
fn known_id(daemon: &TestDaemon) -> String {
    let (_, roster) = daemon.get("/api/v1/roster");
    let ids: Vec<&str> = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["harness"] == "opencode")
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "{roster}");
    ids[0].to_string()
}

/// The value of one line of the daemon's Prometheus text (`name` with its labels), 0 if absent.
fn metric(daemon: &TestDaemon, name: &str) -> u64 {
    let (status, text) = daemon.get("/metrics");
    assert_eq!(status, 200);
    text.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// How many times the plugin posted hook `event`.
fn hooks_posted(daemon: &TestDaemon, event: &str) -> u64 {
    metric(
        daemon,
        &format!("muster_hook_duration_seconds_count{{event=\"{event}\"}}"),
    )
}

// Proves the hold at the stop with the real opencode: direct mail that arrives while a turn's last model request is in flight (held by the stub, so no tool boundary can surface it) is unread when opencode goes idle; the plugin's stop hook is held (`decision: "block"`), and the plugin continues the session with the mail as the next user message, so a further model request carries it, exactly once, in what it adds; that continuation is not taken for a user turn (no second prompt-submit), its own stop is not held, and the session then ends idle with no further request.
#[test]
fn an_opencode_turn_ending_with_direct_mail_unread_continues_with_it() {
    let h = Harness::new();
    let oc = h.serve(&[]);
    let id = oc.create_session();
    h.stub.push(Turn::text("first answer"));
    h.stub.push(Turn::text("read the mail, done"));
    h.stub.hold();
    oc.prompt(&id, "hello");
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        oc.running.stderr()
    );
    let mail = marker("STOPMARK");
    let sent = send(
        &h.daemon,
        &id,
        &format!("one more thing before you stop ({mail})"),
    );
    assert_eq!(sent["state"], "queued", "the session is busy: {sent}");
    assert_eq!(count(&h.stub.bodies()[0], &mail), 0);
    h.stub.release();

    assert!(
        h.stub.wait_for_requests(0, 2, RUN_LIMIT),
        "the turn did not go on with the mail; stderr: {}",
        oc.running.stderr()
    );
    wait_idle(&h.daemon, &id);
    assert!(
        wait_until(Duration::from_secs(10), || !oc.busy(&id)).is_some(),
        "opencode still runs a turn"
    );
    // Nothing further starts: the continuation's own stop ended the turn.
    std::thread::sleep(Duration::from_secs(2));
    let bodies = h.stub.bodies();
    assert_eq!(
        bodies.len(),
        2,
        "the first request and one continuation: {bodies:?}"
    );
    let added = fresh_part(&bodies[1]);
    assert_eq!(
        count(&added, &mail),
        1,
        "the continuation carries the mail: {}",
        bodies[1]
    );
    assert_eq!(count(&bodies[1], &mail), 1, "exactly once: {}", bodies[1]);
    assert_eq!(
        added.as_array().map(Vec::len),
        Some(1),
        "as one user message: {added}"
    );
    assert_eq!(added[0]["role"], "user", "{added}");
    assert_eq!(h.stub.pending(), 0, "both scripted replies were used");
    assert_eq!(
        metric(&h.daemon, "muster_stops_held_total"),
        1,
        "one stop was held"
    );
    assert_eq!(
        hooks_posted(&h.daemon, "stop"),
        2,
        "the held stop and the final one"
    );
    assert_eq!(
        hooks_posted(&h.daemon, "prompt-submit"),
        1,
        "only the test's prompt was a user turn"
    );
    assert_eq!(
        h.daemon.status()["unread_deliveries"],
        0,
        "{}",
        h.daemon.status()
    );
}

// Proves the opt-out with the real opencode: with MUSTER_WAKE=off in opencode's environment the plugin opens no wake stream and its hooks say so, so the roster shows the idle session as `wake: "off"`, a direct message answers `queued` (not woken), and no turn starts within 5 s; the mail still arrives with the next prompt, once.
#[test]
fn an_opencode_session_with_wake_off_is_not_woken() {
    let h = Harness::new();
    let oc = h.serve(&[("MUSTER_WAKE", "off")]);
    let id = oc.create_session();
    h.stub.push(Turn::text("first turn done"));
    oc.prompt(&id, "hello");
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        oc.running.stderr()
    );
    let me = wait_idle(&h.daemon, &id);
    assert_eq!(me["wake"], "off", "{me}");

    let mail = marker("OFFMARK");
    let mark = h.stub.mark();
    let sent = send(&h.daemon, &id, &format!("no hurry ({mail})"));
    assert_eq!(sent["state"], "queued", "{sent}");
    assert_eq!(sent["deliveries"][0]["woken"], false, "{sent}");
    assert_eq!(
        next_request(&h.stub, mark, Duration::from_secs(5)),
        None,
        "a turn started: {:?}",
        h.stub.bodies_since(mark)
    );
    assert_eq!(metric(&h.daemon, "muster_wakes_total"), 0);

    oc.prompt(&id, "anything new?");
    assert!(
        h.stub.wait_for_requests(mark, 1, RUN_LIMIT),
        "the prompt made no request"
    );
    let body = &h.stub.bodies_since(mark)[0];
    assert_eq!(
        count(&fresh_part(body), &mail),
        1,
        "the mail comes with the next prompt: {body}"
    );
    assert_eq!(count(body, &mail), 1, "once: {body}");
}

// Measures the wake latency with the real opencode (from the send to the woken turn's first model request at the stub, polled every 2 ms) over five wakes of one idle `opencode serve` session (wake cooldown 500 ms), printing each figure; proves every wake answers `woken`, starts one turn whose request carries that mail exactly once, and comes within the 2 s the issue sets.
#[test]
fn opencode_wake_latency_over_five_wakes() {
    let h = Harness::with_daemon(&["--wake-cooldown", "500ms"]);
    let oc = h.serve(&[]);
    let id = oc.create_session();
    oc.prompt(&id, "hello");
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        oc.running.stderr()
    );
    let mut figures = Vec::new();
    for i in 0..5 {
        let me = wait_idle(&h.daemon, &id);
        assert_eq!(me["wake"], "opencode", "{me}");
        // The cooldown since the last wake has passed.
        std::thread::sleep(Duration::from_millis(600));
        let mail = marker(&format!("LATENCY{i}MARK"));
        let mark = h.stub.mark();
        let start = std::time::Instant::now();
        let sent = send(&h.daemon, &id, &format!("ping {i} ({mail})"));
        let latency = next_request(&h.stub, mark, Duration::from_secs(10))
            .map(|_| start.elapsed())
            .unwrap_or_else(|| panic!("wake {i} started no turn; stderr: {}", oc.running.stderr()));
        assert_eq!(sent["state"], "woken", "wake {i}: {sent}");
        let body = &h.stub.bodies_since(mark)[0];
        assert_eq!(count(&fresh_part(body), &mail), 1, "wake {i}: {body}");
        assert_eq!(count(body, &mail), 1, "wake {i}: {body}");
        figures.push(latency.as_millis());
        // Read by scripts/bench-wake.sh.
        eprintln!("wake-latency opencode {}", latency.as_millis());
    }
    eprintln!("opencode wake latency, send to first model request (ms): {figures:?}");
    assert!(figures.iter().all(|ms| *ms < 2000), "{figures:?}");
}

/// A TCP relay in front of the daemon whose live connections the test can cut,
/// as a daemon restart or a network fault would.
/// Clients find the daemon's local key by the port they call; one calling
/// the relay looks for the relay port's key, so the relay's port gets a copy
/// of the daemon's (0600, beside it), as if the daemon listened there.
fn stand_in_key(daemon_url: &str, port: u16) {
    use std::os::unix::fs::PermissionsExt;
    let dir = muster_daemon::unix_socket::default_dir();
    let path = muster_daemon::local_key::path_for(&dir, port);
    std::fs::write(&path, key_for(daemon_url)).expect("write the relay's key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Relay {
    url: String,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(daemon_url: &str) -> Relay {
        use std::net::{TcpListener, TcpStream};
        let target = daemon_url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let url = format!("http://{}", listener.local_addr().unwrap());
        stand_in_key(daemon_url, listener.local_addr().unwrap().port());
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let conns = live.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut conns = conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { url, live }
    }

    /// Closes every connection open through the relay now.
    fn cut(&self) {
        for conn in self.live.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

// Proves the plugin's wake stream survives a dropped connection: with opencode talking to the daemon through a relay, cutting every open connection detaches the waker (the roster's `wake` goes to null), the plugin reconnects by itself within its backoff (back to `"opencode"`), and a direct message then still wakes the idle session into a turn that carries it once.
#[test]
fn the_opencode_wake_stream_reconnects_after_it_drops() {
    let h = Harness::new();
    let relay = Relay::start(&h.daemon.url);
    let oc = h.serve(&[("MUSTER_URL", relay.url.as_str())]);
    let id = oc.create_session();
    oc.prompt(&id, "hello");
    assert!(
        h.stub.wait_for_requests(0, 1, RUN_LIMIT),
        "no model request; stderr: {}",
        oc.running.stderr()
    );
    assert_eq!(wait_idle(&h.daemon, &id)["wake"], "opencode");

    relay.cut();
    assert!(
        wait_until(Duration::from_secs(5), || on_roster(&h.daemon, &id)["wake"]
            .is_null())
        .is_some(),
        "the cut did not drop the wake stream: {}",
        on_roster(&h.daemon, &id)
    );
    assert!(
        wait_until(Duration::from_secs(10), || on_roster(&h.daemon, &id)
            ["wake"]
            == "opencode")
        .is_some(),
        "the plugin did not reconnect: {}",
        on_roster(&h.daemon, &id)
    );

    let mail = marker("RECONNECTMARK");
    let mark = h.stub.mark();
    let sent = send(&h.daemon, &id, &format!("still there? ({mail})"));
    assert_eq!(sent["state"], "woken", "{sent}");
    assert!(
        next_request(&h.stub, mark, Duration::from_secs(10)).is_some(),
        "no woken turn; stderr: {}",
        oc.running.stderr()
    );
    let body = &h.stub.bodies_since(mark)[0];
    assert_eq!(count(&fresh_part(body), &mail), 1, "{body}");
    assert_eq!(count(body, &mail), 1, "{body}");
}
