//! What each [`Change`] does to the tables, as statements with their
//! parameters ([`plan`], or [`plan_folded`] for a whole batch), and the
//! prune. The writer runs a whole batch's statements pipelined, or one
//! request's at a time in savepoints (`batch.rs`).

use deadpool_postgres::Transaction;
use muster_core::{Delivery, DeliveryState, Message, Millis, Reservation, Session, Target};
use muster_store::{Change, PruneReport};
use tokio_postgres::types::ToSql;
use tokio_postgres::Error;

/// One statement of a change, with the values it binds.
pub struct Stmt {
    pub sql: &'static str,
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Stmt {
    /// The parameters as the driver takes them.
    pub fn params(&self) -> impl ExactSizeIterator<Item = &(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as &(dyn ToSql + Sync))
    }
}

/// Owned values as statement parameters.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as Box<dyn ToSql + Sync + Send>),*]
    };
}

fn stmt(sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Stmt {
    Stmt { sql, params }
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

pub(crate) fn target_parts(t: &Target) -> (&'static str, &str) {
    match t {
        Target::Session(id) => ("session", id),
        Target::Operator(name) => ("operator", name),
        Target::Room(room) => ("room", room),
    }
}

const PUT_SESSION: &str = "INSERT INTO sessions (id, nickname, harness, host, operator, pid, cwd, project, branch, status,
        activity, last_tool, can_push, link, connected_at, last_seen_at, left_at, owner)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
     ON CONFLICT (id) DO UPDATE SET nickname = excluded.nickname, harness = excluded.harness,
        host = excluded.host, operator = excluded.operator, pid = excluded.pid, cwd = excluded.cwd,
        project = excluded.project, branch = excluded.branch, status = excluded.status,
        activity = excluded.activity, last_tool = excluded.last_tool, can_push = excluded.can_push,
        link = excluded.link, connected_at = excluded.connected_at,
        last_seen_at = excluded.last_seen_at, left_at = excluded.left_at, owner = excluded.owner";

const PUT_TOKEN: &str =
    "INSERT INTO tokens (id, name, scope, hash, created_at, created_by, revoked_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// With the body's search words (see `migrations/0006_…`): the same
/// expression a search puts its words through, so the two always agree.
const PUT_MESSAGE: &str = "INSERT INTO messages
        (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at, via, body_words)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_tsvector('simple', muster_search_text($7)))";

/// Several new messages in one statement, over arrays (see [`plan_folded`]),
/// each with its search words as [`PUT_MESSAGE`] makes them.
const PUT_MESSAGES: &str = "INSERT INTO messages
        (id, sender, sender_nickname, target_kind, target, reply_to, body, sent_at, via, body_words)
     SELECT id, sender, nickname, kind, target, reply_to, body, sent_at, via,
            to_tsvector('simple', muster_search_text(body))
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::int8[], $9::text[])
          AS m(id, sender, nickname, kind, target, reply_to, body, sent_at, via)";

/// Every recipient's delivery in one statement: a broadcast to a big room
/// is one round trip, not one per member.
const PUT_DELIVERIES: &str = "INSERT INTO deliveries (recipient, message_id, state, updated_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[])";

const PUT_RESERVATION: &str = "INSERT INTO reservations
        (id, session_id, root, pattern, exclusive, reason, created_at, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (id) DO UPDATE SET session_id = excluded.session_id, root = excluded.root,
        pattern = excluded.pattern, exclusive = excluded.exclusive, reason = excluded.reason,
        created_at = excluded.created_at, expires_at = excluded.expires_at";

/// Fails the transaction (SQLSTATE `MU409`, see `errors::refusal`) if a
/// daemon other than `$2` logged a reservation change after `$1`.
const RESERVATIONS_UNCHANGED: &str =
    "SELECT muster_conflict('reservations changed since this daemon decided')
     WHERE EXISTS (SELECT 1 FROM changes WHERE reserves AND seq > $1 AND origin <> $2)";

/// Logs the transaction's changes as the next entry and notifies the
/// listening daemons, who read it by its `seq`. Run last in a transaction
/// that holds `LOG_LOCK` (so the next `seq` is this one's alone, and
/// sequence order is commit order); the notification goes out at commit.
const LOG: &str = "WITH logged AS (
        INSERT INTO changes (seq, origin, reserves, body, logged_at)
        SELECT COALESCE(max(seq), 0) + 1, $1, $2, $3,
               (extract(epoch FROM clock_timestamp()) * 1000)::bigint
        FROM changes
        RETURNING seq)
     SELECT pg_notify('muster_changes', seq::text) FROM logged";

/// The statement that logs `changes` committed by `origin` (see [`LOG`]).
pub fn log(origin: &str, changes: &[&Change]) -> Stmt {
    let reserves = changes.iter().any(|c| c.touches_reservations());
    // Changes are plain data (strings, numbers, enums): they always encode.
    let body = serde_json::to_string(changes).unwrap_or_else(|_| "[]".to_string());
    stmt(LOG, params![origin.to_string(), reserves, body])
}

/// Appends the statement that checks a guard change (see
/// [`RESERVATIONS_UNCHANGED`]) for daemon `origin`; other changes have none.
/// Guards run once the transaction holds `LOG_LOCK`.
pub fn guard(change: &Change, origin: &str, out: &mut Vec<Stmt>) {
    if let Change::ReservationsUnchangedSince { seq } = change {
        out.push(stmt(
            RESERVATIONS_UNCHANGED,
            params![i64::try_from(*seq).unwrap_or(i64::MAX), origin.to_string()],
        ));
    }
}

/// The statements of `changes`, in order, as [`plan`] makes them, except
/// that each run of consecutive new messages is written by two statements
/// in all (the messages, then all their deliveries) rather than two each:
/// under load a batch is mostly such a run, and PostgreSQL's cost per
/// statement (bind, plan, executor start) was a good part of a send's.
/// Only runs are folded, so every statement still comes after the ones it
/// came after (an ack after the message it acks).
pub fn plan_folded(changes: &[&Change], out: &mut Vec<Stmt>) {
    let mut run: Vec<(&Message, &[Delivery])> = Vec::new();
    for change in changes {
        if let Change::PutMessage {
            message,
            deliveries,
        } = change
        {
            run.push((message, deliveries));
            continue;
        }
        put_run(&mut run, out);
        plan(change, out);
    }
    put_run(&mut run, out);
}

/// A run of new messages (emptied), as one statement for the messages and
/// one for their deliveries; a run of one as [`plan`] writes it.
fn put_run(run: &mut Vec<(&Message, &[Delivery])>, out: &mut Vec<Stmt>) {
    if let [(message, deliveries)] = run[..] {
        out.push(put_message(message));
        if !deliveries.is_empty() {
            out.push(put_deliveries(deliveries));
        }
    } else if !run.is_empty() {
        out.push(put_messages(run.iter().map(|(m, _)| *m)));
        let deliveries: Vec<Delivery> = run.iter().flat_map(|(_, d)| d.iter().cloned()).collect();
        if !deliveries.is_empty() {
            out.push(put_deliveries(&deliveries));
        }
    }
    run.clear();
}

fn put_messages<'m>(messages: impl Iterator<Item = &'m Message>) -> Stmt {
    let (mut ids, mut senders, mut nicknames, mut kinds, mut targets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut reply_to, mut bodies, mut sent_at, mut via) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for m in messages {
        let (kind, target) = target_parts(&m.to);
        ids.push(m.id.clone());
        senders.push(m.from.clone());
        nicknames.push(m.from_nickname.clone());
        kinds.push(kind);
        targets.push(target.to_string());
        reply_to.push(m.reply_to.clone());
        bodies.push(m.body.clone());
        sent_at.push(m.sent_at);
        via.push(m.via.as_str());
    }
    stmt(
        PUT_MESSAGES,
        params![ids, senders, nicknames, kinds, targets, reply_to, bodies, sent_at, via],
    )
}

/// Appends the statements that make `change`, in the order they must run
/// (a guard makes none here: see [`guard`]).
pub fn plan(change: &Change, out: &mut Vec<Stmt>) {
    match change {
        Change::PutSession(s) => out.push(put_session(s)),
        Change::TouchSession { id, last_seen_at } => out.push(stmt(
            "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $2) WHERE id = $1",
            params![id.clone(), *last_seen_at],
        )),
        Change::ForgetSession { id } => forget_sessions(vec![id.clone()], out),
        Change::PutMessage {
            message,
            deliveries,
        } => {
            out.push(put_message(message));
            if !deliveries.is_empty() {
                out.push(put_deliveries(deliveries));
            }
        }
        Change::AdvanceDelivery {
            message_id,
            recipient,
            state,
            at,
        } => out.push(stmt(
            "UPDATE deliveries SET state = $3, updated_at = $4
             WHERE recipient = $1 AND message_id = $2 AND state < $3",
            params![
                recipient.clone(),
                message_id.clone(),
                state_code(*state),
                *at
            ],
        )),
        Change::AckUpTo {
            recipient,
            upto,
            at,
        } => out.push(stmt(
            "UPDATE deliveries SET state = $4, updated_at = $3
             WHERE recipient = $1 AND message_id <= $2 AND state < $4",
            params![recipient.clone(), upto.clone(), *at, ACKED],
        )),
        Change::PutRoom(r) => out.push(stmt(
            "INSERT INTO rooms (name, created_by, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
            params![r.name.clone(), r.created_by.clone(), r.created_at],
        )),
        Change::JoinRoom(m) => out.push(stmt(
            "INSERT INTO memberships (room, session_id, joined_at) VALUES ($1, $2, $3)
             ON CONFLICT (room, session_id) DO NOTHING",
            params![m.room.clone(), m.session_id.clone(), m.joined_at],
        )),
        Change::LeaveRoom { room, session_id } => out.push(stmt(
            "DELETE FROM memberships WHERE room = $1 AND session_id = $2",
            params![room.clone(), session_id.clone()],
        )),
        Change::PutReservation(r) => out.push(put_reservation(r)),
        Change::DeleteReservation { id } => out.push(stmt(
            "DELETE FROM reservations WHERE id = $1",
            params![id.clone()],
        )),
        Change::DeleteReservationsOf { session_id } => out.push(stmt(
            "DELETE FROM reservations WHERE session_id = $1",
            params![session_id.clone()],
        )),
        Change::ReservationsUnchangedSince { .. } => {}
        Change::PutToken(t) => out.push(stmt(
            PUT_TOKEN,
            params![
                t.id.clone(),
                t.name.clone(),
                t.scope.as_str(),
                t.hash.clone(),
                t.created_at,
                t.created_by.clone(),
                t.revoked_at,
            ],
        )),
        Change::RevokeToken { id, at } => out.push(stmt(
            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            params![id.clone(), *at],
        )),
    }
}

/// Upserts a session's whole record.
fn put_session(s: &Session) -> Stmt {
    stmt(
        PUT_SESSION,
        params![
            s.id.clone(),
            s.nickname.clone(),
            s.harness.clone(),
            s.host.clone(),
            s.operator.clone(),
            s.pid.map(i64::from),
            s.cwd.clone(),
            s.project.clone(),
            s.branch.clone(),
            s.status.clone(),
            s.activity.as_str(),
            s.last_tool.clone(),
            s.can_push,
            s.link.as_str(),
            s.connected_at,
            s.last_seen_at,
            s.left_at,
            s.owner.clone(),
        ],
    )
}

fn put_message(m: &Message) -> Stmt {
    let (kind, target) = target_parts(&m.to);
    stmt(
        PUT_MESSAGE,
        params![
            m.id.clone(),
            m.from.clone(),
            m.from_nickname.clone(),
            kind,
            target.to_string(),
            m.reply_to.clone(),
            m.body.clone(),
            m.sent_at,
            m.via.as_str(),
        ],
    )
}

/// Every recipient's delivery record, as one statement over arrays.
fn put_deliveries(deliveries: &[Delivery]) -> Stmt {
    let texts = |f: fn(&Delivery) -> &String| -> Vec<String> {
        deliveries.iter().map(|d| f(d).clone()).collect()
    };
    let states: Vec<i32> = deliveries.iter().map(|d| state_code(d.state)).collect();
    let updated: Vec<Millis> = deliveries.iter().map(|d| d.updated_at).collect();
    stmt(
        PUT_DELIVERIES,
        params![
            texts(|d| &d.recipient),
            texts(|d| &d.message_id),
            states,
            updated
        ],
    )
}

fn put_reservation(r: &Reservation) -> Stmt {
    stmt(
        PUT_RESERVATION,
        params![
            r.id.clone(),
            r.session_id.clone(),
            r.root.clone(),
            r.pattern.clone(),
            r.exclusive,
            r.reason.clone(),
            r.created_at,
            r.expires_at,
        ],
    )
}

/// Forgets sessions and their memberships (their deliveries stay).
fn forget_sessions(ids: Vec<String>, out: &mut Vec<Stmt>) {
    out.push(stmt(
        "DELETE FROM sessions WHERE id = ANY($1)",
        params![ids.clone()],
    ));
    out.push(stmt(
        "DELETE FROM memberships WHERE session_id = ANY($1)",
        params![ids],
    ));
}

/// Runs one statement (prepared once per connection) and counts its rows.
pub async fn exec(tx: &Transaction<'_>, s: &Stmt) -> Result<u64, Error> {
    let statement = tx.prepare_cached(s.sql).await?;
    tx.execute_raw(&statement, s.params()).await
}

/// How long the change log keeps an entry: a daemon that stopped reading
/// it for longer cannot catch up entry by entry (see `muster_store::shared`).
const LOG_KEEP_MS: Millis = 3_600_000;

/// Drops log entries older than `$1` ms, by the database's clock, but never
/// the newest: the next `seq` is counted from it.
const PRUNE_LOG: &str = "DELETE FROM changes
     WHERE logged_at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1
       AND seq < (SELECT max(seq) FROM changes)";

pub async fn prune(tx: &Transaction<'_>, cutoff: Millis) -> Result<PruneReport, Error> {
    let deliveries = exec(
        tx,
        &stmt(
            "DELETE FROM deliveries WHERE message_id IN (SELECT id FROM messages WHERE sent_at < $1)",
            params![cutoff],
        ),
    )
    .await?;
    let messages = exec(
        tx,
        &stmt("DELETE FROM messages WHERE sent_at < $1", params![cutoff]),
    )
    .await?;
    let statement = tx
        .prepare_cached("SELECT id FROM sessions WHERE left_at IS NOT NULL AND left_at < $1")
        .await?;
    let gone: Vec<String> = tx
        .query(&statement, &[&cutoff])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let sessions = gone.len() as u64;
    let mut forget = Vec::new();
    forget_sessions(gone, &mut forget);
    for s in &forget {
        exec(tx, s).await?;
    }
    exec(tx, &stmt(PRUNE_LOG, params![LOG_KEEP_MS])).await?;
    Ok(PruneReport {
        messages,
        deliveries,
        sessions,
    })
}
