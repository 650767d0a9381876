//! `muster-bench storm`: a restart storm. N real `muster mcp` shims are
//! linked to a `muster serve` child; the daemon is killed with SIGKILL and
//! started again on the same port and data directory; every shim must
//! re-link by itself within [`TARGET_RELINK`] of the new daemon's start,
//! and no session may be swept, then or after a sweep interval more.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::daemon::ServeChild;
use crate::delivery::wait_for_links;
use crate::http::{snippet, Conn};
use crate::report::{r1, Row, Section, Verdict};
use crate::shim::Shim;
use crate::Opts;

/// Every shim back within this of the restarted daemon's start.
pub const TARGET_RELINK: Duration = Duration::from_secs(2);
/// How long the bench waits for the re-links at most.
const RELINK_LIMIT: Duration = Duration::from_secs(30);
/// Waited after the re-links, so a sweep runs (the daemon sweeps every 3 s).
const AFTER_SWEEP: Duration = Duration::from_secs(4);

/// The sessions on the roster, and which of them have a link up now.
async fn roster(addr: SocketAddr) -> anyhow::Result<(HashSet<String>, HashSet<String>)> {
    let mut conn = Conn::connect(addr).await?;
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), conn.get("/api/v1/roster"))
        .await
        .context("GET /api/v1/roster took over 10 s")??;
    if status != StatusCode::OK {
        bail!("GET /api/v1/roster answered {status}: {}", snippet(&body));
    }
    let roster: Value = serde_json::from_slice(&body).context("the roster is not JSON")?;
    let sessions = roster["sessions"].as_array().cloned().unwrap_or_default();
    let id = |s: &Value| s["id"].as_str().map(str::to_string);
    let present = sessions.iter().filter_map(id).collect();
    let linked = sessions
        .iter()
        .filter(|s| s["link_up"].as_bool() == Some(true))
        .filter_map(id)
        .collect();
    Ok((present, linked))
}

/// Polls until every one of `ids` has a link up; how long that took from `since`.
async fn relinked(
    addr: SocketAddr,
    ids: &HashSet<String>,
    since: Instant,
) -> anyhow::Result<Duration> {
    loop {
        // The new daemon may still be loading: a refused connection is a retry.
        if let Ok((_, linked)) = roster(addr).await {
            if ids.is_subset(&linked) {
                return Ok(since.elapsed());
            }
            if since.elapsed() > RELINK_LIMIT {
                bail!(
                    "{} of {} shims not re-linked within {RELINK_LIMIT:?}",
                    ids.difference(&linked).count(),
                    ids.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn run(opts: &Opts) -> anyhow::Result<Section> {
    let n = opts.storm_shims;
    let serve = ServeChild::start(&opts.muster_binary).await?;
    let addr = serve.addr;
    let url = format!("http://{addr}");
    eprintln!("storm: daemon on {addr}; starting {n} `muster mcp` shims…");
    let ids: Vec<String> = (0..n).map(|i| format!("bench-storm-{i:05}")).collect();
    let mut shims = Vec::with_capacity(n);
    for id in &ids {
        shims.push(Shim::spawn(
            &opts.muster_binary,
            &url,
            id,
            serve.dir.path(),
        )?);
    }
    for shim in shims.iter_mut() {
        shim.initialize().await?;
    }
    wait_for_links(addr, &ids).await?;
    let all: HashSet<String> = ids.iter().cloned().collect();

    eprintln!("storm: {n} shims linked; kill -9 of the daemon, then a restart on {addr}…");
    let dir = serve.kill9().await;
    let restarted_at = Instant::now();
    let serve = ServeChild::start_in(&opts.muster_binary, dir, &addr.to_string()).await?;
    let listening = restarted_at.elapsed();
    let relink = relinked(addr, &all, restarted_at).await;
    let (present_now, _) = roster(addr).await?;
    tokio::time::sleep(AFTER_SWEEP).await;
    let (present_later, linked_later) = roster(addr).await?;
    for shim in shims {
        shim.stop().await;
    }
    serve.stop().await?;

    let relink = relink?;
    let swept = all.difference(&present_now).count() + all.difference(&present_later).count();
    let unlinked_later = all.difference(&linked_later).count();
    let rows = vec![
        Row::info("storm: shims", n.to_string()),
        Row::info(
            "storm: restarted daemon listening after",
            format!("{} ms", listening.as_millis()),
        ),
        Row::new(
            "storm: every shim re-linked after the restart",
            format!("{} ms", relink.as_millis()),
            format!("≤ {} s", TARGET_RELINK.as_secs()),
            if relink <= TARGET_RELINK {
                Verdict::Pass
            } else {
                Verdict::Miss
            },
        ),
        Row::new(
            "storm: sessions swept (at re-link, and a sweep later)",
            swept.to_string(),
            "0",
            Verdict::check(swept == 0),
        ),
        Row::new(
            "storm: links down a sweep later",
            unlinked_later.to_string(),
            "0",
            Verdict::check(unlinked_later == 0),
        ),
    ];
    let mut errors = Vec::new();
    if swept > 0 {
        errors.push(format!("{swept} sessions were swept across the restart"));
    }
    if unlinked_later > 0 {
        errors.push(format!(
            "{unlinked_later} links were down a sweep after the restart"
        ));
    }
    let json = json!({
        "shims": n,
        "listening_ms": r1(listening.as_secs_f64() * 1e3),
        "relinked_ms": r1(relink.as_secs_f64() * 1e3),
        "swept": swept,
        "unlinked_later": unlinked_later,
    });
    Ok(Section {
        name: "storm",
        json,
        rows,
        errors,
    })
}
