//! How the peak memory of committing a cold pull grows with the corpus, with
//! the network taken out: `cargo bench --bench store_memory`.
//!
//! Each probe runs in a fresh child process (this same executable) so that
//! its peak RSS (`VmHWM`) is its own. Two kinds of probe, at every size:
//!
//! - `replica`: settee's own write path, `internals::commit_blocking` with
//!   batches of synthetic cards (random-looking ids, ~600-byte bodies), one
//!   checkpoint per batch, as a pull writes them.
//! - `sled`: the same key pattern written straight to sled 0.34, one
//!   transaction per batch over three trees (id-keyed records, a sequence
//!   index, bodies) and a flush, with no settee code at all. It is the floor
//!   under the `replica` figure: what the storage engine itself keeps.
//! - `sled-seq`: as `sled`, but the record keys arrive in key order, which
//!   shows how much of the growth comes from inserting at random positions.
//!
//! Knobs (environment):
//! - `SETTEE_MEM_SIZES`: documents per probe (default `10000 100000`; add
//!   `300000` to see where growth flattens).
//! - `SETTEE_MEM_CACHE_MB`: sled `cache_capacity` for every probe (default 8,
//!   settee's default).
//! - `SETTEE_MEM_BATCH`: documents per batch (default 1000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use common::{env_or, invocation, peak_rss_kb, Invocation};
use serde_json::json;
use settee::internals::{self, CheckpointRecord, IncomingRev, WriteBatch};
use settee::revtree::RevPath;
use settee::{Replica, ReplicaConfig};
use sled::Transactional;
use std::process::Command;
use std::time::Instant;

const PROBES: [&str; 3] = ["replica", "sled", "sled-seq"];

/// Ids that spread over the whole key space, as CouchDB's uuids and the
/// course corpus's card ids do.
fn doc_id(i: u64, random: bool) -> String {
    let k = if random {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    } else {
        i
    };
    format!("c-{k:016x}")
}

fn card_body(i: u64) -> serde_json::Value {
    json!({
        "docType": "CARD",
        "elo": {"global": {"score": 1000 + (i % 400), "count": i % 50}, "tags": {}, "misc": {}},
        "tags": ["math-00", "music-03"],
        "question": "x".repeat(500),
    })
}

fn probe_replica(dir: &std::path::Path, n: u64, batch: u64, cache: u64) {
    let replica = Replica::open(dir, ReplicaConfig::default().with_cache_capacity(cache)).unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let revs = (i..end)
            .map(|j| IncomingRev {
                id: doc_id(j, true),
                path: RevPath {
                    start: 1,
                    ids: vec![format!("{:032x}", j ^ 0x5555)],
                },
                deleted: false,
                body: serde_json::value::to_raw_value(&card_body(j)).unwrap(),
            })
            .collect();
        let write = WriteBatch {
            revs,
            checkpoint: Some(CheckpointRecord::new("probe", &json!({ "last_seq": end })).unwrap()),
            ..WriteBatch::default()
        };
        internals::commit_blocking(&replica, &write).unwrap();
        i = end;
    }
}

fn probe_sled(dir: &std::path::Path, n: u64, batch: u64, cache: u64, random: bool) {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache)
        .open()
        .unwrap();
    let docs = db.open_tree("docs").unwrap();
    let by_seq = db.open_tree("by_seq").unwrap();
    let bodies = db.open_tree("bodies").unwrap();
    // About the size of a one-revision record in the replica's docs tree.
    let record = vec![b'r'; 120];
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let items: Vec<(String, Vec<u8>)> = (i..end)
            .map(|j| {
                (
                    doc_id(j, random),
                    serde_json::to_vec(&card_body(j)).unwrap(),
                )
            })
            .collect();
        (&docs, &by_seq, &bodies)
            .transaction(|(docs, by_seq, bodies)| {
                for (offset, (id, body)) in items.iter().enumerate() {
                    let seq = (i + offset as u64 + 1).to_be_bytes();
                    let _old = docs.get(id.as_bytes())?;
                    docs.insert(id.as_bytes(), record.as_slice())?;
                    by_seq.insert(&seq, id.as_bytes())?;
                    bodies.insert(&seq, body.as_slice())?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .unwrap();
        db.flush().unwrap();
        i = end;
    }
}

/// Child side: run one probe, print `peak_kb elapsed_ms`.
fn run_probe(kind: &str, n: u64) {
    let batch: u64 = env_or("SETTEE_MEM_BATCH", "1000").parse().unwrap();
    let cache: u64 = env_or("SETTEE_MEM_CACHE_MB", "8").parse::<u64>().unwrap() << 20;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    match kind {
        "replica" => probe_replica(dir.path(), n, batch, cache),
        "sled" => probe_sled(dir.path(), n, batch, cache, true),
        "sled-seq" => probe_sled(dir.path(), n, batch, cache, false),
        other => panic!("unknown probe {other}"),
    }
    println!("{} {}", peak_rss_kb(), started.elapsed().as_millis());
}

fn main() {
    match invocation("store_memory") {
        Invocation::Probe { kind, n } => return run_probe(&kind, n),
        Invocation::Test => return,
        Invocation::Bench => {}
    }
    let sizes: Vec<u64> = env_or("SETTEE_MEM_SIZES", "10000 100000")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let exe = std::env::current_exe().unwrap();
    println!(
        "peak RSS of committing a cold pull (batch {}, sled cache {} MB)",
        env_or("SETTEE_MEM_BATCH", "1000"),
        env_or("SETTEE_MEM_CACHE_MB", "8")
    );
    println!("| probe | docs | peak RSS MB | vs smallest | ms |");
    println!("| --- | --- | --- | --- | --- |");
    for kind in PROBES {
        let mut first = None;
        for &n in &sizes {
            let out = Command::new(&exe)
                .args(["--probe", kind, &n.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{kind} {n}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
            let (kb, ms) = (fields.next().unwrap(), fields.next().unwrap());
            let base = *first.get_or_insert(kb);
            println!(
                "| {kind} | {n} | {:.1} | {:.2} | {ms} |",
                kb as f64 / 1024.0,
                kb as f64 / base as f64
            );
        }
    }
}
