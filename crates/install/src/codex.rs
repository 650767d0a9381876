//! Codex CLI: the MCP server and the hooks feature in `config.toml`, hooks in
//! `hooks.json`; both in `$CODEX_HOME` (user) or `<project>/.codex/`.
//!
//! Codex runs a hook only if the user's own `config.toml` holds its hash
//! (`[hooks.state."<hooks.json>:<event>:<group>:<handler>"] trusted_hash`), and
//! reads a project's `.codex/` only in a trusted project (`[projects."<dir>"]
//! trust_level = "trusted"`); anything else is skipped without a word. So install
//! also writes those entries into `$CODEX_HOME/config.toml`, for muster's own hooks
//! and the project it was asked to set up, and uninstall takes them back.

use std::path::{Path, PathBuf};

use muster_core::protocol::{Harness, HookEvent};
use serde_json::{json, Value};

use super::file_edits::FileEdits;
use super::json_merge::JsonEdit;
use super::toml_merge::TomlEdit;
use super::{files, Layout, Locations, Muster, Scope, Target};

/// Codex's hook events, the muster hook each runs, its matcher, and Codex's
/// name for the event in hook trust keys.
const HOOKS: [(&str, HookEvent, Option<&str>, &str); 5] = [
    (
        "SessionStart",
        HookEvent::SessionStart,
        Some("startup|resume"),
        "session_start",
    ),
    (
        "UserPromptSubmit",
        HookEvent::PromptSubmit,
        None,
        "user_prompt_submit",
    ),
    ("PreToolUse", HookEvent::PreToolUse, None, "pre_tool_use"),
    ("PostToolUse", HookEvent::PostToolUse, None, "post_tool_use"),
    ("Stop", HookEvent::Stop, None, "stop"),
];

/// Seconds Codex gives each muster hook.
const HOOK_TIMEOUT: u64 = 5;

/// Variables Codex passes to muster's MCP server: Codex starts servers with a
/// scrubbed environment, and the shim needs these to find the daemon (and
/// a team daemon's token: by name, or by the file that holds it, never the
/// secret itself in Codex's config).
const SERVER_ENV_VARS: [&str; 5] = [
    "MUSTER_URL",
    "MUSTER_TOKEN",
    "MUSTER_TOKEN_FILE",
    "MUSTER_OPERATOR",
    "XDG_CONFIG_HOME",
];

pub fn layout(scope: &Scope, locations: &Locations, muster: &Muster) -> Layout {
    let (dir, user_home) = match scope {
        Scope::Project(dir) => (dir.join(".codex"), locations.codex_home()),
        Scope::User(dirs) => (dirs.codex_home(), Some(dirs.codex_home())),
    };
    let mut config = server_edits(muster);
    let hooks = hook_edits(muster);
    let hooks_path = dir.join("hooks.json");
    let user_config = user_home.as_ref().map(|home| home.join("config.toml"));
    let (mut user_edits, notes, trust_problem) =
        trust(scope, user_config.as_deref(), &hooks_path, &hooks, muster);

    let mut targets = Vec::new();
    let config_path = dir.join("config.toml");
    if user_config.as_ref() == Some(&config_path) {
        // User scope: one file holds the server, the feature and the trust.
        config.append(&mut user_edits);
    }
    targets.push(Target::config(config_path, FileEdits::Toml(config)));
    targets.push(Target::config(hooks_path, FileEdits::Json(hooks)));
    if let (Some(user_config), false) = (user_config, user_edits.is_empty()) {
        targets.push(Target::trust(user_config, FileEdits::Toml(user_edits)));
    }
    let mut layout = Layout::new(targets, notes, "start a new Codex session to load muster");
    layout.trust_problem = trust_problem;
    layout
}

/// The server entry and the hooks feature, for `.codex/config.toml`.
fn server_edits(muster: &Muster) -> Vec<TomlEdit> {
    vec![
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
                ("env_vars".into(), json!(SERVER_ENV_VARS)),
                // `codex exec` refuses tool calls that need approval; muster's only coordinate.
                ("default_tools_approval_mode".into(), json!("approve")),
            ],
        },
        TomlEdit::Setting {
            path: vec!["features".into(), "hooks".into()],
            value: json!(true),
        },
    ]
}

/// One hook group per event, for `.codex/hooks.json`.
fn hook_edits(muster: &Muster) -> Vec<JsonEdit> {
    HOOKS
        .iter()
        .map(|(event, hook, matcher, _)| {
            let inner =
                json!([{"type": "command", "command": muster.hook_command(*hook, Harness::Codex), "timeout": HOOK_TIMEOUT}]);
            JsonEdit::Hook {
                event: event.to_string(),
                group: match matcher {
                    Some(m) => json!({"matcher": m, "hooks": inner}),
                    None => json!({"hooks": inner}),
                },
            }
        })
        .collect()
}

/// What marks muster's hooks (and a project) trusted in the user's Codex
/// config, and the notes saying so; none when that config cannot be found.
fn trust(
    scope: &Scope,
    user_config: Option<&Path>,
    hooks_path: &Path,
    hooks: &[JsonEdit],
    muster: &Muster,
) -> (Vec<TomlEdit>, Vec<String>, Option<String>) {
    let mut notes = Vec::new();
    let mut problem = None;
    let mut user_edits = Vec::new();
    match user_config {
        Some(user_config) => {
            user_edits.extend(trust_edits(hooks_path, hooks, muster));
            let mut trusted = format!(
                "muster's hooks are marked trusted in {}",
                user_config.display()
            );
            if let Scope::Project(project) = scope {
                match project_trust(user_config, project).as_deref() {
                    Some("untrusted") => {
                        let text = format!(
                            "{} is marked untrusted in {}, so Codex will not read its .codex/ (muster's server and \
hooks): run `codex exec --trust` there once, or trust it when Codex asks",
                            project.display(),
                            user_config.display()
                        );
                        notes.push(text.clone());
                        problem = Some(text);
                    }
                    _ => {
                        user_edits.push(TomlEdit::Setting {
                            path: vec![
                                "projects".into(),
                                project.display().to_string(),
                                "trust_level".into(),
                            ],
                            value: json!("trusted"),
                        });
                        trusted.push_str(&format!(
                            ", and {} as a trusted project so Codex reads its .codex/",
                            project.display()
                        ));
                    }
                }
            }
            notes.push(format!(
                "{trusted} (Codex skips untrusted ones silently); --uninstall takes this back"
            ));
        }
        None => {
            let text = "cannot tell where Codex keeps its user config (set HOME or CODEX_HOME), so muster's hooks are \
not marked trusted: Codex skips them until you trust them when it asks, or run `codex exec --dangerously-bypass-hook-trust`";
            notes.push(text.into());
            problem = Some(text.into());
        }
    }

    (user_edits, notes, problem)
}

/// The `trust_level` the user's config gives `project`, if any.
fn project_trust(user_config: &Path, project: &Path) -> Option<String> {
    let text = std::fs::read_to_string(user_config).ok()?;
    let doc = super::toml_merge::parse(&text).ok()?;
    let level = doc
        .get("projects")?
        .get(project.display().to_string().as_str())?
        .get("trust_level")?;
    level.as_str().map(str::to_string)
}

/// The `[hooks.state."<key>"] trusted_hash` entries for muster's hooks as they
/// will sit in `hooks_path` once installed (the key names their position there).
fn trust_edits(hooks_path: &Path, hooks: &[JsonEdit], muster: &Muster) -> Vec<TomlEdit> {
    let current = std::fs::read_to_string(hooks_path).ok();
    // A file that cannot be parsed stops the install later, with its line; no trust then.
    let Ok((installed, _)) = FileEdits::Json(hooks.to_vec()).install(current.as_deref()) else {
        return Vec::new();
    };
    let Ok(installed) = serde_json::from_str::<Value>(&installed) else {
        return Vec::new();
    };
    let key_source = canonical(hooks_path).display().to_string();
    let mut edits = Vec::new();
    for (event, hook, matcher, label) in HOOKS {
        let command = muster.hook_command(hook, Harness::Codex);
        let Some((group, handler)) = position(&installed["hooks"][event], &command) else {
            continue;
        };
        // Codex ignores the matcher of these events when it hashes.
        let matcher = matcher.filter(|_| !matches!(label, "user_prompt_submit" | "stop"));
        edits.push(TomlEdit::Table {
            path: vec![
                "hooks".into(),
                "state".into(),
                format!("{key_source}:{label}:{group}:{handler}"),
            ],
            entries: vec![(
                "trusted_hash".into(),
                json!(trusted_hash(label, matcher, &command, HOOK_TIMEOUT)),
            )],
        });
    }
    edits
}

/// (group, handler) indices of the hook running `command` in an event's groups.
fn position(groups: &Value, command: &str) -> Option<(usize, usize)> {
    groups
        .as_array()?
        .iter()
        .enumerate()
        .find_map(|(g, group)| {
            let hooks = group["hooks"].as_array()?;
            let h = hooks
                .iter()
                .position(|hook| hook["command"].as_str() == Some(command))?;
            Some((g, h))
        })
}

/// The hash Codex trusts a command hook by: SHA-256 of its normalized identity
/// (event label, matcher, the one handler with its timeout and `async`) as JSON
/// with every object's keys sorted, written compactly.
fn trusted_hash(label: &str, matcher: Option<&str>, command: &str, timeout: u64) -> String {
    let mut identity = json!({
        "event_name": label,
        "hooks": [{"type": "command", "command": command, "timeout": timeout, "async": false}],
    });
    if let Some(m) = matcher {
        identity["matcher"] = json!(m);
    }
    format!(
        "sha256:{}",
        files::sha256(sorted_json(&identity).as_bytes())
    )
}

/// Compact JSON with object keys in byte order (serde_json here keeps insertion order).
fn sorted_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), sorted_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(sorted_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// `path` with its longest existing ancestor resolved, as Codex resolves
/// `CODEX_HOME` and the project before it names a hook's file.
fn canonical(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut here = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(here) {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (here.parent(), here.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                here = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_hash_matches_what_codex_computes() {
        // Proves the hash equals the `currentHash` codex 0.171 `app-server` `hooks/list` reported for these hooks.
        let muster = Muster::at("/work/main/target/debug/muster");
        assert_eq!(
            trusted_hash(
                "session_start",
                Some("startup|resume"),
                &muster.hook_command(HookEvent::SessionStart, Harness::Codex),
                5
            ),
            "sha256:f46c2950573307476ac33b6d66f486412b052a5fd601bd03a6b97fd782d4aaa8"
        );
        assert_eq!(
            trusted_hash(
                "pre_tool_use",
                None,
                &muster.hook_command(HookEvent::PreToolUse, Harness::Codex),
                5
            ),
            "sha256:2b653c8890621a0ec839f2573d1e92f95e2c1f484c9cd3a58803a5107a00110d"
        );
        assert_eq!(
            trusted_hash(
                "stop",
                None,
                &muster.hook_command(HookEvent::Stop, Harness::Codex),
                5
            ),
            "sha256:ce69bbb256cc97b20a7c49396e700c635103a667d7f80882d0bdcb93c117e572"
        );
    }

    #[test]
    fn sorted_json_orders_keys_at_every_level() {
        // Proves nested objects are written with sorted keys and no whitespace.
        assert_eq!(
            sorted_json(&json!({"b": [{"z": 1, "a": "x"}], "a": true})),
            r#"{"a":true,"b":[{"a":"x","z":1}]}"#
        );
    }
}
