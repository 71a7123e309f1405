//! Is the replica still a copy of the remote database, or was the remote
//! deleted and recreated since? The signals are `crate::identity`'s (the
//! push worker asks them too); the service adds what only it needs.

pub(crate) use crate::identity::{facts, judge, Identity, RemoteFacts, IDENTITY_DOC};
use crate::{Replica, Result};

/// True when the replica holds nothing yet (nothing to protect).
pub(crate) fn is_empty(replica: &Replica) -> Result<bool> {
    Ok(replica.update_seq()? == 0 && replica.pending_retries_after(None, 1)?.is_empty())
}
