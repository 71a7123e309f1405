//! `settee serve`: a replica as a local CouchDB endpoint (issue 21), for
//! PouchDB, a CouchDB replicator, scripts and admin tools.
//!
//! ```text
//!  HTTP (axum/hyper) ─► auth.rs ─► route (path segments, raw) ─► database.rs  _all_docs, _find, views,
//!                                                                │            _revs_diff, _bulk_get, info
//!                                                                ├► changes.rs   the feed, streamed
//!                                                                ├► document.rs  GET/PUT/DELETE docs, _local docs
//!                                                                └► attachment.rs by URL, ranges
//! ```
//!
//! It sits above the store and the query engine and answers from them;
//! writes are the replica's local writes, queued in its outbox for the
//! push. Paths are split and decoded here, not by the framework: a
//! document id may hold `/` (`_design/x`, `a%2Fb`), and CouchDB keeps the
//! slash of `_design/` and `_local/` ids unencoded.
//!
//! What it answers: `GET /`, `/_up`, `/_all_dbs`, `/_uuids`, `/_session`
//! (Basic and cookie sessions, `auth.rs`); `GET /{db}`, `_changes` in every
//! feed type, streamed, with the built-in filters (`changes.rs`),
//! `_all_docs`, `_find`, `_index`, `_explain`, `_design/{d}/_view/{v}`,
//! `_revs_diff`, `_bulk_get`, `_ensure_full_commit`; `GET`/`PUT`/`DELETE
//! /{db}/{id}` and `_bulk_docs` (writes are local writes: new revisions,
//! queued upstream) and `_local` documents; `_bulk_docs` with `new_edits:
//! false` merges a client's own revisions as replicated ones, queued
//! upstream in the same commit; attachments by URL, streamed with byte
//! ranges, written as new revisions (`attachment.rs`).

mod attachment;
mod auth;
mod changes;
mod cors;
mod database;
mod document;
mod error;
#[cfg(test)]
mod router_fuzz;

use crate::query::Query;
use crate::{Error, Replica, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use error::HttpError;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// Settings of [`serve`] and [`serve_databases`]; made by
/// [`ServeConfig::builder`], which checks them (and so do `serve` and
/// `serve_databases`, for fields changed since).
///
/// ```
/// use settee::serve::ServeConfig;
///
/// let config = ServeConfig::builder().db_name("course").build()?;
/// assert!(config.bind.ip().is_loopback());
/// let open = ServeConfig::builder().db_name("course").bind("0.0.0.0:5984".parse()?);
/// assert!(open.clone().build().is_err());
/// assert!(open.credentials("app", "s3cret").build().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Where to listen; loopback unless told otherwise.
    pub bind: SocketAddr,
    /// The name clients use (`/{db}`) for the one replica [`serve`]
    /// serves ([`serve_databases`] is given a name with each).
    pub db_name: String,
    /// Basic-auth credentials every request must carry; required when
    /// `bind` is not a loopback address.
    pub credentials: Option<(String, String)>,
    /// The largest request body taken, in bytes (a larger one is 413).
    pub max_body_bytes: usize,
    /// Origins whose browser pages may call the endpoint (CORS); none by
    /// default, so a page of another origin cannot read the replica.
    pub cors_origins: Vec<String>,
}

/// 127.0.0.1:5984, no credentials, bodies up to 64 MiB, no database name
/// (for [`serve_databases`]).
impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 5984)),
            db_name: String::new(),
            credentials: None,
            max_body_bytes: 64 * 1024 * 1024,
            cors_origins: Vec::new(),
        }
    }
}

impl ServeConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServeConfigBuilder {
        ServeConfigBuilder::default()
    }

    fn validate(&self) -> Result<()> {
        if !self.bind.ip().is_loopback() && self.credentials.is_none() {
            return Err(Error::InvalidSetting {
                setting: "bind",
                value: self.bind.to_string(),
                expected: "a loopback address, or credentials to serve elsewhere",
            });
        }
        if self.max_body_bytes == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_body_bytes",
                value: "0".to_owned(),
                expected: "at least 1 byte",
            });
        }
        Ok(())
    }
}

/// Builds a [`ServeConfig`]; unset settings keep their defaults
/// ([`ServeConfig::default`]).
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ServeConfigBuilder {
    config: ServeConfig,
}

impl ServeConfigBuilder {
    /// The name clients use for the one replica [`serve`] serves.
    pub fn db_name(mut self, name: impl Into<String>) -> Self {
        self.config.db_name = name.into();
        self
    }

    /// Another address to listen on (port 0 picks a free one); one that is
    /// not loopback needs [`ServeConfigBuilder::credentials`].
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.bind = addr;
        self
    }

    /// Requests must carry these Basic-auth credentials.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.credentials = Some((user.into(), password.into()));
        self
    }

    /// Lets browser pages of `origin` (`http://localhost:3000`) call the
    /// endpoint.
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.config.cors_origins.push(origin.into());
        self
    }

    /// The largest request body taken, in bytes.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_body_bytes = bytes;
        self
    }

    /// The settings, checked.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a non-loopback address without
    /// credentials, an empty body limit, or a database name clients cannot
    /// use (empty is allowed: [`serve_databases`] names its own).
    pub fn build(self) -> Result<ServeConfig> {
        self.config.validate()?;
        if !self.config.db_name.is_empty() {
            check_db_name(&self.config.db_name)?;
        }
        Ok(self.config)
    }
}

/// A name clients can use for a database: not empty, no leading `_`
/// (CouchDB's system databases), no `/`.
fn check_db_name(name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('_') || name.contains('/') {
        return Err(Error::InvalidSetting {
            setting: "db_name",
            value: name.to_owned(),
            expected: "a database name: not empty, no leading `_`, no `/`",
        });
    }
    Ok(())
}

/// The endpoint: its settings, sessions and databases.
struct Server {
    config: ServeConfig,
    /// The `uuid` of `GET /`: one per process, as a server's.
    uuid: String,
    sessions: auth::Sessions,
    databases: std::collections::BTreeMap<String, Served>,
}

impl Server {
    fn new(databases: Vec<(String, Replica)>, config: ServeConfig) -> Result<Server> {
        config.validate()?;
        let mut served = std::collections::BTreeMap::new();
        for (name, replica) in databases {
            check_db_name(&name)?;
            let query = Query::open(&replica)?;
            served.insert(
                name.clone(),
                Served {
                    name,
                    replica,
                    query,
                    local_writes: tokio::sync::Mutex::new(()),
                },
            );
        }
        Ok(Server {
            config,
            uuid: uuid::Uuid::new_v4().simple().to_string(),
            sessions: auth::Sessions::default(),
            databases: served,
        })
    }
}

/// One served database: what its request handlers read.
struct Served {
    name: String,
    replica: Replica,
    query: Query,
    /// Held across a `_local` document's read of its `_rev` and its
    /// write: two clients writing one checkpoint with the same `_rev`
    /// must not both succeed (one gets CouchDB's 409).
    local_writes: tokio::sync::Mutex<()>,
}

/// Serves `replica` until `shutdown` completes; `on_listening` is told the
/// bound address (port 0 picks a free one).
///
/// # Errors
/// [`Error::InvalidSetting`] for a non-loopback address without
/// credentials or a bad database name; [`Error::Serve`] when the address
/// cannot be bound.
pub async fn serve(
    replica: Replica,
    config: ServeConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let name = config.db_name.clone();
    serve_databases(vec![(name, replica)], config, on_listening, shutdown).await
}

/// Serves several replicas, each under its name (`/{name}`; a sync
/// root's databases, say), as [`serve`] serves one; `config.db_name` is
/// not used.
///
/// # Errors
/// As [`serve`]; a bad name among `databases` is
/// [`Error::InvalidSetting`].
pub async fn serve_databases(
    databases: Vec<(String, Replica)>,
    config: ServeConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let server = Arc::new(Server::new(databases, config)?);
    let config = &server.config;
    let failed = |e: std::io::Error| Error::Serve {
        addr: config.bind.to_string(),
        reason: e.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    let app = axum::Router::new()
        .fallback(handle)
        // `read_body` applies the limit, answering 413 the CouchDB way.
        .layer(DefaultBodyLimit::disable())
        .with_state(server.clone());
    tracing::info!(%addr, "serving the replica");
    on_listening(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Serve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
}

/// The endpoint without a socket: each request goes through the same
/// authorization, body limit and routing as one from the network. For
/// the router's fuzz target (`fuzz_hooks`) and tests.
#[doc(hidden)]
pub struct InProcess {
    server: Arc<Server>,
}

impl InProcess {
    /// Serves `replica` as `config` says, in process.
    ///
    /// # Errors
    /// As [`serve`] for a bad configuration.
    pub fn new(replica: Replica, config: ServeConfig) -> Result<InProcess> {
        let name = config.db_name.clone();
        Ok(InProcess {
            server: Arc::new(Server::new(vec![(name, replica)], config)?),
        })
    }

    /// One request; the answer's status, headers and whole body.
    pub async fn call(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let response = handle(
            State(self.server.clone()),
            method,
            uri,
            headers,
            axum::body::Body::from(body),
        )
        .await;
        let (parts, body) = response.into_parts();
        // A body cut in the middle (a feed whose store read failed) is
        // what arrived of it.
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        (parts.status, parts.headers, bytes)
    }
}

/// One request: authorized, routed, answered as CouchDB would.
async fn handle(
    State(server): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let cors = cors::allowed(&server.config, &headers);
    if method == Method::OPTIONS {
        return cors::preflight(cors.as_deref());
    }
    let authorized = match auth::is_login(&method, uri.path()) {
        true => Ok(()),
        false => auth::authorize(&server.config, &server.sessions, &headers),
    };
    let mut response = match authorized {
        Err(e) => e.into_response(),
        Ok(()) => match read_body(&server.config, &headers, body).await {
            Ok(body) => answer(server.clone(), method, uri, headers, body).await,
            Err(e) => e.into_response(),
        },
    };
    cors::decorate(&mut response, cors.as_deref());
    response
}

/// The request body, read up to the limit: a larger one (by its
/// `Content-Length`, or as it arrives) is CouchDB's 413, and no more of it
/// is read.
async fn read_body(
    config: &ServeConfig,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> std::result::Result<Bytes, HttpError> {
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request body is over this server's limit of {} bytes",
                config.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, config.max_body_bytes)
        .await
        .map_err(|_| too_large())
}

async fn answer(
    server: Arc<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Request {
        method,
        segments: segments(uri.path()),
        query: uri.query().unwrap_or("").to_owned(),
        headers,
        body,
    };
    let answered = match req.reads_only() {
        // A read runs where it may block: a view query can index a
        // backlog, a `_find` scan every document; on a runtime worker
        // either would stall every other connection that worker serves.
        true => {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || handle.block_on(route(&server, req)))
                .await
                .unwrap_or_else(|e| Err(HttpError::internal(e)))
        }
        // Writes already commit on the blocking pool; the feed waits.
        false => route(&server, req).await,
    };
    match answered {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// A request, its path split on raw `/` and each segment decoded.
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) segments: Vec<String>,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Request {
    /// The body as JSON (CouchDB's 400 `bad_request` when it is not).
    pub(crate) fn json(&self) -> std::result::Result<Value, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| HttpError::bad_request(format!("invalid UTF-8 JSON: {e}")))
    }

    /// True for a request that reads the replica and writes nothing: a
    /// `GET`/`HEAD` other than the changes feed (which streams and
    /// waits), or a `POST` of a query (`_all_docs`, `_find`, `_explain`,
    /// views, `_revs_diff`, `_bulk_get`).
    fn reads_only(&self) -> bool {
        let last = self.segments.last().map(String::as_str);
        let in_view = self.segments.len() >= 2 && self.segments[self.segments.len() - 2] == "_view";
        match self.method {
            Method::GET | Method::HEAD => last != Some("_changes"),
            Method::POST => {
                in_view
                    || matches!(
                        last,
                        Some("_all_docs" | "_find" | "_explain" | "_revs_diff" | "_bulk_get")
                    )
            }
            _ => false,
        }
    }

    /// A header's value, when it is text.
    pub(crate) fn header(&self, name: axum::http::header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter's raw value.
    pub(crate) fn param(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// A successful answer: a status and a JSON body, a document with its
/// ETag, or a body written as it is produced (a feed, an attachment).
pub(crate) enum Answer {
    Json(StatusCode, Value),
    /// A document, tagged with its revision (a client's `If-None-Match`
    /// of it is 304).
    Tagged {
        body: Value,
        etag: String,
    },
    /// The client's copy (its `If-None-Match`) is current.
    NotModified {
        etag: String,
    },
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        body: axum::body::Body,
    },
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let etag_header = |etag: &str| {
            axum::http::HeaderValue::from_str(etag)
                .unwrap_or(axum::http::HeaderValue::from_static("\"\""))
        };
        match self {
            Answer::Json(status, body) => (status, axum::Json(body)).into_response(),
            Answer::Tagged { body, etag } => (
                [(axum::http::header::ETAG, etag_header(&etag))],
                axum::Json(body),
            )
                .into_response(),
            Answer::NotModified { etag } => (
                StatusCode::NOT_MODIFIED,
                [(axum::http::header::ETAG, etag_header(&etag))],
            )
                .into_response(),
            Answer::Stream {
                status,
                headers,
                body,
            } => (status, headers, body).into_response(),
        }
    }
}

impl Answer {
    /// A streamed body of `content_type`.
    pub(crate) fn stream(content_type: &'static str, body: axum::body::Body) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(content_type),
        );
        Answer::Stream {
            status: StatusCode::OK,
            headers,
            body,
        }
    }
}

pub(crate) fn ok(body: Value) -> std::result::Result<Answer, HttpError> {
    Ok(Answer::Json(StatusCode::OK, body))
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

async fn route(server: &Server, req: Request) -> std::result::Result<Answer, HttpError> {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        [] => only_get(&req, || {
            json!({
                "couchdb": "Welcome",
                "version": "3.4.3",
                "vendor": {"name": "settee", "version": env!("CARGO_PKG_VERSION")},
                "uuid": server.uuid,
                "features": [],
            })
        }),
        ["_up"] => only_get(&req, || json!({"status": "ok"})),
        ["_session"] => auth::session(&server.config, &server.sessions, &req),
        ["_all_dbs"] => only_get(&req, || json!(server.databases.keys().collect::<Vec<_>>())),
        ["_uuids"] => {
            let n: usize = req.param("count").and_then(|c| c.parse().ok()).unwrap_or(1);
            if n > 1000 {
                return Err(HttpError::bad_request("count must not exceed 1000"));
            }
            let ids: Vec<String> = (0..n)
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect();
            only_get(&req, || json!({ "uuids": ids }))
        }
        [db, ..] if db.starts_with('_') => Err(HttpError::bad_request(format!(
            "{db} is not a database this server answers"
        ))),
        [db, rest @ ..] => match server.databases.get(*db) {
            Some(served) => database::route(served, &req, rest).await,
            None => Err(HttpError::not_found("Database does not exist.")),
        },
    }
}

/// A GET (or HEAD) answered with `body`; any other method is 405.
pub(crate) fn only_get(
    req: &Request,
    body: impl FnOnce() -> Value,
) -> std::result::Result<Answer, HttpError> {
    match req.method {
        Method::GET | Method::HEAD => ok(body()),
        _ => Err(HttpError::method_not_allowed("GET,HEAD")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_split_on_raw_slashes_and_decode_each_segment() {
        assert_eq!(segments("/db/a%2Fb"), vec!["db", "a/b"]);
        assert_eq!(
            segments("/db/_design/x/_view/y"),
            vec!["db", "_design", "x", "_view", "y"]
        );
        assert_eq!(segments("/"), Vec::<String>::new());
        assert_eq!(segments("/db/with%20space/"), vec!["db", "with space"]);
    }

    #[test]
    fn elsewhere_than_loopback_needs_credentials() {
        let open = ServeConfig::builder()
            .db_name("db")
            .bind(SocketAddr::from(([0, 0, 0, 0], 5984)));
        assert!(open.clone().build().is_err());
        assert!(open.credentials("u", "p").build().is_ok());
        assert!(ServeConfig::builder().db_name("_users").build().is_err());
        assert!(ServeConfig::builder().max_body_bytes(0).build().is_err());
        assert!(check_db_name("_users").is_err() && check_db_name("a/b").is_err());
        assert!(check_db_name("course-1").is_ok());
    }
}
