//! The roster in pages (`GET /api/v1/roster?limit=N&after=<next>`): each
//! page says how many sessions the whole roster holds and whether it is
//! partial, the pages together hold every session once in the unpaged
//! order, and a bad limit or place is refused.

mod support;

use serde_json::{json, Value};
use support::*;

const SESSIONS: usize = 25;

fn ids(roster: &Value) -> Vec<String> {
    roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pages_hold_every_session_once_in_roster_order() {
    let d = TestDaemon::start().await;
    for i in 0..SESSIONS {
        let (status, v) = d
            .post_json("/api/v1/sessions", &json!({"id": format!("page-{i:02}")}))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, whole) = d.get("/api/v1/roster").await;
    assert_eq!(status, 200);
    assert_eq!(
        (whole["total"].as_u64(), whole["partial"].as_bool()),
        (Some(25), Some(false))
    );
    assert!(whole.get("next").is_none(), "{whole}");

    let mut walked = Vec::new();
    let mut path = "/api/v1/roster?limit=10".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = d.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 25, "{page}");
        assert_eq!(page["partial"], true, "{page}");
        pages += 1;
        walked.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/roster?limit=10&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        walked,
        ids(&whole),
        "the pages, in order, are the whole roster"
    );

    let (status, all) = d.get("/api/v1/roster?limit=25").await;
    assert_eq!((status, all["partial"].as_bool()), (200, Some(false)));
    assert!(
        all.get("next").is_none(),
        "nothing follows a page that holds all"
    );
}

#[tokio::test]
async fn a_bad_limit_or_place_is_refused() {
    let d = TestDaemon::start().await;
    for (query, says) in [
        ("limit=0", "at least 1"),
        ("limit=-1", "limit"),
        ("after=nowhere", "not a roster place"),
        ("after=12", "not a roster place"),
    ] {
        let (status, v) = d.get(&format!("/api/v1/roster?{query}")).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(error_message(&v).contains(says), "{query}: {v}");
    }
}
