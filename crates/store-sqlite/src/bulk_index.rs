//! The indexes the writer fills in bulk: messages by sender (`by_sender`),
//! by target (`by_target`), by their words (`messages_fts`), and the
//! deliveries by recipient (`by_recipient`).
//!
//! Why in bulk: sixteen senders writing to sixteen receivers put each
//! message on a leaf of its own in every index keyed by sender, target or
//! recipient, so each message dirtied pages no other message of its commit
//! shared, and FTS5 wrote a segment per commit. BENCHMARKS.md (2026-12-03)
//! measured the first three at 50–70 µs of the writer's 105–130 µs per
//! message; deliveries keyed by recipient dirtied a leaf per recipient
//! too, 9.1 `pwrite`s per message against 6.6 now (2026-12-06). Filled for
//! hundreds of messages at once, each leaf takes many entries per write.
//!
//! The rule every read relies on: each message whose rowid is at most
//! `indexed_upto.upto` is in all four indexes (with every delivery it
//! has), and no newer one is. The newer ones (the tail, at most
//! [`Indexing::every`] plus one batch, or none once the writer has been
//! idle a moment) are read from the tables themselves: history by rowid,
//! a recipient's deliveries through the tail's messages, search through a
//! temporary index of the reading connection's own ([`index_tail`]).

use std::time::Duration;

use rusqlite::{params, Connection};

/// When the writer brings the bulk-written indexes up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexing {
    /// After this many messages have been written since the last time.
    pub every: u64,
    /// Once no write has come for this long, if any message is not in them
    /// yet (`None`: only every [`every`](Self::every) messages).
    pub when_idle: Option<Duration>,
}

impl Default for Indexing {
    /// Every 256 messages, or after 200 ms without a write: a read takes at
    /// most a few hundred rows past the indexes, and a daemon that goes
    /// quiet has every message indexed almost at once. A search indexes
    /// those rows for itself: with 255 of them it took 3 ms, against 6 ms
    /// with 1,023 (`muster-bench history`), while the writer spent about
    /// 5 µs more per message at 256 than at 1,024.
    fn default() -> Self {
        Indexing {
            every: 256,
            when_idle: Some(Duration::from_millis(200)),
        }
    }
}

/// `m`'s rows that are not in the bulk-written indexes yet.
pub(crate) fn in_tail(m: &str) -> String {
    format!("{m}.rowid > (SELECT upto FROM indexed_upto)")
}

/// The ids of the messages delivered to `recipient` (an SQL value, bound by
/// the caller) whose delivery `d` meets `condition`: the newest `limit` of
/// those in `by_recipient`, and every one of the tail's, for the caller to
/// join to its deliveries again, filter, order and limit.
pub(crate) fn delivered_to(recipient: &str, condition: &str, limit: &str) -> String {
    format!(
        "SELECT id FROM (SELECT r.id FROM by_recipient r
                         JOIN deliveries d ON d.message_id = r.id AND d.recipient = r.recipient
                         WHERE r.recipient = {recipient} AND {condition}
                         ORDER BY r.id DESC LIMIT {limit})
         UNION ALL
         SELECT t.id FROM messages t WHERE {}",
        in_tail("t")
    )
}

/// How many messages are not in the bulk-written indexes yet.
pub(crate) fn unindexed(conn: &Connection) -> rusqlite::Result<u64> {
    let count: i64 = conn.query_row(
        &format!("SELECT count(*) FROM messages m WHERE {}", in_tail("m")),
        [],
        |r| r.get(0),
    )?;
    Ok(count.max(0) as u64)
}

/// Puts every message not yet indexed into the four indexes, within the
/// caller's transaction.
pub(crate) fn catch_up(tx: &Connection) -> rusqlite::Result<()> {
    let upto: i64 = tx.query_row("SELECT upto FROM indexed_upto", [], |r| r.get(0))?;
    let newest: Option<i64> = tx.query_row("SELECT max(rowid) FROM messages", [], |r| r.get(0))?;
    let Some(newest) = newest.filter(|&n| n > upto) else {
        return Ok(());
    };
    let range = params![upto, newest];
    tx.prepare_cached(
        "INSERT INTO messages_fts (rowid, body)
         SELECT rowid, body FROM messages WHERE rowid > ?1 AND rowid <= ?2",
    )?
    .execute(range)?;
    // In key order, so each leaf is written once for all its new entries.
    tx.prepare_cached(
        "INSERT INTO by_sender (sender, id)
         SELECT sender, id FROM messages WHERE rowid > ?1 AND rowid <= ?2 ORDER BY sender, id",
    )?
    .execute(range)?;
    tx.prepare_cached(
        "INSERT INTO by_target (target_kind, target, id)
         SELECT target_kind, target, id FROM messages WHERE rowid > ?1 AND rowid <= ?2
         ORDER BY target_kind, target, id",
    )?
    .execute(range)?;
    tx.prepare_cached(
        "INSERT INTO by_recipient (recipient, id)
         SELECT d.recipient, d.message_id FROM messages m JOIN deliveries d ON d.message_id = m.id
         WHERE m.rowid > ?1 AND m.rowid <= ?2 ORDER BY d.recipient, d.message_id",
    )?
    .execute(range)?;
    tx.prepare_cached("UPDATE indexed_upto SET upto = ?1")?
        .execute(params![newest])?;
    Ok(())
}

/// Takes the messages sent before `cutoff` out of the bulk-written indexes,
/// before they or their deliveries are deleted; the caller has just
/// [caught up](catch_up), so every one of them is there.
pub(crate) fn forget_before(tx: &Connection, cutoff: i64) -> rusqlite::Result<()> {
    // An external-content index is told each row's old body to take its
    // words back out.
    tx.execute(
        "INSERT INTO messages_fts (messages_fts, rowid, body)
         SELECT 'delete', rowid, body FROM messages WHERE sent_at < ?1",
        params![cutoff],
    )?;
    tx.execute(
        "DELETE FROM by_sender WHERE (sender, id) IN
             (SELECT sender, id FROM messages WHERE sent_at < ?1)",
        params![cutoff],
    )?;
    tx.execute(
        "DELETE FROM by_target WHERE (target_kind, target, id) IN
             (SELECT target_kind, target, id FROM messages WHERE sent_at < ?1)",
        params![cutoff],
    )?;
    tx.execute(
        "DELETE FROM by_recipient WHERE (recipient, id) IN
             (SELECT d.recipient, d.message_id FROM messages m JOIN deliveries d ON d.message_id = m.id
              WHERE m.sent_at < ?1)",
        params![cutoff],
    )?;
    Ok(())
}

/// After messages were deleted: the mark comes down to the newest message
/// left. Without this, deleting the newest messages would let SQLite give
/// the next ones rowids at or below the mark, which reads would take as
/// indexed.
pub(crate) fn after_delete(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE indexed_upto SET upto = (SELECT coalesce(max(rowid), 0) FROM messages)",
        [],
    )?;
    Ok(())
}

/// Fills the reading connection's temporary search index with the tail:
/// the messages the writer has not put into `messages_fts` yet. Run in the
/// same read transaction as the search, so both see the same commit. The
/// tokenizer is `messages_fts`'s (migration 6), so both match the same words.
pub(crate) fn index_tail(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.tail_fts USING fts5(
             body,
             tokenize = 'unicode61 remove_diacritics 0'
         );
         DELETE FROM temp.tail_fts;",
    )?;
    conn.prepare_cached(&format!(
        "INSERT INTO temp.tail_fts (rowid, body) SELECT m.rowid, m.body FROM messages m WHERE {}",
        in_tail("m")
    ))?
    .execute([])?;
    Ok(())
}
