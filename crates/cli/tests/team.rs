//! Team mode: several real `muster serve --store postgres://…` daemons on
//! one real PostgreSQL database (127.0.0.1:5432, or
//! `MUSTER_TEST_POSTGRES`), each test on a fresh database it drops
//! afterwards. Mail sent through one daemon reaches sessions on another
//! live, by hook and in rooms, exactly once; exclusive reservations and
//! nicknames are decided in the database; a daemon that missed
//! notifications catches up by sequence.

mod common;
#[path = "support/outsider.rs"]
mod outsider;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/postgres_db.rs"]
mod postgres_db;
#[path = "support/waker.rs"]
mod waker;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use outsider::{secret_of, Outsider, BOOT};
use peer_shim::PeerShim;
use postgres_db::FreshDatabase;
use serde_json::{json, Value};
use waker::{hook_in_run, Waker};

/// `n` daemons on the database, each with a data directory of its own.
fn daemons(db: &FreshDatabase, n: usize) -> Vec<TestDaemon> {
    let url = db.url();
    (0..n)
        .map(|_| TestDaemon::start(&["--store", &url]))
        .collect()
}

/// Registers `id` on `d`, working in `cwd`.
fn register(d: &TestDaemon, id: &str, cwd: &str) -> Value {
    let (status, v) = d.post_json(
        "/api/v1/sessions",
        &json!({"id": id, "harness": "claude-code", "cwd": cwd}),
    );
    assert_eq!(status, 200, "{v}");
    v
}

/// Whether `d`'s roster shows `id` (and, with `linked`, its link up).
fn shows(d: &TestDaemon, id: &str, linked: bool) -> bool {
    let roster = d.get("/api/v1/roster").1;
    roster["sessions"].as_array().is_some_and(|s| {
        s.iter()
            .any(|s| s["id"] == id && (!linked || s["link_up"] == true))
    })
}

/// Waits until every daemon shows every one of `ids` (linked, if asked).
fn all_show(ds: &[TestDaemon], ids: &[&str], linked: bool) {
    let seen = wait_until(Duration::from_secs(10), || {
        ds.iter().all(|d| ids.iter().all(|id| shows(d, id, linked)))
    });
    assert!(
        seen.is_some(),
        "not every daemon shows {ids:?} (linked: {linked})"
    );
}

// Proves the team's mail: sessions spread over three daemons (a shim on
// one, hook-only sessions on the others) see one roster; a direct message
// sent through daemon A to a shim linked to daemon C is pushed live and
// the sender is told `pushed`; mail through A to a hook-only session on B
// surfaces at B's next turn hook exactly once (and not again on A); a room
// broadcast through C reaches members on A and B; threads read the same
// from every daemon.
#[test]
fn three_daemons_share_mail_live_by_hook_and_in_rooms() {
    let db = FreshDatabase::new("mail");
    let ds = daemons(&db, 3);
    let (a, b, c) = (&ds[0], &ds[1], &ds[2]);
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_str().unwrap();
    register(a, "sender-a", cwd);
    let mut on_b = payload("hooky-b", "UserPromptSubmit");
    on_b["cwd"] = json!(cwd);
    b.hook("session-start", &on_b);
    let shim = PeerShim::start(c, "linky-c");
    all_show(&ds, &["sender-a", "hooky-b", "linky-c"], false);
    all_show(&ds, &["linky-c"], true);

    // Live, across daemons, and the sender told the truth.
    let started = Instant::now();
    let sent = a.muster_json(&[
        "send",
        "linky-c",
        "live from A",
        "--as",
        "sender-a",
        "--json",
    ]);
    assert_eq!(sent["state"], "pushed", "{sent}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let pushed = shim.channel_with("live from A", Duration::from_secs(5));
    assert!(pushed.is_some(), "the push reached the shim on daemon C");

    // By hook on another daemon, exactly once.
    let sent = a.muster_json(&[
        "send",
        "hooky-b",
        "hook mail from A",
        "--as",
        "sender-a",
        "--json",
    ]);
    assert_eq!(sent["state"], "queued", "{sent}");
    let id = sent["message"]["id"].as_str().unwrap().to_string();
    let surfaced = wait_until(Duration::from_secs(5), || {
        context_of(&b.hook("prompt-submit", &on_b)).is_some_and(|c| c.contains("hook mail from A"))
    });
    assert!(
        surfaced.is_some(),
        "B's hook surfaced the mail sent through A"
    );
    assert_eq!(context_of(&b.hook("prompt-submit", &on_b)), None);
    // A learns it was surfaced, so A's hooks do not hand it out again.
    let settled = wait_until(Duration::from_secs(5), || {
        let thread = a
            .get(&format!("/api/v1/messages/{id}/thread?as=sender-a"))
            .1;
        thread["deliveries"][0]["state"] == "surfaced"
    });
    assert!(settled.is_some(), "the delivery is recorded surfaced");
    // A applies B's record within a notification's round trip.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(context_of(&a.hook("prompt-submit", &on_b)), None);

    // The thread reads the same through every daemon.
    let threads: Vec<Value> = ds
        .iter()
        .map(|d| {
            d.get(&format!("/api/v1/messages/{id}/thread?as=sender-a"))
                .1
        })
        .collect();
    assert_eq!(threads[0]["messages"][0]["body"], "hook mail from A");
    assert!(threads.iter().all(|t| *t == threads[0]), "{threads:?}");

    // Rooms: members joined through different daemons.
    a.muster_json(&["join", "reviewers", "--as", "sender-a", "--json"]);
    b.muster_json(&["join", "reviewers", "--as", "hooky-b", "--json"]);
    all_show(&ds, &["sender-a"], false);
    let joined = wait_until(Duration::from_secs(5), || {
        let rooms = c.get("/api/v1/rooms").1.to_string();
        rooms.contains("reviewers") && rooms.contains("hooky-b") && rooms.contains("sender-a")
    });
    assert!(joined.is_some(), "C sees both members of the room");
    let room = c.muster_json(&[
        "broadcast",
        "reviewers",
        "room mail from C",
        "--as",
        "linky-c",
        "--json",
    ]);
    assert_eq!(room["deliveries"].as_array().unwrap().len(), 2, "{room}");
    for (d, who) in [(a, "sender-a"), (b, "hooky-b")] {
        let got = wait_until(Duration::from_secs(5), || {
            let inbox = d.get(&format!("/api/v1/inbox?as={who}&all=true")).1;
            inbox.to_string().contains("room mail from C")
        });
        assert!(
            got.is_some(),
            "{who} got the room mail through its own daemon"
        );
    }
    drop(shim);
}

// Proves exclusive reservations are decided in the database: 16 sessions
// spread over three daemons race for one file, 20 rounds, and every round
// has exactly one winner; every loser is told who holds it.
#[test]
fn sixteen_sessions_on_three_daemons_race_for_one_reservation() {
    let db = FreshDatabase::new("race");
    let ds = Arc::new(daemons(&db, 3));
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_str().unwrap().to_string();
    let ids: Vec<String> = (0..16).map(|i| format!("racer-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        register(&ds[i % 3], id, &cwd);
    }
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    all_show(&ds, &names, false);
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(16));
        let racers: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (ds, barrier, id) = (ds.clone(), barrier.clone(), id.clone());
                std::thread::spawn(move || {
                    let d = &ds[i % 3];
                    let client = d.http();
                    barrier.wait();
                    let resp = client
                        .post(format!("{}/api/v1/reservations", d.url))
                        .header(muster_daemon::local_key::HEADER, d.key())
                        .json(&json!({"as": id, "paths": [format!("round-{round}.rs")], "exclusive": true}))
                        .send()
                        .expect("reserve");
                    (resp.status().as_u16(), resp.text().unwrap())
                })
            })
            .collect();
        let answers: Vec<(u16, String)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let won = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(won, 1, "round {round}: {answers:?}");
        for (status, body) in &answers {
            if *status != 200 {
                assert_eq!(*status, 409, "round {round}: {body}");
                assert!(
                    body.contains("racer-"),
                    "the loser is told the holder: {body}"
                );
            }
        }
        let stored = db.sql(&format!(
            "SELECT count(*) FROM reservations WHERE pattern = 'round-{round}.rs'"
        ));
        assert_eq!(stored, "1", "round {round}");
    }
}

// Proves a nickname is given out once across daemons: 30 sessions
// registered at once, ten through each daemon, get 30 different nicknames,
// and every daemon shows the same nickname for each.
#[test]
fn nicknames_are_unique_across_daemons() {
    let db = FreshDatabase::new("nick");
    let ds = Arc::new(daemons(&db, 3));
    let barrier = Arc::new(Barrier::new(30));
    let joins: Vec<_> = (0..30)
        .map(|i| {
            let (ds, barrier) = (ds.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let v = register(&ds[i % 3], &format!("nick-{i:02}"), "/tmp");
                v["nickname"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let nicknames: Vec<String> = joins.into_iter().map(|j| j.join().unwrap()).collect();
    let unique: HashSet<&String> = nicknames.iter().collect();
    assert_eq!(unique.len(), 30, "{nicknames:?}");
    let ids: Vec<String> = (0..30).map(|i| format!("nick-{i:02}")).collect();
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    all_show(&ds, &names, false);
    for d in ds.iter() {
        let roster = d.get("/api/v1/roster").1;
        for (i, nickname) in nicknames.iter().enumerate() {
            let shown = roster["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == format!("nick-{i:02}"))
                .map(|s| s["nickname"].clone());
            assert_eq!(shown, Some(json!(nickname)), "daemon {}", d.url);
        }
    }
}

// Proves a daemon that missed notifications loses nothing: B's listening
// connection is cut by the server and mail sent through A meanwhile still
// reaches B's hook (read by sequence); and a daemon restarted after being
// killed picks up mail sent while it was down, then follows live again.
#[test]
fn a_daemon_that_missed_notifications_catches_up_by_sequence() {
    let db = FreshDatabase::new("catchup");
    let dir_b = tempfile::tempdir().unwrap();
    let mut ds = vec![
        TestDaemon::start(&["--store", &db.url()]),
        TestDaemon::start_in(dir_b.path(), &["--store", &db.url()]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_str().unwrap();
    register(&ds[0], "sender", cwd);
    let mut hooky = payload("hooky", "UserPromptSubmit");
    hooky["cwd"] = json!(cwd);
    ds[1].hook("session-start", &hooky);
    all_show(&ds, &["sender", "hooky"], false);

    // Every listening connection cut: notifications are lost until it reconnects.
    let cut = db.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    );
    assert_eq!(cut, "2", "both daemons listened");
    ds[0].muster_json(&[
        "send",
        "hooky",
        "sent while B was deaf",
        "--as",
        "sender",
        "--json",
    ]);
    let got = wait_until(Duration::from_secs(5), || {
        context_of(&ds[1].hook("prompt-submit", &hooky))
            .is_some_and(|c| c.contains("sent while B was deaf"))
    });
    assert!(got.is_some(), "B caught up by sequence");

    // Killed, mail sent meanwhile, started again on the same database.
    ds[1].kill9();
    for i in 0..5 {
        ds[0].muster_json(&[
            "send",
            "hooky",
            &format!("while B was down {i}"),
            "--as",
            "sender",
            "--json",
        ]);
    }
    ds[1] = TestDaemon::start_in(dir_b.path(), &["--store", &db.url()]);
    let context = context_of(&ds[1].hook("prompt-submit", &hooky)).unwrap_or_default();
    for i in 0..5 {
        assert!(
            context.contains(&format!("while B was down {i}")),
            "{context}"
        );
    }
    ds[0].muster_json(&[
        "send",
        "hooky",
        "after B came back",
        "--as",
        "sender",
        "--json",
    ]);
    let got = wait_until(Duration::from_secs(5), || {
        context_of(&ds[1].hook("prompt-submit", &hooky))
            .is_some_and(|c| c.contains("after B came back"))
    });
    assert!(got.is_some(), "B follows live again");
    // Every message stored once.
    assert_eq!(db.sql("SELECT count(*) FROM messages"), "7");
    assert_eq!(db.sql("SELECT count(DISTINCT id) FROM messages"), "7");
}

// Proves a wake crosses daemons: a session whose run's waker is connected
// to daemon B, and whose turn has ended, is woken by direct mail sent
// through daemon A within 2 s, and the wake names the session.
#[test]
fn mail_through_one_daemon_wakes_an_idle_session_on_another() {
    let db = FreshDatabase::new("wake");
    let ds = daemons(&db, 2);
    let run = "run-00000000000000b7";
    let id = "7ea00000-0000-4000-8000-000000000001";
    let waker = Waker::open(&ds[1], run, "pty");
    hook_in_run(&ds[1], run, "prompt-submit", id, "UserPromptSubmit", None);
    hook_in_run(&ds[1], run, "stop", id, "Stop", None);
    register(&ds[0], "sender", "/tmp");
    all_show(&ds, &[id, "sender"], false);
    let started = Instant::now();
    ds[0].muster_json(&["send", id, "wake up, please", "--as", "sender", "--json"]);
    let woke = waker.next(Duration::from_secs(3));
    let elapsed = started.elapsed();
    let (kind, data) = woke.expect("a wake event");
    assert_eq!(kind, "wake", "{data}");
    assert!(data.to_string().contains(id), "{data}");
    assert!(elapsed < Duration::from_secs(2), "woken after {elapsed:?}");
}

// Proves the grace window runs from a dead daemon's last heartbeat: a
// shim that listed only daemon A dies with it (killed with it, as a crash
// of the machine would), and daemon B, which takes over the sweep's lead,
// keeps the session through the grace window counted from A's last
// heartbeat and sweeps it after, once.
#[test]
fn a_dead_daemons_unrelinked_session_is_swept_after_the_grace_window() {
    let db = FreshDatabase::new("grace");
    let flags = [
        "--store",
        &db.url(),
        "--stale-after",
        "8s",
        "--sweep-interval",
        "200ms",
    ];
    let a = TestDaemon::start(&flags);
    std::thread::sleep(Duration::from_millis(500));
    let b = TestDaemon::start(&flags);
    let shim = PeerShim::start(&a, "only-on-a");
    let ds = [a, b];
    all_show(&ds, &["only-on-a"], true);
    let [mut a, b] = ds;
    // The heartbeat that counts is the last one A wrote before it died.
    let killed = Instant::now();
    a.kill9();
    drop(shim);
    let mut last_present = Duration::ZERO;
    let gone = wait_until(Duration::from_secs(20), || {
        let present = shows(&b, "only-on-a", false);
        if present {
            last_present = killed.elapsed();
        }
        !present
    });
    assert!(
        gone.is_some(),
        "B never swept the session A's death left behind"
    );
    // Not before the grace window (less the heartbeat interval it may have
    // lost), and not long after it plus the time to notice A stopped.
    assert!(
        last_present >= Duration::from_secs(7),
        "swept after {last_present:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(16),
        "swept after {:?}",
        killed.elapsed()
    );
    let left =
        db.sql("SELECT count(*) FROM sessions WHERE id = 'only-on-a' AND left_at IS NOT NULL");
    assert_eq!(left, "1");
}

// Proves tokens are the team's, not one daemon's: a token made through A
// lets its holder in through B; the session it registers through B is its
// own on A too (another token acting for it through A is 403); a revoke
// through B shuts it out of A; and a new session id registered for two
// tokens through two daemons at once belongs to exactly one of them,
// decided in the database (the other is refused 403, on both daemons).
#[test]
fn tokens_and_whose_sessions_are_whose_hold_on_every_daemon() {
    let db = FreshDatabase::new("tokens");
    let url = db.url();
    let ds: Vec<TestDaemon> = (0..2)
        .map(|_| TestDaemon::start(&["--store", &url, "--token", BOOT]))
        .collect();
    let (a, b) = (Outsider::new(&ds[0]), Outsider::new(&ds[1]));
    let alice = secret_of(&a.ok(BOOT, &["token", "create", "alice", "--scope", "agent"]));
    let bob = secret_of(&a.ok(BOOT, &["token", "create", "bob", "--scope", "agent"]));
    let through_b = wait_until(Duration::from_secs(5), || {
        b.hook(&alice, "session-start", "alice-1").0 == 200
    });
    assert!(through_b.is_some(), "B never let alice's token in");
    let owned_on_a = wait_until(Duration::from_secs(5), || {
        a.hook(&bob, "prompt-submit", "alice-1").0 == 403
    });
    assert!(owned_on_a.is_some(), "A never learned alice-1 is alice's");
    assert_eq!(a.hook(&alice, "prompt-submit", "alice-1").0, 200);

    for round in 0..10 {
        let id = format!("contested-{round}");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [(&a, &alice), (&b, &bob)]
            .into_iter()
            .map(|(o, token)| {
                let (url, token, id, barrier) =
                    (o.url.clone(), token.clone(), id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let o = Outsider::at(&url);
                    barrier.wait();
                    o.hook(&token, "session-start", &id).0
                })
            })
            .collect();
        let mut statuses: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 403], "round {round}: one token wins {id}");
        let winner = if a.hook(&alice, "prompt-submit", &id).0 == 200 {
            &alice
        } else {
            &bob
        };
        let loser = if winner == &alice { &bob } else { &alice };
        for o in [&a, &b] {
            let settled = wait_until(Duration::from_secs(5), || {
                o.hook(winner, "prompt-submit", &id).0 == 200
                    && o.hook(loser, "prompt-submit", &id).0 == 403
            });
            assert!(settled.is_some(), "round {round}: {} disagrees", o.url);
        }
    }

    b.ok(BOOT, &["token", "revoke", "alice"]);
    let shut_out = wait_until(Duration::from_secs(5), || {
        a.hook(&alice, "prompt-submit", "alice-1").0 == 401
    });
    assert!(shut_out.is_some(), "A still lets a revoked token in");
}
