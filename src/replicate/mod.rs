//! The one-shot pull: remote → replica, in checkpointed batches.
//!
//! ```text
//!  _changes pages ──► fetch task per page (diff, _bulk_get, attachments) ──► commit in order
//!  (one page ahead)    (up to batches_limit at once, each holding a permit)    (one transaction
//!                                                                               per batch + checkpoint)
//! ```
//!
//! A producer task walks the changes feed and spawns one fetch task per
//! page; each holds a semaphore permit until its batch is committed, so at
//! most `batches_limit` batches are in memory and in flight. The consumer
//! commits batches strictly in feed order, each with the checkpoint of its
//! page's `last_seq`.
//!
//! Stopping: [`Pull::until`] takes a shutdown future. When it completes the
//! pull stops at the next batch boundary (never inside a commit), aborts
//! the producer and the fetches, waits until none of their blocking tasks
//! still holds the replica, and returns what it committed with
//! `interrupted` set. Dropping the pull future instead also keeps every
//! committed batch, but blocking tasks may outlive it for a moment.
//! Pulls on one replica take its pull lock, so they run one at a time.

mod attachment;
mod batch;
mod checkpoint;
mod doc;
// Revisions a client pushes into `settee serve`: only `serve` takes them.
#[cfg(feature = "serve")]
mod pushed;
#[cfg(feature = "serve")]
pub(crate) use pushed::pushed_revision;
mod retry_mode;

use checkpoint::filtered_replication_id;
pub(crate) use checkpoint::now_ms;
pub use checkpoint::{replication_id, Checkpoint};
mod config;
pub use config::{Feed, PullConfigBuilder, PullMode};
mod filter;
pub use filter::{Filter, Revisions, Tombstones};
mod status;
pub use retry_mode::{PullState, RetryMode};
pub use status::{checkpoint, last_pull, status, ReplicaStatus};

use crate::remote::{ChangesPage, FeedQuery, Live, Remote, Seq, ServerInfo};
use crate::store::{CheckpointRecord, RemoteBinding, Replica};
use crate::{millis, Error, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// Settings of a pull, with the names the reference clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullConfig {
    /// Change rows per batch: one `_changes` page and one `_bulk_get`.
    pub batch_size: usize,
    /// Batches fetched at once (and so held in memory at most).
    pub batches_limit: usize,
    /// The largest document body the pull stores, in bytes of JSON text
    /// (`None`: no limit). A larger revision fails alone (`too_large`) and
    /// stays on the retry list, so a later pull with a higher limit takes it.
    pub max_doc_bytes: Option<usize>,
    /// The retry mode (PouchDB's `retry: true`; `None`, the default: a
    /// pull fails once a request's retries run out). See [`RetryMode`].
    pub retry_mode: Option<RetryMode>,
    /// How the changes feed is read: one streamed request (the default)
    /// or pages. See [`Feed`].
    pub feed: Feed,
    /// One pass to the feed's end (the default), or live: on after it,
    /// taking changes as they happen until stopped. See [`PullMode`].
    pub mode: PullMode,
    /// Which documents: all (the default), or as the server's filter
    /// passes them. See [`Filter`].
    pub filter: Filter,
    /// Which revisions of each: every leaf (the default) or the winner.
    pub revisions: Revisions,
    /// Whether deletions of documents the replica never held are taken.
    pub tombstones: Tombstones,
}

impl Default for PullConfig {
    /// The seed application's defaults: PouchDB's 100/10 are tuned for live
    /// sync; a one-shot cold load is faster with fewer, bigger requests.
    fn default() -> Self {
        PullConfig {
            batch_size: 1000,
            batches_limit: 5,
            max_doc_bytes: None,
            retry_mode: None,
            feed: Feed::Streamed,
            mode: PullMode::OneShot,
            filter: Filter::All,
            revisions: Revisions::All,
            tombstones: Tombstones::Pull,
        }
    }
}

impl PullConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(Error::InvalidSetting {
                setting: "batch_size",
                value: self.batch_size.to_string(),
                expected: "between 1 and 100000",
            });
        }
        if self.batches_limit == 0 || self.batches_limit > 64 {
            return Err(Error::InvalidSetting {
                setting: "batches_limit",
                value: self.batches_limit.to_string(),
                expected: "between 1 and 64",
            });
        }
        self.mode.validate()?;
        self.filter.validate()
    }
}

/// A revision the pull could not store, with the server's reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DocFailure {
    /// The document id.
    pub id: String,
    /// The revision, when known.
    pub rev: Option<String>,
    /// CouchDB's `error`, or settee's (`attachment_error`, `bad_document`,
    /// `not_answered`: the server's `_bulk_get` answer left it out).
    pub error: String,
    /// The reason.
    pub reason: String,
}

impl DocFailure {
    pub(crate) fn new(id: &str, rev: Option<String>, error: &str, reason: &str) -> Self {
        DocFailure {
            id: id.to_owned(),
            rev,
            error: error.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// How far a running pull got; handed to the progress callback after every
/// committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PullProgress {
    /// Batches committed so far.
    pub batches: u64,
    /// Change rows processed.
    pub changes_read: u64,
    /// Revisions received from the remote.
    pub docs_read: u64,
    /// Revisions new to the replica, written.
    pub docs_written: u64,
    /// Revisions that could not be stored.
    pub doc_write_failures: u64,
    /// The checkpoint just committed.
    pub last_seq: Seq,
    /// The remote's `doc_count` when the pull started (for progress bars).
    pub remote_doc_count: u64,
    /// Time since the pull started (`elapsed_ms` in JSON).
    #[serde(rename = "elapsed_ms", with = "crate::millis")]
    pub elapsed: Duration,
    /// Moving, or (in retry mode) waiting to start over; flattened into
    /// the JSON as `"state": "active"` or `"state": "paused"`.
    #[serde(flatten)]
    pub state: PullState,
}

/// Where a pull's time went, in wall time (milliseconds in JSON, as
/// `connect_ms`, `fetch_wait_ms`, `commit_ms`, `total_ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullTimings {
    /// Connecting and reading server and database info.
    #[serde(rename = "connect_ms", with = "crate::millis")]
    pub connect: Duration,
    /// Waiting for fetched batches (beyond what overlapped with commits).
    #[serde(rename = "fetch_wait_ms", with = "crate::millis")]
    pub fetch_wait: Duration,
    /// Committing batches to the replica (transaction + flush).
    #[serde(rename = "commit_ms", with = "crate::millis")]
    pub commit: Duration,
    /// The whole pull.
    #[serde(rename = "total_ms", with = "crate::millis")]
    pub total: Duration,
}

/// What a finished pull did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullResult {
    /// The checkpoint key of this replica/remote pair.
    pub replication_id: String,
    /// The remote sequence the pull started after (the old checkpoint).
    pub start_seq: Seq,
    /// The remote sequence now covered.
    pub last_seq: Seq,
    /// Batches committed.
    pub batches: u64,
    /// Change rows processed.
    pub changes_read: u64,
    /// Revisions received.
    pub docs_read: u64,
    /// Revisions new to the replica.
    pub docs_written: u64,
    /// Revisions that could not be stored (see `failures`).
    pub doc_write_failures: u64,
    /// The first failures (at most 100 are kept).
    pub failures: Vec<DocFailure>,
    /// Attachments whose bytes were downloaded.
    pub attachments_fetched: u64,
    /// The remote's `doc_count` at the start.
    pub remote_doc_count: u64,
    /// When the pull started, Unix milliseconds.
    pub started_at_ms: u64,
    /// Where the time went.
    pub timings: PullTimings,
    /// The pull was stopped by its shutdown future before the feed's end
    /// (a live pull always is).
    #[serde(default)]
    pub interrupted: bool,
    /// The pull's filter and revision settings, when it was filtered
    /// (`settee status` says so): see [`Filter`] and [`Revisions`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<String>,
}

const MAX_FAILURES_KEPT: usize = 100;

/// What every fetch task needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct PullContext {
    pub(crate) replica: Replica,
    pub(crate) remote: Remote,
    pub(crate) tombstones: Tombstones,
}

/// Aborts a task when dropped, so a cancelled pull leaves nothing running.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type FetchTask = AbortOnDrop<Result<(batch::FetchedBatch, BatchPermits)>>;

/// What a batch holds from before its page is read until it is committed:
/// its place among `batches_limit`, and its share of the budget for
/// documents carried by the feed.
struct BatchPermits {
    _batch: tokio::sync::OwnedSemaphorePermit,
    _carried: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// KiB of documents carried by the feed (a cold load's first revisions)
/// that the batches in flight may hold together. A streamed feed delivers
/// pages as fast as they are taken, so without it every one of
/// `batches_limit` batches would hold a page of documents and their
/// copies as revisions (100k cards at 1000/5: 76 MiB peak RSS against 61
/// paged); with it, pages that carry documents go through one at a time (a
/// cold load's batches are mostly that, and are bound by their commits),
/// and batches that fetch with `_bulk_get` still overlap. The reader takes
/// the next page's share, estimated from the page before, before it reads
/// the page, so it holds no page of documents while it waits.
const CARRIED_BUDGET_KIB: u32 = 1024;

/// The KiB of documents `page` carries, at most the whole budget.
fn carried_kib(page: &ChangesPage) -> u32 {
    let bytes: usize = page
        .results
        .iter()
        .filter_map(|r| r.doc.as_ref())
        .map(|d| d.get().len())
        .sum();
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .min(CARRIED_BUDGET_KIB)
}

/// Pulls everything the remote has that the replica lacks: the one entry
/// point of a pull. Await it as it is, or first add options:
/// [`Pull::on_progress`] (called after every committed batch) and
/// [`Pull::until`] (a stop signal: the pull ends at the next batch
/// boundary with [`PullResult::interrupted`] set).
///
/// Resumes from the replica's checkpoint for this remote. Returns when the
/// changes feed is exhausted (or, in retry mode, when the pull completes
/// or its attempts run out). When it returns, either way, no task of the
/// pull runs any more and none holds a clone of the replica, so the
/// replica can be closed and reopened at once.
///
/// # Durability
/// Each batch and its checkpoint are one atomic, flushed commit. If the
/// pull fails, is stopped or its future is dropped, the batches committed
/// so far stay and the next pull resumes after the last of them.
///
/// # Errors
/// Before any batch: [`Error::InvalidSetting`] for a config out of range;
/// [`Error::Remote`] for a bad URL, refused connection, 401/403/404, a
/// server that is not CouchDB or an invalid answer (the replica is left as
/// it was); [`Error::WrongRemote`] if the replica mirrors another database.
/// During the pull: the first remote or store error that retries could not
/// overcome. Per-document problems are not errors: they are counted in
/// [`PullResult::doc_write_failures`].
///
/// ```no_run
/// # async fn demo(replica: settee::Replica, remote: settee::Remote) -> settee::Result<()> {
/// use settee::{pull, PullConfig};
///
/// let config = PullConfig::default();
/// let result = pull(&replica, &remote, &config).await?;
///
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// let result = pull(&replica, &remote, &config)
///     .on_progress(|p| println!("{} documents", p.docs_written))
///     .until(stop)
///     .await?;
/// if result.interrupted {
///     println!("stopped at {}; run again to resume", result.last_seq);
/// }
/// # Ok(()) }
/// ```
pub fn pull<'a>(replica: &'a Replica, remote: &'a Remote, config: &'a PullConfig) -> Pull<'a> {
    Pull {
        replica,
        remote,
        nodes: &[],
        config,
        on_progress: no_progress,
        shutdown: std::future::pending(),
    }
}

/// A pull with its options; from [`pull`]. Await it to run it.
#[must_use = "a pull does nothing until it is awaited"]
pub struct Pull<'a, P = fn(&PullProgress), S = std::future::Pending<()>> {
    replica: &'a Replica,
    remote: &'a Remote,
    /// Other nodes of the remote's cluster (see [`Pull::failover`]).
    nodes: &'a [Remote],
    config: &'a PullConfig,
    on_progress: P,
    shutdown: S,
}

impl<P, S> std::fmt::Debug for Pull<'_, P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pull")
            .field("replica", &self.replica)
            .field("remote", &self.remote.endpoint().to_string())
            .field("config", self.config)
            .finish_non_exhaustive()
    }
}

fn no_progress(_: &PullProgress) {}

impl<'a, P, S> Pull<'a, P, S> {
    /// Calls `on_progress` after every committed batch (and, in retry mode,
    /// on each pause and resumption).
    pub fn on_progress<Q: FnMut(&PullProgress) + Send>(self, on_progress: Q) -> Pull<'a, Q, S> {
        Pull {
            replica: self.replica,
            remote: self.remote,
            nodes: self.nodes,
            config: self.config,
            on_progress,
            shutdown: self.shutdown,
        }
    }

    /// Stops the pull when `shutdown` completes (Ctrl-C, an app going to
    /// the background): at the next batch boundary, with
    /// [`PullResult::interrupted`] set; every batch committed before is
    /// durable with its checkpoint.
    pub fn until<T: std::future::Future<Output = ()> + Send>(self, shutdown: T) -> Pull<'a, P, T> {
        Pull {
            replica: self.replica,
            remote: self.remote,
            nodes: self.nodes,
            config: self.config,
            on_progress: self.on_progress,
            shutdown,
        }
    }
}

impl<'a, P, S> Pull<'a, P, S> {
    /// Other nodes of the remote's cluster (URLs of the same database on
    /// servers with the same `uuid`), tried in order when the one in use
    /// fails in a way retries did not overcome (refused or cut
    /// connections, timeouts, 5xx): the pull moves to the next and resumes
    /// from the replica's checkpoint, which all nodes share. In retry mode
    /// each new attempt goes to the next node, round the list. A node of
    /// another server (another `uuid`) is refused as
    /// [`Error::WrongRemote`], as it would be alone.
    ///
    /// ```no_run
    /// # async fn demo(replica: settee::Replica) -> settee::Result<()> {
    /// use settee::{pull, Endpoint, PullConfig, Remote, RemoteConfig};
    ///
    /// let node = |url| Remote::new(Endpoint::parse(url)?, RemoteConfig::default());
    /// let a = node("http://couch-a:5984/course")?;
    /// let others = [node("http://couch-b:5984/course")?, node("http://couch-c:5984/course")?];
    /// pull(&replica, &a, &PullConfig::default()).failover(&others).await?;
    /// # Ok(()) }
    /// ```
    pub fn failover(self, nodes: &'a [Remote]) -> Self {
        Pull { nodes, ..self }
    }
}

impl<'a, P, S> std::future::IntoFuture for Pull<'a, P, S>
where
    P: FnMut(&PullProgress) + Send + 'a,
    S: std::future::Future<Output = ()> + Send + 'a,
{
    type Output = Result<PullResult>;
    type IntoFuture = futures::future::BoxFuture<'a, Result<PullResult>>;

    fn into_future(self) -> Self::IntoFuture {
        let nodes = std::iter::once(self.remote).chain(self.nodes).collect();
        Box::pin(run_pull(
            self.replica,
            Nodes { all: nodes, at: 0 },
            self.config,
            self.on_progress,
            self.shutdown,
        ))
    }
}

/// The nodes a pull may use, the one in use first.
struct Nodes<'a> {
    all: Vec<&'a Remote>,
    at: usize,
}

impl<'a> Nodes<'a> {
    fn current(&self) -> &'a Remote {
        self.all[self.at % self.all.len()]
    }

    /// Moves to the next node after `error`; false when there is none
    /// left to try (or `error` says nothing against the node).
    fn next_after(&mut self, error: &Error, round: bool) -> bool {
        if self.all.len() < 2 || !retry_mode::worth_retrying(error) {
            return false;
        }
        if !round && self.at + 1 >= self.all.len() {
            return false;
        }
        let failed = self.current().endpoint().to_string();
        self.at = (self.at + 1) % self.all.len();
        tracing::warn!(%error, %failed, next = %self.current().endpoint(),
            "the node failed; the pull moves to the next node and resumes from the checkpoint");
        true
    }
}

async fn run_pull(
    replica: &Replica,
    mut nodes: Nodes<'_>,
    config: &PullConfig,
    mut on_progress: impl FnMut(&PullProgress) + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<PullResult> {
    config.validate()?;
    let _guard = replica
        .lock_pull(&nodes.current().endpoint().to_string())
        .await;
    let mut stop = Stop {
        signal: Box::pin(shutdown),
        seen: false,
    };
    let result = loop {
        let result = match &config.retry_mode {
            None => {
                run(
                    replica,
                    nodes.current(),
                    config,
                    &mut on_progress,
                    &mut stop,
                )
                .await
            }
            Some(mode) => {
                run_retrying(
                    replica,
                    &mut nodes,
                    config,
                    mode,
                    &mut on_progress,
                    &mut stop,
                )
                .await
            }
        };
        match result {
            // Retry mode moves between nodes by itself, attempt by attempt.
            Err(e)
                if config.retry_mode.is_none()
                    && !stop.requested()
                    && nodes.next_after(&e, false) =>
            {
                // Aborted fetch tasks may have left a blocking diff running.
                replica.blocking_idle().await;
            }
            result => break result,
        }
    };
    replica.blocking_idle().await;
    result
}

/// [`run`] again and again in retry mode (see `retry_mode.rs`): after a
/// failure worth retrying, a paused event, a pause cut short by shutdown,
/// an active event and a new attempt from the last checkpoint; after a
/// completed pass with per-document failures, up to `failure_passes` more.
/// Counters in events and in the result add up every attempt;
/// `start_seq` is the last attempt's.
async fn run_retrying<F: std::future::Future<Output = ()>>(
    replica: &Replica,
    nodes: &mut Nodes<'_>,
    config: &PullConfig,
    mode: &RetryMode,
    on_progress: impl FnMut(&PullProgress) + Send,
    stop: &mut Stop<F>,
) -> Result<PullResult> {
    let mut attempts = Attempts {
        started: Instant::now(),
        base: Carried::default(),
        last: None,
        failed: 0,
        passes: 0,
        on_progress,
    };
    loop {
        match attempts
            .run_once(replica, nodes.current(), config, stop)
            .await
        {
            Ok(r) => {
                if let Some(r) = attempts.completed(r, mode) {
                    return Ok(r);
                }
            }
            Err(error) => {
                let moved = nodes.next_after(&error, true);
                attempts.pause_or_fail(error, mode, stop).await?;
                if moved {
                    replica.blocking_idle().await;
                }
            }
        }
    }
}

/// The attempts of a pull in retry mode, and what they add up to.
struct Attempts<P> {
    started: Instant,
    /// Counters of the attempts before the current one.
    base: Carried,
    /// The last progress event reported, counters added up.
    last: Option<PullProgress>,
    /// Attempts that failed.
    failed: u32,
    /// Passes made again for per-document failures.
    passes: u32,
    on_progress: P,
}

impl<P: FnMut(&PullProgress) + Send> Attempts<P> {
    /// One [`run`], its progress events counting the earlier attempts too.
    async fn run_once<F: std::future::Future<Output = ()>>(
        &mut self,
        replica: &Replica,
        remote: &Remote,
        config: &PullConfig,
        stop: &mut Stop<F>,
    ) -> Result<PullResult> {
        let started = self.started;
        let base = &self.base;
        let last = &mut self.last;
        let on_progress = &mut self.on_progress;
        run(
            replica,
            remote,
            config,
            move |p: &PullProgress| {
                let mut p = p.clone();
                base.add_to(&mut p);
                p.elapsed = started.elapsed();
                on_progress(&p);
                *last = Some(p);
            },
            stop,
        )
        .await
    }

    /// The result of a completed attempt, counters added up; `None` when
    /// its per-document failures are worth another pass.
    fn completed(&mut self, mut r: PullResult, mode: &RetryMode) -> Option<PullResult> {
        self.base.add_to_result(&mut r);
        if r.interrupted || r.doc_write_failures == 0 || self.passes >= mode.failure_passes {
            return Some(r);
        }
        self.passes += 1;
        tracing::warn!(
            failures = r.doc_write_failures,
            pass = self.passes,
            "pull completed with per-document failures; retry mode fetches them again"
        );
        self.base = Carried::from_result(&r);
        None
    }

    /// After a failed attempt: a paused event, the pause, an active event;
    /// `Err(error)` instead when the failure is not worth retrying, the
    /// attempts ran out or shutdown was asked for.
    async fn pause_or_fail<F: std::future::Future<Output = ()>>(
        &mut self,
        error: Error,
        mode: &RetryMode,
        stop: &mut Stop<F>,
    ) -> Result<()> {
        if !retry_mode::worth_retrying(&error) || !mode.allows(self.failed + 1) || stop.requested()
        {
            return Err(error);
        }
        self.failed += 1;
        if let Some(p) = &self.last {
            self.base = Carried::from_progress(p);
        }
        let pause = mode.pause(self.failed);
        tracing::warn!(%error, attempt = self.failed, ?pause,
            "pull failed; retry mode starts over from the last checkpoint after a pause");
        let mut event = self.last.clone().unwrap_or_else(|| PullProgress {
            batches: 0,
            changes_read: 0,
            docs_read: 0,
            docs_written: 0,
            doc_write_failures: 0,
            last_seq: Seq::zero(),
            remote_doc_count: 0,
            elapsed: Duration::ZERO,
            state: PullState::Active,
        });
        event.elapsed = self.started.elapsed();
        event.state = PullState::Paused {
            error: error.to_string(),
            attempt: self.failed,
            retry_in: pause,
        };
        (self.on_progress)(&event);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.wait() => return Err(error),
        }
        event.state = PullState::Active;
        event.elapsed = self.started.elapsed();
        (self.on_progress)(&event);
        Ok(())
    }
}

/// Counters of earlier attempts, added to a later attempt's.
#[derive(Default)]
struct Carried {
    batches: u64,
    changes_read: u64,
    docs_read: u64,
    docs_written: u64,
}

impl Carried {
    fn from_progress(p: &PullProgress) -> Self {
        Carried {
            batches: p.batches,
            changes_read: p.changes_read,
            docs_read: p.docs_read,
            docs_written: p.docs_written,
        }
    }

    fn from_result(r: &PullResult) -> Self {
        Carried {
            batches: r.batches,
            changes_read: r.changes_read,
            docs_read: r.docs_read,
            docs_written: r.docs_written,
        }
    }

    fn add_to(&self, p: &mut PullProgress) {
        p.batches += self.batches;
        p.changes_read += self.changes_read;
        p.docs_read += self.docs_read;
        p.docs_written += self.docs_written;
    }

    fn add_to_result(&self, r: &mut PullResult) {
        r.batches += self.batches;
        r.changes_read += self.changes_read;
        r.docs_read += self.docs_read;
        r.docs_written += self.docs_written;
    }
}

/// The shutdown future and whether it has completed (a completed future
/// must not be polled again).
struct Stop<F> {
    signal: std::pin::Pin<Box<F>>,
    seen: bool,
}

impl<F: std::future::Future<Output = ()>> Stop<F> {
    /// True once shutdown was asked for; never waits.
    fn requested(&mut self) -> bool {
        if !self.seen {
            self.seen = futures::FutureExt::now_or_never(self.signal.as_mut()).is_some();
        }
        self.seen
    }

    /// Completes when shutdown is asked for.
    async fn wait(&mut self) {
        if !self.seen {
            self.signal.as_mut().await;
            self.seen = true;
        }
    }
}

/// One attempt: binds (or verifies) the remote, fetches again what earlier
/// pulls could not store, then pipelines the feed (see the module doc)
/// until it ends or `stop` completes, and finishes with the sweep.
async fn run<F: std::future::Future<Output = ()>>(
    replica: &Replica,
    remote: &Remote,
    config: &PullConfig,
    mut on_progress: impl FnMut(&PullProgress) + Send,
    stop: &mut Stop<F>,
) -> Result<PullResult> {
    let mut pass = Pass::start(replica, remote, config).await?;
    pass.retry_failed_docs(stop).await?;
    if pass.result.interrupted {
        return Ok(pass.result);
    }
    let (mut rx, producer) = spawn_fetches(
        &pass.ctx,
        pass.result.start_seq.clone(),
        config,
        pass.query.clone(),
    );
    pass.commit_in_order(&mut rx, stop, &mut on_progress)
        .await?;
    drop(producer);
    if stop.requested() {
        // The tasks still queued are aborted as `rx` drops; `run_pull`
        // waits for their blocking work. The sweep is left to the next
        // pull, but for a live pull, for which a stop is the normal end.
        drop(rx);
        if config.mode != PullMode::OneShot {
            replica.blocking_idle().await;
            pass.result.interrupted = true;
            return pass.finish().await;
        }
        return Ok(pass.interrupted());
    }
    pass.finish().await
}

/// Checks that `replica` mirrors `remote`'s database, binding it on its
/// first pull.
async fn bind_remote(replica: &Replica, remote: &Remote, server: &ServerInfo) -> Result<()> {
    let endpoint = remote.endpoint();
    let binding = RemoteBinding::new(
        endpoint.to_string(),
        endpoint.db_name().to_owned(),
        server.uuid.clone(),
    );
    match replica.remote()? {
        Some(bound) if !same_remote(&bound, &binding) => Err(Error::WrongRemote {
            path: replica.path().display().to_string(),
            bound: bound.url,
            requested: binding.url,
        }),
        Some(_) => Ok(()),
        None => Ok(replica.set_remote(&binding).await?),
    }
}

/// The remote sequence to resume after: the checkpoint's, or the start.
fn start_seq(replica: &Replica, rep_id: &str) -> Seq {
    match checkpoint(replica, rep_id) {
        Ok(Some(cp)) => cp.last_seq,
        Ok(None) => Seq::zero(),
        Err(e) => {
            tracing::warn!(%e, "unreadable checkpoint; starting from the beginning");
            Seq::zero()
        }
    }
}

/// Spawns the producer: it walks the changes feed from `since` and spawns
/// one fetch task per page, each holding a batch permit, queued in feed
/// order. Dropping the returned task (or the receiver) aborts them.
fn spawn_fetches(
    ctx: &PullContext,
    since: Seq,
    config: &PullConfig,
    query: FeedQuery,
) -> (mpsc::Receiver<FetchTask>, AbortOnDrop<()>) {
    let (tx, rx) = mpsc::channel::<FetchTask>(config.batches_limit);
    let permits = Arc::new(Semaphore::new(config.batches_limit));
    let carried = Arc::new(Semaphore::new(CARRIED_BUDGET_KIB as usize));
    let live = match config.mode {
        PullMode::Live { heartbeat } => Some(Live { heartbeat }),
        PullMode::OneShot => None,
    };
    // A live pull always reads the streamed feed, which goes on after its end.
    let pages: futures::stream::BoxStream<'static, _> = match (live, config.feed) {
        (None, Feed::Paged) => Box::pin(ctx.remote.changes_pages(since, config.batch_size, query)),
        (live, _) => Box::pin(
            ctx.remote
                .changes_stream(since, config.batch_size, query, live),
        ),
    };
    let ctx = ctx.clone();
    let producer = AbortOnDrop(tokio::spawn(async move {
        futures::pin_mut!(pages);
        let mut last_kib = 0u32;
        loop {
            // Take the permit before asking for the page: the feed is
            // read no further ahead than the batches that fit in memory
            // (and what the socket holds of a streamed feed, or the one
            // page `changes_pages` asks for early).
            let waiting = Instant::now();
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            tracing::debug!(
                waited_us = waiting.elapsed().as_micros() as u64,
                "feed reader took a batch permit"
            );
            let take = |kib: u32| {
                let carried = carried.clone();
                async move {
                    match kib {
                        0 => Ok(None),
                        kib => carried.acquire_many_owned(kib).await.map(Some),
                    }
                }
            };
            let Ok(mut carried_permit) = take(last_kib).await else {
                return;
            };
            let Some(page) = pages.next().await else {
                return;
            };
            let kib = page.as_ref().map_or(0, carried_kib);
            if kib != last_kib {
                drop(carried_permit);
                let Ok(p) = take(kib).await else {
                    return;
                };
                carried_permit = p;
                last_kib = kib;
            }
            let permits = BatchPermits {
                _batch: permit,
                _carried: carried_permit,
            };
            let ctx = ctx.clone();
            let task = tokio::spawn(async move {
                let page = page?;
                let fetched = batch::fetch(&ctx, page).await?;
                Ok((fetched, permits))
            });
            if tx.send(AbortOnDrop(task)).await.is_err() {
                return;
            }
        }
    }));
    (rx, producer)
}

/// One attempt of a pull under way: what it needs, and what it did so far.
struct Pass<'a> {
    ctx: PullContext,
    config: &'a PullConfig,
    started: Instant,
    /// Names this attempt in its checkpoints.
    session_id: String,
    /// What the changes requests ask for (the filter).
    query: FeedQuery,
    result: PullResult,
    /// Kept apart from `result.timings` until the attempt ends.
    timings: PullTimings,
}

impl<'a> Pass<'a> {
    /// Reads the server and database info, binds the remote and finds the
    /// checkpoint to resume from.
    async fn start(replica: &Replica, remote: &Remote, config: &'a PullConfig) -> Result<Self> {
        let started = Instant::now();
        let started_at_ms = checkpoint::now_ms();
        let server = remote.server_info().await?;
        let info = remote.db_info().await?;
        // A filter that cannot be resolved fails before the replica is
        // bound to the remote.
        let filter = filter::resolve(&config.filter, config.revisions, remote).await?;
        bind_remote(replica, remote, &server).await?;
        let endpoint = remote.endpoint();
        let rep_id = filtered_replication_id(&server, endpoint, filter.id_part.as_deref());
        let start_seq = start_seq(replica, &rep_id);
        let session_id = uuid::Uuid::new_v4().to_string();
        tracing::info!(db = %endpoint, since = %start_seq, remote_docs = info.doc_count,
            batch_size = config.batch_size, batches_limit = config.batches_limit,
            filtered = filter.description.as_deref().unwrap_or("no"), "pull starting");
        let timings = PullTimings {
            connect: millis::whole(started.elapsed()),
            ..PullTimings::default()
        };
        let result = PullResult {
            replication_id: rep_id,
            start_seq: start_seq.clone(),
            last_seq: start_seq,
            batches: 0,
            changes_read: 0,
            docs_read: 0,
            docs_written: 0,
            doc_write_failures: 0,
            failures: Vec::new(),
            attachments_fetched: 0,
            remote_doc_count: info.doc_count,
            started_at_ms,
            timings: PullTimings::default(),
            interrupted: false,
            filtered: filter.description,
        };
        let ctx = PullContext {
            replica: replica.clone(),
            remote: remote.clone(),
            tombstones: config.tombstones,
        };
        Ok(Pass {
            ctx,
            config,
            started,
            session_id,
            query: filter.query,
            result,
            timings,
        })
    }

    /// Documents an earlier pull could not store come first: fetched again
    /// with all their leaves, committed without moving the checkpoint.
    /// A page at a time, in id order: an id that fails again goes back on
    /// the list behind the cursor and waits for the next pull. Sets
    /// `result.interrupted` when `stop` completed first.
    async fn retry_failed_docs<F: std::future::Future<Output = ()>>(
        &mut self,
        stop: &mut Stop<F>,
    ) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            if stop.requested() {
                self.result.interrupted = true;
                return Ok(());
            }
            let ids = self
                .ctx
                .replica
                .pending_retries_after(after.as_deref(), self.config.batch_size)?;
            let Some(last) = ids.last() else {
                return Ok(());
            };
            after = Some(last.clone());
            for mut fetched in self.fetch_retry_page(&ids).await? {
                refuse_oversized(&mut fetched, self.config.max_doc_bytes);
                let written = self.commit(&mut fetched).await?;
                self.result.absorb(fetched, written);
            }
            tracing::info!(
                retried = ids.len(),
                "documents from earlier failures fetched again"
            );
        }
    }

    /// One page of the retry list. A page the server cannot answer is
    /// fetched again one id at a time (see [`Pass::fetch_one_by_one`]).
    async fn fetch_retry_page(&mut self, ids: &[String]) -> Result<Vec<batch::FetchedBatch>> {
        match batch::fetch_retries(&self.ctx, ids.to_vec()).await {
            Ok(fetched) => Ok(vec![fetched]),
            // An answer about documents: find out which. Anything else (the
            // connection, auth, overload) fails the pull as the feed would.
            Err(Error::Remote(e)) if e.document_failure().is_some() => {
                tracing::warn!(%e, "fetching failed documents again failed; trying them one by one");
                self.fetch_one_by_one(ids).await
            }
            Err(e) => Err(e),
        }
    }

    /// An id that still fails alone is a failure of that document: it
    /// stays on the list, and the feed is read all the same.
    async fn fetch_one_by_one(&mut self, ids: &[String]) -> Result<Vec<batch::FetchedBatch>> {
        let mut each = Vec::new();
        for id in ids {
            match batch::fetch_retries(&self.ctx, vec![id.clone()]).await {
                Ok(fetched) => each.push(fetched),
                Err(Error::Remote(e)) => match e.document_failure() {
                    Some((error, reason)) => {
                        tracing::warn!(%id, %error, %reason, "document still failing; it stays on the retry list");
                        self.result.record_failure(DocFailure::new(
                            id,
                            None,
                            "retry_failed",
                            &format!("{error}: {reason}"),
                        ));
                    }
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(each)
    }

    /// Commits the fetched batches in feed order until the feed ends or
    /// `stop` completes.
    async fn commit_in_order<F: std::future::Future<Output = ()>>(
        &mut self,
        rx: &mut mpsc::Receiver<FetchTask>,
        stop: &mut Stop<F>,
        on_progress: &mut impl FnMut(&PullProgress),
    ) -> Result<()> {
        loop {
            // Batch boundaries: waiting for the next batch or its fetch, never
            // inside a commit.
            let next = tokio::select! {
                biased;
                () = stop.wait() => None,
                task = rx.recv() => task,
            };
            let Some(mut task) = next else {
                return Ok(());
            };
            let wait = Instant::now();
            let joined = tokio::select! {
                biased;
                () = stop.wait() => return Ok(()),
                joined = &mut task.0 => joined,
            };
            self.timings.fetch_wait += millis::whole(wait.elapsed());
            let (fetched, permit) = joined
                .map_err(|e| crate::StoreError::Cancelled(format!("a fetch task failed: {e}")))??;
            self.commit_batch(fetched, permit, on_progress).await?;
        }
    }

    /// Commits one batch of the feed with its page's checkpoint, frees its
    /// permit and reports progress.
    async fn commit_batch(
        &mut self,
        mut fetched: batch::FetchedBatch,
        permit: BatchPermits,
        on_progress: &mut impl FnMut(&PullProgress),
    ) -> Result<()> {
        refuse_oversized(&mut fetched, self.config.max_doc_bytes);
        if let Some(seq) = &fetched.last_seq {
            let cp = Checkpoint::new(seq.clone(), &self.session_id);
            fetched.write.checkpoint =
                Some(CheckpointRecord::new(&self.result.replication_id, &cp)?);
            self.result.last_seq = seq.clone();
        }
        let written = self.commit(&mut fetched).await?;
        drop(permit);
        let changes = fetched.changes;
        self.result.absorb(fetched, written);
        tracing::debug!(batch = self.result.batches, changes, written,
            last_seq = %self.result.last_seq, "batch committed");
        on_progress(&PullProgress {
            batches: self.result.batches,
            changes_read: self.result.changes_read,
            docs_read: self.result.docs_read,
            docs_written: self.result.docs_written,
            doc_write_failures: self.result.doc_write_failures,
            last_seq: self.result.last_seq.clone(),
            remote_doc_count: self.result.remote_doc_count,
            elapsed: self.started.elapsed(),
            state: PullState::Active,
        });
        Ok(())
    }

    /// Commits a batch's write (timed); returns the revisions written.
    async fn commit(&mut self, fetched: &mut batch::FetchedBatch) -> Result<u64> {
        let commit_start = Instant::now();
        let outcome = self
            .ctx
            .replica
            .commit(std::mem::take(&mut fetched.write))
            .await?;
        self.timings.commit += millis::whole(commit_start.elapsed());
        Ok(outcome.revs_written)
    }

    /// The result of an attempt stopped at a batch boundary.
    fn interrupted(mut self) -> PullResult {
        self.result.interrupted = true;
        self.timings.total = millis::whole(self.started.elapsed());
        self.result.timings = self.timings;
        tracing::info!(last_seq = %self.result.last_seq, "pull interrupted at a batch boundary");
        self.result
    }

    /// Ends a completed attempt: deletes superseded bodies and records the
    /// result as the last pull.
    async fn finish(mut self) -> Result<PullResult> {
        // Superseded bodies were only listed as garbage during the pull, so
        // that random deletes never inflate a batch's transaction.
        let replica = &self.ctx.replica;
        let sweeper = replica.clone();
        let swept = replica
            .spawn_blocking(move || sweeper.sweep())
            .await
            .map_err(|e| crate::StoreError::Cancelled(e.to_string()))??;
        tracing::debug!(swept, "superseded bodies deleted");
        self.timings.total = millis::whole(self.started.elapsed());
        self.result.timings = self.timings;
        replica.set_last_pull(&self.result).await?;
        tracing::info!(docs_read = self.result.docs_read, docs_written = self.result.docs_written,
            failures = self.result.doc_write_failures, last_seq = %self.result.last_seq,
            ms = self.result.timings.total.as_millis(), "pull complete");
        Ok(self.result)
    }
}

impl PullResult {
    /// Counts a failure that has no batch (a retry that failed again).
    fn record_failure(&mut self, failure: DocFailure) {
        self.doc_write_failures += 1;
        if self.failures.len() < MAX_FAILURES_KEPT {
            self.failures.push(failure);
        }
    }

    /// Adds a committed batch's figures.
    fn absorb(&mut self, fetched: batch::FetchedBatch, revs_written: u64) {
        self.batches += 1;
        self.changes_read += fetched.changes as u64;
        self.docs_read += fetched.docs_read;
        self.docs_written += revs_written;
        self.doc_write_failures += fetched.failures.len() as u64;
        self.attachments_fetched += fetched.attachments_fetched;
        let room = MAX_FAILURES_KEPT.saturating_sub(self.failures.len());
        self.failures
            .extend(fetched.failures.into_iter().take(room));
    }
}

/// Runs `f` on the blocking pool, counted by the replica so that a stopped
/// pull can wait until it returns (see [`Replica::spawn_blocking`]).
pub(crate) fn blocking<T: Send + 'static>(
    replica: &Replica,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    replica.spawn_blocking(f)
}

/// Takes revisions larger than `limit` out of a batch: each is a failure
/// of its document, which goes on the retry list.
fn refuse_oversized(fetched: &mut batch::FetchedBatch, limit: Option<usize>) {
    let Some(limit) = limit else { return };
    let revs = std::mem::take(&mut fetched.write.revs);
    for rev in revs {
        let size = rev.body.get().len();
        if size <= limit {
            fetched.write.revs.push(rev);
            continue;
        }
        fetched.failures.push(DocFailure::new(
            &rev.id,
            rev.path.leaf().map(|r| r.to_string()),
            "too_large",
            &format!("the body is {size} bytes; this pull stores at most {limit}"),
        ));
        fetched.write.retry_later.push(rev.id);
    }
}

/// The same database: same server (by uuid when both know it) and name.
fn same_remote(bound: &RemoteBinding, requested: &RemoteBinding) -> bool {
    if bound.db_name != requested.db_name {
        return false;
    }
    match (&bound.server_uuid, &requested.server_uuid) {
        (Some(a), Some(b)) => a == b,
        _ => bound.url == requested.url,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn validates_settings() {
        let build = |rows, batches| {
            PullConfig::builder()
                .batch_size(rows)
                .batches_limit(batches)
                .build()
        };
        assert!(build(1, 1).is_ok());
        assert!(build(100_000, 64).is_ok());
        for (rows, batches, setting) in [
            (0, 1, "batch_size"),
            (100_001, 1, "batch_size"),
            (10, 0, "batches_limit"),
            (10, 65, "batches_limit"),
        ] {
            match build(rows, batches) {
                Err(Error::InvalidSetting { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{rows}/{batches}: {other:?}"),
            }
        }
        assert_eq!(
            PullConfig::default(),
            PullConfig {
                batch_size: 1000,
                batches_limit: 5,
                max_doc_bytes: None,
                retry_mode: None,
                feed: Feed::Streamed,
                mode: PullMode::OneShot,
                filter: Filter::All,
                revisions: Revisions::All,
                tombstones: Tombstones::Pull,
            }
        );
    }

    #[test]
    fn same_remote_prefers_server_uuid() {
        let b = |url: &str, uuid: Option<&str>| {
            RemoteBinding::new(url.into(), "db".into(), uuid.map(Into::into))
        };
        assert!(same_remote(
            &b("http://a/db", Some("u")),
            &b("http://b/db", Some("u"))
        ));
        assert!(!same_remote(
            &b("http://a/db", Some("u")),
            &b("http://a/db", Some("v"))
        ));
        assert!(same_remote(
            &b("http://a/db", None),
            &b("http://a/db", Some("v"))
        ));
    }
}
