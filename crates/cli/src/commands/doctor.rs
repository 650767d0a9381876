//! `muster doctor`: a ✓/✗ list of what must hold for muster to work here,
//! each failure with what to run; the harnesses installed in this project
//! and for the user are checked too (`muster_install::inspect`).

use muster_core::api::{Roster, Status, API_VERSION};
use muster_core::protocol::Harness;
use muster_install::{install_command, Action, Locations, Request, Scope};
use serde::Serialize;

use crate::client::{decode, ClientError};
use crate::config;
use crate::context::Context;
use crate::output::{self, clean};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to run to fix it (failed checks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// `check` with what to run to mend it.
fn fix(check: Check, how: &str) -> Check {
    Check {
        fix: Some(how.to_string()),
        ..check
    }
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
        fix: None,
    }
}

/// The checks of every harness muster is installed for, in the current
/// directory's project and in the user's settings; none when nothing is installed.
pub fn harness_checks(env: &config::Env) -> Vec<Check> {
    let locations = Locations::from_process();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "muster".into());
    let on_path = locations.muster_on_path(std::path::Path::new(&binary));
    let Some(manifest) = config::default_data_dir(env).map(|d| d.join("installs.json")) else {
        return Vec::new();
    };
    let mut scopes = Vec::new();
    if let Ok(project) = std::env::current_dir()
        .map_err(|_| ())
        .and_then(|d| Scope::project(&d).map_err(|_| ()))
    {
        scopes.push(project);
    }
    if let Ok(user) = Scope::user(&locations) {
        // A project in the home directory is the user's scope already.
        if scopes.first().map(Scope::dir) != Some(user.dir()) {
            scopes.push(user);
        }
    }
    let mut checks = Vec::new();
    let mut installed = Vec::new();
    for scope in &scopes {
        for harness in Harness::ALL {
            let request = Request {
                harness,
                action: Action::Install,
                scope: scope.clone(),
                muster: binary.clone(),
                on_path: on_path.clone(),
                manifest: manifest.clone(),
                locations: locations.clone(),
            };
            let label = format!(
                "{harness} ({} {})",
                scope_label(scope),
                scope.dir().display()
            );
            match muster_install::inspect(request) {
                Err(e) => checks.push(Check {
                    fix: Some(format!(
                        "fix it, then run `{}`",
                        install_command(harness, scope)
                    )),
                    ..check(label, false, e.to_string())
                }),
                Ok(found) => {
                    if found.installed {
                        installed.push(label.clone());
                    }
                    for f in found.findings {
                        checks.push(Check {
                            name: format!("{label} {}", f.name),
                            ok: f.ok,
                            detail: f.detail,
                            fix: f.fix,
                        });
                    }
                }
            }
        }
    }
    if installed.is_empty() {
        checks.push(check(
            "harnesses",
            true,
            "muster is installed for none here (muster install <harness> --project, or --user)",
        ));
    }
    checks
}

fn scope_label(scope: &Scope) -> &'static str {
    match scope {
        Scope::Project(_) => "project",
        Scope::User(_) => "user",
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
        out.push_str(&format!(
            "{mark} {}: {}\n",
            clean(&c.name, false),
            clean(&c.detail, false)
        ));
        if let (false, Some(fix)) = (c.ok, &c.fix) {
            out.push_str(&format!("  fix: {}\n", clean(fix, false)));
        }
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

    let client = match ctx.plain_client() {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check {
                fix: Some(start_fix(ctx)),
                ..check("daemon reachable", false, e.to_string())
            });
            return finish(ctx, checks, None).await;
        }
    };
    match client.get_text("/healthz").await {
        Ok(_) => checks.push(check(
            "daemon reachable",
            true,
            // Of a team's several addresses, the one that answered.
            format!("{} answers /healthz", client.base()),
        )),
        Err(e) => {
            checks.push(Check {
                fix: Some(start_fix(ctx)),
                ..check("daemon reachable", false, e.to_string())
            });
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
            checks.push(Check {
                fix: (!same).then(|| {
                    "restart the daemon with this muster (stop `muster serve`, start it again), or run the muster \
that matches it"
                        .to_string()
                }),
                ..check(
                "versions match",
                same,
                format!(
                    "client {client_version} (API {API_VERSION}), daemon {} (API {})",
                    s.version, s.api_version
                ),
            )});
        }
        Err(e) => checks.push(check("daemon status", false, e.to_string())),
    }
    finish(ctx, checks, Some(&client)).await
}

/// What to run when the daemon does not answer: a loopback daemon starts
/// on first use (doctor itself only looks), any other must be started.
fn start_fix(ctx: &Context) -> String {
    let start = "`muster serve` (in a terminal of its own), or keep one running with `muster \
                 service install`";
    match ctx.autostart() {
        Some(_) => format!(
            "the next muster command or agent session starts it (e.g. `muster status`); or \
             start it: {start}"
        ),
        None => format!("start it: {start}"),
    }
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
    checks.extend(harness_checks(&ctx.env));
    checks.extend(token_check(ctx));
    checks
}

/// Where the token comes from, if one is sent; a token file that cannot be
/// read, or that others may read, fails.
fn token_check(ctx: &Context) -> Option<Check> {
    let file = ctx
        .env
        .muster_token_file
        .clone()
        .filter(|_| ctx.env.muster_token.is_none())
        .or_else(|| {
            let values = &ctx.config.values;
            values.token_file.clone().filter(|_| values.token.is_none())
        });
    let Some(file) = file else {
        let from = if ctx.env.muster_token.is_some() {
            "MUSTER_TOKEN"
        } else {
            "config file"
        };
        return ctx.token.as_ref().map(|_| {
            check(
                "token",
                true,
                format!("sent with every request (from {from})"),
            )
        });
    };
    let path = std::path::Path::new(&file);
    if ctx.token.is_none() {
        return Some(fix(
            check("token", false, format!("the token file {file} cannot be read, or is empty")),
            "write the token there (`muster token create NAME --out FILE` makes one), or point MUSTER_TOKEN_FILE elsewhere",
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
        if open {
            return Some(fix(
                check(
                    "token",
                    false,
                    format!("the token file {file} is readable by others"),
                ),
                &format!("chmod 600 {file}"),
            ));
        }
    }
    Some(check(
        "token",
        true,
        format!("sent with every request (from the file {file})"),
    ))
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
