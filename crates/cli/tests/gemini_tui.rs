//! The real interactive Gemini CLI (0.61.0) under `muster run gemini`, in a
//! tmux pane, offline against the scripted Gemini API stub: the project is
//! set up with `muster install gemini --project` alone, a person types the
//! first prompt, and mail to the idle session starts its next turn by
//! itself (the daemon's wake, typed into the TUI by `muster run`).
//!
//! Nothing but the installer keeps first-run dialogs away in 0.61.0: it
//! trusts the folder (`~/.gemini/trustedFolders.json`), so no trust dialog;
//! the user's settings pick API-key auth (`GEMINI_API_KEY`), so no auth
//! dialog; project hooks only print a warning banner, they ask nothing.
//! `GEMINI_CLI_TRUST_WORKSPACE` is not needed.
//!
//! The CLI comes from `MUSTER_GEMINI_BIN` (set by .ci/run), else from the
//! cache `scripts/install-gemini.sh` installs into.

mod common;
#[path = "support/gemini_stub.rs"]
mod gemini_stub;
#[path = "support/sandbox.rs"]
mod sandbox;
#[path = "support/tmux.rs"]
mod tmux;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tmux::Tmux;

use common::*;
use gemini_stub::{GeminiStub, Turn};
use sandbox::{after_last, count, harness_bin, new_uuid, read, Sandbox};
use serde_json::{json, Value};

/// What `muster run` types on a wake (the daemon's `WAKE_PROMPT`).
const WAKE_PROMPT: &str =
    "New muster mail for you (shown with this prompt). Answer with muster's send_message tool.";

/// How long the TUI may take to come up, or a turn to end.
const LIMIT: Duration = Duration::from_secs(30);

fn gemini_bin() -> PathBuf {
    harness_bin(
        "MUSTER_GEMINI_BIN",
        "gemini/node_modules/@google/gemini-cli/bundle/gemini.js",
        "install-gemini.sh",
    )
}

// Tmux: support/tmux.rs.

/// A daemon, a stub, a sandbox whose project has muster installed for Gemini
/// CLI, and `muster run --quiet 1s gemini` in a tmux pane there.
struct TuiRun {
    daemon: TestDaemon,
    stub: GeminiStub,
    sb: Sandbox,
    tmux: Tmux,
    id: String,
}

impl TuiRun {
    fn start() -> Self {
        let bin = gemini_bin();
        let daemon = TestDaemon::start(&[]);
        let stub = GeminiStub::start();
        let sb = Sandbox::new();
        // The user's own settings: a pinned model (no router request), API-key
        // auth, nothing that reaches the internet.
        let settings = json!({
            "model": {"name": "gemini-2.5-flash"},
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
        });
        sb.write(
            &sb.home.join(".gemini/settings.json"),
            &settings.to_string(),
        );
        sb.install("gemini", &[]);
        // `muster run gemini` finds the harness on PATH, as it would for a person.
        let bin_dir = sb.home.join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::os::unix::fs::symlink(&bin, bin_dir.join("gemini")).unwrap();
        let id = new_uuid();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        let vars = [
            ("PATH", path),
            ("HOME", sb.home.display().to_string()),
            ("USER", "tester".into()),
            ("LANG", "C.UTF-8".into()),
            ("XDG_CONFIG_HOME", sb.config_home().display().to_string()),
            (
                "XDG_STATE_HOME",
                sb.home.join(".local/state").display().to_string(),
            ),
            (
                "XDG_DATA_HOME",
                sb.home.join(".local/share").display().to_string(),
            ),
            (
                "XDG_CACHE_HOME",
                sb.home.join(".cache").display().to_string(),
            ),
            ("TMPDIR", std::env::temp_dir().display().to_string()),
            ("GEMINI_API_KEY", "test-offline".into()),
            ("GOOGLE_GEMINI_BASE_URL", stub.url.clone()),
            // One process (no relaunch with a bigger heap).
            ("GEMINI_CLI_NO_RELAUNCH", "true".into()),
            ("MUSTER_URL", daemon.url.clone()),
            ("MUSTER_OPERATOR", "tester".into()),
            // Hooks that run after the test's daemon stopped must not start one.
            ("MUSTER_AUTOSTART", "0".into()),
            (
                "MUSTER_RUN_LOG",
                sb.home.join("muster-run.log").display().to_string(),
            ),
            ("RUST_LOG", "debug".into()),
        ];
        let env: Vec<String> = vars.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
        // A clean environment (nothing of whatever runs the tests), the pane's own TERM.
        let command = format!(
            "cd '{project}' && exec env -i TERM=\"$TERM\" {env} '{BIN}' run --quiet 1s gemini --session-id {id} \
             2> '{stderr}'",
            project = sb.project.display(),
            env = env.join(" "),
            stderr = sb.home.join("run.stderr").display(),
        );
        let tmux = Tmux::start(&command, 120, 40);
        TuiRun {
            daemon,
            stub,
            sb,
            tmux,
            id,
        }
    }

    /// What to print when an assertion fails.
    fn explain(&self) -> String {
        format!(
            "--- pane:\n{}\n--- roster entry: {}\n--- muster run log:\n{}\n--- stderr:\n{}",
            self.tmux.capture(),
            self.session(),
            read(&self.sb.home.join("muster-run.log")),
            read(&self.sb.home.join("run.stderr")),
        )
    }

    /// The session on the roster now (Null if it is not there).
    fn session(&self) -> Value {
        let (status, roster) = self.daemon.get("/api/v1/roster");
        assert_eq!(status, 200, "{roster}");
        roster["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == self.id.as_str())
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits (bounded) for the pane to show `text`.
    fn wait_for_pane(&self, text: &str) {
        let shown = wait_until(LIMIT, || self.tmux.capture().contains(text));
        assert!(
            shown.is_some(),
            "the pane never showed {text:?}\n{}",
            self.explain()
        );
    }
}

/// The contents this turn added: those after the last model turn.
fn fresh_part(body: &Value) -> Value {
    after_last(&body["contents"], "model")
}

// Proves a wake through `muster run gemini`: the real interactive Gemini CLI
// TUI, started under `muster run --quiet 1s` in a project set up only by
// `muster install gemini --project`, takes a first prompt a person types;
// once that turn ended (the session idle on the roster, wakeable by `pty`)
// and the person has been quiet for the window, a direct message answers
// `woken` and starts a second turn with no key from the test, within 2 s:
// its model request's new user text is the wake line `muster run` typed
// plus the mail, exactly once (in no other request); the woken turn ends
// with no further request, and its delivery is `seen`. Prints the send →
// second model request latency.
#[test]
fn a_direct_message_wakes_an_idle_gemini_tui_under_muster_run_into_a_turn_that_carries_it() {
    let run = TuiRun::start();
    run.stub.push(Turn::text("first turn done"));
    run.stub.push(Turn::text("read the mail"));

    // The TUI is up and its session joined the roster (SessionStart).
    run.wait_for_pane("Type your message");
    let joined = wait_until(LIMIT, || !run.session().is_null());
    assert!(
        joined.is_some(),
        "the session never joined\n{}",
        run.explain()
    );

    // As a person would: type, see the text drawn, then Enter (Gemini CLI
    // reads an Enter within 30 ms of the last key it processed as a newline,
    // and the first keys after start take it some 250 ms).
    run.tmux.type_text("say hello");
    run.wait_for_pane("say hello");
    std::thread::sleep(Duration::from_millis(300));
    run.tmux.press("Enter");
    let typed_at = Instant::now();
    assert!(
        run.stub.wait_for_requests(0, 1, LIMIT),
        "the first prompt made no model request\n{}",
        run.explain()
    );
    let idle = wait_until(LIMIT, || {
        let me = run.session();
        me["activity"] == "idle" && me["wake"] == "pty"
    });
    assert!(
        idle.is_some(),
        "the first turn never ended idle and wakeable\n{}",
        run.explain()
    );
    assert_eq!(run.stub.bodies().len(), 1, "{}", run.explain());
    run.wait_for_pane("first turn done");
    // The person has typed nothing for longer than `--quiet 1s` (a wake waits
    // for that), so the latency below is the wake's own.
    std::thread::sleep(Duration::from_millis(1_200).saturating_sub(typed_at.elapsed()));

    let marker = format!("WAKEMARK{}", new_uuid().replace('-', ""));
    let sent_at = Instant::now();
    let (status, sent) = run.daemon.post_json(
        "/api/v1/messages",
        &json!({"to": run.id, "body": format!("please look at the failing build ({marker})")}),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["state"], "woken", "{sent}");
    assert_eq!(sent["deliveries"][0]["woken"], true, "{sent}");
    assert!(
        run.stub.wait_for_requests(0, 2, LIMIT),
        "the wake started no turn\n{}",
        run.explain()
    );
    let latency = sent_at.elapsed();
    // For scripts/bench-wake.sh: send → the woken turn's first model request.
    eprintln!("wake-latency gemini {}", latency.as_millis());
    assert!(
        latency < Duration::from_secs(2),
        "the wake took {latency:?}\n{}",
        run.explain()
    );
    let message_id = sent["message"]["id"].as_str().unwrap().to_string();

    let bodies = run.stub.bodies();
    let fresh = fresh_part(&bodies[1]);
    assert_eq!(
        count(&fresh, &marker),
        1,
        "the woken turn carries the mail once: {fresh}"
    );
    assert_eq!(count(&bodies[1], &marker), 1, "{}", bodies[1]);
    assert_eq!(
        count(&fresh, WAKE_PROMPT),
        1,
        "its prompt is the line muster run typed: {fresh}"
    );
    assert_eq!(count(&bodies[0], &marker), 0);

    // The woken turn ends; nothing else is sent to the model.
    let idle = wait_until(LIMIT, || run.session()["activity"] == "idle");
    assert!(
        idle.is_some(),
        "the woken turn never ended\n{}",
        run.explain()
    );
    run.wait_for_pane("read the mail");
    assert_eq!(run.stub.bodies().len(), 2, "{}", run.explain());
    // Its AfterAgent hook found the mail in Gemini CLI's chat recording.
    let (status, thread) = run
        .daemon
        .get(&format!("/api/v1/messages/{message_id}/thread"));
    assert_eq!(status, 200, "{thread}");
    assert_eq!(
        thread["deliveries"][0]["recipient"],
        run.id.as_str(),
        "{thread}"
    );
    assert_eq!(thread["deliveries"][0]["state"], "seen", "{thread}");
}
