//! Installs a team can commit: a project install names `muster` (not a path
//! of this machine) in the files a team commits when the `muster` on PATH is
//! the binary running; otherwise the path goes only into local settings
//! (Claude Code) or the output says which project files name it (the others).
//! `muster doctor` checks each installed harness and prints what to run.
//! Every run has its own HOME, XDG dirs, CODEX_HOME and PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

struct Sandbox {
    _root: tempfile::TempDir,
    project: PathBuf,
    home: PathBuf,
    state: PathBuf,
    /// Holds `muster`, a link to the binary under test.
    same: PathBuf,
    /// Holds `muster`, another program of that name.
    other: PathBuf,
    /// Holds no `muster`.
    none: PathBuf,
}

fn binary() -> String {
    Path::new(env!("CARGO_BIN_EXE_muster"))
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["project", "home", "state", "same", "other", "none"]
            .iter()
            .map(|d| {
                let dir = root.path().join(d);
                std::fs::create_dir_all(&dir).unwrap();
                dir.canonicalize().unwrap()
            })
            .collect();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_muster"), dirs[3].join("muster")).unwrap();
        let other = dirs[4].join("muster");
        std::fs::write(&other, "#!/bin/sh\necho another muster\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
        Sandbox {
            project: dirs[0].clone(),
            home: dirs[1].clone(),
            state: dirs[2].clone(),
            same: dirs[3].clone(),
            other: dirs[4].clone(),
            none: dirs[5].clone(),
            _root: root,
        }
    }

    /// `muster <args>` in the project with `bin` first on PATH (no system dirs,
    /// so no `muster` installed on this machine can be found).
    fn run(&self, bin: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(args)
            .current_dir(&self.project)
            .env("PATH", bin)
            .env("HOME", &self.home)
            .env("XDG_STATE_HOME", &self.state)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("CODEX_HOME", self.home.join(".codex"))
            // Nothing listens there: doctor's daemon checks fail fast.
            .env("MUSTER_URL", "http://127.0.0.1:9")
            .env("MUSTER_AUTOSTART", "0")
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("GEMINI_CLI_TRUSTED_FOLDERS_PATH")
            .env_remove("MUSTER_SESSION_ID")
            .env_remove("CLAUDE_CODE_SESSION_ID")
            .env_remove("MUSTER_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn install(&self, bin: &Path, args: &[&str]) -> String {
        let mut all = vec!["install"];
        all.extend_from_slice(args);
        let out = self.run(bin, &all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "muster {all:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn read(&self, path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.project.join(rel)
    }

    /// `muster doctor --json`'s checks, by name.
    fn doctor(&self, bin: &Path) -> (Option<i32>, Vec<Value>) {
        let out = self.run(bin, &["doctor", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json: {e}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (
            out.status.code(),
            report["checks"].as_array().unwrap().clone(),
        )
    }
}

/// The check named `name` in doctor's list: (ok, detail, fix).
fn check<'a>(checks: &'a [Value], name: &str) -> (&'a Value, &'a Value, &'a Value) {
    let c = checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:#?}"));
    (&c["ok"], &c["detail"], c.get("fix").unwrap_or(&Value::Null))
}

fn claude_hooks(program: &str) -> Value {
    let group = |hook: &str| json!([{"hooks": [{"type": "command", "command": format!("{program} hook {hook} --harness claude"), "timeout": 5}]}]);
    json!({
        "SessionStart": group("session-start"),
        "UserPromptSubmit": group("prompt-submit"),
        "PreToolUse": group("pre-tool-use"),
        "PostToolUse": group("post-tool-use"),
        "Stop": group("stop"),
        "SessionEnd": group("session-end"),
    })
}

fn json_of(sb: &Sandbox, path: &Path) -> Value {
    serde_json::from_str(&sb.read(path)).unwrap()
}

// Proves a Claude Code project install with this binary on PATH writes
// `muster` by name into .mcp.json and .claude/settings.json (exact contents),
// no local settings, and no path of this machine anywhere in the project.
#[test]
fn claude_project_names_muster_when_path_has_this_binary() {
    let sb = Sandbox::new();
    let out = sb.install(&sb.same, &["claude"]);
    assert!(!out.contains("local settings"), "{out}");
    assert_eq!(
        sb.read(&sb.p(".mcp.json")),
        "{\n  \"mcpServers\": {\n    \"muster\": {\n      \"command\": \"muster\",\n      \"args\": [\n        \"mcp\"\n      ]\n    }\n  }\n}\n"
    );
    assert_eq!(
        json_of(&sb, &sb.p(".claude/settings.json")),
        json!({"hooks": claude_hooks("muster"), "enabledMcpjsonServers": ["muster"]})
    );
    assert!(!sb.p(".claude/settings.local.json").exists());
    assert!(!sb.home.join(".claude.json").exists());
    let bin = binary();
    for rel in [".mcp.json", ".claude/settings.json"] {
        assert!(!sb.read(&sb.p(rel)).contains(&bin), "{rel} names {bin}");
    }
}

// Proves that without this binary on PATH (none, or another `muster`) the
// path goes only into .claude/settings.local.json and ~/.claude.json's entry
// for the project, the output says why, and switching PATH and installing
// again moves muster's entries between the two places, leaving none behind.
#[test]
fn claude_project_keeps_a_machine_path_in_local_settings() {
    let sb = Sandbox::new();
    let bin = binary();
    let project = sb.project.display().to_string();
    let local = sb.p(".claude/settings.local.json");
    let claude_json = sb.home.join(".claude.json");

    let out = sb.install(&sb.none, &["claude"]);
    assert!(
        out.contains(&format!(
            "note: no `muster` is on PATH (this binary is {bin}), so this binary's path went only into local \
settings, which a team does not commit: the hooks into {} and the MCP server into {} (for {project} only)",
            local.display(),
            claude_json.display()
        )),
        "{out}"
    );
    assert_eq!(json_of(&sb, &local), json!({"hooks": claude_hooks(&bin)}));
    assert_eq!(
        json_of(&sb, &claude_json),
        json!({"projects": {project.clone(): {"mcpServers": {"muster": {"command": bin, "args": ["mcp"]}}}}})
    );
    assert!(!sb.p(".mcp.json").exists() && !sb.p(".claude/settings.json").exists());

    // This binary on PATH now: the team's files get `muster`, the local entries go.
    let out = sb.install(&sb.same, &["claude"]);
    assert!(
        out.contains(&format!(
            "  removed   {} (muster's entries taken out: the team's files name `muster` now)",
            local.display()
        )),
        "{out}"
    );
    assert!(
        !local.exists(),
        "settings.local.json was created by install, so it goes"
    );
    assert!(
        !claude_json.exists(),
        "~/.claude.json was created by install, so it goes"
    );
    assert_eq!(
        json_of(&sb, &sb.p(".claude/settings.json")),
        json!({"hooks": claude_hooks("muster"), "enabledMcpjsonServers": ["muster"]})
    );

    // Another `muster` first on PATH: back to local settings, and the team's
    // files lose muster's entries (the user's own stay).
    std::fs::write(
        sb.p(".mcp.json"),
        "{\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"x\"\n    },\n    \"muster\": {\n      \"command\": \"muster\",\n      \"args\": [\n        \"mcp\"\n      ]\n    }\n  }\n}\n",
    )
    .unwrap();
    let out = sb.install(&sb.other, &["claude"]);
    assert!(
        out.contains(&format!(
            "note: `muster` on PATH is {}/muster, not this binary ({bin}), so this binary's path went only into \
local settings",
            sb.other.display()
        )),
        "{out}"
    );
    assert_eq!(
        sb.read(&sb.p(".mcp.json")),
        "{\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"x\"\n    }\n  }\n}\n"
    );
    assert!(!sb.p(".claude/settings.json").exists());
    assert_eq!(json_of(&sb, &local), json!({"hooks": claude_hooks(&bin)}));

    // Uninstall takes muster out of both places.
    sb.install(&sb.other, &["claude", "--uninstall"]);
    assert!(!local.exists() && !claude_json.exists());
    assert_eq!(
        sb.read(&sb.p(".mcp.json")),
        "{\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"x\"\n    }\n  }\n}\n"
    );
}

// Proves Codex, opencode and Gemini CLI, which keep no local settings for a
// project, write `muster` when this binary is on PATH, and otherwise the path
// with a note naming the files that hold it and why.
#[test]
fn other_harnesses_say_which_project_files_name_a_machine_path() {
    let sb = Sandbox::new();
    let bin = binary();
    sb.install(&sb.same, &["codex"]);
    let config: toml::Table = toml::from_str(&sb.read(&sb.p(".codex/config.toml"))).unwrap();
    assert_eq!(
        config["mcp_servers"]["muster"]["command"].as_str(),
        Some("muster")
    );
    let hooks = json_of(&sb, &sb.p(".codex/hooks.json"));
    assert_eq!(
        hooks["hooks"]["Stop"][0]["hooks"][0]["command"],
        "muster hook stop --harness codex"
    );

    let out = sb.install(&sb.none, &["codex"]);
    assert!(
        out.contains(&format!(
            "note: no `muster` is on PATH (this binary is {bin}), so {} and {} name {bin}, a path on this machine \
only: do not commit them unless every teammate has muster there. Codex CLI keeps no local, uncommitted settings for a \
project's MCP server and hooks. To write `muster` by name instead, put this binary on PATH as `muster` and run \
`muster install codex --project` again",
            sb.p(".codex/config.toml").display(),
            sb.p(".codex/hooks.json").display()
        )),
        "{out}"
    );
    let config: toml::Table = toml::from_str(&sb.read(&sb.p(".codex/config.toml"))).unwrap();
    assert_eq!(
        config["mcp_servers"]["muster"]["command"].as_str(),
        Some(bin.as_str())
    );

    let out = sb.install(&sb.none, &["opencode"]);
    assert!(
        out.contains(&format!(
            "so {} names {bin}, a path on this machine only: do not commit it",
            sb.p("opencode.json").display()
        )),
        "{out}"
    );
    sb.install(&sb.same, &["gemini"]);
    let settings = json_of(&sb, &sb.p(".gemini/settings.json"));
    assert_eq!(settings["mcpServers"]["muster"]["command"], "muster");
    assert_eq!(
        settings["hooks"]["AfterAgent"][0]["hooks"][0]["command"],
        "muster hook stop --harness gemini"
    );
}

// Proves `muster doctor` checks each installed harness (server, hooks,
// binary, trust, config version, machine path) with exact details, says what
// to run for each failure (text and --json), and reports nothing of
// harnesses that are not installed.
#[test]
fn doctor_checks_every_installed_harness_and_says_what_to_run() {
    let sb = Sandbox::new();
    let dir = sb.project.display().to_string();
    let (_, checks) = sb.doctor(&sb.same);
    assert_eq!(
        check(&checks, "harnesses").1,
        "muster is installed for none here (muster install <harness> --project, or --user)"
    );

    sb.install(&sb.same, &["claude"]);
    sb.install(&sb.same, &["codex"]);
    let (code, checks) = sb.doctor(&sb.same);
    assert_eq!(code, Some(1), "the daemon is not reachable");
    let claude = format!("claude (project {dir})");
    let codex = format!("codex (project {dir})");
    assert_eq!(
        check(&checks, &format!("{claude} MCP server")).1,
        &json!(format!("in {}", sb.p(".mcp.json").display()))
    );
    assert_eq!(
        check(&checks, &format!("{claude} hooks")).1,
        &json!(format!(
            "all 6 in {}",
            sb.p(".claude/settings.json").display()
        ))
    );
    assert_eq!(
        check(&checks, &format!("{claude} binary")).1,
        &json!(format!(
            "`muster` on PATH is {}/muster (this binary)",
            sb.same.display()
        ))
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        check(&checks, &format!("{claude} config version")),
        (
            &json!(true),
            &json!(format!("matches what muster {version} writes")),
            &Value::Null
        )
    );
    assert_eq!(
        check(&checks, &format!("{claude} machine path")).1,
        "none: every file runs `muster` from PATH"
    );
    assert_eq!(
        check(&checks, &format!("{codex} trust")),
        (
            &json!(true),
            &json!(format!(
                "written in {}",
                sb.home.join(".codex/config.toml").display()
            )),
            &Value::Null
        )
    );
    assert_eq!(
        check(&checks, &format!("{claude} trust")),
        (
            &json!(true),
            &json!(format!(
                "written in {}",
                sb.p(".claude/settings.json").display()
            )),
            &Value::Null
        )
    );
    assert!(
        !checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("gemini")),
        "{checks:#?}"
    );
    for c in &checks {
        let name = c["name"].as_str().unwrap();
        if name.starts_with("claude") || name.starts_with("codex") {
            assert_eq!(c["ok"], true, "{c}");
        }
    }

    // The same files with no muster on PATH: the binary is missing, and this
    // muster would move the path into local settings.
    let (_, checks) = sb.doctor(&sb.none);
    let reinstall = format!("muster install claude --project {dir}");
    assert_eq!(
        check(&checks, &format!("{claude} binary")),
        (
            &json!(false),
            &json!("`muster` is not on PATH"),
            &json!(format!(
                "put muster on PATH (e.g. `ln -s {} ~/.local/bin/muster`), or run `{reinstall}` to name this binary \
in local settings",
                binary()
            ))
        )
    );
    assert_eq!(check(&checks, &format!("{claude} config version")).0, false);
    assert_eq!(
        check(&checks, &format!("{claude} config version")).2,
        &json!(format!("run `{reinstall}`"))
    );

    // A hook taken out, and Codex's trust taken back.
    let settings_path = sb.p(".claude/settings.json");
    let mut settings = json_of(&sb, &settings_path);
    settings["hooks"].as_object_mut().unwrap().remove("Stop");
    settings
        .as_object_mut()
        .unwrap()
        .remove("enabledMcpjsonServers");
    std::fs::write(
        &settings_path,
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    let user_config = sb.home.join(".codex/config.toml");
    let text = sb.read(&user_config);
    let kept: String = text.split("\n[").next().unwrap().to_string();
    std::fs::write(&user_config, format!("{kept}\n")).unwrap();
    let (_, checks) = sb.doctor(&sb.same);
    assert_eq!(
        check(&checks, &format!("{claude} hooks")),
        (
            &json!(false),
            &json!("1 of 6 missing: Stop"),
            &json!(format!("run `{reinstall}`"))
        )
    );
    assert_eq!(
        check(&checks, &format!("{codex} trust")),
        (
            &json!(false),
            &json!(format!(
                "not written (or stale) in {}",
                user_config.display()
            )),
            &json!(format!("run `muster install codex --project {dir}`"))
        )
    );
    assert_eq!(
        check(&checks, &format!("{claude} trust")),
        (
            &json!(false),
            &json!(format!(
                "not written (or stale) in {}",
                settings_path.display()
            )),
            &json!(format!("run `{reinstall}`"))
        )
    );
    let out = sb.run(&sb.same, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "✗ {claude} hooks: 1 of 6 missing: Stop\n  fix: run `{reinstall}`\n"
        )),
        "{text}"
    );
    assert!(text.contains("✗ daemon reachable: "), "{text}");
    assert!(text.contains("  fix: start it: `muster serve`"), "{text}");
}

// Proves doctor flags a project file that names a machine path (a Codex
// install without muster on PATH) and says what to run, and that a Claude
// Code install keeping its path in local settings passes that check.
#[test]
fn doctor_names_the_files_that_hold_a_machine_path() {
    let sb = Sandbox::new();
    let dir = sb.project.display().to_string();
    let bin = binary();
    sb.install(&sb.none, &["codex"]);
    sb.install(&sb.none, &["claude"]);
    let (_, checks) = sb.doctor(&sb.none);
    let (ok, detail, fix) = check(&checks, &format!("codex (project {dir}) machine path"));
    assert_eq!(ok, false);
    assert_eq!(
        detail,
        &json!(format!(
            "{config} names {bin}; {hooks} names {bin}: a path on this machine only, in files a team commits (a \
teammate's checkout would run a path that does not exist for them)",
            config = sb.p(".codex/config.toml").display(),
            hooks = sb.p(".codex/hooks.json").display()
        ))
    );
    assert_eq!(
        fix,
        &json!(format!(
            "put this muster on PATH as `muster` (e.g. `ln -s {bin} ~/.local/bin/muster`) and run `muster install \
codex --project {dir}`; until then do not commit these files"
        ))
    );
    let (ok, detail, _) = check(&checks, &format!("claude (project {dir}) machine path"));
    assert_eq!(ok, true);
    assert_eq!(
        detail,
        &json!(format!(
            "only in local settings, not committed: {local} names {bin}; {claude_json} names {bin}",
            local = sb.p(".claude/settings.local.json").display(),
            claude_json = sb.home.join(".claude.json").display()
        ))
    );
    assert_eq!(
        check(&checks, &format!("claude (project {dir}) binary")).1,
        &json!(format!("{bin} exists"))
    );
}

// Proves a user install is checked too: Codex's hook hashes in the user's
// config count as its trust, and the user's files may name the binary.
#[test]
fn doctor_checks_a_user_install() {
    let sb = Sandbox::new();
    let bin = binary();
    sb.install(&sb.same, &["codex", "--user"]);
    let (_, checks) = sb.doctor(&sb.same);
    let codex = format!("codex (user {})", sb.home.display());
    let config = sb.home.join(".codex/config.toml");
    assert_eq!(
        check(&checks, &format!("{codex} trust")),
        (
            &json!(true),
            &json!(format!("written in {}", config.display())),
            &Value::Null
        )
    );
    assert_eq!(
        check(&checks, &format!("{codex} machine path")).1,
        &json!(format!(
            "only in local settings, not committed: {} names {bin}; {} names {bin}",
            config.display(),
            sb.home.join(".codex/hooks.json").display()
        ))
    );
    assert_eq!(check(&checks, &format!("{codex} hooks")).0, true);
    assert!(
        !checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("codex (project")),
        "{checks:#?}"
    );
}
