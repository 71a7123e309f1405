//! Issue 20: live pulls. After the feed's end a live pull takes each write
//! as it happens (long polls with a 10 s heartbeat), goes on through a
//! connection cut before and during an answer, and stops within a second.

use crate::support::proxy::Rule;
use crate::support::*;
use serde_json::json;
use settee::{PullConfig, RetryPolicy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Documents written while the pull runs, and how: `BURSTS` writes of
/// `PER_BURST` documents, `GAP` apart.
const BURSTS: usize = 100;
const PER_BURST: usize = 10;
const GAP: Duration = Duration::from_millis(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pull_takes_each_write_within_a_second_through_cuts_and_stops_at_once() {
    let db = TestDb::seeded("live", &["--cards", "40", "--tags", "4"]).await;
    let proxy = db.behind_proxy().await;
    let remote = db.remote_via(
        &proxy,
        RetryPolicy::with_retries(2)
            .with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
    );
    let (_d, replica) = temp_replica();
    let config = PullConfig::builder()
        .batch_size(100)
        .live(Duration::from_secs(10))
        .build()
        .unwrap();

    // When each document arrived: read from the replica's own feed after
    // every committed batch.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pull = {
        let (replica, arrivals) = (replica.clone(), arrivals.clone());
        let follower = replica.clone();
        let mut seen = 0u64;
        tokio::spawn(async move {
            settee::pull(&replica, &remote, &config)
                .on_progress(move |_| {
                    let now = Instant::now();
                    let mut arrivals = arrivals.lock().unwrap();
                    for change in follower.changes(seen) {
                        let change = change.unwrap();
                        seen = change.seq;
                        arrivals.entry(change.doc.id).or_insert(now);
                    }
                })
                .until(async {
                    let _ = stop_rx.await;
                })
                .await
        })
    };

    // The feed's end first.
    let want = db.changed_ids().await.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < want {
        assert!(Instant::now() < deadline, "the first pass did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Writes while it runs; a third of the way in, the next long poll is
    // refused; two thirds in, one answer is cut inside its body.
    let mut written: Vec<(String, Instant)> = Vec::new();
    for burst in 0..BURSTS {
        if burst == BURSTS / 3 {
            proxy.set_rules(vec![Rule::drop_connection("feed=longpoll").once()]);
        }
        if burst == 2 * BURSTS / 3 {
            proxy.set_rules(vec![Rule::truncate_body("feed=longpoll", 20).once()]);
        }
        let ids: Vec<String> = (0..PER_BURST)
            .map(|i| format!("live-{burst:03}-{i}"))
            .collect();
        let at = Instant::now();
        let docs = ids
            .iter()
            .map(|id| json!({"_id": id, "burst": burst}))
            .collect();
        let answer = db.bulk_docs(docs, true).await;
        assert!(answer.iter().all(|r| r["ok"] == json!(true)), "{answer:?}");
        written.extend(ids.into_iter().map(|id| (id, at)));
        tokio::time::sleep(GAP).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().unwrap().len() < want + written.len() {
        assert!(Instant::now() < deadline, "not every write arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.fired() >= 2, "both cuts happened");

    let arrivals = arrivals.lock().unwrap().clone();
    let mut lags: Vec<Duration> = written
        .iter()
        .map(|(id, at)| arrivals[id].duration_since(*at))
        .collect();
    lags.sort();
    let (p50, worst) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    eprintln!(
        "live: {} writes, lag p50 {p50:?}, max {worst:?}",
        lags.len()
    );
    assert!(
        worst < Duration::from_secs(1),
        "a write arrived {worst:?} after it was made"
    );

    let asked = Instant::now();
    stop_tx.send(()).unwrap();
    let result = pull.await.unwrap().unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    assert!(result.interrupted);
    assert_eq!(result.docs_written as usize, want + written.len());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
    assert!(replica.check().unwrap().is_ok());
    // The checkpoint went along: a one-shot pull now finds nothing new.
    let again = settee::pull(&replica, &db.remote(), &PullConfig::default())
        .await
        .unwrap();
    assert_eq!(again.docs_written, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pull_waits_out_a_server_that_is_gone_and_stops_while_waiting() {
    let db = TestDb::seeded("live-outage", &["--cards", "10", "--tags", "2"]).await;
    let proxy = db.behind_proxy().await;
    let remote = db.remote_via(
        &proxy,
        RetryPolicy::with_retries(1)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(100)),
    );
    let (_d, replica) = temp_replica();
    let config = PullConfig::builder()
        .live(Duration::from_secs(10))
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pull = {
        let replica = replica.clone();
        tokio::spawn(async move {
            settee::pull(&replica, &remote, &config)
                .until(async {
                    let _ = stop_rx.await;
                })
                .await
        })
    };
    let want = db.changed_ids().await.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.doc_count().unwrap() + replica.deleted_count().unwrap() < want {
        assert!(Instant::now() < deadline, "the first pass did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every long poll refused, many more times than the retry policy's
    // retries: the pull keeps asking.
    proxy.set_rules(vec![Rule::drop_connection("feed=longpoll")]);
    db.bulk_docs(vec![json!({"_id": "during-outage"})], true)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.fired() < 6 {
        assert!(Instant::now() < deadline, "the pull stopped asking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pull.is_finished(), "an outage does not end a live pull");
    proxy.clear_rules();
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.get("during-outage").unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the write made during the outage never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopped while waiting for a change that does not come.
    let asked = Instant::now();
    stop_tx.send(()).unwrap();
    let result = pull.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        asked.elapsed()
    );
    assert!(result.interrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settee_pull_live_with_a_selector_takes_matching_writes_until_ctrl_c() {
    let db = TestDb::seeded("live-cli", &["--cards", "10", "--tags", "3"]).await;
    let proxy = db.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();
    let child = settee_child(&[
        "pull",
        &db.url_via(&proxy.url()),
        rep_s,
        "--live",
        "--heartbeat",
        "2s",
        "--selector",
        r#"{"docType": "TAG"}"#,
    ]);
    // The first pass is over once the pull long-polls; a write then ends
    // that poll, and its document is fetched with `_bulk_get`.
    let wait_for = |needle: &'static str, n: usize| {
        let proxy = &proxy;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while proxy.count(needle) < n {
                assert!(
                    Instant::now() < deadline,
                    "no {needle}: {:#?}",
                    proxy.requests()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("feed=longpoll", 1).await;
    db.bulk_docs(
        vec![
            json!({"_id": "TAG-live", "docType": "TAG", "name": "live"}),
            json!({"_id": "CARD-live", "docType": "CARD"}),
        ],
        true,
    )
    .await;
    wait_for("feed=longpoll", 2).await;
    wait_for("_bulk_get", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("filtered         _selector"), "{text}");
    assert!(text.contains("live             stopped"), "{text}");
    let dump = cli_dump(&rep);
    let ids: Vec<&str> = dump.iter().map(|d| d["_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "three tags and the live one: {ids:?}");
    assert!(
        ids.contains(&"TAG-live") && !ids.contains(&"CARD-live"),
        "{ids:?}"
    );
    let status = stdout_of(&settee(&["status", rep_s]));
    assert!(status.contains("filtered       _selector"), "{status}");
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
