//! Reads that scale: iterators over whole documents (bodies included) that
//! own their replica handle, so they can be returned, stored or moved to
//! another thread, and attachment bytes by (document, name) without a copy.
//!
//! Read-only: nothing here writes or holds the write lock. An iterator sees
//! sled's state as it walks (each document is read whole and consistent,
//! the set of documents is not a snapshot).

use super::{keys, nesting, Document, Replica, StoreError};
use bytes::Bytes;
use std::ops::Bound;

/// Live documents with their bodies, in id order; from
/// [`Replica::documents`] or [`Replica::documents_with_prefix`].
#[must_use = "iterators do nothing unless consumed"]
pub struct Documents {
    replica: Replica,
    ids: sled::Iter,
}

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Iterator for Documents {
    type Item = Result<Document, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let key = match self.ids.next()? {
                Ok((k, _)) => k,
                Err(e) => return Some(Err(e.into())),
            };
            let id = match std::str::from_utf8(&key) {
                Ok(id) => id,
                Err(e) => return Some(Err(StoreError::corrupt("document id", &key, e))),
            };
            match self.replica.get(id) {
                Ok(Some(doc)) if !doc.deleted => return Some(Ok(doc)),
                // A tombstone, or a document gone since the key was read.
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// One entry of the local changes feed with the whole winning revision
/// (a tombstone for a deletion).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DocumentChange {
    /// The local sequence of this change.
    pub seq: u64,
    /// The winning revision now, body included.
    pub doc: Document,
}

/// Local changes with bodies, oldest first; from
/// [`Replica::changes_with_documents`].
#[must_use = "iterators do nothing unless consumed"]
pub struct DocumentChanges {
    replica: Replica,
    entries: sled::Iter,
}

impl std::fmt::Debug for DocumentChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentChanges")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Iterator for DocumentChanges {
    type Item = Result<DocumentChange, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = match self.entries.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let Some(seq) = keys::seq_from_key(&k) else {
            return Some(Err(StoreError::corrupt("sequence key", &k, "not 8 bytes")));
        };
        let Some((id, logged)) = keys::split_seq_entry(&v) else {
            return Some(Err(StoreError::corrupt("sequence entry", &k, "damaged")));
        };
        let id = match std::str::from_utf8(id) {
            Ok(id) => id,
            Err(e) => return Some(Err(StoreError::corrupt("sequence entry", &k, e))),
        };
        Some(
            match self.replica.winner_with_logged_body(id, seq, logged) {
                Ok(Some(doc)) => Ok(DocumentChange { seq, doc }),
                Ok(None) => Err(StoreError::corrupt(
                    "sequence entry",
                    &k,
                    "document missing",
                )),
                Err(e) => Err(e),
            },
        )
    }
}

impl Replica {
    /// [`Replica::get`] for a document read from its `by_seq` entry at
    /// `seq`, whose carried body (`logged`, empty when none) is used when
    /// it is the winner's: the entry is not looked up a second time (one
    /// sled read per document instead of two on a view's warm-up).
    fn winner_with_logged_body(
        &self,
        id: &str,
        seq: u64,
        logged: &[u8],
    ) -> Result<Option<Document>, StoreError> {
        let Some(record) = self.record(id)? else {
            return Ok(None);
        };
        let Some(winner) = record.tree.winner() else {
            return Ok(None);
        };
        let carried = !logged.is_empty()
            && record.seq == seq
            && record
                .logged
                .as_ref()
                .is_some_and(|(rev, _)| *rev == winner.rev.to_string());
        let body = if carried {
            Some(
                nesting::parse_body(logged)
                    .map_err(|e| StoreError::corrupt("revision body", id.as_bytes(), e))?,
            )
        } else {
            self.body(&record, id, &winner.rev)?
        };
        let body = body.ok_or_else(|| {
            StoreError::corrupt(
                "revision body",
                id.as_bytes(),
                format!("winner {} has no body", winner.rev),
            )
        })?;
        Ok(Some(Document {
            id: id.to_owned(),
            conflicts: record.tree.conflicts(),
            deleted_conflicts: record.tree.deleted_conflicts(),
            rev: winner.rev,
            deleted: winner.deleted,
            body,
        }))
    }

    /// Documents changed after local sequence `since`, oldest first, each
    /// once at its latest change, with the whole winning revision (what
    /// [`Replica::changes`] lists, plus bodies); the iterator owns a handle
    /// on the replica. Deletions come as tombstones.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use settee::{Replica, ReplicaConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
    /// replica.put("a", serde_json::json!({"n": 1})).await?;
    /// let b = replica.put("b", serde_json::json!({"n": 2})).await?;
    /// replica.delete("a", None).await?;
    /// let changes: Vec<_> = replica.changes_with_documents(0).collect::<Result<_, _>>()?;
    /// assert_eq!(changes.len(), 2);
    /// assert_eq!((changes[0].doc.id.as_str(), changes[0].doc.body["n"].as_i64()), ("b", Some(2)));
    /// assert!(changes[1].doc.deleted);
    /// assert_eq!(replica.changes_with_documents(b.seq).count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn changes_with_documents(&self, since: u64) -> DocumentChanges {
        DocumentChanges {
            replica: self.clone(),
            entries: self
                .trees()
                .by_seq
                .range(keys::seq_key(since.saturating_add(1))..),
        }
    }

    /// Live documents (winning revisions, bodies included) whose ids are
    /// within `start`..`end`, in id order; the iterator owns a handle on
    /// the replica.
    ///
    /// ```
    /// use std::ops::Bound;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use settee::{Replica, ReplicaConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
    /// replica.put("card-1", serde_json::json!({"front": "a"})).await?;
    /// replica.put("card-2", serde_json::json!({"front": "b"})).await?;
    /// replica.put("tag-1", serde_json::json!({"name": "t"})).await?;
    /// let cards: Vec<_> = replica.documents_with_prefix("card-").collect::<Result<_, _>>()?;
    /// assert_eq!(cards.len(), 2);
    /// assert_eq!(cards[1].body["front"], "b");
    /// let from_2 = replica.documents(Bound::Included("card-2"), Bound::Unbounded).count();
    /// assert_eq!(from_2, 2);
    /// # Ok(()) }
    /// ```
    pub fn documents(&self, start: Bound<&str>, end: Bound<&str>) -> Documents {
        let owned = |b: Bound<&str>| match b {
            Bound::Included(s) => Bound::Included(s.as_bytes().to_vec()),
            Bound::Excluded(s) => Bound::Excluded(s.as_bytes().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Documents {
            replica: self.clone(),
            ids: self
                .trees()
                .docs
                .range::<Vec<u8>, _>((owned(start), owned(end))),
        }
    }

    /// Live documents whose ids start with `prefix`, in id order.
    pub fn documents_with_prefix(&self, prefix: &str) -> Documents {
        Documents {
            replica: self.clone(),
            ids: self.trees().docs.scan_prefix(prefix.as_bytes()),
        }
    }

    /// The bytes of attachment `name` of the winning revision of `id`,
    /// shared with the store's cache rather than copied; `None` when the
    /// document, the attachment or its bytes are not in the replica.
    pub fn attachment_of(&self, id: &str, name: &str) -> Result<Option<Bytes>, StoreError> {
        let Some(doc) = self.get(id)? else {
            return Ok(None);
        };
        let Some((_, stub)) = doc.attachments().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        match self.trees().attachments.get(stub.digest.as_bytes())? {
            // A large attachment is stored in a file (`attachment_stream.rs`).
            Some(v) if v.is_empty() => Ok(self.chunked_attachment(&stub.digest)?.map(Bytes::from)),
            other => Ok(other.map(Bytes::from_owner)),
        }
    }
}
