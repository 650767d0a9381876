//! The wake stream: the daemon tells this run when one of its sessions is
//! idle with direct mail waiting.
//!
//! `GET {url}/api/v1/wake?run=<run id>&how=<pty|codex>` answers server-sent events:
//! `event: ready` (data `{}`) once the daemon has bound the stream to the
//! run, then `event: wake` with data
//! `{"session": "<id>", "message_ids": ["…"], "prompt": "<one short line>"}`
//! for each wake; `:` comment lines are keepalives. The stream is reopened,
//! with backoff, whenever it drops or the daemon is not up yet; the person
//! never sees any of this (it logs only to `MUSTER_RUN_LOG`).

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::sse::{SseEvent, SseParser};

/// The first wait before reopening the stream, and the longest.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The daemon sends a keepalive every 15 s; this much silence means the
/// connection is dead even if TCP has not noticed.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One `event: wake`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Wake {
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub message_ids: Vec<String>,
    #[serde(default)]
    pub prompt: String,
}

/// What one SSE event means to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Ready,
    Wake(Wake),
    /// An event we do not know (a newer daemon) or a wake we cannot read.
    Ignored,
}

/// How this run wakes its sessions, as the daemon's roster shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// By typing a line into the harness's pty.
    Pty,
    /// Through muster's own `codex app-server` (`thread/queue/add`).
    Codex,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Pty => "pty",
            How::Codex => "codex",
        }
    }
}

/// The stream's path and query for this run.
pub fn wake_path(run_id: &str, how: How) -> String {
    // Run ids are `run-<hex>`, so they need no escaping.
    format!("/api/v1/wake?run={run_id}&how={}", how.as_str())
}

pub fn interpret(event: &SseEvent) -> Note {
    match event.event.as_str() {
        "ready" => Note::Ready,
        "wake" => match serde_json::from_str::<Wake>(&event.data) {
            Ok(wake) => Note::Wake(wake),
            Err(e) => {
                tracing::warn!("unreadable wake event {:?}: {e}", event.data);
                Note::Ignored
            }
        },
        _ => Note::Ignored,
    }
}

/// Doubling waits between attempts, back to the start once a stream was ready.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// The wait before the next attempt; each call doubles the one after, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// Follows the wake stream for the whole run, sending each wake to the typer
/// (or the Codex waker). Returns only when that is gone.
pub async fn follow(client: Client, run_id: String, how: How, wakes: mpsc::UnboundedSender<Wake>) {
    let path = wake_path(&run_id, how);
    let mut backoff = Backoff::default();
    loop {
        match client.open_stream(&path).await {
            Ok(response) => {
                tracing::debug!("wake stream open for {run_id}");
                if read_stream(response, &wakes, &mut backoff).await.is_err() {
                    return;
                }
                tracing::info!("wake stream ended; reopening");
            }
            Err(e) => tracing::info!("wake stream not open: {e}"),
        }
        if wakes.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// Reads one open stream to its end. `Err` means the typer is gone.
async fn read_stream(
    response: reqwest::Response,
    wakes: &mpsc::UnboundedSender<Wake>,
    backoff: &mut Backoff,
) -> Result<(), ()> {
    let mut bytes = response.bytes_stream();
    let mut parser = SseParser::new();
    loop {
        let chunk = match tokio::time::timeout(IDLE_LIMIT, bytes.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                tracing::info!("wake stream broke: {e}");
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(_) => {
                tracing::info!("wake stream silent for {IDLE_LIMIT:?}");
                return Ok(());
            }
        };
        for event in parser.feed(&chunk) {
            match interpret(&event) {
                Note::Ready => {
                    tracing::info!("wake stream ready");
                    backoff.reset();
                }
                Note::Wake(wake) => {
                    tracing::info!(session = %wake.session, messages = ?wake.message_ids, "wake");
                    wakes.send(wake).map_err(|_| ())?;
                }
                Note::Ignored => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            event: name.into(),
            data: data.into(),
        }
    }

    #[test]
    fn the_stream_names_the_run_and_how() {
        // Proves the request path the daemon is asked for: the run, and pty or codex.
        assert_eq!(
            wake_path("run-0123456789abcdef", How::Pty),
            "/api/v1/wake?run=run-0123456789abcdef&how=pty"
        );
        assert_eq!(
            wake_path("run-0123456789abcdef", How::Codex),
            "/api/v1/wake?run=run-0123456789abcdef&how=codex"
        );
    }

    #[test]
    fn events_are_read_as_ready_wake_or_ignored() {
        // Proves the event contract: ready, wake with its fields (missing ones empty), anything else or bad JSON ignored.
        assert_eq!(interpret(&event("ready", "{}")), Note::Ready);
        assert_eq!(
            interpret(&event(
                "wake",
                r#"{"session":"s-1","message_ids":["m1","m2"],"prompt":"read your mail","extra":1}"#
            )),
            Note::Wake(Wake {
                session: "s-1".into(),
                message_ids: vec!["m1".into(), "m2".into()],
                prompt: "read your mail".into(),
            })
        );
        assert_eq!(
            interpret(&event("wake", r#"{"session":"s-1"}"#)),
            Note::Wake(Wake {
                session: "s-1".into(),
                message_ids: vec![],
                prompt: String::new(),
            })
        );
        assert_eq!(interpret(&event("wake", "not json")), Note::Ignored);
        assert_eq!(interpret(&event("message", "{}")), Note::Ignored);
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        // Proves reconnect waits: 250 ms doubling to at most 10 s, back to 250 ms after a ready stream.
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(250));
    }
}
