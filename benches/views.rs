//! Views on a large replica, with the network taken out:
//! `cargo bench --bench views`.
//!
//! Builds a replica of synthetic course documents through the store's own
//! commit path (`internals::commit_blocking`, batches of 1000, as a pull
//! writes them): `SETTEE_VIEW_BENCH_DOCS` cards (default 100000) with an
//! `elo.global.score` and 2 to 5 of 20 tags each, and the 20 `TAG-*`
//! documents listing their cards. Then it measures:
//!
//! - warm-up: `Views::warm` of both built-in views from nothing (the first
//!   query after a pull, which the sync service runs ahead of time), and
//!   a second warm-up with nothing to do;
//! - `cards_near_rating(r, 20)` on the warm index (mean over many ratings);
//! - `tags_for_cards` of 20 cards on the warm index (mean over many sets);
//! - a CouchDB-shaped `query("elo", startkey, limit 20)`;
//! - an incremental warm-up after 1000 cards change and one tag gets a new
//!   revision with the same cards;
//! - `Views::check` of both views (the view half of `settee check`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use common::cpu_seconds;
use serde_json::json;
use settee::internals::{self, IncomingRev, WriteBatch};
use settee::revtree::RevPath;
use settee::views::{course, QueryOptions, Views};
use settee::{Replica, ReplicaConfig};
use std::time::{Duration, Instant};

const TAGS: u64 = 20;

/// A small deterministic generator (xorshift64*), so every run indexes
/// the same corpus.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rev(id: &str, seed: u64, body: serde_json::Value) -> IncomingRev {
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

/// A second revision of a document written by `build` with `seed`.
fn rev2(id: &str, seed: u64, body: serde_json::Value) -> IncomingRev {
    IncomingRev {
        id: id.into(),
        path: RevPath {
            start: 2,
            ids: vec![format!("{:032x}", seed | 1 << 63), format!("{seed:032x}")],
        },
        deleted: false,
        body: serde_json::value::to_raw_value(&body).unwrap(),
    }
}

fn build(replica: &Replica, n: u64) -> Vec<Vec<String>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tagged: Vec<Vec<String>> = vec![Vec::new(); TAGS as usize];
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let revs = (i..end)
            .map(|j| {
                let id = format!("c-{j:06}");
                let k = 2 + rng.below(4);
                let mut tags = Vec::new();
                while (tags.len() as u64) < k {
                    let t = rng.below(TAGS);
                    if !tags.contains(&t) {
                        tags.push(t);
                    }
                }
                for &t in &tags {
                    tagged[t as usize].push(id.clone());
                }
                let score = 600 + rng.below(800);
                rev(
                    &id,
                    j,
                    json!({
                        "docType": "CARD",
                        "elo": {"global": {"score": score, "count": j % 50}, "tags": {}, "misc": {}},
                        "tags": tags.iter().map(|t| format!("tag-{t}")).collect::<Vec<_>>(),
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
    let revs = tagged
        .iter()
        .enumerate()
        .map(|(t, cards)| {
            rev(
                &format!("TAG-tag-{t}"),
                n + t as u64,
                json!({"docType": "TAG", "name": format!("tag-{t}"), "snippit": "about this tag",
                       "wiki": "", "taggedCards": cards}),
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
    tagged
}

fn per_op(total: Duration, n: u32) -> String {
    format!("{:.1} µs", total.as_secs_f64() * 1e6 / f64::from(n))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench targets once as tests: keep that cheap.
    if args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench") {
        println!("views: run with `cargo bench --bench views`");
        return;
    }
    let n: u64 = std::env::var("SETTEE_VIEW_BENCH_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let cache_mb: u64 = std::env::var("SETTEE_VIEW_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let only = std::env::var("SETTEE_VIEW_BENCH_ONLY").ok();
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(
        dir.path(),
        ReplicaConfig::default().with_cache_capacity(cache_mb * 1024 * 1024),
    )
    .unwrap();
    let t = Instant::now();
    let tagged = build(&replica, n);
    println!(
        "built a replica of {n} cards and {TAGS} tags in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let views = match only.as_deref() {
        Some("elo") => Views::open(&replica, [settee::views::course::elo()]).unwrap(),
        Some("getTags") => Views::open(&replica, [settee::views::course::get_tags()]).unwrap(),
        _ => Views::open(&replica, course::views()).unwrap(),
    };
    let cpu0 = cpu_seconds();
    let report = views.warm().unwrap();
    let cpu = cpu_seconds() - cpu0;
    let rows: Vec<String> = report
        .views
        .iter()
        .map(|v| format!("{} {} rows", v.name, v.total_rows))
        .collect();
    println!(
        "warm-up, from nothing: {:.3} s wall, {cpu:.2} s CPU ({} docs, {}, {} batches)",
        report.elapsed.as_secs_f64(),
        report.views[0].docs_indexed,
        rows.join(", "),
        report.chunks
    );
    let again = views.warm().unwrap();
    println!(
        "warm-up with nothing to do: {:.1} µs",
        again.elapsed.as_secs_f64() * 1e6
    );

    if only.is_some() {
        return;
    }
    let mut rng = Rng(42);
    let reps = 2000u32;
    // Touch the paths once so the first timed call is not the first call.
    course::cards_near_rating(&views, 1000.0, 20).unwrap();
    let t = Instant::now();
    let mut found = 0;
    for _ in 0..reps {
        let r = 600.0 + rng.below(800) as f64;
        found += course::cards_near_rating(&views, r, 20).unwrap().len();
    }
    assert_eq!(found, 20 * reps as usize);
    println!(
        "cards_near_rating(r, 20), warm: {} per query",
        per_op(t.elapsed(), reps)
    );

    let t = Instant::now();
    let mut tags = 0;
    for _ in 0..reps {
        let ids: Vec<String> = (0..20).map(|_| format!("c-{:06}", rng.below(n))).collect();
        tags += course::tags_for_cards(&views, &ids).unwrap().len();
    }
    assert!(tags >= 40 * reps as usize);
    println!(
        "tags_for_cards(20 cards), warm: {} per query",
        per_op(t.elapsed(), reps)
    );

    let t = Instant::now();
    for _ in 0..reps {
        let q = QueryOptions::default()
            .start_key(json!(600 + rng.below(800)))
            .limit(20);
        let rows = views.rows("elo", &q).unwrap().count();
        assert!(rows > 0);
    }
    println!(
        "rows(\"elo\", startkey, limit 20), warm: {} per query",
        per_op(t.elapsed(), reps)
    );

    // An incremental pull: 1000 cards get new ratings, and one tag a new
    // revision listing the same cards.
    let revs: Vec<IncomingRev> = (0..1000)
        .map(|i| {
            let j = i * (n / 1000).max(1) % n;
            rev2(
                &format!("c-{j:06}"),
                j,
                json!({"docType": "CARD", "elo": {"global": {"score": 600 + rng.below(800)}},
                       "question": "x".repeat(300)}),
            )
        })
        .chain(std::iter::once(rev2(
            "TAG-tag-0",
            n,
            json!({"docType": "TAG", "name": "tag-0", "snippit": "about this tag",
                   "wiki": "", "taggedCards": tagged[0]}),
        )))
        .collect();
    internals::commit_blocking(
        &replica,
        &WriteBatch {
            revs,
            ..WriteBatch::default()
        },
    )
    .unwrap();
    let cpu0 = cpu_seconds();
    let report = views.warm().unwrap();
    println!(
        "warm-up after 1000 changed cards and 1 re-revised tag: {:.3} s wall, {:.2} s CPU ({} batches)",
        report.elapsed.as_secs_f64(),
        cpu_seconds() - cpu0,
        report.chunks
    );

    // What `settee check` adds for the views: every row against the map.
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let check = views.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.violations);
    println!(
        "views::check of both views: {:.3} s wall, {:.2} s CPU",
        t.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );
}
