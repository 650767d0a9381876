//! Health, metrics and the dashboard of a daemon in process.

mod support;

use serde_json::json;
use support::*;

// Proves /healthz answers and /metrics exposes sessions, messages, hook
// latency and sweeps in Prometheus text format with live values.
#[tokio::test]
async fn healthz_and_metrics() {
    let d = TestDaemon::start_with(|c| c.sweep_interval = ms(100)).await;
    let (status, _) = d.get("/healthz").await;
    assert_eq!(status, 200);
    let id = "40000000-0000-4000-8000-000000000001";
    d.hook("session-start", &payload(id, "SessionStart")).await;
    let (status, v) = d
        .post_json("/api/v1/messages", &json!({"to": id, "body": "hello"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let lines = [
        "muster_sessions 1",
        "muster_messages_sent_total 1",
        "muster_deliveries_total{state=\"queued\"} 1",
        "muster_hook_duration_seconds_count{event=\"session-start\"} 1",
    ];
    let sweeps = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("muster_sweeps_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    // The background sweeper's first beat runs as the daemon starts, on its
    // own task; wait for its effect rather than for time.
    let settled = wait_for(ms(10_000), || async {
        let text = d.metrics().await;
        sweeps(&text) >= 1 && lines.iter().all(|line| text.lines().any(|l| l == *line))
    })
    .await;
    let text = d.metrics().await;
    assert!(settled, "the metrics never showed it all:\n{text}");
    for line in lines {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(sweeps(&text) >= 1, "the sweeper ran");
    d.stop().await;
}

// Proves the web dashboard is served at / as HTML with a same-origin content policy, and reads the daemon's own API and event stream.
#[tokio::test]
async fn dashboard_is_served_at_the_root() {
    let d = TestDaemon::start().await;
    let resp = d.client.get(format!("{}/", d.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let page = resp.text().await.unwrap();
    for part in [
        "<title>muster</title>",
        "/api/v1/roster",
        "/api/v1/reservations",
        "EventSource(\"/api/v1/events\")",
    ] {
        assert!(page.contains(part), "missing {part}");
    }
    d.stop().await;
}
