//! Opening a replica: the directory lock, a compaction a crash
//! interrupted, the format check, and the clean-up of bytes no commit
//! claimed.

use super::body_log::BodyLog;
use super::compact;
use super::error::StoreError;
use super::keys::{self, decode_u64};
use super::lock;
use super::marks::IdMarks;
use super::replica::{Inner, Replica, ReplicaConfig, Trees};
use super::usage::Usage;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The on-disk format this build writes (4: leaf bodies too large for
/// their record are in the body log; 3: document records are binary and
/// keep a single leaf's body inline; 2: attachment bytes are
/// reference-counted in `att_refs`). A format-3 replica becomes format 4
/// when it is opened (its bodies stay where they are until their documents
/// change or the replica is compacted); replicas of an older format must
/// be pulled again into a new directory.
pub const FORMAT_VERSION: u64 = 4;

/// The format whose replicas open migrates to [`FORMAT_VERSION`].
const FORMAT_3: u64 = 3;

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
        let db = lock::open_db(&path, config.cache_capacity, compact::recover)?;
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
        let found = match trees.meta.get(keys::meta::FORMAT)? {
            Some(v) => Some(decode_u64(keys::meta::FORMAT, &v)?),
            None if trees.docs.is_empty() && trees.local.is_empty() => None,
            None => Some(0),
        };
        let body_log = match found {
            Some(FORMAT_VERSION) => BodyLog::open(
                &path,
                keys::read_u64(&trees.meta, keys::meta::BODY_LOG_END)?,
            )?,
            // A new replica, or a format-3 one: an empty log (a crash
            // after an earlier attempt created it leaves nothing that
            // counts), then the format and the log's end in one batch.
            // Every format-3 record is a valid format-4 record, so there is
            // nothing else to rewrite and no state in between.
            None | Some(FORMAT_3) => {
                let log = BodyLog::open(&path, 0)?;
                let mut batch = sled::Batch::default();
                batch.insert(keys::meta::FORMAT, &FORMAT_VERSION.to_be_bytes());
                batch.insert(keys::meta::BODY_LOG_END, &0u64.to_be_bytes());
                trees.meta.apply_batch(batch)?;
                db.flush()?;
                log
            }
            Some(found) => {
                return Err(StoreError::Format {
                    path,
                    found,
                    expected: FORMAT_VERSION,
                })
            }
        };
        let seq = keys::read_u64(&trees.meta, keys::meta::SEQ)?;
        let replica = Replica {
            inner: Arc::new(Inner {
                path,
                db,
                trees,
                body_log,
                config,
                write_lock: Mutex::new(()),
                committed: tokio::sync::watch::Sender::new(seq),
                usage: Usage::default(),
                next_stream: std::sync::atomic::AtomicU64::new(0),
                id_marks: IdMarks::default(),
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
}
