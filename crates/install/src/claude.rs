//! Claude Code: the MCP server in `.mcp.json` (project) or `~/.claude.json` (user),
//! hooks in `.claude/settings.json` or `~/.claude/settings.json`.
//!
//! The hooks are command hooks (`muster hook <event>`) or, with
//! [`Hooks::Http`], Claude Code's own `type: "http"` hooks posting straight
//! to the daemon. The repository's Claude Code plugin (`plugins/muster/`)
//! carries the same hooks and server as a project install that names
//! `muster` on PATH ([`plugin_files`]; a test checks the two agree).

use muster_core::protocol::{Harness, HookEvent};
use serde_json::{json, Value};

use super::file_edits::FileEdits;
use super::json_merge::JsonEdit;
use std::path::PathBuf;

use super::{Hooks, Layout, Locations, Muster, OnPath, Scope, Target};

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

/// How long Claude Code waits for a command hook (`muster hook` itself
/// gives up after 2 s, so this is never reached).
const COMMAND_TIMEOUT_S: u64 = 5;
/// How long Claude Code waits for an http hook: the same 2 s a command
/// hook holds the harness at most.
const HTTP_TIMEOUT_S: u64 = 2;

/// The variables an http hook's headers take from Claude Code's
/// environment: the token, and what `muster run` sets so the session can
/// be woken (the daemon ignores an empty header).
pub const HTTP_ENV_VARS: [&str; 3] = ["MUSTER_TOKEN", "MUSTER_RUN_ID", "MUSTER_WAKE"];

fn path(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// The MCP server entry.
fn server(muster: &Muster) -> Value {
    json!({"command": muster.path, "args": ["mcp"]})
}

/// A command hook group running `muster hook <event>`.
fn command_group(muster: &Muster, hook: HookEvent) -> Value {
    json!({"hooks": [{
        "type": "command",
        "command": muster.hook_command(hook, Harness::Claude),
        "timeout": COMMAND_TIMEOUT_S,
    }]})
}

/// The daemon's hook route for `hook`, as an http hook posts to it.
pub fn hook_url(daemon: &str, hook: HookEvent) -> String {
    format!(
        "{}/hook/{}?harness={}",
        daemon.trim_end_matches('/'),
        hook.as_str(),
        Harness::Claude.as_str()
    )
}

/// An http hook group posting to the daemon at `daemon`.
fn http_group(daemon: &str, hook: HookEvent) -> Value {
    json!({"hooks": [{
        "type": "http",
        "url": hook_url(daemon, hook),
        "headers": {
            "Authorization": "Bearer ${MUSTER_TOKEN}",
            "X-Muster-Run": "${MUSTER_RUN_ID}",
            "X-Muster-Wake": "${MUSTER_WAKE}",
        },
        "allowedEnvVars": HTTP_ENV_VARS,
        "timeout": HTTP_TIMEOUT_S,
    }]})
}

/// Each event's hook group. Claude Code runs no http hook at
/// SessionStart, so that one stays a command hook either way (one
/// process per session, not per tool call).
fn hook_groups(muster: &Muster) -> Vec<(&'static str, Value)> {
    HOOKS
        .iter()
        .map(|(event, hook)| {
            let group = match &muster.hooks {
                Hooks::Http { url } if *hook != HookEvent::SessionStart => http_group(url, *hook),
                _ => command_group(muster, *hook),
            };
            (*event, group)
        })
        .collect()
}

/// The files of the repository's Claude Code plugin that carry muster's
/// hooks and server (paths relative to the plugin's folder), as this
/// installer writes them for a project whose `muster` is on PATH.
pub fn plugin_files() -> Vec<(&'static str, Value)> {
    let muster = Muster {
        path: "muster".into(),
        binary: "muster".into(),
        portable: true,
        on_path: OnPath::Same,
        hooks: Hooks::Command,
    };
    let hooks: serde_json::Map<String, Value> = hook_groups(&muster)
        .into_iter()
        .map(|(event, group)| (event.to_string(), json!([group])))
        .collect();
    vec![
        (
            "hooks/hooks.json",
            json!({
                "description": "muster's hooks, as `muster install claude` writes them: the session joins the roster and gets its mail at each turn, after each tool call and before a turn ends",
                "hooks": hooks,
            }),
        ),
        (
            ".mcp.json",
            json!({"mcpServers": {"muster": server(&muster)}}),
        ),
    ]
}

pub fn layout(scope: &Scope, locations: &Locations, muster: &Muster) -> Layout {
    let server_value = server(muster);
    let hooks: Vec<JsonEdit> = hook_groups(muster)
        .into_iter()
        .map(|(event, group)| JsonEdit::Hook {
            event: event.to_string(),
            group,
        })
        .collect();
    let next_step = match muster.hooks {
        Hooks::Command => "restart Claude Code (or start a new session) to load muster",
        Hooks::Http { .. } => {
            "restart Claude Code (or start a new session) to load muster, with MUSTER_TOKEN in its environment"
        }
    };
    let http_note = |file: &std::path::Path| {
        match &muster.hooks {
        Hooks::Command => None,
        Hooks::Http { url } => Some(format!(
            "the hooks in {} post to {url} (SessionStart stays a command hook: Claude Code runs no http hook \
there) and send `Authorization: Bearer $MUSTER_TOKEN` from Claude Code's environment: start Claude Code where \
MUSTER_TOKEN is exported, or the daemon refuses them",
            file.display()
        )),
    }
    };
    let dirs = match scope {
        Scope::User(dirs) => {
            let server = JsonEdit::Entry {
                path: path(&["mcpServers", "muster"]),
                value: server_value,
            };
            let settings = dirs.claude_dir().join("settings.json");
            let notes = http_note(&settings).into_iter().collect();
            return Layout::new(
                vec![
                    Target::config(dirs.claude_json(), FileEdits::Json(vec![server])),
                    Target::config(settings, FileEdits::Json(hooks)),
                ],
                notes,
                next_step,
            );
        }
        Scope::Project(dir) => dir,
    };
    let local_settings = dirs.join(".claude").join("settings.local.json");
    let team_settings_path = dirs.join(".claude").join("settings.json");
    let approve = JsonEdit::ListItem {
        path: path(&["enabledMcpjsonServers"]),
        item: "muster".into(),
    };
    // Http hooks name this daemon's address and need the person's own
    // token: they are never the team's, so they go into local settings
    // (never committed) and the team's settings lose muster's hooks.
    let http = matches!(muster.hooks, Hooks::Http { .. });
    // The team's files: `.mcp.json` and `.claude/settings.json`, with the
    // server approved so Claude Code does not ask.
    let mut team_settings = if http {
        vec![JsonEdit::DropHooks]
    } else {
        hooks.clone()
    };
    team_settings.push(approve);
    let mcp_json = |value: Value| {
        Target::config(
            dirs.join(".mcp.json"),
            FileEdits::Json(vec![JsonEdit::Entry {
                path: path(&["mcpServers", "muster"]),
                value,
            }]),
        )
    };
    let team = |value: Value| {
        vec![
            mcp_json(value),
            Target::config(
                team_settings_path.clone(),
                FileEdits::Json(team_settings.clone()),
            ),
        ]
    };
    // Local settings, never committed: the hooks in `.claude/settings.local.json`,
    // the server in Claude Code's own state for this project only (local scope,
    // as `claude mcp add --scope local` writes it).
    let local_hooks = || Target::config(local_settings.clone(), FileEdits::Json(hooks.clone()));
    let local_server = |claude_json: PathBuf, value: Value| {
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
        )
    };
    let local =
        |claude_json: PathBuf, value: Value| vec![local_hooks(), local_server(claude_json, value)];
    let hook_file = if http {
        &local_settings
    } else {
        &team_settings_path
    };
    let mut layout = match (muster.portable, locations.claude_json()) {
        (true, claude_json) if http => {
            // The server stays the team's; the hooks are this person's.
            let mut targets = team(server_value.clone());
            targets.push(local_hooks());
            let mut layout = Layout::new(targets, Vec::new(), next_step);
            if let Some(claude_json) = claude_json {
                layout.stale = vec![(
                    local_server(claude_json, server_value),
                    "muster's entries taken out: the team's .mcp.json names `muster` now"
                        .to_string(),
                )];
            }
            layout
        }
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
                local_settings.display(),
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
        (false, None) if http => {
            let mut targets = team(server_value);
            targets.push(local_hooks());
            Layout::new(targets, Vec::new(), next_step)
        }
        (false, None) => Layout::new(team(server_value), Vec::new(), next_step),
    };
    layout.notes.extend(http_note(hook_file));
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's plugin folder.
    fn plugin_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/muster")
    }

    fn read_json(path: &std::path::Path) -> Value {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
    }

    #[test]
    fn the_plugin_carries_what_install_writes() {
        // Proves plugins/muster's hooks and MCP server are, entry for entry, what `muster install claude` writes
        // for a project with muster on PATH, so the plugin and the installer cannot drift apart.
        for (file, expected) in plugin_files() {
            let path = plugin_dir().join(file);
            let found = path.exists().then(|| read_json(&path));
            assert_eq!(
                found.as_ref(),
                Some(&expected),
                "plugins/muster/{file} differs from what the installer writes; make it:\n{}",
                serde_json::to_string_pretty(&expected).unwrap()
            );
        }
    }

    #[test]
    fn the_plugin_and_its_marketplace_name_this_version() {
        // Proves the plugin's manifest carries muster's version (Claude Code caches a plugin by it) and the
        // repository's marketplace lists it from its folder.
        let manifest = read_json(&plugin_dir().join(".claude-plugin/plugin.json"));
        assert_eq!(manifest["name"], "muster");
        assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"), "{manifest}");
        let market = read_json(&plugin_dir().join("../../.claude-plugin/marketplace.json"));
        let entry = market["plugins"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "muster"))
            .unwrap_or_else(|| panic!("the marketplace lists no muster plugin: {market}"));
        assert_eq!(entry["source"], "./plugins/muster", "{entry}");
    }

    #[test]
    fn http_hooks_post_to_the_daemon_but_session_start_stays_a_command() {
        // Proves http mode writes `type: "http"` hooks naming the daemon's hook route and taking the token from
        // the environment by name, except SessionStart, which Claude Code runs only as a command.
        let muster = Muster {
            hooks: Hooks::Http {
                url: "http://127.0.0.1:7420/".into(),
            },
            ..Muster::at("/bin/muster")
        };
        let groups = hook_groups(&muster);
        assert_eq!(groups.len(), 6);
        for (event, group) in &groups {
            let hook = &group["hooks"][0];
            if *event == "SessionStart" {
                assert_eq!(hook["type"], "command", "{hook}");
                assert_eq!(
                    hook["command"],
                    "/bin/muster hook session-start --harness claude"
                );
                continue;
            }
            assert_eq!(hook["type"], "http", "{hook}");
            let url = hook["url"].as_str().unwrap();
            assert!(
                url.starts_with("http://127.0.0.1:7420/hook/") && url.ends_with("?harness=claude"),
                "{url}"
            );
            assert!(super::super::json_merge::is_muster_url(url), "{url}");
            assert_eq!(hook["headers"]["Authorization"], "Bearer ${MUSTER_TOKEN}");
            assert_eq!(hook["allowedEnvVars"][0], "MUSTER_TOKEN");
        }
        assert_eq!(
            groups[3].1["hooks"][0]["url"],
            "http://127.0.0.1:7420/hook/post-tool-use?harness=claude"
        );
    }
}
