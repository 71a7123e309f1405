//! Revision trees: CouchDB's per-document history, merged and stemmed.
//!
//! A document's history is a forest of revisions (`pos-hash`), where each
//! replicated revision arrives with its ancestry (`_revisions`). This module
//! is pure: no I/O, no bodies, no clocks. The store keeps one [`RevTree`] per
//! document and asks it three things: *merge this path*, *which leaves are
//! there*, *which leaf wins*.
//!
//! The winner is chosen exactly as CouchDB chooses it, so a replica and its
//! server agree on what `GET /db/id` returns: a live leaf beats a deleted
//! one, then the higher generation (`pos`) wins, then the greater revision
//! hash (compared as bytes; CouchDB compares the raw digest, whose order is
//! the order of its lowercase hex).
//!
//! Invariants kept by every method (checked by the property tests at the end
//! of this file and in `tests/`):
//! - every `(pos, hash)` appears at most once;
//! - a node's parent, if any, has `pos` one lower;
//! - every node is an ancestor-or-self of some leaf (merges never create a
//!   phantom leaf out of a dangling ancestor);
//! - after [`RevTree::stem`], every revision kept is one of the last `limit`
//!   revisions of some leaf's path, and the set of leaves is unchanged.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A revision id, `pos-hash` (`"3-917fa2381192822767f010b95b45325b"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rev {
    /// The generation: 1 for a document's first revision.
    pub pos: u64,
    /// The opaque hash part after the dash.
    pub hash: String,
}

impl Rev {
    /// Builds a revision from its parts.
    pub fn new(pos: u64, hash: impl Into<String>) -> Self {
        Rev {
            pos,
            hash: hash.into(),
        }
    }
}

impl Ord for Rev {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.pos, self.hash.as_bytes()).cmp(&(other.pos, other.hash.as_bytes()))
    }
}

impl PartialOrd for Rev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.pos, self.hash)
    }
}

/// A revision string that is not `pos-hash` with `pos >= 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid revision {0:?}: expected <generation>-<hash>, e.g. \"1-967a00dff5e02add41819138abb3284d\"")]
pub struct InvalidRev(pub String);

impl FromStr for Rev {
    type Err = InvalidRev;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidRev(s.to_owned());
        let (pos, hash) = s.split_once('-').ok_or_else(bad)?;
        let pos: u64 = pos.parse().map_err(|_| bad())?;
        if pos == 0 || hash.is_empty() {
            return Err(bad());
        }
        Ok(Rev::new(pos, hash))
    }
}

impl TryFrom<String> for Rev {
    type Error = InvalidRev;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Rev> for String {
    fn from(rev: Rev) -> String {
        rev.to_string()
    }
}

/// A revision and its ancestry, newest first, as CouchDB's `_revisions`
/// field carries it: `{"start": 3, "ids": ["c", "b", "a"]}` is `3-c`, whose
/// parent is `2-b`, whose parent is `1-a`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevPath {
    /// The generation of the first (newest) id.
    pub start: u64,
    /// Hashes, newest first.
    pub ids: Vec<String>,
}

/// Why a [`RevPath`] cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPath {
    /// `ids` was empty.
    #[error("revision path is empty")]
    Empty,
    /// `start` is lower than the number of ids, so some generation would be 0 or less.
    #[error("revision path starts at generation {start} but lists {len} revisions")]
    TooLong {
        /// The path's `start`.
        start: u64,
        /// The number of ids.
        len: usize,
    },
}

impl RevPath {
    /// The path of a revision with no known ancestors.
    pub fn leaf_only(rev: &Rev) -> Self {
        RevPath {
            start: rev.pos,
            ids: vec![rev.hash.clone()],
        }
    }

    /// The newest revision of the path.
    pub fn leaf(&self) -> Option<Rev> {
        self.ids.first().map(|h| Rev::new(self.start, h.clone()))
    }

    /// Whether the path can be merged: at least one id, and no generation
    /// below 1.
    ///
    /// ```
    /// use settee::revtree::RevPath;
    /// let ok = RevPath { start: 2, ids: vec!["b".into(), "a".into()] };
    /// assert!(ok.validate().is_ok());
    /// let too_long = RevPath { start: 1, ids: vec!["b".into(), "a".into()] };
    /// assert!(too_long.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), InvalidPath> {
        if self.ids.is_empty() {
            return Err(InvalidPath::Empty);
        }
        if (self.ids.len() as u64) > self.start {
            return Err(InvalidPath::TooLong {
                start: self.start,
                len: self.ids.len(),
            });
        }
        Ok(())
    }

    fn rev_at(&self, i: usize) -> (u64, &str) {
        (self.start - i as u64, self.ids[i].as_str())
    }
}

/// One leaf of a tree, as the winner rule and `_conflicts` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The leaf revision.
    pub rev: Rev,
    /// Whether this leaf is a tombstone (`_deleted: true`).
    pub deleted: bool,
}

impl Leaf {
    /// CouchDB's ordering key: live before deleted, then generation, then hash.
    fn rank(&self) -> (bool, &Rev) {
        (!self.deleted, &self.rev)
    }
}

/// What a merge did to the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeOutcome {
    /// The revision was already in the tree: nothing changed.
    AlreadyKnown,
    /// The revision extended an existing branch (its parent was a leaf).
    Extended,
    /// The revision started a new branch: a conflict or a new root.
    NewBranch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    #[serde(rename = "p")]
    pos: u64,
    #[serde(rename = "h")]
    hash: String,
    /// Index of the parent node; `None` for a root (the first revision, or
    /// the oldest one kept after stemming).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    parent: Option<u32>,
    #[serde(rename = "d", default, skip_serializing_if = "is_false")]
    deleted: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A document's revision forest.
///
/// ```
/// use settee::Rev;
/// use settee::revtree::{RevPath, RevTree};
///
/// let mut tree = RevTree::default();
/// tree.merge(&RevPath { start: 2, ids: vec!["b".into(), "a".into()] }, false).unwrap();
/// tree.merge(&RevPath { start: 2, ids: vec!["c".into(), "a".into()] }, false).unwrap();
/// assert_eq!(tree.winner().unwrap().rev, "2-c".parse::<Rev>().unwrap());
/// assert_eq!(tree.conflicts(), vec!["2-b".parse::<Rev>().unwrap()]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<Node>")]
pub struct RevTree {
    nodes: Vec<Node>,
}

impl Serialize for RevTree {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.nodes.serialize(s)
    }
}

/// Trees come back from disk: one that breaks the shape every method relies
/// on (a parent index out of range, a parent that is not exactly one
/// generation older, hence no cycles; a repeated revision) is refused when
/// read, so no method can index out of bounds or walk in circles.
impl TryFrom<Vec<Node>> for RevTree {
    type Error = String;

    fn try_from(nodes: Vec<Node>) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            if n.pos == 0 || !seen.insert((n.pos, n.hash.as_str())) {
                return Err(format!(
                    "revision {}-{} is invalid or repeated",
                    n.pos, n.hash
                ));
            }
            if let Some(p) = n.parent {
                let parent = nodes.get(p as usize).filter(|_| p as usize != i);
                if parent.is_none_or(|parent| parent.pos.checked_add(1) != Some(n.pos)) {
                    return Err(format!(
                        "revision {}-{} has a bad parent index {p}",
                        n.pos, n.hash
                    ));
                }
            }
        }
        Ok(RevTree { nodes })
    }
}

impl RevTree {
    /// The nodes as the store's binary record encodes them, in storage
    /// order: `(pos, hash, parent index, deleted)`.
    pub(crate) fn node_parts(&self) -> impl Iterator<Item = (u64, &str, Option<u32>, bool)> {
        self.nodes
            .iter()
            .map(|n| (n.pos, n.hash.as_str(), n.parent, n.deleted))
    }

    /// Rebuilds a tree from [`RevTree::node_parts`], checking its shape as
    /// a tree read from JSON is checked.
    pub(crate) fn from_node_parts(
        parts: Vec<(u64, String, Option<u32>, bool)>,
    ) -> Result<Self, String> {
        let nodes = parts
            .into_iter()
            .map(|(pos, hash, parent, deleted)| Node {
                pos,
                hash,
                parent,
                deleted,
            })
            .collect::<Vec<_>>();
        RevTree::try_from(nodes)
    }
}

impl RevTree {
    /// True when the tree has no revisions.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The number of revisions kept.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn find(&self, pos: u64, hash: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.pos == pos && n.hash == hash)
    }

    /// Every revision kept, in no particular order.
    pub fn revs(&self) -> impl Iterator<Item = Rev> + '_ {
        self.nodes.iter().map(|n| Rev::new(n.pos, n.hash.clone()))
    }

    /// True when the tree holds `rev` (as a leaf or an ancestor).
    pub fn contains(&self, rev: &Rev) -> bool {
        self.find(rev.pos, &rev.hash).is_some()
    }

    fn has_children(&self) -> Vec<bool> {
        let mut has = vec![false; self.nodes.len()];
        for n in &self.nodes {
            if let Some(p) = n.parent {
                has[p as usize] = true;
            }
        }
        has
    }

    /// True when `rev` is a leaf of this tree.
    pub fn is_leaf(&self, rev: &Rev) -> bool {
        match self.find(rev.pos, &rev.hash) {
            Some(i) => !self.nodes.iter().any(|n| n.parent == Some(i as u32)),
            None => false,
        }
    }

    /// Merges a revision with its ancestry. `deleted` is the `_deleted` flag
    /// of the newest revision in `path`.
    ///
    /// Only revisions newer than the first one the tree already knows are
    /// added (plus, when that known revision is a stemmed root, the older
    /// history the path brings), so a merge can never turn a dangling
    /// ancestor into a leaf.
    pub fn merge(&mut self, path: &RevPath, deleted: bool) -> Result<MergeOutcome, InvalidPath> {
        path.validate()?;
        let known = (0..path.ids.len()).find_map(|i| {
            let (pos, hash) = path.rev_at(i);
            self.find(pos, hash).map(|idx| (i, idx))
        });
        match known {
            Some((0, _)) => Ok(MergeOutcome::AlreadyKnown),
            Some((k, idx)) => {
                // Follow the known part of the path down to where the tree's
                // history ends; graft older history there if the path has it.
                let (mut root_k, mut root_idx) = (k, idx);
                while root_k + 1 < path.ids.len() {
                    let (pos, hash) = path.rev_at(root_k + 1);
                    match self.nodes[root_idx].parent {
                        Some(p)
                            if self.nodes[p as usize].pos == pos
                                && self.nodes[p as usize].hash == hash =>
                        {
                            root_idx = p as usize;
                            root_k += 1;
                        }
                        _ => break,
                    }
                }
                self.graft_history(path, root_k, root_idx);
                let parent_was_leaf = !self.nodes.iter().any(|n| n.parent == Some(idx as u32));
                self.push_chain(path, 0..k, Some(idx as u32), deleted);
                Ok(if parent_was_leaf {
                    MergeOutcome::Extended
                } else {
                    MergeOutcome::NewBranch
                })
            }
            None => {
                self.push_chain(path, 0..path.ids.len(), None, deleted);
                Ok(MergeOutcome::NewBranch)
            }
        }
    }

    /// When the known node `idx` (path index `k`) is a root but the path
    /// knows its ancestors, attach them: a stemmed branch gets its history
    /// back. Built from the known node downwards, so every added node has a
    /// child and none can become a phantom leaf.
    fn graft_history(&mut self, path: &RevPath, k: usize, idx: usize) {
        let mut child = idx;
        for i in k + 1..path.ids.len() {
            if self.nodes[child].parent.is_some() {
                return;
            }
            let (pos, hash) = path.rev_at(i);
            let node = match self.find(pos, hash) {
                Some(existing) => existing,
                None => {
                    self.nodes.push(Node {
                        pos,
                        hash: hash.to_owned(),
                        parent: None,
                        deleted: false,
                    });
                    self.nodes.len() - 1
                }
            };
            self.nodes[child].parent = Some(node as u32);
            child = node;
        }
    }

    /// Pushes `path.ids[range]` (newest first) as a chain under `parent`.
    fn push_chain(
        &mut self,
        path: &RevPath,
        range: std::ops::Range<usize>,
        mut parent: Option<u32>,
        deleted: bool,
    ) {
        for i in range.rev() {
            let (pos, hash) = path.rev_at(i);
            self.nodes.push(Node {
                pos,
                hash: hash.to_owned(),
                parent,
                deleted: i == 0 && deleted,
            });
            parent = Some((self.nodes.len() - 1) as u32);
        }
    }

    /// Keeps at most `limit` revisions on every leaf's path (CouchDB's
    /// `_revs_limit`) and returns the revisions dropped.
    pub fn stem(&mut self, limit: usize) -> Vec<Rev> {
        let limit = limit.max(1);
        let has_children = self.has_children();
        let mut keep = vec![false; self.nodes.len()];
        // A parent link survives only if some leaf's kept path crosses it;
        // otherwise the child becomes a root, as in CouchDB, where stemmed
        // paths are merged back into a forest.
        let mut keep_link = vec![false; self.nodes.len()];
        for (i, &has) in has_children.iter().enumerate() {
            if has {
                continue;
            }
            let mut cur = i;
            keep[cur] = true;
            for _ in 1..limit {
                let Some(parent) = self.nodes[cur].parent.map(|p| p as usize) else {
                    break;
                };
                keep_link[cur] = true;
                keep[parent] = true;
                cur = parent;
            }
        }
        let links_intact = self
            .nodes
            .iter()
            .zip(&keep_link)
            .all(|(n, &kept)| n.parent.is_none() || kept);
        if keep.iter().all(|&k| k) && links_intact {
            return Vec::new();
        }
        let mut new_index = vec![None; self.nodes.len()];
        let mut next = 0u32;
        for (i, &k) in keep.iter().enumerate() {
            if k {
                new_index[i] = Some(next);
                next += 1;
            }
        }
        let mut dropped = Vec::new();
        let old = std::mem::take(&mut self.nodes);
        for (i, mut node) in old.into_iter().enumerate() {
            if keep[i] {
                node.parent = match (node.parent, keep_link[i]) {
                    (Some(p), true) => new_index[p as usize],
                    _ => None,
                };
                self.nodes.push(node);
            } else {
                dropped.push(Rev::new(node.pos, node.hash));
            }
        }
        dropped
    }

    /// All leaves, in CouchDB's order: the winner first, then live leaves,
    /// then deleted ones, each group by generation and hash, descending.
    pub fn leaves(&self) -> Vec<Leaf> {
        let has_children = self.has_children();
        let mut leaves: Vec<Leaf> = self
            .nodes
            .iter()
            .zip(has_children)
            .filter(|(_, has)| !has)
            .map(|(n, _)| Leaf {
                rev: Rev::new(n.pos, n.hash.clone()),
                deleted: n.deleted,
            })
            .collect();
        leaves.sort_by(|a, b| b.rank().cmp(&a.rank()));
        leaves
    }

    /// The winning leaf, or `None` for an empty tree.
    pub fn winner(&self) -> Option<Leaf> {
        self.leaves().into_iter().next()
    }

    /// Live leaves other than the winner (CouchDB's `_conflicts`), in its order.
    pub fn conflicts(&self) -> Vec<Rev> {
        self.leaves()
            .into_iter()
            .skip(1)
            .filter(|l| !l.deleted)
            .map(|l| l.rev)
            .collect()
    }

    /// Deleted leaves other than the winner (`_deleted_conflicts`), in CouchDB's order.
    pub fn deleted_conflicts(&self) -> Vec<Rev> {
        self.leaves()
            .into_iter()
            .skip(1)
            .filter(|l| l.deleted)
            .map(|l| l.rev)
            .collect()
    }

    /// The path from `rev` back to its oldest kept ancestor, as `_revisions`.
    pub fn path_to(&self, rev: &Rev) -> Option<RevPath> {
        let mut cur = self.find(rev.pos, &rev.hash);
        let mut ids = Vec::new();
        while let Some(i) = cur {
            ids.push(self.nodes[i].hash.clone());
            cur = self.nodes[i].parent.map(|p| p as usize);
        }
        if ids.is_empty() {
            None
        } else {
            Some(RevPath {
                start: rev.pos,
                ids,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn rev(s: &str) -> Rev {
        s.parse().unwrap()
    }

    /// A damaged record whose parent is at generation `u64::MAX` is refused
    /// when read, not an overflow (issue 17, with defect 9).
    #[test]
    fn a_parent_at_the_last_generation_is_refused_when_read() {
        let parts = vec![
            (u64::MAX, "a".to_owned(), None, false),
            (1, "b".to_owned(), Some(0), false),
        ];
        assert!(RevTree::from_node_parts(parts).is_err());
    }

    fn path(start: u64, ids: &[&str]) -> RevPath {
        RevPath {
            start,
            ids: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn parses_and_orders_revs() {
        assert_eq!(rev("12-ab"), Rev::new(12, "ab"));
        assert!("0-ab".parse::<Rev>().is_err());
        assert!("ab".parse::<Rev>().is_err());
        assert!("3-".parse::<Rev>().is_err());
        assert!("x-1".parse::<Rev>().is_err());
        assert!(rev("10-a") > rev("9-z"), "generation compares numerically");
        assert!(rev("2-b") > rev("2-a"));
    }

    #[test]
    fn trees_read_back_from_disk_are_checked() {
        let mut t = RevTree::default();
        t.merge(&path(3, &["c", "b", "a"]), false).unwrap();
        let text = serde_json::to_string(&t).unwrap();
        assert!(text.starts_with('['), "stored as a plain list: {text}");
        assert_eq!(serde_json::from_str::<RevTree>(&text).unwrap(), t);
        for bad in [
            r#"[{"p":1,"h":"a","u":7}]"#,
            r#"[{"p":2,"h":"b","u":0}]"#,
            r#"[{"p":1,"h":"a"},{"p":3,"h":"c","u":0}]"#,
            r#"[{"p":2,"h":"a","u":1},{"p":1,"h":"b","u":0}]"#,
            r#"[{"p":1,"h":"a"},{"p":1,"h":"a"}]"#,
            r#"[{"p":0,"h":"a"}]"#,
        ] {
            assert!(serde_json::from_str::<RevTree>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn linear_history_extends() {
        let mut t = RevTree::default();
        assert_eq!(
            t.merge(&path(1, &["a"]), false),
            Ok(MergeOutcome::NewBranch)
        );
        assert_eq!(
            t.merge(&path(2, &["b", "a"]), false),
            Ok(MergeOutcome::Extended)
        );
        assert_eq!(
            t.merge(&path(3, &["c", "b", "a"]), false),
            Ok(MergeOutcome::Extended)
        );
        assert_eq!(
            t.merge(&path(2, &["b", "a"]), false),
            Ok(MergeOutcome::AlreadyKnown)
        );
        assert_eq!(t.leaves().len(), 1);
        assert_eq!(t.winner().unwrap().rev, rev("3-c"));
        assert_eq!(t.path_to(&rev("3-c")), Some(path(3, &["c", "b", "a"])));
        assert!(t.is_leaf(&rev("3-c")) && !t.is_leaf(&rev("2-b")));
    }

    #[test]
    fn conflicts_and_winner_follow_couchdb() {
        let mut t = RevTree::default();
        t.merge(&path(2, &["aaa", "x"]), false).unwrap();
        t.merge(&path(2, &["bbb", "x"]), false).unwrap();
        t.merge(&path(3, &["zzz", "ccc", "x"]), true).unwrap();
        // The deleted 3- leaf loses to live 2- leaves; the greater hash wins among them.
        assert_eq!(t.winner().unwrap().rev, rev("2-bbb"));
        assert_eq!(t.conflicts(), vec![rev("2-aaa")]);
        assert_eq!(t.deleted_conflicts(), vec![rev("3-zzz")]);
        // When every leaf is deleted, the highest deleted leaf wins.
        t.merge(&path(3, &["d1", "aaa", "x"]), true).unwrap();
        t.merge(&path(3, &["d2", "bbb", "x"]), true).unwrap();
        let w = t.winner().unwrap();
        assert_eq!((w.rev, w.deleted), (rev("3-zzz"), true));
        assert!(t.conflicts().is_empty());
        assert_eq!(t.deleted_conflicts(), vec![rev("3-d2"), rev("3-d1")]);
    }

    #[test]
    fn merge_skips_unknown_history_below_a_known_revision() {
        let mut t = RevTree::default();
        t.merge(&path(3, &["c", "b", "a"]), false).unwrap();
        // A path whose ancestors disagree below a known revision must not
        // add a phantom leaf for the unknown `1-q`.
        t.merge(&path(4, &["d", "c", "q"]), false).unwrap();
        assert_eq!(t.leaves().len(), 1);
        assert!(!t.contains(&rev("1-q")));
    }

    #[test]
    fn stemming_keeps_leaves_and_grafting_restores_history() {
        let mut t = RevTree::default();
        t.merge(&path(5, &["e", "d", "c", "b", "a"]), false)
            .unwrap();
        t.merge(&path(3, &["x", "b", "a"]), false).unwrap();
        let dropped = t.stem(2);
        assert_eq!(
            dropped.into_iter().collect::<BTreeSet<_>>(),
            [rev("1-a"), rev("3-c")].into_iter().collect()
        );
        assert_eq!(t.path_to(&rev("5-e")), Some(path(5, &["e", "d"])));
        assert_eq!(t.path_to(&rev("3-x")), Some(path(3, &["x", "b"])));
        assert_eq!(t.leaves().len(), 2);
        // A later path bringing the full history re-links the stemmed root.
        t.merge(&path(6, &["f", "e", "d", "c", "b", "a"]), false)
            .unwrap();
        assert_eq!(t.leaves().len(), 2);
        assert_eq!(t.path_to(&rev("6-f")).unwrap().ids.len(), 6);
    }

    #[test]
    fn stemming_cuts_links_no_kept_path_crosses() {
        // Found by the property test: 1-a has a short branch (2-s) and a long
        // one (5-e). With limit 3 the long branch keeps 5-e, 4-d, 3-c; 2-b is
        // dropped, so 3-c becomes a root even though 1-a is kept for 2-s.
        let mut t = RevTree::default();
        t.merge(&path(5, &["e", "d", "c", "b", "a"]), false)
            .unwrap();
        t.merge(&path(2, &["s", "a"]), false).unwrap();
        let dropped = t.stem(3);
        assert_eq!(dropped, vec![rev("2-b")]);
        assert_eq!(t.path_to(&rev("5-e")), Some(path(5, &["e", "d", "c"])));
        assert_eq!(t.path_to(&rev("2-s")), Some(path(2, &["s", "a"])));
        assert!(t.stem(3).is_empty());
    }

    #[test]
    fn invalid_paths_are_rejected() {
        let mut t = RevTree::default();
        assert_eq!(t.merge(&path(1, &[]), false), Err(InvalidPath::Empty));
        assert!(matches!(
            t.merge(&path(1, &["b", "a"]), false),
            Err(InvalidPath::TooLong { .. })
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn serialization_round_trips() {
        let mut t = RevTree::default();
        t.merge(&path(2, &["b", "a"]), true).unwrap();
        t.merge(&path(2, &["c", "a"]), false).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let back: RevTree = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    // --- property tests against a naive reference model -------------------
    //
    // The model is the set of every revision ever merged, with its parent:
    // leaves are revisions nobody names as parent; the winner is the max by
    // (live, pos, hash). No indices, no stemming, no cleverness.

    /// A random history: a forest where node i's parent is an earlier node.
    fn arb_history() -> impl Strategy<Value = Vec<(Option<usize>, bool)>> {
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                any::<bool>(),
                prop::bool::weighted(0.2),
            ),
            1..24,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (idx, root, del))| {
                    let parent = if i == 0 || (root && i % 5 == 0) {
                        None
                    } else {
                        Some(idx.index(i))
                    };
                    (parent, del)
                })
                .collect()
        })
    }

    fn node_revs(history: &[(Option<usize>, bool)]) -> Vec<Rev> {
        let mut revs: Vec<Rev> = Vec::with_capacity(history.len());
        for (i, (parent, _)) in history.iter().enumerate() {
            let pos = parent.map(|p| revs[p].pos + 1).unwrap_or(1);
            // Hashes in an order unrelated to insertion order.
            revs.push(Rev::new(
                pos,
                format!("{:08x}", (i as u32).wrapping_mul(2654435761)),
            ));
        }
        revs
    }

    fn full_path(history: &[(Option<usize>, bool)], revs: &[Rev], leaf: usize) -> RevPath {
        let mut ids = vec![revs[leaf].hash.clone()];
        let mut i = leaf;
        while let Some(p) = history[i].0 {
            ids.push(revs[p].hash.clone());
            i = p;
        }
        RevPath {
            start: revs[leaf].pos,
            ids,
        }
    }

    fn model_leaves(
        history: &[(Option<usize>, bool)],
        revs: &[Rev],
        merged: &BTreeSet<usize>,
    ) -> Vec<Leaf> {
        // Everything on the path of a merged node is known.
        let mut known = BTreeSet::new();
        for &m in merged {
            let mut cur = Some(m);
            while let Some(c) = cur {
                known.insert(c);
                cur = history[c].0;
            }
        }
        let parents: BTreeSet<usize> = known.iter().filter_map(|&k| history[k].0).collect();
        let mut leaves: Vec<Leaf> = known
            .iter()
            .filter(|k| !parents.contains(k))
            .map(|&k| Leaf {
                rev: revs[k].clone(),
                deleted: history[k].1,
            })
            .collect();
        leaves.sort_by(|a, b| b.rank().cmp(&a.rank()));
        leaves
    }

    proptest! {
        #[test]
        fn merge_matches_model_in_any_order(
            history in arb_history(),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..30),
        ) {
            let revs = node_revs(&history);
            let mut tree = RevTree::default();
            let mut merged = BTreeSet::new();
            for idx in order {
                let i = idx.index(history.len());
                let p = full_path(&history, &revs, i);
                let was_known = tree.contains(&revs[i]);
                let outcome = tree.merge(&p, history[i].1).unwrap();
                prop_assert_eq!(outcome == MergeOutcome::AlreadyKnown, was_known);
                merged.insert(i);
                // Ancestors merged as leaves stay leaves only in the model if
                // nothing descends from them: both views must agree.
                let model = model_leaves(&history, &revs, &merged);
                let got = tree.leaves();
                // Deleted flags are only known for revisions merged as leaves.
                let got_revs: Vec<_> = got.iter().map(|l| l.rev.clone()).collect::<BTreeSet<_>>().into_iter().collect();
                let model_revs: Vec<_> = model.iter().map(|l| l.rev.clone()).collect::<BTreeSet<_>>().into_iter().collect();
                prop_assert_eq!(got_revs, model_revs);
            }
        }

        #[test]
        fn winner_is_order_independent(
            history in arb_history(),
            seed in any::<u64>(),
        ) {
            let revs = node_revs(&history);
            let leaves: Vec<usize> = (0..history.len())
                .filter(|i| !history.iter().any(|(p, _)| *p == Some(*i)))
                .collect();
            let mut forward = RevTree::default();
            for &i in &leaves {
                forward.merge(&full_path(&history, &revs, i), history[i].1).unwrap();
            }
            let mut shuffled = leaves.clone();
            let mut s = seed;
            for k in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(k, (s >> 33) as usize % (k + 1));
            }
            let mut backward = RevTree::default();
            for &i in &shuffled {
                backward.merge(&full_path(&history, &revs, i), history[i].1).unwrap();
            }
            let all: BTreeSet<usize> = leaves.iter().copied().collect();
            let model = model_leaves(&history, &revs, &all);
            prop_assert_eq!(forward.leaves(), model.clone());
            prop_assert_eq!(backward.leaves(), model.clone());
            prop_assert_eq!(forward.winner(), model.first().cloned());
            prop_assert_eq!(forward.conflicts(), model.iter().skip(1).filter(|l| !l.deleted).map(|l| l.rev.clone()).collect::<Vec<_>>());
        }

        #[test]
        fn stemming_keeps_leaves_and_bounds_paths(
            history in arb_history(),
            limit in 1usize..6,
        ) {
            let revs = node_revs(&history);
            let mut tree = RevTree::default();
            for i in 0..history.len() {
                tree.merge(&full_path(&history, &revs, i), history[i].1).unwrap();
            }
            let before = tree.leaves();
            let all_before: BTreeSet<Rev> = tree.revs().collect();
            let dropped: BTreeSet<Rev> = tree.stem(limit).into_iter().collect();
            prop_assert_eq!(tree.leaves(), before.clone());
            let kept: BTreeSet<Rev> = tree.revs().collect();
            prop_assert_eq!(kept.len(), tree.len(), "no duplicates");
            prop_assert_eq!(&kept | &dropped, all_before);
            // Every kept revision is within `limit` of some leaf.
            let near_leaves: BTreeSet<Rev> = before
                .iter()
                .flat_map(|l| {
                    let p = tree.path_to(&l.rev).unwrap();
                    p.ids.into_iter().take(limit).enumerate().map(move |(i, h)| Rev::new(p.start - i as u64, h))
                })
                .collect();
            prop_assert_eq!(near_leaves, kept);
            // Stemming is idempotent.
            prop_assert!(tree.stem(limit).is_empty());
        }
    }
}
