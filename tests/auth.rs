//! Authentication beside basic auth (issue 12): CouchDB cookie sessions
//! against the real server, and bearer tokens (JWT, which PouchDB Server
//! does not implement: the header is checked through the proxy).

use crate::support::proxy::Rule;
use crate::support::*;
use settee::{Auth, Endpoint, Remote, RemoteConfig, RemoteError, RetryPolicy};

fn remote_with(url: &str, auth: Auth) -> Remote {
    Remote::new(
        Endpoint::parse(url).expect("url"),
        RemoteConfig::default()
            .with_retry(RetryPolicy::with_retries(1))
            .with_auth(auth),
    )
    .expect("remote")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_accepts_a_session_cookie() {
    // PouchDB Server (and CouchDB) open a session for the admin user.
    let s = server();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/_session", s.base))
        .json(&serde_json::json!({"name": s.user, "password": s.password}))
        .send()
        .await
        .expect("POST /_session");
    assert!(resp.status().is_success(), "{}", resp.status());
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("AuthSession="))
        .and_then(|v| v.split(';').next())
        .expect("an AuthSession cookie")
        .to_owned();
    let who: serde_json::Value = http
        .get(format!("{}/_session", s.base))
        .header("Cookie", cookie)
        .send()
        .await
        .expect("GET /_session")
        .json()
        .await
        .expect("json");
    assert_eq!(who["userCtx"]["name"], s.user.as_str(), "{who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pull_logs_in_once_sends_only_the_cookie_and_renews_on_401() {
    let db = TestDb::seeded("session", &["--cards", "20", "--extras"]).await;
    let want = db.server_dump().await;
    let proxy = db.behind_proxy().await;
    let remote = remote_with(&db.url_via(&proxy.url()), Auth::Session);
    let (_dir, replica) = temp_replica();
    let result = settee::pull(&replica, &remote, &pull_config(10, 2))
        .await
        .expect("pull with a session");
    assert_eq!(result.doc_write_failures, 0);
    assert_same_dump(&replica_dump(&replica), &want);
    assert_eq!(proxy.count("POST /_session"), 1, "{:?}", proxy.requests());
    let heads = proxy.request_heads();
    let others: Vec<&String> = heads.iter().filter(|h| !h.contains("/_session")).collect();
    assert!(others.len() > 3);
    for head in others {
        let cookie = header(head, "cookie").unwrap_or_default();
        assert!(
            cookie.starts_with("AuthSession="),
            "no session cookie: {head}"
        );
        assert!(
            header(head, "authorization").is_none(),
            "basic auth sent: {head}"
        );
    }

    // The session expires: the server answers 401 once; the client logs in
    // again and goes on.
    db.bulk_docs(
        vec![serde_json::json!({"_id": "after-expiry", "v": 1})],
        true,
    )
    .await;
    let want = db.server_dump().await;
    proxy.set_rules(vec![Rule::respond(
        "_changes",
        401,
        r#"{"error":"unauthorized","reason":"session expired"}"#,
    )
    .once()]);
    settee::pull(&replica, &remote, &pull_config(10, 2))
        .await
        .expect("renewed session");
    assert_eq!(proxy.count("POST /_session"), 2);
    assert_same_dump(&replica_dump(&replica), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_is_a_clear_401() {
    let db = TestDb::new("session-refused").await;
    let s = server();
    let url = format!(
        "{}/{}",
        server::with_userinfo(&s.base, "admin:settee-wrong-pw-51"),
        enc(&db.name)
    );
    let remote = remote_with(&url, Auth::Session);
    let err = remote.db_info().await.expect_err("wrong password");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    assert!(err.to_string().contains("_session"), "{err}");
    assert!(!err.to_string().contains("settee-wrong-pw-51"), "{err}");
    assert!(!format!("{err:?}").contains("settee-wrong-pw-51"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_is_sent_instead_of_the_password() {
    // PouchDB Server has no JWT handler; Apache CouchDB 3 with
    // `jwt_authentication_handler` checks the token. Here: the header.
    let db = TestDb::new("bearer").await;
    let proxy = db.behind_proxy().await;
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl";
    proxy.set_rules(vec![Rule::respond(
        "GET /",
        200,
        r#"{"db_name":"x","doc_count":0,"update_seq":0}"#,
    )]);
    let remote = remote_with(&db.url_via(&proxy.url()), Auth::Bearer(token.to_owned()));
    let info = remote.db_info().await;
    assert!(
        !matches!(info, Err(RemoteError::Connect { .. })),
        "{info:?}"
    );
    let heads = proxy.request_heads();
    assert!(!heads.is_empty());
    for head in &heads {
        assert_eq!(
            header(head, "authorization"),
            Some(format!("Bearer {token}").as_str()),
            "{head}"
        );
    }
    assert!(!format!("{remote:?}").contains(token));
}

/// Runs the `settee` binary off the runtime's threads (the proxy runs on
/// them), asserting success.
async fn settee_ok(args: Vec<String>) -> std::process::Output {
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        settee(&args)
    })
    .await
    .expect("settee ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every request but the login carries the session cookie and no password.
fn only_cookies(proxy: &crate::support::proxy::FaultProxy) {
    let heads = proxy.request_heads();
    let others: Vec<&String> = heads.iter().filter(|h| !h.contains("/_session")).collect();
    assert!(!others.is_empty());
    for head in others {
        let cookie = header(head, "cookie").unwrap_or_default();
        assert!(cookie.starts_with("AuthSession="), "no cookie: {head}");
        assert!(header(head, "authorization").is_none(), "basic: {head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_sync_log_in_with_a_session_from_the_command_line() {
    let db = TestDb::seeded("cli-session", &["--cards", "5"]).await;
    let proxy = db.behind_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("r").to_str().unwrap().to_owned();
    let url = db.url_via(&proxy.url());
    let s = |v: &str| v.to_owned();
    settee_ok(vec![
        s("pull"),
        s("--session"),
        url.clone(),
        replica.clone(),
    ])
    .await;
    assert_eq!(proxy.count("POST /_session"), 1);
    only_cookies(&proxy);

    // push --session: logs in, sends the write with the cookie only.
    settee_ok(vec![
        s("put"),
        replica.clone(),
        s("by-push"),
        s(r#"{"v":1}"#),
    ])
    .await;
    proxy.clear_requests();
    settee_ok(vec![
        s("push"),
        replica.clone(),
        s("--remote"),
        url.clone(),
        s("--session"),
        s("--retries"),
        s("1"),
        s("--request-timeout"),
        s("30"),
    ])
    .await;
    assert_eq!(proxy.count("POST /_session"), 1, "{:?}", proxy.requests());
    assert!(proxy.count("_bulk_docs") >= 1, "{:?}", proxy.requests());
    only_cookies(&proxy);
    assert_eq!(db.get_json("by-push").await["v"], 1);

    // sync --session: each database's pull logs in the same way.
    proxy.clear_requests();
    let root = dir.path().join("root").to_str().unwrap().to_owned();
    let server_url = server::with_userinfo(
        &proxy.url(),
        &server::userinfo(&server().user, &server().password),
    );
    settee_ok(vec![
        s("sync"),
        server_url,
        root.clone(),
        s("--db"),
        db.name.clone(),
        s("--force"),
        s("--json"),
        s("--session"),
        s("--retry"),
        s("--retry-attempts"),
        s("2"),
    ])
    .await;
    assert!(proxy.count("POST /_session") >= 1, "{:?}", proxy.requests());
    only_cookies(&proxy);
    let out = settee_ok(vec![s("dump"), root, s("--db"), db.name.clone()]).await;
    let dump: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_same_dump(&dump, &db.server_dump().await);
}
