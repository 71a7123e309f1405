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
    // A credential of the test's own, long and random: the server's admin
    // password may be a word the documents hold (`admin`).
    let user = db.member().await;
    let secrets = forms(&user.name, &user.password);
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();

    // Credentials in the URL, then as options, each logged at trace level.
    let out = settee_traced(&["pull", &db.url_as(&s.base, &user), rep_s, "--json"]);
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
        &user.name,
        "--password",
        &user.password,
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
    let refused = format!("http://{}:{}@127.0.0.1:1/db", user.name, user.password);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_and_bearer_tokens_appear_in_no_log_error_status_or_replica_file() {
    let db = TestDb::seeded("secrets-auth", &["--cards", "10", "--extras"]).await;
    let s = server();
    // A credential of the test's own (see the test above).
    let user = db.member().await;
    let proxy = db.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();

    // A cookie session through the proxy, which shows the cookie the
    // command used: neither it nor the password may show anywhere.
    let out = settee_traced(&["pull", "--session", &db.url_as(&proxy.url(), &user), rep_s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.len() > 1000, "trace logging is on");
    assert_eq!(proxy.count("POST /_session"), 1);
    let cookie = proxy
        .request_heads()
        .iter()
        .flat_map(|h| h.lines().map(str::to_owned).collect::<Vec<_>>())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("cookie")
                .then(|| v.trim().trim_start_matches("AuthSession=").to_owned())
        })
        .expect("the command sent a session cookie");
    assert!(cookie.len() > 8, "{cookie}");
    let mut secrets = forms(&user.name, &user.password);
    secrets.push(cookie.into_bytes());
    assert_absent("session pull stdout", &out.stdout, &secrets);
    assert_absent("session pull stderr (trace)", &out.stderr, &secrets);

    // A bearer token, on the command line and in SETTEE_TOKEN; PouchDB
    // Server ignores it, so the pull may fail: either way, no token.
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZXR0ZWUtc2VjcmV0LXRva2VuIn0.c2lnLTQ3MTE";
    let plain_url = format!("{}/{}", proxy.url(), enc(&db.name));
    let out = settee_traced(&[
        "pull",
        "--retries",
        "0",
        "--token",
        token,
        &plain_url,
        rep_s,
    ]);
    assert!(matches!(out.status.code(), Some(0 | 2 | 3)), "{out:?}");
    secrets.push(token.as_bytes().to_vec());
    assert_absent("bearer pull stdout", &out.stdout, &secrets);
    assert_absent("bearer pull stderr (trace)", &out.stderr, &secrets);
    let out = Command::new(env!("CARGO_BIN_EXE_settee"))
        .args([
            "--log",
            "trace",
            "pull",
            "--retries",
            "0",
            &plain_url,
            rep_s,
        ])
        .env("SETTEE_TOKEN", token)
        .env_remove("RUST_LOG")
        .output()
        .expect("run settee");
    assert!(matches!(out.status.code(), Some(0 | 2 | 3)), "{out:?}");
    assert_absent("bearer (env) pull stdout", &out.stdout, &secrets);
    assert_absent("bearer (env) pull stderr (trace)", &out.stderr, &secrets);
    let sent = proxy
        .request_heads()
        .iter()
        .filter(|h| {
            h.to_ascii_lowercase().contains(&format!(
                "authorization: bearer {}",
                token.to_ascii_lowercase()
            ))
        })
        .count();
    assert!(sent >= 2, "the token was sent by both commands");

    // A refused session: the error names /_session, never the password.
    let wrong = "settee-not-the-password-c0ok";
    let bad = format!(
        "{}/{}",
        server::with_userinfo(&s.base, &format!("{}:{wrong}", user.name)),
        enc(&db.name)
    );
    let out = settee_traced(&["pull", "--session", "--retries", "0", &bad, rep_s]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("_session"));
    let wrong_forms = forms(&user.name, wrong);
    assert_absent("refused session stderr", &out.stderr, &wrong_forms);
    assert_absent("refused session stdout", &out.stdout, &wrong_forms);

    for args in [vec!["status", rep_s, "--json"], vec!["status", rep_s]] {
        let out = settee_traced(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_absent(&format!("{args:?} stdout"), &out.stdout, &secrets);
    }
    for file in files(&rep) {
        let bytes = std::fs::read(&file).unwrap();
        assert_absent(&file.display().to_string(), &bytes, &secrets);
    }
}
