//! Search and history end to end (issue 13, item 5): a real `muster serve`,
//! messages sent between real sessions with the real CLI, then `muster
//! search` and `muster history`; an agent token that reads only as its own
//! sessions; and the `search_messages` tool through a real `muster mcp`
//! shim; and a team of two daemons on one PostgreSQL database, each
//! finding what was sent through the other. (The PostgreSQL store's own
//! search is also the store conformance suite, run by
//! crates/store-postgres's tests.)

mod common;
#[path = "support/outsider.rs"]
mod outsider;
#[path = "support/peer_shim.rs"]
mod peer_shim;
#[path = "support/postgres_db.rs"]
mod postgres_db;

use std::collections::BTreeSet;

use common::*;
use outsider::{secret_of, Outsider, BOOT};
use peer_shim::PeerShim;
use postgres_db::FreshDatabase;
use serde_json::{json, Value};

const A: &str = "a1000000-0000-4000-8000-00000000000a";
const B: &str = "b2000000-0000-4000-8000-00000000000b";
const C: &str = "c3000000-0000-4000-8000-00000000000c";

/// `muster send` as `from`; the new message's id.
fn send(d: &TestDaemon, from: &str, to: &str, body: &str) -> String {
    let v = d.muster_json(&["send", to, body, "--as", from, "--json"]);
    v["message"]["id"].as_str().unwrap().to_string()
}

fn broadcast(d: &TestDaemon, from: &str, room: &str, body: &str) -> String {
    let v = d.muster_json(&["broadcast", room, body, "--as", from, "--json"]);
    v["message"]["id"].as_str().unwrap().to_string()
}

/// The ids of a page of messages, in its order.
fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Ids as `ids` gives them, from the ids the sends answered with.
fn want(ids: &[&String]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three hook sessions; A and B in room `dev`.
fn three_sessions(d: &TestDaemon) {
    for id in [A, B, C] {
        d.hook("session-start", &payload(id, "SessionStart"));
    }
    for id in [A, B] {
        d.muster_json(&["join", "dev", "--as", id, "--json"]);
    }
}

// Proves `muster search` finds exactly the messages whose bodies hold the
// words (any order, case aside, a word's start), newest first, everyone's
// for a person and one reader's with --as or in that session's own shell;
// that a cut listing says so and --before pages on; that query syntax is
// only text; and that `muster history` lists by target.
#[test]
fn muster_search_finds_exactly_the_messages_with_the_words() {
    let d = TestDaemon::start(&[]);
    three_sessions(&d);
    let m1 = send(&d, A, B, "the schema migration is ready for review");
    let m2 = send(&d, B, A, "Reviewed the MIGRATION: ship it");
    let m3 = send(&d, C, A, "lunch at noon?");
    let m4 = broadcast(&d, A, "dev", "deploying the schema now");
    let m5 = send(
        &d,
        C,
        "op:tester",
        "the migration broke crates/store-sqlite",
    );

    let found = |args: &[&str]| ids(&d.muster_json(&[&["search"], args, &["--json"]].concat()));
    assert_eq!(found(&["migration"]), want(&[&m5, &m2, &m1]));
    assert_eq!(found(&["Schema", "MIGRATION"]), want(&[&m1]));
    assert_eq!(found(&["migr", "ready"]), want(&[&m1]));
    assert_eq!(found(&["store-sqlite"]), want(&[&m5]));
    assert_eq!(found(&["lunch"]), want(&[&m3]));
    assert!(found(&["nothing", "here"]).is_empty());
    assert!(found(&["\"*", "AND(", "NEAR(x"]).is_empty());
    // One reader's view: what it sent or has a delivery for.
    assert_eq!(found(&["schema", "--as", B]), want(&[&m4, &m1]));
    assert_eq!(found(&["schema", "--as", C]), Vec::<String>::new());
    assert_eq!(found(&["migration", "--as", "op:tester"]), want(&[&m5]));
    let in_c_shell = muster_cmd(&d.url)
        .env("MUSTER_SESSION_ID", C)
        .args(["search", "migration", "--json"])
        .output()
        .unwrap();
    let page: Value = serde_json::from_str(&stdout(&in_c_shell)).unwrap();
    assert_eq!(
        ids(&page),
        want(&[&m5]),
        "an agent's own shell reads as the agent"
    );

    let text = stdout(&d.muster(&["search", "migration"]));
    for body in [
        "the migration broke",
        "Reviewed the MIGRATION",
        "schema migration is ready",
    ] {
        assert!(text.contains(body), "{text}");
    }
    assert!(
        text.ends_with("3 messages matching \"migration\"\n"),
        "{text}"
    );
    let cut = stdout(&d.muster(&["search", "migration", "--limit", "2"]));
    assert!(
        cut.ends_with(&format!(
            "showing the newest 2 messages matching \"migration\"; older ones exist: --before {m2} for the next page, or --limit N for more (at most 500)\n"
        )),
        "{cut}"
    );
    assert_eq!(
        found(&["migration", "--limit", "2", "--before", &m2]),
        want(&[&m1])
    );
    assert_eq!(
        stdout(&d.muster(&["search", "lunch", "--as", B])),
        format!("no messages matching \"lunch\" for {B}\n")
    );

    let history = |args: &[&str]| ids(&d.muster_json(&[&["history"], args, &["--json"]].concat()));
    assert_eq!(history(&[]), want(&[&m5, &m4, &m3, &m2, &m1]));
    assert_eq!(history(&["--to", "#dev"]), want(&[&m4]));
    assert_eq!(history(&["--to", "op:tester"]), want(&[&m5]));
    assert_eq!(history(&["--to", A]), want(&[&m3, &m2]));
    assert_eq!(history(&["--as", C, "--limit", "1"]), want(&[&m5]));
    assert_eq!(history(&["--as", C, "--before", &m5]), want(&[&m3]));
    let refused = d.muster(&["search", "x", "--to", "nobody-at-all"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nobody-at-all"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

// Proves an agent token reads only as its own sessions: with --as one of
// them (or in that session's shell) it finds only that session's mail;
// as another token's session it is 403 forbidden_session, and with no
// session at all 403 forbidden_scope, by the CLI and raw HTTP alike;
// while operator and admin tokens search everything.
#[test]
fn an_agent_token_searches_only_its_own_sessions_mail() {
    let d = TestDaemon::start(&["--token", BOOT]);
    let o = Outsider::new(&d);
    let alice = secret_of(&o.ok(BOOT, &["token", "create", "alice", "--scope", "agent"]));
    let bob = secret_of(&o.ok(BOOT, &["token", "create", "bob", "--scope", "agent"]));
    let ops = secret_of(&o.ok(BOOT, &["token", "create", "ops", "--scope", "operator"]));
    assert_eq!(o.hook(&alice, "session-start", "alice-1").0, 200);
    assert_eq!(o.hook(&bob, "session-start", "bob-1").0, 200);
    assert_eq!(o.hook(&bob, "session-start", "bob-2").0, 200);

    let sent = |token: &str, args: &[&str]| {
        o.ok(token, &[&["send"], args].concat())["message"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let to_bob = sent(
        &alice,
        &["bob-1", "the release plan, for bob", "--as", "alice-1"],
    );
    let to_alice = sent(&bob, &["alice-1", "your plan looks fine", "--as", "bob-1"]);
    let between_bobs = sent(&bob, &["bob-2", "our private plan", "--as", "bob-1"]);
    let from_person = sent(&ops, &["bob-2", "plan review at four"]);

    let search = |token: &str, args: &[&str]| {
        let found: BTreeSet<String> = ids(&o.ok(token, &[&["search", "plan"], args].concat()))
            .into_iter()
            .collect();
        found
    };
    let set = |ids: &[&String]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        search(&alice, &["--as", "alice-1"]),
        set(&[&to_bob, &to_alice])
    );
    assert_eq!(
        search(&bob, &["--as", "bob-2"]),
        set(&[&between_bobs, &from_person])
    );
    let everything = set(&[&to_bob, &to_alice, &between_bobs, &from_person]);
    assert_eq!(search(&ops, &[]), everything);
    assert_eq!(search(BOOT, &[]), everything);
    assert_eq!(
        search(&ops, &["--as", "alice-1"]),
        set(&[&to_bob, &to_alice])
    );

    // In alice-1's own shell the token reads as alice-1.
    let out = o
        .cmd(Some(&alice))
        .env("MUSTER_SESSION_ID", "alice-1")
        .args(["search", "plan", "--json"])
        .output()
        .unwrap();
    let page: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        ids(&page).into_iter().collect::<BTreeSet<_>>(),
        set(&[&to_bob, &to_alice])
    );

    assert_eq!(
        o.refused(Some(&alice), &["search", "plan", "--as", "bob-1"]),
        "forbidden_session"
    );
    assert_eq!(
        o.refused(Some(&alice), &["history", "--as", "bob-2"]),
        "forbidden_session"
    );
    assert_eq!(
        o.refused(Some(&alice), &["search", "plan"]),
        "forbidden_scope"
    );
    assert_eq!(o.refused(Some(&alice), &["history"]), "forbidden_scope");
    for path in [
        "/api/v1/search?q=plan&as=bob-1",
        "/api/v1/messages?as=bob-2",
        "/api/v1/search?q=plan",
        "/api/v1/messages",
    ] {
        let (status, body) = o.http("GET", path, Some(&alice), None);
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, body) = o.http("GET", "/api/v1/messages?as=alice-1", Some(&alice), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body).into_iter().collect::<BTreeSet<_>>(),
        set(&[&to_bob, &to_alice])
    );
    let (status, _) = o.http("GET", "/api/v1/search?q=plan", None, None);
    assert_eq!(status, 401, "no token, no search");
}

/// A tool call's answer: its result's text parsed as JSON, and whether it
/// was a tool error (then the text itself).
fn tool_answer(answer: &Value) -> (Value, bool) {
    let result = &answer["result"];
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no result text: {answer}"));
    let is_error = result["isError"] == true;
    let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
    (value, is_error)
}

// Proves the `search_messages` tool, called through a real `muster mcp`
// shim, searches as the calling session: it finds the mail that session
// sent or got and none of its peers'; `limit` pages (partial, next); and
// bad arguments are refused without running.
#[test]
fn the_search_messages_tool_searches_as_the_calling_session() {
    let d = TestDaemon::start(&[]);
    let mut a = PeerShim::start(&d, A);
    let _b = PeerShim::start(&d, B);
    d.hook("session-start", &payload(C, "SessionStart"));
    let to_a = send(&d, C, A, "deploy window opens at noon");
    let from_a = send(&d, A, C, "deploy done?");
    let to_b = send(&d, C, B, "deploy rollback plan");
    let unrelated = send(&d, B, C, "lunch");

    let (v, is_error) = tool_answer(&a.call(10, "search_messages", json!({"query": "Deploy"})));
    assert!(!is_error, "{v}");
    assert_eq!(ids(&v), want(&[&from_a, &to_a]));
    assert_eq!(v["partial"], false);
    assert!(!ids(&v).contains(&to_b) && !ids(&v).contains(&unrelated));

    let (v, _) = tool_answer(&a.call(
        11,
        "search_messages",
        json!({"query": "deploy", "limit": 1}),
    ));
    assert_eq!(ids(&v), want(&[&from_a]));
    assert_eq!(v["partial"], true);
    assert_eq!(v["next"], json!(from_a));

    let (v, _) = tool_answer(&a.call(12, "search_messages", json!({"query": "rollback"})));
    assert_eq!(ids(&v), Vec::<String>::new(), "B's mail is not A's");

    let (text, is_error) = tool_answer(&a.call(13, "search_messages", json!({"query": "  "})));
    assert!(
        is_error && text.as_str().unwrap().contains("query is required"),
        "{text}"
    );
    for (id, args) in [
        (14, json!({"query": 5})),
        (15, json!({})),
        (16, json!({"query": "x", "limit": 501})),
        (17, json!({"query": "x", "limit": "ten"})),
    ] {
        let answer = a.call(id, "search_messages", args.clone());
        assert_eq!(answer["error"]["code"], -32602, "{args}: {answer}");
    }
    a.send_line(&json!({"jsonrpc": "2.0", "id": 18, "method": "tools/list"}));
    let listed = a
        .lines_within(std::time::Duration::from_secs(2))
        .into_iter()
        .find(|v| v["id"] == 18)
        .expect("tools/list answered");
    let tool = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "search_messages")
        .cloned()
        .expect("search_messages is listed");
    assert_eq!(tool["inputSchema"]["required"], json!(["query"]));
}

// Proves search and history on the PostgreSQL store, through a team of two
// daemons on one database: a message sent through either is found by words
// through both, in the same order, and paged alike.
#[test]
fn a_team_searches_the_mail_of_every_daemon() {
    let db = FreshDatabase::new("search");
    let url = db.url();
    let a = TestDaemon::start(&["--store", &url]);
    let b = TestDaemon::start(&["--store", &url]);
    a.hook("session-start", &payload(A, "SessionStart"));
    b.hook("session-start", &payload(B, "SessionStart"));
    for d in [&a, &b] {
        let both = wait_until(std::time::Duration::from_secs(10), || {
            d.roster_ids().len() == 2
        });
        assert!(both.is_some(), "{} learns of both sessions", d.url);
    }
    let through_a = send(&a, A, B, "the Schema migration, through a");
    let through_b = send(&b, B, A, "schema review through b");
    let elsewhere = send(&b, B, A, "lunch?");
    for d in [&a, &b] {
        let found = ids(&d.muster_json(&["search", "SCHEMA", "--json"]));
        assert_eq!(found, want(&[&through_b, &through_a]), "through {}", d.url);
        let as_a = ids(&d.muster_json(&["search", "through", "--as", A, "--json"]));
        assert_eq!(as_a, want(&[&through_b, &through_a]));
        let page = d.muster_json(&["history", "--limit", "2", "--json"]);
        assert_eq!(ids(&page), want(&[&elsewhere, &through_b]));
        assert_eq!(page["partial"], true);
        let rest = d.muster_json(&["history", "--before", &through_b, "--json"]);
        assert_eq!(ids(&rest), want(&[&through_a]));
    }
}
