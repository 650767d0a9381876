//! `muster reserve`, `muster release`, `muster reservations`, `muster thread`.

use std::time::Duration;

use clap::Args;
use muster_core::api::{ReleaseRequest, ReleaseResponse, Reservations, ReserveRequest, Thread};
use muster_core::duration::parse_duration;
use muster_core::inbox::format_utc;
use muster_core::Millis;

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, clean, short_id, truncate, Table};

#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// Paths, directories (trailing /) or globs
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Act as this session (id, nickname or prefix) [default: $MUSTER_SESSION_ID, else $CLAUDE_CODE_SESSION_ID]
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
    /// Shared instead of exclusive (other shared holders may join)
    #[arg(long)]
    pub shared: bool,
    /// How long the claim lasts [default: 30m, at most 24h]
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub ttl: Option<Duration>,
    /// Why, shown to anyone refused
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Paths as reserved; none releases everything the session holds
    pub paths: Vec<String>,
    /// Act as this session (id, nickname or prefix)
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
}

#[derive(Debug, Args)]
pub struct ThreadArgs {
    /// Any message id in the thread
    pub message_id: String,
    /// Read as this session or op:<name>
    #[arg(long = "as", value_name = "SESSION")]
    pub as_: Option<String>,
}

/// Relative paths are the caller's, so they are made absolute here; the
/// daemon then resolves them against the session's repository.
fn absolute(paths: &[String]) -> Vec<String> {
    let cwd = std::env::current_dir().ok();
    paths
        .iter()
        .map(|p| match (&cwd, p.starts_with('/')) {
            (Some(cwd), false) => {
                let joined = format!("{}/{p}", cwd.display());
                if p.ends_with('/') && !joined.ends_with('/') {
                    format!("{joined}/")
                } else {
                    joined
                }
            }
            _ => p.clone(),
        })
        .collect()
}

pub async fn run_reserve(ctx: &Context, args: ReserveArgs) -> Result<i32, ClientError> {
    let request = ReserveRequest {
        as_: Some(ctx.acting_as(args.as_.as_deref())),
        paths: absolute(&args.paths),
        exclusive: !args.shared,
        ttl_s: args.ttl.map(|d| d.as_secs().max(1)),
        reason: args.reason,
    };
    let value = ctx.client()?.post("/api/v1/reservations", &request).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let granted: Reservations = decode(value, "reservations")?;
    for r in &granted.reservations {
        let kind = if r.reservation.exclusive {
            "exclusively"
        } else {
            "shared"
        };
        output::emit_line(&format!(
            "reserved {} {kind} until {}",
            clean(&r.reservation.pattern, false),
            format_utc(r.reservation.expires_at)
        ));
    }
    Ok(0)
}

pub async fn run_release(ctx: &Context, args: ReleaseArgs) -> Result<i32, ClientError> {
    let request = ReleaseRequest {
        as_: Some(ctx.acting_as(args.as_.as_deref())),
        paths: absolute(&args.paths),
    };
    let value = ctx
        .client()?
        .post("/api/v1/reservations/release", &request)
        .await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let released: ReleaseResponse = decode(value, "release")?;
    output::emit_line(&format!(
        "released {} reservation{}",
        released.released,
        if released.released == 1 { "" } else { "s" }
    ));
    Ok(0)
}

pub async fn run_list(ctx: &Context) -> Result<i32, ClientError> {
    let value = ctx.client()?.get("/api/v1/reservations", &[]).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let list: Reservations = decode(value, "reservations")?;
    output::emit(&render(&list, now()));
    Ok(0)
}

fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// `4m05s` left on a reservation (never negative).
pub fn time_left(expires_at: Millis, now: Millis) -> String {
    let left = (expires_at - now).max(0) / 1000;
    format!("{}m{:02}s", left / 60, left % 60)
}

pub fn render(list: &Reservations, now: Millis) -> String {
    if list.reservations.is_empty() {
        return "no reservations\n".to_string();
    }
    let mut table = Table::new(&["PATH", "HOLDER", "KIND", "EXPIRES", "REASON", "REPOSITORY"]);
    for r in &list.reservations {
        let res = &r.reservation;
        table.row(vec![
            truncate(&clean(&res.pattern, false), 50),
            format!(
                "{} ({})",
                clean(&r.nickname, false),
                short_id(&res.session_id)
            ),
            if res.exclusive { "exclusive" } else { "shared" }.to_string(),
            format!("in {}", time_left(res.expires_at, now)),
            truncate(&clean(&res.reason, false), 40),
            truncate(&clean(&res.root, false), 40),
        ]);
    }
    table.render()
}

pub async fn run_thread(ctx: &Context, args: ThreadArgs) -> Result<i32, ClientError> {
    let as_ = ctx.acting_as(args.as_.as_deref());
    let path = format!("/api/v1/messages/{}/thread", args.message_id);
    let value = ctx.client()?.get(&path, &[("as", as_)]).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let thread: Thread = decode(value, "thread")?;
    for m in &thread.messages {
        let reply = m
            .reply_to
            .as_deref()
            .map(|r| format!(" (reply to {r})"))
            .unwrap_or_default();
        output::emit_line(&format!(
            "{} {} from {}{reply}\n  {}",
            m.id,
            format_utc(m.sent_at),
            clean(&m.from_nickname, false),
            clean(&m.body, false).replace('\n', "\n  ")
        ));
        let states = delivery_line(&thread, &m.id);
        if !states.is_empty() {
            output::emit_line(&format!("  → {states}"));
        }
    }
    Ok(0)
}

/// `calm-heron: seen, op:ann: surfaced` for a message the reader sent:
/// how far it got with each recipient (`seen`: in the recipient's model context).
fn delivery_line(thread: &Thread, message_id: &str) -> String {
    thread
        .deliveries
        .iter()
        .filter(|d| d.message_id == message_id)
        .map(|d| format!("{}: {}", clean(&d.nickname, false), d.state.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::api::ReservationView;
    use muster_core::Reservation;

    #[test]
    fn table_names_holder_kind_and_time_left() {
        // Proves the reservations table shows who holds what, how, and for how long.
        let r = Reservation {
            id: "r1".into(),
            session_id: "1a2b3c4d-xyz".into(),
            root: "/repo".into(),
            pattern: "src/**".into(),
            exclusive: true,
            reason: "refactor".into(),
            created_at: 0,
            expires_at: 125_000,
        };
        let text = render(
            &Reservations {
                reservations: vec![ReservationView {
                    reservation: r,
                    nickname: "calm-heron".into(),
                }],
            },
            0,
        );
        for part in [
            "src/**",
            "calm-heron (1a2b3c4d)",
            "exclusive",
            "in 2m05s",
            "refactor",
            "/repo",
        ] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
        assert_eq!(
            render(
                &Reservations {
                    reservations: vec![]
                },
                0
            ),
            "no reservations\n"
        );
    }
}
