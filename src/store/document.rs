//! What the store hands out: documents as CouchDB shows them, and the
//! per-document record it keeps (the revision tree and the local sequence).

use crate::revtree::{Rev, RevTree};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One revision of a document, read from the replica.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Document {
    /// The document id.
    pub id: String,
    /// This revision.
    pub rev: Rev,
    /// True for a tombstone.
    pub deleted: bool,
    /// The body without `_id`, `_rev` and `_deleted`; attachments appear as
    /// CouchDB stubs under `_attachments`.
    pub body: Map<String, Value>,
    /// Live leaves other than the winner (`_conflicts`); empty unless this
    /// is the winning revision.
    pub conflicts: Vec<Rev>,
    /// Deleted leaves other than the winner (`_deleted_conflicts`); empty
    /// unless this is the winning revision.
    pub deleted_conflicts: Vec<Rev>,
}

impl Document {
    /// The document as plain `GET /db/{id}` shows it: `_id`, `_rev`, the
    /// body, and `_deleted` on a tombstone.
    pub fn to_json(&self) -> Value {
        self.render(false)
    }

    /// The document as `GET /db/{id}?conflicts=true&deleted_conflicts=true`
    /// shows it: [`Document::to_json`] plus `_conflicts` and
    /// `_deleted_conflicts` when there are any.
    pub fn to_json_with_conflicts(&self) -> Value {
        self.render(true)
    }

    fn render(&self, conflicts: bool) -> Value {
        let mut out = Map::with_capacity(self.body.len() + 4);
        out.insert("_id".into(), Value::String(self.id.clone()));
        out.insert("_rev".into(), Value::String(self.rev.to_string()));
        for (k, v) in &self.body {
            out.insert(k.clone(), v.clone());
        }
        if self.deleted {
            out.insert("_deleted".into(), Value::Bool(true));
        }
        let list = |revs: &[Rev]| {
            Value::Array(revs.iter().map(|r| Value::String(r.to_string())).collect())
        };
        if conflicts && !self.conflicts.is_empty() {
            out.insert("_conflicts".into(), list(&self.conflicts));
        }
        if conflicts && !self.deleted_conflicts.is_empty() {
            out.insert("_deleted_conflicts".into(), list(&self.deleted_conflicts));
        }
        Value::Object(out)
    }

    /// The attachment stubs of this revision, by name.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, AttachmentStub)> {
        self.body
            .get("_attachments")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, stub)| Some((name.as_str(), AttachmentStub::from_json(stub)?)))
    }
}

/// The metadata CouchDB shows for an attachment (`"stub": true`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachmentStub {
    /// MIME type.
    pub content_type: String,
    /// `md5-<base64>`: the store keeps one copy of the bytes per digest.
    pub digest: String,
    /// Length in bytes.
    pub length: Option<u64>,
    /// The generation that last changed the attachment.
    pub revpos: Option<u64>,
}

impl AttachmentStub {
    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        Some(AttachmentStub {
            content_type: v.get("content_type")?.as_str()?.to_owned(),
            digest: v.get("digest")?.as_str()?.to_owned(),
            length: v.get("length").and_then(Value::as_u64),
            revpos: v.get("revpos").and_then(Value::as_u64),
        })
    }
}

/// Summary of a document's winning revision, as listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocInfo {
    /// The document id.
    pub id: String,
    /// The winning revision.
    pub rev: Rev,
    /// True when the winner is a tombstone.
    pub deleted: bool,
    /// The local sequence of the document's last change.
    pub seq: u64,
}

/// The `docs` tree record: a document's revision tree, its local sequence
/// and where the body of each leaf is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DocRecord {
    pub(crate) tree: RevTree,
    pub(crate) seq: u64,
    /// Where the leaves' bodies are.
    pub(crate) bodies: LeafBodies,
}

/// Where the bodies of a document's leaves are kept.
///
/// A document with a single leaf keeps that leaf's body in the record
/// itself when it is small ([`LeafBodies::Inline`]), else in the document's
/// own `by_seq` entry ([`LeafBodies::Logged`]): a cold pull writes a record
/// and one append per document instead of a record, a body and a sequence
/// entry, and an update drops the old body with the old record or entry
/// instead of leaving garbage for the sweep. A document with several leaves
/// keeps every leaf body in the `bodies` tree ([`LeafBodies::Stored`]).
/// Readers ask [`DocRecord::body_at`]; only the commit changes this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeafBodies {
    /// Leaf revision → key of its body in the `bodies` tree (empty for a
    /// record being built).
    Stored(BTreeMap<Rev, u64>),
    /// The only leaf's body, in the record.
    Inline {
        /// The leaf.
        rev: Rev,
        /// Its JSON text.
        body: Vec<u8>,
    },
    /// The only leaf's body, in the record's own `by_seq` entry.
    Logged {
        /// The leaf.
        rev: Rev,
        /// Whether the body has attachment stubs (only then must the
        /// commit that replaces it read it, to release their counts).
        stubs: bool,
    },
}

impl Default for LeafBodies {
    fn default() -> Self {
        LeafBodies::Stored(BTreeMap::new())
    }
}

/// Where one revision's body is, from [`DocRecord::body_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyAt<'a> {
    /// In the record: these bytes.
    Inline(&'a [u8]),
    /// In the `by_seq` entry of this local sequence (the record's own).
    Entry(u64),
    /// In the `bodies` tree under this key.
    Stored(u64),
}

/// First byte of an encoded record: the layout's version, so a later
/// layout can be told apart from this one (and from format 2's JSON, which
/// starts with `{`).
const RECORD_V1: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over an encoded record; every read is bounds-checked, so a
/// damaged record is an error, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let (&b, rest) = self.0.split_first().ok_or("truncated")?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        if len > self.0.len() {
            return Err("truncated");
        }
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| "invalid UTF-8")
    }
}

fn parse_rev(s: &str) -> Result<Rev, String> {
    s.parse()
        .map_err(|e: crate::revtree::InvalidRev| e.to_string())
}

impl DocRecord {
    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, super::error::StoreError> {
        Self::decode_v1(bytes)
            .map_err(|e| super::error::StoreError::corrupt("document record", key, e))
    }

    fn decode_v1(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        if r.byte()? != RECORD_V1 {
            return Err("unknown record layout".to_owned());
        }
        let seq = r.varint()?;
        let n = r.varint()?;
        let mut nodes = Vec::with_capacity(usize::try_from(n.min(1024)).unwrap_or(0));
        for _ in 0..n {
            let pos = r.varint()?;
            let hash = r.string()?;
            let parent = match r.varint()? {
                0 => None,
                p => Some(u32::try_from(p - 1).map_err(|_| "parent index too large")?),
            };
            let deleted = r.byte()? != 0;
            nodes.push((pos, hash, parent, deleted));
        }
        let tree = RevTree::from_node_parts(nodes)?;
        let mut stored = BTreeMap::new();
        for _ in 0..r.varint()? {
            let rev = parse_rev(&r.string()?)?;
            stored.insert(rev, r.varint()?);
        }
        let bodies = match r.byte()? {
            0 => LeafBodies::Stored(stored),
            _ if !stored.is_empty() => {
                return Err("a single leaf's body beside stored bodies".to_owned())
            }
            1 => {
                let rev = parse_rev(&r.string()?)?;
                LeafBodies::Inline {
                    rev,
                    body: std::mem::take(&mut r.0).to_vec(),
                }
            }
            2 => {
                let rev = parse_rev(&r.string()?)?;
                LeafBodies::Logged {
                    rev,
                    stubs: r.byte()? != 0,
                }
            }
            _ => return Err("unknown body placement".to_owned()),
        };
        Ok(DocRecord { tree, seq, bodies })
    }

    /// The record as stored: a compact binary layout (version byte, `seq`,
    /// the tree's nodes, the external body ids, then the inline body, if
    /// any, as the record's last bytes). JSON (format 2) cost a parse of
    /// every node on each read and write of a document.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let inline_len = match &self.bodies {
            LeafBodies::Inline { body, .. } => body.len() + 40,
            _ => 0,
        };
        let mut out = Vec::with_capacity(16 + self.tree.len() * 40 + inline_len);
        out.push(RECORD_V1);
        put_varint(&mut out, self.seq);
        put_varint(&mut out, self.tree.len() as u64);
        for (pos, hash, parent, deleted) in self.tree.node_parts() {
            put_varint(&mut out, pos);
            put_bytes(&mut out, hash.as_bytes());
            put_varint(&mut out, parent.map_or(0, |p| u64::from(p) + 1));
            out.push(u8::from(deleted));
        }
        match &self.bodies {
            LeafBodies::Stored(stored) => {
                put_varint(&mut out, stored.len() as u64);
                for (rev, id) in stored {
                    put_bytes(&mut out, rev.to_string().as_bytes());
                    put_varint(&mut out, *id);
                }
                out.push(0);
            }
            LeafBodies::Inline { rev, body } => {
                out.push(0);
                out.push(1);
                put_bytes(&mut out, rev.to_string().as_bytes());
                out.extend_from_slice(body);
            }
            LeafBodies::Logged { rev, stubs } => {
                out.push(0);
                out.push(2);
                put_bytes(&mut out, rev.to_string().as_bytes());
                out.push(u8::from(*stubs));
            }
        }
        out
    }

    /// Where the body of leaf `rev` is; `None` when the replica keeps no
    /// body for it (not a leaf).
    pub(crate) fn body_at(&self, rev: &Rev) -> Option<BodyAt<'_>> {
        match &self.bodies {
            LeafBodies::Inline { rev: r, body } if r == rev => Some(BodyAt::Inline(body)),
            LeafBodies::Logged { rev: r, .. } if r == rev => Some(BodyAt::Entry(self.seq)),
            LeafBodies::Stored(stored) => stored.get(rev).map(|&id| BodyAt::Stored(id)),
            _ => None,
        }
    }

    pub(crate) fn info(&self, id: &str) -> Option<DocInfo> {
        let w = self.tree.winner()?;
        Some(DocInfo {
            id: id.to_owned(),
            rev: w.rev,
            deleted: w.deleted,
            seq: self.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::revtree::RevPath;

    fn record(inline: bool) -> DocRecord {
        let mut tree = RevTree::default();
        let path = |start, ids: &[&str]| RevPath {
            start,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        tree.merge(&path(3, &["c", "b", "a"]), false).unwrap();
        tree.merge(&path(2, &["x", "a"]), true).unwrap();
        let mut r = DocRecord {
            tree,
            seq: 300,
            ..DocRecord::default()
        };
        let rev = |s: &str| s.parse::<Rev>().unwrap();
        r.bodies = if inline {
            LeafBodies::Inline {
                rev: rev("3-c"),
                body: br#"{"v":"\u00e9"}"#.to_vec(),
            }
        } else {
            LeafBodies::Stored(BTreeMap::from([(rev("3-c"), 1 << 40), (rev("2-x"), 7)]))
        };
        r
    }

    #[test]
    fn records_round_trip() {
        for inline in [false, true] {
            let r = record(inline);
            assert_eq!(DocRecord::decode(b"k", &r.encode()).unwrap(), r);
        }
        let mut logged = record(false);
        logged.bodies = LeafBodies::Logged {
            rev: "3-c".parse().unwrap(),
            stubs: true,
        };
        assert_eq!(DocRecord::decode(b"k", &logged.encode()).unwrap(), logged);
        fn at<'r>(r: &'r DocRecord, rev: &str) -> Option<BodyAt<'r>> {
            r.body_at(&rev.parse().unwrap())
        }
        assert_eq!(at(&logged, "3-c"), Some(BodyAt::Entry(300)));
        assert_eq!(at(&logged, "2-x"), None);
        let (stored, inline) = (record(false), record(true));
        assert_eq!(at(&stored, "2-x"), Some(BodyAt::Stored(7)));
        assert_eq!(
            at(&inline, "3-c"),
            Some(BodyAt::Inline(br#"{"v":"\u00e9"}"#))
        );
        let empty = DocRecord::default();
        assert_eq!(DocRecord::decode(b"k", &empty.encode()).unwrap(), empty);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = record(false).encode();
        for cut in 0..bytes.len() {
            assert!(DocRecord::decode(b"k", &bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(DocRecord::decode(b"k", br#"{"t":[],"s":1}"#).is_err());
        let mut bad_parent = record(false).encode();
        // The first node's parent index (after version, seq, count, pos, hash).
        bad_parent[1 + 2 + 1 + 1 + 2] = 9;
        assert!(DocRecord::decode(b"k", &bad_parent).is_err());
        // Format 3 never stores a single leaf's body beside stored ones.
        let mut both = record(false).encode();
        let last = both.len() - 1;
        both[last] = 2;
        both.extend_from_slice(b"\x033-c\x01");
        assert!(DocRecord::decode(b"k", &both).is_err());
    }
}
