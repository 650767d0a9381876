//! A thousand simulated shim links against a real `muster serve`: the link
//! simulator of `muster-bench scale` (crates/bench/src/sim.rs, compiled here
//! as it is), at a size that runs in seconds. Every link is welcomed; the
//! daemon is killed with SIGKILL and started again on the same port and data
//! directory; every link comes back by itself, and no session is swept, at
//! once or after sweeps that would remove any session whose link had not
//! come back within the grace window; and the roster read in pages is the
//! whole roster, each session once, in order.

#[path = "../../bench/src/sim.rs"]
#[allow(dead_code)] // the bench uses more of it than this test does
mod sim;

mod common;

use std::collections::HashMap;
use std::time::Duration;

use sim::{Fleet, Target};

const LINKS: usize = 1_000;
/// A session whose link is down longer than this is swept: short, so that
/// a link that did not come back would be gone by the time the test looks.
const GRACE: &str = "10s";
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Bounds on waiting, far above what it takes (about a second).
const LINK_LIMIT: Duration = Duration::from_secs(60);

/// The daemon's grace window and sweep interval for this test.
fn serve_flags() -> [&'static str; 4] {
    ["--stale-after", GRACE, "--sweep-interval", "500ms"]
}

/// `GET <path>` with the daemon's local key: the body.
async fn get(url: &str, path: &str) -> String {
    reqwest::Client::new()
        .get(format!("{url}{path}"))
        .header(muster_daemon::local_key::HEADER, common::key_for(url))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The sum of a metric's samples (every label set) in `/metrics`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Each session on the daemon's roster, and whether its link is up.
async fn roster(url: &str) -> HashMap<String, bool> {
    let roster: serde_json::Value =
        serde_json::from_str(&get(url, "/api/v1/roster").await).expect("the roster is JSON");
    roster["sessions"]
        .as_array()
        .expect("a list of sessions")
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["link_up"] == true))
        .collect()
}

/// The roster's ids, unpaged.
async fn whole_ids(url: &str) -> Vec<String> {
    let roster: serde_json::Value =
        serde_json::from_str(&get(url, "/api/v1/roster").await).expect("the roster is JSON");
    assert_eq!(
        (roster["total"].as_u64(), roster["partial"].as_bool()),
        (Some(LINKS as u64), Some(false))
    );
    ids(&roster)
}

/// The roster's ids, read in pages of `limit`: each page says the total
/// and that it is partial.
async fn paged_ids(url: &str, limit: usize) -> Vec<String> {
    let (mut all, mut path, mut pages) = (Vec::new(), format!("/api/v1/roster?limit={limit}"), 0);
    loop {
        let page: serde_json::Value =
            serde_json::from_str(&get(url, &path).await).expect("a page is JSON");
        assert_eq!(
            (page["total"].as_u64(), page["partial"].as_bool()),
            (Some(LINKS as u64), Some(true))
        );
        all.extend(ids(&page));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/roster?limit={limit}&after={next}"),
            None => break,
        }
    }
    assert_eq!(pages, LINKS.div_ceil(limit));
    all
}

fn ids(roster: &serde_json::Value) -> Vec<String> {
    roster["sessions"]
        .as_array()
        .expect("a list of sessions")
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_links_come_back_after_kill_9_none_is_swept_and_the_roster_pages() {
    sim::raise_open_files(LINKS as u64 + 256);
    let dir = tempfile::tempdir().unwrap();
    let mut serve = common::TestDaemon::start_in(dir.path(), &serve_flags());
    let port = serve.port();
    let mut fleet = Fleet::new(Target::loopback(port, true));
    fleet.add((0..LINKS).map(|i| format!("scale-test-{i:04}")));
    let linked = fleet.wait(LINK_LIMIT, |f| f.welcomed(1) == LINKS).await;
    assert!(linked.is_some(), "{} of {LINKS} linked", fleet.welcomed(1));
    assert_eq!(fleet.refused(), Vec::new());
    let before = roster(&serve.url).await;
    assert_eq!(before.len(), LINKS);
    assert_eq!(before.values().filter(|up| **up).count(), LINKS);

    serve.kill9();
    let serve =
        common::TestDaemon::start_on(dir.path(), &format!("127.0.0.1:{port}"), &serve_flags());
    let back = fleet
        .wait(LINK_LIMIT, |f| f.welcomed(2) == LINKS && f.up() == LINKS)
        .await;
    assert!(
        back.is_some(),
        "{} of {LINKS} re-linked, {} up",
        fleet.welcomed(2),
        fleet.up()
    );
    // Sweeps run meanwhile: a session whose link was not back within the
    // grace window would be gone (and a re-link would register it anew, so
    // the sweeper's own count says whether it removed any).
    tokio::time::sleep(4 * SWEEP_EVERY).await;
    let metrics = get(&serve.url, "/metrics").await;
    assert!(metric(&metrics, "muster_sweeps_total") >= 2, "{metrics}");
    assert_eq!(metric(&metrics, "muster_swept_sessions_total"), 0);
    let after = roster(&serve.url).await;
    let missing: Vec<&str> = fleet.ids().filter(|id| !after.contains_key(*id)).collect();
    assert_eq!(missing, Vec::<&str>::new(), "swept across the restart");
    let down: Vec<&str> = fleet
        .ids()
        .filter(|id| after.get(*id) != Some(&true))
        .collect();
    assert_eq!(down, Vec::<&str>::new(), "links down after the restart");
    assert_eq!(fleet.welcomed(3), 0, "a link re-linked twice");
    assert_eq!(
        paged_ids(&serve.url, 300).await,
        whole_ids(&serve.url).await
    );
    assert_eq!(fleet.refused(), Vec::new());
    fleet.stop().await;
}
