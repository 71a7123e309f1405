//! One replication batch, from a page of `_changes` to a [`WriteBatch`]:
//! diff the page against the replica, fetch what is missing, fetch the
//! attachment bytes the replica lacks, and turn each revision into an
//! [`IncomingRev`]. Nothing here writes to the store.

use super::{DocFailure, PullContext};
use crate::remote::{ChangesPage, FetchedRev, RemoteError};
use crate::revtree::{Rev, RevPath};
use crate::store::{IncomingRev, StoreError, WriteBatch};
use crate::Error;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// A fetched batch, ready to commit.
pub(crate) struct FetchedBatch {
    pub(crate) write: WriteBatch,
    pub(crate) changes: usize,
    pub(crate) docs_read: u64,
    pub(crate) failures: Vec<DocFailure>,
    pub(crate) attachments_fetched: u64,
    pub(crate) last_seq: crate::remote::Seq,
}

pub(crate) async fn fetch(ctx: &PullContext, page: ChangesPage) -> Result<FetchedBatch, Error> {
    let mut failures = Vec::new();
    let replica = ctx.replica.clone();
    let rows = page.results;
    let changes = rows.len();
    // Local _revs_diff: which listed leaves the replica lacks.
    let (wanted, bad_revs) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let mut wanted = Vec::new();
        let mut bad = Vec::new();
        for row in rows {
            let mut revs = Vec::with_capacity(row.changes.len());
            for c in &row.changes {
                match c.rev.parse::<Rev>() {
                    Ok(r) => revs.push(r),
                    Err(e) => bad.push(DocFailure::new(
                        &row.id,
                        Some(c.rev.clone()),
                        "bad_request",
                        &e.to_string(),
                    )),
                }
            }
            let missing = replica.missing_revs(&row.id, &revs)?;
            if !missing.is_empty() {
                wanted.push((
                    row.id,
                    missing.iter().map(Rev::to_string).collect::<Vec<_>>(),
                ));
            }
        }
        Ok((wanted, bad))
    })
    .await
    .map_err(|e| StoreError::Cancelled(e.to_string()))??;
    failures.extend(bad_revs);

    let fetched = ctx.remote.fetch_revs(&wanted).await?;
    let mut write = WriteBatch::default();
    let mut docs_read = 0;
    let mut attachments_fetched = 0;
    // Bytes fetched in this batch, so two docs sharing a digest cost one GET.
    let mut have: HashMap<String, ()> = HashMap::new();
    for item in fetched {
        match item {
            FetchedRev::Doc(doc) => {
                docs_read += 1;
                match incoming_rev(doc) {
                    Ok((mut inc, atts)) => {
                        match resolve_attachments(
                            ctx,
                            &mut inc,
                            atts,
                            &mut write.attachments,
                            &mut have,
                        )
                        .await
                        {
                            Ok(n) => {
                                attachments_fetched += n;
                                write.revs.push(inc);
                            }
                            Err(AttachmentProblem::Fatal(e)) => return Err(e),
                            Err(AttachmentProblem::Doc(reason)) => {
                                let rev = inc.path.leaf().map(|r| r.to_string());
                                failures.push(DocFailure::new(
                                    &inc.id,
                                    rev,
                                    "attachment_error",
                                    &reason,
                                ));
                            }
                        }
                    }
                    Err((id, reason)) => {
                        failures.push(DocFailure::new(&id, None, "bad_document", &reason))
                    }
                }
            }
            FetchedRev::Error {
                id,
                rev,
                error,
                reason,
            } => {
                tracing::warn!(%id, ?rev, %error, %reason, "the remote could not give a revision");
                failures.push(DocFailure::new(&id, rev, &error, &reason));
            }
        }
    }
    Ok(FetchedBatch {
        changes,
        write,
        docs_read,
        failures,
        attachments_fetched,
        last_seq: page.last_seq,
    })
}

/// An attachment a revision references: `(name, stub or inline entry)`.
type AttachmentRef = (String, Map<String, Value>);

/// Splits a fetched document into its revision path, flags and body.
fn incoming_rev(
    mut doc: Map<String, Value>,
) -> Result<(IncomingRev, Vec<AttachmentRef>), (String, String)> {
    let id = match doc.remove("_id") {
        Some(Value::String(id)) => id,
        _ => return Err((String::new(), "a fetched document has no _id".into())),
    };
    let fail = |reason: String| Err((id.clone(), reason));
    let rev: Rev = match doc
        .remove("_rev")
        .as_ref()
        .and_then(Value::as_str)
        .map(str::parse)
    {
        Some(Ok(rev)) => rev,
        Some(Err(e)) => return fail(e.to_string()),
        None => return fail("the fetched document has no _rev".into()),
    };
    let path = match doc.remove("_revisions") {
        Some(v) => match serde_json::from_value::<RevPath>(v) {
            Ok(p) if p.leaf().as_ref() == Some(&rev) => p,
            Ok(_) => return fail("_revisions does not end in _rev".into()),
            Err(e) => return fail(format!("invalid _revisions: {e}")),
        },
        None => RevPath::leaf_only(&rev),
    };
    let deleted = matches!(doc.remove("_deleted"), Some(Value::Bool(true)));
    // Replication metadata a server may add; never part of the body.
    for k in [
        "_conflicts",
        "_deleted_conflicts",
        "_revs_info",
        "_local_seq",
    ] {
        doc.remove(k);
    }
    let attachments = match doc.get("_attachments") {
        Some(Value::Object(atts)) => atts
            .iter()
            .filter_map(|(name, v)| Some((name.clone(), v.as_object()?.clone())))
            .collect(),
        _ => Vec::new(),
    };
    Ok((
        IncomingRev {
            id,
            path,
            deleted,
            body: doc,
        },
        attachments,
    ))
}

enum AttachmentProblem {
    /// The pull cannot go on (e.g. the server is gone).
    Fatal(Error),
    /// This revision cannot be stored; the others can.
    Doc(String),
}

impl From<StoreError> for AttachmentProblem {
    fn from(e: StoreError) -> Self {
        AttachmentProblem::Fatal(e.into())
    }
}

/// Makes sure the bytes of every attachment of `inc` are in the replica or
/// in this batch, fetching the missing ones, and rewrites the entries as
/// CouchDB stubs. Returns how many attachments were fetched.
async fn resolve_attachments(
    ctx: &PullContext,
    inc: &mut IncomingRev,
    atts: Vec<AttachmentRef>,
    batch: &mut Vec<(String, Bytes)>,
    have: &mut HashMap<String, ()>,
) -> Result<u64, AttachmentProblem> {
    if atts.is_empty() {
        return Ok(0);
    }
    let rev = inc.path.leaf().map(|r| r.to_string()).unwrap_or_default();
    let mut fetched = 0;
    let mut stubs = Map::new();
    for (name, mut entry) in atts {
        let inline = entry.remove("data");
        entry.remove("follows");
        let digest = match entry.get("digest").and_then(Value::as_str) {
            Some(d) => d.to_owned(),
            None => {
                return Err(AttachmentProblem::Doc(format!(
                    "attachment {name:?} has no digest"
                )))
            }
        };
        let known = have.contains_key(&digest) || ctx.replica.has_attachment(&digest)?;
        if !known {
            let bytes = match inline.as_ref().and_then(Value::as_str) {
                Some(b64) => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| {
                            AttachmentProblem::Doc(format!("attachment {name:?}: bad base64: {e}"))
                        })?,
                ),
                None => match ctx.remote.attachment(&inc.id, &name, &rev).await {
                    Ok(b) => {
                        fetched += 1;
                        b
                    }
                    Err(RemoteError::Http {
                        status,
                        error,
                        reason,
                        ..
                    }) if status.is_client_error() => {
                        return Err(AttachmentProblem::Doc(format!(
                            "attachment {name:?}: HTTP {status} {error}: {reason}"
                        )))
                    }
                    Err(e) => return Err(AttachmentProblem::Fatal(e.into())),
                },
            };
            // CouchDB digests the stored (possibly gzip-encoded) bytes, so a
            // mismatch only proves corruption for unencoded attachments.
            if entry.get("encoding").is_none() && !digest_matches(&digest, &bytes) {
                return Err(AttachmentProblem::Doc(format!(
                    "attachment {name:?}: bytes do not match digest {digest}"
                )));
            }
            if entry.get("length").is_none() {
                entry.insert("length".into(), Value::from(bytes.len() as u64));
            }
            have.insert(digest.clone(), ());
            batch.push((digest, bytes));
        }
        entry.insert("stub".into(), Value::Bool(true));
        stubs.insert(name, Value::Object(entry));
    }
    inc.body.insert("_attachments".into(), Value::Object(stubs));
    Ok(fetched)
}

/// Checks bytes against a CouchDB digest (`md5-<base64>`); other digest
/// kinds are not checked.
fn digest_matches(digest: &str, bytes: &[u8]) -> bool {
    match digest.strip_prefix("md5-") {
        Some(b64) => base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes)) == b64,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_meta_fields_from_the_body() {
        let doc = json!({"_id": "a/b", "_rev": "3-c", "_revisions": {"start": 3, "ids": ["c", "b", "a"]},
                         "_deleted": true, "_conflicts": ["3-x"], "v": 1});
        let (inc, atts) = incoming_rev(doc.as_object().cloned().unwrap()).unwrap();
        assert_eq!(inc.id, "a/b");
        assert_eq!(inc.path.ids, vec!["c", "b", "a"]);
        assert!(inc.deleted);
        assert_eq!(Value::Object(inc.body), json!({"v": 1}));
        assert!(atts.is_empty());
    }

    #[test]
    fn rejects_inconsistent_revisions() {
        let doc = json!({"_id": "a", "_rev": "3-c", "_revisions": {"start": 2, "ids": ["b", "a"]}});
        assert!(incoming_rev(doc.as_object().cloned().unwrap()).is_err());
        let doc = json!({"_id": "a", "_rev": "nope"});
        assert!(incoming_rev(doc.as_object().cloned().unwrap()).is_err());
    }

    #[test]
    fn checks_md5_digests() {
        assert!(digest_matches(
            "md5-XrY7u+Ae7tCTyyK7j1rNww==",
            b"hello world"
        ));
        assert!(!digest_matches(
            "md5-XrY7u+Ae7tCTyyK7j1rNww==",
            b"hello world!"
        ));
    }
}
