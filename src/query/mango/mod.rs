//! Mango: CouchDB 3.4's `_find`, `_explain` and `_index`, answered from the
//! replica with CouchDB's semantics, errors and response shapes.
//!
//! ```text
//!  FindRequest (request.rs: the body, validated)
//!     │  selector.rs: parse, normalize, match
//!     ▼
//!  plan.rs ── index.rs: `_all_docs` + json indexes of `language: query` design docs
//!     │        (each a crate::views View: [field values] → null)
//!     ▼
//!  find.rs: read the range (store in _id order, or the view), match, page
//!  explain.rs: the same plan, described
//! ```
//!
//! Reads go through `Replica`'s public reads; the only writes are index
//! views' trees (through `crate::views`) and, for `_index`, design
//! documents through the replica's local-write path.

mod erl;
mod explain;
mod find;
mod index;
mod plan;
mod request;
mod selector;

pub(crate) use explain::explain;
pub(crate) use find::find;
pub(crate) use index::{
    create as create_index, delete as delete_index, index_views, list_json as list_indexes,
};
pub use request::{ExecutionStats, FindRequest, FindResponse, DEFAULT_LIMIT};
#[cfg(feature = "serve")]
pub(crate) use selector::Selector;
