//! What the SQLite store's bulk-written indexes cost a read: history and
//! search latency over a store of 20,000 messages (16 senders, 16
//! receivers, one room), first with the most messages the writer leaves
//! out of the indexes as shipped (255: it indexes every 256, and when
//! idle), then with every message indexed. The store is opened in this
//! process on a real file; no daemon is involved.

use std::time::{Duration, Instant};

use anyhow::Context;
use muster_core::{Delivery, DeliveryState, Message, Millis, Target};
use muster_store::{Change, HistoryQuery, SearchQuery, Store};
use muster_store_sqlite::{Indexing, SqliteStore};
use serde_json::json;

use crate::report::{fmt_us, median_max, us, Row, Section};
use crate::Opts;

/// Messages in the store before the tail, and in the tail.
const STORED: u32 = 20_000;
const TAIL: u32 = 255;
const PEERS: u32 = 16;
/// Every this many messages goes to the room, and holds the searched word.
const ROOM_EVERY: u32 = 10;
const SEARCHED_EVERY: u32 = 100;
/// Each query timed this many times, or for this long, whichever is first.
const RUNS: usize = 300;
const BUDGET: Duration = Duration::from_secs(5);
/// Sends submitted before their commits are awaited (group commit).
const IN_FLIGHT: usize = 512;

fn id(n: u32) -> String {
    format!("01BENCH{n:019}")
}

/// Message `n`: from sender `n % 16` to receiver `n % 16`, or to the room.
fn message(n: u32) -> Change {
    let (from, to) = (format!("sender-{}", n % PEERS), n % PEERS);
    let (target, recipients) = if n.is_multiple_of(ROOM_EVERY) {
        let all = (0..PEERS).map(|r| format!("receiver-{r}")).collect();
        (Target::Room("ops".into()), all)
    } else {
        let one = format!("receiver-{to}");
        (Target::Session(one.clone()), vec![one])
    };
    let word = if n.is_multiple_of(SEARCHED_EVERY) {
        "rollback"
    } else {
        "progress"
    };
    let body = format!("message {n}: {word} on the build, step {}", n % 97);
    Change::PutMessage {
        message: Message {
            id: id(n),
            from: from.clone(),
            from_nickname: from,
            to: target,
            reply_to: None,
            body,
            sent_at: Millis::from(n),
            via: Default::default(),
        },
        deliveries: recipients
            .into_iter()
            .map(|recipient| Delivery {
                message_id: id(n),
                recipient,
                state: DeliveryState::Acked,
                updated_at: Millis::from(n),
            })
            .collect(),
    }
}

async fn write(store: &SqliteStore, range: std::ops::Range<u32>) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(IN_FLIGHT);
    for n in range {
        pending.push(store.submit(vec![message(n)]));
        if pending.len() == IN_FLIGHT {
            for commit in pending.drain(..) {
                commit.await?;
            }
        }
    }
    for commit in pending {
        commit.await?;
    }
    Ok(())
}

/// The queries timed: a reader's page, a room's page, a search.
fn queries() -> Vec<(&'static str, Query)> {
    let mut reader = HistoryQuery::newest(50);
    reader.reader = Some("receiver-3".into());
    let mut room = HistoryQuery::newest(50);
    room.to = Some(Target::Room("ops".into()));
    let search = SearchQuery {
        text: "rollback".into(),
        within: HistoryQuery::newest(50),
    };
    vec![
        ("a reader's newest 50", Query::History(reader)),
        ("a room's newest 50", Query::History(room)),
        ("search, newest 50 hits", Query::Search(search)),
    ]
}

enum Query {
    History(HistoryQuery),
    Search(SearchQuery),
}

/// p50 and max of one query, and the ids it found.
async fn time(
    store: &SqliteStore,
    query: &Query,
) -> anyhow::Result<(Duration, Duration, Vec<String>)> {
    let mut samples = Vec::with_capacity(RUNS);
    let began = Instant::now();
    let mut found = Vec::new();
    while samples.len() < RUNS && began.elapsed() < BUDGET {
        let at = Instant::now();
        let messages = match query {
            Query::History(q) => store.history(q.clone()).await?,
            Query::Search(q) => store.search(q.clone()).await?,
        };
        samples.push(at.elapsed());
        found = messages.into_iter().map(|m| m.id).collect();
    }
    let (p50, max) = median_max(&mut samples);
    Ok((p50, max, found))
}

/// Times every query on `store`, adding its rows and figures under
/// `state`; the ids each query found, in order.
async fn measure(
    store: &SqliteStore,
    state: &str,
    rows: &mut Vec<Row>,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut answers = Vec::new();
    for (name, query) in queries() {
        let (p50, max, ids) = time(store, &query).await?;
        let found = ids.len();
        answers.push(ids);
        rows.push(Row::info(
            format!("history ({state}): {name}"),
            format!(
                "p50 {} / max {} ({found} found)",
                fmt_us(us(p50)),
                fmt_us(us(max))
            ),
        ));
        figures.insert(
            format!("{name} ({state})"),
            json!({"p50_us": us(p50), "max_us": us(max), "found": found}),
        );
    }
    Ok(answers)
}

pub async fn run(_opts: &Opts) -> anyhow::Result<Section> {
    let dir = tempfile::TempDir::new().context("a temporary directory")?;
    let path = dir.path().join("muster.db");
    eprintln!("history: writing {STORED} messages, then {TAIL} the writer has not indexed yet…");
    let store = SqliteStore::open(&path)?;
    write(&store, 0..STORED).await?;
    drop(store); // closing indexes every message
    let never = Indexing {
        every: u64::MAX,
        when_idle: None,
    };
    let store = SqliteStore::open_with_indexing(&path, never)?;
    write(&store, STORED..STORED + TAIL).await?;

    let mut rows = Vec::new();
    let mut figures = serde_json::Map::new();
    let from_tail = measure(&store, "255 not indexed", &mut rows, &mut figures).await?;
    drop(store); // closing indexes the tail
    let store = SqliteStore::open_with_indexing(&path, never)?;
    let indexed = measure(&store, "all indexed", &mut rows, &mut figures).await?;
    // The same store both times: every query must find the same messages.
    let errors = queries()
        .iter()
        .zip(from_tail.iter().zip(&indexed))
        .filter(|(_, (a, b))| a != b)
        .map(|((name, _), _)| format!("{name}: the tail and the indexes found different messages"))
        .collect();
    Ok(Section {
        name: "history",
        json: serde_json::Value::Object(figures),
        rows,
        errors,
    })
}
