//! The writer: one task that takes every queued request as one batch, runs
//! the batch in one transaction, and answers each request only after the
//! commit (group commit).
//!
//! A batch first runs *pipelined*: every statement of every request sent
//! at once, answered in order, then one commit, so a batch of many requests
//! costs a few round trips rather than several per request. Should any
//! statement fail, that transaction is rolled back and the batch runs again
//! one request at a time, each in its own savepoint, so the failing request
//! fails alone and the others commit. Both ways make the same changes in
//! the same order: the first runs [`writes::plan_folded`] (a run of new
//! messages as two statements), the second [`writes::plan`] per request; a
//! batch with a prune always takes the second way (a prune reads before it
//! deletes).
//!
//! Every transaction that changes anything takes [`LOG_LOCK`] first and
//! logs what it committed as one entry of the change log last
//! ([`writes::log`]), so the other daemons on the database apply it (see
//! `muster_store::shared`).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, Transaction};
use muster_core::Millis;
use muster_store::health::{FaultKind, WriteHealth};
use muster_store::job::{answer_all, faulted, panic_text, Job, JobResult};
use muster_store::Change;
use tokio::sync::mpsc;
use tokio_postgres::Statement;

use crate::errors;
use crate::writes::{self, Stmt};

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 4_096;

/// The advisory lock a writing transaction holds until it commits ("muster
/// log"): writers of every daemon take turns, so the change log's sequence
/// order is the order of the commits, and a guard that reads the log sees
/// every decision committed before its own.
pub const LOG_LOCK: i64 = 0x006d_7573_746c_6f67;

/// While the most recent write failed, the writer tries a small write of
/// its own this often when no request comes, so health recovers without
/// traffic.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why a whole batch failed: a fault of the backend, not of one request.
pub struct Fault {
    kind: FaultKind,
    reason: String,
}

impl Fault {
    fn of(e: &tokio_postgres::Error) -> Self {
        Fault {
            kind: errors::fault_kind(e).unwrap_or(FaultKind::Other),
            reason: errors::text(e),
        }
    }
}

/// Takes whatever is queued (up to [`MAX_BATCH`]) as one batch, until every
/// sender is gone and the queue is drained. A batch a fault failed leaves
/// the writer running: the next is tried afresh on a new connection.
pub async fn writer_loop(
    pool: Pool,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    health: Arc<WriteHealth>,
    origin: Arc<str>,
) {
    let mut batch = Vec::new();
    // The writer keeps one connection (readers never make it wait for one),
    // and takes a new one after a batch whose transaction failed.
    let mut connection = None;
    loop {
        let taken = if health.is_degraded() {
            match tokio::time::timeout(PROBE_EVERY, jobs.recv_many(&mut batch, MAX_BATCH)).await {
                Ok(taken) => taken,
                Err(_) => {
                    probe(&pool, &mut connection, &health).await;
                    continue;
                }
            }
        } else {
            jobs.recv_many(&mut batch, MAX_BATCH).await
        };
        if taken == 0 {
            return;
        }
        let batch = std::mem::take(&mut batch);
        run_batch(&pool, &mut connection, batch, &health, &origin).await;
        // The senders just answered are runnable now; letting them run
        // first lets their next requests join the next batch instead of
        // waiting a whole commit for the one after.
        tokio::task::yield_now().await;
    }
}

/// Runs a batch and answers every job, only after the commit. A fault or
/// a panic fails every job of it with the reason, in words.
async fn run_batch(
    pool: &Pool,
    connection: &mut Option<Object>,
    batch: Vec<Job>,
    health: &WriteHealth,
    origin: &str,
) {
    let mut written = write_caught(pool, connection, &batch, origin).await;
    // Writers of several daemons run their statements side by side: two
    // that took row locks in opposite orders deadlock, and PostgreSQL
    // rolls one back. Nothing of it was applied, so it runs again.
    for _ in 0..BUSY_RETRIES {
        match &written {
            Ok(Err(fault)) if fault.kind == FaultKind::Busy => {
                tracing::debug!("a batch met {}; running it again", fault.reason);
                written = write_caught(pool, connection, &batch, origin).await;
            }
            _ => break,
        }
    }
    let results = match written {
        Ok(Ok(results)) => {
            health.wrote();
            results
        }
        Ok(Err(fault)) => {
            discard(connection);
            faulted(&batch, health, fault.kind, &fault.reason)
        }
        Err(panic) => {
            discard(connection);
            faulted(&batch, health, FaultKind::Other, &panic_text(&*panic))
        }
    };
    answer_all(batch, results);
}

/// A batch that met a deadlock or a serialization failure is run again
/// this many times before its requests fail.
const BUSY_RETRIES: usize = 3;

/// [`write_batch`], with a panic caught as such.
async fn write_caught(
    pool: &Pool,
    connection: &mut Option<Object>,
    batch: &[Job],
    origin: &str,
) -> std::thread::Result<Result<Vec<JobResult>, Fault>> {
    futures_util::FutureExt::catch_unwind(AssertUnwindSafe(write_batch(
        pool, connection, batch, origin,
    )))
    .await
}

/// With no request to try, a transaction of the writer's own that takes
/// a transaction id (so commits a WAL record) tells whether the fault
/// has cleared.
async fn probe(pool: &Pool, connection: &mut Option<Object>, health: &WriteHealth) {
    let probed = async {
        let client = writer_client(pool, connection).await?;
        client
            .batch_execute("BEGIN; SELECT txid_current(); COMMIT")
            .await
            .map_err(|e| Fault::of(&e))
    };
    match futures_util::FutureExt::catch_unwind(AssertUnwindSafe(probed)).await {
        Ok(Ok(())) => {
            tracing::info!("store: writes succeed again");
            health.probed();
        }
        Ok(Err(fault)) => {
            discard(connection);
            health.failed(fault.kind, &fault.reason, 0);
        }
        Err(_) => discard(connection),
    }
}

/// Drops the writer's connection for good after a fault: taken out of the
/// pool, so neither the next batch nor a reader is handed it again.
fn discard(connection: &mut Option<Object>) {
    if let Some(object) = connection.take() {
        drop(Object::take(object));
    }
}

/// The writer's connection, taken from the pool if it has none (or the
/// server ended it while the writer was idle).
async fn writer_client<'c>(
    pool: &Pool,
    connection: &'c mut Option<Object>,
) -> Result<&'c mut Object, Fault> {
    if connection.as_ref().is_some_and(|c| c.is_closed()) {
        *connection = None;
    }
    match connection {
        Some(client) => Ok(client),
        None => Ok(connection.insert(pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => Fault::of(&e),
            other => Fault {
                kind: FaultKind::Connection,
                reason: other.to_string(),
            },
        })?)),
    }
}

/// What one job runs.
enum Work {
    /// Its changes' statements, in order, and its guards (which must run
    /// after `LOG_LOCK` is held).
    Statements(Vec<Stmt>, Vec<Stmt>),
    Prune(Millis),
}

fn work_of(job: &Job, origin: &str) -> Work {
    match job {
        Job::Apply { changes, .. } => {
            let (mut out, mut guards) = (Vec::with_capacity(changes.len()), Vec::new());
            for change in changes {
                writes::plan(change, &mut out);
                writes::guard(change, origin, &mut guards);
            }
            Work::Statements(out, guards)
        }
        Job::Prune { cutoff, .. } => Work::Prune(*cutoff),
    }
}

/// The changes of the jobs that `kept` says committed, in order.
fn changes_of(batch: &[Job], kept: impl Fn(usize) -> bool) -> Vec<&Change> {
    batch
        .iter()
        .enumerate()
        .filter(|(i, _)| kept(*i))
        .flat_map(|(_, job)| match job {
            Job::Apply { changes, .. } => changes.iter().collect(),
            Job::Prune { .. } => Vec::new(),
        })
        .collect()
}

/// The statement that takes [`LOG_LOCK`].
fn lock_log() -> Stmt {
    Stmt {
        sql: "SELECT pg_advisory_xact_lock($1)",
        params: vec![Box::new(LOG_LOCK)],
    }
}

/// The batch's transaction: one result per job, or the fault that kept the
/// whole batch out (no connection, the commit failed, a request met a
/// fault of the server).
async fn write_batch(
    pool: &Pool,
    connection: &mut Option<Object>,
    batch: &[Job],
    origin: &str,
) -> Result<Vec<JobResult>, Fault> {
    let client = writer_client(pool, connection).await?;
    let all = changes_of(batch, |_| true);
    let has_prune = batch.iter().any(|job| matches!(job, Job::Prune { .. }));
    if !has_prune {
        let (mut body, mut guards) = (Vec::new(), Vec::new());
        writes::plan_folded(&all, &mut body);
        for change in &all {
            writes::guard(change, origin, &mut guards);
        }
        // A transaction that changes nothing is neither serialized nor logged.
        let (lock, log) = if all.is_empty() {
            (None, None)
        } else {
            (Some(lock_log()), Some(writes::log(origin, &all)))
        };
        // The statements first, so other daemons' writers run theirs at the
        // same time; the lock only for the guards and the log entry.
        let statements: Vec<&Stmt> = body
            .iter()
            .chain(&lock)
            .chain(&guards)
            .chain(&log)
            .collect();
        match pipelined(client, &statements).await {
            Ok(()) => return Ok(batch.iter().map(|_| Ok(None)).collect()),
            Err(e) if errors::fault_kind(&e).is_some() => return Err(Fault::of(&e)),
            // The failed statement aborted the transaction, and its COMMIT
            // rolled it back.
            Err(e) => tracing::debug!(
                "a pipelined batch failed ({}); running it request by request",
                errors::text(&e)
            ),
        }
    }
    let work: Vec<Work> = batch.iter().map(|job| work_of(job, origin)).collect();
    one_by_one(client, batch, &work, origin).await
}

/// One transaction of the statements, in order: `BEGIN`, every statement
/// and `COMMIT` all sent before the first answer is awaited, so the whole
/// batch is one round trip, and `LOG_LOCK` (taken by one of the statements)
/// is held only while the server runs the rest and commits, never across a
/// round trip to this process (the other daemons' writers wait for it).
/// Should a statement fail, the server refuses the rest and turns the
/// `COMMIT` into a rollback: the first error comes back, nothing applied.
/// Every statement is prepared first, so the first poll of each sends it at
/// once; futures are only ever polled oldest first, so none is sent before
/// one ahead of it.
async fn pipelined(client: &Object, statements: &[&Stmt]) -> Result<(), tokio_postgres::Error> {
    let mut prepared: HashMap<&'static str, Statement> = HashMap::new();
    for s in statements {
        if !prepared.contains_key(s.sql) {
            prepared.insert(s.sql, client.prepare_cached(s.sql).await?);
        }
    }
    type Execute<'f> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'f>>;
    let begin: Execute<'_> = Box::pin(client.batch_execute("BEGIN"));
    let commit: Execute<'_> = Box::pin(client.batch_execute("COMMIT"));
    let body = statements.iter().map(|s| {
        let execute = client.execute_raw(&prepared[s.sql], s.params());
        Box::pin(async move { execute.await.map(drop) }) as Execute<'_>
    });
    let mut pending: Vec<Option<Execute<'_>>> = std::iter::once(begin)
        .chain(body)
        .chain(std::iter::once(commit))
        .map(Some)
        .collect();
    let mut first_error = None;
    let mut sent = false;
    // Every future before this one has its answer.
    let mut oldest = 0;
    // The first poll of each future sends its statement: the first pass
    // polls them all, in order. After that answers come back in order, so
    // a pass stops at the first one still waiting.
    std::future::poll_fn(|cx| {
        while pending.get(oldest).is_some_and(Option::is_none) {
            oldest += 1;
        }
        for slot in pending[oldest..].iter_mut() {
            let Some(execute) = slot else { continue };
            match execute.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    *slot = None;
                    if let (Err(e), None) = (result, &first_error) {
                        first_error = Some(e);
                    }
                }
                Poll::Pending if sent => return Poll::Pending,
                Poll::Pending => {}
            }
        }
        if pending[oldest..].iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            sent = true;
            Poll::Pending
        }
    })
    .await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs each job in its own savepoint: one that fails on its own merits
/// rolls back alone; one that meets a fault of the server fails the batch.
async fn one_by_one(
    client: &mut Object,
    batch: &[Job],
    work: &[Work],
    origin: &str,
) -> Result<Vec<JobResult>, Fault> {
    let fault = |e: tokio_postgres::Error| Fault::of(&e);
    let mut tx = client.transaction().await.map_err(fault)?;
    writes::exec(&tx, &lock_log()).await.map_err(fault)?;
    let mut results = Vec::with_capacity(work.len());
    for w in work {
        let sp = tx.transaction().await.map_err(fault)?;
        let result = match w {
            // The lock is held from the transaction's start here.
            Work::Statements(statements, guards) => match run_all(&sp, statements).await {
                Ok(()) => run_all(&sp, guards).await.map(|()| None),
                Err(e) => Err(e),
            },
            Work::Prune(cutoff) => writes::prune(&sp, *cutoff).await.map(Some),
        };
        match result {
            Ok(r) => {
                sp.commit().await.map_err(fault)?;
                results.push(Ok(r));
            }
            Err(e) if errors::fault_kind(&e).is_some() => return Err(fault(e)),
            Err(e) => {
                sp.rollback().await.map_err(fault)?;
                results.push(Err(errors::refusal(&e)));
            }
        }
    }
    let committed = changes_of(batch, |i| results[i].is_ok());
    if !committed.is_empty() {
        writes::exec(&tx, &writes::log(origin, &committed))
            .await
            .map_err(fault)?;
    }
    tx.commit().await.map_err(fault)?;
    Ok(results)
}

async fn run_all(tx: &Transaction<'_>, statements: &[Stmt]) -> Result<(), tokio_postgres::Error> {
    for s in statements {
        writes::exec(tx, s).await?;
    }
    Ok(())
}
