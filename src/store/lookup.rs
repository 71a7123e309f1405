//! Point reads: one document (its winner, a revision, its tree and
//! leaves), the revisions a replica lacks, the retry list, and an
//! attachment's bytes by digest.

use super::document::{DocRecord, Document};
use super::error::StoreError;
use super::nesting;
use super::reads::ReadError;
use super::replica::Replica;
use crate::revtree::{Leaf, Rev, RevTree};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::ops::Bound;

impl Replica {
    pub(super) fn record(&self, id: &str) -> Result<Option<DocRecord>, StoreError> {
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
    ) -> Result<Option<Map<String, Value>>, ReadError> {
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
        let change = self.read_record(id, |record| {
            self.winner_change(record, id, record.seq, None)
        })?;
        match change.flatten() {
            Some(change) => Ok(Some(change.parse()?.doc)),
            None => Ok(None),
        }
    }

    /// The winning revision of a live document, deserialized into `T` from
    /// the JSON `GET /db/{id}` gives (`_id`, `_rev` and the body).
    /// `None` when the document is missing or deleted;
    /// [`StoreError::Decode`] when it does not fit `T`.
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// #[derive(serde::Deserialize)]
    /// struct CourseConfig { name: String }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// let config: Option<CourseConfig> = replica.get_as("CourseConfig").unwrap();
    /// assert!(config.is_none());
    /// ```
    pub fn get_as<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StoreError> {
        let Some(doc) = self.get(id)?.filter(|d| !d.deleted) else {
            return Ok(None);
        };
        serde_json::from_value(doc.to_json())
            .map(Some)
            .map_err(|e| StoreError::Decode {
                id: id.to_owned(),
                reason: e.to_string(),
            })
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

    /// Of these revisions of `id`, the ones the replica does not have
    /// (a local `_revs_diff`).
    pub fn missing_revs(&self, id: &str, revs: &[Rev]) -> Result<Vec<Rev>, StoreError> {
        let tree = self.record(id)?.map(|r| r.tree).unwrap_or_default();
        Ok(revs.iter().filter(|r| !tree.contains(r)).cloned().collect())
    }

    /// Documents an earlier pull could not store, in id order; the next
    /// pull fetches them again before it reads the changes feed. The whole
    /// list, for inspection: a pull reads it a page at a time.
    pub fn pending_retries(&self) -> Result<Vec<String>, StoreError> {
        Self::retry_ids(self.inner.trees.retry.iter())
    }

    /// At most `limit` ids of the retry list that sort after `after` (from
    /// the start with `None`).
    pub(crate) fn pending_retries_after(
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

    /// Moves past the next `n` bytes without reading them (a large
    /// attachment's file seeks): for a byte range of the attachment.
    pub fn skip(&mut self, n: u64) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        match &mut self.source {
            ReaderSource::Stored(c) => {
                let at = c.position().saturating_add(n);
                c.set_position(at);
            }
            ReaderSource::File(f) => {
                let n = n.min(f.limit());
                let offset = i64::try_from(n).map_err(std::io::Error::other)?;
                f.get_mut().seek(SeekFrom::Current(offset))?;
                f.set_limit(f.limit() - n);
            }
        }
        Ok(())
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
