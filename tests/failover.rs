//! Issue 20: failover. Node A dies in the middle of a pull (every request
//! to it refused from then on); the pull moves to node B of the same
//! server, resumes from the checkpoint the two share and ends identical.

use crate::support::proxy::Rule;
use crate::support::*;
use settee::replicate::Feed;
use settee::{PullConfig, RetryPolicy};
use std::sync::Arc;
use std::time::Duration;

const CORPUS: &[&str] = &["--cards", "150", "--tags", "8", "--realistic", "--extras"];

fn policy() -> RetryPolicy {
    RetryPolicy::with_retries(1).with_backoff(Duration::from_millis(20), Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_a_dies_mid_pull_and_the_pull_finishes_through_node_b() {
    let db = TestDb::seeded("failover", CORPUS).await;
    for feed in [Feed::Streamed, Feed::Paged] {
        let a = Arc::new(db.behind_proxy().await);
        let b = db.behind_proxy().await;
        let (node_a, node_b) = (db.remote_via(&a, policy()), db.remote_via(&b, policy()));
        let (_d, replica) = temp_replica();
        let config = PullConfig::builder()
            .batch_size(20)
            .batches_limit(2)
            .feed(feed)
            .build()
            .unwrap();
        let dying = a.clone();
        let result = settee::pull(&replica, &node_a, &config)
            .on_progress(move |p| {
                if p.batches == 2 {
                    dying.set_rules(vec![Rule::drop_connection("HTTP/1.1")]);
                }
            })
            .failover(std::slice::from_ref(&node_b))
            .await
            .unwrap();
        assert!(a.fired() > 0, "{feed:?}: node A died");
        assert!(b.count("/_changes") > 0, "{feed:?}: node B read the feed");
        assert_ne!(
            result.start_seq,
            settee::Seq::zero(),
            "{feed:?}: node B resumed from the checkpoint node A's batches left"
        );
        assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
        assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
        assert!(replica.check().unwrap().is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_down_the_pull_fails_with_the_last_error() {
    let db = TestDb::seeded("failover-down", &["--cards", "5"]).await;
    let (a, b) = (db.behind_proxy().await, db.behind_proxy().await);
    for p in [&a, &b] {
        p.set_rules(vec![Rule::drop_connection("HTTP/1.1")]);
    }
    let (node_a, node_b) = (db.remote_via(&a, policy()), db.remote_via(&b, policy()));
    let (_d, replica) = temp_replica();
    let err = settee::pull(&replica, &node_a, &PullConfig::default())
        .failover(std::slice::from_ref(&node_b))
        .await
        .unwrap_err();
    assert!(matches!(err, settee::Error::Remote(_)), "{err}");
    assert!(a.fired() > 0 && b.fired() > 0, "both nodes were tried");
    assert!(replica.remote().unwrap().is_none());
}
