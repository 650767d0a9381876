//! The fault suite (issue 12): a real `muster serve` and real shims and
//! installs under the faults a machine deals them — `kill -9` under load, a
//! daemon stopped (SIGSTOP) and continued, a damaged, locked or read-only
//! store at start, a harness that stops reading its shim's stdout, and
//! `kill -9` of `muster install` halfway. The full disk is
//! `store_faults.rs`; the wall clock stepping is `crates/daemon/tests/time.rs`
//! (on the in-process daemon's manual clock). Each test is bounded in time.

#![cfg(target_os = "linux")]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHANNEL: &str = "notifications/claude/channel";

/// The process that holds `path` open (the daemon holds its store's lock
/// file for its whole life), found in /proc.
fn pid_holding(path: &Path) -> u32 {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
        {
            return pid;
        }
    }
    panic!("no process holds {}", path.display());
}

fn daemon_pid(d: &TestDaemon) -> u32 {
    pid_holding(&d.data_dir.join("muster.db.lock"))
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The process's resident memory in KiB (VmRSS).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn register(d: &TestDaemon, id: &str) {
    let (status, v) = d.post_json("/api/v1/sessions", &json!({"id": id, "harness": "test"}));
    assert_eq!(status, 200, "{v}");
}

/// Sends `body` to `to` as the operator; the acknowledged message id.
fn send(d: &TestDaemon, to: &str, body: &str) -> String {
    let (status, v) = d.post_json("/api/v1/messages", &json!({"to": to, "body": body}));
    assert_eq!(status, 200, "{v}");
    v["message"]["id"].as_str().unwrap().to_string()
}

// ------------------------------------------------------------ a real shim

/// A real `muster mcp` for one session, its stdout read on a thread:
/// answers by request id, channel pushes kept aside.
struct Shim {
    child: Child,
    lines: Receiver<Value>,
    pushes: Vec<Value>,
    next_id: u64,
}

impl Shim {
    fn start(d: &TestDaemon, session: &str) -> Shim {
        let mut child = muster_cmd(&d.url)
            .arg("mcp")
            .env("MUSTER_SESSION_ID", session)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).expect("the shim writes JSON-RPC"));
            }
        });
        let mut shim = Shim {
            child,
            lines,
            pushes: Vec::new(),
            next_id: 0,
        };
        shim.handshake();
        shim
    }

    fn handshake(&mut self) {
        self.write(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        );
        self.answer(0, Duration::from_secs(10));
        self.write(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    }

    fn write(&mut self, v: Value) {
        writeln!(self.child.stdin.as_mut().unwrap(), "{v}").unwrap();
    }

    fn take(&mut self, v: Value) -> Option<Value> {
        if v.get("id").is_none() {
            if v["method"] == CHANNEL {
                self.pushes.push(v);
            }
            return None;
        }
        Some(v)
    }

    fn answer(&mut self, id: u64, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(v) => {
                    if let Some(v) = self.take(v) {
                        if v["id"] == id {
                            return v;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no answer to request {id} within {limit:?}");
    }

    /// `whoami`'s answer text, asked until the link is up (within `limit`).
    fn linked(&mut self, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            self.next_id += 1;
            let id = self.next_id;
            self.write(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "whoami", "arguments": {}}}));
            let result = self.answer(id, Duration::from_secs(10))["result"].clone();
            let text = result["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if result["isError"] != true {
                return text;
            }
            assert!(
                start.elapsed() < limit,
                "not linked within {limit:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Collects pushes for `limit`, or until `enough` have come.
    fn collect(&mut self, limit: Duration, enough: usize) {
        let deadline = Instant::now() + limit;
        while self.pushes.len() < enough {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(v) => {
                    self.take(v);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// The message ids pushed so far, in order, repeats included.
    fn pushed_ids(&self) -> Vec<String> {
        self.pushes
            .iter()
            .map(|p| {
                let meta = &p["params"]["meta"];
                meta["message_id"]
                    .as_str()
                    .or_else(|| meta["id"].as_str())
                    .unwrap_or_else(|| panic!("a push names its message: {p}"))
                    .to_string()
            })
            .collect()
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn links(d: &TestDaemon) -> usize {
    d.get("/api/v1/roster").1["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["link_up"] == true)
        .count()
}

// ------------------------------------------------------------ kill -9 under load

// Proves durability under concurrent load: 16 senders send as fast as the
// daemon acknowledges, the daemon is killed with SIGKILL while they do,
// and after a restart on the same data directory every acknowledged send
// is in the recipient's mailbox exactly once. A send in flight at the kill
// may have been stored without its answer reaching the sender; at most one
// per sender, so at most 16 are there unacknowledged.
#[test]
fn kill_9_while_16_senders_send_keeps_every_acknowledged_send_once() {
    const SENDERS: usize = 16;
    let tmp = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start_in(tmp.path(), &["--send-rate", "off"]);
    let to = "f1000000-0000-4000-8000-0000000000b2";
    register(&d, to);
    let acked = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..SENDERS)
        .map(|w| {
            let (url, key, acked) = (d.url.clone(), d.key(), acked.clone());
            std::thread::spawn(move || {
                let client = http();
                let mut ids = Vec::new();
                for i in 0.. {
                    let sent = client
                        .post(format!("{url}/api/v1/messages"))
                        .header(muster_daemon::local_key::HEADER, &key)
                        .json(&json!({"to": to, "body": format!("w{w} m{i}")}))
                        .send();
                    let Ok(resp) = sent else { break };
                    if resp.status() != 200 {
                        break;
                    }
                    let Ok(v) = resp.json::<Value>() else { break };
                    ids.push(v["message"]["id"].as_str().unwrap().to_string());
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                ids
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || acked.load(Ordering::SeqCst)
            >= 800)
        .is_some(),
        "3,000 sends acknowledged within 60 s"
    );
    d.kill9();
    let acked: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert_eq!(acked_set.len(), acked.len(), "every id acknowledged once");

    let d = TestDaemon::start_in(tmp.path(), &[]);
    let got = d.inbox_ids(to, 100_000);
    let got_set: HashSet<&String> = got.iter().collect();
    assert_eq!(got_set.len(), got.len(), "no message twice");
    let missing: Vec<&&String> = acked_set.difference(&got_set).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let extra = got_set.difference(&acked_set).count();
    assert!(
        extra <= SENDERS,
        "{extra} stored unacknowledged: more than one in flight per sender"
    );
}

// ------------------------------------------------------------ SIGSTOP

// Proves a daemon stopped for 30 s (SIGSTOP) and continued (SIGCONT)
// sweeps no live session: its two shim-linked sessions (grace window 10 s,
// a third of the stop) and a hook-only one are all on the roster after,
// both shims are linked again, and each shim has every message sent to it
// before and after the stop exactly once.
#[test]
fn sigstop_for_30_s_then_sigcont_sweeps_no_one_and_loses_or_repeats_no_mail() {
    let d = TestDaemon::start(&["--stale-after", "10s", "--sweep-interval", "1s"]);
    let (a, b, h) = (
        "f2000000-0000-4000-8000-00000000000a",
        "f2000000-0000-4000-8000-00000000000b",
        "f2000000-0000-4000-8000-00000000000c",
    );
    register(&d, h);
    let mut shims = [Shim::start(&d, a), Shim::start(&d, b)];
    for shim in &mut shims {
        shim.linked(Duration::from_secs(10));
    }
    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    for (n, id) in [a, b].iter().enumerate() {
        for i in 0..3 {
            sent.entry(id)
                .or_default()
                .push(send(&d, id, &format!("before {n}.{i}")));
        }
    }
    for shim in &mut shims {
        shim.collect(Duration::from_secs(10), 3);
    }

    let pid = daemon_pid(&d);
    signal(pid, "-STOP");
    std::thread::sleep(Duration::from_secs(30));
    signal(pid, "-CONT");
    let back = Instant::now();

    for (n, id) in [a, b].iter().enumerate() {
        for i in 0..3 {
            sent.entry(id)
                .or_default()
                .push(send(&d, id, &format!("after {n}.{i}")));
        }
    }
    assert!(
        wait_until(Duration::from_secs(20), || links(&d) == 2).is_some(),
        "both shims linked again"
    );
    for shim in &mut shims {
        shim.collect(Duration::from_secs(15), 6);
    }
    // Two sweeps' worth more, for anything pushed twice to show.
    std::thread::sleep(Duration::from_secs(2));
    for shim in &mut shims {
        shim.collect(Duration::from_millis(100), usize::MAX);
    }
    let mut roster = d.roster_ids();
    roster.sort();
    assert_eq!(
        roster,
        [a, b, h],
        "no one swept ({:?} after SIGCONT)",
        back.elapsed()
    );
    for (shim, id) in shims.iter().zip([a, b]) {
        assert_eq!(
            shim.pushed_ids(),
            sent[id],
            "{id}: every message once, in order"
        );
    }
}

// ------------------------------------------------------------ the store at start

/// `muster serve` on `dir`, which must refuse to start within 20 s with
/// exit code `code`; its stderr.
fn refused_start(dir: &Path, as_nobody: bool, code: i32) -> String {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            common::BIN,
        ]);
        c
    } else {
        Command::new(common::BIN)
    };
    let mut child = cmd
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--unix-socket",
            "off",
            "--data-dir",
        ])
        .arg(dir)
        .env("HOME", dir)
        .env_remove("MUSTER_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("muster serve on {} started", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(code), "{err}");
    err
}

/// A store with one session and one message in it, the daemon stopped.
fn a_stored_database() -> (tempfile::TempDir, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start_in(tmp.path(), &[]);
    register(&d, "f3000000-0000-4000-8000-00000000000a");
    send(&d, "f3000000-0000-4000-8000-00000000000a", "kept");
    // Over 1,000 pages of WAL, so SQLite checkpoints them into the main
    // file while the daemon runs: the file the cases below cut is many
    // pages long whether or not the stop checkpoints the rest.
    let filler = "x".repeat(6_000);
    for _ in 0..400 {
        send(&d, "f3000000-0000-4000-8000-00000000000a", &filler);
    }
    assert!(d.terminate(Duration::from_secs(10)), "the daemon stops");
    let bytes = std::fs::read(tmp.path().join("muster.db")).unwrap();
    assert!(
        bytes.len() > 20_000,
        "the main file has {} bytes",
        bytes.len()
    );
    (tmp, bytes)
}

// Proves a damaged database is refused at start with a message naming the
// file and what to do, and left byte for byte as it was: a file cut short
// (to its first page, and mid-page), one overwritten in its header, and a
// file that is no database at all.
#[test]
fn a_damaged_database_is_refused_naming_the_file_and_left_as_it_was() {
    let (good, bytes) = a_stored_database();
    let mut header = bytes.clone();
    header[20..40].copy_from_slice(b"garbage garbage garb");
    let damaged: [(&str, Vec<u8>); 4] = [
        ("cut to one page", bytes[..4096].to_vec()),
        ("cut mid-page", bytes[..10_000].to_vec()),
        ("a damaged header", header),
        (
            "not a database",
            b"these are not the bytes you are looking for".repeat(200),
        ),
    ];
    drop(good);
    for (what, content) in damaged {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("muster.db");
        std::fs::write(&db, &content).unwrap();
        let err = refused_start(dir.path(), false, 1);
        let shown = db.display().to_string();
        assert!(
            err.contains(&format!("{shown} is damaged")),
            "{what}: {err}"
        );
        assert!(
            err.contains(&format!("mv {shown} {shown}.damaged")),
            "{what}: {err}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            content,
            "{what}: the file is unchanged"
        );
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    }
}

// Proves a second daemon on a data directory another daemon holds is
// refused (exit 4, before it opens the store), naming the directory, the
// first daemon's PID and address, and what to do, and that the first goes
// on serving with its store unchanged by the attempt.
#[test]
fn a_database_another_daemon_holds_is_refused_and_the_first_goes_on() {
    let d = TestDaemon::start(&[]);
    let to = "f4000000-0000-4000-8000-00000000000a";
    register(&d, to);
    let first = send(&d, to, "before");
    let err = refused_start(&d.data_dir, false, 4);
    let dir = d.data_dir.display();
    assert!(
        err.contains(&format!(
            "a muster daemon already runs on the data directory {dir} (pid {}, at {})",
            d.pid(),
            d.url
        )),
        "{err}"
    );
    assert!(
        err.contains("a data directory of its own (--data-dir"),
        "{err}"
    );
    let second = send(&d, to, "after");
    let (_, inbox) = d.get(&format!("/api/v1/inbox?as={to}"));
    let ids: Vec<&str> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
}

// Proves a data directory the daemon's user cannot write is refused at
// start, naming the file and what to do, with the database unchanged (run
// as the user nobody on root's directory; skipped, saying why, when the
// tests do not run as root).
#[test]
fn a_read_only_data_directory_is_refused_naming_the_file() {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        eprintln!("skipped: needs root, to run the daemon as nobody on root's files");
        return;
    }
    let (tmp, bytes) = a_stored_database();
    let dir = tmp.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.join("muster.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _ = std::fs::remove_file(dir.join("muster.db.lock"));
    let err = refused_start(dir, true, 1);
    assert!(err.contains("cannot write"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("writable"), "{err}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "the database is unchanged"
    );
}

// ------------------------------------------------------------ a harness that stops reading

// Proves a shim whose harness stops reading its stdout costs the daemon
// bounded memory and nobody else anything: 1,000 messages of 5,800
// characters (5.8 MB) are sent to a session whose real `muster mcp` has a
// stdout pipe nobody reads; the daemon's resident memory grows by less
// than 64 MB all told (its unread mail is held in memory: 5.8 MB and its
// bookkeeping; a queue per link that grew with the backlog would add its
// copy again and again as the link is re-made), and meanwhile another
// session's shim has each of the 20 messages sent to it pushed once, each
// within 2 s.
#[test]
fn a_shim_whose_stdout_nobody_reads_costs_bounded_memory_and_others_nothing() {
    let d = TestDaemon::start(&["--send-rate", "off", "--link-stall", "1s"]);
    let (stuck, other) = (
        "f5000000-0000-4000-8000-00000000000a",
        "f5000000-0000-4000-8000-00000000000b",
    );
    let pid = daemon_pid(&d);
    // The stuck one: its handshake answer is read, then its stdout never again.
    let mut stuck_shim = muster_cmd(&d.url)
        .arg("mcp")
        .env("MUSTER_SESSION_ID", stuck)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = stuck_shim.stdin.take().unwrap();
    let mut stdout = BufReader::new(stuck_shim.stdout.take().unwrap());
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}})
    )
    .unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"id\":0"), "{line}");
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || links(&d) == 1).is_some(),
        "the stuck shim linked"
    );
    let mut other_shim = Shim::start(&d, other);
    other_shim.linked(Duration::from_secs(10));
    let before = rss_kib(pid);

    // From 20 senders at once: until the stuck shim's own buffers fill and
    // its link is dropped, each send to it waits out the push confirmation
    // (500 ms), as the sender must be told the truth.
    let big = Arc::new("x".repeat(5_800));
    let flood: Vec<_> = (0..20)
        .map(|w| {
            let (url, key, big) = (d.url.clone(), d.key(), big.clone());
            std::thread::spawn(move || {
                let client = http();
                for n in 0..50 {
                    let resp = client
                        .post(format!("{url}/api/v1/messages"))
                        .header(muster_daemon::local_key::HEADER, &key)
                        .json(&json!({"to": stuck, "body": format!("{w}.{n} {big}")}))
                        .send()
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        })
        .collect();
    let mut mine = Vec::new();
    let mut most_rss = before;
    for i in 0..20 {
        let id = send(&d, other, &format!("still here {i}"));
        let sent_at = Instant::now();
        other_shim.collect(Duration::from_secs(2), i + 1);
        assert_eq!(
            other_shim.pushes.len(),
            i + 1,
            "message {i} pushed within 2 s"
        );
        eprintln!("push {i} took {:?}", sent_at.elapsed());
        mine.push(id);
        most_rss = most_rss.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    for f in flood {
        f.join().unwrap();
    }
    for _ in 0..30 {
        most_rss = most_rss.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(other_shim.pushed_ids(), mine, "each once, in order");
    let grew_mib = most_rss.saturating_sub(before) / 1024;
    eprintln!("daemon RSS {before} KiB before, at most {most_rss} KiB after: +{grew_mib} MiB");
    assert!(grew_mib < 64, "the daemon grew by {grew_mib} MiB");
    let _ = stuck_shim.kill();
    let _ = stuck_shim.wait();
    drop((stdin, stdout));
}

// ------------------------------------------------------------ kill -9 of install

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(here) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_symlink() {
                continue;
            } else if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// Puts `dir` back as `files` has it: every other file removed.
fn restore(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    for path in files_under(dir).keys() {
        if !files.contains_key(path) {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (path, bytes) in files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

// Proves `muster install claude` killed with SIGKILL at any moment leaves
// each file it touches whole: 60 runs killed at delays spread over a whole
// run's length, and after each, every settings file and the install
// record is byte for byte either what it was before or what a completed
// install writes, every backup is the file's old content, whole, and a
// temporary file is left only where the kill came between writing it and
// renaming it — and the next install removes it. Then a completed install
// over what the kill left writes the same settings as one from scratch.
#[test]
fn kill_9_of_install_halfway_leaves_each_file_old_or_new_never_torn() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let (project, home, state, bin) = (
        root.join("project"),
        root.join("home"),
        root.join("state"),
        root.join("bin"),
    );
    for dir in [&project, &home, &state, &bin] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::os::unix::fs::symlink(common::BIN, bin.join("muster")).unwrap();
    let user_settings = json!({"permissions": {"allow": ["Bash(ls)"]},
        "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo mine"}]}]}});
    std::fs::create_dir_all(project.join(".claude")).unwrap();
    std::fs::write(
        project.join(".claude/settings.json"),
        serde_json::to_vec_pretty(&user_settings).unwrap(),
    )
    .unwrap();
    std::fs::write(
        project.join(".mcp.json"),
        serde_json::to_vec_pretty(&json!({"mcpServers": {"mine": {"command": "x"}}})).unwrap(),
    )
    .unwrap();
    std::fs::write(home.join(".claude.json"), b"{\"theme\": \"dark\"}").unwrap();
    let install = || {
        let mut cmd = Command::new(common::BIN);
        cmd.args(["install", "claude"])
            .current_dir(&project)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", &state)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("MUSTER_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let before = files_under(&root);
    let started = Instant::now();
    assert!(install().status().unwrap().success());
    let run_takes = started.elapsed();
    let after = files_under(&root);
    let changed: Vec<&PathBuf> = after
        .keys()
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    assert!(
        changed.len() >= 5,
        "settings, backups and the record: {changed:?}"
    );

    let is_tmp = |p: &Path| p.to_string_lossy().contains(".muster-tmp-");
    let mut torn_states = HashSet::new();
    let mut leftovers = 0;
    const RUNS: u32 = 60;
    for run in 0..RUNS {
        restore(&root, &before);
        let delay = run_takes * run / RUNS;
        let mut child = install().spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let now = files_under(&root);
        let mut state_here = Vec::new();
        for (path, bytes) in &now {
            let name = path.to_string_lossy();
            if is_tmp(path) {
                leftovers += 1;
                continue;
            }
            if let Some(original) = name.strip_suffix(".muster-backup") {
                let original = before.get(Path::new(original));
                assert_eq!(
                    Some(bytes),
                    original,
                    "run {run}: {name} is the old content, whole"
                );
                continue;
            }
            let (old, new) = (before.get(path), after.get(path));
            assert!(
                Some(bytes) == old || Some(bytes) == new,
                "run {run} (killed after {delay:?}): {name} is neither old nor new:\n{}",
                String::from_utf8_lossy(bytes)
            );
            state_here.push((path.clone(), Some(bytes) == new));
        }
        for path in after.keys().filter(|p| !now.contains_key(*p)) {
            assert!(
                !before.contains_key(path),
                "run {run}: {} vanished",
                path.display()
            );
        }
        torn_states.insert(state_here);
        // The next install completes, tidies, and writes what one from
        // scratch writes (backups aside: a second one is stamped).
        assert!(
            install().status().unwrap().success(),
            "run {run}: install after the kill"
        );
        let finished = files_under(&root);
        let left: Vec<&PathBuf> = finished.keys().filter(|p| is_tmp(p)).collect();
        assert!(
            left.is_empty(),
            "run {run}: outlived the next install: {left:?}"
        );
        for path in [
            project.join(".mcp.json"),
            project.join(".claude/settings.json"),
            home.join(".claude.json"),
        ] {
            assert_eq!(
                finished.get(&path),
                after.get(&path),
                "run {run}: {}",
                path.display()
            );
        }
    }
    eprintln!(
        "{RUNS} kills over {run_takes:?}: {} distinct outcomes, {leftovers} temporary files left",
        torn_states.len()
    );
    assert!(
        torn_states.len() >= 3,
        "the kills landed at different moments"
    );
}
