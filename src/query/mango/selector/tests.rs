#![allow(clippy::panic)]

use super::*;
use serde_json::json;

fn sel(v: Value) -> Selector {
    match Selector::parse(&v) {
        Ok(s) => s,
        Err(e) => panic!("{v}: {e}"),
    }
}

fn m(s: Value, doc: Value) -> bool {
    match sel(s).matches(&doc) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn err(s: Value) -> (String, String) {
    match Selector::parse(&s) {
        Ok(_) => panic!("{s} parsed"),
        Err(e) => (e.error().to_owned(), e.reason()),
    }
}

#[test]
fn normalizes_like_couchdb() {
    assert_eq!(sel(json!({"a": 1})).to_json(), json!({"a": {"$eq": 1}}));
    assert_eq!(
        sel(json!({"a": 1, "b": {"$gt": 2}})).to_json(),
        json!({"$and": [{"a": {"$eq": 1}}, {"b": {"$gt": 2}}]})
    );
    assert_eq!(
        sel(json!({"a": {"b": {"$gt": 10}}})).to_json(),
        json!({"a.b": {"$gt": 10}})
    );
    assert_eq!(
        sel(json!({"foo": {"$and": [{"$gt": 5}, {"$lt": 10}]}})).to_json(),
        json!({"$and": [{"foo": {"$gt": 5}}, {"foo": {"$lt": 10}}]})
    );
    assert_eq!(
        sel(json!({"$not": {"foo": {"$gt": 10}}})).to_json(),
        json!({"foo": {"$lte": 10}})
    );
    assert_eq!(
        sel(json!({"$nor": [{"a": 1}, {"b": {"$in": [1]}}]})).to_json(),
        json!({"$and": [{"a": {"$ne": 1}}, {"b": {"$nin": [1]}}]})
    );
    assert_eq!(
        sel(json!({"a": {"$not": {"$size": 2}}})).to_json(),
        json!({"a": {"$not": {"$size": 2}}})
    );
    assert_eq!(
        sel(json!({"a": {"$elemMatch": {"$gte": 80, "$lt": 85}}})).to_json(),
        json!({"a": {"$elemMatch": {"$and": [{"": {"$gte": 80}}, {"": {"$lt": 85}}]}}})
    );
    assert_eq!(sel(json!({})).to_json(), json!({}));
}

#[test]
fn errors_like_couchdb() {
    assert_eq!(
        err(json!([])),
        (
            "invalid_selector_json".into(),
            "Selector must be a JSON object, not: []".into()
        )
    );
    assert_eq!(
        err(json!({"a": {"$in": "x"}})),
        (
            "bad_arg".into(),
            "Bad argument for operator $in: <<120>>".into()
        )
    );
    assert_eq!(err(json!({"$foo": 1})).1, "Invalid operator: $foo");
    assert_eq!(err(json!({"a": {"$where": 1}})).0, "not_supported");
    assert_eq!(
        err(json!({"": 1})).1,
        "One or more conditions is missing a field name."
    );
    assert_eq!(
        err(json!({"a": {"$mod": [1.5, 1]}})).1,
        "Bad argument for operator $mod: [1.5,1]"
    );
    assert_eq!(
        err(json!({"a": {"$size": -1}})).1,
        "Bad argument for operator $size: -1"
    );
    assert_eq!(err(json!({"a": {"$exists": 1}})).0, "bad_arg");
    assert_eq!(
        err(json!({"a": {"$regex": "("}})).1,
        "Bad argument for operator $regex: <<40>>"
    );
    assert_eq!(
        err(json!({"$and": {}})).1,
        "Bad argument for operator $and: {[]}"
    );
    assert_eq!(err(json!({"a": {"$text": "x"}})).0, "bad_field");
    // An empty path part fails when a document is matched, not before.
    let s = sel(json!({"a..b": 1}));
    assert!(s.matches(&json!({"a": 1})).is_err());
}

#[test]
fn comparisons_use_view_collation() {
    assert!(m(json!({"a": {"$gt": null}}), json!({"a": false})));
    assert!(m(json!({"a": {"$gt": 1}}), json!({"a": "0"})));
    assert!(m(json!({"a": {"$lt": []}}), json!({"a": "zzz"})));
    assert!(m(json!({"a": {"$lt": {}}}), json!({"a": [1]})));
    assert!(m(json!({"a": {"$gte": "a"}}), json!({"a": "A"})));
    assert!(!m(json!({"a": {"$gt": "a"}}), json!({"a": "a"})));
    assert!(m(json!({"a": 1}), json!({"a": 1.0})));
    assert!(m(json!({"a": {"$lte": 2}}), json!({"a": 2})));
    assert!(!m(json!({"a": {"$lt": 2}}), json!({"a": 2})));
    assert!(m(json!({"a": {"$ne": 2}}), json!({"a": "2"})));
    // A missing field matches nothing but `$exists: false`.
    assert!(!m(json!({"a": {"$ne": 2}}), json!({})));
    assert!(!m(json!({"a": {"$lt": 2}}), json!({})));
    assert!(!m(json!({"a": {"$nin": [2]}}), json!({})));
    assert!(m(json!({"a": {"$exists": false}}), json!({})));
    assert!(!m(json!({"a": {"$exists": false}}), json!({"a": null})));
    assert!(m(json!({"a": {"$exists": true}}), json!({"a": null})));
    assert!(m(json!({"a": null}), json!({"a": null})));
    assert!(!m(json!({"a": null}), json!({})));
}

#[test]
fn id_compares_in_erlang_term_order() {
    // Bytes, not collation: "B" < "a".
    assert!(m(json!({"_id": {"$lt": "a"}}), json!({"_id": "B"})));
    assert!(!m(json!({"a": {"$lt": "a"}}), json!({"a": "B"})));
    // Numbers and atoms sort before binaries.
    assert!(m(json!({"_id": {"$gt": null}}), json!({"_id": "x"})));
    assert!(m(json!({"_id": {"$gt": 5}}), json!({"_id": "x"})));
    assert!(m(json!({"_id": {"$gt": {}}}), json!({"_id": "x"})));
}

#[test]
fn arrays() {
    let doc = json!({"arr": [1, 2, 3], "one": [2]});
    assert!(!m(json!({"arr": 2}), doc.clone()));
    assert!(m(json!({"arr": [1, 2, 3]}), doc.clone()));
    assert!(m(json!({"arr": {"$in": [2]}}), doc.clone()));
    assert!(!m(json!({"arr": {"$in": [[1, 2, 3]]}}), doc.clone()));
    assert!(!m(json!({"arr": {"$in": []}}), doc.clone()));
    assert!(m(json!({"arr": {"$nin": [7]}}), doc.clone()));
    assert!(!m(json!({"arr": {"$nin": [3]}}), doc.clone()));
    assert!(m(json!({"arr": {"$all": [3, 1]}}), doc.clone()));
    assert!(!m(json!({"arr": {"$all": [3, 1.0]}}), doc.clone()));
    assert!(!m(json!({"arr": {"$all": []}}), doc.clone()));
    assert!(m(json!({"one": {"$all": [[2]]}}), doc.clone()));
    assert!(m(json!({"one": {"$all": [[2.0]]}}), doc.clone()));
    assert!(m(json!({"arr": {"$size": 3}}), doc.clone()));
    assert!(!m(json!({"one": {"$size": 3}}), doc.clone()));
    assert!(m(json!({"arr": {"$elemMatch": {"$gt": 2}}}), doc.clone()));
    assert!(!m(json!({"arr": {"$elemMatch": {"$gt": 3}}}), doc.clone()));
    assert!(m(json!({"arr": {"$allMatch": {"$gt": 0}}}), doc.clone()));
    assert!(!m(json!({"arr": {"$allMatch": {"$gt": 1}}}), doc.clone()));
    assert!(!m(
        json!({"e": {"$allMatch": {"$gt": 1}}}),
        json!({"e": []})
    ));
    assert!(m(json!({"arr.1": 2}), doc.clone()));
    assert!(!m(json!({"arr.5": 2}), doc.clone()));
    assert!(m(
        json!({"r": {"$elemMatch": {"s": 1, "t": {"$exists": false}}}}),
        json!({"r": [{"s": 2}, {"s": 1}]})
    ));
}

#[test]
fn other_operators() {
    let doc = json!({"n": 7, "f": 7.0, "s": "Hello", "o": {"p.q": 1, "k": {"x": 1}}, "z": null, "b": true});
    assert!(m(json!({"n": {"$mod": [3, 1]}}), doc.clone()));
    assert!(!m(json!({"f": {"$mod": [3, 1]}}), doc.clone()));
    assert!(!m(json!({"n": {"$mod": [0, 1]}}), doc.clone()));
    assert!(m(json!({"n": {"$mod": [-3, 1]}}), doc.clone()));
    assert!(m(json!({"s": {"$regex": "^H.l+o$"}}), doc.clone()));
    assert!(!m(json!({"s": {"$regex": "^h"}}), doc.clone()));
    assert!(m(json!({"s": {"$regex": "(?i)^h"}}), doc.clone()));
    assert!(!m(json!({"n": {"$regex": "7"}}), doc.clone()));
    assert!(m(json!({"s": {"$beginsWith": "He"}}), doc.clone()));
    assert!(!m(json!({"s": {"$beginsWith": "he"}}), doc.clone()));
    for (f, t) in [
        ("n", "number"),
        ("s", "string"),
        ("o", "object"),
        ("z", "null"),
        ("b", "boolean"),
    ] {
        assert!(m(json!({f: {"$type": t}}), doc.clone()), "{f}");
    }
    assert!(m(json!({"o.p\\.q": 1}), doc.clone()));
    assert!(!m(json!({"o.p.q": 1}), doc.clone()));
    assert!(m(json!({"o": {"k": {"x": 1}}}), doc.clone()));
    assert!(m(json!({"o": {"$keyMapMatch": {"$eq": "k"}}}), doc.clone()));
    assert!(!m(
        json!({"o": {"$keyMapMatch": {"$eq": "x"}}}),
        doc.clone()
    ));
    assert!(m(json!({"$or": [{"n": 1}, {"s": "Hello"}]}), doc.clone()));
    assert!(!m(json!({"$or": [{"n": 1}, {"s": "x"}]}), doc.clone()));
    assert!(m(json!({"$or": []}), doc.clone()));
    assert!(m(json!({"$and": []}), doc.clone()));
    assert!(m(json!({"$nor": [{"n": 1}, {"s": "x"}]}), doc.clone()));
    assert!(m(json!({"n": {"$not": {"$in": [1, 2]}}}), doc.clone()));
    assert!(!m(
        json!({"missing": {"$not": {"$in": [1, 2]}}}),
        doc.clone()
    ));
    assert!(m(json!({"$text": "anything"}), doc.clone()));
    assert!(m(json!({}), doc));
}

#[test]
fn index_helpers() {
    let s = sel(json!({"A": "foo", "$or": [{"B": "bar"}, {"B": "baz"}], "C": "qux"}));
    assert!(s.has_required_fields(&["A".into(), "B".into(), "C".into()]));
    assert!(s.is_constant_field("C"));
    assert!(!s.is_constant_field("B"));
    let s = sel(json!({"$or": [{"A": "foo"}, {"B": "foo"}]}));
    assert!(!s.has_required_fields(&["A".into()]));
    let s = sel(json!({"A": {"$exists": false}}));
    assert!(!s.has_required_fields(&["A".into()]));
    assert!(!sel(json!({})).has_required_fields(&["A".into()]));
}
