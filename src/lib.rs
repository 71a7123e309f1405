//! settee: a local-first, offline replica store that speaks the CouchDB
//! replication protocol.
//!
//! An application opens a [`Replica`] (a directory on disk), points a
//! [`Remote`] at a CouchDB database and [`pull`]s: settee reads the
//! remote's `_changes` feed in batches, fetches the revisions it lacks with
//! `_bulk_get` (or `open_revs` where `_bulk_get` is missing), and commits
//! each batch with its checkpoint in one transaction. The replica keeps full
//! revision trees, so conflicts and tombstones, and the winner CouchDB
//! would pick, are all there to read offline.
//!
//! # Layout
//!
//! The data flows one way, and so do the dependencies:
//!
//! ```text
//!  remote ──► replicate ──► store ◄── revtree
//!  (HTTP)     (batches,     (sled:    (pure: merge,
//!              checkpoints)  docs,     stem, winner)
//!                            revs,
//!                            by_seq)
//! ```
//!
//! - `remote/`: [`Endpoint`] (URL, credentials, id encoding), [`Remote`]
//!   (the protocol requests), [`RetryPolicy`], [`RemoteError`]; the wire
//!   types it reads are public under [`protocol`].
//! - `revtree.rs` ([`revtree`]): [`revtree::RevTree`], CouchDB's revision
//!   forest and winner rule.
//! - `store/`: [`Replica`], the sled-backed store, and [`StoreError`]; what
//!   a replica hands out is under [`replica`], compaction and the check
//!   under [`maintenance`].
//! - `replicate/` ([`replicate`]): [`pull`], its [`PullConfig`],
//!   [`PullResult`] and checkpoints.
//! - `sync/` ([`sync`]): [`sync::SyncService`], many replicas of one server
//!   kept in sync (gate, db-epoch staleness and recreation detection,
//!   rebuild and swap, schedule), with [`sync::SyncHooks`] for view warm-up
//!   and push workers.
//! - `outbox/` ([`outbox`]): [`outbox::Outbox`], the push worker: local
//!   edits ([`Replica::put`], [`Replica::update`], [`Replica::delete`]) go
//!   app → store (revision + outbox entry, one transaction) → worker →
//!   remote (`_revs_diff`, `_bulk_docs` with `new_edits: false`).
//! - `views/`: [`views::Views`], indexes of the replica in CouchDB view
//!   collation (the app's `elo` and `getTags`), kept current from the local
//!   sequence; typed reads and the local changes stream.
//! - `query/` ([`query`]): design-doc views in JavaScript, Mango `_find`,
//!   `_all_docs` and `get` with CouchDB's options, answered from the replica.
//! - `cli/` and `src/bin/settee.rs`: the `settee` command, a thin layer.
//!
//! Durability in three lines: every pull batch is one sled transaction
//! holding documents, sequence entries, counters and the checkpoint,
//! committed in feed order and flushed before the next one commits (later
//! batches may already be fetching); a checkpoint is never ahead of the data
//! it covers; a killed pull resumes from its last committed batch. Details and
//! the crash analysis are in `docs/design.md`. A local write and its outbox
//! entry are one transaction too, flushed before `put` returns `Ok`.
//!
//! # Features
//!
//! - `cli` (default): the `settee` binary and the dependencies only it
//!   needs (clap, indicatif, tracing-subscriber). Turn default features
//!   off to build the library alone.
//! - `jemalloc` (default): the binary's allocator; the library never sets
//!   one.
//!
//! The README lists the public API by purpose (open, pull, read, query,
//! write, push, sync); `examples/` has two runnable programs.
//!
//! # Checkpoints are written by pulls only
//!
//! A checkpoint says "the replica holds everything up to here"; stored
//! ahead of its data, the next pull would skip documents for good. So the
//! store's write path (the batch commit that carries checkpoints) is not
//! public: a checkpoint is written by [`pull`], in the transaction of the
//! batch it covers, and can only be read ([`replicate::checkpoint`]). This
//! does not compile:
//!
//! ```compile_fail,E0624
//! # fn demo(replica: &settee::Replica) {
//! // The batch commit is private to the crate.
//! let _ = replica.commit_blocking(&Default::default());
//! # }
//! ```
//!
//! nor does naming the batch type:
//!
//! ```compile_fail,E0432
//! use settee::WriteBatch;
//! ```
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> settee::Result<()> {
//! use settee::{pull, Endpoint, PullConfig, Remote, RemoteConfig, Replica, ReplicaConfig};
//!
//! let replica = Replica::open("./replicas/course", ReplicaConfig::default())?;
//! let remote = Remote::new(Endpoint::parse("http://127.0.0.1:5984/course")?, RemoteConfig::default())?;
//! let result = pull(&replica, &remote, &PullConfig::default()).await?;
//! println!("{} revisions written, now at {}", result.docs_written, result.last_seq);
//! if let Some(config) = replica.get("CourseConfig")? {
//!     println!("{}", config.to_json());
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod error;
#[doc(hidden)]
pub mod fuzz_hooks;
mod identity;
mod js;
mod millis;
pub mod outbox;
pub mod query;
mod remote;
pub mod replicate;
pub mod revtree;
#[cfg(feature = "serve")]
pub mod serve;
mod store;
pub mod sync;
pub mod views;

// The root holds what every program uses: open a replica, point a remote
// at a database, pull, read and write documents, and the errors. The rest
// lives in the module of its subject (`replica`, `maintenance`,
// `protocol`, `replicate`, `revtree`, `outbox`, `sync`, `query`, `views`).
pub use error::{Error, Result};
pub use remote::{
    Auth, Credentials, Endpoint, Remote, RemoteConfig, RemoteError, RetryPolicy, Seq,
};
pub use replicate::{pull, PullConfig, PullResult};
pub use revtree::Rev;
pub use store::{Document, LocalWrite, Replica, ReplicaConfig, StoreError};

/// What a [`Replica`] hands out besides [`Document`]s: document summaries,
/// change streams (typed and raw), attachments, the remote it mirrors, and
/// the store's format constants.
pub mod replica {
    pub use crate::store::{
        AttachmentReader, AttachmentStub, Change, Changes, DocInfo, DocumentChange,
        DocumentChanges, Documents, LiveChanges, RawDocumentChange, RawDocumentChanges,
        RawDocuments, RemoteBinding, FORMAT_VERSION, MAX_NESTING,
    };
}

/// Keeping a replica small and sound: compaction, disk usage, and the
/// consistency check (`settee check`).
pub mod maintenance {
    pub use crate::store::{
        compact, dir_size, CheckReport, CompactOptions, CompactReport, DiskUsage, TreeUsage,
        Violation, DEFAULT_COMPACT_ABOVE,
    };
}

/// CouchDB's wire types as settee reads them: server and database
/// information, `_changes` rows, `_bulk_get` results, `_revs_diff` and
/// `_bulk_docs` answers, and streamed attachment bodies.
pub mod protocol {
    pub use crate::remote::{
        AttachmentStream, BulkDocsError, ChangeRev, ChangeRow, ChangesPage, DbInfo, FetchedRev,
        RevsDiffEntry, ServerInfo,
    };
}

#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;

/// The README's Rust example, compiled by `cargo test` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
