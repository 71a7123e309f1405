//! Shared test support: the real server, one fresh database and one temp
//! replica directory per test, corpus seeding, reading back what the server
//! holds (independently of settee's code), and running the `settee` binary.

mod ancestors;
pub mod proxy;
pub mod quirks;
pub mod server;

use serde_json::{json, Value};
use settee::{
    Endpoint, PullConfig, PullResult, Remote, RemoteConfig, Replica, ReplicaConfig, RetryPolicy,
};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use server::server;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A database of its own on the test server, deleted when dropped.
pub struct TestDb {
    pub name: String,
    http: reqwest::Client,
    /// The server it lives on: [`server()`] but for the quirks layer's own
    /// tests ([`server::layer_upstream`]).
    server: &'static server::Server,
}

impl TestDb {
    /// Creates an empty database named after the test.
    pub async fn new(tag: &str) -> TestDb {
        TestDb::new_on(server(), tag).await
    }

    /// Creates an empty database named after the test on `server`.
    pub async fn new_on(server: &'static server::Server, tag: &str) -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("settee-t{}-{n}-{tag}", std::process::id()).to_lowercase();
        let db = TestDb {
            name,
            http: reqwest::Client::new(),
            server,
        };
        let (status, body) = db.request(reqwest::Method::PUT, "", None).await;
        assert!(
            status == 201 || status == 202,
            "create {}: {status} {body}",
            db.name
        );
        db
    }

    /// Creates a database and seeds it with `fixtures/seed-course.mjs`.
    pub async fn seeded(tag: &str, seed_args: &[&str]) -> TestDb {
        let db = TestDb::new(tag).await;
        db.seed(seed_args);
        db
    }

    /// Runs the fixture generator against this database.
    pub fn seed(&self, args: &[&str]) {
        let out = Command::new("node")
            .arg(server::repo_root().join("fixtures/seed-course.mjs"))
            .args(["--url", &self.server.authed_base(), "--db", &self.name])
            .args(args)
            .output()
            .expect("run node fixtures/seed-course.mjs");
        assert!(
            out.status.success(),
            "seeding {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `http://admin:pw@host/db`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server.authed_base(), enc(&self.name))
    }

    /// The database URL through another server root (a proxy), with credentials.
    pub fn url_via(&self, base: &str) -> String {
        let s = self.server;
        format!(
            "{}/{}",
            server::with_userinfo(base, &server::userinfo(&s.user, &s.password)),
            enc(&self.name)
        )
    }

    pub fn remote(&self) -> Remote {
        remote_for(&self.url(), RetryPolicy::with_retries(2))
    }

    /// A fault-injecting proxy in front of the test server.
    pub async fn behind_proxy(&self) -> proxy::FaultProxy {
        proxy::FaultProxy::start(server::server_addr())
            .await
            .expect("start the fault proxy")
    }

    /// A client for this database that goes through `proxy`.
    pub fn remote_via(&self, proxy: &proxy::FaultProxy, retry: RetryPolicy) -> Remote {
        remote_for(&self.url_via(&proxy.url()), retry)
    }

    /// Sends a request to the database (path relative to it) as admin.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let s = self.server;
        let url = if path.is_empty() {
            format!("{}/{}", s.base, enc(&self.name))
        } else {
            format!("{}/{}/{}", s.base, enc(&self.name), path)
        };
        let mut req = self
            .http
            .request(method, &url)
            .basic_auth(&s.user, Some(&s.password))
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A query with CouchDB's parameters given as a JSON object, as a
    /// client sends them: `keys` in a POST body, doc ids bare and every
    /// other value as JSON in the query string. The status and the body.
    pub async fn query_with(&self, path: &str, params: &Value) -> (u16, Value) {
        let mut qs = Vec::new();
        let mut keys = None;
        for (k, v) in params.as_object().expect("params object") {
            match (k.as_str(), v) {
                ("keys", _) => keys = Some(v.clone()),
                (k, Value::String(id)) if k.ends_with("docid") => {
                    qs.push(format!("{k}={}", enc(id)))
                }
                _ => qs.push(format!("{k}={}", enc(&v.to_string()))),
            }
        }
        let path = format!("{path}?{}", qs.join("&"));
        match keys {
            Some(keys) => {
                self.request(reqwest::Method::POST, &path, Some(json!({ "keys": keys })))
                    .await
            }
            None => self.request(reqwest::Method::GET, &path, None).await,
        }
    }

    /// Deletes revision `rev` of document `id` (a new tombstone revision).
    pub async fn delete_doc(&self, id: &str, rev: &str) {
        let path = format!("{}?rev={}", enc_id(id), enc(rev));
        let (status, body) = self.request(reqwest::Method::DELETE, &path, None).await;
        assert_eq!(status, 200, "DELETE {id}: {body}");
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `_bulk_docs`, asserting every row succeeded.
    pub async fn bulk_docs(&self, docs: Vec<Value>, new_edits: bool) -> Vec<Value> {
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                "_bulk_docs",
                Some(json!({"docs": docs, "new_edits": new_edits})),
            )
            .await;
        assert!(
            status == 201 || status == 200,
            "_bulk_docs: {status} {body}"
        );
        let rows = body.as_array().cloned().unwrap_or_default();
        for row in &rows {
            assert!(row.get("error").is_none(), "_bulk_docs row failed: {row}");
        }
        rows
    }

    /// The server's URL of attachment `name` of document `id`.
    fn attachment_url(&self, id: &str, name: &str) -> String {
        let s = self.server;
        format!(
            "{}/{}/{}/{}",
            s.base,
            enc(&self.name),
            enc_id(id),
            enc_att(name)
        )
    }

    /// Attachment bytes straight from the server.
    pub async fn attachment(&self, id: &str, name: &str) -> Vec<u8> {
        self.attachment_bytes(self.attachment_url(id, name)).await
    }

    /// Attachment bytes of revision `rev` straight from the server.
    pub async fn attachment_at(&self, id: &str, name: &str, rev: &str) -> Vec<u8> {
        let url = format!("{}?rev={}", self.attachment_url(id, name), enc(rev));
        self.attachment_bytes(url).await
    }

    /// The body of a `GET url` that must answer 200, as admin.
    async fn attachment_bytes(&self, url: String) -> Vec<u8> {
        let s = self.server;
        let resp = self
            .http
            .get(&url)
            .basic_auth(&s.user, Some(&s.password))
            .send()
            .await
            .expect("attachment GET");
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        resp.bytes().await.expect("attachment body").to_vec()
    }

    /// A document as the server shows it (`path`, relative to the database,
    /// with or without a query), its attachment stubs as a replica holds
    /// them: the digest of an attachment the server stored encoded is the
    /// MD5 of its identity bytes, read back from the server.
    ///
    /// CouchDB stores compressible attachments (`text/*`, JSON, …) gzipped
    /// and digests the gzip bytes; a replica digests the bytes it holds
    /// (docs/design.md, "Attachment digests"). The server says which are
    /// encoded when asked with `att_encoding_info=true`; PouchDB Server
    /// never encodes, and there this is plain `GET`.
    pub async fn get_doc_as_held(&self, path: &str) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut doc = self
            .get_json(&format!("{path}{sep}att_encoding_info=true"))
            .await;
        self.digests_as_held(&mut doc).await;
        doc
    }

    /// Rewrites the stubs of one revision as [`TestDb::get_doc_as_held`]
    /// describes, dropping `encoding` and `encoded_length`.
    pub async fn digests_as_held(&self, doc: &mut Value) {
        let (Some(id), Some(rev)) = (doc["_id"].as_str(), doc["_rev"].as_str()) else {
            return;
        };
        let (id, rev) = (id.to_owned(), rev.to_owned());
        let Some(atts) = doc.get_mut("_attachments").and_then(Value::as_object_mut) else {
            return;
        };
        for (name, stub) in atts.iter_mut() {
            let Some(stub) = stub.as_object_mut() else {
                continue;
            };
            stub.remove("encoded_length");
            if stub.remove("encoding").is_some() {
                let bytes = self.attachment_at(&id, name, &rev).await;
                stub.insert("digest".into(), Value::String(md5_digest(&bytes)));
            }
        }
    }

    /// Stores `bytes` as attachment `name` of a new document `id`, straight
    /// on the server (a raw PUT: no base64 copy in a JSON body).
    pub async fn put_attachment(&self, id: &str, name: &str, bytes: &[u8]) {
        let s = self.server;
        let url = self.attachment_url(id, name);
        let resp = self
            .http
            .put(&url)
            .basic_auth(&s.user, Some(&s.password))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("attachment PUT");
        assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    }

    /// Every document id in the server's `_changes` feed, sorted.
    pub async fn changed_ids(&self) -> Vec<String> {
        let feed = self.get_json("_changes?style=all_docs").await;
        let mut ids: Vec<String> = feed["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// What the server holds, one value per id of `_changes`, as CouchDB
    /// shows it with `?conflicts=true&deleted_conflicts=true`: read from the
    /// server, never computed by settee. The digest of an attachment the
    /// server stored encoded is that of its identity bytes, as a replica
    /// holds it ([`TestDb::digests_as_held`]). PouchDB Server has no
    /// `deleted_conflicts` and orders `_conflicts` its own way, so there the
    /// lists come from `open_revs=all` and CouchDB's documented order
    /// (generation, then revision hash, descending).
    pub async fn server_dump(&self) -> Vec<Value> {
        let ids = self.changed_ids().await;
        let (_, all) = self
            .request(
                reqwest::Method::POST,
                "_all_docs",
                Some(json!({"keys": ids})),
            )
            .await;
        let winners: BTreeMap<String, (String, bool)> = all["rows"]
            .as_array()
            .expect("_all_docs rows")
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().expect("key").to_owned(),
                    (
                        r["value"]["rev"].as_str().expect("value.rev").to_owned(),
                        r["value"]["deleted"].as_bool().unwrap_or(false),
                    ),
                )
            })
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let (winner, deleted) = winners[&id].clone();
            let leaves = self
                .get_json(&format!(
                    "{}?open_revs=all&att_encoding_info=true",
                    enc_id(&id)
                ))
                .await;
            let mut leaves: Vec<(u64, String, bool, Value)> = leaves
                .as_array()
                .expect("open_revs array")
                .iter()
                .filter_map(|l| l.get("ok"))
                .map(|d| {
                    let rev = d["_rev"].as_str().expect("_rev").to_owned();
                    let (pos, _) = rev.split_once('-').expect("rev shape");
                    (
                        pos.parse().expect("pos"),
                        rev,
                        d["_deleted"] == json!(true),
                        d.clone(),
                    )
                })
                .collect();
            leaves.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
            let others = |want_deleted: bool| -> Vec<Value> {
                leaves
                    .iter()
                    .filter(|l| l.2 == want_deleted && l.1 != winner)
                    .map(|l| Value::String(l.1.clone()))
                    .collect()
            };
            let mut doc = if deleted {
                leaves
                    .iter()
                    .find(|l| l.1 == winner)
                    .expect("winner among leaves")
                    .3
                    .clone()
            } else {
                self.get_json(&format!(
                    "{}?conflicts=true&deleted_conflicts=true&att_encoding_info=true",
                    enc_id(&id)
                ))
                .await
            };
            // The CouchDB fact, not a PouchDB habit: an attachment stored
            // encoded is digested by a replica from its identity bytes.
            self.digests_as_held(&mut doc).await;
            let obj = doc.as_object_mut().expect("doc object");
            // CouchDB reports both lists for live documents; trust it there.
            if !self.server.is_couchdb || deleted {
                obj.remove("_conflicts");
                obj.remove("_deleted_conflicts");
                for (field, list) in [
                    ("_conflicts", others(false)),
                    ("_deleted_conflicts", others(true)),
                ] {
                    if !list.is_empty() {
                        obj.insert(field.into(), Value::Array(list));
                    }
                }
            }
            out.push(doc);
        }
        out
    }
}

/// A user of the test server with a long random password, member of one
/// test database: a credential that no document, log line or answer holds
/// by chance (a real server's admin password may be `admin`, a substring of
/// every security object's `admins` field). Deleted when dropped.
pub struct TestUser {
    pub name: String,
    pub password: String,
    server: &'static server::Server,
}

impl TestDb {
    /// Creates a user (`PUT /_users/org.couchdb.user:NAME`, as CouchDB and
    /// PouchDB Server both take it) and makes it the database's only member
    /// (`_security`; CouchDB 3 databases are admin-only by default).
    pub async fn member(&self) -> TestUser {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("settee-u{}-{n}", std::process::id());
        let password = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let s = self.server;
        let url = format!(
            "{}/_users/{}",
            s.base,
            enc(&format!("org.couchdb.user:{name}"))
        );
        let resp = self
            .http
            .put(&url)
            .basic_auth(&s.user, Some(&s.password))
            .json(&json!({"name": name, "password": password, "roles": [], "type": "user"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        assert!(
            status == 201 || status == 202,
            "create user {name}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
        let user = TestUser {
            name,
            password,
            server: s,
        };
        let security = json!({
            "admins": {"names": [], "roles": []},
            "members": {"names": [user.name], "roles": []},
        });
        let (status, body) = self
            .request(reqwest::Method::PUT, "_security", Some(security))
            .await;
        assert_eq!(status, 200, "_security: {body}");
        user
    }

    /// The database's URL under `base`, with `user`'s credentials.
    pub fn url_as(&self, base: &str, user: &TestUser) -> String {
        format!(
            "{}/{}",
            server::with_userinfo(base, &server::userinfo(&user.name, &user.password)),
            enc(&self.name)
        )
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let s = self.server;
        let url = format!(
            "{}/_users/{}",
            s.base,
            enc(&format!("org.couchdb.user:{}", self.name))
        );
        let (user, pw) = (s.user.clone(), s.password.clone());
        // Best effort, on a thread of its own: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let http = reqwest::Client::new();
                let doc: Value = http
                    .get(&url)
                    .basic_auth(&user, Some(&pw))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let rev = doc["_rev"].as_str()?;
                http.delete(format!("{url}?rev={rev}"))
                    .basic_auth(&user, Some(&pw))
                    .send()
                    .await
                    .ok()
            })
        })
        .join();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let s = self.server;
        let url = format!("{}/{}", s.base, enc(&self.name));
        let (user, pw) = (s.user.clone(), s.password.clone());
        // Best effort, on a thread of its own: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(
                reqwest::Client::new()
                    .delete(&url)
                    .basic_auth(user, Some(pw))
                    .send(),
            )
            .ok()
        })
        .join();
    }
}

/// What a path segment escapes: everything but RFC 3986's unreserved
/// characters, as `src/remote/endpoint.rs` does (CouchDB decodes the rest,
/// but a real CouchDB routes on the raw path, so the two must agree).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `md5-<base64 MD5 of bytes>`: a CouchDB digest of unencoded bytes, and
/// the one a replica gives the bytes it holds.
pub fn md5_digest(bytes: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    format!(
        "md5-{}",
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
    )
}

/// Percent-encodes one path segment (a database name, a query value).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// The URL path of a document id, as CouchDB routes it: `_design/x` and
/// `_local/x` keep their slash (written `%2F` CouchDB answers them with a
/// redirect loop); every other id is one escaped segment.
pub fn enc_id(id: &str) -> String {
    for prefix in ["_design/", "_local/"] {
        if let Some(rest) = id.strip_prefix(prefix) {
            return format!("{prefix}{}", enc(rest));
        }
    }
    enc(id)
}

/// The URL path of an attachment name: a `/` inside it is kept (CouchDB
/// allows names that look like paths), each part escaped.
pub fn enc_att(name: &str) -> String {
    name.split('/').map(enc).collect::<Vec<_>>().join("/")
}

pub fn remote_for(url: &str, retry: RetryPolicy) -> Remote {
    Remote::new(
        Endpoint::parse(url).expect("valid url"),
        RemoteConfig::default().with_retry(retry),
    )
    .expect("remote")
}

/// A fresh replica in its own temp directory.
pub fn temp_replica() -> (tempfile::TempDir, Replica) {
    let dir = tempfile::tempdir().expect("tempdir");
    let replica =
        Replica::open(dir.path().join("replica"), ReplicaConfig::default()).expect("open replica");
    (dir, replica)
}

pub async fn pull(
    replica: &Replica,
    remote: &Remote,
    batch_size: usize,
    batches_limit: usize,
) -> PullResult {
    settee::pull(replica, remote, &pull_config(batch_size, batches_limit))
        .await
        .unwrap_or_else(|e| panic!("pull failed: {e}"))
}

/// The replica as `settee dump` prints it, computed through the library.
pub fn replica_dump(replica: &Replica) -> Vec<Value> {
    replica
        .docs(..)
        .map(|d| {
            let d = d.expect("doc info");
            replica
                .get(&d.id)
                .expect("get")
                .expect("doc")
                .to_json_with_conflicts()
        })
        .collect()
}

/// Asserts two dumps are equal line by line, naming the first difference.
pub fn assert_same_dump(got: &[Value], want: &[Value]) {
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "first differing document: {}", w["_id"]);
    }
    let ids = |d: &[Value]| d.iter().map(|v| v["_id"].to_string()).collect::<Vec<_>>();
    assert_eq!(ids(got), ids(want), "the dumps list different documents");
}

/// Runs the `settee` binary.
pub fn settee(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_settee"))
        .args(args)
        .env("RUST_LOG", "warn")
        // It would override the password of the test server's URL.
        .env_remove("SETTEE_PASSWORD")
        .output()
        .expect("run settee")
}

/// Starts the `settee` binary, its output piped (read it with
/// `wait_with_output`).
pub fn settee_child(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_settee"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("SETTEE_PASSWORD")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start settee")
}

/// Ctrl-C for a child process (SIGINT).
pub fn interrupt(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -INT {}", child.id());
}

/// The dump printed by `settee dump DIR`, parsed.
pub fn cli_dump(dir: &std::path::Path) -> Vec<Value> {
    let out = settee(&["dump", dir.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "settee dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dump line is JSON"))
        .collect()
}

impl TestDb {
    /// Checks that `checkpoint` (a `last_seq` the replica stored) is not
    /// ahead of the replica's data: every change row of the server's feed up
    /// to it has all its revisions in the replica. Returns how many rows of
    /// `_changes?style=all_docs` the checkpoint covers (0 for none).
    ///
    /// On PouchDB Server the checkpoint is a sequence of the full feed. On
    /// CouchDB (and under the quirks layer) sequences are opaque and rows
    /// are not in sequence order (a row's seq need not cover the rows
    /// before it), so the covered rows are those missing from the feed read
    /// again `since` the checkpoint.
    pub async fn check_checkpoint_not_ahead(
        &self,
        replica: &settee::Replica,
        checkpoint: &Value,
    ) -> usize {
        let feed = self.get_json("_changes?style=all_docs").await;
        let rows = feed["results"].as_array().unwrap();
        let in_seq_order = !server().seqs_are_opaque();
        let position = rows.iter().position(|r| r["seq"] == *checkpoint);
        let covered: Vec<&Value> = match position.filter(|_| in_seq_order) {
            Some(upto) => rows[..=upto].iter().collect(),
            None => {
                assert!(
                    !in_seq_order,
                    "checkpoint {checkpoint} is not a sequence of the feed"
                );
                let since = match checkpoint {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let rest = self
                    .get_json(&format!("_changes?style=all_docs&since={}", enc(&since)))
                    .await;
                let pending: std::collections::BTreeSet<String> = rest["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned())
                    .collect();
                rows.iter()
                    .filter(|r| !pending.contains(r["id"].as_str().unwrap()))
                    .collect()
            }
        };
        for row in &covered {
            let id = row["id"].as_str().unwrap();
            let revs: Vec<settee::Rev> = row["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["rev"].as_str().unwrap().parse().unwrap())
                .collect();
            assert!(
                replica.missing_revs(id, &revs).unwrap().is_empty(),
                "checkpoint {checkpoint} covers {id}, which the replica lacks"
            );
        }
        covered.len()
    }

    /// The number of rows in the server's `_changes?style=all_docs`.
    pub async fn feed_len(&self) -> usize {
        self.get_json("_changes?style=all_docs").await["results"]
            .as_array()
            .unwrap()
            .len()
    }
}

impl TestDb {
    /// Writes `n` documents `big-000`… of about 100 KB each, `per_request`
    /// per `_bulk_docs`.
    pub async fn seed_big_docs(&self, n: usize, per_request: usize) {
        let filler = "x".repeat(100 * 1024);
        let docs: Vec<_> = (0..n)
            .map(|i| serde_json::json!({"_id": format!("big-{i:03}"), "text": filler}))
            .collect();
        for chunk in docs.chunks(per_request) {
            self.bulk_docs(chunk.to_vec(), true).await;
        }
    }
}

/// [`pull_config`] reading the feed as pages (one `_changes` request per
/// batch), for tests of the paged feed's own behaviour (requests per page,
/// a page held or failed at the proxy).
pub fn paged_config(batch_size: usize, batches_limit: usize) -> PullConfig {
    PullConfig::builder()
        .batch_size(batch_size)
        .batches_limit(batches_limit)
        .feed(settee::replicate::Feed::Paged)
        .build()
        .expect("pull settings in range")
}

/// Pull settings with `batch_size` rows per batch and `batches_limit`
/// batches in flight, the rest default.
pub fn pull_config(batch_size: usize, batches_limit: usize) -> PullConfig {
    PullConfig::builder()
        .batch_size(batch_size)
        .batches_limit(batches_limit)
        .build()
        .expect("pull settings in range")
}
