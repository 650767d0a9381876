//! The shim's end of the link to the daemon (`/ws`): connects, says hello
//! for its session, answers requests, hands pushes to the MCP side, pings,
//! and re-links whenever the link drops. A team may give several daemon
//! addresses: each round of linking tries them in order, from the first;
//! the first round after a working link starts at once (a dead daemon's
//! sessions have only the grace window to come back), later rounds wait
//! with exponential backoff and jitter. Which pushes the agent was given
//! outlives a link (see `Deliveries`): a confirmation the daemon never got
//! goes on the next link, and a push the agent already has is never shown
//! twice.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use muster_core::api::{ErrorDetail, RegisterRequest};
use muster_core::link::{
    ClientFrame, JsonText, Op, ServerFrame, HEARTBEAT_MS, LINK_PROTOCOL, READ_BUFFER_BYTES,
};
use muster_core::Message;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Reply = Result<JsonText, ErrorDetail>;

/// What the MCP side asks of the link.
enum Command {
    /// An operation, for the session it names (per-call links only).
    Request(Op, Option<String>, oneshot::Sender<Reply>),
    Delivered(Vec<String>),
    /// The MCP client finished its handshake: pushes can be written now.
    Ready,
}

/// A cheap handle to the link task.
#[derive(Clone)]
pub struct Link {
    commands: mpsc::Sender<Command>,
}

fn error(code: &str, message: impl Into<String>) -> ErrorDetail {
    ErrorDetail {
        code: code.into(),
        message: message.into(),
        matches: Vec::new(),
    }
}

impl Link {
    /// Starts the link task, to the daemon at `ws_urls` (one address, or
    /// a team's several, tried in order). Pushes arrive on the returned
    /// receiver. `token` goes with every connection as `Authorization: Bearer`.
    /// With `autostart`, a first round that links nowhere starts the daemon
    /// (see `autostart`) and tries again at once.
    pub fn start(
        ws_urls: Vec<String>,
        token: Option<String>,
        hello: Hello,
        autostart: Option<crate::autostart::Plan>,
    ) -> (Link, mpsc::Receiver<Message>) {
        let (commands, rx) = mpsc::channel(256);
        let (pushes_tx, pushes) = mpsc::channel(1_024);
        let daemons = ws_urls
            .into_iter()
            .map(|ws_url| Daemon::new(ws_url, token.clone()))
            .collect();
        tokio::spawn(run(daemons, hello, rx, pushes_tx, autostart));
        (Link { commands }, pushes)
    }

    /// Runs an operation on the daemon. Fails at once, with a reason, if the
    /// link is down: a request is never silently retried, since a send
    /// might then happen twice.
    pub async fn request(&self, op: Op, session: Option<String>) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request(op, session, tx))
            .await
            .map_err(|_| error("link_closed", "the shim is shutting down"))?;
        rx.await.map_err(|_| {
            error(
                "link_lost",
                "the connection to the muster daemon dropped; try again",
            )
        })?
    }

    /// Tells the daemon the shim can write pushes from now on (and on every
    /// later re-link).
    pub async fn ready(&self) {
        let _ = self.commands.send(Command::Ready).await;
    }

    /// Tells the daemon these pushes were written to the harness.
    pub async fn delivered(&self, ids: Vec<String>) {
        let _ = self.commands.send(Command::Delivered(ids)).await;
    }
}

/// Delay before re-link attempt `n` (0-based): 100 ms doubling to 1 s, with
/// ±20% jitter so a fleet of shims does not reconnect in lockstep. Capped
/// low because a daemon restart must see every shim back within 2 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(4)).min(1_000);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = (nanos % 400) as i64 - 200; // -200..200 per mille of 20%
    let ms = base as i64 + base as i64 * jitter / 1_000;
    Duration::from_millis(ms.max(10) as u64)
}

/// What the shim says when it links.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The session (for a per-call link: the fields every named session gets).
    pub session: RegisterRequest,
    /// Whether pushes can be written now (false until the MCP handshake).
    pub can_push: bool,
    /// Whether this shim pushes at all once its client is ready.
    pub wants_push: bool,
    pub per_call: bool,
}

/// Where the link goes, the token it shows there, and how it gets there.
struct Daemon {
    ws_url: String,
    token: Option<String>,
    transport: Transport,
    /// The daemon's Unix socket, when it is on this machine (a candidate:
    /// see `unix_socket_for`).
    socket: Option<PathBuf>,
}

/// How the link travels over TCP: plain for `ws://`, TLS for `wss://`.
enum Transport {
    Plain,
    Tls(tokio_rustls::TlsConnector),
    /// `wss://`, but `MUSTER_CA_FILE` cannot be used: why.
    Unusable(String),
}

impl Transport {
    /// Read once, when the shim starts: trust does not change under it.
    fn for_url(ws_url: &str) -> Transport {
        if !crate::tls::is_tls_url(ws_url) {
            return Transport::Plain;
        }
        match crate::tls::client_config() {
            Ok(config) => Transport::Tls(tokio_rustls::TlsConnector::from(Arc::new(config))),
            Err(why) => Transport::Unusable(why),
        }
    }
}

impl Daemon {
    fn new(ws_url: String, token: Option<String>) -> Daemon {
        Daemon {
            transport: Transport::for_url(&ws_url),
            socket: unix_socket_for(&ws_url),
            ws_url,
            token,
        }
    }

    /// The upgrade request: the URL, the token when there is one, and the
    /// local daemon's key, read afresh for every connection (a daemon that
    /// lost its runtime directory makes a new one).
    fn request(&self) -> Result<Request, tungstenite::Error> {
        let mut request = self.ws_url.as_str().into_client_request()?;
        let header_value = |text: &str| {
            HeaderValue::from_str(text).map_err(|e| tungstenite::Error::HttpFormat(e.into()))
        };
        if let Some(token) = &self.token {
            let value = header_value(&format!("Bearer {token}"))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        if let Some(key) = muster_daemon::local_key::for_url(&self.ws_url) {
            let value = header_value(&key)?;
            request
                .headers_mut()
                .insert(muster_daemon::local_key::HEADER, value);
        }
        Ok(request)
    }
}

/// A link that stayed up this long was a working one: when it drops, the
/// next round starts at once. A shorter one counts as a failed round, so a
/// daemon that welcomes the shim and drops it at once is not hammered.
const STEADY: Duration = Duration::from_secs(1);

async fn run(
    daemons: Vec<Daemon>,
    mut hello: Hello,
    mut commands: mpsc::Receiver<Command>,
    pushes: mpsc::Sender<Message>,
    mut autostart: Option<crate::autostart::Plan>,
) {
    let mut refused: Vec<Option<ErrorDetail>> = vec![None; daemons.len()];
    let mut deliveries = Deliveries::default();
    let mut attempt = 0;
    loop {
        let mut carried = Carried {
            hello: &mut hello,
            deliveries: &mut deliveries,
        };
        match round(&daemons, &mut refused, &mut carried, &mut commands, &pushes).await {
            Round::Shutdown => return,
            Round::Refused(e) => {
                tracing::error!("muster refused the link: {}", e.message);
                // Refused (e.g. bad session id): keep answering requests with the reason.
                while let Some(cmd) = commands.recv().await {
                    if let Command::Request(_, _, tx) = cmd {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                return;
            }
            Round::Dropped(up_for) if up_for >= STEADY => {
                attempt = 0;
                autostart = None;
                continue;
            }
            // A daemon was there: one that went away is not started again
            // by a shim (a person stopped it, or it is restarting).
            Round::Dropped(_) => autostart = None,
            Round::Failed => {
                if let Some(plan) = autostart.take() {
                    start_daemon(plan).await;
                    continue;
                }
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
        fail_waiting(
            &mut commands,
            &mut Carried {
                hello: &mut hello,
                deliveries: &mut deliveries,
            },
        );
    }
}

/// Starts the daemon by `plan` when nothing listens at its address, on a
/// blocking thread, waiting (bounded) for it to answer. Requests made
/// meanwhile wait for the link that follows.
async fn start_daemon(plan: crate::autostart::Plan) {
    use crate::autostart::Outcome;
    let deadline = std::time::Instant::now() + crate::autostart::CLIENT_WAIT;
    let asked = plan.clone();
    match tokio::task::spawn_blocking(move || asked.ensure(deadline)).await {
        Ok(Outcome::Started { pid }) => tracing::info!(
            pid,
            data_dir = %plan.data_dir.display(),
            log = %plan.log_path().display(),
            "started the muster daemon for {} (nothing was running there)",
            plan.url
        ),
        Ok(Outcome::Running) => {}
        Ok(Outcome::Failed(why)) => {
            tracing::warn!("no muster daemon at {} and none started: {why}", plan.url)
        }
        Err(e) => tracing::warn!("starting the muster daemon failed: {e}"),
    }
}

/// What one link hands on to the next: the hello to say, and what the
/// agent was given.
struct Carried<'a> {
    hello: &'a mut Hello,
    deliveries: &'a mut Deliveries,
}

/// How many message ids `Deliveries` keeps of each kind, oldest dropped
/// first. A Delivered frame of this many ids is one the daemon takes whole
/// (it reads at most 10,000 ids of a frame, and ~40 bytes an id is well
/// under its 1 MiB frame limit); a shim cut off from every daemon for long
/// must not grow without end, and an id dropped costs at worst one push
/// shown again, which is what a shim did before it kept any.
const KEPT_IDS: usize = 10_000;

/// The pushes this shim handed to the MCP side, across links. A daemon
/// pushes mail again until it hears it was written; that confirmation is
/// lost when the link drops first (written while down, or sent into a
/// connection that was already dead), and a re-linked daemon pushes the
/// backlog at once, possibly before it reads the confirmations sent
/// first. So a confirmation not sent waits for the next link, and a push
/// already handed on is not handed on again: written, it is confirmed
/// again instead; still on its way to the agent, its own confirmation
/// follows once written.
#[derive(Default)]
struct Deliveries {
    /// Each push handed on (the last `KEPT_IDS`): whether it was written.
    handed: HashMap<String, bool>,
    /// The ids in `handed`, oldest first.
    order: VecDeque<String>,
    /// Written, and not yet sent to a daemon, oldest first.
    unsent: VecDeque<String>,
}

impl Deliveries {
    /// A push arrived: whether to hand it on (not if it was already).
    fn arrived(&mut self, id: &str) -> bool {
        match self.handed.get(id) {
            None => {
                self.handed.insert(id.to_string(), false);
                self.order.push_back(id.to_string());
                if self.order.len() > KEPT_IDS {
                    if let Some(old) = self.order.pop_front() {
                        self.handed.remove(&old);
                    }
                }
                true
            }
            Some(true) => {
                self.confirm(id.to_string());
                false
            }
            Some(false) => false,
        }
    }

    /// The MCP side wrote these pushes to the agent.
    fn written(&mut self, ids: Vec<String>) {
        for id in ids {
            if let Some(written) = self.handed.get_mut(&id) {
                *written = true;
            }
            self.confirm(id);
        }
    }

    fn confirm(&mut self, id: String) {
        self.unsent.push_back(id);
        if self.unsent.len() > KEPT_IDS {
            self.unsent.pop_front();
        }
    }

    /// Sends every confirmation not sent yet in one frame; on failure they
    /// stay for the next link.
    async fn send_unsent<S>(&mut self, sink: &mut S) -> Result<(), ()>
    where
        S: futures_util::Sink<WsMessage> + Unpin,
    {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let message_ids: Vec<String> = self.unsent.iter().cloned().collect();
        send(sink, &ClientFrame::Delivered { message_ids }).await?;
        self.unsent.clear();
        Ok(())
    }
}

/// How a round of linking ended.
enum Round {
    /// The MCP side is gone.
    Shutdown,
    /// Every address refused the shim for good; why (the first's, or all).
    Refused(ErrorDetail),
    /// A link was up this long, then dropped.
    Dropped(Duration),
    /// No address could be linked to this time.
    Failed,
}

/// One round: each address not refused for good, in order, until one
/// links. An address that refuses the shim (401, untrusted TLS) is not
/// tried again; the others still are.
async fn round(
    daemons: &[Daemon],
    refused: &mut [Option<ErrorDetail>],
    carried: &mut Carried<'_>,
    commands: &mut mpsc::Receiver<Command>,
    pushes: &mpsc::Sender<Message>,
) -> Round {
    for (daemon, refusal) in daemons.iter().zip(refused.iter_mut()) {
        if refusal.is_some() {
            continue;
        }
        match session(daemon, carried, commands, pushes).await {
            Ended::Shutdown => return Round::Shutdown,
            Ended::Dropped(Some(up_for)) => return Round::Dropped(up_for),
            Ended::Dropped(None) => tracing::debug!("no link to {}", daemon.ws_url),
            Ended::Fatal(e) => *refusal = Some(e),
        }
    }
    match every_refusal(daemons, refused) {
        Some(e) => Round::Refused(e),
        None => Round::Failed,
    }
}

/// When every address refused the shim: the refusal, or each address's.
fn every_refusal(daemons: &[Daemon], refused: &[Option<ErrorDetail>]) -> Option<ErrorDetail> {
    let all: Vec<&ErrorDetail> = refused.iter().map(Option::as_ref).collect::<Option<_>>()?;
    match all.as_slice() {
        [] => Some(error("bad_url", "no daemon address to link to")),
        [one] => Some((*one).clone()),
        [first, ..] => {
            let each: Vec<String> = daemons
                .iter()
                .zip(&all)
                .map(|(d, e)| format!("{}: {}", d.ws_url, e.message))
                .collect();
            Some(error(
                &first.code,
                format!("every muster daemon refused the link ({})", each.join("; ")),
            ))
        }
    }
}

/// Answers what arrived while no link was up, rather than hold it for an
/// unknown time. A `Ready` said meanwhile goes into the next hello instead:
/// dropped, the shim would never take pushes; confirmations wait for the
/// next link (dropped, the daemon would push that mail again).
fn fail_waiting(commands: &mut mpsc::Receiver<Command>, carried: &mut Carried<'_>) {
    while let Ok(cmd) = commands.try_recv() {
        match cmd {
            Command::Request(_, _, tx) => {
                let _ = tx.send(Err(error(
                    "daemon_unreachable",
                    "the muster daemon is not reachable right now",
                )));
            }
            Command::Ready => carried.hello.can_push = carried.hello.wants_push,
            Command::Delivered(ids) => carried.deliveries.written(ids),
        }
    }
}

enum Ended {
    /// The MCP side is gone.
    Shutdown,
    /// The daemon refused us for good.
    Fatal(ErrorDetail),
    /// The connection failed or dropped; how long it had been up, if it was.
    Dropped(Option<Duration>),
}

/// The daemon's Unix socket for a loopback daemon URL (see the daemon's
/// `unix_socket`), unless `MUSTER_UNIX_SOCKET=off`. Only a candidate: each
/// connection checks again that it is there, in a directory only we can enter.
fn unix_socket_for(ws_url: &str) -> Option<PathBuf> {
    if std::env::var("MUSTER_UNIX_SOCKET").is_ok_and(|v| v.trim() == "off") {
        return None;
    }
    let uri: Uri = ws_url.parse().ok()?;
    let loopback = matches!(uri.host()?, "127.0.0.1" | "localhost" | "[::1]");
    #[cfg(unix)]
    if loopback {
        let dir = muster_daemon::unix_socket::default_dir();
        return Some(muster_daemon::unix_socket::path_for(&dir, uri.port_u16()?));
    }
    let _ = loopback;
    None
}

/// One connection to the daemon, from connecting to its end: over the Unix
/// socket when the daemon serves one, else over TCP.
async fn session(
    daemon: &Daemon,
    carried: &mut Carried<'_>,
    commands: &mut mpsc::Receiver<Command>,
    pushes: &mpsc::Sender<Message>,
) -> Ended {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    #[cfg(unix)]
    if let Some(path) = daemon.socket.as_deref().filter(|p| trusted_socket(p)) {
        let connected = tokio::time::timeout(Duration::from_secs(5), async {
            let request = daemon.request().map_err(std::io::Error::other)?;
            let stream = muster_daemon::unix_stream::QuietUnixStream::connect(path).await?;
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(std::io::Error::other)
        })
        .await;
        match connected {
            Ok(Ok((ws, _))) => {
                return converse(ws, &daemon.ws_url, carried, commands, pushes).await
            }
            Ok(Err(e)) => tracing::debug!("no link over {}: {e}; trying TCP", path.display()),
            Err(_) => tracing::debug!("no link over {} in 5 s; trying TCP", path.display()),
        }
    }
    let Ok(request) = daemon.request() else {
        return Ended::Fatal(error(
            "bad_url",
            format!(
                "cannot link to {}: not a valid address or token",
                daemon.ws_url
            ),
        ));
    };
    let connector = match &daemon.transport {
        Transport::Plain => None,
        Transport::Tls(connector) => Some(connector),
        Transport::Unusable(why) => return Ended::Fatal(error("tls_failed", why.clone())),
    };
    let Some(connector) = connector else {
        // `true`: TCP_NODELAY, so a small frame never waits for a delayed ACK.
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async_with_config(request, Some(config), true),
        )
        .await;
        return match connected {
            Ok(Ok((ws, _))) => converse(ws, &daemon.ws_url, carried, commands, pushes).await,
            Ok(Err(e)) => refused_or_dropped(&e),
            Err(_) => Ended::Dropped(None),
        };
    };
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        connect_tls(connector, request, config),
    )
    .await;
    match connected {
        Ok(Ok(ws)) => converse(ws, &daemon.ws_url, carried, commands, pushes).await,
        Ok(Err(e)) => refused_or_dropped(&e),
        Err(_) => Ended::Dropped(None),
    }
}

/// A failed connection: refused for good when the daemon said 401 or its
/// TLS cannot be trusted (both need a person to change something), else
/// dropped, to be tried again.
fn refused_or_dropped(err: &tungstenite::Error) -> Ended {
    if let tungstenite::Error::Http(response) = err {
        if response.status() == 401 {
            return Ended::Fatal(error("unauthorized", refusal(response.body().as_deref())));
        }
    }
    match crate::tls::failure(err) {
        Some(reason) => Ended::Fatal(error(
            "tls_failed",
            format!("cannot link to the muster daemon securely: {reason}"),
        )),
        None => Ended::Dropped(None),
    }
}

/// A `wss://` link: TCP (no Nagle, as for `ws://`), the TLS handshake with
/// the name or address in the URL, then the WebSocket upgrade.
async fn connect_tls(
    connector: &tokio_rustls::TlsConnector,
    request: Request,
    config: WebSocketConfig,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let uri = request.uri();
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or(tungstenite::Error::Url(
            tungstenite::error::UrlError::NoHostName,
        ))?;
    let port = uri.port_u16().unwrap_or(443);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| tungstenite::Error::Url(tungstenite::error::UrlError::NoHostName))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(name, tcp).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tls, Some(config)).await?;
    Ok(ws)
}

/// What to tell the agent when the daemon refused the link: the daemon's
/// own reason (it names the key file or the token it wants), and the fix.
fn refusal(body: Option<&[u8]>) -> String {
    let reason = body
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no reason given".into());
    format!(
        "the muster daemon refused this shim ({reason}); a daemon of another user's cannot be \
         used, and a team daemon needs MUSTER_TOKEN, or `token` in muster's config file, set \
         to its token"
    )
}

/// A socket file worth trying: there, in a directory only we can enter.
#[cfg(unix)]
fn trusted_socket(path: &Path) -> bool {
    path.parent()
        .is_some_and(muster_daemon::unix_socket::is_private_dir)
        && std::fs::symlink_metadata(path).is_ok()
}

/// Says hello, then relays until the connection ends.
async fn converse<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    ws_url: &str,
    carried: &mut Carried<'_>,
    commands: &mut mpsc::Receiver<Command>,
    pushes: &mpsc::Sender<Message>,
) -> Ended
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let hello = &carried.hello;
    let frame = ClientFrame::Hello {
        protocol: LINK_PROTOCOL,
        session: hello.session.clone(),
        can_push: hello.can_push,
        per_call: hello.per_call,
    };
    if send(&mut sink, &frame).await.is_err() {
        return Ended::Dropped(None);
    }
    let mut link = Linked {
        daemon: ws_url.to_string(),
        ..Linked::default()
    };
    let mut heartbeat = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS as u64));
    heartbeat.tick().await;
    let ended = loop {
        let step = tokio::select! {
            cmd = commands.recv(), if link.up() => match cmd {
                None => Err(Ended::Shutdown),
                Some(cmd) => link.command(&mut sink, carried, cmd).await,
            },
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break Ended::Dropped(link.up_for()),
                    Some(Ok(_)) => continue,
                };
                link.frame(&text, carried.deliveries, pushes).await
            }
            _ = heartbeat.tick() => {
                let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
                send(&mut sink, &ClientFrame::Ping { at }).await.map_err(|()| Ended::Dropped(link.up_for()))
            }
        };
        // Once welcomed, and whenever more are kept: before anything else
        // this link carries, so a re-linked daemon hears of them first.
        let confirmed = match link.up() {
            true => carried.deliveries.send_unsent(&mut sink).await,
            false => Ok(()),
        };
        if let Err(ended) = step.and(confirmed.map_err(|()| Ended::Dropped(link.up_for()))) {
            break ended;
        }
    };
    for (_, tx) in link.pending.drain() {
        let _ = tx.send(Err(error(
            "link_lost",
            "the connection to the muster daemon dropped before it answered",
        )));
    }
    let _ = sink.close().await;
    ended
}

/// A connection's state: which daemon, when it welcomed the shim, and the
/// requests waiting for their replies.
#[derive(Default)]
struct Linked {
    daemon: String,
    welcomed: Option<Instant>,
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    next_id: u64,
}

impl Linked {
    fn up(&self) -> bool {
        self.welcomed.is_some()
    }

    /// How long the link has been up; `None` before the welcome.
    fn up_for(&self) -> Option<Duration> {
        self.welcomed.map(|at| at.elapsed())
    }

    /// Sends what the MCP side asked for; an error ends the connection.
    async fn command<Si: futures_util::Sink<WsMessage> + Unpin>(
        &mut self,
        sink: &mut Si,
        carried: &mut Carried<'_>,
        cmd: Command,
    ) -> Result<(), Ended> {
        let up_for = self.up_for();
        let dropped = |()| Ended::Dropped(up_for);
        match cmd {
            Command::Request(op, session, tx) => {
                self.next_id += 1;
                let id = self.next_id;
                if send(sink, &ClientFrame::Request { id, op, session })
                    .await
                    .is_err()
                {
                    let _ = tx.send(Err(error(
                        "link_lost",
                        "the connection to the muster daemon dropped",
                    )));
                    return Err(Ended::Dropped(up_for));
                }
                self.pending.insert(id, tx);
                Ok(())
            }
            // Sent by `converse` after this, with any kept from before.
            Command::Delivered(ids) => {
                carried.deliveries.written(ids);
                Ok(())
            }
            Command::Ready => {
                let hello = &mut *carried.hello;
                // A re-link says so in its hello from now on.
                hello.can_push = hello.wants_push;
                send(
                    sink,
                    &ClientFrame::Ready {
                        can_push: hello.can_push,
                    },
                )
                .await
                .map_err(dropped)
            }
        }
    }

    /// Handles one frame from the daemon; an error ends the connection.
    async fn frame(
        &mut self,
        text: &str,
        deliveries: &mut Deliveries,
        pushes: &mpsc::Sender<Message>,
    ) -> Result<(), Ended> {
        match serde_json::from_str::<ServerFrame>(text) {
            Ok(ServerFrame::Welcome { session, .. }) => {
                self.welcomed = Some(Instant::now());
                let daemon = &self.daemon;
                match session {
                    Some(s) => {
                        tracing::info!(session = %s.id, nickname = %s.nickname, %daemon, "linked to muster")
                    }
                    None => {
                        tracing::info!(%daemon, "linked to muster; each call names its session")
                    }
                }
            }
            Ok(ServerFrame::Reply {
                id,
                result,
                error: err,
            }) => {
                if let Some(tx) = self.pending.remove(&id) {
                    let _ = tx.send(match err {
                        Some(e) => Err(e),
                        None => Ok(result.unwrap_or_else(|| JsonText::from_value(&Value::Null))),
                    });
                }
            }
            Ok(ServerFrame::Push { message }) => {
                if deliveries.arrived(&message.id) && pushes.send(message).await.is_err() {
                    return Err(Ended::Shutdown);
                }
            }
            Ok(ServerFrame::Pong { .. }) => {}
            Ok(ServerFrame::Fatal { error: e }) if !self.up() => return Err(Ended::Fatal(e)),
            Ok(ServerFrame::Fatal { error: e }) => tracing::warn!("daemon: {}", e.message),
            Err(e) => tracing::warn!("unreadable frame from the daemon: {e}"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_low_cap_with_jitter() {
        for attempt in 0..20 {
            let d = backoff(attempt).as_millis();
            assert!((10..=1_200).contains(&d), "attempt {attempt}: {d} ms");
        }
        assert!(backoff(0).as_millis() <= 120);
        assert!(backoff(10).as_millis() >= 800);
    }

    /// What a stand-in daemon says to a hello.
    #[derive(Clone, Copy)]
    enum Answer {
        Welcome,
        Fatal,
        /// Accepts the TCP connection and closes it, no WebSocket spoken.
        Hangup,
    }

    /// A stand-in daemon on a port of its own: it reports when each
    /// connection arrived, answers as told, and, on `stop`, closes its
    /// port and then the links it holds.
    struct Stand {
        url: String,
        arrivals: mpsc::UnboundedReceiver<Instant>,
        stop: Option<oneshot::Sender<()>>,
    }

    async fn stand(answer: Answer) -> Stand {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let tcp = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => accepted.unwrap().0,
                };
                let _ = arrived.send(Instant::now());
                if matches!(answer, Answer::Hangup) {
                    continue; // `tcp` dropped: closed
                }
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let _hello = ws.next().await;
                let frame = match answer {
                    Answer::Fatal => ServerFrame::Fatal {
                        error: error("unauthorized", "no entry here"),
                    },
                    _ => ServerFrame::Welcome {
                        protocol: LINK_PROTOCOL,
                        session: None,
                    },
                };
                let text = serde_json::to_string(&frame).unwrap();
                ws.send(WsMessage::Text(text.into())).await.unwrap();
                held.push(ws);
            }
            drop(listener);
            drop(held);
        });
        Stand {
            url,
            arrivals,
            stop: Some(stop),
        }
    }

    fn hello() -> Hello {
        Hello {
            session: RegisterRequest::default(),
            can_push: false,
            wants_push: true,
            per_call: false,
        }
    }

    /// Links to `urls` as `Link::start` does, but over TCP alone (no
    /// daemon's Unix socket is looked for).
    fn link_to(urls: &[&str]) -> (Link, mpsc::Receiver<Message>) {
        let daemons = urls
            .iter()
            .map(|u| Daemon {
                socket: None,
                ..Daemon::new(u.to_string(), None)
            })
            .collect();
        let (commands, rx) = mpsc::channel(8);
        let (pushes_tx, pushes) = mpsc::channel(8);
        tokio::spawn(run(daemons, hello(), rx, pushes_tx, None));
        (Link { commands }, pushes)
    }

    async fn next(arrivals: &mut mpsc::UnboundedReceiver<Instant>) -> Instant {
        tokio::time::timeout(Duration::from_secs(5), arrivals.recv())
            .await
            .expect("a connection within 5 s")
            .expect("the stand-in runs")
    }

    #[tokio::test]
    async fn each_round_tries_the_addresses_in_order_from_the_first() {
        // Proves the shim links to the first address that takes it (after
        // one that hangs up, before the one after), and that when a working
        // link drops it starts again from the first address at once, not
        // after a backoff (whose floor is 80 ms), and reaches the next live one.
        let mut first = stand(Answer::Hangup).await;
        let mut second = stand(Answer::Welcome).await;
        let mut third = stand(Answer::Welcome).await;
        let (_link, _pushes) = link_to(&[&first.url, &second.url, &third.url]);
        let tried_first = next(&mut first.arrivals).await;
        let linked_second = next(&mut second.arrivals).await;
        assert!(tried_first < linked_second);
        tokio::time::sleep(STEADY + Duration::from_millis(100)).await;
        assert!(
            third.arrivals.try_recv().is_err(),
            "linked to the second only"
        );

        let dropped = Instant::now();
        second.stop.take().unwrap().send(()).unwrap();
        let tried_first_again = next(&mut first.arrivals).await;
        let linked_third = next(&mut third.arrivals).await;
        assert!(tried_first_again < linked_third);
        let took = linked_third - dropped;
        assert!(took < Duration::from_millis(75), "re-linked after {took:?}");
    }

    #[tokio::test]
    async fn an_address_that_refuses_is_passed_over_and_all_refusing_is_said() {
        // Proves one daemon refusing the shim for good does not end the
        // link while another takes it, and that when every address refuses,
        // a request is answered with their refusals, each naming its address.
        let refusing = stand(Answer::Fatal).await;
        let mut welcoming = stand(Answer::Welcome).await;
        let (_link, _pushes) = link_to(&[&refusing.url, &welcoming.url]);
        next(&mut welcoming.arrivals).await;

        let other = stand(Answer::Fatal).await;
        let (link, _pushes) = link_to(&[&refusing.url, &other.url]);
        let answer = link.request(Op::Whoami, None).await.unwrap_err();
        assert_eq!(answer.code, "unauthorized");
        assert_eq!(
            answer.message,
            format!(
                "every muster daemon refused the link ({}: no entry here; {}: no entry here)",
                refusing.url, other.url
            )
        );
        let (alone, _pushes) = link_to(&[&other.url]);
        let answer = alone.request(Op::Whoami, None).await.unwrap_err();
        assert_eq!(answer, error("unauthorized", "no entry here"));
    }

    #[tokio::test]
    async fn what_waits_while_down_is_answered_and_ready_kept_for_the_next_hello() {
        // Proves a request made while no link is up is answered at once as
        // unreachable, and a `Ready` said meanwhile is not lost: the next
        // hello says the shim takes pushes; a confirmation made meanwhile is
        // kept for the next link.
        let (tx, mut rx) = mpsc::channel(8);
        let (reply, replied) = oneshot::channel();
        tx.send(Command::Request(Op::Whoami, None, reply))
            .await
            .unwrap();
        tx.send(Command::Ready).await.unwrap();
        tx.send(Command::Delivered(vec!["m1".into()]))
            .await
            .unwrap();
        let mut hello = hello();
        let mut deliveries = Deliveries::default();
        fail_waiting(
            &mut rx,
            &mut Carried {
                hello: &mut hello,
                deliveries: &mut deliveries,
            },
        );
        assert!(hello.can_push);
        assert_eq!(deliveries.unsent, ["m1"], "the confirmation is kept");
        assert_eq!(
            replied.await.unwrap().unwrap_err().code,
            "daemon_unreachable"
        );
    }

    #[test]
    fn a_push_handed_on_is_not_handed_on_again_and_a_written_one_is_confirmed_again() {
        // Proves the shim hands each push to the agent once: a repeat while
        // the first is still on its way is dropped without a confirmation
        // (its own follows once written); a repeat of one written queues
        // its confirmation again, since the daemon pushing it again means
        // it never heard the first.
        let mut d = Deliveries::default();
        assert!(d.arrived("m1"));
        assert!(!d.arrived("m1"));
        assert!(d.unsent.is_empty());
        d.written(vec!["m1".into()]);
        assert_eq!(d.unsent, ["m1"]);
        d.unsent.clear();
        assert!(!d.arrived("m1"));
        assert_eq!(d.unsent, ["m1"]);
    }

    #[test]
    fn deliveries_keep_the_newest_ids_within_their_bound() {
        // Proves both kinds of id are bounded to KEPT_IDS, oldest dropped:
        // a push older than that is handed on again, a newer one is not,
        // and the oldest unsent confirmations go first.
        let mut d = Deliveries::default();
        for i in 0..=KEPT_IDS {
            assert!(d.arrived(&format!("m{i}")));
        }
        assert_eq!(d.order.len(), KEPT_IDS);
        assert_eq!(d.handed.len(), KEPT_IDS);
        assert!(d.arrived("m0"), "the oldest was forgotten");
        assert!(!d.arrived(&format!("m{KEPT_IDS}")));
        d.written((0..KEPT_IDS + 5).map(|i| format!("w{i}")).collect());
        assert_eq!(d.unsent.len(), KEPT_IDS);
        assert_eq!(d.unsent.front().map(String::as_str), Some("w5"));
    }

    #[tokio::test]
    async fn kept_confirmations_go_first_on_the_next_link() {
        // Proves confirmations made while no link was up are the first
        // frame after the hello on the next link, all in one Delivered.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel(8);
        tx.send(Command::Delivered(vec!["m1".into()]))
            .await
            .unwrap();
        tx.send(Command::Delivered(vec!["m2".into()]))
            .await
            .unwrap();
        let mut deliveries = Deliveries::default();
        let mut hello = hello();
        let mut rx = rx;
        fail_waiting(
            &mut rx,
            &mut Carried {
                hello: &mut hello,
                deliveries: &mut deliveries,
            },
        );
        let daemon = Daemon {
            socket: None,
            ..Daemon::new(url, None)
        };
        let (pushes_tx, _pushes) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut carried = Carried {
                hello: &mut hello,
                deliveries: &mut deliveries,
            };
            session(&daemon, &mut carried, &mut rx, &pushes_tx).await;
        });
        let tcp = listener.accept().await.unwrap().0;
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let _hello = ws.next().await;
        let welcome = ServerFrame::Welcome {
            protocol: LINK_PROTOCOL,
            session: None,
        };
        let text = serde_json::to_string(&welcome).unwrap();
        ws.send(WsMessage::Text(text.into())).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the link is up")
            .unwrap();
        let frame: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
        let expected = serde_json::to_value(ClientFrame::Delivered {
            message_ids: vec!["m1".into(), "m2".into()],
        })
        .unwrap();
        assert_eq!(frame, expected);
        drop(tx);
    }
}
