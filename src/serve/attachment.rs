//! `/{db}/{id}/{name}`: an attachment by URL. `GET` streams its bytes
//! from the store (a large one from its file, a chunk at a time, never
//! whole in memory), with its digest as ETag and one byte range when the
//! client asks; `PUT` and `DELETE` are local writes of the document, a new
//! revision queued upstream like any other.

use super::error::HttpError;
use super::{Answer, Request, Served};
use crate::query::GetOptions;
use crate::revtree::Rev;
use axum::body::Bytes;
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
    RANGE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use base64::Engine;
use serde_json::{json, Map, Value};

type Answered = Result<Answer, HttpError>;

/// The size of each piece of a streamed attachment.
const PIECE: usize = 64 * 1024;

pub(super) async fn route(served: &Served, req: &Request, id: &str, name: &str) -> Answered {
    match req.method {
        Method::GET | Method::HEAD => get(served, req, id, name).await,
        Method::PUT => put(served, req, id, name).await,
        Method::DELETE => delete(served, req, id, name).await,
        _ => Err(HttpError::method_not_allowed("DELETE,GET,HEAD,PUT")),
    }
}

/// The revision a write names: `?rev=` or `If-Match`.
fn named_rev(req: &Request) -> Result<Option<Rev>, HttpError> {
    let given = req
        .param("rev")
        .or_else(|| req.header(IF_MATCH).map(|v| v.trim_matches('"').to_owned()));
    given
        .map(|r| r.parse::<Rev>())
        .transpose()
        .map_err(|e| HttpError::bad_request(format!("Invalid rev format: {e}")))
}

async fn get(served: &Served, req: &Request, id: &str, name: &str) -> Answered {
    let mut options = GetOptions::default();
    if let Some(rev) = named_rev(req)? {
        options = options.rev(rev);
    }
    let doc = served.query.get(id, &options)?;
    let missing = || HttpError::not_found("Document is missing attachment");
    let stub = doc
        .get("_attachments")
        .and_then(|a| a.get(name))
        .ok_or_else(missing)?;
    let digest = stub.get("digest").and_then(Value::as_str).unwrap_or("");
    let etag = format!("\"{digest}\"");
    if req.header(IF_NONE_MATCH) == Some(etag.as_str()) {
        return Ok(Answer::NotModified { etag });
    }
    let mut reader = served
        .replica
        .attachment_reader(digest)?
        .ok_or_else(missing)?;
    let total = reader.len();
    let content_type = stub
        .get("content_type")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream");
    let mut headers = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).map_err(HttpError::internal);
    headers.insert(CONTENT_TYPE, value(content_type)?);
    headers.insert(ETAG, value(&etag)?);
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (status, start, len) = match req.header(RANGE).map(|r| byte_range(r, total)) {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, total),
        Some(Range::Unsatisfiable) => {
            let mut e = HttpError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "requested_range_not_satisfiable",
                format!("the attachment holds {total} bytes"),
            );
            e.content_range = Some(format!("bytes */{total}"));
            return Err(e);
        }
        Some(Range::Bytes { first, last }) => {
            headers.insert(
                CONTENT_RANGE,
                value(&format!("bytes {first}-{last}/{total}"))?,
            );
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
    };
    headers.insert(CONTENT_LENGTH, value(&len.to_string())?);
    reader.skip(start).map_err(HttpError::internal)?;
    let body = match req.method {
        Method::HEAD => axum::body::Body::empty(),
        _ => axum::body::Body::from_stream(pieces(reader, len)),
    };
    Ok(Answer::Stream {
        status,
        headers,
        body,
    })
}

/// `len` bytes of `reader`, read on the blocking pool a piece at a time
/// as the client takes them (at most two pieces ahead).
fn pieces(
    mut reader: crate::store::AttachmentReader,
    len: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; PIECE.min(usize::try_from(left).unwrap_or(PIECE))];
            let read = match reader.read(&mut buf) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the attachment ended before its length",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            // The client left: stop reading.
            if tx.blocking_send(read).is_err() || failed {
                break;
            }
        }
    });
    async_stream::stream! {
        while let Some(piece) = rx.recv().await {
            yield piece;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Serve the whole attachment (no range we take: several ranges, or
    /// a unit other than bytes).
    Ignored,
    Unsatisfiable,
    /// Bytes `first..=last`.
    Bytes {
        first: u64,
        last: u64,
    },
}

/// A `Range` header against an attachment of `total` bytes: one range,
/// `bytes=a-b`, `bytes=a-` or `bytes=-n` (the last n).
fn byte_range(header: &str, total: u64) -> Range {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (first, last) = match (a.trim().is_empty(), num(a), num(b)) {
        (true, _, Some(n)) if n > 0 => (total.saturating_sub(n), total.saturating_sub(1)),
        (true, _, _) => return Range::Unsatisfiable,
        (false, Some(first), None) if b.trim().is_empty() => (first, total.saturating_sub(1)),
        (false, Some(first), Some(last)) if last >= first => {
            (first, last.min(total.saturating_sub(1)))
        }
        _ => return Range::Ignored,
    };
    if total == 0 || first >= total {
        return Range::Unsatisfiable;
    }
    Range::Bytes { first, last }
}

/// The document a write of one of its attachments starts from: the
/// revision named (it must be the current one, as for any write), or a
/// new document when none is named.
fn base_document(
    served: &Served,
    id: &str,
    rev: Option<Rev>,
) -> Result<Map<String, Value>, HttpError> {
    let Some(rev) = rev else {
        return Ok(Map::new());
    };
    match served
        .query
        .get(id, &GetOptions::default().rev(rev.clone()))
    {
        Ok(Value::Object(doc)) => Ok(doc),
        // A revision the replica does not hold cannot be the current one.
        Ok(_) | Err(_) => Err(HttpError::conflict()),
    }
}

async fn put(served: &Served, req: &Request, id: &str, name: &str) -> Answered {
    let rev = named_rev(req)?;
    let mut doc = base_document(served, id, rev)?;
    let content_type = req
        .header(CONTENT_TYPE)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let data = base64::engine::general_purpose::STANDARD.encode(&req.body);
    let atts = doc
        .entry("_attachments")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(atts) = atts {
        atts.insert(
            name.to_owned(),
            json!({"content_type": content_type, "data": data}),
        );
    }
    write(served, id, doc, StatusCode::CREATED).await
}

async fn delete(served: &Served, req: &Request, id: &str, name: &str) -> Answered {
    let Some(rev) = named_rev(req)? else {
        return Err(HttpError::conflict());
    };
    let mut doc = base_document(served, id, Some(rev))?;
    let removed = doc
        .get_mut("_attachments")
        .and_then(Value::as_object_mut)
        .and_then(|atts| atts.remove(name));
    if removed.is_none() {
        return Err(HttpError::not_found("Document is missing attachment"));
    }
    write(served, id, doc, StatusCode::OK).await
}

/// The document with its attachments changed, as a local write: its new
/// revision, or the write's error (a stale `rev` is 409).
async fn write(served: &Served, id: &str, doc: Map<String, Value>, status: StatusCode) -> Answered {
    let written = served
        .replica
        .put(id, Value::Object(doc))
        .await
        .map_err(super::document::write_error)?;
    Ok(Answer::Json(
        status,
        json!({"ok": true, "id": written.id, "rev": written.rev.to_string()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_range_is_served_and_the_rest_are_not() {
        let r = |h: &str| byte_range(h, 100);
        assert_eq!(r("bytes=0-9"), Range::Bytes { first: 0, last: 9 });
        assert_eq!(
            r("bytes=90-"),
            Range::Bytes {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            r("bytes=-10"),
            Range::Bytes {
                first: 90,
                last: 99
            }
        );
        assert_eq!(
            r("bytes=95-200"),
            Range::Bytes {
                first: 95,
                last: 99
            }
        );
        assert_eq!(r("bytes=100-"), Range::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Range::Unsatisfiable);
        assert_eq!(r("bytes=0-1,5-6"), Range::Ignored);
        assert_eq!(r("items=0-1"), Range::Ignored);
        assert_eq!(r("bytes=9-0"), Range::Ignored);
        assert_eq!(byte_range("bytes=0-", 0), Range::Unsatisfiable);
    }
}
