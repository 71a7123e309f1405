//! What the store hands out: documents as CouchDB shows them, and the
//! per-document record it keeps (the revision tree and the local sequence).

use crate::revtree::{Rev, RevTree};
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DocRecord {
    #[serde(rename = "t")]
    pub(crate) tree: RevTree,
    #[serde(rename = "s")]
    pub(crate) seq: u64,
    /// Leaf revision → key of its body in the `bodies` tree.
    #[serde(rename = "b", default)]
    pub(crate) bodies: BTreeMap<String, u64>,
}

impl DocRecord {
    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, crate::StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| crate::StoreError::corrupt("document record", key, e))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
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
