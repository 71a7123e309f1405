//! Every index of the replica's design documents (JavaScript views and
//! Mango json indexes) brought up to date at once (each changed document
//! read once for all of them), and the indexes of views that no longer
//! exist dropped.

use super::design::{self, DesignDoc};
use super::error::QueryError;
use super::view::update_error;
use crate::js::Limits;
use crate::store::Replica;
use crate::views::{View, ViewError, Views, WarmReport};
use std::collections::HashSet;

/// What [`super::Query::warm`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct QueryWarm {
    /// The views brought up to date.
    pub report: WarmReport,
    /// Views that could not be: their design document's code does not
    /// compile, or a map function ran out of time or memory. Their indexes
    /// stay at their last committed chunk; other views are not affected.
    pub failed: Vec<ViewFailure>,
    /// Indexes dropped because their view is gone (its design document
    /// deleted or the view removed).
    pub dropped: Vec<String>,
}

/// A view the warm-up could not bring up to date.
#[derive(Debug)]
#[non_exhaustive]
pub struct ViewFailure {
    /// The index name (`_design/d/_view/v`).
    pub view: String,
    /// Why.
    pub error: QueryError,
}

/// The design documents' views, and their compile failures.
fn collect(replica: &Replica, limits: Limits) -> Result<(Vec<View>, Vec<ViewFailure>), QueryError> {
    let mut views = Vec::new();
    let mut failed = Vec::new();
    for dd in design::design_docs(replica, limits)? {
        if let Err(error) = dd.compile_check() {
            for v in &dd.views {
                failed.push(ViewFailure {
                    view: v.index_name.clone(),
                    error: clone_error(&error),
                });
            }
            continue;
        }
        views.extend(index_views_of(&dd));
    }
    // Mango's json indexes (design documents with "language": "query").
    views.extend(super::mango::index_views(replica)?);
    Ok((views, failed))
}

fn index_views_of(dd: &DesignDoc) -> Vec<View> {
    dd.views.iter().map(|v| dd.index_view(v)).collect()
}

fn clone_error(e: &QueryError) -> QueryError {
    QueryError::Script {
        ddoc: match e {
            QueryError::Script { ddoc, .. } => ddoc.clone(),
            _ => String::new(),
        },
        error: e.error().to_owned(),
        reason: e.reason(),
        status: e.status(),
    }
}

pub(crate) fn index_views(replica: &Replica, limits: Limits) -> Result<Vec<View>, QueryError> {
    Ok(collect(replica, limits)?.0)
}

pub(crate) fn warm(replica: &Replica, limits: Limits) -> Result<QueryWarm, QueryError> {
    let (mut views, mut failed) = collect(replica, limits)?;
    let live: HashSet<String> = views
        .iter()
        .map(|v| v.name().to_owned())
        .chain(failed.iter().map(|f| f.view.clone()))
        .collect();
    let mut out = QueryWarm::default();
    let all = Views::open(replica, Vec::new())?;
    for name in all.indexed()? {
        // Only design documents' indexes: the built-in and registered
        // views belong to their own `Views`.
        if name.starts_with("_design/") && !live.contains(&name) {
            all.drop_index(&name)?;
            tracing::info!(view = %name, "view gone; index dropped");
            out.dropped.push(name);
        }
    }
    loop {
        let engine = Views::open(replica, views.clone())?;
        match engine.warm() {
            Ok(report) => {
                out.report = report;
                break;
            }
            Err(ViewError::MapFailed {
                view,
                id,
                error,
                reason,
            }) => {
                let ddoc = view.split("/_view/").next().unwrap_or_default().to_owned();
                tracing::warn!(view = %view, id = %id, "view not warmed: {error}: {reason}");
                views.retain(|v| v.name() != view);
                let failed_view = ViewError::MapFailed {
                    view: view.clone(),
                    id,
                    error,
                    reason,
                };
                failed.push(ViewFailure {
                    view,
                    error: update_error(failed_view, &ddoc),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.failed = failed;
    Ok(out)
}
