//! A replica made by an earlier release opens with today's code and reads
//! the same (no server: the fixture is a replica directory on disk).
//!
//! `tests/fixtures/format3-replica.tar.gz` was made by the release before
//! issue 19 (commit 6e69e5d, store format 3) with
//! `scripts/make-format3-fixture.sh`: a pulled course with updates,
//! injected conflicts, tombstones, attachments, design documents and odd
//! ids, then four local writes still queued in the outbox. Beside it is
//! what that release printed: `settee dump` (`format3-dump.jsonl`) and
//! `settee outbox --json` (`format3-outbox.json`). Format 4 migrates it
//! on open: these tests check that the migrated replica reads as that
//! release printed, takes writes, compacts, and that a kill during the
//! migration leaves a replica that opens and checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use settee::replica::FORMAT_VERSION;
use settee::{Replica, ReplicaConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture replica, unpacked into a fresh directory.
fn unpack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(fixture("format3-replica.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed: {status}");
    dir
}

/// What the last release printed for the fixture (`settee dump`).
fn want_dump() -> Vec<Value> {
    std::fs::read_to_string(fixture("format3-dump.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_sound(replica: &Replica) {
    let report = replica.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
}

fn dump(replica: &Replica) -> Vec<Value> {
    replica
        .docs(..)
        .map(|d| {
            let d = d.unwrap();
            replica
                .get(&d.id)
                .unwrap()
                .unwrap()
                .to_json_with_conflicts()
        })
        .collect()
}

#[test]
fn a_format_3_replica_of_the_last_release_reads_as_it_did() {
    assert_eq!(FORMAT_VERSION, 4, "a new format must migrate this fixture");
    let dir = unpack();
    assert!(!dir.path().join("bodies.log").exists());
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    assert!(
        dir.path().join("bodies.log").is_file(),
        "migrated to format 4"
    );

    let want = want_dump();
    let got = dump(&replica);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert!(
        want.iter().any(|d| d.get("_conflicts").is_some()),
        "the fixture has conflicts"
    );
    assert!(
        want.iter().any(|d| d.get("_attachments").is_some()),
        "the fixture has attachments"
    );
    assert!(
        want.iter().any(|d| d["_deleted"] == true),
        "the fixture has tombstones"
    );

    let outbox: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("format3-outbox.json")).unwrap())
            .unwrap();
    let queue = replica.outbox();
    assert_eq!(
        serde_json::to_value(queue.entries(None, 100).unwrap()).unwrap(),
        outbox["entries"]
    );
    assert_eq!(Some(queue.len().unwrap()), outbox["pending"].as_u64());

    assert_sound(&replica);
}

#[tokio::test(flavor = "current_thread")]
async fn a_format_3_replica_takes_new_writes_and_stays_sound() {
    let dir = unpack();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    let before = replica.outbox().len().unwrap();
    replica
        .put("after-upgrade", serde_json::json!({"docType": "CARD"}))
        .await
        .unwrap();
    replica
        .put_overwrite("local-big", serde_json::json!({"small": true}))
        .await
        .unwrap();
    assert_eq!(replica.outbox().len().unwrap(), before + 2);
    drop(replica);
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    assert_eq!(
        replica.get("local-big").unwrap().unwrap().body["small"],
        true
    );
    assert_sound(&replica);
}

/// Every document of the fixture changed by format 4's write path (its
/// format-3 bodies released or moved), then the replica compacted (its
/// remaining format-3 bodies copied as they are): sound at each step, and
/// the documents as written.
#[tokio::test(flavor = "current_thread")]
async fn a_migrated_replica_rewrites_every_document_and_compacts() {
    let dir = unpack();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    let want = want_dump();
    let live: Vec<&Value> = want.iter().filter(|d| d["_deleted"] != true).collect();
    for doc in &live {
        let id = doc["_id"].as_str().unwrap();
        let mut body = doc.as_object().unwrap().clone();
        body.retain(|k, _| !k.starts_with('_'));
        body.insert("rewritten".into(), Value::Bool(true));
        replica
            .put_overwrite(id, Value::Object(body))
            .await
            .unwrap();
    }
    assert_sound(&replica);
    settee::internals::sweep(&replica).unwrap();
    assert_sound(&replica);
    let rewritten = dump(&replica);
    drop(replica);
    settee::maintenance::compact(dir.path(), &Default::default()).unwrap();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    assert_sound(&replica);
    assert_eq!(dump(&replica), rewritten);
    for doc in dump(&replica) {
        if doc["_deleted"] != true {
            assert_eq!(doc["rewritten"], true, "{doc}");
        }
    }
}

/// A migration a crash cut short, after the body log was created and
/// before the format was recorded (the log may even hold bytes of a batch
/// that never committed): the next open migrates again.
#[test]
fn a_migration_cut_short_is_done_again() {
    let dir = unpack();
    std::fs::write(dir.path().join("bodies.log"), b"{\"torn\": tr").unwrap();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    assert_eq!(dump(&replica), want_dump());
    assert_sound(&replica);
    assert_eq!(
        std::fs::metadata(dir.path().join("bodies.log"))
            .unwrap()
            .len(),
        0
    );
}

/// `settee check` (which opens, and so migrates, the replica) killed at
/// random moments of its run, repeatedly on one copy of the fixture: each
/// time the replica opens, reads as the last release printed it and
/// checks. `SETTEE_MIGRATION_KILLS` runs (default 12).
#[test]
fn a_kill_during_migration_leaves_a_replica_that_opens_and_checks() {
    let runs: u64 = std::env::var("SETTEE_MIGRATION_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let want = want_dump();
    let mut migrated_before_kill = 0;
    for run in 0..runs {
        let dir = unpack();
        let mut child = Command::new(env!("CARGO_BIN_EXE_settee"))
            .arg("check")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Spread evenly over the run (about 160 ms in a debug build: the
        // start of the process, the open with its migration, the check).
        std::thread::sleep(std::time::Duration::from_millis(run * 180 / runs));
        let _ = child.kill();
        let _ = child.wait();
        if dir.path().join("bodies.log").exists() {
            migrated_before_kill += 1;
        }
        let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        assert_eq!(dump(&replica), want, "run {run}");
        assert_sound(&replica);
    }
    eprintln!("{migrated_before_kill} of {runs} kills came after the log was created");
}
