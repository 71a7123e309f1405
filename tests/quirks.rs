//! The CouchDB 3 quirks layer (`support::quirks`) does what it claims, so a
//! suite run with `SETTEE_TEST_QUIRKS=couchdb3` really meets CouchDB 3's
//! habits. Each test puts a quirks proxy of its own in front of a PouchDB
//! Server, whatever the knob says: the test server (not behind the
//! process's layer when the knob is set), or, when `COUCHDB_URL` names a
//! real CouchDB, a PouchDB Server started for these tests
//! (`server::layer_upstream`), since the layer in front of CouchDB would
//! test nothing.

use crate::support::proxy::{FaultProxy, Rule};
use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

async fn quirks_proxy() -> FaultProxy {
    let proxy = FaultProxy::start(server::layer_upstream_addr())
        .await
        .expect("start the quirks proxy");
    proxy.set_rules(vec![Rule::couchdb3()]);
    proxy
}

/// A request through `base` as admin, redirects not followed: status,
/// `Location` and the body as JSON (or as a string).
async fn call(method: reqwest::Method, url: &str) -> (u16, Option<String>, Value) {
    call_with(method, url, None).await
}

/// [`call`] with a JSON body.
async fn call_with(
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let s = server::layer_upstream();
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .request(method, url)
        .basic_auth(&s.user, Some(&s.password))
        .header("Accept", "application/json");
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, location, body)
}

#[tokio::test]
async fn an_encoded_design_or_local_id_is_a_redirect_loop() {
    let db = TestDb::new_on(server::layer_upstream(), "quirks-redirect").await;
    db.bulk_docs(vec![json!({"_id": "_design/elo", "views": {}})], true)
        .await;
    let proxy = quirks_proxy().await;
    let base = format!("{}/{}", proxy.url(), enc(&db.name));
    for path in ["_design%2Felo", "%5Fdesign%2Felo", "_local%2Fx"] {
        let (status, location, _) = call(reqwest::Method::GET, &format!("{base}/{path}")).await;
        assert_eq!(status, 301, "{path}");
        assert_eq!(
            location.as_deref(),
            Some(format!("/{}/{path}", enc(&db.name)).as_str()),
            "{path} redirects to itself"
        );
    }
    // A client that follows redirects never gets an answer.
    let s = server::layer_upstream();
    let err = reqwest::Client::new()
        .get(format!("{base}/_design%2Felo"))
        .basic_auth(&s.user, Some(&s.password))
        .send()
        .await
        .expect_err("a redirect loop");
    assert!(err.is_redirect(), "{err}");
    // The slash kept: the document.
    let (status, _, doc) = call(reqwest::Method::GET, &format!("{base}/_design/elo")).await;
    assert_eq!((status, &doc["_id"]), (200, &json!("_design/elo")), "{doc}");
}

#[tokio::test]
async fn changes_pages_leave_id_order_and_resume_from_opaque_seqs() {
    let db = TestDb::new_on(server::layer_upstream(), "quirks-changes").await;
    let ids: Vec<String> = (0..30).map(|i| format!("d{i:02}")).collect();
    db.bulk_docs(ids.iter().map(|id| json!({"_id": id})).collect(), true)
        .await;
    let proxy = quirks_proxy().await;
    let feed = format!("{}/{}/_changes", proxy.url(), enc(&db.name));
    let page_ids = |page: &Value| -> Vec<String> {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, _, first) = call(reqwest::Method::GET, &format!("{feed}?limit=10")).await;
    assert_eq!(status, 200, "{first}");
    let first_ids = page_ids(&first);
    let mut sorted = first_ids.clone();
    sorted.sort();
    assert_ne!(first_ids, sorted, "the page comes out of id order");
    let (_, _, again) = call(reqwest::Method::GET, &format!("{feed}?limit=10")).await;
    assert_eq!(page_ids(&again), first_ids, "the order is stable");
    for row in first["results"].as_array().unwrap() {
        assert!(quirks::is_opaque(&row["seq"]), "{row}");
    }
    assert!(quirks::is_opaque(&first["last_seq"]), "{first}");

    // Resuming from any row's seq loses none of the rows after it.
    let rows = first["results"].as_array().unwrap();
    for (i, row) in rows.iter().enumerate() {
        let since = row["seq"].as_str().unwrap();
        let (_, _, rest) = call(reqwest::Method::GET, &format!("{feed}?since={since}")).await;
        let rest: BTreeSet<String> = page_ids(&rest).into_iter().collect();
        for later in &first_ids[i + 1..] {
            assert!(rest.contains(later), "since row {i}'s seq loses {later}");
        }
    }

    // Paging by last_seq covers every change exactly once, and a later
    // page holds ids that sort before some of an earlier page's.
    let mut seen = first_ids;
    let mut since = first["last_seq"].as_str().unwrap().to_owned();
    let mut interleaved = false;
    loop {
        let (status, _, page) = call(
            reqwest::Method::GET,
            &format!("{feed}?limit=10&since={since}"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let got = page_ids(&page);
        if got.is_empty() {
            break;
        }
        let earlier_max = seen.iter().max().unwrap().clone();
        interleaved |= got.iter().any(|id| *id < earlier_max);
        seen.extend(got);
        since = page["last_seq"].as_str().unwrap().to_owned();
    }
    assert!(interleaved, "pages come out of id order across pages too");
    seen.sort();
    assert_eq!(seen, ids, "every change exactly once");
}

#[tokio::test]
async fn instance_start_time_is_each_databases_creation_second() {
    let proxy = quirks_proxy().await;
    let (status, _, welcome) = call(reqwest::Method::GET, &format!("{}/", proxy.url())).await;
    assert_eq!(status, 200);
    assert_eq!(welcome["couchdb"], json!("Welcome"), "{welcome}");
    assert!(
        welcome["version"].as_str().unwrap().starts_with("3."),
        "{welcome}"
    );

    let stamp = |name: &str| {
        let url = format!("{}/{}", proxy.url(), enc(name));
        async move {
            let (status, _, info) = call(reqwest::Method::GET, &url).await;
            assert_eq!(status, 200, "{info}");
            assert!(quirks::is_opaque(&info["update_seq"]), "{info}");
            let s = info["instance_start_time"].as_str().unwrap().to_owned();
            s.parse::<u64>().unwrap_or_else(|e| panic!("{s:?}: {e}"))
        }
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let a = TestDb::new_on(server::layer_upstream(), "quirks-ist-a").await;
    let url_a = format!("{}/{}", proxy.url(), enc(&a.name));
    // Created again through this proxy: it saw the creation, and dates it
    // in whole seconds, as CouchDB 3.4.3's shard suffix does.
    assert_eq!(call(reqwest::Method::DELETE, &url_a).await.0, 200);
    let before = now();
    assert_eq!(call(reqwest::Method::PUT, &url_a).await.0, 201);
    let after = now();
    let first = stamp(&a.name).await;
    assert!(
        (before..=after).contains(&first),
        "{before} <= {first} <= {after}"
    );
    assert_eq!(
        stamp(&a.name).await,
        first,
        "stable while the database lives"
    );

    // Recreated within one second: the same value (CouchDB cannot tell).
    // Recreated in a later second: a new one.
    let recreate = || async {
        assert_eq!(call(reqwest::Method::DELETE, &url_a).await.0, 200);
        assert_eq!(call(reqwest::Method::PUT, &url_a).await.0, 201);
    };
    loop {
        let second = now();
        recreate().await;
        let x = stamp(&a.name).await;
        recreate().await;
        let y = stamp(&a.name).await;
        // Both inside one second (else try again: a boundary fell between).
        if now() == second {
            assert_eq!((x, y), (second, second), "recreated within one second");
            break;
        }
    }
    let old = stamp(&a.name).await;
    while now() == old {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    recreate().await;
    assert!(
        stamp(&a.name).await > old,
        "new when recreated a second later"
    );
}

#[tokio::test]
async fn a_since_from_a_previous_instance_rewinds_to_the_start() {
    let db = TestDb::new_on(server::layer_upstream(), "quirks-rewind").await;
    let proxy = quirks_proxy().await;
    let url = format!("{}/{}", proxy.url(), enc(&db.name));
    // Created through the proxy, so each instance is told apart even
    // within one second.
    assert_eq!(call(reqwest::Method::DELETE, &url).await.0, 200);
    assert_eq!(call(reqwest::Method::PUT, &url).await.0, 201);
    db.bulk_docs(
        (0..20)
            .map(|i| json!({"_id": format!("old-{i:02}")}))
            .collect(),
        true,
    )
    .await;
    let (_, _, feed) = call(reqwest::Method::GET, &format!("{url}/_changes")).await;
    let old_last = feed["last_seq"].as_str().unwrap().to_owned();
    let (_, _, rest) = call(
        reqwest::Method::GET,
        &format!("{url}/_changes?since={old_last}"),
    )
    .await;
    assert_eq!(rest["results"].as_array().unwrap().len(), 0, "{rest}");

    assert_eq!(call(reqwest::Method::DELETE, &url).await.0, 200);
    assert_eq!(call(reqwest::Method::PUT, &url).await.0, 201);
    db.bulk_docs(
        (0..30)
            .map(|i| json!({"_id": format!("new-{i:02}")}))
            .collect(),
        true,
    )
    .await;
    let (status, _, again) = call(
        reqwest::Method::GET,
        &format!("{url}/_changes?since={old_last}"),
    )
    .await;
    assert_eq!(status, 200, "not refused: {again}");
    let rows = again["results"].as_array().unwrap();
    assert_eq!(rows.len(), 30, "every row from the start: {again}");
    assert!(quirks::is_opaque(&again["last_seq"]), "{again}");
}

#[tokio::test]
async fn the_knob_puts_every_test_behind_the_layer() {
    let db = TestDb::new("quirks-knob").await;
    db.bulk_docs(vec![json!({"_id": "a"})], true).await;
    let s = server();
    let welcome: Value = reqwest::Client::new()
        .get(format!("{}/", s.base))
        .basic_auth(&s.user, Some(&s.password))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let feed = db.get_json("_changes").await;
    if quirks::enabled() {
        assert_eq!(welcome["version"], json!("3.4.3"), "{welcome}");
        assert!(quirks::is_opaque(&feed["last_seq"]), "{feed}");
    } else {
        // The server itself: none of the layer's sequences, and (but on a
        // real CouchDB, which is what the layer imitates) not its welcome.
        assert!(!quirks::is_opaque(&feed["last_seq"]), "{feed}");
        if !s.is_couchdb {
            assert_ne!(welcome["version"], json!("3.4.3"), "{welcome}");
        }
    }
}

#[tokio::test]
async fn compressible_attachments_report_a_gzip_digest_and_accept_it_back() {
    let db = TestDb::new_on(server::layer_upstream(), "quirks-gzip").await;
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let atts = json!({
        "t.txt": {"content_type": "text/plain", "data": b64(b"hello")},
        "j.json": {"content_type": "application/json; charset=utf-8", "data": b64(b"{}")},
        "b.bin": {"content_type": "application/octet-stream", "data": b64(b"hello")},
    });
    db.bulk_docs(
        vec![
            json!({"_id": "a", "_attachments": atts}),
            json!({"_id": "same", "_attachments": {"t.txt": atts["t.txt"]}}),
        ],
        true,
    )
    .await;
    let proxy = quirks_proxy().await;
    let base = format!("{}/{}", proxy.url(), enc(&db.name));
    let get = |path: String| {
        let url = format!("{base}/{path}");
        async move {
            let (status, _, body) = call(reqwest::Method::GET, &url).await;
            assert_eq!(status, 200, "{url}: {body}");
            body
        }
    };

    let doc = get("a".into()).await;
    let a = &doc["_attachments"];
    let gzip = a["t.txt"]["digest"].as_str().unwrap().to_owned();
    assert!(gzip.starts_with("md5-"), "{a}");
    assert_ne!(gzip, md5_digest(b"hello"), "not the MD5 of the bytes: {a}");
    assert_ne!(a["j.json"]["digest"], json!(md5_digest(b"{}")), "{a}");
    assert_eq!(a["b.bin"]["digest"], json!(md5_digest(b"hello")), "{a}");
    assert!(a["t.txt"].get("encoding").is_none(), "only when asked: {a}");
    // The digest is the MD5 of the gzip bytes CouchDB answers to a client
    // that accepts them, which gunzip to the identity bytes.
    let att = |name: &'static str, gzip_ok: bool| {
        let url = format!("{base}/a/{name}");
        async move {
            let s = server::layer_upstream();
            let mut req = reqwest::Client::new()
                .get(&url)
                .basic_auth(&s.user, Some(&s.password));
            if gzip_ok {
                req = req.header("Accept-Encoding", "gzip, deflate");
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(resp.status().as_u16(), 200, "{url}");
            let encoding = resp
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (encoding, resp.bytes().await.unwrap().to_vec())
        }
    };
    let (encoding, gz) = att("t.txt", true).await;
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(
        md5_digest(&gz),
        gzip,
        "the digest is the MD5 of the gzip bytes"
    );
    let mut identity = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut identity)
        .expect("gunzip the attachment");
    assert_eq!(identity, b"hello");
    assert_eq!(att("t.txt", false).await, (None, b"hello".to_vec()));
    let (encoding, json_gz) = att("j.json", true).await;
    assert_eq!(
        (encoding.as_deref(), md5_digest(&json_gz)),
        (
            Some("gzip"),
            a["j.json"]["digest"].as_str().unwrap().to_owned()
        )
    );
    assert_eq!(
        att("b.bin", true).await,
        (None, b"hello".to_vec()),
        "not compressible"
    );
    // Stable, and the same for the same bytes in another document.
    assert_eq!(
        get("a".into()).await["_attachments"]["t.txt"]["digest"],
        json!(gzip)
    );
    assert_eq!(
        get("same".into()).await["_attachments"]["t.txt"]["digest"],
        json!(gzip)
    );

    let info = get("a?att_encoding_info=true".into()).await;
    let t = &info["_attachments"]["t.txt"];
    assert_eq!(
        (&t["digest"], &t["encoding"]),
        (&json!(gzip), &json!("gzip")),
        "{t}"
    );
    assert_eq!(t["encoded_length"], json!(gz.len()), "{t}");
    assert_eq!(t["length"], json!(5), "the identity length: {t}");
    assert!(
        info["_attachments"]["b.bin"].get("encoding").is_none(),
        "{info}"
    );

    // Inline data is the identity bytes, under the gzip digest.
    let inline = get("a?attachments=true".into()).await;
    assert_eq!(
        inline["_attachments"]["t.txt"]["data"],
        json!(b64(b"hello"))
    );
    assert_eq!(inline["_attachments"]["t.txt"]["digest"], json!(gzip));

    // Every answer that carries documents says the same.
    let rev = doc["_rev"].as_str().unwrap().to_owned();
    let open_revs = get("a?open_revs=all&att_encoding_info=true".into()).await;
    let (_, _, bulk) = call_with(
        reqwest::Method::POST,
        &format!("{base}/_bulk_get?revs=true&att_encoding_info=true"),
        Some(json!({"docs": [{"id": "a", "rev": rev}]})),
    )
    .await;
    let changes = get("_changes?include_docs=true".into()).await;
    let all_docs = get("_all_docs?include_docs=true".into()).await;
    let found = [
        open_revs[0]["ok"].clone(),
        bulk["results"][0]["docs"][0]["ok"].clone(),
        changes["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "a")
            .unwrap()["doc"]
            .clone(),
        all_docs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "a")
            .unwrap()["doc"]
            .clone(),
    ];
    for (i, d) in found.iter().enumerate() {
        assert_eq!(
            d["_attachments"]["t.txt"]["digest"],
            json!(gzip),
            "answer {i}: {d}"
        );
        assert_eq!(
            d["_attachments"]["b.bin"]["digest"],
            json!(md5_digest(b"hello")),
            "answer {i}: {d}"
        );
    }
    assert_eq!(
        open_revs[0]["ok"]["_attachments"]["t.txt"]["encoding"],
        json!("gzip")
    );

    // The stubs written back as read: accepted, as CouchDB ignores their
    // digests, and the bytes are still the identity ones.
    let mut edit = doc.clone();
    edit["n"] = json!(2);
    let (status, _, put) = call_with(reqwest::Method::PUT, &format!("{base}/a"), Some(edit)).await;
    assert_eq!(status, 201, "{put}");
    assert_eq!(db.attachment("a", "t.txt").await, b"hello");
}

#[tokio::test]
async fn a_repeated_key_in_a_view_query_gets_its_rows_merged() {
    let db = TestDb::new_on(server::layer_upstream(), "quirks-keys").await;
    db.bulk_docs(
        vec![
            json!({"_id": "_design/t", "views": {"t": {"map": "function (doc) { if (doc.k) { emit(doc.k, null); } }"}}}),
            json!({"_id": "chords", "k": "c0"}),
            json!({"_id": "logic", "k": "c0"}),
            json!({"_id": "x", "k": "c10"}),
        ],
        true,
    )
    .await;
    let proxy = quirks_proxy().await;
    let view = format!("{}/{}/_design/t/_view/t", proxy.url(), enc(&db.name));
    let ids = |answer: &Value| -> Vec<String> {
        answer["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let keys = json!(["c10", "missing", "c0", "c0"]);
    let (status, _, posted) =
        call_with(reqwest::Method::POST, &view, Some(json!({"keys": keys}))).await;
    assert_eq!(status, 200, "{posted}");
    assert_eq!(ids(&posted), ["x", "chords", "chords", "logic", "logic"]);
    let url = format!("{view}?keys={}", enc(&keys.to_string()));
    let (_, _, got) = call(reqwest::Method::GET, &url).await;
    assert_eq!(ids(&got), ids(&posted), "GET with keys= too");
    let (_, _, page) = call_with(
        reqwest::Method::POST,
        &format!("{view}?skip=2&limit=2"),
        Some(json!({"keys": keys})),
    )
    .await;
    assert_eq!(
        ids(&page),
        ["chords", "logic"],
        "skip and limit after the merge"
    );
    // Keys listed once: the server's answer as it is.
    let (_, _, once) = call_with(
        reqwest::Method::POST,
        &view,
        Some(json!({"keys": ["c0", "c10"]})),
    )
    .await;
    assert_eq!(ids(&once), ["chords", "logic", "x"]);
}
