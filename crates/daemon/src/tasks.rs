//! Background work: the sweeper and the retention pruner, each beating on
//! the daemon's clock (a test's manual clock drives them).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hub::Hub;

/// Retention is enforced this often (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

pub fn spawn(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let sweeper = {
        let hub = hub.clone();
        let mut stop = stop.clone();
        async move {
            let beat = hub.config.sweep_interval.max(Duration::from_millis(10));
            loop {
                hub.sweep_once().await;
                tokio::select! {
                    _ = hub.clock.sleep(beat) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    let pruner = async move {
        loop {
            match hub.prune_once().await {
                Ok(r) if r.messages + r.sessions > 0 => tracing::info!(
                    messages = r.messages,
                    deliveries = r.deliveries,
                    sessions = r.sessions,
                    "retention pruned"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("retention prune failed: {e}"),
            }
            tokio::select! {
                _ = hub.clock.sleep(PRUNE_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    };
    tokio::spawn(async move {
        tokio::join!(sweeper, pruner);
    })
}
