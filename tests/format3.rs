//! A replica made by an earlier release opens with today's code and reads
//! the same (no server: the fixture is a replica directory on disk).
//!
//! `tests/fixtures/format3-replica.tar.gz` was made by the release before
//! issue 19 (commit 6e69e5d, store format 3) with
//! `scripts/make-format3-fixture.sh`: a pulled course with updates,
//! injected conflicts, tombstones, attachments, design documents and odd
//! ids, then four local writes still queued in the outbox. Beside it is
//! what that release printed: `settee dump` (`format3-dump.jsonl`) and
//! `settee outbox --json` (`format3-outbox.json`). When a later format
//! migrates replicas on open, this is the replica it must migrate.

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
    assert_eq!(FORMAT_VERSION, 3, "a new format must migrate this fixture");
    let dir = unpack();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();

    let want: Vec<Value> = std::fs::read_to_string(fixture("format3-dump.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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

    let report = replica.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
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
    let report = replica.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
}
