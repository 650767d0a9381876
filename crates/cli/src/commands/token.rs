//! `muster token create|list|revoke`: the tokens a team daemon lets clients
//! in by. The daemon keeps only each secret's hash; `create` shows the
//! secret once (or writes it to a file only its owner can read), to hand to
//! the teammate or machine it is for.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use muster_core::token::{CreatedToken, Scope, TokenView, Tokens};
use serde_json::json;

use crate::client::ClientError;
use crate::context::Context;
use crate::output::{self, Table};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Make a token and print its secret (shown this once)
    Create(CreateArgs),
    /// List the tokens (never their secrets)
    List,
    /// Revoke a token: from now on it lets no one in
    Revoke(RevokeArgs),
}

/// What a token may do (see `muster token --help`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Acts only for the sessions it registers: for an agent's machine
    Agent,
    /// Acts as its person and reads everything: for a teammate's CLI and dashboard
    Operator,
    /// Everything, tokens included
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Agent => Scope::Agent,
            ScopeArg::Operator => Scope::Operator,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The token's name: who or what it is for (letters, digits, - _ . @)
    pub name: String,
    /// What the token may do
    #[arg(long, value_enum, default_value = "agent")]
    pub scope: ScopeArg,
    /// Write the secret to this file (created readable by you only, 0600)
    /// instead of printing it; point MUSTER_TOKEN_FILE at it
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The name of the token to revoke
    pub name: String,
}

pub async fn run(ctx: &Context, args: &TokenArgs) -> Result<i32, ClientError> {
    match &args.action {
        TokenAction::Create(create) => run_create(ctx, create).await,
        TokenAction::List => run_list(ctx).await,
        TokenAction::Revoke(revoke) => run_revoke(ctx, revoke).await,
    }
}

async fn run_create(ctx: &Context, args: &CreateArgs) -> Result<i32, ClientError> {
    muster_core::token::validate_name(&args.name).map_err(|e| ClientError::local(e.to_string()))?;
    if let Some(out) = &args.out {
        refuse_existing(out)?;
    }
    let client = ctx.client()?;
    let scope = Scope::from(args.scope);
    let answer = client
        .post(
            "/api/v1/tokens",
            &json!({"name": args.name, "scope": scope.as_str()}),
        )
        .await?;
    let created: CreatedToken = serde_json::from_value(answer)
        .map_err(|e| ClientError::local(format!("the daemon's answer is not a token: {e}")))?;
    if let Some(out) = &args.out {
        write_secret(out, &created.secret)?;
    }
    if ctx.json {
        let mut value = serde_json::to_value(&created.token).unwrap_or_default();
        match &args.out {
            Some(out) => value["file"] = json!(out.display().to_string()),
            None => value["secret"] = json!(created.secret),
        }
        output::print_json(&value);
        return Ok(0);
    }
    let t = &created.token;
    match &args.out {
        Some(out) => output::emit_line(&format!(
            "Made {} token {:?}; its secret is in {} (readable by you only).\n\
             Hand it over privately; clients read it with MUSTER_TOKEN_FILE={}",
            t.scope.as_str(),
            t.name,
            out.display(),
            out.display()
        )),
        None => output::emit_line(&format!(
            "Made {} token {:?}. Its secret, shown this once:\n\n  {}\n\n\
             Hand it over privately; clients send it with MUSTER_TOKEN (or a 0600 file named by \
             MUSTER_TOKEN_FILE).",
            t.scope.as_str(),
            t.name,
            created.secret
        )),
    };
    Ok(0)
}

async fn run_list(ctx: &Context) -> Result<i32, ClientError> {
    let answer = ctx.client()?.get("/api/v1/tokens", &[]).await?;
    if ctx.json {
        output::print_json(&answer);
        return Ok(0);
    }
    let tokens: Tokens = serde_json::from_value(answer)
        .map_err(|e| ClientError::local(format!("the daemon's answer is not a token list: {e}")))?;
    if tokens.tokens.is_empty() {
        output::emit_line("No tokens yet; `muster token create <name>` makes one.");
        return Ok(0);
    }
    let mut table = Table::new(&["NAME", "SCOPE", "MADE", "BY", "STATE"]);
    for t in &tokens.tokens {
        table.row(row(t));
    }
    output::emit_line(table.render().trim_end());
    Ok(0)
}

fn row(t: &TokenView) -> Vec<String> {
    let state = match t.revoked_at {
        Some(at) => format!("revoked {}", output::clock_utc(at)),
        None => "live".to_string(),
    };
    vec![
        t.name.clone(),
        t.scope.as_str().to_string(),
        output::clock_utc(t.created_at),
        t.created_by.clone(),
        state,
    ]
}

async fn run_revoke(ctx: &Context, args: &RevokeArgs) -> Result<i32, ClientError> {
    let answer = ctx
        .client()?
        .post("/api/v1/tokens/revoke", &json!({"name": args.name}))
        .await?;
    if ctx.json {
        output::print_json(&answer);
    } else {
        output::emit_line(&format!(
            "Revoked token {:?}: it lets no one in from now on.",
            args.name
        ));
    }
    Ok(0)
}

/// `--out` never overwrites: a secret file already there may be in use.
fn refuse_existing(path: &Path) -> Result<(), ClientError> {
    if path.exists() {
        return Err(ClientError::local(format!(
            "{} exists; pick another --out file (muster never overwrites a secret)",
            path.display()
        )));
    }
    Ok(())
}

/// Writes the secret to a new file only its owner can read.
fn write_secret(path: &Path, secret: &str) -> Result<(), ClientError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let cannot = |e: std::io::Error| {
        ClientError::local(format!(
            "the token was made, but its secret cannot be written to {}: {e}; revoke it \
             (`muster token revoke`) and make it again",
            path.display()
        ))
    };
    let mut file = options.open(path).map_err(cannot)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(cannot)
}
