//! What a view is: a name, a definition version and a map function over the
//! winning, non-deleted revision of a document that emits `(key, value)`
//! rows. Applications register their own next to the built-ins.
//!
//! This file only defines the shape; the indexer (`index.rs`) runs the map
//! functions and owns the trees.

use crate::store::Document;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// Collects the rows a map function emits for one document.
#[derive(Debug, Default)]
pub struct Emitter {
    /// Values are shared: [`Emitter::emit_each`] gives many rows one value
    /// (a tag's, for each of its cards), so the indexer serializes it once.
    rows: Vec<(Value, Arc<Value>)>,
}

impl Emitter {
    /// Emits one row (CouchDB's `emit(key, value)`).
    pub fn emit(&mut self, key: Value, value: Value) {
        self.rows.push((key, Arc::new(value)));
    }

    /// Emits one row per key, all with the same value: what a loop of
    /// [`Emitter::emit`] would, without a copy of the value per row.
    ///
    /// ```
    /// use serde_json::json;
    /// use settee::views::View;
    ///
    /// let tags = View::new("tags", 1, |doc, emit| {
    ///     if let Some(cards) = doc.body.get("taggedCards").and_then(|c| c.as_array()) {
    ///         emit.emit_each(cards.iter().cloned(), json!({"tag": doc.id}));
    ///     }
    /// });
    /// assert_eq!(tags.name(), "tags");
    /// ```
    pub fn emit_each(&mut self, keys: impl IntoIterator<Item = Value>, value: Value) {
        let value = Arc::new(value);
        self.rows
            .extend(keys.into_iter().map(|k| (k, Arc::clone(&value))));
    }

    pub(crate) fn take(&mut self) -> Vec<(Value, Arc<Value>)> {
        std::mem::take(&mut self.rows)
    }
}

type MapFn = dyn Fn(&Document, &mut Emitter) + Send + Sync;

/// A named map function and the version of its definition.
///
/// Bump `version` whenever the function's output for the same document may
/// change: the index is then rebuilt from scratch on its next update.
///
/// ```
/// use serde_json::json;
/// use settee::views::View;
///
/// let by_type = View::new("byDocType", 1, |doc, emit| {
///     if let Some(t) = doc.body.get("docType") {
///         emit.emit(t.clone(), json!(null));
///     }
/// });
/// assert_eq!(by_type.name(), "byDocType");
/// ```
#[derive(Clone)]
pub struct View {
    name: String,
    version: u64,
    map: Arc<MapFn>,
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl View {
    /// A view from its name, definition version and map function. The map
    /// function sees the winning revision of every live, non-design
    /// document and must be deterministic (two replicas of the same data
    /// must build the same index).
    pub fn new(
        name: impl Into<String>,
        version: u64,
        map: impl Fn(&Document, &mut Emitter) + Send + Sync + 'static,
    ) -> Self {
        View {
            name: name.into(),
            version,
            map: Arc::new(map),
        }
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Runs the map function over one document.
    pub fn map(&self, doc: &Document) -> Vec<(Value, Value)> {
        self.map_shared(doc)
            .into_iter()
            .map(|(k, v)| (k, Arc::unwrap_or_clone(v)))
            .collect()
    }

    /// The rows of one document, values shared as emitted.
    pub(crate) fn map_shared(&self, doc: &Document) -> Vec<(Value, Arc<Value>)> {
        let mut emitter = Emitter::default();
        (self.map)(doc, &mut emitter);
        emitter.take()
    }
}
