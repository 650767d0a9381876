//! The disk fills and is freed again, under the real daemon: the data
//! directory on a small tmpfs this test mounts (as root; otherwise it
//! skips, saying why), filled by sends until the store refuses, then
//! grown with `mount -o remount`.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A tmpfs mounted for one test, unmounted when dropped (declare it before
/// the daemon whose data it holds, so the daemon is gone first).
struct Tmpfs {
    dir: tempfile::TempDir,
}

/// Runs a command with a bound on its time; whether it succeeded, and its stderr.
fn run(program: &str, args: &[&str]) -> (bool, String) {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return (false, format!("{program}: {e}")),
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (false, format!("{program} {args:?} took over 20 s"))
}

impl Tmpfs {
    /// A tmpfs of `size` (as mount takes it: `1536k`), or why there is none.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root: mounting a tmpfs needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let target = dir.path().to_str().expect("a UTF-8 temp path");
        let options = format!("size={size},mode=0700");
        match run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", target]) {
            (true, _) => Ok(Tmpfs { dir }),
            (false, why) => Err(format!("mount -t tmpfs failed: {}", why.trim())),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn grow(&self, size: &str) {
        let target = self.path().to_str().unwrap();
        let (ok, why) = run("mount", &["-o", &format!("remount,size={size}"), target]);
        assert!(ok, "remount to {size}: {why}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = self.path().to_str().unwrap().to_string();
        if !run("umount", &[&target]).0 {
            // Still busy: detach it now, the kernel frees it once unused.
            let _ = run("umount", &["-l", &target]);
        }
    }
}

/// Writes a file in `dir` until the file system has no room left.
fn fill_up(dir: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("filler")).expect("create the filler");
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk[..]) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // One byte at a time for the last partial page.
    while let Ok(1) = file.write(&[0u8]) {}
    let _ = file.sync_all();
}

const SENDER: &str = "f0000000-0000-4000-8000-00000000fa11";
const READER: &str = "f0000000-0000-4000-8000-00000000fb22";

fn send(d: &TestDaemon, body: &str) -> (u16, Value) {
    d.post_json(
        "/api/v1/messages",
        &json!({"as": SENDER, "to": READER, "body": body}),
    )
}

/// Every message id in the reader's mailbox, read or not.
fn mailbox(d: &TestDaemon) -> Vec<String> {
    let (status, inbox) = d.get(&format!("/api/v1/inbox?as={READER}&all=true&limit=1000"));
    assert_eq!(status, 200, "{inbox}");
    inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// The stored state of the reader's oldest message ("queued", "surfaced", …).
fn first_state(d: &TestDaemon) -> String {
    let (status, inbox) = d.get(&format!("/api/v1/inbox?as={READER}&all=true&limit=1000"));
    assert_eq!(status, 200, "{inbox}");
    inbox["messages"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn metrics(d: &TestDaemon) -> String {
    match d.get("/metrics") {
        (200, Value::String(text)) => text,
        other => panic!("/metrics answered {other:?}"),
    }
}

fn healthz(d: &TestDaemon) -> (u16, String) {
    let (status, body) = d.get("/healthz");
    (status, body.as_str().unwrap_or_default().to_string())
}

// Proves the disk-full fault end to end: sends are acknowledged until the
// tmpfs is full, then refused cleanly (503, store_unavailable, "nothing was
// stored" and SQLite's "database or disk is full"); meanwhile /healthz is
// 503 with that reason, /metrics counts the errors and says degraded, and
// hooks still answer (a known session's prompt-submit, a new session's
// too, shown in the roster only if the store took it); once the tmpfs is grown the very next send is acknowledged without
// a restart, /healthz is 200 again, the first message has surfaced exactly
// once (held while full, or handed out at the edge with its mark written
// later) and is not offered again after a restart, and every acknowledged
// send is in the mailbox exactly once, refused ones never, before and
// after a restart.
#[test]
fn a_full_disk_refuses_cleanly_and_writes_resume_when_freed() {
    let fs = match Tmpfs::mount("1536k") {
        Ok(fs) => fs,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let data: PathBuf = fs.path().join("data");
    let mut d = TestDaemon::start_in(&data, &[]);
    let (status, _) = d.post_json(
        "/api/v1/sessions",
        &json!({"id": SENDER, "harness": "test"}),
    );
    assert_eq!(status, 200);
    d.hook("session-start", &payload(READER, "SessionStart"));
    assert_eq!(healthz(&d), (200, "ok\n".to_string()));

    let (status, first) = send(&d, "sent before the disk filled");
    assert_eq!(status, 200, "{first}");
    let mut acked = vec![first["message"]["id"].as_str().unwrap().to_string()];
    let big = "x".repeat(5_000);
    let mut refused = 0;
    for _ in 0..2_000 {
        let (status, answer) = send(&d, &big);
        if status == 200 {
            assert_eq!(
                refused, 0,
                "acknowledged after a refusal, disk still full: {answer}"
            );
            acked.push(answer["message"]["id"].as_str().unwrap().to_string());
            continue;
        }
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("nothing was stored: the store cannot write: ")
                && message.contains("database or disk is full"),
            "{message}"
        );
        refused += 1;
        if refused == 1 {
            // What room is left (less than one send) goes too, so no
            // smaller write slips in: every write fails from here.
            fill_up(fs.path());
        }
        if refused == 20 {
            break;
        }
    }
    assert_eq!(refused, 20, "the 1.5 MB tmpfs filled");
    assert!(
        acked.len() > 10,
        "{} acknowledged before it filled",
        acked.len()
    );

    let (status, reason) = healthz(&d);
    assert_eq!(status, 503);
    assert!(
        reason.starts_with("degraded: the store cannot write: database or disk is full (since ")
            && reason.ends_with(" s)\n")
            && reason.lines().count() == 1,
        "{reason:?}"
    );
    let text = metrics(&d);
    assert_eq!(metric(&text, "muster_store_degraded"), 1.0);
    assert!(metric(&text, "muster_store_errors_total{kind=\"full\"}") >= 20.0);

    // Hooks answer: the known session's prompt-submit, and a session the
    // store cannot record still gets an answer. The known one gets no mail
    // while requests are failing; but at the edge of a full disk a small
    // write (this hook's own) can commit and end "failing", so the mail may
    // come now, its mark then refused. Either way it comes exactly once.
    let has_first = |answer: &str| {
        context_of(answer).is_some_and(|c| c.contains("sent before the disk filled"))
    };
    let answer = d.hook("prompt-submit", &payload(READER, "UserPromptSubmit"));
    let while_full = has_first(&answer);
    // A new session is in the roster only if its record was stored: a
    // small write can still fit in the room a refused larger one left at
    // the end of the WAL (SQLite writes the next transaction over it), so
    // whether it was is checked against the roster after a restart.
    let stranger = "f0000000-0000-4000-8000-00000000fc33";
    d.hook("prompt-submit", &payload(stranger, "UserPromptSubmit"));
    let stranger_shown = d.roster_ids().contains(&stranger.to_string());

    fs.grow("20m");
    let (status, answer) = send(&d, "sent after the disk was freed");
    assert_eq!(status, 200, "writes resume without a restart: {answer}");
    acked.push(answer["message"]["id"].as_str().unwrap().to_string());
    assert_eq!(healthz(&d), (200, "ok\n".to_string()));
    assert_eq!(metric(&metrics(&d), "muster_store_degraded"), 0.0);

    // The mail held back surfaces now (unless it came while full), and its
    // mark reaches the store, so no restart offers it again.
    let answer = d.hook("prompt-submit", &payload(READER, "UserPromptSubmit"));
    assert_ne!(
        while_full,
        has_first(&answer),
        "the first message came exactly once (while full: {while_full}): {answer}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || first_state(&d) == "surfaced").is_some(),
        "the store never recorded the first message surfaced: {}",
        first_state(&d)
    );

    let want: HashSet<String> = acked.iter().cloned().collect();
    assert_eq!(want.len(), acked.len());
    for round in ["before a restart", "after a restart"] {
        let got = mailbox(&d);
        assert_eq!(
            got.len(),
            acked.len(),
            "{round}: each acknowledged send once, no other"
        );
        assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), want, "{round}");
        if round == "before a restart" {
            d.kill9();
            d = TestDaemon::start_in(&data, &[]);
        }
    }
    assert_eq!(
        d.roster_ids().contains(&stranger.to_string()),
        stranger_shown,
        "the new session was shown while full exactly if it was stored"
    );
    let answer = d.hook("prompt-submit", &payload(READER, "UserPromptSubmit"));
    assert!(
        !has_first(&answer),
        "offered again after the restart: {answer}"
    );
    drop(d);
}
