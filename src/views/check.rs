//! `views::check`: verifies a replica's view indexes against its documents
//! (the view half of `settee check`), and lists every violation it finds.
//!
//! For every view with a recorded state (registered or not), it checks that
//! the state's sequence is not ahead of the replica's; that rows and
//! back-index agree one to one (every row is listed by its document's
//! back-index entry, every listed row exists, the row count is the state's);
//! and that every row belongs to a document the replica has, live, and not a
//! design document. For a view whose map function it is given, it also maps
//! every document whose latest change is at or below the view's sequence and
//! checks that the stored rows are exactly what the map emits for the
//! current winner. Documents changed after the view's sequence are counted
//! as behind, not checked: the view catches up on its next update.
//!
//! It must not write (a replica without a `views` tree has nothing to
//! check, and the tree is not created), and it knows nothing of the store's own invariants
//! (`Replica::check` does those). It holds one view's back-index and row
//! keys in memory at a time. Run it on a replica nothing is indexing or
//! pulling into: a commit landing mid-check can show as a violation.

use super::block::Scan;
use super::error::ViewError;
use super::index::{self, KeyCache};
use super::view::{RawDocument, View};
use crate::store::{RawDocumentChange, Replica, StoreError};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;

/// One view invariant that does not hold, at one row or document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ViewViolation {
    /// Which invariant (as in `docs/design.md`, "Views"): `view_state`
    /// (state undecodable), `view_seq` (ahead of the replica), `view_rows`
    /// (a row undecodable, or not listed by the back-index), `view_back` (a
    /// back-index entry undecodable, or listing a row that is missing),
    /// `view_count` (the state's row count), `view_live` (rows of a deleted,
    /// missing or design document), `view_map` (rows that are not what the
    /// map emits for the current winner).
    pub invariant: &'static str,
    /// Where: `views/<view>/<doc id>` (or `views/<view>` for the view as a whole).
    pub key: String,
    /// What is wrong.
    pub detail: String,
}

/// What was checked of one view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ViewCheck {
    /// The view's name.
    pub name: String,
    /// Whether its map function was given, so rows were compared with it.
    pub mapped: bool,
    /// The local sequence the view says it covers.
    pub seq: u64,
    /// Rows found (the state's count is checked against it).
    pub rows: u64,
    /// Documents at or below `seq` checked against the rows.
    pub docs_checked: u64,
    /// Documents changed after `seq` (their rows are not checked), or not
    /// yet reached by a build in id order.
    pub docs_behind: u64,
    /// While the view is built from nothing in id order, where that build
    /// stands (`seq` is then 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub building: Option<ViewBuild>,
}

/// Where a build from nothing in id order stands: the documents with ids up
/// to `after` whose latest change is at or below `upto` are indexed, and
/// no document after `after` is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ViewBuild {
    /// The last document id the build reached.
    pub after: String,
    /// The local sequence the build reads up to.
    pub upto: u64,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ViewCheckReport {
    /// Every view with a recorded state, in name order.
    pub views: Vec<ViewCheck>,
    /// Every violation found (empty: the indexes are consistent).
    pub violations: Vec<ViewViolation>,
}

impl ViewCheckReport {
    /// True when every view invariant holds.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, invariant: &'static str, view: &str, id: &str, detail: String) {
        let key = if id.is_empty() {
            format!("views/{view}")
        } else {
            format!("views/{view}/{id}")
        };
        self.violations.push(ViewViolation {
            invariant,
            key,
            detail,
        });
    }
}

/// Checks every view index of `replica` (see the module doc); `views` are
/// the map functions known to the caller (the built-ins, [`super::course::views`],
/// plus an app's own), whose rows are compared with what they emit. An
/// indexed view not among them gets the structural checks only; a view
/// among them that was never indexed is not listed.
///
/// ```
/// use settee::views::{self, course, Views};
/// use settee::{Replica, ReplicaConfig};
///
/// let dir = tempfile::tempdir().unwrap();
/// let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
/// Views::open(&replica, course::views()).unwrap().warm().unwrap();
/// let report = views::check(&replica, &views::course::views()).unwrap();
/// assert!(report.is_ok(), "{:?}", report.violations);
/// assert_eq!(report.views.len(), 2);
/// ```
///
/// # Errors
/// Only when the storage itself fails to read; damage is a violation.
pub fn check(replica: &Replica, views: &[View]) -> Result<ViewCheckReport, ViewError> {
    let mut report = ViewCheckReport::default();
    if !replica.has_tree("views") {
        return Ok(report);
    }
    let tree = replica.open_tree("views")?;
    let update_seq = replica.update_seq()?;
    for name in index::indexed_names(&tree)? {
        let view = views.iter().find(|v| v.name() == name);
        check_view(&tree, replica, &name, view, update_seq, &mut report)?;
    }
    Ok(report)
}

fn check_view(
    tree: &sled::Tree,
    replica: &Replica,
    name: &str,
    view: Option<&View>,
    update_seq: u64,
    report: &mut ViewCheckReport,
) -> Result<(), ViewError> {
    let Some(state) = checkable_state(tree, name, report) else {
        return Ok(());
    };
    let mut summary = ViewCheck {
        name: name.to_owned(),
        mapped: view.is_some_and(|v| v.version() == state.version),
        seq: state.seq,
        building: state.scan.as_ref().map(|s| ViewBuild {
            after: s.after.clone(),
            upto: s.upto,
        }),
        ..ViewCheck::default()
    };
    let covered = state.scan.as_ref().map_or(state.seq, |s| s.upto);
    if covered > update_seq {
        report.violation(
            "view_seq",
            name,
            "",
            format!("the view covers sequence {covered} but the replica is at {update_seq}"),
        );
    }
    let back = read_back_index(tree, name, report)?;
    let rows = check_rows(tree, name, back.owner, &mut summary, report)?;
    if summary.rows != state.rows {
        report.violation(
            "view_count",
            name,
            "",
            format!(
                "the state counts {} rows, the index holds {}",
                state.rows, summary.rows
            ),
        );
    }
    let reach = Reach {
        seq: covered,
        after: state.scan.as_ref().map(|s| s.after.as_str()),
    };
    check_documents(
        replica,
        view,
        reach,
        back.listed,
        &rows,
        &mut summary,
        report,
    )?;
    report.views.push(summary);
    Ok(())
}

/// The view's state, when there is one to check against: `None` when there
/// is none, it does not decode (a violation), or it is of another layout
/// (not read, and rebuilt on its next update: nothing to check).
fn checkable_state(
    tree: &sled::Tree,
    name: &str,
    report: &mut ViewCheckReport,
) -> Option<index::StoredState> {
    match index::read_state(tree, name) {
        Ok(Some(state)) if state.layout == index::LAYOUT => Some(state),
        Ok(_) => None,
        Err(detail) => {
            report.violation("view_state", name, "", detail);
            None
        }
    }
}

/// A view's back-index as read.
struct BackIndex {
    /// Document id → the row keys it lists.
    listed: HashMap<String, Vec<Vec<u8>>>,
    /// Row key → the document listing it.
    owner: HashMap<Vec<u8>, String>,
}

/// Reads the back-index; each entry decodes and lists rows no other lists.
fn read_back_index(
    tree: &sled::Tree,
    name: &str,
    report: &mut ViewCheckReport,
) -> Result<BackIndex, ViewError> {
    let mut back = BackIndex {
        listed: HashMap::new(),
        owner: HashMap::new(),
    };
    let entries = Scan::new(
        tree,
        index::back_prefix(name),
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    )?;
    for entry in entries {
        let (id, value) = match entry {
            Ok(e) => e,
            Err(ViewError::Corrupt { detail, .. }) => {
                report.violation("view_back", name, "", detail);
                break;
            }
            Err(e) => return Err(e),
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let Some(suffixes) = index::decode_back(&value) else {
            report.violation("view_back", name, &id, "undecodable entry".into());
            continue;
        };
        for s in &suffixes {
            if back.owner.insert(s.clone(), id.clone()).is_some() {
                report.violation("view_back", name, &id, "a row listed twice".into());
            }
        }
        back.listed.insert(id, suffixes);
    }
    Ok(back)
}

/// Rows: each decodes and is listed by its own document, and every row the
/// back-index lists (`owner`) exists. Returns the rows by key.
fn check_rows(
    tree: &sled::Tree,
    name: &str,
    mut owner: HashMap<Vec<u8>, String>,
    summary: &mut ViewCheck,
    report: &mut ViewCheckReport,
) -> Result<HashMap<Vec<u8>, sled::IVec>, ViewError> {
    let mut rows: HashMap<Vec<u8>, sled::IVec> = HashMap::with_capacity(owner.len());
    let scan = Scan::new(
        tree,
        index::view_prefix(name),
        Bound::Unbounded,
        Bound::Unbounded,
        false,
    )?;
    for row in scan {
        let (suffix, value) = match row {
            Ok(r) => r,
            Err(ViewError::Corrupt { detail, .. }) => {
                report.violation("view_rows", name, "", detail);
                break;
            }
            Err(e) => return Err(e),
        };
        summary.rows += 1;
        let Some(data) = index::decode_row(&suffix, &value) else {
            report.violation("view_rows", name, "", "an undecodable row".into());
            continue;
        };
        match owner.remove(&suffix[..]) {
            Some(id) if id == data.id => {}
            Some(id) => report.violation(
                "view_rows",
                name,
                &data.id,
                format!("row {} is listed by {id:?}", data.key),
            ),
            None => report.violation(
                "view_rows",
                name,
                &data.id,
                format!("row {} is not in the back-index", data.key),
            ),
        }
        rows.insert(suffix.to_vec(), value);
    }
    for id in owner.into_values().collect::<HashSet<_>>() {
        report.violation(
            "view_back",
            name,
            &id,
            "the back-index lists a row that is missing".into(),
        );
    }
    Ok(rows)
}

/// What a view's rows cover: documents whose latest change is at or below
/// `seq` and, while it is built from nothing in id order, whose ids are up
/// to `after`.
struct Reach<'a> {
    seq: u64,
    after: Option<&'a str>,
}

/// Documents: rows only of live documents, and (for a mapped view) what the
/// map emits. `listed` is the back-index, each document's row keys.
fn check_documents(
    replica: &Replica,
    view: Option<&View>,
    reach: Reach<'_>,
    mut listed: HashMap<String, Vec<Vec<u8>>>,
    rows: &HashMap<Vec<u8>, sled::IVec>,
    summary: &mut ViewCheck,
    report: &mut ViewCheckReport,
) -> Result<(), ViewError> {
    let name = summary.name.as_str();
    let mut keys = KeyCache::with_capacity(0);
    for change in replica.changes(0).with_raw_bodies() {
        let doc = change?;
        let has = listed.remove(&doc.id);
        if doc.seq > reach.seq {
            summary.docs_behind += 1;
            continue;
        }
        if reach.after.is_some_and(|after| doc.id.as_str() > after) {
            // Not reached by the build in id order: no rows yet.
            summary.docs_behind += 1;
            if has.is_some_and(|rows| !rows.is_empty()) {
                report.violation(
                    "view_map",
                    name,
                    &doc.id,
                    "rows of a document the build in id order has not reached".into(),
                );
            }
            continue;
        }
        summary.docs_checked += 1;
        let live = !doc.deleted
            && (!doc.id.starts_with("_design/") || view.is_some_and(View::sees_design_docs));
        if !live {
            if has.is_some() {
                report.violation(
                    "view_live",
                    name,
                    &doc.id,
                    format!("rows of a deleted or design document ({})", doc.rev),
                );
            }
            continue;
        }
        let Some(view) = view.filter(|v| summary.mapped && v.map_is_checkable()) else {
            continue;
        };
        let have = has.unwrap_or_default();
        if let Some(reason) = map_mismatch(view, &doc, &have, rows, &mut keys)? {
            report.violation("view_map", name, &doc.id, reason);
        }
    }
    for id in listed.into_keys() {
        report.violation(
            "view_live",
            name,
            &id,
            "rows of a document the replica does not have".into(),
        );
    }
    Ok(())
}

/// Why the rows stored for `doc` (`have`, its listed row keys) are not what
/// `view` emits for its current winner, if they are not.
fn map_mismatch(
    view: &View,
    doc: &RawDocumentChange,
    have: &[Vec<u8>],
    rows: &HashMap<Vec<u8>, sled::IVec>,
    keys: &mut KeyCache,
) -> Result<Option<String>, ViewError> {
    let raw = RawDocument::new(&doc.id, &doc.rev, &doc.body)
        .with_conflicts(&doc.conflicts, &doc.deleted_conflicts);
    let parsed = if view.needs_parsed() {
        Some(
            raw.to_document()
                .map_err(|e| StoreError::corrupt("revision body", doc.id.as_bytes(), e))?,
        )
    } else {
        None
    };
    let mapped = match view.map_parsed_or_raw(&raw, parsed.as_ref()) {
        Ok(rows) => rows,
        Err(failure) => return Ok(Some(format!("{}: {}", failure.error, failure.reason))),
    };
    let want = index::encode_mapped(&doc.id, &mapped, keys);
    let same = want.len() == have.len()
        && want.iter().zip(have).all(|((k, _, v), listed)| {
            k == listed && rows.get(k).is_some_and(|stored| stored[..] == v[..])
        });
    if same {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} rows stored, the map emits {} for {} (or with other keys or values)",
        have.len(),
        want.len(),
        doc.rev
    )))
}
