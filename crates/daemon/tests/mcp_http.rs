//! `/mcp` over Streamable HTTP, on a daemon in process: bad input gets a
//! JSON-RPC error (or a 4xx for what is not JSON-RPC at all) and changes
//! nothing, and each MCP session is bound to the muster session it first
//! acts for.

mod support;

use serde_json::{json, Value};
use support::*;

/// Posts one JSON-RPC message to /mcp with extra headers; returns the
/// status, the `mcp-session-id` answered, and the JSON-RPC answer (from a
/// JSON body or the first `data:` line of an SSE body).
async fn rpc(
    d: &TestDaemon,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, Value) {
    let mut req = d
        .client
        .post(format!("{}/mcp", d.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
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

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
        "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}})
}

fn call(id: u64, name: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}})
        .to_string()
}

/// Initializes an MCP session acting as `who`; returns its `mcp-session-id`.
async fn open(d: &TestDaemon, who: &str) -> String {
    let (status, sid, v) = rpc(d, &[("x-muster-session", who)], initialize().to_string()).await;
    assert_eq!(status, 200, "{v}");
    let sid = sid.expect("a session id for the legacy protocol");
    let (status, _, _) = rpc(
        d,
        &[("x-muster-session", who), ("mcp-session-id", &sid)],
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .await;
    assert!(status < 300);
    sid
}

// Proves bad input over HTTP MCP (malformed JSON, unknown tool, wrong argument types, an oversized body or argument) is answered with an error and stores nothing, and the endpoint still serves well-formed calls.
#[tokio::test]
async fn bad_http_mcp_input_is_refused_and_changes_nothing() {
    let d = TestDaemon::start_with(|c| c.max_request_bytes = 65_536).await;
    let (a, b) = (
        "a0000000-0000-4000-8000-00000000000a",
        "a0000000-0000-4000-8000-00000000000b",
    );
    for id in [a, b] {
        assert_eq!(
            d.post_json("/api/v1/sessions", &json!({"id": id})).await.0,
            200
        );
    }
    let (status, _, v) = rpc(&d, &[("x-muster-session", a)], "{not json").await;
    assert!((400..500).contains(&status), "malformed JSON: {status} {v}");

    let sid = open(&d, a).await;
    let as_a = [("x-muster-session", a), ("mcp-session-id", sid.as_str())];
    let (_, _, v) = rpc(&d, &as_a, call(2, "no_such_tool", json!({}))).await;
    assert_eq!(v["error"]["code"], -32602, "unknown tool: {v}");
    let (_, _, v) = rpc(
        &d,
        &as_a,
        call(3, "send_message", json!({"to": 5, "body": "x"})),
    )
    .await;
    assert_eq!(v["error"]["code"], -32602, "wrong type: {v}");
    let (_, _, v) = rpc(
        &d,
        &as_a,
        call(
            4,
            "send_message",
            json!({"to": b, "body": "x".repeat(7_000)}),
        ),
    )
    .await;
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
        &as_a,
        call(
            5,
            "send_message",
            json!({"to": b, "body": "y".repeat(70_000)}),
        ),
    )
    .await;
    assert_eq!(status, 413, "a body over --max-request-bytes: {v}");
    assert_eq!(
        d.status().await["unread_deliveries"],
        0,
        "nothing was stored"
    );

    let (_, _, v) = rpc(
        &d,
        &as_a,
        call(6, "send_message", json!({"to": b, "body": "fine"})),
    )
    .await;
    assert_eq!(
        v["result"]["isError"], false,
        "a good call still works: {v}"
    );
    assert_eq!(d.status().await["unread_deliveries"], 1);
    d.stop().await;
}

// Proves an HTTP MCP session that acted as session A cannot then act as B (by header or _session_id), while a fresh MCP session may act as B.
#[tokio::test]
async fn an_http_mcp_session_speaks_for_one_session_only() {
    let d = TestDaemon::start().await;
    let (a, b) = (
        "b0000000-0000-4000-8000-00000000000a",
        "b0000000-0000-4000-8000-00000000000b",
    );
    for id in [a, b] {
        assert_eq!(
            d.post_json("/api/v1/sessions", &json!({"id": id})).await.0,
            200
        );
    }
    let whoami = |sid: String, header: &'static str, args: Value| {
        let d = &d;
        async move {
            let headers = [("x-muster-session", header), ("mcp-session-id", &sid)];
            rpc(d, &headers, call(7, "whoami", args)).await.2
        }
    };
    let sid = open(&d, a).await;
    let me = whoami(sid.clone(), a, json!({})).await;
    assert!(
        me["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(a),
        "{me}"
    );
    let hop = whoami(sid.clone(), b, json!({})).await;
    assert_eq!(hop["result"]["isError"], true, "{hop}");
    assert!(
        hop["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("speaks for session"),
        "{hop}"
    );

    let fresh = open(&d, b).await;
    let me = whoami(fresh, b, json!({})).await;
    assert!(
        me["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains(b),
        "a new MCP session may be B: {me}"
    );
    d.stop().await;
}
