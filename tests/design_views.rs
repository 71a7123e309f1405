//! Issue 18: design-document views run from the replica's own `_design/*`
//! documents, in sandboxed JavaScript: rows and reductions as the server's
//! own views give them (randomized queries, proptest), a runaway map
//! stopped with a clear error while the rest stays usable, and CouchDB's
//! rules for changed and deleted design documents.

use crate::support::{self, TestDb};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use settee::query::{Query, ScriptLimits};
use settee::views::{QueryOptions, Update};
use settee::Replica;
use std::time::{Duration, Instant};

/// Views over the seeded course (cards with `elo`, tags, the hostile
/// extras): every built-in reduce, a JavaScript reduce with rereduce, a
/// CommonJS module, array keys for `group_level`, and a map that throws
/// for some documents. Keys avoid strings whose order differs between
/// CouchDB's ICU collation and PouchDB's (case, punctuation against
/// letters): settee follows CouchDB's.
fn stats_ddoc() -> Value {
    json!({
        "_id": "_design/stats",
        "language": "javascript",
        "views": {
            "lib": {"score": "exports.of = function (doc) { return doc.elo && doc.elo.global ? doc.elo.global.score : null; };"},
            "byTag": {
                "map": "function (doc) { if (doc.docType === 'CARD') { var s = doc.elo && doc.elo.global ? doc.elo.global.score : null; for (var i = 0; i < doc.tags.length; i++) { emit([doc.tags[i], s % 3, doc._id.length], s); } } }",
                "reduce": "_sum"
            },
            "withLib": {
                "map": "function (doc) { if (doc.docType === 'CARD') { var s = require('views/lib/score').of(doc); for (var i = 0; i < doc.tags.length; i++) { emit([doc.tags[i], s % 3, doc._id.length], s); } } }",
                "reduce": "_sum"
            },
            "count": {
                "map": "function (doc) { emit(doc.docType || null, 1); }",
                "reduce": "_count"
            },
            "stats": {
                "map": "function (doc) { if (doc.elo && doc.elo.global) { emit([doc.tags ? doc.tags[0] : null, doc.elo.global.count % 5], doc.elo.global.score); } }",
                "reduce": "_stats"
            },
            "js": {
                "map": "function (doc) { if (doc.docType === 'CARD') { emit(doc.tags.length, doc.elo.global.count); } }",
                "reduce": "function (keys, values, rereduce) { if (rereduce) { return values.reduce(function (a, b) { return {n: a.n + b.n, max: Math.max(a.max, b.max)}; }); } return {n: values.length, max: Math.max.apply(null, values)}; }"
            },
            "throws": {
                "map": "function (doc) { if (doc.hostile) { throw new Error('no hostile ids'); } emit(doc.docType || null, doc._id.length); }"
            }
        }
    })
}

async fn seeded_with_ddoc(tag: &str) -> (TestDb, tempfile::TempDir, Replica) {
    let db = TestDb::seeded(tag, &["--cards", "300", "--extras", "--realistic"]).await;
    db.bulk_docs(vec![stats_ddoc()], true).await;
    let (dir, replica) = support::temp_replica();
    support::pull(&replica, &db.remote(), 100, 4).await;
    (db, dir, replica)
}

/// The server's answer to a view query given as CouchDB parameters.
async fn server_view(db: &TestDb, view: &str, params: &Value) -> (u16, Value) {
    db.query_with(&format!("_design/stats/_view/{view}"), params)
        .await
}

fn settee_view(
    query: &Query,
    view: &str,
    params: &Value,
) -> Result<Value, settee::query::QueryError> {
    let q = QueryOptions::from_params(params.as_object().unwrap()).unwrap();
    query.view("stats", view, &q).map(|r| r.to_json())
}

/// Rows equal, numbers as numbers: PouchDB Server hands view keys back
/// through its index encoding, which turns -1502 into -1502.000000000001.
fn same(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => got == want,
    }
}

#[tokio::test]
async fn reduce_group_and_group_level_answer_like_the_server() {
    let (db, _dir, replica) = seeded_with_ddoc("dv-reduce").await;
    let query = Query::open(&replica).unwrap();
    let cases = [
        ("count", json!({})),
        ("count", json!({"group": true})),
        (
            "count",
            json!({"group": true, "descending": true, "limit": 2, "skip": 1}),
        ),
        (
            "count",
            json!({"reduce": false, "limit": 5, "startkey": "CARD"}),
        ),
        (
            "count",
            json!({"keys": ["TAG", "EXTRA", "nope"], "group": true}),
        ),
        ("byTag", json!({})),
        ("byTag", json!({"group_level": 1})),
        (
            "byTag",
            json!({"group_level": 2, "startkey": ["math"], "endkey": ["music", {}]}),
        ),
        ("byTag", json!({"group": true, "limit": 7})),
        ("byTag", json!({"group_level": 0})),
        ("stats", json!({"group_level": 1})),
        ("stats", json!({})),
        ("js", json!({})),
        ("js", json!({"group": true})),
        ("throws", json!({"limit": 500})),
    ];
    // `require` of a design document's module: PouchDB's views have no
    // CommonJS modules (the map throws there), so its rows are checked
    // against its twin without the module, and against CouchDB itself.
    for params in [json!({"group_level": 2}), json!({"reduce": false})] {
        let lib = settee_view(&query, "withLib", &params).unwrap();
        let plain = settee_view(&query, "byTag", &params).unwrap();
        assert_eq!(lib["rows"], plain["rows"], "{params}");
        if support::server().is_couchdb {
            let (_, want) = server_view(&db, "withLib", &params).await;
            assert!(same(&lib["rows"], &want["rows"]), "{params}");
        }
    }
    for (view, params) in cases {
        let got = settee_view(&query, view, &params).unwrap();
        let (status, want) = server_view(&db, view, &params).await;
        assert_eq!(status, 200, "{view} {params}: {want}");
        assert!(
            same(&got["rows"], &want["rows"]),
            "{view} {params}:\n settee {}\n server {}",
            got["rows"],
            want["rows"]
        );
    }
}

/// Random view queries: key ranges, direction, paging, grouping.
fn query_params() -> impl Strategy<Value = (&'static str, Value)> {
    let tags = prop::sample::select(vec!["math", "music", "reading", "logic", "zzz", ""]);
    let view = prop::sample::select(vec!["byTag", "count", "stats"]);
    (
        view,
        prop::option::of((tags.clone(), 0..3i64)),
        prop::option::of((tags, 0..3i64)),
        any::<bool>(),
        prop::option::of(0usize..40),
        0usize..5,
        prop::sample::select(vec!["none", "reduce_false", "group", "level1", "level2"]),
        any::<bool>(),
    )
        .prop_map(
            |(view, start, end, descending, limit, skip, grouping, inclusive_end)| {
                let key = |(t, n): (&str, i64)| match view {
                    "count" => json!(["CARD", "TAG", "EXTRA", ""][n as usize % 4]),
                    _ => json!([t, n]),
                };
                let (mut start, mut end) = (start.map(key), end.map(key));
                // Ranges the server accepts: start before end in the direction.
                if let (Some(s), Some(e)) = (&start, &end) {
                    let ord = settee::views::collate(s, e);
                    if (ord == std::cmp::Ordering::Greater) != descending
                        && ord != std::cmp::Ordering::Equal
                    {
                        std::mem::swap(&mut start, &mut end);
                    }
                }
                let mut p = serde_json::Map::new();
                if let Some(s) = start {
                    p.insert("startkey".into(), s);
                }
                if let Some(e) = end {
                    p.insert("endkey".into(), e);
                }
                p.insert("descending".into(), json!(descending));
                p.insert("inclusive_end".into(), json!(inclusive_end));
                if let Some(l) = limit {
                    p.insert("limit".into(), json!(l));
                }
                p.insert("skip".into(), json!(skip));
                match grouping {
                    "reduce_false" => {
                        p.insert("reduce".into(), json!(false));
                    }
                    "group" => {
                        p.insert("group".into(), json!(true));
                    }
                    "level1" => {
                        p.insert("group_level".into(), json!(1));
                    }
                    "level2" => {
                        p.insert("group_level".into(), json!(2));
                    }
                    _ => {}
                }
                (view, Value::Object(p))
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_view_queries_answer_like_the_server() {
    let (db, _dir, replica) = seeded_with_ddoc("dv-random").await;
    let query = Query::open(&replica).unwrap();
    query.warm().unwrap();
    let cases = std::env::var("SETTEE_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&query_params(), |(view, params)| {
        let (status, want) =
            tokio::task::block_in_place(|| handle.block_on(server_view(&db, view, &params)));
        let got = settee_view(&query, view, &params);
        match got {
            Ok(got) => {
                prop_assert_eq!(status, 200, "{} {}: server {}", view, params, want);
                prop_assert!(
                    same(&got["rows"], &want["rows"]),
                    "{} {}:\n settee {}\n server {}",
                    view,
                    params,
                    got["rows"],
                    want["rows"]
                );
            }
            Err(e) => {
                prop_assert_eq!(e.status(), status, "{} {}: {} vs {}", view, params, e, want);
            }
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_runaway_map_is_stopped_and_everything_else_stays_usable() {
    let db = TestDb::seeded("dv-sandbox", &["--cards", "40"]).await;
    db.bulk_docs(
        vec![
            json!({"_id": "_design/bad", "views": {
                "spin": {"map": "function (doc) { if (doc._id === 'c-000007') { while (true) {} } emit(doc._id, null); }"},
                "hog": {"map": "function (doc) { var a = []; for (;;) { a.push(new Uint8Array(1 << 20)); } }"},
                "host": {"map": "function (doc) { emit(typeof process + typeof require('fs'), null); }"}
            }}),
            json!({"_id": "_design/good", "views": {"ids": {"map": "function (doc) { emit(doc._id, null); }"}}}),
        ],
        true,
    )
    .await;
    let (_dir, replica) = support::temp_replica();
    support::pull(&replica, &db.remote(), 100, 4).await;
    let limits = ScriptLimits::default()
        .with_time(Duration::from_millis(300))
        .with_memory(32 << 20);
    let query = Query::open(&replica).unwrap().with_limits(limits);

    let started = Instant::now();
    let err = query
        .view("bad", "spin", &QueryOptions::default())
        .unwrap_err();
    assert_eq!(err.status(), 500, "{err}");
    assert_eq!(err.error(), "os_process_error", "{err}");
    assert!(err.reason().contains("c-000007"), "{err}");
    assert!(err.to_string().contains("longer than its limit"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let err = query
        .view("bad", "hog", &QueryOptions::default())
        .unwrap_err();
    assert_eq!(err.status(), 500, "{err}");
    assert!(err.to_string().contains("memory"), "{err}");

    // Reaching for the host finds nothing: the document is indexed with no
    // rows (CouchDB logs the exception), as for any map that throws.
    let host = query.view("bad", "host", &QueryOptions::default()).unwrap();
    assert!(host.rows().is_empty());

    // Everything else answers: another design document, the replica.
    let ids = query.view("good", "ids", &QueryOptions::default()).unwrap();
    assert_eq!(ids.rows().len() as u64, replica.doc_count().unwrap() - 4);
    assert!(replica.get("c-000007").unwrap().is_some());
    let warmed = query.warm().unwrap();
    let failed: Vec<&str> = warmed.failed.iter().map(|f| f.view.as_str()).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed.contains(&"_design/bad/_view/spin") && failed.contains(&"_design/bad/_view/hog")
    );
    // The good view was warmed; a second look has nothing to do.
    let again = query
        .view(
            "good",
            "ids",
            &QueryOptions::default().update(Update::False),
        )
        .unwrap();
    assert_eq!(again.rows().len(), ids.rows().len());
}

#[tokio::test]
async fn a_changed_view_rebuilds_alone_and_a_deleted_design_doc_drops_its_indexes() {
    let db = TestDb::seeded("dv-signature", &["--cards", "30"]).await;
    let ddoc = json!({"_id": "_design/two", "views": {
        "a": {"map": "function (doc) { emit(doc._id, 1); }"},
        "b": {"map": "function (doc) { if (doc.elo) emit(doc.elo.global.score, null); }"}
    }});
    db.bulk_docs(vec![ddoc.clone()], true).await;
    let (_dir, replica) = support::temp_replica();
    support::pull(&replica, &db.remote(), 100, 4).await;
    let query = Query::open(&replica).unwrap();
    let first = query.warm().unwrap();
    assert!(
        first
            .report
            .view("_design/two/_view/a")
            .unwrap()
            .docs_indexed
            > 0
    );

    // Only b's map changes (and a reduce is added to a: no rebuild).
    let current = db.get_json("_design/two").await;
    let mut changed = current.clone();
    changed["views"]["b"]["map"] =
        json!("function (doc) { if (doc.elo) emit(-doc.elo.global.score, null); }");
    changed["views"]["a"]["reduce"] = json!("_count");
    let (status, body) = db
        .request(reqwest::Method::PUT, "_design/two", Some(changed))
        .await;
    assert_eq!(status, 201, "{body}");
    support::pull(&replica, &db.remote(), 100, 4).await;
    let second = query.warm().unwrap();
    let a = second.report.view("_design/two/_view/a").unwrap();
    let b = second.report.view("_design/two/_view/b").unwrap();
    assert!(!a.rebuilt && a.docs_indexed <= 1, "{a:?}");
    assert!(b.rebuilt && b.docs_indexed > 1, "{b:?}");
    let (_, server_b) = db
        .request(reqwest::Method::GET, "_design/two/_view/b", None)
        .await;
    let got_b = query
        .view("two", "b", &QueryOptions::default())
        .unwrap()
        .to_json();
    assert!(
        same(&got_b["rows"], &server_b["rows"]),
        "{got_b}\n{server_b}"
    );
    let count = query
        .view("two", "a", &QueryOptions::default())
        .unwrap()
        .to_json();
    let not_design = replica
        .all_docs(..)
        .filter(|d| !d.as_ref().unwrap().id.starts_with("_design/"))
        .count();
    assert_eq!(count["rows"][0]["value"], json!(not_design));

    // Deleted on the server: pulled, then its indexes are dropped.
    let rev = db.get_json("_design/two").await["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    db.delete_doc("_design/two", &rev).await;
    support::pull(&replica, &db.remote(), 100, 4).await;
    let third = query.warm().unwrap();
    let mut dropped = third.dropped.clone();
    dropped.sort();
    assert_eq!(dropped, ["_design/two/_view/a", "_design/two/_view/b"]);
    let err = query
        .view("two", "a", &QueryOptions::default())
        .unwrap_err();
    assert_eq!(
        err.to_json(),
        json!({"error": "not_found", "reason": "deleted"})
    );
    assert!(query.warm().unwrap().dropped.is_empty());
}
