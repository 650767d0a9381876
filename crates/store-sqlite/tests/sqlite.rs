//! The store's conformance tests (`muster_store::conformance`) run against
//! [`SqliteStore`], each on a real database file in its own temporary
//! directory: as it ships, with the bulk-written indexes (by sender, by
//! target, by words) brought up to date after every batch, and never (every
//! read takes the messages from the table); then what only SQLite has: the
//! file, WAL mode, the schema version, refusing a newer schema, SQLite's
//! own error text, and the bulk-written indexes' edges.

use std::path::{Path, PathBuf};

use muster_core::{Delivery, DeliveryState, Message, Millis, Session, Target};
use muster_store::conformance::Harness;
use muster_store::{Change, Snapshot, Store, StoreError};
use muster_store_sqlite::{Indexing, SqliteStore, SCHEMA_VERSION};
use tempfile::TempDir;

/// A database file in a fresh temporary directory, under a directory that
/// does not exist yet (opening creates it).
struct SqliteHarness {
    _dir: TempDir,
    path: PathBuf,
    indexing: Indexing,
}

impl SqliteHarness {
    fn new() -> Self {
        Self::indexing(Indexing::default())
    }

    fn indexing(indexing: Indexing) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("state").join("muster.db");
        SqliteHarness {
            _dir: dir,
            path,
            indexing,
        }
    }
}

/// The bulk-written indexes brought up to date after every batch.
const AFTER_EVERY_BATCH: Indexing = Indexing {
    every: 1,
    when_idle: None,
};

/// Never while the store is open (only on closing).
const NEVER: Indexing = Indexing {
    every: u64::MAX,
    when_idle: None,
};

fn open_indexing(path: &Path, indexing: Indexing) -> SqliteStore {
    match SqliteStore::open_with_indexing(path, indexing) {
        Ok(store) => store,
        Err(e) => panic!("opening {}: {e}", path.display()),
    }
}

impl Harness for SqliteHarness {
    type Store = SqliteStore;

    /// Dropping a store ends its writer thread once the queue is drained;
    /// a commit that resolved is already in the file.
    fn open(&self) -> impl std::future::Future<Output = SqliteStore> + Send {
        std::future::ready(open_indexing(&self.path, self.indexing))
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

/// Every read goes through the bulk-written indexes.
mod indexed_after_every_batch {
    use super::*;
    muster_store::conformance_tests!(SqliteHarness::indexing(AFTER_EVERY_BATCH));
}

/// Every read takes the messages from the table (until a reopen).
mod never_indexed_while_open {
    use super::*;
    muster_store::conformance_tests!(SqliteHarness::indexing(NEVER));
}

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

// ------------------------------------------- the bulk-written indexes' edges

/// Message `n` (id `01N<n>`, sent at `n`) from `from` to `to`, with a
/// delivery to each recipient; its body names `n` and a `word`.
fn mail(n: u32, from: &str, to: Target, recipients: &[&str], word: &str) -> Change {
    let id = format!("01N{n:04}");
    Change::PutMessage {
        message: Message {
            id: id.clone(),
            from: from.into(),
            from_nickname: from.into(),
            to,
            reply_to: None,
            body: format!("note {n} {word}"),
            sent_at: Millis::from(n),
            via: Default::default(),
        },
        deliveries: recipients
            .iter()
            .map(|r| Delivery {
                message_id: id.clone(),
                recipient: r.to_string(),
                state: DeliveryState::Queued,
                updated_at: Millis::from(n),
            })
            .collect(),
    }
}

/// The numbers of the messages, as their ids name them.
fn numbers(messages: &[Message]) -> Vec<u32> {
    messages
        .iter()
        .map(|m| m.id.trim_start_matches("01N").parse().expect("a test id"))
        .collect()
}

/// The bulk-written indexes' mark and how many entries each holds, read
/// from the file: (upto, by_sender rows, by_target rows).
fn index_counts(path: &Path) -> (i64, i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        count("SELECT upto FROM indexed_upto"),
        count("SELECT count(*) FROM by_sender"),
        count("SELECT count(*) FROM by_target"),
    )
}

fn reader(who: &str, limit: usize, before: Option<u32>) -> muster_store::HistoryQuery {
    let mut q = muster_store::HistoryQuery::newest(limit);
    q.reader = Some(who.into());
    q.before = before.map(|n| format!("01N{n:04}"));
    q
}

// Proves history and search read across the edge of the bulk-written
// indexes: messages 1–4 are in them (written, then the store closed),
// 5–8 only in the table (written since, the writer never indexing while
// open), and every query lists both, newest first, each message once,
// paging by cursor across the edge.
#[tokio::test]
async fn history_and_search_span_the_bulk_indexes_and_the_newest_messages() {
    use muster_store::{HistoryQuery, SearchQuery};
    let h = SqliteHarness::indexing(NEVER);
    let room = || Target::Room("ops".into());
    let bob = || Target::Session("bob".into());
    let alice = || Target::Session("alice".into());
    let batch = |first: u32| {
        vec![
            mail(first, "alice", bob(), &["bob"], "flaky"),
            mail(first + 1, "bob", alice(), &["alice"], "steady"),
            mail(first + 2, "alice", room(), &["bob", "carol"], "flaky"),
            mail(first + 3, "carol", bob(), &["bob"], "steady"),
        ]
    };
    let store = h.open().await;
    for change in batch(1) {
        store.apply(vec![change]).await.unwrap();
    }
    drop(store); // closing indexes them
    let store = h.open().await;
    for change in batch(5) {
        store.apply(vec![change]).await.unwrap();
    }
    assert_eq!(index_counts(&h.path), (4, 4, 4), "1–4 indexed, 5–8 not");

    let alices = store.history(reader("alice", 100, None)).await.unwrap();
    assert_eq!(numbers(&alices), [7, 6, 5, 3, 2, 1]);
    let page = store.history(reader("alice", 2, Some(6))).await.unwrap();
    assert_eq!(numbers(&page), [5, 3], "a page across the edge");
    let mut to_room = HistoryQuery::newest(100);
    to_room.to = Some(room());
    assert_eq!(numbers(&store.history(to_room).await.unwrap()), [7, 3]);
    let mut to_bob = HistoryQuery::newest(3);
    to_bob.to = Some(bob());
    assert_eq!(numbers(&store.history(to_bob).await.unwrap()), [8, 5, 4]);
    let mut carols_to_bob = reader("carol", 100, None);
    carols_to_bob.to = Some(bob());
    assert_eq!(
        numbers(&store.history(carols_to_bob).await.unwrap()),
        [8, 4]
    );
    let flaky = |within| SearchQuery {
        text: "FLAKY".into(),
        within,
    };
    let found = store
        .search(flaky(HistoryQuery::newest(100)))
        .await
        .unwrap();
    assert_eq!(numbers(&found), [7, 5, 3, 1]);
    let found = store
        .search(flaky(reader("carol", 100, None)))
        .await
        .unwrap();
    assert_eq!(numbers(&found), [7, 3], "what carol got");
    let found = store
        .search(flaky(reader("bob", 100, Some(7))))
        .await
        .unwrap();
    assert_eq!(numbers(&found), [5, 3, 1]);
}

// Proves the mark comes down when pruning deletes the newest messages: a
// message written after every older one was pruned gets a rowid the mark
// had passed, and is still listed and found; the indexes then hold it
// once the store closes, and nothing of the pruned ones.
#[tokio::test]
async fn messages_written_after_a_prune_of_everything_are_found() {
    use muster_store::{HistoryQuery, SearchQuery};
    let h = SqliteHarness::indexing(NEVER);
    let bob = || Target::Session("bob".into());
    let store = h.open().await;
    store
        .apply(vec![
            mail(1, "alice", bob(), &["bob"], "old"),
            mail(2, "alice", bob(), &["bob"], "old"),
        ])
        .await
        .unwrap();
    drop(store);
    assert_eq!(index_counts(&h.path), (2, 2, 2));
    let store = h.open().await;
    let report = store.prune(10).await.unwrap();
    assert_eq!(report.messages, 2);
    assert_eq!(index_counts(&h.path), (0, 0, 0));
    store
        .apply(vec![mail(11, "alice", bob(), &["bob"], "fresh")])
        .await
        .unwrap();
    let search = |text: &str| SearchQuery {
        text: text.into(),
        within: HistoryQuery::newest(10),
    };
    assert_eq!(numbers(&store.search(search("fresh")).await.unwrap()), [11]);
    assert!(store.search(search("old")).await.unwrap().is_empty());
    assert_eq!(
        numbers(&store.history(reader("alice", 10, None)).await.unwrap()),
        [11]
    );
    drop(store);
    assert_eq!(index_counts(&h.path), (1, 1, 1));
    let check = rusqlite::Connection::open(&h.path).unwrap().execute(
        "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
        [],
    );
    assert!(check.is_ok(), "{check:?}");
}

// Proves the writer indexes by itself, both ways it does: every `every`
// messages (3 here: after the batch that brings the count to 3, not
// before), and once it has been idle for `when_idle`.
#[tokio::test]
async fn the_writer_indexes_every_so_many_messages_and_when_idle() {
    let h = SqliteHarness::indexing(Indexing {
        every: 3,
        when_idle: None,
    });
    let bob = || Target::Session("bob".into());
    let store = h.open().await;
    for n in 1..=2 {
        store
            .apply(vec![mail(n, "alice", bob(), &["bob"], "x")])
            .await
            .unwrap();
    }
    // A write after the batches, answered after the indexing they started.
    store.apply(vec![]).await.unwrap();
    assert_eq!(index_counts(&h.path).0, 0, "2 messages: not yet");
    store
        .apply(vec![mail(3, "alice", bob(), &["bob"], "x")])
        .await
        .unwrap();
    store.apply(vec![]).await.unwrap();
    assert_eq!(index_counts(&h.path), (3, 3, 3), "the third: all three");
    drop(store);

    let h2 = SqliteHarness::indexing(Indexing {
        every: u64::MAX,
        when_idle: Some(std::time::Duration::from_millis(50)),
    });
    let store = h2.open().await;
    store
        .apply(vec![mail(1, "alice", bob(), &["bob"], "x")])
        .await
        .unwrap();
    assert_eq!(index_counts(&h2.path).0, 0, "just written");
    let indexed = async {
        while index_counts(&h2.path).0 != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), indexed)
        .await
        .expect("indexed within 5 s of going idle (50 ms)");
    drop(store);
}
