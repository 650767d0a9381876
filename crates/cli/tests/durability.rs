//! An acknowledged send survives `kill -9` of the daemon.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

// Proves durability: 1,000 sends acknowledged by the daemon (from 8 clients
// at once, so group commit batches them), then `kill -9` straight away, then
// a restart on the same data directory: all 1,000 are there, none twice.
#[test]
fn kill_9_after_1000_acknowledged_sends_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = TestDaemon::start_in(tmp.path(), &[]);
    let (a, b) = (
        "f0000000-0000-4000-8000-0000000000a1",
        "f0000000-0000-4000-8000-0000000000b2",
    );
    for id in [a, b] {
        let (status, _) = d.post_json("/api/v1/sessions", &json!({"id": id, "harness": "test"}));
        assert_eq!(status, 200);
    }
    let acked = send_concurrently(&d.url, a, b, 8, 125);
    assert_eq!(acked.len(), 1_000);
    d.kill9();

    let d = TestDaemon::start_in(tmp.path(), &[]);
    let got = d.inbox_ids(b, 1000);
    assert_eq!(got.len(), 1_000, "every acknowledged send is back");
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), 1_000, "none twice");
    assert_eq!(
        unique,
        acked.iter().collect::<HashSet<_>>(),
        "exactly the acknowledged ones"
    );
    // Sorted by id is sorted by send order within each client.
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
}
