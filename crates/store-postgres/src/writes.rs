//! What each [`Change`] does to the tables, and the prune; run by the
//! writer inside its batch transaction, each request in its own savepoint.

use deadpool_postgres::Transaction;
use muster_core::{Delivery, DeliveryState, Message, Millis, Reservation, Session, Target};
use muster_store::{Change, PruneReport};
use tokio_postgres::types::ToSql;
use tokio_postgres::Error;

/// Runs one statement (prepared once per connection) and counts its rows.
async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.execute(&statement, params).await
}

pub fn state_code(s: DeliveryState) -> i32 {
    match s {
        DeliveryState::Queued => 0,
        DeliveryState::Pushed => 1,
        DeliveryState::Surfaced => 2,
        DeliveryState::Seen => 3,
        DeliveryState::Acked => 4,
    }
}

/// The stored code of `acked`, the last state.
const ACKED: i32 = 4;

fn target_parts(t: &Target) -> (&'static str, &str) {
    match t {
        Target::Session(id) => ("session", id),
        Target::Operator(name) => ("operator", name),
        Target::Room(room) => ("room", room),
    }
}

/// Upserts a session's whole record.
async fn put_session(tx: &Transaction<'_>, s: &Session) -> Result<(), Error> {
    let pid = s.pid.map(i64::from);
    exec(
        tx,
        "INSERT INTO sessions (id, nickname, harness, host, operator, pid, cwd, project, branch, status,
            activity, last_tool, can_push, link, connected_at, last_seen_at, left_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (id) DO UPDATE SET nickname = excluded.nickname, harness = excluded.harness,
            host = excluded.host, operator = excluded.operator, pid = excluded.pid, cwd = excluded.cwd,
            project = excluded.project, branch = excluded.branch, status = excluded.status,
            activity = excluded.activity, last_tool = excluded.last_tool, can_push = excluded.can_push,
            link = excluded.link, connected_at = excluded.connected_at,
            last_seen_at = excluded.last_seen_at, left_at = excluded.left_at",
        &[
            &s.id,
            &s.nickname,
            &s.harness,
            &s.host,
            &s.operator,
            &pid,
            &s.cwd,
            &s.project,
            &s.branch,
            &s.status,
            &s.activity.as_str(),
            &s.last_tool,
            &s.can_push,
            &s.link.as_str(),
            &s.connected_at,
            &s.last_seen_at,
            &s.left_at,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a message and one delivery record per recipient.
async fn put_message(
    tx: &Transaction<'_>,
    m: &Message,
    deliveries: &[Delivery],
) -> Result<(), Error> {
    let (kind, target) = target_parts(&m.to);
    exec(
        tx,
        "INSERT INTO messages (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&m.id, &m.from, &m.from_nickname, &kind, &target, &m.reply_to, &m.body, &m.sent_at],
    )
    .await?;
    if deliveries.is_empty() {
        return Ok(());
    }
    // One statement for every recipient: a broadcast to a big room is one
    // round trip, not one per member.
    let recipients: Vec<&str> = deliveries.iter().map(|d| d.recipient.as_str()).collect();
    let message_ids: Vec<&str> = deliveries.iter().map(|d| d.message_id.as_str()).collect();
    let states: Vec<i32> = deliveries.iter().map(|d| state_code(d.state)).collect();
    let updated: Vec<Millis> = deliveries.iter().map(|d| d.updated_at).collect();
    exec(
        tx,
        "INSERT INTO deliveries (recipient, message_id, state, updated_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[])",
        &[&recipients, &message_ids, &states, &updated],
    )
    .await?;
    Ok(())
}

/// Inserts or replaces a reservation.
async fn put_reservation(tx: &Transaction<'_>, r: &Reservation) -> Result<(), Error> {
    exec(
        tx,
        "INSERT INTO reservations (id, session_id, root, pattern, exclusive, reason, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET session_id = excluded.session_id, root = excluded.root,
            pattern = excluded.pattern, exclusive = excluded.exclusive, reason = excluded.reason,
            created_at = excluded.created_at, expires_at = excluded.expires_at",
        &[
            &r.id,
            &r.session_id,
            &r.root,
            &r.pattern,
            &r.exclusive,
            &r.reason,
            &r.created_at,
            &r.expires_at,
        ],
    )
    .await?;
    Ok(())
}

pub async fn apply_change(tx: &Transaction<'_>, change: &Change) -> Result<(), Error> {
    match change {
        Change::PutSession(s) => put_session(tx, s).await?,
        Change::TouchSession { id, last_seen_at } => {
            exec(
                tx,
                "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $2) WHERE id = $1",
                &[id, last_seen_at],
            )
            .await?;
        }
        Change::ForgetSession { id } => forget_sessions(tx, std::slice::from_ref(id)).await?,
        Change::PutMessage {
            message,
            deliveries,
        } => put_message(tx, message, deliveries).await?,
        Change::AdvanceDelivery {
            message_id,
            recipient,
            state,
            at,
        } => {
            exec(
                tx,
                "UPDATE deliveries SET state = $3, updated_at = $4
                 WHERE recipient = $1 AND message_id = $2 AND state < $3",
                &[recipient, message_id, &state_code(*state), at],
            )
            .await?;
        }
        Change::AckUpTo {
            recipient,
            upto,
            at,
        } => {
            exec(
                tx,
                "UPDATE deliveries SET state = $4, updated_at = $3
                 WHERE recipient = $1 AND message_id <= $2 AND state < $4",
                &[recipient, upto, at, &ACKED],
            )
            .await?;
        }
        Change::PutRoom(r) => {
            exec(
                tx,
                "INSERT INTO rooms (name, created_by, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&r.name, &r.created_by, &r.created_at],
            )
            .await?;
        }
        Change::JoinRoom(m) => {
            exec(
                tx,
                "INSERT INTO memberships (room, session_id, joined_at) VALUES ($1, $2, $3)
                 ON CONFLICT (room, session_id) DO NOTHING",
                &[&m.room, &m.session_id, &m.joined_at],
            )
            .await?;
        }
        Change::LeaveRoom { room, session_id } => {
            exec(
                tx,
                "DELETE FROM memberships WHERE room = $1 AND session_id = $2",
                &[room, session_id],
            )
            .await?;
        }
        Change::PutReservation(r) => put_reservation(tx, r).await?,
        Change::DeleteReservation { id } => {
            exec(tx, "DELETE FROM reservations WHERE id = $1", &[id]).await?;
        }
        Change::DeleteReservationsOf { session_id } => {
            exec(
                tx,
                "DELETE FROM reservations WHERE session_id = $1",
                &[session_id],
            )
            .await?;
        }
    }
    Ok(())
}

/// Forgets sessions and their memberships (their deliveries stay).
async fn forget_sessions(tx: &Transaction<'_>, ids: &[String]) -> Result<(), Error> {
    exec(tx, "DELETE FROM sessions WHERE id = ANY($1)", &[&ids]).await?;
    exec(
        tx,
        "DELETE FROM memberships WHERE session_id = ANY($1)",
        &[&ids],
    )
    .await?;
    Ok(())
}

pub async fn prune(tx: &Transaction<'_>, cutoff: Millis) -> Result<PruneReport, Error> {
    let deliveries = exec(
        tx,
        "DELETE FROM deliveries WHERE message_id IN (SELECT id FROM messages WHERE sent_at < $1)",
        &[&cutoff],
    )
    .await?;
    let messages = exec(tx, "DELETE FROM messages WHERE sent_at < $1", &[&cutoff]).await?;
    let statement = tx
        .prepare_cached("SELECT id FROM sessions WHERE left_at IS NOT NULL AND left_at < $1")
        .await?;
    let gone: Vec<String> = tx
        .query(&statement, &[&cutoff])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    forget_sessions(tx, &gone).await?;
    Ok(PruneReport {
        messages,
        deliveries,
        sessions: gone.len() as u64,
    })
}
