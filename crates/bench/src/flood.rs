//! One session's flood beside 8 ordinary ones: what the ordinary sessions'
//! latency becomes while one session sends and calls hooks as fast as its
//! connections carry them.
//!
//! Each ordinary session paces itself (one request every `PACE`, three hooks
//! then a send to the next session, as an agent's tool calls go) over its
//! own keep-alive connection. The flooder runs `FLOOD_CONNECTIONS` closed
//! loops of sends and hook calls, each next request as soon as the last was
//! answered, 429s included, to a sink session nobody reads. Four phases,
//! each on a fresh daemon: the ordinary load alone (default limits), with
//! the flood (default limits), with the flood under tight limits (sends
//! 100/s, hooks 500/s), and with the flood and every rate limit off. Target: the ordinary p99 with the flood at most
//! 2× the p99 without it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use muster_core::limits::Rate;
use serde_json::json;

use crate::http::{snippet, Conn};
use crate::report::{fmt_rate, fmt_us, r1, thousands, Row, Section, Verdict};
use crate::{daemon, Opts};

/// Ordinary sessions.
const ORDINARY: usize = 8;
/// One request per ordinary session this often (200/s each, 1,600/s in all).
const PACE: Duration = Duration::from_millis(5);
/// The flooder's concurrent connections.
const FLOOD_CONNECTIONS: usize = 8;
/// Hard caps on requests per loop, whatever the deadline.
const MAX_ORDINARY_REQUESTS: u64 = 200_000;
const MAX_FLOOD_REQUESTS: u64 = 5_000_000;
/// One request taking longer than this is an error and ends its loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Target: ordinary p99 with the flood over without it.
const TARGET_RATIO: f64 = 2.0;

const HIST_LOW_NS: u64 = 1_000;
const HIST_HIGH_NS: u64 = 60_000_000_000;

fn ordinary_id(i: usize) -> String {
    format!("bench-ordinary-{i}")
}
const FLOODER: &str = "bench-flooder";
const SINK: &str = "bench-sink";

fn hook_body(id: &str, event: &str) -> Bytes {
    Bytes::from(
        json!({
            "session_id": id,
            "transcript_path": format!("/tmp/{id}.jsonl"),
            "cwd": "/tmp",
            "permission_mode": "default",
            "hook_event_name": event,
            "prompt": "carry on",
            "tool_name": "Bash",
            "tool_input": {"command": "ls"},
        })
        .to_string(),
    )
}

fn send_body(from: &str, to: &str, n: u64) -> Bytes {
    Bytes::from(
        json!({"as": from, "to": to, "body": format!("message {n} from {from}: the build is green")})
            .to_string(),
    )
}

/// The `n`th request of an ordinary session `i`: pre-tool-use,
/// post-tool-use, prompt-submit, then a send to the next session.
fn ordinary_request(i: usize, n: u64) -> (&'static str, Bytes) {
    let id = ordinary_id(i);
    match n % 4 {
        0 => ("/hook/pre-tool-use", hook_body(&id, "PreToolUse")),
        1 => ("/hook/post-tool-use", hook_body(&id, "PostToolUse")),
        2 => ("/hook/prompt-submit", hook_body(&id, "UserPromptSubmit")),
        _ => (
            "/api/v1/messages",
            send_body(&id, &ordinary_id((i + 1) % ORDINARY), n),
        ),
    }
}

/// The flooder's `n`th request on connection `w`: sends and hooks, alternately.
fn flood_request(w: usize, n: u64) -> (&'static str, Bytes) {
    if (w as u64 + n).is_multiple_of(2) {
        ("/api/v1/messages", send_body(FLOODER, SINK, n))
    } else {
        ("/hook/pre-tool-use", hook_body(FLOODER, "PreToolUse"))
    }
}

#[derive(Default)]
struct Counts {
    ok: u64,
    limited: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.ok += other.ok;
        self.limited += other.limited;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Records one answer; false if the loop must end.
    fn answer(
        &mut self,
        path: &str,
        answer: Result<anyhow::Result<(StatusCode, Bytes)>, tokio::time::error::Elapsed>,
    ) -> bool {
        match answer {
            Ok(Ok((StatusCode::OK, _))) => self.ok += 1,
            Ok(Ok((StatusCode::TOO_MANY_REQUESTS, _))) => self.limited += 1,
            Ok(Ok((status, body))) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| {
                    format!("POST {path} answered {status}: {}", snippet(&body))
                });
                return self.errors < 100;
            }
            Ok(Err(e)) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("POST {path} failed: {e:#}"));
                return false;
            }
            Err(_) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("POST {path} took over {REQUEST_TIMEOUT:?}"));
                return false;
            }
        }
        true
    }
}

/// One ordinary session's paced loop; latencies of its measured requests.
async fn ordinary(
    i: usize,
    mut conn: Conn,
    measure_start: Instant,
    deadline: Instant,
) -> anyhow::Result<([Histogram<u64>; 2], Counts)> {
    // Hooks, then sends (a send waits for its durable commit).
    let mut hist = [
        Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
        Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
    ];
    let mut counts = Counts::default();
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..MAX_ORDINARY_REQUESTS {
        tick.tick().await;
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        let (path, body) = ordinary_request(i, n);
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, conn.post(path, body)).await;
        let took = began.elapsed();
        let ok = matches!(answer, Ok(Ok((StatusCode::OK, _))));
        if !counts.answer(path, answer) {
            break;
        }
        if ok && began >= measure_start {
            let kind = usize::from(path.starts_with("/api/"));
            hist[kind].saturating_record((took.as_nanos() as u64).clamp(HIST_LOW_NS, HIST_HIGH_NS));
        }
    }
    Ok((hist, counts))
}

/// One of the flooder's closed loops.
async fn flooder(w: usize, mut conn: Conn, deadline: Instant) -> Counts {
    let mut counts = Counts::default();
    for n in 0..MAX_FLOOD_REQUESTS {
        if Instant::now() >= deadline {
            break;
        }
        let (path, body) = flood_request(w, n);
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, conn.post(path, body)).await;
        if !counts.answer(path, answer) {
            break;
        }
    }
    counts
}

struct Phase {
    /// Every ordinary request; hooks only; sends only.
    hist: Histogram<u64>,
    hooks: Histogram<u64>,
    sends: Histogram<u64>,
    ordinary: Counts,
    flood: Counts,
    /// Seconds the flood ran (warm-up included).
    flood_secs: f64,
}

fn quantile_us(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1_000.0
}

impl Phase {
    fn p99_us(&self) -> f64 {
        quantile_us(&self.hist, 0.99)
    }
    fn p50_us(&self) -> f64 {
        quantile_us(&self.hist, 0.50)
    }
}

/// Which rate limits a phase's daemon runs with.
#[derive(Clone, Copy)]
enum Limits {
    Default,
    /// `--send-rate 100/s --hook-rate 500/s`: what a stricter setup might use.
    Tight,
    Off,
}

async fn phase(opts: &Opts, flood: bool, limits: Limits) -> anyhow::Result<Phase> {
    let running = daemon::start(|c| match limits {
        Limits::Default => {}
        Limits::Tight => {
            c.send_rate = Rate::new(100, 100);
            c.hook_rate = Rate::new(500, 500);
        }
        Limits::Off => {
            c.send_rate = Rate::UNLIMITED;
            c.hook_rate = Rate::UNLIMITED;
            c.connection_rate = Rate::UNLIMITED;
        }
    })
    .await?;
    let addr: SocketAddr = running.addr();
    let mut ids: Vec<String> = (0..ORDINARY).map(ordinary_id).collect();
    ids.push(FLOODER.into());
    ids.push(SINK.into());
    daemon::register_by_hook(addr, &ids).await?;
    let mut ordinary_conns = Vec::new();
    for _ in 0..ORDINARY {
        ordinary_conns.push(Conn::connect(addr).await?);
    }
    let mut flood_conns = Vec::new();
    if flood {
        for _ in 0..FLOOD_CONNECTIONS {
            flood_conns.push(Conn::connect(addr).await?);
        }
    }
    let start = Instant::now();
    let measure_start = start + opts.warmup;
    let deadline = measure_start + opts.measure;
    let floods: Vec<_> = flood_conns
        .into_iter()
        .enumerate()
        .map(|(w, conn)| tokio::spawn(flooder(w, conn, deadline)))
        .collect();
    let ordinaries: Vec<_> = ordinary_conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(ordinary(i, conn, measure_start, deadline)))
        .collect();
    let mut out = Phase {
        hist: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
        hooks: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
        sends: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
        ordinary: Counts::default(),
        flood: Counts::default(),
        flood_secs: 0.0,
    };
    for task in ordinaries {
        let ([hooks, sends], counts) = task.await.context("an ordinary session panicked")??;
        out.hist.add(&hooks)?;
        out.hist.add(&sends)?;
        out.hooks.add(&hooks)?;
        out.sends.add(&sends)?;
        out.ordinary.add(counts);
    }
    for task in floods {
        out.flood.add(task.await.context("a flood loop panicked")?);
    }
    out.flood_secs = start.elapsed().as_secs_f64();
    running.stop().await?;
    Ok(out)
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    eprintln!(
        "flood: {ORDINARY} ordinary sessions at one request per {} ms each, one flooder on {FLOOD_CONNECTIONS} connections; \
         4 phases of {} s warm-up + {} s measured…",
        PACE.as_millis(),
        opts.warmup.as_secs(),
        opts.measure.as_secs()
    );
    let quiet = phase(opts, false, Limits::Default).await?;
    let flooded = phase(opts, true, Limits::Default).await?;
    let tight = phase(opts, true, Limits::Tight).await?;
    let unlimited = phase(opts, true, Limits::Off).await?;

    let ratio = flooded.p99_us() / quiet.p99_us().max(1e-9);
    let unlimited_ratio = unlimited.p99_us() / quiet.p99_us().max(1e-9);
    let tight_ratio = tight.p99_us() / quiet.p99_us().max(1e-9);
    let mut errors = Vec::new();
    for (name, p) in [
        ("alone", &quiet),
        ("flood", &flooded),
        ("flood, limits off", &unlimited),
    ] {
        if p.ordinary.errors > 0 || p.ordinary.limited > 0 {
            errors.push(format!(
                "{name}: {} ordinary requests failed and {} were refused 429; first: {}",
                p.ordinary.errors,
                p.ordinary.limited,
                p.ordinary.first_error.clone().unwrap_or_default()
            ));
        }
        if p.flood.errors > 0 {
            errors.push(format!(
                "{name}: {} flood requests failed (other than 429); first: {}",
                p.flood.errors,
                p.flood.first_error.clone().unwrap_or_default()
            ));
        }
    }
    let per_sec = |n: u64, p: &Phase| n as f64 / p.flood_secs.max(1e-9);
    let label = format!("flood @{ORDINARY} ordinary");
    let rows = vec![
        Row::info(format!("{label}: p50 alone"), fmt_us(quiet.p50_us())),
        Row::info(format!("{label}: p99 alone"), fmt_us(quiet.p99_us())),
        Row::info(
            format!("{label}: p50 beside the flood"),
            fmt_us(flooded.p50_us()),
        ),
        Row::info(
            format!("{label}: p99 beside the flood"),
            fmt_us(flooded.p99_us()),
        ),
        Row::info(
            format!("{label}: hooks p99 alone / beside the flood"),
            format!(
                "{} / {}",
                fmt_us(quantile_us(&quiet.hooks, 0.99)),
                fmt_us(quantile_us(&flooded.hooks, 0.99))
            ),
        ),
        Row::info(
            format!("{label}: sends p99 alone / beside the flood"),
            format!(
                "{} / {}",
                fmt_us(quantile_us(&quiet.sends, 0.99)),
                fmt_us(quantile_us(&flooded.sends, 0.99))
            ),
        ),
        Row::new(
            format!("{label}: p99 ratio, flood/alone"),
            format!("{:.2}×", ratio),
            format!("<= {TARGET_RATIO}×"),
            if ratio <= TARGET_RATIO {
                Verdict::Pass
            } else {
                Verdict::Miss
            },
        ),
        Row::info(
            format!("{label}: flood taken / refused 429"),
            format!(
                "{} / {}",
                fmt_rate(per_sec(flooded.flood.ok, &flooded)),
                fmt_rate(per_sec(flooded.flood.limited, &flooded))
            ),
        ),
        Row::info(
            format!("{label}: p99 beside the flood, tight limits"),
            fmt_us(tight.p99_us()),
        ),
        Row::info(
            format!("{label}: p99 ratio, tight limits"),
            format!("{:.2}×", tight_ratio),
        ),
        Row::info(
            format!("{label}: flood taken / refused 429, tight limits"),
            format!(
                "{} / {}",
                fmt_rate(per_sec(tight.flood.ok, &tight)),
                fmt_rate(per_sec(tight.flood.limited, &tight))
            ),
        ),
        Row::info(
            format!("{label}: p99 beside the flood, limits off"),
            fmt_us(unlimited.p99_us()),
        ),
        Row::info(
            format!("{label}: p99 ratio, limits off"),
            format!("{:.2}×", unlimited_ratio),
        ),
        Row::info(
            format!("{label}: flood taken, limits off"),
            fmt_rate(per_sec(unlimited.flood.ok, &unlimited)),
        ),
        Row::new(
            format!("{label}: failed ordinary requests"),
            thousands(
                quiet.ordinary.errors
                    + flooded.ordinary.errors
                    + tight.ordinary.errors
                    + unlimited.ordinary.errors,
            ),
            "0",
            Verdict::check(errors.is_empty()),
        ),
    ];
    let phase_json = |p: &Phase| {
        json!({
            "ordinary_requests": p.ordinary.ok,
            "ordinary_p50_us": r1(p.p50_us()),
            "ordinary_p99_us": r1(p.p99_us()),
            "ordinary_max_us": r1(p.hist.max() as f64 / 1_000.0),
            "hooks_p99_us": r1(quantile_us(&p.hooks, 0.99)),
            "sends_p99_us": r1(quantile_us(&p.sends, 0.99)),
            "flood_taken": p.flood.ok,
            "flood_refused_429": p.flood.limited,
            "flood_taken_per_sec": r1(per_sec(p.flood.ok, p)),
            "flood_refused_per_sec": r1(per_sec(p.flood.limited, p)),
        })
    };
    let json = json!({
        "ordinary_sessions": ORDINARY,
        "ordinary_pace_ms": PACE.as_millis() as u64,
        "flood_connections": FLOOD_CONNECTIONS,
        "warmup_s": opts.warmup.as_secs_f64(),
        "measured_s": opts.measure.as_secs_f64(),
        "alone": phase_json(&quiet),
        "flood": phase_json(&flooded),
        "flood_tight_limits": phase_json(&tight),
        "flood_limits_off": phase_json(&unlimited),
        "p99_ratio_tight_limits": r1(tight_ratio * 100.0) / 100.0,
        "p99_ratio": r1(ratio * 100.0) / 100.0,
        "p99_ratio_limits_off": r1(unlimited_ratio * 100.0) / 100.0,
        "target_ratio": TARGET_RATIO,
        "pass": ratio <= TARGET_RATIO,
    });
    Ok(Section {
        name: "flood",
        json,
        rows,
        errors,
    })
}
