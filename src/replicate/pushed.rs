//! Revisions a client pushes into the replica (`_bulk_docs` with
//! `new_edits: false`, as PouchDB's replicator writes to its target): the
//! same split as a fetched revision (`doc.rs`), with attachments sent
//! inline (`data`, base64) moved out of the body: their bytes go to the
//! batch, their entries become stubs with the replica's digest (the MD5 of
//! the bytes). A stub must name bytes the replica holds, or the revision
//! is refused (CouchDB's 412 `missing_stub`).

use super::doc::DocParts;
use crate::store::{IncomingRev, Replica, StoreError};
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// Why a pushed revision cannot be taken: CouchDB's `error` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) error: &'static str,
    pub(crate) reason: String,
}

fn refused(error: &'static str, reason: impl Into<String>) -> Refused {
    Refused {
        error,
        reason: reason.into(),
    }
}

/// A pushed revision, ready for a [`WriteBatch`](crate::store::WriteBatch).
pub(crate) struct Pushed {
    pub(crate) rev: IncomingRev,
    /// The bytes of its inline attachments, by digest.
    pub(crate) attachments: Vec<(String, Bytes)>,
}

/// One attachment entry as the replica stores it, and its bytes by digest
/// when they came inline.
struct Stub {
    entry: Value,
    data: Option<(String, Bytes)>,
}

/// `doc` (with `_id`, `_rev` and `_revisions`) as a revision to merge.
///
/// # Errors
/// `Ok(Err(refused))` for a revision the client got wrong (no `_rev` or
/// `_revisions`, bad attachment data, a stub of bytes the replica lacks);
/// `Err` only when the replica cannot be read.
pub(crate) fn pushed_revision(
    replica: &Replica,
    doc: &Value,
) -> Result<Result<Pushed, Refused>, StoreError> {
    let Some(id) = doc.get("_id").and_then(Value::as_str) else {
        return Ok(Err(refused(
            "illegal_docid",
            "Document id must be a string",
        )));
    };
    let raw = match RawValue::from_string(doc.to_string()) {
        Ok(raw) => raw,
        Err(e) => return Ok(Err(refused("bad_request", e.to_string()))),
    };
    let parts = match DocParts::split(&raw, id) {
        Ok(parts) => parts,
        Err(reason) => return Ok(Err(refused("bad_request", reason))),
    };
    let mut bytes = Vec::new();
    let stubs = match &parts.attachments {
        None => None,
        Some(atts) => {
            let mut stubs = Map::new();
            for (name, att) in atts {
                match stub_of(replica, name, att, parts.path.start)? {
                    Ok(stub) => {
                        stubs.insert(name.clone(), stub.entry);
                        bytes.extend(stub.data);
                    }
                    Err(refusal) => return Ok(Err(refusal)),
                }
            }
            Some(stubs)
        }
    };
    let body = match parts.body(stubs.as_ref()) {
        Ok(body) => body,
        Err(e) => return Ok(Err(refused("bad_request", e.to_string()))),
    };
    Ok(Ok(Pushed {
        rev: IncomingRev {
            id: parts.id,
            path: parts.path,
            deleted: parts.deleted,
            body,
        },
        attachments: bytes,
    }))
}

/// `att`, the entry `name` of a pushed revision at `generation`, as the
/// replica stores it.
fn stub_of(
    replica: &Replica,
    name: &str,
    att: &Value,
    generation: u64,
) -> Result<Result<Stub, Refused>, StoreError> {
    let content_type = att
        .get("content_type")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream");
    let revpos = att
        .get("revpos")
        .and_then(Value::as_u64)
        .unwrap_or(generation);
    if let Some(data) = att.get("data").and_then(Value::as_str) {
        let Ok(data) = base64::engine::general_purpose::STANDARD.decode(data) else {
            return Ok(Err(refused(
                "bad_request",
                format!("attachment {name}: data is not base64"),
            )));
        };
        let digest = format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(&data))
        );
        let stub = json!({"content_type": content_type, "digest": digest,
            "length": data.len(), "revpos": revpos, "stub": true});
        return Ok(Ok(Stub {
            entry: stub,
            data: Some((digest, Bytes::from(data))),
        }));
    }
    let digest = att.get("digest").and_then(Value::as_str).unwrap_or("");
    if att.get("stub") == Some(&Value::Bool(true)) && replica.has_attachment(digest)? {
        let mut stub = att.clone();
        if let Some(obj) = stub.as_object_mut() {
            obj.insert("revpos".into(), json!(revpos));
        }
        return Ok(Ok(Stub {
            entry: stub,
            data: None,
        }));
    }
    Ok(Err(refused(
        "missing_stub",
        format!("attachment {name} is a stub of bytes this replica does not hold"),
    )))
}
