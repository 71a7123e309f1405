//! One replication batch, from a page of `_changes` to a [`WriteBatch`]:
//! diff the page against the replica, fetch what is missing, fetch the
//! attachment bytes the replica lacks, and turn each revision into an
//! [`IncomingRev`]. Nothing here writes to the store.

use super::attachment::{Expect, Fetched};
use super::doc::DocParts;
use super::{DocFailure, PullContext};
use crate::remote::{endpoint, ChangeRow, ChangesPage, FetchedRev, Seq};
use crate::revtree::Rev;
use crate::store::{IncomingRev, StoreError, WriteBatch};
use crate::Error;
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// A fetched batch, ready to commit.
pub(crate) struct FetchedBatch {
    pub(crate) write: WriteBatch,
    pub(crate) changes: usize,
    pub(crate) docs_read: u64,
    pub(crate) failures: Vec<DocFailure>,
    pub(crate) attachments_fetched: u64,
    /// The checkpoint the batch moves to; `None` for a batch of retries,
    /// which are not part of the feed.
    pub(crate) last_seq: Option<Seq>,
}

pub(crate) async fn fetch(ctx: &PullContext, page: ChangesPage) -> Result<FetchedBatch, Error> {
    let mut failures = Vec::new();
    let replica = ctx.replica.clone();
    let skip_unheld = ctx.tombstones == super::Tombstones::SkipUnheld;
    let rows = page.results;
    let changes = rows.len();
    // Local _revs_diff: which listed leaves the replica lacks. A missing
    // first revision whose row carries it complete is taken from the feed
    // (the cold-load fast path); the rest is fetched with `_bulk_get`.
    let (wanted, from_feed, bad_revs) =
        super::blocking(&ctx.replica, move || -> Result<_, StoreError> {
            let mut wanted = Vec::new();
            let mut from_feed = Vec::new();
            let mut bad = Vec::new();
            for mut row in rows {
                // Every leaf deleted, of a document never held: nothing
                // the replica would answer differently (see `Tombstones`).
                if skip_unheld && row.deleted && replica.rev_tree(&row.id)?.is_none() {
                    continue;
                }
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
                // A revision the feed carries whole skips the local diff:
                // the commit reads the record anyway, and merging a
                // revision the replica already has writes nothing. On a
                // cold load that is one lookup per document less.
                if let Some(doc) = row.doc.take() {
                    if let Some(inc) = complete_in_feed(&row, &revs, &doc) {
                        from_feed.push(inc);
                        continue;
                    }
                }
                let missing = replica.missing_revs(&row.id, &revs)?;
                if missing.is_empty() {
                    continue;
                }
                wanted.push((
                    row.id,
                    missing.iter().map(Rev::to_string).collect::<Vec<_>>(),
                ));
            }
            Ok((wanted, from_feed, bad))
        })
        .await
        .map_err(|e| StoreError::Cancelled(e.to_string()))??;
    failures.extend(bad_revs);

    let fetched = ctx.remote.fetch_revs(&wanted).await?;
    let mut batch = convert(ctx, fetched, failures, changes, Some(page.last_seq)).await?;
    batch.docs_read += from_feed.len() as u64;
    batch.write.revs.extend(from_feed);
    // A revision the answer leaves out would be passed by the checkpoint
    // unseen: it fails, and so goes on the retry list.
    let unanswered = unanswered(&wanted, &batch.write.revs, &batch.failures);
    batch
        .write
        .retry_later
        .extend(unanswered.iter().map(|f| f.id.clone()));
    batch.failures.extend(unanswered);
    Ok(batch)
}

/// The revision a `_changes` row carries (`include_docs=true`), when it is
/// the row's only leaf (`revs`) and all of the document's history: at
/// generation 1, live, without attachments (their bytes are not in the
/// feed). Anything else, or anything odd about the document,
/// goes to `_bulk_get`, which carries every case.
fn complete_in_feed(row: &ChangeRow, revs: &[Rev], doc: &RawValue) -> Option<IncomingRev> {
    if !row.is_first_revision_only() {
        return None;
    }
    let [want] = revs else { return None };
    let parts = DocParts::split(doc, &row.id).ok()?;
    let leaf = parts.path.leaf()?;
    if &leaf != want || parts.path.ids.len() != 1 || parts.deleted || parts.attachments.is_some() {
        return None;
    }
    let body = parts.body(None).ok()?;
    Some(IncomingRev {
        id: parts.id,
        path: parts.path,
        deleted: false,
        body,
    })
}

/// The wanted revisions that neither arrived (as the revision itself or
/// as an ancestor of the one `latest=true` answered with) nor already
/// failed: one failure per document, naming its first such revision.
fn unanswered(
    wanted: &[(String, Vec<String>)],
    arrived: &[IncomingRev],
    failures: &[DocFailure],
) -> Vec<DocFailure> {
    let failed: HashSet<&str> = failures.iter().map(|f| f.id.as_str()).collect();
    let mut covered: HashSet<(&str, u64, &str)> = HashSet::new();
    for inc in arrived {
        for (i, hash) in inc.path.ids.iter().enumerate() {
            covered.insert((&inc.id, inc.path.start - i as u64, hash));
        }
    }
    let mut out = Vec::new();
    for (id, revs) in wanted {
        if failed.contains(id.as_str()) {
            continue;
        }
        let missing = revs.iter().find(|rev| match rev.parse::<Rev>() {
            Ok(r) => !covered.contains(&(id.as_str(), r.pos, r.hash.as_str())),
            Err(_) => true,
        });
        if let Some(rev) = missing {
            out.push(DocFailure::new(
                id,
                Some(rev.clone()),
                "not_answered",
                "the server's answer left this revision out",
            ));
        }
    }
    out
}

/// Fetches again, with every leaf (`open_revs=all`), the documents an
/// earlier pull could not store. A document the server no longer has is
/// done with: there is nothing left to replicate.
pub(crate) async fn fetch_retries(
    ctx: &PullContext,
    ids: Vec<String>,
) -> Result<FetchedBatch, Error> {
    let mut fetched = Vec::new();
    for id in &ids {
        if let Some(revs) = ctx.remote.open_revs_all(id).await? {
            fetched.extend(revs);
        }
    }
    let mut batch = convert(ctx, fetched, Vec::new(), ids.len(), None).await?;
    let failed: HashSet<&str> = batch.failures.iter().map(|f| f.id.as_str()).collect();
    batch.write.retry_done = ids
        .iter()
        .filter(|id| !failed.contains(id.as_str()))
        .cloned()
        .collect();
    Ok(batch)
}

/// Turns fetched revisions into a write batch: splits each one, resolves
/// its attachments, and lists every document that failed (those already in
/// `failures` too) for a later retry.
async fn convert(
    ctx: &PullContext,
    fetched: Vec<FetchedRev>,
    mut failures: Vec<DocFailure>,
    changes: usize,
    last_seq: Option<Seq>,
) -> Result<FetchedBatch, Error> {
    let mut write = WriteBatch::default();
    let mut docs_read = 0;
    let mut attachments_fetched = 0;
    for item in fetched {
        match item {
            FetchedRev::Doc { id, doc } => {
                docs_read += 1;
                let parts = match DocParts::split(&doc, &id) {
                    Ok(parts) => parts,
                    Err(reason) => {
                        failures.push(DocFailure::new(&id, None, "bad_document", &reason));
                        continue;
                    }
                };
                drop(doc);
                let rev = parts.path.leaf().map(|r| r.to_string());
                let stubs = match &parts.attachments {
                    None => None,
                    Some(atts) => match resolve_attachments(ctx, &parts, atts).await {
                        Ok((stubs, n)) => {
                            attachments_fetched += n;
                            Some(stubs)
                        }
                        Err(AttachmentProblem::Fatal(e)) => return Err(e),
                        Err(AttachmentProblem::Doc(reason)) => {
                            failures.push(DocFailure::new(
                                &parts.id,
                                rev,
                                "attachment_error",
                                &reason,
                            ));
                            continue;
                        }
                    },
                };
                match parts.body(stubs.as_ref()) {
                    Ok(body) => write.revs.push(IncomingRev {
                        id: parts.id,
                        path: parts.path,
                        deleted: parts.deleted,
                        body,
                    }),
                    Err(e) => failures.push(DocFailure::new(
                        &parts.id,
                        rev,
                        "bad_document",
                        &e.to_string(),
                    )),
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
    write.retry_later = failures.iter().map(|f| f.id.clone()).collect();
    Ok(FetchedBatch {
        changes,
        write,
        docs_read,
        failures,
        attachments_fetched,
        last_seq,
    })
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

/// Makes sure the bytes of every attachment of a revision are in the
/// replica, fetching and staging the missing ones (so two documents sharing
/// a digest cost one GET, and no batch holds attachment bytes in memory),
/// and returns the entries rewritten as CouchDB stubs, with how many were
/// fetched.
///
/// A replica's digest of an attachment is always the MD5 of the identity
/// bytes it holds (docs/design.md, "Attachment digests"). The server's is
/// that too, except for an attachment it stored encoded (`encoding` in the
/// `att_encoding_info` answer: CouchDB gzips compressible types and digests
/// the gzip bytes): its stub gets the digest of the bytes received.
async fn resolve_attachments(
    ctx: &PullContext,
    doc: &DocParts,
    atts: &Map<String, Value>,
) -> Result<(Map<String, Value>, u64), AttachmentProblem> {
    let rev = doc.path.leaf().map(|r| r.to_string()).unwrap_or_default();
    let mut fetched = 0;
    let mut stubs = Map::new();
    for (name, entry) in atts {
        let Some(entry) = entry.as_object() else {
            return Err(AttachmentProblem::Doc(format!(
                "attachment {name:?} is not an object"
            )));
        };
        let mut entry = entry.clone();
        let inline = entry.remove("data");
        entry.remove("follows");
        // Asked for with `att_encoding_info` only to learn whether the
        // digest is of encoded bytes; what is stored is the identity bytes,
        // under stubs shaped like a plain `GET /db/{id}`.
        let encoded = entry.remove("encoding").is_some();
        entry.remove("encoded_length");
        let server_digest = match entry.get("digest").and_then(Value::as_str) {
            Some(d) => d.to_owned(),
            None => {
                return Err(AttachmentProblem::Doc(format!(
                    "attachment {name:?} has no digest"
                )))
            }
        };
        // Which bytes the replica already holds for this entry: for an
        // unencoded one, those of the server's digest; for an encoded one,
        // whose server digest the replica never stores, those of the same
        // attachment (name and revpos) in a revision this one descends from.
        let held = if encoded {
            held_by_ancestor(ctx, doc, name, &entry)?
        } else if ctx.replica.has_attachment(&server_digest)? {
            Some((server_digest.clone(), None))
        } else {
            None
        };
        let (digest, len) = match held {
            Some(held) => held,
            None => {
                let (digest, len) = match inline.as_ref().and_then(Value::as_str) {
                    Some(b64) => {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .map_err(|e| {
                                AttachmentProblem::Doc(format!(
                                    "attachment {name:?}: bad base64: {e}"
                                ))
                            })?;
                        // Inline data is the identity bytes (CouchDB
                        // decodes it); for an encoded attachment the
                        // server's digest is of other bytes and proves
                        // nothing.
                        let digest = if encoded {
                            md5_digest(&bytes)
                        } else if digest_matches(&server_digest, &bytes) {
                            server_digest.clone()
                        } else {
                            return Err(AttachmentProblem::Doc(format!(
                                "attachment {name:?}: bytes do not match digest {server_digest}"
                            )));
                        };
                        ctx.replica.stage_attachment(&digest, &bytes)?;
                        (digest, bytes.len() as u64)
                    }
                    None if !endpoint::addressable(&doc.id, false)
                        || !endpoint::addressable(name, true) =>
                    {
                        return Err(AttachmentProblem::Doc(format!(
                            "attachment {name:?}: no URL path can name it"
                        )))
                    }
                    // Streamed into the replica, never held whole.
                    None => {
                        let expect = if encoded {
                            Expect::Encoded(&server_digest)
                        } else {
                            Expect::Identity(&server_digest)
                        };
                        match super::attachment::fetch(ctx, &doc.id, name, &rev, expect)
                            .await
                            .map_err(AttachmentProblem::Fatal)?
                        {
                            Fetched::Stored(digest, len) => {
                                fetched += 1;
                                (digest, len)
                            }
                            Fetched::Refused(reason) => return Err(AttachmentProblem::Doc(reason)),
                        }
                    }
                };
                (digest, Some(len))
            }
        };
        entry.insert("digest".into(), Value::String(digest));
        if let (None, Some(len)) = (entry.get("length"), len) {
            entry.insert("length".into(), Value::from(len));
        }
        entry.insert("stub".into(), Value::Bool(true));
        stubs.insert(name.clone(), Value::Object(entry));
    }
    Ok((stubs, fetched))
}

/// The digest and length under which the replica holds attachment `name`
/// of `entry`'s `revpos`, as a leaf revision that the incoming one descends
/// from (at or after that `revpos`) has it, when its bytes are held.
///
/// The same name and revpos on the same history are the same attachment:
/// it was last written by the revision at generation `revpos`, which both
/// revisions share. CouchDB itself matches stubs by name and revpos only
/// (`couch_att:merge_stubs`). Without this an encoded attachment would be
/// fetched again with every new revision of its document.
fn held_by_ancestor(
    ctx: &PullContext,
    doc: &DocParts,
    name: &str,
    entry: &Map<String, Value>,
) -> Result<Option<(String, Option<u64>)>, StoreError> {
    let Some(revpos) = entry.get("revpos").and_then(Value::as_u64) else {
        return Ok(None);
    };
    for leaf in ctx.replica.leaves(&doc.id)? {
        let (pos, hash) = (leaf.rev.pos, leaf.rev.hash.as_str());
        let on_path = pos <= doc.path.start
            && doc
                .path
                .ids
                .get((doc.path.start - pos) as usize)
                .is_some_and(|h| h == hash);
        if !on_path || revpos > pos {
            continue;
        }
        let Some(held) = ctx.replica.get_rev(&doc.id, &leaf.rev)? else {
            continue;
        };
        let Some(stub) = held
            .body
            .get("_attachments")
            .and_then(|a| a.get(name))
            .and_then(Value::as_object)
        else {
            continue;
        };
        if stub.get("revpos").and_then(Value::as_u64) != Some(revpos) {
            continue;
        }
        let Some(digest) = stub.get("digest").and_then(Value::as_str) else {
            continue;
        };
        if ctx.replica.has_attachment(digest)? {
            let len = stub.get("length").and_then(Value::as_u64);
            return Ok(Some((digest.to_owned(), len)));
        }
    }
    Ok(None)
}

/// `md5-<base64 MD5 of bytes>`, the digest a replica holds bytes under.
fn md5_digest(bytes: &[u8]) -> String {
    format!(
        "md5-{}",
        base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
    )
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

    fn arrived(id: &str, start: u64, ids: &[&str]) -> IncomingRev {
        IncomingRev {
            id: id.into(),
            path: crate::revtree::RevPath {
                start,
                ids: ids.iter().map(|s| s.to_string()).collect(),
            },
            deleted: false,
            body: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
        }
    }

    #[test]
    fn every_wanted_revision_is_answered_or_listed() {
        let wanted = vec![
            ("a".to_owned(), vec!["2-x".to_owned(), "2-y".to_owned()]),
            ("b".to_owned(), vec!["1-b".to_owned()]),
            ("c".to_owned(), vec!["1-c".to_owned()]),
            ("d".to_owned(), vec!["1-d".to_owned()]),
        ];
        // a: 2-x arrived, 2-y did not; b: answered by a descendant
        // (latest=true); c: left out entirely; d: already failed.
        let got = vec![arrived("a", 2, &["x", "r"]), arrived("b", 2, &["b2", "b"])];
        let failed = vec![DocFailure::new("d", None, "not_found", "missing")];
        let out = unanswered(&wanted, &got, &failed);
        let listed: Vec<(&str, Option<&str>)> = out
            .iter()
            .map(|f| (f.id.as_str(), f.rev.as_deref()))
            .collect();
        assert_eq!(listed, vec![("a", Some("2-y")), ("c", Some("1-c"))]);
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
