//! The daemon's two clocks: wall time for what is persisted, monotonic time
//! (since daemon start) for in-memory windows that restart with the daemon.
//!
//! Every decision that depends on time reads this clock, and every wait
//! for time to pass (the sweeper's beat, retention, a wake's cooldown)
//! sleeps on it. A daemon normally runs on the system clock; a test gives
//! it a [`ManualClock`] and moves time itself, so nothing in a test of the
//! daemon's semantics has to sleep for time to pass.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use muster_core::liveness;
use muster_core::Millis;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub enum Clock {
    /// The system's clocks: wall time, and an `Instant` since start.
    System { started: Instant },
    /// Time that moves only when a test moves it.
    Manual(Arc<ManualClock>),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Self {
        Clock::System {
            started: Instant::now(),
        }
    }

    pub fn wall(&self) -> Millis {
        match self {
            Clock::System { .. } => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as Millis)
                .unwrap_or(0),
            Clock::Manual(m) => m.wall.load(Ordering::SeqCst),
        }
    }

    pub fn mono(&self) -> Millis {
        match self {
            Clock::System { started } => started.elapsed().as_millis() as Millis,
            Clock::Manual(m) => m.mono.load(Ordering::SeqCst),
        }
    }

    pub fn now(&self) -> liveness::Clock {
        liveness::Clock {
            wall: self.wall(),
            mono: self.mono(),
        }
    }

    /// Waits until `wait` of this clock's monotonic time has passed.
    pub async fn sleep(&self, wait: Duration) {
        self.sleep_until(self.mono() + wait.as_millis() as Millis)
            .await
    }

    /// Waits until this clock's monotonic time reaches `until`. A caller
    /// that schedules something fixes its deadline when it schedules, so a
    /// sleep that starts late still ends on time.
    pub async fn sleep_until(&self, until: Millis) {
        match self {
            Clock::System { .. } => {
                let wait = (until - self.mono()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await
            }
            Clock::Manual(m) => {
                loop {
                    // Registered before the check, so a move between the
                    // check and the wait still wakes us.
                    let moved = m.moved.notified();
                    if m.mono.load(Ordering::SeqCst) >= until {
                        return;
                    }
                    moved.await;
                }
            }
        }
    }
}

/// A clock for tests: starts at the given wall time and monotonic zero, and
/// moves only by [`ManualClock::advance`] (both clocks) or
/// [`ManualClock::step_wall`] (the wall clock alone, as when the system
/// time is set).
#[derive(Debug)]
pub struct ManualClock {
    wall: AtomicI64,
    mono: AtomicI64,
    moved: Notify,
}

impl ManualClock {
    pub fn new(wall: Millis) -> Arc<Self> {
        Arc::new(ManualClock {
            wall: AtomicI64::new(wall),
            mono: AtomicI64::new(0),
            moved: Notify::new(),
        })
    }

    /// Time passes: both clocks move forward by `by`, and whatever sleeps on
    /// this clock past its deadline wakes.
    pub fn advance(&self, by: Duration) {
        let ms = by.as_millis() as Millis;
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.mono.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// The wall clock is set forward (positive) or back (negative) by `ms`;
    /// monotonic time does not move.
    pub fn step_wall(&self, ms: Millis) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_exactly_when_time_is_moved_past_it() {
        let manual = ManualClock::new(1_000);
        let clock = Clock::Manual(manual.clone());
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_millis(500)).await }
        });
        tokio::task::yield_now().await;
        manual.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "499 ms of 500 have passed");
        manual.step_wall(10_000);
        tokio::task::yield_now().await;
        assert!(
            !sleeper.is_finished(),
            "a wall-clock step is no time passing"
        );
        manual.advance(Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("the sleep ended")
            .unwrap();
        assert_eq!((clock.wall(), clock.mono()), (11_500, 500));
    }
}
