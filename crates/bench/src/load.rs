//! A closed-loop load generator: W workers, one keep-alive connection each,
//! each sending its next request as soon as the previous one is answered.
//! A warm-up phase (not recorded) precedes the measured phase. Every loop is
//! bounded by a deadline and by a request count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;

use crate::http::{snippet, Conn};

/// Latencies are recorded in nanoseconds, from 1 µs to 60 s, 3 significant digits.
const HIST_LOW_NS: u64 = 1_000;
const HIST_HIGH_NS: u64 = 60_000_000_000;
/// A worker stops after this many non-200 answers (the run is failed anyway).
const MAX_ERRORS_PER_WORKER: u64 = 100;

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub workers: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Hard cap on requests per worker, warm-up included.
    pub max_requests_per_worker: u64,
    /// One request taking longer than this is an error and ends its worker.
    pub request_timeout: Duration,
}

pub struct Outcome {
    /// 200 answers to requests started in the measured phase.
    pub measured_ok: u64,
    /// Every 200 answer, warm-up included (what the server acknowledged).
    pub total_ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the start of the measured phase until the last worker finished.
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    /// Some worker hit `max_requests_per_worker` before the deadline.
    pub capped: bool,
}

impl Outcome {
    pub fn per_sec(&self) -> f64 {
        self.measured_ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }
    pub fn max_us(&self) -> f64 {
        self.hist.max() as f64 / 1_000.0
    }
}

struct WorkerOutcome {
    measured_ok: u64,
    total_ok: u64,
    errors: u64,
    first_error: Option<String>,
    finished: Instant,
    hist: Histogram<u64>,
    capped: bool,
}

/// What worker `w` sends as its `n`th request: a path and a JSON body.
pub type MakeRequest = dyn Fn(usize, u64) -> (&'static str, Bytes) + Send + Sync;

pub async fn run(addr: SocketAddr, spec: Spec, make: Arc<MakeRequest>) -> anyhow::Result<Outcome> {
    // Connect everyone first so the phases start together.
    let mut conns = Vec::with_capacity(spec.workers);
    for _ in 0..spec.workers {
        conns.push(Conn::connect(addr).await?);
    }
    let start = Instant::now();
    let measure_start = start + spec.warmup;
    let deadline = measure_start + spec.measure;
    let mut tasks = Vec::with_capacity(spec.workers);
    for (w, conn) in conns.into_iter().enumerate() {
        let make = make.clone();
        tasks.push(tokio::spawn(worker(
            w,
            conn,
            spec,
            measure_start,
            deadline,
            make,
        )));
    }
    let mut out = Outcome {
        measured_ok: 0,
        total_ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        hist: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
        capped: false,
    };
    let mut last = measure_start;
    for task in tasks {
        let w = task.await.context("a load worker panicked")??;
        out.measured_ok += w.measured_ok;
        out.total_ok += w.total_ok;
        out.errors += w.errors;
        out.capped |= w.capped;
        if out.first_error.is_none() {
            out.first_error = w.first_error;
        }
        out.hist.add(&w.hist)?;
        last = last.max(w.finished);
    }
    out.elapsed = last.saturating_duration_since(measure_start);
    Ok(out)
}

async fn worker(
    w: usize,
    mut conn: Conn,
    spec: Spec,
    measure_start: Instant,
    deadline: Instant,
    make: Arc<MakeRequest>,
) -> anyhow::Result<WorkerOutcome> {
    let mut out = WorkerOutcome {
        measured_ok: 0,
        total_ok: 0,
        errors: 0,
        first_error: None,
        finished: measure_start,
        hist: Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?,
        capped: false,
    };
    let mut n: u64 = 0;
    loop {
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        if n >= spec.max_requests_per_worker {
            out.capped = true;
            break;
        }
        let (path, body) = make(w, n);
        n += 1;
        let answer = tokio::time::timeout(spec.request_timeout, conn.post(path, body)).await;
        let took = began.elapsed();
        match answer {
            Ok(Ok((StatusCode::OK, _))) => {
                out.total_ok += 1;
                if began >= measure_start {
                    out.measured_ok += 1;
                    out.hist.saturating_record(
                        (took.as_nanos() as u64).clamp(HIST_LOW_NS, HIST_HIGH_NS),
                    );
                }
            }
            Ok(Ok((status, body))) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!("POST {path} answered {status}: {}", snippet(&body))
                });
                if out.errors >= MAX_ERRORS_PER_WORKER {
                    break;
                }
            }
            Ok(Err(e)) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("POST {path} failed: {e:#}"));
                break;
            }
            Err(_) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!("POST {path} took over {:?}", spec.request_timeout)
                });
                break;
            }
        }
    }
    out.finished = Instant::now();
    Ok(out)
}
