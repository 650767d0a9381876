//! Retention: old mail is pruned, recent mail is kept.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

// Proves --retention prunes mail older than the window (here at the
// restart's first prune) while mail inside the window stays.
#[test]
fn mail_older_than_retention_is_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        "60000000-0000-4000-8000-00000000000a",
        "60000000-0000-4000-8000-00000000000b",
    );
    {
        let d = TestDaemon::start_in(tmp.path(), &[]);
        for id in [a, b] {
            assert_eq!(d.post_json("/api/v1/sessions", &json!({"id": id})).0, 200);
        }
        assert_eq!(
            d.post_json(
                "/api/v1/messages",
                &json!({"as": a, "to": b, "body": "old news"})
            )
            .0,
            200
        );
        assert_eq!(
            d.status()["unread_deliveries"],
            1,
            "stored before the restart"
        );
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let d = TestDaemon::start_in(tmp.path(), &["--retention", "1s"]);
    assert_eq!(
        d.post_json(
            "/api/v1/messages",
            &json!({"as": a, "to": b, "body": "fresh"})
        )
        .0,
        200
    );
    let pruned = wait_until(Duration::from_secs(5), || {
        let inbox = d.get(&format!("/api/v1/inbox?as={b}&all=true")).1;
        let bodies: Vec<String> = inbox["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_string())
            .collect();
        bodies == ["fresh"]
    });
    assert!(pruned.is_some(), "only the fresh message is left");
}
