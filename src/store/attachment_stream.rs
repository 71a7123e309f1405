//! Staging an attachment's bytes as they arrive, so a pull never holds a
//! large attachment whole in memory.
//!
//! An attachment that fits in one chunk ([`CHUNK_BYTES`]) is staged whole
//! in `attachments`, as [`Replica::stage_attachment`] does. A larger one is
//! written chunk by chunk to a file of its own, `attachments/<stream id>`
//! in the replica directory, and not to sled: sled 0.34 keeps large values
//! it wrote in memory (its cache does not count them) and rewrites them
//! with their neighbours, so a large attachment in sled costs its size in
//! memory and a multiple of it on disk. When the body ends and its MD5
//! digest matches, the file is synced and one transaction publishes it: an
//! empty value in `attachments` (so presence, counts and the sweep work as
//! for any digest), `att_chunked` naming the stream and its length, and the
//! `att_staged` mark. Readers ([`Replica::attachment`]) read the file of an
//! empty value that `att_chunked` names.
//!
//! A file nothing names (a stream cut short, a digest mismatch, a crash
//! before publication, bytes the sweep released) is deleted by `open`
//! ([`Replica::drop_unclaimed_files`]); a failed stream deletes its own at
//! once. This module never writes `att_refs` or bodies.
//!
//! Stream ids are not sled's `generate_id`: that counter lives in the sled
//! database, which a compaction replaces with a fresh one whose counter
//! starts again from zero, while the files stay. They come from the
//! directory itself: `open` lists every file and `att_chunked` entry and
//! the next id is above all of them (one replica handle per directory, so
//! an in-memory counter is enough), and a file that exists anyway is
//! skipped rather than fatal.

use super::error::StoreError;
use super::replica::Replica;
use base64::Engine;
use md5::{Digest, Md5};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Bytes buffered before a write to the file; an attachment up to this
/// size is staged whole in sled.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// The directory of attachment files, inside the replica directory.
const DIR: &str = "attachments";

/// Ids skipped because their file exists before a stream gives up.
const STREAM_TRIES: usize = 1000;

/// What [`AttachmentWriter::finish`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Staged {
    /// The bytes are staged (or were already held); their length.
    Stored(u64),
    /// The bytes do not match the digest: nothing was kept.
    Mismatch,
}

/// Writes one attachment's bytes into the replica as they arrive; see the
/// module doc. Dropped before [`AttachmentWriter::finish`], it deletes what
/// it wrote.
pub(crate) struct AttachmentWriter {
    replica: Replica,
    digest: String,
    check_md5: bool,
    md5: Md5,
    buf: Vec<u8>,
    /// The stream id and its open file, once a chunk was written.
    file: Option<(u64, std::fs::File)>,
    len: u64,
}

/// `att_chunked`'s value: the stream id and the total length.
fn encode_chunked(stream: u64, len: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&stream.to_be_bytes());
    v[8..].copy_from_slice(&len.to_be_bytes());
    v
}

fn decode_chunked(digest: &[u8], v: &[u8]) -> Result<(u64, u64), StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "att_chunked entry",
        key: String::from_utf8_lossy(digest).into_owned(),
        detail: format!("{} bytes, expected 16", v.len()),
    };
    let stream = v
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let len = v
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok((u64::from_be_bytes(stream), u64::from_be_bytes(len)))
}

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::AttachmentFile {
        path: path.to_path_buf(),
        source,
    }
}

impl Replica {
    fn attachment_dir(&self) -> PathBuf {
        self.path().join(DIR)
    }

    fn stream_path(&self, stream: u64) -> PathBuf {
        self.attachment_dir().join(format!("{stream:016x}"))
    }

    /// A writer staging the bytes of `digest` as they arrive. With
    /// `check_md5`, [`AttachmentWriter::finish`] compares them with an
    /// `md5-` digest (other kinds are not checked).
    pub(crate) fn attachment_writer(&self, digest: &str, check_md5: bool) -> AttachmentWriter {
        AttachmentWriter {
            replica: self.clone(),
            digest: digest.to_owned(),
            check_md5: check_md5 && digest.starts_with("md5-"),
            md5: Md5::new(),
            buf: Vec::new(),
            file: None,
            len: 0,
        }
    }

    /// Creates the file of a new stream under an id no file has, and
    /// returns both.
    fn new_stream_file(&self) -> Result<(u64, std::fs::File), StoreError> {
        let dir = self.attachment_dir();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let mut tries = 0;
        loop {
            let stream = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
            let path = self.stream_path(stream);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((stream, file)),
                // Only something outside this handle (another program
                // writing into the directory) makes a file appear after
                // open listed them: take the next id.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < STREAM_TRIES => {
                    tries += 1;
                }
                Err(e) => return Err(io_error(&path, e)),
            }
        }
    }

    /// A writer staging bytes whose digest is not known before they arrive:
    /// [`AttachmentWriter::finish_digested`] stages them under the `md5-`
    /// digest of the bytes themselves. A pull uses it for an attachment the
    /// server stored encoded, whose reported digest is of other bytes.
    pub(crate) fn attachment_writer_digesting(&self) -> AttachmentWriter {
        self.attachment_writer("", false)
    }

    /// The file and length `att_chunked` names for `digest`, if any.
    fn chunked(&self, digest: &str) -> Result<Option<(PathBuf, u64)>, StoreError> {
        match self.trees().att_chunked.get(digest.as_bytes())? {
            Some(v) => {
                let (stream, len) = decode_chunked(digest.as_bytes(), &v)?;
                Ok(Some((self.stream_path(stream), len)))
            }
            None => Ok(None),
        }
    }

    /// The bytes of a large attachment, read from its file, when
    /// `att_chunked` names one for `digest`.
    pub(crate) fn chunked_attachment(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((path, len)) = self.chunked(digest)? else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|e| missing(digest, &path, e))?;
        if bytes.len() as u64 != len {
            return Err(wrong_length(digest, bytes.len() as u64, len));
        }
        Ok(Some(bytes))
    }

    /// A reader of a large attachment's file, when `att_chunked` names one
    /// for `digest`, and its length (checked against the file's).
    pub(crate) fn chunked_reader(
        &self,
        digest: &str,
    ) -> Result<Option<(std::fs::File, u64)>, StoreError> {
        let Some((path, len)) = self.chunked(digest)? else {
            return Ok(None);
        };
        let file = std::fs::File::open(&path).map_err(|e| missing(digest, &path, e))?;
        let found = file
            .metadata()
            .map_err(|e| missing(digest, &path, e))?
            .len();
        if found != len {
            return Err(wrong_length(digest, found, len));
        }
        Ok(Some((file, len)))
    }

    /// Checks that the file `att_chunked` names for `digest` (if any) is
    /// there with the right length.
    pub(crate) fn check_chunks(&self, digest: &str) -> Result<(), StoreError> {
        let Some((path, len)) = self.chunked(digest)? else {
            return Ok(());
        };
        let found = std::fs::metadata(&path)
            .map_err(|e| missing(digest, &path, e))?
            .len();
        if found != len {
            return Err(wrong_length(digest, found, len));
        }
        Ok(())
    }

    /// Deletes attachment files nothing names any more (abandoned by a
    /// crash or a failed pull, or released by the sweep) and `att_chunked`
    /// entries whose bytes are gone (run on open).
    pub(crate) fn drop_unclaimed_files(&self) -> Result<(), StoreError> {
        let t = self.trees();
        let mut live = HashSet::new();
        let mut dropped = false;
        // The next stream id goes above every id seen, kept or not.
        let mut next = 0u64;
        let mut saw = |stream: u64| next = next.max(stream.saturating_add(1));
        for item in t.att_chunked.iter() {
            let (digest, v) = item?;
            let held = t.attachments.get(&digest)?.is_some_and(|h| h.is_empty());
            if held {
                let stream = decode_chunked(&digest, &v)?.0;
                saw(stream);
                live.insert(stream);
            } else {
                t.att_chunked.remove(&digest)?;
                dropped = true;
            }
        }
        let dir = self.attachment_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&dir, e)),
        };
        for entry in entries.into_iter().flatten() {
            let entry = entry.map_err(|e| io_error(&dir, e))?;
            let name = entry.file_name();
            let stream = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok());
            if let Some(s) = stream {
                saw(s);
            }
            if stream.is_some_and(|s| live.contains(&s)) {
                continue;
            }
            std::fs::remove_file(entry.path()).map_err(|e| io_error(&entry.path(), e))?;
        }
        self.inner.next_stream.fetch_max(next, Ordering::Relaxed);
        if dropped {
            self.inner.db.flush()?;
        }
        Ok(())
    }
}

fn missing(digest: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Corrupt {
        what: "attachment file",
        key: digest.to_owned(),
        detail: format!("{}: {e}", path.display()),
    }
}

fn wrong_length(digest: &str, found: u64, len: u64) -> StoreError {
    StoreError::Corrupt {
        what: "attachment file",
        key: digest.to_owned(),
        detail: format!("{found} bytes stored, {len} expected"),
    }
}

impl AttachmentWriter {
    /// Takes the next bytes of the body, writing each full chunk to the
    /// attachment's file.
    ///
    /// # Durability
    /// Not synced: the file is synced when the attachment is published
    /// ([`AttachmentWriter::finish`]); until then nothing names it, and
    /// `open` deletes it after a crash.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        self.md5.update(bytes);
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = CHUNK_BYTES - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = rest;
            // A full buffer is written only once more bytes come: a body of
            // one chunk is then staged whole, without a file.
            if self.buf.len() == CHUNK_BYTES && !bytes.is_empty() {
                self.write_chunk()?;
            }
        }
        Ok(())
    }

    fn write_chunk(&mut self) -> Result<(), StoreError> {
        if self.file.is_none() {
            self.file = Some(self.replica.new_stream_file()?);
        }
        if let Some((stream, file)) = &mut self.file {
            if let Err(e) = file.write_all(&self.buf) {
                return Err(io_error(&self.replica.stream_path(*stream), e));
            }
        }
        self.buf.clear();
        Ok(())
    }

    /// Ends the body: checks the digest, then stages the bytes (the file
    /// synced and published in one transaction, or the whole bytes of a
    /// body of one chunk). Bytes already held for this digest are kept and
    /// the new ones dropped.
    ///
    /// # Durability
    /// The file is synced before it is published; the publication is not
    /// flushed, as with [`Replica::stage_attachment`]: the commit that
    /// claims the bytes flushes it, and `open` deletes what none claims.
    pub(crate) fn finish(mut self) -> Result<Staged, StoreError> {
        if self.check_md5 {
            let got = base64::engine::general_purpose::STANDARD
                .encode(std::mem::take(&mut self.md5).finalize());
            if self.digest.strip_prefix("md5-") != Some(got.as_str()) {
                self.abandon();
                return Ok(Staged::Mismatch);
            }
        }
        self.publish().map(Staged::Stored)
    }

    /// Ends the body of a [`Replica::attachment_writer_digesting`] writer:
    /// stages the bytes under `md5-<base64 MD5 of the bytes>`, as
    /// [`AttachmentWriter::finish`] does, and returns that digest with the
    /// length.
    pub(crate) fn finish_digested(mut self) -> Result<(String, u64), StoreError> {
        let md5 = std::mem::take(&mut self.md5).finalize();
        self.digest = format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(md5)
        );
        let digest = self.digest.clone();
        Ok((digest, self.publish()?))
    }

    /// Stages the bytes under `self.digest`; their length.
    fn publish(mut self) -> Result<u64, StoreError> {
        let len = self.len;
        if self.file.is_none() {
            let bytes = std::mem::take(&mut self.buf);
            self.replica.stage_attachment(&self.digest, &bytes)?;
            return Ok(len);
        }
        if !self.buf.is_empty() {
            self.write_chunk()?;
        }
        let Some((stream, file)) = &self.file else {
            return Ok(len);
        };
        let stream = *stream;
        let path = self.replica.stream_path(stream);
        file.sync_all().map_err(|e| io_error(&path, e))?;
        sync_dir(&self.replica.attachment_dir())?;
        let t = self.replica.trees();
        let digest = self.digest.as_bytes();
        let published = (&t.attachments, &t.att_staged, &t.att_chunked)
            .transaction(|(atts, staged, chunked)| {
                if atts.get(digest)?.is_some() {
                    return Ok(false);
                }
                atts.insert(digest, &[])?;
                staged.insert(digest, &[])?;
                chunked.insert(digest, &encode_chunked(stream, len))?;
                Ok::<_, ConflictableTransactionError<StoreError>>(true)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => StoreError::Storage(e),
            })?;
        if published {
            // The file now belongs to the published entry: `Drop` must not
            // delete it.
            self.file = None;
        } else {
            self.abandon();
        }
        Ok(len)
    }

    /// Deletes the file written so far, if any.
    fn abandon(&mut self) {
        let Some((stream, file)) = self.file.take() else {
            return;
        };
        drop(file);
        let path = self.replica.stream_path(stream);
        // If this fails, `open` deletes the file: nothing names it.
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(%e, path = %path.display(), "could not delete an abandoned attachment file");
        }
    }
}

/// Makes a new file's directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl Drop for AttachmentWriter {
    fn drop(&mut self) {
        // A stream cut short: its file goes now.
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::ReplicaConfig;

    fn md5_digest(bytes: &[u8]) -> String {
        format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
        )
    }

    fn big(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn stage_in_pieces(r: &Replica, digest: &str, bytes: &[u8], piece: usize) -> Staged {
        let mut w = r.attachment_writer(digest, true);
        for p in bytes.chunks(piece) {
            w.write(p).unwrap();
        }
        w.finish().unwrap()
    }

    fn files(r: &Replica) -> usize {
        std::fs::read_dir(r.attachment_dir()).map_or(0, |d| d.count())
    }

    #[test]
    fn large_bodies_go_to_a_file_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let bytes = big(3 * CHUNK_BYTES + 123);
        let digest = md5_digest(&bytes);
        let len = bytes.len() as u64;
        assert_eq!(
            stage_in_pieces(&r, &digest, &bytes, 10_000),
            Staged::Stored(len)
        );
        assert_eq!(files(&r), 1);
        assert_eq!(r.attachment(&digest).unwrap().unwrap(), bytes);
        assert!(r
            .trees()
            .att_staged
            .contains_key(digest.as_bytes())
            .unwrap());
        // A second stream of the same bytes keeps the first one's.
        assert_eq!(
            stage_in_pieces(&r, &digest, &bytes, 77_777),
            Staged::Stored(len)
        );
        assert_eq!(files(&r), 1);

        // One chunk exactly, and less: staged whole in sled.
        let one = big(CHUNK_BYTES);
        let d1 = md5_digest(&one);
        stage_in_pieces(&r, &d1, &one, 4096);
        assert_eq!(files(&r), 1);
        assert_eq!(r.attachment(&d1).unwrap().unwrap(), one);
    }

    #[test]
    fn a_digesting_writer_stages_under_the_md5_of_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        for bytes in [b"hello".to_vec(), big(2 * CHUNK_BYTES + 9)] {
            let mut w = r.attachment_writer_digesting();
            for p in bytes.chunks(70_000) {
                w.write(p).unwrap();
            }
            let (digest, len) = w.finish_digested().unwrap();
            assert_eq!(digest, md5_digest(&bytes));
            assert_eq!(len, bytes.len() as u64);
            assert_eq!(r.attachment(&digest).unwrap().unwrap(), bytes);
        }
    }

    #[test]
    fn a_mismatch_or_a_cut_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let bytes = big(2 * CHUNK_BYTES + 5);
        let wrong = md5_digest(b"something else");
        assert_eq!(stage_in_pieces(&r, &wrong, &bytes, 65536), Staged::Mismatch);
        assert!(!r.has_attachment(&wrong).unwrap());
        let mut w = r.attachment_writer(&md5_digest(&bytes), true);
        w.write(&bytes[..CHUNK_BYTES + 10]).unwrap();
        assert_eq!(files(&r), 1);
        drop(w);
        assert_eq!(files(&r), 0);
        assert!(r.trees().attachments.is_empty());
        assert!(r.trees().att_chunked.is_empty());
    }

    #[test]
    fn open_deletes_unpublished_and_unclaimed_files() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = big(2 * CHUNK_BYTES + 5);
        let digest = md5_digest(&bytes);
        {
            let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
            // A crash mid-stream: a file written, nothing published.
            let mut w = r.attachment_writer(&digest, true);
            w.write(&bytes[..CHUNK_BYTES + 1]).unwrap();
            w.write(&bytes[CHUNK_BYTES + 1..CHUNK_BYTES + 2]).unwrap();
            w.file = None;
            drop(w);
            // And one published but never claimed by a commit.
            stage_in_pieces(&r, &digest, &bytes, 65536);
            assert_eq!(files(&r), 2);
            r.inner.db.flush().unwrap();
        }
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert_eq!(files(&r), 0);
        assert!(r.trees().att_chunked.is_empty());
        assert!(r.trees().attachments.is_empty());
    }

    #[test]
    fn a_stream_skips_an_id_whose_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let next = r.inner.next_stream.load(Ordering::Relaxed);
        std::fs::create_dir_all(r.attachment_dir()).unwrap();
        std::fs::write(r.stream_path(next), b"not ours").unwrap();
        let bytes = big(2 * CHUNK_BYTES + 5);
        let digest = md5_digest(&bytes);
        stage_in_pieces(&r, &digest, &bytes, 65536);
        assert_eq!(r.attachment(&digest).unwrap().unwrap(), bytes);
        assert_eq!(std::fs::read(r.stream_path(next)).unwrap(), b"not ours");
    }

    #[test]
    fn check_finds_a_missing_or_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let bytes = big(2 * CHUNK_BYTES + 5);
        let digest = md5_digest(&bytes);
        stage_in_pieces(&r, &digest, &bytes, 65536);
        r.check_chunks(&digest).unwrap();
        let file = std::fs::read_dir(r.attachment_dir())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&file, b"short").unwrap();
        assert!(r.check_chunks(&digest).is_err());
        assert!(r.attachment(&digest).is_err(), "a read says damaged too");
        let report = r.check().unwrap();
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.key == format!("attachment_file/{digest}")),
            "{report:?}"
        );
    }
}
