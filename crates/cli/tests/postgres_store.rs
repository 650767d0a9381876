//! The real `muster serve --store postgres://…` against the real PostgreSQL
//! server (127.0.0.1:5432, user postgres, or `MUSTER_TEST_POSTGRES`), each
//! test in a fresh database it drops afterwards: what is acknowledged
//! survives a restart, and a server that is not there is a clear error.

mod common;
#[path = "support/postgres_db.rs"]
mod postgres_db;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use postgres_db::FreshDatabase;
use serde_json::json;

/// A session's whole inbox, read or not: (id, body) of each message.
fn inbox(d: &TestDaemon, session: &str) -> Vec<(String, String)> {
    let (status, inbox) = d.get(&format!("/api/v1/inbox?as={session}&all=true&limit=1000"));
    assert_eq!(status, 200, "{inbox}");
    inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["body"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// Proves the daemon keeps its state in PostgreSQL: a message sent through
// `muster serve --store postgres://…` and 200 more sent by 4 clients at
// once are all there, once each and in id order, after `kill -9` and a
// restart on another, empty data directory; the database holds exactly
// them, and status names the store without credentials.
#[test]
fn acknowledged_sends_survive_kill_9_and_a_restart_elsewhere() {
    let db = FreshDatabase::new("store");
    let url = db.url();
    let mut d = TestDaemon::start(&["--store", &url]);
    assert_eq!(
        d.status()["store"],
        format!("postgres://127.0.0.1:5432/{}", db.name())
    );
    let (a, b) = (
        "f0000000-0000-4000-8000-0000000000a1",
        "f0000000-0000-4000-8000-0000000000b2",
    );
    for id in [a, b] {
        let (status, body) = d.post_json("/api/v1/sessions", &json!({"id": id, "harness": "test"}));
        assert_eq!(status, 200, "{body}");
    }
    let out = d.muster(&["send", b, "the first one", "--as", a, "--json"]);
    assert!(
        out.status.success(),
        "muster send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = sent["message"]["id"].as_str().unwrap().to_string();

    let mut acked = send_concurrently(&d.url, a, b, 4, 50);
    acked.push(first.clone());
    d.kill9();
    drop(d);

    // Another data directory: nothing of the state can come from the first one's.
    let d = TestDaemon::start(&["--store", &url]);
    let mail = inbox(&d, b);
    let got: Vec<String> = mail.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got.len(), 201, "every acknowledged send is back");
    assert_eq!(
        got.iter().collect::<HashSet<_>>(),
        acked.iter().collect::<HashSet<_>>(),
        "exactly the acknowledged ones, none twice"
    );
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "listed in id order");
    assert!(
        mail.contains(&(first.clone(), "the first one".to_string())),
        "the first message with its body: {mail:?}"
    );
    assert_eq!(db.sql("SELECT count(*) FROM messages"), "201");
    assert_eq!(
        db.sql(&format!("SELECT body FROM messages WHERE id = '{first}'")),
        "the first one"
    );
}

// Proves `muster serve` against a PostgreSQL that is not there exits 1 at
// once with an error naming the address and what to do (and no password).
#[test]
fn unreachable_postgres_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args(["--store", "postgres://postgres:hunter2@127.0.0.1:1/muster"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run muster serve");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach PostgreSQL at 127.0.0.1:1"),
        "names the address: {stderr}"
    );
    assert!(
        stderr.contains("Is the server running") && stderr.contains("--store"),
        "says what to do: {stderr}"
    );
    assert!(!stderr.contains("hunter2"), "never the password: {stderr}");
}

// Proves the store can be named by MUSTER_STORE instead of the command
// line (where other users could read a password), and that `serve --help`
// does not show its value.
#[test]
fn muster_store_names_the_database_and_help_hides_it() {
    use std::io::{BufRead, BufReader};
    let db = FreshDatabase::new("store");
    let url = db
        .url()
        .replacen("postgres@", "postgres:not-checked-by-trust@", 1);
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("MUSTER_STORE", &url)
        .env("RUST_LOG", "warn")
        .env_remove("MUSTER_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn muster serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    assert!(
        !line.contains("not-checked-by-trust"),
        "the listening line shows no password: {line}"
    );
    let status: serde_json::Value = http()
        .get(format!("{base}/api/v1/status"))
        .header(muster_daemon::local_key::HEADER, key_for(&base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        status["store"],
        format!("postgres://127.0.0.1:5432/{}", db.name())
    );

    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .env("MUSTER_STORE", &url)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("MUSTER_STORE"), "{help}");
    assert!(!help.contains("not-checked-by-trust"), "{help}");
}

// Proves a daemon that cannot catch up entry by entry (the team's change
// log no longer holds entries it has not applied, as after a prune past
// it) stops with a clear error and a failing exit code instead of serving
// memory the database no longer matches.
#[test]
fn a_daemon_that_lost_track_of_the_change_log_stops_saying_why() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let db = FreshDatabase::new("store");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--store", &db.url()])
        .env("RUST_LOG", "warn")
        .env_remove("MUSTER_URL")
        .env_remove("MUSTER_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("muster listening on"), "{line}");
    // An entry two past the next one: the ones between are gone.
    db.sql(
        "INSERT INTO changes (seq, origin, reserves, body, logged_at)
         SELECT COALESCE(max(seq), 0) + 3, 'd-elsewhere', false, '[]', 0 FROM changes;
         NOTIFY muster_changes",
    );
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(exited.is_some(), "the daemon kept running on stale memory");
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("the change log holds entries from") && stderr.contains("start it again"),
        "{stderr}"
    );
}

/// A metric's value from a daemon's `/metrics` (0 if it is not there).
fn metric(d: &TestDaemon, line_start: &str) -> u64 {
    let resp = d
        .http()
        .get(format!("{}/metrics", d.url))
        .header(muster_daemon::local_key::HEADER, d.key())
        .send()
        .unwrap();
    let text = resp.text().unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

// Proves liveness across two daemons on one database: one daemon leads
// the sweep and the other never sweeps; a hook-only session kept busy
// through the follower (past the leader's backstop) is never swept by the
// leader, which hears of it through the log; once its hooks stop, the
// leader sweeps it, once, and both daemons see it gone.
#[test]
fn the_leader_sweeps_once_and_hears_hooks_made_elsewhere() {
    let db = FreshDatabase::new("store");
    let flags = [
        "--store",
        &db.url(),
        "--hook-backstop",
        "3s",
        "--sweep-interval",
        "200ms",
    ];
    let leader = TestDaemon::start(&flags);
    // The first daemon's sweeper has run (and taken the lead) before the second starts.
    let led = wait_until(Duration::from_secs(5), || {
        metric(&leader, "muster_sweeps_total") > 0
    });
    assert!(led.is_some(), "the first daemon never swept");
    let follower = TestDaemon::start(&flags);
    let busy = "busy-on-the-follower";
    let mut p = payload(busy, "UserPromptSubmit");
    follower.hook("session-start", &p);
    let roster_has = |d: &TestDaemon| d.roster_ids().iter().any(|id| id == busy);
    // Six seconds of hooks through the follower, twice the backstop.
    for _ in 0..12 {
        p["prompt"] = json!("still working");
        follower.hook("prompt-submit", &p);
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            roster_has(&leader),
            "the leader swept a session busy elsewhere"
        );
    }
    assert_eq!(
        metric(&follower, "muster_sweeps_total"),
        0,
        "the follower swept"
    );
    // Silent now: the leader sweeps it once the backstop has passed.
    let gone = wait_until(Duration::from_secs(10), || {
        !roster_has(&leader) && !roster_has(&follower)
    });
    assert!(gone.is_some(), "the silent session was never swept");
    assert_eq!(
        metric(
            &leader,
            "muster_swept_sessions_total{reason=\"hook-backstop\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &follower,
            "muster_swept_sessions_total{reason=\"hook-backstop\"}"
        ),
        0
    );
}

// Proves a read the store cannot answer says so as a read: with the
// messages table gone from under a running daemon, history, search and a
// thread answer 503 `store_unavailable` "could not read the store: …" and
// never "nothing was stored" (no write was asked for); once the table is
// back the same reads answer again.
#[test]
fn a_failed_read_says_the_read_failed() {
    let db = FreshDatabase::new("store");
    let d = TestDaemon::start(&["--store", &db.url()]);
    d.hook("session-start", &payload("reader-a", "SessionStart"));
    d.hook("session-start", &payload("reader-b", "SessionStart"));
    let (status, sent) = d.post_json(
        "/api/v1/messages",
        &json!({"as": "reader-a", "to": "reader-b", "body": "the build is green"}),
    );
    assert_eq!(status, 200, "{sent}");
    let id = sent["message"]["id"]
        .as_str()
        .expect("a message id")
        .to_string();
    let reads = [
        "/api/v1/messages?as=reader-b".to_string(),
        "/api/v1/search?as=reader-b&q=green".to_string(),
        format!("/api/v1/messages/{id}/thread?as=reader-b"),
    ];
    db.sql("ALTER TABLE messages RENAME TO messages_away");
    for path in &reads {
        let (status, answer) = d.get(path);
        assert_eq!(status, 503, "{path}: {answer}");
        assert_eq!(
            answer["error"]["code"], "store_unavailable",
            "{path}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("could not read the store: "),
            "{path}: {message}"
        );
    }
    db.sql("ALTER TABLE messages_away RENAME TO messages");
    for path in &reads {
        let (status, answer) = d.get(path);
        assert_eq!(status, 200, "{path}: {answer}");
    }
}
