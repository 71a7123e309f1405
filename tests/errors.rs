use crate::support::proxy::Rule;
use crate::support::*;
use settee::{
    Endpoint, Error, PullConfig, Remote, RemoteConfig, RemoteError, Replica, RetryPolicy,
};

/// A replica already holding a pulled corpus, and its dump.
async fn existing_replica(db: &TestDb) -> (tempfile::TempDir, Replica, Vec<serde_json::Value>) {
    let (dir, replica) = temp_replica();
    pull(&replica, &db.remote(), 1000, 5).await;
    let dump = replica_dump(&replica);
    assert!(!dump.is_empty());
    (dir, replica, dump)
}

async fn pull_err(replica: &Replica, url: &str) -> Error {
    let remote = match Endpoint::parse(url) {
        Ok(ep) => Remote::new(ep, RemoteConfig::default().with_retry(RetryPolicy::none())).unwrap(),
        Err(e) => return e.into(),
    };
    settee::pull(replica, &remote, &PullConfig::default())
        .await
        .expect_err("the pull must fail")
}

fn assert_untouched(
    replica: &Replica,
    before: &[serde_json::Value],
    last_pull: &Option<settee::PullResult>,
) {
    assert_eq!(replica_dump(replica), before, "the replica changed");
    assert_eq!(
        &settee::replicate::last_pull(replica).unwrap(),
        last_pull,
        "the last pull record changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_servers_get_typed_errors_and_leave_the_replica_alone() {
    let db = TestDb::seeded("errors", &["--cards", "20", "--extras"]).await;
    let (_dir, replica, before) = existing_replica(&db).await;
    let last = settee::replicate::last_pull(&replica).unwrap();
    let s = server();

    let e = pull_err(&replica, "http//not a url").await;
    assert!(
        matches!(e, Error::Remote(RemoteError::InvalidUrl { .. })),
        "{e:?}"
    );

    // Port 1 (tcpmux): nothing listens there, and no test binds it, so the
    // refusal cannot be raced by a proxy that took a just-freed port.
    let e = pull_err(&replica, &format!("http://127.0.0.1:1/{}", db.name)).await;
    assert!(
        matches!(e, Error::Remote(RemoteError::Connect { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("is the server running"), "{e}");

    let e = pull_err(&replica, &format!("{}/settee-no-such-db", s.authed_base())).await;
    assert_eq!(remote_status(&e), Some(404), "{e:?}");
    assert!(e.to_string().contains("not_found"), "{e}");

    // An unknown user, not the admin with a wrong password: CouchDB locks
    // out an account after a few failed logins.
    let wrong = server::with_userinfo(&s.base, "settee-nobody:wrong-password");
    let e = pull_err(&replica, &format!("{wrong}/{}", enc(&db.name))).await;
    assert_eq!(remote_status(&e), Some(401), "{e:?}");
    assert!(
        !e.to_string().contains("wrong-password"),
        "credentials leak into errors: {e}"
    );
    assert!(e.to_string().contains("password"), "says what to do: {e}");

    // Another database into the same replica: refused, not merged.
    let other = TestDb::seeded("errors-other", &["--cards", "3"]).await;
    let e = pull_err(&replica, &other.url()).await;
    assert!(matches!(e, Error::WrongRemote { .. }), "{e:?}");

    assert_untouched(&replica, &before, &last);
}

fn remote_status(e: &Error) -> Option<u16> {
    match e {
        Error::Remote(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_get_typed_errors_and_leave_the_replica_alone() {
    let db = TestDb::seeded("broken", &["--cards", "20", "--extras"]).await;
    let (_dir, replica, before) = existing_replica(&db).await;
    let last = settee::replicate::last_pull(&replica).unwrap();
    // New remote changes, so the pulls below have something to fetch.
    db.bulk_docs(
        (0..5)
            .map(|i| serde_json::json!({"_id": format!("late-{i}"), "v": i}))
            .collect(),
        true,
    )
    .await;
    let proxy = db.behind_proxy().await;
    let url = db.url_via(&proxy.url());

    // A web page, not CouchDB.
    proxy.set_rules(vec![Rule::respond_with(
        "",
        200,
        "text/html",
        "<html><body>It works!</body></html>",
    )]);
    let e = pull_err(&replica, &url).await;
    assert!(
        matches!(e, Error::Remote(RemoteError::NotCouchDb { .. })),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("does not look like a CouchDB server"),
        "{e}"
    );

    // A truncated _changes page.
    proxy.set_rules(vec![Rule::truncate_body("_changes", 40)]);
    let e = pull_err(&replica, &url).await;
    assert!(
        matches!(
            e,
            Error::Remote(RemoteError::Transport { .. } | RemoteError::InvalidResponse { .. })
        ),
        "{e:?}"
    );

    // Invalid JSON from _bulk_get.
    proxy.set_rules(vec![Rule::corrupt_body("_bulk_get")]);
    let e = pull_err(&replica, &url).await;
    assert!(
        matches!(e, Error::Remote(RemoteError::InvalidResponse { .. })),
        "{e:?}"
    );

    // A 403, as CouchDB answers a user who is not a member of the database.
    proxy.set_rules(vec![Rule::respond(
        "_changes",
        403,
        r#"{"error":"forbidden","reason":"You are not allowed to access this db."}"#,
    )]);
    let e = pull_err(&replica, &url).await;
    assert_eq!(remote_status(&e), Some(403), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("forbidden") && msg.contains("not allowed"),
        "{msg}"
    );
    assert!(msg.contains("permission"), "says what to do: {msg}");

    // A 500 from the server, after retries are exhausted.
    proxy.set_rules(vec![Rule::respond(
        "_changes",
        500,
        r#"{"error":"unknown_error","reason":"boom"}"#,
    )]);
    let e = pull_err(&replica, &url).await;
    assert_eq!(remote_status(&e), Some(500), "{e:?}");
    assert!(
        e.to_string().contains("boom"),
        "carries CouchDB's reason: {e}"
    );

    assert_untouched(&replica, &before, &last);

    // With the faults gone, the same replica catches up.
    proxy.clear_rules();
    let remote = remote_for(&url, RetryPolicy::none());
    settee::pull(&replica, &remote, &PullConfig::default())
        .await
        .unwrap();
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let db = TestDb::seeded("retry", &["--cards", "30"]).await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![
        Rule::respond(
            "_changes",
            503,
            r#"{"error":"service_unavailable","reason":"busy"}"#,
        )
        .once(),
        Rule::drop_connection("_bulk_get").once(),
        // First revisions would come from the feed, without `_bulk_get`.
        Rule::changes_without_docs(),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::with_retries(2));
    let result = pull(&replica, &remote, 1000, 5).await;
    // The 503, the dropped connection, and the one page read.
    assert_eq!(proxy.fired(), 3, "both faults happened");
    assert_eq!(result.doc_write_failures, 0);
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_document_errors_are_counted_not_dropped() {
    let db = TestDb::seeded("docerr", &["--cards", "10"]).await;
    let proxy = db.behind_proxy().await;
    // A server answering one revision with an error row, CouchDB-style.
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    // One change row names a document the server cannot give (as after a
    // purge). It must be a missing *document*: PouchDB Server 4.2 crashes on
    // `_bulk_get?latest=true` for an unknown revision of an existing one.
    let changes = db.get_json("_changes?style=all_docs").await;
    let mut forged = changes.clone();
    forged["results"].as_array_mut().unwrap().insert(
        3,
        serde_json::json!({"id": "ghost-doc", "seq": 0, "changes": [{"rev": "1-00000000000000000000000000000000"}]}),
    );
    proxy.set_rules(vec![
        Rule::respond("_changes", 200, forged.to_string()).once()
    ]);
    let result = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(result.doc_write_failures, 1, "{result:?}");
    assert_eq!(result.failures[0].id, "ghost-doc");
    assert_eq!(result.failures[0].error, "not_found");
    assert_eq!(
        result.docs_written as usize,
        changes["results"].as_array().unwrap().len()
    );
    assert!(replica.get("ghost-doc").unwrap().is_none());
    assert_eq!(
        replica.pending_retries().unwrap(),
        vec!["ghost-doc".to_string()]
    );
    // The next pull asks again; the server has no such document, so it is done.
    let again = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(again.doc_write_failures, 0, "{again:?}");
    assert!(replica.pending_retries().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_failed_is_fetched_again_by_the_next_pull() {
    let db = TestDb::seeded("refetch", &["--cards", "10", "--extras"]).await;
    let proxy = db.behind_proxy().await;
    // The attachment of one document cannot be read during the first pull.
    proxy.set_rules(vec![Rule::not_found("/x-att-text/hello.txt")]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let first = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(first.doc_write_failures, 1, "{:?}", first.failures);
    assert_eq!(first.failures[0].error, "attachment_error");
    assert!(replica.get("x-att-text").unwrap().is_none());
    assert_eq!(
        replica.pending_retries().unwrap(),
        vec!["x-att-text".to_string()]
    );

    // The document has not changed on the server, so only the retry list
    // brings it: nothing acknowledged by the server is silently left behind.
    proxy.clear_rules();
    let second = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(second.doc_write_failures, 0, "{:?}", second.failures);
    assert_eq!(second.docs_written, 1);
    assert!(replica.pending_retries().unwrap().is_empty());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}

/// Breaks a `_bulk_get` answer three ways: the first document is left out,
/// the second is answered under another `_id`, the third carries a
/// `_revisions` longer than its generation.
fn garble_bulk_get(answer: &mut serde_json::Value) {
    let Some(results) = answer["results"].as_array_mut() else {
        return;
    };
    results.remove(0);
    results[0]["docs"][0]["ok"]["_id"] = "someone-else".into();
    let path = &mut results[1]["docs"][0]["ok"]["_revisions"]["ids"];
    if let Some(ids) = path.as_array_mut() {
        ids.push("0123456789abcdef0123456789abcdef".into());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_answers_fail_only_their_documents_and_are_fetched_again() {
    let db = TestDb::seeded("garbled", &["--cards", "12"]).await;
    let proxy = db.behind_proxy().await;
    proxy.set_rules(vec![
        Rule::edit_json("_bulk_get", garble_bulk_get).once(),
        // First revisions would come from the feed, without `_bulk_get`.
        Rule::changes_without_docs(),
    ]);
    let (_dir, replica) = temp_replica();
    let remote = db.remote_via(&proxy, RetryPolicy::none());
    let first = pull(&replica, &remote, 1000, 5).await;
    // The garbled answer and the one page read.
    assert_eq!(proxy.fired(), 2);
    let mut errors: Vec<(&str, &str)> = first
        .failures
        .iter()
        .map(|f| (f.error.as_str(), f.reason.as_str()))
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 3, "{:?}", first.failures);
    assert!(errors[0].1.contains("invalid _revisions"), "{errors:?}");
    assert!(errors[1].1.contains("someone-else"), "{errors:?}");
    assert_eq!(errors[2].0, "not_answered", "{errors:?}");
    // The checkpoint moved past all three: only the retry list brings them.
    let mut retry = replica.pending_retries().unwrap();
    let mut failed: Vec<String> = first.failures.iter().map(|f| f.id.clone()).collect();
    retry.sort();
    failed.sort();
    assert_eq!(retry, failed);
    for id in &failed {
        assert!(replica.get(id).unwrap().is_none(), "{id} was not stored");
    }
    assert!(replica.get("someone-else").unwrap().is_none());

    let second = pull(&replica, &remote, 1000, 5).await;
    assert_eq!(second.doc_write_failures, 0, "{:?}", second.failures);
    assert_eq!(second.docs_written, 3);
    assert!(replica.pending_retries().unwrap().is_empty());
    assert_same_dump(&replica_dump(&replica), &db.server_dump().await);
}
