//! The replica handle: the sled database, its trees, the settings it was
//! opened with, the writer lock and the update-sequence watch. Every other
//! file of the store adds its part of `Replica`'s methods on top of this
//! one; this file imports none of them.

use super::body_log::BodyLog;
use super::error::StoreError;
use super::keys;
use super::marks::IdMarks;
use super::usage::Usage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    pub(super) inner: Arc<Inner>,
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

pub(super) struct Inner {
    pub(super) path: PathBuf,
    pub(super) db: sled::Db,
    pub(super) trees: Trees,
    /// The leaf bodies too large for their records (format 4).
    pub(super) body_log: BodyLog,
    pub(super) config: ReplicaConfig,
    /// One writer at a time: commits read counters and records and write
    /// them back; serializing them keeps sled's transaction from retrying.
    pub(super) write_lock: Mutex<()>,
    /// The update sequence of the latest durable write, for readers that
    /// follow the replica (views, change subscriptions). Sent after the
    /// flush, so a receiver never sees a sequence that could be lost.
    pub(super) committed: tokio::sync::watch::Sender<u64>,
    /// The pull lock and the count of running blocking tasks (`lock.rs`).
    pub(super) usage: Usage,
    /// The id of the next large attachment's file, above every file and
    /// `att_chunked` entry found at open (`attachment_stream.rs`).
    pub(super) next_stream: std::sync::atomic::AtomicU64,
    /// Where to cut the documents for readers on several threads.
    pub(super) id_marks: IdMarks,
}

impl Replica {
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

    /// The body log (`body_log.rs`).
    pub(crate) fn body_log(&self) -> &BodyLog {
        &self.inner.body_log
    }

    /// The writer lock: one write transaction at a time (see `Inner`).
    pub(crate) fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .write_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn meta_u64(&self, key: &'static [u8]) -> Result<u64, StoreError> {
        keys::read_u64(&self.inner.trees.meta, key)
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

    /// Takes the replica's pull lock for `who` (e.g. the remote's URL,
    /// without credentials), waiting while another pull holds it.
    pub(crate) async fn lock_pull(&self, who: &str) -> super::usage::PullGuard {
        self.inner.usage.lock_pull(who).await
    }

    /// The pull running on this replica in this process, if any: what it
    /// pulls from and since when (Unix ms).
    pub fn pull_holder(&self) -> Option<String> {
        self.inner.usage.pull_holder()
    }

    /// Runs `f` on tokio's blocking pool, counted until it returns, so that
    /// [`Replica::blocking_idle`] can wait for it even after the task that
    /// spawned it was aborted.
    pub(crate) fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.inner.usage.spawn_blocking(f)
    }

    /// Waits until no task spawned with [`Replica::spawn_blocking`] runs.
    pub(crate) async fn blocking_idle(&self) {
        self.inner.usage.blocking_idle().await;
    }
}
