//! Documents: `GET`/`PUT`/`DELETE /{db}/{id}` (design documents with their
//! slash), and `_local` documents, which never replicate.
//!
//! A write is the replica's local write: a new revision, queued in the
//! outbox for the push, durable when answered. A client's `_local`
//! documents (a replicator's checkpoints) are kept apart from settee's
//! own under a prefix, so no client can overwrite the replica's identity.

use super::error::HttpError;
use super::{ok, Answer, Request, Served};
use crate::query::GetOptions;
use crate::revtree::Rev;
use crate::store::WriteBatch;
use crate::StoreError;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

type Answered = Result<Answer, HttpError>;

/// Where a client's `_local/{id}` lives among the replica's local documents.
const CLIENT_LOCAL: &str = "client:";

pub(super) async fn route(served: &Served, req: &Request, rest: &[&str]) -> Answered {
    match rest {
        ["_local", id @ ..] if !id.is_empty() => local(served, req, &id.join("/")).await,
        ["_design", ddoc] => document(served, req, &format!("_design/{ddoc}")).await,
        ["_design", ddoc, name @ ..] => {
            let id = format!("_design/{ddoc}");
            super::attachment::route(served, req, &id, &name.join("/")).await
        }
        [id] if !id.starts_with('_') => document(served, req, id).await,
        [id, name @ ..] if !id.starts_with('_') => {
            super::attachment::route(served, req, id, &name.join("/")).await
        }
        [id] => Err(HttpError::bad_request(format!(
            "Only reserved document ids may start with underscore: {id}"
        ))),
        _ => Err(HttpError::not_found("missing")),
    }
}

async fn document(served: &Served, req: &Request, id: &str) -> Answered {
    match req.method {
        Method::GET | Method::HEAD => {
            let options = GetOptions::from_query_string(&req.query)?;
            let doc = served.query.get(id, &options)?;
            if let (Value::Array(leaves), true) = (&doc, accepts_multipart(req)) {
                return Ok(multipart_leaves(leaves));
            }
            // One revision (not `open_revs`' list): its ETag is the rev.
            match doc.get("_rev").and_then(Value::as_str) {
                Some(rev) => {
                    let etag = format!("\"{rev}\"");
                    if req.header(axum::http::header::IF_NONE_MATCH) == Some(etag.as_str()) {
                        return Ok(Answer::NotModified { etag });
                    }
                    Ok(Answer::Tagged { body: doc, etag })
                }
                None => ok(doc),
            }
        }
        Method::PUT => {
            let mut doc = req.json()?;
            let Some(obj) = doc.as_object_mut() else {
                return Err(HttpError::bad_request("Document must be a JSON object"));
            };
            if let Some(rev) = req.param("rev") {
                obj.entry("_rev").or_insert(Value::String(rev));
            }
            if obj.get("_id").is_some_and(|given| given != id) {
                return Err(HttpError::bad_request("Document id must match the URL"));
            }
            let written = served.replica.put(id, doc).await.map_err(write_error)?;
            answer_write(StatusCode::CREATED, &written.id, &written.rev)
        }
        Method::DELETE => {
            let rev = req
                .param("rev")
                .map(|r| r.parse::<Rev>())
                .transpose()
                .map_err(|e| HttpError::bad_request(format!("Invalid rev format: {e}")))?;
            if rev.is_none() {
                return Err(HttpError::conflict());
            }
            let written = served.replica.delete(id, rev).await.map_err(write_error)?;
            answer_write(StatusCode::OK, &written.id, &written.rev)
        }
        _ => Err(HttpError::method_not_allowed("DELETE,GET,HEAD,PUT")),
    }
}

/// True when the client takes `multipart/mixed` (CouchDB's replicator
/// asks for `open_revs` that way).
fn accepts_multipart(req: &Request) -> bool {
    req.header(axum::http::header::ACCEPT)
        .is_some_and(|a| a.contains("multipart/mixed"))
}

/// `open_revs`' answer as `multipart/mixed`: one `application/json` part
/// per revision asked, the document (attachments inline, as asked) or
/// `{"missing": rev}`, as CouchDB writes a leaf without attachments that
/// follow.
fn multipart_leaves(leaves: &[Value]) -> Answer {
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let mut body = Vec::new();
    for leaf in leaves {
        let part = leaf.get("ok").unwrap_or(leaf);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
        );
        // Writing a `Value` to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--").as_bytes());
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(value) =
        axum::http::HeaderValue::from_str(&format!("multipart/mixed; boundary=\"{boundary}\""))
    {
        headers.insert(axum::http::header::CONTENT_TYPE, value);
    }
    Answer::Stream {
        status: StatusCode::OK,
        headers,
        body: axum::body::Body::from(body),
    }
}

/// `_bulk_docs`. With `new_edits: true` (the default) each document is a
/// local write (`_deleted: true` a delete), answered in order with its
/// new revision or CouchDB's per-document error. With `new_edits: false`
/// (a replicator pushing its own revisions) see [`replicated`].
pub(super) async fn bulk_docs(served: &Served, req: &Request) -> Answered {
    let body = req.json()?;
    let Some(docs) = body.get("docs").and_then(Value::as_array) else {
        return Err(HttpError::bad_request(
            "POST body must include `docs` parameter.",
        ));
    };
    if body.get("new_edits") == Some(&Value::Bool(false)) {
        return replicated(served, docs).await;
    }
    let mut results = Vec::with_capacity(docs.len());
    for doc in docs {
        results.push(bulk_one(served, doc.clone()).await?);
    }
    Ok(Answer::Json(StatusCode::CREATED, Value::Array(results)))
}

/// `_bulk_docs` with `new_edits: false`: each revision merged into its
/// document's tree as a pulled one is (conflicts kept, CouchDB's winner),
/// all in one commit, and every revision new to the replica queued in
/// the outbox in that same commit, so it goes upstream with the push. The
/// answer lists only the revisions refused (CouchDB answers `[]` when all
/// were taken).
async fn replicated(served: &Served, docs: &[Value]) -> Answered {
    let replica = &served.replica;
    let mut batch = WriteBatch::default();
    let mut refused = Vec::new();
    for doc in docs {
        let (rev, bytes) = match crate::replicate::pushed_revision(replica, doc)? {
            Ok(taken) => (taken.rev, taken.attachments),
            Err(r) => {
                refused.push(json!({"id": doc.get("_id"), "rev": doc.get("_rev"),
                    "error": r.error, "reason": r.reason}));
                continue;
            }
        };
        if let Some(leaf) = rev.path.leaf() {
            if !replica
                .missing_revs(&rev.id, std::slice::from_ref(&leaf))?
                .is_empty()
            {
                batch.outbox.push((rev.id.clone(), leaf));
            }
        }
        for (digest, data) in bytes {
            let staged = batch.attachments.iter().any(|(d, _)| *d == digest);
            if !staged && !replica.has_attachment(&digest)? {
                batch.attachments.push((digest, data));
            }
        }
        batch.revs.push(rev);
    }
    replica.commit(batch).await?;
    Ok(Answer::Json(StatusCode::CREATED, Value::Array(refused)))
}

/// One document of `_bulk_docs`: its answer row; only a store failure is
/// an error of the whole request.
async fn bulk_one(served: &Served, doc: Value) -> Result<Value, HttpError> {
    let id = match doc.get("_id") {
        Some(Value::String(id)) => id.clone(),
        None => uuid::Uuid::new_v4().simple().to_string(),
        Some(_) => {
            return Ok(json!({"id": null, "error": "illegal_docid",
                "reason": "Document id must be a string"}))
        }
    };
    let deleted = doc.get("_deleted") == Some(&Value::Bool(true));
    let written = if deleted {
        let rev = doc
            .get("_rev")
            .and_then(Value::as_str)
            .and_then(|r| r.parse::<Rev>().ok());
        served.replica.delete(&id, rev).await
    } else {
        served.replica.put(&id, doc).await
    };
    Ok(match written {
        Ok(w) => json!({"ok": true, "id": w.id, "rev": w.rev.to_string()}),
        Err(e) => {
            let e = write_error(e);
            if e.status == StatusCode::INTERNAL_SERVER_ERROR {
                return Err(e);
            }
            json!({"id": id, "error": e.error, "reason": e.reason})
        }
    })
}

fn answer_write(status: StatusCode, id: &str, rev: &Rev) -> Answered {
    Ok(Answer::Json(
        status,
        json!({"ok": true, "id": id, "rev": rev.to_string()}),
    ))
}

/// A local write's error as CouchDB says it: a stale or missing `_rev` is
/// 409, a body that is no document 400.
pub(super) fn write_error(e: StoreError) -> HttpError {
    match e {
        StoreError::Conflict { .. } => HttpError::conflict(),
        StoreError::InvalidDocument { reason, .. } => HttpError::bad_request(reason),
        e @ StoreError::TooDeep { .. } => HttpError::bad_request(e.to_string()),
        other => HttpError::internal(other),
    }
}

/// `_local/{id}`: a JSON object kept as given, with a `_rev` of `0-N`
/// counting its writes, as CouchDB answers.
async fn local(served: &Served, req: &Request, id: &str) -> Answered {
    let key = format!("{CLIENT_LOCAL}{id}");
    let full_id = format!("_local/{id}");
    match req.method {
        Method::GET | Method::HEAD => match served.replica.get_local(&key)? {
            Some(doc) => ok(doc),
            None => Err(HttpError::not_found("missing")),
        },
        Method::PUT => {
            let mut doc = req.json()?;
            let Some(obj) = doc.as_object_mut() else {
                return Err(HttpError::bad_request("Document must be a JSON object"));
            };
            let _one_writer = served.local_writes.lock().await;
            let stored = served.replica.get_local(&key)?;
            let current = stored
                .as_ref()
                .and_then(|d| d.get("_rev"))
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("0-"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let given = obj.get("_rev").and_then(Value::as_str).map(str::to_owned);
            if stored.is_some() && given.as_deref() != Some(&format!("0-{current}")) {
                return Err(HttpError::conflict());
            }
            let rev = format!("0-{}", current + 1);
            obj.insert("_id".into(), Value::String(full_id.clone()));
            obj.insert("_rev".into(), Value::String(rev.clone()));
            served.replica.put_local(&key, &doc).await?;
            Ok(Answer::Json(
                StatusCode::CREATED,
                json!({"ok": true, "id": full_id, "rev": rev}),
            ))
        }
        _ => Err(HttpError::method_not_allowed("GET,HEAD,PUT")),
    }
}
