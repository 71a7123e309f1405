//! What a view is: a name, a definition version and a map function over the
//! winning, non-deleted revision of a document that emits `(key, value)`
//! rows. Applications register their own next to the built-ins.
//!
//! A map function sees either the parsed document ([`View::new`]) or its
//! body as stored JSON text ([`View::new_raw`]), which lets it deserialize
//! only the fields it needs: parsing every whole body into a map is the
//! largest cost of indexing many documents.
//!
//! This file only defines the shape; the indexer (`index.rs`) runs the map
//! functions and owns the trees.

use crate::revtree::Rev;
use crate::store::Document;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;

/// Collects the rows a map function emits for one document.
#[derive(Debug, Default)]
pub struct Emitter {
    /// Values are shared: [`Emitter::emit_each`] gives many rows one value
    /// (a tag's, for each of its cards), so the indexer serializes it once.
    rows: Vec<(Value, Arc<Value>)>,
    /// Why the map function could not run at all (a design document's
    /// JavaScript out of time or memory): the view's update fails.
    failed: Option<MapFailure>,
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

    /// The map function cannot index this document, and no later one
    /// either: the view's update stops with [`super::ViewError::MapFailed`]
    /// and commits nothing of the chunk.
    pub(crate) fn fail(&mut self, error: &str, reason: String) {
        self.failed.get_or_insert(MapFailure {
            error: error.to_owned(),
            reason,
        });
    }

    pub(crate) fn failure(&mut self) -> Option<MapFailure> {
        self.failed.take()
    }
}

/// Why a map function could not run: CouchDB's `error` word for it
/// (`os_process_error`, …) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapFailure {
    pub(crate) error: String,
    pub(crate) reason: String,
}

type MapFn = dyn Fn(&Document, &mut Emitter) + Send + Sync;
type RawMapFn = dyn Fn(&RawDocument<'_>, &mut Emitter) + Send + Sync;

/// A document as a raw map function sees it: the winning revision with its
/// body as stored JSON text, not parsed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RawDocument<'a> {
    /// The document id.
    pub id: &'a str,
    /// The winning revision.
    pub rev: &'a Rev,
    /// Live leaves other than the winner (`_conflicts`).
    pub conflicts: &'a [Rev],
    /// Deleted leaves other than the winner (`_deleted_conflicts`).
    pub deleted_conflicts: &'a [Rev],
    /// The body: a JSON object without `_id` and `_rev`.
    pub body: &'a [u8],
}

impl<'a> RawDocument<'a> {
    /// A raw document from its parts.
    pub fn new(id: &'a str, rev: &'a Rev, body: &'a [u8]) -> Self {
        RawDocument {
            id,
            rev,
            conflicts: &[],
            deleted_conflicts: &[],
            body,
        }
    }

    /// With its conflicts (what [`RawDocument::to_document`] carries over).
    pub fn with_conflicts(self, conflicts: &'a [Rev], deleted_conflicts: &'a [Rev]) -> Self {
        RawDocument {
            conflicts,
            deleted_conflicts,
            ..self
        }
    }

    /// Deserializes what `T` names from the body; serde skips every other
    /// field without building it. Strings and `RawValue`s can borrow from
    /// the body. Bodies nest up to [`crate::replica::MAX_NESTING`] levels, so
    /// serde_json's recursion limit is lifted.
    ///
    /// ```
    /// use serde::Deserialize;
    /// use settee::views::RawDocument;
    ///
    /// #[derive(Deserialize)]
    /// struct Kind<'a> {
    ///     #[serde(rename = "docType")]
    ///     doc_type: Option<&'a str>,
    /// }
    /// let rev = "1-a".parse()?;
    /// let doc = RawDocument::new("c-1", &rev, br#"{"docType":"CARD","front":"x"}"#);
    /// assert_eq!(doc.fields::<Kind>()?.doc_type, Some("CARD"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fields<T: Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(self.body);
        de.disable_recursion_limit();
        let value = T::deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// The document parsed whole, as a [`View::new`] map function sees it.
    pub fn to_document(&self) -> Result<Document, serde_json::Error> {
        Ok(Document {
            id: self.id.to_owned(),
            rev: self.rev.clone(),
            deleted: false,
            body: self.fields::<Map<String, Value>>()?,
            conflicts: self.conflicts.to_vec(),
            deleted_conflicts: self.deleted_conflicts.to_vec(),
        })
    }
}

/// The two kinds of map function.
#[derive(Clone)]
enum MapKind {
    Parsed(Arc<MapFn>),
    Raw(Arc<RawMapFn>),
}

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
    map: MapKind,
    /// Whether design documents are mapped too (a design document's
    /// `options.include_design`).
    design_docs: bool,
    /// Whether `settee check` may compare stored rows with a new run of
    /// the map function (not for one that calls `Math.random()`).
    checkable: bool,
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
            map: MapKind::Parsed(Arc::new(map)),
            design_docs: false,
            checkable: true,
        }
    }

    /// A view whose map function reads the body as stored JSON text
    /// ([`RawDocument`]) instead of a parsed map: for a view that needs a
    /// few fields of every document, much cheaper to index. It must emit
    /// what the same function over the parsed document would.
    ///
    /// ```
    /// use serde::Deserialize;
    /// use serde_json::json;
    /// use settee::views::View;
    ///
    /// #[derive(Deserialize)]
    /// struct Kind<'a> {
    ///     #[serde(rename = "docType", borrow)]
    ///     doc_type: Option<std::borrow::Cow<'a, str>>,
    /// }
    /// let by_type = View::new_raw("byDocType", 1, |doc, emit| {
    ///     if let Ok(Kind { doc_type: Some(t) }) = doc.fields::<Kind>() {
    ///         emit.emit(json!(t), json!(null));
    ///     }
    /// });
    /// assert_eq!(by_type.name(), "byDocType");
    /// ```
    pub fn new_raw(
        name: impl Into<String>,
        version: u64,
        map: impl Fn(&RawDocument<'_>, &mut Emitter) + Send + Sync + 'static,
    ) -> Self {
        View {
            name: name.into(),
            version,
            map: MapKind::Raw(Arc::new(map)),
            design_docs: false,
            checkable: true,
        }
    }

    /// The same view over design documents too (CouchDB's
    /// `options.include_design`); by default they are left out.
    pub fn including_design_docs(mut self) -> Self {
        self.design_docs = true;
        self
    }

    /// A view whose map function may emit differently for the same
    /// document (it calls `Math.random()`): `settee check` then checks its
    /// index's structure, not its rows against a new run.
    pub(crate) fn nondeterministic(mut self) -> Self {
        self.checkable = false;
        self
    }

    /// Whether a new run of the map function must give the stored rows.
    pub(crate) fn map_is_checkable(&self) -> bool {
        self.checkable
    }

    /// Whether the map function sees design documents.
    pub fn sees_design_docs(&self) -> bool {
        self.design_docs
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
        match &self.map {
            MapKind::Parsed(map) => map(doc, &mut emitter),
            MapKind::Raw(map) => {
                // Printing a map of strings to values cannot fail.
                let body = serde_json::to_vec(&doc.body).unwrap_or_default();
                let raw = RawDocument::new(&doc.id, &doc.rev, &body)
                    .with_conflicts(&doc.conflicts, &doc.deleted_conflicts);
                map(&raw, &mut emitter);
            }
        }
        emitter.take()
    }

    /// Whether the map function needs the parsed document
    /// ([`View::map_parsed_or_raw`] is then given one).
    pub(crate) fn needs_parsed(&self) -> bool {
        matches!(self.map, MapKind::Parsed(_))
    }

    /// The rows of one document given raw, and parsed when
    /// [`View::needs_parsed`] (else `parsed` may be `None`; a parsed map
    /// function given `None` emits nothing).
    pub(crate) fn map_parsed_or_raw(
        &self,
        raw: &RawDocument<'_>,
        parsed: Option<&Document>,
    ) -> Result<Vec<(Value, Arc<Value>)>, MapFailure> {
        let mut emitter = Emitter::default();
        match &self.map {
            MapKind::Parsed(map) => {
                if let Some(doc) = parsed {
                    map(doc, &mut emitter);
                }
            }
            MapKind::Raw(map) => map(raw, &mut emitter),
        }
        match emitter.failure() {
            Some(reason) => Err(reason),
            None => Ok(emitter.take()),
        }
    }
}
