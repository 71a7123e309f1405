//! The sync root on disk: one directory per remote database, each holding
//! replica generations and a `CURRENT` pointer to the live one.
//!
//! ```text
//! <root>/
//!   <slug>-<hash>/          one per database (slug: readable, hash: unique)
//!     DB_NAME               the database name, verbatim (for listings)
//!     CURRENT               the live generation's directory name, e.g. "gen-2"
//!     gen-2/                a replica (sled), the one CURRENT names
//!     gen-3/                a rebuild in progress, or a retired one not yet deleted
//! ```
//!
//! It owns naming and the atomic swap of `CURRENT`; it knows nothing of
//! remotes or of the sync states, and never opens a replica itself.

use super::SyncError;
use md5::{Digest, Md5};
use std::io::Write;
use std::path::{Path, PathBuf};

const CURRENT: &str = "CURRENT";
const DB_NAME: &str = "DB_NAME";
const GEN_PREFIX: &str = "gen-";

/// Where a sync service keeps its replicas; cheap to clone.
///
/// ```
/// use settee::sync::SyncRoot;
///
/// let dir = tempfile::tempdir().unwrap();
/// let root = SyncRoot::new(dir.path());
/// let a = root.db_dir("course/1");
/// let b = root.db_dir("course+1");
/// assert_ne!(a, b); // escaped names cannot collide: the hash tells them apart
/// assert!(a.file_name().unwrap().to_str().unwrap().starts_with("course_1-"));
/// assert!(root.current("course/1").unwrap().is_none()); // nothing synced yet
/// ```
#[derive(Debug, Clone)]
pub struct SyncRoot {
    path: PathBuf,
}

impl SyncRoot {
    /// A root at `path` (created on first use).
    pub fn new(path: impl AsRef<Path>) -> Self {
        SyncRoot {
            path: path.as_ref().to_path_buf(),
        }
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of database `db`: a readable slug (lowercase ASCII
    /// letters, digits, `-` and `_`; anything else becomes `_`, at most 40
    /// characters) and the first 16 hex digits of the md5 of the exact name,
    /// so any CouchDB name maps to a valid, distinct directory name.
    pub fn db_dir(&self, db: &str) -> PathBuf {
        let slug: String = db
            .chars()
            .take(40)
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '-' | '_' => c,
                _ => '_',
            })
            .collect();
        let hash: String = Md5::digest(db.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        self.path.join(format!("{slug}-{hash}"))
    }

    /// The live replica directory of `db`, if one was ever made live.
    pub fn current(&self, db: &str) -> Result<Option<PathBuf>, SyncError> {
        let dir = self.db_dir(db);
        let pointer = dir.join(CURRENT);
        match std::fs::read_to_string(&pointer) {
            Ok(name) => {
                let name = name.trim();
                if !name.starts_with(GEN_PREFIX) || name.contains(['/', '\\']) {
                    return Err(SyncError::Corrupt {
                        path: pointer,
                        reason: format!("names {name:?}, not a generation directory"),
                    });
                }
                Ok(Some(dir.join(name)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SyncError::io(&pointer, e)),
        }
    }

    /// Creates the database's directory (and records its name) if needed.
    pub(crate) fn prepare(&self, db: &str) -> Result<PathBuf, SyncError> {
        let dir = self.db_dir(db);
        std::fs::create_dir_all(&dir).map_err(|e| SyncError::io(&dir, e))?;
        let name_file = dir.join(DB_NAME);
        if !name_file.is_file() {
            write_atomically(&dir, DB_NAME, db.as_bytes())?;
        }
        Ok(dir)
    }

    /// A fresh generation directory name for `db`, after every existing one.
    pub(crate) fn next_generation(&self, db: &str) -> Result<PathBuf, SyncError> {
        let dir = self.db_dir(db);
        let highest = generations(&dir)?.into_iter().map(|(n, _)| n).max();
        Ok(dir.join(format!("{GEN_PREFIX}{}", highest.map_or(1, |n| n + 1))))
    }

    /// Makes `generation` the live replica of `db`.
    ///
    /// # Durability
    /// `CURRENT` is replaced by a rename of a fully written and synced
    /// temporary file, then the directory is synced: after `Ok` the switch
    /// survives a crash; before, the old generation stays live. After an
    /// `Err` either may be live; [`SyncRoot::current`] tells which.
    pub(crate) fn make_current(&self, db: &str, generation: &Path) -> Result<(), SyncError> {
        let dir = self.db_dir(db);
        let name = generation
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with(GEN_PREFIX))
            .ok_or_else(|| SyncError::Corrupt {
                path: generation.to_path_buf(),
                reason: "not a generation directory".to_owned(),
            })?;
        write_atomically(&dir, CURRENT, name.as_bytes())
    }

    /// Deletes the generations of `db` newer than the live one, except
    /// `keep` (a rebuild in progress): rebuilds a crash interrupted, never
    /// handed out, so nothing was written to them but pulled data. Returns
    /// how many were deleted. Older generations were live once and may hold
    /// local writes: [`SyncRoot::retired_generations`] lists them for the
    /// service to carry over before deleting them.
    pub(crate) fn remove_stale_generations(
        &self,
        db: &str,
        keep: Option<&Path>,
    ) -> Result<usize, SyncError> {
        let live = self.current(db)?.and_then(|p| generation_number(&p));
        let mut removed = 0;
        for (n, path) in generations(&self.db_dir(db))? {
            if live.is_some_and(|live| n <= live) || Some(path.as_path()) == keep {
                continue;
            }
            remove_dir(&path)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The generations of `db` older than the live one: replicas retired
    /// by a swap whose deletion a crash or a reader interrupted.
    pub(crate) fn retired_generations(&self, db: &str) -> Result<Vec<PathBuf>, SyncError> {
        let Some(live) = self.current(db)?.and_then(|p| generation_number(&p)) else {
            return Ok(Vec::new());
        };
        let mut old: Vec<(u64, PathBuf)> = generations(&self.db_dir(db))?
            .into_iter()
            .filter(|(n, _)| *n < live)
            .collect();
        old.sort();
        Ok(old.into_iter().map(|(_, p)| p).collect())
    }

    /// The databases that have a directory under the root, by their names.
    pub fn databases(&self) -> Result<Vec<String>, SyncError> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SyncError::io(&self.path, e)),
        };
        let mut names = Vec::new();
        for entry in entries.flatten() {
            if let Ok(name) = std::fs::read_to_string(entry.path().join(DB_NAME)) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Deletes a generation directory (a no-op if it is already gone).
pub(crate) fn remove_dir(path: &Path) -> Result<(), SyncError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SyncError::io(path, e)),
    }
}

/// The number of a `gen-<n>` directory.
fn generation_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(GEN_PREFIX)?
        .parse()
        .ok()
}

/// `gen-<n>` directories of a database directory, with their numbers.
fn generations(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SyncError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SyncError::io(dir, e)),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(GEN_PREFIX)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect())
}

/// Writes `dir/name` by renaming a synced temporary file over it, then
/// syncs the directory so the rename itself is durable.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SyncError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| SyncError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| SyncError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &target).map_err(|e| SyncError::io(&target, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SyncError::io(dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_safe_and_distinct() {
        let root = SyncRoot::new("/r");
        let names = [
            "a",
            "A",
            "a/b",
            "a_b",
            "a$b",
            "..",
            "é",
            "x".repeat(300).as_str(),
        ]
        .map(|n| root.db_dir(n));
        for (i, a) in names.iter().enumerate() {
            let file = a.file_name().unwrap().to_str().unwrap();
            assert!(file.len() <= 57, "{file}");
            assert!(file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn current_swaps_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = SyncRoot::new(dir.path());
        root.prepare("db").unwrap();
        let g1 = root.next_generation("db").unwrap();
        std::fs::create_dir_all(&g1).unwrap();
        root.make_current("db", &g1).unwrap();
        assert_eq!(root.current("db").unwrap(), Some(g1.clone()));
        let g2 = root.next_generation("db").unwrap();
        assert_ne!(g1, g2);
        std::fs::create_dir_all(&g2).unwrap();
        assert_eq!(root.remove_stale_generations("db", Some(&g2)).unwrap(), 0);
        // An interrupted rebuild (newer than the live one) goes.
        assert_eq!(root.remove_stale_generations("db", None).unwrap(), 1);
        assert!(g1.exists() && !g2.exists());
        let g3 = root.next_generation("db").unwrap();
        std::fs::create_dir_all(&g3).unwrap();
        root.make_current("db", &g3).unwrap();
        // A retired one (older) stays for the service to carry over.
        assert_eq!(root.remove_stale_generations("db", None).unwrap(), 0);
        assert_eq!(root.retired_generations("db").unwrap(), vec![g1.clone()]);
        assert_eq!(root.databases().unwrap(), vec!["db".to_owned()]);
    }
}
