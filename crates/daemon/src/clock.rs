//! The daemon's two clocks: wall time for what is persisted, monotonic time
//! (since daemon start) for in-memory windows that restart with the daemon.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use muster_core::liveness;
use muster_core::Millis;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            started: Instant::now(),
        }
    }

    pub fn wall(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }

    pub fn mono(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }

    pub fn now(&self) -> liveness::Clock {
        liveness::Clock {
            wall: self.wall(),
            mono: self.mono(),
        }
    }
}
