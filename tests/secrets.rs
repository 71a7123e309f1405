//! Credentials never leave the process: not in logs at any level, errors,
//! `status`, checkpoints or any file of the replica (issue 12).

use crate::support::*;
use base64::Engine;
use std::path::Path;
use std::process::{Command, Output};

/// Every form a password could leak in: as is, percent-encoded, and inside
/// a basic-auth header.
fn forms(user: &str, password: &str) -> Vec<Vec<u8>> {
    let encoded =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    vec![
        password.as_bytes().to_vec(),
        encoded.into_bytes(),
        basic.into_bytes(),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_absent(what: &str, bytes: &[u8], secrets: &[Vec<u8>]) {
    for s in secrets {
        assert!(
            !contains(bytes, s),
            "{what} holds a credential ({})",
            String::from_utf8_lossy(s)
        );
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn settee_traced(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_settee"))
        .args(["--log", "trace"])
        .args(args)
        .env_remove("SETTEE_PASSWORD")
        .env_remove("RUST_LOG")
        .output()
        .expect("run settee")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_appear_in_no_log_error_status_or_replica_file() {
    let db = TestDb::seeded("secrets", &["--cards", "10", "--extras"]).await;
    let s = server();
    let secrets = forms(&s.user, &s.password);
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();

    // Credentials in the URL, then as options, each logged at trace level.
    let out = settee_traced(&["pull", &db.url(), rep_s, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.len() > 1000, "trace logging is on");
    assert_absent("pull stdout", &out.stdout, &secrets);
    assert_absent("pull stderr (trace)", &out.stderr, &secrets);
    let plain_url = format!("{}/{}", s.base, enc(&db.name));
    let out = settee_traced(&[
        "pull",
        &plain_url,
        rep_s,
        "--user",
        &s.user,
        "--password",
        &s.password,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_absent("pull stdout", &out.stdout, &secrets);
    assert_absent("pull stderr (trace)", &out.stderr, &secrets);

    for args in [
        vec!["status", rep_s, "--json"],
        vec!["status", rep_s],
        vec!["check", rep_s, "--json"],
        vec!["dump", rep_s],
    ] {
        let out = settee_traced(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_absent(&format!("{args:?} stdout"), &out.stdout, &secrets);
        assert_absent(&format!("{args:?} stderr"), &out.stderr, &secrets);
    }

    // Failing pulls: the error names the server, never the password.
    let wrong = "settee-not-the-password-9f3";
    let wrong_forms = forms("settee-nobody", wrong);
    let bad_auth = format!(
        "{}/{}",
        server::with_userinfo(&s.base, &format!("settee-nobody:{wrong}")),
        enc(&db.name)
    );
    let refused = format!("http://{}:{}@127.0.0.1:1/db", s.user, s.password);
    for (url, secrets) in [(&bad_auth, &wrong_forms), (&refused, &secrets)] {
        let out = settee_traced(&["pull", "--retries", "0", url, rep_s]);
        assert_eq!(out.status.code(), Some(2));
        assert_absent("failed pull stderr", &out.stderr, secrets);
        assert_absent("failed pull stdout", &out.stdout, secrets);
    }

    // Nothing on disk: records, checkpoints, the remote binding, logs.
    let all = files(&rep);
    assert!(all.len() >= 3, "{all:?}");
    for file in all {
        let bytes = std::fs::read(&file).unwrap();
        assert_absent(&file.display().to_string(), &bytes, &secrets);
    }
}
