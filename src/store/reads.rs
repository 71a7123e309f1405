//! Reads that scale: iterators over whole documents (bodies included) that
//! own their replica handle, so they can be returned, stored or moved to
//! another thread, and attachment bytes by (document, name) without a copy.
//!
//! Read-only: nothing here writes or holds the write lock. An iterator sees
//! sled's state as it walks (each document is read whole and consistent,
//! the set of documents is not a snapshot).

use super::document::{BodyAt, DocInfo, DocRecord, Document};
use super::error::StoreError;
use super::marks::Noting;
use super::replica::Replica;
use super::{keys, nesting};
use crate::revtree::Rev;
use bytes::Bytes;
use std::ops::{Bound, RangeBounds};

/// `Debug` for the iterators that own a replica handle: the handle, not
/// sled's cursor.
macro_rules! debug_as_replica_handle {
    ($($iter:ident),*) => {$(
        impl std::fmt::Debug for $iter {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($iter))
                    .field("replica", &self.replica)
                    .finish_non_exhaustive()
            }
        }
    )*};
}

debug_as_replica_handle!(
    Documents,
    RawDocuments,
    DocumentChanges,
    RawDocumentChanges,
    Changes
);

/// Live documents with their bodies, in id order; from
/// [`Replica::documents`] or [`Replica::documents_with_prefix`].
#[must_use = "iterators do nothing unless consumed"]
pub struct Documents {
    replica: Replica,
    ids: sled::Iter,
}

impl Documents {
    /// The same documents with their winners' bodies as stored JSON text,
    /// not parsed (see [`RawDocumentChange::body`]): for readers that test
    /// every document against a predicate (Mango's full scan) and would
    /// otherwise pay for a parsed map per document. Walks both ways.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use settee::{Replica, ReplicaConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
    /// replica.put("b", serde_json::json!({"n": 2})).await?;
    /// replica.put("a", serde_json::json!({"n": 1})).await?;
    /// replica.delete("b", None).await?;
    /// let docs: Vec<_> = replica.documents(..).with_raw_bodies().collect::<Result<_, _>>()?;
    /// assert_eq!(docs.len(), 1);
    /// assert_eq!(serde_json::from_slice::<serde_json::Value>(&docs[0].body)?["n"], 1);
    /// # Ok(()) }
    /// ```
    pub fn with_raw_bodies(self) -> RawDocuments {
        RawDocuments {
            replica: self.replica,
            records: StoredRecords { records: self.ids },
        }
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

/// Live documents with their winners' raw bodies, in id order; from
/// [`Documents::with_raw_bodies`].
#[must_use = "iterators do nothing unless consumed"]
pub struct RawDocuments {
    replica: Replica,
    records: StoredRecords,
}

impl RawDocuments {
    /// The document of one record; `None` for a tombstone or a document
    /// gone since the record was read.
    fn read(
        &self,
        record: Result<StoredRecord, StoreError>,
    ) -> Option<Result<RawDocumentChange, StoreError>> {
        match record {
            Ok(record) => record.winner(&self.replica, false),
            Err(e) => Some(Err(e)),
        }
    }
}

/// A document's record as read from the `docs` tree, not yet decoded: a
/// scan reads records in id order on one thread (reading them is a walk
/// of sled's pages, which one thread does best) and decodes them, reads
/// their bodies and uses them on others ([`StoredRecord::winner`]).
pub(crate) struct StoredRecord {
    key: sled::IVec,
    bytes: sled::IVec,
}

impl StoredRecord {
    /// The record's winner with its raw body, at the sequence of the
    /// document's latest change; `None` for a tombstone (unless
    /// `tombstones`) or a document gone since the record was read.
    pub(crate) fn winner(
        self,
        replica: &Replica,
        tombstones: bool,
    ) -> Option<Result<RawDocumentChange, StoreError>> {
        let id = match std::str::from_utf8(&self.key) {
            Ok(id) => id,
            Err(e) => return Some(Err(StoreError::corrupt("document id", &self.key, e))),
        };
        let read = replica.read_record_from(id, self.bytes, |record| {
            replica.winner_change_if(record, id, record.seq, None, tombstones)
        });
        match read {
            Ok(Some(Some(doc))) => Some(Ok(doc)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// A run of records in order, for one worker; from
/// [`Replica::record_parts`].
pub(crate) enum RecordPart {
    /// The records of this range (in reverse with `true`), read by the
    /// worker that takes the part.
    Range(Bound<String>, Bound<String>, bool),
    /// Records one walk already read.
    Read(Vec<Result<StoredRecord, StoreError>>),
}

impl RecordPart {
    /// The part's records, in order.
    pub(crate) fn records(
        self,
        replica: &Replica,
    ) -> Box<dyn Iterator<Item = Result<StoredRecord, StoreError>>> {
        match self {
            RecordPart::Range(lo, hi, desc) => {
                let range = (
                    lo.as_ref().map(String::as_str),
                    hi.as_ref().map(String::as_str),
                );
                let records = replica.records(range);
                if desc {
                    Box::new(records.rev())
                } else {
                    Box::new(records)
                }
            }
            RecordPart::Read(records) => Box::new(records.into_iter()),
        }
    }
}

/// Whether `id` lies strictly inside `range`, where a part can end.
fn inside(range: &(Bound<&str>, Bound<&str>), id: &str) -> bool {
    let above = match range.0 {
        Bound::Unbounded => true,
        Bound::Included(lo) | Bound::Excluded(lo) => id > lo,
    };
    let below = match range.1 {
        Bound::Unbounded => true,
        Bound::Included(hi) | Bound::Excluded(hi) => id < hi,
    };
    above && below
}

/// The records of the documents within a range, in id order (or the
/// reverse), not decoded; from [`Replica::records`].
pub(crate) struct StoredRecords {
    records: sled::Iter,
}

/// One `docs` entry as a record.
fn stored(
    entry: Result<(sled::IVec, sled::IVec), sled::Error>,
) -> Result<StoredRecord, StoreError> {
    let (key, bytes) = entry?;
    Ok(StoredRecord { key, bytes })
}

impl Iterator for StoredRecords {
    type Item = Result<StoredRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.records.next().map(stored)
    }
}

impl DoubleEndedIterator for StoredRecords {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.records.next_back().map(stored)
    }
}

impl Iterator for RawDocuments {
    type Item = Result<RawDocumentChange, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let item = self.records.next()?;
            if let Some(doc) = self.read(item) {
                return Some(doc);
            }
        }
    }
}

impl DoubleEndedIterator for RawDocuments {
    fn next_back(&mut self) -> Option<Self::Item> {
        loop {
            let item = self.records.next_back()?;
            if let Some(doc) = self.read(item) {
                return Some(doc);
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
/// [`Changes::with_documents`].
#[must_use = "iterators do nothing unless consumed"]
pub struct DocumentChanges {
    replica: Replica,
    entries: sled::Iter,
}

impl Iterator for DocumentChanges {
    type Item = Result<DocumentChange, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = next_raw_change(&self.replica, &mut self.entries)?;
        Some(raw.and_then(RawDocumentChange::parse))
    }
}

/// One entry of the local changes feed with the winning revision's body as
/// stored JSON text, not parsed: for readers that need a few fields of
/// many documents (view indexing) and would otherwise pay for building a
/// whole `serde_json` map per document.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RawDocumentChange {
    /// The local sequence of this change.
    pub seq: u64,
    /// The document id.
    pub id: String,
    /// The winning revision.
    pub rev: Rev,
    /// True for a tombstone.
    pub deleted: bool,
    /// Live leaves other than the winner (`_conflicts`).
    pub conflicts: Vec<Rev>,
    /// Deleted leaves other than the winner (`_deleted_conflicts`).
    pub deleted_conflicts: Vec<Rev>,
    /// The body as stored: a JSON object without `_id`, `_rev` and
    /// `_deleted` (attachments as stubs), nested at most
    /// [`MAX_NESTING`](super::MAX_NESTING) levels, so parse it with
    /// serde_json's recursion limit lifted.
    pub body: Bytes,
}

impl RawDocumentChange {
    /// The change with its body parsed, as [`Changes::with_documents`]
    /// yields it.
    pub fn parse(self) -> Result<DocumentChange, StoreError> {
        let body = nesting::parse_body(&self.body)
            .map_err(|e| StoreError::corrupt("revision body", self.id.as_bytes(), e))?;
        Ok(DocumentChange {
            seq: self.seq,
            doc: Document {
                id: self.id,
                rev: self.rev,
                deleted: self.deleted,
                body,
                conflicts: self.conflicts,
                deleted_conflicts: self.deleted_conflicts,
            },
        })
    }
}

/// Local changes with unparsed bodies, oldest first; from
/// [`Changes::with_raw_bodies`].
#[must_use = "iterators do nothing unless consumed"]
pub struct RawDocumentChanges {
    replica: Replica,
    entries: sled::Iter,
}

impl Iterator for RawDocumentChanges {
    type Item = Result<RawDocumentChange, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        next_raw_change(&self.replica, &mut self.entries)
    }
}

/// A `by_seq` entry's sequence, document id and carried body (empty when
/// none), or why the entry is damaged.
pub(super) fn decode_seq_entry<'a>(
    k: &[u8],
    v: &'a [u8],
) -> Result<(u64, &'a str, &'a [u8]), StoreError> {
    let seq = keys::seq_from_key(k)
        .ok_or_else(|| StoreError::corrupt("sequence key", k, "not 8 bytes"))?;
    let (id, logged) = keys::split_seq_entry(v)
        .ok_or_else(|| StoreError::corrupt("sequence entry", k, "damaged"))?;
    let id = std::str::from_utf8(id).map_err(|e| StoreError::corrupt("sequence entry", k, e))?;
    Ok((seq, id, logged))
}

/// The next `by_seq` entry as a change with its winner's raw body.
fn next_raw_change(
    replica: &Replica,
    entries: &mut sled::Iter,
) -> Option<Result<RawDocumentChange, StoreError>> {
    let (k, v) = match entries.next()? {
        Ok(kv) => kv,
        Err(e) => return Some(Err(e.into())),
    };
    let (seq, id, logged) = match decode_seq_entry(&k, &v) {
        Ok(entry) => entry,
        Err(e) => return Some(Err(e)),
    };
    // The carried body is a slice of the entry: shared, not copied.
    let offset = logged.as_ptr() as usize - v.as_ptr() as usize;
    let logged_len = logged.len();
    let id = id.to_owned();
    let entry = Bytes::from_owner(v);
    let logged = entry.slice(offset..offset + logged_len);
    Some(match replica.winner_with_logged_body(&id, seq, logged) {
        Ok(Some(change)) => Ok(change),
        Ok(None) => Err(StoreError::corrupt(
            "sequence entry",
            &k,
            "document missing",
        )),
        Err(e) => Err(e),
    })
}

/// Why a read of a document's record and of a body it names failed.
pub(super) enum ReadError {
    /// The record names a body that is not where it says: a commit
    /// replaced the record (and dropped that body) since it was read, or
    /// the replica is damaged. [`Replica::read_record`] tells which.
    BodyGone(StoreError),
    /// Any other failure.
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl From<sled::Error> for ReadError {
    fn from(e: sled::Error) -> Self {
        ReadError::Store(e.into())
    }
}

/// The local changes feed, oldest first, each document once at its latest
/// change; from [`Replica::changes`]. Yields each document's metadata;
/// [`Changes::with_documents`] and [`Changes::with_raw_bodies`] turn it
/// into the same feed with bodies, [`Changes::follow`] into a stream that
/// waits for the next commit. Owns a handle on the replica.
#[must_use = "iterators do nothing unless consumed"]
pub struct Changes {
    pub(super) replica: Replica,
    /// The sequence the feed starts after ([`Changes::follow`] resumes
    /// from it).
    pub(super) since: u64,
    entries: sled::Iter,
}

impl Changes {
    /// The same feed with each winning revision whole, body parsed
    /// (deletions as tombstones).
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
    /// let changes: Vec<_> = replica.changes(0).with_documents().collect::<Result<_, _>>()?;
    /// assert_eq!(changes.len(), 2);
    /// assert_eq!((changes[0].doc.id.as_str(), changes[0].doc.body["n"].as_i64()), ("b", Some(2)));
    /// assert!(changes[1].doc.deleted);
    /// assert_eq!(replica.changes(b.seq).with_documents().count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn with_documents(self) -> DocumentChanges {
        DocumentChanges {
            replica: self.replica,
            entries: self.entries,
        }
    }

    /// The same feed with each winner's body as stored JSON text, not
    /// parsed (see [`RawDocumentChange::body`]), shared with sled's cache
    /// where it can be rather than copied: for readers that need a few
    /// fields of many documents (view indexing).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use settee::{Replica, ReplicaConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
    /// replica.put("a", serde_json::json!({"n": 1})).await?;
    /// let changes: Vec<_> = replica.changes(0).with_raw_bodies().collect::<Result<_, _>>()?;
    /// let body: serde_json::Value = serde_json::from_slice(&changes[0].body)?;
    /// assert_eq!(body["n"], 1);
    /// assert_eq!(changes[0].clone().parse()?.doc.body["n"], 1);
    /// # Ok(()) }
    /// ```
    pub fn with_raw_bodies(self) -> RawDocumentChanges {
        RawDocumentChanges {
            replica: self.replica,
            entries: self.entries,
        }
    }
}

impl Iterator for Changes {
    type Item = Result<Change, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.entries.next()?;
        self.change(item)
    }
}

/// Newest first (a changes feed's `descending=true`).
impl DoubleEndedIterator for Changes {
    fn next_back(&mut self) -> Option<Self::Item> {
        let item = self.entries.next_back()?;
        self.change(item)
    }
}

impl Changes {
    fn change(
        &self,
        item: sled::Result<(sled::IVec, sled::IVec)>,
    ) -> Option<Result<Change, StoreError>> {
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let (seq, id) = match decode_seq_entry(&k, &v) {
            Ok((seq, id, _)) => (seq, id),
            Err(e) => return Some(Err(e)),
        };
        match self.replica.record(id) {
            Ok(Some(r)) => r.info(id).map(|doc| Ok(Change { seq, doc })),
            Ok(None) => Some(Err(StoreError::corrupt(
                "sequence entry",
                &k,
                "document missing",
            ))),
            Err(e) => Some(Err(e)),
        }
    }
}

/// One entry of the local changes feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// The local sequence of this change.
    pub seq: u64,
    /// The document and its winner now.
    pub doc: DocInfo,
}

impl Replica {
    /// Every document in id order within `range` (`..`, `"a".."b"`,
    /// `id..=id`, or a pair of `Bound<&str>`), tombstones included; `.rev()` walks it from the high end (a
    /// descending `_all_docs`).
    pub fn docs<'a>(
        &self,
        range: impl RangeBounds<&'a str>,
    ) -> impl DoubleEndedIterator<Item = Result<DocInfo, StoreError>> + '_ {
        self.inner
            .trees
            .docs
            .range::<Vec<u8>, _>(id_range(&range))
            .filter_map(|item| {
                let (k, v) = match item {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e.into())),
                };
                let id = match std::str::from_utf8(&k) {
                    Ok(id) => id,
                    Err(e) => return Some(Err(StoreError::corrupt("document id", &k, e))),
                };
                match DocRecord::decode(&k, &v) {
                    Ok(r) => r.info(id).map(Ok),
                    Err(e) => Some(Err(e)),
                }
            })
    }

    /// Live documents in id order within a range, like `_all_docs`.
    pub fn all_docs<'a>(
        &self,
        range: impl RangeBounds<&'a str>,
    ) -> impl Iterator<Item = Result<DocInfo, StoreError>> + '_ {
        self.docs(range)
            .filter(|d| !matches!(d, Ok(info) if info.deleted))
    }

    /// Documents changed after local sequence `since`, oldest first; each
    /// document appears once, at its latest change. With bodies:
    /// [`Changes::with_documents`], [`Changes::with_raw_bodies`].
    pub fn changes(&self, since: u64) -> Changes {
        Changes {
            replica: self.clone(),
            since,
            entries: self
                .trees()
                .by_seq
                .range(keys::seq_key(since.saturating_add(1))..),
        }
    }

    /// Reads `id`'s record and, with `read`, the bodies it names, as one
    /// consistent read; `None` when the replica has never seen `id`.
    ///
    /// The record and a body are two sled reads (the body is in the
    /// document's `by_seq` entry or in `bodies`), and a commit of the same
    /// document can land between them, replacing the record and removing
    /// the body the old one named. sled 0.34 has no snapshots, and reading
    /// both in a transaction would take its process-wide transaction lock
    /// (`concurrency_control::write`) for every read, stalling every other
    /// reader and writer of every replica. So a body that is not there
    /// makes the read look at the record again: if it changed, a commit
    /// came in between and the read starts over on the new record; if it
    /// is byte for byte the same, the body really is missing. That is
    /// sound because each sled `get` is atomic against a transaction's
    /// commit (sled takes the same lock for reading once any transaction
    /// has run), every commit that drops a body rewrites the record under
    /// a new sequence (so an old record never comes back), and the sweep
    /// deletes only bodies no record names any more. The loop ends: each
    /// new round needs another commit of this very document, and a commit
    /// (flushed) takes far longer than a read.
    pub(super) fn read_record<T>(
        &self,
        id: &str,
        read: impl FnMut(&DocRecord) -> Result<T, ReadError>,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.trees().docs.get(id.as_bytes())? else {
            return Ok(None);
        };
        self.read_record_from(id, bytes, read)
    }

    /// [`Replica::read_record`] starting from the record's bytes as an
    /// iterator over `docs` just read them (saves reading them again).
    fn read_record_from<T>(
        &self,
        id: &str,
        mut bytes: sled::IVec,
        mut read: impl FnMut(&DocRecord) -> Result<T, ReadError>,
    ) -> Result<Option<T>, StoreError> {
        let key = id.as_bytes();
        let docs = &self.trees().docs;
        loop {
            let record = DocRecord::decode(key, &bytes)?;
            match read(&record) {
                Ok(out) => return Ok(Some(out)),
                Err(ReadError::Store(e)) => return Err(e),
                Err(ReadError::BodyGone(e)) => match docs.get(key)? {
                    Some(now) if now != bytes => bytes = now,
                    Some(_) => return Err(e),
                    None => return Ok(None),
                },
            }
        }
    }

    /// The stored JSON text of leaf `rev` of a document, from where
    /// [`DocRecord::body_at`] says it is; `None` when the revision has no
    /// body kept. Call it inside [`Replica::read_record`], which retries a
    /// [`ReadError::BodyGone`].
    pub(super) fn raw_body(
        &self,
        record: &DocRecord,
        id: &str,
        rev: &Rev,
    ) -> Result<Option<Bytes>, ReadError> {
        let gone = |detail: String| {
            ReadError::BodyGone(StoreError::corrupt("revision body", id.as_bytes(), detail))
        };
        match record.body_at(rev) {
            None => Ok(None),
            Some(BodyAt::Inline(bytes)) => Ok(Some(Bytes::copy_from_slice(bytes))),
            Some(BodyAt::Log(at)) => Ok(Some(Bytes::from(self.body_log().read(at)?))),
            Some(BodyAt::Entry(seq)) => {
                let entry = self.trees().by_seq.get(keys::seq_key(seq))?;
                entry
                    .as_deref()
                    .and_then(keys::split_seq_entry)
                    .map(|(_, body)| Bytes::copy_from_slice(body))
                    .filter(|body| !body.is_empty())
                    .map(Some)
                    .ok_or_else(|| gone(format!("the body of {rev} (sequence {seq}) is missing")))
            }
            Some(BodyAt::Stored(body_id)) => {
                match self.trees().bodies.get(keys::seq_key(body_id))? {
                    Some(bytes) => Ok(Some(Bytes::from_owner(bytes))),
                    None => Err(gone(format!("the body of {rev} (#{body_id}) is missing"))),
                }
            }
        }
    }

    /// The winner of `id` with its raw body, for a document read from its
    /// `by_seq` entry at `seq`, whose carried body (`logged`, empty when
    /// none) is used when it is the winner's: the entry is not looked up a
    /// second time (one sled read per document instead of two on a view's
    /// warm-up).
    fn winner_with_logged_body(
        &self,
        id: &str,
        seq: u64,
        logged: Bytes,
    ) -> Result<Option<RawDocumentChange>, StoreError> {
        let carried = (!logged.is_empty()).then_some(&logged);
        let change = self.read_record(id, |record| self.winner_change(record, id, seq, carried))?;
        Ok(change.flatten())
    }

    /// The winner of `record` as a change at `seq`, with its raw body;
    /// `None` for a record without leaves. `carried` is a body already in
    /// hand from the `by_seq` entry at `seq`, used when the record says the
    /// winner's body lives there. Call it inside [`Replica::read_record`].
    pub(super) fn winner_change(
        &self,
        record: &DocRecord,
        id: &str,
        seq: u64,
        carried: Option<&Bytes>,
    ) -> Result<Option<RawDocumentChange>, ReadError> {
        self.winner_change_if(record, id, seq, carried, true)
    }

    /// [`Replica::winner_change`]; `None` also for a tombstone unless
    /// `tombstones` (its body is then not read).
    fn winner_change_if(
        &self,
        record: &DocRecord,
        id: &str,
        seq: u64,
        carried: Option<&Bytes>,
        tombstones: bool,
    ) -> Result<Option<RawDocumentChange>, ReadError> {
        // The leaves once, in CouchDB's order: the winner, then the others.
        let mut leaves = record.tree.leaves().into_iter();
        let Some(winner) = leaves.next() else {
            return Ok(None);
        };
        if winner.deleted && !tombstones {
            return Ok(None);
        }
        let body = match carried {
            Some(body) if record.body_at(&winner.rev) == Some(BodyAt::Entry(seq)) => {
                Some(body.clone())
            }
            _ => self.raw_body(record, id, &winner.rev)?,
        };
        let body = body.ok_or_else(|| StoreError::winner_without_body(id, &winner.rev))?;
        let (mut conflicts, mut deleted_conflicts) = (Vec::new(), Vec::new());
        for leaf in leaves {
            if leaf.deleted {
                deleted_conflicts.push(leaf.rev);
            } else {
                conflicts.push(leaf.rev);
            }
        }
        Ok(Some(RawDocumentChange {
            seq,
            id: id.to_owned(),
            conflicts,
            deleted_conflicts,
            rev: winner.rev,
            deleted: winner.deleted,
            body,
        }))
    }

    /// Live documents (winning revisions, bodies included) whose ids are
    /// within `range`, in id order; the iterator owns a handle on
    /// the replica.
    ///
    /// ```
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
    /// let from_2 = replica.documents("card-2"..).count();
    /// assert_eq!(from_2, 2);
    /// # Ok(()) }
    /// ```
    pub fn documents<'a>(&self, range: impl RangeBounds<&'a str>) -> Documents {
        Documents {
            replica: self.clone(),
            ids: self.trees().docs.range::<Vec<u8>, _>(id_range(&range)),
        }
    }

    /// The records of the documents whose ids are within `range`, in id
    /// order, not decoded: every document's, tombstones included (see
    /// [`StoredRecord::winner`]). A view built from nothing and a full
    /// `_find` scan read the replica this way, one page of records after
    /// the next, instead of one record lookup per change.
    pub(crate) fn records<'a>(&self, range: impl RangeBounds<&'a str>) -> StoredRecords {
        StoredRecords {
            records: self.trees().docs.range::<Vec<u8>, _>(id_range(&range)),
        }
    }

    /// The records of `range` (in id order, or the reverse with `desc`)
    /// in parts for workers on several threads, each part a run of
    /// records in order. With marks of an earlier walk (see
    /// `store/marks.rs`) a part is the range between two marks, read by
    /// the worker that takes it, so the workers read in parallel; without,
    /// the parts are runs of `span` records of one walk that the workers
    /// take turns on, and a walk forward to the last record notes marks
    /// for the next.
    pub(crate) fn record_parts(
        &self,
        range: (Bound<&str>, Bound<&str>),
        desc: bool,
        span: usize,
    ) -> Result<Box<dyn Iterator<Item = RecordPart> + Send>, StoreError> {
        let records = self.doc_count()? + self.deleted_count()?;
        if let Some(marks) = self.inner.id_marks.current(records) {
            let mut parts = Vec::with_capacity(marks.len() + 1);
            let mut lower = range.0.map(str::to_owned);
            for mark in marks.iter().filter(|m| inside(&range, m)) {
                parts.push((lower, Bound::Included(mark.clone())));
                lower = Bound::Excluded(mark.clone());
            }
            parts.push((lower, range.1.map(str::to_owned)));
            if desc {
                parts.reverse();
            }
            return Ok(Box::new(
                parts
                    .into_iter()
                    .map(move |(lo, hi)| RecordPart::Range(lo, hi, desc)),
            ));
        }
        let walk = self.records(range);
        let mut walk: Box<dyn Iterator<Item = _> + Send> = if desc {
            Box::new(walk.rev())
        } else {
            Box::new(walk)
        };
        // A walk forward to the last record notes marks (from where it
        // starts: marks are used only while they cover about every record).
        let to_end = !desc && matches!(range.1, Bound::Unbounded);
        let mut noting = to_end.then(Noting::default);
        let replica = self.clone();
        let span = span.max(1);
        Ok(Box::new(std::iter::from_fn(move || {
            let mut part = Vec::with_capacity(span);
            for record in walk.by_ref().take(span) {
                if let (Some(noting), Ok(r)) = (noting.as_mut(), &record) {
                    noting.saw(&r.key);
                }
                part.push(record);
            }
            if part.is_empty() {
                if let Some(noting) = noting.take() {
                    noting.finish(&replica.inner.id_marks);
                }
                return None;
            }
            Some(RecordPart::Read(part))
        })))
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

/// A range of ids as the byte bounds sled's `range` takes (owned: the
/// iterators outlive the caller's borrowed bounds).
fn id_range<'a>(range: &impl RangeBounds<&'a str>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let owned = |b: Bound<&&str>| b.map(|s| s.as_bytes().to_vec());
    (owned(range.start_bound()), owned(range.end_bound()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::store::{Replica, ReplicaConfig};
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// Issue 17, defect 4: `get` read a document's record, then the
    /// `by_seq` entry holding its body; a commit in between replaced both,
    /// and the read failed with `Corrupt` (seen by `update`, push rounds,
    /// carry-over and view warm-up). A read now starts again when the
    /// record changed under it.
    #[test]
    fn issue_17_reads_racing_commits_never_see_a_missing_body() {
        const DOCS: usize = 4;
        const ROUNDS: usize = 150;
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        // Over 256 bytes: kept in the document's `by_seq` entry, which every
        // commit of the document replaces.
        let pad = "x".repeat(300);
        let ids: Vec<String> = (0..DOCS).map(|i| format!("doc-{i}")).collect();
        let mut revs: Vec<String> = ids
            .iter()
            .map(|id| {
                let w = r.put_blocking(id, &json!({"n": 0, "pad": pad})).unwrap();
                w.rev.to_string()
            })
            .collect();
        let done = AtomicBool::new(false);
        let reads = AtomicU64::new(0);
        let failures = std::thread::scope(|s| {
            let readers: Vec<_> = (0..2)
                .map(|k| {
                    let (r, ids, done, reads) = (&r, &ids, &done, &reads);
                    s.spawn(move || {
                        while !done.load(Ordering::Relaxed) {
                            for id in ids {
                                let doc = r.get(id).map_err(|e| e.to_string())?;
                                let doc = doc.ok_or("a document vanished")?;
                                assert_eq!(doc.body["pad"].as_str().map(str::len), Some(300));
                                r.get_rev(id, &doc.rev).map_err(|e| e.to_string())?;
                            }
                            if k == 1 {
                                for change in r.changes(0).with_documents() {
                                    change.map_err(|e| e.to_string())?;
                                }
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<(), String>(())
                    })
                })
                .collect();
            for round in 1..=ROUNDS {
                for (id, rev) in ids.iter().zip(revs.iter_mut()) {
                    let body = json!({"_rev": *rev, "n": round, "pad": pad});
                    *rev = r.put_blocking(id, &body).unwrap().rev.to_string();
                }
            }
            done.store(true, Ordering::Relaxed);
            readers
                .into_iter()
                .filter_map(|h| h.join().unwrap().err())
                .collect::<Vec<_>>()
        });
        assert!(failures.is_empty(), "{failures:?}");
        assert!(reads.load(Ordering::Relaxed) > 0);
    }
}
