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
