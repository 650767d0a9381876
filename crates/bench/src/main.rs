//! `muster-bench`: measures the daemon against its performance targets.
//!
//! - **hooks**: `POST /hook/prompt-submit` requests/s and latency at 8
//!   concurrent keep-alive connections (target: at least 20,000/s);
//! - **sends**: durable `POST /api/v1/messages` per second through the API
//!   (target: at least 10,000/s), checking that nothing acknowledged is lost;
//! - **sweep**: one liveness sweep at 100,000 sessions (target: under 10 ms).
//!
//! Client and daemon run in this one process on one multi-thread tokio
//! runtime, talking over loopback TCP. The bench reports; it does not gate:
//! it exits 0 on a MISS and non-zero only when something failed.

mod daemon;
mod hooks;
mod http;
mod load;
mod report;
mod sends;
mod sweep;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::report::Section;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    Hooks,
    Sends,
    Sweep,
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
    /// Measured seconds per load phase (after the warm-up).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Warm-up seconds before each load phase (not recorded).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = Opts {
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
        hook_connections: args.hook_connections as usize,
        send_concurrency: args.send_concurrency as usize,
        sweep_sessions: args.sweep_sessions as usize,
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muster-bench: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let wants = |w: Which| args.which == Which::All || args.which == w;

    let mut sections: Vec<Section> = Vec::new();
    let mut fatal: Vec<String> = Vec::new();
    runtime.block_on(async {
        type Bench =
            for<'a> fn(&'a Opts) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Section>> + 'a>>;
        let benches: [(Which, &str, Bench); 3] = [
            (Which::Hooks, "hooks", |o| Box::pin(hooks::run(o))),
            (Which::Sends, "sends", |o| Box::pin(sends::run(o))),
            (Which::Sweep, "sweep", |o| Box::pin(sweep::run(o))),
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

    let machine = format!(
        "{cpus} CPU(s); bench client and daemon share one process and one multi-thread tokio runtime \
         ({cpus} worker threads) over loopback TCP, so the client's work competes with the daemon's"
    );
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
