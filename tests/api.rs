//! Issue 11: the library as a Rust user sees it. Only the public API (and
//! the harness's server): builders, a pull, typed results, whole-document
//! iterators and attachments by (document, name).

use crate::support::*;
use settee::replicate::ReplicaStatus;
use settee::{Endpoint, Remote, RemoteConfig, Replica, ReplicaConfig, RetryPolicy};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_pulls_and_reads_typed_results_and_whole_documents() {
    let db = TestDb::seeded("api", &["--cards", "30", "--extras"]).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path().join("r"), ReplicaConfig::default()).unwrap();
    let remote = Remote::new(
        Endpoint::parse(&db.url()).unwrap(),
        RemoteConfig::default()
            .with_connect_timeout(Duration::from_secs(10))
            .with_read_timeout(Duration::from_secs(60))
            .with_user_agent("settee-api-test")
            .with_retry(RetryPolicy::with_retries(2)),
    )
    .unwrap();
    let config = pull_config(7, 2);
    let result = settee::pull(&replica, &remote, &config).await.unwrap();
    assert!(result.batches >= 2, "{} batches of 7", result.batches);

    // Typed checkpoint and last pull.
    let rep_id =
        settee::replicate::replication_id(&remote.server_info().await.unwrap(), remote.endpoint());
    let checkpoint = settee::replicate::checkpoint(&replica, &rep_id)
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(checkpoint.last_seq, result.last_seq);
    assert_eq!(
        settee::replicate::last_pull(&replica).unwrap().as_ref(),
        Some(&result)
    );

    // The status, typed and as JSON (what `settee status --json` prints).
    let status: ReplicaStatus = settee::replicate::status(&replica).unwrap();
    assert_eq!(status.doc_count, replica.doc_count().unwrap());
    assert_eq!(status.last_pull.as_ref(), Some(&result));
    assert_eq!(status.remote.as_ref().unwrap().db_name, db.name);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["doc_count"], status.doc_count);
    assert_eq!(json["last_pull"]["docs_written"], result.docs_written);

    // Every live document with its body, as `get` reads it.
    let mut n = 0;
    for doc in replica.documents(..) {
        let doc = doc.unwrap();
        assert!(!doc.deleted);
        assert_eq!(Some(&doc), replica.get(&doc.id).unwrap().as_ref());
        n += 1;
    }
    assert_eq!(
        n, status.doc_count,
        "documents() yields every live document"
    );
    let atts: Vec<_> = replica
        .documents_with_prefix("x-att-")
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(atts.len() >= 3, "{} attachment documents", atts.len());
    assert!(atts.iter().all(|d| d.id.starts_with("x-att-")));
    assert!(atts.windows(2).all(|w| w[0].id < w[1].id), "id order");

    // Attachments by (document, name), equal to the server's bytes.
    let mut checked = 0;
    for doc in &atts {
        for (name, _) in doc.attachments() {
            let bytes = replica.attachment_of(&doc.id, name).unwrap().unwrap();
            assert_eq!(&bytes[..], &db.attachment(&doc.id, name).await[..]);
            checked += 1;
        }
    }
    assert!(checked >= 3, "checked {checked} attachments");
    assert_eq!(replica.attachment_of(&atts[0].id, "no-such").unwrap(), None);
    assert_eq!(replica.attachment_of("no-such-doc", "x").unwrap(), None);
}
