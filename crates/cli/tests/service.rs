//! `muster service install|uninstall|status` on Linux: the systemd user
//! unit it writes (checked by `systemd-analyze verify`), and what it does
//! with a service manager that works, one without a user session, and none
//! at all. `systemctl` here is always a stand-in script on a PATH of the
//! test's own (it records its arguments, and answers as a working systemd
//! or as one without a session bus), or absent: nothing is ever enabled on
//! the machine running the tests. HOME is a temp dir.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{wait_until, BIN};
use serde_json::Value;

/// The stand-in `systemctl`: logs its arguments, then answers as
/// `FAKE_SYSTEMCTL` says: `ok` (a working user manager, the service
/// enabled and active once enabled) or `nobus` (no user session).
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMCTL_LOG"
if [ "$FAKE_SYSTEMCTL" = nobus ]; then
  echo "Failed to connect to bus: No medium found" >&2
  exit 1
fi
# Shell built-ins only: PATH holds nothing else.
case "$*" in
  *"enable --now"*) : > "$FAKE_SYSTEMCTL_LOG.enabled" ;;
  *is-enabled*) if [ -e "$FAKE_SYSTEMCTL_LOG.enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
  *is-active*) if [ -e "$FAKE_SYSTEMCTL_LOG.enabled" ]; then echo active; else echo inactive; exit 3; fi ;;
  *MainPID*) echo 0 ;;
esac
exit 0
"#;

/// A home of a test's own, and a PATH holding only what the test puts there.
struct Home {
    root: tempfile::TempDir,
    /// The stand-in systemctl's answers; `None`: no systemctl on PATH.
    systemctl: Option<&'static str>,
}

impl Home {
    fn new(systemctl: Option<&'static str>) -> Home {
        let root = tempfile::tempdir().unwrap();
        for dir in ["home", "bin", "run"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        if systemctl.is_some() {
            let fake = root.path().join("bin/systemctl");
            std::fs::write(&fake, FAKE_SYSTEMCTL).unwrap();
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Home { root, systemctl }
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    fn unit(&self) -> PathBuf {
        self.home().join(".config/systemd/user/muster.service")
    }

    fn data_dir(&self) -> PathBuf {
        self.home().join(".local/state/muster")
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.path().join("systemctl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn muster(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", self.root.path().join("bin"))
            .env("HOME", self.home())
            .env("USER", "tester")
            .env("XDG_RUNTIME_DIR", self.root.path().join("run"))
            .env("MUSTER_URL", "http://127.0.0.1:7420")
            .env("FAKE_SYSTEMCTL_LOG", self.root.path().join("systemctl.log"))
            .env("FAKE_SYSTEMCTL", self.systemctl.unwrap_or("none"))
            .stdin(Stdio::null());
        cmd
    }

    fn json(&self, args: &[&str]) -> (Option<i32>, Value) {
        let out: Output = self.muster(args).output().unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "muster {args:?} printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), v)
    }
}

/// The unit's ExecStart line as muster writes it for this home.
fn exec_start(home: &Home, port: u16) -> String {
    format!(
        "ExecStart={} serve --bind 127.0.0.1:{port} --data-dir {}",
        std::fs::canonicalize(BIN).unwrap().display(),
        home.data_dir().display()
    )
}

fn commands(report: &Value) -> Vec<String> {
    report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

// Proves `install --dry-run --json` prints the unit (ExecStart naming this
// muster, serve for the clients' address and data directory) and the
// systemctl commands, and writes and runs nothing.
#[test]
fn install_dry_run_prints_the_unit_and_the_commands_and_changes_nothing() {
    let home = Home::new(Some("ok"));
    let (code, report) = home.json(&["service", "install", "--dry-run", "--json"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["platform"], "systemd");
    assert_eq!(report["file"], home.unit().display().to_string());
    assert_eq!(report["file_status"], "created");
    let unit = report["text"].as_str().unwrap();
    assert!(unit.lines().any(|l| l == exec_start(&home, 7420)), "{unit}");
    assert_eq!(
        commands(&report),
        [
            "systemctl --user daemon-reload",
            "systemctl --user enable --now muster.service"
        ]
    );
    assert_eq!(report["logs"], "journalctl --user -u muster");
    assert!(!home.unit().exists(), "nothing written");
    assert!(home.calls().is_empty(), "nothing run: {:?}", home.calls());

    let text = home
        .muster(&["service", "install", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.starts_with(&format!("Would write {}:", home.unit().display())),
        "{text}"
    );
    assert!(
        text.contains("Would run:\n  systemctl --user daemon-reload\n"),
        "{text}"
    );
    assert!(text.ends_with("Nothing was changed (dry run).\n"), "{text}");
}

// Proves systemd accepts the unit muster writes: `systemd-analyze verify
// --user` (in a runtime directory of the test's own) finds nothing to say
// of it, while it does complain of a unit with a bad line, so the check bites.
#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let home = Home::new(Some("ok"));
    let (_, report) = home.json(&["service", "install", "--dry-run", "--json"]);
    let unit = report["text"].as_str().unwrap();
    let dir = home.root.path().join("verify");
    std::fs::create_dir_all(&dir).unwrap();
    let verify = |text: &str| {
        let path = dir.join("muster.service");
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--user", "--man=no"])
            .arg(&path)
            .env("XDG_RUNTIME_DIR", home.root.path().join("run"))
            .output()
            .expect("systemd-analyze runs (apt-get install systemd)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, complaints) = verify(unit);
    assert!(
        ok && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
    let (_, complaints) = verify(&unit.replace("Type=exec", "Type=exe"));
    assert!(
        complaints.contains("Failed to parse service type"),
        "{complaints}"
    );
}

// Proves install, status and uninstall with no systemd user session (as in
// a container, or over ssh without lingering): install writes the unit
// with the right ExecStart but exits 1 saying there is no user session and
// how to start it by hand; status says installed, enabled and running
// unknown (why), and where the logs are; uninstall removes the unit.
#[test]
fn without_a_user_session_the_unit_is_written_and_the_error_says_how_to_start_it() {
    let home = Home::new(Some("nobus"));
    let (code, report) = home.json(&["service", "install", "--json"]);
    assert_eq!(code, Some(1), "{report}");
    let unit = std::fs::read_to_string(home.unit()).expect("the unit is written");
    assert!(unit.lines().any(|l| l == exec_start(&home, 7420)), "{unit}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "the systemd user unit is written to {}, but there is no systemd user session here (`systemctl --user daemon-reload` said: Failed to connect to bus: No medium found)",
            home.unit().display()
        )),
        "{error}"
    );
    assert!(
        error.contains(
            "systemctl --user daemon-reload && systemctl --user enable --now muster.service"
        ),
        "{error}"
    );
    assert_eq!(report["started"], false);

    let (code, status) = home.json(&["service", "status", "--json"]);
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status["installed"], true);
    assert_eq!(status["service"]["enabled"], Value::Null);
    assert_eq!(status["service"]["running"], Value::Null);
    assert!(
        status["service"]["error"]
            .as_str()
            .unwrap()
            .starts_with("there is no systemd user session here"),
        "{status}"
    );
    assert_eq!(status["logs"], "journalctl --user -u muster");
    assert_eq!(status["daemon"], Value::Null);
    let text = home.muster(&["service", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("(installed)"), "{text}");
    assert!(
        text.contains("  logs      journalctl --user -u muster\n"),
        "{text}"
    );

    let (code, removed) = home.json(&["service", "uninstall", "--json"]);
    assert_eq!(code, Some(0), "{removed}");
    assert_eq!(removed["file_status"], "removed");
    assert!(!home.unit().exists());
}

// Proves that with no systemctl at all install still writes the unit and
// says systemctl is missing, and uninstall removes it.
#[test]
fn without_systemctl_the_unit_is_written_and_the_error_says_so() {
    let home = Home::new(None);
    let (code, report) = home.json(&["service", "install", "--json"]);
    assert_eq!(code, Some(1), "{report}");
    assert!(home.unit().exists());
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("systemctl is not on PATH (is systemd running this system?)"),
        "{error}"
    );
    let (_, status) = home.json(&["service", "status", "--json"]);
    assert_eq!(status["installed"], true);
    assert!(status["service"]["error"]
        .as_str()
        .unwrap()
        .contains("not on PATH"));
    let (code, _) = home.json(&["service", "uninstall", "--json"]);
    assert_eq!(code, Some(0));
    assert!(!home.unit().exists());
    let (code, again) = home.json(&["service", "uninstall", "--json"]);
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(again["file_status"], "absent");
}

// Proves install with a working user manager: a daemon a client had
// started on first use (on the same data directory) is stopped so the
// service takes over, systemd is reloaded and the unit enabled and started
// (in that order), installing again changes nothing, status reports it
// enabled and running, and uninstall disables and stops it, removes the
// unit and reloads systemd.
#[test]
fn with_systemd_install_takes_over_from_a_started_daemon_and_uninstall_undoes_it() {
    let home = Home::new(Some("ok"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let started = home
        .muster(&["status"])
        .env("MUSTER_URL", &url)
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let lock = std::fs::read_to_string(home.data_dir().join("daemon.lock")).unwrap();
    let pid = serde_json::from_str::<Value>(lock.trim()).unwrap()["pid"]
        .as_u64()
        .unwrap();
    let _cleanup = KillOnDrop(pid, home.data_dir());

    let (code, report) = {
        let out = home
            .muster(&["service", "install", "--json"])
            .env("MUSTER_URL", &url)
            .output()
            .unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["started"], true);
    assert_eq!(report["file_status"], "created");
    assert_eq!(
        report["notes"][0],
        format!("stopped the daemon started on first use (pid {pid}) so that the service runs it")
    );
    assert!(
        wait_until(Duration::from_secs(5), || !serves(pid, &home.data_dir())).is_some(),
        "the daemon started on first use is gone"
    );
    let unit = std::fs::read_to_string(home.unit()).unwrap();
    assert!(unit.lines().any(|l| l == exec_start(&home, port)), "{unit}");
    assert_eq!(
        home.calls(),
        ["--user daemon-reload", "--user enable --now muster.service"]
    );

    let again = home
        .muster(&["service", "install", "--json"])
        .env("MUSTER_URL", &url)
        .output()
        .unwrap();
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["file_status"], "unchanged", "{again}");

    let (code, status) = home.json(&["service", "status", "--json"]);
    assert_eq!(code, Some(0), "{status}");
    assert_eq!(status["service"]["enabled"], true, "{status}");
    assert_eq!(status["service"]["running"], true);
    assert_eq!(status["service"]["state"], "active");

    let (code, removed) = home.json(&["service", "uninstall", "--json"]);
    assert_eq!(code, Some(0), "{removed}");
    assert!(!home.unit().exists());
    let calls = home.calls();
    assert_eq!(
        calls[calls.len() - 2..],
        [
            "--user disable --now muster.service",
            "--user daemon-reload"
        ]
    );
}

// Proves a unit file muster did not write is neither replaced nor removed.
#[test]
fn a_unit_muster_did_not_write_is_left_alone() {
    let home = Home::new(Some("ok"));
    std::fs::create_dir_all(home.unit().parent().unwrap()).unwrap();
    let mine = "[Service]\nExecStart=/usr/local/bin/my-muster serve\n";
    std::fs::write(home.unit(), mine).unwrap();
    for action in ["install", "uninstall"] {
        let (code, report) = home.json(&["service", action, "--json"]);
        assert_eq!(code, Some(1), "{report}");
        assert_eq!(report["error"]["code"], "not_ours", "{report}");
    }
    assert_eq!(std::fs::read_to_string(home.unit()).unwrap(), mine);
    assert!(home.calls().is_empty());
}

/// Whether process `pid` is a `muster serve` of `data_dir` (not a process
/// that got its number since).
fn serves(pid: u64, data_dir: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.get(1) == Some(&&b"serve"[..]) && args.contains(&data_dir.as_os_str().as_encoded_bytes())
}

/// Kills the daemon `pid` of `data_dir` at the end of a test, however it ends.
struct KillOnDrop(u64, PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if serves(self.0, &self.1) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}
