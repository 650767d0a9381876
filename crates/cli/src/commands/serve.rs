//! `muster serve`: turn the command line into the daemon's `Config` and run it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use muster_core::duration::parse_duration;
use muster_core::limits::{self, Rate, DEFAULT_MAX_REQUEST_BYTES};

use crate::config::{self, Env};
use crate::daemon_lock::{DaemonLock, Refused};
use crate::output::clean;

/// `muster serve`'s exit code when another daemon already holds its data
/// directory (the service unit does not restart on it).
pub const EXIT_ALREADY_RUNNING: i32 = 4;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback requires --token (and
    /// wants --tls-cert/--tls-key: without them it warns)
    #[arg(
        long,
        env = "MUSTER_BIND",
        default_value = "127.0.0.1:7420",
        value_name = "ADDR"
    )]
    pub bind: String,

    /// Where the data lives [default: $XDG_STATE_HOME/muster, else ~/.local/state/muster]
    #[arg(long, env = "MUSTER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Store: `sqlite` (one file in the data dir) or a postgres://… URL;
    /// a URL with a password is better given as MUSTER_STORE, which other
    /// users cannot read the way they can read a command line
    #[arg(
        long,
        env = "MUSTER_STORE",
        hide_env_values = true,
        default_value = "sqlite",
        value_parser = parse_store,
        value_name = "STORE"
    )]
    pub store: StoreArg,

    /// Grace window after a session's shim link drops, before it leaves the roster
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub stale_after: Duration,

    /// How long a hook-only session stays on the roster without a hook call
    #[arg(long, default_value = "60m", value_parser = parse_duration, value_name = "DUR")]
    pub hook_backstop: Duration,

    /// How often the sweeper looks for sessions that went away
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DUR")]
    pub sweep_interval: Duration,

    /// How long delivered messages and departed sessions are kept
    #[arg(long, default_value = "30d", value_parser = parse_duration, value_name = "DUR")]
    pub retention: Duration,

    /// Largest HTTP request body accepted, in bytes
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES, value_name = "N")]
    pub max_request_bytes: usize,

    /// Token clients must present (required when binding beyond loopback)
    #[arg(
        long,
        env = "MUSTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// What an edit of a file another session holds exclusively gets: deny
    /// (refused, the agent is told who holds it), ask (the person decides),
    /// warn (allowed, with a warning in context) or off
    #[arg(long, default_value = "deny", value_parser = muster_daemon::GuardMode::parse, value_name = "MODE")]
    pub edit_guard: muster_daemon::GuardMode,

    /// Two sessions editing one file within this window are both told, once
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DUR")]
    pub collision_window: Duration,

    /// At most one wake (a turn started in an idle session for its direct
    /// mail or @mentions) per session per this long; mail within it is woken
    /// for when it ends
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    pub wake_cooldown: Duration,

    /// Also serve a Unix socket for local clients, in a directory only you
    /// can enter ($XDG_RUNTIME_DIR, else the temp directory:
    /// muster-<uid>/<port>.sock); shims link over it, cheaper than TCP
    #[arg(long, env = "MUSTER_UNIX_SOCKET", default_value = "on", value_parser = ["on", "off"], value_name = "on|off")]
    pub unix_socket: String,

    /// Serve HTTPS and WSS with this certificate (PEM: the server's own
    /// first, then any intermediates); needs --tls-key. The Unix socket
    /// stays plain (it is local)
    #[arg(
        long,
        env = "MUSTER_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC)
    #[arg(
        long,
        env = "MUSTER_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub limits: Box<LimitArgs>,

    /// Set by a client that started this daemon on first use (recorded in
    /// the data directory's lock file, for `muster service` to see)
    #[arg(long, hide = true)]
    pub autostarted: bool,
}

/// The bounds on what one client can make the daemon do (boxed: they
/// would make `serve`'s arguments the largest command by far).
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Sends (direct or room) one session may make: N/s, or N/s,BURST, or
    /// off; past it a send gets 429 with Retry-After
    #[arg(long, default_value_t = limits::DEFAULT_SEND_RATE, value_parser = Rate::parse, value_name = "RATE")]
    pub send_rate: Rate,

    /// Hook calls one session may make (N/s[,BURST] or off)
    #[arg(long, default_value_t = limits::DEFAULT_HOOK_RATE, value_parser = Rate::parse, value_name = "RATE")]
    pub hook_rate: Rate,

    /// Sends and hook calls one connection may carry, whatever sessions
    /// they name (N/s[,BURST] or off)
    #[arg(long, default_value_t = limits::DEFAULT_CONNECTION_RATE, value_parser = Rate::parse, value_name = "RATE")]
    pub connection_rate: Rate,

    /// Connections open at once; one more is answered 503 and closed
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000), value_name = "N")]
    pub max_connections: usize,

    /// How long a client may take to send a request's headers, and keep an
    /// idle connection open, before it is closed
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    pub header_timeout: Duration,

    /// Largest WebSocket message a shim may send on its link, in bytes
    #[arg(long, default_value_t = limits::DEFAULT_MAX_LINK_FRAME_BYTES, value_name = "N")]
    pub max_link_frame_bytes: usize,

    /// A frame not taken by a shim within this ends its link (it re-links
    /// and gets its mail again)
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DUR")]
    pub link_stall: Duration,
}

/// Which store `serve` opens, as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreArg {
    Sqlite,
    Postgres(String),
}

/// Reads `--store`: `sqlite`, or a `postgres://` / `postgresql://` URL.
pub fn parse_store(text: &str) -> Result<StoreArg, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("sqlite") {
        Ok(StoreArg::Sqlite)
    } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(StoreArg::Postgres(text.to_string()))
    } else {
        Err(format!(
            "unknown store {text:?}: use `sqlite` or a postgres://user@host/db URL"
        ))
    }
}

/// Where the daemon's Unix socket goes, unless it is turned off.
fn unix_socket_dir(setting: &str) -> Option<PathBuf> {
    #[cfg(unix)]
    if setting == "on" {
        return Some(muster_daemon::unix_socket::default_dir());
    }
    let _ = setting;
    None
}

/// Where the local key goes: beside the Unix socket, whether or not that
/// is served (callers over TCP show the key; see the daemon's `local_key`).
fn local_key_dir() -> Option<PathBuf> {
    #[cfg(unix)]
    return Some(muster_daemon::unix_socket::default_dir());
    #[cfg(not(unix))]
    None
}

/// File descriptors kept back from the connection cap: the store, the
/// listeners, logs and whatever the runtime opens.
const RESERVED_FDS: u64 = 64;

/// The connection cap the process can honour. Raises the soft limit on open
/// files to the hard one first (a daemon of thousands of agents needs far
/// more than the usual 256 on macOS or 1,024 on Linux), and lowers the cap,
/// saying so, if even that is too few.
fn fit_to_open_files(max_connections: usize) -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return max_connections;
        }
        // macOS refuses a soft limit above OPEN_MAX even when the hard limit
        // is "unlimited".
        let ceiling = if cfg!(target_os = "macos") {
            10_240
        } else {
            libc::RLIM_INFINITY
        };
        let wanted = limit.rlim_max.min(ceiling);
        if wanted > limit.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = wanted;
            }
        }
        let open_files: u64 = limit.rlim_cur;
        let room = open_files.saturating_sub(RESERVED_FDS).max(1) as usize;
        if room < max_connections {
            eprintln!(
                "warning: at most {open_files} open files are allowed (ulimit -n), so the daemon \
                 holds at most {room} connections, not {max_connections}"
            );
            return room;
        }
    }
    max_connections
}

pub fn run(args: ServeArgs, env: &Env) -> i32 {
    crate::init_tracing("info");
    let file = config::load_config(config::config_path(env));
    if let (Some(error), Some(path)) = (&file.error, &file.path) {
        eprintln!(
            "warning: ignoring {}: {}",
            path.display(),
            clean(error, false)
        );
    }
    let Some(data_dir) = args.data_dir.or_else(|| config::default_data_dir(env)) else {
        eprintln!("error: cannot choose a data directory (neither XDG_STATE_HOME nor HOME is set); pass --data-dir or set MUSTER_DATA_DIR");
        return 1;
    };
    let tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert, key)| muster_daemon::TlsFiles { cert, key });
    // A bad certificate or key stops the start before the data directory
    // (and its lock) is made.
    if let Some(Err(e)) = tls.as_ref().map(muster_daemon::check_tls) {
        eprintln!("error: {e:#}");
        return 1;
    }
    // One daemon per data directory, held for as long as this one runs.
    let mut lock = match take_data_dir(&data_dir, args.autostarted) {
        Ok(lock) => lock,
        Err(code) => return code,
    };
    let (operator, _) = config::resolve_operator(env, &file);
    let daemon_config = muster_daemon::Config {
        bind: args.bind,
        data_dir,
        store: match args.store {
            StoreArg::Sqlite => muster_daemon::StoreKind::Sqlite,
            StoreArg::Postgres(url) => muster_daemon::StoreKind::Postgres(url),
        },
        stale_after: args.stale_after,
        hook_backstop: args.hook_backstop,
        sweep_interval: args.sweep_interval,
        retention: args.retention,
        max_request_bytes: args.max_request_bytes,
        operator,
        token: args.token.filter(|t| !t.trim().is_empty()),
        edit_guard: args.edit_guard,
        collision_window: args.collision_window,
        wake_cooldown: args.wake_cooldown,
        clock: muster_daemon::Clock::system(),
        unix_socket_dir: unix_socket_dir(&args.unix_socket),
        local_key_dir: local_key_dir(),
        send_rate: args.limits.send_rate,
        hook_rate: args.limits.hook_rate,
        connection_rate: args.limits.connection_rate,
        max_connections: fit_to_open_files(args.limits.max_connections),
        header_timeout: args.limits.header_timeout,
        max_link_frame_bytes: args.limits.max_link_frame_bytes,
        link_queue: limits::DEFAULT_LINK_QUEUE,
        link_stall: args.limits.link_stall,
        tls,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let listening = |addr: std::net::SocketAddr| {
        if let Err(e) = lock.listening(&addr) {
            tracing::warn!("cannot write the address into the data directory's lock file: {e}");
        }
    };
    let served = runtime.block_on(muster_daemon::serve_then(daemon_config, listening));
    drop(lock);
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Creates the data directory (0700) and takes its lock, or says which
/// daemon holds it; the error is the exit code.
fn take_data_dir(data_dir: &std::path::Path, autostarted: bool) -> Result<DaemonLock, i32> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    if let Err(e) = builder.create(data_dir) {
        eprintln!(
            "error: cannot create the data directory {}: {e}",
            data_dir.display()
        );
        return Err(1);
    }
    DaemonLock::acquire(data_dir, autostarted).map_err(|refused| match refused {
        Refused::Running(running) => {
            eprintln!("error: {}", running.refusal());
            EXIT_ALREADY_RUNNING
        }
        Refused::Io(e) => {
            eprintln!(
                "error: cannot write {} ({e}): the data directory must be a writable directory \
                 of this user's; name one with --data-dir (or MUSTER_DATA_DIR)",
                crate::daemon_lock::path_in(data_dir).display()
            );
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_accepts_sqlite_and_postgres_urls_only() {
        // Proves --store passes postgres URLs through and refuses anything else.
        assert_eq!(parse_store("sqlite").unwrap(), StoreArg::Sqlite);
        assert_eq!(
            parse_store("postgres://u@h/db").unwrap(),
            StoreArg::Postgres("postgres://u@h/db".into())
        );
        assert!(parse_store("mysql://x").is_err());
    }
}
