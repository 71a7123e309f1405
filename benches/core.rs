//! Micro-benchmarks of the two CPU-heavy pieces of a pull: merging revision
//! paths into trees, and committing a 1000-revision batch to the replica
//! (one sled transaction plus a flush). `cargo bench --bench core`.
//!
//! End-to-end pull numbers against a real server come from
//! `scripts/bench-pull.sh`, not from here.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;
use settee::internals::{self, IncomingRev, WriteBatch};
use settee::revtree::{RevPath, RevTree};
use settee::{Replica, ReplicaConfig};

fn hash(i: u64) -> String {
    format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn linear_path(len: u64) -> RevPath {
    RevPath {
        start: len,
        ids: (0..len).rev().map(hash).collect(),
    }
}

fn revtree(c: &mut Criterion) {
    c.bench_function("merge 1000-rev path into empty tree", |b| {
        let path = linear_path(1000);
        b.iter(|| {
            let mut t = RevTree::default();
            t.merge(&path, false).unwrap();
            t
        })
    });
    c.bench_function("extend a 1000-rev tree by one rev + stem", |b| {
        let mut base = RevTree::default();
        base.merge(&linear_path(1000), false).unwrap();
        let mut next = linear_path(1001);
        next.ids[0] = "ffff".into();
        b.iter_batched(
            || base.clone(),
            |mut t| {
                t.merge(&next, false).unwrap();
                t.stem(1000);
                t
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("winner of a 20-leaf conflicted tree", |b| {
        let mut t = RevTree::default();
        for i in 0..20 {
            t.merge(
                &RevPath {
                    start: 2,
                    ids: vec![hash(i + 100), hash(1)],
                },
                i % 3 == 0,
            )
            .unwrap();
        }
        b.iter(|| t.winner())
    });
}

fn card(i: usize) -> IncomingRev {
    let body = json!({
        "docType": "CARD",
        "elo": {"global": {"score": 1000 + (i % 400), "count": i % 50}, "tags": {}, "misc": {}},
        "tags": ["math-00", "music-03"],
        "question": "x".repeat(500),
    });
    IncomingRev {
        id: format!("c-{i:06}"),
        path: RevPath {
            start: 1,
            ids: vec![hash(i as u64)],
        },
        deleted: false,
        body: serde_json::value::to_raw_value(&body).unwrap(),
    }
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("replica");
    group.sample_size(10);
    group.bench_function("commit 1000 new docs (1 transaction + flush)", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
                let batch = WriteBatch {
                    revs: (0..1000).map(card).collect(),
                    ..WriteBatch::default()
                };
                (dir, replica, batch)
            },
            |(dir, replica, batch)| {
                internals::commit_blocking(&replica, &batch).unwrap();
                (dir, replica)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, revtree, commit);
criterion_main!(benches);
