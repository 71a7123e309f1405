//! The outbox: pushes local edits to the remote, the last leg of
//! app → store → outbox → remote.
//!
//! ```text
//!  Replica::put/update/delete ──► one transaction: revision + outbox entry
//!                                         │ (watch_update_seq wakes the worker)
//!                                         ▼
//!  worker (worker.rs) ── round (round.rs): head of the queue, per document
//!        │                 ├─ _revs_diff  (what the remote lacks)
//!        │                 ├─ _bulk_docs new_edits:false (+ _revisions, attachments)
//!        │                 └─ acknowledge_push: remove entries, dead letters,
//!        │                    checkpoint (one transaction)
//!        └─ backoff / pause per the StatusPolicy (config.rs)
//! ```
//!
//! The store owns the queue's rows (`store/outbox.rs`), the remote owns the
//! requests (`remote/push.rs`); this module only decides what to send and
//! what an answer means. It never writes documents: a pull brings back the
//! remote's view, conflicts included.

mod config;
mod round;
mod worker;

pub use crate::store::{DeadLetter, OutboxEntry, OutboxQueue, PushCheckpoint};
pub use config::{OutboxConfig, PushAction, StatusPolicy};

use crate::{Remote, Replica, StoreError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Starts push workers.
#[derive(Debug)]
pub struct Outbox;

impl Outbox {
    /// Starts a worker pushing `replica`'s outbox to `remote`, and returns
    /// its handle. The worker first pushes whatever a previous run left
    /// queued, then wakes on every local write, and looks again every
    /// `config.tick`. Must be called inside a tokio runtime. One worker per
    /// replica: two would push the same entries twice (harmless, wasteful).
    ///
    /// ```no_run
    /// # async fn demo() -> settee::Result<()> {
    /// use settee::{Endpoint, Remote, RemoteConfig, Replica, ReplicaConfig};
    /// use settee::outbox::{Outbox, OutboxConfig};
    /// use std::time::Duration;
    ///
    /// let replica = Replica::open("./replicas/course", ReplicaConfig::default())?;
    /// let remote = Remote::new(Endpoint::parse("http://127.0.0.1:5984/course")?, RemoteConfig::default())?;
    /// let outbox = Outbox::spawn(replica.clone(), remote, OutboxConfig::default());
    /// replica
    ///     .update("card-1", |doc| {
    ///         let mut body = doc.map(|d| d.body.clone()).unwrap_or_default();
    ///         body.insert("elo".into(), 1216.into());
    ///         Some(body)
    ///     })
    ///     .await?; // returns once durable
    /// let status = outbox.close(Duration::from_secs(10)).await?;     // drain, then stop
    /// println!("{} edits still queued", status.pending);
    /// # Ok(()) }
    /// ```
    pub fn spawn(replica: Replica, remote: Remote, config: OutboxConfig) -> OutboxHandle {
        let shared = Arc::new(Shared {
            replica,
            remote_url: remote.endpoint().to_string(),
            state: Mutex::new(worker::State::default()),
            wake: Notify::new(),
            rounds: watch::Sender::new(0),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(worker::run(shared.clone(), remote, config, rx));
        OutboxHandle {
            inner: Arc::new(HandleInner {
                shared,
                shutdown,
                task: Mutex::new(Some(task)),
            }),
        }
    }
}

/// What the worker and its queue look like now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStatus {
    /// The remote pushed to (no credentials).
    pub remote: String,
    /// Queued edits not yet acknowledged by the remote.
    pub pending: u64,
    /// Documents the remote refused for good (inspect them, then
    /// [`OutboxHandle::retry`] or [`OutboxHandle::discard`]).
    pub dead_letters: Vec<DeadLetter>,
    /// The last failure, if any since the worker started.
    pub last_error: Option<String>,
    /// When it happened, ms since the Unix epoch.
    pub last_error_at_ms: Option<u64>,
    /// When the remote last acknowledged a round, ms since the Unix epoch.
    pub last_success_at_ms: Option<u64>,
    /// Set when pushing is paused on an error that needs a person (a 401:
    /// the credentials): the error. [`OutboxHandle::resume`] clears it.
    pub paused: Option<String>,
    /// Time left before the next attempt, while backing off.
    pub backoff: Option<Duration>,
    /// Revisions the remote accepted since the worker started.
    pub revs_pushed: u64,
    /// Documents dead-lettered since the worker started.
    pub dead_lettered: u64,
    /// `_bulk_docs` requests sent since the worker started.
    pub bulk_docs_requests: u64,
    /// False once the worker has stopped.
    pub running: bool,
}

/// State shared by the handle and the worker task.
struct Shared {
    replica: Replica,
    remote_url: String,
    /// std `Mutex`: held for a few field updates, never across `.await`.
    state: Mutex<worker::State>,
    /// Wakes the worker now (flush, resume, retry of a dead letter).
    wake: Notify,
    /// Counts finished rounds, so `drain` waits without polling.
    rounds: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, worker::State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A handle on a running push worker; cheap to clone. When the last clone
/// is dropped the worker stops at its next safe point (what is queued stays
/// durable for the next run); [`OutboxHandle::close`] drains first.
#[derive(Clone)]
pub struct OutboxHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for OutboxHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxHandle")
            .field("remote", &self.inner.shared.remote_url)
            .finish_non_exhaustive()
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl OutboxHandle {
    /// The queue and the worker's state.
    pub fn status(&self) -> Result<OutboxStatus, StoreError> {
        let shared = &self.inner.shared;
        let pending = shared.replica.outbox().len()?;
        let dead_letters = shared.replica.outbox().dead_letters()?;
        let st = shared.state();
        Ok(OutboxStatus {
            remote: shared.remote_url.clone(),
            pending,
            dead_letters,
            last_error: st.last_error.clone(),
            last_error_at_ms: st.last_error_at_ms,
            last_success_at_ms: st.last_success_at_ms,
            paused: st.paused.clone(),
            backoff: st
                .backoff_until
                .map(|t| t.saturating_duration_since(Instant::now()))
                .filter(|d| !d.is_zero()),
            revs_pushed: st.stats.revs_pushed,
            dead_lettered: st.stats.dead_lettered,
            bulk_docs_requests: st.stats.bulk_docs_requests,
            running: !st.stopped,
        })
    }

    /// Pushes now: cancels a running backoff and wakes the worker (a pause
    /// stays; see [`OutboxHandle::resume`]).
    pub fn flush_now(&self) {
        self.inner.shared.state().backoff_until = None;
        self.inner.shared.wake.notify_one();
    }

    /// Lifts a pause (after fixing what it reported) and pushes now.
    pub fn resume(&self) {
        {
            let mut st = self.inner.shared.state();
            st.paused = None;
            st.backoff_until = None;
        }
        self.inner.shared.wake.notify_one();
    }

    /// Puts a dead letter back in the queue and pushes now; false if there
    /// is no dead letter `key`.
    ///
    /// # Durability
    /// As [`OutboxQueue::retry_dead_letter`].
    pub async fn retry(&self, key: u64) -> Result<bool, StoreError> {
        let replica = self.inner.shared.replica.clone();
        let found = tokio::task::spawn_blocking(move || replica.outbox().retry_dead_letter(key))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))??;
        self.flush_now();
        Ok(found)
    }

    /// Drops a dead letter for good; false if there is none with `key`.
    ///
    /// # Durability
    /// As [`OutboxQueue::discard_dead_letter`].
    pub async fn discard(&self, key: u64) -> Result<bool, StoreError> {
        let replica = self.inner.shared.replica.clone();
        tokio::task::spawn_blocking(move || replica.outbox().discard_dead_letter(key))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))?
    }

    /// Pushes now and waits until the queue is empty, pushing is paused,
    /// the worker stopped, or `timeout` passed, whichever comes first; then
    /// returns the status. Backoffs are honoured while it waits (a server
    /// that is down for a while is retried until `timeout`).
    pub async fn drain(&self, timeout: Duration) -> Result<OutboxStatus, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rounds = self.inner.shared.rounds.subscribe();
        self.flush_now();
        loop {
            rounds.borrow_and_update();
            let status = self.status()?;
            if status.pending == 0 || status.paused.is_some() || !status.running {
                return Ok(status);
            }
            tokio::select! {
                changed = rounds.changed() => {
                    if changed.is_err() {
                        return self.status();
                    }
                }
                () = tokio::time::sleep_until(deadline) => return self.status(),
            }
        }
    }

    /// Stops the worker now, without draining, for every clone of this
    /// handle: its replica no longer pushes to this remote (it was
    /// replaced after the remote database was recreated). What is queued
    /// stays durable.
    pub(crate) fn retire(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Drains for at most `timeout` ([`OutboxHandle::drain`]), then stops
    /// the worker and waits for it. What is still queued stays durable and
    /// is pushed by the next worker on this replica.
    pub async fn close(&self, timeout: Duration) -> Result<OutboxStatus, StoreError> {
        self.drain(timeout).await?;
        self.inner.shutdown.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            // A worker that panicked has stopped all the same.
            let _ = task.await;
        }
        self.status()
    }
}
