//! One push round: read the head of the outbox, coalesce it per document,
//! ask `_revs_diff` what the remote lacks, send those leaves with their
//! history through `_bulk_docs` (`new_edits: false`), split what is too
//! large, and record the answer in one store transaction.
//!
//! A round never reorders the queue: what it cannot push now (a backoff, a
//! pause) stays at the head, and the next round starts with it. It owns no
//! state between rounds; the worker (`worker.rs`) decides when to run one.

use super::config::{OutboxConfig, PushAction};
use crate::store::{DeadLetter, OutboxEntry, PushAck};
use crate::{Remote, RemoteError, Replica, Rev, StoreError};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// How a round ended.
#[derive(Debug)]
pub(super) enum RoundEnd {
    /// The outbox was empty.
    Idle,
    /// Entries were acknowledged (pushed or dead-lettered); run another.
    Progress,
    /// A transient failure: retry the head of the queue later.
    Backoff {
        error: String,
        retry_after: Option<Duration>,
    },
    /// A failure that needs a person.
    Pause { error: String },
}

/// What a round did, for the status.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RoundStats {
    pub(super) revs_pushed: u64,
    pub(super) dead_lettered: u64,
    pub(super) bulk_docs_requests: u64,
}

/// The queued edits of one document in this round.
struct DocGroup {
    id: String,
    keys: Vec<u64>,
    revs: Vec<Rev>,
    state: GroupState,
}

#[derive(Debug, Clone, PartialEq)]
enum GroupState {
    /// Not answered (yet): stays queued.
    Pending,
    Done,
    Dead {
        status: Option<u16>,
        error: String,
        reason: String,
    },
}

/// One revision to send, and the group it belongs to.
struct PushDoc {
    group: usize,
    json: Value,
}

pub(super) async fn run(
    replica: &Replica,
    remote: &Remote,
    config: &OutboxConfig,
    stats: &mut RoundStats,
) -> Result<RoundEnd, StoreError> {
    let entries = replica.outbox_entries(None, config.scan_limit.max(1))?;
    if entries.is_empty() {
        return Ok(RoundEnd::Idle);
    }
    let mut groups = group(entries, config.batch_size.max(1));

    // Every current leaf of each document: the remote gets the tree's
    // present state, whatever intermediate edits were queued.
    let mut diff_request: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for g in &groups {
        let leaves = replica.leaves(&g.id)?;
        diff_request.insert(
            g.id.clone(),
            leaves.iter().map(|l| l.rev.to_string()).collect(),
        );
    }
    let diff = match remote.push_revs_diff(&diff_request).await {
        Ok(d) => d,
        Err(e) => {
            return Ok(match config.policy.for_request(&e) {
                PushAction::Pause => pause(&e),
                // A diff has no documents to split or dead-letter.
                _ => backoff(&e),
            });
        }
    };

    let mut docs = Vec::new();
    for (i, g) in groups.iter_mut().enumerate() {
        let Some(entry) = diff.get(&g.id) else {
            g.state = GroupState::Done;
            continue;
        };
        let ancestor_pos = entry
            .possible_ancestors
            .iter()
            .filter_map(|r| r.parse::<Rev>().ok())
            .map(|r| r.pos)
            .max()
            .unwrap_or(0);
        for missing in &entry.missing {
            let Ok(rev) = missing.parse::<Rev>() else {
                continue;
            };
            if let Some(json) = doc_json(replica, &g.id, &rev, ancestor_pos)? {
                docs.push(PushDoc { group: i, json });
            }
        }
        if !docs.iter().any(|d| d.group == i) {
            // The remote lacks only revisions that are no longer leaves here.
            g.state = GroupState::Done;
        }
    }

    let stop = push_docs(remote, config, &docs, &mut groups, stats).await;

    let mut ack = PushAck {
        remote: remote.endpoint().to_string(),
        ..PushAck::default()
    };
    for g in &groups {
        match &g.state {
            GroupState::Pending => {}
            GroupState::Done => {
                ack.remove.extend(&g.keys);
                ack.revs_pushed +=
                    docs.iter().filter(|d| groups[d.group].id == g.id).count() as u64;
            }
            GroupState::Dead {
                status,
                error,
                reason,
            } => {
                ack.remove.extend(&g.keys);
                ack.dead.push(DeadLetter::new(
                    g.keys[0],
                    g.id.clone(),
                    g.revs.clone(),
                    *status,
                    error.clone(),
                    reason.clone(),
                ));
            }
        }
    }
    stats.revs_pushed += ack.revs_pushed;
    stats.dead_lettered += ack.dead.len() as u64;
    let acked = !ack.remove.is_empty();
    if acked {
        let r = replica.clone();
        // On a blocking thread: a round dropped at shutdown still finishes
        // (or never starts) this transaction, never half of it.
        tokio::task::spawn_blocking(move || r.acknowledge_push(&ack))
            .await
            .map_err(|e| StoreError::Cancelled(e.to_string()))??;
    }
    Ok(match stop {
        Some(end) => end,
        None if acked => RoundEnd::Progress,
        // Nothing answered and nothing failed: cannot happen with a
        // non-empty batch, but never spin on it.
        None => RoundEnd::Backoff {
            error: "a push round made no progress".to_owned(),
            retry_after: None,
        },
    })
}

/// Groups the head of the queue by document, first-seen order, at most
/// `batch_size` documents; later edits of a document already in the round
/// join it (they are pushed as its current leaves anyway).
fn group(entries: Vec<OutboxEntry>, batch_size: usize) -> Vec<DocGroup> {
    let mut groups: Vec<DocGroup> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for e in entries {
        if let Some(&i) = index.get(&e.id) {
            groups[i].keys.push(e.key);
            groups[i].revs.push(e.rev);
        } else if groups.len() < batch_size {
            index.insert(e.id.clone(), groups.len());
            groups.push(DocGroup {
                id: e.id,
                keys: vec![e.key],
                revs: vec![e.rev],
                state: GroupState::Pending,
            });
        }
    }
    groups
}

/// The revision as `_bulk_docs` with `new_edits: false` wants it: `_rev`,
/// `_revisions` (its whole kept history) and the attachments the remote
/// may lack inline (those changed after the newest possible ancestor).
fn doc_json(
    replica: &Replica,
    id: &str,
    rev: &Rev,
    ancestor_pos: u64,
) -> Result<Option<Value>, StoreError> {
    let Some(doc) = replica.get_rev(id, rev)? else {
        return Ok(None);
    };
    let Some(path) = replica.rev_tree(id)?.and_then(|t| t.path_to(rev)) else {
        return Ok(None);
    };
    let mut json = doc.to_json();
    json["_revisions"] = json!({ "start": path.start, "ids": path.ids });
    if let Some(Value::Object(atts)) = json.get_mut("_attachments") {
        for att in atts.values_mut() {
            let revpos = att
                .get("revpos")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            if revpos <= ancestor_pos {
                continue;
            }
            let Some(digest) = att.get("digest").and_then(Value::as_str) else {
                continue;
            };
            if let Some(bytes) = replica.attachment(digest)? {
                let content_type = att.get("content_type").cloned().unwrap_or(Value::Null);
                *att = json!({
                    "content_type": content_type,
                    "revpos": revpos,
                    "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                });
            }
        }
    }
    Ok(Some(json))
}

/// Sends `docs` in `_bulk_docs` requests, splitting batches the policy
/// says to split, and marks each group. Returns why it stopped early.
async fn push_docs(
    remote: &Remote,
    config: &OutboxConfig,
    docs: &[PushDoc],
    groups: &mut [DocGroup],
    stats: &mut RoundStats,
) -> Option<RoundEnd> {
    // Groups with a revision not yet accepted: a group is done only when
    // all of its revisions are.
    let mut unanswered: HashMap<usize, usize> = HashMap::new();
    for d in docs {
        *unanswered.entry(d.group).or_default() += 1;
    }
    let mut work: Vec<&[PushDoc]> = if docs.is_empty() { vec![] } else { vec![docs] };
    let mut doc_stop = None;
    while let Some(slice) = work.pop() {
        let body: Vec<Value> = slice.iter().map(|d| d.json.clone()).collect();
        stats.bulk_docs_requests += 1;
        match remote.bulk_docs(&body).await {
            Ok(refused) => {
                let mut refused_groups: HashSet<usize> = HashSet::new();
                for r in refused {
                    let Some(d) = slice.iter().find(|d| groups[d.group].id == r.id) else {
                        continue;
                    };
                    match config.policy.for_doc(&r.error) {
                        action @ (PushAction::Backoff | PushAction::Pause) => {
                            // Stays queued; the round ends after this
                            // request instead of sending it again at once.
                            let error = format!("{}: {}: {}", r.id, r.error, r.reason);
                            doc_stop = Some(if action == PushAction::Pause {
                                RoundEnd::Pause { error }
                            } else {
                                RoundEnd::Backoff {
                                    error,
                                    retry_after: None,
                                }
                            });
                            refused_groups.insert(d.group);
                        }
                        PushAction::DeadLetter | PushAction::Split => {
                            groups[d.group].state = GroupState::Dead {
                                status: None,
                                error: r.error,
                                reason: r.reason,
                            };
                            refused_groups.insert(d.group);
                        }
                    }
                }
                for d in slice {
                    if refused_groups.contains(&d.group) {
                        continue;
                    }
                    if let Some(n) = unanswered.get_mut(&d.group) {
                        *n -= 1;
                        if *n == 0 && groups[d.group].state == GroupState::Pending {
                            groups[d.group].state = GroupState::Done;
                        }
                    }
                }
            }
            Err(e) => match config.policy.for_request(&e) {
                PushAction::Split if slice.len() > 1 => {
                    let (a, b) = slice.split_at(slice.len() / 2);
                    // Pushed in order: the first half is popped first.
                    work.push(b);
                    work.push(a);
                }
                PushAction::Split | PushAction::DeadLetter => {
                    let (status, error, reason) = describe(&e);
                    for d in slice {
                        groups[d.group].state = GroupState::Dead {
                            status,
                            error: error.clone(),
                            reason: reason.clone(),
                        };
                    }
                }
                PushAction::Backoff => return Some(backoff(&e)),
                PushAction::Pause => return Some(pause(&e)),
            },
        }
    }
    doc_stop
}

fn describe(e: &RemoteError) -> (Option<u16>, String, String) {
    match e {
        RemoteError::Http {
            status,
            error,
            reason,
            ..
        } => (Some(status.as_u16()), error.clone(), reason.clone()),
        other => (
            other.status().map(|s| s.as_u16()),
            "refused".to_owned(),
            other.to_string(),
        ),
    }
}

fn backoff(e: &RemoteError) -> RoundEnd {
    RoundEnd::Backoff {
        error: e.to_string(),
        retry_after: e.retry_after(),
    }
}

fn pause(e: &RemoteError) -> RoundEnd {
    RoundEnd::Pause {
        error: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(key: u64, id: &str) -> OutboxEntry {
        serde_json::from_value(json!({"key": key, "id": id, "rev": format!("{key}-x")})).unwrap()
    }

    #[test]
    fn edits_of_one_document_coalesce_and_batches_are_bounded() {
        let entries = vec![
            entry(1, "a"),
            entry(2, "b"),
            entry(3, "a"),
            entry(4, "c"),
            entry(5, "b"),
        ];
        let g = group(entries, 2);
        let got: Vec<(&str, Vec<u64>)> =
            g.iter().map(|g| (g.id.as_str(), g.keys.clone())).collect();
        assert_eq!(got, vec![("a", vec![1, 3]), ("b", vec![2, 5])]);
    }
}
