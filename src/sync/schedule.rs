//! The scheduled sync (seed 001): a background task re-syncing every
//! database of a [`SyncService`] at an interval with jitter, plus a manual
//! trigger, each run summed up in a [`SyncRun`].
//!
//! The task `select!`s its wait against the trigger and the stop signal;
//! a run in progress is handed the stop signal too, so each sync ends at a
//! batch boundary (dropping a pull future never cuts a batch: each is one
//! transaction). The handle's `Drop` stops the task.

use super::{ScheduleConfig, SyncRun, SyncService};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

/// Summaries kept for [`ScheduleHandle::next_run`] when nobody reads them.
const RUNS_KEPT: usize = 16;

/// A running schedule. Dropping it stops the schedule without waiting;
/// [`ScheduleHandle::stop`] waits for the task to end.
#[derive(Debug)]
pub struct ScheduleHandle {
    stop: watch::Sender<bool>,
    trigger: Arc<Notify>,
    runs: mpsc::Receiver<SyncRun>,
    task: Option<JoinHandle<()>>,
}

impl ScheduleHandle {
    /// Starts the next run now instead of at its time (the manual trigger;
    /// [`SyncService::sync_all`] is the same run, awaited by the caller).
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// The summary of the next run that finishes (runs not read yet come
    /// first; the last 16 are kept). `None` once the schedule has stopped
    /// and every summary was read.
    pub async fn next_run(&mut self) -> Option<SyncRun> {
        self.runs.recv().await
    }

    /// Ends the schedule: a wait ends at once, a run in progress stops each
    /// of its syncs at a batch boundary. Returns when the task is done.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the sync schedule task failed");
            }
        }
    }
}

impl Drop for ScheduleHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl SyncService {
    /// Starts re-syncing every database of this service on `schedule`.
    ///
    /// Must be called inside a tokio runtime.
    pub fn schedule(&self, schedule: ScheduleConfig) -> ScheduleHandle {
        let (stop, stop_rx) = watch::channel(false);
        let trigger = Arc::new(Notify::new());
        let (tx, runs) = mpsc::channel(RUNS_KEPT);
        let task = tokio::spawn(run(self.clone(), schedule, stop_rx, trigger.clone(), tx));
        ScheduleHandle {
            stop,
            trigger,
            runs,
            task: Some(task),
        }
    }
}

/// The schedule's loop.
async fn run(
    service: SyncService,
    schedule: ScheduleConfig,
    mut stop: watch::Receiver<bool>,
    trigger: Arc<Notify>,
    runs: mpsc::Sender<SyncRun>,
) {
    let mut first = true;
    loop {
        let wait = if first && schedule.run_at_start {
            Duration::ZERO
        } else {
            jittered(schedule.every, schedule.jitter)
        };
        first = false;
        tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            () = tokio::time::sleep(wait) => {}
            () = trigger.notified() => {}
        }
        let summary = service.sync_all_until(Some(stop.clone())).await;
        tracing::info!(
            dbs = summary.dbs.len(),
            created = summary.created,
            updated = summary.updated,
            deleted = summary.deleted,
            skipped = summary.skipped,
            failed = summary.failed,
            ms = summary.duration.as_millis(),
            "scheduled sync run done"
        );
        if runs.try_send(summary).is_err() {
            tracing::debug!("sync summary dropped: nobody reads them");
        }
        if *stop.borrow() {
            break;
        }
    }
}

/// `every` plus or minus a random amount up to `jitter`.
fn jittered(every: Duration, jitter: Duration) -> Duration {
    let jitter_ms = jitter.as_millis() as u64;
    if jitter_ms == 0 {
        return every;
    }
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let random = u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    let offset = random % (2 * jitter_ms + 1);
    let base = every.as_millis() as u64 + offset;
    Duration::from_millis(base.saturating_sub(jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let every = Duration::from_secs(10);
        let jitter = Duration::from_secs(2);
        for _ in 0..200 {
            let d = jittered(every, jitter);
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
        assert_eq!(jittered(every, Duration::ZERO), every);
    }
}
