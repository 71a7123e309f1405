//! Settings of a sync service: replication defaults (overridable per
//! database), the sync gate, concurrency, failure policy, staleness probes.
//! Plain data, validated once when the service is opened.

use crate::outbox::OutboxConfig;
use crate::views::View;
use crate::{Error, PullConfig, RemoteConfig, ReplicaConfig, Result};
use std::time::Duration;

/// Where the remote says whether a database may be synced (the seed's
/// `CourseConfig.localSync.enabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateConfig {
    /// The id of the remote's config document.
    pub doc_id: String,
    /// Dotted path of the field that must be JSON `true` (`a.b` is
    /// `doc["a"]["b"]`).
    pub field_path: String,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            doc_id: "CourseConfig".to_owned(),
            field_path: "localSync.enabled".to_owned(),
        }
    }
}

impl GateConfig {
    /// A gate on another document and field.
    pub fn new(doc_id: impl Into<String>, field_path: impl Into<String>) -> Self {
        GateConfig {
            doc_id: doc_id.into(),
            field_path: field_path.into(),
        }
    }
}

/// What happens to a replica whose sync failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Keep what was committed (every batch is consistent); the next sync
    /// resumes from the replica's checkpoint.
    #[default]
    KeepPartial,
    /// Delete the replica being built, as the seed does; the next sync
    /// starts over. A replica that was once ready keeps serving.
    Destroy,
}

/// Settings of a [`SyncService`](super::SyncService).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SyncConfig {
    /// Replication settings of every database without its own
    /// ([`SyncService::set_pull_config`](super::SyncService::set_pull_config));
    /// the seed's 1000/5 by default.
    pub pull: PullConfig,
    /// Databases pulling at the same time (at least 1).
    pub max_concurrent_pulls: usize,
    /// The sync gate.
    pub gate: GateConfig,
    /// How long a `disabled` answer stands before a call checks again.
    pub recheck_disabled_after: Duration,
    /// What a failed sync leaves.
    pub on_failure: FailurePolicy,
    /// Id of the remote document holding `{"epoch": <number>}`.
    pub epoch_doc_id: String,
    /// Documents of the replica whose revisions are checked against the
    /// remote (`_revs_diff`) to catch a recreated database without an epoch
    /// document; 0 turns the probe off.
    pub revs_probe_docs: usize,
    /// Settings of each replica store.
    pub replica: ReplicaConfig,
    /// Settings of the HTTP client of each database.
    pub remote: RemoteConfig,
    /// The views warmed after every pull (state `warming-views`) and handed
    /// out by [`SyncService::views`](super::SyncService::views); the
    /// built-in `elo` and `getTags` by default.
    pub views: Vec<View>,
    /// Whether the views of the replica's design documents (and its Mango
    /// indexes) are warmed too, after `views` ([`crate::query::Query::warm`]);
    /// true by default. A design document whose code fails is logged and
    /// left behind; the replica still becomes ready.
    pub warm_design_docs: bool,
    /// The push worker run for each ready replica, pushing its local writes
    /// ([`Replica::put`](crate::Replica::put) and friends); `None` runs
    /// none (a read-only app).
    pub push: Option<OutboxConfig>,
    /// How long [`SyncService::shutdown`](super::SyncService::shutdown)
    /// lets each push worker send what is queued before it stops (what is
    /// left stays durable for the next start).
    pub shutdown_drain: Duration,
    /// The automatic compaction of each live replica, checked when the
    /// service first opens it in this process (before anything holds it):
    /// compacted when its size on disk is above this many times its size
    /// after its first pull or last compaction
    /// ([`Replica::open_compacted`](crate::Replica::open_compacted)); `None`
    /// never compacts. 1.25 by default.
    pub compact_above: Option<f64>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            pull: PullConfig::default(),
            max_concurrent_pulls: 4,
            gate: GateConfig::default(),
            recheck_disabled_after: Duration::from_secs(10 * 60),
            on_failure: FailurePolicy::default(),
            epoch_doc_id: "db-epoch".to_owned(),
            revs_probe_docs: 32,
            replica: ReplicaConfig::default(),
            remote: RemoteConfig::default(),
            views: crate::views::course::views(),
            warm_design_docs: true,
            push: Some(OutboxConfig::default()),
            shutdown_drain: Duration::from_secs(5),
            compact_above: Some(crate::maintenance::DEFAULT_COMPACT_ABOVE),
        }
    }
}

impl SyncConfig {
    /// The same settings with another automatic compaction factor (`None`:
    /// off).
    pub fn with_compact_above(mut self, factor: Option<f64>) -> Self {
        self.compact_above = factor;
        self
    }

    /// The same settings with another default replication setting.
    pub fn with_pull(mut self, pull: PullConfig) -> Self {
        self.pull = pull;
        self
    }

    /// The same settings with another pull concurrency limit.
    pub fn with_max_concurrent_pulls(mut self, n: usize) -> Self {
        self.max_concurrent_pulls = n;
        self
    }

    /// The same settings with another gate.
    pub fn with_gate(mut self, gate: GateConfig) -> Self {
        self.gate = gate;
        self
    }

    /// The same settings with another re-check interval for disabled databases.
    pub fn with_recheck_disabled_after(mut self, after: Duration) -> Self {
        self.recheck_disabled_after = after;
        self
    }

    /// The same settings with another failure policy.
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// The same settings with another HTTP client configuration.
    pub fn with_remote(mut self, remote: RemoteConfig) -> Self {
        self.remote = remote;
        self
    }

    /// The same settings with another replica store configuration.
    pub fn with_replica(mut self, replica: ReplicaConfig) -> Self {
        self.replica = replica;
        self
    }

    /// The same settings with other views (add
    /// [`views::course::views`](crate::views::course::views) to keep the built-ins).
    pub fn with_views(mut self, views: Vec<View>) -> Self {
        self.views = views;
        self
    }

    /// Whether design documents' views are warmed before `ready`.
    pub fn with_design_doc_warm(mut self, warm: bool) -> Self {
        self.warm_design_docs = warm;
        self
    }

    /// The same settings with other push-worker settings (`None`: no worker).
    pub fn with_push(mut self, push: Option<OutboxConfig>) -> Self {
        self.push = push;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_concurrent_pulls == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_concurrent_pulls",
                value: "0".to_owned(),
                expected: "at least 1",
            });
        }
        if self.gate.doc_id.is_empty() {
            return Err(Error::InvalidSetting {
                setting: "gate.doc_id",
                value: "\"\"".to_owned(),
                expected: "a document id",
            });
        }
        if self.gate.field_path.split('.').any(str::is_empty) {
            return Err(Error::InvalidSetting {
                setting: "gate.field_path",
                value: format!("{:?}", self.gate.field_path),
                expected: "a dotted path without empty segments",
            });
        }
        Ok(())
    }
}

/// Settings of a scheduled sync ([`SyncService::schedule`](super::SyncService::schedule)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleConfig {
    /// Time between runs.
    pub every: Duration,
    /// Each wait is `every` plus or minus up to this much, at random, so
    /// that many clients started together do not hit the server together.
    pub jitter: Duration,
    /// Run once right away instead of after the first wait.
    pub run_at_start: bool,
}

impl ScheduleConfig {
    /// Every `every`, with a tenth of it as jitter, first run after one wait.
    pub fn every(every: Duration) -> Self {
        ScheduleConfig {
            every,
            jitter: every / 10,
            run_at_start: false,
        }
    }

    /// The same schedule with another jitter.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same schedule, running once at start.
    pub fn run_at_start(mut self, yes: bool) -> Self {
        self.run_at_start = yes;
        self
    }
}

/// What [`SyncService::ensure_synced`](super::SyncService::ensure_synced)
/// does with a database that is already `ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Refresh {
    /// Sync only what is not ready yet: a ready replica is checked against
    /// the remote (recreated? then rebuilt) but not pulled again, and the
    /// sync gate decides whether a first sync happens.
    #[default]
    IfNeeded,
    /// Pull again even when ready, and do not ask the sync gate.
    Force,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds() {
        let c = SyncConfig::default();
        assert_eq!(c.pull, PullConfig::default());
        assert_eq!(c.gate.doc_id, "CourseConfig");
        assert_eq!(c.gate.field_path, "localSync.enabled");
        assert!(c.validate().is_ok());
        let setting = |c: SyncConfig| match c.validate() {
            Err(Error::InvalidSetting { setting, .. }) => Some(setting),
            _ => None,
        };
        assert_eq!(
            setting(c.clone().with_max_concurrent_pulls(0)),
            Some("max_concurrent_pulls")
        );
        assert_eq!(
            setting(c.clone().with_gate(GateConfig::new("", "a"))),
            Some("gate.doc_id")
        );
        for path in ["a..b", "", ".a"] {
            assert_eq!(
                setting(c.clone().with_gate(GateConfig::new("x", path))),
                Some("gate.field_path"),
                "{path:?}"
            );
        }
        let e = c.with_gate(GateConfig::new("x", "a..b")).validate();
        assert_eq!(
            e.map_err(|e| e.to_string()).err().as_deref(),
            Some(
                r#"invalid setting gate.field_path = "a..b": a dotted path without empty segments"#
            )
        );
    }
}
