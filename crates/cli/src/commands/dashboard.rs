//! `muster dashboard`: a one-time link that signs a browser in to the web
//! dashboard. The daemon serves only its own user; a browser cannot read
//! the local key, so this command (which can) asks the daemon for a link
//! whose code works once, for two minutes, and leaves a cookie.

use clap::Args;
use serde_json::{json, Value};

use crate::client::ClientError;
use crate::context::Context;
use crate::output;

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Open the link in the default browser (xdg-open, or open on macOS)
    #[arg(long)]
    pub open: bool,
}

pub async fn run(ctx: &Context, args: &DashboardArgs) -> Result<i32, ClientError> {
    let client = ctx.client()?;
    let answer = client.post("/api/v1/dashboard/link", &json!({})).await?;
    // The code is good on the daemon that made it: of a team's several
    // addresses, the one that answered.
    let url = link(client.base(), &answer)?;
    if ctx.json {
        output::print_json(&json!({"url": url, "expires_in_ms": answer["expires_in_ms"]}));
    } else {
        output::emit_line(&format!(
            "Open this link to sign in to the dashboard (it works once, within two minutes):\n  {url}"
        ));
    }
    if args.open {
        open_in_browser(&url)?;
    }
    Ok(0)
}

/// The daemon's answer's path on the daemon's own address.
fn link(base: &str, answer: &Value) -> Result<String, ClientError> {
    let path = answer["path"]
        .as_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| ClientError::local("the daemon's answer has no sign-in path"))?;
    Ok(format!("{}{path}", base.trim_end_matches('/')))
}

/// Opens the link in the default browser without putting it on a command
/// line (any local user can read those, and spend the code first): the
/// opener gets a page in this user's private runtime directory (0600)
/// that sends the browser on to the link.
fn open_in_browser(url: &str) -> Result<(), ClientError> {
    let page = private_redirect(url)?;
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let status = std::process::Command::new(opener)
        .arg(&page)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            ClientError::local(format!("cannot run {opener}: {e}; open the link by hand"))
        })?;
    if !status.success() {
        return Err(ClientError::local(format!(
            "{opener} failed ({status}); open the link by hand"
        )));
    }
    Ok(())
}

/// Writes the page that redirects to `url`, readable by this user only.
fn private_redirect(url: &str) -> Result<std::path::PathBuf, ClientError> {
    let cannot = |e: String| ClientError::local(format!("{e}; open the link by hand"));
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = muster_daemon::unix_socket::default_dir();
        muster_daemon::unix_socket::ensure_private_dir(&dir).map_err(cannot)?;
        let page = dir.join("dashboard-sign-in.html");
        let _ = std::fs::remove_file(&page);
        let html = format!(
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0; url={url}\">\
             <title>muster</title><a href=\"{url}\">Sign in to the muster dashboard</a>"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&page)
            .and_then(|mut f| f.write_all(html.as_bytes()))
            .map_err(|e| cannot(format!("cannot write {}: {e}", page.display())))?;
        Ok(page)
    }
    #[cfg(not(unix))]
    {
        let _ = url;
        Err(cannot("opening a browser is supported on Unix only".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_the_daemon_address_and_the_answered_path() {
        let answer = json!({"path": "/login?code=abc", "expires_in_ms": 120000});
        assert_eq!(
            link("http://127.0.0.1:7420/", &answer).unwrap(),
            "http://127.0.0.1:7420/login?code=abc"
        );
        assert!(link("http://127.0.0.1:7420", &json!({"path": "https://evil"})).is_err());
    }
}
