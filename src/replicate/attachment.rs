//! Fetching one attachment's bytes into the replica as they arrive: the
//! body of `GET /db/{id}/{name}?rev=` is written chunk by chunk to the
//! store's staging ([`crate::store`]'s `AttachmentWriter`), its MD5 checked
//! at the end, so no attachment is ever held whole in memory.
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
    /// The bytes are staged (or were already held); their length.
    Stored(u64),
    /// This document cannot be stored now; why.
    Refused(String),
}

/// Streams attachment `name` of revision `rev` of document `id` into the
/// replica under `digest`, checking an `md5-` digest when `check_md5`.
pub(super) async fn fetch(
    ctx: &PullContext,
    id: &str,
    name: &str,
    rev: &str,
    digest: &str,
    check_md5: bool,
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
            let mut writer = ctx.replica.attachment_writer(digest, check_md5);
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
            Ok(writer.finish())
        })
        .await;
    match result {
        Ok(Ok(Staged::Stored(len))) => Ok(Fetched::Stored(len)),
        Ok(Ok(Staged::Mismatch)) => Ok(Fetched::Refused(format!(
            "attachment {name:?}: bytes do not match digest {digest}"
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
