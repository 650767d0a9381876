//! Making and revoking tokens, and the `/api/v1/tokens` routes: for admin
//! tokens and the daemon's own user only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use muster_core::token::{
    self, CreateToken, CreatedToken, RevokeToken, TokenRecord, TokenView, Tokens,
};
use muster_store::Change;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::hub::Hub;
use crate::local_key::hex;
use crate::scopes::{must_administer, Credential};

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| ApiError::internal(format!("cannot draw a random token: {e}")))?;
    Ok(hex(&buf))
}

impl Hub {
    /// Makes a token named `name`: its secret is in the answer, and only
    /// there. `by` is who asked (for the record).
    pub async fn create_token(&self, req: CreateToken, by: &str) -> Result<CreatedToken, ApiError> {
        token::validate_name(&req.name)?;
        let _one_at_a_time = self.tokens.admin.lock().await;
        if self.tokens.live_named(&req.name).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "token_exists",
                format!(
                    "a token named {:?} exists; revoke it first (`muster token revoke {}`) or pick another name",
                    req.name, req.name
                ),
            ));
        }
        let secret = format!("{}{}", token::SECRET_PREFIX, random_hex(32)?);
        let record = TokenRecord {
            id: format!("tok_{}", random_hex(8)?),
            name: req.name,
            scope: req.scope,
            hash: token::hash_secret(&secret),
            created_at: self.clock.wall(),
            created_by: by.to_string(),
            revoked_at: None,
        };
        let change = Change::PutToken(record.clone());
        self.commit_token(change.clone()).await?;
        self.tokens.apply(&change);
        tracing::info!(
            "token {:?} ({}) made by {by}",
            record.name,
            record.scope.as_str()
        );
        Ok(CreatedToken {
            token: TokenView::from(&record),
            secret,
        })
    }

    /// Revokes the live token named `name`: from now on it lets no one in.
    pub async fn revoke_token(&self, req: RevokeToken) -> Result<TokenView, ApiError> {
        let _one_at_a_time = self.tokens.admin.lock().await;
        let Some(mut record) = self.tokens.live_named(&req.name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_token",
                format!(
                    "no live token is named {:?}; `muster token list` shows them",
                    req.name
                ),
            ));
        };
        let at = self.clock.wall();
        let change = Change::RevokeToken {
            id: record.id.clone(),
            at,
        };
        self.commit_token(change.clone()).await?;
        self.tokens.apply(&change);
        record.revoked_at = Some(at);
        tracing::info!("token {:?} revoked", record.name);
        Ok(TokenView::from(&record))
    }

    /// Stores a token change; memory takes it only once it is durable.
    async fn commit_token(&self, change: Change) -> Result<(), ApiError> {
        let commit = {
            let mut st = self.lock();
            self.commit(&mut st, vec![change])
        };
        commit.await.map_err(ApiError::from)
    }
}

/// Who made a token, for its record.
fn maker(credential: &Credential) -> String {
    match credential {
        Credential::Local => "local".into(),
        Credential::Token(grant) => grant.name.clone(),
    }
}

/// `GET /api/v1/tokens`.
pub(crate) async fn list(
    State(hub): State<Arc<Hub>>,
    Extension(credential): Extension<Credential>,
) -> Result<Json<Tokens>, ApiError> {
    must_administer(&credential, "managing tokens")?;
    Ok(Json(Tokens {
        tokens: hub.tokens.list(),
    }))
}

/// `POST /api/v1/tokens`.
pub(crate) async fn create(
    State(hub): State<Arc<Hub>>,
    Extension(credential): Extension<Credential>,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<Json<CreatedToken>, ApiError> {
    must_administer(&credential, "managing tokens")?;
    hub.create_token(req, &maker(&credential)).await.map(Json)
}

/// `POST /api/v1/tokens/revoke`.
pub(crate) async fn revoke(
    State(hub): State<Arc<Hub>>,
    Extension(credential): Extension<Credential>,
    ApiJson(req): ApiJson<RevokeToken>,
) -> Result<Json<TokenView>, ApiError> {
    must_administer(&credential, "managing tokens")?;
    hub.revoke_token(req).await.map(Json)
}
