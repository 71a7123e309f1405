//! Typed reads of what pulls leave in a replica: the checkpoint of a
//! replication, the summary of the last completed pull, and
//! [`ReplicaStatus`], the whole picture `settee status` prints.
//!
//! The store keeps these records as opaque JSON (it knows nothing of
//! pulls); this module owns their shapes and only reads: checkpoints are
//! written by the pull, in the transaction of the batch they cover.

use super::{Checkpoint, PullResult};
use crate::store::{RemoteBinding, Replica, StoreError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A replica at a glance: counts, size, the remote it mirrors and its last
/// completed pull. Serializes to the JSON of `settee status --json`.
///
/// ```
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
/// let status = settee::replicate::status(&replica).unwrap();
/// assert_eq!(status.doc_count, 0);
/// assert!(status.remote.is_none() && status.last_pull.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The replica's directory.
    #[serde(serialize_with = "path_lossy")]
    pub path: PathBuf,
    /// Live documents (winner not deleted).
    pub doc_count: u64,
    /// Documents whose winner is a tombstone.
    pub doc_del_count: u64,
    /// The local update sequence.
    pub update_seq: u64,
    /// The remote this replica mirrors, once a pull has recorded it.
    pub remote: Option<RemoteBinding>,
    /// The summary of the last completed pull.
    pub last_pull: Option<PullResult>,
    /// Bytes on disk, as sled reports them.
    pub size_on_disk: u64,
}

/// A path prints as text even when it is not UTF-8 (lossily), so a status
/// can always be shown.
fn path_lossy<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// The checkpoint a pull keeps under `replication_id` (see
/// [`replication_id`](crate::replicate::replication_id)): everything up to its
/// `last_seq` is in the replica. Read-only: only a pull writes it, with
/// the batch it covers.
///
/// # Errors
/// [`StoreError::Corrupt`] when the stored checkpoint cannot be read
/// (a pull then starts over from the beginning, which is safe).
pub fn checkpoint(
    replica: &Replica,
    replication_id: &str,
) -> Result<Option<Checkpoint>, StoreError> {
    replica.stored_checkpoint(replication_id)
}

/// What the last completed pull into this replica did, once one has.
///
/// # Errors
/// [`StoreError::Corrupt`] when the stored summary cannot be read.
pub fn last_pull(replica: &Replica) -> Result<Option<PullResult>, StoreError> {
    replica.stored_last_pull()
}

/// Counts, size, remote and last pull in one value (`settee status`).
pub fn status(replica: &Replica) -> Result<ReplicaStatus, StoreError> {
    Ok(ReplicaStatus {
        path: replica.path().to_path_buf(),
        doc_count: replica.doc_count()?,
        doc_del_count: replica.deleted_count()?,
        update_seq: replica.update_seq()?,
        remote: replica.remote()?,
        last_pull: last_pull(replica)?,
        size_on_disk: replica.size_on_disk()?,
    })
}
