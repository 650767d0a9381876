//! Tokens: the named secrets a team daemon lets clients in by (`muster
//! token create|list|revoke`). A token is stored only as the SHA-256 of its
//! secret; the secret itself is shown once, when it is made.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{CoreError, Millis};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Acts only for the sessions it registered; reads the roster, rooms
    /// and reservations, and its own sessions' mail.
    Agent,
    /// Acts as its person and reads everything; acts for no agent's session
    /// another token registered.
    Operator,
    /// Everything, tokens included (the daemon's `--token` is one).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agent => "agent",
            Scope::Operator => "operator",
            Scope::Admin => "admin",
        }
    }

    /// A scope's name read back; anything else is a clear error.
    pub fn parse(name: &str) -> Result<Scope, CoreError> {
        match name.trim() {
            "agent" => Ok(Scope::Agent),
            "operator" => Ok(Scope::Operator),
            "admin" => Ok(Scope::Admin),
            other => Err(CoreError::invalid(
                "scope",
                format!("{other:?} is not one of agent, operator, admin"),
            )),
        }
    }
}

/// A token as the daemon keeps it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Stable and not secret: what a session's `owner` names.
    pub id: String,
    /// Unique among tokens not revoked.
    pub name: String,
    pub scope: Scope,
    /// The SHA-256 of the secret, in lowercase hex.
    pub hash: String,
    pub created_at: Millis,
    /// Who made it: a token's name, or `local` for the daemon's own user.
    pub created_by: String,
    pub revoked_at: Option<Millis>,
}

impl TokenRecord {
    pub fn is_live(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Who a request that came with a token acts as: put in the request's
/// extensions by the daemon's guard, read by whatever decides what the
/// request may do. A request without one came from the daemon's own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's id; `None` for the daemon's bootstrap `--token`.
    pub token_id: Option<String>,
    pub name: String,
    pub scope: Scope,
}

impl Grant {
    /// The daemon's own `--token`: an admin with no record.
    pub fn bootstrap() -> Grant {
        Grant {
            token_id: None,
            name: "bootstrap".into(),
            scope: Scope::Admin,
        }
    }

    pub fn of(record: &TokenRecord) -> Grant {
        Grant {
            token_id: Some(record.id.clone()),
            name: record.name.clone(),
            scope: record.scope,
        }
    }

    /// Whether the holder may act only for sessions it registered (every
    /// scope but admin).
    pub fn is_bound(&self) -> bool {
        self.scope != Scope::Admin
    }
}

/// A token as the API shows it: never its secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: Millis,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Millis>,
}

impl From<&TokenRecord> for TokenView {
    fn from(t: &TokenRecord) -> Self {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            scope: t.scope,
            created_at: t.created_at,
            created_by: t.created_by.clone(),
            revoked_at: t.revoked_at,
        }
    }
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub scope: Scope,
}

/// What `POST /api/v1/tokens` answers: the token, and its secret, shown
/// this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    pub secret: String,
}

/// `POST /api/v1/tokens/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeToken {
    pub name: String,
}

/// `GET /api/v1/tokens`: every token, revoked ones included, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<TokenView>,
}

/// Every secret starts so, which makes one easy to spot (and to keep out of
/// commits with a secret scanner).
pub const SECRET_PREFIX: &str = "muster_";

/// The longest token name.
pub const MAX_TOKEN_NAME: usize = 64;

/// The SHA-256 of `secret`, in lowercase hex: what is stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A token's name: 1 to 64 letters, digits, `-`, `_`, `.` or `@` (a person's
/// or a machine's name, never something that needs quoting).
pub fn validate_name(name: &str) -> Result<(), CoreError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    if name.is_empty() || name.len() > MAX_TOKEN_NAME || !name.chars().all(ok_char) {
        return Err(CoreError::invalid(
            "name",
            format!("{name:?} must be 1 to {MAX_TOKEN_NAME} letters, digits, '-', '_', '.' or '@'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_sha256_of_the_whole_secret() {
        // SHA-256("abc"), from FIPS 180-2's examples.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scopes_and_names() {
        for scope in [Scope::Agent, Scope::Operator, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()).unwrap(), scope);
        }
        assert!(Scope::parse("root").is_err());
        for ok in ["alice", "ci-runner.2", "bob@laptop", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x/y", "ünï", &"a".repeat(65), "a\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
