use crate::support::proxy::{Gate, Rule};
use crate::support::*;
use settee::{Error, RemoteError, RetryPolicy, Seq};

const CORPUS: &[&str] = &["--cards", "200", "--realistic", "--extras"];

fn checkpoint_seq(replica: &settee::Replica, rep_id: &str) -> Option<Seq> {
    Some(
        settee::replicate::checkpoint(replica, rep_id)
            .unwrap()?
            .last_seq,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_pull_resumes_from_its_last_committed_batch() {
    let db = TestDb::seeded("abort", CORPUS).await;
    // The 4th `_changes` page is held at the proxy: exactly three batches
    // can commit, and the abort lands while the pull waits for the 4th,
    // however loaded the machine is.
    let proxy = db.behind_proxy().await;
    let gate = Gate::new();
    proxy.set_rules(vec![Rule::hold("/_changes", &gate).skip(3)]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::with_retries(2));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = {
        let (replica, remote) = (replica.clone(), remote.clone());
        tokio::spawn(async move {
            // Paged: the proxy holds the 4th page (a streamed feed is one request).
            settee::pull(&replica, &remote, &paged_config(20, 2))
                .on_progress(move |p| {
                    let _ = tx.send((p.batches, p.docs_written, p.last_seq.clone()));
                })
                .await
        })
    };
    let mut committed = (0, 0, Seq::zero());
    while committed.0 < 3 {
        committed = rx.recv().await.expect("the pull reports three batches");
    }
    gate.wait_held(1).await;
    task.abort();
    assert!(
        task.await.unwrap_err().is_cancelled(),
        "the pull was still running when aborted"
    );
    assert!(
        rx.try_recv().is_err(),
        "no batch after the held page was committed"
    );
    proxy.clear_rules();
    gate.open();
    let written_before = replica.leaves_total_for_test();
    assert!(
        written_before >= committed.1,
        "batches committed before the abort are in the replica"
    );

    let rep_id =
        settee::replicate::replication_id(&remote.server_info().await.unwrap(), remote.endpoint());
    let saved = checkpoint_seq(&replica, &rep_id).expect("a checkpoint was committed");
    proxy.clear_rules();
    let resumed = pull(&replica, &remote, 20, 2).await;
    assert_eq!(
        resumed.start_seq, saved,
        "resumed from the last committed batch"
    );
    assert!(resumed.docs_written > 0, "the abort left work to do");
    assert_eq!(
        written_before + resumed.docs_written,
        replica.leaves_total_for_test(),
        "nothing written twice"
    );
    assert_eq!(
        checkpoint_seq(&replica, &resumed.replication_id),
        Some(resumed.last_seq.clone())
    );
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_fails_the_pull_and_the_next_pull_resumes() {
    let db = TestDb::seeded("drop", CORPUS).await;
    let proxy = db.behind_proxy().await;
    // The 4th and every later _bulk_get loses its connection.
    proxy.set_rules(vec![
        Rule::drop_connection("_bulk_get").skip(3),
        // First revisions would come from the feed, without `_bulk_get`.
        Rule::changes_without_docs(),
    ]);
    let (_dir, replica) = temp_replica();
    let flaky = db.remote_via(&proxy, RetryPolicy::with_retries(1));
    let err = settee::pull(&replica, &flaky, &pull_config(25, 1))
        .await
        .expect_err("the pull must fail when the connection drops");
    assert!(
        matches!(err, Error::Remote(RemoteError::Transport { .. })),
        "a transport error, got {err:?}"
    );
    let rep_id =
        settee::replicate::replication_id(&flaky.server_info().await.unwrap(), flaky.endpoint());
    let saved = checkpoint_seq(&replica, &rep_id).expect("a checkpoint was committed");
    // Three batches of 25 were committed before the drop, and the
    // checkpoint covers exactly what the replica holds of the server's feed.
    let covered = db.check_checkpoint_not_ahead(&replica, &saved.0).await;
    assert!(
        covered >= 75 && covered < db.feed_len().await,
        "the checkpoint covers {covered} rows"
    );

    proxy.clear_rules();
    let resumed = pull(&replica, &flaky, 25, 1).await;
    assert_eq!(
        resumed.start_seq, saved,
        "resumed from the last committed batch"
    );
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

trait LeavesTotal {
    fn leaves_total_for_test(&self) -> u64;
}

impl LeavesTotal for settee::Replica {
    /// Leaves stored across all documents.
    fn leaves_total_for_test(&self) -> u64 {
        self.docs(..)
            .map(|d| self.leaves(&d.unwrap().id).unwrap().len() as u64)
            .sum()
    }
}
