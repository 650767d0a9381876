//! The daemon's tokens (`muster token create|list|revoke`), kept in memory
//! by the SHA-256 of their secret, so a request's bearer is looked up
//! without ever storing or comparing the secret itself. They are made and
//! revoked through the store like every other change (`token_admin`), so
//! every daemon sharing it learns of them from the change log.

use std::collections::HashMap;
use std::sync::RwLock;

use muster_core::token::{self, Grant, TokenRecord, TokenView};
use muster_store::Change;

use crate::local_key::same_secret;

/// Every token the daemon knows, revoked ones included.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Known>,
    /// One create or revoke at a time, so two requests cannot both find a
    /// name free.
    pub(crate) admin: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Known {
    /// In the order made; never removed (a revoked token stays listed).
    records: Vec<TokenRecord>,
    /// Live tokens' places in `records` by the hash of their secret.
    by_hash: HashMap<String, usize>,
    /// Every token's place in `records` by its id.
    by_id: HashMap<String, usize>,
}

impl Known {
    fn put(&mut self, record: TokenRecord) {
        if self.by_id.contains_key(&record.id) {
            return;
        }
        let at = self.records.len();
        if record.is_live() {
            self.by_hash.insert(record.hash.clone(), at);
        }
        self.by_id.insert(record.id.clone(), at);
        self.records.push(record);
    }

    fn revoke(&mut self, id: &str, at: muster_core::Millis) {
        let found = self
            .by_id
            .get(id)
            .and_then(|&place| self.records.get_mut(place));
        if let Some(t) = found.filter(|t| t.is_live()) {
            t.revoked_at = Some(at);
            self.by_hash.remove(&t.hash);
        }
    }
}

impl Registry {
    pub fn new(records: Vec<TokenRecord>) -> Registry {
        let registry = Registry::default();
        {
            let mut known = registry.write();
            for record in records {
                known.put(record);
            }
        }
        registry
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// What a bearer secret grants, if it is a live token's.
    pub fn grant(&self, secret: &str) -> Option<Grant> {
        let hash = token::hash_secret(secret);
        let known = self.read();
        let record = known.records.get(*known.by_hash.get(&hash)?)?;
        // The map found it by its hash; compare in constant time anyway,
        // so no timing depends on how much of a guess was right.
        same_secret(hash.as_bytes(), record.hash.as_bytes()).then(|| Grant::of(record))
    }

    /// Applies a token change (made here, or logged by another daemon);
    /// any other change is not this registry's.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::PutToken(record) => self.write().put(record.clone()),
            Change::RevokeToken { id, at } => self.write().revoke(id, *at),
            _ => {}
        }
    }

    pub fn list(&self) -> Vec<TokenView> {
        self.read().records.iter().map(TokenView::from).collect()
    }

    pub(crate) fn live_named(&self, name: &str) -> Option<TokenRecord> {
        self.read()
            .records
            .iter()
            .find(|t| t.name == name && t.is_live())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::token::Scope;

    fn record(id: &str, secret: &str, revoked_at: Option<i64>) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            name: format!("name-{id}"),
            scope: Scope::Agent,
            hash: token::hash_secret(secret),
            created_at: 1,
            created_by: "local".into(),
            revoked_at,
        }
    }

    #[test]
    fn only_a_live_tokens_secret_grants_anything() {
        let registry = Registry::new(vec![
            record("t1", "muster_one", None),
            record("t2", "muster_two", Some(5)),
        ]);
        let grant = registry.grant("muster_one").expect("a live token");
        assert_eq!(grant.token_id.as_deref(), Some("t1"));
        assert_eq!(grant.scope, Scope::Agent);
        assert_eq!(registry.grant("muster_two"), None, "revoked");
        assert_eq!(registry.grant("muster_on"), None);
        assert_eq!(registry.grant(&token::hash_secret("muster_one")), None);
        registry.apply(&Change::RevokeToken {
            id: "t1".into(),
            at: 9,
        });
        assert_eq!(registry.grant("muster_one"), None, "revoked now");
        let listed = registry.list();
        assert_eq!(
            listed.iter().map(|t| t.revoked_at).collect::<Vec<_>>(),
            [Some(9), Some(5)]
        );
    }
}
