//! CouchDB's `possible_ancestors` in `_revs_diff` answers, which PouchDB
//! Server leaves out.
//!
//! For each document with missing revisions, CouchDB 3 lists the remote
//! leaves (deleted ones too) whose generation is lower than a missing
//! revision's (`couch_db:possible_ancestors/2`): they *may* be ancestors,
//! and a conflicting branch's leaf is listed just the same. A pusher that
//! takes them for ancestors of its own revision sends attachment stubs the
//! server cannot resolve, and CouchDB refuses the whole `_bulk_docs` with
//! 412 `missing_stub`. Used by the quirks layer and by
//! [`super::proxy::Rule::possible_ancestors`] on any server.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::proxy::{
    connect, finish, head_for_body, header_name, lines, split_response, whole_response,
};

/// Forwards a `POST /db/_revs_diff` and adds `possible_ancestors` to the
/// answer, reading each document's leaves from upstream with the client's
/// own credentials.
pub(super) async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    line: &str,
    fwd_head: &[u8],
    body_start: &[u8],
) {
    let target = line.split(' ').nth(1).unwrap_or("");
    let db = target
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let auth = credentials(fwd_head);
    let Some(up) = connect(upstream, fwd_head, body_start).await else {
        return;
    };
    let raw = whole_response(&mut client, up).await;
    let out = match with_ancestors(&raw, upstream, &db, &auth).await {
        Some(out) => out,
        None => raw,
    };
    if client.write_all(&out).await.is_ok() {
        finish(client).await;
    }
}

/// The client's credentials in a request head (`Authorization`, `Cookie`),
/// for the proxy's own requests upstream on its behalf.
pub(super) fn credentials(head: &[u8]) -> Vec<(String, String)> {
    lines(head)
        .skip(1)
        .filter(|h| {
            let name = header_name(h);
            name.eq_ignore_ascii_case(b"authorization") || name.eq_ignore_ascii_case(b"cookie")
        })
        .filter_map(|h| {
            let h = String::from_utf8_lossy(h);
            let (k, v) = h.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// The response with `possible_ancestors` added, or `None` to relay it as
/// it came (not a 200 JSON object).
async fn with_ancestors(
    raw: &[u8],
    upstream: SocketAddr,
    db: &str,
    auth: &[(String, String)],
) -> Option<Vec<u8>> {
    let (head, status, body) = split_response(raw)?;
    if status != 200 {
        return None;
    }
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&body) else {
        return None;
    };
    let http = reqwest::Client::new();
    for (id, entry) in answer.iter_mut() {
        let missing_pos: Vec<u64> = entry["missing"]
            .as_array()
            .map(|m| m.iter().filter_map(|r| generation(r.as_str()?)).collect())
            .unwrap_or_default();
        let Some(&highest) = missing_pos.iter().max() else {
            continue;
        };
        let leaves = leaves(&http, upstream, db, id, auth).await;
        let ancestors: Vec<Value> = leaves
            .into_iter()
            .filter(|l| generation(l).is_some_and(|g| g < highest))
            .map(Value::String)
            .collect();
        if !ancestors.is_empty() {
            entry["possible_ancestors"] = Value::Array(ancestors);
        }
    }
    let edited = serde_json::to_vec(&answer).ok()?;
    let mut out = head_for_body(head, edited.len());
    out.extend_from_slice(&edited);
    Some(out)
}

fn generation(rev: &str) -> Option<u64> {
    rev.split_once('-')?.0.parse().ok()
}

/// Every leaf revision of `id` on upstream, deleted ones included.
async fn leaves(
    http: &reqwest::Client,
    upstream: SocketAddr,
    db: &str,
    id: &str,
    auth: &[(String, String)],
) -> Vec<String> {
    let id = if let Some(rest) = id.strip_prefix("_design/") {
        format!("_design/{}", enc(rest))
    } else {
        enc(id)
    };
    let url = format!("http://{upstream}/{db}/{id}?open_revs=all&revs=false");
    let mut req = http.get(&url).header("Accept", "application/json");
    for (k, v) in auth {
        req = req.header(k.as_str(), v.as_str());
    }
    let Ok(resp) = req.send().await else {
        return Vec::new();
    };
    let rows: Value = resp.json().await.unwrap_or(Value::Null);
    rows.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["ok"]["_rev"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
