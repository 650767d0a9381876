//! What a backend's writer is asked to do, and how each request is answered
//! once its batch is over: the part of group commit every backend shares.

use muster_core::Millis;
use tokio::sync::oneshot;

use crate::{Change, PruneReport, StoreError};

/// One request to a store's writer.
pub enum Job {
    /// Changes to make durable; `done` is told once they are (none for
    /// `apply_later`'s background writes).
    Apply {
        changes: Vec<Change>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    Prune {
        cutoff: Millis,
        done: oneshot::Sender<Result<PruneReport, StoreError>>,
    },
}

/// What became of one job: a prune's report, or nothing for an apply.
pub type JobResult = Result<Option<PruneReport>, StoreError>;

impl Job {
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

/// The results for a batch whose commit failed: every job fails with it.
pub fn all_failed(batch: &[Job], error: &dyn std::fmt::Display) -> Vec<JobResult> {
    batch
        .iter()
        .map(|_| Err(StoreError::Write(format!("commit failed: {error}"))))
        .collect()
}
