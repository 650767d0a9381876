//! `muster service install|uninstall|status`: the daemon as a service of
//! the user's, started now and at every login, restarted if it fails. On
//! Linux a systemd user unit (`$XDG_CONFIG_HOME/systemd/user/muster.service`,
//! logs in the journal); on macOS a launchd agent
//! (`~/Library/LaunchAgents/dev.muster.plist`, logs in `~/Library/Logs/muster/`).
//!
//! The service serves what the clients here would use: the loopback
//! address of their daemon URL (`--bind`) and the data directory
//! (`--data-dir`), both written into the unit, so the service and the
//! clients' auto-start never disagree. The unit's and the agent's text come
//! from pure functions, tested on any OS; which service manager is driven
//! is decided by the target OS. Only files this command wrote (they say so
//! in their first lines) are replaced or removed.

mod manager;
mod unit;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;

use self::manager::{ask_state, diagnose, run_step, State};
use self::unit::{Inputs, Manager, Service, MARKER, UNIT_NAME};
use crate::config::{self, Env};
use crate::daemon_lock;
use crate::output;

#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(subcommand)]
    pub action: ServiceAction,
}

#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Write the service's file, enable it and start the daemon now
    Install(DryRunArgs),
    /// Stop and disable the service and remove its file
    Uninstall(DryRunArgs),
    /// Say whether the service is installed, enabled and running, and where its logs are
    Status,
}

#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// Print the file and the commands, and change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// How the service's file compares with what would be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Created,
    Updated,
    Unchanged,
    Removed,
    /// There (status).
    Present,
    Absent,
}

impl FileStatus {
    fn as_str(self) -> &'static str {
        match self {
            FileStatus::Created => "created",
            FileStatus::Updated => "updated",
            FileStatus::Unchanged => "unchanged",
            FileStatus::Removed => "removed",
            FileStatus::Present => "present",
            FileStatus::Absent => "absent",
        }
    }
}

/// A refusal: the exit code, the JSON error's code and the message.
struct Failure {
    exit: i32,
    code: &'static str,
    message: String,
}

fn fail(code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        exit: 1,
        code,
        message: message.into(),
    }
}

/// Runs `muster service …`; returns the exit code.
pub fn run(args: &ServiceArgs, json: bool, url_flag: Option<&str>, env: &Env) -> i32 {
    let result = resolve(url_flag, env).and_then(|service| match &args.action {
        ServiceAction::Install(a) => install(&service, a.dry_run),
        ServiceAction::Uninstall(a) => uninstall(&service, a.dry_run),
        ServiceAction::Status => Ok(status(&service)),
    });
    match result {
        Ok(report) => {
            let code = if report.error.is_some() { 1 } else { 0 };
            if json {
                output::print_json(&json!(report));
            } else {
                print_human(&report);
            }
            code
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

fn resolve(url_flag: Option<&str>, env: &Env) -> Result<Service, Failure> {
    let manager = Manager::for_this_os().ok_or_else(|| {
        fail(
            "unsupported",
            "`muster service` knows systemd (Linux) and launchd (macOS) only; run `muster serve` \
             under your own service manager",
        )
    })?;
    let file = config::load_config(config::config_path(env));
    let (url, _) = config::resolve_url(url_flag, env, &file).map_err(|e| Failure {
        exit: 2,
        code: "invalid_input",
        message: e,
    })?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| {
            fail(
                "no_binary",
                format!("cannot find the muster binary's path: {e}"),
            )
        })?;
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let inputs = Inputs {
        env,
        url: &url,
        exe,
        data_dir: var("MUSTER_DATA_DIR").map(PathBuf::from),
        tmpdir: var("TMPDIR"),
        uid: uid(),
    };
    Service::resolve(manager, &inputs).map_err(|e| fail("no_home", e))
}

fn uid() -> u32 {
    #[cfg(unix)]
    // SAFETY: getuid(2) cannot fail and touches no memory.
    return unsafe { libc::getuid() };
    #[cfg(not(unix))]
    0
}

/// What a run did (or, with --dry-run, would do), for text and JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    action: &'static str,
    platform: &'static str,
    dry_run: bool,
    file: PathBuf,
    file_status: FileStatus,
    /// The file's text (install --dry-run).
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    exec_start: String,
    data_dir: PathBuf,
    /// The commands run (or, dry, to run), with what each said.
    commands: Vec<serde_json::Value>,
    /// The service manager's view (status).
    #[serde(skip_serializing_if = "Option::is_none")]
    installed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<State>,
    /// The daemon holding the data directory now, whoever started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<serde_json::Value>,
    /// The daemon runs under the service manager now (install).
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<bool>,
    logs: String,
    notes: Vec<String>,
    /// Why the run failed (the exit code is 1); what was done stays listed.
    error: Option<String>,
}

impl Report {
    fn new(action: &'static str, service: &Service, dry_run: bool, status: FileStatus) -> Report {
        Report {
            action,
            platform: service.manager.name(),
            dry_run,
            file: service.file.clone(),
            file_status: status,
            text: None,
            exec_start: service.command_line(),
            data_dir: service.data_dir.clone(),
            commands: Vec::new(),
            installed: None,
            service: None,
            daemon: None,
            started: None,
            logs: service.logs(),
            notes: Vec::new(),
            error: None,
        }
    }
}

/// The file now, if any; refused if it is not one this command wrote.
fn ours(service: &Service) -> Result<Option<String>, Failure> {
    match std::fs::read_to_string(&service.file) {
        Ok(text) if text.lines().take(4).any(|l| l.contains(MARKER)) => Ok(Some(text)),
        Ok(_) => Err(fail(
            "not_ours",
            format!(
                "{} exists and was not written by `muster service install`; it is left alone \
                 (move it aside to let muster write its own)",
                service.file.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(
            "io_error",
            format!("cannot read {}: {e}", service.file.display()),
        )),
    }
}

fn install(service: &Service, dry_run: bool) -> Result<Report, Failure> {
    let text = service.text();
    let status = match ours(service)? {
        None => FileStatus::Created,
        Some(old) if old == text => FileStatus::Unchanged,
        Some(_) => FileStatus::Updated,
    };
    let steps = service.install_steps(status == FileStatus::Updated);
    let mut report = Report::new("install", service, dry_run, status);
    if dry_run {
        report.text = Some(text);
        report.commands = steps.iter().map(|s| json!({"argv": s.argv})).collect();
        return Ok(report);
    }
    write_file(service, &text)?;
    report.started = Some(false);
    for step in &steps {
        if step.starts {
            make_way(service, &mut report);
        }
        let ran = run_step(step);
        report.commands.push(json!(ran));
        if !ran.ok && !step.may_fail {
            report.error = Some(format!(
                "the {} is written to {}, but {}. To start it: {}; until then the daemon starts \
                 on first use, or run `muster serve`",
                service.manager.what(),
                service.file.display(),
                diagnose(service.manager, &ran),
                service.by_hand()
            ));
            return Ok(report);
        }
    }
    report.started = Some(true);
    Ok(report)
}

/// Before the service starts its daemon: a daemon started on first use on
/// the same data directory is stopped (the service takes over); one started
/// otherwise is left running, and the report says the service must wait.
fn make_way(service: &Service, report: &mut Report) {
    let Some(running) = daemon_lock::running(&service.data_dir) else {
        return;
    };
    let Some(holder) = running.holder.clone() else {
        return;
    };
    if holder.autostarted {
        if stop(holder.pid, &service.data_dir) {
            report.notes.push(format!(
                "stopped the daemon started on first use (pid {}) so that the service runs it",
                holder.pid
            ));
        } else {
            report.notes.push(format!(
                "the daemon started on first use (pid {}) did not stop; the service starts once it does",
                holder.pid
            ));
        }
    } else if ask_state(service).pid != Some(holder.pid) {
        report.notes.push(format!(
            "a daemon not run by the service already holds {} ({}): the service cannot start \
             beside it; stop it (kill {}) and the service starts at the next login, or now with {}",
            service.data_dir.display(),
            running.describe(),
            holder.pid,
            match service.manager {
                Manager::Systemd => format!("`systemctl --user restart {UNIT_NAME}`"),
                Manager::Launchd =>
                    format!("`launchctl kickstart -k {}`", service.launchd_target()),
            }
        ));
    }
}

/// SIGTERM to the daemon `pid`, waiting until it let go of `data_dir`.
fn stop(pid: u32, data_dir: &Path) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill(2) sends a signal; it touches no memory of ours.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if daemon_lock::running(data_dir).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, data_dir);
        false
    }
}

fn write_file(service: &Service, text: &str) -> Result<(), Failure> {
    let io = |e: std::io::Error, what: &Path| {
        fail("io_error", format!("cannot write {}: {e}", what.display()))
    };
    let mut dirs: Vec<&Path> = service.file.parent().into_iter().collect();
    if let Some(log_dir) = service.log_file.as_deref().and_then(Path::parent) {
        dirs.push(log_dir);
    }
    for dir in dirs {
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    }
    std::fs::write(&service.file, text).map_err(|e| io(e, &service.file))
}

fn uninstall(service: &Service, dry_run: bool) -> Result<Report, Failure> {
    let existing = ours(service)?;
    let status = match existing {
        None => FileStatus::Absent,
        Some(_) => FileStatus::Removed,
    };
    let mut report = Report::new("uninstall", service, dry_run, status);
    if existing.is_none() {
        report.notes.push(format!(
            "no {} at {}: nothing to remove",
            service.manager.what(),
            service.file.display()
        ));
        return Ok(report);
    }
    let (before, after) = service.uninstall_steps();
    if dry_run {
        let remove = json!({"argv": ["rm", service.file.display().to_string()]});
        report.commands = before
            .iter()
            .map(|s| json!({"argv": s.argv}))
            .chain(std::iter::once(remove))
            .chain(after.iter().map(|s| json!({"argv": s.argv})))
            .collect();
        return Ok(report);
    }
    for step in &before {
        let ran = run_step(step);
        if !ran.ok {
            report.notes.push(format!(
                "{} (if it runs, stop it by hand)",
                diagnose(service.manager, &ran)
            ));
        }
        report.commands.push(json!(ran));
    }
    std::fs::remove_file(&service.file).map_err(|e| {
        fail(
            "io_error",
            format!("cannot remove {}: {e}", service.file.display()),
        )
    })?;
    for step in &after {
        let ran = run_step(step);
        report.commands.push(json!(ran));
    }
    Ok(report)
}

fn status(service: &Service) -> Report {
    let installed = std::fs::metadata(&service.file).is_ok();
    let status = if installed {
        FileStatus::Present
    } else {
        FileStatus::Absent
    };
    let mut report = Report::new("status", service, false, status);
    report.installed = Some(installed);
    report.service = Some(ask_state(service));
    report.daemon = daemon_lock::running(&service.data_dir).map(|running| {
        json!({
            "pid": running.pid(),
            "addr": running.addr(),
            "autostarted": running.holder.as_ref().is_some_and(|h| h.autostarted),
        })
    });
    report
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn print_human(report: &Report) {
    let mut out = String::new();
    let what = match report.platform {
        "launchd" => Manager::Launchd.what(),
        _ => Manager::Systemd.what(),
    };
    match report.action {
        "status" => {
            let state = report.service.clone().unwrap_or_default();
            out.push_str(&format!(
                "muster service ({what})\n  file      {} ({})\n",
                report.file.display(),
                if report.installed == Some(true) {
                    "installed"
                } else {
                    "not installed"
                }
            ));
            // Why the manager could not say, beside the first answer it lacks.
            let why = state.error.as_ref().map(|e| format!(" ({e})"));
            let (enabled_why, running_why) = match (state.enabled, why) {
                (None, Some(why)) => (why, String::new()),
                (_, why) => (String::new(), why.unwrap_or_default()),
            };
            out.push_str(&format!(
                "  enabled   {}{enabled_why}\n",
                yes_no(state.enabled)
            ));
            let word = state
                .state
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or(running_why);
            out.push_str(&format!("  running   {}{word}\n", yes_no(state.running)));
            let daemon = match &report.daemon {
                None => format!("none on {}", report.data_dir.display()),
                Some(d) => {
                    let by = if d["autostarted"] == true {
                        "started on first use"
                    } else if state.pid.is_some() && d["pid"].as_u64() == state.pid.map(u64::from) {
                        "run by the service"
                    } else {
                        "not run by the service"
                    };
                    let at = d["addr"]
                        .as_str()
                        .map(|a| format!(" at http://{a}"))
                        .unwrap_or_default();
                    format!("pid {}{at}, {by}", d["pid"])
                }
            };
            out.push_str(&format!("  daemon    {daemon}\n"));
            out.push_str(&format!("  runs      {}\n", report.exec_start));
            out.push_str(&format!("  logs      {}\n", report.logs));
        }
        _ if report.dry_run => {
            if let Some(text) = &report.text {
                out.push_str(&format!(
                    "Would write {}:\n\n{text}\n",
                    report.file.display()
                ));
            } else if report.file_status == FileStatus::Removed {
                out.push_str(&format!("Would remove {}.\n", report.file.display()));
            }
            if !report.commands.is_empty() {
                out.push_str("Would run:\n");
                for c in &report.commands {
                    out.push_str(&format!("  {}\n", argv_of(c)));
                }
            }
            out.push_str("Nothing was changed (dry run).\n");
        }
        action => {
            let verb = match (action, report.file_status) {
                ("install", FileStatus::Unchanged) => "Kept",
                ("install", _) => "Wrote",
                (_, FileStatus::Removed) => "Removed",
                _ => "Found no",
            };
            out.push_str(&format!(
                "{verb} {} ({})\n",
                report.file.display(),
                report.file_status.as_str()
            ));
            for c in &report.commands {
                let ok = if c["ok"] == true { "ran" } else { "failed" };
                out.push_str(&format!("  {ok}  {}\n", argv_of(c)));
            }
            if report.started == Some(true) {
                out.push_str(&format!(
                    "muster's daemon runs as a service now and at every login: {}\nLogs: {}\n",
                    report.exec_start, report.logs
                ));
            } else if action == "uninstall" && report.file_status == FileStatus::Removed {
                out.push_str("The service is gone; the daemon starts on first use again.\n");
            }
        }
    }
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    output::emit(&out);
    if let Some(error) = &report.error {
        eprintln!("error: {error}");
    }
}

fn argv_of(command: &serde_json::Value) -> String {
    command["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
