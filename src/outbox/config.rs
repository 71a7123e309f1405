//! Settings of the push worker and its status policy: what each answer of
//! the remote means for the queued edits. Pure data, no I/O.

use crate::RemoteError;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the worker does about a refused push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushAction {
    /// Move the documents to the dead-letter list with the reason; the rest
    /// of the queue goes on.
    DeadLetter,
    /// A batch of several documents is pushed again in halves; a single
    /// document is dead-lettered (the one that is too large or invalid).
    Split,
    /// Stop this round and retry the same entries later, in order:
    /// exponential backoff with jitter, or the server's `Retry-After`.
    Backoff,
    /// Stop pushing until [`crate::outbox::OutboxHandle::resume`] (or a restart),
    /// and show the error in the status: it needs a person (credentials,
    /// permissions, a missing database).
    Pause,
}

/// How answers map to actions. The defaults are the issue's policy:
/// per-document `forbidden`/`unauthorized` (and any other per-document
/// error) are dead-lettered; a 400, 412 or 413 splits the batch down to
/// the offending document, which is dead-lettered (after a `missing_stub`,
/// once it was sent again with its attachments inline); 429, 408 and 5xx back off;
/// a whole-request 401, 403 or 404 pauses; timeouts and broken connections
/// back off.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusPolicy {
    /// Per-document errors inside a successful `_bulk_docs` answer, by
    /// CouchDB's `error` name. [`PushAction::Split`] acts as `DeadLetter`.
    pub doc_errors: BTreeMap<String, PushAction>,
    /// Per-document errors not listed in `doc_errors`.
    pub other_doc_error: PushAction,
    /// Whole-request HTTP statuses.
    pub statuses: BTreeMap<u16, PushAction>,
    /// Other 4xx statuses.
    pub other_client_error: PushAction,
    /// Other 5xx statuses.
    pub server_error: PushAction,
}

impl Default for StatusPolicy {
    fn default() -> Self {
        StatusPolicy {
            doc_errors: [
                ("forbidden".to_owned(), PushAction::DeadLetter),
                ("unauthorized".to_owned(), PushAction::DeadLetter),
            ]
            .into_iter()
            .collect(),
            other_doc_error: PushAction::DeadLetter,
            statuses: [
                (400, PushAction::Split),
                (401, PushAction::Pause),
                (403, PushAction::Pause),
                (404, PushAction::Pause),
                (408, PushAction::Backoff),
                // CouchDB refuses a whole `_bulk_docs` with 412
                // `missing_stub` for one document's attachment stub.
                (412, PushAction::Split),
                (413, PushAction::Split),
                (429, PushAction::Backoff),
            ]
            .into_iter()
            .collect(),
            other_client_error: PushAction::Pause,
            server_error: PushAction::Backoff,
        }
    }
}

impl StatusPolicy {
    /// What to do about a failed request.
    pub fn for_request(&self, e: &RemoteError) -> PushAction {
        match e.status() {
            Some(status) => {
                let code = status.as_u16();
                match self.statuses.get(&code) {
                    Some(a) => *a,
                    None if status.is_server_error() => self.server_error,
                    None => self.other_client_error,
                }
            }
            None if e.is_transient() => PushAction::Backoff,
            // An answer that is not JSON: a proxy page, a broken server.
            None if matches!(e, RemoteError::InvalidResponse { .. }) => PushAction::Backoff,
            None => PushAction::Pause,
        }
    }

    /// What to do about a document refused inside a successful answer.
    pub fn for_doc(&self, error: &str) -> PushAction {
        self.doc_errors
            .get(error)
            .copied()
            .unwrap_or(self.other_doc_error)
    }
}

/// Settings of an outbox worker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboxConfig {
    /// Documents per `_bulk_docs` request (each with its leaves).
    pub batch_size: usize,
    /// Outbox entries read per round: edits of one document among them are
    /// pushed as one (its current leaves), so 1,000 queued updates of one
    /// card cost one request.
    pub scan_limit: usize,
    /// Pause between two looks at the queue when nothing wakes the worker.
    pub tick: Duration,
    /// First backoff after a transient failure; doubled per failure, with
    /// jitter (a random half to full of it).
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured (a server asking for more is retried
    /// after this).
    pub max_retry_after: Duration,
    /// What each answer means.
    pub policy: StatusPolicy,
    /// Id of the remote document holding `{"epoch": ...}` (the sync
    /// service's `epoch_doc_id`), checked before every round; `None`: no
    /// epoch check.
    pub epoch_doc_id: Option<String>,
    /// Documents sampled by the revisions probe before every round (see
    /// the sync service's `revs_probe_docs`); 0 turns it off.
    pub revs_probe_docs: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch_size: 100,
            scan_limit: 10_000,
            tick: Duration::from_secs(30),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(3600),
            policy: StatusPolicy::default(),
            epoch_doc_id: None,
            revs_probe_docs: 32,
        }
    }
}

impl OutboxConfig {
    /// The same settings with other backoff bounds.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The same settings with another batch size (at least 1).
    pub fn with_batch_size(mut self, docs: usize) -> Self {
        self.batch_size = docs.max(1);
        self
    }

    /// The same settings with another tick.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// The same settings with other checks that the remote is still the
    /// database the replica copies (run before every round): the epoch
    /// document's id, and how many documents the revisions probe samples.
    pub fn with_identity_checks(mut self, epoch_doc_id: Option<String>, probe_docs: usize) -> Self {
        self.epoch_doc_id = epoch_doc_id;
        self.revs_probe_docs = probe_docs;
        self
    }

    /// The same settings with another status policy.
    pub fn with_policy(mut self, policy: StatusPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The pause after `failures` consecutive transient failures (1-based),
    /// with jitter: uniformly between half and all of the doubled backoff.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let full = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let half = full / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) from the standard library's per-process random hash
/// keys (no extra dependency for a little jitter).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let c = OutboxConfig::default()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(1000));
        for (n, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let got = c.backoff(n).as_millis();
            assert!(got >= full / 2 && got <= full, "failure {n}: {got} ms");
        }
    }

    #[test]
    fn the_default_policy_is_the_issues() {
        let p = StatusPolicy::default();
        assert_eq!(p.for_doc("forbidden"), PushAction::DeadLetter);
        assert_eq!(p.for_doc("unauthorized"), PushAction::DeadLetter);
        let http = |status: u16| RemoteError::Http {
            method: "POST".into(),
            url: "u".into(),
            status: reqwest::StatusCode::from_u16(status).unwrap_or_default(),
            error: String::new(),
            reason: String::new(),
        };
        assert_eq!(p.for_request(&http(413)), PushAction::Split);
        assert_eq!(p.for_request(&http(400)), PushAction::Split);
        assert_eq!(p.for_request(&http(412)), PushAction::Split);
        assert_eq!(p.for_request(&http(401)), PushAction::Pause);
        assert_eq!(p.for_request(&http(503)), PushAction::Backoff);
        assert_eq!(p.for_request(&http(500)), PushAction::Backoff);
        let limited = RemoteError::RateLimited {
            method: "POST".into(),
            url: "u".into(),
            retry_after: None,
        };
        assert_eq!(p.for_request(&limited), PushAction::Backoff);
        let timeout = RemoteError::Timeout {
            method: "POST".into(),
            url: "u".into(),
        };
        assert_eq!(p.for_request(&timeout), PushAction::Backoff);
    }
}
