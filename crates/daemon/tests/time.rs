//! The daemon's decisions that depend on time, on a manual clock: each test
//! moves time itself and asks the hub to act, so none sleeps for time to
//! pass, and each boundary is hit to the millisecond.

use std::sync::Arc;
use std::time::Duration;

use muster_core::api::{RegisterRequest, ReserveRequest, SendRequest};
use muster_core::{LinkKind, Millis, Session};
use muster_daemon::{Clock, Config, Daemon, ManualClock};
use muster_store::{Change, Store};
use muster_store_sqlite::SqliteStore;

/// 2026-12-01T00:00:00Z, where every test's wall clock starts.
const START: Millis = 1_796_083_200_000;

struct Setup {
    daemon: Daemon,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// A daemon on a loopback port with its own SQLite file and a manual clock;
/// `tune` adjusts the config. Its background sweeper beats on the same
/// clock, so it can act only when a test moves time, never on its own.
async fn start(dir: tempfile::TempDir, tune: impl FnOnce(&mut Config)) -> Setup {
    let clock = ManualClock::new(START);
    let mut config = Config::new("127.0.0.1:0", dir.path());
    config.clock = Clock::Manual(clock.clone());
    tune(&mut config);
    let daemon = muster_daemon::start(config).await.expect("daemon starts");
    Setup {
        daemon,
        clock,
        _dir: dir,
    }
}

fn session(id: &str, cwd: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        id: id.into(),
        harness: Some("claude".into()),
        cwd: cwd.map(Into::into),
        ..RegisterRequest::default()
    }
}

fn on_roster(s: &Setup, id: &str) -> bool {
    s.daemon.hub.roster(false).iter().any(|x| x.id == id)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// Proves a hook-only session stays while its hooks are recent, and leaves at
// the first sweep after it has been silent for exactly the hook backstop.
#[tokio::test]
async fn a_hook_only_session_leaves_once_silent_for_the_backstop() {
    let s = start(tempfile::tempdir().unwrap(), |c| {
        c.hook_backstop = ms(60_000)
    })
    .await;
    let id = "10000000-0000-4000-8000-000000000001";
    s.daemon.hub.register(session(id, None)).await.unwrap();
    s.clock.advance(ms(40_000));
    // A hook 40 s in refreshes it.
    s.daemon.hub.register(session(id, None)).await.unwrap();
    s.clock.advance(ms(59_999));
    assert_eq!(s.daemon.hub.sweep_once().await, 0);
    assert!(on_roster(&s, id), "silent 59.999 s of a 60 s backstop");
    s.clock.advance(ms(1));
    assert_eq!(s.daemon.hub.sweep_once().await, 1);
    assert!(!on_roster(&s, id), "silent for the whole backstop");
    let known = s.daemon.hub.roster(true);
    let gone = known.iter().find(|x| x.id == id).expect("still known");
    assert_eq!(gone.left_at, Some(START + 99_999 + 1));
    s.daemon.stop().await.unwrap();
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
    let s = start(dir, |c| c.stale_after = ms(2_000)).await;
    s.daemon.hub.sweep_once().await;
    assert!(!on_roster(&s, hooked), "silent for 2 h: swept at once");
    assert!(on_roster(&s, linked), "in its grace window");
    s.clock.advance(ms(1_999));
    assert_eq!(s.daemon.hub.sweep_once().await, 0);
    assert!(on_roster(&s, linked), "1.999 s of a 2 s window");
    s.clock.advance(ms(1));
    assert_eq!(s.daemon.hub.sweep_once().await, 1);
    assert!(!on_roster(&s, linked), "the window is over");
    s.daemon.stop().await.unwrap();
}

// Proves retention deletes exactly the mail sent before the window and
// keeps what is inside it.
#[tokio::test]
async fn retention_prunes_mail_older_than_the_window() {
    let s = start(tempfile::tempdir().unwrap(), |c| {
        c.retention = ms(86_400_000)
    })
    .await;
    let (a, b) = (
        "60000000-0000-4000-8000-00000000000a",
        "60000000-0000-4000-8000-00000000000b",
    );
    for id in [a, b] {
        s.daemon.hub.register(session(id, None)).await.unwrap();
    }
    let send = |body: &str| SendRequest {
        as_: Some(a.into()),
        to: b.into(),
        body: body.into(),
        reply_to: None,
    };
    s.daemon.hub.send(send("old news")).await.unwrap();
    s.clock.advance(ms(1_000));
    s.daemon.hub.send(send("a second later")).await.unwrap();
    // One day after the first message: it is exactly at the cutoff, kept.
    s.clock.advance(ms(86_400_000 - 1_000));
    assert_eq!(s.daemon.hub.prune_once().await.unwrap().messages, 0);
    s.clock.advance(ms(1));
    let pruned = s.daemon.hub.prune_once().await.unwrap();
    assert_eq!((pruned.messages, pruned.deliveries), (1, 1));
    let (inbox, _) = s.daemon.hub.inbox(Some(b), true, 100).await.unwrap();
    let bodies: Vec<&str> = inbox
        .messages
        .iter()
        .map(|m| m.message.body.as_str())
        .collect();
    assert_eq!(bodies, ["a second later"]);
    assert_eq!(s.daemon.hub.status().unread_deliveries, 1);
    s.daemon.stop().await.unwrap();
}

// Proves a reservation holds for its whole TTL and the first sweep after it
// lapses removes it.
#[tokio::test]
async fn a_reservation_lapses_at_its_ttl() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().to_str().unwrap().to_string();
    let s = start(tempfile::tempdir().unwrap(), |_| {}).await;
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
    s.daemon.hub.sweep_once().await;
    assert_eq!(s.daemon.hub.reservations().reservations.len(), 1);
    s.clock.advance(ms(1));
    s.daemon.hub.sweep_once().await;
    assert!(s.daemon.hub.reservations().reservations.is_empty());
    s.daemon.stop().await.unwrap();
}
