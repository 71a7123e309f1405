//! The push half of the replication protocol: `_revs_diff` (which of our
//! revisions the remote lacks, and which of its revisions could be their
//! ancestors) and `_bulk_docs` with `new_edits: false` (store exactly these
//! revisions, with their history).
//!
//! Each request is sent once: the outbox worker owns retrying, because its
//! status policy treats causes differently (a 413 splits a batch, a 429
//! honours `Retry-After`, a 401 pauses). A 429 comes back as
//! [`RemoteError::RateLimited`] with the server's `Retry-After`. Nothing
//! here touches the local store.

use super::body;
use super::client::{rate_limited, transport_error};
use super::{Remote, RemoteError};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use url::Url;

/// The remote's answer for one document of a `_revs_diff`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RevsDiffEntry {
    /// Revisions the remote does not have.
    #[serde(default)]
    pub missing: Vec<String>,
    /// Revisions the remote has that may be ancestors of the missing ones:
    /// attachments older than these need not be sent again.
    #[serde(default)]
    pub possible_ancestors: Vec<String>,
}

/// A document `_bulk_docs` refused inside a successful (201) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkDocsError {
    /// The document id.
    pub id: String,
    /// The revision, when the server named it.
    pub rev: Option<String>,
    /// CouchDB's `error` (`forbidden`, `unauthorized`, ...).
    pub error: String,
    /// CouchDB's `reason`.
    pub reason: String,
}

impl Remote {
    /// `POST /db/_revs_diff` for a push, sent once: for each document, the
    /// revisions the remote lacks (documents it has fully are left out).
    pub async fn push_revs_diff(
        &self,
        revs: &BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeMap<String, RevsDiffEntry>, RemoteError> {
        let url = self.endpoint().db_path("_revs_diff");
        let body = json!(revs);
        let bytes = self.post_once(&url, &body).await?;
        let answer: BTreeMap<String, RevsDiffEntry> =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&url, bytes.len(), e))?;
        Ok(answer
            .into_iter()
            .filter(|(_, d)| !d.missing.is_empty())
            .collect())
    }

    /// `POST /db/_bulk_docs` with `new_edits: false`, sent once: the remote
    /// stores exactly these revisions (each document carries `_rev` and
    /// `_revisions`), so sending the same revision twice changes nothing.
    /// Returns the documents refused inside a successful answer; a refused
    /// request is an `Err` (e.g. 413 for a batch too large, 401).
    pub async fn bulk_docs(&self, docs: &[Value]) -> Result<Vec<BulkDocsError>, RemoteError> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            rev: Option<String>,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            reason: Option<String>,
        }
        let url = self.endpoint().db_path("_bulk_docs");
        let body = json!({ "docs": docs, "new_edits": false });
        let bytes = self.post_once(&url, &body).await?;
        let rows: Vec<Row> =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&url, bytes.len(), e))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(BulkDocsError {
                    error: r.error?,
                    id: r.id.unwrap_or_default(),
                    rev: r.rev,
                    reason: r.reason.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Sends one POST and reads the whole answer; error statuses become
    /// typed errors, a 429 with its `Retry-After`.
    async fn post_once(&self, url: &Url, body: &Value) -> Result<bytes::Bytes, RemoteError> {
        let method = Method::POST;
        let req = self.request(method.clone(), url.clone()).json(body);
        // A 401 to a session is the outbox's to handle (it pauses); the
        // session is dropped so its next round logs in again.
        let (req, had_session) = self.authorize(req).await?;
        let transport = |e: reqwest::Error| transport_error(&method, url, e);
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        self.after_response(status, resp.headers(), had_session)
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited(&method, url, resp.headers()));
        }
        if !status.is_success() {
            return Err(body::http_error(resp, &method, url).await);
        }
        body::read_capped(
            resp,
            self.max_response_bytes(),
            body::RESPONSE_SETTING,
            &method,
            url,
        )
        .await
    }
}

fn invalid(url: &Url, bytes: usize, e: serde_json::Error) -> RemoteError {
    RemoteError::InvalidResponse {
        method: "POST".to_owned(),
        url: url.to_string(),
        bytes,
        detail: e.to_string(),
    }
}
