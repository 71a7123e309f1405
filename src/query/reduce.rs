//! Reduce at query time: rows of a range grouped by `group`/`group_level`
//! and reduced with CouchDB's built-ins (`_count`, `_sum`, `_stats`,
//! `_approx_count_distinct`) or the design document's JavaScript
//! (reduce over chunks of rows, then rereduce).
//!
//! The index keeps no stored reductions (CouchDB keeps them in its B-tree
//! nodes): a reduce reads its range's rows. For the reduces apps use over
//! the ranges they ask for that is a scan of encoded rows, not of
//! documents.

use super::design::{Builtin, DesignDoc, Reduce};
use super::error::QueryError;
use crate::views::{collate, ViewRow};
use serde_json::{json, Map, Number, Value};
use std::cmp::Ordering;
use std::collections::HashSet;

/// Rows given to one call of a JavaScript reduce.
const JS_CHUNK: usize = 1000;

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grouping {
    /// One group: the whole range (`group=false`).
    All,
    /// Equal keys (`group=true`).
    Exact,
    /// Array keys cut to this many elements (`group_level=N`).
    Level(usize),
}

/// One row of a reduce answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReducedRow {
    /// The group's key (`null` for a reduce of the whole range).
    pub key: Value,
    /// The reduction.
    pub value: Value,
}

impl ReducedRow {
    /// `{"key": …, "value": …}`.
    pub fn to_json(&self) -> Value {
        json!({"key": self.key, "value": self.value})
    }
}

fn group_key(key: &Value, grouping: Grouping) -> Value {
    match (grouping, key) {
        // group_level=0 is one group, as group=false.
        (Grouping::All | Grouping::Level(0), _) => Value::Null,
        (Grouping::Level(n), Value::Array(items)) => {
            Value::Array(items.iter().take(n).cloned().collect())
        }
        _ => key.clone(),
    }
}

/// Groups `rows` (in query order) and reduces each group; `skip` and
/// `limit` count groups. Stops reading rows once `limit` groups are done.
pub(crate) fn reduce_rows(
    rows: impl Iterator<Item = Result<ViewRow, QueryError>>,
    grouping: Grouping,
    reduce: &Reduce,
    ddoc: &DesignDoc,
    skip: usize,
    limit: Option<usize>,
) -> Result<Vec<ReducedRow>, QueryError> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut current: Option<(Value, Reducer)> = None;
    let mut finish =
        |key: Value, r: Reducer, out: &mut Vec<ReducedRow>| -> Result<(), QueryError> {
            if skipped < skip {
                skipped += 1;
                return Ok(());
            }
            out.push(ReducedRow {
                key,
                value: r.finish(ddoc)?,
            });
            Ok(())
        };
    for row in rows {
        if out.len() >= limit {
            break;
        }
        let row = row?;
        let key = group_key(&row.key, grouping);
        let same = match &current {
            Some((k, _)) => {
                matches!(grouping, Grouping::All | Grouping::Level(0))
                    || collate(k, &key) == Ordering::Equal
            }
            None => false,
        };
        if !same {
            if let Some((k, r)) = current.take() {
                finish(k, r, &mut out)?;
                if out.len() >= limit {
                    break;
                }
            }
            current = Some((key, Reducer::new(reduce)));
        }
        if let Some((_, r)) = current.as_mut() {
            r.add(row, ddoc)?;
        }
    }
    if out.len() < limit {
        if let Some((k, r)) = current.take() {
            finish(k, r, &mut out)?;
        }
    }
    Ok(out)
}

/// A reduction in progress over one group.
enum Reducer {
    Count(u64),
    Sum(Option<Value>),
    Stats(Option<Value>),
    Distinct(HashSet<Vec<u8>>),
    Js {
        i: usize,
        pending: Vec<Value>,
        partials: Vec<Value>,
    },
}

impl Reducer {
    fn new(reduce: &Reduce) -> Reducer {
        match reduce {
            Reduce::Builtin(Builtin::Count) => Reducer::Count(0),
            Reduce::Builtin(Builtin::Sum) => Reducer::Sum(None),
            Reduce::Builtin(Builtin::Stats) => Reducer::Stats(None),
            Reduce::Builtin(Builtin::ApproxCountDistinct) => Reducer::Distinct(HashSet::new()),
            Reduce::Js(i) => Reducer::Js {
                i: *i,
                pending: Vec::new(),
                partials: Vec::new(),
            },
        }
    }

    fn add(&mut self, row: ViewRow, ddoc: &DesignDoc) -> Result<(), QueryError> {
        match self {
            Reducer::Count(n) => *n += 1,
            Reducer::Sum(acc) => {
                *acc = Some(match acc.take() {
                    None => check_sum(row.value)?,
                    Some(a) => sum(a, row.value)?,
                })
            }
            Reducer::Stats(acc) => {
                let s = stats_of(&row.value)?;
                *acc = Some(match acc.take() {
                    None => s,
                    Some(a) => merge_stats(&a, &s)?,
                })
            }
            Reducer::Distinct(keys) => {
                let mut b = Vec::new();
                crate::views::encode_key(&row.key, &mut b);
                keys.insert(b);
            }
            Reducer::Js {
                i,
                pending,
                partials,
            } => {
                pending.push(json!([[row.key, row.id], row.value]));
                if pending.len() >= JS_CHUNK {
                    let input = Value::Array(std::mem::take(pending));
                    partials.push(js_reduce(ddoc, *i, &input, false)?);
                }
            }
        }
        Ok(())
    }

    fn finish(self, ddoc: &DesignDoc) -> Result<Value, QueryError> {
        Ok(match self {
            Reducer::Count(n) => json!(n),
            Reducer::Sum(v) => v.unwrap_or(json!(0)),
            Reducer::Stats(v) => v.unwrap_or(Value::Null),
            Reducer::Distinct(keys) => json!(keys.len()),
            Reducer::Js {
                i,
                pending,
                mut partials,
            } => {
                if !pending.is_empty() || partials.is_empty() {
                    partials.push(js_reduce(ddoc, i, &Value::Array(pending), false)?);
                }
                if partials.len() == 1 {
                    partials.pop().unwrap_or(Value::Null)
                } else {
                    js_reduce(ddoc, i, &Value::Array(partials), true)?
                }
            }
        })
    }
}

/// One call of a JavaScript reduce, with CouchDB's `reduce_limit`: an
/// output over 4096 bytes that is more than half the input is refused.
fn js_reduce(
    ddoc: &DesignDoc,
    i: usize,
    input: &Value,
    rereduce: bool,
) -> Result<Value, QueryError> {
    let text = input.to_string();
    let out = ddoc.with_functions(|f| f.reduce(i, &text, rereduce))?;
    let len = out.to_string().len();
    if len > 4096 && len * 2 > text.len() {
        return Err(QueryError::Script {
            ddoc: ddoc.id.clone(),
            error: "reduce_overflow_error".into(),
            reason: format!(
                "Reduce output must shrink more rapidly: input size: {} output size: {len}",
                text.len()
            ),
            status: 500,
        });
    }
    Ok(out)
}

fn builtin_error(reason: String) -> QueryError {
    QueryError::Script {
        ddoc: String::new(),
        error: "builtin_reduce_error".into(),
        reason,
        status: 500,
    }
}

const SUM_RULE: &str = "The _sum function requires that map values be numbers, arrays of numbers, or objects. Objects cannot be mixed with other data structures. Objects can be arbitrarily nested, provided that the values for all fields are themselves numbers, arrays of numbers, or objects.";

/// A value `_sum` accepts, unchanged.
fn check_sum(v: Value) -> Result<Value, QueryError> {
    match &v {
        Value::Number(_) => Ok(v),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(v),
        Value::Object(m) => {
            for x in m.values() {
                check_sum(x.clone())?;
            }
            Ok(v)
        }
        _ => Err(builtin_error(SUM_RULE.into())),
    }
}

/// Erlang arithmetic: integers stay integers, a float makes a float.
fn add_numbers(a: &Number, b: &Number) -> Number {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        if let Some(s) = x.checked_add(y) {
            return Number::from(s);
        }
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        if let Some(s) = x.checked_add(y) {
            return Number::from(s);
        }
    }
    let f = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    Number::from_f64(f).unwrap_or_else(|| Number::from(0))
}

fn sum(a: Value, b: Value) -> Result<Value, QueryError> {
    let b = check_sum(b)?;
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => Value::Number(add_numbers(&x, &y)),
        // A number and an array: the number adds to the first element.
        (Value::Number(x), Value::Array(ys)) | (Value::Array(ys), Value::Number(x)) => {
            let mut ys = ys;
            match ys.first_mut() {
                Some(Value::Number(y)) => *y = add_numbers(&x, y),
                _ => ys.insert(0, Value::Number(x)),
            }
            Value::Array(ys)
        }
        (Value::Array(xs), Value::Array(ys)) => {
            let n = xs.len().max(ys.len());
            let zero = Number::from(0);
            Value::Array(
                (0..n)
                    .map(|i| {
                        let x = xs.get(i).and_then(Value::as_number).unwrap_or(&zero);
                        let y = ys.get(i).and_then(Value::as_number).unwrap_or(&zero);
                        Value::Number(add_numbers(x, y))
                    })
                    .collect(),
            )
        }
        (Value::Object(mut xs), Value::Object(ys)) => {
            for (k, y) in ys {
                let merged = match xs.remove(&k) {
                    Some(x) => sum(x, y)?,
                    None => y,
                };
                xs.insert(k, merged);
            }
            Value::Object(xs)
        }
        _ => return Err(builtin_error(SUM_RULE.into())),
    })
}

fn num(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The `_stats` of one value: a number, an array of numbers (elementwise),
/// or a stats object from an earlier reduce.
fn stats_of(v: &Value) -> Result<Value, QueryError> {
    match v {
        Value::Number(n) => {
            // Erlang keeps an integer's square an integer.
            let sqr = match n.as_i64().and_then(|i| i.checked_mul(i)) {
                Some(i) => json!(i),
                None => num(n.as_f64().unwrap_or(0.0).powi(2)),
            };
            Ok(json!({"sum": n, "count": 1, "min": n, "max": n, "sumsqr": sqr}))
        }
        Value::Array(items) => items
            .iter()
            .map(|x| match x {
                Value::Number(_) => stats_of(x),
                _ => Err(stats_error(v)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(m)
            if ["sum", "count", "min", "max", "sumsqr"]
                .iter()
                .all(|k| m.get(*k).is_some_and(Value::is_number)) =>
        {
            Ok(v.clone())
        }
        _ => Err(stats_error(v)),
    }
}

fn stats_error(v: &Value) -> QueryError {
    builtin_error(format!(
        "The _stats function requires that map values be numbers or arrays of numbers, not '{v}'"
    ))
}

fn merge_stats(a: &Value, b: &Value) -> Result<Value, QueryError> {
    match (a, b) {
        (Value::Array(xs), Value::Array(ys)) if xs.len() == ys.len() => xs
            .iter()
            .zip(ys)
            .map(|(x, y)| merge_stats(x, y))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Value::Object(x), Value::Object(y)) => {
            let n = |m: &Map<String, Value>, k: &str| {
                m.get(k).and_then(Value::as_number).cloned().unwrap_or_else(|| Number::from(0))
            };
            let pick = |k: &str, less: bool| {
                let (p, q) = (n(x, k), n(y, k));
                let pf = p.as_f64().unwrap_or(0.0);
                let qf = q.as_f64().unwrap_or(0.0);
                if (pf <= qf) == less {
                    Value::Number(p)
                } else {
                    Value::Number(q)
                }
            };
            Ok(json!({
                "sum": Value::Number(add_numbers(&n(x, "sum"), &n(y, "sum"))),
                "count": Value::Number(add_numbers(&n(x, "count"), &n(y, "count"))),
                "min": pick("min", true),
                "max": pick("max", false),
                "sumsqr": Value::Number(add_numbers(&n(x, "sumsqr"), &n(y, "sumsqr"))),
            }))
        }
        _ => Err(builtin_error(
            "The _stats function requires that map values be numbers or arrays of numbers of the same length"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_keeps_integers_and_adds_arrays_and_objects() {
        let s = |a: Value, b: Value| sum(check_sum(a).unwrap_or_default(), b).ok();
        assert_eq!(s(json!(1), json!(2)), Some(json!(3)));
        assert_eq!(s(json!(1), json!(2.5)), Some(json!(3.5)));
        assert_eq!(s(json!([1, 2]), json!([3])), Some(json!([4, 2])));
        assert_eq!(
            s(json!({"a": 1}), json!({"a": 2, "b": 1})),
            Some(json!({"a": 3, "b": 1}))
        );
        assert!(s(json!(1), json!("x")).is_none());
    }

    #[test]
    fn stats_merge_like_couchdb() {
        let a = stats_of(&json!(2)).ok();
        let b = stats_of(&json!(5)).ok();
        let m = match (a, b) {
            (Some(a), Some(b)) => merge_stats(&a, &b).ok(),
            _ => None,
        };
        assert_eq!(
            m,
            Some(json!({"sum": 7, "count": 2, "min": 2, "max": 5, "sumsqr": 29}))
        );
        assert!(stats_of(&json!("x")).is_err());
    }

    #[test]
    fn group_level_cuts_array_keys_only() {
        assert_eq!(
            group_key(&json!([1, 2, 3]), Grouping::Level(2)),
            json!([1, 2])
        );
        assert_eq!(group_key(&json!("a"), Grouping::Level(2)), json!("a"));
        assert_eq!(group_key(&json!([1]), Grouping::All), Value::Null);
    }
}
