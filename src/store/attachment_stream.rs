//! Staging an attachment's bytes as they arrive, so a pull never holds a
//! large attachment whole in memory.
//!
//! An attachment that fits in one chunk ([`CHUNK_BYTES`]) is staged whole
//! in `attachments`, as [`Replica::stage_attachment`] does. A larger one is
//! written chunk by chunk to `att_chunks` under a stream id of its own
//! (`att_streams` registers the stream before its first chunk); when the
//! last chunk is written and the MD5 digest checked, one transaction
//! publishes it: an empty value in `attachments` (so presence, counts and
//! the sweep work as for any digest), `att_chunked` naming the stream and
//! its length, and the `att_staged` mark. Readers
//! ([`Replica::attachment`]) assemble the chunks of an empty value that
//! `att_chunked` names.
//!
//! Chunks of a stream that was abandoned (a cut body, a digest mismatch, a
//! crash), or whose bytes a sweep released, are deleted by `open`
//! ([`Replica::drop_unclaimed_chunks`]); an abandoned stream also deletes
//! its own at once. This module never writes `att_refs` or bodies.

use super::{Replica, StoreError};
use base64::Engine;
use md5::{Digest, Md5};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

/// Bytes per stored chunk; also the most a stream buffers.
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

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
    /// The stream id, once a chunk was written.
    stream: Option<u64>,
    chunks: u32,
    len: u64,
}

fn stream_prefix(digest: &str, stream: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(digest.len() + 9);
    k.extend_from_slice(digest.as_bytes());
    k.push(0);
    k.extend_from_slice(&stream.to_be_bytes());
    k
}

fn chunk_key(digest: &str, stream: u64, index: u32) -> Vec<u8> {
    let mut k = stream_prefix(digest, stream);
    k.extend_from_slice(&index.to_be_bytes());
    k
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

impl Replica {
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
            stream: None,
            chunks: 0,
            len: 0,
        }
    }

    /// The bytes of a chunked attachment, assembled, when `att_chunked`
    /// names a stream for `digest`.
    pub(crate) fn chunked_attachment(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.trees();
        let Some(v) = t.att_chunked.get(digest.as_bytes())? else {
            return Ok(None);
        };
        let (stream, len) = decode_chunked(digest.as_bytes(), &v)?;
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for item in t.att_chunks.scan_prefix(stream_prefix(digest, stream)) {
            let (_, chunk) = item?;
            out.extend_from_slice(&chunk);
        }
        if out.len() as u64 != len {
            return Err(StoreError::Corrupt {
                what: "attachment chunks",
                key: digest.to_owned(),
                detail: format!("{} bytes stored, {len} expected", out.len()),
            });
        }
        Ok(Some(out))
    }

    /// Checks that the chunks `att_chunked` names for `digest` (if any)
    /// add up to its length, without holding them all.
    pub(crate) fn check_chunks(&self, digest: &str) -> Result<(), StoreError> {
        let t = self.trees();
        let Some(v) = t.att_chunked.get(digest.as_bytes())? else {
            return Ok(());
        };
        let (stream, len) = decode_chunked(digest.as_bytes(), &v)?;
        let mut stored = 0u64;
        for item in t.att_chunks.scan_prefix(stream_prefix(digest, stream)) {
            stored += item?.1.len() as u64;
        }
        if stored != len {
            return Err(StoreError::Corrupt {
                what: "attachment chunks",
                key: digest.to_owned(),
                detail: format!("{stored} bytes stored, {len} expected"),
            });
        }
        Ok(())
    }

    /// Deletes the chunks of streams nothing names any more: abandoned by a
    /// crash or a failed pull, or released by the sweep (run on open).
    pub(crate) fn drop_unclaimed_chunks(&self) -> Result<(), StoreError> {
        let t = self.trees();
        let mut dropped = false;
        for item in t.att_streams.iter() {
            let (key, _) = item?;
            let Some(split) = key.iter().position(|b| *b == 0) else {
                t.att_streams.remove(&key)?;
                continue;
            };
            let digest = &key[..split];
            let stream = key
                .get(split + 1..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let named = match t.att_chunked.get(digest)? {
                Some(v) => Some(decode_chunked(digest, &v)?.0),
                None => None,
            };
            let head_is_chunked = t.attachments.get(digest)?.is_some_and(|h| h.is_empty());
            if head_is_chunked && named.is_some() && named == stream {
                continue;
            }
            for chunk in t.att_chunks.scan_prefix(&key) {
                t.att_chunks.remove(chunk?.0)?;
            }
            if named.is_some() && named == stream {
                t.att_chunked.remove(digest)?;
            }
            t.att_streams.remove(&key)?;
            dropped = true;
        }
        if dropped {
            self.inner.db.flush()?;
        }
        Ok(())
    }
}

impl AttachmentWriter {
    /// Takes the next bytes of the body, storing each full chunk.
    ///
    /// # Durability
    /// Not flushed: chunks become durable with the commit that claims the
    /// attachment; until it is published they belong to no one, and `open`
    /// deletes them after a crash.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        self.md5.update(bytes);
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = CHUNK_BYTES - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = rest;
            // A full buffer is written only once more bytes come: the last
            // chunk is written by `finish`, and a body of one chunk is then
            // staged whole.
            if self.buf.len() == CHUNK_BYTES && !bytes.is_empty() {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), StoreError> {
        let t = self.replica.trees();
        let stream = match self.stream {
            Some(s) => s,
            None => {
                let s = self.replica.inner.db.generate_id()?;
                t.att_streams.insert(stream_prefix(&self.digest, s), &[])?;
                self.stream = Some(s);
                s
            }
        };
        t.att_chunks.insert(
            chunk_key(&self.digest, stream, self.chunks),
            std::mem::take(&mut self.buf),
        )?;
        self.buf.reserve(CHUNK_BYTES);
        self.chunks += 1;
        Ok(())
    }

    /// Ends the body: checks the digest, then stages the bytes (one
    /// transaction publishing the chunks, or the whole bytes of a body of
    /// one chunk). Bytes already held for this digest are kept and the new
    /// ones dropped.
    ///
    /// # Durability
    /// As [`Replica::stage_attachment`]: not flushed; the commit that
    /// claims the bytes flushes them, and `open` deletes them if none does.
    pub(crate) fn finish(mut self) -> Result<Staged, StoreError> {
        if self.check_md5 {
            let got = base64::engine::general_purpose::STANDARD
                .encode(std::mem::take(&mut self.md5).finalize());
            if self.digest.strip_prefix("md5-") != Some(got.as_str()) {
                self.abandon()?;
                return Ok(Staged::Mismatch);
            }
        }
        let len = self.len;
        if self.stream.is_none() {
            let bytes = std::mem::take(&mut self.buf);
            self.replica.stage_attachment(&self.digest, &bytes)?;
            return Ok(Staged::Stored(len));
        }
        if !self.buf.is_empty() {
            self.flush_chunk()?;
        }
        let Some(stream) = self.stream else {
            return Ok(Staged::Stored(len));
        };
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
            // Ownership passes to the published entry: `Drop` must not
            // delete these chunks.
            self.stream = None;
        } else {
            self.abandon()?;
        }
        Ok(Staged::Stored(len))
    }

    /// Deletes the chunks written so far and the stream's registration.
    fn abandon(&mut self) -> Result<(), StoreError> {
        let Some(stream) = self.stream.take() else {
            return Ok(());
        };
        let t = self.replica.trees();
        let prefix = stream_prefix(&self.digest, stream);
        for chunk in t.att_chunks.scan_prefix(&prefix) {
            t.att_chunks.remove(chunk?.0)?;
        }
        t.att_streams.remove(prefix)?;
        Ok(())
    }
}

impl Drop for AttachmentWriter {
    fn drop(&mut self) {
        // A stream cut short: its chunks go now; if this fails, `open`
        // deletes them.
        if let Err(e) = self.abandon() {
            tracing::warn!(%e, "could not delete the chunks of an abandoned attachment");
        }
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

    #[test]
    fn large_bodies_are_stored_in_chunks_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let bytes = big(3 * CHUNK_BYTES + 123);
        let digest = md5_digest(&bytes);
        let len = bytes.len() as u64;
        assert_eq!(
            stage_in_pieces(&r, &digest, &bytes, 10_000),
            Staged::Stored(len)
        );
        assert_eq!(r.trees().att_chunks.len(), 4);
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
        assert_eq!(r.trees().att_chunks.len(), 4);
        assert_eq!(r.trees().att_streams.len(), 1);

        // One chunk exactly, and less: staged whole.
        let one = big(CHUNK_BYTES);
        let d1 = md5_digest(&one);
        stage_in_pieces(&r, &d1, &one, 4096);
        assert_eq!(r.trees().att_chunks.len(), 4);
        assert_eq!(r.attachment(&d1).unwrap().unwrap(), one);
    }

    #[test]
    fn check_finds_a_missing_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let bytes = big(2 * CHUNK_BYTES + 5);
        let digest = md5_digest(&bytes);
        stage_in_pieces(&r, &digest, &bytes, 65536);
        r.check_chunks(&digest).unwrap();
        let (first, _) = r.trees().att_chunks.first().unwrap().unwrap();
        r.trees().att_chunks.remove(first).unwrap();
        assert!(r.check_chunks(&digest).is_err());
        assert!(r.attachment(&digest).is_err(), "a read says damaged too");
        let report = r.check().unwrap();
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.key == format!("att_chunks/{digest}")),
            "{report:?}"
        );
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
        assert_eq!(r.trees().att_chunks.len(), 1);
        drop(w);
        assert!(r.trees().att_chunks.is_empty());
        assert!(r.trees().att_streams.is_empty());
        assert!(r.trees().attachments.is_empty());
    }

    #[test]
    fn open_deletes_unpublished_and_unclaimed_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = big(2 * CHUNK_BYTES + 5);
        let digest = md5_digest(&bytes);
        {
            let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
            // A crash mid-stream: chunks written, nothing published.
            let mut w = r.attachment_writer(&digest, true);
            w.write(&bytes[..CHUNK_BYTES + 1]).unwrap();
            w.write(&bytes[CHUNK_BYTES + 1..CHUNK_BYTES + 2]).unwrap();
            w.stream = None;
            drop(w);
            // And one published but never claimed by a commit.
            stage_in_pieces(&r, &digest, &bytes, 65536);
            assert_eq!(r.trees().att_streams.len(), 2);
            r.inner.db.flush().unwrap();
        }
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let t = r.trees();
        assert!(t.att_chunks.is_empty());
        assert!(t.att_streams.is_empty());
        assert!(t.att_chunked.is_empty());
        assert!(t.attachments.is_empty());
    }
}
