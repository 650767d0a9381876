//! `muster install <harness>`: writes (and `--uninstall` removes) muster's MCP
//! server and hooks in a harness's own settings files.
//!
//! Every run first plans: it reads and parses each file and works out its new
//! bytes, so a broken file stops the run before anything is written. Then it
//! applies: a backup of each file before muster first changes it, an atomic
//! write, and a record in the install manifest (see `manifest`) that lets
//! uninstall put the file back byte for byte, or, if the user changed it since,
//! take out only muster's entries.

mod claude;
mod codex;
mod edit;
mod files;
mod gemini;
mod json_merge;
mod manifest;
mod opencode;
mod toml_merge;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::cli::{InstallArgs, InstallHarness};
use crate::config::{self, Env};
use crate::output;
use edit::{EditError, FileEdits, Undo};
use manifest::{FileRecord, Manifest};

/// Where the files go.
pub enum Scope {
    Project(PathBuf),
    User(UserDirs),
}

/// The user-scope locations, from the environment.
pub struct UserDirs {
    pub home: PathBuf,
    xdg_config_home: Option<PathBuf>,
    codex_home: Option<PathBuf>,
    claude_config_dir: Option<PathBuf>,
}

impl UserDirs {
    fn from_env(env: &Env) -> Option<UserDirs> {
        let absolute = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Some(UserDirs {
            home: PathBuf::from(env.home.as_deref()?),
            xdg_config_home: env
                .xdg_config_home
                .as_deref()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute()),
            codex_home: absolute("CODEX_HOME"),
            claude_config_dir: absolute("CLAUDE_CONFIG_DIR"),
        })
    }

    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    pub fn config_home(&self) -> PathBuf {
        self.xdg_config_home
            .clone()
            .unwrap_or_else(|| self.home.join(".config"))
    }

    /// `$CODEX_HOME`, else `~/.codex`.
    pub fn codex_home(&self) -> PathBuf {
        self.codex_home
            .clone()
            .unwrap_or_else(|| self.home.join(".codex"))
    }

    /// `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
    pub fn claude_dir(&self) -> PathBuf {
        self.claude_config_dir
            .clone()
            .unwrap_or_else(|| self.home.join(".claude"))
    }

    /// Claude Code's own state file, which holds the user's MCP servers.
    pub fn claude_json(&self) -> PathBuf {
        match &self.claude_config_dir {
            Some(dir) => dir.join(".claude.json"),
            None => self.home.join(".claude.json"),
        }
    }
}

/// The muster binary the harness will run.
pub struct Muster {
    pub path: String,
}

impl Muster {
    /// The shell command of one hook, e.g. `/usr/local/bin/muster hook stop --harness claude`.
    pub fn hook_command(&self, event: &str, harness: &str) -> String {
        format!(
            "{} hook {event} --harness {harness}",
            shell_quote(&self.path)
        )
    }
}

/// Quotes a path for `sh -c` only when it needs it.
fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@%:,=".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// One file muster writes and how.
pub struct Target {
    pub path: PathBuf,
    pub edits: FileEdits,
}

/// Everything one harness needs, plus what to tell the user.
pub struct Layout {
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub next_step: String,
}

fn harness_name(harness: InstallHarness) -> &'static str {
    match harness {
        InstallHarness::Claude => "claude",
        InstallHarness::Codex => "codex",
        InstallHarness::Opencode => "opencode",
        InstallHarness::Gemini => "gemini",
    }
}

fn harness_title(harness: InstallHarness) -> &'static str {
    match harness {
        InstallHarness::Claude => "Claude Code",
        InstallHarness::Codex => "Codex CLI",
        InstallHarness::Opencode => "opencode",
        InstallHarness::Gemini => "Gemini CLI",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Created,
    Updated,
    Unchanged,
    Restored,
    Removed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Updated => "updated",
            Status::Unchanged => "unchanged",
            Status::Restored => "restored",
            Status::Removed => "removed",
        }
    }
}

/// What a run will do to one file: its bytes before and after (None: absent).
struct Step {
    path: PathBuf,
    before: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
    status: Status,
    detail: Option<String>,
    undo: Vec<Undo>,
}

impl Step {
    fn changes(&self) -> bool {
        self.before != self.after
    }
}

#[derive(Debug, Serialize)]
struct FileReport {
    path: PathBuf,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    harness: &'static str,
    scope: &'static str,
    dir: PathBuf,
    action: &'static str,
    dry_run: bool,
    changed: bool,
    files: Vec<FileReport>,
    notes: Vec<String>,
    next_step: Option<String>,
    #[serde(skip)]
    title: &'static str,
}

/// Why a run stopped. Nothing was written unless `message` says otherwise.
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
    let muster = Muster {
        path: exe
            .to_str()
            .ok_or_else(|| {
                Failure::local(
                    "no_binary",
                    format!("the muster binary's path {} is not UTF-8", exe.display()),
                )
            })?
            .to_string(),
    };
    let (scope, dir) = if args.user {
        let dirs = UserDirs::from_env(env).ok_or_else(|| {
            Failure::usage("--user needs HOME to find the user's settings".into())
        })?;
        let home = dirs.home.clone();
        (Scope::User(dirs), home)
    } else {
        let given = args.project.clone().unwrap_or_else(|| PathBuf::from("."));
        if !given.is_dir() {
            return Err(Failure::usage(format!(
                "--project {} is not an existing directory",
                given.display()
            )));
        }
        let dir = std::fs::canonicalize(&given)
            .map_err(|e| Failure::usage(format!("--project {}: {e}", given.display())))?;
        (Scope::Project(dir.clone()), dir)
    };
    let layout = match args.harness {
        InstallHarness::Claude => claude::layout(&scope, &muster),
        InstallHarness::Codex => codex::layout(&scope, &muster),
        InstallHarness::Opencode => opencode::layout(&scope, &muster),
        InstallHarness::Gemini => gemini::layout(&scope, &muster),
    };
    let manifest_path = config::default_data_dir(env)
        .map(|d| d.join("installs.json"))
        .ok_or_else(|| {
            Failure::usage(
                "cannot tell where to keep the install record: set HOME or XDG_STATE_HOME".into(),
            )
        })?;
    let mut manifest =
        Manifest::load(&manifest_path).map_err(|m| Failure::local("bad_manifest", m))?;

    let steps = if args.uninstall {
        plan_uninstall(&layout, &manifest)?
    } else {
        plan_install(&layout)?
    };
    let changed = steps.iter().any(Step::changes);
    let harness = harness_name(args.harness);
    let mut backups: Vec<Option<PathBuf>> = vec![None; steps.len()];
    let mut details: Vec<Option<String>> = steps.iter().map(|s| s.detail.clone()).collect();
    if !args.dry_run && changed {
        let outcome = if args.uninstall {
            apply_uninstall(&steps, &mut manifest, &mut details)
        } else {
            apply_install(&steps, &mut manifest, harness, &mut backups)
        };
        let saved = manifest.save(&manifest_path);
        outcome?;
        saved
            .map_err(|m| Failure::local("io_error", format!("the files were written, but {m}")))?;
    } else if !args.dry_run && args.uninstall {
        // Nothing to change, but records of files that are gone are stale.
        let before = manifest.files.len();
        for step in &steps {
            manifest.files.remove(&step.path);
        }
        if manifest.files.len() != before {
            manifest
                .save(&manifest_path)
                .map_err(|m| Failure::local("io_error", m))?;
        }
    }
    if !args.uninstall && args.dry_run {
        for (i, step) in steps.iter().enumerate() {
            if step.changes() && step.before.is_some() && !manifest.files.contains_key(&step.path) {
                details[i] = Some("a backup would be kept as <file>.muster-backup".into());
            }
        }
    }

    let mut notes = Vec::new();
    if !args.uninstall {
        notes.extend(layout.notes.iter().cloned());
        if let Some(url) = &env.muster_url {
            notes.push(format!(
                "MUSTER_URL={url} is set here but was not written into the settings: muster reads it (or `url` \
in ~/.config/muster/config.toml) each time the harness runs it"
            ));
        }
    }
    let files = steps
        .iter()
        .enumerate()
        .map(|(i, step)| FileReport {
            path: step.path.clone(),
            status: step.status,
            backup: backups[i].clone(),
            detail: details[i].clone(),
            diff: (args.dry_run && step.changes()).then(|| {
                let text = |b: &Option<Vec<u8>>| {
                    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
                };
                files::diff(
                    &step.path,
                    text(&step.before).as_deref(),
                    text(&step.after).as_deref(),
                )
            }),
        })
        .collect();
    let title = harness_title(args.harness);
    let next_step = match (args.uninstall, changed) {
        (false, _) => Some(layout.next_step.clone()),
        (true, true) => Some(format!("restart {title} so it stops running muster")),
        (true, false) => None,
    };
    Ok(Report {
        harness,
        scope: if args.user { "user" } else { "project" },
        dir,
        action: if args.uninstall {
            "uninstall"
        } else {
            "install"
        },
        dry_run: args.dry_run,
        changed,
        files,
        notes,
        next_step,
        title,
    })
}

fn read_text(path: &Path, bytes: Option<&Vec<u8>>) -> Result<Option<String>, Failure> {
    bytes
        .map(|b| {
            String::from_utf8(b.clone()).map_err(|_| {
                Failure::local(
                    "invalid_settings",
                    format!("{} is not UTF-8 text; nothing was changed", path.display()),
                )
            })
        })
        .transpose()
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, Failure> {
    files::read(path)
        .map_err(|e| Failure::local("io_error", format!("cannot read {}: {e}", path.display())))
}

fn invalid(path: &Path, edits: &FileEdits, err: EditError) -> Failure {
    let message = match err {
        EditError::Syntax { .. } => format!(
            "{} is not valid {} ({err}); fix it and run again. Nothing was changed",
            path.display(),
            edits.format_name()
        ),
        EditError::Shape(why) => format!(
            "cannot add muster to {}: {why}; fix it and run again. Nothing was changed",
            path.display()
        ),
    };
    Failure::local("invalid_settings", message)
}

fn plan_install(layout: &Layout) -> Result<Vec<Step>, Failure> {
    let mut steps = Vec::new();
    for target in &layout.targets {
        let before = read_bytes(&target.path)?;
        let text = read_text(&target.path, before.as_ref())?;
        let (after, undo) = target
            .edits
            .install(text.as_deref())
            .map_err(|e| invalid(&target.path, &target.edits, e))?;
        let after = after.into_bytes();
        let status = match &before {
            None => Status::Created,
            Some(b) if *b == after => Status::Unchanged,
            Some(_) => Status::Updated,
        };
        steps.push(Step {
            path: target.path.clone(),
            before,
            after: Some(after),
            status,
            detail: None,
            undo,
        });
    }
    Ok(steps)
}

fn io_failure(path: &Path, what: &str, e: std::io::Error) -> Failure {
    Failure::local("io_error", format!("cannot {what} {}: {e}", path.display()))
}

fn apply_install(
    steps: &[Step],
    manifest: &mut Manifest,
    harness: &str,
    backups: &mut [Option<PathBuf>],
) -> Result<(), Failure> {
    for (i, step) in steps.iter().enumerate() {
        let Some(after) = step.after.as_ref().filter(|_| step.changes()) else {
            continue;
        };
        let previous = manifest.files.get(&step.path).cloned();
        // A file seen before keeps its first backup; one the user deleted since starts afresh.
        let previous = previous.filter(|_| step.before.is_some());
        let backup = match (&previous, &step.before) {
            (Some(record), _) => record.backup.clone(),
            (None, Some(_)) => {
                Some(files::backup(&step.path).map_err(|e| io_failure(&step.path, "back up", e))?)
            }
            (None, None) => None,
        };
        backups[i] = backup.clone();
        let dirs = files::missing_parents(&step.path);
        files::write_atomic(&step.path, after).map_err(|e| io_failure(&step.path, "write", e))?;
        let sha256 = files::sha256(after);
        let record = match previous {
            None => FileRecord {
                harness: harness.to_string(),
                existed: step.before.is_some(),
                backup,
                sha256,
                restorable: true,
                undo: step.undo.clone(),
                dirs_created: dirs,
            },
            Some(mut record) => {
                let untouched =
                    step.before.as_deref().map(files::sha256) == Some(record.sha256.clone());
                record.restorable &= untouched;
                for undo in &step.undo {
                    if !record.undo.iter().any(|u| u.path == undo.path) {
                        record.undo.push(undo.clone());
                    }
                }
                record.dirs_created.extend(dirs);
                record.sha256 = sha256;
                record
            }
        };
        manifest.files.insert(step.path.clone(), record);
    }
    Ok(())
}

fn plan_uninstall(layout: &Layout, manifest: &Manifest) -> Result<Vec<Step>, Failure> {
    let mut steps = Vec::new();
    for target in &layout.targets {
        let record = manifest.files.get(&target.path);
        let before = read_bytes(&target.path)?;
        let step = |after: Option<Vec<u8>>, status, detail: Option<String>| Step {
            path: target.path.clone(),
            before: before.clone(),
            after,
            status,
            detail,
            undo: Vec::new(),
        };
        let Some(bytes) = &before else {
            steps.push(step(
                None,
                Status::Unchanged,
                record.map(|_| "already gone".to_string()),
            ));
            continue;
        };
        if let Some(r) = record.filter(|r| r.restorable && r.sha256 == files::sha256(bytes)) {
            if !r.existed {
                steps.push(step(
                    None,
                    Status::Removed,
                    Some("created by install".into()),
                ));
                continue;
            }
            // A lost backup leaves only the structural way out.
            if let Some(Ok(Some(original))) = r.backup.as_deref().map(files::read) {
                steps.push(step(
                    Some(original),
                    Status::Restored,
                    Some("as it was before install".into()),
                ));
                continue;
            }
        }
        let text = read_text(&target.path, Some(bytes))?.unwrap_or_default();
        if let FileEdits::Whole(ours) = &target.edits {
            // Without a record, a file of that name is muster's only if it is muster's plugin.
            if record.is_none() && text != *ours && !text.contains("muster install") {
                steps.push(step(
                    before.clone(),
                    Status::Unchanged,
                    Some("not written by muster; left alone".into()),
                ));
                continue;
            }
        }
        let undo = record.map(|r| r.undo.as_slice()).unwrap_or_default();
        let created = record.is_some_and(|r| !r.existed);
        let after = target
            .edits
            .uninstall(&text, undo, created)
            .map_err(|e| invalid(&target.path, &target.edits, e))?;
        let changed_since = if record.is_some() {
            "changed since install, so only muster's entries were taken out"
        } else {
            "muster's entries taken out"
        };
        steps.push(match after {
            None => step(None, Status::Removed, Some(changed_since.into())),
            Some(after) if after == text => step(before.clone(), Status::Unchanged, None),
            Some(after) => step(
                Some(after.into_bytes()),
                Status::Updated,
                Some(changed_since.into()),
            ),
        });
    }
    let installed = steps.iter().any(Step::changes);
    if !installed {
        for step in &mut steps {
            if step.detail.is_none() {
                step.detail = Some("no muster entries".into());
            }
        }
    }
    Ok(steps)
}

fn apply_uninstall(
    steps: &[Step],
    manifest: &mut Manifest,
    details: &mut [Option<String>],
) -> Result<(), Failure> {
    // Directories go last, once every file in them is gone.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let record = manifest.files.get(&step.path).cloned();
        if step.changes() {
            match &step.after {
                Some(after) => files::write_atomic(&step.path, after)
                    .map_err(|e| io_failure(&step.path, "write", e))?,
                None => {
                    files::remove(&step.path).map_err(|e| io_failure(&step.path, "remove", e))?;
                    if let Some(record) = &record {
                        dirs.extend(record.dirs_created.iter().cloned());
                    }
                }
            }
            if let Some(backup) = record.as_ref().and_then(|r| r.backup.as_ref()) {
                if step.status == Status::Restored {
                    let _ = files::remove(backup);
                } else if backup.exists() {
                    let detail = details[i].take().unwrap_or_default();
                    details[i] = Some(format!(
                        "{detail}; the pre-install copy stays at {}",
                        backup.display()
                    ));
                }
            }
        }
        manifest.files.remove(&step.path);
    }
    dirs.sort();
    dirs.dedup();
    files::remove_empty_dirs(&dirs);
    Ok(())
}

fn print_human(report: &Report) {
    let where_ = format!("{} {}", report.scope, report.dir.display());
    let title = report.title;
    let header = match (report.action, report.dry_run, report.changed) {
        ("install", true, true) => {
            format!("Dry run: installing muster for {title} ({where_}) would change:")
        }
        ("uninstall", true, true) => {
            format!("Dry run: uninstalling muster from {title} ({where_}) would change:")
        }
        ("install", _, false) => {
            format!("muster is already installed for {title} ({where_}); nothing changed:")
        }
        ("uninstall", _, false) => {
            format!("muster is not installed for {title} ({where_}); nothing to remove:")
        }
        ("install", false, true) => format!("Installed muster for {title} ({where_}):"),
        _ => format!("Removed muster from {title} ({where_}):"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_commands_quote_only_paths_that_need_it() {
        // Proves a plain path is written as is and one with spaces or quotes survives `sh -c`.
        let plain = Muster {
            path: "/usr/local/bin/muster".into(),
        };
        assert_eq!(
            plain.hook_command("stop", "claude"),
            "/usr/local/bin/muster hook stop --harness claude"
        );
        let odd = Muster {
            path: "/home/a b/it's/muster".into(),
        };
        let cmd = odd.hook_command("stop", "codex");
        assert_eq!(cmd, r"'/home/a b/it'\''s/muster' hook stop --harness codex");
        assert!(json_merge::is_muster_command(
            &plain.hook_command("stop", "claude")
        ));
        assert!(json_merge::is_muster_command(
            "'/home/a b/muster' hook stop --harness codex"
        ));
    }
}
