//! Bad input gets a clear 4xx, stores nothing, and never brings the daemon
//! down: raw HTTP to a daemon in process.

mod support;

use serde_json::json;
use support::*;

/// Nothing stored: no session on the roster (even away), no mail anywhere.
async fn assert_nothing_stored(d: &TestDaemon, except_sessions: usize) {
    let all = d.get("/api/v1/roster?all=true").await.1;
    assert_eq!(
        all["sessions"].as_array().unwrap().len(),
        except_sessions,
        "{all}"
    );
    assert_eq!(d.status().await["unread_deliveries"], 0);
}

// Proves each kind of bad hook input is refused with a 4xx naming the
// problem, and none of them registers a session.
#[tokio::test]
async fn bad_hook_input_is_refused_clearly() {
    let d = TestDaemon::start().await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "not valid JSON"),
        (b"".to_vec(), 400, "empty"),
        (br#"{"cwd":"/tmp"}"#.to_vec(), 400, "session_id"),
        (br#"{"session_id":""}"#.to_vec(), 400, "session_id"),
        (br#"{"session_id":"has space"}"#.to_vec(), 400, "session_id"),
        (br#"{"session_id":42}"#.to_vec(), 400, "wrong shape"),
        (
            b"{\"session_id\":\"ok\",\"cwd\":\"\xff\xfe\"}".to_vec(),
            400,
            "UTF-8",
        ),
        (b"[1,2,3]".to_vec(), 400, "wrong shape"),
    ];
    for (body, want, words) in cases {
        let (status, v) = d.post("/hook/prompt-submit", body.clone()).await;
        assert_eq!(status, want, "{:?} -> {v}", String::from_utf8_lossy(&body));
        assert!(
            error_message(&v).contains(words),
            "{:?}: {v}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, v) = d.post("/hook/not-an-event", r#"{"session_id":"x"}"#).await;
    assert_eq!(status, 404);
    assert!(
        error_message(&v).contains("prompt-submit"),
        "lists the events it takes: {v}"
    );
    // A harness muster has no hook answers for is refused, not answered in
    // some other harness's form.
    let (status, v) = d
        .post(
            "/hook/prompt-submit?harness=cursor",
            r#"{"session_id":"s-cursor"}"#,
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        error_message(&v),
        "unknown harness \"cursor\"; muster's hooks answer claude, codex, opencode, gemini"
    );
    assert_nothing_stored(&d, 0).await;
}

// Proves the request size limit (1 MiB by default) answers 413 and stores nothing.
#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let d = TestDaemon::start().await;
    let big = format!(r#"{{"session_id":"big","cwd":"{}"}}"#, "a".repeat(1 << 20));
    let (status, v) = d.post("/hook/session-start", big).await;
    assert_eq!(status, 413, "{v}");
    let (status, _) = d
        .post(
            "/api/v1/messages",
            format!(r#"{{"to":"x","body":"{}"}}"#, "b".repeat(1 << 20)),
        )
        .await;
    assert_eq!(status, 413);
    assert_nothing_stored(&d, 0).await;
}

// Proves bad sends (unknown or ambiguous recipient, empty or oversized
// body, unknown sender, unknown reply_to) get 4xx with reasons and queue nothing.
#[tokio::test]
async fn bad_sends_are_refused_and_queue_nothing() {
    let d = TestDaemon::start().await;
    for id in [
        "abcd0001-0000-4000-8000-000000000000",
        "abcd0002-0000-4000-8000-000000000000",
    ] {
        assert_eq!(
            d.post_json("/api/v1/sessions", &json!({"id": id})).await.0,
            200
        );
    }
    let a = "abcd0001-0000-4000-8000-000000000000";
    let cases = [
        (
            json!({"as": a, "to": "nobody-here", "body": "hi"}),
            404,
            "unknown recipient",
        ),
        (
            json!({"as": a, "to": "abcd", "body": "hi"}),
            409,
            "ambiguous",
        ),
        (
            json!({"as": a, "to": "abcd0002", "body": "   "}),
            400,
            "empty",
        ),
        (
            json!({"as": a, "to": "abcd0002", "body": "x".repeat(6_001)}),
            400,
            "too large",
        ),
        (
            json!({"as": a, "to": "abcd0002", "body": "<".repeat(2_000)}),
            400,
            "escaped",
        ),
        (
            json!({"as": "ghost", "to": "abcd0002", "body": "hi"}),
            404,
            "unknown session",
        ),
        (
            json!({"as": a, "to": "abcd0002", "body": "hi", "reply_to": "01NOPE"}),
            400,
            "reply_to",
        ),
        (
            json!({"as": a, "to": "#room", "body": "hi"}),
            400,
            "broadcast",
        ),
        (json!({"as": a, "body": "hi"}), 400, "wrong shape"),
        (
            json!({"as": a, "to": "abcd0002", "body": "hi\u{0}there"}),
            400,
            "nul character",
        ),
    ];
    for (body, want, words) in cases {
        let (status, v) = d.post_json("/api/v1/messages", &body).await;
        assert_eq!(status, want, "{body} -> {v}");
        assert!(
            error_message(&v).to_lowercase().contains(words),
            "{body} -> {v}"
        );
    }
    let (status, v) = d
        .post_json(
            "/api/v1/broadcast",
            &json!({"as": a, "room": "no-such-room", "body": "hi"}),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = d
        .post_json("/api/v1/rooms/join", &json!({"as": a, "room": "everyone"}))
        .await;
    assert_eq!(status, 400, "automatic rooms are not joined by hand: {v}");
    let (status, _) = d.get("/api/v1/inbox?limit=notanumber").await;
    assert_eq!(status, 400);
    assert_nothing_stored(&d, 2).await;
}

// Proves no input brings the daemon down: a bounded run of pseudo-random
// bodies to every POST route all get a 4xx, and the daemon still answers.
#[tokio::test]
async fn random_bodies_never_crash_the_daemon() {
    let d = TestDaemon::start().await;
    let routes = [
        "/hook/session-start",
        "/hook/prompt-submit",
        "/hook/pre-tool-use",
        "/hook/stop",
        "/hook/session-end",
        "/api/v1/sessions",
        "/api/v1/messages",
        "/api/v1/broadcast",
        "/api/v1/inbox/ack",
        "/api/v1/rooms/join",
        "/api/v1/rooms/leave",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let fragments: [&[u8]; 8] = [
        b"{",
        b"}",
        b"\"session_id\":",
        b"\"x\"",
        b",",
        b"\xff",
        b"[",
        b"null",
    ];
    for i in 0..330 {
        let route = routes[i % routes.len()];
        let len = (next() % 24) as usize;
        let body: Vec<u8> = (0..len)
            .flat_map(|_| fragments[(next() % 8) as usize].to_vec())
            .collect();
        let (status, v) = d.post(route, body.clone()).await;
        assert!(
            (400..500).contains(&status),
            "{route} {:?} -> {status} {v}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(d.get("/healthz").await.0, 200);
    assert_nothing_stored(&d, 0).await;
}
