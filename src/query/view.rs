//! A design-document view query: `GET /db/_design/{ddoc}/_view/{view}`
//! with every CouchDB option, answered from the view's index (brought up
//! to date first unless `update=false`), reduced when the view has a
//! reduce function and the query does not say `reduce=false`.

use super::design::{self, DesignDoc, DesignView};
use super::error::QueryError;
use super::reduce::{self, Grouping, ReducedRow};
use crate::js::Limits;
use crate::store::Replica;
use crate::views::{QueryOptions, ViewError, ViewResult, Views};
use serde_json::{json, Value};

/// The answer to a view query: rows of the map, or reduced rows.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ViewResponse {
    /// A map query: CouchDB's `{total_rows, offset, rows}`.
    Map(ViewResult),
    /// A reduce query: CouchDB's `{rows: [{key, value}]}`.
    Reduce {
        /// The groups, in the query's order.
        rows: Vec<ReducedRow>,
        /// With `update_seq`: the local sequence the index covers.
        update_seq: Option<u64>,
    },
}

impl ViewResponse {
    /// The response body CouchDB sends.
    pub fn to_json(&self) -> Value {
        match self {
            ViewResponse::Map(r) => r.to_json(),
            ViewResponse::Reduce { rows, update_seq } => {
                let mut body =
                    json!({"rows": rows.iter().map(ReducedRow::to_json).collect::<Vec<_>>()});
                if let (Some(seq), Some(m)) = (update_seq, body.as_object_mut()) {
                    m.insert("update_seq".into(), json!(seq));
                }
                body
            }
        }
    }

    /// The map rows (empty for a reduce answer).
    pub fn rows(&self) -> &[crate::views::ViewRow] {
        match self {
            ViewResponse::Map(r) => &r.rows,
            ViewResponse::Reduce { .. } => &[],
        }
    }
}

/// `_design/x` from `x` or `_design/x`.
pub(crate) fn ddoc_id(ddoc: &str) -> String {
    if ddoc.starts_with("_design/") {
        ddoc.to_owned()
    } else {
        format!("_design/{ddoc}")
    }
}

fn find_view<'d>(dd: &'d DesignDoc, view: &str) -> Result<&'d DesignView, QueryError> {
    dd.views
        .iter()
        .find(|v| v.name == view)
        .ok_or_else(|| QueryError::not_found("missing_named_view"))
}

/// A view's update failed: a map function that cannot run is the design
/// document's fault (500, as CouchDB's os_process_error).
pub(crate) fn update_error(e: ViewError, ddoc: &str) -> QueryError {
    match e {
        ViewError::MapFailed {
            view,
            id,
            error,
            reason,
        } => QueryError::Script {
            ddoc: ddoc.to_owned(),
            error,
            reason: format!("{reason} (view {view}, document {id:?})"),
            status: 500,
        },
        other => other.into(),
    }
}

/// The map function of view `view` of design document `ddoc`, compiled,
/// for a changes feed's `filter=_view` (a document passes when the map
/// emits for it); CouchDB's 404s for a missing design doc or view.
#[cfg(feature = "serve")]
pub(crate) fn map_of(
    replica: &Replica,
    limits: Limits,
    ddoc: &str,
    view: &str,
) -> Result<crate::views::View, QueryError> {
    let dd = design::design_doc(replica, &ddoc_id(ddoc), limits)?;
    let v = find_view(&dd, view)?;
    dd.compile_check()?;
    Ok(dd.index_view(v))
}

/// Filter function `name` of design document `ddoc` as a map function
/// that emits for what it passes, for a changes feed's
/// `filter=ddoc/name`; CouchDB's 404s for a missing design doc or filter.
#[cfg(feature = "serve")]
pub(crate) fn filter_of(
    replica: &Replica,
    limits: Limits,
    ddoc: &str,
    name: &str,
    req: &Value,
) -> Result<crate::views::View, QueryError> {
    let doc = design::live_document(replica, &ddoc_id(ddoc))?;
    design::filter_view(&doc, name, req, limits)
}

/// Answers a query on view `view` of design document `ddoc`.
pub(crate) fn query(
    replica: &Replica,
    limits: Limits,
    ddoc: &str,
    view: &str,
    q: &QueryOptions,
) -> Result<ViewResponse, QueryError> {
    let id = ddoc_id(ddoc);
    let dd = design::design_doc(replica, &id, limits)?;
    let v = find_view(&dd, view)?;
    let reducing = match (q.reduce, &v.reduce) {
        (Some(true), None) => {
            return Err(QueryError::bad(
                "query_parse_error",
                "Reduce is invalid for map-only views.",
            ))
        }
        (Some(false), _) | (None, None) => false,
        (_, Some(_)) => true,
    };
    let grouping = match (q.group, q.group_level) {
        (_, Some(level)) => Grouping::Level(level),
        (true, None) => Grouping::Exact,
        (false, None) => Grouping::All,
    };
    if !reducing && (q.group || q.group_level.is_some()) {
        return Err(QueryError::bad(
            "query_parse_error",
            "Invalid use of grouping on a map view.",
        ));
    }
    if reducing && q.include_docs {
        return Err(QueryError::bad(
            "query_parse_error",
            "`include_docs` is invalid for reduce",
        ));
    }
    if reducing && q.keys.is_some() && grouping == Grouping::All {
        return Err(QueryError::bad(
            "query_parse_error",
            "Multi-key fetches for reduce views must use `group=true`",
        ));
    }
    // Code that does not compile is the query's error, not each document's.
    dd.compile_check()?;
    let views = Views::open(replica, [dd.index_view(v)])?;
    let map_q = QueryOptions {
        reduce: None,
        group: false,
        group_level: None,
        ..q.clone()
    };
    if !reducing {
        return views
            .query(&v.index_name, &map_q)
            .map(ViewResponse::Map)
            .map_err(|e| update_error(e, &dd.id));
    }
    let Some(reduce_fn) = &v.reduce else {
        return Err(QueryError::bad(
            "query_parse_error",
            "Reduce is invalid for map-only views.",
        ));
    };
    // Every row of the range feeds the reduce; skip and limit count groups.
    let all = QueryOptions {
        skip: 0,
        limit: None,
        ..map_q
    };
    let rows = views
        .rows(&v.index_name, &all)
        .map_err(|e| update_error(e, &dd.id))?
        .map(|r| r.map_err(QueryError::from));
    let rows = reduce::reduce_rows(rows, grouping, reduce_fn, &dd, q.skip, q.limit)?;
    let update_seq = if q.update_seq {
        Some(views.state(&v.index_name)?.map_or(0, |s| s.seq))
    } else {
        None
    };
    Ok(ViewResponse::Reduce { rows, update_seq })
}
