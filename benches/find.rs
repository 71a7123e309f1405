//! Mango `_find` on a large replica, with the network taken out:
//! `cargo bench --bench find`.
//!
//! Builds `SETTEE_FIND_BENCH_DOCS` synthetic cards (default 100000, about
//! 500 bytes each, as `benches/views.rs` writes them) through the store's
//! commit path (ids in write order, or shuffled with
//! `SETTEE_FIND_BENCH_SHUFFLE=1` as a pull writes them; page cache `SETTEE_FIND_BENCH_CACHE_MB`, default the
//! replica's 8 MiB), then measures (wall time, best and mean of several runs):
//!
//! - full scans (`_all_docs`, every document read and matched): a
//!   selector matching 20 documents, and one matching none;
//! - a full-scan page that stops early (`docType: CARD`, limit 25);
//! - the store alone: every raw winner in id order (what a full scan
//!   reads), and every document by `get`;
//! - `_index` on `elo.global.score` and its first use (the index build);
//! - 25-document pages through that index at many starting scores, and
//!   the same pages resumed from their bookmarks.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use common::{cpu_seconds, env_or};
use serde_json::{json, Value};
use settee::internals::{self, IncomingRev, WriteBatch};
use settee::query::{FindRequest, Query};
use settee::revtree::RevPath;
use settee::{Replica, ReplicaConfig};
use std::time::{Duration, Instant};

fn rev(id: &str, seed: u64, body: Value) -> IncomingRev {
    IncomingRev {
        id: id.into(),
        path: RevPath {
            start: 1,
            ids: vec![format!("{seed:032x}")],
        },
        deleted: false,
        body: serde_json::value::to_raw_value(&body).unwrap(),
    }
}

fn build(replica: &Replica, n: u64, shuffled: bool) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let revs = (i..end)
            .map(|j| {
                let score = 600 + next() % 800;
                let tags: Vec<String> = (0..2 + next() % 4).map(|_| format!("tag-{}", next() % 20)).collect();
                // Ids in another order than the writes (`SETTEE_FIND_BENCH_SHUFFLE`),
                // as a pull from CouchDB writes them (by sequence, not id).
                let id = if shuffled { (j * 7919) % n } else { j };
                rev(
                    &format!("c-{id:06}"),
                    j,
                    json!({
                        "docType": "CARD",
                        "id_displayable_data": [format!("DISPLAYABLE_DATA-{:016x}", next())],
                        "elo": {"global": {"score": score, "count": j % 50}, "tags": {}, "misc": {}},
                        "tags": tags,
                        "question": "x".repeat(300),
                    }),
                )
            })
            .collect();
        internals::commit_blocking(
            replica,
            &WriteBatch {
                revs,
                ..WriteBatch::default()
            },
        )
        .unwrap();
        i = end;
    }
    let revs = (0..20)
        .map(|t| {
            rev(
                &format!("TAG-tag-{t}"),
                n + t,
                json!({"docType": "TAG", "name": format!("tag-{t}")}),
            )
        })
        .collect();
    internals::commit_blocking(
        replica,
        &WriteBatch {
            revs,
            ..WriteBatch::default()
        },
    )
    .unwrap();
}

fn find(query: &Query, body: Value) -> (usize, Option<String>) {
    let found = query.find(&FindRequest::from_json(body).unwrap()).unwrap();
    (found.docs.len(), found.bookmark)
}

/// Best and mean wall time of `runs` runs of `f`, and the mean CPU time
/// (the machine is shared: wall time alone overstates the work).
fn time(runs: u32, mut f: impl FnMut(u32)) -> (Duration, Duration, f64) {
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    let cpu = cpu_seconds();
    for i in 0..runs {
        let t = Instant::now();
        f(i);
        let e = t.elapsed();
        best = best.min(e);
        total += e;
    }
    (best, total / runs, (cpu_seconds() - cpu) / f64::from(runs))
}

fn report(what: &str, (best, mean, cpu): (Duration, Duration, f64)) {
    println!(
        "{what:<54} best {:>8.3} ms  mean {:>8.3} ms  cpu {:>8.3} ms",
        best.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        cpu * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = env_or("SETTEE_FIND_BENCH_DOCS", "100000").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The replica's page cache: 8 MiB by default (a phone-sized setting);
    // a full scan of 100k documents reads ~60 MB of pages through it.
    let cache_mb: u64 = env_or("SETTEE_FIND_BENCH_CACHE_MB", "8").parse().unwrap();
    let replica = Replica::open(
        dir.path(),
        ReplicaConfig::default().with_cache_capacity(cache_mb << 20),
    )
    .unwrap();
    let t = Instant::now();
    let shuffled = env_or("SETTEE_FIND_BENCH_SHUFFLE", "0") == "1";
    build(&replica, n, shuffled);
    println!(
        "built {n} cards + 20 tags in {:.1} s (page cache {cache_mb} MiB)",
        t.elapsed().as_secs_f64()
    );
    let query = Query::open(&replica).unwrap();

    report(
        "store alone: every raw winner in id order",
        time(5, |_| {
            let n = replica.documents(..).with_raw_bodies().count();
            assert!(n > 0);
        }),
    );
    report(
        "store alone: every document (record + body) by get",
        time(3, |_| {
            let ids: Vec<String> = replica.all_docs(..).map(|d| d.unwrap().id).collect();
            for id in ids {
                replica.get(&id).unwrap();
            }
        }),
    );
    let tags = json!({"selector": {"docType": "TAG"}, "limit": 25});
    assert_eq!(find(&query, tags.clone()).0, 20);
    report(
        "full scan, 20 of all match (docType: TAG)",
        time(5, |_| {
            find(&query, tags.clone());
        }),
    );
    let none = json!({"selector": {"elo.global.score": {"$gt": 5000}}});
    report(
        "full scan, none match (score > 5000)",
        time(5, |_| {
            assert_eq!(find(&query, none.clone()).0, 0);
        }),
    );
    let cards = json!({"selector": {"docType": "CARD"}});
    report(
        "full scan page that stops early (docType: CARD, 25)",
        time(20, |_| {
            assert_eq!(find(&query, cards.clone()).0, 25);
        }),
    );

    let t = Instant::now();
    query
        .create_index(&json!({"index": {"fields": ["elo.global.score"]}}))
        .unwrap();
    let page = |score: u64| json!({"selector": {"elo.global.score": {"$gte": score}}, "limit": 25});
    assert_eq!(find(&query, page(700)).0, 25);
    println!(
        "_index on elo.global.score + first query (the build): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    report(
        "indexed 25-document page (score >= X, 200 Xs)",
        time(200, |i| {
            assert_eq!(find(&query, page(600 + u64::from(i) * 3)).0, 25);
        }),
    );
    let sorted = |score: u64| {
        json!({"selector": {"elo.global.score": {"$lte": score}}, "limit": 25,
               "sort": [{"elo.global.score": "desc"}], "fields": ["_id", "elo.global.score"]})
    };
    report(
        "indexed 25-document page, sorted desc, projected",
        time(200, |i| {
            assert_eq!(find(&query, sorted(1390 - u64::from(i) * 3)).0, 25);
        }),
    );
    let bookmarks: Vec<Value> = (0..200u64)
        .map(|i| {
            let mut body = page(600 + i * 3);
            body["bookmark"] = json!(find(&query, body.clone()).1);
            body
        })
        .collect();
    report(
        "indexed 25-document page resumed from a bookmark",
        time(200, |i| {
            assert_eq!(find(&query, bookmarks[i as usize].clone()).0, 25);
        }),
    );
}
