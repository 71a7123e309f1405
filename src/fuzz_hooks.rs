//! Entry points for the `cargo fuzz` targets in `fuzz/` (not a public API:
//! hidden from the docs, may change at any time).
//!
//! The fuzz crate is outside this package and sees only public items; these
//! functions hand it the crate-internal parsers it must hammer (the
//! `_bulk_get` answer, the store's record decoding) without making them
//! part of the API. Each must return, never panic, whatever the input.

use crate::remote::client::BulkGetAnswer;
use crate::remote::{ChangesPage, FetchedRev};
use crate::store::DocRecord;

/// Parses a `_changes` answer as the pull does; the number of rows.
pub fn parse_changes(bytes: &[u8]) -> Option<usize> {
    let page: ChangesPage = serde_json::from_slice(bytes).ok()?;
    Some(
        page.results
            .iter()
            .filter(|r| r.is_first_revision_only())
            .count(),
    )
}

/// Parses a `_bulk_get` answer as the pull does; the revisions answered.
pub fn parse_bulk_get(bytes: &[u8]) -> Option<usize> {
    let answer: BulkGetAnswer = serde_json::from_slice(bytes).ok()?;
    let revs = answer.into_fetched();
    Some(
        revs.iter()
            .filter(|r| matches!(r, FetchedRev::Doc { .. }))
            .count(),
    )
}

/// Decodes a stored document record (key: the document id) and, when it
/// decodes, encodes it again: true when the round trip gives the same
/// record (a fuzz target asserts that).
pub fn decode_record(key: &[u8], bytes: &[u8]) -> bool {
    match DocRecord::decode(key, bytes) {
        Ok(record) => {
            let again = record.encode();
            DocRecord::decode(key, &again).is_ok_and(|r| r == record)
        }
        Err(_) => false,
    }
}

/// What the router's fuzzing serves (the fuzz target and the test in
/// `serve/router_fuzz.rs` alike): `replica` with a document holding an
/// attachment, one with a slash in its id and a design document with a
/// reduced view written into it, served in process as database `db`.
#[cfg(feature = "serve")]
pub fn serve_fixture(replica: &crate::Replica) -> crate::Result<crate::serve::InProcess> {
    use serde_json::json;
    replica.put_blocking(
        "doc",
        &json!({"n": 1, "_attachments": {
            "att.txt": {"content_type": "text/plain", "data": "aGVsbG8="}}}),
    )?;
    replica.put_blocking("a/b", &json!({"n": 2}))?;
    replica.put_blocking(
        "_design/d",
        &json!({"views": {"v": {
            "map": "function (doc) { if (doc.n) emit(doc.n, 1); }", "reduce": "_count"}}}),
    )?;
    crate::serve::InProcess::new(
        replica.clone(),
        crate::serve::ServeConfig::builder().db_name("db").build()?,
    )
}

/// Sends one request built from `bytes` to a `settee serve` endpoint in
/// process (`router`), and checks what CouchDB's clients rely on: a
/// refused request is a 4xx with CouchDB's `{"error", "reason"}` body and
/// leaves the replica as it was; no request is a 5xx (nothing a client
/// sends is the server's fault). Returns the status; panics when a check
/// fails (the fuzzer's finding).
#[cfg(feature = "serve")]
pub async fn serve_request(
    router: &crate::serve::InProcess,
    replica: &crate::Replica,
    bytes: &[u8],
) -> u16 {
    use axum::http::{HeaderMap, HeaderValue, Method, Uri};
    // The input, split on its first two newlines: a method byte, the
    // request target, then the body.
    let mut parts = bytes.splitn(3, |b| *b == b'\n');
    let method = match parts.next().and_then(|m| m.first()).map(|b| b % 6) {
        Some(0) => Method::GET,
        Some(1) => Method::PUT,
        Some(2) => Method::POST,
        Some(3) => Method::DELETE,
        Some(4) => Method::HEAD,
        _ => Method::PATCH,
    };
    let target = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let body = parts.next().unwrap_or_default().to_vec();
    let Ok(uri) = format!("/{}", target.trim_start_matches('/')).parse::<Uri>() else {
        return 0; // hyper would refuse it before any handler
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let seq_before = replica.update_seq().ok();
    let queued_before = replica.outbox().len().ok();
    let (status, _, answer) = router.call(method, uri.clone(), headers, body).await;
    assert!(
        !status.is_server_error(),
        "{uri}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    if status.is_client_error() {
        if status != axum::http::StatusCode::NOT_MODIFIED && !answer.is_empty() {
            // Not JSON reads as null, and fails the check below.
            let error: serde_json::Value =
                serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
            assert!(
                error["error"].is_string() && error["reason"].is_string(),
                "{uri}: {status} {error}"
            );
        }
        assert_eq!(
            replica.update_seq().ok(),
            seq_before,
            "{uri}: refused, yet written"
        );
        assert_eq!(
            replica.outbox().len().ok(),
            queued_before,
            "{uri}: refused, yet queued"
        );
    }
    status.as_u16()
}
