//! Engine tests on a local replica (no server): incremental updates,
//! deletions, winner changes, rebuilds, restarts, and every query option
//! against a naive reference (map every document, sort by `collate`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::course::{self, elo, get_tags, ELO, GET_TAGS};
use super::*;
use crate::revtree::RevPath;
use crate::store::{IncomingRev, WriteBatch};
use crate::ReplicaConfig;
use serde_json::{json, Value};
use std::cmp::Ordering;

fn put(replica: &Replica, id: &str, path: &[&str], deleted: bool, body: Value) {
    let start = path.len() as u64;
    let rev = IncomingRev {
        id: id.into(),
        path: RevPath {
            start,
            ids: path.iter().map(|s| s.to_string()).collect(),
        },
        deleted,
        body: serde_json::value::to_raw_value(&body).unwrap(),
    };
    replica
        .commit_blocking(&WriteBatch {
            revs: vec![rev],
            ..WriteBatch::default()
        })
        .unwrap();
}

fn card(score: Value) -> Value {
    json!({"docType": "CARD", "elo": {"global": {"score": score}}})
}

fn open(dir: &std::path::Path) -> Replica {
    Replica::open(dir, ReplicaConfig::default()).unwrap()
}

/// Every row of `view` computed from scratch, in collation order.
fn reference(replica: &Replica, view: &View) -> Vec<ViewRow> {
    let mut rows = Vec::new();
    for info in replica.all_docs(..) {
        let info = info.unwrap();
        if info.id.starts_with("_design/") {
            continue;
        }
        let doc = replica.get(&info.id).unwrap().unwrap();
        for (key, value) in view.map(&doc) {
            rows.push(ViewRow {
                id: info.id.clone(),
                key,
                value,
                doc: None,
            });
        }
    }
    // Stable: a document's rows with equal keys keep their emit order.
    rows.sort_by(|a, b| collate(&a.key, &b.key).then_with(|| collate_str(&a.id, &b.id)));
    rows
}

fn all(views: &Views, name: &str) -> Vec<ViewRow> {
    views.query(name, &QueryOptions::default()).unwrap().rows
}

#[test]
fn incremental_updates_deletions_and_winner_changes() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    for i in 0..50 {
        put(
            &replica,
            &format!("c-{i:03}"),
            &[&format!("a{i}")],
            false,
            card(json!(1000 + i % 7)),
        );
    }
    put(
        &replica,
        "c-noelo",
        &["x"],
        false,
        json!({"docType": "CARD"}),
    );
    put(
        &replica,
        "TAG-a",
        &["t1"],
        false,
        json!({"docType": "TAG", "name": "a", "taggedCards": ["c-001", "c-002", "c-001"]}),
    );
    let views = Views::open(&replica, course::views()).unwrap();
    let first = views.warm().unwrap();
    assert_eq!(first.view(ELO).unwrap().docs_indexed, 52);
    assert_eq!(all(&views, ELO), reference(&replica, &elo()));
    assert_eq!(all(&views, GET_TAGS), reference(&replica, &get_tags()));
    assert_eq!(all(&views, GET_TAGS).len(), 3);

    // Nothing changed: nothing re-indexed.
    assert_eq!(views.warm().unwrap().docs_indexed(), 0);

    // An update, a deletion, a conflict whose branch wins, a tag edit.
    put(&replica, "c-003", &["b3", "a3"], false, card(json!(1500)));
    put(&replica, "c-004", &["b4", "a4"], true, json!({}));
    put(&replica, "c-005", &["zzzz", "a5"], false, card(json!(1)));
    put(
        &replica,
        "TAG-a",
        &["t2", "t1"],
        false,
        json!({"docType": "TAG", "name": "a", "taggedCards": ["c-009"]}),
    );
    let second = views.warm().unwrap();
    assert_eq!(second.view(ELO).unwrap().docs_indexed, 4);
    assert_eq!(second.view(GET_TAGS).unwrap().docs_indexed, 4);
    assert_eq!(second.view(GET_TAGS).unwrap().rows_removed, 3);
    assert_eq!(all(&views, ELO), reference(&replica, &elo()));
    assert_eq!(all(&views, GET_TAGS), reference(&replica, &get_tags()));
    let elo_rows = all(&views, ELO);
    assert!(!elo_rows.iter().any(|r| r.id == "c-004"));
    assert!(elo_rows
        .iter()
        .any(|r| r.id == "c-005" && r.key == json!(1)));
    let st = views.state(ELO).unwrap().unwrap();
    assert_eq!(st.rows as usize, elo_rows.len());
    assert_eq!(st.seq, replica.update_seq().unwrap());

    // Restart: the index is still there and still current.
    drop(views);
    drop(replica);
    let replica = open(dir.path());
    let views = Views::open(&replica, course::views()).unwrap();
    assert_eq!(views.warm().unwrap().docs_indexed(), 0);
    assert_eq!(all(&views, ELO), reference(&replica, &elo()));
}

#[test]
fn a_new_definition_version_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    for i in 0..10 {
        put(&replica, &format!("d{i}"), &["a"], false, json!({"n": i}));
    }
    let v1 = View::new("n", 1, |d, e| e.emit(d.body["n"].clone(), json!(null)));
    let views = Views::open(&replica, [v1]).unwrap();
    views.warm().unwrap();
    assert_eq!(all(&views, "n").len(), 10);
    let v2 = View::new("n", 2, |d, e| {
        if d.body["n"].as_u64().unwrap_or(0) % 2 == 0 {
            e.emit(json!(["even", d.body["n"].clone()]), json!(1));
        }
    });
    let views = Views::open(&replica, [v2.clone()]).unwrap();
    let report = views.warm().unwrap();
    assert!(report.views[0].rebuilt);
    assert_eq!(all(&views, "n"), reference(&replica, &v2));
    assert_eq!(views.state("n").unwrap().unwrap().rows, 5);
}

#[test]
fn unknown_views_and_bad_ranges_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    let views = Views::open(&replica, course::views()).unwrap();
    assert!(matches!(
        views.query("nope", &QueryOptions::default()),
        Err(ViewError::UnknownView(..))
    ));
    let q = QueryOptions::default()
        .start_key(json!(2))
        .end_key(json!(1));
    assert!(matches!(
        views.query(ELO, &q),
        Err(ViewError::InvalidQuery(_))
    ));
    assert!(Views::open(&replica, [elo(), elo()]).is_err());
}

/// The reference answer of a query: filter the sorted rows as CouchDB's
/// documentation describes each option.
pub(crate) fn reference_query(rows: &[ViewRow], q: &QueryOptions) -> Vec<ViewRow> {
    let cmp_row = |r: &ViewRow, key: &Value, id: Option<&str>| {
        collate(&r.key, key).then_with(|| match id {
            Some(id) => collate_str(&r.id, id),
            None => Ordering::Equal,
        })
    };
    let mut out: Vec<ViewRow> = if let Some(keys) = &q.keys {
        let ordered: Vec<&Value> = if q.descending {
            keys.iter().rev().collect()
        } else {
            keys.iter().collect()
        };
        ordered
            .into_iter()
            .flat_map(|k| {
                let mut m: Vec<ViewRow> = rows
                    .iter()
                    .filter(|r| collate(&r.key, k) == Ordering::Equal)
                    .cloned()
                    .collect();
                if q.descending {
                    m.reverse();
                }
                m
            })
            .collect()
    } else {
        let (start, end) = match &q.key {
            Some(k) => (Some(k.clone()), Some(k.clone())),
            None => (q.start_key.clone(), q.end_key.clone()),
        };
        let mut v: Vec<ViewRow> = rows.to_vec();
        if q.descending {
            v.reverse();
        }
        let sid = q.start_key_doc_id.as_deref();
        let eid = q.end_key_doc_id.as_deref();
        v.into_iter()
            .filter(|r| {
                let after_start = start.as_ref().is_none_or(|s| {
                    let o = cmp_row(r, s, sid);
                    if q.descending {
                        o != Ordering::Greater
                    } else {
                        o != Ordering::Less
                    }
                });
                let before_end = end.as_ref().is_none_or(|e| {
                    let o = cmp_row(r, e, eid);
                    match (q.descending, q.inclusive_end) {
                        (false, true) => o != Ordering::Greater,
                        (false, false) => o == Ordering::Less,
                        (true, true) => o != Ordering::Less,
                        (true, false) => o == Ordering::Greater,
                    }
                });
                after_start && before_end
            })
            .collect()
    };
    out = out.into_iter().skip(q.skip).collect();
    if let Some(l) = q.limit {
        out.truncate(l);
    }
    out
}

#[test]
fn every_query_option_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    let keys = [
        json!(null),
        json!(false),
        json!(true),
        json!(-3),
        json!(0),
        json!(9),
        json!(10),
        json!("a"),
        json!("A"),
        json!("é"),
        json!("b"),
        json!(["b", 1]),
        json!({"a": 1}),
    ];
    for (i, k) in keys.iter().enumerate() {
        for d in 0..3 {
            let id = format!("d{d}-{i:02}");
            put(&replica, &id, &["a"], false, json!({"k": k, "i": i}));
        }
    }
    let view = View::new("k", 1, |d, e| {
        e.emit(d.body["k"].clone(), d.body["i"].clone())
    });
    let views = Views::open(&replica, [view.clone()]).unwrap();
    let rows = reference(&replica, &view);
    assert_eq!(all(&views, "k"), rows);
    let mut queries = vec![
        QueryOptions::default().key(json!("a")),
        QueryOptions::default().key(json!(10)).descending(true),
        QueryOptions::default().keys(vec![json!("b"), json!(0), json!("zz"), json!(null)]),
        QueryOptions::default()
            .keys(vec![json!(9), json!(true)])
            .descending(true)
            .skip(1)
            .limit(3),
    ];
    let bounds = [json!(false), json!(0), json!("A"), json!(["b"]), json!({})];
    for (si, s) in bounds.iter().enumerate() {
        for e in &bounds[si..] {
            for desc in [false, true] {
                for inclusive in [false, true] {
                    let (a, b) = if desc { (e, s) } else { (s, e) };
                    queries.push(
                        QueryOptions::default()
                            .start_key(a.clone())
                            .end_key(b.clone())
                            .descending(desc)
                            .inclusive_end(inclusive),
                    );
                }
            }
        }
    }
    for desc in [false, true] {
        for (skip, limit) in [(0, 1), (2, 4), (5, 100)] {
            queries.push(
                QueryOptions::default()
                    .descending(desc)
                    .skip(skip)
                    .limit(limit),
            );
        }
        queries.push(
            QueryOptions::default()
                .start_key(json!(0))
                .start_key_doc_id("d1-04")
                .end_key(json!("a"))
                .end_key_doc_id("d1-07")
                .descending(desc),
        );
        queries.push(
            QueryOptions::default()
                .start_key(json!("a"))
                .start_key_doc_id("d1-07")
                .end_key(json!("a"))
                .end_key_doc_id("d2-07")
                .inclusive_end(false)
                .descending(desc),
        );
    }
    for q in &queries {
        let q = if q.descending && q.start_key_doc_id.is_some() {
            let mut q = q.clone();
            std::mem::swap(&mut q.start_key, &mut q.end_key);
            std::mem::swap(&mut q.start_key_doc_id, &mut q.end_key_doc_id);
            q
        } else {
            q.clone()
        };
        let got = views.query("k", &q).unwrap();
        assert_eq!(got.rows, reference_query(&rows, &q), "{q:?}");
        assert_eq!(got.total_rows as usize, rows.len());
    }
    let with_docs = views
        .query(
            "k",
            &QueryOptions::default().key(json!(9)).include_docs(true),
        )
        .unwrap();
    assert_eq!(
        with_docs.rows[0].doc.as_ref().unwrap()["_id"],
        json!("d0-05")
    );
    let offset = views
        .query("k", &QueryOptions::default().start_key(json!(0)).skip(1))
        .unwrap();
    assert_eq!(offset.offset, 13);
}

#[test]
fn typed_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    for (i, s) in [900, 950, 990, 1000, 1000, 1010, 1100, 1200]
        .iter()
        .enumerate()
    {
        put(&replica, &format!("c-{i}"), &["a"], false, card(json!(s)));
    }
    put(
        &replica,
        "TAG-x",
        &["a"],
        false,
        json!({"docType": "TAG", "name": "x", "taggedCards": ["c-1", "c-2"]}),
    );
    put(
        &replica,
        "TAG-y",
        &["a"],
        false,
        json!({"docType": "TAG", "name": "y", "taggedCards": ["c-2"]}),
    );
    let views = Views::open(&replica, course::views()).unwrap();
    let near: Vec<(String, f64)> = course::cards_near_rating(&views, 1000.0, 4)
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.score))
        .collect();
    assert_eq!(
        near,
        vec![
            ("c-4".to_string(), 1000.0),
            ("c-3".to_string(), 1000.0),
            ("c-2".to_string(), 990.0),
            ("c-5".to_string(), 1010.0)
        ]
    );
    let near = course::cards_near_rating(&views, 1150.0, 2).unwrap();
    assert_eq!(near.len(), 2);
    assert!(near.iter().all(|c| c.score == 1100.0 || c.score == 1200.0));
    let tags = course::tags_for_cards(&views, &["c-2", "c-0", "c-1"]).unwrap();
    let got: Vec<(&str, &str)> = tags
        .iter()
        .map(|t| (t.card_id.as_str(), t.tag_id.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("c-2", "TAG-x"), ("c-2", "TAG-y"), ("c-1", "TAG-x")]
    );
    assert_eq!(tags[0].name.as_deref(), Some("x"));
}

#[test]
fn typed_reads_and_the_local_changes_stream() {
    use futures::StreamExt;
    #[derive(serde::Deserialize)]
    struct Card {
        #[serde(rename = "_id")]
        id: String,
        #[serde(rename = "docType")]
        doc_type: String,
    }
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    put(&replica, "c-1", &["a"], false, card(json!(1)));
    let c: Card = replica.get_as("c-1").unwrap().unwrap();
    assert_eq!((c.id.as_str(), c.doc_type.as_str()), ("c-1", "CARD"));
    assert!(replica.get_as::<Card>("nope").unwrap().is_none());
    assert!(matches!(
        replica.get_as::<u32>("c-1"),
        Err(crate::StoreError::Decode { .. })
    ));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut stream = replica.changes(0).follow();
        assert_eq!(stream.next().await.unwrap().unwrap().doc.id, "c-1");
        let writer = replica.clone();
        let handle = tokio::task::spawn_blocking(move || {
            put(&writer, "c-2", &["a"], false, card(json!(2)));
            put(&writer, "c-1", &["b", "a"], true, json!({}));
        });
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!(next.doc.id, "c-2");
        let next = stream.next().await.unwrap().unwrap();
        assert_eq!((next.doc.id.as_str(), next.doc.deleted), ("c-1", true));
        handle.await.unwrap();
    });
}

#[test]
fn update_false_reads_as_is_and_lazy_catches_up_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    put(&replica, "c-1", &["a"], false, card(json!(1)));
    let views = Views::open(&replica, course::views()).unwrap();
    views.warm().unwrap();
    put(&replica, "c-2", &["a"], false, card(json!(2)));
    let stale = QueryOptions::default().update(Update::False);
    assert_eq!(views.query(ELO, &stale).unwrap().rows.len(), 1);
    let lazy = QueryOptions::default().update(Update::Lazy);
    assert_eq!(views.query(ELO, &lazy).unwrap().rows.len(), 1);
    let target = replica.update_seq().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while views.state(ELO).unwrap().unwrap().seq < target {
        assert!(
            std::time::Instant::now() < deadline,
            "lazy update never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(views.query(ELO, &stale).unwrap().rows.len(), 2);
}

#[test]
fn two_views_handles_on_one_replica_index_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    for i in 0..300 {
        put(
            &replica,
            &format!("c-{i:03}"),
            &["a"],
            false,
            card(json!(i % 13)),
        );
    }
    let a = Views::open(&replica, course::views()).unwrap();
    let b = Views::open(&replica, course::views()).unwrap();
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.warm().unwrap());
        let tb = s.spawn(|| b.warm().unwrap());
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(ra.docs_indexed() + rb.docs_indexed(), 2 * 300);
    let st = a.state(ELO).unwrap().unwrap();
    assert_eq!(st.rows, 300);
    assert_eq!(all(&b, ELO), reference(&replica, &elo()));
}

/// Many blocks: a build from nothing, then incremental updates and
/// deletions that split, rewrite and empty blocks; every range, both
/// directions, with skips and limits, matches the reference, and so do
/// `offset` and `total_rows`.
#[test]
fn many_blocks_build_update_and_query_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    let pad = "p".repeat(300);
    let view = View::new("wide", 1, |d, e| {
        let n = d.body["n"].as_u64().unwrap_or(0);
        e.emit(json!(n % 97), d.body["pad"].clone());
        e.emit(json!(["n", n]), json!(n));
    });
    for i in 0..1500u64 {
        put(
            &replica,
            &format!("d{i:04}"),
            &["a"],
            false,
            json!({"n": i, "pad": pad}),
        );
    }
    let views = Views::open(&replica, [view.clone()]).unwrap();
    views.warm().unwrap();
    assert_eq!(all(&views, "wide"), reference(&replica, &view));
    let blocks = views
        .inner
        .index
        .tree
        .scan_prefix(index::view_prefix("wide"))
        .count();
    assert!(blocks > 20, "rows span many blocks ({blocks})");
    for i in (0..1500u64).step_by(7) {
        if i % 2 == 0 {
            put(&replica, &format!("d{i:04}"), &["a", "b"], true, json!({}));
        } else {
            let body = json!({"n": i * 31, "pad": format!("{pad}{i}")});
            put(&replica, &format!("d{i:04}"), &["a", "b"], false, body);
        }
    }
    views.warm().unwrap();
    let want = reference(&replica, &view);
    assert_eq!(all(&views, "wide"), want);
    assert_eq!(
        views.state("wide").unwrap().unwrap().rows,
        want.len() as u64
    );
    for (lo, hi) in [
        (json!(3), json!(40)),
        (json!(90), json!(["n", 700])),
        (json!(0), json!(0)),
    ] {
        for descending in [false, true] {
            let (s, e) = if descending {
                (hi.clone(), lo.clone())
            } else {
                (lo.clone(), hi.clone())
            };
            let q = QueryOptions::default()
                .start_key(s)
                .end_key(e)
                .descending(descending);
            let mut expect: Vec<ViewRow> = want
                .iter()
                .filter(|r| {
                    collate(&r.key, &lo) != Ordering::Less
                        && collate(&r.key, &hi) != Ordering::Greater
                })
                .cloned()
                .collect();
            if descending {
                expect.reverse();
            }
            let got = views.query("wide", &q.clone().skip(5).limit(300)).unwrap();
            let page: Vec<ViewRow> = expect.iter().skip(5).take(300).cloned().collect();
            assert_eq!(got.rows, page, "{lo}..{hi} descending={descending}");
            let before = if descending {
                want.iter()
                    .filter(|r| collate(&r.key, &hi) == Ordering::Greater)
                    .count()
            } else {
                want.iter()
                    .filter(|r| collate(&r.key, &lo) == Ordering::Less)
                    .count()
            };
            assert_eq!(got.offset, (before + 5).min(want.len()) as u64);
        }
    }
}

/// An index written by the layout before blocks (one entry per row, a
/// state without `layout`) is not read: it reports no state, and the next
/// update drops it and rebuilds.
#[test]
fn an_index_of_the_old_layout_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    for i in 0..30 {
        put(
            &replica,
            &format!("c-{i:03}"),
            &["a"],
            false,
            card(json!(900 + i)),
        );
    }
    let views = Views::open(&replica, course::views()).unwrap();
    let tree = &views.inner.index.tree;
    let mut state = vec![b's'];
    state.extend_from_slice(&3u16.to_be_bytes());
    state.extend_from_slice(b"elo");
    tree.insert(&state, br#"{"version":1,"seq":999,"rows":1}"#.to_vec())
        .unwrap();
    let mut row = index::view_prefix("elo");
    row.extend_from_slice(b"old row, not a block");
    tree.insert(&row, b"{}".to_vec()).unwrap();
    assert_eq!(views.state(ELO).unwrap(), None);
    let as_is = QueryOptions::default().update(Update::False);
    let result = views.query(ELO, &as_is).unwrap();
    assert_eq!((result.total_rows, result.rows.len()), (0, 0));
    assert_eq!(views.rows(ELO, &as_is).unwrap().count(), 0);
    let report = views.update(ELO).unwrap();
    assert!(report.rebuilt);
    assert_eq!(all(&views, ELO), reference(&replica, &elo()));
    assert_eq!(views.state(ELO).unwrap().unwrap().rows, 30);
}

/// `views::check` passes a healthy index (and one merely behind its
/// replica), and reports the damage `settee check` must catch: rows of a
/// document deleted underneath a view that claims to cover the deletion,
/// and a row removed behind the back-index's back.
#[test]
fn check_passes_a_healthy_index_and_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let replica = open(dir.path());
    let cards: Vec<String> = (0..30).map(|i| format!("c-{i:03}")).collect();
    for (i, id) in cards.iter().enumerate() {
        put(&replica, id, &["a1"], false, card(json!(1000 + i)));
    }
    put(
        &replica,
        "TAG-x",
        &["a1"],
        false,
        json!({"docType": "TAG", "name": "x", "taggedCards": cards[..10]}),
    );
    // No index yet: nothing to check, and the check creates no tree.
    let none = check(&replica, &course::views()).unwrap();
    assert!(none.is_ok() && none.views.is_empty());
    assert!(!replica.has_tree("views"));
    let views = Views::open(&replica, course::views()).unwrap();
    views.warm().unwrap();
    let report = views.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    let names: Vec<&str> = report.views.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["elo", "getTags"]);
    assert_eq!((report.views[0].rows, report.views[1].rows), (30, 10));
    assert!(report
        .views
        .iter()
        .all(|v| v.mapped && v.docs_checked == 31));

    // A deletion the view has not indexed yet is not damage.
    put(&replica, "c-000", &["b1", "a1"], true, json!({}));
    let report = views.check().unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    assert_eq!(report.views[0].docs_behind, 1);
    views.warm().unwrap();
    assert!(views.check().unwrap().is_ok());

    // c-001 is deleted underneath: the state moves past the deletion, the
    // rows stay.
    put(&replica, "c-001", &["b1", "a1"], true, json!({}));
    let tree = replica.open_tree("views").unwrap();
    let elo_state = views.state("elo").unwrap().unwrap();
    let moved = ViewState {
        seq: replica.update_seq().unwrap(),
        ..elo_state
    };
    tree.insert(index::state_key("elo"), index::encode_state(&moved))
        .unwrap();
    let report = views.check().unwrap();
    let found: Vec<(&str, &str)> = report
        .violations
        .iter()
        .map(|v| (v.invariant, v.key.as_str()))
        .collect();
    assert_eq!(found, [("view_live", "views/elo/c-001")], "{report:?}");
    // The other view, behind, is fine.
    assert_eq!(report.views[1].docs_behind, 1);

    // A row of c-002 goes missing from the rows, not from the back-index.
    let doc = replica.get("c-002").unwrap().unwrap();
    let mut keys = index::KeyCache::with_capacity(0);
    let rows = index::encode_rows(&elo(), Some(&doc), &mut keys);
    let mut batch = block::Writes::default();
    block::apply::<Vec<u8>>(
        &tree,
        &index::view_prefix("elo"),
        &[(rows[0].0.clone(), None)],
        &mut batch,
    )
    .unwrap();
    batch.apply_to(&tree).unwrap();
    let report = views.check().unwrap();
    let found: std::collections::BTreeSet<(&str, &str)> = report
        .violations
        .iter()
        .map(|v| (v.invariant, v.key.as_str()))
        .collect();
    for want in [
        ("view_live", "views/elo/c-001"),
        ("view_back", "views/elo/c-002"),
        ("view_map", "views/elo/c-002"),
        ("view_count", "views/elo"),
    ] {
        assert!(found.contains(&want), "{want:?} in {found:?}");
    }
    assert!(report
        .violations
        .iter()
        .all(|v| v.key.starts_with("views/elo")));
}

/// Everything the `views` tree holds, in key order.
fn tree_entries(views: &Views) -> Vec<(Vec<u8>, Vec<u8>)> {
    views
        .inner
        .index
        .tree
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Reading and mapping on several threads, in parts taken out of order,
/// and writing views side by side builds, and then updates in small
/// chunks, byte for byte the index one thread builds from the same
/// documents: rows, back-index entries and states.
#[test]
fn threads_build_and_update_the_same_index_as_one_thread() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let replicas = [open(dirs[0].path()), open(dirs[1].path())];
    let parsed = View::new("parsed", 1, |d, e| {
        if let Some(n) = d.body.get("n").and_then(Value::as_u64) {
            e.emit(json!([n % 13, d.id]), json!(n));
        }
    });
    let elo_forms = |i: u64| match i % 4 {
        0 => json!(600 + i),
        1 => json!({"global": {"score": 700 + i}}),
        2 => json!({"score": 800 + i}),
        _ => Value::Null,
    };
    let write = |revs: Vec<IncomingRev>| {
        for replica in &replicas {
            let batch = WriteBatch {
                revs: revs.clone(),
                ..WriteBatch::default()
            };
            replica.commit_blocking(&batch).unwrap();
        }
    };
    let rev = |id: String, path: &[&str], deleted: bool, body: Value| IncomingRev {
        id,
        path: RevPath {
            start: path.len() as u64,
            ids: path.iter().map(|s| s.to_string()).collect(),
        },
        deleted,
        body: serde_json::value::to_raw_value(&body).unwrap(),
    };
    for start in (0..1200u64).step_by(100) {
        write(
            (start..start + 100)
                .map(|i| {
                    let mut body = json!({"docType": "CARD", "n": i});
                    if i % 4 != 3 {
                        body["elo"] = elo_forms(i);
                    }
                    rev(format!("c-{i:05}"), &["1a"], false, body)
                })
                .collect(),
        );
    }
    write(
        (0..10u64)
            .map(|t| {
                let cards: Vec<String> = (0..1200u64)
                    .filter(|i| i % (t + 2) == 0)
                    .map(|i| format!("c-{i:05}"))
                    .collect();
                let body = json!({"docType": "TAG", "name": format!("t{t}"), "taggedCards": cards});
                rev(format!("TAG-{t}"), &["1a"], false, body)
            })
            .collect(),
    );
    let mut all_views = course::views();
    all_views.push(parsed.clone());
    let views = [
        Views::open(&replicas[0], all_views.clone()).unwrap(),
        Views::open(&replicas[1], all_views).unwrap(),
    ];
    let one = index::ChunkLimits {
        threads: 1,
        ..index::ChunkLimits::default()
    };
    let three = index::ChunkLimits {
        threads: 3,
        parallel_backlog: 1,
        parallel_edits: 1,
        ..index::ChunkLimits::default()
    };
    let (a, b) = (
        views[0].warm_with(one).unwrap(),
        views[1].warm_with(three).unwrap(),
    );
    assert_eq!((a.threads, b.threads), (1, 3));
    assert_eq!(
        a.view("getTags").unwrap().total_rows,
        b.view("getTags").unwrap().total_rows
    );
    assert!(b.view("getTags").unwrap().total_rows > 2000);
    assert_eq!(tree_entries(&views[0]), tree_entries(&views[1]));

    // Updates, deletions and a conflict, indexed in chunks of 50 documents
    // while the workers read ahead.
    write(
        (0..1200u64)
            .step_by(3)
            .map(|i| {
                let id = format!("c-{i:05}");
                match i % 9 {
                    0 => rev(id, &["2b", "1a"], true, json!({})),
                    3 => rev(
                        id,
                        &["2c", "1a"],
                        false,
                        json!({"docType": "CARD", "n": i + 1, "elo": i}),
                    ),
                    _ => rev(id, &["2d", "1a"], false, json!({"docType": "NOTE"})),
                }
            })
            .chain([rev(
                "TAG-1".into(),
                &["2z", "1a"],
                false,
                json!({"docType": "TAG", "taggedCards": ["c-00001"]}),
            )])
            .collect(),
    );
    let small = |limits: index::ChunkLimits| index::ChunkLimits {
        docs: 50,
        rows: 500,
        grow: false,
        ..limits
    };
    let (a, b) = (
        views[0].warm_with(small(one)).unwrap(),
        views[1].warm_with(small(three)).unwrap(),
    );
    assert_eq!((a.threads, b.threads), (1, 3));
    assert!(b.chunks > 5, "{} chunks", b.chunks);
    assert_eq!(tree_entries(&views[0]), tree_entries(&views[1]));
    for view in views[1].views() {
        assert_eq!(all(&views[1], view.name()), reference(&replicas[1], view));
    }
}

/// A build from nothing reads the documents in id order (not in the order
/// they changed) and commits chunks as it goes: stopped part way (here by
/// a map that cannot run on one document), the index checks clean and
/// holds rows only of documents before the stop; the next update goes on
/// from there, and documents changed meanwhile, before or after the
/// stop, end up as the reference has them. With three threads the stop
/// comes earlier (a part of the backlog that fails commits nothing of
/// itself); the rows end the same.
#[test]
fn a_build_from_nothing_in_id_order_resumes_where_it_stopped() {
    let poisoned = View::new("poisoned", 1, |d, e| {
        if d.body.get("poison").is_some() {
            e.fail("os_process_error", format!("cannot map {}", d.id));
            return;
        }
        if let Some(n) = d.body.get("n").and_then(Value::as_u64) {
            e.emit(json!(n % 17), json!(d.id));
        }
    });
    let limits = |threads| index::ChunkLimits {
        docs: 40,
        rows: 400,
        cold_docs: 40,
        cold_rows: 400,
        grow: false,
        threads,
        parallel_backlog: 1,
        ..index::ChunkLimits::default()
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut built = Vec::new();
    for (dir, threads) in dirs.iter().zip([1, 3]) {
        let replica = open(dir.path());
        // Written in reverse id order: sequence order is not id order.
        for i in (0..300u64).rev() {
            let mut body = json!({"n": i});
            if i == 280 {
                body["poison"] = json!(true);
            }
            put(&replica, &format!("c-{i:03}"), &["1a"], i % 50 == 7, body);
        }
        // Indexing covers only what a flush made durable.
        replica.flush().unwrap();
        let views = Views::open(&replica, vec![poisoned.clone()]).unwrap();
        match views.warm_with(limits(threads)) {
            Err(ViewError::MapFailed { id, .. }) => assert_eq!(id, "c-280"),
            other => panic!("{other:?}"),
        }
        let stored = index::read_state(&views.inner.index.tree, "poisoned")
            .unwrap()
            .unwrap();
        let scan = stored.scan.clone().expect("a build part way");
        assert_eq!((stored.seq, scan.upto), (0, 300));
        assert!(scan.after.as_str() < "c-280" && stored.rows > 0, "{scan:?}");
        let report = check(&replica, std::slice::from_ref(&poisoned)).unwrap();
        assert!(report.is_ok(), "{:?}", report.violations);
        let building = report.views[0].building.as_ref().expect("reported");
        assert_eq!(
            (building.after.as_str(), building.upto),
            (scan.after.as_str(), 300)
        );
        assert!(report.views[0].docs_checked > 0 && report.views[0].docs_behind > 0);
        let stale = QueryOptions::default().update(Update::False);
        let rows = views.query("poisoned", &stale).unwrap().rows;
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r.id.as_str() <= scan.after.as_str()));

        // Changed after the stop: one the build had passed, the poisoned
        // one, one it had not reached (deleted), and a new one.
        put(&replica, "c-010", &["2b", "1a"], false, json!({"n": 1000}));
        put(&replica, "c-280", &["2b", "1a"], false, json!({"n": 280}));
        put(&replica, "c-290", &["2b", "1a"], true, json!({}));
        put(&replica, "b-new", &["1a"], false, json!({"n": 5}));
        replica.flush().unwrap();
        views.warm_with(limits(threads)).unwrap();
        let stored = index::read_state(&views.inner.index.tree, "poisoned")
            .unwrap()
            .unwrap();
        assert_eq!((stored.seq, stored.scan), (304, None));
        assert_eq!(all(&views, "poisoned"), reference(&replica, &poisoned));
        let report = check(&replica, std::slice::from_ref(&poisoned)).unwrap();
        assert!(report.is_ok(), "{:?}", report.violations);
        assert!(report.views[0].building.is_none());
        built.push(all(&views, "poisoned"));
    }
    assert_eq!(built[0], built[1]);
}
