//! Background work: the sweeper and the retention pruner.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hub::Hub;

/// Retention is enforced this often (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub fn spawn(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sweep =
            tokio::time::interval(hub.config.sweep_interval.max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = sweep.tick() => { hub.sweep_once().await; }
                _ = prune.tick() => match hub.prune_once().await {
                    Ok(r) if r.messages + r.sessions > 0 => tracing::info!(
                        messages = r.messages, deliveries = r.deliveries, sessions = r.sessions, "retention pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("retention prune failed: {e}"),
                },
                _ = stop.changed() => break,
            }
        }
    })
}
