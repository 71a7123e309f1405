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
//! Stopping: [`pull_until`] takes a shutdown future. When it completes the
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
mod retry_mode;

pub(crate) use checkpoint::now_ms;
pub use checkpoint::{replication_id, Checkpoint};
mod config;
pub use config::PullConfigBuilder;
mod status;
pub use retry_mode::{PullState, RetryMode};
pub use status::ReplicaStatus;

use crate::remote::{Remote, Seq};
use crate::store::{CheckpointRecord, RemoteBinding, Replica};
use crate::{Error, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
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
        Ok(())
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
    /// Time since the pull started, milliseconds.
    pub elapsed_ms: u64,
    /// Moving, or (in retry mode) waiting to start over; flattened into
    /// the JSON as `"state": "active"` or `"state": "paused"`.
    #[serde(flatten)]
    pub state: PullState,
}

/// Where a pull's time went, in milliseconds of wall time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullTimings {
    /// Connecting and reading server and database info.
    pub connect_ms: u64,
    /// Waiting for fetched batches (beyond what overlapped with commits).
    pub fetch_wait_ms: u64,
    /// Committing batches to the replica (transaction + flush).
    pub commit_ms: u64,
    /// The whole pull.
    pub total_ms: u64,
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
    /// The pull was stopped by its shutdown future before the feed's end.
    #[serde(default)]
    pub interrupted: bool,
}

const MAX_FAILURES_KEPT: usize = 100;

/// What every fetch task needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct PullContext {
    pub(crate) replica: Replica,
    pub(crate) remote: Remote,
}

/// Aborts a task when dropped, so a cancelled pull leaves nothing running.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type FetchTask = AbortOnDrop<Result<(batch::FetchedBatch, tokio::sync::OwnedSemaphorePermit)>>;

/// Pulls everything the remote has that the replica lacks.
///
/// Resumes from the replica's checkpoint for this remote. Returns when the
/// changes feed is exhausted. See [`pull_with_progress`].
pub async fn pull(replica: &Replica, remote: &Remote, config: &PullConfig) -> Result<PullResult> {
    pull_with_progress(replica, remote, config, |_| {}).await
}

/// [`pull_with_progress`] until `shutdown` completes (Ctrl-C, an app going
/// to the background): then the pull stops at the next batch boundary and
/// returns its result with [`PullResult::interrupted`] set.
///
/// When it returns (either way) no task of the pull runs any more and none
/// holds a clone of the replica, so the replica can be closed and reopened
/// at once.
///
/// # Durability
/// As [`pull_with_progress`]: every batch committed before the stop is
/// durable with its checkpoint; the next pull resumes after it.
///
/// # Errors
/// As [`pull_with_progress`].
///
/// ```no_run
/// # async fn demo(replica: settee::Replica, remote: settee::Remote) -> settee::Result<()> {
/// let stop = async { let _ = tokio::signal::ctrl_c().await; };
/// let result = settee::replicate::pull_until(&replica, &remote, &Default::default(), |_| {}, stop).await?;
/// if result.interrupted {
///     println!("stopped at {}; run again to resume", result.last_seq);
/// }
/// # Ok(()) }
/// ```
pub async fn pull_until(
    replica: &Replica,
    remote: &Remote,
    config: &PullConfig,
    on_progress: impl FnMut(&PullProgress) + Send,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<PullResult> {
    config.validate()?;
    let _guard = replica.lock_pull(&remote.endpoint().to_string()).await;
    let mut stop = Stop {
        signal: Box::pin(shutdown),
        seen: false,
    };
    let result = match &config.retry_mode {
        None => run(replica, remote, config, on_progress, &mut stop).await,
        Some(mode) => run_retrying(replica, remote, config, mode, on_progress, &mut stop).await,
    };
    // Aborted fetch tasks may have left a blocking diff running.
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
    remote: &Remote,
    config: &PullConfig,
    mode: &RetryMode,
    mut on_progress: impl FnMut(&PullProgress) + Send,
    stop: &mut Stop<F>,
) -> Result<PullResult> {
    let started = Instant::now();
    let mut base = Carried::default();
    let mut last: Option<PullProgress> = None;
    let mut failed = 0u32;
    let mut passes = 0u32;
    loop {
        let outcome = {
            let base = &base;
            let last = &mut last;
            let on_progress = &mut on_progress;
            run(
                replica,
                remote,
                config,
                move |p: &PullProgress| {
                    let mut p = p.clone();
                    base.add_to(&mut p);
                    p.elapsed_ms = started.elapsed().as_millis() as u64;
                    on_progress(&p);
                    *last = Some(p);
                },
                stop,
            )
            .await
        };
        let error = match outcome {
            Ok(mut r) => {
                base.add_to_result(&mut r);
                if r.interrupted || r.doc_write_failures == 0 || passes >= mode.failure_passes {
                    return Ok(r);
                }
                passes += 1;
                tracing::warn!(
                    failures = r.doc_write_failures,
                    pass = passes,
                    "pull completed with per-document failures; retry mode fetches them again"
                );
                base = Carried::from_result(&r);
                continue;
            }
            Err(e) => e,
        };
        if !retry_mode::worth_retrying(&error) || !mode.allows(failed + 1) || stop.requested() {
            return Err(error);
        }
        failed += 1;
        if let Some(p) = &last {
            base = Carried::from_progress(p);
        }
        let pause = mode.pause(failed);
        tracing::warn!(%error, attempt = failed, ?pause,
            "pull failed; retry mode starts over from the last checkpoint after a pause");
        let mut event = last.clone().unwrap_or_else(|| PullProgress {
            batches: 0,
            changes_read: 0,
            docs_read: 0,
            docs_written: 0,
            doc_write_failures: 0,
            last_seq: Seq::zero(),
            remote_doc_count: 0,
            elapsed_ms: 0,
            state: PullState::Active,
        });
        event.elapsed_ms = started.elapsed().as_millis() as u64;
        event.state = PullState::Paused {
            error: error.to_string(),
            attempt: failed,
            retry_in_ms: pause.as_millis() as u64,
        };
        on_progress(&event);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.wait() => return Err(error),
        }
        event.state = PullState::Active;
        event.elapsed_ms = started.elapsed().as_millis() as u64;
        on_progress(&event);
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

/// [`pull`], calling `on_progress` after every committed batch.
///
/// # Durability
/// Each batch and its checkpoint are one atomic, flushed commit. If the
/// pull fails or its future is dropped, the batches committed so far stay
/// and the next pull resumes after the last of them.
///
/// # Errors
/// Before any batch: [`Error::Remote`] for a bad URL, refused connection,
/// 401/403/404, a server that is not CouchDB or an invalid answer (the
/// replica is left as it was); [`Error::WrongRemote`] if the replica mirrors
/// another database. During the pull: the first remote or store error that
/// retries could not overcome. Per-document problems are not errors: they
/// are counted in [`PullResult::doc_write_failures`].
pub async fn pull_with_progress(
    replica: &Replica,
    remote: &Remote,
    config: &PullConfig,
    on_progress: impl FnMut(&PullProgress) + Send,
) -> Result<PullResult> {
    pull_until(replica, remote, config, on_progress, std::future::pending()).await
}

async fn run<F: std::future::Future<Output = ()>>(
    replica: &Replica,
    remote: &Remote,
    config: &PullConfig,
    mut on_progress: impl FnMut(&PullProgress) + Send,
    stop: &mut Stop<F>,
) -> Result<PullResult> {
    let started = Instant::now();
    let started_at_ms = checkpoint::now_ms();
    let server = remote.server_info().await?;
    let info = remote.db_info().await?;
    let endpoint = remote.endpoint();
    let binding = RemoteBinding::new(
        endpoint.to_string(),
        endpoint.db_name().to_owned(),
        server.uuid.clone(),
    );
    match replica.remote()? {
        Some(bound) if !same_remote(&bound, &binding) => {
            return Err(Error::WrongRemote {
                path: replica.path().display().to_string(),
                bound: bound.url,
                requested: binding.url,
            })
        }
        Some(_) => {}
        None => replica.set_remote(&binding).await?,
    }
    let rep_id = replication_id(&server, endpoint);
    let start_seq = match replica.checkpoint(&rep_id) {
        Ok(Some(cp)) => cp.last_seq,
        Ok(None) => Seq::zero(),
        Err(e) => {
            tracing::warn!(%e, "unreadable checkpoint; starting from the beginning");
            Seq::zero()
        }
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(db = %endpoint, since = %start_seq, remote_docs = info.doc_count,
        batch_size = config.batch_size, batches_limit = config.batches_limit, "pull starting");
    let mut timings = PullTimings {
        connect_ms: started.elapsed().as_millis() as u64,
        ..PullTimings::default()
    };

    let ctx = PullContext {
        replica: replica.clone(),
        remote: remote.clone(),
    };
    let mut result = PullResult {
        replication_id: rep_id.clone(),
        start_seq: start_seq.clone(),
        last_seq: start_seq.clone(),
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
    };
    // Documents an earlier pull could not store come first: fetched again
    // with all their leaves, committed without moving the checkpoint.
    // A page at a time, in id order: an id that fails again goes back on
    // the list behind the cursor and waits for the next pull.
    // A page the server cannot answer is fetched again one id at a time,
    // and an id that still fails is a failure of that document: it stays on
    // the list, and the feed is read all the same.
    let mut after: Option<String> = None;
    loop {
        if stop.requested() {
            result.interrupted = true;
            return Ok(result);
        }
        let ids = replica.pending_retries_after(after.as_deref(), config.batch_size)?;
        let Some(last) = ids.last() else { break };
        after = Some(last.clone());
        let page = match batch::fetch_retries(&ctx, ids.clone()).await {
            Ok(fetched) => vec![fetched],
            // An answer about documents: find out which. Anything else (the
            // connection, auth, overload) fails the pull as the feed would.
            Err(Error::Remote(e)) if e.document_failure().is_some() => {
                tracing::warn!(%e, "fetching failed documents again failed; trying them one by one");
                let mut each = Vec::new();
                for id in &ids {
                    match batch::fetch_retries(&ctx, vec![id.clone()]).await {
                        Ok(fetched) => each.push(fetched),
                        Err(Error::Remote(e)) => match e.document_failure() {
                            Some((error, reason)) => {
                                tracing::warn!(%id, %error, %reason, "document still failing; it stays on the retry list");
                                result.record_failure(DocFailure::new(
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
                each
            }
            Err(e) => return Err(e),
        };
        for mut fetched in page {
            refuse_oversized(&mut fetched, config.max_doc_bytes);
            let commit_start = Instant::now();
            let outcome = replica.commit(std::mem::take(&mut fetched.write)).await?;
            timings.commit_ms += commit_start.elapsed().as_millis() as u64;
            result.absorb(fetched, outcome.revs_written);
        }
        tracing::info!(
            retried = ids.len(),
            "documents from earlier failures fetched again"
        );
    }

    let (tx, mut rx) = mpsc::channel::<FetchTask>(config.batches_limit);
    let permits = Arc::new(Semaphore::new(config.batches_limit));
    let producer = {
        let pages = remote.changes_pages(start_seq.clone(), config.batch_size);
        let ctx = ctx.clone();
        AbortOnDrop(tokio::spawn(async move {
            futures::pin_mut!(pages);
            loop {
                // Take the permit before asking for the page: the feed is
                // read no further ahead than the batches that fit in memory
                // (and the one page `changes_pages` asks for early).
                let waiting = Instant::now();
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                tracing::debug!(
                    waited_us = waiting.elapsed().as_micros() as u64,
                    "feed reader took a batch permit"
                );
                let Some(page) = pages.next().await else {
                    return;
                };
                let ctx = ctx.clone();
                let task = tokio::spawn(async move {
                    let page = page?;
                    let fetched = batch::fetch(&ctx, page).await?;
                    Ok((fetched, permit))
                });
                if tx.send(AbortOnDrop(task)).await.is_err() {
                    return;
                }
            }
        }))
    };

    loop {
        // Batch boundaries: waiting for the next batch or its fetch, never
        // inside a commit.
        let next = tokio::select! {
            biased;
            () = stop.wait() => None,
            task = rx.recv() => task,
        };
        let Some(mut task) = next else { break };
        let wait = Instant::now();
        let joined = tokio::select! {
            biased;
            () = stop.wait() => break,
            joined = &mut task.0 => joined,
        };
        timings.fetch_wait_ms += wait.elapsed().as_millis() as u64;
        let (mut fetched, permit) = joined
            .map_err(|e| crate::StoreError::Cancelled(format!("a fetch task failed: {e}")))??;
        refuse_oversized(&mut fetched, config.max_doc_bytes);
        if let Some(seq) = &fetched.last_seq {
            let cp = Checkpoint::new(seq.clone(), &session_id);
            fetched.write.checkpoint = Some(CheckpointRecord::new(&rep_id, &cp)?);
            result.last_seq = seq.clone();
        }
        let commit_start = Instant::now();
        let outcome = replica.commit(std::mem::take(&mut fetched.write)).await?;
        timings.commit_ms += commit_start.elapsed().as_millis() as u64;
        drop(permit);

        let changes = fetched.changes;
        result.absorb(fetched, outcome.revs_written);
        tracing::debug!(batch = result.batches, changes, written = outcome.revs_written,
            last_seq = %result.last_seq, "batch committed");
        on_progress(&PullProgress {
            batches: result.batches,
            changes_read: result.changes_read,
            docs_read: result.docs_read,
            docs_written: result.docs_written,
            doc_write_failures: result.doc_write_failures,
            last_seq: result.last_seq.clone(),
            remote_doc_count: info.doc_count,
            elapsed_ms: started.elapsed().as_millis() as u64,
            state: PullState::Active,
        });
    }
    drop(producer);
    if stop.requested() {
        // The tasks still queued are aborted as `rx` drops; `pull_until`
        // waits for their blocking work. The sweep is left to the next pull.
        drop(rx);
        result.interrupted = true;
        timings.total_ms = started.elapsed().as_millis() as u64;
        result.timings = timings;
        tracing::info!(last_seq = %result.last_seq, "pull interrupted at a batch boundary");
        return Ok(result);
    }
    // Superseded bodies were only listed as garbage during the pull, so
    // that random deletes never inflate a batch's transaction.
    let sweeper = replica.clone();
    let swept = replica
        .spawn_blocking(move || sweeper.sweep())
        .await
        .map_err(|e| crate::StoreError::Cancelled(e.to_string()))??;
    tracing::debug!(swept, "superseded bodies deleted");
    timings.total_ms = started.elapsed().as_millis() as u64;
    result.timings = timings;
    replica.set_last_pull(&result).await?;
    tracing::info!(docs_read = result.docs_read, docs_written = result.docs_written,
        failures = result.doc_write_failures, last_seq = %result.last_seq,
        ms = result.timings.total_ms, "pull complete");
    Ok(result)
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
