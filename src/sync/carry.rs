//! Carrying local writes from a replica being retired to the one replacing
//! it, so a rebuild (the remote database was recreated) never loses an edit
//! the application was told is durable.
//!
//! The old replica's revisions must not reach the new one: merging them is
//! exactly the mixing of old and new histories a rebuild exists to avoid.
//! What is carried is the *content* of each document the old replica still
//! owes the remote (its outbox and its dead letters): the old winner's body,
//! or its deletion, written as a new local edit on top of the new replica's
//! winner. That edit gets its own outbox entry, so the new replica's push
//! worker sends it to the recreated database.
//!
//! Carrying is idempotent by content: a document whose new winner already
//! has the old body (or is already deleted) gets no new revision. So it can
//! run at the swap and again when the retired replica is finally deleted
//! (catching writes made through a handle that outlived the swap), and
//! again after a crash between the two.

use crate::store::{Document, Replica, StoreError};
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Outbox entries read per page while collecting ids.
const PAGE: usize = 1000;

/// Writes onto `to` every document `from` still owes its remote; returns
/// how many documents got a new revision. Blocking.
///
/// # Durability
/// Each carried document is one local write on `to`, durable (with its
/// outbox entry) before the next one starts. `from` is only read: after an
/// `Err`, run it again; what was carried is not carried twice.
pub(crate) fn carry_local_writes(from: &Replica, to: &Replica) -> Result<usize, StoreError> {
    let mut ids = BTreeSet::new();
    let mut after = None;
    loop {
        let page = from.outbox_entries(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.key);
        ids.extend(page.into_iter().map(|e| e.id));
    }
    ids.extend(from.dead_letters()?.into_iter().map(|d| d.id));
    let mut carried = 0;
    for id in ids {
        let Some(old) = from.get(&id)? else { continue };
        let new = to.get(&id)?;
        let new_live = new.as_ref().filter(|d| !d.deleted);
        if old.deleted {
            if new_live.is_some() {
                to.delete_blocking(&id, None)?;
                carried += 1;
            }
            continue;
        }
        if new_live.is_some_and(|d| d.body == old.body) {
            continue;
        }
        to.put_overwrite_blocking(&id, &Value::Object(with_inline_attachments(from, &old)?))?;
        carried += 1;
    }
    if carried > 0 {
        tracing::info!(
            from = %from.path().display(),
            to = %to.path().display(),
            carried,
            "local writes carried over to the rebuilt replica"
        );
    }
    Ok(carried)
}

/// The old winner's body with every attachment stub replaced by its bytes
/// (`data`), since the new replica may not hold them.
fn with_inline_attachments(
    from: &Replica,
    doc: &Document,
) -> Result<Map<String, Value>, StoreError> {
    let mut body = doc.body.clone();
    let Some(Value::Object(atts)) = body.get_mut("_attachments") else {
        return Ok(body);
    };
    for (name, att) in atts.iter_mut() {
        let Some(stub) = att.as_object() else {
            continue;
        };
        let Some(digest) = stub.get("digest").and_then(Value::as_str) else {
            continue;
        };
        let bytes = from
            .attachment(digest)?
            .ok_or_else(|| StoreError::InvalidDocument {
                id: doc.id.clone(),
                reason: format!("attachment {name} ({digest}) has no bytes in the old replica"),
            })?;
        let mut inline = Map::new();
        if let Some(ct) = stub.get("content_type") {
            inline.insert("content_type".into(), ct.clone());
        }
        inline.insert(
            "data".into(),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        );
        *att = Value::Object(inline);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ReplicaConfig;
    use serde_json::json;

    fn open() -> (tempfile::TempDir, Replica) {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path(), ReplicaConfig::default()).unwrap();
        (dir, r)
    }

    #[test]
    fn pending_writes_move_by_content_once() {
        let (_a, old) = open();
        let (_b, new) = open();
        old.put_blocking("card", &json!({"elo": 1})).unwrap();
        old.put_overwrite_blocking("card", &json!({"elo": 2}))
            .unwrap();
        old.put_blocking("gone", &json!({"x": 1})).unwrap();
        old.delete_blocking("gone", None).unwrap();
        old.put_blocking(
            "att",
            &json!({"_attachments": {"a.txt": {"content_type": "text/plain", "data": "aGk="}}}),
        )
        .unwrap();
        // The recreated remote already has "gone" alive and "card" at 1.
        new.put_blocking("gone", &json!({"x": 9})).unwrap();
        new.put_blocking("card", &json!({"elo": 1})).unwrap();

        assert_eq!(carry_local_writes(&old, &new).unwrap(), 3);
        let card = new.get("card").unwrap().unwrap();
        assert_eq!(card.body.get("elo"), Some(&json!(2)));
        assert_eq!(card.rev.pos, 2, "on top of the new winner");
        assert!(new.get("gone").unwrap().unwrap().deleted);
        let att = new.get("att").unwrap().unwrap();
        let (_, stub) = att.attachments().next().unwrap();
        assert_eq!(new.attachment(&stub.digest).unwrap().unwrap(), b"hi");

        // Again: nothing new.
        let seq = new.update_seq().unwrap();
        assert_eq!(carry_local_writes(&old, &new).unwrap(), 0);
        assert_eq!(new.update_seq().unwrap(), seq);
    }
}
