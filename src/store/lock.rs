//! Who may use a replica, and who is using it now.
//!
//! Across processes, sled's file lock on `db` keeps a replica to one
//! process; this module turns a refused lock into a clear
//! [`StoreError::Locked`] naming the holder (from the `owner` file the
//! holder writes on open) instead of sled's raw I/O error. Inside a
//! process, pulls on one replica are serialized ([`Replica::lock_pull`]):
//! one pull's closing sweep must not delete what another is counting on.
//! It also tracks the blocking tasks a pull spawns, so a stopped pull can
//! wait until none of them holds the replica any more. An open also holds
//! the directory's gate (an exclusive `flock` on the directory) until
//! sled's lock is taken, and finishes a compaction a crash interrupted
//! first (`compact.rs`); a compaction holds the gate for its whole run.
//!
//! It must not decide anything about the data: it only says who holds the
//! replica and waits.

use super::{Replica, StoreError};
use std::path::Path;

/// The file in a replica directory naming the process that opened it last.
pub(crate) const OWNER_FILE: &str = "owner";

/// How long `open` waits for a lock held by this very process: sled frees
/// its file lock when the last internal reference goes, and its background
/// writes can keep one alive for a moment after a replica was dropped (seen
/// about once in 300 reopens in a loop).
const SAME_PROCESS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long `open` waits for a lock another process holds before saying
/// so: long enough for a process that just closed the replica to let go,
/// short enough to be an answer, not a hang.
const OTHER_PROCESS_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What the `owner` file says: `pid <n> <program> since <unix ms>`.
fn owner_line() -> String {
    let program = std::env::args()
        .next()
        .and_then(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    format!("pid {} {program} since {}", std::process::id(), unix_ms())
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// The holder recorded in `dir`, if any.
fn read_owner(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(OWNER_FILE)).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

fn held_by_this_process(owner: Option<&str>) -> bool {
    let ours = format!("pid {} ", std::process::id());
    owner.is_some_and(|o| o.starts_with(&ours))
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// An exclusive `flock` on the replica directory itself. Every open holds
/// it from before it looks for an interrupted compaction until sled's own
/// lock is taken; a compaction holds it from start to end. So no process
/// opens a database whose files are moving, and a crashed compaction is
/// finished (or discarded) by exactly one opener.
#[derive(Debug)]
pub(crate) struct Gate(#[allow(dead_code)] std::fs::File);

impl Gate {
    /// The gate, or `None` while another open or a compaction holds it.
    fn try_take(dir: &Path) -> Result<Option<Gate>, StoreError> {
        let io = |source: std::io::Error| StoreError::Compact {
            path: dir.to_path_buf(),
            step: "lock the directory",
            source,
        };
        let file = std::fs::File::open(dir).map_err(io)?;
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => Ok(Some(Gate(file))),
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

/// Opens the sled database at `path` (a directory, created if missing).
///
/// # Errors
/// [`StoreError::NotADirectory`] when `path` is a file,
/// [`StoreError::Locked`] when another process holds the replica (after
/// half a second) or this process still does after 3 s, [`StoreError::Open`]
/// otherwise.
pub(crate) fn open_db(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    open_gated(path, cache_capacity).map(|(db, _gate)| db)
}

/// [`open_db`], returning with the directory gate still held (compaction
/// keeps it for its whole run). First finishes or discards a compaction a
/// crash interrupted (`compact::recover`).
pub(crate) fn open_gated(path: &Path, cache_capacity: u64) -> Result<(sled::Db, Gate), StoreError> {
    if path.exists() && !path.is_dir() {
        return Err(StoreError::NotADirectory {
            path: path.to_path_buf(),
        });
    }
    std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        source: sled::Error::Io(e),
    })?;
    let started = std::time::Instant::now();
    loop {
        let wait = if held_by_this_process(read_owner(path).as_deref()) {
            SAME_PROCESS_WAIT
        } else {
            OTHER_PROCESS_WAIT
        };
        let Some(gate) = Gate::try_take(path)? else {
            if started.elapsed() < wait {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder: read_owner(path).unwrap_or_else(|| "an unknown process".to_owned())
                    + " (compacting or opening it)",
            });
        };
        super::compact::recover(path)?;
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open();
        match opened {
            Ok(db) => {
                // Best effort: the name only improves a later error message.
                let _ = std::fs::write(path.join(OWNER_FILE), owner_line() + "\n");
                return Ok((db, gate));
            }
            Err(e) if is_lock_error(&e) => {
                drop(gate);
                if started.elapsed() < wait {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                    holder: read_owner(path).unwrap_or_else(|| "an unknown process".to_owned()),
                });
            }
            Err(source) => {
                return Err(StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
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

impl Replica {
    /// Takes the replica's pull lock for `who` (e.g. the remote's URL,
    /// without credentials), waiting while another pull holds it.
    pub(crate) async fn lock_pull(&self, who: &str) -> PullGuard {
        let usage = &self.inner.usage;
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
    pub fn pull_holder(&self) -> Option<String> {
        self.inner.usage.holder.lock().ok()?.clone()
    }

    /// Runs `f` on tokio's blocking pool, counted until it returns, so that
    /// [`Replica::blocking_idle`] can wait for it even after the task that
    /// spawned it was aborted.
    pub(crate) fn spawn_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let blocking = self.inner.usage.blocking.clone();
        blocking.send_modify(|n| *n += 1);
        let running = Running(blocking);
        tokio::task::spawn_blocking(move || {
            let _running = running;
            f()
        })
    }

    /// Waits until no task spawned with [`Replica::spawn_blocking`] runs.
    pub(crate) async fn blocking_idle(&self) {
        let mut rx = self.inner.usage.blocking.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = open_db(&file, 1 << 20).unwrap_err();
        assert!(matches!(e, StoreError::NotADirectory { .. }), "{e:?}");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn owner_names_this_process() {
        assert!(held_by_this_process(Some(&owner_line())));
        assert!(!held_by_this_process(Some("pid 0 settee since 1")));
        assert!(!held_by_this_process(None));
    }
}
