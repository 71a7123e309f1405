//! `/{db}/_changes`: the replica's local changes feed as CouchDB serves
//! its own, in every feed type, streamed.
//!
//! ```text
//!  params ─► Feed (filter, row shape) ─► normal / longpoll   {"results":[ rows… ],"last_seq":N,"pending":P}
//!                                     ├► continuous           row\n row\n … (\n heartbeats) {"last_seq":N}
//!                                     └► eventsource          data: row\nid: seq\n\n …
//! ```
//!
//! Rows are read from the store as the body is written, so a feed of a
//! million changes holds one row in memory, not a million. A feed that
//! waits (long poll, continuous) waits on the replica's committed
//! sequence (a pull, a local write, a client's `_bulk_docs`), never polls
//! the store. A store failure in the middle of a body cuts the
//! connection: the client sees a broken answer and asks again, rather
//! than a feed that looks complete.

use super::error::HttpError;
use super::{Answer, Request, Served};
use crate::query::{GetOptions, Query};
use crate::store::{Change, Replica};
use crate::views::View;
use axum::body::Bytes;
use axum::http::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// How long a long poll or a continuous feed without `heartbeat` waits
/// for a change when the client names no `timeout` (CouchDB's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The shortest heartbeat taken: a client asking for one every
/// millisecond would get a busy loop of newlines.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FeedType {
    Normal,
    Longpoll,
    Continuous,
    EventSource,
}

/// Which changes a feed lists (CouchDB's built-in filters).
enum Filter {
    All,
    DocIds(HashSet<String>),
    Selector(crate::query::Selector),
    /// Documents the view's map emits a row for, as its index holds them.
    View(Box<View>),
    /// Design documents only (`filter=_design`).
    Design,
    /// A design document's filter function (`filter=ddoc/name`), as a
    /// map that emits for what it passes: it sees every document,
    /// tombstones (`_deleted: true`) and design documents included.
    Function(Box<View>),
}

/// One feed request, parsed: what to list and how.
struct Feed {
    replica: Replica,
    query: Query,
    kind: FeedType,
    since: u64,
    limit: usize,
    descending: bool,
    all_leaves: bool,
    include_docs: bool,
    get: GetOptions,
    filter: Filter,
    heartbeat: Option<Duration>,
    /// How long to wait for a change; `None` waits as long as the client
    /// stays (a continuous feed with heartbeats).
    timeout: Option<Duration>,
}

/// `GET`/`POST /{db}/_changes`: `feed` (`normal`, `longpoll`,
/// `continuous`, `eventsource`), `since` (a number or `now`), `limit`,
/// `descending`, `style=all_docs`, `include_docs`, `conflicts`,
/// `attachments`, `heartbeat`, `timeout`, and `filter` (`_doc_ids`,
/// `_selector`, `_view` with `view=ddoc/view`, `_design`, or a design
/// document's filter function `ddoc/name`).
pub(super) async fn changes(served: &Served, req: &Request) -> Result<Answer, HttpError> {
    let feed = Feed::parse(served, req)?;
    let content_type = match feed.kind {
        FeedType::EventSource => "text/event-stream",
        _ => "application/json",
    };
    let body = match feed.kind {
        FeedType::Normal | FeedType::Longpoll => axum::body::Body::from_stream(feed.results_body()),
        FeedType::Continuous | FeedType::EventSource => {
            axum::body::Body::from_stream(feed.continuous_body())
        }
    };
    Ok(Answer::stream(content_type, body))
}

/// Whatever ended a streamed feed early: the client sees the connection
/// cut (the log says why).
fn cut(e: HttpError) -> std::io::Error {
    tracing::error!(error = %e.reason, "a changes feed was cut");
    std::io::Error::other(e.reason)
}

impl Feed {
    fn parse(served: &Served, req: &Request) -> Result<Feed, HttpError> {
        let flag = |key: &str| req.param(key).as_deref() == Some("true");
        let kind = match req.param("feed").as_deref() {
            None | Some("normal") => FeedType::Normal,
            Some("longpoll") => FeedType::Longpoll,
            // CouchDB takes `live` as another name for `continuous`.
            Some("continuous") | Some("live") => FeedType::Continuous,
            Some("eventsource") => FeedType::EventSource,
            Some(other) => {
                return Err(HttpError::bad_request(format!(
                    "Supported `feed` types: normal, continuous, live, longpoll, eventsource; not {other}"
                )))
            }
        };
        let since = match req.param("since").as_deref() {
            None | Some("0") | Some("") => 0,
            Some("now") => served.replica.update_seq()?,
            Some(s) => s.trim_matches('"').parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!(
                    "Malformed sequence supplied in 'since' parameter: {s}"
                ))
            })?,
        };
        let limit = match req.param("limit") {
            None => usize::MAX,
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| HttpError::bad_request("limit must be a positive integer"))?
                .max(1),
        };
        let millis = |key: &str| -> Result<Option<Duration>, HttpError> {
            match req.param(key).as_deref() {
                None => Ok(None),
                // `heartbeat=true` is CouchDB's default of 60 s.
                Some("true") => Ok(Some(DEFAULT_TIMEOUT)),
                Some(v) => v
                    .parse::<u64>()
                    .map(|ms| Some(Duration::from_millis(ms)))
                    .map_err(|_| {
                        HttpError::bad_request(format!("{key} must be a number of milliseconds"))
                    }),
            }
        };
        let heartbeat = millis("heartbeat")?.map(|h| h.max(MIN_HEARTBEAT));
        let timeout = match (millis("timeout")?, heartbeat) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TIMEOUT),
        };
        let mut get = GetOptions::default()
            .deleted(true)
            .conflicts(flag("conflicts"));
        if flag("attachments") {
            get = get.attachments(true);
        }
        Ok(Feed {
            replica: served.replica.clone(),
            query: served.query.clone(),
            kind,
            since,
            limit,
            descending: flag("descending"),
            all_leaves: req.param("style").as_deref() == Some("all_docs"),
            include_docs: flag("include_docs"),
            get,
            filter: filter_of(served, req)?,
            heartbeat,
            timeout,
        })
    }

    /// The row of `change`, or `None` when the filter leaves it out.
    fn row(&self, change: Change) -> Result<Option<Value>, HttpError> {
        let info = change.doc;
        // The document a selector was matched against, kept for
        // `include_docs` when that reads it the same way.
        let mut read = None;
        let keep = match &self.filter {
            Filter::All => true,
            Filter::DocIds(ids) => ids.contains(&info.id),
            Filter::Design => info.id.starts_with("_design/"),
            Filter::Selector(selector) => {
                let options = GetOptions::default().deleted(true);
                let doc = self.query.get(&info.id, &options)?;
                let keep = selector.matches(&doc)?;
                if self.get == options {
                    read = Some(doc);
                }
                keep
            }
            // As the view's index holds them: design documents only when
            // the view sees them (`options.include_design`).
            Filter::View(view) if info.id.starts_with("_design/") && !view.sees_design_docs() => {
                false
            }
            Filter::View(view) => match self.replica.get(&info.id)? {
                Some(doc) if !doc.deleted => !view.map(&doc).is_empty(),
                _ => false,
            },
            Filter::Function(function) => match self.replica.get(&info.id)? {
                Some(mut doc) => {
                    if doc.deleted {
                        doc.body.insert("_deleted".into(), Value::Bool(true));
                    }
                    !function.map(&doc).is_empty()
                }
                None => false,
            },
        };
        if !keep {
            return Ok(None);
        }
        let revs: Vec<Value> = if self.all_leaves {
            self.replica
                .leaves(&info.id)?
                .iter()
                .map(|l| json!({"rev": l.rev.to_string()}))
                .collect()
        } else {
            vec![json!({"rev": info.rev.to_string()})]
        };
        let mut row = json!({"seq": change.seq, "id": info.id, "changes": revs});
        if info.deleted {
            row["deleted"] = json!(true);
        }
        if self.include_docs {
            row["doc"] = match read {
                Some(doc) => doc,
                None => self.query.get(&info.id, &self.get)?,
            };
        }
        Ok(Some(row))
    }

    /// The changes after `since` in the feed's order, from the store.
    fn scan(&self, since: u64) -> Box<dyn Iterator<Item = Result<Change, HttpError>> + Send> {
        let changes = self.replica.changes(since);
        let map = |c: Result<Change, crate::StoreError>| c.map_err(HttpError::from);
        match self.descending {
            true => Box::new(changes.rev().map(map)),
            false => Box::new(changes.map(map)),
        }
    }

    /// `normal` and `longpoll`: one JSON object. A long poll with nothing
    /// after `since` first waits for a commit (sending a newline each
    /// heartbeat, which JSON ignores), at most its timeout.
    fn results_body(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        async_stream::try_stream! {
            if self.kind == FeedType::Longpoll && !self.descending {
                let mut committed = self.replica.watch_update_seq();
                let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
                loop {
                    if *committed.borrow_and_update() > self.since {
                        break;
                    }
                    match self.wait(&mut committed, deadline).await {
                        Wait::Changed => break,
                        Wait::Heartbeat => yield Bytes::from_static(b"\n"),
                        Wait::TimedOut => break,
                    }
                }
            }
            yield Bytes::from_static(b"{\"results\":[\n");
            let mut last_seq = self.since;
            let mut rows = 0usize;
            let mut cut_short = false;
            for change in self.scan(self.since) {
                let change = change.map_err(cut)?;
                last_seq = change.seq;
                let Some(row) = self.row(change).map_err(cut)? else {
                    continue;
                };
                let sep: &[u8] = if rows == 0 { b"" } else { b",\n" };
                yield line(sep, &row, b"");
                rows += 1;
                if rows >= self.limit {
                    cut_short = true;
                    break;
                }
            }
            // What a `limit` left for the next page, estimated as CouchDB
            // 2+ does: the sequences after the last row (an upper bound: a
            // document changed twice holds one of them). Counting the
            // index would cost a walk of the rest of it per page.
            let pending = match (cut_short, self.descending) {
                (true, false) => self.replica.update_seq().map_err(|e| cut(e.into()))?.saturating_sub(last_seq),
                _ => 0,
            };
            let end = json!({"last_seq": last_seq, "pending": pending}).to_string();
            let end = &end[1..]; // `"last_seq":…}` continues the open object
            yield Bytes::from(format!("\n],\n{end}\n"));
        }
    }

    /// `continuous` and `eventsource`: a row per change as it commits,
    /// until `limit` rows, `timeout` without a change, or the client
    /// leaves; a heartbeat (a newline, an SSE comment event) each
    /// `heartbeat` without one.
    fn continuous_body(self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        async_stream::try_stream! {
            let mut committed = self.replica.watch_update_seq();
            let mut since = self.since;
            let mut rows = 0usize;
            'feed: loop {
                // Everything committed up to here is in the scan below:
                // a commit notifies after its data is in the store.
                let upto = *committed.borrow_and_update();
                for change in self.scan(since) {
                    let change = change.map_err(cut)?;
                    since = since.max(change.seq);
                    let seq = change.seq;
                    let Some(row) = self.row(change).map_err(cut)? else {
                        continue;
                    };
                    yield match self.kind {
                        FeedType::EventSource => {
                            Bytes::from(format!("data: {row}\nid: {seq}\n\n"))
                        }
                        _ => line(b"", &row, b"\n"),
                    };
                    rows += 1;
                    if rows >= self.limit {
                        break 'feed;
                    }
                }
                since = since.max(upto);
                if self.descending {
                    break;
                }
                let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
                loop {
                    match self.wait(&mut committed, deadline).await {
                        Wait::Changed => break,
                        Wait::Heartbeat => {
                            yield match self.kind {
                                FeedType::EventSource => Bytes::from_static(b"event: heartbeat\ndata: \n\n"),
                                _ => Bytes::from_static(b"\n"),
                            };
                        }
                        Wait::TimedOut => break 'feed,
                    }
                }
            }
            if self.kind == FeedType::Continuous {
                yield line(b"", &json!({"last_seq": since, "pending": 0}), b"\n");
            }
        }
    }

    /// Waits for a commit past what `committed` last showed, a heartbeat,
    /// or the deadline, whichever comes first.
    async fn wait(
        &self,
        committed: &mut tokio::sync::watch::Receiver<u64>,
        deadline: Option<tokio::time::Instant>,
    ) -> Wait {
        let now = tokio::time::Instant::now();
        let beat = self.heartbeat.map(|h| now + h);
        let until = match (beat, deadline) {
            (Some(b), Some(d)) => b.min(d),
            (Some(b), None) => b,
            (None, Some(d)) => d,
            // Neither: only a commit (or the client leaving) ends the wait.
            (None, None) => now + Duration::from_secs(3600),
        };
        match tokio::time::timeout_at(until, committed.changed()).await {
            Ok(Ok(())) => Wait::Changed,
            // The replica closed: the feed has nothing more to wait for.
            Ok(Err(_)) => Wait::TimedOut,
            Err(_) if deadline.is_some_and(|d| d <= until) => Wait::TimedOut,
            Err(_) if beat.is_some() => Wait::Heartbeat,
            Err(_) => Wait::Changed,
        }
    }
}

enum Wait {
    Changed,
    Heartbeat,
    TimedOut,
}

/// `value` as one line of a body, between `before` and `after`.
fn line(before: &[u8], value: &Value, after: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(before.len() + 256);
    out.extend_from_slice(before);
    // Writing a `Value` to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(after);
    Bytes::from(out)
}

/// The feed's filter: `filter=_doc_ids` (`doc_ids` in the POST body or the
/// query; a `doc_ids` given without the filter counts too, as PouchDB
/// sends it), `_selector` (`selector` in the body), `_view`
/// (`view=ddoc/view`), `_design`, or `ddoc/name`: a design document's
/// filter function, run in the JavaScript sandbox.
fn filter_of(served: &Served, req: &Request) -> Result<Filter, HttpError> {
    let body = match req.method == Method::POST && !req.body.is_empty() {
        true => Some(req.json()?),
        false => None,
    };
    match req.param("filter").as_deref() {
        None | Some("_doc_ids") => Ok(doc_ids_of(req, body.as_ref())?
            .map_or(Filter::All, |ids| Filter::DocIds(ids.into_iter().collect()))),
        Some("_selector") => {
            let selector = body
                .as_ref()
                .and_then(|b| b.get("selector"))
                .ok_or_else(|| {
                    HttpError::bad_request("Selector must be specified in POST payload")
                })?;
            Ok(Filter::Selector(crate::query::Selector::parse(selector)?))
        }
        Some("_view") => {
            let view = req.param("view").unwrap_or_default();
            let Some((ddoc, name)) = view.split_once('/') else {
                return Err(HttpError::bad_request(
                    "`view` filter parameter is not provided.",
                ));
            };
            Ok(Filter::View(Box::new(served.query.map_of(ddoc, name)?)))
        }
        Some("_design") => Ok(Filter::Design),
        Some(named) => {
            let Some((ddoc, name)) = named.split_once('/') else {
                return Err(HttpError::bad_request(format!(
                    "`filter` must be `designname/filtername` or a built-in filter, not {named}"
                )));
            };
            let request = filter_request(served, req, body.as_ref());
            Ok(Filter::Function(Box::new(
                served.query.filter_of(ddoc, name, &request)?,
            )))
        }
    }
}

/// The request object a filter function is given (CouchDB's `req`, the
/// fields filters read): the query parameters, the method, the body, the
/// database and the caller (this server's one user, an admin).
fn filter_request(served: &Served, req: &Request, body: Option<&Value>) -> Value {
    let query: serde_json::Map<String, Value> = url::form_urlencoded::parse(req.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    json!({
        "method": req.method.as_str(),
        "query": query,
        "body": body.map_or(Value::String("undefined".into()), |b| Value::String(b.to_string())),
        "info": {"db_name": served.name},
        "userCtx": {"db": served.name, "name": null, "roles": ["_admin"]},
        "headers": {},
        "peer": "127.0.0.1",
    })
}

/// `doc_ids` from a POST body or the query.
fn doc_ids_of(req: &Request, body: Option<&Value>) -> Result<Option<Vec<String>>, HttpError> {
    let given = match body.and_then(|b| b.get("doc_ids")) {
        Some(v) => Some(v.clone()),
        None => req
            .param("doc_ids")
            .map(|s| serde_json::from_str::<Value>(&s))
            .transpose()
            .map_err(|e| HttpError::bad_request(format!("doc_ids is not JSON: {e}")))?,
    };
    match given {
        None => Ok(None),
        Some(Value::Array(ids)) => ids
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(HttpError::bad_request(format!(
                    "a doc id must be a string: {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(HttpError::bad_request(format!(
            "`doc_ids` filter parameter is not a list of doc ids: {other}"
        ))),
    }
}
