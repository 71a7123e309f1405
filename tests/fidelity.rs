use crate::support::*;

const CORPUS: &[&str] = &["--cards", "150", "--tags", "12", "--realistic", "--extras"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_corpus_matches_the_server_document_for_document() {
    let db = TestDb::seeded("fidelity", CORPUS).await;
    let (dir, replica) = temp_replica();
    let result = pull(&replica, &db.remote(), 1000, 5).await;
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    let want = db.server_dump().await;
    assert!(
        want.len() > 150,
        "the corpus was seeded ({} docs)",
        want.len()
    );
    assert_same_dump(&replica_dump(&replica), &want);
    // The CLI prints the same thing.
    drop(replica);
    assert_same_dump(&cli_dump(&dir.path().join("replica")), &want);
    // The corpus really has the hard cases in it.
    let has = |field: &str| want.iter().filter(|d| d.get(field).is_some()).count();
    assert!(has("_conflicts") >= 2, "conflicted docs in corpus");
    assert!(
        has("_deleted_conflicts") >= 2,
        "deleted conflicts in corpus"
    );
    assert!(has("_deleted") >= 3, "tombstones in corpus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_revision_trees_match_the_server() {
    let db = TestDb::seeded("counts", &["--cards", "40", "--realistic", "--extras"]).await;
    let (_dir, replica) = temp_replica();
    let result = pull(&replica, &db.remote(), 25, 3).await;
    let info = db.get_json("").await;
    assert_eq!(
        replica.doc_count().unwrap(),
        info["doc_count"].as_u64().unwrap()
    );
    let dump = db.server_dump().await;
    let deleted = dump.iter().filter(|d| d.get("_deleted").is_some()).count() as u64;
    assert_eq!(replica.deleted_count().unwrap(), deleted);
    // Every leaf the server has, settee has, and wrote exactly once.
    let mut leaves = 0;
    for doc in &dump {
        let id = doc["_id"].as_str().unwrap();
        let server_leaves = db.get_json(&format!("{}?open_revs=all", enc_id(id))).await;
        let mut want: Vec<String> = server_leaves
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ok"]["_rev"].as_str().unwrap().to_owned())
            .collect();
        want.sort();
        let mut got: Vec<String> = replica
            .leaves(id)
            .unwrap()
            .iter()
            .map(|l| l.rev.to_string())
            .collect();
        got.sort();
        assert_eq!(got, want, "leaves of {id}");
        leaves += want.len() as u64;
    }
    assert_eq!(result.docs_written, leaves);
    assert_eq!(result.docs_read, leaves);
    // Deep history came along (revs=true), so the 30-revision doc knows its root.
    let deep = replica.rev_tree("x-deep-history").unwrap().unwrap();
    assert_eq!(deep.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_arrive_with_the_servers_digests_and_bytes() {
    let db = TestDb::seeded("atts", &["--cards", "5", "--extras"]).await;
    let (_dir, replica) = temp_replica();
    let result = pull(&replica, &db.remote(), 1000, 5).await;
    let mut checked = 0;
    for id in [
        "x-att-text",
        "x-att-binary",
        "x-att-shared",
        "x-att-updated",
    ] {
        let server_doc = db.get_doc_as_held(&enc_id(id)).await;
        let doc = replica.get(id).unwrap().unwrap();
        assert_eq!(
            doc.to_json()["_attachments"],
            server_doc["_attachments"],
            "stubs of {id}"
        );
        for (name, stub) in doc.attachments() {
            let bytes = replica
                .attachment(&stub.digest)
                .unwrap()
                .expect("bytes stored");
            assert_eq!(bytes, db.attachment(id, name).await, "{id}/{name}");
            assert_eq!(stub.length, Some(bytes.len() as u64));
            checked += 1;
        }
    }
    assert!(checked >= 5, "checked {checked} attachments");
    // Two documents share one digest: fetched once, not twice.
    let distinct: std::collections::BTreeSet<String> = [
        "x-att-text",
        "x-att-binary",
        "x-att-shared",
        "x-att-updated",
    ]
    .iter()
    .flat_map(|id| {
        replica
            .get(id)
            .unwrap()
            .unwrap()
            .attachments()
            .map(|(_, s)| s.digest)
            .collect::<Vec<_>>()
    })
    .collect();
    assert_eq!(result.attachments_fetched, distinct.len() as u64);

    // Remotely, x-att-text drops its attachment and x-att-binary is deleted
    // (x-att-shared holds the same bytes). After the next pull the replica
    // keeps exactly the bytes its documents still name.
    let digest_of = |id: &str| {
        let doc = replica.get(id).unwrap().unwrap();
        let digests: Vec<String> = doc.attachments().map(|(_, s)| s.digest).collect();
        digests
    };
    let (text, shared) = (digest_of("x-att-text"), digest_of("x-att-binary"));
    assert_eq!(shared, digest_of("x-att-shared"));
    let text_doc = db.get_json(&enc_id("x-att-text")).await;
    let binary_doc = db.get_json(&enc_id("x-att-binary")).await;
    db.bulk_docs(
        vec![
            serde_json::json!({"_id": "x-att-text", "_rev": text_doc["_rev"], "docType": "EXTRA"}),
            serde_json::json!({"_id": "x-att-binary", "_rev": binary_doc["_rev"], "_deleted": true}),
        ],
        true,
    )
    .await;
    pull(&replica, &db.remote(), 1000, 5).await;
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
    for d in &text {
        assert!(
            !replica.has_attachment(d).unwrap(),
            "{d} is no longer named"
        );
    }
    for d in &shared {
        assert!(
            replica.has_attachment(d).unwrap(),
            "{d} is still named by x-att-shared"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_documents_arrive_whole() {
    let db = TestDb::seeded("huge", &["--cards", "5"]).await;
    // A 6 MiB string (CouchDB 3 refuses documents over 8 MB by default), a document of 20 000 small fields, and a conflict
    // whose losing branch is the big one: each must come through
    // `_bulk_get` and the store byte for byte.
    let big = "x".repeat(6 * 1024 * 1024);
    let wide: serde_json::Map<String, serde_json::Value> = (0..20_000)
        .map(|i| (format!("f{i:05}"), serde_json::json!(i)))
        .collect();
    db.bulk_docs(
        vec![
            serde_json::json!({"_id": "huge string", "blob": big}),
            serde_json::json!({"_id": "wide", "fields": wide}),
        ],
        true,
    )
    .await;
    db.bulk_docs(
        vec![
            serde_json::json!({"_id": "huge conflict", "_rev": "1-aaaa", "blob": "y".repeat(4 * 1024 * 1024)}),
            serde_json::json!({"_id": "huge conflict", "_rev": "1-bbbb", "small": true}),
        ],
        false,
    )
    .await;
    let (_dir, replica) = temp_replica();
    let result = pull(&replica, &db.remote(), 7, 2).await;
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
    let doc = replica.get("huge string").unwrap().unwrap().to_json();
    assert_eq!(doc["blob"].as_str().map(str::len), Some(6 * 1024 * 1024));
    let loser = replica
        .get_rev("huge conflict", &"1-aaaa".parse().unwrap())
        .unwrap()
        .unwrap()
        .to_json();
    assert_eq!(loser["blob"].as_str().map(str::len), Some(4 * 1024 * 1024));
}
