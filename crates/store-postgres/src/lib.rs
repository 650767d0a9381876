//! muster's team store: [`PostgresStore`], the [`Store`] trait over one
//! PostgreSQL database, with versioned migrations ([`SCHEMA_VERSION`]).
//!
//! It keeps the SQLite store's semantics exactly. Writes go through one
//! writer task that drains every pending request into a single transaction
//! (group commit): many senders share one commit, and the commit is what
//! answers them. A batch's statements are pipelined; should one fail, the
//! batch runs again with each request in its own savepoint, so one bad
//! request fails alone. A [`Commit`] resolves only after PostgreSQL reported the
//! transaction committed (with `synchronous_commit` on, so flushed to its
//! WAL). Reads take pooled connections beside the writer.
//!
//! Several daemons may share one database (team mode): the store is also
//! [`Shared`], with every commit logged in sequence for the others, each
//! daemon's heartbeat and links, and one sweep leader.
//!
//! Layout: `schema` (the migrations), `batch` (the writer: group commit,
//! pipelined, falling back to a savepoint per request, logging each
//! commit), `writes` (what each change does to the tables), `reads` (rows
//! back into muster's data), `team` (the listener, heartbeat and leader),
//! `errors` (the driver's errors in words, and the one error of opening).

mod batch;
mod errors;
mod reads;
mod schema;
mod team;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use muster_core::{Delivery, Message, Millis};
use muster_store::health::WriteHealth;
use muster_store::job::Job;
use muster_store::shared::{Logged, PeerLink, Shared};
use muster_store::{
    Change, Commit, HistoryQuery, InboxEntry, InboxQuery, PruneReport, SearchQuery, Snapshot,
    Store, StoreError,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;

pub use errors::ConnectError;
pub use schema::SCHEMA_VERSION;

/// Connections kept open: the writer's and the readers'.
const POOL_SIZE: usize = 16;

/// How long one connection attempt may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The team store: one PostgreSQL database, a writer task that
/// group-commits every write, and a pool of connections for reads.
pub struct PostgresStore {
    pool: Pool,
    writer: mpsc::UnboundedSender<Job>,
    describe: String,
    health: Arc<WriteHealth>,
    /// For the connections outside the pool (listener, leader).
    config: tokio_postgres::Config,
    heartbeat: team::Heartbeat,
    leader: team::Leader,
    notified: watch::Receiver<u64>,
}

/// A parsed `postgres://` URL with what the store sets on every
/// connection, and where it connects, for messages (never the password).
fn config_from(url: &str) -> Result<(tokio_postgres::Config, errors::Target), ConnectError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| ConnectError::BadUrl(errors::text(&e)))?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(ConnectError::TlsUnsupported);
    }
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        config.host("localhost");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("muster");
    }
    // An acknowledged write must survive a crash of the server, whatever
    // the server's or the role's default.
    let options = match config.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c synchronous_commit=on"),
        _ => "-c synchronous_commit=on".to_string(),
    };
    config.options(options);
    let target = target_of(&config);
    Ok((config, target))
}

fn target_of(config: &tokio_postgres::Config) -> errors::Target {
    let ports = config.get_ports();
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<(String, u16)> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) => (name.clone(), port_of(i)),
            #[cfg(unix)]
            Host::Unix(dir) => (dir.display().to_string(), port_of(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| (a.to_string(), port_of(i)))
            .collect();
    }
    let user = config.get_user().unwrap_or_default().to_string();
    // PostgreSQL's own default: the database named like the user.
    let database = config.get_dbname().unwrap_or(&user).to_string();
    let (host, port) = hosts.first().cloned().unwrap_or(("localhost".into(), 5432));
    errors::Target {
        server: hosts
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(","),
        create: format!("createdb -h {host} -p {port} -U {user} {database}"),
        database,
        user,
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// brings its schema to [`SCHEMA_VERSION`] and starts the writer. A
    /// server that cannot be reached, a missing database or a refused user
    /// is a [`ConnectError`] (inside [`StoreError::Backend`]) naming the
    /// server and what to do; a schema from a newer muster is
    /// [`StoreError::Corrupt`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (config, target) = config_from(url).map_err(|e| StoreError::Backend(Box::new(e)))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(StoreError::backend)?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(Box::new(errors::connect_error(e, &target))))?;
        schema::migrate(&mut client).await?;
        drop(client);
        let (writer, jobs) = mpsc::unbounded_channel();
        let health = Arc::new(WriteHealth::new());
        let daemon_id: Arc<str> =
            format!("d-{}", ulid::Ulid::new().to_string().to_lowercase()).into();
        tokio::spawn(batch::writer_loop(
            pool.clone(),
            jobs,
            health.clone(),
            daemon_id.clone(),
        ));
        let (notify, notified) = watch::channel(0);
        tokio::spawn(team::listen(config.clone(), notify));
        Ok(PostgresStore {
            pool,
            writer,
            describe: format!("postgres://{}/{}", target.server, target.database),
            health,
            config,
            heartbeat: team::Heartbeat::new(daemon_id),
            leader: team::Leader::default(),
            notified,
        })
    }

    /// The database, as `postgres://host:port/database` (no user or password).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(errors::pool_error)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(self.load_at().await?.0)
    }

    fn submit(&self, changes: Vec<Change>) -> Commit {
        let (done, wait) = oneshot::channel();
        let sent = self.writer.send(Job::Apply {
            changes,
            done: Some(done),
            unhurried: false,
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Stopped)?;
            wait.await.map_err(|_| StoreError::Stopped)?
        })
    }

    fn apply_later(&self, changes: Vec<Change>) {
        if self
            .writer
            .send(Job::Apply {
                changes,
                done: None,
                unhurried: false,
            })
            .is_err()
        {
            tracing::warn!("store writer has stopped; a background write was dropped");
        }
    }

    async fn inbox(&self, query: InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        let client = self.client().await?;
        reads::inbox(&client, query).await
    }

    async fn message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let client = self.client().await?;
        reads::message(&client, id).await
    }

    async fn deliveries(&self, message_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        reads::deliveries(&client, message_id).await
    }

    async fn thread(&self, id: &str, reader: &str) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        reads::thread(&client, id, reader).await
    }

    async fn history(&self, query: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        reads::history(&client, query).await
    }

    async fn search(&self, query: SearchQuery) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        reads::search(&client, query).await
    }

    async fn prune(&self, cutoff: Millis) -> Result<PruneReport, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Job::Prune { cutoff, done })
            .map_err(|_| StoreError::Stopped)?;
        wait.await.map_err(|_| StoreError::Stopped)?
    }

    fn health(&self) -> Arc<WriteHealth> {
        self.health.clone()
    }
}

#[async_trait]
impl Shared for PostgresStore {
    fn daemon_id(&self) -> &str {
        &self.heartbeat.daemon_id
    }

    async fn load_at(&self) -> Result<(Snapshot, u64), StoreError> {
        let mut client = self.client().await?;
        reads::load(&mut client).await
    }

    async fn changes_after(&self, seq: u64, limit: usize) -> Result<Vec<Logged>, StoreError> {
        let client = self.client().await?;
        reads::changes_after(&client, self.daemon_id(), seq, limit).await
    }

    fn notifications(&self) -> watch::Receiver<u64> {
        self.notified.clone()
    }

    async fn heartbeat(&self, linked: Vec<String>) -> Result<Vec<PeerLink>, StoreError> {
        let mut client = self.client().await?;
        self.heartbeat.beat(&mut client, linked).await
    }

    async fn lead(&self) -> bool {
        self.leader.lead(&self.config).await
    }

    async fn leave(&self) {
        self.leader.resign().await;
        match self.client().await {
            Ok(client) => {
                if let Err(e) = self.heartbeat.leave(&client).await {
                    tracing::warn!("could not remove this daemon's heartbeat: {e}");
                }
            }
            Err(e) => tracing::warn!("could not remove this daemon's heartbeat: {e}"),
        }
    }
}
