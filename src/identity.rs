//! Which incarnation of a remote database a replica copies, and whether
//! the remote is still that one. Old revisions must never merge with new
//! ones: a recreated database can reuse ids and even generation-1 revision
//! ids, and a merge would keep stale bodies or invent conflicts. The sync
//! service asks before every sync (and rebuilds), the push worker before
//! every round (and stops), so neither a pull nor a push mixes the two.
//!
//! Signals, in the order they are checked (the first that fires wins):
//! 1. `db-epoch` (the seed's rule, when an epoch document is configured):
//!    the remote's `epoch` differs from the replica's copy, or the replica
//!    has none while the remote has one. No remote epoch document: not
//!    stale.
//! 2. The server's uuid differs from the one recorded when the replica was
//!    started: another server answers at this URL.
//! 3. `instance_start_time` differs (trusted only on CouchDB 3 and later,
//!    where it is the database's creation time, and when both values are
//!    known and not `"0"`). CouchDB 3 reports the shard suffix, whole
//!    seconds (`mem3:shard_creation_time`): a database deleted and created
//!    again within one second keeps its value, and only the other signals
//!    can tell.
//! 4. The checkpoint is past the database's `update_seq` (only when both
//!    are integers; CouchDB 2+ sequences stay opaque). A checkpoint the
//!    server refuses is caught by the service when the pull fails; CouchDB 3
//!    refuses none (a `since` from a previous instance rewinds to 0).
//! 5. Revisions probe: for most of a sample of the replica's oldest
//!    documents that came from the remote, no revision is known to it
//!    (`_revs_diff`).
//!
//! The identity record is written when a replica is first bound: by the
//! sync service (with the epoch) or by the first pull.

use crate::remote::{DbInfo, ServerInfo};
use crate::replicate::replication_id;
use crate::{Remote, Replica, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// Why a replica no longer copies its remote database (and a sync
/// rebuilds it, a push worker stops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RebuildReason {
    /// The remote's `db-epoch` differs from the replica's copy (or the
    /// replica lacks it while the remote has one).
    Epoch,
    /// The server's uuid changed: another server answers at this URL.
    ServerUuid,
    /// The database's `instance_start_time` changed (CouchDB 3).
    InstanceStartTime,
    /// The checkpoint is past the database's update sequence (integer
    /// sequences only), or the server refused it.
    Checkpoint,
    /// None of the replica's sampled revisions is known to the remote.
    UnknownRevisions,
}

impl std::fmt::Display for RebuildReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RebuildReason::Epoch => "its db-epoch changed",
            RebuildReason::ServerUuid => "another server answers at its URL",
            RebuildReason::InstanceStartTime => "its creation time changed",
            RebuildReason::Checkpoint => "its update sequence is behind the replica's checkpoint",
            RebuildReason::UnknownRevisions => "it knows none of the replica's revisions",
        })
    }
}

/// Every signal, the revisions probe included (`probe` documents, 0 for
/// none): why the remote is not the database `replica` copies, if it is
/// not. Replicas with no identity record and no pull are not judged.
pub(crate) async fn changed(
    replica: &Replica,
    remote: &Remote,
    epoch_doc_id: Option<&str>,
    probe: usize,
) -> Result<Option<RebuildReason>> {
    if Identity::read(replica)?.is_none() && replica.update_seq()? == 0 {
        return Ok(None);
    }
    let facts = facts(remote, epoch_doc_id).await?;
    judge(replica, remote, &facts, epoch_doc_id, probe).await
}

/// Every signal given the remote's `facts`: signals 1 to 4 ([`check`]),
/// then the revisions probe of `probe` documents.
pub(crate) async fn judge(
    replica: &Replica,
    remote: &Remote,
    facts: &RemoteFacts,
    epoch_doc_id: Option<&str>,
    probe: usize,
) -> Result<Option<RebuildReason>> {
    if let Some(reason) = check(replica, remote, facts, epoch_doc_id)? {
        return Ok(Some(reason));
    }
    if revisions_unknown(replica, remote, probe).await? {
        return Ok(Some(RebuildReason::UnknownRevisions));
    }
    Ok(None)
}

/// The `_local` document of a replica recording which remote database it
/// copies (never credentials).
pub(crate) const IDENTITY_DOC: &str = "settee-sync-identity";

/// What the remote says about itself, read once per sync.
#[derive(Debug, Clone)]
pub(crate) struct RemoteFacts {
    pub(crate) server: ServerInfo,
    pub(crate) info: DbInfo,
    /// The `epoch` field of the epoch document, if there is such a document.
    pub(crate) epoch: Option<Value>,
}

/// The identity recorded in a replica when its first pull starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Identity {
    #[serde(default)]
    pub(crate) server_uuid: Option<String>,
    #[serde(default)]
    pub(crate) instance_start_time: Option<String>,
    #[serde(default)]
    pub(crate) vendor: String,
    /// The remote's epoch then (the replica's copy until the epoch
    /// document itself arrives).
    #[serde(default)]
    pub(crate) epoch: Option<Value>,
}

impl Identity {
    pub(crate) fn of(facts: &RemoteFacts) -> Self {
        Identity {
            server_uuid: facts.server.uuid.clone(),
            instance_start_time: facts.info.instance_start_time.clone(),
            vendor: facts.server.vendor.clone(),
            epoch: facts.epoch.clone(),
        }
    }

    pub(crate) fn read(replica: &Replica) -> Result<Option<Self>> {
        Ok(replica
            .get_local(IDENTITY_DOC)?
            .and_then(|v| serde_json::from_value(v).ok()))
    }
}

/// Reads server info, database info and the epoch document.
pub(crate) async fn facts(remote: &Remote, epoch_doc_id: Option<&str>) -> Result<RemoteFacts> {
    let server = remote.server_info().await?;
    let info = remote.db_info().await?;
    let epoch = match epoch_doc_id {
        Some(id) => remote
            .get_doc(id)
            .await?
            .map(|doc| doc.get("epoch").cloned().unwrap_or(Value::Null)),
        None => None,
    };
    Ok(RemoteFacts {
        server,
        info,
        epoch,
    })
}

/// The first signal (1 to 4) saying the replica copies an older incarnation
/// of the remote database.
pub(crate) fn check(
    replica: &Replica,
    remote: &Remote,
    facts: &RemoteFacts,
    epoch_doc_id: Option<&str>,
) -> Result<Option<RebuildReason>> {
    let identity = Identity::read(replica)?.unwrap_or_default();
    if let (Some(remote_epoch), Some(epoch_doc_id)) = (&facts.epoch, epoch_doc_id) {
        let local_epoch = match replica.get(epoch_doc_id)? {
            Some(doc) if !doc.deleted => {
                Some(doc.body.get("epoch").cloned().unwrap_or(Value::Null))
            }
            _ => identity.epoch.clone(),
        };
        if local_epoch.as_ref() != Some(remote_epoch) {
            return Ok(Some(RebuildReason::Epoch));
        }
    }
    if let (Some(was), Some(now)) = (&identity.server_uuid, &facts.server.uuid) {
        if was != now {
            return Ok(Some(RebuildReason::ServerUuid));
        }
    }
    if creation_time_is_meaningful(&facts.server) {
        let known = |t: &Option<String>| {
            t.as_deref()
                .filter(|t| !t.is_empty() && *t != "0")
                .map(str::to_owned)
        };
        if let (Some(was), Some(now)) = (
            known(&identity.instance_start_time),
            known(&facts.info.instance_start_time),
        ) {
            if was != now {
                return Ok(Some(RebuildReason::InstanceStartTime));
            }
        }
    }
    let rep_id = replication_id(&facts.server, remote.endpoint());
    if let Some(cp) = crate::replicate::checkpoint(replica, &rep_id)
        .ok()
        .flatten()
    {
        if let (Some(cp), Some(now)) = (cp.last_seq.0.as_u64(), facts.info.update_seq.0.as_u64()) {
            if cp > now {
                return Ok(Some(RebuildReason::Checkpoint));
            }
        }
    }
    Ok(None)
}

/// Signal 5: true when most of the sampled documents (the first
/// `sample` of the local changes feed) have no revision the remote knows.
///
/// The head of the feed holds documents pulled long ago and not changed
/// since (a change, local or pulled, moves a document to the tail), so they
/// came from the remote and it must still know them. A recreated database
/// whose documents differ fails this; documents reloaded with identical
/// content get identical revisions (PouchDB and CouchDB hash the content),
/// are the same documents and count as known. A majority, not "any", so
/// that a purge or a local write not pushed yet is no reason to rebuild.
pub(crate) async fn revisions_unknown(
    replica: &Replica,
    remote: &Remote,
    sample: usize,
) -> Result<bool> {
    if sample == 0 {
        return Ok(false);
    }
    // Documents the replica still owes the remote (queued or dead-lettered
    // local writes) may be known to it by no revision at all: a document
    // created offline. They prove nothing either way.
    let mut owed: HashSet<String> = HashSet::new();
    let mut after = None;
    loop {
        let page = replica.outbox().entries(after, 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.key);
        owed.extend(page.into_iter().map(|e| e.id));
    }
    owed.extend(replica.outbox().dead_letters()?.into_iter().map(|d| d.id));
    let mut asked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for change in replica.changes(0) {
        if asked.len() >= sample {
            break;
        }
        let id = change?.doc.id;
        if owed.contains(&id) {
            continue;
        }
        let Some(tree) = replica.rev_tree(&id)? else {
            continue;
        };
        let revs: Vec<String> = tree.revs().take(10).map(|r| r.to_string()).collect();
        if !revs.is_empty() {
            asked.insert(id, revs);
        }
    }
    if asked.is_empty() {
        return Ok(false);
    }
    let missing = remote.revs_diff(&asked).await?;
    let unknown = asked
        .iter()
        .filter(|(id, revs)| missing.get(*id).is_some_and(|m| m.len() >= revs.len()))
        .count();
    Ok(unknown * 2 > asked.len())
}

/// Whether this server's `instance_start_time` is the database's creation
/// time: CouchDB 3 and later. CouchDB 1.x reports when the database file
/// was opened (it changes on every restart), 2.x reports `"0"`, and PouchDB
/// Server its own process start, the same for every database.
fn creation_time_is_meaningful(server: &ServerInfo) -> bool {
    let major = server
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    !server.vendor.contains("PouchDB") && major.is_some_and(|m| m >= 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(vendor: &str, version: &str) -> ServerInfo {
        ServerInfo {
            uuid: None,
            vendor: vendor.to_owned(),
            version: Some(version.to_owned()),
        }
    }

    #[test]
    fn instance_start_time_is_trusted_on_couchdb_3_only() {
        let apache = "The Apache Software Foundation";
        assert!(creation_time_is_meaningful(&server(apache, "3.4.2")));
        assert!(!creation_time_is_meaningful(&server(apache, "2.3.1")));
        assert!(!creation_time_is_meaningful(&server(apache, "1.7.2")));
        assert!(!creation_time_is_meaningful(&server(
            "PouchDB authors",
            "4.2.0"
        )));
    }
}
