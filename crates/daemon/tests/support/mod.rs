//! Shared support for the daemon's in-process tests: a daemon started with
//! `muster_daemon::start` on a loopback port, its own SQLite file in a
//! temporary directory and a manual clock (so time moves only when a test
//! moves it), and an async HTTP client for its API and hooks.

#![allow(dead_code)]

pub mod fake_shim;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_core::Millis;
use muster_daemon::{Clock, Config, Daemon, Hub, ManualClock};
use serde_json::{json, Value};

/// 2026-12-01T00:00:00Z, where every test's wall clock starts.
pub const START: Millis = 1_796_083_200_000;

/// A daemon running in this test's process.
pub struct TestDaemon {
    pub daemon: Daemon,
    /// The daemon's clock: moves only by `clock.advance(..)`. Its background
    /// sweeper and pruner beat on it too, so they act only when a test
    /// moves time (and once at start).
    pub clock: Arc<ManualClock>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    /// A daemon with the default config on a fresh data directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A daemon on a fresh data directory; `tune` adjusts the config.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), tune).await
    }

    /// A daemon on `dir` (which may hold a store already); `tune` adjusts the config.
    pub async fn start_in(dir: tempfile::TempDir, tune: impl FnOnce(&mut Config)) -> Self {
        let clock = ManualClock::new(START);
        let mut config = Config::new("127.0.0.1:0", dir.path());
        config.clock = Clock::Manual(clock.clone());
        tune(&mut config);
        let key_dir = config.local_key_dir.clone();
        let daemon = muster_daemon::start(config).await.expect("daemon starts");
        let url = format!("http://{}", daemon.addr);
        // A daemon asked to keep a local key is called with it, as muster's
        // own clients call it.
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(dir) = key_dir {
            let path = muster_daemon::local_key::path_for(&dir, daemon.addr.port());
            let key = std::fs::read_to_string(&path).expect("the daemon wrote its key");
            headers.insert(
                muster_daemon::local_key::HEADER,
                key.trim().parse().expect("a key is a header value"),
            );
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("HTTP client");
        TestDaemon {
            daemon,
            clock,
            url,
            client,
            _dir: dir,
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.daemon.hub
    }

    /// Stops the daemon (it must stop cleanly).
    pub async fn stop(self) {
        self.daemon.stop().await.expect("daemon stops cleanly");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        status_json(resp).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .expect("DELETE");
        status_json(resp).await
    }

    /// POSTs raw bytes as `application/json`.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        status_json(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, body.to_string()).await
    }

    /// Posts a hook payload to `/hook/{event}` as the hook client does;
    /// asserts a 200 and returns the JSON answer.
    pub async fn hook(&self, event: &str, payload: &Value) -> Value {
        self.hook_with(event, payload, &[]).await
    }

    /// [`TestDaemon::hook`] with extra request headers.
    pub async fn hook_with(&self, event: &str, payload: &Value, headers: &[(&str, &str)]) -> Value {
        let mut req = self
            .client
            .post(format!("{}/hook/{event}", self.url))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .body(payload.to_string())
            .send()
            .await
            .expect("POST hook");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("hook answer");
        assert_eq!(status, 200, "hook {event}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("hook answered non-JSON ({e}): {text}"))
    }

    pub async fn status(&self) -> Value {
        let (status, v) = self.get("/api/v1/status").await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Waits for an asynchronous effect: checks `check` until it holds or
/// `limit` passes; returns whether it held. For effects the daemon brings
/// about on its own tasks (a sweep a clock move woke, a metric recorded
/// after the answer), never for time to pass: time is the manual clock's.
pub async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `error.message` of an error body.
pub fn error_message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
        .to_string()
}

/// A Claude Code hook payload for `event_name`.
pub fn payload(session_id: &str, event_name: &str) -> Value {
    serde_json::json!({
        "session_id": session_id,
        "transcript_path": format!("/tmp/{session_id}.jsonl"),
        "cwd": "/tmp",
        "hook_event_name": event_name,
        "permission_mode": "default",
        "prompt": "carry on",
        "source": "startup",
    })
}

/// Everything a refused request must leave as it was: the roster, rooms,
/// reservations, status, and the counters of messages, deliveries,
/// sessions, links, event streams and hook calls.
pub async fn snapshot(d: &TestDaemon) -> Value {
    let mut out = json!({});
    for path in [
        "/api/v1/roster?all=true",
        "/api/v1/rooms",
        "/api/v1/reservations",
    ] {
        let (status, v) = d.get(path).await;
        assert_eq!(status, 200, "{path}: {v}");
        out[path] = v;
    }
    let mut status = d.status().await;
    status.as_object_mut().unwrap().remove("started_at");
    out["status"] = status;
    let counters = d
        .metrics()
        .await
        .lines()
        .filter(|l| {
            [
                "muster_messages_sent_total",
                "muster_deliveries_total",
                "muster_sessions",
                "muster_links",
                "muster_event_streams",
                "muster_hook_duration_seconds_count",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect::<Vec<_>>();
    out["metrics"] = json!(counters);
    out
}
