//! `muster-bench scale`: one daemon and N linked sessions (default 10,000),
//! simulated by [`sim`] in this process, so team scale is measured on one
//! machine. Against a `muster serve` child:
//!
//! 1. the daemon's RSS idle, and per linked session (the RSS it gains from
//!    32 links to N, divided by the links added);
//! 2. a direct send's p99 at 32 sessions and at N (target: at most 2×),
//!    and 16 busy senders' delivered/s with 32 sessions and beside N − 32
//!    idle links (target: within 20%): the small figures come from a second
//!    daemon with 32 sessions, measured in turns with the big one so that
//!    the machine's noise falls on both alike;
//! 4. `GET /api/v1/roster` at N sessions (target: p99 under 50 ms);
//! 5. a restart storm: kill -9, restart on the same port and data
//!    directory (target: every link back within 5 s, none swept then or a
//!    sweep later);
//! 6. a broadcast to `everyone`, and one that @mentions 100 sessions (each
//!    pushed once, the sender answered when all 100 confirmed);
//! 7. the RSS the daemon reached over all of it (target: under 250 MB).
//!
//! Then a second child with N hook-only sessions (registered by their
//! `session-start` hooks: target at most 5 KB each), and an in-process
//! daemon with N simulated links, for `Hub::sweep_once` (target: under
//! 10 ms).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::StatusCode;
use muster_core::link::Op;
use serde_json::{json, Value};

use crate::daemon::{self, ServeChild};
use crate::http::{snippet, Conn};
use crate::report::{fmt_rate, fmt_us, median_max, r1, thousands, us, Row, Section, Verdict};
use crate::sim::{self, Fleet, Target};
use crate::Opts;

const TARGET_LINK_BYTES: f64 = 20.0 * 1024.0;
const TARGET_HOOK_ONLY_BYTES: f64 = 5.0 * 1024.0;
const TARGET_RSS_MB: f64 = 250.0;
const TARGET_ROSTER_P99: Duration = Duration::from_millis(50);
const TARGET_RELINK: Duration = Duration::from_secs(5);
const TARGET_SEND_RATIO: f64 = 2.0;
const TARGET_FAIR_SHARE: f64 = 0.8;
const TARGET_SWEEP: Duration = Duration::from_millis(10);

/// Busy senders, each with a receiver of its own.
const BUSY_SENDERS: usize = 16;
/// Sessions of the small daemon the big one is compared with: the busy
/// senders and their receivers.
const SMALL: usize = 2 * BUSY_SENDERS;
/// Links started before waiting for them: keeps the initial linking from
/// overflowing the daemon's accept queue (the storm has no such pacing).
const LINK_BATCH: usize = 500;
/// How long linking one batch may take.
const BATCH_LIMIT: Duration = Duration::from_secs(60);
/// Serial sends measured for a p99: at most this many, at most this long.
const SERIAL_SENDS: usize = 2_000;
const SERIAL_BUDGET: Duration = Duration::from_secs(10);
/// Roster reads measured: at most this many, at most this long.
const ROSTER_READS: usize = 100;
const ROSTER_BUDGET: Duration = Duration::from_secs(20);
/// The roster page `muster top` and the dashboard ask for.
const ROSTER_PAGE: usize = 200;
/// Broadcasts of each kind.
const BROADCASTS: usize = 5;
const MENTIONED: usize = 100;
/// Waited after the re-links, so a sweep runs (the daemon sweeps every 3 s).
const AFTER_SWEEP: Duration = Duration::from_secs(4);
/// How long the storm's re-links may take before the bench gives up.
const RELINK_LIMIT: Duration = Duration::from_secs(60);
/// Let freed memory and the allocator settle before reading RSS.
const SETTLE: Duration = Duration::from_secs(2);
const SWEEP_RUNS: usize = 50;
const SWEEP_BUDGET: Duration = Duration::from_secs(10);
/// How long the idle links' CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Each turn of the busy senders on one daemon.
const BUSY_ROUND: Duration = Duration::from_secs(1);
/// Sends into a new store before its figures count.
const STORE_WARM_UP: Duration = Duration::from_secs(3);
/// Open files besides the links: the store, listeners, HTTP clients.
const SPARE_FILES: u64 = 256;

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let n = opts.scale_links;
    let open_files = sim::raise_open_files(n as u64 + SPARE_FILES);
    if std::env::var_os(SWEEP_CHILD).is_some() {
        sweep_child(n).await;
    }
    let wanted = n as u64 + SPARE_FILES;
    if open_files < wanted {
        bail!(
            "{n} links need {wanted} open files here, but the limit is {open_files} \
             (raise `ulimit -Hn`, or pass a smaller --scale-links)"
        );
    }
    let mut out = Figures::default();
    linked_daemon(opts, n, &mut out).await?;
    hook_only_daemon(opts, n, &mut out).await?;
    sweep_in_child(n, &mut out).await?;
    Ok(out.section(n))
}

/// Everything the bench measured, for the table and the JSON.
#[derive(Default)]
struct Figures {
    rss_idle_kib: u64,
    rss_small_kib: u64,
    rss_linked_kib: u64,
    rss_max_kib: u64,
    /// The daemon's RSS after each phase that follows the linking.
    rss_after: Vec<(&'static str, u64)>,
    link_rate: f64,
    /// Share of a core the daemon and the simulator spent with N idle links.
    idle_cpu: (f64, f64),
    send_small: Latencies,
    send_big: Latencies,
    fair_alone: f64,
    fair_beside: f64,
    /// Each round's delivered/s, small and big.
    fair_rounds: Vec<(f64, f64)>,
    /// The daemon's CPU per delivered message in the busy rounds, small and big.
    cpu_per_message: (Duration, Duration),
    roster: Latencies,
    roster_bytes: usize,
    roster_page: Latencies,
    roster_page_bytes: usize,
    storm: Option<Storm>,
    everyone: Latencies,
    mention: Latencies,
    mention_fanout: Latencies,
    mention_pushes: Vec<usize>,
    /// Pushes the linked daemon's fleet read over the whole run.
    pushes_read: u64,
    hook_only_bytes: f64,
    sweep: Latencies,
    errors: Vec<String>,
}

#[derive(Default, Clone)]
struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    fn add(&mut self, d: Duration) {
        self.samples.push(d);
    }

    fn quantile(&self, q: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let at = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
        s[at]
    }

    fn median_max(&self) -> (Duration, Duration) {
        median_max(&mut self.samples.clone())
    }
}

struct Storm {
    listening: Duration,
    relinked: Option<Duration>,
    /// When half the links, and 90% of them, were back.
    half_and_most: (Duration, Duration),
    /// Connection attempts per link, from the kill to the last re-link.
    attempts: f64,
    /// Attempts that could not link over the Unix socket and tried TCP.
    fallbacks: u64,
    /// CPU seconds until every link was back: the new daemon's, the simulator's.
    cpu: (f64, f64),
    /// Sessions the sweeper removed (its own count).
    swept: u64,
    /// Sessions missing from the roster, at re-link and a sweep later.
    missing: usize,
    down_later: usize,
}

impl Storm {
    fn json(&self) -> Value {
        let ms = |d: Duration| r1(d.as_secs_f64() * 1e3);
        json!({
            "listening_ms": ms(self.listening),
            "relinked_ms": self.relinked.map(ms),
            "half_back_ms": ms(self.half_and_most.0),
            "most_back_ms": ms(self.half_and_most.1),
            "attempts_per_link": (self.attempts * 100.0).round() / 100.0,
            "tcp_fallbacks": self.fallbacks,
            "daemon_cpu_s": r1(self.cpu.0 * 10.0) / 10.0,
            "simulator_cpu_s": r1(self.cpu.1 * 10.0) / 10.0,
            "swept": self.swept,
            "missing": self.missing,
            "down_later": self.down_later,
        })
    }
}

/// The `muster serve` child with N simulated links (and beside it, for the
/// comparisons, a small one with 32): every figure but the hook-only
/// memory and the sweep.
async fn linked_daemon(opts: &Opts, n: usize, out: &mut Figures) -> anyhow::Result<()> {
    let small = ServeChild::start(&opts.muster_binary).await?;
    let mut small_fleet = Fleet::new(Target::loopback(small.addr.port(), true));
    link(
        &mut small_fleet,
        (0..SMALL).map(|i| format!("scale-small-{i:02}")),
    )
    .await?;
    let serve = ServeChild::start(&opts.muster_binary).await?;
    let addr = serve.addr;
    eprintln!(
        "scale: daemons on {} (32 sessions) and {addr}; linking {n}…",
        small.addr
    );
    tokio::time::sleep(SETTLE).await;
    out.rss_idle_kib = rss_kib(&serve)?;
    let mut fleet = Fleet::new(Target::loopback(addr.port(), true));
    let ids = (0..n).map(|i| format!("scale-{i:05}"));
    let mut ids = ids.collect::<Vec<_>>().into_iter();
    link(&mut fleet, ids.by_ref().take(SMALL)).await?;
    tokio::time::sleep(SETTLE).await;
    out.rss_small_kib = rss_kib(&serve)?;
    let start = Instant::now();
    link(&mut fleet, ids).await?;
    out.link_rate = (n - SMALL) as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    out.rss_linked_kib = rss_kib(&serve)?;
    out.rss_max_kib = out.rss_linked_kib;
    out.idle_cpu = idle_cpu(&serve).await?;

    eprintln!("scale: {n} linked; sends and busy senders at {SMALL} and at {n}, alternately…");
    let pids = (small.pid().unwrap_or(0), serve.pid().unwrap_or(0));
    compare_sends(opts, (&small_fleet, &fleet), pids, n, out).await;
    small_fleet.stop().await;
    small.stop().await?;
    roster_reads(addr, out).await?;
    note_rss(&serve, "the sends and the roster", out);

    eprintln!("scale: kill -9 of the daemon, then a restart on {addr}…");
    let (serve, storm) = restart_storm(opts, serve, &fleet).await?;
    if storm.swept > 0 || storm.missing > 0 || storm.down_later > 0 {
        out.errors.push(format!(
            "across the restart: {} sessions swept, {} missing, {} links down a sweep later",
            storm.swept, storm.missing, storm.down_later
        ));
    }
    out.storm = Some(storm);
    note_rss(&serve, "the storm", out);

    eprintln!("scale: broadcasts to everyone, and @mentions of {MENTIONED}…");
    broadcasts(&mut fleet, out).await;
    note_rss(&serve, "the broadcasts", out);
    for (id, why) in fleet.refused() {
        out.errors.push(format!("the daemon refused {id}: {why}"));
    }
    out.pushes_read = fleet.pushes();
    fleet.stop().await;
    serve.stop().await
}

/// The small daemon's figures against the big one's, each measured in
/// turns with the other, so the machine's noise (it is shared) falls on
/// both alike: serial sends one here, one there; busy senders a second
/// here, a second there.
async fn compare_sends(
    opts: &Opts,
    (small, big): (&Fleet, &Fleet),
    (small_pid, big_pid): (u32, u32),
    n: usize,
    out: &mut Figures,
) {
    // A new store's first commits are slower than its later ones.
    for fleet in [small, big] {
        busy_senders(fleet, BUSY_SENDERS, STORE_WARM_UP, Duration::ZERO, out).await;
    }
    let start = Instant::now();
    for k in 0..SERIAL_SENDS {
        if start.elapsed() > SERIAL_BUDGET {
            break;
        }
        if let Some(d) = serial_send(small, k, SMALL, out).await {
            out.send_small.add(d);
        }
        if let Some(d) = serial_send(big, k, n, out).await {
            out.send_big.add(d);
        }
    }
    let rounds = opts.measure.as_secs().max(1);
    let (mut alone, mut beside) = (Busy::default(), Busy::default());
    for _ in 0..rounds {
        let a = alone.round(small, small_pid, out).await;
        let b = beside.round(big, big_pid, out).await;
        out.fair_rounds.push((a.round(), b.round()));
    }
    out.fair_alone = alone.rate(rounds);
    out.fair_beside = beside.rate(rounds);
    out.cpu_per_message = (alone.cpu_per_message(), beside.cpu_per_message());
}

/// One daemon's busy rounds: delivered/s summed, and its CPU over them.
#[derive(Default)]
struct Busy {
    per_sec: f64,
    messages: f64,
    cpu: f64,
}

impl Busy {
    /// A round of [`BUSY_ROUND`] right after the other daemon's (the
    /// senders are closed loops, at full speed at once); its delivered/s.
    async fn round(&mut self, fleet: &Fleet, pid: u32, out: &mut Figures) -> f64 {
        let before = cpu_seconds(pid).unwrap_or(0.0);
        let rate = busy_senders(fleet, BUSY_SENDERS, Duration::ZERO, BUSY_ROUND, out).await;
        self.cpu += cpu_seconds(pid).unwrap_or(0.0) - before;
        self.per_sec += rate;
        self.messages += rate * BUSY_ROUND.as_secs_f64();
        rate
    }

    fn rate(&self, rounds: u64) -> f64 {
        self.per_sec / rounds as f64
    }

    fn cpu_per_message(&self) -> Duration {
        Duration::from_secs_f64(self.cpu / self.messages.max(1.0))
    }
}

/// Starts a link per id, in batches, each batch all welcomed before the next.
async fn link(fleet: &mut Fleet, ids: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let ids: Vec<String> = ids.collect();
    for batch in ids.chunks(LINK_BATCH) {
        fleet.add(batch.iter().cloned());
        let total = fleet.len();
        if fleet
            .wait(BATCH_LIMIT, |f| f.welcomed(1) == total)
            .await
            .is_none()
        {
            bail!(
                "{} of {total} links not welcomed within {BATCH_LIMIT:?} (refused: {:?})",
                total - fleet.welcomed(1),
                fleet.refused().first()
            );
        }
    }
    Ok(())
}

/// Direct send `k` of a series among the first `among` links of `fleet`,
/// from one to the next, striding so the pairs spread over all of them;
/// its latency is the sender's wait for the reply, which the daemon gives
/// once the recipient confirmed the push.
async fn serial_send(fleet: &Fleet, k: usize, among: usize, out: &mut Figures) -> Option<Duration> {
    let stride = (among / SERIAL_SENDS).max(1);
    let from = (k * stride) % among;
    let to = (k * stride + 1) % among;
    let sent = Instant::now();
    match send(fleet, from, to, format!("serial {k}")).await {
        Ok(()) => Some(sent.elapsed()),
        Err(e) => {
            out.errors.push(format!("serial send {k}: {e}"));
            None
        }
    }
}

/// A direct send from `from` to `to`; an error unless it was pushed.
async fn send(fleet: &Fleet, from: usize, to: usize, body: String) -> Result<(), String> {
    let op = Op::Send {
        to: fleet.id(to).to_string(),
        body,
        reply_to: None,
    };
    let reply = fleet.request(from, op).await?;
    let state = serde_json::from_str::<Value>(&reply)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string));
    match state.as_deref() {
        Some("pushed") => Ok(()),
        other => Err(format!("answered {other:?}, not pushed")),
    }
}

/// `senders` senders (links 0, 2, 4…), each sending to its own receiver
/// (1, 3, 5…) as fast as the replies come, over `warmup` and `measure`;
/// delivered (pushed) messages per second over `measure`.
async fn busy_senders(
    fleet: &Fleet,
    senders: usize,
    warmup: Duration,
    measure: Duration,
    out: &mut Figures,
) -> f64 {
    let warm_until = Instant::now() + warmup;
    let end = warm_until + measure;
    let sender = |s: usize| async move {
        let (mut counted, mut errors) = (0u64, Vec::new());
        let mut k = 0u64;
        while Instant::now() < end {
            k += 1;
            match send(fleet, 2 * s, 2 * s + 1, format!("busy {s} {k}")).await {
                Ok(()) if Instant::now() >= warm_until => counted += 1,
                Ok(()) => {}
                Err(e) if errors.len() < 3 => errors.push(format!("busy sender {s}: {e}")),
                Err(_) => {}
            }
        }
        (counted, errors)
    };
    let results = futures_util::future::join_all((0..senders).map(sender)).await;
    let mut delivered = 0;
    for (counted, errors) in results {
        delivered += counted;
        out.errors.extend(errors);
    }
    delivered as f64 / measure.as_secs_f64().max(1e-9)
}

/// `GET /api/v1/roster`, serially on one keep-alive connection: the first
/// page (what `muster top` and the dashboard ask for), then the whole roster.
async fn roster_reads(addr: SocketAddr, out: &mut Figures) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    let page = format!("/api/v1/roster?limit={ROSTER_PAGE}");
    out.roster_page_bytes = timed_gets(&mut conn, &page, &mut out.roster_page).await?;
    out.roster_bytes = timed_gets(&mut conn, "/api/v1/roster", &mut out.roster).await?;
    Ok(())
}

/// GETs `path` up to [`ROSTER_READS`] times (within [`ROSTER_BUDGET`]),
/// each timed; the size of the last answer.
async fn timed_gets(conn: &mut Conn, path: &str, lat: &mut Latencies) -> anyhow::Result<usize> {
    let (start, mut bytes) = (Instant::now(), 0);
    for _ in 0..ROSTER_READS {
        if start.elapsed() > ROSTER_BUDGET {
            break;
        }
        let asked = Instant::now();
        let (status, body) = conn.get(path).await?;
        lat.add(asked.elapsed());
        if status != StatusCode::OK {
            bail!("GET {path} answered {status}: {}", snippet(&body));
        }
        bytes = body.len();
    }
    Ok(bytes)
}

/// The sessions on the roster, and which of them have a link up now.
async fn roster(addr: SocketAddr) -> anyhow::Result<(usize, HashMap<String, bool>)> {
    let mut conn = Conn::connect(addr).await?;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), conn.get("/api/v1/roster"))
        .await
        .context("GET /api/v1/roster took over 30 s")??;
    if status != StatusCode::OK {
        bail!("GET /api/v1/roster answered {status}: {}", snippet(&body));
    }
    let roster: Value = serde_json::from_slice(&body).context("the roster is not JSON")?;
    let sessions = roster["sessions"].as_array().cloned().unwrap_or_default();
    let linked = sessions
        .iter()
        .filter_map(|s| Some((s["id"].as_str()?.to_string(), s["link_up"] == true)))
        .collect();
    Ok((sessions.len(), linked))
}

/// kill -9, a restart on the same port and data directory, every link back
/// (as the fleet sees it: welcomed again), then the daemon's roster at once
/// and a sweep later.
async fn restart_storm(
    opts: &Opts,
    serve: ServeChild,
    fleet: &Fleet,
) -> anyhow::Result<(ServeChild, Storm)> {
    let addr = serve.addr;
    let n = fleet.len();
    let (attempts, fallbacks) = (fleet.attempts(), fleet.tcp_fallbacks());
    let dir = serve.kill9().await;
    let restarted_at = Instant::now();
    let sim_cpu = cpu_seconds(std::process::id())?;
    let serve = ServeChild::start_in(&opts.muster_binary, dir, &addr.to_string()).await?;
    let listening = restarted_at.elapsed();
    let back = |f: &Fleet| f.welcomed(2) == n && f.up() == n;
    let relinked = fleet.wait(RELINK_LIMIT, back).await.map(|d| d + listening);
    let attempts = fleet.attempts() - attempts;
    let fallbacks = fleet.tcp_fallbacks() - fallbacks;
    let times = Latencies {
        samples: fleet.welcomed_since(restarted_at),
    };
    // The new process's CPU so far is all the restart's and the re-links'.
    let pid = serve.pid().context("the restarted daemon has exited")?;
    let cpu = (
        cpu_seconds(pid)?,
        cpu_seconds(std::process::id())? - sim_cpu,
    );
    let missing_now = missing(addr, fleet).await?;
    tokio::time::sleep(AFTER_SWEEP).await;
    let (_, linked) = roster(addr).await?;
    let missing_later = fleet.ids().filter(|id| !linked.contains_key(*id)).count();
    let down_later = fleet
        .ids()
        .filter(|id| linked.get(*id) == Some(&false))
        .count();
    let storm = Storm {
        listening,
        relinked,
        half_and_most: (times.quantile(0.5), times.quantile(0.9)),
        attempts: attempts as f64 / n as f64,
        fallbacks,
        cpu,
        // A session swept and registered again by its re-link is on the
        // roster: the sweeper's own count says whether it removed any.
        swept: swept_count(addr).await?,
        missing: missing_now + missing_later,
        down_later,
    };
    Ok((serve, storm))
}

/// The sessions the daemon's sweeper removed since it started (`/metrics`).
async fn swept_count(addr: SocketAddr) -> anyhow::Result<u64> {
    let mut conn = Conn::connect(addr).await?;
    let (status, body) = conn.get("/metrics").await?;
    if status != StatusCode::OK {
        bail!("GET /metrics answered {status}: {}", snippet(&body));
    }
    let name = "muster_swept_sessions_total";
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// The fleet's sessions missing from the daemon's roster.
async fn missing(addr: SocketAddr, fleet: &Fleet) -> anyhow::Result<usize> {
    let (_, linked) = roster(addr).await?;
    Ok(fleet.ids().filter(|id| !linked.contains_key(*id)).count())
}

/// Broadcasts to `everyone` from link 0 (ambient: nobody is pushed), then
/// broadcasts that @mention 100 sessions each (each of them pushed once;
/// the reply waits for all 100 to confirm).
async fn broadcasts(fleet: &mut Fleet, out: &mut Figures) {
    fleet.clear_seen();
    for k in 0..BROADCASTS {
        let op = Op::Broadcast {
            room: "everyone".into(),
            body: format!("scale broadcast {k}"),
        };
        let sent = Instant::now();
        match fleet.request(0, op).await {
            Ok(_) => out.everyone.add(sent.elapsed()),
            Err(e) => out.errors.push(format!("broadcast {k}: {e}")),
        }
    }
    let n = fleet.len();
    for k in 0..BROADCASTS {
        // 100 sessions spread over the fleet, never the sender.
        let mentioned: Vec<usize> = (0..MENTIONED)
            .map(|i| 1 + (k + i * (n - 1) / MENTIONED) % (n - 1))
            .collect();
        let names: Vec<String> = mentioned
            .iter()
            .map(|&i| format!("@{}", fleet.id(i)))
            .collect();
        let tag = format!("scale mention {k}");
        let op = Op::Broadcast {
            room: "everyone".into(),
            body: format!("{tag}: {}", names.join(" ")),
        };
        let sent = Instant::now();
        match fleet.request(0, op).await {
            Ok(_) => out.mention.add(sent.elapsed()),
            Err(e) => out.errors.push(format!("mention {k}: {e}")),
        }
        let (pushed, again, last) = pushes_of(fleet, &tag).await;
        if again > 0 {
            out.errors.push(format!(
                "mention {k}: {again} pushes to a session that had it already"
            ));
        }
        if let Some(last) = last {
            out.mention_fanout.add(last.saturating_duration_since(sent));
        }
        if pushed != MENTIONED {
            out.errors.push(format!(
                "mention {k}: {pushed} of {MENTIONED} mentioned sessions pushed"
            ));
        }
        out.mention_pushes.push(pushed);
    }
    fleet.clear_seen();
}

/// The links that got a push whose body starts with `tag` (read until the
/// pushes stop for a second), pushes of it a link got more than once, and
/// when the last was read.
async fn pushes_of(fleet: &mut Fleet, tag: &str) -> (usize, usize, Option<Instant>) {
    let mut links = std::collections::HashSet::new();
    let (mut again, mut last) = (0, None);
    while let Some(seen) = fleet.next_seen(Duration::from_secs(1)).await {
        if seen.body.starts_with(tag) {
            if !links.insert(seen.link) {
                again += 1;
            }
            last = Some(seen.at);
        }
    }
    (links.len(), again, last)
}

/// A child daemon with N hook-only sessions: the RSS each one costs.
async fn hook_only_daemon(opts: &Opts, n: usize, out: &mut Figures) -> anyhow::Result<()> {
    let serve = ServeChild::start(&opts.muster_binary).await?;
    eprintln!("scale: {n} hook-only sessions on {}…", serve.addr);
    tokio::time::sleep(SETTLE).await;
    let before = rss_kib(&serve)?;
    let ids: Vec<String> = (0..n).map(|i| format!("scale-hook-{i:05}")).collect();
    daemon::register_by_hook(serve.addr, &ids).await?;
    tokio::time::sleep(SETTLE).await;
    let after = rss_kib(&serve)?;
    out.hook_only_bytes = after.saturating_sub(before) as f64 * 1024.0 / n as f64;
    serve.stop().await
}

/// Set in the environment of the `muster-bench scale` child that runs an
/// in-process daemon for the sweep figure: the daemon's ends of N links
/// and the simulator's are 2N open files, more than one process may have.
const SWEEP_CHILD: &str = "MUSTER_BENCH_SWEEP_CHILD";

/// The sweep at N linked sessions: a child runs a daemon in its own
/// process (so it can time `Hub::sweep_once`) and this one links N
/// simulated links to it.
async fn sweep_in_child(n: usize, out: &mut Figures) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let exe = std::env::current_exe().context("cannot find muster-bench itself")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["scale", "--scale-links", &n.to_string()])
        .env(SWEEP_CHILD, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the sweep's child")?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
    let mut next_line =
        async || match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            _ => bail!("the sweep's child said nothing within 60 s, or exited"),
        };
    let port: u16 = next_line()
        .await?
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .context("the sweep's child did not say its port")?;
    eprintln!("scale: {n} links to a daemon in a child process, for the sweep…");
    let mut fleet = Fleet::new(Target::loopback(port, false));
    link(&mut fleet, (0..n).map(|i| format!("scale-sweep-{i:05}"))).await?;
    stdin.write_all(b"sweep\n").await?;
    let answer = next_line().await?;
    fleet.stop().await;
    let _ = child.kill().await;
    let report: Value = serde_json::from_str(&answer)
        .with_context(|| format!("the sweep's child answered {answer:?}"))?;
    let linked = report["linked"].as_u64().unwrap_or(0) as usize;
    if linked != n {
        out.errors.push(format!(
            "the sweep ran with {linked} of {n} sessions linked"
        ));
    }
    if let Some(removed) = report["removed"].as_u64().filter(|r| *r > 0) {
        out.errors
            .push(format!("sweeps removed {removed} linked sessions"));
    }
    for us in report["sweeps_us"].as_array().into_iter().flatten() {
        out.sweep
            .add(Duration::from_micros(us.as_u64().unwrap_or(u64::MAX)));
    }
    Ok(())
}

/// The child's part: a daemon in this process, its port on stdout; at
/// `sweep` on stdin, `Hub::sweep_once` timed (none due) and the figures
/// as one JSON line; then this process exits.
async fn sweep_child(n: usize) -> ! {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let outcome = async {
        let running = daemon::start(|c| c.max_connections = n + SPARE_FILES as usize).await?;
        println!("listening {}", running.addr().port());
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        match stdin.next_line().await? {
            Some(line) if line == "sweep" => {}
            other => bail!("expected `sweep`, got {other:?}"),
        }
        let hub = &running.daemon.hub;
        let linked = hub.roster(false).iter().filter(|s| s.link_up).count();
        let (mut sweeps_us, mut removed) = (Vec::new(), 0);
        let start = Instant::now();
        while sweeps_us.len() < SWEEP_RUNS && start.elapsed() < SWEEP_BUDGET {
            let began = Instant::now();
            removed += hub.sweep_once().await;
            sweeps_us.push(began.elapsed().as_micros() as u64);
        }
        println!(
            "{}",
            json!({"linked": linked, "removed": removed, "sweeps_us": sweeps_us})
        );
        anyhow::Ok(())
    };
    let code = match outcome.await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("muster-bench scale (sweep child): {e:#}");
            1
        }
    };
    std::process::exit(code)
}

/// What N idle links cost in CPU over [`IDLE_WINDOW`] (their pings, every
/// `HEARTBEAT_MS`, and the pongs): the daemon's share of one core, and
/// this process's (the simulator's side).
async fn idle_cpu(serve: &ServeChild) -> anyhow::Result<(f64, f64)> {
    let pid = serve.pid().context("the daemon has exited")?;
    let (daemon, me) = (cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
    tokio::time::sleep(IDLE_WINDOW).await;
    let window = IDLE_WINDOW.as_secs_f64();
    Ok((
        (cpu_seconds(pid)? - daemon) / window,
        (cpu_seconds(std::process::id())? - me) / window,
    ))
}

/// A process's user and system CPU so far, in seconds (/proc/<pid>/stat).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        bail!("no CPU times in /proc/{pid}/stat");
    };
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((user + system) / per_second)
}

/// The daemon's resident memory in KiB.
fn rss_kib(serve: &ServeChild) -> anyhow::Result<u64> {
    let pid = serve.pid().context("the daemon has exited")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// The daemon's RSS after `phase`, and the most so far.
fn note_rss(serve: &ServeChild, phase: &'static str, out: &mut Figures) {
    if let Ok(kib) = rss_kib(serve) {
        out.rss_max_kib = out.rss_max_kib.max(kib);
        out.rss_after.push((phase, kib));
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn fmt_bytes(bytes: f64) -> String {
    if bytes < 1024.0 {
        format!("{bytes:.0} B")
    } else {
        format!("{:.1} KB", bytes / 1024.0)
    }
}

impl Figures {
    fn section(self, n: usize) -> Section {
        let mut rows = self.memory_rows(n);
        rows.extend(self.latency_rows(n));
        rows.extend(self.storm_rows());
        let json = self.json(n);
        Section {
            name: "scale",
            json,
            rows,
            errors: self.errors,
        }
    }

    fn per_link_bytes(&self, n: usize) -> f64 {
        let added = (n - SMALL).max(1) as f64;
        self.rss_linked_kib.saturating_sub(self.rss_small_kib) as f64 * 1024.0 / added
    }

    fn memory_rows(&self, n: usize) -> Vec<Row> {
        let per_link = self.per_link_bytes(n);
        vec![
            Row::info(
                "scale: linked sessions (simulated links)",
                thousands(n as u64),
            ),
            Row::info(
                "scale: daemon RSS idle → 32 linked → all linked",
                format!(
                    "{:.1} → {:.1} → {:.1} MB",
                    mb(self.rss_idle_kib),
                    mb(self.rss_small_kib),
                    mb(self.rss_linked_kib)
                ),
            ),
            Row::new(
                "scale: daemon RSS per linked session",
                fmt_bytes(per_link),
                "≤ 20 KB",
                Verdict::under(per_link, TARGET_LINK_BYTES + 1.0),
            ),
            Row::new(
                "scale: daemon RSS per hook-only session",
                fmt_bytes(self.hook_only_bytes),
                "≤ 5 KB",
                Verdict::under(self.hook_only_bytes, TARGET_HOOK_ONLY_BYTES + 1.0),
            ),
            Row::info(
                "scale: daemon RSS after the sends, the storm, the broadcasts",
                self.rss_after
                    .iter()
                    .map(|(_, kib)| format!("{:.1}", mb(*kib)))
                    .collect::<Vec<_>>()
                    .join(" → ")
                    + " MB",
            ),
            Row::new(
                "scale: daemon RSS, most over the run",
                format!("{:.1} MB", mb(self.rss_max_kib)),
                "< 250 MB",
                Verdict::under(mb(self.rss_max_kib), TARGET_RSS_MB),
            ),
            Row::info("scale: links made per second", fmt_rate(self.link_rate)),
            Row::info(
                format!(
                    "scale: CPU with {} idle links: daemon / simulator",
                    thousands(n as u64)
                ),
                format!(
                    "{:.1}% / {:.1}% of a core",
                    self.idle_cpu.0 * 100.0,
                    self.idle_cpu.1 * 100.0
                ),
            ),
        ]
    }

    fn latency_rows(&self, n: usize) -> Vec<Row> {
        let (small, big) = (self.send_small.quantile(0.99), self.send_big.quantile(0.99));
        let ratio = big.as_secs_f64() / small.as_secs_f64().max(1e-9);
        let share = self.fair_beside / self.fair_alone.max(1e-9);
        let (everyone_median, everyone_max) = self.everyone.median_max();
        let (mention_median, mention_max) = self.mention.median_max();
        let (fanout_median, fanout_max) = self.mention_fanout.median_max();
        vec![
            Row::new(
                format!(
                    "scale: roster GET, a page of {ROSTER_PAGE} @{} ({} KB), p99",
                    thousands(n as u64),
                    self.roster_page_bytes / 1024
                ),
                fmt_us(us(self.roster_page.quantile(0.99))),
                "< 50 ms",
                Verdict::under(us(self.roster_page.quantile(0.99)), us(TARGET_ROSTER_P99)),
            ),
            Row::info(
                format!(
                    "scale: roster GET, whole @{} ({} KB), p50 / p99",
                    thousands(n as u64),
                    self.roster_bytes / 1024
                ),
                format!(
                    "{} / {}",
                    fmt_us(us(self.roster.quantile(0.5))),
                    fmt_us(us(self.roster.quantile(0.99)))
                ),
            ),
            Row::new(
                format!("scale: direct send p99 @{SMALL} → @{}", thousands(n as u64)),
                format!("{} → {} ({ratio:.2}×)", fmt_us(us(small)), fmt_us(us(big))),
                "≤ 2×",
                Verdict::under(ratio, TARGET_SEND_RATIO + 1e-9),
            ),
            Row::new(
                format!(
                    "scale: {BUSY_SENDERS} busy senders' delivered/s @{SMALL} → @{}",
                    thousands(n as u64)
                ),
                format!(
                    "{} → {} ({:.0}%)",
                    fmt_rate(self.fair_alone),
                    fmt_rate(self.fair_beside),
                    share * 100.0
                ),
                "≥ 80%",
                Verdict::at_least(share, TARGET_FAIR_SHARE),
            ),
            Row::info(
                format!(
                    "scale: … daemon CPU per delivered message @{SMALL} → @{}",
                    thousands(n as u64)
                ),
                format!(
                    "{} → {}",
                    fmt_us(us(self.cpu_per_message.0)),
                    fmt_us(us(self.cpu_per_message.1))
                ),
            ),
            Row::info(
                "scale: broadcast to everyone, reply median / max",
                format!(
                    "{} / {}",
                    fmt_us(us(everyone_median)),
                    fmt_us(us(everyone_max))
                ),
            ),
            Row::info(
                format!("scale: broadcast @mentioning {MENTIONED}, reply median / max"),
                format!(
                    "{} / {}",
                    fmt_us(us(mention_median)),
                    fmt_us(us(mention_max))
                ),
            ),
            Row::info(
                format!("scale: … its last of {MENTIONED} pushes read, median / max"),
                format!("{} / {}", fmt_us(us(fanout_median)), fmt_us(us(fanout_max))),
            ),
            self.sweep_row(n),
        ]
    }

    fn sweep_row(&self, n: usize) -> Row {
        let name = format!("scale: sweep @{} linked, median / max", thousands(n as u64));
        let (median, max) = self.sweep.median_max();
        Row::new(
            name,
            format!("{} / {}", fmt_us(us(median)), fmt_us(us(max))),
            "< 10 ms",
            Verdict::under(us(max), us(TARGET_SWEEP)),
        )
    }

    fn storm_rows(&self) -> Vec<Row> {
        let Some(storm) = &self.storm else {
            return Vec::new();
        };
        let relinked = match storm.relinked {
            Some(d) => format!("{} ms", d.as_millis()),
            None => format!("not within {} s", RELINK_LIMIT.as_secs()),
        };
        let in_time = storm.relinked.is_some_and(|d| d <= TARGET_RELINK);
        vec![
            Row::info(
                "scale: storm: restarted daemon listening after",
                format!("{} ms", storm.listening.as_millis()),
            ),
            Row::new(
                "scale: storm: every link back after the restart",
                relinked,
                "≤ 5 s",
                if in_time {
                    Verdict::Pass
                } else {
                    Verdict::Miss
                },
            ),
            Row::info(
                "scale: storm: half, 90% of the links back after",
                format!(
                    "{} ms, {} ms ({:.2} attempts per link, {} over TCP)",
                    storm.half_and_most.0.as_millis(),
                    storm.half_and_most.1.as_millis(),
                    storm.attempts,
                    thousands(storm.fallbacks)
                ),
            ),
            Row::info(
                "scale: storm: CPU until then: daemon / simulator",
                format!("{:.2} s / {:.2} s", storm.cpu.0, storm.cpu.1),
            ),
            Row::new(
                "scale: storm: sessions swept (the sweeper's count)",
                storm.swept.to_string(),
                "0",
                Verdict::check(storm.swept == 0),
            ),
            Row::new(
                "scale: storm: sessions missing (at re-link, and a sweep later)",
                storm.missing.to_string(),
                "0",
                Verdict::check(storm.missing == 0),
            ),
            Row::new(
                "scale: storm: links down a sweep later",
                storm.down_later.to_string(),
                "0",
                Verdict::check(storm.down_later == 0),
            ),
        ]
    }

    fn json(&self, n: usize) -> Value {
        let ms = |d: Duration| r1(d.as_secs_f64() * 1e3);
        json!({
            "links": n,
            "rss_idle_mb": r1(mb(self.rss_idle_kib)),
            "rss_32_linked_mb": r1(mb(self.rss_small_kib)),
            "rss_linked_mb": r1(mb(self.rss_linked_kib)),
            "rss_max_mb": r1(mb(self.rss_max_kib)),
            "rss_after_mb": self.rss_after.iter().map(|(phase, kib)| json!({"after": phase, "mb": r1(mb(*kib))})).collect::<Vec<_>>(),
            "bytes_per_link": self.per_link_bytes(n).round(),
            "bytes_per_hook_only_session": self.hook_only_bytes.round(),
            "links_per_sec": self.link_rate.round(),
            "idle_cpu_daemon_percent": r1(self.idle_cpu.0 * 100.0),
            "idle_cpu_simulator_percent": r1(self.idle_cpu.1 * 100.0),
            "roster_page_p99_ms": ms(self.roster_page.quantile(0.99)),
            "roster_page_bytes": self.roster_page_bytes,
            "roster_whole_p50_ms": ms(self.roster.quantile(0.5)),
            "roster_whole_p99_ms": ms(self.roster.quantile(0.99)),
            "roster_bytes": self.roster_bytes,
            "send_p99_small_ms": ms(self.send_small.quantile(0.99)),
            "send_p99_big_ms": ms(self.send_big.quantile(0.99)),
            "busy_alone_per_sec": self.fair_alone.round(),
            "busy_beside_per_sec": self.fair_beside.round(),
            "busy_rounds_per_sec": self.fair_rounds,
            "busy_cpu_per_message_us": [r1(us(self.cpu_per_message.0)), r1(us(self.cpu_per_message.1))],
            "everyone_reply_ms": self.everyone.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "mention_reply_ms": self.mention.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "mention_pushes": self.mention_pushes,
            "mention_last_push_ms": self.mention_fanout.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "pushes_read": self.pushes_read,
            "sweep_median_ms": ms(self.sweep.median_max().0),
            "sweep_max_ms": ms(self.sweep.median_max().1),
            "storm": self.storm.as_ref().map(Storm::json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_sample_at_or_above() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.add(Duration::from_millis(ms));
        }
        assert_eq!(l.quantile(0.99), Duration::from_millis(99));
        assert_eq!(l.quantile(0.5), Duration::from_millis(50));
        assert_eq!(l.quantile(1.0), Duration::from_millis(100));
        assert_eq!(Latencies::default().quantile(0.99), Duration::ZERO);
    }
}
