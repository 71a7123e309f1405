use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pull_transfers_only_what_changed() {
    let db = TestDb::seeded("incr", &["--cards", "120", "--realistic", "--extras"]).await;
    let (_dir, replica) = temp_replica();
    let remote = db.remote();
    let first = pull(&replica, &remote, 50, 5).await;
    assert!(first.docs_written > 120);

    let again = pull(&replica, &remote, 50, 5).await;
    assert_eq!(
        (again.docs_read, again.docs_written, again.changes_read),
        (0, 0, 0)
    );
    assert_eq!(again.start_seq, first.last_seq);

    // 50 remote edits: 15 updates, 15 new docs, 10 deletions, 10 conflicts.
    let cards = db
        .get_json("_all_docs?include_docs=true&conflicts=true&startkey=%22c-000000%22&endkey=%22c-999999%22")
        .await;
    let live: Vec<serde_json::Value> = cards["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["doc"].clone())
        .filter(|d| d.get("_conflicts").is_none())
        .take(35)
        .collect();
    assert_eq!(live.len(), 35);
    let mut edits = Vec::new();
    for d in &live[..15] {
        let mut d = d.clone();
        d["elo"]["global"]["score"] = json!(1234);
        edits.push(d);
    }
    for i in 0..15 {
        edits.push(json!({"_id": format!("new-{i:02}"), "docType": "CARD", "elo": {"global": {"score": 1000, "count": 0}, "tags": {}, "misc": {}}}));
    }
    for d in &live[15..25] {
        edits.push(json!({"_id": d["_id"], "_rev": d["_rev"], "_deleted": true}));
    }
    db.bulk_docs(edits, true).await;
    let conflicts: Vec<_> = live[25..35]
        .iter()
        .map(|d| {
            let rev = d["_rev"].as_str().unwrap();
            let (pos, hash) = rev.split_once('-').unwrap();
            let pos: u64 = pos.parse().unwrap();
            json!({"_id": d["_id"], "_rev": format!("{}-ffff{}", pos + 1, &hash[4..]), "branch": "remote",
                   "_revisions": {"start": pos + 1, "ids": [format!("ffff{}", &hash[4..]), hash]}})
        })
        .collect();
    db.bulk_docs(conflicts, false).await;

    let third = pull(&replica, &remote, 50, 5).await;
    assert_eq!(third.docs_written, 50, "{third:?}");
    assert_eq!(third.docs_read, 50);
    assert_eq!(third.changes_read, 50);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sequence_orders_changes_and_each_doc_appears_once() {
    let db = TestDb::seeded("seq", &["--cards", "30"]).await;
    let (_dir, replica) = temp_replica();
    let remote = db.remote();
    pull(&replica, &remote, 10, 2).await;
    let before = replica.update_seq().unwrap();
    let doc = db.get_json("c-000003").await;
    let mut edited = doc.clone();
    edited["question"] = json!("edited");
    db.bulk_docs(vec![edited], true).await;
    pull(&replica, &remote, 10, 2).await;
    let changes: Vec<_> = replica.changes(before).map(|c| c.unwrap()).collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].doc.id, "c-000003");
    assert_eq!(changes[0].seq, before + 1);
    let ids: Vec<_> = replica.changes(0).map(|c| c.unwrap().doc.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        ids.len(),
        sorted.len(),
        "each document appears once in the local feed"
    );
    assert_eq!(
        replica.get("c-000003").unwrap().unwrap().body["question"],
        "edited"
    );
}

/// The `since=` value of a recorded `_changes` request line.
fn since_of(line: &str) -> Option<String> {
    let q = line.split_once("since=")?.1;
    Some(q.split(['&', ' ']).next()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_string_sequences_are_stored_and_sent_back_verbatim() {
    let db = TestDb::seeded("opaque", &["--cards", "60", "--realistic", "--extras"]).await;
    // PouchDB Server's integer sequences, made to look like CouchDB 3's
    // strings (and not even starting with the number); on CouchDB itself
    // they pass through as they are.
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![proxy::Rule::opaque_seqs()]);
    let remote = db.remote_via(&proxy, settee::RetryPolicy::with_retries(2));
    let opaque = |s: &str| {
        if server().is_couchdb {
            // CouchDB's own form, `<number>-<opaque>`, kept whole.
            s.split_once('-')
                .is_some_and(|(n, rest)| n.parse::<u64>().is_ok() && !rest.is_empty())
        } else if quirks::enabled() {
            // The CouchDB 3 quirks layer's own form, behind this proxy.
            quirks::is_opaque(&serde_json::Value::String(s.to_owned()))
        } else {
            s.starts_with("op") && s.ends_with("-g1AAAAB")
        }
    };

    let (_dir, replica) = temp_replica();
    // Paged, so that many `since`s go out.
    let first = settee::pull(&replica, &remote, &paged_config(7, 3))
        .await
        .unwrap();
    assert_eq!(first.doc_write_failures, 0, "{:?}", first.failures);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
    let last = first
        .last_seq
        .0
        .as_str()
        .expect("a string sequence")
        .to_owned();
    assert!(opaque(&last), "{last}");
    let sinces: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|l| l.contains("/_changes"))
        .filter_map(|l| since_of(l))
        .collect();
    assert!(sinces.len() > 5, "paged feed: {sinces:?}");
    assert!(
        sinces[1..].iter().all(|s| opaque(s)),
        "every page after the first starts from a sequence the server sent: {sinces:?}"
    );

    // The checkpoint goes back to the server exactly as it came.
    db.bulk_docs(
        (0..5)
            .map(|i| json!({"_id": format!("opaque-{i}"), "v": i}))
            .collect(),
        true,
    )
    .await;
    proxy.clear_requests();
    let second = pull(&replica, &remote, 7, 3).await;
    assert_eq!(second.docs_written, 5, "{second:?}");
    assert_eq!(second.start_seq, first.last_seq);
    let first_since = proxy
        .requests()
        .iter()
        .find(|l| l.contains("/_changes"))
        .and_then(|l| since_of(l));
    assert_eq!(first_since.as_deref(), Some(last.as_str()));
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}
