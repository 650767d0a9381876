//! Tokens end to end (issue 10, item 4): a real `muster serve --token` and
//! the real CLI, hook client and raw HTTP, each client with no local key
//! (its own empty runtime and temp directories), so a token is its only way
//! in. Shows: tokens made, listed and revoked by an admin only; stored
//! hashed; an agent token acting only for the sessions it registered (403
//! for another's, by every route) and recorded as such; an operator reading
//! everything but acting for no agent's session; a revoked or missing token
//! refused (401); ownership kept across a restart; the token file; and the
//! dashboard's token sign-in.

mod common;
#[path = "support/outsider.rs"]
mod outsider;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::Path;
use std::process::Command;

use common::*;
use muster_core::token::hash_secret;
use outsider::{secret_of, Outsider, BOOT};
use serde_json::json;

fn file_contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every byte of the data directory's database files.
fn database_holds(data_dir: &Path, needle: &str) -> bool {
    std::fs::read_dir(data_dir)
        .unwrap()
        .flatten()
        .any(|e| file_contains(&e.path(), needle))
}

// Proves an agent token acts only for the sessions it registered, by the
// hook route, the CLI (send, inbox, reserve) and raw API calls, each
// refused 403 `forbidden_session` for another token's session and nothing
// of it stored; that its own sends are recorded as a token's; and that an
// operator token reads everything but acts for no agent's session.
#[test]
fn a_token_acts_only_for_the_sessions_it_registered() {
    let d = TestDaemon::start(&["--token", BOOT]);
    let o = Outsider::new(&d);
    let alice = secret_of(&o.ok(BOOT, &["token", "create", "alice", "--scope", "agent"]));
    let bob = secret_of(&o.ok(BOOT, &["token", "create", "bob", "--scope", "agent"]));
    let ops = secret_of(&o.ok(BOOT, &["token", "create", "ops", "--scope", "operator"]));

    assert_eq!(o.hook(&alice, "session-start", "alice-1").0, 200);
    assert_eq!(o.hook(&bob, "session-start", "bob-1").0, 200);
    let roster = o.ok(&ops, &["roster"]);
    let owners: Vec<(String, String)> = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().into(),
                s["owner"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let tokens = o.ok(BOOT, &["token", "list"]);
    let id_of = |name: &str| {
        tokens["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        owners,
        [
            ("alice-1".into(), id_of("alice")),
            ("bob-1".into(), id_of("bob"))
        ]
    );

    // Bob's token, for alice's session, by each route.
    let (status, body) = o.hook(&bob, "prompt-submit", "alice-1");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden_session"))
    );
    assert_eq!(
        o.refused(
            Some(&bob),
            &["send", "bob-1", "from bob as alice", "--as", "alice-1"]
        ),
        "forbidden_session"
    );
    assert_eq!(
        o.refused(Some(&bob), &["inbox", "--as", "alice-1"]),
        "forbidden_session"
    );
    assert_eq!(
        o.refused(Some(&bob), &["reserve", "src/lib.rs", "--as", "alice-1"]),
        "forbidden_session"
    );
    let (status, _) = o.http(
        "POST",
        "/api/v1/sessions",
        Some(&bob),
        Some(json!({"id": "alice-1", "status": "mine now"})),
    );
    assert_eq!(status, 403);
    // An agent token is no person either.
    assert_eq!(
        o.refused(Some(&bob), &["send", "alice-1", "as a person"]),
        "forbidden_session"
    );
    // The operator reads everyone but acts for no agent's session.
    assert_eq!(
        o.refused(Some(&ops), &["send", "bob-1", "hi", "--as", "alice-1"]),
        "forbidden_session"
    );
    let (status, _) = o.http("GET", "/api/v1/events", Some(&bob), None);
    assert_eq!(status, 403, "an agent token reads no one else's events");

    // Alice's own send, as her session: stored once, recorded as a token's.
    let sent = o.ok(
        &alice,
        &["send", "bob-1", "hello from alice", "--as", "alice-1"],
    );
    let id = sent["message"]["id"].as_str().unwrap().to_string();
    // An operator reads any session's threads; an agent token only its own.
    let thread = o.ok(&ops, &["thread", &id, "--as", "bob-1"]);
    assert_eq!(
        o.refused(Some(&alice), &["thread", &id, "--as", "bob-1"]),
        "forbidden_session"
    );
    let messages = thread["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["from"], "alice-1");
    assert_eq!(messages[0]["via"], "token");
    let bobs = o.ok(&bob, &["inbox", "--as", "bob-1", "--all"]);
    let bodies: Vec<&str> = bobs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["hello from alice"],
        "none of bob's refused sends was stored"
    );
    assert_eq!(o.ok(&ops, &["reservations"])["reservations"], json!([]));
}

// Proves only an admin manages tokens, a token's secret is shown once and
// stored only as its hash, a revoked or missing token is refused 401, and
// a restarted daemon keeps the tokens and whose sessions are whose.
#[test]
fn tokens_are_managed_by_admins_stored_hashed_and_kept() {
    let data = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start_in(data.path(), &["--token", BOOT]);
    let o = Outsider::new(&d);
    assert_eq!(o.refused(None, &["roster"]), "unauthorized");
    assert_eq!(
        o.refused(Some("muster_made_up"), &["roster"]),
        "unauthorized"
    );

    let made = o.ok(BOOT, &["token", "create", "carol", "--scope", "agent"]);
    let carol = secret_of(&made);
    assert_eq!(made["name"], "carol");
    assert_eq!(made["scope"], "agent");
    assert_eq!(made["created_by"], "bootstrap");
    let ops = secret_of(&o.ok(BOOT, &["token", "create", "ops", "--scope", "operator"]));
    let admin = secret_of(&o.ok(BOOT, &["token", "create", "root2", "--scope", "admin"]));
    assert_eq!(
        o.refused(Some(BOOT), &["token", "create", "carol"]),
        "token_exists"
    );
    assert_eq!(
        o.refused(Some(BOOT), &["token", "create", "no spaces"]),
        "invalid_input"
    );
    for who in [&carol, &ops] {
        assert_eq!(o.refused(Some(who), &["token", "list"]), "forbidden_scope");
        assert_eq!(
            o.refused(Some(who), &["token", "create", "x"]),
            "forbidden_scope"
        );
        assert_eq!(o.refused(Some(who), &["dashboard"]), "forbidden_scope");
    }
    let listed = o.ok(&admin, &["token", "list"]);
    let text = listed.to_string();
    assert!(!text.contains(&carol) && !text.contains("hash"), "{text}");
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol", "ops", "root2"]);

    assert_eq!(o.hook(&carol, "session-start", "carol-1").0, 200);
    assert!(
        !database_holds(&d.data_dir, &carol),
        "the secret is never stored"
    );
    assert!(
        database_holds(&d.data_dir, &hash_secret(&carol)),
        "its hash is"
    );

    d.terminate(std::time::Duration::from_secs(10));
    let d = TestDaemon::start_in(data.path(), &["--token", BOOT]);
    let o = Outsider {
        url: d.url.clone(),
        ..o
    };
    assert_eq!(
        o.hook(&carol, "prompt-submit", "carol-1").0,
        200,
        "carol's, still"
    );
    let (status, _) = o.hook(&ops, "prompt-submit", "carol-1");
    assert_eq!(status, 403, "still carol's alone after a restart");

    let revoked = o.ok(&admin, &["token", "revoke", "carol"]);
    assert!(revoked["revoked_at"].as_i64().is_some());
    assert_eq!(o.refused(Some(&carol), &["roster"]), "unauthorized");
    assert_eq!(o.hook(&carol, "prompt-submit", "carol-1").0, 401);
    assert_eq!(
        o.refused(Some(&admin), &["token", "revoke", "carol"]),
        "unknown_token"
    );
    // A revoked name may be made again: a new token, not the old one.
    let again = secret_of(&o.ok(&admin, &["token", "create", "carol"]));
    assert_ne!(again, carol);
    assert_eq!(
        o.hook(&again, "prompt-submit", "carol-1").0,
        403,
        "not the old carol's"
    );
}

// Proves `token create --out` writes the secret to a new 0600 file and
// prints none, refuses to overwrite a file, and that clients read the
// token from MUSTER_TOKEN_FILE.
#[test]
fn a_token_file_holds_the_secret_for_clients() {
    let d = TestDaemon::start(&["--token", BOOT]);
    let o = Outsider::new(&d);
    let file = o.dir.path().join("dana.token");
    let made = o.ok(
        BOOT,
        &[
            "token",
            "create",
            "dana",
            "--scope",
            "operator",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(made.get("secret").is_none(), "{made}");
    assert_eq!(made["file"], file.to_str().unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = o
        .cmd(None)
        .env("MUSTER_TOKEN_FILE", &file)
        .args(["roster", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        o.refused(
            Some(BOOT),
            &["token", "create", "erin", "--out", file.to_str().unwrap()]
        ),
        "invalid_input",
        "an existing file is never overwritten"
    );
    let listed = o.ok(BOOT, &["token", "list"]);
    assert_eq!(
        listed["tokens"].as_array().unwrap().len(),
        1,
        "erin was never made"
    );
}

// Proves the dashboard signs in with a token: `POST /login` sets an
// HttpOnly, SameSite=Strict cookie that acts with the token's scope (an
// operator reads the roster, manages no tokens), a bad token gets 401 and
// no cookie, and `GET /login` is the sign-in page.
#[test]
fn the_dashboard_signs_in_with_a_token() {
    let d = TestDaemon::start(&["--token", BOOT]);
    let o = Outsider::new(&d);
    let ops = secret_of(&o.ok(BOOT, &["token", "create", "ops", "--scope", "operator"]));
    let client = http();
    let page = client.get(format!("{}/login", d.url)).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().unwrap().contains("<form id=\"login\">"));

    let login = |token: &str| {
        client
            .post(format!("{}/login", d.url))
            .header("content-type", "application/json")
            .body(json!({ "token": token }).to_string())
            .send()
            .unwrap()
    };
    let refused = login("muster_wrong");
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().get("set-cookie").is_none());

    let signed_in = login(&ops);
    assert_eq!(signed_in.status().as_u16(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(&ops), "the cookie is not the token");
    let pair = cookie.split(';').next().unwrap().to_string();
    let with_cookie = |path: &str| {
        client
            .get(format!("{}{path}", d.url))
            .header("cookie", &pair)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(with_cookie("/api/v1/roster"), 200);
    assert_eq!(
        with_cookie("/api/v1/tokens"),
        403,
        "an operator's dashboard"
    );
    let (status, _) = o.http("GET", "/api/v1/roster", None, None);
    assert_eq!(status, 401, "and nothing without it");
}

// Proves `muster install` names a team token only by reference: with the
// secret in MUSTER_TOKEN (and a file in MUSTER_TOKEN_FILE) while installing
// for all four harnesses, project and user scope, no file written holds
// the secret, and Codex (which scrubs its MCP servers' environment) is told
// to pass both variables through by name.
#[test]
fn installs_name_the_token_by_reference_never_the_secret() {
    let sb = sandbox::Sandbox::new();
    let secret = "muster_0123456789abcdef-never-in-a-file";
    let file = sb.home.join("team.token");
    std::fs::write(&file, secret).unwrap();
    for harness in ["claude", "codex", "gemini", "opencode"] {
        for scope in [
            vec!["--project", sb.project.to_str().unwrap()],
            vec!["--user"],
        ] {
            let mut cmd = Command::new(BIN);
            sb.env(&mut cmd)
                .env("MUSTER_TOKEN", secret)
                .env("MUSTER_TOKEN_FILE", &file)
                .arg("install")
                .arg(harness)
                .args(&scope);
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "install {harness} {scope:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut written = Vec::new();
    for root in [&sb.project, &sb.home] {
        files_under(root, &mut written);
    }
    written.retain(|p| p != &file);
    assert!(written.len() >= 8, "installs wrote {written:?}");
    for path in &written {
        assert!(
            !file_contains(path, secret),
            "{} holds the secret",
            path.display()
        );
    }
    let codex = std::fs::read_to_string(sb.project.join(".codex/config.toml")).unwrap();
    let passed: toml::Value = toml::from_str(&codex).unwrap();
    let vars = passed["mcp_servers"]["muster"]["env_vars"]
        .as_array()
        .unwrap();
    for name in ["MUSTER_TOKEN", "MUSTER_TOKEN_FILE"] {
        assert!(vars.iter().any(|v| v.as_str() == Some(name)), "{codex}");
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

// Proves `muster doctor` says where the token comes from, and fails a token
// file that others may read (with the chmod that mends it) or that is gone.
#[test]
fn doctor_checks_the_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::start(&["--token", BOOT]);
    let o = Outsider::new(&d);
    let file = o.dir.path().join("t.token");
    o.ok(
        BOOT,
        &["token", "create", "dee", "--out", file.to_str().unwrap()],
    );
    let doctor = |path: &Path| {
        let out = o
            .cmd(None)
            .env("MUSTER_TOKEN_FILE", path)
            .args(["doctor", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "token")
            .cloned()
            .unwrap_or_else(|| panic!("no token check: {report}"))
    };
    let good = doctor(&file);
    assert_eq!(good["ok"], true, "{good}");
    assert!(good["detail"]
        .as_str()
        .unwrap()
        .contains(file.to_str().unwrap()));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = doctor(&file);
    assert_eq!(open["ok"], false, "{open}");
    assert_eq!(open["fix"], format!("chmod 600 {}", file.display()));
    let gone = doctor(&o.dir.path().join("missing.token"));
    assert_eq!(gone["ok"], false, "{gone}");
}

/// Opens run `run`'s wake stream with `token`: the status, and the open
/// response while it is 200 (dropped, the stream closes).
fn open_wake(o: &Outsider, token: &str, run: &str) -> (u16, reqwest::blocking::Response) {
    let resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{}/api/v1/wake?run={run}&how=pty", o.url))
        .bearer_auth(token)
        .send()
        .expect("the wake request");
    (resp.status().as_u16(), resp)
}

/// The error code of a refused response.
fn code_of(resp: reqwest::blocking::Response) -> String {
    let body: serde_json::Value = resp.json().expect("a JSON error");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// Proves a wake stream cannot be taken by another token: while alice's
// token holds run-alice's stream, bob's is refused 403 `forbidden_run`;
// once alice's stream is closed, bob's is still refused, since a session
// of alice's is bound to that run; bob opens a run of his own, and the
// bootstrap admin may open alice's.
#[test]
fn a_token_holds_the_wake_stream_only_of_its_own_runs() {
    let d = TestDaemon::start(&["--token", BOOT]);
    let o = Outsider::new(&d);
    let alice = secret_of(&o.ok(BOOT, &["token", "create", "alice", "--scope", "agent"]));
    let bob = secret_of(&o.ok(BOOT, &["token", "create", "bob", "--scope", "agent"]));
    let (status, _) = o.hook_in_run(&alice, "session-start", "alice-1", Some("run-alice"));
    assert_eq!(status, 200);

    let (status, held) = open_wake(&o, &alice, "run-alice");
    assert_eq!(status, 200, "alice opens her run's stream");
    let (status, refused) = open_wake(&o, &bob, "run-alice");
    assert_eq!((status, code_of(refused).as_str()), (403, "forbidden_run"));
    drop(held);
    let (status, refused) = open_wake(&o, &bob, "run-alice");
    assert_eq!(
        (status, code_of(refused).as_str()),
        (403, "forbidden_run"),
        "alice-1 is bound to the run, whoever holds its stream"
    );
    let (status, _bobs) = open_wake(&o, &bob, "run-bob");
    assert_eq!(status, 200, "bob opens a run of his own");
    let (status, _admins) = open_wake(&o, BOOT, "run-alice");
    assert_eq!(status, 200, "an admin may hold any run");
}
