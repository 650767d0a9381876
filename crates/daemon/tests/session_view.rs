//! `GET /api/v1/sessions/{id}`: one session with its latest activity
//! changes (the dashboard's page of a session), on a daemon in process.

mod support;

use serde_json::{json, Value};
use support::*;

fn changes(v: &Value) -> Vec<(i64, String, Option<String>)> {
    v["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["at"].as_i64().unwrap(),
                c["activity"].as_str().unwrap().to_string(),
                c["tool"].as_str().map(str::to_string),
            )
        })
        .collect()
}

// Proves a session's page answers by id, nickname or prefix with its
// record and its activity over time as its hooks changed it (oldest
// first, each at the time it was heard, a repeat noted once, at most 32
// kept), and that a person or an unknown id is a 404.
#[tokio::test]
async fn a_session_answers_with_its_activity_over_time() {
    let d = TestDaemon::start().await;
    let id = "view-0001";
    d.hook("session-start", &payload(id, "SessionStart")).await;
    d.clock.advance(ms(1_000));
    let mut tool = payload(id, "PreToolUse");
    tool["tool_name"] = json!("Bash");
    d.hook("pre-tool-use", &tool).await;
    d.clock.advance(ms(1_000));
    // The same tool again changes nothing worth noting.
    d.hook("pre-tool-use", &tool).await;
    d.clock.advance(ms(1_000));
    d.hook("stop", &payload(id, "Stop")).await;

    let (status, v) = d.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["session"]["id"], json!(id));
    assert_eq!(v["session"]["activity"], json!("idle"));
    assert_eq!(
        changes(&v),
        [
            (START, "idle".to_string(), None),
            (START + 1_000, "busy".to_string(), Some("Bash".to_string())),
            (START + 3_000, "idle".to_string(), Some("Bash".to_string())),
        ]
    );
    let nickname = v["session"]["nickname"].as_str().unwrap().to_string();
    for by in [nickname.as_str(), "view-00"] {
        let (status, w) = d.get(&format!("/api/v1/sessions/{by}")).await;
        assert_eq!(status, 200, "{by}: {w}");
        assert_eq!(w["session"]["id"], json!(id), "{by}");
    }

    // Bounded: the newest 32.
    for i in 0..40 {
        d.clock.advance(ms(10));
        tool["tool_name"] = json!(format!("Tool{i}"));
        d.hook("pre-tool-use", &tool).await;
    }
    let (_, v) = d.get(&format!("/api/v1/sessions/{id}")).await;
    let kept = changes(&v);
    assert_eq!(kept.len(), 32);
    assert_eq!(kept.last().unwrap().2.as_deref(), Some("Tool39"));
    assert_eq!(kept[0].2.as_deref(), Some("Tool8"));

    for missing in ["nobody-here", "op:operator"] {
        let (status, v) = d.get(&format!("/api/v1/sessions/{missing}")).await;
        assert_eq!(status, 404, "{missing}: {v}");
        assert_eq!(v["error"]["code"], json!("unknown_session"), "{missing}");
    }
    d.stop().await;
}
