//! Bounds on what one client can make the daemon do: rate limits per
//! sender, per session and per connection (429 with a retry time), the
//! connection cap and header timeout (half-open connections cannot stop
//! others), the link's bounded queue (a shim that stops reading is dropped
//! and loses nothing), and the link's frame size limit.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use muster_core::api::RegisterRequest;
use muster_core::limits::Rate;
use muster_core::link::{ClientFrame, ServerFrame, LINK_PROTOCOL};
use serde_json::{json, Value};
use support::fake_shim::FakeShim;
use support::{payload, wait_for, TestDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The value of `name` in the `/metrics` text (a line `name value`).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// POSTs JSON and returns the status, the Retry-After header and the body.
async fn post(
    client: &reqwest::Client,
    d: &TestDaemon,
    path: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let resp = client
        .post(format!("{}{path}", d.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_string());
    let text = resp.text().await.expect("body");
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn join(d: &TestDaemon, id: &str) {
    d.hook("session-start", &payload(id, "SessionStart")).await;
}

#[tokio::test]
async fn a_sender_over_its_rate_gets_429_with_the_exact_retry_time() {
    // Proves the send limit: a burst of 3, then one per 500 ms (2/s); the
    // fourth send is refused with Retry-After and retry_after_ms, stores
    // nothing, and another sender is not held back.
    let d = TestDaemon::start_with(|c| c.send_rate = Rate::new(2, 3)).await;
    for id in ["rate-alpha", "rate-beta"] {
        join(&d, id).await;
    }
    let send = |from: &str, n: u32| json!({"as": from, "to": "rate-beta", "body": format!("m{n}")});
    for n in 0..3 {
        let (status, _, v) = post(&d.client, &d, "/api/v1/messages", &send("rate-alpha", n)).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, retry, v) = post(&d.client, &d, "/api/v1/messages", &send("rate-alpha", 3)).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(v["error"]["retry_after_ms"], 500);
    assert_eq!(
        v["error"]["message"],
        "rate-alpha is sending too fast (limit 2/s, bursts of 3); retry in 500 ms"
    );
    assert_eq!(
        d.status().await["unread_deliveries"],
        3,
        "the refused send stored nothing"
    );
    // Room mail counts against the same budget.
    let (status, _, _) = post(
        &d.client,
        &d,
        "/api/v1/broadcast",
        &json!({"as": "rate-alpha", "room": "lobby", "body": "hi"}),
    )
    .await;
    assert_eq!(status, 429);
    // Another sender has a budget of its own.
    let (status, _, _) = post(
        &d.client,
        &d,
        "/api/v1/messages",
        &json!({"as": "rate-beta", "to": "rate-alpha", "body": "x"}),
    )
    .await;
    assert_eq!(status, 200);
    // 300 ms on: 200 ms to go; at 500 ms, one more.
    d.clock.advance(Duration::from_millis(300));
    let (status, _, v) = post(&d.client, &d, "/api/v1/messages", &send("rate-alpha", 4)).await;
    assert_eq!((status, &v["error"]["retry_after_ms"]), (429, &json!(200)));
    d.clock.advance(Duration::from_millis(200));
    let (status, _, v) = post(&d.client, &d, "/api/v1/messages", &send("rate-alpha", 5)).await;
    assert_eq!(status, 200, "{v}");
    assert!(d
        .metrics()
        .await
        .contains("muster_rate_limited_total{limit=\"send\"} 3"));
    d.stop().await;
}

#[tokio::test]
async fn a_session_over_its_hook_rate_gets_429_and_others_are_answered() {
    // Proves the hook limit is per session: a burst of 2 at 1/s, the third
    // call 429 with a retry of exactly 1 s, answered only after the hold;
    // another session's hooks pass.
    let d = TestDaemon::start_with(|c| c.hook_rate = Rate::new(1, 2)).await;
    let hook = |id: &str| payload(id, "UserPromptSubmit");
    let client = &d.client;
    for _ in 0..2 {
        let (status, _, v) = post(client, &d, "/hook/prompt-submit", &hook("hooky-one")).await;
        assert_eq!(status, 200, "{v}");
    }
    let asked = Instant::now();
    let (status, retry, v) = post(client, &d, "/hook/prompt-submit", &hook("hooky-one")).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{v}");
    // The refusal is held (a loop retrying at once is slowed down).
    assert!(asked.elapsed() >= Duration::from_millis(muster_core::limits::RATE_LIMITED_HOLD_MS));
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(v["error"]["retry_after_ms"], 1000);
    let (status, _, _) = post(client, &d, "/hook/prompt-submit", &hook("hooky-two")).await;
    assert_eq!(status, 200);
    d.clock.advance(Duration::from_secs(1));
    let (status, _, _) = post(client, &d, "/hook/prompt-submit", &hook("hooky-one")).await;
    assert_eq!(status, 200);
    d.stop().await;
}

#[tokio::test]
async fn one_connection_has_one_budget_whatever_sessions_it_names() {
    // Proves the per-connection limit: made-up session ids on one kept-alive
    // connection share its budget (3, then 1/s); a new connection has its own.
    let d = TestDaemon::start_with(|c| c.connection_rate = Rate::new(1, 3)).await;
    let one = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for n in 0..3 {
        let (status, _, v) = post(
            &one,
            &d,
            "/hook/prompt-submit",
            &payload(&format!("made-up-{n}"), "UserPromptSubmit"),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, retry, v) = post(
        &one,
        &d,
        "/hook/prompt-submit",
        &payload("made-up-9", "UserPromptSubmit"),
    )
    .await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{v}");
    assert_eq!(
        v["error"]["message"],
        "this connection is sending too fast (limit 1 sends and hook calls/s, bursts of 3); retry in 1000 ms"
    );
    // Reads are not spent from it.
    let resp = one
        .get(format!("{}/api/v1/roster", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let other = reqwest::Client::new();
    let (status, _, _) = post(
        &other,
        &d,
        "/hook/prompt-submit",
        &payload("made-up-10", "UserPromptSubmit"),
    )
    .await;
    assert_eq!(status, 200);
    d.stop().await;
}

/// A connection that sends half a request's headers and then nothing.
async fn half_open(d: &TestDaemon) -> TcpStream {
    let mut tcp = TcpStream::connect(d.daemon.addr).await.expect("connect");
    tcp.write_all(b"POST /hook/prompt-submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .await
        .expect("half a request");
    tcp
}

#[tokio::test]
async fn half_open_connections_do_not_stop_a_normal_request_and_are_closed() {
    // Proves slowloris gets nowhere: 200 connections holding half a header
    // each; a normal request beside them is answered at once; each of them
    // is closed by the daemon once the header timeout passes.
    let d = TestDaemon::start_with(|c| c.header_timeout = Duration::from_millis(400)).await;
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(half_open(&d).await);
    }
    let fresh = reqwest::Client::new();
    let started = Instant::now();
    let resp = fresh
        .get(format!("{}/api/v1/status", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    // Every half-open connection is closed by the daemon (EOF or reset).
    let limit = Instant::now() + Duration::from_secs(5);
    for tcp in &mut held {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout_at(limit.into(), tcp.read(&mut buf)).await;
        assert!(read.is_ok(), "still open after the header timeout");
    }
    assert!(
        wait_for(Duration::from_secs(5), || async {
            metric(&d.metrics().await, "muster_connections_open") <= 2
        })
        .await,
        "the half-open connections are gone"
    );
    d.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_timeout() {
    // Proves the idle timeout: a connection that finished its request and
    // sends nothing more is closed once header_timeout passes.
    let d = TestDaemon::start_with(|c| c.header_timeout = Duration::from_millis(300)).await;
    let mut tcp = TcpStream::connect(d.daemon.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    d.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_503_and_a_link_holds_its_place() {
    // Proves the cap: with 4 allowed, a linked shim and 3 half-open
    // connections fill it; a fifth gets 503 too_many_connections at once;
    // once the half-open ones time out, requests are answered again.
    let d = TestDaemon::start_with(|c| {
        c.max_connections = 4;
        c.header_timeout = Duration::from_millis(500);
    })
    .await;
    let mut shim = FakeShim::link(&d, "capped-shim").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(half_open(&d).await);
    }
    assert!(
        wait_for(Duration::from_secs(2), || async {
            d.hub().metrics.connections_open.get() == 4
        })
        .await
    );
    let mut tcp = TcpStream::connect(d.daemon.addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_string(&mut answer))
        .await
        .expect("answered at once")
        .ok();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    assert!(
        answer.contains("\"code\":\"too_many_connections\""),
        "{answer}"
    );
    assert!(
        answer.contains("the daemon has 4 connections open, its limit"),
        "{answer}"
    );
    // The half-open ones time out; the link stays (it holds its place).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || async {
            d.hub().metrics.connections_open.get() == 1
        })
        .await,
        "the half-open connections timed out"
    );
    let resp = fresh
        .get(format!("{}/healthz", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        shim.request(muster_core::link::Op::Whoami)
            .await
            .map(|_| ()),
        Ok(()),
        "the link still works"
    );
    assert!(d
        .metrics()
        .await
        .contains("muster_connections_refused_total 1"));
    drop(held);
    d.stop().await;
}

/// A link that says hello for `id` and then never reads a frame; its
/// socket's receive buffer is small, so the daemon's writes back up soon.
async fn link_that_never_reads(
    d: &TestDaemon,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(d.daemon.addr).await.unwrap();
    let url = format!("ws://{}/ws", d.daemon.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("the link connects");
    let hello = ClientFrame::Hello {
        protocol: LINK_PROTOCOL,
        session: RegisterRequest {
            id: id.to_string(),
            harness: Some("claude".into()),
            cwd: Some("/tmp".into()),
            ..RegisterRequest::default()
        },
        can_push: true,
        per_call: false,
    };
    ws.send(WsMessage::text(serde_json::to_string(&hello).unwrap()))
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn a_link_that_stops_reading_is_dropped_and_after_relinking_gets_every_message_once() {
    // Proves the bounded queue per link: 1,200 messages of 5,800 characters
    // wait for a session; a link that never reads takes none of them, the
    // daemon's queue for it never holds more than its bound (8 frames), and
    // the link is dropped once a frame goes unread for link_stall. Re-linked
    // with a shim that reads, every message arrives exactly once.
    const MESSAGES: usize = 1_200;
    const QUEUE: usize = 8;
    let d = TestDaemon::start_with(|c| {
        c.send_rate = Rate::UNLIMITED;
        c.link_queue = QUEUE;
        c.link_stall = Duration::from_millis(300);
    })
    .await;
    join(&d, "stuck-shim").await;
    // 7 MB in all: more than the socket's buffers take (4 MB at most here).
    let big = "x".repeat(5_800);
    let mut sent = HashSet::new();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(16) {
        let sends = chunk.iter().map(|n| {
            let body = json!({"to": "stuck-shim", "body": format!("{n} {big}")});
            let d = &d;
            async move { d.post_json("/api/v1/messages", &body).await }
        });
        for (status, v) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["state"], "queued");
            sent.insert(v["message"]["id"].as_str().unwrap().to_string());
        }
    }
    let stuck = link_that_never_reads(&d, "stuck-shim").await;
    // (It is read only after the daemon dropped it, to see that it ended.)
    let mut most_queued = 0;
    let mut dropped = false;
    let limit = Instant::now() + Duration::from_secs(10);
    while !dropped && Instant::now() < limit {
        let text = d.metrics().await;
        most_queued = most_queued.max(metric(&text, "muster_link_queued_frames_max"));
        dropped = text.contains("muster_links_dropped_total{reason=\"stalled\"} 1");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        dropped,
        "the link that never reads was not dropped (most queued {most_queued}):\n{}",
        d.metrics().await
    );
    assert!(most_queued <= QUEUE as u64, "{most_queued} frames queued");
    // Its connection is closed: what it finally reads ends, within a bound.
    let mut stuck = stuck;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = stuck.next().await {
            if frame.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stuck link's connection was left open");
    assert_eq!(
        d.status().await["unread_deliveries"],
        MESSAGES,
        "nothing was lost"
    );
    let mut shim = FakeShim::link(&d, "stuck-shim").await;
    let mut got = HashSet::new();
    for _ in 0..MESSAGES {
        let m = shim.next_push().await;
        assert!(sent.contains(&m.id), "an unknown message {}", m.id);
        assert!(got.insert(m.id.clone()), "{} pushed twice", m.id);
    }
    assert_eq!(got, sent);
    assert!(
        wait_for(Duration::from_secs(5), || async {
            d.status().await["unread_deliveries"] == 0
        })
        .await,
        "every push confirmed"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_ends_that_link_only() {
    // Proves the frame limit: a link sending 100 KB past a 64 KiB limit is
    // told frame_too_large and closed; another link is untouched and still
    // gets its pushes.
    let d = TestDaemon::start_with(|c| c.max_link_frame_bytes = 64 * 1024).await;
    let mut good = FakeShim::link(&d, "good-shim").await;
    let url = format!("ws://{}/ws", d.daemon.addr);
    let (mut bad, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let hello = ClientFrame::Hello {
        protocol: LINK_PROTOCOL,
        session: RegisterRequest {
            id: "big-shim".into(),
            ..RegisterRequest::default()
        },
        can_push: true,
        per_call: false,
    };
    bad.send(WsMessage::text(serde_json::to_string(&hello).unwrap()))
        .await
        .unwrap();
    let huge = format!(
        "{{\"type\":\"ping\",\"at\":0,\"pad\":\"{}\"}}",
        "y".repeat(100_000)
    );
    bad.send(WsMessage::text(huge)).await.unwrap();
    let mut fatal = None;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = bad.next().await {
            match frame {
                Ok(WsMessage::Text(t)) => {
                    if let Ok(ServerFrame::Fatal { error }) = serde_json::from_str(t.as_str()) {
                        fatal = Some(error.code);
                    }
                }
                Ok(WsMessage::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized link was not closed");
    assert_eq!(fatal.as_deref(), Some("frame_too_large"));
    let (status, v) = d
        .post_json(
            "/api/v1/messages",
            &json!({"to": "good-shim", "body": "still here"}),
        )
        .await;
    assert_eq!((status, &v["state"]), (200, &json!("pushed")), "{v}");
    assert_eq!(good.next_push().await.body, "still here");
    assert!(d
        .metrics()
        .await
        .contains("muster_links_dropped_total{reason=\"oversized-frame\"} 1"));
    d.stop().await;
}

#[tokio::test]
async fn the_event_stream_and_a_link_outlive_the_header_timeout() {
    // Proves the header/idle timeout closes only connections waiting for a
    // request: an event stream being answered and a WebSocket link stay up
    // well past it, and still carry what happens.
    let d = TestDaemon::start_with(|c| c.header_timeout = Duration::from_millis(200)).await;
    let mut shim = FakeShim::link(&d, "outlives-shim").await;
    let resp = d
        .client
        .get(format!("{}/api/v1/events", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = resp.bytes_stream();
    // Five header timeouts pass.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (status, v) = d
        .post_json(
            "/api/v1/messages",
            &json!({"to": "outlives-shim", "body": "later"}),
        )
        .await;
    assert_eq!((status, &v["state"]), (200, &json!("pushed")), "{v}");
    assert_eq!(shim.next_push().await.body, "later");
    let mut seen = String::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = events.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: message.sent") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "the event stream ended or went quiet: {seen}");
    d.stop().await;
}
