//! A store that keeps nothing, for a real `Hub` in memory: the hook target
//! exercises the daemon's in-memory state and answers, not durability (the
//! store's own conformance tests cover that), and a fresh Hub per input
//! must cost microseconds, not a database.

use async_trait::async_trait;
use muster_core::{Delivery, Message, Millis};
use muster_store::{
    Change, Commit, HistoryQuery, InboxEntry, InboxQuery, PruneReport, SearchQuery, Snapshot,
    Store, StoreError,
};

pub struct NullStore;

#[async_trait]
impl Store for NullStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn submit(&self, _: Vec<Change>) -> Commit {
        Box::pin(std::future::ready(Ok(())))
    }
    fn apply_later(&self, _: Vec<Change>) {}
    async fn inbox(&self, _: InboxQuery) -> Result<Vec<InboxEntry>, StoreError> {
        Ok(Vec::new())
    }
    async fn message(&self, _: &str) -> Result<Option<Message>, StoreError> {
        Ok(None)
    }
    async fn deliveries(&self, _: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(Vec::new())
    }
    async fn thread(&self, _: &str, _: &str) -> Result<Vec<Message>, StoreError> {
        Ok(Vec::new())
    }
    async fn history(&self, _: HistoryQuery) -> Result<Vec<Message>, StoreError> {
        Ok(Vec::new())
    }
    async fn search(&self, _: SearchQuery) -> Result<Vec<Message>, StoreError> {
        Ok(Vec::new())
    }
    async fn prune(&self, _: Millis) -> Result<PruneReport, StoreError> {
        Ok(PruneReport::default())
    }
}
