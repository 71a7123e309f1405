use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_and_batches_limit_do_not_change_the_result() {
    let db = TestDb::seeded(
        "matrix",
        &["--cards", "60", "--tags", "8", "--realistic", "--extras"],
    )
    .await;
    let want = db.server_dump().await;
    let remote = db.remote();
    for batch_size in [1, 7, 1000] {
        for batches_limit in [1, 5] {
            let (_dir, replica) = temp_replica();
            let result = pull(&replica, &remote, batch_size, batches_limit).await;
            let expected_batches = want.len().div_ceil(batch_size) as u64;
            assert_eq!(
                result.batches, expected_batches,
                "batches for {batch_size}/{batches_limit}"
            );
            let got = replica_dump(&replica);
            assert_eq!(got.len(), want.len(), "{batch_size}/{batches_limit}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{batch_size}/{batches_limit}: {}", w["_id"]);
            }
        }
    }
}
