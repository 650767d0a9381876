//! `muster-bench scale`: one daemon and N linked sessions (default 10,000),
//! simulated by [`sim`] in this process, so team scale is measured on one
//! machine. Against a `muster serve` child:
//!
//! 1. the daemon's RSS idle, and per linked session (the RSS it gains from
//!    32 links to N, after traffic on the 32, divided by the links added);
//! 2. a direct send's p99 at 10 sessions and at N (target: at most 2×);
//! 3. 16 busy senders' delivered/s with 32 sessions and beside N − 32 idle
//!    links (target: within 20%);
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

/// Sessions in the small daemon the send p99 is compared with.
const SMALL: usize = 10;
/// Busy senders, each with a receiver of its own.
const BUSY_SENDERS: usize = 16;
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
    link_rate: f64,
    send_small: Latencies,
    send_big: Latencies,
    fair_alone: f64,
    fair_beside: f64,
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
    swept: usize,
    down_later: usize,
}

/// The `muster serve` child with N simulated links: every figure but the
/// hook-only memory and the sweep.
async fn linked_daemon(opts: &Opts, n: usize, out: &mut Figures) -> anyhow::Result<()> {
    let serve = ServeChild::start(&opts.muster_binary).await?;
    let addr = serve.addr;
    eprintln!("scale: daemon on {addr}; linking {SMALL} sessions…");
    tokio::time::sleep(SETTLE).await;
    out.rss_idle_kib = rss_kib(&serve)?;
    let mut fleet = Fleet::new(Target::loopback(addr.port(), true));
    let ids = (0..n).map(|i| format!("scale-{i:05}"));
    let mut ids = ids.collect::<Vec<_>>().into_iter();
    link(&mut fleet, ids.by_ref().take(SMALL)).await?;
    // A new store's first commits are slower than its later ones: warm it
    // before the figure the one at N is compared with.
    busy_senders(&fleet, SMALL / 2, STORE_WARM_UP, Duration::ZERO, out).await;
    out.send_small = serial_sends(&fleet, 0..SMALL, out).await;
    link(&mut fleet, ids.by_ref().take(2 * BUSY_SENDERS - SMALL)).await?;
    out.fair_alone = busy_senders(&fleet, BUSY_SENDERS, opts.warmup, opts.measure, out).await;
    tokio::time::sleep(SETTLE).await;
    out.rss_small_kib = rss_kib(&serve)?;

    eprintln!("scale: linking {} more…", n - 2 * BUSY_SENDERS);
    let start = Instant::now();
    link(&mut fleet, ids).await?;
    out.link_rate = (n - 2 * BUSY_SENDERS) as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    out.rss_linked_kib = rss_kib(&serve)?;
    out.rss_max_kib = out.rss_linked_kib;

    eprintln!("scale: {n} linked; the roster, sends and busy senders at {n}…");
    roster_reads(addr, out).await?;
    out.send_big = serial_sends(&fleet, 0..n, out).await;
    out.fair_beside = busy_senders(&fleet, BUSY_SENDERS, opts.warmup, opts.measure, out).await;
    note_rss(&serve, out);

    eprintln!("scale: kill -9 of the daemon, then a restart on {addr}…");
    let (serve, storm) = restart_storm(opts, serve, &fleet).await?;
    out.storm = Some(storm);
    note_rss(&serve, out);

    eprintln!("scale: broadcasts to everyone, and @mentions of {MENTIONED}…");
    broadcasts(&mut fleet, out).await;
    note_rss(&serve, out);
    for (id, why) in fleet.refused() {
        out.errors.push(format!("the daemon refused {id}: {why}"));
    }
    out.pushes_read = fleet.pushes();
    fleet.stop().await;
    serve.stop().await
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

/// Serial direct sends, each from one link of `range` to the next; each
/// latency is the sender's wait for its reply, which the daemon gives once
/// the recipient confirmed the push.
async fn serial_sends(
    fleet: &Fleet,
    range: std::ops::Range<usize>,
    out: &mut Figures,
) -> Latencies {
    let mut lat = Latencies::default();
    let start = Instant::now();
    let len = range.len();
    // A stride through the range, so the pairs spread over all of it.
    let stride = if len > SERIAL_SENDS {
        len / SERIAL_SENDS
    } else {
        1
    };
    for k in 0..SERIAL_SENDS {
        if start.elapsed() > SERIAL_BUDGET {
            break;
        }
        let from = range.start + (k * stride) % len;
        let to = range.start + (k * stride + 1) % len;
        let sent = Instant::now();
        match send(fleet, from, to, format!("serial {k}")).await {
            Ok(()) => lat.add(sent.elapsed()),
            Err(e) => out.errors.push(format!("serial send {k}: {e}")),
        }
    }
    lat
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
    let dir = serve.kill9().await;
    let restarted_at = Instant::now();
    let serve = ServeChild::start_in(&opts.muster_binary, dir, &addr.to_string()).await?;
    let listening = restarted_at.elapsed();
    let back = |f: &Fleet| f.welcomed(2) == n && f.up() == n;
    let relinked = fleet.wait(RELINK_LIMIT, back).await.map(|d| d + listening);
    let missing_now = missing(addr, fleet).await?;
    tokio::time::sleep(AFTER_SWEEP).await;
    let (swept_later, down_later) = {
        let (_, linked) = roster(addr).await?;
        let swept = fleet.ids().filter(|id| !linked.contains_key(*id)).count();
        let down = fleet
            .ids()
            .filter(|id| linked.get(*id) == Some(&false))
            .count();
        (swept, down)
    };
    let storm = Storm {
        listening,
        relinked,
        swept: missing_now + swept_later,
        down_later,
    };
    Ok((serve, storm))
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

fn note_rss(serve: &ServeChild, out: &mut Figures) {
    if let Ok(kib) = rss_kib(serve) {
        out.rss_max_kib = out.rss_max_kib.max(kib);
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
        let added = (n - 2 * BUSY_SENDERS).max(1) as f64;
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
            Row::new(
                "scale: daemon RSS, most over the run",
                format!("{:.1} MB", mb(self.rss_max_kib)),
                "< 250 MB",
                Verdict::under(mb(self.rss_max_kib), TARGET_RSS_MB),
            ),
            Row::info("scale: links made per second", fmt_rate(self.link_rate)),
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
                format!("scale: {BUSY_SENDERS} busy senders alone → beside idle links"),
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
            Row::new(
                "scale: storm: sessions swept (at re-link, and a sweep later)",
                storm.swept.to_string(),
                "0",
                Verdict::check(storm.swept == 0),
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
            "bytes_per_link": self.per_link_bytes(n).round(),
            "bytes_per_hook_only_session": self.hook_only_bytes.round(),
            "links_per_sec": self.link_rate.round(),
            "roster_page_p99_ms": ms(self.roster_page.quantile(0.99)),
            "roster_page_bytes": self.roster_page_bytes,
            "roster_whole_p50_ms": ms(self.roster.quantile(0.5)),
            "roster_whole_p99_ms": ms(self.roster.quantile(0.99)),
            "roster_bytes": self.roster_bytes,
            "send_p99_small_ms": ms(self.send_small.quantile(0.99)),
            "send_p99_big_ms": ms(self.send_big.quantile(0.99)),
            "busy_alone_per_sec": self.fair_alone.round(),
            "busy_beside_per_sec": self.fair_beside.round(),
            "everyone_reply_ms": self.everyone.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "mention_reply_ms": self.mention.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "mention_pushes": self.mention_pushes,
            "mention_last_push_ms": self.mention_fanout.samples.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "pushes_read": self.pushes_read,
            "sweep_median_ms": ms(self.sweep.median_max().0),
            "sweep_max_ms": ms(self.sweep.median_max().1),
            "storm": self.storm.as_ref().map(|s| json!({
                "listening_ms": ms(s.listening),
                "relinked_ms": s.relinked.map(ms),
                "swept": s.swept,
                "down_later": s.down_later,
            })),
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
