//! Reading answers: every body the client reads goes through here, so no
//! answer is held in memory beyond its cap, and an error status is read
//! into [`RemoteError::Http`] the same way by the pull and the push.
//!
//! JSON answers are read whole, up to [`RemoteConfig::max_response_bytes`];
//! attachment bodies are handed out chunk by chunk ([`AttachmentStream`]),
//! up to [`RemoteConfig::max_attachment_bytes`], for the caller to store as
//! they arrive. Nothing here retries or touches the store.
//!
//! [`RemoteConfig::max_response_bytes`]: super::RemoteConfig::max_response_bytes
//! [`RemoteConfig::max_attachment_bytes`]: super::RemoteConfig::max_attachment_bytes

use super::client::transport_error;
use super::RemoteError;
use bytes::{Bytes, BytesMut};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use url::Url;

/// What an error body is read up to: CouchDB's `{"error","reason"}` is
/// small, and a proxy's HTML page only needs its first words.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Characters of a body shown in an error message.
const EXCERPT_CHARS: usize = 160;

/// Which setting raises a cap, named in [`RemoteError::TooLarge`].
pub(crate) const RESPONSE_SETTING: &str =
    "RemoteConfig::max_response_bytes (settee: --max-response-mib)";
/// See [`RESPONSE_SETTING`].
pub(crate) const ATTACHMENT_SETTING: &str =
    "RemoteConfig::max_attachment_bytes (settee: --max-attachment-mib)";

/// Reads a whole body, refusing one over `limit` bytes: at once when its
/// `Content-Length` says so, else as soon as that many bytes arrived.
pub(crate) async fn read_capped(
    mut resp: Response,
    limit: u64,
    setting: &'static str,
    method: &Method,
    url: &Url,
) -> Result<Bytes, RemoteError> {
    let too_large = || RemoteError::TooLarge {
        method: method.to_string(),
        url: url.to_string(),
        limit,
        setting,
    };
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let capacity = declared.unwrap_or(0).min(limit).min(1 << 20) as usize;
    let mut buf = BytesMut::with_capacity(capacity);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(method, url, e))?
    {
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads an error answer (not a 429) into [`RemoteError::Http`].
pub(crate) async fn http_error(resp: Response, method: &Method, url: &Url) -> RemoteError {
    let status = resp.status();
    let bytes = match read_capped(resp, MAX_ERROR_BODY, RESPONSE_SETTING, method, url).await {
        Ok(b) => b,
        // A huge or broken error page: the status says enough.
        Err(_) => Bytes::new(),
    };
    error_from_body(status, &bytes, method, url)
}

/// The one reading of an error body: CouchDB's `error` and `reason`;
/// where the body is not JSON (a proxy's page) or has no string `reason`,
/// a short excerpt of it instead, so what the server said is not lost.
pub(crate) fn error_from_body(
    status: StatusCode,
    bytes: &[u8],
    method: &Method,
    url: &Url,
) -> RemoteError {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    RemoteError::Http {
        method: method.to_string(),
        url: url.to_string(),
        status,
        error: field("error")
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
        reason: field("reason").unwrap_or_else(|| excerpt(bytes)),
    }
}

/// A short, single-line excerpt of a body, for error messages.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(empty body)".to_owned();
    }
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// An attachment's body as it arrives, chunk by chunk, refused once it
/// passes its cap. A broken or stalled connection (the read timeout) is a
/// transient error from [`AttachmentStream::chunk`]; the caller starts over.
#[derive(Debug)]
pub struct AttachmentStream {
    resp: Response,
    method: Method,
    url: Url,
    limit: Option<u64>,
    read: u64,
}

impl AttachmentStream {
    pub(crate) fn new(resp: Response, method: Method, url: Url, limit: Option<u64>) -> Self {
        AttachmentStream {
            resp,
            method,
            url,
            limit,
            read: 0,
        }
    }

    fn too_large(&self, limit: u64) -> RemoteError {
        RemoteError::TooLarge {
            method: self.method.to_string(),
            url: self.url.to_string(),
            limit,
            setting: ATTACHMENT_SETTING,
        }
    }

    /// The length the server announced, if it did.
    pub fn content_length(&self) -> Option<u64> {
        self.resp.content_length()
    }

    /// True when the body comes gzip-encoded (`Content-Encoding: gzip`):
    /// the bytes as the server stores them, not the attachment's own.
    pub fn is_gzip(&self) -> bool {
        self.resp
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
    }

    /// Checks the announced length against the cap before any byte is read.
    pub(crate) fn check_declared(&self) -> Result<(), RemoteError> {
        match (self.limit, self.content_length()) {
            (Some(limit), Some(n)) if n > limit => Err(self.too_large(limit)),
            _ => Ok(()),
        }
    }

    /// The next chunk of the body, `None` at its end.
    ///
    /// # Errors
    /// [`RemoteError::TooLarge`] past the cap; [`RemoteError::Timeout`] when
    /// no byte arrived within the read timeout; [`RemoteError::Transport`]
    /// when the connection broke (a body cut short).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, RemoteError> {
        let chunk = self
            .resp
            .chunk()
            .await
            .map_err(|e| transport_error(&self.method, &self.url, e))?;
        if let Some(c) = &chunk {
            self.read += c.len() as u64;
            if let Some(limit) = self.limit.filter(|l| self.read > *l) {
                return Err(self.too_large(limit));
            }
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn parts(e: RemoteError) -> (u16, String, String) {
        match e {
            RemoteError::Http {
                status,
                error,
                reason,
                ..
            } => (status.as_u16(), error, reason),
            other => panic!("not an HTTP error: {other:?}"),
        }
    }

    fn read(status: u16, body: &[u8]) -> (u16, String, String) {
        let url = Url::parse("http://h/db").unwrap();
        parts(error_from_body(
            StatusCode::from_u16(status).unwrap(),
            body,
            &Method::GET,
            &url,
        ))
    }

    #[test]
    fn couchdb_error_bodies_give_error_and_reason() {
        assert_eq!(
            read(404, br#"{"error":"not_found","reason":"missing"}"#),
            (404, "not_found".into(), "missing".into())
        );
    }

    #[test]
    fn other_bodies_are_shown_as_a_short_excerpt() {
        let (_, error, reason) = read(502, b"<html>\n  <h1>Bad   gateway</h1>\n</html>");
        assert_eq!(error, "Bad Gateway");
        assert_eq!(reason, "<html> <h1>Bad gateway</h1> </html>");
        // JSON without a reason keeps its text too.
        let (_, error, reason) = read(400, br#"{"error":"bad_request"}"#);
        assert_eq!(error, "bad_request");
        assert_eq!(reason, r#"{"error":"bad_request"}"#);
        assert_eq!(read(500, b"").2, "(empty body)");
        let long = "é".repeat(500);
        let reason = read(500, long.as_bytes()).2;
        assert_eq!(reason.chars().count(), EXCERPT_CHARS + 1);
        assert!(reason.ends_with('…'));
    }
}
