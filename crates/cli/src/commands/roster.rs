//! `muster roster`: who is on the roster, as a table.

use clap::Args;
use muster_core::api::Roster;
use muster_core::{LinkKind, Millis, Session};

use crate::client::{decode, ClientError};
use crate::context::Context;
use crate::output::{self, ago, clean, short_id, truncate, Table};

#[derive(Debug, Args)]
pub struct RosterArgs {
    /// Also show sessions that left the roster (their mail waits for them)
    #[arg(long)]
    pub all: bool,
}

/// Whether a session's shim is attached *now*, not only whether one ever was.
pub fn link_state(s: &Session) -> &'static str {
    match (s.link, s.link_up) {
        (LinkKind::Hooks, _) => "hooks",
        (LinkKind::Link, true) if s.can_push => "linked+push",
        (LinkKind::Link, true) => "linked",
        (LinkKind::Link, false) => "link lost",
    }
}

pub async fn run(ctx: &Context, args: &RosterArgs) -> Result<i32, ClientError> {
    let query = if args.all {
        vec![("all", "true".to_string())]
    } else {
        Vec::new()
    };
    let value = ctx.client()?.get("/api/v1/roster", &query).await?;
    if ctx.json {
        output::print_json(&value);
        return Ok(0);
    }
    let roster: Roster = decode(value, "roster")?;
    output::emit(&render(&roster.sessions, args.all, output::now_millis()));
    Ok(0)
}

/// `project@branch`, either part alone, or `-`.
pub fn place(session: &Session) -> String {
    match (session.project.is_empty(), session.branch.is_empty()) {
        (false, false) => format!("{}@{}", session.project, session.branch),
        (false, true) => session.project.clone(),
        (true, false) => format!("@{}", session.branch),
        (true, true) => "-".to_string(),
    }
}

/// `busy (Edit)`, `idle`, `unknown`.
pub fn activity(session: &Session) -> String {
    match &session.last_tool {
        Some(tool) if !tool.is_empty() => format!("{} ({tool})", session.activity.as_str()),
        _ => session.activity.as_str().to_string(),
    }
}

pub fn render(sessions: &[Session], all: bool, now: Millis) -> String {
    if sessions.is_empty() {
        return if all {
            "no sessions known to the daemon\n".to_string()
        } else {
            "nobody is on the roster (muster roster --all also shows sessions that left)\n"
                .to_string()
        };
    }
    // Present sessions first, each group in the daemon's order.
    let mut ordered: Vec<&Session> = sessions.iter().filter(|s| s.present()).collect();
    ordered.extend(sessions.iter().filter(|s| !s.present()));

    let mut table = Table::new(&[
        "NICKNAME",
        "ID",
        "HARNESS",
        "PROJECT@BRANCH",
        "ACTIVITY",
        "STATUS",
        "LINK",
        "WAKE",
        "SEEN",
    ]);
    for s in &ordered {
        let nickname = if s.present() {
            s.nickname.clone()
        } else {
            format!("{} (away)", s.nickname)
        };
        let link = link_state(s).to_string();
        let status = if s.status.is_empty() {
            "-".to_string()
        } else {
            truncate(&s.status, 40)
        };
        let seen = match s.left_at {
            Some(left) if all => format!("left {}", ago(left, now)),
            _ => ago(s.last_seen_at, now),
        };
        table.row(
            [
                nickname,
                short_id(&s.id),
                if s.harness.is_empty() {
                    "-".to_string()
                } else {
                    s.harness.clone()
                },
                truncate(&place(s), 40),
                truncate(&activity(s), 30),
                status,
                link,
                s.wake.clone().unwrap_or_else(|| "-".to_string()),
                seen,
            ]
            .iter()
            .map(|cell| clean(cell, false))
            .collect(),
        );
    }
    let present = sessions.iter().filter(|s| s.present()).count();
    let away = sessions.len() - present;
    let mut out = table.render();
    out.push_str(&match (all, away) {
        (true, away) if away > 0 => format!("{present} on the roster, {away} away\n"),
        _ => format!("{present} on the roster\n"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::Activity;

    fn session(id: &str, nick: &str, seen: Millis) -> Session {
        let mut s = Session::new(id, nick, 0);
        s.harness = "claude".into();
        s.project = "muster".into();
        s.branch = "main".into();
        s.last_seen_at = seen;
        s
    }

    #[test]
    fn roster_table_shows_every_column() {
        // Proves the roster table has the contract's columns: short id, project@branch, activity with tool, seen ago.
        let now = 100_000;
        let mut a = session("1a2b3c4d-aaaa", "calm-heron", now - 4_000);
        a.activity = Activity::Busy;
        a.last_tool = Some("Edit".into());
        a.status = "refactoring db".into();
        a.link = LinkKind::Link;
        a.link_up = true;
        a.can_push = true;
        let text = render(&[a], false, now);
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(
            header.starts_with("NICKNAME") && header.ends_with("SEEN"),
            "{header}"
        );
        let row = lines.next().unwrap();
        for part in [
            "calm-heron",
            "1a2b3c4d ",
            "claude",
            "muster@main",
            "busy (Edit)",
            "refactoring db",
            "linked+push",
            "4s ago",
        ] {
            assert!(row.contains(part), "{part} missing in {row}");
        }
        assert!(!row.contains("1a2b3c4d-"));
        assert_eq!(lines.next(), Some("1 on the roster"));
    }

    #[test]
    fn away_sessions_are_marked_and_listed_last() {
        // Proves --all marks sessions that left as away and lists them after the present ones.
        let now = 1_000_000;
        let mut gone = session("gone0000", "old-owl", now - 600_000);
        gone.left_at = Some(now - 120_000);
        let here = session("here0000", "new-fox", now - 1_000);
        let text = render(&[gone, here], true, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("new-fox"));
        assert!(
            lines[2].starts_with("old-owl (away)") && lines[2].ends_with("left 2m ago"),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "1 on the roster, 1 away");
    }

    #[test]
    fn empty_roster_says_so() {
        // Proves an empty roster prints a sentence, not an empty table.
        assert!(render(&[], false, 0).starts_with("nobody is on the roster"));
    }

    #[test]
    fn peer_text_is_cleaned_in_the_table() {
        // Proves a status carrying terminal escapes cannot reach the terminal raw.
        let mut s = session("evil0000", "sly-fox", 0);
        s.status = "\x1b]0;pwned\x07".into();
        assert!(!render(&[s], false, 0).contains('\x1b'));
    }
}
