//! The event stream of a real daemon through `muster tail`, and SIGTERM
//! with a stream attached. Health, metrics and the dashboard are shown in
//! process in crates/daemon/tests/observability.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::json;

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
    wait_until(Duration::from_secs(5), || {
        let metrics = d.http().get(format!("{}/metrics", d.url)).send().unwrap();
        metrics
            .text()
            .unwrap()
            .lines()
            .any(|l| l == "muster_event_streams 1")
    })
    .expect("the tail is attached");
    assert!(
        d.terminate(Duration::from_secs(4)),
        "muster serve exited cleanly within 4 s"
    );
    let _ = tail.kill();
    let _ = tail.wait();
}
