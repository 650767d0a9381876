//! History and full-text search: pages of messages, newest first, as a
//! [`HistoryQuery`] selects them, and those of them whose body matches a
//! [`SearchQuery`]'s words (FTS5, `messages_fts`).
//!
//! The SQL is put together from the filters a query has, so each page
//! walks an index from its cursor down instead of filtering every row
//! above it; the text of each filter is fixed, and every value is bound.
//! The indexes by sender, by target, by recipient and by words are
//! written in bulk (`bulk_index`), so each query also takes the few newest
//! messages, not in them yet, from the tables themselves.

use muster_core::Message;
use muster_store::search::search_words;
use muster_store::{HistoryQuery, SearchQuery};
use rusqlite::types::Value;
use rusqlite::{Connection, ToSql};

use crate::bulk_index::{in_tail, index_tail};
use crate::{message_from, target_parts, MESSAGE_COLUMNS};

/// The bound values of a query, by name; only names its SQL uses.
#[derive(Default)]
struct Bound(Vec<(&'static str, Value)>);

impl Bound {
    fn of(q: &HistoryQuery) -> Bound {
        let mut bound = Bound::default();
        // usize::MAX (all of them) does not fit SQLite's i64.
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        bound.0.push((":limit", Value::Integer(limit)));
        if let Some(reader) = &q.reader {
            bound.0.push((":reader", Value::Text(reader.clone())));
        }
        if let Some(to) = &q.to {
            let (kind, name) = target_parts(to);
            bound.0.push((":kind", Value::Text(kind.to_string())));
            bound.0.push((":target", Value::Text(name.to_string())));
        }
        if let Some(before) = &q.before {
            bound.0.push((":before", Value::Text(before.clone())));
        }
        bound
    }

    fn named(&self) -> Vec<(&str, &dyn ToSql)> {
        self.0.iter().map(|(k, v)| (*k, v as &dyn ToSql)).collect()
    }
}

/// An `AND` condition on the row `m` (a message, or an index entry) for
/// the query's target, if it has one.
fn target(q: &HistoryQuery, m: &str) -> String {
    match q.to {
        Some(_) => format!(" AND {m}.target_kind = :kind AND {m}.target = :target"),
        None => String::new(),
    }
}

/// An `AND` condition on the row `m`'s id for the query's cursor, if any.
fn cursor(q: &HistoryQuery, m: &str) -> String {
    match q.before {
        Some(_) => format!(" AND {m}.id < :before"),
        None => String::new(),
    }
}

/// `AND` conditions on the message row `m` for the query's target and cursor.
fn target_and_cursor(q: &HistoryQuery, m: &str) -> String {
    target(q, m) + &cursor(q, m)
}

/// The ids of the reader's newest `limit` messages (sent, or delivered to
/// it) within the target and before the cursor: each side walks its own
/// index (`by_sender`, `by_recipient`), and takes the messages not in it
/// yet from the table, so a reader with little mail in a big store costs
/// little.
fn reader_ids(q: &HistoryQuery) -> String {
    let (sent_target, sent_cursor) = (target(q, "s"), cursor(q, "b"));
    let (got_target, got_cursor) = (target(q, "g"), cursor(q, "r"));
    let tail = target_and_cursor(q, "t");
    format!(
        "SELECT id FROM (SELECT b.id FROM by_sender b JOIN messages s ON s.id = b.id
                         WHERE b.sender = :reader{sent_cursor}{sent_target}
                         ORDER BY b.id DESC LIMIT :limit)
         UNION
         SELECT id FROM (SELECT r.id FROM by_recipient r JOIN messages g ON g.id = r.id
                         WHERE r.recipient = :reader{got_cursor}{got_target}
                         ORDER BY r.id DESC LIMIT :limit)
         UNION
         SELECT t.id FROM messages t WHERE {}{tail}
             AND (t.sender = :reader
                  OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = t.id AND d.recipient = :reader))",
        in_tail("t")
    )
}

/// The ids of the newest `limit` messages to the query's target before its
/// cursor: from `by_target`, and from the messages not in it yet.
fn target_ids(q: &HistoryQuery) -> String {
    let (indexed, tail) = (target_and_cursor(q, "i"), target_and_cursor(q, "t"));
    format!(
        "SELECT id FROM (SELECT i.id FROM by_target i WHERE 1 = 1{indexed}
                         ORDER BY i.id DESC LIMIT :limit)
         UNION ALL
         SELECT t.id FROM messages t WHERE {}{tail}",
        in_tail("t")
    )
}

pub(crate) fn history(conn: &Connection, q: &HistoryQuery) -> rusqlite::Result<Vec<Message>> {
    let filter = match (&q.reader, &q.to) {
        (Some(_), _) => format!(" AND m.id IN ({})", reader_ids(q)),
        (None, Some(_)) => format!(" AND m.id IN ({})", target_ids(q)),
        (None, None) => cursor(q, "m"),
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, m.via AS via FROM messages m WHERE 1 = 1{filter}
         ORDER BY m.id DESC LIMIT :limit"
    );
    let bound = Bound::of(q);
    conn.prepare_cached(&sql)?
        .query_map(bound.named().as_slice(), message_from)?
        .collect()
}

/// The words as an FTS5 query: each a quoted string (so nothing in it is
/// syntax) matched as a prefix, all of them required.
fn fts5_query(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn search(conn: &Connection, q: &SearchQuery) -> rusqlite::Result<Vec<Message>> {
    let Some(words) = search_words(&q.text) else {
        return Ok(Vec::new());
    };
    let within = &q.within;
    let mut filter = target_and_cursor(within, "m");
    if within.reader.is_some() {
        filter.push_str(
            " AND (m.sender = :reader
                   OR EXISTS (SELECT 1 FROM deliveries d WHERE d.recipient = :reader AND d.message_id = m.id))",
        );
    }
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, m.via AS via
         FROM (SELECT rowid AS hit FROM messages_fts WHERE messages_fts MATCH :match
               UNION ALL
               SELECT rowid AS hit FROM temp.tail_fts WHERE tail_fts MATCH :match) found
         JOIN messages m ON m.rowid = found.hit
         WHERE 1 = 1{filter}
         ORDER BY m.id DESC LIMIT :limit"
    );
    let mut bound = Bound::of(within);
    bound.0.push((":match", Value::Text(fts5_query(&words))));
    // One read transaction: the tail indexed and the search see one commit.
    let tx = conn.unchecked_transaction()?;
    index_tail(&tx)?;
    let found = tx
        .prepare_cached(&sql)?
        .query_map(bound.named().as_slice(), message_from)?
        .collect();
    tx.commit()?;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_is_a_quoted_prefix() {
        assert_eq!(fts5_query(&["store", "AND"]), r#""store"* "AND"*"#);
        assert_eq!(fts5_query(&[r#"a"b"#]), r#""a""b"*"#);
    }
}
