//! Errors of the remote protocol client, shaped so the replicator can branch
//! on cause: retry what is transient, stop on what needs a human.

use reqwest::StatusCode;

/// What went wrong talking to a remote database.
///
/// URLs in these errors never carry credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The database URL could not be used.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as given, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No connection could be made (refused, DNS, TLS handshake).
    #[error("cannot connect to {url}: {cause}; is the server running and the address right?")]
    Connect {
        /// The URL requested.
        url: String,
        /// The innermost cause, e.g. "Connection refused (os error 111)".
        cause: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// The server did not answer in time.
    #[error(
        "{method} {url} timed out; the server may be overloaded, try again or raise the timeout"
    )]
    Timeout {
        /// The HTTP method.
        method: String,
        /// The URL requested.
        url: String,
    },

    /// The connection broke while sending the request or reading the answer.
    #[error("{method} {url}: connection lost: {cause}")]
    Transport {
        /// The HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// The innermost cause, e.g. "connection closed before message completed".
        cause: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with an error status and (usually) CouchDB's
    /// `{"error": ..., "reason": ...}` body.
    #[error("{method} {url} failed: HTTP {status} {error}: {reason}; {hint}", hint = http_hint(*status))]
    Http {
        /// The HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// The status code.
        status: StatusCode,
        /// CouchDB's `error` field (or the status' reason phrase).
        error: String,
        /// CouchDB's `reason` field (or a short excerpt of a non-JSON body).
        reason: String,
    },

    /// The server asked the client to slow down (HTTP 429), possibly saying
    /// for how long (`Retry-After`). The pull's requests retry it (waiting
    /// at least `Retry-After` and slowing down, see [`crate::RetryPolicy`]);
    /// the push's are sent once and leave it to the outbox worker.
    #[error("{method} {url}: HTTP 429 too many requests{after}; the server is busy, retry later", after = retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// The server's `Retry-After`, when it sent one in seconds.
        retry_after: Option<std::time::Duration>,
    },

    /// The answer was not the JSON it should be: truncated, invalid or of
    /// the wrong shape.
    #[error("{method} {url}: invalid answer ({bytes} bytes): {detail}")]
    InvalidResponse {
        /// The HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// Body length received.
        bytes: usize,
        /// The parse error, e.g. "EOF while parsing a list at line 1 column 4096".
        detail: String,
    },

    /// An answer was larger than its cap allows (a JSON answer read whole,
    /// or an attachment's bytes); `setting` names what to raise.
    #[error("{method} {url}: the answer is larger than {limit} bytes; raise {setting} if it is expected")]
    TooLarge {
        /// The HTTP method.
        method: String,
        /// The URL requested.
        url: String,
        /// The cap, in bytes.
        limit: u64,
        /// The setting that raises the cap.
        setting: &'static str,
    },

    /// The server answers, but is not CouchDB (a web page, another API).
    #[error("{url} does not look like a CouchDB server: {detail}; check the URL points at a CouchDB database")]
    NotCouchDb {
        /// The URL requested.
        url: String,
        /// What was seen instead.
        detail: String,
    },
}

impl RemoteError {
    /// When this failure belongs to one document rather than to the pull:
    /// the server answered about that document (a 4xx other than 401, 403,
    /// 408 and 429, a 500 from a document it cannot serve, an answer that is
    /// not valid JSON), CouchDB's `error` and `reason` for it. Connection
    /// problems, timeouts, authentication and overload stay pull failures:
    /// they say nothing about the document.
    pub(crate) fn document_failure(&self) -> Option<(String, String)> {
        match self {
            RemoteError::Http {
                status,
                error,
                reason,
                ..
            } => {
                let code = status.as_u16();
                let whole_db =
                    code == 404 && (reason == "no_db_file" || reason == "Database does not exist.");
                let per_doc = ((400..500).contains(&code) && ![401, 403, 408, 429].contains(&code))
                    || code == 500;
                (per_doc && !whole_db).then(|| (error.clone(), reason.clone()))
            }
            RemoteError::InvalidResponse { detail, .. } => {
                Some(("invalid_response".to_owned(), detail.clone()))
            }
            // One document (or attachment) too large for the configured
            // cap: the others can still be stored.
            RemoteError::TooLarge { .. } => Some(("too_large".to_owned(), self.to_string())),
            _ => None,
        }
    }
}

fn http_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "check the user name and password",
        403 => "the user lacks permission to read this database",
        404 => "check the database name (does it exist?)",
        408 | 429 => "the server is busy; retry later",
        500..=599 => "server-side error; retry later",
        _ => "the request was refused",
    }
}

impl RemoteError {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            RemoteError::Http { status, .. } => Some(*status),
            RemoteError::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            _ => None,
        }
    }

    /// How long the server asked the client to wait (`Retry-After` of a 429).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            RemoteError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True when trying again later may succeed: 5xx, 408, 429, timeouts,
    /// refused or broken connections, truncated bodies. False for what needs
    /// a change by a person: bad URL, 4xx, not CouchDB, invalid JSON.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Connect { .. }
            | RemoteError::Timeout { .. }
            | RemoteError::Transport { .. }
            | RemoteError::RateLimited { .. } => true,
            RemoteError::Http { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            RemoteError::InvalidResponse { detail, .. } => detail.starts_with("EOF"),
            RemoteError::InvalidUrl { .. }
            | RemoteError::NotCouchDb { .. }
            | RemoteError::TooLarge { .. } => false,
        }
    }
}

/// The innermost message of an error chain: reqwest's own message ("error
/// sending request") says less than its source ("Connection refused").
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
