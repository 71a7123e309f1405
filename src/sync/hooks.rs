//! The seam where an application's own work plugs into the sync: extra
//! warm-up after the built-in views, and a callback when a replica becomes
//! the live one. The service runs views and push workers itself
//! ([`SyncConfig`](super::SyncConfig)); it does not know what hooks do.

use crate::{Remote, Replica, Result};
use futures::future::BoxFuture;
use std::path::Path;

/// Callbacks of a [`SyncService`](super::SyncService); every method has a
/// do-nothing default.
///
/// ```
/// use settee::{Remote, Replica};
/// use settee::sync::SyncHooks;
///
/// struct LogReady;
/// impl SyncHooks for LogReady {
///     fn replica_ready(&self, db: &str, replica: &Replica, _remote: &Remote) {
///         println!("{db} ready at {}", replica.path().display());
///     }
/// }
/// ```
pub trait SyncHooks: Send + Sync {
    /// Runs in state `warming-views`, after every successful pull and
    /// before the replica is handed out as ready (the seed's
    /// `warmViewIndices`). Its time is reported as `view_warm_time`. An
    /// `Err` fails the sync with state `error`.
    fn warm<'a>(&'a self, replica: &'a Replica) -> BoxFuture<'a, Result<()>> {
        let _ = replica;
        Box::pin(async { Ok(()) })
    }

    /// Called once each time a replica becomes the one the service hands
    /// out: the first time a database is ready, and after each rebuild's
    /// swap (with the new replica). A push worker starts here; the old
    /// replica's worker should stop when it sees a newer one for `db`.
    /// Must not block.
    fn replica_ready(&self, db: &str, replica: &Replica, remote: &Remote) {
        let _ = (db, replica, remote);
    }

    /// Called after a replica that a rebuild swapped out was deleted, its
    /// unpushed writes carried over to the live one: drop anything kept
    /// from it (caches, paths). Runs on a blocking thread.
    fn replica_retired(&self, db: &str, path: &Path) {
        let _ = (db, path);
    }
}

/// The hooks of a service given none.
pub(crate) struct NoHooks;

impl SyncHooks for NoHooks {}
