//! The sync service against the real server: the gate, coalescing,
//! recreation of the remote database (with and without `db-epoch`),
//! failure and resume, the schedule, and `settee sync`.

use crate::support::proxy::{FaultProxy, Rule};
use crate::support::*;
use serde_json::{json, Value};
use settee::sync::{
    FailureKind, FailurePolicy, RebuildReason, Refresh, ScheduleConfig, SyncConfig, SyncHooks,
    SyncRoot, SyncService, SyncState,
};
use settee::{Remote, RemoteConfig, Replica, RetryPolicy};
use std::time::{Duration, Instant};

/// A service over the test server (or a proxy in front of it), small batches.
fn service(base: &str, root: &std::path::Path, config: SyncConfig) -> SyncService {
    let s = server();
    let authed = server::with_userinfo(base, &format!("{}:{}", s.user, s.password));
    SyncService::open(&authed, root, config).expect("open the sync service")
}

fn small_batches() -> SyncConfig {
    SyncConfig::default().with_pull(pull_config(25, 2))
}

fn quick_failures() -> RemoteConfig {
    let mut retry = RetryPolicy::with_retries(1);
    retry.initial_backoff = Duration::from_millis(10);
    retry.max_backoff = Duration::from_millis(20);
    RemoteConfig::default().with_retry(retry)
}

/// Deletes and recreates the database on the server, empty.
async fn recreate(db: &TestDb) {
    let (status, body) = db.request(reqwest::Method::DELETE, "", None).await;
    assert!(status == 200 || status == 202, "delete: {body}");
    let (status, body) = db.request(reqwest::Method::PUT, "", None).await;
    assert!(status == 201 || status == 202, "create: {body}");
}

/// Documents written with fixed ids and fixed generation-1 revisions: after
/// a recreation the same revision ids come back with other bodies, which a
/// merge into the old replica would never fetch.
fn fixed_rev_docs(version: &str) -> Vec<Value> {
    (0..5)
        .map(|i| {
            json!({
                "_id": format!("fixed-{i}"),
                "_rev": format!("1-{:032x}", 0xabc0 + i),
                "version": version,
            })
        })
        .collect()
}

fn enabled_config() -> Value {
    json!({"_id": "CourseConfig", "localSync": {"enabled": true}})
}

async fn assert_replica_equals_server(service: &SyncService, db: &TestDb) {
    let replica = service.local(&db.name).expect("a ready replica");
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_database_with_new_epoch_is_rebuilt_and_swapped() {
    let db = TestDb::seeded("epoch", &["--cards", "60", "--seed", "1", "--epoch", "111"]).await;
    db.bulk_docs(fixed_rev_docs("old"), false).await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(&server().base, dir.path(), small_batches());

    let first = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(first.state, SyncState::Ready, "{first:?}");
    let old = service.local(&db.name).unwrap();
    let old_dump = replica_dump(&old);
    assert_same_dump(&old_dump, &db.server_dump().await);

    // Nothing changed: ready stays ready without a rebuild.
    let again = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(again.state, SyncState::Ready);
    assert!(again.last.unwrap().rebuilt.is_none());

    recreate(&db).await;
    db.seed(&["--cards", "40", "--seed", "2", "--epoch", "222"]);
    db.bulk_docs(fixed_rev_docs("new"), false).await;

    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert_eq!(
        status.last.as_ref().unwrap().rebuilt,
        Some(RebuildReason::Epoch)
    );
    let new = service.local(&db.name).unwrap();
    assert_ne!(new.path(), old.path(), "built beside the old replica");
    assert_same_dump(&replica_dump(&new), &db.server_dump().await);
    assert_eq!(new.get("fixed-0").unwrap().unwrap().body["version"], "new");

    // A reader holding the old handle keeps its consistent, old view.
    assert_eq!(replica_dump(&old), old_dump);
    assert_eq!(old.get("fixed-0").unwrap().unwrap().body["version"], "old");
    let old_path = old.path().to_path_buf();
    drop(old);
    service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert!(
        !old_path.exists(),
        "the retired replica is deleted once nobody holds it"
    );
    assert_eq!(
        SyncRoot::new(dir.path())
            .current(&db.name)
            .unwrap()
            .as_deref(),
        Some(new.path())
    );
}

/// Whole seconds since the epoch.
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sleeps until the next whole second begins.
async fn next_second() {
    let s = now_s();
    while now_s() == s {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreation_without_epoch_is_caught_by_the_servers_signals() {
    let cards = |version: &str, n: usize| -> Vec<Value> {
        let mut docs = vec![enabled_config()];
        docs.extend((0..n).map(|i| json!({"_id": format!("card-{i:03}"), "v": version})));
        docs
    };
    // CouchDB 3.4.3's instance_start_time is the database's creation time
    // in whole seconds (the shard suffix): a recreation within the second
    // of the creation keeps it, and then another signal has to fire. Each
    // case runs both ways: the database created at the start of a second
    // and recreated as soon as it is synced (the same second, on a machine
    // fast enough, under the quirks layer), and recreated only after the
    // next second began.
    let mut same_second_seen = false;
    // Same number of documents: the sequences match, only the revisions
    // tell. Fewer documents: the checkpoint is past the new update_seq.
    for (n_after, expected) in [
        (30, RebuildReason::UnknownRevisions),
        (10, RebuildReason::Checkpoint),
    ] {
        for wait in [false, true] {
            if !wait {
                next_second().await;
            }
            let db = TestDb::new("noepoch").await;
            db.bulk_docs(cards("old", 30), true).await;
            let dir = tempfile::tempdir().unwrap();
            let service = service(&server().base, dir.path(), small_batches());
            assert_eq!(
                service
                    .ensure_synced(&db.name, Refresh::IfNeeded)
                    .await
                    .state,
                SyncState::Ready
            );
            let created = db.get_json("").await["instance_start_time"].clone();
            if wait {
                next_second().await;
            }

            recreate(&db).await;
            db.bulk_docs(cards("new", n_after), true).await;
            let recreated = db.get_json("").await["instance_start_time"].clone();
            let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
            assert_eq!(status.state, SyncState::Ready, "{status:?}");
            let rebuilt = status.last.unwrap().rebuilt;
            let case = format!("{n_after} documents after, waited: {wait}, instance_start_time {created} then {recreated}");
            if server().reports_creation_times() && created != recreated {
                // CouchDB 3: the creation time is checked before the others.
                assert_eq!(rebuilt, Some(RebuildReason::InstanceStartTime), "{case}");
            } else if server().reports_creation_times() {
                // CouchDB 3, recreated within one second: the creation time
                // cannot tell; another signal does.
                same_second_seen = true;
                assert!(
                    rebuilt
                        .as_ref()
                        .is_some_and(|r| *r != RebuildReason::InstanceStartTime),
                    "{case}: {rebuilt:?}"
                );
            } else if !server().is_couchdb {
                assert_eq!(rebuilt, Some(expected.clone()), "{case}");
            } else {
                assert!(rebuilt.is_some(), "CouchDB: some signal fires ({case})");
            }
            if wait && server().reports_creation_times() {
                assert_ne!(created, recreated, "{case}: a later second, a new value");
            }
            assert_replica_equals_server(&service, &db).await;
        }
    }
    if quirks::enabled() && !same_second_seen {
        // Timing, not correctness: a loaded machine may take more than a
        // second to create, pull 31 documents and recreate. The layer's
        // same-second answer is checked on its own in `quirks::`.
        eprintln!("no recreation fell within its creation's second on this run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_for_one_database_make_one_replication() {
    let db = TestDb::seeded("coalesce", &["--cards", "80"]).await;
    let proxy = db.behind_proxy().await;
    // Slow feed pages make sure the 100 calls overlap the sync.
    proxy.set_rules(vec![Rule::delay("/_changes", 150)]);

    let reference_dir = tempfile::tempdir().unwrap();
    let reference = service(&proxy.url(), reference_dir.path(), small_batches());
    assert_eq!(
        reference
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    let one_sync = proxy.count("/_changes");
    assert!(one_sync >= 1, "one streamed request (or its retries)");
    proxy.clear_requests();

    let dir = tempfile::tempdir().unwrap();
    let service = service(&proxy.url(), dir.path(), small_batches());
    let calls = (0..100).map(|_| service.ensure_synced(&db.name, Refresh::IfNeeded));
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| s.state == SyncState::Ready));
    assert_eq!(
        proxy.count("/_changes"),
        one_sync,
        "100 concurrent calls read the feed as one sync does"
    );
    assert_eq!(proxy.count("/CourseConfig"), 1, "one gate check");
    assert_replica_equals_server(&service, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_databases_sync_independently() {
    let a = TestDb::seeded("indep-a", &["--cards", "20"]).await;
    let b = TestDb::seeded("indep-b", &["--cards", "20"]).await;
    let proxy = a.behind_proxy().await;
    // a's pull fails for good; b must not care.
    proxy.set_rules(vec![Rule::respond(
        format!("/{}/_changes", a.name),
        500,
        r#"{"error":"boom","reason":"test"}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    let service = service(
        &proxy.url(),
        dir.path(),
        small_batches()
            .with_max_concurrent_pulls(1)
            .with_remote(quick_failures()),
    );
    // b has settings of its own: batches of 5, read as pages (so they
    // show as requests).
    service.set_pull_config(&b.name, paged_config(5, 1));
    let (sa, sb) = tokio::join!(
        service.ensure_synced(&a.name, Refresh::IfNeeded),
        service.ensure_synced(&b.name, Refresh::IfNeeded)
    );
    assert_eq!(sa.state, SyncState::Error);
    assert_eq!(sb.state, SyncState::Ready);
    let feed_pages = proxy.count(&format!("/{}/_changes", b.name));
    let rows = b.feed_len().await;
    // A short last page, or an empty one after a full one (CouchDB's
    // `pending: 0` can spare it).
    assert!(
        feed_pages >= rows.div_ceil(5) && feed_pages <= rows / 5 + 1,
        "{feed_pages} requests for {rows} rows in pages of 5"
    );
    assert!(service.local(&a.name).is_none());
    assert_replica_equals_server(&service, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_disabled_missing_and_forced() {
    let db = TestDb::new("gate").await;
    db.bulk_docs(
        vec![
            json!({"_id": "CourseConfig", "localSync": {"enabled": false}}),
            json!({"_id": "a", "n": 1}),
        ],
        true,
    )
    .await;
    let missing = TestDb::new("gate-missing").await;
    missing.bulk_docs(vec![json!({"_id": "a"})], true).await;
    let proxy = db.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(
        &proxy.url(),
        dir.path(),
        small_batches().with_recheck_disabled_after(Duration::from_secs(3600)),
    );

    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Disabled);
    let failure = status.error.unwrap();
    assert_eq!(failure.kind, FailureKind::Disabled);
    assert!(failure.reason.contains("not true"));
    let status = service
        .ensure_synced(&missing.name, Refresh::IfNeeded)
        .await;
    assert_eq!(status.state, SyncState::Disabled);
    assert!(status.error.unwrap().reason.contains("no CourseConfig"));
    assert_eq!(proxy.count("/_changes"), 0, "nothing pulled");
    assert!(service.local(&db.name).is_none());
    assert!(SyncRoot::new(dir.path())
        .current(&db.name)
        .unwrap()
        .is_none());

    // Disabled stands until the re-check interval passes...
    let rev = db.get_json("CourseConfig").await["_rev"].clone();
    db.bulk_docs(
        vec![json!({"_id": "CourseConfig", "_rev": rev, "localSync": {"enabled": true}})],
        true,
    )
    .await;
    proxy.clear_requests();
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Disabled
    );
    assert_eq!(proxy.count(""), 0, "no request before the interval");

    // ...and force skips the gate.
    let status = service.ensure_synced(&missing.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert_replica_equals_server(&service, &missing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_database_is_checked_again_after_the_interval() {
    let db = TestDb::new("recheck").await;
    db.bulk_docs(vec![json!({"_id": "a"})], true).await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(
        &server().base,
        dir.path(),
        small_batches().with_recheck_disabled_after(Duration::ZERO),
    );
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Disabled
    );
    db.bulk_docs(vec![enabled_config()], true).await;
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    assert_replica_equals_server(&service, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_mid_pull_then_resume_from_checkpoint() {
    let db = TestDb::seeded("gone", &["--cards", "150", "--realistic"]).await;
    let proxy = db.behind_proxy().await;
    // Two batches get through, then the server is unreachable.
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::drop_connection("/_bulk_get").skip(2),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let service = service(
        &proxy.url(),
        dir.path(),
        SyncConfig::default()
            .with_pull(pull_config(20, 1))
            .with_remote(quick_failures()),
    );
    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Error, "{status:?}");
    let failure = status.error.unwrap();
    assert_eq!(failure.kind, FailureKind::Remote, "{failure:?}");
    let reason = failure.reason;
    assert!(
        reason.contains("_bulk_get") && reason.contains("connection"),
        "a readable reason: {reason}"
    );
    assert!(service.local(&db.name).is_none());
    let partial = SyncRoot::new(dir.path())
        .current(&db.name)
        .unwrap()
        .unwrap();
    assert!(partial.is_dir(), "the partial replica is kept");

    proxy.clear_rules();
    proxy.clear_requests();
    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert!(
        status.last.unwrap().rebuilt.is_none(),
        "resumed, not rebuilt"
    );
    let first_feed = proxy
        .requests()
        .into_iter()
        .find(|r| r.contains("/_changes"))
        .unwrap();
    assert!(
        !first_feed.contains("since=0&") && !first_feed.ends_with("since=0"),
        "resumed from the checkpoint: {first_feed}"
    );
    let replica = service.local(&db.name).unwrap();
    assert_eq!(replica.path(), partial, "same replica");
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_on_failure_leaves_no_partial_replica() {
    let db = TestDb::seeded("destroy", &["--cards", "100"]).await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::drop_connection("/_bulk_get").skip(1),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let service = service(
        &proxy.url(),
        dir.path(),
        SyncConfig::default()
            .with_pull(pull_config(20, 1))
            .with_remote(quick_failures())
            .with_failure_policy(FailurePolicy::Destroy),
    );
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Error
    );
    let root = SyncRoot::new(dir.path());
    assert!(root.current(&db.name).unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(root.db_dir(&db.name))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("gen-"))
            .count(),
        0
    );
    proxy.clear_rules();
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    assert_replica_equals_server(&service, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_reports_runs_and_stops_promptly() {
    let a = TestDb::seeded("sched-a", &["--cards", "30"]).await;
    let b = TestDb::seeded("sched-b", &["--cards", "30"]).await;
    let proxy: FaultProxy = a.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(&proxy.url(), dir.path(), small_batches());
    for db in [&a, &b] {
        assert_eq!(
            service
                .ensure_synced(&db.name, Refresh::IfNeeded)
                .await
                .state,
            SyncState::Ready
        );
    }

    // Changes on the server: 3 new, 2 updated, 1 deleted.
    a.bulk_docs(
        (0..3).map(|i| json!({"_id": format!("new-{i}")})).collect(),
        true,
    )
    .await;
    let mut edits = Vec::new();
    for id in ["c-000000", "c-000001", "c-000002"] {
        let mut doc = a.get_json(id).await;
        doc["edited"] = json!(true);
        edits.push(doc);
    }
    edits[2]["_deleted"] = json!(true);
    a.bulk_docs(edits, true).await;

    let mut schedule = service.schedule(
        ScheduleConfig::every(Duration::from_millis(200)).with_jitter(Duration::from_millis(50)),
    );
    let run = tokio::time::timeout(Duration::from_secs(60), schedule.next_run())
        .await
        .expect("a scheduled run")
        .unwrap();
    assert_eq!(run.dbs.len(), 2);
    assert_eq!(run.failed, 0);
    assert_eq!(
        (run.created, run.updated, run.deleted, run.skipped),
        (3, 2, 1, 0),
        "{run:?}"
    );
    assert_replica_equals_server(&service, &a).await;
    let run = tokio::time::timeout(Duration::from_secs(60), schedule.next_run())
        .await
        .expect("another run")
        .unwrap();
    assert_eq!((run.created, run.updated, run.deleted), (0, 0, 0));

    // A run stuck in a slow fetch: stop ends it at a batch boundary, fast.
    b.bulk_docs(
        (0..60)
            .map(|i| json!({"_id": format!("more-{i:02}")}))
            .collect(),
        true,
    )
    .await;
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::delay("/_bulk_get", 30_000),
    ]);
    proxy.clear_requests();
    schedule.trigger();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.count("/_bulk_get") == 0 {
        assert!(Instant::now() < deadline, "the triggered run never fetched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), schedule.stop())
        .await
        .expect("stop() returns promptly");
    // Generous on a shared machine; the fetch it cut waits 30 s.
    assert!(stopping.elapsed() < Duration::from_secs(5));
    let status = service.status(&b.name);
    assert_eq!(status.state, SyncState::Error, "{status:?}");
    assert!(status.error.unwrap().reason.contains("stopped"));

    // The replica is intact and a later sync finishes the work.
    proxy.clear_rules();
    assert_eq!(
        service
            .ensure_synced(&b.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    assert_replica_equals_server(&service, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sync_then_read_under_the_root() {
    let db = TestDb::seeded("cli-sync", &["--cards", "25"]).await;
    let off = TestDb::new("cli-off").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let out = settee(&[
        "sync",
        &server().authed_base(),
        root,
        "--db",
        &db.name,
        "--db",
        &off.name,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["db"], db.name.as_str());
    assert_eq!(lines[0]["state"], "ready");
    assert!(lines[0]["created"].as_u64().unwrap() > 25);
    assert_eq!(lines[1]["state"], "disabled");
    assert!(lines[1]["error"].is_string());

    let out = settee(&["dump", root, "--db", &db.name]);
    assert!(out.status.success());
    let dump: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_same_dump(&dump, &db.server_dump().await);
    let out = settee(&["get", root, "--db", &db.name, "db-epoch"]);
    assert!(out.status.success());
    let out = settee(&["status", root, "--db", &off.name]);
    assert_eq!(out.status.code(), Some(2), "no replica for a disabled db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_checkpoint_rebuilds_and_a_failed_refresh_keeps_serving() {
    let db = TestDb::seeded("refused", &["--cards", "30"]).await;
    let proxy = db.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(
        &proxy.url(),
        dir.path(),
        small_batches().with_remote(quick_failures()),
    );
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    let before = service.local(&db.name).unwrap();

    // A refresh that cannot reach the server fails, but the ready replica
    // stays readable (offline first).
    proxy.set_rules(vec![Rule::drop_connection("")]);
    let status = service.ensure_synced(&db.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Error);
    assert_eq!(service.local(&db.name).unwrap().path(), before.path());

    // The server refuses the stored checkpoint (a 400 on `_changes` with
    // that `since`, as servers other than CouchDB 3 may answer a sequence
    // they do not know): rebuilt from the beginning. The rule names the
    // checkpoint the replica holds, on every server.
    let pulled_seq = |replica: &settee::Replica| match settee::replicate::last_pull(replica)
        .unwrap()
        .unwrap()
        .last_seq
        .0
    {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let checkpoint = pulled_seq(&before);
    db.bulk_docs(vec![json!({"_id": "late"})], true).await;
    let refused = format!("/_changes?style=all_docs&since={}&", enc(&checkpoint));
    proxy.set_rules(vec![Rule::respond(
        refused.clone(),
        400,
        r#"{"error":"bad_request","reason":"Malformed sequence supplied in 'since' parameter."}"#,
    )]);
    let status = service.ensure_synced(&db.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert_eq!(
        status.last.unwrap().rebuilt,
        Some(RebuildReason::Checkpoint)
    );
    assert!(
        proxy.count(&refused) >= 1,
        "the refused checkpoint was asked for: {:?}",
        proxy.requests()
    );
    proxy.clear_rules();
    assert_ne!(service.local(&db.name).unwrap().path(), before.path());
    assert_replica_equals_server(&service, &db).await;

    // CouchDB 3 never refuses a `since` from a previous instance of the
    // database: it rewinds the shards whose uuid differs to 0, so the feed
    // starts over (measured on 3.4.3: a 20-document database recreated with
    // 30, `since=<old last_seq>` answered all 30). The recreation is told
    // by another signal, and nothing old merges with new.
    if server().is_couchdb || quirks::enabled() {
        let old = service.local(&db.name).unwrap();
        let old_since = pulled_seq(&old);
        drop(old);
        recreate(&db).await;
        let mut docs = vec![enabled_config()];
        docs.extend((0..30).map(|i| json!({"_id": format!("new-{i:02}")})));
        db.bulk_docs(docs, true).await;
        let (status, feed) = db
            .request(
                reqwest::Method::GET,
                &format!("_changes?since={}", enc(&old_since)),
                None,
            )
            .await;
        assert_eq!(status, 200, "not refused: {feed}");
        assert_eq!(
            feed["results"].as_array().unwrap().len(),
            31,
            "every row from the start: {feed}"
        );
        let status = service.ensure_synced(&db.name, Refresh::Force).await;
        assert_eq!(status.state, SyncState::Ready, "{status:?}");
        let rebuilt = status.last.unwrap().rebuilt;
        assert!(
            rebuilt
                .as_ref()
                .is_some_and(|r| *r != RebuildReason::Checkpoint),
            "another signal: {rebuilt:?}"
        );
        assert_replica_equals_server(&service, &db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_replica_stays_readable() {
    let db = TestDb::seeded("offline", &["--cards", "20"]).await;
    let proxy = db.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let first = service(
        &proxy.url(),
        dir.path(),
        small_batches().with_remote(quick_failures()),
    );
    assert_eq!(
        first.ensure_synced(&db.name, Refresh::IfNeeded).await.state,
        SyncState::Ready
    );
    let want = replica_dump(&first.local(&db.name).unwrap());

    proxy.set_rules(vec![Rule::drop_connection("")]);
    // The ready check cannot reach the server: still ready (the seed's rule).
    let status = first.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    drop(first);

    // A new process, offline: an error, not "disabled", and the replica
    // completed before is readable.
    let second = service(
        &proxy.url(),
        dir.path(),
        small_batches().with_remote(quick_failures()),
    );
    let status = second.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Error, "{status:?}");
    assert!(status.error.unwrap().reason.contains("CourseConfig"));
    let replica = second.local(&db.name).expect("readable offline");
    assert_eq!(replica_dump(&replica), want);

    proxy.clear_rules();
    assert_eq!(
        second
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
}

/// Counts the hook calls; fails the warm-up when told to.
#[derive(Default)]
struct CountingHooks {
    warmed: std::sync::Mutex<Vec<std::path::PathBuf>>,
    ready: std::sync::Mutex<Vec<(String, std::path::PathBuf)>>,
    fail_warm: std::sync::atomic::AtomicBool,
}

impl SyncHooks for CountingHooks {
    fn warm<'a>(
        &'a self,
        replica: &'a Replica,
    ) -> futures::future::BoxFuture<'a, settee::Result<()>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.warmed
                .lock()
                .unwrap()
                .push(replica.path().to_path_buf());
            if self.fail_warm.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(
                    settee::views::ViewError::InvalidQuery("warm-up refused".into()).into(),
                );
            }
            Ok(())
        })
    }

    fn replica_ready(&self, db: &str, replica: &Replica, _remote: &Remote) {
        self.ready
            .lock()
            .unwrap()
            .push((db.to_owned(), replica.path().to_path_buf()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_warm_before_ready_and_see_every_swap() {
    let db = TestDb::seeded("hooks", &["--cards", "20", "--epoch", "1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = std::sync::Arc::new(CountingHooks::default());
    let s = server();
    let service =
        SyncService::open_with_hooks(&s.authed_base(), dir.path(), small_batches(), hooks.clone())
            .unwrap();
    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready);
    assert!(
        status.view_warm_time.unwrap() >= Duration::from_millis(30),
        "the warm-up is timed"
    );
    let first = service.local(&db.name).unwrap().path().to_path_buf();
    assert_eq!(*hooks.warmed.lock().unwrap(), vec![first.clone()]);
    assert_eq!(
        *hooks.ready.lock().unwrap(),
        vec![(db.name.clone(), first.clone())]
    );

    // A ready check pulls nothing and warms nothing.
    service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(hooks.warmed.lock().unwrap().len(), 1);

    // A rebuild warms the new replica before the swap and announces it.
    recreate(&db).await;
    db.seed(&["--cards", "20", "--epoch", "2"]);
    service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    let second = service.local(&db.name).unwrap().path().to_path_buf();
    assert_ne!(first, second);
    assert_eq!(hooks.warmed.lock().unwrap().last(), Some(&second));
    assert_eq!(
        hooks.ready.lock().unwrap().last(),
        Some(&(db.name.clone(), second.clone()))
    );

    // A failing warm-up fails the sync.
    hooks
        .fail_warm
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let status = service.ensure_synced(&db.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Error);
    assert!(status.error.unwrap().reason.contains("warm-up refused"));
}

#[test]
fn cli_sync_every_runs_until_interrupted() {
    use std::io::BufRead;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::seeded("cli-every", &["--cards", "10"]));
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_settee"))
        .args(["sync", &server().authed_base()])
        .arg(dir.path())
        .args(["--db", &db.name, "--every", "300ms", "--json"])
        .env("RUST_LOG", "warn")
        .env_remove("SETTEE_PASSWORD")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["state"], "ready");
    // Two scheduled runs, each summed up as one JSON object.
    for _ in 0..2 {
        let run: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(run["dbs"][0]["db"], db.name.as_str());
        assert_eq!(run["failed"], 0);
    }
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "settee sync --every ignored Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean stop: {status:?}");
    drop(rt);
}

/// Polls the server until `id` has `field == want` (the push worker runs in
/// the background), for at most 30 s.
async fn wait_for_remote(db: &TestDb, id: &str, field: &str, want: &Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, doc) = db.request(reqwest::Method::GET, &enc_id(id), None).await;
        if status == 200 && &doc[field] == want {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached the server with {field} = {want}: {status} {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_views_warm_and_local_writes_pushed() {
    let db = TestDb::seeded("wired", &["--cards", "40", "--seed", "5"]).await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(&server().base, dir.path(), small_batches());
    let status = service.ensure_synced(&db.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert!(status.view_warm_time.is_some());

    // The views were warmed before `ready`: nothing is left to index.
    let views = service.views(&db.name).expect("views of a ready replica");
    let replica = service.local(&db.name).unwrap();
    assert_eq!(views.warm().unwrap().docs_indexed(), 0);
    let elo = views
        .query("elo", &settee::views::QueryOptions::default())
        .unwrap();
    assert!(elo.total_rows >= 40, "{} elo rows", elo.total_rows);

    // A local write is pushed by the service's worker.
    let written = replica
        .put("local-note", json!({"text": "from the app"}))
        .await
        .unwrap();
    let doc = wait_for_remote(&db, "local-note", "text", &json!("from the app")).await;
    assert_eq!(doc["_rev"], json!(written.rev.to_string()));
    assert!(service.outbox(&db.name).is_some());
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_carries_unpushed_local_writes_to_the_new_replica() {
    let db = TestDb::seeded("carry", &["--cards", "30", "--seed", "6", "--epoch", "1"]).await;
    let dir = tempfile::tempdir().unwrap();
    // No push worker: the writes stay queued when the remote is recreated.
    let config = small_batches().with_push(None);
    let service = service(&server().base, dir.path(), config);
    assert_eq!(
        service.ensure_synced(&db.name, Refresh::Force).await.state,
        SyncState::Ready
    );
    let old = service.local(&db.name).unwrap();
    let card = old
        .all_docs(..)
        .filter_map(Result::ok)
        .find(|d| d.id.starts_with("c-"))
        .expect("a card")
        .id;
    old.update(&card, |doc| {
        let mut body = doc?.body.clone();
        body.insert("elo".into(), json!(4242));
        Some(body)
    })
    .await
    .unwrap();
    old.put("note-1", json!({"text": "kept"})).await.unwrap();
    assert_eq!(old.outbox().len().unwrap(), 2);
    drop(old);

    recreate(&db).await;
    db.seed(&["--cards", "30", "--seed", "6", "--epoch", "2"]);
    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert_eq!(
        status.last.as_ref().unwrap().rebuilt,
        Some(RebuildReason::Epoch)
    );
    let new = service.local(&db.name).unwrap();
    // The edits are there, on top of the recreated database's revisions,
    // and queued for it; no old revision came along.
    let carried = new.get(&card).unwrap().unwrap();
    assert_eq!(carried.body["elo"], json!(4242));
    assert_eq!(carried.rev.pos, 2, "a child of the new remote winner");
    let server_card = db.get_json(&enc_id(&card)).await;
    assert_eq!(
        new.leaves(&card).unwrap().len(),
        1,
        "one branch: the old history did not merge"
    );
    assert_eq!(
        carried.rev.pos,
        server_card["_rev"].as_str().unwrap()[..1]
            .parse::<u64>()
            .unwrap()
            + 1
    );
    assert_eq!(new.get("note-1").unwrap().unwrap().body["text"], "kept");
    assert_eq!(new.outbox().len().unwrap(), 2);
}

/// Panics in its first warm-up, as a buggy app hook would.
#[derive(Default)]
struct PanicsOnce(std::sync::atomic::AtomicBool);

impl SyncHooks for PanicsOnce {
    fn warm<'a>(
        &'a self,
        _replica: &'a Replica,
    ) -> futures::future::BoxFuture<'a, settee::Result<()>> {
        if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("a bug in the app's warm-up hook");
        }
        Box::pin(async { Ok(()) })
    }
}

/// Issue 17 §2.5: a sync task that panics must not leave its database
/// blocked for the life of the process (every later call joined the dead
/// task and got its failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sync_does_not_wedge_later_syncs() {
    let db = TestDb::new("panic").await;
    db.bulk_docs(vec![enabled_config(), json!({"_id": "a"})], true)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let s = server();
    let service = SyncService::open_with_hooks(
        &s.authed_base(),
        dir.path(),
        small_batches(),
        std::sync::Arc::new(PanicsOnce::default()),
    )
    .unwrap();
    let first = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(first.state, SyncState::Error, "{first:?}");
    let second = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(second.state, SyncState::Ready, "{second:?}");
    assert!(service.local(&db.name).unwrap().get("a").unwrap().is_some());
}

/// Issue 17 §2.7: in a small replica, documents created offline and not
/// pushed yet are unknown to the remote by every revision; the probe
/// counted them and rebuilt a replica that was fine (taking the app's
/// replica away mid-session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpushed_documents_do_not_make_a_small_replica_look_stale() {
    let db = TestDb::new("probe").await;
    let mut docs = vec![enabled_config()];
    docs.extend((0..3).map(|i| json!({"_id": format!("card-{i}"), "v": 1})));
    db.bulk_docs(docs, true).await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(&server().base, dir.path(), small_batches().with_push(None));
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    let replica = service.local(&db.name).unwrap();
    for i in 0..6 {
        replica
            .put(&format!("offline-{i}"), json!({"v": 1}))
            .await
            .unwrap();
    }
    drop(replica);
    let status = service.ensure_synced(&db.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    assert_eq!(status.last.unwrap().rebuilt, None, "not rebuilt");
    let replica = service.local(&db.name).unwrap();
    assert_eq!(
        replica.outbox().len().unwrap(),
        6,
        "the offline writes stay queued"
    );
}

/// Issue 17 §2.2: after the remote database is recreated, a local write
/// must not push the replica's old revisions into the new database (no
/// push round runs on a remote that is not the replica's database), a
/// worker handle the app cloned is retired with its replica, and the write
/// reaches the new database after the rebuild, carried as a new edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_reaches_a_recreated_database_and_old_worker_handles_retire() {
    let cards = |version: &str| -> Vec<Value> {
        let mut docs = vec![enabled_config()];
        docs.extend((0..6).map(|i| json!({"_id": format!("card-{i}"), "v": version})));
        docs
    };
    let db = TestDb::new("pushrecreated").await;
    db.bulk_docs(cards("old"), true).await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(&server().base, dir.path(), small_batches());
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    let old_worker = service.outbox(&db.name).expect("a push worker");

    recreate(&db).await;
    db.bulk_docs(cards("new"), true).await;
    let new_rev = db.get_json("card-1").await["_rev"].clone();

    // The app edits a card in the replica it holds: the worker wakes.
    let replica = service.local(&db.name).unwrap();
    replica
        .update("card-1", |d| {
            let mut body = d?.body.clone();
            body.insert("mine".into(), json!(true));
            Some(body)
        })
        .await
        .unwrap();
    drop(replica);
    let status = old_worker.drain(Duration::from_secs(5)).await.unwrap();
    assert!(status.paused.is_some(), "the round refused: {status:?}");
    assert_eq!(status.pending, 1, "{status:?}");
    let server_card = remote_doc_with_conflicts(&db, "card-1").await;
    assert_eq!(
        server_card["_rev"], new_rev,
        "nothing old reached the new database"
    );
    assert!(server_card.get("_conflicts").is_none(), "{server_card}");

    // The next sync rebuilds; the old handle's worker stops, the new one
    // pushes the carried edit on top of the new database's card.
    let synced = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(synced.state, SyncState::Ready, "{synced:?}");
    assert!(synced.last.unwrap().rebuilt.is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while old_worker.status().unwrap().running && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !old_worker.status().unwrap().running,
        "the old worker retired"
    );
    let new_worker = service.outbox(&db.name).expect("a new push worker");
    let status = new_worker.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status.pending, 0, "{status:?}");
    let server_card = remote_doc_with_conflicts(&db, "card-1").await;
    assert_eq!(server_card["mine"], true);
    // The carried edit is the old replica's whole body (see sync/carry.rs).
    assert_eq!(server_card["v"], "old");
    assert!(server_card["_rev"].as_str().unwrap().starts_with("2-"));
    assert!(server_card.get("_conflicts").is_none(), "{server_card}");
}

async fn remote_doc_with_conflicts(db: &TestDb, id: &str) -> Value {
    db.get_json(&format!("{}?conflicts=true", enc(id))).await
}

/// Stops the schedule it holds when a replica is retired, and takes its
/// time doing so: a schedule stopped in the middle of a swap.
#[derive(Default)]
struct StopsTheScheduleOnRetire {
    schedule: std::sync::Mutex<Option<settee::sync::ScheduleHandle>>,
    retired: std::sync::atomic::AtomicUsize,
}

impl SyncHooks for StopsTheScheduleOnRetire {
    fn replica_retired(&self, _db: &str, _path: &std::path::Path) {
        // Dropping the handle stops the schedule (and the sync it runs).
        drop(self.schedule.lock().unwrap().take());
        std::thread::sleep(Duration::from_millis(300));
        self.retired
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Issue 17 §2.6: a schedule stopped while a rebuilt replica is being
/// swapped in (the old one being retired) left the database announced as
/// ready but without a push worker, for the life of the process: local
/// writes stayed queued. The worker now starts in the same step as the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_stopped_during_a_swap_leaves_the_push_worker_running() {
    let db = TestDb::seeded(
        "swapstop",
        &["--cards", "20", "--seed", "1", "--epoch", "1"],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = server();
    let hooks = std::sync::Arc::new(StopsTheScheduleOnRetire::default());
    let service =
        SyncService::open_with_hooks(&s.authed_base(), dir.path(), small_batches(), hooks.clone())
            .unwrap();
    assert_eq!(
        service
            .ensure_synced(&db.name, Refresh::IfNeeded)
            .await
            .state,
        SyncState::Ready
    );
    recreate(&db).await;
    db.seed(&["--cards", "20", "--seed", "2", "--epoch", "2"]);

    let schedule = service.schedule(ScheduleConfig::every(Duration::from_secs(3600)));
    schedule.trigger();
    *hooks.schedule.lock().unwrap() = Some(schedule);
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.retired.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the rebuild retired no replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = service.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    let worker = service
        .outbox(&db.name)
        .expect("the swapped-in replica has its push worker");
    let replica = service.local(&db.name).unwrap();
    replica.put("after-swap", json!({"v": 1})).await.unwrap();
    let pushed = worker.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(pushed.pending, 0, "{pushed:?}");
    assert_eq!(db.get_json("after-swap").await["v"], 1);
}

/// Issue 18: a replica is `ready` with its design documents' views
/// already indexed (the app's `warmViewIndices`, done before `ready`), and
/// a design document that cannot run does not keep it from `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_replicas_have_their_design_doc_views_warmed() {
    use settee::query::Query;
    use settee::views::{QueryOptions, Update};
    let db = TestDb::seeded("sync-warm-ddocs", &["--cards", "60"]).await;
    db.bulk_docs(
        vec![json!({"_id": "_design/broken", "views": {"v": {"map": "function (doc) { emit(("}}})],
        true,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&server().base, dir.path(), small_batches());
    let status = svc.ensure_synced(&db.name, Refresh::IfNeeded).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");
    let replica = svc.local(&db.name).expect("a ready replica");
    let query = Query::open(&replica).unwrap();
    // Answered from the index as it is: already complete.
    let q = QueryOptions::default().update(Update::False);
    let elo = query.view("elo", "elo", &q).unwrap().to_json();
    let (_, want) = db
        .request(reqwest::Method::GET, "_design/elo/_view/elo", None)
        .await;
    assert_eq!(elo["rows"], want["rows"]);
    let err = query
        .view("broken", "v", &QueryOptions::default())
        .unwrap_err();
    assert_eq!(err.error(), "compilation_error", "{err}");

    // And with the warm-up turned off, nothing is indexed before `ready`.
    let off = tempfile::tempdir().unwrap();
    let svc = service(
        &server().base,
        off.path(),
        small_batches().with_design_doc_warm(false),
    );
    assert_eq!(
        svc.ensure_synced(&db.name, Refresh::IfNeeded).await.state,
        SyncState::Ready
    );
    let replica = svc.local(&db.name).unwrap();
    let cold = Query::open(&replica)
        .unwrap()
        .view("elo", "elo", &q)
        .unwrap();
    assert!(cold.rows().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_database_is_followed_between_syncs_until_shutdown() {
    let db = TestDb::seeded("sync-live", &["--cards", "20", "--seed", "7"]).await;
    let dir = tempfile::tempdir().unwrap();
    let service = service(&server().base, dir.path(), small_batches());
    let live = settee::PullConfig::builder()
        .batch_size(25)
        .live(Duration::from_secs(10))
        .build()
        .unwrap();
    service.set_pull_config(&db.name, live);
    let status = service.ensure_synced(&db.name, Refresh::Force).await;
    assert_eq!(status.state, SyncState::Ready, "{status:?}");

    // Written on the server, in the replica with its views warm, without a
    // call: the follower long-polls and syncs.
    let arrives = |id: String, within: Duration| {
        let service = service.clone();
        let name = db.name.clone();
        async move {
            let deadline = Instant::now() + within;
            loop {
                let replica = service.local(&name).expect("a ready replica");
                if replica.get(&id).unwrap().is_some() {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut lags = Vec::new();
    for i in 0..5 {
        let id = format!("live-{i}");
        let at = Instant::now();
        db.bulk_docs(vec![json!({"_id": id, "n": i})], true).await;
        assert!(
            arrives(id, Duration::from_secs(5)).await,
            "live-{i} never arrived"
        );
        lags.push(at.elapsed());
    }
    eprintln!("sync service live: lags {lags:?}");
    // The sync that took them in warmed the views before it ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while service
        .ensure_synced(&db.name, Refresh::IfNeeded)
        .await
        .state
        != SyncState::Ready
    {
        assert!(Instant::now() < deadline);
    }
    let views = service.views(&db.name).unwrap();
    assert_eq!(views.warm().unwrap().docs_indexed(), 0, "views were warm");
    assert_replica_equals_server(&service, &db).await;

    // After shutdown nothing follows; the next sync follows again.
    service.shutdown().await;
    db.bulk_docs(vec![json!({"_id": "after-shutdown"})], true)
        .await;
    assert!(!arrives("after-shutdown".into(), Duration::from_millis(1500)).await);
    assert_eq!(
        service.ensure_synced(&db.name, Refresh::Force).await.state,
        SyncState::Ready
    );
    db.bulk_docs(vec![json!({"_id": "followed-again"})], true)
        .await;
    assert!(arrives("followed-again".into(), Duration::from_secs(5)).await);
    service.shutdown().await;
}
