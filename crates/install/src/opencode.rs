//! opencode: the MCP server in `opencode.json` and muster's plugin (which reports
//! turns to the daemon and names the session in tool calls) in `plugins/muster.js`.

use serde_json::json;

use super::file_edits::FileEdits;
use super::json_merge::JsonEdit;
use super::{Layout, Muster, Scope, Target};

/// The plugin, shipped inside the muster binary.
pub const PLUGIN: &str = include_str!("../assets/opencode-plugin.js");

pub fn layout(scope: &Scope, muster: &Muster) -> Layout {
    let (config, plugin) = match scope {
        Scope::Project(dir) => (
            dir.join("opencode.json"),
            dir.join(".opencode").join("plugins").join("muster.js"),
        ),
        Scope::User(dirs) => {
            let base = dirs.config_home().join("opencode");
            (
                base.join("opencode.json"),
                base.join("plugins").join("muster.js"),
            )
        }
    };
    let server = JsonEdit::Entry {
        path: vec!["mcp".into(), "muster".into()],
        value: json!({
            "type": "local",
            "command": [muster.path, "mcp"],
            "enabled": true,
            "environment": {"MUSTER_HARNESS": "opencode", "MUSTER_CHANNELS": "off"},
        }),
    };
    Layout::new(
        vec![
            Target::config(config, FileEdits::Json(vec![server])),
            Target::config(plugin, FileEdits::Whole(PLUGIN.to_string())),
        ],
        Vec::new(),
        "restart opencode to load muster",
    )
}
