//! The store's conformance tests (`muster_store::conformance`) run against
//! [`SqliteStore`], each on a real database file in its own temporary
//! directory; then what only SQLite has: the file, WAL mode, the schema
//! version, refusing a newer schema, and SQLite's own error text.

use std::path::{Path, PathBuf};

use muster_core::{Delivery, DeliveryState, Message, Session, Target};
use muster_store::conformance::Harness;
use muster_store::{Change, Snapshot, Store, StoreError};
use muster_store_sqlite::{SqliteStore, SCHEMA_VERSION};
use tempfile::TempDir;

/// A database file in a fresh temporary directory, under a directory that
/// does not exist yet (opening creates it).
struct SqliteHarness {
    _dir: TempDir,
    path: PathBuf,
}

impl SqliteHarness {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("state").join("muster.db");
        SqliteHarness { _dir: dir, path }
    }
}

fn open_store(path: &Path) -> SqliteStore {
    match SqliteStore::open(path) {
        Ok(store) => store,
        Err(e) => panic!("opening {}: {e}", path.display()),
    }
}

impl Harness for SqliteHarness {
    type Store = SqliteStore;

    /// Dropping a store ends its writer thread once the queue is drained;
    /// a commit that resolved is already in the file.
    fn open(&self) -> impl std::future::Future<Output = SqliteStore> + Send {
        std::future::ready(open_store(&self.path))
    }

    /// Takes the database's write lock from another connection, so the
    /// writer stalls on its first job while every later one queues up; on
    /// release it drains them all into one transaction.
    fn hold_writes(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let blocker = rusqlite::Connection::open(&self.path).expect("blocker connection");
        blocker
            .execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        Some(Box::new(move || {
            blocker
                .execute_batch("ROLLBACK")
                .expect("release the write lock");
        }))
    }

    /// Holds the write lock as [`hold_writes`](Self::hold_writes) does:
    /// the writer's wait for it (5 s) runs out and its writes fail busy.
    fn fail_writes(&self) -> Option<Box<dyn FnOnce() + Send>> {
        self.hold_writes()
    }
}

muster_store::conformance_tests!(SqliteHarness::new());

fn schema_version(conn: &rusqlite::Connection) -> i64 {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

// Proves opening creates the file (parent directories included) at the
// given path, migrated to the current schema version and in WAL mode.
#[tokio::test]
async fn fresh_database_is_created_migrated_and_in_wal_mode() {
    let h = SqliteHarness::new();
    let store = h.open().await;
    assert!(
        h.path.exists(),
        "database file created, parent directories included"
    );
    assert_eq!(store.path(), h.path.as_path());
    assert_eq!(store.load().await.unwrap(), Snapshot::default());
    drop(store);
    let conn = rusqlite::Connection::open(&h.path).unwrap();
    assert_eq!(schema_version(&conn) as usize, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

// Proves reopening a current database does not re-run migrations: the
// version stays, and so does the data.
#[tokio::test]
async fn reopen_at_current_version_is_accepted() {
    let h = SqliteHarness::new();
    let store = h.open().await;
    store
        .apply(vec![Change::PutSession(Session::new("alice", "a", 1))])
        .await
        .unwrap();
    drop(store);
    let store = h.open().await;
    drop(store);
    let store = h.open().await;
    assert_eq!(
        store.load().await.unwrap().sessions,
        vec![Session::new("alice", "a", 1)]
    );
    let conn = rusqlite::Connection::open(&h.path).unwrap();
    assert_eq!(schema_version(&conn) as usize, SCHEMA_VERSION);
}

// Proves a database from a newer muster (user_version beyond the known
// migrations) is refused with a clear error, and left as it was.
#[tokio::test]
async fn newer_schema_is_refused() {
    let h = SqliteHarness::new();
    let store = h.open().await;
    store
        .apply(vec![Change::PutSession(Session::new("alice", "a", 1))])
        .await
        .unwrap();
    drop(store);
    {
        let conn = rusqlite::Connection::open(&h.path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
    }
    match SqliteStore::open(&h.path) {
        Ok(_) => panic!("a database at schema version 999 was accepted"),
        Err(e) => {
            assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("999"), "names the found version: {text}");
            assert!(
                text.contains("newer") && text.contains("upgrade"),
                "says what to do: {text}"
            );
        }
    }
    // Refusal changes nothing: the version and data are as they were.
    let conn = rusqlite::Connection::open(&h.path).unwrap();
    assert_eq!(schema_version(&conn), 999);
    let sessions: i64 = conn
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1);
}

// Proves a refused write carries SQLite's own words for the cause (the
// conformance test accepts any backend's).
#[tokio::test]
async fn duplicate_message_id_names_the_sqlite_constraint() {
    let h = SqliteHarness::new();
    let store = h.open().await;
    let put = |to: &str| Change::PutMessage {
        message: Message {
            id: "01A".into(),
            from: "alice".into(),
            from_nickname: "alice".into(),
            to: Target::Session(to.into()),
            reply_to: None,
            body: "hi".into(),
            sent_at: 1,
            via: Default::default(),
        },
        deliveries: vec![Delivery {
            message_id: "01A".into(),
            recipient: to.into(),
            state: DeliveryState::Queued,
            updated_at: 1,
        }],
    };
    store.apply(vec![put("bob")]).await.unwrap();
    match store.apply(vec![put("carol")]).await {
        Err(StoreError::Write(e)) => assert!(
            e.contains("UNIQUE") || e.contains("PRIMARY"),
            "error names the constraint: {e}"
        ),
        other => panic!("expected a write error, got {other:?}"),
    }
}

// Proves the writer checkpoints past 10,000 WAL pages, not at SQLite's
// default 1,000: after writing well over 1,000 pages (8 MB of bodies, one
// commit each) the WAL holds them all, where the default would have
// checkpointed and started the WAL again at about 4 MB; and that closing
// the store checkpoints it all into the database file and empties the WAL.
#[tokio::test]
async fn the_wal_is_checkpointed_past_ten_thousand_pages_and_on_closing() {
    let h = SqliteHarness::new();
    let store = h.open().await;
    let body = "x".repeat(32 * 1024);
    for n in 0..256u32 {
        let id = format!("01W{n:05}");
        store
            .apply(vec![Change::PutMessage {
                message: Message {
                    id: id.clone(),
                    from: "alice".into(),
                    from_nickname: "alice".into(),
                    to: Target::Session("bob".into()),
                    reply_to: None,
                    body: body.clone(),
                    sent_at: 1,
                    via: Default::default(),
                },
                deliveries: vec![Delivery {
                    message_id: id,
                    recipient: "bob".into(),
                    state: DeliveryState::Queued,
                    updated_at: 1,
                }],
            }])
            .await
            .unwrap();
    }
    let wal_path = h.path.with_extension("db-wal");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let wal = size(&wal_path);
    assert!(
        wal > 6 << 20,
        "the WAL is {wal} bytes: it was checkpointed and begun again"
    );
    drop(store);
    assert_eq!(size(&wal_path), 0, "the WAL is emptied on closing");
    assert!(
        size(&h.path) > 8 << 20,
        "the database file holds the 8 MB: {} bytes",
        size(&h.path)
    );
    let reopened = h.open().await;
    assert_eq!(reopened.load().await.unwrap().unread.len(), 256);
}
