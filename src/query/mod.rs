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

mod error;
mod mango;

pub use error::QueryError;
pub use mango::{ExecutionStats, FindRequest, FindResponse, DEFAULT_LIMIT};
// The views of every Mango json index, for the warm-up after a pull.
#[allow(unused_imports)]
pub(crate) use mango::index_views;

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

    /// Mango `_find` (CouchDB 3.4's semantics, errors and body): the
    /// matching live documents, in the index's order.
    ///
    /// ```
    /// use serde_json::json;
    /// use settee::query::{FindRequest, Query};
    /// use settee::{Replica, ReplicaConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
    /// for (id, elo) in [("a", 900), ("b", 1100), ("c", 1300)] {
    ///     replica.put_blocking(id, &json!({"docType": "CARD", "elo": elo}))?;
    /// }
    /// let query = Query::open(&replica)?;
    /// query.create_index(&json!({"index": {"fields": ["elo"]}}))?;
    /// let req = FindRequest::from_json(json!({
    ///     "selector": {"elo": {"$gt": 1000}}, "sort": [{"elo": "desc"}], "fields": ["_id"]
    /// }))?;
    /// let found = query.find(&req)?;
    /// assert_eq!(found.docs, vec![json!({"_id": "c"}), json!({"_id": "b"})]);
    /// assert_eq!(found.warning, None); // served by the index
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn find(&self, req: &FindRequest) -> Result<FindResponse, QueryError> {
        mango::find(&self.replica, req)
    }

    /// Mango `_explain`: how [`Query::find`] would answer `req`, in
    /// CouchDB's shape (`dbname` is the replica's remote database name,
    /// if bound).
    pub fn explain(&self, req: &FindRequest) -> Result<Value, QueryError> {
        let db = self
            .replica
            .remote()?
            .map(|r| r.db_name)
            .unwrap_or_default();
        mango::explain(&self.replica, &db, req)
    }

    /// `POST /db/_index`: creates a json index (a view of a design
    /// document with `"language": "query"`, written as CouchDB writes it
    /// and pushed like any local edit). Returns CouchDB's
    /// `{"result": "created" | "exists", "id", "name"}`.
    ///
    /// # Durability
    /// The design document is written with [`Replica::put_blocking`]: after
    /// `Ok` it and its queued push survive a crash.
    pub fn create_index(&self, body: &Value) -> Result<Value, QueryError> {
        mango::create_index(&self.replica, body)
    }

    /// `GET /db/_index`: `{"total_rows", "indexes"}`, `_all_docs` first.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let replica = settee::Replica::open(dir.path(), settee::ReplicaConfig::default())?;
    /// let query = settee::query::Query::open(&replica)?;
    /// let listed = query.indexes()?;
    /// assert_eq!(listed["indexes"][0]["name"], "_all_docs");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn indexes(&self) -> Result<Value, QueryError> {
        mango::list_indexes(&self.replica)
    }

    /// `DELETE /db/_index/{ddoc}/json/{name}`: `{"ok": true}`, or a 404.
    ///
    /// # Durability
    /// As [`Query::create_index`].
    pub fn delete_index(&self, ddoc: &str, name: &str) -> Result<Value, QueryError> {
        mango::delete_index(&self.replica, ddoc, name)
    }
}
