//! The replica's metadata records: the remote it mirrors, the last pull's
//! summary, pull checkpoints (as stored; `replicate/` reads them typed),
//! and `_local` documents.

use super::error::StoreError;
use super::keys;
use super::replica::{RemoteBinding, Replica};
use super::tx;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

impl Replica {
    /// A `_local` document (not replicated), by id without the `_local/` prefix.
    pub fn get_local(&self, id: &str) -> Result<Option<Value>, StoreError> {
        self.get_json(&self.inner.trees.local, id.as_bytes(), "local document")
    }

    /// Writes a `_local` document.
    ///
    /// # Durability
    /// Flushed before `Ok` is returned: the document survives a kill -9
    /// from then on. After an `Err` it may or may not have been written.
    pub async fn put_local(&self, id: &str, doc: &Value) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(doc).map_err(|e| StoreError::InvalidDocument {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        self.inner.trees.local.insert(id.as_bytes(), bytes)?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The checkpoint stored under a replication id, decoded as `T` (the
    /// store does not know its shape: `replicate::checkpoint` in `replicate/`
    /// names it).
    pub(crate) fn stored_checkpoint<T: DeserializeOwned>(
        &self,
        replication_id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_json(
            &self.inner.trees.checkpoints,
            replication_id.as_bytes(),
            "checkpoint",
        )
    }

    /// The remote this replica mirrors, once a pull has recorded it.
    pub fn remote(&self) -> Result<Option<RemoteBinding>, StoreError> {
        self.get_json(&self.inner.trees.meta, keys::meta::REMOTE, "remote binding")
    }

    /// Records the remote this replica mirrors.
    ///
    /// # Durability
    /// Flushed before `Ok`.
    pub(crate) async fn set_remote(&self, binding: &RemoteBinding) -> Result<(), StoreError> {
        let bytes = tx::encode_json(keys::meta::REMOTE, binding)?;
        self.inner.trees.meta.insert(keys::meta::REMOTE, bytes)?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// The summary the last completed pull left, decoded as `T` (the store
    /// does not know its shape: `replicate::last_pull` in `replicate/` names
    /// it).
    pub(crate) fn stored_last_pull<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        self.get_json(&self.inner.trees.meta, keys::meta::LAST_PULL, "last pull")
    }

    /// Records the summary of a completed pull.
    ///
    /// # Durability
    /// Flushed before `Ok`.
    pub(crate) async fn set_last_pull<T: Serialize>(&self, summary: &T) -> Result<(), StoreError> {
        let bytes = tx::encode_json(keys::meta::LAST_PULL, summary)?;
        self.inner.trees.meta.insert(keys::meta::LAST_PULL, bytes)?;
        self.inner.db.flush_async().await?;
        Ok(())
    }

    /// A typed record stored as JSON; one that does not decode as `T` is
    /// [`StoreError::Corrupt`], never a default.
    fn get_json<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        tx::decode_json(key, tree.get(key)?.as_deref(), what)
    }
}
