//! A small fault-injecting HTTP/1.1 proxy for integration tests.
//!
//! [`FaultProxy`] listens on `127.0.0.1:<random port>` in front of a real
//! CouchDB-compatible server (`PouchDB` Server on loopback) and forwards every
//! request byte for byte, except where a [`Rule`] says otherwise: answer with
//! a canned response, drop the connection, truncate or corrupt the upstream
//! body, or delay the request. It records every request line it sees so
//! tests can assert on the traffic (`count("_bulk_get")`).
//!
//! # Why it is safe for keep-alive clients
//!
//! The proxy handles exactly one request per client connection. Every
//! request it forwards is rewritten to carry `Connection: close` (any
//! existing `Connection`/`Keep-Alive` header is replaced), so upstream closes
//! after one response; every response the proxy sends to the client (relayed,
//! canned or mangled) also carries `Connection: close`. A keep-alive client
//! such as reqwest therefore never reuses a connection through the proxy: it
//! opens a fresh one for the next request, which means every request goes
//! through the rule check, and no request can be lost to a silently reused
//! (and already closed) pooled connection. After answering, the proxy
//! half-closes and drains the client socket briefly before dropping it, so
//! unread request bytes never turn the close into a reset that would
//! clobber a response the client has not read yet.
//!
//! The proxy is plain tokio (no hyper). It never panics on I/O errors: a
//! failed connection simply ends. Dropping the [`FaultProxy`] stops the
//! accept loop and every connection it still serves.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Largest request or response head (up to `\r\n\r\n`) the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

/// How long the proxy waits for a client to close after being answered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a firing [`Rule`] does to the request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer directly, without contacting upstream.
    Respond {
        /// HTTP status code.
        status: u16,
        /// `Content-Type` of the canned body.
        content_type: String,
        /// The body, sent with a correct `Content-Length`.
        body: String,
    },
    /// Answer directly with extra headers (e.g. `Retry-After`).
    RespondWithHeaders {
        /// HTTP status code.
        status: u16,
        /// Extra header lines, `(name, value)`.
        headers: Vec<(String, String)>,
        /// The JSON body.
        body: String,
    },
    /// Close the client socket without sending any response.
    DropConnection,
    /// Forward, then send upstream's status and headers with a
    /// `Content-Length` for the full (de-chunked) body but only the first
    /// `keep_bytes` bytes of it, and close.
    TruncateBody {
        /// How many body bytes reach the client.
        keep_bytes: usize,
    },
    /// Forward, then replace upstream's body with same-length garbage that
    /// is not valid JSON (`{"results":[xxxx…`), with a correct
    /// `Content-Length`.
    CorruptBody,
    /// Sleep, then forward normally.
    Delay {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Make the server's integer sequences look like CouchDB 2+'s opaque
    /// strings: in JSON responses, `update_seq`, `last_seq` and every
    /// `results[].seq` that is a number `N` becomes `"op<N in hex>-g1AAAAB"`
    /// (deliberately not starting with `N`: a client that parses it breaks),
    /// and a `since=` of that form is turned back into `N` on the way in.
    OpaqueSeqs,
    /// Forward, then pass upstream's JSON body through `edit` (a body that
    /// is not JSON passes unchanged): a server answering wrongly in a
    /// precise way.
    EditJson(fn(&mut serde_json::Value)),
    /// Wait until the [`Gate`] opens, then forward normally: a test stops a
    /// client at a precise request instead of racing it.
    Hold(Gate),
    /// Answer directly with these bytes, which need not be UTF-8.
    RespondBytes {
        /// HTTP status code.
        status: u16,
        /// `Content-Type` of the body.
        content_type: String,
        /// The body, sent with a correct `Content-Length`.
        body: Vec<u8>,
    },
    /// Forward, then send upstream's status and headers with a
    /// `Content-Length` for the full body but only its first half, and
    /// close: a body cut halfway whatever its size.
    TruncateHalf,
    /// Close the client socket with a TCP reset (`SO_LINGER` 0), without
    /// sending any response.
    Reset,
    /// Forward, then send upstream's status, headers and the first half of
    /// its body, and stall for `ms` before closing without the rest: a
    /// client's read timeout fires first if it is shorter.
    StallHalfway {
        /// How long the half-sent answer stalls, in milliseconds.
        ms: u64,
    },
    /// Make the server look like Apache CouchDB 3 (see `super::quirks`).
    CouchDb3(Arc<super::quirks::Couch3>),
    /// Forward a `_revs_diff`, then add CouchDB's `possible_ancestors` to
    /// its answer (see `super::ancestors`).
    PossibleAncestors,
    /// Read the whole request body (`Content-Length`); if it contains
    /// `needle`, answer `status` with the JSON `body`, else forward it.
    RespondIfBodyHas {
        /// The substring looked for in the request body.
        needle: String,
        /// The status of the answer.
        status: u16,
        /// The JSON body of the answer.
        body: String,
    },
}

/// One kind of fault a [`Storm`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormFault {
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// 500 with CouchDB's error body.
    ServerError,
    /// 503 with CouchDB's error body.
    Unavailable,
    /// A TCP reset instead of an answer.
    Reset,
    /// The request held for [`Storm::stall_ms`] before it is forwarded.
    Stall,
    /// The answer's body cut halfway.
    CutHalfway,
    /// The answer's body replaced by invalid JSON of the same length.
    CorruptJson,
}

impl StormFault {
    /// Every kind.
    pub const ALL: [StormFault; 7] = [
        StormFault::TooManyRequests,
        StormFault::ServerError,
        StormFault::Unavailable,
        StormFault::Reset,
        StormFault::Stall,
        StormFault::CutHalfway,
        StormFault::CorruptJson,
    ];

    fn fault(self, stall_ms: u64) -> Fault {
        let error = |status: u16, error: &str| Fault::Respond {
            status,
            content_type: "application/json".to_owned(),
            body: format!(r#"{{"error":"{error}","reason":"injected by the storm"}}"#),
        };
        match self {
            StormFault::TooManyRequests => Fault::RespondWithHeaders {
                status: 429,
                headers: vec![("Retry-After".to_owned(), "1".to_owned())],
                body: r#"{"error":"too_many_requests","reason":"injected by the storm"}"#
                    .to_owned(),
            },
            StormFault::ServerError => error(500, "internal_server_error"),
            StormFault::Unavailable => error(503, "service_unavailable"),
            StormFault::Reset => Fault::Reset,
            StormFault::Stall => Fault::Delay { ms: stall_ms },
            StormFault::CutHalfway => Fault::TruncateHalf,
            StormFault::CorruptJson => Fault::CorruptBody,
        }
    }
}

/// Random faults on the requests no [`Rule`] claims: each request whose
/// line contains one of `endpoints` (all requests when empty) gets, with
/// probability `rate`, a fault drawn uniformly from `kinds`. The draws come
/// from a generator seeded with `seed`, so one seed gives one schedule for
/// one order of arrival.
#[derive(Debug, Clone)]
pub struct Storm {
    /// Seed of the fault schedule.
    pub seed: u64,
    /// Probability, 0 to 1, that a request gets a fault.
    pub rate: f64,
    /// Substrings of the request lines the storm hits (empty: every request).
    pub endpoints: Vec<String>,
    /// The faults drawn from.
    pub kinds: Vec<StormFault>,
    /// How long a [`StormFault::Stall`] holds its request, milliseconds
    /// (longer than the client's request timeout, to time it out).
    pub stall_ms: u64,
}

impl Storm {
    /// `rate` of faults of every kind on every endpoint.
    pub fn everywhere(seed: u64, rate: f64) -> Storm {
        Storm {
            seed,
            rate,
            endpoints: Vec::new(),
            kinds: StormFault::ALL.to_vec(),
            stall_ms: 1500,
        }
    }

    /// The same storm on requests whose line contains `matcher` only
    /// (callable several times: any of them).
    pub fn on(mut self, matcher: impl Into<String>) -> Storm {
        self.endpoints.push(matcher.into());
        self
    }

    /// The same storm with only these kinds of faults.
    pub fn only(mut self, kinds: &[StormFault]) -> Storm {
        self.kinds = kinds.to_vec();
        self
    }
}

/// The storm and its generator's state (splitmix64).
struct StormState {
    storm: Storm,
    rng: u64,
    fired: Vec<(StormFault, usize)>,
}

impl StormState {
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw(&mut self, line: &str) -> Option<Fault> {
        let storm = &self.storm;
        if storm.kinds.is_empty()
            || !(storm.endpoints.is_empty() || storm.endpoints.iter().any(|m| line.contains(m)))
        {
            return None;
        }
        let roll = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        if roll >= self.storm.rate {
            return None;
        }
        let pick = (self.next() % self.storm.kinds.len() as u64) as usize;
        let kind = self.storm.kinds[pick];
        match self.fired.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.fired.push((kind, 1)),
        }
        Some(kind.fault(self.storm.stall_ms))
    }
}

/// A gate held requests wait at (see [`Fault::Hold`]); closed when made,
/// cheap to clone (clones are the same gate).
#[derive(Debug, Clone)]
pub struct Gate(Arc<GateState>);

#[derive(Debug)]
struct GateState {
    open: tokio::sync::watch::Sender<bool>,
    held: std::sync::atomic::AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Gate(Arc::new(GateState {
            open: tokio::sync::watch::Sender::new(false),
            held: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.0.open.send_replace(true);
    }

    /// How many requests are waiting at the gate now.
    pub fn held(&self) -> usize {
        self.0.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `held() >= n`, polling (the proxy runs on its own tasks).
    pub async fn wait_held(&self, n: usize) {
        while self.held() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn pass(&self) {
        struct Held<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let mut rx = self.0.open.subscribe();
        self.0
            .held
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _held = Held(&self.0.held);
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// A fault rule: when `matcher` is a substring of the request line (e.g.
/// `POST /db/_bulk_get?revs=true HTTP/1.1`), apply `fault`.
///
/// The first `skip` matching requests pass through untouched, then the rule
/// fires at most `times` times (`None` = forever). Rules are checked in
/// order; the first matching rule that is not used up decides (a skipped
/// request is forwarded untouched, even if a later rule also matches).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Substring matched against the request line.
    pub matcher: String,
    /// What happens when the rule fires.
    pub fault: Fault,
    /// Number of matching requests to let through before firing.
    pub skip: usize,
    /// Maximum number of times to fire; `None` = unlimited.
    pub times: Option<usize>,
}

impl Rule {
    /// A rule firing `fault` on every request whose line contains `matcher`.
    pub fn new(matcher: impl Into<String>, fault: Fault) -> Self {
        Rule {
            matcher: matcher.into(),
            fault,
            skip: 0,
            times: None,
        }
    }

    /// Answer with `status` and a JSON `body` (`application/json`).
    pub fn respond(matcher: impl Into<String>, status: u16, body: impl Into<String>) -> Self {
        Self::respond_with(matcher, status, "application/json", body)
    }

    /// Answer 404 `not_found`/`missing`, as CouchDB does for a missing
    /// document, attachment or endpoint.
    pub fn not_found(matcher: impl Into<String>) -> Self {
        Self::respond(matcher, 404, r#"{"error":"not_found","reason":"missing"}"#)
    }

    /// Answer with `status`, `content_type` and `body`.
    pub fn respond_with(
        matcher: impl Into<String>,
        status: u16,
        content_type: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self::new(
            matcher,
            Fault::Respond {
                status,
                content_type: content_type.into(),
                body: body.into(),
            },
        )
    }

    /// Answer 429 `too_many_requests`, with `Retry-After: secs` if given.
    pub fn too_many_requests(matcher: impl Into<String>, retry_after: Option<u64>) -> Self {
        Self::new(
            matcher,
            Fault::RespondWithHeaders {
                status: 429,
                headers: retry_after
                    .map(|s| vec![("Retry-After".to_owned(), s.to_string())])
                    .unwrap_or_default(),
                body: r#"{"error":"too_many_requests","reason":"slow down"}"#.to_owned(),
            },
        )
    }

    /// Close the connection without a response.
    pub fn drop_connection(matcher: impl Into<String>) -> Self {
        Self::new(matcher, Fault::DropConnection)
    }

    /// Forward, but deliver only `keep_bytes` of the response body.
    pub fn truncate_body(matcher: impl Into<String>, keep_bytes: usize) -> Self {
        Self::new(matcher, Fault::TruncateBody { keep_bytes })
    }

    /// Forward, but replace the response body with invalid JSON.
    pub fn corrupt_body(matcher: impl Into<String>) -> Self {
        Self::new(matcher, Fault::CorruptBody)
    }

    /// Sleep `ms` milliseconds, then forward.
    pub fn delay(matcher: impl Into<String>, ms: u64) -> Self {
        Self::new(matcher, Fault::Delay { ms })
    }

    /// Forward, then edit the JSON answer with `edit`.
    pub fn edit_json(matcher: impl Into<String>, edit: fn(&mut serde_json::Value)) -> Self {
        Self::new(matcher, Fault::EditJson(edit))
    }

    /// Answer with `status` and a body of raw bytes (`application/json`).
    pub fn respond_bytes(matcher: impl Into<String>, status: u16, body: Vec<u8>) -> Self {
        Self::new(
            matcher,
            Fault::RespondBytes {
                status,
                content_type: "application/json".into(),
                body,
            },
        )
    }

    /// Hold matching requests at `gate` until it opens, then forward.
    pub fn hold(matcher: impl Into<String>, gate: &Gate) -> Self {
        Self::new(matcher, Fault::Hold(gate.clone()))
    }

    /// `_changes` answers lose their rows' `doc` (as from a server that
    /// ignores `include_docs=true`), so a pull fetches every revision with
    /// `_bulk_get`: for tests of what happens to `_bulk_get` requests. Fires
    /// once per `_changes` answer.
    pub fn changes_without_docs() -> Self {
        Self::edit_json("_changes", strip_changes_docs)
    }

    /// Every request: sequences become opaque strings (see [`Fault::OpaqueSeqs`]).
    pub fn opaque_seqs() -> Self {
        Self::new("", Fault::OpaqueSeqs)
    }

    /// Every request: the server looks like Apache CouchDB 3 (see
    /// `super::quirks`), with a state of its own (database creation times).
    pub fn couchdb3() -> Self {
        Self::new("", Fault::CouchDb3(Arc::default()))
    }

    /// `_revs_diff` answers carry CouchDB's `possible_ancestors` (the
    /// remote's leaves of a lower generation), which PouchDB Server leaves
    /// out.
    pub fn possible_ancestors() -> Self {
        Self::new("/_revs_diff", Fault::PossibleAncestors)
    }

    /// Answer `status` with the JSON `body` to matching requests whose body
    /// contains `needle` (one document of a `_bulk_docs`, say); forward the
    /// others.
    pub fn respond_if_body_has(
        matcher: impl Into<String>,
        needle: impl Into<String>,
        status: u16,
        body: impl Into<String>,
    ) -> Self {
        Self::new(
            matcher,
            Fault::RespondIfBodyHas {
                needle: needle.into(),
                status,
                body: body.into(),
            },
        )
    }

    /// Send half the body, then stall `ms` and close (see
    /// [`Fault::StallHalfway`]).
    pub fn stall_halfway(matcher: impl Into<String>, ms: u64) -> Self {
        Self::new(matcher, Fault::StallHalfway { ms })
    }

    /// Let the first `n` matching requests through untouched.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Fire at most `n` times.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// Fire at most once.
    pub fn once(self) -> Self {
        self.times(1)
    }
}

/// Removes `doc` from every row of a `_changes` answer.
fn strip_changes_docs(page: &mut serde_json::Value) {
    if let Some(rows) = page["results"].as_array_mut() {
        for row in rows {
            if let Some(row) = row.as_object_mut() {
                row.remove("doc");
            }
        }
    }
}

/// A rule plus its usage counters.
struct Armed {
    rule: Rule,
    skipped: usize,
    fired: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Armed>,
    requests: Vec<String>,
    fired: usize,
    storm: Option<StormState>,
    heads: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fault-injecting HTTP/1.1 proxy on `127.0.0.1:<random port>`.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Shared,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and starts proxying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Shared::default();
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Ok(FaultProxy {
            addr,
            state,
            accept,
        })
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces all rules (and resets their skip/fire counters).
    pub fn set_rules(&self, rules: Vec<Rule>) {
        lock(&self.state).rules = rules
            .into_iter()
            .map(|rule| Armed {
                rule,
                skipped: 0,
                fired: 0,
            })
            .collect();
    }

    /// Removes all rules: everything passes through.
    pub fn clear_rules(&self) {
        self.set_rules(Vec::new());
    }

    /// Every request line seen so far, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// How many request lines seen so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Forgets the recorded request lines (and heads).
    pub fn clear_requests(&self) {
        let mut st = lock(&self.state);
        st.requests.clear();
        st.heads.clear();
    }

    /// Every request head seen so far (request line and headers, as
    /// received), in arrival order: for asserting on headers.
    pub fn request_heads(&self) -> Vec<String> {
        lock(&self.state).heads.clone()
    }

    /// How many times any rule has fired (skipped requests not included).
    pub fn fired(&self) -> usize {
        lock(&self.state).fired
    }

    /// Starts a [`Storm`] (replacing any other) on the requests no rule
    /// claims; `None` ends it.
    pub fn set_storm(&self, storm: Option<Storm>) {
        lock(&self.state).storm = storm.map(|storm| StormState {
            rng: storm.seed,
            storm,
            fired: Vec::new(),
        });
    }

    /// How many faults of each kind the storm injected so far.
    pub fn storm_fired(&self) -> Vec<(StormFault, usize)> {
        lock(&self.state)
            .storm
            .as_ref()
            .map(|s| s.fired.clone())
            .unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Accepts connections forever. Connection tasks live in a `JoinSet`, so
/// aborting this task aborts them too, and a panicking connection task
/// cannot take the loop down.
async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Shared) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                conns.spawn(handle(sock, upstream, state.clone()));
            }
            // e.g. EMFILE: back off briefly instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves one client connection (one request).
async fn handle(mut client: TcpStream, upstream: SocketAddr, state: Shared) {
    let Ok((buf, Some(head_end))) = read_head(&mut client).await else {
        return;
    };
    let head = &buf[..head_end - 4];
    let line = String::from_utf8_lossy(lines(head).next().unwrap_or_default()).into_owned();
    lock(&state)
        .heads
        .push(String::from_utf8_lossy(head).into_owned());
    let fault = decide(&state, &line);
    let fwd_head = rewrite_head(
        head,
        &["connection", "keep-alive", "proxy-connection"],
        &["Connection: close"],
    );
    let body_start = &buf[head_end..];

    match fault {
        None => forward(client, upstream, &fwd_head, body_start).await,
        Some(Fault::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            forward(client, upstream, &fwd_head, body_start).await;
        }
        Some(Fault::RespondBytes {
            status,
            content_type,
            body,
        }) => {
            let headers = [("Content-Type", content_type.as_str())];
            canned(client, status, &headers, &body).await;
        }
        Some(Fault::Hold(gate)) => {
            gate.pass().await;
            forward(client, upstream, &fwd_head, body_start).await;
        }
        Some(Fault::DropConnection) => drop(client),
        Some(Fault::Reset) => {
            // Deprecated because a non-zero linger blocks the thread on
            // drop; a zero linger sends the reset at once.
            #[allow(deprecated)]
            let _ = client.set_linger(Some(Duration::ZERO));
            drop(client);
        }
        Some(Fault::TruncateHalf) => {
            mangle(client, upstream, &fwd_head, body_start, Mangle::Half).await;
        }
        Some(Fault::StallHalfway { ms }) => {
            let how = Mangle::Stall(Duration::from_millis(ms));
            mangle(client, upstream, &fwd_head, body_start, how).await;
        }
        Some(Fault::Respond {
            status,
            content_type,
            body,
        }) => {
            let headers = [("Content-Type", content_type.as_str())];
            canned(client, status, &headers, body.as_bytes()).await;
        }
        Some(Fault::RespondWithHeaders {
            status,
            headers,
            body,
        }) => {
            let headers: Vec<(&str, &str)> = std::iter::once(("Content-Type", "application/json"))
                .chain(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect();
            canned(client, status, &headers, body.as_bytes()).await;
        }
        Some(Fault::TruncateBody { keep_bytes }) => {
            let how = Mangle::Truncate(keep_bytes);
            mangle(client, upstream, &fwd_head, body_start, how).await;
        }
        Some(Fault::CorruptBody) => {
            mangle(client, upstream, &fwd_head, body_start, Mangle::Corrupt).await;
        }
        Some(Fault::EditJson(edit)) => {
            mangle(client, upstream, &fwd_head, body_start, Mangle::Edit(edit)).await;
        }
        Some(Fault::CouchDb3(quirks)) => {
            super::quirks::serve(client, upstream, &line, &fwd_head, body_start, &quirks).await;
        }
        Some(Fault::RespondIfBodyHas {
            needle,
            status,
            body,
        }) => {
            let Some(request) = whole_body(&mut client, head, body_start).await else {
                return;
            };
            if find(&request, needle.as_bytes()).is_some() {
                let headers = [("Content-Type", "application/json")];
                canned(client, status, &headers, body.as_bytes()).await;
            } else {
                forward(client, upstream, &fwd_head, &request).await;
            }
        }
        Some(Fault::PossibleAncestors) => {
            super::ancestors::serve(client, upstream, &line, &fwd_head, body_start).await;
        }
        Some(Fault::OpaqueSeqs) => {
            let fwd_head = plain_since(&fwd_head);
            mangle(client, upstream, &fwd_head, body_start, Mangle::OpaqueSeqs).await;
        }
    }
}

/// The whole request body, by its `Content-Length` (what already arrived
/// with the head, then the rest); `None` if the client goes away first.
async fn whole_body(client: &mut TcpStream, head: &[u8], body_start: &[u8]) -> Option<Vec<u8>> {
    let len: usize = lines(head)
        .skip(1)
        .find(|h| header_name(h).eq_ignore_ascii_case(b"content-length"))
        .and_then(|h| {
            String::from_utf8_lossy(h)
                .split_once(':')
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let mut body = body_start.to_vec();
    while body.len() < len {
        let mut buf = vec![0u8; (len - body.len()).min(64 * 1024)];
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    Some(body)
}

/// A whole raw HTTP response split into its head (without the blank
/// line), its status and its body, de-chunked when it came chunked (left
/// as it came if the chunks do not parse). `None` when there is no head.
pub(super) fn split_response(raw: &[u8]) -> Option<(&[u8], u16, Vec<u8>)> {
    let pos = find(raw, b"\r\n\r\n")?;
    let (head, body_raw) = (&raw[..pos], &raw[pos + 4..]);
    let status = String::from_utf8_lossy(lines(head).next().unwrap_or_default())
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = lines(head).skip(1).any(|h| {
        header_name(h).eq_ignore_ascii_case(b"transfer-encoding")
            && String::from_utf8_lossy(h)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let body = if chunked {
        dechunk(body_raw).unwrap_or_else(|| body_raw.to_vec())
    } else {
        body_raw.to_vec()
    };
    Some((head, status, body))
}

/// Records `line` and picks the fault to apply, if any.
fn decide(state: &Mutex<State>, line: &str) -> Option<Fault> {
    let mut st = lock(state);
    st.requests.push(line.to_owned());
    let mut fault = None;
    for armed in &mut st.rules {
        if !line.contains(armed.rule.matcher.as_str()) {
            continue;
        }
        if armed.rule.times.is_some_and(|t| armed.fired >= t) {
            continue;
        }
        if armed.skipped < armed.rule.skip {
            armed.skipped += 1;
            return None;
        }
        armed.fired += 1;
        fault = Some(armed.rule.fault.clone());
        break;
    }
    if fault.is_some() {
        st.fired += 1;
    } else if let Some(storm) = st.storm.as_mut() {
        fault = storm.draw(line);
    }
    fault
}

/// Answers the client itself, without asking the server: `status`, the
/// `headers` given, then `Content-Length` and `Connection: close`.
pub(super) async fn canned(
    mut client: TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut resp = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        resp.push_str(&format!("{name}: {value}\r\n"));
    }
    resp.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut resp = resp.into_bytes();
    resp.extend_from_slice(body);
    if client.write_all(&resp).await.is_ok() {
        finish(client).await;
    }
}

/// Forwards the request and relays the response (with `Connection: close`).
pub(super) async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    head: &[u8],
    body_start: &[u8],
) {
    let Some(mut up) = connect(upstream, head, body_start).await else {
        return;
    };
    {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = up.split();
        let request_body = async {
            let _ = tokio::io::copy(&mut cr, &mut uw).await;
            std::future::pending::<()>().await;
        };
        let response = relay_response(&mut ur, &mut cw);
        tokio::select! {
            () = request_body => {}
            ok = response => if !ok { return },
        }
    }
    drop(up);
    finish(client).await;
}

/// Copies upstream's response to the client, rewriting its head to carry
/// `Connection: close`. Returns false if the client could not be written to.
async fn relay_response<R, W>(up: &mut R, client: &mut W) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Ok((buf, head_end)) = read_head(up).await else {
        return false;
    };
    let out = match head_end {
        Some(end) if !buf.starts_with(b"HTTP/1.1 1") && !buf.starts_with(b"HTTP/1.0 1") => {
            let mut out = rewrite_head(
                &buf[..end - 4],
                &["connection", "keep-alive"],
                &["Connection: close"],
            );
            out.extend_from_slice(&buf[end..]);
            out
        }
        _ => buf,
    };
    if client.write_all(&out).await.is_err() {
        return false;
    }
    tokio::io::copy(up, client).await.is_ok()
}

/// What [`mangle`] does to a response body.
#[derive(Clone, Copy)]
enum Mangle {
    /// Keep only this many bytes.
    Truncate(usize),
    /// Keep the first half of the body.
    Half,
    /// Same-length invalid JSON.
    Corrupt,
    /// Integer sequences become opaque strings.
    OpaqueSeqs,
    /// The JSON body edited.
    Edit(fn(&mut serde_json::Value)),
    /// The first half of the body, then a stall, then the connection closed.
    Stall(Duration),
}

/// Copies the rest of the client's request to `up` and reads the server's
/// whole answer (whatever arrived, if the connection fails midway); empty
/// if the client goes away first.
pub(super) async fn whole_response(client: &mut TcpStream, mut up: TcpStream) -> Vec<u8> {
    let (mut cr, _) = client.split();
    let (mut ur, mut uw) = up.split();
    let request_body = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        std::future::pending::<()>().await;
    };
    let response = async {
        let mut raw = Vec::new();
        let _ = ur.read_to_end(&mut raw).await;
        raw
    };
    tokio::select! {
        () = request_body => Vec::new(),
        raw = response => raw,
    }
}

/// Forwards the request, reads the whole response, then sends the client a
/// mangled version of it.
async fn mangle(
    mut client: TcpStream,
    upstream: SocketAddr,
    head: &[u8],
    body_start: &[u8],
    how: Mangle,
) {
    let Some(up) = connect(upstream, head, body_start).await else {
        return;
    };
    let raw = whole_response(&mut client, up).await;
    let out = mangled_response(&raw, how);
    if let Mangle::Stall(pause) = how {
        // `out` is the head and the first half of the body: send it, stall,
        // and close without the rest.
        if client.write_all(&out).await.is_ok() && client.flush().await.is_ok() {
            tokio::time::sleep(pause).await;
        }
        return;
    }
    if client.write_all(&out).await.is_ok() {
        finish(client).await;
    }
}

/// Builds the mangled response from upstream's raw response.
fn mangled_response(raw: &[u8], how: Mangle) -> Vec<u8> {
    let Some(pos) = find(raw, b"\r\n\r\n") else {
        // Not a parsable response: cut it or send it as is.
        return match how {
            Mangle::Truncate(k) => raw[..k.min(raw.len())].to_vec(),
            Mangle::Half | Mangle::Stall(_) => raw[..raw.len() / 2].to_vec(),
            Mangle::Corrupt | Mangle::OpaqueSeqs | Mangle::Edit(_) => raw.to_vec(),
        };
    };
    let head = &raw[..pos];
    let body_raw = &raw[pos + 4..];
    let chunked = lines(head).skip(1).any(|h| {
        header_name(h).eq_ignore_ascii_case(b"transfer-encoding")
            && String::from_utf8_lossy(h)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let mut body = if chunked {
        dechunk(body_raw).unwrap_or_else(|| body_raw.to_vec())
    } else {
        body_raw.to_vec()
    };
    match how {
        Mangle::OpaqueSeqs => body = opaque_seqs_in(&body),
        Mangle::Edit(edit) => {
            if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) {
                edit(&mut json);
                body = serde_json::to_vec(&json).unwrap_or(body);
            }
        }
        Mangle::Truncate(_) | Mangle::Half | Mangle::Stall(_) | Mangle::Corrupt => {}
    }
    let len = body.len();
    let mut out = head_for_body(head, len);
    match how {
        Mangle::Truncate(k) => out.extend_from_slice(&body[..k.min(len)]),
        Mangle::Half | Mangle::Stall(_) => out.extend_from_slice(&body[..len / 2]),
        Mangle::Corrupt => {
            let mut garbage = b"{\"results\":[".to_vec();
            garbage.resize(len.max(garbage.len()), b'x');
            garbage.truncate(len);
            out.extend_from_slice(&garbage);
        }
        Mangle::OpaqueSeqs | Mangle::Edit(_) => out.extend_from_slice(&body),
    }
    out
}

/// The opaque form of integer sequence `n` (see [`Fault::OpaqueSeqs`]).
pub fn opaque_seq(n: u64) -> String {
    format!("op{n:x}-g1AAAAB")
}

pub(super) fn plain_seq(s: &str) -> Option<u64> {
    let hex = s.strip_prefix("op")?.strip_suffix("-g1AAAAB")?;
    u64::from_str_radix(hex, 16).ok()
}

/// A JSON body with its integer sequences made opaque; anything that is not
/// a JSON object passes unchanged.
fn opaque_seqs_in(body: &[u8]) -> Vec<u8> {
    use serde_json::Value;
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    let opaque = |v: &mut Value| {
        if let Some(n) = v.as_u64() {
            *v = Value::String(opaque_seq(n));
        }
    };
    for key in ["update_seq", "last_seq"] {
        obj.get_mut(key).map(opaque);
    }
    if let Some(Value::Array(rows)) = obj.get_mut("results") {
        rows.iter_mut()
            .filter_map(|r| r.get_mut("seq"))
            .for_each(opaque);
    }
    serde_json::to_vec(&obj).unwrap_or_else(|_| body.to_vec())
}

/// The request head with an opaque `since=` turned back into the server's
/// integer.
pub(super) fn plain_since(head: &[u8]) -> Vec<u8> {
    let Some(eol) = find(head, b"\r\n") else {
        return head.to_vec();
    };
    let line = String::from_utf8_lossy(&head[..eol]);
    let Some(at) = line.find("since=") else {
        return head.to_vec();
    };
    let start = at + "since=".len();
    let end = line[start..]
        .find(['&', ' '])
        .map_or(line.len(), |i| start + i);
    let Some(n) = plain_seq(&line[start..end]) else {
        return head.to_vec();
    };
    let mut out = format!("{}{n}{}", &line[..start], &line[end..]).into_bytes();
    out.extend_from_slice(&head[eol..]);
    out
}

/// Decodes a chunked body; `None` if it is malformed or incomplete.
pub(super) fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n")?;
        let size_line = std::str::from_utf8(&data[..eol]).ok()?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Connects to upstream and sends the request head plus any body bytes
/// already read from the client.
pub(super) async fn connect(
    upstream: SocketAddr,
    head: &[u8],
    body_start: &[u8],
) -> Option<TcpStream> {
    let mut up = TcpStream::connect(upstream).await.ok()?;
    let _ = up.set_nodelay(true);
    up.write_all(head).await.ok()?;
    up.write_all(body_start).await.ok()?;
    Some(up)
}

/// Half-closes the client socket, then discards whatever it still sends
/// until it closes (or a timeout), so the close is not turned into a reset.
pub(super) async fn finish(mut client: TcpStream) {
    let _ = client.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 8192];
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
}

/// Reads until `\r\n\r\n`, EOF or `MAX_HEAD` bytes. Returns the bytes read
/// and the offset just past `\r\n\r\n`, if found.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(Vec<u8>, Option<usize>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok((buf, None));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = find(&buf[from..], b"\r\n\r\n") {
            return Ok((buf, Some(from + pos + 4)));
        }
        if buf.len() >= MAX_HEAD {
            return Ok((buf, None));
        }
    }
}

/// A response head (without its blank line) rewritten for a body of `len`
/// bytes that the proxy sends itself, whole and unchunked: its own
/// `Content-Length`, `Connection: close`, and no `ETag` (the body may no
/// longer be the one it named).
pub(super) fn head_for_body(head: &[u8], len: usize) -> Vec<u8> {
    rewrite_head(
        head,
        &[
            "connection",
            "keep-alive",
            "content-length",
            "transfer-encoding",
            "etag",
        ],
        &[&format!("Content-Length: {len}"), "Connection: close"],
    )
}

/// Rebuilds a head (given without its final blank line): keeps the start
/// line, drops headers named in `remove` (lowercase), appends `add`, and
/// terminates it with `\r\n\r\n`.
pub(super) fn rewrite_head(head: &[u8], remove: &[&str], add: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 64);
    let mut it = lines(head);
    out.extend_from_slice(it.next().unwrap_or_default());
    out.extend_from_slice(b"\r\n");
    for h in it {
        let name = header_name(h);
        if h.is_empty()
            || remove
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    for a in add {
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Lines of a head, split on `\n` with any trailing `\r` removed.
pub(super) fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The (trimmed) name of a header line.
pub(super) fn header_name(line: &[u8]) -> &[u8] {
    let name = line
        .iter()
        .position(|&b| b == b':')
        .map_or(line, |i| &line[..i]);
    name.trim_ascii()
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}
