//! `/mcp` over Streamable HTTP: bad input gets a JSON-RPC error (or a 4xx
//! for what is not JSON-RPC at all) and changes nothing.

mod common;

use common::*;
use serde_json::{json, Value};

/// Posts one JSON-RPC message to /mcp; returns the status and the JSON-RPC
/// answer (from a JSON body or the first `data:` line of an SSE body).
fn rpc(
    d: &TestDaemon,
    session: Option<&str>,
    mcp_session: Option<&str>,
    body: impl Into<reqwest::blocking::Body>,
) -> (u16, Option<String>, Value) {
    let mut req = http()
        .post(format!("{}/mcp", d.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(s) = session {
        req = req.header("x-muster-session", s);
    }
    if let Some(s) = mcp_session {
        req = req.header("mcp-session-id", s);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().unwrap_or_default();
    // An SSE answer may start with an empty priming event; take the first message.
    let json_text = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim))
        .find(|d| !d.is_empty())
        .unwrap_or(text.trim());
    (
        status,
        id,
        serde_json::from_str(json_text).unwrap_or(Value::String(text.clone())),
    )
}

// Proves bad input over HTTP MCP (malformed JSON, unknown tool, wrong argument types, an oversized body or argument) is answered with an error and stores nothing, and the endpoint still serves well-formed calls.
#[test]
fn bad_http_mcp_input_is_refused_and_changes_nothing() {
    let d = TestDaemon::start(&["--max-request-bytes", "65536"]);
    let (a, b) = (
        "a0000000-0000-4000-8000-00000000000a",
        "a0000000-0000-4000-8000-00000000000b",
    );
    for id in [a, b] {
        assert_eq!(d.post_json("/api/v1/sessions", &json!({"id": id})).0, 200);
    }
    let (status, _, v) = rpc(&d, Some(a), None, "{not json");
    assert!((400..500).contains(&status), "malformed JSON: {status} {v}");

    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}});
    let (status, sid, v) = rpc(&d, Some(a), None, init.to_string());
    assert_eq!(status, 200, "{v}");
    let sid = sid.expect("a session id for the legacy protocol");
    let (status, _, _) = rpc(
        &d,
        Some(a),
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    );
    assert!(status < 300);

    let call = |id: u64, name: &str, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}}).to_string()
    };
    let (_, _, v) = rpc(&d, Some(a), Some(&sid), call(2, "no_such_tool", json!({})));
    assert_eq!(v["error"]["code"], -32602, "unknown tool: {v}");
    let (_, _, v) = rpc(
        &d,
        Some(a),
        Some(&sid),
        call(3, "send_message", json!({"to": 5, "body": "x"})),
    );
    assert_eq!(v["error"]["code"], -32602, "wrong type: {v}");
    let (_, _, v) = rpc(
        &d,
        Some(a),
        Some(&sid),
        call(
            4,
            "send_message",
            json!({"to": b, "body": "x".repeat(7_000)}),
        ),
    );
    assert_eq!(v["result"]["isError"], true, "oversized argument: {v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{v}"
    );
    let (status, _, v) = rpc(
        &d,
        Some(a),
        Some(&sid),
        call(
            5,
            "send_message",
            json!({"to": b, "body": "y".repeat(70_000)}),
        ),
    );
    assert_eq!(status, 413, "a body over --max-request-bytes: {v}");
    assert_eq!(d.status()["unread_deliveries"], 0, "nothing was stored");

    let (_, _, v) = rpc(
        &d,
        Some(a),
        Some(&sid),
        call(6, "send_message", json!({"to": b, "body": "fine"})),
    );
    assert_eq!(
        v["result"]["isError"], false,
        "a good call still works: {v}"
    );
    assert_eq!(d.status()["unread_deliveries"], 1);
}
