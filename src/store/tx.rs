//! The vocabulary of the store's transactions: the steps every write path
//! (a pull's commit, a local write, a push acknowledgement, the sweep) is
//! made of, each an operation on the transactional trees of one sled
//! transaction. The write paths compose these; none of them calls another
//! write path's internals.
//!
//! - [`Counters`]: the local sequence, the body id and the document
//!   counts, read once and written back once per transaction;
//! - [`read_record`]: a document's record, as the transaction sees it;
//! - [`expect`]: a local edit's precondition (a revision is still a leaf,
//!   or still the winner);
//! - [`enqueue_pushes`]: outbox entries under fresh keys;
//! - [`claim_attachment`], [`release_attachment`]: the reference count of
//!   an attachment's bytes;
//! - [`get_json`], [`put_json`]: a typed record (checkpoint, dead letter)
//!   stored as JSON, with an error instead of a silent default.
//!
//! Everything here aborts the whole transaction on a damaged value
//! ([`StoreError::Corrupt`]): fail-stop, never a guess.

use super::document::DocRecord;
use super::error::StoreError;
use super::keys::{self, decode_u64, meta};
use crate::revtree::Rev;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

/// Why a transaction stops: a [`StoreError`] aborts it (nothing written).
pub(crate) type Abort = ConflictableTransactionError<StoreError>;

/// Aborts the transaction with `e`.
pub(crate) fn abort(e: StoreError) -> Abort {
    ConflictableTransactionError::Abort(e)
}

/// The counter after `n`; a counter at `u64::MAX` can only come from a
/// damaged replica, and wrapping it would overwrite entry 0.
pub(crate) fn next(n: u64, key: &'static [u8]) -> Result<u64, Abort> {
    n.checked_add(1)
        .ok_or_else(|| abort(StoreError::corrupt("counter", key, "at its maximum")))
}

/// A `u64` of the `meta` tree (0 when absent).
pub(crate) fn meta_u64(meta_t: &TransactionalTree, key: &'static [u8]) -> Result<u64, Abort> {
    match meta_t.get(key)? {
        Some(v) => decode_u64(key, &v).map_err(abort),
        None => Ok(0),
    }
}

/// The replica's counters, as one transaction reads and moves them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    /// The local update sequence.
    pub(crate) seq: u64,
    /// The last id given to a body in the `bodies` tree.
    pub(crate) body_id: u64,
    live: u64,
    dead: u64,
}

impl Counters {
    /// Reads them from `meta`.
    pub(crate) fn load(meta_t: &TransactionalTree) -> Result<Counters, Abort> {
        Ok(Counters {
            seq: meta_u64(meta_t, meta::SEQ)?,
            body_id: meta_u64(meta_t, meta::BODY_ID)?,
            live: meta_u64(meta_t, meta::DOC_COUNT)?,
            dead: meta_u64(meta_t, meta::DEL_COUNT)?,
        })
    }

    /// A fresh local sequence for a changed document.
    pub(crate) fn next_seq(&mut self) -> Result<u64, Abort> {
        self.seq = next(self.seq, meta::SEQ)?;
        Ok(self.seq)
    }

    /// A fresh key in the `bodies` tree.
    pub(crate) fn next_body_id(&mut self) -> Result<u64, Abort> {
        self.body_id = next(self.body_id, meta::BODY_ID)?;
        Ok(self.body_id)
    }

    /// Moves a document from its old winner state to its new one
    /// (`Some(deleted)`, `None`: no winner). A counter that would go below
    /// zero proves the counters and the records disagree: the replica is
    /// damaged, and clamping would hide it.
    pub(crate) fn recount(&mut self, was: Option<bool>, now: Option<bool>) -> Result<(), Abort> {
        if let Some(deleted) = was {
            let (counter, key) = if deleted {
                (&mut self.dead, meta::DEL_COUNT)
            } else {
                (&mut self.live, meta::DOC_COUNT)
            };
            *counter = counter.checked_sub(1).ok_or_else(|| {
                abort(StoreError::corrupt(
                    "counter",
                    key,
                    "a document it counts is not counted (below zero)",
                ))
            })?;
        }
        match now {
            Some(false) => self.live = next(self.live, meta::DOC_COUNT)?,
            Some(true) => self.dead = next(self.dead, meta::DEL_COUNT)?,
            None => {}
        }
        Ok(())
    }

    /// Writes them back to `meta`.
    pub(crate) fn save(&self, meta_t: &TransactionalTree) -> Result<(), Abort> {
        meta_t.insert(meta::SEQ, &self.seq.to_be_bytes())?;
        meta_t.insert(meta::BODY_ID, &self.body_id.to_be_bytes())?;
        meta_t.insert(meta::DOC_COUNT, &self.live.to_be_bytes())?;
        meta_t.insert(meta::DEL_COUNT, &self.dead.to_be_bytes())?;
        Ok(())
    }
}

/// The record of document `id` as this transaction sees it.
pub(crate) fn read_record(docs: &TransactionalTree, id: &str) -> Result<Option<DocRecord>, Abort> {
    let key = id.as_bytes();
    match docs.get(key)? {
        Some(bytes) => DocRecord::decode(key, &bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

/// What a local edit expects of the document it was based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The revision is still a leaf (`None`: the document is unknown).
    Leaf,
    /// The revision is still the winner (`None`: the document is unknown).
    Winner,
}

/// A local edit's precondition, checked inside the transaction that
/// writes the edit (under the writer lock, so no write slips in between):
/// [`StoreError::Conflict`] when document `id` moved on.
pub(crate) fn expect(
    docs: &TransactionalTree,
    id: &str,
    rev: Option<&Rev>,
    what: Expect,
) -> Result<(), Abort> {
    let record = read_record(docs, id)?;
    let ok = match (&record, rev) {
        (None, None) => true,
        (Some(r), Some(rev)) if what == Expect::Winner => {
            r.tree.winner().is_some_and(|w| &w.rev == rev)
        }
        (Some(r), Some(rev)) => r.tree.is_leaf(rev),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let current = record
        .and_then(|r| r.tree.winner())
        .map_or_else(|| "none".to_owned(), |w| w.rev.to_string());
    Err(abort(StoreError::Conflict {
        id: id.to_owned(),
        expected: rev.map_or_else(|| "none".to_owned(), Rev::to_string),
        current,
    }))
}

/// One `outbox` value: the document and the revision to push.
#[derive(Serialize, Deserialize)]
pub(crate) struct OutboxRow {
    pub(crate) id: String,
    pub(crate) rev: Rev,
}

/// Appends outbox entries (document id, revision) under fresh keys from
/// `meta/outbox_id` (monotonic, never reused).
pub(crate) fn enqueue_pushes(
    outbox_t: &TransactionalTree,
    meta_t: &TransactionalTree,
    entries: &[(String, Rev)],
) -> Result<(), Abort> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut last = meta_u64(meta_t, meta::OUTBOX_ID)?;
    for (id, rev) in entries {
        last = next(last, meta::OUTBOX_ID)?;
        let row = OutboxRow {
            id: id.clone(),
            rev: rev.clone(),
        };
        put_json(outbox_t, &keys::seq_key(last), &row)?;
    }
    meta_t.insert(meta::OUTBOX_ID, &last.to_be_bytes())?;
    Ok(())
}

fn ref_count(refs: &TransactionalTree, digest: &str) -> Result<u64, Abort> {
    match refs.get(digest.as_bytes())? {
        Some(v) => decode_u64(digest.as_bytes(), &v).map_err(abort),
        None => Ok(0),
    }
}

/// Counts one more stub in a stored body for `digest`, whose bytes are
/// now kept by their count (no longer merely staged).
pub(crate) fn claim_attachment(
    refs: &TransactionalTree,
    staged: &TransactionalTree,
    digest: &str,
) -> Result<(), Abort> {
    let n = next(ref_count(refs, digest)?, b"att_refs")?;
    refs.insert(digest.as_bytes(), &n.to_be_bytes())?;
    staged.remove(digest.as_bytes())?;
    Ok(())
}

/// Counts one stub less for `digest`; the last one takes the bytes along.
pub(crate) fn release_attachment(
    refs: &TransactionalTree,
    attachments: &TransactionalTree,
    digest: &str,
) -> Result<(), Abort> {
    match ref_count(refs, digest)? {
        // Nothing counted: leave bytes alone that this count does not cover.
        0 => {}
        1 => {
            refs.remove(digest.as_bytes())?;
            attachments.remove(digest.as_bytes())?;
        }
        n => {
            refs.insert(digest.as_bytes(), &(n - 1).to_be_bytes())?;
        }
    }
    Ok(())
}

/// A typed record stored as JSON; a value that does not decode is
/// [`StoreError::Corrupt`] (`what` names it), never a default.
pub(crate) fn get_json<T: DeserializeOwned>(
    tree: &TransactionalTree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, Abort> {
    decode_json(key, tree.get(key)?.as_deref(), what).map_err(abort)
}

/// A typed record from its stored JSON (`None`: no record), inside a
/// transaction or out of one.
pub(crate) fn decode_json<T: DeserializeOwned>(
    key: &[u8],
    stored: Option<&[u8]>,
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    stored
        .map(|bytes| serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(what, key, e)))
        .transpose()
}

/// Stores a typed record as JSON.
pub(crate) fn put_json<T: Serialize>(
    tree: &TransactionalTree,
    key: &[u8],
    value: &T,
) -> Result<(), Abort> {
    let bytes = encode_json(key, value).map_err(abort)?;
    tree.insert(key, bytes)?;
    Ok(())
}

/// A typed record's JSON bytes. Serializing settee's own records cannot
/// fail (no maps with non-string keys, no failing `Serialize`), but if it
/// ever did, the write fails instead of storing `null`.
pub(crate) fn encode_json<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::corrupt("record to store", key, e))
}
