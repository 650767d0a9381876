//! `muster`: the daemon (`serve`), the hook client, and the CLI for people and scripts.

mod autostart;
mod cli;
mod client;
mod commands;
mod config;
mod context;
mod daemon_lock;
mod hook;
mod mcp;
mod names;
mod output;
mod run;
mod sse;
mod tls;
mod transcript;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::client::ClientError;
use crate::commands::{
    dashboard, doctor, guard, inbox, reserve, rooms, roster, search, send, status, tail, token, top,
};
use crate::config::Env;
use crate::context::{report_error, Context};

fn main() {
    let cli = Cli::parse();
    let env = Env::from_process();
    let code = match cli.command {
        // The hook path stays lean: no tracing, no config warnings, never fails.
        Command::Hook(args) => hook::run(&args, cli.url.as_deref(), &env),
        Command::Serve(args) => commands::serve::run(args, &env),
        Command::Install(args) => commands::install::run(&args, cli.json, cli.url.as_deref(), &env),
        Command::Service(args) => commands::service::run(&args, cli.json, cli.url.as_deref(), &env),
        Command::Mcp => run_mcp(cli.url.as_deref(), &env),
        // It owns the terminal: no tracing to stderr, no client context.
        Command::Run(args) => run::run(&args, cli.url.as_deref(), &env),
        // Generated from the clap definitions; no daemon, no config.
        Command::Completions(args) => commands::completions::run(&args, Cli::command()),
        Command::Man(args) => commands::man::run(&args, Cli::command()),
        command => {
            init_tracing("warn");
            run_client(command, cli.url.as_deref(), cli.json, env)
        }
    };
    std::process::exit(code);
}

/// `muster mcp`: stdout is the protocol, so every word for people goes to stderr.
fn run_mcp(url_flag: Option<&str>, env: &Env) -> i32 {
    init_tracing("warn");
    let file = config::load_config(config::config_path(env));
    let url = match config::resolve_url(url_flag, env, &file) {
        Ok((url, _)) => url,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (operator, _) = config::resolve_operator(env, &file);
    let host = config::hostname(env);
    let mut shim = mcp::ShimEnv::from_process(url, operator, host);
    shim.token = config::resolve_token(env, &file);
    // One thread: a shim is a relay, and hopping between worker threads
    // costs more than it gains.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(mcp::run(shim));
    // A blocking read of stdin may still be pending (the parent died with
    // our stdin open); do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("muster mcp: {e:#}");
            1
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG, else `default`.
pub fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn run_client(command: Command, url_flag: Option<&str>, json: bool, env: Env) -> i32 {
    let config = config::load_config(config::config_path(&env));
    let is_doctor = matches!(command, Command::Doctor);
    if let (Some(error), Some(path), false) = (&config.error, &config.path, is_doctor) {
        eprintln!(
            "warning: ignoring {}: {}",
            path.display(),
            output::clean(error, false)
        );
    }
    let ctx = match Context::resolve(url_flag, json, env, config) {
        Ok(ctx) => ctx,
        Err(err) => {
            report_error(&err, json);
            return err.exit_code();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = ClientError::local(format!("cannot start the async runtime: {e}"));
            report_error(&err, json);
            return err.exit_code();
        }
    };
    let result = runtime.block_on(dispatch(command, &ctx));
    match result {
        Ok(code) => code,
        Err(err) => {
            report_error(&err, json);
            err.exit_code()
        }
    }
}

/// Runs a client command.
async fn dispatch(command: Command, ctx: &Context) -> Result<i32, ClientError> {
    match command {
        Command::Roster(args) => roster::run(ctx, &args).await,
        Command::Send(args) => send::run_send(ctx, args).await,
        Command::Broadcast(args) => send::run_broadcast(ctx, args).await,
        Command::Inbox(args) => inbox::run(ctx, &args).await,
        Command::Search(args) => search::run_search(ctx, &args).await,
        Command::History(args) => search::run_history(ctx, &args).await,
        Command::Rooms => rooms::run_list(ctx).await,
        Command::Join(args) => rooms::run_join(ctx, &args, true).await,
        Command::Leave(args) => rooms::run_join(ctx, &args, false).await,
        Command::Tail => tail::run(ctx).await,
        Command::Top(args) => top::run(ctx, &args).await,
        Command::Dashboard(args) => dashboard::run(ctx, &args).await,
        Command::Token(args) => token::run(ctx, &args).await,
        Command::Reserve(args) => reserve::run_reserve(ctx, args).await,
        Command::Release(args) => reserve::run_release(ctx, args).await,
        Command::Reservations => reserve::run_list(ctx).await,
        Command::Thread(args) => reserve::run_thread(ctx, args).await,
        Command::Guard(args) => guard::run(ctx, args).await,
        Command::Status => status::run(ctx).await,
        Command::Doctor => doctor::run(ctx).await,
        Command::Serve(_)
        | Command::Hook(_)
        | Command::Mcp
        | Command::Install(_)
        | Command::Service(_)
        | Command::Run(_)
        | Command::Completions(_)
        | Command::Man(_) => Err(ClientError::local(
            "serve, hook, mcp, install, service, run, completions and man are not client commands",
        )),
    }
}
