//! The pull's opt-in retry mode (PouchDB's `retry: true`): a pull that
//! outlives outages longer than one request's retries.
//!
//! Each request already retries on its own ([`crate::RetryPolicy`]). When
//! those retries run out, a pull in retry mode does not fail: it reports a
//! [`PullState::Paused`] progress event, waits (doubling, capped, cut short
//! by the shutdown future), reports [`PullState::Active`] and starts over
//! from its last committed checkpoint. A pull that completed with
//! per-document failures is run again a few times too, so failures caused
//! by a broken answer (a corrupt attachment) are fetched again at once. It
//! owns no state of its own: everything it resumes from is the replica's
//! checkpoint and retry list. It must not retry what needs a person (a bad
//! URL, 401/403/404, another database bound to the replica, a store error).

use crate::remote::RemoteError;
use crate::Error;
use serde::Serialize;
use std::time::Duration;

/// Settings of the retry mode (see [`PullConfigBuilder::retry_mode`](super::PullConfigBuilder::retry_mode)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryMode {
    /// Pause after the first failed attempt; doubled after each one.
    pub initial_pause: Duration,
    /// Longest pause between two attempts.
    pub max_pause: Duration,
    /// Attempts after the first before the pull fails with the last error;
    /// `None`: until the shutdown future completes.
    pub max_attempts: Option<u32>,
    /// Extra passes when a completed pull left per-document failures.
    pub failure_passes: u32,
}

impl Default for RetryMode {
    /// PouchDB's retry backoff: from 1 s, doubling up to 10 minutes, for
    /// ever.
    fn default() -> Self {
        RetryMode {
            initial_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(600),
            max_attempts: None,
            failure_passes: 3,
        }
    }
}

impl RetryMode {
    /// The same mode giving up after `n` failed attempts after the first.
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// The same mode with other pauses: `initial`, doubling up to `max`.
    pub fn with_pauses(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_pause = initial;
        self.max_pause = max.max(initial);
        self
    }

    /// The pause after failed attempt number `attempt` (1-based).
    pub(crate) fn pause(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_pause
            .saturating_mul(factor)
            .min(self.max_pause)
    }

    /// True when another attempt is allowed after `attempt` failed ones.
    pub(crate) fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }
}

/// Whether a pull is moving, in its progress events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PullState {
    /// Batches are being fetched and committed.
    #[default]
    Active,
    /// In retry mode, after a failed attempt: waiting before starting over
    /// from the last checkpoint.
    Paused {
        /// Why the attempt failed (never holds credentials).
        error: String,
        /// Failed attempts so far.
        attempt: u32,
        /// How long the pull waits before the next attempt (`retry_in_ms`
        /// in JSON).
        #[serde(rename = "retry_in_ms", with = "crate::millis")]
        retry_in: std::time::Duration,
    },
}

/// True when retry mode may start over after `e`: the network, the
/// server's load or a broken answer, never a cause a person must fix.
pub(crate) fn worth_retrying(e: &Error) -> bool {
    let Error::Remote(e) = e else {
        return false;
    };
    match e {
        RemoteError::InvalidUrl { .. } => false,
        // A captive portal or a proxy's error page passes.
        RemoteError::NotCouchDb { .. } | RemoteError::InvalidResponse { .. } => true,
        RemoteError::Http { status, .. } => ![401, 403, 404].contains(&status.as_u16()),
        _ => e.is_transient(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pauses_double_to_the_cap_and_attempts_are_capped() {
        let m = RetryMode::default()
            .with_pauses(Duration::from_millis(100), Duration::from_millis(300))
            .with_max_attempts(2);
        assert_eq!(m.pause(1), Duration::from_millis(100));
        assert_eq!(m.pause(2), Duration::from_millis(200));
        assert_eq!(m.pause(9), Duration::from_millis(300));
        assert!(m.allows(2));
        assert!(!m.allows(3));
        assert!(RetryMode::default().allows(u32::MAX));
    }

    #[test]
    fn only_what_time_can_fix_is_retried() {
        let http = |code: u16| {
            Error::Remote(RemoteError::Http {
                method: "GET".into(),
                url: "http://h/db".into(),
                status: reqwest::StatusCode::from_u16(code).unwrap(),
                error: "e".into(),
                reason: "r".into(),
            })
        };
        assert!(worth_retrying(&http(503)));
        assert!(worth_retrying(&http(429)));
        assert!(!worth_retrying(&http(401)));
        assert!(!worth_retrying(&http(404)));
        assert!(worth_retrying(&Error::Remote(
            RemoteError::InvalidResponse {
                method: "GET".into(),
                url: "u".into(),
                bytes: 3,
                detail: "expected value".into(),
            }
        )));
        assert!(!worth_retrying(&Error::InvalidSetting {
            setting: "x",
            value: "0".into(),
            expected: "1",
        }));
    }
}
