//! A CouchDB 3 quirks layer: a proxy in front of the real PouchDB Server
//! that makes it answer, on the points where the two differ and a client or
//! a test can get it wrong, the way Apache CouchDB 3 does.
//!
//! No CouchDB 3 runs where the suite runs, so without this layer the suite
//! only ever meets PouchDB Server and cannot catch tests (or client code)
//! that rely on its habits. With `SETTEE_TEST_QUIRKS=couchdb3`,
//! [`super::server()`] hands every test this proxy's URL (tests that put a
//! [`FaultProxy`] of their own in front chain through it). What it imitates:
//!
//! - **Encoded design and local ids.** A path whose document segment is an
//!   encoded `_design/…` or `_local/…` (`_design%2Felo`, `%5Fdesign%2Felo`)
//!   gets a `301` to itself, a redirect loop, as CouchDB answers it.
//! - **`_changes` order.** Rows are dealt round-robin from four imitation
//!   shards (a stable hash of the id), each in sequence order, as CouchDB
//!   merges its shards' streams: not in id or sequence order, within a page
//!   and across pages (a page is dealt from a window of twice its size, so a
//!   row can wait for a later page). Each row's `seq` says which rows were
//!   delivered so far, and is safe to resume from, as CouchDB's are.
//! - **Opaque sequences.** `update_seq`, `last_seq` and `seq` are strings
//!   that grow with the rows delivered ahead of the rest (`op<hex>-g1AAAAB`
//!   then `-<hex>` per row ahead, then `-i<hex>`, the database instance);
//!   a `since=` of that form maps back. A `since` from another instance of
//!   the database (deleted and created again) is not refused: CouchDB 3
//!   rewinds every shard whose uuid differs to 0, so the feed starts over
//!   from the first row.
//! - **Gzip digests.** CouchDB stores attachments of compressible types
//!   (`text/*`, `application/javascript`, `application/json`,
//!   `application/xml`: its default `compressible_types`) gzip-encoded and
//!   reports the MD5 of the gzip bytes as their `digest`. In every answer
//!   that carries documents (`GET /db/{id}`, `open_revs`, `_bulk_get`,
//!   `_changes` and `_all_docs` with `include_docs`) such an attachment's
//!   digest is the MD5 of real gzip bytes: the layer reads the identity
//!   bytes (`GET /{db}/{id}/{att}?rev=` upstream with the client's
//!   credentials, or the inline `data`), gzips them deterministically
//!   (see [`gzip`]) once per identity digest, and remembers the result
//!   (see [`resolve_gzip`]). With `att_encoding_info=true` the stub also
//!   gets `"encoding":"gzip"` and the gzip length as `encoded_length`;
//!   `length` stays the identity length. Inline `data` stays the identity
//!   bytes, as CouchDB decodes it. `GET /{db}/{id}/{att}` of such an
//!   attachment with `Accept-Encoding: gzip` is answered with those gzip
//!   bytes and `Content-Encoding: gzip` (so a client can check them
//!   against the digest, then gunzip them); without it, the identity
//!   bytes. A stub sent back with such a digest (a client that read a
//!   document and writes it again) gets the server's own digest on its
//!   way upstream: CouchDB matches stubs by name and `revpos` and ignores
//!   their digest, PouchDB Server looks them up by digest.
//! - **Repeated `keys` in a view query** (`POST …/_view/v` with `keys`, or
//!   `GET` with `keys=`): a sharded CouchDB merges the rows of a key asked
//!   for several times from its shards' streams, rather than answering
//!   each repetition whole (measured on CouchDB 3.4.3, q=2). The layer
//!   answers every repetition's rows of such a key together, sorted by
//!   document id (each row as many times as the key was asked), at the
//!   key's first place, and applies `skip` and `limit` after that.
//! - **`possible_ancestors`** in `_revs_diff` answers: the remote's leaves
//!   of a lower generation, on any branch (`super::ancestors`).
//! - **`instance_start_time`** in `GET /db` is the database's creation time
//!   in whole seconds, as a string, as CouchDB 3.4.3 reports it (the shard
//!   suffix, `mem3:generate_shard_suffix`, is `os:system_time(second)`): a
//!   database deleted and created again within the same second keeps it; and `GET /` welcomes like CouchDB 3.4.3 (keeping the uuid),
//!   so a client takes its CouchDB 3 paths.
//!
//! What it cannot imitate: it is not CouchDB. No real sharding (no rewinds
//! after a node restart, no shard-level `since` rules beyond the rewind of
//! another instance's `since`), no CouchDB's own gzip bytes (the layer's
//! are flate2's at the default level, so digests and `encoded_length`
//! differ from a real CouchDB's for the same bytes; a client must not
//! expect either), no `q`/`n`, no CouchDB
//! auth database, `_users` or security objects, no Mango, no partitioned
//! databases; everything else is PouchDB Server's own behaviour. It must not
//! hide a server answer: only the fields above change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::proxy::{
    canned, connect, find, finish, forward, head_for_body, header_name, lines, opaque_seq,
    plain_seq, plain_since, rewrite_head, split_response, whole_response, FaultProxy, Rule,
};

/// The env knob that turns the layer on, and its one accepted value.
pub const KNOB: &str = "SETTEE_TEST_QUIRKS";

/// Whether `SETTEE_TEST_QUIRKS=couchdb3` is set. Any other non-empty value
/// panics: a misspelt knob must not silently run the plain suite.
pub fn enabled() -> bool {
    match std::env::var(KNOB) {
        Ok(v) if v == "couchdb3" => true,
        Ok(v) if v.trim().is_empty() => false,
        Ok(v) => panic!("{KNOB}={v:?}: the only quirks mode is `couchdb3`"),
        Err(_) => false,
    }
}

/// The layer's state: when each database was created, as it reports it.
#[derive(Debug, Default)]
pub struct Couch3 {
    created: Mutex<HashMap<String, Instance>>,
    /// The gzip encoding of every compressible attachment the layer saw
    /// (see [`resolve_gzip`]).
    gzip: Mutex<GzipCache>,
}

/// Compressible attachments, each gzipped once: by the server's own
/// (identity) digest, and back.
#[derive(Debug, Default)]
struct GzipCache {
    /// Identity digest → (digest of the gzip bytes, their length).
    by_identity: HashMap<String, (String, u64)>,
    /// Digest of the gzip bytes → identity digest: a stub written back
    /// with the layer's digest gets the server's own one.
    by_gzip: HashMap<String, String>,
}

/// One instance of a database, from its creation to its deletion.
#[derive(Debug, Clone)]
struct Instance {
    /// Its creation time, in whole seconds.
    start_time: String,
    /// Unique among the layer's instances (CouchDB's shard uuids), carried
    /// by every sequence of its feed.
    id: u64,
}

impl Instance {
    fn new() -> Instance {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Instance {
            start_time: now_s(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Couch3 {
    /// The instance of `db`; a database first seen now was created now.
    fn instance(&self, db: &str) -> Instance {
        self.lock()
            .entry(db.to_owned())
            .or_insert_with(Instance::new)
            .clone()
    }

    fn created(&self, db: &str) {
        self.lock().insert(db.to_owned(), Instance::new());
    }

    fn deleted(&self, db: &str) {
        self.lock().remove(db);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instance>> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn gzip_lock(&self) -> std::sync::MutexGuard<'_, GzipCache> {
        self.gzip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The digest and length of the gzip bytes of the attachment whose
    /// identity digest is `identity`, once resolved.
    fn gzip_of(&self, identity: &str) -> Option<(String, u64)> {
        self.gzip_lock().by_identity.get(identity).cloned()
    }

    fn remember_gzip(&self, identity: &str, gzip: &[u8]) {
        let digest = super::md5_digest(gzip);
        let mut cache = self.gzip_lock();
        cache.by_gzip.insert(digest.clone(), identity.to_owned());
        cache
            .by_identity
            .insert(identity.to_owned(), (digest, gzip.len() as u64));
    }
}

/// Whole seconds since the epoch, as a string.
fn now_s() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

/// The real server behind the process's quirks proxy, once started.
static REAL_SERVER: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// The address of the real server, behind the process's quirks proxy if
/// there is one: for testing a quirks proxy of its own (two quirks layers
/// in a row would each deal the other's pages).
pub fn real_server_addr() -> SocketAddr {
    let behind = super::server::server_addr();
    REAL_SERVER.get().copied().unwrap_or(behind)
}

/// Starts a quirks proxy in front of `upstream` on a runtime of its own
/// (the tests' runtimes come and go; this proxy lives as long as the
/// process) and returns its URL.
pub fn start_for_process(upstream: SocketAddr) -> String {
    let _ = REAL_SERVER.set(upstream);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("couchdb3-quirks".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime for the quirks proxy");
            rt.block_on(async move {
                let proxy = FaultProxy::start(upstream)
                    .await
                    .expect("start the quirks proxy");
                proxy.set_rules(vec![Rule::couchdb3()]);
                let _ = tx.send(proxy.url());
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn the quirks proxy thread");
    rx.recv().expect("the quirks proxy started")
}

/// What one request is, for the layer.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// `GET /`.
    Welcome,
    /// `/db` itself (its decoded name), by method.
    Db(String),
    /// A `_changes` request (not a streaming feed).
    Changes,
    /// An encoded `_design/` or `_local/` id: the redirect loop.
    EncodedId,
    /// `POST /db/_revs_diff`: answered with `possible_ancestors`.
    RevsDiff,
    /// An answer that carries documents, and so attachment stubs.
    Docs,
    /// A view query (`…/_design/{d}/_view/{v}`).
    View,
    /// `GET /db/{id}/{att}`: gzip-encoded when the client accepts it.
    Attachment,
    /// Anything else: forwarded untouched.
    Other,
}

/// The decoded database name of a request target.
fn db_of(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    decode(path.trim_start_matches('/').split('/').next().unwrap_or(""))
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

fn classify(method: &str, target: &str) -> Kind {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if path == "/" || path.is_empty() {
        return if method == "GET" {
            Kind::Welcome
        } else {
            Kind::Other
        };
    }
    // The database name may hold an encoded slash; a document id may not
    // when it is a design or local one.
    if segs.iter().skip(1).any(|s| {
        s.contains('%') && {
            let d = decode(s);
            d.starts_with("_design/") || d.starts_with("_local/")
        }
    }) {
        return Kind::EncodedId;
    }
    if segs.len() == 1 && !segs[0].starts_with('_') {
        return Kind::Db(decode(segs[0]));
    }
    let streaming = ["feed=continuous", "feed=eventsource"]
        .iter()
        .any(|f| target.contains(f));
    if segs.len() == 2 && segs[1] == "_revs_diff" && method == "POST" {
        return Kind::RevsDiff;
    }
    if segs.len() == 2 && segs[1] == "_changes" && !streaming {
        return Kind::Changes;
    }
    if carries_docs(method, &segs) {
        return Kind::Docs;
    }
    if matches!(segs.as_slice(), [_, "_design", _, "_view", _]) {
        return Kind::View;
    }
    if method == "GET" && is_attachment(&segs) {
        return Kind::Attachment;
    }
    Kind::Other
}

/// Whether the path `segs` names an attachment: `/db/{id}/{att…}` or
/// `/db/_design/{d}/{att…}` (an attachment name may hold slashes).
fn is_attachment(segs: &[&str]) -> bool {
    match segs {
        [_, "_design", _, att, ..] => !att.is_empty() && !att.starts_with('_'),
        [_, id, att, ..] => !id.is_empty() && !id.starts_with('_') && !att.is_empty(),
        _ => false,
    }
}

/// Whether the answer to `method` on the path `segs` carries documents:
/// `GET /db/{id}` (with or without `open_revs`), `_bulk_get`, `_all_docs`.
fn carries_docs(method: &str, segs: &[&str]) -> bool {
    match segs {
        [_, "_bulk_get"] => method == "POST",
        [_, "_all_docs"] => method == "GET" || method == "POST",
        [_, "_design", _] => method == "GET",
        [_, id] => method == "GET" && !id.starts_with('_'),
        _ => false,
    }
}

/// Serves one request (see the module doc).
pub(super) async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    line: &str,
    fwd_head: &[u8],
    body_start: &[u8],
    quirks: &Couch3,
) {
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let kind = classify(method, target);
    let unmasked = match writes_docs(method, target) {
        true => unmask_stubs(&mut client, fwd_head, body_start, quirks).await,
        false => None,
    };
    let (fwd_head, body_start) = match &unmasked {
        Some((head, body)) => (head.as_slice(), body.as_slice()),
        None => (fwd_head, body_start),
    };
    if kind == Kind::View {
        return view_query(client, upstream, target, fwd_head, body_start).await;
    }
    match kind {
        Kind::Other => return forward(client, upstream, fwd_head, body_start).await,
        Kind::Attachment if accepts_gzip(fwd_head) => {
            return attachment(client, upstream, fwd_head, body_start).await
        }
        Kind::Attachment => return forward(client, upstream, fwd_head, body_start).await,
        Kind::RevsDiff => {
            return super::ancestors::serve(client, upstream, line, fwd_head, body_start).await
        }
        Kind::Db(_) if method == "HEAD" => {
            return forward(client, upstream, fwd_head, body_start).await
        }
        Kind::EncodedId => {
            let body = r#"{"error":"moved","reason":"encoded design or local id"}"#;
            let headers = [("Location", target), ("Content-Type", "application/json")];
            return canned(client, 301, &headers, body.as_bytes()).await;
        }
        Kind::Welcome | Kind::Db(_) | Kind::Changes | Kind::Docs | Kind::View => {}
    }
    let plan = match kind {
        Kind::Changes => FeedPlan::of(target, quirks.instance(&db_of(target)).id),
        _ => None,
    };
    let fwd_head = match &plan {
        Some(plan) => plan.upstream_head(fwd_head),
        None => plain_since(fwd_head),
    };
    let Some(up) = connect(upstream, &fwd_head, body_start).await else {
        return;
    };
    let raw = whole_response(&mut client, up).await;
    let encoding_info = query_param(target, "att_encoding_info") == Some("true");
    let origin = Origin {
        upstream,
        db: target
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned(),
        auth: super::ancestors::credentials(&fwd_head),
    };
    let gzip = Gzip {
        encoding_info,
        origin: &origin,
        quirks,
    };
    let out = rewrite(&raw, method, &kind, plan.as_ref(), &gzip).await;
    if client.write_all(&out).await.is_ok() {
        finish(client).await;
    }
}

/// Where the documents of an answer live: upstream, the database (as the
/// request named it, encoded) and the client's credentials.
struct Origin {
    upstream: SocketAddr,
    db: String,
    auth: Vec<(String, String)>,
}

/// What the gzip digests of an answer need.
struct Gzip<'a> {
    /// Whether the request said `att_encoding_info=true`.
    encoding_info: bool,
    origin: &'a Origin,
    quirks: &'a Couch3,
}

impl Gzip<'_> {
    /// Resolves, then reports, the gzip digests of the attachments in `v`.
    async fn apply(&self, v: &mut Value) {
        resolve_gzip(v, self.origin, self.quirks).await;
        gzip_digests(v, self.encoding_info, self.quirks);
    }
}

/// Upstream's raw response, with the layer's changes.
async fn rewrite(
    raw: &[u8],
    method: &str,
    kind: &Kind,
    plan: Option<&FeedPlan>,
    gzip: &Gzip<'_>,
) -> Vec<u8> {
    let quirks = gzip.quirks;
    let Some((head, status, body)) = split_response(raw) else {
        return raw.to_vec();
    };
    let ok = (200..300).contains(&status);
    if let (Kind::Db(db), true) = (kind, ok) {
        match method {
            "PUT" => quirks.created(db),
            "DELETE" => quirks.deleted(db),
            _ => {}
        }
    }
    let edited = match serde_json::from_slice::<Value>(&body) {
        // `open_revs` answers an array of documents.
        Ok(mut docs @ Value::Array(_)) if ok && *kind == Kind::Docs => {
            gzip.apply(&mut docs).await;
            serde_json::to_vec(&docs).unwrap_or(body)
        }
        Ok(Value::Object(mut obj)) if ok => {
            match kind {
                Kind::Welcome => welcome(&mut obj),
                Kind::Db(db) if method == "GET" => {
                    let instance = quirks.instance(db);
                    if let Some(n) = obj.get("update_seq").and_then(Value::as_u64) {
                        let pos = Pos {
                            base: n,
                            instance: Some(instance.id),
                            ..Pos::default()
                        };
                        obj.insert("update_seq".into(), Value::String(pos.encode()));
                    }
                    obj.insert(
                        "instance_start_time".into(),
                        Value::String(instance.start_time),
                    );
                }
                Kind::Changes => match plan {
                    Some(plan) => plan.page(&mut obj),
                    None => changes_page(&mut obj),
                },
                _ => {}
            }
            let mut obj = Value::Object(obj);
            if matches!(kind, Kind::Changes | Kind::Docs) {
                gzip.apply(&mut obj).await;
            }
            serde_json::to_vec(&obj).unwrap_or(body)
        }
        _ => body,
    };
    let mut out = head_for_body(head, edited.len());
    out.extend_from_slice(&edited);
    out
}

/// Whether CouchDB stores attachments of `content_type` gzip-encoded: its
/// default `[attachments] compressible_types`.
fn compressible(content_type: &str) -> bool {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    base.starts_with("text/")
        || [
            "application/javascript",
            "application/json",
            "application/xml",
        ]
        .contains(&base.as_str())
}

/// The gzip encoding of `bytes`, the same every time (no file name,
/// mtime 0, the default level), as CouchDB stores a compressible
/// attachment.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    // Writing to a `Vec` cannot fail.
    let _ = gz.write_all(bytes);
    gz.finish().unwrap_or_default()
}

/// A compressible attachment of an answer whose gzip encoding the layer
/// does not know yet.
struct Unresolved {
    id: String,
    rev: String,
    name: String,
    /// The server's own digest, of the identity bytes.
    digest: String,
    /// Its inline `data` (base64), when the answer carries it.
    data: Option<String>,
}

/// The compressible attachments in `v` (every document in it) whose gzip
/// encoding the layer does not know yet, each digest once.
fn unresolved(v: &Value, quirks: &Couch3, out: &mut Vec<Unresolved>) {
    match v {
        Value::Array(items) => {
            for item in items {
                unresolved(item, quirks, out);
            }
        }
        Value::Object(obj) => {
            for (key, value) in obj {
                if key != "_attachments" {
                    unresolved(value, quirks, out);
                    continue;
                }
                let Some(atts) = value.as_object() else {
                    continue;
                };
                let id = obj.get("_id").and_then(Value::as_str).unwrap_or("");
                let rev = obj.get("_rev").and_then(Value::as_str).unwrap_or("");
                for (name, att) in atts {
                    let ct = att.get("content_type").and_then(Value::as_str);
                    if !ct.is_some_and(compressible) || att.get("encoding").is_some() {
                        continue;
                    }
                    let Some(digest) = att.get("digest").and_then(Value::as_str) else {
                        continue;
                    };
                    let data = att.get("data").and_then(Value::as_str).map(str::to_owned);
                    if (data.is_none() && (id.is_empty() || rev.is_empty()))
                        || out.iter().any(|u| u.digest == digest)
                        || quirks.gzip_of(digest).is_some()
                    {
                        continue;
                    }
                    out.push(Unresolved {
                        id: id.to_owned(),
                        rev: rev.to_owned(),
                        name: name.clone(),
                        digest: digest.to_owned(),
                        data,
                    });
                }
            }
        }
        _ => {}
    }
}

/// Learns the gzip encoding of every compressible attachment in `v` the
/// layer has not seen yet: its identity bytes (the inline `data`, or
/// `GET /{db}/{id}/{att}?rev=` upstream with the client's credentials),
/// gzipped, remembered by the server's digest. Bytes that do not match the
/// server's digest (or that could not be read) are left unresolved: such a
/// stub keeps the server's digest.
async fn resolve_gzip(v: &Value, origin: &Origin, quirks: &Couch3) {
    use base64::Engine;
    let mut todo = Vec::new();
    unresolved(v, quirks, &mut todo);
    if todo.is_empty() {
        return;
    }
    let http = reqwest::Client::new();
    for u in todo {
        let bytes = match &u.data {
            Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
            None => attachment_bytes(&http, origin, &u).await,
        };
        let Some(bytes) = bytes.filter(|b| super::md5_digest(b) == u.digest) else {
            continue;
        };
        quirks.remember_gzip(&u.digest, &gzip(&bytes));
    }
}

/// The identity bytes of an attachment, read from upstream.
async fn attachment_bytes(
    http: &reqwest::Client,
    origin: &Origin,
    u: &Unresolved,
) -> Option<Vec<u8>> {
    let url = format!(
        "http://{}/{}/{}/{}?rev={}",
        origin.upstream,
        origin.db,
        super::enc_id(&u.id),
        super::enc_att(&u.name),
        super::enc(&u.rev)
    );
    let mut req = http.get(&url).header("Accept-Encoding", "identity");
    for (k, v) in &origin.auth {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.bytes().await.ok().map(|b| b.to_vec())
}

/// Gives every compressible attachment of every document in `v` whose
/// gzip encoding the layer knows (see [`resolve_gzip`]) the digest of its
/// gzip bytes and, with `encoding_info`, `encoding` and `encoded_length`.
fn gzip_digests(v: &mut Value, encoding_info: bool, quirks: &Couch3) {
    match v {
        Value::Array(items) => {
            for item in items {
                gzip_digests(item, encoding_info, quirks);
            }
        }
        Value::Object(obj) => {
            for (key, value) in obj.iter_mut() {
                if key != "_attachments" {
                    gzip_digests(value, encoding_info, quirks);
                    continue;
                }
                let Some(atts) = value.as_object_mut() else {
                    continue;
                };
                for att in atts.values_mut().filter_map(Value::as_object_mut) {
                    let ct = att.get("content_type").and_then(Value::as_str);
                    if !ct.is_some_and(compressible) || att.contains_key("encoding") {
                        continue;
                    }
                    let Some(digest) = att.get("digest").and_then(Value::as_str) else {
                        continue;
                    };
                    let Some((gzip, gzip_len)) = quirks.gzip_of(digest) else {
                        continue;
                    };
                    att.insert("digest".into(), Value::String(gzip));
                    if encoding_info {
                        att.insert("encoding".into(), json!("gzip"));
                        att.insert("encoded_length".into(), json!(gzip_len));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether the request head accepts a gzip-encoded answer.
fn accepts_gzip(head: &[u8]) -> bool {
    lines(head).skip(1).any(|h| {
        header_name(h).eq_ignore_ascii_case(b"accept-encoding")
            && String::from_utf8_lossy(h)
                .to_ascii_lowercase()
                .contains("gzip")
    })
}

/// `GET /db/{id}/{att}` from a client that accepts gzip: a compressible
/// attachment is answered gzip-encoded (`Content-Encoding: gzip`, the
/// bytes whose MD5 the layer reports as its digest), as CouchDB answers
/// the bytes it stores; anything else as upstream answers it. Upstream is
/// asked for the identity bytes; its `Content-MD5` (of those) and
/// `Accept-Ranges` are dropped from a gzip answer.
async fn attachment(mut client: TcpStream, upstream: SocketAddr, head: &[u8], body_start: &[u8]) {
    let head = rewrite_head(head, &["accept-encoding"], &[]);
    let Some(up) = connect(upstream, &head, body_start).await else {
        return;
    };
    let raw = whole_response(&mut client, up).await;
    let out = match split_response(&raw) {
        Some((head, 200, body)) if content_type(head).is_some_and(|ct| compressible(&ct)) => {
            let gz = gzip(&body);
            let head = rewrite_head(
                head,
                &["content-encoding", "content-md5", "accept-ranges"],
                &[],
            );
            let mut out = head_for_body(&head[..head.len() - 4], gz.len());
            out.truncate(out.len() - 2);
            out.extend_from_slice(b"Content-Encoding: gzip\r\n\r\n");
            out.extend_from_slice(&gz);
            out
        }
        _ => raw,
    };
    if client.write_all(&out).await.is_ok() {
        finish(client).await;
    }
}

/// The `Content-Type` of a response head.
fn content_type(head: &[u8]) -> Option<String> {
    lines(head).skip(1).find_map(|h| {
        let value = h.splitn(2, |&b| b == b':').nth(1)?;
        header_name(h)
            .eq_ignore_ascii_case(b"content-type")
            .then(|| String::from_utf8_lossy(value).trim().to_owned())
    })
}

/// Whether the request writes documents whose stubs may carry a digest the
/// layer reported: `PUT /db/{id}`, `POST /db`, `POST /db/_bulk_docs`.
fn writes_docs(method: &str, target: &str) -> bool {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("POST", [db]) => !db.is_empty() && !db.starts_with('_'),
        ("POST", [_, "_bulk_docs"]) => true,
        ("PUT", [_, id]) => !id.starts_with('_'),
        ("PUT", [_, "_design", _]) => true,
        _ => false,
    }
}

/// Reads the rest of a JSON request body and gives each stub whose digest
/// the layer reported the server's own one back (see the module doc):
/// the new head and whole body, or `None` (forwarded as it is) for a body
/// that is not JSON with a `Content-Length`.
async fn unmask_stubs(
    client: &mut TcpStream,
    head: &[u8],
    body_start: &[u8],
    quirks: &Couch3,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let body = read_json_body(client, head, body_start).await?;
    let mut doc: Value = match serde_json::from_slice(&body) {
        Ok(doc) => doc,
        Err(_) => return Some((head.to_vec(), body)),
    };
    let known = quirks.gzip_lock();
    let mut changed = false;
    let mut stack = vec![&mut doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(obj) => {
                if let Some(Value::Object(atts)) = obj.get_mut("_attachments") {
                    for att in atts.values_mut().filter_map(Value::as_object_mut) {
                        let own = att
                            .get("digest")
                            .and_then(Value::as_str)
                            .and_then(|d| known.by_gzip.get(d));
                        if let Some(own) = own.cloned() {
                            att.insert("digest".into(), Value::String(own));
                            att.remove("encoding");
                            att.remove("encoded_length");
                            changed = true;
                        }
                    }
                }
                if let Some(Value::Array(docs)) = obj.get_mut("docs") {
                    stack.extend(docs.iter_mut());
                }
            }
            _ => {}
        }
    }
    drop(known);
    if !changed {
        return Some((head.to_vec(), body));
    }
    let body = serde_json::to_vec(&doc).ok()?;
    Some((head_for_body(head, body.len()), body))
}

/// The whole body of a JSON request with a `Content-Length` (the rest read
/// from `client`); `None` for any other body.
async fn read_json_body(client: &mut TcpStream, head: &[u8], body_start: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let header = |name: &[u8]| {
        lines(head).skip(1).find_map(|h| {
            let value = h.splitn(2, |&b| b == b':').nth(1)?;
            header_name(h)
                .eq_ignore_ascii_case(name)
                .then(|| String::from_utf8_lossy(value).trim().to_ascii_lowercase())
        })
    };
    if !header(b"content-type")?.starts_with("application/json") {
        return None;
    }
    let len: usize = header(b"content-length")?.parse().ok()?;
    let mut body = body_start.to_vec();
    if body.len() < len {
        let mut rest = vec![0u8; len - body.len()];
        client.read_exact(&mut rest).await.ok()?;
        body.extend_from_slice(&rest);
    }
    Some(body)
}

/// A view query: answered as upstream does, but for repeated `keys` (see
/// the module doc), whose rows are merged as a sharded server does.
async fn view_query(
    mut client: TcpStream,
    upstream: SocketAddr,
    target: &str,
    head: &[u8],
    body_start: &[u8],
) {
    let body = read_json_body(&mut client, head, body_start).await;
    let (head, body_start) = match &body {
        Some(body) => (head_for_body(head, body.len()), body.as_slice()),
        None => (head.to_vec(), body_start),
    };
    let keys: Option<Vec<Value>> = match &body {
        Some(body) => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|b| serde_json::from_value(b.get("keys")?.clone()).ok()),
        None => query_param(target, "keys").and_then(|k| serde_json::from_str(&decode(k)).ok()),
    };
    let repeated = keys.as_ref().is_some_and(|keys| {
        let distinct: std::collections::HashSet<String> =
            keys.iter().map(Value::to_string).collect();
        distinct.len() < keys.len()
    });
    let Some(keys) = keys.filter(|_| repeated) else {
        return forward(client, upstream, &head, body_start).await;
    };
    let skip: usize = query_param(target, "skip")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: Option<usize> = query_param(target, "limit").and_then(|v| v.parse().ok());
    let head = without_params(&head, &["skip", "limit"]);
    let Some(up) = connect(upstream, &head, body_start).await else {
        return;
    };
    let raw = whole_response(&mut client, up).await;
    let out = merged_view_answer(&raw, &keys, skip, limit);
    if client.write_all(&out).await.is_ok() {
        finish(client).await;
    }
}

/// The request head with the query parameters named in `drop` removed.
fn without_params(head: &[u8], drop: &[&str]) -> Vec<u8> {
    let Some(eol) = find(head, b"\r\n") else {
        return head.to_vec();
    };
    let line = String::from_utf8_lossy(&head[..eol]);
    let mut parts = line.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let Some((path, query)) = target.split_once('?') else {
        return head.to_vec();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !drop.contains(&kv.split('=').next().unwrap_or("")))
        .collect();
    let mut out = format!("{method} {path}?{} {version}", kept.join("&")).into_bytes();
    out.extend_from_slice(&head[eol..]);
    out
}

/// Upstream's answer to a view query with repeated `keys` (each
/// repetition's rows whole, in `keys` order, without skip or limit), its
/// rows merged as [`merge_repeated`] does and then cut by `skip` and
/// `limit`.
fn merged_view_answer(raw: &[u8], keys: &[Value], skip: usize, limit: Option<usize>) -> Vec<u8> {
    let Some((head, _, body)) = split_response(raw) else {
        return raw.to_vec();
    };
    let edited = match serde_json::from_slice::<Value>(&body) {
        Ok(mut answer) if answer["rows"].is_array() => {
            let rows = match answer["rows"].take() {
                Value::Array(rows) => rows,
                _ => Vec::new(),
            };
            let rows = merge_repeated(rows, keys);
            let rows: Vec<Value> = rows
                .into_iter()
                .skip(skip)
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            answer["rows"] = Value::Array(rows);
            serde_json::to_vec(&answer).unwrap_or(body)
        }
        _ => body,
    };
    let mut out = head_for_body(head, edited.len());
    out.extend_from_slice(&edited);
    out
}

/// Rows answered for `keys` one repetition after another, as a sharded
/// server merges them: every row of a key asked for more than once comes
/// at the key's first place, all repetitions together, sorted by id.
fn merge_repeated(rows: Vec<Value>, keys: &[Value]) -> Vec<Value> {
    let mut by_key: HashMap<String, Vec<Value>> = HashMap::new();
    for row in rows {
        by_key.entry(row["key"].to_string()).or_default().push(row);
    }
    let mut times: HashMap<String, usize> = HashMap::new();
    for k in keys {
        *times.entry(k.to_string()).or_default() += 1;
    }
    let mut out = Vec::new();
    for k in keys {
        let Some(mut rows) = by_key.remove(&k.to_string()) else {
            continue;
        };
        if times[&k.to_string()] > 1 {
            rows.sort_by_cached_key(|r| r["id"].as_str().unwrap_or("").to_owned());
        }
        out.extend(rows);
    }
    out
}

/// PouchDB Server's welcome made CouchDB 3.4.3's (its uuid kept).
fn welcome(obj: &mut serde_json::Map<String, Value>) {
    obj.remove("express-pouchdb");
    obj.insert("couchdb".into(), json!("Welcome"));
    obj.insert("version".into(), json!("3.4.3"));
    obj.insert(
        "vendor".into(),
        json!({"name": "The Apache Software Foundation"}),
    );
}

fn opaque(v: Option<&mut Value>) {
    if let Some(v) = v {
        if let Some(n) = v.as_u64() {
            *v = Value::String(opaque_seq(n));
        }
    }
}

/// FNV-1a of the id: a stable stand-in for CouchDB's shard hash.
fn shard_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One `_changes` page the CouchDB 3 way: rows in hash order, each row's
/// `seq` one that covers no row still to come, every sequence opaque.
fn changes_page(obj: &mut serde_json::Map<String, Value>) {
    opaque(obj.get_mut("last_seq"));
    let Some(Value::Array(rows)) = obj.get_mut("results") else {
        return;
    };
    rows.sort_by_cached_key(|r| {
        let id = r["id"].as_str().unwrap_or("").to_owned();
        (shard_hash(&id), id)
    });
    let seqs: Vec<Option<u64>> = rows.iter().map(|r| r["seq"].as_u64()).collect();
    if seqs.iter().any(Option::is_none) {
        return;
    }
    let seqs: Vec<u64> = seqs.into_iter().flatten().collect();
    let top = seqs.iter().copied().max().unwrap_or(0);
    let mut later_min = top + 1;
    for i in (0..rows.len()).rev() {
        let safe = later_min.saturating_sub(1).min(top);
        rows[i]["seq"] = Value::String(opaque_seq(safe));
        later_min = later_min.min(seqs[i]);
    }
}

/// Shards the layer imitates: rows are dealt round-robin from this many
/// sub-feeds (by id hash), each in sequence order, as CouchDB merges the
/// streams of its shards.
const SHARDS: u64 = 4;

fn shard_of(id: &str) -> u64 {
    shard_hash(id) % SHARDS
}

/// A position in the feed, the layer's opaque sequence: every row up to
/// `base` was delivered, and so were the rows at the sequences in `ahead`
/// (all above `base`). CouchDB's sequences likewise say how far each shard
/// got, so they grow long and are not numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Pos {
    base: u64,
    ahead: std::collections::BTreeSet<u64>,
    /// The database instance whose feed this is a position in.
    instance: Option<u64>,
}

impl Pos {
    /// `op<base hex>-g1AAAAB` (the proxy's opaque form when nothing is
    /// ahead), then `-<hex>` for each sequence ahead.
    fn encode(&self) -> String {
        let mut s = opaque_seq(self.base);
        for d in &self.ahead {
            s.push_str(&format!("-{d:x}"));
        }
        if let Some(i) = self.instance {
            s.push_str(&format!("-i{i:x}"));
        }
        s
    }

    /// A `since=` value: a number or the form of [`Pos::encode`].
    fn decode(s: &str) -> Option<Pos> {
        if let Ok(base) = s.parse::<u64>() {
            return Some(Pos {
                base,
                ..Pos::default()
            });
        }
        let mut parts = s.strip_prefix("op")?.split('-');
        let base = u64::from_str_radix(parts.next()?, 16).ok()?;
        if parts.next()? != "g1AAAAB" {
            return None;
        }
        let mut ahead = std::collections::BTreeSet::new();
        let mut instance = None;
        for p in parts {
            match p.strip_prefix('i') {
                Some(i) => instance = Some(u64::from_str_radix(i, 16).ok()?),
                None => {
                    ahead.insert(u64::from_str_radix(p, 16).ok()?);
                }
            }
        }
        Some(Pos {
            base,
            ahead,
            instance,
        })
    }

    /// Moves `base` over the delivered rows at the start of `fetched` (every
    /// sequence of the feed above the original base, in order).
    fn advance(&mut self, fetched: &[u64]) {
        for &f in fetched {
            if f <= self.base {
                continue;
            }
            if !self.ahead.remove(&f) {
                break;
            }
            self.base = f;
        }
        let base = self.base;
        self.ahead.retain(|&d| d > base);
    }
}

/// How one `_changes` request is served across pages: upstream is asked
/// from `pos.base` for a window wider than the page, the rows already
/// delivered are dropped, and the page is dealt from the shards.
#[derive(Debug)]
struct FeedPlan {
    pos: Pos,
    limit: Option<usize>,
}

fn query_param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl FeedPlan {
    /// The plan for `target` in the feed of database instance `instance`;
    /// `None` (rows only reordered in the page) for `since=now`,
    /// `descending=true` or a `since` the layer did not make. A `since` of
    /// another instance starts from the beginning, as CouchDB 3 rewinds a
    /// shard whose uuid differs.
    fn of(target: &str, instance: u64) -> Option<FeedPlan> {
        if query_param(target, "descending") == Some("true") {
            return None;
        }
        let mut pos = match query_param(target, "since") {
            None => Pos::default(),
            Some(s) => Pos::decode(&decode(s))?,
        };
        if pos.instance.is_some_and(|i| i != instance) {
            pos = Pos::default();
        }
        pos.instance = Some(instance);
        let limit = match query_param(target, "limit") {
            None => None,
            Some(l) => Some(l.parse::<usize>().ok().filter(|&l| l > 0)?),
        };
        Some(FeedPlan { pos, limit })
    }

    /// How many rows upstream is asked for.
    fn window(&self) -> Option<usize> {
        self.limit.map(|l| 2 * l + self.pos.ahead.len())
    }

    /// The request head with `since` and `limit` set for upstream.
    fn upstream_head(&self, head: &[u8]) -> Vec<u8> {
        let Some(eol) = find(head, b"\r\n") else {
            return head.to_vec();
        };
        let line = String::from_utf8_lossy(&head[..eol]);
        let mut parts = line.splitn(3, ' ');
        let (method, target, version) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut params: Vec<String> = query
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("since=") && !kv.starts_with("limit="))
            .map(str::to_owned)
            .collect();
        params.push(format!("since={}", self.pos.base));
        if let Some(w) = self.window() {
            params.push(format!("limit={w}"));
        }
        let mut out = format!("{method} {path}?{} {version}", params.join("&")).into_bytes();
        out.extend_from_slice(&head[eol..]);
        out
    }

    /// Upstream's window made this request's page.
    fn page(&self, obj: &mut serde_json::Map<String, Value>) {
        let upstream_last = obj.get("last_seq").and_then(Value::as_u64);
        let upstream_pending = obj.get("pending").and_then(Value::as_u64);
        let Some(Value::Array(rows)) = obj.remove("results") else {
            opaque(obj.get_mut("last_seq"));
            return;
        };
        let Some(fetched) = rows
            .iter()
            .map(|r| r["seq"].as_u64())
            .collect::<Option<Vec<u64>>>()
        else {
            obj.insert("results".into(), Value::Array(rows));
            changes_page(obj);
            return results_first(obj);
        };
        let complete = self.window().is_none_or(|w| rows.len() < w);
        // The rows not delivered yet, dealt round-robin from the shards.
        let mut shards: Vec<std::collections::VecDeque<Value>> =
            (0..SHARDS).map(|_| Default::default()).collect();
        let mut candidates = 0usize;
        for row in rows {
            let seq = row["seq"].as_u64().unwrap_or(0);
            if self.pos.ahead.contains(&seq) {
                continue;
            }
            candidates += 1;
            let shard = shard_of(row["id"].as_str().unwrap_or(""));
            shards[shard as usize].push_back(row);
        }
        let want = self.limit.unwrap_or(usize::MAX).min(candidates);
        let mut pos = self.pos.clone();
        let mut page = Vec::with_capacity(want);
        while page.len() < want {
            for shard in shards.iter_mut() {
                if page.len() == want {
                    break;
                }
                if let Some(mut row) = shard.pop_front() {
                    pos.ahead.insert(row["seq"].as_u64().unwrap_or(0));
                    pos.advance(&fetched);
                    row["seq"] = Value::String(pos.encode());
                    page.push(row);
                }
            }
        }
        if complete && page.len() == candidates {
            if let Some(last) = upstream_last {
                pos.base = pos.base.max(last);
                pos.ahead.clear();
            }
        }
        obj.insert("last_seq".into(), Value::String(pos.encode()));
        if let Some(p) = upstream_pending {
            obj.insert(
                "pending".into(),
                json!(p + (candidates - page.len()) as u64),
            );
        }
        obj.insert("results".into(), Value::Array(page));
        results_first(obj);
    }
}

/// Puts `results` first, as CouchDB writes its answer (`{"results":[`
/// then `last_seq` and `pending`): a client may read the rows as they
/// arrive.
fn results_first(obj: &mut serde_json::Map<String, Value>) {
    if let Some(results) = obj.shift_remove("results") {
        let rest = std::mem::take(obj);
        obj.insert("results".into(), results);
        obj.extend(rest);
    }
}

/// Whether `seq` is one of the layer's opaque sequences (for its tests).
pub fn is_opaque(seq: &Value) -> bool {
    seq.as_str().is_some_and(|s| {
        plain_seq(s).is_some() || (s.starts_with("op") && Pos::decode(s).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("GET", "/db/_design%2Felo"), Kind::EncodedId);
        assert_eq!(classify("GET", "/db/%5Fdesign%2Felo"), Kind::EncodedId);
        assert_eq!(classify("PUT", "/db/_local%2Fx?rev=1"), Kind::EncodedId);
        assert_eq!(classify("GET", "/db/_design/elo"), Kind::Docs);
        assert_eq!(classify("GET", "/db/_design/elo/_view/v"), Kind::View);
        assert_eq!(classify("GET", "/db/_design/elo/_info"), Kind::Other);
        assert_eq!(classify("GET", "/db/a%2Fb?open_revs=all"), Kind::Docs);
        assert_eq!(classify("POST", "/db/_bulk_get?revs=true"), Kind::Docs);
        assert_eq!(classify("GET", "/db/doc/att.txt"), Kind::Attachment);
        assert_eq!(classify("GET", "/db/doc/a/b.txt"), Kind::Attachment);
        assert_eq!(classify("GET", "/db/_design/elo/a.js"), Kind::Attachment);
        assert_eq!(classify("PUT", "/db/doc/att.txt"), Kind::Other);
        assert_eq!(classify("GET", "/db/_local/x"), Kind::Other);
        assert!(writes_docs("POST", "/db/_bulk_docs"));
        assert!(writes_docs("PUT", "/db/doc?rev=1-a"));
        assert!(!writes_docs("PUT", "/db"));
        assert!(!writes_docs("PUT", "/db/doc/att.txt"));
        assert_eq!(classify("GET", "/a%2Fb"), Kind::Db("a/b".into()));
        assert_eq!(classify("GET", "/db/_changes?since=3"), Kind::Changes);
        assert_eq!(classify("GET", "/db/_changes?feed=continuous"), Kind::Other);
        assert_eq!(classify("GET", "/"), Kind::Welcome);
    }

    #[test]
    fn rows_of_a_repeated_key_are_merged_at_its_first_place() {
        let row = |k: &str, id: &str| json!({"key": k, "id": id, "value": null});
        let keys = [json!("c10"), json!("missing"), json!("c0"), json!("c0")];
        let rows = vec![
            row("c10", "x"),
            row("c0", "chords"),
            row("c0", "logic"),
            row("c0", "chords"),
            row("c0", "logic"),
        ];
        let ids: Vec<Value> = merge_repeated(rows, &keys)
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(
            ids,
            [
                json!("x"),
                json!("chords"),
                json!("chords"),
                json!("logic"),
                json!("logic")
            ]
        );
        let head = b"GET /db/_design/d/_view/v?keys=%5B1%5D&skip=1&limit=2&x=y HTTP/1.1\r\nHost: h\r\n\r\n";
        let out = without_params(head, &["skip", "limit"]);
        assert!(out.starts_with(b"GET /db/_design/d/_view/v?keys=%5B1%5D&x=y HTTP/1.1\r\n"));
    }

    #[test]
    fn only_compressible_types_get_a_stable_gzip_digest() {
        assert!(compressible("text/plain; charset=utf-8"));
        assert!(compressible("Application/JSON"));
        assert!(!compressible("application/octet-stream"));
        assert!(!compressible("image/png"));
        // The same bytes, the same gzip bytes; and they gunzip back.
        let gz = gzip(b"hello");
        assert_eq!(gz, gzip(b"hello"));
        assert_eq!(&gz[..4], b"\x1f\x8b\x08\x00", "no file name");
        assert_eq!(&gz[4..8], [0, 0, 0, 0], "mtime 0");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, b"hello");
        let quirks = Couch3::default();
        let d = "md5-XUFAKrxLKna5cZ2REBfFkg==";
        quirks.remember_gzip(d, &gz);
        let (g, len) = quirks.gzip_of(d).unwrap();
        assert_eq!(
            (g.as_str(), len),
            (super::super::md5_digest(&gz).as_str(), gz.len() as u64)
        );
        assert_eq!(
            quirks.gzip_lock().by_gzip.get(&g).map(String::as_str),
            Some(d)
        );
    }

    #[test]
    fn positions_round_trip_and_advance_over_delivered_rows() {
        let mut pos = Pos::decode("7").unwrap();
        assert_eq!(pos.encode(), opaque_seq(7));
        pos.ahead.extend([9, 12]);
        assert_eq!(Pos::decode(&pos.encode()), Some(pos.clone()));
        pos.instance = Some(0x1f);
        assert!(pos.encode().ends_with("-i1f"), "{}", pos.encode());
        assert_eq!(Pos::decode(&pos.encode()), Some(pos.clone()));
        pos.instance = None;
        // 8 is not delivered: nothing moves.
        pos.advance(&[8, 9, 12, 13]);
        assert_eq!((pos.base, pos.ahead.len()), (7, 2));
        pos.ahead.insert(8);
        pos.advance(&[8, 9, 12, 13]);
        assert_eq!((pos.base, pos.ahead.len()), (12, 0));
        assert_eq!(Pos::decode("now"), None);
        // A position in another instance's feed starts over.
        let old = Pos {
            base: 20,
            instance: Some(1),
            ..Pos::default()
        };
        let target = format!("/db/_changes?since={}", old.encode());
        assert_eq!(FeedPlan::of(&target, 1).unwrap().pos.base, 20);
        let plan = FeedPlan::of(&target, 2).unwrap();
        assert_eq!((plan.pos.base, plan.pos.instance), (0, Some(2)));
    }
}
