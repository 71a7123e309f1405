//! The HTTP client for one remote database: the requests of the pull side
//! of the replication protocol, each retried by the crate's [`RetryPolicy`].
//!
//! It owns nothing but a connection pool and what it learned about the
//! server (whether `_bulk_get` exists). It never writes to the remote.

use super::auth::{Auth, SessionCookie};
use super::body::{self, excerpt, AttachmentStream, ATTACHMENT_SETTING, RESPONSE_SETTING};
use super::endpoint::{self, Endpoint};
use super::error::root_cause;
use super::feed_query::FeedQuery;
use super::retry::Pace;
use super::types::{ChangesPage, DbInfo, FetchedEntry, FetchedRev, Seq, ServerInfo};
use super::{RemoteError, RetryPolicy};
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, RETRY_AFTER, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Settings of the HTTP client, built from the default with `with_*`
/// methods.
///
/// ```
/// use std::time::Duration;
/// use settee::{RemoteConfig, RetryPolicy};
/// use reqwest::header::{HeaderName, HeaderValue};
///
/// let config = RemoteConfig::default()
///     .with_connect_timeout(Duration::from_secs(3))
///     .with_read_timeout(Duration::from_secs(30))
///     .with_user_agent("my-app/1.0")
///     .with_header(HeaderName::from_static("x-app"), HeaderValue::from_static("course"))
///     .with_retry(RetryPolicy::with_retries(2));
/// assert_eq!(config.connect_timeout, Duration::from_secs(3));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteConfig {
    /// Longest wait for one whole request (headers and body) whose answer
    /// is read whole (JSON). Attachment bodies, which are streamed, are
    /// bounded by the read timeout instead, so a large one on a slow link
    /// is not cut off while bytes keep arriving.
    pub request_timeout: Duration,
    /// Longest wait for a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait between two reads of an answer, headers included: a
    /// stalled answer fails (and is retried) after this long, however
    /// long the whole transfer takes. `None`: no idle limit.
    pub read_timeout: Option<Duration>,
    /// Largest answer read whole, in bytes (`_changes` pages, `_bulk_get`,
    /// `open_revs`, push answers): 256 MiB by default, room for a
    /// `_bulk_get` of 32 documents at CouchDB's default
    /// `max_document_size` (8 MB), and 64 times the byte budget of a
    /// `_changes` page. A larger answer is [`RemoteError::TooLarge`].
    pub max_response_bytes: u64,
    /// Largest attachment pulled, in bytes (`None`: no cap). Attachment
    /// bytes are streamed to the replica, never held whole, so this bounds
    /// disk use, not memory: 1 GiB by default. A larger one is a
    /// per-document failure naming this setting.
    pub max_attachment_bytes: Option<u64>,
    /// Headers sent with every request, after settee's own `Accept`
    /// (a header named here replaces settee's).
    pub headers: HeaderMap,
    /// The `User-Agent` sent (`None`: `settee/<version>`).
    pub user_agent: Option<String>,
    /// The caller's own client (proxies, TLS roots, DNS...). Its timeouts
    /// and proxy apply; `request_timeout`, `connect_timeout`,
    /// `read_timeout` are then ignored, while `headers` and `user_agent`
    /// are still sent with every request.
    pub client: Option<reqwest::Client>,
    /// What to do about transient failures.
    pub retry: RetryPolicy,
    /// How requests authenticate (basic auth by default).
    pub auth: Auth,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Some(Duration::from_secs(60)),
            max_response_bytes: 256 * 1024 * 1024,
            max_attachment_bytes: Some(1024 * 1024 * 1024),
            headers: HeaderMap::new(),
            user_agent: None,
            client: None,
            retry: RetryPolicy::default(),
            auth: Auth::default(),
        }
    }
}

impl RemoteConfig {
    /// The same settings with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same settings with another whole-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The same settings with another connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same settings with a read timeout (see
    /// [`RemoteConfig::read_timeout`]).
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// The same settings with another cap on answers read whole (see
    /// [`RemoteConfig::max_response_bytes`]).
    ///
    /// ```
    /// let config = settee::RemoteConfig::default().with_max_response_bytes(64 << 20);
    /// assert_eq!(config.max_response_bytes, 64 << 20);
    /// ```
    pub fn with_max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The same settings with another cap on attachment sizes (`None`: no
    /// cap; see [`RemoteConfig::max_attachment_bytes`]).
    pub fn with_max_attachment_bytes(mut self, limit: Option<u64>) -> Self {
        self.max_attachment_bytes = limit;
        self
    }

    /// The same settings plus one header sent with every request.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The same settings with another `User-Agent`.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// The same settings sending through the caller's own client (see
    /// [`RemoteConfig::client`]).
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The same settings with another way to authenticate.
    ///
    /// ```
    /// use settee::{Auth, RemoteConfig};
    /// let config = RemoteConfig::default().with_auth(Auth::Session);
    /// assert_eq!(config.auth, Auth::Session);
    /// ```
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
}

/// A `_bulk_get` answer: per document, its revisions or errors.
#[derive(serde::Deserialize)]
pub(crate) struct BulkGetAnswer {
    results: Vec<BulkGetEntry>,
}

#[derive(serde::Deserialize)]
struct BulkGetEntry {
    id: String,
    docs: Vec<FetchedEntry>,
}

impl BulkGetAnswer {
    /// The answer's revisions, in order.
    pub(crate) fn into_fetched(self) -> Vec<FetchedRev> {
        self.results
            .into_iter()
            .flat_map(|e| {
                let id = e.id;
                e.docs.into_iter().map(move |d| d.into_fetched(&id))
            })
            .collect()
    }
}

/// A request of a cookie session was answered 401: log in again.
struct Expired;

const BULK_GET_UNKNOWN: u8 = 0;
const BULK_GET_YES: u8 = 1;
const BULK_GET_NO: u8 = 2;

/// A handle on a remote CouchDB database; cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), settee::RemoteError> {
/// use settee::{Endpoint, Remote, RemoteConfig, Seq};
///
/// let remote = Remote::new(Endpoint::parse("http://127.0.0.1:5984/course")?, RemoteConfig::default())?;
/// let info = remote.db_info().await?;
/// let page = remote.changes(&Seq::zero(), 100).await?;
/// println!("{} docs, first page has {} rows", info.doc_count, page.results.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Remote {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    http: reqwest::Client,
    /// Sent with every request, replacing the client's defaults of the
    /// same name (so they apply to a caller's own client too).
    headers: HeaderMap,
    /// The whole-request timeout of answers read whole (`None` with a
    /// caller's own client, whose settings apply).
    request_timeout: Option<Duration>,
    max_response_bytes: u64,
    max_attachment_bytes: Option<u64>,
    retry: RetryPolicy,
    auth: Auth,
    /// Shared with [`Remote::sent_once`]'s copy: one login serves both.
    session: Arc<SessionCookie>,
    /// The slow-down after 429s, shared by every request of this client
    /// (and its [`Remote::sent_once`] copy).
    pace: Arc<Pace>,
    bulk_get: AtomicU8,
}

impl Remote {
    /// Builds a client for `endpoint`. No request is sent yet.
    ///
    /// # Errors
    /// [`RemoteError::InvalidUrl`] when the HTTP client cannot be built or
    /// the user agent is not a valid header value.
    pub fn new(endpoint: Endpoint, config: RemoteConfig) -> Result<Self, RemoteError> {
        let invalid = |reason: String| RemoteError::InvalidUrl {
            url: endpoint.to_string(),
            reason,
        };
        let mut headers = HeaderMap::new();
        // PouchDB Server labels JSON text/plain without this, and CouchDB
        // answers `open_revs` as multipart/mixed without it.
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let user_agent = match &config.user_agent {
            Some(ua) => HeaderValue::from_str(ua)
                .map_err(|e| invalid(format!("invalid user agent: {e}")))?,
            None => HeaderValue::from_static(concat!("settee/", env!("CARGO_PKG_VERSION"))),
        };
        headers.insert(USER_AGENT, user_agent);
        for (name, value) in &config.headers {
            headers.insert(name, value.clone());
        }
        let request_timeout = config.client.is_none().then_some(config.request_timeout);
        let http = match config.client {
            Some(client) => client,
            None => {
                // No client-wide total timeout: it would cut a streamed
                // attachment off on a slow link. JSON requests get
                // `request_timeout` each; every read gets `read_timeout`.
                let mut builder = reqwest::Client::builder()
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true);
                if let Some(read) = config.read_timeout {
                    builder = builder.read_timeout(read);
                }
                builder
                    .build()
                    .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?
            }
        };
        Ok(Remote {
            inner: Arc::new(Inner {
                endpoint,
                http,
                headers,
                request_timeout,
                max_response_bytes: config.max_response_bytes,
                max_attachment_bytes: config.max_attachment_bytes,
                retry: config.retry,
                auth: config.auth,
                session: Arc::default(),
                pace: Arc::default(),
                bulk_get: AtomicU8::new(BULK_GET_UNKNOWN),
            }),
        })
    }

    /// The same client with every request sent once (no retries), for a
    /// caller that owns retrying, as the push worker does: its status
    /// policy decides what a failure means. Shares the connection pool.
    pub(crate) fn sent_once(&self) -> Remote {
        let i = &self.inner;
        Remote {
            inner: Arc::new(Inner {
                endpoint: i.endpoint.clone(),
                http: i.http.clone(),
                headers: i.headers.clone(),
                request_timeout: i.request_timeout,
                max_response_bytes: i.max_response_bytes,
                max_attachment_bytes: i.max_attachment_bytes,
                retry: RetryPolicy::none(),
                auth: i.auth.clone(),
                session: i.session.clone(),
                pace: i.pace.clone(),
                bulk_get: AtomicU8::new(i.bulk_get.load(std::sync::atomic::Ordering::Relaxed)),
            }),
        }
    }

    /// The database this client talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The connection pool, for the push requests (`push.rs`), which are
    /// sent once each: their caller, the outbox worker, owns the retrying.
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// A request with the configured headers (`Accept`, `User-Agent`,
    /// the caller's), which replace a caller's client's defaults, and the
    /// whole-request timeout (see [`Remote::streaming_request`]).
    pub(super) fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let req = self.streaming_request(method, url);
        match self.inner.request_timeout {
            Some(t) => req.timeout(t),
            None => req,
        }
    }

    /// [`Remote::request`] without the whole-request timeout, for a body
    /// read as it arrives: only the connect and read timeouts bound it.
    fn streaming_request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http()
            .request(method, url)
            .headers(self.inner.headers.clone())
    }

    /// The cap on answers read whole.
    pub(super) fn max_response_bytes(&self) -> u64 {
        self.inner.max_response_bytes
    }

    pub(super) fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(super) fn session(&self) -> &SessionCookie {
        &self.inner.session
    }

    /// Sends one request and reads the whole body, mapping every failure to
    /// a [`RemoteError`]. Error statuses become [`RemoteError::Http`]. In a
    /// cookie session, a 401 (the session expired) logs in again and sends
    /// the request once more.
    pub(super) async fn send_once(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        accept_any: bool,
    ) -> Result<Bytes, RemoteError> {
        match self
            .send_authorized(method.clone(), url, body, accept_any)
            .await
        {
            Err(Expired) => match self
                .send_authorized(method.clone(), url, body, accept_any)
                .await
            {
                Ok(r) => r,
                Err(Expired) => Err(RemoteError::Http {
                    method: method.to_string(),
                    url: url.to_string(),
                    status: StatusCode::UNAUTHORIZED,
                    error: "unauthorized".to_owned(),
                    reason: "the new session was refused too".to_owned(),
                }),
            },
            Ok(r) => r,
        }
    }

    async fn send_authorized(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        accept_any: bool,
    ) -> Result<Result<Bytes, RemoteError>, Expired> {
        let resp = match self
            .open_authorized(method.clone(), url, body, accept_any, false, false)
            .await?
        {
            Ok(resp) => resp,
            Err(e) => return Ok(Err(e)),
        };
        Ok(body::read_capped(
            resp,
            self.inner.max_response_bytes,
            RESPONSE_SETTING,
            &method,
            url,
        )
        .await)
    }

    /// Sends one request and returns its answer when the status is a
    /// success, unread; an error status is read into a [`RemoteError`].
    async fn open_authorized(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        accept_any: bool,
        streaming: bool,
        accept_gzip: bool,
    ) -> Result<Result<reqwest::Response, RemoteError>, Expired> {
        let req = if streaming {
            self.streaming_request(method.clone(), url.clone())
        } else {
            self.request(method.clone(), url.clone())
        };
        let (mut req, had_session) = match self.authorize(req).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(body) = body {
            req = req.json(body);
        }
        if accept_any {
            // `headers` replaces the `Accept` set above (`header` would add a second).
            let mut any = HeaderMap::new();
            any.insert(ACCEPT, HeaderValue::from_static("*/*"));
            req = req.headers(any);
        }
        if accept_gzip {
            req = req.header(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        }
        let transport = |e: reqwest::Error| transport_error(&method, url, e);
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return Ok(Err(transport(e))),
        };
        let status = resp.status();
        if self
            .after_response(status, resp.headers(), had_session)
            .await
        {
            return Err(Expired);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Ok(Err(rate_limited(&method, url, resp.headers())));
        }
        if status.is_success() {
            return Ok(Ok(resp));
        }
        Ok(Err(body::http_error(resp, &method, url).await))
    }

    pub(super) async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        accept_any: bool,
    ) -> Result<Bytes, RemoteError> {
        let what = format!("{method} {url}");
        self.inner
            .retry
            .run_paced(&self.inner.pace, &what, || {
                self.send_once(method.clone(), url, body, accept_any)
            })
            .await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<T, RemoteError> {
        let what = format!("{method} {url}");
        // The parse sits inside the retry: a body cut short by a dropped
        // connection shows up as "EOF while parsing", which is transient.
        self.inner
            .retry
            .run_paced(&self.inner.pace, &what, || async {
                let bytes = self.send_once(method.clone(), url, body, false).await?;
                serde_json::from_slice(&bytes).map_err(|e| RemoteError::InvalidResponse {
                    method: method.to_string(),
                    url: url.to_string(),
                    bytes: bytes.len(),
                    detail: e.to_string(),
                })
            })
            .await
    }

    /// `GET /`: checks the server is CouchDB-compatible and returns its identity.
    pub async fn server_info(&self) -> Result<ServerInfo, RemoteError> {
        let url = self.inner.endpoint.server_url().clone();
        let not_couch = |detail: String| RemoteError::NotCouchDb {
            url: url.to_string(),
            detail,
        };
        let bytes = self.send(Method::GET, &url, None, false).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| not_couch(format!("GET / answered non-JSON: {}", excerpt(&bytes))))?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let vendor = if v.get("couchdb").is_some() {
            "CouchDB".to_owned()
        } else if v.get("express-pouchdb").is_some() {
            "PouchDB Server".to_owned()
        } else {
            return Err(not_couch(
                "GET / has no \"couchdb\" welcome field".to_owned(),
            ));
        };
        Ok(ServerInfo {
            uuid: text(v.get("uuid")),
            vendor: text(v.pointer("/vendor/name")).unwrap_or(vendor),
            version: text(v.get("version")),
        })
    }

    /// `GET /db`: the database's identity and counts.
    pub async fn db_info(&self) -> Result<DbInfo, RemoteError> {
        let url = self.inner.endpoint.db_url();
        let bytes = self.send(Method::GET, &url, None, false).await?;
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::NotCouchDb {
            url: url.to_string(),
            detail: format!(
                "GET /db did not answer database info ({e}): {}",
                excerpt(&bytes)
            ),
        })
    }

    /// One page of `_changes?style=all_docs` after `since`, at most `limit` rows.
    pub async fn changes(&self, since: &Seq, limit: usize) -> Result<ChangesPage, RemoteError> {
        self.changes_page(since, limit, false).await
    }

    /// [`Remote::changes`] with `include_docs=true`: each row also carries
    /// its winning revision ([`crate::protocol::ChangeRow::doc`]), attachments as
    /// stubs.
    pub async fn changes_with_docs(
        &self,
        since: &Seq,
        limit: usize,
    ) -> Result<ChangesPage, RemoteError> {
        self.changes_page(since, limit, true).await
    }

    async fn changes_page(
        &self,
        since: &Seq,
        limit: usize,
        include_docs: bool,
    ) -> Result<ChangesPage, RemoteError> {
        let url = self.changes_url(since, Some(limit), include_docs, &FeedQuery::all());
        self.json(Method::GET, &url, None).await
    }

    /// `_changes` after `since` as `query` asks (every leaf by default),
    /// at most `limit` rows when given.
    pub(super) fn changes_url(
        &self,
        since: &Seq,
        limit: Option<usize>,
        include_docs: bool,
        query: &FeedQuery,
    ) -> Url {
        let mut url = self.inner.endpoint.db_path("_changes");
        query.apply_style(&mut url);
        url.query_pairs_mut()
            .append_pair("since", &since.as_query());
        if let Some(limit) = limit {
            url.query_pairs_mut()
                .append_pair("limit", &limit.to_string());
        }
        if include_docs {
            url.query_pairs_mut().append_pair("include_docs", "true");
        }
        query.apply_filter(&mut url);
        url
    }

    /// `POST /db/_revs_diff`: which of these revisions the remote lacks.
    pub async fn revs_diff(
        &self,
        revs: &BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeMap<String, Vec<String>>, RemoteError> {
        #[derive(serde::Deserialize)]
        struct Missing {
            #[serde(default)]
            missing: Vec<String>,
        }
        let url = self.inner.endpoint.db_path("_revs_diff");
        let body = serde_json::to_value(revs).map_err(|e| RemoteError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let answer: BTreeMap<String, Missing> = self.json(Method::POST, &url, Some(&body)).await?;
        Ok(answer
            .into_iter()
            .filter(|(_, m)| !m.missing.is_empty())
            .map(|(id, m)| (id, m.missing))
            .collect())
    }

    /// Whether the server is known to have `_bulk_get` (`None`: not asked yet).
    pub fn has_bulk_get(&self) -> Option<bool> {
        match self.inner.bulk_get.load(Ordering::Relaxed) {
            BULK_GET_YES => Some(true),
            BULK_GET_NO => Some(false),
            _ => None,
        }
    }

    /// Fetches revisions with their ancestry (`revs=true&latest=true`):
    /// with one `_bulk_get` when the server has it, else one
    /// `GET /db/{id}?open_revs=[...]` per document. Which one is decided
    /// once per client, on the first call, as PouchDB does.
    pub async fn fetch_revs(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<FetchedRev>, RemoteError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        if self.inner.bulk_get.load(Ordering::Relaxed) != BULK_GET_NO {
            match self.bulk_get_within_cap(wanted).await {
                Ok(revs) => {
                    self.inner.bulk_get.store(BULK_GET_YES, Ordering::Relaxed);
                    return Ok(revs);
                }
                // `!= Some(true)`, not `is_none()`: batches in flight race
                // here, and each one that finds no _bulk_get falls back.
                Err(e) if lacks_bulk_get(&e) && self.has_bulk_get() != Some(true) => {
                    tracing::info!(db = %self.inner.endpoint, "no _bulk_get on this server; fetching documents one by one");
                    self.inner.bulk_get.store(BULK_GET_NO, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        for (id, revs) in wanted {
            match self.open_revs(id, revs).await {
                Ok(fetched) => out.extend(fetched),
                // One document the server cannot serve fails alone; failing
                // the batch would stop every later pull at the same place.
                Err(e) => match e.document_failure() {
                    Some((error, reason)) => {
                        tracing::warn!(%id, %error, %reason, "open_revs failed for one document");
                        out.extend(revs.iter().map(|r| FetchedRev::Error {
                            id: id.clone(),
                            rev: Some(r.clone()),
                            error: error.clone(),
                            reason: reason.clone(),
                        }));
                    }
                    None => return Err(e),
                },
            }
        }
        Ok(out)
    }

    /// `_bulk_get` of `wanted`, within the response cap: an answer over
    /// [`RemoteConfig::max_response_bytes`] is asked for again in halves
    /// (by documents, then by one document's revisions), and a single
    /// revision whose answer is still over it fails alone (`too_large`,
    /// naming the setting), so that one huge document, or a batch of large
    /// ones, does not stop the pull. The answers come back in `wanted`'s
    /// order.
    async fn bulk_get_within_cap(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<FetchedRev>, RemoteError> {
        let first = match self.bulk_get(wanted).await {
            Err(e @ RemoteError::TooLarge { .. }) => e,
            answer => return answer,
        };
        tracing::info!(db = %self.inner.endpoint, docs = wanted.len(), "a _bulk_get answer is over the response cap; asking for it in halves");
        let mut out = Vec::new();
        // Parts still to ask for, the next one last, with the error of the
        // one already asked for.
        let mut todo = vec![(wanted.to_vec(), Some(first))];
        while let Some((part, over)) = todo.pop() {
            let e = match over {
                Some(e) => e,
                None => match self.bulk_get(&part).await {
                    Ok(revs) => {
                        out.extend(revs);
                        continue;
                    }
                    Err(e @ RemoteError::TooLarge { .. }) => e,
                    Err(e) => return Err(e),
                },
            };
            match halves(part) {
                Ok((a, b)) => {
                    todo.push((b, None));
                    todo.push((a, None));
                }
                Err((id, revs)) => {
                    let reason = e.to_string();
                    tracing::warn!(%id, %reason, "one revision's answer is over the response cap");
                    out.extend(revs.into_iter().map(|rev| FetchedRev::Error {
                        id: id.clone(),
                        rev: Some(rev),
                        error: "too_large".to_owned(),
                        reason: reason.clone(),
                    }));
                }
            }
        }
        Ok(out)
    }

    async fn bulk_get(
        &self,
        wanted: &[(String, Vec<String>)],
    ) -> Result<Vec<FetchedRev>, RemoteError> {
        let mut url = self.inner.endpoint.db_path("_bulk_get");
        url.query_pairs_mut()
            .append_pair("revs", "true")
            .append_pair("latest", "true")
            .append_pair("att_encoding_info", "true");
        let docs: Vec<Value> = wanted
            .iter()
            .flat_map(|(id, revs)| {
                revs.iter()
                    .map(move |rev| serde_json::json!({"id": id, "rev": rev}))
            })
            .collect();
        let body = serde_json::json!({ "docs": docs });
        let answer: BulkGetAnswer = self.json(Method::POST, &url, Some(&body)).await?;
        Ok(answer.into_fetched())
    }

    /// `GET /db/{id}?revs=true&latest=true&open_revs=[...]`.
    pub async fn open_revs(
        &self,
        id: &str,
        revs: &[String],
    ) -> Result<Vec<FetchedRev>, RemoteError> {
        if !endpoint::addressable(id, false) {
            return Ok(revs
                .iter()
                .map(|r| unaddressable(id, Some(r.clone())))
                .collect());
        }
        let mut url = self.inner.endpoint.doc_url(id);
        let list = serde_json::to_string(revs).unwrap_or_else(|_| "[]".to_owned());
        url.query_pairs_mut()
            .append_pair("revs", "true")
            .append_pair("latest", "true")
            .append_pair("att_encoding_info", "true")
            .append_pair("open_revs", &list);
        let entries: Vec<FetchedEntry> = match self.json(Method::GET, &url, None).await {
            Ok(e) => e,
            // The document vanished (purged) between _changes and this call:
            // a per-document failure, not a failed pull.
            Err(e) if is_doc_not_found(&e) => {
                let (error, reason) = match &e {
                    RemoteError::Http { error, reason, .. } => (error.clone(), reason.clone()),
                    _ => (String::new(), String::new()),
                };
                return Ok(revs
                    .iter()
                    .map(|r| FetchedRev::Error {
                        id: id.to_owned(),
                        rev: Some(r.clone()),
                        error: error.clone(),
                        reason: reason.clone(),
                    })
                    .collect());
            }
            Err(e) => return Err(e),
        };
        Ok(entries.into_iter().map(|e| e.into_fetched(id)).collect())
    }

    /// `GET /db/{id}?revs=true&open_revs=all`: every leaf of a document,
    /// or `None` when the server does not have the document at all.
    pub async fn open_revs_all(&self, id: &str) -> Result<Option<Vec<FetchedRev>>, RemoteError> {
        if !endpoint::addressable(id, false) {
            return Ok(Some(vec![unaddressable(id, None)]));
        }
        let mut url = self.inner.endpoint.doc_url(id);
        url.query_pairs_mut()
            .append_pair("revs", "true")
            .append_pair("att_encoding_info", "true")
            .append_pair("open_revs", "all");
        match self
            .json::<Vec<FetchedEntry>>(Method::GET, &url, None)
            .await
        {
            Ok(entries) => Ok(Some(
                entries.into_iter().map(|e| e.into_fetched(id)).collect(),
            )),
            Err(e) if is_doc_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /db/{id}`: the winning revision, or `None` if there is none.
    pub async fn get_doc(
        &self,
        id: &str,
    ) -> Result<Option<serde_json::Map<String, Value>>, RemoteError> {
        let url = self.inner.endpoint.doc_url(id);
        match self.json(Method::GET, &url, None).await {
            Ok(doc) => Ok(Some(doc)),
            Err(e) if is_doc_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /db/{id}/{name}?rev=...`: an attachment's bytes, read whole
    /// (up to [`RemoteConfig::max_attachment_bytes`]); a pull streams them
    /// instead ([`Remote::attachment_stream`]).
    pub async fn attachment(&self, id: &str, name: &str, rev: &str) -> Result<Bytes, RemoteError> {
        let url = self.attachment_url(id, name, rev);
        let what = format!("GET {url}");
        self.inner
            .retry
            .run_paced(&self.inner.pace, &what, || async {
                let stream = self.open_attachment(&url, false).await?;
                let limit = self.inner.max_attachment_bytes.unwrap_or(u64::MAX);
                body::read_capped(stream, limit, ATTACHMENT_SETTING, &Method::GET, &url).await
            })
            .await
    }

    /// `GET /db/{id}/{name}?rev=...`, sent once, its body not yet read:
    /// the bytes arrive chunk by chunk, bounded by the read timeout (not
    /// the request timeout) and [`RemoteConfig::max_attachment_bytes`].
    /// A caller that wants retries runs this and its reading of the
    /// chunks in [`Remote::retrying`], starting over on each attempt.
    ///
    /// # Errors
    /// As for every request; [`RemoteError::TooLarge`] at once when the
    /// announced length is over the cap.
    pub async fn attachment_stream(
        &self,
        id: &str,
        name: &str,
        rev: &str,
    ) -> Result<AttachmentStream, RemoteError> {
        self.open_stream(id, name, rev, false).await
    }

    /// [`Remote::attachment_stream`] asking for the bytes as the server
    /// stores them (`Accept-Encoding: gzip`): CouchDB then answers an
    /// attachment it keeps gzip-encoded as is, with `Content-Encoding:
    /// gzip` ([`AttachmentStream::is_gzip`]), the bytes its digest covers.
    pub(crate) async fn attachment_stream_as_stored(
        &self,
        id: &str,
        name: &str,
        rev: &str,
    ) -> Result<AttachmentStream, RemoteError> {
        self.open_stream(id, name, rev, true).await
    }

    /// One attachment GET answered as a stream, its announced length
    /// checked against the cap.
    async fn open_stream(
        &self,
        id: &str,
        name: &str,
        rev: &str,
        accept_gzip: bool,
    ) -> Result<AttachmentStream, RemoteError> {
        let url = self.attachment_url(id, name, rev);
        let resp = self.open_attachment(&url, accept_gzip).await?;
        let stream = AttachmentStream::new(resp, Method::GET, url, self.inner.max_attachment_bytes);
        stream.check_declared()?;
        Ok(stream)
    }

    fn attachment_url(&self, id: &str, name: &str, rev: &str) -> Url {
        let mut url = self.inner.endpoint.attachment_url(id, name);
        url.query_pairs_mut().append_pair("rev", rev);
        url
    }

    /// One attachment GET (a session renewed once on 401), answer unread.
    async fn open_attachment(
        &self,
        url: &Url,
        accept_gzip: bool,
    ) -> Result<reqwest::Response, RemoteError> {
        self.open_streaming(Method::GET, url, None, true, accept_gzip)
            .await
    }

    /// A request whose answer is read as a stream, answer unread, a
    /// session renewed once on 401.
    async fn open_streaming(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        accept_any: bool,
        accept_gzip: bool,
    ) -> Result<reqwest::Response, RemoteError> {
        let open =
            || self.open_authorized(method.clone(), url, body, accept_any, true, accept_gzip);
        match open().await {
            Ok(r) => r,
            Err(Expired) => open().await.unwrap_or_else(|Expired| {
                Err(RemoteError::Http {
                    method: method.to_string(),
                    url: url.to_string(),
                    status: StatusCode::UNAUTHORIZED,
                    error: "unauthorized".to_owned(),
                    reason: "the new session was refused too".to_owned(),
                })
            }),
        }
    }

    /// A changes request whose JSON answer is read as it arrives (the
    /// streamed feed), answer unread.
    pub(super) async fn open_feed(
        &self,
        url: &Url,
        query: &FeedQuery,
    ) -> Result<reqwest::Response, RemoteError> {
        self.open_streaming(query.method(), url, query.body.as_ref(), false, false)
            .await
    }

    /// This client's retry policy (for work that retries by itself, as the
    /// streamed feed does when cut mid-body).
    pub(super) fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// Runs `op` under this client's retry policy and its 429 slow-down:
    /// again after each transient failure, until it succeeds, fails for
    /// good or the retries run out. For work that spans more than one
    /// request or reads a stream ([`Remote::attachment_stream`]).
    pub async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        self.inner.retry.run_paced(&self.inner.pace, what, op).await
    }
}

/// Documents and the revisions wanted of each, as `_bulk_get` asks for them.
type Wanted = Vec<(String, Vec<String>)>;

/// `wanted` cut in two: its documents in halves, or a single document's
/// revisions; `Err` with the (document, revisions) left when it holds one
/// revision (or none).
fn halves(mut wanted: Wanted) -> Result<(Wanted, Wanted), (String, Vec<String>)> {
    if wanted.len() > 1 {
        let b = wanted.split_off(wanted.len() / 2);
        return Ok((wanted, b));
    }
    let (id, mut revs) = wanted.pop().unwrap_or_default();
    if revs.len() < 2 {
        return Err((id, revs));
    }
    let later = revs.split_off(revs.len() / 2);
    Ok((vec![(id.clone(), revs)], vec![(id, later)]))
}

/// The per-document failure for an id no URL can name.
fn unaddressable(id: &str, rev: Option<String>) -> FetchedRev {
    FetchedRev::Error {
        id: id.to_owned(),
        rev,
        error: "bad_request".to_owned(),
        reason: "no URL path can name this document id; only _bulk_get can fetch it".to_owned(),
    }
}

/// A 404 for a document, as opposed to one for the whole database.
fn is_doc_not_found(e: &RemoteError) -> bool {
    matches!(e, RemoteError::Http { status: StatusCode::NOT_FOUND, reason, .. }
        if reason != "no_db_file" && reason != "Database does not exist.")
}

/// How servers without `_bulk_get` answer a POST to it: CouchDB 1.x routes
/// it as a document (404/405, or 400 for a reserved id), some proxies 501.
fn lacks_bulk_get(e: &RemoteError) -> bool {
    match e {
        RemoteError::Http { status, reason, .. } => match status.as_u16() {
            404 => is_doc_not_found(e),
            405 | 501 => true,
            400 => reason.contains("underscore") || reason.contains("reserved"),
            _ => false,
        },
        _ => false,
    }
}

/// A request that got no answer: timed out, never connected, or broke.
pub(super) fn transport_error(method: &Method, url: &Url, e: reqwest::Error) -> RemoteError {
    let (method, url) = (method.to_string(), url.to_string());
    if e.is_timeout() {
        RemoteError::Timeout { method, url }
    } else if e.is_connect() {
        RemoteError::Connect {
            url,
            cause: root_cause(&e),
            source: e.without_url(),
        }
    } else {
        RemoteError::Transport {
            method,
            url,
            cause: root_cause(&e),
            source: e.without_url(),
        }
    }
}

/// A 429, with the wait its `Retry-After` (in seconds) asks for.
pub(super) fn rate_limited(method: &Method, url: &Url, headers: &HeaderMap) -> RemoteError {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    RemoteError::RateLimited {
        method: method.to_string(),
        url: url.to_string(),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers of the one request a `Remote` sends to a listener that
    /// answers `GET /` once (a capture of what goes on the wire, not a
    /// server: the answer only has to parse).
    async fn first_request_headers(config: RemoteConfig) -> Vec<(String, String)> {
        #![allow(clippy::unwrap_used)]
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let capture = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request ended before its headers");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = br#"{"couchdb":"Welcome","uuid":"u","version":"3"}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(body).await.unwrap();
            String::from_utf8_lossy(&buf).into_owned()
        });
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/db")).unwrap();
        let remote = Remote::new(endpoint, config.with_retry(RetryPolicy::none())).unwrap();
        remote.server_info().await.unwrap();
        let request = capture.await.unwrap();
        request
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect()
    }

    fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[tokio::test]
    async fn configured_headers_and_user_agent_are_sent_with_built_and_own_clients() {
        #![allow(clippy::unwrap_used)]
        let config = || {
            RemoteConfig::default()
                .with_user_agent("course-app/2")
                .with_header(
                    HeaderName::from_static("x-app"),
                    HeaderValue::from_static("elo"),
                )
                .with_connect_timeout(Duration::from_secs(5))
                .with_read_timeout(Duration::from_secs(5))
        };
        let built = first_request_headers(config()).await;
        let own = first_request_headers(config().with_client(reqwest::Client::new())).await;
        for headers in [&built, &own] {
            assert_eq!(
                values(headers, "user-agent"),
                ["course-app/2"],
                "{headers:?}"
            );
            assert_eq!(values(headers, "x-app"), ["elo"], "{headers:?}");
            assert_eq!(
                values(headers, "accept"),
                ["application/json"],
                "{headers:?}"
            );
        }
        let default = first_request_headers(RemoteConfig::default()).await;
        assert_eq!(
            values(&default, "user-agent"),
            [concat!("settee/", env!("CARGO_PKG_VERSION"))]
        );
    }

    #[tokio::test]
    async fn a_chunked_answer_over_the_cap_stops_being_read_at_the_cap() {
        #![allow(clippy::unwrap_used)]
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // No Content-Length: the cap is found while reading. The server
        // would go on for ever; the client must stop on its own.
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            sock.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("400\r\n{}\r\n", " ".repeat(0x400));
            while sock.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/db")).unwrap();
        let config = RemoteConfig::default()
            .with_retry(RetryPolicy::none())
            .with_max_response_bytes(10_000);
        let remote = Remote::new(endpoint, config).unwrap();
        let e = remote.server_info().await.unwrap_err();
        assert!(
            matches!(e, RemoteError::TooLarge { limit: 10_000, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("max_response_bytes"), "{e}");
    }

    #[test]
    fn a_request_is_halved_by_documents_then_by_revisions() {
        let doc = |id: &str, revs: &[&str]| {
            (
                id.to_owned(),
                revs.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>(),
            )
        };
        let three = vec![doc("a", &["1-a"]), doc("b", &["1-b"]), doc("c", &["1-c"])];
        assert_eq!(
            halves(three),
            Ok((
                vec![doc("a", &["1-a"])],
                vec![doc("b", &["1-b"]), doc("c", &["1-c"])]
            ))
        );
        assert_eq!(
            halves(vec![doc("d", &["2-x", "2-y", "2-z"])]),
            Ok((vec![doc("d", &["2-x"])], vec![doc("d", &["2-y", "2-z"])]))
        );
        assert_eq!(
            halves(vec![doc("e", &["1-e"])]).err(),
            Some(doc("e", &["1-e"]))
        );
    }

    #[test]
    fn an_invalid_user_agent_is_a_typed_error() {
        #![allow(clippy::unwrap_used)]
        let endpoint = Endpoint::parse("http://127.0.0.1:5984/db").unwrap();
        let e = Remote::new(
            endpoint,
            RemoteConfig::default().with_user_agent("bad\nagent"),
        )
        .unwrap_err();
        assert!(matches!(e, RemoteError::InvalidUrl { .. }), "{e:?}");
    }
}
