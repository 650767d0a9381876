//! Claude Code: the MCP server in `.mcp.json` (project) or `~/.claude.json` (user),
//! hooks in `.claude/settings.json` or `~/.claude/settings.json`.

use muster_core::protocol::{Harness, HookEvent};
use serde_json::json;

use super::file_edits::FileEdits;
use super::json_merge::JsonEdit;
use super::{Layout, Muster, Scope, Target};

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

pub fn layout(scope: &Scope, muster: &Muster) -> Layout {
    let server = JsonEdit::Entry {
        path: path(&["mcpServers", "muster"]),
        value: json!({"command": muster.path, "args": ["mcp"]}),
    };
    let mut settings: Vec<JsonEdit> = HOOKS
        .iter()
        .map(|(event, hook)| JsonEdit::Hook {
            event: event.to_string(),
            group: json!({"hooks": [{"type": "command", "command": muster.hook_command(*hook, Harness::Claude), "timeout": 5}]}),
        })
        .collect();
    let (mcp_file, settings_file) = match scope {
        Scope::Project(dir) => {
            // Approves the project's .mcp.json server so Claude Code does not ask.
            settings.push(JsonEdit::ListItem {
                path: path(&["enabledMcpjsonServers"]),
                item: "muster".into(),
            });
            (
                dir.join(".mcp.json"),
                dir.join(".claude").join("settings.json"),
            )
        }
        Scope::User(dirs) => (dirs.claude_json(), dirs.claude_dir().join("settings.json")),
    };
    Layout {
        targets: vec![
            Target {
                path: mcp_file,
                edits: FileEdits::Json(vec![server]),
            },
            Target {
                path: settings_file,
                edits: FileEdits::Json(settings),
            },
        ],
        notes: Vec::new(),
        next_step: "restart Claude Code (or start a new session) to load muster".into(),
    }
}
