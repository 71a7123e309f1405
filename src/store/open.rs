//! Opening a replica: the directory lock, a compaction a crash
//! interrupted, the format check, and the clean-up of bytes no commit
//! claimed.

use super::compact;
use super::error::StoreError;
use super::keys::{self, decode_u64};
use super::lock;
use super::replica::{Inner, Replica, ReplicaConfig, Trees};
use super::usage::Usage;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The on-disk format this build reads and writes (3: document records are
/// binary and keep a single leaf's body inline; 2: attachment bytes are
/// reference-counted in `att_refs`). Replicas of an older format must be
/// pulled again into a new directory.
pub const FORMAT_VERSION: u64 = 3;

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
                usage: Usage::default(),
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
}
