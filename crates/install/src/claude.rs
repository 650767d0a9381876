//! Claude Code: the MCP server in `.mcp.json` (project) or `~/.claude.json` (user),
//! hooks in `.claude/settings.json` or `~/.claude/settings.json`.

use muster_core::protocol::{Harness, HookEvent};
use serde_json::json;

use super::file_edits::FileEdits;
use super::json_merge::JsonEdit;
use std::path::PathBuf;

use super::{Layout, Locations, Muster, Scope, Target};

/// Claude Code's hook events and the muster hook each runs.
const HOOKS: [(&str, HookEvent); 6] = [
    ("SessionStart", HookEvent::SessionStart),
    ("UserPromptSubmit", HookEvent::PromptSubmit),
    ("PreToolUse", HookEvent::PreToolUse),
    // Mail that arrives during a turn reaches the model after the next tool result.
    ("PostToolUse", HookEvent::PostToolUse),
    ("Stop", HookEvent::Stop),
    ("SessionEnd", HookEvent::SessionEnd),
];

fn path(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

pub fn layout(scope: &Scope, locations: &Locations, muster: &Muster) -> Layout {
    let server_value = json!({"command": muster.path, "args": ["mcp"]});
    let hooks: Vec<JsonEdit> = HOOKS
        .iter()
        .map(|(event, hook)| JsonEdit::Hook {
            event: event.to_string(),
            group: json!({"hooks": [{"type": "command", "command": muster.hook_command(*hook, Harness::Claude), "timeout": 5}]}),
        })
        .collect();
    let next_step = "restart Claude Code (or start a new session) to load muster";
    let dirs = match scope {
        Scope::User(dirs) => {
            let server = JsonEdit::Entry {
                path: path(&["mcpServers", "muster"]),
                value: server_value,
            };
            return Layout::new(
                vec![
                    Target::config(dirs.claude_json(), FileEdits::Json(vec![server])),
                    Target::config(
                        dirs.claude_dir().join("settings.json"),
                        FileEdits::Json(hooks),
                    ),
                ],
                Vec::new(),
                next_step,
            );
        }
        Scope::Project(dir) => dir,
    };
    // The team's files: `.mcp.json` and `.claude/settings.json`, with the
    // server approved so Claude Code does not ask.
    let mut team_settings = hooks.clone();
    team_settings.push(JsonEdit::ListItem {
        path: path(&["enabledMcpjsonServers"]),
        item: "muster".into(),
    });
    let team = |value: serde_json::Value| {
        vec![
            Target::config(
                dirs.join(".mcp.json"),
                FileEdits::Json(vec![JsonEdit::Entry {
                    path: path(&["mcpServers", "muster"]),
                    value,
                }]),
            ),
            Target::config(
                dirs.join(".claude").join("settings.json"),
                FileEdits::Json(team_settings.clone()),
            ),
        ]
    };
    // Local settings, never committed: the hooks in `.claude/settings.local.json`,
    // the server in Claude Code's own state for this project only (local scope,
    // as `claude mcp add --scope local` writes it).
    let local = |claude_json: PathBuf, value: serde_json::Value| {
        vec![
            Target::config(
                dirs.join(".claude").join("settings.local.json"),
                FileEdits::Json(hooks.clone()),
            ),
            Target::config(
                claude_json,
                FileEdits::Json(vec![JsonEdit::Entry {
                    path: vec![
                        "projects".into(),
                        dirs.display().to_string(),
                        "mcpServers".into(),
                        "muster".into(),
                    ],
                    value,
                }]),
            ),
        ]
    };
    match (muster.portable, locations.claude_json()) {
        (true, claude_json) => {
            let mut layout = Layout::new(team(server_value.clone()), Vec::new(), next_step);
            if let Some(claude_json) = claude_json {
                layout.stale = local(claude_json, server_value)
                    .into_iter()
                    .map(|t| {
                        (
                            t,
                            "muster's entries taken out: the team's files name `muster` now"
                                .to_string(),
                        )
                    })
                    .collect();
            }
            layout
        }
        (false, Some(claude_json)) => {
            let note = format!(
                "{}, so this binary's path went only into local settings, which a team does not commit: the hooks \
into {} and the MCP server into {} (for {} only). To write `muster` by name into .mcp.json and .claude/settings.json \
instead, put this binary on PATH as `muster` and run `muster install claude --project` again",
                muster.on_path.why_not(&muster.binary),
                dirs.join(".claude").join("settings.local.json").display(),
                claude_json.display(),
                dirs.display(),
            );
            let mut layout = Layout::new(
                local(claude_json, server_value.clone()),
                vec![note],
                next_step,
            );
            layout.stale = team(server_value)
                .into_iter()
                .map(|t| {
                    (
                        t,
                        "muster's entries taken out: local settings hold them now".to_string(),
                    )
                })
                .collect();
            layout
        }
        // Without a home, there is no local place for the server: the team's files
        // name the path, and `layout_of` says so.
        (false, None) => Layout::new(team(server_value), Vec::new(), next_step),
    }
}
