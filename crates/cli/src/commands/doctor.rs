//! `muster doctor`: a ✓/✗ list of what must hold for muster to work here.

use muster_core::api::{Roster, Status, API_VERSION};
use serde::Serialize;

use crate::client::{decode, ClientError};
use crate::config;
use crate::context::Context;
use crate::output::{self, clean};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    ok: bool,
    client_version: &'static str,
    url: &'a str,
    url_source: &'static str,
    checks: &'a [Check],
}

pub async fn run(ctx: &Context) -> Result<i32, ClientError> {
    let checks = gather(ctx).await;
    let ok = checks.iter().all(|c| c.ok);
    if ctx.json {
        let report = Report {
            ok,
            client_version: env!("CARGO_PKG_VERSION"),
            url: &ctx.url,
            url_source: ctx.url_source.kind(),
            checks: &checks,
        };
        output::print_json(&serde_json::to_value(&report).unwrap_or_default());
    } else {
        output::emit(&render(&checks));
    }
    Ok(if ok { 0 } else { 1 })
}

pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = if c.ok { "✓" } else { "✗" };
        out.push_str(&format!("{mark} {}: {}\n", c.name, clean(&c.detail, false)));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    out.push_str(&match failed {
        0 => "all checks passed\n".to_string(),
        1 => "1 check failed\n".to_string(),
        n => format!("{n} checks failed\n"),
    });
    out
}

async fn gather(ctx: &Context) -> Vec<Check> {
    let mut checks = Vec::new();

    checks.push(
        match (&ctx.config.path, ctx.config.exists, &ctx.config.error) {
            (None, _, _) => check(
                "config file",
                true,
                "none (neither XDG_CONFIG_HOME nor HOME is set)",
            ),
            (Some(path), _, Some(error)) => {
                check("config file", false, format!("{}: {error}", path.display()))
            }
            (Some(path), true, None) => check("config file", true, path.display().to_string()),
            (Some(path), false, None) => check(
                "config file",
                true,
                format!("none at {} (defaults used)", path.display()),
            ),
        },
    );
    checks.push(check(
        "daemon URL",
        true,
        format!("{} (from {})", ctx.url, ctx.url_source),
    ));

    let client = match ctx.client() {
        Ok(client) => client,
        Err(e) => {
            checks.push(check("daemon reachable", false, e.to_string()));
            return finish(ctx, checks, None).await;
        }
    };
    match client.get_text("/healthz").await {
        Ok(_) => checks.push(check(
            "daemon reachable",
            true,
            format!("{} answers /healthz", ctx.url),
        )),
        Err(e) => {
            checks.push(check("daemon reachable", false, e.to_string()));
            return finish(ctx, checks, None).await;
        }
    }

    let status = client
        .get("/api/v1/status", &[])
        .await
        .and_then(|v| decode::<Status>(v, "status"));
    match &status {
        Ok(s) => {
            checks.push(check(
                "daemon status",
                true,
                format!(
                    "store {}, operator {}, {} on the roster",
                    s.store, s.operator, s.sessions_present
                ),
            ));
            let client_version = env!("CARGO_PKG_VERSION");
            let same = s.version == client_version && s.api_version == API_VERSION;
            checks.push(check(
                "versions match",
                same,
                format!(
                    "client {client_version} (API {API_VERSION}), daemon {} (API {})",
                    s.version, s.api_version
                ),
            ));
        }
        Err(e) => checks.push(check("daemon status", false, e.to_string())),
    }
    finish(ctx, checks, Some(&client)).await
}

/// The checks that do not need the daemon, plus the roster check when it is reachable.
async fn finish(
    ctx: &Context,
    mut checks: Vec<Check>,
    client: Option<&crate::client::Client>,
) -> Vec<Check> {
    match config::session_from_env(&ctx.env) {
        None => checks.push(check(
            "session identity",
            true,
            format!(
                "none (MUSTER_SESSION_ID and CLAUDE_CODE_SESSION_ID unset); commands act as {}",
                ctx.acting_as(None)
            ),
        )),
        Some((id, var)) => {
            checks.push(check(
                "session identity",
                true,
                format!("{id} (from {var})"),
            ));
            if let Some(client) = client {
                checks.push(roster_check(client, &id).await);
            }
        }
    }
    checks.push(check(
        "operator",
        true,
        format!("{} (from {})", ctx.operator, ctx.operator_source),
    ));
    if ctx.token.is_some() {
        let from = if ctx.env.muster_token.is_some() {
            "MUSTER_TOKEN"
        } else {
            "config file"
        };
        checks.push(check(
            "token",
            true,
            format!("sent with every request (from {from})"),
        ));
    }
    checks
}

async fn roster_check(client: &crate::client::Client, id: &str) -> Check {
    let roster = client
        .get("/api/v1/roster", &[("all", "true".to_string())])
        .await
        .and_then(|v| decode::<Roster>(v, "roster"));
    match roster {
        Err(e) => check("session on roster", false, e.to_string()),
        Ok(roster) => match roster.sessions.iter().find(|s| s.id == id) {
            Some(s) if s.present() => check("session on roster", true, format!("present as {}", s.nickname)),
            Some(s) => check(
                "session on roster",
                false,
                format!("known as {} but away; its hooks have not called the daemon lately", s.nickname),
            ),
            None => check(
                "session on roster",
                false,
                "not on the roster; are muster's hooks installed for this harness? (muster install <harness>)",
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctor_marks_each_check_and_counts_failures() {
        // Proves the doctor list prints ✓/✗ per check and a closing count of failures.
        let checks = vec![
            check("daemon URL", true, "http://x (from default)"),
            check("daemon reachable", false, "refused"),
        ];
        assert_eq!(
            render(&checks),
            "✓ daemon URL: http://x (from default)\n✗ daemon reachable: refused\n1 check failed\n"
        );
        assert!(render(&checks[..1]).ends_with("all checks passed\n"));
    }
}
