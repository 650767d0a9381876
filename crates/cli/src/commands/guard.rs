//! `muster guard`: a git pre-commit hook that refuses commits touching files
//! another agent session holds exclusively. Fail-open: with the daemon down,
//! it says so on stderr and lets the commit through.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use muster_core::api::{CheckRequest, Reservations};
use muster_core::inbox::format_utc;

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, clean};

#[derive(Debug, Args)]
pub struct GuardArgs {
    #[command(subcommand)]
    pub action: GuardAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum GuardAction {
    /// Write .git/hooks/pre-commit (refuses to replace a hook that is not muster's)
    Install {
        /// The repository [default: the current directory]
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Remove muster's pre-commit hook
    Uninstall {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Check the staged files (what the hook runs); exit 1 if another session holds one
    Check,
}

/// Marks a pre-commit hook as muster's own.
const MARK: &str = "# muster guard:";

fn git(dir: &Path, args: &[&str]) -> Result<String, ClientError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| ClientError::local(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(ClientError::local(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn hook_path(repo: &Path) -> Result<PathBuf, ClientError> {
    let hooks = git(repo, &["rev-parse", "--git-path", "hooks"])?;
    let hooks = PathBuf::from(hooks.trim());
    Ok(if hooks.is_absolute() {
        hooks
    } else {
        repo.join(hooks)
    }
    .join("pre-commit"))
}

fn script() -> Result<String, ClientError> {
    let exe = std::env::current_exe()
        .map_err(|e| ClientError::local(format!("cannot find the muster binary: {e}")))?;
    let exe = exe.display().to_string().replace('\'', "'\\''");
    Ok(format!(
        "#!/bin/sh\n{MARK} refuses commits touching files another agent session holds exclusively.\n\
         # Remove with `muster guard uninstall`; skip once with `git commit --no-verify`.\nexec '{exe}' guard check\n"
    ))
}

pub async fn run(ctx: &Context, args: GuardArgs) -> Result<i32, ClientError> {
    match args.action {
        GuardAction::Install { repo } => install(ctx, &repo),
        GuardAction::Uninstall { repo } => uninstall(ctx, &repo),
        GuardAction::Check => check(ctx).await,
    }
}

fn install(ctx: &Context, repo: &Path) -> Result<i32, ClientError> {
    let path = hook_path(repo)?;
    let script = script()?;
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.contains(MARK) => {
            say(ctx, &path, "already installed");
            return Ok(0);
        }
        Ok(_) => {
            return Err(ClientError::local(format!(
                "{} already exists and is not muster's; add this line to it instead: {}",
                path.display(),
                script.lines().last().unwrap_or_default()
            )))
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ClientError::local(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, script)
        .map_err(|e| ClientError::local(format!("cannot write {}: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(|e| {
        ClientError::local(format!("cannot make {} executable: {e}", path.display()))
    })?;
    say(ctx, &path, "installed");
    Ok(0)
}

fn uninstall(ctx: &Context, repo: &Path) -> Result<i32, ClientError> {
    let path = hook_path(repo)?;
    match std::fs::read_to_string(&path) {
        Ok(existing) if existing.contains(MARK) => {
            std::fs::remove_file(&path).map_err(|e| {
                ClientError::local(format!("cannot remove {}: {e}", path.display()))
            })?;
            say(ctx, &path, "removed");
        }
        Ok(_) => {
            return Err(ClientError::local(format!(
                "{} is not muster's; left alone",
                path.display()
            )))
        }
        Err(_) => say(ctx, &path, "not installed"),
    }
    Ok(0)
}

fn say(ctx: &Context, path: &Path, what: &str) {
    if ctx.json {
        output::print_json(&serde_json::json!({"hook": path, "result": what}));
    } else {
        output::emit_line(&format!("{}: {what}", path.display()));
    }
}

/// The pre-commit check: staged files against other sessions' exclusive claims.
async fn check(ctx: &Context) -> Result<i32, ClientError> {
    let here = std::env::current_dir().map_err(|e| ClientError::local(e.to_string()))?;
    let top = PathBuf::from(git(&here, &["rev-parse", "--show-toplevel"])?.trim());
    let staged = git(&here, &["diff", "--cached", "--name-only", "-z"])?;
    let paths: Vec<String> = staged
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(|p| top.join(p).display().to_string())
        .collect();
    if paths.is_empty() {
        return Ok(0);
    }
    let request = CheckRequest {
        as_: Some(ctx.acting_as(None)),
        paths,
    };
    let value = match ctx
        .client()?
        .post("/api/v1/reservations/check", &request)
        .await
    {
        Ok(v) => v,
        Err(ClientError::Unreachable { url, reason }) => {
            eprintln!("muster guard: daemon unreachable at {url} ({reason}); commit not checked");
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let held: Reservations = decode(value, "reservations")?;
    if held.reservations.is_empty() {
        return Ok(0);
    }
    eprintln!("muster guard: commit refused; files in it are held by other agent sessions:");
    for r in &held.reservations {
        let res = &r.reservation;
        let reason = if res.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", clean(&res.reason, false))
        };
        eprintln!(
            "  {} held by {} ({}) until {}{reason}",
            clean(&res.pattern, false),
            clean(&r.nickname, false),
            res.session_id,
            format_utc(res.expires_at)
        );
    }
    eprintln!("Ask them (muster send <nickname> …), wait, or commit with --no-verify.");
    Ok(1)
}
