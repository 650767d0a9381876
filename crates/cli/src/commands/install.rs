//! `muster install <harness> [--uninstall]`: the flags, handed to the
//! installer (`muster_install`), which plans and applies the edits; what it
//! reports is printed here, as text or JSON.

use std::path::{Path, PathBuf};

use clap::Args;
use muster_core::protocol::Harness;
use muster_install::{Action, Error, Locations, Report, Request, Scope};
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
            Error::Read { .. }
            | Error::Io { .. }
            | Error::ManifestNotSaved { .. }
            | Error::WrittenButNotRecorded { .. } => Failure::local("io_error", error.to_string()),
        }
    }
}

/// Runs `muster install`; returns the exit code.
pub fn run(args: &InstallArgs, json: bool, env: &Env) -> i32 {
    match execute(args, env) {
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

fn execute(args: &InstallArgs, env: &Env) -> Result<Report, Failure> {
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
    let plan = muster_install::plan(Request {
        harness: args.harness,
        action,
        scope,
        muster,
        on_path,
        manifest,
        locations,
    })?;
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
    if let (Action::Install, Some(url)) = (action, &env.muster_url) {
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
