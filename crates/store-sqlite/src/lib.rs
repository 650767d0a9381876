//! muster's embedded store: [`SqliteStore`], the [`Store`] trait over one
//! SQLite file in WAL mode, with versioned migrations ([`SCHEMA_VERSION`]).
//!
//! Writes go through one writer thread that drains every pending request
//! into a single transaction (group commit): many senders share one fsync,
//! so durability does not cap throughput. When a request fails, the batch
//! runs again with each request in its own savepoint, so one bad request
//! fails alone. Reads use a separate
//! connection, which WAL lets run beside the writer. The indexes history
//! and search need (by sender, by target, by words) are written in bulk,
//! every 256 messages or when the writer is idle ([`Indexing`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use muster_core::token::{Scope, TokenRecord};
use muster_core::{
    Activity, Delivery, DeliveryState, LinkKind, Membership, Message, Millis, Reservation, Room,
    SentVia, Session, Target,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;

use muster_store::health::{FaultKind, WriteHealth};
use muster_store::job::{answer_all, faulted, panic_text, Job, JobResult};
use muster_store::{
    Change, Commit, HistoryQuery, InboxEntry, InboxQuery, PruneReport, SearchQuery, Snapshot,
    Store, StoreError,
};

mod bulk_index;
mod history;

pub use bulk_index::Indexing;

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 4_096;

/// Versioned migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    nickname TEXT NOT NULL,
    harness TEXT NOT NULL,
    host TEXT NOT NULL,
    operator TEXT NOT NULL,
    pid INTEGER,
    cwd TEXT NOT NULL,
    project TEXT NOT NULL,
    branch TEXT NOT NULL,
    status TEXT NOT NULL,
    activity TEXT NOT NULL,
    last_tool TEXT,
    can_push INTEGER NOT NULL,
    link TEXT NOT NULL,
    connected_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    left_at INTEGER
);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    sender_nickname TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    reply_to TEXT,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX messages_sent_at ON messages(sent_at);
CREATE TABLE deliveries (
    recipient TEXT NOT NULL,
    message_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (recipient, message_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_unread ON deliveries(message_id) WHERE state < 2;
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE memberships (
    room TEXT NOT NULL,
    session_id TEXT NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room, session_id)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    root TEXT NOT NULL,
    pattern TEXT NOT NULL,
    exclusive INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX reservations_session ON reservations(session_id);
CREATE INDEX messages_reply_to ON messages(reply_to) WHERE reply_to IS NOT NULL;
"#,
    r#"
-- Delivery state `seen` (found in the harness's transcript) sits between
-- surfaced (2) and acked, which moves from 3 to 4.
UPDATE deliveries SET state = 4 WHERE state = 3;
"#,
    r#"
-- How each message's sender was authenticated (`SentVia`); older
-- messages did not record it.
ALTER TABLE messages ADD COLUMN via TEXT NOT NULL DEFAULT 'unrecorded';
"#,
    r#"
-- Tokens (stored as the SHA-256 of their secret), and which token
-- registered each session (none: the daemon's own user did).
ALTER TABLE sessions ADD COLUMN owner TEXT;
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX tokens_live_name ON tokens(name) WHERE revoked_at IS NULL;
"#,
    r#"
-- Full-text search over message bodies (see muster_store::search), and
-- the indexes a reader's or a target's history pages by. The index is an
-- external-content FTS5 table over messages' rowids, built here over the
-- stored rows and kept in step by the store's own writes (`put_message`,
-- `prune`; no trigger: a trigger into a virtual table cost ~30 µs per
-- message on the writer, a direct insert ~7). Rowids of a table with an
-- index survive VACUUM, and messages always has one (its primary key).
-- Diacritics are kept, as PostgreSQL's `simple` configuration keeps them,
-- so both stores match the same words.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 0'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
CREATE INDEX messages_sender ON messages(sender, id);
CREATE INDEX messages_target ON messages(target_kind, target, id);
"#,
    r#"
-- The first form of migration 6 kept the search index by triggers; the
-- store writes it itself now, and a trigger left in place would index
-- every message twice.
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TRIGGER IF EXISTS messages_fts_delete;
DROP TRIGGER IF EXISTS messages_fts_update;
"#,
    r#"
-- The history indexes by sender and by target, and the search index, are
-- written in bulk (see `bulk_index`): a message's own insert touches only
-- the pages every message shares (the table's end, its id and sent_at
-- indexes, its deliveries), not a leaf of its own in each index. Every
-- message up to rowid `upto` is in all three; reads take the newer ones
-- from the table itself.
CREATE TABLE indexed_upto (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    upto INTEGER NOT NULL
);
INSERT INTO indexed_upto VALUES (1, (SELECT coalesce(max(rowid), 0) FROM messages));
CREATE TABLE by_sender (
    sender TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (sender, id)
) WITHOUT ROWID;
CREATE TABLE by_target (
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (target_kind, target, id)
) WITHOUT ROWID;
INSERT INTO by_sender SELECT sender, id FROM messages;
INSERT INTO by_target SELECT target_kind, target, id FROM messages;
DROP INDEX messages_sender;
DROP INDEX messages_target;
"#,
    r#"
-- Deliveries keyed by message first, so a commit's new deliveries and
-- their `pushed` marks share the table's last leaf, where keyed by
-- recipient first each recipient of a commit dirtied a leaf of its own
-- (BENCHMARKS.md, 2026-12-06). A recipient's mail is found through
-- `by_recipient`, written in bulk with the other history indexes (every
-- delivery of a message up to `indexed_upto.upto` is in it, no newer one),
-- and through the newer messages' deliveries themselves.
CREATE TABLE deliveries_by_message (
    recipient TEXT NOT NULL,
    message_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, recipient)
) WITHOUT ROWID;
INSERT INTO deliveries_by_message (recipient, message_id, state, updated_at)
    SELECT recipient, message_id, state, updated_at FROM deliveries ORDER BY message_id, recipient;
DROP TABLE deliveries;
ALTER TABLE deliveries_by_message RENAME TO deliveries;
CREATE INDEX deliveries_unread ON deliveries(message_id) WHERE state < 2;
CREATE TABLE by_recipient (
    recipient TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (recipient, id)
) WITHOUT ROWID;
INSERT INTO by_recipient (recipient, id)
    SELECT d.recipient, d.message_id FROM deliveries d JOIN messages m ON m.id = d.message_id
    WHERE m.rowid <= (SELECT upto FROM indexed_upto) ORDER BY d.recipient, d.message_id;
"#,
];

/// The schema version a fully migrated database is at.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The embedded store: one SQLite file, a writer thread that group-commits
/// every write, and a reader connection beside it.
pub struct SqliteStore {
    path: PathBuf,
    /// `<database>.lock`, locked (`flock`) for the store's life: one
    /// process at a time keeps a store's state in memory.
    _lock: Option<std::fs::File>,
    writer: mpsc::Sender<Job>,
    /// The writer thread, waited for when the store is dropped.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    reader: Arc<Mutex<Connection>>,
    health: Arc<WriteHealth>,
}

/// A rusqlite error as the store reports it: a value that cannot be read
/// back as muster's data is corruption, anything else the backend's failure.
fn db_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        other => StoreError::backend(other),
    }
}

/// WAL pages after which a commit checkpoints (see [`open`]).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is fsynced before the writer answers, so an
    // acknowledged write survives a crash of the process or the machine.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // A checkpoint copies every page in the WAL back into the database and
    // fsyncs it, in the writer's commit; at SQLite's default (every 1,000
    // pages) a busy daemon did that every half second or so, writing the
    // same hot index pages over and over. Every 10,000 pages (a WAL of up
    // to about 40 MB) writes each hot page back less often (BENCHMARKS.md,
    // 2026-12-03, has the runs for and against). The writer checkpoints the
    // rest when the store closes.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(db_error)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {version}, newer than this muster knows ({}); upgrade muster",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(db_error)?;
        tx.execute_batch(sql).map_err(db_error)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
    }
    Ok(())
}

/// A database that cannot be opened for writing, in words that say what
/// to do (no error source: the text is the whole story).
fn refuse(text: String) -> StoreError {
    StoreError::Unavailable(text)
}

/// An error opening the database at `path`, naming the file and the way out.
/// Nothing in the file was changed: each is raised before any write.
fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let shown = path.display();
    let dir = path
        .parent()
        .map_or_else(|| ".".into(), |d| d.display().to_string());
    let code = e.sqlite_error_code();
    let cause = match &e {
        rusqlite::Error::SqliteFailure(f, _) => f.to_string(),
        other => other.to_string(),
    };
    match code {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(format!(
            "{shown} is damaged or is not a muster database ({cause}); nothing in it was changed. \
             Move it aside to start with an empty store (mv {shown} {shown}.damaged), \
             or restore it from a backup."
        )),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => refuse(format!(
            "{shown} is locked by another process ({cause}): another `muster serve` on {dir}, \
             or a tool holding it open for writing. Stop that process, or give this daemon \
             a --data-dir of its own."
        )),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            refuse(format!(
                "cannot write {shown} ({cause}): {dir} or the file is read-only (its \
                 permissions, or a read-only mount). Make both writable by this user, or \
                 give --data-dir a writable directory."
            ))
        }
        _ => db_error(e),
    }
}

/// An I/O error before SQLite opened the database (creating the file or
/// its lock), named as [`open_error`] names SQLite's.
fn open_io_error(path: &Path, e: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    let dir = path
        .parent()
        .map_or_else(|| ".".into(), |d| d.display().to_string());
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => refuse(format!(
            "cannot write {} ({e}): {dir} or the file is read-only (its permissions, or a \
             read-only mount). Make both writable by this user, or give --data-dir a \
             writable directory.",
            path.display()
        )),
        _ => StoreError::Io(e),
    }
}

/// Takes `<database>.lock` for this process (created 0600 if need be), or
/// refuses if another process holds it: two daemons on one database would
/// each keep their own state in memory, and neither would see the other's
/// mail or claims.
fn lock_file(path: &Path) -> Result<Option<std::fs::File>, StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| open_io_error(&lock_path, e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let dir = path
                    .parent()
                    .map_or_else(|| ".".into(), |d| d.display().to_string());
                return Err(refuse(format!(
                    "{} is in use by another process (it holds {}): another `muster serve` on \
                     {dir}? Stop it, or give this daemon a --data-dir of its own.",
                    path.display(),
                    lock_path.display()
                )));
            }
            return Err(StoreError::Io(e));
        }
        Ok(Some(file))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// The database and its `-wal` and `-shm` files, only their owner's (0600
/// on Unix): they hold every message. The database is created so before
/// SQLite opens it (SQLite gives its other files the database's mode), and
/// files an older muster left 0644 are tightened.
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::metadata(&file) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?
                }
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Drop for SqliteStore {
    /// Ends the writer once its queue is drained and waits for it, so its
    /// last act, the closing checkpoint, is done when the store is gone.
    fn drop(&mut self) {
        // The writer ends when its last sender is gone: this is the last.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.writer, closed));
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if need be) the database at `path` and starts its writer.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with_indexing(path, Indexing::default())
    }

    /// [`open`](Self::open), with the bulk-written indexes brought up to
    /// date as `indexing` says (tests choose every message, or never).
    pub fn open_with_indexing(
        path: impl Into<PathBuf>,
        indexing: Indexing,
    ) -> Result<Self, StoreError> {
        Self::open_with(path.into(), indexing, UNHURRIED_WAIT, |_| {})
    }

    /// [`open_with_indexing`](Self::open_with_indexing), holding unhurried
    /// writes up to `unhurried_wait`, with `setup` run on the writer's
    /// first connection (a test's fault injection or commit counter).
    fn open_with(
        path: PathBuf,
        indexing: Indexing,
        unhurried_wait: std::time::Duration,
        setup: impl FnOnce(&Connection),
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lock = lock_file(&path)?;
        private_files(&path).map_err(|e| open_io_error(&path, e))?;
        let explain = |e| open_error(&path, e);
        let mut writer_conn = open(&path).map_err(explain)?;
        migrate(&mut writer_conn).map_err(|e| match e {
            StoreError::Backend(cause) => match cause.downcast::<rusqlite::Error>() {
                Ok(e) => explain(*e),
                Err(cause) => StoreError::Backend(cause),
            },
            other => other,
        })?;
        // Whether it can be written at all now: a database another process
        // holds locked, or one on a read-only file system, is refused here
        // with what to do, not at the first request.
        writer_conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(explain)?;
        setup(&writer_conn);
        let unindexed = bulk_index::unindexed(&writer_conn).map_err(explain)?;
        let reader = open(&path).map_err(explain)?;
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(WriteHealth::new());
        let writer = Writer {
            path: path.clone(),
            conn: Some(writer_conn),
            health: health.clone(),
            indexing,
            unindexed,
            unhurried_wait,
        };
        let writer_thread = std::thread::Builder::new()
            .name("muster-store-writer".into())
            .spawn(move || writer_loop(writer, rx))?;
        Ok(SqliteStore {
            path,
            _lock: lock,
            writer: tx,
            writer_thread: Some(writer_thread),
            reader: Arc::new(Mutex::new(reader)),
            health,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit_job(&self, changes: Vec<Change>, unhurried: bool) -> Commit {
        let (done, wait) = oneshot::channel();
        let sent = self.writer.send(Job::Apply {
            changes,
            done: Some(done),
            unhurried,
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Stopped)?;
            wait.await.map_err(|_| StoreError::Stopped)?
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(StoreError::backend)?
        .map_err(db_error)
    }
}

/// While the most recent write failed, the writer tries a small write of
/// its own this often when no request comes, so health recovers without
/// traffic.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The writer thread's side: its connection (reopened when a fault left it
/// unusable) and the health it reports.
struct Writer {
    path: PathBuf,
    conn: Option<Connection>,
    health: Arc<WriteHealth>,
    indexing: Indexing,
    /// Messages committed since the bulk-written indexes were last brought
    /// up to date (a count of when to, not what: the database has the mark).
    unindexed: u64,
    /// The longest a batch of unhurried writes waits for company.
    unhurried_wait: std::time::Duration,
}

/// Why a whole batch failed: a fault of the backend, not of one request.
struct Fault {
    kind: FaultKind,
    reason: String,
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault {
            kind: fault_kind(&e).unwrap_or(FaultKind::Other),
            reason: e.to_string(),
        }
    }
}

/// The fault a SQLite error is, or `None` for a request's own failure (a
/// constraint, say) that the other requests of its batch need not share.
fn fault_kind(e: &rusqlite::Error) -> Option<FaultKind> {
    use rusqlite::ErrorCode as C;
    let rusqlite::Error::SqliteFailure(err, _) = e else {
        return None;
    };
    Some(match err.code {
        C::DiskFull => FaultKind::Full,
        C::SystemIoFailure
        | C::ReadOnly
        | C::CannotOpen
        | C::PermissionDenied
        | C::DatabaseCorrupt
        | C::NotADatabase
        | C::FileLockingProtocolFailed => FaultKind::Io,
        C::DatabaseBusy | C::DatabaseLocked => FaultKind::Busy,
        C::OutOfMemory | C::InternalMalfunction | C::NoLargeFileSupport => FaultKind::Other,
        // A commit hook turned the commit into a rollback.
        C::ConstraintViolation if err.extended_code == COMMITHOOK => FaultKind::Other,
        _ => return None,
    })
}

/// SQLITE_CONSTRAINT_COMMITHOOK.
const COMMITHOOK: std::ffi::c_int = 531;

/// Runs the queue's jobs in batches until every sender is gone, then
/// indexes what is left and checkpoints the WAL into the database file.
fn writer_loop(mut writer: Writer, rx: mpsc::Receiver<Job>) {
    take_batches(&mut writer, &rx);
    if writer.unindexed > 0 && !writer.health.is_degraded() {
        writer.bulk_index();
    }
    writer.checkpoint();
}

fn take_batches(writer: &mut Writer, rx: &mpsc::Receiver<Job>) {
    loop {
        // Work of the writer's own once no job has come for a while: a
        // probe while degraded, else the bulk indexes if any are behind.
        let idle_work: Option<(std::time::Duration, IdleWork)> = if writer.health.is_degraded() {
            Some((PROBE_EVERY, Writer::probe))
        } else if writer.unindexed > 0 {
            writer
                .indexing
                .when_idle
                .map(|wait| (wait, Writer::bulk_index as _))
        } else {
            None
        };
        let first = match idle_work {
            Some((wait, work)) => match rx.recv_timeout(wait) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    work(writer);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        take_waiting(rx, &mut batch);
        // Nobody waits on a batch of unhurried writes (a push's `pushed`
        // mark): held a moment, it shares the commit of the write that
        // follows, which then does not wait behind a commit of its own.
        if batch.iter().all(Job::is_unhurried) {
            if let Ok(job) = rx.recv_timeout(writer.unhurried_wait) {
                batch.push(job);
                take_waiting(rx, &mut batch);
            }
        }
        writer.run_batch(batch);
        // After the batch was answered, so no sender waits for the indexes.
        if writer.unindexed >= writer.indexing.every && !writer.health.is_degraded() {
            writer.bulk_index();
        }
    }
}

/// What the writer does of its own accord once its queue has been quiet.
type IdleWork = fn(&mut Writer);

/// The longest the writer holds a batch of unhurried writes for company.
const UNHURRIED_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Adds the jobs already queued to the batch, up to [`MAX_BATCH`].
fn take_waiting(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// How many messages a batch writes.
fn messages_in(batch: &[Job]) -> u64 {
    batch
        .iter()
        .map(|job| match job {
            Job::Apply { changes, .. } => changes
                .iter()
                .filter(|c| matches!(c, Change::PutMessage { .. }))
                .count() as u64,
            Job::Prune { .. } => 0,
        })
        .sum()
}

impl Writer {
    /// Copies the whole WAL into the database file and empties it, so a
    /// stopped store is one file (its WAL checkpoints only every
    /// [`WAL_AUTOCHECKPOINT_PAGES`] while it runs). A failure leaves the
    /// WAL for the next open to recover, as a crash would.
    fn checkpoint(&self) {
        if let Some(conn) = &self.conn {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!("store: could not checkpoint the WAL on closing: {e}");
            }
        }
    }

    /// Runs a batch in one transaction and answers every job only after
    /// the commit. Jobs almost never fail, so the batch first runs as it
    /// is; only when one fails on its own merits is it rolled back and run
    /// again with each job in a savepoint of its own, so one bad job fails
    /// alone. (A savepoint per job every time cost two more statements per
    /// job on the hot path.) A fault (full disk, I/O error, a panic) fails
    /// the whole batch; the connection is made usable again (rolled back,
    /// else reopened) for the next one.
    fn run_batch(&mut self, batch: Vec<Job>) {
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write(&batch)));
        let results = match written {
            Ok(Ok(results)) => {
                self.health.wrote();
                self.unindexed += messages_in(&batch);
                results
            }
            Ok(Err(fault)) => {
                self.recover();
                faulted(&batch, &self.health, fault.kind, &fault.reason)
            }
            Err(panic) => {
                // Whatever it was in the middle of, a fresh connection has none of it.
                self.conn = None;
                faulted(&batch, &self.health, FaultKind::Other, &panic_text(&*panic))
            }
        };
        answer_all(batch, results);
    }

    /// The connection, opened again if a fault dropped it.
    fn connection(&mut self) -> Result<&mut Connection, Fault> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.path)?);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    fn write(&mut self, batch: &[Job]) -> Result<Vec<JobResult>, Fault> {
        let conn = self.connection()?;
        match run_jobs(conn, batch, false) {
            Ok(results) => Ok(results),
            Err(first) if fault_kind(&first).is_some() => Err(first.into()),
            Err(first) => {
                tracing::debug!("a batch failed ({first}); running each job on its own");
                Ok(run_jobs(conn, batch, true)?)
            }
        }
    }

    /// After a fault: no transaction may stay open into the next batch (its
    /// BEGIN would fail); a connection that cannot roll back is reopened.
    fn recover(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.is_autocommit() {
            return;
        }
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(
                "store: the writer's connection could not roll back ({e}); reopening it"
            );
            self.conn = None;
        }
    }

    /// Brings the bulk-written indexes up to date in a transaction of their
    /// own. A failure is only logged: reads take the messages not indexed
    /// from the table meanwhile, and the next try (after as many messages
    /// again, or the next idle moment) picks them all up.
    fn bulk_index(&mut self) {
        let indexed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let conn = self.connection()?;
            let tx = conn.transaction()?;
            bulk_index::catch_up(&tx)?;
            tx.commit()?;
            Ok::<(), Fault>(())
        }));
        self.unindexed = 0;
        match indexed {
            Ok(Ok(())) => {}
            Ok(Err(fault)) => {
                tracing::warn!(
                    "store: could not bring the history and search indexes up to date ({}); \
                     reads take the newest messages from the table until the next try",
                    fault.reason
                );
                self.recover();
            }
            Err(_) => self.conn = None,
        }
    }

    /// With no request to try, a small write of the writer's own (the
    /// schema version written again as it is: one page) tells whether the
    /// fault has cleared.
    fn probe(&mut self) {
        let probed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let conn = self.connection()?;
            let tx = conn.transaction()?;
            let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
            Ok::<(), Fault>(())
        }));
        match probed {
            Ok(Ok(())) => {
                tracing::info!("store: writes succeed again");
                self.health.probed();
            }
            Ok(Err(fault)) => {
                self.health.failed(fault.kind, &fault.reason, 0);
                self.recover();
            }
            Err(_) => self.conn = None,
        }
    }
}

/// Runs the jobs in one transaction and commits it. Without `isolated`, the
/// first failing job fails the whole transaction (rolled back); with it,
/// each job runs in a savepoint and a failing one is rolled back alone,
/// unless it failed with a fault, which fails the whole transaction.
fn run_jobs(
    conn: &mut Connection,
    batch: &[Job],
    isolated: bool,
) -> Result<Vec<JobResult>, rusqlite::Error> {
    let mut results = Vec::with_capacity(batch.len());
    let mut tx = conn.transaction()?;
    for job in batch {
        if !isolated {
            results.push(Ok(run_job(&tx, job)?));
            continue;
        }
        let mut sp = tx.savepoint()?;
        match run_job(&sp, job) {
            Ok(r) => {
                sp.commit()?;
                results.push(Ok(r));
            }
            Err(e) if fault_kind(&e).is_some() => return Err(e),
            Err(e) => {
                sp.rollback()?;
                drop(sp);
                results.push(Err(StoreError::Write(e.to_string())));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

fn run_job(conn: &Connection, job: &Job) -> rusqlite::Result<Option<PruneReport>> {
    match job {
        Job::Apply { changes, .. } => changes
            .iter()
            .try_for_each(|c| apply_change(conn, c))
            .map(|_| None),
        Job::Prune { cutoff, .. } => prune(conn, *cutoff).map(Some),
    }
}

fn state_code(s: DeliveryState) -> i64 {
    match s {
        DeliveryState::Queued => 0,
        DeliveryState::Pushed => 1,
        DeliveryState::Surfaced => 2,
        DeliveryState::Seen => 3,
        DeliveryState::Acked => 4,
    }
}

fn state_from(code: i64) -> rusqlite::Result<DeliveryState> {
    Ok(match code {
        0 => DeliveryState::Queued,
        1 => DeliveryState::Pushed,
        2 => DeliveryState::Surfaced,
        3 => DeliveryState::Seen,
        4 => DeliveryState::Acked,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Integer,
                format!("unknown delivery state {other}").into(),
            ))
        }
    })
}

fn target_parts(t: &Target) -> (&'static str, &str) {
    match t {
        Target::Session(id) => ("session", id),
        Target::Operator(name) => ("operator", name),
        Target::Room(room) => ("room", room),
    }
}

fn target_from(kind: &str, name: String) -> rusqlite::Result<Target> {
    Ok(match kind {
        "session" => Target::Session(name),
        "operator" => Target::Operator(name),
        "room" => Target::Room(name),
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("unknown target kind {other}").into(),
            ))
        }
    })
}

/// Upserts a session's whole record.
fn put_session(tx: &Connection, s: &Session) -> rusqlite::Result<()> {
    tx.prepare_cached(
                "INSERT INTO sessions (id, nickname, harness, host, operator, pid, cwd, project, branch, status,
                    activity, last_tool, can_push, link, connected_at, last_seen_at, left_at, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
                 ON CONFLICT(id) DO UPDATE SET nickname = excluded.nickname, harness = excluded.harness,
                    host = excluded.host, operator = excluded.operator, pid = excluded.pid, cwd = excluded.cwd,
                    project = excluded.project, branch = excluded.branch, status = excluded.status,
                    activity = excluded.activity, last_tool = excluded.last_tool, can_push = excluded.can_push,
                    link = excluded.link, connected_at = excluded.connected_at,
                    last_seen_at = excluded.last_seen_at, left_at = excluded.left_at,
                    owner = excluded.owner",
            )?
            .execute(params![
                s.id,
                s.nickname,
                s.harness,
                s.host,
                s.operator,
                s.pid,
                s.cwd,
                s.project,
                s.branch,
                s.status,
                s.activity.as_str(),
                s.last_tool,
                s.can_push,
                s.link.as_str(),
                s.connected_at,
                s.last_seen_at,
                s.left_at,
                s.owner
            ])?;
    Ok(())
}

/// Inserts a token; its id or a live token's name already stored fails.
fn put_token(tx: &Connection, t: &TokenRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO tokens (id, name, scope, hash, created_at, created_by, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        t.id,
        t.name,
        t.scope.as_str(),
        t.hash,
        t.created_at,
        t.created_by,
        t.revoked_at
    ])?;
    Ok(())
}

/// Inserts a message and one delivery record per recipient.
fn put_message(tx: &Connection, m: &Message, deliveries: &[Delivery]) -> rusqlite::Result<()> {
    let (kind, target) = target_parts(&m.to);
    tx.prepare_cached(
        "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at, via)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![m.id, m.from, m.from_nickname, kind, target, m.reply_to, m.body, m.sent_at, m.via.as_str()])?;
    // Search and the history by sender and target come later, in bulk (bulk_index).
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (recipient, message_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for d in deliveries {
        insert.execute(params![
            d.recipient,
            d.message_id,
            state_code(d.state),
            d.updated_at
        ])?;
    }
    Ok(())
}

/// Inserts or replaces a reservation.
fn put_reservation(tx: &Connection, r: &Reservation) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO reservations
            (id, session_id, root, pattern, exclusive, reason, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        r.id,
        r.session_id,
        r.root,
        r.pattern,
        r.exclusive,
        r.reason,
        r.created_at,
        r.expires_at
    ])?;
    Ok(())
}

fn apply_change(tx: &Connection, change: &Change) -> rusqlite::Result<()> {
    match change {
        Change::PutSession(s) => put_session(tx, s)?,
        Change::TouchSession { id, last_seen_at } => {
            tx.prepare_cached(
                "UPDATE sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id = ?1",
            )?
            .execute(params![id, last_seen_at])?;
        }
        Change::ForgetSession { id } => {
            tx.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
                .execute(params![id])?;
            tx.prepare_cached("DELETE FROM memberships WHERE session_id = ?1")?
                .execute(params![id])?;
        }
        Change::PutMessage {
            message,
            deliveries,
        } => put_message(tx, message, deliveries)?,
        Change::AdvanceDelivery {
            message_id,
            recipient,
            state,
            at,
        } => {
            tx.prepare_cached(
                "UPDATE deliveries SET state = ?3, updated_at = ?4
                 WHERE recipient = ?1 AND message_id = ?2 AND state < ?3",
            )?
            .execute(params![recipient, message_id, state_code(*state), at])?;
        }
        Change::AckUpTo {
            recipient,
            upto,
            at,
        } => {
            // `+t.id`: the tail is found by rowid; on the id index SQLite
            // would walk every older message to find it.
            tx.prepare_cached(&format!(
                "UPDATE deliveries SET state = 4, updated_at = ?3
                 WHERE recipient = ?1 AND state < 4 AND message_id IN
                     (SELECT id FROM by_recipient WHERE recipient = ?1 AND id <= ?2
                      UNION ALL
                      SELECT t.id FROM messages t WHERE {} AND +t.id <= ?2)",
                bulk_index::in_tail("t")
            ))?
            .execute(params![recipient, upto, at])?;
        }
        Change::PutRoom(r) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO rooms (name, created_by, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![r.name, r.created_by, r.created_at])?;
        }
        Change::JoinRoom(m) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO memberships (room, session_id, joined_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![m.room, m.session_id, m.joined_at])?;
        }
        Change::LeaveRoom { room, session_id } => {
            tx.prepare_cached("DELETE FROM memberships WHERE room = ?1 AND session_id = ?2")?
                .execute(params![room, session_id])?;
        }
        Change::PutReservation(r) => put_reservation(tx, r)?,
        Change::DeleteReservation { id } => {
            tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                .execute(params![id])?;
        }
        Change::DeleteReservationsOf { session_id } => {
            tx.prepare_cached("DELETE FROM reservations WHERE session_id = ?1")?
                .execute(params![session_id])?;
        }
        // One daemon per SQLite file: no one else changes reservations.
        Change::ReservationsUnchangedSince { .. } => {}
        Change::PutToken(t) => put_token(tx, t)?,
        Change::RevokeToken { id, at } => {
            tx.prepare_cached(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![id, at])?;
        }
    }
    Ok(())
}

fn prune(tx: &Connection, cutoff: Millis) -> rusqlite::Result<PruneReport> {
    // Every message indexed first, so each old one is found in the indexes
    // and taken out of them.
    bulk_index::catch_up(tx)?;
    bulk_index::forget_before(tx, cutoff)?;
    let deliveries = tx.execute(
        "DELETE FROM deliveries WHERE message_id IN (SELECT id FROM messages WHERE sent_at < ?1)",
        params![cutoff],
    )? as u64;
    let messages = tx.execute("DELETE FROM messages WHERE sent_at < ?1", params![cutoff])? as u64;
    bulk_index::after_delete(tx)?;
    let gone: Vec<String> = tx
        .prepare("SELECT id FROM sessions WHERE left_at IS NOT NULL AND left_at < ?1")?
        .query_map(params![cutoff], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &gone {
        apply_change(tx, &Change::ForgetSession { id: id.clone() })?;
    }
    Ok(PruneReport {
        messages,
        deliveries,
        sessions: gone.len() as u64,
    })
}

fn session_from(r: &Row<'_>) -> rusqlite::Result<Session> {
    let activity: String = r.get("activity")?;
    let link: String = r.get("link")?;
    Ok(Session {
        id: r.get("id")?,
        nickname: r.get("nickname")?,
        harness: r.get("harness")?,
        host: r.get("host")?,
        operator: r.get("operator")?,
        pid: r.get("pid")?,
        cwd: r.get("cwd")?,
        project: r.get("project")?,
        branch: r.get("branch")?,
        status: r.get("status")?,
        activity: Activity::parse(&activity),
        last_tool: r.get("last_tool")?,
        can_push: r.get("can_push")?,
        link: LinkKind::parse(&link).unwrap_or_default(),
        link_up: false,
        wake: None,
        connected_at: r.get("connected_at")?,
        last_seen_at: r.get("last_seen_at")?,
        left_at: r.get("left_at")?,
        owner: r.get("owner")?,
    })
}

fn token_from(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let scope: String = r.get("scope")?;
    Ok(TokenRecord {
        id: r.get("id")?,
        name: r.get("name")?,
        scope: Scope::parse(&scope).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                e.to_string().into(),
            )
        })?,
        hash: r.get("hash")?,
        created_at: r.get("created_at")?,
        created_by: r.get("created_by")?,
        revoked_at: r.get("revoked_at")?,
    })
}

const MESSAGE_COLUMNS: &str =
    "m.id, m.sender, m.sender_nickname, m.target_kind, m.target, m.reply_to, m.body, m.sent_at";

fn message_from(r: &Row<'_>) -> rusqlite::Result<Message> {
    let kind: String = r.get(3)?;
    Ok(Message {
        id: r.get(0)?,
        from: r.get(1)?,
        from_nickname: r.get(2)?,
        to: target_from(&kind, r.get(4)?)?,
        reply_to: r.get(5)?,
        body: r.get(6)?,
        sent_at: r.get(7)?,
        via: {
            let via: String = r.get("via")?;
            SentVia::parse(&via).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    format!("unknown sender authentication {via:?}").into(),
                )
            })?
        },
    })
}

fn load(conn: &Connection) -> rusqlite::Result<Snapshot> {
    // One read transaction, so all the queries see the same commit: a
    // batch landing between them cannot yield a torn snapshot (say, a
    // membership of a session that is not in `sessions`).
    let tx = conn.unchecked_transaction()?;
    let conn: &Connection = &tx;
    let sessions = conn
        .prepare("SELECT * FROM sessions ORDER BY connected_at, id")?
        .query_map([], session_from)?
        .collect::<Result<_, _>>()?;
    let rooms = conn
        .prepare("SELECT name, created_by, created_at FROM rooms ORDER BY name")?
        .query_map([], |r| {
            Ok(Room {
                name: r.get(0)?,
                created_by: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let memberships = conn
        .prepare("SELECT room, session_id, joined_at FROM memberships ORDER BY room, joined_at")?
        .query_map([], |r| {
            Ok(Membership {
                room: r.get(0)?,
                session_id: r.get(1)?,
                joined_at: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let unread = conn
        .prepare(&format!(
            "SELECT {MESSAGE_COLUMNS}, d.recipient, d.state, d.updated_at, m.via AS via
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.state < 2 ORDER BY m.id, d.recipient"
        ))?
        .query_map([], |r| {
            let message = message_from(r)?;
            let delivery = Delivery {
                message_id: message.id.clone(),
                recipient: r.get(8)?,
                state: state_from(r.get(9)?)?,
                updated_at: r.get(10)?,
            };
            Ok((message, delivery))
        })?
        .collect::<Result<_, _>>()?;
    let reservations = conn
        .prepare(
            "SELECT id, session_id, root, pattern, exclusive, reason, created_at, expires_at
             FROM reservations ORDER BY created_at, id",
        )?
        .query_map([], |r| {
            Ok(Reservation {
                id: r.get(0)?,
                session_id: r.get(1)?,
                root: r.get(2)?,
                pattern: r.get(3)?,
                exclusive: r.get(4)?,
                reason: r.get(5)?,
                created_at: r.get(6)?,
                expires_at: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let tokens = conn
        .prepare("SELECT * FROM tokens ORDER BY created_at, id")?
        .query_map([], token_from)?
        .collect::<Result<_, _>>()?;
    tx.commit()?;
    Ok(Snapshot {
        sessions,
        rooms,
        memberships,
        unread,
        reservations,
        tokens,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.read(load).await
    }

    fn submit(&self, changes: Vec<Change>) -> Commit {
        self.submit_job(changes, false)
    }

    fn submit_unhurried(&self, changes: Vec<Change>) -> Commit {
        self.submit_job(changes, true)
    }

    fn apply_later(&self, changes: Vec<Change>) {
        if self
            .writer
            .send(Job::Apply {
                changes,
                done: None,
                unhurried: false,
            })
            .is_err()
        {
            tracing::warn!("store writer has stopped; a background write was dropped");
        }
    }

    async fn inbox(&self, q: InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        self.read(move |conn| {
            let max_state = if q.include_read { 4 } else { 1 };
            // usize::MAX (all of them) does not fit SQLite's i64.
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let mut entries: Vec<InboxEntry> = conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS}, d.state, m.via AS via
                     FROM ({}) mine
                     JOIN deliveries d ON d.message_id = mine.id AND d.recipient = ?1
                     JOIN messages m ON m.id = d.message_id
                     WHERE d.state <= ?2 ORDER BY d.message_id DESC LIMIT ?3",
                    bulk_index::delivered_to("?1", "d.state <= ?2", "?3")
                ))?
                .query_map(params![q.recipient, max_state, limit], |r| {
                    Ok(InboxEntry {
                        message: message_from(r)?,
                        state: state_from(r.get(8)?)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            entries.reverse();
            Ok(entries)
        })
        .await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS}, m.via AS via FROM messages m WHERE m.id = ?1"
            ))?
            .query_row(params![id], message_from)
            .optional()
        })
        .await
    }

    async fn deliveries(&self, message_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let message_id = message_id.to_string();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT recipient, state, updated_at FROM deliveries WHERE message_id = ?1 ORDER BY recipient",
            )?
            .query_map(params![message_id], |r| {
                Ok(Delivery {
                    message_id: message_id.clone(),
                    recipient: r.get(0)?,
                    state: state_from(r.get(1)?)?,
                    updated_at: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()
        })
        .await
    }

    async fn thread(&self, id: &str, reader: &str) -> Result<Vec<Message>, StoreError> {
        let (id, reader) = (id.to_string(), reader.to_string());
        self.read(move |conn| {
            // Up to the root through reply_to, then down through every reply.
            let sql = format!(
                "WITH RECURSIVE up(id, reply_to, depth) AS (
                     SELECT id, reply_to, 0 FROM messages WHERE id = ?1
                     UNION ALL
                     SELECT m.id, m.reply_to, up.depth + 1 FROM messages m JOIN up ON m.id = up.reply_to
                     WHERE up.depth < 1000
                 ),
                 root(id) AS (SELECT id FROM up ORDER BY depth DESC LIMIT 1),
                 down(id, depth) AS (
                     SELECT id, 0 FROM root
                     UNION ALL
                     SELECT m.id, down.depth + 1 FROM messages m JOIN down ON m.reply_to = down.id
                     WHERE down.depth < 1000
                 )
                 SELECT {MESSAGE_COLUMNS}, m.via AS via FROM messages m JOIN down ON m.id = down.id
                 WHERE m.sender = ?2
                    OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.recipient = ?2)
                 ORDER BY m.id LIMIT 1000"
            );
            conn.prepare_cached(&sql)?
                .query_map(params![id, reader], message_from)?
                .collect()
        })
        .await
    }

    async fn history(&self, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        self.read(move |conn| history::history(conn, &query)).await
    }

    async fn search(&self, query: SearchQuery) -> Result<Vec<Message>, StoreError> {
        self.read(move |conn| history::search(conn, &query)).await
    }

    async fn prune(&self, cutoff: Millis) -> Result<PruneReport, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Job::Prune { cutoff, done })
            .map_err(|_| StoreError::Stopped)?;
        wait.await.map_err(|_| StoreError::Stopped)?
    }

    fn health(&self) -> Arc<WriteHealth> {
        self.health.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Session;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// A store whose writer's commits fail (a commit hook turns each into
    /// a rollback, as a full disk fails the commit's write) while the
    /// returned switch is on.
    fn store_with_failing_commits(path: &Path) -> (SqliteStore, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        let hook = fail.clone();
        let store = SqliteStore::open_with(
            path.to_path_buf(),
            Indexing::default(),
            UNHURRIED_WAIT,
            move |conn| {
                conn.commit_hook(Some(move || hook.load(Ordering::SeqCst)));
            },
        )
        .unwrap();
        (store, fail)
    }

    /// A store that counts its writer's commits.
    fn store_counting_commits(
        path: &Path,
        unhurried_wait: Duration,
    ) -> (SqliteStore, Arc<AtomicU64>) {
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        // No indexing while open: its commits would be counted too.
        let indexing = Indexing {
            every: u64::MAX,
            when_idle: None,
        };
        let store =
            SqliteStore::open_with(path.to_path_buf(), indexing, unhurried_wait, move |conn| {
                conn.commit_hook(Some(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    false
                }));
            })
            .unwrap();
        (store, commits)
    }

    // Proves an unhurried write waits for company: followed by a write, the
    // two share one commit (the hold is 30 s here, so only the second
    // write can have ended it); alone, it is committed once the hold runs
    // out, and not before.
    #[tokio::test]
    async fn an_unhurried_write_shares_the_next_commit_or_waits_out_its_hold() {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, commits) =
            store_counting_commits(&dir.path().join("a.db"), Duration::from_secs(30));
        let began = Instant::now();
        let mark = store.submit_unhurried(vec![direct("01A", "bob")]);
        let next = store.submit(vec![direct("01B", "bob")]);
        next.await.unwrap();
        mark.await.unwrap();
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the second write ended the hold"
        );
        assert_eq!(commits.load(Ordering::SeqCst), 1, "one commit for both");
        drop(store);

        let (store, commits) =
            store_counting_commits(&dir.path().join("b.db"), Duration::from_millis(200));
        let began = Instant::now();
        store
            .submit_unhurried(vec![direct("01A", "bob")])
            .await
            .unwrap();
        assert!(
            began.elapsed() >= Duration::from_millis(200),
            "held for its whole wait"
        );
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.message("01A").await.unwrap().map(|m| m.id),
            Some("01A".to_string())
        );
    }

    fn direct(id: &str, to: &str) -> Change {
        Change::PutMessage {
            message: Message {
                id: id.into(),
                from: "alice".into(),
                from_nickname: "alice".into(),
                to: Target::Session(to.into()),
                reply_to: None,
                body: format!("body of {id}"),
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

    fn stored(snap: &Snapshot) -> (Vec<String>, Vec<String>) {
        (
            snap.sessions.iter().map(|s| s.id.clone()).collect(),
            snap.unread.iter().map(|(m, _)| m.id.clone()).collect(),
        )
    }

    // Proves the writer survives failing commits: each failed write is
    // refused with the store's words and applies nothing, the writer keeps
    // taking work (no "stopped"), health says degraded with the reason and
    // counts the failed requests, and the first write after the fault
    // clears commits and ends the degraded state; after a reopen exactly
    // the acknowledged writes are there.
    #[tokio::test]
    async fn the_writer_survives_failing_commits() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("muster.db");
        let (store, fail) = store_with_failing_commits(&path);
        let health = store.health();
        store
            .apply(vec![Change::PutSession(Session::new("bob", "b", 1))])
            .await
            .unwrap();
        assert!(!health.is_degraded());

        fail.store(true, Ordering::SeqCst);
        store.apply_later(vec![Change::PutSession(Session::new("carol", "c", 1))]);
        for id in ["01B", "01C"] {
            let err = store.apply(vec![direct(id, "bob")]).await.unwrap_err();
            assert!(
                matches!(&err, StoreError::Unavailable(why) if why.contains("constraint failed")),
                "{err:?}"
            );
            assert!(
                err.to_string().starts_with("the store cannot write: "),
                "{err}"
            );
        }
        let fault = health.fault().expect("degraded while commits fail");
        assert_eq!(fault.kind, FaultKind::Other);
        assert!(
            fault.reason.contains("constraint failed"),
            "{}",
            fault.reason
        );

        fail.store(false, Ordering::SeqCst);
        store.apply(vec![direct("01D", "bob")]).await.unwrap();
        assert!(!health.is_degraded(), "the next commit ends it");
        let errors: u64 = health.errors().iter().map(|(_, n)| n).sum();
        assert_eq!(errors, 3, "the background write and two submits");

        let want = (vec!["bob".to_string()], vec!["01D".to_string()]);
        assert_eq!(stored(&store.load().await.unwrap()), want);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(stored(&store.load().await.unwrap()), want);
    }

    // Proves a degraded store finds out by itself that writes succeed
    // again: with no request coming, the writer's probe ends the degraded
    // state within a few seconds of the fault clearing, and not before.
    #[tokio::test]
    async fn the_writer_probes_until_the_fault_clears() {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, fail) = store_with_failing_commits(&dir.path().join("muster.db"));
        let health = store.health();
        fail.store(true, Ordering::SeqCst);
        store.apply(vec![direct("01A", "bob")]).await.unwrap_err();
        tokio::time::sleep(PROBE_EVERY * 2 + std::time::Duration::from_millis(200)).await;
        assert!(health.is_degraded(), "probes fail while the fault lasts");
        fail.store(false, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + PROBE_EVERY * 5;
        while health.is_degraded() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!health.is_degraded(), "a probe succeeded");
        assert_eq!(health.errors().iter().map(|(_, n)| n).sum::<u64>(), 1);
    }

    /// A database file brought to `version` by this muster's own first
    /// migrations, as an older muster left it.
    fn at_version(path: &Path, version: usize) {
        let conn = open(path).unwrap();
        for (i, sql) in MIGRATIONS.iter().enumerate().take(version) {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
    }

    /// A database in a new directory, migrated to `version` only, with
    /// `sql` run on it as an older muster would have written it.
    fn older_database(version: usize, sql: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("muster.db");
        at_version(&path, version);
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        (dir, path)
    }

    /// Each message in the recipient's inbox, read or not, and its state.
    async fn inbox_states(store: &SqliteStore, recipient: &str) -> Vec<(String, DeliveryState)> {
        let query = InboxQuery {
            recipient: recipient.into(),
            include_read: true,
            limit: 10,
        };
        let entries = store.inbox(query).await.unwrap();
        entries
            .into_iter()
            .map(|e| (e.message.id, e.state))
            .collect()
    }

    fn schema_version(path: &Path) -> usize {
        let conn = Connection::open(path).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap() as usize
    }

    // Proves a database at every older schema version opens, reaches the
    // current version, and then stores and loads every kind of record.
    #[tokio::test]
    async fn every_older_version_migrates_to_current() {
        for version in 0..SCHEMA_VERSION {
            let dir = tempfile::TempDir::new().unwrap();
            let path = dir.path().join("muster.db");
            at_version(&path, version);
            let store = SqliteStore::open(&path)
                .unwrap_or_else(|e| panic!("opening a version-{version} database: {e}"));
            assert_eq!(schema_version(&path), SCHEMA_VERSION, "from {version}");
            let message = Message {
                id: "01A".into(),
                from: "alice".into(),
                from_nickname: "alice".into(),
                to: Target::Room("dev".into()),
                reply_to: None,
                body: "hi".into(),
                sent_at: 1,
                via: Default::default(),
            };
            store
                .apply(vec![
                    Change::PutSession(Session::new("bob", "b", 1)),
                    Change::PutRoom(Room {
                        name: "dev".into(),
                        created_by: "alice".into(),
                        created_at: 1,
                    }),
                    Change::JoinRoom(Membership {
                        room: "dev".into(),
                        session_id: "bob".into(),
                        joined_at: 1,
                    }),
                    Change::PutMessage {
                        message: message.clone(),
                        deliveries: vec![Delivery {
                            message_id: "01A".into(),
                            recipient: "bob".into(),
                            state: DeliveryState::Queued,
                            updated_at: 1,
                        }],
                    },
                    Change::PutReservation(Reservation {
                        id: "r1".into(),
                        session_id: "bob".into(),
                        root: "/repo".into(),
                        pattern: "src/*.rs".into(),
                        exclusive: true,
                        reason: String::new(),
                        created_at: 1,
                        expires_at: 2,
                    }),
                ])
                .await
                .unwrap_or_else(|e| panic!("writing after migrating from {version}: {e}"));
            let snap = store.load().await.unwrap();
            assert_eq!(snap.sessions.len(), 1, "from {version}");
            assert_eq!(snap.memberships.len(), 1, "from {version}");
            assert_eq!(snap.unread.len(), 1, "from {version}");
            assert_eq!(snap.reservations.len(), 1, "from {version}");
            assert_eq!(
                store.thread("01A", "bob").await.unwrap(),
                vec![message],
                "from {version}"
            );
        }
    }

    // Proves the search migration indexes the messages already stored: a
    // message an older muster wrote is found by its words after the
    // upgrade, and a reader's history lists it.
    #[tokio::test]
    async fn messages_stored_before_search_existed_are_found() {
        // Version 5: the last without search.
        let (_dir, path) = older_database(
            5,
            "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at)
             VALUES ('01A', 'alice', 'alice', 'session', 'bob', NULL, 'the Flaky test again', 1),
                    ('01B', 'bob', 'bob', 'session', 'alice', NULL, 'fixed it', 2);
             INSERT INTO deliveries (recipient, message_id, state, updated_at) VALUES ('bob', '01A', 4, 1);",
        );
        let store = SqliteStore::open(&path).unwrap();
        let found = store
            .search(SearchQuery {
                text: "flaky TEST".into(),
                within: HistoryQuery::newest(10),
            })
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["01A"]
        );
        let mut bobs = HistoryQuery::newest(10);
        bobs.reader = Some("bob".into());
        let history = store.history(bobs).await.unwrap();
        assert_eq!(
            history.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["01B", "01A"]
        );
    }

    // Proves a database migrated by the first form of migration 6 (which
    // kept the search index by triggers) loses the triggers, so a message
    // is indexed once: found once, and gone from the index once pruned.
    #[tokio::test]
    async fn search_triggers_of_the_first_migration_6_are_dropped() {
        let (_dir, path) = older_database(
            6,
            "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
                 INSERT INTO messages_fts (rowid, body) VALUES (new.rowid, new.body);
             END;
             CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
                 INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
             END;",
        );
        let store = SqliteStore::open(&path).unwrap();
        store.apply(vec![direct("01A", "bob")]).await.unwrap();
        let search = || SearchQuery {
            text: "body".into(),
            within: HistoryQuery::newest(10),
        };
        assert_eq!(store.search(search()).await.unwrap().len(), 1);
        let triggers: i64 = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(triggers, 0);
        store.prune(2).await.unwrap();
        assert!(store.search(search()).await.unwrap().is_empty());
        let check = Connection::open(&path).unwrap().execute(
            "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
            [],
        );
        assert!(check.is_ok(), "{check:?}");
    }

    // Proves the version-9 migration (deliveries keyed by message, found by
    // recipient through `by_recipient`) keeps every delivery: of a message
    // the bulk indexes held before and of one they did not, each recipient
    // finds its own in its inbox and history, and acking up to the newest
    // acks only that recipient's.
    #[tokio::test]
    async fn version_8_deliveries_are_found_by_their_recipients() {
        let (_dir, path) = older_database(
            8,
            "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at)
             VALUES ('01A', 'alice', 'alice', 'room', 'ops', NULL, 'one', 1),
                    ('01B', 'alice', 'alice', 'session', 'bob', NULL, 'two', 2);
             INSERT INTO deliveries (recipient, message_id, state, updated_at) VALUES
                 ('bob', '01A', 2, 1), ('carol', '01A', 0, 1), ('bob', '01B', 1, 2);
             INSERT INTO by_sender VALUES ('alice', '01A');
             INSERT INTO by_target VALUES ('room', 'ops', '01A');
             UPDATE indexed_upto SET upto = (SELECT rowid FROM messages WHERE id = '01A');",
        );
        let store = SqliteStore::open(&path).unwrap();
        let (surfaced, pushed, queued, acked) = (
            DeliveryState::Surfaced,
            DeliveryState::Pushed,
            DeliveryState::Queued,
            DeliveryState::Acked,
        );
        assert_eq!(
            inbox_states(&store, "bob").await,
            [("01A".into(), surfaced), ("01B".into(), pushed)]
        );
        assert_eq!(
            inbox_states(&store, "carol").await,
            [("01A".into(), queued)]
        );
        let mut bobs = HistoryQuery::newest(10);
        bobs.reader = Some("bob".into());
        let history = store.history(bobs).await.unwrap();
        assert_eq!(
            history.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["01B", "01A"]
        );
        store
            .apply(vec![Change::AckUpTo {
                recipient: "bob".into(),
                upto: "01B".into(),
                at: 3,
            }])
            .await
            .unwrap();
        assert_eq!(
            inbox_states(&store, "bob").await,
            [("01A".into(), acked), ("01B".into(), acked)]
        );
        assert_eq!(
            inbox_states(&store, "carol").await,
            [("01A".into(), queued)]
        );
    }

    // Proves the version-3 migration keeps every delivery's meaning: a
    // version-2 muster stored acked as 3, which now loads as acked (not
    // seen), and queued, pushed and surfaced keep their codes.
    #[tokio::test]
    async fn version_2_deliveries_keep_their_states() {
        let (_dir, path) = older_database(
            2,
            "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at)
             VALUES ('01A', 'alice', 'alice', 'session', 'bob', NULL, 'hi', 1);
             INSERT INTO deliveries (recipient, message_id, state, updated_at) VALUES
                 ('bob', '01A', 0, 1), ('carol', '01A', 1, 1), ('dave', '01A', 2, 1), ('erin', '01A', 3, 1);",
        );
        let store = SqliteStore::open(&path).unwrap();
        let states: Vec<(String, DeliveryState)> = store
            .deliveries("01A")
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.recipient, d.state))
            .collect();
        assert_eq!(
            states,
            vec![
                ("bob".into(), DeliveryState::Queued),
                ("carol".into(), DeliveryState::Pushed),
                ("dave".into(), DeliveryState::Surfaced),
                ("erin".into(), DeliveryState::Acked),
            ]
        );
        assert_eq!(store.load().await.unwrap().unread.len(), 2);
    }
}
