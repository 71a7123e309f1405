//! `_all_docs` and `GET /db/{id}` answered from a replica
//! (`settee::query`), against the real server: a seeded database with
//! conflicts, deletions, attachments, odd ids and design documents is
//! pulled, then every option combination is asked of both and the whole
//! bodies compared.
//!
//! settee answers as CouchDB 3.4 does. Where the server is PouchDB Server
//! 4.2 and it answers otherwise, the CouchDB answer is derived from the
//! server's own data (each place says how and why) and everything else is
//! compared exactly. Two differences hold on every server: a replica keeps
//! leaf bodies only, as a compacted CouchDB does (so a non-leaf revision is
//! `missing` in `_revs_info` and `open_revs`), and its `update_seq` and
//! `_local_seq` are its own local sequence. Attachment digests are compared
//! as a replica holds them (`TestDb::digests_as_held`).

use crate::support::*;
use serde_json::{json, Value};
use settee::query::{AllDocsQuery, GetOptions, OpenRevs, Query};
use settee::{Replica, Rev};
use std::collections::BTreeSet;

/// A seeded database and a replica pulled from it.
async fn pulled(tag: &str) -> (TestDb, tempfile::TempDir, Replica) {
    let db = TestDb::seeded(tag, &["--cards", "200", "--realistic", "--extras"]).await;
    let (dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 2).await;
    (db, dir, replica)
}

/// CouchDB's query string for parameters given as a JSON object: JSON
/// parameters as JSON text, `*_docid` as plain text, the rest as written.
fn query_string(params: &Value) -> String {
    params
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "keys")
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) if k.ends_with("_docid") => s.clone(),
                v => v.to_string(),
            };
            format!("{k}={}", enc(&text))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The server's `_all_docs` for `params` (`keys` in a POST body), with
/// attachment encodings shown so digests can be compared as held.
async fn server_all_docs(db: &TestDb, params: &Value) -> Value {
    let mut qs = query_string(params);
    if params["include_docs"] == json!(true) {
        qs.push_str("&att_encoding_info=true");
    }
    let path = format!("_all_docs?{qs}");
    let (status, mut body) = match params.get("keys") {
        Some(keys) => {
            db.request(reqwest::Method::POST, &path, Some(json!({ "keys": keys })))
                .await
        }
        None => db.request(reqwest::Method::GET, &path, None).await,
    };
    assert_eq!(status, 200, "{path}: {body}");
    for row in body["rows"].as_array_mut().unwrap() {
        if let Some(doc) = row.get_mut("doc").filter(|d| d.is_object()) {
            db.digests_as_held(doc).await;
            couchdb_conflict_order(doc);
        }
    }
    body
}

/// CouchDB lists `_conflicts` winner-order (generation, then hash,
/// descending); PouchDB Server in its own order. Sorted so on every server.
fn couchdb_conflict_order(doc: &mut Value) {
    for field in ["_conflicts", "_deleted_conflicts"] {
        if let Some(list) = doc.get_mut(field).and_then(Value::as_array_mut) {
            list.sort_by_key(|r| std::cmp::Reverse(rev(r)));
        }
    }
}

fn rev(v: &Value) -> Rev {
    v.as_str().unwrap().parse().unwrap()
}

/// The offset CouchDB 3.4 computes (fabric_view_all_docs): live documents
/// before the start key in the walk's direction, plus `skip`, at most
/// `total_rows`; `null` with `keys`. PouchDB Server reports `skip`
/// instead, so the expectation comes from the server's full id list.
fn couchdb_offset(ids: &[String], params: &Value) -> Value {
    if params.get("keys").is_some() {
        return Value::Null;
    }
    let total = ids.len() as u64;
    let descending = params["descending"] == json!(true);
    let start = params
        .get("startkey")
        .or_else(|| params.get("key"))
        .or_else(|| params.get("startkey_docid"));
    let before = match start {
        None => 0,
        Some(Value::String(s)) if descending => {
            ids.iter().filter(|id| id.as_str() > s.as_str()).count() as u64
        }
        Some(Value::String(s)) => ids.iter().filter(|id| id.as_str() < s.as_str()).count() as u64,
        // A key that is not a string sorts below every id.
        Some(_) if descending => total,
        Some(_) => 0,
    };
    let skip = params["skip"].as_u64().unwrap_or(0);
    json!((before + skip).min(total))
}

/// What CouchDB 3.4 answers for `params`, from the server's answers.
async fn couchdb_all_docs(db: &TestDb, ids: &[String], params: &Value, seq: u64) -> Value {
    let couchdb = server().is_couchdb;
    let object = params.as_object().unwrap();
    let mut want = if !couchdb && object.contains_key("keys") && params["descending"] == json!(true)
    {
        // PouchDB Server skips before it reverses the keys; CouchDB 3.4
        // reverses the list, then skips and limits it: derived from the
        // server's ascending answer.
        let mut asc = params.clone();
        for k in ["descending", "skip", "limit"] {
            asc.as_object_mut().unwrap().remove(k);
        }
        let mut body = server_all_docs(db, &asc).await;
        let skip = params["skip"].as_u64().unwrap_or(0) as usize;
        let limit = params["limit"].as_u64().map_or(usize::MAX, |l| l as usize);
        let rows: Vec<Value> = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        body["rows"] = Value::Array(rows);
        body
    } else if !couchdb
        && (object.contains_key("startkey_docid") || object.contains_key("endkey_docid"))
    {
        // PouchDB Server ignores `startkey_docid`/`endkey_docid` on
        // `_all_docs`; CouchDB takes them as the start and end key when
        // those are not given (couch_mrview_util:ad_skey_opts).
        let mut as_keys = params.clone();
        let o = as_keys.as_object_mut().unwrap();
        for (docid, key) in [("startkey_docid", "startkey"), ("endkey_docid", "endkey")] {
            if let Some(id) = o.remove(docid) {
                o.entry(key).or_insert(id);
            }
        }
        server_all_docs(db, &as_keys).await
    } else {
        server_all_docs(db, params).await
    };
    if !couchdb && params["include_docs"] != json!(true) {
        // PouchDB Server gives a deleted row of `keys` a `"doc": null`
        // even without `include_docs`; CouchDB only with it.
        for row in want["rows"].as_array_mut().unwrap() {
            if let Some(row) = row.as_object_mut() {
                row.remove("doc");
            }
        }
    }
    if !couchdb && params.get("endkey") == Some(&Value::Null) {
        // PouchDB Server reads a null `endkey` as none; CouchDB sorts
        // null below every id, so nothing is at or before it.
        want["rows"] = json!([]);
    }
    let offset = couchdb_offset(ids, params);
    if couchdb {
        assert_eq!(want["offset"], offset, "CouchDB's own offset for {params}");
    }
    want["offset"] = offset;
    if params["update_seq"] == json!(true) {
        // The server's sequence is its own; a replica answers its local
        // sequence for a range and, as CouchDB, null with `keys`.
        assert!(want.get("update_seq").is_some(), "{params}: {want}");
        let keys = object.contains_key("keys");
        if couchdb && keys {
            assert_eq!(want["update_seq"], Value::Null);
        }
        want["update_seq"] = if keys { Value::Null } else { json!(seq) };
    }
    want
}

/// settee's answer to `params`, as JSON and as the same query string.
fn settee_all_docs(query: &Query, params: &Value) -> Value {
    let q = AllDocsQuery::from_json(params).unwrap_or_else(|e| panic!("{params}: {e}"));
    let got = query
        .all_docs(&q)
        .unwrap_or_else(|e| panic!("{params}: {e}"))
        .to_json();
    if params.get("keys").is_none() {
        let from_qs = AllDocsQuery::from_query_string(&query_string(params)).unwrap();
        assert_eq!(from_qs, q, "{params}: the query string reads the same");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_docs_answers_every_option_as_couchdb_does() {
    let (db, _dir, replica) = pulled("alldocs").await;
    let query = Query::open(&replica).unwrap();
    let seq = replica.update_seq().unwrap();
    let full = db.get_json("_all_docs").await;
    let ids: Vec<String> = full["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().any(|id| id == "_design/with/slash"));
    let keys = json!([
        "x-conflicts3",
        "no-such-doc",
        "x-tombstone",
        "a/b",
        "x-conflicts3",
        "_design/with/slash",
        1,
        "unicodé-ü-日本語-🎴",
        "x-all-deleted",
        "x-att-updated",
        "x-deleted-conflict",
    ]);
    let cases = [
        json!({}),
        json!({"startkey": "TAG-", "endkey": "TAG-\u{fff0}"}),
        json!({"startkey": "TAG-", "endkey": "TAG-\u{fff0}", "include_docs": true}),
        json!({"startkey": "TAG-\u{fff0}", "endkey": "TAG-", "descending": true}),
        json!({"startkey": "TAG-\u{fff0}", "endkey": "TAG-", "descending": true, "skip": 2, "limit": 3}),
        json!({"startkey": "c-000100", "limit": 7, "skip": 3}),
        json!({"startkey": "c-000100", "endkey": "c-000120", "inclusive_end": false}),
        json!({"startkey": "c-000120", "endkey": "c-000100", "inclusive_end": false, "descending": true}),
        json!({"endkey": "c-000010", "descending": true, "limit": 5}),
        json!({"descending": true, "skip": 10, "limit": 10}),
        json!({"startkey": "a", "endkey": "z", "include_docs": true}),
        json!({"startkey": "x-", "endkey": "x-\u{fff0}", "include_docs": true, "conflicts": true}),
        json!({"startkey": "x-att", "endkey": "x-att\u{fff0}", "include_docs": true, "attachments": true}),
        json!({"startkey": "_design/", "endkey": "_design0", "include_docs": true}),
        json!({"key": "x-conflicts3", "include_docs": true, "conflicts": true}),
        json!({"key": "x-tombstone"}),
        json!({"key": "no-such-doc"}),
        json!({"startkey": "zzz"}),
        json!({"startkey": "c-000050", "endkey": "c-000040"}),
        json!({"skip": 100_000}),
        json!({"limit": 0}),
        json!({"startkey": 1, "limit": 3}),
        json!({"startkey": 1, "descending": true}),
        json!({"endkey": null}),
        json!({"startkey_docid": "c-000150", "limit": 3}),
        json!({"startkey_docid": "c-000150", "endkey_docid": "c-000160", "inclusive_end": false}),
        json!({"update_seq": true, "limit": 2}),
        json!({"keys": keys}),
        json!({"keys": keys, "include_docs": true, "conflicts": true}),
        json!({"keys": keys, "descending": true, "skip": 1, "limit": 6}),
        json!({"keys": keys, "update_seq": true, "limit": 3}),
        json!({"keys": []}),
    ];
    for params in &cases {
        let want = couchdb_all_docs(&db, &ids, params, seq).await;
        let got = settee_all_docs(&query, params);
        assert_eq!(got, want, "_all_docs {params}");
    }
}

/// `_conflicts` and `_deleted_conflicts` of `id`'s winner in CouchDB's
/// order, from the server's leaves (PouchDB Server has no
/// `deleted_conflicts` and orders `_conflicts` its own way).
async fn conflict_lists(db: &TestDb, id: &str, winner: &str) -> (Vec<Value>, Vec<Value>) {
    let leaves = db.get_json(&format!("{}?open_revs=all", enc_id(id))).await;
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for leaf in leaves
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.get("ok"))
    {
        let r = leaf["_rev"].clone();
        if r == json!(winner) {
            continue;
        }
        if leaf["_deleted"] == json!(true) {
            deleted.push(r);
        } else {
            live.push(r);
        }
    }
    for list in [&mut live, &mut deleted] {
        list.sort_by_key(|r| std::cmp::Reverse(rev(r)));
    }
    (live, deleted)
}

/// The leaves of `id` on the server.
async fn server_leaves(db: &TestDb, id: &str) -> BTreeSet<Rev> {
    let (status, leaves) = db
        .request(
            reqwest::Method::GET,
            &format!("{}?open_revs=all", enc_id(id)),
            None,
        )
        .await;
    if status != 200 {
        return BTreeSet::new();
    }
    leaves
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.get("ok"))
        .map(|d| rev(&d["_rev"]))
        .collect()
}

/// A document body as compared: digests as held.
async fn held(db: &TestDb, mut doc: Value) -> Value {
    db.digests_as_held(&mut doc).await;
    doc
}

/// What CouchDB 3.4 answers to `GET /db/{id}?{qs}`, from the server.
async fn couchdb_get(db: &TestDb, id: &str, qs: &str, got: &Value) -> (u16, Value) {
    let couchdb = server().is_couchdb;
    let o = GetOptions::from_query_string(qs).unwrap();
    let mut asked = qs.to_owned();
    if !couchdb {
        if o.rev.is_some() && o.latest {
            // CouchDB 3.4 opens the winner when `latest` comes with `rev`
            // (chttpd_db:db_doc_req); PouchDB Server the branch's leaf.
            asked = qs
                .split('&')
                .filter(|p| !p.starts_with("rev=") && !p.starts_with("latest="))
                .collect::<Vec<_>>()
                .join("&");
        }
        // PouchDB Server has no `meta`: CouchDB's three options.
        asked = asked.replace(
            "meta=true",
            "conflicts=true&deleted_conflicts=true&revs_info=true",
        );
        if let (Some(OpenRevs::Revs(revs)), true) = (&o.open_revs, o.latest) {
            // PouchDB Server answers `latest` with one leaf per revision;
            // CouchDB with every leaf that descends from it
            // (couch_key_tree:get_key_leafs): asked for by name.
            let all = db
                .get_json(&format!("{}?open_revs=all&revs=true", enc_id(id)))
                .await;
            let below: Vec<String> = all
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|l| l.get("ok"))
                .filter(|d| {
                    let start = d["_revisions"]["start"].as_u64().unwrap();
                    let ids = d["_revisions"]["ids"].as_array().unwrap();
                    revs.iter().any(|r| {
                        start >= r.pos && ids.get((start - r.pos) as usize) == Some(&json!(r.hash))
                    })
                })
                .map(|d| d["_rev"].as_str().unwrap().to_owned())
                .collect();
            asked = qs
                .split('&')
                .filter(|p| !p.starts_with("open_revs=") && !p.starts_with("latest="))
                .chain([format!("open_revs={}", enc(&json!(below).to_string())).as_str()])
                .collect::<Vec<_>>()
                .join("&");
        }
        if o.deleted && o.rev.is_none() && o.open_revs.is_none() {
            // Nor `deleted`: a deleted winner is read by its revision
            // (PouchDB Server shows the meta fields on such a read too).
            let row = db
                .request(
                    reqwest::Method::POST,
                    "_all_docs",
                    Some(json!({ "keys": [id] })),
                )
                .await
                .1["rows"][0]
                .clone();
            if row["value"]["deleted"] == json!(true) {
                let winner = row["value"]["rev"].as_str().unwrap();
                asked = format!("rev={winner}&{}", asked.replace("deleted=true", ""));
            }
        }
    }
    let path = format!("{}?{asked}&att_encoding_info=true", enc_id(id));
    let (status, body) = db.request(reqwest::Method::GET, &path, None).await;
    let leaves = server_leaves(db, id).await;
    if status != 200 {
        if !couchdb && status == 404 && !leaves.is_empty() && body["reason"] == json!("missing") {
            // PouchDB Server says `missing` for a deleted document too;
            // CouchDB tells them apart.
            let deleted = o.rev.is_none() || o.latest;
            if deleted && o.open_revs.is_none() {
                return (status, json!({"error": "not_found", "reason": "deleted"}));
            }
        }
        return (status, body);
    }
    let mut want = match body {
        Value::Array(items) => {
            // `open_revs`: found leaves first, then missing revisions, each
            // in ascending revision order (CouchDB's fabric sorts them;
            // PouchDB Server answers in its own order). A non-leaf the
            // server still has a body for is `missing` to a replica, as to
            // a compacted CouchDB.
            let mut found = Vec::new();
            let mut missing = BTreeSet::new();
            for item in items {
                match item.get("ok") {
                    Some(doc) if leaves.contains(&rev(&doc["_rev"])) => {
                        found.push(held(db, doc.clone()).await);
                    }
                    Some(doc) => {
                        missing.insert(rev(&doc["_rev"]));
                    }
                    None => {
                        missing.insert(rev(&item["missing"]));
                    }
                }
            }
            found.sort_by_key(|d| rev(&d["_rev"]));
            found.dedup();
            let mut out: Vec<Value> = found.into_iter().map(|d| json!({ "ok": d })).collect();
            out.extend(missing.iter().map(|r| json!({"missing": r.to_string()})));
            Value::Array(out)
        }
        doc => held(db, doc).await,
    };
    let Some(obj) = want.as_object_mut() else {
        return (status, want);
    };
    if o.rev.is_some() && !o.latest && !couchdb {
        // CouchDB shows no meta fields on a revision read by `rev`;
        // PouchDB Server does.
        for field in [
            "_conflicts",
            "_deleted_conflicts",
            "_revs_info",
            "_local_seq",
        ] {
            obj.remove(field);
        }
    }
    let winner_read = o.rev.is_none() || o.latest;
    if winner_read && !couchdb {
        // PouchDB Server's conflict lists, in CouchDB's terms.
        let winner = obj["_rev"].as_str().unwrap().to_owned();
        let (live, deleted) = conflict_lists(db, id, &winner).await;
        obj.remove("_conflicts");
        obj.remove("_deleted_conflicts");
        if o.conflicts && !live.is_empty() {
            obj.insert("_conflicts".into(), Value::Array(live));
        }
        if o.deleted_conflicts && !deleted.is_empty() {
            obj.insert("_deleted_conflicts".into(), Value::Array(deleted));
        }
    }
    let deleted = obj.get("_deleted") == Some(&json!(true));
    if let Some(info) = obj.get_mut("_revs_info").and_then(Value::as_array_mut) {
        if deleted && !couchdb {
            // CouchDB marks a deleted revision `deleted`; PouchDB Server
            // `available`.
            info[0]["status"] = json!("deleted");
        }
        // Only the winner keeps its body in a replica: its ancestors are
        // `missing`, as after CouchDB's compaction (an uncompacted server
        // still has the bodies of revisions edited on it).
        for entry in info.iter_mut().skip(1) {
            entry["status"] = json!("missing");
        }
    }
    if o.local_seq && winner_read {
        // The replica's own sequence of the document (CouchDB shows its
        // shard's; PouchDB Server none).
        let seq = got.get("_local_seq").cloned().unwrap_or(Value::Null);
        assert!(seq.is_u64(), "{id}?{qs}: {got}");
        obj.insert("_local_seq".into(), seq);
    }
    (status, want)
}

/// Each `(id, query string)` answered by settee and by the server, the
/// server's answers fetched eight at a time (each costs it several
/// requests), compared in order.
async fn compare_gets(db: &TestDb, query: &Query, asked: Vec<(String, String)>) {
    use futures::StreamExt;
    let answers: Vec<_> = futures::stream::iter(asked)
        .map(|(id, qs)| async move {
            let got = settee_get(query, &id, &qs);
            let want = couchdb_get(db, &id, &qs, &got.1).await;
            (id, qs, got, want)
        })
        .buffered(8)
        .collect()
        .await;
    for (id, qs, got, want) in answers {
        assert_eq!(got, want, "GET {id}?{qs}");
    }
}

fn settee_get(query: &Query, id: &str, qs: &str) -> (u16, Value) {
    let o = GetOptions::from_query_string(qs).unwrap_or_else(|e| panic!("{qs}: {e}"));
    match query.get(id, &o) {
        Ok(body) => (200, body),
        Err(e) => (e.status(), e.to_json()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_answers_every_option_as_couchdb_does() {
    let (db, _dir, replica) = pulled("getopts").await;
    let query = Query::open(&replica).unwrap();
    let mut ids = db.changed_ids().await;
    // Every card of the realistic share that was edited, conflicted or
    // deleted, and every document that is not a plain card.
    let mut chosen = Vec::new();
    for id in &ids {
        let tree = replica.rev_tree(id).unwrap().unwrap();
        if !id.starts_with("c-") || tree.len() > 1 {
            chosen.push(id.clone());
        }
    }
    ids.push("no-such-doc".into());
    chosen.push("no-such-doc".into());
    // The cheap options on every document, all of them on the chosen.
    let cheap: Vec<(String, String)> = ids
        .iter()
        .flat_map(|id| {
            ["", "conflicts=true&deleted_conflicts=true", "open_revs=all"]
                .map(|qs| (id.clone(), qs.to_owned()))
        })
        .collect();
    compare_gets(&db, &query, cheap).await;
    let options = [
        "conflicts=true",
        "deleted_conflicts=true",
        "revs=true",
        "revs_info=true",
        "meta=true",
        "attachments=true",
        "revs=true&attachments=true&conflicts=true",
        "deleted=true",
        "deleted=true&revs=true&revs_info=true&conflicts=true",
        "local_seq=true",
        "open_revs=all&revs=true",
        "open_revs=all&attachments=true",
    ];
    let every: Vec<(String, String)> = chosen
        .iter()
        .flat_map(|id| options.map(|qs| (id.clone(), qs.to_owned())))
        .collect();
    compare_gets(&db, &query, every).await;
    for id in &chosen {
        let Some(tree) = replica.rev_tree(id).unwrap() else {
            continue;
        };
        let leaves: Vec<Rev> = tree.leaves().into_iter().map(|l| l.rev).collect();
        let winner = tree.winner().unwrap().rev;
        let history = tree.path_to(&winner).unwrap();
        let parent =
            (history.ids.len() > 1).then(|| Rev::new(winner.pos - 1, history.ids[1].clone()));
        // Each leaf by `rev`, with the options a revision read shows.
        let by_rev: Vec<(String, String)> = leaves
            .iter()
            .flat_map(|leaf| {
                [
                    "",
                    "&revs=true&attachments=true",
                    "&conflicts=true&revs_info=true",
                ]
                .map(|extra| (id.clone(), format!("rev={leaf}{extra}")))
            })
            .collect();
        compare_gets(&db, &query, by_rev).await;
        // Leaves, an ancestor, an unknown revision, a repeat.
        let mut asked: Vec<Value> = leaves.iter().map(|r| json!(r.to_string())).collect();
        asked.push(json!("9-0123456789abcdef0123456789abcdef"));
        if let Some(p) = &parent {
            asked.push(json!(p.to_string()));
        }
        asked.push(asked[0].clone());
        let qs = format!("open_revs={}", enc(&Value::Array(asked).to_string()));
        let got = settee_get(&query, id, &qs);
        let want = couchdb_get(&db, id, &qs, &got.1).await;
        assert_eq!(got, want, "GET {id}?{qs}");
        if let Some(p) = &parent {
            // `latest` from the winner's parent: the leaves below it. (Only
            // known revisions: PouchDB Server 4.2 crashes on `latest` with
            // an unknown one.)
            let qs = format!(
                "open_revs={}&latest=true",
                enc(&json!([p.to_string()]).to_string())
            );
            let got = settee_get(&query, id, &qs);
            let want = couchdb_get(&db, id, &qs, &got.1).await;
            assert_eq!(got, want, "GET {id}?{qs}");
            for qs in [format!("rev={p}"), format!("rev={p}&latest=true")] {
                let got = settee_get(&query, id, &qs);
                let want = couchdb_get(&db, id, &qs, &got.1).await;
                if got.0 == 404 && want.0 == 200 {
                    // The server still has the body of a revision edited on
                    // it; a replica (like a compacted CouchDB) does not.
                    assert!(!leaves.contains(p), "{id}?{qs}");
                    assert_eq!(got.1, json!({"error": "not_found", "reason": "missing"}));
                } else {
                    assert_eq!(got, want, "GET {id}?{qs}");
                }
            }
        }
    }
    // atts_since: only attachments changed after the revision given inline.
    let doc = replica.get("x-att-updated").unwrap().unwrap();
    let history = replica
        .rev_tree("x-att-updated")
        .unwrap()
        .unwrap()
        .path_to(&doc.rev)
        .unwrap();
    let first = format!("{}-{}", doc.rev.pos - 1, history.ids[1]);
    let qs = format!("atts_since={}", enc(&json!([first]).to_string()));
    let (status, got) = settee_get(&query, "x-att-updated", &qs);
    assert_eq!(status, 200);
    assert_eq!(got["_attachments"]["keep.txt"]["stub"], true);
    assert_eq!(
        got["_attachments"]["note.txt"]["data"],
        json!(base64_of(&db.attachment("x-att-updated", "note.txt").await))
    );
    if server().is_couchdb {
        let want = couchdb_get(&db, "x-att-updated", &qs, &got).await;
        assert_eq!((status, got), want);
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `_local` documents: never listed, read by `get` and by `keys`, as
/// CouchDB does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_documents_are_read_but_never_listed() {
    let (_dir, replica) = temp_replica();
    replica.put("a", json!({"n": 1})).await.unwrap();
    replica.put_local("x", &json!({"a": 1})).await.unwrap();
    let query = Query::open(&replica).unwrap();
    let all = query.all_docs(&AllDocsQuery::default()).unwrap();
    assert_eq!((all.total_rows, all.rows.len()), (1, 1));
    let local = json!({"_id": "_local/x", "_rev": "0-1", "a": 1});
    assert_eq!(
        query.get("_local/x", &GetOptions::default()).unwrap(),
        local
    );
    let keyed = query
        .all_docs(
            &AllDocsQuery::default()
                .keys(vec![json!("_local/x")])
                .include_docs(true),
        )
        .unwrap();
    assert_eq!(keyed.to_json()["rows"][0]["doc"], local);
    let e = query
        .get(
            "_local/x",
            &GetOptions::from_query_string("rev=1-1").unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.status(), 404);
    assert!(replica
        .docs(..)
        .all(|d| !d.unwrap().id.starts_with("_local/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_docs_and_get_from_the_command_line() {
    let (db, dir, replica) = pulled("alldocs-cli").await;
    drop(replica);
    let rep = dir.path().join("replica");
    let rep_s = rep.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = settee(args);
        assert!(
            out.status.success(),
            "settee {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let text = run(&[
        "all-docs",
        rep_s,
        "--start",
        "\"TAG-\"",
        "--end",
        "\"TAG-\\ufff0\"",
        "--json",
    ]);
    let got: Value = serde_json::from_str(&text).unwrap();
    let params = json!({"startkey": "TAG-", "endkey": "TAG-\u{fff0}"});
    let ids: Vec<String> = db.get_json("_all_docs").await["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, couchdb_all_docs(&db, &ids, &params, 0).await);

    let text = run(&[
        "all-docs",
        rep_s,
        "--keys",
        r#"["x-tombstone", "nope", "a/b"]"#,
        "--include-docs",
    ]);
    assert!(text.contains("(deleted)"), "{text}");
    assert!(text.contains("error: not_found"), "{text}");
    assert!(text.contains("offset null"), "{text}");

    let text = run(&["get", rep_s, "x-conflicts3", "--open-revs", "all", "--revs"]);
    let got: Value = serde_json::from_str(&text).unwrap();
    let (status, want) = couchdb_get(&db, "x-conflicts3", "open_revs=all&revs=true", &got).await;
    assert_eq!((status, got), (200, want));

    let text = run(&["get", rep_s, "x-att-text", "--attachments", "--revs-info"]);
    let got: Value = serde_json::from_str(&text).unwrap();
    let (_, want) = couchdb_get(&db, "x-att-text", "attachments=true&revs_info=true", &got).await;
    assert_eq!(got, want);

    let out = settee(&["all-docs", rep_s, "--limit", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let out = settee(&["get", rep_s, "x-conflicts3", "--open-revs", "[\"bad\"]"]);
    assert_eq!(out.status.code(), Some(2));
    let out = settee(&["get", rep_s, "no-such-doc", "--revs"]);
    assert_eq!(out.status.code(), Some(1));
}
