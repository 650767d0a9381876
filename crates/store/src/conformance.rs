//! The [`Store`] contract as tests, written against any backend: each
//! `pub async fn` proves one behaviour the daemon relies on, and
//! [`conformance_tests!`](crate::conformance_tests) turns the whole list
//! into one `#[tokio::test]` each for a backend's test suite:
//!
//! ```text
//! muster_store::conformance_tests!(MyHarness::new());
//! ```
//!
//! A backend provides a [`Harness`]: a fresh, empty place for its store
//! per test, which can be opened again after the store is dropped (a
//! restart). Nothing here knows a backend.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster_core::{
    Activity, Delivery, DeliveryState, LinkKind, Membership, Message, Millis, Room, Session, Target,
};

use crate::{
    Change, HistoryQuery, InboxEntry, InboxQuery, PruneReport, SearchQuery, Snapshot, Store,
    StoreError,
};

/// Where the store under test lives. Every test makes its own harness, so
/// the first store it opens is empty.
pub trait Harness {
    type Store: Store;

    /// Opens the harness's store. Opened again after the previous store was
    /// dropped, it must see everything that store committed.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;

    /// Holds back the backend's commits until the returned release runs, so
    /// that writes submitted meanwhile queue up together (a backend that
    /// batches them, like SQLite's group commit, then has a failing write
    /// among good ones in one batch). `None`, the default: nothing to hold.
    fn hold_writes(&self) -> Option<Box<dyn FnOnce() + Send>> {
        None
    }

    /// Makes the backend fail every write underneath, as a full disk or a
    /// lost server would (not a refusal of one request on its merits),
    /// until the returned heal runs. `None`, the default: the harness
    /// cannot, and the fault behaviours are skipped.
    fn fail_writes(&self) -> Option<Box<dyn FnOnce() + Send>> {
        None
    }
}

/// One `#[tokio::test]` per behaviour of this module, each with a fresh
/// harness from `$harness` (an expression evaluated once per test). The
/// calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@current $harness;
            fresh_store_is_empty,
            round_trip_survives_reopen,
            reopen_keeps_data,
            put_session_upserts,
            touch_session_never_moves_backwards,
            rooms_and_memberships,
            forget_session_keeps_deliveries,
            message_by_id,
            deliveries_of_a_message_by_recipient,
            advance_delivery_is_monotonic_and_inbox_filters,
            ack_up_to_acks_exactly_older_mail_of_recipient,
            submits_take_effect_in_call_order,
            failing_submit_rolls_back_all_its_changes,
            writes_resume_after_a_fault,
            apply_later_is_durable_after_next_apply,
            prune_deletes_old_history_and_gone_sessions,
            reservations_round_trip_and_delete,
            a_reservation_guard_passes_when_no_other_daemon_wrote,
            how_a_sender_was_authenticated_is_kept,
            tokens_and_session_owners_round_trip,
            thread_from_any_message_as_the_reader_sees_it,
            search_finds_messages_by_their_words,
            search_respects_the_reader_and_the_target,
            search_reads_no_text_as_query_syntax,
            search_pages_by_limit_and_cursor,
            history_pages_newest_first_without_gaps_or_repeats,
            search_knows_letters_beyond_ascii,
        );
        $crate::conformance_tests!(@threaded $harness;
            failing_submit_fails_alone_among_concurrent_ones,
            two_thousand_concurrent_applies_all_commit,
            load_is_a_consistent_snapshot_under_writes,
        );
    };
    (@current $harness:expr; $($name:ident,)*) => {
        $(
            #[::tokio::test]
            async fn $name() {
                $crate::conformance::$name(&$harness).await;
            }
        )*
    };
    (@threaded $harness:expr; $($name:ident,)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::conformance::$name(&$harness).await;
            }
        )*
    };
}

// ---------------------------------------------------------------- helpers

/// Drops the store and opens it again: a restart.
async fn reopen<H: Harness>(h: &H, store: H::Store) -> H::Store {
    drop(store);
    h.open().await
}

/// A time-ordered, fixed-width id, like the ULIDs the daemon makes: ids sort as `n` does.
fn mid(n: u32) -> String {
    format!("01JMSG{n:020}")
}

fn session(id: &str, connected_at: Millis) -> Session {
    Session::new(id, &format!("{id}-nick"), connected_at)
}

fn message(n: u32, from: &str, to: Target, sent_at: Millis) -> Message {
    Message {
        id: mid(n),
        from: from.to_string(),
        from_nickname: format!("{from}-nick"),
        to,
        reply_to: None,
        body: format!("body of message {n}"),
        sent_at,
        via: Default::default(),
    }
}

fn delivery(
    message_id: &str,
    recipient: &str,
    state: DeliveryState,
    updated_at: Millis,
) -> Delivery {
    Delivery {
        message_id: message_id.to_string(),
        recipient: recipient.to_string(),
        state,
        updated_at,
    }
}

/// A direct message `n` from alice to `recipients`, queued for each, sent at `sent_at`.
fn put_direct(n: u32, recipients: &[&str], sent_at: Millis) -> Change {
    let m = message(
        n,
        "alice",
        Target::Session(recipients[0].to_string()),
        sent_at,
    );
    let deliveries = recipients
        .iter()
        .map(|r| delivery(&m.id, r, DeliveryState::Queued, sent_at))
        .collect();
    Change::PutMessage {
        message: m,
        deliveries,
    }
}

fn advance(n: u32, recipient: &str, state: DeliveryState, at: Millis) -> Change {
    Change::AdvanceDelivery {
        message_id: mid(n),
        recipient: recipient.to_string(),
        state,
        at,
    }
}

fn query(recipient: &str, include_read: bool, limit: usize) -> InboxQuery {
    InboxQuery {
        recipient: recipient.to_string(),
        include_read,
        limit,
    }
}

/// (message number as id, state) pairs of an inbox listing, for compact assertions.
fn ids_states(entries: &[InboxEntry]) -> Vec<(String, DeliveryState)> {
    entries
        .iter()
        .map(|e| (e.message.id.clone(), e.state))
        .collect()
}

fn unread_of(snapshot: &Snapshot, recipient: &str) -> Vec<(String, DeliveryState)> {
    snapshot
        .unread
        .iter()
        .filter(|(_, d)| d.recipient == recipient)
        .map(|(m, d)| (m.id.clone(), d.state))
        .collect()
}

async fn apply(store: &impl Store, changes: Vec<Change>) {
    if let Err(e) = store.apply(changes).await {
        panic!("apply failed: {e}");
    }
}

async fn load(store: &impl Store) -> Snapshot {
    store.load().await.expect("load")
}

async fn inbox(store: &impl Store, q: InboxQuery) -> Vec<InboxEntry> {
    store.inbox(q).await.expect("inbox")
}

// ---------------------------------------------------------------- tests

/// Proves a fresh store is empty: nothing to load, no mail, no message.
pub async fn fresh_store_is_empty<H: Harness>(h: &H) {
    let store = h.open().await;
    assert_eq!(load(&store).await, Snapshot::default());
    assert!(inbox(&store, query("bob", true, 100)).await.is_empty());
    assert_eq!(store.message(&mid(1)).await.unwrap(), None);
    assert!(store.deliveries(&mid(1)).await.unwrap().is_empty());
    assert!(store.thread(&mid(1), "bob").await.unwrap().is_empty());
}

/// Proves sessions, rooms, memberships and unread deliveries (with their messages, oldest first) survive a reopen exactly.
pub async fn round_trip_survives_reopen<H: Harness>(h: &H) {
    let store = h.open().await;

    let mut alice = session("alice", 1_000);
    alice.harness = "claude".into();
    alice.host = "box".into();
    alice.operator = "dana".into();
    alice.pid = Some(4242);
    alice.cwd = "/src/muster".into();
    alice.project = "muster".into();
    alice.branch = "main".into();
    alice.status = "writing tests".into();
    alice.activity = Activity::Busy;
    alice.last_tool = Some("Edit".into());
    alice.can_push = true;
    alice.link = LinkKind::Link;
    alice.last_seen_at = 1_500;
    let mut bob = session("bob", 2_000);
    bob.activity = Activity::Idle;
    let mut carol = session("carol", 2_000);
    carol.left_at = Some(2_500); // away, but still known

    let dev = Room {
        name: "dev".into(),
        created_by: "alice".into(),
        created_at: 3_000,
    };
    let ops = Room {
        name: "ops".into(),
        created_by: "bob".into(),
        created_at: 3_100,
    };
    let joins = vec![
        Membership {
            room: "dev".into(),
            session_id: "alice".into(),
            joined_at: 3_000,
        },
        Membership {
            room: "dev".into(),
            session_id: "bob".into(),
            joined_at: 3_050,
        },
        Membership {
            room: "ops".into(),
            session_id: "carol".into(),
            joined_at: 3_200,
        },
    ];

    // m1: a room message to bob and carol; m2: a reply to an operator, pushed to
    // bob; m3: already surfaced to bob at insert, so not unread.
    let m1 = message(1, "alice", Target::Room("dev".into()), 4_000);
    let m1_bob = delivery(&m1.id, "bob", DeliveryState::Queued, 4_000);
    let m1_carol = delivery(&m1.id, "carol", DeliveryState::Queued, 4_000);
    let mut m2 = message(2, "op:dana", Target::Operator("dana".into()), 5_000);
    m2.from_nickname = "dana".into();
    m2.reply_to = Some(m1.id.clone());
    let m2_bob = delivery(&m2.id, "bob", DeliveryState::Pushed, 5_001);
    let m2_carol = delivery(&m2.id, "carol", DeliveryState::Queued, 5_000);
    let m3 = message(3, "bob", Target::Session("alice".into()), 6_000);
    let m3_alice = delivery(&m3.id, "alice", DeliveryState::Surfaced, 6_001);

    // Newest message first, in separate batches, to show order comes from the ids.
    apply(
        &store,
        vec![
            Change::PutSession(carol.clone()),
            Change::PutSession(bob.clone()),
        ],
    )
    .await;
    apply(&store, vec![Change::PutSession(alice.clone())]).await;
    apply(
        &store,
        vec![Change::PutRoom(ops.clone()), Change::PutRoom(dev.clone())],
    )
    .await;
    apply(
        &store,
        joins.iter().rev().cloned().map(Change::JoinRoom).collect(),
    )
    .await;
    apply(
        &store,
        vec![Change::PutMessage {
            message: m3.clone(),
            deliveries: vec![m3_alice],
        }],
    )
    .await;
    apply(
        &store,
        vec![Change::PutMessage {
            message: m2.clone(),
            deliveries: vec![m2_carol.clone(), m2_bob.clone()],
        }],
    )
    .await;
    apply(
        &store,
        vec![Change::PutMessage {
            message: m1.clone(),
            deliveries: vec![m1_carol.clone(), m1_bob.clone()],
        }],
    )
    .await;

    let expected = Snapshot {
        sessions: vec![alice, bob, carol],
        rooms: vec![dev, ops],
        memberships: joins,
        unread: vec![
            (m1.clone(), m1_bob),
            (m1.clone(), m1_carol),
            (m2.clone(), m2_bob),
            (m2.clone(), m2_carol),
        ],
        reservations: vec![],
        tokens: vec![],
    };
    assert_eq!(load(&store).await, expected, "before reopen");

    let store = reopen(h, store).await;
    assert_eq!(load(&store).await, expected, "after reopen");
    assert_eq!(
        store.message(&m3.id).await.unwrap(),
        Some(m3),
        "read mail stays in history"
    );
}

/// Proves PutSession replaces every field of an existing session instead of adding a second one.
pub async fn put_session_upserts<H: Harness>(h: &H) {
    let store = h.open().await;
    let mut s = session("alice", 1_000);
    apply(&store, vec![Change::PutSession(s.clone())]).await;
    s.nickname = "alice-2".into();
    s.pid = Some(7);
    s.branch = "feature".into();
    s.last_tool = Some("Bash".into());
    s.can_push = true;
    s.link = LinkKind::Link;
    s.activity = Activity::Busy;
    s.last_seen_at = 9_000;
    s.left_at = Some(9_500);
    apply(&store, vec![Change::PutSession(s.clone())]).await;
    assert_eq!(load(&store).await.sessions, vec![s.clone()]);
    // And back: fields that become None are cleared, not kept.
    s.pid = None;
    s.last_tool = None;
    s.left_at = None;
    apply(&store, vec![Change::PutSession(s.clone())]).await;
    assert_eq!(load(&store).await.sessions, vec![s]);
}

/// Proves PutRoom and JoinRoom are idempotent (first one wins) and LeaveRoom removes only that membership.
pub async fn rooms_and_memberships<H: Harness>(h: &H) {
    let store = h.open().await;
    let dev = Room {
        name: "dev".into(),
        created_by: "alice".into(),
        created_at: 1,
    };
    let join = |s: &str, at| Membership {
        room: "dev".into(),
        session_id: s.into(),
        joined_at: at,
    };
    apply(
        &store,
        vec![
            Change::PutRoom(dev.clone()),
            Change::JoinRoom(join("alice", 10)),
        ],
    )
    .await;
    apply(
        &store,
        vec![
            Change::PutRoom(Room {
                name: "dev".into(),
                created_by: "mallory".into(),
                created_at: 99,
            }),
            Change::JoinRoom(join("alice", 99)),
            Change::JoinRoom(join("bob", 20)),
        ],
    )
    .await;
    let snap = load(&store).await;
    assert_eq!(snap.rooms, vec![dev.clone()]);
    assert_eq!(snap.memberships, vec![join("alice", 10), join("bob", 20)]);

    apply(
        &store,
        vec![
            Change::LeaveRoom {
                room: "dev".into(),
                session_id: "alice".into(),
            },
            Change::LeaveRoom {
                room: "nowhere".into(),
                session_id: "bob".into(),
            },
        ],
    )
    .await;
    let snap = load(&store).await;
    assert_eq!(snap.rooms, vec![dev], "the room outlives its members");
    assert_eq!(snap.memberships, vec![join("bob", 20)]);
}

/// Proves ForgetSession removes the session and its memberships but keeps its deliveries.
pub async fn forget_session_keeps_deliveries<H: Harness>(h: &H) {
    let store = h.open().await;
    apply(
        &store,
        vec![
            Change::PutSession(session("bob", 1)),
            Change::PutSession(session("carol", 2)),
            Change::PutRoom(Room {
                name: "dev".into(),
                created_by: "bob".into(),
                created_at: 3,
            }),
            Change::JoinRoom(Membership {
                room: "dev".into(),
                session_id: "bob".into(),
                joined_at: 4,
            }),
            Change::JoinRoom(Membership {
                room: "dev".into(),
                session_id: "carol".into(),
                joined_at: 5,
            }),
            put_direct(1, &["bob"], 6),
        ],
    )
    .await;
    apply(&store, vec![Change::ForgetSession { id: "bob".into() }]).await;
    let snap = load(&store).await;
    assert_eq!(snap.sessions, vec![session("carol", 2)]);
    assert_eq!(
        snap.memberships,
        vec![Membership {
            room: "dev".into(),
            session_id: "carol".into(),
            joined_at: 5
        }]
    );
    assert_eq!(
        unread_of(&snap, "bob"),
        vec![(mid(1), DeliveryState::Queued)]
    );
}

/// Proves AdvanceDelivery only moves forward, read mail leaves `load().unread`, and inbox honours include_read and limit.
pub async fn advance_delivery_is_monotonic_and_inbox_filters<H: Harness>(h: &H) {
    let store = h.open().await;
    let changes = (1..=5)
        .map(|n| put_direct(n, &["bob", "carol"], 100 * n as Millis))
        .collect();
    apply(&store, changes).await;

    apply(
        &store,
        vec![
            // m1: surfaced, then a late "pushed" must not move it back.
            advance(1, "bob", DeliveryState::Surfaced, 1_001),
            advance(1, "bob", DeliveryState::Pushed, 1_002),
            // m2: pushed, then "queued" and "pushed" again change nothing (not even updated_at).
            advance(2, "bob", DeliveryState::Pushed, 1_003),
            advance(2, "bob", DeliveryState::Queued, 1_004),
            advance(2, "bob", DeliveryState::Pushed, 1_005),
            // m3: acked, then surfaced must not move it back.
            advance(3, "bob", DeliveryState::Acked, 1_006),
            advance(3, "bob", DeliveryState::Surfaced, 1_007),
            // A delivery that does not exist is a no-op, not an error.
            advance(9, "bob", DeliveryState::Acked, 1_008),
            advance(1, "nobody", DeliveryState::Acked, 1_009),
        ],
    )
    .await;
    // Moving forward in a later batch still works: m4 queued -> pushed -> surfaced.
    apply(
        &store,
        vec![advance(4, "bob", DeliveryState::Pushed, 1_010)],
    )
    .await;
    apply(
        &store,
        vec![advance(4, "bob", DeliveryState::Surfaced, 1_011)],
    )
    .await;

    check_bob_and_carol(&store, "before reopen").await;
    let store = reopen(h, store).await;
    check_bob_and_carol(&store, "after reopen").await;
}

/// The expected state of `advance_delivery_is_monotonic_and_inbox_filters`.
async fn check_bob_and_carol(store: &impl Store, pass: &str) {
    use DeliveryState::*;
    let all_bob = vec![
        (mid(1), Surfaced),
        (mid(2), Pushed),
        (mid(3), Acked),
        (mid(4), Surfaced),
        (mid(5), Queued),
    ];
    let unread_bob = vec![(mid(2), Pushed), (mid(5), Queued)];
    let all_carol: Vec<_> = (1..=5).map(|n| (mid(n), Queued)).collect();

    let snap = load(store).await;
    assert_eq!(unread_of(&snap, "bob"), unread_bob, "{pass}");
    assert_eq!(
        unread_of(&snap, "carol"),
        all_carol,
        "{pass}: other recipients untouched"
    );
    let m2_bob = snap
        .unread
        .iter()
        .find(|(m, d)| m.id == mid(2) && d.recipient == "bob")
        .unwrap();
    assert_eq!(
        m2_bob.1.updated_at, 1_003,
        "{pass}: an ignored advance leaves updated_at alone"
    );
    assert_eq!(
        m2_bob.0,
        message(2, "alice", Target::Session("bob".into()), 200)
    );

    assert_eq!(
        ids_states(&inbox(store, query("bob", false, 100)).await),
        unread_bob,
        "{pass}"
    );
    assert_eq!(
        ids_states(&inbox(store, query("bob", true, 100)).await),
        all_bob,
        "{pass}"
    );
    assert_eq!(
        ids_states(&inbox(store, query("carol", false, 100)).await),
        all_carol,
        "{pass}"
    );
    // limit keeps the newest and still lists them oldest first.
    assert_eq!(
        ids_states(&inbox(store, query("bob", true, 2)).await),
        all_bob[3..].to_vec(),
        "{pass}"
    );
    assert_eq!(
        ids_states(&inbox(store, query("bob", true, 3)).await),
        all_bob[2..].to_vec(),
        "{pass}"
    );
    assert_eq!(
        ids_states(&inbox(store, query("bob", false, 1)).await),
        vec![(mid(5), Queued)],
        "{pass}: limit applies after the read filter"
    );
    assert_eq!(
        ids_states(&inbox(store, query("carol", false, 2)).await),
        all_carol[3..].to_vec(),
        "{pass}"
    );
    assert_eq!(
        ids_states(&inbox(store, query("bob", true, usize::MAX)).await),
        all_bob,
        "{pass}"
    );
    assert!(
        inbox(store, query("bob", true, 0)).await.is_empty(),
        "{pass}: limit 0 lists nothing"
    );
    assert!(
        inbox(store, query("nobody", true, 10)).await.is_empty(),
        "{pass}"
    );
    // Entries carry the full message.
    let entries = inbox(store, query("bob", true, 1)).await;
    assert_eq!(
        entries[0].message,
        message(5, "alice", Target::Session("bob".into()), 500),
        "{pass}"
    );
}

/// Proves AckUpTo acks exactly that recipient's deliveries with message_id <= upto, and nothing else.
pub async fn ack_up_to_acks_exactly_older_mail_of_recipient<H: Harness>(h: &H) {
    let store = h.open().await;
    let changes = (1..=6)
        .map(|n| put_direct(n, &["bob", "carol"], n as Millis))
        .collect();
    apply(&store, changes).await;
    apply(
        &store,
        vec![
            advance(2, "bob", DeliveryState::Surfaced, 50),
            advance(5, "bob", DeliveryState::Pushed, 51),
        ],
    )
    .await;

    apply(
        &store,
        vec![Change::AckUpTo {
            recipient: "bob".into(),
            upto: mid(4),
            at: 100,
        }],
    )
    .await;

    use DeliveryState::*;
    assert_eq!(
        ids_states(&inbox(&store, query("bob", true, 100)).await),
        vec![
            (mid(1), Acked),
            (mid(2), Acked),
            (mid(3), Acked),
            (mid(4), Acked),
            (mid(5), Pushed),
            (mid(6), Queued)
        ]
    );
    let carol: Vec<_> = (1..=6).map(|n| (mid(n), Queued)).collect();
    assert_eq!(
        ids_states(&inbox(&store, query("carol", true, 100)).await),
        carol,
        "carol untouched"
    );
    let snap = load(&store).await;
    assert_eq!(
        unread_of(&snap, "bob"),
        vec![(mid(5), Pushed), (mid(6), Queued)]
    );
    let m5 = snap
        .unread
        .iter()
        .find(|(m, d)| m.id == mid(5) && d.recipient == "bob")
        .unwrap();
    assert_eq!(
        m5.1.updated_at, 51,
        "deliveries past upto keep their timestamps"
    );

    // An upto between two ids acks only the older one; an upto before every id acks nothing.
    apply(
        &store,
        vec![Change::AckUpTo {
            recipient: "carol".into(),
            upto: format!("{}~", mid(2)),
            at: 200,
        }],
    )
    .await;
    apply(
        &store,
        vec![Change::AckUpTo {
            recipient: "carol".into(),
            upto: "0".into(),
            at: 201,
        }],
    )
    .await;
    assert_eq!(
        ids_states(&inbox(&store, query("carol", true, 100)).await),
        vec![
            (mid(1), Acked),
            (mid(2), Acked),
            (mid(3), Queued),
            (mid(4), Queued),
            (mid(5), Queued),
            (mid(6), Queued)
        ]
    );
    // Acking for an unknown recipient is a no-op.
    apply(
        &store,
        vec![Change::AckUpTo {
            recipient: "nobody".into(),
            upto: mid(9),
            at: 300,
        }],
    )
    .await;
    assert_eq!(load(&store).await.unread.len(), 2 + 4);
}

/// Proves the writer survives a fault of its backend: while writes fail
/// underneath, each submit is refused with `Unavailable` (not `Stopped`)
/// and applies nothing, and health is degraded with a reason and counts
/// them; once the fault clears, the very next submit commits (the writer
/// was never restarted) and health is back; after a restart exactly the
/// acknowledged writes are there.
pub async fn writes_resume_after_a_fault<H: Harness>(h: &H) {
    let store = h.open().await;
    let health = store.health();
    apply(&store, vec![Change::PutSession(session("bob", 1))]).await;
    assert!(!health.is_degraded());
    let Some(heal) = h.fail_writes() else {
        eprintln!("skipped: this harness cannot make the backend fail");
        return;
    };
    let errors_before: u64 = health.errors().iter().map(|(_, n)| n).sum();
    match store.apply(vec![put_direct(2, &["bob"], 2)]).await {
        Err(StoreError::Unavailable(why)) => assert!(!why.is_empty()),
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
    let fault = health.fault().expect("degraded while writes fail");
    assert!(!fault.reason.is_empty());
    let errors: u64 = health.errors().iter().map(|(_, n)| n).sum();
    assert_eq!(errors, errors_before + 1, "the failed write is counted");
    heal();
    apply(&store, vec![put_direct(3, &["bob"], 3)]).await;
    assert!(!health.is_degraded(), "the next commit ends the fault");
    let store = reopen(h, store).await;
    let snap = load(&store).await;
    let sessions: Vec<&str> = snap.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(sessions, ["bob"]);
    assert_eq!(
        unread_of(&snap, "bob"),
        vec![(mid(3), DeliveryState::Queued)]
    );
}

/// Proves a single submit whose last change fails leaves nothing of its other changes behind.
pub async fn failing_submit_rolls_back_all_its_changes<H: Harness>(h: &H) {
    let store = h.open().await;
    apply(&store, vec![put_direct(1, &["bob"], 1)]).await;
    let result = store
        .apply(vec![
            Change::PutSession(session("ghost", 2)),
            Change::PutRoom(Room {
                name: "ghost-room".into(),
                created_by: "ghost".into(),
                created_at: 2,
            }),
            advance(1, "bob", DeliveryState::Acked, 2),
            put_direct(1, &["carol"], 2), // duplicate message id
        ])
        .await;
    match result {
        Err(StoreError::Write(e)) => {
            let cause = e.to_lowercase();
            assert!(
                ["unique", "primary", "duplicate"]
                    .iter()
                    .any(|word| cause.contains(word)),
                "error names the cause: {e}"
            )
        }
        other => panic!("expected a write error, got {other:?}"),
    }
    let snap = load(&store).await;
    assert!(snap.sessions.is_empty());
    assert!(snap.rooms.is_empty());
    assert_eq!(
        unread_of(&snap, "bob"),
        vec![(mid(1), DeliveryState::Queued)],
        "the advance was rolled back"
    );
    assert!(unread_of(&snap, "carol").is_empty());
    assert_eq!(
        store.message(&mid(1)).await.unwrap().unwrap().sent_at,
        1,
        "the original message stands"
    );

    // The store keeps going after a failure.
    apply(&store, vec![Change::PutSession(session("alive", 3))]).await;
    assert_eq!(load(&store).await.sessions, vec![session("alive", 3)]);
}

/// Proves a failing submit fails alone among concurrent ones (inside one
/// group-commit batch, where the backend can hold writes): its neighbours
/// commit, none of its changes do.
pub async fn failing_submit_fails_alone_among_concurrent_ones<H: Harness>(h: &H) {
    let store = h.open().await;
    apply(&store, vec![put_direct(1, &["bob"], 1)]).await;
    let store = Arc::new(store);

    // Hold the backend's writes so that it stalls on a first write while
    // every other request queues up behind it; when the hold goes, a
    // batching backend drains them all into one transaction.
    let hold = h.hold_writes();
    store.apply_later(vec![Change::PutSession(session("first", 0))]);
    if hold.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    const N: u32 = 200;
    const BAD: u32 = 77;
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let n = 1_000 + i;
            let changes = if i == BAD {
                vec![
                    Change::PutSession(session("bad", n as Millis)),
                    put_direct(n, &["bob"], n as Millis),
                    put_direct(1, &["carol"], n as Millis), // duplicate message id
                ]
            } else {
                vec![
                    Change::PutSession(session(&format!("s{i:03}"), n as Millis)),
                    put_direct(n, &["bob"], n as Millis),
                ]
            };
            (i, store.apply(changes).await)
        }));
    }
    if let Some(release) = hold {
        tokio::time::sleep(Duration::from_millis(100)).await;
        release();
    }

    for task in tasks {
        let (i, result) = task.await.unwrap();
        if i == BAD {
            assert!(
                matches!(result, Err(StoreError::Write(_))),
                "submit {i} should fail: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "submit {i} should succeed: {result:?}");
        }
    }

    let store = reopen(h, Arc::into_inner(store).expect("sole owner")).await;
    let snap = load(&store).await;
    let ids: HashSet<&str> = snap.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), N as usize, "first + {} good sessions", N - 1);
    assert!(ids.contains("first"));
    assert!(
        !ids.contains("bad"),
        "the failing submit's first change was rolled back"
    );
    for i in (0..N).filter(|&i| i != BAD) {
        assert!(
            ids.contains(format!("s{i:03}").as_str()),
            "session of submit {i} stored"
        );
    }
    let bob: Vec<String> = unread_of(&snap, "bob")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut expected: Vec<String> = std::iter::once(1)
        .chain((0..N).filter(|&i| i != BAD).map(|i| 1_000 + i))
        .map(mid)
        .collect();
    expected.sort();
    assert_eq!(
        bob, expected,
        "every good submit's message, none of the failing submit's"
    );
    assert_eq!(store.message(&mid(1_000 + BAD)).await.unwrap(), None);
    assert!(unread_of(&snap, "carol").is_empty());
}

/// Proves group commit under concurrency: 2,000 concurrent applies all succeed and all 2,000 messages load back once each after reopen.
pub async fn two_thousand_concurrent_applies_all_commit<H: Harness>(h: &H) {
    let store = h.open().await;
    let store = Arc::new(store);
    const N: u32 = 2_000;
    let tasks: Vec<_> = (0..N)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply(vec![put_direct(n, &["bob"], n as Millis)])
                    .await
            })
        })
        .collect();
    for (n, task) in tasks.into_iter().enumerate() {
        if let Err(e) = task.await.unwrap() {
            panic!("apply {n} failed: {e}");
        }
    }

    let store = reopen(h, Arc::into_inner(store).expect("sole owner")).await;
    let snap = load(&store).await;
    assert_eq!(snap.unread.len(), N as usize);
    let ids: Vec<&str> = snap.unread.iter().map(|(m, _)| m.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), N as usize, "no message twice");
    let expected: Vec<String> = (0..N).map(mid).collect();
    assert_eq!(ids, expected, "all of them, oldest first");
    assert!(snap
        .unread
        .iter()
        .all(|(m, d)| d.message_id == m.id && d.recipient == "bob"));
    assert_eq!(
        inbox(&store, query("bob", false, usize::MAX)).await.len(),
        N as usize
    );
}

/// Proves writes take effect in the order they were submitted, not the
/// order their commits are awaited in: a later submit builds on an earlier
/// one, a failing one in between changes nothing, and a prune comes after
/// the writes queued before it.
pub async fn submits_take_effect_in_call_order<H: Harness>(h: &H) {
    use DeliveryState::*;
    let store = h.open().await;
    let mut s = session("alice", 1_000);
    s.status = "one".into();
    let first = store.submit(vec![Change::PutSession(s.clone())]);
    let sent = store.submit(vec![put_direct(1, &["bob"], 10)]);
    let surfaced = store.submit(vec![advance(1, "bob", Surfaced, 20)]);
    let mut bad = s.clone();
    bad.status = "refused".into();
    let refused = store.submit(vec![
        Change::PutSession(bad),
        put_direct(1, &["carol"], 30), // duplicate message id
    ]);
    s.status = "two".into();
    let second = store.submit(vec![Change::PutSession(s.clone())]);

    // Newest first: waiting is not what orders them.
    second.await.expect("second");
    assert!(
        matches!(refused.await, Err(StoreError::Write(_))),
        "the duplicate is refused"
    );
    surfaced.await.expect("surfaced");
    sent.await.expect("sent");
    first.await.expect("first");

    assert_eq!(load(&store).await.sessions, vec![s], "the last put wins");
    assert_eq!(
        store.deliveries(&mid(1)).await.unwrap(),
        vec![delivery(&mid(1), "bob", Surfaced, 20)],
        "the advance came after the message it advances"
    );

    store.apply_later(vec![put_direct(2, &["bob"], 5)]);
    assert_eq!(
        store.prune(100).await.expect("prune"),
        PruneReport {
            messages: 2,
            deliveries: 2,
            sessions: 0
        },
        "the prune saw the write queued before it"
    );
    assert_eq!(store.message(&mid(2)).await.unwrap(), None);
}

/// Proves deliveries(id) lists every recipient's record of one message, by
/// recipient and in whatever state, and nothing for an unknown id.
pub async fn deliveries_of_a_message_by_recipient<H: Harness>(h: &H) {
    use DeliveryState::*;
    let store = h.open().await;
    apply(
        &store,
        vec![
            put_direct(1, &["carol", "bob", "dave"], 10),
            put_direct(2, &["bob"], 20),
        ],
    )
    .await;
    apply(
        &store,
        vec![advance(1, "bob", Acked, 30), advance(1, "dave", Pushed, 31)],
    )
    .await;
    assert_eq!(
        store.deliveries(&mid(1)).await.unwrap(),
        vec![
            delivery(&mid(1), "bob", Acked, 30),
            delivery(&mid(1), "carol", Queued, 10),
            delivery(&mid(1), "dave", Pushed, 31),
        ]
    );
    assert_eq!(
        store.deliveries(&mid(2)).await.unwrap(),
        vec![delivery(&mid(2), "bob", Queued, 20)]
    );
    assert!(store.deliveries(&mid(3)).await.unwrap().is_empty());
}

/// Proves apply_later changes are applied in FIFO order and are durable once a later apply returns.
pub async fn apply_later_is_durable_after_next_apply<H: Harness>(h: &H) {
    let store = h.open().await;
    let mut s = session("alice", 1_000);
    s.status = "one".into();
    store.apply_later(vec![Change::PutSession(s.clone())]);
    s.status = "two".into();
    store.apply_later(vec![Change::PutSession(s.clone())]);
    store.apply_later(vec![Change::TouchSession {
        id: "alice".into(),
        last_seen_at: 5_000,
    }]);
    // A failing background write is only logged and does not disturb the rest.
    store.apply_later(vec![put_direct(1, &["bob"], 1), put_direct(1, &["bob"], 1)]);
    apply(
        &store,
        vec![Change::PutRoom(Room {
            name: "dev".into(),
            created_by: "alice".into(),
            created_at: 1,
        })],
    )
    .await;

    let mut expected = s.clone();
    expected.last_seen_at = 5_000;
    let snap = load(&store).await;
    assert_eq!(
        snap.sessions,
        vec![expected.clone()],
        "later changes applied in the order queued"
    );
    assert!(
        snap.unread.is_empty(),
        "the failing background write left nothing"
    );

    let store = reopen(h, store).await;
    let snap = load(&store).await;
    assert_eq!(snap.sessions, vec![expected]);
    assert_eq!(snap.rooms.len(), 1);
}

/// Proves TouchSession never moves last_seen_at backwards and never creates a session.
pub async fn touch_session_never_moves_backwards<H: Harness>(h: &H) {
    let store = h.open().await;
    let mut s = session("alice", 1_000);
    s.last_seen_at = 2_000;
    apply(&store, vec![Change::PutSession(s.clone())]).await;
    let touch = |at| Change::TouchSession {
        id: "alice".into(),
        last_seen_at: at,
    };
    let seen = |snap: Snapshot| snap.sessions[0].last_seen_at;

    apply(&store, vec![touch(1_500)]).await;
    assert_eq!(seen(load(&store).await), 2_000, "older touch ignored");
    apply(&store, vec![touch(3_000), touch(2_500)]).await;
    assert_eq!(
        seen(load(&store).await),
        3_000,
        "newest wins within a batch too"
    );
    store.apply_later(vec![touch(2_000)]);
    apply(&store, vec![touch(3_000)]).await;
    assert_eq!(seen(load(&store).await), 3_000);
    apply(&store, vec![touch(4_000)]).await;
    assert_eq!(seen(load(&store).await), 4_000);

    apply(
        &store,
        vec![Change::TouchSession {
            id: "nobody".into(),
            last_seen_at: 9_000,
        }],
    )
    .await;
    let snap = load(&store).await;
    assert_eq!(
        snap.sessions.len(),
        1,
        "touching an unknown session creates nothing"
    );
    s.last_seen_at = 4_000;
    assert_eq!(snap.sessions, vec![s], "only last_seen_at changed");
}

/// Proves prune deletes old messages with their deliveries, keeps newer ones, forgets long-gone sessions with their memberships, and counts right.
pub async fn prune_deletes_old_history_and_gone_sessions<H: Harness>(h: &H) {
    let store = h.open().await;
    let mut gone = session("gone", 10);
    gone.left_at = Some(100);
    let mut recent = session("recent", 20);
    recent.left_at = Some(300);
    let mut edge = session("edge", 30);
    edge.left_at = Some(250); // exactly at the cutoff: kept
    let here = session("here", 40);
    let join = |s: &str, at| Membership {
        room: "dev".into(),
        session_id: s.into(),
        joined_at: at,
    };
    apply(
        &store,
        vec![
            Change::PutSession(gone.clone()),
            Change::PutSession(recent.clone()),
            Change::PutSession(edge.clone()),
            Change::PutSession(here.clone()),
            Change::PutRoom(Room {
                name: "dev".into(),
                created_by: "gone".into(),
                created_at: 5,
            }),
            Change::JoinRoom(join("gone", 50)),
            Change::JoinRoom(join("recent", 51)),
            Change::JoinRoom(join("here", 52)),
            put_direct(1, &["here", "recent"], 100),
            put_direct(2, &["here"], 200),
            put_direct(3, &["here"], 250), // exactly at the cutoff: kept
            put_direct(4, &["here", "gone"], 300),
        ],
    )
    .await;
    // Read mail is pruned too, not just unread.
    apply(&store, vec![advance(2, "here", DeliveryState::Acked, 210)]).await;

    let report = store.prune(250).await.expect("prune");
    assert_eq!(
        report,
        PruneReport {
            messages: 2,
            deliveries: 3,
            sessions: 1
        }
    );

    assert_eq!(store.message(&mid(1)).await.unwrap(), None);
    assert_eq!(store.message(&mid(2)).await.unwrap(), None);
    assert!(store.message(&mid(3)).await.unwrap().is_some());
    assert!(store.message(&mid(4)).await.unwrap().is_some());
    assert_eq!(
        ids_states(&inbox(&store, query("here", true, 100)).await).len(),
        2
    );
    assert!(inbox(&store, query("recent", true, 100)).await.is_empty());

    let store = reopen(h, store).await;
    let snap = load(&store).await;
    let ids: Vec<&str> = snap.sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec!["recent", "edge", "here"]);
    assert_eq!(snap.memberships, vec![join("recent", 51), join("here", 52)]);
    assert_eq!(snap.rooms.len(), 1, "rooms are not pruned");
    let unread: Vec<(String, String)> = snap
        .unread
        .iter()
        .map(|(m, d)| (m.id.clone(), d.recipient.clone()))
        .collect();
    assert_eq!(
        unread,
        vec![
            (mid(3), "here".into()),
            (mid(4), "gone".into()),
            (mid(4), "here".into())
        ],
        "a forgotten session's newer mail waits until its message is pruned"
    );

    // Pruning again finds nothing; pruning everything empties history.
    assert_eq!(store.prune(250).await.unwrap(), PruneReport::default());
    assert_eq!(
        store.prune(10_000).await.unwrap(),
        PruneReport {
            messages: 2,
            deliveries: 3,
            sessions: 2
        }
    );
    let snap = load(&store).await;
    assert!(snap.unread.is_empty());
    assert_eq!(snap.sessions, vec![here]);
}

/// Proves reopening a store, again and again, loses nothing.
pub async fn reopen_keeps_data<H: Harness>(h: &H) {
    let store = h.open().await;
    apply(&store, vec![Change::PutSession(session("alice", 1))]).await;
    let store = reopen(h, store).await;
    let store = reopen(h, store).await;
    assert_eq!(load(&store).await.sessions, vec![session("alice", 1)]);
}

/// Proves message(id) returns the stored message with every field, or None for an unknown id.
pub async fn message_by_id<H: Harness>(h: &H) {
    let store = h.open().await;
    let mut to_room = message(1, "alice", Target::Room("project:muster".into()), 10);
    to_room.body = "multi\nline — ünïcode ✓".into();
    let mut to_op = message(2, "op:dana", Target::Operator("dana".into()), 20);
    to_op.reply_to = Some(mid(1));
    let to_session = message(3, "bob", Target::Session("alice".into()), 30);
    apply(
        &store,
        vec![
            Change::PutMessage {
                message: to_room.clone(),
                deliveries: vec![],
            },
            Change::PutMessage {
                message: to_op.clone(),
                deliveries: vec![],
            },
            Change::PutMessage {
                message: to_session.clone(),
                deliveries: vec![],
            },
        ],
    )
    .await;
    assert_eq!(store.message(&mid(1)).await.unwrap(), Some(to_room));
    assert_eq!(store.message(&mid(2)).await.unwrap(), Some(to_op));
    assert_eq!(store.message(&mid(3)).await.unwrap(), Some(to_session));
    assert_eq!(store.message(&mid(4)).await.unwrap(), None);
    assert_eq!(store.message("").await.unwrap(), None);
}

/// Proves load() is one consistent snapshot while writes land: no membership ever appears without its session.
pub async fn load_is_a_consistent_snapshot_under_writes<H: Harness>(h: &H) {
    let store = Arc::new(h.open().await);
    apply(
        &*store,
        vec![Change::PutRoom(Room {
            name: "dev".into(),
            created_by: "x".into(),
            created_at: 0,
        })],
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("s{n}");
                store
                    .apply(vec![
                        Change::PutSession(session(&id, n as Millis)),
                        Change::JoinRoom(Membership {
                            room: "dev".into(),
                            session_id: id.clone(),
                            joined_at: 0,
                        }),
                    ])
                    .await
                    .unwrap();
                store
                    .apply(vec![Change::ForgetSession { id }])
                    .await
                    .unwrap();
                n += 1;
            }
        })
    };
    for _ in 0..300 {
        let snap = load(&*store).await;
        let sessions: HashSet<&str> = snap.sessions.iter().map(|s| s.id.as_str()).collect();
        for m in &snap.memberships {
            assert!(
                sessions.contains(m.session_id.as_str()),
                "torn snapshot: {m:?} without its session"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
}

/// Proves reservations round-trip, replace by id, and are deleted one by one
/// or all of a session's at once, across a reopen.
/// Every message keeps how its sender was authenticated, through every
/// read: by id, in an inbox, unread at load, in a thread, after a reopen.
pub async fn how_a_sender_was_authenticated_is_kept<H: Harness>(h: &H) {
    use muster_core::SentVia;
    let all = [
        SentVia::Unrecorded,
        SentVia::Link,
        SentVia::Mcp,
        SentVia::SessionShell,
        SentVia::Person,
        SentVia::OnBehalf,
        SentVia::Token,
    ];
    {
        let store = h.open().await;
        for (n, via) in all.iter().enumerate() {
            let mut m = message(n as u32, "alice", Target::Session("bob".into()), 1);
            m.via = *via;
            let d = delivery(&m.id, "bob", DeliveryState::Queued, 1);
            store
                .apply(vec![Change::PutMessage {
                    message: m,
                    deliveries: vec![d],
                }])
                .await
                .unwrap();
        }
    }
    let store = h.open().await;
    let loaded: Vec<SentVia> = store
        .load()
        .await
        .unwrap()
        .unread
        .iter()
        .map(|(m, _)| m.via)
        .collect();
    assert_eq!(loaded, all);
    let inbox = store
        .inbox(InboxQuery {
            recipient: "bob".into(),
            include_read: true,
            limit: usize::MAX,
        })
        .await
        .unwrap();
    assert_eq!(inbox.iter().map(|e| e.message.via).collect::<Vec<_>>(), all);
    for (n, via) in all.iter().enumerate() {
        let m = store.message(&mid(n as u32)).await.unwrap().unwrap();
        assert_eq!(m.via, *via);
        let thread = store.thread(&mid(n as u32), "bob").await.unwrap();
        assert_eq!(thread.iter().map(|m| m.via).collect::<Vec<_>>(), [*via]);
    }
}

/// Proves tokens are kept as made (hash, scope, maker), a revoke sets
/// `revoked_at` once and is kept through a reopen, a second live token of
/// one name fails its whole submit while a revoked name may be made again,
/// and a session's `owner` is stored with it.
pub async fn tokens_and_session_owners_round_trip<H: Harness>(h: &H) {
    use muster_core::token::{hash_secret, Scope, TokenRecord};
    let token = |id: &str, name: &str, scope: Scope, at: Millis| TokenRecord {
        id: id.into(),
        name: name.into(),
        scope,
        hash: hash_secret(&format!("secret-of-{id}")),
        created_at: at,
        created_by: "local".into(),
        revoked_at: None,
    };
    let alice = token("t1", "alice", Scope::Agent, 10);
    let ops = token("t2", "ops", Scope::Operator, 11);
    let mut owned = session("s1", 5);
    owned.owner = Some("t1".into());
    let store = h.open().await;
    apply(
        &store,
        vec![
            Change::PutToken(alice.clone()),
            Change::PutToken(ops.clone()),
            Change::PutSession(owned.clone()),
        ],
    )
    .await;
    let twin = token("t3", "alice", Scope::Admin, 12);
    let refused = store
        .apply(vec![
            Change::PutSession(session("s2", 6)),
            Change::PutToken(twin),
        ])
        .await;
    assert!(refused.is_err(), "a second live token named alice");
    apply(
        &store,
        vec![Change::RevokeToken {
            id: "t1".into(),
            at: 20,
        }],
    )
    .await;
    apply(
        &store,
        vec![Change::RevokeToken {
            id: "t1".into(),
            at: 30,
        }],
    )
    .await;
    let again = token("t4", "alice", Scope::Agent, 40);
    apply(&store, vec![Change::PutToken(again.clone())]).await;
    let store = reopen(h, store).await;
    let loaded = load(&store).await;
    let revoked = TokenRecord {
        revoked_at: Some(20),
        ..alice
    };
    assert_eq!(loaded.tokens, vec![revoked, ops, again]);
    assert_eq!(
        loaded.sessions,
        vec![owned],
        "s2 went with the refused submit"
    );
}

/// `ReservationsUnchangedSince` guards against other daemons only: a
/// store's own reservation changes never fail it, whatever the position
/// named, and the guarded changes apply.
pub async fn a_reservation_guard_passes_when_no_other_daemon_wrote<H: Harness>(h: &H) {
    let r = |id: &str| muster_core::Reservation {
        id: id.into(),
        session_id: "s1".into(),
        root: "/repo".into(),
        pattern: format!("src/{id}.rs"),
        exclusive: true,
        reason: String::new(),
        created_at: 1,
        expires_at: 100,
    };
    let store = h.open().await;
    for id in ["a", "b"] {
        store
            .apply(vec![
                Change::ReservationsUnchangedSince { seq: 0 },
                Change::PutReservation(r(id)),
            ])
            .await
            .unwrap();
    }
    let loaded = store.load().await.unwrap().reservations;
    assert_eq!(loaded, vec![r("a"), r("b")]);
}

pub async fn reservations_round_trip_and_delete<H: Harness>(h: &H) {
    let r = |id: &str, session: &str| muster_core::Reservation {
        id: id.into(),
        session_id: session.into(),
        root: "/repo".into(),
        pattern: format!("src/{id}.rs"),
        exclusive: true,
        reason: "refactor".into(),
        created_at: 1,
        expires_at: 100,
    };
    {
        let store = h.open().await;
        let mut changed = r("a", "s1");
        changed.expires_at = 200;
        store
            .apply(vec![
                Change::PutReservation(r("a", "s1")),
                Change::PutReservation(r("b", "s1")),
                Change::PutReservation(r("c", "s2")),
                Change::PutReservation(changed),
            ])
            .await
            .unwrap();
        store
            .apply(vec![Change::DeleteReservation { id: "b".into() }])
            .await
            .unwrap();
    }
    let store = h.open().await;
    let loaded = store.load().await.unwrap().reservations;
    assert_eq!(
        loaded
            .iter()
            .map(|r| (r.id.as_str(), r.expires_at))
            .collect::<Vec<_>>(),
        [("a", 200), ("c", 100)]
    );
    store
        .apply(vec![Change::DeleteReservationsOf {
            session_id: "s1".into(),
        }])
        .await
        .unwrap();
    let loaded = store.load().await.unwrap().reservations;
    assert_eq!(
        loaded.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
}

/// Proves a thread is found from any of its messages (root and all replies),
/// oldest first, and only as far as the reader sent or received them.
pub async fn thread_from_any_message_as_the_reader_sees_it<H: Harness>(h: &H) {
    let store = h.open().await;
    let msg = |id: &str, from: &str, to: &str, reply_to: Option<&str>| Change::PutMessage {
        message: Message {
            id: id.into(),
            from: from.into(),
            from_nickname: from.into(),
            to: Target::Session(to.into()),
            reply_to: reply_to.map(str::to_string),
            body: id.into(),
            sent_at: 1,
            via: Default::default(),
        },
        deliveries: vec![Delivery {
            message_id: id.into(),
            recipient: to.into(),
            state: DeliveryState::Queued,
            updated_at: 1,
        }],
    };
    store
        .apply(vec![
            msg("01A", "alice", "bob", None),
            msg("01B", "bob", "alice", Some("01A")),
            msg("01C", "alice", "bob", Some("01B")),
            msg("01D", "alice", "carol", Some("01A")),
            msg("01E", "alice", "bob", None),
        ])
        .await
        .unwrap();
    let ids = |v: Vec<Message>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.thread("01C", "bob").await.unwrap()),
        ["01A", "01B", "01C"]
    );
    assert_eq!(
        ids(store.thread("01A", "alice").await.unwrap()),
        ["01A", "01B", "01C", "01D"]
    );
    assert_eq!(ids(store.thread("01D", "carol").await.unwrap()), ["01D"]);
    assert!(store.thread("nope", "bob").await.unwrap().is_empty());
}

// ------------------------------------------------------- history and search

/// A message `n` from `from` to `to`, with `body`, delivered (queued) to `recipients`.
fn put_message(n: u32, from: &str, to: Target, body: &str, recipients: &[&str]) -> Change {
    let mut m = message(n, from, to, Millis::from(n));
    m.body = body.to_string();
    let deliveries = recipients
        .iter()
        .map(|r| delivery(&m.id, r, DeliveryState::Queued, m.sent_at))
        .collect();
    Change::PutMessage {
        message: m,
        deliveries,
    }
}

fn direct_to(id: &str) -> Target {
    Target::Session(id.to_string())
}

/// The message numbers of a listing, in its order.
fn numbers(messages: &[Message]) -> Vec<u32> {
    messages
        .iter()
        .map(|m| {
            m.id.trim_start_matches("01JMSG")
                .parse()
                .expect("an id from mid()")
        })
        .collect()
}

fn within(reader: Option<&str>, limit: usize) -> HistoryQuery {
    HistoryQuery {
        reader: reader.map(str::to_string),
        to: None,
        before: None,
        limit,
    }
}

async fn search_for(store: &impl Store, text: &str, within: HistoryQuery) -> Vec<u32> {
    let query = SearchQuery {
        text: text.to_string(),
        within,
    };
    match store.search(query).await {
        Ok(found) => numbers(&found),
        Err(e) => panic!("search for {text:?} failed: {e}"),
    }
}

async fn history_of(store: &impl Store, q: HistoryQuery) -> Vec<u32> {
    numbers(&store.history(q).await.expect("history"))
}

/// Five messages between alice, bob, carol and dave, one of them to room dev.
async fn searchable(store: &impl Store) {
    let changes = vec![
        put_message(
            1,
            "alice",
            direct_to("bob"),
            "The schema migration for the store is done",
            &["bob"],
        ),
        put_message(
            2,
            "alice",
            direct_to("bob"),
            "Please review crates/store-sqlite/src/lib.rs",
            &["bob"],
        ),
        put_message(3, "carol", direct_to("dave"), "Lunch at noon?", &["dave"]),
        put_message(
            4,
            "bob",
            direct_to("alice"),
            "MIGRATION blocked: waiting on review",
            &["alice"],
        ),
        put_message(
            5,
            "alice",
            Target::Room("dev".into()),
            "deploying the schema now",
            &["bob", "carol"],
        ),
    ];
    apply(store, changes).await;
}

/// Proves search finds a message by its words, newest first: case aside,
/// all words in any order, a word by its start, words inside paths; and
/// no message without them (nor one that holds a word only inside another).
pub async fn search_finds_messages_by_their_words<H: Harness>(h: &H) {
    let store = h.open().await;
    searchable(&store).await;
    let all = || within(None, 100);
    for (text, want) in [
        ("migration", vec![4, 1]),
        ("Migration", vec![4, 1]),
        ("store schema", vec![1]),
        ("schema store", vec![1]),
        ("migr", vec![4, 1]),
        ("schema", vec![5, 1]),
        ("sqlite", vec![2]),
        ("lib rs", vec![2]),
        ("crates/store-sqlite", vec![2]),
        ("lunch", vec![3]),
        ("lunch schema", vec![]),
        ("ation", vec![]),
        ("nowhere", vec![]),
    ] {
        assert_eq!(search_for(&store, text, all()).await, want, "{text:?}");
    }
    // The index follows what is stored: a message after the first search
    // is found, a pruned one is not.
    apply(
        &store,
        vec![put_message(
            6,
            "dave",
            direct_to("carol"),
            "lunch moved",
            &["carol"],
        )],
    )
    .await;
    assert_eq!(search_for(&store, "lunch", all()).await, [6, 3]);
    store.prune(4).await.expect("prune");
    assert_eq!(search_for(&store, "lunch", all()).await, [6]);
    assert_eq!(search_for(&store, "migration", all()).await, [4]);
    // A refused submit leaves no word of its messages behind.
    let refused = store
        .apply(vec![
            put_message(7, "alice", direct_to("bob"), "zebra crossing", &["bob"]),
            put_message(
                6,
                "alice",
                direct_to("bob"),
                "zebra again, a stored id",
                &["bob"],
            ),
        ])
        .await;
    assert!(refused.is_err(), "message 6 is already stored");
    assert!(search_for(&store, "zebra", all()).await.is_empty());
    let store = reopen(h, store).await;
    assert_eq!(search_for(&store, "schema", all()).await, [5]);
}

/// Proves a search as a reader finds only what that reader sent or has a
/// delivery for (room mail included), and one with a target only mail to it.
pub async fn search_respects_the_reader_and_the_target<H: Harness>(h: &H) {
    let store = h.open().await;
    searchable(&store).await;
    for (reader, text, want) in [
        ("carol", "schema", vec![5]),
        ("alice", "schema", vec![5, 1]),
        ("bob", "schema", vec![5, 1]),
        ("dave", "schema", vec![]),
        ("alice", "review", vec![4, 2]),
        ("dave", "lunch", vec![3]),
        ("bob", "lunch", vec![]),
        ("op:erin", "schema", vec![]),
    ] {
        assert_eq!(
            search_for(&store, text, within(Some(reader), 100)).await,
            want,
            "{text:?} as {reader}"
        );
    }
    let mut in_dev = within(None, 100);
    in_dev.to = Some(Target::Room("dev".into()));
    assert_eq!(search_for(&store, "schema", in_dev).await, [5]);
    let mut to_bob = within(Some("alice"), 100);
    to_bob.to = Some(direct_to("bob"));
    assert_eq!(search_for(&store, "schema", to_bob).await, [1]);
}

/// Proves no search text is read as query syntax: FTS5's and tsquery's
/// operators, quotes, stars, column filters and SQL are separators, never
/// an error; a text of only those matches nothing, and the words among
/// them match as plain words.
pub async fn search_reads_no_text_as_query_syntax<H: Harness>(h: &H) {
    let store = h.open().await;
    searchable(&store).await;
    apply(
        &store,
        vec![put_message(
            6,
            "alice",
            direct_to("bob"),
            r#"quotes "inside" it's a NEAR(x y) body:z * & | ! <-> :* \ test"#,
            &["bob"],
        )],
    )
    .await;
    let all = || within(None, 100);
    for text in [
        "\"",
        "*",
        "AND(",
        "(",
        ")",
        "\"\"",
        "'",
        "''",
        ":*",
        "&",
        "|",
        "!",
        "<->",
        "\\",
        "^",
        "-",
        "+",
        "NOT",
        "NEAR(",
        "body:",
        "{",
        "}",
        "\u{0}",
        "' OR 1=1 --",
        "\"; DROP TABLE messages; --",
    ] {
        let query = SearchQuery {
            text: text.to_string(),
            within: all(),
        };
        if let Err(e) = store.search(query).await {
            panic!("search for {text:?} failed: {e}");
        }
    }
    for (text, want) in [
        ("\"review\"", vec![4, 2]),
        ("review*", vec![4, 2]),
        ("review\"", vec![4, 2]),
        ("review OR lunch", vec![]),
        ("NEAR(x y)", vec![6]),
        ("body:z", vec![6]),
        ("\"inside\" it's", vec![6]),
        ("-lunch", vec![3]),
        ("\"*():^-+'", vec![]),
        ("schema AND(", vec![]),
    ] {
        assert_eq!(search_for(&store, text, all()).await, want, "{text:?}");
    }
    assert_eq!(
        history_of(&store, within(None, 100)).await,
        [6, 5, 4, 3, 2, 1]
    );
}

/// Proves search results page by limit and cursor, newest first: each
/// page starts below the last one's final id, and together the pages hold
/// every match once.
pub async fn search_pages_by_limit_and_cursor<H: Harness>(h: &H) {
    let store = h.open().await;
    let changes = (1..=25)
        .map(|n| {
            let (to, body) = match n % 5 {
                0 => ("carol", format!("pong {n}")),
                _ => ("bob", format!("ping number {n}")),
            };
            put_message(n, "alice", direct_to(to), &body, &[to])
        })
        .collect();
    apply(&store, changes).await;
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let mut page = within(None, 7);
        page.before = before.clone();
        let query = SearchQuery {
            text: "ping".into(),
            within: page,
        };
        let found = store.search(query).await.expect("search");
        assert!(found.len() <= 7);
        let Some(last) = found.last() else { break };
        before = Some(last.id.clone());
        seen.extend(numbers(&found));
    }
    let want: Vec<u32> = (1..=25).rev().filter(|n| n % 5 != 0).collect();
    assert_eq!(seen, want);
    let mut page = within(Some("carol"), 2);
    assert_eq!(search_for(&store, "pong", page.clone()).await, [25, 20]);
    page.before = Some(mid(20));
    assert_eq!(search_for(&store, "pong", page.clone()).await, [15, 10]);
    page.before = Some(mid(1));
    assert!(search_for(&store, "pong", page).await.is_empty());
    assert!(search_for(&store, "ping", within(None, 0)).await.is_empty());
}

/// Proves history pages newest first without gaps or repeats, whole and
/// as a reader sees it (sent, or delivered to it) or for one target; a
/// cursor need not be a stored id.
pub async fn history_pages_newest_first_without_gaps_or_repeats<H: Harness>(h: &H) {
    let store = h.open().await;
    let changes = (1..=30)
        .map(|n| match n % 3 {
            0 => put_message(n, "alice", direct_to("bob"), "to bob", &["bob"]),
            1 => put_message(
                n,
                "bob",
                Target::Operator("dana".into()),
                "to dana",
                &["op:dana"],
            ),
            _ => put_message(
                n,
                "carol",
                Target::Room("dev".into()),
                "to dev",
                &["alice", "bob"],
            ),
        })
        .collect();
    apply(&store, changes).await;

    let pages = |q: HistoryQuery| {
        let store = &store;
        async move {
            let mut all = Vec::new();
            let mut q = q;
            loop {
                let page = store.history(q.clone()).await.expect("history");
                assert!(page.len() <= q.limit);
                let Some(last) = page.last() else { break };
                q.before = Some(last.id.clone());
                all.extend(numbers(&page));
            }
            all
        }
    };
    let everything: Vec<u32> = (1..=30).rev().collect();
    assert_eq!(pages(within(None, 4)).await, everything);
    assert_eq!(
        history_of(&store, within(None, usize::MAX)).await,
        everything
    );
    assert_eq!(
        pages(within(Some("bob"), 4)).await,
        everything,
        "bob is in every one"
    );
    let of = |keep: fn(u32) -> bool| (1..=30).rev().filter(|n| keep(*n)).collect::<Vec<u32>>();
    assert_eq!(pages(within(Some("alice"), 3)).await, of(|n| n % 3 != 1));
    assert_eq!(pages(within(Some("op:dana"), 3)).await, of(|n| n % 3 == 1));
    assert_eq!(pages(within(Some("carol"), 5)).await, of(|n| n % 3 == 2));
    assert!(pages(within(Some("erin"), 5)).await.is_empty());

    for (to, keep) in [
        (direct_to("bob"), (|n| n % 3 == 0) as fn(u32) -> bool),
        (Target::Operator("dana".into()), |n| n % 3 == 1),
        (Target::Room("dev".into()), |n| n % 3 == 2),
    ] {
        let mut q = within(None, 3);
        q.to = Some(to.clone());
        assert_eq!(pages(q.clone()).await, of(keep), "to {to:?}");
        q.reader = Some("alice".into());
        let mine: Vec<u32> = of(keep).into_iter().filter(|n| n % 3 != 1).collect();
        assert_eq!(pages(q).await, mine, "to {to:?} as alice");
    }
    let mut q = within(None, 2);
    q.before = Some(format!("{}~", mid(10)));
    assert_eq!(history_of(&store, q).await, [10, 9], "a cursor between ids");
}

/// Proves words outside ASCII are words: accented and non-Latin letters
/// belong to their word (diacritics kept, so `resume` is not `résumé`),
/// their case folds, and punctuation outside ASCII separates words.
pub async fn search_knows_letters_beyond_ascii<H: Harness>(h: &H) {
    let store = h.open().await;
    apply(
        &store,
        vec![
            put_message(
                1,
                "alice",
                direct_to("bob"),
                "Café ÉCOLE naïve—résumé",
                &["bob"],
            ),
            put_message(
                2,
                "bob",
                direct_to("alice"),
                "日本語 テスト «Größe»",
                &["alice"],
            ),
        ],
    )
    .await;
    let all = || within(None, 100);
    for (text, want) in [
        ("café", vec![1]),
        ("CAFÉ", vec![1]),
        ("école", vec![1]),
        ("naïve résumé", vec![1]),
        ("resume", vec![]),
        ("caf", vec![1]),
        ("日本語", vec![2]),
        ("größe", vec![2]),
        ("GRÖSSE", vec![]),
    ] {
        assert_eq!(search_for(&store, text, all()).await, want, "{text:?}");
    }
}
