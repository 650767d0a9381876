//! Secrets and files, on the real binary: the data directory is only its
//! owner's (0700) and the database files too (0600), fresh or left open by
//! an older muster; the token never shows in the daemon's logs (at trace
//! level), its error bodies, its pages, `--help`, or the CLI's errors.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The data directory and every database file in it, with their modes.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut out = vec![(".".to_string(), mode(dir))];
    for name in ["muster.db", "muster.db-wal", "muster.db-shm"] {
        out.push((name.to_string(), mode(&dir.join(name))));
    }
    out
}

const PRIVATE: [(&str, u32); 4] = [
    (".", 0o700),
    ("muster.db", 0o600),
    ("muster.db-wal", 0o600),
    ("muster.db-shm", 0o600),
];

fn expected() -> Vec<(String, u32)> {
    PRIVATE.iter().map(|(n, m)| (n.to_string(), *m)).collect()
}

// Proves a fresh data directory (parents included) is created 0700 and the database, its WAL and shared memory 0600, under the usual umask.
#[test]
fn a_fresh_data_directory_is_only_its_owner_s() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/muster");
    let d = TestDaemon::start_in(&dir, &[]);
    let (status, v) = d.post_json("/api/v1/sessions", &json!({"id": "s1", "cwd": "/tmp"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(modes(&dir), expected());
    assert_eq!(mode(&tmp.path().join("state")), 0o700);
}

// Proves a data directory an older muster left 0755 with a 0644 database is tightened when the daemon starts.
#[test]
fn an_older_open_data_directory_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("muster");
    let mut d = TestDaemon::start_in(&dir, &[]);
    let (status, v) = d.post_json("/api/v1/sessions", &json!({"id": "s1", "cwd": "/tmp"}));
    assert_eq!(status, 200, "{v}");
    assert!(d.terminate(Duration::from_secs(10)), "the daemon stops");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["muster.db", "muster.db-wal", "muster.db-shm"] {
        let file = dir.join(name);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert_eq!(mode(&dir.join("muster.db")), 0o644);
    let d = TestDaemon::start_in(&dir, &[]);
    let (status, _) = d.get("/api/v1/roster");
    assert_eq!(status, 200);
    assert_eq!(modes(&dir), expected());
}

// Proves `muster install`, when it is the first to need the data directory (for its install record), creates it 0700 as the daemon does.
#[test]
fn install_creates_the_data_directory_private() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, project) = (tmp.path().join("home"), tmp.path().join("project"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    let out = Command::new(BIN)
        .args(["install", "claude", "--project"])
        .arg(&project)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", tmp.path().join("state"))
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = tmp.path().join("state/muster");
    assert!(data.join("installs.json").is_file());
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&tmp.path().join("state")), 0o700);
}

const TOKEN: &str = "tok-7f3a9c2e-never-print-me";

/// Asserts `text` (what `what` printed or answered) holds no trace of the token.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(TOKEN) && !text.contains("never-print-me"),
        "{what} shows the token: {text}"
    );
}

// Proves the token never appears in the daemon's trace-level log, its answers (errors, the dashboard, status, metrics), --help, or the CLI's output.
#[test]
fn the_token_never_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .env("RUST_LOG", "trace")
        .env_remove("MUSTER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muster serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let log_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();

    let http = reqwest::blocking::Client::new();
    let bearer = format!("Bearer {TOKEN}");
    let near_miss = format!("Bearer {TOKEN}x");
    let attempts: Vec<(&str, reqwest::blocking::RequestBuilder, u16)> = vec![
        ("no token", http.get(format!("{url}/api/v1/status")), 401),
        (
            "a near-miss token",
            http.get(format!("{url}/api/v1/status"))
                .header("authorization", &near_miss),
            401,
        ),
        (
            "status",
            http.get(format!("{url}/api/v1/status"))
                .header("authorization", &bearer),
            200,
        ),
        (
            "the dashboard",
            http.get(format!("{url}/")).header("authorization", &bearer),
            200,
        ),
        (
            "metrics",
            http.get(format!("{url}/metrics"))
                .header("authorization", &bearer),
            200,
        ),
        (
            "bad JSON",
            http.post(format!("{url}/api/v1/messages"))
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body("{\"to\": "),
            400,
        ),
        (
            "text/plain",
            http.post(format!("{url}/api/v1/messages"))
                .header("authorization", &bearer)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
        ),
        (
            "Origin null",
            http.post(format!("{url}/api/v1/messages"))
                .header("authorization", &bearer)
                .header("origin", "null")
                .header("content-type", "application/json")
                .body("{}"),
            403,
        ),
        (
            "unknown route",
            http.get(format!("{url}/nowhere"))
                .header("authorization", &bearer),
            404,
        ),
        (
            "a hook",
            http.post(format!("{url}/hook/session-start"))
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body(json!({"session_id": "s1", "cwd": "/tmp", "hook_event_name": "SessionStart"}).to_string()),
            200,
        ),
        (
            "MCP over HTTP",
            http.post(format!("{url}/mcp"))
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                    "capabilities": {}, "clientInfo": {"name": "secrets", "version": "1"}}}).to_string()),
            200,
        ),
        (
            "bad hook",
            http.post(format!("{url}/hook/session-start"))
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body("{\"session_id\": 7}"),
            400,
        ),
    ];
    for (what, req, want) in attempts {
        let resp = req.send().expect(what);
        let status = resp.status().as_u16();
        let headers = format!("{:?}", resp.headers());
        let body = resp.text().unwrap_or_default();
        assert_eq!(status, want, "{what}: {body}");
        assert_clean(what, &headers);
        assert_clean(what, &body);
    }

    // The CLI: a wrong token's error, doctor, and --help with the token in
    // the environment, run as a client elsewhere would be (another runtime
    // directory: it has not the daemon's local key, which would let it in).
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], token: &str| {
        let out = muster_cmd(&url)
            .env("XDG_RUNTIME_DIR", elsewhere.path())
            .env("MUSTER_TOKEN", token)
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let wrong = format!("{TOKEN}-wrong");
    let refused = cli(&["status"], &wrong);
    assert!(
        refused.contains("401") || refused.contains("Bearer"),
        "{refused}"
    );
    assert_clean("muster status with a wrong token", &refused);
    for args in [
        &["status"][..],
        &["doctor"],
        &["--help"],
        &["serve", "--help"],
        &["hook", "--help"],
        &["mcp", "--help"],
    ] {
        assert_clean(&format!("muster {args:?}"), &cli(args, TOKEN));
    }

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
    let log = log_thread.join().unwrap();
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert!(log.contains("muster daemon started"), "no log read: {log}");
    assert_clean("the daemon's log", &log);
    assert_clean("the daemon's stdout", &format!("{line}{rest}"));
}
