//! Mango `_find` on the replica against the server's own `POST /db/_find`:
//! the same documents in the same order for many selectors (full scans and
//! indexes pulled from the server or created locally), sorts, paging with
//! bookmarks, CouchDB's errors, and a property test over random selectors.
//!
//! PouchDB Server bundles pouchdb-find 7.3.1, which differs from CouchDB
//! 3.4 where noted (`couchdb_only` cases, `pouchdb_differs`): it has no
//! default limit (CouchDB's is 25), so differential cases pass `limit`;
//! with `COUCHDB_URL` every case is compared with CouchDB itself.

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use settee::query::{FindRequest, Query};
use settee::Replica;

/// The server's `_find` answer (status, body), its attachment stubs with
/// the digests a replica holds (CouchDB digests the gzip bytes of the
/// attachments it compresses: see `TestDb::get_doc_as_held`).
async fn server_find(db: &TestDb, body: &Value) -> (u16, Value) {
    let (status, mut found) = db
        .request(reqwest::Method::POST, "_find", Some(body.clone()))
        .await;
    if let Some(docs) = found.get_mut("docs").and_then(Value::as_array_mut) {
        for doc in docs {
            let (Some(id), Some(rev)) = (doc["_id"].as_str(), doc["_rev"].as_str()) else {
                continue;
            };
            if doc.get("_attachments").is_some() {
                let held = db
                    .get_doc_as_held(&format!("{}?rev={}", enc_id(id), enc(rev)))
                    .await;
                doc["_attachments"] = held["_attachments"].clone();
            }
        }
    }
    (status, found)
}

/// settee's answer as CouchDB's body (or error body) and status.
fn settee_find(replica: &Replica, body: &Value) -> (u16, Value) {
    let query = Query::open(replica).unwrap();
    match FindRequest::from_json(body.clone()).and_then(|r| query.find(&r)) {
        Ok(found) => (200, found.to_json()),
        Err(e) => (e.status(), e.to_json()),
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["docs"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|doc| doc["_id"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts settee answers `body` with the server's documents, in order.
async fn assert_same_docs(db: &TestDb, replica: &Replica, body: &Value) {
    let (status, want) = server_find(db, body).await;
    assert_eq!(status, 200, "server: {body}: {want}");
    let (got_status, got) = settee_find(replica, body);
    assert_eq!(got_status, 200, "settee: {body}: {got}");
    assert_eq!(ids(&got), ids(&want), "{body}");
    let none = Vec::new();
    let got_docs = got["docs"].as_array().unwrap_or(&none);
    let want_docs = want["docs"].as_array().unwrap_or(&none);
    for (g, w) in got_docs.iter().zip(want_docs) {
        assert_eq!(g, w, "{body}: first differing document");
    }
}

/// A pulled copy of a seeded database: 200 cards, tags, the extras.
async fn seeded_replica(tag: &str) -> (TestDb, tempfile::TempDir, Replica) {
    let db = TestDb::seeded(tag, &["--cards", "200", "--extras"]).await;
    let (dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    (db, dir, replica)
}

/// Selectors both servers answer alike (pouchdb-find 7 agrees with
/// CouchDB on these).
fn shared_selectors() -> Vec<Value> {
    vec![
        json!({}),
        json!({"docType": "CARD"}),
        json!({"docType": {"$eq": "TAG"}}),
        json!({"docType": {"$in": ["TAG", "EXTRA"]}}),
        json!({"elo.global.score": {"$gt": 1100}}),
        json!({"elo.global.score": {"$gte": 900, "$lt": 1000}}),
        json!({"elo.global.score": {"$lte": 800}}),
        json!({"elo.global.count": {"$mod": [7, 3]}}),
        json!({"tags": {"$size": 3}}),
        json!({"tags": {"$all": ["tag-0", "tag-1"]}}),
        json!({"tags": {"$elemMatch": {"$eq": "tag-3"}}}),
        json!({"question": {"$regex": "lorem"}}),
        json!({"hostile": true}),
        json!({"hostile": {"$exists": true}}),
        json!({"elo": {"$exists": false}}),
        json!({"v": {"$type": "number"}}),
        json!({"name": {"$type": "string"}}),
        json!({"$or": [{"docType": "TAG"}, {"elo.global.score": {"$gt": 1300}}]}),
        json!({"$and": [{"docType": "CARD"}, {"elo.global.count": {"$lt": 50}}]}),
        json!({"_id": {"$gt": "c-000100"}}),
        json!({"_id": {"$gte": "c-000010", "$lte": "c-000020"}}),
        json!({"_id": {"$regex": "^x-"}}),
        json!({"branch": "sibling"}),
    ]
}

/// Selectors on which pouchdb-find 7 differs from CouchDB: it lets `$ne`
/// and `$nin` (and `$not` around a condition) match documents without the
/// field, where CouchDB needs the field (`mango_selector:match`). With the
/// field required explicitly both agree, so on PouchDB Server that is what
/// the server is asked.
fn missing_field_selectors() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"docType": {"$ne": "CARD"}}), "docType"),
        (json!({"docType": {"$nin": ["TAG", "CARD"]}}), "docType"),
        (json!({"v": {"$ne": 1}}), "v"),
        (
            json!({"$nor": [{"docType": "CARD"}, {"docType": "TAG"}]}),
            "docType",
        ),
        (
            json!({"$not": {"elo.global.score": {"$gt": 1000}}}),
            "elo.global.score",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields_match_nothing_but_exists_false() {
    let (db, _dir, replica) = seeded_replica("find-missing").await;
    for (selector, field) in missing_field_selectors() {
        let body = json!({"selector": selector, "limit": 1000});
        let asked = if server().is_couchdb {
            body.clone()
        } else {
            json!({"selector": {"$and": [selector, {field: {"$exists": true}}]}, "limit": 1000})
        };
        let (status, want) = server_find(&db, &asked).await;
        assert_eq!(status, 200, "{want}");
        let (_, got) = settee_find(&replica, &body);
        assert_eq!(ids(&got), ids(&want), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scans_match_the_server() {
    let (db, _dir, replica) = seeded_replica("find-scan").await;
    for selector in shared_selectors() {
        assert_same_docs(&db, &replica, &json!({"selector": selector, "limit": 1000})).await;
        // Projection, skip and limit apply after matching. pouchdb-find 7
        // counts `skip` over index rows before it drops the start key of a
        // `$gt` range (`_id > "c-000100"` skips "c-000100" itself): there
        // the page is cut from its answer without `skip`.
        let fields = json!(["_id", "docType", "elo.global.score"]);
        let paged = json!({"selector": selector, "limit": 7, "skip": 3, "fields": fields});
        let want = if server().is_couchdb {
            server_find(&db, &paged).await.1["docs"].clone()
        } else {
            let all = json!({"selector": selector, "limit": 1000, "fields": fields});
            let docs = server_find(&db, &all).await.1["docs"]
                .as_array()
                .cloned()
                .unwrap();
            Value::Array(docs.into_iter().skip(3).take(7).collect())
        };
        assert_eq!(settee_find(&replica, &paged).1["docs"], want, "{paged}");
    }
    // pouchdb-find 7 fails on these (400: "Cannot read properties of
    // undefined" for a nested condition over documents without the outer
    // field, "userValue.every is not a function" for `$regex` inside
    // `$elemMatch`, "unknown operator" for `$not` on a field); on PouchDB Server the expected answer is every
    // document filtered by the predicate each stands for, written here
    // independently of settee.
    let arr = |d: &Value, f: &str| d[f].as_array().cloned().unwrap_or_default();
    type Holds = Box<dyn Fn(&Value) -> bool>;
    let pouch_fails: Vec<(Value, Holds)> = vec![
        (
            json!({"elo.global": {"score": {"$gt": 1200}}}),
            Box::new(|d: &Value| {
                d["elo"]["global"]["score"]
                    .as_f64()
                    .is_some_and(|s| s > 1200.0)
            }),
        ),
        (
            json!({"id_displayable_data": {"$elemMatch": {"$regex": "^DISPLAYABLE_DATA-a"}}}),
            Box::new(move |d: &Value| {
                arr(d, "id_displayable_data").iter().any(|v| {
                    v.as_str()
                        .is_some_and(|s| s.starts_with("DISPLAYABLE_DATA-a"))
                })
            }),
        ),
        (
            json!({"docType": "CARD", "elo.global.score": {"$not": {"$gt": 1000}}}),
            Box::new(|d: &Value| {
                d["docType"] == "CARD"
                    && d["elo"]["global"]["score"]
                        .as_f64()
                        .is_some_and(|s| s <= 1000.0)
            }),
        ),
    ];
    let (_, everything) = server_find(&db, &json!({"selector": {}, "limit": 100000})).await;
    for (selector, holds) in &pouch_fails {
        let body = json!({"selector": selector, "limit": 1000});
        let want: Vec<Value> = if server().is_couchdb {
            server_find(&db, &body).await.1["docs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        } else {
            everything["docs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| holds(d))
                .cloned()
                .collect()
        };
        assert!(!want.is_empty(), "{body}");
        assert_eq!(
            settee_find(&replica, &body).1["docs"],
            Value::Array(want),
            "{body}"
        );
    }
    // The go-course app's queries (APP-OPERATIONS.md §1.4).
    let cards = json!({"selector": {"docType": "CARD"}, "limit": 1000});
    let (_, got) = settee_find(&replica, &cards);
    assert_eq!(ids(&got).len(), 200);
    let first = got["docs"][0]["id_displayable_data"][0].clone();
    assert_same_docs(
        &db,
        &replica,
        &json!({"selector": {"docType": "CARD", "id_displayable_data": {"$in": [first]}}, "limit": 1000}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn design_documents_are_never_found() {
    let (_db, _dir, replica) = seeded_replica("find-design").await;
    let (_, got) = settee_find(
        &replica,
        &json!({"selector": {"_id": {"$gt": null}}, "limit": 10000}),
    );
    assert!(ids(&got).iter().all(|id| !id.starts_with("_design/")));
    let (_, got) = settee_find(
        &replica,
        &json!({"selector": {"language": {"$exists": true}}}),
    );
    assert_eq!(ids(&got), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limit_is_couchdbs_25() {
    let (db, _dir, replica) = seeded_replica("find-limit").await;
    let body = json!({"selector": {"docType": "CARD"}});
    let (_, got) = settee_find(&replica, &body);
    assert_eq!(ids(&got).len(), 25);
    if server().is_couchdb {
        assert_same_docs(&db, &replica, &body).await;
    } else {
        // pouchdb-find 7 returns every match without a limit.
        assert_same_docs(
            &db,
            &replica,
            &json!({"selector": {"docType": "CARD"}, "limit": 25}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_page_through_everything() {
    let (db, _dir, replica) = seeded_replica("find-pages").await;
    let (_, all) = settee_find(
        &replica,
        &json!({"selector": {"docType": "CARD"}, "limit": 1000}),
    );
    let mut paged = Vec::new();
    let mut bookmark = Value::Null;
    loop {
        let (status, page) = settee_find(
            &replica,
            &json!({"selector": {"docType": "CARD"}, "limit": 30, "bookmark": bookmark}),
        );
        assert_eq!(status, 200, "{page}");
        let page_ids = ids(&page);
        if page_ids.is_empty() {
            break;
        }
        paged.extend(page_ids);
        bookmark = page["bookmark"].clone();
    }
    assert_eq!(paged, ids(&all));
    // Through an index, sorted descending, too.
    let query = Query::open(&replica).unwrap();
    query
        .create_index(&json!({"index": {"fields": ["elo.global.score"]}}))
        .unwrap();
    let sorted = json!({"selector": {"elo.global.score": {"$gt": 0}},
                        "sort": [{"elo.global.score": "desc"}], "limit": 1000});
    let (_, all) = settee_find(&replica, &sorted);
    assert_eq!(ids(&all).len(), 200);
    let mut paged = Vec::new();
    let mut bookmark = Value::Null;
    loop {
        let mut body = sorted.clone();
        body["limit"] = json!(45);
        body["bookmark"] = bookmark;
        let (_, page) = settee_find(&replica, &body);
        if ids(&page).is_empty() {
            break;
        }
        paged.extend(ids(&page));
        bookmark = page["bookmark"].clone();
    }
    assert_eq!(paged, ids(&all));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_from_the_server_serve_sorts() {
    let db = TestDb::seeded("find-index", &["--cards", "200", "--extras"]).await;
    let (status, created) = db
        .request(
            reqwest::Method::POST,
            "_index",
            Some(json!({"index": {"fields": ["elo.global.score"]}, "ddoc": "by-score", "name": "score"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    let query = Query::open(&replica).unwrap();
    let listed = query.indexes().unwrap();
    let names: Vec<&str> = listed["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["_all_docs", "score"]);
    for body in [
        json!({"selector": {"elo.global.score": {"$gt": 1000}}, "sort": ["elo.global.score"], "limit": 1000}),
        json!({"selector": {"elo.global.score": {"$gt": 1000}}, "sort": [{"elo.global.score": "desc"}], "limit": 1000}),
        json!({"selector": {"elo.global.score": {"$gte": 900, "$lte": 1100}, "docType": "CARD"},
               "sort": ["elo.global.score"], "limit": 20, "skip": 5}),
        json!({"selector": {"elo.global.score": {"$gt": 1000}}, "limit": 1000, "use_index": "by-score"}),
    ] {
        let (status, want) = server_find(&db, &body).await;
        assert_eq!(status, 200, "{want}");
        let (_, got) = settee_find(&replica, &body);
        // Equal scores come in doc id order on both sides.
        assert_eq!(ids(&got), ids(&want), "{body}");
        assert_eq!(got["docs"], want["docs"], "{body}");
        assert!(got.get("warning").is_none(), "{got}");
    }
    // A sort no index serves is CouchDB's 400.
    let body = json!({"selector": {"docType": "CARD"}, "sort": ["question"]});
    let (status, got) = settee_find(&replica, &body);
    assert_eq!(status, 400);
    assert_eq!(
        got,
        json!({"error": "no_usable_index",
               "reason": "No index exists for this sort, try indexing by the sort fields."})
    );
    if server().is_couchdb {
        assert_eq!(server_find(&db, &body).await, (400, got));
    }
    // `_id` alone sorts with `_all_docs` when the selector constrains it.
    let body =
        json!({"selector": {"_id": {"$gt": "c-000150"}}, "sort": [{"_id": "desc"}], "limit": 1000});
    assert_same_docs(&db, &replica, &body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_indexes_are_couchdbs_design_documents() {
    let db = TestDb::seeded("find-create", &["--cards", "50"]).await;
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    let query = Query::open(&replica).unwrap();
    let request = json!({"index": {"fields": ["docType", "elo.global.count"]}});
    let created = query.create_index(&request).unwrap();
    assert_eq!(created["result"], "created");
    assert_eq!(query.create_index(&request).unwrap()["result"], "exists");
    let body = json!({"selector": {"docType": "CARD", "elo.global.count": {"$gt": 100}},
                      "fields": ["_id", "elo.global.count"], "limit": 1000});
    let (_, local) = settee_find(&replica, &body);
    assert!(local.get("warning").is_none(), "{local}");
    if server().is_couchdb {
        // The same request names the same design document on CouchDB.
        let (status, remote) = db
            .request(reqwest::Method::POST, "_index", Some(request.clone()))
            .await;
        assert_eq!(status, 200);
        assert_eq!(remote["id"], created["id"]);
        assert_eq!(remote["name"], created["name"]);
        let ddoc = created["id"].as_str().unwrap();
        let server_ddoc = db.get_json(&enc_id(ddoc)).await;
        let mut local_ddoc = replica.get(ddoc).unwrap().unwrap().to_json();
        local_ddoc["_rev"] = server_ddoc["_rev"].clone();
        assert_eq!(local_ddoc, server_ddoc);
        assert_eq!(server_find(&db, &body).await.1["docs"], local["docs"]);
    } else {
        // PouchDB names its index documents its own way; with the same
        // index it answers in the same (index) order.
        let (status, _) = db
            .request(reqwest::Method::POST, "_index", Some(request.clone()))
            .await;
        assert_eq!(status, 200);
        assert_same_docs(&db, &replica, &body).await;
    }
    let ddoc = created["id"].as_str().unwrap();
    let name = created["name"].as_str().unwrap();
    assert_eq!(query.delete_index(ddoc, name).unwrap(), json!({"ok": true}));
    assert_eq!(query.delete_index(ddoc, name).unwrap_err().status(), 404);
    // The index document is a local write, queued for the push.
    assert!(replica.outbox().len().unwrap() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_couchdbs() {
    let (db, _dir, replica) = seeded_replica("find-errors").await;
    for body in [
        json!({}),
        json!({"selector": []}),
        json!({"selector": {"a": {"$in": "x"}}}),
        json!({"selector": {"a": {"$mod": [1.5, 1]}}}),
        json!({"selector": {"$foo": 1}}),
        json!({"selector": {"": 1}}),
        json!({"selector": {}, "limit": -1}),
        json!({"selector": {}, "sort": "a"}),
        json!({"selector": {}, "fields": "a"}),
        json!({"selector": {}, "foo": 1}),
        json!({"selector": {}, "bookmark": "xx"}),
        json!({"selector": {"a": {"$regex": "("}}}),
        json!({"selector": {}, "partition": "x"}),
        json!({"selector": {}, "sort": [""]}),
        json!({"selector": {}, "sort": [{"a": "asc", "b": "asc"}]}),
        json!({"selector": {}, "use_index": "a/b/c"}),
        json!({"selector": {}, "limit": 2.0}),
        json!({"selector": {}, "conflicts": "yes"}),
        json!({"selector": {}, "fields": [1]}),
        json!({"selector": {}, "r": 0}),
        json!({"selector": {"a": {"$text": "x"}}}),
        json!({"selector": {"a": {"$where": "x"}}}),
        json!({"selector": {"$and": {}}}),
        json!({"selector": {"a": {"$size": 1.5}}}),
        json!({"selector": {"a": {"$elemMatch": 1}}}),
        json!({"selector": {}, "sort": ["a", {"b": "desc"}]}),
        json!({"selector": {}, "sort": ["question"]}),
    ] {
        let (status, got) = settee_find(&replica, &body);
        assert_eq!(status, 400, "{body}: {got}");
        if server().is_couchdb {
            assert_eq!(server_find(&db, &body).await, (status, got), "{body}");
        }
    }
}

/// Random selectors over the seeded documents' fields. On CouchDB every
/// operator, values of every type and nested logic; on PouchDB Server the
/// subset pouchdb-find 7 answers as CouchDB does.
fn arb_selector(couchdb: bool) -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "docType",
        "elo.global.score",
        "elo.global.count",
        "elo.global",
        "tags",
        "tags.0",
        "id_displayable_data",
        "_id",
        "hostile",
        "v",
        "branch",
        "step",
        "name",
        "public",
        "admins",
    ]);
    let scalar = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::from),
        (0i64..1500).prop_map(Value::from),
        (0.0f64..1500.0).prop_map(|f| json!((f * 4.0).round() / 4.0)),
        prop::sample::select(vec![
            "CARD", "TAG", "EXTRA", "tag-1", "chords", "c-000050", "main", "x-", "seed", "",
        ])
        .prop_map(Value::from),
    ];
    let value = if couchdb {
        prop_oneof![
            4 => scalar.clone(),
            1 => prop::collection::vec(scalar.clone(), 0..3).prop_map(Value::Array),
            1 => Just(json!({"score": 1000, "count": 10})),
            1 => Just(json!({})),
        ]
        .boxed()
    } else {
        scalar.clone().boxed()
    };
    let ops = if couchdb {
        vec![
            "$eq",
            "$ne",
            "$gt",
            "$gte",
            "$lt",
            "$lte",
            "$in",
            "$nin",
            "$exists",
            "$type",
            "$size",
            "$mod",
            "$regex",
            "$all",
            "$elemMatch",
            "$allMatch",
            "$not",
            "$beginsWith",
        ]
    } else {
        // pouchdb-find 7 lets `$ne`/`$nin` match missing fields, lacks
        // field-level `$not`, fails on `$regex` in `$elemMatch`: these ops
        // agree with CouchDB.
        vec!["$eq", "$gt", "$gte", "$lt", "$lte", "$in", "$exists"]
    };
    let cond = (
        prop::sample::select(ops),
        value.clone(),
        prop::collection::vec(value, 0..3),
        0usize..6,
    )
        .prop_map(move |(op, v, list, k)| match op {
            // PouchDB Server compares strings by code point, CouchDB with
            // ICU ("TAG" < "chords" only in code point order): range
            // conditions on strings are compared on CouchDB only.
            "$gt" | "$gte" | "$lt" | "$lte" if !couchdb && v.is_string() => json!({ op: 1000 }),
            "$in" | "$nin" | "$all" => json!({ op: list }),
            "$exists" => json!({ op: k % 2 == 0 }),
            "$type" => {
                let names = ["null", "boolean", "number", "string", "array", "object"];
                json!({ op: names[k] })
            }
            "$size" => json!({ op: k % 4 }),
            "$mod" => json!({ op: [k + 2, k % 2] }),
            "$regex" => {
                let patterns = ["^c-0000", "a", "^TAG-[a-m]", "(?i)card", "\\d{3}$", "^$"];
                json!({ op: patterns[k] })
            }
            "$beginsWith" => {
                let prefixes = ["c-00001", "TAG", "", "DISPLAYABLE", "x", "ma"];
                json!({ op: prefixes[k] })
            }
            "$elemMatch" | "$allMatch" => {
                let inner = [
                    json!({"$eq": "tag-1"}),
                    json!({"$regex": "^DISPLAYABLE_DATA-[0-7]"}),
                    json!({"$gt": "m"}),
                    json!({"$in": ["chords", "seed"]}),
                    json!({"$ne": "math"}),
                    json!({"$type": "string"}),
                ];
                json!({ op: inner[k] })
            }
            "$not" => json!({ op: {"$in": list} }),
            _ => json!({ op: v }),
        });
    let clause = (field, cond).prop_map(|(f, c)| json!({ f: c }));
    let leaf = clause.boxed();
    if !couchdb {
        return prop_oneof![
            leaf.clone(),
            prop::collection::vec(leaf.clone(), 1..3).prop_map(|cs| json!({"$and": cs})),
            prop::collection::vec(leaf, 1..3).prop_map(|cs| json!({"$or": cs})),
        ]
        .boxed();
    }
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|cs| json!({"$and": cs})),
            prop::collection::vec(inner.clone(), 0..3).prop_map(|cs| json!({"$or": cs})),
            prop::collection::vec(inner.clone(), 1..3).prop_map(|cs| json!({"$nor": cs})),
            inner.clone().prop_map(|c| json!({"$not": c})),
            (inner.clone(), inner).prop_map(|(a, b)| {
                // Implicit `$and` of two conditions in one object.
                let mut m = a.as_object().cloned().unwrap_or_default();
                for (k, v) in b.as_object().cloned().unwrap_or_default() {
                    m.entry(k).or_insert(v);
                }
                Value::Object(m)
            }),
        ]
    })
    .boxed()
}

/// Runs `cases` random selectors (with a random sort when `sorts`)
/// against the server and the replica.
#[allow(clippy::result_large_err)] // proptest's own error type
fn run_random(db: &TestDb, replica: &Replica, sorts: bool) {
    let cases: u32 = std::env::var("SETTEE_FIND_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let couchdb = server().is_couchdb;
    let sort = prop::sample::select(vec![
        json!(null),
        json!(["elo.global.score"]),
        json!([{"elo.global.score": "desc"}]),
        json!(["docType", "elo.global.count"]),
        json!([{"_id": "desc"}]),
        json!(["tags"]),
    ]);
    let limit = prop::sample::select(vec![1000usize, 5]);
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(
            &(arb_selector(couchdb), sort, limit),
            |(selector, sort, limit)| {
                let mut body = json!({"selector": selector, "limit": limit});
                if sorts && couchdb && !sort.is_null() {
                    body["sort"] = sort;
                }
                let (status, want) = handle.block_on(server_find(db, &body));
                let (got_status, got) = settee_find(replica, &body);
                // CouchDB 3.4.3 crashes (500) on a few odd selectors: `$in: [[]]`
                // over an index (`function_clause`), `$beginsWith` after an
                // empty range (`badmatch`). settee answers them; not compared.
                prop_assume!(status < 500);
                if status != 200 && couchdb {
                    // CouchDB refuses it: settee must refuse it the same way.
                    prop_assert_eq!((got_status, &got), (status, &want), "{}", body);
                    return Ok(());
                }
                prop_assume!(status == 200);
                prop_assert_eq!(got_status, 200, "{}", got);
                if couchdb {
                    prop_assert_eq!(ids(&got), ids(&want), "{}", body);
                    // The scan-ratio warning depends on how far the read went:
                    // CouchDB's shards read ahead of a small limit, settee stops.
                    if limit > 200 {
                        prop_assert_eq!(&got.get("warning"), &want.get("warning"), "{}", body);
                    }
                } else {
                    prop_assert_eq!(ids(&got), ids(&want), "{}", body);
                }
                Ok(())
            },
        )
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_selectors_match_the_server() {
    let (db, _dir, replica) = seeded_replica("find-prop").await;
    run_random(&db, &replica, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_selectors_over_indexes_match_the_server() {
    if !server().is_couchdb {
        // pouchdb-find 7 answers wrongly through its own indexes
        // (`{"docType": {"$gt": null}}` over a `docType` index returns
        // only the CARD documents), so it is no oracle here: CouchDB only.
        return;
    }
    let db = TestDb::seeded("find-prop-idx", &["--cards", "200", "--extras"]).await;
    for index in [
        json!({"index": {"fields": ["elo.global.score"]}}),
        json!({"index": {"fields": ["docType", "elo.global.count"]}}),
        json!({"index": {"fields": ["docType"]}}),
        json!({"index": {"fields": ["tags"]}}),
        json!({"index": {"fields": ["v"], "partial_filter_selector": {"docType": "EXTRA"}}}),
    ] {
        let (status, body) = db
            .request(reqwest::Method::POST, "_index", Some(index))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    run_random(&db, &replica, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_couchdbs() {
    let db = TestDb::seeded("find-explain", &["--cards", "20"]).await;
    for index in [
        json!({"index": {"fields": ["elo.global.score"]}, "ddoc": "score", "name": "score"}),
        json!({"index": {"fields": ["docType", "elo.global.count"]}, "ddoc": "type-count", "name": "tc"}),
        json!({"index": {"fields": ["docType"]}, "ddoc": "partial", "name": "p",
               "partial_filter_selector": {"docType": "TAG"}}),
    ] {
        let mut index = index;
        if let Some(p) = index
            .as_object_mut()
            .and_then(|m| m.remove("partial_filter_selector"))
        {
            index["index"]["partial_filter_selector"] = p;
        }
        let (status, body) = db
            .request(reqwest::Method::POST, "_index", Some(index))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    let query = Query::open(&replica).unwrap();
    for body in [
        json!({"selector": {"docType": "CARD"}}),
        json!({"selector": {"elo.global.score": {"$gt": 1000}}, "fields": ["_id"], "limit": 3}),
        json!({"selector": {"elo.global.score": {"$gt": 1000}}, "sort": [{"elo.global.score": "desc"}]}),
        json!({"selector": {"docType": "CARD", "elo.global.count": {"$gte": 10, "$lt": 100}},
               "fields": ["_id", "elo.global.count"]}),
        json!({"selector": {"name": "x"}, "use_index": "partial"}),
        json!({"selector": {"docType": "TAG"}, "use_index": ["partial", "p"], "skip": 2}),
        json!({"selector": {"_id": {"$gt": "c"}}, "sort": ["_id"], "conflicts": true, "r": 2}),
        json!({"selector": {"elo.global.score": {"$gt": 5, "$lt": 3}}}),
        json!({"selector": {"$or": []}, "stale": "ok", "bookmark": "abc"}),
    ] {
        let mut got = query
            .explain(&FindRequest::from_json(body.clone()).unwrap())
            .unwrap();
        let (status, mut want) = db
            .request(reqwest::Method::POST, "_explain", Some(body.clone()))
            .await;
        if !server().is_couchdb {
            // pouchdb-find 7 explains in a shape of its own.
            assert_eq!(
                got["selector"],
                FindRequest::from_json(body.clone()).unwrap().selector()
            );
            continue;
        }
        assert_eq!(status, 200, "{want}");
        // Erlang sets give the hints' order; compare them sorted.
        for v in [&mut got, &mut want] {
            for key in ["indexable_fields", "unindexable_fields"] {
                if let Some(list) = v["selector_hints"][0][key].as_array_mut() {
                    list.sort_by_key(|f| f.to_string());
                }
            }
        }
        assert_eq!(got, want, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_couchdbs_body() {
    let db = TestDb::seeded("find-cli", &["--cards", "30"]).await;
    let (dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    let body = json!({"selector": {"docType": "CARD", "elo.global.score": {"$gt": 900}},
                      "fields": ["_id", "elo.global.score"], "limit": 5});
    let (_, want) = settee_find(&replica, &body);
    // The CLI opens the replica itself.
    drop(replica);
    let path = dir.path().join("replica");
    let path = path.to_str().unwrap();
    let out = settee(&["find", path, &body.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, want);
    if server().is_couchdb {
        assert_eq!(got["docs"], server_find(&db, &body).await.1["docs"]);
    }
    // Without --json: one document a line, then the bookmark and warning.
    let out = settee(&["find", path, &body.to_string()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("(5 documents)"), "{text}");
    assert!(text.contains("warning: No matching index found"), "{text}");
    // An error: CouchDB's body on stdout, exit code 2.
    let out = settee(&["find", path, r#"{"selector": []}"#, "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"], "invalid_selector_json");
    // --explain prints the plan.
    let out = settee(&["find", path, &body.to_string(), "--explain"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["index"]["name"], "_all_docs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_errors_are_couchdbs() {
    let db = TestDb::new("find-index-errors").await;
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 8).await;
    let query = Query::open(&replica).unwrap();
    for body in [
        json!({}),
        json!({"index": "x"}),
        json!({"index": {}}),
        json!({"index": {"fields": ["a"], "foo": 1}}),
        json!({"index": {"fields": ["a"]}, "name": ""}),
        json!({"index": {"fields": ["a"]}, "ddoc": 5}),
        json!({"index": {"fields": ["a"]}, "type": "geo"}),
        json!({"index": {"fields": ["a"]}, "w": 0}),
        json!({"index": {"fields": ["a"]}, "bar": 0}),
        json!({"index": {"fields": "a"}}),
        json!({"index": {"fields": ["a", {"b": "desc"}]}}),
        json!({"index": {"fields": ["a"], "partial_filter_selector": {"$foo": 1}}}),
    ] {
        let e = query.create_index(&body).unwrap_err();
        assert_eq!(e.status(), 400, "{body}: {e}");
        if server().is_couchdb {
            let (status, want) = db
                .request(reqwest::Method::POST, "_index", Some(body.clone()))
                .await;
            assert_eq!((e.status(), e.to_json()), (status, want), "{body}");
        }
    }
    let e = query.delete_index("nope", "nope").unwrap_err();
    assert_eq!(
        (e.status(), e.to_json()),
        (404, json!({"error": "not_found", "reason": "missing"}))
    );
}
