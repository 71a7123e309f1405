//! Running a planned `_find`: reading the chosen index's range (the
//! replica's documents in `_id` order for `_all_docs`, a view of
//! `crate::views` for a json index), matching every candidate document
//! against the whole selector, then `skip`, `limit`, `fields`,
//! `conflicts`, the bookmark, `execution_stats` and CouchDB's warnings,
//! as `mango_cursor_view.erl` does them.
//!
//! Differences a client can see: `execution_stats` counts what settee
//! read, which stops as soon as the page is full (CouchDB's shards read
//! ahead, so its counts vary with the cluster); a bookmark resumes
//! strictly after its row (CouchDB skips the first row at or after it,
//! which loses a row when the bookmarked document has left the range).

use super::index::{self, full_doc, Index};
use super::plan::{self, Range};
use super::request::{Dir, ExecutionStats, FindRequest, FindResponse};
use super::selector::{get_field, parse_field, Field, Selector};
use crate::query::QueryError;
use crate::store::{RawDocumentChange, Replica};
use crate::views::{collate, QueryOptions, Update, Views};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use std::ops::Bound;
use std::time::Instant;

const NO_INDEX: &str = "No matching index found, create an index to optimize query time.";
const SCAN_RATIO: &str = "The number of documents examined is high in proportion to the number of results returned. Consider adding a more specific index to improve this.";
/// `[mango] index_scan_warning_threshold`.
const SCAN_THRESHOLD: f64 = 10.0;

/// A value above every key CouchDB's collation can hold at its place
/// (CouchDB's `<MAX>`): an object, whose first member's name starts with
/// U+FFFF, the highest weight of the root collation.
pub(crate) fn max_key() -> Value {
    json!({"\u{FFFF}\u{FFFF}\u{FFFF}\u{FFFF}": null})
}

/// A bookmark: the position (key and document id) of the last row of a
/// page, as URL-safe base64 of JSON `[key, id]`.
fn encode_bookmark(key: &Value, id: &str) -> String {
    let json = json!([key, id]).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_bookmark(b: &str) -> Result<(Value, String), QueryError> {
    let bad = || {
        QueryError::bad(
            "invalid_bookmark",
            format!("Invalid bookmark value: {}", Value::String(b.to_owned())),
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match v {
        Value::Array(mut a) if a.len() == 2 => match a.pop() {
            Some(Value::String(id)) => Ok((a.pop().unwrap_or(Value::Null), id)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `mango_doc:set_field`: sets `path` in `doc`, creating objects on the
/// way; an array is entered by index only where the element exists.
fn set_field(doc: &mut Value, path: &[String], value: Value) {
    let Some((name, rest)) = path.split_first() else {
        return;
    };
    match doc {
        Value::Object(m) => {
            if rest.is_empty() {
                m.insert(name.clone(), value);
            } else if let Some(elem) = m.get_mut(name) {
                set_field(elem, rest, value);
            } else {
                let nested = rest.iter().rev().fold(value, |v, n| {
                    Value::Object(Map::from_iter([(n.clone(), v)]))
                });
                m.insert(name.clone(), nested);
            }
        }
        Value::Array(a) => {
            let Ok(i) = name.parse::<usize>() else {
                return;
            };
            if let Some(elem) = a.get_mut(i) {
                if rest.is_empty() {
                    *elem = value;
                } else {
                    set_field(elem, rest, value);
                }
            }
        }
        _ => {}
    }
}

/// `mango_fields:extract`: the listed fields, in their order.
fn project(doc: Value, fields: Option<&[String]>) -> Result<Value, QueryError> {
    let Some(fields) = fields else {
        return Ok(doc);
    };
    let mut out = Value::Object(Map::new());
    for f in fields {
        let path = Field::new(f.clone());
        let path = path.path()?;
        if let Some(v) = get_field(&doc, path) {
            set_field(&mut out, path, v.clone());
        }
    }
    Ok(out)
}

/// The page being built: CouchDB's cursor state.
struct Cursor<'a> {
    req: &'a FindRequest,
    skip: usize,
    limit: usize,
    stats: ExecutionStats,
    docs: Vec<Value>,
    last: Option<(Value, String)>,
}

impl Cursor<'_> {
    /// Offers one document read from the index that matches the selector;
    /// `Ok(false)` stops the read. `doc` is what the selector was matched
    /// against; `whole` gives the document to return when `doc` was read
    /// in part.
    fn offer_matched(
        &mut self,
        key: impl FnOnce() -> Value,
        id: &str,
        doc: Value,
        whole: impl FnOnce(Value) -> Result<Value, QueryError>,
    ) -> Result<bool, QueryError> {
        if self.limit > 0 {
            self.last = Some((key(), id.to_owned()));
        }
        if self.skip > 0 {
            self.skip -= 1;
            return Ok(true);
        }
        if self.limit == 0 {
            return Ok(false);
        }
        self.docs
            .push(project(whole(doc)?, self.req.fields.as_deref())?);
        self.limit -= 1;
        self.stats.results_returned += 1;
        Ok(self.limit > 0)
    }

    fn count_doc(&mut self) {
        // With `r` > 1 CouchDB reads documents at the coordinator with a
        // quorum instead of on the shard.
        if self.req.r > 1 {
            self.stats.total_quorum_docs_examined += 1;
        } else {
            self.stats.total_docs_examined += 1;
        }
    }
}

/// The parts of a stored body the scan has to parse: for each member
/// name, either the whole value or some of its members. `None` stands for
/// the whole body.
type Wanted = Option<Want>;

#[derive(Debug, Default)]
struct Want {
    /// The value is wanted whole.
    whole: bool,
    /// Otherwise these members of it (when it is an object); a few, so a
    /// list beats hashing every member name of every document.
    members: Vec<(String, Want)>,
}

impl Want {
    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            self.whole = true;
            return;
        };
        let i = match self.members.iter().position(|(n, _)| n == first) {
            Some(i) => i,
            None => {
                self.members.push((first.clone(), Want::default()));
                self.members.len() - 1
            }
        };
        if let Some((_, w)) = self.members.get_mut(i) {
            w.add(rest);
        }
    }

    fn member(&self, name: &str) -> Option<&Want> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, w)| w)
    }
}

/// What a selector can look at: each field path outside `$elemMatch`
/// and friends (whose fields are relative to an element). `None`
/// (everything) when a condition is on the document itself (an empty
/// field name) or a path is invalid.
fn wanted_fields(s: &Selector) -> Wanted {
    fn walk(s: &Selector, out: &mut Want) -> bool {
        match s {
            Selector::And(a) | Selector::Or(a) | Selector::Nor(a) => a.iter().all(|x| walk(x, out)),
            Selector::Not(x) => walk(x, out),
            Selector::Field(f, _) => match f.path() {
                Ok(path) if !f.name.is_empty() => {
                    out.add(path);
                    true
                }
                _ => false,
            },
            Selector::Empty | Selector::Default(_) => true,
            // An operator straight on the document.
            _ => false,
        }
    }
    let mut out = Want::default();
    walk(s, &mut out).then_some(out)
}

/// A member name, kept only when wanted.
struct MemberName<'a>(&'a Want);

impl<'de> serde::de::DeserializeSeed<'de> for MemberName<'_> {
    type Value = Option<String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for MemberName<'_> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.member(v).is_some().then(|| v.to_owned()))
    }
}

/// The wanted members of an object (the others skipped without being
/// built); any other value whole.
struct Partial<'a>(&'a Want);

impl<'de> serde::de::DeserializeSeed<'de> for Partial<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Partial<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(name) = a.next_key_seed(MemberName(self.0))? {
            match name.as_deref().and_then(|n| self.0.member(n)) {
                Some(want) => {
                    let v = a.next_value_seed(Partial(want))?;
                    m.insert(name.unwrap_or_default(), v);
                }
                None => {
                    a.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(m))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        // Paths into arrays go by index and `$elemMatch` looks at every
        // element: an array is kept whole.
        let mut items = Vec::new();
        while let Some(v) = a.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A stored body parsed (bodies nest up to `MAX_NESTING` levels), whole
/// or only the `wanted` parts.
fn parse_body(
    raw: &RawDocumentChange,
    wanted: Option<&Want>,
) -> Result<Map<String, Value>, QueryError> {
    let mut de = serde_json::Deserializer::from_slice(&raw.body);
    de.disable_recursion_limit();
    let body = match wanted {
        None => serde::Deserialize::deserialize(&mut de),
        Some(w) => serde::de::DeserializeSeed::deserialize(Partial(w), &mut de).map(|v| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }),
    };
    body.map_err(|e| {
        QueryError::Store(crate::store::StoreError::corrupt(
            "revision body",
            raw.id.as_bytes(),
            e,
        ))
    })
}

fn with_conflicts(mut doc: Value, conflicts: &[crate::Rev], want: bool) -> Value {
    if want && !conflicts.is_empty() {
        if let Value::Object(m) = &mut doc {
            m.insert(
                "_conflicts".into(),
                Value::Array(
                    conflicts
                        .iter()
                        .map(|r| Value::String(r.to_string()))
                        .collect(),
                ),
            );
        }
    }
    doc
}

/// `_all_docs` over the `_id` range (Erlang term order: every id is a
/// string, above every other JSON value), design documents left out.
fn scan_all_docs(
    replica: &Replica,
    ranges: &[Range],
    desc: bool,
    bookmark: Option<&(Value, String)>,
    cur: &mut Cursor<'_>,
) -> Result<(), QueryError> {
    let Some(r) = ranges.first() else {
        return Ok(());
    };
    let mut lo = match &r.low {
        plan::End::Val(Value::String(s)) => Bound::Included(s.clone()),
        _ => Bound::Unbounded,
    };
    let mut hi = match &r.high {
        plan::End::Val(Value::String(s)) => Bound::Included(s.clone()),
        plan::End::Val(_) | plan::End::Min => return Ok(()),
        plan::End::Max => Bound::Unbounded,
    };
    if let Some((_, id)) = bookmark {
        if desc {
            hi = Bound::Excluded(id.clone());
        } else {
            lo = Bound::Excluded(id.clone());
        }
    }
    let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
        (&lo, &hi)
    else {
        return scan_ids(replica, &lo, &hi, desc, cur);
    };
    if a > b {
        // A range backwards in byte order: couch_mrview refuses it.
        return Err(QueryError::bad(
            "query_parse_error",
            "No rows can match your key range, reverse your start_key and end_key or set descending=true",
        ));
    }
    scan_ids(replica, &lo, &hi, desc, cur)
}

/// A scan that has examined this many documents without filling its page
/// goes on with its records read, decoded, parsed and matched on several
/// threads (the view indexer's setting); a page that fills sooner (a
/// `limit` most documents match) never starts a thread.
const SERIAL_FIRST: usize = 2048;

/// Records per part of a parallel scan.
const SCAN_PART: usize = 512;

/// One document of a scan, examined: matched against the selector and,
/// when it matches, what the page needs of it.
enum Scanned {
    /// A design document: not examined (CouchDB's `_all_docs` scan leaves
    /// them out).
    Skipped,
    /// Examined; `Some` when it matches (a few documents of most scans).
    Examined(Option<Box<Matched>>),
}

struct Matched {
    raw: RawDocumentChange,
    /// What the selector was matched against (parsed in part).
    doc: Value,
}

/// What a scan parses of each document and what it matches it against.
struct Examiner<'a> {
    selector: &'a Selector,
    wanted: Wanted,
    conflicts: bool,
}

impl Examiner<'_> {
    fn examine(&self, raw: RawDocumentChange) -> Result<Scanned, QueryError> {
        if raw.id.starts_with("_design/") {
            return Ok(Scanned::Skipped);
        }
        let doc = match &self.wanted {
            None => with_conflicts(
                full_doc(&raw.id, &raw.rev.to_string(), parse_body(&raw, None)?),
                &raw.conflicts,
                self.conflicts,
            ),
            Some(w) => {
                // `_id` and `_rev` are not in the body: added when looked at.
                let mut m = Map::with_capacity(w.members.len());
                if w.member("_id").is_some() {
                    m.insert("_id".into(), Value::String(raw.id.clone()));
                }
                if w.member("_rev").is_some() {
                    m.insert("_rev".into(), Value::String(raw.rev.to_string()));
                }
                m.extend(parse_body(&raw, Some(w))?);
                with_conflicts(
                    Value::Object(m),
                    &raw.conflicts,
                    self.conflicts && w.member("_conflicts").is_some(),
                )
            }
        };
        if !self.selector.matches(&doc)? {
            return Ok(Scanned::Examined(None));
        }
        Ok(Scanned::Examined(Some(Box::new(Matched { raw, doc }))))
    }

    /// The document to return for a match (parsed whole when the selector
    /// read only part of it).
    fn whole(&self, raw: &RawDocumentChange, doc: Value) -> Result<Value, QueryError> {
        if self.wanted.is_none() {
            return Ok(doc);
        }
        let body = parse_body(raw, None)?;
        Ok(with_conflicts(
            full_doc(&raw.id, &raw.rev.to_string(), body),
            &raw.conflicts,
            self.conflicts,
        ))
    }
}

/// Gives one scanned document to the page; `Ok(false)` when the page is
/// done.
fn take(cur: &mut Cursor<'_>, ex: &Examiner<'_>, scanned: Scanned) -> Result<bool, QueryError> {
    let Scanned::Examined(matched) = scanned else {
        return Ok(true);
    };
    cur.stats.total_keys_examined += 1;
    cur.count_doc();
    let Some(matched) = matched else {
        return Ok(true);
    };
    let Matched { raw, doc } = *matched;
    cur.offer_matched(
        || Value::String(raw.id.clone()),
        &raw.id,
        doc,
        |doc| ex.whole(&raw, doc),
    )
}

fn scan_ids(
    replica: &Replica,
    lo: &Bound<String>,
    hi: &Bound<String>,
    desc: bool,
    cur: &mut Cursor<'_>,
) -> Result<(), QueryError> {
    let range = (
        lo.as_ref().map(String::as_str),
        hi.as_ref().map(String::as_str),
    );
    // Most documents of a scan do not match: only the members the
    // selector looks at are parsed, the rest of a body only for a
    // document that is returned.
    let ex = Examiner {
        selector: &cur.req.selector,
        wanted: wanted_fields(&cur.req.selector),
        conflicts: cur.req.conflicts,
    };
    let threads = crate::views::parallel::threads();
    let docs = replica.documents(range).with_raw_bodies();
    let docs: Box<dyn Iterator<Item = _>> = if desc {
        Box::new(docs.rev())
    } else {
        Box::new(docs)
    };
    for (n, raw) in docs.enumerate() {
        let raw = raw?;
        if n == SERIAL_FIRST && threads > 1 {
            // The rest of the range, from this document on.
            let from = Bound::Included(raw.id.as_str());
            let rest = if desc {
                (range.0, from)
            } else {
                (from, range.1)
            };
            if let Some(outcome) = scan_in_parallel(replica, rest, desc, threads, &ex, cur) {
                return outcome;
            }
            // Not one thread could start: the range is read on this one.
        }
        if !take(cur, &ex, ex.examine(raw)?)? {
            break;
        }
    }
    Ok(())
}

/// [`scan_ids`] with the records read in parts on one worker at a time
/// and examined on `threads`, taken by the page in id order. What the page
/// counts (`execution_stats`) and returns is what the serial scan gives:
/// parts read ahead of the page are dropped when it is full. `None` when
/// not one thread could start (nothing was read).
fn scan_in_parallel(
    replica: &Replica,
    range: (Bound<&str>, Bound<&str>),
    desc: bool,
    threads: usize,
    ex: &Examiner<'_>,
    cur: &mut Cursor<'_>,
) -> Option<Result<(), QueryError>> {
    let parts = match replica.record_parts(range, desc, SCAN_PART) {
        Ok(parts) => parts,
        Err(e) => return Some(Err(e.into())),
    };
    let ordered = crate::views::parallel::Ordered::from_source(parts, threads, usize::MAX);
    let examine = |(): &mut (), part: crate::store::RecordPart| {
        let mut out = Vec::new();
        for record in part.records(replica) {
            let Some(raw) = record?.winner(replica, false) else {
                continue;
            };
            out.push(ex.examine(raw?)?);
        }
        Ok::<_, QueryError>(out)
    };
    let consume = || -> Result<(), QueryError> {
        while let Some(part) = ordered.next_part() {
            for scanned in part? {
                if !take(cur, ex, scanned)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    ordered
        .run("settee-find", threads, || (), examine, |_| 1, consume)
        .map(|(outcome, _)| outcome)
}

/// `mango_idx_view:covers`: every one of `fields` (`None`: the whole
/// document) is `_id` or an indexed field.
pub(crate) fn covers_fields(idx: &Index, fields: Option<&[String]>) -> bool {
    let Some(fields) = fields else {
        return false;
    };
    if idx.is_all_docs() {
        return false;
    }
    let cols = idx.columns();
    fields.iter().all(|f| f == "_id" || cols.contains(f))
}

/// Whether the index answers the query from its keys alone: the
/// requested fields and the selector's (`required_fields`) are covered.
pub(crate) fn covers(idx: &Index, req: &FindRequest) -> bool {
    let Some(fields) = &req.fields else {
        return false;
    };
    let mut needed = fields.clone();
    needed.extend(req.selector.fields());
    covers_fields(idx, Some(&needed))
}

/// The view query for a json index's range, in the sort's direction.
pub(crate) fn view_query(ranges: &[Range], desc: bool, update: bool) -> QueryOptions {
    let start = Value::Array(plan::start_key(ranges));
    let end = Value::Array(
        plan::end_key(ranges)
            .into_iter()
            .map(|k| k.unwrap_or_else(max_key))
            .collect(),
    );
    let q = QueryOptions::default().update(if update { Update::True } else { Update::False });
    if desc {
        q.descending(true).start_key(end).end_key(start)
    } else {
        q.start_key(start).end_key(end)
    }
}

fn scan_index(
    replica: &Replica,
    idx: &Index,
    ranges: &[Range],
    desc: bool,
    bookmark: Option<&(Value, String)>,
    cur: &mut Cursor<'_>,
) -> Result<(), QueryError> {
    let view = idx.view();
    let name = view.name().to_owned();
    let views = Views::open(replica, [view])?;
    let mut q = view_query(ranges, desc, cur.req.updates_index());
    if let Some((key, id)) = bookmark {
        q = q.start_key(key.clone()).start_key_doc_id(id.clone());
    }
    let covering = covers(idx, cur.req);
    let columns: Vec<Option<Vec<String>>> = idx.columns().iter().map(|c| parse_field(c)).collect();
    for row in views.rows(&name, &q)? {
        let row = row?;
        if let Some((key, id)) = bookmark {
            if row.id == *id && collate(&row.key, key) == Ordering::Equal {
                continue;
            }
        }
        cur.stats.total_keys_examined += 1;
        let doc = if covering {
            // `derive_doc_from_index`: the document is its key.
            let mut doc = json!({"_id": row.id});
            if let Value::Array(values) = &row.key {
                for (path, v) in columns.iter().zip(values).rev() {
                    if let Some(path) = path {
                        set_field(&mut doc, path, v.clone());
                    }
                }
            }
            doc
        } else {
            cur.count_doc();
            match replica.get(&row.id)? {
                Some(d) if !d.deleted => {
                    let conflicts = d.conflicts.clone();
                    with_conflicts(d.to_json(), &conflicts, cur.req.conflicts)
                }
                // Gone since the row was read.
                _ => continue,
            }
        };
        let key = row.key;
        if cur.req.selector.matches(&doc)? && !cur.offer_matched(|| key, &row.id, doc, Ok)? {
            break;
        }
    }
    Ok(())
}

/// Answers a `_find` from the replica.
pub(crate) fn find(replica: &Replica, req: &FindRequest) -> Result<FindResponse, QueryError> {
    let started = Instant::now();
    let all = index::list(replica)?;
    let planned = plan::plan(&all, req, true)?;
    let Some(idx) = planned.index else {
        return Err(QueryError::bad(
            "no_usable_index",
            "No index exists for this sort, try indexing by the sort fields.",
        ));
    };
    let Some(ranges) = planned.ranges else {
        // Unsatisfiable ranges: CouchDB reads nothing and sends `docs` alone.
        return Ok(FindResponse {
            docs: Vec::new(),
            bookmark: None,
            warning: None,
            execution_stats: None,
        });
    };
    let bookmark = req.bookmark.as_deref().map(decode_bookmark).transpose()?;
    let desc = req.sort.first().is_some_and(|(_, d)| *d == Dir::Desc);
    let mut cur = Cursor {
        req,
        skip: req.skip,
        limit: req.limit,
        stats: ExecutionStats::default(),
        docs: Vec::new(),
        last: None,
    };
    if idx.is_all_docs() {
        scan_all_docs(replica, &ranges, desc, bookmark.as_ref(), &mut cur)?;
    } else {
        scan_index(replica, &idx, &ranges, desc, bookmark.as_ref(), &mut cur)?;
    }
    let bookmark = match &cur.last {
        Some((key, id)) => encode_bookmark(key, id),
        None => req.bookmark.clone().unwrap_or_else(|| "nil".into()),
    };
    let mut warnings = Vec::new();
    if let Some(d) = req.use_index.first() {
        let d = d.strip_prefix("_design/").unwrap_or(d);
        let wanted = idx.ddoc.as_deref() == Some(format!("_design/{d}").as_str());
        match req.use_index.get(1) {
            None if !wanted => warnings.push(format!(
                "_design/{d} was not used because it does not contain a valid index for this query."
            )),
            Some(n) if !(wanted && idx.name == *n) => warnings.push(format!(
                "_design/{d}, {n} was not used because it is not a valid index for this query."
            )),
            _ => {}
        }
    }
    if idx.is_all_docs() {
        warnings.push(NO_INDEX.to_owned());
    }
    let scanned = (cur.stats.total_docs_examined + cur.stats.total_quorum_docs_examined) as f64;
    let ratio = match cur.stats.results_returned {
        0 => scanned,
        n => scanned / n as f64,
    };
    if ratio > SCAN_THRESHOLD {
        warnings.push(SCAN_RATIO.to_owned());
    }
    let mut stats = cur.stats;
    stats.execution_time_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    Ok(FindResponse {
        docs: cur.docs,
        bookmark: Some(bookmark),
        warning: (!warnings.is_empty()).then(|| warnings.join("\n")),
        execution_stats: req.execution_stats.then_some(stats),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn scans_parse_what_the_selector_reads() {
        let sel = |v: Value| Selector::parse(&v).unwrap_or_else(|e| panic!("{e}"));
        let w = wanted_fields(&sel(
            json!({"elo.global.score": {"$gt": 1}, "tags": {"$elemMatch": {"x": 1}}}),
        ))
        .unwrap_or_else(|| panic!("everything"));
        let score = w
            .member("elo")
            .and_then(|e| e.member("global"))
            .and_then(|g| g.member("score"));
        assert!(score.is_some_and(|s| s.whole));
        assert!(w.member("tags").is_some_and(|t| t.whole));
        assert!(wanted_fields(&sel(json!({"$and": [1]}))).is_none());
        let raw = RawDocumentChange {
            seq: 1,
            id: "c".into(),
            rev: "1-a".parse().unwrap_or_else(|e| panic!("{e}")),
            deleted: false,
            conflicts: Vec::new(),
            deleted_conflicts: Vec::new(),
            body: bytes::Bytes::from_static(
                br#"{"elo":{"global":{"score":5,"n":[1]},"x":2},"tags":[{"x":1}],"q":"long"}"#,
            ),
        };
        let body = parse_body(&raw, Some(&w)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Value::Object(body),
            json!({"elo": {"global": {"score": 5}}, "tags": [{"x": 1}]})
        );
    }

    /// A scan past `SERIAL_FIRST` documents goes on in parallel: pages,
    /// skips, bookmarks, descending order and `execution_stats` are what a
    /// scan on one thread gives (a model of it here), with the parts cut
    /// by one shared walk (the first run) and between the marks it noted
    /// (the second).
    #[test]
    fn a_long_scan_in_parallel_pages_like_one_thread() {
        use crate::revtree::RevPath;
        use crate::store::{IncomingRev, WriteBatch};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let replica = Replica::open(dir.path(), crate::ReplicaConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let n = 3 * SERIAL_FIRST as u64;
        let rev = |id: String, deleted: bool, body: Value| IncomingRev {
            id,
            path: RevPath {
                start: 1,
                ids: vec!["a".into()],
            },
            deleted,
            body: serde_json::value::to_raw_value(&body).unwrap_or_else(|e| panic!("{e}")),
        };
        let mut revs: Vec<IncomingRev> = (0..n)
            .map(|i| rev(format!("d-{i:05}"), i % 7 == 3, json!({"n": i})))
            .collect();
        revs.push(rev("_design/x".into(), false, json!({"n": 1})));
        for batch in revs.chunks(1000) {
            let batch = WriteBatch {
                revs: batch.to_vec(),
                ..WriteBatch::default()
            };
            replica
                .commit_blocking(&batch)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // The live documents in id order (the design document is left out).
        let live: Vec<u64> = (0..n).filter(|i| i % 7 != 3).collect();
        let id = |i: u64| json!(format!("d-{i:05}"));
        let find = |body: Value| {
            let req = FindRequest::from_json(body).unwrap_or_else(|e| panic!("{e}"));
            super::super::find(&replica, &req).unwrap_or_else(|e| panic!("{e}"))
        };
        let ids =
            |r: &FindResponse| -> Vec<Value> { r.docs.iter().map(|d| d["_id"].clone()).collect() };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let every_third = find(json!({"selector": {"n": {"$mod": [3, 0]}}, "limit": 100_000}));
            let want: Vec<Value> = live
                .iter()
                .filter(|i| *i % 3 == 0)
                .map(|&i| id(i))
                .collect();
            assert_eq!(ids(&every_third), want);
            let page =
                find(json!({"selector": {"n": {"$mod": [3, 0]}}, "skip": 1000, "limit": 50}));
            assert_eq!(ids(&page), want[1000..1050].to_vec());
            let desc = find(json!({
                "selector": {"_id": {"$gt": null}, "n": {"$mod": [3, 0]}},
                "sort": [{"_id": "desc"}],
                "limit": 100_000
            }));
            let mut rev_want = want.clone();
            rev_want.reverse();
            assert_eq!(ids(&desc), rev_want);
            // Paged by bookmark, 700 at a time.
            let mut paged = Vec::new();
            let mut bookmark = None;
            loop {
                let mut body = json!({"selector": {"n": {"$mod": [3, 0]}}, "limit": 700});
                if let Some(b) = &bookmark {
                    body["bookmark"] = json!(b);
                }
                let r = find(body);
                if r.docs.is_empty() {
                    break;
                }
                paged.extend(ids(&r));
                bookmark = r.bookmark.clone();
            }
            assert_eq!(paged, want);
            // Counted up to the page's last document, as one thread reads.
            let late = find(
                json!({"selector": {"n": {"$gte": n - 100}}, "limit": 5, "execution_stats": true}),
            );
            let late_want: Vec<u64> = live
                .iter()
                .copied()
                .filter(|i| *i >= n - 100)
                .take(5)
                .collect();
            assert_eq!(
                ids(&late),
                late_want.iter().map(|&i| id(i)).collect::<Vec<_>>()
            );
            let examined = live.iter().filter(|i| **i <= late_want[4]).count() as u64;
            let stats = late
                .execution_stats
                .clone()
                .unwrap_or_else(|| panic!("stats"));
            assert_eq!(
                (stats.total_docs_examined, stats.total_keys_examined),
                (examined, examined)
            );
            runs.push((every_third.to_json(), desc.to_json(), late.docs.clone()));
        }
        assert_eq!(runs[0], runs[1]);
    }

    #[test]
    fn bookmarks_round_trip() {
        let b = encode_bookmark(&json!(["x", 1]), "doc-1");
        assert_eq!(
            decode_bookmark(&b).ok(),
            Some((json!(["x", 1]), "doc-1".to_owned()))
        );
        assert_eq!(
            decode_bookmark("xx")
                .map_err(|e| e.reason())
                .err()
                .as_deref(),
            Some("Invalid bookmark value: \"xx\"")
        );
    }

    #[test]
    fn projects_like_mango_fields() {
        let doc = json!({"_id": "c", "o": {"r": [{"s": 1}], "p.q": 1}, "t": "X", "arr": [1, 2]});
        let fields: Vec<String> = ["o.r.0.s", "o.p\\.q", "t", "arr.1", "missing"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = project(doc, Some(&fields)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out,
            json!({"o": {"r": {"0": {"s": 1}}, "p.q": 1}, "t": "X", "arr": {"1": 2}})
        );
    }
}
