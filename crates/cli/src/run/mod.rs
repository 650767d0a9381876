//! `muster run <harness> [args…]`: the harness under a pseudo-terminal, so
//! an idle session can be woken by typing one line into it; Codex is woken
//! through an app-server of muster's own instead, and nothing is typed.
//!
//! - `pty`: find and spawn the program, copy bytes both ways, exit status.
//! - `term`: our own terminal: raw mode, window size, forwarded signals.
//! - `wake`: the daemon's wake stream for this run.
//! - `typing`: when a wake may be typed (never while the person types).
//! - `codex`: `codex app-server` for the run, the TUI on it (`--remote`),
//!   and wakes as `thread/queue/add`.
//!
//! Nothing here writes to the terminal except the harness's own bytes: the
//! only messages are errors before the harness starts, and logs go to
//! `MUSTER_RUN_LOG` or nowhere.

mod codex;
mod pty;
mod term;
mod typing;
mod wake;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use muster_core::duration::parse_duration;

use crate::client::Client;
use crate::config::{self, Env};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Never wake the harness: the wake stream is not opened (and Codex gets no app-server of muster's) [env: MUSTER_WAKE=off]
    #[arg(long)]
    pub no_wake: bool,

    /// Type a wake only after this long without a keystroke from you
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DUR")]
    pub quiet: Duration,

    /// The harness to run: claude, codex (on an app-server of muster's), gemini, opencode, or any program on PATH
    #[arg(value_name = "HARNESS")]
    pub harness: String,

    /// The harness's own arguments, passed as they are (Codex's after --remote and -C)
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..
    )]
    pub args: Vec<std::ffi::OsString>,
}

/// The environment `muster run` reads beyond what [`Env`] holds, captured once.
#[derive(Debug, Clone, Default)]
struct RunEnv {
    wake: Option<String>,
    log_file: Option<OsString>,
    path: Option<OsString>,
    columns: Option<String>,
    lines: Option<String>,
}

impl RunEnv {
    fn from_process() -> Self {
        RunEnv {
            wake: std::env::var("MUSTER_WAKE").ok(),
            log_file: std::env::var_os("MUSTER_RUN_LOG").filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
            columns: std::env::var("COLUMNS").ok(),
            lines: std::env::var("LINES").ok(),
        }
    }
}

/// Whether this run opens the wake stream: not with `--no-wake`, nor with
/// MUSTER_WAKE set to off (or 0, false, no).
fn wake_enabled(no_wake: bool, env_value: Option<&str>) -> bool {
    let off = env_value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    });
    !no_wake && !off
}

/// A fresh run id, `run-<16 hex>`: names this run to the daemon, so only
/// the sessions started under it are woken through it.
fn new_run_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (very unusual): time and pid still make it unique here.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (nanos ^ (u64::from(std::process::id()) << 32)).to_be_bytes();
    }
    run_id_from(bytes)
}

fn run_id_from(bytes: [u8; 8]) -> String {
    format!("run-{:016x}", u64::from_be_bytes(bytes))
}

/// Logs go to the file MUSTER_RUN_LOG names (filtered by RUST_LOG, default
/// info), else nowhere: the terminal belongs to the harness.
fn init_logging(log_file: Option<&OsString>) {
    let Some(path) = log_file else { return };
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .try_init();
}

/// How this run talks to the daemon.
struct Daemon {
    url: String,
    token: Option<String>,
}

fn resolve_daemon(url_flag: Option<&str>, env: &Env) -> Result<Daemon, String> {
    let file = config::load_config(config::config_path(env));
    let (url, _) = config::resolve_url(url_flag, env, &file)?;
    Ok(Daemon {
        url,
        token: config::resolve_token(env, &file),
    })
}

/// What a run needs before it starts anything: the daemon, the directory,
/// the harness's program. Err is the exit code, the reason already printed.
fn prepare(
    args: &RunArgs,
    url_flag: Option<&str>,
    env: &Env,
    run_env: &RunEnv,
) -> Result<(Daemon, std::path::PathBuf, std::path::PathBuf), i32> {
    let daemon = resolve_daemon(url_flag, env).map_err(|e| {
        eprintln!("muster run: {e}");
        2
    })?;
    let cwd = std::env::current_dir().map_err(|e| {
        eprintln!("muster run: cannot read the current directory: {e}");
        1
    })?;
    let program = pty::find_program(&args.harness, run_env.path.as_deref(), &cwd).map_err(|e| {
        eprintln!("muster run: {e}");
        e.exit_code()
    })?;
    Ok((daemon, cwd, program))
}

/// `muster run`: returns the exit code (the harness's, or why it never ran).
pub fn run(args: &RunArgs, url_flag: Option<&str>, env: &Env) -> i32 {
    let run_env = RunEnv::from_process();
    init_logging(run_env.log_file.as_ref());
    let (daemon, cwd, program) = match prepare(args, url_flag, env, &run_env) {
        Ok(ready) => ready,
        Err(code) => return code,
    };

    let run_id = new_run_id();
    let stdin_is_tty = std::io::stdin().is_terminal();
    let size = term::initial_size(
        stdin_is_tty,
        run_env.columns.as_deref(),
        run_env.lines.as_deref(),
    );
    let extra_env = [
        ("MUSTER_RUN_ID", run_id.clone()),
        ("MUSTER_URL", daemon.url.clone()),
    ];
    let waking = wake_enabled(args.no_wake, run_env.wake.as_deref());
    // Codex gets an app-server of our own, the TUI runs on it, and wakes go
    // through it; if that cannot be had, it runs like any harness.
    let app_server = if waking && codex::is_codex(&program) {
        start_app_server(&program, &cwd, &extra_env, &run_id, &args.args)
    } else {
        None
    };
    let harness_args = match &app_server {
        Some((_, tui_args)) => tui_args.clone(),
        None => args.args.clone(),
    };
    let (app_server, via) = match app_server {
        Some((server, _)) => {
            let socket = server.socket().to_path_buf();
            (Some(server), Via::Codex(socket))
        }
        None => (None, Via::Pty),
    };
    let harness = match pty::spawn(&program, &harness_args, &cwd, &extra_env, size) {
        Ok(harness) => harness,
        Err(e) => {
            eprintln!("muster run: cannot start {}: {e:#}", program.display());
            return pty::EXIT_NOT_EXECUTABLE;
        }
    };
    tracing::info!(%run_id, program = %program.display(), cols = size.cols, rows = size.rows, "harness started");

    // From here on the terminal is the harness's. If raw mode cannot be had
    // the run still works, only with our terminal's own line editing.
    let raw = if stdin_is_tty {
        term::RawMode::enable()
            .inspect_err(|e| tracing::warn!("raw mode unavailable: {e}"))
            .ok()
    } else {
        None
    };
    let wake = waking.then_some(WakeSetup {
        daemon,
        run_id,
        quiet: args.quiet,
        via,
    });
    let code = drive(harness, stdin_is_tty, wake);
    drop(raw);
    // The TUI is gone: its app-server goes too (dropping it stops it, on
    // every return path above as well).
    drop(app_server);
    code
}

/// Starts muster's own app-server for a Codex run and waits until it
/// answers; returns it with the TUI's arguments, or `None` (logged why) when
/// Codex runs as a plain harness instead.
fn start_app_server(
    program: &std::path::Path,
    cwd: &std::path::Path,
    env: &[(&str, String)],
    run_id: &str,
    args: &[OsString],
) -> Option<(codex::AppServer, Vec<OsString>)> {
    let parsed = codex::read_args(args);
    if let Some(why) = codex::why_not_remote(&parsed) {
        tracing::info!("no app-server for this codex run ({why}); wakes are typed");
        return None;
    }
    let mut server = match codex::AppServer::start(program, cwd, env, run_id) {
        Ok(server) => server,
        Err(e) => {
            tracing::warn!("no app-server for codex, so wakes are typed into the pty: {e}");
            return None;
        }
    };
    match server.wait_ready(codex::READY_LIMIT) {
        Ok(took) => {
            tracing::info!(took_ms = took.as_millis() as u64, "codex app-server ready");
            let tui = codex::tui_args(server.socket(), cwd, args, &parsed);
            Some((server, tui))
        }
        Err(e) => {
            tracing::warn!("no app-server for codex, so wakes are typed into the pty: {e}");
            None
        }
    }
}

/// What the wake side needs.
struct WakeSetup {
    daemon: Daemon,
    run_id: String,
    quiet: Duration,
    via: Via,
}

/// How wakes reach the harness.
enum Via {
    /// Typed into the pty.
    Pty,
    /// `thread/queue/add` on muster's own Codex app-server at this socket.
    Codex(std::path::PathBuf),
}

/// Runs the copiers, the signal follower and (if on) the waker until the
/// harness exits; returns its exit code.
fn drive(harness: pty::Harness, stdin_is_tty: bool, wake: Option<WakeSetup>) -> i32 {
    let pty::Harness {
        master,
        child,
        reader,
        writer,
        pid,
    } = harness;
    let clock = Arc::new(typing::InputClock::default());
    // Stamped by every chunk of the harness's output.
    let output = Arc::new(typing::InputClock::default());
    let (output_done, output_closed) = std::sync::mpsc::channel();
    pty::copy_output(reader, output_done, output.clone());
    pty::copy_stdin(writer.clone(), clock.clone(), stdin_is_tty);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // The harness runs and its bytes flow (those are threads); only
            // signals and wakes are lost.
            tracing::warn!("no async runtime ({e}): no signals or wakes");
            return pty::wait(child);
        }
    };
    let master: term::SharedMaster = Arc::new(Mutex::new(master));
    let code = runtime.block_on(async move {
        tokio::spawn(term::follow_signals(pid, master, stdin_is_tty));
        if let Some(setup) = wake {
            start_waking(setup, clock, output, writer);
        }
        tokio::task::spawn_blocking(move || pty::wait(child))
            .await
            .unwrap_or(1)
    });
    // The last output can trail the exit a little; never wait long, since a
    // grandchild may hold the pty open for ever.
    let _ = output_closed.recv_timeout(Duration::from_millis(500));
    // Blocked reads of stdin and of the pty may still be pending; do not wait for them.
    runtime.shutdown_background();
    tracing::info!(code, "harness exited");
    code
}

/// `clock` stamps the person's last keystroke, `output` the harness's last
/// output (a wake's Enter waits until the harness has drawn the typed text).
fn start_waking(
    setup: WakeSetup,
    clock: Arc<typing::InputClock>,
    output: Arc<typing::InputClock>,
    writer: typing::SharedWriter,
) {
    let client = match Client::streaming(&setup.daemon.url, setup.daemon.token.clone()) {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!("no wakes: {e}");
            return;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let how = match setup.via {
        Via::Pty => {
            tokio::spawn(typing::typer(rx, clock, output, writer, setup.quiet));
            wake::How::Pty
        }
        Via::Codex(socket) => {
            tokio::spawn(codex::waker(rx, socket));
            wake::How::Codex
        }
    };
    tokio::spawn(wake::follow(client, setup.run_id, how, tx));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_is_on_unless_the_flag_or_muster_wake_says_off() {
        // Proves --no-wake and MUSTER_WAKE=off (or 0/false/no, any case) turn waking off; anything else leaves it on.
        assert!(wake_enabled(false, None));
        assert!(wake_enabled(false, Some("on")));
        assert!(wake_enabled(false, Some("")));
        assert!(!wake_enabled(true, None));
        assert!(!wake_enabled(true, Some("on")));
        for off in ["off", "OFF", " Off ", "0", "false", "no"] {
            assert!(!wake_enabled(false, Some(off)), "{off}");
        }
    }

    #[test]
    fn run_ids_are_run_dash_16_hex_and_differ() {
        // Proves the run id shape the daemon and hooks rely on, and that two runs get different ids.
        assert_eq!(
            run_id_from([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]),
            "run-0123456789abcdef"
        );
        assert_eq!(run_id_from([0; 8]), "run-0000000000000000");
        let (a, b) = (new_run_id(), new_run_id());
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.starts_with("run-"), "{id}");
            assert!(
                id[4..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
        }
    }
}
