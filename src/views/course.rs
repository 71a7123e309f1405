//! The course app's views, an application's code on the library (not its
//! defaults): the two views the study app queries, with the semantics of
//! its design documents, and typed helpers for its two queries. An app
//! registers them with `Views::open(&replica, course::views())`; the
//! same app's design documents give the same rows through the JavaScript
//! engine (`query::Query::view`), these are its native fast path.
//!
//! - `elo`: for `CARD` documents, `emit(doc.elo)` if it is a number, else
//!   `emit(doc.elo.global.score)` if `doc.elo.global` is truthy, else
//!   `emit(doc.elo.score)` if `doc.elo` is truthy, else a key in 995..=1005
//!   derived from the id (the app's design document draws it at random,
//!   which makes two replicas disagree); the value is always the id. A
//!   missing score emits `null`, as JavaScript's `emit(undefined)` does.
//! - `getTags`: for `TAG` documents, for each id in `doc.taggedCards`,
//!   `emit(cardId, {docType, name, snippit, wiki: "", taggedCards: []})`,
//!   fields that are `undefined` in JavaScript left out as JSON does.
//!
//! Both are raw maps ([`View::new_raw`]): they deserialize the few fields
//! they read from the stored body text, borrowed and unparsed until the
//! document is known to be of their type, then apply the same rules as the
//! parsed maps below (which a body serde cannot read field by field, one
//! with a duplicate key, falls back to).

use super::error::ViewError;
use super::query::{QueryOptions, Update};
use super::view::{Emitter, RawDocument, View};
use super::Views;
use crate::store::Document;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// Name of the built-in rating view.
pub const ELO: &str = "elo";
/// Name of the built-in tags view.
pub const GET_TAGS: &str = "getTags";

/// JavaScript truthiness of a field (`undefined` is `None`).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// `obj.field` in JavaScript: `undefined` unless `obj` is an object.
fn field<'a>(obj: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    obj.and_then(Value::as_object).and_then(|m| m.get(name))
}

/// The key a card without an `elo` gets: 995..=1005, from a stable hash
/// (64-bit FNV-1a) of its id, so every replica computes the same one.
pub fn default_elo(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    995 + h % 11
}

/// The `elo` key of a card from its `elo` field (`None`: `undefined`).
fn elo_key(id: &str, elo: Option<&Value>) -> Value {
    match elo {
        Some(Value::Number(n)) => Value::Number(n.clone()),
        _ if truthy(elo) && truthy(field(elo, "global")) => field(field(elo, "global"), "score")
            .cloned()
            .unwrap_or(Value::Null),
        _ if truthy(elo) => field(elo, "score").cloned().unwrap_or(Value::Null),
        _ => json!(default_elo(id)),
    }
}

fn elo_map(doc: &Document, emit: &mut Emitter) {
    if doc.body.get("docType").and_then(Value::as_str) != Some("CARD") {
        return;
    }
    emit.emit(
        elo_key(&doc.id, doc.body.get("elo")),
        Value::String(doc.id.clone()),
    );
}

/// The `getTags` value of a tag from its `name` and `snippit` fields.
fn tag_value(name: Option<Value>, snippit: Option<Value>) -> Value {
    let mut value = Map::with_capacity(5);
    value.insert("docType".into(), json!("TAG"));
    if let Some(v) = name {
        value.insert("name".into(), v);
    }
    if let Some(v) = snippit {
        value.insert("snippit".into(), v);
    }
    value.insert("wiki".into(), json!(""));
    value.insert("taggedCards".into(), json!([]));
    Value::Object(value)
}

fn get_tags_map(doc: &Document, emit: &mut Emitter) {
    if doc.body.get("docType").and_then(Value::as_str) != Some("TAG") {
        return;
    }
    let Some(cards) = doc.body.get("taggedCards").and_then(Value::as_array) else {
        return;
    };
    let value = tag_value(
        doc.body.get("name").cloned(),
        doc.body.get("snippit").cloned(),
    );
    emit.emit_each(cards.iter().cloned(), value);
}

/// The fields the built-in maps read, as unparsed JSON text borrowed from
/// the body; `None` when absent (`undefined`), while `null` is
/// `Some("null")`. Every other field is skipped by serde.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "docType", default, borrow, deserialize_with = "present")]
    doc_type: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    elo: Option<&'a RawValue>,
    #[serde(rename = "taggedCards", default, borrow, deserialize_with = "present")]
    tagged_cards: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    snippit: Option<&'a RawValue>,
}

/// A present field, `null` included (serde reads `null` as `None` for an
/// `Option`, which would make it `undefined`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Whether a field is the JSON string `want` (escapes included).
fn is_str(raw: Option<&RawValue>, want: &str) -> bool {
    let Some(raw) = raw else {
        return false;
    };
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner == want,
        Some(_) => serde_json::from_str::<Cow<'_, str>>(text).is_ok_and(|s| s == want),
        None => false,
    }
}

/// A field's value, parsed (it nests no deeper than the body).
fn parse(raw: Option<&RawValue>) -> Option<Value> {
    let raw = raw?;
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.disable_recursion_limit();
    // A field of a body that parsed is itself valid JSON.
    Value::deserialize(&mut de).ok()
}

/// Runs `map` over `doc` with the fields read raw, or `parsed_map` over the
/// whole parsed document when serde cannot read it field by field (a
/// duplicate key: the parsed map keeps the last, as JavaScript does).
fn with_fields(
    doc: &RawDocument<'_>,
    emit: &mut Emitter,
    map: impl FnOnce(Fields<'_>, &mut Emitter),
    parsed_map: fn(&Document, &mut Emitter),
) {
    match doc.fields::<Fields<'_>>() {
        Ok(fields) => map(fields, emit),
        Err(_) => {
            if let Ok(parsed) = doc.to_document() {
                parsed_map(&parsed, emit);
            }
        }
    }
}

fn elo_raw(doc: &RawDocument<'_>, emit: &mut Emitter) {
    with_fields(
        doc,
        emit,
        |f, emit| {
            if !is_str(f.doc_type, "CARD") {
                return;
            }
            emit.emit(elo_key_raw(doc.id, f.elo), Value::String(doc.id.to_owned()));
        },
        elo_map,
    );
}

/// The two fields of an `elo` object (or of its `global`) the key reads.
#[derive(Deserialize)]
struct EloFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    global: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    score: Option<&'a RawValue>,
}

/// JavaScript truthiness of a field's JSON text.
fn truthy_raw(raw: &RawValue) -> bool {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'n' | b'f') => false,
        Some(b'"') => raw.get().trim() != "\"\"",
        Some(b'-' | b'0'..=b'9') => raw.get().trim().parse::<f64>().is_ok_and(|f| f != 0.0),
        _ => true,
    }
}

/// [`elo_key`] from the field's JSON text: a card's `elo` object (most of
/// them, with `global`, `tags` and `misc` maps) is read for its `global`
/// and `score` alone instead of being parsed into maps. Anything else, or
/// an object serde cannot read field by field (a duplicate key), goes
/// through the parsed path.
fn elo_key_raw(id: &str, elo: Option<&RawValue>) -> Value {
    fn object(raw: &RawValue) -> Option<EloFields<'_>> {
        let text = raw.get().trim_start();
        if !text.starts_with('{') {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(text);
        de.disable_recursion_limit();
        EloFields::deserialize(&mut de).ok()
    }
    if let Some(fields) = elo.and_then(object) {
        match fields.global {
            // `elo.global.score`: undefined (null as a key) unless `global`
            // is an object.
            Some(global) if truthy_raw(global) => {
                if !global.get().trim_start().starts_with('{') {
                    return Value::Null;
                }
                if let Some(inner) = object(global) {
                    return parse(inner.score).unwrap_or(Value::Null);
                }
            }
            _ => return parse(fields.score).unwrap_or(Value::Null),
        }
    }
    elo_key(id, parse(elo).as_ref())
}

fn get_tags_raw(doc: &RawDocument<'_>, emit: &mut Emitter) {
    with_fields(
        doc,
        emit,
        |f, emit| {
            if !is_str(f.doc_type, "TAG") {
                return;
            }
            let Some(Value::Array(cards)) = parse(f.tagged_cards) else {
                return;
            };
            emit.emit_each(cards, tag_value(parse(f.name), parse(f.snippit)));
        },
        get_tags_map,
    );
}

/// The built-in `elo` view.
pub fn elo() -> View {
    View::new_raw(ELO, 1, elo_raw)
}

/// The built-in `getTags` view.
pub fn get_tags() -> View {
    View::new_raw(GET_TAGS, 1, get_tags_raw)
}

/// Both built-in views.
pub fn views() -> Vec<View> {
    vec![elo(), get_tags()]
}

/// A card and its rating, from the `elo` view.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RatedCard {
    /// The card's id.
    pub id: String,
    /// Its rating (the view key).
    pub score: f64,
}

/// A tag of a card, from the `getTags` view.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CardTag {
    /// The card's id (the view key).
    pub card_id: String,
    /// The tag document's id.
    pub tag_id: String,
    /// The tag's name, if it has one.
    pub name: Option<String>,
    /// The whole emitted value.
    pub value: Value,
}

/// The `limit` cards whose rating is nearest `rating`: the app's
/// two-sided query (up to `limit` rows at or below, up to `limit`
/// above), merged by distance; ties go to the lower rating, then the
/// id. Cards whose key is not a number are not candidates.
pub fn cards_near_rating(
    views: &Views,
    rating: f64,
    limit: usize,
) -> Result<Vec<RatedCard>, ViewError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    views.update_if_needed(ELO)?;
    let num = |f: f64| json!(f);
    let below = QueryOptions::default()
        .start_key(num(rating))
        .end_key(num(f64::MIN))
        .descending(true)
        .limit(limit)
        .update(Update::False);
    let collect = |q: &QueryOptions| -> Result<Vec<RatedCard>, ViewError> {
        views
            .rows(ELO, q)?
            .filter_map(|r| match r {
                Ok(row) => row
                    .key
                    .as_f64()
                    .map(|score| Ok(RatedCard { id: row.id, score })),
                Err(e) => Some(Err(e)),
            })
            .collect()
    };
    let below = collect(&below)?;
    // Rows equal to `rating` sort first in both directions: `below`
    // holds all of them unless it is already full of them.
    let equal = below.iter().filter(|c| c.score == rating).count();
    let above = if equal >= limit {
        Vec::new()
    } else {
        let above = QueryOptions::default()
            .start_key(num(rating))
            .end_key(num(f64::MAX))
            .skip(equal)
            .limit(limit)
            .update(Update::False);
        collect(&above)?
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(limit);
    while out.len() < limit && (i < below.len() || j < above.len()) {
        let take_below = match (below.get(i), above.get(j)) {
            (Some(b), Some(a)) => rating - b.score <= a.score - rating,
            (Some(_), None) => true,
            _ => false,
        };
        if take_below {
            out.push(below[i].clone());
            i += 1;
        } else {
            out.push(above[j].clone());
            j += 1;
        }
    }
    Ok(out)
}

/// The tags of each card, in the order of `card_ids` (each card's tags
/// in tag id order); cards without tags contribute nothing.
pub fn tags_for_cards<S: AsRef<str>>(
    views: &Views,
    card_ids: &[S],
) -> Result<Vec<CardTag>, ViewError> {
    views.update_if_needed(GET_TAGS)?;
    let q = QueryOptions::default()
        .keys(card_ids.iter().map(|s| json!(s.as_ref())).collect())
        .update(Update::False);
    views
        .rows(GET_TAGS, &q)?
        .map(|r| {
            let row = r?;
            Ok(CardTag {
                card_id: row.key.as_str().unwrap_or_default().to_owned(),
                tag_id: row.id,
                name: row
                    .value
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                value: row.value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revtree::Rev;
    use std::sync::Arc;

    fn doc(id: &str, body: Value) -> Document {
        Document {
            id: id.into(),
            rev: "1-a".parse::<Rev>().unwrap_or_else(|_| unreachable!()),
            deleted: false,
            body: body.as_object().cloned().unwrap_or_default(),
            conflicts: vec![],
            deleted_conflicts: vec![],
        }
    }

    fn keys(view: &View, d: &Document) -> Vec<Value> {
        view.map(d).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn elo_follows_the_design_document() {
        let v = elo();
        let card = |elo: Value| doc("c-1", json!({"docType": "CARD", "elo": elo}));
        assert_eq!(keys(&v, &card(json!(1200))), vec![json!(1200)]);
        assert_eq!(keys(&v, &card(json!(0))), vec![json!(0)]);
        assert_eq!(
            keys(&v, &card(json!({"global": {"score": 990}, "score": 5}))),
            vec![json!(990)]
        );
        assert_eq!(keys(&v, &card(json!({"score": 5}))), vec![json!(5)]);
        assert_eq!(keys(&v, &card(json!({"global": {}}))), vec![json!(null)]);
        assert_eq!(
            keys(&v, &card(json!({"global": null, "score": 7}))),
            vec![json!(7)]
        );
        let none = doc("c-1", json!({"docType": "CARD"}));
        let k = keys(&v, &none)[0].as_u64().unwrap_or_default();
        assert!((995..=1005).contains(&k));
        assert_eq!(keys(&v, &none), keys(&v, &card(json!(null))));
        assert!(keys(&v, &doc("t", json!({"docType": "TAG", "elo": 3}))).is_empty());
        assert_eq!(v.map(&card(json!(1)))[0].1, json!("c-1"));
    }

    #[test]
    fn default_elo_is_stable_and_spread() {
        assert_eq!(default_elo("c-000001"), default_elo("c-000001"));
        let seen: std::collections::BTreeSet<u64> = (0..200)
            .map(|i| default_elo(&format!("c-{i:06}")))
            .collect();
        assert_eq!(seen.len(), 11);
    }

    #[test]
    fn get_tags_follows_the_design_document() {
        let t = doc(
            "TAG-math",
            json!({"docType": "TAG", "name": "math", "snippet": "x", "taggedCards": ["c-1", "c-2"]}),
        );
        let rows = get_tags().map(&t);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].0, json!("c-2"));
        assert_eq!(
            serde_json::to_string(&rows[0].1).unwrap_or_default(),
            r#"{"docType":"TAG","name":"math","wiki":"","taggedCards":[]}"#
        );
        let no_cards = doc("TAG-x", json!({"docType": "TAG"}));
        assert!(get_tags().map(&no_cards).is_empty());
    }

    type Rows = Vec<(Value, Value)>;

    /// The rows of `view` over `body` (JSON text, exactly as stored) read
    /// raw, and those of the parsed map over the same body parsed.
    fn raw_and_parsed(
        raw_view: &View,
        parsed_map: fn(&Document, &mut Emitter),
        body: &str,
    ) -> (Rows, Rows) {
        let rev = "1-a".parse::<Rev>().unwrap_or_else(|_| unreachable!());
        let raw = RawDocument::new("c-1", &rev, body.as_bytes());
        let rows = raw_view
            .map_parsed_or_raw(&raw, None)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Arc::unwrap_or_clone(v)))
            .collect();
        let parsed = raw.to_document();
        assert!(parsed.is_ok(), "{body}: {parsed:?}");
        let parsed = parsed.unwrap_or_else(|_| unreachable!());
        let want = View::new("parsed", 1, parsed_map).map(&parsed);
        (rows, want)
    }

    fn same_rows(raw_view: &View, parsed_map: fn(&Document, &mut Emitter), body: &str) {
        let (got, want) = raw_and_parsed(raw_view, parsed_map, body);
        assert_eq!(
            serde_json::to_string(&got).unwrap_or_default(),
            serde_json::to_string(&want).unwrap_or_default(),
            "{body}"
        );
    }

    #[test]
    fn raw_elo_matches_the_parsed_map_on_tricky_bodies() {
        let bodies = [
            r#"{"docType":"CARD","elo":0}"#,
            r#"{"docType":"CARD","elo":-0.0}"#,
            r#"{"docType":"CARD","elo":""}"#,
            r#"{"docType":"CARD","elo":"1200"}"#,
            r#"{"docType":"CARD","elo":null}"#,
            r#"{"docType":"CARD","elo":false}"#,
            r#"{"docType":"CARD","elo":true}"#,
            r#"{"docType":"CARD","elo":[]}"#,
            r#"{"docType":"CARD","elo":{}}"#,
            r#"{"docType":"CARD","elo":{"global":{}}}"#,
            r#"{"docType":"CARD","elo":{"global":{},"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":0,"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":"","score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":{"score":null}}}"#,
            r#"{"docType":"CARD","elo":{"global":{"score":"x"},"score":1}}"#,
            r#"{"docType":"CARD","elo":{"global":[1],"score":1}}"#,
            r#"{"docType":"CARD","elo":{"score":{"a":[1,{"b":2}]}}}"#,
            r#"{"docType":"CARD","elo":1e300}"#,
            r#"{"docType":"CARD","elo":-1.5e-300}"#,
            r#"{"docType":"CARD","elo":123456789012345678901234567890}"#,
            r#"{"docType":"CARD","elo":1.0}"#,
            r#"{"docType":"CARD","elo":{"global":{"score":1e300}}}"#,
            r#"{"docType":"CARD","elo":{"global":0.0,"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":-0,"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":0e5,"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":"0","score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":" ","score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":false,"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":true,"score":3}}"#,
            r#"{"docType":"CARD","elo":{"global":null,"score":2}}"#,
            r#"{"docType":"CARD","elo":{"global":5,"score":1}}"#,
            r#"{"docType":"CARD","elo":{"global":{"count":1},"score":1}}"#,
            r#"{"docType":"CARD","elo":{"global":{"score":1},"global":{"score":2}}}"#,
            r#"{"docType":"CARD","elo":{"global":{"score":1,"score":2}}}"#,
            r#"{"docType":"CARD","elo":{"score":1,"score":2}}"#,
            r#"{"docType":"CARD","elo": { "global" : { "score" : 7 } , "tags":{"a":{"score":1}}}}"#,
            r#"{"docType":"CARD","elo":{"global":{"score":[1,{"x":null}]},"misc":[[[]]]}}"#,
            r#"{"docType":"CARD"}"#,
            r#"{"docType":"C\u0041RD","elo":5}"#,
            r#"{"docType":"CARD ","elo":5}"#,
            r#"{"docType":["CARD"],"elo":5}"#,
            r#"{"docType":null,"elo":5}"#,
            r#"{"elo":5}"#,
            r#"{"docType":"TAG","elo":5}"#,
            r#"{"front":"a \" b","elo":7,"nested":{"docType":"TAG"},"docType":"CARD"}"#,
            r#"{"docType":"CARD","elo":1,"elo":2}"#,
            r#"{"docType":"TAG","docType":"CARD","elo":2}"#,
            r#"{}"#,
        ];
        for body in bodies {
            same_rows(&elo(), elo_map, body);
        }
    }

    #[test]
    fn raw_get_tags_matches_the_parsed_map_on_tricky_bodies() {
        let bodies = [
            r#"{"docType":"TAG","name":"math","snippit":"s","taggedCards":["c-1","c-2"]}"#,
            r#"{"docType":"TAG","taggedCards":["c-1"]}"#,
            r#"{"docType":"TAG","name":null,"snippit":{"b":1,"a":[2]},"taggedCards":["c-1"]}"#,
            r#"{"docType":"TAG","taggedCards":[1,null,{"x":1},["c"],"c-1","c-1",1e300]}"#,
            r#"{"docType":"TAG","taggedCards":[]}"#,
            r#"{"docType":"TAG","taggedCards":"c-1"}"#,
            r#"{"docType":"TAG","taggedCards":{"0":"c-1"}}"#,
            r#"{"docType":"TAG","taggedCards":null}"#,
            r#"{"docType":"TAG"}"#,
            r#"{"docType":"CARD","taggedCards":["c-1"]}"#,
            r#"{"docType":"T\u0041G","name":"\u00e9","taggedCards":["c-\u00e9"]}"#,
            r#"{"taggedCards":["c-1"],"name":"n","docType":"TAG","wiki":"w","snippet":"x"}"#,
            r#"{"docType":"TAG","taggedCards":["a"],"taggedCards":["b"]}"#,
        ];
        for body in bodies {
            same_rows(&get_tags(), get_tags_map, body);
        }
    }

    #[test]
    fn raw_maps_read_deeply_nested_bodies() {
        let deep = format!(
            r#"{{"docType":"CARD","junk":{}{}, "elo":{{"score":{}1{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200),
            "[".repeat(200),
            "]".repeat(200)
        );
        let (got, want) = raw_and_parsed(&elo(), elo_map, &deep);
        assert_eq!(got.len(), 1);
        assert_eq!(got, want);
    }
}
