//! The router against generated hostile requests (issue 21's "bad
//! input"): every one answered, none a 5xx, each refusal CouchDB's error
//! body and the replica left as it was (`fuzz_hooks::serve_request`
//! checks; `fuzz/fuzz_targets/router.rs` runs the same checks on raw
//! bytes). `SETTEE_ROUTER_CASES` sets the number of requests (256 in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{Replica, ReplicaConfig};
use proptest::prelude::*;

const SEGMENTS: &[&str] = &[
    "db",
    "other",
    "_design",
    "d",
    "_view",
    "v",
    "nope",
    "_local",
    "cp",
    "_changes",
    "_all_docs",
    "_find",
    "_index",
    "_explain",
    "_bulk_docs",
    "_bulk_get",
    "_revs_diff",
    "_session",
    "_uuids",
    "_all_dbs",
    "_up",
    "_revs_limit",
    "_security",
    "json",
    "a%2Fb",
    "with%20space",
    "plus+sign",
    "100%25",
    "%",
    "%ZZ",
    "日本",
    "..",
    ".",
    "doc",
    "doc/att.txt",
    "att.txt",
    "_deleted",
    "_",
    "%2F",
];

const PARAMS: &[&str] = &[
    "rev=1-abc",
    "rev=garbage",
    "rev=",
    "revs=true",
    "open_revs=all",
    "open_revs=[\"1-x\"]",
    "open_revs=nope",
    "conflicts=true",
    "attachments=true",
    "atts_since=[\"1-a\"]",
    "latest=true",
    "feed=longpoll&timeout=10",
    "feed=continuous&timeout=10",
    "feed=eventsource&timeout=10",
    "feed=bogus",
    "since=now",
    "since=-1",
    "since=99999",
    "limit=0",
    "limit=-5",
    "limit=x",
    "descending=true",
    "style=all_docs",
    "include_docs=true",
    "filter=_selector",
    "filter=_view&view=d/v",
    "filter=_view&view=x",
    "filter=_doc_ids",
    "filter=d/f",
    "key=\"a\"",
    "key=nope",
    "keys=[1,2]",
    "startkey=[",
    "endkey=\"z\"",
    "skip=-1",
    "group_level=x",
    "reduce=true",
    "update=lazy",
    "count=5",
    "count=100000",
    "heartbeat=1",
    "heartbeat=x",
    "new_edits=false",
    "batch=ok",
];

const BODIES: &[&str] = &[
    "", "{", "null", "[]", "{}", "\"str\"", "{\"docs\":null}", "{\"docs\":[1,{}]}",
    "{\"docs\":[{\"_id\":\"n\",\"_rev\":\"x\"}],\"new_edits\":false}",
    "{\"docs\":[{\"_id\":\"n\",\"_rev\":\"1-abc\",\"_revisions\":{\"start\":9,\"ids\":[]}}],\"new_edits\":false}",
    "{\"selector\":{\"$foo\":1}}", "{\"selector\":{\"a\":{\"$regex\":\"(\"}}}",
    "{\"selector\":{},\"sort\":[{\"x\":\"sideways\"}]}", "{\"selector\":1}",
    "{\"index\":{\"fields\":[]}}", "{\"index\":{\"fields\":[{\"a\":\"up\"}]}}",
    "{\"keys\":\"no\"}", "{\"keys\":[null,{}]}", "{\"a\":[\"1-x\",\"bad\"]}", "{\"a\":1}",
    "{\"_id\":7}", "{\"_id\":\"other\"}", "{\"_rev\":\"1-abc\"}", "{\"_deleted\":true}",
    "{\"_attachments\":{\"f\":{\"data\":\"!!\"}}}", "{\"_attachments\":{\"f\":{\"stub\":true}}}",
    "{\"_attachments\":5}", "{\"name\":1,\"password\":[]}", "{\"doc_ids\":\"x\"}",
    "{\"views\":{\"v\":{\"map\":\"function(\"}}}", "\u{0}\u{1}\u{fffd}",
];

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..6,
        proptest::collection::vec(proptest::sample::select(SEGMENTS), 0..5),
        proptest::collection::vec(proptest::sample::select(PARAMS), 0..3),
        proptest::sample::select(BODIES),
        proptest::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(method, path, params, body, noise)| {
            let mut out = vec![method, b'\n'];
            out.extend_from_slice(path.join("/").as_bytes());
            if !params.is_empty() {
                out.push(b'?');
                out.extend_from_slice(params.join("&").as_bytes());
            }
            out.push(b'\n');
            out.extend_from_slice(body.as_bytes());
            if method == 5 {
                out.extend_from_slice(&noise);
            }
            out
        })
}

fn cases() -> u32 {
    std::env::var("SETTEE_ROUTER_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

#[test]
fn hostile_requests_are_refused_cleanly_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
    let router = crate::fuzz_hooks::serve_fixture(&replica).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answered = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(req in request())| {
        let status = rt.block_on(crate::fuzz_hooks::serve_request(&router, &replica, &req));
        *answered.borrow_mut().entry(status).or_default() += 1;
    });
    let answered = answered.into_inner();
    eprintln!("statuses answered: {answered:?}");
    // The generator reaches both sides of the router.
    assert!(
        answered.keys().any(|s| (200..300).contains(s)),
        "{answered:?}"
    );
    assert!(
        answered.keys().any(|s| (400..500).contains(s)),
        "{answered:?}"
    );
    assert!(replica.check().unwrap().is_ok());
}
