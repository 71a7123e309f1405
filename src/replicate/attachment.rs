//! Fetching one attachment's bytes into the replica as they arrive: the
//! body of `GET /db/{id}/{name}?rev=` is written chunk by chunk to the
//! store's staging ([`crate::store`]'s `AttachmentWriter`), its MD5 checked
//! at the end (or, for an attachment the server stored encoded, computed
//! and made its digest: see `batch.rs`), so no attachment is ever held
//! whole in memory.
//!
//! Each attempt starts over with a fresh writer; an attempt that fails
//! leaves nothing staged. What fails for good decides its scope here: the
//! document's (a 4xx, a body over the cap, a digest mismatch, a body cut
//! short on every attempt), or the pull's (no answer at all: the server is
//! gone). It never commits anything.

use super::PullContext;
use crate::remote::RemoteError;
use crate::store::Staged;
use crate::Error;
use std::sync::atomic::{AtomicBool, Ordering};

/// How fetching an attachment ended, when the pull can go on.
pub(super) enum Fetched {
    /// The bytes are staged (or were already held): the digest they are
    /// held under and their length.
    Stored(String, u64),
    /// This document cannot be stored now; why.
    Refused(String),
}

/// Streams attachment `name` of revision `rev` of document `id` into the
/// replica: under `digest`, checked against it when it is an `md5-` one,
/// or, with `None` (an attachment the server stored encoded, whose digest
/// is of the encoded bytes), under the MD5 of the bytes received.
pub(super) async fn fetch(
    ctx: &PullContext,
    id: &str,
    name: &str,
    rev: &str,
    digest: Option<&str>,
) -> Result<Fetched, Error> {
    // Whether the last attempt failed while reading the body (the server
    // answered, then the body broke or stalled), not before any answer.
    let in_body = AtomicBool::new(false);
    let what = format!("GET attachment {name:?} of {id:?}");
    let result = ctx
        .remote
        .retrying(&what, || async {
            in_body.store(false, Ordering::Relaxed);
            let mut stream = ctx.remote.attachment_stream(id, name, rev).await?;
            let mut writer = match digest {
                Some(d) => ctx.replica.attachment_writer(d, true),
                None => ctx.replica.attachment_writer_digesting(),
            };
            loop {
                let chunk = match stream.chunk().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(e) => {
                        in_body.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                };
                if let Err(e) = writer.write(&chunk) {
                    return Ok(Err(e));
                }
            }
            Ok(match digest {
                Some(d) => writer.finish().map(|staged| match staged {
                    Staged::Stored(len) => Some((d.to_owned(), len)),
                    Staged::Mismatch => None,
                }),
                None => writer.finish_digested().map(Some),
            })
        })
        .await;
    match result {
        Ok(Ok(Some((digest, len)))) => Ok(Fetched::Stored(digest, len)),
        Ok(Ok(None)) => Ok(Fetched::Refused(format!(
            "attachment {name:?}: bytes do not match digest {}",
            digest.unwrap_or_default()
        ))),
        Ok(Err(store)) => Err(store.into()),
        Err(e) => Ok(Fetched::Refused(
            match refused(&e, in_body.load(Ordering::Relaxed)) {
                Some(reason) => format!("attachment {name:?}: {reason}"),
                None => return Err(e.into()),
            },
        )),
    }
}

/// Why a failed fetch belongs to the document, or `None` when the pull
/// cannot go on.
fn refused(e: &RemoteError, in_body: bool) -> Option<String> {
    match e {
        RemoteError::Http {
            status,
            error,
            reason,
            ..
        } if status.is_client_error() => Some(format!("HTTP {status} {error}: {reason}")),
        RemoteError::TooLarge { .. } => Some(e.to_string()),
        // The server answered every attempt, and every body broke: this
        // attachment, not the connection, is the trouble (or the link is
        // too poor for its size); the next pull tries it again.
        _ if in_body && e.is_transient() => Some(format!("the body was cut short: {e}")),
        _ => None,
    }
}
