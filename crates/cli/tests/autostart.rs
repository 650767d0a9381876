//! The daemon starts on first use: a client command, `muster hook` or
//! `muster mcp` that finds nothing at its loopback daemon address starts
//! `muster serve` for it, once, however many race, and `muster serve`
//! refuses a second daemon on a data directory that has one.
//!
//! Each test has a home of its own (the data directory is its
//! `~/.local/state/muster`, as the client resolves it, unless the test sets
//! MUSTER_DATA_DIR), its own runtime directory (where the started daemon
//! writes its local key and socket, and the clients find them) and an
//! address on a free loopback port. Every daemon a test started is killed
//! when the test ends, pass or fail: each `muster serve` process whose
//! command line names the test's data directory.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{payload, shim_whoami, wait_until, BIN};
use serde_json::Value;

/// A home, runtime directory and daemon address of a test's own, with
/// nothing running; the daemons started there are killed on drop.
struct Fresh {
    root: tempfile::TempDir,
    url: String,
    port: u16,
    /// MUSTER_DATA_DIR, when the test gives one.
    data_dir_var: Option<PathBuf>,
}

impl Fresh {
    fn new() -> Fresh {
        let root = tempfile::tempdir().unwrap();
        for dir in ["home", "run", "tmp"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let port = free_port();
        Fresh {
            root,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir_var: None,
        }
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    /// The data directory the clients resolve (and the daemon they start uses).
    fn data_dir(&self) -> PathBuf {
        self.data_dir_var
            .clone()
            .unwrap_or_else(|| self.home().join(".local/state/muster"))
    }

    /// `muster <args>` as a person here would run it: nothing of whatever
    /// runs the tests leaks in (no MUSTER_* variable but those set here).
    fn muster(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.home())
            .env("USER", "tester")
            .env("XDG_RUNTIME_DIR", self.root.path().join("run"))
            .env("TMPDIR", self.root.path().join("tmp"))
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("MUSTER_URL", &self.url)
            .env("MUSTER_OPERATOR", "tester")
            .stdin(Stdio::null());
        if let Some(dir) = &self.data_dir_var {
            cmd.env("MUSTER_DATA_DIR", dir);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.muster(args).output().unwrap()
    }

    /// The `muster serve` processes serving this test's data directory.
    fn daemons(&self) -> Vec<u32> {
        serve_processes(&self.data_dir())
    }

    /// What the running daemon wrote into the data directory's lock file.
    fn holder(&self) -> Value {
        let text = std::fs::read_to_string(self.data_dir().join("daemon.lock"))
            .expect("the daemon wrote its lock file");
        serde_json::from_str(text.trim()).unwrap()
    }

    /// `GET /healthz` at the address answers (it needs no key).
    fn answers(&self) -> bool {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .get(format!("{}/healthz", self.url))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let pids = self.daemons();
        for pid in &pids {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let gone = wait_until(Duration::from_secs(6), || self.daemons().is_empty());
        if gone.is_none() {
            for pid in self.daemons() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// A loopback port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every live `muster serve` whose command line names `data_dir`, from /proc.
fn serve_processes(data_dir: &Path) -> Vec<u32> {
    let wanted = data_dir.as_os_str().as_encoded_bytes().to_vec();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let serves = args.get(1) == Some(&&b"serve"[..]);
        if serves && args.contains(&wanted.as_slice()) {
            pids.push(pid);
        }
    }
    pids
}

/// The session a process leads or belongs to (`/proc/<pid>/stat`, field 6).
fn session_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(3).unwrap().parse().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// Proves a client command with nothing at its loopback address starts the
// daemon and gets its answer: `muster roster --json` exits 0 with the
// roster, says on stderr that it started one (pid, data directory, log);
// one `muster serve` runs, for that address and the data directory the
// client resolved (its home's ~/.local/state/muster), detached in a session
// of its own, its output in muster.log there, its lock file naming its pid,
// address and that a client started it; the next command just uses it.
#[test]
fn a_command_with_nothing_running_starts_the_daemon_and_gets_its_answer() {
    let fresh = Fresh::new();
    assert!(!fresh.answers(), "nothing runs there yet");
    let started = Instant::now();
    let out = fresh.run(&["roster", "--json"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let roster: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(roster["sessions"], serde_json::json!([]), "{roster}");
    let daemons = fresh.daemons();
    assert_eq!(daemons.len(), 1, "one daemon: {daemons:?}");
    let pid = daemons[0];
    let data_dir = fresh.data_dir();
    let note = stderr(&out);
    assert!(
        note.contains(&format!(
            "muster: no daemon was running at {}, so one was started (pid {pid}, data in {}",
            fresh.url,
            data_dir.display()
        )),
        "{note}"
    );
    assert!(note.contains("MUSTER_AUTOSTART=0 turns this off"), "{note}");
    let holder = fresh.holder();
    assert_eq!(holder["pid"], pid, "{holder}");
    assert_eq!(holder["addr"], format!("127.0.0.1:{}", fresh.port));
    assert_eq!(holder["autostarted"], true);
    assert_eq!(
        session_of(pid),
        pid,
        "the daemon leads a session of its own"
    );
    assert_ne!(session_of(pid), session_of(std::process::id()));
    // The daemon answers as soon as its port is open and prints its
    // listening line just after, so the line may trail the first answer.
    let listening = format!("muster listening on {}", fresh.url);
    let read_log = || std::fs::read_to_string(data_dir.join("muster.log")).unwrap_or_default();
    wait_until(Duration::from_secs(5), || read_log().contains(&listening));
    let log = read_log();
    assert!(log.contains("started on first use by pid"), "{log}");
    assert!(log.contains(&listening), "{log}");

    let again = fresh.run(&["roster", "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).is_empty(), "{}", stderr(&again));
    assert_eq!(fresh.daemons(), [pid], "the same daemon");
    eprintln!("first roster, daemon started, answered in {took:?}");
}

// Proves callers that race start one daemon: four clients at once (two
// `muster send`, two `muster roster`) with nothing running all succeed,
// exactly one says it started the daemon, one `muster serve` runs for the
// data directory, and its log records one start.
#[test]
fn racing_callers_start_exactly_one_daemon() {
    let fresh = Arc::new(Fresh::new());
    let barrier = Arc::new(Barrier::new(4));
    let started = Instant::now();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let (fresh, barrier) = (fresh.clone(), barrier.clone());
            std::thread::spawn(move || {
                let body = format!("hello {i}");
                let args: Vec<&str> = if i % 2 == 0 {
                    vec!["send", "op:tester", &body, "--json"]
                } else {
                    vec!["roster", "--json"]
                };
                let mut cmd = fresh.muster(&args);
                barrier.wait();
                cmd.output().unwrap()
            })
        })
        .collect();
    let outs: Vec<Output> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let took = started.elapsed();
    for out in &outs {
        assert!(out.status.success(), "{}", stderr(out));
        let _: Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    }
    let notes = outs
        .iter()
        .filter(|o| stderr(o).contains("so one was started"))
        .count();
    assert_eq!(notes, 1, "one caller started it");
    let daemons = fresh.daemons();
    assert_eq!(daemons.len(), 1, "one daemon: {daemons:?}");
    assert_eq!(fresh.holder()["pid"], daemons[0]);
    let log = std::fs::read_to_string(fresh.data_dir().join("muster.log")).unwrap();
    assert_eq!(log.matches("started on first use").count(), 1, "{log}");
    let inbox = fresh.run(&["inbox", "--all", "--json"]);
    let inbox: Value = serde_json::from_slice(&inbox.stdout).unwrap();
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 2, "{inbox}");
    eprintln!("four racing callers answered in {took:?}");
}

// Proves `muster hook` with nothing running stays within its bound: it
// starts the daemon, exits 0 well within 2.5 s (the hook's 2 s deadline
// and process start), and either carries the daemon's answer (the daemon
// was up in time) or fails open with one line saying a daemon was started;
// either way the daemon is up afterwards and the next hook gets an answer.
#[test]
fn a_hook_with_nothing_running_answers_within_its_bound_and_leaves_the_daemon_up() {
    let fresh = Fresh::new();
    let hook = |session: &str| {
        let started = Instant::now();
        let mut child = fresh
            .muster(&["hook", "session-start"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(payload(session, "SessionStart").to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (out, started.elapsed())
    };
    let (out, took) = hook("auto-hook-1");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(took < Duration::from_millis(2_500), "took {took:?}");
    let answered = !out.stdout.is_empty();
    if answered {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["hookSpecificOutput"]["additionalContext"]
                .as_str()
                .is_some_and(|c| c.contains("muster")),
            "{v}"
        );
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    } else {
        let line = stderr(&out);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("a daemon was started (pid"), "{line}");
        assert!(line.contains("continuing without muster"), "{line}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || fresh.answers()).is_some(),
        "the daemon is up afterwards"
    );
    assert_eq!(fresh.daemons().len(), 1);
    let (next, _) = hook("auto-hook-2");
    assert!(!next.stdout.is_empty(), "{}", stderr(&next));
    let roster = fresh.run(&["roster", "--json"]);
    let roster = String::from_utf8_lossy(&roster.stdout);
    assert!(roster.contains("auto-hook-2"), "{roster}");
    eprintln!(
        "first hook {} in {took:?}",
        if answered { "answered" } else { "failed open" }
    );
}

// Proves `muster mcp` with nothing running starts the daemon and links to
// it: a whoami over the shim answers with the session, not "unreachable".
#[test]
fn a_shim_with_nothing_running_starts_the_daemon_and_links() {
    let fresh = Fresh::new();
    let mut cmd = fresh.muster(&["mcp"]);
    cmd.env("MUSTER_SESSION_ID", "auto-shim-1")
        .env("MUSTER_CHANNELS", "off")
        .stderr(Stdio::null());
    let (text, is_error) = shim_whoami(cmd);
    assert!(!is_error, "{text}");
    assert!(text.contains("auto-shim-1"), "{text}");
    assert_eq!(fresh.daemons().len(), 1);
    assert_eq!(fresh.holder()["autostarted"], true);
}

// Proves `muster serve` on a data directory a daemon already serves refuses
// (exit 4) naming the directory and that daemon's pid and address, and
// that a client whose address is another port but whose data directory is
// that one starts nothing and says where the daemon listens.
#[test]
fn serve_on_a_served_data_directory_refuses_naming_the_daemon() {
    let mut fresh = Fresh::new();
    fresh.data_dir_var = Some(fresh.root.path().join("data"));
    assert!(fresh.run(&["status"]).status.success());
    let pid = fresh.daemons()[0];
    let data_dir = fresh.data_dir();
    let out = fresh.run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: a muster daemon already runs on the data directory {} (pid {pid}, at {}); \
             stop it first (kill {pid}), or give this one a data directory of its own \
             (--data-dir or MUSTER_DATA_DIR)\n",
            data_dir.display(),
            fresh.url
        )
    );

    let other = format!("http://127.0.0.1:{}", free_port());
    let out = fresh
        .muster(&["roster"])
        .env("MUSTER_URL", &other)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the muster daemon on its data directory {} listens at {}, not here",
            data_dir.display(),
            fresh.url
        )),
        "{err}"
    );
    assert_eq!(fresh.daemons(), [pid], "nothing else started");
}

// Proves MUSTER_AUTOSTART=0 starts nothing: the command fails as it always
// did (exit 3, "cannot reach"), the hook fails open, no daemon runs, and
// neither made a data directory; and that an https:// loopback address
// (a TLS daemon muster cannot set up by itself) is never started either.
#[test]
fn autostart_off_or_a_tls_address_starts_nothing() {
    let fresh = Fresh::new();
    let out = fresh
        .muster(&["roster"])
        .env("MUSTER_AUTOSTART", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: cannot reach the muster daemon at {} (connection refused); start it",
            fresh.url
        )),
        "{}",
        stderr(&out)
    );
    let mut hook = fresh
        .muster(&["hook", "prompt-submit"])
        .env("MUSTER_AUTOSTART", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    hook.stdin
        .take()
        .unwrap()
        .write_all(
            payload("auto-off", "UserPromptSubmit")
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let hook = hook.wait_with_output().unwrap();
    assert_eq!(hook.status.code(), Some(0));
    assert!(hook.stdout.is_empty());
    assert!(
        stderr(&hook).starts_with("muster hook: daemon unreachable at "),
        "{}",
        stderr(&hook)
    );
    let tls = fresh
        .muster(&["roster"])
        .env("MUSTER_URL", format!("https://127.0.0.1:{}", fresh.port))
        .output()
        .unwrap();
    assert_eq!(tls.status.code(), Some(3), "{}", stderr(&tls));
    std::thread::sleep(Duration::from_millis(300));
    assert!(fresh.daemons().is_empty());
    assert!(!fresh.data_dir().exists(), "no data directory was made");
    assert!(!fresh.answers());
}
