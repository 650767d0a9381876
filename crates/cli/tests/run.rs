//! `muster run` driven as a person would: the real binary in a tmux pane,
//! running a small Python program as its harness, against a fake daemon
//! that serves only the wake stream.
//!
//! The harness (CHILD below) logs everything it sees to a file, one
//! `time<TAB>kind<TAB>text` line each: its environment, its `stty size`,
//! every line (or, in raw mode, every chunk) that reaches its stdin, every
//! SIGWINCH and signal. Tests assert on that log, which says exactly what
//! reached the harness and when, and on what the pane shows.

mod common;
#[path = "support/tmux.rs"]
mod tmux;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tmux::Tmux;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{wait_until, BIN};
use futures_util::StreamExt;
use tokio::sync::broadcast;

/// The harness under test. argv: log file, mode (`lines` or `raw`).
const CHILD: &str = r#"
import os, signal, subprocess, sys, time

log_path, mode = sys.argv[1], sys.argv[2]

def log(kind, text):
    with open(log_path, "a") as f:
        f.write("%.6f\t%s\t%s\n" % (time.time(), kind, text))

def stty_size():
    return subprocess.run(["stty", "size"], capture_output=True, text=True).stdout.strip()

def on_winch(signum, frame):
    log("winch", stty_size())

def on_term(signum, frame):
    log("signal", "TERM")
    print("got TERM", flush=True)
    sys.exit(3)

def on_int(signum, frame):
    log("signal", "INT")
    sys.exit(4)

signal.signal(signal.SIGWINCH, on_winch)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_int)
log("env", "run=%s url=%s" % (os.environ.get("MUSTER_RUN_ID", ""), os.environ.get("MUSTER_URL", "")))
log("size", stty_size())

if mode == "raw":
    import tty
    tty.setraw(0)
    log("ready", "")
    while True:
        data = os.read(0, 4096)
        if not data:
            break
        log("chunk", data.hex())
else:
    print("\u2713 ready", flush=True)
    log("ready", "")
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        log("line", line)
        print("got:[%s]" % line, flush=True)
        if line == "quit":
            sys.exit(7)
"#;

/// The Python interpreter itself (not a pyenv shim that would start slowly).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the muster run tests");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && !path.is_empty(), "no python3");
    path
}

/// One line of the child's log.
#[derive(Debug, Clone)]
struct Entry {
    at: f64,
    kind: String,
    text: String,
}

fn read_log(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let at = parts.next()?.parse().ok()?;
            Some(Entry {
                at,
                kind: parts.next()?.to_string(),
                text: parts.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

fn of_kind(log: &[Entry], kind: &str) -> Vec<String> {
    log.iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.text.clone())
        .collect()
}

// ---------------------------------------------------------------- tmux

// Tmux: support/tmux.rs.

// ---------------------------------------------------------------- one run in a pane

/// One `muster run` of CHILD in a tmux pane, with its files in a temp dir.
struct PaneRun {
    tmux: Tmux,
    dir: tempfile::TempDir,
}

struct RunSpec<'a> {
    url: &'a str,
    /// `muster run` options, before the harness.
    options: &'a [&'a str],
    /// Extra `NAME=value` words for `env`.
    env: &'a [&'a str],
    mode: &'a str,
    size: (u16, u16),
}

impl PaneRun {
    fn start(spec: RunSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = dir.path().join("child.py");
        std::fs::write(&child, CHILD).unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let options: Vec<String> = spec.options.iter().map(|o| format!("'{o}'")).collect();
        // stty -a before and after shows whether the pane's terminal was put
        // back exactly; $? after muster run is its exit code.
        let command = format!(
            "stty -a > '{before}'; env -u MUSTER_SESSION_ID -u CLAUDE_CODE_SESSION_ID -u MUSTER_TOKEN \
             -u MUSTER_WAKE -u MUSTER_URL XDG_CONFIG_HOME=/nonexistent-muster-test-config \
             MUSTER_RUN_LOG='{runlog}' RUST_LOG=debug {env} \
             '{BIN}' run --url '{url}' {options} '{python}' '{child}' '{childlog}' {mode}; \
             echo $? > '{code}'; stty -a > '{after}'",
            before = p("stty-before"),
            after = p("stty-after"),
            runlog = p("muster-run.log"),
            env = spec.env.join(" "),
            url = spec.url,
            options = options.join(" "),
            python = python(),
            child = child.display(),
            childlog = p("child.log"),
            mode = spec.mode,
            code = p("code"),
        );
        let tmux = Tmux::start(&command, spec.size.0, spec.size.1);
        let run = PaneRun { tmux, dir };
        let ready = wait_until(Duration::from_secs(15), || {
            !of_kind(&run.log(), "ready").is_empty()
        });
        assert!(
            ready.is_some(),
            "the child never got ready\n{}",
            run.explain()
        );
        run
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> Vec<Entry> {
        read_log(&self.path("child.log"))
    }

    /// What to print when an assertion fails: the pane, the child's log, muster run's log.
    fn explain(&self) -> String {
        format!(
            "--- pane:\n{}\n--- child log:\n{}\n--- muster run log:\n{}",
            self.tmux.capture(),
            std::fs::read_to_string(self.path("child.log")).unwrap_or_default(),
            std::fs::read_to_string(self.path("muster-run.log")).unwrap_or_default(),
        )
    }

    /// Waits for `muster run` to exit; its exit code.
    fn exit_code(&self) -> String {
        let code = self.path("code");
        let done = wait_until(Duration::from_secs(15), || {
            std::fs::read_to_string(&code).is_ok_and(|c| c.ends_with('\n'))
                && std::fs::read_to_string(self.path("stty-after")).is_ok_and(|s| !s.is_empty())
        });
        assert!(
            done.is_some(),
            "muster run did not exit\n{}",
            self.explain()
        );
        std::fs::read_to_string(code).unwrap().trim().to_string()
    }

    /// Polls the child's log until `check` holds (bounded).
    fn wait_log(&self, what: &str, mut check: impl FnMut(&[Entry]) -> bool) -> Vec<Entry> {
        let ok = wait_until(Duration::from_secs(15), || check(&self.log()));
        assert!(ok.is_some(), "never saw {what}\n{}", self.explain());
        self.log()
    }
}

// ---------------------------------------------------------------- the fake daemon

/// One request to the wake stream.
#[derive(Debug, Clone)]
struct WakeRequest {
    query: HashMap<String, String>,
    authorization: Option<String>,
}

#[derive(Clone)]
struct ServerState {
    requests: Arc<Mutex<Vec<WakeRequest>>>,
    events: broadcast::Sender<String>,
}

/// A daemon that serves only `GET /api/v1/wake` as server-sent events:
/// `event: ready`, then one `event: wake` per [`WakeServer::wake`], with a
/// `:` keepalive each second. It records every request. Stops on drop.
struct WakeServer {
    url: String,
    state: ServerState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WakeServer {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// On a given address (to come up where a `muster run` already looks).
    fn start_on(addr: &str) -> Self {
        let addr = addr.to_string();
        let (events, _) = broadcast::channel(16);
        let state = ServerState {
            requests: Arc::default(),
            events,
        };
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app_state = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
                let addr = listener.local_addr().unwrap();
                url_tx.send(format!("http://{addr}")).unwrap();
                let app = Router::new()
                    .route("/api/v1/wake", get(wake_stream))
                    .with_state(app_state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let url = url_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        WakeServer {
            url,
            state,
            stop: Some(stop_tx),
        }
    }

    fn requests(&self) -> Vec<WakeRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits for the first stream to be open.
    fn wait_for_stream(&self) -> WakeRequest {
        let open = wait_until(Duration::from_secs(15), || !self.requests().is_empty());
        assert!(open.is_some(), "muster run never opened the wake stream");
        self.requests()[0].clone()
    }

    /// Sends one `event: wake` to every open stream.
    /// Ends every open stream (the daemon going away mid-stream).
    fn close_streams(&self) {
        self.state
            .events
            .send(CLOSE.to_string())
            .expect("no wake stream is open");
    }

    fn wake(&self, session: &str, message_ids: &[&str], prompt: &str) {
        let data =
            serde_json::json!({"session": session, "message_ids": message_ids, "prompt": prompt});
        self.state
            .events
            .send(data.to_string())
            .expect("no wake stream is open");
    }
}

/// Sent on the event channel to end the streams instead of a wake.
const CLOSE: &str = "close";

impl Drop for WakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn wake_stream(
    State(state): State<ServerState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // Subscribe before recording, so a wake sent once the test sees the
    // request reaches this stream.
    let rx = state.events.subscribe();
    state.requests.lock().unwrap().push(WakeRequest {
        query,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let ready = futures_util::stream::once(async {
        Ok::<_, Infallible>(Bytes::from_static(b": hello\n\nevent: ready\ndata: {}\n\n"))
    });
    let wakes = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                Ok(Ok(data)) if data == CLOSE => return None,
                Ok(Ok(data)) => {
                    let frame = format!("event: wake\ndata: {data}\n\n");
                    return Some((Ok(Bytes::from(frame)), rx));
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                Err(_) => return Some((Ok(Bytes::from_static(b": keepalive\n\n")), rx)),
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(ready.chain(wakes)),
    )
        .into_response()
}

/// A port nothing listens on: the wake stream keeps failing to open.
const DEAD_URL: &str = "http://127.0.0.1:9";

// ---------------------------------------------------------------- tests

#[test]
fn bytes_pass_through_both_ways_raw_mode_is_restored_and_the_exit_code_is_the_childs() {
    // Proves (a): typed text reaches the child exactly and its output (UTF-8 included) reaches the pane; our terminal is raw while the child runs and exactly as before afterwards; muster run exits with the child's code (7); a daemon that is not there never shows on the screen.
    let run = PaneRun::start(RunSpec {
        url: DEAD_URL,
        options: &[],
        env: &[],
        mode: "lines",
        size: (100, 30),
    });
    assert!(run.tmux.capture().contains("✓ ready"), "{}", run.explain());

    // Raw mode on the pane's terminal while the child runs.
    let tty = run.tmux.display("#{pane_tty}");
    let during = Command::new("stty")
        .args(["-a", "-F", &tty])
        .output()
        .unwrap();
    let during = String::from_utf8_lossy(&during.stdout).into_owned();
    for flag in ["-icanon", "-echo", "-isig"] {
        assert!(
            during.split_whitespace().any(|w| w == flag),
            "{flag} not set on {tty} while running:\n{during}"
        );
    }

    run.tmux.type_text("hello wörld ~$ \"quoted\"");
    run.tmux.press("Enter");
    let log = run.wait_log("the typed line", |log| !of_kind(log, "line").is_empty());
    assert_eq!(of_kind(&log, "line"), ["hello wörld ~$ \"quoted\""]);
    let pane = run.tmux.capture();
    assert!(
        pane.contains("got:[hello wörld ~$ \"quoted\"]"),
        "{}",
        run.explain()
    );

    run.tmux.type_text("quit");
    run.tmux.press("Enter");
    assert_eq!(run.exit_code(), "7", "{}", run.explain());
    let before = std::fs::read_to_string(run.path("stty-before")).unwrap();
    let after = std::fs::read_to_string(run.path("stty-after")).unwrap();
    assert_eq!(before, after, "the terminal was not put back as it was");
    let pane = run.tmux.capture();
    assert!(
        !pane.contains("muster") && !pane.contains("error") && !pane.contains("daemon"),
        "muster run wrote to the terminal:\n{pane}"
    );
}

#[test]
fn ctrl_c_reaches_the_child_as_its_signal_and_muster_run_exits_with_its_code() {
    // Proves a terminal signal key travels as a byte in raw mode: Ctrl-C in the pane interrupts the child (its SIGINT handler exits 4), not muster run, which exits 4.
    let run = PaneRun::start(RunSpec {
        url: DEAD_URL,
        options: &["--no-wake"],
        env: &[],
        mode: "lines",
        size: (80, 24),
    });
    run.tmux.press("C-c");
    assert_eq!(run.exit_code(), "4", "{}", run.explain());
    assert_eq!(of_kind(&run.log(), "signal"), ["INT"]);
}

#[test]
fn a_wake_types_its_prompt_into_the_child_as_one_line() {
    // Proves (b) and (d): the child sees MUSTER_RUN_ID and MUSTER_URL; the wake request names that run id, how=pty and the bearer token; a wake event makes exactly the prompt arrive as one line in the child.
    let server = WakeServer::start();
    let run = PaneRun::start(RunSpec {
        url: &server.url,
        options: &["--quiet", "500ms"],
        env: &["MUSTER_TOKEN=secret-token"],
        mode: "lines",
        size: (100, 30),
    });
    let request = server.wait_for_stream();
    let env = of_kind(&run.log(), "env");
    assert_eq!(env.len(), 1, "{}", run.explain());
    let run_id = env[0]
        .strip_prefix("run=")
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_string();
    assert_eq!(run_id.len(), 20, "{run_id}");
    assert!(run_id.starts_with("run-"), "{run_id}");
    assert!(
        run_id[4..].chars().all(|c| c.is_ascii_hexdigit()),
        "{run_id}"
    );
    assert_eq!(env[0], format!("run={run_id} url={}", server.url));
    let expected: HashMap<String, String> = [("run", run_id.as_str()), ("how", "pty")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(request.query, expected);
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer secret-token")
    );

    let prompt =
        "New muster mail for you (shown with this prompt). Answer with muster's send_message tool.";
    server.wake("sess-1", &["01MSG"], prompt);
    let log = run.wait_log("the wake line", |log| !of_kind(log, "line").is_empty());
    assert_eq!(of_kind(&log, "line"), [prompt], "{}", run.explain());
    // Nothing more follows: one wake, one line.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(of_kind(&run.log(), "line"), [prompt]);
    assert_eq!(server.requests().len(), 1, "the stream was reopened");
}

#[test]
fn a_wake_is_typed_as_text_then_a_separate_cr() {
    // Proves the typing shape in a raw-mode child (as a TUI reads keys): the prompt's bytes arrive in one read, then "\r" alone at least ~50 ms later, so a TUI takes it as Enter rather than pasted text.
    let server = WakeServer::start();
    let run = PaneRun::start(RunSpec {
        url: &server.url,
        options: &["--quiet", "500ms"],
        env: &[],
        mode: "raw",
        size: (100, 30),
    });
    server.wait_for_stream();
    server.wake("sess-1", &["01MSG"], "read your mail");
    let log = run.wait_log("the CR", |log| of_kind(log, "chunk").len() >= 2);
    let chunks: Vec<&Entry> = log.iter().filter(|e| e.kind == "chunk").collect();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        chunks.iter().map(|e| e.text.clone()).collect::<Vec<_>>(),
        [hex("read your mail"), "0d".to_string()],
        "{}",
        run.explain()
    );
    let gap = chunks[1].at - chunks[0].at;
    assert!(gap >= 0.045, "CR only {gap:.3}s after the text");
}

#[test]
fn a_wake_never_types_while_the_person_is_typing() {
    // Proves (c): with a 2 s quiet window, a person typing a line every 500 ms for 4 s holds off two wakes sent meanwhile; nothing is typed during that, and once typing stops one line (the latest prompt: the wakes coalesce) arrives at least 2 s after the last keystroke.
    let server = WakeServer::start();
    let run = PaneRun::start(RunSpec {
        url: &server.url,
        options: &["--quiet", "2s"],
        env: &[],
        mode: "lines",
        size: (100, 30),
    });
    server.wait_for_stream();
    let mut typed = Vec::new();
    for i in 0..8 {
        let line = format!("k{i}");
        run.tmux.type_text(&line);
        run.tmux.press("Enter");
        typed.push(line);
        if i == 1 {
            server.wake("sess-1", &["01A"], "first wake");
        }
        if i == 4 {
            server.wake("sess-1", &["01B"], "second wake");
        }
        std::thread::sleep(Duration::from_millis(500));
        let lines = of_kind(&run.log(), "line");
        assert!(
            lines.iter().all(|l| l.starts_with('k')),
            "a wake was typed while the person typed: {lines:?}\n{}",
            run.explain()
        );
    }
    let log = run.wait_log("the wake after typing stopped", |log| {
        of_kind(log, "line").len() > typed.len()
    });
    let mut expected = typed.clone();
    expected.push("second wake".to_string());
    // Let a second (wrong) line show up if there were one.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(of_kind(&run.log(), "line"), expected, "{}", run.explain());
    let lines: Vec<&Entry> = log.iter().filter(|e| e.kind == "line").collect();
    let last_key = lines[typed.len() - 1].at;
    let wake_at = lines[typed.len()].at;
    let quiet = wake_at - last_key;
    assert!(
        (1.95..3.5).contains(&quiet),
        "the wake came {quiet:.3}s after the last keystroke (window 2s)"
    );
}

#[test]
fn no_wake_opens_no_stream() {
    // Proves (e): with --no-wake, and with MUSTER_WAKE=off, muster run never asks the daemon for the wake stream (while the pass-through still works).
    let server = WakeServer::start();
    for (options, env) in [
        (&["--no-wake"][..], &[][..]),
        (&[][..], &["MUSTER_WAKE=off"][..]),
    ] {
        let run = PaneRun::start(RunSpec {
            url: &server.url,
            options,
            env,
            mode: "lines",
            size: (80, 24),
        });
        run.tmux.type_text("hello");
        run.tmux.press("Enter");
        run.wait_log("hello", |log| of_kind(log, "line") == ["hello"]);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            server.requests().len(),
            0,
            "{options:?} {env:?}: a stream was opened"
        );
        run.tmux.type_text("quit");
        run.tmux.press("Enter");
        assert_eq!(run.exit_code(), "7");
    }
}

#[test]
fn the_window_size_is_the_terminals_and_follows_resizes() {
    // Proves (f): the child's `stty size` is the pane's size at start, and after each tmux resize the child gets SIGWINCH and `stty size` gives the new size.
    let run = PaneRun::start(RunSpec {
        url: DEAD_URL,
        options: &["--no-wake"],
        env: &[],
        mode: "lines",
        size: (100, 30),
    });
    assert_eq!(run.tmux.display("#{pane_height} #{pane_width}"), "30 100");
    assert_eq!(of_kind(&run.log(), "size"), ["30 100"]);

    for (cols, rows) in [(120u16, 40u16), (90, 20)] {
        run.tmux.resize(cols, rows);
        let want = format!("{rows} {cols}");
        assert_eq!(run.tmux.display("#{pane_height} #{pane_width}"), want);
        let log = run.wait_log(&want, |log| of_kind(log, "winch").last() == Some(&want));
        assert_eq!(of_kind(&log, "winch").last(), Some(&want));
    }
}

#[test]
fn the_wake_stream_is_opened_once_the_daemon_is_up_and_reopened_when_it_drops() {
    // Proves reconnection: started while nothing listens at the daemon's address, muster run opens the stream once a daemon comes up there; when that stream ends it opens a new one (same run id), and a wake sent on the new one is typed. The screen shows none of it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = PaneRun::start(RunSpec {
        url: &url,
        options: &["--quiet", "500ms"],
        env: &[],
        mode: "lines",
        size: (100, 30),
    });
    std::thread::sleep(Duration::from_millis(1000));
    let server = WakeServer::start_on(&format!("127.0.0.1:{port}"));
    let first = server.wait_for_stream();
    server.close_streams();
    let reopened = wait_until(Duration::from_secs(15), || server.requests().len() >= 2);
    assert!(
        reopened.is_some(),
        "the stream was not reopened\n{}",
        run.explain()
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].query, first.query);
    server.wake("sess-1", &["01C"], "mail after a reconnect");
    let log = run.wait_log("the wake line", |log| !of_kind(log, "line").is_empty());
    assert_eq!(of_kind(&log, "line"), ["mail after a reconnect"]);
    assert!(
        !run.tmux.capture().contains("daemon"),
        "muster run wrote to the terminal\n{}",
        run.explain()
    );
}

// ---------------------------------------------------------------- without a terminal

/// `muster run` with pipes for stdin and stdout (no terminal anywhere).
fn piped_run(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--url")
        .arg(DEAD_URL)
        .args(args)
        .env_remove("MUSTER_SESSION_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID")
        .env_remove("MUSTER_TOKEN")
        .env_remove("MUSTER_WAKE")
        .env_remove("COLUMNS")
        .env_remove("LINES")
        .env("XDG_CONFIG_HOME", "/nonexistent-muster-test-config")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn muster run")
}

/// Waits (bounded) for a child to exit.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("muster run did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_a_terminal_every_byte_passes_exactly_at_columns_by_lines() {
    // Proves the pipe case: no terminal on our side, the pty is $COLUMNS x $LINES, all 256 byte values go in and come out unchanged (the child's pty is raw, so nothing but our copying is between), and the exit code is the child's.
    let script = r#"
import os, subprocess, sys, tty
size = subprocess.run(["stty", "size"], capture_output=True, text=True).stdout.strip()
tty.setraw(0)
os.write(1, b"READY " + size.encode() + b"\n")
os.write(1, bytes(range(256)))
got = b""
while len(got) < 256:
    got += os.read(0, 256 - len(got))
os.write(1, b"|" + got.hex().encode() + b"|")
sys.exit(5)
"#;
    let mut child = piped_run(
        &[&python(), "-c", script],
        &[("COLUMNS", "132"), ("LINES", "43")],
    );
    let mut stdout = child.stdout.take().unwrap();
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while !first.ends_with(b"\n") {
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "output ended early: {first:?}"
        );
        first.push(byte[0]);
    }
    assert_eq!(first, b"READY 43 132\n");
    let all: Vec<u8> = (0..=255u8).collect();
    child.stdin.as_mut().unwrap().write_all(&all).unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut expected = all.clone();
    expected.extend_from_slice(
        format!(
            "|{}|",
            all.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
        .as_bytes(),
    );
    assert_eq!(rest, expected);
    assert_eq!(status.code(), Some(5));
}

#[test]
fn without_a_terminal_the_size_is_80x24_and_input_ends_with_eof() {
    // Proves the defaults with no terminal and no $COLUMNS/$LINES (80x24), and that the end of our stdin ends the child's input, so `cat` under muster run finishes.
    let mut child = piped_run(&["sh", "-c", "stty size; cat >/dev/null; echo done"], &[]);
    let mut stdout = child.stdout.take().unwrap();
    // Input only once the child runs, so its echo cannot come before the size line.
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "output ended early: {out:?}"
        );
        out.push(byte[0]);
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"some input\n")
        .unwrap();
    stdout.read_to_end(&mut out).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let out = String::from_utf8(out).unwrap();
    assert_eq!(status.code(), Some(0));
    // The pty echoes the input line (the child's terminal is in cooked mode, as any terminal).
    assert_eq!(out, "24 80\r\nsome input\r\ndone\r\n");
}

#[test]
fn sigterm_and_sighup_to_muster_run_reach_the_child() {
    // Proves forwarding: SIGTERM to muster run reaches the child (its handler says so and exits 3, muster run exits 3); SIGHUP kills a child with the default action, and muster run exits 128+1.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("child.py");
    std::fs::write(&script, CHILD).unwrap();
    let log = dir.path().join("child.log");
    for (signal, code) in [("-TERM", 3), ("-HUP", 129)] {
        let _ = std::fs::remove_file(&log);
        let mut child = piped_run(
            &[
                "--no-wake",
                &python(),
                script.to_str().unwrap(),
                log.to_str().unwrap(),
                "lines",
            ],
            &[],
        );
        let ready = wait_until(Duration::from_secs(15), || {
            !of_kind(&read_log(&log), "ready").is_empty()
        });
        assert!(ready.is_some(), "child not ready");
        let out = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success());
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(code), "{signal}");
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        if signal == "-TERM" {
            assert_eq!(of_kind(&read_log(&log), "signal"), ["TERM"]);
            assert!(stdout.contains("got TERM"), "{stdout:?}");
        } else {
            assert!(of_kind(&read_log(&log), "signal").is_empty());
        }
    }
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_the_signal() {
    // Proves the exit code when the harness dies of a signal: SIGTERM (15) gives 143, SIGKILL (9) gives 137.
    for (script, code) in [("kill -TERM $$", 143), ("kill -KILL $$", 137)] {
        let mut child = piped_run(&["--no-wake", "sh", "-c", script], &[]);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(code), "{script}");
    }
}

#[test]
fn a_missing_program_is_127_and_no_harness_is_a_usage_error() {
    // Proves the clear errors: a program not on PATH exits 127 naming it, and `muster run` alone exits 2 saying the harness is missing; neither prints anything on stdout.
    let out = Command::new(BIN)
        .args(["run", "--url", DEAD_URL, "no-such-harness-xyz", "--flag"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "muster run: no-such-harness-xyz: command not found on PATH (is the harness installed?)\n"
    );
    assert!(out.stdout.is_empty());

    let out = Command::new(BIN)
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the following required arguments were not provided")
            && stderr.contains("<HARNESS>"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for part in [
        "muster run claude",
        "muster run --no-wake codex",
        "--quiet",
        "MUSTER_RUN_ID",
        "/api/v1/wake",
    ] {
        assert!(help.contains(part), "help lacks {part:?}:\n{help}");
    }
}
