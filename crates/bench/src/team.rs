//! Team mode on PostgreSQL: three in-process daemons on one fresh database
//! (on the server at `MUSTER_BENCH_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`, dropped afterwards).
//!
//! - durable sends/s through all three daemons at once (64 connections in
//!   all, spread over them; target: at least 5,000/s), beside the same
//!   load on one PostgreSQL daemon and on one SQLite daemon, and a check
//!   that every acknowledged send is stored once;
//! - cross-daemon delivery: a `muster mcp` shim linked to daemon A sends
//!   to one linked to daemon B, serially; p50/p99 from `send_message` to
//!   the receiver's channel notification (target: p99 under 10 ms),
//!   beside the same with both shims on A.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use muster_daemon::StoreKind;
use serde_json::json;
use tokio_postgres::NoTls;

use crate::load::{self, Outcome, Spec};
use crate::report::{fmt_rate, fmt_us, r1, Row, Section, Verdict};
use crate::shim::{Event, Shim, CALL_TIMEOUT};
use crate::{daemon, delivery, Opts};

pub const TARGET_SENDS_PER_SEC: f64 = 5_000.0;
pub const TARGET_CROSS_P99_US: f64 = 10_000.0;
const DAEMONS: usize = 3;
const CONNECTIONS: usize = 64;
const SESSIONS: usize = 64;
/// Serial deliveries measured per placement, at most.
const DELIVERIES: u64 = 2_000;

fn server() -> String {
    std::env::var("MUSTER_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database on the server, dropped (with its connections) on drop.
struct Database {
    name: String,
}

async fn sql(database: &str, statement: &str) -> anyhow::Result<()> {
    let url = format!("{}/{database}", server());
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url}"))?;
    tokio::spawn(connection);
    client
        .batch_execute(statement)
        .await
        .with_context(|| format!("{statement} failed"))
}

impl Database {
    async fn create() -> anyhow::Result<Database> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("muster_bench_{}_{nanos}", std::process::id());
        sql("postgres", &format!("CREATE DATABASE {name}")).await?;
        Ok(Database { name })
    }

    fn url(&self) -> String {
        format!("{}/{}", server(), self.name)
    }

    async fn drop_it(self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = sql("postgres", &drop).await {
            eprintln!("team: could not drop the bench database: {e:#}");
        }
    }

    async fn count(&self, query: &str) -> anyhow::Result<i64> {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls).await?;
        tokio::spawn(connection);
        Ok(client.query_one(query, &[]).await?.get(0))
    }
}

fn ids() -> Arc<Vec<String>> {
    Arc::new(
        (0..SESSIONS)
            .map(|i| format!("bench-team-{i:03}"))
            .collect(),
    )
}

/// Registers the sessions through the first daemon and waits until every
/// daemon knows them all.
async fn register_everywhere(addrs: &[SocketAddr], ids: &[String]) -> anyhow::Result<()> {
    daemon::register_by_hook(addrs[0], ids).await?;
    let give_up = Instant::now() + Duration::from_secs(30);
    for addr in addrs {
        while daemon::status(*addr).await?.sessions_present < ids.len() {
            if Instant::now() > give_up {
                bail!("daemon {addr} did not learn of every session within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// `CONNECTIONS` closed-loop senders spread over `addrs`, all at once.
async fn send_through(opts: &Opts, addrs: &[SocketAddr]) -> anyhow::Result<Vec<Outcome>> {
    let ids = ids();
    let make = move |w: usize, n: u64| -> (&'static str, Bytes) {
        let from = &ids[w % SESSIONS];
        let to = &ids[(w + 1 + (n as usize % (SESSIONS - 1))) % SESSIONS];
        let body = json!({"as": from, "to": to, "body": format!("team bench {w}-{n}: the build is green")});
        ("/api/v1/messages", Bytes::from(body.to_string()))
    };
    let make: Arc<load::MakeRequest> = Arc::new(make);
    let runs = addrs.iter().enumerate().map(|(i, addr)| {
        let workers = CONNECTIONS / addrs.len() + usize::from(i < CONNECTIONS % addrs.len());
        let spec = Spec {
            workers,
            warmup: opts.warmup,
            measure: opts.measure,
            max_requests_per_worker: 5_000_000,
            request_timeout: Duration::from_secs(10),
        };
        load::run(*addr, spec, make.clone())
    });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .collect()
}

/// What a set of concurrent runs did together.
struct Together {
    per_sec: f64,
    hist: Histogram<u64>,
    acknowledged: u64,
    errors: Vec<String>,
}

fn together(outcomes: &[Outcome]) -> anyhow::Result<Together> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = Vec::new();
    for o in outcomes {
        hist.add(&o.hist)?;
        if o.errors > 0 {
            errors.push(format!(
                "{} sends failed; first: {}",
                o.errors,
                o.first_error.clone().unwrap_or_default()
            ));
        }
    }
    Ok(Together {
        per_sec: outcomes.iter().map(Outcome::per_sec).sum(),
        hist,
        acknowledged: outcomes.iter().map(|o| o.total_ok).sum(),
        errors,
    })
}

/// A histogram's p50 and p99, as one figure.
fn p50_p99(h: &Histogram<u64>) -> String {
    format!("{} / {}", fmt_us(q_us(h, 0.5)), fmt_us(q_us(h, 0.99)))
}

fn q_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// Sends through `n` PostgreSQL daemons on a fresh database; checks that
/// the database holds every acknowledged send once.
async fn postgres_sends(opts: &Opts, n: usize) -> anyhow::Result<Together> {
    let db = Database::create().await?;
    let result = async {
        let mut running = Vec::new();
        for _ in 0..n {
            let url = db.url();
            running.push(daemon::start(move |c| c.store = StoreKind::Postgres(url)).await?);
        }
        let addrs: Vec<SocketAddr> = running.iter().map(daemon::Running::addr).collect();
        register_everywhere(&addrs, &ids()).await?;
        eprintln!("team: {CONNECTIONS} connections over {n} PostgreSQL daemon(s)…");
        let mut out = together(&send_through(opts, &addrs).await?)?;
        for r in running {
            r.stop().await?;
        }
        let stored = db.count("SELECT count(*) FROM messages").await? as u64;
        let distinct = db.count("SELECT count(DISTINCT id) FROM messages").await? as u64;
        if stored != distinct || (out.errors.is_empty() && stored != out.acknowledged) {
            out.errors.push(format!(
                "{} sends acknowledged through {n} daemon(s), {stored} stored ({distinct} distinct)",
                out.acknowledged
            ));
        }
        anyhow::Ok(out)
    }
    .await;
    db.drop_it().await;
    result
}

async fn sqlite_sends(opts: &Opts) -> anyhow::Result<Together> {
    let running = daemon::start(|_| {}).await?;
    daemon::register_by_hook(running.addr(), &ids()).await?;
    eprintln!("team: {CONNECTIONS} connections on one SQLite daemon…");
    let out = together(&send_through(opts, &[running.addr()]).await?)?;
    running.stop().await?;
    Ok(out)
}

/// Serial deliveries from a shim on `from` to a shim on `to`: send →
/// notification shown, for `opts.measure` or [`DELIVERIES`], after a warm-up.
async fn deliveries(
    opts: &Opts,
    from: SocketAddr,
    to: SocketAddr,
    tag: &str,
) -> anyhow::Result<Histogram<u64>> {
    let dir = tempfile::tempdir()?;
    let bin = &opts.muster_binary;
    let (sid, rid) = (
        format!("bench-{tag}-sender"),
        format!("bench-{tag}-receiver"),
    );
    let mut sender = Shim::spawn(bin, &format!("http://{from}"), &sid, dir.path())?;
    let mut receiver = Shim::spawn(bin, &format!("http://{to}"), &rid, dir.path())?;
    sender.initialize().await?;
    receiver.initialize().await?;
    delivery::wait_for_links(to, &[sid.clone(), rid.clone()]).await?;
    delivery::wait_for_links(from, &[sid.clone(), rid.clone()]).await?;
    let mut hist = Histogram::<u64>::new(3)?;
    let measure_from = Instant::now() + opts.warmup;
    let until = measure_from + opts.measure;
    let mut n = 0u64;
    while Instant::now() < until && hist.len() < DELIVERIES {
        let body = format!("team delivery {tag} {n}");
        n += 1;
        let began = Instant::now();
        sender
            .request(
                "tools/call",
                json!({"name": "send_message", "arguments": {"to": rid, "body": body}}),
            )
            .await?;
        let shown = tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                match receiver.events.recv().await {
                    Some(Event::Channel { at, content }) if content == body => return Ok(at),
                    Some(Event::Closed(why)) | Some(Event::Garbage(why)) => {
                        bail!("receiver: {why}")
                    }
                    None => bail!("the receiver's reader stopped"),
                    Some(_) => {}
                }
            }
        })
        .await
        .with_context(|| format!("{body} was not shown within {CALL_TIMEOUT:?}"))??;
        // Its answer, before the next send.
        while let Some(event) = sender.events.recv().await {
            if matches!(event, Event::Answer { .. }) {
                break;
            }
        }
        if began >= measure_from {
            let us = shown.saturating_duration_since(began).as_micros() as u64;
            hist.record(us.max(1) * 1_000)?;
        }
    }
    sender.stop().await;
    receiver.stop().await;
    Ok(hist)
}

/// Cross-daemon and same-daemon delivery, on two PostgreSQL daemons.
async fn delivery_latency(opts: &Opts) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let db = Database::create().await?;
    let result = async {
        let (url_a, url_b) = (db.url(), db.url());
        let a = daemon::start(move |c| c.store = StoreKind::Postgres(url_a)).await?;
        let b = daemon::start(move |c| c.store = StoreKind::Postgres(url_b)).await?;
        eprintln!("team: serial deliveries, shim on A to shim on B…");
        let across = deliveries(opts, a.addr(), b.addr(), "across").await?;
        eprintln!("team: serial deliveries, both shims on A…");
        let same = deliveries(opts, a.addr(), a.addr(), "same").await?;
        a.stop().await?;
        b.stop().await?;
        anyhow::Ok((across, same))
    }
    .await;
    db.drop_it().await;
    result
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let three = postgres_sends(opts, DAEMONS).await?;
    let one = postgres_sends(opts, 1).await?;
    let sqlite = sqlite_sends(opts).await?;
    let (across, same) = delivery_latency(opts).await?;
    let mut errors = Vec::new();
    for (what, t) in [
        ("3 daemons", &three),
        ("1 daemon", &one),
        ("sqlite", &sqlite),
    ] {
        errors.extend(t.errors.iter().map(|e| format!("{what}: {e}")));
    }
    let cross_p99 = q_us(&across, 0.99);
    let rows = vec![
        Row::new(
            format!("team: durable sends/s, 3 PostgreSQL daemons, {CONNECTIONS} conns"),
            fmt_rate(three.per_sec),
            format!(">= {}/s", TARGET_SENDS_PER_SEC as u64),
            Verdict::at_least(three.per_sec, TARGET_SENDS_PER_SEC),
        ),
        Row::info("team: 3 daemons, send p50 / p99", p50_p99(&three.hist)),
        Row::info("team: 1 PostgreSQL daemon, sends/s", fmt_rate(one.per_sec)),
        Row::info(
            "team: 1 PostgreSQL daemon, send p50 / p99",
            p50_p99(&one.hist),
        ),
        Row::info("team: 1 SQLite daemon, sends/s", fmt_rate(sqlite.per_sec)),
        Row::info(
            "team: 1 SQLite daemon, send p50 / p99",
            p50_p99(&sqlite.hist),
        ),
        Row::new(
            "team: cross-daemon delivery p99 (shim on A → shim on B)",
            fmt_us(cross_p99),
            format!("< {}", fmt_us(TARGET_CROSS_P99_US)),
            Verdict::under(cross_p99, TARGET_CROSS_P99_US),
        ),
        Row::info(
            "team: cross-daemon delivery p50",
            fmt_us(q_us(&across, 0.5)),
        ),
        Row::info(
            "team: same-daemon delivery on PostgreSQL p50 / p99",
            p50_p99(&same),
        ),
    ];
    let figures = |t: &Together| json!({"sends_per_sec": r1(t.per_sec), "p50_us": r1(q_us(&t.hist, 0.5)), "p99_us": r1(q_us(&t.hist, 0.99)), "acknowledged": t.acknowledged});
    let json = json!({
        "three_postgres_daemons": figures(&three),
        "one_postgres_daemon": figures(&one),
        "one_sqlite_daemon": figures(&sqlite),
        "cross_daemon_delivery": {"deliveries": across.len(), "p50_us": r1(q_us(&across, 0.5)), "p99_us": r1(cross_p99), "max_us": r1(across.max() as f64 / 1000.0)},
        "same_daemon_delivery": {"deliveries": same.len(), "p50_us": r1(q_us(&same, 0.5)), "p99_us": r1(q_us(&same, 0.99))},
    });
    Ok(Section {
        name: "team",
        json,
        rows,
        errors,
    })
}
