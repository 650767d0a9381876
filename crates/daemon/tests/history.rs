//! History and search over the API (`GET /api/v1/messages`,
//! `GET /api/v1/search`) on a daemon in process: pages, the reader's view,
//! targets, and the clear 400s for bad requests. Tokens and the real CLI
//! are in `crates/cli/tests/search.rs`.

mod support;

use serde_json::{json, Value};
use support::*;

const A: &str = "a1000000-0000-4000-8000-00000000000a";
const B: &str = "b2000000-0000-4000-8000-00000000000b";
const C: &str = "c3000000-0000-4000-8000-00000000000c";

/// Three sessions (A and B in room `dev`) and six messages: A→B twice,
/// B→A, C→op:dana, A→#dev, C→everyone.
async fn conversation() -> TestDaemon {
    let d = TestDaemon::start_with(|c| c.operator = "dana".into()).await;
    for id in [A, B, C] {
        d.hook("session-start", &payload(id, "SessionStart")).await;
    }
    for id in [A, B] {
        let (status, v) = d
            .post_json("/api/v1/rooms/join", &json!({"as": id, "room": "dev"}))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let send = |from: &str, to: &str, body: &str| json!({"as": from, "to": to, "body": body});
    for request in [
        send(A, B, "the schema migration is ready"),
        send(A, B, "please review the migration"),
        send(B, A, "Reviewed: ship it"),
        send(C, "op:dana", "lunch at noon?"),
    ] {
        let (status, v) = d.post_json("/api/v1/messages", &request).await;
        assert_eq!(status, 200, "{request}: {v}");
    }
    for (from, room, body) in [
        (A, "dev", "deploying the schema"),
        (C, "everyone", "all quiet"),
    ] {
        let request = json!({"as": from, "room": room, "body": body});
        let (status, v) = d.post_json("/api/v1/broadcast", &request).await;
        assert_eq!(status, 200, "{request}: {v}");
    }
    d
}

/// The bodies of a page, in its order.
fn bodies(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {v}"))
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

async fn ok(d: &TestDaemon, path: &str) -> Value {
    let (status, v) = d.get(path).await;
    assert_eq!(status, 200, "{path}: {v}");
    v
}

// Proves history pages newest first: a full page says partial and where
// the next starts, the pages together hold every message once, and the
// last page says it is the last.
#[tokio::test]
async fn history_pages_every_message_once_newest_first() {
    let d = conversation().await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/messages?limit=4".to_string();
    loop {
        let v = ok(&d, &path).await;
        seen.extend(bodies(&v));
        if v["next"].is_null() {
            assert_eq!(v["partial"], false, "{v}");
            break;
        }
        assert_eq!(v["partial"], true, "{v}");
        path = format!(
            "/api/v1/messages?limit=4&before={}",
            v["next"].as_str().unwrap()
        );
    }
    assert_eq!(
        seen,
        [
            "all quiet",
            "deploying the schema",
            "lunch at noon?",
            "Reviewed: ship it",
            "please review the migration",
            "the schema migration is ready"
        ]
    );
    let whole = ok(&d, "/api/v1/messages").await;
    assert_eq!(bodies(&whole).len(), 6);
    assert_eq!(whole["partial"], false);
    assert!(whole["next"].is_null(), "next is there, as null: {whole}");
}

// Proves `as` gives one reader's view (what it sent or has a delivery
// for, room mail included) and `to` what was addressed to one session
// (by nickname too), person or room (`#dev`, or a room's bare name).
#[tokio::test]
async fn history_as_a_reader_and_to_a_target() {
    let d = conversation().await;
    let b_view = ok(&d, &format!("/api/v1/messages?as={B}")).await;
    assert_eq!(
        bodies(&b_view),
        [
            "all quiet",
            "deploying the schema",
            "Reviewed: ship it",
            "please review the migration",
            "the schema migration is ready"
        ]
    );
    let dana = ok(&d, "/api/v1/messages?as=op:dana").await;
    assert_eq!(bodies(&dana), ["lunch at noon?"]);
    let roster = ok(&d, "/api/v1/roster").await;
    let nickname = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == B)
        .map(|s| s["nickname"].as_str().unwrap().to_string())
        .unwrap();
    for (to, want) in [
        (
            nickname.as_str(),
            vec![
                "please review the migration",
                "the schema migration is ready",
            ],
        ),
        ("%23dev", vec!["deploying the schema"]),
        ("dev", vec!["deploying the schema"]),
        ("everyone", vec!["all quiet"]),
        ("op:dana", vec!["lunch at noon?"]),
    ] {
        let v = ok(&d, &format!("/api/v1/messages?to={to}")).await;
        assert_eq!(bodies(&v), want, "to={to}");
    }
    let mine_to_dev = ok(&d, &format!("/api/v1/messages?to=dev&as={C}")).await;
    assert!(bodies(&mine_to_dev).is_empty(), "C is not in dev");
}

// Proves search finds messages by their words, newest first, in pages,
// as everyone's or as one reader sees them.
#[tokio::test]
async fn search_finds_words_in_pages_and_as_a_reader() {
    let d = conversation().await;
    let v = ok(&d, "/api/v1/search?q=migration").await;
    assert_eq!(
        bodies(&v),
        [
            "please review the migration",
            "the schema migration is ready"
        ]
    );
    let v = ok(&d, "/api/v1/search?q=SCHEMA&limit=1").await;
    assert_eq!(bodies(&v), ["deploying the schema"]);
    assert_eq!(v["partial"], true);
    let next = v["next"].as_str().unwrap();
    let v = ok(
        &d,
        &format!("/api/v1/search?q=SCHEMA&limit=1&before={next}"),
    )
    .await;
    assert_eq!(bodies(&v), ["the schema migration is ready"]);
    assert_eq!(v["partial"], false);
    let v = ok(&d, &format!("/api/v1/search?q=review&as={A}")).await;
    assert_eq!(
        bodies(&v),
        ["Reviewed: ship it", "please review the migration"]
    );
    let v = ok(&d, &format!("/api/v1/search?q=review&as={C}")).await;
    assert!(bodies(&v).is_empty());
    let v = ok(&d, "/api/v1/search?q=%22*%20AND(").await;
    assert!(
        bodies(&v).is_empty(),
        "syntax is no error and matches nothing: {v}"
    );
}

// Proves each bad request is a 4xx that says what is wrong.
#[tokio::test]
async fn bad_history_and_search_requests_are_refused_clearly() {
    let d = conversation().await;
    let long = "x".repeat(513);
    let cases = [
        (
            "/api/v1/messages?limit=0".to_string(),
            400,
            "limit 0 is out of range: 1 to 500",
        ),
        ("/api/v1/messages?limit=501".to_string(), 400, "1 to 500"),
        ("/api/v1/messages?limit=ten".to_string(), 400, "limit"),
        (
            "/api/v1/messages?before=".to_string(),
            400,
            "not a message id",
        ),
        (
            "/api/v1/messages?to=nobody-here".to_string(),
            404,
            "nobody-here",
        ),
        (
            "/api/v1/messages?as=nobody-here".to_string(),
            404,
            "nobody-here",
        ),
        ("/api/v1/search".to_string(), 400, "q is required"),
        ("/api/v1/search?q=%20%20".to_string(), 400, "q is required"),
        (
            format!("/api/v1/search?q={long}"),
            400,
            "at most 512 characters",
        ),
        ("/api/v1/search?q=x&limit=9999".to_string(), 400, "1 to 500"),
    ];
    for (path, want, words) in cases {
        let (status, v) = d.get(&path).await;
        assert_eq!(status, want, "{path}: {v}");
        assert!(error_message(&v).contains(words), "{path}: {v}");
    }
    let (status, v) = d
        .get(&format!("/api/v1/search?q={}", "x".repeat(512)))
        .await;
    assert_eq!(status, 200, "512 characters are fine: {v}");
}
