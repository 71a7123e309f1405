//! What the sync service reports: a database's state and figures, one
//! sync's report, one scheduled run's summary. Plain serializable data.

use serde::Serialize;
use std::time::Duration;

/// Where a database is in its sync (the seed's `CourseSyncState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SyncState {
    /// No sync was asked for yet.
    NotStarted,
    /// Reading the remote's config document (the sync gate).
    CheckingConfig,
    /// Pulling (or rebuilding) the replica.
    Syncing,
    /// Running the warm-up hook on the pulled replica.
    WarmingViews,
    /// The replica is complete as of the last sync and can be read.
    Ready,
    /// The remote's config does not enable local sync (or could not be read).
    Disabled,
    /// The last sync failed; see [`SyncStatus::error`].
    Error,
}

impl SyncState {
    /// The state's name as the seed spells it (`not-started`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::NotStarted => "not-started",
            SyncState::CheckingConfig => "checking-config",
            SyncState::Syncing => "syncing",
            SyncState::WarmingViews => "warming-views",
            SyncState::Ready => "ready",
            SyncState::Disabled => "disabled",
            SyncState::Error => "error",
        }
    }
}

impl std::fmt::Display for SyncState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of one database (the seed's `CourseSyncStatus`), with the
/// figures of its last sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyncStatus {
    /// The database name.
    pub db: String,
    /// Where it is.
    pub state: SyncState,
    /// Revisions written by the last sync.
    pub docs_replicated: Option<u64>,
    /// Time of the last sync's pull (`sync_time_ms` in JSON).
    #[serde(rename = "sync_time_ms", serialize_with = "crate::millis::option")]
    pub sync_time: Option<Duration>,
    /// Time of the last warm-up (`view_warm_time_ms` in JSON).
    #[serde(rename = "view_warm_time_ms", serialize_with = "crate::millis::option")]
    pub view_warm_time: Option<Duration>,
    /// Why the last sync failed (state `error`), or why it is disabled.
    pub error: Option<SyncFailure>,
    /// The last sync's report.
    pub last: Option<SyncReport>,
}

impl SyncStatus {
    pub(crate) fn new(db: &str) -> Self {
        SyncStatus {
            db: db.to_owned(),
            state: SyncState::NotStarted,
            docs_replicated: None,
            sync_time: None,
            view_warm_time: None,
            error: None,
            last: None,
        }
    }
}

/// Why a database's last sync failed, or why its sync is disabled
/// ([`SyncStatus::error`]): where it came from, CouchDB's status and
/// `error` word when the remote answered with one, and a readable reason
/// that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyncFailure {
    /// Where the failure came from.
    pub kind: FailureKind,
    /// The HTTP status, when the remote (or a query) answered with one.
    pub status: Option<u16>,
    /// CouchDB's `error` word (`unauthorized`, `not_found`, ...), when
    /// there is one.
    pub error: Option<String>,
    /// What happened, and what to do about it.
    pub reason: String,
}

/// Where a [`SyncFailure`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The sync gate: the remote's config does not enable local sync, or
    /// could not be read for a first sync (state `disabled`).
    Disabled,
    /// Talking to the remote.
    Remote,
    /// The local replica.
    Store,
    /// Warming a view or a design-doc view.
    View,
    /// The sync root's files, or the sync was stopped.
    Sync,
    /// A setting, or a replica bound to another database.
    Config,
    /// The sync task itself died (a panic, see the log); the next sync
    /// starts afresh.
    Task,
}

impl SyncFailure {
    pub(crate) fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        SyncFailure {
            kind,
            status: None,
            error: None,
            reason: reason.into(),
        }
    }
}

impl From<&crate::Error> for SyncFailure {
    fn from(e: &crate::Error) -> Self {
        use crate::remote::RemoteError;
        use crate::Error;
        let mut failure = SyncFailure::new(FailureKind::Remote, e.to_string());
        match e {
            Error::Remote(r) => {
                failure.status = r.status().map(|s| s.as_u16());
                if let RemoteError::Http { error, .. } = r {
                    failure.error = Some(error.clone());
                }
            }
            Error::Store(_) => failure.kind = FailureKind::Store,
            Error::View(_) => failure.kind = FailureKind::View,
            Error::Query(q) => {
                failure.kind = FailureKind::View;
                failure.status = Some(q.status());
                failure.error = Some(q.error().to_owned());
            }
            Error::Sync(_) => failure.kind = FailureKind::Sync,
            _ => failure.kind = FailureKind::Config,
        }
        failure
    }
}

impl std::fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

pub use crate::identity::RebuildReason;

/// What one sync of one database did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyncReport {
    /// Documents new to the replica (ids it had never seen).
    pub created: u64,
    /// Documents changed whose winner is live and that the replica had.
    pub updated: u64,
    /// Documents whose winner is now a tombstone.
    pub deleted: u64,
    /// Revisions that could not be stored (logged; retried by the next sync).
    pub skipped: u64,
    /// Revisions written.
    pub docs_written: u64,
    /// The replica was rebuilt from scratch, and why.
    pub rebuilt: Option<RebuildReason>,
    /// Whole sync: gate, checks, pull, warm-up (`duration_ms` in JSON).
    #[serde(rename = "duration_ms", with = "crate::millis")]
    pub duration: Duration,
    /// When the sync started, Unix milliseconds.
    pub started_at_ms: u64,
}

/// The outcome of one run over many databases (a scheduled or manual run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyncRun {
    /// When the run started, Unix milliseconds.
    pub started_at_ms: u64,
    /// Its duration (`duration_ms` in JSON).
    #[serde(rename = "duration_ms", with = "crate::millis")]
    pub duration: Duration,
    /// Sums over the databases.
    pub created: u64,
    /// Sums over the databases.
    pub updated: u64,
    /// Sums over the databases.
    pub deleted: u64,
    /// Sums over the databases.
    pub skipped: u64,
    /// Databases whose sync failed.
    pub failed: u64,
    /// Each database's status after the run.
    pub dbs: Vec<SyncStatus>,
}

impl SyncRun {
    pub(crate) fn from_statuses(
        started_at_ms: u64,
        duration: Duration,
        dbs: Vec<SyncStatus>,
    ) -> Self {
        let mut run = SyncRun {
            started_at_ms,
            duration,
            created: 0,
            updated: 0,
            deleted: 0,
            skipped: 0,
            failed: 0,
            dbs,
        };
        for s in &run.dbs {
            if s.state == SyncState::Error {
                run.failed += 1;
            }
            if let Some(r) = &s.last {
                run.created += r.created;
                run.updated += r.updated;
                run.deleted += r.deleted;
                run.skipped += r.skipped;
            }
        }
        run
    }
}
