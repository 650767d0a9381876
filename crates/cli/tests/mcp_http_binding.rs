//! `/mcp` binds each MCP session to the muster session it first acts for.

mod common;

use common::*;
use serde_json::{json, Value};

fn post(d: &TestDaemon, headers: &[(&str, &str)], body: Value) -> (Option<String>, Value) {
    let mut req = http()
        .post(format!("{}/mcp", d.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().unwrap();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().unwrap_or_default();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim))
        .find(|d| !d.is_empty());
    (
        sid,
        serde_json::from_str(data.unwrap_or(text.trim())).unwrap_or(Value::Null),
    )
}

// Proves an HTTP MCP session that acted as session A cannot then act as B (by header or _session_id), while a fresh MCP session may act as B.
#[test]
fn an_http_mcp_session_speaks_for_one_session_only() {
    let d = TestDaemon::start(&[]);
    let (a, b) = (
        "b0000000-0000-4000-8000-00000000000a",
        "b0000000-0000-4000-8000-00000000000b",
    );
    for id in [a, b] {
        assert_eq!(d.post_json("/api/v1/sessions", &json!({"id": id})).0, 200);
    }
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let open = |who: &str| {
        let (sid, _) = post(&d, &[("x-muster-session", who)], init.clone());
        let sid = sid.expect("mcp session id");
        post(
            &d,
            &[("x-muster-session", who), ("mcp-session-id", &sid)],
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        sid
    };
    let whoami = |sid: &str, header: &str, args: Value| {
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "whoami", "arguments": args}});
        post(
            &d,
            &[("x-muster-session", header), ("mcp-session-id", sid)],
            call,
        )
        .1
    };
    let sid = open(a);
    let me = whoami(&sid, a, json!({}));
    assert!(
        me["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(a),
        "{me}"
    );
    let hop = whoami(&sid, b, json!({}));
    assert_eq!(hop["result"]["isError"], true, "{hop}");
    assert!(
        hop["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("speaks for session"),
        "{hop}"
    );

    let fresh = open(b);
    let me = whoami(&fresh, b, json!({}));
    assert!(
        me["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(b),
        "a new MCP session may be B: {me}"
    );
}
