//! Gemini CLI: the MCP server and hooks in `.gemini/settings.json` (project) or
//! `~/.gemini/settings.json` (user).
//!
//! Gemini CLI ignores a project's settings in a folder the user has not
//! trusted (and `gemini -p` refuses to run there at all), so a project install
//! also trusts the project in `~/.gemini/trustedFolders.json`, under a key of
//! muster's own (the path with a trailing `/`, which Gemini resolves to the
//! same folder) so that uninstall never takes back a trust the user gave.

use std::path::Path;

use muster_core::protocol::{Harness, HookEvent};
use serde_json::{json, Value};

use super::file_edits::FileEdits;
use super::json_merge::JsonEdit;
use super::{Layout, Locations, Muster, Scope, Target};

/// Gemini CLI's hook events and the muster hook each runs.
const HOOKS: [(&str, HookEvent); 6] = [
    ("SessionStart", HookEvent::SessionStart),
    ("BeforeAgent", HookEvent::PromptSubmit),
    ("BeforeTool", HookEvent::PreToolUse),
    // Mail that arrives during a turn reaches the model after the next tool result.
    ("AfterTool", HookEvent::PostToolUse),
    ("AfterAgent", HookEvent::Stop),
    ("SessionEnd", HookEvent::SessionEnd),
];

pub fn layout(scope: &Scope, locations: &Locations, muster: &Muster) -> Layout {
    let settings = match scope {
        Scope::Project(dir) => dir.join(".gemini").join("settings.json"),
        Scope::User(dirs) => dirs.home.join(".gemini").join("settings.json"),
    };
    let mut edits = vec![JsonEdit::Entry {
        path: vec!["mcpServers".into(), "muster".into()],
        value: json!({
            "command": muster.path,
            "args": ["mcp"],
            "trust": true,
            "env": {"MUSTER_HARNESS": "gemini", "MUSTER_CHANNELS": "off"},
        }),
    }];
    edits.extend(HOOKS.iter().map(|(event, hook)| JsonEdit::Hook {
        event: event.to_string(),
        group: json!({"matcher": "", "hooks": [{
            "name": format!("muster-{hook}"),
            "type": "command",
            "command": muster.hook_command(*hook, Harness::Gemini),
            // Gemini CLI counts hook timeouts in milliseconds.
            "timeout": 5000,
        }]}),
    }));
    let mut targets = vec![Target::config(settings, FileEdits::Json(edits))];
    let mut notes = Vec::new();
    let mut problem = None;
    if let Scope::User(_) = scope {
        notes.push(
            "Gemini CLI runs only in folders you trust (it asks on the first start in each; `gemini -p` exits 55 \
in one you have not trusted)"
                .to_string(),
        );
    }
    if let Scope::Project(project) = scope {
        notes.push(
            "Gemini CLI warns once before running a project's hooks; that is expected".to_string(),
        );
        match locations.gemini_trusted_folders() {
            None => {
                let text = format!(
                    "cannot tell where Gemini CLI keeps trusted folders (set HOME): trust {} in Gemini CLI when it \
asks, or it ignores the project's settings",
                    project.display()
                );
                notes.push(text.clone());
                problem = Some(text);
            }
            Some(file) => match folder_trust(&file, project) {
                Some(true) => {}
                Some(false) => {
                    let text = format!(
                        "{} is marked untrusted in {}, so Gemini CLI ignores its settings (muster's server and \
hooks): trust it in Gemini CLI (/permissions) to use muster there",
                        project.display(),
                        file.display()
                    );
                    notes.push(text.clone());
                    problem = Some(text);
                }
                None => {
                    notes.push(format!(
                        "{} is marked trusted in {} so Gemini CLI reads its settings; --uninstall takes this back",
                        project.display(),
                        file.display()
                    ));
                    targets.push(Target::trust(
                        file,
                        FileEdits::Json(vec![JsonEdit::Entry {
                            path: vec![muster_key(project)],
                            value: json!("TRUST_FOLDER"),
                        }]),
                    ));
                }
            },
        }
    }
    let mut layout = Layout::new(targets, notes, "restart Gemini CLI to load muster");
    layout.trust_problem = problem;
    layout
}

/// The key muster trusts `project` under: its path with a trailing `/`.
fn muster_key(project: &Path) -> String {
    format!("{}/", project.display().to_string().trim_end_matches('/'))
}

/// How the user's own rules in `file` decide `project` (muster's key left out,
/// so the answer is the same before install and after): trusted, untrusted, or
/// not at all. Like Gemini CLI, the longest matching rule wins, and
/// `TRUST_PARENT` trusts the folder the rule names the parent of.
fn folder_trust(file: &Path, project: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(file).ok()?;
    let rules: Value = serde_json::from_str(&text).ok()?;
    let ours = muster_key(project);
    let mut best: Option<(usize, bool)> = None;
    for (rule, level) in rules.as_object()? {
        let trusted = match level.as_str() {
            Some("TRUST_FOLDER" | "TRUST_PARENT") => true,
            Some("DO_NOT_TRUST") => false,
            _ => continue,
        };
        if *rule == ours {
            continue;
        }
        let named = Path::new(rule);
        let folder = if level.as_str() == Some("TRUST_PARENT") {
            named.parent().unwrap_or(named)
        } else {
            named
        };
        let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
        if project.starts_with(&folder) && best.is_none_or(|(len, _)| rule.len() > len) {
            best = Some((rule.len(), trusted));
        }
    }
    best.map(|(_, trusted)| trusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_trust_follows_the_longest_user_rule_and_ignores_musters() {
        // Proves the user's rules decide (longest match, TRUST_PARENT covering children) and muster's own key never counts.
        let dir = std::env::temp_dir().join(format!("muster-gemini-trust-{}", std::process::id()));
        let file = dir.join("trustedFolders.json");
        std::fs::create_dir_all(&dir).unwrap();
        let project = Path::new("/srv/work/app");
        let check = |rules: Value| {
            std::fs::write(&file, rules.to_string()).unwrap();
            folder_trust(&file, project)
        };
        assert_eq!(check(json!({})), None);
        assert_eq!(
            check(json!({"/srv/work/app/": "TRUST_FOLDER"})),
            None,
            "muster's own key"
        );
        assert_eq!(check(json!({"/srv/work": "TRUST_FOLDER"})), Some(true));
        assert_eq!(check(json!({"/srv/work/x": "TRUST_PARENT"})), Some(true));
        assert_eq!(
            check(json!({"/srv/work": "TRUST_FOLDER", "/srv/work/app": "DO_NOT_TRUST"})),
            Some(false)
        );
        assert_eq!(check(json!({"/srv/other": "TRUST_FOLDER"})), None);
        assert_eq!(muster_key(project), "/srv/work/app/");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
