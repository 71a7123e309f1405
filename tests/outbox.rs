//! Local writes pushed through the outbox to the real server: the push
//! protocol, coalescing, every branch of the status policy (through the
//! fault proxy), outages, raced edits, the CLI, and kill -9 of a writer.
//! `SETTEE_OUTBOX_CRASH_TRIALS` sets how many kills (default 5 for CI; use
//! 20 or more for a soak).

use crate::support::proxy::{FaultProxy, Rule};
use crate::support::*;
use serde_json::{json, Value};
use settee::outbox::{Outbox, OutboxConfig, OutboxHandle};
use settee::{Endpoint, Remote, RemoteConfig, Replica, ReplicaConfig};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Short backoffs and no tick: tests drive the worker with writes and drains.
fn test_config() -> OutboxConfig {
    OutboxConfig::default()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .with_tick(Duration::from_secs(3600))
}

fn via(db: &TestDb, proxy: &FaultProxy, timeout: Duration) -> Remote {
    let mut config = RemoteConfig::default();
    config.request_timeout = timeout;
    Remote::new(Endpoint::parse(&db.url_via(&proxy.url())).unwrap(), config).unwrap()
}

async fn remote_doc(db: &TestDb, id: &str) -> Value {
    db.get_json(&format!("{}?revs=true&conflicts=true", enc(id)))
        .await
}

async fn remote_status(db: &TestDb, id: &str) -> u16 {
    db.request(reqwest::Method::GET, &enc(id), None).await.0
}

/// Drops attachments' `revpos`: PouchDB Server sets it to the generation of
/// the revision that brings an attachment inline, and without
/// `possible_ancestors` from it the push sends kept attachments inline.
fn without_revpos(mut dump: Vec<Value>) -> Vec<Value> {
    for doc in &mut dump {
        if let Some(Value::Object(atts)) = doc.get_mut("_attachments") {
            for att in atts.values_mut() {
                att.as_object_mut().unwrap().remove("revpos");
            }
        }
    }
    dump
}

async fn drained(outbox: &OutboxHandle) -> settee::outbox::OutboxStatus {
    let status = outbox.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.pending, 0, "everything pushed: {status:?}");
    status
}

/// Writes `docs` (id → elo) locally.
async fn put_all(replica: &Replica, ids: &[&str]) -> BTreeMap<String, String> {
    let mut revs = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let w = replica.put(id, json!({"elo": 1200 + i})).await.unwrap();
        revs.insert(id.to_string(), w.rev.to_string());
    }
    revs
}

#[tokio::test]
async fn push_sends_local_writes_with_their_history_and_a_pull_then_transfers_nothing() {
    let db = TestDb::new("push").await;
    let (_dir, replica) = temp_replica();
    let remote = db.remote();
    let outbox = Outbox::spawn(replica.clone(), remote.clone(), test_config());
    replica.put("a", json!({"elo": 1200})).await.unwrap();
    replica.put("b", json!({"elo": 1300})).await.unwrap();
    replica
        .update("a", |d| {
            let mut body = d?.body.clone();
            body.insert("elo".into(), json!(1216));
            Some(body)
        })
        .await
        .unwrap();
    replica.delete("b", None).await.unwrap();
    replica
        .put(
            "att",
            json!({"_attachments": {"f.txt": {"content_type": "text/plain", "data": "aGVsbG8="}}}),
        )
        .await
        .unwrap();
    let status = drained(&outbox).await;
    assert!(status.revs_pushed >= 3, "{status:?}");
    assert!(status.dead_letters.is_empty());

    let a = remote_doc(&db, "a").await;
    let local = replica.get("a").unwrap().unwrap();
    assert_eq!(a["_rev"], local.rev.to_string());
    assert_eq!(a["elo"], 1216);
    assert_eq!(a["_revisions"]["start"], 2);
    assert_eq!(a["_revisions"]["ids"].as_array().unwrap().len(), 2);
    let b = db
        .get_json(&format!(
            "{}?rev={}",
            enc("b"),
            replica.get("b").unwrap().unwrap().rev
        ))
        .await;
    assert_eq!(b["_deleted"], true);
    assert_eq!(remote_status(&db, "b").await, 404, "deleted on the remote");
    assert_eq!(db.attachment("att", "f.txt").await, b"hello");
    // An edit that keeps the attachment: sent as a stub where the server
    // names the parent as a possible ancestor (CouchDB), else inline again
    // (PouchDB Server reports no possible ancestors); readable either way.
    let mut att = replica.get("att").unwrap().unwrap().to_json();
    att["n"] = json!(2);
    replica.put("att", att).await.unwrap();
    drained(&outbox).await;
    let att = remote_doc(&db, "att").await;
    assert_eq!(
        att["_rev"],
        replica.get("att").unwrap().unwrap().rev.to_string()
    );
    assert_eq!(att["_attachments"]["f.txt"]["length"], 5);
    assert_eq!(db.attachment("att", "f.txt").await, b"hello");

    // The pull finds our revisions on the server and fetches none of them.
    let pulled = pull(&replica, &remote, 100, 2).await;
    assert_eq!(pulled.docs_written, 0, "{pulled:?}");
    let (_d2, fresh) = temp_replica();
    pull(&fresh, &remote, 100, 2).await;
    assert_eq!(
        without_revpos(replica_dump(&replica)),
        without_revpos(replica_dump(&fresh)),
        "a fresh pull of the server equals the replica that pushed"
    );
    // What both replicas hold is the MD5 of the bytes (docs/design.md,
    // "Attachment digests"); a server that stored them gzip-encoded
    // (CouchDB, for text/plain) reports the digest of the encoded bytes.
    let held = replica.get("att").unwrap().unwrap().to_json();
    let held = held["_attachments"]["f.txt"]["digest"].clone();
    assert_eq!(held, json!(md5_digest(b"hello")));
    let on_server = db.get_json("att?att_encoding_info=true").await;
    let on_server = &on_server["_attachments"]["f.txt"];
    if on_server.get("encoding").is_some() {
        assert_ne!(on_server["digest"], held, "{on_server}");
    } else {
        assert_eq!(on_server["digest"], held, "{on_server}");
    }
    let cp = replica.outbox().push_checkpoint().unwrap().unwrap();
    assert_eq!(cp.last_key, 6);
    let closed = outbox.close(Duration::from_secs(5)).await.unwrap();
    assert!(!closed.running);
}

#[tokio::test]
async fn a_thousand_queued_updates_of_one_document_cost_one_request() {
    let db = TestDb::new("coalesce").await;
    let proxy = db.behind_proxy().await;
    let (_dir, replica) = temp_replica();
    let r = replica.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..1000 {
            r.update_blocking("card", |_| {
                Some(json!({"elo": 1000 + i}).as_object().unwrap().clone())
            })
            .unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(replica.outbox().len().unwrap(), 1000);
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = drained(&outbox).await;
    assert_eq!(proxy.count("_bulk_docs"), 1, "{:?}", proxy.requests());
    assert_eq!(status.bulk_docs_requests, 1);
    let doc = remote_doc(&db, "card").await;
    assert_eq!(
        doc["_rev"],
        replica.get("card").unwrap().unwrap().rev.to_string()
    );
    assert_eq!(doc["elo"], 1999);
    assert_eq!(doc["_revisions"]["ids"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn a_thousand_updates_while_the_server_is_slow_cost_a_handful_of_requests() {
    let db = TestDb::new("slow").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![
        Rule::delay("_revs_diff", 1500),
        Rule::delay("_bulk_docs", 1500),
    ]);
    let (_dir, replica) = temp_replica();
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let r = replica.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..1000 {
            r.update_blocking("card", |_| {
                Some(json!({"elo": 1000 + i}).as_object().unwrap().clone())
            })
            .unwrap();
        }
    })
    .await
    .unwrap();
    let status = drained(&outbox).await;
    let requests = proxy.count("_bulk_docs");
    eprintln!("1000 updates of one document while slow: {requests} _bulk_docs requests");
    assert!(
        requests <= 6,
        "{requests} _bulk_docs requests for 1000 updates"
    );
    assert_eq!(status.bulk_docs_requests as usize, requests);
    let doc = remote_doc(&db, "card").await;
    assert_eq!(
        doc["_rev"],
        replica.get("card").unwrap().unwrap().rev.to_string()
    );
    assert!(doc.get("_conflicts").is_none(), "{doc}");
}

/// Adds a `forbidden` row for document `poison` to a `_bulk_docs` answer,
/// as a validate_doc_update refusing it would.
fn refuse_poison(v: &mut Value) {
    if let Some(rows) = v.as_array_mut() {
        rows.retain(|r| r["id"] != "poison");
        rows.push(json!({"id": "poison", "error": "forbidden", "reason": "no poison here"}));
    }
}

#[tokio::test]
async fn a_document_refused_inside_a_201_is_dead_lettered_and_the_rest_goes_through() {
    let db = TestDb::new("forbidden").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::edit_json("_bulk_docs", refuse_poison).once()]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["a", "poison", "z"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = drained(&outbox).await;
    assert_eq!(status.dead_letters.len(), 1, "{status:?}");
    let dead = &status.dead_letters[0];
    assert_eq!(
        (dead.id.as_str(), dead.error.as_str()),
        ("poison", "forbidden")
    );
    assert_eq!(dead.reason, "no poison here");
    for id in ["a", "z"] {
        assert_eq!(remote_status(&db, id).await, 200, "{id} pushed");
    }
    // Retried, it goes through (the rule fired once) and leaves the list.
    assert!(outbox.retry(dead.key).await.unwrap());
    let status = drained(&outbox).await;
    assert!(status.dead_letters.is_empty());
    assert_eq!(
        remote_doc(&db, "poison").await["_rev"],
        replica.get("poison").unwrap().unwrap().rev.to_string()
    );
}

#[tokio::test]
async fn a_document_a_validate_doc_update_forbids_is_dead_lettered() {
    let db = TestDb::new("vdu").await;
    let guard = json!({"validate_doc_update":
        "function (doc) { if (doc.poison) { throw({forbidden: 'no poison here'}); } }"});
    let (status, body) = db
        .request(reqwest::Method::PUT, "_design/guard", Some(guard))
        .await;
    assert_eq!(status, 201, "{body}");
    let (_dir, replica) = temp_replica();
    replica.put("a", json!({"elo": 1})).await.unwrap();
    replica
        .put("poison", json!({"poison": true}))
        .await
        .unwrap();
    replica.put("z", json!({"elo": 2})).await.unwrap();
    let outbox = Outbox::spawn(replica.clone(), db.remote(), test_config());
    let status = drained(&outbox).await;
    let dead: Vec<_> = status
        .dead_letters
        .iter()
        .map(|d| (d.id.as_str(), d.error.as_str()))
        .collect();
    assert_eq!(dead, vec![("poison", "forbidden")], "{status:?}");
    assert!(status.dead_letters[0].reason.contains("no poison"));
    assert_eq!(remote_status(&db, "poison").await, 404);
    for id in ["a", "z"] {
        assert_eq!(remote_status(&db, id).await, 200, "{id} pushed");
    }
}

#[tokio::test]
async fn a_413_batch_is_split_and_the_document_too_large_is_dead_lettered() {
    let db = TestDb::new("split").await;
    let proxy = db.behind_proxy().await;
    // The batch of 4, then its first half, then that half's first document.
    proxy.set_rules(vec![Rule::respond(
        "_bulk_docs",
        413,
        r#"{"error":"too_large","reason":"the request entity is too large"}"#,
    )
    .times(3)]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["big", "b", "c", "d"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = drained(&outbox).await;
    let dead: Vec<_> = status
        .dead_letters
        .iter()
        .map(|d| (d.id.as_str(), d.status))
        .collect();
    assert_eq!(dead, vec![("big", Some(413))]);
    assert_eq!(proxy.count("_bulk_docs"), 5, "{:?}", proxy.requests());
    assert_eq!(remote_status(&db, "big").await, 404);
    for id in ["b", "c", "d"] {
        assert_eq!(remote_status(&db, id).await, 200, "{id} pushed");
    }
    // Discarded, it is gone from the list for good; the local edit stays.
    assert!(outbox.discard(status.dead_letters[0].key).await.unwrap());
    assert!(outbox.status().unwrap().dead_letters.is_empty());
    assert!(replica.get("big").unwrap().is_some());
}

#[tokio::test]
async fn a_400_for_a_single_document_dead_letters_it() {
    let db = TestDb::new("bad").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::respond(
        "_bulk_docs",
        400,
        r#"{"error":"bad_request","reason":"Document must be a JSON object"}"#,
    )
    .once()]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["bad"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = drained(&outbox).await;
    assert_eq!(status.dead_letters.len(), 1);
    assert_eq!(status.dead_letters[0].status, Some(400));
    assert_eq!(status.dead_letters[0].error, "bad_request");
    // A later edit of another document is not blocked by it.
    put_all(&replica, &["good"]).await;
    drained(&outbox).await;
    assert_eq!(remote_status(&db, "good").await, 200);
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let db = TestDb::new("retry-after").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::too_many_requests("_bulk_docs", Some(60)).once()]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["a", "b"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    // The round stops at the 429; the worker then waits as asked, far longer
    // than its own backoff (at most 200 ms here).
    let status = outbox.drain(Duration::from_secs(2)).await.unwrap();
    assert_eq!(status.pending, 2, "{status:?}");
    let backoff = status.backoff.expect("backing off");
    assert!(backoff > Duration::from_secs(30), "{backoff:?}");
    assert!(status
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("429"));
    assert_eq!(proxy.count("_bulk_docs"), 1, "no retry before Retry-After");
    // flush_now cuts the wait short.
    drained(&outbox).await;
    assert_eq!(remote_status(&db, "a").await, 200);
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_and_retries() {
    let db = TestDb::new("429").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::too_many_requests("_bulk_docs", None).times(3)]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["a"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = drained(&outbox).await;
    assert_eq!(proxy.count("_bulk_docs"), 4);
    assert!(status.last_error.unwrap().contains("429"));
    assert!(status.dead_letters.is_empty());
    assert_eq!(remote_status(&db, "a").await, 200);
}

/// Pushes two documents in batches of one through `rules` (which fail the
/// first `failures` `_bulk_docs`), and checks both arrive after exactly
/// `failures` retries, each revision once.
async fn retried_in_order(tag: &str, rules: Vec<Rule>, failures: usize, timeout: Duration) {
    let db = TestDb::new(tag).await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(rules);
    let (_dir, replica) = temp_replica();
    let revs = put_all(&replica, &["first", "second"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, timeout),
        test_config().with_batch_size(1),
    );
    let status = drained(&outbox).await;
    assert!(status.last_error.is_some(), "{status:?}");
    assert!(status.dead_letters.is_empty());
    assert_eq!(
        proxy.count("_bulk_docs"),
        failures + 2,
        "{:?}",
        proxy.requests()
    );
    for (id, rev) in &revs {
        let doc = remote_doc(&db, id).await;
        assert_eq!(&doc["_rev"], rev);
        assert!(doc.get("_conflicts").is_none());
    }
}

#[tokio::test]
async fn a_500_is_retried_with_backoff() {
    let rule = Rule::respond(
        "_bulk_docs",
        500,
        r#"{"error":"unknown_error","reason":"boom"}"#,
    );
    retried_in_order("500", vec![rule.times(2)], 2, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_503_is_retried_with_backoff() {
    let rule = Rule::respond(
        "_bulk_docs",
        503,
        r#"{"error":"unavailable","reason":"later"}"#,
    );
    retried_in_order("503", vec![rule.times(3)], 3, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let rule = Rule::drop_connection("_bulk_docs");
    retried_in_order("reset", vec![rule.times(2)], 2, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_stalled_request_times_out_and_is_retried() {
    // The stalled request still reaches the server later: pushing the same
    // revision twice must leave exactly one.
    let rule = Rule::delay("_bulk_docs", 3000);
    retried_in_order("stall", vec![rule.once()], 1, Duration::from_millis(1000)).await;
}

#[tokio::test]
async fn a_401_pauses_pushing_until_resumed() {
    let db = TestDb::new("auth").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::respond(
        "_bulk_docs",
        401,
        r#"{"error":"unauthorized","reason":"Name or password is incorrect."}"#,
    )]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["a"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = outbox.drain(Duration::from_secs(30)).await.unwrap();
    let paused = status.paused.expect("paused on the 401");
    assert!(paused.contains("401"), "{paused}");
    assert!(
        !paused.contains(&server().password),
        "no credentials in errors"
    );
    assert_eq!(status.pending, 1);
    // New writes queue up but nothing is sent while paused.
    put_all(&replica, &["b"]).await;
    assert_eq!(
        outbox
            .drain(Duration::from_millis(300))
            .await
            .unwrap()
            .pending,
        2
    );
    assert_eq!(proxy.count("_bulk_docs"), 1);
    proxy.clear_rules();
    outbox.resume();
    drained(&outbox).await;
    assert_eq!(remote_status(&db, "b").await, 200);
}

#[tokio::test]
async fn writes_go_on_while_the_server_is_down_and_drain_when_it_returns() {
    let db = TestDb::new("down").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::drop_connection("")]);
    let (_dir, replica) = temp_replica();
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let ids: Vec<String> = (0..50).map(|i| format!("card-{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let revs = put_all(&replica, &refs).await;
    let status = outbox.drain(Duration::from_millis(500)).await.unwrap();
    assert_eq!(status.pending, 50, "nothing got through: {status:?}");
    assert!(status.last_error.is_some());
    proxy.clear_rules();
    // The worker's own backoff retries: no flush needed to drain.
    let mut rounds = 0;
    while outbox.status().unwrap().pending > 0 && rounds < 300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rounds += 1;
    }
    assert_eq!(outbox.status().unwrap().pending, 0);
    let all = db.get_json("_all_docs").await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 50);
    for row in all["rows"].as_array().unwrap() {
        assert_eq!(
            row["value"]["rev"],
            json!(revs[row["id"].as_str().unwrap()])
        );
    }
}

#[tokio::test]
async fn a_remote_edit_that_raced_ours_is_a_conflict_with_the_same_winner_on_both_sides() {
    let db = TestDb::new("race").await;
    let remote = db.remote();
    let (_dir, replica) = temp_replica();
    let outbox = Outbox::spawn(replica.clone(), remote.clone(), test_config());
    let first = replica.put("card", json!({"elo": 1200})).await.unwrap();
    drained(&outbox).await;
    // Someone else edits the card on the server; we edit it offline.
    let (status, _) = db
        .request(
            reqwest::Method::PUT,
            "card",
            Some(json!({"_rev": first.rev.to_string(), "elo": 1300})),
        )
        .await;
    assert_eq!(status, 201);
    replica
        .put("card", json!({"_rev": first.rev.to_string(), "elo": 1216}))
        .await
        .unwrap();
    drained(&outbox).await;
    pull(&replica, &remote, 100, 2).await;
    let server = remote_doc(&db, "card").await;
    let local = replica.get("card").unwrap().unwrap();
    assert_eq!(server["_rev"], local.rev.to_string(), "same winner");
    assert_eq!(server["_conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(local.conflicts.len(), 1);
    assert_eq!(server["_conflicts"][0], local.conflicts[0].to_string());
}

#[tokio::test]
async fn the_cli_puts_deletes_pushes_and_lists() {
    let db = TestDb::new("cli-push").await;
    let dir = tempfile::tempdir().unwrap();
    let replica_dir = dir.path().join("r");
    let d = replica_dir.to_str().unwrap();
    let out = settee(&["put", d, "a", r#"{"elo": 1200}"#]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rev = put["rev"].as_str().unwrap().to_owned();
    let stale = settee(&[
        "put",
        d,
        "a",
        r#"{"_rev": "1-00000000000000000000000000000000"}"#,
    ]);
    assert_eq!(stale.status.code(), Some(5), "a stale _rev is a conflict");
    let out = settee(&["put", d, "b", r#"{"elo": 1}"#]);
    assert!(out.status.success());
    let out = settee(&["delete", d, "b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = settee(&["outbox", d, "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["pending"], 3);

    // Credentials from the URL are used, never stored.
    let out = settee(&["push", d, "--remote", &db.url(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pending"], 0);
    assert_eq!(remote_doc(&db, "a").await["_rev"], rev);
    let status = settee(&["status", d, "--json"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(!text.contains(&server().password), "{text}");
    assert!(text.contains(&db.name), "push bound the replica: {text}");
    // The next push uses the bound remote; without credentials it is refused.
    let out = settee(&["put", d, "c", "{}"]);
    assert!(out.status.success());
    let out = settee(&[
        "push",
        d,
        "--user",
        &server().user,
        "--password",
        &server().password,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(remote_status(&db, "c").await, 200);
    let out = settee(&["outbox", d]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pending        0"));
    let out = settee(&["outbox", d, "--retry", "99"]);
    assert_eq!(out.status.code(), Some(1), "no such dead letter");
}

fn crash_trials() -> usize {
    std::env::var("SETTEE_OUTBOX_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// A pseudo-random number below `n` (no rand dependency in tests).
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.finish() % n.max(1)
}

#[tokio::test]
async fn kill_9_during_writes_loses_nothing_the_writer_was_told() {
    let db = TestDb::new("outbox-crash").await;
    let remote = db.remote();
    let mut told_total = 0;
    for trial in 0..crash_trials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let prefix = format!("t{trial}-");
        let mut child = Command::new(env!("CARGO_BIN_EXE_settee"))
            .args(["__write-loop", path.to_str().unwrap(), "--count", "1000"])
            .args(["--prefix", &prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after = random_below(1000) as usize;
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut told: Vec<(String, String)> = Vec::new();
        while told.len() < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    let (id, rev) = line.split_once(' ').unwrap();
                    told.push((id.to_owned(), rev.to_owned()));
                }
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines printed before the kill were promises too.
        for line in lines.map_while(Result::ok) {
            let (id, rev) = line.split_once(' ').unwrap();
            told.push((id.to_owned(), rev.to_owned()));
        }
        told_total += told.len();
        eprintln!(
            "trial {trial}: killed after {} acknowledged writes",
            told.len()
        );

        let replica = Replica::open(&path, ReplicaConfig::default()).unwrap();
        for (id, rev) in &told {
            assert_eq!(&replica.get(id).unwrap().unwrap().rev.to_string(), rev);
        }
        let local_docs = replica.doc_count().unwrap();
        assert_eq!(
            replica.outbox().len().unwrap(),
            local_docs,
            "one entry per write"
        );
        let outbox = Outbox::spawn(replica.clone(), remote.clone(), test_config());
        outbox.close(Duration::from_secs(60)).await.unwrap();
        assert_eq!(replica.outbox().len().unwrap(), 0);

        let all = db
            .get_json(&format!(
                "_all_docs?startkey={}&endkey={}",
                enc(&format!("\"{prefix}\"")),
                enc(&format!("\"{prefix}\u{fff0}\""))
            ))
            .await;
        let rows = all["rows"].as_array().unwrap();
        assert_eq!(
            rows.len() as u64,
            local_docs,
            "trial {trial}: every local write, once"
        );
        let on_server: BTreeMap<&str, &str> = rows
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap(),
                    r["value"]["rev"].as_str().unwrap(),
                )
            })
            .collect();
        for (id, rev) in &told {
            assert_eq!(
                on_server.get(id.as_str()),
                Some(&rev.as_str()),
                "trial {trial}: {id}"
            );
            assert!(rev.starts_with("1-"), "exactly one revision: {rev}");
        }
    }
    assert!(told_total > 0 || crash_trials() == 0);
}

/// Issue 17 §1, reproduced on CouchDB 3.4.3: an offline edit that adds an
/// attachment, a second one that keeps it as a stub, and a conflicting
/// remote edit. CouchDB lists the conflicting leaf as a possible ancestor
/// (the proxy adds `possible_ancestors` as CouchDB does); a push that took
/// it for an ancestor of its own revision sent the attachment as a stub and
/// got 412 `missing_stub` for the whole batch, and the outbox stalled with
/// every other document in it. Now stubs follow the revision's own path, and
/// a document that keeps failing (here a proxy refusing it every time) is
/// dead-lettered while the others are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_remote_edit_neither_breaks_attachment_stubs_nor_stalls_the_outbox() {
    let db = TestDb::new("stubs").await;
    db.bulk_docs(
        vec![
            json!({"_id": "x", "v": 1}),
            json!({"_id": "y", "v": 1}),
            json!({"_id": "z", "v": 1}),
        ],
        true,
    )
    .await;
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 100, 2).await;
    let base = replica.get("x").unwrap().unwrap().rev;

    // Offline: x gets an attachment, then an edit that keeps it (a stub).
    let x2 = replica.get("x").unwrap().unwrap().rev.to_string();
    replica
        .put(
            "x",
            json!({"_rev": x2, "v": 2, "_attachments": {"a.txt": {"content_type": "text/plain", "data": "aGVsbG8="}}}),
        )
        .await
        .unwrap();
    let mut x3 = replica.get("x").unwrap().unwrap().to_json();
    x3["v"] = json!(3);
    replica.put("x", x3).await.unwrap();
    let y1 = replica.get("y").unwrap().unwrap().rev.to_string();
    replica.put("y", json!({"_rev": y1, "v": 2})).await.unwrap();
    // On the server, a conflicting edit of x.
    let (status, _) = db
        .request(
            reqwest::Method::PUT,
            "x",
            Some(json!({"_rev": base.to_string(), "v": "remote"})),
        )
        .await;
    assert_eq!(status, 201);

    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::possible_ancestors()]);
    let remote = via(&db, &proxy, Duration::from_secs(10));
    let outbox = Outbox::spawn(replica.clone(), remote, test_config());
    let status = drained(&outbox).await;
    assert!(status.dead_letters.is_empty(), "{status:?}");
    assert_eq!(
        status.bulk_docs_requests, 1,
        "one request, not refused for a stub the server cannot resolve: {status:?}"
    );

    // y was delivered; both branches of x are on the server, ours with
    // its attachment.
    assert_eq!(remote_doc(&db, "y").await["v"], 2);
    let local = replica.get("x").unwrap().unwrap();
    let server_x = remote_doc(&db, "x").await;
    assert_eq!(
        server_x["_rev"],
        local.rev.to_string(),
        "our branch wins (generation 3)"
    );
    assert_eq!(server_x["v"], 3);
    assert_eq!(db.attachment("x", "a.txt").await, b"hello");
    let conflicts: Vec<&str> = server_x["_conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(conflicts.len(), 1);
    assert!(conflicts[0].starts_with("2-"), "{conflicts:?}");

    // z now fails every time, the way a missing stub fails on CouchDB
    // (the whole request, 412): it is dead-lettered, y's next edit still
    // goes through, and pushing is not paused.
    proxy.set_rules(vec![
        Rule::possible_ancestors(),
        Rule::respond_if_body_has(
            "/_bulk_docs",
            r#""_id":"z""#,
            412,
            r#"{"error":"missing_stub","reason":"Invalid attachment stub in z for a.txt"}"#,
        ),
    ]);
    for id in ["z", "y"] {
        let rev = replica.get(id).unwrap().unwrap().rev.to_string();
        replica.put(id, json!({"_rev": rev, "v": 3})).await.unwrap();
    }
    let status = outbox.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.paused, None, "{status:?}");
    assert_eq!(status.pending, 0, "{status:?}");
    let dead: Vec<&str> = status.dead_letters.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(dead, vec!["z"], "{status:?}");
    assert_eq!(status.dead_letters[0].status, Some(412));
    assert_eq!(remote_doc(&db, "y").await["v"], 3);
    assert_eq!(remote_doc(&db, "z").await["v"], 1);

    // After a pull, the same winner and conflicts on both sides.
    pull(&replica, &db.remote(), 100, 2).await;
    let local = replica.get("x").unwrap().unwrap();
    assert_eq!(server_x["_rev"], local.rev.to_string());
    let local_conflicts: Vec<String> = local.conflicts.iter().map(|r| r.to_string()).collect();
    assert_eq!(local_conflicts, conflicts);
}

/// `_revs_diff` answers every document as missing a revision we never
/// asked about.
fn unknown_missing(v: &mut Value) {
    if let Some(obj) = v.as_object_mut() {
        for entry in obj.values_mut() {
            entry["missing"] = json!(["9-0123456789abcdef0123456789abcdef"]);
        }
    }
}

/// `_bulk_docs` answers carry an error row that names no document.
fn anonymous_refusal(v: &mut Value) {
    if let Some(rows) = v.as_array_mut() {
        rows.push(json!({"error": "forbidden", "reason": "which one?"}));
    }
}

/// Issue 17 §2.10: odd server answers never drop outbox entries unsent.
/// A `_revs_diff` naming a revision that was not asked about proves
/// nothing (the entries stay queued until an answer that makes sense);
/// a `_bulk_docs` refusal without an `id` is narrowed down by halves and
/// owned by the lone document it ends on, never counted as accepted.
#[tokio::test]
async fn odd_answers_never_drop_queued_writes() {
    let db = TestDb::new("odd").await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::edit_json("_revs_diff", unknown_missing)]);
    let (_dir, replica) = temp_replica();
    put_all(&replica, &["a", "b"]).await;
    let outbox = Outbox::spawn(
        replica.clone(),
        via(&db, &proxy, Duration::from_secs(30)),
        test_config(),
    );
    let status = outbox.drain(Duration::from_millis(800)).await.unwrap();
    assert_eq!(status.pending, 2, "kept queued: {status:?}");
    assert!(status.dead_letters.is_empty(), "{status:?}");
    assert_eq!(remote_status(&db, "a").await, 404, "nothing was sent");

    // Answers that make sense again: the same entries go out.
    proxy.set_rules(vec![]);
    drained(&outbox).await;
    for id in ["a", "b"] {
        assert_eq!(remote_status(&db, id).await, 200, "{id} pushed");
    }

    // A refusal that names no document is not an acceptance.
    proxy.set_rules(vec![Rule::edit_json("_bulk_docs", anonymous_refusal)]);
    put_all(&replica, &["c", "d"]).await;
    let status = outbox.drain(Duration::from_secs(30)).await.unwrap();
    let mut dead: Vec<&str> = status.dead_letters.iter().map(|d| d.id.as_str()).collect();
    dead.sort();
    assert_eq!(dead, vec!["c", "d"], "{status:?}");
    assert!(status.dead_letters.iter().all(|d| d.reason == "which one?"));
    assert!(
        proxy.count("/_bulk_docs") >= 3,
        "split down to each document"
    );
}
