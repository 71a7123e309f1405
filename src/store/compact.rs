//! Compaction: rewrite a replica into a fresh sled database and swap it in,
//! so that a replica which receives updates for months stays near the size
//! of its live data.
//!
//! Why it exists: sled 0.34 rewrites a page by appending it to its log and
//! reclaims the old copy only once its segment is at most half live, so a
//! replica that takes scattered updates grows by a few times the bytes it
//! changes, towards twice its live data (`docs/design.md`, "Disk and
//! compaction"). Copying every tree, in key order, into a new database
//! drops that dead space (not sled's write amplification of the copy
//! itself, which is about what a cold pull leaves).
//!
//! What it owns: the work directories inside the replica directory
//! (`compact.tmp`, `compact.ready`, `compact.swap`, `compact.old`), the
//! roll-forward that finishes or discards a compaction a crash interrupted
//! (run by every open, under the directory gate of `lock.rs`), the disk
//! baseline of the automatic trigger (`meta/disk_baseline`) and the
//! per-tree usage report.
//!
//! What it must not do: change a single key or value of any tree (views,
//! checkpoints, outbox included: the copy is verified by sled's checksum
//! before it can replace the original), or run while any other handle on
//! the replica is open (it holds sled's lock and the directory gate for the
//! whole run).

use super::body_log::{self, BodyLog};
use super::document::DocRecord;
use super::error::StoreError;
use super::replica::{Replica, ReplicaConfig};
use super::{keys, lock};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// The new database is built here; a crash leaves it to be deleted.
const BUILD: &str = "compact.tmp";
/// The new database, complete, flushed and verified: the commit point of a
/// compaction is the rename of `compact.tmp` to this name.
const READY: &str = "compact.ready";
/// The old database's files have all moved to `compact.old`; what is left
/// here moves into the replica directory.
const SWAP: &str = "compact.swap";
/// The old database's files, deleted once the new ones are in place.
const OLD: &str = "compact.old";

/// Entries per `apply_batch` of the copy, and the bytes that also close a
/// batch; each batch is flushed before the next. sled 0.34 rewrites a leaf
/// page whole every few inserts into it and reclaims a log segment only
/// once at most half of it is live, so how a copy is written decides how
/// much dead space it starts with. Measured on 100k synthetic documents
/// (81 MB of keys and values): batches of 10 000 entries without flushes
/// gave 182-186 MB, single inserts 192 MB, batches of 4000 or ~3 MB each
/// flushed 136-148 MB, the same size as the original written by a pull.
const COPY_BATCH_ENTRIES: usize = 4000;
const COPY_BATCH_BYTES: usize = 4 << 20;

/// How long to wait for sled to let go of a database file after its last
/// handle was dropped (its background threads may hold it for a moment).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The default factor of the automatic trigger (`settee pull
/// --compact-above`): compact after a pull when the replica's size on disk
/// is above this many times its size after its last compaction (or its
/// first pull).
pub const DEFAULT_COMPACT_ABOVE: f64 = 1.25;

/// Settings of one compaction.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CompactOptions {
    /// Page cache of the databases while copying (default: the store's).
    pub cache_capacity: Option<u64>,
    /// Test support: sleep this long between the steps of the swap, so a
    /// test can kill the process inside each of them.
    #[doc(hidden)]
    pub step_pause: Option<Duration>,
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CompactReport {
    /// Bytes of the replica directory before.
    pub bytes_before: u64,
    /// Bytes of the replica directory after.
    pub bytes_after: u64,
    /// Trees copied (sled's default tree included).
    pub trees: usize,
    /// Entries copied, over all trees.
    pub entries: u64,
    /// Bytes of keys and values copied.
    pub live_bytes: u64,
    /// Wall time.
    pub took: Duration,
}

/// Keys and bytes of one tree.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreeUsage {
    /// The tree's name.
    pub name: String,
    /// Entries.
    pub keys: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// Where a replica's bytes are: the directory's files against the live
/// keys and values of every tree.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DiskUsage {
    /// Bytes of every file under the replica directory.
    pub dir_bytes: u64,
    /// What sled reports as its own size on disk (`db` and `blobs/`).
    pub sled_bytes: u64,
    /// Sum of [`TreeUsage::bytes`] and [`DiskUsage::body_log_live_bytes`]:
    /// the data a compaction would copy.
    pub live_bytes: u64,
    /// Bytes of the body log (its committed end).
    pub body_log_bytes: u64,
    /// Of those, the bodies records still name; the rest is superseded
    /// bodies that the next compaction drops.
    pub body_log_live_bytes: u64,
    /// The size the automatic trigger compares with (after the first pull
    /// or the last compaction), when recorded.
    pub baseline_bytes: Option<u64>,
    /// Per tree, in name order.
    pub trees: Vec<TreeUsage>,
}

/// Bytes of every file under `dir` (apparent sizes, as `du -b` counts them).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn io_err(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Compact { path, step, source }
}

/// fsync of a directory, so the renames in it survive a power cut.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir, "fsync the directory"))
}

/// The files of a replica's database: sled 0.34's and the body log.
fn is_database_entry(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs" | body_log::FILE) || name.starts_with("snap.")
}

/// True when a compaction was committed but not yet swapped in: the
/// directory's own sled files may be gone, and the next open finishes it.
pub(crate) fn pending(dir: &Path) -> bool {
    dir.join(READY).is_dir() || dir.join(SWAP).is_dir()
}

/// Finishes a committed compaction, or discards an uncommitted one, that a
/// crash interrupted. Idempotent: each step can be interrupted and run
/// again. The caller holds the directory gate (`lock::Gate`), so no other
/// process runs a compaction or opens the database meanwhile.
pub(crate) fn recover(dir: &Path) -> Result<(), StoreError> {
    let ready = dir.join(READY);
    let swap = dir.join(SWAP);
    let old = dir.join(OLD);
    let build = dir.join(BUILD);
    if !(ready.exists() || swap.exists() || old.exists() || build.exists()) {
        return Ok(());
    }
    if ready.is_dir() {
        // Step 1: the old database leaves, whole, before anything new
        // arrives, so the directory never holds a mix of the two.
        step_one(dir, &ready, &swap)?;
    }
    if swap.is_dir() {
        // Step 2: the new database's files move in; a file already moved
        // is simply no longer in `compact.swap`.
        for entry in std::fs::read_dir(&swap).map_err(io_err(&swap, "list"))? {
            let entry = entry.map_err(io_err(&swap, "list"))?;
            std::fs::rename(entry.path(), dir.join(entry.file_name()))
                .map_err(io_err(&entry.path(), "move the new database in"))?;
        }
        sync_dir(dir)?;
        std::fs::remove_dir(&swap).map_err(io_err(&swap, "remove"))?;
    }
    for leftover in [&old, &build] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(io_err(leftover, "remove"))?;
        }
    }
    sync_dir(dir)
}

/// Waits until nothing holds sled's lock on `db_file` any more: proof that
/// every thread of the database that used it has let go of its files.
fn wait_released(db_file: &Path) -> Result<(), StoreError> {
    let started = Instant::now();
    loop {
        let file = std::fs::File::open(db_file).map_err(io_err(db_file, "open"))?;
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() != fs2::lock_contended_error().kind() => {
                return Err(io_err(db_file, "lock")(e));
            }
            Err(_) if started.elapsed() < RELEASE_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => {
                return Err(StoreError::Locked {
                    path: db_file.to_path_buf(),
                    holder: "this process (sled did not close the database)".to_owned(),
                })
            }
        }
    }
}

/// The two body logs of a compaction: the replica's, and the copy's,
/// which receives the bodies records still name, in record order.
struct Logs {
    old: BodyLog,
    new: BodyLog,
}

impl Logs {
    /// A `docs` record as the copy stores it: each body in the old log
    /// written to the new one, and named there. A record with none is
    /// copied as it is.
    fn relocate(&self, key: &[u8], value: sled::IVec) -> Result<sled::IVec, StoreError> {
        let mut record = DocRecord::decode(key, &value)?;
        let mut moved = false;
        for at in record.log_extents_mut() {
            let bytes = self.old.read(*at)?;
            *at = self.new.push(&bytes)?;
            moved = true;
        }
        Ok(if moved { record.encode().into() } else { value })
    }
}

/// Copies every tree of `from` into `to`, in key order (the `docs`
/// records through [`Logs::relocate`]), and returns (trees, entries,
/// bytes).
fn copy_trees(
    from: &sled::Db,
    to: &sled::Db,
    logs: &Logs,
) -> Result<(usize, u64, u64), StoreError> {
    let names = from.tree_names();
    let (mut entries, mut bytes) = (0u64, 0u64);
    for name in &names {
        let src = from.open_tree(name)?;
        let dst = to.open_tree(name)?;
        let docs = &name[..] == b"docs";
        let mut batch = sled::Batch::default();
        let (mut n, mut size) = (0usize, 0usize);
        for kv in src.iter() {
            let (k, v) = kv?;
            let v = if docs { logs.relocate(&k, v)? } else { v };
            n += 1;
            size += k.len() + v.len();
            entries += 1;
            bytes += (k.len() + v.len()) as u64;
            batch.insert(k, v);
            if n >= COPY_BATCH_ENTRIES || size >= COPY_BATCH_BYTES {
                dst.apply_batch(std::mem::take(&mut batch))?;
                to.flush()?;
                (n, size) = (0, 0);
            }
        }
        if n > 0 {
            dst.apply_batch(batch)?;
        }
    }
    Ok((names.len(), entries, bytes))
}

/// A CRC of a database's content as the replica reads it: every tree's
/// name, keys and values in order (as sled's own checksum), except that a
/// `docs` record's bodies in the body log count by their bytes, not their
/// offsets. The original and the copy must agree.
fn content_checksum(db: &sled::Db, log: &BodyLog) -> Result<u32, StoreError> {
    let mut names = db.tree_names();
    names.sort();
    let mut hasher = crc32fast::Hasher::new();
    for name in &names {
        hasher.update(name);
        let docs = &name[..] == b"docs";
        for kv in db.open_tree(name)?.iter() {
            let (k, v) = kv?;
            hasher.update(&k);
            if !docs {
                hasher.update(&v);
                continue;
            }
            let mut record = DocRecord::decode(&k, &v)?;
            let mut logged = Vec::new();
            for at in record.log_extents_mut() {
                logged.push(log.read(*at)?);
                at.offset = 0;
            }
            if logged.is_empty() {
                hasher.update(&v);
            } else {
                hasher.update(&record.encode());
                logged.iter().for_each(|b| hasher.update(b));
            }
        }
    }
    Ok(hasher.finalize())
}

/// Rewrites the replica at `dir` into a fresh sled database and swaps it in.
///
/// Every tree is copied key by key, the copy's checksum (sled's CRC over
/// every tree's names, keys and values) must equal the original's, and only
/// then does the copy replace the original. The content is identical:
/// documents, revision trees, bodies, attachments, checkpoints, the outbox
/// and dead letters, `_local` documents, view indexes. What changes is the
/// size on disk: the dead pages sled keeps go (a copy still takes sled's
/// write amplification, about what a cold pull of the same data takes).
///
/// # Errors
/// [`StoreError::Locked`] when another process (or another handle in this
/// one) has the replica open: compaction never waits for a holder, it
/// refuses. [`StoreError::NotAReplica`] when `dir` holds no replica,
/// [`StoreError::Compact`] for a file-system step that failed,
/// [`StoreError::Corrupt`] when the copy does not match (nothing is
/// swapped then), [`StoreError::Storage`] for sled's errors.
///
/// # Durability
/// Crash-safe at every point: a kill leaves either the old replica or the
/// new one, never neither. Before the commit point (the rename of
/// `compact.tmp` to `compact.ready`, after the copy was flushed, verified
/// and closed) the old replica is untouched and the next open deletes the
/// partial copy; after it, the next open finishes the swap (moving the old
/// files aside, then the new ones in). When `Ok` is returned the new
/// replica is in place and durable (directory entries fsynced).
pub fn compact(dir: &Path, options: &CompactOptions) -> Result<CompactReport, StoreError> {
    let started = Instant::now();
    if !dir.is_dir() || !(dir.join("db").is_file() || pending(dir)) {
        return Err(StoreError::NotAReplica {
            path: dir.to_path_buf(),
        });
    }
    let cache = options
        .cache_capacity
        .unwrap_or(ReplicaConfig::default().cache_capacity);
    let pause = || {
        if let Some(p) = options.step_pause {
            std::thread::sleep(p);
        }
    };
    // The gate stays held to the end: no other process opens the replica
    // while its files move, and none starts a second compaction.
    let (old, gate) = lock::open_gated(dir, cache, recover)?;
    let bytes_before = dir_size(dir);
    let format = old.open_tree("meta")?.get(keys::meta::FORMAT)?;
    if format.is_none() {
        return Err(StoreError::NotAReplica {
            path: dir.to_path_buf(),
        });
    }
    let build = dir.join(BUILD);
    if build.exists() {
        std::fs::remove_dir_all(&build).map_err(io_err(&build, "remove"))?;
    }
    let new = sled::Config::new()
        .path(&build)
        .cache_capacity(cache)
        .open()
        .map_err(|source| StoreError::Open {
            path: build.clone(),
            source,
        })?;
    let old_meta = old.open_tree("meta")?;
    let old_end = keys::read_u64(&old_meta, keys::meta::BODY_LOG_END)?;
    let logs = Logs {
        old: BodyLog::open(dir, old_end)?,
        new: BodyLog::open(&build, 0)?,
    };
    let (trees, entries, live_bytes) = copy_trees(&old, &new, &logs)?;
    logs.new.sync()?;
    new.flush()?;
    pause();
    let (want, got) = (
        content_checksum(&old, &logs.old)?,
        content_checksum(&new, &logs.new)?,
    );
    if want != got {
        drop(new);
        let _ = std::fs::remove_dir_all(&build);
        return Err(StoreError::corrupt(
            "compacted copy",
            build.to_string_lossy().as_bytes(),
            format!(
                "checksum {got:08x} differs from the original's {want:08x}; nothing was swapped"
            ),
        ));
    }
    // The copy's log ends where its last body does; the trigger's
    // baseline is the size of the copy, recorded in the copy.
    let copied = dir_size(&build);
    {
        let new_meta = new.open_tree("meta")?;
        new_meta.insert(keys::meta::BODY_LOG_END, &logs.new.end().to_be_bytes())?;
        new_meta.insert(keys::meta::DISK_BASELINE, &copied.to_be_bytes())?;
    }
    new.flush()?;
    drop((new, logs, old_meta));
    wait_released(&build.join("db"))?;
    sync_dir(&build)?;
    if build.join("blobs").is_dir() {
        sync_dir(&build.join("blobs"))?;
    }
    pause();
    // Commit point.
    let ready = dir.join(READY);
    std::fs::rename(&build, &ready).map_err(io_err(&build, "rename"))?;
    sync_dir(dir)?;
    pause();
    drop(old);
    wait_released(&dir.join("db"))?;
    recover_paused(dir, options.step_pause)?;
    drop(gate);
    Ok(CompactReport {
        bytes_before,
        bytes_after: dir_size(dir),
        trees,
        entries,
        live_bytes,
        took: started.elapsed(),
    })
}

/// [`recover`], with the test pause between its two steps.
fn recover_paused(dir: &Path, pause: Option<Duration>) -> Result<(), StoreError> {
    if let Some(p) = pause {
        // Step 1 alone (old files aside), a pause, then the rest.
        let ready = dir.join(READY);
        if ready.is_dir() {
            step_one(dir, &ready, &dir.join(SWAP))?;
            std::thread::sleep(p);
        }
    }
    recover(dir)
}

/// Moves the old database's files into `compact.old`, then renames
/// `compact.ready` to `compact.swap`.
fn step_one(dir: &Path, ready: &Path, swap: &Path) -> Result<(), StoreError> {
    let old = dir.join(OLD);
    std::fs::create_dir_all(&old).map_err(io_err(&old, "create"))?;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "list"))? {
        let entry = entry.map_err(io_err(dir, "list"))?;
        let name = entry.file_name();
        if is_database_entry(&name.to_string_lossy()) {
            std::fs::rename(entry.path(), old.join(&name))
                .map_err(io_err(&entry.path(), "move the old database aside"))?;
        }
    }
    sync_dir(&old)?;
    sync_dir(dir)?;
    std::fs::rename(ready, swap).map_err(io_err(ready, "rename"))?;
    sync_dir(dir)
}

impl Replica {
    /// Opens the replica at `path` like [`Replica::open`], first compacting
    /// it when it is above `factor` times its baseline
    /// ([`Replica::should_compact`]); `None` never compacts. For an owner
    /// that opens a replica before anything else in the process holds it
    /// (the sync service, at the first use of a database): the moment the
    /// compaction needs the replica to itself. A failed compaction is
    /// logged, and the replica opened as it is.
    ///
    /// # Errors
    /// As [`Replica::open`].
    ///
    /// # Durability
    /// As [`compact`]: a crash leaves the old replica or the new one.
    pub fn open_compacted(
        path: impl AsRef<Path>,
        config: ReplicaConfig,
        factor: Option<f64>,
    ) -> Result<(Replica, Option<CompactReport>), StoreError> {
        let path = path.as_ref();
        let replica = Replica::open(path, config.clone())?;
        let Some(factor) = factor.filter(|f| *f > 0.0) else {
            return Ok((replica, None));
        };
        if !replica.should_compact(factor)? {
            return Ok((replica, None));
        }
        drop(replica);
        let options = CompactOptions {
            cache_capacity: Some(config.cache_capacity),
            ..Default::default()
        };
        let report = match compact(path, &options) {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compaction at open failed");
                None
            }
        };
        Ok((Replica::open(path, config)?, report))
    }

    /// Keys and bytes per tree, and the directory's size: where the disk
    /// goes. Reads every entry of every tree (seconds on a large replica).
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let db = &self.inner.db;
        let mut names: Vec<_> = db.tree_names();
        names.sort();
        let mut trees = Vec::with_capacity(names.len());
        let mut body_log_live_bytes = 0u64;
        for name in names {
            let tree = db.open_tree(&name)?;
            let docs = &name[..] == b"docs";
            let (mut keys, mut bytes) = (0u64, 0u64);
            for kv in tree.iter() {
                let (k, v) = kv?;
                keys += 1;
                bytes += (k.len() + v.len()) as u64;
                if docs {
                    let mut record = DocRecord::decode(&k, &v)?;
                    body_log_live_bytes += record.log_extents_mut().map(|at| at.len).sum::<u64>();
                }
            }
            trees.push(TreeUsage {
                name: String::from_utf8_lossy(&name).into_owned(),
                keys,
                bytes,
            });
        }
        Ok(DiskUsage {
            dir_bytes: dir_size(self.path()),
            sled_bytes: db.size_on_disk()?,
            live_bytes: trees.iter().map(|t| t.bytes).sum::<u64>() + body_log_live_bytes,
            body_log_bytes: self.body_log().end(),
            body_log_live_bytes,
            baseline_bytes: self.disk_baseline()?,
            trees,
        })
    }

    /// The size the automatic compaction trigger compares with: the
    /// replica's size after its last compaction, or when first recorded.
    pub fn disk_baseline(&self) -> Result<Option<u64>, StoreError> {
        match self.inner.trees.meta.get(keys::meta::DISK_BASELINE)? {
            Some(v) => keys::decode_u64(keys::meta::DISK_BASELINE, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Decides whether the replica should be compacted: true when its
    /// directory is larger than `factor` times its baseline. A replica
    /// without a baseline (never compacted, or first pulled by an older
    /// settee) records its current size as the baseline and answers false.
    ///
    /// # Durability
    /// The baseline, when recorded, is flushed before `Ok`; losing it only
    /// means it is recorded again.
    pub fn should_compact(&self, factor: f64) -> Result<bool, StoreError> {
        let size = dir_size(self.path());
        match self.disk_baseline()? {
            Some(base) => Ok(base > 0 && size as f64 > factor * base as f64),
            None => {
                self.inner
                    .trees
                    .meta
                    .insert(keys::meta::DISK_BASELINE, &size.to_be_bytes())?;
                self.inner.db.flush()?;
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ReplicaConfig;

    fn replica_with_data(dir: &Path) {
        let r = Replica::open(dir, ReplicaConfig::default()).unwrap();
        let t = r.open_tree("views").unwrap();
        for i in 0..2000u32 {
            t.insert(i.to_be_bytes(), vec![7u8; 300]).unwrap();
        }
        for i in 0..2000u32 {
            t.insert(i.to_be_bytes(), vec![8u8; 310]).unwrap();
        }
        r.trees().local.insert(b"x", b"{}".to_vec()).unwrap();
        r.flush().unwrap();
    }

    #[test]
    fn compaction_keeps_every_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        replica_with_data(&dir);
        let before = {
            let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
            r.inner.db.checksum().unwrap()
        };
        let report = compact(&dir, &CompactOptions::default()).unwrap();
        assert!(report.entries >= 2001, "{report:?}");
        let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        let meta = r.open_tree("meta").unwrap();
        let baseline = meta.remove(keys::meta::DISK_BASELINE).unwrap();
        assert!(baseline.is_some());
        assert_eq!(r.inner.db.checksum().unwrap(), before);
        for name in [BUILD, READY, SWAP, OLD] {
            assert!(!dir.join(name).exists(), "{name} left behind");
        }
    }

    /// Superseded bodies stay in the body log until a compaction, which
    /// copies only the bodies records name; every leaf reads back the same.
    #[test]
    fn compaction_drops_dead_bodies_from_the_body_log() {
        use crate::store::{IncomingRev, WriteBatch};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let body = |v: u32| {
            let text = "x".repeat(400);
            serde_json::value::to_raw_value(&serde_json::json!({ "v": v, "text": text })).unwrap()
        };
        let rev = |id: &str, gen: u64, hashes: &[&str], v: u32| IncomingRev {
            id: id.into(),
            path: crate::revtree::RevPath {
                start: gen,
                ids: hashes.iter().map(|s| s.to_string()).collect(),
            },
            deleted: false,
            body: body(v),
        };
        let log_len = || std::fs::metadata(dir.join(body_log::FILE)).unwrap().len();
        {
            let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
            let commit = |revs| {
                r.commit_blocking(&WriteBatch {
                    revs,
                    ..WriteBatch::default()
                })
                .unwrap()
            };
            commit(
                (0..50)
                    .map(|i| rev(&format!("d{i}"), 1, &["a"], i))
                    .collect(),
            );
            commit(
                (0..50)
                    .map(|i| rev(&format!("d{i}"), 2, &["b", "a"], i + 100))
                    .collect(),
            );
            // A conflict: both leaves keep their bodies.
            commit(vec![rev("d0", 2, &["c", "a"], 7)]);
        }
        let before = log_len();
        {
            let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
            let usage = r.disk_usage().unwrap();
            assert_eq!(usage.body_log_bytes, before);
            assert!(usage.body_log_live_bytes * 10 < before * 6, "{usage:?}");
        }
        let report = compact(&dir, &CompactOptions::default()).unwrap();
        let after = log_len();
        // 101 bodies written, 51 still leaves.
        assert!(
            after * 10 < before * 6,
            "{before} -> {after} bytes: {report:?}"
        );
        let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        assert_eq!(r.body_log().end(), after);
        let usage = r.disk_usage().unwrap();
        assert_eq!(
            usage.body_log_live_bytes, after,
            "only live bodies are left"
        );
        for i in 1..50u32 {
            let doc = r.get(&format!("d{i}")).unwrap().unwrap();
            assert_eq!(doc.body["v"], i + 100);
        }
        let leaves = r.leaves("d0").unwrap();
        assert_eq!(leaves.len(), 2);
        for leaf in &leaves {
            assert!(
                r.get_rev("d0", &leaf.rev).unwrap().is_some(),
                "{}",
                leaf.rev
            );
        }
        assert!(r.check().unwrap().is_ok());
    }

    #[test]
    fn a_held_replica_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        replica_with_data(&dir);
        let _held = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        let e = compact(&dir, &CompactOptions::default()).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
    }

    #[test]
    fn no_replica_no_compaction() {
        let tmp = tempfile::tempdir().unwrap();
        let e = compact(tmp.path(), &CompactOptions::default()).unwrap_err();
        assert!(matches!(e, StoreError::NotAReplica { .. }), "{e:?}");
    }

    /// Stages `bytes` as a large attachment (a file of its own) and
    /// commits a document whose stub claims it.
    fn store_large_attachment(r: &Replica, id: &str, bytes: &[u8]) -> String {
        use base64::Engine;
        use md5::Digest;
        let digest = format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
        );
        let mut w = r.attachment_writer(&digest, true);
        w.write(bytes).unwrap();
        w.finish().unwrap();
        let body = serde_json::json!({"_attachments": {"f.bin": {
            "content_type": "application/octet-stream",
            "digest": digest,
            "length": bytes.len(),
            "revpos": 1,
            "stub": true,
        }}});
        r.commit_blocking(&super::super::WriteBatch {
            revs: vec![super::super::IncomingRev {
                id: id.to_owned(),
                path: crate::revtree::RevPath {
                    start: 1,
                    ids: vec!["a".to_owned()],
                },
                deleted: false,
                body: serde_json::value::to_raw_value(&body).unwrap(),
            }],
            ..Default::default()
        })
        .unwrap();
        digest
    }

    /// Issue 17, defect 3: a compaction swapped in a fresh sled database,
    /// whose id generator started again at 0, while the attachment files
    /// named by the old ids stayed; the next large attachment got an id a
    /// file already had and its stream failed (`AlreadyExists`). Stream ids
    /// now come from the directory's own files.
    #[test]
    fn issue_17_a_large_attachment_after_compaction_gets_a_fresh_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let size = 2 * super::super::attachment_stream::CHUNK_BYTES + 17;
        let first: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let second: Vec<u8> = (0..size).map(|i| (i * 13 % 241) as u8).collect();
        let d1 = {
            let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
            store_large_attachment(&r, "one", &first)
        };
        compact(&dir, &CompactOptions::default()).unwrap();
        let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        let d2 = store_large_attachment(&r, "two", &second);
        assert_eq!(r.attachment(&d1).unwrap().unwrap(), first);
        assert_eq!(r.attachment(&d2).unwrap().unwrap(), second);
        drop(r);
        // And again after the next compaction, and a reopen.
        compact(&dir, &CompactOptions::default()).unwrap();
        let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        let third: Vec<u8> = (0..size).map(|i| (i * 3 % 239) as u8).collect();
        let d3 = store_large_attachment(&r, "three", &third);
        for (d, bytes) in [(&d1, &first), (&d2, &second), (&d3, &third)] {
            assert_eq!(&r.attachment(d).unwrap().unwrap(), bytes);
        }
        assert!(r.check().unwrap().violations.is_empty());
    }

    #[test]
    fn an_uncommitted_copy_is_discarded_and_a_committed_one_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        replica_with_data(&dir);
        // A crash during the copy: compact.tmp is deleted, the old stays.
        std::fs::create_dir_all(dir.join(BUILD).join("blobs")).unwrap();
        std::fs::write(dir.join(BUILD).join("db"), b"partial").unwrap();
        let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        assert!(!dir.join(BUILD).exists());
        assert_eq!(r.get_local("x").unwrap(), Some(serde_json::json!({})));
    }
}
