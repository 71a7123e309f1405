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
use crate::store::{AttachmentWriter, Staged, StoreError};
use crate::Error;
use base64::Engine;
use md5::{Digest, Md5};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// How fetching an attachment ended, when the pull can go on.
pub(super) enum Fetched {
    /// The bytes are staged (or were already held): the digest they are
    /// held under and their length.
    Stored(String, u64),
    /// This document cannot be stored now; why.
    Refused(String),
}

/// What the server's digest of an attachment covers.
#[derive(Clone, Copy)]
pub(super) enum Expect<'a> {
    /// The attachment's own bytes (an `md5-` digest is checked).
    Identity(&'a str),
    /// The gzip-encoded bytes the server stores (CouchDB's compressible
    /// types): fetched as stored, checked against this digest, gunzipped
    /// and held under the MD5 of the bytes that come out.
    Encoded(&'a str),
}

/// Streams attachment `name` of revision `rev` of document `id` into the
/// replica, checked against the server's digest as `expect` says.
///
/// An encoded attachment is asked for as stored (`Accept-Encoding: gzip`)
/// so that corruption on the way is caught: its bytes are checked against
/// the server's digest while they are gunzipped into the store. A server
/// that answers it decoded anyway gives nothing to check against; its
/// bytes are held under their own MD5, as before.
pub(super) async fn fetch(
    ctx: &PullContext,
    id: &str,
    name: &str,
    rev: &str,
    expect: Expect<'_>,
) -> Result<Fetched, Error> {
    // Whether the last attempt failed while reading the body (the server
    // answered, then the body broke or stalled), not before any answer.
    let in_body = AtomicBool::new(false);
    let what = format!("GET attachment {name:?} of {id:?}");
    let result = ctx
        .remote
        .retrying(&what, || async {
            in_body.store(false, Ordering::Relaxed);
            let mut stream = match expect {
                Expect::Identity(_) => ctx.remote.attachment_stream(id, name, rev).await?,
                Expect::Encoded(_) => {
                    ctx.remote
                        .attachment_stream_as_stored(id, name, rev)
                        .await?
                }
            };
            let mut writer = match expect {
                Expect::Identity(d) => ctx.replica.attachment_writer(d, true),
                Expect::Encoded(_) => ctx.replica.attachment_writer_digesting(),
            };
            let mut gunzip = match expect {
                Expect::Encoded(d) if stream.is_gzip() => Some(Gunzip::new(d)),
                _ => None,
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
                let written = match gunzip.as_mut() {
                    Some(g) => g.write(&chunk, &mut writer),
                    None => writer.write(&chunk).map(|()| true),
                };
                match written {
                    Ok(true) => {}
                    // Not gzip after all: a corrupt body.
                    Ok(false) => return Ok(Ok(None)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            if let Some(g) = gunzip {
                match g.finish(&mut writer) {
                    Ok(true) => {}
                    Ok(false) => return Ok(Ok(None)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(match expect {
                Expect::Identity(d) => writer.finish().map(|staged| match staged {
                    Staged::Stored(len) => Some((d.to_owned(), len)),
                    Staged::Mismatch => None,
                }),
                Expect::Encoded(_) => writer.finish_digested().map(Some),
            })
        })
        .await;
    let server_digest = match expect {
        Expect::Identity(d) | Expect::Encoded(d) => d,
    };
    match result {
        Ok(Ok(Some((digest, len)))) => Ok(Fetched::Stored(digest, len)),
        Ok(Ok(None)) => Ok(Fetched::Refused(format!(
            "attachment {name:?}: bytes do not match digest {server_digest}"
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

/// Gunzips an encoded attachment into the store as it arrives, and checks
/// the encoded bytes against the server's digest.
struct Gunzip {
    digest: String,
    md5: Md5,
    decoder: flate2::write::GzDecoder<Vec<u8>>,
}

impl Gunzip {
    fn new(digest: &str) -> Self {
        Gunzip {
            digest: digest.to_owned(),
            md5: Md5::new(),
            decoder: flate2::write::GzDecoder::new(Vec::new()),
        }
    }

    /// Feeds one chunk of encoded bytes; the bytes it decodes go to
    /// `writer`. `Ok(false)`: the chunk is not valid gzip.
    fn write(&mut self, chunk: &[u8], writer: &mut AttachmentWriter) -> Result<bool, StoreError> {
        self.md5.update(chunk);
        if self.decoder.write_all(chunk).is_err() {
            return Ok(false);
        }
        self.drain(writer)
    }

    /// Ends the stream: `Ok(true)` when it was whole gzip and its bytes are
    /// those the server's digest covers.
    fn finish(mut self, writer: &mut AttachmentWriter) -> Result<bool, StoreError> {
        if self.decoder.try_finish().is_err() || !self.drain(writer)? {
            return Ok(false);
        }
        let got = format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(self.md5.finalize())
        );
        Ok(got == self.digest)
    }

    /// Moves what the decoder produced so far into `writer`.
    fn drain(&mut self, writer: &mut AttachmentWriter) -> Result<bool, StoreError> {
        let out = self.decoder.get_mut();
        if !out.is_empty() {
            writer.write(out)?;
            out.clear();
        }
        Ok(true)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Replica, ReplicaConfig};

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn md5_digest(bytes: &[u8]) -> String {
        format!(
            "md5-{}",
            base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
        )
    }

    /// Feeds `encoded` in small chunks; the digest held, if it checked out.
    fn gunzip_into(replica: &Replica, encoded: &[u8], digest: &str) -> Option<String> {
        let mut writer = replica.attachment_writer_digesting();
        let mut g = Gunzip::new(digest);
        for chunk in encoded.chunks(7) {
            if !g.write(chunk, &mut writer).unwrap() {
                return None;
            }
        }
        if !g.finish(&mut writer).unwrap() {
            return None;
        }
        Some(writer.finish_digested().unwrap().0)
    }

    #[test]
    fn encoded_bytes_are_checked_against_the_servers_digest_and_held_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        let text = b"note, version 2 - ".repeat(50);
        let encoded = gzip(&text);
        let server = md5_digest(&encoded);
        assert_eq!(
            gunzip_into(&replica, &encoded, &server),
            Some(md5_digest(&text)),
            "held under the MD5 of the decoded bytes"
        );
        // The same length, other bytes (a proxy that mangled the body).
        let mut corrupt = encoded.clone();
        let last = corrupt.len() - 9;
        corrupt[last] ^= 0x55;
        assert_eq!(gunzip_into(&replica, &corrupt, &server), None);
        // Cut short, and not gzip at all.
        assert_eq!(
            gunzip_into(&replica, &encoded[..encoded.len() / 2], &server),
            None
        );
        let garbage = vec![b'x'; encoded.len()];
        assert_eq!(gunzip_into(&replica, &garbage, &server), None);
    }
}
