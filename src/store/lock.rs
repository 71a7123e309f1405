//! Who may open a replica directory.
//!
//! Across processes, sled's file lock on `db` keeps a replica to one
//! process; this module turns a refused lock into a clear
//! [`StoreError::Locked`] naming the holder (from the `owner` file the
//! holder writes on open) instead of sled's raw I/O error. An open also
//! holds the directory's gate (an exclusive `flock` on the directory) until
//! sled's lock is taken, and first runs what the caller must finish before
//! sled opens (a compaction a crash interrupted, `compact.rs`); a
//! compaction holds the gate for its whole run. Inside a process, who uses
//! an open replica is `usage.rs`'s.
//!
//! It must not decide anything about the data: it only says who holds the
//! replica and waits.

use super::error::StoreError;
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
pub(crate) fn open_db(
    path: &Path,
    cache_capacity: u64,
    before_open: fn(&Path) -> Result<(), StoreError>,
) -> Result<sled::Db, StoreError> {
    open_gated(path, cache_capacity, before_open).map(|(db, _gate)| db)
}

/// [`open_db`], returning with the directory gate still held (compaction
/// keeps it for its whole run). Runs `before_open` under the gate before
/// sled opens the directory (the opener passes `compact::recover`, which
/// finishes or discards a compaction a crash interrupted).
pub(crate) fn open_gated(
    path: &Path,
    cache_capacity: u64,
    before_open: fn(&Path) -> Result<(), StoreError>,
) -> Result<(sled::Db, Gate), StoreError> {
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
        before_open(path)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = open_db(&file, 1 << 20, |_| Ok(())).unwrap_err();
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
