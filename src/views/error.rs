//! Errors of the view layer: the store's, plus what a query can get wrong.
//! An unknown view or a bad option is the caller's mistake and says so; a
//! damaged index says to rebuild it (views are derived data).

use crate::store::StoreError;

/// What went wrong reading or updating a view.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The replica under the view failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// No view of that name is registered.
    #[error("no view named {0:?}; registered views: {1}")]
    UnknownView(String, String),

    /// The query's options contradict each other (CouchDB answers 400).
    #[error("invalid view query: {0}")]
    InvalidQuery(String),

    /// A view's map function could not run (a design document's
    /// JavaScript ran out of time or memory): its update stopped at the
    /// last committed chunk. Other views are not affected.
    #[error("view {view:?} cannot index document {id:?}: {error}: {reason}")]
    MapFailed {
        /// The view.
        view: String,
        /// The document it failed on.
        id: String,
        /// CouchDB's word for it (`os_process_error`, `map_runtime_error`…).
        error: String,
        /// What happened; fix the map function.
        reason: String,
    },

    /// An index entry could not be decoded: the index is damaged. Views
    /// are derived data; delete the replica's view trees (or bump the
    /// view's version) to rebuild it.
    #[error("view {view:?} index is damaged: {detail}; rebuild the view")]
    Corrupt {
        /// The view.
        view: String,
        /// What could not be decoded.
        detail: String,
    },
}

impl From<sled::Error> for ViewError {
    fn from(e: sled::Error) -> Self {
        ViewError::Store(StoreError::Storage(e))
    }
}
