//! [`SyncService`]: the replicas of many remote databases of one server,
//! each synced on demand, with coalesced concurrent calls.
//!
//! One entry per database holds its status and its open replicas behind a
//! std `Mutex` (never held across an `.await`). A sync runs as a spawned
//! task whose output is shared: every caller that arrives while it runs
//! awaits the same task, so 100 concurrent calls make one replication, and
//! a caller that gives up does not cancel it.

use super::carry::carry_local_writes;
use super::hooks::NoHooks;
use super::root::{remove_dir, SyncRoot};
use super::stale::{self, Identity, RemoteFacts, IDENTITY_DOC};
use super::{
    gate, FailureKind, FailurePolicy, RebuildReason, Refresh, SyncConfig, SyncError, SyncFailure,
    SyncHooks, SyncReport, SyncRun, SyncState, SyncStatus,
};
use crate::outbox::{Outbox, OutboxHandle};
use crate::replicate::{now_ms, pull, PullMode};
use crate::views::Views;
use crate::{Endpoint, Error, PullConfig, PullResult, Remote, RemoteError, Replica, Result};
use futures::future::{BoxFuture, FutureExt, Shared};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// Database names are one path segment of the server URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

type SharedSync = Shared<BoxFuture<'static, SyncStatus>>;

/// Keeps local replicas of many databases of one server in sync (the
/// seed's `CourseSyncService`); cheap to clone, one per process is enough.
///
/// See the crate README for an example. The states are those of
/// [`SyncState`]; the on-disk layout is [`SyncRoot`]'s. One service per
/// sync root: it opens each replica once and shares it, and a second
/// service (or process) on the same root would find the replicas locked.
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("server", &self.inner.server_display)
            .field("root", &self.inner.root.path())
            .finish()
    }
}

struct Inner {
    /// The server root as given, credentials included: only ever parsed
    /// into an [`Endpoint`], never printed.
    server: String,
    /// The server root without credentials, for messages.
    server_display: String,
    root: SyncRoot,
    config: SyncConfig,
    hooks: Arc<dyn SyncHooks>,
    /// Caps the databases pulling at once.
    permits: Arc<Semaphore>,
    dbs: Mutex<HashMap<String, Arc<Entry>>>,
    /// `true` once [`SyncService::shutdown`] was called.
    shutdown: watch::Sender<bool>,
}

struct Entry {
    db: String,
    state: Mutex<DbState>,
}

struct DbState {
    status: SyncStatus,
    remote: Option<Remote>,
    /// The replica `CURRENT` names, opened once.
    live: Option<Replica>,
    /// `live` has been ready: it is handed out while a later sync runs.
    served: bool,
    /// [`SyncHooks::replica_ready`] was called for `live` in this process.
    announced: bool,
    /// A rebuild in progress, beside `live`; kept across failures.
    building: Option<Replica>,
    /// Replicas swapped out, deleted once no reader holds them (after
    /// their local writes are carried over to `live`).
    retired: Vec<Replica>,
    /// The warmed views of `live`, handed out with it.
    views: Option<Views>,
    /// The push worker of `live` ([`SyncConfig::push`]).
    worker: Option<OutboxHandle>,
    pull: Option<PullConfig>,
    /// The task that follows a live database's feed between syncs
    /// ([`PullMode::Live`]): see `follow`.
    follower: Option<tokio::task::JoinHandle<()>>,
    disabled_at: Option<Instant>,
    /// The gate said yes (or a sync was forced) in this process: later
    /// syncs, scheduled ones included, do not ask again.
    gate_passed: bool,
    inflight: Option<SharedSync>,
}

/// Why a sync runs, which says whether it asks the gate and whether it
/// pulls into a ready replica.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// `ensure_synced(Refresh::IfNeeded)`: the gate; a ready replica is
    /// only checked for recreation.
    Call,
    /// `ensure_synced(Refresh::Force)`: no gate; a pull even when ready.
    Forced,
    /// The schedule, `sync_all`, a live database's follower: the gate
    /// (once passed in this process it stays passed); a pull even when
    /// ready.
    Refresh,
}

impl Trigger {
    fn skips_gate(self) -> bool {
        self == Trigger::Forced
    }

    fn pulls_when_ready(self) -> bool {
        self != Trigger::Call
    }
}

impl SyncService {
    /// A service for the databases of the server at `server_url` (e.g.
    /// `http://user:pass@host:5984`), keeping replicas under `root`.
    ///
    /// Creates `root` if needed and deletes replica generations a crash
    /// left behind (a rebuild that never became live, a retired replica).
    pub fn open(server_url: &str, root: impl AsRef<Path>, config: SyncConfig) -> Result<Self> {
        Self::open_with_hooks(server_url, root, config, Arc::new(NoHooks))
    }

    /// [`SyncService::open`] with hooks for view warm-up and push workers.
    pub fn open_with_hooks(
        server_url: &str,
        root: impl AsRef<Path>,
        config: SyncConfig,
        hooks: Arc<dyn SyncHooks>,
    ) -> Result<Self> {
        config.validate()?;
        // A database URL of the server checks the scheme, host and credentials.
        let probe = Endpoint::parse(&format!("{}/probe", server_url.trim_end_matches('/')))?;
        let server_display = probe.server_url().to_string();
        let root = SyncRoot::new(root);
        std::fs::create_dir_all(root.path()).map_err(|e| SyncError::io(root.path(), e))?;
        for db in root.databases()? {
            let removed = root.remove_stale_generations(&db, None)?;
            if removed > 0 {
                tracing::info!(db, removed, "leftover replica generations deleted");
            }
        }
        Ok(SyncService {
            inner: Arc::new(Inner {
                server: server_url.trim_end_matches('/').to_owned(),
                server_display,
                root,
                permits: Arc::new(Semaphore::new(config.max_concurrent_pulls)),
                config,
                hooks,
                dbs: Mutex::new(HashMap::new()),
                shutdown: watch::Sender::new(false),
            }),
        })
    }

    /// The root directory layout.
    pub fn root(&self) -> &SyncRoot {
        &self.inner.root
    }

    /// Replication settings for one database, instead of the service's.
    ///
    /// A live config ([`PullMode::Live`]) opts the database in to live
    /// mode: once a sync makes it ready, the service long-polls its feed
    /// and syncs when something changes, until [`SyncService::shutdown`]
    /// (the next sync starts it again). Each sync's own pull is one-shot.
    pub fn set_pull_config(&self, db: &str, pull: PullConfig) {
        lock(&self.entry(db).state).pull = Some(pull);
    }

    /// Makes sure `db`'s replica is synced (the seed's `ensureSynced`) and
    /// returns its status; failures are a status with state `error`, never
    /// a panic or an `Err`.
    ///
    /// - First call: checks the gate (unless [`Refresh::Force`]), pulls,
    ///   warms, `ready`.
    /// - While `ready`: checks the remote was not recreated (and rebuilds the
    ///   replica if it was); pulls again only with [`Refresh::Force`].
    /// - While a sync of `db` runs: waits for it.
    /// - `disabled`: returns at once until `recheck_disabled_after` passed.
    /// - `error`: tries again, resuming from the replica's checkpoint.
    ///
    /// # Durability
    /// Every pulled batch is durable when committed (see [`crate::pull`]);
    /// a rebuilt replica becomes live by the atomic, synced swap of
    /// `CURRENT` ([`SyncRoot`]), after its pull and warm-up. Whatever the
    /// outcome, including `error` or a crash, the replica `CURRENT` names
    /// holds whole batches of one incarnation of the remote database.
    pub async fn ensure_synced(&self, db: &str, refresh: Refresh) -> SyncStatus {
        self.sync(
            db,
            match refresh {
                Refresh::Force => Trigger::Forced,
                _ => Trigger::Call,
            },
            None,
        )
        .await
    }

    /// The status of `db` (the seed's `getStatus`).
    pub fn status(&self, db: &str) -> SyncStatus {
        match lock(&self.inner.dbs).get(db) {
            Some(entry) => lock(&entry.state).status.clone(),
            None => SyncStatus::new(db),
        }
    }

    /// The replica of `db` for reading (the seed's `getLocalDB`).
    ///
    /// `Some` once the replica is ready, and from then on through later
    /// syncs, rebuilds (built beside it and swapped in when ready) and their
    /// failures: an offline refresh must not take a local-first replica
    /// away (the seed drops it on error). Also `Some` after a failed first
    /// sync in this process if the replica on disk completed a pull in an
    /// earlier one. `None` before that, and while the gate says disabled.
    ///
    /// A handle keeps reading the replica it was given, consistent, even
    /// after a swap; ask again for the new one.
    pub fn local(&self, db: &str) -> Option<Replica> {
        let entry = lock(&self.inner.dbs).get(db).cloned()?;
        let st = lock(&entry.state);
        if st.served && st.status.state != SyncState::Disabled {
            st.live.clone()
        } else {
            None
        }
    }

    /// Every database this service was asked about, sorted.
    pub fn databases(&self) -> Vec<String> {
        let mut dbs: Vec<String> = lock(&self.inner.dbs).keys().cloned().collect();
        dbs.sort();
        dbs
    }

    /// Re-syncs every database the service knows that is not disabled (a
    /// disabled one is re-checked once `recheck_disabled_after` passed), all
    /// at once within the pull concurrency limit, and sums up: the manual
    /// trigger of the schedule. Per-database failures are in the summary.
    pub async fn sync_all(&self) -> SyncRun {
        self.sync_all_until(None).await
    }

    pub(crate) async fn sync_all_until(&self, stop: Option<watch::Receiver<bool>>) -> SyncRun {
        let started = Instant::now();
        let started_at_ms = now_ms();
        let runs = self.databases().into_iter().map(|db| {
            let stop = stop.clone();
            async move {
                let mode = Trigger::Refresh;
                self.sync(&db, mode, stop).await
            }
        });
        let statuses = futures::future::join_all(runs).await;
        let statuses = statuses
            .into_iter()
            .map(|mut s| {
                // Only what this run did counts in its sums.
                if s.last
                    .as_ref()
                    .is_some_and(|r| r.started_at_ms < started_at_ms)
                {
                    s.last = None;
                }
                s
            })
            .collect();
        SyncRun::from_statuses(started_at_ms, started.elapsed(), statuses)
    }

    /// The warmed views of `db`'s replica, when [`SyncService::local`]
    /// would hand it out: queries never wait on the network.
    pub fn views(&self, db: &str) -> Option<Views> {
        let entry = lock(&self.inner.dbs).get(db).cloned()?;
        let st = lock(&entry.state);
        if st.served {
            st.views.clone()
        } else {
            None
        }
    }

    /// The push worker of `db`'s live replica (see [`SyncConfig::push`]):
    /// its status, dead letters, and `flush_now`.
    pub fn outbox(&self, db: &str) -> Option<OutboxHandle> {
        let entry = lock(&self.inner.dbs).get(db).cloned()?;
        let worker = lock(&entry.state).worker.clone();
        worker
    }

    /// Stops every sync in flight at a batch boundary (each ends in state
    /// `error`, resumable) and waits for them to end, then gives each push
    /// worker up to [`SyncConfig::shutdown_drain`] to send what is
    /// queued (what is left stays durable for the next start). Later calls
    /// still work and start the workers again on their next sync.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let followers: Vec<_> = lock(&self.inner.dbs)
            .values()
            .filter_map(|e| lock(&e.state).follower.take())
            .collect();
        for follower in followers {
            // It waits on a long poll or on a sync (which runs on a task
            // of its own and is stopped below): nothing is cut mid-write.
            follower.abort();
            let _ = follower.await;
        }
        let inflight: Vec<SharedSync> = lock(&self.inner.dbs)
            .values()
            .filter_map(|e| lock(&e.state).inflight.clone())
            .collect();
        futures::future::join_all(inflight).await;
        let workers: Vec<OutboxHandle> = lock(&self.inner.dbs)
            .values()
            .filter_map(|e| {
                let mut st = lock(&e.state);
                st.announced = false;
                st.worker.take()
            })
            .collect();
        let drain = self.inner.config.shutdown_drain;
        for closed in futures::future::join_all(workers.iter().map(|w| w.close(drain))).await {
            if let Err(e) = closed {
                tracing::warn!(error = %e, "a push worker did not close cleanly; its queue stays on disk");
            }
        }
        self.inner.shutdown.send_replace(false);
    }

    /// Starts following `db`'s feed when its pull config is live and no
    /// follower runs yet.
    ///
    /// Why a follower syncs instead of running a live pull: a sync checks
    /// the remote for recreation before it pulls, warms the views and
    /// carries local writes; a live pull left running would merge a
    /// recreated database's revisions into the old replica (CouchDB 3
    /// answers an old `since` from its start). So the follower long-polls
    /// the feed after the replica's last pull and, when something is
    /// there, runs the sync `ensure_synced(Refresh::Force)` would (without
    /// the gate): a change is in the replica, its views warm, one long poll
    /// and one sync after it was made.
    fn follow_if_live(&self, db: &str, st: &mut DbState) {
        let config = st.pull.as_ref().unwrap_or(&self.inner.config.pull);
        let PullMode::Live { heartbeat } = config.mode else {
            return;
        };
        if st.follower.as_ref().is_some_and(|f| !f.is_finished()) {
            return;
        }
        let (service, db) = (Arc::downgrade(&self.inner), db.to_owned());
        st.follower = Some(tokio::spawn(follow(service, db, heartbeat)));
    }

    fn entry(&self, db: &str) -> Arc<Entry> {
        lock(&self.inner.dbs)
            .entry(db.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    db: db.to_owned(),
                    state: Mutex::new(DbState {
                        status: SyncStatus::new(db),
                        remote: None,
                        live: None,
                        served: false,
                        announced: false,
                        building: None,
                        retired: Vec::new(),
                        pull: None,
                        follower: None,
                        disabled_at: None,
                        gate_passed: false,
                        inflight: None,
                        views: None,
                        worker: None,
                    }),
                })
            })
            .clone()
    }

    /// Joins the sync of `db` in flight, or starts one.
    async fn sync(
        &self,
        db: &str,
        mode: Trigger,
        stop: Option<watch::Receiver<bool>>,
    ) -> SyncStatus {
        let entry = self.entry(db);
        let dead = reap(&mut lock(&entry.state));
        self.retire(&entry, dead).await;
        let shared = {
            let mut st = lock(&entry.state);
            if let Some(running) = &st.inflight {
                running.clone()
            } else {
                let recheck = self.inner.config.recheck_disabled_after;
                if st.status.state == SyncState::Disabled
                    && !mode.skips_gate()
                    && st.disabled_at.is_some_and(|t| t.elapsed() < recheck)
                {
                    return st.status.clone();
                }
                let task = tokio::spawn(self.clone().run(entry.clone(), mode, stop));
                let db = db.to_owned();
                let shared = async move {
                    task.await.unwrap_or_else(|e| {
                        let mut s = SyncStatus::new(&db);
                        s.state = SyncState::Error;
                        s.error = Some(SyncFailure::new(
                            FailureKind::Task,
                            format!("the sync task failed: {e}"),
                        ));
                        s
                    })
                }
                .boxed()
                .shared();
                st.inflight = Some(shared.clone());
                shared
            }
        };
        shared.await
    }

    /// The sync task: runs the sync until done or stopped, records the
    /// outcome, clears `inflight`.
    async fn run(
        self,
        entry: Arc<Entry>,
        mode: Trigger,
        stop: Option<watch::Receiver<bool>>,
    ) -> SyncStatus {
        let started = Instant::now();
        let started_at_ms = now_ms();
        // A panic anywhere in the sync (an app's hook, say) must not leave
        // `inflight` naming a task that is gone: every later call would
        // join it and get its failure, for the life of the process.
        let mut guard = InflightGuard {
            entry: entry.clone(),
            finished: false,
        };
        let mut shutdown = self.inner.shutdown.subscribe();
        let outcome = {
            let body = self.sync_db(&entry, mode, started_at_ms);
            let stopped = async {
                let schedule_stop = async {
                    match stop {
                        Some(mut rx) => {
                            let _ = rx.wait_for(|v| *v).await;
                        }
                        None => futures::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.wait_for(|v| *v) => {}
                    _ = schedule_stop => {}
                }
            };
            tokio::select! {
                outcome = body => outcome,
                // Dropping the sync drops its pull future: every committed
                // batch stays, nothing is half written (one transaction each).
                () = stopped => Err(SyncError::Stopped.into()),
            }
        };
        guard.finished = true;
        let mut st = lock(&entry.state);
        st.inflight = None;
        if outcome.is_ok() && st.status.state == SyncState::Ready {
            self.follow_if_live(&entry.db, &mut st);
        }
        match outcome {
            Ok(Some(mut report)) => {
                report.duration = started.elapsed();
                st.status.last = Some(report);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(db = %entry.db, error = %e, "sync failed");
                st.status.state = SyncState::Error;
                st.status.error = Some(SyncFailure::from(&e));
                if self.inner.config.on_failure == FailurePolicy::Destroy {
                    destroy_unserved(&self.inner.root, &entry.db, &mut st);
                }
            }
        }
        st.status.clone()
    }

    /// One sync of one database. `Ok(None)`: nothing was pulled (disabled,
    /// or ready and not stale).
    async fn sync_db(
        &self,
        entry: &Entry,
        mode: Trigger,
        started_at_ms: u64,
    ) -> Result<Option<SyncReport>> {
        let (was_ready, remote) = self.remote_of(entry)?;
        if !self.pass_gate(entry, &remote, mode).await? {
            return Ok(None);
        }
        if !was_ready {
            set_state(entry, SyncState::Syncing);
        }
        let just_checking = was_ready && !mode.pulls_when_ready();
        let Some(checked) = self.check_remote(entry, &remote, just_checking).await? else {
            return Ok(None);
        };
        set_state(entry, SyncState::Syncing);
        let pulled = self.pull(entry, &remote, checked).await?;
        let report = pulled.report(&entry.db, started_at_ms)?;
        let warmed = self.warm(entry, &pulled.target).await?;
        carry_outgoing(entry, &pulled.target).await?;
        let (became_live, dead) = self.go_live(entry, &pulled, &remote, warmed)?;
        if became_live {
            self.inner
                .hooks
                .replica_ready(&entry.db, &pulled.target, &remote);
        }
        self.retire(entry, dead).await;
        Ok(Some(report))
    }

    /// Whether `entry`'s replica was ready, and its remote (made once).
    fn remote_of(&self, entry: &Entry) -> Result<(bool, Remote)> {
        let mut st = lock(&entry.state);
        let remote = match &st.remote {
            Some(r) => r.clone(),
            None => {
                let r = self.remote_for(&entry.db)?;
                st.remote = Some(r.clone());
                r
            }
        };
        Ok((st.status.state == SyncState::Ready, remote))
    }

    /// Asks the gate, unless forced or it said yes before: `Ok(false)` when
    /// it says disabled (the state is then `disabled`).
    async fn pass_gate(&self, entry: &Entry, remote: &Remote, mode: Trigger) -> Result<bool> {
        let gate_passed = mode.skips_gate() || lock(&entry.state).gate_passed;
        if !gate_passed {
            let config = &self.inner.config;
            set_state(entry, SyncState::CheckingConfig);
            match gate::check(remote, &config.gate).await {
                gate::Answer::Enabled => {}
                gate::Answer::Unreachable(e) if self.has_replica(&entry.db) => {
                    // Offline with a replica on disk: an error, not a
                    // "disabled", so the replica can still be read.
                    self.target(entry).await?;
                    return Err(e.into());
                }
                answer => {
                    let reason = match answer {
                        gate::Answer::Unreachable(e) => {
                            format!("cannot read {}: {e}", config.gate.doc_id)
                        }
                        gate::Answer::Disabled(reason) => reason,
                        gate::Answer::Enabled => String::new(),
                    };
                    disable(entry, reason);
                    return Ok(false);
                }
            }
        }
        lock(&entry.state).gate_passed = true;
        Ok(true)
    }

    /// Reads the remote's identity facts, opens the target and judges it
    /// against them, starting a rebuild if the remote was recreated.
    /// `Ok(None)` when there is nothing to pull: `just_checking` a ready
    /// replica that is not stale, or whose check cannot reach the remote.
    async fn check_remote(
        &self,
        entry: &Entry,
        remote: &Remote,
        just_checking: bool,
    ) -> Result<Option<Checked>> {
        let checked = async {
            let facts = stale::facts(remote, Some(&self.inner.config.epoch_doc_id)).await?;
            let target = self.target(entry).await?;
            let rebuilt = self.staleness(entry, &target, remote, &facts).await?;
            Ok::<_, Error>(Checked {
                facts,
                target,
                rebuilt,
            })
        }
        .await;
        let mut checked = match checked {
            Ok(checked) => checked,
            // As in the seed, a ready replica whose check cannot reach the
            // remote stays ready: it is the best copy there is.
            Err(e) if just_checking => {
                tracing::warn!(db = entry.db.as_str(), error = %e, "cannot check the remote; the replica stays ready");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if checked.rebuilt.is_some() {
            // Old revisions must not reach the recreated database: stop
            // pushing them now; what is queued is carried over at the swap.
            retire_worker(entry);
            checked.target = self.start_rebuild(entry).await?;
        } else if just_checking {
            return Ok(None);
        }
        Ok(Some(checked))
    }

    /// Pulls into the checked target, within the service's pull
    /// concurrency. A remote that refuses the replica's past (see
    /// [`recreation_error`]) turns the sync into a rebuild, once.
    async fn pull(&self, entry: &Entry, remote: &Remote, checked: Checked) -> Result<Pulled> {
        let Checked {
            facts,
            mut target,
            mut rebuilt,
        } = checked;
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Stopped)?;
        let pull_config = lock(&entry.state)
            .pull
            .clone()
            .unwrap_or(self.inner.config.pull.clone());
        // A sync ends with a ready replica, so its own pull is one-shot;
        // a live database is followed between syncs (`follow`).
        let mut pull_config = pull_config;
        pull_config.mode = PullMode::OneShot;
        loop {
            if stale::is_empty(&target)? {
                let identity = serde_json::to_value(Identity::of(&facts)).unwrap_or_default();
                target.put_local(IDENTITY_DOC, &identity).await?;
            }
            let before = Counts::of(&target)?;
            let result = pull(&target, remote, &pull_config)
                .on_progress(|p| {
                    lock(&entry.state).status.docs_replicated = Some(p.docs_written);
                })
                .await;
            match result {
                Ok(result) => {
                    drop(permit);
                    return Ok(Pulled {
                        result,
                        before,
                        target,
                        rebuilt,
                    });
                }
                Err(e) if rebuilt.is_none() && recreation_error(&e).is_some() => {
                    tracing::warn!(db = entry.db.as_str(), error = %e, "the remote refuses the replica's checkpoint or binding; rebuilding");
                    rebuilt = recreation_error(&e);
                    retire_worker(entry);
                    target = self.start_rebuild(entry).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Builds and warms the views of `target` (and the app's, through
    /// [`SyncHooks::warm`]), timed.
    async fn warm(&self, entry: &Entry, target: &Replica) -> Result<Warmed> {
        set_state(entry, SyncState::WarmingViews);
        let warm_started = Instant::now();
        let config = &self.inner.config;
        let views = {
            let (replica, defs) = (target.clone(), config.views.clone());
            let design = config.warm_design_docs;
            blocking(move || {
                let views = Views::open(&replica, defs)?;
                views.warm()?;
                if design {
                    let warmed = crate::query::Query::open(&replica)?.warm()?;
                    for f in &warmed.failed {
                        tracing::warn!(view = %f.view, error = %f.error, "design-doc view not warmed");
                    }
                }
                Ok(views)
            })
            .await?
        };
        self.inner.hooks.warm(target).await?;
        Ok(Warmed {
            views,
            took: warm_started.elapsed(),
        })
    }

    /// Makes the pulled replica the one served: swaps a rebuild in, starts
    /// its push worker if needed, and marks it ready. Returns whether it
    /// became live (to be announced) and the retired replicas to delete.
    ///
    /// Not `async` on purpose: a sync stopped at an await point (the
    /// schedule's stop, a shutdown) can then never leave a live replica
    /// announced without its worker.
    fn go_live(
        &self,
        entry: &Entry,
        pulled: &Pulled,
        remote: &Remote,
        warmed: Warmed,
    ) -> Result<(bool, Vec<Replica>)> {
        let target = &pulled.target;
        let mut st = lock(&entry.state);
        let swapped = if st.building.is_some() {
            self.inner.root.make_current(&entry.db, target.path())?;
            st.building = None;
            if let Some(old) = st.live.replace(target.clone()) {
                st.retired.push(old);
            }
            tracing::info!(db = entry.db.as_str(), path = %target.path().display(), "rebuilt replica swapped in");
            true
        } else {
            false
        };
        let became_live = swapped || !st.announced;
        if became_live || st.worker.is_none() {
            self.spawn_worker(&mut st, target, remote);
        }
        st.views = Some(warmed.views);
        st.served = true;
        st.announced = true;
        st.status.state = SyncState::Ready;
        st.status.error = None;
        st.status.docs_replicated = Some(pulled.result.docs_written);
        st.status.sync_time = Some(pulled.result.timings.total);
        st.status.view_warm_time = Some(warmed.took);
        Ok((became_live, reap(&mut st)))
    }

    /// Starts the push worker of `target` ([`SyncConfig::push`]), retiring
    /// the one before it.
    fn spawn_worker(&self, st: &mut DbState, target: &Replica, remote: &Remote) {
        let config = &self.inner.config;
        let Some(push) = &config.push else {
            return;
        };
        let push = push
            .clone()
            .with_identity_checks(Some(config.epoch_doc_id.clone()), config.revs_probe_docs);
        let worker = Outbox::spawn(target.clone(), remote.clone(), push);
        if let Some(old) = st.worker.replace(worker) {
            // Every clone of the old handle stops with it.
            old.retire();
        }
    }

    /// The replica a sync pulls into: the rebuild in progress if there is
    /// one, else the live replica (created as generation 1 if needed).
    async fn target(&self, entry: &Entry) -> Result<Replica> {
        {
            let st = lock(&entry.state);
            if let Some(b) = &st.building {
                return Ok(b.clone());
            }
            if let Some(l) = &st.live {
                return Ok(l.clone());
            }
        }
        let root = self.inner.root.clone();
        let db = entry.db.clone();
        let config = self.inner.config.replica.clone();
        let compact_above = self.inner.config.compact_above;
        let replica = blocking(move || {
            root.prepare(&db)?;
            let path = match root.current(&db)? {
                Some(path) => path,
                None => {
                    let path = root.next_generation(&db)?;
                    root.make_current(&db, &path)?;
                    path
                }
            };
            // Nothing holds the live replica yet in this process: the one
            // moment an automatic compaction can have it to itself.
            let (replica, compacted) = Replica::open_compacted(path, config, compact_above)?;
            if let Some(c) = compacted {
                tracing::info!(%db, before = c.bytes_before, after = c.bytes_after, "compacted the live replica");
            }
            Ok(replica)
        })
        .await?;
        // Replicas a swap retired but a crash kept: their unpushed writes
        // move to the live one before they go.
        let (root, db, live) = (self.inner.root.clone(), entry.db.clone(), replica.clone());
        let config = self.inner.config.replica.clone();
        let leftovers = blocking(move || {
            for path in root.retired_generations(&db)? {
                let old = Replica::open(&path, config.clone())?;
                if let Err(e) = carry_and_delete(old, Some(&live)) {
                    tracing::warn!(path = %path.display(), error = %e, "a retired replica is kept");
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = leftovers {
            tracing::warn!(db = %entry.db, error = %e, "cannot carry over a retired replica");
        }
        // A replica that completed a pull before (in an earlier process) is
        // a consistent copy to read even if this sync fails.
        let completed = replica
            .stored_last_pull::<serde::de::IgnoredAny>()?
            .is_some();
        let mut st = lock(&entry.state);
        st.served |= completed;
        st.live = Some(replica.clone());
        Ok(replica)
    }

    /// Why `target` must be rebuilt, if it must.
    async fn staleness(
        &self,
        entry: &Entry,
        target: &Replica,
        remote: &Remote,
        facts: &RemoteFacts,
    ) -> Result<Option<RebuildReason>> {
        if stale::is_empty(target)? {
            return Ok(None);
        }
        let config = &self.inner.config;
        let reason = stale::judge(
            target,
            remote,
            facts,
            Some(&config.epoch_doc_id),
            config.revs_probe_docs,
        )
        .await?;
        if let Some(reason) = &reason {
            tracing::info!(db = %entry.db, ?reason, "the remote database was recreated; rebuilding the replica");
        }
        Ok(reason)
    }

    /// Deletes retired replicas after carrying their local writes to the
    /// live one, off the async threads.
    async fn retire(&self, entry: &Entry, dead: Vec<Replica>) {
        if dead.is_empty() {
            return;
        }
        let live = lock(&entry.state).live.clone();
        let (hooks, db) = (self.inner.hooks.clone(), entry.db.clone());
        let done = blocking(move || {
            for old in dead {
                let path = old.path().to_path_buf();
                match carry_and_delete(old, live.as_ref()) {
                    Ok(()) => hooks.replica_retired(&db, &path),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "a retired replica is kept; the next start carries its writes over");
                    }
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "retiring replicas failed");
        }
    }

    /// Opens a fresh generation beside the live replica (dropping a stale
    /// rebuild in progress) and makes it the sync's target.
    async fn start_rebuild(&self, entry: &Entry) -> Result<Replica> {
        let old_building = lock(&entry.state).building.take();
        let root = self.inner.root.clone();
        let db = entry.db.clone();
        let config = self.inner.config.replica.clone();
        let replica = blocking(move || {
            if let Some(old) = old_building {
                let path = old.path().to_path_buf();
                drop(old);
                remove_dir(&path)?;
            }
            let path = root.next_generation(&db)?;
            Ok(Replica::open(path, config)?)
        })
        .await?;
        lock(&entry.state).building = Some(replica.clone());
        Ok(replica)
    }

    /// True when the sync root has a live replica of `db`.
    fn has_replica(&self, db: &str) -> bool {
        self.inner
            .root
            .current(db)
            .is_ok_and(|c| c.is_some_and(|p| p.is_dir()))
    }

    fn remote_for(&self, db: &str) -> Result<Remote> {
        let url = format!("{}/{}", self.inner.server, utf8_percent_encode(db, SEGMENT));
        let endpoint = Endpoint::parse(&url).map_err(|e| match e {
            RemoteError::InvalidUrl { reason, .. } => RemoteError::InvalidUrl {
                url: format!(
                    "{}{}",
                    self.inner.server_display,
                    utf8_percent_encode(db, SEGMENT)
                ),
                reason,
            },
            other => other,
        })?;
        Ok(Remote::new(endpoint, self.inner.config.remote.clone())?)
    }
}

/// What [`SyncService::check_remote`] found: the sync pulls into `target`.
struct Checked {
    facts: RemoteFacts,
    target: Replica,
    /// Why `target` is a rebuild, if it is.
    rebuilt: Option<RebuildReason>,
}

/// A completed pull, and what it is compared with for the report.
struct Pulled {
    result: PullResult,
    before: Counts,
    target: Replica,
    rebuilt: Option<RebuildReason>,
}

impl Pulled {
    /// The sync's report (its duration is added when the task ends).
    fn report(&self, db: &str, started_at_ms: u64) -> Result<SyncReport> {
        for failure in &self.result.failures {
            tracing::warn!(db, id = %failure.id, error = %failure.error, reason = %failure.reason, "document skipped");
        }
        let mut report = self.before.report(&self.target)?;
        report.skipped = self.result.doc_write_failures;
        report.docs_written = self.result.docs_written;
        report.rebuilt = self.rebuilt.clone();
        report.started_at_ms = started_at_ms;
        Ok(report)
    }
}

/// The warmed views of a pulled replica, and the time it took.
struct Warmed {
    views: Views,
    took: Duration,
}

/// Live and deleted counts and the update sequence before a pull, to
/// classify what it changed.
struct Counts {
    seq: u64,
    total: u64,
}

impl Counts {
    fn of(replica: &Replica) -> Result<Self> {
        Ok(Counts {
            seq: replica.update_seq()?,
            total: replica.doc_count()? + replica.deleted_count()?,
        })
    }

    /// Deleted: changed documents whose winner is now a tombstone.
    /// Created: changed live documents with ids the replica had never seen
    /// (at most the growth of live plus deleted documents; a new id that
    /// arrives as a tombstone counts as deleted). Updated: the other changed
    /// live documents.
    fn report(&self, replica: &Replica) -> Result<SyncReport> {
        let (mut live, mut deleted) = (0u64, 0u64);
        for change in replica.changes(self.seq) {
            if change?.doc.deleted {
                deleted += 1;
            } else {
                live += 1;
            }
        }
        let total = replica.doc_count()? + replica.deleted_count()?;
        let created = total.saturating_sub(self.total).min(live);
        Ok(SyncReport {
            created,
            deleted,
            updated: live - created,
            ..SyncReport::default()
        })
    }
}

/// Clears `inflight` (and records a failure) when a sync task ends by
/// unwinding instead of returning.
struct InflightGuard {
    entry: Arc<Entry>,
    finished: bool,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut st = lock(&self.entry.state);
        st.inflight = None;
        st.status.state = SyncState::Error;
        st.status.error = Some(SyncFailure::new(
            FailureKind::Task,
            "the sync task panicked (see the log); the next sync starts afresh",
        ));
    }
}

/// The follower of a live database (see `SyncService::follow_if_live`):
/// long polls after the replica's last pull, a sync when one answers with
/// a change; transient failures wait the client's backoff. It holds the
/// service weakly, so a dropped service ends it; `shutdown` aborts it.
async fn follow(service: std::sync::Weak<Inner>, db: String, heartbeat: Duration) {
    let mut failures = 0u32;
    loop {
        let Some((remote, since)) = follow_from(&service, &db) else {
            return;
        };
        match remote.wait_for_change(&since, heartbeat).await {
            Ok(false) => failures = 0,
            Ok(true) => {
                failures = 0;
                let Some(inner) = service.upgrade() else {
                    return;
                };
                let mode = Trigger::Refresh;
                let status = SyncService { inner }.sync(&db, mode, None).await;
                if status.state != SyncState::Ready {
                    tracing::warn!(db, state = ?status.state, "a live database's sync did not end ready; its follower stops until the next sync");
                    return;
                }
            }
            Err(e) if e.is_transient() => {
                failures = failures.saturating_add(1);
                let pause = remote.live_pause(failures, &e);
                tracing::warn!(db, error = %e, ?pause, "following the feed failed; asking again after a pause");
                tokio::time::sleep(pause).await;
            }
            Err(e) => {
                tracing::warn!(db, error = %e, "following the feed failed; the follower stops until the next sync");
                return;
            }
        }
    }
}

/// The remote of a followed database and where its replica's last pull
/// ended; `None` once the service is gone or the database has no ready
/// replica.
fn follow_from(service: &std::sync::Weak<Inner>, db: &str) -> Option<(Remote, crate::Seq)> {
    let svc = SyncService {
        inner: service.upgrade()?,
    };
    let entry = svc.entry(db);
    let st = lock(&entry.state);
    let (remote, replica) = (st.remote.clone()?, st.live.as_ref()?);
    let last = crate::replicate::last_pull(replica).ok()??;
    Some((remote, last.last_seq))
}

/// Stops the push worker of `entry`'s live replica, every clone of its
/// handle included.
fn retire_worker(entry: &Entry) {
    if let Some(worker) = lock(&entry.state).worker.take() {
        worker.retire();
    }
}

/// Records the gate's "disabled" and why.
fn disable(entry: &Entry, reason: String) {
    tracing::info!(db = entry.db.as_str(), %reason, "local sync disabled");
    let mut st = lock(&entry.state);
    st.status.state = SyncState::Disabled;
    st.status.error = Some(SyncFailure::new(FailureKind::Disabled, reason));
    st.disabled_at = Some(Instant::now());
}

/// Carries the edits made on the live replica a rebuild replaces over to
/// the rebuild, before the swap.
async fn carry_outgoing(entry: &Entry, target: &Replica) -> Result<()> {
    let building = lock(&entry.state).building.is_some();
    let outgoing = lock(&entry.state).live.clone().filter(|_| building);
    if let Some(old) = outgoing {
        let (from, to) = (old, target.clone());
        blocking(move || Ok(carry_local_writes(&from, &to)?)).await?;
    }
    Ok(())
}

fn set_state(entry: &Entry, state: SyncState) {
    lock(&entry.state).status.state = state;
}

/// A pull error that means the replica's past does not belong to this
/// database: the server refused the checkpoint (400 on `_changes`), or the
/// replica is bound to another server.
fn recreation_error(e: &Error) -> Option<RebuildReason> {
    match e {
        Error::WrongRemote { .. } => Some(RebuildReason::ServerUuid),
        Error::Remote(RemoteError::Http { status, url, .. })
            if status.as_u16() == 400 && url.contains("/_changes") =>
        {
            Some(RebuildReason::Checkpoint)
        }
        _ => None,
    }
}

/// Takes the retired replicas no reader holds any more out of the state
/// (under its lock); [`SyncService::retire`] deletes them once the lock is
/// released.
fn reap(st: &mut DbState) -> Vec<Replica> {
    let mut dead = Vec::new();
    st.retired.retain(|r| {
        if r.handle_count() > 1 {
            return true;
        }
        dead.push(r.clone());
        false
    });
    dead
}

/// Carries what `old` still owes its remote over to `live` (see
/// `carry.rs`), then deletes `old`'s directory. Blocking.
///
/// A replica whose writes cannot be carried is kept on disk, never deleted
/// with them: the next start carries it again.
fn carry_and_delete(old: Replica, live: Option<&Replica>) -> Result<()> {
    if let Some(live) = live {
        carry_local_writes(&old, live)?;
    } else if old.outbox().len()? > 0 {
        return Err(SyncError::io(
            old.path(),
            std::io::Error::other(
                "it holds unpushed writes and there is no replica to carry them to",
            ),
        )
        .into());
    }
    let path = old.path().to_path_buf();
    drop(old);
    remove_dir(&path)?;
    Ok(())
}

/// The seed's destroy-on-failure, for replicas never handed out: a failed
/// rebuild or a first sync. A replica that was ready keeps serving.
fn destroy_unserved(root: &SyncRoot, db: &str, st: &mut DbState) {
    let victim = match st.building.take() {
        Some(b) => Some(b),
        None if !st.served => st.live.take(),
        None => None,
    };
    if let Some(replica) = victim {
        let path = replica.path().to_path_buf();
        drop(replica);
        if let Err(e) = remove_dir(&path) {
            tracing::warn!(db, error = %e, "cannot delete the failed replica");
        } else if root.current(db).ok().flatten().as_deref() == Some(path.as_path()) {
            // CURRENT names a directory that is gone: the next sync starts a
            // new generation and points CURRENT at it.
            let _ = std::fs::remove_file(root.db_dir(db).join("CURRENT"));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the status half
    // updated in a way that matters; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::StoreError::Cancelled(e.to_string()))?
}
