//! Codex CLI: the MCP server and the hooks feature in `config.toml`, hooks in
//! `hooks.json`; both in `$CODEX_HOME` (user) or `<project>/.codex/`.

use serde_json::json;

use super::edit::FileEdits;
use super::json_merge::JsonEdit;
use super::toml_merge::TomlEdit;
use super::{Layout, Muster, Scope, Target};

/// Codex's hook events, the muster hook each runs, and its matcher.
const HOOKS: [(&str, &str, Option<&str>); 5] = [
    ("SessionStart", "session-start", Some("startup|resume")),
    ("UserPromptSubmit", "prompt-submit", None),
    ("PreToolUse", "pre-tool-use", None),
    ("PostToolUse", "post-tool-use", None),
    ("Stop", "stop", None),
];

pub fn layout(scope: &Scope, muster: &Muster) -> Layout {
    let dir = match scope {
        Scope::Project(dir) => dir.join(".codex"),
        Scope::User(dirs) => dirs.codex_home(),
    };
    let config = vec![
        TomlEdit::Table {
            path: vec!["mcp_servers".into(), "muster".into()],
            entries: vec![
                ("command".into(), json!(muster.path)),
                ("args".into(), json!(["mcp"])),
                // Codex scrubs the server's environment and shows no channel pushes.
                (
                    "env".into(),
                    json!({"MUSTER_HARNESS": "codex", "MUSTER_CHANNELS": "off"}),
                ),
            ],
        },
        TomlEdit::Setting {
            path: vec!["features".into(), "codex_hooks".into()],
            value: json!(true),
        },
    ];
    let hooks = HOOKS
        .iter()
        .map(|(event, hook, matcher)| {
            let inner = json!([{"type": "command", "command": muster.hook_command(hook, "codex"), "timeout": 5}]);
            JsonEdit::Hook {
                event: event.to_string(),
                group: match matcher {
                    Some(m) => json!({"matcher": m, "hooks": inner}),
                    None => json!({"hooks": inner}),
                },
            }
        })
        .collect();
    let mut notes = vec![
        "Codex skips hooks it does not trust, silently: trust muster's hooks in Codex when it asks, \
or run `codex exec --dangerously-bypass-hook-trust`"
            .to_string(),
    ];
    if let Scope::Project(project) = scope {
        notes.push(format!(
            "Codex reads a project's .codex/ only in a trusted project: trust {} in Codex (or `codex exec --trust`)",
            project.display()
        ));
    }
    Layout {
        targets: vec![
            Target {
                path: dir.join("config.toml"),
                edits: FileEdits::Toml(config),
            },
            Target {
                path: dir.join("hooks.json"),
                edits: FileEdits::Json(hooks),
            },
        ],
        notes,
        next_step: "start a new Codex session to load muster".into(),
    }
}
