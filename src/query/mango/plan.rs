//! Choosing the index for a query and the key range to read, as CouchDB
//! 3.4's planner does (`mango_idx:get_usable_indexes`, `mango_cursor:create`,
//! `mango_cursor_view:choose_best_index`, `mango_idx_view:field_ranges`):
//! which indexes are usable (every indexed field required by the
//! selector, the sort served), which one wins (the longest prefix of
//! constrained fields, then the fewest fields, then by name), and the
//! start and end keys of its range. Pure: the indexes come listed.

use super::index::Index;
use super::request::FindRequest;
use super::selector::{Cmp, Selector};
use crate::query::QueryError;
use crate::views::collate;
use serde_json::Value;
use std::cmp::Ordering;

/// One end of a range: below or above every value, or a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum End {
    Min,
    Max,
    Val(Value),
}

fn cmp_end(a: &End, b: &End) -> Ordering {
    match (a, b) {
        (End::Min, End::Min) | (End::Max, End::Max) => Ordering::Equal,
        (End::Min, _) | (_, End::Max) => Ordering::Less,
        (_, End::Min) | (End::Max, _) => Ordering::Greater,
        (End::Val(x), End::Val(y)) => collate(x, y),
    }
}

/// The values a field may take: `low lcmp x hcmp high`; `lcmp` is `Gt`,
/// `Gte` or `Eq`, `hcmp` `Lt`, `Lte` or `Eq`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Range {
    pub(crate) lcmp: Cmp,
    pub(crate) low: End,
    pub(crate) hcmp: Cmp,
    pub(crate) high: End,
}

impl Range {
    fn all() -> Range {
        Range {
            lcmp: Cmp::Gt,
            low: End::Min,
            hcmp: Cmp::Lt,
            high: End::Max,
        }
    }

    fn eq(v: &Value) -> Range {
        Range {
            lcmp: Cmp::Eq,
            low: End::Val(v.clone()),
            hcmp: Cmp::Eq,
            high: End::Val(v.clone()),
        }
    }
}

/// `mango_idx_view:indexable_fields`, sorted and deduplicated.
pub(crate) fn indexable_fields(s: &Selector) -> Vec<String> {
    let mut out = Vec::new();
    collect_indexable(s, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_indexable(s: &Selector, out: &mut Vec<String>) {
    match s {
        Selector::And(args) => args.iter().for_each(|a| collect_indexable(a, out)),
        Selector::Field(f, c) => {
            if matches!(
                **c,
                Selector::Cmp(Cmp::Lt | Cmp::Lte | Cmp::Eq | Cmp::Gt | Cmp::Gte, _)
                    | Selector::BeginsWith(_)
                    | Selector::Exists(_)
            ) {
                out.push(f.name.clone());
            }
        }
        _ => {}
    }
}

/// `mango_idx_view:field_ranges`: each indexable field's range; a field
/// whose range is empty ends the list as its only entry (`None`).
pub(crate) fn field_ranges(s: &Selector) -> Vec<(String, Option<Range>)> {
    let mut out = Vec::new();
    for f in indexable_fields(s) {
        match range(s, &f, Some(Range::all())) {
            None => return vec![(f, None)],
            r => out.push((f, r)),
        }
    }
    out
}

fn range(s: &Selector, field: &str, r: Option<Range>) -> Option<Range> {
    let r = r?;
    match s {
        Selector::And(args) => args.iter().try_fold(r, |r, a| range(a, field, Some(r))),
        Selector::Field(f, c) if f.name == field => narrow(c, r),
        _ => Some(r),
    }
}

enum Pos {
    Min,
    Low,
    Mid,
    High,
    Max,
}

fn pos(low: &End, arg: &Value, high: &End) -> Pos {
    let a = End::Val(arg.clone());
    match cmp_end(&a, low) {
        Ordering::Less => Pos::Min,
        Ordering::Equal => Pos::Low,
        Ordering::Greater => match cmp_end(&a, high) {
            Ordering::Less => Pos::Mid,
            Ordering::Equal => Pos::High,
            Ordering::Greater => Pos::Max,
        },
    }
}

/// `mango_idx_view:range/5`: narrows `r` by one condition.
fn narrow(c: &Selector, r: Range) -> Option<Range> {
    let Range {
        lcmp,
        low,
        hcmp,
        high,
    } = r;
    let same = |lcmp, low, hcmp, high| {
        Some(Range {
            lcmp,
            low,
            hcmp,
            high,
        })
    };
    match c {
        Selector::BeginsWith(p) => {
            let r = narrow(
                &Selector::Cmp(Cmp::Gte, Value::String(p.clone())),
                Range {
                    lcmp,
                    low,
                    hcmp,
                    high,
                },
            )?;
            // U+FFFF sorts above every character in the collation.
            narrow(
                &Selector::Cmp(Cmp::Lte, Value::String(format!("{p}\u{FFFF}"))),
                r,
            )
        }
        Selector::Cmp(op, arg) => {
            let p = pos(&low, arg, &high);
            let v = || End::Val(arg.clone());
            match op {
                Cmp::Lt => match p {
                    Pos::Min | Pos::Low => None,
                    Pos::Mid | Pos::High => same(lcmp, low, Cmp::Lt, v()),
                    Pos::Max => same(lcmp, low, hcmp, high),
                },
                Cmp::Lte => match p {
                    Pos::Min => None,
                    Pos::Low if matches!(lcmp, Cmp::Gte | Cmp::Eq) => Some(Range::eq(arg)),
                    Pos::Low => None,
                    Pos::Mid => same(lcmp, low, Cmp::Lte, v()),
                    Pos::High | Pos::Max => same(lcmp, low, hcmp, high),
                },
                Cmp::Eq => match p {
                    Pos::Min => None,
                    Pos::Low if matches!(lcmp, Cmp::Gte | Cmp::Eq) => Some(Range::eq(arg)),
                    Pos::Low => None,
                    Pos::Mid => Some(Range::eq(arg)),
                    Pos::High if matches!(hcmp, Cmp::Lte | Cmp::Eq) => Some(Range::eq(arg)),
                    Pos::High | Pos::Max => None,
                },
                Cmp::Gte => match p {
                    Pos::Min | Pos::Low => same(lcmp, low, hcmp, high),
                    Pos::Mid => same(Cmp::Gte, v(), hcmp, high),
                    Pos::High if matches!(hcmp, Cmp::Lte | Cmp::Eq) => Some(Range::eq(arg)),
                    Pos::High | Pos::Max => None,
                },
                Cmp::Gt => match p {
                    Pos::Min => same(lcmp, low, hcmp, high),
                    Pos::Low | Pos::Mid => same(Cmp::Gt, v(), hcmp, high),
                    Pos::High | Pos::Max => None,
                },
                Cmp::Ne => same(lcmp, low, hcmp, high),
            }
        }
        _ => same(lcmp, low, hcmp, high),
    }
}

/// Why an index is not usable (`mango_idx_view:is_usable`'s reasons).
fn usability(idx: &Index, s: &Selector, sort: &[String]) -> Vec<&'static str> {
    let cols = idx.columns();
    let mut reasons = Vec::new();
    if idx.is_all_docs() {
        if sort.is_empty() {
            return reasons;
        }
        if !indexable_fields(s).iter().any(|f| f == "_id") {
            reasons.push("field_mismatch");
        }
        if !cols.starts_with(sort) {
            reasons.push("sort_order_mismatch");
        }
        return reasons;
    }
    let mut required = cols.clone();
    required.sort();
    required.dedup();
    required.retain(|c| !sort.contains(c) && c != "_id" && c != "_rev");
    if s.is_text_search() {
        reasons.push("needs_text_search");
    }
    if !s.has_required_fields(&required) {
        reasons.push("field_mismatch");
    }
    if !can_use_sort(&cols, sort, s) {
        reasons.push("sort_order_mismatch");
    }
    reasons
}

fn can_use_sort(cols: &[String], sort: &[String], s: &Selector) -> bool {
    match (cols.split_first(), sort.first()) {
        (_, None) => true,
        (None, _) => false,
        (Some((c, _)), Some(f)) if c == f => cols.starts_with(sort),
        (Some((c, rest)), _) => s.is_constant_field(c) && can_use_sort(rest, sort, s),
    }
}

/// The chosen index and what `_explain` tells about the others.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `None` when no index is usable (`_explain` only; `_find` fails).
    pub(crate) index: Option<Index>,
    /// The ranges of the index's leading fields; `None` when they are
    /// empty (nothing is read).
    pub(crate) ranges: Option<Vec<Range>>,
    pub(crate) candidates: Vec<Candidate>,
}

/// An index that was not chosen, and why.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) index: Index,
    pub(crate) usable: bool,
    pub(crate) reason: &'static str,
    pub(crate) ranking: usize,
}

fn same_index(a: &Index, b: &Index) -> bool {
    a.ddoc == b.ddoc && a.name == b.name
}

fn matches_use_index(i: &Index, use_index: &[String]) -> bool {
    let Some(ddoc) = use_index.first() else {
        return false;
    };
    let ddoc = if ddoc.starts_with("_design/") {
        ddoc.clone()
    } else {
        format!("_design/{ddoc}")
    };
    i.ddoc.as_deref() == Some(ddoc.as_str()) && use_index.get(1).is_none_or(|n| *n == i.name)
}

/// `composite_indexes` + `choose_best_index`: each index with the ranges
/// of its longest constrained prefix, best first.
fn rank(
    indexes: &[Index],
    ranges: &[(String, Option<Range>)],
) -> Vec<(Index, Vec<Option<Range>>, usize)> {
    let mut out: Vec<(Index, Vec<Option<Range>>, usize)> = indexes
        .iter()
        .map(|i| {
            let mut prefix = Vec::new();
            for c in i.columns() {
                match ranges.iter().find(|(f, _)| *f == c) {
                    Some((_, r)) => prefix.push(r.clone()),
                    None => break,
                }
            }
            let diff = ranges.len().saturating_sub(prefix.len());
            (i.clone(), prefix, diff)
        })
        .collect();
    // Stable, as `lists:sort/2` with a `=<` comparison.
    out.sort_by(|(a, _, da), (b, _, db)| {
        da.cmp(db)
            .then(a.fields.len().cmp(&b.fields.len()))
            .then_with(|| {
                (a.ddoc.as_deref().map(str::as_bytes), a.name.as_bytes())
                    .cmp(&(b.ddoc.as_deref().map(str::as_bytes), b.name.as_bytes()))
            })
    });
    out
}

/// Plans a query over `all` (every index, `_all_docs` first). `for_find`:
/// no usable index is CouchDB's `no_usable_index` (for `_explain` it
/// plans no index).
pub(crate) fn plan(all: &[Index], req: &FindRequest, for_find: bool) -> Result<Plan, QueryError> {
    let s = &req.selector;
    let sort: Vec<String> = req.sort.iter().map(|(f, _)| f.clone()).collect();
    let candidates: Vec<&Index> = all
        .iter()
        .filter(|i| i.partial.is_none() || matches_use_index(i, &req.use_index))
        .collect();
    let usability: Vec<(&Index, Vec<&'static str>)> = candidates
        .iter()
        .map(|i| (*i, usability(i, s, &sort)))
        .collect();
    let usable: Vec<Index> = usability
        .iter()
        .filter(|(_, r)| r.is_empty())
        .map(|(i, _)| (*i).clone())
        .collect();
    if usable.is_empty() && for_find {
        return Err(QueryError::bad(
            "no_usable_index",
            "No index exists for this sort, try indexing by the sort fields.",
        ));
    }
    let chosen: Vec<Index> = usable
        .iter()
        .filter(|i| matches_use_index(i, &req.use_index))
        .cloned()
        .collect();
    let filtered = if !chosen.is_empty() {
        chosen
    } else if req.allow_fallback || (req.use_index.is_empty() && usable.len() > 1) {
        usable.clone()
    } else {
        let reason = match req.use_index.as_slice() {
            [] => "You must specify an index with the `use_index` parameter.".to_owned(),
            [d] => format!(
                "_design/{} specified by `use_index` could not be found or it is not suitable.",
                d.strip_prefix("_design/").unwrap_or(d)
            ),
            [d, n, ..] => format!(
                "_design/{}, {n} specified by `use_index` could not be found or it is not suitable.",
                d.strip_prefix("_design/").unwrap_or(d)
            ),
        };
        return Err(QueryError::bad("invalid_index", reason));
    };
    // The view cursor serves json indexes, and wins over `_all_docs`.
    let json: Vec<Index> = filtered
        .iter()
        .filter(|i| !i.is_all_docs())
        .cloned()
        .collect();
    let of_type = if json.is_empty() {
        filtered
            .iter()
            .filter(|i| i.is_all_docs())
            .cloned()
            .collect()
    } else {
        json
    };
    let mut ranges = field_ranges(s);
    if of_type.iter().any(Index::is_all_docs) {
        ranges.push((
            "_id".into(),
            Some(Range {
                lcmp: Cmp::Gt,
                low: End::Val(Value::Null),
                hcmp: Cmp::Lt,
                high: End::Max,
            }),
        ));
    }
    let sorted = rank(&of_type, &ranges);
    let (index, ranges) = match sorted.first() {
        Some((i, prefix, _)) => {
            let noop = match s {
                Selector::And(a) | Selector::Or(a) => a.is_empty(),
                Selector::In(a) | Selector::All(a) => a.is_empty(),
                _ => false,
            };
            let ranges = if noop || prefix.len() == 1 && prefix[0].is_none() {
                None
            } else {
                // An empty range only ever comes alone (`field_ranges`).
                Some(prefix.iter().flatten().cloned().collect())
            };
            (Some(i.clone()), ranges)
        }
        None => (None, None),
    };

    // `extract_candidate_indexes`.
    let contains = |set: &[Index], i: &Index| set.iter().any(|x| same_index(x, i));
    let partial: Vec<&Index> = all.iter().filter(|i| i.partial.is_some()).collect();
    let not_usable: Vec<&Index> = candidates
        .iter()
        .copied()
        .filter(|i| !contains(&usable, i))
        .collect();
    let excluded: Vec<&Index> = usable.iter().filter(|i| !contains(&filtered, i)).collect();
    let unfavored: Vec<&Index> = filtered.iter().filter(|i| !contains(&of_type, i)).collect();
    let unfavored_rank = sorted.len().max(1);
    let excluded_rank = unfavored_rank + usize::from(!unfavored.is_empty());
    let not_usable_rank = excluded_rank + usize::from(!excluded.is_empty());
    let partial_rank = not_usable_rank + usize::from(!not_usable.is_empty());
    let winner_width = index.as_ref().map_or(0, |i| i.fields.len());
    let mut out = Vec::new();
    for i in all {
        if index.as_ref().is_some_and(|w| same_index(w, i)) {
            continue;
        }
        let member = |set: &[&Index]| set.iter().any(|p| same_index(p, i));
        // `enhance_candidates`: usable is and-ed, reasons appended,
        // rankings added, tag by tag in CouchDB's order.
        let mut usable_flag = true;
        let mut reasons: Vec<&'static str> = Vec::new();
        let mut ranking = 0;
        if member(&partial) {
            usable_flag = false;
            reasons.push("is_partial");
            ranking += partial_rank;
        }
        if member(&not_usable) {
            usable_flag = false;
            ranking += not_usable_rank;
        }
        if member(&excluded) {
            reasons.push("excluded_by_user");
            ranking += excluded_rank;
        }
        if member(&unfavored) {
            reasons.push("unfavored_type");
            ranking += unfavored_rank;
        }
        if let Some((_, r)) = usability.iter().find(|(x, _)| same_index(x, i)) {
            reasons.extend(r.iter().copied());
        }
        if let Some(n) = sorted.iter().position(|(x, _, _)| same_index(x, i)) {
            let (_, _, distance) = &sorted[n];
            reasons.push(if *distance > 0 {
                "less_overlap"
            } else if i.fields.len() > winner_width {
                "too_many_fields"
            } else {
                "alphabetically_comes_after"
            });
            ranking += n;
        }
        let Some(reason) = reasons.first().copied() else {
            continue;
        };
        out.push(Candidate {
            index: i.clone(),
            usable: usable_flag,
            reason,
            ranking,
        });
    }
    // CouchDB folds a map of index records: descending record order.
    out.reverse();
    Ok(Plan {
        index,
        ranges,
        candidates: out,
    })
}

/// The start key of a json index's range (`mango_idx_view:start_key`).
pub(crate) fn start_key(ranges: &[Range]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in ranges {
        match (&r.lcmp, &r.low) {
            (Cmp::Gt, End::Min | End::Max) => return out,
            (_, End::Val(v)) => out.push(v.clone()),
            _ => return out,
        }
    }
    out
}

/// The end key of a json index's range (`mango_idx_view:end_key`);
/// `None` stands for CouchDB's `<MAX>` (above every value).
pub(crate) fn end_key(ranges: &[Range]) -> Vec<Option<Value>> {
    let mut out = Vec::new();
    for r in ranges {
        match (&r.hcmp, &r.high) {
            (Cmp::Lt, End::Min | End::Max) => {
                out.push(None);
                return out;
            }
            (_, End::Val(v)) => out.push(Some(v.clone())),
            _ => {
                out.push(None);
                return out;
            }
        }
    }
    out.push(None);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;
    use serde_json::json;

    fn ranges(v: Value) -> Vec<(String, Option<Range>)> {
        field_ranges(&Selector::parse(&v).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn ranges_narrow_like_couchdb() {
        let r = ranges(json!({"a": {"$gt": 1, "$lte": 5}, "b": 2}));
        assert_eq!(r.len(), 2);
        let a = r[0].1.clone().unwrap_or_else(|| panic!("empty"));
        assert_eq!((a.lcmp, a.hcmp), (Cmp::Gt, Cmp::Lte));
        assert_eq!(start_key(std::slice::from_ref(&a)), vec![json!(1)]);
        assert_eq!(end_key(&[a]), vec![Some(json!(5)), None]);
        let r = ranges(json!({"a": {"$gt": 5, "$lt": 3}}));
        assert_eq!(r, vec![("a".to_owned(), None)]);
        let r = ranges(json!({"a": {"$gte": 3, "$lte": 3}}));
        assert_eq!(r[0].1, Some(Range::eq(&json!(3))));
        let r = ranges(json!({"$or": [{"a": 1}, {"a": 2}]}));
        assert!(r.is_empty());
        let r = ranges(json!({"a": {"$exists": true}}));
        assert_eq!(
            start_key(&[r[0].1.clone().unwrap_or_else(Range::all)]),
            Vec::<Value>::new()
        );
    }
}
