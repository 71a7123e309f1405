//! `POST /db/_explain`: the plan of a `_find` in CouchDB 3.4's shape
//! (`mango_cursor:explain`, `mango_cursor_view:explain`): the chosen
//! index, the normalized selector, the options, the other candidates
//! with why they lost, the selector's indexable fields and the view
//! arguments. `selector_hints` lists fields sorted (CouchDB's order comes
//! from an Erlang set and is unspecified).

use super::find::{covers, covers_fields};
use super::index;
use super::plan::{self, indexable_fields, End, Plan};
use super::request::{Dir, FindRequest};
use crate::query::QueryError;
use crate::store::Replica;
use serde_json::{json, Value};

/// The `mrargs` CouchDB would query the index with.
fn mrargs(p: &Plan, req: &FindRequest) -> Value {
    let Some(idx) = &p.index else {
        return Value::Null;
    };
    let (start, end) = match &p.ranges {
        None => (Value::Null, Value::Null),
        Some(ranges) if idx.is_all_docs() => {
            let r = ranges.first();
            let start = match r.map(|r| (&r.lcmp, &r.low)) {
                Some((_, End::Val(v))) => v.clone(),
                _ => json!(""),
            };
            let end = match r.map(|r| &r.high) {
                Some(End::Val(v)) => v.clone(),
                _ => json!("<MAX>"),
            };
            (start, end)
        }
        Some(ranges) => (
            Value::Array(plan::start_key(ranges)),
            Value::Array(
                plan::end_key(ranges)
                    .into_iter()
                    .map(|k| k.unwrap_or_else(|| json!("<MAX>")))
                    .collect(),
            ),
        ),
    };
    let desc = req.sort.first().is_some_and(|(_, d)| *d == Dir::Desc);
    let (start, end) = if desc { (end, start) } else { (start, end) };
    let covering = covers(idx, req);
    json!({
        "include_docs": req.r <= 1 && !covering,
        "view_type": "map",
        "reduce": false,
        "partition": null,
        "start_key": start,
        "end_key": end,
        "direction": if desc { "rev" } else { "fwd" },
        "stable": req.stable || req.stale,
        "update": req.updates_index(),
        "conflicts": if req.conflicts { json!(true) } else { json!("undefined") },
    })
}

/// The `_explain` body for `req`; `db` is the database name shown.
pub(crate) fn explain(replica: &Replica, db: &str, req: &FindRequest) -> Result<Value, QueryError> {
    let all = index::list(replica)?;
    let p = plan::plan(&all, req, false)?;
    let fields = req.selector.fields();
    let indexable = indexable_fields(&req.selector);
    let mut unindexable: Vec<String> = fields
        .into_iter()
        .filter(|f| !indexable.contains(f))
        .collect();
    unindexable.sort();
    unindexable.dedup();
    let candidates: Vec<Value> = p
        .candidates
        .iter()
        .map(|c| {
            let covering = if c.index.is_all_docs() {
                Value::Null
            } else {
                // CouchDB checks the candidates against `fields` alone.
                Value::Bool(covers_fields(&c.index, req.fields.as_deref()))
            };
            json!({
                "index": c.index.to_json(),
                "analysis": {
                    "usable": c.usable,
                    "reasons": [{"name": c.reason}],
                    "ranking": c.ranking,
                    "covering": covering,
                },
            })
        })
        .collect();
    let mut out = json!({
        "dbname": db,
        "index": p.index.as_ref().map_or(Value::Null, index::Index::to_json),
        "partitioned": false,
        "selector": req.selector.to_json(),
        "opts": req.opts_json(),
        "limit": req.limit,
        "skip": req.skip,
        "fields": req.fields.clone().unwrap_or_default(),
        "index_candidates": candidates,
        "selector_hints": [{
            "type": "json",
            "indexable_fields": indexable,
            "unindexable_fields": unindexable,
        }],
    });
    if let (Some(idx), Value::Object(m)) = (&p.index, &mut out) {
        m.insert("mrargs".into(), mrargs(&p, req));
        m.insert("covering".into(), Value::Bool(covers(idx, req)));
    }
    Ok(out)
}
