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
    /// Where each leaf's body is; only leaves keep bodies.
    pub(crate) bodies: BTreeMap<Rev, BodyRef>,
}

/// Where one leaf's body is kept.
///
/// Format 4 writes two kinds: a small body in the record itself
/// ([`BodyRef::Inline`]) and every other body in the replica's body log
/// ([`BodyRef::Log`], `store/body_log.rs`), where a batch appends its
/// bodies with one write instead of putting them through sled's pages.
/// The other two are format 3's, read as they are and rewritten only when
/// their document changes (or the replica is compacted): a body in the
/// `bodies` tree ([`BodyRef::Tree`]) and a single leaf's body carried by
/// the document's own `by_seq` entry ([`BodyRef::Entry`]). Readers ask
/// [`DocRecord::body_at`]; only the commit and compaction change this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyRef {
    /// The JSON text, in the record.
    Inline(Vec<u8>),
    /// In the body log.
    Log {
        /// Where.
        at: Extent,
        /// Whether the body has attachment stubs (only then must the
        /// commit that drops it read it, to release their counts).
        stubs: bool,
    },
    /// Format 3: in the `bodies` tree under this id.
    Tree(u64),
    /// Format 3: in the record's own `by_seq` entry (a single leaf).
    Entry {
        /// As [`BodyRef::Log`]'s.
        stubs: bool,
    },
}

/// Where a body is in the body log (`store/body_log.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// Where one revision's body is, from [`DocRecord::body_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyAt<'a> {
    /// In the record: these bytes.
    Inline(&'a [u8]),
    /// In the body log, there.
    Log(Extent),
    /// In the `by_seq` entry of this local sequence (the record's own).
    Entry(u64),
    /// In the `bodies` tree under this key.
    Stored(u64),
}

/// First byte of an encoded record: the layout's version, so one layout
/// can be told from another (and from format 2's JSON, which starts with
/// `{`). Format 3's layout, still read.
const RECORD_V1: u8 = 1;
/// Format 4's layout: the same tree, then a body reference per leaf.
const RECORD_V2: u8 = 2;

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
        Self::decode_any(bytes)
            .map_err(|e| super::error::StoreError::corrupt("document record", key, e))
    }

    fn decode_any(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != RECORD_V1 && version != RECORD_V2 {
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
        let bodies = if version == RECORD_V1 {
            Self::decode_v1_bodies(&mut r)?
        } else {
            Self::decode_v2_bodies(&mut r)?
        };
        Ok(DocRecord { tree, seq, bodies })
    }

    /// Format 3's bodies: ids in `bodies`, then one byte saying whether a
    /// single leaf's body is inline (the record's last bytes) or in the
    /// `by_seq` entry.
    fn decode_v1_bodies(r: &mut Reader<'_>) -> Result<BTreeMap<Rev, BodyRef>, String> {
        let mut bodies = BTreeMap::new();
        for _ in 0..r.varint()? {
            let rev = parse_rev(&r.string()?)?;
            bodies.insert(rev, BodyRef::Tree(r.varint()?));
        }
        match r.byte()? {
            0 => {}
            _ if !bodies.is_empty() => {
                return Err("a single leaf's body beside stored bodies".to_owned())
            }
            1 => {
                let rev = parse_rev(&r.string()?)?;
                bodies.insert(rev, BodyRef::Inline(std::mem::take(&mut r.0).to_vec()));
            }
            2 => {
                let rev = parse_rev(&r.string()?)?;
                let stubs = r.byte()? != 0;
                bodies.insert(rev, BodyRef::Entry { stubs });
            }
            _ => return Err("unknown body placement".to_owned()),
        }
        Ok(bodies)
    }

    fn decode_v2_bodies(r: &mut Reader<'_>) -> Result<BTreeMap<Rev, BodyRef>, String> {
        let mut bodies = BTreeMap::new();
        for _ in 0..r.varint()? {
            let rev = parse_rev(&r.string()?)?;
            let body = match r.byte()? {
                0 => BodyRef::Inline(r.bytes()?.to_vec()),
                kind @ (1 | 2) => BodyRef::Log {
                    at: Extent {
                        offset: r.varint()?,
                        len: r.varint()?,
                    },
                    stubs: kind == 2,
                },
                3 => BodyRef::Tree(r.varint()?),
                kind @ (4 | 5) => BodyRef::Entry { stubs: kind == 5 },
                _ => return Err("unknown body placement".to_owned()),
            };
            if bodies.insert(rev, body).is_some() {
                return Err("a leaf named twice".to_owned());
            }
        }
        if !r.0.is_empty() {
            return Err("bytes after the last body".to_owned());
        }
        let entries = bodies
            .values()
            .filter(|b| matches!(b, BodyRef::Entry { .. }))
            .count();
        if entries > 0 && bodies.len() > 1 {
            return Err("a sequence-entry body beside other leaves".to_owned());
        }
        Ok(bodies)
    }

    /// The record as stored (layout 2): version byte, `seq`, the tree's
    /// nodes, then per leaf its revision, a kind byte and where its body
    /// is. Binary because JSON (format 2) cost a parse of every node on
    /// each read and write of a document.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let inline_len: usize = self
            .bodies
            .values()
            .map(|b| match b {
                BodyRef::Inline(body) => body.len() + 2,
                _ => 0,
            })
            .sum();
        let mut out = Vec::with_capacity(16 + self.tree.len() * 40 + inline_len);
        self.put_head(&mut out, RECORD_V2);
        put_varint(&mut out, self.bodies.len() as u64);
        for (rev, body) in &self.bodies {
            put_bytes(&mut out, rev.to_string().as_bytes());
            match body {
                BodyRef::Inline(bytes) => {
                    out.push(0);
                    put_bytes(&mut out, bytes);
                }
                BodyRef::Log { at, stubs } => {
                    out.push(if *stubs { 2 } else { 1 });
                    put_varint(&mut out, at.offset);
                    put_varint(&mut out, at.len);
                }
                BodyRef::Tree(id) => {
                    out.push(3);
                    put_varint(&mut out, *id);
                }
                BodyRef::Entry { stubs } => out.push(if *stubs { 5 } else { 4 }),
            }
        }
        out
    }

    /// What both layouts begin with: the version, `seq` and the tree's
    /// nodes.
    fn put_head(&self, out: &mut Vec<u8>, version: u8) {
        out.push(version);
        put_varint(out, self.seq);
        put_varint(out, self.tree.len() as u64);
        for (pos, hash, parent, deleted) in self.tree.node_parts() {
            put_varint(out, pos);
            put_bytes(out, hash.as_bytes());
            put_varint(out, parent.map_or(0, |p| u64::from(p) + 1));
            out.push(u8::from(deleted));
        }
    }

    /// Where the body of leaf `rev` is; `None` when the replica keeps no
    /// body for it (not a leaf).
    pub(crate) fn body_at(&self, rev: &Rev) -> Option<BodyAt<'_>> {
        Some(match self.bodies.get(rev)? {
            BodyRef::Inline(bytes) => BodyAt::Inline(bytes),
            BodyRef::Log { at, .. } => BodyAt::Log(*at),
            BodyRef::Tree(id) => BodyAt::Stored(*id),
            BodyRef::Entry { .. } => BodyAt::Entry(self.seq),
        })
    }

    /// Where the leaves' bodies in the body log are, to move them (a
    /// compaction's copy) or to read them.
    pub(crate) fn log_extents_mut(&mut self) -> impl Iterator<Item = &mut Extent> {
        self.bodies.values_mut().filter_map(|b| match b {
            BodyRef::Log { at, .. } => Some(at),
            _ => None,
        })
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

    fn rev(s: &str) -> Rev {
        s.parse().unwrap()
    }

    /// `3-c` (live) and `2-x` (deleted), with bodies as given.
    fn record(bodies: [(&str, BodyRef); 2]) -> DocRecord {
        let mut tree = RevTree::default();
        let path = |start, ids: &[&str]| RevPath {
            start,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        tree.merge(&path(3, &["c", "b", "a"]), false).unwrap();
        tree.merge(&path(2, &["x", "a"]), true).unwrap();
        DocRecord {
            tree,
            seq: 300,
            bodies: bodies.into_iter().map(|(r, b)| (rev(r), b)).collect(),
        }
    }

    fn log(offset: u64, stubs: bool) -> BodyRef {
        BodyRef::Log {
            at: Extent { offset, len: 600 },
            stubs,
        }
    }

    /// Format 3's layout (what the last release wrote), for the records
    /// a format-3 replica still holds.
    fn encode_v1(r: &DocRecord, placement: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        r.put_head(&mut out, RECORD_V1);
        out.extend_from_slice(placement);
        out
    }

    #[test]
    fn records_round_trip() {
        for bodies in [
            [("3-c", log(1 << 40, true)), ("2-x", log(7, false))],
            [
                ("3-c", BodyRef::Inline(br#"{"v":"\u00e9"}"#.to_vec())),
                ("2-x", BodyRef::Tree(9)),
            ],
        ] {
            let r = record(bodies);
            assert_eq!(DocRecord::decode(b"k", &r.encode()).unwrap(), r);
        }
        let mut entry = record([
            ("3-c", BodyRef::Entry { stubs: true }),
            ("2-x", log(1, false)),
        ]);
        entry.bodies.remove(&rev("2-x"));
        assert_eq!(DocRecord::decode(b"k", &entry.encode()).unwrap(), entry);
        let r = record([("3-c", log(1 << 40, true)), ("2-x", BodyRef::Tree(7))]);
        assert_eq!(
            r.body_at(&rev("3-c")),
            Some(BodyAt::Log(Extent {
                offset: 1 << 40,
                len: 600
            }))
        );
        assert_eq!(r.body_at(&rev("2-x")), Some(BodyAt::Stored(7)));
        assert_eq!(r.body_at(&rev("1-a")), None);
        assert_eq!(entry.body_at(&rev("3-c")), Some(BodyAt::Entry(300)));
        let empty = DocRecord::default();
        assert_eq!(DocRecord::decode(b"k", &empty.encode()).unwrap(), empty);
    }

    #[test]
    fn format_3_records_still_decode() {
        let mut r = record([("3-c", BodyRef::Tree(1 << 40)), ("2-x", BodyRef::Tree(7))]);
        // Stored: count, (rev, id)..., then 0.
        let mut placement = vec![2];
        for (rev, id) in [("2-x", 7u64), ("3-c", 1 << 40)] {
            put_bytes(&mut placement, rev.as_bytes());
            put_varint(&mut placement, id);
        }
        placement.push(0);
        assert_eq!(
            DocRecord::decode(b"k", &encode_v1(&r, &placement)).unwrap(),
            r
        );
        r.bodies = BTreeMap::from([(rev("3-c"), BodyRef::Inline(b"{}".to_vec()))]);
        assert_eq!(
            DocRecord::decode(b"k", &encode_v1(&r, b"\x00\x01\x033-c{}")).unwrap(),
            r
        );
        r.bodies = BTreeMap::from([(rev("3-c"), BodyRef::Entry { stubs: true })]);
        assert_eq!(
            DocRecord::decode(b"k", &encode_v1(&r, b"\x00\x02\x033-c\x01")).unwrap(),
            r
        );
        // Format 3 never stores a single leaf's body beside stored ones.
        let mut both = placement.clone();
        *both.last_mut().unwrap() = 2;
        both.extend_from_slice(b"\x033-c\x01");
        assert!(DocRecord::decode(b"k", &encode_v1(&r, &both)).is_err());
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = record([
            ("3-c", log(5, true)),
            ("2-x", BodyRef::Inline(b"{}".to_vec())),
        ])
        .encode();
        for cut in 0..bytes.len() {
            assert!(DocRecord::decode(b"k", &bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(DocRecord::decode(b"k", &longer).is_err(), "trailing bytes");
        assert!(DocRecord::decode(b"k", br#"{"t":[],"s":1}"#).is_err());
        let mut bad_parent = bytes.clone();
        // The first node's parent index (after version, seq, count, pos, hash).
        bad_parent[1 + 2 + 1 + 1 + 2] = 9;
        assert!(DocRecord::decode(b"k", &bad_parent).is_err());
        let entry_beside_another = record([
            ("3-c", BodyRef::Entry { stubs: false }),
            ("2-x", log(1, false)),
        ]);
        assert!(DocRecord::decode(b"k", &entry_beside_another.encode()).is_err());
    }
}
