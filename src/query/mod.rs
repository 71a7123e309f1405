//! The app's reads, answered from the replica as CouchDB answers them:
//! design-document views run in sandboxed JavaScript, Mango `_find` with
//! its indexes, `_all_docs`, and `get` with CouchDB's options.
//!
//! ```text
//!  store (docs, by_seq, _design/* documents)
//!     │
//!     ├── design.rs   the replica's design docs → view definitions (a signature per view)
//!     │      └── crate::js  sandboxed QuickJS: map, reduce, require
//!     ├── crate::views      one index per view, kept current from the local sequence
//!     ├── view.rs     a design-doc view query; reduce.rs groups and reduces
//!     ├── warm.rs     every index brought up to date; indexes of gone design docs dropped
//!     ├── mango/      `_find`, `_index`, `_explain`
//!     ├── all_docs.rs `_all_docs`
//!     ├── get.rs      `GET /db/{id}` with its options
//!     └── params.rs   CouchDB's query parameters, from a query string or JSON
//! ```
//!
//! Everything here reads the store through `Replica`'s public reads and
//! writes nothing but index trees (and, for `_index`, a design document
//! through the replica's local-write path).
//!
//! ```
//! use serde_json::json;
//! use settee::query::Query;
//! use settee::views::QueryOptions;
//! use settee::{Replica, ReplicaConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
//! replica.put_blocking("_design/cards", &json!({
//!     "views": {"byScore": {
//!         "map": "function (doc) { if (doc.docType === 'CARD') emit(doc.score, null); }",
//!         "reduce": "_count"
//!     }}
//! }))?;
//! replica.put_blocking("c1", &json!({"docType": "CARD", "score": 1010}))?;
//! replica.put_blocking("c2", &json!({"docType": "CARD", "score": 990}))?;
//!
//! let query = Query::open(&replica)?;
//! let map = query.view("cards", "byScore", &QueryOptions::default().reduce(false))?;
//! assert_eq!(map.rows()[0].id, "c2");
//! let count = query.view("cards", "byScore", &QueryOptions::default())?;
//! assert_eq!(count.to_json(), json!({"rows": [{"key": null, "value": 2}]}));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod all_docs;
mod design;
mod error;
mod get;
mod mango;
mod params;
mod ranks;
mod reduce;
mod view;
mod warm;

pub use crate::js::Limits as ScriptLimits;
pub use all_docs::{AllDocsQuery, AllDocsResponse, AllDocsRow};
pub use error::QueryError;
pub use get::{GetOptions, OpenRevs};
pub use reduce::ReducedRow;
pub use view::ViewResponse;
pub use warm::{QueryWarm, ViewFailure};

#[cfg(feature = "serve")]
pub(crate) use mango::Selector;
pub use mango::{ExecutionStats, FindRequest, FindResponse, DEFAULT_LIMIT};

use crate::store::Replica;
use crate::views::{QueryOptions, View};
use serde_json::Value;

/// The query engine of one replica: cheap to clone, safe to share.
#[derive(Debug, Clone)]
pub struct Query {
    replica: Replica,
    limits: ScriptLimits,
    /// `_all_docs`' offsets, shared by the clones.
    ranks: std::sync::Arc<ranks::Ranks>,
}

impl Query {
    /// The query engine of `replica`, with the default limits on design
    /// documents' JavaScript.
    pub fn open(replica: &Replica) -> Result<Query, QueryError> {
        Ok(Query {
            replica: replica.clone(),
            limits: ScriptLimits::default(),
            ranks: std::sync::Arc::default(),
        })
    }

    /// With these limits on design documents' JavaScript.
    pub fn with_limits(mut self, limits: ScriptLimits) -> Query {
        self.limits = limits;
        self
    }

    /// The replica it reads.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// `GET /db/_design/{ddoc}/_view/{view}`: `ddoc` with or without its
    /// `_design/` prefix. Brings the view's index up to date first (unless
    /// `update` says otherwise); 404 `missing`/`deleted` for the design
    /// document, `missing_named_view` for the view, as CouchDB answers.
    pub fn view(
        &self,
        ddoc: &str,
        view: &str,
        options: &QueryOptions,
    ) -> Result<ViewResponse, QueryError> {
        view::query(&self.replica, self.limits, ddoc, view, options)
    }

    /// `GET /db/_all_docs` (or `POST` with `keys`): CouchDB 3.4's answer
    /// from the replica; its body is [`AllDocsResponse::to_json`].
    pub fn all_docs(&self, query: &AllDocsQuery) -> Result<AllDocsResponse, QueryError> {
        all_docs::all_docs(&self.replica, &self.ranks, query)
    }

    /// `GET /db/{id}` with CouchDB 3.4's options: the body CouchDB sends
    /// (an array for `open_revs`), or its 404 (`missing`, `deleted`) or 400.
    pub fn get(&self, id: &str, options: &GetOptions) -> Result<Value, QueryError> {
        get::get(&self.replica, id, options)
    }

    /// Brings the index of every view of the replica's design documents
    /// up to date (what the sync service does before `ready`, so the first
    /// query does not wait), and drops the indexes of views that are gone
    /// or changed. A view whose code fails does not stop the others: it is
    /// listed in [`QueryWarm::failed`].
    ///
    /// Blocking: from async code call it in `spawn_blocking`.
    pub fn warm(&self) -> Result<QueryWarm, QueryError> {
        warm::warm(&self.replica, self.limits)
    }

    /// View `view` of design document `ddoc` as a map function, for a
    /// changes feed's `filter=_view`.
    #[cfg(feature = "serve")]
    pub(crate) fn map_of(&self, ddoc: &str, view: &str) -> Result<View, QueryError> {
        view::map_of(&self.replica, self.limits, ddoc, view)
    }

    /// Filter function `name` of design document `ddoc` run with the
    /// request object `req`, as a map that emits for what passes, for a
    /// changes feed's `filter=ddoc/name`.
    #[cfg(feature = "serve")]
    pub(crate) fn filter_of(
        &self,
        ddoc: &str,
        name: &str,
        req: &Value,
    ) -> Result<View, QueryError> {
        view::filter_of(&self.replica, self.limits, ddoc, name, req)
    }

    /// The index-engine views of the replica's design documents (for
    /// `settee check`).
    pub fn index_views(&self) -> Result<Vec<View>, QueryError> {
        warm::index_views(&self.replica, self.limits)
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
