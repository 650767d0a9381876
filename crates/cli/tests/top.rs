//! `muster top` driven as a person would: the real binary in a tmux pane.

mod common;
#[path = "support/tmux.rs"]
mod tmux;

use std::time::Duration;

use common::*;
use serde_json::json;
use tmux::Tmux;

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
    let tmux = Tmux::start(&top_command(&d.url, &code_file), 160, 40);
    let pane = tmux.wait_for_all(
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
    let pane = tmux.wait_for_all(
        &["message.sent", "hello from the test"],
        Duration::from_secs(10),
    );
    assert!(
        pane.is_ok(),
        "no event line for the message:\n{}",
        pane.unwrap_err()
    );

    tmux.press("q");
    let exited = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&code_file).is_ok_and(|c| c.ends_with('\n'))
            && tmux.display("#{pane_dead}") == "1"
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
