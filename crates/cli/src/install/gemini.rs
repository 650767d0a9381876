//! Gemini CLI: the MCP server and hooks in `.gemini/settings.json` (project) or
//! `~/.gemini/settings.json` (user).

use serde_json::json;

use super::edit::FileEdits;
use super::json_merge::JsonEdit;
use super::{Layout, Muster, Scope, Target};

/// Gemini CLI's hook events and the muster hook each runs.
const HOOKS: [(&str, &str); 5] = [
    ("SessionStart", "session-start"),
    ("BeforeAgent", "prompt-submit"),
    ("BeforeTool", "pre-tool-use"),
    ("AfterAgent", "stop"),
    ("SessionEnd", "session-end"),
];

pub fn layout(scope: &Scope, muster: &Muster) -> Layout {
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
            "command": muster.hook_command(hook, "gemini"),
            // Gemini CLI counts hook timeouts in milliseconds.
            "timeout": 5000,
        }]}),
    }));
    let mut notes = Vec::new();
    if matches!(scope, Scope::Project(_)) {
        notes.push("Gemini CLI warns once before running a project's hooks; that is expected".to_string());
    }
    Layout {
        targets: vec![Target {
            path: settings,
            edits: FileEdits::Json(edits),
        }],
        notes,
        next_step: "restart Gemini CLI to load muster".into(),
    }
}
