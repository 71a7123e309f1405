//! Splitting a fetched revision into what replication needs (`_id`, `_rev`,
//! `_revisions`, `_deleted`, `_attachments`) and the body, without parsing
//! the body: every other top-level field is copied as raw JSON text, so a
//! document costs its own size in memory, whatever its shape (a tag listing
//! 100 000 cards is one string copy, not 100 000 parsed values).

use crate::revtree::{Rev, RevPath};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

/// A fetched revision, split.
#[derive(Debug)]
pub(crate) struct DocParts {
    pub(crate) id: String,
    pub(crate) path: RevPath,
    pub(crate) deleted: bool,
    /// The body's fields as `"key":value` pairs joined by commas, no braces.
    fields: String,
    /// `_attachments`, parsed (small: stubs, or inline data to move out).
    pub(crate) attachments: Option<Map<String, Value>>,
}

/// Top-level fields of an object, values left as raw text.
struct Fields<'a>(Vec<(Key<'a>, &'a RawValue)>);

/// A field name: borrowed from the text when it holds no escapes (then the
/// text between its quotes is the name, and is copied as is), else decoded.
enum Key<'a> {
    Plain(&'a str),
    Decoded(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Plain(s) => s,
            Key::Decoded(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Plain(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key::Decoded(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key::Decoded(v))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl DocParts {
    /// Splits one revision the server answered for document `expected`,
    /// or says why it cannot be stored.
    pub(crate) fn split(raw: &RawValue, expected: &str) -> Result<DocParts, String> {
        let Fields(fields) = serde_json::from_str(raw.get())
            .map_err(|e| format!("a fetched document is not a JSON object: {e}"))?;
        // Refused here, alone, rather than stored and unreadable later.
        let depth = crate::store::nesting_depth(raw.get());
        if depth > crate::store::MAX_NESTING {
            return Err(format!(
                "the document nests {depth} levels deep; settee stores at most {} levels",
                crate::store::MAX_NESTING
            ));
        }
        let mut id = None;
        let mut rev = None;
        let mut revisions = None;
        let mut deleted = false;
        let mut attachments = None;
        let mut body = String::with_capacity(raw.get().len());
        for (key, value) in fields {
            match key.as_str() {
                "_id" => id = serde_json::from_str::<String>(value.get()).ok(),
                "_rev" => rev = serde_json::from_str::<String>(value.get()).ok(),
                "_revisions" => revisions = Some(value),
                "_deleted" => deleted = value.get() == "true",
                "_attachments" => {
                    attachments = Some(
                        serde_json::from_str::<Map<String, Value>>(value.get())
                            .map_err(|e| format!("_attachments is not an object: {e}"))?,
                    )
                }
                // Metadata a server may add on request; never part of a body.
                "_conflicts" | "_deleted_conflicts" | "_revs_info" | "_local_seq" => {}
                _ => {
                    if !body.is_empty() {
                        body.push(',');
                    }
                    match key {
                        // No escapes in the text: its quoted form is valid JSON.
                        Key::Plain(k) => {
                            body.push('"');
                            body.push_str(k);
                            body.push('"');
                        }
                        // Re-escaping the key keeps any escapes the server used valid.
                        Key::Decoded(k) => body.push_str(&Value::String(k).to_string()),
                    }
                    body.push(':');
                    body.push_str(value.get());
                }
            }
        }
        let id = id.ok_or("the fetched document has no _id")?;
        if id != expected {
            return Err(format!(
                "the server answered with document {id:?} for {expected:?}"
            ));
        }
        let rev: Rev = match rev.as_deref().map(str::parse) {
            Some(Ok(rev)) => rev,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the fetched document has no _rev".to_owned()),
        };
        let path = match revisions {
            Some(raw) => match serde_json::from_str::<RevPath>(raw.get()) {
                Ok(p) if p.leaf().as_ref() == Some(&rev) => p,
                Ok(_) => return Err("_revisions does not end in _rev".to_owned()),
                Err(e) => return Err(format!("invalid _revisions: {e}")),
            },
            None => RevPath::leaf_only(&rev),
        };
        // Checked here so one bad document fails alone, not its whole batch.
        path.validate()
            .map_err(|e| format!("invalid _revisions: {e}"))?;
        Ok(DocParts {
            id,
            path,
            deleted,
            fields: body,
            attachments,
        })
    }

    /// The body as stored: the fields, then `_attachments` as given.
    pub(crate) fn body(
        &self,
        attachments: Option<&Map<String, Value>>,
    ) -> Result<Box<RawValue>, serde_json::Error> {
        let mut text = String::with_capacity(self.fields.len() + 2);
        text.push('{');
        text.push_str(&self.fields);
        if let Some(atts) = attachments {
            if !self.fields.is_empty() {
                text.push(',');
            }
            text.push_str("\"_attachments\":");
            text.push_str(&serde_json::to_string(atts)?);
        }
        text.push('}');
        RawValue::from_string(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn split_as(json: &str, id: &str) -> Result<DocParts, String> {
        DocParts::split(&RawValue::from_string(json.to_owned()).unwrap(), id)
    }

    fn split(json: &str) -> Result<DocParts, String> {
        let id = serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|v| v.get("_id")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        split_as(json, &id)
    }

    #[test]
    fn separates_metadata_from_the_raw_body() {
        let d = split(
            r#"{"_id":"a/b","_rev":"3-c","v":{"deep":[1,2,{"x":null}]},"_revisions":{"start":3,"ids":["c","b","a"]},
                "_deleted":true,"_conflicts":["3-x"],"k\"q":"é","_attachments":{"f":{"stub":true,"digest":"md5-x"}}}"#,
        )
        .unwrap();
        assert_eq!(d.id, "a/b");
        assert_eq!(d.path.ids, vec!["c", "b", "a"]);
        assert!(d.deleted);
        let body: Value = serde_json::from_str(d.body(None).unwrap().get()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"v": {"deep": [1, 2, {"x": null}]}, "k\"q": "é"})
        );
        let atts = d.attachments.clone().unwrap();
        let body: Value = serde_json::from_str(d.body(Some(&atts)).unwrap().get()).unwrap();
        assert_eq!(body["_attachments"]["f"]["digest"], "md5-x");
    }

    /// Names without escapes are copied from the text as they are; names
    /// with escapes are decoded and written again: both give valid JSON
    /// with the same fields, in the same order.
    #[test]
    fn field_names_keep_their_meaning_with_or_without_escapes() {
        let d = split(
            r#"{"_id":"a","_rev":"1-a","plain":1,"é ü":2,"tab\there":3,"\u00e9":4,"sl\/ash":5}"#,
        )
        .unwrap();
        let text = d.body(None).unwrap();
        let body: Map<String, Value> = serde_json::from_str(text.get()).unwrap();
        let names: Vec<&str> = body.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["plain", "é ü", "tab\there", "é", "sl/ash"]);
        assert!(
            text.get()
                .starts_with(r#"{"plain":1,"é ü":2,"tab\there":3,"#),
            "{}",
            text.get()
        );
    }

    #[test]
    fn a_tombstone_has_an_empty_body() {
        let d = split(r#"{"_id":"t","_rev":"2-b","_deleted":true}"#).unwrap();
        assert_eq!(d.body(None).unwrap().get(), "{}");
        let mut atts = Map::new();
        atts.insert("a".into(), serde_json::json!({"stub": true}));
        assert_eq!(
            d.body(Some(&atts)).unwrap().get(),
            r#"{"_attachments":{"a":{"stub":true}}}"#
        );
    }

    #[test]
    fn rejects_inconsistent_revisions() {
        assert!(
            split(r#"{"_id":"a","_rev":"3-c","_revisions":{"start":2,"ids":["b","a"]}}"#).is_err()
        );
        assert!(split(r#"{"_id":"a","_rev":"nope"}"#).is_err());
        assert!(split(r#"{"_rev":"1-a"}"#).is_err());
        assert!(split(r#"[1,2]"#).is_err());
        // More ancestors than generations: refused here, alone, rather than
        // aborting the transaction of its whole batch.
        let e = split(r#"{"_id":"a","_rev":"1-a","_revisions":{"start":1,"ids":["a","z"]}}"#)
            .unwrap_err();
        assert!(e.contains("_revisions"), "{e}");
        assert!(split(r#"{"_id":"a","_rev":"1-a","_attachments":[1]}"#)
            .unwrap_err()
            .contains("_attachments"));
    }

    #[test]
    fn a_revision_answered_for_another_document_is_refused() {
        let e = split_as(r#"{"_id":"b","_rev":"1-a"}"#, "a").unwrap_err();
        assert!(e.contains("\"b\"") && e.contains("\"a\""), "{e}");
        assert!(split_as(r#"{"_id":"a","_rev":"1-a"}"#, "a").is_ok());
    }
}
