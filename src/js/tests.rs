//! The sandbox on its own: the query-server API, what a failing function
//! gives, and every limit.

#![allow(clippy::panic)]

use super::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn functions(maps: &[&str], reduces: &[&str], lib: Value, limits: Limits) -> Functions {
    match Functions::new("_design/t", &lib, maps, reduces, limits) {
        Ok(f) => f,
        Err(e) => panic!("compile: {e}"),
    }
}

fn rows(f: &Functions, i: usize, doc: &Value) -> Vec<(Value, Value)> {
    let key = format!("{}\u{0}{}", doc["_id"], doc["_rev"]);
    match f.map(i, &key, &doc.to_string()) {
        Ok(Mapped::Rows(rows)) => rows,
        other => panic!("map: {other:?}"),
    }
}

#[test]
fn a_map_function_emits_rows_with_the_query_server_api() {
    let f = functions(
        &[r#"function (doc) {
            emit(doc._id, doc.n);
            emit([doc.n, isArray(doc.tags)], sum(doc.tags));
            emit(toJSON({a: 1}), undefined);
            emit(undefined, new Error("boom"));
        }"#],
        &[],
        Value::Null,
        Limits::default(),
    );
    let doc = json!({"_id": "a", "_rev": "1-x", "n": 3, "tags": [1, 2, 4]});
    assert_eq!(
        rows(&f, 0, &doc),
        vec![
            (json!("a"), json!(3)),
            (json!([3, true]), json!(7)),
            (json!("{\"a\":1}"), Value::Null),
            (Value::Null, json!({"error": "Error", "message": "boom"})),
        ]
    );
}

#[test]
fn a_map_that_throws_gives_no_rows_for_that_document_only() {
    let f = functions(
        &["function (doc) { if (doc.bad) { throw new Error('bad doc'); } emit(doc._id, null); }"],
        &[],
        Value::Null,
        Limits::default(),
    );
    let bad = json!({"_id": "b", "_rev": "1-x", "bad": true});
    match f.map(0, "b", &bad.to_string()) {
        Ok(Mapped::Threw(e)) => assert!(e.contains("bad doc"), "{e}"),
        other => panic!("{other:?}"),
    }
    let good = json!({"_id": "g", "_rev": "1-x"});
    assert_eq!(rows(&f, 0, &good), vec![(json!("g"), Value::Null)]);
}

#[test]
fn documents_are_sealed_so_one_view_cannot_change_what_the_next_sees() {
    let f = functions(
        &[
            "function (doc) { 'use strict'; try { doc.n = 99; } catch (e) { emit('sealed', null); } }",
            "function (doc) { emit(doc.n, null); }",
        ],
        &[],
        Value::Null,
        Limits::default(),
    );
    let doc = json!({"_id": "a", "_rev": "1-x", "n": 1});
    assert_eq!(rows(&f, 0, &doc), vec![(json!("sealed"), Value::Null)]);
    assert_eq!(rows(&f, 1, &doc), vec![(json!(1), Value::Null)]);
}

#[test]
fn nested_objects_and_arrays_are_sealed_too() {
    // Each write is tried on its own; the map emits the name of every one
    // that was refused, then what the next view sees.
    let tries = [
        ("obj", "doc.o.k = 2"),
        ("deep", "doc.a[1].k = 2"),
        ("elem", "doc.a[0] = 2"),
        ("push", "doc.a.push(3)"),
        ("inner", "doc.a[2].push(3)"),
        ("proto", "doc['__proto__'].k = 2"),
    ];
    let body: String = tries
        .iter()
        .map(|(name, stmt)| format!("try {{ {stmt}; }} catch (e) {{ emit('{name}', null); }} "))
        .collect();
    let f = functions(
        &[
            &format!("function (doc) {{ 'use strict'; {body} }}"),
            "function (doc) { emit(doc.o.k, [doc.a.length, doc.a[0], doc.a[1].k, doc.a[2].length]); }",
        ],
        &[],
        Value::Null,
        Limits::default(),
    );
    let doc = r#"{"_id":"a","_rev":"1-x","o":{"k":1},"a":[1,{"k":1},[]],"__proto__":{"k":1}}"#;
    let refused: Vec<Value> = match f.map(0, "a", doc) {
        Ok(Mapped::Rows(rows)) => rows.into_iter().map(|(k, _)| k).collect(),
        other => panic!("{other:?}"),
    };
    let names: Vec<Value> = tries.iter().map(|(name, _)| json!(name)).collect();
    assert_eq!(refused, names);
    match f.map(1, "a", doc) {
        Ok(Mapped::Rows(rows)) => assert_eq!(rows, vec![(json!(1), json!([3, 1, 1, 0]))]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn require_loads_commonjs_modules_from_views_lib() {
    let lib = json!({
        "math": "exports.double = function (x) { return 2 * require('views/lib/one').one * x; };",
        "one": "exports.one = 1;",
    });
    let f = functions(
        &["function (doc) { emit(require('views/lib/math').double(doc.n), null); }"],
        &[],
        lib,
        Limits::default(),
    );
    let doc = json!({"_id": "a", "_rev": "1-x", "n": 21});
    assert_eq!(rows(&f, 0, &doc), vec![(json!(42), Value::Null)]);
}

#[test]
fn a_missing_module_gives_no_rows_and_says_why() {
    let f = functions(
        &["function (doc) { emit(require('views/lib/nope'), null); }"],
        &[],
        Value::Null,
        Limits::default(),
    );
    let doc = json!({"_id": "a", "_rev": "1-x"});
    // CouchDB logs `["error", "invalid_require_path", …]` and the
    // document has no rows, like any other exception of a map function.
    match f.map(0, "a", &doc.to_string()) {
        Ok(Mapped::Threw(m)) => assert!(m.contains("invalid_require_path"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn code_that_does_not_compile_is_a_compilation_error() {
    for source in ["function (doc) { emit(", "42", "not a function at all"] {
        match Functions::new("_design/t", &Value::Null, &[source], &[], Limits::default()) {
            Err(JsError::Compile(m)) => assert!(!m.is_empty()),
            other => panic!("{source}: {other:?}"),
        }
    }
}

#[test]
fn a_map_that_loops_forever_is_stopped_at_its_time_limit() {
    let limits = Limits::default().with_time(Duration::from_millis(100));
    let f = functions(
        &["function (doc) { try { while (true) {} } catch (e) { emit('caught', null); } }"],
        &[],
        Value::Null,
        limits,
    );
    let started = Instant::now();
    match f.map(0, "a", r#"{"_id":"a","_rev":"1-x"}"#) {
        Err(JsError::Timeout(t)) => assert_eq!(t, Duration::from_millis(100)),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_map_that_allocates_without_bound_is_stopped_at_its_memory_limit() {
    let limits = Limits::default().with_memory(16 << 20);
    let f = functions(
        &["function (doc) { var a = []; while (true) { a.push(new Array(100000).fill(doc._id)); } }"],
        &[],
        Value::Null,
        limits,
    );
    match f.map(0, "a", r#"{"_id":"a","_rev":"1-x"}"#) {
        Err(JsError::Memory { limit, .. }) => assert_eq!(limit, 16 << 20),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deep_recursion_is_stopped_not_a_crash() {
    let f = functions(
        &["function (doc) { function f(n) { return f(n + 1) + 1; } emit(f(0), null); }"],
        &[],
        Value::Null,
        Limits::default(),
    );
    // QuickJS raises a RangeError the function could catch; uncaught, the
    // document has no rows.
    match f.map(0, "a", r#"{"_id":"a","_rev":"1-x"}"#) {
        Ok(Mapped::Threw(m)) => assert!(m.contains("stack"), "{m}"),
        Err(JsError::Memory { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_host_is_out_of_reach() {
    let f = functions(
        &[r#"function (doc) {
            var names = ['require', 'process', 'std', 'os', 'fetch', 'XMLHttpRequest', 'setTimeout', 'print', '__host_log'];
            var seen = [];
            for (var i = 0; i < names.length; i++) {
                if (typeof globalThis[names[i]] !== 'undefined') seen.push(names[i]);
            }
            var imported = 'no';
            try { (0, eval)("import('fs')"); imported = 'promise'; } catch (e) { imported = 'threw'; }
            emit(seen, imported);
            emit(typeof Math.random(), Math.random() < 1);
        }"#],
        &[],
        Value::Null,
        Limits::default(),
    );
    let got = rows(&f, 0, &json!({"_id": "a", "_rev": "1-x"}));
    // Only the query server's own `require` (design-doc modules) and its
    // log hook are there; no I/O of any kind.
    assert_eq!(got[0].0, json!(["require", "__host_log"]));
    assert_eq!(got[1], (json!("number"), json!(true)));
    match f.map(0, "b", r#"{"_id":"b","_rev":"1-x"}"#) {
        Ok(Mapped::Rows(_)) => {}
        other => panic!("{other:?}"),
    }
    let fs = functions(
        &["function (doc) { emit(require('fs'), null); }"],
        &[],
        Value::Null,
        Limits::default(),
    );
    // `require` reaches the design document's modules only.
    assert!(matches!(
        fs.map(0, "a", r#"{"_id":"a","_rev":"1-x"}"#),
        Ok(Mapped::Threw(m)) if m.contains("invalid_require_path")
    ));
}

#[test]
fn reduce_and_rereduce_run_and_a_throwing_reduce_gives_null() {
    let f = functions(
        &[],
        &[
            "function (keys, values, rereduce) { return rereduce ? sum(values) : values.length; }",
            "function (keys, values) { throw new Error('no'); }",
        ],
        Value::Null,
        Limits::default(),
    );
    let input = json!([[["k", "a"], 1], [["k", "b"], 2]]).to_string();
    assert!(matches!(f.reduce(0, &input, false), Ok(v) if v == json!(2)));
    assert!(matches!(f.reduce(0, "[2, 3]", true), Ok(v) if v == json!(5)));
    assert!(matches!(f.reduce(1, &input, false), Ok(Value::Null)));
}

#[test]
fn the_cache_drops_a_runtime_that_timed_out() {
    let limits = Limits::default().with_time(Duration::from_millis(50));
    let build = || {
        Functions::new(
            "_design/c",
            &Value::Null,
            &["function (doc) { if (doc.spin) { while (true) {} } emit(1, null); }"],
            &[],
            limits,
        )
    };
    let spin = with_functions(7, build, |f| {
        f.map(0, "a", r#"{"_id":"a","_rev":"1-x","spin":true}"#)
    });
    assert!(matches!(spin, Err(JsError::Timeout(_))));
    let fine = with_functions(7, build, |f| f.map(0, "b", r#"{"_id":"b","_rev":"1-x"}"#));
    assert!(matches!(fine, Ok(Mapped::Rows(r)) if r.len() == 1));
    let used = with_functions(7, build, |f| Ok(f.memory_used()));
    assert!(matches!(used, Ok(n) if n > 0));
}
