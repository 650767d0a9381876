//! What a backend's writer is asked to do, and how each request is answered
//! once its batch is over: the part of group commit every backend shares.

use muster_core::Millis;
use tokio::sync::oneshot;

use crate::health::{FaultKind, WriteHealth};
use crate::{Change, PruneReport, StoreError};

/// One request to a store's writer.
pub enum Job {
    /// Changes to make durable; `done` is told once they are (none for
    /// `apply_later`'s background writes). `unhurried`: nobody is held up
    /// until they are (`submit_unhurried`), so the writer may wait a moment
    /// to commit them with the next write.
    Apply {
        changes: Vec<Change>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
        unhurried: bool,
    },
    Prune {
        cutoff: Millis,
        done: oneshot::Sender<Result<PruneReport, StoreError>>,
    },
}

/// What became of one job: a prune's report, or nothing for an apply.
pub type JobResult = Result<Option<PruneReport>, StoreError>;

impl Job {
    /// Whether the writer may hold this job a moment for company.
    pub fn is_unhurried(&self) -> bool {
        matches!(
            self,
            Job::Apply {
                unhurried: true,
                ..
            }
        )
    }

    /// Tells the job's waiter what became of it; a background write that
    /// failed, having no waiter, is logged.
    pub fn answer(self, result: JobResult) {
        match self {
            Job::Apply {
                done: Some(done), ..
            } => {
                let _ = done.send(result.map(|_| ()));
            }
            Job::Apply { done: None, .. } => {
                if let Err(e) = result {
                    tracing::warn!("background store write failed: {e}");
                }
            }
            Job::Prune { done, .. } => {
                let _ = done.send(result.map(|r| r.unwrap_or_default()));
            }
        }
    }
}

/// Answers every job of a batch with its result, in order.
pub fn answer_all(batch: Vec<Job>, results: Vec<JobResult>) {
    for (job, result) in batch.into_iter().zip(results) {
        job.answer(result);
    }
}

/// The results for a batch a fault of the backend kept out (its commit
/// failed, or it could not begin): every job fails with it, in the
/// backend's words.
pub fn all_failed(batch: &[Job], error: &dyn std::fmt::Display) -> Vec<JobResult> {
    batch
        .iter()
        .map(|_| Err(StoreError::Unavailable(error.to_string())))
        .collect()
}

/// [`all_failed`] for a batch a fault of `kind` kept out, recorded in the
/// store's `health` first (every job of it counted as failed).
pub fn faulted(
    batch: &[Job],
    health: &WriteHealth,
    kind: FaultKind,
    reason: &str,
) -> Vec<JobResult> {
    tracing::error!("store commit failed: {reason}");
    health.failed(kind, reason, batch.len() as u64);
    all_failed(batch, &reason)
}

/// A panic's message, for the error a writer answers after catching one.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string());
    format!("the store's writer failed ({text}); the next write is tried afresh")
}
