//! The push worker's main loop (mini-redis shape): run rounds while there
//! is work, then `select!` between shutdown, a wake-up (a new local write,
//! `flush_now`, `resume`), the end of a backoff and the tick.
//!
//! It owns the backoff and pause state; the round (`round.rs`) owns what a
//! push is. Shutdown is checked between rounds and while a round waits on
//! the network: dropping a round there is safe, because its only write
//! (the acknowledgement) runs to completion on a blocking thread.

use super::config::OutboxConfig;
use super::round::{self, RoundEnd, RoundStats};
use super::Shared;
use crate::Remote;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Mutable worker state, shown by `status()`.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) last_error: Option<String>,
    pub(super) last_error_at_ms: Option<u64>,
    pub(super) last_success_at_ms: Option<u64>,
    pub(super) paused: Option<String>,
    pub(super) backoff_until: Option<Instant>,
    pub(super) failures: u32,
    pub(super) stats: RoundStats,
    pub(super) rounds: u64,
    pub(super) stopped: bool,
}

/// How long to sleep when paused: until woken.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

pub(super) async fn run(
    shared: Arc<Shared>,
    remote: Remote,
    config: OutboxConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut writes = shared.replica.watch_update_seq();
    // The identity check's reads are sent once too: the worker's backoff,
    // not the client's retries, decides when to ask again.
    let checks = remote.sent_once();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if shared.ready() {
            tokio::select! {
                () = work(&shared, &remote, &checks, &config) => {}
                _ = shutdown.changed() => break,
            }
        }
        let wait = shared.wait(config.tick);
        tokio::select! {
            _ = shutdown.changed() => {}
            () = shared.wake.notified() => {}
            changed = writes.changed() => {
                if changed.is_err() {
                    // The replica is gone; nothing will ever be written.
                    break;
                }
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
    shared.state().stopped = true;
    shared.rounds.send_modify(|n| *n += 1);
}

/// Runs rounds until the queue is empty or a round stops on a failure.
async fn work(shared: &Shared, remote: &Remote, checks: &Remote, config: &OutboxConfig) {
    loop {
        let mut stats = RoundStats::default();
        let end = round::run(&shared.replica, remote, checks, config, &mut stats).await;
        let again = {
            let mut st = shared.state();
            st.stats.revs_pushed += stats.revs_pushed;
            st.stats.dead_lettered += stats.dead_lettered;
            st.stats.bulk_docs_requests += stats.bulk_docs_requests;
            st.rounds += 1;
            match end {
                Ok(RoundEnd::Idle) => {
                    st.failures = 0;
                    st.backoff_until = None;
                    false
                }
                Ok(RoundEnd::Progress) => {
                    st.failures = 0;
                    st.backoff_until = None;
                    st.last_success_at_ms = Some(crate::store::now_ms());
                    true
                }
                Ok(RoundEnd::Backoff { error, retry_after }) => {
                    st.failures = st.failures.saturating_add(1);
                    let pause = match retry_after {
                        Some(d) => d.min(config.max_retry_after),
                        None => config.backoff(st.failures),
                    };
                    tracing::warn!(%error, ?pause, "push failed; backing off");
                    st.backoff_until = Some(Instant::now() + pause);
                    record_error(&mut st, error);
                    false
                }
                Ok(RoundEnd::Pause { error }) => {
                    tracing::error!(%error, "push paused");
                    st.paused = Some(error.clone());
                    record_error(&mut st, error);
                    false
                }
                Err(e) => {
                    // The store failed: back off like a transient failure,
                    // the entries are still queued.
                    st.failures = st.failures.saturating_add(1);
                    st.backoff_until = Some(Instant::now() + config.backoff(st.failures));
                    tracing::error!(%e, "push round failed in the store");
                    record_error(&mut st, e.to_string());
                    false
                }
            }
        };
        shared.rounds.send_modify(|n| *n += 1);
        if !again {
            return;
        }
    }
}

fn record_error(st: &mut State, error: String) {
    st.last_error = Some(error);
    st.last_error_at_ms = Some(crate::store::now_ms());
}

impl Shared {
    /// True when a round may run now (not paused, not backing off).
    fn ready(&self) -> bool {
        let st = self.state();
        st.paused.is_none() && st.backoff_until.is_none_or(|t| Instant::now() >= t)
    }

    /// How long to sleep before looking again.
    fn wait(&self, tick: Duration) -> Duration {
        let st = self.state();
        if st.paused.is_some() {
            return FOREVER;
        }
        match st.backoff_until {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => tick,
        }
    }
}
