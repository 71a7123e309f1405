//! Queries on a 100k-card course replica, against PouchDB 9 on the same
//! documents: `cargo bench --bench query` prints one JSON line per
//! measurement on stdout (progress goes to stderr), in the format
//! `scripts/bench-query.sh` documents and interleaves with
//! `scripts/bench/pouch-query.js`:
//!
//! ```text
//! {"bench":"view_build_elo","side":"settee","engine":"builtin","ms":812.4,"cpu_ms":1390.0,"reps":1,"rows":1,"cards":100000,"docs":202203}
//! ```
//!
//! The corpus is `common::corpus` (app-shaped cards, displayable data and
//! tags: `SETTEE_QUERY_BENCH_CARDS` cards, default 100000;
//! `SETTEE_QUERY_BENCH_TAGS` tags, default 200; `SETTEE_QUERY_BENCH_SEED`,
//! default 42). `cargo bench --bench query -- --corpus-out FILE` only
//! writes it as NDJSON for `pouch-query.js --docs FILE` and exits.
//! `SETTEE_QUERY_BENCH_ORDER=id` commits the documents in id order instead
//! of generation order (the ids are uuid-like: generation order is a
//! random id order). `SETTEE_QUERY_BENCH_CACHE_MB=N` gives the replica a
//! page cache of N MiB (default: the library's 8 MiB).
//! `SETTEE_QUERY_BENCH_DIR=DIR` builds the replicas in
//! `DIR/a` and `DIR/b` and keeps them (for a profiler to open).
//!
//! Engines: the app's design documents in JavaScript (`js`, first), the
//! built-in Rust views (`builtin`), Mango `_find` (`mango`), under the same
//! bench names as `pouch-query.js` (see the list in
//! `scripts/bench-query.sh`). `SETTEE_QUERY_BENCH_ENGINES` picks which run
//! (comma-separated, default `js,mango,builtin`);
//! `SETTEE_QUERY_BENCH_SKIP_BUILTIN=1` is `js,mango`.
//!
//! - `load`: the corpus committed into a fresh replica (batches of 1000);
//! - `view_build_elo`, `view_build_getTags`: one view built from nothing
//!   and a `{limit: 1}` query of it (PouchDB builds a view on its first
//!   query); `view_build_all`: both views on a second fresh replica in
//!   one warm-up (`Views::warm`, what the sync service runs after a pull)
//!   plus a `{limit: 1}` query of each;
//! - `view_query_elo`, `view_query_getTags`: `{limit: 1}` on the built
//!   view, mean of 20;
//! - `view_query_elo_page`: `{startkey: 700 + (37k mod 600), limit: 20}`,
//!   mean of 200, through `Views::query` (engine `builtin`: CouchDB's
//!   response, with `offset`, which costs a walk over the rows before the
//!   first one) and through `Views::rows` (engine `builtin-rows`: the rows
//!   alone); `view_query_getTags_keys`: `{keys: 20 cards}` (cards
//!   `pick_card(20k + j)`), mean of 200; `rows` is the total over all.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use common::corpus::{self, Corpus};
use common::{cpu_seconds, env_or};
use serde_json::{json, Value};
use settee::query::{FindRequest, Query};
use settee::views::{course, QueryOptions, Views};
use std::time::Instant;

/// Prints one measurement line.
fn line(c: &Corpus, bench: &str, engine: &str, ms: f64, extra: Value) {
    let mut v = json!({
        "bench": bench, "side": "settee", "engine": engine,
        "ms": (ms * 1000.0).round() / 1000.0,
        "cards": c.cards, "docs": c.docs.len(),
    });
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    println!("{v}");
}

/// Runs `f` and returns its wall ms and CPU ms.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let out = f();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    (out, ms, (cpu_seconds() - cpu0) * 1e3)
}

fn rows(views: &Views, name: &str, q: &QueryOptions) -> usize {
    views.query(name, q).unwrap().rows.len()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench") {
        println!("query: run with `cargo bench --bench query`");
        return;
    }
    let cards: u64 = env_or("SETTEE_QUERY_BENCH_CARDS", "100000")
        .parse()
        .unwrap();
    let tags: u64 = env_or("SETTEE_QUERY_BENCH_TAGS", "200").parse().unwrap();
    let seed: u64 = env_or("SETTEE_QUERY_BENCH_SEED", "42").parse().unwrap();
    let t = Instant::now();
    let c = corpus::generate(cards, tags, seed);
    eprintln!(
        "query: generated {} docs ({cards} cards, {} tags, seed {seed}) in {:.2} s",
        c.docs.len(),
        c.tags,
        t.elapsed().as_secs_f64()
    );

    if let Some(at) = args.iter().position(|a| a == "--corpus-out") {
        let path = std::path::Path::new(&args[at + 1]);
        let (bytes, ms, _) = timed(|| corpus::write_ndjson(&c.docs, path).unwrap());
        line(
            &c,
            "corpus",
            "ndjson",
            ms,
            json!({"bytes": bytes, "file": path.display().to_string(), "seed": seed, "tags": c.tags}),
        );
        return;
    }

    // SETTEE_QUERY_BENCH_ORDER=id commits the documents sorted by id (the
    // corpus's ids are uuid-like, so generation order is random id order,
    // and the local sequence order differs from the id order).
    let mut c = c;
    if env_or("SETTEE_QUERY_BENCH_ORDER", "generation") == "id" {
        c.docs.sort_by(|a, b| a.id.cmp(&b.id));
        eprintln!("query: documents committed in id order");
    }
    // SETTEE_QUERY_BENCH_DIR keeps the replicas (for a profiler or a
    // probe to open afterwards) instead of a temporary directory.
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("SETTEE_QUERY_BENCH_DIR")
        .map_or_else(|| tmp.path().to_owned(), std::path::PathBuf::from);
    // SETTEE_QUERY_BENCH_CACHE_MB: the replica's page cache (default: the
    // library's, 8 MiB), for what reads cost against its size.
    let mut config = settee::ReplicaConfig::default();
    if let Some(mb) = std::env::var("SETTEE_QUERY_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        config = config.with_cache_capacity(mb << 20);
        eprintln!("query: page cache {mb} MiB");
    }
    let (replica, ms, cpu) =
        timed(|| corpus::build_replica_with(&dir.join("a"), &c.docs, config.clone()));
    line(&c, "load", "commit", ms, json!({"cpu_ms": cpu.round()}));

    // The app's design documents run in JavaScript (engine `js`): each
    // view built from nothing by its first `{limit: 1}` query, as PouchDB
    // builds it, then warm queries.
    let query = Query::open(&replica).unwrap();
    let engines = env_or("SETTEE_QUERY_BENCH_ENGINES", "js,mango,builtin");
    let run = |engine: &str| engines.split(',').any(|e| e.trim() == engine);
    if run("js") {
        bench_js(&c, &query);
    }
    if run("mango") {
        bench_mango(&c, &query);
    }
    if !run("builtin") || std::env::var_os("SETTEE_QUERY_BENCH_SKIP_BUILTIN").is_some() {
        return;
    }
    bench_builtin(&c, replica, &dir);
}

/// The app's design documents in JavaScript (engine `js`).
fn bench_js(c: &Corpus, query: &Query) {
    let js_rows = |name: &str, q: &QueryOptions| query.view(name, name, q).unwrap().rows().len();
    let limit1 = QueryOptions::default().limit(1);
    for name in ["elo", "getTags"] {
        let (n, ms, cpu) = timed(|| js_rows(name, &limit1));
        line(
            c,
            &format!("view_build_{name}"),
            "js",
            ms,
            json!({"cpu_ms": cpu.round(), "reps": 1, "rows": n}),
        );
    }
    for name in ["elo", "getTags"] {
        let reps = 20;
        let (n, ms, _) = timed(|| (0..reps).map(|_| js_rows(name, &limit1)).sum::<usize>());
        line(
            c,
            &format!("view_query_{name}"),
            "js",
            ms / f64::from(reps),
            json!({"reps": reps, "rows": n}),
        );
    }
    let reps = 200u32;
    let (n, ms, _) = timed(|| {
        (0..u64::from(reps))
            .map(|k| {
                let q = QueryOptions::default()
                    .start_key(json!(700 + (k * 37) % 600))
                    .limit(20);
                js_rows("elo", &q)
            })
            .sum::<usize>()
    });
    line(
        c,
        "view_query_elo_page",
        "js",
        ms / f64::from(reps),
        json!({"reps": reps, "rows": n}),
    );
    let (n, ms, _) = timed(|| {
        (0..u64::from(reps))
            .map(|k| {
                let keys = (0..20)
                    .map(|j| json!(corpus::pick_card(&c.card_ids, k * 20 + j)))
                    .collect();
                js_rows("getTags", &QueryOptions::default().keys(keys))
            })
            .sum::<usize>()
    });
    line(
        c,
        "view_query_getTags_keys",
        "js",
        ms / f64::from(reps),
        json!({"reps": reps, "rows": n}),
    );
}

/// Mango `_find` (engine `mango`), the same requests as pouch-query.js.
fn bench_mango(c: &Corpus, query: &Query) {
    let find = |body: Value| {
        query
            .find(&FindRequest::from_json(body).unwrap())
            .unwrap()
            .docs
            .len()
    };
    let mean3 = |bench: &str, body: Value| {
        let (n, ms, cpu) = timed(|| (0..3).map(|_| find(body.clone())).sum::<usize>());
        line(
            c,
            bench,
            "mango",
            ms / 3.0,
            json!({"cpu_ms": (cpu / 3.0).round(), "reps": 3, "rows": n}),
        );
    };
    mean3(
        "find_scan",
        json!({"selector": {"elo.global.count": {"$gt": corpus::SCAN_COUNT_GT}}, "limit": 25}),
    );
    mean3(
        "find_regex",
        json!({"selector": {"docType": "DISPLAYABLE_DATA",
               "data.0.data": {"$regex": format!(".*{}.*", corpus::SEARCH_WORD)}}}),
    );
    mean3(
        "find_cards_1000",
        json!({"selector": {"docType": "CARD"}, "limit": 1000}),
    );
    let indexed = |x: u64| json!({"selector": {"docType": "CARD", "elo.global.score": {"$gt": x}}, "limit": 25});
    let (_, ms, cpu) = timed(|| {
        query
            .create_index(&json!({"index": {"fields": ["docType", "elo.global.score"]}}))
            .unwrap();
        // settee builds an index on its first use (or a warm-up), as CouchDB does.
        query.warm().unwrap();
    });
    line(
        c,
        "find_index_create",
        "mango",
        ms,
        json!({"cpu_ms": cpu.round()}),
    );
    let (n, ms, _) = timed(|| find(indexed(1000)));
    line(
        c,
        "find_indexed_first",
        "mango",
        ms,
        json!({"reps": 1, "rows": n}),
    );
    let reps = 50u32;
    let (n, ms, _) = timed(|| {
        (0..u64::from(reps))
            .map(|k| find(indexed(700 + (k * 53) % 600)))
            .sum::<usize>()
    });
    line(
        c,
        "find_indexed",
        "mango",
        ms / f64::from(reps),
        json!({"reps": reps, "rows": n}),
    );
    mean3(
        "find_cards_1000_indexed",
        json!({"selector": {"docType": "CARD"}, "limit": 1000}),
    );
}

/// The built-in Rust views (engine `builtin`); consumes the replica, then
/// builds a second one in `dir` for the one-warm-up measurement.
fn bench_builtin(c: &Corpus, replica: settee::Replica, dir: &std::path::Path) {
    let limit1 = QueryOptions::default().limit(1);
    // One view at a time, as PouchDB builds them (on each one's first query).
    let views = Views::open(&replica, course::views()).unwrap();
    for name in ["elo", "getTags"] {
        let (n, ms, cpu) = timed(|| {
            views.update(name).unwrap();
            rows(&views, name, &limit1)
        });
        line(
            c,
            &format!("view_build_{name}"),
            "builtin",
            ms,
            json!({"cpu_ms": cpu.round(), "reps": 1, "rows": n, "total_rows": views.state(name).unwrap().map(|s| s.rows)}),
        );
    }
    for name in ["elo", "getTags"] {
        let reps = 20;
        let (n, ms, _) = timed(|| {
            (0..reps)
                .map(|_| rows(&views, name, &limit1))
                .sum::<usize>()
        });
        line(
            c,
            &format!("view_query_{name}"),
            "builtin",
            ms / f64::from(reps),
            json!({"reps": reps, "rows": n}),
        );
    }
    let reps = 200u32;
    let (n, ms, _) = timed(|| {
        (0..u64::from(reps))
            .map(|k| {
                let q = QueryOptions::default()
                    .start_key(json!(700 + (k * 37) % 600))
                    .limit(20);
                rows(&views, "elo", &q)
            })
            .sum::<usize>()
    });
    line(
        c,
        "view_query_elo_page",
        "builtin",
        ms / f64::from(reps),
        json!({"reps": reps, "rows": n}),
    );
    // The same pages through `Views::rows`, which skips what `query` adds
    // for CouchDB's response: `offset`, a walk over the rows before the
    // first one, and `total_rows`.
    let (n, ms, _) = timed(|| {
        (0..u64::from(reps))
            .map(|k| {
                let q = QueryOptions::default()
                    .start_key(json!(700 + (k * 37) % 600))
                    .limit(20);
                views.rows("elo", &q).unwrap().count()
            })
            .sum::<usize>()
    });
    line(
        c,
        "view_query_elo_page",
        "builtin-rows",
        ms / f64::from(reps),
        json!({"reps": reps, "rows": n}),
    );
    let (n, ms, _) = timed(|| {
        (0..u64::from(reps))
            .map(|k| {
                let keys = (0..20)
                    .map(|j| json!(corpus::pick_card(&c.card_ids, k * 20 + j)))
                    .collect();
                rows(&views, "getTags", &QueryOptions::default().keys(keys))
            })
            .sum::<usize>()
    });
    line(
        c,
        "view_query_getTags_keys",
        "builtin",
        ms / f64::from(reps),
        json!({"reps": reps, "rows": n}),
    );
    drop(views);
    drop(replica);

    // Both views in one warm-up, on a second fresh replica.
    let replica = corpus::build_replica(&dir.join("b"), &c.docs);
    let views = Views::open(&replica, course::views()).unwrap();
    let (n, ms, cpu) = timed(|| {
        views.warm().unwrap();
        rows(&views, "elo", &limit1) + rows(&views, "getTags", &limit1)
    });
    line(
        c,
        "view_build_all",
        "builtin",
        ms,
        json!({"cpu_ms": cpu.round(), "reps": 1, "rows": n}),
    );
}
