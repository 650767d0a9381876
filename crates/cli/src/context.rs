//! What every client command knows before it talks to the daemon: the daemon
//! URL and where it came from, the operator, the token, the config file, and
//! whether to print JSON.

use muster_core::api::ErrorBody;

use crate::client::{Client, ClientError};
use crate::config::{self, Env, LoadedConfig, Source};
use crate::output;

pub struct Context {
    pub env: Env,
    pub config: LoadedConfig,
    pub url: String,
    pub url_source: Source,
    pub operator: String,
    pub operator_source: Source,
    pub token: Option<String>,
    pub json: bool,
}

impl Context {
    pub fn resolve(
        url_flag: Option<&str>,
        json: bool,
        env: Env,
        config: LoadedConfig,
    ) -> Result<Self, ClientError> {
        let (url, url_source) =
            config::resolve_url(url_flag, &env, &config).map_err(ClientError::Local)?;
        let (operator, operator_source) = config::resolve_operator(&env, &config);
        let token = config::resolve_token(&env, &config);
        Ok(Context {
            env,
            config,
            url,
            url_source,
            operator,
            operator_source,
            token,
            json,
        })
    }

    /// Who a command acts as (see `config::resolve_as`).
    pub fn acting_as(&self, flag: Option<&str>) -> String {
        config::resolve_as(flag, &self.env, &self.operator).0
    }

    /// [`Context::acting_as`], and whether the session came from the
    /// environment its harness set (the agent's own shell) rather than `--as`.
    pub fn acting_as_from_env(&self, flag: Option<&str>) -> (String, bool) {
        let (who, source) = config::resolve_as(flag, &self.env, &self.operator);
        let from_env = matches!(
            source,
            config::Source::Env("MUSTER_SESSION_ID" | "CLAUDE_CODE_SESSION_ID")
        );
        (who, from_env)
    }

    /// A client that starts the daemon on first use (see `autostart`).
    pub fn client(&self) -> Result<Client, ClientError> {
        Ok(self.plain_client()?.with_autostart(self.autostart()))
    }

    /// A client that never starts a daemon: `doctor` reports what it finds.
    pub fn plain_client(&self) -> Result<Client, ClientError> {
        Client::new(&self.url, self.token.clone())
    }

    pub fn streaming_client(&self) -> Result<Client, ClientError> {
        Ok(Client::streaming(&self.url, self.token.clone())?.with_autostart(self.autostart()))
    }

    /// How this command would start the daemon it needs, if it may.
    pub fn autostart(&self) -> Option<crate::autostart::Plan> {
        crate::autostart::Plan::for_client(&self.url, &self.env)
    }
}

/// Reports a failed command the one way every command does: `error: …` and
/// close matches on stderr, the `ErrorBody` on stdout with `--json`.
pub fn report_error(err: &ClientError, json: bool) {
    let body: ErrorBody = err.to_body();
    if json {
        if let Ok(text) = serde_json::to_string_pretty(&body) {
            output::emit_line(&text);
        }
    }
    eprintln!("error: {}", output::clean(&err.to_string(), false));
    if !body.error.matches.is_empty() {
        eprintln!("close matches:");
        for m in &body.error.matches {
            eprintln!("  {}", output::clean(&m.to_string(), false));
        }
    }
}
