//! `GET /db/{id}` with CouchDB 3.4's options, answered from the replica:
//! the body CouchDB would send (`application/json`, never multipart), or
//! its 400/404 as a [`QueryError`].
//!
//! ```text
//!  GetOptions ──► get() ─┬─ _local/…      Replica::get_local
//!                        ├─ open_revs     RevTree leaves ─► Replica::get_rev per leaf
//!                        ├─ rev           Replica::get_rev
//!                        └─ (winner)      Replica::get (+ rev tree, local seq)
//!                                  └──► render(): CouchDB's field order,
//!                                       attachments inline from the store
//! ```
//!
//! What a replica cannot know, it answers as a compacted CouchDB does: only
//! leaves keep bodies, so a non-leaf revision is `missing` in `_revs_info`
//! and in `open_revs`, and `rev=` a non-leaf is a 404. Attachments are held
//! as identity bytes (docs/design.md, "Attachment digests"), so
//! `att_encoding_info` has nothing to add.

use super::params::{self, Param};
use super::QueryError;
use crate::revtree::{Rev, RevTree};
use crate::store::{Document, Replica, StoreError};
use serde_json::{json, Map, Value};

/// Which revisions `open_revs` asks for.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use settee::query::{GetOptions, OpenRevs, Query};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// let w = replica.put("a", json!({"n": 1})).await?;
/// let query = Query::open(&replica)?;
/// let unknown = "9-0123456789abcdef0123456789abcdef".parse()?;
/// let asked = GetOptions::default().open_revs(OpenRevs::Revs(vec![unknown, w.rev.clone()]));
/// assert_eq!(
///     query.get("a", &asked)?,
///     json!([
///         {"ok": {"_id": "a", "_rev": w.rev.to_string(), "n": 1}},
///         {"missing": "9-0123456789abcdef0123456789abcdef"},
///     ])
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenRevs {
    /// `open_revs=all`: every leaf.
    All,
    /// `open_revs=["1-a", …]`: these revisions (with `latest`, the leaves
    /// that descend from them).
    Revs(Vec<Rev>),
}

/// The options of `GET /db/{id}`, as CouchDB 3.4 reads them.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use settee::query::{GetOptions, Query};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir()?;
/// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
/// let first = replica.put("card-1", serde_json::json!({"front": "a"})).await?;
/// replica.put("card-1", serde_json::json!({"_rev": first.rev.to_string(), "front": "b"})).await?;
/// let query = Query::open(&replica)?;
///
/// let doc = query.get("card-1", &GetOptions::from_query_string("revs=true&revs_info=true")?)?;
/// assert_eq!(doc["front"], "b");
/// assert_eq!(doc["_revisions"]["start"], 2);
/// // A replica keeps leaf bodies only, like a compacted CouchDB.
/// assert_eq!(doc["_revs_info"][1]["status"], "missing");
///
/// let old = query.get("card-1", &GetOptions::default().rev(first.rev.clone()));
/// assert_eq!(old.unwrap_err().status(), 404);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct GetOptions {
    /// `rev`: this leaf instead of the winner (no `_conflicts`,
    /// `_revs_info` or `_local_seq` then, as in CouchDB).
    pub rev: Option<Rev>,
    /// `open_revs`: several leaves at once, as `[{"ok": doc} | {"missing": rev}]`.
    pub open_revs: Option<OpenRevs>,
    /// `latest`: with `open_revs`, the leaves descending from each revision
    /// asked for; with `rev`, the winner (CouchDB 3.4 opens the winner
    /// whatever `rev` says when `latest` is given).
    pub latest: bool,
    /// `attachments`: each attachment's bytes inline (`data`, base64)
    /// instead of a stub.
    pub attachments: bool,
    /// `atts_since`: inline only attachments changed after the newest of
    /// these revisions in the document's history (implies `attachments`).
    pub atts_since: Option<Vec<Rev>>,
    /// `att_encoding_info`: accepted; a replica holds identity bytes, so
    /// there is never an `encoding` to show.
    pub att_encoding_info: bool,
    /// `revs`: `_revisions`, the revision's history as kept.
    pub revs: bool,
    /// `revs_info`: `_revs_info`, with a status per revision of the
    /// winner's history.
    pub revs_info: bool,
    /// `conflicts`: `_conflicts`, the other live leaves.
    pub conflicts: bool,
    /// `deleted_conflicts`: `_deleted_conflicts`, the other deleted leaves.
    pub deleted_conflicts: bool,
    /// `deleted`: a deleted document's tombstone instead of a 404.
    pub deleted: bool,
    /// `local_seq`: `_local_seq`, the replica's local sequence of the
    /// document's last change (CouchDB shows its shard's sequence).
    pub local_seq: bool,
}

impl GetOptions {
    /// `rev`.
    pub fn rev(mut self, rev: Rev) -> Self {
        self.rev = Some(rev);
        self
    }

    /// `open_revs`.
    pub fn open_revs(mut self, revs: OpenRevs) -> Self {
        self.open_revs = Some(revs);
        self
    }

    /// `latest`.
    pub fn latest(mut self, on: bool) -> Self {
        self.latest = on;
        self
    }

    /// `attachments`.
    pub fn attachments(mut self, on: bool) -> Self {
        self.attachments = on;
        self
    }

    /// `atts_since`.
    pub fn atts_since(mut self, revs: Vec<Rev>) -> Self {
        self.atts_since = Some(revs);
        self
    }

    /// `att_encoding_info`.
    pub fn att_encoding_info(mut self, on: bool) -> Self {
        self.att_encoding_info = on;
        self
    }

    /// `revs`.
    pub fn revs(mut self, on: bool) -> Self {
        self.revs = on;
        self
    }

    /// `revs_info`.
    pub fn revs_info(mut self, on: bool) -> Self {
        self.revs_info = on;
        self
    }

    /// `conflicts`.
    pub fn conflicts(mut self, on: bool) -> Self {
        self.conflicts = on;
        self
    }

    /// `deleted_conflicts`.
    pub fn deleted_conflicts(mut self, on: bool) -> Self {
        self.deleted_conflicts = on;
        self
    }

    /// `meta`: `conflicts`, `deleted_conflicts` and `revs_info` at once.
    pub fn meta(mut self, on: bool) -> Self {
        if on {
            self.conflicts = true;
            self.deleted_conflicts = true;
            self.revs_info = true;
        }
        self
    }

    /// `deleted`.
    pub fn deleted(mut self, on: bool) -> Self {
        self.deleted = on;
        self
    }

    /// `local_seq`.
    pub fn local_seq(mut self, on: bool) -> Self {
        self.local_seq = on;
        self
    }

    /// The options of a query string, `rev=1-a&revs=true&open_revs=all`.
    /// As in CouchDB, a flag is on only for the text `true`, and unknown
    /// parameters are ignored.
    pub fn from_query_string(qs: &str) -> Result<Self, QueryError> {
        let pairs = params::split_query_string(qs)?;
        Self::from_params(&params::raw_members(&pairs))
    }

    /// The options as a JSON object of decoded values:
    /// `{"rev": "1-a", "revs": true, "open_revs": ["1-a"]}` (`open_revs`
    /// may also be `"all"`). Flags must be booleans.
    pub fn from_json(params: &Value) -> Result<Self, QueryError> {
        Self::from_params(&params::json_members(params)?)
    }

    fn from_params(members: &[(&str, Param<'_>)]) -> Result<Self, QueryError> {
        let mut o = GetOptions::default();
        for &(name, value) in members {
            match name {
                "rev" => o.rev = Some(parse_rev(&value.string("rev")?)?),
                "open_revs" => o.open_revs = parse_open_revs(value)?,
                "atts_since" => o.atts_since = Some(parse_revs(&value.json()?, "atts_since")?),
                "latest" => o.latest = value.flag(name)?,
                "attachments" => o.attachments = value.flag(name)?,
                "att_encoding_info" => o.att_encoding_info = value.flag(name)?,
                "revs" => o.revs = value.flag(name)?,
                "revs_info" => o.revs_info = value.flag(name)?,
                "conflicts" => o.conflicts = value.flag(name)?,
                "deleted_conflicts" => o.deleted_conflicts = value.flag(name)?,
                "deleted" => o.deleted = value.flag(name)?,
                "local_seq" => o.local_seq = value.flag(name)?,
                "meta" => o = o.meta(value.flag(name)?),
                _ => {}
            }
        }
        Ok(o)
    }
}

fn parse_rev(text: &str) -> Result<Rev, QueryError> {
    text.parse()
        .map_err(|_| QueryError::bad("bad_request", "Invalid rev format"))
}

fn parse_revs(v: &Value, name: &str) -> Result<Vec<Rev>, QueryError> {
    let list = v.as_array().ok_or_else(|| {
        QueryError::bad(
            "bad_request",
            format!("`{name}` must be a JSON array of revisions"),
        )
    })?;
    list.iter()
        .map(|r| r.as_str().map_or_else(|| parse_rev(""), parse_rev))
        .collect()
}

/// `all`, or a JSON array of revisions; an empty array asks for nothing,
/// which CouchDB answers as a plain `GET`.
fn parse_open_revs(value: Param<'_>) -> Result<Option<OpenRevs>, QueryError> {
    if matches!(value, Param::Raw("all"))
        || matches!(value, Param::Json(Value::String(s)) if s == "all")
    {
        return Ok(Some(OpenRevs::All));
    }
    let revs = parse_revs(&value.json()?, "open_revs")?;
    Ok((!revs.is_empty()).then_some(OpenRevs::Revs(revs)))
}

/// What to add to a rendered document beyond `_id`, `_rev` and the body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Render<'a> {
    pub(crate) revs: bool,
    pub(crate) revs_info: bool,
    pub(crate) conflicts: bool,
    pub(crate) deleted_conflicts: bool,
    pub(crate) local_seq: Option<u64>,
    pub(crate) attachments: bool,
    pub(crate) atts_since: Option<&'a [Rev]>,
}

impl<'a> Render<'a> {
    /// What a document read by revision shows: CouchDB attaches the
    /// `meta` fields (`_conflicts`, `_revs_info`, `_local_seq`, …) only to
    /// the winner opened without `rev`.
    fn of_revision(o: &'a GetOptions) -> Self {
        Render {
            revs: o.revs,
            attachments: o.attachments || o.atts_since.is_some(),
            atts_since: o.atts_since.as_deref(),
            ..Render::default()
        }
    }
}

/// `GET /db/{id}` with `o`, from the replica.
pub(crate) fn get(replica: &Replica, id: &str, o: &GetOptions) -> Result<Value, QueryError> {
    if let Some(local) = id.strip_prefix("_local/") {
        return get_local(replica, id, local, o);
    }
    if let Some(which) = &o.open_revs {
        return open_revs(replica, id, which, o);
    }
    // CouchDB 3.4 opens the winner when `latest` is given with `rev`
    // (chttpd_db:db_doc_req), whatever that revision's branch is.
    match o.rev.as_ref().filter(|_| !o.latest) {
        Some(rev) => {
            let doc = replica
                .get_rev(id, rev)?
                .ok_or_else(|| QueryError::not_found("missing"))?;
            let tree = needs_tree(o.revs, o.atts_since.is_some(), replica, id)?;
            render(replica, &doc, tree.as_ref(), &Render::of_revision(o))
        }
        None => {
            let doc = replica
                .get(id)?
                .ok_or_else(|| QueryError::not_found("missing"))?;
            if doc.deleted && !o.deleted {
                return Err(QueryError::not_found("deleted"));
            }
            let tree = needs_tree(o.revs || o.revs_info, o.atts_since.is_some(), replica, id)?;
            let local_seq = if o.local_seq {
                Some(local_seq_of(replica, id)?)
            } else {
                None
            };
            let render_options = Render {
                revs_info: o.revs_info,
                conflicts: o.conflicts,
                deleted_conflicts: o.deleted_conflicts,
                local_seq,
                ..Render::of_revision(o)
            };
            render(replica, &doc, tree.as_ref(), &render_options)
        }
    }
}

fn needs_tree(
    history: bool,
    atts_since: bool,
    replica: &Replica,
    id: &str,
) -> Result<Option<RevTree>, QueryError> {
    if history || atts_since {
        Ok(replica.rev_tree(id)?)
    } else {
        Ok(None)
    }
}

/// The local sequence of `id`'s last change.
fn local_seq_of(replica: &Replica, id: &str) -> Result<u64, QueryError> {
    match replica.docs(id..=id).next() {
        Some(info) => Ok(info?.seq),
        None => Err(QueryError::not_found("missing")),
    }
}

/// A `_local` document: not replicated, no revision tree; CouchDB answers
/// `rev` and `open_revs` for one with a 404 and ignores the other options
/// but `revs`.
fn get_local(
    replica: &Replica,
    id: &str,
    local: &str,
    o: &GetOptions,
) -> Result<Value, QueryError> {
    if o.rev.is_some() || o.open_revs.is_some() {
        return Err(QueryError::not_found("missing"));
    }
    let stored = replica
        .get_local(local)?
        .ok_or_else(|| QueryError::not_found("missing"))?;
    let mut doc = local_doc(id, stored);
    if o.revs {
        let generation = doc["_rev"]
            .as_str()
            .and_then(|r| r.strip_prefix("0-"))
            .unwrap_or("1")
            .to_owned();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(
                "_revisions".into(),
                json!({"start": 0, "ids": [generation]}),
            );
        }
    }
    Ok(doc)
}

/// A stored `_local` document as CouchDB shows it: `_id`, `_rev`, the
/// rest. One written by `Replica::put_local` has no `_rev`: it is shown
/// as a local document written once (`0-1`).
pub(crate) fn local_doc(id: &str, stored: Value) -> Value {
    let mut out = Map::new();
    out.insert("_id".into(), Value::String(id.to_owned()));
    let mut rest = match stored {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    rest.remove("_id");
    let rev = rest
        .remove("_rev")
        .unwrap_or_else(|| Value::String("0-1".into()));
    out.insert("_rev".into(), rev);
    out.extend(rest);
    Value::Object(out)
}

/// `open_revs`: `[{"ok": doc}…, {"missing": rev}…]`, found revisions first,
/// each group in ascending revision order and without repeats, as CouchDB
/// 3.4's cluster layer sorts its replies (fabric_doc_open_revs).
fn open_revs(
    replica: &Replica,
    id: &str,
    which: &OpenRevs,
    o: &GetOptions,
) -> Result<Value, QueryError> {
    let tree = replica.rev_tree(id)?.unwrap_or_default();
    let leaves = tree.leaves();
    let mut found: Vec<Rev> = Vec::new();
    let mut missing: Vec<Rev> = Vec::new();
    match which {
        OpenRevs::All => {
            if leaves.is_empty() {
                return Err(QueryError::not_found("missing"));
            }
            found = leaves.into_iter().map(|l| l.rev).collect();
        }
        OpenRevs::Revs(revs) => {
            for rev in revs {
                if o.latest {
                    let below: Vec<Rev> = leaves
                        .iter()
                        .filter(|l| descends_from(&tree, &l.rev, rev))
                        .map(|l| l.rev.clone())
                        .collect();
                    if below.is_empty() {
                        missing.push(rev.clone());
                    }
                    found.extend(below);
                } else if leaves.iter().any(|l| &l.rev == rev) {
                    found.push(rev.clone());
                } else {
                    // Unknown, or an ancestor whose body the replica never
                    // kept (a compacted CouchDB answers the same).
                    missing.push(rev.clone());
                }
            }
        }
    }
    for list in [&mut found, &mut missing] {
        list.sort();
        list.dedup();
    }
    let render_options = Render::of_revision(o);
    let needs = o.revs || o.atts_since.is_some();
    let mut out = Vec::with_capacity(found.len() + missing.len());
    for rev in &found {
        match replica.get_rev(id, rev)? {
            Some(doc) => {
                let doc = render(replica, &doc, needs.then_some(&tree), &render_options)?;
                out.push(json!({ "ok": doc }));
            }
            // A commit replaced the leaf since the tree was read.
            None => out.push(json!({ "missing": rev.to_string() })),
        }
    }
    out.extend(
        missing
            .iter()
            .map(|rev| json!({ "missing": rev.to_string() })),
    );
    Ok(Value::Array(out))
}

/// Whether `leaf` is `rev` or one of its descendants.
fn descends_from(tree: &RevTree, leaf: &Rev, rev: &Rev) -> bool {
    let Some(path) = tree.path_to(leaf) else {
        return false;
    };
    let Some(back) = leaf.pos.checked_sub(rev.pos) else {
        return false;
    };
    usize::try_from(back)
        .ok()
        .and_then(|i| path.ids.get(i))
        .is_some_and(|hash| *hash == rev.hash)
}

/// A document as CouchDB's `couch_doc:to_json_obj` lays it out: `_id`,
/// `_rev`, the body, `_deleted`, `_revisions`, `_revs_info`,
/// `_conflicts`, `_deleted_conflicts`, `_local_seq`, `_attachments`.
/// `tree` is needed for `revs`, `revs_info` and `atts_since`.
pub(crate) fn render(
    replica: &Replica,
    doc: &Document,
    tree: Option<&RevTree>,
    o: &Render<'_>,
) -> Result<Value, QueryError> {
    let mut out = Map::with_capacity(doc.body.len() + 4);
    out.insert("_id".into(), Value::String(doc.id.clone()));
    out.insert("_rev".into(), Value::String(doc.rev.to_string()));
    for (k, v) in &doc.body {
        if k != "_attachments" {
            out.insert(k.clone(), v.clone());
        }
    }
    if doc.deleted {
        out.insert("_deleted".into(), Value::Bool(true));
    }
    // The revision's history as kept, newest first (only the revision
    // itself if the tree no longer has it: a commit raced the read).
    let history = tree
        .and_then(|t| t.path_to(&doc.rev))
        .map_or_else(|| vec![doc.rev.hash.clone()], |p| p.ids);
    if o.revs {
        out.insert(
            "_revisions".into(),
            json!({"start": doc.rev.pos, "ids": history}),
        );
    }
    if o.revs_info {
        // Only leaves keep bodies: the revision itself is available (or
        // deleted), every ancestor missing, as after CouchDB's compaction.
        let info: Vec<Value> = history
            .iter()
            .zip((0..=doc.rev.pos).rev())
            .enumerate()
            .map(|(i, (hash, pos))| {
                let status = match (i, doc.deleted) {
                    (0, false) => "available",
                    (0, true) => "deleted",
                    _ => "missing",
                };
                json!({"rev": format!("{pos}-{hash}"), "status": status})
            })
            .collect();
        out.insert("_revs_info".into(), Value::Array(info));
    }
    let list = |revs: &[Rev]| Value::Array(revs.iter().map(|r| json!(r.to_string())).collect());
    if o.conflicts && !doc.conflicts.is_empty() {
        out.insert("_conflicts".into(), list(&doc.conflicts));
    }
    if o.deleted_conflicts && !doc.deleted_conflicts.is_empty() {
        out.insert("_deleted_conflicts".into(), list(&doc.deleted_conflicts));
    }
    if let Some(seq) = o.local_seq {
        out.insert("_local_seq".into(), json!(seq));
    }
    if let Some(atts) = doc.body.get("_attachments").and_then(Value::as_object) {
        if !atts.is_empty() {
            let since = match o.atts_since {
                Some(revs) => ancestor_pos(&doc.rev, &history, revs),
                None => 0,
            };
            let mut rendered = Map::with_capacity(atts.len());
            for (name, stub) in atts {
                let att = render_attachment(replica, doc, name, stub, o.attachments, since)?;
                rendered.insert(name.clone(), att);
            }
            out.insert("_attachments".into(), Value::Object(rendered));
        }
    }
    Ok(Value::Object(out))
}

/// The generation of the newest revision of `history` (of `rev`) that
/// `since` names; 0 when none (CouchDB's `find_ancestor_rev_pos`).
fn ancestor_pos(rev: &Rev, history: &[String], since: &[Rev]) -> u64 {
    history
        .iter()
        .zip((0..=rev.pos).rev())
        .find(|(hash, pos)| since.iter().any(|s| s.pos == *pos && s.hash == **hash))
        .map_or(0, |(_, pos)| pos)
}

/// One attachment as CouchDB shows it: `content_type`, `revpos`,
/// `digest`, then `length` and `stub`, or (inline) `data` alone.
fn render_attachment(
    replica: &Replica,
    doc: &Document,
    name: &str,
    stub: &Value,
    attachments: bool,
    since: u64,
) -> Result<Value, QueryError> {
    let mut out = Map::new();
    for field in ["content_type", "revpos", "digest"] {
        if let Some(v) = stub.get(field) {
            out.insert(field.into(), v.clone());
        }
    }
    let revpos = stub.get("revpos").and_then(Value::as_u64).unwrap_or(0);
    if attachments && revpos > since {
        let digest = stub.get("digest").and_then(Value::as_str).unwrap_or("");
        out.insert(
            "data".into(),
            Value::String(attachment_base64(replica, doc, name, digest)?),
        );
    } else {
        if let Some(len) = stub.get("length") {
            out.insert("length".into(), len.clone());
        }
        out.insert("stub".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

/// An attachment's bytes in base64, encoded as they are read (a large one
/// is never held twice, raw and encoded).
fn attachment_base64(
    replica: &Replica,
    doc: &Document,
    name: &str,
    digest: &str,
) -> Result<String, QueryError> {
    let damaged = |detail: String| {
        QueryError::Store(StoreError::corrupt(
            "attachment",
            digest.as_bytes(),
            format!(
                "attachment {name:?} of {:?} at {}: {detail}",
                doc.id, doc.rev
            ),
        ))
    };
    let mut bytes = replica
        .attachment_reader(digest)?
        .ok_or_else(|| damaged("its bytes are not in the replica".into()))?;
    let mut encoder =
        base64::write::EncoderStringWriter::new(&base64::engine::general_purpose::STANDARD);
    std::io::copy(&mut bytes, &mut encoder).map_err(|e| damaged(e.to_string()))?;
    Ok(encoder.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::revtree::RevPath;
    use crate::store::ReplicaConfig;

    fn rev(s: &str) -> Rev {
        s.parse().unwrap()
    }

    #[test]
    fn options_parse_as_couchdb_reads_them() {
        let o = GetOptions::from_query_string(
            "rev=2-b&revs=true&revs_info=1&open_revs=%5B%221-a%22%5D&meta=true&latest=true",
        )
        .unwrap();
        assert_eq!(o.rev, Some(rev("2-b")));
        assert!(o.revs && o.revs_info && o.conflicts && o.deleted_conflicts && o.latest);
        assert_eq!(o.open_revs, Some(OpenRevs::Revs(vec![rev("1-a")])));
        assert_eq!(
            GetOptions::from_query_string("open_revs=all")
                .unwrap()
                .open_revs,
            Some(OpenRevs::All)
        );
        assert_eq!(
            GetOptions::from_query_string("open_revs=[]")
                .unwrap()
                .open_revs,
            None
        );
        let bad = GetOptions::from_query_string("rev=bad").unwrap_err();
        assert_eq!(
            (bad.status(), bad.reason().as_str()),
            (400, "Invalid rev format")
        );
        let o = GetOptions::from_json(&json!({"open_revs": "all", "attachments": true})).unwrap();
        assert!(o.attachments);
        assert!(GetOptions::from_json(&json!({"revs": "yes"})).is_err());
    }

    #[test]
    fn history_statuses_and_open_revs_follow_a_compacted_couchdb() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let w1 = r.put_blocking("d", &json!({"v": 1})).unwrap();
        let w2 = r
            .put_blocking("d", &json!({"_rev": w1.rev.to_string(), "v": 2}))
            .unwrap();
        let doc = get(&r, "d", &GetOptions::default().meta(true).revs(true)).unwrap();
        assert_eq!(doc["_revisions"]["ids"][1], json!(w1.rev.hash));
        assert_eq!(
            doc["_revs_info"],
            json!([
                {"rev": w2.rev.to_string(), "status": "available"},
                {"rev": w1.rev.to_string(), "status": "missing"},
            ])
        );
        let revs = OpenRevs::Revs(vec![w1.rev.clone(), rev("9-zz"), w1.rev.clone()]);
        let plain = get(&r, "d", &GetOptions::default().open_revs(revs.clone())).unwrap();
        assert_eq!(
            plain,
            json!([{"missing": w1.rev.to_string()}, {"missing": "9-zz"}])
        );
        let latest = get(&r, "d", &GetOptions::default().open_revs(revs).latest(true)).unwrap();
        assert_eq!(latest[0]["ok"]["_rev"], json!(w2.rev.to_string()));
        assert_eq!(latest[1], json!({"missing": "9-zz"}));
        assert_eq!(latest.as_array().map(Vec::len), Some(2));
        let e = get(&r, "nope", &GetOptions::default()).unwrap_err();
        assert_eq!((e.status(), e.reason().as_str()), (404, "missing"));
        let e = get(&r, "nope", &GetOptions::default().open_revs(OpenRevs::All)).unwrap_err();
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn descent_is_read_from_the_leaf_history() {
        let mut tree = RevTree::default();
        let path = |start, ids: &[&str]| RevPath {
            start,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        };
        tree.merge(&path(3, &["c", "b", "a"]), false).unwrap();
        tree.merge(&path(2, &["x", "a"]), false).unwrap();
        assert!(descends_from(&tree, &rev("3-c"), &rev("1-a")));
        assert!(descends_from(&tree, &rev("3-c"), &rev("3-c")));
        assert!(!descends_from(&tree, &rev("3-c"), &rev("2-x")));
        assert!(!descends_from(&tree, &rev("2-x"), &rev("3-c")));
        assert_eq!(
            ancestor_pos(
                &rev("3-c"),
                &["c".into(), "b".into(), "a".into()],
                &[rev("2-b"), rev("1-a")]
            ),
            2
        );
        assert_eq!(ancestor_pos(&rev("3-c"), &["c".into()], &[rev("2-b")]), 0);
    }
}
