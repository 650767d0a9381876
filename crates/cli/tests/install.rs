//! `muster install`: writes muster's MCP server and hooks into each harness's
//! settings without touching the user's, is idempotent, previews with
//! --dry-run, refuses broken files, and --uninstall puts everything back.
//! Every run points HOME, XDG_*, CODEX_HOME at temp dirs: real user files are never touched,
//! and PATH at a directory whose `muster` is the binary under test, so project
//! files name `muster` (tests/install_team.rs covers the other cases).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// A sandbox: a project directory and a fake home, state and config dir.
struct Sandbox {
    _root: tempfile::TempDir,
    project: PathBuf,
    home: PathBuf,
    state: PathBuf,
    /// Holds `muster`, a link to the binary under test; first on PATH.
    bin: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().join("project");
        let home = root.path().join("home");
        let state = root.path().join("state");
        let bin = root.path().join("bin");
        for dir in [&project, &home, &state, &bin] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_muster"), bin.join("muster")).unwrap();
        Sandbox {
            bin,
            project: project.canonicalize().unwrap(),
            home: home.canonicalize().unwrap(),
            state: state.canonicalize().unwrap(),
            _root: root,
        }
    }

    fn muster(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(args)
            .current_dir(&self.project)
            .env("HOME", &self.home)
            .env("XDG_STATE_HOME", &self.state)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("CODEX_HOME", self.home.join(".codex"))
            .env("PATH", self.path())
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("MUSTER_URL")
            .env_remove("MUSTER_SESSION_ID")
            .env_remove("CLAUDE_CODE_SESSION_ID")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The sandbox's `bin` first, then the system's.
    fn path(&self) -> String {
        format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.display())
    }

    /// Runs `muster install <args>` and expects exit 0.
    fn install(&self, args: &[&str]) -> String {
        let mut all = vec!["install"];
        all.extend_from_slice(args);
        let out = self.muster(&all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "muster {all:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.project.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.project.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn json(&self, rel: &str) -> Value {
        serde_json::from_str(&self.read(rel)).unwrap()
    }
}

/// Every file under `dir` with its bytes (directories listed with no bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(here) = stack.pop() {
        for entry in std::fs::read_dir(&here).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn muster_bin() -> String {
    Path::new(env!("CARGO_BIN_EXE_muster"))
        .canonicalize()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn hook_commands(hooks: &Value, event: &str) -> Vec<String> {
    hooks[event]
        .as_array()
        .unwrap_or_else(|| panic!("no {event} hooks in {hooks}"))
        .iter()
        .flat_map(|g| g["hooks"].as_array().unwrap().iter())
        .map(|h| h["command"].as_str().unwrap().to_string())
        .collect()
}

/// One harness: the user's settings before install, and how to check the result.
struct Case {
    harness: &'static str,
    /// (relative path, contents) of the user's own files, laid down before install.
    seed: &'static [(&'static str, &'static str)],
    /// Files install creates (relative to the project).
    created: &'static [&'static str],
    /// Asserts muster's entries and the user's are both there.
    check: fn(&Sandbox),
    /// The file a user edits after install, and the edit.
    edited: &'static str,
}

const CLAUDE: Case = Case {
    harness: "claude",
    seed: &[
        (
            ".claude/settings.json",
            "{\n  \"model\": \"opus\",\n  \"permissions\": {\n    \"allow\": [\n      \"Bash(ls)\"\n    ]\n  },\n  \"hooks\": {\n    \"Stop\": [\n      {\n        \"hooks\": [\n          {\n            \"type\": \"command\",\n            \"command\": \"say done\"\n          }\n        ]\n      }\n    ]\n  }\n}\n",
        ),
        (".mcp.json", "{\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"other-server\"\n    }\n  }\n}\n"),
    ],
    created: &[],
    check: |sb| {
        let muster = "muster".to_string();
        let mcp = sb.json(".mcp.json");
        assert_eq!(mcp["mcpServers"]["other"]["command"], "other-server");
        assert_eq!(mcp["mcpServers"]["muster"], json!({"command": muster, "args": ["mcp"]}));
        let settings = sb.json(".claude/settings.json");
        let keys: Vec<&String> = settings.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["model", "permissions", "hooks", "enabledMcpjsonServers"]);
        assert_eq!(settings["permissions"]["allow"], json!(["Bash(ls)"]));
        assert_eq!(settings["enabledMcpjsonServers"], json!(["muster"]));
        assert_eq!(
            hook_commands(&settings["hooks"], "Stop"),
            ["say done".to_string(), format!("{muster} hook stop --harness claude")]
        );
        for (event, hook) in [
            ("SessionStart", "session-start"),
            ("UserPromptSubmit", "prompt-submit"),
            ("PreToolUse", "pre-tool-use"),
            ("SessionEnd", "session-end"),
        ] {
            assert_eq!(hook_commands(&settings["hooks"], event), [format!("{muster} hook {hook} --harness claude")]);
            assert_eq!(settings["hooks"][event][0]["hooks"][0]["timeout"], 5);
        }
    },
    edited: ".claude/settings.json",
};

const CODEX_TOML: &str = "# my Codex setup\nmodel = \"o4-mini\"  # fast enough\n\n[mcp_servers.other]\ncommand = \"other-server\"\nargs = [ \"--quiet\" ]\n\n[features]\n# keep web search on\nweb_search = true\n";

const CODEX: Case = Case {
    harness: "codex",
    seed: &[
        (".codex/config.toml", CODEX_TOML),
        (
            ".codex/hooks.json",
            "{\n  \"hooks\": {\n    \"Stop\": [\n      {\n        \"hooks\": [\n          {\n            \"type\": \"command\",\n            \"command\": \"notify-send done\"\n          }\n        ]\n      }\n    ]\n  }\n}\n",
        ),
    ],
    created: &[],
    check: |sb| {
        let muster = "muster".to_string();
        let text = sb.read(".codex/config.toml");
        for line in CODEX_TOML.lines() {
            assert!(text.contains(line), "lost {line:?} in:\n{text}");
        }
        let config: toml::Table = toml::from_str(&text).unwrap();
        let server = &config["mcp_servers"]["muster"];
        assert_eq!(server["command"].as_str(), Some(muster.as_str()));
        assert_eq!(server["args"].as_array().unwrap()[0].as_str(), Some("mcp"));
        assert_eq!(server["env"]["MUSTER_HARNESS"].as_str(), Some("codex"));
        assert_eq!(server["env"]["MUSTER_CHANNELS"].as_str(), Some("off"));
        assert_eq!(config["features"]["hooks"].as_bool(), Some(true));
        assert_eq!(config["features"]["web_search"].as_bool(), Some(true));
        let hooks = sb.json(".codex/hooks.json");
        assert_eq!(
            hook_commands(&hooks["hooks"], "Stop"),
            ["notify-send done".to_string(), format!("{muster} hook stop --harness codex")]
        );
        assert_eq!(hooks["hooks"]["SessionStart"][0]["matcher"], "startup|resume");
        for (event, hook) in [
            ("SessionStart", "session-start"),
            ("UserPromptSubmit", "prompt-submit"),
            ("PreToolUse", "pre-tool-use"),
            ("PostToolUse", "post-tool-use"),
        ] {
            assert_eq!(hook_commands(&hooks["hooks"], event), [format!("{muster} hook {hook} --harness codex")]);
        }
    },
    edited: ".codex/config.toml",
};

const OPENCODE: Case = Case {
    harness: "opencode",
    seed: &[(
        "opencode.json",
        "{\n  \"$schema\": \"https://opencode.ai/config.json\",\n  \"model\": \"anthropic/claude\",\n  \"mcp\": {\n    \"other\": {\n      \"type\": \"remote\",\n      \"url\": \"http://x\"\n    }\n  }\n}\n",
    )],
    created: &[".opencode/plugins/muster.js"],
    check: |sb| {
        let config = sb.json("opencode.json");
        let keys: Vec<&String> = config.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["$schema", "model", "mcp"]);
        assert_eq!(config["mcp"]["other"]["url"], "http://x");
        assert_eq!(
            config["mcp"]["muster"],
            json!({
                "type": "local",
                "command": ["muster", "mcp"],
                "enabled": true,
                "environment": {"MUSTER_HARNESS": "opencode", "MUSTER_CHANNELS": "off"},
            })
        );
        let plugin = sb.read(".opencode/plugins/muster.js");
        assert!(plugin.contains("export const MusterPlugin"), "{plugin}");
        assert!(plugin.contains("_session_id"), "{plugin}");
    },
    edited: "opencode.json",
};

const GEMINI: Case = Case {
    harness: "gemini",
    seed: &[(
        ".gemini/settings.json",
        "{\n    \"model\": {\n        \"name\": \"gemini-2.5-pro\"\n    },\n    \"hooks\": {\n        \"BeforeTool\": [\n            {\n                \"matcher\": \"write_file\",\n                \"hooks\": [\n                    {\n                        \"name\": \"lint\",\n                        \"type\": \"command\",\n                        \"command\": \"make lint\"\n                    }\n                ]\n            }\n        ]\n    }\n}",
    )],
    created: &[],
    check: |sb| {
        let muster = "muster".to_string();
        let text = sb.read(".gemini/settings.json");
        assert!(text.starts_with("{\n    \"model\": {\n        \"name\""), "indent not kept:\n{text}");
        assert!(!text.ends_with('\n'), "a file without a final newline gained one");
        let settings: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(settings["model"]["name"], "gemini-2.5-pro");
        assert_eq!(
            settings["mcpServers"]["muster"],
            json!({"command": muster, "args": ["mcp"], "trust": true,
                   "env": {"MUSTER_HARNESS": "gemini", "MUSTER_CHANNELS": "off"}})
        );
        assert_eq!(
            hook_commands(&settings["hooks"], "BeforeTool"),
            ["make lint".to_string(), format!("{muster} hook pre-tool-use --harness gemini")]
        );
        for (event, hook) in [
            ("SessionStart", "session-start"),
            ("BeforeAgent", "prompt-submit"),
            ("AfterAgent", "stop"),
            ("SessionEnd", "session-end"),
        ] {
            assert_eq!(hook_commands(&settings["hooks"], event), [format!("{muster} hook {hook} --harness gemini")]);
            let group = &settings["hooks"][event][0];
            assert_eq!(group["matcher"], "");
            assert_eq!(group["hooks"][0]["name"], format!("muster-{hook}"));
            assert_eq!(group["hooks"][0]["timeout"], 5000);
        }
    },
    edited: ".gemini/settings.json",
};

fn seeded(case: &Case) -> Sandbox {
    let sb = Sandbox::new();
    for (rel, text) in case.seed {
        sb.write(rel, text);
    }
    sb
}

fn installs_into_user_settings_and_keeps_theirs(case: &Case) {
    let sb = seeded(case);
    let out = sb.install(&[case.harness]);
    assert!(
        out.contains("Next: restart") || out.contains("Next: start"),
        "{out}"
    );
    (case.check)(&sb);
    for rel in case.created {
        assert!(sb.project.join(rel).is_file(), "{rel} not created");
    }
    for (rel, text) in case.seed {
        let backup = sb.project.join(format!("{rel}.muster-backup"));
        assert_eq!(
            std::fs::read_to_string(&backup).unwrap(),
            *text,
            "backup of {rel}"
        );
    }
}

fn second_install_changes_nothing(case: &Case) {
    let sb = seeded(case);
    sb.install(&[case.harness]);
    let after_first = snapshot(&sb.project);
    let manifest = std::fs::read(sb.state.join("muster/installs.json")).unwrap();
    let out = sb.install(&[case.harness]);
    assert!(out.contains("already installed"), "{out}");
    assert_eq!(snapshot(&sb.project), after_first);
    assert_eq!(
        std::fs::read(sb.state.join("muster/installs.json")).unwrap(),
        manifest
    );
    let report: Value = serde_json::from_str(&sb.install(&[case.harness, "--json"])).unwrap();
    assert_eq!(report["changed"], false);
    assert!(
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == "unchanged"),
        "{report}"
    );
}

fn dry_run_prints_a_diff_and_writes_nothing(case: &Case) {
    let sb = seeded(case);
    let before = snapshot(&sb.project);
    let out = sb.install(&[case.harness, "--dry-run"]);
    assert_eq!(snapshot(&sb.project), before, "dry run changed the project");
    assert!(
        snapshot(&sb.state).is_empty(),
        "dry run wrote the install record"
    );
    assert!(
        out.contains("--- a/") && out.contains("+++ b/") && out.contains("\n@@ "),
        "{out}"
    );
    assert!(out.contains("+") && out.contains("muster"), "{out}");
    assert!(out.contains("Nothing was written"), "{out}");
    let report: Value =
        serde_json::from_str(&sb.install(&[case.harness, "--dry-run", "--json"])).unwrap();
    assert_eq!(report["dry_run"], true);
    assert!(
        report["files"][0]["diff"].as_str().unwrap().contains("@@"),
        "{report}"
    );
    assert_eq!(snapshot(&sb.project), before);
}

fn uninstall_restores_every_byte(case: &Case) {
    let sb = seeded(case);
    let before = snapshot(&sb.project);
    sb.install(&[case.harness]);
    assert_ne!(snapshot(&sb.project), before);
    let report: Value =
        serde_json::from_str(&sb.install(&[case.harness, "--uninstall", "--json"])).unwrap();
    assert_eq!(report["action"], "uninstall");
    assert_eq!(report["changed"], true);
    assert_eq!(
        snapshot(&sb.project),
        before,
        "uninstall did not restore the project"
    );
    let out = sb.install(&[case.harness, "--uninstall"]);
    assert!(out.contains("not installed"), "{out}");
    assert_eq!(snapshot(&sb.project), before);
}

fn invalid_settings_stop_the_run(case: &Case) {
    let sb = seeded(case);
    let (rel, broken) = if case.edited.ends_with(".toml") {
        (case.edited, "model = \"o4\"\n[mcp_servers\ncommand = 1\n")
    } else {
        (case.edited, "{\n  \"model\": \"x\",\n  oops\n}\n")
    };
    sb.write(rel, broken);
    let before = snapshot(&sb.project);
    let out = sb.muster(&["install", case.harness]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = sb.project.join(rel);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("line 2") || stderr.contains("line 3"),
        "{stderr}"
    );
    assert!(stderr.contains("Nothing was changed"), "{stderr}");
    assert_eq!(
        snapshot(&sb.project),
        before,
        "a failed install wrote something"
    );
    assert!(snapshot(&sb.state).is_empty());
}

fn uninstall_after_user_edit_removes_only_muster(case: &Case) {
    let sb = seeded(case);
    let original = sb.project.join(case.edited);
    let seeded_text = std::fs::read_to_string(&original).ok();
    sb.install(&[case.harness]);
    let installed = sb.read(case.edited);
    let edited = if case.edited.ends_with(".toml") {
        format!("{installed}\n[profiles.later]\nmodel = \"o3\"\n")
    } else {
        let mut value: Value = serde_json::from_str(&installed).unwrap();
        value
            .as_object_mut()
            .unwrap()
            .insert("addedLater".into(), json!(true));
        serde_json::to_string_pretty(&value).unwrap()
    };
    sb.write(case.edited, &edited);
    let out = sb.install(&[case.harness, "--uninstall"]);
    assert!(out.contains("only muster's entries"), "{out}");
    let after = sb.read(case.edited);
    assert!(
        !after.contains("muster"),
        "muster left in {}:\n{after}",
        case.edited
    );
    let seeded_text = seeded_text.unwrap();
    if case.edited.ends_with(".toml") {
        assert_eq!(
            after,
            format!("{seeded_text}\n[profiles.later]\nmodel = \"o3\"\n")
        );
    } else {
        let mut expected: Value = serde_json::from_str(&seeded_text).unwrap();
        expected
            .as_object_mut()
            .unwrap()
            .insert("addedLater".into(), json!(true));
        let after: Value = serde_json::from_str(&after).unwrap();
        assert_eq!(after, expected);
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&after), keys(&expected));
    }
    // Files the user did not touch are restored exactly; created ones are gone.
    for (rel, text) in case.seed.iter().filter(|(rel, _)| *rel != case.edited) {
        assert_eq!(sb.read(rel), *text);
    }
    for rel in case.created {
        assert!(!sb.project.join(rel).exists(), "{rel} left behind");
    }
}

macro_rules! harness_tests {
    ($module:ident, $case:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn install_adds_muster_and_keeps_user_settings() {
                // Proves install writes muster's MCP server and hooks beside the user's settings, left intact, with backups.
                super::installs_into_user_settings_and_keeps_theirs(&$case);
            }

            #[test]
            fn install_twice_changes_nothing() {
                // Proves a second install leaves every file and the install record byte-identical and says so.
                super::second_install_changes_nothing(&$case);
            }

            #[test]
            fn dry_run_shows_a_diff_and_changes_nothing() {
                // Proves --dry-run prints a unified diff and writes no file and no record.
                super::dry_run_prints_a_diff_and_writes_nothing(&$case);
            }

            #[test]
            fn uninstall_restores_files_byte_for_byte() {
                // Proves --uninstall returns the project to its exact pre-install bytes (created files and backups gone).
                super::uninstall_restores_every_byte(&$case);
            }

            #[test]
            fn invalid_settings_exit_1_and_touch_nothing() {
                // Proves a malformed settings file is named with its line, exits 1, and nothing is written.
                super::invalid_settings_stop_the_run(&$case);
            }

            #[test]
            fn uninstall_after_user_edit_removes_only_muster() {
                // Proves a file changed after install keeps the user's change and loses only muster's entries.
                super::uninstall_after_user_edit_removes_only_muster(&$case);
            }
        }
    };
}

harness_tests!(claude, CLAUDE);
harness_tests!(codex, CODEX);
harness_tests!(opencode, OPENCODE);
harness_tests!(gemini, GEMINI);

#[test]
fn claude_hooks_fail_open_without_a_daemon() {
    // Proves every hook the Claude project install writes runs (via sh) against no daemon with exit 0 and no stdout.
    let sb = Sandbox::new();
    sb.install(&["claude"]);
    let settings = sb.json(".claude/settings.json");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let events = settings["hooks"].as_object().unwrap();
    assert_eq!(events.len(), 6);
    for (event, _) in events {
        for command in hook_commands(&settings["hooks"], event) {
            let mut child = Command::new("sh")
                .args(["-c", &command])
                .env("MUSTER_URL", format!("http://127.0.0.1:{port}"))
                .env("MUSTER_AUTOSTART", "0")
                .env("PATH", sb.path())
                .env("XDG_CONFIG_HOME", sb.home.join(".config"))
                .env("HOME", &sb.home)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let payload = json!({"session_id": "s-1", "cwd": sb.project, "hook_event_name": event, "prompt": "hi"});
            child
                .stdin
                .take()
                .unwrap()
                .write_all(payload.to_string().as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{command}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stdout.is_empty(),
                "{command} printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

#[test]
fn user_scope_writes_home_files_and_uninstall_empties_them() {
    // Proves --user writes each harness's user files under HOME/XDG/CODEX_HOME and uninstall leaves HOME as it was.
    let sb = Sandbox::new();
    let before = snapshot(&sb.home);
    for harness in ["claude", "codex", "opencode", "gemini"] {
        sb.install(&[harness, "--user"]);
    }
    for rel in [
        ".claude.json",
        ".claude/settings.json",
        ".codex/config.toml",
        ".codex/hooks.json",
        ".config/opencode/opencode.json",
        ".config/opencode/plugins/muster.js",
        ".gemini/settings.json",
    ] {
        assert!(sb.home.join(rel).is_file(), "{rel} missing");
    }
    let claude_json: Value =
        serde_json::from_str(&std::fs::read_to_string(sb.home.join(".claude.json")).unwrap())
            .unwrap();
    assert_eq!(claude_json["mcpServers"]["muster"]["args"], json!(["mcp"]));
    // User files are never committed: they name the binary itself, PATH or not.
    assert_eq!(claude_json["mcpServers"]["muster"]["command"], muster_bin());
    assert!(
        snapshot(&sb.project).is_empty(),
        "--user wrote into the project"
    );
    for harness in ["claude", "codex", "opencode", "gemini"] {
        sb.install(&[harness, "--user", "--uninstall"]);
    }
    assert_eq!(snapshot(&sb.home), before);
}

#[test]
fn bad_usage_is_refused_before_anything_is_written() {
    // Proves an unknown harness lists the four, a missing --project dir exits 2, and --project/--user conflict.
    let sb = Sandbox::new();
    let out = sb.muster(&["install", "vim"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("claude, codex, opencode, gemini"),
        "{stderr}"
    );
    let out = sb.muster(&["install", "claude", "--project", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an existing directory"));
    let out = sb.muster(&["install", "claude", "--project", ".", "--user"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        snapshot(&sb.project).is_empty()
            && snapshot(&sb.state).is_empty()
            && snapshot(&sb.home).is_empty()
    );
}

#[test]
fn muster_url_is_not_baked_in() {
    // Proves a MUSTER_URL set at install time is mentioned but written into no file.
    let sb = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["install", "gemini", "--project"])
        .arg(&sb.project)
        .env("HOME", &sb.home)
        .env("XDG_STATE_HOME", &sb.state)
        .env("MUSTER_URL", "http://127.0.0.1:9999")
        .env("PATH", sb.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MUSTER_URL"));
    assert!(!sb.read(".gemini/settings.json").contains("9999"));
}

#[test]
fn help_explains_what_goes_where() {
    // Proves `muster install --help` names each harness's files, an example and the --json shape.
    let out = Sandbox::new().muster(&["install", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        ".mcp.json",
        "config.toml",
        "opencode.json",
        ".gemini/settings.json",
        "--dry-run",
        "\"files\"",
    ] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}
