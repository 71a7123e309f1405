//! The local replica: a directory holding a sled database with the full
//! revision tree of every document, the leaf bodies, attachments (one copy
//! per digest), a local sequence index, `_local` documents, checkpoints and
//! metadata.
//!
//! Reads are plain method calls. Every write goes through one multi-tree
//! sled transaction ([`Replica::commit`]), flushed before it returns, so a
//! batch of documents, its sequence entries, its counters and the
//! checkpoint that covers it become durable together or not at all. The
//! store knows nothing of HTTP; `docs/design.md` has the trees, their keys,
//! the invariants and the crash analysis.

mod attachment_refs;
mod attachment_stream;
pub(crate) use attachment_stream::{AttachmentWriter, Staged};
mod check;
mod commit;
mod compact;
mod document;
mod error;
mod keys;
mod local_write;
mod lock;
mod nesting;
mod outbox;
mod reads;
mod tx;

pub use check::{CheckReport, Violation};
#[cfg(feature = "internals")]
pub use commit::BatchOutcome;
pub use commit::{IncomingRev, WriteBatch};
pub use compact::{
    compact, dir_size, CompactOptions, CompactReport, DiskUsage, TreeUsage, DEFAULT_COMPACT_ABOVE,
};
pub(crate) use document::DocRecord;
pub use document::{AttachmentStub, DocInfo, Document};
pub use error::StoreError;
pub use local_write::LocalWrite;
pub use nesting::{nesting_depth, MAX_NESTING};
pub(crate) use outbox::now_ms;
pub(crate) use outbox::PushAck;
pub use outbox::{DeadLetter, OutboxEntry, PushCheckpoint};
pub use reads::{
    DocumentChange, DocumentChanges, Documents, RawDocumentChange, RawDocumentChanges, RawDocuments,
};

use crate::revtree::{Leaf, Rev, RevTree};
use keys::decode_u64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The on-disk format this build reads and writes (3: document records are
/// binary and keep a single leaf's body inline; 2: attachment bytes are
/// reference-counted in `att_refs`). Replicas of an older format must be
/// pulled again into a new directory.
pub const FORMAT_VERSION: u64 = 3;

/// Settings of a replica store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicaConfig {
    /// Bytes of sled's page cache, as sled counts them (on-disk bytes of
    /// the cached pages; their in-memory form takes a few times more).
    /// sled's own default (1 GiB) suits a server, not a phone-sized replica:
    /// 8 MiB keeps a pull's memory nearly flat as the replica grows, at a
    /// small cost in read speed for large replicas.
    pub cache_capacity: u64,
    /// Revisions kept per branch (CouchDB's `_revs_limit`).
    pub revs_limit: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            cache_capacity: 8 * 1024 * 1024,
            revs_limit: 1000,
        }
    }
}

impl ReplicaConfig {
    /// The same settings with another cache size.
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// The same settings with another revs limit (at least 1).
    pub fn with_revs_limit(mut self, limit: usize) -> Self {
        self.revs_limit = limit.max(1);
        self
    }
}

/// Which remote database a replica mirrors. Recorded by the first pull;
/// never holds credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteBinding {
    /// The database URL without credentials.
    pub url: String,
    /// The database name.
    pub db_name: String,
    /// The server's uuid, when it has one.
    pub server_uuid: Option<String>,
}

impl RemoteBinding {
    /// Builds a binding.
    pub fn new(url: String, db_name: String, server_uuid: Option<String>) -> Self {
        RemoteBinding {
            url,
            db_name,
            server_uuid,
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

/// A replica on disk; cheap to clone, safe to share between tasks.
///
/// ```
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
/// assert_eq!(replica.doc_count().unwrap(), 0);
/// assert!(replica.get("CourseConfig").unwrap().is_none());
/// ```
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("path", &self.inner.path)
            .finish()
    }
}

pub(crate) struct Trees {
    pub(crate) docs: sled::Tree,
    pub(crate) bodies: sled::Tree,
    pub(crate) garbage: sled::Tree,
    pub(crate) retry: sled::Tree,
    pub(crate) by_seq: sled::Tree,
    pub(crate) attachments: sled::Tree,
    pub(crate) att_refs: sled::Tree,
    pub(crate) att_staged: sled::Tree,
    /// Per large attachment, the file in `attachments/` that holds its
    /// bytes (`store/attachment_stream.rs`).
    pub(crate) att_chunked: sled::Tree,
    pub(crate) local: sled::Tree,
    pub(crate) checkpoints: sled::Tree,
    pub(crate) meta: sled::Tree,
    /// Local edits not yet acknowledged by the remote (`store/outbox.rs`).
    pub(crate) outbox: sled::Tree,
    /// Local edits the remote refused for good, with the reason.
    pub(crate) outbox_dead: sled::Tree,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    trees: Trees,
    config: ReplicaConfig,
    /// One writer at a time: commits read counters and records and write
    /// them back; serializing them keeps sled's transaction from retrying.
    write_lock: Mutex<()>,
    /// The update sequence of the latest durable write, for readers that
    /// follow the replica (views, change subscriptions). Sent after the
    /// flush, so a receiver never sees a sequence that could be lost.
    committed: tokio::sync::watch::Sender<u64>,
    /// The pull lock and the count of running blocking tasks (`lock.rs`).
    usage: lock::Usage,
    /// The id of the next large attachment's file, above every file and
    /// `att_chunked` entry found at open (`attachment_stream.rs`).
    next_stream: std::sync::atomic::AtomicU64,
}

impl Replica {
    /// Opens the replica at `path`, creating the directory if needed.
    ///
    /// # Errors
    /// [`StoreError::NotADirectory`] when `path` is a file;
    /// [`StoreError::Locked`] when another process has the replica open
    /// (within half a second, naming it); [`StoreError::Format`] for another
    /// format.
    pub fn open(path: impl AsRef<Path>, config: ReplicaConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let db = lock::open_db(&path, config.cache_capacity)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_err);
        let trees = Trees {
            docs: tree("docs")?,
            bodies: tree("bodies")?,
            garbage: tree("garbage")?,
            retry: tree("retry")?,
            by_seq: tree("by_seq")?,
            attachments: tree("attachments")?,
            att_refs: tree("att_refs")?,
            att_staged: tree("att_staged")?,
            att_chunked: tree("att_chunked")?,
            local: tree("local")?,
            checkpoints: tree("checkpoints")?,
            meta: tree("meta")?,
            outbox: tree("outbox")?,
            outbox_dead: tree("outbox_dead")?,
        };
        match trees.meta.get(keys::meta::FORMAT)? {
            Some(v) => {
                let found = decode_u64(keys::meta::FORMAT, &v)?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format {
                        path,
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None if trees.docs.is_empty() && trees.local.is_empty() => {
                trees
                    .meta
                    .insert(keys::meta::FORMAT, &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            None => {
                return Err(StoreError::Format {
                    path,
                    found: 0,
                    expected: FORMAT_VERSION,
                })
            }
        }
        let seq = match trees.meta.get(keys::meta::SEQ)? {
            Some(v) => decode_u64(keys::meta::SEQ, &v)?,
            None => 0,
        };
        let replica = Replica {
            inner: Arc::new(Inner {
                path,
                db,
                trees,
                config,
                write_lock: Mutex::new(()),
                committed: tokio::sync::watch::Sender::new(seq),
                usage: lock::Usage::default(),
                next_stream: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        replica.drop_unclaimed_attachments()?;
        replica.drop_unclaimed_files()?;
        Ok(replica)
    }

    /// Opens a replica that must already exist (for reading commands).
    pub fn open_existing(
        path: impl AsRef<Path>,
        config: ReplicaConfig,
    ) -> Result<Self, StoreError> {
        let p = path.as_ref();
        // An interrupted compaction may have moved the files; open
        // finishes it.
        if (!p.join("conf").is_file() || !p.join("db").is_file()) && !compact::pending(p) {
            return Err(StoreError::NotAReplica {
                path: p.to_path_buf(),
            });
        }
        Self::open(p, config)
    }

    /// How many handles on this replica are alive, this one included: the
    /// sync service deletes a swapped-out replica once it holds the last,
    /// and tests check that a stopped pull left no clone behind.
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The replica's directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &ReplicaConfig {
        &self.inner.config
    }

    pub(crate) fn trees(&self) -> &Trees {
        &self.inner.trees
    }

    /// The writer lock: one write transaction at a time (see `Inner`).
    pub(crate) fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, id: &str) -> Result<Option<DocRecord>, StoreError> {
        match self.inner.trees.docs.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(DocRecord::decode(id.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// The revision tree of a document.
    pub fn rev_tree(&self, id: &str) -> Result<Option<RevTree>, StoreError> {
        Ok(self.record(id)?.map(|r| r.tree))
    }

    /// Every leaf of a document, winner first (CouchDB's order).
    pub fn leaves(&self, id: &str) -> Result<Vec<Leaf>, StoreError> {
        Ok(self
            .record(id)?
            .map(|r| r.tree.leaves())
            .unwrap_or_default())
    }

    /// A revision's body, parsed (see [`Replica::raw_body`]); inside
    /// [`Replica::read_record`].
    fn body(
        &self,
        record: &DocRecord,
        id: &str,
        rev: &Rev,
    ) -> Result<Option<Map<String, Value>>, reads::ReadError> {
        let Some(bytes) = self.raw_body(record, id, rev)? else {
            return Ok(None);
        };
        let body = nesting::parse_body(&bytes)
            .map_err(|e| StoreError::corrupt("revision body", id.as_bytes(), e))?;
        Ok(Some(body))
    }

    /// The winning revision of a document, tombstones included (check
    /// [`Document::deleted`]); `None` if the replica has never seen `id`.
    /// The revision tree and the body are read as of one moment, however
    /// many writers commit meanwhile.
    pub fn get(&self, id: &str) -> Result<Option<Document>, StoreError> {
        let doc = self.read_record(id, |record| {
            let Some(winner) = record.tree.winner() else {
                return Ok(None);
            };
            let body = self
                .body(record, id, &winner.rev)?
                .ok_or_else(|| StoreError::winner_without_body(id, &winner.rev))?;
            Ok(Some(Document {
                id: id.to_owned(),
                conflicts: record.tree.conflicts(),
                deleted_conflicts: record.tree.deleted_conflicts(),
                rev: winner.rev,
                deleted: winner.deleted,
                body,
            }))
        })?;
        Ok(doc.flatten())
    }

    /// A specific revision. Only leaves keep their bodies (like a compacted
    /// CouchDB), so an older revision answers `None`.
    pub fn get_rev(&self, id: &str, rev: &Rev) -> Result<Option<Document>, StoreError> {
        let doc = self.read_record(id, |record| {
            let Some(leaf) = record.tree.leaves().into_iter().find(|l| &l.rev == rev) else {
                return Ok(None);
            };
            let is_winner = record.tree.winner().is_some_and(|w| &w.rev == rev);
            let Some(body) = self.body(record, id, rev)? else {
                return Ok(None);
            };
            Ok(Some(Document {
                id: id.to_owned(),
                rev: rev.clone(),
                deleted: leaf.deleted,
                body,
                conflicts: if is_winner {
                    record.tree.conflicts()
                } else {
                    Vec::new()
                },
                deleted_conflicts: if is_winner {
                    record.tree.deleted_conflicts()
                } else {
                    Vec::new()
                },
            }))
        })?;
        Ok(doc.flatten())
    }

    /// Every document in id order within `range` (inclusive bounds on ids),
    /// tombstones included; `.rev()` walks it from the high end (a
    /// descending `_all_docs`).
    pub fn docs(
        &self,
        start: Bound<&str>,
        end: Bound<&str>,
    ) -> impl DoubleEndedIterator<Item = Result<DocInfo, StoreError>> + '_ {
        let map = |b: Bound<&str>| match b {
            Bound::Included(s) => Bound::Included(s.as_bytes().to_vec()),
            Bound::Excluded(s) => Bound::Excluded(s.as_bytes().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.inner
            .trees
            .docs
            .range::<Vec<u8>, _>((map(start), map(end)))
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
    pub fn all_docs(
        &self,
        start: Bound<&str>,
        end: Bound<&str>,
    ) -> impl Iterator<Item = Result<DocInfo, StoreError>> + '_ {
        self.docs(start, end)
            .filter(|d| !matches!(d, Ok(info) if info.deleted))
    }

    /// Documents changed after local sequence `since`, oldest first; each
    /// document appears once, at its latest change.
    pub fn changes(&self, since: u64) -> impl Iterator<Item = Result<Change, StoreError>> + '_ {
        self.inner
            .trees
            .by_seq
            .range(keys::seq_key(since.saturating_add(1))..)
            .filter_map(move |item| {
                let (k, v) = match item {
                    Ok(kv) => kv,
                    Err(e) => return Some(Err(e.into())),
                };
                let (seq, id) = match reads::decode_seq_entry(&k, &v) {
                    Ok((seq, id, _)) => (seq, id.to_owned()),
                    Err(e) => return Some(Err(e)),
                };
                match self.record(&id) {
                    Ok(Some(r)) => r.info(&id).map(|doc| Ok(Change { seq, doc })),
                    Ok(None) => Some(Err(StoreError::corrupt(
                        "sequence entry",
                        &k,
                        "document missing",
                    ))),
                    Err(e) => Some(Err(e)),
                }
            })
    }

    fn meta_u64(&self, key: &'static [u8]) -> Result<u64, StoreError> {
        match self.inner.trees.meta.get(key)? {
            Some(v) => decode_u64(key, &v),
            None => Ok(0),
        }
    }

    /// Live documents (CouchDB's `doc_count`).
    pub fn doc_count(&self) -> Result<u64, StoreError> {
        self.meta_u64(keys::meta::DOC_COUNT)
    }

    /// Documents whose winner is a tombstone (`doc_del_count`).
    pub fn deleted_count(&self) -> Result<u64, StoreError> {
        self.meta_u64(keys::meta::DEL_COUNT)
    }

    /// The local update sequence: the sequence of the latest change.
    pub fn update_seq(&self) -> Result<u64, StoreError> {
        self.meta_u64(keys::meta::SEQ)
    }

    /// Follows the replica's update sequence: the receiver sees the local
    /// sequence of every durable write (a pull batch or a local edit) as it
    /// lands, without polling. Read what changed with
    /// [`Replica::changes`] from the last sequence handled.
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// let seq = replica.watch_update_seq();
    /// assert_eq!(*seq.borrow(), 0);
    /// ```
    pub fn watch_update_seq(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Tells followers that writes up to `seq` are durable. Every write
    /// path calls it after its flush, never before.
    pub(crate) fn notify_committed(&self, seq: u64) {
        self.inner.committed.send_if_modified(|current| {
            let newer = seq > *current;
            if newer {
                *current = seq;
            }
            newer
        });
    }

    /// The bytes of an attachment, by digest (a large one read from its
    /// file, see `store/attachment_stream.rs`).
    pub fn attachment(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.inner.trees.attachments.get(digest.as_bytes())? {
            None => Ok(None),
            // An empty value is a large attachment's (its bytes are in a
            // file), or an empty one's.
            Some(v) if v.is_empty() => {
                Ok(Some(self.chunked_attachment(digest)?.unwrap_or_default()))
            }
            Some(v) => Ok(Some(v.to_vec())),
        }
    }

    /// The bytes of an attachment, by digest, as a reader: a large one is
    /// read from its file as it is consumed, never whole in memory (use it
    /// to copy an attachment out; [`Replica::attachment`] returns it whole).
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// if let Some(mut bytes) = replica.attachment_reader("md5-unknown").unwrap() {
    ///     std::io::copy(&mut bytes, &mut std::io::sink()).unwrap();
    /// }
    /// ```
    pub fn attachment_reader(&self, digest: &str) -> Result<Option<AttachmentReader>, StoreError> {
        let Some(v) = self.inner.trees.attachments.get(digest.as_bytes())? else {
            return Ok(None);
        };
        // An empty value stands for a large attachment kept in its file
        // (or for an empty attachment, when no file is named).
        if v.is_empty() {
            if let Some((file, len)) = self.chunked_reader(digest)? {
                return Ok(Some(AttachmentReader {
                    len,
                    source: ReaderSource::File(std::io::Read::take(file, len)),
                }));
            }
        }
        Ok(Some(AttachmentReader {
            len: v.len() as u64,
            source: ReaderSource::Stored(std::io::Cursor::new(v)),
        }))
    }

    /// True when the replica already holds these attachment bytes.
    pub fn has_attachment(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .trees
            .attachments
            .contains_key(digest.as_bytes())?)
    }

    /// A `_local` document (not replicated), by id without the `_local/` prefix.
    pub fn get_local(&self, id: &str) -> Result<Option<Value>, StoreError> {
        self.get_json(&self.inner.trees.local, id.as_bytes(), "local document")
    }

    /// Writes a `_local` document.
    ///
    /// # Durability
    /// Flushed before `Ok` is returned: the document survives a kill -9
    /// from then on. After an `Err` it may or may not have been written.
    pub async fn put_local(&self, id: &str, doc: &Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(doc).map_err(|e| StoreError::InvalidDocument {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        self.inner.trees.local.insert(id.as_bytes(), bytes)?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The checkpoint stored under a replication id, as stored (the store
    /// does not know its shape: `Replica::checkpoint` in `replicate/` reads
    /// it typed).
    pub(crate) fn checkpoint_json(
        &self,
        replication_id: &str,
    ) -> Result<Option<Value>, StoreError> {
        self.get_json(
            &self.inner.trees.checkpoints,
            replication_id.as_bytes(),
            "checkpoint",
        )
    }

    /// The remote this replica mirrors, once a pull has recorded it.
    pub fn remote(&self) -> Result<Option<RemoteBinding>, StoreError> {
        match self.get_json(&self.inner.trees.meta, keys::meta::REMOTE, "remote binding")? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| StoreError::corrupt("remote binding", keys::meta::REMOTE, e)),
            None => Ok(None),
        }
    }

    /// Records the remote this replica mirrors.
    ///
    /// # Durability
    /// Flushed before `Ok`.
    pub(crate) async fn set_remote(&self, binding: &RemoteBinding) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(binding).unwrap_or_default();
        self.inner.trees.meta.insert(keys::meta::REMOTE, bytes)?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The summary the last completed pull left (opaque to the store;
    /// `Replica::last_pull` in `replicate/` reads it typed).
    pub(crate) fn last_pull_json(&self) -> Result<Option<Value>, StoreError> {
        self.get_json(&self.inner.trees.meta, keys::meta::LAST_PULL, "last pull")
    }

    /// Records the summary of a completed pull.
    ///
    /// # Durability
    /// Flushed before `Ok`.
    pub(crate) async fn set_last_pull(&self, summary: &Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(summary).unwrap_or_default();
        self.inner.trees.meta.insert(keys::meta::LAST_PULL, bytes)?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    fn get_json(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<Value>, StoreError> {
        match tree.get(key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(what, key, e)),
            None => Ok(None),
        }
    }

    /// Of these revisions of `id`, the ones the replica does not have
    /// (a local `_revs_diff`).
    pub fn missing_revs(&self, id: &str, revs: &[Rev]) -> Result<Vec<Rev>, StoreError> {
        let tree = self.record(id)?.map(|r| r.tree).unwrap_or_default();
        Ok(revs.iter().filter(|r| !tree.contains(r)).cloned().collect())
    }

    /// Documents an earlier pull could not store, in id order; the next
    /// pull fetches them again before it reads the changes feed. The whole
    /// list, for inspection: a pull reads it a page at a time with
    /// [`Replica::pending_retries_after`].
    pub fn pending_retries(&self) -> Result<Vec<String>, StoreError> {
        Self::retry_ids(self.inner.trees.retry.iter())
    }

    /// At most `limit` ids of the retry list that sort after `after` (from
    /// the start with `None`).
    pub fn pending_retries_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let from = match after {
            Some(id) => Bound::Excluded(id.as_bytes()),
            None => Bound::Unbounded,
        };
        let range = self
            .inner
            .trees
            .retry
            .range::<&[u8], _>((from, Bound::Unbounded));
        Self::retry_ids(range.take(limit))
    }

    fn retry_ids(
        entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<String>, StoreError> {
        entries
            .map(|e| {
                let (k, _) = e?;
                String::from_utf8(k.to_vec()).map_err(|e| StoreError::corrupt("retry entry", &k, e))
            })
            .collect()
    }

    /// Opens (creating it if needed) a tree of this replica's sled database
    /// for data derived by a module above the store (the view indexes). The
    /// store never reads or writes such trees; their writers run their own
    /// transactions over them and call [`Replica::flush`].
    pub(crate) fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Whether a tree of [`Replica::open_tree`] exists (a check, which
    /// must not write, does not create one).
    pub(crate) fn has_tree(&self, name: &str) -> bool {
        self.inner
            .db
            .tree_names()
            .iter()
            .any(|n| &n[..] == name.as_bytes())
    }

    /// Flushes every tree of the replica to disk (for writers of the trees
    /// opened with [`Replica::open_tree`]).
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Bytes on disk, as sled reports them.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }
}

/// An attachment's bytes from [`Replica::attachment_reader`]: from sled
/// for a small one, from its file for a large one.
#[derive(Debug)]
pub struct AttachmentReader {
    len: u64,
    source: ReaderSource,
}

#[derive(Debug)]
enum ReaderSource {
    Stored(std::io::Cursor<sled::IVec>),
    File(std::io::Take<std::fs::File>),
}

impl AttachmentReader {
    /// The attachment's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty attachment.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::io::Read for AttachmentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.source {
            ReaderSource::Stored(c) => c.read(buf),
            ReaderSource::File(f) => f.read(buf),
        }
    }
}
