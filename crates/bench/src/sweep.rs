//! The sweeper at scale: (a) the pure liveness decision over N observations,
//! (b) the daemon's whole `Hub::sweep_once` (snapshot under the lock, then
//! decide) with N registered sessions, none of them due.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use muster_core::api::RegisterRequest;
use muster_core::liveness::{self, Clock, Observation, Policy};
use muster_core::{LinkKind, Millis};
use serde_json::json;

use crate::report::{fmt_rate, fmt_us, median_max, r1, thousands, us, Row, Section, Verdict};
use crate::{daemon, Opts};

pub const TARGET: Duration = Duration::from_millis(10);
/// Timing loops stop at whichever comes first: this many runs or this long.
const DECIDE_RUNS: usize = 300;
const DECIDE_BUDGET: Duration = Duration::from_secs(3);
const DAEMON_RUNS: usize = 50;
const DAEMON_BUDGET: Duration = Duration::from_secs(15);
/// Concurrent registrations: the store folds them into group commits.
const REGISTER_TASKS: usize = 1_024;
const REGISTER_BUDGET: Duration = Duration::from_secs(900);

/// A Claude Code-like session id (a UUID).
fn session_id(i: usize) -> String {
    format!(
        "{:08x}-b3c1-4e2a-9f00-{:012x}",
        i as u32,
        (i as u64).wrapping_mul(0x9E37_79B9)
    )
}

fn wall_now() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// N observations, a quarter each: hook-only recent, hook-only older (but
/// within the backstop), linked and up, linked and down within its grace
/// window. With `due_every > 0`, every such-numbered one is due instead
/// (alternately a silent hook-only one and a linked one past its grace).
fn snapshot(
    n: usize,
    due_every: usize,
    policy: &Policy,
    clock: Clock,
) -> (Vec<(String, Observation)>, usize) {
    let mut due_count = 0;
    let obs = (0..n)
        .map(|i| {
            let due = due_every > 0 && i % due_every == 0;
            let o = if due {
                due_count += 1;
                if (i / due_every.max(1)) & 1 == 0 {
                    Observation {
                        link: LinkKind::Hooks,
                        link_up: false,
                        link_down_since: 0,
                        last_seen_at: clock.wall - policy.hook_backstop_ms - 1,
                    }
                } else {
                    Observation {
                        link: LinkKind::Link,
                        link_up: false,
                        link_down_since: clock.mono - policy.stale_after_ms - 1,
                        last_seen_at: clock.wall - policy.stale_after_ms - 1,
                    }
                }
            } else {
                match i % 4 {
                    0 => Observation {
                        link: LinkKind::Hooks,
                        link_up: false,
                        link_down_since: 0,
                        last_seen_at: clock.wall - (i as Millis % 60_000),
                    },
                    1 => Observation {
                        link: LinkKind::Hooks,
                        link_up: false,
                        link_down_since: 0,
                        last_seen_at: clock.wall - policy.hook_backstop_ms
                            + 60_000
                            + (i as Millis % 60_000),
                    },
                    2 => Observation {
                        link: LinkKind::Link,
                        link_up: true,
                        link_down_since: 0,
                        last_seen_at: clock.wall - 10 * policy.hook_backstop_ms,
                    },
                    _ => Observation {
                        link: LinkKind::Link,
                        link_up: false,
                        link_down_since: clock.mono - 1_000,
                        last_seen_at: clock.wall - 10 * policy.hook_backstop_ms,
                    },
                }
            };
            (session_id(i), o)
        })
        .collect();
    (obs, due_count)
}

struct Timed {
    median: Duration,
    max: Duration,
    runs: usize,
}

fn time_decision(
    obs: &[(String, Observation)],
    expect: usize,
    policy: &Policy,
    clock: Clock,
) -> anyhow::Result<Timed> {
    let mut samples = Vec::with_capacity(DECIDE_RUNS);
    let began = Instant::now();
    while samples.len() < DECIDE_RUNS && began.elapsed() < DECIDE_BUDGET {
        let t = Instant::now();
        let doomed = liveness::sweep(policy, obs.iter().map(|(k, o)| (k, *o)), clock, true);
        let took = t.elapsed();
        if doomed.len() != expect {
            bail!(
                "the decision swept {} of {} sessions, expected {expect}",
                doomed.len(),
                obs.len()
            );
        }
        black_box(doomed);
        samples.push(took);
    }
    let (median, max) = median_max(&mut samples);
    Ok(Timed {
        median,
        max,
        runs: samples.len(),
    })
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let n = opts.sweep_sessions;
    let policy = Policy::default();
    let mut rows = Vec::new();
    let mut errors = Vec::new();

    // (a) The pure decision.
    let clock = Clock {
        wall: wall_now(),
        mono: 36_000_000,
    };
    let due_every = 100;
    let (calm, _) = snapshot(n, 0, &policy, clock);
    let (busy, due) = snapshot(n, due_every, &policy, clock);
    eprintln!(
        "sweep: timing the liveness decision over {} observations…",
        thousands(n as u64)
    );
    let calm_t = time_decision(&calm, 0, &policy, clock)?;
    let busy_t = time_decision(&busy, due, &policy, clock)?;
    drop((calm, busy));
    let target = format!("< {} ms", TARGET.as_millis());
    let nn = thousands(n as u64);
    for (what, t) in [
        ("none due", &calm_t),
        (&*format!("{} due", thousands(due as u64)), &busy_t),
    ] {
        rows.push(Row::new(
            format!("sweep decision @{nn}, {what}: median"),
            fmt_us(us(t.median)),
            target.clone(),
            Verdict::under(us(t.median), us(TARGET)),
        ));
        rows.push(Row::new(
            format!("sweep decision @{nn}, {what}: max"),
            fmt_us(us(t.max)),
            target.clone(),
            Verdict::under(us(t.max), us(TARGET)),
        ));
    }

    // (b) The daemon's sweep_once with N registered sessions. Its own
    // sweeper is slowed to a crawl so only the bench sweeps.
    let running = daemon::start(|c| c.sweep_interval = Duration::from_secs(86_400)).await?;
    let hub = running.daemon.hub.clone();
    eprintln!(
        "sweep: registering {nn} sessions ({REGISTER_TASKS} concurrent durable registrations)…"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let reg_began = Instant::now();
    let reg_deadline = reg_began + REGISTER_BUDGET;
    let progress = {
        let (done, finished) = (done.clone(), finished.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !finished.load(Ordering::Relaxed) {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                let secs = reg_began.elapsed().as_secs_f64();
                eprintln!(
                    "sweep:   {}/{} registered ({}) after {secs:.0} s",
                    thousands(d as u64),
                    thousands(n as u64),
                    fmt_rate(d as f64 / secs)
                );
            }
        })
    };
    let mut tasks = Vec::with_capacity(REGISTER_TASKS);
    for _ in 0..REGISTER_TASKS.min(n.max(1)) {
        let (hub, next, done) = (hub.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                if Instant::now() > reg_deadline {
                    bail!("registering took over {REGISTER_BUDGET:?}");
                }
                let req = RegisterRequest {
                    id: session_id(i),
                    harness: Some("claude".into()),
                    operator: Some("bench".into()),
                    ..RegisterRequest::default()
                };
                hub.register(req)
                    .await
                    .map_err(|e| anyhow!("registering session {i} failed: {}", e.message))?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut reg_error = None;
    for t in tasks {
        if let Err(e) = t.await.context("a registration task panicked")? {
            reg_error.get_or_insert(e);
        }
    }
    finished.store(true, Ordering::Relaxed);
    progress.abort();
    let reg_took = reg_began.elapsed();
    if let Some(e) = reg_error {
        running.stop().await.ok();
        return Err(e);
    }
    let reg_rate = n as f64 / reg_took.as_secs_f64().max(1e-9);
    eprintln!(
        "sweep: registered {nn} in {:.1} s; timing sweep_once…",
        reg_took.as_secs_f64()
    );

    let present = hub.status().sessions_present;
    if present != n {
        errors.push(format!(
            "{present} sessions on the roster after registering {n}"
        ));
    }
    let mut samples = Vec::with_capacity(DAEMON_RUNS);
    let began = Instant::now();
    while samples.len() < DAEMON_RUNS && began.elapsed() < DAEMON_BUDGET {
        let t = Instant::now();
        let removed = hub.sweep_once().await;
        samples.push(t.elapsed());
        if removed != 0 {
            errors.push(format!(
                "sweep_once removed {removed} sessions, none were due"
            ));
            break;
        }
    }
    let daemon_runs = samples.len();
    let (d_median, d_max) = median_max(&mut samples);
    // status() also walks every session under the same lock.
    let mut status_samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        black_box(hub.status());
        status_samples.push(t.elapsed());
    }
    let (s_median, _) = median_max(&mut status_samples);
    // A session-start hook answers with the live peers: how it fares at N.
    let mut start_samples = Vec::new();
    let mut conn = crate::http::Conn::connect(running.addr()).await?;
    for k in 0..10 {
        let body = json!({"session_id": format!("bench-late-{k}"), "cwd": "/tmp", "hook_event_name": "SessionStart"});
        let t = Instant::now();
        let (status, answer) = tokio::time::timeout(
            Duration::from_secs(30),
            conn.post("/hook/session-start", bytes::Bytes::from(body.to_string())),
        )
        .await
        .context("session-start took over 30 s")??;
        start_samples.push(t.elapsed());
        if status != hyper::StatusCode::OK {
            errors.push(format!(
                "session-start answered {status}: {}",
                crate::http::snippet(&answer)
            ));
            break;
        }
    }
    drop(conn);
    let (ss_median, ss_max) = median_max(&mut start_samples);
    drop(hub);
    running.stop().await?;

    rows.push(Row::new(
        format!("daemon sweep_once @{nn}, none due: median"),
        fmt_us(us(d_median)),
        target.clone(),
        Verdict::under(us(d_median), us(TARGET)),
    ));
    rows.push(Row::new(
        format!("daemon sweep_once @{nn}, none due: max"),
        fmt_us(us(d_max)),
        target.clone(),
        Verdict::under(us(d_max), us(TARGET)),
    ));
    rows.push(Row::info(
        format!("daemon: {nn} durable registrations"),
        format!("{:.2} s ({})", reg_took.as_secs_f64(), fmt_rate(reg_rate)),
    ));
    rows.push(Row::info(
        format!("daemon status() @{nn}: median"),
        fmt_us(us(s_median)),
    ));
    rows.push(Row::info(
        format!("daemon session-start hook @{nn}: median"),
        fmt_us(us(ss_median)),
    ));
    rows.push(Row::info(
        format!("daemon session-start hook @{nn}: max"),
        fmt_us(us(ss_max)),
    ));

    let timed =
        |t: &Timed| json!({"median_us": r1(us(t.median)), "max_us": r1(us(t.max)), "runs": t.runs});
    let json = json!({
        "sessions": n,
        "decision_none_due": timed(&calm_t),
        "decision_some_due": {"due": due, "median_us": r1(us(busy_t.median)), "max_us": r1(us(busy_t.max)), "runs": busy_t.runs},
        "daemon_sweep_once": {"median_us": r1(us(d_median)), "max_us": r1(us(d_max)), "runs": daemon_runs},
        "daemon_register_s": r1(reg_took.as_secs_f64() * 100.0) / 100.0,
        "daemon_registers_per_sec": r1(reg_rate),
        "daemon_status_median_us": r1(us(s_median)),
        "daemon_session_start_median_us": r1(us(ss_median)),
        "daemon_session_start_max_us": r1(us(ss_max)),
        "target_ms": TARGET.as_millis() as u64,
        "pass": d_median < TARGET && calm_t.median < TARGET,
    });
    Ok(Section {
        name: "sweep",
        json,
        rows,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_have_the_intended_number_due() {
        let policy = Policy::default();
        let clock = Clock {
            wall: 1_800_000_000_000,
            mono: 36_000_000,
        };
        let (calm, due) = snapshot(1_000, 0, &policy, clock);
        assert_eq!(due, 0);
        assert!(
            liveness::sweep(&policy, calm.iter().map(|(k, o)| (k, *o)), clock, true).is_empty()
        );
        let (busy, due) = snapshot(1_000, 100, &policy, clock);
        assert_eq!(due, 10);
        let doomed = liveness::sweep(&policy, busy.iter().map(|(k, o)| (k, *o)), clock, true);
        assert_eq!(doomed.len(), 10);
        assert!(doomed.iter().any(|(_, r)| *r == liveness::Reason::LinkLost));
        assert!(doomed
            .iter()
            .any(|(_, r)| *r == liveness::Reason::HookBackstop));
        assert!(busy
            .iter()
            .all(|(id, _)| muster_core::validate::session_id(id).is_ok()));
    }
}
