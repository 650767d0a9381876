//! muster's daemon: one port serving hooks, the JSON API, the event stream,
//! the shim link, MCP over HTTP, health and metrics; a sweeper that removes
//! abandoned sessions; and a pruner that enforces retention. State lives in
//! memory (`state`, made of owned parts); every operation decides its
//! changes there and applies and submits them in one critical section
//! (`Hub::commit`), answering once the store has made them durable. See
//! ARCHITECTURE.md for the map and the rules.
//!
//! Every input is bounded (`muster_core::limits`): connections are served
//! by hyper directly (`serve_connections`: a cap, a header and idle
//! timeout, a budget per connection), sends and hook calls have a rate per
//! session (`Hub::take_send`, `Hub::take_hook`), and a link's queue and
//! frames have a size (`link`).

mod access;
mod authorize;
pub mod clock;
mod cluster;
mod error;
mod events;
mod extract;
mod gitinfo;
mod history;
mod hook_forms;
mod hooks;
mod hub;
mod link;
pub mod local_key;
mod mcp_http;
mod metrics;
mod ops;
mod reservations;
mod routes;
mod scopes;
mod session_view;
mod state;
mod surfacing;
mod tasks;
mod tls;
mod token_admin;
mod tokens;
pub mod unix_socket;
#[cfg(unix)]
pub mod unix_stream;
mod wake;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_core::limits::{self, Rate};
use muster_store::shared::Shared;
use muster_store::Store;
use muster_store_postgres::PostgresStore;
use muster_store_sqlite::SqliteStore;
use std::pin::Pin;
use std::task::Poll;

use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

pub use clock::{Clock, ManualClock};
pub use hub::Hub;
pub use reservations::GuardMode;
pub use tls::TlsFiles;

/// How long `stop` waits for open requests to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Which store holds the daemon's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// One SQLite file in the data directory (the default).
    Sqlite,
    /// A PostgreSQL database, by its `postgres://` URL.
    Postgres(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: String,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub stale_after: Duration,
    pub hook_backstop: Duration,
    pub sweep_interval: Duration,
    pub retention: Duration,
    pub max_request_bytes: usize,
    /// The person running the daemon: who acts when a request names nobody.
    pub operator: String,
    /// Bearer token every request must carry; required to bind beyond loopback.
    pub token: Option<String>,
    /// What an edit of a file another session holds exclusively gets.
    pub edit_guard: GuardMode,
    /// Two sessions writing one file within this window are both told.
    pub collision_window: Duration,
    /// At most one wake of an idle session per this long.
    pub wake_cooldown: Duration,
    /// What the daemon reads the time from and sleeps on: the system's
    /// clocks, or a test's [`ManualClock`].
    pub clock: Clock,
    /// Where to serve a Unix socket beside the port (see [`unix_socket`]);
    /// `None`: TCP only.
    pub unix_socket_dir: Option<PathBuf>,
    /// Where the local key goes (see [`local_key`]): every caller that is
    /// not over the Unix socket must show it (or the token, or be a signed-in
    /// dashboard). `None`: no key is asked of local callers (a daemon a test
    /// or benchmark runs in its own process, or a platform without one).
    pub local_key_dir: Option<PathBuf>,
    /// Sends (direct and room) one sender may make; over it, 429.
    pub send_rate: Rate,
    /// Hook calls one session may make; over it, 429.
    pub hook_rate: Rate,
    /// Sends and hook calls one connection may carry, whatever it names.
    pub connection_rate: Rate,
    /// Connections open at once (TCP and Unix socket together); one more
    /// is answered 503 and closed.
    pub max_connections: usize,
    /// How long a connection may take over a request's headers, and sit
    /// idle between requests, before it is closed.
    pub header_timeout: Duration,
    /// Largest WebSocket message a shim may send; a larger one ends its link.
    pub max_link_frame_bytes: usize,
    /// Frames a link's writer may have waiting.
    pub link_queue: usize,
    /// A frame not written to a shim within this ends the link (the shim
    /// stopped reading); the shim re-links and gets its mail again.
    pub link_stall: Duration,
    /// The certificate and key to serve the TCP port with over TLS; `None`:
    /// plain HTTP (the Unix socket is plain either way).
    pub tls: Option<TlsFiles>,
}

impl Config {
    /// Defaults for a daemon on `bind` with data in `data_dir`.
    pub fn new(bind: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Config {
            bind: bind.into(),
            data_dir: data_dir.into(),
            store: StoreKind::Sqlite,
            stale_after: Duration::from_secs(60),
            hook_backstop: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(3),
            retention: Duration::from_secs(30 * 86_400),
            max_request_bytes: muster_core::limits::DEFAULT_MAX_REQUEST_BYTES,
            operator: std::env::var("USER").unwrap_or_else(|_| "operator".into()),
            token: None,
            edit_guard: GuardMode::Deny,
            collision_window: Duration::from_secs(600),
            wake_cooldown: Duration::from_millis(muster_core::wake::DEFAULT_COOLDOWN_MS as u64),
            clock: Clock::system(),
            unix_socket_dir: None,
            local_key_dir: None,
            send_rate: limits::DEFAULT_SEND_RATE,
            hook_rate: limits::DEFAULT_HOOK_RATE,
            connection_rate: limits::DEFAULT_CONNECTION_RATE,
            max_connections: limits::DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_millis(limits::DEFAULT_HEADER_TIMEOUT_MS),
            max_link_frame_bytes: limits::DEFAULT_MAX_LINK_FRAME_BYTES,
            link_queue: limits::DEFAULT_LINK_QUEUE,
            link_stall: Duration::from_millis(limits::DEFAULT_LINK_STALL_MS),
            tls: None,
        }
    }
}

/// A daemon running in this process (tests and benchmarks start one).
pub struct Daemon {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Stops accepting, ends event streams and links, finishes in-flight
    /// requests (waiting at most a few seconds) and returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.hub.shutdown.cancel();
        let _ = self.shutdown.send(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, self.task).await {
            Ok(joined) => joined.context("daemon task failed")?,
            Err(_) => {
                tracing::warn!(
                    "some connections were still open after {SHUTDOWN_GRACE:?}; stopping anyway"
                );
                Ok(())
            }
        }
    }
}

/// An opened store: what the daemon writes to, its description, and (for
/// a database several daemons may share) its team side.
type Opened = (Arc<dyn Store>, String, Option<Arc<dyn Shared>>);

async fn open_store(config: &Config) -> anyhow::Result<Opened> {
    match &config.store {
        StoreKind::Sqlite => {
            let path = config.data_dir.join("muster.db");
            let store = SqliteStore::open(&path)
                .with_context(|| format!("cannot open the SQLite store at {}", path.display()))?;
            Ok((Arc::new(store), format!("sqlite:{}", path.display()), None))
        }
        StoreKind::Postgres(url) => {
            let store = PostgresStore::open(url).await.map_err(|e| match e {
                // Its own words already name the server and what to do.
                muster_store::StoreError::Backend(cause) => {
                    anyhow::anyhow!("cannot open the PostgreSQL store: {cause}")
                }
                other => anyhow::anyhow!("cannot open the PostgreSQL store: {other}"),
            })?;
            let desc = store.describe().to_string();
            let store = Arc::new(store);
            Ok((store.clone(), desc, Some(store)))
        }
    }
}

fn check_bind(addr: &SocketAddr, token: &Option<String>) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "refusing to bind {addr}: beyond loopback every request must carry a token; pass --token (or MUSTER_TOKEN)"
        );
    }
    Ok(())
}

/// The data directory, only its owner's (0700 on Unix): it holds every
/// message. One that exists already (made 0755 by an older muster, or by a
/// client before any daemon ran) is tightened, or a warning says it cannot be.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700).create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                tracing::warn!(
                    "the data directory {} is open to other users (mode {mode:o}) and cannot be made 0700: {e}",
                    dir.display()
                );
            }
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Opens the store, loads state, binds the port and serves in the background.
pub async fn start(config: Config) -> anyhow::Result<Daemon> {
    // First: a bad certificate or key stops the start before anything is made.
    let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
    create_private_dir(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let (store, store_desc, shared) = open_store(&config).await?;
    let listener = TcpListener::bind(&config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let addr = listener.local_addr()?;
    check_bind(&addr, &config.token)?;
    if let Some(warning) = tls::clear_text_warning(&addr, tls.is_some()) {
        tracing::warn!("{warning}");
    }
    let access = access::Access::new(local_key(&config, &addr)?);
    let unix = bind_unix_socket(&config, &addr);
    let hub = Hub::load_shared(config, store, store_desc, shared).await?;
    let app = routes::router(hub.clone(), access);
    let (shutdown, stop_rx) = watch::channel(false);
    let background = tasks::spawn(hub.clone(), shutdown.subscribe());
    let team = cluster::spawn(hub.clone(), shutdown.subscribe());
    // The listener is up: shims can re-link from now on, so the sweeper may decide.
    hub.mark_links_known();
    let permits = Arc::new(Semaphore::new(hub.config.max_connections.max(1)));
    let unix_task = unix.map(|bound| {
        serve_unix(
            bound,
            app.clone(),
            &hub,
            permits.clone(),
            shutdown.subscribe(),
        )
    });
    // Every accepted socket sends small frames at once: with Nagle on, a push
    // written after another still-unacknowledged frame waited for the peer's
    // delayed ACK (a 40 ms step on the reply path).
    let tap_hub = hub.clone();
    let listener =
        axum::serve::ListenerExt::tap_io(listener, move |tcp: &mut tokio::net::TcpStream| {
            tap_hub.metrics.tcp_connections.inc();
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY on an accepted socket: {e}");
            }
        });
    let served = serve_connections(listener, app, hub.clone(), permits, tls, stop_rx, false);
    let hub_after = hub.clone();
    let task = tokio::spawn(async move {
        served.await;
        if let Some(unix) = unix_task {
            // Its socket file is removed as it ends.
            let _ = unix.await;
        }
        background.abort();
        if let Some(team) = team {
            team.abort();
        }
        hub_after.leave_team().await;
        Ok(())
    });
    Ok(Daemon {
        addr,
        hub,
        shutdown,
        task,
    })
}

/// Serves `app` on every connection `listener` accepts until `stop`, then
/// waits for open requests to finish. Each connection holds one of
/// `permits` for as long as it is open (a WebSocket link too, after its
/// upgrade); with none left, it is answered 503 and closed at once. A
/// connection that takes over `header_timeout` to send a request's headers,
/// or sits that long idle between requests, is closed (hyper's header read
/// timeout covers both), so half-open connections cannot pile up. Each
/// connection has its own budget of sends and hook calls
/// ([`routes::ConnectionBudget`]). On the daemon's own Unix socket
/// (`own_socket`) every request is marked as from the daemon's user. With
/// `tls`, each connection's handshake comes first, in its own task and
/// within the header timeout (see [`tls`]).
async fn serve_connections<L>(
    mut listener: L,
    app: axum::Router,
    hub: Arc<Hub>,
    permits: Arc<Semaphore>,
    tls: Option<tls::Tls>,
    mut stop_rx: watch::Receiver<bool>,
    own_socket: bool,
) where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    // Every connection's task holds a sender: all are done when the
    // receiver hears that none is left.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(hub.config.header_timeout)
        .keep_alive(true);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_rx.wait_for(|stop| *stop) => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            hub.metrics.connections_refused.inc();
            tokio::spawn(refuse_connection(
                tls.clone(),
                io,
                hub.config.max_connections,
            ));
            continue;
        };
        hub.metrics.connections_open.enter();
        let io = Counted {
            io,
            _permit: permit,
            hub: hub.clone(),
        };
        let budget = routes::ConnectionBudget(Arc::new(std::sync::Mutex::new(
            limits::TokenBucket::full(hub.config.connection_rate, hub.clock.mono()),
        )));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(budget.clone());
            if own_socket {
                req.extensions_mut().insert(access::OwnSocket);
            }
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
        let (http, tls, open, mut stop_rx) =
            (http.clone(), tls.clone(), open.clone(), stop_rx.clone());
        let handshake_limit = hub.config.header_timeout;
        tokio::spawn(async move {
            let Some(io) = tls::accept(tls.as_ref(), io, handshake_limit).await else {
                return;
            };
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let stopping = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stopping => {
                    // Finish the request in progress, take no more.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!("connection ended: {e}");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    let _ = all_closed.recv().await;
}

/// Over the connection cap: a 503 in the daemon's error shape, and close.
/// Over TLS the answer is encrypted too, so the handshake shares its second.
async fn refuse_connection<Io>(tls: Option<tls::Tls>, io: Io, cap: usize)
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"error\":{{\"code\":\"too_many_connections\",\"message\":\"the daemon has {cap} connections open, its limit; retry in a second\",\"retry_after_ms\":1000}}}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let Some(mut io) = tls::accept(tls.as_ref(), io, Duration::from_secs(1)).await else {
            return;
        };
        let _ = io.write_all(answer.as_bytes()).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// A connection's socket with its place under the connection cap: the
/// place is given back when the socket is dropped, which for a WebSocket
/// is when the link ends, not when its upgrade was answered.
struct Counted<Io> {
    io: Io,
    _permit: OwnedSemaphorePermit,
    hub: Arc<Hub>,
}

impl<Io> Drop for Counted<Io> {
    fn drop(&mut self) {
        self.hub.metrics.connections_open.leave();
    }
}

impl<Io: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The local key local callers must show (new at every start), when the
/// config asks for one. Without it nothing local could call, so failing to
/// make it stops the start with the reason.
fn local_key(config: &Config, addr: &SocketAddr) -> anyhow::Result<Option<local_key::KeyFile>> {
    let Some(dir) = config.local_key_dir.as_deref() else {
        return Ok(None);
    };
    #[cfg(unix)]
    {
        let file = local_key::create(dir, addr.port())
            .map_err(|e| anyhow::anyhow!("cannot set up the local key: {e}"))?;
        Ok(Some(file))
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, addr);
        Ok(None)
    }
}

#[cfg(unix)]
type BoundUnix = (unix_stream::QuietUnixListener, unix_socket::SocketFile);
#[cfg(not(unix))]
type BoundUnix = std::convert::Infallible;

/// The Unix socket beside a loopback port, when the config asks for one.
/// Failing to bind it is no failure of the daemon: clients use TCP.
fn bind_unix_socket(config: &Config, addr: &SocketAddr) -> Option<BoundUnix> {
    let dir = config.unix_socket_dir.as_deref()?;
    if !addr.ip().is_loopback() {
        return None;
    }
    #[cfg(unix)]
    {
        match unix_socket::bind(dir, addr.port()) {
            Ok((listener, file)) => {
                tracing::info!(socket = %file.path().display(), "serving the Unix socket too");
                Some((unix_stream::QuietUnixListener(listener), file))
            }
            Err(e) => {
                tracing::warn!("serving TCP only: {e}");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Serves the routes on the Unix socket until shutdown, then removes it.
#[cfg(unix)]
fn serve_unix(
    (listener, file): BoundUnix,
    app: axum::Router,
    hub: &Arc<Hub>,
    permits: Arc<Semaphore>,
    stop_rx: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let tap_hub = hub.clone();
    let listener =
        axum::serve::ListenerExt::tap_io(listener, move |_: &mut unix_stream::QuietUnixStream| {
            tap_hub.metrics.unix_connections.inc();
        });
    let served = serve_connections(listener, app, hub.clone(), permits, None, stop_rx, true);
    tokio::spawn(async move {
        served.await;
        drop(file);
    })
}

#[cfg(not(unix))]
fn serve_unix(
    bound: BoundUnix,
    _: axum::Router,
    _: &Arc<Hub>,
    _: Arc<Semaphore>,
    _: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    match bound {}
}

/// Whether `files` load as a certificate and its key (the same check the
/// start makes), so a bad file is said before anything is made on disk.
pub fn check_tls(files: &TlsFiles) -> anyhow::Result<()> {
    tls::Tls::load(files).map(drop)
}

/// Runs the daemon until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_then(config, |_| {}).await
}

/// [`serve`], telling `listening` the address once the port is open (before
/// the listening line is printed).
pub async fn serve_then(config: Config, listening: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let daemon = start(config).await?;
    listening(daemon.addr);
    let status = daemon.hub.status();
    let tls = daemon.hub.config.tls.is_some();
    if let Some(warning) = tls::clear_text_warning(&daemon.addr, tls) {
        // Besides the log line: a log filtered to errors must not hide it.
        eprintln!("\n{warning}\n");
    }
    println!(
        "muster listening on {}://{} (store {}, operator {})",
        if tls { "https" } else { "http" },
        daemon.addr,
        status.store,
        status.operator
    );
    tracing::info!(addr = %daemon.addr, store = %status.store, "muster daemon started");
    let hub = daemon.hub.clone();
    tokio::select! {
        _ = shutdown_signal() => {}
        // The daemon stopped itself (it lost track of the team's log).
        _ = hub.shutdown.cancelled() => {}
    }
    tracing::info!("shutting down");
    daemon.stop().await?;
    match hub.stopped_because.get() {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
