//! End-to-end delivery: one shim's `send_message` to the peer shim's
//! `notifications/claude/channel`, through real `muster mcp` child
//! processes linked over WebSocket to an in-process daemon on loopback.
//!
//! Latency is measured from writing the `tools/call` line to the sender
//! shim's stdin until the matching notification line is read from the
//! receiver shim's stdout. Each pair (sender shim → its own receiver shim)
//! is a closed loop: the next message goes out once the previous one was
//! both shown to the receiver and answered to the sender, as an agent waits
//! for its tool result. Two phases: serial (one pair, one message at a time)
//! and concurrent (N pairs at once, 2×N shims).
//!
//! The daemon answers a send only after two durable commits: the message
//! (before the push) and its `pushed` state (after the receiver's shim
//! confirmed the write). The first lies inside the measured latency; the
//! second only delays the sender's answer, so it is reported separately.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use muster_core::{Delivery, DeliveryState, Message, Target};
use muster_store::{Change, SqliteStore, Store};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::http::{snippet, Conn};
use crate::report::{fmt_rate, fmt_us, r1, thousands, Row, Section, Verdict};
use crate::{daemon, Opts};

pub const TARGET_SERIAL_P99_US: f64 = 1_000.0;
pub const TARGET_PER_SEC: f64 = 5_000.0;

const CHANNEL_METHOD: &str = "notifications/claude/channel";
/// Latencies are recorded in nanoseconds, from 1 µs to 60 s, 3 significant digits.
const HIST_LOW_NS: u64 = 1_000;
const HIST_HIGH_NS: u64 = 60_000_000_000;
/// One message not both shown and answered within this is an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Every shim must be linked within this after it initialized.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);
/// Hard cap on messages per pair and phase, warm-up included.
const MAX_PER_PAIR: u64 = 5_000_000;
/// Durable commits timed alone, bounded by count and time.
const COMMIT_SAMPLES: usize = 2_000;
const COMMIT_LIMIT: Duration = Duration::from_secs(3);
/// Bytes of a shim's stderr kept for error messages (the rest is drained).
const STDERR_KEEP: usize = 4_096;

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
        .and_then(|e| e.parent().and_then(|p| p.file_name()).map(|n| n == "release"))
        .unwrap_or(true);
    if release {
        "cargo build --release -p muster".into()
    } else {
        "cargo build -p muster".into()
    }
}

/// What a shim's stdout said, stamped when the line was read.
enum Event {
    /// A JSON-RPC answer: `Ok(state)` (`pushed`, `queued`, or empty for
    /// answers without one) or `Err(text)` for errors and tool errors.
    Answer {
        id: u64,
        at: Instant,
        outcome: Result<String, String>,
    },
    Channel {
        at: Instant,
        content: String,
    },
    /// A line that is not JSON-RPC: the stdout protocol is broken.
    Garbage(String),
    Closed(String),
}

fn parse_line(line: &str, at: Instant) -> Option<Event> {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Some(Event::Garbage(snippet(line.as_bytes())));
    };
    if let Some(method) = v.get("method").and_then(Value::as_str) {
        if method != CHANNEL_METHOD {
            return None;
        }
        let content = v["params"]["content"].as_str().unwrap_or_default().to_string();
        return Some(Event::Channel { at, content });
    }
    let id = v.get("id").and_then(Value::as_u64)?;
    if let Some(err) = v.get("error") {
        let text = err["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Some(Event::Answer {
            id,
            at,
            outcome: Err(text),
        });
    }
    let result = &v["result"];
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    if result["isError"].as_bool() == Some(true) {
        return Some(Event::Answer {
            id,
            at,
            outcome: Err(text.to_string()),
        });
    }
    let state = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|t| t["state"].as_str().map(str::to_string))
        .unwrap_or_default();
    Some(Event::Answer {
        id,
        at,
        outcome: Ok(state),
    })
}

/// One `muster mcp` child with piped stdio and a task reading its stdout.
struct Shim {
    id: String,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Event>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
}

impl Shim {
    fn spawn(bin: &Path, url: &str, id: &str, cwd: &Path) -> anyhow::Result<Shim> {
        let mut child = Command::new(bin)
            .arg("mcp")
            .env("MUSTER_URL", url)
            .env("MUSTER_SESSION_ID", id)
            .env("MUSTER_HARNESS", "claude")
            .env("MUSTER_CHANNELS", "on")
            .env_remove("CLAUDE_CODE_SESSION_ID")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} mcp", bin.display()))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut stderr_pipe = child.stderr.take().context("no stderr pipe")?;
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let at = Instant::now();
                        if let Some(event) = parse_line(&line, at) {
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Event::Closed("its stdout closed".into()));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Event::Closed(format!("reading its stdout failed: {e}")));
                        return;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4_096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                let mut kept = keep.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < STDERR_KEEP {
                    kept.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Ok(Shim {
            id: id.to_string(),
            child,
            stdin: Some(stdin),
            events,
            stderr,
            next_id: 1,
        })
    }

    /// What the shim said on stderr, for an error message.
    fn said(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let text = kept.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!(" (its stderr: {})", snippet(text.as_bytes()))
        }
    }

    async fn write(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut line = message.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().context("the shim's stdin is closed")?;
        stdin
            .write_all(line.as_bytes())
            .await
            .with_context(|| format!("writing to shim {} failed", self.id))?;
        stdin.flush().await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        Ok(id)
    }

    /// MCP handshake: `initialize`, its answer, `notifications/initialized`.
    async fn initialize(&mut self) -> anyhow::Result<()> {
        let params = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "muster-bench", "version": env!("CARGO_PKG_VERSION")},
        });
        let id = self.request("initialize", params).await?;
        let limit = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(limit, self.events.recv())
                .await
                .with_context(|| format!("shim {} did not answer initialize within {CALL_TIMEOUT:?}", self.id))?;
            match event {
                Some(Event::Answer { id: got, outcome, .. }) if got == id => match outcome {
                    Ok(_) => break,
                    Err(e) => bail!("shim {} refused initialize: {e}", self.id),
                },
                Some(Event::Closed(why)) | Some(Event::Garbage(why)) => {
                    bail!("shim {} before initializing: {why}{}", self.id, self.said())
                }
                None => bail!("shim {}'s reader stopped{}", self.id, self.said()),
                Some(_) => {}
            }
        }
        self.write(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
    }

    /// Closes stdin (the shim exits by itself), then kills what is left. Bounded.
    async fn stop(mut self) {
        self.stdin.take();
        if tokio::time::timeout(Duration::from_millis(500), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        }
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

/// CPU time (user + system, all threads) of a process from `/proc/<pid>/stat`,
/// in microseconds; `None` off Linux. Ticks are USER_HZ, 100 on Linux.
fn cpu_us(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is the first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

/// CPU time of this process's SQLite writer threads (`muster-store-writer`), in µs.
fn store_writer_cpu_us() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(muster-store"))
        .filter_map(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) * 10_000)
        })
        .sum()
}

/// CPU used by this process (daemon and bench client; of it, the store's
/// writer thread) and by the shims.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    this_us: u64,
    store_us: u64,
    shims_us: u64,
}

impl Cpu {
    fn sample(pids: &[u32]) -> Option<Cpu> {
        let mut shims_us = 0;
        for pid in pids {
            shims_us += cpu_us(Some(*pid))?;
        }
        Some(Cpu {
            this_us: cpu_us(None)?,
            store_us: store_writer_cpu_us(),
            shims_us,
        })
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3)?)
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_nanos() as u64).clamp(HIST_LOW_NS, HIST_HIGH_NS));
}

/// One phase's figures, over all its pairs.
struct Phase {
    pairs: usize,
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
    fn new(pairs: usize) -> anyhow::Result<Phase> {
        Ok(Phase {
            pairs,
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

    /// CPU per delivered message (this process, its store writer, shims), over the whole phase.
    fn cpu_per_message_us(&self) -> Option<(f64, f64, f64)> {
        let cpu = self.cpu?;
        let n = self.total.max(1) as f64;
        Some((cpu.this_us as f64 / n, cpu.store_us as f64 / n, cpu.shims_us as f64 / n))
    }

    /// CPU used as a share of all CPUs' time over the phase.
    fn cpu_busy(&self, cpus: usize) -> Option<f64> {
        let cpu = self.cpu?;
        let avail = self.wall.as_secs_f64() * 1e6 * cpus.max(1) as f64;
        Some((cpu.this_us + cpu.shims_us) as f64 / avail.max(1.0))
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
        json!({
            "pairs": self.pairs,
            "shims": self.pairs * 2,
            "measured_s": r1(self.elapsed.as_secs_f64() * 1000.0) / 1000.0,
            "delivered": self.measured,
            "delivered_per_sec": r1(self.per_sec()),
            "p50_us": r1(self.shown_us(0.50)),
            "p99_us": r1(self.shown_us(0.99)),
            "p999_us": r1(self.shown_us(0.999)),
            "max_us": r1(self.max_us()),
            "answer_p50_us": r1(self.answered_us(0.50)),
            "answer_p99_us": r1(self.answered_us(0.99)),
            "delivered_incl_warmup": self.total,
            "answers_pushed": self.pushed,
            "answers_queued": self.queued,
            "answers_other": self.other_state,
            "errors": self.errors,
            "first_error": self.first_error,
            "capped": self.capped,
            "cpu_us_per_message_daemon_and_client": self.cpu_per_message_us().map(|c| r1(c.0)),
            "cpu_us_per_message_store_writer": self.cpu_per_message_us().map(|c| r1(c.1)),
            "cpu_us_per_message_shims": self.cpu_per_message_us().map(|c| r1(c.2)),
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
    let mut out = Phase::new(1)?;
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
    tag: &'static str,
    warmup: Duration,
    measure: Duration,
    max_measured: u64,
) -> anyhow::Result<(Vec<Pair>, Phase)> {
    let mut phase = Phase::new(pairs.len())?;
    let pids: Vec<u32> = pairs
        .iter()
        .flat_map(|p| [p.sender.child.id(), p.receiver.child.id()])
        .flatten()
        .collect();
    let cpu_before = Cpu::sample(&pids);
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
    if let (Some(before), Some(after)) = (cpu_before, Cpu::sample(&pids)) {
        phase.cpu = Some(Cpu {
            this_us: after.this_us.saturating_sub(before.this_us),
            store_us: after.store_us.saturating_sub(before.store_us),
            shims_us: after.shims_us.saturating_sub(before.shims_us),
        });
    }
    Ok((back, phase))
}

/// Polls the roster until every session shows a live link.
async fn wait_for_links(addr: std::net::SocketAddr, ids: &[String]) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    let give_up = Instant::now() + LINK_TIMEOUT;
    loop {
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), conn.get("/api/v1/roster"))
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
        let missing: Vec<&String> = ids.iter().filter(|id| !linked.contains(id.as_str())).collect();
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
        };
        let deliveries = vec![Delivery {
            message_id: id,
            recipient: "bench-dlv-r0000".into(),
            state: DeliveryState::Queued,
            updated_at: message.sent_at,
        }];
        let began = Instant::now();
        store.apply(vec![Change::PutMessage { message, deliveries }]).await?;
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

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let bin = opts.muster_binary.clone();
    if !bin.is_file() {
        bail!("{} does not exist; build it first: {}", bin.display(), build_command());
    }
    let running = daemon::start(|_| {}).await?;
    let addr = running.addr();
    let url = format!("http://{addr}");
    let k = opts.delivery_senders;
    eprintln!("delivery: starting {} `muster mcp` shims ({})…", 2 * k, bin.display());

    let mut shims: Vec<Shim> = Vec::with_capacity(2 * k);
    let mut ids = Vec::with_capacity(2 * k);
    let spawned: anyhow::Result<()> = async {
        for i in 0..k {
            for role in ["s", "r"] {
                let id = format!("bench-dlv-{role}{i:04}");
                shims.push(Shim::spawn(&bin, &url, &id, running.dir.path())?);
                ids.push(id);
            }
        }
        for shim in shims.iter_mut() {
            shim.initialize().await?;
        }
        wait_for_links(addr, &ids).await
    }
    .await;
    if let Err(e) = spawned {
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
        stop_all(pairs, Vec::new()).await;
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
    let (first, serial) = run_phase(pairs, "ser", opts.warmup, opts.measure, opts.delivery_messages).await?;
    let mut pairs = first;
    pairs.extend(rest);

    eprintln!("delivery: durable commit alone (SQLite, serial, up to {COMMIT_SAMPLES} commits)…");
    let commit = durable_commit_alone().await;

    eprintln!(
        "delivery: {k} sender shims → {k} receiver shims, {} s warm-up + {} s measured…",
        opts.warmup.as_secs(),
        opts.measure.as_secs()
    );
    let (pairs, many) = run_phase(pairs, "con", opts.warmup, opts.measure, MAX_PER_PAIR).await?;
    stop_all(pairs, Vec::new()).await;
    running.stop().await?;

    for (what, p) in [("serial", &serial), ("concurrent", &many)] {
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
            errors.push(format!("{what}: nothing was delivered in the measured window"));
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
    let failed = serial.errors + many.errors;
    let pushed = serial.pushed + many.pushed;
    let queued = serial.queued + many.queued + serial.other_state + many.other_state;
    let label = format!("delivery @{k} senders");
    let mut rows = vec![
        Row::new(
            "delivery serial: p99 send→shown",
            fmt_us(serial_p99),
            "< 1 ms",
            Verdict::under(serial_p99, TARGET_SERIAL_P99_US),
        ),
        Row::info("delivery serial: p50 send→shown", fmt_us(serial.shown_us(0.50))),
        Row::info("delivery serial: max send→shown", fmt_us(serial.max_us())),
        Row::info("delivery serial: p50 send→answer", fmt_us(serial.answered_us(0.50))),
        Row::info("delivery serial: p99 send→answer", fmt_us(serial.answered_us(0.99))),
        Row::info(
            "delivery serial: messages (rate)",
            format!("{} ({})", thousands(serial.measured), fmt_rate(serial.per_sec())),
        ),
        Row::new(
            format!("{label}: delivered/s"),
            fmt_rate(rate),
            format!(">= {}/s", thousands(TARGET_PER_SEC as u64)),
            Verdict::at_least(rate, TARGET_PER_SEC),
        ),
        Row::info(format!("{label}: p50 send→shown"), fmt_us(many.shown_us(0.50))),
        Row::info(format!("{label}: p99 send→shown"), fmt_us(many.shown_us(0.99))),
        Row::info(format!("{label}: max send→shown"), fmt_us(many.max_us())),
        Row::info(format!("{label}: p50 send→answer"), fmt_us(many.answered_us(0.50))),
        Row::info(format!("{label}: p99 send→answer"), fmt_us(many.answered_us(0.99))),
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
    ];
    for (what, p) in [("delivery serial", &serial), (label.as_str(), &many)] {
        if let (Some((this, store, shims)), Some(busy)) = (p.cpu_per_message_us(), p.cpu_busy(cpus())) {
            rows.push(Row::info(
                format!("{what}: CPU/msg daemon+client"),
                format!("{} (store writer {})", fmt_us(this), fmt_us(store)),
            ));
            rows.push(Row::info(format!("{what}: CPU/msg in shims"), fmt_us(shims)));
            rows.push(Row::info(
                format!("{what}: CPU busy (all {} CPUs)", cpus()),
                format!("{:.0}%", busy * 100.0),
            ));
        }
    }
    let mut commit_json = Value::Null;
    if let Some(h) = &commit {
        let p50 = Phase::q_us(h, 0.50);
        let serial_p50 = serial.shown_us(0.50);
        let share = if serial_p50 > 0.0 { p50 / serial_p50 } else { 0.0 };
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
    if serial.capped || many.capped {
        rows.push(Row::info(
            "delivery: note",
            "a pair hit its message cap before the deadline",
        ));
    }
    let json = json!({
        "muster_binary": bin.display().to_string(),
        "senders": k,
        "shims": 2 * k,
        "warmup_s": opts.warmup.as_secs_f64(),
        "serial_max_messages": opts.delivery_messages,
        "serial": serial.json(),
        "concurrent": many.json(),
        "durable_commit_alone": commit_json,
        "serial_p99_us": r1(serial_p99),
        "delivered_per_sec": r1(rate),
        "target_serial_p99_us": TARGET_SERIAL_P99_US,
        "target_delivered_per_sec": TARGET_PER_SEC,
        "pass": serial_p99 < TARGET_SERIAL_P99_US && rate >= TARGET_PER_SEC,
    });
    Ok(Section {
        name: "delivery",
        json,
        rows,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shim_lines() {
        let at = Instant::now();
        let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"{\n  \"state\": \"pushed\"\n}"}],"isError":false}}"#;
        match parse_line(answer, at) {
            Some(Event::Answer {
                id: 7, outcome: Ok(s), ..
            }) => assert_eq!(s, "pushed"),
            _ => panic!("not a pushed answer"),
        }
        let tool_error = r#"{"jsonrpc":"2.0","id":8,"result":{"content":[{"type":"text","text":"no such session"}],"isError":true}}"#;
        assert!(matches!(
            parse_line(tool_error, at),
            Some(Event::Answer {
                id: 8,
                outcome: Err(_),
                ..
            })
        ));
        let rpc_error = r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"bad"}}"#;
        assert!(matches!(
            parse_line(rpc_error, at),
            Some(Event::Answer {
                id: 9,
                outcome: Err(_),
                ..
            })
        ));
        let push = r#"{"jsonrpc":"2.0","method":"notifications/claude/channel","params":{"content":"bench-ser-p0-n3","meta":{"message_id":"01X"}}}"#;
        match parse_line(push, at) {
            Some(Event::Channel { content, .. }) => assert_eq!(content, "bench-ser-p0-n3"),
            _ => panic!("not a channel push"),
        }
        assert!(parse_line(r#"{"jsonrpc":"2.0","method":"notifications/other"}"#, at).is_none());
        assert!(matches!(parse_line("hello", at), Some(Event::Garbage(_))));
    }
}
