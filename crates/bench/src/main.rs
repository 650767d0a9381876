//! `muster-bench`: measures the daemon against its performance targets.
//!
//! - **hooks**: `POST /hook/prompt-submit` requests/s and latency at 8
//!   concurrent keep-alive connections (target: at least 20,000/s), then
//!   p50/p99/p99.9 at 1, 2, 4 and 8 connections;
//! - **sends**: durable `POST /api/v1/messages` per second through the API
//!   (target: at least 10,000/s), checking that nothing acknowledged is lost;
//! - **sweep**: one liveness sweep at 100,000 sessions (target: under 10 ms);
//! - **delivery**: end-to-end latency from one `muster mcp` shim's
//!   `send_message` to the peer shim's channel notification, serially
//!   (target: p99 under 1 ms) and with 16 senders across 16 shim pairs
//!   (target: at least 5,000 delivered messages/s), the reply pattern (a
//!   ring of 2 and of 4 shims, each sending once it got the previous push;
//!   target: p99 under 2 ms, no 40 ms step), and CPU per delivered message,
//!   daemon plus shims, at 16 senders (target: at most 150 µs);
//! - **hookcost**: what one hook costs Claude Code, command vs http: a
//!   `muster hook post-tool-use` process (started through `sh -c`, as
//!   Claude Code runs it, and directly) from start to exit, beside one POST
//!   of the same payload to a `muster serve` child (new connection, and
//!   kept alive), p50/p99 over `--hookcost-calls` calls of each, taking
//!   turns; each tool call runs two hooks;
//! - **history**: history and search latency on a 20,000-message SQLite
//!   store, with the 255 newest messages not yet in the bulk-written
//!   indexes (the most the writer leaves out) and with all indexed;
//! - **footprint**: the tokens muster adds to every model request
//!   (instructions, identity note, every tool schema), counted with
//!   tiktoken's o200k_base (target: under 1,200);
//! - **load** (only when named; `all` skips it): a soak of a `muster serve`
//!   child with N sessions, shims and hook-only ones, sending at a set rate
//!   for `--seconds`, printing throughput, send p50/p99/p99.9, errors and
//!   the daemon's RSS every `--sample-seconds`; verdicts: nothing lost or
//!   repeated, RSS flat within 10% and the window p99 flat after the
//!   warm-up. The 30-minute soak: `muster-bench load --sessions 64
//!   --seconds 1800`;
//! - **storm** (only when named): N real shims (default 1,000) linked to a
//!   `muster serve` child, which is killed with SIGKILL and restarted on the
//!   same port and data directory (target: every shim re-linked within 2 s,
//!   none swept);
//! - **scale** (only when named): N simulated links (default 10,000) from
//!   this process to a `muster serve` child: the daemon's RSS per linked
//!   and per hook-only session, roster p99, direct send p99 at 10 and at N,
//!   16 busy senders alone and beside the idle links, broadcasts, a restart
//!   storm, and the sweep at N linked (see `scale.rs`);
//! - **team** (only when named; needs PostgreSQL at `MUSTER_BENCH_POSTGRES`,
//!   default 127.0.0.1:5432): durable sends/s through three daemons on one
//!   database (target: at least 5,000/s) beside one PostgreSQL and one
//!   SQLite daemon, and cross-daemon delivery from a shim on one daemon to
//!   a shim on another (target: p99 under 10 ms; see `team.rs`).
//!
//! For hooks, sends and sweep, client and daemon run in this one process on
//! one multi-thread tokio runtime, talking over loopback TCP. The delivery
//! bench runs the daemon as a `muster serve` child process and real
//! `muster mcp` shims, so it needs the `muster` binary built next to this
//! one: `cargo build --release -p muster -p muster-bench`. The bench
//! reports; it does not gate: it exits 0 on a MISS and non-zero only when
//! something failed.

mod daemon;
mod delivery;
mod flood;
mod footprint;
mod history;
mod hookcost;
mod hooks;
mod http;
mod load;
mod mixed_load;
mod report;
mod scale;
mod sends;
mod shim;
mod sim;
mod storm;
mod sweep;
mod team;
mod wakes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::report::Section;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Hooks,
    Hookcost,
    Sends,
    Sweep,
    Delivery,
    Footprint,
    History,
    Flood,
    Load,
    Storm,
    Scale,
    Team,
}

#[derive(Debug, Parser)]
#[command(
    name = "muster-bench",
    about = "Measures muster against its performance targets",
    version
)]
struct Args {
    /// Which bench to run.
    #[arg(value_enum, default_value = "all")]
    which: Which,
    /// Measured seconds per load phase (after the warm-up); the load soak runs this long.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=14_400))]
    seconds: u64,
    /// Warm-up seconds before each load phase (not recorded).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    warmup: u64,
    /// Concurrent connections posting hooks.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    hook_connections: u64,
    /// Concurrent connections sending messages.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    send_concurrency: u64,
    /// Sessions in the sweep bench.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    sweep_sessions: u64,
    /// Sender shims in the concurrent delivery phase (each writes to its own receiver shim).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    delivery_senders: u64,
    /// Most messages measured in the serial delivery phase (it also ends after --seconds).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    delivery_messages: u64,
    /// The `muster` binary the delivery bench runs as `muster mcp` [default: next to muster-bench].
    #[arg(long, value_name = "PATH")]
    muster: Option<PathBuf>,
    /// Calls of each kind in the hookcost bench (command and http hooks, taking turns).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    hookcost_calls: u64,
    /// Sessions in the load bench (shims and hook-only ones).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..=1024))]
    sessions: u64,
    /// Share of the load bench's sessions that are real `muster mcp` shims, in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100))]
    shim_percent: u64,
    /// Messages per second the load bench sends, in all.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Seconds between the load bench's samples (progress lines, RSS, window p99).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    sample_seconds: u64,
    /// Shims in the restart storm.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    storm_shims: u64,
    /// Simulated links in the scale bench.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(200..=16_000))]
    scale_links: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What the benches read from the command line.
pub struct Opts {
    pub warmup: Duration,
    pub measure: Duration,
    pub hook_connections: usize,
    pub send_concurrency: usize,
    pub sweep_sessions: usize,
    pub delivery_senders: usize,
    pub delivery_messages: u64,
    pub muster_binary: PathBuf,
    pub hookcost_calls: usize,
    pub load_sessions: usize,
    pub load_shim_percent: usize,
    pub load_rate: f64,
    pub load_sample: Duration,
    pub storm_shims: usize,
    pub scale_links: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The load soak, the restart storm, scale and team are long (team needs
    // PostgreSQL): they run only when named.
    let named_only = [Which::Load, Which::Storm, Which::Scale, Which::Team];
    let wants =
        |w: Which| args.which == w || (args.which == Which::All && !named_only.contains(&w));
    let muster_binary = match args
        .muster
        .clone()
        .map(Ok)
        .unwrap_or_else(delivery::default_muster_binary)
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("muster-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if [
        Which::Delivery,
        Which::Hookcost,
        Which::Load,
        Which::Storm,
        Which::Scale,
        Which::Team,
    ]
    .into_iter()
    .any(wants)
    {
        if !muster_binary.is_file() {
            eprintln!(
                "muster-bench: the delivery, hookcost, load, storm, scale and team benches run `muster` (its shims, its hook client, or `muster serve`), but {} does not exist.\n\
                 Build it first: {}   (or pass --muster PATH, or pick another bench)",
                muster_binary.display(),
                delivery::build_command()
            );
            return ExitCode::from(2);
        }
        warn_if_stale(&muster_binary);
    }
    let opts = Opts {
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
        hook_connections: args.hook_connections as usize,
        send_concurrency: args.send_concurrency as usize,
        sweep_sessions: args.sweep_sessions as usize,
        delivery_senders: args.delivery_senders as usize,
        delivery_messages: args.delivery_messages,
        muster_binary,
        hookcost_calls: args.hookcost_calls as usize,
        load_sessions: args.sessions as usize,
        load_shim_percent: args.shim_percent as usize,
        load_rate: args.rate as f64,
        load_sample: Duration::from_secs(args.sample_seconds),
        storm_shims: args.storm_shims as usize,
        scale_links: args.scale_links as usize,
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muster-bench: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };

    let mut sections: Vec<Section> = Vec::new();
    let mut fatal: Vec<String> = Vec::new();
    runtime.block_on(async {
        type Bench = for<'a> fn(
            &'a Opts,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = anyhow::Result<Section>> + 'a>,
        >;
        let benches: [(Which, &str, Bench); 12] = [
            (Which::Hooks, "hooks", |o| Box::pin(hooks::run(o))),
            (Which::Hookcost, "hookcost", |o| Box::pin(hookcost::run(o))),
            (Which::Sends, "sends", |o| Box::pin(sends::run(o))),
            (Which::Sweep, "sweep", |o| Box::pin(sweep::run(o))),
            (Which::Delivery, "delivery", |o| Box::pin(delivery::run(o))),
            (Which::Footprint, "footprint", |_| {
                Box::pin(async { footprint::run() })
            }),
            (Which::History, "history", |o| Box::pin(history::run(o))),
            (Which::Flood, "flood", |o| Box::pin(flood::run(o))),
            (Which::Load, "load", |o| Box::pin(mixed_load::run(o))),
            (Which::Storm, "storm", |o| Box::pin(storm::run(o))),
            (Which::Scale, "scale", |o| Box::pin(scale::run(o))),
            (Which::Team, "team", |o| Box::pin(team::run(o))),
        ];
        for (which, name, bench) in benches {
            if !wants(which) {
                continue;
            }
            match bench(&opts).await {
                Ok(section) => sections.push(section),
                Err(e) => {
                    eprintln!("muster-bench: the {name} bench failed: {e:#}");
                    fatal.push(format!("{name}: {e:#}"));
                }
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));

    let mut machine = format!(
        "{cpus} CPU(s); hooks, sends and sweep: bench client and daemon share one process and one \
         multi-thread tokio runtime ({cpus} worker threads) over loopback TCP, so the client's work \
         competes with the daemon's"
    );
    if wants(Which::Hookcost) {
        machine.push_str(
            "; hookcost: the daemon runs as a `muster serve` child process and each command hook is a \
             process of its own",
        );
    }
    if wants(Which::Delivery) {
        machine.push_str(&format!(
            "; delivery: the daemon runs as a `muster serve` child process with {} `muster mcp` child \
             processes, all on the same CPUs as the bench's scripted clients",
            2 * args.delivery_senders + delivery::RING_SHIMS as u64
        ));
    }
    let errors: Vec<String> = sections
        .iter()
        .flat_map(|s| s.errors.iter().map(move |e| format!("{}: {e}", s.name)))
        .chain(fatal.iter().cloned())
        .collect();
    if args.json {
        let mut out = serde_json::Map::new();
        out.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        out.insert("cpus".into(), json!(cpus));
        out.insert("setup".into(), json!(machine));
        out.insert("seconds".into(), json!(args.seconds));
        out.insert("warmup_seconds".into(), json!(args.warmup));
        for s in &sections {
            out.insert(s.name.into(), s.json.clone());
        }
        out.insert("ok".into(), json!(errors.is_empty()));
        out.insert("errors".into(), json!(errors));
        println!("{}", serde_json::Value::Object(out));
    } else {
        let header = vec![
            format!("muster-bench {} — {machine}.", env!("CARGO_PKG_VERSION")),
            format!(
                "Load phases: {} s warm-up + {} s measured; verdicts compare to the targets and never fail the run.",
                args.warmup, args.seconds
            ),
        ];
        report::print_table(&header, &sections);
        if !fatal.is_empty() {
            println!();
            println!("!!! SOME BENCHES COULD NOT RUN !!!");
            for f in &fatal {
                println!("!!! {f}");
            }
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A `muster` older than this bench may speak an older link protocol than
/// the daemon compiled in here: say how to rebuild both.
fn warn_if_stale(muster: &std::path::Path) {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let me = std::env::current_exe().ok().and_then(|e| modified(&e));
    if let (Some(theirs), Some(mine)) = (modified(muster), me) {
        if theirs < mine {
            eprintln!(
                "muster-bench: note: {} is older than muster-bench; if the daemon changed since, rebuild both: \
                 cargo build --release -p muster -p muster-bench",
                muster.display()
            );
        }
    }
}
