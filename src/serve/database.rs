//! `/{db}` and what hangs off it: database info, the changes feed,
//! `_all_docs`, `_find`, views, and the replication endpoints a puller
//! (PouchDB, CouchDB's replicator, another settee) reads with:
//! `_revs_diff` and `_bulk_get`. Documents go to `document.rs`.

use super::error::HttpError;
use super::{document, ok, only_get, Answer, Request, Served};
use crate::query::{AllDocsQuery, FindRequest, GetOptions, OpenRevs};
use crate::revtree::Rev;
use axum::http::Method;
use serde_json::{json, Map, Value};

type Answered = Result<Answer, HttpError>;

pub(super) async fn route(served: &Served, req: &Request, rest: &[&str]) -> Answered {
    match rest {
        [] => match req.method {
            Method::GET | Method::HEAD => ok(info(served)?),
            _ => Err(HttpError::method_not_allowed("GET,HEAD")),
        },
        ["_changes"] => match req.method {
            Method::GET | Method::POST | Method::HEAD => super::changes::changes(served, req).await,
            _ => Err(HttpError::method_not_allowed("GET,HEAD,POST")),
        },
        ["_all_docs"] => get_or_post(req, || all_docs(served, req)),
        ["_find"] => post(req, || find(served, req)),
        ["_explain"] => post(req, || {
            ok(served
                .query
                .explain(&FindRequest::from_json(req.json()?)?)?)
        }),
        ["_index"] => match req.method {
            Method::GET | Method::HEAD => ok(served.query.indexes()?),
            Method::POST => ok(served.query.create_index(&req.json()?)?),
            _ => Err(HttpError::method_not_allowed("GET,HEAD,POST")),
        },
        ["_index", ddoc, "json", name] | ["_index", "_design", ddoc, "json", name] => {
            match req.method {
                Method::DELETE => ok(served.query.delete_index(ddoc, name)?),
                _ => Err(HttpError::method_not_allowed("DELETE")),
            }
        }
        ["_revs_diff"] => post(req, || revs_diff(served, req)),
        ["_bulk_get"] => post(req, || bulk_get(served, req)),
        ["_bulk_docs"] => match req.method {
            Method::POST => document::bulk_docs(served, req).await,
            _ => Err(HttpError::method_not_allowed("POST")),
        },
        ["_revs_limit"] => only_get(req, || json!(1000)),
        ["_security"] => only_get(req, || json!({})),
        ["_ensure_full_commit"] => {
            post(req, || ok(json!({"ok": true, "instance_start_time": "0"})))
        }
        ["_design", ddoc, "_view", view] => {
            get_or_post(req, || view_query(served, req, ddoc, view))
        }
        _ => document::route(served, req, rest).await,
    }
}

fn get_or_post(req: &Request, answer: impl FnOnce() -> Answered) -> Answered {
    match req.method {
        Method::GET | Method::POST | Method::HEAD => answer(),
        _ => Err(HttpError::method_not_allowed("GET,HEAD,POST")),
    }
}

fn post(req: &Request, answer: impl FnOnce() -> Answered) -> Answered {
    match req.method {
        Method::POST => answer(),
        _ => Err(HttpError::method_not_allowed("POST")),
    }
}

/// `GET /{db}`: its `update_seq` is the replica's local sequence.
fn info(served: &Served) -> Result<Value, HttpError> {
    let r = &served.replica;
    Ok(json!({
        "db_name": served.name,
        "doc_count": r.doc_count()?,
        "doc_del_count": r.deleted_count()?,
        "update_seq": r.update_seq()?,
        "purge_seq": 0,
        "compact_running": false,
        "instance_start_time": "0",
        "sizes": {"file": r.size_on_disk()?, "external": 0, "active": 0},
        "props": {},
    }))
}

fn all_docs(served: &Served, req: &Request) -> Answered {
    let mut query = AllDocsQuery::from_query_string(&req.query)?;
    if req.method == Method::POST {
        let body = req.json()?;
        if let Some(keys) = body.get("keys").and_then(Value::as_array) {
            query = query.keys(keys.clone());
        }
    }
    ok(served.query.all_docs(&query)?.to_json())
}

fn find(served: &Served, req: &Request) -> Answered {
    let found = served.query.find(&FindRequest::from_json(req.json()?)?)?;
    ok(found.to_json())
}

fn view_query(served: &Served, req: &Request, ddoc: &str, view: &str) -> Answered {
    let mut options = crate::views::QueryOptions::from_query_string(&req.query)
        .map_err(crate::query::QueryError::from)?;
    if req.method == Method::POST {
        if let Some(keys) = req.json()?.get("keys").and_then(Value::as_array) {
            options.keys = Some(keys.clone());
        }
    }
    ok(served.query.view(ddoc, view, &options)?.to_json())
}

/// `_revs_diff`: the revisions the replica lacks, per document.
fn revs_diff(served: &Served, req: &Request) -> Answered {
    let Value::Object(asked) = req.json()? else {
        return Err(HttpError::bad_request("Request body must be a JSON object"));
    };
    let mut out = Map::new();
    for (id, revs) in asked {
        let Value::Array(revs) = revs else {
            return Err(HttpError::bad_request(format!(
                "revisions of {id} must be a list"
            )));
        };
        let revs = revs
            .iter()
            .map(|r| {
                r.as_str()
                    .and_then(|s| s.parse::<Rev>().ok())
                    .ok_or_else(|| HttpError::bad_request(format!("Invalid rev format: {r}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let missing = served.replica.missing_revs(&id, &revs)?;
        if !missing.is_empty() {
            let missing: Vec<String> = missing.iter().map(Rev::to_string).collect();
            out.insert(id, json!({ "missing": missing }));
        }
    }
    ok(Value::Object(out))
}

/// `_bulk_get`: each `{id, rev}` (or every leaf without `rev`) as
/// `GET /{db}/{id}?open_revs=[rev]` answers it, with the query's `revs`,
/// `latest` and `attachments`.
fn bulk_get(served: &Served, req: &Request) -> Answered {
    let body = req.json()?;
    let Some(docs) = body.get("docs").and_then(Value::as_array) else {
        return Err(HttpError::bad_request("Missing JSON list of 'docs'."));
    };
    let base = GetOptions::from_query_string(&req.query)?;
    let mut results = Vec::with_capacity(docs.len());
    for asked in docs {
        let Some(id) = asked.get("id").and_then(Value::as_str) else {
            results.push(
                json!({"id": null, "docs": [{"error": {"id": null, "rev": null,
                "error": "illegal_docid", "reason": "Document id must be a string."}}]}),
            );
            continue;
        };
        let open = match asked.get("rev").and_then(Value::as_str) {
            None => Ok(OpenRevs::All),
            Some(r) => r
                .parse::<Rev>()
                .map(|r| OpenRevs::Revs(vec![r]))
                .map_err(|e| e.to_string()),
        };
        let docs = match open {
            Ok(open) => match served.query.get(id, &base.clone().open_revs(open)) {
                Ok(Value::Array(found)) => found
                    .into_iter()
                    .map(|f| match f.get("missing") {
                        Some(rev) => json!({"error": {"id": id, "rev": rev,
                            "error": "not_found", "reason": "missing"}}),
                        None => f,
                    })
                    .collect(),
                Ok(other) => vec![json!({ "ok": other })],
                Err(e) => vec![json!({"error": {"id": id, "rev": asked.get("rev"),
                    "error": e.error(), "reason": e.reason()}})],
            },
            Err(reason) => vec![json!({"error": {"id": id, "rev": asked.get("rev"),
                "error": "bad_request", "reason": reason}})],
        };
        results.push(json!({"id": id, "docs": docs}));
    }
    ok(json!({ "results": results }))
}
