//! The stdio shim's life cycle against a real daemon: it links, the linked
//! liveness rule keeps it on the roster, and it leaves when its client or
//! its parent goes away.

mod common;

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `muster_links` from /metrics: shim links attached now.
fn links(d: &TestDaemon) -> u64 {
    let text = http().get(format!("{}/metrics", d.url)).send().unwrap().text().unwrap();
    text.lines().find_map(|l| l.strip_prefix("muster_links ")).unwrap().parse().unwrap()
}

/// A shim for `session`, initialized by hand; its stdin stays open until dropped.
fn shim(d: &TestDaemon, session: &str) -> Child {
    let mut child = muster_cmd(&d.url)
        .arg("mcp")
        .env("MUSTER_SESSION_ID", session)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    for line in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
            "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    child
}

fn exited_within(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// Proves the linked rule: a shim-linked session stays on the roster while
// its link is up (well past a hook-only backstop), and once its client
// closes stdin the shim exits, the daemon sees the link drop, and the
// session leaves after --stale-after.
#[test]
fn linked_session_lives_with_its_link_and_leaves_after_the_grace_window() {
    let d = TestDaemon::start(&["--stale-after", "1s", "--hook-backstop", "1s", "--sweep-interval", "100ms"]);
    let id = "70000000-0000-4000-8000-000000000001";
    let mut child = shim(&d, id);
    wait_until(Duration::from_secs(5), || links(&d) == 1).expect("the shim linked");
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(d.roster_ids().contains(&id.to_string()), "still live at 2.5 s: its link is up");

    drop(child.stdin.take());
    assert!(exited_within(&mut child, Duration::from_secs(3)), "the shim exits when stdin closes");
    let unlinked = Instant::now();
    wait_until(Duration::from_secs(3), || links(&d) == 0).expect("the daemon saw the link go");
    wait_until(Duration::from_secs(5), || !d.roster_ids().contains(&id.to_string())).expect("swept after the window");
    assert!(unlinked.elapsed() >= Duration::from_millis(800), "not before the grace window");
}

// Proves the shim exits when the process that started it dies, even if its
// stdin stays open and its client never initialized.
#[test]
fn shim_exits_when_its_parent_dies() {
    let d = TestDaemon::start(&[]);
    let pidfile = tempfile::NamedTempFile::new().unwrap();
    // sh starts the shim (stdin: a pipe from a long sleep), records its pid, and exits.
    let script = format!(
        "sleep 30 | MUSTER_SESSION_ID=orphan-1 '{BIN}' mcp & echo $! > '{}'; sleep 0.5",
        pidfile.path().display()
    );
    let mut sh = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("MUSTER_URL", &d.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(sh.wait().unwrap().success());
    let pid: u32 = std::fs::read_to_string(pidfile.path()).unwrap().trim().parse().unwrap();
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
    let gone = wait_until(Duration::from_secs(3), || !alive(pid));
    assert!(gone.is_some(), "the shim (pid {pid}) outlived its parent by 3 s");
}
