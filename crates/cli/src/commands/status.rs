//! `muster status`: what the daemon reports about itself.

use std::time::Duration;

use muster_core::api::Status;
use muster_core::duration::format_duration;
use muster_core::Millis;

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, ago, clean};

pub async fn run(ctx: &Context) -> Result<i32, ClientError> {
    let client = ctx.client()?;
    let value = client.get("/api/v1/status", &[]).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let status: Status = decode(value, "status")?;
    // The address that answered: of a team's several, the one this is about.
    output::emit(&render(&status, client.base(), output::now_millis()));
    Ok(0)
}

fn dur(ms: Millis) -> String {
    format_duration(Duration::from_millis(ms.max(0) as u64))
}

pub fn render(s: &Status, url: &str, now: Millis) -> String {
    let rows = [
        ("started", ago(s.started_at, now)),
        (
            "store",
            format!("{} ({})", clean(&s.store, false), clean(&s.data_dir, false)),
        ),
        ("operator", clean(&s.operator, false)),
        (
            "sessions",
            format!(
                "{} on the roster, {} known",
                s.sessions_present, s.sessions_known
            ),
        ),
        ("unread", format!("{} deliveries", s.unread_deliveries)),
        (
            "liveness",
            format!(
                "stale-after {}, hook-backstop {}, sweep every {}, retention {}",
                dur(s.stale_after_ms),
                dur(s.hook_backstop_ms),
                dur(s.sweep_interval_ms),
                dur(s.retention_ms)
            ),
        ),
    ];
    let mut out = format!(
        "muster daemon {} (API {}) at {url}\n",
        clean(&s.version, false),
        s.api_version
    );
    for (key, value) in rows {
        out.push_str(&format!("  {key:<9} {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_as_labelled_lines() {
        // Proves the status summary shows version, counts and the liveness policy in the CLI's duration units.
        let status = Status {
            version: "0.1.0".into(),
            api_version: 1,
            started_at: 0,
            store: "sqlite".into(),
            data_dir: "/d".into(),
            operator: "alice".into(),
            sessions_present: 2,
            sessions_known: 5,
            unread_deliveries: 1,
            stale_after_ms: 60_000,
            hook_backstop_ms: 3_600_000,
            sweep_interval_ms: 3_000,
            retention_ms: 30 * 86_400_000,
        };
        let text = render(&status, "http://127.0.0.1:7420", 720_000);
        assert!(text.starts_with("muster daemon 0.1.0 (API 1) at http://127.0.0.1:7420\n"));
        assert!(text.contains("  started   12m ago\n"));
        assert!(text.contains("  sessions  2 on the roster, 5 known\n"));
        assert!(
            text.contains("stale-after 1m, hook-backstop 1h, sweep every 3s, retention 30d"),
            "{text}"
        );
    }
}
