//! A message records how its sender was authenticated (issue 10): the
//! agent's own link, its own shell, a person with `--as`, a holder of the
//! daemon's token, a person as themselves; and the recipient is told,
//! in the framing its model reads, when someone other than the agent spoke
//! for it. Against a real daemon, the real CLI, hook client and shim.

mod common;
#[path = "support/peer_shim.rs"]
mod peer_shim;

use std::time::Duration;

use common::*;
use peer_shim::PeerShim;
use serde_json::{json, Value};

const TOKEN: &str = "sent-via-test-token-1";
const SENDER: &str = "5e000000-0000-4000-8000-000000000001";
const READER: &str = "5e000000-0000-4000-8000-000000000002";

/// `muster send` to READER as the CLI would be run, with `env` set.
fn cli_send(d: &TestDaemon, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = muster_cmd(&d.url);
    cmd.args(["send", READER]).args(args).arg("--json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `via` READER's inbox shows for the message `body`.
/// A client environment with the token and without the local key.
fn token_only(nokey: &tempfile::TempDir) -> Vec<(&'static str, &str)> {
    let dir = nokey.path().to_str().unwrap();
    vec![
        ("MUSTER_TOKEN", TOKEN),
        ("XDG_RUNTIME_DIR", dir),
        ("TMPDIR", dir),
    ]
}

fn recorded_via(d: &TestDaemon, body: &str) -> String {
    let inbox = d.get(&format!("/api/v1/inbox?as={READER}&all=true")).1;
    inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["body"] == body)
        .map(|m| m["via"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{body:?} not in {inbox}"))
}

// Proves each way of sending is recorded as what it is, in the store (an
// inbox with read mail comes from it) and in the send's own answer; and
// that READER's next turn-start hook frames exactly the two messages
// someone else spoke for as such.
#[test]
fn each_way_of_sending_is_recorded_and_the_reader_told_who_spoke() {
    // The token's sends come from a client with no local key (its runtime
    // and temp directories are empty): with the key it would be the
    // daemon's own user, whatever token it also carried.
    let nokey = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(&["--token", TOKEN]);
    let mut reader = payload(READER, "UserPromptSubmit");
    reader["cwd"] = json!("/tmp");
    d.hook("session-start", &reader);
    let shim = PeerShim::start(&d, SENDER);

    let flag = cli_send(&d, &["by --as", "--as", SENDER], &[]);
    assert_eq!(flag["message"]["via"], "on_behalf", "{flag}");
    cli_send(&d, &["by its shell"], &[("MUSTER_SESSION_ID", SENDER)]);
    cli_send(&d, &["by the token", "--as", SENDER], &token_only(&nokey));
    cli_send(&d, &["by a person"], &[]);
    let mut shim = shim;
    shim.send_line(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "send_message", "arguments": {"to": READER, "body": "by its link"}}}));
    let answered = wait_until(Duration::from_secs(10), || {
        d.get(&format!("/api/v1/inbox?as={READER}&all=true"))
            .1
            .to_string()
            .contains("by its link")
    });
    assert!(answered.is_some(), "the shim's send arrived");

    for (body, via) in [
        ("by --as", "on_behalf"),
        ("by its shell", "session_shell"),
        ("by the token", "token"),
        ("by a person", "person"),
        ("by its link", "link"),
    ] {
        assert_eq!(recorded_via(&d, body), via, "{body}");
    }
    // The inbox read above surfaced them; send the two spoken-for kinds
    // again for the hook to frame, with one the agent sent itself.
    cli_send(&d, &["again by --as", "--as", SENDER], &[]);
    cli_send(
        &d,
        &["again by the token", "--as", SENDER],
        &token_only(&nokey),
    );
    cli_send(
        &d,
        &["again by its shell"],
        &[("MUSTER_SESSION_ID", SENDER)],
    );
    let context = context_of(&d.hook("prompt-submit", &reader)).expect("mail in context");
    let tag_of = |body: &str| {
        let at = context
            .find(body)
            .unwrap_or_else(|| panic!("{body} in {context}"));
        let start = context[..at].rfind("<message ").unwrap();
        context[start..at].to_string()
    };
    assert!(
        tag_of("again by --as").contains(
            "spoken_for=\"sent for this agent by a person with --as, not by the agent itself\""
        ),
        "{context}"
    );
    assert!(
        tag_of("again by the token").contains(
            "spoken_for=\"sent for this agent by a holder of the team token, not by the agent itself\""
        ),
        "{context}"
    );
    assert!(
        !tag_of("again by its shell").contains("spoken_for"),
        "{context}"
    );
    assert_eq!(context.matches("spoken_for=").count(), 2, "{context}");
}

// Proves a request cannot claim how it was authenticated: a `via` in the
// JSON body is ignored, and the daemon records what it saw.
#[test]
fn a_request_cannot_say_how_it_was_authenticated() {
    let d = TestDaemon::start(&[]);
    let mut reader = payload(READER, "UserPromptSubmit");
    reader["cwd"] = json!("/tmp");
    d.hook("session-start", &reader);
    d.hook("session-start", &payload(SENDER, "SessionStart"));
    let (status, sent) = d.post_json(
        "/api/v1/messages",
        &json!({"as": SENDER, "to": READER, "body": "claims its link", "via": "link"}),
    );
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["message"]["via"], "on_behalf");
    assert_eq!(recorded_via(&d, "claims its link"), "on_behalf");
}
