//! Issue 21, first slice: `settee serve` answers as CouchDB does, and a
//! real client no one here wrote (PouchDB's replicator) copies a replica
//! through it: every document, revision tree, conflict, tombstone and
//! attachment it ends with equals settee's.

use crate::support::*;
use serde_json::{json, Value};
use settee::query::{GetOptions, OpenRevs, Query};
use settee::serve::ServeConfig;
use std::net::SocketAddr;

const CORPUS: &[&str] = &["--cards", "40", "--tags", "5", "--realistic", "--extras"];

/// Serves `replica` on a free loopback port until the returned sender is
/// dropped or fired.
async fn serve(
    replica: &settee::Replica,
    config: ServeConfig,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<settee::Result<()>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let replica = replica.clone();
    let task = tokio::spawn(async move {
        settee::serve::serve(
            replica,
            {
                let mut config = config;
                config.bind = "127.0.0.1:0".parse().unwrap();
                config
            },
            move |addr| {
                let _ = addr_tx.send(addr);
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    (addr_rx.await.unwrap(), stop_tx, task)
}

/// A checked config serving one database as `name`.
fn config(name: &str) -> ServeConfig {
    ServeConfig::builder().db_name(name).build().unwrap()
}

async fn http(
    method: reqwest::Method,
    url: impl Into<String>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url.into());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every leaf of every document, as `open_revs=all&revs=true` gives it,
/// sorted by revision: settee's copy.
fn leaves_of(replica: &settee::Replica) -> serde_json::Map<String, Value> {
    let query = Query::open(replica).unwrap();
    let mut out = serde_json::Map::new();
    for info in replica.docs(..) {
        let id = info.unwrap().id;
        let got = query
            .get(
                &id,
                &GetOptions::default().open_revs(OpenRevs::All).revs(true),
            )
            .unwrap();
        let mut leaves: Vec<Value> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ok"].clone())
            .collect();
        leaves.sort_by(|a, b| a["_rev"].as_str().cmp(&b["_rev"].as_str()));
        out.insert(id, Value::Array(leaves));
    }
    out
}

/// PouchDB's copy of the database at `url` (see
/// `tests/support/pouch-replicate.js`).
fn pouch_copy(url: &str) -> Value {
    pouch(&[url])
}

/// `tests/support/pouch-replicate.js` with `args`, its JSON answer.
fn pouch(args: &[&str]) -> Value {
    let out = std::process::Command::new("node")
        .arg(server::repo_root().join("tests/support/pouch-replicate.js"))
        .args(args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "PouchDB's replication failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn without_revpos(leaves: &Value) -> Value {
    let mut leaves = leaves.clone();
    for leaf in leaves.as_array_mut().into_iter().flatten() {
        for att in leaf
            .get_mut("_attachments")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|a| a.values_mut())
        {
            att.as_object_mut().map(|a| a.remove("revpos"));
        }
    }
    leaves
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pouchdb_replicates_a_served_replica_and_holds_what_settee_holds() {
    let db = TestDb::seeded("serve-pouch", CORPUS).await;
    let (_d, replica) = temp_replica();
    pull(&replica, &db.remote(), 50, 2).await;
    let (addr, stop, task) = serve(&replica, config("copy")).await;
    let url = format!("http://{addr}/copy");

    let from_settee = pouch_copy(&url);
    let from_server = pouch_copy(&db.url());
    assert_eq!(from_settee["doc_write_failures"], 0, "{from_settee}");
    // The same client, the same data: what PouchDB makes of settee's
    // endpoint is what it makes of the server's.
    let (got, reference) = (
        from_settee["docs"].as_object().unwrap(),
        from_server["docs"].as_object().unwrap(),
    );
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (id, leaves) in reference {
        assert_eq!(
            &got[id], leaves,
            "{id}: PouchDB's copy from settee and from the server"
        );
    }
    // And it is settee's replica, leaf for leaf, history and attachments
    // (PouchDB stamps an attachment it fetched with the revision that
    // brought it: `revpos` is the client's, not compared).
    let want = leaves_of(&replica);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (id, leaves) in &want {
        assert_eq!(without_revpos(&got[id]), without_revpos(leaves), "{id}");
    }
    assert!(
        want.values().any(|l| l.as_array().unwrap().len() > 1),
        "conflicts went across"
    );

    // A live replication from the endpoint picks up what a later pull
    // brings into the replica.
    let live = std::process::Command::new("node")
        .arg(server::repo_root().join("tests/support/pouch-replicate.js"))
        .args([url.as_str(), "--live-until", "pulled-later"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    db.bulk_docs(vec![json!({"_id": "pulled-later", "n": 1})], true)
        .await;
    pull(&replica, &db.remote(), 50, 2).await;
    let out = tokio::task::spawn_blocking(move || live.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let said: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        said["arrived"],
        true,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_answers_and_errors_are_couchdbs() {
    let db = TestDb::seeded("serve-api", &["--cards", "10", "--extras"]).await;
    let (_d, replica) = temp_replica();
    pull(&replica, &db.remote(), 50, 2).await;
    let (addr, stop, task) = serve(&replica, config("course")).await;
    let base = format!("http://{addr}");
    let get = |path: &str| http(reqwest::Method::GET, format!("{base}/{path}"), None);

    let (status, welcome) = get("").await;
    assert_eq!(
        (status, welcome["couchdb"].clone()),
        (200, json!("Welcome"))
    );
    assert_eq!(get("_all_dbs").await.1, json!(["course"]));
    let (status, info) = get("course").await;
    assert_eq!(status, 200);
    assert_eq!(info["doc_count"], json!(replica.doc_count().unwrap()));
    assert_eq!(info["update_seq"], json!(replica.update_seq().unwrap()));
    assert_eq!(get("nope").await.0, 404);

    // Odd ids, by URL as CouchDB spells them.
    for (path, id) in [
        ("course/a%2Fb", "a/b"),
        ("course/with%20space", "with space"),
        ("course/plus%2Bsign", "plus+sign"),
        ("course/_design/with/slash", "_design/with/slash"),
        ("course/_design/extras", "_design/extras"),
    ] {
        let (status, doc) = get(path).await;
        if path.ends_with("with/slash") {
            // CouchDB answers a design id with a slash as an attachment path.
            assert_eq!(status, 404, "{path}: {doc}");
            continue;
        }
        assert_eq!(
            (status, doc["_id"].as_str()),
            (200, Some(id)),
            "{path}: {doc}"
        );
    }
    let (status, err) = get("course/no-such-doc").await;
    assert_eq!((status, err["error"].as_str()), (404, Some("not_found")));
    let (status, err) = get("course/x-tombstone").await;
    assert_eq!((status, err["reason"].as_str()), (404, Some("deleted")));

    // The feed: all rows, then pages.
    let (_, feed) = get("course/_changes?style=all_docs").await;
    let rows = feed["results"].as_array().unwrap();
    assert_eq!(
        rows.len() as u64,
        replica.doc_count().unwrap() + replica.deleted_count().unwrap()
    );
    assert_eq!(feed["last_seq"], json!(replica.update_seq().unwrap()));
    let (_, page) = get("course/_changes?limit=3").await;
    assert_eq!(page["results"].as_array().unwrap().len(), 3);
    assert_eq!(page["pending"], json!(rows.len() - 3));
    let (_, rest) = get(&format!("course/_changes?since={}", page["last_seq"])).await;
    assert_eq!(rest["results"].as_array().unwrap().len(), rows.len() - 3);
    let (status, _) = get("course/_changes?since=garbage").await;
    assert_eq!(status, 400);

    // The replication endpoints.
    let conflicted = leaves_of(&replica)["x-conflicts3"].clone();
    let revs: Vec<Value> = conflicted
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["_rev"].clone())
        .collect();
    let (status, diff) = http(
        reqwest::Method::POST,
        &format!("{base}/course/_revs_diff"),
        Some(json!({"x-conflicts3": [revs[0], "9-0123456789abcdef0123456789abcdef"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        diff,
        json!({"x-conflicts3": {"missing": ["9-0123456789abcdef0123456789abcdef"]}})
    );
    let (_, bulk) = http(
        reqwest::Method::POST,
        &format!("{base}/course/_bulk_get?revs=true"),
        Some(json!({"docs": [{"id": "x-conflicts3", "rev": revs[1]}, {"id": "no-such-doc", "rev": "1-a"}]})),
    )
    .await;
    assert_eq!(bulk["results"][0]["docs"][0]["ok"]["_rev"], revs[1]);
    assert!(bulk["results"][0]["docs"][0]["ok"]["_revisions"].is_object());
    assert_eq!(bulk["results"][1]["docs"][0]["error"]["error"], "not_found");

    // A long poll waits for the next commit and answers with it.
    let now = replica.update_seq().unwrap();
    let poll = tokio::spawn(http(
        reqwest::Method::GET,
        format!("{base}/course/_changes?feed=longpoll&since={now}&heartbeat=10000"),
        None,
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long poll waits while nothing changes"
    );
    let written = std::time::Instant::now();
    replica.put("while-polling", json!({"n": 1})).await.unwrap();
    let (status, polled) = poll.await.unwrap();
    assert!(written.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(status, 200);
    assert_eq!(polled["results"][0]["id"], "while-polling", "{polled}");
    let (_, quiet) = get(&format!(
        "course/_changes?feed=longpoll&since={}&timeout=200",
        polled["last_seq"]
    ))
    .await;
    assert_eq!(quiet["results"], json!([]), "timed out with nothing");

    // _all_docs and _find through the query engine.
    let (_, all) = get("course/_all_docs?limit=2").await;
    assert_eq!(all["rows"].as_array().unwrap().len(), 2);
    let (status, found) = http(
        reqwest::Method::POST,
        &format!("{base}/course/_find"),
        Some(json!({"selector": {"docType": "EXTRA", "hostile": true}, "fields": ["_id"]})),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert!(found["docs"].as_array().unwrap().len() >= 5);

    // Writes are local writes, queued for the push; a stale one is 409.
    let queued = replica.outbox().len().unwrap();
    let (status, put) = http(
        reqwest::Method::PUT,
        &format!("{base}/course/from-a-client"),
        Some(json!({"n": 1})),
    )
    .await;
    assert_eq!(status, 201, "{put}");
    let rev = put["rev"].as_str().unwrap().to_owned();
    assert_eq!(
        replica
            .get("from-a-client")
            .unwrap()
            .unwrap()
            .rev
            .to_string(),
        rev
    );
    assert_eq!(replica.outbox().len().unwrap(), queued + 1);
    let (status, _) = http(
        reqwest::Method::PUT,
        &format!("{base}/course/from-a-client"),
        Some(json!({"n": 2})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = http(
        reqwest::Method::PUT,
        &format!("{base}/course/bad-json"),
        None,
    )
    .await;
    assert_eq!(status, 400);

    let (status, bulk) = http(
        reqwest::Method::POST,
        format!("{base}/course/_bulk_docs"),
        Some(json!({"docs": [
            {"_id": "bulk-1", "n": 1},
            {"_id": "from-a-client", "n": 3},
            {"_id": "from-a-client", "_rev": rev, "_deleted": true},
        ]})),
    )
    .await;
    assert_eq!(status, 201, "{bulk}");
    assert_eq!(bulk[0]["ok"], true);
    assert_eq!(bulk[1]["error"], "conflict");
    assert_eq!(bulk[2]["ok"], true);
    assert!(replica.get("from-a-client").unwrap().unwrap().deleted);
    let (status, refused) = http(
        reqwest::Method::POST,
        format!("{base}/course/_bulk_docs"),
        Some(json!({"docs": [{"_id": "no-rev", "n": 1}], "new_edits": false})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        refused[0]["error"], "bad_request",
        "a replicated revision needs its _rev: {refused}"
    );
    assert!(replica.get("no-rev").unwrap().is_none());

    // _local documents count their writes and refuse a stale one.
    let local = format!("{base}/course/_local/checkpoint");
    let (status, first) = http(reqwest::Method::PUT, &local, Some(json!({"seq": 1}))).await;
    assert_eq!((status, first["rev"].as_str()), (201, Some("0-1")));
    let (status, _) = http(reqwest::Method::PUT, &local, Some(json!({"seq": 2}))).await;
    assert_eq!(status, 409);
    let (status, _) = http(
        reqwest::Method::PUT,
        &local,
        Some(json!({"seq": 2, "_rev": "0-1"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(get("course/_local/checkpoint").await.1["seq"], 2);
    // Twenty writers of the same revision at once: exactly one wins. (The
    // window without the server's lock is a few microseconds between a
    // read and a write on two runtime threads: this catches a regression
    // only sometimes; the lock is what closes it.)
    let racing: Vec<_> = (0..20)
        .map(|n| {
            tokio::spawn(http(
                reqwest::Method::PUT,
                local.clone(),
                Some(json!({"seq": 100 + n, "_rev": "0-2"})),
            ))
        })
        .collect();
    let mut won = 0;
    for r in racing {
        match r.await.unwrap().0 {
            201 => won += 1,
            409 => {}
            other => panic!("a racing checkpoint write got {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(get("course/_local/checkpoint").await.1["_rev"], "0-3");

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_required_when_set_and_elsewhere_than_loopback() {
    let (_d, replica) = temp_replica();
    let open = settee::serve::serve(
        replica.clone(),
        // A built config changed afterwards: serve checks it again.
        {
            let mut open = config("db");
            open.bind = "0.0.0.0:0".parse().unwrap();
            open
        },
        |_| {},
        async {},
    )
    .await;
    assert!(matches!(
        open,
        Err(settee::Error::InvalidSetting {
            setting: "bind",
            ..
        })
    ));
    let (addr, stop, task) = serve(
        &replica,
        ServeConfig::builder()
            .db_name("db")
            .credentials("app", "s3cret")
            .build()
            .unwrap(),
    )
    .await;
    let (status, body) = http(reqwest::Method::GET, &format!("http://{addr}/db"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = http(
        reqwest::Method::GET,
        &format!("http://app:s3cret@{addr}/db"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = http(
        reqwest::Method::GET,
        &format!("http://app:wrong@{addr}/db"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A cookie session, as a browser's PouchDB logs in: a wrong password
    // is 401 and no cookie; the right one (JSON or a form) a cookie that
    // opens the database until the session is deleted.
    let client = reqwest::Client::new();
    let login = |body: reqwest::RequestBuilder| async move { body.send().await.unwrap() };
    let wrong = login(
        client
            .post(format!("http://{addr}/_session"))
            .json(&json!({"name": "app", "password": "nope"})),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    for form in [false, true] {
        let post = client.post(format!("http://{addr}/_session"));
        let post = match form {
            true => post.form(&[("name", "app"), ("password", "s3cret")]),
            false => post.json(&json!({"name": "app", "password": "s3cret"})),
        };
        let ok = login(post).await;
        assert_eq!(ok.status(), 200);
        let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.starts_with("AuthSession=") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let token = cookie.split(';').next().unwrap().to_owned();
        let with_cookie = |method: reqwest::Method, path: &str| {
            client
                .request(method, format!("http://{addr}/{path}"))
                .header("cookie", &token)
                .send()
        };
        assert_eq!(
            with_cookie(reqwest::Method::GET, "db")
                .await
                .unwrap()
                .status(),
            200
        );
        let me: Value = with_cookie(reqwest::Method::GET, "_session")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["userCtx"]["name"], "app");
        assert_eq!(me["info"]["authenticated"], "cookie");
        let out = with_cookie(reqwest::Method::DELETE, "_session")
            .await
            .unwrap();
        assert_eq!(out.status(), 200);
        assert_eq!(
            with_cookie(reqwest::Method::GET, "db")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let forged = client
        .get(format!("http://{addr}/db"))
        .header("cookie", "AuthSession=0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settee_serve_with_push_sends_a_clients_write_upstream() {
    let db = TestDb::seeded("serve-push", &["--cards", "5"]).await;
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("rep");
    let rep_s = rep.to_str().unwrap();
    let pulled = settee(&["pull", &db.url(), rep_s, "--quiet"]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let mut child = settee_child(&[
        "serve",
        rep_s,
        "--port",
        "0",
        "--push",
        "--remote",
        &db.url(),
    ]);
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (status, put) = http(
        reqwest::Method::PUT,
        format!("{url}/from-a-client"),
        Some(json!({"text": "written through settee serve"})),
    )
    .await;
    assert_eq!(status, 201, "{put}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, doc) = db
            .request(reqwest::Method::GET, "from-a-client", None)
            .await;
        if status == 200 {
            assert_eq!(doc["_rev"], put["rev"], "the same revision upstream");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the write never reached the server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_listed_origins_and_oversized_bodies_are_413() {
    let (_d, replica) = temp_replica();
    let config = ServeConfig::builder()
        .db_name("db")
        .cors_origin("http://localhost:3000")
        .max_body_bytes(1024)
        .build()
        .unwrap();
    let (addr, stop, task) = serve(&replica, config).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{addr}/db/_all_docs"),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let denied = preflight("http://evil.example").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let get = client
        .get(format!("http://{addr}/db"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(get.headers().get("access-control-allow-origin").is_none());

    let big = json!({"docs": [{"_id": "x", "pad": "p".repeat(4096)}]});
    let (status, body) = http(
        reqwest::Method::POST,
        format!("http://{addr}/db/_bulk_docs"),
        Some(big),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert_eq!(replica.doc_count().unwrap(), 0, "nothing written");

    let (_, session) = http(
        reqwest::Method::GET,
        format!("http://{addr}/_session"),
        None,
    )
    .await;
    assert_eq!(session["ok"], true);
    let (_, limit) = http(
        reqwest::Method::GET,
        format!("http://{addr}/db/_revs_limit"),
        None,
    )
    .await;
    assert_eq!(limit, json!(1000));
    let (status, _) = http(
        reqwest::Method::GET,
        format!("http://{addr}/db/_nope"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        reqwest::Method::DELETE,
        format!("http://{addr}/db/_revs_diff"),
        None,
    )
    .await;
    assert_eq!(status, 405);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pouchdb_pushes_its_edits_into_serve_and_the_outbox_takes_them_upstream() {
    let db = TestDb::seeded("serve-push-in", &["--cards", "5"]).await;
    let (_d, replica) = temp_replica();
    pull(&replica, &db.remote(), 50, 2).await;
    let (addr, stop, task) = serve(&replica, config("course")).await;
    let pushed = pouch(&[&format!("http://{addr}/course"), "--push-own"]);
    assert_eq!(pushed["doc_write_failures"], 0, "{pushed}");
    // In the replica as in the PouchDB, leaf for leaf, the conflict and
    // the attachment included.
    let leaves = leaves_of(&replica);
    for (id, want) in pushed["docs"].as_object().unwrap() {
        assert_eq!(without_revpos(&leaves[id]), without_revpos(want), "{id}");
    }
    assert_eq!(leaves["mine-conflict"].as_array().unwrap().len(), 2);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Queued: the push takes them upstream, with the same winner there.
    assert!(replica.outbox().len().unwrap() >= 3);
    let worker = settee::outbox::Outbox::spawn(
        replica.clone(),
        db.remote(),
        settee::outbox::OutboxConfig::default(),
    );
    let status = worker
        .close(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(replica.outbox().len().unwrap(), 0, "{status:?}");
    let upstream = db.server_dump().await;
    for id in ["mine-1", "mine-att", "mine-conflict"] {
        let theirs = upstream.iter().find(|d| d["_id"] == id).unwrap();
        let ours = replica.get(id).unwrap().unwrap().to_json_with_conflicts();
        assert_eq!(theirs["_rev"], ours["_rev"], "{id}: the same winner");
        assert_eq!(theirs.get("_conflicts"), ours.get("_conflicts"), "{id}");
    }
    assert_eq!(
        db.attachment("mine-att", "note.txt").await,
        b"hello from pouch".to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_replicator_copies_a_served_replica() {
    let db = TestDb::seeded("serve-src", CORPUS).await;
    let (_d, replica) = temp_replica();
    pull(&replica, &db.remote(), 50, 2).await;
    let (addr, stop, task) = serve(&replica, config("copy")).await;
    let replicate = |source: String, target: &TestDb| {
        let body = json!({"source": source, "target": target.url()});
        http(
            reqwest::Method::POST,
            format!("{}/_replicate", server().authed_base()),
            Some(body),
        )
    };
    let (from_settee, from_server) = (
        TestDb::new("serve-target").await,
        TestDb::new("serve-reference").await,
    );
    for (source, target) in [
        (format!("http://{addr}/copy"), &from_settee),
        (db.url(), &from_server),
    ] {
        let (status, answer) = replicate(source, target).await;
        assert_eq!((status, &answer["ok"]), (200, &json!(true)), "{answer}");
    }
    // The server's replicator makes from settee's endpoint what it makes
    // from the upstream database itself (its replicator restamps `revpos`
    // of the attachments it fetches, from either source).
    let got = from_settee.server_dump().await;
    assert_same_dump(&got, &from_server.server_dump().await);
    assert_eq!(got.len(), db.server_dump().await.len());
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// `tests/support/pouch-query.js` against `url` with `reads`.
fn pouch_reads(url: &str, reads: &Value) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new("node")
        .arg(server::repo_root().join("tests/support/pouch-query.js"))
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reads.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pouchdbs_query_and_find_answer_from_serve_as_from_the_server() {
    let (db, _dir, replica) = crate::go_course::course("serve-reads").await;
    let (addr, stop, task) = serve(&replica, config("course")).await;
    let q =
        |view: &str, options: Value| json!({"query": format!("{view}/{view}"), "options": options});
    let reads = json!([
        q("elo", json!({"limit": 5, "startkey": 1000, "descending": true})),
        q("elo", json!({"startkey": 990, "endkey": 1010, "limit": 10, "skip": 20})),
        q("elo", json!({"limit": 1, "descending": true, "startkey": 100000, "include_docs": true})),
        q("getTags", json!({"limit": 3})),
        q("getTags", json!({"keys": ["no-such-card"]})),
        q("cardsByInexperience", json!({"limit": 25})),
        q("nope", json!({})),
        {"find": {"selector": {"docType": "CARD"}, "limit": 50}},
        {"find": {"selector": {"docType": "DISPLAYABLE_DATA", "data.0.data": {"$regex": ".*goroutine.*"}}, "limit": 25}},
        {"find": {"selector": {"docType": "CARD"}, "fields": ["_id", "elo"], "limit": 5}},
    ]);
    let from_settee = pouch_reads(&format!("http://{addr}/course"), &reads);
    let from_server = pouch_reads(&db.url(), &reads);
    assert_eq!(from_settee.len(), reads.as_array().unwrap().len());
    for ((read, got), want) in reads
        .as_array()
        .unwrap()
        .iter()
        .zip(&from_settee)
        .zip(&from_server)
    {
        // The rows and documents; not `warning`s or index details, which
        // differ between the servers' Mango planners.
        for field in ["rows", "total_rows", "docs", "error", "status"] {
            assert_eq!(got.get(field), want.get(field), "{read}: {field}");
        }
    }
    assert_eq!(from_settee[0]["rows"].as_array().unwrap().len(), 5);
    for (i, got) in from_settee.iter().enumerate() {
        match i {
            6 => assert_eq!(got["status"], 404, "a missing design doc"),
            _ => assert!(got.get("error").is_none(), "read {i}: {got}"),
        }
    }
    assert!(
        !from_settee[8]["docs"].as_array().unwrap().is_empty(),
        "goroutine cards"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Reads a streamed answer chunk by chunk until `done` says the text so
/// far is enough (or 10 s pass): what a feed sent, and when.
async fn read_stream(
    url: String,
    done: impl Fn(&str) -> bool,
) -> (reqwest::StatusCode, String, Option<String>) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut resp = resp;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done(&text) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(e)) => panic!("the feed broke: {e}"),
        }
    }
    (status, text, content_type)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_type_and_filter_streams_as_couchdbs_does() {
    let db = TestDb::seeded("serve-feeds", CORPUS).await;
    let filter = "function (doc, req) { return doc.docType === req.query.type; }";
    let (status, body) = db
        .request(
            reqwest::Method::PUT,
            "_design/pick",
            Some(json!({"filters": {"by_type": filter}})),
        )
        .await;
    assert!(status == 201 || status == 200, "{body}");
    let (_d, replica) = temp_replica();
    pull(&replica, &db.remote(), 50, 2).await;
    let (addr, stop, task) = serve(&replica, config("course")).await;
    let base = format!("http://{addr}/course");
    let ids = |feed: &Value| -> Vec<String> {
        feed["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{feed}"))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };

    // Normal, then descending: the same rows, newest first.
    let (_, normal) = http(reqwest::Method::GET, format!("{base}/_changes"), None).await;
    let (_, desc) = http(
        reqwest::Method::GET,
        format!("{base}/_changes?descending=true"),
        None,
    )
    .await;
    let mut reversed = ids(&normal);
    reversed.reverse();
    assert_eq!(ids(&desc), reversed);
    let (_, newest) = http(
        reqwest::Method::GET,
        format!("{base}/_changes?descending=true&limit=1"),
        None,
    )
    .await;
    assert_eq!(newest["last_seq"], json!(replica.update_seq().unwrap()));

    // `_selector` lists what the server's own filtered feed lists.
    let selector = json!({"docType": "TAG"});
    let (status, mine) = http(
        reqwest::Method::POST,
        format!("{base}/_changes?filter=_selector"),
        Some(json!({ "selector": selector })),
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    let theirs = db
        .get_json(&format!(
            "_changes?filter=_selector&selector={}",
            enc(&selector.to_string())
        ))
        .await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert!(ids(&mine).len() >= 5, "{mine}");
    assert_eq!(sorted(ids(&mine)), sorted(ids(&theirs)));
    // With the documents: each the one a GET gives (the matched read is
    // reused), with `conflicts` too (read again with them).
    for extra in ["", "&conflicts=true"] {
        let (status, with_docs) = http(
            reqwest::Method::POST,
            format!("{base}/_changes?filter=_selector&include_docs=true{extra}"),
            Some(json!({ "selector": selector })),
        )
        .await;
        assert_eq!(status, 200, "{with_docs}");
        assert_eq!(ids(&with_docs), ids(&mine), "{extra}");
        for row in with_docs["results"].as_array().unwrap() {
            let id = row["id"].as_str().unwrap();
            let (_, doc) = http(
                reqwest::Method::GET,
                format!("{base}/{}?{}", enc(id), extra.trim_start_matches('&')),
                None,
            )
            .await;
            assert_eq!(row["doc"], doc, "{id}{extra}");
            assert_eq!(row["doc"]["docType"], "TAG");
        }
    }
    // `_view`: the documents the view's map emits for.
    let (_, mapped) = http(
        reqwest::Method::GET,
        format!("{base}/_changes?filter=_view&view=extras/byDocType"),
        None,
    )
    .await;
    let (_, rows) = http(
        reqwest::Method::GET,
        format!("{base}/_design/extras/_view/byDocType"),
        None,
    )
    .await;
    let mut emitted: Vec<String> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    emitted.dedup();
    assert!(!emitted.is_empty());
    assert_eq!(sorted(ids(&mapped)), sorted(emitted));
    let (status, _) = http(
        reqwest::Method::GET,
        format!("{base}/_changes?filter=_view&view=extras/nope"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // A design document's filter function, with the request's query: the
    // server's own filtered feed; it sees tombstones too.
    let (status, mine) = http(
        reqwest::Method::GET,
        format!("{base}/_changes?filter=pick/by_type&type=EXTRA"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    let theirs = db.get_json("_changes?filter=pick/by_type&type=EXTRA").await;
    assert!(ids(&mine).len() >= 3, "{mine}");
    assert_eq!(sorted(ids(&mine)), sorted(ids(&theirs)));
    replica
        .put(
            "_design/gone",
            json!({"filters": {"deleted": "function (doc) { return doc._deleted === true; }"}}),
        )
        .await
        .unwrap();
    let (_, gone) = http(
        reqwest::Method::GET,
        format!("{base}/_changes?filter=gone/deleted"),
        None,
    )
    .await;
    let deleted: Vec<String> = replica
        .changes(0)
        .map(|c| c.unwrap().doc)
        .filter(|d| d.deleted)
        .map(|d| d.id)
        .collect();
    assert!(!deleted.is_empty());
    assert_eq!(sorted(ids(&gone)), sorted(deleted));
    for (path, want) in [
        ("filter=pick/nope", 404),
        ("filter=nope/by_type", 404),
        ("filter=by_type", 400),
    ] {
        let (status, body) = http(
            reqwest::Method::GET,
            format!("{base}/_changes?{path}"),
            None,
        )
        .await;
        assert_eq!(status, want, "{path}: {body}");
    }

    // Continuous: the backlog a row per line, then heartbeats while
    // nothing changes, then a write as it commits, then (limit) the end.
    let now = replica.update_seq().unwrap();
    let backlog = replica.changes(now - 3).count();
    let feed = tokio::spawn(read_stream(
        format!(
            "{base}/_changes?feed=continuous&since={}&heartbeat=200&limit={}",
            now - 3,
            backlog + 1
        ),
        |t| t.contains("last_seq"),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    replica
        .put("while-streaming", json!({"n": 1}))
        .await
        .unwrap();
    let (status, text, content_type) = feed.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let lines: Vec<&str> = text.split('\n').collect();
    let rows: Vec<Value> = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(rows.len(), backlog + 2, "{text}");
    assert_eq!(rows[backlog]["id"], "while-streaming");
    assert_eq!(
        rows[backlog + 1],
        json!({"last_seq": replica.update_seq().unwrap(), "pending": 0})
    );
    assert!(
        lines.iter().filter(|l| l.is_empty()).count() >= 3,
        "heartbeats while idle: {text:?}"
    );
    // A continuous feed with a timeout and no change ends by itself; so
    // does `feed=live`, CouchDB's other name for it.
    for feed in ["continuous", "live"] {
        let (status, text, _) = read_stream(
            format!("{base}/_changes?feed={feed}&since=now&timeout=300"),
            |t| t.contains("last_seq"),
        )
        .await;
        assert_eq!(status, 200, "{feed}: {text}");
        let end: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            end["last_seq"],
            json!(replica.update_seq().unwrap()),
            "{feed}"
        );
    }

    // Eventsource: `data:`/`id:` events, heartbeats as their own event.
    let events = tokio::spawn(read_stream(
        format!("{base}/_changes?feed=eventsource&since=now&heartbeat=200&timeout=1500"),
        |t| t.matches("event: heartbeat").count() >= 2 && t.contains("id: "),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let written = replica.put("as-an-event", json!({"n": 2})).await.unwrap();
    let (_, text, content_type) = events.await.unwrap();
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let event = text
        .split("\n\n")
        .find(|e| e.starts_with("data: "))
        .unwrap_or_else(|| panic!("{text:?}"));
    let (data, id) = event.split_once("\nid: ").unwrap();
    let row: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(row["id"], "as-an-event");
    assert_eq!(id, written.seq.to_string());

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_by_url_stream_with_ranges_and_are_written_as_documents() {
    let db = TestDb::seeded("serve-atts", CORPUS).await;
    let (_d, replica) = temp_replica();
    pull(&replica, &db.remote(), 50, 2).await;
    let (addr, stop, task) = serve(&replica, config("course")).await;
    let base = format!("http://{addr}/course");
    let client = reqwest::Client::new();

    // Every attachment the replica holds reads back byte for byte as the
    // server sends it, whole and by range, tagged with its digest.
    let doc = Query::open(&replica)
        .unwrap()
        .get("x-att-binary", &GetOptions::default())
        .unwrap();
    let (name, stub) = doc["_attachments"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let url = format!("{base}/x-att-binary/{}", enc_att(name));
    let whole = client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", stub["digest"].as_str().unwrap()));
    assert_eq!(
        whole.headers()["content-type"].to_str().unwrap(),
        stub["content_type"].as_str().unwrap()
    );
    let bytes = whole.bytes().await.unwrap();
    let theirs = reqwest::get(format!("{}/x-att-binary/{}", db.url(), enc_att(name)))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, theirs);
    assert!(bytes.len() > 6);
    let part = client
        .get(&url)
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 2-5/{}", bytes.len())
    );
    assert_eq!(part.bytes().await.unwrap(), bytes[2..=5]);
    let beyond = client
        .get(&url)
        .header("range", format!("bytes={}-", bytes.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    let cached = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    // A document is tagged with its revision.
    let got = client
        .get(format!("{base}/x-att-binary"))
        .send()
        .await
        .unwrap();
    let rev = got.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    assert_eq!(rev, doc["_rev"].as_str().unwrap());
    let cached = client
        .get(format!("{base}/x-att-binary"))
        .header("if-none-match", format!("\"{rev}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    // Written by URL: a large attachment (stored in its own file) on a
    // new document, read back across piece boundaries; then deleted.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let put = client
        .put(format!("{base}/by-url/big.bin"))
        .header("content-type", "application/x-test")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let put: Value = put.json().await.unwrap();
    let rev1 = put["rev"].as_str().unwrap().to_owned();
    let again = client
        .put(format!("{base}/by-url/other.txt"))
        .body("no rev")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "an existing document needs its rev");
    let back = client
        .get(format!("{base}/by-url/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.headers()["content-type"], "application/x-test");
    assert_eq!(back.bytes().await.unwrap(), big);
    let middle = client
        .get(format!("{base}/by-url/big.bin"))
        .header("range", "bytes=65000-700000")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(middle, big[65000..=700000]);
    let second = client
        .put(format!("{base}/by-url/note.txt?rev={rev1}"))
        .header("content-type", "text/plain")
        .body("a note")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 201);
    let rev2: Value = second.json().await.unwrap();
    let doc = Query::open(&replica)
        .unwrap()
        .get("by-url", &GetOptions::default())
        .unwrap();
    assert_eq!(doc["_rev"], rev2["rev"]);
    assert_eq!(doc["_attachments"].as_object().unwrap().len(), 2, "{doc}");
    let removed = client
        .delete(format!(
            "{base}/by-url/big.bin?rev={}",
            rev2["rev"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let gone = client
        .get(format!("{base}/by-url/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(
        client
            .get(format!("{base}/by-url/note.txt"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "a note"
    );
    // `open_revs` as CouchDB's replicator asks for it: multipart/mixed,
    // one JSON part per leaf, the same leaves as the JSON answer.
    let url = format!("{base}/x-conflicts3?open_revs=all&revs=true");
    let json_form: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    let multipart = client
        .get(&url)
        .header("accept", "multipart/mixed")
        .send()
        .await
        .unwrap();
    let content_type = multipart.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap_or_else(|| panic!("{content_type}"))
        .trim_matches('"')
        .to_owned();
    assert!(content_type.starts_with("multipart/mixed"));
    let text = multipart.text().await.unwrap();
    assert!(
        text.trim_end().ends_with(&format!("--{boundary}--")),
        "{text}"
    );
    let parts: Vec<Value> = text
        .split(&format!("--{boundary}"))
        .filter_map(|p| p.split_once("\r\n\r\n"))
        .map(|(head, body)| {
            assert!(head.contains("application/json"), "{head}");
            serde_json::from_str(body.trim_end()).unwrap()
        })
        .collect();
    let want: Vec<Value> = json_form
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ok"].clone())
        .collect();
    assert!(want.len() > 1, "a conflicted document: {json_form}");
    assert_eq!(parts, want);

    // Each write went to the outbox for the push.
    assert!(replica.outbox().len().unwrap() >= 3);
    assert!(replica.check().unwrap().is_ok());

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settee_serve_of_a_sync_root_serves_each_database_under_its_name() {
    let a = TestDb::seeded("serve-root-a", &["--cards", "8"]).await;
    let b = TestDb::seeded("serve-root-b", &["--cards", "3", "--extras"]).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let synced = settee(&[
        "sync",
        &server().authed_base(),
        root,
        "--db",
        &a.name,
        "--db",
        &b.name,
    ]);
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );
    let refused = settee(&["serve", root, "--port", "0", "--name", "x"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "--name picks no database of a root"
    );

    let mut child = settee_child(&["serve", root, "--port", "0"]);
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        (0..2)
            .map(|_| {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                line.trim()
                    .strip_prefix("serving ")
                    .unwrap_or(&line)
                    .to_owned()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let base = lines[0].rsplit_once('/').unwrap().0.to_owned();
    let mut names = vec![a.name.clone(), b.name.clone()];
    names.sort();
    let (_, all) = http(reqwest::Method::GET, format!("{base}/_all_dbs"), None).await;
    assert_eq!(all, json!(names));
    for db in [&a, &b] {
        let (status, mine) = http(
            reqwest::Method::GET,
            format!("{base}/{}/_all_docs", enc(&db.name)),
            None,
        )
        .await;
        assert_eq!(status, 200, "{mine}");
        let theirs = db.get_json("_all_docs").await;
        assert_eq!(mine["rows"], theirs["rows"], "{}", db.name);
    }
    let _ = child.kill();
    let _ = child.wait();
}
