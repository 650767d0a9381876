//! Health, metrics and the event stream of a real daemon.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::json;

// Proves /healthz answers and /metrics exposes sessions, messages, hook
// latency and sweeps in Prometheus text format with live values.
#[test]
fn healthz_and_metrics() {
    let d = TestDaemon::start(&["--sweep-interval", "100ms"]);
    let h = http().get(format!("{}/healthz", d.url)).send().unwrap();
    assert_eq!(h.status(), 200);
    let id = "40000000-0000-4000-8000-000000000001";
    d.hook("session-start", &payload(id, "SessionStart"));
    d.muster_json(&["send", id, "hello", "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    let text = http()
        .get(format!("{}/metrics", d.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for line in [
        "muster_sessions 1",
        "muster_messages_sent_total 1",
        "muster_deliveries_total{state=\"queued\"} 1",
        "muster_hook_duration_seconds_count{event=\"session-start\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let sweeps = text
        .lines()
        .find_map(|l| l.strip_prefix("muster_sweeps_total "))
        .unwrap();
    assert!(sweeps.parse::<u64>().unwrap() >= 1, "the sweeper ran");
}

// Proves `muster tail --json` streams changes as they happen, one JSON per line.
#[test]
fn tail_streams_changes() {
    let d = TestDaemon::start(&[]);
    let mut tail = muster_cmd(&d.url)
        .args(["tail", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Keep making changes until tail shows one: it may connect a little later.
    let id = "50000000-0000-4000-8000-000000000001";
    let mut got = None;
    for i in 0..50 {
        d.post_json(
            "/api/v1/sessions",
            &json!({"id": id, "status": format!("step {i}")}),
        );
        if let Some(line) = rx
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.contains("\"session."))
        {
            got = Some(line);
            break;
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let line = got.expect("tail printed an event");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["kind"].as_str().unwrap().starts_with("session."), "{v}");
    assert_eq!(v["data"]["id"], id);
}

// Proves SIGTERM stops the daemon promptly even while a client holds the
// event stream open (the stream ends instead of holding shutdown hostage).
#[test]
fn sigterm_stops_the_daemon_with_a_tail_attached() {
    let mut d = TestDaemon::start(&[]);
    let mut tail = muster_cmd(&d.url)
        .args(["tail", "--json"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.terminate(Duration::from_secs(4)),
        "muster serve exited cleanly within 4 s"
    );
    let _ = tail.kill();
    let _ = tail.wait();
}

// Proves the web dashboard is served at / as HTML with a same-origin content policy, and reads the daemon's own API and event stream.
#[test]
fn dashboard_is_served_at_the_root() {
    let d = TestDaemon::start(&[]);
    let resp = http().get(format!("{}/", d.url)).send().unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let page = resp.text().unwrap();
    for part in [
        "<title>muster</title>",
        "/api/v1/roster",
        "/api/v1/reservations",
        "EventSource(\"/api/v1/events\")",
    ] {
        assert!(page.contains(part), "missing {part}");
    }
}
