//! Issue 20: a pull reads the changes feed as one streamed request, in
//! batches that each checkpoint at their last row; a stream cut mid-row
//! resumes from the last batch; paging stays available and gives the same
//! replica.

use crate::support::proxy::{Fault, Rule};
use crate::support::*;
use settee::replicate::Feed;
use settee::{PullConfig, RetryPolicy};

const CORPUS: &[&str] = &["--cards", "150", "--tags", "12", "--realistic", "--extras"];

/// Pulls `db` through `proxy` into a fresh replica with batches of 20.
async fn pull_via(
    db: &TestDb,
    proxy: &crate::support::proxy::FaultProxy,
    feed: Feed,
) -> (tempfile::TempDir, settee::Replica, settee::PullResult) {
    let remote = db.remote_via(proxy, RetryPolicy::with_retries(2));
    let (dir, replica) = temp_replica();
    let result = settee::pull(&replica, &remote, &config(feed))
        .await
        .unwrap();
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    (dir, replica, result)
}

fn config(feed: Feed) -> PullConfig {
    PullConfig::builder()
        .batch_size(20)
        .batches_limit(3)
        .feed(feed)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_pull_reads_the_feed_with_one_request_and_equals_a_paged_one() {
    let db = TestDb::seeded("stream-cold", CORPUS).await;
    let proxy = db.behind_proxy().await;
    let (_s, streamed, result) = pull_via(&db, &proxy, Feed::Streamed).await;
    assert_eq!(proxy.count("/_changes"), 1, "{:#?}", proxy.requests());
    assert!(result.batches > 5, "batches of 20: {result:?}");
    let paged_requests = proxy.count("/_changes");
    let (_p, paged, _) = pull_via(&db, &proxy, Feed::Paged).await;
    assert!(proxy.count("/_changes") - paged_requests > 5);
    let want = db.server_dump().await;
    assert_same_dump(&replica_dump(&streamed), &want);
    assert_same_dump(&replica_dump(&paged), &want);
    assert!(streamed.check().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_row_resumes_from_its_last_batch_and_ends_identical() {
    let db = TestDb::seeded("stream-cut", CORPUS).await;
    let proxy = db.behind_proxy().await;
    // The first two answers are cut halfway through their bodies (inside
    // a row, with documents in them), the third is whole.
    proxy.set_rules(vec![Rule::new("/_changes", Fault::TruncateHalf).times(2)]);
    let (_d, replica, _) = pull_via(&db, &proxy, Feed::Streamed).await;
    assert_eq!(proxy.count("/_changes"), 3, "{:#?}", proxy.requests());
    let sinces: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.contains("/_changes"))
        .collect();
    assert_ne!(
        sinces[0], sinces[1],
        "the second request resumes after a batch: {sinces:#?}"
    );
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
    assert!(replica.check().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_streamed_pull_takes_only_what_changed() {
    let db = TestDb::seeded("stream-incr", CORPUS).await;
    let (_d, replica) = temp_replica();
    let remote = db.remote();
    settee::pull(&replica, &remote, &config(Feed::Streamed))
        .await
        .unwrap();
    let new_docs = (0..10)
        .map(|i| serde_json::json!({"_id": format!("new-{i}"), "v": i}))
        .collect();
    db.bulk_docs(new_docs, true).await;
    let proxy = db.behind_proxy().await;
    let remote = db.remote_via(&proxy, RetryPolicy::with_retries(2));
    let second = settee::pull(&replica, &remote, &config(Feed::Streamed))
        .await
        .unwrap();
    assert_eq!(proxy.count("/_changes"), 1, "{:#?}", proxy.requests());
    let changes = proxy
        .requests()
        .into_iter()
        .find(|r| r.contains("/_changes"))
        .unwrap();
    assert!(!changes.contains("include_docs"), "{changes}");
    assert_eq!(second.changes_read, 10, "{second:?}");
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_batches_of_large_documents_are_bounded_by_bytes() {
    let db = TestDb::new("stream-big").await;
    // 60 documents of ~100 KB: 6 MB of feed in one answer.
    db.seed_big_docs(60, 20).await;
    let proxy = db.behind_proxy().await;
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let (_d, replica) = temp_replica();
    let config = PullConfig::builder().batch_size(1000).build().unwrap();
    let result = settee::pull(&replica, &remote, &config).await.unwrap();
    assert_eq!(proxy.count("/_changes"), 1, "{:#?}", proxy.requests());
    assert_eq!(result.docs_written, 60);
    // A batch closes at 4 MiB of rows: about 40 of these documents.
    assert!(result.batches >= 2, "{result:?}");
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}
