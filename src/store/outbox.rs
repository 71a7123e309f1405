//! The outbox trees: local edits waiting to be pushed (`outbox`), edits
//! the remote refused for good (`outbox_dead`), and the push checkpoint.
//!
//! Entries are appended by the local write path (`local_write.rs`, inside
//! the edit's own transaction) and removed only by `Replica::acknowledge_push`,
//! in the transaction that records the remote's answer. This file knows the
//! rows, not the protocol: deciding what an answer means is the push
//! worker's job (`src/outbox/`).

use super::error::StoreError;
use super::keys;
use super::replica::Replica;
use super::tx::{self, Abort, OutboxRow};
use crate::revtree::Rev;
use serde::{Deserialize, Serialize};
use sled::transaction::Transactional;
use std::ops::Bound;

/// The `checkpoints` key of the push checkpoint (pull checkpoints are keyed
/// by 32-hex replication ids, so the names cannot clash).
pub(super) const PUSH_CHECKPOINT: &[u8] = b"_push";

/// One queued local edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxEntry {
    /// The entry's key: monotonic, never reused.
    pub key: u64,
    /// The document id.
    pub id: String,
    /// The revision the edit created.
    pub rev: Rev,
}

/// A document the remote refused for good (forbidden, invalid, too large):
/// out of the queue so it never blocks the rest, kept for a person to
/// inspect, retry or discard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The key of the first outbox entry it came from (its id in the list).
    pub key: u64,
    /// The document id.
    pub id: String,
    /// The revisions whose push was refused.
    pub revs: Vec<Rev>,
    /// The HTTP status, when the whole request was refused.
    pub status: Option<u16>,
    /// CouchDB's `error` (e.g. `forbidden`).
    pub error: String,
    /// CouchDB's `reason`.
    pub reason: String,
    /// When it was refused, ms since the Unix epoch.
    pub at_ms: u64,
}

impl DeadLetter {
    /// Builds a dead letter.
    pub fn new(
        key: u64,
        id: String,
        revs: Vec<Rev>,
        status: Option<u16>,
        error: String,
        reason: String,
    ) -> Self {
        DeadLetter {
            key,
            id,
            revs,
            status,
            error,
            reason,
            at_ms: now_ms(),
        }
    }
}

/// How far the push got: written with every acknowledgement, so a restart
/// knows what went through without asking the remote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PushCheckpoint {
    /// The remote database (no credentials).
    pub remote: String,
    /// The highest outbox key acknowledged so far.
    pub last_key: u64,
    /// Revisions the remote accepted, in total.
    pub revs_pushed: u64,
    /// Documents moved to the dead-letter list, in total.
    pub dead_lettered: u64,
    /// When it was written, ms since the Unix epoch.
    pub updated_at_ms: u64,
}

/// The remote's answer to one push round, recorded atomically.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushAck {
    /// Outbox entries that are done with (pushed, or dead-lettered).
    pub(crate) remove: Vec<u64>,
    /// Documents refused for good.
    pub(crate) dead: Vec<DeadLetter>,
    /// The remote, for the checkpoint.
    pub(crate) remote: String,
    /// Revisions the remote accepted in this round.
    pub(crate) revs_pushed: u64,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replica's queue of local edits waiting to be pushed, the edits the
/// remote refused for good (dead letters) and the push checkpoint; from
/// [`Replica::outbox`]. The push worker (`outbox::Outbox`) drains it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// replica.put("a", serde_json::json!({"n": 1})).await?;
/// let queue = replica.outbox();
/// assert_eq!(queue.len()?, 1);
/// assert_eq!(queue.entries(None, 10)?[0].id, "a");
/// assert!(queue.dead_letters()?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct OutboxQueue<'a> {
    replica: &'a Replica,
}

impl Replica {
    /// The queue of local edits waiting to be pushed.
    pub fn outbox(&self) -> OutboxQueue<'_> {
        OutboxQueue { replica: self }
    }

    /// Records the remote's answer to a push round: removes the entries
    /// that are done, adds the dead letters and moves the push checkpoint.
    ///
    /// # Durability
    /// One sled transaction, flushed before `Ok`. Killed before: the entries
    /// are still queued and are pushed again, which is harmless (the remote
    /// stores exactly our revisions, so a second delivery changes nothing).
    /// After an `Err` the acknowledgement may or may not be durable.
    pub(crate) fn acknowledge_push(&self, ack: &PushAck) -> Result<(), StoreError> {
        let t = self.trees();
        let max_key = ack.remove.iter().copied().max();
        let writer = self.write_lock();
        (&t.outbox, &t.outbox_dead, &t.checkpoints).transaction(|(outbox, dead_t, cps)| {
            for key in &ack.remove {
                outbox.remove(&keys::seq_key(*key))?;
            }
            for letter in &ack.dead {
                tx::put_json(dead_t, &keys::seq_key(letter.key), letter)?;
            }
            // A damaged checkpoint fails the acknowledgement (the entries
            // stay queued) instead of restarting its totals from zero.
            let mut cp: PushCheckpoint =
                tx::get_json(cps, PUSH_CHECKPOINT, "push checkpoint")?.unwrap_or_default();
            cp.remote.clone_from(&ack.remote);
            cp.last_key = cp.last_key.max(max_key.unwrap_or(0));
            cp.revs_pushed += ack.revs_pushed;
            cp.dead_lettered += ack.dead.len() as u64;
            cp.updated_at_ms = now_ms();
            tx::put_json(cps, PUSH_CHECKPOINT, &cp)?;
            Ok::<(), Abort>(())
        })?;
        drop(writer);
        self.inner.db.flush()?;
        Ok(())
    }
}

impl OutboxQueue<'_> {
    /// At most `limit` outbox entries after key `after` (from the start with
    /// `None`), oldest first.
    pub fn entries(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let from = match after {
            Some(k) => Bound::Excluded(keys::seq_key(k)),
            None => Bound::Unbounded,
        };
        self.replica
            .trees()
            .outbox
            .range::<[u8; 8], _>((from, Bound::Unbounded))
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let key = keys::seq_from_key(&k)
                    .ok_or_else(|| StoreError::corrupt("outbox key", &k, "not 8 bytes"))?;
                let row: OutboxRow = serde_json::from_slice(&v)
                    .map_err(|e| StoreError::corrupt("outbox entry", &k, e))?;
                Ok(OutboxEntry {
                    key,
                    id: row.id,
                    rev: row.rev,
                })
            })
            .collect()
    }

    /// Queued edits not yet acknowledged by the remote. Counts the tree
    /// (linear in its size): meant for status, not for hot loops.
    pub fn len(&self) -> Result<u64, StoreError> {
        Ok(self.replica.trees().outbox.len() as u64)
    }

    /// True when no edit is waiting to be pushed.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.replica.trees().outbox.is_empty())
    }

    /// The dead-letter list, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.replica
            .trees()
            .outbox_dead
            .iter()
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice(&v).map_err(|e| StoreError::corrupt("dead letter", &k, e))
            })
            .collect()
    }

    /// The push checkpoint, once a push has been acknowledged.
    pub fn push_checkpoint(&self) -> Result<Option<PushCheckpoint>, StoreError> {
        match self.replica.trees().checkpoints.get(PUSH_CHECKPOINT)? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::corrupt("push checkpoint", PUSH_CHECKPOINT, e)),
            None => Ok(None),
        }
    }

    /// Puts a dead letter back in the queue (new keys, at the end): after
    /// fixing the cause, e.g. a permission. Returns false if there is no
    /// dead letter `key`.
    ///
    /// # Durability
    /// One transaction, flushed before `Ok`: the letter is either still
    /// dead or queued again, never both or neither.
    pub fn retry_dead_letter(&self, key: u64) -> Result<bool, StoreError> {
        let t = self.replica.trees();
        let writer = self.replica.write_lock();
        let found =
            (&t.outbox_dead, &t.outbox, &t.meta).transaction(|(dead_t, outbox, meta_t)| {
                let k = keys::seq_key(key);
                let Some(letter) = tx::get_json::<DeadLetter>(dead_t, &k, "dead letter")? else {
                    return Ok(false);
                };
                dead_t.remove(&k)?;
                let entries: Vec<(String, Rev)> = letter
                    .revs
                    .iter()
                    .map(|r| (letter.id.clone(), r.clone()))
                    .collect();
                tx::enqueue_pushes(outbox, meta_t, &entries)?;
                Ok::<bool, Abort>(true)
            })?;
        drop(writer);
        self.replica.inner.db.flush()?;
        Ok(found)
    }

    /// Drops a dead letter for good (the local revision stays). Returns
    /// false if there is no dead letter `key`.
    ///
    /// # Durability
    /// Flushed before `Ok`.
    pub fn discard_dead_letter(&self, key: u64) -> Result<bool, StoreError> {
        let found = self
            .replica
            .trees()
            .outbox_dead
            .remove(keys::seq_key(key))?
            .is_some();
        self.replica.inner.db.flush()?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;
    use serde_json::json;

    #[test]
    fn acknowledged_entries_leave_and_dead_letters_can_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        r.put_blocking("a", &json!({"v": 1})).unwrap();
        r.put_blocking("b", &json!({"v": 1})).unwrap();
        r.put_overwrite_blocking("a", &json!({"v": 2})).unwrap();
        let entries = r.outbox().entries(None, 10).unwrap();
        assert_eq!(entries.iter().map(|e| e.key).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(r.outbox().entries(Some(1), 1).unwrap()[0].id, "b");
        let dead = DeadLetter::new(
            2,
            "b".into(),
            vec![entries[1].rev.clone()],
            None,
            "forbidden".into(),
            "no".into(),
        );
        r.acknowledge_push(&PushAck {
            remove: vec![1, 2, 3],
            dead: vec![dead],
            remote: "http://x/db".into(),
            revs_pushed: 1,
        })
        .unwrap();
        assert_eq!(r.outbox().len().unwrap(), 0);
        let cp = r.outbox().push_checkpoint().unwrap().unwrap();
        assert_eq!((cp.last_key, cp.revs_pushed, cp.dead_lettered), (3, 1, 1));
        assert_eq!(r.outbox().dead_letters().unwrap()[0].error, "forbidden");
        assert!(r.outbox().retry_dead_letter(2).unwrap());
        assert!(!r.outbox().retry_dead_letter(2).unwrap());
        let again = r.outbox().entries(None, 10).unwrap();
        assert_eq!((again[0].key, again[0].id.as_str()), (4, "b"));
        assert!(r.outbox().dead_letters().unwrap().is_empty());
        drop(r);
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert_eq!(r.outbox().len().unwrap(), 1, "survives a reopen");
        assert!(!r.outbox().discard_dead_letter(9).unwrap());
    }
}
