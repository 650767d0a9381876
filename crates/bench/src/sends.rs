//! Durable sends: `POST /api/v1/messages` between registered sessions. The
//! daemon answers only once the message is committed (and fsynced) in
//! SQLite, so this measures the store's group commit under load.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use muster_store::Store;
use muster_store_sqlite::SqliteStore;
use serde_json::json;

use crate::load::{self, Outcome, Spec};
use crate::report::{fmt_rate, fmt_us, r1, thousands, Row, Section, Verdict};
use crate::{daemon, Opts};

pub const TARGET_PER_SEC: f64 = 10_000.0;
const SESSIONS: usize = 64;

fn spec(opts: &Opts, workers: usize) -> Spec {
    Spec {
        workers,
        warmup: opts.warmup,
        measure: opts.measure,
        max_requests_per_worker: 5_000_000,
        request_timeout: Duration::from_secs(10),
    }
}

fn outcome_json(workers: usize, out: &Outcome) -> serde_json::Value {
    json!({
        "connections": workers,
        "measured_s": r1(out.elapsed.as_secs_f64() * 1000.0) / 1000.0,
        "sends": out.measured_ok,
        "sends_per_sec": r1(out.per_sec()),
        "p50_us": r1(out.quantile_us(0.50)),
        "p99_us": r1(out.quantile_us(0.99)),
        "p999_us": r1(out.quantile_us(0.999)),
        "max_us": r1(out.max_us()),
        "acknowledged_incl_warmup": out.total_ok,
        "errors": out.errors,
        "first_error": out.first_error,
        "capped": out.capped,
    })
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let running = daemon::start(|_| {}).await?;
    let addr = running.addr();
    let ids: Vec<String> = (0..SESSIONS)
        .map(|i| format!("bench-send-{i:03}"))
        .collect();
    daemon::register_by_hook(addr, &ids).await?;
    let ids = Arc::new(ids);
    let make = {
        let ids = ids.clone();
        move |w: usize, n: u64| -> (&'static str, Bytes) {
            let from = &ids[w % SESSIONS];
            // Anyone but the sender.
            let to = &ids[(w + 1 + (n as usize % (SESSIONS - 1))) % SESSIONS];
            let body = json!({"as": from, "to": to, "body": format!("bench message {w}-{n}: the build is green")});
            ("/api/v1/messages", Bytes::from(body.to_string()))
        }
    };
    let make: Arc<load::MakeRequest> = Arc::new(make);

    let conc = opts.send_concurrency;
    eprintln!(
        "sends: {conc} connections, {} s warm-up + {} s measured…",
        opts.warmup.as_secs(),
        opts.measure.as_secs()
    );
    let many = load::run(addr, spec(opts, conc), make.clone()).await?;
    eprintln!(
        "sends: 1 connection (serial), {} s warm-up + {} s measured…",
        opts.warmup.as_secs(),
        opts.measure.as_secs()
    );
    let serial = load::run(addr, spec(opts, 1), make).await?;

    // Nothing acknowledged may be missing: in memory now, and on disk after a stop.
    let acknowledged = many.total_ok + serial.total_ok;
    let unread_live = daemon::status(addr).await?.unread_deliveries as u64;
    let dir = running.stop().await?;
    let store = SqliteStore::open(dir.path().join("muster.db"))?;
    let unread_stored = store.load().await?.unread.len() as u64;
    drop(store);

    let failed = many.errors + serial.errors;
    let mut errors = Vec::new();
    for (what, out) in [("concurrent", &many), ("serial", &serial)] {
        if out.errors > 0 {
            errors.push(format!(
                "{} {what} sends failed; first: {}",
                out.errors,
                out.first_error.clone().unwrap_or_default()
            ));
        }
    }
    // A send that timed out may have been stored unacknowledged: then only
    // "at least" can be checked (and the run is failed anyway).
    let holds = |n: u64| {
        if failed == 0 {
            n == acknowledged
        } else {
            n >= acknowledged
        }
    };
    if !holds(unread_live) {
        errors.push(format!(
            "{acknowledged} sends acknowledged but the daemon holds {unread_live} unread deliveries"
        ));
    }
    if !holds(unread_stored) {
        errors.push(format!(
            "{acknowledged} sends acknowledged but the store holds {unread_stored} unread deliveries"
        ));
    }

    let rate = many.per_sec();
    let label = format!("sends @{conc} conns");
    let mut rows = vec![
        Row::new(
            format!("{label}: durable sends/s"),
            fmt_rate(rate),
            format!(">= {}/s", thousands(TARGET_PER_SEC as u64)),
            Verdict::at_least(rate, TARGET_PER_SEC),
        ),
        Row::info(format!("{label}: p50"), fmt_us(many.quantile_us(0.50))),
        Row::info(format!("{label}: p99"), fmt_us(many.quantile_us(0.99))),
        Row::info(format!("{label}: max"), fmt_us(many.max_us())),
        Row::info(
            "sends @1 conn (serial): sends/s",
            fmt_rate(serial.per_sec()),
        ),
        Row::info(
            "sends @1 conn (serial): p50",
            fmt_us(serial.quantile_us(0.50)),
        ),
        Row::info(
            "sends @1 conn (serial): p99",
            fmt_us(serial.quantile_us(0.99)),
        ),
        Row::new(
            "sends: failed requests",
            thousands(failed),
            "0",
            Verdict::check(failed == 0),
        ),
        Row::new(
            "sends: acked = unread in daemon",
            format!("{} = {}", thousands(acknowledged), thousands(unread_live)),
            "equal",
            Verdict::check(holds(unread_live)),
        ),
        Row::new(
            "sends: acked = unread in store",
            format!("{} = {}", thousands(acknowledged), thousands(unread_stored)),
            "equal",
            Verdict::check(holds(unread_stored)),
        ),
    ];
    if many.capped || serial.capped {
        rows.push(Row::info(
            "sends: note",
            "a worker hit its request cap before the deadline",
        ));
    }
    let json = json!({
        "sessions": SESSIONS,
        "warmup_s": opts.warmup.as_secs_f64(),
        "concurrent": outcome_json(conc, &many),
        "serial": outcome_json(1, &serial),
        "sends_per_sec": r1(rate),
        "acknowledged": acknowledged,
        "unread_in_daemon": unread_live,
        "unread_in_store_after_stop": unread_stored,
        "nothing_lost": holds(unread_live) && holds(unread_stored),
        "target_sends_per_sec": TARGET_PER_SEC,
        "pass": rate >= TARGET_PER_SEC,
    });
    Ok(Section {
        name: "sends",
        json,
        rows,
        errors,
    })
}
