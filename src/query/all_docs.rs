//! `_all_docs`, answered from the replica as CouchDB 3.4 answers it.
//!
//! ```text
//!  AllDocsQuery ──► all_docs() ─┬─ keys:  one lookup per key, in the order
//!                               │         given (reversed if descending),
//!                               │         skip/limit on the list
//!                               └─ range: the `docs` tree walked in id order
//!                                         (either way), tombstones passed
//!                                         over, skip/limit while walking
//!                                  └──► AllDocsResponse::to_json(): the body
//! ```
//!
//! Ids sort as raw bytes, as in CouchDB's by-id tree: the `docs` tree is in
//! UTF-8 byte order, which is code-point order (`"B" < "_design/x" < "a"`).
//! A key that is not a string sorts before every id, as Erlang orders
//! numbers, atoms and lists before binaries. Only the rows asked for are
//! read (and, with `include_docs`, their bodies); `offset` costs a count of
//! the live documents on the smaller side of the start key, or, once the
//! replica holds still, a binary search and a walk of at most 1024 ids
//! (`ranks.rs`).
//!
//! What CouchDB 3.4 answers, and so this module (checked against it):
//! design documents are listed, `_local` ones are not (but a `_local/` key
//! in `keys` is looked up); `total_rows` counts live documents; with `keys`
//! a missing id is `{"key", "error": "not_found"}`, a deleted one keeps
//! its row with `"deleted": true` (and `"doc": null`), `offset` is `null`
//! and so is `update_seq`; without `keys`, `offset` is the count of live
//! documents before the first row's place plus `skip`, at most
//! `total_rows`. `update_seq` is the replica's local sequence (a number;
//! CouchDB's is its opaque cluster sequence).

use super::get::{local_doc, render, Render};
use super::params::{self, Param};
use super::QueryError;
use crate::store::{DocInfo, Replica, StoreError};
use serde_json::{json, Map, Value};
use std::ops::Bound;

/// An `_all_docs` query: CouchDB's options, typed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use settee::query::{AllDocsQuery, Query};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// for id in ["TAG-a", "TAG-b", "card-1"] {
///     replica.put(id, json!({})).await?;
/// }
/// let query = Query::open(&replica)?;
///
/// let tags = AllDocsQuery::default().start_key(json!("TAG-")).end_key(json!("TAG-\u{fff0}"));
/// let answer = query.all_docs(&tags)?;
/// assert_eq!(answer.rows.len(), 2);
/// assert_eq!((answer.total_rows, answer.offset), (3, Some(0)));
///
/// // The same from CouchDB's query parameters.
/// let same = AllDocsQuery::from_json(&json!({"startkey": "TAG-", "endkey": "TAG-\u{fff0}"}))?;
/// assert_eq!(query.all_docs(&same)?.to_json(), answer.to_json());
/// let one = AllDocsQuery::from_query_string("keys=%5B%22card-1%22%2C%22nope%22%5D")?;
/// assert_eq!(query.all_docs(&one)?.to_json()["rows"][1], json!({"key": "nope", "error": "not_found"}));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AllDocsQuery {
    /// `keys`: these ids, one row each, in this order (repeats answered
    /// each time); instead of a range.
    pub keys: Option<Vec<Value>>,
    /// `startkey` / `start_key`: the first id of the range (with
    /// `descending`, the highest).
    pub start_key: Option<Value>,
    /// `endkey` / `end_key`: the last id of the range.
    pub end_key: Option<Value>,
    /// `startkey_docid`: the start when there is no `startkey` (CouchDB's
    /// `_all_docs` takes it as the start key then).
    pub start_key_doc_id: Option<String>,
    /// `endkey_docid`: the end when there is no `endkey`.
    pub end_key_doc_id: Option<String>,
    /// `inclusive_end` (default `true`): whether the end id itself is in.
    pub inclusive_end: bool,
    /// `descending`: highest id first.
    pub descending: bool,
    /// `limit`: at most this many rows.
    pub limit: Option<usize>,
    /// `skip`: rows passed over first.
    pub skip: usize,
    /// `include_docs`: each row's document under `doc`.
    pub include_docs: bool,
    /// `conflicts`: with `include_docs`, `_conflicts` in each document.
    pub conflicts: bool,
    /// `update_seq`: the replica's local sequence in the answer.
    pub update_seq: bool,
    /// `attachments`: with `include_docs`, attachment bytes inline.
    pub attachments: bool,
    /// `att_encoding_info`: accepted; a replica holds identity bytes, so
    /// there is never an `encoding` to show.
    pub att_encoding_info: bool,
}

impl Default for AllDocsQuery {
    fn default() -> Self {
        AllDocsQuery {
            keys: None,
            start_key: None,
            end_key: None,
            start_key_doc_id: None,
            end_key_doc_id: None,
            inclusive_end: true,
            descending: false,
            limit: None,
            skip: 0,
            include_docs: false,
            conflicts: false,
            update_seq: false,
            attachments: false,
            att_encoding_info: false,
        }
    }
}

impl AllDocsQuery {
    /// `key`: only this id (start and end key at once).
    pub fn key(mut self, key: Value) -> Self {
        self.start_key = Some(key.clone());
        self.end_key = Some(key);
        self
    }

    /// `keys`.
    pub fn keys(mut self, keys: Vec<Value>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// `startkey`.
    pub fn start_key(mut self, key: Value) -> Self {
        self.start_key = Some(key);
        self
    }

    /// `endkey`.
    pub fn end_key(mut self, key: Value) -> Self {
        self.end_key = Some(key);
        self
    }

    /// `startkey_docid`.
    pub fn start_key_doc_id(mut self, id: impl Into<String>) -> Self {
        self.start_key_doc_id = Some(id.into());
        self
    }

    /// `endkey_docid`.
    pub fn end_key_doc_id(mut self, id: impl Into<String>) -> Self {
        self.end_key_doc_id = Some(id.into());
        self
    }

    /// `inclusive_end`.
    pub fn inclusive_end(mut self, on: bool) -> Self {
        self.inclusive_end = on;
        self
    }

    /// `descending`.
    pub fn descending(mut self, on: bool) -> Self {
        self.descending = on;
        self
    }

    /// `limit`.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// `skip`.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// `include_docs`.
    pub fn include_docs(mut self, on: bool) -> Self {
        self.include_docs = on;
        self
    }

    /// `conflicts`.
    pub fn conflicts(mut self, on: bool) -> Self {
        self.conflicts = on;
        self
    }

    /// `update_seq`.
    pub fn update_seq(mut self, on: bool) -> Self {
        self.update_seq = on;
        self
    }

    /// `attachments`.
    pub fn attachments(mut self, on: bool) -> Self {
        self.attachments = on;
        self
    }

    /// `att_encoding_info`.
    pub fn att_encoding_info(mut self, on: bool) -> Self {
        self.att_encoding_info = on;
        self
    }

    /// The query of a query string, `startkey=%22a%22&limit=2`: JSON
    /// parameters (`key`, `keys`, `startkey`, `endkey`) are JSON text,
    /// `startkey_docid`/`endkey_docid` plain text. Unknown parameters are
    /// ignored, as CouchDB ignores them.
    pub fn from_query_string(qs: &str) -> Result<Self, QueryError> {
        let pairs = params::split_query_string(qs)?;
        Self::from_params(&params::raw_members(&pairs))
    }

    /// The query of a JSON object of decoded parameters,
    /// `{"startkey": "a", "limit": 2, "keys": […], "descending": true}`.
    pub fn from_json(params: &Value) -> Result<Self, QueryError> {
        Self::from_params(&params::json_members(params)?)
    }

    /// Parameters in order, later ones overriding earlier ones, as
    /// `couch_mrview_http:parse_param` applies them.
    fn from_params(members: &[(&str, Param<'_>)]) -> Result<Self, QueryError> {
        let mut q = AllDocsQuery::default();
        for &(name, value) in members {
            match name {
                "key" => q = q.key(value.json()?),
                "keys" => {
                    let Value::Array(keys) = value.json()? else {
                        return Err(QueryError::bad(
                            "bad_request",
                            "`keys` parameter must be an array.",
                        ));
                    };
                    // CouchDB sets start and end to a single key too, so
                    // that `keys=[k]&key=k` passes its check below.
                    if let [only] = keys.as_slice() {
                        q = q.key(only.clone());
                    }
                    q.keys = Some(keys);
                }
                "startkey" | "start_key" => q.start_key = Some(value.json()?),
                "endkey" | "end_key" => q.end_key = Some(value.json()?),
                "startkey_docid" | "start_key_doc_id" => {
                    q.start_key_doc_id = Some(value.string("start_key_docid")?);
                }
                "endkey_docid" | "end_key_doc_id" => {
                    q.end_key_doc_id = Some(value.string("end_key_docid")?);
                }
                "inclusive_end" => q.inclusive_end = value.boolean()?,
                "descending" => q.descending = value.boolean()?,
                "limit" => q.limit = Some(value.pos_int()?),
                "skip" => q.skip = value.pos_int()?,
                "include_docs" => q.include_docs = value.boolean()?,
                "conflicts" => q.conflicts = value.boolean()?,
                "update_seq" => q.update_seq = value.boolean()?,
                "attachments" => q.attachments = value.boolean()?,
                "att_encoding_info" => q.att_encoding_info = value.boolean()?,
                _ => {}
            }
        }
        Ok(q)
    }

    /// CouchDB's check (`couch_mrview_util:validate_args`): `keys` goes
    /// with no range, but for a single key that is also the start and end.
    fn validate(&self) -> Result<(), QueryError> {
        let Some(keys) = self.keys.as_deref().filter(|k| !k.is_empty()) else {
            return Ok(());
        };
        let ok = match (keys, &self.start_key, &self.end_key) {
            (_, None, None) => true,
            ([only], Some(s), Some(e)) => only == s && only == e,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(QueryError::bad(
                "query_parse_error",
                "`keys` is incompatible with `key`, `start_key` and `end_key`",
            ))
        }
    }
}

/// The answer to an `_all_docs` query.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use settee::query::{AllDocsQuery, Query};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// let a = replica.put("a", json!({})).await?;
/// replica.put("b", json!({})).await?;
/// let answer = Query::open(&replica)?.all_docs(&AllDocsQuery::default().skip(1).update_seq(true))?;
/// assert_eq!(
///     answer.to_json(),
///     json!({"total_rows": 2, "offset": 1, "update_seq": 2, "rows": [
///         {"id": "b", "key": "b", "value": {"rev": answer.rows[0].to_json()["value"]["rev"]}}
///     ]})
/// );
/// assert_eq!(a.seq, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AllDocsResponse {
    /// Live documents in the replica, design documents included.
    pub total_rows: u64,
    /// Live documents before the first row's place, plus `skip`, at most
    /// `total_rows`; `None` (JSON `null`) with `keys`.
    pub offset: Option<u64>,
    /// With `update_seq`: `Some(Some(seq))`, the replica's local sequence,
    /// for a range; `Some(None)` (JSON `null`) with `keys`, as CouchDB.
    pub update_seq: Option<Option<u64>>,
    /// The rows.
    pub rows: Vec<AllDocsRow>,
}

impl AllDocsResponse {
    /// The body CouchDB sends: `total_rows`, `offset`, `update_seq` when
    /// asked, `rows`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("total_rows".into(), json!(self.total_rows));
        out.insert("offset".into(), json!(self.offset));
        if let Some(seq) = self.update_seq {
            out.insert("update_seq".into(), json!(seq));
        }
        out.insert(
            "rows".into(),
            Value::Array(self.rows.iter().map(AllDocsRow::to_json).collect()),
        );
        Value::Object(out)
    }
}

/// One row of `_all_docs`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use settee::query::{AllDocsQuery, AllDocsRow, Query};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// replica.put("gone", json!({})).await?;
/// let tombstone = replica.delete("gone", None).await?;
/// let keys = AllDocsQuery::default().keys(vec![json!("gone"), json!("never")]).include_docs(true);
/// let rows = Query::open(&replica)?.all_docs(&keys)?.rows;
/// let AllDocsRow::Doc { rev, deleted, doc, .. } = &rows[0] else {
///     unreachable!("a deleted document named by `keys` keeps its row");
/// };
/// assert_eq!((rev.as_str(), *deleted), (tombstone.rev.to_string().as_str(), true));
/// assert_eq!(doc, &Some(serde_json::Value::Null));
/// assert_eq!(rows[1].to_json(), json!({"key": "never", "error": "not_found"}));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AllDocsRow {
    /// A document: `{"id", "key", "value": {"rev"}, "doc"?}`.
    Doc {
        /// The document id (also the row's key).
        id: String,
        /// The winning revision (`0-1` style for a `_local` document).
        rev: String,
        /// True for a deleted document, listed only when `keys` names it
        /// (`"value": {"rev", "deleted": true}`).
        deleted: bool,
        /// With `include_docs`: the document, or JSON `null` for a deleted
        /// one; `None` without `include_docs`.
        doc: Option<Value>,
    },
    /// A key of `keys` that names no document: `{"key", "error": "not_found"}`.
    NotFound {
        /// The key as asked.
        key: Value,
    },
}

impl AllDocsRow {
    /// The row's key: the id, or the key asked for.
    pub fn key(&self) -> Value {
        match self {
            AllDocsRow::Doc { id, .. } => Value::String(id.clone()),
            AllDocsRow::NotFound { key } => key.clone(),
        }
    }

    /// The row as CouchDB sends it.
    pub fn to_json(&self) -> Value {
        match self {
            AllDocsRow::Doc {
                id,
                rev,
                deleted,
                doc,
            } => {
                let mut value = Map::new();
                value.insert("rev".into(), json!(rev));
                if *deleted {
                    value.insert("deleted".into(), json!(true));
                }
                let mut row = Map::new();
                row.insert("id".into(), json!(id));
                row.insert("key".into(), json!(id));
                row.insert("value".into(), Value::Object(value));
                if let Some(doc) = doc {
                    row.insert("doc".into(), doc.clone());
                }
                Value::Object(row)
            }
            AllDocsRow::NotFound { key } => json!({"key": key, "error": "not_found"}),
        }
    }
}

/// Runs `q` against the replica.
pub(crate) fn all_docs(
    replica: &Replica,
    ranks: &super::ranks::Ranks,
    q: &AllDocsQuery,
) -> Result<AllDocsResponse, QueryError> {
    q.validate()?;
    let total_rows = replica.doc_count()?;
    let render_options = Render {
        conflicts: q.conflicts,
        attachments: q.attachments,
        ..Render::default()
    };
    if let Some(keys) = &q.keys {
        // The list itself is reversed, skipped and limited, as CouchDB
        // 3.4's fabric_view_all_docs does.
        let ordered: Box<dyn Iterator<Item = &Value>> = if q.descending {
            Box::new(keys.iter().rev())
        } else {
            Box::new(keys.iter())
        };
        let rows = ordered
            .skip(q.skip)
            .take(q.limit.unwrap_or(usize::MAX))
            .map(|key| key_row(replica, key, q.include_docs, &render_options))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(AllDocsResponse {
            total_rows,
            offset: None,
            update_seq: q.update_seq.then_some(None),
            rows,
        });
    }
    let update_seq = if q.update_seq {
        Some(Some(replica.update_seq()?))
    } else {
        None
    };
    let range = Range::of(q);
    let before = match (&range.start, q.descending) {
        (Edge::Open, _) | (Edge::BelowAll, false) => 0,
        // Every id sorts above a non-string key.
        (Edge::BelowAll, true) => total_rows,
        (Edge::At(id), descending) => {
            match ranks.live_on_start_side(replica, id, descending, total_rows)? {
                Some(n) => n,
                None => live_on_start_side(replica, id, descending, total_rows)?,
            }
        }
    };
    let offset = Some(
        before
            .saturating_add(u64::try_from(q.skip).unwrap_or(u64::MAX))
            .min(total_rows),
    );
    let mut rows = Vec::new();
    let limit = q.limit.unwrap_or(usize::MAX);
    if limit > 0 {
        if let Some((lo, hi)) = range.bounds(q.descending) {
            let walk = replica.docs((as_ref(&lo), as_ref(&hi)));
            let walk: Box<dyn Iterator<Item = Result<DocInfo, StoreError>>> = if q.descending {
                Box::new(walk.rev())
            } else {
                Box::new(walk)
            };
            let live = walk.filter(|d| !matches!(d, Ok(info) if info.deleted));
            for info in live.skip(q.skip) {
                let info = info?;
                if let Some(row) = range_row(replica, info, q.include_docs, &render_options)? {
                    rows.push(row);
                    if rows.len() >= limit {
                        break;
                    }
                }
            }
        }
    }
    Ok(AllDocsResponse {
        total_rows,
        offset,
        update_seq,
        rows,
    })
}

/// A row of a range walk; with `include_docs` the document is read again,
/// and its revision is the row's (`None` if it was deleted meanwhile).
fn range_row(
    replica: &Replica,
    info: DocInfo,
    include_docs: bool,
    o: &Render<'_>,
) -> Result<Option<AllDocsRow>, QueryError> {
    if !include_docs {
        return Ok(Some(AllDocsRow::Doc {
            id: info.id,
            rev: info.rev.to_string(),
            deleted: false,
            doc: None,
        }));
    }
    match replica.get(&info.id)? {
        Some(doc) if !doc.deleted => Ok(Some(AllDocsRow::Doc {
            rev: doc.rev.to_string(),
            doc: Some(render(replica, &doc, None, o)?),
            id: info.id,
            deleted: false,
        })),
        _ => Ok(None),
    }
}

/// The row of one key of `keys`.
fn key_row(
    replica: &Replica,
    key: &Value,
    include_docs: bool,
    o: &Render<'_>,
) -> Result<AllDocsRow, QueryError> {
    let not_found = || AllDocsRow::NotFound { key: key.clone() };
    let Some(id) = key.as_str() else {
        return Ok(not_found());
    };
    if let Some(local) = id.strip_prefix("_local/") {
        // CouchDB opens each key as a document, and a `_local/` id opens
        // the local document.
        let Some(stored) = replica.get_local(local)? else {
            return Ok(not_found());
        };
        let doc = local_doc(id, stored);
        return Ok(AllDocsRow::Doc {
            id: id.to_owned(),
            rev: doc["_rev"].as_str().unwrap_or("0-1").to_owned(),
            deleted: false,
            doc: include_docs.then_some(doc),
        });
    }
    if !include_docs {
        let Some(winner) = replica.rev_tree(id)?.and_then(|t| t.winner()) else {
            return Ok(not_found());
        };
        return Ok(AllDocsRow::Doc {
            id: id.to_owned(),
            rev: winner.rev.to_string(),
            deleted: winner.deleted,
            doc: None,
        });
    }
    let Some(doc) = replica.get(id)? else {
        return Ok(not_found());
    };
    let body = if doc.deleted {
        Value::Null
    } else {
        render(replica, &doc, None, o)?
    };
    Ok(AllDocsRow::Doc {
        id: id.to_owned(),
        rev: doc.rev.to_string(),
        deleted: doc.deleted,
        doc: Some(body),
    })
}

/// Where a start or end key falls among the ids.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Edge {
    /// Not given: the range is open on that side.
    Open,
    /// A key that is not a string: below every id.
    BelowAll,
    /// An id (not necessarily of a document).
    At(String),
}

impl Edge {
    fn of(key: Option<&Value>, doc_id: Option<&String>) -> Self {
        match (key, doc_id) {
            (Some(Value::String(s)), _) => Edge::At(s.clone()),
            (Some(_), _) => Edge::BelowAll,
            (None, Some(id)) => Edge::At(id.clone()),
            (None, None) => Edge::Open,
        }
    }
}

/// The range of a query without `keys`, in the query's direction.
struct Range {
    start: Edge,
    end: Edge,
    inclusive_end: bool,
}

impl Range {
    fn of(q: &AllDocsQuery) -> Self {
        Range {
            start: Edge::of(q.start_key.as_ref(), q.start_key_doc_id.as_ref()),
            end: Edge::of(q.end_key.as_ref(), q.end_key_doc_id.as_ref()),
            inclusive_end: q.inclusive_end,
        }
    }

    /// The bounds on ids, low then high, or `None` when nothing can match.
    fn bounds(&self, descending: bool) -> Option<(Bound<String>, Bound<String>)> {
        let end = |id: &String| {
            if self.inclusive_end {
                Bound::Included(id.clone())
            } else {
                Bound::Excluded(id.clone())
            }
        };
        let (lo, hi) = if descending {
            let hi = match &self.start {
                Edge::Open => Bound::Unbounded,
                Edge::BelowAll => return None,
                Edge::At(id) => Bound::Included(id.clone()),
            };
            let lo = match &self.end {
                Edge::Open | Edge::BelowAll => Bound::Unbounded,
                Edge::At(id) => end(id),
            };
            (lo, hi)
        } else {
            let lo = match &self.start {
                Edge::Open | Edge::BelowAll => Bound::Unbounded,
                Edge::At(id) => Bound::Included(id.clone()),
            };
            let hi = match &self.end {
                Edge::Open => Bound::Unbounded,
                Edge::BelowAll => return None,
                Edge::At(id) => end(id),
            };
            (lo, hi)
        };
        // A range whose ends cross matches nothing (CouchDB answers it
        // with no rows, not an error).
        let crossed = match (&lo, &hi) {
            (Bound::Included(l), Bound::Included(h)) => l > h,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
                l >= h
            }
            _ => false,
        };
        (!crossed).then_some((lo, hi))
    }
}

fn as_ref(b: &Bound<String>) -> Bound<&str> {
    match b {
        Bound::Included(s) => Bound::Included(s.as_str()),
        Bound::Excluded(s) => Bound::Excluded(s.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Live documents that come before `start` in the walk's direction: below
/// it ascending, above it descending. Both sides are counted in step and
/// the first to end decides (the other is `total` minus it), so the cost
/// is that of the smaller side, not of the whole replica.
fn live_on_start_side(
    replica: &Replica,
    start: &str,
    descending: bool,
    total: u64,
) -> Result<u64, QueryError> {
    let (before, rest) = if descending {
        (
            Box::new(replica.docs((Bound::Excluded(start), Bound::Unbounded)))
                as Box<dyn Iterator<Item = Result<DocInfo, StoreError>>>,
            Box::new(replica.docs((Bound::Unbounded, Bound::Included(start))))
                as Box<dyn Iterator<Item = Result<DocInfo, StoreError>>>,
        )
    } else {
        (
            Box::new(replica.docs((Bound::Unbounded, Bound::Excluded(start))))
                as Box<dyn Iterator<Item = Result<DocInfo, StoreError>>>,
            Box::new(replica.docs((Bound::Included(start), Bound::Unbounded)))
                as Box<dyn Iterator<Item = Result<DocInfo, StoreError>>>,
        )
    };
    let mut sides = [(before, 0u64, false), (rest, 0u64, false)];
    loop {
        for (i, (walk, live, done)) in sides.iter_mut().enumerate() {
            match walk.next() {
                Some(info) => {
                    if !info?.deleted {
                        *live += 1;
                    }
                }
                None => *done = true,
            }
            if *done {
                let counted = *live;
                return Ok(if i == 0 {
                    counted.min(total)
                } else {
                    total.saturating_sub(counted)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;

    fn replica(ids: &[&str]) -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        for id in ids {
            r.put_blocking(id, &json!({"n": id})).unwrap();
        }
        (dir, r)
    }

    fn ids(answer: &AllDocsResponse) -> Vec<String> {
        answer
            .rows
            .iter()
            .map(|r| r.key().as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// The answers CouchDB 3.4.3 gave for a database of `B`, `_design/x`,
    /// `a`, `b`, `c`, `e` and a deleted `d` (checked with curl).
    #[test]
    fn ranges_and_offsets_match_couchdb() {
        let (_dir, r) = replica(&["a", "b", "c", "d", "e", "_design/x", "B"]);
        let d = r.get("d").unwrap().unwrap();
        r.delete_blocking("d", Some(d.rev)).unwrap();
        let ranks = crate::query::ranks::Ranks::default();
        let run =
            |qs: &str| all_docs(&r, &ranks, &AllDocsQuery::from_query_string(qs).unwrap()).unwrap();
        let all = run("");
        assert_eq!(ids(&all), ["B", "_design/x", "a", "b", "c", "e"]);
        assert_eq!((all.total_rows, all.offset), (6, Some(0)));
        for (qs, want, offset) in [
            ("startkey=%22b%22", &["b", "c", "e"][..], 3),
            ("startkey=%22b%22&skip=1", &["c", "e"], 4),
            ("startkey=%22zz%22", &[], 6),
            (
                "startkey=%22c%22&descending=true",
                &["c", "b", "a", "_design/x", "B"],
                1,
            ),
            ("startkey=%22c%22&descending=true&skip=10", &[], 6),
            (
                "endkey=%22c%22&inclusive_end=false",
                &["B", "_design/x", "a", "b"],
                0,
            ),
            ("startkey_docid=c&limit=1", &["c"], 4),
            ("key=%22d%22", &[], 5),
            ("startkey=1&descending=true", &[], 6),
            ("endkey=1", &[], 0),
            ("startkey=%22c%22&endkey=%22a%22", &[], 4),
            ("key=%22c%22&startkey=%22a%22", &["a", "b", "c"], 2),
            ("limit=0", &[], 0),
        ] {
            let answer = run(qs);
            assert_eq!(ids(&answer), want, "{qs}");
            assert_eq!(answer.offset, Some(offset), "{qs}");
        }
        let keyed =
            run("keys=%5B%22c%22,%22d%22,%22zz%22,%22c%22%5D&include_docs=true&update_seq=true");
        let body = keyed.to_json();
        assert_eq!(body["offset"], Value::Null);
        assert_eq!(body["update_seq"], Value::Null);
        assert_eq!(body["rows"][1]["value"]["deleted"], true);
        assert_eq!(body["rows"][1]["doc"], Value::Null);
        assert_eq!(body["rows"][2], json!({"key": "zz", "error": "not_found"}));
        assert_eq!(body["rows"][3]["doc"]["n"], "c");
        let reversed = run("keys=%5B%22c%22,%22d%22,%22zz%22%5D&descending=true&skip=1");
        assert_eq!(ids(&reversed), ["d", "c"]);
        assert!(run("update_seq=true").to_json()["update_seq"].is_u64());
    }

    #[test]
    fn bad_queries_get_couchdbs_errors() {
        let (_dir, r) = replica(&["a"]);
        for (qs, reason) in [
            (
                "keys=%5B%22c%22%5D&key=%22b%22",
                "`keys` is incompatible with `key`, `start_key` and `end_key`",
            ),
            ("keys=%22c%22", "`keys` parameter must be an array."),
            ("limit=-1", "Invalid value for positive integer: \"-1\""),
            ("descending=yes", "Invalid boolean parameter: \"yes\""),
            ("startkey=b", "invalid UTF-8 JSON"),
        ] {
            let e = AllDocsQuery::from_query_string(qs)
                .and_then(|q| all_docs(&r, &Default::default(), &q))
                .unwrap_err();
            assert_eq!((e.status(), e.reason()), (400, reason.to_owned()), "{qs}");
        }
        // A single key that is also the key range is fine.
        let q = AllDocsQuery::from_query_string("key=%22a%22&keys=%5B%22a%22%5D").unwrap();
        assert_eq!(all_docs(&r, &Default::default(), &q).unwrap().rows.len(), 1);
    }
}
