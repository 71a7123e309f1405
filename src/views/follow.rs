//! The rest of the read API apps expect from a replica: typed reads through
//! serde, and a stream of local changes so a UI can refresh when new data
//! lands. Built only on `Replica`'s public reads (`get`, `changes`,
//! `watch_update_seq`); nothing here writes.

use super::error::ViewError;
use crate::store::{Change, Replica, StoreError};
use futures::Stream;
use serde::de::DeserializeOwned;
use std::pin::Pin;

/// A stream of the replica's committed changes (see [`Replica::local_changes`]).
pub type LocalChanges = Pin<Box<dyn Stream<Item = Result<Change, StoreError>> + Send>>;

impl Replica {
    /// The winning revision of a live document, deserialized into `T` from
    /// the JSON `GET /db/{id}` gives (`_id`, `_rev` and the body).
    /// `None` when the document is missing or deleted.
    ///
    /// ```
    /// # use settee::{Replica, ReplicaConfig};
    /// #[derive(serde::Deserialize)]
    /// struct CourseConfig { name: String }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    /// let config: Option<CourseConfig> = replica.get_as("CourseConfig").unwrap();
    /// assert!(config.is_none());
    /// ```
    pub fn get_as<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, ViewError> {
        let Some(doc) = self.get(id)?.filter(|d| !d.deleted) else {
            return Ok(None);
        };
        serde_json::from_value(doc.to_json())
            .map(Some)
            .map_err(|e| ViewError::Decode {
                id: id.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Follows the replica's committed changes after local sequence
    /// `since` (0: from the start), from a pull or a local write: yields
    /// each change once it is durable, oldest first, then waits for the
    /// next commit. Like `_changes`, a document appears at its latest
    /// change only. The stream ends on a store error (yielded first).
    pub fn local_changes(&self, since: u64) -> LocalChanges {
        let replica = self.clone();
        Box::pin(async_stream::stream! {
            let mut seq = replica.watch_update_seq();
            let mut last = since;
            loop {
                let durable = *seq.borrow_and_update();
                let batch: Vec<Result<Change, StoreError>> = replica
                    .changes(last)
                    .take_while(|c| c.as_ref().map_or(true, |c| c.seq <= durable))
                    .collect();
                for change in batch {
                    match change {
                        Ok(change) => {
                            last = change.seq;
                            yield Ok(change);
                        }
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                }
                if seq.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
