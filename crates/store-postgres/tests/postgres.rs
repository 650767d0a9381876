//! The store's conformance tests (`muster_store::conformance`) run against
//! [`PostgresStore`] on the real PostgreSQL server (127.0.0.1:5432, or
//! `MUSTER_TEST_POSTGRES`), each in a fresh database of its own that is
//! dropped afterwards; then what only PostgreSQL has: the migrations table,
//! refusing a newer schema, the server's own error text, byte order under
//! another collation, search in older and C-locale databases, and the
//! errors of a server that is not there.

use std::sync::atomic::{AtomicU32, Ordering};

use muster_core::{Delivery, DeliveryState, Message, Session, Target};
use muster_store::conformance::Harness;
use muster_store::{Change, HistoryQuery, InboxQuery, SearchQuery, Snapshot, Store, StoreError};
use muster_store_postgres::{PostgresStore, SCHEMA_VERSION};
use tokio_postgres::NoTls;

/// The server the tests use, as a URL without a database.
fn server() -> String {
    std::env::var("MUSTER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs `sql` on `database` from a thread of its own (so it can be called
/// from `Drop` and from inside a test's runtime alike).
fn run_sql(database: &str, sql: &str) {
    let url = format!("{}/{database}", server());
    let sql = sql.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
            tokio::spawn(connection);
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        });
    })
    .join()
    .expect("SQL thread");
}

/// A database name no other test (or run) uses.
fn fresh_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "muster_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty database of its own, dropped (connections and all) when
/// the harness goes.
struct PgHarness {
    name: String,
    url: String,
}

impl PgHarness {
    fn new() -> Self {
        Self::created_with("")
    }

    /// `options`: what follows `CREATE DATABASE name` (a template, a locale).
    fn created_with(options: &str) -> Self {
        let name = fresh_name();
        run_sql("postgres", &format!("CREATE DATABASE {name} {options}"));
        let url = format!("{}/{name}", server());
        PgHarness { name, url }
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url));
        tokio::spawn(connection);
        client
    }
}

impl Drop for PgHarness {
    fn drop(&mut self) {
        run_sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

async fn open_store(url: &str) -> PostgresStore {
    match PostgresStore::open(url).await {
        Ok(store) => store,
        Err(e) => panic!("opening {url}: {e}"),
    }
}

impl Harness for PgHarness {
    type Store = PostgresStore;

    /// A commit that resolved is in the database; a dropped store's writer
    /// finishes what is queued and lets its connections go.
    fn open(&self) -> impl std::future::Future<Output = PostgresStore> + Send {
        let url = self.url.clone();
        async move { open_store(&url).await }
    }

    /// Locks the sessions table from another connection, so the writer
    /// stalls on its first write while every later one queues up; on release
    /// it drains them all into one transaction.
    fn hold_writes(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let url = self.url.clone();
        let (held, is_held) = std::sync::mpsc::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .expect("blocker connection");
                tokio::spawn(connection);
                client
                    .batch_execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
                    .await
                    .expect("lock the sessions table");
                held.send(()).expect("tell the lock is held");
                let _ = released.await;
                client.batch_execute("ROLLBACK").await.expect("release");
            });
        });
        is_held.recv().expect("the lock is held");
        Some(Box::new(move || {
            let _ = release.send(());
            thread.join().expect("blocker thread");
        }))
    }

    /// A deferred constraint trigger on every table a write fills raises
    /// disk_full (53100) at commit, as a server out of room does; healing
    /// drops it.
    fn fail_writes(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let mut sql = String::from(
            "CREATE FUNCTION muster_test_full() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'
                 USING ERRCODE = 'disk_full'; END $$;",
        );
        for table in ["sessions", "messages", "deliveries"] {
            sql.push_str(&format!(
                "CREATE CONSTRAINT TRIGGER muster_test_full AFTER INSERT OR UPDATE ON {table}
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION muster_test_full();"
            ));
        }
        run_sql(&self.name, &sql);
        let name = self.name.clone();
        Some(Box::new(move || {
            run_sql(&name, "DROP FUNCTION muster_test_full() CASCADE")
        }))
    }
}

muster_store::conformance_tests!(PgHarness::new());

async fn versions(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .query(
            "SELECT version FROM muster_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn all_versions() -> Vec<i32> {
    (1..=SCHEMA_VERSION as i32).collect()
}

// Proves opening an empty database creates the schema and records every
// migration once, and the store names its database without credentials.
#[tokio::test]
async fn fresh_database_is_migrated_and_recorded() {
    let h = PgHarness::new();
    let store = h.open().await;
    assert_eq!(store.load().await.unwrap(), Snapshot::default());
    assert_eq!(
        store.describe(),
        format!("postgres://127.0.0.1:5432/{}", h.name)
    );
    let client = h.client().await;
    assert_eq!(versions(&client).await, all_versions());
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        tables,
        [
            "changes",
            "daemons",
            "deliveries",
            "links",
            "memberships",
            "messages",
            "muster_schema_migrations",
            "reservations",
            "rooms",
            "sessions",
            "tokens"
        ]
    );
}

// Proves reopening a current database runs no migration again: the
// recorded versions stay one each, and so does the data.
#[tokio::test]
async fn reopen_at_current_version_is_accepted() {
    let h = PgHarness::new();
    let store = h.open().await;
    store
        .apply(vec![Change::PutSession(Session::new("alice", "a", 1))])
        .await
        .unwrap();
    drop(store);
    drop(h.open().await);
    let store = h.open().await;
    assert_eq!(
        store.load().await.unwrap().sessions,
        vec![Session::new("alice", "a", 1)]
    );
    assert_eq!(versions(&h.client().await).await, all_versions());
}

// Proves daemons opening one fresh database at the same moment migrate it
// once (the advisory lock) and all get a working store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    let h = PgHarness::new();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url.clone();
            tokio::spawn(async move { PostgresStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("every open succeeds"));
    }
    assert_eq!(versions(&h.client().await).await, all_versions());
    stores[0]
        .apply(vec![Change::PutSession(Session::new("alice", "a", 1))])
        .await
        .unwrap();
    assert_eq!(stores[3].load().await.unwrap().sessions.len(), 1);
}

// Proves a database a newer muster migrated further is refused with a
// clear error naming the version and what to do, and is left as it was.
#[tokio::test]
async fn newer_schema_is_refused() {
    let h = PgHarness::new();
    let store = h.open().await;
    store
        .apply(vec![Change::PutSession(Session::new("alice", "a", 1))])
        .await
        .unwrap();
    drop(store);
    let client = h.client().await;
    client
        .batch_execute("INSERT INTO muster_schema_migrations (version) VALUES (999)")
        .await
        .unwrap();
    match PostgresStore::open(&h.url).await {
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
    let mut expected = all_versions();
    expected.push(999);
    assert_eq!(versions(&client).await, expected);
    let sessions: i64 = client
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 1);
}

fn put(id: &str, to: &str) -> Change {
    Change::PutMessage {
        message: Message {
            id: id.into(),
            from: "alice".into(),
            from_nickname: "alice".into(),
            to: Target::Session(to.into()),
            reply_to: None,
            body: "hi".into(),
            sent_at: 1,
            via: Default::default(),
        },
        deliveries: vec![Delivery {
            message_id: id.into(),
            recipient: to.into(),
            state: DeliveryState::Queued,
            updated_at: 1,
        }],
    }
}

// Proves a refused write carries PostgreSQL's own words for the cause:
// the violated constraint and its SQLSTATE.
#[tokio::test]
async fn duplicate_message_id_names_the_postgres_constraint() {
    let h = PgHarness::new();
    let store = h.open().await;
    store.apply(vec![put("01A", "bob")]).await.unwrap();
    match store.apply(vec![put("01A", "carol")]).await {
        Err(StoreError::Write(e)) => {
            assert!(
                e.contains("duplicate key") && e.contains("messages_pkey") && e.contains("23505"),
                "error names the constraint: {e}"
            )
        }
        other => panic!("expected a write error, got {other:?}"),
    }
}

// Proves ids order and compare as bytes (as the daemon's ULIDs need) even in
// a database whose own collation orders text otherwise: under ICU's en-US,
// "01b" sorts before "01C" and "~" is nearly ignored; here they are not.
#[tokio::test]
async fn ids_compare_as_bytes_under_any_database_collation() {
    let h = PgHarness::created_with(
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
    );
    let client = h.client().await;
    let icu_order: bool = client
        .query_one("SELECT 'b' < 'C'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(icu_order, "the database's own collation is not byte order");
    let store = h.open().await;
    store
        .apply(vec![
            put("01b", "bob"),
            put("01C", "bob"),
            put("01a~", "bob"),
        ])
        .await
        .unwrap();
    let all = store
        .inbox(InboxQuery {
            recipient: "bob".into(),
            include_read: true,
            limit: 100,
        })
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|e| e.message.id.as_str()).collect();
    assert_eq!(ids, ["01C", "01a~", "01b"], "byte order");
    store
        .apply(vec![Change::AckUpTo {
            recipient: "bob".into(),
            upto: "01a".into(),
            at: 2,
        }])
        .await
        .unwrap();
    let unread: Vec<String> = store
        .load()
        .await
        .unwrap()
        .unread
        .into_iter()
        .map(|(m, _)| m.id)
        .collect();
    assert_eq!(unread, ["01a~", "01b"], "only 01C is at most 01a in bytes");
}

fn connect_error_text(e: StoreError) -> String {
    match e {
        StoreError::Backend(inner) => inner.to_string(),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

// Proves a server that is not there is a clear error naming the address
// (and not the password) and saying what to do, without waiting long.
#[tokio::test]
async fn unreachable_server_names_the_address_and_what_to_do() {
    let started = std::time::Instant::now();
    let e = PostgresStore::open("postgres://postgres:secret@127.0.0.1:1/muster")
        .await
        .err()
        .expect("nothing listens on port 1");
    let text = connect_error_text(e);
    assert!(text.contains("127.0.0.1:1"), "names the address: {text}");
    assert!(text.contains("running"), "says what to check: {text}");
    assert!(text.contains("--store"), "says what to fix: {text}");
    assert!(!text.contains("secret"), "never the password: {text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

// Proves a database that does not exist is named, with how to create it.
#[tokio::test]
async fn missing_database_says_how_to_create_it() {
    let name = fresh_name();
    let e = PostgresStore::open(&format!("{}/{name}", server()))
        .await
        .err()
        .expect("the database does not exist");
    let text = connect_error_text(e);
    assert!(text.contains(&name), "names the database: {text}");
    assert!(text.contains("createdb"), "says how to create it: {text}");
}

// Proves a URL that is not one is refused before any connection, saying
// what a URL looks like.
#[tokio::test]
async fn malformed_url_is_refused() {
    let e = PostgresStore::open("postgres://127.0.0.1:notaport/db")
        .await
        .err()
        .expect("a bad port");
    let text = connect_error_text(e);
    assert!(text.contains("invalid PostgreSQL URL"), "{text}");
    assert!(
        text.contains("postgres://user@host:port/database"),
        "{text}"
    );
}

// Proves a batch that runs pipelined keeps the order of its requests and
// of the changes in each: 300 requests queued behind a held write (so they
// form one batch, on statements the connection has not prepared yet), each
// building on the ones before, all land as if run one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_batch_applies_its_requests_in_order() {
    use muster_core::Room;
    let h = PgHarness::new();
    let store = h.open().await;
    let hold = h.hold_writes().expect("the harness can hold writes");
    store.apply_later(vec![Change::PutSession(Session::new("first", "f", 0))]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let mut commits = Vec::new();
    for n in 0..300u32 {
        let id = format!("01M{n:05}");
        let mut alice = Session::new("alice", "a", 1);
        alice.status = format!("status {n}");
        commits.push(store.submit(vec![
            Change::PutSession(alice),
            Change::TouchSession {
                id: "alice".into(),
                last_seen_at: 10_000 - n as i64,
            },
            put(&id, "bob"),
            Change::AdvanceDelivery {
                message_id: id.clone(),
                recipient: "bob".into(),
                state: DeliveryState::Surfaced,
                at: 2,
            },
            Change::PutRoom(Room {
                name: "dev".into(),
                created_by: format!("creator {n}"),
                created_at: n as i64,
            }),
        ]));
        if n % 3 == 0 {
            commits.push(store.submit(vec![Change::AckUpTo {
                recipient: "bob".into(),
                upto: id,
                at: 3,
            }]));
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    hold();
    for commit in commits {
        commit.await.expect("every request commits");
    }
    let snap = store.load().await.unwrap();
    let alice = snap.sessions.iter().find(|s| s.id == "alice").unwrap();
    assert_eq!(alice.status, "status 299", "the last put wins");
    assert_eq!(
        alice.last_seen_at,
        10_000 - 299,
        "each put reset last_seen_at to 1 and its touch came after it"
    );
    assert_eq!(snap.rooms.len(), 1);
    assert_eq!(
        snap.rooms[0].created_by, "creator 0",
        "the first room stays"
    );
    assert!(
        snap.unread.is_empty(),
        "every message was advanced after it was put"
    );
    let states: Vec<DeliveryState> = store
        .inbox(InboxQuery {
            recipient: "bob".into(),
            include_read: true,
            limit: usize::MAX,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.state)
        .collect();
    let expected: Vec<DeliveryState> = (0..300u32)
        .map(|n| {
            if n <= 297 {
                DeliveryState::Acked
            } else {
                DeliveryState::Surfaced
            }
        })
        .collect();
    assert_eq!(states, expected, "acked up to 01M00297, the last ack");
}

// Proves the store gets over losing its connections (the server ended
// them, as at a restart of the server): once they are gone, the next
// writes and reads run on new connections, and nothing committed before
// is lost.
#[tokio::test]
async fn connections_ended_by_the_server_are_replaced() {
    let h = PgHarness::new();
    let store = h.open().await;
    store
        .apply(vec![Change::PutSession(Session::new("alice", "a", 1))])
        .await
        .unwrap();
    assert_eq!(store.load().await.unwrap().sessions.len(), 1);
    run_sql(
        "postgres",
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            h.name
        ),
    );
    // The server has closed every connection to the database; give the
    // driver a moment to see each socket close.
    let admin = {
        let (client, connection) =
            tokio_postgres::connect(&format!("{}/postgres", server()), NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
    };
    for _ in 0..100 {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&h.name],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    store
        .apply(vec![Change::PutSession(Session::new("bob", "b", 2))])
        .await
        .expect("a write after the connections went");
    let ids: Vec<String> = store
        .load()
        .await
        .expect("a read after the connections went")
        .sessions
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
}

// Proves a URL that asks for TLS is refused with what to do, since this
// store speaks to PostgreSQL without it.
#[tokio::test]
async fn a_url_requiring_tls_is_refused_with_what_to_do() {
    let e = PostgresStore::open(&format!("{}/postgres?sslmode=require", server()))
        .await
        .err()
        .expect("TLS is not available");
    let text = connect_error_text(e);
    assert!(text.contains("sslmode=require"), "{text}");
    assert!(
        text.contains("drop sslmode=require"),
        "says what to do: {text}"
    );
}

// ---- Team mode: several stores (daemons) on one database ----

use muster_core::Reservation;
use muster_store::shared::Shared;

fn reservation(id: &str, session: &str) -> Change {
    Change::PutReservation(Reservation {
        id: id.into(),
        session_id: session.into(),
        root: "/repo".into(),
        pattern: "src/**".into(),
        exclusive: true,
        reason: String::new(),
        created_at: 1,
        expires_at: i64::MAX / 2,
    })
}

// Proves every commit of two daemons is logged once, in one gapless
// sequence, each entry naming the daemon that made it and carrying exactly
// its changes; and that `load_at` gives the position of the last entry.
#[tokio::test]
async fn two_daemons_commits_are_logged_in_one_gapless_sequence() {
    let h = PgHarness::new();
    let (a, b) = (h.open().await, h.open().await);
    assert_ne!(a.daemon_id(), b.daemon_id());
    let mut commits = Vec::new();
    for i in 0..40 {
        let (store, who) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
        commits.push(store.submit(vec![put(&format!("m{i:03}-{who}"), "bob")]));
    }
    for c in commits {
        c.await.unwrap();
    }
    // Read by a third daemon, every entry carries its changes.
    let log = h.open().await.changes_after(0, 1_000).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>()
    );
    let mut ids: Vec<(String, String)> = Vec::new();
    for entry in &log {
        for change in &entry.changes {
            let Change::PutMessage { message, .. } = change else {
                panic!("unexpected change {change:?}");
            };
            let origin = if message.id.ends_with("-a") {
                a.daemon_id()
            } else {
                b.daemon_id()
            };
            assert_eq!(entry.origin, origin, "entry {}", entry.seq);
            ids.push((message.id.clone(), entry.origin.clone()));
        }
    }
    ids.sort();
    assert_eq!(ids.len(), 40);
    ids.dedup();
    assert_eq!(ids.len(), 40);
    // Read by its writer, an entry comes without the changes it has.
    let by_b = b.changes_after(0, 1_000).await.unwrap();
    assert_eq!(by_b.len(), log.len());
    for (mine, full) in by_b.iter().zip(&log) {
        assert_eq!((mine.seq, &mine.origin), (full.seq, &full.origin));
        let expected = if full.origin == b.daemon_id() {
            0
        } else {
            full.changes.len()
        };
        assert_eq!(mine.changes.len(), expected, "entry {}", mine.seq);
    }
    let (snapshot, seq) = a.load_at().await.unwrap();
    assert_eq!(seq, log.last().unwrap().seq);
    assert_eq!(snapshot.unread.len(), 40);
    assert_eq!(a.changes_after(seq, 10).await.unwrap(), vec![]);
    // The middle of the log reads back from where it is asked.
    let tail = a.changes_after(seq - 2, 10).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![seq - 1, seq]
    );
}

// Proves a daemon hears of another's commit: its notifications change
// after the other's submit resolves.
#[tokio::test]
async fn a_commit_notifies_the_other_daemons() {
    let h = PgHarness::new();
    let (a, b) = (h.open().await, h.open().await);
    let mut heard = b.notifications();
    // The listener has connected once it counted its first connection.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        heard.wait_for(|n| *n > 0),
    )
    .await
    .expect("the listener connects")
    .unwrap();
    let before = *heard.borrow_and_update();
    a.apply(vec![put("m1", "bob")]).await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        heard.wait_for(|n| *n > before),
    )
    .await
    .expect("the commit is notified")
    .unwrap();
}

// Proves reservations are decided in the database: a grant decided on a
// log position after which another daemon changed reservations is refused
// as a conflict and leaves nothing behind; decided on the current
// position it is granted.
#[tokio::test]
async fn a_reservation_decided_on_a_stale_position_is_refused() {
    let h = PgHarness::new();
    let (a, b) = (h.open().await, h.open().await);
    let (_, start) = b.load_at().await.unwrap();
    a.apply(vec![reservation("r-a", "sa")]).await.unwrap();
    let refused = b
        .apply(vec![
            Change::ReservationsUnchangedSince { seq: start },
            reservation("r-b", "sb"),
        ])
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Conflict(why)) if why.contains("reservations changed")),
        "{refused:?}"
    );
    let (snapshot, now) = b.load_at().await.unwrap();
    assert_eq!(
        snapshot
            .reservations
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["r-a"]
    );
    // Its own reservations never stand in its way, and a current position passes.
    b.apply(vec![
        Change::ReservationsUnchangedSince { seq: now },
        reservation("r-b", "sb"),
    ])
    .await
    .unwrap();
    b.apply(vec![
        Change::ReservationsUnchangedSince { seq: now },
        reservation("r-b2", "sb"),
    ])
    .await
    .unwrap();
    let (snapshot, _) = a.load_at().await.unwrap();
    assert_eq!(snapshot.reservations.len(), 3);
}

// Proves a nickname is given out once whichever daemon gives it: a second
// session with a taken nickname is a conflict; the same session again is
// an update.
#[tokio::test]
async fn a_nickname_is_given_out_once() {
    let h = PgHarness::new();
    let (a, b) = (h.open().await, h.open().await);
    a.apply(vec![Change::PutSession(Session::new(
        "s1",
        "blue-otter",
        1,
    ))])
    .await
    .unwrap();
    let refused = b
        .apply(vec![Change::PutSession(Session::new(
            "s2",
            "blue-otter",
            2,
        ))])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let mut again = Session::new("s1", "blue-otter", 1);
    again.status = "busy".into();
    b.apply(vec![Change::PutSession(again)]).await.unwrap();
    let (snapshot, _) = a.load_at().await.unwrap();
    assert_eq!(snapshot.sessions.len(), 1);
    assert_eq!(snapshot.sessions[0].status, "busy");
}

// Proves the heartbeat: each daemon sees the other's links (not its own),
// changes of them show at the next beat, and a daemon that leaves takes
// its links with it.
#[tokio::test]
async fn heartbeats_share_each_daemons_links() {
    let h = PgHarness::new();
    let (a, b) = (h.open().await, h.open().await);
    assert_eq!(
        a.heartbeat(vec!["s1".into(), "s2".into()]).await.unwrap(),
        vec![]
    );
    let mut seen = b.heartbeat(vec!["s3".into()]).await.unwrap();
    seen.sort_by(|x, y| x.session_id.cmp(&y.session_id));
    assert_eq!(
        seen.iter()
            .map(|p| (p.session_id.as_str(), p.daemon.as_str()))
            .collect::<Vec<_>>(),
        [("s1", a.daemon_id()), ("s2", a.daemon_id())]
    );
    assert!(
        seen.iter()
            .all(|p| (0..5_000).contains(&p.heartbeat_age_ms)),
        "{seen:?}"
    );
    let seen = a.heartbeat(vec!["s2".into()]).await.unwrap();
    assert_eq!(
        seen.iter()
            .map(|p| p.session_id.as_str())
            .collect::<Vec<_>>(),
        ["s3"]
    );
    let seen = b.heartbeat(vec!["s3".into()]).await.unwrap();
    assert_eq!(
        seen.iter()
            .map(|p| p.session_id.as_str())
            .collect::<Vec<_>>(),
        ["s2"]
    );
    a.leave().await;
    assert_eq!(b.heartbeat(vec!["s3".into()]).await.unwrap(), vec![]);
}

// Proves the sweep has one leader: the first daemon to ask leads and keeps
// leading; the other does not, until the leader leaves.
#[tokio::test]
async fn one_daemon_leads_the_sweep_until_it_leaves() {
    let h = PgHarness::new();
    let (a, b) = (h.open().await, h.open().await);
    assert!(a.lead().await);
    assert!(!b.lead().await);
    assert!(a.lead().await);
    assert!(!b.lead().await);
    a.leave().await;
    assert!(b.lead().await);
    assert!(!a.lead().await);
}

/// A search's matches, by id, newest first.
async fn found(store: &PostgresStore, text: &str) -> Vec<String> {
    let query = SearchQuery {
        text: text.into(),
        within: HistoryQuery::newest(100),
    };
    match store.search(query).await {
        Ok(messages) => messages.into_iter().map(|m| m.id).collect(),
        Err(e) => panic!("searching {text:?}: {e}"),
    }
}

/// SQL that brings a fresh database to the schema of `migrations` (the
/// first ones, in order), recorded as a store at that version records it.
fn schema_at(migrations: &[&str]) -> String {
    let mut sql = String::from(
        "CREATE TABLE muster_schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    );
    for (version, migration) in migrations.iter().enumerate() {
        sql.push_str(migration);
        sql.push_str(&format!(
            ";INSERT INTO muster_schema_migrations (version) VALUES ({});",
            version + 1
        ));
    }
    sql
}

const MIGRATIONS_UP_TO_4: [&str; 4] = [
    include_str!("../src/migrations/0001_initial.sql"),
    include_str!("../src/migrations/0002_team.sql"),
    include_str!("../src/migrations/0003_sent_via.sql"),
    include_str!("../src/migrations/0004_tokens.sql"),
];

// Proves the search migration indexes the messages already stored: a
// message written at schema version 4 is found by its words once the
// store has migrated the database.
#[tokio::test]
async fn messages_stored_before_search_existed_are_found() {
    let h = PgHarness::new();
    let mut sql = schema_at(&MIGRATIONS_UP_TO_4);
    sql.push_str(
        "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, body, sent_at)
         VALUES ('01A', 'alice', 'alice', 'session', 'bob', 'the Flaky test again', 1),
                ('01B', 'bob', 'bob', 'session', 'alice', 'fixed it', 2);",
    );
    run_sql(&h.name, &sql);
    let store = h.open().await;
    assert_eq!(versions(&h.client().await).await, all_versions());
    assert_eq!(found(&store, "flaky TEST").await, ["01A"]);
    assert_eq!(found(&store, "fix").await, ["01B"]);
}

// Proves migration 6 (search words written by the INSERT, no longer a
// generated column) keeps what version 5 indexed and indexes what comes
// after: a message stored at version 5 and one stored through the
// migrated store are both found by their words, and only by them.
#[tokio::test]
async fn search_words_stored_at_version_5_survive_and_new_ones_are_written() {
    let h = PgHarness::new();
    let mut migrations = MIGRATIONS_UP_TO_4.to_vec();
    migrations.push(include_str!("../src/migrations/0005_search.sql"));
    let mut sql = schema_at(&migrations);
    sql.push_str(
        "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, body, sent_at)
         VALUES ('01A', 'alice', 'alice', 'session', 'bob', 'the Flaky test again', 1);",
    );
    run_sql(&h.name, &sql);
    let store = h.open().await;
    assert_eq!(versions(&h.client().await).await, all_versions());
    let mut newer = put("01B", "alice");
    if let Change::PutMessage { message, .. } = &mut newer {
        message.body = "Café naïve: the deploy is done".into();
    }
    store.apply(vec![newer]).await.unwrap();
    assert_eq!(found(&store, "flaky").await, ["01A"]);
    assert_eq!(found(&store, "CAFÉ deploy").await, ["01B"]);
    assert_eq!(found(&store, "naï").await, ["01B"]);
    assert!(found(&store, "hi").await.is_empty());
}

// Proves what a letter is does not depend on the database's own locale: in
// a database whose locale is C (where PostgreSQL alone would take É for
// punctuation and never lowercase it), accented words are still found
// whole and case aside, as in a UTF-8 locale and in SQLite.
#[tokio::test]
async fn search_knows_letters_in_a_c_locale_database() {
    let h = PgHarness::created_with("TEMPLATE template0 LOCALE 'C'");
    let store = h.open().await;
    store
        .apply(vec![Change::PutMessage {
            message: Message {
                id: "01A".into(),
                from: "alice".into(),
                from_nickname: "alice".into(),
                to: Target::Session("bob".into()),
                reply_to: None,
                body: "Café ÉCOLE naïve—résumé".into(),
                sent_at: 1,
                via: Default::default(),
            },
            deliveries: vec![],
        }])
        .await
        .unwrap();
    for text in ["café", "CAFÉ", "école", "naïve résumé", "caf"] {
        assert_eq!(found(&store, text).await, ["01A"], "{text:?}");
    }
    assert!(found(&store, "resume").await.is_empty());
}

// Proves a run of new messages in one batch (written by one statement for
// the messages and one for their deliveries) stores each message whole:
// its reply, target kind, words for search and deliveries; and that a
// change after the run in the same batch (an advance of one of them) comes
// after it, as does a second run behind that change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_new_messages_in_one_batch_is_stored_whole_and_in_order() {
    let h = PgHarness::new();
    let store = h.open().await;
    let hold = h.hold_writes().expect("the harness can hold writes");
    store.apply_later(vec![Change::PutSession(Session::new("first", "f", 0))]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let message = |n: u32, to: Target, reply_to: Option<&str>| {
        let id = format!("01R{n:05}");
        let recipients = match &to {
            Target::Room(_) => vec!["bob".to_string(), "carol".to_string()],
            _ => vec!["bob".to_string()],
        };
        Change::PutMessage {
            message: Message {
                id: id.clone(),
                from: "alice".into(),
                from_nickname: "alice-n".into(),
                to,
                reply_to: reply_to.map(str::to_string),
                body: format!("word{n} the build is green"),
                sent_at: 100 + i64::from(n),
                via: Default::default(),
            },
            deliveries: recipients
                .into_iter()
                .map(|recipient| Delivery {
                    message_id: id.clone(),
                    recipient,
                    state: DeliveryState::Queued,
                    updated_at: 100,
                })
                .collect(),
        }
    };
    let mut commits = Vec::new();
    for n in 0..40u32 {
        let to = match n % 3 {
            0 => Target::Session("bob".into()),
            1 => Target::Room("dev".into()),
            _ => Target::Operator("bob".into()),
        };
        let reply = (n % 2 == 1).then_some("01R00000");
        commits.push(store.submit(vec![message(n, to, reply)]));
    }
    commits.push(store.submit(vec![Change::AdvanceDelivery {
        message_id: "01R00039".into(),
        recipient: "bob".into(),
        state: DeliveryState::Surfaced,
        at: 200,
    }]));
    commits.push(store.submit(vec![
        message(40, Target::Session("bob".into()), None),
        message(41, Target::Session("bob".into()), Some("01R00040")),
    ]));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    hold();
    for commit in commits {
        commit.await.expect("every request commits");
    }
    let all = store
        .history(HistoryQuery {
            reader: None,
            to: None,
            before: None,
            limit: usize::MAX,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 42);
    for m in &all {
        let n: u32 = m.id[3..].parse().unwrap();
        assert_eq!(m.body, format!("word{n} the build is green"));
        assert_eq!(m.sent_at, 100 + i64::from(n));
        assert_eq!(m.from_nickname, "alice-n");
        let want_reply = match n {
            40 => None,
            41 => Some("01R00040"),
            n if n % 2 == 1 => Some("01R00000"),
            _ => None,
        };
        assert_eq!(m.reply_to.as_deref(), want_reply, "{}", m.id);
        if n < 40 {
            let want_to = match n % 3 {
                0 => Target::Session("bob".into()),
                1 => Target::Room("dev".into()),
                _ => Target::Operator("bob".into()),
            };
            assert_eq!(m.to, want_to, "{}", m.id);
        }
    }
    let found = store
        .search(SearchQuery {
            text: "word17".into(),
            within: HistoryQuery {
                reader: None,
                to: None,
                before: None,
                limit: 10,
            },
        })
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["01R00017"]
    );
    let states: Vec<(String, DeliveryState)> = store
        .deliveries("01R00039")
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.recipient, d.state))
        .collect();
    assert_eq!(states, [("bob".to_string(), DeliveryState::Surfaced)]);
    let room = store.deliveries("01R00001").await.unwrap();
    assert_eq!(room.len(), 2, "both members of the room got a delivery");
}
