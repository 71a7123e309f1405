//! Local writes: `put`, `update` and `delete` on a replica, the app's side
//! of the data flow app → store → outbox → remote.
//!
//! A local edit becomes one more [`WriteBatch`]: its new revision (merged
//! into the tree like a pulled one), the attachment bytes it brings, a
//! precondition (the revision it edits must still be a leaf) and an outbox
//! entry, all committed by [`Replica::commit_blocking`] in one transaction.
//! This file owns what is particular to local edits (validating the body,
//! the deterministic revision id, inline attachments); merging, stemming,
//! sequences and counters stay in `commit.rs`, the precondition and the
//! outbox append are steps of `tx.rs`. It knows nothing of HTTP or of the push worker.

use super::commit::{IncomingRev, WriteBatch};
use super::document::Document;
use super::error::StoreError;
use super::keys::{self, decode_u64};
use super::nesting::{nesting_depth, MAX_NESTING};
use super::replica::Replica;
use crate::revtree::{Rev, RevPath};
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::{Map, Value};

/// What a local write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalWrite {
    /// The document id.
    pub id: String,
    /// The new revision (generation of its parent + 1).
    pub rev: Rev,
    /// True when the write was a delete (a tombstone).
    pub deleted: bool,
    /// The local update sequence after the write.
    pub seq: u64,
}

/// Which revision an edit is based on.
#[derive(Debug, Clone)]
enum Base {
    /// The caller named it (`_rev`, or `None` for a new document); it must
    /// still be a leaf when the write commits.
    Given(Option<Rev>),
    /// A `put` without `_rev`: no document, or a deleted winner (the edit
    /// is its child, as in CouchDB); a live winner is a conflict. The
    /// winner must still be the same when the write commits.
    New,
    /// Whatever the winner is when the write commits: a lost race is retried.
    Winner,
}

/// Top-level fields a body may carry besides its data (CouchDB refuses
/// other names starting with `_`).
const SPECIAL: [&str; 4] = ["_id", "_rev", "_deleted", "_attachments"];

/// How many times a write based on the winner is redone after losing a
/// race with another writer before it gives up with the conflict.
const WINNER_RACES: usize = 16;

impl Replica {
    /// Writes a document, like `PUT /db/{id}`: `doc` is a JSON object that
    /// may carry `_rev` (the leaf it edits; a stale one is a
    /// [`StoreError::Conflict`]), `_deleted` and `_attachments` (stubs of
    /// the parent's attachments, or new ones with base64 `data`). Without
    /// `_rev` it creates the document (again, over a deleted one); if the
    /// document exists and is not deleted, that is a
    /// [`StoreError::Conflict`] and nothing is written, as CouchDB answers
    /// 409. To edit a document, name its `_rev`, use
    /// [`Replica::update`], or write over whatever the winner is with
    /// [`Replica::put_overwrite`].
    ///
    /// The new revision is visible to reads when this returns, gets a new
    /// local sequence (views see it) and is queued in the outbox for the
    /// push worker. Its id is deterministic: the MD5 of the parent
    /// revision, the deleted flag and the canonical body, so the same edit
    /// of the same parent gives the same revision. A body nested deeper
    /// than [`MAX_NESTING`](crate::replica::MAX_NESTING) is a
    /// [`StoreError::TooDeep`] (every replica would refuse it on a pull).
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// let w = replica.put_blocking("card-1", &serde_json::json!({"elo": 1200})).unwrap();
    /// assert_eq!(w.rev.pos, 1);
    /// assert_eq!(replica.get("card-1").unwrap().unwrap().body["elo"], 1200);
    /// assert_eq!(replica.outbox().len().unwrap(), 1);
    /// // Without its `_rev`, a second put of the card is a conflict.
    /// let again = replica.put_blocking("card-1", &serde_json::json!({"elo": 1216}));
    /// assert!(matches!(again, Err(settee::StoreError::Conflict { .. })));
    /// let edit = serde_json::json!({"_rev": w.rev.to_string(), "elo": 1216});
    /// assert_eq!(replica.put_blocking("card-1", &edit).unwrap().rev.pos, 2);
    /// ```
    ///
    /// # Durability
    /// The revision, its sequence entry, counters and its outbox entry are
    /// one sled transaction, flushed before `Ok`: after `Ok` the edit and
    /// its queued push survive a kill -9 together. A crash before leaves
    /// neither. After an `Err` other than `Conflict` the write may or may
    /// not be durable (never half: never a revision without its outbox
    /// entry); a `Conflict` wrote nothing.
    pub async fn put(&self, id: &str, doc: Value) -> Result<LocalWrite, StoreError> {
        let replica = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || replica.put_blocking(&id, &doc))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))?
    }

    /// [`Replica::put`] for callers outside an async runtime.
    ///
    /// # Durability
    /// As [`Replica::put`].
    pub fn put_blocking(&self, id: &str, doc: &Value) -> Result<LocalWrite, StoreError> {
        let doc = parse_put(id, doc)?;
        let base = match doc.rev {
            Some(rev) => Base::Given(Some(rev)),
            None => Base::New,
        };
        self.write_local(id, base, doc.deleted, doc.body)
    }

    /// Writes `doc` over the document's current winner, whatever it is: the
    /// new revision is a child of the winner when the write commits (or the
    /// first revision of a new document). For a caller that means to
    /// replace the document rather than edit a revision it read (content
    /// carried from elsewhere, `settee put --overwrite`); a `_rev` in `doc`
    /// is ignored. Otherwise as [`Replica::put`].
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// replica.put_blocking("card-1", &serde_json::json!({"elo": 1200})).unwrap();
    /// let w = replica
    ///     .put_overwrite_blocking("card-1", &serde_json::json!({"elo": 1500}))
    ///     .unwrap();
    /// assert_eq!(w.rev.pos, 2);
    /// assert_eq!(replica.get("card-1").unwrap().unwrap().body["elo"], 1500);
    /// ```
    ///
    /// # Durability
    /// As [`Replica::put`]. A `Conflict` only comes after the winner
    /// changed under the write 16 times in a row.
    pub async fn put_overwrite(&self, id: &str, doc: Value) -> Result<LocalWrite, StoreError> {
        let replica = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || replica.put_overwrite_blocking(&id, &doc))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))?
    }

    /// [`Replica::put_overwrite`] for callers outside an async runtime.
    ///
    /// # Durability
    /// As [`Replica::put`].
    pub fn put_overwrite_blocking(&self, id: &str, doc: &Value) -> Result<LocalWrite, StoreError> {
        let doc = parse_put(id, doc)?;
        self.write_local(id, Base::Winner, doc.deleted, doc.body)
    }

    /// Deletes a document: a tombstone child of `rev`, or of the current
    /// winner when `rev` is `None`. Deleting an unknown document is a
    /// [`StoreError::Conflict`], as CouchDB answers 404/409.
    ///
    /// # Durability
    /// As [`Replica::put`].
    pub async fn delete(&self, id: &str, rev: Option<Rev>) -> Result<LocalWrite, StoreError> {
        let replica = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || replica.delete_blocking(&id, rev))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))?
    }

    /// [`Replica::delete`] for callers outside an async runtime.
    ///
    /// # Durability
    /// As [`Replica::put`].
    pub fn delete_blocking(&self, id: &str, rev: Option<Rev>) -> Result<LocalWrite, StoreError> {
        if self.leaves(id)?.is_empty() {
            return Err(StoreError::Conflict {
                id: id.to_owned(),
                expected: rev.map_or_else(|| "the winner".to_owned(), |r| r.to_string()),
                current: "none".to_owned(),
            });
        }
        let base = match rev {
            Some(rev) => Base::Given(Some(rev)),
            None => Base::Winner,
        };
        self.write_local(id, base, true, Map::new())
    }

    /// Read-modify-write of the winner: `edit` gets the current winner
    /// (`None` for an unknown document; check [`Document::deleted`]) and
    /// returns the new body, or `None` to leave the document as it is. If
    /// another write lands in between, `edit` runs again on the new winner,
    /// so it must not have side effects beyond computing the body.
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// replica.put_blocking("card-1", &serde_json::json!({"elo": 1200})).unwrap();
    /// replica.update_blocking("card-1", |doc| {
    ///     let mut body = doc?.body.clone();
    ///     body.insert("elo".into(), 1216.into());
    ///     Some(body)
    /// }).unwrap();
    /// assert_eq!(replica.get("card-1").unwrap().unwrap().rev.pos, 2);
    /// ```
    ///
    /// # Durability
    /// As [`Replica::put`]; `Ok(None)` wrote nothing.
    pub async fn update<F>(&self, id: &str, edit: F) -> Result<Option<LocalWrite>, StoreError>
    where
        F: FnMut(Option<&Document>) -> Option<Map<String, Value>> + Send + 'static,
    {
        let replica = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || replica.update_blocking(&id, edit))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))?
    }

    /// [`Replica::update`] for callers outside an async runtime.
    ///
    /// # Durability
    /// As [`Replica::put`].
    pub fn update_blocking<F>(
        &self,
        id: &str,
        mut edit: F,
    ) -> Result<Option<LocalWrite>, StoreError>
    where
        F: FnMut(Option<&Document>) -> Option<Map<String, Value>>,
    {
        let mut races = 0;
        loop {
            let current = self.get(id)?;
            let Some(mut body) = edit(current.as_ref()) else {
                return Ok(None);
            };
            body.retain(|k, _| !k.starts_with('_') || k == "_attachments");
            let base = Base::Given(current.map(|d| d.rev));
            match self.write_local(id, base, false, body) {
                Err(StoreError::Conflict { .. }) if races < WINNER_RACES => races += 1,
                other => return other.map(Some),
            }
        }
    }

    fn write_local(
        &self,
        id: &str,
        base: Base,
        deleted: bool,
        body: Map<String, Value>,
    ) -> Result<LocalWrite, StoreError> {
        check_id(id)?;
        let mut races = 0;
        loop {
            let winner =
                || -> Result<_, StoreError> { Ok(self.record(id)?.and_then(|r| r.tree.winner())) };
            let parent = match &base {
                Base::Given(rev) => rev.clone(),
                Base::New => match winner()? {
                    Some(live) if !live.deleted => {
                        return Err(StoreError::Conflict {
                            id: id.to_owned(),
                            expected: "none".to_owned(),
                            current: live.rev.to_string(),
                        })
                    }
                    tombstone => tombstone.map(|w| w.rev),
                },
                Base::Winner => winner()?.map(|w| w.rev),
            };
            let mut batch = self.local_batch(id, parent.as_ref(), deleted, body.clone())?;
            if !matches!(base, Base::Given(_)) {
                // Based on the winner read above: it must still be the
                // winner (a leaf is not enough: a pull may have added a
                // live branch that now wins).
                batch.expect_winners = std::mem::take(&mut batch.expect_leaves);
            }
            let rev = batch.outbox[0].1.clone();
            match self.commit_blocking(&batch) {
                Ok(outcome) => {
                    return Ok(LocalWrite {
                        id: id.to_owned(),
                        rev,
                        deleted,
                        seq: outcome.update_seq,
                    })
                }
                Err(StoreError::Conflict { .. })
                    if !matches!(base, Base::Given(_)) && races < WINNER_RACES =>
                {
                    races += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The batch of one local edit: its revision, new attachment bytes,
    /// precondition and outbox entry.
    fn local_batch(
        &self,
        id: &str,
        parent: Option<&Rev>,
        deleted: bool,
        mut body: Map<String, Value>,
    ) -> Result<WriteBatch, StoreError> {
        // A parent at generation u64::MAX can only have been replicated
        // (CouchDB takes any number): refuse rather than wrap to 0.
        let pos = match parent {
            None => 1,
            Some(p) => p
                .pos
                .checked_add(1)
                .ok_or_else(|| StoreError::LastGeneration {
                    id: id.to_owned(),
                    rev: p.to_string(),
                })?,
        };
        let attachments = inline_attachments(id, &mut body, pos)?;
        let hash = rev_hash(parent, deleted, &body);
        let rev = Rev::new(pos, hash.clone());
        let mut ids = vec![hash];
        ids.extend(parent.map(|p| p.hash.clone()));
        let raw =
            serde_json::value::to_raw_value(&body).map_err(|e| StoreError::InvalidDocument {
                id: id.to_owned(),
                reason: e.to_string(),
            })?;
        // The pull refuses such a body on arrival (`replicate/doc.rs`): one
        // written here would be pushed, and every other replica would
        // refuse it on every pull.
        let depth = nesting_depth(raw.get());
        if depth > MAX_NESTING {
            return Err(StoreError::TooDeep {
                id: id.to_owned(),
                depth,
                max: MAX_NESTING,
            });
        }
        Ok(WriteBatch {
            revs: vec![IncomingRev {
                id: id.to_owned(),
                path: RevPath { start: pos, ids },
                deleted,
                body: raw,
            }],
            attachments,
            expect_leaves: vec![(id.to_owned(), parent.cloned())],
            outbox: vec![(id.to_owned(), rev)],
            ..WriteBatch::default()
        })
    }
}

/// Writing what a retired replica still owes its remote into the replica
/// that replaced it, exactly once (`sync/carry.rs`).
impl Replica {
    /// The last outbox key of replica `source` carried into this one.
    pub(crate) fn carried_through(&self, source: &str) -> Result<Option<u64>, StoreError> {
        let key = keys::meta::carried(source);
        match self.inner.trees.meta.get(&key)? {
            Some(v) => decode_u64(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// A local write on top of `parent` (the winner the caller read;
    /// `None`: the document must be unknown), committed with the mark
    /// "`source` carried through `key`" in one transaction. A
    /// [`StoreError::Conflict`] (another write landed in between) wrote
    /// nothing.
    pub(crate) fn write_carried(
        &self,
        id: &str,
        parent: Option<Rev>,
        deleted: bool,
        body: Map<String, Value>,
        mark: (&str, u64),
    ) -> Result<LocalWrite, StoreError> {
        check_id(id)?;
        let mut batch = self.local_batch(id, parent.as_ref(), deleted, body)?;
        // On top of the winner the caller read, which must still win: a
        // pull landing in between is read again, not built on.
        batch.expect_winners = std::mem::take(&mut batch.expect_leaves);
        batch.carried = Some((mark.0.to_owned(), mark.1));
        let rev = batch.outbox[0].1.clone();
        let outcome = self.commit_blocking(&batch)?;
        Ok(LocalWrite {
            id: id.to_owned(),
            rev,
            deleted,
            seq: outcome.update_seq,
        })
    }

    /// Records "`source` carried through `key`" alone (a write that needed
    /// no new revision), durable when this returns.
    pub(crate) fn mark_carried(&self, source: &str, key: u64) -> Result<(), StoreError> {
        self.inner
            .trees
            .meta
            .insert(keys::meta::carried(source), &key.to_be_bytes())?;
        self.flush()
    }
}

/// A `put`'s document, split.
struct PutDoc {
    /// Its `_rev`, if any.
    rev: Option<Rev>,
    /// Its `_deleted` flag.
    deleted: bool,
    /// What is stored: the data and `_attachments`.
    body: Map<String, Value>,
}

/// Splits a `put`'s document, or says why it cannot be stored.
fn parse_put(id: &str, doc: &Value) -> Result<PutDoc, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidDocument {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    let Value::Object(fields) = doc else {
        return Err(invalid("a document must be a JSON object"));
    };
    if let Some(given) = fields.get("_id") {
        if given.as_str() != Some(id) {
            return Err(invalid("_id does not match the document id"));
        }
    }
    let rev = match fields.get("_rev") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse().map_err(|_| invalid("_rev is not a revision"))?),
        Some(_) => return Err(invalid("_rev is not a string")),
    };
    let deleted = match fields.get("_deleted") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(invalid("_deleted is not a boolean")),
    };
    let mut body = Map::with_capacity(fields.len());
    for (k, v) in fields {
        if k.starts_with('_') {
            if !SPECIAL.contains(&k.as_str()) {
                return Err(invalid(&format!("{k} is a reserved field name")));
            }
            if k != "_attachments" {
                continue;
            }
        }
        body.insert(k.clone(), v.clone());
    }
    Ok(PutDoc { rev, deleted, body })
}

fn check_id(id: &str) -> Result<(), StoreError> {
    let reason = if id.is_empty() {
        "the id is empty"
    } else if id.starts_with("_local/") {
        "_local documents are written with put_local and never pushed"
    } else if id.starts_with('_') && !id.starts_with("_design/") {
        "ids starting with _ are reserved"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidDocument {
        id: id.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Replaces attachments given with base64 `data` by stubs (digest, length,
/// `revpos` = this generation) and returns their bytes for the batch.
/// Stubs are kept as they are: the commit checks their bytes are stored.
fn inline_attachments(
    id: &str,
    body: &mut Map<String, Value>,
    pos: u64,
) -> Result<Vec<(String, Bytes)>, StoreError> {
    let mut out = Vec::new();
    let Some(atts) = body.get_mut("_attachments") else {
        return Ok(out);
    };
    let invalid = |reason: String| StoreError::InvalidDocument {
        id: id.to_owned(),
        reason,
    };
    let Value::Object(atts) = atts else {
        return Err(invalid("_attachments is not an object".into()));
    };
    for (name, att) in atts.iter_mut() {
        let Some(data) = att.get("data").and_then(Value::as_str) else {
            if att.get("stub").and_then(Value::as_bool) != Some(true) {
                return Err(invalid(format!(
                    "attachment {name:?} has neither data nor stub"
                )));
            }
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| invalid(format!("attachment {name:?}: bad base64: {e}")))?;
        let digest = format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes))
        );
        let content_type = att
            .get("content_type")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_owned();
        *att = serde_json::json!({
            "content_type": content_type,
            "digest": digest,
            "length": bytes.len(),
            "revpos": pos,
            "stub": true,
        });
        out.push((digest, Bytes::from(bytes)));
    }
    Ok(out)
}

/// The deterministic revision hash (as PouchDB's `deterministic_revs`):
/// MD5 of the parent revision, the deleted flag and the body with its keys
/// sorted, as 32 lowercase hex digits.
pub(crate) fn rev_hash(parent: Option<&Rev>, deleted: bool, body: &Map<String, Value>) -> String {
    let mut h = Md5::new();
    if let Some(p) = parent {
        h.update(p.to_string().as_bytes());
    }
    h.update(if deleted { b"\n1\n" } else { b"\n0\n" });
    let mut canonical = String::new();
    write_canonical(&Value::Object(body.clone()), &mut canonical);
    h.update(canonical.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON with object keys sorted, so equal documents hash equally whatever
/// order their fields came in.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;
    use serde_json::json;

    fn replica() -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        (dir, r)
    }

    #[test]
    fn put_update_delete_make_generations_sequences_and_outbox_entries() {
        let (_d, r) = replica();
        let a = r.put_blocking("a", &json!({"v": 1})).unwrap();
        assert_eq!((a.rev.pos, a.seq), (1, 1));
        let b = r
            .put_blocking("a", &json!({"_rev": a.rev.to_string(), "v": 2}))
            .unwrap();
        assert_eq!(b.rev.pos, 2);
        let c = r
            .update_blocking("a", |d| {
                let mut body = d?.body.clone();
                body.insert("v".into(), json!(3));
                Some(body)
            })
            .unwrap()
            .unwrap();
        assert_eq!(c.rev.pos, 3);
        assert_eq!(r.get("a").unwrap().unwrap().body["v"], 3);
        let d = r.delete_blocking("a", None).unwrap();
        assert!(d.deleted && r.get("a").unwrap().unwrap().deleted);
        assert_eq!((r.doc_count().unwrap(), r.deleted_count().unwrap()), (0, 1));
        let entries = r.outbox().entries(None, 100).unwrap();
        let revs: Vec<_> = entries.iter().map(|e| e.rev.pos).collect();
        assert_eq!(revs, vec![1, 2, 3, 4]);
        assert_eq!(
            r.changes(0).count(),
            1,
            "one document, at its latest sequence"
        );
        assert_eq!(r.update_seq().unwrap(), 4);
    }

    #[test]
    fn a_stale_rev_is_a_conflict_and_writes_nothing() {
        let (_d, r) = replica();
        let a = r.put_blocking("a", &json!({"v": 1})).unwrap();
        r.put_blocking("a", &json!({"_rev": a.rev.to_string(), "v": 2}))
            .unwrap();
        let err = r
            .put_blocking("a", &json!({"_rev": a.rev.to_string(), "v": 3}))
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert_eq!(r.get("a").unwrap().unwrap().body["v"], 2);
        assert_eq!(r.outbox().len().unwrap(), 2);
        let err = r.delete_blocking("nope", None).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        let err = r
            .put_blocking("new", &json!({"_rev": "1-abc", "v": 1}))
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    }

    /// A body of `levels` nested objects in all (the body itself is one).
    fn nested_body(levels: usize) -> Map<String, Value> {
        let mut v = json!(1);
        for _ in 1..levels {
            v = json!({ "a": v });
        }
        let mut body = Map::new();
        body.insert("deep".into(), v);
        body
    }

    /// Issue 17, defect 8: `put` stored (and queued for the push) a body
    /// nested 300 levels deep, which every other settee replica then
    /// refused on every pull. Local writes now refuse it with
    /// `StoreError::TooDeep` and write nothing.
    #[test]
    fn issue_17_local_writes_refuse_bodies_nested_deeper_than_max_nesting() {
        let (_d, r) = replica();
        let a = r.put_blocking("a", &json!({"v": 1})).unwrap();
        let too_deep = nested_body(300);
        let mut with_rev = too_deep.clone();
        with_rev.insert("_rev".into(), json!(a.rev.to_string()));
        let errors = [
            r.put_blocking("new", &Value::Object(too_deep.clone()))
                .unwrap_err(),
            r.put_blocking("a", &Value::Object(with_rev)).unwrap_err(),
            r.update_blocking("a", |_| Some(too_deep.clone()))
                .unwrap_err(),
            r.update_blocking("new", |_| Some(nested_body(MAX_NESTING + 1)))
                .unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(err, StoreError::TooDeep { depth, max: MAX_NESTING, .. } if depth > MAX_NESTING),
                "{err:?}"
            );
        }
        // The replica is as it was.
        let doc = r.get("a").unwrap().unwrap();
        assert_eq!((doc.rev, doc.body["v"].as_i64()), (a.rev, Some(1)));
        assert!(r.get("new").unwrap().is_none());
        assert_eq!((r.outbox().len().unwrap(), r.update_seq().unwrap()), (1, 1));
        // The limit itself stores, and reads back.
        r.put_blocking("max", &Value::Object(nested_body(MAX_NESTING)))
            .unwrap();
        assert!(r.get("max").unwrap().is_some());
    }

    /// Issue 17, defect 9: the new revision's generation was `p.pos + 1`,
    /// which panics (debug) or wraps to 0 (release) when the parent came
    /// from a remote at generation `u64::MAX`. Every local edit of such a
    /// document is now `StoreError::LastGeneration` and writes nothing.
    #[test]
    fn issue_17_editing_the_last_generation_is_an_error_not_an_overflow() {
        let (_d, r) = replica();
        r.commit_blocking(&WriteBatch {
            revs: vec![IncomingRev {
                id: "max".into(),
                path: RevPath {
                    start: u64::MAX,
                    ids: vec!["top".into()],
                },
                deleted: false,
                body: serde_json::value::to_raw_value(&json!({"v": 1})).unwrap(),
            }],
            ..WriteBatch::default()
        })
        .unwrap();
        let top = r.get("max").unwrap().unwrap().rev;
        assert_eq!(top.pos, u64::MAX);
        let errors = [
            r.put_blocking("max", &json!({"_rev": top.to_string(), "v": 2}))
                .unwrap_err(),
            r.update_blocking("max", |d| Some(d?.body.clone()))
                .unwrap_err(),
            r.delete_blocking("max", Some(top.clone())).unwrap_err(),
            r.delete_blocking("max", None).unwrap_err(),
            r.put_overwrite_blocking("max", &json!({"v": 2}))
                .unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(&err, StoreError::LastGeneration { id, rev } if id == "max" && *rev == top.to_string()),
                "{err:?}"
            );
        }
        let doc = r.get("max").unwrap().unwrap();
        assert_eq!((doc.rev, doc.deleted), (top, false));
        assert_eq!((r.outbox().len().unwrap(), r.update_seq().unwrap()), (0, 1));
    }

    /// Issue 17, defect 11: `put` without `_rev` of a document with a live
    /// winner wrote over the winner; CouchDB and PouchDB answer 409. It is
    /// now a `Conflict` that writes nothing; a deleted or unknown document
    /// is created, as CouchDB does.
    #[test]
    fn issue_17_put_without_rev_over_a_live_document_is_a_conflict() {
        let (_d, r) = replica();
        let a = r.put_blocking("a", &json!({"v": 1})).unwrap();
        let err = r.put_blocking("a", &json!({"v": 2})).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Conflict { id, expected, current }
                    if id == "a" && expected == "none" && *current == a.rev.to_string()
            ),
            "{err:?}"
        );
        let doc = r.get("a").unwrap().unwrap();
        assert_eq!((doc.rev, doc.body["v"].as_i64()), (a.rev.clone(), Some(1)));
        assert_eq!((r.outbox().len().unwrap(), r.update_seq().unwrap()), (1, 1));
        // A null `_rev` is no `_rev`.
        let err = r
            .put_blocking("a", &json!({"_rev": null, "v": 2}))
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        // Over a deleted winner, a put without `_rev` creates again, as a
        // child of the tombstone.
        let gone = r.delete_blocking("a", None).unwrap();
        let again = r.put_blocking("a", &json!({"v": 3})).unwrap();
        assert_eq!(again.rev.pos, gone.rev.pos + 1);
        let doc = r.get("a").unwrap().unwrap();
        assert!(!doc.deleted && doc.body["v"] == 3 && doc.conflicts.is_empty());
        // A write naming the winner's `_rev` still edits it.
        let edit = r
            .put_blocking("a", &json!({"_rev": again.rev.to_string(), "v": 4}))
            .unwrap();
        assert_eq!(edit.rev.pos, again.rev.pos + 1);
    }

    /// The explicit way to write over the winner (issue 17, defect 11):
    /// `put_overwrite` edits whatever wins when it commits.
    #[test]
    fn put_overwrite_writes_over_the_winner() {
        let (_d, r) = replica();
        let new = r.put_overwrite_blocking("a", &json!({"v": 1})).unwrap();
        assert_eq!(new.rev.pos, 1, "an unknown document is created");
        let over = r
            .put_overwrite_blocking("a", &json!({"_rev": "9-stale", "v": 2}))
            .unwrap();
        assert_eq!(over.rev.pos, 2, "a child of the winner; `_rev` is ignored");
        let doc = r.get("a").unwrap().unwrap();
        assert_eq!(
            (doc.rev, doc.body["v"].as_i64()),
            (over.rev.clone(), Some(2))
        );
        // A pulled branch that wins: the overwrite is its child.
        r.commit_blocking(&WriteBatch {
            revs: vec![IncomingRev {
                id: "a".into(),
                path: RevPath {
                    start: 3,
                    ids: vec!["c3".into(), "c2".into(), "c1".into()],
                },
                deleted: false,
                body: serde_json::value::to_raw_value(&json!({"v": "pulled"})).unwrap(),
            }],
            ..WriteBatch::default()
        })
        .unwrap();
        let over = r.put_overwrite_blocking("a", &json!({"v": 4})).unwrap();
        assert_eq!(over.rev.pos, 4);
        let doc = r.get("a").unwrap().unwrap();
        assert_eq!((doc.rev, doc.body["v"].as_i64()), (over.rev, Some(4)));
        assert_eq!(
            doc.conflicts.len(),
            1,
            "the older local branch stays a conflict"
        );
        assert_eq!(r.outbox().len().unwrap(), 3);
    }

    /// An edit based on the winner commits only while that revision is
    /// still the winner: a branch that arrived meanwhile and wins, though
    /// the old winner is still a leaf, makes it a conflict.
    #[test]
    fn a_write_based_on_the_winner_needs_it_to_still_win() {
        let (_d, r) = replica();
        let a = r.put_blocking("a", &json!({"v": 1})).unwrap();
        let mut batch = r
            .local_batch(
                "a",
                Some(&a.rev),
                false,
                json!({"v": 2}).as_object().unwrap().clone(),
            )
            .unwrap();
        batch.expect_winners = std::mem::take(&mut batch.expect_leaves);
        r.commit_blocking(&WriteBatch {
            revs: vec![IncomingRev {
                id: "a".into(),
                path: RevPath {
                    start: 2,
                    ids: vec!["b2".into(), "b1".into()],
                },
                deleted: false,
                body: serde_json::value::to_raw_value(&json!({"v": "pulled"})).unwrap(),
            }],
            ..WriteBatch::default()
        })
        .unwrap();
        assert!(r.leaves("a").unwrap().iter().any(|l| l.rev == a.rev));
        let err = r.commit_blocking(&batch).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert_eq!(r.outbox().len().unwrap(), 1);
        // The write itself retries on the new winner; a plain put refuses.
        let err = r.put_blocking("a", &json!({"v": 2})).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert_eq!(
            r.put_overwrite_blocking("a", &json!({"v": 2}))
                .unwrap()
                .rev
                .pos,
            3
        );
    }

    #[test]
    fn revision_ids_are_deterministic() {
        let (_d1, r1) = replica();
        let (_d2, r2) = replica();
        let x = r1
            .put_blocking("a", &json!({"x": 1, "y": [1, {"b": 2, "a": 1}]}))
            .unwrap();
        let y = r2
            .put_blocking("a", &json!({"y": [1, {"a": 1, "b": 2}], "x": 1}))
            .unwrap();
        assert_eq!(x.rev, y.rev);
        let x2 = r1.put_overwrite_blocking("a", &json!({"x": 2})).unwrap();
        let y2 = r2.put_overwrite_blocking("a", &json!({"x": 3})).unwrap();
        assert_ne!(x2.rev, y2.rev);
        assert_eq!(x.rev.hash.len(), 32);
    }

    #[test]
    fn bad_documents_are_refused() {
        let (_d, r) = replica();
        for (id, doc) in [
            ("a", json!([1])),
            ("a", json!({"_id": "b"})),
            ("a", json!({"_foo": 1})),
            ("", json!({})),
            ("_local/x", json!({})),
            ("a", json!({"_attachments": {"f": {"data": "!!"}}})),
        ] {
            let err = r.put_blocking(id, &doc).unwrap_err();
            assert!(matches!(err, StoreError::InvalidDocument { .. }), "{err:?}");
        }
        assert_eq!(r.outbox().len().unwrap(), 0);
        r.put_blocking("_design/v", &json!({"views": {}})).unwrap();
    }

    #[test]
    fn inline_attachments_become_stubs_with_their_bytes_stored() {
        let (_d, r) = replica();
        let w = r
            .put_blocking(
                "a",
                &json!({"_attachments": {"f.txt": {"content_type": "text/plain", "data": "aGVsbG8="}}}),
            )
            .unwrap();
        let doc = r.get("a").unwrap().unwrap();
        let (_, stub) = doc.attachments().next().unwrap();
        assert_eq!(stub.revpos, Some(1));
        assert_eq!(r.attachment(&stub.digest).unwrap().unwrap(), b"hello");
        // The next edit keeps the stub.
        let mut body = doc.to_json();
        body["n"] = json!(1);
        let w2 = r.put_blocking("a", &body).unwrap();
        assert_eq!(w2.rev.pos, w.rev.pos + 1);
        assert!(r.get("a").unwrap().unwrap().attachments().next().is_some());
    }
}
