//! View queries with CouchDB's options, answered from the index trees:
//! options become one byte range per requested key range (collation order
//! is byte order), the range is walked forwards or backwards, and `skip`,
//! `limit` and `include_docs` apply on the way out. At the bottom is a lazy
//! iterator of rows; [`ViewResult`] collects it into CouchDB's response.
//!
//! Rows live in sorted blocks (`block.rs`); a range starts at the block
//! at or before its first bound. This file only reads the tree; updating
//! it is `index.rs`'s job.

use super::block::{self, Scan};
use super::collate::{encode_key, encode_str};
use super::error::ViewError;
use super::index::{decode_row, view_prefix};
use crate::store::Replica;
use serde_json::{json, Map, Value};
use std::ops::Bound;

/// When a query brings its view up to date (CouchDB's `update`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// Catch up with the replica first (the default).
    #[default]
    True,
    /// Answer from the index as it is.
    False,
    /// Answer from the index as it is, then catch up in the background.
    Lazy,
}

/// CouchDB's view query options. Keys are JSON values, as in the query
/// string of `GET /db/_design/d/_view/v`.
///
/// ```
/// use serde_json::json;
/// use settee::views::QueryOptions;
///
/// let q = QueryOptions::default().start_key(json!(900)).end_key(json!(1100)).limit(10);
/// assert_eq!(q.limit, Some(10));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueryOptions {
    /// Only rows with exactly this key.
    pub key: Option<Value>,
    /// Only rows with these keys, in this order (each key's rows in
    /// collation order of their doc ids); with `descending`, the reverse
    /// of that whole answer, as CouchDB 3.2+ gives it. A key listed more
    /// than once is answered each time, whole, as PouchDB does (a sharded
    /// CouchDB merges the repetitions' rows in shard order instead).
    pub keys: Option<Vec<Value>>,
    /// First key of the range (the highest with `descending`).
    pub start_key: Option<Value>,
    /// With `start_key`: the first doc id among rows of that key.
    pub start_key_doc_id: Option<String>,
    /// Last key of the range.
    pub end_key: Option<Value>,
    /// With `end_key`: the last doc id among rows of that key.
    pub end_key_doc_id: Option<String>,
    /// Whether rows equal to the end key are included (default true).
    pub inclusive_end: bool,
    /// Walk the index backwards.
    pub descending: bool,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Skip this many rows first.
    pub skip: usize,
    /// Add each row's document (its winning revision).
    pub include_docs: bool,
    /// When to bring the index up to date.
    pub update: Update,
    /// With `include_docs`: add `_conflicts` to each document.
    pub conflicts: bool,
    /// Reduce the rows (`None`: if the view has a reduce function). Only
    /// design-document views reduce (`settee::query`).
    pub reduce: Option<bool>,
    /// Group reduced rows by key (`group=true`).
    pub group: bool,
    /// Group reduced rows by the first N elements of array keys.
    pub group_level: Option<usize>,
    /// Add the sequence the index covers to the response (`update_seq`).
    pub update_seq: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            key: None,
            keys: None,
            start_key: None,
            start_key_doc_id: None,
            end_key: None,
            end_key_doc_id: None,
            inclusive_end: true,
            descending: false,
            limit: None,
            skip: 0,
            include_docs: false,
            update: Update::True,
            conflicts: false,
            reduce: None,
            group: false,
            group_level: None,
            update_seq: false,
        }
    }
}

impl QueryOptions {
    /// Sets `key`.
    pub fn key(mut self, key: Value) -> Self {
        self.key = Some(key);
        self
    }
    /// Sets `keys`.
    pub fn keys(mut self, keys: Vec<Value>) -> Self {
        self.keys = Some(keys);
        self
    }
    /// Sets `startkey`.
    pub fn start_key(mut self, key: Value) -> Self {
        self.start_key = Some(key);
        self
    }
    /// Sets `startkey_docid`.
    pub fn start_key_doc_id(mut self, id: impl Into<String>) -> Self {
        self.start_key_doc_id = Some(id.into());
        self
    }
    /// Sets `endkey`.
    pub fn end_key(mut self, key: Value) -> Self {
        self.end_key = Some(key);
        self
    }
    /// Sets `endkey_docid`.
    pub fn end_key_doc_id(mut self, id: impl Into<String>) -> Self {
        self.end_key_doc_id = Some(id.into());
        self
    }
    /// Sets `inclusive_end`.
    pub fn inclusive_end(mut self, inclusive: bool) -> Self {
        self.inclusive_end = inclusive;
        self
    }
    /// Sets `descending`.
    pub fn descending(mut self, descending: bool) -> Self {
        self.descending = descending;
        self
    }
    /// Sets `limit`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Sets `skip`.
    pub fn skip(mut self, skip: usize) -> Self {
        self.skip = skip;
        self
    }
    /// Sets `include_docs`.
    pub fn include_docs(mut self, include: bool) -> Self {
        self.include_docs = include;
        self
    }
    /// Sets `update`.
    pub fn update(mut self, update: Update) -> Self {
        self.update = update;
        self
    }
    /// Sets `conflicts`.
    pub fn conflicts(mut self, conflicts: bool) -> Self {
        self.conflicts = conflicts;
        self
    }
    /// Sets `reduce`.
    pub fn reduce(mut self, reduce: bool) -> Self {
        self.reduce = Some(reduce);
        self
    }
    /// Sets `group`.
    pub fn group(mut self, group: bool) -> Self {
        self.group = group;
        self
    }
    /// Sets `group_level`.
    pub fn group_level(mut self, level: usize) -> Self {
        self.group_level = Some(level);
        self
    }
    /// Sets `update_seq`.
    pub fn update_seq(mut self, update_seq: bool) -> Self {
        self.update_seq = update_seq;
        self
    }

    /// The options of a query string (`startkey=%22a%22&limit=10`), values
    /// JSON as CouchDB reads them, but doc ids bare (`startkey_docid=c-1`)
    /// and `update`/`stale` words bare too.
    ///
    /// ```
    /// use serde_json::json;
    /// use settee::views::QueryOptions;
    ///
    /// let q = QueryOptions::from_query_string("startkey=%5B1%2C2%5D&descending=true&limit=5")?;
    /// assert_eq!(q.start_key, Some(json!([1, 2])));
    /// assert!(q.descending);
    /// # Ok::<(), settee::views::ViewError>(())
    /// ```
    pub fn from_query_string(query: &str) -> Result<QueryOptions, ViewError> {
        let mut params = Map::new();
        for (k, v) in url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
            // CouchDB reads doc ids bare (`startkey_docid=c-1`), every
            // other value as JSON.
            let bare = matches!(
                &*k,
                "startkey_docid" | "start_key_doc_id" | "endkey_docid" | "end_key_doc_id"
            );
            let value = match serde_json::from_str::<Value>(&v) {
                Ok(json) if !bare => json,
                _ => Value::String(v.into_owned()),
            };
            params.insert(k.into_owned(), value);
        }
        QueryOptions::from_params(&params)
    }

    /// The options of a JSON object of CouchDB's parameters, as the body
    /// of `POST /db/_design/d/_view/v` or a parsed query string gives them.
    pub fn from_params(params: &Map<String, Value>) -> Result<QueryOptions, ViewError> {
        let bad = |name: &str, want: &str, v: &Value| {
            ViewError::InvalidQuery(format!("invalid value for {name}: {v} (expected {want})"))
        };
        let boolean = |name: &str, v: &Value| match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" => Ok(true),
            Value::String(s) if s == "false" => Ok(false),
            _ => Err(bad(name, "true or false", v)),
        };
        let count = |name: &str, v: &Value| match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(name, "a non-negative integer", v)),
            Value::String(s) => s
                .parse::<usize>()
                .map_err(|_| bad(name, "a non-negative integer", v)),
            _ => Err(bad(name, "a non-negative integer", v)),
        };
        let text = |name: &str, v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(bad(name, "a string", v)),
        };
        let mut q = QueryOptions::default();
        for (name, v) in params {
            match name.as_str() {
                "key" => q.key = Some(v.clone()),
                "keys" => match v {
                    Value::Array(keys) => q.keys = Some(keys.clone()),
                    _ => return Err(bad(name, "a JSON array", v)),
                },
                "startkey" | "start_key" => q.start_key = Some(v.clone()),
                "endkey" | "end_key" => q.end_key = Some(v.clone()),
                "startkey_docid" | "start_key_doc_id" => q.start_key_doc_id = Some(text(name, v)?),
                "endkey_docid" | "end_key_doc_id" => q.end_key_doc_id = Some(text(name, v)?),
                "inclusive_end" => q.inclusive_end = boolean(name, v)?,
                "descending" => q.descending = boolean(name, v)?,
                "limit" => q.limit = Some(count(name, v)?),
                "skip" => q.skip = count(name, v)?,
                "include_docs" => q.include_docs = boolean(name, v)?,
                "conflicts" => q.conflicts = boolean(name, v)?,
                "reduce" => q.reduce = Some(boolean(name, v)?),
                "group" => q.group = boolean(name, v)?,
                "group_level" => q.group_level = Some(count(name, v)?),
                "update_seq" => q.update_seq = boolean(name, v)?,
                "update" => {
                    q.update = match v {
                        Value::Bool(true) => Update::True,
                        Value::Bool(false) => Update::False,
                        Value::String(s) if s == "true" => Update::True,
                        Value::String(s) if s == "false" => Update::False,
                        Value::String(s) if s == "lazy" => Update::Lazy,
                        _ => return Err(bad(name, "true, false or lazy", v)),
                    }
                }
                // CouchDB 3 still takes `stale`: ok = update=false,
                // update_after = update=lazy.
                "stale" => {
                    q.update = match v.as_str() {
                        Some("ok") => Update::False,
                        Some("update_after") => Update::Lazy,
                        _ => return Err(bad(name, "ok or update_after", v)),
                    }
                }
                // Accepted and without effect on one replica.
                "sorted" | "stable" | "att_encoding_info" | "attachments" | "partition" => {}
                other => {
                    return Err(ViewError::InvalidQuery(format!(
                        "unknown query parameter {other:?}"
                    )))
                }
            }
        }
        Ok(q)
    }
}

/// One row of a view.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ViewRow {
    /// The emitting document's id.
    pub id: String,
    /// The emitted key.
    pub key: Value,
    /// The emitted value.
    pub value: Value,
    /// With `include_docs`: the document (`null` if it is gone).
    pub doc: Option<Value>,
}

impl ViewRow {
    /// The row as CouchDB shows it: `{id, key, value[, doc]}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(4);
        m.insert("id".into(), Value::String(self.id.clone()));
        m.insert("key".into(), self.key.clone());
        m.insert("value".into(), self.value.clone());
        if let Some(doc) = &self.doc {
            m.insert("doc".into(), doc.clone());
        }
        Value::Object(m)
    }
}

/// A collected query result, shaped like CouchDB's response.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ViewResult {
    /// Rows in the whole view.
    pub total_rows: u64,
    /// Rows of the view before the first returned one, in the query's
    /// direction (0 for a `keys` query).
    pub offset: u64,
    /// The rows.
    pub rows: Vec<ViewRow>,
    /// With `update_seq`: the local sequence the index covers.
    pub update_seq: Option<u64>,
}

impl ViewResult {
    /// `{"total_rows": …, "offset": …, "rows": […]}`.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "total_rows": self.total_rows,
            "offset": self.offset,
            "rows": self.rows.iter().map(ViewRow::to_json).collect::<Vec<_>>(),
        });
        if let (Some(seq), Some(m)) = (self.update_seq, body.as_object_mut()) {
            m.insert("update_seq".into(), json!(seq));
        }
        body
    }
}

/// A lazy stream of view rows, in the query's order.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<ViewRow, ViewError>> + 'a>;

/// A byte range of the rows tree.
pub(crate) struct Range {
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
}

/// Greater than any key suffix that starts with the given bytes: the
/// encoding's bytes after a key and an id never start with 0xFF five
/// times (a tag byte and a 4-byte emit index follow).
const AFTER: [u8; 5] = [0xFF; 5];

fn with(prefix: &[u8], key: &Value, id: Option<&str>, after: bool) -> Vec<u8> {
    let mut b = prefix.to_vec();
    encode_key(key, &mut b);
    if let Some(id) = id {
        encode_str(id, &mut b);
    }
    if after {
        b.extend_from_slice(&AFTER);
    }
    b
}

/// The byte ranges a query covers, in the order they are read.
pub(crate) fn ranges(q: &QueryOptions) -> Result<Vec<Range>, ViewError> {
    // Bounds on row keys within the view's space (no prefix).
    let prefix: Vec<u8> = Vec::new();
    let whole_lo = Bound::Unbounded;
    let whole_hi = Bound::Unbounded;
    let exact = |k: &Value| Range {
        lo: Bound::Included(with(&prefix, k, None, false)),
        hi: Bound::Excluded(with(&prefix, k, None, true)),
    };
    if let Some(keys) = &q.keys {
        if q.key.is_some() || q.start_key.is_some() || q.end_key.is_some() {
            return Err(ViewError::InvalidQuery(
                "`keys` cannot be combined with `key`, `startkey` or `endkey`".into(),
            ));
        }
        // As CouchDB 3.2+ answers (apache/couchdb#3757): descending gives
        // the ascending answer reversed, keys list included.
        return Ok(if q.descending {
            keys.iter().rev().map(exact).collect()
        } else {
            keys.iter().map(exact).collect()
        });
    }
    if let Some(k) = &q.key {
        // CouchDB: key=K is startkey=K&endkey=K (docids and inclusive_end apply).
        let q2 = QueryOptions {
            key: None,
            start_key: Some(k.clone()),
            end_key: Some(k.clone()),
            ..q.clone()
        };
        return ranges(&q2);
    }
    if let (Some(s), Some(e)) = (&q.start_key, &q.end_key) {
        let order = super::collate::collate(s, e);
        let backwards = if q.descending {
            order == std::cmp::Ordering::Less
        } else {
            order == std::cmp::Ordering::Greater
        };
        if backwards {
            return Err(ViewError::InvalidQuery(
                "no rows can match your key range, reverse your start_key and end_key or set descending=true".into(),
            ));
        }
    }
    let sid = q.start_key_doc_id.as_deref();
    let eid = q.end_key_doc_id.as_deref();
    let range = if !q.descending {
        let lo = match &q.start_key {
            Some(k) => Bound::Included(with(&prefix, k, sid, false)),
            None => whole_lo,
        };
        let hi = match (&q.end_key, q.inclusive_end) {
            (Some(k), true) => Bound::Excluded(with(&prefix, k, eid, true)),
            (Some(k), false) => Bound::Excluded(with(&prefix, k, eid, false)),
            (None, _) => whole_hi,
        };
        Range { lo, hi }
    } else {
        let hi = match &q.start_key {
            Some(k) => Bound::Excluded(with(&prefix, k, sid, true)),
            None => whole_hi,
        };
        let lo = match (&q.end_key, q.inclusive_end) {
            (Some(k), true) => Bound::Included(with(&prefix, k, eid, false)),
            (Some(k), false) => Bound::Included(with(&prefix, k, eid, true)),
            (None, _) => whole_lo,
        };
        Range { lo, hi }
    };
    Ok(vec![range])
}

/// Rows of the view before the query's first range, in its direction:
/// CouchDB's `offset` without `skip`. Costs a read of those rows' block
/// headers (only the block at the bound is decoded).
pub(crate) fn rows_before(
    tree: &sled::Tree,
    view: &str,
    first: &Range,
    descending: bool,
) -> Result<u64, ViewError> {
    let flip = |b: &Bound<Vec<u8>>| match b {
        Bound::Included(b) => Some(Bound::Excluded(b.clone())),
        Bound::Excluded(b) => Some(Bound::Included(b.clone())),
        Bound::Unbounded => None,
    };
    let (lo, hi) = if descending {
        match flip(&first.hi) {
            Some(lo) => (lo, Bound::Unbounded),
            None => return Ok(0),
        }
    } else {
        match flip(&first.lo) {
            Some(hi) => (Bound::Unbounded, hi),
            None => return Ok(0),
        }
    };
    fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
        b.as_ref().map(Vec::as_slice)
    }
    block::count(tree, &view_prefix(view), as_ref(&lo), as_ref(&hi))
}

/// Walks the ranges and decodes rows, applying skip, limit and include_docs.
pub(crate) fn walk<'a>(
    tree: &'a sled::Tree,
    replica: &'a Replica,
    view: &'a str,
    ranges: Vec<Range>,
    q: &QueryOptions,
) -> Rows<'a> {
    let descending = q.descending;
    let include_docs = q.include_docs;
    let conflicts = q.conflicts;
    let prefix = view_prefix(view);
    let raw = ranges.into_iter().flat_map(move |r| {
        let it: Box<dyn Iterator<Item = Result<(sled::IVec, sled::IVec), ViewError>>> =
            match Scan::new(tree, prefix.clone(), r.lo, r.hi, descending) {
                Ok(scan) => Box::new(scan),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        it
    });
    let rows = raw
        .skip(q.skip)
        .take(q.limit.unwrap_or(usize::MAX))
        .map(move |item| {
            let (k, v) = item?;
            let data = decode_row(&k, &v).ok_or_else(|| ViewError::Corrupt {
                view: view.to_owned(),
                detail: "row".into(),
            })?;
            let doc = if include_docs {
                Some(
                    replica
                        .get(&data.id)?
                        .filter(|d| !d.deleted)
                        .map(|d| doc_json(&d, conflicts))
                        .unwrap_or(Value::Null),
                )
            } else {
                None
            };
            Ok(ViewRow {
                id: data.id,
                key: data.key,
                value: data.value,
                doc,
            })
        });
    Box::new(rows)
}

/// A row's document: `_conflicts` (live ones only) when asked.
fn doc_json(doc: &crate::store::Document, conflicts: bool) -> Value {
    let mut json = doc.to_json();
    if conflicts && !doc.conflicts.is_empty() {
        if let Some(m) = json.as_object_mut() {
            let revs = doc.conflicts.iter().map(|r| json!(r.to_string())).collect();
            m.insert("_conflicts".into(), Value::Array(revs));
        }
    }
    json
}
