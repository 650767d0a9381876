//! Small truths, through a real daemon and the real `muster` client: a
//! listing cut by its limit says so (as text and in `--json`), and sessions
//! whose ids differ only in their last character get different animals.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::Value;

fn bodies(inbox: &Value) -> Vec<String> {
    inbox["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {inbox}"))
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

fn last_line(out: &std::process::Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().last().unwrap_or_default().to_string()
}

// Proves `muster inbox` (unread, and --all) says when the limit cut the list,
// with the total when the daemon knows it, and `--json` carries `truncated`
// and `total`; a bad --limit is refused with exit 2.
#[test]
fn inbox_says_when_it_shows_only_part() {
    let d = TestDaemon::start(&[]);
    // A session of operator `tester` makes op:tester an address the daemon knows.
    d.hook(
        "session-start",
        &payload("eeee0000-0000-4000-8000-0000000000a1", "SessionStart"),
    );
    for i in 1..=5 {
        d.muster_json(&["send", "op:tester", &format!("note {i}"), "--json"]);
    }

    // Unread, cut at 2: the oldest two, and the count of all five.
    let out = d.muster(&["inbox", "--limit", "2"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("note 1") && text.contains("note 2") && !text.contains("note 3"),
        "{text}"
    );
    assert_eq!(
        last_line(&out),
        "showing the oldest 2 of 5 new messages for op:tester; the rest come with the next read, or --limit N \
for more (muster inbox --ack marks them dealt with)"
    );
    // What was shown is marked read once the answer is written; three stay unread.
    // What was shown is claimed, then marked read: the next read shows the other three.
    let unread = d.muster_json(&["inbox", "--limit", "5", "--json"]);
    assert_eq!(bodies(&unread), ["note 3", "note 4", "note 5"]);
    assert_eq!(
        (&unread["truncated"], &unread["total"]),
        (&Value::Bool(false), &Value::from(3))
    );

    // History, cut at 2: the newest two, and that older ones exist (no total).
    let cut = d.muster_json(&["inbox", "--all", "--limit", "2", "--json"]);
    assert_eq!(bodies(&cut), ["note 4", "note 5"]);
    assert_eq!(cut["truncated"], true);
    assert!(cut.get("total").is_none(), "{cut}");
    assert_eq!(
        last_line(&d.muster(&["inbox", "--all", "--limit", "2"])),
        "showing the newest 2 messages for op:tester; older ones exist: --limit N for more (at most 1000) \
(muster inbox --ack marks them dealt with)"
    );

    // Everything fits: not truncated, and the exact total.
    let whole = d.muster_json(&["inbox", "--all", "--limit", "5", "--json"]);
    assert_eq!(bodies(&whole).len(), 5);
    assert_eq!(whole["truncated"], false);
    assert_eq!(whole["total"], 5);
    assert_eq!(
        last_line(&d.muster(&["inbox", "--all"])),
        "5 messages for op:tester (muster inbox --ack marks them dealt with)"
    );

    // The raw API answers the same to a client that asks over HTTP.
    let (status, api) = d.get("/api/v1/inbox?as=op:tester&all=true&limit=4");
    assert_eq!(status, 200);
    assert_eq!(
        (api["truncated"].clone(), bodies(&api).len()),
        (Value::Bool(true), 4)
    );

    for bad in ["0", "1001", "x"] {
        let out = d.muster(&["inbox", "--limit", bad]);
        assert_eq!(out.status.code(), Some(2), "--limit {bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--limit"),
            "--limit {bad}"
        );
    }
}

// Proves 26 sessions whose ids differ only in their last character get at
// least 18 distinct animals (and 18 adjectives) on the roster: the old
// FNV-1a nicknames gave all 26 the same animal.
#[test]
fn nicknames_of_near_identical_ids_spread() {
    let d = TestDaemon::start(&[]);
    for c in 'a'..='z' {
        d.hook(
            "session-start",
            &payload(&format!("dash-{c}"), "SessionStart"),
        );
    }
    let roster = d.muster_json(&["roster", "--json"]);
    let names: Vec<String> = roster["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["id"].as_str().unwrap().starts_with("dash-"))
        .map(|s| s["nickname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 26, "{roster}");
    let part = |i: usize| {
        names
            .iter()
            .map(|n| n.split('-').nth(i).unwrap().to_string())
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(part(1) >= 18, "{} animals: {names:?}", part(1));
    assert!(part(0) >= 18, "{} adjectives: {names:?}", part(0));
}
