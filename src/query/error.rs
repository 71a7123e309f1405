//! Errors of the query layer, shaped like CouchDB's: every one has the
//! HTTP status, the `error` and the `reason` CouchDB would answer, so a
//! caller (the CLI, `settee serve`) can pass them on unchanged.

use crate::store::StoreError;
use crate::views::ViewError;
use serde_json::{json, Value};

/// What went wrong answering a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The request is malformed or contradicts itself (HTTP 400). `error`
    /// is CouchDB's word for it: `bad_request`, `query_parse_error`,
    /// `invalid_selector_json`, `no_usable_index`, …
    #[error("{error}: {reason}")]
    BadRequest {
        /// CouchDB's `error`.
        error: String,
        /// CouchDB's `reason`: what to change.
        reason: String,
    },

    /// A design document, view, index or document does not exist (HTTP 404).
    #[error("not_found: {reason}")]
    NotFound {
        /// CouchDB's `reason` (`missing`, `deleted`, `missing_named_view`…).
        reason: String,
    },

    /// A design document's JavaScript failed as a whole: it does not
    /// compile, or a reduce threw, ran too long or took too much memory.
    /// (A map function that throws for one document only gives no rows for
    /// it, as in CouchDB; that is logged, not an error.) HTTP 400 for code
    /// that does not compile, 500 otherwise.
    #[error("{error}: {reason}; fix the design document {ddoc}")]
    Script {
        /// The design document.
        ddoc: String,
        /// CouchDB's `error` (`compilation_error`, `reduce_overflow_error`,
        /// `os_process_error`, …).
        error: String,
        /// What failed.
        reason: String,
        /// The HTTP status.
        status: u16,
    },

    /// The replica failed underneath (HTTP 500).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// An index failed underneath (HTTP 500; bad options are `BadRequest`).
    #[error(transparent)]
    View(ViewError),
}

impl From<ViewError> for QueryError {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::Store(s) => QueryError::Store(s),
            ViewError::InvalidQuery(reason) => QueryError::bad("query_parse_error", reason),
            ViewError::UnknownView(name, _) => QueryError::NotFound {
                reason: format!("missing_named_view: no view {name:?}"),
            },
            other => QueryError::View(other),
        }
    }
}

impl QueryError {
    /// A 400 with CouchDB's `error` and a `reason`.
    pub(crate) fn bad(error: &str, reason: impl Into<String>) -> Self {
        QueryError::BadRequest {
            error: error.to_owned(),
            reason: reason.into(),
        }
    }

    /// A 404 with CouchDB's `reason`.
    pub(crate) fn not_found(reason: impl Into<String>) -> Self {
        QueryError::NotFound {
            reason: reason.into(),
        }
    }

    /// The HTTP status CouchDB answers for this error.
    pub fn status(&self) -> u16 {
        match self {
            QueryError::BadRequest { .. } => 400,
            QueryError::NotFound { .. } => 404,
            QueryError::Script { status, .. } => *status,
            QueryError::Store(_) | QueryError::View(_) => 500,
        }
    }

    /// CouchDB's `error` field.
    pub fn error(&self) -> &str {
        match self {
            QueryError::BadRequest { error, .. } | QueryError::Script { error, .. } => error,
            QueryError::NotFound { .. } => "not_found",
            QueryError::Store(_) | QueryError::View(_) => "internal_server_error",
        }
    }

    /// CouchDB's `reason` field.
    pub fn reason(&self) -> String {
        match self {
            QueryError::BadRequest { reason, .. }
            | QueryError::NotFound { reason }
            | QueryError::Script { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// The response body CouchDB sends: `{"error": …, "reason": …}`.
    pub fn to_json(&self) -> Value {
        json!({"error": self.error(), "reason": self.reason()})
    }
}
