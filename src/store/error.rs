//! Errors of the local store. I/O errors and corruption are fail-stop:
//! nothing is retried here, and the replica refuses writes it cannot prove
//! safe.

use std::path::PathBuf;

/// What went wrong in the local replica store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The replica directory could not be opened.
    #[error("cannot open replica {path}: {source}; is the path writable?")]
    Open {
        /// The replica directory.
        path: PathBuf,
        /// The storage error.
        #[source]
        source: sled::Error,
    },

    /// The replica path is a file, not a directory.
    #[error("cannot open replica {path}: not a directory; give a directory (new or a replica)")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// Another process (or this one, still) has the replica open.
    #[error("replica {path} is locked by {holder}; wait for it to finish or stop it")]
    Locked {
        /// The replica directory.
        path: PathBuf,
        /// Who holds it, as its `owner` file says.
        holder: String,
    },

    /// `open_existing` found no replica at this path.
    #[error("no replica at {path}; run `settee pull <DB_URL> {path}` first")]
    NotAReplica {
        /// The path given.
        path: PathBuf,
    },

    /// The directory holds a replica written by an incompatible settee.
    #[error("replica {path} has format {found}, this settee reads format {expected}; use a new directory or a matching settee")]
    Format {
        /// The replica directory.
        path: PathBuf,
        /// The format found on disk.
        found: u64,
        /// The format this build writes.
        expected: u64,
    },

    /// A read or write failed in the storage engine. Close the replica and
    /// reopen it; an earlier batch is either fully there or fully absent.
    #[error("replica storage error: {0}; close and reopen the replica")]
    Storage(#[from] sled::Error),

    /// Stored data could not be decoded: the replica is damaged. Pull into a
    /// new directory.
    #[error("replica data is damaged ({what} {key:?}): {detail}; pull into a new directory")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// The record's key, as text.
        key: String,
        /// The decoding error.
        detail: String,
    },

    /// A large attachment's file in the replica directory could not be
    /// written or deleted.
    #[error("cannot write attachment file {path}: {source}; is the disk full or the directory read-only?")]
    AttachmentFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A revision or document handed to the store was invalid.
    #[error("invalid document {id:?}: {reason}")]
    InvalidDocument {
        /// The document id.
        id: String,
        /// What is wrong.
        reason: String,
    },

    /// A local write's body nests objects and arrays deeper than the store
    /// keeps ([`MAX_NESTING`](crate::replica::MAX_NESTING)); nothing was written.
    /// Every settee replica refuses such a document when it pulls it.
    #[error("document {id:?} nests {depth} levels deep; settee stores at most {max} levels: flatten the document")]
    TooDeep {
        /// The document id.
        id: String,
        /// The body's deepest nesting of objects and arrays.
        depth: usize,
        /// The limit, [`MAX_NESTING`](crate::replica::MAX_NESTING).
        max: usize,
    },

    /// A document could not be deserialized into the type asked for
    /// ([`Replica::get_as`](crate::Replica::get_as)): the type does not
    /// match the document's JSON.
    #[error("document {id:?} does not fit the type asked for: {reason}")]
    Decode {
        /// The document id.
        id: String,
        /// serde's message.
        reason: String,
    },

    /// A local edit of a revision whose generation is `u64::MAX` (only a
    /// replicated revision can have one): its child cannot be numbered, so
    /// the document cannot be edited; nothing was written.
    #[error("cannot edit {id:?}: its revision {rev} is at the last generation there is, so no new revision can follow it; keep the data under a new document id")]
    LastGeneration {
        /// The document id.
        id: String,
        /// The revision the edit was based on.
        rev: String,
    },

    /// A local write named a revision that is not the document's current
    /// winner (CouchDB's 409): read the document again and redo the edit.
    #[error("conflict on {id:?}: the edit is based on {expected}, but the current revision is {current}; read the document again and redo the edit")]
    Conflict {
        /// The document id.
        id: String,
        /// The revision the edit was based on (`none` for a new document).
        expected: String,
        /// The current winner (`none` if the document does not exist).
        current: String,
    },

    /// A file-system step of opening or compacting a replica failed (the
    /// directory lock, a rename, an fsync). A compaction that fails leaves
    /// the old replica or the new one; the next open finishes the swap.
    #[error(
        "cannot {step} for replica {path}: {source}; is the path writable and on a local disk?"
    )]
    Compact {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The body log (`bodies.log`) could not be read or written.
    #[error("body log {}: could not {step}: {source}; check the disk and the replica directory's permissions", path.display())]
    BodyLog {
        /// The log file.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A blocking store task could not complete (the runtime is shutting down).
    #[error("replica task was cancelled: {0}")]
    Cancelled(String),
}

/// A transaction's own error, or sled's.
impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Storage(e),
        }
    }
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, key: &[u8], detail: impl ToString) -> Self {
        StoreError::Corrupt {
            what,
            key: String::from_utf8_lossy(key).into_owned(),
            detail: detail.to_string(),
        }
    }

    /// A document's winning revision whose body the replica does not have
    /// (invariant: every leaf keeps its body).
    pub(crate) fn winner_without_body(id: &str, rev: impl std::fmt::Display) -> Self {
        StoreError::corrupt(
            "revision body",
            id.as_bytes(),
            format!("winner {rev} has no body"),
        )
    }
}
