//! The hook client fails open: a harness is never blocked or broken by a
//! missing daemon. These hooks run with auto-start off (MUSTER_AUTOSTART=0):
//! what a hook does with nothing at its address when it may start the
//! daemon is `autostart::a_hook_with_nothing_running_answers_within_its_bound_and_leaves_the_daemon_up`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn hook_against_a_closed_port_exits_0_quietly_and_fast() {
    // Proves `muster hook prompt-submit` with no daemon exits 0 within 2.5 s, prints nothing on stdout and one line on stderr.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let config_home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["hook", "prompt-submit", "--url", &url])
        .env("XDG_CONFIG_HOME", config_home.path())
        .env("MUSTER_AUTOSTART", "0")
        .env_remove("MUSTER_URL")
        .env_remove("MUSTER_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"session_id":"s-1","hook_event_name":"UserPromptSubmit","prompt":"hi","cwd":"/tmp"}"#)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();

    assert!(elapsed < Duration::from_millis(2_500), "took {elapsed:?}");
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(
        stderr.starts_with("muster hook: daemon unreachable at "),
        "stderr: {stderr:?}"
    );
    assert!(
        stderr.contains(&url) && stderr.contains("continuing without muster"),
        "stderr: {stderr:?}"
    );
}

#[test]
fn hook_with_stdin_left_open_still_returns_within_the_deadline() {
    // Proves a harness that never closes stdin is not held past the ~2 s deadline.
    let config_home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["hook", "stop", "--url", "http://127.0.0.1:9"])
        .env("XDG_CONFIG_HOME", config_home.path())
        .env("MUSTER_AUTOSTART", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap(); // kept open until the child has exited
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    let elapsed = started.elapsed();

    assert!(elapsed < Duration::from_millis(3_000), "took {elapsed:?}");
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&output.stderr).lines().count(), 1);
}
