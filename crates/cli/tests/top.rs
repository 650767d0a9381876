//! `muster top` driven as a person would: the real binary in a tmux pane.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

/// A tmux server of our own (its own socket, no user config) holding one
/// session; the whole server is killed on drop, whatever the test did.
struct Tmux {
    socket: String,
    name: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!("muster-top-{}-{nanos}", std::process::id());
        let tmux = Tmux {
            socket: unique.clone(),
            name: unique,
        };
        // remain-on-exit keeps the pane after `top` exits, so its exit status can be read.
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            &tmux.name,
            "-x",
            "160",
            "-y",
            "40",
            command,
            ";",
            "set-option",
            "-t",
            &tmux.name,
            "remain-on-exit",
            "on",
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", &self.name]).stdout)
            .into_owned()
    }

    /// Polls the pane (bounded) until every part shows; the last capture either way.
    fn wait_for(&self, parts: &[&str], limit: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let pane = self.capture();
            if parts.iter().all(|p| pane.contains(p)) {
                return Ok(pane);
            }
            if start.elapsed() > limit {
                return Err(pane);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the pane's command has exited ("1") or still runs ("0").
    fn pane_dead(&self) -> String {
        let out = self.run(&["display-message", "-p", "-t", &self.name, "#{pane_dead}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The `top` command line for a shell, with the environment `common::muster_cmd` sets;
/// the exit code goes to `code_file` (tmux does not always learn a pane's exit status).
fn top_command(url: &str, code_file: &std::path::Path) -> String {
    format!(
        "env -u MUSTER_SESSION_ID -u CLAUDE_CODE_SESSION_ID -u MUSTER_TOKEN MUSTER_OPERATOR=tester \
         XDG_CONFIG_HOME=/nonexistent-muster-test-config '{BIN}' top --url '{url}' --interval 500ms; \
         echo $? > '{}'",
        code_file.display()
    )
}

#[test]
fn top_shows_the_roster_and_events_live_and_quits_on_q() {
    // Proves `muster top` in a real terminal shows a registered session, adds an event line for a new message, and exits 0 on q with the screen restored.
    let d = TestDaemon::start(&[]);
    let id = "70000000-0000-4000-8000-000000000001";
    let (status, v) = d.post_json(
        "/api/v1/sessions",
        &json!({"id": id, "status": "refactoring db"}),
    );
    assert_eq!(status, 200, "{v}");
    let nickname = v["nickname"]
        .as_str()
        .or(v["session"]["nickname"].as_str())
        .expect("nickname")
        .to_string();

    let tmp = tempfile::tempdir().unwrap();
    let code_file = tmp.path().join("exit-code");
    let tmux = Tmux::start(&top_command(&d.url, &code_file));
    let pane = tmux.wait_for(
        &[&nickname, "refactoring db", "NICKNAME"],
        Duration::from_secs(10),
    );
    assert!(
        pane.is_ok(),
        "roster never showed {nickname}:\n{}",
        pane.unwrap_err()
    );

    let (status, v) = d.post_json(
        "/api/v1/messages",
        &json!({"as": "op:tester", "to": id, "body": "hello from the test"}),
    );
    assert_eq!(status, 200, "{v}");
    let pane = tmux.wait_for(
        &["message.sent", "hello from the test"],
        Duration::from_secs(10),
    );
    assert!(
        pane.is_ok(),
        "no event line for the message:\n{}",
        pane.unwrap_err()
    );

    let out = tmux.run(&["send-keys", "-t", &tmux.name, "q"]);
    assert!(out.status.success());
    let exited = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&code_file).is_ok_and(|c| c.ends_with('\n'))
            && tmux.pane_dead() == "1"
    });
    assert!(
        exited.is_some(),
        "top did not exit after q:\n{}",
        tmux.capture()
    );
    assert_eq!(
        std::fs::read_to_string(&code_file).unwrap().trim(),
        "0",
        "top's exit code"
    );
    let pane = tmux.capture();
    assert!(
        !pane.contains("NICKNAME"),
        "the dashboard stayed on screen (alternate screen not left):\n{pane}"
    );
}

#[test]
fn top_refuses_without_a_terminal() {
    // Proves `muster top` with stdout not a terminal exits 2 and points to the scriptable commands.
    let out = muster_cmd("http://127.0.0.1:9")
        .arg("top")
        .output()
        .expect("run muster top");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "muster top needs a terminal; use `muster tail` or `muster roster --json` in scripts"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
