//! Coordination beyond chat through the real binary: what `muster reserve`,
//! `release`, `hook`, `send --reply-to`, `thread`, `inbox` and `roster`
//! print and exit with against a real daemon, and reservations surviving a
//! `kill -9` of it. What the daemon decides (reservations, the edit guard,
//! collision notices, threads, operator mail, activity, races, bad input)
//! is shown in process in crates/daemon/tests/coordination.rs; the parts
//! that need a linked shim (@mention pushes, wait_for_message, the MCP
//! `reserve` tool) are in coordination_shim.rs.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

/// A throwaway git checkout: a directory holding `.git/HEAD`.
struct Repo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new(name: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join(name);
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        Repo { _tmp: tmp, root }
    }

    /// A subdirectory of the checkout (created), as a string.
    fn dir(&self, sub: &str) -> String {
        let p = if sub.is_empty() {
            self.root.clone()
        } else {
            self.root.join(sub)
        };
        std::fs::create_dir_all(&p).unwrap();
        p.display().to_string()
    }

    fn file(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }
}

/// Registers a session working in `cwd`; returns its nickname.
fn register(d: &TestDaemon, id: &str, cwd: &str) -> String {
    let (status, v) = d.post_json("/api/v1/sessions", &json!({"id": id, "cwd": cwd}));
    assert_eq!(status, 200, "register {id}: {v}");
    v["nickname"].as_str().unwrap().to_string()
}

fn reserve(
    d: &TestDaemon,
    as_: &str,
    paths: &[&str],
    exclusive: bool,
    ttl_s: u64,
    reason: &str,
) -> (u16, Value) {
    d.post_json(
        "/api/v1/reservations",
        &json!({"as": as_, "paths": paths, "exclusive": exclusive, "ttl_s": ttl_s, "reason": reason}),
    )
}

fn release(d: &TestDaemon, as_: &str, paths: &[&str]) -> usize {
    let (status, v) = d.post_json(
        "/api/v1/reservations/release",
        &json!({"as": as_, "paths": paths}),
    );
    assert_eq!(status, 200, "release: {v}");
    v["released"].as_u64().unwrap() as usize
}

/// `(session_id, pattern, exclusive)` of every live reservation, sorted.
fn held(d: &TestDaemon) -> Vec<(String, String, bool)> {
    let (status, v) = d.get("/api/v1/reservations");
    assert_eq!(status, 200, "{v}");
    let mut out: Vec<(String, String, bool)> = v["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["session_id"].as_str().unwrap().to_string(),
                r["pattern"].as_str().unwrap().to_string(),
                r["exclusive"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn h(id: &str, pattern: &str, exclusive: bool) -> (String, String, bool) {
    (id.to_string(), pattern.to_string(), exclusive)
}

/// Posts a hook payload straight to the daemon's `/hook/{event}`.
fn hook_http(d: &TestDaemon, event: &str, body: &Value) -> Value {
    let resp = d
        .http()
        .post(format!("{}/hook/{event}", d.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("POST hook");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    assert_eq!(status, 200, "hook {event}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("hook answered non-JSON ({e}): {text}"))
}

/// A pre-tool-use payload for `tool` with `input`, as Claude Code sends it.
fn pre_tool(id: &str, cwd: &str, tool: &str, input: Value) -> Value {
    json!({"session_id": id, "cwd": cwd, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": input,
        "transcript_path": "/tmp/t.jsonl", "permission_mode": "default"})
}

fn decision(answer: &Value) -> Option<&str> {
    answer["hookSpecificOutput"]["permissionDecision"].as_str()
}

fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
        .to_string()
}

const A: &str = "c0000000-0000-4000-8000-00000000000a";
const B: &str = "c0000000-0000-4000-8000-00000000000b";
const C: &str = "c0000000-0000-4000-8000-00000000000c";

// ---------------------------------------------------------------- reservations

// Proves `muster reserve` of a held path fails with a non-zero exit and the
// holder's nickname on stderr, and grants nothing of the request. (Taken
// from the daemon's conflict test, which shows the refusal itself.)
#[test]
fn muster_reserve_of_a_held_path_fails_naming_the_holder() {
    let d = TestDaemon::start(&[]);
    let repo = Repo::new("proj");
    let nick_a = register(&d, A, &repo.dir(""));
    register(&d, B, &repo.dir(""));
    assert_eq!(
        reserve(&d, A, &["src/a.rs"], true, 600, "refactoring the parser").0,
        200
    );

    // The CLI refuses the same way, with a non-zero exit and the holder named.
    // (The CLI takes relative paths from its own working directory.)
    let out = muster_cmd(&d.url)
        .current_dir(&repo.root)
        .args(["reserve", "src/a.rs", "src/c.rs", "--as", B])
        .output()
        .unwrap();
    assert!(!out.status.success(), "muster reserve of a held path fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&nick_a), "{stderr}");
    assert_eq!(held(&d), vec![h(A, "src/a.rs", true)]);
}

// Proves `muster release --as <id>` with no paths releases everything the
// session holds.
#[test]
fn muster_release_releases_all() {
    let d = TestDaemon::start(&[]);
    let repo = Repo::new("proj");
    register(&d, B, &repo.dir("src"));
    assert_eq!(
        reserve(&d, B, &["a.rs", "b.rs", "c.rs"], true, 600, "").0,
        200
    );
    assert_eq!(held(&d).len(), 3);

    // The CLI releases too.
    let out = d.muster(&["release", "--as", B]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(held(&d), vec![]);
}

// Proves reservations are durable: after a daemon restart on the same data
// directory they are still listed and still refuse conflicting claims.
#[test]
fn reservations_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let repo = Repo::new("proj");
    {
        let mut d = TestDaemon::start_in(data.path(), &[]);
        register(&d, A, &repo.dir(""));
        register(&d, B, &repo.dir(""));
        assert_eq!(reserve(&d, A, &["src/a.rs"], true, 600, "kept").0, 200);
        assert_eq!(reserve(&d, B, &["docs/"], false, 600, "").0, 200);
        d.kill9();
    }
    let d = TestDaemon::start_in(data.path(), &[]);
    assert_eq!(
        held(&d),
        vec![h(A, "src/a.rs", true), h(B, "docs/**", false)]
    );
    let (status, v) = reserve(&d, B, &["src/a.rs"], true, 600, "");
    assert_eq!(status, 409, "{v}");
    assert!(error_message(&v).contains("kept"), "{v}");
    assert_eq!(release(&d, A, &[]), 1);
    assert_eq!(reserve(&d, B, &["src/a.rs"], true, 600, "").0, 200);
}

// ---------------------------------------------------------------- edit guard

// Proves the hook command a harness runs (`muster hook pre-tool-use`)
// prints the edit guard's refusal of an edit of a file another session
// holds exclusively. (The guard itself is shown in process.)
#[test]
fn muster_hook_prints_the_edit_guards_refusal() {
    let d = TestDaemon::start(&[]);
    let repo = Repo::new("proj");
    let nick_a = register(&d, A, &repo.dir(""));
    register(&d, B, &repo.dir("src"));
    assert_eq!(
        reserve(&d, A, &["src/a.rs"], true, 600, "parser rewrite").0,
        200
    );
    let out = d.hook(
        "pre-tool-use",
        &pre_tool(
            B,
            &repo.dir("src"),
            "Edit",
            json!({"file_path": repo.file("src/a.rs")}),
        ),
    );
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(decision(&v), Some("deny"), "{out}");
    assert!(
        v["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap()
            .contains(&nick_a),
        "{out}"
    );
}

// ---------------------------------------------------------------- threads

// Proves threads through the CLI: `muster send --reply-to` links replies,
// `muster thread` shows root and replies oldest first from any message in
// the thread (as JSON and as text), an outsider's `muster thread` fails,
// and `muster send --reply-to` an unknown id fails and sends nothing.
#[test]
fn muster_thread_shows_root_and_replies_to_participants_only() {
    let d = TestDaemon::start(&[]);
    let repo = Repo::new("proj");
    for id in [A, B, C] {
        register(&d, id, &repo.dir(""));
    }
    let root = d.muster_json(&["send", B, "can you review src/a.rs?", "--as", A, "--json"]);
    let root_id = root["message"]["id"].as_str().unwrap().to_string();
    let r1 = d.muster_json(&[
        "send",
        A,
        "yes, after lunch",
        "--as",
        B,
        "--reply-to",
        &root_id,
        "--json",
    ]);
    let r1_id = r1["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(r1["message"]["reply_to"], root_id.as_str());
    let r2 = d.muster_json(&[
        "send",
        B,
        "thanks",
        "--as",
        A,
        "--reply-to",
        &r1_id,
        "--json",
    ]);
    let r2_id = r2["message"]["id"].as_str().unwrap().to_string();
    let expected = vec![root_id.clone(), r1_id.clone(), r2_id.clone()];

    let ids = |v: &Value| -> Vec<String> {
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    for from in [&root_id, &r1_id, &r2_id] {
        let t = d.muster_json(&["thread", from, "--as", B, "--json"]);
        assert_eq!(ids(&t), expected, "from {from} as B: {t}");
    }
    let t = d.muster_json(&["thread", &r2_id, "--as", A, "--json"]);
    assert_eq!(t["messages"][0]["body"], "can you review src/a.rs?");
    assert_eq!(t["messages"][2]["reply_to"], r1_id.as_str());
    let text = d.muster(&["thread", &root_id, "--as", A]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    let (p0, p2) = (
        text.find("can you review").unwrap(),
        text.find("thanks").unwrap(),
    );
    assert!(p0 < p2, "oldest first: {text}");

    assert!(!d.muster(&["thread", &r1_id, "--as", C]).status.success());
    let out = d.muster(&["send", B, "orphan", "--as", A, "--reply-to", "nope"]);
    assert!(!out.status.success(), "the CLI refuses it too");
    let inbox = d.muster_json(&["inbox", "--as", B, "--all", "--json"]);
    assert!(
        !inbox.to_string().contains("orphan"),
        "nothing was sent: {inbox}"
    );
}

// ---------------------------------------------------------------- operator mail

// Proves `muster send op:<name>` reaches the person and their live sessions
// (not another person's), and `muster inbox --as op:<name>` shows the
// person's mail, as JSON and as text.
#[test]
fn muster_send_and_inbox_for_an_operator() {
    let d = TestDaemon::start(&[]);
    let repo = Repo::new("proj");
    let root = repo.dir("");
    for (id, operator) in [(A, "alice"), (C, "bob")] {
        let (status, v) = d.post_json(
            "/api/v1/sessions",
            &json!({"id": id, "cwd": root, "operator": operator}),
        );
        assert_eq!(status, 200, "{v}");
    }
    let sent = d.muster_json(&[
        "send",
        "op:alice",
        "the deploy is at 5pm",
        "--as",
        C,
        "--json",
    ]);
    let recipients: Vec<&str> = sent["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient"].as_str().unwrap())
        .collect();
    assert!(
        recipients.contains(&"op:alice") && recipients.contains(&A),
        "{sent}"
    );
    assert!(!recipients.contains(&C), "{sent}");

    let inbox = d.muster_json(&["inbox", "--as", "op:alice", "--json"]);
    assert_eq!(inbox["principal"], "op:alice");
    assert!(
        inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "the deploy is at 5pm"),
        "{inbox}"
    );
    let text = d.muster(&["inbox", "--as", "op:alice", "--all"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("the deploy is at 5pm"));
}

// ---------------------------------------------------------------- activity

// Proves `muster roster --json` shows a session's last tool and never the
// tool's arguments.
#[test]
fn muster_roster_never_shows_tool_arguments() {
    let d = TestDaemon::start(&[]);
    let repo = Repo::new("proj");
    let root = repo.dir("");
    register(&d, A, &root);
    let secret = "SECRET-ARGUMENT-4711";
    let input = json!({"file_path": format!("src/{secret}.rs"), "old_string": secret, "new_string": secret});
    hook_http(&d, "pre-tool-use", &pre_tool(A, &root, "Edit", input));
    let cli = d.muster(&["roster", "--json"]);
    assert!(cli.status.success());
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        stdout.contains("\"Edit\""),
        "the last tool is shown: {stdout}"
    );
    assert!(!stdout.contains(secret), "{stdout}");
}
