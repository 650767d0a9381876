//! The daemon's decisions that depend on time, on a manual clock: each test
//! moves time itself and asks the hub to act, so none sleeps for time to
//! pass, and each boundary is hit to the millisecond.

mod support;

use muster_core::api::{RegisterRequest, ReserveRequest, SendRequest};
use muster_core::{LinkKind, Session};
use muster_store::{Change, Store};
use muster_store_sqlite::SqliteStore;
use support::fake_shim::FakeShim;
use support::{ms, wait_for, TestDaemon, START};

fn session(id: &str, cwd: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        id: id.into(),
        harness: Some("claude".into()),
        cwd: cwd.map(Into::into),
        ..RegisterRequest::default()
    }
}

fn on_roster(s: &TestDaemon, id: &str) -> bool {
    s.hub().roster(false).iter().any(|x| x.id == id)
}

// Proves a hook-only session stays while its hooks are recent, and leaves at
// the first sweep after it has been silent for exactly the hook backstop.
#[tokio::test]
async fn a_hook_only_session_leaves_once_silent_for_the_backstop() {
    let s = TestDaemon::start_with(|c| c.hook_backstop = ms(60_000)).await;
    let id = "10000000-0000-4000-8000-000000000001";
    s.hub().register(session(id, None)).await.unwrap();
    s.clock.advance(ms(40_000));
    // A hook 40 s in refreshes it.
    s.hub().register(session(id, None)).await.unwrap();
    s.clock.advance(ms(59_999));
    assert_eq!(s.hub().sweep_once().await, 0);
    assert!(on_roster(&s, id), "silent 59.999 s of a 60 s backstop");
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 1);
    assert!(!on_roster(&s, id), "silent for the whole backstop");
    let known = s.hub().roster(true);
    let gone = known.iter().find(|x| x.id == id).expect("still known");
    assert_eq!(gone.left_at, Some(START + 99_999 + 1));
    s.stop().await;
}

// Proves the linked rule: a shim-linked session stays on the roster while
// its link is up (well past a hook-only backstop), and once the link drops
// the session leaves at the first sweep after exactly --stale-after.
#[tokio::test]
async fn a_linked_session_lives_with_its_link_and_leaves_after_the_grace_window() {
    let s = TestDaemon::start_with(|c| {
        c.stale_after = ms(1_000);
        c.hook_backstop = ms(1_000);
        // Sweeps here are the test's own (`sweep_once`), not the beat's.
        c.sweep_interval = ms(3_600_000);
    })
    .await;
    let id = "70000000-0000-4000-8000-000000000001";
    let shim = FakeShim::link(&s, id).await;
    s.clock.advance(ms(2_500));
    assert_eq!(s.hub().sweep_once().await, 0);
    assert!(on_roster(&s, id), "still live at 2.5 s: its link is up");

    shim.close().await;
    assert!(
        wait_for(ms(3_000), || async {
            s.hub()
                .roster(false)
                .iter()
                .any(|x| x.id == id && !x.link_up)
        })
        .await,
        "the daemon saw the link go"
    );
    s.clock.advance(ms(999));
    assert_eq!(s.hub().sweep_once().await, 0);
    assert!(on_roster(&s, id), "not before the grace window");
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 1);
    assert!(!on_roster(&s, id), "swept after the window");
    s.stop().await;
}

// Proves the linked rule survives a restart: a linked session loaded from
// the store gets a fresh --stale-after window from the daemon's start, even
// though it was last seen hours ago, while a hook-only one as old is swept
// by the first sweep (the backstop is wall time).
#[tokio::test]
async fn a_reloaded_linked_session_gets_a_fresh_grace_window() {
    let dir = tempfile::tempdir().unwrap();
    let hours_ago = START - 2 * 3_600_000;
    let (linked, hooked) = (
        "30000000-0000-4000-8000-00000000000a",
        "30000000-0000-4000-8000-00000000000b",
    );
    {
        let store = SqliteStore::open(dir.path().join("muster.db")).unwrap();
        let mut l = Session::new(linked, "linked-one", hours_ago);
        l.link = LinkKind::Link;
        let h = Session::new(hooked, "hooked-one", hours_ago);
        store
            .apply(vec![Change::PutSession(l), Change::PutSession(h)])
            .await
            .unwrap();
    }
    let s = TestDaemon::start_in(dir, |c| c.stale_after = ms(2_000)).await;
    s.hub().sweep_once().await;
    assert!(!on_roster(&s, hooked), "silent for 2 h: swept at once");
    assert!(on_roster(&s, linked), "in its grace window");
    s.clock.advance(ms(1_999));
    assert_eq!(s.hub().sweep_once().await, 0);
    assert!(on_roster(&s, linked), "1.999 s of a 2 s window");
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 1);
    assert!(!on_roster(&s, linked), "the window is over");
    s.stop().await;
}

// Proves retention deletes exactly the mail sent before the window and
// keeps what is inside it.
#[tokio::test]
async fn retention_prunes_mail_older_than_the_window() {
    let s = TestDaemon::start_with(|c| c.retention = ms(86_400_000)).await;
    let (a, b) = (
        "60000000-0000-4000-8000-00000000000a",
        "60000000-0000-4000-8000-00000000000b",
    );
    for id in [a, b] {
        s.hub().register(session(id, None)).await.unwrap();
    }
    let send = |body: &str| SendRequest {
        as_: Some(a.into()),
        to: b.into(),
        body: body.into(),
        reply_to: None,
        as_from_env: false,
        via: muster_core::SentVia::OnBehalf,
    };
    s.hub().send(send("old news")).await.unwrap();
    s.clock.advance(ms(1_000));
    s.hub().send(send("a second later")).await.unwrap();
    // One day after the first message: it is exactly at the cutoff, kept.
    s.clock.advance(ms(86_400_000 - 1_000));
    assert_eq!(s.hub().prune_once().await.unwrap().messages, 0);
    s.clock.advance(ms(1));
    let pruned = s.hub().prune_once().await.unwrap();
    assert_eq!((pruned.messages, pruned.deliveries), (1, 1));
    let (inbox, _) = s.hub().inbox(Some(b), true, 100).await.unwrap();
    let bodies: Vec<&str> = inbox
        .messages
        .iter()
        .map(|m| m.message.body.as_str())
        .collect();
    assert_eq!(bodies, ["a second later"]);
    assert_eq!(s.hub().status().unread_deliveries, 1);
    s.stop().await;
}

// Proves a reservation holds for its whole TTL and the first sweep after it
// lapses removes it.
#[tokio::test]
async fn a_reservation_lapses_at_its_ttl() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_str().unwrap().to_string();
    let s = TestDaemon::start().await;
    let id = "70000000-0000-4000-8000-00000000000a";
    s.daemon
        .hub
        .register(session(id, Some(&cwd)))
        .await
        .unwrap();
    let granted = s
        .daemon
        .hub
        .reserve(ReserveRequest {
            as_: Some(id.into()),
            paths: vec!["src/lib.rs".into()],
            exclusive: true,
            ttl_s: Some(60),
            reason: None,
        })
        .await
        .unwrap();
    assert_eq!(granted.reservations.len(), 1);
    s.clock.advance(ms(59_999));
    s.hub().sweep_once().await;
    assert_eq!(s.hub().reservations().reservations.len(), 1);
    s.clock.advance(ms(1));
    s.hub().sweep_once().await;
    assert!(s.hub().reservations().reservations.is_empty());
    s.stop().await;
}

const HOUR: u64 = 3_600_000;

/// Three hook-only sessions and one linked session whose link has dropped,
/// on a daemon with a 60 min backstop, a 60 s grace window and no sweeps
/// but the test's own.
async fn three_hooked_and_one_dropped_link() -> (TestDaemon, Vec<String>, String) {
    let s = TestDaemon::start_with(|c| {
        c.hook_backstop = ms(HOUR);
        c.stale_after = ms(60_000);
        c.sweep_interval = ms(1_000 * HOUR);
    })
    .await;
    let hooked: Vec<String> = (1..=3)
        .map(|n| format!("50000000-0000-4000-8000-00000000000{n}"))
        .collect();
    for id in &hooked {
        s.hub().register(session(id, None)).await.unwrap();
    }
    let linked = "50000000-0000-4000-8000-0000000000aa".to_string();
    let shim = FakeShim::link(&s, &linked).await;
    shim.close().await;
    assert!(
        wait_for(ms(3_000), || async {
            s.hub()
                .roster(false)
                .iter()
                .any(|x| x.id == linked && !x.link_up)
        })
        .await,
        "the daemon saw the link go"
    );
    (s, hooked, linked)
}

// Proves a wall clock set forward by two hours sweeps no one in a burst:
// the linked session leaves after exactly its 60 s grace window, and the
// hook-only sessions after exactly 60 min since their last hook, as time
// passes (monotonic), whatever the wall clock says.
#[tokio::test]
async fn a_wall_clock_stepped_forward_two_hours_sweeps_no_one_in_a_burst() {
    let (s, hooked, linked) = three_hooked_and_one_dropped_link().await;
    s.clock.step_wall(2 * HOUR as i64);
    assert_eq!(s.hub().sweep_once().await, 0, "the step is no time passing");
    assert_eq!(s.hub().roster(false).len(), 4);
    s.clock.advance(ms(59_999));
    assert_eq!(s.hub().sweep_once().await, 0);
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 1, "the grace window is over");
    assert!(!on_roster(&s, &linked));
    s.clock.advance(ms(HOUR - 60_000 - 1));
    assert_eq!(s.hub().sweep_once().await, 0, "59:59.999 of silence");
    assert!(hooked.iter().all(|id| on_roster(&s, id)));
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 3, "an hour of silence");
    assert!(s.hub().roster(false).is_empty());
    s.stop().await;
}

// Proves a wall clock set back by two hours keeps no one past their time:
// the linked session still leaves after exactly its grace window, and the
// hook-only sessions after exactly 60 min of silence (not three hours).
#[tokio::test]
async fn a_wall_clock_stepped_back_two_hours_keeps_no_one_past_their_time() {
    let (s, hooked, linked) = three_hooked_and_one_dropped_link().await;
    s.clock.step_wall(-2 * HOUR as i64);
    assert_eq!(s.hub().sweep_once().await, 0);
    s.clock.advance(ms(59_999));
    assert_eq!(s.hub().sweep_once().await, 0);
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 1, "the grace window is over");
    assert!(!on_roster(&s, &linked));
    // A hook after the step counts from when it came.
    s.hub().register(session(&hooked[0], None)).await.unwrap();
    s.clock.advance(ms(HOUR - 60_000));
    assert_eq!(
        s.hub().sweep_once().await,
        2,
        "an hour since their last hook"
    );
    assert!(on_roster(&s, &hooked[0]));
    s.clock.advance(ms(60_000 - 1));
    assert_eq!(s.hub().sweep_once().await, 0);
    s.clock.advance(ms(1));
    assert_eq!(s.hub().sweep_once().await, 1);
    assert!(s.hub().roster(false).is_empty());
    s.stop().await;
}
