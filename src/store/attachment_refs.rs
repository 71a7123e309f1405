//! Reference counts for attachment bytes.
//!
//! Bytes are stored once per digest (`attachments`), however many bodies
//! carry a stub for them. `att_refs` counts, per digest, the stubs in stored
//! bodies (`bodies`): a commit counts the stubs of every body it stores, the
//! sweep uncounts the stubs of every body it deletes and deletes the bytes
//! with the last reference. Both happen in the transaction that writes or
//! deletes the body, so the counts never disagree with the bodies on disk.
//!
//! A pull does not hold the attachment bytes of a batch in memory until the
//! batch commits: [`Replica::stage_attachment`] writes them as they arrive,
//! marked in `att_staged`, and the commit that counts a stub for them clears
//! the mark. Bytes still marked when the replica is next opened belong to a
//! batch that never committed (a crash, a failed pull) and are deleted then.

use super::error::StoreError;
use super::replica::Replica;
use serde::Deserialize;
use sled::transaction::Transactional;
use std::collections::HashMap;

#[derive(Deserialize)]
struct Stubs {
    #[serde(rename = "_attachments", default)]
    attachments: Option<HashMap<String, Stub>>,
}

#[derive(Deserialize)]
struct Stub {
    digest: Option<String>,
}

/// The digests of the attachment stubs in a stored body, once per stub.
pub(crate) fn stub_digests(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    // Most bodies have no attachments: skip the parse for them. memmem,
    // not a window-by-window compare: every commit scans every body it
    // stores, and the naive scan was 3 % of a cold pull's CPU.
    if memchr::memmem::find(body, b"\"_attachments\"").is_none() {
        return Ok(Vec::new());
    }
    let stubs: Stubs = serde_json::from_slice(body)?;
    Ok(stubs
        .attachments
        .into_iter()
        .flatten()
        .filter_map(|(_, stub)| stub.digest)
        .collect())
}

impl Replica {
    /// Stores attachment bytes ahead of the batch that will refer to them,
    /// so a batch never holds them in memory. Not flushed: the commit of
    /// that batch flushes them with it, and bytes no commit claims are
    /// deleted the next time the replica is opened.
    pub(crate) fn stage_attachment(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let t = self.trees();
        (&t.attachments, &t.att_staged)
            .transaction(|(atts, staged)| {
                if atts.get(digest.as_bytes())?.is_none() {
                    atts.insert(digest.as_bytes(), bytes)?;
                    staged.insert(digest.as_bytes(), &[])?;
                }
                Ok(())
            })
            .map_err(StoreError::from)
    }

    /// Deletes staged bytes that no committed body claimed (run on open,
    /// when no pull of this process can be staging).
    pub(crate) fn drop_unclaimed_attachments(&self) -> Result<(), StoreError> {
        let t = self.trees();
        let staged: Vec<sled::IVec> = t.att_staged.iter().keys().collect::<Result<_, _>>()?;
        if staged.is_empty() {
            return Ok(());
        }
        (&t.attachments, &t.att_staged, &t.att_refs).transaction(|(atts, marks, refs)| {
            for digest in &staged {
                marks.remove(digest)?;
                if refs.get(digest)?.is_none() {
                    atts.remove(digest)?;
                }
            }
            Ok(())
        })?;
        self.inner.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digests_come_from_stubs_only() {
        let body = br#"{"q":"no \"_attachments\" here","_attachments":{"a":{"stub":true,"digest":"md5-A"},"b":{"stub":true,"digest":"md5-A"},"c":{"stub":true}}}"#;
        let mut d = stub_digests(body).unwrap();
        d.sort();
        assert_eq!(d, vec!["md5-A", "md5-A"]);
        assert!(stub_digests(br#"{"v":1}"#).unwrap().is_empty());
        assert!(stub_digests(br#"{"t":"\"_attachments\""}"#)
            .unwrap()
            .is_empty());
        assert!(stub_digests(br#"{"_attachments": 3}"#).is_err());
    }
}
