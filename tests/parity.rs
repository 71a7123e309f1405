//! The harness builds URLs the way settee's client does, so the suite means
//! the same against Apache CouchDB as against PouchDB Server (issue 12: the
//! harness wrote `_design/x` as `%5Fdesign%2Fx`, which CouchDB answers with
//! a redirect loop).

use crate::support::*;
use settee::Endpoint;

const IDS: &[&str] = &[
    "_design/elo",
    "_design/with/slash",
    "_local/x y",
    "a/b",
    "plus+sign",
    "100%",
    "question?mark",
    "hash#tag",
    "unicodé-ü-日本語-🎴",
    "c-000001",
    "tilde~dot.dash-under_",
];

#[test]
fn test_urls_encode_ids_as_the_client_does() {
    let ep = Endpoint::parse("http://127.0.0.1:5984/db").unwrap();
    for id in IDS {
        assert_eq!(
            ep.doc_url(id).as_str(),
            format!("http://127.0.0.1:5984/db/{}", enc_id(id)),
            "{id}"
        );
    }
    assert_eq!(
        ep.attachment_url("_design/elo", "img/a b.png").as_str(),
        format!(
            "http://127.0.0.1:5984/db/{}/{}",
            enc_id("_design/elo"),
            enc_att("img/a b.png")
        )
    );
}

#[tokio::test]
async fn design_and_local_documents_read_back_through_the_harness() {
    let db = TestDb::new("parity").await;
    db.bulk_docs(
        vec![serde_json::json!({"_id": "_design/elo", "views": {}})],
        true,
    )
    .await;
    let doc = db.get_json(&enc_id("_design/elo")).await;
    assert_eq!(doc["_id"], "_design/elo");
}
