use crate::support::*;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "settee failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_dump_get_and_status_from_the_command_line() {
    let db = TestDb::seeded("cli", &["--cards", "30", "--realistic", "--extras"]).await;
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();

    let out = settee(&[
        "pull",
        &db.url(),
        rep_s,
        "--batch-size",
        "7",
        "--batches-limit",
        "2",
        "--json",
    ]);
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(result["docs_written"].as_u64().unwrap() > 30);
    assert_eq!(result["doc_write_failures"], 0);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&server().password),
        "password leaked"
    );

    // Human summary on a second (incremental) pull.
    let out = settee(&["pull", &db.url(), rep_s]);
    let text = stdout(&out);
    assert!(text.contains("docs written     0"), "{text}");
    assert!(
        !text.contains(&server().password),
        "password leaked: {text}"
    );

    assert_same_dump(&cli_dump(&rep), &db.server_dump().await);

    // get: hostile ids, specific leaves, attachments, missing docs.
    for id in [
        "a/b",
        "with space",
        "plus+sign",
        "100%",
        "unicodé-ü-日本語-🎴",
        "_design/with/slash",
    ] {
        let doc: Value = serde_json::from_str(&stdout(&settee(&["get", rep_s, id]))).unwrap();
        assert_eq!(doc["_id"], id);
        assert_eq!(doc, db.get_json(&enc_id(id)).await, "{id}");
    }
    let conflicted: Value = serde_json::from_str(&stdout(&settee(&[
        "get",
        rep_s,
        "x-conflicts3",
        "--conflicts",
    ])))
    .unwrap();
    let loser = conflicted["_conflicts"][0].as_str().unwrap();
    let leaf: Value = serde_json::from_str(&stdout(&settee(&[
        "get",
        rep_s,
        "x-conflicts3",
        "--rev",
        loser,
    ])))
    .unwrap();
    assert_eq!(leaf["_rev"], loser);
    assert_eq!(
        leaf,
        db.get_json(&format!("x-conflicts3?rev={loser}")).await
    );

    let out = settee(&["get", rep_s, "x-att-binary", "--attachment", "blob.bin"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, db.attachment("x-att-binary", "blob.bin").await);

    let out = settee(&["get", rep_s, "no-such-doc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no document"));
    let out = settee(&["get", rep_s, "x-att-text", "--attachment", "nope.txt"]);
    assert_eq!(out.status.code(), Some(1));

    let status: Value =
        serde_json::from_str(&stdout(&settee(&["status", rep_s, "--json"]))).unwrap();
    let info = db.get_json("").await;
    assert_eq!(status["doc_count"], info["doc_count"]);
    assert_eq!(status["remote"]["db_name"], db.name.as_str());
    assert!(
        !status.to_string().contains(&server().password),
        "credentials stored: {status}"
    );
    assert_eq!(status["last_pull"]["docs_written"], 0);
    let human = stdout(&settee(&["status", rep_s]));
    assert!(human.contains("documents"), "{human}");
}

#[test]
fn reading_commands_refuse_a_directory_that_is_no_replica() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for cmd in ["dump", "status"] {
        let out = settee(&[cmd, missing.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no replica at"),
            "{cmd}"
        );
        assert!(!missing.exists(), "{cmd} must not create a replica");
    }
    let out = settee(&["pull", "not-a-url", dir.path().join("r").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid database URL"));
}

/// Issue 17, defect 11: `settee put` without `_rev` of a live document
/// wrote over it; like CouchDB's 409 it is now a conflict (exit 5) that
/// writes nothing, and `--overwrite` is the explicit way to write over the
/// winner.
#[test]
fn issue_17_put_without_rev_over_a_live_document_exits_5_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let d = rep.to_str().unwrap();
    let first: Value =
        serde_json::from_str(&stdout(&settee(&["put", d, "a", r#"{"v": 1}"#]))).unwrap();
    let out = settee(&["put", d, "a", r#"{"v": 2}"#]);
    assert_eq!(out.status.code(), Some(5), "a conflict: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conflict") && err.contains("--overwrite"),
        "{err}"
    );
    let doc: Value = serde_json::from_str(&stdout(&settee(&["get", d, "a"]))).unwrap();
    assert_eq!((&doc["_rev"], &doc["v"]), (&first["rev"], &Value::from(1)));

    let over: Value = serde_json::from_str(&stdout(&settee(&[
        "put",
        d,
        "a",
        r#"{"v": 3}"#,
        "--overwrite",
    ])))
    .unwrap();
    assert!(over["rev"].as_str().unwrap().starts_with("2-"), "{over}");
    let doc: Value = serde_json::from_str(&stdout(&settee(&["get", d, "a"]))).unwrap();
    assert_eq!((&doc["_rev"], &doc["v"]), (&over["rev"], &Value::from(3)));
    let outbox: Value = serde_json::from_str(&stdout(&settee(&["outbox", d, "--json"]))).unwrap();
    assert_eq!(outbox["pending"], 2, "the conflict queued nothing");

    let help = stdout(&settee(&["put", "--help"]));
    assert!(help.contains("--overwrite"), "{help}");
}
