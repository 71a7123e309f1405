//! Issue 20: filtered pulls. Each filter mode leaves the replica holding
//! exactly what the server's own filtered `_changes` lists, document for
//! document; winners-only pulls hold no conflict branch; a cold start that
//! skips tombstones holds the server's live documents and nothing else;
//! checkpoints of differently filtered pulls never mix.

use crate::support::*;
use serde_json::{json, Value};
use settee::replicate::{Filter, Revisions, Tombstones};
use settee::PullConfig;
use std::collections::{BTreeMap, BTreeSet};

const CORPUS: &[&str] = &["--cards", "60", "--tags", "6", "--realistic", "--extras"];

const FILTER_DDOC: &str = "function (doc, req) { return doc.docType === req.query.type; }";

fn config(filter: Filter, revisions: Revisions, tombstones: Tombstones) -> PullConfig {
    PullConfig::builder()
        .batch_size(15)
        .batches_limit(3)
        .filter(filter)
        .revisions(revisions)
        .tombstones(tombstones)
        .build()
        .unwrap()
}

async fn pull_with(
    db: &TestDb,
    config: &PullConfig,
) -> (tempfile::TempDir, settee::Replica, settee::PullResult) {
    let (dir, replica) = temp_replica();
    let result = settee::pull(&replica, &db.remote(), config).await.unwrap();
    assert_eq!(result.doc_write_failures, 0, "{:?}", result.failures);
    (dir, replica, result)
}

/// The ids the server's `_changes` lists with `params` (and `body`, sent
/// as a POST), as the server filters them.
async fn server_filtered_ids(db: &TestDb, params: &str, body: Option<Value>) -> BTreeSet<String> {
    let path = format!("_changes?style=all_docs&{params}");
    let feed = match body {
        Some(body) => {
            let (status, feed) = db.request(reqwest::Method::POST, &path, Some(body)).await;
            assert_eq!(status, 200, "{feed}");
            feed
        }
        None => db.get_json(&path).await,
    };
    feed["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

fn only(dump: &[Value], ids: &BTreeSet<String>) -> Vec<Value> {
    dump.iter()
        .filter(|d| ids.contains(d["_id"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

async fn seeded_with_filter(tag: &str) -> TestDb {
    let db = TestDb::seeded(tag, CORPUS).await;
    let (status, body) = db
        .request(
            reqwest::Method::PUT,
            "_design/pick",
            Some(json!({"filters": {"by_type": FILTER_DDOC}})),
        )
        .await;
    assert!(status == 201 || status == 200, "{body}");
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_mode_holds_what_the_servers_filtered_feed_lists() {
    let db = seeded_with_filter("filter-modes").await;
    let everything = db.server_dump().await;
    let doc_ids: Vec<String> = [
        "x-conflicts3",
        "x-deleted-conflict",
        "x-all-deleted",
        "a/b",
        "with space",
        "plus+sign",
        "unicodé-ü-日本語-🎴",
        "_design/with/slash",
        "no-such-document",
    ]
    .map(str::to_owned)
    .to_vec();
    let selector = json!({"docType": "TAG"});
    let cases: Vec<(Filter, BTreeSet<String>)> = vec![
        (
            Filter::DocIds(doc_ids.clone()),
            server_filtered_ids(&db, "filter=_doc_ids", Some(json!({"doc_ids": doc_ids}))).await,
        ),
        (
            Filter::Selector(selector.clone()),
            server_filtered_ids(
                &db,
                &format!("filter=_selector&selector={}", enc(&selector.to_string())),
                Some(json!({"selector": selector})),
            )
            .await,
        ),
        (
            Filter::Design {
                name: "pick/by_type".into(),
                params: BTreeMap::from([("type".into(), "EXTRA".into())]),
            },
            server_filtered_ids(&db, "filter=pick/by_type&type=EXTRA", None).await,
        ),
    ];
    let mut rep_ids = BTreeSet::new();
    for (filter, ids) in cases {
        assert!(
            ids.len() >= 5 && ids.len() < everything.len() / 2,
            "{filter:?} should pass some documents, not all: {ids:?}"
        );
        let (_d, replica, result) = pull_with(
            &db,
            &config(filter.clone(), Revisions::All, Tombstones::Pull),
        )
        .await;
        assert_same_dump(&replica_dump(&replica), &only(&everything, &ids));
        assert!(replica.check().unwrap().is_ok());
        assert_eq!(result.filtered.as_deref(), Some(filter.describe().as_str()));
        let status = settee::replicate::status(&replica).unwrap();
        assert!(status.last_pull.unwrap().filtered.is_some());
        rep_ids.insert(result.replication_id);
    }
    assert_eq!(rep_ids.len(), 3, "each filter keeps its own checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_checkpoint_is_never_used_by_another_pull() {
    let db = seeded_with_filter("filter-ckpt").await;
    let (_d, replica) = temp_replica();
    let remote = db.remote();
    let tags = config(
        Filter::Selector(json!({"docType": "TAG"})),
        Revisions::All,
        Tombstones::Pull,
    );
    let first = settee::pull(&replica, &remote, &tags).await.unwrap();
    assert_ne!(first.last_seq, settee::Seq::zero());
    // The same filter again resumes from its checkpoint: nothing new.
    let again = settee::pull(&replica, &remote, &tags).await.unwrap();
    assert_eq!(again.start_seq, first.last_seq);
    assert_eq!(again.docs_written, 0);
    // An unfiltered pull starts from the beginning and ends with everything.
    let all = settee::pull(&replica, &remote, &PullConfig::default())
        .await
        .unwrap();
    assert_eq!(all.start_seq, settee::Seq::zero());
    assert_ne!(all.replication_id, first.replication_id);
    assert!(all.filtered.is_none());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winners_only_holds_each_documents_winner_and_no_conflict_branch() {
    let db = TestDb::seeded("filter-winners", CORPUS).await;
    let everything = db.server_dump().await;
    let conflicted = everything
        .iter()
        .filter(|d| d.get("_conflicts").is_some() || d.get("_deleted_conflicts").is_some())
        .count();
    assert!(conflicted >= 2, "the corpus has conflicts to leave out");
    for feed in [
        settee::replicate::Feed::Streamed,
        settee::replicate::Feed::Paged,
    ] {
        let config = PullConfig::builder()
            .batch_size(15)
            .feed(feed)
            .revisions(Revisions::WinnersOnly)
            .build()
            .unwrap();
        let (_d, replica, result) = pull_with(&db, &config).await;
        assert!(result.filtered.is_some());
        let got = replica_dump(&replica);
        assert_eq!(got.len(), everything.len(), "{feed:?}: every document");
        for (g, w) in got.iter().zip(&everything) {
            let id = w["_id"].as_str().unwrap();
            let leaves = replica.leaves(id).unwrap();
            assert_eq!(leaves.len(), 1, "{feed:?} {id}: one leaf, {leaves:?}");
            assert_eq!(g["_rev"], w["_rev"], "{feed:?} {id}: the server's winner");
            let mut w = w.clone();
            let obj = w.as_object_mut().unwrap();
            obj.remove("_conflicts");
            obj.remove("_deleted_conflicts");
            assert_eq!(g, &w, "{feed:?} {id}");
        }
        assert!(replica.check().unwrap().is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_that_skips_tombstones_holds_the_live_documents_then_takes_deletions() {
    let db = TestDb::seeded("filter-tombstones", CORPUS).await;
    let everything = db.server_dump().await;
    let live: BTreeSet<String> = everything
        .iter()
        .filter(|d| d.get("_deleted").is_none())
        .map(|d| d["_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        live.len() + 3 <= everything.len(),
        "the corpus has tombstones"
    );
    let config = config(Filter::All, Revisions::All, Tombstones::SkipUnheld);
    let (_d, replica, _) = pull_with(&db, &config).await;
    assert_same_dump(&replica_dump(&replica), &only(&everything, &live));
    assert_eq!(replica.deleted_count().unwrap(), 0, "no tombstones");
    // Later deletions of what it holds arrive; one of a document it never
    // held (created and deleted since) does not.
    let card = everything
        .iter()
        .find(|d| d["docType"] == "CARD" && d.get("_conflicts").is_none())
        .map(|d| d["_id"].as_str().unwrap().to_owned())
        .unwrap();
    let rev = db.get_json(&enc_id(&card)).await["_rev"]
        .as_str()
        .unwrap()
        .to_owned();
    db.delete_doc(&card, &rev).await;
    let created = db
        .bulk_docs(vec![json!({"_id": "brief", "v": 1})], true)
        .await;
    let brief_rev = created[0]["rev"].as_str().unwrap().to_owned();
    db.delete_doc("brief", &brief_rev).await;
    let next = settee::pull(&replica, &db.remote(), &config).await.unwrap();
    assert_eq!(next.docs_written, 1, "{next:?}");
    assert!(
        replica.get(&card).unwrap().unwrap().deleted,
        "the deletion arrived"
    );
    assert!(replica.rev_tree("brief").unwrap().is_none());
    assert!(replica.check().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_is_refused_before_anything_changes() {
    let db = seeded_with_filter("filter-bad").await;
    let (_d, replica) = temp_replica();
    for filter in [
        Filter::Design {
            name: "pick/nope".into(),
            params: BTreeMap::new(),
        },
        Filter::Design {
            name: "absent/by_type".into(),
            params: BTreeMap::new(),
        },
    ] {
        let config = PullConfig::builder()
            .filter(filter.clone())
            .build()
            .unwrap();
        let err = settee::pull(&replica, &db.remote(), &config)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                settee::Error::InvalidSetting {
                    setting: "filter",
                    ..
                }
            ),
            "{filter:?}: {err}"
        );
        assert_eq!(replica.doc_count().unwrap(), 0);
        assert!(replica.remote().unwrap().is_none(), "not bound");
    }
    for filter in [Filter::DocIds(vec![]), Filter::Selector(json!("TAG"))] {
        assert!(PullConfig::builder().filter(filter).build().is_err());
    }
}
