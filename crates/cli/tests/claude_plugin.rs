//! The repository's Claude Code plugin, with the real Claude Code offline:
//! `claude plugin marketplace add <this repository>` and `claude plugin
//! install muster@muster` set muster up in a throwaway home, and then a
//! `claude -p` turn against the Messages API stub runs the plugin's hooks
//! and its MCP server (`muster`, found on PATH: a link to this build)
//! against a real `muster serve`.

#[path = "support/claude_offline.rs"]
mod claude_offline;
mod common;
#[path = "support/messages_stub.rs"]
mod messages_stub;
#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::PathBuf;
use std::time::Duration;

use claude_offline::{last_tool_results, main_loop, muster_on_path, path_with, Claude};
use common::*;
use messages_stub::{MessagesStub, Turn};
use sandbox::{count, known_session, new_uuid, Sandbox};
use serde_json::{json, Value};

/// The repository: its `.claude-plugin/marketplace.json` lists the plugin.
fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// What Claude Code calls the plugin's MCP tools: `mcp__plugin_<plugin>_<server>__<tool>`.
fn tool(name: &str) -> String {
    format!("mcp__plugin_muster_muster__{name}")
}

// Proves the plugin sets muster up in the real Claude Code: the marketplace at the repository's root adds and the
// plugin installs (user scope, offline); a `claude -p` turn then runs the plugin's hooks (the session joins the
// daemon's roster as a Claude Code session and the model sees its identity) and its MCP server (a scripted
// `whoami` call is answered with the session's nickname); mail sent to the session before its next turn is in
// that turn's model request once, and the plugin's `/muster` skill has the model call the roster tool, which it
// may without a permission flag, and whose answer names the peer.
#[test]
fn the_plugin_installs_from_the_repository_and_hooks_and_mcp_reach_the_daemon() {
    let sandbox = Sandbox::new();
    let daemon = TestDaemon::start(&[]);
    let stub = MessagesStub::start();
    let bin = muster_on_path(&sandbox.home);
    let claude = Claude::new(&sandbox.home, &sandbox.project, &stub.url, path_with(&bin))
        .with_env("MUSTER_URL", &daemon.url);

    let repo = repository();
    let added = claude.ok(&["plugin", "marketplace", "add", repo.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(said.contains("muster"), "marketplace add said: {said}");
    let installed = claude.ok(&["plugin", "install", "muster@muster"]);
    let said = String::from_utf8_lossy(&installed.stdout);
    assert!(
        said.contains("muster@muster"),
        "plugin install said: {said}"
    );
    let listed = claude.ok(&["plugin", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap_or_else(|e| {
        panic!(
            "plugin list --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&listed.stdout)
        )
    });
    assert!(
        listed.to_string().contains("muster@muster"),
        "the plugin is listed: {listed}"
    );
    let settings = sandbox::read(&sandbox.home.join(".claude/settings.json"));
    assert!(
        settings.contains("\"muster@muster\": true"),
        "the plugin is enabled in the user's settings: {settings}"
    );

    // First turn: the hooks put the session on the roster, the MCP server answers.
    let id = new_uuid();
    stub.push(Turn::tool_use(tool("whoami"), json!({})));
    stub.push(Turn::text("that is me"));
    let whoami = tool("whoami");
    let result = claude.turn(&[
        "-p",
        "who am I on muster?",
        "--session-id",
        &id,
        "--allowedTools",
        &whoami,
    ]);
    assert_eq!(result["result"], "that is me", "{result}");
    let me = known_session(&daemon, &id)
        .unwrap_or_else(|| panic!("the plugin's hooks did not register {id}"));
    assert_eq!(me["harness"], "claude", "{me}");
    assert_eq!(
        me["link"], "link",
        "the plugin's MCP server linked for the session: {me}"
    );
    let nickname = me["nickname"].as_str().unwrap().to_string();
    let bodies = main_loop(stub.bodies());
    assert!(
        bodies.iter().any(|b| count(b, "<muster-identity>") > 0),
        "the SessionStart hook's identity reached the model: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| count(b, &tool("send_message")) > 0),
        "the model is offered the plugin's tools: {bodies:?}"
    );
    let answered = bodies
        .iter()
        .map(last_tool_results)
        .find(|r| r.contains(&nickname))
        .unwrap_or_else(|| panic!("no tool result names {nickname}: {bodies:?}"));
    assert!(
        answered.contains(&id),
        "whoami answered for {id}: {answered}"
    );

    // Mail sent between turns reaches the next one; /muster shows the roster.
    let peer = new_uuid();
    let (status, v) = daemon.post_json(
        "/api/v1/sessions",
        &json!({"id": peer, "cwd": sandbox.project.to_str().unwrap()}),
    );
    assert_eq!(status, 200, "{v}");
    let peer_nick = v["nickname"].as_str().unwrap().to_string();
    let marker = format!("PLUGINMAIL{}", new_uuid().replace('-', ""));
    let (status, sent) = daemon.post_json(
        "/api/v1/messages",
        &json!({"as": peer, "to": id, "body": format!("the schema is migrated ({marker})")}),
    );
    assert_eq!((status, &sent["state"]), (200, &json!("queued")), "{sent}");

    let mark = stub.mark();
    stub.push(Turn::tool_use(tool("roster"), json!({})));
    stub.push(Turn::text("here is the roster"));
    let result = claude.turn(&["-p", "/muster", "--resume", &id]);
    assert_eq!(result["result"], "here is the roster", "{result}");
    let bodies = main_loop(stub.bodies_since(mark));
    assert!(!bodies.is_empty(), "the /muster turn made no model request");
    assert_eq!(
        count(&bodies[0], "Show the user muster's roster"),
        1,
        "the skill's instructions are in the first request: {}",
        bodies[0]
    );
    // Each later request replays the conversation: the mail is in it once,
    // from the first request on, and no later hook brings it again.
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(
            count(body, &marker),
            1,
            "request {i} of the turn carries the mail once: {body}"
        );
    }
    let roster = bodies
        .iter()
        .map(last_tool_results)
        .find(|r| r.contains(&peer_nick))
        .unwrap_or_else(|| {
            panic!(
                "the roster tool ran without a permission flag and named {peer_nick}: {bodies:?}"
            )
        });
    assert!(
        !roster.contains("haven't granted"),
        "the skill's allowed-tools let the call run: {roster}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || daemon.status()
            ["unread_deliveries"]
            == 0)
        .is_some(),
        "the mail is marked surfaced: {}",
        daemon.status()
    );
    assert!(
        stub.unknown().is_empty(),
        "Claude Code called paths the stub does not serve: {:?}",
        stub.unknown()
    );
}
