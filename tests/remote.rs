use crate::support::*;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_requests_answer_like_the_server() {
    let db = TestDb::seeded("remote", &["--cards", "5", "--extras"]).await;
    let remote = db.remote();

    let info = remote.db_info().await.unwrap();
    assert_eq!(info.db_name, db.name);
    assert_eq!(
        info.doc_count,
        db.get_json("").await["doc_count"].as_u64().unwrap()
    );

    // _revs_diff lists only what the server lacks.
    let known = db.get_json("c-000001").await["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ask = BTreeMap::new();
    ask.insert(
        "c-000001".to_owned(),
        vec![known.clone(), "9-0123".to_owned()],
    );
    ask.insert("no-such-doc".to_owned(), vec!["1-abc".to_owned()]);
    let missing = remote.revs_diff(&ask).await.unwrap();
    assert_eq!(missing.get("c-000001"), Some(&vec!["9-0123".to_owned()]));
    assert_eq!(missing.get("no-such-doc"), Some(&vec!["1-abc".to_owned()]));

    // Hostile ids round-trip through the URL encoding.
    for id in [
        "a/b",
        "plus+sign",
        "100%",
        "question?mark",
        "hash#tag",
        "unicodé-ü-日本語-🎴",
        "_design/with/slash",
    ] {
        let doc = remote
            .get_doc(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} not found"));
        assert_eq!(doc["_id"], id);
    }
    assert!(remote.get_doc("no-such-doc").await.unwrap().is_none());

    // Attachment bytes, fetched by name and revision.
    let doc = db.get_json("x-att-text").await;
    let bytes = remote
        .attachment("x-att-text", "hello.txt", doc["_rev"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        &bytes[..],
        &db.attachment("x-att-text", "hello.txt").await[..]
    );
}
