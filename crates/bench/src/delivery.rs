//! End-to-end delivery: one shim's `send_message` to the peer shim's
//! `notifications/claude/channel`, through real `muster mcp` child
//! processes linked over WebSocket to a `muster serve` child process on
//! loopback (its own process, so its CPU is read apart from the bench's).
//!
//! Latency is measured from writing the `tools/call` line to the sender
//! shim's stdin until the matching notification line is read from the
//! receiver shim's stdout. Each pair (sender shim → its own receiver shim)
//! is a closed loop: the next message goes out once the previous one was
//! both shown to the receiver and answered to the sender, as an agent waits
//! for its tool result. Phases: serial (one pair, one message at a time),
//! the reply pattern (a ring of 2 and of 4 shims where each send is made by
//! the shim that just got the previous push, the way agents answer each
//! other), and concurrent (N pairs at once, 2×N shims), whose CPU per
//! delivered message (daemon plus shims) is read from `/proc` on Linux.
//!
//! The daemon answers a send only after two durable commits: the message
//! (before the push) and its `pushed` state (after the receiver's shim
//! confirmed the write). The first lies inside the measured latency; the
//! second only delays the sender's answer, so it is reported separately.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use muster_core::{Delivery, DeliveryState, Message, Target};
use muster_store::{Change, Store};
use muster_store_sqlite::SqliteStore;
use serde_json::{json, Value};

use crate::http::{snippet, Conn};
use crate::report::{fmt_rate, fmt_us, r1, thousands, Row, Section, Verdict};
use crate::shim::{Event, Shim, CALL_TIMEOUT};
use crate::wakes;
use crate::{daemon, Opts};

pub const TARGET_SERIAL_P99_US: f64 = 1_000.0;
pub const TARGET_PER_SEC: f64 = 5_000.0;

/// Latencies are recorded in nanoseconds, from 1 µs to 60 s, 3 significant digits.
const HIST_LOW_NS: u64 = 1_000;
const HIST_HIGH_NS: u64 = 60_000_000_000;
/// Every shim must be linked within this after it initialized.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);
/// Hard cap on messages per pair and phase, warm-up included.
const MAX_PER_PAIR: u64 = 5_000_000;
/// Durable commits timed alone, bounded by count and time.
const COMMIT_SAMPLES: usize = 2_000;
const COMMIT_LIMIT: Duration = Duration::from_secs(3);

/// Where `muster` should be: next to this executable (the same profile's
/// `target/<profile>/`).
pub fn default_muster_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot tell where muster-bench is")?;
    Ok(exe.with_file_name("muster"))
}

/// The cargo command that builds `muster` where `default_muster_binary` looks.
pub fn build_command() -> String {
    let release = std::env::current_exe()
        .ok()
        .and_then(|e| {
            e.parent()
                .and_then(|p| p.file_name())
                .map(|n| n == "release")
        })
        .unwrap_or(true);
    if release {
        "cargo build --release -p muster".into()
    } else {
        "cargo build -p muster".into()
    }
}

/// A sender shim and the receiver shim it writes to.
struct Pair {
    index: usize,
    sender: Shim,
    receiver: Shim,
}

struct Delivered {
    /// Send → notification read from the receiver.
    shown: Duration,
    /// Send → tool result read from the sender.
    answered: Duration,
    state: String,
}

impl Pair {
    /// Sends one message and waits until it is both shown to the receiver and answered to the sender.
    async fn deliver(&mut self, body: &str) -> anyhow::Result<Delivered> {
        let began = Instant::now();
        let to = self.receiver.id.clone();
        let id = self
            .sender
            .request(
                "tools/call",
                json!({"name": "send_message", "arguments": {"to": to, "body": body}}),
            )
            .await?;
        let limit = tokio::time::Instant::from_std(began + CALL_TIMEOUT);
        let mut shown: Option<Instant> = None;
        let mut answer: Option<(Instant, String)> = None;
        while shown.is_none() || answer.is_none() {
            tokio::select! {
                event = self.receiver.events.recv(), if shown.is_none() => match event {
                    Some(Event::Channel { at, content }) if content == body => shown = Some(at),
                    Some(Event::Channel { content, .. }) => bail!(
                        "receiver {to} was shown {:?} while waiting for {body:?}", snippet(content.as_bytes())
                    ),
                    Some(Event::Answer { .. }) => {}
                    Some(Event::Closed(why)) | Some(Event::Garbage(why)) => {
                        bail!("receiver shim {to}: {why}{}", self.receiver.said())
                    }
                    None => bail!("receiver shim {to}'s reader stopped{}", self.receiver.said()),
                },
                event = self.sender.events.recv(), if answer.is_none() => match event {
                    Some(Event::Answer { id: got, at, outcome }) if got == id => match outcome {
                        Ok(state) => answer = Some((at, state)),
                        Err(e) => bail!("send_message to {to} failed: {}", snippet(e.as_bytes())),
                    },
                    Some(Event::Answer { id: got, .. }) => bail!("sender got an answer to call {got}, expected {id}"),
                    Some(Event::Channel { content, .. }) => {
                        bail!("sender {} was shown {:?}, but nobody writes to it", self.sender.id, snippet(content.as_bytes()))
                    }
                    Some(Event::Closed(why)) | Some(Event::Garbage(why)) => {
                        bail!("sender shim {}: {why}{}", self.sender.id, self.sender.said())
                    }
                    None => bail!("sender shim {}'s reader stopped{}", self.sender.id, self.sender.said()),
                },
                _ = tokio::time::sleep_until(limit) => {
                    let missing = match (shown.is_some(), &answer) {
                        (false, Some((_, state))) => format!("no notification (the answer said {state:?})"),
                        (false, None) => "neither a notification nor an answer".to_string(),
                        _ => "no answer (the notification came)".to_string(),
                    };
                    bail!("{body}: {missing} within {CALL_TIMEOUT:?}");
                }
            }
        }
        let (answered_at, state) = answer.unwrap_or((began, String::new()));
        let shown_at = shown.unwrap_or(began);
        Ok(Delivered {
            shown: shown_at.saturating_duration_since(began),
            answered: answered_at.saturating_duration_since(began),
            state,
        })
    }
}

/// CPU time (user + system, all threads, live and exited) of a process, in
/// microseconds, from `/proc/<pid>/stat`. Ticks are USER_HZ, which is 100 on
/// every Linux this runs on.
#[cfg(target_os = "linux")]
fn cpu_us(pid: Option<u32>) -> Option<u64> {
    cpu_times_us(pid).map(|(user, system)| user + system)
}

/// A process's CPU time in user space and in the kernel, in µs (as [`cpu_us`]).
#[cfg(target_os = "linux")]
fn cpu_times_us(pid: Option<u32>) -> Option<(u64, u64)> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    stat_times_us(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime of one `stat` line, in µs.
#[cfg(target_os = "linux")]
fn stat_cpu_us(stat: &str) -> Option<u64> {
    stat_times_us(stat).map(|(user, system)| user + system)
}

/// utime and stime of one `stat` line, in µs.
#[cfg(target_os = "linux")]
fn stat_times_us(stat: &str) -> Option<(u64, u64)> {
    // Fields after the command name (which may hold spaces): state is the first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime * 10_000, stime * 10_000))
}

/// CPU time of a process's SQLite writer threads (`muster-store-writer`), in µs.
#[cfg(target_os = "linux")]
fn store_writer_cpu_us(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(muster-store"))
        .filter_map(|stat| stat_cpu_us(&stat))
        .sum()
}

/// Context switches (voluntary and not) of a process's live threads, from
/// `/proc/<pid>/task/*/status`: each is a sleep and a wake the kernel
/// charges for (see `wakes`).
#[cfg(target_os = "linux")]
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let count = |status: String| -> u64 {
        status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(count)
        .sum()
}

/// CPU used by the daemon process (of it, its store writer thread), by the
/// shims, and by this bench process (the scripted MCP clients; not counted
/// against muster); and the context switches of the daemon and the shims.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    daemon_us: u64,
    store_us: u64,
    shims_us: u64,
    client_us: u64,
    /// Of the daemon's and of the shims' CPU, the time in the kernel
    /// (system calls, waking and switching; the rest is user space).
    daemon_kernel_us: u64,
    shims_kernel_us: u64,
    daemon_switches: u64,
    shims_switches: u64,
}

impl Cpu {
    #[cfg(target_os = "linux")]
    fn sample(daemon: Option<u32>, shims: &[u32]) -> Option<Cpu> {
        let daemon = daemon?;
        let (mut shims_us, mut shims_kernel_us, mut shims_switches) = (0, 0, 0);
        for pid in shims {
            let (user, system) = cpu_times_us(Some(*pid))?;
            shims_us += user + system;
            shims_kernel_us += system;
            shims_switches += switches(*pid);
        }
        let (daemon_user, daemon_system) = cpu_times_us(Some(daemon))?;
        Some(Cpu {
            daemon_us: daemon_user + daemon_system,
            store_us: store_writer_cpu_us(daemon),
            shims_us,
            client_us: cpu_us(None)?,
            daemon_kernel_us: daemon_system,
            shims_kernel_us,
            daemon_switches: switches(daemon),
            shims_switches,
        })
    }

    /// Off Linux there is no `/proc` to read: CPU is not measured.
    #[cfg(not(target_os = "linux"))]
    fn sample(_daemon: Option<u32>, _shims: &[u32]) -> Option<Cpu> {
        None
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            daemon_us: self.daemon_us.saturating_sub(before.daemon_us),
            store_us: self.store_us.saturating_sub(before.store_us),
            shims_us: self.shims_us.saturating_sub(before.shims_us),
            client_us: self.client_us.saturating_sub(before.client_us),
            daemon_kernel_us: self
                .daemon_kernel_us
                .saturating_sub(before.daemon_kernel_us),
            shims_kernel_us: self.shims_kernel_us.saturating_sub(before.shims_kernel_us),
            daemon_switches: self.daemon_switches.saturating_sub(before.daemon_switches),
            shims_switches: self.shims_switches.saturating_sub(before.shims_switches),
        }
    }
}

/// CPU per delivered message, in µs.
#[derive(Debug, Clone, Copy)]
struct CpuPerMessage {
    /// Daemon plus every shim of the phase: what muster costs.
    muster: f64,
    daemon: f64,
    store: f64,
    shims: f64,
    /// The bench's own scripted clients (not muster's cost).
    client: f64,
    /// Of `daemon` and of `shims`, the time in the kernel.
    daemon_kernel: f64,
    shims_kernel: f64,
    /// Context switches per message, of the daemon and of the shims.
    daemon_switches: f64,
    shims_switches: f64,
}

/// What a CPU figure says where it cannot be measured.
const CPU_NOT_MEASURED: &str = "not measured (needs Linux /proc)";

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?)
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).clamp(HIST_LOW_NS, HIST_HIGH_NS));
}

/// Samples at or above this are counted apart: a delayed-ACK / Nagle stall
/// costs about 40 ms on Linux loopback, so any is a step, not noise.
const STEP_NS: u64 = 20_000_000;

/// Where a delayed ACK lands (Linux's minimum delayed-ACK timeout is 40 ms).
const ACK_BAND_NS: (u64, u64) = (35_000_000, 50_000_000);

/// Samples of `low` ns or more.
fn over(h: &Histogram<u64>, low: u64) -> u64 {
    if h.is_empty() || h.max() < low {
        0
    } else {
        h.count_between(low, HIST_HIGH_NS)
    }
}

/// The slowest samples of 20 ms or more, in ms, slowest first (at most 10).
fn slowest_ms(h: &Histogram<u64>) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for v in h.iter_recorded() {
        if v.value_iterated_to() >= STEP_NS {
            for _ in 0..v.count_at_value().min(10) {
                out.push(r1(v.value_iterated_to() as f64 / 1e6));
            }
        }
    }
    out.reverse();
    out.truncate(10);
    out
}

/// One phase's figures, over all its pairs (or its ring).
struct Phase {
    pairs: usize,
    shims: usize,
    /// Messages shown whose send began in the measured window.
    measured: u64,
    /// Messages shown, warm-up included.
    total: u64,
    pushed: u64,
    queued: u64,
    other_state: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    shown: Histogram<u64>,
    answered: Histogram<u64>,
    capped: bool,
    /// CPU used over the whole phase (warm-up included) and its wall time.
    cpu: Option<Cpu>,
    wall: Duration,
}

impl Phase {
    fn new(pairs: usize, shims: usize) -> anyhow::Result<Phase> {
        Ok(Phase {
            pairs,
            shims,
            measured: 0,
            total: 0,
            pushed: 0,
            queued: 0,
            other_state: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            shown: histogram()?,
            answered: histogram()?,
            capped: false,
            cpu: None,
            wall: Duration::ZERO,
        })
    }

    /// CPU per delivered message over the whole phase (warm-up included, as the CPU sample is).
    fn cpu_per_message_us(&self) -> Option<CpuPerMessage> {
        let cpu = self.cpu?;
        let n = self.total.max(1) as f64;
        Some(CpuPerMessage {
            muster: (cpu.daemon_us + cpu.shims_us) as f64 / n,
            daemon: cpu.daemon_us as f64 / n,
            store: cpu.store_us as f64 / n,
            shims: cpu.shims_us as f64 / n,
            client: cpu.client_us as f64 / n,
            daemon_kernel: cpu.daemon_kernel_us as f64 / n,
            shims_kernel: cpu.shims_kernel_us as f64 / n,
            daemon_switches: cpu.daemon_switches as f64 / n,
            shims_switches: cpu.shims_switches as f64 / n,
        })
    }

    /// CPU used (daemon, shims and bench client) as a share of all CPUs' time over the phase.
    fn cpu_busy(&self, cpus: usize) -> Option<f64> {
        let cpu = self.cpu?;
        let avail = self.wall.as_secs_f64() * 1e6 * cpus.max(1) as f64;
        Some((cpu.daemon_us + cpu.shims_us + cpu.client_us) as f64 / avail.max(1.0))
    }

    fn per_sec(&self) -> f64 {
        self.measured as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn q_us(h: &Histogram<u64>, q: f64) -> f64 {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1_000.0
        }
    }

    fn shown_us(&self, q: f64) -> f64 {
        Self::q_us(&self.shown, q)
    }

    fn answered_us(&self, q: f64) -> f64 {
        Self::q_us(&self.answered, q)
    }

    fn max_us(&self) -> f64 {
        self.shown.max() as f64 / 1_000.0
    }

    fn answered_max_us(&self) -> f64 {
        self.answered.max() as f64 / 1_000.0
    }

    /// Measured samples of 20 ms or more: (send→shown, send→answer).
    fn steps(&self) -> (u64, u64) {
        (over(&self.shown, STEP_NS), over(&self.answered, STEP_NS))
    }

    /// Of those, the ones a delayed ACK would make (35–50 ms): (send→shown, send→answer).
    fn ack_band(&self) -> (u64, u64) {
        let band =
            |h: &Histogram<u64>| over(h, ACK_BAND_NS.0).saturating_sub(over(h, ACK_BAND_NS.1));
        (band(&self.shown), band(&self.answered))
    }

    fn note_error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn count_state(&mut self, state: &str) {
        match state {
            "pushed" => self.pushed += 1,
            "queued" => self.queued += 1,
            _ => self.other_state += 1,
        }
    }

    fn json(&self) -> Value {
        let cpu = self.cpu_per_message_us();
        let (steps_shown, steps_answered) = self.steps();
        json!({
            "pairs": self.pairs,
            "shims": self.shims,
            "measured_s": r1(self.elapsed.as_secs_f64() * 1000.0) / 1000.0,
            "delivered": self.measured,
            "delivered_per_sec": r1(self.per_sec()),
            "p50_us": r1(self.shown_us(0.50)),
            "p99_us": r1(self.shown_us(0.99)),
            "p999_us": r1(self.shown_us(0.999)),
            "max_us": r1(self.max_us()),
            "answer_p50_us": r1(self.answered_us(0.50)),
            "answer_p99_us": r1(self.answered_us(0.99)),
            "answer_max_us": r1(self.answered_max_us()),
            "samples_over_20ms_shown": steps_shown,
            "samples_over_20ms_answer": steps_answered,
            "samples_35_to_50ms_shown": self.ack_band().0,
            "samples_35_to_50ms_answer": self.ack_band().1,
            "slowest_shown_ms": slowest_ms(&self.shown),
            "slowest_answer_ms": slowest_ms(&self.answered),
            "delivered_incl_warmup": self.total,
            "answers_pushed": self.pushed,
            "answers_queued": self.queued,
            "answers_other": self.other_state,
            "errors": self.errors,
            "first_error": self.first_error,
            "capped": self.capped,
            "cpu_us_per_message_daemon_and_shims": cpu.map(|c| r1(c.muster)),
            "cpu_us_per_message_daemon": cpu.map(|c| r1(c.daemon)),
            "cpu_us_per_message_store_writer": cpu.map(|c| r1(c.store)),
            "cpu_us_per_message_shims": cpu.map(|c| r1(c.shims)),
            "cpu_us_per_message_bench_client": cpu.map(|c| r1(c.client)),
            "cpu_us_per_message_in_kernel_daemon": cpu.map(|c| r1(c.daemon_kernel)),
            "cpu_us_per_message_in_kernel_shims": cpu.map(|c| r1(c.shims_kernel)),
            "switches_per_message_daemon": cpu.map(|c| r1(c.daemon_switches)),
            "switches_per_message_shims": cpu.map(|c| r1(c.shims_switches)),
            "cpu_busy_share": self.cpu_busy(cpus()).map(|b| (b * 1000.0).round() / 1000.0),
        })
    }
}

struct PairOutcome {
    phase: Phase,
    finished: Instant,
}

/// One closed loop: warm-up, then measured until the deadline or `max_measured`.
async fn run_pair(
    pair: &mut Pair,
    tag: &str,
    measure_start: Instant,
    deadline: Instant,
    max_measured: u64,
) -> anyhow::Result<PairOutcome> {
    let mut out = Phase::new(1, 2)?;
    let mut n: u64 = 0;
    loop {
        let began = Instant::now();
        if began >= deadline {
            break;
        }
        if out.measured >= max_measured || n >= MAX_PER_PAIR {
            out.capped = n >= MAX_PER_PAIR;
            break;
        }
        let body = format!("bench-{tag}-p{}-n{n}", pair.index);
        n += 1;
        match pair.deliver(&body).await {
            Ok(d) => {
                out.total += 1;
                out.count_state(&d.state);
                if began >= measure_start {
                    out.measured += 1;
                    record(&mut out.shown, d.shown);
                    record(&mut out.answered, d.answered);
                }
            }
            Err(e) => {
                // Later messages of this pair could be confused with this one: stop it.
                out.note_error(format!("{e:#}"));
                break;
            }
        }
    }
    Ok(PairOutcome {
        phase: out,
        finished: Instant::now(),
    })
}

/// Runs every pair's closed loop at once; hands the pairs back.
async fn run_phase(
    pairs: Vec<Pair>,
    daemon_pid: Option<u32>,
    tag: &'static str,
    warmup: Duration,
    measure: Duration,
    max_measured: u64,
) -> anyhow::Result<(Vec<Pair>, Phase)> {
    let mut phase = Phase::new(pairs.len(), 2 * pairs.len())?;
    let pids: Vec<u32> = pairs
        .iter()
        .flat_map(|p| [p.sender.child.id(), p.receiver.child.id()])
        .flatten()
        .collect();
    let cpu_before = Cpu::sample(daemon_pid, &pids);
    let start = Instant::now();
    let measure_start = start + warmup;
    let deadline = measure_start + measure;
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|mut pair| {
            tokio::spawn(async move {
                let out = run_pair(&mut pair, tag, measure_start, deadline, max_measured).await;
                (pair, out)
            })
        })
        .collect();
    let mut back = Vec::with_capacity(tasks.len());
    let mut last = measure_start;
    for task in tasks {
        let (pair, out) = task.await.context("a delivery pair panicked")?;
        back.push(pair);
        let out = out?;
        let p = out.phase;
        phase.measured += p.measured;
        phase.total += p.total;
        phase.pushed += p.pushed;
        phase.queued += p.queued;
        phase.other_state += p.other_state;
        phase.errors += p.errors;
        phase.capped |= p.capped;
        if phase.first_error.is_none() {
            phase.first_error = p.first_error;
        }
        phase.shown.add(&p.shown)?;
        phase.answered.add(&p.answered)?;
        last = last.max(out.finished);
    }
    phase.elapsed = last.saturating_duration_since(measure_start);
    phase.wall = start.elapsed();
    if let (Some(before), Some(after)) = (cpu_before, Cpu::sample(daemon_pid, &pids)) {
        phase.cpu = Some(after.since(before));
    }
    Ok((back, phase))
}

/// When the shim that just got a push sends the next message in a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Once it got the push and the previous sender got its answer: one
    /// message in flight at a time.
    Serial,
    /// As an agent does: once it got the push and its own last call was
    /// answered, whether or not the previous sender has its answer yet.
    Agent,
}

impl Turn {
    fn as_str(self) -> &'static str {
        match self {
            Turn::Serial => "serial",
            Turn::Agent => "agent",
        }
    }
}

/// One message on its way round a ring.
struct InFlight {
    seq: u64,
    from: usize,
    to: usize,
    call: u64,
    body: String,
    began: Instant,
    shown: Option<Instant>,
    answer: Option<(Instant, String)>,
}

/// The next event of any shim of a ring, with the shim's index.
async fn next_event(shims: &mut [Shim]) -> (usize, Option<Event>) {
    std::future::poll_fn(|cx| {
        for (i, shim) in shims.iter_mut().enumerate() {
            if let std::task::Poll::Ready(event) = shim.events.poll_recv(cx) {
                return std::task::Poll::Ready((i, event));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The reply pattern: shim 0 writes to shim 1; shim 1, once it got that
/// push (and, serially, once shim 0 got its answer), writes to shim 2; and
/// so on round the ring, the way agents answer each other. Any error ends
/// the ring (later messages could be confused with the failed one).
async fn run_ring(
    shims: &mut [Shim],
    daemon_pid: Option<u32>,
    turn: Turn,
    warmup: Duration,
    measure: Duration,
    max_measured: u64,
) -> anyhow::Result<Phase> {
    let n_shims = shims.len();
    if n_shims < 2 {
        bail!("a ring needs at least 2 shims");
    }
    let mut phase = Phase::new(0, n_shims)?;
    let pids: Vec<u32> = shims.iter().filter_map(|s| s.child.id()).collect();
    let cpu_before = Cpu::sample(daemon_pid, &pids);
    let start = Instant::now();
    let measure_start = start + warmup;
    let deadline = measure_start + measure;
    let tag = format!("ring{n_shims}-{}", turn.as_str());

    let mut flying: Vec<InFlight> = Vec::new();
    // Whose turn it is, and whether it got the push that gives it the turn
    // (the very first send needs none).
    let mut turn_of = 0usize;
    let mut has_push = true;
    let mut seq = 0u64;
    let mut stopping = false;
    loop {
        // Send when the shim whose turn it is may.
        if !stopping && has_push {
            let own_call_open = flying
                .iter()
                .any(|f| f.from == turn_of && f.answer.is_none());
            let any_open = !flying.is_empty();
            let may = match turn {
                Turn::Serial => !any_open,
                Turn::Agent => !own_call_open,
            };
            if may {
                let now = Instant::now();
                if now >= deadline || phase.measured >= max_measured || seq >= MAX_PER_PAIR {
                    phase.capped = seq >= MAX_PER_PAIR;
                    stopping = true;
                } else {
                    let from = turn_of;
                    let to = (from + 1) % n_shims;
                    let body = format!("bench-{tag}-n{seq}");
                    let args = json!({"name": "send_message", "arguments": {"to": shims[to].id, "body": body}});
                    let began = Instant::now();
                    let call = shims[from].request("tools/call", args).await?;
                    flying.push(InFlight {
                        seq,
                        from,
                        to,
                        call,
                        body,
                        began,
                        shown: None,
                        answer: None,
                    });
                    seq += 1;
                    has_push = false;
                }
            }
        }
        if stopping && flying.is_empty() {
            break;
        }
        let Some(oldest) = flying.iter().map(|f| f.began).min() else {
            // Nothing in flight and nobody may send: cannot happen, but never spin.
            bail!("ring {tag}: stalled with nothing in flight");
        };
        let limit = tokio::time::Instant::from_std(oldest + CALL_TIMEOUT);
        let (i, event) = match tokio::time::timeout_at(limit, next_event(shims)).await {
            Ok(got) => got,
            Err(_) => {
                let f = flying.iter().min_by_key(|f| f.began).map(|f| {
                    format!(
                        "{} ({} → {}): notification {}, answer {}",
                        f.body,
                        shims[f.from].id,
                        shims[f.to].id,
                        if f.shown.is_some() { "came" } else { "missing" },
                        if f.answer.is_some() {
                            "came"
                        } else {
                            "missing"
                        }
                    )
                });
                bail!(
                    "ring {tag}: nothing within {CALL_TIMEOUT:?}: {}",
                    f.unwrap_or_default()
                );
            }
        };
        let who = shims[i].id.clone();
        match event {
            Some(Event::Channel { at, content }) => {
                let Some(f) = flying
                    .iter_mut()
                    .find(|f| f.to == i && f.shown.is_none() && f.body == content)
                else {
                    bail!(
                        "ring {tag}: {who} was shown {:?}, which nobody in flight sent it",
                        snippet(content.as_bytes())
                    );
                };
                f.shown = Some(at);
                if f.seq + 1 == seq {
                    // The latest message reached its receiver: its turn to answer.
                    turn_of = i;
                    has_push = true;
                }
            }
            Some(Event::Answer { id, at, outcome }) => {
                let Some(f) = flying.iter_mut().find(|f| f.from == i && f.call == id) else {
                    bail!(
                        "ring {tag}: {who} got an answer to call {id}, which it is not waiting for"
                    );
                };
                match outcome {
                    Ok(state) => f.answer = Some((at, state)),
                    Err(e) => bail!(
                        "ring {tag}: send_message from {who} failed: {}",
                        snippet(e.as_bytes())
                    ),
                }
            }
            Some(Event::Closed(why)) | Some(Event::Garbage(why)) => {
                bail!("ring {tag}: shim {who}: {why}{}", shims[i].said())
            }
            None => bail!("ring {tag}: shim {who}'s reader stopped{}", shims[i].said()),
        }
        // Whatever is both shown and answered is done.
        let mut k = 0;
        while k < flying.len() {
            let done = flying[k].shown.is_some() && flying[k].answer.is_some();
            if !done {
                k += 1;
                continue;
            }
            let f = flying.swap_remove(k);
            let (answered_at, state) = f.answer.unwrap_or((f.began, String::new()));
            let shown_at = f.shown.unwrap_or(f.began);
            phase.total += 1;
            phase.count_state(&state);
            if f.began >= measure_start {
                phase.measured += 1;
                record(
                    &mut phase.shown,
                    shown_at.saturating_duration_since(f.began),
                );
                record(
                    &mut phase.answered,
                    answered_at.saturating_duration_since(f.began),
                );
            }
        }
    }
    phase.elapsed = Instant::now().saturating_duration_since(measure_start);
    phase.wall = start.elapsed();
    if let (Some(before), Some(after)) = (cpu_before, Cpu::sample(daemon_pid, &pids)) {
        phase.cpu = Some(after.since(before));
    }
    Ok(phase)
}

/// Polls the roster until every session shows a live link.
pub(crate) async fn wait_for_links(
    addr: std::net::SocketAddr,
    ids: &[String],
) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    let give_up = Instant::now() + LINK_TIMEOUT;
    loop {
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(10), conn.get("/api/v1/roster"))
                .await
                .context("GET /api/v1/roster took over 10 s")??;
        if status != StatusCode::OK {
            bail!("GET /api/v1/roster answered {status}: {}", snippet(&body));
        }
        let roster: Value = serde_json::from_slice(&body).context("the roster is not JSON")?;
        let linked: std::collections::HashSet<&str> = roster["sessions"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            // `link_up` says a link is attached now; older daemons only have `link`.
            .filter(|s| s["link_up"].as_bool().unwrap_or(s["link"] == "link"))
            .filter_map(|s| s["id"].as_str())
            .collect();
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !linked.contains(id.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!(
                "{} of {} shims not linked after {LINK_TIMEOUT:?} (first: {})",
                missing.len(),
                ids.len(),
                missing[0]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon's durable write alone: serial `PutMessage` commits to a fresh
/// SQLite store in the same temp directory, as the daemon's first commit of
/// a send. Bounded by count and time.
async fn durable_commit_alone() -> anyhow::Result<Histogram<u64>> {
    let dir = tempfile::Builder::new()
        .prefix("muster-bench-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let store = SqliteStore::open(dir.path().join("muster.db"))?;
    let mut hist = histogram()?;
    let give_up = Instant::now() + COMMIT_LIMIT;
    for i in 0..COMMIT_SAMPLES {
        if Instant::now() >= give_up {
            break;
        }
        let id = format!("01BENCHCOMMIT{i:013}");
        let message = Message {
            id: id.clone(),
            from: "bench-dlv-s0000".into(),
            from_nickname: "bench".into(),
            to: Target::Session("bench-dlv-r0000".into()),
            reply_to: None,
            body: format!("bench-commit-n{i}"),
            sent_at: 1_700_000_000_000 + i as i64,
            via: Default::default(),
        };
        let deliveries = vec![Delivery {
            message_id: id,
            recipient: "bench-dlv-r0000".into(),
            state: DeliveryState::Queued,
            updated_at: message.sent_at,
        }];
        let began = Instant::now();
        store
            .apply(vec![Change::PutMessage {
                message,
                deliveries,
            }])
            .await?;
        record(&mut hist, began.elapsed());
    }
    drop(store);
    Ok(hist)
}

async fn stop_all(pairs: Vec<Pair>, loose: Vec<Shim>) {
    let mut stops = Vec::new();
    for p in pairs {
        stops.push(tokio::spawn(p.sender.stop()));
        stops.push(tokio::spawn(p.receiver.stop()));
    }
    for s in loose {
        stops.push(tokio::spawn(s.stop()));
    }
    for s in stops {
        let _ = s.await;
    }
}

/// Shims in the reply-pattern rings: the ring of 2 is their first two.
pub const RING_SHIMS: usize = 4;
const RING_SIZES: [usize; 2] = [2, 4];
pub const TARGET_RING_P99_US: f64 = 2_000.0;
pub const TARGET_CPU_PER_MESSAGE_US: f64 = 150.0;
/// Wakes every delivered message costs the shims whatever the daemon does:
/// the sender's shim wakes for the tool call on its stdin and again for the
/// daemon's answer, the receiver's for the push. A closed loop per pair
/// (an agent waits for its tool result) gives them nothing to coalesce, so
/// this times the machine's CPU per wake is a floor under CPU per message.
pub const SHIM_WAKES_PER_MESSAGE: f64 = 3.0;

/// One ring's run.
struct Ring {
    size: usize,
    turn: Turn,
    phase: Phase,
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    // Absolute: the daemon and the shims run in a temp directory, where a
    // relative --muster path would name nothing.
    let bin =
        std::fs::canonicalize(&opts.muster_binary).unwrap_or_else(|_| opts.muster_binary.clone());
    if !bin.is_file() {
        bail!(
            "{} does not exist; build it first: {}",
            bin.display(),
            build_command()
        );
    }
    let running = daemon::ServeChild::start(&bin).await?;
    let daemon_pid = running.pid();
    let addr = running.addr;
    let url = format!("http://{addr}");
    let k = opts.delivery_senders;
    eprintln!(
        "delivery: daemon `muster serve` on {addr} (pid {}); starting {} `muster mcp` shims ({})…",
        daemon_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into()),
        2 * k + RING_SHIMS,
        bin.display()
    );

    let mut shims: Vec<Shim> = Vec::with_capacity(2 * k);
    let mut ring: Vec<Shim> = Vec::with_capacity(RING_SHIMS);
    let mut ids = Vec::with_capacity(2 * k + RING_SHIMS);
    let spawned: anyhow::Result<()> = async {
        for i in 0..k {
            for role in ["s", "r"] {
                let id = format!("bench-dlv-{role}{i:04}");
                shims.push(Shim::spawn(&bin, &url, &id, running.dir.path())?);
                ids.push(id);
            }
        }
        for i in 0..RING_SHIMS {
            let id = format!("bench-dlv-ring{i}");
            ring.push(Shim::spawn(&bin, &url, &id, running.dir.path())?);
            ids.push(id);
        }
        for shim in shims.iter_mut().chain(ring.iter_mut()) {
            shim.initialize().await?;
        }
        wait_for_links(addr, &ids).await
    }
    .await;
    if let Err(e) = spawned {
        shims.extend(ring);
        stop_all(Vec::new(), shims).await;
        let _ = running.stop().await;
        return Err(e);
    }
    let mut pairs = Vec::with_capacity(k);
    let mut it = shims.into_iter();
    for index in 0..k {
        let (Some(sender), Some(receiver)) = (it.next(), it.next()) else {
            bail!("lost a shim");
        };
        pairs.push(Pair {
            index,
            sender,
            receiver,
        });
    }

    // One message per pair proves each push path before anything is timed.
    let mut errors = Vec::new();
    for pair in pairs.iter_mut() {
        if let Err(e) = pair.deliver(&format!("bench-hello-p{}", pair.index)).await {
            errors.push(format!("warm-up message on pair {}: {e:#}", pair.index));
        }
    }
    if !errors.is_empty() {
        stop_all(pairs, ring).await;
        let _ = running.stop().await;
        bail!("{}", errors.join("; "));
    }

    eprintln!(
        "delivery: serial, 1 sender shim → 1 receiver shim, {} s warm-up + up to {} s or {} messages measured…",
        opts.warmup.as_secs(),
        opts.measure.as_secs(),
        thousands(opts.delivery_messages)
    );
    let rest = pairs.split_off(1);
    let (first, serial) = run_phase(
        pairs,
        daemon_pid,
        "ser",
        opts.warmup,
        opts.measure,
        opts.delivery_messages,
    )
    .await?;
    let mut pairs = first;
    pairs.extend(rest);

    // The reply pattern: rings of real shims, each answering the push it just got.
    let mut rings: Vec<Ring> = Vec::new();
    'rings: for size in RING_SIZES {
        for turn in [Turn::Serial, Turn::Agent] {
            eprintln!(
                "delivery: reply pattern, ring of {size} shims ({}), {} s warm-up + up to {} s or {} messages measured…",
                turn.as_str(),
                opts.warmup.as_secs(),
                opts.measure.as_secs(),
                thousands(opts.delivery_messages)
            );
            match run_ring(
                &mut ring[..size],
                daemon_pid,
                turn,
                opts.warmup,
                opts.measure,
                opts.delivery_messages,
            )
            .await
            {
                Ok(phase) => rings.push(Ring { size, turn, phase }),
                Err(e) => {
                    // The ring's shims may still have messages on the way: stop here.
                    errors.push(format!("reply ring of {size} ({}): {e:#}", turn.as_str()));
                    break 'rings;
                }
            }
        }
    }

    eprintln!("delivery: durable commit alone (SQLite, serial, up to {COMMIT_SAMPLES} commits)…");
    let commit = durable_commit_alone().await;
    eprintln!(
        "delivery: CPU per wake on this machine ({} Unix socket round trips)…",
        thousands(u64::from(wakes::ROUNDS))
    );
    let wake_us = tokio::task::spawn_blocking(|| wakes::cpu_per_wake_us(wakes::ROUNDS))
        .await
        .ok()
        .flatten();

    eprintln!(
        "delivery: {k} sender shims → {k} receiver shims, {} s warm-up + {} s measured…",
        opts.warmup.as_secs(),
        opts.measure.as_secs()
    );
    let (pairs, many) = run_phase(
        pairs,
        daemon_pid,
        "con",
        opts.warmup,
        opts.measure,
        MAX_PER_PAIR,
    )
    .await?;
    stop_all(pairs, ring).await;
    if let Err(e) = running.stop().await {
        errors.push(format!("{e:#}"));
    }

    let mut checked: Vec<(String, &Phase)> =
        vec![("serial".into(), &serial), ("concurrent".into(), &many)];
    for r in &rings {
        checked.push((
            format!("reply ring of {} ({})", r.size, r.turn.as_str()),
            &r.phase,
        ));
    }
    for (what, p) in &checked {
        if p.errors > 0 {
            errors.push(format!(
                "{} {what} deliveries failed; first: {}",
                p.errors,
                p.first_error.clone().unwrap_or_default()
            ));
        }
        if p.queued + p.other_state > 0 {
            errors.push(format!(
                "{what}: {} answers said queued and {} something else, expected all pushed",
                p.queued, p.other_state
            ));
        }
        if p.measured == 0 {
            errors.push(format!(
                "{what}: nothing was delivered in the measured window"
            ));
        }
    }
    let commit = match commit {
        Ok(h) => Some(h),
        Err(e) => {
            errors.push(format!("timing the durable commit alone failed: {e:#}"));
            None
        }
    };

    let serial_p99 = serial.shown_us(0.99);
    let rate = many.per_sec();
    let failed: u64 = checked.iter().map(|(_, p)| p.errors).sum();
    let pushed: u64 = checked.iter().map(|(_, p)| p.pushed).sum();
    let queued: u64 = checked.iter().map(|(_, p)| p.queued + p.other_state).sum();
    let label = format!("delivery @{k} senders");
    let mut rows = vec![
        Row::new(
            "delivery serial: p99 send→shown",
            fmt_us(serial_p99),
            "< 1 ms",
            Verdict::under(serial_p99, TARGET_SERIAL_P99_US),
        ),
        Row::info(
            "delivery serial: p50 send→shown",
            fmt_us(serial.shown_us(0.50)),
        ),
        Row::info("delivery serial: max send→shown", fmt_us(serial.max_us())),
        Row::info(
            "delivery serial: p50 send→answer",
            fmt_us(serial.answered_us(0.50)),
        ),
        Row::info(
            "delivery serial: p99 send→answer",
            fmt_us(serial.answered_us(0.99)),
        ),
        Row::info(
            "delivery serial: messages (rate)",
            format!(
                "{} ({})",
                thousands(serial.measured),
                fmt_rate(serial.per_sec())
            ),
        ),
    ];

    // Reply pattern.
    let mut ring_pass = !rings.is_empty();
    let mut ring_json = Vec::new();
    for r in &rings {
        let p = &r.phase;
        let name = format!("reply ring of {} ({})", r.size, r.turn.as_str());
        let (steps_shown, steps_answered) = p.steps();
        let rt_p99 = p.answered_us(0.99);
        let shown_p99 = p.shown_us(0.99);
        let no_step = steps_shown == 0 && steps_answered == 0;
        let target = |t: &str| {
            if r.turn == Turn::Serial {
                t.to_string()
            } else {
                String::new()
            }
        };
        let verdict = |v: Verdict| {
            if r.turn == Turn::Serial {
                v
            } else {
                Verdict::Info
            }
        };
        if r.turn == Turn::Serial {
            ring_pass &= rt_p99 < TARGET_RING_P99_US && shown_p99 < TARGET_RING_P99_US;
        }
        ring_pass &= no_step;
        rows.push(Row::new(
            format!("{name}: p99 send_message round trip"),
            fmt_us(rt_p99),
            target("< 2 ms"),
            verdict(Verdict::under(rt_p99, TARGET_RING_P99_US)),
        ));
        rows.push(Row::info(
            format!("{name}: p50 / max round trip"),
            format!(
                "{} / {}",
                fmt_us(p.answered_us(0.50)),
                fmt_us(p.answered_max_us())
            ),
        ));
        rows.push(Row::new(
            format!("{name}: p99 send→push received"),
            fmt_us(shown_p99),
            target("< 2 ms"),
            verdict(Verdict::under(shown_p99, TARGET_RING_P99_US)),
        ));
        rows.push(Row::info(
            format!("{name}: p50 / max send→push"),
            format!("{} / {}", fmt_us(p.shown_us(0.50)), fmt_us(p.max_us())),
        ));
        let (band_shown, band_answered) = p.ack_band();
        rows.push(Row::new(
            format!("{name}: samples ≥ 20 ms (trip/push)"),
            format!(
                "{} / {} of {} (35–50 ms: {} / {})",
                thousands(steps_answered),
                thousands(steps_shown),
                thousands(p.measured),
                thousands(band_answered),
                thousands(band_shown)
            ),
            "0 (no 40 ms step)",
            if no_step {
                Verdict::Pass
            } else {
                Verdict::Miss
            },
        ));
        let mut j = p.json();
        j["ring"] = json!(r.size);
        j["turn"] = json!(r.turn.as_str());
        ring_json.push(j);
    }

    rows.extend([
        Row::new(
            format!("{label}: delivered/s"),
            fmt_rate(rate),
            format!(">= {}/s", thousands(TARGET_PER_SEC as u64)),
            Verdict::at_least(rate, TARGET_PER_SEC),
        ),
        Row::info(
            format!("{label}: p50 send→shown"),
            fmt_us(many.shown_us(0.50)),
        ),
        Row::info(
            format!("{label}: p99 send→shown"),
            fmt_us(many.shown_us(0.99)),
        ),
        Row::info(format!("{label}: max send→shown"), fmt_us(many.max_us())),
        Row::info(
            format!("{label}: p50 send→answer"),
            fmt_us(many.answered_us(0.50)),
        ),
        Row::info(
            format!("{label}: p99 send→answer"),
            fmt_us(many.answered_us(0.99)),
        ),
    ]);

    // CPU per delivered message: daemon + every shim of the phase.
    let cpu_target = format!("<= {} µs", TARGET_CPU_PER_MESSAGE_US as u64);
    let many_cpu = many.cpu_per_message_us();
    match many_cpu {
        Some(c) => {
            rows.push(Row::new(
                format!("{label}: CPU/msg daemon+{} shims", many.shims),
                fmt_us(c.muster),
                cpu_target,
                if c.muster <= TARGET_CPU_PER_MESSAGE_US {
                    Verdict::Pass
                } else {
                    Verdict::Miss
                },
            ));
            rows.push(Row::info(
                format!("{label}: of it daemon / shims"),
                format!(
                    "{} (store writer {}) / {}",
                    fmt_us(c.daemon),
                    fmt_us(c.store),
                    fmt_us(c.shims)
                ),
            ));
            rows.push(Row::info(
                format!("{label}: of it in the kernel (syscalls, wakes): daemon / shims"),
                format!(
                    "{} ({:.0}%): {} / {}",
                    fmt_us(c.daemon_kernel + c.shims_kernel),
                    100.0 * (c.daemon_kernel + c.shims_kernel) / c.muster.max(f64::MIN_POSITIVE),
                    fmt_us(c.daemon_kernel),
                    fmt_us(c.shims_kernel)
                ),
            ));
            rows.push(Row::info(
                format!("{label}: bench client CPU/msg (not muster)"),
                fmt_us(c.client),
            ));
            rows.push(Row::info(
                format!("{label}: context switches/msg daemon / shims"),
                format!("{:.1} / {:.1}", c.daemon_switches, c.shims_switches),
            ));
            if let Some(wake) = wake_us {
                let switches = c.daemon_switches + c.shims_switches;
                rows.push(Row::info(
                    format!("{label}: of the CPU/msg, switches × CPU per wake"),
                    format!(
                        "{} ({switches:.1} × {})",
                        fmt_us(switches * wake),
                        fmt_us(wake)
                    ),
                ));
            }
            if let Some(wake) = wake_us {
                rows.push(Row::info(
                    format!("{label}: floor, the shims' own wakes alone"),
                    format!(
                        "{} ({SHIM_WAKES_PER_MESSAGE:.0} × {})",
                        fmt_us(SHIM_WAKES_PER_MESSAGE * wake),
                        fmt_us(wake)
                    ),
                ));
            }
            if let Some(busy) = many.cpu_busy(cpus()) {
                rows.push(Row::info(
                    format!("{label}: CPU busy (all {} CPUs)", cpus()),
                    format!("{:.0}%", busy * 100.0),
                ));
            }
        }
        None => rows.push(Row::new(
            format!("{label}: CPU/msg daemon+{} shims", many.shims),
            CPU_NOT_MEASURED,
            cpu_target,
            Verdict::Info,
        )),
    }
    if let Some(c) = serial.cpu_per_message_us() {
        rows.push(Row::info(
            "delivery serial: CPU/msg daemon+2 shims",
            format!(
                "{} (daemon {}, shims {})",
                fmt_us(c.muster),
                fmt_us(c.daemon),
                fmt_us(c.shims)
            ),
        ));
    }

    rows.extend([
        Row::new(
            "delivery: answers pushed / queued",
            format!("{} / {}", thousands(pushed), thousands(queued)),
            "all pushed",
            Verdict::check(queued == 0),
        ),
        Row::new(
            "delivery: failed deliveries",
            thousands(failed),
            "0",
            Verdict::check(failed == 0),
        ),
    ]);
    let mut commit_json = Value::Null;
    if let Some(h) = &commit {
        let p50 = Phase::q_us(h, 0.50);
        let serial_p50 = serial.shown_us(0.50);
        let share = if serial_p50 > 0.0 {
            p50 / serial_p50
        } else {
            0.0
        };
        rows.push(Row::info("delivery: durable commit alone p50", fmt_us(p50)));
        rows.push(Row::info(
            "delivery: durable commit alone p99",
            fmt_us(Phase::q_us(h, 0.99)),
        ));
        rows.push(Row::info(
            "delivery: commit share of serial p50",
            format!("{:.0}%", share * 100.0),
        ));
        commit_json = json!({
            "samples": h.len(),
            "p50_us": r1(p50),
            "p99_us": r1(Phase::q_us(h, 0.99)),
            "share_of_serial_p50": (share * 1000.0).round() / 1000.0,
        });
    }
    rows.push(Row::info(
        "this machine: CPU per wake (Unix socket ping-pong)",
        wake_us.map_or_else(|| "not measured".to_string(), fmt_us),
    ));
    if serial.capped || many.capped || rings.iter().any(|r| r.phase.capped) {
        rows.push(Row::info(
            "delivery: note",
            "a pair or ring hit its message cap before the deadline",
        ));
    }
    let cpu_pass = many_cpu.map(|c| c.muster <= TARGET_CPU_PER_MESSAGE_US);
    let json = json!({
        "muster_binary": bin.display().to_string(),
        "daemon": "muster serve child process",
        "senders": k,
        "shims": 2 * k + RING_SHIMS,
        "warmup_s": opts.warmup.as_secs_f64(),
        "serial_max_messages": opts.delivery_messages,
        "serial": serial.json(),
        "reply_rings": ring_json,
        "concurrent": many.json(),
        "durable_commit_alone": commit_json,
        "cpu_per_wake_us": wake_us.map(r1),
        "cpu_floor_us_shim_wakes": wake_us.map(|w| r1(SHIM_WAKES_PER_MESSAGE * w)),
        "serial_p99_us": r1(serial_p99),
        "delivered_per_sec": r1(rate),
        "cpu_us_per_message_daemon_and_shims": many_cpu.map(|c| r1(c.muster)),
        "cpu_measured": many_cpu.is_some(),
        "target_serial_p99_us": TARGET_SERIAL_P99_US,
        "target_delivered_per_sec": TARGET_PER_SEC,
        "target_ring_p99_us": TARGET_RING_P99_US,
        "target_cpu_us_per_message": TARGET_CPU_PER_MESSAGE_US,
        "ring_pass": ring_pass,
        "cpu_pass": cpu_pass,
        "pass": serial_p99 < TARGET_SERIAL_P99_US && rate >= TARGET_PER_SEC && ring_pass && cpu_pass.unwrap_or(true),
    });
    Ok(Section {
        name: "delivery",
        json,
        rows,
        errors,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn stat_times_are_read_after_the_command_name() {
        // Proves utime and stime are found past a command name that holds
        // spaces and parentheses (it must not shift the fields), in µs.
        let stat =
            "4242 (muster mcp (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123";
        assert_eq!(super::stat_times_us(stat), Some((70_000, 30_000)));
        assert_eq!(super::stat_cpu_us(stat), Some(100_000));
        assert_eq!(super::stat_times_us("4242 (cut short) S 1"), None);
    }
}
