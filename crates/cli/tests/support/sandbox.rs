//! A throwaway home and project for running a real harness: HOME, XDG_* and
//! CODEX_HOME all point into one temp dir, so neither `muster install` nor the
//! harness ever touches the real user's files. Also finds a harness binary
//! installed by its `scripts/install-<harness>.sh`, and holds the helpers the
//! real-harness tests (claude_code.rs, codex.rs, opencode.rs, gemini.rs) share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::{TestDaemon, BIN};

pub struct Sandbox {
    _root: tempfile::TempDir,
    /// The project the harness runs in (canonical path).
    pub project: PathBuf,
    /// HOME for muster and the harness (canonical path).
    pub home: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("sandbox dir");
        let project = root.path().join("project");
        let home = root.path().join("home");
        for dir in [&project, &home] {
            std::fs::create_dir_all(dir).unwrap();
        }
        Sandbox {
            project: project.canonicalize().unwrap(),
            home: home.canonicalize().unwrap(),
            _root: root,
        }
    }

    pub fn config_home(&self) -> PathBuf {
        self.home.join(".config")
    }

    pub fn codex_home(&self) -> PathBuf {
        self.home.join(".codex")
    }

    /// Clears `cmd`'s environment down to PATH plus the sandbox's home
    /// variables: nothing of whatever runs the tests (a harness session
    /// exporting its own variables, a real CODEX_HOME) leaks in.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.home)
            .env("USER", "tester")
            .env("LANG", "C.UTF-8")
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("CODEX_HOME", self.codex_home())
            .env("TMPDIR", std::env::temp_dir())
            // A harness's hooks and shims never start a daemon of their own
            // on first use: the test runs the one they talk to.
            .env("MUSTER_AUTOSTART", "0")
    }

    /// `muster install <harness> --project <project> <extra>`; asserts exit 0; returns stdout.
    pub fn install(&self, harness: &str, extra: &[&str]) -> String {
        let project = self.project.to_str().expect("a UTF-8 project path");
        let mut args = vec![harness, "--project", project];
        args.extend_from_slice(extra);
        self.muster_install(&args)
    }

    /// `muster install <harness> --user <extra>`; asserts exit 0; returns stdout.
    pub fn install_user(&self, harness: &str, extra: &[&str]) -> String {
        let mut args = vec![harness, "--user"];
        args.extend_from_slice(extra);
        self.muster_install(&args)
    }

    fn muster_install(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        self.env(&mut cmd)
            .arg("install")
            .args(args)
            .current_dir(&self.project)
            .stdin(Stdio::null());
        let out = cmd.output().expect("run muster install");
        assert!(
            out.status.success(),
            "muster install {args:?} failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Each file's bytes (None: absent), for comparing before and after.
pub fn snapshot(paths: &[PathBuf]) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    paths
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).ok()))
        .collect()
}

/// A UUID-shaped id, unique per call.
pub fn new_uuid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        n & 0xffff,
        (nanos >> 48) & 0xfff,
        (nanos >> 36) & 0xfff,
        nanos & 0xffff_ffff_ffff
    )
}

/// The harness executable: `$<env_var>` if set, else `<cache>/<rel>` where
/// `scripts/<script>` installs it. Fails (never skips) naming the script.
pub fn harness_bin(env_var: &str, rel: &str, script: &str) -> PathBuf {
    let how = format!(
        "run scripts/{script} (it installs the pinned version from npm into ~/.cache/muster-harnesses and prints \
         the executable's path) and export {env_var}=<that path>"
    );
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{env_var}={} does not exist: {how}",
            p.display()
        );
        return p;
    }
    let p = cache_root().join(rel);
    assert!(
        p.is_file(),
        "the harness is not installed ({env_var} is unset and {} does not exist): {how}",
        p.display()
    );
    p
}

/// Where the install scripts keep the harnesses: `$MUSTER_HARNESS_CACHE`, else `~/.cache/muster-harnesses`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("MUSTER_HARNESS_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/muster-harnesses"))
        })
        .expect("neither MUSTER_HARNESS_CACHE nor HOME is set")
}

/// A harness process whose output goes to files; killed if the test ends while it runs.
pub struct Running {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
    pub what: String,
}

impl Running {
    /// Starts `cmd` with stdout and stderr going to `<dir>/<name>.stdout|stderr`.
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Running {
        let out = dir.join(format!("{name}.stdout"));
        let err = dir.join(format!("{name}.stderr"));
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Running {
            child,
            out,
            err,
            what,
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to end; asserts it succeeded; returns stdout.
    pub fn finish(mut self, limit: Duration) -> String {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the harness") {
                break status;
            }
            if start.elapsed() > limit {
                panic!(
                    "{} did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout();
        assert!(
            status.success(),
            "{} exited with {status}\nstdout: {out}\nstderr: {}",
            self.what,
            self.stderr()
        );
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of file `p` ("" if it cannot be read).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The JSON objects among the lines a harness printed.
pub fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Occurrences of `needle` in a request body (as JSON text).
pub fn count(body: &Value, needle: &str) -> usize {
    body.to_string().matches(needle).count()
}

/// The items of `list` after the last one whose `role` is `role`: in a model
/// request's conversation, what this turn added (earlier items are the
/// resumed session's history, replayed).
pub fn after_last(list: &Value, role: &str) -> Value {
    let items = list.as_array().cloned().unwrap_or_default();
    let last = items.iter().rposition(|i| i["role"] == role);
    Value::Array(items[last.map_or(0, |i| i + 1)..].to_vec())
}

/// The session `id` as the daemon knows it, whether on the roster or gone.
pub fn known_session(daemon: &TestDaemon, id: &str) -> Option<Value> {
    let (status, v) = daemon.get("/api/v1/roster?all=true");
    assert_eq!(status, 200, "{v}");
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
}

/// Another session, holding a reservation (see [`reserved_schema`]).
pub struct Holder {
    pub id: String,
    pub nickname: String,
}

impl Holder {
    /// Releases what the holder reserved; asserts it was one reservation.
    pub fn release(&self, daemon: &TestDaemon) {
        let (status, v) = daemon.post_json("/api/v1/reservations/release", &json!({"as": self.id}));
        assert_eq!((status, v["released"].as_u64()), (200, Some(1)), "{v}");
    }
}

/// Writes `create table t (id int);` to `<project>/schema.sql` and has a new
/// session in `project` reserve that file, "migrating the schema". Returns the
/// file and its holder.
pub fn reserved_schema(daemon: &TestDaemon, project: &Path) -> (PathBuf, Holder) {
    let file = project.join("schema.sql");
    std::fs::write(&file, "create table t (id int);\n").unwrap();
    let id = new_uuid();
    let (status, v) = daemon.post_json(
        "/api/v1/sessions",
        &json!({"id": id, "cwd": project.to_str().unwrap()}),
    );
    assert_eq!(status, 200, "{v}");
    let nickname = v["nickname"].as_str().unwrap().to_string();
    let (status, v) = daemon.post_json(
        "/api/v1/reservations",
        &json!({"as": id, "paths": [file.to_str().unwrap()], "reason": "migrating the schema"}),
    );
    assert_eq!(status, 200, "{v}");
    (file, Holder { id, nickname })
}
