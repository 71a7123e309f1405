//! Write-path internals for this crate's own benchmarks and tests, behind
//! the hidden `internals` feature. Not part of the public API and not
//! covered by semver: with these a caller can store a checkpoint ahead of
//! the data it covers, which the public API makes impossible (pulls, local
//! writes and the push worker are the only writers).
//!
//! Dev builds turn the feature on through the crate's dev-dependency on
//! itself (`Cargo.toml`); applications must not.

pub use crate::store::{BatchOutcome, CheckpointRecord, IncomingRev, WriteBatch};
use crate::store::{Replica, StoreError};

/// Commits one batch (revisions, attachments, checkpoint) in one sled
/// transaction, flushed before `Ok`: the store's replication write path.
///
/// # Durability
/// As the pull's own commit: all of the batch or none of it survives a
/// crash; after `Ok` it survives a kill -9.
pub fn commit_blocking(replica: &Replica, batch: &WriteBatch) -> Result<BatchOutcome, StoreError> {
    replica.commit_blocking(batch)
}

/// [`commit_blocking`] on a blocking task.
///
/// # Durability
/// As [`commit_blocking`].
pub async fn commit(replica: &Replica, batch: WriteBatch) -> Result<BatchOutcome, StoreError> {
    replica.commit(batch).await
}

/// Deletes bodies no revision tree refers to any more; returns how many.
///
/// # Durability
/// Each step is a flushed transaction; a crash leaves the rest for later.
pub fn sweep(replica: &Replica) -> Result<u64, StoreError> {
    replica.sweep()
}
