//! The real interactive Codex TUI (0.171.0), offline, under `muster run
//! codex` in a tmux pane of its own: what a person running `muster run
//! codex` gets. Each test has its own daemon, Responses API stub, project
//! (set up by `muster install codex --project`, which also trusts the
//! project and muster's hooks in `$CODEX_HOME/config.toml`) and HOME.
//!
//! `muster run codex` starts `codex app-server --listen unix://<socket>`
//! for the run and the TUI as `codex --remote unix://<socket> -C <project>`;
//! a wake is `thread/queue/add` on that app-server, so nothing is typed.
//!
//! The binary comes from `MUSTER_CODEX_BIN`, else the cache
//! `scripts/install-codex.sh` fills.

mod common;
#[path = "support/responses_stub.rs"]
mod responses_stub;
#[path = "support/sandbox.rs"]
mod sandbox;
#[path = "support/tmux.rs"]
mod tmux;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tmux::Tmux;

use common::*;
use responses_stub::ResponsesStub;
use sandbox::{after_last, count, harness_bin, new_uuid, read, Sandbox};
use serde_json::{json, Value};

/// Longest wait for one step of a TUI test (a launch, a turn).
const STEP: Duration = Duration::from_secs(30);
/// The variable `codex` reads the stub's (fake) API key from.
const KEY_VAR: &str = "MUSTER_TEST_STUB_KEY";

fn codex_bin() -> PathBuf {
    harness_bin("MUSTER_CODEX_BIN", "codex/bin/codex", "install-codex.sh")
}

// ---------------------------------------------------------------- tmux

// Tmux: support/tmux.rs.

// ---------------------------------------------------------------- the TUI

/// A daemon, a stub, and a project set up by `muster install codex --project`.
struct Tui {
    daemon: TestDaemon,
    stub: ResponsesStub,
    sb: Sandbox,
    /// The directory holding `codex`, first on PATH, so `muster run codex`
    /// finds it as a person's shell would.
    path_dir: PathBuf,
}

impl Tui {
    fn new(serve_args: &[&str]) -> Tui {
        let bin = codex_bin();
        let daemon = TestDaemon::start(serve_args);
        let stub = ResponsesStub::start();
        let sb = Sandbox::new();
        // The tester's own Codex setup: the stub as model provider, nothing
        // that reaches beyond loopback.
        let config = format!(
            "model = \"stub-model\"\nmodel_provider = \"stub\"\ncheck_for_update_on_startup = false\n\n\
             [model_providers.stub]\nname = \"stub\"\nbase_url = \"{}/v1\"\nenv_key = \"{KEY_VAR}\"\n\
             wire_api = \"responses\"\n\n[features]\nplugins = false\n\n[analytics]\nenabled = false\n",
            stub.url
        );
        sb.write(&sb.codex_home().join("config.toml"), &config);
        sb.install("codex", &[]);
        let path_dir = bin.parent().unwrap().to_path_buf();
        assert_eq!(bin.file_name().unwrap(), "codex");
        Tui {
            daemon,
            stub,
            sb,
            path_dir,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.sb.home.join(name)
    }

    /// The pane's command: the offline environment (nothing of the one
    /// running the tests), then `muster run codex`; its exit code is written
    /// to `code` when it ends.
    fn command(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let home = &self.sb.home;
        format!(
            "cd {project} && env -i PATH={path}:/usr/bin:/bin HOME={home} USER=tester LANG=C.UTF-8 \
             TERM=xterm-256color XDG_CONFIG_HOME={config} XDG_STATE_HOME={state} CODEX_HOME={codex_home} \
             TMPDIR=/tmp {KEY_VAR}=sk-test-offline MUSTER_OPERATOR=tester MUSTER_AUTOSTART=0 MUSTER_RUN_LOG={runlog} \
             RUST_LOG=warn,muster=debug,codex_stderr=debug {muster} run --url {url} codex; echo $? > {code}",
            project = quote(self.sb.project.to_str().unwrap()),
            path = quote(self.path_dir.to_str().unwrap()),
            home = quote(home.to_str().unwrap()),
            config = quote(self.sb.config_home().to_str().unwrap()),
            state = quote(home.join(".local/state").to_str().unwrap()),
            codex_home = quote(self.sb.codex_home().to_str().unwrap()),
            runlog = quote(self.file("muster-run.log").to_str().unwrap()),
            muster = quote(BIN),
            url = quote(&self.daemon.url),
            code = quote(self.file("code").to_str().unwrap()),
        )
    }

    fn explain(&self, tmux: &Tmux) -> String {
        format!(
            "--- pane:\n{}\n--- muster run log:\n{}",
            tmux.capture(),
            read(&self.file("muster-run.log"))
        )
    }
}

impl Tui {
    /// The live roster's Codex sessions.
    fn codex_sessions(&self) -> Vec<Value> {
        let (status, v) = self.daemon.get("/api/v1/roster");
        assert_eq!(status, 200, "{v}");
        v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["harness"] == "codex")
            .cloned()
            .collect()
    }

    /// Waits until the roster holds exactly one Codex session and `check`
    /// holds for it; returns it.
    fn wait_session(&self, what: &str, tmux: &Tmux, check: impl Fn(&Value) -> bool) -> Value {
        let ok = wait_until(STEP, || {
            let sessions = self.codex_sessions();
            sessions.len() == 1 && check(&sessions[0])
        });
        assert!(
            ok.is_some(),
            "the Codex session never got {what}: {:?}\n{}",
            self.codex_sessions(),
            self.explain(tmux)
        );
        self.codex_sessions().remove(0)
    }

    /// Main-loop model requests (those offering tools; the TUI's title
    /// request offers none) after `mark`.
    fn turn_bodies(&self, mark: usize) -> Vec<Value> {
        self.stub
            .bodies_since(mark)
            .into_iter()
            .filter(|b| b["tools"].as_array().is_some_and(|t| !t.is_empty()))
            .collect()
    }

    /// Polls (every 5 ms) until a main-loop request after `mark` holds
    /// `needle`; when it was seen, or None after `limit`.
    fn request_with(&self, mark: usize, needle: &str, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.turn_bodies(mark).iter().any(|b| count(b, needle) > 0) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Polls the pane until it shows `text`.
    fn wait_pane(&self, tmux: &Tmux, text: &str) {
        let ok = wait_until(STEP, || tmux.capture().contains(text));
        assert!(
            ok.is_some(),
            "the pane never showed {text:?}\n{}",
            self.explain(tmux)
        );
    }

    /// The app-server's pid and socket, from `muster run`'s log.
    fn app_server(&self) -> (i32, PathBuf) {
        let log = read(&self.file("muster-run.log"));
        let line = log
            .lines()
            .find(|l| l.contains("codex app-server started"))
            .unwrap_or_else(|| panic!("muster run started no app-server:\n{log}"));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_string()
        };
        (
            field("pid=").parse().unwrap(),
            PathBuf::from(field("socket=")),
        )
    }
}

/// Whether process `pid` exists (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn marker(prefix: &str) -> String {
    format!("{prefix}{}", new_uuid().replace('-', ""))
}

/// The wake's line, as the daemon words it (`muster_core::wake::WAKE_PROMPT`).
const WAKE_PROMPT: &str =
    "New muster mail for you (shown with this prompt). Answer with muster's send_message tool.";

// Proves the Codex wake end to end with the real interactive TUI under `muster run codex`: muster starts its own `codex app-server` (the TUI joins it with --remote and the project as -C); after a first prompt typed into the TUI ends its turn, the session is on the roster idle with wake "codex"; a direct message then answers `woken`, and with no key from the test a new turn starts (shown in the TUI) whose model request carries the wake line and the mail, exactly once; three times in a row (cooldown 1 s). Quitting the TUI stops the app-server and removes its socket directory. Prints send → woken turn's first model request latency for each wake.
#[test]
fn a_wake_of_the_idle_tui_starts_a_turn_that_carries_the_mail_once() {
    let t = Tui::new(&["--wake-cooldown", "1s"]);
    let tmux = Tmux::start(&t.command(), 160, 45);
    t.wait_pane(&tmux, "Ask Codex to do anything");
    let (server_pid, socket) = t.app_server();
    assert!(
        alive(server_pid),
        "the app-server runs\n{}",
        t.explain(&tmux)
    );
    let run_dir = socket.parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777,
        0o700,
        "{}",
        run_dir.display()
    );

    // A first prompt typed as a person would (text, a pause, Enter).
    tmux.type_text("hello there");
    std::thread::sleep(Duration::from_millis(300));
    tmux.press("Enter");
    let first = t.request_with(0, "hello there", STEP);
    assert!(
        first.is_some(),
        "the typed prompt made no model request\n{}",
        t.explain(&tmux)
    );
    let me = t.wait_session(
        "idle after the first turn, wakeable through codex",
        &tmux,
        |s| s["activity"] == "idle" && s["wake"] == "codex",
    );
    let id = me["id"].as_str().unwrap().to_string();
    assert_eq!(
        me["pid"], server_pid,
        "the hooks run under the app-server: {me}"
    );
    assert_eq!(
        t.turn_bodies(0).len(),
        1,
        "one model request for the first turn"
    );

    let mut latencies = Vec::new();
    let mut last_wake: Option<Instant> = None;
    for round in 1..=3 {
        // Past the cooldown, so the send itself wakes.
        if let Some(at) = last_wake {
            std::thread::sleep(Duration::from_millis(1_200).saturating_sub(at.elapsed()));
        }
        let mark = t.stub.mark();
        let mail = marker("WAKEMARK");
        let started = Instant::now();
        let (status, sent) = t.daemon.post_json(
            "/api/v1/messages",
            &json!({"to": id, "body": format!("please rebase ({mail})")}),
        );
        last_wake = Some(Instant::now());
        assert_eq!(status, 200, "{sent}");
        assert_eq!(sent["state"], "woken", "round {round}: {sent}");
        assert_eq!(
            sent["deliveries"][0]["woken"], true,
            "round {round}: {sent}"
        );
        let seen = t.request_with(mark, &mail, STEP);
        let seen = seen.unwrap_or_else(|| {
            panic!(
                "round {round}: no turn carried the mail\n{}",
                t.explain(&tmux)
            )
        });
        latencies.push(seen - started);
        assert!(
            seen - started < Duration::from_secs(2),
            "round {round}: the wake took {:?} (target: under 2 s)",
            seen - started
        );
        // Read by scripts/bench-wake.sh.
        eprintln!("wake-latency codex {}", (seen - started).as_millis());

        t.wait_session("idle after the woken turn", &tmux, |s| {
            s["activity"] == "idle"
        });
        let bodies = t.turn_bodies(mark);
        assert_eq!(
            bodies.len(),
            1,
            "round {round}: one model request for the woken turn: {bodies:?}"
        );
        let body = &bodies[0];
        assert_eq!(
            count(body, &mail),
            1,
            "round {round}: the mail once: {body}"
        );
        // What this turn added: everything after the last turn's answer.
        let fresh = after_last(&body["input"], "assistant");
        assert_eq!(
            count(&fresh, &mail),
            1,
            "round {round}: the mail is new in this turn: {fresh}"
        );
        let prompts: Vec<&Value> = fresh
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["role"] == "user")
            .collect();
        assert_eq!(
            prompts
                .iter()
                .filter(|i| i["content"][0]["text"] == WAKE_PROMPT)
                .count(),
            1,
            "round {round}: the turn's prompt is the wake line, once: {fresh}"
        );
        let meta: Value = serde_json::from_str(
            body["client_metadata"]["x-codex-turn-metadata"]
                .as_str()
                .unwrap_or("{}"),
        )
        .unwrap();
        assert_eq!(
            meta["turn_trigger"], "queue",
            "round {round}: started by thread/queue/add: {meta}"
        );
        t.wait_pane(&tmux, WAKE_PROMPT.split(" (").next().unwrap());
    }
    let ms: Vec<u128> = latencies.iter().map(|d| d.as_millis()).collect();
    eprintln!("wake latency, send -> woken turn's first model request (ms): {ms:?}");

    // Quitting the TUI stops muster's app-server and removes its socket.
    tmux.press("C-c");
    std::thread::sleep(Duration::from_millis(300));
    tmux.press("C-c");
    let exited = wait_until(STEP, || read(&t.file("code")).ends_with('\n'));
    assert!(
        exited.is_some(),
        "muster run did not exit\n{}",
        t.explain(&tmux)
    );
    assert!(
        !alive(server_pid),
        "the app-server {server_pid} outlived the run"
    );
    assert!(!run_dir.exists(), "{} is still there", run_dir.display());
    assert!(read(&t.file("muster-run.log")).contains("codex app-server stopped"));
}

/// The parent of process `pid`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

// Proves muster's app-server never outlives its run, whichever way the run ends: SIGTERM to `muster run codex` (passed on to the TUI, which exits) stops the app-server and removes its socket directory; after SIGKILL (no code of muster's runs) the kernel's parent-death signal stops the app-server, and the next `muster run codex` removes the directory the killed run left.
#[test]
fn the_app_server_never_outlives_its_run() {
    let t = Tui::new(&[]);

    let tmux = Tmux::start(&t.command(), 160, 45);
    t.wait_pane(&tmux, "Ask Codex to do anything");
    let (server, socket) = t.app_server();
    let run = parent_of(server);
    assert!(
        read(format!("/proc/{run}/cmdline").as_ref()).contains(BIN),
        "{run} is muster run"
    );
    assert!(
        std::fs::symlink_metadata(&socket).is_ok(),
        "the socket is there"
    );
    assert_eq!(unsafe { libc::kill(run, libc::SIGTERM) }, 0);
    let exited = wait_until(STEP, || read(&t.file("code")).ends_with('\n'));
    assert!(
        exited.is_some(),
        "muster run did not exit on SIGTERM\n{}",
        t.explain(&tmux)
    );
    assert!(!alive(server), "the app-server outlived SIGTERM");
    assert!(
        !socket.parent().unwrap().exists(),
        "the socket directory is gone"
    );
    drop(tmux);

    std::fs::remove_file(t.file("code")).unwrap();
    std::fs::remove_file(t.file("muster-run.log")).unwrap();
    let tmux = Tmux::start(&t.command(), 160, 45);
    t.wait_pane(&tmux, "Ask Codex to do anything");
    let (server, socket) = t.app_server();
    let run = parent_of(server);
    assert_eq!(unsafe { libc::kill(run, libc::SIGKILL) }, 0);
    let stopped = wait_until(STEP, || !alive(server));
    assert!(
        stopped.is_some(),
        "the app-server outlived SIGKILL of muster run"
    );
    let left = socket.parent().unwrap().to_path_buf();
    assert!(left.exists(), "a killed run cannot clean up");
    drop(tmux);

    std::fs::remove_file(t.file("muster-run.log")).unwrap();
    let tmux = Tmux::start(&t.command(), 160, 45);
    t.wait_pane(&tmux, "Ask Codex to do anything");
    assert!(!left.exists(), "the next run removed {}", left.display());
    assert!(read(&t.file("muster-run.log")).contains("removed what a killed run left"));
}

/// A stand-in `codex` whose app-server cannot start: `codex app-server`
/// fails; anything else is "the TUI", which logs its arguments and
/// MUSTER_RUN_ID, registers as session FAKE_SESSION through `muster hook`
/// (session-start, then stop: idle), and logs the first line typed into it.
const FAKE_CODEX: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys
log = os.environ["FAKE_CODEX_LOG"]
def note(kind, value):
    with open(log, "a") as f:
        f.write(json.dumps({"kind": kind, "value": value}) + "\n")
if sys.argv[1:2] == ["app-server"]:
    sys.stderr.write("fake codex: no app-server here\n")
    sys.exit(3)
note("argv", sys.argv[1:])
note("run", os.environ.get("MUSTER_RUN_ID", ""))
for event, name in [("session-start", "SessionStart"), ("stop", "Stop")]:
    payload = {"session_id": os.environ["FAKE_SESSION"], "cwd": os.getcwd(), "hook_event_name": name,
               "source": "startup", "stop_hook_active": False}
    subprocess.run([os.environ["MUSTER_BIN"], "hook", event, "--harness", "codex"], input=json.dumps(payload),
                   text=True, capture_output=True)
note("ready", "")
note("line", sys.stdin.readline().rstrip("\n"))
"#;

// Proves the fallback: when Codex's app-server cannot start (here a stand-in `codex` whose `app-server` exits 3), `muster run codex` says why in its log, runs the program as a plain harness (its own arguments only, no --remote), registers its waker as pty, and a wake is typed into it as one line.
#[test]
fn without_an_app_server_codex_runs_plain_and_wakes_are_typed() {
    let daemon = TestDaemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("codex");
    std::fs::write(&fake, FAKE_CODEX).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("fake.log");
    let runlog = dir.path().join("muster-run.log");
    let session = new_uuid();
    let mut child = Command::new(BIN)
        .args(["run", "--url", &daemon.url, "codex", "--search"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", "/nonexistent-muster-test-config")
        .env("XDG_STATE_HOME", dir.path().join("state"))
        .env("MUSTER_OPERATOR", "tester")
        .env("MUSTER_AUTOSTART", "0")
        .env("MUSTER_RUN_LOG", &runlog)
        .env("FAKE_CODEX_LOG", &log)
        .env("FAKE_SESSION", &session)
        .env("MUSTER_BIN", BIN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let notes = || -> Vec<Value> {
        read(&log)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let value = |kind: &str| {
        notes()
            .into_iter()
            .find(|n| n["kind"] == kind)
            .map(|n| n["value"].clone())
    };
    let explain = || {
        format!(
            "--- fake codex log:\n{}\n--- muster run log:\n{}",
            read(&log),
            read(&runlog)
        )
    };
    assert!(
        wait_until(STEP, || value("ready").is_some()).is_some(),
        "the stand-in never got ready\n{}",
        explain()
    );
    assert_eq!(
        value("argv"),
        Some(json!(["--search"])),
        "run plain, with the person's arguments only"
    );
    let run = value("run").unwrap();
    assert!(run.as_str().unwrap().starts_with("run-"), "{run}");
    assert!(
        read(&runlog).contains(
            "no app-server for codex, so wakes are typed into the pty: codex app-server exited (exit status: 3) \
             before it was ready: fake codex: no app-server here"
        ),
        "{}",
        explain()
    );
    let on_roster =
        wait_until(STEP, || {
            let (_, v) = daemon.get("/api/v1/roster");
            v["sessions"].as_array().unwrap().iter().any(|s| {
                s["id"] == session.as_str() && s["wake"] == "pty" && s["activity"] == "idle"
            })
        });
    assert!(
        on_roster.is_some(),
        "{}\n{}",
        daemon.get("/api/v1/roster").1,
        explain()
    );

    let (status, sent) = daemon.post_json(
        "/api/v1/messages",
        &json!({"to": session, "body": "wake up"}),
    );
    assert_eq!(
        (status, sent["state"].as_str()),
        (200, Some("woken")),
        "{sent}"
    );
    assert!(
        wait_until(STEP, || value("line").is_some()).is_some(),
        "nothing was typed\n{}",
        explain()
    );
    assert_eq!(value("line"), Some(json!(WAKE_PROMPT)));
    let exited = wait_until(STEP, || child.try_wait().unwrap().is_some());
    assert!(exited.is_some(), "muster run did not end with the stand-in");
    assert!(child.wait().unwrap().success());
    let dir_left = std::env::temp_dir().join(format!("muster-{}", run.as_str().unwrap()));
    assert!(!dir_left.exists(), "{} is still there", dir_left.display());
}

// Proves `muster run --help` tells how Codex is run and woken: muster's own app-server on a unix socket, the TUI on it with --remote and -C, wakes as thread/queue/add, the app-server stopped with the TUI, and the typing fallback.
#[test]
fn the_help_says_how_codex_is_run_and_woken() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for part in [
        "`codex app-server --listen unix://<socket>`",
        "new 0700 directory",
        "with MUSTER_RUN_ID and MUSTER_URL",
        "`codex --remote unix://<socket> -C <current directory> [args…]`",
        "`thread/queue/add`",
        "an idle session starts a turn at once, a busy one gets it as its own next turn",
        "When the TUI exits, muster stops the app-server and removes its socket",
        "If the app-server cannot start",
        "wakes are typed; MUSTER_RUN_LOG says why",
        "how=codex",
    ] {
        assert!(help.contains(part), "help lacks {part:?}:\n{help}");
    }
}
