//! The four moments mail reaches a model, against a real daemon through the
//! real `muster hook` client (harness-independent; the harness tests show
//! the same with each real binary): mid-turn after a tool, holding a turn at
//! its stop, waking an idle session through a waker, and `seen` from the
//! harness's transcript (with the fallback for pushes a harness dropped).

mod common;
#[path = "support/peer_shim.rs"]
mod peer_shim;

use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use peer_shim::PeerShim;
use serde_json::{json, Value};

fn send(d: &TestDaemon, to: &str, body: &str) -> Value {
    let (status, answer) = d.post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn broadcast(d: &TestDaemon, room: &str, body: &str) -> Value {
    let (status, answer) = d.post_json("/api/v1/broadcast", &json!({"room": room, "body": body}));
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

// Proves mid-turn delivery takes only mail that may interrupt: after a tool
// ran, the post-tool-use hook carries a direct message and a room message
// that @mentions the session, but not ambient room mail, which waits for the
// next turn's start; and nothing is handed over twice.
#[test]
fn mid_turn_takes_direct_mail_and_mentions_and_leaves_ambient_mail() {
    let d = TestDaemon::start(&[]);
    let id = "m1d00000-0000-4000-8000-000000000001";
    hook_as(&d, "session-start", id, "SessionStart", json!({}));
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({}));
    let nickname = session(&d, id)["nickname"].as_str().unwrap().to_string();
    send(&d, id, "direct while the tool runs");
    broadcast(&d, "everyone", "ambient news for the room");
    broadcast(&d, "everyone", &format!("@{nickname} please look at this"));

    let after_tool = hook_as(
        &d,
        "post-tool-use",
        id,
        "PostToolUse",
        json!({"tool_name": "Bash"}),
    );
    let v: Value = serde_json::from_str(&after_tool).unwrap();
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    let context = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(context.contains("direct while the tool runs"), "{context}");
    assert!(context.contains("please look at this"), "{context}");
    assert!(!context.contains("ambient news"), "{context}");
    assert_eq!(context.matches("<message ").count(), 2, "{context}");

    let next_tool = hook_as(
        &d,
        "post-tool-use",
        id,
        "PostToolUse",
        json!({"tool_name": "Bash"}),
    );
    assert_eq!(
        context_of(&next_tool),
        None,
        "nothing is handed over twice: {next_tool}"
    );
    let next_turn = context_of(&hook_as(
        &d,
        "prompt-submit",
        id,
        "UserPromptSubmit",
        json!({}),
    ))
    .unwrap();
    assert!(next_turn.contains("ambient news"), "{next_turn}");
    assert_eq!(next_turn.matches("<message ").count(), 1, "{next_turn}");
}

// Proves the hold at the stop: a Stop with direct mail unread answers
// `decision: block` (the session stays busy) — for Claude Code with the mail
// as context and a short reason (it renders a reason twice), for Codex and
// Gemini CLI with the mail as the reason; the continuation's Stop ends the
// turn (`{}`), the session goes idle, and held mail is never handed over again.
#[test]
fn a_stop_with_direct_mail_unread_is_held_once() {
    let d = TestDaemon::start(&[]);
    let id = "m1d00000-0000-4000-8000-000000000002";
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({}));
    broadcast(&d, "everyone", "ambient: does not hold a turn");
    let sent = send(&d, id, "answer me before you stop");

    let held: Value = serde_json::from_str(&hook_as(
        &d,
        "stop",
        id,
        "Stop",
        json!({"stop_hook_active": false}),
    ))
    .unwrap();
    assert_eq!(held["decision"], "block", "{held}");
    let reason = held["reason"].as_str().unwrap();
    assert!(
        !reason.contains("answer me before you stop") && reason.contains("send_message"),
        "{reason}"
    );
    assert_eq!(held["hookSpecificOutput"]["hookEventName"], "Stop");
    let mail = held["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(mail.contains("answer me before you stop"), "{mail}");
    assert!(!mail.contains("ambient"), "{mail}");
    assert!(
        mail.contains(sent["message"]["id"].as_str().unwrap()),
        "{mail}"
    );
    assert_eq!(session(&d, id)["activity"], "busy");

    let ended = hook_as(&d, "stop", id, "Stop", json!({"stop_hook_active": true}));
    assert_eq!(ended.trim(), "{}", "the continuation's stop ends the turn");
    assert_eq!(session(&d, id)["activity"], "idle");
    let next_turn = context_of(&hook_as(
        &d,
        "prompt-submit",
        id,
        "UserPromptSubmit",
        json!({}),
    ))
    .unwrap();
    assert!(
        !next_turn.contains("answer me before you stop"),
        "{next_turn}"
    );
    assert!(
        next_turn.contains("ambient: does not hold a turn"),
        "{next_turn}"
    );

    // Codex (and Gemini CLI) take the reason as the continuation's input.
    send(&d, id, "for codex");
    let (status, codex) = d.post_json("/hook/stop?harness=codex", &payload(id, "Stop"));
    assert_eq!(status, 200);
    assert_eq!(codex["decision"], "block", "{codex}");
    assert!(
        codex["reason"].as_str().unwrap().contains("for codex"),
        "{codex}"
    );
    assert!(
        codex.get("hookSpecificOutput").is_none(),
        "Codex's Stop takes no hookSpecificOutput: {codex}"
    );
}

// Proves two agents answering each other cannot keep one turn going for
// ever: at most five stops are held in a row, then the turn ends and the
// mail waits (unread) for the next turn.
#[test]
fn holds_in_a_row_are_bounded() {
    let d = TestDaemon::start(&[]);
    let id = "m1d00000-0000-4000-8000-000000000003";
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({}));
    for i in 0..5 {
        send(&d, id, &format!("ping {i}"));
        let held: Value = serde_json::from_str(&hook_as(
            &d,
            "stop",
            id,
            "Stop",
            json!({"stop_hook_active": i > 0}),
        ))
        .unwrap();
        assert_eq!(held["decision"], "block", "hold {i}: {held}");
    }
    send(&d, id, "ping 5");
    assert_eq!(
        hook_as(&d, "stop", id, "Stop", json!({"stop_hook_active": true})).trim(),
        "{}"
    );
    let next_turn = context_of(&hook_as(
        &d,
        "prompt-submit",
        id,
        "UserPromptSubmit",
        json!({}),
    ))
    .unwrap();
    assert!(next_turn.contains("ping 5"), "{next_turn}");
}

/// A waker: the wake stream for `run`, read on a thread; events arrive on the channel.
struct Waker {
    events: mpsc::Receiver<(String, Value)>,
}

impl Waker {
    fn open(d: &TestDaemon, run: &str, how: &str) -> Waker {
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(format!("{}/api/v1/wake?run={run}&how={how}", d.url))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut kind = String::new();
            for line in BufReader::new(resp).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let _ = tx.send((
                        kind.clone(),
                        serde_json::from_str(data.trim()).unwrap_or(Value::Null),
                    ));
                }
            }
        });
        let waker = Waker { events };
        assert_eq!(
            waker.next(Duration::from_secs(5)).map(|e| e.0),
            Some("ready".to_string())
        );
        waker
    }

    fn next(&self, limit: Duration) -> Option<(String, Value)> {
        self.events.recv_timeout(limit).ok()
    }
}

/// A hook call as `muster hook` makes it inside `muster run` (MUSTER_RUN_ID set).
fn hook_in_run(
    d: &TestDaemon,
    run: &str,
    event: &str,
    id: &str,
    name: &str,
    wake: Option<&str>,
) -> String {
    let mut cmd = muster_cmd(&d.url);
    cmd.args(["hook", event])
        .env("MUSTER_RUN_ID", run)
        .stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped());
    if let Some(w) = wake {
        cmd.env("MUSTER_WAKE", w);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload(id, name).to_string().as_bytes())
        .unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

// Proves the wake: a session whose hooks ran inside a run with a waker is
// shown wakeable; once its turn ended, a direct message answers `woken` and
// the waker gets one wake naming the session and the message; a second
// message inside the cooldown wakes nobody at once and is woken for when
// the cooldown ends; room mail without a mention never wakes; a session that
// is busy is not woken; mail right after a turn ended is woken for half a
// second later (a TUI that just finished a turn may not take a typed line).
#[test]
fn an_idle_session_in_a_run_is_woken_once_per_cooldown() {
    let d = TestDaemon::start(&["--wake-cooldown", "1500ms"]);
    let (id, run) = (
        "m1d00000-0000-4000-8000-000000000004",
        "run-00000000000000a4",
    );
    let waker = Waker::open(&d, run, "pty");
    hook_in_run(&d, run, "prompt-submit", id, "UserPromptSubmit", None);
    assert_eq!(session(&d, id)["wake"], "pty");
    let busy = send(&d, id, "while busy");
    assert_eq!(
        busy["state"], "queued",
        "a busy session is not woken: {busy}"
    );
    assert!(waker.next(Duration::from_millis(300)).is_none());

    // The stop holds the turn for "while busy"; the continuation's stop ends it.
    hook_in_run(&d, run, "stop", id, "Stop", None);
    hook_in_run(&d, run, "stop", id, "Stop", None);
    assert_eq!(session(&d, id)["activity"], "idle");
    broadcast(&d, "everyone", "ambient: wakes nobody");
    // Also past the half second a wake waits after a turn's end.
    assert!(
        waker.next(Duration::from_millis(600)).is_none(),
        "room mail without a mention woke the session"
    );

    let first = send(&d, id, "wake up and read this");
    assert_eq!(first["state"], "woken", "{first}");
    assert_eq!(first["deliveries"][0]["woken"], true);
    let (kind, wake) = waker.next(Duration::from_secs(2)).expect("a wake event");
    assert_eq!(kind, "wake");
    assert_eq!(wake["session"], id);
    assert_eq!(wake["message_ids"], json!([first["message"]["id"]]));
    assert!(
        wake["prompt"].as_str().unwrap().contains("send_message"),
        "{wake}"
    );

    let started = Instant::now();
    let second = send(&d, id, "one more inside the cooldown");
    assert_eq!(second["state"], "queued", "{second}");
    let (kind, later) = waker
        .next(Duration::from_secs(3))
        .expect("the wake after the cooldown");
    assert_eq!(kind, "wake");
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "woken inside the cooldown: {:?}",
        started.elapsed()
    );
    let ids = later["message_ids"].as_array().unwrap();
    assert!(ids.contains(&second["message"]["id"]), "{later}");
}

// Proves the opt-out: a session whose hooks say `MUSTER_WAKE=off` is shown
// `wake: off` and never woken, even with a waker for its run; allowing it
// again through the API makes it wakeable.
#[test]
fn a_session_that_opts_out_is_never_woken() {
    let d = TestDaemon::start(&[]);
    let (id, run) = (
        "m1d00000-0000-4000-8000-000000000005",
        "run-00000000000000a5",
    );
    let waker = Waker::open(&d, run, "pty");
    hook_in_run(&d, run, "stop", id, "Stop", Some("off"));
    assert_eq!(session(&d, id)["wake"], "off");
    assert_eq!(send(&d, id, "do not wake")["state"], "queued");
    assert!(waker.next(Duration::from_millis(500)).is_none());

    let resp = http()
        .patch(format!("{}/api/v1/sessions/{id}", d.url))
        .header("content-type", "application/json")
        .body(json!({"wake": true}).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(session(&d, id)["wake"], "pty");
    // The mail sent while opted out is still undelivered: the next mail wakes for both.
    let answer = send(&d, id, "now you may");
    assert_eq!(answer["state"], "woken", "{answer}");
    let (_, wake) = waker.next(Duration::from_secs(2)).unwrap();
    assert_eq!(wake["message_ids"].as_array().unwrap().len(), 2, "{wake}");
}

// Proves bad wake streams are refused and register nothing.
#[test]
fn a_bad_wake_stream_is_refused() {
    let d = TestDaemon::start(&[]);
    for query in [
        "run=&how=pty",
        "run=r1&how=telepathy",
        "run=bad%20id&how=pty",
        "how=pty",
    ] {
        let (status, body) = d.get(&format!("/api/v1/wake?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
    }
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

// Proves a push the harness dropped is never lost from the model's view: a
// message pushed to the session's shim, which a hook that read the
// transcript does not find there, is surfaced by the turn-start hook once
// it is over two seconds old (a shown push would have started a turn by
// then); a hook that could not read a transcript leaves it alone; and the
// push found in the transcript is never surfaced again.
#[test]
fn a_push_missing_from_the_transcript_is_surfaced_by_a_later_hook() {
    let d = TestDaemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("session.jsonl");
    std::fs::write(&transcript, "{\"type\":\"user\"}\n").unwrap();
    let extra = json!({"transcript_path": transcript.display().to_string()});
    let peer = PeerShim::start(&d, "m1d00000-0000-4000-8000-000000000007");
    let id = peer.id.clone();
    let dropped = send(&d, &id, "a push nobody showed");
    assert_eq!(dropped["state"], "pushed");
    peer.channel_with("a push nobody showed", Duration::from_secs(5))
        .expect("the push reached the shim");

    let too_soon = hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", extra.clone());
    assert_eq!(
        context_of(&too_soon),
        None,
        "a push under 2 s old may still be shown: {too_soon}"
    );
    std::thread::sleep(Duration::from_millis(2_100));
    let without_transcript = hook_as(
        &d,
        "prompt-submit",
        &id,
        "UserPromptSubmit",
        json!({"transcript_path": ""}),
    );
    assert_eq!(
        context_of(&without_transcript),
        None,
        "no transcript, no evidence: {without_transcript}"
    );
    let context = context_of(&hook_as(
        &d,
        "prompt-submit",
        &id,
        "UserPromptSubmit",
        extra.clone(),
    ))
    .unwrap();
    assert!(context.contains("a push nobody showed"), "{context}");
    assert_eq!(
        context_of(&hook_as(
            &d,
            "prompt-submit",
            &id,
            "UserPromptSubmit",
            extra.clone()
        )),
        None
    );

    // A push that is in the transcript (shown) is seen and never surfaced.
    let shown = send(&d, &id, "a push that was shown");
    let mid = shown["message"]["id"].as_str().unwrap().to_string();
    peer.channel_with("a push that was shown", Duration::from_secs(5))
        .unwrap();
    let entry = json!({"type": "user", "message": {"content": format!("<channel source=\"muster\" message_id=\"{mid}\">a push that was shown</channel>")}});
    std::fs::OpenOptions::new()
        .append(true)
        .open(&transcript)
        .unwrap()
        .write_all(format!("{entry}\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(
        context_of(&hook_as(
            &d,
            "prompt-submit",
            &id,
            "UserPromptSubmit",
            extra
        )),
        None
    );
    wait_until(Duration::from_secs(2), || {
        delivery_state(&d, &mid, &id) == "seen"
    })
    .expect("seen");
}

// Proves the mid-turn rule for pushes: Claude Code gives a shown push to the
// model with the request after the next tool result, so a push that came
// while a tool ran is not surfaced by that tool's post-tool-use hook (it
// may still be shown); if it is still missing from the transcript at the
// next tool's post-tool-use, it was dropped, and that hook surfaces it, once.
#[test]
fn a_push_during_a_tool_is_surfaced_one_tool_later_if_never_shown() {
    let d = TestDaemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("session.jsonl");
    std::fs::write(&transcript, "{\"type\":\"user\"}\n").unwrap();
    let extra = json!({"transcript_path": transcript.display().to_string(), "tool_name": "Bash"});
    let peer = PeerShim::start(&d, "m1d00000-0000-4000-8000-000000000008");
    let id = peer.id.clone();
    hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", extra.clone());
    hook_as(&d, "pre-tool-use", &id, "PreToolUse", extra.clone());
    assert_eq!(
        send(&d, &id, "pushed while the tool ran")["state"],
        "pushed"
    );
    peer.channel_with("pushed while the tool ran", Duration::from_secs(5))
        .unwrap();
    let first = hook_as(&d, "post-tool-use", &id, "PostToolUse", extra.clone());
    assert_eq!(
        context_of(&first),
        None,
        "it may still be shown with the next request: {first}"
    );
    hook_as(&d, "pre-tool-use", &id, "PreToolUse", extra.clone());
    let second = context_of(&hook_as(
        &d,
        "post-tool-use",
        &id,
        "PostToolUse",
        extra.clone(),
    ))
    .unwrap();
    assert!(second.contains("pushed while the tool ran"), "{second}");
    assert_eq!(
        context_of(&hook_as(&d, "post-tool-use", &id, "PostToolUse", extra)),
        None
    );
}

// Proves a harness that exits at its stop whatever the answer (`opencode
// run`) can say `X-Muster-Hold: off`: its stop is not held, and the mail
// stays unread for its next turn instead of being marked delivered.
#[test]
fn a_stop_that_cannot_be_held_leaves_the_mail_unread() {
    let d = TestDaemon::start(&[]);
    let id = "m1d00000-0000-4000-8000-000000000009";
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({}));
    send(&d, id, "keep me for the next turn");
    let resp = http()
        .post(format!("{}/hook/stop", d.url))
        .header("content-type", "application/json")
        .header("x-muster-hold", "off")
        .body(payload(id, "Stop").to_string())
        .send()
        .unwrap();
    assert_eq!(resp.text().unwrap(), "{}");
    assert_eq!(session(&d, id)["activity"], "idle");
    let next_turn = context_of(&hook_as(
        &d,
        "prompt-submit",
        id,
        "UserPromptSubmit",
        json!({}),
    ))
    .unwrap();
    assert!(
        next_turn.contains("keep me for the next turn"),
        "{next_turn}"
    );
}

// Proves a wake waits half a second after the turn's end: mail sent the
// moment a session goes idle answers `woken`, and the wake follows about
// 500 ms after the stop, not at once.
#[test]
fn a_wake_right_after_a_stop_waits_for_the_tui_to_settle() {
    let d = TestDaemon::start(&[]);
    let (id, run) = (
        "m1d00000-0000-4000-8000-00000000000a",
        "run-00000000000000aa",
    );
    let waker = Waker::open(&d, run, "pty");
    hook_in_run(&d, run, "prompt-submit", id, "UserPromptSubmit", None);
    hook_in_run(&d, run, "stop", id, "Stop", None);
    let stopped = Instant::now();
    let answer = send(&d, id, "right after the stop");
    assert_eq!(answer["state"], "woken", "{answer}");
    let (kind, wake) = waker
        .next(Duration::from_secs(3))
        .expect("the wake after the settle");
    assert_eq!(kind, "wake");
    assert_eq!(wake["message_ids"], json!([answer["message"]["id"]]));
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1_500),
        "{waited:?}"
    );
}

// Proves a push the harness dropped still wakes an idle session: a push to
// an idle, wakeable session that starts no turn (a shown one would within
// two seconds) is followed by a wake for it; a push that was shown (its
// prompt-submit reports it seen) wakes nobody.
#[test]
fn an_idle_session_whose_push_was_not_shown_is_woken_for_it() {
    let d = TestDaemon::start(&[]);
    let run = "run-00000000000000ab";
    let peer = PeerShim::start(&d, "m1d00000-0000-4000-8000-00000000000b");
    let id = peer.id.clone();
    let waker = Waker::open(&d, run, "pty");
    hook_in_run(&d, run, "stop", &id, "Stop", None);
    std::thread::sleep(Duration::from_millis(600));
    let dropped = send(&d, &id, "a push nobody showed");
    assert_eq!(dropped["state"], "pushed", "{dropped}");
    let pushed_at = Instant::now();
    assert!(
        waker.next(Duration::from_millis(1_500)).is_none(),
        "woken before a shown push could have started a turn"
    );
    let (kind, wake) = waker
        .next(Duration::from_secs(3))
        .expect("a wake for the dropped push");
    assert_eq!(kind, "wake");
    assert_eq!(wake["message_ids"], json!([dropped["message"]["id"]]));
    assert!(
        pushed_at.elapsed() >= Duration::from_millis(2_000),
        "{:?}",
        pushed_at.elapsed()
    );

    // The woken turn's prompt-submit takes it (not in the transcript), then the turn ends.
    let context = context_of(&hook_in_run(
        &d,
        run,
        "prompt-submit",
        &id,
        "UserPromptSubmit",
        None,
    ))
    .unwrap();
    assert!(context.contains("a push nobody showed"), "{context}");
    hook_in_run(&d, run, "stop", &id, "Stop", None);
    std::thread::sleep(Duration::from_millis(600));

    // A shown push: the turn it starts reports it seen in its prompt, and nothing wakes.
    let shown = send(&d, &id, "a push that was shown");
    let mid = shown["message"]["id"].as_str().unwrap().to_string();
    let mut p = payload(&id, "UserPromptSubmit");
    p["prompt"] = json!(format!(
        "<channel source=\"muster\" message_id=\"{mid}\">a push that was shown</channel>"
    ));
    d.hook("prompt-submit", &p);
    assert!(
        waker.next(Duration::from_millis(3_000)).is_none(),
        "a shown push woke the session"
    );
}

// Proves a wake that started no turn is not the end of it: the session is
// still idle with the mail undelivered when the cooldown ends, so the waker
// is asked again (a bounded number of times); once a turn starts, no more.
#[test]
fn a_wake_that_started_no_turn_is_sent_again_after_the_cooldown() {
    let d = TestDaemon::start(&["--wake-cooldown", "1s"]);
    let (id, run) = (
        "m1d00000-0000-4000-8000-00000000000c",
        "run-00000000000000ac",
    );
    let waker = Waker::open(&d, run, "pty");
    hook_in_run(&d, run, "stop", id, "Stop", None);
    std::thread::sleep(Duration::from_millis(600));
    let sent = send(&d, id, "are you there?");
    assert_eq!(sent["state"], "woken");
    let ids = json!([sent["message"]["id"]]);
    let (_, first) = waker.next(Duration::from_secs(2)).expect("the wake");
    assert_eq!(first["message_ids"], ids);
    let (_, again) = waker
        .next(Duration::from_secs(3))
        .expect("the wake again, after the cooldown");
    assert_eq!(again["message_ids"], ids);
    // This time the turn starts (and takes the mail): nothing more comes.
    assert!(context_of(&hook_in_run(
        &d,
        run,
        "prompt-submit",
        id,
        "UserPromptSubmit",
        None
    ))
    .unwrap()
    .contains("are you there?"));
    hook_in_run(&d, run, "stop", id, "Stop", None);
    assert!(waker.next(Duration::from_millis(2_500)).is_none());
}
