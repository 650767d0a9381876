//! The real Claude Code, offline, in a throwaway home: `claude -p` turns
//! against the Messages API stub, and `claude plugin …` commands, with
//! nothing of the environment running the tests leaking in. For the tests
//! that set Claude Code up some other way than claude_code.rs's
//! `muster install claude --project` (the plugin, http hooks).

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::BIN;
use super::sandbox::{harness_bin, read};

/// How long one `claude` run may take before the test gives up on it.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The Claude Code executable, or a failure that says how to get it.
pub fn claude_bin() -> PathBuf {
    harness_bin(
        "MUSTER_CLAUDE_BIN",
        "claude-code/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        "install-claude-code.sh",
    )
}

/// A directory holding `muster`, a link to the binary under test, to put
/// first on PATH: what runs `muster` by name (a plugin's hooks and MCP
/// server) runs this build.
pub fn muster_on_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("muster");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    bin
}

/// `dir` first, then the PATH the tests run with.
pub fn path_with(dir: &Path) -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&rest));
    std::env::join_paths(dirs).unwrap()
}

/// Claude Code offline: its binary, a home, a project to run in, the stub's
/// URL and the variables every run gets.
pub struct Claude {
    pub bin: PathBuf,
    pub home: PathBuf,
    pub project: PathBuf,
    pub stub_url: String,
    pub path: OsString,
    pub env: Vec<(String, String)>,
    runs: std::cell::Cell<u32>,
}

impl Claude {
    pub fn new(home: &Path, project: &Path, stub_url: &str, path: OsString) -> Claude {
        Claude {
            bin: claude_bin(),
            home: home.to_path_buf(),
            project: project.to_path_buf(),
            stub_url: stub_url.to_string(),
            path,
            env: Vec::new(),
            runs: std::cell::Cell::new(0),
        }
    }

    /// Adds a variable to every run's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Claude {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `claude <args>` in the project, offline, with only this environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(&self.project)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("USER", "tester")
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("TMPDIR", std::env::temp_dir())
            .env("ANTHROPIC_BASE_URL", &self.stub_url)
            .env("ANTHROPIC_API_KEY", "sk-ant-test-offline")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_ERROR_REPORTING", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            // A hook or shim never starts a daemon of its own: the test runs the one they talk to.
            .env("MUSTER_AUTOSTART", "0")
            .env("MUSTER_OPERATOR", "tester")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `claude <args>` (not a turn: `plugin …`) to the end, within
    /// [`RUN_LIMIT`]; asserts it succeeded; returns its output.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "claude {args:?} exited with {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `claude <args>` to the end, within [`RUN_LIMIT`], whatever its status.
    pub fn output(&self, args: &[&str]) -> Output {
        let n = self.next_run();
        let out = self.home.join(format!("claude{n}.stdout"));
        let err = self.home.join(format!("claude{n}.stderr"));
        let mut child = self
            .command(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for claude") {
                break status;
            }
            if start.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "claude {args:?} did not finish within {RUN_LIMIT:?}\nstdout: {}\nstderr: {}",
                    read(&out),
                    read(&err)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&out).unwrap_or_default(),
            stderr: std::fs::read(&err).unwrap_or_default(),
        }
    }

    /// Runs one `claude <args> --output-format json` turn to the end;
    /// asserts it succeeded; returns its JSON result.
    pub fn turn(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output-format", "json"]);
        let out = self.ok(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "claude {args:?} printed no JSON result ({e})\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            result["is_error"],
            false,
            "claude {args:?} reported an error: {result}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        result
    }

    fn next_run(&self) -> u32 {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        n
    }
}

/// The main-loop requests among model request bodies: those that offer tools
/// (side requests such as titles offer none).
pub fn main_loop(bodies: Vec<Value>) -> Vec<Value> {
    bodies
        .into_iter()
        .filter(|b| b["tools"].as_array().is_some_and(|t| !t.is_empty()))
        .collect()
}

/// The `tool_result` blocks of a request's last message, as JSON text.
pub fn last_tool_results(body: &Value) -> String {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    last["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_result")
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
