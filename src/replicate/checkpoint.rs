//! Replication ids and checkpoints: where a pull resumes.
//!
//! A checkpoint lives in the replica (never on the remote, so a pull needs
//! no write access) under a replication id derived from the remote server's
//! uuid and the database name, never from credentials or from a URL that
//! may carry them. It is written in the same transaction as the batch it
//! covers, so it can never be ahead of the data.

use crate::remote::{Endpoint, Seq, ServerInfo};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Bumped when the pull's meaning changes (e.g. filters), so an old
/// checkpoint is not reused for a different stream.
const PROTOCOL_VERSION: &str = "settee-pull-1";

/// The id under which a pull from `endpoint` keeps its checkpoint.
///
/// The server is identified by its uuid when it reports one, else by
/// `host:port`; the database by name. Credentials never enter it.
pub fn replication_id(server: &ServerInfo, endpoint: &Endpoint) -> String {
    filtered_replication_id(server, endpoint, None)
}

/// [`replication_id`] of a filtered pull: `filter` (what the filter
/// settings resolve to, see `filter.rs`) is part of it, so differently
/// filtered pulls into one replica keep apart checkpoints. `None` gives the
/// unfiltered id.
pub(crate) fn filtered_replication_id(
    server: &ServerInfo,
    endpoint: &Endpoint,
    filter: Option<&str>,
) -> String {
    let server_id = server.uuid.clone().unwrap_or_else(|| endpoint.authority());
    let mut h = Md5::new();
    for part in [PROTOCOL_VERSION, &server_id, endpoint.db_name()]
        .into_iter()
        .chain(filter)
    {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a pull got to: everything up to `last_seq` is in the replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The remote sequence covered, verbatim.
    pub last_seq: Seq,
    /// The pull session that wrote it.
    pub session_id: String,
    /// When it was written, Unix milliseconds.
    pub updated_at_ms: u64,
}

impl Checkpoint {
    pub(crate) fn new(last_seq: Seq, session_id: &str) -> Self {
        Checkpoint {
            last_seq,
            session_id: session_id.to_owned(),
            updated_at_ms: now_ms(),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn server(uuid: Option<&str>) -> ServerInfo {
        ServerInfo {
            uuid: uuid.map(str::to_owned),
            vendor: "CouchDB".into(),
            version: None,
        }
    }

    #[test]
    fn ignores_credentials_and_depends_on_server_and_db() {
        let a = Endpoint::parse("http://u:one@h:5984/db").unwrap();
        let b = Endpoint::parse("http://v:two@h:5984/db").unwrap();
        let c = Endpoint::parse("http://h:5984/other").unwrap();
        let s = server(Some("abc"));
        assert_eq!(replication_id(&s, &a), replication_id(&s, &b));
        assert_ne!(replication_id(&s, &a), replication_id(&s, &c));
        assert_ne!(
            replication_id(&s, &a),
            replication_id(&server(Some("xyz")), &a)
        );
        assert_ne!(replication_id(&server(None), &a), replication_id(&s, &a));
        assert_eq!(replication_id(&s, &a).len(), 32);
        let f = |part| filtered_replication_id(&s, &a, part);
        assert_eq!(f(None), replication_id(&s, &a));
        assert_ne!(f(Some("_doc_ids\0[\"x\"]")), f(None));
        assert_ne!(f(Some("_doc_ids\0[\"x\"]")), f(Some("_doc_ids\0[\"y\"]")));
    }
}
