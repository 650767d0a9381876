//! Reading rows back as muster's data: the snapshot, inboxes, messages,
//! deliveries, threads, history and search. A value that does not read back (an unknown
//! delivery state, a pid out of range) is corruption, never a panic.

use deadpool_postgres::{ClientWrapper, Transaction};
use muster_core::token::{Scope, TokenRecord};
use muster_core::{
    Activity, Delivery, DeliveryState, LinkKind, Membership, Message, Reservation, Room, SentVia,
    Session, Target,
};
use muster_store::search::search_words;
use muster_store::shared::Logged;
use muster_store::{HistoryQuery, InboxEntry, InboxQuery, SearchQuery, Snapshot, StoreError};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{IsolationLevel, Row};

use crate::errors::{corrupt, db_error};
use crate::writes::target_parts;

fn get<'a, T: FromSql<'a>>(row: &'a Row, column: usize) -> Result<T, StoreError> {
    row.try_get(column).map_err(corrupt)
}

fn state_from(code: i32) -> Result<DeliveryState, StoreError> {
    Ok(match code {
        0 => DeliveryState::Queued,
        1 => DeliveryState::Pushed,
        2 => DeliveryState::Surfaced,
        3 => DeliveryState::Seen,
        4 => DeliveryState::Acked,
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown delivery state {other}"
            )))
        }
    })
}

fn target_from(kind: &str, name: String) -> Result<Target, StoreError> {
    Ok(match kind {
        "session" => Target::Session(name),
        "operator" => Target::Operator(name),
        "room" => Target::Room(name),
        other => return Err(StoreError::Corrupt(format!("unknown target kind {other}"))),
    })
}

const SESSION_COLUMNS: &str = "id, nickname, harness, host, operator, pid, cwd, project, branch, \
     status, activity, last_tool, can_push, link, connected_at, last_seen_at, left_at, owner";

fn session_from(r: &Row) -> Result<Session, StoreError> {
    let pid: Option<i64> = get(r, 5)?;
    let pid = pid
        .map(|p| u32::try_from(p).map_err(|_| StoreError::Corrupt(format!("pid {p} out of range"))))
        .transpose()?;
    let activity: &str = get(r, 10)?;
    let link: &str = get(r, 13)?;
    Ok(Session {
        id: get(r, 0)?,
        nickname: get(r, 1)?,
        harness: get(r, 2)?,
        host: get(r, 3)?,
        operator: get(r, 4)?,
        pid,
        cwd: get(r, 6)?,
        project: get(r, 7)?,
        branch: get(r, 8)?,
        status: get(r, 9)?,
        activity: Activity::parse(activity),
        last_tool: get(r, 11)?,
        can_push: get(r, 12)?,
        link: LinkKind::parse(link).unwrap_or_default(),
        link_up: false,
        wake: None,
        connected_at: get(r, 14)?,
        last_seen_at: get(r, 15)?,
        left_at: get(r, 16)?,
        owner: get(r, 17)?,
    })
}

/// The message columns, in the order [`message_from`] reads them.
const MESSAGE_COLUMNS: &str =
    "m.id, m.sender, m.sender_nickname, m.target_kind, m.target, m.reply_to, m.body, m.sent_at";

fn message_from(r: &Row) -> Result<Message, StoreError> {
    let kind: &str = get(r, 3)?;
    Ok(Message {
        id: get(r, 0)?,
        from: get(r, 1)?,
        from_nickname: get(r, 2)?,
        to: target_from(kind, get(r, 4)?)?,
        reply_to: get(r, 5)?,
        body: get(r, 6)?,
        sent_at: get(r, 7)?,
        via: {
            let via: &str = r.try_get("via").map_err(corrupt)?;
            SentVia::parse(via).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown sender authentication {via:?}"))
            })?
        },
    })
}

/// Runs a query (prepared once per connection) and reads every row with `read`.
async fn rows<T>(
    client: &tokio_postgres::Client,
    cache: &deadpool_postgres::StatementCache,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    read: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let statement = cache.prepare(client, sql).await.map_err(db_error)?;
    client
        .query(&statement, params)
        .await
        .map_err(db_error)?
        .iter()
        .map(read)
        .collect()
}

async fn tx_rows<T>(
    tx: &Transaction<'_>,
    sql: &str,
    read: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows(tx.client(), &tx.statement_cache, sql, &[], read).await
}

fn room_from(r: &Row) -> Result<Room, StoreError> {
    Ok(Room {
        name: get(r, 0)?,
        created_by: get(r, 1)?,
        created_at: get(r, 2)?,
    })
}

fn membership_from(r: &Row) -> Result<Membership, StoreError> {
    Ok(Membership {
        room: get(r, 0)?,
        session_id: get(r, 1)?,
        joined_at: get(r, 2)?,
    })
}

/// A message's columns, then its delivery's recipient, state and time.
fn unread_from(r: &Row) -> Result<(Message, Delivery), StoreError> {
    let message = message_from(r)?;
    let delivery = Delivery {
        message_id: message.id.clone(),
        recipient: get(r, 8)?,
        state: state_from(get(r, 9)?)?,
        updated_at: get(r, 10)?,
    };
    Ok((message, delivery))
}

fn token_from(r: &Row) -> Result<TokenRecord, StoreError> {
    let scope: &str = get(r, 2)?;
    Ok(TokenRecord {
        id: get(r, 0)?,
        name: get(r, 1)?,
        scope: Scope::parse(scope).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        hash: get(r, 3)?,
        created_at: get(r, 4)?,
        created_by: get(r, 5)?,
        revoked_at: get(r, 6)?,
    })
}

fn reservation_from(r: &Row) -> Result<Reservation, StoreError> {
    Ok(Reservation {
        id: get(r, 0)?,
        session_id: get(r, 1)?,
        root: get(r, 2)?,
        pattern: get(r, 3)?,
        exclusive: get(r, 4)?,
        reason: get(r, 5)?,
        created_at: get(r, 6)?,
        expires_at: get(r, 7)?,
    })
}

/// Everything the daemon loads, in one repeatable-read transaction: every
/// query sees the same commit, so no batch lands half in the snapshot. With
/// it, the change log's last entry in that snapshot (0 for none).
pub async fn load(client: &mut ClientWrapper) -> Result<(Snapshot, u64), StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    let seq: i64 = tx
        .query_one("SELECT COALESCE(max(seq), 0) FROM changes", &[])
        .await
        .map_err(db_error)
        .and_then(|row| get(&row, 0))?;
    let sessions = tx_rows(
        &tx,
        &format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY connected_at, id"),
        session_from,
    )
    .await?;
    let rooms = tx_rows(
        &tx,
        "SELECT name, created_by, created_at FROM rooms ORDER BY name",
        room_from,
    )
    .await?;
    let memberships = tx_rows(
        &tx,
        "SELECT room, session_id, joined_at FROM memberships ORDER BY room, joined_at, session_id",
        membership_from,
    )
    .await?;
    let unread = tx_rows(
        &tx,
        &format!(
            "SELECT {MESSAGE_COLUMNS}, d.recipient, d.state, d.updated_at, m.via AS via
             FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.state < 2 ORDER BY m.id, d.recipient"
        ),
        unread_from,
    )
    .await?;
    let reservations = tx_rows(
        &tx,
        "SELECT id, session_id, root, pattern, exclusive, reason, created_at, expires_at
         FROM reservations ORDER BY created_at, id",
        reservation_from,
    )
    .await?;
    let tokens = tx_rows(
        &tx,
        "SELECT id, name, scope, hash, created_at, created_by, revoked_at
         FROM tokens ORDER BY created_at, id",
        token_from,
    )
    .await?;
    tx.commit().await.map_err(db_error)?;
    let snapshot = Snapshot {
        sessions,
        rooms,
        memberships,
        unread,
        reservations,
        tokens,
    };
    Ok((snapshot, seq.max(0) as u64))
}

/// Change-log entries after `seq`, oldest first, at most `limit`; the
/// entries `me` logged come without their changes (it has them), so a
/// daemon does not read its own writes back.
pub async fn changes_after(
    client: &ClientWrapper,
    me: &str,
    seq: u64,
    limit: usize,
) -> Result<Vec<Logged>, StoreError> {
    let after = i64::try_from(seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows(
        client,
        &client.statement_cache,
        "SELECT seq, origin, CASE WHEN origin = $3 THEN '[]' ELSE body END
         FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&after, &limit, &me],
        |r| {
            let seq: i64 = get(r, 0)?;
            let body: &str = get(r, 2)?;
            let changes = serde_json::from_str(body).map_err(|e| {
                StoreError::Corrupt(format!("change-log entry {seq} does not read back: {e}"))
            })?;
            Ok(Logged {
                seq: seq.max(0) as u64,
                origin: get(r, 1)?,
                changes,
            })
        },
    )
    .await
}

pub async fn inbox(client: &ClientWrapper, q: InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
    let max_state: i32 = if q.include_read { 4 } else { 1 };
    // usize::MAX (all of them) does not fit a BIGINT.
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let mut entries = rows(
        client,
        &client.statement_cache,
        &format!(
            "SELECT {MESSAGE_COLUMNS}, d.state, m.via AS via FROM deliveries d JOIN messages m ON m.id = d.message_id
             WHERE d.recipient = $1 AND d.state <= $2 ORDER BY d.message_id DESC LIMIT $3"
        ),
        &[&q.recipient, &max_state, &limit],
        |r| {
            Ok(InboxEntry {
                message: message_from(r)?,
                state: state_from(get(r, 8)?)?,
            })
        },
    )
    .await?;
    entries.reverse();
    Ok(entries)
}

pub async fn message(client: &ClientWrapper, id: &str) -> Result<Option<Message>, StoreError> {
    Ok(rows(
        client,
        &client.statement_cache,
        &format!("SELECT {MESSAGE_COLUMNS}, m.via AS via FROM messages m WHERE m.id = $1"),
        &[&id],
        message_from,
    )
    .await?
    .pop())
}

pub async fn deliveries(
    client: &ClientWrapper,
    message_id: &str,
) -> Result<Vec<Delivery>, StoreError> {
    rows(
        client,
        &client.statement_cache,
        "SELECT recipient, state, updated_at FROM deliveries WHERE message_id = $1 ORDER BY recipient",
        &[&message_id],
        |r| {
            Ok(Delivery {
                message_id: message_id.to_string(),
                recipient: get(r, 0)?,
                state: state_from(get(r, 1)?)?,
                updated_at: get(r, 2)?,
            })
        },
    )
    .await
}

/// Up to the root through reply_to, then down through every reply; only
/// what `reader` sent or received.
pub async fn thread(
    client: &ClientWrapper,
    id: &str,
    reader: &str,
) -> Result<Vec<Message>, StoreError> {
    rows(
        client,
        &client.statement_cache,
        &format!(
            "WITH RECURSIVE up(id, reply_to, depth) AS (
                 SELECT id, reply_to, 0 FROM messages WHERE id = $1
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
             WHERE m.sender = $2
                OR EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.recipient = $2)
             ORDER BY m.id LIMIT 1000"
        ),
        &[&id, &reader],
        message_from,
    )
    .await
}

/// A query's bound values, numbered as its SQL names them (`$1`, `$2`, …).
#[derive(Default)]
struct Bound(Vec<Box<dyn ToSql + Sync + Send>>);

impl Bound {
    /// Binds `value` and returns its placeholder.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The placeholders of a history query's filters (each bound once, used
/// wherever the SQL needs it).
struct Filters {
    limit: String,
    reader: Option<String>,
    target: Option<(String, String)>,
    before: Option<String>,
}

impl Filters {
    fn bind(bound: &mut Bound, q: &HistoryQuery) -> Filters {
        // usize::MAX (all of them) does not fit a BIGINT.
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        Filters {
            limit: bound.bind(limit),
            reader: q.reader.clone().map(|r| bound.bind(r)),
            target: q.to.as_ref().map(|to| {
                let (kind, name) = target_parts(to);
                (bound.bind(kind.to_string()), bound.bind(name.to_string()))
            }),
            before: q.before.clone().map(|b| bound.bind(b)),
        }
    }

    /// `AND` conditions on the message row `m` for the target and cursor.
    fn target_and_cursor(&self, m: &str) -> String {
        let mut sql = String::new();
        if let Some((kind, target)) = &self.target {
            sql.push_str(&format!(
                " AND {m}.target_kind = {kind} AND {m}.target = {target}"
            ));
        }
        if let Some(before) = &self.before {
            sql.push_str(&format!(" AND {m}.id < {before}"));
        }
        sql
    }
}

/// Messages newest first as the query selects them. A reader's page is
/// the newest of its sent mail and of its deliveries, each side walking
/// its own index from the cursor down.
pub async fn history(client: &ClientWrapper, q: HistoryQuery) -> Result<Vec<Message>, StoreError> {
    let mut bound = Bound::default();
    let f = Filters::bind(&mut bound, &q);
    let filter = match &f.reader {
        Some(reader) => format!(
            " AND m.id IN (
                 (SELECT s.id FROM messages s WHERE s.sender = {reader}{sent}
                  ORDER BY s.id DESC LIMIT {limit})
                 UNION
                 (SELECT g.id FROM deliveries d JOIN messages g ON g.id = d.message_id
                  WHERE d.recipient = {reader}{got} ORDER BY d.message_id DESC LIMIT {limit}))",
            sent = f.target_and_cursor("s"),
            got = f.target_and_cursor("g"),
            limit = f.limit,
        ),
        None => f.target_and_cursor("m"),
    };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, m.via AS via FROM messages m WHERE true{filter}
         ORDER BY m.id DESC LIMIT {}",
        f.limit
    );
    rows(
        client,
        &client.statement_cache,
        &sql,
        &bound.values(),
        message_from,
    )
    .await
}

/// The messages `q.within` selects whose words hold every search word as
/// a prefix. The words go through `muster_search_text` as bodies do (see
/// migration 5), then become a prefix query lexeme by lexeme, each quoted
/// (nothing typed is ever tsquery syntax).
pub async fn search(client: &ClientWrapper, q: SearchQuery) -> Result<Vec<Message>, StoreError> {
    let Some(words) = search_words(&q.text) else {
        return Ok(Vec::new());
    };
    let mut bound = Bound::default();
    let text = bound.bind(words.join(" "));
    let f = Filters::bind(&mut bound, &q.within);
    let mut filter = f.target_and_cursor("m");
    if let Some(reader) = &f.reader {
        filter.push_str(&format!(
            " AND (m.sender = {reader}
                   OR EXISTS (SELECT 1 FROM deliveries d WHERE d.recipient = {reader} AND d.message_id = m.id))"
        ));
    }
    let sql = format!(
        "WITH q AS (
             SELECT string_agg('''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || ''':*', ' & ')::tsquery AS words
             FROM unnest(to_tsvector('simple', muster_search_text({text})))
         )
         SELECT {MESSAGE_COLUMNS}, m.via AS via FROM messages m, q
         WHERE m.body_words @@ q.words{filter}
         ORDER BY m.id DESC LIMIT {}",
        f.limit
    );
    rows(
        client,
        &client.statement_cache,
        &sql,
        &bound.values(),
        message_from,
    )
    .await
}
