//! `Replica::check`: verifies the invariants of `docs/design.md` on the
//! data as it is on disk, and lists every violation it finds.
//!
//! It recomputes what the write paths maintain (counters, the sequence
//! index, attachment reference counts) from the records and bodies, and
//! compares. It reads every tree once, holding per-digest counts and the
//! set of named body ids in memory (a few dozen bytes per body).
//!
//! It must not write: a damaged replica is reported, never repaired here.
//! (Opening the replica, which a check needs, does what every open does:
//! it deletes staged attachment bytes that no commit claimed.)
//! Run it on a replica no pull is writing to (sled isolates transactions
//! from each other, not from plain reads, so a commit landing mid-check
//! can show as a violation).

use super::attachment_refs::stub_digests;
use super::document::{BodyRef, DocRecord, Extent};
use super::error::StoreError;
use super::keys::{self, decode_u64};
use super::nesting;
use super::open::FORMAT_VERSION;
use super::replica::Replica;
use crate::revtree::{Leaf, Rev};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One invariant that does not hold, at one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Violation {
    /// Which invariant (short name, as in `docs/design.md`): `records`,
    /// `by_seq`, `winner`, `leaf_body`, `garbage`, `stub_bytes`, `att_refs`,
    /// `counters`, `checkpoint`, `retry`, `meta`.
    pub invariant: &'static str,
    /// The tree and key it was found at, e.g. `docs/c-000001`.
    pub key: String,
    /// What is wrong.
    pub detail: String,
}

/// What [`Replica::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// Documents checked.
    pub docs: u64,
    /// Leaf bodies checked.
    pub bodies: u64,
    /// Attachment digests checked.
    pub attachments: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Every violation found (empty: the replica is consistent).
    pub violations: Vec<Violation>,
}

impl CheckReport {
    /// True when every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, invariant: &'static str, key: String, detail: impl ToString) {
        self.violations.push(Violation {
            invariant,
            key,
            detail: detail.to_string(),
        });
    }

    /// Counts a stored leaf body and checks that it reads back.
    fn check_body(&mut self, key: &str, rev: &Rev, body: &[u8]) {
        self.bodies += 1;
        if let Err(e) = nesting::parse_body(body) {
            self.violation(
                "leaf_body",
                key.to_owned(),
                format!("the body of {rev} is not a JSON object: {e}"),
            );
        }
    }
}

impl Replica {
    /// Checks the replica's invariants (`docs/design.md`): every record
    /// decodes and its revision tree is well formed; the sequence index and
    /// the records agree one to one, and `meta/seq` is not behind; every
    /// winner is a leaf and every leaf, and only a leaf, has its body; no
    /// record names a garbage body; every stub's bytes are there; the
    /// `att_refs` counts equal the stubs of the stored bodies; the document
    /// counters match the winners; each checkpoint decodes and is not ahead
    /// of the data as far as the replica can tell (a checkpoint implies a
    /// bound remote); the retry list holds document ids.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let replica = settee::Replica::open(dir.path(), Default::default()).unwrap();
    /// let report = replica.check().unwrap();
    /// assert!(report.is_ok(), "{:?}", report.violations);
    /// ```
    ///
    /// # Errors
    /// Only when the storage itself fails to read
    /// ([`StoreError::Storage`]); damaged data is a violation, not an error.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut r = CheckReport::default();
        let mut tally = Tally::default();
        self.check_records(&mut r, &mut tally)?;
        self.check_bodies(&mut r, &mut tally.stub_counts, &tally.named_bodies)?;
        self.check_garbage(&mut r)?;
        self.check_stubs_have_bytes(&mut r, &tally.stub_counts)?;
        self.check_att_refs(&mut r, &tally.stub_counts)?;
        self.check_attachment_bytes(&mut r)?;
        self.check_by_seq(&mut r, &tally.record_seqs)?;
        self.check_counters(&mut r, tally.live, tally.deleted);
        self.check_checkpoints(&mut r)?;
        self.check_retry(&mut r)?;
        self.check_format(&mut r)?;
        Ok(r)
    }

    /// Every record, one at a time (see [`Replica::check_record`]).
    fn check_records(&self, r: &mut CheckReport, tally: &mut Tally) -> Result<(), StoreError> {
        for item in self.trees().docs.iter() {
            let (k, v) = item?;
            self.check_record(r, tally, &k, &v)?;
        }
        Ok(())
    }

    /// One record: it decodes, its tree is well formed, it owns its
    /// sequence, and each leaf, and only a leaf, has a body.
    fn check_record(
        &self,
        r: &mut CheckReport,
        tally: &mut Tally,
        k: &[u8],
        v: &[u8],
    ) -> Result<(), StoreError> {
        r.docs += 1;
        let key = format!("docs/{}", String::from_utf8_lossy(k));
        let Some((id, record)) = decode_record(r, &key, k, v) else {
            return Ok(());
        };
        let leaves = record.tree.leaves();
        let Some(winner) = leaves.first() else {
            r.violation("winner", key, "the revision tree has no leaf");
            return Ok(());
        };
        check_tree_shape(r, &key, &record, &leaves);
        if winner.deleted {
            tally.deleted += 1;
        } else {
            tally.live += 1;
        }
        // A leaf's body lives in the record, the body log, `bodies` or
        // the record's `by_seq` entry (`document::BodyRef`).
        let has_body = |rev: &Rev| record.body_at(rev).is_some();
        if !has_body(&winner.rev) {
            r.violation(
                "winner",
                key.clone(),
                format!("winner {} has no body", winner.rev),
            );
        }
        if let Some(other) = tally.record_seqs.insert(record.seq, id.to_owned()) {
            r.violation(
                "by_seq",
                key.clone(),
                format!("shares sequence {} with {other:?}", record.seq),
            );
        }
        let leaf_revs: HashSet<&Rev> = leaves.iter().map(|l| &l.rev).collect();
        for (rev, body) in &record.bodies {
            if !leaf_revs.contains(rev) {
                r.violation(
                    "leaf_body",
                    key.clone(),
                    format!("names a body for {rev}, which is not a leaf"),
                );
            }
            self.check_leaf_body(r, tally, &key, &record, rev, body)?;
        }
        for leaf in &leaves {
            if !has_body(&leaf.rev) {
                r.violation(
                    "leaf_body",
                    key.clone(),
                    format!("leaf {} has no body", leaf.rev),
                );
            }
        }
        Ok(())
    }

    /// One leaf's body: there and readable. A body in `bodies` is not
    /// garbage (its stubs are counted by [`Replica::check_bodies`]); one in
    /// the body log lies below the log's committed end and says whether it
    /// has stubs; one in the sequence entry is its document's only.
    fn check_leaf_body(
        &self,
        r: &mut CheckReport,
        tally: &mut Tally,
        key: &str,
        record: &DocRecord,
        rev: &Rev,
        body: &BodyRef,
    ) -> Result<(), StoreError> {
        let t = self.trees();
        let kept = match body {
            BodyRef::Tree(body_id) => {
                tally.named_bodies.insert(*body_id);
                if t.garbage.contains_key(keys::seq_key(*body_id))? {
                    r.violation(
                        "garbage",
                        key.to_owned(),
                        format!("names body #{body_id}, which is listed as garbage"),
                    );
                }
                match t.bodies.get(keys::seq_key(*body_id))? {
                    Some(body) => r.check_body(key, rev, &body),
                    None => r.violation(
                        "leaf_body",
                        key.to_owned(),
                        format!("the body of {rev} (#{body_id}) is missing"),
                    ),
                }
                return Ok(());
            }
            BodyRef::Inline(bytes) => Ok(bytes.clone()),
            BodyRef::Log { at, stubs } => self.logged_body(r, key, rev, *at, *stubs),
            BodyRef::Entry { .. } => {
                if record.bodies.len() != 1 {
                    r.violation(
                        "leaf_body",
                        key.to_owned(),
                        format!(
                            "keeps the body of {rev} in its sequence entry beside other leaves"
                        ),
                    );
                }
                let entry = t.by_seq.get(keys::seq_key(record.seq))?;
                entry
                    .as_deref()
                    .and_then(keys::split_seq_entry)
                    .map(|(_, body)| body.to_vec())
                    .filter(|body| !body.is_empty())
                    .ok_or_else(|| format!("the body of {rev} is missing from its sequence entry"))
            }
        };
        match kept {
            Ok(body) => {
                r.check_body(key, rev, &body);
                count_stubs(r, &mut tally.stub_counts, key.to_owned(), &body);
            }
            Err(detail) => r.violation("leaf_body", key.to_owned(), detail),
        }
        Ok(())
    }

    /// A leaf's body in the body log: below the committed end, readable,
    /// and with no stubs its record does not mention (their counts would
    /// never be released).
    fn logged_body(
        &self,
        r: &mut CheckReport,
        key: &str,
        rev: &Rev,
        at: Extent,
        stubs: bool,
    ) -> Result<Vec<u8>, String> {
        let end = self.body_log().end();
        if at.offset.checked_add(at.len).is_none_or(|last| last > end) {
            return Err(format!(
                "the body of {rev} is said to be at {}..+{} of the body log, past its end {end}",
                at.offset, at.len
            ));
        }
        let bytes = self
            .body_log()
            .read(at)
            .map_err(|e| format!("the body of {rev}: {e}"))?;
        let has_stubs = stub_digests(&bytes).map_or(true, |d| !d.is_empty());
        if has_stubs && !stubs {
            r.violation(
                "stub_bytes",
                key.to_owned(),
                format!("the body of {rev} has stubs its record does not mention"),
            );
        }
        Ok(bytes)
    }

    /// Bodies: every one is named by a record or listed as garbage, and
    /// every stub in them (garbage included, until swept) is counted.
    fn check_bodies(
        &self,
        r: &mut CheckReport,
        stub_counts: &mut HashMap<String, u64>,
        named_bodies: &HashSet<u64>,
    ) -> Result<(), StoreError> {
        let t = self.trees();
        let max_body_id = self.meta_u64(keys::meta::BODY_ID).unwrap_or(u64::MAX);
        for item in t.bodies.iter() {
            let (k, v) = item?;
            let key = format!("bodies/{}", hex(&k));
            let Some(body_id) = keys::seq_from_key(&k) else {
                r.violation("leaf_body", key, "the key is not 8 bytes");
                continue;
            };
            if body_id > max_body_id {
                r.violation(
                    "meta",
                    key.clone(),
                    format!("body #{body_id} is beyond meta/body_id {max_body_id}"),
                );
            }
            if !named_bodies.contains(&body_id) && !t.garbage.contains_key(&k)? {
                r.violation(
                    "garbage",
                    key.clone(),
                    "no record names this body and it is not listed as garbage",
                );
            }
            count_stubs(r, stub_counts, key, &v);
        }
        Ok(())
    }

    /// The garbage list names bodies that exist.
    fn check_garbage(&self, r: &mut CheckReport) -> Result<(), StoreError> {
        let t = self.trees();
        for item in t.garbage.iter() {
            let (k, _) = item?;
            if let Some(id) = keys::seq_from_key(&k) {
                if !t.bodies.contains_key(&k)? {
                    r.violation(
                        "garbage",
                        format!("garbage/{}", hex(&k)),
                        format!("lists body #{id}, which does not exist"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Attachments, 1/3: every stub's bytes are there.
    fn check_stubs_have_bytes(
        &self,
        r: &mut CheckReport,
        stub_counts: &HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        for (digest, n) in stub_counts {
            if !self.trees().attachments.contains_key(digest.as_bytes())? {
                r.violation(
                    "stub_bytes",
                    format!("attachments/{digest}"),
                    format!("{n} stub(s) name these bytes, which are missing"),
                );
            }
        }
        Ok(())
    }

    /// Attachments, 3/3: no bytes without a count (staged marks are
    /// cleared by `open`), and a large attachment's file is whole.
    fn check_attachment_bytes(&self, r: &mut CheckReport) -> Result<(), StoreError> {
        let t = self.trees();
        for item in t.attachments.iter() {
            let (k, v) = item?;
            r.attachments += 1;
            if !t.att_refs.contains_key(&k)? && !t.att_staged.contains_key(&k)? {
                r.violation(
                    "att_refs",
                    format!("attachments/{}", String::from_utf8_lossy(&k)),
                    "bytes no stored body names",
                );
            }
            // A large attachment's bytes are in a file (`attachment_stream.rs`).
            if v.is_empty() {
                let digest = String::from_utf8_lossy(&k).into_owned();
                if let Err(e) = self.check_chunks(&digest) {
                    r.violation("stub_bytes", format!("attachment_file/{digest}"), e);
                }
            }
        }
        Ok(())
    }

    /// Attachments, 2/3: the `att_refs` counts equal the stubs, both ways.
    fn check_att_refs(
        &self,
        r: &mut CheckReport,
        stub_counts: &HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let t = self.trees();
        for item in t.att_refs.iter() {
            let (k, v) = item?;
            let digest = String::from_utf8_lossy(&k).into_owned();
            let key = format!("att_refs/{digest}");
            let counted = match decode_u64(&k, &v) {
                Ok(n) => n,
                Err(e) => {
                    r.violation("att_refs", key, e);
                    continue;
                }
            };
            let stubs = stub_counts.get(&digest).copied().unwrap_or(0);
            if counted != stubs {
                r.violation(
                    "att_refs",
                    key,
                    format!("counts {counted}, the stored bodies hold {stubs} stub(s)"),
                );
            }
        }
        for digest in stub_counts.keys() {
            if !t.att_refs.contains_key(digest.as_bytes())? {
                r.violation(
                    "att_refs",
                    format!("att_refs/{digest}"),
                    "stored bodies name these bytes, but nothing counts them",
                );
            }
        }
        Ok(())
    }

    /// The sequence index against the records, and `meta/seq` not behind
    /// either.
    fn check_by_seq(
        &self,
        r: &mut CheckReport,
        record_seqs: &BTreeMap<u64, String>,
    ) -> Result<(), StoreError> {
        let mut by_seq_len = 0u64;
        let mut max_seq = 0u64;
        for item in self.trees().by_seq.iter() {
            let (k, v) = item?;
            by_seq_len += 1;
            let key = format!("by_seq/{}", hex(&k));
            let Some(seq) = keys::seq_from_key(&k) else {
                r.violation("by_seq", key, "the key is not 8 bytes");
                continue;
            };
            max_seq = max_seq.max(seq);
            check_seq_entry(r, record_seqs, key, seq, &v);
        }
        if by_seq_len != r.docs {
            r.violation(
                "by_seq",
                "by_seq".into(),
                format!("{by_seq_len} entries for {} documents", r.docs),
            );
        }
        let seq = self.meta_u64(keys::meta::SEQ)?;
        let highest = record_seqs.keys().next_back().copied().unwrap_or(0);
        if seq < highest.max(max_seq) {
            r.violation(
                "meta",
                "meta/seq".into(),
                format!("{seq}, behind sequence {}", highest.max(max_seq)),
            );
        }
        Ok(())
    }

    /// The document counters against the winners.
    fn check_counters(&self, r: &mut CheckReport, live: u64, deleted: u64) {
        for (name, key, want) in [
            ("doc_count", keys::meta::DOC_COUNT, live),
            ("doc_del_count", keys::meta::DEL_COUNT, deleted),
        ] {
            match self.meta_u64(key) {
                Ok(got) if got == want => {}
                Ok(got) => r.violation(
                    "counters",
                    format!("meta/{name}"),
                    format!("{got}, but {want} documents"),
                ),
                Err(e) => r.violation("counters", format!("meta/{name}"), e),
            }
        }
    }

    /// Checkpoints: decodable, and only for a replica bound to a remote.
    fn check_checkpoints(&self, r: &mut CheckReport) -> Result<(), StoreError> {
        let t = self.trees();
        let bound = t.meta.contains_key(keys::meta::REMOTE)?;
        for item in t.checkpoints.iter() {
            let (k, v) = item?;
            r.checkpoints += 1;
            let key = format!("checkpoints/{}", String::from_utf8_lossy(&k));
            // The push checkpoint counts outbox keys, not remote sequences.
            let field = if *k == *super::outbox::PUSH_CHECKPOINT {
                "last_key"
            } else {
                "last_seq"
            };
            match serde_json::from_slice::<serde_json::Value>(&v) {
                Ok(cp) if cp.get(field).is_some() => {}
                Ok(_) => r.violation("checkpoint", key.clone(), format!("no {field}")),
                Err(e) => r.violation("checkpoint", key.clone(), e),
            }
            if !bound {
                r.violation(
                    "checkpoint",
                    key,
                    "a checkpoint in a replica bound to no remote",
                );
            }
        }
        Ok(())
    }

    /// The retry list: document ids.
    fn check_retry(&self, r: &mut CheckReport) -> Result<(), StoreError> {
        for item in self.trees().retry.iter() {
            let (k, _) = item?;
            if k.is_empty() || std::str::from_utf8(&k).is_err() {
                r.violation(
                    "retry",
                    format!("retry/{}", hex(&k)),
                    "not a document id (empty or not UTF-8)",
                );
            }
        }
        Ok(())
    }

    /// `meta/format` is this format.
    fn check_format(&self, r: &mut CheckReport) -> Result<(), StoreError> {
        match self.trees().meta.get(keys::meta::FORMAT)? {
            Some(v) if decode_u64(keys::meta::FORMAT, &v).ok() == Some(FORMAT_VERSION) => {}
            _ => r.violation("meta", "meta/format".into(), "missing or not this format"),
        }
        Ok(())
    }
}

/// What the pass over the records learns, for the passes over the other
/// trees to compare with.
#[derive(Default)]
struct Tally {
    /// Body ids some record names.
    named_bodies: HashSet<u64>,
    /// Stubs per attachment digest, over every body checked so far.
    stub_counts: HashMap<String, u64>,
    /// Each record's sequence and document id.
    record_seqs: BTreeMap<u64, String>,
    /// Documents whose winner is live.
    live: u64,
    /// Documents whose winner is a tombstone.
    deleted: u64,
}

/// The record's id and the record, or `None` (with its violation).
fn decode_record<'k>(
    r: &mut CheckReport,
    key: &str,
    k: &'k [u8],
    v: &[u8],
) -> Option<(&'k str, DocRecord)> {
    let Ok(id) = std::str::from_utf8(k) else {
        r.violation("records", key.to_owned(), "the id is not UTF-8");
        return None;
    };
    match DocRecord::decode(k, v) {
        Ok(record) => Some((id, record)),
        Err(e) => {
            r.violation("records", key.to_owned(), e);
            None
        }
    }
}

/// Every leaf has a valid path from a root, and no revision appears twice.
fn check_tree_shape(r: &mut CheckReport, key: &str, record: &DocRecord, leaves: &[Leaf]) {
    for leaf in leaves {
        match record.tree.path_to(&leaf.rev) {
            Some(path) => {
                if let Err(e) = path.validate() {
                    r.violation("records", key.to_owned(), format!("{}: {e}", leaf.rev));
                }
            }
            None => r.violation(
                "records",
                key.to_owned(),
                format!("leaf {} has no path", leaf.rev),
            ),
        }
    }
    let revs: Vec<_> = record.tree.revs().collect();
    if revs.iter().collect::<HashSet<_>>().len() != revs.len() {
        r.violation("records", key.to_owned(), "a revision appears twice");
    }
}

/// Adds a body's attachment stubs to `stub_counts`.
fn count_stubs(
    r: &mut CheckReport,
    stub_counts: &mut HashMap<String, u64>,
    key: String,
    body: &[u8],
) {
    match stub_digests(body) {
        Ok(digests) => {
            for d in digests {
                *stub_counts.entry(d).or_default() += 1;
            }
        }
        Err(e) => r.violation("stub_bytes", key, format!("unreadable stubs: {e}")),
    }
}

/// One `by_seq` entry names the document whose record is at its sequence.
fn check_seq_entry(
    r: &mut CheckReport,
    record_seqs: &BTreeMap<u64, String>,
    key: String,
    seq: u64,
    entry: &[u8],
) {
    let Some((id, _)) = keys::split_seq_entry(entry) else {
        r.violation("by_seq", key, "the entry is damaged");
        return;
    };
    let id = String::from_utf8_lossy(id);
    match record_seqs.get(&seq) {
        Some(owner) if *owner == id => {}
        Some(owner) => r.violation(
            "by_seq",
            key,
            format!("names {id:?}, but sequence {seq} is {owner:?}'s"),
        ),
        None => r.violation(
            "by_seq",
            key,
            format!("names {id:?}, whose record is not at sequence {seq}"),
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;

    fn damaged(damage: impl FnOnce(&Replica)) -> Vec<&'static str> {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let rev = |id: &str, hash: &str| crate::store::IncomingRev {
            id: id.into(),
            path: crate::revtree::RevPath {
                start: 1,
                ids: vec![hash.into()],
            },
            deleted: false,
            body: serde_json::value::to_raw_value(&serde_json::json!({"x": 1})).unwrap(),
        };
        let b = crate::store::WriteBatch {
            revs: vec![rev("a", "aa"), rev("b", "bb")],
            ..Default::default()
        };
        rt.block_on(r.commit(b)).unwrap();
        assert!(r.check().unwrap().is_ok(), "{:?}", r.check().unwrap());
        damage(&r);
        r.check()
            .unwrap()
            .violations
            .into_iter()
            .map(|v| v.invariant)
            .collect()
    }

    #[test]
    fn finds_each_kind_of_damage() {
        assert_eq!(damaged(|_| {}), Vec::<&str>::new());
        let v = damaged(|r| {
            r.trees()
                .meta
                .insert(keys::meta::DOC_COUNT, &7u64.to_be_bytes())
                .unwrap();
        });
        assert_eq!(v, vec!["counters"]);
        let v = damaged(|r| {
            let (k, _) = r.trees().by_seq.iter().next().unwrap().unwrap();
            r.trees().by_seq.remove(k).unwrap();
        });
        assert!(v.contains(&"by_seq"), "{v:?}");
        // Small bodies live in their record.
        let v = damaged(|r| {
            let v = r.trees().docs.get("a").unwrap().unwrap();
            let mut rec = DocRecord::decode(b"a", &v).unwrap();
            let was = std::mem::take(&mut rec.bodies);
            assert!(
                matches!(was.values().next(), Some(BodyRef::Inline(_))),
                "a small body is inline"
            );
            r.trees().docs.insert("a", rec.encode()).unwrap();
        });
        assert!(v.contains(&"leaf_body"), "{v:?}");
        let v = damaged(|r| {
            r.trees()
                .att_refs
                .insert("md5-x", &1u64.to_be_bytes())
                .unwrap();
        });
        assert_eq!(v, vec!["att_refs"]);
        let v = damaged(|r| {
            r.trees().checkpoints.insert("abc", &b"{}"[..]).unwrap();
        });
        assert!(v.contains(&"checkpoint"), "{v:?}");
        let v = damaged(|r| {
            r.trees().docs.insert("c", &b"not json"[..]).unwrap();
        });
        assert!(v.contains(&"records"), "{v:?}");
    }
}
