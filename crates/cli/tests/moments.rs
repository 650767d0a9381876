//! What the `muster hook` client itself adds to the daemon's moments,
//! against a real daemon (the daemon's side of every moment is tested in
//! process in crates/daemon/tests/moments.rs): it reads the harness's
//! transcript and reports the muster mail the model has seen, and inside
//! `muster run` it passes the run (MUSTER_RUN_ID) and the opt-out
//! (MUSTER_WAKE) on to the daemon.

mod common;
#[path = "support/waker.rs"]
mod waker;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use waker::{hook_in_run, Waker};

fn send(d: &TestDaemon, to: &str, body: &str) -> Value {
    let (status, answer) = d.post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn hook_as(d: &TestDaemon, event: &str, id: &str, name: &str, extra: Value) -> String {
    let mut p = payload(id, name);
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    d.hook(event, &p)
}

fn session(d: &TestDaemon, id: &str) -> Value {
    let roster = d.get("/api/v1/roster").1;
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Delivery state of `message` for `recipient`, as the operator (its sender) reads it.
fn delivery_state(d: &TestDaemon, message: &str, recipient: &str) -> String {
    let (status, thread) = d.get(&format!("/api/v1/messages/{message}/thread"));
    assert_eq!(status, 200, "{thread}");
    thread["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["message_id"] == message && x["recipient"] == recipient)
        .map(|x| x["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

// Proves the hook client passes `muster run`'s environment on: a hook with
// MUSTER_RUN_ID binds its session to that run, which the roster shows
// wakeable by the run's waker (`wake: pty`), and a hook that also has
// MUSTER_WAKE=off opts the session out (`wake: off`).
#[test]
fn hooks_inside_a_run_bind_the_session_and_may_opt_out() {
    let d = TestDaemon::start(&[]);
    let run = "run-00000000000000a6";
    let (bound, off) = (
        "m1d00000-0000-4000-8000-00000000000d",
        "m1d00000-0000-4000-8000-00000000000e",
    );
    let _waker = Waker::open(&d, run, "pty");
    hook_in_run(&d, run, "prompt-submit", bound, "UserPromptSubmit", None);
    assert_eq!(session(&d, bound)["wake"], "pty");
    hook_in_run(&d, run, "stop", off, "Stop", Some("off"));
    assert_eq!(session(&d, off)["wake"], "off");
}

// Proves `seen`: mail surfaced by a hook is `surfaced` until the harness's
// transcript shows it, and the next hook (reading the transcript's new
// lines) advances it to `seen`.
#[test]
fn a_delivery_is_seen_once_the_transcript_shows_it() {
    let d = TestDaemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("session.jsonl");
    std::fs::write(&transcript, "{\"type\":\"user\"}\n").unwrap();
    let id = "m1d00000-0000-4000-8000-000000000006";
    let extra = json!({"transcript_path": transcript.display().to_string()});
    hook_as(&d, "session-start", id, "SessionStart", extra.clone());
    let sent = send(&d, id, "read me");
    let mid = sent["message"]["id"].as_str().unwrap().to_string();
    let answer = hook_as(&d, "prompt-submit", id, "UserPromptSubmit", extra.clone());
    let context = context_of(&answer).unwrap();
    assert!(context.contains(&mid));
    wait_until(Duration::from_secs(2), || {
        delivery_state(&d, &mid, id) == "surfaced"
    })
    .expect("surfaced");

    // What Claude Code writes once the context went to the model.
    let entry = json!({"type": "attachment", "attachment": {"type": "hook_additional_context", "content": [context]}});
    std::fs::OpenOptions::new()
        .append(true)
        .open(&transcript)
        .unwrap()
        .write_all(format!("{entry}\n").as_bytes())
        .unwrap();
    hook_as(&d, "pre-tool-use", id, "PreToolUse", extra);
    wait_until(Duration::from_secs(2), || {
        delivery_state(&d, &mid, id) == "seen"
    })
    .expect("seen");
}
