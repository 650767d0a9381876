//! Tests: a commit the store refuses leaves memory as the store has it.
//! A hub runs over a real SQLite store wrapped so a test can make every
//! write fail (as a full disk would: `StoreError::Unavailable`); after each
//! refused operation, memory is compared with what a daemon started on the
//! same store now would load, and the next operation is shown to be decided
//! on that (a refused claim blocks nobody, a refused release still blocks).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use muster_core::api::{
    RegisterRequest, ReleaseRequest, ReserveRequest, RoomRequest, UpdateSessionRequest,
};
use muster_core::{Delivery, Message, Millis};
use muster_store::{
    Change, Commit, HistoryQuery, InboxEntry, InboxQuery, PruneReport, SearchQuery, Snapshot,
    Store, StoreError,
};
use muster_store_sqlite::SqliteStore;

use crate::clock::{Clock, ManualClock};
use crate::hub::Hub;
use crate::Config;

/// A SQLite store whose writes fail while `failing` is set.
struct Faulty {
    inner: SqliteStore,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl Store for Faulty {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    fn submit(&self, changes: Vec<Change>) -> Commit {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(StoreError::Unavailable(
                    "database or disk is full (injected)".into(),
                ))
            });
        }
        self.inner.submit(changes)
    }
    fn apply_later(&self, changes: Vec<Change>) {
        if !self.failing.load(Ordering::SeqCst) {
            self.inner.apply_later(changes)
        }
    }
    async fn inbox(&self, query: InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        self.inner.inbox(query).await
    }
    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        self.inner.message(id).await
    }
    async fn deliveries(&self, message_id: &str) -> Result<Vec<Delivery>, StoreError> {
        self.inner.deliveries(message_id).await
    }
    async fn thread(&self, id: &str, reader: &str) -> Result<Vec<Message>, StoreError> {
        self.inner.thread(id, reader).await
    }
    async fn history(&self, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.inner.history(query).await
    }
    async fn search(&self, query: SearchQuery) -> Result<Vec<Message>, StoreError> {
        self.inner.search(query).await
    }
    async fn prune(&self, cutoff: Millis) -> Result<PruneReport, StoreError> {
        self.inner.prune(cutoff).await
    }
}

struct Fixture {
    hub: Arc<Hub>,
    store: Arc<Faulty>,
    work: tempfile::TempDir,
    _data: tempfile::TempDir,
}

const A: &str = "a0000000-0000-4000-8000-00000000000a";
const B: &str = "b0000000-0000-4000-8000-00000000000b";

impl Fixture {
    async fn new() -> Fixture {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let store = Arc::new(Faulty {
            inner: SqliteStore::open(data.path().join("muster.db")).unwrap(),
            failing: AtomicBool::new(false),
        });
        let mut config = Config::new("127.0.0.1:0", data.path());
        config.clock = Clock::Manual(ManualClock::new(1_796_083_200_000));
        let hub = Hub::load(config, store.clone(), "faulty".into())
            .await
            .unwrap();
        let f = Fixture {
            hub,
            store,
            work,
            _data: data,
        };
        for id in [A, B] {
            f.hub
                .register(RegisterRequest {
                    id: id.into(),
                    harness: Some("claude".into()),
                    cwd: Some(f.work.path().to_str().unwrap().into()),
                    ..RegisterRequest::default()
                })
                .await
                .unwrap();
        }
        f
    }

    fn fail(&self, on: bool) {
        self.store.failing.store(on, Ordering::SeqCst);
    }

    /// What a daemon started on the store now would load.
    async fn stored(&self) -> Snapshot {
        self.store.inner.load().await.unwrap()
    }

    async fn reserve(&self, who: &str, path: &str, ttl_s: u64) -> Result<(), String> {
        self.hub
            .reserve(ReserveRequest {
                as_: Some(who.into()),
                paths: vec![path.into()],
                exclusive: true,
                ttl_s: Some(ttl_s),
                reason: None,
            })
            .await
            .map(|_| ())
            .map_err(|e| e.message)
    }

    /// Reservations in memory as (holder, pattern, expiry), sorted.
    fn held(&self) -> Vec<(String, String, Millis)> {
        let mut v: Vec<_> = self
            .hub
            .lock()
            .files
            .all()
            .map(|r| (r.session_id.clone(), r.pattern.clone(), r.expires_at))
            .collect();
        v.sort();
        v
    }

    async fn held_in_store(&self) -> Vec<(String, String, Millis)> {
        let mut v: Vec<_> = self
            .stored()
            .await
            .reservations
            .into_iter()
            .map(|r| (r.session_id, r.pattern, r.expires_at))
            .collect();
        v.sort();
        v
    }
}

// Proves a refused reservation is taken back: it blocks no one in memory
// (another session is granted the same file at once), a refused renewal
// keeps the stored expiry, and memory equals the store after each.
#[tokio::test]
async fn a_refused_reservation_blocks_no_one_and_a_refused_renewal_keeps_the_old_expiry() {
    let f = Fixture::new().await;
    f.fail(true);
    let refused = f.reserve(A, "src/lib.rs", 600).await.unwrap_err();
    assert!(refused.contains("disk is full"), "{refused}");
    assert_eq!(f.held(), vec![]);
    assert_eq!(f.held_in_store().await, vec![]);
    f.fail(false);
    f.reserve(B, "src/lib.rs", 600)
        .await
        .expect("nothing holds it: B is granted it");
    let granted = f.held();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].0, B);

    // B's renewal for longer is refused: the claim keeps its stored expiry.
    f.fail(true);
    f.reserve(B, "src/lib.rs", 3_600).await.unwrap_err();
    assert_eq!(f.held(), granted);
    assert_eq!(f.held_in_store().await, granted);
}

// Proves a refused release is taken back: the claim is still held in
// memory, as in the store, and still refuses another session.
#[tokio::test]
async fn a_refused_release_keeps_the_claim_in_memory_as_in_the_store() {
    let f = Fixture::new().await;
    f.reserve(A, "src/lib.rs", 600).await.unwrap();
    let held = f.held();
    f.fail(true);
    let release = f
        .hub
        .release(ReleaseRequest {
            as_: Some(A.into()),
            paths: vec![],
        })
        .await;
    assert!(release.is_err());
    assert_eq!(f.held(), held);
    assert_eq!(f.held_in_store().await, held);
    f.fail(false);
    let conflict = f.reserve(B, "src/lib.rs", 600).await.unwrap_err();
    assert!(conflict.contains("held exclusively"), "{conflict}");
}

// Proves a refused join leaves no room and no membership in memory (the
// room was new), a refused leave keeps the membership, and memory's rooms
// equal the store's after each.
#[tokio::test]
async fn a_refused_join_or_leave_is_taken_back() {
    let f = Fixture::new().await;
    let room = |who: &str| RoomRequest {
        as_: Some(who.into()),
        room: "crew".into(),
    };
    f.fail(true);
    assert!(f.hub.join(room(A)).await.is_err());
    assert!(f.hub.lock().rooms.get("crew").is_none(), "the room is gone");
    let stored = f.stored().await;
    assert!(stored.rooms.is_empty() && stored.memberships.is_empty());

    f.fail(false);
    f.hub.join(room(A)).await.unwrap();
    f.hub.join(room(B)).await.unwrap();
    f.fail(true);
    assert!(f.hub.leave(room(B)).await.is_err());
    let members: Vec<String> = f
        .hub
        .lock()
        .rooms
        .get("crew")
        .unwrap()
        .members
        .keys()
        .cloned()
        .collect();
    assert_eq!(members, [A, B]);
    let mut stored: Vec<String> = f
        .stored()
        .await
        .memberships
        .into_iter()
        .map(|m| m.session_id)
        .collect();
    stored.sort();
    assert_eq!(stored, members);
}

// Proves a refused status update is taken back: memory shows the stored
// status, and a later update is built on that.
#[tokio::test]
async fn a_refused_status_update_is_taken_back() {
    let f = Fixture::new().await;
    let update = |status: &str| UpdateSessionRequest {
        status: Some(status.into()),
        wake: None,
    };
    f.hub.update_session(A, update("testing")).await.unwrap();
    f.fail(true);
    assert!(f.hub.update_session(A, update("reviewing")).await.is_err());
    let status = |s: &Snapshot| {
        s.sessions
            .iter()
            .find(|s| s.id == A)
            .map(|s| s.status.clone())
    };
    assert_eq!(f.hub.lock().session(A).unwrap().status, "testing");
    assert_eq!(status(&f.stored().await).as_deref(), Some("testing"));
}

// Proves mail whose answer was written is handed over once even when the
// store refuses its mark: memory keeps it surfaced, so the next read offers
// nothing, and the mark is written once the store can write again, so a
// daemon started on the store then has nothing unread to offer either.
#[tokio::test]
async fn mail_handed_out_while_its_mark_is_refused_is_not_offered_again() {
    let f = Fixture::new().await;
    let sent = f
        .hub
        .send(muster_core::api::SendRequest {
            as_: Some(A.into()),
            to: B.into(),
            body: "read me once".into(),
            reply_to: None,
            as_from_env: false,
            via: muster_core::SentVia::default(),
        })
        .await
        .unwrap();
    let (inbox, surfacing) = f.hub.inbox(Some(B), false, 100).await.unwrap();
    assert_eq!(inbox.messages.len(), 1);
    let surfaced = f.hub.metrics.deliveries_surfaced.get();
    f.fail(true);
    surfacing.complete();
    let marked = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while f.hub.metrics.deliveries_surfaced.get() == surfaced {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        marked.is_ok(),
        "the written answer's mail was not kept surfaced"
    );
    let (again, _) = f.hub.inbox(Some(B), false, 100).await.unwrap();
    assert!(
        again.messages.is_empty(),
        "offered twice: {:?}",
        again.messages
    );
    let unread_in_store = |s: Snapshot| s.unread.iter().any(|(m, _)| m.id == sent.message.id);
    assert!(
        unread_in_store(f.stored().await),
        "the store refused the mark"
    );

    f.fail(false);
    let recorded = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while unread_in_store(f.stored().await) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(recorded.is_ok(), "the mark never reached the store");
}

// Proves a push is confirmed to its sender as soon as the shim wrote it,
// whatever becomes of the mark's write, and that the thread shows it
// pushed meanwhile: the store refuses the mark here (it says queued), the
// send still answers `pushed`, and the thread reads `pushed` from memory.
#[tokio::test]
async fn a_confirmed_push_answers_pushed_and_reads_pushed_before_its_mark_is_stored() {
    let f = Fixture::new().await;
    let (tx, mut frames) = tokio::sync::mpsc::channel(8);
    let linked = RegisterRequest {
        id: B.into(),
        harness: Some("claude".into()),
        cwd: Some(f.work.path().to_str().unwrap().into()),
        ..RegisterRequest::default()
    };
    f.hub.attach_link(linked.into(), true, 1, tx).await.unwrap();
    let hub = f.hub.clone();
    let sending = tokio::spawn(async move {
        hub.send(muster_core::api::SendRequest {
            as_: Some(A.into()),
            to: B.into(),
            body: "pushed before it is marked".into(),
            reply_to: None,
            as_from_env: false,
            via: muster_core::SentVia::default(),
        })
        .await
    });
    let pushed = frames.recv().await.expect("the push reaches the link");
    let muster_core::link::ServerFrame::Push { message } = *pushed.frame else {
        panic!("not a push: {:?}", pushed.frame);
    };
    f.fail(true);
    let marking = f.hub.on_delivered(B, vec![message.id.clone()]);
    let marking = marking.expect("the push was awaiting its confirmation");
    let sent = sending.await.unwrap().unwrap();
    assert_eq!(
        sent.state,
        muster_core::protocol::SendOutcome::Pushed,
        "{sent:?}"
    );
    marking.await;
    let stored = f.store.inner.deliveries(&message.id).await.unwrap();
    assert_eq!(
        stored.iter().map(|d| d.state).collect::<Vec<_>>(),
        [muster_core::DeliveryState::Queued],
        "the store refused the mark"
    );
    let thread = f.hub.thread(Some(A), &message.id).await.unwrap();
    let states: Vec<_> = thread.deliveries.iter().map(|d| d.state).collect();
    assert_eq!(states, [muster_core::DeliveryState::Pushed]);
}
