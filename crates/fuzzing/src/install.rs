//! The installer's merges into a harness's settings (`muster_install`'s
//! `FileEdits` over `json_merge` and `toml_merge`): the file's text as the
//! user left it, with muster's real entries (Claude Code's and Codex's,
//! as the installer writes them) installed and taken out again.

use muster_install::file_edits::FileEdits;
use muster_install::json_merge::{is_muster_command, JsonEdit};
use muster_install::toml_merge::{self, TomlEdit};
use serde_json::{json, Map, Value};

const MUSTER: &str = "/usr/local/bin/muster";

fn path(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// What `muster install claude` puts in a project's `.claude/settings.json`
/// and `.mcp.json`, in one file (the merges are per entry).
fn claude_edits() -> Vec<JsonEdit> {
    let events = [
        ("SessionStart", "session-start"),
        ("UserPromptSubmit", "prompt-submit"),
        ("PreToolUse", "pre-tool-use"),
        ("PostToolUse", "post-tool-use"),
        ("Stop", "stop"),
        ("SessionEnd", "session-end"),
    ];
    let mut edits: Vec<JsonEdit> = events
        .iter()
        .map(|(event, hook)| JsonEdit::Hook {
            event: event.to_string(),
            group: json!({"hooks": [{"type": "command",
                "command": format!("{MUSTER} hook {hook} --harness claude"), "timeout": 5}]}),
        })
        .collect();
    edits.push(JsonEdit::ListItem {
        path: path(&["enabledMcpjsonServers"]),
        item: "muster".into(),
    });
    edits.push(JsonEdit::Entry {
        path: path(&["mcpServers", "muster"]),
        value: json!({"command": MUSTER, "args": ["mcp"]}),
    });
    edits
}

/// What `muster install codex` puts in `.codex/config.toml`.
fn codex_edits() -> Vec<TomlEdit> {
    vec![
        TomlEdit::Table {
            path: path(&["mcp_servers", "muster"]),
            entries: vec![
                ("command".into(), json!(MUSTER)),
                ("args".into(), json!(["mcp"])),
                (
                    "env".into(),
                    json!({"MUSTER_HARNESS": "codex", "MUSTER_CHANNELS": "off"}),
                ),
                ("default_tools_approval_mode".into(), json!("approve")),
            ],
        },
        TomlEdit::Setting {
            path: path(&["features", "hooks"]),
            value: json!(true),
        },
    ]
}

/// The top-level keys muster writes into, and the tables under which it
/// owns one key (`mcpServers.muster`).
const JSON_OWNED: &[&str] = &["hooks", "enabledMcpjsonServers", "mcpServers"];
const TOML_OWNED: &[&str] = &["mcp_servers", "features"];

/// Any text as a JSON settings file: installing twice equals installing
/// once; the user's other keys (and other MCP servers) survive install and
/// uninstall; uninstall leaves valid JSON with none of muster's hooks.
pub fn json_merge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let edits = FileEdits::Json(claude_edits());
    let Ok((installed, undo)) = edits.install(Some(text)) else {
        return;
    };
    let (again, _) = edits
        .install(Some(&installed))
        .expect("installed file reparses");
    assert_eq!(again, installed, "a second install changed the file");
    let before = json_root(text);
    let after = json_root(&installed);
    keeps_users_keys(&before, &after, JSON_OWNED, "mcpServers", "muster");
    let removed = edits
        .uninstall(&installed, &undo, false)
        .expect("installed file reparses")
        .expect("a file muster did not create stays");
    let removed = json_root(&removed);
    keeps_users_keys(&before, &removed, JSON_OWNED, "mcpServers", "muster");
    assert!(
        removed
            .get("mcpServers")
            .and_then(|m| m.get("muster"))
            .is_none(),
        "uninstall left mcpServers.muster"
    );
    assert!(!has_muster_hook(&removed), "uninstall left a muster hook");
}

/// The top-level object of a JSON file muster parsed (empty text: empty).
fn json_root(text: &str) -> Map<String, Value> {
    if text.trim().is_empty() {
        return Map::new();
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        other => panic!("not a JSON object after muster parsed it: {other:?}"),
    }
}

fn has_muster_hook(root: &Map<String, Value>) -> bool {
    let Some(Value::Object(events)) = root.get("hooks") else {
        return false;
    };
    events
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|group| group.get("hooks").and_then(Value::as_array))
        .flatten()
        .filter_map(|hook| hook.get("command").and_then(Value::as_str))
        .any(is_muster_command)
}

/// Every top-level key muster does not own is as it was, and so is every
/// key of `table` but `ours`.
fn keeps_users_keys(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    owned: &[&str],
    table: &str,
    ours: &str,
) {
    for (key, value) in before {
        if !owned.contains(&key.as_str()) {
            assert_eq!(after.get(key), Some(value), "the user's {key:?} changed");
        }
    }
    let (Some(Value::Object(was)), Some(Value::Object(now))) =
        (before.get(table), after.get(table))
    else {
        return;
    };
    for (key, value) in was.iter().filter(|(k, _)| *k != ours) {
        assert_eq!(
            now.get(key),
            Some(value),
            "the user's {table}.{key} changed"
        );
    }
}

/// Any text as Codex's `config.toml`: installing twice equals installing
/// once; the user's other keys (and other MCP servers) survive install and
/// uninstall; uninstall leaves valid TOML without muster's server.
pub fn toml_merge(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let edits = FileEdits::Toml(codex_edits());
    let Ok((installed, undo)) = edits.install(Some(text)) else {
        return;
    };
    let (again, _) = edits
        .install(Some(&installed))
        .expect("installed file reparses");
    assert_eq!(again, installed, "a second install changed the file");
    let before = toml_root(text);
    let after = toml_root(&installed);
    keeps_users_keys(&before, &after, TOML_OWNED, "mcp_servers", "muster");
    let Some(removed) = edits
        .uninstall(&installed, &undo, false)
        .expect("installed file reparses")
    else {
        return;
    };
    let removed = toml_root(&removed);
    keeps_users_keys(&before, &removed, TOML_OWNED, "mcp_servers", "muster");
    assert!(
        removed
            .get("mcp_servers")
            .and_then(|m| m.get("muster"))
            .is_none(),
        "uninstall left mcp_servers.muster"
    );
}

/// A TOML file as muster's installer sees it (as JSON).
fn toml_root(text: &str) -> Map<String, Value> {
    let doc = toml_merge::parse(text).expect("muster parsed it before");
    match toml_merge::doc_json(&doc) {
        Value::Object(map) => map,
        other => panic!("a TOML document is not a table: {other:?}"),
    }
}
