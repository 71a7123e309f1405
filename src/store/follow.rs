//! The changes feed as a live stream: what a UI subscribes to so it
//! refreshes when a pull or a local write lands.

use super::error::StoreError;
use super::reads::{Change, Changes};
use futures::Stream;
use std::pin::Pin;

/// The replica's committed changes as a stream that waits for the next
/// commit (see [`Changes::follow`]).
pub type LiveChanges = Pin<Box<dyn Stream<Item = Result<Change, StoreError>> + Send>>;

impl Changes {
    /// Follows the replica's committed changes after the feed's `since`
    /// (0: from the start), from a pull or a local write: yields each
    /// change once it is durable, oldest first, then waits for the next
    /// commit. Like `_changes`, a document appears at its latest change
    /// only. The stream ends on a store error (yielded first).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    /// use settee::{Replica, ReplicaConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let replica = Replica::open(dir.path(), ReplicaConfig::default())?;
    /// replica.put("a", serde_json::json!({"n": 1})).await?;
    /// let mut live = replica.changes(0).follow();
    /// assert_eq!(live.next().await.transpose()?.map(|c| c.doc.id), Some("a".to_owned()));
    /// replica.put("b", serde_json::json!({"n": 2})).await?;
    /// assert_eq!(live.next().await.transpose()?.map(|c| c.doc.id), Some("b".to_owned()));
    /// # Ok(()) }
    /// ```
    pub fn follow(self) -> LiveChanges {
        let Changes { replica, since, .. } = self;
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
