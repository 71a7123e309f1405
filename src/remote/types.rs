//! CouchDB wire types: what the remote answers, decoded only as far as
//! settee needs. Sequences stay opaque JSON and document bodies stay JSON.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// An update sequence, exactly as the server sent it.
///
/// PouchDB Server and CouchDB 1.x send integers, CouchDB 2+ sends strings
/// like `"115704-g1AAAACheJzL..."`. settee never parses a sequence: it
/// stores it and sends it back verbatim as `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub Value);

impl Seq {
    /// The sequence every feed starts from.
    pub fn zero() -> Self {
        Seq(Value::from(0))
    }

    /// The value for a `since=` query parameter: a string as is, anything
    /// else as its JSON text.
    pub fn as_query(&self) -> String {
        match &self.0 {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_query())
    }
}

/// `GET /`: who the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The server's uuid (CouchDB ≥ 1.3, PouchDB Server); part of replication ids.
    pub uuid: Option<String>,
    /// `"CouchDB"`, `"PouchDB Server"`, ...
    pub vendor: String,
    /// The version the server reports.
    pub version: Option<String>,
}

/// `GET /db`: the database's identity and size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct DbInfo {
    /// The database name as the server spells it.
    pub db_name: String,
    /// Live documents.
    #[serde(default)]
    pub doc_count: u64,
    /// Deleted documents (CouchDB only; PouchDB Server leaves it out).
    #[serde(default)]
    pub doc_del_count: Option<u64>,
    /// The current update sequence, opaque.
    pub update_seq: Seq,
    /// CouchDB 3: the database's creation time; `"0"` on older servers.
    #[serde(default)]
    pub instance_start_time: Option<String>,
}

/// One row of `_changes?style=all_docs`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ChangeRow {
    /// The document id.
    pub id: String,
    /// The row's sequence (may be `null` with `seq_interval`).
    #[serde(default)]
    pub seq: Option<Seq>,
    /// Every leaf revision of the document.
    pub changes: Vec<ChangeRev>,
    /// True when the winning revision is a tombstone.
    #[serde(default)]
    pub deleted: bool,
    /// The winning revision, raw, when the page was asked for with
    /// `include_docs=true` (see [`crate::Remote::changes_with_docs`]).
    #[serde(default)]
    pub doc: Option<Box<RawValue>>,
}

/// Rows are equal when they say the same thing; a carried document is
/// compared as its text.
impl PartialEq for ChangeRow {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.seq == other.seq
            && self.changes == other.changes
            && self.deleted == other.deleted
            && self.doc.as_ref().map(|d| d.get()) == other.doc.as_ref().map(|d| d.get())
    }
}

impl Eq for ChangeRow {}

impl ChangeRow {
    /// True when the row lists one leaf, at generation 1, not deleted: the
    /// document's whole history is that revision, so the revision
    /// `include_docs=true` carries is the document, complete (unless it has
    /// attachments, whose bytes are not in the feed).
    pub fn is_first_revision_only(&self) -> bool {
        !self.deleted && matches!(self.changes.as_slice(), [only] if only.rev.starts_with("1-"))
    }
}

/// A revision listed in a change row.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChangeRev {
    /// The revision id, `pos-hash`.
    pub rev: String,
}

/// One page of the changes feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ChangesPage {
    /// The rows of this page, in feed order.
    pub results: Vec<ChangeRow>,
    /// Where the next page starts.
    pub last_seq: Seq,
    /// Rows left after this page (CouchDB 2+ only).
    #[serde(default)]
    pub pending: Option<u64>,
}

/// One revision of a document answered by `_bulk_get` or `open_revs`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FetchedRev {
    /// The revision as the server sent it (`_id`, `_rev`, `_revisions`, the
    /// body), kept as raw JSON text: the body is never parsed into a tree,
    /// so a large document costs its bytes, not a multiple of them.
    Doc {
        /// The document id the server answered for (the `_bulk_get` result's
        /// `id`, or the id asked for with `open_revs`): a revision whose own
        /// `_id` differs is refused, and a revision that cannot be read at
        /// all is still put on the retry list under this id.
        id: String,
        /// The revision, raw.
        doc: Box<RawValue>,
    },
    /// The server could not give this revision.
    Error {
        /// The document id.
        id: String,
        /// The revision asked for, if the server said.
        rev: Option<String>,
        /// CouchDB's `error` (`not_found`, ...).
        error: String,
        /// CouchDB's `reason`.
        reason: String,
    },
}

impl FetchedRev {
    /// The document this answer is for.
    pub fn id(&self) -> &str {
        match self {
            FetchedRev::Doc { id, .. } | FetchedRev::Error { id, .. } => id,
        }
    }
}

/// One entry of a `_bulk_get` `docs` list or of an `open_revs` array.
/// Servers differ (see the anchor bench's `PROTOCOL.md`): CouchDB sends
/// `{"ok": doc}` or `{"error": {...}}`, `open_revs` sends `{"missing": rev}`,
/// and PouchDB Server sends `{}` for a missing document.
#[derive(Debug, Deserialize)]
pub(crate) struct FetchedEntry {
    #[serde(default)]
    ok: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    missing: Option<Value>,
}

impl FetchedEntry {
    pub(crate) fn into_fetched(self, id: &str) -> FetchedRev {
        let missing = |rev: Option<String>, reason: &str| FetchedRev::Error {
            id: id.to_owned(),
            rev,
            error: "not_found".to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(doc) = self.ok {
            return FetchedRev::Doc {
                id: id.to_owned(),
                doc,
            };
        }
        if let Some(err) = self.error {
            let field = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_owned);
            return FetchedRev::Error {
                id: field("id").unwrap_or_else(|| id.to_owned()),
                rev: field("rev"),
                error: field("error").unwrap_or_else(|| err.as_str().unwrap_or("error").to_owned()),
                reason: field("reason").unwrap_or_default(),
            };
        }
        if let Some(rev) = self.missing {
            return missing(rev.as_str().map(str::to_owned), "missing");
        }
        missing(None, "missing (the server sent an empty entry)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(json: &str) -> FetchedRev {
        serde_json::from_str::<FetchedEntry>(json)
            .unwrap()
            .into_fetched("d")
    }

    #[test]
    fn decodes_every_servers_entry_shapes() {
        assert!(
            matches!(entry(r#"{"ok":{"_id":"d","_rev":"1-a"}}"#), FetchedRev::Doc { id, doc } if id == "d" && doc.get().contains("1-a"))
        );
        let couch =
            entry(r#"{"error":{"id":"d","rev":"1-a","error":"not_found","reason":"deleted"}}"#);
        assert!(
            matches!(couch, FetchedRev::Error { ref rev, ref reason, .. } if rev.as_deref() == Some("1-a") && reason == "deleted")
        );
        assert!(
            matches!(entry(r#"{"missing":"2-b"}"#), FetchedRev::Error { ref rev, .. } if rev.as_deref() == Some("2-b"))
        );
        assert!(matches!(entry("{}"), FetchedRev::Error { ref error, .. } if error == "not_found"));
    }

    #[test]
    fn sequences_are_sent_back_verbatim() {
        assert_eq!(Seq(Value::from(42)).as_query(), "42");
        let s: Seq = serde_json::from_str(r#""115704-g1AAAACheJzL""#).unwrap();
        assert_eq!(s.as_query(), "115704-g1AAAACheJzL");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#""115704-g1AAAACheJzL""#
        );
    }
}
