//! The replica's one write path: a batch of revisions, the counts of the
//! attachment bytes they name and the checkpoint that covers them,
//! committed in a single multi-tree sled transaction and flushed before the
//! caller hears `Ok`. The bytes themselves are staged ahead of the batch
//! (`Replica::stage_attachment`); this transaction claims them.

use super::attachment_refs;
use super::body_log::BodyLog;
use super::document::{BodyRef, DocRecord, Extent};
use super::error::StoreError;
use super::keys::{self, meta};
use super::replica::Replica;
use super::tx::{self, abort, Abort, Counters, Expect};
use crate::revtree::{MergeOutcome, Rev, RevPath};
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use sled::transaction::{Transactional, TransactionalTree};
use std::collections::{BTreeMap, HashSet};

/// One revision arriving from a remote, with its ancestry.
#[derive(Debug, Clone)]
pub struct IncomingRev {
    /// The document id.
    pub id: String,
    /// The revision (newest id of the path) and its ancestors.
    pub path: RevPath,
    /// The revision's `_deleted` flag.
    pub deleted: bool,
    /// The body, a JSON object without `_id`, `_rev`, `_revisions` and
    /// `_deleted`, kept as text: the store writes it as it is.
    pub body: Box<RawValue>,
}

/// A pull checkpoint as the store keeps it: the replication id it is
/// stored under and its JSON, encoded once from the caller's typed value
/// (the store does not know its shape; `replicate/` reads it back typed
/// with [`replicate::checkpoint`](crate::replicate::checkpoint)).
#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    replication_id: String,
    json: Vec<u8>,
}

impl CheckpointRecord {
    /// Encodes `checkpoint` to store under `replication_id`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the value cannot be serialized (a map
    /// with non-string keys, a failing `Serialize`): never stored as `null`.
    pub fn new<T: Serialize>(replication_id: &str, checkpoint: &T) -> Result<Self, StoreError> {
        Ok(CheckpointRecord {
            replication_id: replication_id.to_owned(),
            json: tx::encode_json(replication_id.as_bytes(), checkpoint)?,
        })
    }
}

/// Everything one replication batch writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Revisions to merge into their documents' trees.
    pub revs: Vec<IncomingRev>,
    /// Attachment bytes by digest (only those the replica lacks).
    pub attachments: Vec<(String, Bytes)>,
    /// The checkpoint this batch moves to, stored with it.
    pub checkpoint: Option<CheckpointRecord>,
    /// Documents that could not be stored and should be fetched again by
    /// the next pull (see [`Replica::pending_retries`]).
    pub retry_later: Vec<String>,
    /// Documents retried successfully (or gone from the server): off the list.
    /// Applied before `retry_later`, so an id in both stays on the list.
    pub retry_done: Vec<String>,
    /// Preconditions of local edits, checked inside the transaction: each
    /// revision must be a leaf of its document (`None`: the document must
    /// be unknown); otherwise nothing is written and the commit fails with
    /// [`StoreError::Conflict`].
    pub expect_leaves: Vec<(String, Option<Rev>)>,
    /// Preconditions of local edits based on the winner: each revision
    /// must still be its document's winner (`None`: the document must be
    /// unknown); otherwise nothing is written and the commit fails with
    /// [`StoreError::Conflict`].
    pub expect_winners: Vec<(String, Option<Rev>)>,
    /// Outbox entries (document id, revision) appended in the same
    /// transaction, under fresh monotonic keys (`store/local_write.rs`).
    pub outbox: Vec<(String, Rev)>,
    /// A carry-over mark `(source, key)`: this batch carries the writes of
    /// replica `source` up to its outbox key `key` (`sync/carry.rs`),
    /// recorded in the same transaction so a write is carried exactly once.
    pub carried: Option<(String, u64)>,
}

/// What a committed batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOutcome {
    /// Revisions that were new to the replica.
    pub revs_written: u64,
    /// Documents whose tree changed (each got a new local sequence).
    pub docs_changed: u64,
    /// The local update sequence after the batch.
    pub update_seq: u64,
}

/// Largest body kept inside its document's record; a bigger body goes to
/// the body log. The `docs` tree is read at random positions by every
/// commit and every diff, and with ~600-byte cards inline it outgrew sled's
/// 8 MiB cache: a shuffled 100k cold commit then cost 43–45 µs of CPU per
/// document instead of 34–37 (`benches/store_write.rs`, see design.md).
const INLINE_MAX: usize = 256;

/// A revision of the batch with its body's text and, for a body too large
/// for its record, where the commit wrote it in the body log.
struct Arrival<'a> {
    inc: &'a IncomingRev,
    body: &'a [u8],
    logged: Option<Extent>,
}

/// Groups the batch's revisions by document, in id order (records are read
/// and written in key order), refusing the whole batch for a revision
/// without a path or a body that is not an object.
fn group_by_document(revs: &[IncomingRev]) -> Result<BTreeMap<&str, Vec<Arrival<'_>>>, StoreError> {
    let mut grouped: BTreeMap<&str, Vec<Arrival<'_>>> = BTreeMap::new();
    for inc in revs {
        let invalid = |reason: &str| StoreError::InvalidDocument {
            id: inc.id.clone(),
            reason: reason.into(),
        };
        if inc.path.leaf().is_none() {
            return Err(invalid("revision path is empty"));
        }
        if !inc.body.get().starts_with('{') {
            return Err(invalid("the body is not a JSON object"));
        }
        grouped.entry(inc.id.as_str()).or_default().push(Arrival {
            inc,
            body: inc.body.get().as_bytes(),
            logged: None,
        });
    }
    Ok(grouped)
}

/// Writes the bodies too large for their records to the body log, in the
/// order the commit will give their documents sequences (so a scan in
/// sequence order reads the log front to back), and notes each one's
/// extent; the log's end after them.
fn append_large_bodies(
    log: &BodyLog,
    grouped: &mut BTreeMap<&str, Vec<Arrival<'_>>>,
) -> Result<u64, StoreError> {
    let large = |a: &&mut Arrival<'_>| a.body.len() > INLINE_MAX;
    let bodies: Vec<&[u8]> = grouped
        .values_mut()
        .flatten()
        .filter(large)
        .map(|a| a.body)
        .collect();
    let (extents, end) = log.append(&bodies)?;
    for (arrival, extent) in grouped.values_mut().flatten().filter(large).zip(extents) {
        arrival.logged = Some(extent);
    }
    Ok(end)
}

/// The trees one document's merge writes, inside the commit's transaction.
struct DocTx<'a> {
    docs: &'a TransactionalTree,
    bodies: &'a TransactionalTree,
    garbage: &'a TransactionalTree,
    by_seq: &'a TransactionalTree,
    atts: &'a TransactionalTree,
    refs: &'a TransactionalTree,
    staged: &'a TransactionalTree,
    log: &'a BodyLog,
    /// Digests whose bytes the batch brings.
    batch_digests: &'a HashSet<&'a str>,
    revs_limit: usize,
}

impl DocTx<'_> {
    /// Merges one document's arriving revisions into its record: the
    /// number of revisions new to the replica, or `None` when its tree did
    /// not change (nothing written).
    fn merge_document(
        &self,
        id: &str,
        incoming: &[Arrival<'_>],
        counters: &mut Counters,
    ) -> Result<Option<u64>, Abort> {
        let key = id.as_bytes();
        let old = tx::read_record(self.docs, id)?;
        let was = old
            .as_ref()
            .and_then(|r| r.tree.winner())
            .map(|w| w.deleted);
        let old_seq = old.as_ref().map(|r| r.seq);
        let mut record = old.unwrap_or_default();
        let mut arrived = Vec::new();
        for arrival in incoming {
            let inc = arrival.inc;
            let outcome = record.tree.merge(&inc.path, inc.deleted).map_err(|e| {
                abort(StoreError::InvalidDocument {
                    id: inc.id.clone(),
                    reason: e.to_string(),
                })
            })?;
            if outcome != MergeOutcome::AlreadyKnown {
                if let Some(leaf) = inc.path.leaf() {
                    arrived.push((leaf, arrival));
                }
            }
        }
        if arrived.is_empty() {
            return Ok(None);
        }
        let written = arrived.len() as u64;
        record.tree.stem(self.revs_limit);
        let leaves: HashSet<Rev> = record.tree.leaves().into_iter().map(|l| l.rev).collect();
        // Only leaves keep bodies: a revision this batch brought and
        // already superseded stores none.
        arrived.retain(|(rev, _)| leaves.contains(rev));
        // Count the new bodies' stubs before any old body releases its
        // own: bytes both name stay.
        let mut new_bodies = Vec::with_capacity(arrived.len());
        for (rev, arrival) in arrived {
            let stubs = self.count_stubs(arrival.inc, arrival.body)?;
            let body = match arrival.logged {
                Some(at) => BodyRef::Log { at, stubs },
                None => BodyRef::Inline(arrival.body.to_vec()),
            };
            new_bodies.push((rev, body));
        }
        self.keep_leaf_bodies(key, &mut record, &leaves, old_seq, counters)?;
        record.bodies.extend(new_bodies);
        counters.recount(was, record.tree.winner().map(|w| w.deleted))?;
        if let Some(old_seq) = old_seq {
            self.by_seq.remove(&keys::seq_key(old_seq))?;
        }
        record.seq = counters.next_seq()?;
        self.by_seq
            .insert(&keys::seq_key(record.seq), keys::seq_entry(key, &[]))?;
        self.docs.insert(key, record.encode())?;
        Ok(Some(written))
    }

    /// Counts the attachment stubs of a body being stored, and says
    /// whether it has any. Every stub's bytes must be in the batch or
    /// already in the replica: a body is never stored with a stub the
    /// replica cannot serve.
    fn count_stubs(&self, inc: &IncomingRev, body: &[u8]) -> Result<bool, Abort> {
        let invalid = |reason: String| {
            abort(StoreError::InvalidDocument {
                id: inc.id.clone(),
                reason,
            })
        };
        let digests = attachment_refs::stub_digests(body)
            .map_err(|e| invalid(format!("malformed _attachments: {e}")))?;
        for digest in &digests {
            if !self.batch_digests.contains(digest.as_str())
                && self.atts.get(digest.as_bytes())?.is_none()
            {
                return Err(invalid(format!(
                    "attachment {digest} is neither in the batch nor in the replica"
                )));
            }
            tx::claim_attachment(self.refs, self.staged, digest)?;
        }
        Ok(!digests.is_empty())
    }

    /// Keeps the bodies of the record's revisions that are still leaves
    /// and lets go of the others. An inline or logged body that goes
    /// releases its stubs' counts now (its bytes stay in the log, dead,
    /// until a compaction); a format-3 body in `bodies` becomes garbage for
    /// the sweep; a format-3 body in the old sequence entry leaves with
    /// that entry (removed by the caller), or, still a leaf, moves to
    /// `bodies` (the transaction cannot append to the log).
    fn keep_leaf_bodies(
        &self,
        key: &[u8],
        record: &mut DocRecord,
        leaves: &HashSet<Rev>,
        old_seq: Option<u64>,
        counters: &mut Counters,
    ) -> Result<(), Abort> {
        for (rev, body) in std::mem::take(&mut record.bodies) {
            let kept = match body {
                body if !leaves.contains(&rev) => {
                    self.release(key, body, old_seq)?;
                    continue;
                }
                BodyRef::Entry { .. } => {
                    let bytes = logged_body(self.by_seq, key, old_seq)?;
                    let body_id = counters.next_body_id()?;
                    self.bodies.insert(&keys::seq_key(body_id), bytes)?;
                    BodyRef::Tree(body_id)
                }
                body => body,
            };
            record.bodies.insert(rev, kept);
        }
        Ok(())
    }

    /// Lets go of the body of a revision that is no longer a leaf.
    fn release(&self, key: &[u8], body: BodyRef, old_seq: Option<u64>) -> Result<(), Abort> {
        match body {
            BodyRef::Inline(bytes) => self.release_stubs(key, &bytes),
            BodyRef::Log { at, stubs: true } => {
                let bytes = self.log.read(at).map_err(abort)?;
                self.release_stubs(key, &bytes)
            }
            BodyRef::Entry { stubs: true } => {
                let bytes = logged_body(self.by_seq, key, old_seq)?;
                self.release_stubs(key, &bytes)
            }
            BodyRef::Log { stubs: false, .. } | BodyRef::Entry { stubs: false } => Ok(()),
            BodyRef::Tree(body_id) => {
                self.garbage.insert(&keys::seq_key(body_id), &[])?;
                Ok(())
            }
        }
    }

    /// Uncounts the stubs of a body that stops being a leaf's.
    fn release_stubs(&self, key: &[u8], body: &[u8]) -> Result<(), Abort> {
        // The commit that stored this body parsed its stubs; failing now
        // means the disk changed.
        let digests = attachment_refs::stub_digests(body)
            .map_err(|e| abort(StoreError::corrupt("leaf body", key, e)))?;
        for digest in digests {
            tx::release_attachment(self.refs, self.atts, &digest)?;
        }
        Ok(())
    }
}

/// The body a document's old sequence entry carries (format 3).
fn logged_body(
    by_seq: &TransactionalTree,
    key: &[u8],
    old_seq: Option<u64>,
) -> Result<Vec<u8>, Abort> {
    let missing = || {
        abort(StoreError::corrupt(
            "sequence entry",
            key,
            "its body is missing",
        ))
    };
    let old_seq = old_seq.ok_or_else(missing)?;
    let entry = by_seq.get(keys::seq_key(old_seq))?.ok_or_else(missing)?;
    let (_, body) = keys::split_seq_entry(&entry).ok_or_else(missing)?;
    if body.is_empty() {
        return Err(missing());
    }
    Ok(body.to_vec())
}

impl Replica {
    /// Commits a batch: merges every revision into its document's tree,
    /// stores leaf bodies and attachments, moves each changed document to a
    /// new local sequence, updates the counters and stores the checkpoint.
    ///
    /// # Durability
    /// All of it is one sled transaction, flushed to disk before `Ok` is
    /// returned: after `Ok` the whole batch survives a kill -9; a crash
    /// before leaves either all of it or none of it (never a checkpoint
    /// without its documents). After an `Err` the batch may or may not be
    /// durable: never assume it was rolled back; merging it again is safe
    /// because merges are idempotent.
    pub(crate) async fn commit(&self, batch: WriteBatch) -> Result<BatchOutcome, StoreError> {
        let replica = self.clone();
        tokio::task::spawn_blocking(move || replica.commit_blocking(&batch))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))?
    }

    /// [`Replica::commit`] for callers outside an async runtime.
    pub(crate) fn commit_blocking(&self, batch: &WriteBatch) -> Result<BatchOutcome, StoreError> {
        let mut grouped = group_by_document(&batch.revs)?;
        let batch_digests: HashSet<&str> =
            batch.attachments.iter().map(|(d, _)| d.as_str()).collect();
        let revs_limit = self.config().revs_limit;
        let t = self.trees();
        let log = self.body_log();
        let _writer = self.write_lock();
        // The bodies are on disk before any record names them.
        let log_end = append_large_bodies(log, &mut grouped)?;
        let trees = (
            &t.docs,
            &t.bodies,
            &t.garbage,
            &t.by_seq,
            &t.attachments,
            &t.checkpoints,
            &t.meta,
            &t.retry,
            &t.att_refs,
            &t.att_staged,
            &t.outbox,
        );
        let outcome = trees.transaction(
            |(docs, bodies, garbage, by_seq, atts, cps, meta_t, retry, refs, staged, outbox)| {
                for (id, rev) in &batch.expect_leaves {
                    tx::expect(docs, id, rev.as_ref(), Expect::Leaf)?;
                }
                for (id, rev) in &batch.expect_winners {
                    tx::expect(docs, id, rev.as_ref(), Expect::Winner)?;
                }
                let doc_tx = DocTx {
                    docs,
                    bodies,
                    garbage,
                    by_seq,
                    atts,
                    refs,
                    staged,
                    log,
                    batch_digests: &batch_digests,
                    revs_limit,
                };
                let mut counters = Counters::load(meta_t)?;
                let mut out = BatchOutcome::default();
                for (id, incoming) in &grouped {
                    if let Some(written) = doc_tx.merge_document(id, incoming, &mut counters)? {
                        out.revs_written += written;
                        out.docs_changed += 1;
                    }
                }
                for (digest, bytes) in &batch.attachments {
                    if atts.get(digest.as_bytes())?.is_none() {
                        atts.insert(digest.as_bytes(), bytes.as_ref())?;
                    }
                }
                if let Some(cp) = &batch.checkpoint {
                    cps.insert(cp.replication_id.as_bytes(), cp.json.as_slice())?;
                }
                if let Some((source, key)) = &batch.carried {
                    meta_t.insert(meta::carried(source), &key.to_be_bytes())?;
                }
                for id in &batch.retry_done {
                    retry.remove(id.as_bytes())?;
                }
                for id in &batch.retry_later {
                    retry.insert(id.as_bytes(), &[])?;
                }
                tx::enqueue_pushes(outbox, meta_t, &batch.outbox)?;
                if log_end > log.end() {
                    meta_t.insert(meta::BODY_LOG_END, &log_end.to_be_bytes())?;
                }
                counters.save(meta_t)?;
                out.update_seq = counters.seq;
                Ok(out)
            },
        )?;
        log.committed(log_end);
        self.inner.db.flush()?;
        self.notify_committed(outcome.update_seq);
        Ok(outcome)
    }
}

/// Bodies deleted per sweep transaction: small, because each delete pages
/// in a random page of the `bodies` tree and sled keeps every page a
/// transaction touched until it commits.
const SWEEP_BATCH: usize = 64;

impl Replica {
    /// Deletes the bodies of revisions that are no longer leaves, in
    /// transactions of at most 64, and returns how many it deleted, along
    /// with attachment bytes no stored body refers to any more. A pull
    /// calls it when it ends. Reads are safe at any time; a pull running
    /// meanwhile may find bytes it counted on gone and fail its batch with
    /// `InvalidDocument` (nothing is stored; the next pull fetches them), so
    /// sweep when no other pull runs on this replica.
    ///
    /// # Durability
    /// Each transaction removes bodies together with their garbage entries
    /// and their attachment references (and the bytes of the last
    /// reference), and is flushed; a crash leaves the rest for the next sweep. Only
    /// unreferenced bodies are ever listed as garbage, so nothing readable
    /// is lost at any point.
    pub(crate) fn sweep(&self) -> Result<u64, StoreError> {
        let t = self.trees();
        let mut swept = 0;
        loop {
            let ids: Vec<sled::IVec> = t
                .garbage
                .iter()
                .keys()
                .take(SWEEP_BATCH)
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(swept);
            }
            let _writer = self.write_lock();
            (&t.bodies, &t.garbage, &t.att_refs, &t.attachments).transaction(
                |(bodies, garbage, refs, atts)| {
                    for id in &ids {
                        if let Some(body) = bodies.remove(id)? {
                            // The commit that stored this body parsed its
                            // stubs; failing now means the disk changed.
                            let digests = attachment_refs::stub_digests(&body)
                                .map_err(|e| abort(StoreError::corrupt("body", id, e)))?;
                            for digest in digests {
                                tx::release_attachment(refs, atts, &digest)?;
                            }
                        }
                        garbage.remove(id)?;
                    }
                    Ok::<(), Abort>(())
                },
            )?;
            self.inner.db.flush()?;
            swept += ids.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;
    use serde_json::{json, Value};

    fn cp(v: Value) -> Option<CheckpointRecord> {
        Some(CheckpointRecord::new("rep", &v).unwrap())
    }

    fn inc(id: &str, start: u64, ids: &[&str], deleted: bool, body: Value) -> IncomingRev {
        IncomingRev {
            id: id.into(),
            path: RevPath {
                start,
                ids: ids.iter().map(|s| s.to_string()).collect(),
            },
            deleted,
            body: serde_json::value::to_raw_value(&body).unwrap(),
        }
    }

    fn batch(revs: Vec<IncomingRev>) -> WriteBatch {
        WriteBatch {
            revs,
            ..WriteBatch::default()
        }
    }

    #[test]
    fn commits_merge_trees_counts_and_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let out = r
            .commit_blocking(&batch(vec![
                inc("a", 1, &["x"], false, json!({"v": 1})),
                inc("b", 1, &["y"], false, json!({"v": 2})),
            ]))
            .unwrap();
        assert_eq!(
            (out.revs_written, out.docs_changed, out.update_seq),
            (2, 2, 2)
        );
        // Update a, conflict a, delete b, and repeat a known revision.
        let out = r
            .commit_blocking(&batch(vec![
                inc("a", 2, &["x2", "x"], false, json!({"v": 3})),
                inc("a", 2, &["z2", "x"], false, json!({"v": 4})),
                inc("b", 2, &["y2", "y"], true, json!({})),
                inc("b", 1, &["y"], false, json!({"v": 2})),
            ]))
            .unwrap();
        assert_eq!(
            (out.revs_written, out.docs_changed, out.update_seq),
            (3, 2, 4)
        );
        let a = r.get("a").unwrap().unwrap();
        assert_eq!(a.rev.to_string(), "2-z2");
        assert_eq!(a.body["v"], 4);
        assert_eq!(a.conflicts, vec!["2-x2".parse().unwrap()]);
        assert!(
            r.get_rev("a", &"1-x".parse().unwrap()).unwrap().is_none(),
            "ancestor bodies are dropped"
        );
        assert_eq!(
            r.sweep().unwrap(),
            0,
            "the bodies of 1-x and 1-y were inline: they left with their records"
        );
        assert_eq!(
            r.get("a").unwrap().unwrap().body["v"],
            4,
            "leaves keep their bodies"
        );
        assert!(r.get("b").unwrap().unwrap().deleted);
        assert_eq!((r.doc_count().unwrap(), r.deleted_count().unwrap()), (1, 1));
        let changes: Vec<_> = r
            .changes(0)
            .map(|c| c.unwrap())
            .map(|c| (c.seq, c.doc.id))
            .collect();
        assert_eq!(changes, vec![(3, "a".to_string()), (4, "b".to_string())]);
        assert_eq!(r.changes(3).count(), 1);
        let all: Vec<_> = r.all_docs(..).map(|d| d.unwrap().id).collect();
        assert_eq!(all, vec!["a"]);
        // a's leaves keep their bodies in the record; extending one branch
        // drops its old leaf's body.
        r.commit_blocking(&batch(vec![inc(
            "a",
            3,
            &["x3", "x2", "x"],
            false,
            json!({"v": 5}),
        )]))
        .unwrap();
        assert_eq!(
            r.sweep().unwrap(),
            0,
            "the body of 2-x2 left with the record that named it"
        );
        assert_eq!(r.get("a").unwrap().unwrap().body["v"], 5);
        assert_eq!(
            r.get_rev("a", &"2-z2".parse().unwrap())
                .unwrap()
                .unwrap()
                .body["v"],
            4
        );
    }

    #[test]
    fn a_batch_and_its_checkpoint_survive_reopen_together() {
        let dir = tempfile::tempdir().unwrap();
        {
            let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
            let mut b = batch(vec![inc("a", 1, &["x"], false, json!({"v": 1}))]);
            b.checkpoint = cp(json!({"last_seq": "7-abc"}));
            b.attachments
                .push(("md5-x".into(), Bytes::from_static(b"hello")));
            r.commit_blocking(&b).unwrap();
        }
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert_eq!(
            r.stored_checkpoint::<Value>("rep").unwrap(),
            Some(json!({"last_seq": "7-abc"}))
        );
        assert_eq!(
            r.attachment("md5-x").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(r.doc_count().unwrap(), 1);
    }

    /// Commits `a` (valid) with `bad` and a checkpoint: the batch must be
    /// refused whole, leaving neither `a` nor the checkpoint behind.
    fn refused_with_its_batch(bad: IncomingRev) -> StoreError {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let mut b = batch(vec![inc("a", 1, &["x"], false, json!({})), bad]);
        b.checkpoint = cp(json!(1));
        let err = r.commit_blocking(&b).unwrap_err();
        assert!(matches!(err, StoreError::InvalidDocument { .. }), "{err:?}");
        assert!(r.get("a").unwrap().is_none());
        assert!(r.stored_checkpoint::<Value>("rep").unwrap().is_none());
        err
    }

    #[test]
    fn the_retry_list_reads_a_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let mut b = batch(Vec::new());
        b.retry_later = vec!["c".into(), "a".into(), "b d".into()];
        r.commit_blocking(&b).unwrap();
        assert_eq!(r.pending_retries_after(None, 2).unwrap(), vec!["a", "b d"]);
        assert_eq!(r.pending_retries_after(Some("b d"), 2).unwrap(), vec!["c"]);
        assert!(r.pending_retries_after(Some("c"), 2).unwrap().is_empty());
        let mut done = batch(Vec::new());
        done.retry_done = vec!["a".into(), "c".into()];
        done.retry_later = vec!["c".into()];
        r.commit_blocking(&done).unwrap();
        assert_eq!(r.pending_retries().unwrap(), vec!["b d", "c"]);
    }

    #[test]
    fn invalid_revision_path_aborts_the_whole_batch() {
        refused_with_its_batch(inc("b", 1, &["y", "too-long"], false, json!({})));
    }

    fn with_att(digest: &str, v: u64) -> Value {
        json!({"v": v, "_attachments": {"f.txt": {
            "content_type": "text/plain", "digest": digest, "length": 5, "revpos": 1, "stub": true
        }}})
    }

    #[test]
    fn attachment_bytes_live_as_long_as_a_stored_body_refers_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let mut b = batch(vec![
            inc("a", 1, &["a1"], false, with_att("md5-S", 1)),
            inc("b", 1, &["b1"], false, with_att("md5-S", 2)),
            inc("c", 1, &["c1"], false, with_att("md5-C", 3)),
        ]);
        b.attachments = vec![
            ("md5-S".into(), Bytes::from_static(b"share")),
            ("md5-C".into(), Bytes::from_static(b"cccc!")),
        ];
        r.commit_blocking(&b).unwrap();
        // a drops its attachment; c keeps the same one in a new revision.
        r.commit_blocking(&batch(vec![
            inc("a", 2, &["a2", "a1"], false, json!({"v": 4})),
            inc("c", 2, &["c2", "c1"], false, with_att("md5-C", 5)),
        ]))
        .unwrap();
        assert_eq!(r.sweep().unwrap(), 0, "a and c kept their bodies inline");
        assert!(r.has_attachment("md5-S").unwrap(), "b still refers to it");
        assert!(r.has_attachment("md5-C").unwrap(), "c2 refers to it");
        // b is deleted: the last stub of md5-S leaves with its inline body.
        r.commit_blocking(&batch(vec![inc("b", 2, &["b2", "b1"], true, json!({}))]))
            .unwrap();
        assert!(!r.has_attachment("md5-S").unwrap());
        assert!(r.has_attachment("md5-C").unwrap());
        assert_eq!(r.trees().att_refs.len(), 1);
        // The bytes survive a reopen with their count.
        drop(r);
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert!(r.has_attachment("md5-C").unwrap());
        // A conflict: c's two leaves keep their bodies, each counted once.
        r.commit_blocking(&batch(vec![inc(
            "c",
            2,
            &["c2b", "c1"],
            false,
            with_att("md5-C", 6),
        )]))
        .unwrap();
        assert_eq!(r.sweep().unwrap(), 0);
        assert_eq!(r.trees().att_refs.len(), 1);
        // One branch drops the attachment, then the other: the bytes go
        // with the last body that names them.
        r.commit_blocking(&batch(vec![inc("c", 3, &["c3", "c2"], false, json!({}))]))
            .unwrap();
        assert!(r.has_attachment("md5-C").unwrap(), "c2b still names it");
        r.commit_blocking(&batch(vec![inc("c", 3, &["c3b", "c2b"], false, json!({}))]))
            .unwrap();
        assert!(!r.has_attachment("md5-C").unwrap());
        assert_eq!(r.sweep().unwrap(), 0);
        assert!(r.trees().att_refs.is_empty());
    }

    /// Bodies over `INLINE_MAX` go to the body log, and stay there when
    /// their document gets a conflict; nothing goes to `bodies`.
    #[test]
    fn large_bodies_live_in_the_body_log() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let big = |v: u64, att: Option<&str>| {
            let mut b = json!({"v": v, "text": "t".repeat(INLINE_MAX)});
            if let Some(d) = att {
                b["_attachments"] = with_att(d, v)["_attachments"].clone();
            }
            b
        };
        let mut b = batch(vec![
            inc("a", 1, &["a1"], false, big(1, Some("md5-A"))),
            inc("b", 1, &["b1"], false, big(2, None)),
        ]);
        b.attachments = vec![("md5-A".into(), Bytes::from_static(b"aaaaa"))];
        r.commit_blocking(&b).unwrap();
        assert!(r.trees().bodies.is_empty(), "no body went to `bodies`");
        assert!(r.body_log().end() > 2 * INLINE_MAX as u64);
        assert_eq!(r.get("a").unwrap().unwrap().body["v"], 1);
        // a's update drops the attachment: its old body's count goes with
        // the old record, nothing to sweep. b gets a conflict.
        r.commit_blocking(&batch(vec![
            inc("a", 2, &["a2", "a1"], false, big(3, None)),
            inc("b", 2, &["b2", "b1"], false, big(4, None)),
            inc("b", 2, &["b2x", "b1"], false, big(5, None)),
        ]))
        .unwrap();
        assert!(!r.has_attachment("md5-A").unwrap());
        assert!(r.trees().att_refs.is_empty());
        assert_eq!(r.sweep().unwrap(), 0);
        assert!(r.trees().bodies.is_empty());
        assert_eq!(r.get("a").unwrap().unwrap().body["v"], 3);
        let b_doc = r.get("b").unwrap().unwrap();
        assert_eq!(b_doc.rev.to_string(), "2-b2x");
        assert_eq!(b_doc.body["v"], 5);
        assert_eq!(
            r.get_rev("b", &"2-b2".parse().unwrap())
                .unwrap()
                .unwrap()
                .body["v"],
            4
        );
        assert_eq!(r.changes(0).count(), 2);
        // A single-leaf body that becomes one of two leaves stays where it
        // is, and so does its attachment count until it is no leaf.
        let mut c = batch(vec![inc("c", 1, &["c1"], false, big(6, Some("md5-C")))]);
        c.attachments = vec![("md5-C".into(), Bytes::from_static(b"cccc!"))];
        r.commit_blocking(&c).unwrap();
        r.commit_blocking(&batch(vec![inc(
            "c",
            2,
            &["c2", "c1"],
            false,
            big(7, None),
        )]))
        .unwrap();
        r.commit_blocking(&batch(vec![inc(
            "c",
            2,
            &["c2x", "c1"],
            false,
            big(8, None),
        )]))
        .unwrap();
        assert!(
            !r.has_attachment("md5-C").unwrap(),
            "c1 is no leaf any more"
        );
        let leaves = r.leaves("c").unwrap();
        assert_eq!(leaves.len(), 2);
        for leaf in leaves {
            assert!(r.get_rev("c", &leaf.rev).unwrap().is_some(), "{}", leaf.rev);
        }
        drop(r);
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert_eq!(r.get("a").unwrap().unwrap().body["v"], 3);
    }

    #[test]
    fn staged_bytes_outlive_a_reopen_only_when_a_commit_claimed_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
            r.stage_attachment("md5-A", b"aaaaa").unwrap();
            r.stage_attachment("md5-B", b"bbbbb").unwrap();
            assert!(r.has_attachment("md5-B").unwrap());
            // Only md5-A's batch commits; md5-B's never does (a crash).
            r.commit_blocking(&batch(vec![inc(
                "a",
                1,
                &["x"],
                false,
                with_att("md5-A", 1),
            )]))
            .unwrap();
            assert_eq!(r.trees().att_staged.len(), 1);
        }
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert_eq!(
            r.attachment("md5-A").unwrap().as_deref(),
            Some(&b"aaaaa"[..])
        );
        assert!(
            !r.has_attachment("md5-B").unwrap(),
            "unclaimed bytes are gone"
        );
        assert!(r.trees().att_staged.is_empty());
        // Staging bytes the replica holds changes nothing.
        r.stage_attachment("md5-A", b"aaaaa").unwrap();
        assert!(r.trees().att_staged.is_empty());
    }

    #[test]
    fn a_stub_without_bytes_is_refused_with_the_whole_batch() {
        let err = refused_with_its_batch(inc("b", 1, &["y"], false, with_att("md5-missing", 1)));
        assert!(err.to_string().contains("md5-missing"), "{err}");
    }

    /// Review bug: counters were computed as `i64` and clamped at 0, so a
    /// counter that had drifted below its records went unnoticed. A commit
    /// that would take a counter below zero must report the damage.
    #[test]
    fn a_counter_below_its_records_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        r.commit_blocking(&batch(vec![inc("a", 1, &["x"], false, json!({}))]))
            .unwrap();
        // Damage: the live counter forgets `a`.
        r.trees()
            .meta
            .insert(meta::DOC_COUNT, &0u64.to_be_bytes())
            .unwrap();
        let mut b = batch(vec![inc("a", 2, &["y", "x"], true, json!({}))]);
        b.checkpoint = cp(json!(1));
        let err = r.commit_blocking(&b).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    what: "counter",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            r.stored_checkpoint::<Value>("rep").unwrap().is_none(),
            "nothing committed"
        );
        assert!(!r.get("a").unwrap().unwrap().deleted);
    }

    /// A replica migrated from format 3 keeps its bodies where format 3
    /// put them (`bodies`, sequence entries) until their documents change;
    /// format 4's commits then let go of them, or move a sequence-entry
    /// body that stays a leaf, with every count right.
    #[test]
    fn format_3_bodies_are_released_or_moved_by_format_4_commits() {
        use crate::revtree::RevTree;
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let t = r.trees();
        let tree = |paths: &[(u64, &[&str])]| {
            let mut tree = RevTree::default();
            for (start, ids) in paths {
                let path = RevPath {
                    start: *start,
                    ids: ids.iter().map(|s| s.to_string()).collect(),
                };
                tree.merge(&path, false).unwrap();
            }
            tree
        };
        let rev = |s: &str| s.parse::<Rev>().unwrap();
        let body_e = serde_json::to_vec(&with_att("md5-E", 1)).unwrap();
        // "e": one leaf, its body (with a stub) in its sequence entry.
        let e = DocRecord {
            tree: tree(&[(1, &["e1"])]),
            seq: 1,
            bodies: BTreeMap::from([(rev("1-e1"), BodyRef::Entry { stubs: true })]),
        };
        // "t": two leaves, their bodies in `bodies`.
        let t_rec = DocRecord {
            tree: tree(&[(2, &["ta", "t1"]), (2, &["tb", "t1"])]),
            seq: 2,
            bodies: BTreeMap::from([
                (rev("2-ta"), BodyRef::Tree(1)),
                (rev("2-tb"), BodyRef::Tree(2)),
            ]),
        };
        t.docs.insert("e", e.encode()).unwrap();
        t.docs.insert("t", t_rec.encode()).unwrap();
        t.by_seq
            .insert(keys::seq_key(1), keys::seq_entry(b"e", &body_e))
            .unwrap();
        t.by_seq
            .insert(keys::seq_key(2), keys::seq_entry(b"t", &[]))
            .unwrap();
        t.bodies
            .insert(keys::seq_key(1), &br#"{"v":"a"}"#[..])
            .unwrap();
        t.bodies
            .insert(keys::seq_key(2), &br#"{"v":"b"}"#[..])
            .unwrap();
        t.attachments.insert("md5-E", &b"eeeee"[..]).unwrap();
        t.att_refs.insert("md5-E", &1u64.to_be_bytes()).unwrap();
        for (k, v) in [(meta::SEQ, 2u64), (meta::DOC_COUNT, 2), (meta::BODY_ID, 2)] {
            t.meta.insert(k, &v.to_be_bytes()).unwrap();
        }
        let report = r.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.violations);
        assert_eq!(r.get("e").unwrap().unwrap().body["v"], 1);

        // e gets a conflicting root: 1-e1 stays a leaf, and its body moves
        // out of the sequence entry the commit replaces. t's branch `ta`
        // grows: its old body becomes garbage.
        r.commit_blocking(&batch(vec![
            inc("e", 1, &["e2"], false, json!({"v": 2})),
            inc("t", 3, &["ta3", "ta", "t1"], false, json!({"v": "c"})),
        ]))
        .unwrap();
        let e1 = r.get_rev("e", &rev("1-e1")).unwrap().unwrap();
        assert_eq!(e1.body["v"], 1);
        assert!(r.has_attachment("md5-E").unwrap());
        assert_eq!(r.trees().bodies.len(), 3, "e1's body moved to `bodies`");
        let report = r.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.violations);
        assert_eq!(r.sweep().unwrap(), 1, "the body of 2-ta");
        // e1 is superseded: its stub's count goes, and the bytes with it.
        r.commit_blocking(&batch(vec![inc("e", 2, &["e1b", "e1"], true, json!({}))]))
            .unwrap();
        assert_eq!(r.sweep().unwrap(), 1, "e1's body, moved to `bodies`");
        assert!(!r.has_attachment("md5-E").unwrap());
        drop(r);
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let report = r.check().unwrap();
        assert!(report.is_ok(), "{:?}", report.violations);
        assert_eq!(r.get("t").unwrap().unwrap().body["v"], "c");
        assert_eq!(
            r.get_rev("t", &rev("2-tb")).unwrap().unwrap().body["v"],
            "b"
        );
    }
}
