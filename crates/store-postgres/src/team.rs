//! What several daemons on one database share beyond the tables
//! ([`muster_store::shared`]): the listener that hears of new change-log
//! entries, the heartbeat with each daemon's links, and the sweep leader.
//! Each runs on a connection of its own, outside the pool: a `LISTEN` and
//! a session advisory lock belong to one connection for its whole life.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use muster_core::Millis;
use muster_store::shared::PeerLink;
use muster_store::StoreError;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::errors::db_error;

/// The channel every writer notifies at commit (see `writes::LOG`).
pub const CHANNEL: &str = "muster_changes";

/// The session advisory lock the sweep leader holds ("muster sweep").
const SWEEP_LOCK: i64 = 0x6d75_7374_7377_6570;

/// A daemon whose heartbeat is older than this is forgotten, with its links.
const FORGET_DAEMON_AFTER_MS: Millis = 3_600_000;

/// Waits between attempts to reconnect the listener, doubling to the last.
const RECONNECT: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// The database's clock in ms since the epoch, as SQL.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// A connection of its own, driven by a task of its own; notifications it
/// receives go to `notified`.
async fn connect(
    config: &Config,
    notified: Option<watch::Sender<u64>>,
) -> Result<Client, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(n) = &notified {
                        n.send_modify(|count| *count += 1);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("a team connection ended: {e}");
                    return;
                }
            }
        }
    });
    Ok(client)
}

/// Listens for new change-log entries until nobody watches `notified`,
/// reconnecting when the connection is lost. Every (re)connection counts
/// as a notification too: entries logged while it was down were missed.
pub async fn listen(config: Config, notified: watch::Sender<u64>) {
    let mut failures = 0usize;
    while !notified.is_closed() {
        match listen_once(&config, &notified).await {
            Ok(client) => {
                failures = 0;
                notified.send_modify(|count| *count += 1);
                // The connection's task ends with the connection.
                while !client.is_closed() && !notified.is_closed() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for other daemons' changes: {e}");
                failures += 1;
            }
        }
        let wait = RECONNECT[failures.min(RECONNECT.len() - 1)];
        tokio::time::sleep(wait).await;
    }
}

async fn listen_once(
    config: &Config,
    notified: &watch::Sender<u64>,
) -> Result<Client, tokio_postgres::Error> {
    let client = connect(config, Some(notified.clone())).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(client)
}

/// This daemon's heartbeat: its row in `daemons` and its rows in `links`,
/// written as differences from what it last wrote.
pub struct Heartbeat {
    pub daemon_id: Arc<str>,
    /// The links last written; `None` before the first write and after a
    /// failed one (the next rewrites them all).
    written: Mutex<Option<HashSet<String>>>,
}

impl Heartbeat {
    pub fn new(daemon_id: Arc<str>) -> Self {
        Heartbeat {
            daemon_id,
            written: Mutex::new(None),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Option<HashSet<String>>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One beat on `client`: this daemon alive with `linked`; answers the
    /// other daemons' links.
    pub async fn beat(
        &self,
        client: &mut Client,
        linked: Vec<String>,
    ) -> Result<Vec<PeerLink>, StoreError> {
        let now: HashSet<String> = linked.into_iter().collect();
        let before = self.written().take();
        let result = self.write(client, before.as_ref(), &now).await;
        if result.is_ok() {
            *self.written() = Some(now);
        }
        result
    }

    async fn write(
        &self,
        client: &mut Client,
        before: Option<&HashSet<String>>,
        now: &HashSet<String>,
    ) -> Result<Vec<PeerLink>, StoreError> {
        let id = &*self.daemon_id;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute(
            &format!(
                "INSERT INTO daemons (id, started_at, heartbeat_at) VALUES ($1, {DB_NOW_MS}, {DB_NOW_MS})
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
            ),
            &[&id],
        )
        .await
        .map_err(db_error)?;
        let (gone, new): (Vec<&String>, Vec<&String>) = match before {
            Some(before) => (
                before.difference(now).collect(),
                now.difference(before).collect(),
            ),
            None => {
                tx.execute("DELETE FROM links WHERE daemon_id = $1", &[&id])
                    .await
                    .map_err(db_error)?;
                (Vec::new(), now.iter().collect())
            }
        };
        if !gone.is_empty() {
            tx.execute(
                "DELETE FROM links WHERE daemon_id = $1 AND session_id = ANY($2)",
                &[&id, &gone],
            )
            .await
            .map_err(db_error)?;
        }
        if !new.is_empty() {
            tx.execute(
                "INSERT INTO links (daemon_id, session_id) SELECT $1, unnest($2::text[])
                 ON CONFLICT DO NOTHING",
                &[&id, &new],
            )
            .await
            .map_err(db_error)?;
        }
        tx.execute(
            &format!("DELETE FROM daemons WHERE heartbeat_at < {DB_NOW_MS} - $1"),
            &[&FORGET_DAEMON_AFTER_MS],
        )
        .await
        .map_err(db_error)?;
        let peers = tx
            .query(
                &format!(
                    "SELECT l.session_id, l.daemon_id, {DB_NOW_MS} - d.heartbeat_at
                     FROM links l JOIN daemons d ON d.id = l.daemon_id WHERE d.id <> $1"
                ),
                &[&id],
            )
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        peers
            .iter()
            .map(|row| {
                Ok(PeerLink {
                    session_id: row.try_get(0).map_err(crate::errors::corrupt)?,
                    daemon: row.try_get(1).map_err(crate::errors::corrupt)?,
                    heartbeat_age_ms: row.try_get(2).map_err(crate::errors::corrupt)?,
                })
            })
            .collect()
    }

    /// Removes this daemon and its links (a clean stop).
    pub async fn leave(&self, client: &Client) -> Result<(), StoreError> {
        client
            .execute("DELETE FROM daemons WHERE id = $1", &[&&*self.daemon_id])
            .await
            .map_err(db_error)?;
        *self.written() = None;
        Ok(())
    }
}

/// The sweep leader's lock, on a connection of its own: held while that
/// connection lives.
#[derive(Default)]
pub struct Leader {
    client: tokio::sync::Mutex<Option<(Client, bool)>>,
}

impl Leader {
    /// Whether this daemon leads now, taking the lead if it is free.
    pub async fn lead(&self, config: &Config) -> bool {
        let mut held = self.client.lock().await;
        if held.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            *held = None;
        }
        if held.is_none() {
            match connect(config, None).await {
                Ok(client) => *held = Some((client, false)),
                Err(e) => {
                    tracing::warn!("cannot reach the database to lead the sweep: {e}");
                    return false;
                }
            }
        }
        let Some((client, leading)) = held.as_mut() else {
            return false;
        };
        if *leading {
            return true;
        }
        match client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
            .await
            .and_then(|row| row.try_get::<_, bool>(0))
        {
            Ok(got) => {
                *leading = got;
                got
            }
            Err(e) => {
                tracing::warn!("cannot take the sweep's lead: {e}");
                *held = None;
                false
            }
        }
    }

    /// Gives the lead up (a clean stop).
    pub async fn resign(&self) {
        *self.client.lock().await = None;
    }
}
