//! `muster-bench load`: a soak of the real daemon under a mixed, steady load.
//!
//! A `muster serve` child process serves N sessions: some are real
//! `muster mcp` shims (they send with the `send_message` tool and get their
//! mail pushed), the rest are hook-only sessions (they send through the API
//! and pick up their mail with a `prompt-submit` hook every
//! [`HOOK_POLL`], as an agent's turns would). Messages go out at a set rate
//! (open loop: a slow answer does not slow the schedule), each from one
//! session to another, each body carrying its number.
//!
//! Every [`Opts::load_sample`] it prints a progress line and keeps a sample:
//! sends answered, errors, the send latency's p50/p99/p99.9 in that window,
//! and the daemon's RSS. At the end it drains until every acknowledged
//! message has reached its recipient, and checks each arrived exactly once.
//! Verdicts: nothing lost or repeated, no errors, RSS flat within 10% after
//! the warm-up, and the window p99 flat (no window over twice the median).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon::{self, ServeChild};
use crate::delivery::wait_for_links;
use crate::http::{snippet, Conn};
use crate::report::{fmt_us, r1, thousands, Row, Section, Verdict};
use crate::shim::{Event, Shim};
use crate::Opts;

/// How often a hook-only session runs a hook that surfaces its mail.
const HOOK_POLL: Duration = Duration::from_millis(500);
/// After the last send, how long every acknowledged message may take to arrive.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);
/// RSS after the warm-up may move by this share at most.
const RSS_FLAT_SHARE: f64 = 0.10;
/// No window's p99 may exceed the median window's by more than this factor.
const P99_FLAT_FACTOR: f64 = 2.0;
/// A send not answered within this is an error.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the run shares between its tasks.
#[derive(Default)]
struct Tally {
    /// Send latencies in the current window (ns).
    window: Option<Histogram<u64>>,
    /// Send latencies over the whole measured run (ns).
    total: Option<Histogram<u64>>,
    acked: Vec<u64>,
    errors: u64,
    first_errors: Vec<String>,
    /// How many times each message number reached its recipient.
    arrived: HashMap<u64, u32>,
    /// Hook calls answered, and their latencies over the whole run (ns).
    hook_latency: Option<Histogram<u64>>,
    measuring: bool,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            window: Some(histogram()?),
            total: Some(histogram()?),
            hook_latency: Some(histogram()?),
            ..Tally::default()
        })
    }

    fn answered(&mut self, n: u64, took: Duration, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.acked.push(n);
                if self.measuring {
                    let ns = took.as_nanos().clamp(1_000, 60_000_000_000) as u64;
                    for h in [&mut self.window, &mut self.total].into_iter().flatten() {
                        let _ = h.record(ns);
                    }
                }
            }
            Err(e) => self.failed(format!("message {n}: {e}")),
        }
    }

    /// Something went wrong that is not one send's answer.
    fn failed(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(what);
        }
    }

    fn arrived_in(&mut self, text: &str) {
        for n in numbers_in(text) {
            *self.arrived.entry(n).or_default() += 1;
        }
    }
}

type Shared = Arc<Mutex<Tally>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).context("cannot make a histogram")
}

/// The body of message `n`: its number, findable in whatever framing the
/// recipient gets it in.
fn body(n: u64) -> String {
    format!("load test message [load:{n}]")
}

/// The message numbers in `text` (`[load:N]` markers).
fn numbers_in(text: &str) -> Vec<u64> {
    text.match_indices("[load:")
        .filter_map(|(at, m)| {
            let rest = &text[at + m.len()..];
            let end = rest.find(']')?;
            rest[..end].parse().ok()
        })
        .collect()
}

/// One send to make: message `n` to session `to`.
struct Send {
    n: u64,
    to: String,
}

/// Runs a shim: writes the sends it is given as `send_message` calls, and
/// reads their answers and the pushes it gets until `stop`.
async fn drive_shim(
    mut shim: Shim,
    mut sends: mpsc::UnboundedReceiver<Send>,
    tally: Shared,
    stop: CancellationToken,
) {
    let mut flying: HashMap<u64, (u64, Instant)> = HashMap::new();
    let mut open = true;
    loop {
        tokio::select! {
            send = sends.recv(), if open => {
                let Some(send) = send else { open = false; continue };
                let args = json!({"name": "send_message", "arguments": {"to": send.to, "body": body(send.n)}});
                match shim.request("tools/call", args).await {
                    Ok(call) => { flying.insert(call, (send.n, Instant::now())); }
                    Err(e) => lock(&tally).answered(send.n, Duration::ZERO, Err(format!("{e:#}"))),
                }
            }
            event = shim.events.recv() => match event {
                Some(Event::Answer { id, at, outcome }) => {
                    if let Some((n, began)) = flying.remove(&id) {
                        lock(&tally).answered(n, at - began, outcome.map(|_| ()));
                    }
                }
                Some(Event::Channel { content, .. }) => lock(&tally).arrived_in(&content),
                Some(Event::Garbage(line)) => lock(&tally).failed(format!("shim {}: {line}", shim.id)),
                Some(Event::Closed(why)) => {
                    lock(&tally).failed(format!("shim {} stopped: {why}{}", shim.id, shim.said()));
                    return;
                }
                None => {
                    lock(&tally).failed(format!("shim {}'s reader stopped{}", shim.id, shim.said()));
                    return;
                }
            },
            _ = stop.cancelled() => break,
        }
    }
    shim.stop().await;
}

/// Runs a hook-only session: its sends go through the API; every
/// [`HOOK_POLL`] a `prompt-submit` hook picks up its mail.
async fn drive_hook_session(
    addr: SocketAddr,
    id: String,
    mut sends: mpsc::UnboundedReceiver<Send>,
    tally: Shared,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut sender = Conn::connect(addr).await?;
    let mut hooks = Conn::connect(addr).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Send>();
    // Sends on their own connection, so a poll never waits behind them.
    let sending = {
        let (id, tally) = (id.clone(), tally.clone());
        tokio::spawn(async move {
            while let Some(send) = rx.recv().await {
                let payload = json!({"as": id, "to": send.to, "body": body(send.n)});
                let began = Instant::now();
                let answer = tokio::time::timeout(
                    SEND_TIMEOUT,
                    sender.post("/api/v1/messages", Bytes::from(payload.to_string())),
                )
                .await;
                let outcome = match answer {
                    Ok(Ok((StatusCode::OK, _))) => Ok(()),
                    Ok(Ok((status, body))) => Err(format!("{status}: {}", snippet(&body))),
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => Err(format!("no answer within {SEND_TIMEOUT:?}")),
                };
                lock(&tally).answered(send.n, began.elapsed(), outcome);
            }
        })
    };
    let mut poll = tokio::time::interval(HOOK_POLL);
    let hook = json!({"session_id": id, "cwd": "/tmp", "hook_event_name": "UserPromptSubmit", "prompt": "go on"})
        .to_string();
    loop {
        tokio::select! {
            send = sends.recv() => match send {
                Some(send) => { let _ = tx.send(send); }
                None => break,
            },
            _ = poll.tick() => surface(&mut hooks, &hook, &tally).await,
        }
    }
    drop(tx);
    let _ = sending.await;
    // Keep picking up mail until the run has drained.
    while !stop.is_cancelled() {
        surface(&mut hooks, &hook, &tally).await;
        tokio::select! {
            _ = poll.tick() => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

/// One `prompt-submit` hook: the mail in its answer arrives.
async fn surface(hooks: &mut Conn, payload: &str, tally: &Shared) {
    let began = Instant::now();
    let answer = hooks
        .post(
            "/hook/prompt-submit?harness=claude",
            Bytes::from(payload.to_string()),
        )
        .await;
    let took = began.elapsed();
    let mut t = lock(tally);
    match answer {
        Ok((StatusCode::OK, body)) => {
            if let Some(h) = t.hook_latency.as_mut() {
                let _ = h.record(took.as_nanos().clamp(1_000, 60_000_000_000) as u64);
            }
            let context = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v["hookSpecificOutput"]["additionalContext"]
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_default();
            t.arrived_in(&context);
        }
        Ok((status, body)) => t.failed(format!("hook {status}: {}", snippet(&body))),
        Err(e) => t.failed(format!("hook: {e:#}")),
    }
}

/// The daemon's resident memory in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let out = std::process::Command::new("ps")
            .args(["-o", "rss=", "-p", &pid.to_string()])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}

/// One window's figures.
struct Sample {
    at_s: f64,
    sends: u64,
    errors: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    rss_kib: u64,
}

fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// The sessions: `shims` real shims first, then hook-only ones.
fn session_ids(shims: usize, total: usize) -> Vec<String> {
    (0..total)
        .map(|i| {
            if i < shims {
                format!("load-shim-{i:03}")
            } else {
                format!("load-hook-{i:03}")
            }
        })
        .collect()
}

/// Message `n`'s sender and recipient: every session sends and receives in
/// turn, never to itself.
fn route(n: u64, sessions: usize) -> (usize, usize) {
    let from = (n % sessions as u64) as usize;
    let step = 1 + (n / sessions as u64 % (sessions as u64 - 1)) as usize;
    (from, (from + step) % sessions)
}

async fn start_shims(bin: &Path, serve: &ServeChild, ids: &[String]) -> anyhow::Result<Vec<Shim>> {
    let url = format!("http://{}", serve.addr);
    let mut shims = Vec::with_capacity(ids.len());
    for id in ids {
        shims.push(Shim::spawn(bin, &url, id, serve.dir.path())?);
    }
    for shim in shims.iter_mut() {
        shim.initialize().await?;
    }
    wait_for_links(serve.addr, ids).await?;
    Ok(shims)
}

/// What the schedule sent, and the samples it took.
struct Schedule {
    sent: u64,
    samples: Vec<Sample>,
    measured: Duration,
}

/// Sends at the set rate until the warm-up and the measured time are over,
/// taking a sample every `opts.load_sample` of the measured time.
async fn schedule(
    opts: &Opts,
    pid: u32,
    ids: &[String],
    lanes: &[mpsc::UnboundedSender<Send>],
    tally: &Shared,
) -> Schedule {
    let began = Instant::now();
    let warm_end = began + opts.warmup;
    let end = warm_end + opts.measure;
    let cap = (opts.load_rate * (opts.warmup + opts.measure).as_secs_f64()).ceil() as u64 + 1;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.load_rate));
    let mut next_sample = warm_end + opts.load_sample;
    let (mut samples, mut sent, mut errors_before) = (Vec::new(), 0u64, 0u64);
    let mut measuring = false;
    while sent < cap {
        ticker.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= warm_end {
            measuring = true;
            let mut t = lock(tally);
            t.measuring = true;
            errors_before = t.errors;
        }
        if measuring && now >= next_sample {
            let sample = take_sample(tally, pid, now - warm_end, &mut errors_before);
            progress(&sample);
            samples.push(sample);
            next_sample += opts.load_sample;
        }
        let (from, to) = route(sent, ids.len());
        let _ = lanes[from].send(Send {
            n: sent,
            to: ids[to].clone(),
        });
        sent += 1;
    }
    let measured = Instant::now().saturating_duration_since(warm_end);
    if lock(tally).window.as_ref().is_some_and(|h| !h.is_empty()) {
        let sample = take_sample(tally, pid, measured, &mut errors_before);
        progress(&sample);
        samples.push(sample);
    }
    Schedule {
        sent,
        samples,
        measured,
    }
}

/// The current window's figures; the window starts afresh.
fn take_sample(tally: &Shared, pid: u32, at: Duration, errors_before: &mut u64) -> Sample {
    let mut t = lock(tally);
    let window = t.window.replace(histogram().expect("the bounds are valid"));
    let window = window.expect("the window is always there");
    let errors = t.errors - *errors_before;
    *errors_before = t.errors;
    Sample {
        at_s: at.as_secs_f64(),
        sends: window.len(),
        errors,
        p50_us: quantile_us(&window, 0.50),
        p99_us: quantile_us(&window, 0.99),
        p999_us: quantile_us(&window, 0.999),
        rss_kib: rss_kib(pid).unwrap_or(0),
    }
}

fn progress(s: &Sample) {
    eprintln!(
        "load: {:>6.0} s  {:>7} sends  {} errors  p50 {}  p99 {}  p99.9 {}  daemon RSS {:.1} MB",
        s.at_s,
        thousands(s.sends),
        s.errors,
        fmt_us(s.p50_us),
        fmt_us(s.p99_us),
        fmt_us(s.p999_us),
        s.rss_kib as f64 / 1024.0
    );
}

/// Waits until every send made has its answer and every acknowledged
/// message has arrived, or [`DRAIN_LIMIT`] passed.
async fn drain(tally: &Shared, sent: u64) {
    let give_up = Instant::now() + DRAIN_LIMIT;
    while Instant::now() < give_up {
        {
            let t = lock(tally);
            let answered = t.acked.len() as u64 + t.errors >= sent;
            if answered && t.acked.iter().all(|n| t.arrived.contains_key(n)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Acknowledged messages that never arrived, and messages that arrived more than once.
fn losses(t: &Tally) -> (Vec<u64>, Vec<u64>) {
    let lost = t
        .acked
        .iter()
        .copied()
        .filter(|n| !t.arrived.contains_key(n))
        .collect();
    let mut repeated: Vec<u64> = t
        .arrived
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(n, _)| *n)
        .collect();
    repeated.sort_unstable();
    (lost, repeated)
}

/// RSS after the warm-up: the lowest and highest sample, and whether the
/// spread is within [`RSS_FLAT_SHARE`] of the lowest.
fn rss_flat(samples: &[Sample]) -> (u64, u64, bool) {
    let rss: Vec<u64> = samples
        .iter()
        .map(|s| s.rss_kib)
        .filter(|r| *r > 0)
        .collect();
    let (low, high) = (
        rss.iter().copied().min().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    let flat = low > 0 && (high - low) as f64 <= RSS_FLAT_SHARE * low as f64;
    (low, high, flat)
}

/// The median and the highest window p99, and whether the highest is within
/// [`P99_FLAT_FACTOR`] of the median.
fn p99_flat(samples: &[Sample]) -> (f64, f64, bool) {
    let mut p99: Vec<f64> = samples
        .iter()
        .filter(|s| s.sends > 0)
        .map(|s| s.p99_us)
        .collect();
    p99.sort_by(f64::total_cmp);
    let median = p99.get(p99.len() / 2).copied().unwrap_or(0.0);
    let high = p99.last().copied().unwrap_or(0.0);
    (
        median,
        high,
        median > 0.0 && high <= P99_FLAT_FACTOR * median,
    )
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let total = opts.load_sessions;
    if total < 2 {
        bail!("the load needs at least 2 sessions");
    }
    let n_shims = (total * opts.load_shim_percent).div_ceil(100).min(total);
    let serve = ServeChild::start(&opts.muster_binary).await?;
    let pid = serve.pid().context("the daemon has no pid")?;
    let ids = session_ids(n_shims, total);
    eprintln!(
        "load: daemon pid {pid} on {}; {n_shims} shims and {} hook-only sessions; {} msg/s for {} s after {} s warm-up",
        serve.addr,
        total - n_shims,
        opts.load_rate,
        opts.measure.as_secs(),
        opts.warmup.as_secs()
    );
    let shims = start_shims(&opts.muster_binary, &serve, &ids[..n_shims]).await?;
    daemon::register_by_hook(serve.addr, &ids[n_shims..]).await?;

    let tally: Shared = Arc::new(Mutex::new(Tally::new()?));
    let stop = CancellationToken::new();
    let mut lanes = Vec::with_capacity(total);
    let mut tasks = Vec::with_capacity(total);
    for shim in shims {
        let (tx, rx) = mpsc::unbounded_channel();
        lanes.push(tx);
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            drive_shim(shim, rx, tally, stop).await;
            Ok(())
        }));
    }
    for id in &ids[n_shims..] {
        let (tx, rx) = mpsc::unbounded_channel();
        lanes.push(tx);
        let driven = drive_hook_session(serve.addr, id.clone(), rx, tally.clone(), stop.clone());
        tasks.push(tokio::spawn(driven));
    }

    let schedule = schedule(opts, pid, &ids, &lanes, &tally).await;
    drop(lanes);
    drain(&tally, schedule.sent).await;
    stop.cancel();
    let mut task_errors = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => task_errors.push(format!("{e:#}")),
            Ok(Err(e)) => task_errors.push(format!("a session task failed: {e}")),
            Err(_) => task_errors.push("a session task did not stop within 10 s".into()),
        }
    }
    serve.stop().await?;
    let section = report(opts, total, n_shims, &schedule, &lock(&tally), task_errors);
    Ok(section)
}

fn report(
    opts: &Opts,
    total: usize,
    n_shims: usize,
    schedule: &Schedule,
    t: &Tally,
    mut errors: Vec<String>,
) -> Section {
    let (lost, repeated) = losses(t);
    let (rss_low, rss_high, rss_ok) = rss_flat(&schedule.samples);
    let (p99_median, p99_high, p99_ok) = p99_flat(&schedule.samples);
    let total_hist = t.total.as_ref().expect("always there");
    let hooks = t.hook_latency.as_ref().expect("always there");
    let per_sec = total_hist.len() as f64 / schedule.measured.as_secs_f64().max(1e-9);
    let mb = |kib: u64| kib as f64 / 1024.0;
    if t.errors > 0 {
        errors.push(format!(
            "{} errors; first: {}",
            t.errors,
            t.first_errors.join("; ")
        ));
    }
    if !lost.is_empty() {
        errors.push(format!(
            "{} acknowledged messages never arrived (first: {:?})",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    if !repeated.is_empty() {
        errors.push(format!(
            "{} messages arrived more than once (first: {:?})",
            repeated.len(),
            &repeated[..repeated.len().min(5)]
        ));
    }
    let mix = format!(
        "{total} sessions ({n_shims} shims, {} hook-only)",
        total - n_shims
    );
    let rows = vec![
        Row::info("load: sessions", mix.clone()),
        Row::info(
            "load: sent / acknowledged",
            format!(
                "{} / {}",
                thousands(schedule.sent),
                thousands(t.acked.len() as u64)
            ),
        ),
        Row::info(
            "load: acknowledged/s (measured)",
            format!("{per_sec:.0}/s (asked {}/s)", opts.load_rate),
        ),
        Row::info(
            "load: send p50 / p99 / p99.9",
            format!(
                "{} / {} / {}",
                fmt_us(quantile_us(total_hist, 0.5)),
                fmt_us(quantile_us(total_hist, 0.99)),
                fmt_us(quantile_us(total_hist, 0.999))
            ),
        ),
        Row::info("load: hook p99", fmt_us(quantile_us(hooks, 0.99))),
        Row::new(
            "load: nothing lost or repeated",
            format!("{} lost, {} repeated", lost.len(), repeated.len()),
            "0, 0",
            Verdict::check(lost.is_empty() && repeated.is_empty()),
        ),
        Row::new(
            "load: errors",
            t.errors.to_string(),
            "0",
            Verdict::check(t.errors == 0),
        ),
        Row::new(
            "load: daemon RSS after warm-up",
            format!("{:.1}–{:.1} MB", mb(rss_low), mb(rss_high)),
            "flat within 10%",
            if rss_ok { Verdict::Pass } else { Verdict::Miss },
        ),
        Row::new(
            "load: window p99 (median / highest)",
            format!("{} / {}", fmt_us(p99_median), fmt_us(p99_high)),
            "highest ≤ 2× median",
            if p99_ok { Verdict::Pass } else { Verdict::Miss },
        ),
    ];
    let samples: Vec<Value> = schedule
        .samples
        .iter()
        .map(|s| {
            json!({"at_s": r1(s.at_s), "sends": s.sends, "errors": s.errors, "p50_us": r1(s.p50_us),
                   "p99_us": r1(s.p99_us), "p999_us": r1(s.p999_us), "rss_kib": s.rss_kib})
        })
        .collect();
    let json = json!({
        "sessions": total, "shims": n_shims, "rate_per_s": opts.load_rate,
        "sent": schedule.sent, "acknowledged": t.acked.len(), "acknowledged_per_s": r1(per_sec),
        "lost": lost.len(), "repeated": repeated.len(), "errors": t.errors,
        "send_p50_us": r1(quantile_us(total_hist, 0.5)), "send_p99_us": r1(quantile_us(total_hist, 0.99)),
        "send_p999_us": r1(quantile_us(total_hist, 0.999)), "hook_p99_us": r1(quantile_us(hooks, 0.99)),
        "rss_kib_low": rss_low, "rss_kib_high": rss_high, "rss_flat": rss_ok,
        "p99_median_us": r1(p99_median), "p99_high_us": r1(p99_high), "p99_flat": p99_ok,
        "samples": samples,
    });
    Section {
        name: "load",
        json,
        rows,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_sends_and_receives_and_never_to_itself() {
        let n = 5;
        let mut sent = vec![0; n];
        let mut got = vec![0; n];
        for k in 0..(n * (n - 1)) as u64 {
            let (from, to) = route(k, n);
            assert_ne!(from, to, "message {k}");
            sent[from] += 1;
            got[to] += 1;
        }
        assert_eq!(sent, vec![4; n]);
        assert_eq!(got, vec![4; n]);
    }

    #[test]
    fn message_numbers_are_found_in_any_framing() {
        let text = format!("From calm-heron: {}\n--\nFrom x: {}]", body(7), body(1234));
        assert_eq!(numbers_in(&text), vec![7, 1234]);
        assert_eq!(numbers_in("[load:] [load:x1]"), Vec::<u64>::new());
    }
}
