//! The moments mail reaches a model, in process on a manual clock: mid-turn
//! after a tool, holding a turn at its stop, waking an idle session through
//! a waker, and pushes a harness dropped (found missing from the transcript
//! the hook client read). Hooks are posted as `muster hook` posts them (with
//! `muster_seen` and `muster_transcript_read` for a transcript it read),
//! shims are fake link clients, and time moves only by `clock.advance`:
//! a push ages, a cooldown ends and a turn's end settles because the test
//! moved time, never because it slept.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::fake_shim::FakeShim;
use support::{ms, payload, wait_for, TestDaemon};
use tokio::sync::mpsc;

async fn send(d: &TestDaemon, to: &str, body: &str) -> Value {
    let (status, answer) = d
        .post_json("/api/v1/messages", &json!({"to": to, "body": body}))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn broadcast(d: &TestDaemon, room: &str, body: &str) -> Value {
    let (status, answer) = d
        .post_json("/api/v1/broadcast", &json!({"room": room, "body": body}))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A hook payload as `muster hook` posts it when it read the transcript and
/// found nothing new there (`muster_seen: []`, `muster_transcript_read`);
/// `extra` adds or replaces fields.
fn hook_payload(id: &str, name: &str, extra: Value) -> Value {
    let mut p = payload(id, name);
    p["muster_seen"] = json!([]);
    p["muster_transcript_read"] = json!(true);
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

async fn hook_as(d: &TestDaemon, event: &str, id: &str, name: &str, extra: Value) -> Value {
    d.hook(event, &hook_payload(id, name, extra)).await
}

/// A hook call as `muster hook` makes it inside `muster run` (MUSTER_RUN_ID
/// set, and MUSTER_WAKE if `wake`): the run and the opt-out go as headers.
async fn hook_in_run(
    d: &TestDaemon,
    run: &str,
    event: &str,
    id: &str,
    name: &str,
    wake: Option<&str>,
) -> Value {
    let mut headers = vec![("x-muster-run", run)];
    if let Some(w) = wake {
        headers.push(("x-muster-wake", w));
    }
    d.hook_with(event, &hook_payload(id, name, json!({})), &headers)
        .await
}

/// `additionalContext` of a hook answer, or None if it carries none.
fn context_of(answer: &Value) -> Option<String> {
    answer["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .map(str::to_string)
}

async fn session(d: &TestDaemon, id: &str) -> Value {
    let roster = d.get("/api/v1/roster").await.1;
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Delivery state of `message` for `recipient`, as the operator (its sender) reads it.
async fn delivery_state(d: &TestDaemon, message: &str, recipient: &str) -> String {
    let (status, thread) = d.get(&format!("/api/v1/messages/{message}/thread")).await;
    assert_eq!(status, 200, "{thread}");
    thread["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["message_id"] == message && x["recipient"] == recipient)
        .map(|x| x["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Lets whatever the last request or clock move set going run: the timers
/// it started register their deadlines, the tasks a clock move woke act.
/// (Tests here run on one thread, so yielding runs every ready task.)
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Time passes: the clock moves by `by`, and what it woke runs.
async fn advance(d: &TestDaemon, by: Duration) {
    settle().await;
    d.clock.advance(by);
    settle().await;
}

/// A waker: the wake stream for `run`, read on a task; events arrive on the channel.
struct Waker {
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Waker {
    async fn open(d: &TestDaemon, run: &str, how: &str) -> Waker {
        // Its own client: the stream stays open longer than a request may take.
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/wake?run={run}&how={how}", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let (mut buf, mut kind) = (String::new(), String::new());
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find('\n') {
                    let line: String = buf.drain(..=end).collect();
                    let line = line.trim_end();
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_string();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        let data = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                        let _ = tx.send((kind.clone(), data));
                    }
                }
            }
        });
        let mut waker = Waker { events };
        assert_eq!(waker.next().await.0, "ready");
        waker
    }

    /// The next event; it must come (within a bound: it is on its way).
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("a wake event")
            .expect("the wake stream is open")
    }

    /// Asserts no wake went out: the daemon counted none since `before`
    /// (counted as it is sent) and none reached the stream.
    fn assert_none(&mut self, d: &TestDaemon, before: u64, why: &str) {
        assert_eq!(d.hub().metrics.wakes.get(), before, "{why}");
        assert!(self.events.try_recv().is_err(), "{why}");
    }
}

// Proves mid-turn delivery takes only mail that may interrupt: after a tool
// ran, the post-tool-use hook carries a direct message and a room message
// that @mentions the session, but not ambient room mail, which waits for the
// next turn's start; and nothing is handed over twice.
#[tokio::test]
async fn mid_turn_takes_direct_mail_and_mentions_and_leaves_ambient_mail() {
    let d = TestDaemon::start().await;
    let id = "m1d00000-0000-4000-8000-000000000001";
    hook_as(&d, "session-start", id, "SessionStart", json!({})).await;
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await;
    let nickname = session(&d, id).await["nickname"]
        .as_str()
        .unwrap()
        .to_string();
    send(&d, id, "direct while the tool runs").await;
    broadcast(&d, "everyone", "ambient news for the room").await;
    broadcast(&d, "everyone", &format!("@{nickname} please look at this")).await;

    let tool = json!({"tool_name": "Bash"});
    let v = hook_as(&d, "post-tool-use", id, "PostToolUse", tool.clone()).await;
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    let context = context_of(&v).unwrap();
    assert!(context.contains("direct while the tool runs"), "{context}");
    assert!(context.contains("please look at this"), "{context}");
    assert!(!context.contains("ambient news"), "{context}");
    assert_eq!(context.matches("<message ").count(), 2, "{context}");

    let next_tool = hook_as(&d, "post-tool-use", id, "PostToolUse", tool).await;
    assert_eq!(
        context_of(&next_tool),
        None,
        "nothing is handed over twice: {next_tool}"
    );
    let next_turn =
        context_of(&hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await).unwrap();
    assert!(next_turn.contains("ambient news"), "{next_turn}");
    assert_eq!(next_turn.matches("<message ").count(), 1, "{next_turn}");
    d.stop().await;
}

// Proves the hold at the stop: a Stop with direct mail unread answers
// `decision: block` (the session stays busy) — for Claude Code with the mail
// as context and a short reason (it renders a reason twice), for Codex and
// Gemini CLI with the mail as the reason; the continuation's Stop ends the
// turn (`{}`), the session goes idle, and held mail is never handed over again.
#[tokio::test]
async fn a_stop_with_direct_mail_unread_is_held_once() {
    let d = TestDaemon::start().await;
    let id = "m1d00000-0000-4000-8000-000000000002";
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await;
    broadcast(&d, "everyone", "ambient: does not hold a turn").await;
    let sent = send(&d, id, "answer me before you stop").await;

    let held = hook_as(&d, "stop", id, "Stop", json!({"stop_hook_active": false})).await;
    assert_eq!(held["decision"], "block", "{held}");
    let reason = held["reason"].as_str().unwrap();
    assert!(
        !reason.contains("answer me before you stop") && reason.contains("send_message"),
        "{reason}"
    );
    assert_eq!(held["hookSpecificOutput"]["hookEventName"], "Stop");
    let mail = context_of(&held).unwrap();
    assert!(mail.contains("answer me before you stop"), "{mail}");
    assert!(!mail.contains("ambient"), "{mail}");
    assert!(
        mail.contains(sent["message"]["id"].as_str().unwrap()),
        "{mail}"
    );
    assert_eq!(session(&d, id).await["activity"], "busy");

    let ended = hook_as(&d, "stop", id, "Stop", json!({"stop_hook_active": true})).await;
    assert_eq!(ended, json!({}), "the continuation's stop ends the turn");
    assert_eq!(session(&d, id).await["activity"], "idle");
    let next_turn =
        context_of(&hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await).unwrap();
    assert!(
        !next_turn.contains("answer me before you stop"),
        "{next_turn}"
    );
    assert!(
        next_turn.contains("ambient: does not hold a turn"),
        "{next_turn}"
    );

    // Codex (and Gemini CLI) take the reason as the continuation's input.
    send(&d, id, "for codex").await;
    let (status, codex) = d
        .post_json("/hook/stop?harness=codex", &payload(id, "Stop"))
        .await;
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
    d.stop().await;
}

// Proves two agents answering each other cannot keep one turn going for
// ever: at most five stops are held in a row, then the turn ends and the
// mail waits (unread) for the next turn.
#[tokio::test]
async fn holds_in_a_row_are_bounded() {
    let d = TestDaemon::start().await;
    let id = "m1d00000-0000-4000-8000-000000000003";
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await;
    for i in 0..5 {
        send(&d, id, &format!("ping {i}")).await;
        let held = hook_as(&d, "stop", id, "Stop", json!({"stop_hook_active": i > 0})).await;
        assert_eq!(held["decision"], "block", "hold {i}: {held}");
    }
    send(&d, id, "ping 5").await;
    assert_eq!(
        hook_as(&d, "stop", id, "Stop", json!({"stop_hook_active": true})).await,
        json!({})
    );
    let next_turn =
        context_of(&hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await).unwrap();
    assert!(next_turn.contains("ping 5"), "{next_turn}");
    d.stop().await;
}

// Proves the wake: a session whose hooks ran inside a run with a waker is
// shown wakeable; once its turn ended, a direct message answers `woken` and
// the waker gets one wake naming the session and the message; a second
// message inside the cooldown wakes nobody at once and is woken for when
// the cooldown ends; room mail without a mention never wakes; a session that
// is busy is not woken; mail right after a turn ended is woken for half a
// second later (a TUI that just finished a turn may not take a typed line).
#[tokio::test]
async fn an_idle_session_in_a_run_is_woken_once_per_cooldown() {
    let d = TestDaemon::start_with(|c| c.wake_cooldown = ms(1_500)).await;
    let (id, run) = (
        "m1d00000-0000-4000-8000-000000000004",
        "run-00000000000000a4",
    );
    let mut waker = Waker::open(&d, run, "pty").await;
    hook_in_run(&d, run, "prompt-submit", id, "UserPromptSubmit", None).await;
    assert_eq!(session(&d, id).await["wake"], "pty");
    let busy = send(&d, id, "while busy").await;
    assert_eq!(
        busy["state"], "queued",
        "a busy session is not woken: {busy}"
    );
    advance(&d, ms(300)).await;
    waker.assert_none(&d, 0, "a busy session was woken");

    // The stop holds the turn for "while busy"; the continuation's stop ends it.
    hook_in_run(&d, run, "stop", id, "Stop", None).await;
    hook_in_run(&d, run, "stop", id, "Stop", None).await;
    assert_eq!(session(&d, id).await["activity"], "idle");
    broadcast(&d, "everyone", "ambient: wakes nobody").await;
    // Also past the half second a wake waits after a turn's end.
    advance(&d, ms(600)).await;
    waker.assert_none(&d, 0, "room mail without a mention woke the session");

    let first = send(&d, id, "wake up and read this").await;
    assert_eq!(first["state"], "woken", "{first}");
    assert_eq!(first["deliveries"][0]["woken"], true);
    let (kind, wake) = waker.next().await;
    assert_eq!(kind, "wake");
    assert_eq!(wake["session"], id);
    assert_eq!(wake["message_ids"], json!([first["message"]["id"]]));
    assert!(
        wake["prompt"].as_str().unwrap().contains("send_message"),
        "{wake}"
    );

    let second = send(&d, id, "one more inside the cooldown").await;
    assert_eq!(second["state"], "queued", "{second}");
    // Woken exactly when the cooldown ends, not a millisecond inside it.
    advance(&d, ms(1_499)).await;
    waker.assert_none(&d, 1, "woken inside the cooldown");
    advance(&d, ms(1)).await;
    let (kind, later) = waker.next().await;
    assert_eq!(kind, "wake");
    let ids = later["message_ids"].as_array().unwrap();
    assert!(ids.contains(&second["message"]["id"]), "{later}");
    d.stop().await;
}

// Proves the opt-out: a session whose hooks say `MUSTER_WAKE=off` is shown
// `wake: off` and never woken, even with a waker for its run; allowing it
// again through the API makes it wakeable.
#[tokio::test]
async fn a_session_that_opts_out_is_never_woken() {
    let d = TestDaemon::start().await;
    let (id, run) = (
        "m1d00000-0000-4000-8000-000000000005",
        "run-00000000000000a5",
    );
    let mut waker = Waker::open(&d, run, "pty").await;
    hook_in_run(&d, run, "stop", id, "Stop", Some("off")).await;
    assert_eq!(session(&d, id).await["wake"], "off");
    assert_eq!(send(&d, id, "do not wake").await["state"], "queued");
    advance(&d, ms(500)).await;
    waker.assert_none(&d, 0, "a session that opted out was woken");

    let resp = d
        .client
        .patch(format!("{}/api/v1/sessions/{id}", d.url))
        .header("content-type", "application/json")
        .body(json!({"wake": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(session(&d, id).await["wake"], "pty");
    // The mail sent while opted out is still undelivered: the next mail wakes for both.
    let answer = send(&d, id, "now you may").await;
    assert_eq!(answer["state"], "woken", "{answer}");
    let (_, wake) = waker.next().await;
    assert_eq!(wake["message_ids"].as_array().unwrap().len(), 2, "{wake}");
    d.stop().await;
}

// Proves bad wake streams are refused and register nothing.
#[tokio::test]
async fn a_bad_wake_stream_is_refused() {
    let d = TestDaemon::start().await;
    for query in [
        "run=&how=pty",
        "run=r1&how=telepathy",
        "run=bad%20id&how=pty",
        "how=pty",
    ] {
        let (status, body) = d.get(&format!("/api/v1/wake?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    d.stop().await;
}

// Proves a push the harness dropped is never lost from the model's view: a
// message pushed to the session's shim, which a hook that read the
// transcript does not find there, is surfaced by the turn-start hook once
// it is over two seconds old (a shown push would have started a turn by
// then); a hook that could not read a transcript leaves it alone; and the
// push found in the transcript is never surfaced again.
#[tokio::test]
async fn a_push_missing_from_the_transcript_is_surfaced_by_a_later_hook() {
    let d = TestDaemon::start().await;
    let mut peer = FakeShim::link(&d, "m1d00000-0000-4000-8000-000000000007").await;
    let id = peer.id.clone();
    let dropped = send(&d, &id, "a push nobody showed").await;
    assert_eq!(dropped["state"], "pushed");
    assert_eq!(peer.next_push().await.body, "a push nobody showed");

    // Exactly two seconds old is not over two seconds old.
    advance(&d, ms(2_000)).await;
    let too_soon = hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", json!({})).await;
    assert_eq!(
        context_of(&too_soon),
        None,
        "a push 2 s old may still be shown: {too_soon}"
    );
    advance(&d, ms(1)).await;
    // What `muster hook` posts when the payload names no transcript.
    let mut no_transcript = payload(&id, "UserPromptSubmit");
    no_transcript["transcript_path"] = json!("");
    let without_transcript = d.hook("prompt-submit", &no_transcript).await;
    assert_eq!(
        context_of(&without_transcript),
        None,
        "no transcript, no evidence: {without_transcript}"
    );
    let context =
        context_of(&hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", json!({})).await)
            .unwrap();
    assert!(context.contains("a push nobody showed"), "{context}");
    assert_eq!(
        context_of(&hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", json!({})).await),
        None
    );

    // A push that is in the transcript (shown) is seen and never surfaced.
    let shown = send(&d, &id, "a push that was shown").await;
    let mid = shown["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(peer.next_push().await.body, "a push that was shown");
    advance(&d, ms(2_100)).await;
    // The hook client found the push's channel entry in the transcript.
    let seen = json!({"muster_seen": [mid]});
    assert_eq!(
        context_of(&hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", seen).await),
        None
    );
    assert!(
        wait_for(ms(2_000), || async {
            delivery_state(&d, &mid, &id).await == "seen"
        })
        .await,
        "seen"
    );
    d.stop().await;
}

// Proves the mid-turn rule for pushes: Claude Code gives a shown push to the
// model with the request after the next tool result, so a push that came
// while a tool ran is not surfaced by that tool's post-tool-use hook (it
// may still be shown); if it is still missing from the transcript at the
// next tool's post-tool-use, it was dropped, and that hook surfaces it, once.
#[tokio::test]
async fn a_push_during_a_tool_is_surfaced_one_tool_later_if_never_shown() {
    let d = TestDaemon::start().await;
    let mut peer = FakeShim::link(&d, "m1d00000-0000-4000-8000-000000000008").await;
    let id = peer.id.clone();
    let tool = json!({"tool_name": "Bash"});
    // Each step takes a moment, as a real turn's do: the push comes while
    // the tool runs, after its pre-tool-use and before its post-tool-use.
    let step = ms(10);
    hook_as(&d, "prompt-submit", &id, "UserPromptSubmit", tool.clone()).await;
    advance(&d, step).await;
    hook_as(&d, "pre-tool-use", &id, "PreToolUse", tool.clone()).await;
    advance(&d, step).await;
    assert_eq!(
        send(&d, &id, "pushed while the tool ran").await["state"],
        "pushed"
    );
    assert_eq!(peer.next_push().await.body, "pushed while the tool ran");
    advance(&d, step).await;
    let first = hook_as(&d, "post-tool-use", &id, "PostToolUse", tool.clone()).await;
    assert_eq!(
        context_of(&first),
        None,
        "it may still be shown with the next request: {first}"
    );
    advance(&d, step).await;
    hook_as(&d, "pre-tool-use", &id, "PreToolUse", tool.clone()).await;
    advance(&d, step).await;
    let second =
        context_of(&hook_as(&d, "post-tool-use", &id, "PostToolUse", tool.clone()).await).unwrap();
    assert!(second.contains("pushed while the tool ran"), "{second}");
    advance(&d, step).await;
    assert_eq!(
        context_of(&hook_as(&d, "post-tool-use", &id, "PostToolUse", tool).await),
        None
    );
    d.stop().await;
}

// Proves a harness that exits at its stop whatever the answer (`opencode
// run`) can say `X-Muster-Hold: off`: its stop is not held, and the mail
// stays unread for its next turn instead of being marked delivered.
#[tokio::test]
async fn a_stop_that_cannot_be_held_leaves_the_mail_unread() {
    let d = TestDaemon::start().await;
    let id = "m1d00000-0000-4000-8000-000000000009";
    hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await;
    send(&d, id, "keep me for the next turn").await;
    let resp = d
        .client
        .post(format!("{}/hook/stop", d.url))
        .header("content-type", "application/json")
        .header("x-muster-hold", "off")
        .body(hook_payload(id, "Stop", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "{}");
    assert_eq!(session(&d, id).await["activity"], "idle");
    let next_turn =
        context_of(&hook_as(&d, "prompt-submit", id, "UserPromptSubmit", json!({})).await).unwrap();
    assert!(
        next_turn.contains("keep me for the next turn"),
        "{next_turn}"
    );
    d.stop().await;
}

// Proves a wake waits half a second after the turn's end: mail sent the
// moment a session goes idle answers `woken`, and the wake follows 500 ms
// after the stop, not at once.
#[tokio::test]
async fn a_wake_right_after_a_stop_waits_for_the_tui_to_settle() {
    let d = TestDaemon::start().await;
    let (id, run) = (
        "m1d00000-0000-4000-8000-00000000000a",
        "run-00000000000000aa",
    );
    let mut waker = Waker::open(&d, run, "pty").await;
    hook_in_run(&d, run, "prompt-submit", id, "UserPromptSubmit", None).await;
    hook_in_run(&d, run, "stop", id, "Stop", None).await;
    let answer = send(&d, id, "right after the stop").await;
    assert_eq!(answer["state"], "woken", "{answer}");
    advance(&d, ms(499)).await;
    waker.assert_none(&d, 0, "woken before the TUI settled");
    advance(&d, ms(1)).await;
    let (kind, wake) = waker.next().await;
    assert_eq!(kind, "wake");
    assert_eq!(wake["message_ids"], json!([answer["message"]["id"]]));
    d.stop().await;
}

// Proves a push the harness dropped still wakes an idle session: a push to
// an idle, wakeable session that starts no turn (a shown one would within
// two seconds) is followed by a wake for it; a push that was shown (its
// prompt-submit reports it seen) wakes nobody.
#[tokio::test]
async fn an_idle_session_whose_push_was_not_shown_is_woken_for_it() {
    let d = TestDaemon::start().await;
    let run = "run-00000000000000ab";
    let mut peer = FakeShim::link(&d, "m1d00000-0000-4000-8000-00000000000b").await;
    let id = peer.id.clone();
    let mut waker = Waker::open(&d, run, "pty").await;
    hook_in_run(&d, run, "stop", &id, "Stop", None).await;
    advance(&d, ms(600)).await;
    let dropped = send(&d, &id, "a push nobody showed").await;
    assert_eq!(dropped["state"], "pushed", "{dropped}");
    assert_eq!(peer.next_push().await.body, "a push nobody showed");
    // Looked at 2.1 s after the push: by then a shown push had started a turn.
    advance(&d, ms(2_099)).await;
    waker.assert_none(&d, 0, "woken before a shown push could have started a turn");
    advance(&d, ms(1)).await;
    let (kind, wake) = waker.next().await;
    assert_eq!(kind, "wake");
    assert_eq!(wake["message_ids"], json!([dropped["message"]["id"]]));

    // The woken turn's prompt-submit takes it (not in the transcript), then the turn ends.
    let context =
        context_of(&hook_in_run(&d, run, "prompt-submit", &id, "UserPromptSubmit", None).await)
            .unwrap();
    assert!(context.contains("a push nobody showed"), "{context}");
    hook_in_run(&d, run, "stop", &id, "Stop", None).await;
    advance(&d, ms(600)).await;

    // A shown push: the turn it starts reports it seen in its prompt, and nothing wakes.
    let shown = send(&d, &id, "a push that was shown").await;
    let mid = shown["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(peer.next_push().await.body, "a push that was shown");
    let prompt =
        format!("<channel source=\"muster\" message_id=\"{mid}\">a push that was shown</channel>");
    // The hook client reports the id it found in the prompt as seen.
    d.hook(
        "prompt-submit",
        &hook_payload(
            &id,
            "UserPromptSubmit",
            json!({"prompt": prompt, "muster_seen": [mid]}),
        ),
    )
    .await;
    advance(&d, ms(3_000)).await;
    waker.assert_none(&d, 1, "a shown push woke the session");
    d.stop().await;
}

// Proves a wake that started no turn is not the end of it: the session is
// still idle with the mail undelivered when the cooldown ends, so the waker
// is asked again (a bounded number of times); once a turn starts, no more.
#[tokio::test]
async fn a_wake_that_started_no_turn_is_sent_again_after_the_cooldown() {
    let d = TestDaemon::start_with(|c| c.wake_cooldown = ms(1_000)).await;
    let (id, run) = (
        "m1d00000-0000-4000-8000-00000000000c",
        "run-00000000000000ac",
    );
    let mut waker = Waker::open(&d, run, "pty").await;
    hook_in_run(&d, run, "stop", id, "Stop", None).await;
    advance(&d, ms(600)).await;
    let sent = send(&d, id, "are you there?").await;
    assert_eq!(sent["state"], "woken");
    let ids = json!([sent["message"]["id"]]);
    let (_, first) = waker.next().await;
    assert_eq!(first["message_ids"], ids);
    advance(&d, ms(999)).await;
    waker.assert_none(&d, 1, "asked again inside the cooldown");
    advance(&d, ms(1)).await;
    let (_, again) = waker.next().await;
    assert_eq!(again["message_ids"], ids);
    // This time the turn starts (and takes the mail): nothing more comes.
    assert!(
        context_of(&hook_in_run(&d, run, "prompt-submit", id, "UserPromptSubmit", None).await)
            .unwrap()
            .contains("are you there?")
    );
    hook_in_run(&d, run, "stop", id, "Stop", None).await;
    advance(&d, ms(2_500)).await;
    waker.assert_none(&d, 2, "woken again after a turn took the mail");
    d.stop().await;
}
