//! Counters for `/metrics`, rendered in Prometheus text format by hand: a
//! handful of atomics needs no metrics framework.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use muster_core::liveness::Reason;
use muster_core::protocol::HookEvent;
use muster_store::health::WriteHealth;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How many of something are in progress now.
#[derive(Default)]
pub struct InProgress(AtomicU64);

/// One in progress, for as long as it lives.
pub struct Underway<'a>(&'a InProgress);

impl InProgress {
    pub fn start(&self) -> Underway<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Underway(self)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// One more in progress, for an owner that cannot hold an [`Underway`].
    pub fn enter(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn leave(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Underway<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upper bounds of the hook latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Metrics {
    pub messages_sent: Counter,
    pub deliveries_queued: Counter,
    pub deliveries_surfaced: Counter,
    pub deliveries_pushed: Counter,
    pub deliveries_seen: Counter,
    /// Mail put into a running turn (mid-turn) or holding one at its stop.
    pub deliveries_mid_turn: Counter,
    pub stops_held: Counter,
    pub wakes: Counter,
    pub sessions_joined: Counter,
    pub sessions_left: Counter,
    pub sweeps: Counter,
    /// `wait_for_message` calls waiting for mail now.
    pub mail_waits: InProgress,
    /// Connections accepted, by listener.
    pub tcp_connections: Counter,
    pub unix_connections: Counter,
    /// Connections answered 503 and closed: the cap was reached.
    pub connections_refused: Counter,
    /// Connections open now (TCP and Unix socket).
    pub connections_open: InProgress,
    /// Requests refused 429, by which limit.
    pub rate_limited_sends: Counter,
    pub rate_limited_hooks: Counter,
    pub rate_limited_connections: Counter,
    /// Links dropped because a frame could not be written in time (the
    /// shim stopped reading) or a frame was over the size limit.
    pub links_stalled: Counter,
    pub links_oversized: Counter,
    swept_link_lost: Counter,
    swept_hook_backstop: Counter,
    hooks: [Histogram; HookEvent::ALL.len()],
    /// The store's write health (its errors by kind, whether degraded).
    store: Arc<WriteHealth>,
}

/// Gauges read from state at scrape time.
pub struct Gauges {
    pub sessions_present: usize,
    pub sessions_known: usize,
    pub links: usize,
    pub unread: usize,
    /// Clients following `/api/v1/events`.
    pub event_streams: usize,
    /// Frames waiting for a link's writer, summed over links and the most on one.
    pub link_queued: usize,
    pub link_queued_max: usize,
}

impl Metrics {
    /// The metrics of a daemon over a store with this write health.
    pub fn for_store(store: Arc<WriteHealth>) -> Self {
        Metrics {
            store,
            ..Metrics::default()
        }
    }

    /// The store's write health, as `/healthz` and the hooks read it.
    pub fn store(&self) -> &WriteHealth {
        &self.store
    }

    pub fn swept(&self, reason: Reason) {
        match reason {
            Reason::LinkLost => self.swept_link_lost.inc(),
            Reason::HookBackstop => self.swept_hook_backstop.inc(),
        }
    }

    pub fn hook_latency(&self, event: HookEvent, d: Duration) {
        if let Some(i) = HookEvent::ALL.iter().position(|e| *e == event) {
            self.hooks[i].observe(d);
        }
    }

    /// Every metric, in Prometheus text format.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        render_gauges(&mut out, g);
        let name = "muster_mail_waits";
        let _ = writeln!(
            out,
            "# HELP {name} wait_for_message calls waiting for mail now.\n# TYPE {name} gauge\n{name} {}",
            self.mail_waits.get()
        );
        let name = "muster_store_degraded";
        let _ = writeln!(
            out,
            "# HELP {name} 1 while the store's most recent write failed (see /healthz), else 0.\n# TYPE {name} gauge\n{name} {}",
            u8::from(self.store.is_degraded())
        );
        let name = "muster_connections_open";
        let _ = writeln!(
            out,
            "# HELP {name} Connections open now.\n# TYPE {name} gauge\n{name} {}",
            self.connections_open.get()
        );
        self.render_counters(&mut out);
        self.render_hook_latency(&mut out);
        out
    }

    fn render_counters(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, labels: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (label, v) in labels {
                let _ = writeln!(out, "{name}{label} {v}");
            }
        };
        counter(
            "muster_messages_sent_total",
            "Messages stored.",
            &[("", self.messages_sent.get())],
        );
        counter(
            "muster_deliveries_total",
            "Deliveries by the state they reached.",
            &[
                ("{state=\"queued\"}", self.deliveries_queued.get()),
                ("{state=\"pushed\"}", self.deliveries_pushed.get()),
                ("{state=\"surfaced\"}", self.deliveries_surfaced.get()),
                ("{state=\"seen\"}", self.deliveries_seen.get()),
            ],
        );
        counter(
            "muster_mid_turn_deliveries_total",
            "Messages put into a running turn after a tool result.",
            &[("", self.deliveries_mid_turn.get())],
        );
        counter(
            "muster_stops_held_total",
            "Turns kept going at their stop with unread mail.",
            &[("", self.stops_held.get())],
        );
        counter(
            "muster_wakes_total",
            "Turns started in idle sessions for their mail.",
            &[("", self.wakes.get())],
        );
        counter(
            "muster_sessions_joined_total",
            "Sessions that joined or returned.",
            &[("", self.sessions_joined.get())],
        );
        counter(
            "muster_sessions_left_total",
            "Sessions that left the roster.",
            &[("", self.sessions_left.get())],
        );
        counter(
            "muster_connections_total",
            "Connections accepted, by listener (links prefer the Unix socket).",
            &[
                ("{listener=\"tcp\"}", self.tcp_connections.get()),
                ("{listener=\"unix\"}", self.unix_connections.get()),
            ],
        );
        counter(
            "muster_connections_refused_total",
            "Connections answered 503 and closed because the connection cap was reached.",
            &[("", self.connections_refused.get())],
        );
        counter(
            "muster_rate_limited_total",
            "Requests refused 429, by the limit they were over.",
            &[
                ("{limit=\"send\"}", self.rate_limited_sends.get()),
                ("{limit=\"hook\"}", self.rate_limited_hooks.get()),
                (
                    "{limit=\"connection\"}",
                    self.rate_limited_connections.get(),
                ),
            ],
        );
        counter(
            "muster_links_dropped_total",
            "Links the daemon ended, by reason.",
            &[
                ("{reason=\"stalled\"}", self.links_stalled.get()),
                ("{reason=\"oversized-frame\"}", self.links_oversized.get()),
            ],
        );
        let store_errors: Vec<(String, u64)> = self
            .store
            .errors()
            .iter()
            .map(|(kind, n)| (format!("{{kind=\"{}\"}}", kind.as_str()), *n))
            .collect();
        let store_errors: Vec<(&str, u64)> =
            store_errors.iter().map(|(l, n)| (l.as_str(), *n)).collect();
        counter(
            "muster_store_errors_total",
            "Store write requests failed by a fault of the store (full disk, I/O, busy, connection, other), by kind.",
            &store_errors,
        );
        counter(
            "muster_sweeps_total",
            "Sweeper passes.",
            &[("", self.sweeps.get())],
        );
        counter(
            "muster_swept_sessions_total",
            "Sessions removed by the sweeper, by reason.",
            &[
                ("{reason=\"link-lost\"}", self.swept_link_lost.get()),
                ("{reason=\"hook-backstop\"}", self.swept_hook_backstop.get()),
            ],
        );
    }

    fn render_hook_latency(&self, out: &mut String) {
        let name = "muster_hook_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a hook call.\n# TYPE {name} histogram"
        );
        for (event, h) in HookEvent::ALL.iter().map(|e| e.as_str()).zip(&self.hooks) {
            let mut cumulative = 0;
            for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{event=\"{event}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{event=\"{event}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "{name}_sum{{event=\"{event}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{event=\"{event}\"}} {count}");
        }
    }
}

fn render_gauges(out: &mut String, g: &Gauges) {
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "muster_sessions",
        "Sessions on the roster.",
        g.sessions_present as u64,
    );
    gauge(
        "muster_sessions_known",
        "Sessions known, on the roster or away.",
        g.sessions_known as u64,
    );
    gauge("muster_links", "Shim links attached now.", g.links as u64);
    gauge(
        "muster_link_queued_frames",
        "Frames waiting for the links' writers, all links together.",
        g.link_queued as u64,
    );
    gauge(
        "muster_link_queued_frames_max",
        "Frames waiting for the writer of the fullest link.",
        g.link_queued_max as u64,
    );
    gauge(
        "muster_event_streams",
        "Clients following the event stream now.",
        g.event_streams as u64,
    );
    gauge(
        "muster_unread_deliveries",
        "Deliveries not yet surfaced or pushed.",
        g.unread as u64,
    );
}
