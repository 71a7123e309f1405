//! settee's integration tests: one binary, one support module, topic files.
//! Every test here runs against a real CouchDB-compatible server (PouchDB
//! Server started by `support::server`, or `COUCHDB_URL`), never a mock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

// A pulled corpus equals what the server holds, document for document.
mod fidelity;
// Second pulls transfer only what changed.
mod incremental;
// Interrupted pulls resume from their last committed batch.
mod resume;
// Issue 20: the changes feed read as one streamed request.
mod feed_stream;
// Issue 20: filtered pulls hold what the server's filtered feed lists.
mod filtered;
// Issue 20: live pulls take writes as they happen, through cuts and outages.
mod live;
// Issue 20: a pull moves to another node of the cluster when one dies.
mod failover;
// Issue 21: a replica served as a local CouchDB, replicated by PouchDB.
mod serve;
// Batch size and concurrency do not change the result.
mod settings;
// Bad input gets a typed error and leaves the replica as it was.
mod errors;
// Servers without _bulk_get are pulled document by document.
mod fallback;
// kill -9 in the middle of a pull.
mod crash;
// The protocol client on its own.
mod remote;
// The `settee` command line.
mod cli;
// The harness speaks to CouchDB the way the client does.
mod parity;
// Issue 12: failed first pulls, locks, per-document failures, stopping.
mod reliability;
// Credentials never leak.
mod secrets;
// The sync service: gate, coalescing, recreation, resume, schedule.
mod sync;
// Local writes pushed through the outbox, under every status the server can answer.
mod outbox;
// Views (elo, getTags) answer as the server's own views do.
mod views;
// Issue 18: the app's reads on the real go-course export, answered like the server.
mod go_course;
// Issue 18: design-document views in sandboxed JavaScript, reduce, signatures.
mod design_views;
// Mango `_find`, `_index` and `_explain` answer as the server's do.
mod find;
// The cold-load fast path; every wanted revision answered or retried.
mod pull_fast;
// Issue 11: the public library API on its own.
mod api;
// Issue 12: fault storms and the pull's retry policy and retry mode.
mod storms;
// Issue 12: cookie sessions and bearer tokens.
mod auth;
// Issue 11: the programs in examples/ run against the server.
mod examples;
// Issue 10: `settee compact` keeps everything, survives kills, refuses a held replica.
mod compact;
// Issue 12: the CouchDB 3 quirks layer imitates what it claims.
mod quirks;
// `_all_docs` and `get` with CouchDB 3.4's options, answered from a replica.
mod all_docs;
