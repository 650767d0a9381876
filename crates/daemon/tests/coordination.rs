//! Coordination beyond chat on a daemon in process, over its HTTP API and
//! hook routes: file reservations, the edit guard, collision notices,
//! threads, operator mail, activity, racing reservations and bad input
//! (issue 4). Time is the manual clock's: expiry, the sweeper and the
//! collision window are driven by moving it. What the `muster` commands
//! print is in crates/cli/tests/coordination.rs; the parts that need a
//! linked shim (@mention pushes, wait_for_message, the MCP `reserve` tool)
//! are in crates/cli/tests/coordination_shim.rs.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_daemon::GuardMode;
use serde_json::{json, Value};
use support::*;

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
async fn register(d: &TestDaemon, id: &str, cwd: &str) -> String {
    let (status, v) = d
        .post_json("/api/v1/sessions", &json!({"id": id, "cwd": cwd}))
        .await;
    assert_eq!(status, 200, "register {id}: {v}");
    v["nickname"].as_str().unwrap().to_string()
}

async fn reserve(
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
    .await
}

async fn release(d: &TestDaemon, as_: &str, paths: &[&str]) -> usize {
    let (status, v) = d
        .post_json(
            "/api/v1/reservations/release",
            &json!({"as": as_, "paths": paths}),
        )
        .await;
    assert_eq!(status, 200, "release: {v}");
    v["released"].as_u64().unwrap() as usize
}

/// `(session_id, pattern, exclusive)` of every live reservation, sorted.
async fn held(d: &TestDaemon) -> Vec<(String, String, bool)> {
    let (status, v) = d.get("/api/v1/reservations").await;
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

/// Posts a hook payload straight to the daemon's `/hook/{event}`, with extra headers.
async fn hook_http(d: &TestDaemon, event: &str, body: &Value, headers: &[(&str, &str)]) -> Value {
    d.hook_with(event, body, headers).await
}

/// A pre-tool-use payload for `tool` with `input`, as Claude Code sends it.
fn pre_tool(id: &str, cwd: &str, tool: &str, input: Value) -> Value {
    json!({"session_id": id, "cwd": cwd, "hook_event_name": "PreToolUse", "tool_name": tool, "tool_input": input,
        "transcript_path": "/tmp/t.jsonl", "permission_mode": "default"})
}

fn turn(id: &str, cwd: &str, event_name: &str) -> Value {
    json!({"session_id": id, "cwd": cwd, "hook_event_name": event_name, "prompt": "carry on"})
}

fn decision(answer: &Value) -> Option<&str> {
    answer["hookSpecificOutput"]["permissionDecision"].as_str()
}

fn context(answer: &Value) -> String {
    answer["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn roster_entry(d: &TestDaemon, id: &str) -> Option<Value> {
    let (status, v) = d.get("/api/v1/roster").await;
    assert_eq!(status, 200);
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
}

const A: &str = "c0000000-0000-4000-8000-00000000000a";
const B: &str = "c0000000-0000-4000-8000-00000000000b";
const C: &str = "c0000000-0000-4000-8000-00000000000c";

// ---------------------------------------------------------------- reservations

// Proves a grant, then a conflicting request refused with the holder named
// (nickname, session id, reason, expiry) and all-or-nothing: a request for two
// paths, one of them held, grants neither.
#[tokio::test]
async fn conflict_names_the_holder_and_grants_nothing() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let nick_a = register(&d, A, &repo.dir("")).await;
    register(&d, B, &repo.dir("")).await;

    let (status, v) = reserve(&d, A, &["src/a.rs"], true, 600, "refactoring the parser").await;
    assert_eq!(status, 200, "{v}");
    let granted = &v["reservations"][0];
    assert_eq!(granted["pattern"], "src/a.rs");
    assert_eq!(granted["session_id"], A);
    assert_eq!(granted["nickname"], nick_a.as_str());
    assert_eq!(granted["exclusive"], true);
    assert_eq!(granted["root"], repo.root.display().to_string());
    let expires_at = granted["expires_at"].as_i64().unwrap();
    let created_at = granted["created_at"].as_i64().unwrap();
    // On the manual clock the TTL is exact.
    assert_eq!(created_at, START, "{granted}");
    assert_eq!(expires_at - created_at, 600_000, "ttl 600 s: {granted}");

    let (status, v) = reserve(&d, B, &["src/b.rs", "src/a.rs"], true, 600, "").await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "reservation_conflict");
    let msg = error_message(&v);
    for needle in [
        nick_a.as_str(),
        A,
        "refactoring the parser",
        "src/a.rs",
        "UTC",
        "nothing was",
    ] {
        assert!(msg.contains(needle), "the refusal names {needle:?}: {msg}");
    }
    assert!(
        !msg.contains("src/b.rs:"),
        "only the held path is a conflict: {msg}"
    );
    assert_eq!(v["error"]["matches"][0]["id"], A, "{v}");
    assert_eq!(v["error"]["matches"][0]["nickname"], nick_a.as_str(), "{v}");
    assert_eq!(
        held(&d).await,
        vec![h(A, "src/a.rs", true)],
        "nothing of B's request was granted"
    );

    // src/b.rs is free: C takes it.
    register(&d, C, &repo.dir("")).await;
    assert_eq!(reserve(&d, C, &["src/b.rs"], true, 600, "").await.0, 200);

    assert_eq!(
        held(&d).await,
        vec![h(A, "src/a.rs", true), h(C, "src/b.rs", true)]
    );
    d.stop().await;
}

// Proves shared claims coexist while shared-vs-exclusive is refused both
// ways, and that re-reserving one's own path renews it rather than conflicting.
#[tokio::test]
async fn shared_claims_coexist_and_exclusive_ones_do_not() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    for id in [A, B, C] {
        register(&d, id, &repo.dir("")).await;
    }
    assert_eq!(
        reserve(&d, A, &["docs/guide.md"], false, 600, "reading")
            .await
            .0,
        200
    );
    assert_eq!(
        reserve(&d, B, &["docs/guide.md"], false, 600, "reading too")
            .await
            .0,
        200
    );
    let (status, v) = reserve(&d, C, &["docs/guide.md"], true, 600, "").await;
    assert_eq!(status, 409, "exclusive vs shared holders: {v}");
    let matched: Vec<&str> = v["error"]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        matched.contains(&A) && matched.contains(&B),
        "both shared holders are named: {v}"
    );

    assert_eq!(reserve(&d, C, &["src/x.rs"], true, 600, "").await.0, 200);
    assert_eq!(
        reserve(&d, A, &["src/x.rs"], false, 600, "").await.0,
        409,
        "shared vs an exclusive holder"
    );
    assert_eq!(
        reserve(&d, C, &["src/x.rs"], true, 900, "again").await.0,
        200,
        "own claim renews"
    );
    assert_eq!(
        held(&d).await,
        vec![
            h(A, "docs/guide.md", false),
            h(B, "docs/guide.md", false),
            h(C, "src/x.rs", true)
        ]
    );
}

// Proves glob and path overlap is decided on the normalized pattern:
// `src/**` covers `src/a/b.rs`, `*.md` does not reach `src/x.md`, and a
// trailing `/` reserves a directory.
#[tokio::test]
async fn globs_and_paths_overlap_as_globs_say() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    register(&d, A, &repo.dir("")).await;
    register(&d, B, &repo.dir("")).await;

    assert_eq!(reserve(&d, A, &["src/**"], true, 600, "").await.0, 200);
    assert_eq!(
        reserve(&d, B, &["src/a/b.rs"], true, 600, "").await.0,
        409,
        "src/** covers src/a/b.rs"
    );
    assert_eq!(
        reserve(&d, B, &["src/*/mod.rs"], false, 600, "").await.0,
        409,
        "glob vs glob"
    );
    assert_eq!(
        reserve(&d, B, &["*.md"], true, 600, "").await.0,
        200,
        "*.md is the root's markdown only"
    );
    assert_eq!(
        reserve(&d, A, &["README.md"], true, 600, "").await.0,
        409,
        "README.md is in *.md"
    );
    assert_eq!(release(&d, A, &["src/**"]).await, 1);
    assert_eq!(
        reserve(&d, A, &["src/x.md"], true, 600, "").await.0,
        200,
        "* does not cross /"
    );
    assert_eq!(reserve(&d, A, &["tests/"], true, 600, "").await.0, 200);
    assert_eq!(
        reserve(&d, B, &["tests/deep/t.rs"], true, 600, "").await.0,
        409,
        "tests/ holds the directory"
    );
    assert_eq!(
        held(&d).await,
        vec![
            h(A, "src/x.md", true),
            h(A, "tests/**", true),
            h(B, "*.md", true)
        ]
    );
}

// Proves paths are resolved against the repository root, so sessions in
// different subdirectories of one checkout (and absolute paths) compare the
// same file, while the same relative path in another checkout never conflicts.
#[tokio::test]
async fn paths_compare_across_subdirectories_but_not_across_repositories() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let other = Repo::new("proj");
    register(&d, A, &repo.dir("crates/core")).await;
    register(&d, B, &repo.dir("docs/guide")).await;
    register(&d, C, &other.dir("crates/core")).await;

    let (status, v) = reserve(&d, A, &["src/lib.rs"], true, 600, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        v["reservations"][0]["pattern"], "crates/core/src/lib.rs",
        "relative to the root: {v}"
    );
    assert_eq!(
        reserve(&d, B, &["../../crates/core/src/lib.rs"], true, 600, "")
            .await
            .0,
        409
    );
    assert_eq!(
        reserve(
            &d,
            B,
            &[&repo.file("crates/core/src/lib.rs")],
            true,
            600,
            ""
        )
        .await
        .0,
        409
    );
    assert_eq!(
        reserve(&d, B, &["../../crates/core/./src//lib.rs"], true, 600, "")
            .await
            .0,
        409
    );
    assert_eq!(
        reserve(&d, C, &["src/lib.rs"], true, 600, "").await.0,
        200,
        "another checkout never conflicts"
    );
    let (_, v) = d.get("/api/v1/reservations").await;
    let roots: Vec<&str> = v["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["root"].as_str().unwrap())
        .collect();
    assert_eq!(roots.len(), 2);
    assert_ne!(roots[0], roots[1], "{v}");
}

// Proves release by path frees just that path and release with no paths
// frees everything the session holds, and another session can then take them.
#[tokio::test]
async fn release_by_path_and_release_all() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    register(&d, A, &repo.dir("")).await;
    register(&d, B, &repo.dir("src")).await;
    assert_eq!(
        reserve(&d, A, &["src/a.rs", "src/b.rs", "src/c.rs"], true, 600, "")
            .await
            .0,
        200
    );
    assert_eq!(release(&d, A, &["src/b.rs"]).await, 1);
    assert_eq!(release(&d, B, &[]).await, 0, "B holds nothing to release");
    assert_eq!(
        held(&d).await,
        vec![h(A, "src/a.rs", true), h(A, "src/c.rs", true)]
    );
    assert_eq!(
        reserve(&d, B, &["b.rs"], true, 600, "").await.0,
        200,
        "B (cwd src/) takes the released one"
    );
    assert_eq!(reserve(&d, B, &["a.rs"], true, 600, "").await.0, 409);
    assert_eq!(release(&d, A, &[]).await, 2, "release-all");
    assert_eq!(held(&d).await, vec![h(B, "src/b.rs", true)]);
    assert_eq!(
        reserve(&d, B, &["a.rs", "c.rs"], true, 600, "").await.0,
        200
    );
    assert_eq!(
        held(&d).await,
        vec![
            h(B, "src/a.rs", true),
            h(B, "src/b.rs", true),
            h(B, "src/c.rs", true)
        ]
    );
    d.stop().await;
}

// Proves a claim lapses at its ttl: once 1 s has passed a 1 s claim no
// longer shows (1 ms before, it still refuses), and another session can
// take the path. No sweep is needed: an expired claim refuses nothing.
#[tokio::test]
async fn claims_expire() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    register(&d, A, &repo.dir("")).await;
    register(&d, B, &repo.dir("")).await;
    assert_eq!(reserve(&d, A, &["src/a.rs"], true, 1, "brief").await.0, 200);
    assert_eq!(reserve(&d, B, &["src/a.rs"], true, 600, "").await.0, 409);
    d.clock.advance(ms(999));
    assert_eq!(
        reserve(&d, B, &["src/a.rs"], true, 600, "").await.0,
        409,
        "999 ms of a 1 s claim"
    );
    assert_eq!(held(&d).await, vec![h(A, "src/a.rs", true)]);
    d.clock.advance(ms(1));
    assert_eq!(
        reserve(&d, B, &["src/a.rs"], true, 600, "").await.0,
        200,
        "A's claim expired"
    );
    assert_eq!(held(&d).await, vec![h(B, "src/a.rs", true)]);
    d.stop().await;
}

// Proves a holder leaving the roster ends its claims: by its session-end
// hook, and by DELETE /api/v1/sessions/{id}.
#[tokio::test]
async fn leaving_ends_the_holders_claims() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let root = repo.dir("");
    // A arrives through its hooks.
    let started = hook_http(&d, "session-start", &turn(A, &root, "SessionStart"), &[]).await;
    assert!(context(&started).contains(A), "{started}");
    register(&d, B, &root).await;
    register(&d, C, &root).await;
    assert_eq!(reserve(&d, A, &["src/a.rs"], true, 600, "").await.0, 200);
    assert_eq!(reserve(&d, B, &["src/b.rs"], true, 600, "").await.0, 200);
    assert_eq!(reserve(&d, C, &["src/a.rs"], true, 600, "").await.0, 409);

    hook_http(
        &d,
        "session-end",
        &json!({"session_id": A, "cwd": root, "hook_event_name": "SessionEnd"}),
        &[],
    )
    .await;
    assert_eq!(
        held(&d).await,
        vec![h(B, "src/b.rs", true)],
        "session-end ended A's claim"
    );
    assert_eq!(reserve(&d, C, &["src/a.rs"], true, 600, "").await.0, 200);

    let (status, v) = d.delete(&format!("/api/v1/sessions/{B}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        held(&d).await,
        vec![h(C, "src/a.rs", true)],
        "DELETE ended B's claim"
    );
    assert_eq!(reserve(&d, C, &["src/b.rs"], true, 600, "").await.0, 200);

    // A comes back: its old claim is not resurrected.
    register(&d, A, &root).await;
    assert_eq!(
        held(&d).await,
        vec![h(C, "src/a.rs", true), h(C, "src/b.rs", true)]
    );
    d.stop().await;
}

// Proves the sweeper removing a silent hook-only holder ends its claims.
#[tokio::test]
async fn the_sweeper_ends_a_swept_holders_claims() {
    let d = TestDaemon::start_with(|c| {
        c.hook_backstop = ms(1_000);
        c.sweep_interval = ms(100);
    })
    .await;
    let repo = Repo::new("proj");
    register(&d, A, &repo.dir("")).await;
    assert_eq!(reserve(&d, A, &["src/**"], true, 600, "").await.0, 200);
    // Silent for the whole backstop: the background sweeper, woken by the
    // clock's move, removes A on its own task.
    d.clock.advance(ms(1_000));
    assert!(
        wait_for(ms(10_000), || async { roster_entry(&d, A).await.is_none() }).await,
        "A was swept"
    );
    assert_eq!(held(&d).await, vec![], "a swept holder holds nothing");
    register(&d, B, &repo.dir("")).await;
    assert_eq!(reserve(&d, B, &["src/a.rs"], true, 600, "").await.0, 200);
    d.stop().await;
}

// ---------------------------------------------------------------- edit guard

/// A holds src/a.rs exclusively and src/shared.rs shared; B works in the same checkout.
async fn guarded(mode: GuardMode) -> (TestDaemon, Repo, String) {
    let d = TestDaemon::start_with(|c| c.edit_guard = mode).await;
    let repo = Repo::new("proj");
    let root = repo.dir("");
    let nick_a = register(&d, A, &root).await;
    register(&d, B, &repo.dir("src")).await;
    assert_eq!(
        reserve(
            &d,
            A,
            &["src/a.rs", "notes/n.ipynb"],
            true,
            600,
            "parser rewrite"
        )
        .await
        .0,
        200
    );
    assert_eq!(
        reserve(&d, A, &["src/shared.rs"], false, 600, "").await.0,
        200
    );
    (d, repo, nick_a)
}

// Proves the edit guard denies B's Edit, Write, MultiEdit, NotebookEdit and
// Codex apply_patch of a path A holds exclusively, naming A and how to reach
// them. (That the real `muster hook` client prints the same refusal is
// shown in crates/cli/tests/coordination.rs.)
#[tokio::test]
async fn edit_guard_denies_edits_of_an_exclusively_held_file() {
    let (d, repo, nick_a) = guarded(GuardMode::Deny).await;
    let cwd_b = repo.dir("src");
    let patch = "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-x\n+y\n*** End Patch\n";
    let calls = [
        (
            "Edit",
            json!({"file_path": repo.file("src/a.rs"), "old_string": "x", "new_string": "y"}),
        ),
        ("Write", json!({"file_path": "a.rs", "content": "y"})),
        (
            "MultiEdit",
            json!({"file_path": repo.file("src/a.rs"), "edits": []}),
        ),
        (
            "NotebookEdit",
            json!({"notebook_path": repo.file("notes/n.ipynb"), "new_source": "y"}),
        ),
    ];
    for (tool, input) in calls {
        let answer = hook_http(&d, "pre-tool-use", &pre_tool(B, &cwd_b, tool, input), &[]).await;
        assert_eq!(decision(&answer), Some("deny"), "{tool}: {answer}");
        assert_eq!(answer["hookSpecificOutput"]["hookEventName"], "PreToolUse");
        let reason = answer["hookSpecificOutput"]["permissionDecisionReason"]
            .as_str()
            .unwrap();
        for needle in [nick_a.as_str(), A, "parser rewrite", "send_message", "UTC"] {
            assert!(
                reason.contains(needle),
                "{tool}: the reason names {needle:?}: {reason}"
            );
        }
    }
    // Codex: apply_patch with the patch text, paths relative to the repository root.
    let codex = json!({"session_id": B, "cwd": repo.dir(""), "hook_event_name": "PreToolUse", "turn_id": "t1",
        "tool_name": "apply_patch", "tool_input": {"command": ["apply_patch", patch]}});
    let answer = hook_http(&d, "pre-tool-use", &codex, &[]).await;
    assert_eq!(decision(&answer), Some("deny"), "apply_patch: {answer}");
    assert!(answer["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .unwrap()
        .contains(&nick_a));
}

// Proves what the guard lets through: the holder's own edit, a Read of the
// held file, an edit of a shared-reserved file, and an edit of a free file.
#[tokio::test]
async fn edit_guard_allows_the_holder_reads_shared_and_free_files() {
    let (d, repo, _) = guarded(GuardMode::Deny).await;
    let root = repo.dir("");
    let own = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(A, &root, "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(own, json!({}), "the holder edits freely");
    let read = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &root, "Read", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(read, json!({}), "reads are not guarded");
    let shared = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &root, "Edit", json!({"file_path": "src/shared.rs"})),
        &[],
    )
    .await;
    assert_eq!(
        decision(&shared),
        None,
        "a shared claim does not block edits: {shared}"
    );
    let free = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &root, "Write", json!({"file_path": "src/free.rs"})),
        &[],
    )
    .await;
    assert_eq!(free, json!({}));
    let bash = json!({"command": "echo x > src/a.rs"});
    assert_eq!(
        hook_http(&d, "pre-tool-use", &pre_tool(B, &root, "Bash", bash), &[]).await,
        json!({}),
        "shell is out of scope"
    );
}

// Proves `--edit-guard ask` turns the refusal into a question for the person.
#[tokio::test]
async fn edit_guard_ask_mode_asks() {
    let (d, repo, nick_a) = guarded(GuardMode::Ask).await;
    let a = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &repo.dir(""), "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(decision(&a), Some("ask"), "{a}");
    assert!(a["hookSpecificOutput"]["permissionDecisionReason"]
        .as_str()
        .unwrap()
        .contains(&nick_a));
}

// Proves `--edit-guard warn` lets the edit through with the warning in context.
#[tokio::test]
async fn edit_guard_warn_mode_warns_in_context() {
    let (d, repo, nick_a) = guarded(GuardMode::Warn).await;
    let a = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &repo.dir(""), "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(decision(&a), None, "warn does not decide: {a}");
    let ctx = context(&a);
    assert!(
        ctx.contains(&nick_a) && ctx.contains("src/a.rs"),
        "the warning is in context: {a}"
    );
}

// Proves `--edit-guard off` answers nothing at all.
#[tokio::test]
async fn edit_guard_off_is_silent() {
    let (d, repo, _) = guarded(GuardMode::Off).await;
    let a = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &repo.dir(""), "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(a, json!({}));
}

// ---------------------------------------------------------------- collision notices

fn notices(answer: &Value) -> Vec<String> {
    let ctx = context(answer);
    ctx.match_indices("<muster-notice>")
        .map(|(i, _)| {
            ctx[i..]
                .split("</muster-notice>")
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

// Proves two sessions editing one file (no reservations) within the window
// are both told once: B in the answer to its own edit, A at its next hook,
// and neither again on later hooks or later edits of that file.
#[tokio::test]
async fn collision_notice_tells_both_once() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let root = repo.dir("");
    let nick_a = register(&d, A, &root).await;
    let nick_b = register(&d, B, &repo.dir("src")).await;
    let first = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(A, &root, "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(first, json!({}), "the first writer is told nothing yet");
    let b = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &repo.dir("src"), "Edit", json!({"file_path": "a.rs"})),
        &[],
    )
    .await;
    assert_eq!(decision(&b), None, "no reservation: no refusal: {b}");
    let nb = notices(&b);
    assert_eq!(nb.len(), 1, "B is told in that very answer: {b}");
    assert!(
        nb[0].contains(&nick_a) && nb[0].contains("src/a.rs"),
        "{nb:?}"
    );

    let a_next = hook_http(
        &d,
        "prompt-submit",
        &turn(A, &root, "UserPromptSubmit"),
        &[],
    )
    .await;
    let na = notices(&a_next);
    assert_eq!(na.len(), 1, "A is told at its next hook: {a_next}");
    assert!(na[0].contains(&nick_b) && na[0].contains(B), "{na:?}");

    // Once: later hooks and later edits of the same file tell nobody again.
    for _ in 0..2 {
        let a = hook_http(
            &d,
            "pre-tool-use",
            &pre_tool(A, &root, "Edit", json!({"file_path": "src/a.rs"})),
            &[],
        )
        .await;
        let b = hook_http(
            &d,
            "pre-tool-use",
            &pre_tool(B, &root, "Write", json!({"file_path": "src/a.rs"})),
            &[],
        )
        .await;
        assert!(notices(&a).is_empty() && notices(&b).is_empty(), "{a} {b}");
        assert!(notices(
            &hook_http(
                &d,
                "prompt-submit",
                &turn(A, &root, "UserPromptSubmit"),
                &[]
            )
            .await
        )
        .is_empty());
        assert!(notices(
            &hook_http(
                &d,
                "prompt-submit",
                &turn(B, &root, "UserPromptSubmit"),
                &[]
            )
            .await
        )
        .is_empty());
    }
}

// Proves edits further apart than --collision-window tell nobody (a whole
// window apart is already outside it).
#[tokio::test]
async fn collision_outside_the_window_is_not_reported() {
    let d = TestDaemon::start_with(|c| c.collision_window = ms(1_000)).await;
    let repo = Repo::new("proj");
    let root = repo.dir("");
    register(&d, A, &root).await;
    register(&d, B, &root).await;
    hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(A, &root, "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    // A whole window later: A's write is no longer recent.
    d.clock.advance(ms(1_000));
    let b = hook_http(
        &d,
        "pre-tool-use",
        &pre_tool(B, &root, "Edit", json!({"file_path": "src/a.rs"})),
        &[],
    )
    .await;
    assert_eq!(b, json!({}), "B is told nothing: {b}");
    let a = hook_http(
        &d,
        "prompt-submit",
        &turn(A, &root, "UserPromptSubmit"),
        &[],
    )
    .await;
    assert!(notices(&a).is_empty(), "A is told nothing: {a}");
    assert!(notices(
        &hook_http(
            &d,
            "prompt-submit",
            &turn(B, &root, "UserPromptSubmit"),
            &[]
        )
        .await
    )
    .is_empty());
}

// ---------------------------------------------------------------- threads

/// Sends `body` from `as_` to `to` over the API (a reply to `reply_to` if
/// given); asserts it was accepted and returns the answer.
async fn send(d: &TestDaemon, as_: &str, to: &str, body: &str, reply_to: Option<&str>) -> Value {
    let (status, v) = d
        .post_json(
            "/api/v1/messages",
            &json!({"as": as_, "to": to, "body": body, "reply_to": reply_to}),
        )
        .await;
    assert_eq!(status, 200, "send {body:?}: {v}");
    v
}

// Proves threads: a send with `reply_to` links replies, the API shows root
// and replies oldest first from any message in the thread to either
// participant, an outsider gets 404, and a reply to an unknown id is
// refused. (The same through `muster send --reply-to` and `muster thread`
// is in crates/cli/tests/coordination.rs.)
#[tokio::test]
async fn threads_show_root_and_replies_to_participants_only() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    for id in [A, B, C] {
        register(&d, id, &repo.dir("")).await;
    }
    let root = send(&d, A, B, "can you review src/a.rs?", None).await;
    let root_id = root["message"]["id"].as_str().unwrap().to_string();
    let r1 = send(&d, B, A, "yes, after lunch", Some(&root_id)).await;
    let r1_id = r1["message"]["id"].as_str().unwrap().to_string();
    assert_eq!(r1["message"]["reply_to"], root_id.as_str());
    let r2 = send(&d, A, B, "thanks", Some(&r1_id)).await;
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
        for who in [A, B] {
            let (status, t) = d
                .get(&format!("/api/v1/messages/{from}/thread?as={who}"))
                .await;
            assert_eq!(status, 200, "{t}");
            assert_eq!(ids(&t), expected, "from {from} as {who}: {t}");
        }
    }
    let (_, t) = d
        .get(&format!("/api/v1/messages/{r2_id}/thread?as={A}"))
        .await;
    assert_eq!(t["messages"][0]["body"], "can you review src/a.rs?");
    assert_eq!(t["messages"][2]["body"], "thanks", "oldest first: {t}");
    assert_eq!(t["messages"][2]["reply_to"], r1_id.as_str());

    for from in [&root_id, &r1_id] {
        let (status, v) = d
            .get(&format!("/api/v1/messages/{from}/thread?as={C}"))
            .await;
        assert_eq!(status, 404, "C neither sent nor received them: {v}");
    }
    let (status, _) = d
        .get(&format!(
            "/api/v1/messages/{}/thread?as={A}",
            "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
        ))
        .await;
    assert_eq!(status, 404, "an unknown id");

    for reply_to in ["01ZZZZZZZZZZZZZZZZZZZZZZZZ", "nope"] {
        let (status, v) = d
            .post_json(
                "/api/v1/messages",
                &json!({"as": A, "to": B, "body": "orphan", "reply_to": reply_to}),
            )
            .await;
        assert_eq!(status, 400, "a reply to {reply_to:?} is refused: {v}");
        assert!(error_message(&v).contains("reply_to"), "{v}");
    }
    let (status, inbox) = d.get(&format!("/api/v1/inbox?as={B}&all=true")).await;
    assert_eq!(status, 200, "{inbox}");
    let mut received = ids(&inbox);
    received.sort();
    assert_eq!(received, [root_id, r2_id], "B got exactly A's two: {inbox}");
    assert!(
        !inbox.to_string().contains("orphan"),
        "nothing was sent: {inbox}"
    );
    d.stop().await;
}

// ---------------------------------------------------------------- operator mail

// Proves a person is addressable as op:<name>: their live sessions (operator
// from the hook header or from registration) get the mail framed as for
// their operator to relay, not act on, and the person's own inbox has it.
// (`muster send op:<name>` and `muster inbox --as op:<name>` are in
// crates/cli/tests/coordination.rs.)
#[tokio::test]
async fn operator_mail_reaches_the_person_and_their_sessions_framed_for_relay() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let root = repo.dir("");
    hook_http(
        &d,
        "session-start",
        &turn(A, &root, "SessionStart"),
        &[("x-muster-operator", "alice")],
    )
    .await;
    let (status, v) = d
        .post_json(
            "/api/v1/sessions",
            &json!({"id": B, "cwd": root, "operator": "alice"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = d
        .post_json(
            "/api/v1/sessions",
            &json!({"id": C, "cwd": root, "operator": "bob"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(roster_entry(&d, A).await.unwrap()["operator"], "alice");

    let sent = send(&d, C, "op:alice", "the deploy is at 5pm", None).await;
    let recipients: Vec<&str> = sent["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient"].as_str().unwrap())
        .collect();
    assert!(
        recipients.contains(&"op:alice") && recipients.contains(&A) && recipients.contains(&B),
        "{sent}"
    );
    assert!(!recipients.contains(&C), "{sent}");

    for id in [A, B] {
        let ctx = context(
            &hook_http(
                &d,
                "prompt-submit",
                &turn(id, &root, "UserPromptSubmit"),
                &[],
            )
            .await,
        );
        assert!(ctx.contains("the deploy is at 5pm"), "{id}: {ctx}");
        assert!(
            ctx.contains("message for your operator alice"),
            "{id}: {ctx}"
        );
        assert!(ctx.contains("do not act on it yourself"), "{id}: {ctx}");
    }
    let c_ctx = context(
        &hook_http(
            &d,
            "prompt-submit",
            &turn(C, &root, "UserPromptSubmit"),
            &[],
        )
        .await,
    );
    assert!(!c_ctx.contains("5pm"), "bob's session is not told: {c_ctx}");

    let (status, inbox) = d.get("/api/v1/inbox?as=op:alice").await;
    assert_eq!(status, 200, "{inbox}");
    assert_eq!(inbox["principal"], "op:alice");
    assert!(
        inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "the deploy is at 5pm"),
        "{inbox}"
    );
    d.stop().await;
}

// ---------------------------------------------------------------- activity

// Proves activity on the roster: prompt-submit makes a session busy,
// pre-tool-use busy with last_tool "Edit" (and the tool's arguments
// nowhere on the roster), stop makes it idle. (`muster roster` showing no
// tool argument is in crates/cli/tests/coordination.rs.)
#[tokio::test]
async fn activity_follows_hooks_and_never_shows_tool_arguments() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let root = repo.dir("");
    hook_http(&d, "session-start", &turn(A, &root, "SessionStart"), &[]).await;
    hook_http(
        &d,
        "prompt-submit",
        &turn(A, &root, "UserPromptSubmit"),
        &[],
    )
    .await;
    assert_eq!(roster_entry(&d, A).await.unwrap()["activity"], "busy");

    let secret = "SECRET-ARGUMENT-4711";
    let input = json!({"file_path": format!("src/{secret}.rs"), "old_string": secret, "new_string": secret});
    hook_http(&d, "pre-tool-use", &pre_tool(A, &root, "Edit", input), &[]).await;
    let me = roster_entry(&d, A).await.unwrap();
    assert_eq!(me["activity"], "busy", "{me}");
    assert_eq!(me["last_tool"], "Edit", "{me}");
    let (_, roster) = d.get("/api/v1/roster?all=true").await;
    assert!(
        !roster.to_string().contains(secret),
        "no tool argument on the roster: {roster}"
    );

    hook_http(&d, "stop", &turn(A, &root, "Stop"), &[]).await;
    assert_eq!(roster_entry(&d, A).await.unwrap()["activity"], "idle");
    d.stop().await;
}

// ---------------------------------------------------------------- races

// Proves exclusivity under contention: 16 sessions, each on its own task
// (of a multi-threaded runtime, the daemon's too) and HTTP client, race for
// one path 20 times; each round exactly one wins and 15 are refused, and a
// concurrent observer never sees two exclusive holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_sessions_race_and_exactly_one_holds() {
    const N: usize = 16;
    const ROUNDS: usize = 20;
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    let ids: Vec<String> = (0..N)
        .map(|i| format!("d0000000-0000-4000-8000-{i:012}"))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        // Half work from the root, half from a subdirectory: the same file either way.
        register(&d, id, &repo.dir(if i % 2 == 0 { "" } else { "src" })).await;
    }
    let url = d.url.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let observed = Arc::new(AtomicUsize::new(0));
    let observer = {
        let (url, stop, observed) = (url.clone(), stop.clone(), observed.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut max_holders = 0;
            while !stop.load(Ordering::Relaxed) {
                let v: Value = client
                    .get(format!("{url}/api/v1/reservations"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let holders = v["reservations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["pattern"] == "src/hot.rs" && r["exclusive"] == true)
                    .count();
                max_holders = max_holders.max(holders);
                observed.fetch_add(1, Ordering::Relaxed);
            }
            max_holders
        })
    };

    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let workers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (url, id, barrier) = (url.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let path = if i % 2 == 0 { "src/hot.rs" } else { "hot.rs" };
                let mut results = Vec::with_capacity(ROUNDS);
                for _ in 0..ROUNDS {
                    barrier.wait().await;
                    let resp = client
                        .post(format!("{url}/api/v1/reservations"))
                        .json(&json!({"as": id, "paths": [path], "exclusive": true, "ttl_s": 60}))
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    results.push(status);
                    // Everyone has answered before the winner lets go.
                    barrier.wait().await;
                    if status == 200 {
                        let r = client
                            .post(format!("{url}/api/v1/reservations/release"))
                            .json(&json!({"as": id, "paths": [path]}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                    }
                    barrier.wait().await;
                }
                results
            })
        })
        .collect();
    let mut results: Vec<Vec<u16>> = Vec::with_capacity(N);
    for w in workers {
        results.push(w.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let max_holders = observer.await.unwrap();

    for round in 0..ROUNDS {
        let statuses: Vec<u16> = results.iter().map(|r| r[round]).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 409).count(),
            N - 1,
            "round {round}: {statuses:?}"
        );
    }
    assert!(
        max_holders <= 1,
        "an observer saw {max_holders} exclusive holders at once"
    );
    assert!(observed.load(Ordering::Relaxed) > 0, "the observer polled");
    assert_eq!(held(&d).await, vec![], "every winner released");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        started.elapsed()
    );
    d.stop().await;
}

// ---------------------------------------------------------------- bad input

// Proves bad reservation requests get a clear 4xx and grant nothing:
// malformed globs, paths outside the repository, zero, negative and huge
// TTLs, no paths, too many paths, an over-long reason, an operator as holder.
#[tokio::test]
async fn bad_reservation_requests_are_refused_and_grant_nothing() {
    let d = TestDaemon::start().await;
    let repo = Repo::new("proj");
    register(&d, A, &repo.dir("src")).await;
    let many: Vec<String> = (0..65).map(|i| format!("f{i}.rs")).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "character class",
            json!({"as": A, "paths": ["src/[ab].rs"]}),
            "not supported",
        ),
        (
            "braces",
            json!({"as": A, "paths": ["ok.rs", "src/{a,b}.rs"]}),
            "not supported",
        ),
        (
            "absolute outside",
            json!({"as": A, "paths": ["/etc/passwd"]}),
            "outside",
        ),
        (
            "climbing out",
            json!({"as": A, "paths": ["../../../../x"]}),
            "",
        ),
        (
            "just outside",
            json!({"as": A, "paths": ["../../x"]}),
            "outside",
        ),
        (
            "ttl 0",
            json!({"as": A, "paths": ["a.rs"], "ttl_s": 0}),
            "ttl_s",
        ),
        (
            "ttl -5",
            json!({"as": A, "paths": ["a.rs"], "ttl_s": -5}),
            "",
        ),
        (
            "ttl huge",
            json!({"as": A, "paths": ["a.rs"], "ttl_s": 10_000_000}),
            "ttl_s",
        ),
        ("no paths", json!({"as": A, "paths": []}), "paths"),
        ("65 paths", json!({"as": A, "paths": many}), "paths"),
        ("empty path", json!({"as": A, "paths": [""]}), "empty"),
        (
            "long reason",
            json!({"as": A, "paths": ["a.rs"], "reason": "r".repeat(201)}),
            "reason",
        ),
        (
            "operator",
            json!({"as": "op:x", "paths": ["a.rs"]}),
            "only sessions",
        ),
        ("no one", json!({"paths": ["a.rs"]}), "only sessions"),
        (
            "unknown session",
            json!({"as": "nobody-at-all", "paths": ["a.rs"]}),
            "",
        ),
        ("paths not a list", json!({"as": A, "paths": "a.rs"}), ""),
    ];
    for (what, body, needle) in cases {
        let (status, v) = d.post_json("/api/v1/reservations", &body).await;
        assert!(
            (400..500).contains(&status) && status != 409,
            "{what}: {status} {v}"
        );
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: not an error body: {v}"));
        assert!(!msg.is_empty());
        assert!(
            msg.contains(needle),
            "{what}: {msg:?} should mention {needle:?}"
        );
        assert_eq!(held(&d).await, vec![], "{what} granted nothing");
    }
    // The edge values are fine.
    assert_eq!(
        reserve(&d, A, &["a.rs"], true, 86_400, &"r".repeat(200))
            .await
            .0,
        200
    );
    let sixty_four: Vec<String> = (0..64).map(|i| format!("f{i}.rs")).collect();
    let (status, v) = d
        .post_json(
            "/api/v1/reservations",
            &json!({"as": A, "paths": sixty_four, "ttl_s": 1}),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    // Releasing bad paths is refused too, and releases nothing.
    let (status, _) = d
        .post_json(
            "/api/v1/reservations/release",
            &json!({"as": A, "paths": ["/etc/passwd"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(held(&d).await.len(), 65);
}

// Proves a session with no working directory cannot reserve (its paths mean nothing).
#[tokio::test]
async fn a_session_without_a_working_directory_cannot_reserve() {
    let d = TestDaemon::start().await;
    assert_eq!(
        d.post_json("/api/v1/sessions", &json!({"id": A})).await.0,
        200
    );
    let (status, v) = reserve(&d, A, &["a.rs"], true, 60, "").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(held(&d).await, vec![]);
}
