//! The sync service: what an application calls to keep local replicas of
//! many remote databases of one server (the seed's `CourseSyncService`,
//! and the scheduled sync of seed 001).
//!
//! ```text
//!  ensure_synced(db) ──► gate ──► staleness ──► pull ──► warm ──► ready
//!  (coalesced per db)   (config   (db-epoch,    (replicate,  (views,  (swap if
//!                        doc)      uuid, seqs,   ≤ N dbs      hooks)  rebuilt,
//!                                  revs probe)   at once)             carry writes,
//!                                                                     push worker)
//! ```
//!
//! It sits above `replicate`, `store`, `views` and `outbox`, and below the
//! CLI: it decides when to pull and into which replica, warms the replica's
//! views ([`SyncConfig::views`]) before calling it ready, runs one push
//! worker per live replica ([`SyncConfig::push`]), and owns the sync root's
//! layout ([`SyncRoot`]) and the swap of a rebuilt replica. It writes no
//! documents itself (the pull does) except when a rebuild carries the old
//! replica's unpushed local writes over to the new one (`carry.rs`).
//! Applications add their own steps through [`SyncHooks`].

mod carry;
mod config;
mod gate;
mod hooks;
mod root;
mod schedule;
mod service;
mod stale;
mod status;

pub use config::{FailurePolicy, GateConfig, Refresh, ScheduleConfig, SyncConfig};
pub use hooks::SyncHooks;
pub use root::SyncRoot;
pub use schedule::ScheduleHandle;
pub use service::SyncService;
pub use status::{
    FailureKind, RebuildReason, SyncFailure, SyncReport, SyncRun, SyncState, SyncStatus,
};

use std::path::{Path, PathBuf};

/// What the sync service itself can fail with (remote and store errors
/// keep their own types).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A file or directory of the sync root could not be used.
    #[error("{path}: {source}; check the sync root's permissions and free space")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file of the sync root does not hold what it should.
    #[error("{path} {reason}; delete the database's directory to sync it again from scratch")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The sync was stopped (schedule stopped or service shut down).
    #[error("the sync was stopped before it finished; the next sync resumes from the last committed batch")]
    Stopped,
}

impl SyncError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        SyncError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
