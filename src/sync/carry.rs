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
//! Each write is carried **exactly once**. Carrying runs at the swap, again
//! when the retired replica is deleted (for writes made through a handle
//! that outlived the swap), and again after a crash; by then the app may
//! have changed a carried document in the new replica, and carrying the old
//! content again would write over that newer edit. So the new replica
//! records how far it carried the old one's outbox (`meta/carried/<old
//! replica>`, the last outbox key), in the same transaction as each carried
//! write. Documents go in the order of their last outbox entry, so "carried
//! through key K" means every write up to K is in; a document whose content
//! the new replica already has moves the mark alone.

use crate::revtree::Rev;
use crate::store::{Document, Replica, StoreError};
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Outbox entries read per page while collecting ids.
const PAGE: usize = 1000;

/// Writes onto `to` every document `from` still owes its remote and has not
/// carried there yet; returns how many documents got a new revision.
/// Blocking.
///
/// # Durability
/// Each carried document is one local write on `to` with its outbox entry
/// and the carry mark, durable before the next one starts. `from` is only
/// read: after an `Err`, run it again; nothing is carried twice.
pub(crate) fn carry_local_writes(from: &Replica, to: &Replica) -> Result<usize, StoreError> {
    let source = source_name(from);
    let through = to.carried_through(&source)?;
    // The last outbox key of each document owed (dead letters keep theirs).
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut note = |id: String, key: u64| {
        let k = last.entry(id).or_insert(key);
        *k = (*k).max(key);
    };
    let mut after = None;
    loop {
        let page = from.outbox().entries(after, PAGE)?;
        let Some(tail) = page.last() else { break };
        after = Some(tail.key);
        for e in page {
            note(e.id, e.key);
        }
    }
    for d in from.outbox().dead_letters()? {
        note(d.id, d.key);
    }
    let mut order: Vec<(u64, String)> = last
        .into_iter()
        .filter(|(_, key)| through.is_none_or(|t| *key > t))
        .map(|(id, key)| (key, id))
        .collect();
    order.sort();
    let mut carried = 0;
    for (key, id) in order {
        if carry_one(from, to, &id, (&source, key))? {
            carried += 1;
        }
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

/// The name a replica is known by in another's carry marks: its directory.
fn source_name(replica: &Replica) -> String {
    replica
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| replica.path().display().to_string())
}

/// Carries document `id` with `mark`; true if it got a new revision. A
/// write that lands on `to` in between is read again, never written over
/// blindly.
fn carry_one(
    from: &Replica,
    to: &Replica,
    id: &str,
    mark: (&str, u64),
) -> Result<bool, StoreError> {
    let Some(old) = from.get(id)? else {
        to.mark_carried(mark.0, mark.1)?;
        return Ok(false);
    };
    let mut races = 0;
    loop {
        let new = to.get(id)?;
        let new_live = new.as_ref().filter(|d| !d.deleted);
        let parent: Option<Rev> = new.as_ref().map(|d| d.rev.clone());
        let write = if old.deleted {
            new_live
                .is_some()
                .then(|| to.write_carried(id, parent, true, Map::new(), mark))
        } else if new_live.is_some_and(|d| d.body == old.body) {
            None
        } else {
            let body = with_inline_attachments(from, &old)?;
            Some(to.write_carried(id, parent, false, body, mark))
        };
        match write {
            None => {
                to.mark_carried(mark.0, mark.1)?;
                return Ok(false);
            }
            Some(Ok(_)) => return Ok(true),
            Some(Err(StoreError::Conflict { .. })) if races < 8 => races += 1,
            Some(Err(e)) => return Err(e),
        }
    }
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

    /// Issue 17 §2.1: a second carry (when the old replica is retired, or
    /// at the next start) must not write the old content over an edit the
    /// app made in the new replica since the first; a write made on the
    /// old replica after the swap is still carried.
    #[test]
    fn each_write_is_carried_once() {
        let (_a, old) = open();
        let (_b, new) = open();
        old.put_blocking("card", &json!({"elo": 1})).unwrap();
        old.put_blocking("gone", &json!({"x": 1})).unwrap();
        old.delete_blocking("gone", None).unwrap();
        new.put_blocking("gone", &json!({"x": 9})).unwrap();
        assert_eq!(carry_local_writes(&old, &new).unwrap(), 2);
        assert!(new.get("gone").unwrap().unwrap().deleted);

        // The app goes on in the new replica: B2, and "gone" comes back.
        new.update_blocking("card", |d| {
            let mut body = d?.body.clone();
            body.insert("elo".into(), json!(2));
            Some(body)
        })
        .unwrap();
        new.put_blocking("gone", &json!({"x": 10})).unwrap();
        assert_eq!(carry_local_writes(&old, &new).unwrap(), 0);
        assert_eq!(new.get("card").unwrap().unwrap().body["elo"], json!(2));
        let gone = new.get("gone").unwrap().unwrap();
        assert!(!gone.deleted, "not deleted a second time");

        // A handle that outlived the swap writes to the old replica: that
        // write is new, and it is carried.
        old.update_blocking("card", |d| {
            let mut body = d?.body.clone();
            body.insert("elo".into(), json!(3));
            Some(body)
        })
        .unwrap();
        assert_eq!(carry_local_writes(&old, &new).unwrap(), 1);
        assert_eq!(new.get("card").unwrap().unwrap().body["elo"], json!(3));
        assert_eq!(carry_local_writes(&old, &new).unwrap(), 0);
    }
}
