//! The crate-wide error: one variant per layer, so callers can match on
//! where a failure came from and what to do about it.

use crate::remote::RemoteError;
use crate::store::StoreError;
use crate::sync::SyncError;

/// Any settee error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Talking to the remote failed.
    #[error(transparent)]
    Remote(#[from] RemoteError),

    /// The local replica failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A view failed.
    #[error(transparent)]
    View(#[from] crate::views::ViewError),

    /// A query (design-doc view, `_find`, `_all_docs`, `get`) failed; it
    /// carries CouchDB's status, `error` and `reason`.
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),

    /// The replica mirrors another database than the one asked for.
    #[error("replica {path} mirrors {bound}, not {requested}; pull into a new directory or use the original URL")]
    WrongRemote {
        /// The replica directory.
        path: String,
        /// The database the replica mirrors.
        bound: String,
        /// The database asked for.
        requested: String,
    },

    /// The sync service's root directory or a sync failed.
    #[error(transparent)]
    Sync(#[from] SyncError),

    /// A setting was out of range: fix the value in the configuration
    /// (nothing was read or written).
    #[error("invalid setting {setting} = {value}: {expected}")]
    InvalidSetting {
        /// The setting's name as the configuration spells it
        /// (`batch_size`, `gate.field_path`).
        setting: &'static str,
        /// The value given, as text.
        value: String,
        /// What it must be.
        expected: &'static str,
    },

    /// `settee serve` could not listen on its address (taken, not this
    /// machine's, not allowed): choose another `--bind`/`--port`.
    #[error("cannot serve on {addr}: {reason}")]
    Serve {
        /// The address asked for.
        addr: String,
        /// What the system said.
        reason: String,
    },
}

/// `Result` with settee's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
