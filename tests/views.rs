//! Views against the real server: settee's `elo` and `getTags` answer every
//! query option exactly as the server's own views do (`_design/elo`,
//! `_design/getTags` of the fixture corpus), stay right after a second pull
//! that updates, deletes and conflicts documents (re-indexing only those),
//! and catch up after a kill -9 in the middle of indexing (in
//! `tests/crash.rs`, with the helpers here).

use crate::support::*;
use serde_json::{json, Value};
use settee::views::{self, collate, collate_str, course, QueryOptions, Update, View, Views};
use settee::{Replica, ReplicaConfig};
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// The server's answer to the same query, through its own view.
pub(crate) async fn server_query(db: &TestDb, view: &str, q: &QueryOptions) -> Value {
    let json_param = |name: &str, v: &Value| format!("{name}={}", enc(&v.to_string()));
    let mut params = Vec::new();
    if let Some(k) = &q.key {
        params.push(json_param("key", k));
    }
    if let Some(k) = &q.start_key {
        params.push(json_param("startkey", k));
    }
    if let Some(id) = &q.start_key_doc_id {
        params.push(format!("startkey_docid={}", enc(id)));
    }
    if let Some(k) = &q.end_key {
        params.push(json_param("endkey", k));
    }
    if let Some(id) = &q.end_key_doc_id {
        params.push(format!("endkey_docid={}", enc(id)));
    }
    if !q.inclusive_end {
        params.push("inclusive_end=false".into());
    }
    if q.descending {
        params.push("descending=true".into());
    }
    if let Some(l) = q.limit {
        params.push(format!("limit={l}"));
    }
    if q.skip > 0 {
        params.push(format!("skip={}", q.skip));
    }
    if q.include_docs {
        params.push("include_docs=true".into());
    }
    let path = format!("_design/{view}/_view/{view}?{}", params.join("&"));
    let (status, body) = match &q.keys {
        Some(keys) => {
            db.request(reqwest::Method::POST, &path, Some(json!({ "keys": keys })))
                .await
        }
        None => db.request(reqwest::Method::GET, &path, None).await,
    };
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Asserts settee's answer equals the server's: same rows in the same
/// order, same `total_rows`; `offset` where the server computes it as
/// CouchDB documents it (PouchDB Server reports `skip` instead).
async fn assert_same(db: &TestDb, views: &Views, view: &str, q: &QueryOptions) {
    if repeats_keys(q) {
        return assert_repeated_keys(db, views, view, q).await;
    }
    let want = if q.keys.is_some() && q.descending && !server().is_couchdb {
        // PouchDB Server ignores `descending` with `keys`; CouchDB 3.2+
        // answers the ascending answer reversed (apache/couchdb#3757),
        // which settee follows: derive that from the server's ascending one.
        let mut asc = q.clone().descending(false).skip(0);
        asc.limit = None;
        let mut want = server_query(db, view, &asc).await;
        let rows: Vec<Value> = want["rows"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .skip(q.skip)
            .take(q.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        want["rows"] = Value::Array(rows);
        want
    } else if (q.start_key_doc_id.is_some() || q.end_key_doc_id.is_some()) && !server().is_couchdb {
        // PouchDB Server ignores `startkey_docid`/`endkey_docid`: ask for
        // the whole key range and cut it at the doc ids as CouchDB does.
        let mut wide = q.clone().skip(0).inclusive_end(true);
        wide.limit = None;
        wide.start_key_doc_id = None;
        wide.end_key_doc_id = None;
        let mut want = server_query(db, view, &wide).await;
        let dir = if q.descending {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let rows: Vec<Value> = want["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                let id = r["id"].as_str().unwrap();
                let before_start = q
                    .start_key
                    .as_ref()
                    .zip(q.start_key_doc_id.as_ref())
                    .is_some_and(|(k, sid)| r["key"] == *k && collate_str(id, sid) == dir);
                let after_end = match (&q.end_key, &q.end_key_doc_id) {
                    (Some(k), Some(eid)) if r["key"] == *k => {
                        let o = collate_str(id, eid);
                        o == dir.reverse() || (!q.inclusive_end && o == Ordering::Equal)
                    }
                    (Some(k), None) if r["key"] == *k => !q.inclusive_end,
                    _ => false,
                };
                !before_start && !after_end
            })
            .skip(q.skip)
            .take(q.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        want["rows"] = Value::Array(rows);
        want
    } else {
        server_query(db, view, q).await
    };
    let got = views.query(view, q).unwrap().to_json();
    assert_eq!(got["rows"], want["rows"], "{view} {q:?}");
    assert_eq!(got["total_rows"], want["total_rows"], "{view} {q:?}");
    if server().is_couchdb && q.keys.is_none() {
        assert_eq!(got["offset"], want["offset"], "{view} {q:?}");
    }
}

/// Whether `q` is a `keys` query that lists a key more than once.
fn repeats_keys(q: &QueryOptions) -> bool {
    q.keys.as_ref().is_some_and(|keys| {
        let distinct: BTreeSet<String> = keys.iter().map(Value::to_string).collect();
        distinct.len() < keys.len()
    })
}

/// A `keys` query that lists a key more than once. settee's order is its
/// own, documented one (`QueryOptions::keys`, README "Views"): each
/// repetition whole, in list order, as PouchDB answers; `descending`
/// reverses the whole answer; then `skip` and `limit`. A sharded CouchDB
/// merges a repeated key's rows in shard order (3.4.3, q=2: for
/// `[c10, missing, c0, c0]` the two runs of c0's rows interleaved), so the
/// server's order is not asserted: its rows are, as a multiset, without
/// `skip` and `limit`.
async fn assert_repeated_keys(db: &TestDb, views: &Views, view: &str, q: &QueryOptions) {
    let keys = q.keys.clone().unwrap();
    let one_key = |k: &Value| {
        let mut one = QueryOptions::default().key(k.clone());
        one.include_docs = q.include_docs;
        views.query(view, &one).unwrap().to_json()["rows"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mut own: Vec<Value> = keys.iter().flat_map(one_key).collect();
    if q.descending {
        own.reverse();
    }
    let own: Vec<Value> = own
        .into_iter()
        .skip(q.skip)
        .take(q.limit.unwrap_or(usize::MAX))
        .collect();
    let got = views.query(view, q).unwrap().to_json();
    assert_eq!(
        got["rows"],
        Value::Array(own),
        "{view} {q:?}: settee's order"
    );

    let mut all = q.clone().skip(0).descending(false);
    all.limit = None;
    let want = server_query(db, view, &all).await;
    let got_all = views.query(view, &all).unwrap().to_json();
    // Each row with its fields in one order (servers order them their way).
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let sorted: std::collections::BTreeMap<&String, Value> =
                    o.iter().map(|(k, v)| (k, canonical(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
            _ => v.clone(),
        }
    }
    let multiset = |rows: &Value| {
        let mut rows: Vec<String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| canonical(r).to_string())
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(
        multiset(&got_all["rows"]),
        multiset(&want["rows"]),
        "{view} {all:?}: the same rows as the server"
    );
    assert_eq!(got["total_rows"], want["total_rows"], "{view} {q:?}");
}

/// The precondition of comparing with PouchDB Server, which orders strings
/// by code point: on these rows, the server's order is also settee's
/// collation order (ICU), so equal results are the right results.
fn assert_orders_agree(rows: &Value) {
    let rows = rows["rows"].as_array().unwrap();
    for pair in rows.windows(2) {
        let o = collate(&pair[0]["key"], &pair[1]["key"]).then_with(|| {
            collate_str(
                pair[0]["id"].as_str().unwrap(),
                pair[1]["id"].as_str().unwrap(),
            )
        });
        assert_ne!(o, Ordering::Greater, "orders disagree at {pair:?}");
    }
}

fn key_with_several_rows(rows: &Value) -> (Value, Vec<String>) {
    let rows = rows["rows"].as_array().unwrap();
    rows.windows(2)
        .find(|w| w[0]["key"] == w[1]["key"])
        .map(|w| {
            (
                w[0]["key"].clone(),
                w.iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .expect("a key with two rows")
}

fn elo_queries(all: &Value) -> Vec<QueryOptions> {
    let (dup, ids) = key_with_several_rows(all);
    let rows = all["rows"].as_array().unwrap();
    let (lo, hi) = (rows[0]["key"].clone(), rows[rows.len() - 1]["key"].clone());
    let d = QueryOptions::default;
    let n = |x: i64| json!(x);
    vec![
        d(),
        d().descending(true),
        d().start_key(n(900)),
        d().end_key(n(1100)),
        d().start_key(n(900)).end_key(n(1100)),
        d().start_key(n(1100)).end_key(n(900)).descending(true),
        d().start_key(n(900)).end_key(n(1100)).inclusive_end(false),
        d().start_key(n(1100))
            .end_key(n(900))
            .descending(true)
            .inclusive_end(false),
        d().start_key(dup.clone())
            .end_key(dup.clone())
            .inclusive_end(false),
        d().key(dup.clone()),
        d().key(dup.clone()).descending(true),
        d().keys(vec![dup.clone(), n(123_456), n(1000)]),
        d().keys(vec![dup.clone(), n(1000)]).descending(true),
        // A key listed twice (see `assert_repeated_keys`).
        d().keys(vec![dup.clone(), n(1000), dup.clone()]),
        d().keys(vec![dup.clone(), n(1000), dup.clone()])
            .descending(true)
            .skip(1)
            .limit(4),
        d().limit(5),
        d().skip(3).limit(7),
        d().descending(true).skip(10).limit(5),
        d().start_key(n(1000)).limit(4).skip(2),
        d().start_key(dup.clone())
            .start_key_doc_id(ids[1].clone())
            .limit(6),
        d().start_key(dup.clone())
            .start_key_doc_id(ids[1].clone())
            .descending(true)
            .limit(6),
        d().start_key(lo.clone())
            .end_key(dup.clone())
            .end_key_doc_id(ids[1].clone()),
        d().start_key(lo.clone())
            .end_key(dup.clone())
            .end_key_doc_id(ids[1].clone())
            .inclusive_end(false),
        d().start_key(hi.clone())
            .end_key(dup.clone())
            .end_key_doc_id(ids[1].clone())
            .descending(true),
        d().start_key(n(950)).limit(3).include_docs(true),
        d().key(n(-1)),
    ]
}

fn tag_queries(all: &Value) -> Vec<QueryOptions> {
    let rows = all["rows"].as_array().unwrap();
    let (dup, ids) = key_with_several_rows(all);
    let card = |i: usize| rows[i]["key"].clone();
    let d = QueryOptions::default;
    vec![
        d(),
        d().descending(true),
        d().key(dup.clone()),
        d().key(dup.clone()).descending(true),
        d().keys(vec![card(40), json!("c-missing"), card(3), dup.clone()]),
        d().keys(vec![dup.clone(), card(40), json!("c-missing"), dup.clone()]),
        d().keys(vec![dup.clone(), dup.clone()]).skip(1).limit(3),
        d().keys(vec![card(40), dup.clone()])
            .descending(true)
            .skip(1)
            .limit(3),
        d().start_key(card(10)).end_key(card(30)),
        d().start_key(card(30))
            .end_key(card(10))
            .descending(true)
            .inclusive_end(false),
        d().start_key(dup.clone())
            .start_key_doc_id(ids[1].clone())
            .limit(4),
        d().start_key(card(0))
            .end_key(dup.clone())
            .end_key_doc_id(ids[1].clone())
            .inclusive_end(false),
        d().skip(7).limit(9),
        d().descending(true).limit(4).include_docs(true),
    ]
}

async fn compare_everything(db: &TestDb, views: &Views) {
    let all_elo = server_query(db, "elo", &QueryOptions::default()).await;
    let all_tags = server_query(db, "getTags", &QueryOptions::default()).await;
    assert_orders_agree(&all_elo);
    assert_orders_agree(&all_tags);
    for q in elo_queries(&all_elo) {
        assert_same(db, views, "elo", &q).await;
    }
    for q in tag_queries(&all_tags) {
        assert_same(db, views, "getTags", &q).await;
    }
}

/// A tag with a `snippit` (the field the app's view emits) and cards with
/// the other `elo` shapes the design document handles.
async fn add_edge_docs(db: &TestDb) {
    db.bulk_docs(
        vec![
            json!({"_id": "TAG-snippit", "docType": "TAG", "name": "snippit", "snippit": "short text",
                   "taggedCards": ["c-000001", "c-000002", "c-000001"]}),
            json!({"_id": "c-flat-elo", "docType": "CARD", "elo": 1004}),
            json!({"_id": "c-score-only", "docType": "CARD", "elo": {"score": 977}}),
        ],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_option_matches_the_server() {
    let db = TestDb::seeded("views", &["--cards", "300", "--tags", "20", "--realistic"]).await;
    add_edge_docs(&db).await;
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 4).await;
    let views = Views::open(&replica, course::views()).unwrap();
    let report = views.warm().unwrap();
    let docs = replica.doc_count().unwrap() + replica.deleted_count().unwrap();
    assert_eq!(report.view("elo").unwrap().docs_indexed, docs);
    compare_everything(&db, &views).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pull_reindexes_only_what_changed_and_matches_again() {
    let db = TestDb::seeded("views2", &["--cards", "150", "--tags", "12"]).await;
    let (_dir, replica) = temp_replica();
    let remote = db.remote();
    pull(&replica, &remote, 50, 4).await;
    let views = Views::open(&replica, course::views()).unwrap();
    views.warm().unwrap();
    compare_everything(&db, &views).await;
    let before = views
        .query("elo", &QueryOptions::default().update(Update::False))
        .unwrap();
    let seq_before = replica.update_seq().unwrap();

    // 8 updates, 4 deletions, 4 conflicts whose new branch wins, 3 new
    // cards (one without elo), one tag edited, one tag deleted.
    let cards = db
        .get_json("_all_docs?include_docs=true&startkey=%22c-000000%22&endkey=%22c-999999%22")
        .await;
    let docs: Vec<Value> = cards["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["doc"].clone())
        .collect();
    let mut edits = Vec::new();
    for d in &docs[..8] {
        let mut d = d.clone();
        d["elo"]["global"]["score"] = json!(1500);
        edits.push(d);
    }
    for d in &docs[8..12] {
        edits.push(json!({"_id": d["_id"], "_rev": d["_rev"], "_deleted": true}));
    }
    edits.push(json!({"_id": "c-new-1", "docType": "CARD", "elo": {"global": {"score": 1001}}}));
    edits.push(json!({"_id": "c-new-2", "docType": "CARD", "elo": 640}));
    edits.push(json!({"_id": "c-no-elo", "docType": "CARD"}));
    let tags = db
        .get_json("_all_docs?include_docs=true&startkey=%22TAG-%22&endkey=%22TAG-%EF%BF%B0%22")
        .await;
    let tag_docs: Vec<Value> = tags["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["doc"].clone())
        .collect();
    let mut edited = tag_docs[0].clone();
    edited["taggedCards"] = json!(["c-000001", "c-new-1", "c-no-elo"]);
    edits.push(edited);
    edits.push(json!({"_id": tag_docs[1]["_id"], "_rev": tag_docs[1]["_rev"], "_deleted": true}));
    db.bulk_docs(edits, true).await;
    let mut conflicts = Vec::new();
    for d in &docs[12..16] {
        let id = d["_id"].as_str().unwrap();
        let with_revs = db.get_json(&format!("{}?revs=true", enc(id))).await;
        let mut ids: Vec<Value> = with_revs["_revisions"]["ids"].as_array().unwrap().clone();
        let start = with_revs["_revisions"]["start"].as_u64().unwrap();
        ids[0] = json!("f".repeat(32));
        let mut sibling = d.clone();
        sibling["_rev"] = json!(format!("{start}-{}", "f".repeat(32)));
        sibling["_revisions"] = json!({"start": start, "ids": ids});
        sibling["elo"]["global"]["score"] = json!(2);
        conflicts.push(sibling);
    }
    db.bulk_docs(conflicts, false).await;

    pull(&replica, &remote, 50, 4).await;
    let changed = replica.changes(seq_before).count() as u64;
    assert_eq!(changed, 8 + 4 + 3 + 2 + 4);
    // update=false answers from the index as it was.
    let stale = views
        .query("elo", &QueryOptions::default().update(Update::False))
        .unwrap();
    assert_eq!(stale, before);

    let report = views.warm().unwrap();
    for v in &report.views {
        assert_eq!(
            v.docs_indexed, changed,
            "{}: only the changed documents",
            v.name
        );
        assert!(!v.rebuilt);
    }
    assert_eq!(report.view("elo").unwrap().rows_removed, 8 + 4 + 4);

    // Every card but the one without elo matches the server.
    compare_without(&db, &views, "elo", &["c-no-elo"]).await;
    compare_everything_but_no_elo(&db, &views).await;
    let no_elo = views
        .query(
            "elo",
            &QueryOptions::default().keys(vec![json!(views::course::default_elo("c-no-elo"))]),
        )
        .unwrap();
    assert!(no_elo.rows.iter().any(|r| r.id == "c-no-elo"));
    let winners: Vec<_> = docs[12..16]
        .iter()
        .map(|d| d["_id"].as_str().unwrap())
        .collect();
    let low = views
        .query("elo", &QueryOptions::default().key(json!(2)))
        .unwrap();
    let low_ids: Vec<&str> = low.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(low_ids, winners, "the conflict branches won");
    let again = views.warm().unwrap();
    assert_eq!(again.docs_indexed(), 0);
}

/// Full results of a view with some documents' rows left out on both
/// sides (cards without elo: the server's key for them is random).
pub(crate) async fn compare_without(db: &TestDb, views: &Views, view: &str, ids: &[&str]) {
    let keep = |rows: &Value| -> Vec<Value> {
        rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !ids.contains(&r["id"].as_str().unwrap()))
            .cloned()
            .collect()
    };
    for desc in [false, true] {
        let q = QueryOptions::default().descending(desc);
        let want = server_query(db, view, &q).await;
        let got = views.query(view, &q).unwrap().to_json();
        assert_eq!(keep(&got), keep(&want), "{view} descending={desc}");
    }
}

/// [`compare_everything`] on the queries whose range avoids 995..=1005,
/// where the card without elo sits (its server key is random).
async fn compare_everything_but_no_elo(db: &TestDb, views: &Views) {
    let all_tags = server_query(db, "getTags", &QueryOptions::default()).await;
    assert_orders_agree(&all_tags);
    for q in tag_queries(&all_tags) {
        assert_same(db, views, "getTags", &q).await;
    }
    let d = QueryOptions::default;
    for q in [
        d().start_key(json!(900)).end_key(json!(990)),
        d().start_key(json!(990))
            .end_key(json!(700))
            .descending(true)
            .limit(9)
            .skip(2),
        d().start_key(json!(1010)).limit(20),
        d().start_key(json!(1500))
            .end_key(json!(1006))
            .descending(true)
            .include_docs(true),
        d().keys(vec![json!(1500), json!(2), json!(640)]),
        d().key(json!(1500)).descending(true).skip(1),
    ] {
        assert_same(db, views, "elo", &q).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settee_query_prints_couchdb_shape_and_a_table() {
    let db = TestDb::seeded("viewscli", &["--cards", "60", "--tags", "6"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    {
        let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
        pull(&replica, &db.remote(), 100, 2).await;
    }
    let p = path.to_str().unwrap();
    let out = settee(&[
        "query", p, "elo", "--start", "900", "--end", "1100", "--limit", "5", "--skip", "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let q = QueryOptions::default()
        .start_key(json!(900))
        .end_key(json!(1100))
        .limit(5)
        .skip(1);
    let want = server_query(&db, "elo", &q).await;
    assert_eq!(got["rows"], want["rows"]);
    assert_eq!(got["total_rows"], want["total_rows"]);

    let out = settee(&[
        "query",
        p,
        "getTags",
        "--keys",
        r#"["c-000002","c-000001"]"#,
    ]);
    assert!(out.status.success());
    let q = QueryOptions::default().keys(vec![json!("c-000002"), json!("c-000001")]);
    let want = server_query(&db, "getTags", &q).await;
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("key"), "{table}");
    let n = want["rows"].as_array().unwrap().len();
    assert_eq!(lines.len(), n + 2, "{table}");
    for (line, row) in lines[1..].iter().zip(want["rows"].as_array().unwrap()) {
        assert!(
            line.contains(row["id"].as_str().unwrap()),
            "{line} vs {row}"
        );
    }

    let bad = settee(&["query", p, "elo", "--key", "not json"]);
    assert_eq!(bad.status.code(), Some(2));
    let unknown = settee(&["query", p, "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("getTags"));
}

/// The rows a view must hold when it says it covers `seq`: the map of
/// every live document whose latest change is at or before `seq`.
/// The rows of the documents whose latest change and id pass `covered`.
pub(crate) fn rows_where(
    replica: &Replica,
    view: &View,
    covered: impl Fn(u64, &str) -> bool,
) -> Vec<(Value, String, Value)> {
    let mut rows = Vec::new();
    for c in replica.changes(0) {
        let c = c.unwrap();
        if !covered(c.seq, &c.doc.id) || c.doc.deleted || c.doc.id.starts_with("_design/") {
            continue;
        }
        let doc = replica.get(&c.doc.id).unwrap().unwrap();
        for (k, v) in view.map(&doc) {
            rows.push((k, c.doc.id.clone(), v));
        }
    }
    rows.sort_by(|a, b| collate(&a.0, &b.0).then_with(|| collate_str(&a.1, &b.1)));
    rows
}

pub(crate) fn index_rows(views: &Views, name: &str) -> Vec<(Value, String, Value)> {
    views
        .query(name, &QueryOptions::default().update(Update::False))
        .unwrap()
        .rows
        .into_iter()
        .map(|r| (r.key, r.id, r.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_changes_stream_sees_a_pull() {
    use futures::StreamExt;
    let db = TestDb::seeded("viewsfollow", &["--cards", "20", "--tags", "3"]).await;
    let (_dir, replica) = temp_replica();
    let mut stream = replica.changes(0).follow();
    pull(&replica, &db.remote(), 10, 2).await;
    let total = replica.doc_count().unwrap() + replica.deleted_count().unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..total {
        let c = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("a change within 10 s")
            .unwrap()
            .unwrap();
        ids.insert(c.doc.id);
    }
    assert_eq!(ids.len() as u64, total);
    assert!(ids.contains("CourseConfig"));
    #[derive(serde::Deserialize)]
    struct Epoch {
        epoch: u64,
    }
    let epoch: Epoch = replica.get_as("db-epoch").unwrap().unwrap();
    assert!(epoch.epoch > 0);
}
