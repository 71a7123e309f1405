//! Read-side views: indexes of the replica's documents in CouchDB view
//! collation order, kept current from the replica's local sequence.
//!
//! ```text
//!  store (docs, by_seq) ──changes(since)──► index.rs ──► views tree: r… blocks of rows (collation order)
//!        │                                   │ map fns              b… blocks: doc id → its row keys
//!        └─ watch_update_seq (durable seq) ──┘                      s… seq, version, row count
//!                                                           │
//!                         query.rs (CouchDB options) ◄──────┘
//! ```
//!
//! - `view.rs`: [`View`], a named, versioned map function; [`Emitter`].
//! - `collate.rs`: [`collate`] and [`encode_key`], CouchDB's collation as
//!   a comparison and as order-preserving bytes (ICU4X sort keys).
//! - `index.rs`: the indexer (one atomic sled batch per view per chunk of
//!   changes).
//! - `parallel.rs`: a large backlog read and mapped on several threads,
//!   in order, and views' blocks prepared side by side.
//! - `block.rs`: sorted blocks, many rows (or back-index entries) per sled
//!   entry: their format, edits and scans.
//! - `query.rs`: [`QueryOptions`], [`ViewRow`], [`ViewResult`].
//! - `course.rs` ([`course`]): the course app's `elo` and `getTags` views
//!   and their helpers: application code, registered by the app.
//! - `check.rs`: [`check`], the view half of `settee check`: rows against
//!   back-index, live documents and the map functions.
//!
//! Views sit above the store: they read it through `Replica`'s public
//! reads and keep their own trees; the store knows nothing of them. Views
//! are derived data: deleting their trees (or bumping a view's version)
//! rebuilds them from the documents.
//!
//! ```
//! use serde_json::json;
//! use settee::views::{course, QueryOptions, Views};
//! use settee::{Replica, ReplicaConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
//! let views = Views::open(&replica, course::views()).unwrap();   // elo and getTags
//! let report = views.warm().unwrap();            // after a pull: index what it brought
//! assert_eq!(report.views.len(), 2);
//! let near = course::cards_near_rating(&views, 1000.0, 10).unwrap();
//! assert!(near.is_empty());
//! let result = views.query("elo", &QueryOptions::default().start_key(json!(900))).unwrap();
//! assert_eq!(result.total_rows, 0);
//! ```

mod block;
mod check;
mod collate;
pub mod course;
mod error;
mod fx;
mod index;
pub(crate) mod parallel;
mod query;
mod view;

pub use check::{check, ViewBuild, ViewCheck, ViewCheckReport, ViewViolation};
pub use collate::{collate, collate_str, encode_key};
pub use error::ViewError;
pub use index::{ViewState, ViewWarm, WarmReport};
pub use query::{QueryOptions, Rows, Update, ViewResult, ViewRow};
pub use view::{Emitter, RawDocument, View};

use crate::store::Replica;
use index::{ChunkLimits, Index};
use std::sync::Arc;

/// The registered views of one replica: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Views {
    inner: Arc<Inner>,
}

struct Inner {
    replica: Replica,
    index: Index,
    views: Vec<View>,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("replica", &self.inner.replica)
            .field("views", &self.inner.views)
            .finish()
    }
}

impl Views {
    /// The indexes of `views` over `replica` (an app's own [`View`]s, e.g.
    /// the course app's [`course::views`]). Names must be unique and at
    /// most 65535 bytes long.
    pub fn open(
        replica: &Replica,
        views: impl IntoIterator<Item = View>,
    ) -> Result<Views, ViewError> {
        let views: Vec<View> = views.into_iter().collect();
        for (i, v) in views.iter().enumerate() {
            if v.name().is_empty() || v.name().len() > usize::from(u16::MAX) {
                return Err(ViewError::InvalidQuery(format!(
                    "view name {:?} must be 1 to 65535 bytes long",
                    v.name()
                )));
            }
            if views[..i].iter().any(|w| w.name() == v.name()) {
                return Err(ViewError::InvalidQuery(format!(
                    "view {:?} is registered twice",
                    v.name()
                )));
            }
        }
        Ok(Views {
            inner: Arc::new(Inner {
                replica: replica.clone(),
                index: Index::open(replica)?,
                views,
            }),
        })
    }

    /// The replica the views read.
    pub fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    /// The registered views.
    pub fn views(&self) -> &[View] {
        &self.inner.views
    }

    fn view(&self, name: &str) -> Result<&View, ViewError> {
        self.inner
            .views
            .iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.inner.views.iter().map(View::name).collect();
                ViewError::UnknownView(name.to_owned(), names.join(", "))
            })
    }

    /// Brings every registered view up to date with the replica (what the
    /// sync service does after a pull, so the first query is as fast as
    /// the next), reading each changed document once for all views.
    /// Blocking: from async code call it in `spawn_blocking`.
    ///
    /// A large backlog (a build from nothing) is read and mapped on up to
    /// four threads, as many as there are cores (`SETTEE_VIEW_THREADS`
    /// overrides; 1 turns threads off), and the views of a large chunk are
    /// written side by side; the result is the same index.
    ///
    /// # Durability
    /// Per chunk of changes, one atomic sled batch per view holds the
    /// view's rows and back-index entries of the chunk and its new
    /// sequence; flushed before `Ok`. A kill leaves each view at its last
    /// committed chunk, and the next warm-up or query continues from there.
    /// After an `Err`, some chunks may be committed (and are consistent).
    pub fn warm(&self) -> Result<WarmReport, ViewError> {
        self.warm_with(ChunkLimits::default())
    }

    /// [`Views::warm`] with chunks and threads set by the caller (tests).
    pub(crate) fn warm_with(&self, limits: ChunkLimits) -> Result<WarmReport, ViewError> {
        let all: Vec<&View> = self.inner.views.iter().collect();
        let report = self.inner.index.catch_up(&all, limits)?;
        tracing::debug!(
            docs = report.docs_indexed(),
            ms = report.elapsed.as_millis() as u64,
            "views warmed"
        );
        Ok(report)
    }

    /// Brings one view up to date (see [`Views::warm`] for durability).
    pub fn update(&self, name: &str) -> Result<ViewWarm, ViewError> {
        let view = self.view(name)?;
        let mut report = self.inner.index.catch_up(&[view], ChunkLimits::default())?;
        Ok(report.views.pop().unwrap_or_default())
    }

    /// Brings a view up to date unless it already covers the replica's
    /// durable sequence (a cheap check: one state read).
    pub(crate) fn update_if_needed(&self, name: &str) -> Result<(), ViewError> {
        let view = self.view(name)?;
        let durable = *self.inner.replica.watch_update_seq().borrow();
        match self.inner.index.state(name)? {
            Some(s) if s.version == view.version() && s.seq >= durable => Ok(()),
            _ => self.update(name).map(|_| ()),
        }
    }

    /// The names of every view with an index in the replica (registered
    /// here or not).
    pub(crate) fn indexed(&self) -> Result<Vec<String>, ViewError> {
        self.inner.index.names()
    }

    /// Deletes the index of a view (registered here or not): its rows,
    /// back-index and state.
    pub(crate) fn drop_index(&self, name: &str) -> Result<(), ViewError> {
        self.inner.index.drop_view(name)
    }

    /// Checks the replica's view indexes against its documents with the
    /// registered views' map functions: [`check()`].
    pub fn check(&self) -> Result<ViewCheckReport, ViewError> {
        check(&self.inner.replica, &self.inner.views)
    }

    /// The progress of a view (`None` before its first update).
    pub fn state(&self, name: &str) -> Result<Option<ViewState>, ViewError> {
        self.view(name)?;
        self.inner.index.state(name)
    }

    fn before_read(&self, name: &str, update: Update) -> Result<(), ViewError> {
        match update {
            Update::True => self.update_if_needed(name),
            Update::False => self.view(name).map(|_| ()),
            Update::Lazy => {
                self.view(name)?;
                let views = self.clone();
                let name = name.to_owned();
                std::thread::spawn(move || {
                    if let Err(e) = views.update(&name) {
                        tracing::warn!(view = %name, error = %e, "lazy view update failed");
                    }
                });
                Ok(())
            }
        }
    }

    /// The rows of a query, lazily, in the query's order: the streaming
    /// form of [`Views::query`] (no `total_rows` or `offset`). With
    /// `update: Lazy` the background update starts at once and rows read
    /// later may already reflect it.
    pub fn rows<'a>(&'a self, name: &'a str, q: &QueryOptions) -> Result<Rows<'a>, ViewError> {
        map_only(q)?;
        self.before_read(name, q.update)?;
        let ranges = query::ranges(q)?;
        if !self.inner.index.readable(name)? {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(query::walk(
            &self.inner.index.tree,
            &self.inner.replica,
            name,
            ranges,
            q,
        ))
    }

    /// Runs a query with CouchDB's options and collects CouchDB's response
    /// shape. `offset` costs a walk over the rows before the first one.
    pub fn query(&self, name: &str, q: &QueryOptions) -> Result<ViewResult, ViewError> {
        map_only(q)?;
        let read = QueryOptions {
            update: match q.update {
                Update::True => Update::True,
                Update::False | Update::Lazy => Update::False,
            },
            ..q.clone()
        };
        self.before_read(name, read.update)?;
        let ranges = query::ranges(q)?;
        if !self.inner.index.readable(name)? {
            if q.update == Update::Lazy {
                self.before_read(name, Update::Lazy)?;
            }
            return Ok(ViewResult {
                total_rows: 0,
                offset: 0,
                rows: Vec::new(),
                update_seq: q.update_seq.then_some(0),
            });
        }
        let offset = match (&q.keys, ranges.first()) {
            (None, Some(first)) => {
                query::rows_before(&self.inner.index.tree, name, first, q.descending)?
                    + q.skip as u64
            }
            _ => 0,
        };
        let state = self.inner.index.state(name)?;
        let total_rows = state.as_ref().map_or(0, |s| s.rows);
        let update_seq = q.update_seq.then(|| state.as_ref().map_or(0, |s| s.seq));
        let rows = query::walk(&self.inner.index.tree, &self.inner.replica, name, ranges, q)
            .collect::<Result<Vec<_>, _>>()?;
        if q.update == Update::Lazy {
            self.before_read(name, Update::Lazy)?;
        }
        Ok(ViewResult {
            total_rows,
            offset: offset.min(total_rows),
            rows,
            update_seq,
        })
    }
}

/// These views have no reduce function: CouchDB's answers to reduce
/// options on a map-only view.
fn map_only(q: &QueryOptions) -> Result<(), ViewError> {
    if q.reduce == Some(true) {
        return Err(ViewError::InvalidQuery(
            "Reduce is invalid for map-only views.".into(),
        ));
    }
    if q.group || q.group_level.is_some() {
        return Err(ViewError::InvalidQuery(
            "Invalid use of grouping on a map view.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
