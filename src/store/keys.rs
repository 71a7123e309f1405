//! Key layout of the replica's sled trees (see `docs/design.md`).
//!
//! Document ids are stored as their UTF-8 bytes, so sled's byte order is
//! CouchDB's raw `_all_docs` order (code point order). A revision key
//! appends `0xFF` and the revision: `0xFF` never occurs in UTF-8, so the
//! revisions of `a` (`a\xFF...`) can never interleave with those of `ab`.

/// Byte separating a document id from a revision in `revs` keys.
pub(crate) const REV_SEP: u8 = 0xFF;

/// `revs` key of one revision body.
pub(crate) fn rev_key(id: &str, rev: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1 + rev.len());
    k.extend_from_slice(id.as_bytes());
    k.push(REV_SEP);
    k.extend_from_slice(rev.as_bytes());
    k
}

/// `by_seq` key: the local sequence, big-endian so byte order is numeric order.
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
    pub(crate) const DOC_COUNT: &[u8] = b"doc_count";
    pub(crate) const DEL_COUNT: &[u8] = b"doc_del_count";
    pub(crate) const REMOTE: &[u8] = b"remote";
    pub(crate) const LAST_PULL: &[u8] = b"last_pull";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rev_keys_of_prefix_ids_do_not_interleave() {
        let mut keys = vec![
            rev_key("ab", "1-x"),
            rev_key("a", "9-z"),
            rev_key("a", "1-a"),
        ];
        keys.sort();
        // "ab" sorts before "a\xFF": the revisions of "a" stay contiguous.
        assert_eq!(
            keys,
            vec![
                rev_key("ab", "1-x"),
                rev_key("a", "1-a"),
                rev_key("a", "9-z")
            ]
        );
        assert!(!rev_key("ab", "1-x").starts_with(&rev_key("a", "")));
    }

    #[test]
    fn seq_keys_sort_numerically() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(seq_from_key(&seq_key(42)), Some(42));
        assert_eq!(seq_from_key(b"short"), None);
    }
}
