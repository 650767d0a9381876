//! The liveness sweeper in a real daemon, with short windows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use muster_core::{LinkKind, Session};
use muster_store::{Change, Store};
use muster_store_sqlite::SqliteStore;
use serde_json::json;

// Proves a hook-only session stays while its hooks are recent and leaves
// once it has been silent past --hook-backstop.
#[test]
fn hook_only_session_leaves_after_the_backstop() {
    let d = TestDaemon::start(&["--hook-backstop", "1500ms", "--sweep-interval", "100ms"]);
    let id = "10000000-0000-4000-8000-000000000001";
    let registered = Instant::now();
    d.hook("session-start", &payload(id, "SessionStart"));
    std::thread::sleep(Duration::from_millis(700));
    d.hook("prompt-submit", &payload(id, "UserPromptSubmit")); // refreshes last_seen_at
    let refreshed = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        d.roster_ids().contains(&id.to_string()),
        "still live 1.4 s after start: the hook refreshed it"
    );
    wait_until(Duration::from_secs(5), || {
        !d.roster_ids().contains(&id.to_string())
    })
    .expect("swept");
    assert!(
        refreshed.elapsed() >= Duration::from_millis(1_500),
        "not before the backstop"
    );
    assert!(registered.elapsed() < Duration::from_secs(5));
    let all = d.get("/api/v1/roster?all=true").1;
    let s = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
        .clone();
    assert!(s["left_at"].is_i64(), "still known after leaving: {s}");
}

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

// Proves the linked rule survives restarts: a linked session loaded from
// the store gets a fresh --stale-after window from the daemon's start, even
// though its last_seen_at is hours old, and leaves when the window ends;
// while a hook-only session equally old is swept at once (backstop is wall clock).
#[test]
fn reloaded_linked_session_gets_a_fresh_grace_window() {
    let tmp = tempfile::tempdir().unwrap();
    let hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 2 * 3_600_000;
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(tmp.path().join("muster.db")).unwrap();
            let mut linked = Session::new(
                "30000000-0000-4000-8000-00000000000a",
                "linked-one",
                hours_ago,
            );
            linked.link = LinkKind::Link;
            let hooked = Session::new(
                "30000000-0000-4000-8000-00000000000b",
                "hooked-one",
                hours_ago,
            );
            store
                .apply(vec![Change::PutSession(linked), Change::PutSession(hooked)])
                .await
                .unwrap();
        });
    }
    let started = Instant::now();
    let d = TestDaemon::start_in(
        tmp.path(),
        &["--stale-after", "2s", "--sweep-interval", "100ms"],
    );
    let (linked, hooked) = (
        "30000000-0000-4000-8000-00000000000a",
        "30000000-0000-4000-8000-00000000000b",
    );
    wait_until(Duration::from_secs(2), || {
        !d.roster_ids().contains(&hooked.to_string())
    })
    .expect("the hook-only session, silent for 2 h, is swept at once");
    assert!(
        d.roster_ids().contains(&linked.to_string()),
        "the linked one is in its grace window"
    );
    std::thread::sleep(Duration::from_millis(1_000).saturating_sub(started.elapsed()));
    assert!(
        d.roster_ids().contains(&linked.to_string()),
        "still there 1 s after start"
    );
    wait_until(Duration::from_secs(5), || {
        !d.roster_ids().contains(&linked.to_string())
    })
    .expect("swept");
    assert!(
        started.elapsed() >= Duration::from_millis(2_000),
        "not before the window ends"
    );
}
