//! How deeply a stored body may nest, and reading one without serde_json's
//! recursion limit.
//!
//! A body arrives as raw JSON text and is stored without being parsed, so
//! any depth would store; but reading it back builds a `serde_json::Value`,
//! and building, printing and dropping one recurses once per level. Reads
//! therefore lift serde_json's fixed 128-level limit, and the pull refuses
//! a document nested deeper than [`MAX_NESTING`] on arrival (that document
//! fails alone, with its depth in the reason), as local writes do
//! (`StoreError::TooDeep`, `local_write.rs`). Below the limit a read needs
//! well under 1 MiB of stack even in a debug build, so it is safe on a
//! tokio worker thread (2 MiB).
//!
//! This module must not store anything: it only measures and parses.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The deepest nesting of objects and arrays a document may have to be
/// stored (`{"a":{"b":1}}` is 2 levels). CouchDB sets no limit; 256 keeps
/// every read of a stored body within a small, known stack.
pub const MAX_NESTING: usize = 256;

/// The deepest nesting of objects and arrays in a JSON text, found with one
/// pass and no recursion (brackets inside strings do not count).
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses a stored body: an object, of any depth the pull let in.
pub(crate) fn parse_body(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let body = Map::deserialize(&mut de)?;
    de.end()?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))
    }

    #[test]
    fn measures_depth_outside_strings() {
        assert_eq!(nesting_depth("{}"), 1);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"{"a":"[[[{{{\"]]]"}"#), 1);
        assert_eq!(nesting_depth(r#"{"a":"\\","b":[1]}"#), 2);
        assert_eq!(nesting_depth(&nested(300)), 300);
    }

    #[test]
    fn reads_bodies_deeper_than_serde_json_allows() {
        let text = nested(MAX_NESTING);
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "serde_json's own limit"
        );
        // On a thread with tokio's worker stack size, as a library caller may be.
        let out = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let body = parse_body(text.as_bytes()).unwrap();
                let printed = serde_json::to_string(&body).unwrap();
                drop(body);
                printed == text
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(out);
    }
}
