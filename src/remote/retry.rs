//! The one retry policy for remote requests: doubling backoff with jitter
//! and a cap, and an adaptive slow-down on 429.
//!
//! Every request the client sends through here is idempotent (reads,
//! `_revs_diff`, `_bulk_get`), so a transient failure (see
//! [`RemoteError::is_transient`]) is simply sent again after a pause. A 429
//! ([`RemoteError::RateLimited`]) waits at least the server's
//! `Retry-After` and slows every later request of the same client down (a
//! [`Pace`] shared by the pull's concurrent fetches) until answers succeed
//! again. What happens after the retries run out is the caller's business
//! (the pull fails, or in its retry mode pauses and starts over).

use super::RemoteError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often and how patiently transient failures are retried.
///
/// The defaults are CouchDB's replicator's: 5 retries per request, the
/// first after 0.25 s, doubling, each pause drawn at random from its upper
/// half so that clients failed by one outage do not come back in step.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: u32,
    /// Pause before the first retry; doubled each time.
    pub initial_backoff: Duration,
    /// Longest pause between two attempts (a `Retry-After` may be longer,
    /// up to [`RetryPolicy::max_retry_after`]).
    pub max_backoff: Duration,
    /// Draw each pause at random between half and all of its nominal value.
    pub jitter: bool,
    /// Longest `Retry-After` honoured; a server asking for more is waited
    /// on for this long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            jitter: true,
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// A policy with `max_retries` retries and the default pauses.
    pub fn with_retries(max_retries: u32) -> Self {
        RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        }
    }

    /// The same policy with other pauses: `initial` before the first retry,
    /// doubling up to `max`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The same policy without jitter (pauses exactly as [`Self::backoff`]).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The nominal pause before retry number `attempt` (1-based), before
    /// jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The pause actually taken before retry number `attempt` after `e`:
    /// the backoff (jittered), or the server's `Retry-After` when longer.
    pub(crate) fn pause(&self, attempt: u32, e: &RemoteError) -> Duration {
        let nominal = self.backoff(attempt);
        let backoff = if self.jitter {
            jittered(nominal)
        } else {
            nominal
        };
        match e.retry_after() {
            Some(after) => backoff.max(after.min(self.max_retry_after)),
            None => backoff,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the retries run out.
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        self.run_paced(&Pace::default(), what, op).await
    }

    /// [`Self::run`], waiting `pace`'s current slow-down before each
    /// attempt and adjusting it: raised by a 429, lowered by a success.
    pub(crate) async fn run_paced<T, F, Fut>(
        &self,
        pace: &Pace,
        what: &str,
        mut op: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        let mut attempt = 0;
        loop {
            let delay = pace.current();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match op().await {
                Err(e) if e.is_transient() && attempt < self.max_retries => {
                    attempt += 1;
                    let pause = self.pause(attempt, &e);
                    if matches!(e, RemoteError::RateLimited { .. }) {
                        pace.slow_down(self, e.retry_after());
                    }
                    tracing::warn!(%e, attempt, ?pause, "{what} failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Ok(v) => {
                    pace.speed_up();
                    return Ok(v);
                }
                other => return other,
            }
        }
    }
}

/// The adaptive slow-down of one client after 429s: a pause taken before
/// every request, doubled (at least to the policy's first backoff, at
/// least to the server's `Retry-After`) by each 429 and halved by each
/// success, down to nothing.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    millis: AtomicU64,
}

impl Pace {
    /// The pause to take before the next request.
    pub(crate) fn current(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    fn slow_down(&self, policy: &RetryPolicy, retry_after: Option<Duration>) {
        let floor = retry_after
            .unwrap_or_default()
            .min(policy.max_retry_after)
            .max(policy.initial_backoff);
        let cap = policy.max_backoff.max(floor);
        let _ = self
            .millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                let doubled = Duration::from_millis(m.saturating_mul(2));
                Some(doubled.max(floor).min(cap).as_millis() as u64)
            });
    }

    fn speed_up(&self) {
        let _ = self
            .millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                // Below 10 ms the pause is noise: drop it.
                Some(if m < 20 { 0 } else { m / 2 })
            });
    }
}

/// A duration drawn uniformly from `[d/2, d]`.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    let span = (d - half).as_nanos() as u64;
    if span == 0 {
        return d;
    }
    half + Duration::from_nanos(next_random() % (span + 1))
}

/// A cheap, non-cryptographic random number (splitmix64 over a global
/// counter seeded from the clock): jitter needs spread, not secrecy.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let _ = STATE.compare_exchange(0, now | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    s = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut z = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rate_limited(after: Option<u64>) -> RemoteError {
        RemoteError::RateLimited {
            method: "GET".into(),
            url: "http://h/db".into(),
            retry_after: after.map(Duration::from_secs),
        }
    }

    #[test]
    fn defaults_are_couchdbs() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.initial_backoff, Duration::from_millis(250));
        assert!(p.jitter);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::with_retries(10)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<u128> = (1..=5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 500, 500]);
        assert_eq!(p.backoff(200), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_spreads() {
        let p = RetryPolicy::default();
        let e = rate_limited(None);
        let pauses: Vec<Duration> = (0..200).map(|_| p.pause(3, &e)).collect();
        assert!(pauses
            .iter()
            .all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_millis(1000)));
        let distinct: std::collections::HashSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 50, "{} distinct pauses", distinct.len());
        let exact = p.clone().without_jitter();
        assert_eq!(exact.pause(3, &e), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap() {
        let p = RetryPolicy::default().without_jitter();
        assert_eq!(p.pause(1, &rate_limited(Some(3))), Duration::from_secs(3));
        assert_eq!(
            p.pause(1, &rate_limited(Some(3600))),
            Duration::from_secs(60)
        );
        assert_eq!(p.pause(2, &rate_limited(None)), Duration::from_millis(500));
    }

    #[test]
    fn pace_rises_on_429_and_decays_on_success() {
        let p = RetryPolicy::default();
        let pace = Pace::default();
        pace.slow_down(&p, None);
        assert_eq!(pace.current(), Duration::from_millis(250));
        pace.slow_down(&p, None);
        assert_eq!(pace.current(), Duration::from_millis(500));
        pace.slow_down(&p, Some(Duration::from_secs(2)));
        assert_eq!(pace.current(), Duration::from_secs(2));
        for _ in 0..12 {
            pace.speed_up();
        }
        assert_eq!(pace.current(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_429_is_retried_after_its_retry_after() {
        let p = RetryPolicy::with_retries(2)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(1));
        let mut calls = 0;
        let started = std::time::Instant::now();
        let got = p
            .run("GET x", || {
                calls += 1;
                let n = calls;
                async move {
                    if n == 1 {
                        Err(rate_limited(Some(1)))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(got.unwrap(), 2);
        assert!(started.elapsed() >= Duration::from_secs(1));
    }
}
