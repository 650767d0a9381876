//! muster's installer: writes (and removes again) muster's MCP server and hooks
//! in the settings files of Claude Code, Codex CLI, opencode and Gemini CLI.
//! It touches only those files and its own record of them: no network, no
//! daemon.
//!
//! A run is planned first: [`plan`] reads and parses each file and works out
//! its new bytes, so a broken file stops the run before anything is written,
//! and [`Plan::report`] tells what would change (with a diff of each file, for
//! a dry run). Then [`Plan::apply`] writes: a backup of each file before muster
//! first changes it, an atomic write, and a record in the install manifest
//! (see `manifest`) that lets uninstall put the file back byte for byte, or,
//! if the user changed it since, take out only muster's entries.

mod claude;
mod codex;
mod edit;
// Public only for the fuzz targets (`crates/fuzzing`).
#[doc(hidden)]
pub mod file_edits;
mod files;
mod gemini;
mod inspect;
// Public only for the fuzz targets (`crates/fuzzing`).
#[doc(hidden)]
pub mod json_merge;
mod manifest;
mod opencode;
// Public only for the fuzz targets (`crates/fuzzing`).
#[doc(hidden)]
pub mod toml_merge;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use muster_core::protocol::{Harness, HookEvent};
use serde::Serialize;

pub use claude::{hook_url as claude_hook_url, plugin_files as claude_plugin_files};
pub use edit::EditError;
use edit::Undo;
use file_edits::FileEdits;
pub use inspect::{inspect, Finding, Inspection};
use manifest::{FileRecord, Manifest};

/// Where the harnesses keep their user settings, as the environment tells
/// (read once, so nothing below reads the environment itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`, if absolute.
    pub xdg_config_home: Option<PathBuf>,
    /// `$CODEX_HOME`, if absolute.
    pub codex_home: Option<PathBuf>,
    /// `$CLAUDE_CONFIG_DIR`, if absolute.
    pub claude_config_dir: Option<PathBuf>,
    /// `$GEMINI_CLI_TRUSTED_FOLDERS_PATH`.
    pub gemini_trusted_folders: Option<PathBuf>,
    /// `$PATH`, where a harness finds `muster` by name.
    pub path: Option<OsString>,
    /// Whether `$MUSTER_TOKEN` is set: what Claude Code's http hooks send.
    pub muster_token: bool,
}

impl Locations {
    /// From this process's environment; an empty variable counts as unset.
    pub fn from_process() -> Locations {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let absolute = |name: &str| var(name).filter(|p| p.is_absolute());
        Locations {
            home: var("HOME"),
            xdg_config_home: absolute("XDG_CONFIG_HOME"),
            codex_home: absolute("CODEX_HOME"),
            claude_config_dir: absolute("CLAUDE_CONFIG_DIR"),
            gemini_trusted_folders: var("GEMINI_CLI_TRUSTED_FOLDERS_PATH"),
            path: std::env::var_os("PATH"),
            muster_token: std::env::var_os("MUSTER_TOKEN").is_some_and(|v| !v.is_empty()),
        }
    }

    /// `$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`: Claude Code's
    /// own state, which holds user and per-project (local) MCP servers.
    fn claude_json(&self) -> Option<PathBuf> {
        match &self.claude_config_dir {
            Some(dir) => Some(dir.join(".claude.json")),
            None => self.home.as_ref().map(|home| home.join(".claude.json")),
        }
    }

    /// The first executable `name` in `$PATH`, as a shell would run it.
    pub fn find_on_path(&self, name: &str) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        std::env::split_paths(path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    }

    /// What `muster` on `$PATH` is, compared with `binary` (the one running).
    pub fn muster_on_path(&self, binary: &Path) -> OnPath {
        match self.find_on_path("muster") {
            None => OnPath::Missing,
            Some(found) => {
                let same = match (std::fs::canonicalize(&found), std::fs::canonicalize(binary)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                };
                if same {
                    OnPath::Same
                } else {
                    OnPath::Other(found)
                }
            }
        }
    }
}

/// A regular file (or a link to one) with an execute bit.
fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// What `muster` on `$PATH` is, next to the binary running the install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnPath {
    /// The same binary (both canonicalized): the harness may run `muster` by name.
    Same,
    /// Another binary (an older install, another build).
    Other(PathBuf),
    /// No `muster` on `$PATH`.
    Missing,
}

impl OnPath {
    /// Why the path of this binary cannot be written as `muster`, for notes.
    fn why_not(&self, binary: &str) -> String {
        match self {
            OnPath::Same => String::new(),
            OnPath::Other(other) => format!(
                "`muster` on PATH is {}, not this binary ({binary})",
                other.display()
            ),
            OnPath::Missing => format!("no `muster` is on PATH (this binary is {binary})"),
        }
    }
}

impl Locations {
    /// `$CODEX_HOME`, else `~/.codex`.
    fn codex_home(&self) -> Option<PathBuf> {
        self.codex_home
            .clone()
            .or_else(|| self.home.as_ref().map(|home| home.join(".codex")))
    }

    /// `$GEMINI_CLI_TRUSTED_FOLDERS_PATH`, else `~/.gemini/trustedFolders.json`, as Gemini CLI finds it.
    fn gemini_trusted_folders(&self) -> Option<PathBuf> {
        self.gemini_trusted_folders.clone().or_else(|| {
            self.home
                .as_ref()
                .map(|home| home.join(".gemini").join("trustedFolders.json"))
        })
    }
}

/// Where the files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A project's own settings, in its directory (absolute, symlinks resolved).
    Project(PathBuf),
    /// The user's settings, for every project.
    User(UserDirs),
}

impl Scope {
    /// The project in `dir`, which must be an existing directory.
    pub fn project(dir: &Path) -> Result<Scope, Error> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory(dir.to_path_buf()));
        }
        std::fs::canonicalize(dir)
            .map(Scope::Project)
            .map_err(|source| Error::Project {
                path: dir.to_path_buf(),
                source,
            })
    }

    /// The user's settings, found from `$HOME` and the harnesses' variables.
    pub fn user(locations: &Locations) -> Result<Scope, Error> {
        let home = locations.home.clone().ok_or(Error::NoHome)?;
        Ok(Scope::User(UserDirs {
            home,
            xdg_config_home: locations.xdg_config_home.clone(),
            codex_home: locations.codex_home.clone(),
            claude_config_dir: locations.claude_config_dir.clone(),
        }))
    }

    /// The project's directory, or the user's home.
    pub fn dir(&self) -> &Path {
        match self {
            Scope::Project(dir) => dir,
            Scope::User(dirs) => &dirs.home,
        }
    }
}

/// The user-scope locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDirs {
    home: PathBuf,
    xdg_config_home: Option<PathBuf>,
    codex_home: Option<PathBuf>,
    claude_config_dir: Option<PathBuf>,
}

impl UserDirs {
    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    fn config_home(&self) -> PathBuf {
        self.xdg_config_home
            .clone()
            .unwrap_or_else(|| self.home.join(".config"))
    }

    /// `$CODEX_HOME`, else `~/.codex`.
    fn codex_home(&self) -> PathBuf {
        self.codex_home
            .clone()
            .unwrap_or_else(|| self.home.join(".codex"))
    }

    /// `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
    fn claude_dir(&self) -> PathBuf {
        self.claude_config_dir
            .clone()
            .unwrap_or_else(|| self.home.join(".claude"))
    }

    /// Claude Code's own state file, which holds the user's MCP servers.
    fn claude_json(&self) -> PathBuf {
        match &self.claude_config_dir {
            Some(dir) => dir.join(".claude.json"),
            None => self.home.join(".claude.json"),
        }
    }
}

/// Whether a run puts muster in or takes it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Install,
    Uninstall,
}

/// One run of the installer.
#[derive(Debug, Clone)]
pub struct Request {
    pub harness: Harness,
    pub action: Action,
    pub scope: Scope,
    /// The muster binary running the install (absolute). A project install
    /// writes it only into local, uncommitted settings; the team's files get
    /// `muster` by name when `on_path` is [`OnPath::Same`].
    pub muster: String,
    /// What `muster` on `$PATH` is (see [`Locations::muster_on_path`]).
    pub on_path: OnPath,
    /// The install record (`installs.json`).
    pub manifest: PathBuf,
    pub locations: Locations,
}

/// How Claude Code's hooks reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Hooks {
    /// `muster hook <event>`: a process per hook (every harness).
    #[default]
    Command,
    /// Claude Code's `type: "http"` hooks, posting straight to the daemon at
    /// `url` with the token from `$MUSTER_TOKEN`; SessionStart, which Claude
    /// Code runs only as a command, stays `muster hook session-start`.
    Http { url: String },
}

/// The muster binary the harness will run.
struct Muster {
    /// What the settings name: `muster` (a project install, with this binary
    /// on PATH) or the absolute path of the binary.
    path: String,
    /// The absolute path of the binary running the install.
    binary: String,
    /// Whether `path` is `muster` by name, fit for files a team commits.
    portable: bool,
    on_path: OnPath,
    /// How the hooks reach the daemon (Claude Code only).
    hooks: Hooks,
}

impl Muster {
    fn new(request: &Request) -> Muster {
        let portable =
            matches!(request.scope, Scope::Project(_)) && request.on_path == OnPath::Same;
        Muster {
            path: if portable {
                "muster".into()
            } else {
                request.muster.clone()
            },
            binary: request.muster.clone(),
            portable,
            on_path: request.on_path.clone(),
            hooks: Hooks::Command,
        }
    }
}

impl Muster {
    /// The shell command of one hook, e.g. `/usr/local/bin/muster hook stop --harness claude`.
    fn hook_command(&self, event: HookEvent, harness: Harness) -> String {
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

/// What a file holds for muster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The server, the hooks, the plugin.
    Config,
    /// What the harness needs before it runs them (Codex's hook and project
    /// trust, Gemini CLI's trusted folder).
    Trust,
}

/// One file muster writes and how.
struct Target {
    path: PathBuf,
    edits: FileEdits,
    role: Role,
}

impl Target {
    fn config(path: PathBuf, edits: FileEdits) -> Target {
        Target {
            path,
            edits,
            role: Role::Config,
        }
    }

    fn trust(path: PathBuf, edits: FileEdits) -> Target {
        Target {
            path,
            edits,
            role: Role::Trust,
        }
    }
}

/// Everything one harness needs, plus what to tell the user.
struct Layout {
    targets: Vec<Target>,
    /// Files that held muster's entries in the other way of installing (the
    /// team's files vs local settings): install takes muster's entries out of
    /// them, uninstall too. Each with why, for the report.
    stale: Vec<(Target, String)>,
    notes: Vec<String>,
    next_step: String,
    /// Why the harness will not trust what install wrote, if the user's own
    /// settings say so (doctor reports it).
    trust_problem: Option<String>,
}

impl Layout {
    fn new(targets: Vec<Target>, notes: Vec<String>, next_step: &str) -> Layout {
        Layout {
            targets,
            stale: Vec::new(),
            notes,
            next_step: next_step.into(),
            trust_problem: None,
        }
    }
}

/// A file that a team commits: in the project, and not a harness's local settings.
fn committed(scope: &Scope, path: &Path) -> bool {
    match scope {
        Scope::Project(dir) => {
            path.starts_with(dir)
                && path.file_name().and_then(|n| n.to_str()) != Some("settings.local.json")
        }
        Scope::User(_) => false,
    }
}

/// The layout of one harness for a request.
fn layout_of(request: &Request, muster: &Muster) -> Layout {
    let scope = &request.scope;
    let locations = &request.locations;
    let mut layout = match request.harness {
        Harness::Claude => claude::layout(scope, locations, muster),
        Harness::Codex => codex::layout(scope, locations, muster),
        Harness::Opencode => opencode::layout(scope, muster),
        Harness::Gemini => gemini::layout(scope, locations, muster),
    };
    let named: Vec<String> = layout
        .targets
        .iter()
        .filter(|t| t.role == Role::Config && committed(scope, &t.path))
        // A file muster writes whole (opencode's plugin) names no binary.
        .filter(|t| !matches!(t.edits, FileEdits::Whole(_)))
        .map(|t| t.path.display().to_string())
        .collect();
    if !muster.portable && !named.is_empty() {
        layout.notes.push(format!(
            "{}, so {} name{} {}, a path on this machine only: do not commit {} unless every teammate has muster \
there. {} keeps no local, uncommitted settings for a project's MCP server and hooks. To write `muster` by name \
instead, put this binary on PATH as `muster` and run `muster install {} --project` again",
            muster.on_path.why_not(&muster.binary),
            named.join(" and "),
            if named.len() == 1 { "s" } else { "" },
            muster.binary,
            if named.len() == 1 { "it" } else { "them" },
            title(request.harness),
            request.harness,
        ));
    }
    layout
}

/// The command that installs muster again for `harness` in `scope`.
pub fn install_command(harness: Harness, scope: &Scope) -> String {
    match scope {
        Scope::Project(dir) => format!(
            "muster install {harness} --project {}",
            shell_quote(&dir.display().to_string())
        ),
        Scope::User(_) => format!("muster install {harness} --user"),
    }
}

/// How people call the harness.
pub fn title(harness: Harness) -> &'static str {
    match harness {
        Harness::Claude => "Claude Code",
        Harness::Codex => "Codex CLI",
        Harness::Opencode => "opencode",
        Harness::Gemini => "Gemini CLI",
    }
}

/// What a run does (or, in a dry run, would do) to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Updated,
    Unchanged,
    Restored,
    Removed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
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
    /// Takes muster's entries out (a stale file during install).
    purge: bool,
    role: Role,
}

impl Step {
    fn changes(&self) -> bool {
        self.before != self.after
    }
}

/// One file in a [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub status: Status,
    /// Where the copy from before muster's first change is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A unified diff of the file (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// What a run did, or in a dry run would do.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub harness: Harness,
    pub scope: &'static str,
    pub dir: PathBuf,
    pub action: Action,
    pub dry_run: bool,
    pub changed: bool,
    pub files: Vec<FileReport>,
    pub notes: Vec<String>,
    pub next_step: Option<String>,
}

/// Why a run stopped. Nothing was written, except where a variant says so.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's settings were asked for, but `$HOME` is not set.
    #[error("the user's settings cannot be found without HOME")]
    NoHome,
    #[error("{} is not an existing directory", .0.display())]
    NotADirectory(PathBuf),
    /// The project directory exists but cannot be resolved.
    #[error("{}: {source}", path.display())]
    Project {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    ManifestUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a muster install record ({source}); move it aside", path.display())]
    ManifestInvalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not UTF-8 text; nothing was changed", path.display())]
    NotText { path: PathBuf },
    /// A settings file muster cannot edit safely: not valid JSON/TOML, or
    /// muster's keys hold something else.
    #[error("{}", invalid_message(path, format, error))]
    Invalid {
        path: PathBuf,
        /// `JSON`, `TOML`.
        format: &'static str,
        error: EditError,
    },
    /// Backing up, writing or removing a file failed (`what`: `back up`,
    /// `write`, `remove`); the files before it in the plan were written, and
    /// recorded.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The install record could not be saved.
    #[error("cannot write {}: {source}", path.display())]
    ManifestNotSaved {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every file was written, but the install record could not be saved.
    #[error("the files were written, but cannot write {}: {source}", path.display())]
    WrittenButNotRecorded {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Hooks of a kind this harness or address cannot take.
    #[error("{0}")]
    Hooks(String),
}

fn invalid_message(path: &Path, format: &str, error: &EditError) -> String {
    match error {
        EditError::Syntax { .. } => format!(
            "{} is not valid {format} ({error}); fix it and run again. Nothing was changed",
            path.display()
        ),
        EditError::Shape(why) => format!(
            "cannot add muster to {}: {why}; fix it and run again. Nothing was changed",
            path.display()
        ),
    }
}

/// Why http hooks cannot be written for `harness` posting to `url`.
fn check_http_hooks(harness: Harness, url: &str) -> Result<(), Error> {
    if harness != Harness::Claude {
        return Err(Error::Hooks(format!(
            "http hooks are for claude only: {} runs command hooks (`muster hook <event>`)",
            title(harness)
        )));
    }
    if url.contains(',') {
        return Err(Error::Hooks(format!(
            "http hooks post to one address, and {url:?} is a list: Claude Code would not try the next one when the \
first is down. Name one daemon with --url, or keep the command hooks, which try each in turn"
        )));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.contains(['?', '#', ' '])) {
        return Err(Error::Hooks(format!(
            "http hooks need the daemon's http:// or https:// address, not {url:?}"
        )));
    }
    Ok(())
}

/// A run worked out and not yet applied.
pub struct Plan {
    request: Request,
    manifest: Manifest,
    steps: Vec<Step>,
    notes: Vec<String>,
    next_step: String,
}

/// Reads the install record and every file the run touches, and works out
/// each file's new bytes, with command hooks. Writes nothing.
pub fn plan(request: Request) -> Result<Plan, Error> {
    plan_with(request, Hooks::Command)
}

/// As [`plan`], with the hooks reaching the daemon as `hooks` says:
/// [`Hooks::Http`] is for Claude Code only, and for one `http://` or
/// `https://` address (not a team's list). Uninstalling takes out muster's
/// hooks of either kind.
pub fn plan_with(request: Request, hooks: Hooks) -> Result<Plan, Error> {
    if let Hooks::Http { url } = &hooks {
        check_http_hooks(request.harness, url)?;
    }
    let mut muster = Muster::new(&request);
    muster.hooks = hooks;
    let layout = layout_of(&request, &muster);
    let manifest = Manifest::load(&request.manifest)?;
    let steps = match request.action {
        Action::Install => plan_install(&layout, &manifest)?,
        Action::Uninstall => plan_uninstall(&layout, &manifest)?,
    };
    Ok(Plan {
        request,
        manifest,
        steps,
        notes: layout.notes,
        next_step: layout.next_step,
    })
}

impl Plan {
    /// Whether applying it changes any file.
    pub fn changes(&self) -> bool {
        self.steps.iter().any(Step::changes)
    }

    /// What applying it would do, with a diff of each file that would change;
    /// nothing is written.
    pub fn report(&self) -> Report {
        let mut details: Vec<Option<String>> =
            self.steps.iter().map(|s| s.detail.clone()).collect();
        if self.request.action == Action::Install {
            for (i, step) in self.steps.iter().enumerate() {
                if step.changes()
                    && !step.purge
                    && step.before.is_some()
                    && !self.manifest.files.contains_key(&step.path)
                {
                    details[i] = Some("a backup would be kept as <file>.muster-backup".into());
                }
            }
        }
        self.to_report(true, vec![None; self.steps.len()], details)
    }

    /// Writes every file that changes, backing each up before muster first
    /// changes it, and updates the install record.
    pub fn apply(mut self) -> Result<Report, Error> {
        let changed = self.changes();
        let path = self.request.manifest.clone();
        let mut backups: Vec<Option<PathBuf>> = vec![None; self.steps.len()];
        let mut details: Vec<Option<String>> =
            self.steps.iter().map(|s| s.detail.clone()).collect();
        // What a run killed halfway left beside these files goes first.
        files::remove_stale_temps(&path);
        for step in &self.steps {
            files::remove_stale_temps(&step.path);
        }
        if changed {
            let outcome = match self.request.action {
                Action::Install => apply_install(
                    &self.steps,
                    &mut self.manifest,
                    self.request.harness,
                    &mut backups,
                    &mut details,
                ),
                Action::Uninstall => apply_uninstall(&self.steps, &mut self.manifest, &mut details),
            };
            // What was written is recorded even when a later file failed.
            let saved = self.manifest.save(&path);
            outcome?;
            saved.map_err(|source| Error::WrittenButNotRecorded { path, source })?;
        } else if self.request.action == Action::Uninstall {
            // Nothing to change, but records of files that are gone are stale.
            let before = self.manifest.files.len();
            for step in &self.steps {
                self.manifest.files.remove(&step.path);
            }
            if self.manifest.files.len() != before {
                self.manifest
                    .save(&path)
                    .map_err(|source| Error::ManifestNotSaved { path, source })?;
            }
        }
        Ok(self.to_report(false, backups, details))
    }

    fn to_report(
        &self,
        dry_run: bool,
        backups: Vec<Option<PathBuf>>,
        details: Vec<Option<String>>,
    ) -> Report {
        let request = &self.request;
        let changed = self.changes();
        let files = self
            .steps
            .iter()
            .zip(backups.into_iter().zip(details))
            .map(|(step, (backup, detail))| FileReport {
                path: step.path.clone(),
                status: step.status,
                backup,
                detail,
                diff: (dry_run && step.changes()).then(|| {
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
        let (notes, next_step) = match (request.action, changed) {
            (Action::Install, _) => (self.notes.clone(), Some(self.next_step.clone())),
            (Action::Uninstall, true) => (
                Vec::new(),
                Some(format!(
                    "restart {} so it stops running muster",
                    title(request.harness)
                )),
            ),
            (Action::Uninstall, false) => (Vec::new(), None),
        };
        Report {
            harness: request.harness,
            scope: match request.scope {
                Scope::Project(_) => "project",
                Scope::User(_) => "user",
            },
            dir: request.scope.dir().to_path_buf(),
            action: request.action,
            dry_run,
            changed,
            files,
            notes,
            next_step,
        }
    }
}

fn read_text(path: &Path, bytes: Option<&Vec<u8>>) -> Result<Option<String>, Error> {
    bytes
        .map(|b| {
            String::from_utf8(b.clone()).map_err(|_| Error::NotText {
                path: path.to_path_buf(),
            })
        })
        .transpose()
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    files::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, edits: &FileEdits, error: EditError) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        format: edits.format_name(),
        error,
    }
}

fn plan_install(layout: &Layout, manifest: &Manifest) -> Result<Vec<Step>, Error> {
    let mut steps = Vec::new();
    for (target, why) in &layout.stale {
        // Only muster's entries come out: the file may hold another install's
        // (a user install in ~/.claude.json), so it is never restored whole.
        let mut step = uninstall_step(target, manifest.files.get(&target.path), false)?;
        if step.changes() {
            step.purge = true;
            step.detail = Some(why.clone());
            steps.push(step);
        }
    }
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
            purge: false,
            role: target.role,
        });
    }
    Ok(steps)
}

fn io_failure(path: &Path, what: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn apply_install(
    steps: &[Step],
    manifest: &mut Manifest,
    harness: Harness,
    backups: &mut [Option<PathBuf>],
    details: &mut [Option<String>],
) -> Result<(), Error> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if step.purge {
            uninstall_one(step, manifest, &mut details[i], &mut dirs)?;
            continue;
        }
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
                harness: harness.as_str().to_string(),
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
    dirs.sort();
    dirs.dedup();
    files::remove_empty_dirs(&dirs);
    Ok(())
}

fn plan_uninstall(layout: &Layout, manifest: &Manifest) -> Result<Vec<Step>, Error> {
    let mut steps = Vec::new();
    let stale = layout.stale.iter().map(|(target, _)| target);
    for target in layout.targets.iter().chain(stale) {
        let step = uninstall_step(target, manifest.files.get(&target.path), true)?;
        // A stale file without muster's entries is not part of this install.
        let stale_and_clean =
            !step.changes() && !layout.targets.iter().any(|t| t.path == target.path);
        if !stale_and_clean {
            steps.push(step);
        }
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

/// What uninstalling takes out of one file, given what install recorded of it;
/// `whole`: a file unchanged since install may be restored (or removed) whole.
fn uninstall_step(
    target: &Target,
    record: Option<&FileRecord>,
    whole: bool,
) -> Result<Step, Error> {
    let before = read_bytes(&target.path)?;
    let step = |after: Option<Vec<u8>>, status, detail: Option<String>| Step {
        path: target.path.clone(),
        before: before.clone(),
        after,
        status,
        detail,
        undo: Vec::new(),
        purge: false,
        role: target.role,
    };
    let Some(bytes) = &before else {
        return Ok(step(
            None,
            Status::Unchanged,
            record.map(|_| "already gone".to_string()),
        ));
    };
    if let Some(r) = record.filter(|r| whole && r.restorable && r.sha256 == files::sha256(bytes)) {
        if !r.existed {
            return Ok(step(
                None,
                Status::Removed,
                Some("created by install".into()),
            ));
        }
        // A lost backup leaves only the structural way out.
        if let Some(Ok(Some(original))) = r.backup.as_deref().map(files::read) {
            return Ok(step(
                Some(original),
                Status::Restored,
                Some("as it was before install".into()),
            ));
        }
    }
    let text = read_text(&target.path, Some(bytes))?.unwrap_or_default();
    if let FileEdits::Whole(ours) = &target.edits {
        // Without a record, a file of that name is muster's only if it is muster's plugin.
        if record.is_none() && text != *ours && !text.contains("muster install") {
            return Ok(step(
                before.clone(),
                Status::Unchanged,
                Some("not written by muster; left alone".into()),
            ));
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
    Ok(match after {
        None => step(None, Status::Removed, Some(changed_since.into())),
        Some(after) if after == text => step(before.clone(), Status::Unchanged, None),
        Some(after) => step(
            Some(after.into_bytes()),
            Status::Updated,
            Some(changed_since.into()),
        ),
    })
}

fn apply_uninstall(
    steps: &[Step],
    manifest: &mut Manifest,
    details: &mut [Option<String>],
) -> Result<(), Error> {
    // Directories go last, once every file in them is gone.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        uninstall_one(step, manifest, &mut details[i], &mut dirs)?;
    }
    dirs.sort();
    dirs.dedup();
    files::remove_empty_dirs(&dirs);
    Ok(())
}

/// Writes (or removes) one file with muster's entries taken out, forgets its
/// record, and adds the directories install made for it to `dirs`.
fn uninstall_one(
    step: &Step,
    manifest: &mut Manifest,
    detail: &mut Option<String>,
    dirs: &mut Vec<PathBuf>,
) -> Result<(), Error> {
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
                let text = detail.take().unwrap_or_default();
                *detail = Some(format!(
                    "{text}; the pre-install copy stays at {}",
                    backup.display()
                ));
            }
        }
    }
    manifest.files.remove(&step.path);
    Ok(())
}

#[cfg(test)]
impl Muster {
    /// A binary named by its absolute path, as a user install writes it.
    fn at(path: &str) -> Muster {
        Muster {
            path: path.into(),
            binary: path.into(),
            portable: false,
            on_path: OnPath::Missing,
            hooks: Hooks::Command,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_commands_quote_only_paths_that_need_it() {
        // Proves a plain path is written as is and one with spaces or quotes survives `sh -c`.
        let plain = Muster::at("/usr/local/bin/muster");
        assert_eq!(
            plain.hook_command(HookEvent::Stop, Harness::Claude),
            "/usr/local/bin/muster hook stop --harness claude"
        );
        let odd = Muster::at("/home/a b/it's/muster");
        let cmd = odd.hook_command(HookEvent::Stop, Harness::Codex);
        assert_eq!(cmd, r"'/home/a b/it'\''s/muster' hook stop --harness codex");
        assert!(json_merge::is_muster_command(
            &plain.hook_command(HookEvent::Stop, Harness::Claude)
        ));
        assert!(json_merge::is_muster_command(
            "'/home/a b/muster' hook stop --harness codex"
        ));
    }
}
