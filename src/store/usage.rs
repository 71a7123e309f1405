//! Who is using an open replica inside this process: pulls on one replica
//! are serialized (one pull's closing sweep must not delete what another
//! is counting on), and the blocking tasks a pull spawns are counted, so a
//! stopped pull can wait until none of them holds the replica any more.
//! `Replica` keeps one `Usage` and forwards to it (`replica.rs`).

/// The time of day in Unix milliseconds (0 before 1970).
fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Holds a replica's pull lock; dropping it lets the next pull start.
#[derive(Debug)]
pub(crate) struct PullGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    holder: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Drop for PullGuard {
    fn drop(&mut self) {
        if let Ok(mut h) = self.holder.lock() {
            *h = None;
        }
    }
}

/// Counts a blocking task while it runs.
struct Running(tokio::sync::watch::Sender<usize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The per-replica state of this module, kept in the replica's `Inner`.
#[derive(Debug)]
pub(crate) struct Usage {
    pull: std::sync::Arc<tokio::sync::Mutex<()>>,
    holder: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    blocking: tokio::sync::watch::Sender<usize>,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            pull: Default::default(),
            holder: Default::default(),
            blocking: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Usage {
    /// Takes the replica's pull lock for `who` (e.g. the remote's URL,
    /// without credentials), waiting while another pull holds it.
    pub(crate) async fn lock_pull(&self, who: &str) -> PullGuard {
        let usage = self;
        let guard = match usage.pull.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                let holder = self.pull_holder().unwrap_or_default();
                tracing::info!(%holder, "another pull holds this replica; waiting for it");
                usage.pull.clone().lock_owned().await
            }
        };
        if let Ok(mut h) = usage.holder.lock() {
            *h = Some(format!("{who} since {}", unix_ms()));
        }
        PullGuard {
            _guard: guard,
            holder: usage.holder.clone(),
        }
    }

    /// The pull running on this replica in this process, if any: what it
    /// pulls from and since when (Unix ms).
    pub(crate) fn pull_holder(&self) -> Option<String> {
        self.holder.lock().ok()?.clone()
    }

    /// Runs `f` on tokio's blocking pool, counted until it returns, so that
    /// `blocking_idle` can wait for it even after the task that
    /// spawned it was aborted.
    pub(crate) fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let blocking = self.blocking.clone();
        blocking.send_modify(|n| *n += 1);
        let running = Running(blocking);
        tokio::task::spawn_blocking(move || {
            let _running = running;
            f()
        })
    }

    /// Waits until no task spawned with `spawn_blocking` runs.
    pub(crate) async fn blocking_idle(&self) {
        let mut rx = self.blocking.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
