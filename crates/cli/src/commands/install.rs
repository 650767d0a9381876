//! `muster install <harness> [--uninstall]`: the flags, handed to the
//! installer (`muster_install`), which plans and applies the edits; what it
//! reports is printed here, as text or JSON.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use muster_core::protocol::Harness;
use muster_install::{Action, Error, Hooks, Locations, Report, Request, Scope};
use serde_json::json;

use crate::config::{self, Env};
use crate::output;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The harness to set up
    #[arg(value_parser = crate::names::harnesses())]
    pub harness: Harness,
    /// Write the project files of DIR (an existing directory) [default: the current directory]
    #[arg(long, value_name = "DIR", conflicts_with = "user")]
    pub project: Option<PathBuf>,
    /// Write your user-wide files (in your home directory) instead of a project's
    #[arg(long)]
    pub user: bool,
    /// Print the diff of each file that would change, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Remove what `muster install` added, restoring each file it changed
    #[arg(long)]
    pub uninstall: bool,
    /// How Claude Code's hooks reach the daemon: command (`muster hook <event>`) or http (posted straight to
    /// the daemon; needs MUSTER_TOKEN)
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        default_value_t = HookKind::Command,
        long_help = HOOKS_HELP
    )]
    pub hooks: HookKind,
}

/// `muster install --help` on `--hooks`.
const HOOKS_HELP: &str = "\
How Claude Code's hooks reach the daemon.

command (the default, every harness): each hook runs `muster hook <event>`, a process per hook call.

http (claude only): Claude Code posts each hook straight to the daemon's /hook/<event> route, with no \
process per prompt or tool call (`muster-bench hookcost` prints what that saves). SessionStart stays \
`muster hook session-start`, as Claude Code runs no http hook there (it also starts the daemon on first use). \
What it needs:
  - a token: an http hook cannot read the daemon's local key (it changes at every start), so it sends \
`Authorization: Bearer $MUSTER_TOKEN`, taken by name from Claude Code's environment (allowedEnvVars; the \
secret is never written); export it where Claude Code starts. For the daemon on your own machine make it an \
admin token (`muster token create <name> --scope admin`): the session's shim links over the daemon's Unix \
socket as you, and of the tokens only an admin one may act for a session you registered; it lets in no more than \
the local key every process of yours can read already. For a team's daemon over the network any scope works \
(the session's shim and hooks all send the token). Installing refuses without MUSTER_TOKEN set \
(MUSTER_TOKEN_FILE or config.toml's token cannot reach a header);
  - one daemon address, written into the hooks: --url, else MUSTER_URL, else config.toml, else \
http://127.0.0.1:7420 (a team's comma-separated list is refused: Claude Code would not try the next);
  - the daemon up: a hook to a daemon that is down fails (Claude Code carries on without it).
What it gives up: muster's hook client reads the session's transcript for the mail the model saw, so with \
http hooks deliveries stop at `surfaced` (never `seen`), and a channel push Claude Code dropped is not \
caught by the next hook. A project install puts http hooks in DIR/.claude/settings.local.json (they name \
your daemon and need your token: not for the team's files); the MCP server stays where it was. \
--uninstall takes out muster's hooks of either kind.";

/// `--hooks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HookKind {
    /// `muster hook <event>`, a process per hook (every harness)
    Command,
    /// Claude Code's `type: "http"` hooks, posting to the daemon's /hook route (claude only)
    Http,
}

/// Why a run stopped, as the exit code and the JSON error's code.
struct Failure {
    exit: i32,
    code: &'static str,
    message: String,
}

impl Failure {
    fn usage(message: String) -> Failure {
        Failure {
            exit: 2,
            code: "invalid_input",
            message,
        }
    }

    fn local(code: &'static str, message: String) -> Failure {
        Failure {
            exit: 1,
            code,
            message,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        match &error {
            Error::NoHome => Failure::usage("--user needs HOME to find the user's settings".into()),
            Error::NotADirectory(dir) => Failure::usage(format!(
                "--project {} is not an existing directory",
                dir.display()
            )),
            Error::Project { .. } => Failure::usage(format!("--project {error}")),
            Error::ManifestUnreadable { .. } | Error::ManifestInvalid { .. } => {
                Failure::local("bad_manifest", error.to_string())
            }
            Error::NotText { .. } | Error::Invalid { .. } => {
                Failure::local("invalid_settings", error.to_string())
            }
            Error::Hooks(why) => Failure::usage(format!("--hooks http: {why}")),
            Error::Read { .. }
            | Error::Io { .. }
            | Error::ManifestNotSaved { .. }
            | Error::WrittenButNotRecorded { .. } => Failure::local("io_error", error.to_string()),
        }
    }
}

/// Runs `muster install`; returns the exit code. `url_flag` is `--url`,
/// the daemon http hooks post to.
pub fn run(args: &InstallArgs, json: bool, url_flag: Option<&str>, env: &Env) -> i32 {
    match execute(args, url_flag, env) {
        Ok(report) => {
            if json {
                output::print_json(&json!(report));
            } else {
                print_human(&report);
            }
            0
        }
        Err(failure) => {
            if json {
                output::print_json(
                    &json!({"error": {"code": failure.code, "message": failure.message}}),
                );
            }
            eprintln!("error: {}", failure.message);
            failure.exit
        }
    }
}

/// What `--hooks` asks for: http hooks name the daemon's address (from
/// --url, MUSTER_URL, config.toml or the default, as every client finds
/// it) and send the token from MUSTER_TOKEN, the only place Claude Code
/// can take it from, so an install without it is refused.
fn hooks(args: &InstallArgs, url_flag: Option<&str>, env: &Env) -> Result<Hooks, Failure> {
    if args.hooks == HookKind::Command || args.uninstall {
        return Ok(Hooks::Command);
    }
    if args.harness != Harness::Claude {
        return Err(Failure::usage(format!(
            "--hooks http is for claude only: {} runs command hooks (`muster hook <event>`)",
            muster_install::title(args.harness)
        )));
    }
    let file = config::load_config(config::config_path(env));
    let (url, _) = config::resolve_url(url_flag, env, &file).map_err(Failure::usage)?;
    if env
        .muster_token
        .as_deref()
        .is_none_or(|t| t.trim().is_empty())
    {
        let elsewhere = if env.muster_token_file.is_some() {
            "MUSTER_TOKEN_FILE is set, but Claude Code puts only environment variables into an http hook's \
headers: export the token itself as MUSTER_TOKEN (e.g. `export MUSTER_TOKEN=\"$(cat \"$MUSTER_TOKEN_FILE\")\"`) \
where Claude Code starts, and run this again"
                .to_string()
        } else if file.values.token.is_some() || file.values.token_file.is_some() {
            "config.toml names a token, but Claude Code puts only environment variables into an http hook's \
headers: export it as MUSTER_TOKEN where Claude Code starts, and run this again"
                .to_string()
        } else {
            "make a token (`muster token create $USER-hooks --scope admin` for the daemon on this machine: see \
--help), export it as MUSTER_TOKEN where Claude Code starts (your shell's profile), and run this again"
                .to_string()
        };
        return Err(Failure::usage(format!(
            "--hooks http: Claude Code's http hooks reach the daemon at {url} without muster's hook client, so they \
cannot read the daemon's local key (it changes at every start); they send `Authorization: Bearer $MUSTER_TOKEN` \
from Claude Code's environment instead, and MUSTER_TOKEN is not set here: {elsewhere}. Or keep the command hooks \
(no --hooks http)"
        )));
    }
    Ok(Hooks::Http { url })
}

fn execute(args: &InstallArgs, url_flag: Option<&str>, env: &Env) -> Result<Report, Failure> {
    let hooks = hooks(args, url_flag, env)?;
    let http = matches!(hooks, Hooks::Http { .. });
    let exe = std::env::current_exe().map_err(|e| {
        Failure::local(
            "no_binary",
            format!("cannot find the muster binary's path: {e}"),
        )
    })?;
    let muster = exe
        .to_str()
        .ok_or_else(|| {
            Failure::local(
                "no_binary",
                format!("the muster binary's path {} is not UTF-8", exe.display()),
            )
        })?
        .to_string();
    let locations = Locations::from_process();
    let on_path = locations.muster_on_path(&exe);
    let scope = if args.user {
        Scope::user(&locations)?
    } else {
        Scope::project(args.project.as_deref().unwrap_or(Path::new(".")))?
    };
    let manifest: PathBuf = config::default_data_dir(env)
        .map(|d| d.join("installs.json"))
        .ok_or_else(|| {
            Failure::usage(
                "cannot tell where to keep the install record: set HOME or XDG_STATE_HOME".into(),
            )
        })?;
    let manifest_dir = manifest.parent().map(Path::to_path_buf);
    let action = if args.uninstall {
        Action::Uninstall
    } else {
        Action::Install
    };
    let plan = muster_install::plan_with(
        Request {
            harness: args.harness,
            action,
            scope,
            muster,
            on_path,
            manifest,
            locations,
        },
        hooks,
    )?;
    let mut report = if args.dry_run {
        plan.report()
    } else {
        // The install record goes in the data directory: make it as the daemon
        // does, only its owner's (0700), if this install is the first to need it.
        if let Some(dir) = manifest_dir {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            let _ = builder.create(dir);
        }
        plan.apply()?
    };
    if let (Action::Install, Some(url), false) = (action, &env.muster_url, http) {
        report.notes.push(format!(
            "MUSTER_URL={url} is set here but was not written into the settings: muster reads it (or `url` \
in ~/.config/muster/config.toml) each time the harness runs it"
        ));
    }
    Ok(report)
}

fn print_human(report: &Report) {
    let where_ = format!("{} {}", report.scope, report.dir.display());
    let title = muster_install::title(report.harness);
    let header = match (report.action, report.dry_run, report.changed) {
        (Action::Install, true, true) => {
            format!("Dry run: installing muster for {title} ({where_}) would change:")
        }
        (Action::Uninstall, true, true) => {
            format!("Dry run: uninstalling muster from {title} ({where_}) would change:")
        }
        (Action::Install, _, false) => {
            format!("muster is already installed for {title} ({where_}); nothing changed:")
        }
        (Action::Uninstall, _, false) => {
            format!("muster is not installed for {title} ({where_}); nothing to remove:")
        }
        (Action::Install, false, true) => format!("Installed muster for {title} ({where_}):"),
        (Action::Uninstall, false, true) => format!("Removed muster from {title} ({where_}):"),
    };
    let mut out = String::new();
    if report.dry_run {
        for file in &report.files {
            if let Some(diff) = &file.diff {
                out.push_str(diff);
                if !diff.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
    }
    out.push_str(&header);
    out.push('\n');
    for file in &report.files {
        let mut line = format!("  {:<9} {}", file.status.as_str(), file.path.display());
        if let Some(backup) = &file.backup {
            line.push_str(&format!(" (backup: {})", backup.display()));
        }
        if let Some(detail) = &file.detail {
            line.push_str(&format!(" ({detail})"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    if report.dry_run && report.changed {
        out.push_str("Nothing was written (dry run).\n");
    } else if let Some(next) = &report.next_step {
        out.push_str(&format!("Next: {next}.\n"));
    }
    output::emit(&out);
}
