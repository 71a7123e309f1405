//! The local replica: a directory holding a sled database with the full
//! revision tree of every document, the leaf bodies, attachments (one copy
//! per digest), a local sequence index, `_local` documents, checkpoints and
//! metadata.
//!
//! Reads are plain method calls. Every write goes through one multi-tree
//! sled transaction ([`Replica::commit`]), flushed before it returns, so a
//! batch of documents, its sequence entries, its counters and the
//! checkpoint that covers it become durable together or not at all. The
//! store knows nothing of HTTP; `docs/design.md` has the trees, their keys,
//! the invariants and the crash analysis.
//!
//! ```text
//!  replica.rs   the handle: sled, its trees, settings, writer lock, update-seq watch
//!   ├── keys.rs, document.rs, nesting.rs, error.rs   layouts and types (import no sibling)
//!   ├── body_log.rs  the append-only file of leaf bodies (format 4)
//!   ├── tx.rs        the steps of a write transaction (counters, preconditions,
//!   │                outbox appends, attachment counts, typed records)
//!   ├── commit.rs    the one write path of documents (pulls and local edits)
//!   │    └── local_write.rs   put/update/delete → a commit with a precondition
//!   ├── outbox.rs    the push queue, dead letters, push checkpoint
//!   ├── reads.rs     iterators (documents, changes, records in parts for
//!   │                several threads, cut at marks.rs' ids); follow.rs: the
//!   │                live feed; lookup.rs: point reads;
//!   │                metadata.rs: remote, last pull, checkpoints, `_local`
//!   ├── attachment_refs.rs, attachment_stream.rs   attachment bytes
//!   ├── check.rs, compact.rs   maintenance
//!   ├── usage.rs     the pull lock and running blocking tasks
//!   └── lock.rs, open.rs   the directory lock; opening (format, recovery)
//! ```
//!
//! No file of the store imports another that imports it, directly or in a
//! circle (`tests/layering.rs` checks it); this file only declares and
//! re-exports.

mod attachment_refs;
mod attachment_stream;
mod body_log;
mod check;
mod commit;
mod compact;
mod document;
mod error;
mod follow;
mod keys;
mod local_write;
mod lock;
mod lookup;
mod marks;
mod metadata;
mod nesting;
mod open;
mod outbox;
mod reads;
mod replica;
mod tx;
mod usage;

pub(crate) use attachment_stream::{AttachmentWriter, Staged};
pub use check::{CheckReport, Violation};
#[cfg(feature = "internals")]
pub use commit::BatchOutcome;
pub use commit::{CheckpointRecord, IncomingRev, WriteBatch};
pub use compact::{
    compact, dir_size, CompactOptions, CompactReport, DiskUsage, TreeUsage, DEFAULT_COMPACT_ABOVE,
};
pub(crate) use document::DocRecord;
pub use document::{AttachmentStub, DocInfo, Document};
pub use error::StoreError;
pub use follow::LiveChanges;
pub use local_write::LocalWrite;
pub use lookup::AttachmentReader;
pub use nesting::{nesting_depth, MAX_NESTING};
pub use open::FORMAT_VERSION;
pub(crate) use outbox::now_ms;
pub(crate) use outbox::PushAck;
pub use outbox::{DeadLetter, OutboxEntry, OutboxQueue, PushCheckpoint};
pub use reads::{
    Change, Changes, DocumentChange, DocumentChanges, Documents, RawDocumentChange,
    RawDocumentChanges, RawDocuments,
};
pub(crate) use reads::{RecordPart, StoredRecord};
pub use replica::{RemoteBinding, Replica, ReplicaConfig};
