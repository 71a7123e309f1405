//! `settee compact` (issue 10, point 6): a replica rewritten into a fresh
//! database keeps its content, checkpoint, outbox and views; the next pull
//! transfers only new changes; a kill at any step leaves a replica that
//! opens and passes `settee check` (the kill loop is in `tests/crash.rs`);
//! a held replica is refused.

use crate::support::*;
use serde_json::{json, Value};
use settee::{Replica, ReplicaConfig};
use std::path::Path;

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn pull_json(url: &str, dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["pull", url, dir.to_str().unwrap(), "--json", "--quiet"];
    args.extend_from_slice(extra);
    let out = settee(&args);
    ok(&out, "settee pull");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_ok(dir: &Path, what: &str) {
    let out = settee(&["check", dir.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: check --json: {e}: {out:?}"));
    assert_eq!(out.status.code(), Some(0), "{what}: {report:#}");
    assert_eq!(report["violations"], json!([]), "{what}");
}

fn query(dir: &Path, view: &str) -> Value {
    let out = settee(&["query", dir.to_str().unwrap(), view, "--json"]);
    ok(&out, "settee query");
    serde_json::from_slice(&out.stdout).unwrap()
}

pub(crate) fn checkpoint_of(dir: &Path, replication_id: &str) -> Option<String> {
    let replica = Replica::open(dir, ReplicaConfig::default()).unwrap();
    settee::replicate::checkpoint(&replica, replication_id)
        .unwrap()
        .map(|c| c.last_seq.0.to_string())
}

/// Rewrites `n` cards on the server (a new revision each), so that a pull
/// leaves old pages behind.
pub(crate) async fn update_cards(db: &TestDb, from: usize, n: usize, round: u64) {
    let ids: Vec<String> = (from..from + n).map(|i| format!("c-{i:06}")).collect();
    let body = json!({ "keys": ids });
    let (status, rows) = db
        .request(
            reqwest::Method::POST,
            "_all_docs?include_docs=true",
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{rows}");
    let docs: Vec<Value> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("doc").filter(|d| d.is_object()).cloned())
        .map(|mut d| {
            d["disk_round"] = json!(round);
            d
        })
        .collect();
    assert!(!docs.is_empty());
    for r in db.bulk_docs(docs, true).await {
        assert_eq!(r["ok"], json!(true), "{r}");
    }
}

#[tokio::test]
async fn compaction_keeps_content_checkpoint_and_views_and_the_next_pull_is_incremental() {
    let db = TestDb::seeded("compact", &["--cards", "150", "--realistic", "--extras"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let first = pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    update_cards(&db, 0, 40, 1).await;
    pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    let rep_id = first["replication_id"].as_str().unwrap().to_owned();

    // The store keeps no garbage of its own after updates: one sequence
    // entry per record, no body waiting for a sweep.
    let out = settee(&["compact", dir.to_str().unwrap(), "--usage", "--json"]);
    ok(&out, "settee compact --usage");
    let usage: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |name: &str| {
        usage["trees"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map_or(0, |t| t["keys"].as_u64().unwrap())
    };
    assert!(keys("docs") > 150, "{usage}");
    assert_eq!(keys("by_seq"), keys("docs"), "{usage}");
    assert_eq!(keys("garbage"), 0, "{usage}");
    assert!(usage["live_bytes"].as_u64().unwrap() < usage["dir_bytes"].as_u64().unwrap());

    let dump = cli_dump(&dir);
    let elo = query(&dir, "elo");
    let tags = query(&dir, "getTags");
    let checkpoint = checkpoint_of(&dir, &rep_id).expect("a checkpoint");
    let out = settee(&["compact", dir.to_str().unwrap(), "--json"]);
    ok(&out, "settee compact");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["entries"].as_u64().unwrap() > 150, "{report}");

    check_ok(&dir, "after compaction");
    assert_same_dump(&cli_dump(&dir), &dump);
    assert_same_dump(&cli_dump(&dir), &db.server_dump().await);
    assert_eq!(checkpoint_of(&dir, &rep_id), Some(checkpoint.clone()));
    // The view indexes were copied, not rebuilt, and answer the same.
    assert_eq!(query(&dir, "elo"), elo);
    assert_eq!(query(&dir, "getTags"), tags);
    for left in [
        "compact.tmp",
        "compact.ready",
        "compact.swap",
        "compact.old",
    ] {
        assert!(!dir.join(left).exists(), "{left} left behind");
    }

    // The next pull starts at the kept checkpoint and fetches only what
    // changed since.
    update_cards(&db, 100, 5, 2).await;
    let next = pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    assert_eq!(next["start_seq"].to_string(), checkpoint);
    assert_eq!(next["docs_written"], json!(5), "{next}");
    // A sharded CouchDB may list a few older rows again after a sequence;
    // none of them is fetched or written.
    assert!(next["changes_read"].as_u64().unwrap() >= 5, "{next}");
    assert_eq!(next["docs_read"], json!(5), "{next}");
    assert_same_dump(&cli_dump(&dir), &db.server_dump().await);
    check_ok(&dir, "after the next pull");
}

#[tokio::test]
async fn the_automatic_trigger_compacts_after_a_pull_above_its_factor() {
    let db = TestDb::seeded("compact-auto", &["--cards", "60"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    // The first pull records the baseline and does not compact.
    pull_json(&db.url(), &dir, &[]);
    let baseline = {
        let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
        r.disk_baseline()
            .unwrap()
            .expect("the first pull records a baseline")
    };
    assert!(baseline > 0);
    update_cards(&db, 0, 10, 1).await;
    // Off: no compaction, whatever the size.
    let out = settee(&[
        "pull",
        &db.url(),
        dir.to_str().unwrap(),
        "--compact-above",
        "0",
    ]);
    ok(&out, "pull without the trigger");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("compacted"));
    // A factor below 1 is always exceeded: the pull compacts.
    update_cards(&db, 10, 10, 2).await;
    let out = settee(&[
        "pull",
        &db.url(),
        dir.to_str().unwrap(),
        "--compact-above",
        "0.5",
    ]);
    ok(&out, "pull with the trigger");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("compacted"), "{text}");
    let r = Replica::open(&dir, ReplicaConfig::default()).unwrap();
    let new_baseline = r.disk_baseline().unwrap().unwrap();
    assert_ne!(
        new_baseline, baseline,
        "the compaction records a new baseline"
    );
    drop(r);
    check_ok(&dir, "after the automatic compaction");
    assert_same_dump(&cli_dump(&dir), &db.server_dump().await);
}

#[tokio::test]
async fn compaction_keeps_pending_outbox_writes() {
    let db = TestDb::seeded("compact-outbox", &["--cards", "40"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let d = dir.to_str().unwrap();
    pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    ok(&settee(&["put", d, "note-1", r#"{"text": "one"}"#]), "put");
    ok(
        &settee(&["put", d, "c-000001", r#"{"elo": 1777}"#, "--overwrite"]),
        "put --overwrite",
    );
    ok(&settee(&["delete", d, "c-000002"]), "delete");
    let before = settee(&["outbox", d, "--json"]);
    ok(&before, "outbox");
    let before: Value = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(before["pending"], json!(3));
    let dump = cli_dump(&dir);

    ok(&settee(&["compact", d]), "settee compact");
    let after = settee(&["outbox", d, "--json"]);
    let after: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(after, before, "the outbox is kept, entry for entry");
    assert_same_dump(&cli_dump(&dir), &dump);
    check_ok(&dir, "after compaction");

    // The kept writes still reach the server.
    let out = settee(&["push", d, "--remote", &db.url(), "--json"]);
    ok(&out, "settee push");
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["pending"], json!(0), "{pushed}");
    let server = db.server_dump().await;
    let note = server
        .iter()
        .find(|d| d["_id"] == "note-1")
        .expect("pushed");
    assert_eq!(note["text"], "one");
    let card = server.iter().find(|d| d["_id"] == "c-000001").unwrap();
    assert_eq!(card["elo"], 1777);
    let gone = server.iter().find(|d| d["_id"] == "c-000002").unwrap();
    assert_eq!(gone["_deleted"], json!(true), "{gone}");
}

#[tokio::test]
async fn a_held_replica_is_refused_with_a_clear_error() {
    let db = TestDb::seeded("compact-locked", &["--cards", "20"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    let held = Replica::open(&dir, ReplicaConfig::default()).unwrap();
    let out = settee(&["compact", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is locked by pid"), "{err}");
    drop(held);
    ok(
        &settee(&["compact", dir.to_str().unwrap()]),
        "once released",
    );
    let nothing = tmp.path().join("none");
    let out = settee(&["compact", nothing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replica"));
}

/// Where a kill left the compaction, from the work directories.
pub(crate) fn stage(dir: &Path) -> &'static str {
    if dir.join("compact.swap").exists() {
        "swapping"
    } else if dir.join("compact.ready").exists() {
        "committed"
    } else if dir.join("compact.tmp").exists() {
        "copying"
    } else if dir.join("compact.old").exists() {
        "cleaning"
    } else {
        "before or after"
    }
}

#[tokio::test]
async fn open_compacted_compacts_only_above_its_factor() {
    // The sync service opens each live replica this way at its first use.
    let db = TestDb::seeded("compact-open", &["--cards", "40"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    pull_json(&db.url(), &dir, &[]);
    let dump = cli_dump(&dir);
    let open = |factor| {
        let (r, report) = Replica::open_compacted(&dir, ReplicaConfig::default(), factor).unwrap();
        drop(r);
        report
    };
    assert!(open(None).is_none(), "off");
    assert!(open(Some(100.0)).is_none(), "far below the factor");
    let report = open(Some(0.5)).expect("above the factor: compacted");
    assert!(report.entries > 40, "{report:?}");
    assert_same_dump(&cli_dump(&dir), &dump);
    check_ok(&dir, "after open_compacted");
}

#[tokio::test]
async fn streamed_attachment_files_stay_with_the_compacted_replica() {
    // Attachments over 256 KiB live in files under DIR/attachments/, which
    // compaction does not move: the copied trees still name them.
    use base64::Engine;
    let db = TestDb::seeded("compact-att", &["--cards", "10"]).await;
    let bytes: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let doc = json!({"_attachments": {"big.bin": {"content_type": "application/octet-stream", "data": data}}});
    let (status, body) = db.request(reqwest::Method::PUT, "big", Some(doc)).await;
    assert!(status == 201 || status == 202, "{status} {body}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let d = dir.to_str().unwrap();
    pull_json(&db.url(), &dir, &["--compact-above", "0"]);
    let files = || std::fs::read_dir(dir.join("attachments")).map_or(0, |e| e.count());
    assert_eq!(files(), 1, "the attachment was streamed to a file");
    let dump = cli_dump(&dir);
    ok(&settee(&["compact", d]), "settee compact");
    assert_eq!(files(), 1, "and its file stays");
    check_ok(&dir, "after compaction");
    assert_same_dump(&cli_dump(&dir), &dump);
    let out_file = tmp.path().join("big.bin");
    let out = settee(&[
        "get",
        d,
        "big",
        "--attachment",
        "big.bin",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    ok(&out, "settee get --attachment");
    assert_eq!(std::fs::read(&out_file).unwrap(), bytes);
    // To standard output too, streamed from the file.
    let out = settee(&["get", d, "big", "--attachment", "big.bin"]);
    ok(&out, "settee get --attachment to stdout");
    assert!(out.stdout == bytes, "stdout holds the attachment's bytes");
}
