//! kill -9 a running `settee pull`, run `settee check` on what it left,
//! reopen the replica, check that it is consistent and that its checkpoint
//! is not ahead of its data, then resume and compare with the server.
//! `SETTEE_CRASH_LOOPS` sets how many kills (default 6 for CI; a soak of
//! 50 passed with `SETTEE_CRASH_LOOPS=50 cargo test --test tests crash::`).

use crate::support::proxy::Rule;
use crate::support::*;
use settee::{Replica, ReplicaConfig};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::process::{Command, Stdio};
use std::time::Duration;

fn crash_loops() -> usize {
    std::env::var("SETTEE_CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// The store's own invariants: counters, sequence index and bodies agree.
fn check_store_invariants(replica: &Replica) {
    let docs: Vec<_> = replica
        .docs(Bound::Unbounded, Bound::Unbounded)
        .map(|d| d.expect("readable record"))
        .collect();
    let live = docs.iter().filter(|d| !d.deleted).count() as u64;
    assert_eq!(replica.doc_count().unwrap(), live, "doc_count counter");
    assert_eq!(
        replica.deleted_count().unwrap(),
        docs.len() as u64 - live,
        "doc_del_count counter"
    );
    for d in &docs {
        let doc = replica.get(&d.id).unwrap().expect("winner has a body");
        assert_eq!(doc.rev, d.rev);
        for leaf in replica.leaves(&d.id).unwrap() {
            let body = replica.get_rev(&d.id, &leaf.rev).unwrap();
            let body = body.unwrap_or_else(|| panic!("leaf {} of {} has a body", leaf.rev, d.id));
            for (name, stub) in body.attachments() {
                assert!(
                    replica.has_attachment(&stub.digest).unwrap(),
                    "{}/{name} at {}: its bytes are stored",
                    d.id,
                    leaf.rev
                );
            }
        }
    }
    let changes: Vec<_> = replica
        .changes(0)
        .map(|c| c.expect("readable change"))
        .collect();
    assert_eq!(changes.len(), docs.len(), "one sequence entry per document");
    let ids: BTreeSet<_> = changes.iter().map(|c| c.doc.id.clone()).collect();
    assert_eq!(ids.len(), docs.len());
    for c in &changes {
        assert_eq!(
            c.seq, c.doc.seq,
            "sequence entry of {} points at its latest change",
            c.doc.id
        );
    }
    if let Some(last) = changes.last() {
        assert_eq!(replica.update_seq().unwrap(), last.seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pull_leaves_a_consistent_replica_that_resumes() {
    let db = TestDb::seeded("crash", &["--cards", "300", "--realistic", "--extras"]).await;
    let want = db.server_dump().await;
    let rows = db.feed_len().await;
    // Slow the server down so that kills land in the middle of the pull.
    let proxy = db.behind_proxy().await;
    // Every batch reads one `_changes` page (the cold-load fast path takes
    // most documents from it) and may fetch the rest with `_bulk_get`.
    proxy.set_rules(vec![
        Rule::delay("/_changes", 40),
        Rule::delay("_bulk_get", 40),
    ]);
    let url = db.url_via(&proxy.url());
    let rep_id = {
        let remote = remote_for(&url, settee::RetryPolicy::none());
        settee::replication_id(&remote.server_info().await.unwrap(), remote.endpoint())
    };
    let batches = rows.div_ceil(10);
    let mut killed_mid_pull = 0;
    for round in 0..crash_loops() {
        let dir = tempfile::tempdir().unwrap();
        let rep = dir.path().join("rep");
        proxy.clear_requests();
        let mut child = Command::new(env!("CARGO_BIN_EXE_settee"))
            .args([
                "pull",
                &url,
                rep.to_str().unwrap(),
                "--batch-size",
                "10",
                "--batches-limit",
                "2",
                "--quiet",
            ])
            .env_remove("SETTEE_PASSWORD")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once the pull has read a number of pages that moves through
        // the feed from round to round, whatever the machine's speed (a
        // batch is committed after its page, and its fetch, have answered).
        let target = 3 + (round * 7) % (batches - 4);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while proxy.count("/_changes") < target
            && child.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL: no destructors, no flush
        let status = child.wait().unwrap();

        if rep.join("db").exists() {
            let out = settee(&["check", rep.to_str().unwrap(), "--json"]);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("round {round}: check --json: {e}: {out:?}"));
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: settee check after the kill: {report:#}"
            );
            assert_eq!(report["violations"], serde_json::json!([]));
        }
        let replica =
            Replica::open(&rep, ReplicaConfig::default()).expect("a killed replica reopens");
        check_store_invariants(&replica);
        let checkpoint = replica.checkpoint(&rep_id).unwrap().map(|cp| cp.last_seq.0);
        let covered = match &checkpoint {
            Some(seq) => db.check_checkpoint_not_ahead(&replica, seq).await,
            None => 0,
        };
        if status.code().is_none() && covered > 0 && covered < rows {
            killed_mid_pull += 1;
        }
        // Resume straight from the server, from the checkpoint the killed
        // pull left, and end with the server's data.
        let result = pull(&replica, &db.remote(), 50, 3).await;
        if let Some(seq) = &checkpoint {
            assert_eq!(
                &result.start_seq.0, seq,
                "the resumed pull starts at the checkpoint"
            );
        }
        assert_eq!(result.doc_write_failures, 0);
        check_store_invariants(&replica);
        let report = replica.check().unwrap();
        assert!(report.is_ok(), "round {round}: {:?}", report.violations);
        assert_same_dump(&replica_dump(&replica), &want);
    }
    eprintln!(
        "crash: {killed_mid_pull} of {} kills landed mid-pull",
        crash_loops()
    );
    // Most kills must land between two commits, or the pacing above no
    // longer follows the pull (it once counted only `_bulk_get`, which the
    // fast path skips, and 44 of 50 kills came after the pull had ended).
    assert!(
        killed_mid_pull * 2 >= crash_loops(),
        "only {killed_mid_pull} of {} kills landed between two commits of a pull",
        crash_loops()
    );
}
