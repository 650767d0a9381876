//! Mail from one session to another, through a real daemon, the real
//! `muster` client and its hook command.

mod common;

use common::*;
use serde_json::{json, Value};

/// Registers a session through its session-start hook and returns its nickname.
fn start_session(d: &TestDaemon, id: &str) -> String {
    let out = d.hook("session-start", &payload(id, "SessionStart"));
    let ctx = context_of(&out).expect("session-start answers with the session's identity");
    assert!(ctx.contains(id), "identity names the session id: {ctx}");
    let roster = d.muster_json(&["roster", "--json"]);
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .and_then(|s| s["nickname"].as_str())
        .expect("registered session is on the roster")
        .to_string()
}

// Proves the core promise: `muster send` from A to B surfaces in B's next
// prompt-submit answer (in hookSpecificOutput.additionalContext) exactly once.
#[test]
fn send_surfaces_once_at_the_next_turn() {
    let d = TestDaemon::start(&[]);
    let a = "11111111-aaaa-4000-8000-000000000001";
    let b = "22222222-bbbb-4000-8000-000000000002";
    let nick_a = start_session(&d, a);
    let nick_b = start_session(&d, b);
    assert_ne!(nick_a, nick_b);

    let sent = d.muster_json(&[
        "send",
        &nick_b,
        "please review src/lib.rs",
        "--as",
        a,
        "--json",
    ]);
    assert_eq!(sent["state"], "queued");
    assert_eq!(sent["deliveries"][0]["recipient"], b);

    let first = d.hook("prompt-submit", &payload(b, "UserPromptSubmit"));
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "UserPromptSubmit");
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(ctx.contains("please review src/lib.rs"), "{ctx}");
    assert!(ctx.contains(&nick_a), "the sender is named: {ctx}");

    // Surfaced is recorded just after the answer is written; give it a moment.
    let second = d.hook("prompt-submit", &payload(b, "UserPromptSubmit"));
    assert_eq!(context_of(&second), None, "mail surfaces once: {second}");

    // A's own turn carries nothing either: the mail was for B.
    assert_eq!(
        context_of(&d.hook("prompt-submit", &payload(a, "UserPromptSubmit"))),
        None
    );
}

// Proves many messages are split across turns within the hook budget, the
// first always whole, none lost and none repeated.
#[test]
fn a_backlog_surfaces_over_several_turns_without_loss() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "aaaa0000-0000-4000-8000-00000000000a",
        "bbbb0000-0000-4000-8000-00000000000b",
    );
    start_session(&d, a);
    start_session(&d, b);
    let body = "x".repeat(2_500);
    for i in 0..10 {
        let (status, _) = d.post_json(
            "/api/v1/messages",
            &json!({"as": a, "to": b, "body": format!("msg-{i:02} {body}")}),
        );
        assert_eq!(status, 200);
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        let out = d.hook("prompt-submit", &payload(b, "UserPromptSubmit"));
        assert!(
            out.chars().count() < 10_000,
            "hook output stays under Claude Code's limit"
        );
        let Some(ctx) = context_of(&out) else { break };
        for i in 0..10 {
            if ctx.contains(&format!("msg-{i:02} ")) {
                seen.push(i);
            }
        }
    }
    assert_eq!(
        seen,
        (0..10).collect::<Vec<_>>(),
        "every message once, oldest first"
    );
}

// Proves a room broadcast reaches members as ambient mail and the sender is
// told who it was queued for; and that the operator can read its inbox.
#[test]
fn rooms_and_operator_mail() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "cccc0000-0000-4000-8000-00000000000c",
        "dddd0000-0000-4000-8000-00000000000d",
    );
    start_session(&d, a);
    start_session(&d, b);
    let joined = d.muster_json(&["join", "reviewers", "--as", a, "--json"]);
    assert_eq!(joined["name"], "reviewers");
    d.muster_json(&["join", "reviewers", "--as", b, "--json"]);
    let sent = d.muster_json(&["broadcast", "reviewers", "PR 12 is up", "--as", a, "--json"]);
    assert_eq!(
        sent["deliveries"].as_array().unwrap().len(),
        1,
        "the sender is not its own recipient"
    );
    let ctx = context_of(&d.hook("prompt-submit", &payload(b, "UserPromptSubmit"))).unwrap();
    assert!(
        ctx.contains("PR 12 is up") && ctx.contains("#reviewers"),
        "{ctx}"
    );

    let everyone = d.muster_json(&["broadcast", "everyone", "lunch", "--json"]);
    assert_eq!(
        everyone["deliveries"].as_array().unwrap().len(),
        2,
        "operator broadcast reaches both sessions"
    );

    d.muster_json(&["send", "op:tester", "note to self", "--json"]);
    let inbox = d.muster_json(&["inbox", "--json"]);
    let bodies: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["note to self"]);
    // Read once: the next plain inbox is empty, --all still shows it.
    assert!(common::wait_until(std::time::Duration::from_secs(2), || {
        d.muster_json(&["inbox", "--json"])["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .is_some());
    let all = d.muster_json(&["inbox", "--all", "--json"]);
    assert_eq!(all["messages"].as_array().unwrap().len(), 1);
}

// Proves an unknown recipient is refused with close matches, changes
// nothing, and the CLI exits 1 with the reason.
#[test]
fn unknown_recipient_lists_close_matches() {
    let d = TestDaemon::start(&[]);
    let a = "eeee0000-0000-4000-8000-00000000000e";
    let nick = start_session(&d, a);
    let typo = format!("{}x", &nick[..nick.len() - 1]);
    let out = d.muster(&["send", &typo, "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown recipient") && err.contains(&nick),
        "{err}"
    );
    assert_eq!(d.status()["unread_deliveries"], 0);
}
