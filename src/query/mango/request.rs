//! The body of `POST /db/_find` (and `_explain`), validated as CouchDB 3.4
//! validates it (`mango_opts:validate_find`: keys in CouchDB's order, a bad
//! value reported before an unknown key), and the response CouchDB sends.

use super::erl;
use super::selector::Selector;
use crate::query::QueryError;
use serde_json::{json, Map, Value};

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Asc,
    Desc,
}

impl Dir {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }
}

/// A validated `_find` request.
///
/// ```
/// use serde_json::json;
/// use settee::query::FindRequest;
///
/// let req = FindRequest::from_json(json!({
///     "selector": {"docType": "CARD", "elo": {"$gt": 1000}},
///     "fields": ["_id", "elo"],
///     "sort": [{"elo": "desc"}],
///     "limit": 10
/// }))?;
/// assert_eq!(req.limit(), 10);
/// // Errors carry CouchDB's status, `error` and `reason`.
/// let bad = FindRequest::from_json(json!({"selector": []})).unwrap_err();
/// assert_eq!((bad.status(), bad.error()), (400, "invalid_selector_json"));
/// # Ok::<(), settee::query::QueryError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FindRequest {
    pub(crate) selector: Selector,
    pub(crate) use_index: Vec<String>,
    pub(crate) bookmark: Option<String>,
    pub(crate) limit: usize,
    pub(crate) skip: usize,
    pub(crate) sort: Vec<(String, Dir)>,
    pub(crate) fields: Option<Vec<String>>,
    pub(crate) r: u64,
    pub(crate) conflicts: bool,
    pub(crate) stale: bool,
    pub(crate) update: bool,
    pub(crate) stable: bool,
    pub(crate) execution_stats: bool,
    pub(crate) allow_fallback: bool,
}

/// CouchDB's default `limit` (`[mango] default_limit`).
pub const DEFAULT_LIMIT: usize = 25;

fn non_neg(v: &Value) -> Result<usize, QueryError> {
    match v {
        Value::Number(n) if !n.is_f64() && n.as_i64().is_none_or(|i| i >= 0) => Ok(n
            .as_u64()
            .map_or(usize::MAX, |u| usize::try_from(u).unwrap_or(usize::MAX))),
        _ => Err(QueryError::bad(
            "invalid_non_neg_integer",
            format!(
                "{} is not an integer greater than or equal to zero",
                erl::w(v)
            ),
        )),
    }
}

fn boolean(v: &Value) -> Result<bool, QueryError> {
    v.as_bool().ok_or_else(|| {
        QueryError::bad(
            "invalid_boolean",
            format!("Invalid boolean value: {}", erl::w(v)),
        )
    })
}

fn use_index(v: &Value) -> Result<Vec<String>, QueryError> {
    let bad = || {
        QueryError::bad(
            "invalid_index_name",
            format!("Invalid index name: {}", erl::w(v)),
        )
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => {
            let parts: Vec<&str> = s.split('/').collect();
            match parts.as_slice() {
                [d] | ["_design", d] => Ok(vec![(*d).to_owned()]),
                [d, n] | ["_design", d, n] => Ok(vec![(*d).to_owned(), (*n).to_owned()]),
                _ => Err(bad()),
            }
        }
        Value::Array(a) => match a.as_slice() {
            [] => Ok(Vec::new()),
            [Value::String(d)] => Ok(vec![d.clone()]),
            [Value::String(d), Value::String(n)] => Ok(vec![d.clone(), n.clone()]),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// `mango_sort:new`.
pub(crate) fn sort(v: &Value) -> Result<Vec<(String, Dir)>, QueryError> {
    let Value::Array(items) = v else {
        return Err(QueryError::bad(
            "invalid_sort_json",
            format!("Sort must be an array of sort specs, not: {}", erl::p(v)),
        ));
    };
    let bad_field = |f: &Value| {
        QueryError::bad(
            "invalid_sort_field",
            format!("Invalid sort field: {}", erl::p(f)),
        )
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) if !s.is_empty() => out.push((s.clone(), Dir::Asc)),
            Value::Object(m) if m.len() == 1 => {
                let Some((name, dir)) = m.iter().next() else {
                    return Err(bad_field(item));
                };
                match dir.as_str() {
                    Some("asc") => out.push((name.clone(), Dir::Asc)),
                    Some("desc") => out.push((name.clone(), Dir::Desc)),
                    _ => return Err(bad_field(item)),
                }
            }
            _ => return Err(bad_field(item)),
        }
    }
    if out.windows(2).any(|w| w[0].1 != w[1].1) {
        return Err(QueryError::bad(
            "unsupported_mixed_sort",
            "Sorts currently only support a single direction for all fields.",
        ));
    }
    Ok(out)
}

/// `mango_fields:new`: `[]` means every field.
fn fields(v: &Value) -> Result<Option<Vec<String>>, QueryError> {
    let Value::Array(items) = v else {
        return Err(QueryError::bad(
            "invalid_fields",
            format!("Fields must be an array of strings, not: {}", erl::w(v)),
        ));
    };
    if items.is_empty() {
        return Ok(None);
    }
    items
        .iter()
        .map(|f| match f {
            Value::String(s) => Ok(s.clone()),
            // CouchDB accepts objects here (text indexes' typed fields)
            // and then fails extracting them; settee refuses them up front.
            _ => Err(QueryError::bad(
                "invalid_field",
                format!("Invalid JSON for field spec: {}", erl::w(f)),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl FindRequest {
    /// Validates a `_find` body: `selector` (required), `fields`, `sort`,
    /// `limit` (default 25), `skip`, `bookmark`, `use_index` (a name,
    /// `ddoc/name`, or `[ddoc, name]`), `conflicts`, `execution_stats`,
    /// `r`, `update`, `stable`, `stale`, `allow_fallback`, `partition`
    /// (only empty: a replica is not partitioned). Errors are CouchDB's.
    pub fn from_json(body: Value) -> Result<FindRequest, QueryError> {
        let Value::Object(mut m) = body else {
            return Err(QueryError::bad(
                "bad_request",
                "Request body must be a JSON object",
            ));
        };
        let mut take = |k: &str| m.shift_remove(k);
        let selector = match take("selector") {
            Some(v) => Selector::parse(&v)?,
            None => {
                return Err(QueryError::bad(
                    "missing_required_key",
                    "Missing required key: selector",
                ))
            }
        };
        let use_index = take("use_index").map_or(Ok(Vec::new()), |v| use_index(&v))?;
        let bookmark = match take("bookmark") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                // CouchDB has no message for it: its catch-all (a 500 there).
                return Err(QueryError::bad(
                    "unknown_error",
                    format!(
                        "Unknown Error: mango_opts :: {{invalid_bookmark,{}}}",
                        erl::w(&other)
                    ),
                ));
            }
        };
        let limit = take("limit").map_or(Ok(DEFAULT_LIMIT), |v| non_neg(&v))?;
        let skip = take("skip").map_or(Ok(0), |v| non_neg(&v))?;
        let sort = take("sort").map_or(Ok(Vec::new()), |v| sort(&v))?;
        let fields = take("fields").map_or(Ok(None), |v| fields(&v))?;
        match take("partition") {
            None => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(_) => {
                return Err(QueryError::bad(
                    "bad_request",
                    "partition specified on non-partitioned db",
                ))
            }
        }
        let r = match take("r") {
            None => 1,
            Some(v) => match v.as_u64() {
                Some(r) if r > 0 && !v.is_f64() => r,
                _ => {
                    return Err(QueryError::bad(
                        "invalid_pos_integer",
                        format!("{} is not an integer greater than zero", erl::w(&v)),
                    ))
                }
            },
        };
        let conflicts = take("conflicts").map_or(Ok(false), |v| boolean(&v))?;
        let stale = match take("stale") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) if s == "false" => false,
            Some(Value::String(s)) if s == "ok" => true,
            Some(other) => {
                // CouchDB has no message for it: its catch-all (a 500 there).
                return Err(QueryError::bad(
                    "unknown_error",
                    format!(
                        "Unknown Error: mango_opts :: {{invalid_ok_or_false_value,{}}}",
                        erl::w(&other)
                    ),
                ));
            }
        };
        let update = take("update").map_or(Ok(true), |v| boolean(&v))?;
        let stable = take("stable").map_or(Ok(false), |v| boolean(&v))?;
        let execution_stats = take("execution_stats").map_or(Ok(false), |v| boolean(&v))?;
        let allow_fallback = take("allow_fallback").map_or(Ok(true), |v| boolean(&v))?;
        if let Some(key) = m.keys().next() {
            return Err(QueryError::bad(
                "invalid_key",
                format!("Invalid key {key} for this request."),
            ));
        }
        Ok(FindRequest {
            selector,
            use_index,
            bookmark,
            limit,
            skip,
            sort,
            fields,
            r,
            conflicts,
            stale,
            update,
            stable,
            execution_stats,
            allow_fallback,
        })
    }

    /// The most documents returned.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Matching documents skipped first.
    pub fn skip(&self) -> usize {
        self.skip
    }

    /// The normalized selector, as `_explain` shows it.
    pub fn selector(&self) -> Value {
        self.selector.to_json()
    }

    /// Whether the response carries `execution_stats`.
    pub fn execution_stats(&self) -> bool {
        self.execution_stats
    }

    /// Whether indexes are brought up to date first (`update`, and not
    /// `stale: "ok"`).
    pub(crate) fn updates_index(&self) -> bool {
        self.update && !self.stale
    }

    /// The options as `_explain` lists them (`opts`).
    pub(crate) fn opts_json(&self) -> Value {
        let sort: Map<String, Value> = self
            .sort
            .iter()
            .map(|(f, d)| (f.clone(), Value::String(d.name().into())))
            .collect();
        json!({
            "use_index": self.use_index,
            "bookmark": self.bookmark.as_deref().unwrap_or("nil"),
            "limit": self.limit,
            "skip": self.skip,
            "sort": sort,
            "fields": self.fields.clone().unwrap_or_default(),
            "partition": "",
            "r": self.r,
            "conflicts": self.conflicts,
            "stale": if self.stale { json!("ok") } else { json!(false) },
            "update": self.update,
            "stable": self.stable,
            "execution_stats": self.execution_stats,
            "allow_fallback": self.allow_fallback,
        })
    }
}

/// `execution_stats` of a `_find` response (with `execution_stats: true`).
///
/// ```
/// use serde_json::json;
/// use settee::query::{FindRequest, Query};
/// # let dir = tempfile::tempdir()?;
/// # let replica = settee::Replica::open(dir.path(), settee::ReplicaConfig::default())?;
/// replica.put_blocking("a", &json!({"n": 1}))?;
/// replica.put_blocking("b", &json!({"n": 2}))?;
/// let req = FindRequest::from_json(json!({"selector": {"n": 2}, "execution_stats": true}))?;
/// let stats = Query::open(&replica)?.find(&req)?.execution_stats.unwrap_or_default();
/// assert_eq!((stats.total_docs_examined, stats.results_returned), (2, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ExecutionStats {
    /// Index rows read.
    pub total_keys_examined: u64,
    /// Documents read and matched against the selector.
    pub total_docs_examined: u64,
    /// Documents read with a quorum (always 0 on a replica).
    pub total_quorum_docs_examined: u64,
    /// Documents returned.
    pub results_returned: u64,
    /// Time spent, in milliseconds.
    pub execution_time_ms: f64,
}

/// The answer to a `_find`, as CouchDB sends it.
///
/// ```
/// use serde_json::json;
/// use settee::query::{FindRequest, Query};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// replica.put_blocking("c1", &json!({"docType": "CARD", "elo": 1200}))?;
/// replica.put_blocking("t1", &json!({"docType": "TAG"}))?;
/// let query = Query::open(&replica)?;
/// let found = query.find(&FindRequest::from_json(json!({
///     "selector": {"docType": "CARD"}, "fields": ["_id", "elo"]
/// }))?)?;
/// assert_eq!(found.docs, vec![json!({"_id": "c1", "elo": 1200})]);
/// let body = found.to_json();
/// assert!(body["bookmark"].is_string());
/// assert_eq!(
///     body["warning"],
///     "No matching index found, create an index to optimize query time."
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FindResponse {
    /// The matching documents (projected to `fields`), in order.
    pub docs: Vec<Value>,
    /// Where the next page starts: pass it back as `bookmark`. `None` only
    /// when the selector's ranges are empty (CouchDB then sends `docs`
    /// alone).
    pub bookmark: Option<String>,
    /// CouchDB's warnings, one per line.
    pub warning: Option<String>,
    /// With `execution_stats: true`.
    pub execution_stats: Option<ExecutionStats>,
}

impl FindResponse {
    /// The body CouchDB sends: `docs`, `bookmark`, `execution_stats`,
    /// `warning`, in that order, each only when present.
    pub fn to_json(&self) -> Value {
        let mut m = Map::with_capacity(4);
        m.insert("docs".into(), Value::Array(self.docs.clone()));
        if let Some(b) = &self.bookmark {
            m.insert("bookmark".into(), Value::String(b.clone()));
        }
        if let Some(s) = &self.execution_stats {
            m.insert(
                "execution_stats".into(),
                json!({
                    "total_keys_examined": s.total_keys_examined,
                    "total_docs_examined": s.total_docs_examined,
                    "total_quorum_docs_examined": s.total_quorum_docs_examined,
                    "results_returned": s.results_returned,
                    "execution_time_ms": s.execution_time_ms,
                }),
            );
        }
        if let Some(w) = &self.warning {
            m.insert("warning".into(), Value::String(w.clone()));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    fn err(v: Value) -> (String, String) {
        match FindRequest::from_json(v) {
            Ok(_) => panic!("accepted"),
            Err(e) => (e.error().to_owned(), e.reason()),
        }
    }

    #[test]
    fn validates_like_couchdb() {
        assert_eq!(err(json!({})).1, "Missing required key: selector");
        assert_eq!(
            err(json!({"selector": {}, "limit": -1})).1,
            "-1 is not an integer greater than or equal to zero"
        );
        assert_eq!(
            err(json!({"selector": {}, "sort": "a"})).1,
            "Sort must be an array of sort specs, not: <<\"a\">>"
        );
        assert_eq!(
            err(json!({"selector": {}, "sort": [{"a": "up"}]})).1,
            "Invalid sort field: {[{<<\"a\">>,<<\"up\">>}]}"
        );
        assert_eq!(
            err(json!({"selector": {}, "sort": ["a", {"b": "desc"}]})).0,
            "unsupported_mixed_sort"
        );
        assert_eq!(
            err(json!({"selector": {}, "foo": 1})).1,
            "Invalid key foo for this request."
        );
        assert_eq!(
            err(json!({"selector": {}, "fields": "a"})).1,
            "Fields must be an array of strings, not: <<97>>"
        );
        let r = FindRequest::from_json(json!({"selector": {"a": 1}, "use_index": "_design/d/n"}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.use_index, vec!["d".to_owned(), "n".to_owned()]);
        assert_eq!(r.limit(), DEFAULT_LIMIT);
        assert_eq!(r.opts_json()["bookmark"], "nil");
    }
}
