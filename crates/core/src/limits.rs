//! Bounds on every input. Changing one here changes it for the daemon, the
//! CLI and the tests alike.

/// Largest HTTP request body the daemon reads (1 MiB); larger gets 413.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest message body, in characters. Chosen so one message always fits
/// whole inside the hook budget below.
pub const MAX_BODY_CHARS: usize = 6_000;
/// Largest message body as an agent sees it: escaped (`<` is `&lt;`) and
/// JSON-encoded. With the frame around it this stays under the hook budget.
pub const MAX_RENDERED_BODY_CHARS: usize = 7_000;
/// Longest session id a harness may give us.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Longest room, operator or nickname.
pub const MAX_NAME_LEN: usize = 64;
/// Longest status text.
pub const MAX_STATUS_CHARS: usize = 200;
/// Longest free-text session field (cwd, host, harness, branch…).
pub const MAX_FIELD_CHARS: usize = 4_096;
/// Hook context budget in characters. Claude Code replaces hook output over
/// 10,000 characters with a file reference; we stay well under it, JSON
/// escaping included.
pub const HOOK_CONTEXT_BUDGET: usize = 8_000;
/// Shortest id prefix accepted as an address, so "a" never matches by luck.
pub const MIN_ID_PREFIX: usize = 4;

/// Sends (direct and room) one session may make: a burst of this many,
/// refilled at this many per second. An agent sends a few a minute; the
/// defaults sit above what muster-bench's throughput runs drive through one
/// session or connection (a serial sender makes about 3,000 sends a second,
/// the hooks bench about 1,200 hook calls per session and 9,000 per
/// connection), with room for a machine twice as fast.
pub const DEFAULT_SEND_RATE: Rate = Rate::new(10_000, 10_000);
/// Hook calls one session may make.
pub const DEFAULT_HOOK_RATE: Rate = Rate::new(10_000, 10_000);
/// Sends and hook calls one connection may carry, whatever sessions they name.
pub const DEFAULT_CONNECTION_RATE: Rate = Rate::new(50_000, 50_000);
/// Connections the daemon holds open at once (TCP and Unix socket together);
/// one more is answered 503 and closed. Each linked agent holds one, and a
/// team daemon holds ten thousand agents (`muster serve` lowers the cap to
/// what its open-file limit allows).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// How long a connection may take to send a request's headers, and how long
/// a kept-alive connection may sit idle waiting for its next request, in ms.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// How long a request's body may take to arrive once its headers did, in ms.
pub const BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// Largest WebSocket message (and frame) a shim may send on its link.
pub const DEFAULT_MAX_LINK_FRAME_BYTES: usize = 1 << 20;
/// Frames waiting on one link for its writer. A shim that stops reading
/// fills it and then is dropped; nothing past it is held for it.
pub const DEFAULT_LINK_QUEUE: usize = 256;
/// How long one frame may take to be written to a shim before the link
/// counts as stuck (the shim stopped reading) and is dropped, in ms.
pub const DEFAULT_LINK_STALL_MS: u64 = 10_000;
/// A 429 is answered after its retry time, or this long if that is
/// sooner (in ms): a client that retries at once, as a runaway loop does,
/// then sends a few requests a second per connection instead of thousands
/// of refusals, while one that waits as told loses nothing.
pub const RATE_LIMITED_HOLD_MS: u64 = 250;
/// Rate buckets kept per kind; past this, full (idle) buckets are forgotten.
pub const MAX_RATE_KEYS: usize = 16_384;

/// A rate limit: a burst of `burst` at once, refilled at `per_sec` a second.
/// `per_sec` 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_sec: u32, burst: u32) -> Self {
        Rate { per_sec, burst }
    }

    /// No limit at all.
    pub const UNLIMITED: Rate = Rate::new(0, 0);

    pub fn is_unlimited(&self) -> bool {
        self.per_sec == 0
    }

    /// Reads `N/s` or `N/s,B` (burst B; default N), or `off`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Rate::UNLIMITED);
        }
        let (rate, burst) = match text.split_once(',') {
            Some((r, b)) => (r.trim(), Some(b.trim())),
            None => (text, None),
        };
        let bad =
            || format!("{text:?} is not a rate: write N/s or N/s,BURST (e.g. 100/s,200), or off");
        let per_sec: u32 = rate
            .strip_suffix("/s")
            .ok_or_else(bad)?
            .trim()
            .parse()
            .map_err(|_| bad())?;
        let burst: u32 = match burst {
            Some(b) => b.parse().map_err(|_| bad())?,
            None => per_sec,
        };
        if per_sec == 0 || burst == 0 {
            return Err(format!(
                "{text:?}: a rate and its burst are at least 1 (or write off)"
            ));
        }
        Ok(Rate::new(per_sec, burst))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unlimited() {
            write!(f, "off")
        } else {
            write!(f, "{}/s,{}", self.per_sec, self.burst)
        }
    }
}

/// A token bucket, in thousandths of a token so refills are exact integers.
/// Pure: the time comes in as a monotonic `Millis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    milli: u64,
    at: crate::Millis,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: Rate, now: crate::Millis) -> Self {
        TokenBucket {
            milli: u64::from(rate.burst) * 1_000,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: crate::Millis) {
        let elapsed = now.saturating_sub(self.at).max(0) as u64;
        let cap = u64::from(rate.burst) * 1_000;
        self.milli = cap.min(
            self.milli
                .saturating_add(elapsed.saturating_mul(u64::from(rate.per_sec))),
        );
        self.at = self.at.max(now);
    }

    /// Takes one token, or says in how many ms one will be there.
    pub fn take(&mut self, rate: Rate, now: crate::Millis) -> Result<(), u64> {
        if rate.is_unlimited() {
            return Ok(());
        }
        self.refill(rate, now);
        if self.milli >= 1_000 {
            self.milli -= 1_000;
            return Ok(());
        }
        let short = 1_000 - self.milli;
        Err(short.div_ceil(u64::from(rate.per_sec)))
    }

    /// Whether the bucket is back to full by `now` (nothing to remember).
    pub fn is_full(&self, rate: Rate, now: crate::Millis) -> bool {
        let mut b = self.clone();
        b.refill(rate, now);
        b.milli >= u64::from(rate.burst) * 1_000
    }
}

/// One token bucket per key (a session id, a sender), bounded in size: past
/// `MAX_RATE_KEYS` the buckets that are full again are forgotten, and if
/// none is, a new key shares the refusal of being over the bound.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: std::collections::HashMap<String, TokenBucket>,
}

impl RateLimiter {
    /// Takes one token from `key`'s bucket, or says in how many ms to retry.
    pub fn take(&mut self, key: &str, rate: Rate, now: crate::Millis) -> Result<(), u64> {
        if rate.is_unlimited() {
            return Ok(());
        }
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(rate, now);
        }
        if self.buckets.len() >= MAX_RATE_KEYS {
            self.buckets.retain(|_, b| !b.is_full(rate, now));
            if self.buckets.len() >= MAX_RATE_KEYS {
                // Every remembered key is busy: a flood of made-up keys.
                return Err(1_000 / u64::from(rate.per_sec).max(1) + 1);
            }
        }
        let mut bucket = TokenBucket::full(rate, now);
        let taken = bucket.take(rate, now);
        self.buckets.insert(key.to_string(), bucket);
        taken
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_one_per_refill() {
        // Proves the exact arithmetic: burst 3 at 2/s, then 500 ms per token.
        let rate = Rate::new(2, 3);
        let mut b = TokenBucket::full(rate, 1_000);
        for _ in 0..3 {
            assert_eq!(b.take(rate, 1_000), Ok(()));
        }
        assert_eq!(b.take(rate, 1_000), Err(500));
        assert_eq!(b.take(rate, 1_200), Err(300));
        assert_eq!(b.take(rate, 1_500), Ok(()));
        assert_eq!(b.take(rate, 1_500), Err(500));
        // Never more than the burst, however long it rested.
        assert!(b.is_full(rate, 100_000));
        assert!(Rate::UNLIMITED.is_unlimited());
        assert_eq!(b.take(Rate::UNLIMITED, 0), Ok(()));
    }

    #[test]
    fn the_limiter_forgets_idle_keys_and_stays_bounded() {
        let rate = Rate::new(1, 1);
        let mut l = RateLimiter::default();
        for i in 0..MAX_RATE_KEYS {
            assert_eq!(l.take(&format!("k{i}"), rate, 0), Ok(()));
        }
        assert_eq!(l.take("new", rate, 0), Err(1_001), "every key busy");
        assert_eq!(l.len(), MAX_RATE_KEYS);
        // A second later every bucket is full again: forgotten for the new one.
        assert_eq!(l.take("new", rate, 1_000), Ok(()));
        assert_eq!(l.len(), 1);
        assert_eq!(l.take("new", rate, 1_000), Err(1_000));
    }

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("100/s"), Ok(Rate::new(100, 100)));
        assert_eq!(Rate::parse("100/s,250"), Ok(Rate::new(100, 250)));
        assert_eq!(Rate::parse("off"), Ok(Rate::UNLIMITED));
        for bad in ["100", "0/s", "x/s", "5/s,0", "5/m"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::new(5, 9).to_string(), "5/s,9");
    }
}
