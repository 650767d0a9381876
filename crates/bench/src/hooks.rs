//! Hook endpoint throughput: `POST /hook/prompt-submit` over keep-alive
//! connections, the call every prompt of every agent makes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::load::{self, Spec};
use crate::report::{fmt_rate, fmt_us, r1, thousands, Row, Section, Verdict};
use crate::{daemon, Opts};

pub const TARGET_PER_SEC: f64 = 20_000.0;
const SESSIONS: usize = 64;
/// The concurrencies whose latency is printed besides the headline's.
const SWEEP_CONNECTIONS: [usize; 4] = [1, 2, 4, 8];

/// One closed-loop phase of prompt-submit hooks over `conns` connections.
async fn phase(
    addr: std::net::SocketAddr,
    conns: usize,
    opts: &Opts,
    bodies: &Arc<Vec<Bytes>>,
) -> anyhow::Result<load::Outcome> {
    let bodies = bodies.clone();
    // Worker w cycles over the sessions ≡ w (mod conns): no two connections
    // speak for one session at once, as with real agents.
    let make: Arc<load::MakeRequest> = Arc::new(move |w, n| {
        (
            "/hook/prompt-submit",
            bodies[(w + n as usize * conns) % bodies.len()].clone(),
        )
    });
    let spec = Spec {
        workers: conns,
        warmup: opts.warmup,
        measure: opts.measure,
        max_requests_per_worker: 5_000_000,
        request_timeout: Duration::from_secs(10),
    };
    eprintln!(
        "hooks: {conns} connections, {SESSIONS} sessions, {} s warm-up + {} s measured…",
        opts.warmup.as_secs(),
        opts.measure.as_secs()
    );
    load::run(addr, spec, make).await
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let running = daemon::start(|_| {}).await?;
    let addr = running.addr();
    let ids: Vec<String> = (0..SESSIONS)
        .map(|i| format!("bench-hook-{i:03}"))
        .collect();
    daemon::register_by_hook(addr, &ids).await?;
    let bodies: Vec<Bytes> = ids
        .iter()
        .map(|id| {
            Bytes::from(
                json!({
                    "session_id": id,
                    "transcript_path": format!("/tmp/{id}.jsonl"),
                    "cwd": "/tmp",
                    "permission_mode": "default",
                    "hook_event_name": "UserPromptSubmit",
                    "prompt": "hi",
                })
                .to_string(),
            )
        })
        .collect();
    let bodies = Arc::new(bodies);
    let conns = opts.hook_connections;
    let out = phase(addr, conns, opts, &bodies).await?;
    // The tail at each concurrency from 1 to 8 (issue 12: p99 at every one).
    let mut sweep = Vec::new();
    for c in SWEEP_CONNECTIONS {
        sweep.push((c, phase(addr, c, opts, &bodies).await?));
    }
    let status = daemon::status(addr).await?;
    running.stop().await?;

    let mut errors = Vec::new();
    if out.errors > 0 {
        errors.push(format!(
            "{} hook requests failed; first: {}",
            out.errors,
            out.first_error.clone().unwrap_or_default()
        ));
    }
    if status.sessions_present != SESSIONS {
        errors.push(format!(
            "{} sessions on the roster after the run, expected {SESSIONS}",
            status.sessions_present
        ));
    }
    let rate = out.per_sec();
    let label = format!("hooks @{conns} conns");
    let mut rows = vec![
        Row::new(
            format!("{label}: requests/s"),
            fmt_rate(rate),
            format!(">= {}/s", thousands(TARGET_PER_SEC as u64)),
            Verdict::at_least(rate, TARGET_PER_SEC),
        ),
        Row::info(format!("{label}: p50"), fmt_us(out.quantile_us(0.50))),
        Row::info(format!("{label}: p99"), fmt_us(out.quantile_us(0.99))),
        Row::info(format!("{label}: p99.9"), fmt_us(out.quantile_us(0.999))),
        Row::info(format!("{label}: max"), fmt_us(out.max_us())),
        Row::new(
            format!("{label}: failed requests"),
            thousands(out.errors),
            "0",
            Verdict::check(out.errors == 0),
        ),
    ];
    for (c, o) in &sweep {
        rows.push(Row::info(
            format!("hooks @{c} conns: p50 / p99 / p99.9"),
            format!(
                "{} / {} / {}",
                fmt_us(o.quantile_us(0.50)),
                fmt_us(o.quantile_us(0.99)),
                fmt_us(o.quantile_us(0.999))
            ),
        ));
        if o.errors > 0 {
            errors.push(format!(
                "{} hook requests failed at {c} connections",
                o.errors
            ));
        }
    }
    if out.capped {
        rows.push(Row::info(
            format!("{label}: note"),
            "a worker hit its request cap before the deadline",
        ));
    }
    let json = json!({
        "connections": conns,
        "sessions": SESSIONS,
        "warmup_s": opts.warmup.as_secs_f64(),
        "measured_s": r1(out.elapsed.as_secs_f64() * 1000.0) / 1000.0,
        "requests": out.measured_ok,
        "requests_per_sec": r1(rate),
        "p50_us": r1(out.quantile_us(0.50)),
        "p99_us": r1(out.quantile_us(0.99)),
        "p999_us": r1(out.quantile_us(0.999)),
        "max_us": r1(out.max_us()),
        "errors": out.errors,
        "first_error": out.first_error,
        "capped": out.capped,
        "by_connections": sweep.iter().map(|(c, o)| json!({
            "connections": c,
            "requests_per_sec": r1(o.per_sec()),
            "p50_us": r1(o.quantile_us(0.50)),
            "p99_us": r1(o.quantile_us(0.99)),
            "p999_us": r1(o.quantile_us(0.999)),
        })).collect::<Vec<_>>(),
        "target_requests_per_sec": TARGET_PER_SEC,
        "pass": rate >= TARGET_PER_SEC,
    });
    Ok(Section {
        name: "hooks",
        json,
        rows,
        errors,
    })
}
