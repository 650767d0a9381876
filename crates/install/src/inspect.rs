//! What `muster doctor` checks of one harness's install: muster's entries as
//! the files hold them now, against what this muster would write.

use std::path::PathBuf;

use muster_core::protocol::Harness;
use serde::Serialize;
use serde_json::Value;

use super::file_edits::FileEdits;
use super::json_merge::{self, JsonEdit};
use super::toml_merge::{self, TomlEdit};
use super::{
    committed, files, install_command, is_executable, layout_of, plan_install, Error, Hooks,
    Manifest, Muster, Request, Role, Scope,
};

/// One check of an install, with what to run when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What one harness's install in one scope looks like now.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub harness: Harness,
    pub scope: &'static str,
    pub dir: PathBuf,
    /// Whether any file holds muster's server, hooks or plugin.
    pub installed: bool,
    pub findings: Vec<Finding>,
}

/// A muster command (or http hook) found in a settings file.
struct Found {
    file: PathBuf,
    /// The program it runs: `muster`, or a path; None for an http hook.
    program: Option<String>,
    /// The hook event it runs at; None for the MCP server.
    event: Option<String>,
}

/// The command at `path` in `root` (`command` as a string, or an argv array's first word).
fn command_at(root: &Value, path: &[String]) -> Option<String> {
    let entry = path.iter().try_fold(root, |here, key| here.get(key))?;
    match entry.get("command")? {
        Value::String(command) => Some(command.clone()),
        Value::Array(argv) => argv.first()?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The hooks of one event in `root`.
fn event_hooks<'a>(root: &'a Value, event: &str) -> impl Iterator<Item = &'a Value> {
    root.get("hooks")
        .and_then(|h| h.get(event))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("hooks").and_then(Value::as_array))
        .flatten()
}

/// muster's hooks of one event in `root`: the program of each command hook,
/// None for each http hook.
fn hook_programs(root: &Value, event: &str) -> Vec<Option<String>> {
    event_hooks(root, event)
        .filter_map(|h| match h.get("type").and_then(Value::as_str) {
            Some("http") => h
                .get("url")
                .and_then(Value::as_str)
                .filter(|u| json_merge::is_muster_url(u))
                .map(|_| None),
            _ => h
                .get("command")
                .and_then(Value::as_str)
                .filter(|c| json_merge::is_muster_command(c))
                .map(|c| Some(json_merge::first_shell_word(c.trim_start()).0)),
        })
        .collect()
}

/// The daemon address muster's http hooks in `path` post to, if any.
fn http_hooks_url(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let root: Value = serde_json::from_str(&text).ok()?;
    let hooks = root.get("hooks")?.as_object()?;
    hooks.keys().find_map(|event| {
        event_hooks(&root, event)
            .filter(|h| h.get("type").and_then(Value::as_str) == Some("http"))
            .filter_map(|h| h.get("url").and_then(Value::as_str))
            .find_map(json_merge::muster_url_base)
            .map(str::to_string)
    })
}

fn finding(name: &'static str, ok: bool, detail: String, fix: Option<String>) -> Finding {
    Finding {
        name,
        ok,
        detail,
        fix,
    }
}

fn list(paths: &[PathBuf]) -> String {
    let mut shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.dedup();
    shown.join(", ")
}

/// Reads what `request`'s harness has installed in its scope (the request's
/// action is ignored) and checks it: the MCP server and hooks (or plugin) are
/// there, the binary they name exists, the harness's trust is written, the
/// files match what this muster writes, and which files name a machine path.
/// Writes nothing.
pub fn inspect(request: Request) -> Result<Inspection, Error> {
    let mut muster = Muster::new(&request);
    let mut layout = layout_of(&request, &muster);
    // Claude Code's http hooks, where an install wrote them: checked against
    // what an install of those writes, posting to the address they name.
    let http_url = if request.harness == Harness::Claude {
        let stale = layout.stale.iter().map(|(t, _)| t);
        layout
            .targets
            .iter()
            .chain(stale)
            .find_map(|t| http_hooks_url(&t.path))
    } else {
        None
    };
    if let Some(url) = &http_url {
        muster.hooks = Hooks::Http { url: url.clone() };
        layout = layout_of(&request, &muster);
    }
    let mut reinstall = install_command(request.harness, &request.scope);
    if http_url.is_some() {
        reinstall.push_str(" --hooks http");
    }
    let scope = &request.scope;
    let mut found: Vec<Found> = Vec::new();
    let mut plugin: Option<(PathBuf, bool)> = None;
    let mut unreadable: Vec<Finding> = Vec::new();
    let stale = layout.stale.iter().map(|(t, _)| t);
    for target in layout
        .targets
        .iter()
        .chain(stale)
        .filter(|t| t.role == Role::Config)
    {
        let bytes = files::read(&target.path).map_err(|source| Error::Read {
            path: target.path.clone(),
            source,
        })?;
        let Some(bytes) = bytes else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let root = match &target.edits {
            FileEdits::Whole(ours) => {
                plugin = Some((target.path.clone(), text == *ours));
                continue;
            }
            FileEdits::Json(_) if text.trim().is_empty() => continue,
            FileEdits::Json(_) => serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()),
            FileEdits::Toml(_) => toml_merge::parse(&text)
                .map(|doc| toml_merge::doc_json(&doc))
                .map_err(|e| e.to_string()),
        };
        let root = match root {
            Ok(root) => root,
            Err(why) => {
                unreadable.push(finding(
                    "settings readable",
                    false,
                    format!("{} cannot be parsed ({why})", target.path.display()),
                    Some(format!(
                        "fix {} by hand, then run `{reinstall}`",
                        target.path.display()
                    )),
                ));
                continue;
            }
        };
        let mut server_paths: Vec<Vec<String>> = Vec::new();
        let mut events: Vec<String> = Vec::new();
        match &target.edits {
            FileEdits::Json(edits) => {
                for edit in edits {
                    match edit {
                        JsonEdit::Entry { path, value } if value.get("command").is_some() => {
                            server_paths.push(path.clone())
                        }
                        JsonEdit::Hook { event, .. } => events.push(event.clone()),
                        _ => {}
                    }
                }
            }
            FileEdits::Toml(edits) => {
                for edit in edits {
                    if let TomlEdit::Table { path, entries } = edit {
                        if entries.iter().any(|(k, _)| k == "command") {
                            server_paths.push(path.clone());
                        }
                    }
                }
            }
            FileEdits::Whole(_) => {}
        }
        for path in server_paths {
            if let Some(program) = command_at(&root, &path) {
                found.push(Found {
                    file: target.path.clone(),
                    program: Some(program),
                    event: None,
                });
            }
        }
        for event in events {
            for program in hook_programs(&root, &event) {
                found.push(Found {
                    file: target.path.clone(),
                    program,
                    event: Some(event.clone()),
                });
            }
        }
    }
    let installed = !found.is_empty() || plugin.is_some();
    let mut findings = unreadable;
    if !installed {
        return Ok(Inspection {
            harness: request.harness,
            scope: scope_name(scope),
            dir: scope.dir().to_path_buf(),
            installed,
            findings,
        });
    }

    // The MCP server.
    let servers: Vec<PathBuf> = found
        .iter()
        .filter(|f| f.event.is_none())
        .map(|f| f.file.clone())
        .collect();
    findings.push(if servers.is_empty() {
        finding(
            "MCP server",
            false,
            "muster's MCP server is in none of its files".into(),
            Some(format!("run `{reinstall}`")),
        )
    } else {
        finding("MCP server", true, format!("in {}", list(&servers)), None)
    });

    // The hooks, or opencode's plugin.
    let mut expected: Vec<String> = Vec::new();
    for target in &layout.targets {
        if let FileEdits::Json(edits) = &target.edits {
            for edit in edits {
                if let JsonEdit::Hook { event, .. } = edit {
                    if !expected.contains(event) {
                        expected.push(event.clone());
                    }
                }
            }
        }
    }
    if !expected.is_empty() {
        let missing: Vec<&String> = expected
            .iter()
            .filter(|e| !found.iter().any(|f| f.event.as_ref() == Some(*e)))
            .collect();
        let hook_files: Vec<PathBuf> = found
            .iter()
            .filter(|f| f.event.is_some())
            .map(|f| f.file.clone())
            .collect();
        findings.push(if missing.is_empty() {
            finding(
                "hooks",
                true,
                format!("all {} in {}", expected.len(), list(&hook_files)),
                None,
            )
        } else {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            finding(
                "hooks",
                false,
                format!(
                    "{} of {} missing: {}",
                    missing.len(),
                    expected.len(),
                    names.join(", ")
                ),
                Some(format!("run `{reinstall}`")),
            )
        });
    }
    for target in &layout.targets {
        if let FileEdits::Whole(_) = target.edits {
            findings.push(match &plugin {
                Some((path, true)) => finding("plugin", true, path.display().to_string(), None),
                Some((path, false)) => finding(
                    "plugin",
                    false,
                    format!("{} differs from this muster's plugin", path.display()),
                    Some(format!("run `{reinstall}`")),
                ),
                None => finding(
                    "plugin",
                    false,
                    format!("{} is missing", target.path.display()),
                    Some(format!("run `{reinstall}`")),
                ),
            });
        }
    }

    // Http hooks send the token from Claude Code's environment.
    if let Some(url) = &http_url {
        findings.push(if request.locations.muster_token {
            finding(
                "http hooks",
                true,
                format!("post to {url}, with MUSTER_TOKEN (set here)"),
                None,
            )
        } else {
            finding(
                "http hooks",
                false,
                format!(
                    "post to {url} with the token in MUSTER_TOKEN, which is not set here: a Claude Code started \
from this environment sends none, and the daemon refuses its hooks"
                ),
                Some(
                    "export MUSTER_TOKEN (a token from `muster token create <name> --scope admin`) where Claude \
Code starts, or run `muster install claude` without --hooks http for command hooks"
                        .into(),
                ),
            )
        });
    }

    // The binary each command names.
    let mut programs: Vec<&str> = found.iter().filter_map(|f| f.program.as_deref()).collect();
    programs.sort();
    programs.dedup();
    let mut ok = true;
    let mut details = Vec::new();
    let mut fix = None;
    for program in programs {
        if program.contains('/') {
            if is_executable(std::path::Path::new(program)) {
                details.push(format!("{program} exists"));
            } else {
                ok = false;
                details.push(format!("{program} is not an executable file"));
                fix = Some(format!("run `{reinstall}` to name this binary instead"));
            }
        } else {
            match request.locations.find_on_path(program) {
                Some(at) => {
                    let this = std::fs::canonicalize(&at).ok()
                        == std::fs::canonicalize(&muster.binary).ok();
                    details.push(format!(
                        "`{program}` on PATH is {}{}",
                        at.display(),
                        if this { " (this binary)" } else { "" }
                    ));
                }
                None => {
                    ok = false;
                    details.push(format!("`{program}` is not on PATH"));
                    fix = Some(format!(
                        "put muster on PATH (e.g. `ln -s {} ~/.local/bin/muster`), or run `{reinstall}` to name \
this binary in local settings",
                        muster.binary
                    ));
                }
            }
        }
    }
    findings.push(finding("binary", ok, details.join("; "), fix));

    // What this muster would change: trust, and the config itself.
    let manifest = Manifest::load(&request.manifest)?;
    let steps = plan_install(&layout, &manifest)?;
    // Trust in files of its own (Codex's user config for a project, Gemini
    // CLI's trusted folders), and trust entries inside the config itself
    // (Claude Code's approval of the .mcp.json server, Codex's hook hashes in
    // a user install).
    let mut untrusted: Vec<PathBuf> = steps
        .iter()
        .filter(|s| s.role == Role::Trust && s.changes())
        .map(|s| s.path.clone())
        .collect();
    let mut trusted_in: Vec<PathBuf> = layout
        .targets
        .iter()
        .filter(|t| t.role == Role::Trust)
        .map(|t| t.path.clone())
        .collect();
    for target in layout.targets.iter().filter(|t| t.role == Role::Config) {
        let present = trust_entries_present(&target.path, &target.edits);
        if let Some(present) = present {
            if present {
                trusted_in.push(target.path.clone());
            } else {
                untrusted.push(target.path.clone());
            }
        }
    }
    if !trusted_in.is_empty() || !untrusted.is_empty() || layout.trust_problem.is_some() {
        trusted_in.retain(|p| !untrusted.contains(p));
        findings.push(match (&layout.trust_problem, untrusted.is_empty()) {
            (Some(problem), _) => finding("trust", false, problem.clone(), None),
            (None, false) => finding(
                "trust",
                false,
                format!("not written (or stale) in {}", list(&untrusted)),
                Some(format!("run `{reinstall}`")),
            ),
            (None, true) => finding(
                "trust",
                true,
                format!("written in {}", list(&trusted_in)),
                None,
            ),
        });
    }
    let version = env!("CARGO_PKG_VERSION");
    let differ: Vec<PathBuf> = steps
        .iter()
        .filter(|s| s.role == Role::Config && s.changes())
        .map(|s| s.path.clone())
        .collect();
    findings.push(if differ.is_empty() {
        finding(
            "config version",
            true,
            format!("matches what muster {version} writes"),
            None,
        )
    } else {
        finding(
            "config version",
            false,
            format!(
                "differs from what muster {version} writes, in {}",
                list(&differ)
            ),
            Some(format!("run `{reinstall}`")),
        )
    });

    // Which files name a path of this machine.
    let mut team: Vec<(PathBuf, String)> = Vec::new();
    let mut local: Vec<(PathBuf, String)> = Vec::new();
    for f in found.iter() {
        let Some(program) = f.program.as_ref().filter(|p| p.contains('/')) else {
            continue;
        };
        let entry = (f.file.clone(), program.clone());
        let side = if committed(scope, &f.file) {
            &mut team
        } else {
            &mut local
        };
        if !side.contains(&entry) {
            side.push(entry);
        }
    }
    let named = |side: &[(PathBuf, String)]| {
        side.iter()
            .map(|(file, program)| format!("{} names {program}", file.display()))
            .collect::<Vec<_>>()
            .join("; ")
    };
    findings.push(match (team.is_empty(), local.is_empty()) {
        (true, true) => finding(
            "machine path",
            true,
            "none: every file runs `muster` from PATH".into(),
            None,
        ),
        (true, false) => finding(
            "machine path",
            true,
            format!("only in local settings, not committed: {}", named(&local)),
            None,
        ),
        (false, _) => {
            let fix = match request.harness {
                Harness::Claude => format!(
                    "put this muster on PATH as `muster` and run `{reinstall}` (it writes `muster` into the team's \
files); or run `{reinstall}` without it on PATH to move the path into .claude/settings.local.json"
                ),
                _ => format!(
                    "put this muster on PATH as `muster` (e.g. `ln -s {} ~/.local/bin/muster`) and run `{reinstall}`; \
until then do not commit these files",
                    muster.binary
                ),
            };
            finding(
                "machine path",
                false,
                format!(
                    "{}: a path on this machine only, in files a team commits (a teammate's checkout would run a \
path that does not exist for them)",
                    named(&team)
                ),
                Some(fix),
            )
        }
    });

    Ok(Inspection {
        harness: request.harness,
        scope: scope_name(scope),
        dir: scope.dir().to_path_buf(),
        installed,
        findings,
    })
}

fn scope_name(scope: &Scope) -> &'static str {
    match scope {
        Scope::Project(_) => "project",
        Scope::User(_) => "user",
    }
}

/// Whether `path` holds every trust entry among `edits` (None: they hold none):
/// a listed approval (`enabledMcpjsonServers`), Codex's `hooks.state` hashes
/// and `projects.*.trust_level`.
fn trust_entries_present(path: &std::path::Path, edits: &FileEdits) -> Option<bool> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let root = match edits {
        FileEdits::Json(_) => serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        FileEdits::Toml(_) => toml_merge::parse(&text)
            .map(|doc| toml_merge::doc_json(&doc))
            .unwrap_or(Value::Null),
        FileEdits::Whole(_) => return None,
    };
    let at = |path: &[String]| path.iter().try_fold(&root, |here, key| here.get(key));
    let mut checks: Vec<bool> = Vec::new();
    match edits {
        FileEdits::Json(edits) => {
            for edit in edits {
                if let JsonEdit::ListItem { path, item } = edit {
                    let listed = at(path)
                        .and_then(Value::as_array)
                        .is_some_and(|list| list.iter().any(|v| v.as_str() == Some(item)));
                    checks.push(listed);
                }
            }
        }
        FileEdits::Toml(edits) => {
            for edit in edits {
                match edit {
                    TomlEdit::Table { path, entries }
                        if path.starts_with(&["hooks".into(), "state".into()]) =>
                    {
                        let table = at(path);
                        checks.push(
                            entries
                                .iter()
                                .all(|(k, v)| table.and_then(|t| t.get(k)) == Some(v)),
                        );
                    }
                    TomlEdit::Setting { path, value }
                        if path.first().map(String::as_str) == Some("projects") =>
                    {
                        checks.push(at(path) == Some(value));
                    }
                    _ => {}
                }
            }
        }
        FileEdits::Whole(_) => {}
    }
    (!checks.is_empty()).then(|| checks.iter().all(|c| *c))
}
