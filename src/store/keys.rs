//! Key layout of the replica's sled trees (see `docs/design.md`).
//!
//! Document ids are stored as their UTF-8 bytes, so sled's byte order is
//! CouchDB's raw `_all_docs` order (code point order). Sequences and body
//! ids are big-endian `u64`s, so byte order is numeric order and new
//! entries append at the end of their tree.

use super::error::StoreError;

/// A `u64` stored big-endian (counters, `meta` values); anything but 8
/// bytes is a damaged replica.
pub(crate) fn decode_u64(key: &[u8], v: &[u8]) -> Result<u64, StoreError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::corrupt("counter", key, "not 8 bytes"))
}

/// A `meta` counter or offset (`u64` BE), 0 when it was never written.
pub(crate) fn read_u64(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    match meta.get(key)? {
        Some(v) => decode_u64(key, &v),
        None => Ok(0),
    }
}

/// `by_seq`, `bodies` and `garbage` key: a `u64`, big-endian so byte order
/// is numeric order.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes a `by_seq` key.
pub(crate) fn seq_from_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// A `by_seq` value: the document id (length-prefixed, one or more
/// varint bytes) and then, in a format-3 entry of a single-leaf document
/// whose body is kept here, that body's JSON text (format 4 writes no
/// body here; its bodies are in the body log).
pub(crate) fn seq_entry(id: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + body.len() + 2);
    let mut n = id.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(body);
    out
}

/// Splits a `by_seq` value into the document id and the body it carries
/// (empty when it carries none); `None` when the value is damaged.
pub(crate) fn split_seq_entry(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0usize;
    let mut at = 0;
    loop {
        let b = *v.get(at)?;
        len |= usize::from(b & 0x7f).checked_shl(7 * at as u32)?;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 9 {
            return None;
        }
    }
    let end = at.checked_add(len)?;
    Some((v.get(at..end)?, v.get(end..)?))
}

/// Names of the `meta` tree's entries.
pub(crate) mod meta {
    pub(crate) const FORMAT: &[u8] = b"format";
    pub(crate) const SEQ: &[u8] = b"seq";
    pub(crate) const BODY_ID: &[u8] = b"body_id";
    /// The committed end of the body log (`u64` BE, `store/body_log.rs`).
    pub(crate) const BODY_LOG_END: &[u8] = b"body_log_end";
    pub(crate) const DOC_COUNT: &[u8] = b"doc_count";
    pub(crate) const DEL_COUNT: &[u8] = b"doc_del_count";
    pub(crate) const REMOTE: &[u8] = b"remote";
    pub(crate) const LAST_PULL: &[u8] = b"last_pull";
    /// The key of the latest `outbox` entry (`u64` BE), never reused.
    pub(crate) const OUTBOX_ID: &[u8] = b"outbox_id";
    /// The replica's size on disk after its last compaction (or when the
    /// automatic trigger first looked), `u64` BE (`store/compact.rs`).
    pub(crate) const DISK_BASELINE: &[u8] = b"disk_baseline";

    /// `carried/<source>`: the last outbox key of the retired replica
    /// `source` whose writes were carried into this one (`u64` BE).
    pub(crate) fn carried(source: &str) -> Vec<u8> {
        format!("carried/{source}").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_keys_sort_numerically() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(seq_from_key(&seq_key(42)), Some(42));
        assert_eq!(seq_from_key(b"short"), None);
    }

    #[test]
    fn sequence_entries_carry_an_id_and_maybe_a_body() {
        let long_id = "x".repeat(300);
        for (id, body) in [
            ("a", &b""[..]),
            ("c-1", &b"{\"v\":1}"[..]),
            (long_id.as_str(), &b"{}"[..]),
        ] {
            let e = seq_entry(id.as_bytes(), body);
            assert_eq!(split_seq_entry(&e), Some((id.as_bytes(), body)));
        }
        assert_eq!(split_seq_entry(&[5, b'a']), None);
        assert_eq!(split_seq_entry(&[]), None);
        assert_eq!(split_seq_entry(&[0x80; 12]), None);
    }
}
