//! One push round: read the head of the outbox, coalesce it per document,
//! ask `_revs_diff` what the remote lacks, send those leaves with their
//! history through `_bulk_docs` (`new_edits: false`), split what is too
//! large, and record the answer in one store transaction.
//!
//! A round never reorders the queue: what it cannot push now (a backoff, a
//! pause) stays at the head, and the next round starts with it. It owns no
//! state between rounds; the worker (`worker.rs`) decides when to run one.

use super::config::{OutboxConfig, PushAction};
use crate::revtree::RevPath;
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
    rev: Rev,
    json: Value,
    /// Sent again with every attachment inline after a `missing_stub`.
    inline_retried: bool,
}

/// Which attachments go as stubs.
#[derive(Clone, Copy)]
enum Stubs<'a> {
    /// Those the remote holds already: not changed since the newest of
    /// these remote leaves that is on the revision's own path.
    Since(&'a [Rev]),
    /// None: every attachment inline.
    None,
}

pub(super) async fn run(
    replica: &Replica,
    remote: &Remote,
    checks: &Remote,
    config: &OutboxConfig,
    stats: &mut RoundStats,
) -> Result<RoundEnd, StoreError> {
    let entries = replica.outbox().entries(None, config.scan_limit.max(1))?;
    if entries.is_empty() {
        return Ok(RoundEnd::Idle);
    }
    // A recreated remote database must never get this replica's old
    // revisions: the same signals the sync service rebuilds on, before
    // every round. Pausing keeps the queue whole; a sync rebuilds the
    // replica and carries the queued writes over as new edits.
    match crate::identity::changed(
        replica,
        checks,
        config.epoch_doc_id.as_deref(),
        config.revs_probe_docs,
    )
    .await
    {
        Ok(None) => {}
        Ok(Some(reason)) => {
            return Ok(RoundEnd::Pause {
                error: format!(
                    "not pushed: the remote database is not the one this replica copies \
                     ({reason}); the writes stay queued here (a sync rebuilds the replica \
                     and carries them over)"
                ),
            })
        }
        Err(crate::Error::Remote(e)) => {
            return Ok(match config.policy.for_request(&e) {
                PushAction::Pause => pause(&e),
                _ => backoff(&e),
            })
        }
        Err(crate::Error::Store(e)) => return Err(e),
        Err(e) => {
            return Ok(RoundEnd::Backoff {
                error: e.to_string(),
                retry_after: None,
            })
        }
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
            // The remote has every leaf we asked about.
            g.state = GroupState::Done;
            continue;
        };
        let asked = &diff_request[&g.id];
        let Some(missing) = parse_missing(&entry.missing, asked) else {
            // An answer naming revisions we did not ask about (or no
            // revision at all) proves nothing: the group stays queued and
            // is asked again next round; the others go on.
            tracing::warn!(id = %g.id, missing = ?entry.missing, asked = ?asked,
                "_revs_diff answered revisions that were not asked about; kept queued");
            continue;
        };
        let ancestors: Vec<Rev> = entry
            .possible_ancestors
            .iter()
            .filter_map(|r| r.parse::<Rev>().ok())
            .collect();
        let mut complete = true;
        for rev in missing {
            match doc_json(replica, &g.id, &rev, Stubs::Since(&ancestors))? {
                Some(json) => docs.push(PushDoc {
                    group: i,
                    rev,
                    json,
                    inline_retried: false,
                }),
                // No longer a leaf with a body here: a newer local edit
                // replaced it while the round ran. Its entry may be in this
                // group, so the group is not done; the next round pushes the
                // new leaf.
                None => complete = false,
            }
        }
        if !complete {
            docs.retain(|d| d.group != i);
        }
    }

    let stop = push_docs(replica, remote, config, &mut docs, &mut groups, stats).await?;

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

/// The revisions of `missing` as asked about: `None` when the answer names
/// a revision that is not one of `asked`, does not parse, or is empty, so
/// an odd answer can never mark a document pushed.
fn parse_missing(missing: &[String], asked: &[String]) -> Option<Vec<Rev>> {
    if missing.is_empty() {
        return None;
    }
    missing
        .iter()
        .map(|m| {
            if asked.iter().any(|a| a == m) {
                m.parse::<Rev>().ok()
            } else {
                None
            }
        })
        .collect()
}

/// The generation of the newest of `ancestors` on `path` (the revision's
/// own history), 0 if none is.
///
/// CouchDB's `possible_ancestors` are the remote's leaves of a lower
/// generation, whichever branch they are on: a conflicting remote edit is
/// one. Only a leaf on this revision's own path is a revision the remote
/// will merge our attachment stubs against (as CouchDB's replicator rules,
/// `couch_db`'s `find_ancestor_rev_pos`); an attachment changed after it
/// must go inline, or `_bulk_docs` answers 412 `missing_stub`.
fn ancestor_pos(path: &RevPath, ancestors: &[Rev]) -> u64 {
    ancestors
        .iter()
        .filter(|a| {
            a.pos <= path.start
                && usize::try_from(path.start - a.pos)
                    .ok()
                    .and_then(|i| path.ids.get(i))
                    .is_some_and(|h| *h == a.hash)
        })
        .map(|a| a.pos)
        .max()
        .unwrap_or(0)
}

/// The revision as `_bulk_docs` with `new_edits: false` wants it: `_rev`,
/// `_revisions` (its whole kept history) and, inline, the attachments the
/// remote may lack (see [`Stubs`]). `None` when `rev` is no longer a leaf
/// with a body here.
fn doc_json(
    replica: &Replica,
    id: &str,
    rev: &Rev,
    stubs: Stubs<'_>,
) -> Result<Option<Value>, StoreError> {
    let Some(doc) = replica.get_rev(id, rev)? else {
        return Ok(None);
    };
    let Some(path) = replica.rev_tree(id)?.and_then(|t| t.path_to(rev)) else {
        return Ok(None);
    };
    let ancestor_pos = match stubs {
        Stubs::Since(ancestors) => ancestor_pos(&path, ancestors),
        Stubs::None => 0,
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

/// True when a refusal is CouchDB's `missing_stub`: the remote lacks the
/// revision an attachment stub refers to. Sending the attachment inline
/// answers it.
fn is_missing_stub(error: &str) -> bool {
    error == "missing_stub"
}

/// Sends `docs` in `_bulk_docs` requests, splitting batches the policy
/// says to split, and marks each group. Returns why it stopped early.
///
/// One document's refusal never holds back the others: a refusal of the
/// whole request that the policy splits (400, 412, 413) is narrowed down
/// by halves to the one document, which is sent once more with every
/// attachment inline after a `missing_stub`, then dead-lettered.
async fn push_docs(
    replica: &Replica,
    remote: &Remote,
    config: &OutboxConfig,
    docs: &mut [PushDoc],
    groups: &mut [DocGroup],
    stats: &mut RoundStats,
) -> Result<Option<RoundEnd>, StoreError> {
    // Groups with a revision not yet accepted: a group is done only when
    // all of its revisions are.
    let mut unanswered: HashMap<usize, usize> = HashMap::new();
    for d in docs.iter() {
        *unanswered.entry(d.group).or_default() += 1;
    }
    // Ranges of `docs`, the next to send last.
    let mut work: Vec<std::ops::Range<usize>> = Vec::new();
    if !docs.is_empty() {
        work.push(0..docs.len());
    }
    let mut doc_stop = None;
    while let Some(range) = work.pop() {
        let slice = &docs[range.clone()];
        let body: Vec<Value> = slice.iter().map(|d| d.json.clone()).collect();
        stats.bulk_docs_requests += 1;
        let refused = match remote.bulk_docs(&body).await {
            Ok(refused) => refused,
            Err(e) => {
                match config.policy.for_request(&e) {
                    PushAction::Split if range.len() > 1 => halve(&mut work, range),
                    PushAction::Split | PushAction::DeadLetter => {
                        let (status, error, reason) = describe(&e);
                        if retry_inline(replica, &mut docs[range.clone()], &error)? {
                            work.push(range);
                            continue;
                        }
                        for d in &docs[range] {
                            groups[d.group].state = GroupState::Dead {
                                status,
                                error: error.clone(),
                                reason: reason.clone(),
                            };
                        }
                    }
                    PushAction::Backoff => return Ok(Some(backoff(&e))),
                    PushAction::Pause => return Ok(Some(pause(&e))),
                }
                continue;
            }
        };
        // A refusal that names no document of this request cannot be
        // told apart from the others' success: narrow it down by halves,
        // and a lone document owns it.
        let unattributed = refused
            .iter()
            .any(|r| !slice.iter().any(|d| groups[d.group].id == r.id));
        if unattributed && range.len() > 1 {
            halve(&mut work, range);
            continue;
        }
        let mut refused_groups: HashSet<usize> = HashSet::new();
        for r in refused {
            let Some(j) = range
                .clone()
                .find(|&j| groups[docs[j].group].id == r.id)
                .or(if unattributed {
                    Some(range.start)
                } else {
                    None
                })
            else {
                continue;
            };
            let group = docs[j].group;
            refused_groups.insert(group);
            if retry_inline(replica, &mut docs[j..j + 1], &r.error)? {
                // Sent again alone; its group is answered by that request.
                work.push(j..j + 1);
                continue;
            }
            match config.policy.for_doc(&r.error) {
                action @ (PushAction::Backoff | PushAction::Pause) => {
                    // Stays queued; the round ends after this request
                    // instead of sending it again at once.
                    let error = format!("{}: {}: {}", groups[group].id, r.error, r.reason);
                    doc_stop = Some(if action == PushAction::Pause {
                        RoundEnd::Pause { error }
                    } else {
                        RoundEnd::Backoff {
                            error,
                            retry_after: None,
                        }
                    });
                }
                PushAction::DeadLetter | PushAction::Split => {
                    groups[group].state = GroupState::Dead {
                        status: None,
                        error: r.error,
                        reason: r.reason,
                    };
                }
            }
        }
        for d in &docs[range] {
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
    Ok(doc_stop)
}

/// Queues the two halves of `range`, the first to be sent first.
fn halve(work: &mut Vec<std::ops::Range<usize>>, range: std::ops::Range<usize>) {
    let mid = range.start + range.len() / 2;
    work.push(mid..range.end);
    work.push(range.start..mid);
}

/// After a `missing_stub` refusal of one document not yet retried: its
/// JSON rebuilt with every attachment inline, and true (send it again).
fn retry_inline(replica: &Replica, one: &mut [PushDoc], error: &str) -> Result<bool, StoreError> {
    let [d] = one else { return Ok(false) };
    if !is_missing_stub(error) || d.inline_retried {
        return Ok(false);
    }
    d.inline_retried = true;
    let Some(id) = d.json.get("_id").and_then(Value::as_str).map(str::to_owned) else {
        return Ok(false);
    };
    match doc_json(replica, &id, &d.rev, Stubs::None)? {
        Some(json) => {
            tracing::info!(%id, rev = %d.rev, "missing_stub: sending every attachment inline");
            d.json = json;
            Ok(true)
        }
        None => Ok(false),
    }
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
