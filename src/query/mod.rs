//! The app's reads, answered from the replica as CouchDB answers them:
//! design-document views run in sandboxed JavaScript, Mango `_find` with
//! its indexes, `_all_docs`, and `get` with CouchDB's options.
//!
//! ```text
//!  store (docs, by_seq, _design/* documents)
//!     │
//!     ├── design.rs   the replica's design docs → view definitions (signature per view)
//!     │      └── crate::js  sandboxed QuickJS: map, reduce, require
//!     ├── views (crate::views)  one index per view, kept current from the local sequence
//!     ├── view.rs     a design-doc view query: rows, reduce/group (reduce.rs)
//!     ├── mango/      `_find`, `_index`, `_explain`
//!     ├── all_docs.rs `_all_docs`
//!     └── get.rs      `GET /db/{id}` with its options
//! ```
//!
//! Everything here reads the store through `Replica`'s public reads and
//! writes nothing but index trees (and, for `_index`, a design document
//! through the replica's local-write path).

mod all_docs;
mod error;
mod get;
mod params;

pub use all_docs::{AllDocsQuery, AllDocsResponse, AllDocsRow};
pub use error::QueryError;
pub use get::{GetOptions, OpenRevs};

use crate::store::Replica;
use serde_json::Value;

/// The query engine of one replica: cheap to clone, safe to share.
#[derive(Debug, Clone)]
pub struct Query {
    replica: Replica,
}

impl Query {
    /// The query engine of `replica`.
    pub fn open(replica: &Replica) -> Result<Query, QueryError> {
        Ok(Query {
            replica: replica.clone(),
        })
    }

    /// The replica it reads.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// `GET /db/_all_docs` (or `POST` with `keys`): CouchDB 3.4's answer
    /// from the replica; its body is [`AllDocsResponse::to_json`].
    pub fn all_docs(&self, query: &AllDocsQuery) -> Result<AllDocsResponse, QueryError> {
        all_docs::all_docs(&self.replica, query)
    }

    /// `GET /db/{id}` with CouchDB 3.4's options: the body CouchDB sends
    /// (an array for `open_revs`), or its 404 (`missing`, `deleted`) or 400.
    pub fn get(&self, id: &str, options: &GetOptions) -> Result<Value, QueryError> {
        get::get(&self.replica, id, options)
    }
}
