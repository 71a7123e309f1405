//! Fault storms and the pull's retry policy (issue 12): random 429/500/503,
//! resets, stalls, bodies cut halfway and corrupt JSON on every endpoint,
//! and a pull in retry mode that still ends with the server's exact data.
//!
//! `SETTEE_STORM_SEEDS` sets how many seeds the storm runs (3 by default,
//! to keep CI fast; the issue asks for 10: `SETTEE_STORM_SEEDS=10`).

use crate::support::proxy::{Rule, Storm};
use crate::support::*;
use settee::replicate::{Feed, PullState, RetryMode};
use settee::{Endpoint, Error, PullConfig, Remote, RemoteConfig, RemoteError, RetryPolicy};
use std::collections::BTreeMap;
use std::time::Duration;

fn storm_seeds() -> u64 {
    std::env::var("SETTEE_STORM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A client with one quick retry per request and a 1 s request timeout,
/// so the storm's faults regularly outlast a request's retries and the
/// pull's retry mode has to carry it.
fn impatient_remote(url: &str) -> Remote {
    let mut config = RemoteConfig::default().with_retry(
        RetryPolicy::with_retries(1)
            .with_backoff(Duration::from_millis(10), Duration::from_millis(50)),
    );
    config.request_timeout = Duration::from_secs(1);
    Remote::new(Endpoint::parse(url).expect("url"), config).expect("remote")
}

fn quick_retry_mode() -> RetryMode {
    RetryMode::default()
        .with_pauses(Duration::from_millis(20), Duration::from_millis(200))
        .with_max_attempts(500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_in_retry_mode_completes_through_storms_of_every_fault() {
    let db = TestDb::seeded("storm", &["--cards", "120", "--realistic", "--extras"]).await;
    let want = db.server_dump().await;
    let proxy = db.behind_proxy().await;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut paused_total = 0;
    let mut requests = 0;
    for seed in 0..storm_seeds() {
        proxy.set_storm(Some(Storm::everywhere(seed, 0.10)));
        let (_dir, replica) = temp_replica();
        let remote = impatient_remote(&db.url_via(&proxy.url()));
        // Small pages, read as pages: many requests, so every seed's
        // storm hits.
        let config = PullConfig::builder()
            .batch_size(5)
            .batches_limit(3)
            .feed(Feed::Paged)
            .retry_mode(quick_retry_mode())
            .build()
            .expect("config");
        proxy.clear_requests();
        let mut paused = 0;
        let result = settee::pull(&replica, &remote, &config)
            .on_progress(|p| {
                if matches!(p.state, PullState::Paused { .. }) {
                    paused += 1;
                }
            })
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: the pull failed: {e}"));
        let fired = proxy.storm_fired();
        proxy.set_storm(None);
        requests += proxy.requests().len();
        assert!(!fired.is_empty(), "seed {seed}: the storm injected nothing");
        for (kind, n) in fired {
            *kinds.entry(format!("{kind:?}")).or_default() += n;
        }
        paused_total += paused;
        assert_eq!(
            result.doc_write_failures, 0,
            "seed {seed}: {:?}",
            result.failures
        );
        assert_ne!(
            result.last_seq,
            settee::Seq::zero(),
            "seed {seed}: no checkpoint"
        );
        assert_same_dump(&replica_dump(&replica), &want);
        let report = replica.check().expect("check");
        assert!(report.is_ok(), "seed {seed}: {:?}", report.violations);
    }
    eprintln!(
        "storm: {} seeds, {requests} requests, faults injected {kinds:?}, {paused_total} paused events",
        storm_seeds()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_json_on_the_feed_is_retried_never_stored() {
    let db = TestDb::seeded("storm-corrupt", &["--cards", "10", "--extras"]).await;
    let want = db.server_dump().await;
    let proxy = db.behind_proxy().await;
    // More corrupt answers in a row than a request retries: only the retry
    // mode gets through, and nothing of a corrupt answer may be stored.
    proxy.set_rules(vec![Rule::corrupt_body("_changes").times(3)]);
    let (_dir, replica) = temp_replica();
    let remote = impatient_remote(&db.url_via(&proxy.url()));
    let plain = pull_config(10, 2);
    let err = settee::pull(&replica, &remote, &plain)
        .await
        .expect_err("corrupt JSON is not retried by a request");
    assert!(
        matches!(err, Error::Remote(RemoteError::InvalidResponse { .. })),
        "{err}"
    );
    assert!(replica_dump(&replica).is_empty());

    proxy.set_rules(vec![Rule::corrupt_body("_changes").times(3)]);
    let mut states = Vec::new();
    let result = settee::pull(
        &replica,
        &remote,
        &PullConfig::builder()
            .batch_size(10)
            .batches_limit(2)
            .retry_mode(quick_retry_mode())
            .build()
            .expect("config"),
    )
    .on_progress(|p| states.push(p.state.clone()))
    .await
    .expect("retry mode gets through");
    let paused = states
        .iter()
        .filter(|s| matches!(s, PullState::Paused { .. }))
        .count();
    assert_eq!(
        paused, 3,
        "three corrupt answers, three paused attempts: {states:?}"
    );
    assert_eq!(result.doc_write_failures, 0);
    assert_same_dump(&replica_dump(&replica), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_mode_gives_up_after_its_attempts_and_keeps_the_checkpoint() {
    let db = TestDb::seeded("storm-cap", &["--cards", "30"]).await;
    let proxy = db.behind_proxy().await;
    let (_dir, replica) = temp_replica();
    let remote = impatient_remote(&db.url_via(&proxy.url()));
    // The first page passes, then the feed answers 503 for ever (paged:
    // a streamed feed is one request).
    proxy.set_rules(vec![Rule::respond(
        "_changes",
        503,
        r#"{"error":"unavailable","reason":"down"}"#,
    )
    .skip(1)]);
    let config = PullConfig::builder()
        .batch_size(10)
        .batches_limit(1)
        .feed(Feed::Paged)
        .retry_mode(quick_retry_mode().with_max_attempts(2))
        .build()
        .expect("config");
    let mut paused = Vec::new();
    let err = settee::pull(&replica, &remote, &config)
        .on_progress(|p| {
            if let PullState::Paused { attempt, .. } = &p.state {
                paused.push(*attempt);
            }
        })
        .await
        .expect_err("the outage outlasts the retry mode's attempts");
    assert_eq!(paused, vec![1, 2]);
    assert!(err.to_string().contains("503"), "{err}");
    let kept = replica.docs(..).count();
    assert!(kept > 0, "the first batch stays committed");

    // The outage ends: the same pull resumes after the kept batch.
    proxy.clear_rules();
    let result = settee::pull(&replica, &remote, &pull_config(10, 1))
        .await
        .expect("resumes");
    assert_ne!(result.start_seq, settee::Seq::zero());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_paused_pull() {
    let db = TestDb::seeded("storm-stop", &["--cards", "5"]).await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::respond(
        "_changes",
        503,
        r#"{"error":"unavailable","reason":"down"}"#,
    )]);
    let (_dir, replica) = temp_replica();
    let remote = impatient_remote(&db.url_via(&proxy.url()));
    // Unbounded attempts and long pauses: only the shutdown ends it.
    let config = PullConfig::builder()
        .batch_size(10)
        .batches_limit(1)
        .retry_mode(
            RetryMode::default().with_pauses(Duration::from_secs(600), Duration::from_secs(600)),
        )
        .build()
        .expect("config");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let stop = async move {
        let _ = rx.await;
    };
    let err = settee::pull(&replica, &remote, &config)
        .on_progress(|p| {
            if matches!(p.state, PullState::Paused { .. }) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        })
        .until(stop)
        .await
        .expect_err("stopped while paused after a failure");
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_for_retry_after_then_the_pull_goes_on() {
    let db = TestDb::seeded("storm-429", &["--cards", "5"]).await;
    let want = db.server_dump().await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![Rule::too_many_requests("_changes", Some(1)).once()]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::with_retries(1));
    let started = std::time::Instant::now();
    let result = settee::pull(&replica, &remote, &PullConfig::default())
        .await
        .expect("a 429 is retried");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(proxy.fired(), 1);
    assert_eq!(result.doc_write_failures, 0);
    assert_same_dump(&replica_dump(&replica), &want);

    // Five 429s in a row outlast the one retry: a clear rate-limit error.
    proxy.set_rules(vec![Rule::too_many_requests("_changes", Some(0))]);
    let (_dir2, fresh) = temp_replica();
    let err = settee::pull(&fresh, &remote, &PullConfig::default())
        .await
        .expect_err("429 for ever");
    assert!(
        matches!(err, Error::Remote(RemoteError::RateLimited { .. })),
        "{err}"
    );
}
