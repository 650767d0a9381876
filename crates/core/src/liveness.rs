//! The liveness decision: which sessions leave the roster. A pure function of
//! a snapshot and a clock; the daemon's sweeper feeds it and acts on it.
//!
//! Two kinds of session, two rules:
//! - **linked** (a shim link is or was attached): live while the link is up;
//!   after it drops, a grace window (`stale_after`) covers reconnects. The
//!   window is measured on the daemon's monotonic clock and kept in memory,
//!   so a daemon restart gives every reloaded linked session a fresh window.
//! - **hook-only**: live while the persisted wall-clock `last_seen_at` is
//!   within `hook_backstop`; every hook call refreshes it.

use crate::{LinkKind, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Grace after a link drops (default 60 s).
    pub stale_after_ms: Millis,
    /// How long a hook-only session lives without a hook call (default 60 min).
    pub hook_backstop_ms: Millis,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stale_after_ms: 60_000,
            hook_backstop_ms: 60 * 60_000,
        }
    }
}

/// The two clocks a decision reads: wall time for persisted timestamps,
/// monotonic time for in-memory windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub wall: Millis,
    pub mono: Millis,
}

/// What the sweeper knows of one session on the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub link: LinkKind,
    /// A shim link to this session is up right now.
    pub link_up: bool,
    /// Monotonic time the link went down, or the daemon started if it was
    /// down when the session was loaded.
    pub link_down_since: Millis,
    /// Wall-clock time of the last hook call or link activity.
    pub last_seen_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A linked session whose link stayed down past the grace window.
    LinkLost,
    /// A hook-only session silent past the backstop.
    HookBackstop,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LinkLost => "link-lost",
            Reason::HookBackstop => "hook-backstop",
        }
    }
}

/// Whether one session is to be swept now, and why.
pub fn decide(policy: &Policy, obs: &Observation, clock: Clock) -> Option<Reason> {
    match obs.link {
        LinkKind::Link => {
            if obs.link_up {
                return None;
            }
            // A hook call inside the window also shows the session is alive
            // (its shim may be restarting while the harness goes on).
            let heard_recently =
                clock.wall.saturating_sub(obs.last_seen_at) < policy.stale_after_ms;
            let in_grace = clock.mono.saturating_sub(obs.link_down_since) < policy.stale_after_ms;
            (!in_grace && !heard_recently).then_some(Reason::LinkLost)
        }
        LinkKind::Hooks => {
            let silent_for = clock.wall.saturating_sub(obs.last_seen_at);
            (silent_for >= policy.hook_backstop_ms).then_some(Reason::HookBackstop)
        }
    }
}

/// The sessions to sweep from a snapshot. Returns nothing until the daemon
/// knows which links are live: before that, every linked session would look dead.
pub fn sweep<'a, K: Clone + 'a>(
    policy: &Policy,
    snapshot: impl IntoIterator<Item = (&'a K, Observation)>,
    clock: Clock,
    links_known: bool,
) -> Vec<(K, Reason)> {
    if !links_known {
        return Vec::new();
    }
    snapshot
        .into_iter()
        .filter_map(|(key, obs)| decide(policy, &obs, clock).map(|r| (key.clone(), r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        stale_after_ms: 60_000,
        hook_backstop_ms: 3_600_000,
    };

    fn hooks(last_seen_at: Millis) -> Observation {
        Observation {
            link: LinkKind::Hooks,
            link_up: false,
            link_down_since: 0,
            last_seen_at,
        }
    }
    fn linked(up: bool, down_since: Millis, last_seen_at: Millis) -> Observation {
        Observation {
            link: LinkKind::Link,
            link_up: up,
            link_down_since: down_since,
            last_seen_at,
        }
    }
    fn at(wall: Millis, mono: Millis) -> Clock {
        Clock { wall, mono }
    }

    #[test]
    fn hook_only_lives_until_the_backstop() {
        let t0 = 1_700_000_000_000;
        assert_eq!(decide(&P, &hooks(t0), at(t0 + 3_599_999, 0)), None);
        assert_eq!(
            decide(&P, &hooks(t0), at(t0 + 3_600_000, 0)),
            Some(Reason::HookBackstop)
        );
    }

    #[test]
    fn hook_only_backstop_is_wall_clock_so_it_survives_restarts() {
        // Monotonic time restarting at 0 does not reset a hook-only session.
        let t0 = 1_700_000_000_000;
        assert_eq!(
            decide(&P, &hooks(t0), at(t0 + 4_000_000, 0)),
            Some(Reason::HookBackstop)
        );
    }

    #[test]
    fn linked_lives_while_up_however_old_its_last_seen() {
        assert_eq!(
            decide(&P, &linked(true, 0, 0), at(10_000_000_000, 10_000_000)),
            None
        );
    }

    #[test]
    fn linked_gets_grace_after_drop() {
        let wall = 1_700_000_000_000;
        let o = linked(false, 1_000, wall - 10_000_000);
        assert_eq!(decide(&P, &o, at(wall, 60_999)), None);
        assert_eq!(decide(&P, &o, at(wall, 61_000)), Some(Reason::LinkLost));
    }

    #[test]
    fn reloaded_linked_session_gets_fresh_window() {
        // After a restart the daemon sets link_down_since to its own start
        // (mono 0): a session last seen hours ago still gets the full window.
        let wall = 1_700_000_000_000;
        let o = linked(false, 0, wall - 5 * 3_600_000);
        assert_eq!(decide(&P, &o, at(wall, 59_000)), None);
        assert_eq!(
            decide(&P, &o, at(wall + 60_000, 60_000)),
            Some(Reason::LinkLost)
        );
    }

    #[test]
    fn linked_session_heard_by_hook_recently_is_kept() {
        let wall = 1_700_000_000_000;
        let o = linked(false, 0, wall - 1_000);
        assert_eq!(decide(&P, &o, at(wall, 500_000)), None);
    }

    #[test]
    fn no_decisions_before_links_are_known() {
        let obs = [
            ("a".to_string(), linked(false, 0, 0)),
            ("b".to_string(), hooks(0)),
        ];
        let clock = at(10_000_000_000, 10_000_000_000);
        let view = obs.iter().map(|(k, o)| (k, *o));
        assert!(sweep(&P, view, clock, false).is_empty());
        let view = obs.iter().map(|(k, o)| (k, *o));
        assert_eq!(sweep(&P, view, clock, true).len(), 2);
    }
}
