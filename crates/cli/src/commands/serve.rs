//! `muster serve`: turn the command line into the daemon's `Config` and run it.

use crate::cli::{ServeArgs, StoreArg};
use crate::config::{self, Env};
use crate::output::clean;

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
    match runtime.block_on(muster_daemon::serve(daemon_config)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
