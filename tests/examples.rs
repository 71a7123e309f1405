//! The programs in `examples/` run against the real server the way the
//! README tells a user to run them (`cargo test` builds them beside the
//! test binaries, in `target/<profile>/examples/`).

use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test binary>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: `cargo test` builds the examples (a filtered `--test tests` run does not)",
        path.display()
    );
    path
}

fn run(name: &str, db_url: &str, replica: &str) -> String {
    let out = Command::new(example(name))
        .args([db_url, replica])
        .env("RUST_LOG", "warn")
        .env_remove("SETTEE_PASSWORD")
        .output()
        .expect("run the example");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{name} failed: {stdout}\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_run_against_the_server() {
    let db = TestDb::seeded("examples", &["--cards", "30", "--extras"]).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let replica = replica.to_str().unwrap();

    let pulled = run("pull_and_read", &db.url(), replica);
    assert!(pulled.contains("pulled:"), "{pulled}");

    let pushed = run("write_and_push", &db.url(), replica);
    // The note it wrote offline is on the server now, at the same revision.
    let line = pushed
        .lines()
        .find(|l| l.contains("example-"))
        .unwrap_or_else(|| panic!("the example names its note: {pushed}"));
    let id = line
        .split_whitespace()
        .find(|w| w.starts_with("example-"))
        .unwrap()
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '-');
    let doc = db.get_json(&enc_id(id)).await;
    assert_eq!(doc["text"], "written offline", "{doc}");
}
