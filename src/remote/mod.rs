//! The remote side: a CouchDB database reached over HTTP.
//!
//! [`Endpoint`] turns a user's URL into a server root, a database name and
//! credentials (kept apart, so they never leak); [`Remote`] speaks the pull
//! half of the replication protocol (`client.rs`; the changes feed in one
//! streamed request in `stream.rs`, or as pages in `feed.rs`) and the push half
//! (`push.rs`); [`RetryPolicy`] is the one place that
//! decides how transient failures are retried. Nothing here touches the
//! local store.

mod auth;
mod body;
pub(crate) mod client;
pub(crate) mod endpoint;
mod error;
mod feed;
pub(crate) mod feed_query;
mod push;
mod retry;
mod stream;
mod types;

pub use auth::Auth;
pub use body::AttachmentStream;
pub use client::{Remote, RemoteConfig};
pub use endpoint::{Credentials, Endpoint};
pub use error::RemoteError;
pub(crate) use feed_query::FeedQuery;
pub use push::{BulkDocsError, RevsDiffEntry};
pub use retry::RetryPolicy;
pub(crate) use stream::Live;
pub use types::{ChangeRev, ChangeRow, ChangesPage, DbInfo, FetchedRev, Seq, ServerInfo};
