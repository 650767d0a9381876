//! `muster install claude --hooks http`: Claude Code's own `type: "http"`
//! hooks posting straight to the daemon, with the token taken from
//! MUSTER_TOKEN by name. What the install writes (and refuses), what doctor
//! says of it, and the real Claude Code offline running a turn whose hooks
//! reach a real `muster serve` over http.

#[path = "support/claude_offline.rs"]
mod claude_offline;
mod common;
#[path = "support/messages_stub.rs"]
mod messages_stub;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use claude_offline::{main_loop, muster_on_path, path_with, Claude};
use common::*;
use messages_stub::{MessagesStub, Turn};
use sandbox::{count, known_session, new_uuid, read, Sandbox};
use serde_json::{json, Value};

/// The five events Claude Code runs http hooks for, and their routes.
const HTTP_EVENTS: [(&str, &str); 5] = [
    ("UserPromptSubmit", "prompt-submit"),
    ("PreToolUse", "pre-tool-use"),
    ("PostToolUse", "post-tool-use"),
    ("Stop", "stop"),
    ("SessionEnd", "session-end"),
];

/// `muster <args>` in the sandbox's project, with `bin` (holding a `muster`
/// link to this build) first on PATH and `env` added.
fn muster(sb: &Sandbox, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    sb.env(&mut cmd)
        .env("PATH", path_with(bin))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(&sb.project);
    cmd.output().expect("run muster")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts `settings` holds muster's http hooks posting to `url` and its
/// SessionStart command hook, and nothing else of muster's.
fn assert_http_hooks(settings: &Value, url: &str) {
    let start = &settings["hooks"]["SessionStart"][0]["hooks"][0];
    assert_eq!(
        start,
        &json!({"type": "command", "command": "muster hook session-start --harness claude", "timeout": 5}),
        "SessionStart stays a command hook: {settings}"
    );
    for (event, route) in HTTP_EVENTS {
        let hooks = settings["hooks"][event].as_array().unwrap_or_else(|| {
            panic!("no {event} hooks: {settings}");
        });
        assert_eq!(hooks.len(), 1, "one group for {event}: {settings}");
        let hook = &hooks[0]["hooks"][0];
        assert_eq!(
            hook,
            &json!({
                "type": "http",
                "url": format!("{url}/hook/{route}?harness=claude"),
                "headers": {
                    "Authorization": "Bearer ${MUSTER_TOKEN}",
                    "X-Muster-Run": "${MUSTER_RUN_ID}",
                    "X-Muster-Wake": "${MUSTER_WAKE}",
                },
                "allowedEnvVars": ["MUSTER_TOKEN", "MUSTER_RUN_ID", "MUSTER_WAKE"],
                "timeout": 2,
            }),
            "{event}"
        );
    }
}

/// The check of `muster doctor --json` named `claude (project <dir>) <name>`: (ok, detail).
fn doctor_check(report: &Value, dir: &str, name: &str) -> (Value, Value) {
    let full = format!("claude (project {dir}) {name}");
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == full.as_str())
        .unwrap_or_else(|| panic!("no doctor check {name:?}: {report:#}"));
    (c["ok"].clone(), c["detail"].clone())
}

// Proves `muster install claude --hooks http` refuses without MUSTER_TOKEN (naming it and how to make one), for
// another harness and for a team's list of addresses, writing nothing; with MUSTER_TOKEN set it writes http hooks
// naming the daemon's hook routes (SessionStart a command hook) into .claude/settings.local.json only, keeps the
// server in .mcp.json, writes the secret nowhere, and doctor finds every hook and the config current, failing
// only the token check where MUSTER_TOKEN is unset; a plain install moves the command hooks back, and
// --uninstall takes out both kinds.
#[test]
fn http_hooks_install_refuse_without_a_token_and_move_back_and_out() {
    let sb = Sandbox::new();
    let bin = muster_on_path(&sb.home);
    let url = "http://127.0.0.1:7491";
    let secret = format!("muster_{}", new_uuid().replace('-', ""));
    let project = sb.project.to_str().unwrap();
    let local = sb.project.join(".claude/settings.local.json");
    let team = sb.project.join(".claude/settings.json");
    let before = sandbox::snapshot(&[local.clone(), team.clone(), sb.project.join(".mcp.json")]);

    let refused = muster(
        &sb,
        &bin,
        &["install", "claude", "--project", project, "--hooks", "http"],
        &[("MUSTER_URL", url)],
    );
    assert_eq!(refused.status.code(), Some(2));
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("MUSTER_TOKEN is not set") && why.contains("muster token create"),
        "{why}"
    );
    let codex = muster(
        &sb,
        &bin,
        &["install", "codex", "--project", project, "--hooks", "http"],
        &[("MUSTER_URL", url), ("MUSTER_TOKEN", &secret)],
    );
    assert_eq!(codex.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&codex.stderr).contains("for claude only"),
        "{}",
        String::from_utf8_lossy(&codex.stderr)
    );
    let list = muster(
        &sb,
        &bin,
        &["install", "claude", "--project", project, "--hooks", "http"],
        &[
            ("MUSTER_URL", "http://127.0.0.1:7491,http://127.0.0.1:7492"),
            ("MUSTER_TOKEN", &secret),
        ],
    );
    assert_eq!(list.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&list.stderr).contains("one address"),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert_eq!(
        sandbox::snapshot(&[local.clone(), team.clone(), sb.project.join(".mcp.json")]),
        before,
        "a refused install writes nothing"
    );

    let said = ok(
        &muster(
            &sb,
            &bin,
            &["install", "claude", "--project", project, "--hooks", "http"],
            &[("MUSTER_URL", url), ("MUSTER_TOKEN", &secret)],
        ),
        "install --hooks http",
    );
    assert!(
        said.contains("MUSTER_TOKEN"),
        "the note says what it needs: {said}"
    );
    assert_http_hooks(&json_file(&local), url);
    let team_settings = json_file(&team);
    assert!(
        team_settings.get("hooks").is_none(),
        "the team's settings hold no hooks: {team_settings}"
    );
    assert_eq!(team_settings["enabledMcpjsonServers"], json!(["muster"]));
    assert_eq!(
        json_file(&sb.project.join(".mcp.json"))["mcpServers"]["muster"],
        json!({"command": "muster", "args": ["mcp"]})
    );
    for file in [&local, &team, &sb.project.join(".mcp.json")] {
        assert!(
            !read(file).contains(&secret),
            "{} holds the token",
            file.display()
        );
    }

    // Doctor: every hook found, the config current; the token is checked where it runs.
    let with_token = muster(
        &sb,
        &bin,
        &["doctor", "--json"],
        &[("MUSTER_URL", url), ("MUSTER_TOKEN", &secret)],
    );
    let report: Value = serde_json::from_slice(&with_token.stdout).unwrap();
    assert_eq!(
        doctor_check(&report, project, "hooks"),
        (json!(true), json!(format!("all 6 in {}", local.display()))),
        "{report:#}"
    );
    assert_eq!(
        doctor_check(&report, project, "config version").0,
        json!(true),
        "{report:#}"
    );
    assert_eq!(
        doctor_check(&report, project, "http hooks"),
        (
            json!(true),
            json!(format!("post to {url}, with MUSTER_TOKEN (set here)"))
        ),
        "{report:#}"
    );
    let without = muster(&sb, &bin, &["doctor", "--json"], &[("MUSTER_URL", url)]);
    let report: Value = serde_json::from_slice(&without.stdout).unwrap();
    let (token_ok, detail) = doctor_check(&report, project, "http hooks");
    assert_eq!(token_ok, json!(false), "{report:#}");
    assert!(detail.to_string().contains("not set here"), "{detail}");

    // Back to command hooks: they return to the team's settings, the local ones go.
    ok(
        &muster(
            &sb,
            &bin,
            &["install", "claude", "--project", project],
            &[("MUSTER_URL", url)],
        ),
        "install (command hooks)",
    );
    let team_settings = json_file(&team);
    assert_eq!(
        team_settings["hooks"]["PostToolUse"][0]["hooks"][0]["command"],
        "muster hook post-tool-use --harness claude",
        "{team_settings}"
    );
    assert!(
        !local.exists() || !read(&local).contains("/hook/"),
        "the http hooks are gone from {}: {}",
        local.display(),
        read(&local)
    );

    // And out, from http hooks too.
    ok(
        &muster(
            &sb,
            &bin,
            &["install", "claude", "--project", project, "--hooks", "http"],
            &[("MUSTER_URL", url), ("MUSTER_TOKEN", &secret)],
        ),
        "install --hooks http again",
    );
    ok(
        &muster(
            &sb,
            &bin,
            &["install", "claude", "--project", project, "--uninstall"],
            &[("MUSTER_URL", url)],
        ),
        "uninstall",
    );
    assert_eq!(
        sandbox::snapshot(&[local.clone(), team.clone(), sb.project.join(".mcp.json")]),
        before,
        "uninstall leaves the project as it was"
    );
}

// Proves http hooks with the real Claude Code, offline: a project set up by `muster install claude --hooks
// http`, with an admin token in MUSTER_TOKEN (the shim links over the daemon's Unix socket as its user, and of
// the tokens only an admin one acts for such a session), runs a turn whose UserPromptSubmit, PreToolUse,
// PostToolUse, Stop and SessionEnd hooks Claude Code posts to the daemon itself, each answered 200 (its debug
// log shows each POST and answer), while
// SessionStart runs `muster hook` and the model sees the identity; the session is on the roster as a Claude Code
// session that ran Bash; mail sent before the next turn is in that turn's model request once, from the http
// UserPromptSubmit hook.
#[test]
fn claude_code_posts_its_hooks_to_the_daemon() {
    let sb = Sandbox::new();
    let daemon = TestDaemon::start(&[]);
    let stub = MessagesStub::start();
    let bin = muster_on_path(&sb.home);
    let made = ok(
        &muster(
            &sb,
            &bin,
            &["token", "create", "tester", "--scope", "admin", "--json"],
            &[("MUSTER_URL", &daemon.url)],
        ),
        "muster token create",
    );
    let token: Value = serde_json::from_str(&made).unwrap();
    let secret = token["secret"].as_str().unwrap().to_string();
    let project = sb.project.to_str().unwrap();
    ok(
        &muster(
            &sb,
            &bin,
            &["install", "claude", "--project", project, "--hooks", "http"],
            &[("MUSTER_URL", &daemon.url), ("MUSTER_TOKEN", &secret)],
        ),
        "install --hooks http",
    );
    assert_http_hooks(
        &json_file(&sb.project.join(".claude/settings.local.json")),
        &daemon.url,
    );

    let claude = Claude::new(&sb.home, &sb.project, &stub.url, path_with(&bin))
        .with_env("MUSTER_URL", &daemon.url)
        .with_env("MUSTER_TOKEN", &secret);
    let id = new_uuid();
    let debug = sb.home.join("claude-debug.log");
    stub.push(Turn::tool_use(
        "Bash",
        json!({"command": "echo over-http", "description": "say it"}),
    ));
    stub.push(Turn::text("done over http"));
    let result = claude.turn(&[
        "-p",
        "say it",
        "--session-id",
        &id,
        "--allowedTools",
        "Bash",
        "--debug-file",
        debug.to_str().unwrap(),
    ]);
    assert_eq!(result["result"], "done over http", "{result}");
    let log = read(&debug);
    for (_, route) in HTTP_EVENTS {
        let post = format!(
            "HTTP hook POST to {}/hook/{route}?harness=claude",
            daemon.url
        );
        assert!(
            log.contains(&post),
            "Claude Code's debug log shows no {post:?}:\n{}",
            log.lines()
                .filter(|l| l.contains("ook"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let answers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("HTTP hook response status"))
        .collect();
    assert!(
        answers.len() >= HTTP_EVENTS.len()
            && answers
                .iter()
                .all(|l| l.contains("HTTP hook response status 200")),
        "the daemon answered every http hook 200: {answers:#?}"
    );
    let me = known_session(&daemon, &id).unwrap_or_else(|| panic!("{id} is not known"));
    assert_eq!(me["harness"], "claude", "{me}");
    assert_eq!(
        me["last_tool"],
        "Bash",
        "the http PreToolUse hook told muster the tool: {me}\n{}",
        log.lines()
            .filter(|l| l.contains("ook"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(10), || !daemon
            .roster_ids()
            .contains(&id))
        .is_some(),
        "the http SessionEnd hook took {id} off the roster"
    );
    let bodies = main_loop(stub.bodies());
    assert!(
        bodies.iter().any(|b| count(b, "<muster-identity>") > 0),
        "the SessionStart command hook's identity reached the model: {bodies:?}"
    );

    // Mail between turns arrives with the next prompt, through the http hook.
    let peer = new_uuid();
    let (status, v) = daemon.post_json("/api/v1/sessions", &json!({"id": peer, "cwd": project}));
    assert_eq!(status, 200, "{v}");
    let marker = format!("HTTPMAIL{}", new_uuid().replace('-', ""));
    let (status, sent) = daemon.post_json(
        "/api/v1/messages",
        &json!({"as": peer, "to": id, "body": format!("ping over http ({marker})")}),
    );
    assert_eq!((status, &sent["state"]), (200, &json!("queued")), "{sent}");
    let mark = stub.mark();
    claude.turn(&["-p", "anything new?", "--resume", &id]);
    let bodies = main_loop(stub.bodies_since(mark));
    assert!(!bodies.is_empty(), "the second turn made no model request");
    assert_eq!(
        count(&bodies[0], &marker),
        1,
        "the mail is in the turn's first request once: {}",
        bodies[0]
    );
    assert!(
        wait_until(Duration::from_secs(5), || daemon.status()
            ["unread_deliveries"]
            == 0)
        .is_some(),
        "the mail is marked surfaced: {}",
        daemon.status()
    );
}
