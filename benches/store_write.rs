//! The local ceiling of a cold pull: the same synthetic course documents a
//! pull would commit, written through `internals::commit_blocking` with no
//! network and no server, in id order (PouchDB Server's `_changes`) and in
//! shuffled id order (a sharded CouchDB's feed). `cargo bench --bench
//! store_write`.
//!
//! Prints, per order, wall µs per document, the process's CPU (user+sys)
//! µs per document over the commits only (the batches are built before
//! the clock starts), and the replica's size on disk. Each order runs in a
//! fresh child process of this executable, so neither inherits the other's
//! allocator state or sled threads. For where the CPU goes, run a probe
//! under a profiler: `perf record -g target/release/deps/store_write-* --probe shuffled 100000`.
//!
//! Knobs (environment):
//! - `SETTEE_STORE_DOCS`: documents per run (default 100000).
//! - `SETTEE_STORE_BATCH`: documents per commit (default 1000, a pull's
//!   default batch size).
//! - `SETTEE_STORE_ROUNDS`: runs per order, interleaved (default 3).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use common::{cpu_seconds, env_or, invocation, Invocation};
use serde_json::json;
use settee::internals::{self, CheckpointRecord, IncomingRev, WriteBatch};
use settee::revtree::RevPath;
use settee::{Replica, ReplicaConfig};
use std::process::Command;
use std::time::Instant;

/// A small deterministic generator (splitmix64), so every run and both
/// orders commit byte-identical documents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A card shaped like the anchor-bench course corpus (`seed.js`): a
/// 300–800 character question, 2–5 of 200 tags, an elo block. About 5 % of
/// cards arrive at generation 2–3 with their history, as `--realistic`
/// updates leave them.
fn card(i: u64) -> IncomingRev {
    let mut r = Rng(i);
    let qlen = 300 + r.below(500) as usize;
    let question: String = (0..qlen)
        .map(|k| (b'a' + ((i as usize + k * 7) % 26) as u8) as char)
        .collect();
    let tags: Vec<String> = (0..2 + r.below(4))
        .map(|_| format!("tag-{:03}", r.below(200)))
        .collect();
    let body = json!({
        "docType": "CARD",
        "courseId": "course-bench",
        "question": question,
        "answer": format!("answer {i}"),
        "tags": tags,
        "elo": {"global": {"score": 800 + r.below(400), "count": r.below(50)}, "tags": {}, "misc": {}},
        "created": "2026-01-01T00:00:00.000Z",
    });
    let generation = if r.below(20) == 0 { 2 + r.below(2) } else { 1 };
    let ids = (0..generation)
        .map(|g| format!("{:032x}", (i << 8 | g) ^ 0x5555_aaaa))
        .collect();
    IncomingRev {
        id: format!("c-{i:06}"),
        path: RevPath {
            start: generation,
            ids,
        },
        deleted: false,
        body: serde_json::value::to_raw_value(&body).unwrap(),
    }
}

/// Child side: commit `n` cards in `order`, print `wall_ms cpu_s bytes`.
fn run_probe(order: &str, n: u64) {
    let batch: usize = env_or("SETTEE_STORE_BATCH", "1000").parse().unwrap();
    let mut ids: Vec<u64> = (0..n).collect();
    match order {
        "id" => {}
        "shuffled" => {
            let mut r = Rng(42);
            for k in (1..ids.len()).rev() {
                ids.swap(k, r.below(k as u64 + 1) as usize);
            }
        }
        other => panic!("unknown order {other}"),
    }
    let batches: Vec<WriteBatch> = ids
        .chunks(batch)
        .enumerate()
        .map(|(b, chunk)| WriteBatch {
            revs: chunk.iter().map(|&i| card(i)).collect(),
            checkpoint: Some(CheckpointRecord::new("bench", &json!({"last_seq": b})).unwrap()),
            ..WriteBatch::default()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    let cpu = cpu_seconds();
    let started = Instant::now();
    for b in &batches {
        internals::commit_blocking(&replica, b).unwrap();
    }
    let wall = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    assert_eq!(replica.doc_count().unwrap(), n);
    drop(replica);
    println!(
        "{} {cpu:.2} {}",
        wall.as_millis(),
        settee::maintenance::dir_size(dir.path())
    );
}

fn main() {
    match invocation("store_write") {
        Invocation::Probe { kind, n } => return run_probe(&kind, n),
        Invocation::Test => return,
        Invocation::Bench => {}
    }
    let n: u64 = env_or("SETTEE_STORE_DOCS", "100000").parse().unwrap();
    let rounds: u64 = env_or("SETTEE_STORE_ROUNDS", "3").parse().unwrap();
    let exe = std::env::current_exe().unwrap();
    println!(
        "commit {n} cards in batches of {} (no network), {rounds} interleaved round(s)",
        env_or("SETTEE_STORE_BATCH", "1000")
    );
    println!("| order | round | wall µs/doc | CPU µs/doc (user+sys) | disk MB |");
    println!("| --- | --- | --- | --- | --- |");
    for round in 1..=rounds {
        for order in ["id", "shuffled"] {
            let out = Command::new(&exe)
                .args(["--probe", order, &n.to_string()])
                .output()
                .unwrap();
            assert!(out.status.success(), "{order}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = text.split_whitespace().collect();
            let ms: f64 = f[0].parse().unwrap();
            let cpu: f64 = f[1].parse().unwrap();
            let bytes: f64 = f[2].parse().unwrap();
            println!(
                "| {order} | {round} | {:.1} | {:.1} | {:.0} |",
                ms * 1000.0 / n as f64,
                cpu * 1e6 / n as f64,
                bytes / 1e6
            );
        }
    }
}
