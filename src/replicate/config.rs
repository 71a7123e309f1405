//! [`PullConfigBuilder`]: named settings for a pull, checked once by
//! `build`, so two plain numbers cannot be swapped unnoticed.

use super::{Filter, PullConfig, Revisions, Tombstones};
use crate::Result;

/// How a pull reads the changes feed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feed {
    /// One `_changes` request without `limit`, its rows taken as they
    /// arrive and committed `batch_size` at a time, each batch's
    /// checkpoint its last row's `seq`, as CouchDB's replicator reads it;
    /// a connection cut mid-feed asks again from the last batch read. A
    /// server whose answer is not shaped as CouchDB's is read as pages.
    #[default]
    Streamed,
    /// One `_changes?limit=batch_size` request per batch (the next asked
    /// for while the one before is parsed): for servers or proxies that
    /// cut long responses.
    Paged,
}

/// Whether a pull ends at the end of the feed or goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullMode {
    /// To the end of the feed, then return (the default).
    #[default]
    OneShot,
    /// To the end of the feed, then on: long polls (`feed=longpoll`) take
    /// each change as it happens, committed and checkpointed as they come,
    /// until the pull's stop signal ([`Pull::until`](super::Pull::until)).
    /// The server writes a newline every `heartbeat` while nothing
    /// changes; a connection that goes quiet for longer than the client's
    /// read timeout is dropped and asked again. Transient failures (the
    /// server down, the network gone) are retried for as long as the pull
    /// runs, with the client's backoff and jitter. Always read as a
    /// streamed feed ([`Feed`] is ignored).
    Live {
        /// How often the server shows it is alive (CouchDB's
        /// `heartbeat`, 1 s to 10 min; 10 s is usual).
        heartbeat: std::time::Duration,
    },
}

impl PullMode {
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            PullMode::Live { heartbeat }
                if *heartbeat < std::time::Duration::from_secs(1)
                    || *heartbeat > std::time::Duration::from_secs(600) =>
            {
                Err(crate::Error::InvalidSetting {
                    setting: "heartbeat",
                    value: format!("{heartbeat:?}"),
                    expected: "between 1 s and 10 min",
                })
            }
            _ => Ok(()),
        }
    }
}

/// Builds a [`PullConfig`]; unset settings keep their defaults.
///
/// ```
/// use settee::PullConfig;
///
/// let config = PullConfig::builder().batch_size(200).batches_limit(4).build()?;
/// assert_eq!((config.batch_size, config.batches_limit), (200, 4));
/// assert!(PullConfig::builder().batch_size(0).build().is_err());
/// # Ok::<(), settee::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct PullConfigBuilder {
    config: PullConfig,
}

impl PullConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> PullConfigBuilder {
        PullConfigBuilder::default()
    }
}

impl PullConfigBuilder {
    /// Change rows per batch: one `_changes` page and one `_bulk_get`
    /// (1 to 100000).
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.config.batch_size = rows;
        self
    }

    /// Batches fetched at once, and so held in memory at most (1 to 64).
    pub fn batches_limit(mut self, batches: usize) -> Self {
        self.config.batches_limit = batches;
        self
    }

    /// The largest document body stored, in bytes of JSON text (see
    /// [`PullConfig::max_doc_bytes`]).
    pub fn max_doc_bytes(mut self, limit: usize) -> Self {
        self.config.max_doc_bytes = Some(limit);
        self
    }

    /// How the changes feed is read (see [`Feed`]).
    pub fn feed(mut self, feed: Feed) -> Self {
        self.config.feed = feed;
        self
    }

    /// Keep going after the feed's end (see [`PullMode::Live`]).
    pub fn live(mut self, heartbeat: std::time::Duration) -> Self {
        self.config.mode = PullMode::Live { heartbeat };
        self
    }

    /// Which documents the pull takes (see [`Filter`]).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.config.filter = filter;
        self
    }

    /// Which revisions of each document (see [`Revisions`]).
    pub fn revisions(mut self, revisions: Revisions) -> Self {
        self.config.revisions = revisions;
        self
    }

    /// Whether deletions of documents the replica never held are taken
    /// (see [`Tombstones`]).
    pub fn tombstones(mut self, tombstones: Tombstones) -> Self {
        self.config.tombstones = tombstones;
        self
    }

    /// Keep the pull alive across outages (see [`PullConfig::retry_mode`]).
    pub fn retry_mode(mut self, mode: super::RetryMode) -> Self {
        self.config.retry_mode = Some(mode);
        self
    }

    /// The settings, checked.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`](crate::Error::InvalidSetting) when a setting is out of range.
    pub fn build(self) -> Result<PullConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}
