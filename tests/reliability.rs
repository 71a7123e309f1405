//! Issue 12: a failed first pull leaves nothing behind, clear errors for a
//! file or a locked replica, per-document failures where one document used
//! to fail every later pull, stopping a pull cleanly, one pull at a time;
//! capped answers, a read timeout and attachments streamed to the store.

use crate::support::proxy::{Fault, FaultProxy, Gate, Rule};
use crate::support::*;
use settee::{
    Endpoint, PullConfig, Remote, RemoteConfig, RemoteError, Replica, ReplicaConfig, RetryPolicy,
};
use std::time::Duration;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_pull_leaves_no_replica_behind() {
    let db = TestDb::new("firstfail").await;
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("refused", format!("http://127.0.0.1:1/{}", db.name)),
        (
            "no such db",
            format!("{}/settee-no-such-db", s.authed_base()),
        ),
        (
            "401",
            format!(
                "{}/{}",
                server::with_userinfo(&s.base, "settee-nobody:wrong-password"),
                enc(&db.name)
            ),
        ),
    ];
    for (what, url) in &cases {
        let target = dir.path().join("new");
        let out = settee(&["pull", "--retries", "0", url, target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(!target.exists(), "{what}: {} left behind", target.display());

        // An empty directory given by the user stays, empty.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let out = settee(&["pull", "--retries", "0", url, empty.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{what}");
    }
}

#[test]
fn pulling_into_a_file_says_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a replica").unwrap();
    let out = settee(&["pull", "http://127.0.0.1:1/db", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("not a directory"), "{err}");
    assert!(!err.contains("another settee process"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a replica");
}

#[test]
fn a_replica_open_in_another_process_is_reported_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let _held = Replica::open(&path, ReplicaConfig::default()).unwrap();
    for cmd in ["status", "dump"] {
        let out = settee(&[cmd, path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = stderr(&out);
        assert!(err.contains("is locked by pid"), "{cmd}: {err}");
        assert!(
            err.contains(&format!("pid {} ", std::process::id())),
            "names the holder: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_whose_refetch_keeps_failing_does_not_stop_later_pulls() {
    let db = TestDb::seeded("retryfail", &["--cards", "12"]).await;
    let proxy = db.behind_proxy().await;
    // The first _bulk_get answer leaves its first document out: it goes on
    // the retry list.
    fn drop_first(answer: &mut serde_json::Value) {
        if let Some(results) = answer["results"].as_array_mut() {
            results.remove(0);
        }
    }
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::edit_json("_bulk_get", drop_first).once(),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let first = pull(&replica, &remote, 1000, 5).await;
    let retry = replica.pending_retries().unwrap();
    assert_eq!(retry.len(), 1, "{:?}", first.failures);
    let failing = retry[0].clone();

    // Its refetch now fails for good, and the server has a new document.
    proxy.set_rules(vec![Rule::respond(
        "open_revs=all",
        500,
        r#"{"error":"unknown_error","reason":"badmatch"}"#,
    )]);
    db.bulk_docs(vec![serde_json::json!({"_id": "zz-new"})], true)
        .await;
    let second = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(second.doc_write_failures, 1, "{:?}", second.failures);
    assert_eq!(second.failures[0].id, failing);
    assert_eq!(second.failures[0].error, "retry_failed");
    assert!(
        replica.get("zz-new").unwrap().is_some(),
        "the feed was read"
    );
    assert_eq!(replica.pending_retries().unwrap(), vec![failing.clone()]);

    proxy.clear_rules();
    let third = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(third.doc_write_failures, 0, "{:?}", third.failures);
    assert!(replica.pending_retries().unwrap().is_empty());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bulk_get_one_failing_document_fails_alone() {
    let db = TestDb::seeded("fallbackfail", &["--cards", "12"]).await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::not_found("_bulk_get"),
        Rule::respond(
            "/c-000003?",
            500,
            r#"{"error":"unknown_error","reason":"badmatch"}"#,
        ),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let first = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(first.doc_write_failures, 1, "{:?}", first.failures);
    assert_eq!(first.failures[0].id, "c-000003");
    assert_eq!(replica.pending_retries().unwrap(), vec!["c-000003"]);

    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::not_found("_bulk_get"),
    ]);
    let second = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(second.doc_write_failures, 0, "{:?}", second.failures);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pull_returns_with_nothing_left_running() {
    let db = TestDb::seeded("stop", &["--cards", "100"]).await;
    let proxy = db.behind_proxy().await;
    let gate = Gate::new();
    // The third _bulk_get waits at the gate; the pull is stopped there.
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::hold("_bulk_get", &gate).skip(2),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let stop = {
        let gate = gate.clone();
        async move { gate.wait_held(1).await }
    };
    let result = settee::pull(&replica, &remote, &pull_config(10, 3))
        .on_progress(|_| {})
        .until(stop)
        .await
        .unwrap();
    assert!(result.interrupted);
    assert!(result.batches <= 2, "stopped before the held batch");
    let rep_id =
        settee::replicate::replication_id(&remote.server_info().await.unwrap(), remote.endpoint());
    if result.batches > 0 {
        let cp: settee::replicate::Checkpoint = settee::replicate::checkpoint(&replica, &rep_id)
            .unwrap()
            .unwrap();
        assert_eq!(cp.last_seq, result.last_seq, "what it reports is committed");
    }
    assert_eq!(replica.handle_count(), 1, "no task holds the replica");
    gate.open();
    proxy.clear_rules();

    let resumed = pull(&replica, &remote, 10, 3).await;
    assert_eq!(resumed.start_seq, result.last_seq);
    assert!(!resumed.interrupted);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_on_one_replica_run_one_at_a_time() {
    let db = TestDb::seeded("serial", &["--cards", "30"]).await;
    let proxy = db.behind_proxy().await;
    let gate = Gate::new();
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::hold("_bulk_get", &gate).once(),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let first = {
        let (replica, remote) = (replica.clone(), remote.clone());
        tokio::spawn(async move { pull(&replica, &remote, 1000, 1).await })
    };
    gate.wait_held(1).await;
    let holder = replica
        .pull_holder()
        .expect("the first pull holds the replica");
    assert!(holder.contains(&db.name), "{holder}");
    assert!(!holder.contains(&server().password), "{holder}");
    let second = {
        let (replica, remote) = (replica.clone(), remote.clone());
        tokio::spawn(async move { pull(&replica, &remote, 1000, 1).await })
    };
    gate.open();
    let first = first.await.unwrap();
    let second = second.await.unwrap();
    // Had they overlapped, the second would have started from scratch.
    assert_eq!(second.start_seq, first.last_seq);
    assert_eq!(second.docs_written, 0);
    assert!(replica.pull_holder().is_none());
}

/// `{"_id": id, "d": {"a": … {"a": 1} … }}` with the body nested `levels` deep.
fn nested_doc(id: &str, levels: usize) -> serde_json::Value {
    let mut v = serde_json::json!(1);
    for _ in 0..levels.saturating_sub(1) {
        v = serde_json::json!({ "a": v });
    }
    serde_json::json!({"_id": id, "d": v})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_documents_read_back_and_too_deep_ones_fail_alone() {
    let db = TestDb::seeded("deep", &["--cards", "5"]).await;
    db.bulk_docs(
        vec![
            nested_doc("deep-200", 200),
            nested_doc("deep-max", settee::replica::MAX_NESTING),
            nested_doc("deep-over", settee::replica::MAX_NESTING + 1),
        ],
        true,
    )
    .await;
    let (dir, replica) = temp_replica();
    let result = pull(&replica, &db.remote(), 1000, 5).await;
    assert_eq!(result.doc_write_failures, 1, "{:?}", result.failures);
    assert_eq!(result.failures[0].id, "deep-over");
    assert!(
        result.failures[0].reason.contains("levels deep"),
        "says why: {:?}",
        result.failures[0]
    );
    for (id, levels) in [
        ("deep-200", 200),
        ("deep-max", settee::replica::MAX_NESTING),
    ] {
        let doc = replica.get(id).unwrap().expect("stored");
        assert_eq!(doc.to_json()["d"], nested_doc(id, levels)["d"], "{id}");
    }
    let path = dir.path().join("replica");
    let rep_s = path.to_str().unwrap().to_owned();
    drop(replica);
    let out = settee(&["get", &rep_s, "deep-200"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = settee(&["dump", &rep_s]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    let server_ids = db.changed_ids().await.len();
    assert_eq!(lines, server_ids - 1, "every document but the refused one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_a_pulled_replica_and_lists_damage() {
    let db = TestDb::seeded("check", &["--cards", "20", "--extras"]).await;
    let (dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 7, 2).await;
    let report = replica.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!(report.docs, db.changed_ids().await.len() as u64);
    assert!(report.attachments > 0, "the corpus has attachments");
    drop(replica);
    let path = dir.path().join("replica");
    let rep_s = path.to_str().unwrap();
    let out = settee(&["check", rep_s]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("consistent"));

    // Attachment bytes go missing behind the replica's back.
    {
        // sled may hold its file lock a moment after the last handle went.
        let started = std::time::Instant::now();
        let db = loop {
            match sled::open(&path) {
                Ok(db) => break db,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(5) => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen with sled: {e}"),
            }
        };
        let atts = db.open_tree("attachments").unwrap();
        let (digest, _) = atts.iter().next().unwrap().unwrap();
        atts.remove(digest).unwrap();
        db.flush().unwrap();
    }
    let out = settee(&["check", rep_s, "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["invariant"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"stub_bytes"), "{report:#}");
}

/// A `_changes` page whose one id is not UTF-8.
const INVALID_UTF8_CHANGES: &[u8] =
    b"{\"results\":[{\"id\":\"\xff\xfe\",\"seq\":1,\"changes\":[{\"rev\":\"1-a\"}]}],\"last_seq\":1}";

async fn pull_error(replica: &Replica, url: &str) -> settee::Error {
    let remote = remote_for(url, RetryPolicy::none());
    settee::pull(replica, &remote, &PullConfig::default())
        .await
        .expect_err("the pull must fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_bad_inputs_get_typed_errors_and_leave_the_replica_alone() {
    use settee::{Endpoint, Error, RemoteError};
    let db = TestDb::seeded("badinput", &["--cards", "10"]).await;
    let (_dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 1000, 5).await;
    db.bulk_docs(vec![serde_json::json!({"_id": "late"})], true)
        .await;
    let before = replica_dump(&replica);
    let rep_id = settee::replicate::replication_id(
        &db.remote().server_info().await.unwrap(),
        db.remote().endpoint(),
    );
    let checkpoint = settee::replicate::checkpoint(&replica, &rep_id).unwrap();

    // Addresses: an unknown scheme, a host that does not resolve.
    let e = Endpoint::parse("ftp://127.0.0.1/db").unwrap_err();
    assert!(matches!(e, RemoteError::InvalidUrl { .. }), "{e:?}");
    let e = pull_error(&replica, "http://settee-no-such-host.invalid:5984/db").await;
    assert!(
        matches!(
            e,
            Error::Remote(RemoteError::Connect { .. } | RemoteError::Transport { .. })
        ),
        "{e:?}"
    );

    // Servers answering with the wrong thing.
    let proxy = db.behind_proxy().await;
    let url = db.url_via(&proxy.url());
    fn no_last_seq(v: &mut serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            o.remove("last_seq");
        }
    }
    let db_line = format!("GET /{} HTTP", enc(&db.name));
    let cases: Vec<(&str, Rule)> = vec![
        ("empty body", Rule::respond(db_line.as_str(), 200, "")),
        (
            "JSON of another shape",
            Rule::respond("_changes", 200, r#"{"rows":[{"id":"x"}],"total_rows":1}"#),
        ),
        (
            "_changes without last_seq",
            Rule::edit_json("_changes", no_last_seq),
        ),
        (
            "invalid UTF-8",
            Rule::respond_bytes("_changes", 200, INVALID_UTF8_CHANGES.to_vec()),
        ),
    ];
    for (what, rule) in cases {
        proxy.set_rules(vec![rule]);
        let e = pull_error(&replica, &url).await;
        assert!(
            matches!(
                e,
                Error::Remote(RemoteError::InvalidResponse { .. } | RemoteError::NotCouchDb { .. })
            ),
            "{what}: {e:?}"
        );
        assert!(!e.to_string().contains(&server().password), "{what}: {e}");
    }
    assert_eq!(replica_dump(&replica), before, "documents untouched");
    assert_eq!(
        settee::replicate::checkpoint(&replica, &rep_id).unwrap(),
        checkpoint
    );
    assert!(replica.check().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_over_the_size_limit_fails_alone_until_the_limit_allows_it() {
    let db = TestDb::seeded("toolarge", &["--cards", "10"]).await;
    db.bulk_docs(
        vec![serde_json::json!({"_id": "big", "text": "x".repeat(20_000)})],
        true,
    )
    .await;
    let (_dir, replica) = temp_replica();
    let limited = PullConfig::builder().max_doc_bytes(10_000).build().unwrap();
    let first = settee::pull(&replica, &db.remote(), &limited)
        .await
        .unwrap();
    assert_eq!(first.doc_write_failures, 1, "{:?}", first.failures);
    assert_eq!(first.failures[0].id, "big");
    assert_eq!(first.failures[0].error, "too_large");
    assert!(
        first.failures[0].reason.contains("10000"),
        "{:?}",
        first.failures
    );
    assert!(replica.get("big").unwrap().is_none());
    assert_eq!(replica.pending_retries().unwrap(), vec!["big"]);
    assert!(replica.check().unwrap().is_ok());

    // Still too large: it stays listed. Without the limit it arrives.
    let again = settee::pull(&replica, &db.remote(), &limited)
        .await
        .unwrap();
    assert_eq!(again.doc_write_failures, 1);
    assert_eq!(replica.pending_retries().unwrap(), vec!["big"]);
    let free = pull(&replica, &db.remote(), 1000, 5).await;
    assert_eq!(free.doc_write_failures, 0, "{:?}", free.failures);
    assert!(replica.pending_retries().unwrap().is_empty());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_command_at_a_batch_boundary() {
    let db = TestDb::seeded("sigint", &["--cards", "60"]).await;
    let proxy = db.behind_proxy().await;
    let gate = Gate::new();
    proxy.set_rules(vec![
        Rule::changes_without_docs(),
        Rule::hold("_bulk_get", &gate).skip(2),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();
    let child = settee_child(&[
        "pull",
        &db.url_via(&proxy.url()),
        rep_s,
        "--batch-size",
        "10",
        "--batches-limit",
        "1",
        "--quiet",
    ]);
    gate.wait_held(1).await;
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    gate.open();
    proxy.clear_rules();

    // Two batches were committed: the replica stays, consistent, and resumes.
    let out = settee(&["check", rep_s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let replica = Replica::open(&rep, ReplicaConfig::default()).unwrap();
    assert_eq!(
        replica.doc_count().unwrap() + replica.deleted_count().unwrap(),
        20,
        "two batches of 10"
    );
    let resumed = pull(&replica, &db.remote(), 10, 1).await;
    assert!(resumed.docs_written > 0);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

/// Bytes that compress badly enough and differ per size.
fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 7) % 253) as u8).collect()
}

fn fast_retries(n: u32) -> RetryPolicy {
    RetryPolicy::with_retries(n)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .without_jitter()
}

fn remote_with_config(db: &TestDb, proxy: &FaultProxy, config: RemoteConfig) -> Remote {
    Remote::new(Endpoint::parse(&db.url_via(&proxy.url())).unwrap(), config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_attachment_is_streamed_through_a_cut_and_a_stalled_body() {
    // 3 MiB of attachment against a 1 MiB cap on answers read whole: only a
    // body streamed to the store, never held as one answer, gets through.
    let db = TestDb::new("bigatt").await;
    let bytes = blob(3 * 1024 * 1024 + 17);
    db.put_attachment("big", "blob.bin", &bytes).await;
    db.bulk_docs(vec![serde_json::json!({"_id": "small", "v": 1})], true)
        .await;
    let proxy = db.behind_proxy().await;
    // First the body is cut halfway, then it stalls halfway (for longer
    // than the read timeout), then it arrives whole.
    proxy.set_rules(vec![
        Rule::new("blob.bin", Fault::TruncateHalf).once(),
        Rule::stall_halfway("blob.bin", 15_000).once(),
    ]);
    let config = RemoteConfig::default()
        .with_retry(fast_retries(3))
        .with_read_timeout(Duration::from_secs(1))
        .with_max_response_bytes(1024 * 1024);
    let remote = remote_with_config(&db, &proxy, config);
    let (_dir, replica) = temp_replica();
    let result = pull(&replica, &remote, 100, 2).await;
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    assert_eq!(proxy.count("blob.bin"), 3, "{:?}", proxy.requests());
    let got = replica.attachment_of("big", "blob.bin").unwrap().unwrap();
    assert!(got[..] == bytes[..], "the bytes read back differ");
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
    let report = replica.check().unwrap();
    assert!(report.is_ok(), "{report:?}");

    // On disk the bytes are a file of their own beside sled's, the only
    // one (the failed attempts left nothing).
    let files: Vec<_> = std::fs::read_dir(_dir.path().join("replica/attachments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().len(),
        bytes.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_over_its_cap_or_cut_on_every_attempt_fails_alone() {
    let db = TestDb::new("attcap").await;
    let bytes = blob(2 * 1024 * 1024 + 5);
    db.put_attachment("big", "blob.bin", &bytes).await;
    db.bulk_docs(vec![serde_json::json!({"_id": "small", "v": 1})], true)
        .await;
    let proxy = db.behind_proxy().await;
    let (_dir, replica) = temp_replica();

    // Over the cap: refused before a byte is stored, naming the setting.
    let capped = RemoteConfig::default()
        .with_retry(fast_retries(2))
        .with_max_attachment_bytes(Some(1024 * 1024));
    let result = pull(&replica, &remote_with_config(&db, &proxy, capped), 100, 2).await;
    assert_eq!(result.doc_write_failures, 1, "{:?}", result.failures);
    let failure = &result.failures[0];
    assert_eq!(failure.id, "big");
    assert!(
        failure.reason.contains("max_attachment_bytes"),
        "{failure:?}"
    );
    assert!(replica.get("small").unwrap().is_some());
    assert_eq!(replica.pending_retries().unwrap(), vec!["big".to_owned()]);

    // Cut halfway on every attempt: the document fails, the pull goes on.
    proxy.set_rules(vec![Rule::new("blob.bin", Fault::TruncateHalf)]);
    proxy.clear_requests();
    let config = RemoteConfig::default().with_retry(fast_retries(2));
    let remote = remote_with_config(&db, &proxy, config);
    let result = pull(&replica, &remote, 100, 2).await;
    assert_eq!(result.doc_write_failures, 1, "{:?}", result.failures);
    assert!(
        result.failures[0].reason.contains("cut short"),
        "{:?}",
        result.failures
    );
    assert_eq!(proxy.count("blob.bin"), 3, "one attempt and two retries");
    assert_eq!(replica.pending_retries().unwrap(), vec!["big".to_owned()]);
    let report = replica.check().unwrap();
    assert!(report.is_ok(), "no staged garbage is counted: {report:?}");

    // Once the body gets through, the retry list empties.
    proxy.clear_rules();
    let result = pull(&replica, &remote, 100, 2).await;
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    assert!(replica.pending_retries().unwrap().is_empty());
    let got = replica.attachment_of("big", "blob.bin").unwrap().unwrap();
    assert!(got[..] == bytes[..], "the bytes read back differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_response_cap_is_a_typed_error_naming_the_setting() {
    let db = TestDb::seeded("respcap", &["--cards", "10"]).await;
    let proxy = db.behind_proxy().await;
    let config = RemoteConfig::default()
        .with_retry(RetryPolicy::none())
        .with_max_response_bytes(512);
    let remote = remote_with_config(&db, &proxy, config);
    let (_dir, replica) = temp_replica();
    // Paged: a streamed feed caps each row, not the page, and its rows of
    // 10 cards fit in 512 bytes.
    let err = settee::pull(&replica, &remote, &paged_config(100, 2))
        .await
        .expect_err("the first page is larger than 512 bytes");
    assert!(
        matches!(
            err,
            settee::Error::Remote(RemoteError::TooLarge { limit: 512, .. })
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("max_response_bytes"), "{text}");
    assert!(text.contains("--max-response-mib"), "{text}");
    assert_eq!(replica.update_seq().unwrap(), 0, "nothing was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_the_response_cap_are_asked_for_in_parts() {
    // Against a 16 KiB cap on answers read whole: 24 documents of 3 KB (a
    // page carrying them, or a `_bulk_get` of all of them, is over it), a
    // document with two 7 KB leaves (both in one answer are over it), and
    // one of 40 KB (over it alone).
    let db = TestDb::new("capsplit").await;
    let mut docs: Vec<serde_json::Value> = (0..24)
        .map(|i| serde_json::json!({"_id": format!("d-{i:02}"), "text": "y".repeat(3000)}))
        .collect();
    docs.push(serde_json::json!({"_id": "huge", "text": "z".repeat(40_000)}));
    db.bulk_docs(docs, true).await;
    db.bulk_docs(
        vec![
            serde_json::json!({"_id": "conflicted", "_rev": "1-aaaa", "text": "a".repeat(9000)}),
            serde_json::json!({"_id": "conflicted", "_rev": "1-bbbb", "text": "b".repeat(9000)}),
        ],
        false,
    )
    .await;
    let proxy = db.behind_proxy().await;
    let capped = RemoteConfig::default()
        .with_retry(fast_retries(1))
        .with_max_response_bytes(16 * 1024);
    let remote = remote_with_config(&db, &proxy, capped);
    let (_dir, replica) = temp_replica();
    let result = pull(&replica, &remote, 1000, 2).await;

    // Only the document over the cap alone fails, naming the setting.
    assert_eq!(result.doc_write_failures, 1, "{:?}", result.failures);
    let failure = &result.failures[0];
    assert_eq!(
        (failure.id.as_str(), failure.error.as_str()),
        ("huge", "too_large")
    );
    assert!(failure.reason.contains("max_response_bytes"), "{failure:?}");
    assert_eq!(replica.pending_retries().unwrap(), vec!["huge".to_owned()]);
    let without_huge = |dump: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        dump.into_iter().filter(|d| d["_id"] != "huge").collect()
    };
    assert_same_dump(
        &replica_dump(&replica),
        &without_huge(db.server_dump().await),
    );
    let conflicted = replica.get("conflicted").unwrap().unwrap();
    assert_eq!(
        conflicted.to_json_with_conflicts()["_conflicts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // The page with documents was refused and read again without them;
    // the `_bulk_get` was halved until every answer fit.
    let requests = proxy.requests();
    let changes: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/_changes"))
        .collect();
    assert!(changes[0].contains("include_docs=true"), "{changes:?}");
    assert!(
        changes[1..].iter().all(|r| !r.contains("include_docs")),
        "{changes:?}"
    );
    assert!(proxy.count("_bulk_get") >= 5, "{requests:?}");
    assert!(replica.check().unwrap().is_ok());

    // With the default cap the retry brings the last one in.
    let remote = remote_with_config(&db, &proxy, RemoteConfig::default());
    let again = pull(&replica, &remote, 1000, 2).await;
    assert_eq!(again.doc_write_failures, 0, "{:?}", again.failures);
    assert!(replica.pending_retries().unwrap().is_empty());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}
