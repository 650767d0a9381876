//! One module per client command (and `serve`). Each `run` returns the exit
//! code on success; failures come back as a `ClientError` for `main` to report.

pub mod completions;
pub mod doctor;
pub mod guard;
pub mod inbox;
pub mod install;
pub mod man;
pub mod reserve;
pub mod rooms;
pub mod roster;
pub mod send;
pub mod serve;
pub mod status;
pub mod tail;
pub mod top;

use crate::cli::Command;
use crate::client::ClientError;
use crate::context::Context;

pub async fn dispatch(command: Command, ctx: &Context) -> Result<i32, ClientError> {
    match command {
        Command::Roster(args) => roster::run(ctx, &args).await,
        Command::Send(args) => send::run_send(ctx, args).await,
        Command::Broadcast(args) => send::run_broadcast(ctx, args).await,
        Command::Inbox(args) => inbox::run(ctx, &args).await,
        Command::Rooms => rooms::run_list(ctx).await,
        Command::Join(args) => rooms::run_join(ctx, &args, true).await,
        Command::Leave(args) => rooms::run_join(ctx, &args, false).await,
        Command::Tail => tail::run(ctx).await,
        Command::Top(args) => top::run(ctx, &args).await,
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
        | Command::Run(_)
        | Command::Completions(_)
        | Command::Man(_) => Err(ClientError::local(
            "serve, hook, mcp, install, run, completions and man are not client commands",
        )),
    }
}
