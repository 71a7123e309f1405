//! The indexer: keeps each view's rows in sled, in collation order, and
//! follows the replica's local sequence to keep them current.
//!
//! ```text
//!  a view with nothing indexed:          a view behind:
//!  Replica::records, in id order         Changes::with_raw_bodies(since)
//!  (≤ the durable seq when it began)     (≤ the durable update seq)
//!        └───────────────┬───────────────────────┘
//!                        │ winner's raw body (live, non-design docs),
//!                        │ parsed once only if a view needs it
//!                        ▼
//!                 View::map per view still behind that change
//!                        │ encoded rows, old rows from back-index
//!                        ▼
//!  one atomic sled batch per view per chunk in the `views` tree:
//!  that view's rows, back-index and state (its seq, or how far a build
//!  in id order has read)
//! ```
//!
//! It owns one tree of the replica, `views`, with three key spaces (rows
//! `r…` and back-index `b…`, both in sorted blocks, states `s…`; the keys
//! are in `docs/design.md`), and is its only writer. A build from nothing
//! reads the records in id order (one sled page after the next, where
//! reading by sequence looks up each random id) and is one chunk, so its
//! blocks are written once, in order. It reads the store only through
//! `Replica`'s reads, and must not be called from the store.

use super::block;
use super::collate::{decode_str, encode_key, encode_str, encoded_len};
use super::error::ViewError;
use super::fx::BuildFx;
use super::parallel;
use super::view::{RawDocument, View};
use crate::store::{RawDocumentChange, RecordPart, Replica, StoreError, StoredRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How much one indexing batch holds: up to `docs` changes, or fewer
/// when they emit more than `rows` rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkLimits {
    pub(crate) docs: usize,
    pub(crate) rows: usize,
    /// Rows of the first chunk into views that are all empty (a build from
    /// nothing): written as whole blocks in order, so one big chunk costs
    /// far less than many chunks that each rewrite the blocks before them.
    pub(crate) cold_rows: usize,
    /// Documents of that chunk.
    pub(crate) cold_docs: usize,
    /// Whether chunks grow with the index (up to `cold_rows`): a chunk
    /// rewrites every block it touches, so a backlog indexed in chunks much
    /// smaller than the index would rewrite the whole index per chunk.
    pub(crate) grow: bool,
    /// Threads a large update may use (`SETTEE_VIEW_THREADS`, else the
    /// cores, at most 4); 1 indexes on the caller's thread alone.
    pub(crate) threads: usize,
    /// Backlogs (in local sequences) below this are read and mapped on one
    /// thread: threads cost more than they save on a few thousand changes.
    pub(crate) parallel_backlog: u64,
    /// Rows (plus documents) a chunk must edit before its views prepare
    /// and write their blocks on separate threads.
    pub(crate) parallel_edits: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        // `SETTEE_VIEW_CHUNK_DOCS` and `SETTEE_VIEW_CHUNK_ROWS` resize
        // chunks (the kill test uses tiny ones to get many commits out of a
        // small replica).
        let docs = std::env::var("SETTEE_VIEW_CHUNK_DOCS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(2000);
        let rows = std::env::var("SETTEE_VIEW_CHUNK_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(20_000);
        // With chunks resized by hand (the kill test), builds from nothing
        // use them too.
        let resized = std::env::var_os("SETTEE_VIEW_CHUNK_DOCS").is_some()
            || std::env::var_os("SETTEE_VIEW_CHUNK_ROWS").is_some();
        let cold_rows = std::env::var("SETTEE_VIEW_COLD_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(if resized { rows } else { 2_000_000 });
        ChunkLimits {
            docs,
            rows,
            cold_rows,
            cold_docs: if resized { docs } else { usize::MAX },
            grow: !resized,
            threads: parallel::threads(),
            // The kill test sets it low to kill workers mid-read.
            parallel_backlog: std::env::var("SETTEE_VIEW_PARALLEL_BACKLOG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(8192),
            parallel_edits: 50_000,
        }
    }
}

/// The storage layout the indexer writes; an index recorded with another
/// one is dropped and rebuilt (1: one sled entry per row and per document;
/// 2: sorted blocks; 3: rows without their id, values shared per block).
pub(crate) const LAYOUT: u32 = 3;

/// A view's state as stored: [`ViewState`] and the layout of its rows.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredState {
    pub(crate) version: u64,
    pub(crate) seq: u64,
    pub(crate) rows: u64,
    #[serde(default)]
    pub(crate) layout: u32,
    /// A build from nothing in id order, under way (`seq` is then 0). A
    /// release that does not know it reads a view at sequence 0 and
    /// catches up from there by sequence, mapping every document again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scan: Option<IdScan>,
}

/// Where a build from nothing in id order stands: every document with an
/// id up to `after` whose latest change was at or below `upto` when it
/// was read is indexed; no document after `after` is. When the scan ends
/// the view covers `upto`, and the changes after it (also those of
/// documents the scan had passed) are indexed by sequence as usual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdScan {
    pub(crate) after: String,
    pub(crate) upto: u64,
}

/// A view's progress, in `views.state` under the view's name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewState {
    /// The definition version the rows were built with.
    pub version: u64,
    /// Every change up to this local sequence is reflected in the rows;
    /// none after it is (beyond what a re-read document already showed).
    pub seq: u64,
    /// Rows in the index (CouchDB's `total_rows`).
    pub rows: u64,
}

/// What bringing one view up to date did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViewWarm {
    /// The view.
    pub name: String,
    /// Changed documents the view re-indexed (each once per update).
    pub docs_indexed: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Old rows removed (updates, deletions, winner changes).
    pub rows_removed: u64,
    /// True when the index was dropped and rebuilt because the view's
    /// definition version changed.
    pub rebuilt: bool,
    /// The local sequence the view now covers.
    pub seq: u64,
    /// Rows in the index now.
    pub total_rows: u64,
}

/// What a warm-up did, per view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmReport {
    /// One entry per registered view, in registration order.
    pub views: Vec<ViewWarm>,
    /// Indexing chunks committed (one atomic sled batch per view each).
    pub chunks: u64,
    /// Threads that read and mapped the changes (1 unless the backlog was
    /// large and more than one core was available).
    pub threads: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl WarmReport {
    /// Documents re-indexed, summed over the views.
    pub fn docs_indexed(&self) -> u64 {
        self.views.iter().map(|v| v.docs_indexed).sum()
    }

    /// The entry of one view.
    pub fn view(&self, name: &str) -> Option<&ViewWarm> {
        self.views.iter().find(|v| v.name == name)
    }
}

/// The `views` tree and the writer lock.
pub(crate) struct Index {
    replica: Replica,
    /// Rows (`r`…), back-index (`b`…) and states (`s`…) of every view, in
    /// one tree so that a view's part of a chunk is one atomic
    /// `apply_batch` (half the cost of a multi-tree transaction in sled
    /// 0.34, measured).
    pub(crate) tree: sled::Tree,
    /// One indexer per replica at a time, shared by every `Views` of the
    /// replica in this process (see [`writer_lock`]).
    writer: Arc<Mutex<()>>,
}

/// The indexing lock of a replica directory. Two `Views` of one replica
/// (the sync service's warm-up and an app's queries) must not index at the
/// same time: chunks compute a view's row count from the state they read
/// before their batch, and a rebuild's clearing is not
/// transactional. (sled's file lock keeps other processes out.)
fn writer_lock(replica: &Replica) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    locks
        .entry(replica.path().to_path_buf())
        .or_default()
        .clone()
}

const ROWS: u8 = b'r';
const BACK: u8 = b'b';
const STATE: u8 = b's';

/// `space`, the name's length (u16, big-endian) and the name: no view's
/// prefix is a prefix of another's.
fn named(space: u8, name: &str) -> Vec<u8> {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut p = Vec::with_capacity(3 + name.len());
    p.push(space);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(name.as_bytes());
    p
}

/// The key prefix of a view's rows.
pub(crate) fn view_prefix(name: &str) -> Vec<u8> {
    named(ROWS, name)
}

/// The names of the views with a recorded state, in name order.
pub(crate) fn indexed_names(tree: &sled::Tree) -> Result<Vec<String>, ViewError> {
    let mut names = Vec::new();
    for key in tree.scan_prefix([STATE]).keys() {
        let key = key?;
        names.push(String::from_utf8_lossy(key.get(3..).unwrap_or_default()).into_owned());
    }
    Ok(names)
}

/// A view's stored state, or what is wrong with it.
pub(crate) fn read_state(tree: &sled::Tree, name: &str) -> Result<Option<StoredState>, String> {
    match tree.get(state_key(name)) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("state: {e}")),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("state: {e}")),
    }
}

/// The key prefix of a view's back-index.
pub(crate) fn back_prefix(name: &str) -> Vec<u8> {
    named(BACK, name)
}

pub(crate) fn state_key(name: &str) -> Vec<u8> {
    named(STATE, name)
}

/// A row ready to store: (key suffix after the view prefix, length of its
/// encoded-key part, stored value). Rows of one document that store the
/// same value (a tag's rows, one per card) share its bytes.
pub(crate) type EncodedRow = (Vec<u8>, usize, Arc<[u8]>);

/// One change, prepared for every view still behind it.
struct Pending {
    seq: u64,
    id: String,
    /// Per view: `None` when the view already covers this change, else the
    /// rows to hold for the document (empty when it emits nothing).
    per_view: Vec<Option<Vec<EncodedRow>>>,
    /// Rows over every view (a chunk's size).
    rows: usize,
}

struct Active<'a> {
    view: &'a View,
    prefix: Vec<u8>,
    back_prefix: Vec<u8>,
    state: ViewState,
    /// Set while the view is built from nothing in id order.
    scan: Option<IdScan>,
    report: ViewWarm,
}

impl Active<'_> {
    /// Built from nothing, or being: read in id order, not by sequence.
    fn cold(&self) -> bool {
        self.scan.is_some() || (self.state.seq == 0 && self.state.rows == 0)
    }
}

/// How a chunk moves its views' states.
#[derive(Clone, Copy)]
enum Mark {
    /// To the highest sequence among its changes.
    Seq,
    /// To the chunk's last id, of a build in id order up to `upto`.
    Scan { upto: u64 },
}

impl Index {
    pub(crate) fn open(replica: &Replica) -> Result<Index, ViewError> {
        Ok(Index {
            replica: replica.clone(),
            tree: replica.open_tree("views")?,
            writer: writer_lock(replica),
        })
    }

    /// The view's state; `None` before its first update, or when its
    /// rows are in another storage layout (they are rebuilt on update).
    pub(crate) fn state(&self, name: &str) -> Result<Option<ViewState>, ViewError> {
        Ok(self
            .stored_state(name)?
            .filter(|s| s.layout == LAYOUT)
            .map(|s| ViewState {
                version: s.version,
                seq: s.seq,
                rows: s.rows,
            }))
    }

    /// False when the view's rows are in another storage layout (an index
    /// written before blocks): queries answer as if it were not built
    /// until its next update rebuilds it.
    pub(crate) fn readable(&self, name: &str) -> Result<bool, ViewError> {
        Ok(self.stored_state(name)?.is_none_or(|s| s.layout == LAYOUT))
    }

    fn stored_state(&self, name: &str) -> Result<Option<StoredState>, ViewError> {
        match self.tree.get(state_key(name))? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ViewError::Corrupt {
                        view: name.to_owned(),
                        detail: format!("state: {e}"),
                    })
            }
            None => Ok(None),
        }
    }

    /// The names of the views that have an index, in name order.
    pub(crate) fn names(&self) -> Result<Vec<String>, ViewError> {
        indexed_names(&self.tree)
    }

    /// Deletes a view's index: rows and back-index first, its state last,
    /// so a kill part way leaves the state and the next drop finishes.
    pub(crate) fn drop_view(&self, name: &str) -> Result<(), ViewError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.clear_rows(name)?;
        self.tree.remove(state_key(name))?;
        self.replica.flush()?;
        Ok(())
    }

    /// Deletes a view's rows and back-index (in batches of 10 000 keys),
    /// flushed; its state is the caller's to change.
    fn clear_rows(&self, name: &str) -> Result<(), ViewError> {
        for prefix in [view_prefix(name), back_prefix(name)] {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for key in self.tree.scan_prefix(&prefix).keys() {
                batch.remove(key?);
                n += 1;
                if n % 10_000 == 0 {
                    self.tree.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            self.tree.apply_batch(batch)?;
        }
        self.replica.flush()?;
        Ok(())
    }

    /// Brings `views` up to the replica's durable update sequence.
    ///
    /// # Durability
    /// Each view's part of a chunk is one atomic sled batch holding every
    /// block it rewrites (the rows it adds and removes, the back-index
    /// entries) and the view's new sequence, so a view's sequence never
    /// runs ahead of its rows nor its rows ahead of its sequence. Views are
    /// independent: a kill between two views' batches leaves them one
    /// chunk apart, and the next update starts from the lower of their
    /// sequences, each view taking only the changes it lacks. A build from
    /// nothing is one chunk: a kill loses all of it, and the next update
    /// starts over. Flushed before `Ok`. A kill at any point leaves every
    /// view at its last committed chunk; the next update continues from
    /// there. After an `Err` some chunks may be committed (with threads,
    /// the changes prepared before the failing one in its part of the
    /// backlog are not: they are indexed again by the next update).
    pub(crate) fn catch_up(
        &self,
        views: &[&View],
        limits: ChunkLimits,
    ) -> Result<WarmReport, ViewError> {
        let started = Instant::now();
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only what a flush made durable: the index must never cover a
        // change that a crash could take back.
        let durable = *self.replica.watch_update_seq().borrow();
        let mut active = Vec::with_capacity(views.len());
        for &view in views {
            let (state, rebuilt, scan) = self.prepare(view)?;
            active.push(Active {
                view,
                prefix: view_prefix(view.name()),
                back_prefix: back_prefix(view.name()),
                state,
                scan,
                report: ViewWarm {
                    name: view.name().to_owned(),
                    rebuilt,
                    seq: state.seq,
                    total_rows: state.rows,
                    ..ViewWarm::default()
                },
            });
        }
        let mut chunks = 0;
        let mut threads = 1;
        if durable > 0 && active.iter().any(Active::cold) {
            chunks += self.build_by_id(&mut active, limits, durable, &mut threads)?;
            self.replica.flush()?;
        }
        let since = active.iter().map(|a| a.state.seq).min().unwrap_or(durable);
        if since < durable {
            chunks += self.index_changes(&mut active, limits, since, durable, &mut threads)?;
            self.replica.flush()?;
        }
        Ok(WarmReport {
            views: active.into_iter().map(|a| a.report).collect(),
            chunks,
            threads,
            elapsed: started.elapsed(),
        })
    }

    /// Indexes the changes after `since` up to `durable` in chunks, each
    /// committed as one batch; the number of chunks. A large backlog is
    /// read and mapped on several threads ([`parallel::Ordered`]), parts
    /// of it in sequence order, a bounded number of parts ahead of the
    /// chunk being committed; chunks are committed on this thread, in order,
    /// as without threads.
    fn index_changes(
        &self,
        active: &mut [Active<'_>],
        limits: ChunkLimits,
        since: u64,
        durable: u64,
        used: &mut usize,
    ) -> Result<u64, ViewError> {
        let backlog = durable - since;
        let threads = limits.threads;
        // Decided now: a change's rows for a view depend only on whether
        // the view was behind it when indexing started (chunks move a
        // view's `seq` only up to changes already taken).
        let behind: Vec<(&View, u64)> = active.iter().map(|a| (a.view, a.state.seq)).collect();
        let one_thread = |active: &mut [Active<'_>]| {
            // Bodies come with the feed: one record read per document.
            let mut feed = self.replica.changes(since).with_raw_bodies();
            let mut keys = KeyCache::with_capacity(capacity(backlog));
            let mut source = std::iter::from_fn(|| match feed.next()? {
                Err(e) => Some(Err(e.into())),
                Ok(change) if change.seq > durable => None,
                Ok(change) => Some(prepare(change, &behind, &mut keys)),
            });
            self.commit_chunks(active, limits, durable, Mark::Seq, &mut source)
        };
        if threads < 2 || backlog < limits.parallel_backlog {
            return one_thread(active);
        }
        let parts = parallel::seq_parts(since, durable, part_span(backlog, threads));
        let threaded = self.in_threads(
            parts,
            backlog,
            limits,
            used,
            |keys, part: std::ops::RangeInclusive<u64>| {
                let mut out = Vec::new();
                for change in self.replica.changes(part.start() - 1).with_raw_bodies() {
                    let change = change?;
                    if change.seq > *part.end() {
                        break;
                    }
                    out.push(prepare(change, &behind, keys)?);
                }
                Ok(out)
            },
            |source| self.commit_chunks(active, limits, durable, Mark::Seq, source),
        );
        match threaded {
            Some(outcome) => outcome,
            // Not one thread could start: the caller's thread does it all.
            None => one_thread(active),
        }
    }

    /// Builds the views that have nothing indexed (or are part way
    /// through such a build) by reading every document in id order, up to
    /// the durable sequence: the records come one page after the next
    /// instead of one lookup per change in sequence order (random ids make
    /// those random reads). Views whose builds stand at different points
    /// (a kill between two views' batches) each continue from their own.
    /// Leaves each built view covering the sequence its build read up to;
    /// [`Index::index_changes`] then takes the changes after it.
    fn build_by_id(
        &self,
        active: &mut [Active<'_>],
        limits: ChunkLimits,
        durable: u64,
        used: &mut usize,
    ) -> Result<u64, ViewError> {
        let mut groups: Vec<Option<IdScan>> = Vec::new();
        for a in active.iter().filter(|a| a.cold()) {
            if !groups.contains(&a.scan) {
                groups.push(a.scan.clone());
            }
        }
        let mut chunks = 0;
        for group in groups {
            let upto = group.as_ref().map_or(durable, |s| s.upto);
            let after = group.as_ref().map(|s| s.after.as_str());
            // Only this group's views (0) take the documents it reads.
            let behind: Vec<(&View, u64)> = active
                .iter()
                .map(|a| {
                    (
                        a.view,
                        if a.cold() && a.scan == group {
                            0
                        } else {
                            u64::MAX
                        },
                    )
                })
                .collect();
            chunks += self.scan_ids(active, limits, after, upto, &behind, used)?;
            let members = behind.iter().map(|(_, seq)| *seq == 0);
            for (a, _) in active.iter_mut().zip(members).filter(|(_, m)| *m) {
                a.state.seq = upto;
                a.scan = None;
                a.report.seq = upto;
                self.tree
                    .insert(state_key(a.view.name()), encode_state(&a.state))?;
            }
        }
        Ok(chunks)
    }

    /// The id-ordered read of [`Index::build_by_id`] for the views
    /// `behind` marks with 0, after id `after`, of the documents whose
    /// latest change is at or below `upto`.
    fn scan_ids(
        &self,
        active: &mut [Active<'_>],
        limits: ChunkLimits,
        after: Option<&str>,
        upto: u64,
        behind: &[(&View, u64)],
        used: &mut usize,
    ) -> Result<u64, ViewError> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mark = Mark::Scan { upto };
        let threads = limits.threads;
        let take = |record: Result<StoredRecord, StoreError>, keys: &mut KeyCache| {
            match record.map(|r| r.winner(&self.replica, true)) {
                Err(e) | Ok(Some(Err(e))) => Some(Err(e.into())),
                // Gone since it was read.
                Ok(None) => None,
                // Changed since `upto`: its change is taken by sequence later.
                Ok(Some(Ok(change))) if change.seq > upto => None,
                Ok(Some(Ok(change))) => Some(prepare(change, behind, keys)),
            }
        };
        let one_thread = |active: &mut [Active<'_>]| {
            let mut records = self.replica.records((start, Bound::Unbounded));
            let mut keys = KeyCache::with_capacity(capacity(upto));
            let mut source = std::iter::from_fn(|| loop {
                if let Some(p) = take(records.next()?, &mut keys) {
                    return Some(p);
                }
            });
            self.commit_chunks(active, limits, upto, mark, &mut source)
        };
        if threads < 2 || upto < limits.parallel_backlog {
            return one_thread(active);
        }
        // Parts of the records (between the marks of an earlier walk, each
        // read by its worker; else runs of `span` of one walk the workers
        // take turns on), decoded, read and mapped in parallel.
        let span = capacity(part_span(upto, threads));
        let parts = self
            .replica
            .record_parts((start, Bound::Unbounded), false, span)?;
        let threaded = self.in_threads(
            parts,
            upto,
            limits,
            used,
            |keys, part: RecordPart| {
                part.records(&self.replica)
                    .filter_map(|record| take(record, keys))
                    .collect()
            },
            |source| self.commit_chunks(active, limits, upto, mark, source),
        );
        match threaded {
            Some(outcome) => outcome,
            None => one_thread(active),
        }
    }

    /// Runs `prepare` over `parts` (of a backlog of about `backlog`
    /// changes) on up to `limits.threads` worker threads, each with its own
    /// key cache, and `commit` over the prepared changes, in part order, on
    /// this thread. `None` when not one thread could start.
    fn in_threads<P: Send>(
        &self,
        parts: impl Iterator<Item = P> + Send + 'static,
        backlog: u64,
        limits: ChunkLimits,
        used: &mut usize,
        prepare: impl Fn(&mut KeyCache, P) -> Result<Vec<Pending>, ViewError> + Sync,
        commit: impl FnOnce(
            &mut dyn Iterator<Item = Result<Pending, ViewError>>,
        ) -> Result<u64, ViewError>,
    ) -> Option<Result<u64, ViewError>> {
        let threads = limits.threads;
        // Rows (and documents) prepared ahead of the chunk being committed:
        // about four chunks' worth, whatever the documents emit.
        let ordered: parallel::Ordered<P, Result<Vec<Pending>, ViewError>> =
            parallel::Ordered::from_source(parts, threads, limits.rows.saturating_mul(4));
        let keys = capacity(backlog / threads as u64);
        let weigh = |out: &Result<Vec<Pending>, ViewError>| {
            out.as_ref()
                .map_or(0, |part| part.iter().map(|p| p.rows + 1).sum())
        };
        let consume = || {
            let mut part = Vec::new().into_iter();
            let mut source = std::iter::from_fn(|| loop {
                if let Some(p) = part.next() {
                    return Some(Ok(p));
                }
                match ordered.next_part()? {
                    Ok(next) => part = next.into_iter(),
                    Err(e) => return Some(Err(e)),
                }
            });
            commit(&mut source)
        };
        let state = || KeyCache::with_capacity(keys);
        let (outcome, started) =
            ordered.run("settee-views", threads, state, prepare, weigh, consume)?;
        *used = started;
        Some(outcome)
    }

    /// Takes prepared changes from `source` into chunks and commits each.
    fn commit_chunks(
        &self,
        active: &mut [Active<'_>],
        limits: ChunkLimits,
        durable: u64,
        mark: Mark,
        source: &mut dyn Iterator<Item = Result<Pending, ViewError>>,
    ) -> Result<u64, ViewError> {
        let mut chunks = 0;
        let mut done = false;
        // The views whose blocks the chunks rewrite.
        let taking = |a: &&Active<'_>| match mark {
            Mark::Seq => a.state.seq < durable,
            Mark::Scan { .. } => a.cold(),
        };
        while !done {
            let mut chunk = Vec::new();
            let mut emitted = 0;
            let cold = active.iter().filter(taking).all(|a| a.state.rows == 0);
            // Half the rows already indexed: the blocks a chunk rewrites
            // then cost at most about twice the rows it adds.
            let indexed: u64 = active.iter().filter(taking).map(|a| a.state.rows).sum();
            let grown = usize::try_from(indexed / 2)
                .unwrap_or(usize::MAX)
                .min(limits.cold_rows);
            let (max_docs, max_rows) = if cold {
                (limits.cold_docs, limits.cold_rows)
            } else if limits.grow && grown > limits.rows {
                (grown, grown)
            } else {
                (limits.docs, limits.rows)
            };
            while chunk.len() < max_docs && emitted < max_rows {
                let Some(pending) = source.next() else {
                    done = true;
                    break;
                };
                let pending = pending?;
                emitted += pending.rows;
                chunk.push(pending);
            }
            if chunk.is_empty() {
                break;
            }
            self.commit_chunk(active, &mut chunk, limits, mark)?;
            chunks += 1;
        }
        Ok(chunks)
    }

    /// The view's state, after dropping its rows if they were built by
    /// another definition version (or by nothing this build recorded).
    fn prepare(&self, view: &View) -> Result<(ViewState, bool, Option<IdScan>), ViewError> {
        let found = self.stored_state(view.name())?;
        if let Some(s) = found.as_ref() {
            if s.version == view.version() && s.layout == LAYOUT {
                let state = ViewState {
                    version: s.version,
                    seq: s.seq,
                    rows: s.rows,
                };
                return Ok((state, false, s.scan.clone()));
            }
        }
        // Clear first, record the new version last: a crash in between
        // leaves the old version recorded, so the next update clears again.
        self.clear_rows(view.name())?;
        let state = ViewState {
            version: view.version(),
            seq: 0,
            rows: 0,
        };
        self.tree
            .insert(state_key(view.name()), encode_state(&state))?;
        if found.is_some() {
            tracing::info!(view = view.name(), "view definition changed; rebuilding");
        }
        Ok((state, found.is_some(), None))
    }

    /// Writes one chunk, one atomic batch per view: the blocks of rows and
    /// back-index entries the chunk touches (rewritten with the removal of
    /// the rows each document's back-index entry lists, its new rows and its
    /// new back-index entry) and the view's new state. Views are prepared
    /// and written on up to `threads` threads, each on its own: a view's
    /// rows and state never depend on another view's. Only this indexer
    /// writes the tree (the writer lock), so reading blocks before the
    /// batch is safe.
    fn commit_chunk(
        &self,
        active: &mut [Active<'_>],
        chunk: &mut [Pending],
        limits: ChunkLimits,
        mark: Mark,
    ) -> Result<(), ViewError> {
        let scan = match (mark, chunk.last()) {
            (Mark::Scan { upto }, Some(last)) => Some(IdScan {
                after: last.id.clone(),
                upto,
            }),
            _ => None,
        };
        let mut taken: Vec<Vec<Taken<'_>>> = active.iter().map(|_| Vec::new()).collect();
        for p in chunk.iter_mut() {
            let Pending {
                seq, id, per_view, ..
            } = p;
            let id: &str = id;
            for (vi, rows) in per_view.iter_mut().enumerate() {
                if let Some(rows) = rows.take() {
                    taken[vi].push((*seq, id, rows));
                }
            }
        }
        let edited: usize = taken
            .iter()
            .flatten()
            .map(|(_, _, rows)| rows.len() + 1)
            .sum();
        let threads = if edited >= limits.parallel_edits {
            limits.threads
        } else {
            1
        };
        let jobs: Vec<(&Active<'_>, Vec<Taken<'_>>)> = active.iter().zip(taken).collect();
        let outcomes = parallel::map_in_threads(jobs, threads, |(a, taken)| {
            if taken.is_empty() {
                return Ok(None);
            }
            let (o, writes) = view_writes(&self.tree, a, taken)?;
            let mut batch = sled::Batch::default();
            writes.add_to(&mut batch);
            let s = ViewState {
                version: a.state.version,
                // A build in id order covers no sequence until it ends.
                seq: if scan.is_some() { a.state.seq } else { o.seq },
                rows: (a.state.rows + o.written).saturating_sub(o.removed),
            };
            batch.insert(
                state_key(a.view.name()),
                encode_state_with(&s, scan.as_ref()),
            );
            self.tree.apply_batch(batch)?;
            Ok(Some((o, s)))
        });
        let mut failed = None;
        for (a, o) in active.iter_mut().zip(outcomes) {
            let (o, state) = match o {
                Ok(Some(done)) => done,
                Ok(None) => continue,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            a.state = state;
            a.scan.clone_from(&scan);
            a.report.docs_indexed += o.docs;
            a.report.rows_written += o.written;
            a.report.rows_removed += o.removed;
            a.report.seq = a.state.seq;
            a.report.total_rows = a.state.rows;
            tracing::debug!(
                view = a.view.name(),
                seq = o.seq,
                docs = o.docs,
                "view chunk committed"
            );
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Parts of about this many changes (or records) for `threads` workers:
/// sixteen parts per worker, within 256..=8192.
fn part_span(backlog: u64, threads: usize) -> u64 {
    (backlog / (threads as u64 * 16)).clamp(256, 8192)
}

/// A count of documents as a capacity.
fn capacity(docs: u64) -> usize {
    usize::try_from(docs).unwrap_or(usize::MAX)
}

/// A document's new rows for one view in a chunk: (sequence, id, rows).
type Taken<'a> = (u64, &'a str, Vec<EncodedRow>);

/// What a change holds for each view behind it (see [`Pending`]); `behind`
/// is each view with the sequence it had indexed when this update began.
fn prepare(
    change: RawDocumentChange,
    behind: &[(&View, u64)],
    keys: &mut KeyCache,
) -> Result<Pending, ViewError> {
    let live = !change.deleted;
    let design = change.id.starts_with("_design/");
    let raw = RawDocument::new(&change.id, &change.rev, &change.body)
        .with_conflicts(&change.conflicts, &change.deleted_conflicts);
    // Parsed once, and only if a view behind this change needs it.
    let parsed = if live
        && behind.iter().any(|(view, seq)| {
            *seq < change.seq && view.needs_parsed() && (!design || view.sees_design_docs())
        }) {
        Some(
            raw.to_document()
                .map_err(|e| StoreError::corrupt("revision body", change.id.as_bytes(), e))?,
        )
    } else {
        None
    };
    let mut emitted = 0;
    let per_view = behind
        .iter()
        .map(|(view, seq)| {
            if *seq >= change.seq {
                return Ok(None);
            }
            if !live || (design && !view.sees_design_docs()) {
                return Ok(Some(Vec::new()));
            }
            let mapped = view
                .map_parsed_or_raw(&raw, parsed.as_ref())
                .map_err(|failure| ViewError::MapFailed {
                    view: view.name().to_owned(),
                    id: raw.id.to_owned(),
                    error: failure.error,
                    reason: failure.reason,
                })?;
            let rows = encode_mapped(raw.id, &mapped, keys);
            emitted += rows.len();
            Ok(Some(rows))
        })
        .collect::<Result<_, ViewError>>()?;
    Ok(Pending {
        seq: change.seq,
        id: change.id,
        per_view,
        rows: emitted,
    })
}

/// One view's part of a chunk: the blocks of rows and back-index entries
/// its documents' new rows rewrite, and what that did.
fn view_writes(
    tree: &sled::Tree,
    a: &Active<'_>,
    taken: Vec<Taken<'_>>,
) -> Result<(Outcome, block::Writes), ViewError> {
    let mut o = Outcome {
        seq: a.state.seq,
        ..Outcome::default()
    };
    let mut writes = block::Writes::default();
    let mut ids: Vec<&[u8]> = taken.iter().map(|(_, id, _)| id.as_bytes()).collect();
    ids.sort_unstable();
    ids.dedup();
    let stored = block::lookup(tree, &a.back_prefix, &ids)?;
    // A document seen twice in one chunk (a change racing the read) lists,
    // the second time, the rows its first time wrote.
    let mut latest: HashMap<&str, usize, BuildFx> = HashMap::default();
    let mut row_edits: Vec<block::Edit<Arc<[u8]>>> =
        Vec::with_capacity(taken.iter().map(|(_, _, rows)| rows.len()).sum());
    let mut back_edits: Vec<block::Edit> = Vec::with_capacity(ids.len());
    for (seq, id, new_rows) in taken {
        o.docs += 1;
        o.seq = o.seq.max(seq);
        let listed_before: Option<&[u8]> = match latest.get(id) {
            Some(&at) => back_edits[at].1.as_deref(),
            None => ids
                .binary_search(&id.as_bytes())
                .ok()
                .and_then(|at| stored[at].as_deref()),
        };
        if let Some(listed) = listed_before {
            let suffixes = decode_back(listed).ok_or_else(|| ViewError::Corrupt {
                view: a.view.name().to_owned(),
                detail: format!("back-index entry of {id:?}"),
            })?;
            for k in suffixes {
                row_edits.push((k, None));
                o.removed += 1;
            }
        }
        let listed = encode_back(&new_rows);
        for (k, _, v) in new_rows {
            row_edits.push((k, Some(v)));
            o.written += 1;
        }
        latest.insert(id, back_edits.len());
        back_edits.push((id.as_bytes().to_vec(), listed));
    }
    let row_edits = block::normalize(row_edits);
    block::apply(tree, &a.prefix, &row_edits, &mut writes)?;
    block::apply(
        tree,
        &a.back_prefix,
        &block::normalize(back_edits),
        &mut writes,
    )?;
    Ok((o, writes))
}

#[derive(Default)]
struct Outcome {
    seq: u64,
    docs: u64,
    written: u64,
    removed: u64,
}

/// Encoded string keys seen in this warm-up: a card id is emitted by
/// several tag documents, and its ICU sort key is the costly part of its
/// encoding. Bounded; cleared when full.
pub(crate) struct KeyCache {
    strings: HashMap<String, Vec<u8>, BuildFx>,
}

impl KeyCache {
    const MAX: usize = 1 << 20;

    /// A cache sized for about `n` distinct strings (growing a large table
    /// rehashes it several times).
    pub(crate) fn with_capacity(n: usize) -> KeyCache {
        KeyCache {
            strings: HashMap::with_capacity_and_hasher(n.min(Self::MAX), BuildFx::default()),
        }
    }

    fn encode(&mut self, key: &Value, out: &mut Vec<u8>) {
        match key {
            Value::String(s) => self.encode_str(s, out),
            _ => encode_key(key, out),
        }
    }

    /// As `encode_str`; a card's id is also the key tag rows emit for it.
    fn encode_str(&mut self, s: &str, out: &mut Vec<u8>) {
        if let Some(bytes) = self.strings.get(s) {
            out.extend_from_slice(bytes);
            return;
        }
        let start = out.len();
        encode_str(s, out);
        if self.strings.len() >= Self::MAX {
            self.strings.clear();
        }
        self.strings.insert(s.to_owned(), out[start..].to_vec());
    }
}

/// The rows a document gives in one view: (key suffix after the view
/// prefix, stored value). The suffix is the encoded key, the encoded doc
/// id (CouchDB breaks ties by id) and the emit index (a document may emit
/// the same key twice); the stored value is the row's key and value (see
/// [`row_value`]). A value emitted for many keys (a tag's) is serialized
/// once, and its stored bytes are shared within a block (`block.rs`).
#[cfg(test)]
pub(crate) fn encode_rows(
    view: &View,
    doc: Option<&crate::store::Document>,
    cache: &mut KeyCache,
) -> Vec<EncodedRow> {
    let Some(doc) = doc else {
        return Vec::new();
    };
    encode_mapped(&doc.id, &view.map_shared(doc), cache)
}

/// [`encode_rows`] of the rows a map function emitted for document `doc_id`.
pub(crate) fn encode_mapped(
    doc_id: &str,
    rows: &[(Value, Arc<Value>)],
    cache: &mut KeyCache,
) -> Vec<EncodedRow> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut id = Vec::with_capacity(3 * doc_id.len() + 8);
    cache.encode_str(doc_id, &mut id);
    let mut out = Vec::with_capacity(rows.len());
    let mut last: Option<LastValue<'_>> = None;
    let mut scratch = Vec::new();
    for (i, (key, value)) in rows.iter().enumerate() {
        let mut k = Vec::with_capacity(32 + id.len());
        cache.encode(key, &mut k);
        let key_len = k.len();
        k.extend_from_slice(&id);
        k.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
        let same = matches!(&last, Some((shared, ..)) if Arc::ptr_eq(shared, value));
        if !same {
            // Serializing a Value cannot fail (its map keys are strings).
            last = Some((
                value,
                serde_json::to_vec(&**value).unwrap_or_default(),
                None,
            ));
        }
        let Some((_, value_json, for_string)) = &mut last else {
            continue;
        };
        let stored = match key {
            Value::String(_) => Arc::clone(
                for_string.get_or_insert_with(|| row_value(key, value_json, &mut scratch)),
            ),
            _ => row_value(key, value_json, &mut scratch),
        };
        out.push((k, key_len, stored));
    }
    out
}

/// The last value `encode_mapped` serialized, its JSON, and its stored
/// form for a string key (which does not depend on the key: see
/// `row_value`), shared by the rows that emit it.
type LastValue<'a> = (&'a Arc<Value>, Vec<u8>, Option<Arc<[u8]>>);

/// A row's stored value. The doc id is not stored (the key suffix holds it
/// as an encoded string, which keeps its UTF-8 bytes), nor a string key
/// (likewise); any other key is kept as JSON, since its encoding is not
/// reversible (`1` and `1.0` encode alike). Layout: `0` then the value's
/// JSON for a string key; `1`, the key's JSON length (`u32` BE), the key's
/// JSON and the value's JSON otherwise.
fn row_value(key: &Value, value_json: &[u8], scratch: &mut Vec<u8>) -> Arc<[u8]> {
    scratch.clear();
    match key {
        Value::String(_) => scratch.push(STRING_KEY),
        _ => {
            scratch.push(JSON_KEY);
            scratch.extend_from_slice(&[0; 4]);
            let _ = serde_json::to_writer(&mut *scratch, key);
            let len = u32::try_from(scratch.len() - 5).unwrap_or(u32::MAX);
            scratch[1..5].copy_from_slice(&len.to_be_bytes());
        }
    }
    scratch.extend_from_slice(value_json);
    // One allocation of the exact size; the scratch buffer is reused.
    Arc::from(&scratch[..])
}

const STRING_KEY: u8 = 0;
const JSON_KEY: u8 = 1;

/// A stored row, for reading.
pub(crate) struct RowData {
    pub(crate) id: String,
    pub(crate) key: Value,
    pub(crate) value: Value,
}

/// Decodes a row from its key suffix and stored value (see [`row_value`]);
/// `None` when either is damaged.
pub(crate) fn decode_row(suffix: &[u8], stored: &[u8]) -> Option<RowData> {
    let key_len = encoded_len(suffix)?;
    let (id, id_len) = decode_str(suffix.get(key_len..)?)?;
    if key_len + id_len + 4 != suffix.len() {
        return None;
    }
    let (key, value_json) = match stored.split_first()? {
        (&STRING_KEY, rest) => (Value::String(decode_str(suffix)?.0), rest),
        (&JSON_KEY, rest) => {
            let (len, rest) = rest.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            let (key, value) = (rest.get(..len)?, rest.get(len..)?);
            (serde_json::from_slice(key).ok()?, value)
        }
        _ => return None,
    };
    Some(RowData {
        id,
        key,
        value: serde_json::from_slice(value_json).ok()?,
    })
}

pub(crate) fn encode_state(state: &ViewState) -> Vec<u8> {
    encode_state_with(state, None)
}

/// A view's state with where its build in id order stands, if under way.
fn encode_state_with(state: &ViewState, scan: Option<&IdScan>) -> Vec<u8> {
    let stored = StoredState {
        version: state.version,
        seq: state.seq,
        rows: state.rows,
        layout: LAYOUT,
        scan: scan.cloned(),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// Back-index value of a document's rows (`None` when it has none): its
/// encoded id, then each row's encoded key, each as a `u32` BE length and
/// the bytes. Row `i`'s key suffix is its key, the id and `i`; storing the
/// id once keeps a tag's entry (thousands of rows) about half as big.
fn encode_back(rows: &[EncodedRow]) -> Option<Vec<u8>> {
    let (first, key_len, _) = rows.first()?;
    let id = first.get(*key_len..first.len().saturating_sub(4))?;
    let mut out =
        Vec::with_capacity(4 + id.len() + rows.iter().map(|(_, n, _)| 4 + n).sum::<usize>());
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len32(id.len()));
    out.extend_from_slice(id);
    for (k, n, _) in rows {
        out.extend_from_slice(&len32(*n));
        out.extend_from_slice(&k[..*n]);
    }
    Some(out)
}

/// The key suffixes a back-index value lists (see [`encode_back`]).
pub(crate) fn decode_back(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (k, rest) = rest.split_at(len);
        fields.push(k);
        bytes = rest;
    }
    let (id, keys) = fields.split_first()?;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let mut suffix = Vec::with_capacity(k.len() + id.len() + 4);
            suffix.extend_from_slice(k);
            suffix.extend_from_slice(id);
            suffix.extend_from_slice(&u32::try_from(i).ok()?.to_be_bytes());
            Some(suffix)
        })
        .collect()
}
