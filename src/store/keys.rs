//! Key layout of the replica's sled trees (see `docs/design.md`).
//!
//! Document ids are stored as their UTF-8 bytes, so sled's byte order is
//! CouchDB's raw `_all_docs` order (code point order). Sequences and body
//! ids are big-endian `u64`s, so byte order is numeric order and new
//! entries append at the end of their tree.

/// `by_seq`, `bodies` and `garbage` key: a `u64`, big-endian so byte order
/// is numeric order.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Decodes a `by_seq` key.
pub(crate) fn seq_from_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

/// Names of the `meta` tree's entries.
pub(crate) mod meta {
    pub(crate) const FORMAT: &[u8] = b"format";
    pub(crate) const SEQ: &[u8] = b"seq";
    pub(crate) const BODY_ID: &[u8] = b"body_id";
    pub(crate) const DOC_COUNT: &[u8] = b"doc_count";
    pub(crate) const DEL_COUNT: &[u8] = b"doc_del_count";
    pub(crate) const REMOTE: &[u8] = b"remote";
    pub(crate) const LAST_PULL: &[u8] = b"last_pull";
    /// The key of the latest `outbox` entry (`u64` BE), never reused.
    pub(crate) const OUTBOX_ID: &[u8] = b"outbox_id";
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
}
