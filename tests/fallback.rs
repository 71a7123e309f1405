use crate::support::proxy::Rule;
use crate::support::*;
use settee::RetryPolicy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bulk_get_documents_are_fetched_one_by_one() {
    let db = TestDb::seeded("fallback", &["--cards", "25", "--realistic", "--extras"]).await;
    let proxy = db.behind_proxy().await;
    // What CouchDB 1.x answers: _bulk_get is routed as a document.
    proxy.set_rules(vec![
        Rule::not_found("_bulk_get"),
        // First revisions would come from the feed, without `_bulk_get`.
        Rule::changes_without_docs(),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let result = pull(&replica, &remote, 10, 3).await;
    assert_eq!(remote.has_bulk_get(), Some(false));
    // Detected on the first wave of batches in flight, then never asked again.
    assert!(
        proxy.count("_bulk_get") <= 3,
        "asked {} times",
        proxy.count("_bulk_get")
    );
    assert!(proxy.count("open_revs=") >= 25, "fetched per document");
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}
