//! Sessions leaving the roster, through the real binary. The sweeper's
//! timing (backstop, grace windows) is shown on a manual clock in
//! `crates/daemon/tests/time.rs`.

mod common;

use common::*;
use serde_json::json;

// Proves session-end removes the session at once, and mail sent while it is
// away waits for it: the same id coming back gets it at its next start.
#[test]
fn session_end_removes_at_once_and_mail_waits_for_return() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "20000000-0000-4000-8000-00000000000a",
        "20000000-0000-4000-8000-00000000000b",
    );
    d.hook("session-start", &payload(a, "SessionStart"));
    d.hook("session-start", &payload(b, "SessionStart"));
    assert_eq!(
        d.hook("session-end", &payload(b, "SessionEnd")).trim(),
        "{}"
    );
    assert!(
        !d.roster_ids().contains(&b.to_string()),
        "gone at once, no sweep needed"
    );

    let sent = d.muster_json(&["send", b, "welcome back", "--as", a, "--json"]);
    assert_eq!(sent["state"], "queued");
    assert_eq!(
        sent["deliveries"][0]["present"], false,
        "the sender is told the recipient is away"
    );

    let mut resumed = payload(b, "SessionStart");
    resumed["source"] = json!("resume");
    let ctx = context_of(&d.hook("session-start", &resumed)).unwrap();
    assert!(ctx.contains("welcome back"), "{ctx}");
    assert!(d.roster_ids().contains(&b.to_string()));
}
