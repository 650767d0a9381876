//! `muster guard`: the git pre-commit hook against a real daemon and a real git.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::json;

fn git(repo: &Path, args: &[&str], url: &str, session: Option<&str>) -> Output {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(repo)
        .args(args)
        .env("MUSTER_URL", url)
        .env("MUSTER_AUTOSTART", "0")
        .env("MUSTER_OPERATOR", "tester")
        .env("XDG_CONFIG_HOME", "/nonexistent-muster-test-config")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", repo)
        .env_remove("MUSTER_SESSION_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID");
    if let Some(s) = session {
        cmd.env("MUSTER_SESSION_ID", s);
    }
    cmd.output().unwrap()
}

// Proves the pre-commit guard refuses a commit touching a file another session holds exclusively (naming the holder), lets the holder itself commit, fails open with the daemon down, and uninstalls cleanly.
#[test]
fn pre_commit_guard_refuses_commits_of_held_files() {
    let mut d = TestDaemon::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().canonicalize().unwrap();
    let ok = |o: Output| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ok(git(&repo, &["init", "-q", "-b", "main"], &d.url, None));
    ok(git(
        &repo,
        &["config", "user.email", "t@example.com"],
        &d.url,
        None,
    ));
    ok(git(&repo, &["config", "user.name", "t"], &d.url, None));
    std::fs::write(repo.join("schema.sql"), "v1\n").unwrap();

    let holder = "90000000-0000-4000-8000-00000000000a";
    let (status, v) = d.post_json("/api/v1/sessions", &json!({"id": holder, "cwd": repo}));
    assert_eq!(status, 200, "{v}");
    let nick = v["nickname"].as_str().unwrap().to_string();
    let (status, v) = d.post_json(
        "/api/v1/reservations",
        &json!({"as": holder, "paths": [repo.join("schema.sql")], "reason": "migrating"}),
    );
    assert_eq!(status, 200, "{v}");

    let install = muster_cmd(&d.url)
        .args(["guard", "install", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let again = muster_cmd(&d.url)
        .args(["guard", "install", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already installed"));

    ok(git(&repo, &["add", "schema.sql"], &d.url, None));
    let refused = git(&repo, &["commit", "-q", "-m", "widen"], &d.url, None);
    assert!(!refused.status.success(), "the commit was refused");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&nick) && err.contains("migrating") && err.contains("schema.sql"),
        "{err}"
    );

    let by_holder = git(
        &repo,
        &["commit", "-q", "-m", "by the holder"],
        &d.url,
        Some(holder),
    );
    assert!(
        by_holder.status.success(),
        "the holder's own commit passes: {}",
        String::from_utf8_lossy(&by_holder.stderr)
    );

    std::fs::write(repo.join("schema.sql"), "v2\n").unwrap();
    ok(git(&repo, &["add", "schema.sql"], &d.url, None));
    d.kill9();
    let open = git(&repo, &["commit", "-q", "-m", "daemon down"], &d.url, None);
    assert!(open.status.success(), "fail-open with the daemon down");
    assert!(String::from_utf8_lossy(&open.stderr).contains("unreachable"));

    let removed = muster_cmd(&d.url)
        .args(["guard", "uninstall", "--repo"])
        .arg(&repo)
        .output()
        .unwrap();
    assert!(removed.status.success());
    assert!(!repo.join(".git/hooks/pre-commit").exists());
}
