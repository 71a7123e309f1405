//! Filtered pulls: which documents, which revisions of each, and which
//! deletions a pull takes, as CouchDB's replicator names them; how each goes
//! on the wire ([`FeedQuery`]); and what each adds to the replication id, so
//! that checkpoints of differently filtered pulls never mix.

use crate::remote::{FeedQuery, Remote};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Which documents a pull takes: the server filters its changes feed, so
/// nothing else is sent. Set with [`PullConfigBuilder::filter`](super::PullConfigBuilder::filter).
///
/// ```
/// use settee::replicate::Filter;
/// use settee::PullConfig;
///
/// let cards = Filter::Selector(serde_json::json!({"docType": "CARD"}));
/// let config = PullConfig::builder().filter(cards).build()?;
/// assert!(config.filter.is_filtered());
/// # Ok::<(), settee::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filter {
    /// Every document (the default).
    #[default]
    All,
    /// These documents only (`filter=_doc_ids`).
    DocIds(Vec<String>),
    /// Documents whose winning revision matches a Mango selector
    /// (`filter=_selector`; CouchDB ≥ 2, PouchDB Server).
    Selector(Value),
    /// A design document's filter function, `ddoc/name` (the design
    /// document `_design/ddoc`, its `filters.name`), with the query
    /// parameters it reads from `req.query`.
    Design {
        /// `ddoc/name`.
        name: String,
        /// Parameters handed to the function.
        params: BTreeMap<String, String>,
    },
}

impl Filter {
    /// True for anything but [`Filter::All`].
    pub fn is_filtered(&self) -> bool {
        *self != Filter::All
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |value: String, expected| {
            Err(Error::InvalidSetting {
                setting: "filter",
                value,
                expected,
            })
        };
        match self {
            Filter::All => Ok(()),
            Filter::DocIds(ids) if ids.is_empty() => {
                bad("no document ids".into(), "at least one document id")
            }
            Filter::Selector(s) if !s.is_object() => {
                bad(s.to_string(), "a selector: a JSON object")
            }
            Filter::Design { name, .. } => match name.split_once('/') {
                Some((d, f)) if !d.is_empty() && !f.is_empty() && !f.contains('/') => Ok(()),
                _ => bad(name.clone(), "a design filter named `ddoc/name`"),
            },
            _ => Ok(()),
        }
    }

    /// A short description for logs and `status` (`_selector {…}`).
    pub fn describe(&self) -> String {
        match self {
            Filter::All => "all documents".to_owned(),
            Filter::DocIds(ids) => format!("_doc_ids ({} ids)", ids.len()),
            Filter::Selector(s) => format!("_selector {s}"),
            Filter::Design { name, params } if params.is_empty() => name.clone(),
            Filter::Design { name, params } => {
                let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{name}?{}", p.join("&"))
            }
        }
    }
}

/// Which revisions of each document a pull takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revisions {
    /// Every leaf, conflicts included, as CouchDB replicates (the default).
    #[default]
    All,
    /// The winning revision only (CouchDB 3.3's `winning_revs_only`): no
    /// conflict branch is fetched. A replica pulled this way can still
    /// come to hold two branches when the server's winner moves to another
    /// branch between pulls.
    WinnersOnly,
}

/// Whether a pull takes the deletions of documents the replica never held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tombstones {
    /// Every deletion, as CouchDB replicates (the default).
    #[default]
    Pull,
    /// Only deletions of documents the replica holds: a cold start takes
    /// the server's live documents and no tombstones (the model app's
    /// user-database sync); later pulls take every deletion of what
    /// arrived. A document created and deleted between two pulls is then
    /// never seen, which changes nothing the replica answers.
    SkipUnheld,
}

/// What the wire and the replication id need of a pull's filter settings,
/// worked out once per pull.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) query: FeedQuery,
    /// Added to the replication id; `None` for an unfiltered pull, whose
    /// id stays what it always was.
    pub(crate) id_part: Option<String>,
    pub(crate) description: Option<String>,
}

/// Resolves `filter` and `revisions` against `remote`: a design filter's
/// function is read, so that a changed function starts a new checkpoint
/// (CouchDB's replicator does the same).
///
/// # Errors
/// [`Error::Remote`] when the design document cannot be read;
/// [`Error::InvalidSetting`] when it has no such filter.
pub(crate) async fn resolve(
    filter: &Filter,
    revisions: Revisions,
    remote: &Remote,
) -> Result<Resolved> {
    let mut query = FeedQuery::all();
    let mut id = match filter {
        Filter::All => String::new(),
        Filter::DocIds(ids) => {
            query.params.push(("filter".into(), "_doc_ids".into()));
            query.body = Some(json!({ "doc_ids": ids }));
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            format!("_doc_ids\0{}", json!(sorted))
        }
        Filter::Selector(selector) => {
            query.params.push(("filter".into(), "_selector".into()));
            // CouchDB reads the selector from the body, PouchDB Server
            // from the query; each ignores the other.
            query.params.push(("selector".into(), selector.to_string()));
            query.body = Some(json!({ "selector": selector }));
            format!("_selector\0{}", canonical(selector))
        }
        Filter::Design { name, params } => {
            query.params.push(("filter".into(), name.clone()));
            query
                .params
                .extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
            let source = design_filter_source(name, remote).await?;
            format!("{name}\0{source}\0{}", json!(params))
        }
    };
    if revisions == Revisions::WinnersOnly {
        query.winners_only = true;
        id.push_str("\0winning_revs_only");
    }
    let description = match (filter.is_filtered(), revisions) {
        (false, Revisions::All) => None,
        (false, Revisions::WinnersOnly) => Some("winning revisions only".to_owned()),
        (true, Revisions::All) => Some(filter.describe()),
        (true, Revisions::WinnersOnly) => {
            Some(format!("{}, winning revisions only", filter.describe()))
        }
    };
    Ok(Resolved {
        query,
        id_part: (!id.is_empty()).then_some(id),
        description,
    })
}

/// The source of the design filter `ddoc/name`.
async fn design_filter_source(name: &str, remote: &Remote) -> Result<String> {
    let missing = |expected| Error::InvalidSetting {
        setting: "filter",
        value: name.to_owned(),
        expected,
    };
    let (ddoc, function) = name
        .split_once('/')
        .ok_or_else(|| missing("a design filter named `ddoc/name`"))?;
    let doc = remote
        .get_doc(&format!("_design/{ddoc}"))
        .await?
        .ok_or_else(|| missing("a design document on the server"))?;
    doc.get("filters")
        .and_then(|f| f.get(function))
        .map(|f| match f {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .ok_or_else(|| missing("a filter function of that name in the design document"))
}

/// `v` as JSON text with every object's keys sorted, so that two equal
/// selectors written in another order name one checkpoint.
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let b: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(b.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selectors_in_another_key_order_are_one_checkpoint() {
        let a = json!({"b": 1, "a": {"y": 2, "x": [ {"d": 1, "c": 2} ]}});
        let b = json!({"a": {"x": [ {"c": 2, "d": 1} ], "y": 2}, "b": 1});
        assert_eq!(canonical(&a), canonical(&b));
        assert_ne!(canonical(&a), canonical(&json!({"b": 2})));
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(Filter::DocIds(vec![]).validate().is_err());
        assert!(Filter::Selector(json!([1])).validate().is_err());
        for name in ["nofn", "/f", "d/", "d/f/g"] {
            let f = Filter::Design {
                name: name.into(),
                params: BTreeMap::new(),
            };
            assert!(f.validate().is_err(), "{name}");
        }
        let f = Filter::Design {
            name: "app/by_type".into(),
            params: BTreeMap::from([("type".into(), "CARD".into())]),
        };
        assert!(f.validate().is_ok());
        assert_eq!(f.describe(), "app/by_type?type=CARD");
        assert!(!Filter::All.is_filtered());
    }
}
