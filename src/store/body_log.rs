//! The body log (format 4): one append-only file, `bodies.log` in the
//! replica directory, holding the JSON text of every leaf body too large to
//! live in its record. A record names a body by offset and length.
//!
//! Why a file and not a sled tree: a body that goes through sled is copied
//! into a page, re-serialized every time its page is rewritten and split
//! with its neighbours, which made the bodies most of a cold pull's CPU
//! (`benches/store_write.rs`, docs/design.md). Appended here, a batch's
//! bodies cost one write; a read is one `pread`, and a scan in commit
//! order reads the file front to back.
//!
//! The rules that keep it consistent with sled (docs/design.md, "The body
//! log"): bytes are written and synced *before* the transaction whose
//! records name them commits, and that transaction records the log's new
//! end (`meta/body_log_end`); whatever lies past the recorded end is the
//! tail of a batch that never committed, cut off by the next open. Bytes
//! below the end never change until a compaction writes a new log.

use super::document::Extent;
use super::error::StoreError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The log's file name in the replica directory.
pub(crate) const FILE: &str = "bodies.log";

/// The open log of one replica.
pub(crate) struct BodyLog {
    file: File,
    path: PathBuf,
    /// The end recorded by the last committed transaction: readers may read
    /// below it, the next batch writes from it.
    end: AtomicU64,
}

impl std::fmt::Debug for BodyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyLog")
            .field("path", &self.path)
            .field("end", &self.end())
            .finish()
    }
}

fn io_err(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::BodyLog { path, step, source }
}

impl BodyLog {
    /// Opens (creating it) the log in `dir` whose committed end is `end`,
    /// cutting off a tail no transaction committed. The caller holds the
    /// replica's directory lock, so no other process writes the file.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the file is shorter than `end` (bytes
    /// records name are gone), [`StoreError::BodyLog`] for the file system.
    pub(crate) fn open(dir: &Path, end: u64) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        let len = file.metadata().map_err(io_err(&path, "stat"))?.len();
        if len < end {
            return Err(StoreError::corrupt(
                "body log",
                FILE.as_bytes(),
                format!("{len} bytes, but committed records name bytes up to {end}"),
            ));
        }
        if len > end {
            file.set_len(end)
                .map_err(io_err(&path, "cut the uncommitted tail"))?;
            file.sync_all().map_err(io_err(&path, "fsync"))?;
        }
        Ok(BodyLog {
            file,
            path,
            end: AtomicU64::new(end),
        })
    }

    /// The committed end.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Writes `bodies` one after another from the committed end and syncs
    /// them; returns their extents and the end after them. Nothing names
    /// them until the caller's transaction records that end and
    /// [`BodyLog::committed`] is called; a batch that fails leaves bytes
    /// that the next append overwrites. Callers hold the replica's writer
    /// lock: one append at a time.
    pub(crate) fn append(&self, bodies: &[&[u8]]) -> Result<(Vec<Extent>, u64), StoreError> {
        let start = self.end();
        let total: usize = bodies.iter().map(|b| b.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut extents = Vec::with_capacity(bodies.len());
        let mut at = start;
        for body in bodies {
            buf.extend_from_slice(body);
            extents.push(Extent {
                offset: at,
                len: body.len() as u64,
            });
            at += body.len() as u64;
        }
        if !buf.is_empty() {
            self.file
                .write_all_at(&buf, start)
                .map_err(io_err(&self.path, "append"))?;
            self.file.sync_data().map_err(io_err(&self.path, "fsync"))?;
        }
        Ok((extents, at))
    }

    /// Moves the committed end to `end`, after the transaction that
    /// recorded it committed.
    pub(crate) fn committed(&self, end: u64) {
        self.end.fetch_max(end, Ordering::AcqRel);
    }

    /// The bytes of `extent`. Not checked against the committed end: a
    /// reader may see a record the moment its transaction commits, a
    /// moment before the writer moves the end, and its bytes were written
    /// before (`settee check` compares extents with the end).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for an extent past the file's end (a
    /// damaged record), [`StoreError::BodyLog`] for the file system.
    pub(crate) fn read(&self, extent: Extent) -> Result<Vec<u8>, StoreError> {
        let damaged = |detail: String| StoreError::corrupt("body log", FILE.as_bytes(), detail);
        let len = usize::try_from(extent.len)
            .map_err(|_| damaged(format!("a body of {} bytes", extent.len)))?;
        let mut buf = vec![0; len];
        match self.file.read_exact_at(&mut buf, extent.offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(damaged(format!(
                "a record names bytes {}..+{} past the end of the file",
                extent.offset, extent.len
            ))),
            Err(e) => Err(io_err(&self.path, "read")(e)),
        }
    }

    /// Writes one body at the end and moves the end past it, unsynced:
    /// for a log no record names yet (compaction's copy, synced with
    /// [`BodyLog::sync`] before its commit point).
    pub(crate) fn push(&self, body: &[u8]) -> Result<Extent, StoreError> {
        let offset = self.end();
        self.file
            .write_all_at(body, offset)
            .map_err(io_err(&self.path, "append"))?;
        self.committed(offset + body.len() as u64);
        Ok(Extent {
            offset,
            len: body.len() as u64,
        })
    }

    /// Syncs the file (compaction's copy, before its commit point).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_all().map_err(io_err(&self.path, "fsync"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn appends_are_readable_once_committed_and_an_uncommitted_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = BodyLog::open(dir.path(), 0).unwrap();
        let (extents, end) = log.append(&[b"{\"a\":1}", b"{}"]).unwrap();
        assert_eq!(end, 9);
        assert_eq!(log.end(), 0, "not committed yet");
        log.committed(end);
        assert_eq!(log.read(extents[0]).unwrap(), b"{\"a\":1}");
        assert_eq!(log.read(extents[1]).unwrap(), b"{}");
        // A batch that never commits: its bytes are overwritten by the next.
        let (lost, _) = log.append(&[b"{\"lost\":true}"]).unwrap();
        assert_eq!(lost[0].offset, 9);
        let (next, next_end) = log.append(&[b"{\"b\":2}"]).unwrap();
        assert_eq!(next[0].offset, 9, "the failed batch's bytes are reused");
        drop(log);
        // Reopened at the committed end (9): the tail is cut.
        let log = BodyLog::open(dir.path(), 9).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).unwrap().len(), 9);
        assert!(log.read(next[0]).is_err(), "past the end of the file");
        assert!(next_end > 9);
        assert_eq!(log.read(extents[1]).unwrap(), b"{}");
    }

    #[test]
    fn a_log_shorter_than_its_records_say_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(BodyLog::open(dir.path(), 0).unwrap());
        let err = BodyLog::open(dir.path(), 10).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let log = BodyLog::open(dir.path(), 0).unwrap();
        assert!(log
            .read(Extent {
                offset: u64::MAX,
                len: 2
            })
            .is_err());
    }
}
