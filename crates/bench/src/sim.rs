//! A link simulator: thousands of shim links from one process. Each speaks
//! the link protocol as a `muster mcp` shim does (crates/cli/src/mcp/link.rs):
//! a hello for its session, a ping every `HEARTBEAT_MS`, `delivered` for
//! every push, and a re-link on the shim's backoff whenever the link drops,
//! over the daemon's Unix socket when it serves one, else TCP with the local
//! key. It has no MCP side and no process per session: 10,000 shim processes
//! would need about 90 GB, 10,000 simulated links a few hundred MB.
//!
//! The file is self-contained (no `crate::` paths) because the suite's scale
//! test (crates/cli/tests/scale.rs) compiles it too, against a real
//! `muster serve`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use muster_core::api::RegisterRequest;
use muster_core::link::{
    ClientFrame, Op, ServerFrame, HEARTBEAT_MS, LINK_PROTOCOL, READ_BUFFER_BYTES,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A request not answered within this fails (the daemon answers in
/// milliseconds; a broadcast to 10,000 in well under a second).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection attempt (connect, upgrade) not done within this is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the links go: the daemon's `/ws` URL and its Unix socket.
#[derive(Debug, Clone)]
pub struct Target {
    ws_url: String,
    /// The daemon's socket, tried first when it is there (as the shim does).
    unix_socket: Option<PathBuf>,
}

impl Target {
    /// The daemon on `127.0.0.1:port`, over its Unix socket if `unix`.
    pub fn loopback(port: u16, unix: bool) -> Target {
        let dir = muster_daemon::unix_socket::default_dir();
        Target {
            ws_url: format!("ws://127.0.0.1:{port}/ws"),
            unix_socket: unix.then(|| muster_daemon::unix_socket::path_for(&dir, port)),
        }
    }

    /// The upgrade request, with the local key read afresh (a restarted
    /// daemon has a new one), as the shim sends it.
    fn request(&self) -> Result<Request, String> {
        let mut request = self
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("bad URL {}: {e}", self.ws_url))?;
        let http_url = self.ws_url.replacen("ws://", "http://", 1);
        if let Some(key) = muster_daemon::local_key::for_url(&http_url) {
            let value = HeaderValue::from_str(&key).map_err(|e| format!("bad key: {e}"))?;
            request
                .headers_mut()
                .insert(muster_daemon::local_key::HEADER, value);
        }
        Ok(request)
    }
}

type Ws<S> = tokio_tungstenite::WebSocketStream<S>;

/// One connection attempt, over the Unix socket when it is there, else
/// (or when it fails: a killed daemon leaves its socket file, a full accept
/// queue refuses at once) TCP; `fallbacks` counts the second case.
async fn connect(target: &Target, fallbacks: &AtomicU64) -> Result<Connection, String> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    if let Some(path) = target.unix_socket.as_ref().filter(|p| p.exists()) {
        if let Ok(stream) = tokio::net::UnixStream::connect(path).await {
            let request = target.request()?;
            let upgraded =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await;
            if let Ok((ws, _)) = upgraded {
                return Ok(Connection::Unix(ws));
            }
        }
        fallbacks.fetch_add(1, Ordering::AcqRel);
    }
    let request = target.request()?;
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(Connection::Tcp(ws))
}

enum Connection {
    Unix(Ws<tokio::net::UnixStream>),
    Tcp(Ws<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>),
}

/// Delay before re-link attempt `n` (0-based): the shim's schedule, 100 ms
/// doubling to 1 s with ±20% jitter (its `backoff`), the jitter drawn from
/// `seed` so that simulated links spread as real ones do.
pub fn backoff(attempt: u32, seed: &mut u64) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(4)).min(1_000);
    // xorshift64: enough to spread retries, no dependency.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let jitter = (*seed % 400) as i64 - 200; // per mille, -20%..+20%
    let ms = base as i64 + base as i64 * jitter / 1_000;
    Duration::from_millis(ms.max(10) as u64)
}

/// A push one link got, when it read it.
#[derive(Debug)]
pub struct Seen {
    pub link: usize,
    pub body: String,
    pub at: Instant,
}

/// What the fleet can see of one link.
#[derive(Default)]
struct LinkState {
    /// Welcomed and not dropped since.
    up: AtomicBool,
    /// Welcomes so far (1 after the first link, 2 after one re-link…).
    welcomes: AtomicU64,
    /// When the latest welcome was read.
    welcomed_at: Mutex<Option<Instant>>,
    /// A refusal the daemon sent (`fatal`): the link stops for good.
    refused: Mutex<Option<String>>,
}

/// Connection counts over the whole fleet.
#[derive(Default)]
struct Counts {
    attempts: AtomicU64,
    tcp_fallbacks: AtomicU64,
}

/// A request for a link to make, answered with the reply's result text or
/// its error's message.
struct Call {
    op: Op,
    reply: oneshot::Sender<Result<String, String>>,
}

struct Handle {
    id: String,
    state: Arc<LinkState>,
    calls: mpsc::Sender<Call>,
}

/// Simulated links, each a task of its own, and the pushes they got.
pub struct Fleet {
    target: Target,
    links: Vec<Handle>,
    seen_tx: mpsc::UnboundedSender<Seen>,
    seen: mpsc::UnboundedReceiver<Seen>,
    pushes: Arc<AtomicU64>,
    counts: Arc<Counts>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Fleet {
    pub fn new(target: Target) -> Fleet {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        Fleet {
            target,
            links: Vec::new(),
            seen_tx,
            seen,
            pushes: Arc::new(AtomicU64::new(0)),
            counts: Arc::default(),
            stop: watch::channel(false).0,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Starts one link per id (indexes follow on from the links so far).
    pub fn add(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            let index = self.links.len();
            let state = Arc::new(LinkState::default());
            let (calls, calls_rx) = mpsc::channel(16);
            let sim = SimLink {
                index,
                hello: hello_for(&id),
                target: self.target.clone(),
                state: state.clone(),
                calls: calls_rx,
                seen: self.seen_tx.clone(),
                pushes: self.pushes.clone(),
                counts: self.counts.clone(),
                stop: self.stop.subscribe(),
                seed: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
            };
            self.tasks.spawn(sim.run());
            self.links.push(Handle { id, state, calls });
        }
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn id(&self, link: usize) -> &str {
        &self.links[link].id
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|l| l.id.as_str())
    }

    /// Links up now.
    pub fn up(&self) -> usize {
        self.links
            .iter()
            .filter(|l| l.state.up.load(Ordering::Acquire))
            .count()
    }

    /// Links welcomed at least `n` times (`n` = 2: re-linked once).
    pub fn welcomed(&self, n: u64) -> usize {
        self.links
            .iter()
            .filter(|l| l.state.welcomes.load(Ordering::Acquire) >= n)
            .count()
    }

    /// How long after `since` each link was last welcomed (links not
    /// welcomed since are left out), in order.
    pub fn welcomed_since(&self, since: Instant) -> Vec<Duration> {
        let mut times: Vec<Duration> = self
            .links
            .iter()
            .filter_map(|l| {
                *l.state
                    .welcomed_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            })
            .filter_map(|at| at.checked_duration_since(since))
            .collect();
        times.sort();
        times
    }

    /// Connection attempts every link made so far (each re-link is one
    /// at least, and one more for each time the daemon was not there).
    pub fn attempts(&self) -> u64 {
        self.counts.attempts.load(Ordering::Acquire)
    }

    /// Attempts that found the Unix socket there but could not link over
    /// it (its accept queue full, or no daemon behind it) and tried TCP.
    pub fn tcp_fallbacks(&self) -> u64 {
        self.counts.tcp_fallbacks.load(Ordering::Acquire)
    }

    /// The links the daemon refused, with its reason.
    pub fn refused(&self) -> Vec<(String, String)> {
        self.links
            .iter()
            .filter_map(|l| {
                let why = l.state.refused.lock().unwrap_or_else(|p| p.into_inner());
                why.clone().map(|w| (l.id.clone(), w))
            })
            .collect()
    }

    /// Pushes read by every link so far.
    pub fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::Acquire)
    }

    /// Waits until `check` holds (polled every 5 ms); how long it took, or
    /// None at `limit`.
    pub async fn wait(&self, limit: Duration, check: impl Fn(&Fleet) -> bool) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if check(self) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs `op` as link `link`'s session; the reply's result as JSON text.
    pub async fn request(&self, link: usize, op: Op) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.links[link]
            .calls
            .send(Call { op, reply })
            .await
            .map_err(|_| "the link's task ended".to_string())?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the link dropped before the reply".into()),
            Err(_) => Err(format!("no reply within {REQUEST_TIMEOUT:?}")),
        }
    }

    /// The next push any link read, within `limit`.
    pub async fn next_seen(&mut self, limit: Duration) -> Option<Seen> {
        tokio::time::timeout(limit, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// Forgets the pushes read so far (between phases).
    pub fn clear_seen(&mut self) {
        while self.seen.try_recv().is_ok() {}
    }

    /// Closes every link and waits (bounded) for their tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// What a Claude Code shim says of its session.
fn hello_for(id: &str) -> RegisterRequest {
    RegisterRequest {
        id: id.to_string(),
        harness: Some("claude-code".into()),
        host: Some("sim".into()),
        operator: Some("bench".into()),
        pid: Some(std::process::id()),
        cwd: Some("/tmp/muster-sim".into()),
        ..RegisterRequest::default()
    }
}

/// One simulated link's task.
struct SimLink {
    index: usize,
    hello: RegisterRequest,
    target: Target,
    state: Arc<LinkState>,
    calls: mpsc::Receiver<Call>,
    seen: mpsc::UnboundedSender<Seen>,
    pushes: Arc<AtomicU64>,
    counts: Arc<Counts>,
    stop: watch::Receiver<bool>,
    seed: u64,
}

/// How a connection ended.
enum Ended {
    /// The fleet stops.
    Stopped,
    /// The daemon refused the link (it said why).
    Refused(String),
    /// It dropped (or never came up); `true` if it had been welcomed.
    Dropped(bool),
}

impl SimLink {
    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let ended = match self.connect_or_stop().await {
                None => return,
                Some(Err(_)) => Ended::Dropped(false),
                Some(Ok(Connection::Unix(ws))) => self.converse(ws).await,
                Some(Ok(Connection::Tcp(ws))) => self.converse(ws).await,
            };
            self.state.up.store(false, Ordering::Release);
            match ended {
                Ended::Stopped => return,
                Ended::Refused(why) => {
                    *self.state.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    return;
                }
                Ended::Dropped(linked) => {
                    if linked {
                        attempt = 0;
                    }
                    let pause = backoff(attempt, &mut self.seed);
                    attempt = attempt.saturating_add(1);
                    if self.sleep_or_stop(pause).await {
                        return;
                    }
                    // Calls made while down fail at once, as the shim's do.
                    while let Ok(call) = self.calls.try_recv() {
                        let _ = call.reply.send(Err("the link is down".into()));
                    }
                }
            }
        }
    }

    /// A connection, or None once the fleet stops.
    async fn connect_or_stop(&mut self) -> Option<Result<Connection, String>> {
        self.counts.attempts.fetch_add(1, Ordering::AcqRel);
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            connect(&self.target, &self.counts.tcp_fallbacks),
        );
        tokio::select! {
            done = attempt => Some(done.unwrap_or_else(|_| Err("connect timed out".into()))),
            _ = self.stop.wait_for(|s| *s) => None,
        }
    }

    /// Sleeps `pause`; true if the fleet stopped meanwhile.
    async fn sleep_or_stop(&mut self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => false,
            _ = self.stop.wait_for(|s| *s) => true,
        }
    }

    /// Says hello, then answers frames, pings and makes calls until the
    /// connection ends.
    async fn converse<S>(&mut self, ws: Ws<S>) -> Ended
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = ws.split();
        let hello = ClientFrame::Hello {
            protocol: LINK_PROTOCOL,
            session: self.hello.clone(),
            // No MCP client to wait for: it can show pushes from the start.
            can_push: true,
            per_call: false,
        };
        if send(&mut sink, &hello).await.is_err() {
            return Ended::Dropped(false);
        }
        let mut conn = Conversation::default();
        let beat = Duration::from_millis(HEARTBEAT_MS as u64);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        let ended = loop {
            let step = tokio::select! {
                call = self.calls.recv(), if conn.up => match call {
                    None => Err(Ended::Stopped),
                    Some(call) => conn.call(&mut sink, call).await,
                },
                msg = stream.next() => match msg {
                    Some(Ok(WsMessage::Text(text))) => self.frame(&mut conn, &mut sink, &text).await,
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => Err(Ended::Dropped(conn.up)),
                    Some(Ok(_)) => Ok(()),
                },
                _ = heartbeat.tick() => {
                    send(&mut sink, &ClientFrame::Ping { at: 0 }).await.map_err(|()| Ended::Dropped(conn.up))
                }
                // Set once, to true (or the fleet is gone): either way, stop.
                _ = self.stop.changed() => Err(Ended::Stopped),
            };
            if let Err(ended) = step {
                break ended;
            }
        };
        self.state.up.store(false, Ordering::Release);
        for (_, reply) in conn.pending.drain() {
            let _ = reply.send(Err("the link dropped before the reply".into()));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        ended
    }

    /// Handles one frame from the daemon; an error ends the connection.
    async fn frame<Si>(
        &self,
        conn: &mut Conversation,
        sink: &mut Si,
        text: &str,
    ) -> Result<(), Ended>
    where
        Si: futures_util::Sink<WsMessage> + Unpin,
    {
        let at = Instant::now();
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(ServerFrame::Welcome { .. }) => {
                conn.up = true;
                *self
                    .state
                    .welcomed_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(at);
                self.state.welcomes.fetch_add(1, Ordering::AcqRel);
                self.state.up.store(true, Ordering::Release);
            }
            Ok(ServerFrame::Reply { id, result, error }) => {
                if let Some(reply) = conn.pending.remove(&id) {
                    let _ = reply.send(match (result, error) {
                        (_, Some(e)) => Err(format!("{}: {}", e.code, e.message)),
                        (Some(r), None) => Ok(r.as_str().to_string()),
                        (None, None) => Ok("null".into()),
                    });
                }
            }
            Ok(ServerFrame::Push { message }) => {
                let delivered = ClientFrame::Delivered {
                    message_ids: vec![message.id.clone()],
                };
                self.pushes.fetch_add(1, Ordering::AcqRel);
                let _ = self.seen.send(Seen {
                    link: self.index,
                    body: message.body,
                    at,
                });
                send(sink, &delivered)
                    .await
                    .map_err(|()| Ended::Dropped(true))?;
            }
            Ok(ServerFrame::Pong { .. }) => {}
            Ok(ServerFrame::Fatal { error }) if !conn.up => {
                return Err(Ended::Refused(format!("{}: {}", error.code, error.message)))
            }
            Ok(ServerFrame::Fatal { .. }) => {}
            Err(e) => return Err(Ended::Refused(format!("unreadable frame: {e}"))),
        }
        Ok(())
    }
}

/// One connection's requests waiting for replies.
#[derive(Default)]
struct Conversation {
    up: bool,
    pending: HashMap<u64, oneshot::Sender<Result<String, String>>>,
    next_id: u64,
}

impl Conversation {
    async fn call<Si>(&mut self, sink: &mut Si, call: Call) -> Result<(), Ended>
    where
        Si: futures_util::Sink<WsMessage> + Unpin,
    {
        self.next_id += 1;
        let request = ClientFrame::Request {
            id: self.next_id,
            op: call.op,
            session: None,
        };
        if send(sink, &request).await.is_err() {
            let _ = call.reply.send(Err("the link dropped".into()));
            return Err(Ended::Dropped(true));
        }
        self.pending.insert(self.next_id, call.reply);
        Ok(())
    }
}

async fn send<S>(sink: &mut S, frame: &ClientFrame) -> Result<(), ()>
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    let text = serde_json::to_string(frame).map_err(|_| ())?;
    sink.send(WsMessage::Text(text.into()))
        .await
        .map_err(|_| ())
}

/// Raises this process's limit on open files (one link is one descriptor
/// here) to at least `wanted` where it may: the soft limit up to the hard
/// one, and the hard one too for a process allowed to (root). The soft
/// limit it is now.
#[cfg(unix)]
pub fn raise_open_files(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    let set = |cur: libc::rlim_t, max: libc::rlim_t| {
        let raised = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 }
    };
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
    let (wanted, to_u64) = (wanted as libc::rlim_t, |n: libc::rlim_t| n as u64);
    if limit.rlim_max < wanted && set(wanted, wanted) {
        return to_u64(wanted);
    }
    if limit.rlim_cur < limit.rlim_max && set(limit.rlim_max, limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
    }
    to_u64(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_shims_schedule() {
        let mut seed = 7;
        for attempt in 0..20 {
            let ms = backoff(attempt, &mut seed).as_millis();
            let base = [100, 200, 400, 800, 1_000][attempt.min(4) as usize];
            assert!(
                ms >= base * 8 / 10 && ms <= base * 12 / 10,
                "attempt {attempt}: {ms} ms, not within 20% of {base} ms"
            );
        }
    }
}
