//! Reading the changes feed as pages, with the next page asked for early.
//!
//! Pages must be read one after the other: each `since` is the previous
//! page's `last_seq`. So that the server is not idle while the client
//! parses a page, [`Remote::changes_pages`] finds the page's `last_seq` in
//! its text first ([`feed_end`]: CouchDB writes it as the last member of the
//! answer, so it is found by looking back from the end), sends the request
//! for the next page at once, and only then parses the page. The full parse
//! has the last word: when it disagrees with what was found (or the text
//! cannot be parsed) the early request is dropped and the next page is asked
//! for again, the slow way.
//!
//! It owns the choice of each page's parameters ([`Plan`]): how many rows,
//! and whether they carry their documents. It does not look into documents
//! and keeps no more than one page ahead of what its consumer took.

use super::feed_query::FeedQuery;
use super::types::{ChangesPage, Seq};
use super::{Remote, RemoteError};
use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use std::time::Instant;
use tokio::task::JoinHandle;

/// Bytes of documents one page of the changes feed should carry at most
/// (CouchDB's replicator keeps its requests to a few MiB).
pub(crate) const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Rows of the first page that carries documents, before their size is known.
pub(crate) const FIRST_PAGE_ROWS: usize = 100;

impl Remote {
    /// The changes feed after `since` as a stream of pages of at most
    /// `batch_size` rows, in feed order. A page's request goes out as soon
    /// as the page before it has arrived (see the module doc), so besides
    /// the page the consumer holds, at most one more is requested or held.
    ///
    /// Pages carry their documents (`include_docs=true`) while the feed is
    /// mostly first revisions, the documents a replica can take from the
    /// feed without a `_bulk_get` (a cold load): the first page does when
    /// `since` is the start of the feed, and every next page does when at
    /// least half the rows of the page before were first revisions (read
    /// from the page's text when the next request goes out before the
    /// parse, from the parsed rows otherwise). An incremental
    /// pull's feed (updates, at generation 2 and above) is read without
    /// documents, which would be fetched again anyway.
    ///
    /// Pages are bounded by bytes as well as rows: a page that carries
    /// documents is measured (bytes of its answer per row), and later pages
    /// ask for no more rows than fit in 4 MiB at that size (the documents of
    /// a page are held until its batch commits). The first page with
    /// documents asks for at most 100 rows, before any size is known. A
    /// page with documents over [`RemoteConfig::max_response_bytes`] is
    /// asked for again without them, and so is the rest of the feed: the
    /// documents then go to `_bulk_get`, which splits a large answer.
    ///
    /// [`RemoteConfig::max_response_bytes`]: super::RemoteConfig::max_response_bytes
    pub(crate) fn changes_pages(
        &self,
        since: Seq,
        batch_size: usize,
        query: FeedQuery,
    ) -> impl Stream<Item = Result<ChangesPage, RemoteError>> + Send + 'static {
        let remote = self.clone();
        let query = std::sync::Arc::new(query);
        async_stream::try_stream! {
            let mut plan = Plan::new(batch_size, since == Seq::zero());
            let mut since = since;
            let mut ahead: Option<Ahead> = None;
            loop {
                // How long the consumer waits for the server, and how long a
                // page's parse takes: the pull's debug log says where a
                // page's time goes (`RUST_LOG=settee::remote::feed=debug`).
                let waiting = Instant::now();
                let early = ahead.is_some();
                let (limit, include_docs, answer) = match ahead.take() {
                    Some(a) if a.since == since => {
                        let (limit, include_docs) = (a.limit, a.include_docs);
                        (limit, include_docs, a.into_answer(&remote, &query).await)
                    }
                    // No early request, or one for another `since` (dropping
                    // it aborts it).
                    _ => {
                        let (limit, include_docs) = plan.next_request();
                        (limit, include_docs, remote.changes_text(&since, limit, include_docs, &query).await)
                    }
                };
                let asked = match answer {
                    Ok(bytes) => Answer { limit, include_docs, bytes },
                    // Documents too large to ride in the feed: the page is
                    // asked for again without them (ids and revisions only),
                    // and `_bulk_get` fetches them within the cap.
                    Err(RemoteError::TooLarge { .. }) if include_docs => {
                        tracing::info!("a changes page with its documents is over the response cap; reading the feed without documents");
                        plan.refuse_docs();
                        let bytes = remote.changes_text(&since, limit, false, &query).await?;
                        Answer { limit, include_docs: false, bytes }
                    }
                    Err(e) => Err(e)?,
                };
                let waited = waiting.elapsed();
                let parsing = Instant::now();
                let seen = scan_rows(&asked.bytes);
                if asked.include_docs {
                    plan.measured(asked.bytes.len(), seen.rows);
                }
                // A full page is probably not the last: ask for the next now,
                // planned from what this page's text shows.
                if seen.rows >= asked.limit {
                    if let Some(end) = feed_end(&asked.bytes).filter(|e| e.pending != Some(0)) {
                        plan.scanned(seen);
                        let (limit, include_docs) = plan.next_request();
                        ahead = Some(Ahead::send(&remote, end.last_seq, limit, include_docs, &query));
                    }
                }
                let page = match serde_json::from_slice::<ChangesPage>(&asked.bytes) {
                    Ok(page) => page,
                    Err(_) => {
                        // A body cut short, say: asked for again as the
                        // retry policy says, as any answer that does not parse.
                        ahead = None;
                        remote.changes_parsed(&asked, &since, &query).await?
                    }
                };
                if ahead.as_ref().is_some_and(|a| a.since != page.last_seq) {
                    tracing::debug!("the early request's since is not the page's last_seq; dropped");
                    ahead = None;
                }
                tracing::debug!(rows = page.results.len(), bytes = asked.bytes.len(),
                    early, ahead = ahead.is_some(), waited_us = waited.as_micros() as u64,
                    parsed_us = parsing.elapsed().as_micros() as u64, "changes page read");
                let done = page.results.len() < asked.limit || page.pending == Some(0);
                if page.results.is_empty() {
                    break;
                }
                plan.parsed(&page);
                since = page.last_seq.clone();
                yield page;
                if done {
                    break;
                }
            }
        }
    }

    /// The page `asked` holds, parsed; an answer that does not parse is one
    /// failed attempt of the retry policy, and the page is asked for again
    /// (as [`Remote::changes`] does).
    async fn changes_parsed(
        &self,
        asked: &Answer,
        since: &Seq,
        query: &FeedQuery,
    ) -> Result<ChangesPage, RemoteError> {
        let url = self.changes_url(since, Some(asked.limit), asked.include_docs, query);
        let method = query.method();
        let what = format!("{method} {url}");
        let mut first = Some(asked.bytes.clone());
        self.retrying(&what, || {
            let received = first.take();
            let (url, method) = (&url, &method);
            async move {
                let bytes = match received {
                    Some(bytes) => bytes,
                    None => {
                        self.send_once(method.clone(), url, query.body.as_ref(), false)
                            .await?
                    }
                };
                serde_json::from_slice(&bytes).map_err(|e| RemoteError::InvalidResponse {
                    method: method.to_string(),
                    url: url.to_string(),
                    bytes: bytes.len(),
                    detail: e.to_string(),
                })
            }
        })
        .await
    }

    /// One page of `_changes?style=all_docs` as text, unparsed (retried as
    /// every request is; see [`Remote::changes`] for the parsed form).
    async fn changes_text(
        &self,
        since: &Seq,
        limit: usize,
        include_docs: bool,
        query: &FeedQuery,
    ) -> Result<Bytes, RemoteError> {
        let url = self.changes_url(since, Some(limit), include_docs, query);
        self.send(query.method(), &url, query.body.as_ref(), false)
            .await
    }
}

/// A page's answer and what it was asked for with.
struct Answer {
    limit: usize,
    include_docs: bool,
    bytes: Bytes,
}

/// The request for the next page, sent before the page before it was
/// parsed; aborted when dropped.
struct Ahead {
    since: Seq,
    limit: usize,
    include_docs: bool,
    task: JoinHandle<Result<Bytes, RemoteError>>,
}

impl Ahead {
    /// Sends the request on its own task, so it goes on while the stream
    /// is not polled (its consumer busy with the page before).
    fn send(
        remote: &Remote,
        since: Seq,
        limit: usize,
        include_docs: bool,
        query: &std::sync::Arc<FeedQuery>,
    ) -> Self {
        let (remote, at, query) = (remote.clone(), since.clone(), query.clone());
        let task =
            tokio::spawn(
                async move { remote.changes_text(&at, limit, include_docs, &query).await },
            );
        Ahead {
            since,
            limit,
            include_docs,
            task,
        }
    }

    /// The answer; a task that did not finish (it cannot panic, but a
    /// runtime shutting down cancels it) is asked for again here.
    async fn into_answer(
        mut self,
        remote: &Remote,
        query: &FeedQuery,
    ) -> Result<Bytes, RemoteError> {
        match (&mut self.task).await {
            Ok(answer) => answer,
            Err(_) => {
                remote
                    .changes_text(&self.since, self.limit, self.include_docs, query)
                    .await
            }
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the next page is asked for with, from what earlier pages showed.
#[derive(Debug)]
struct Plan {
    batch_size: usize,
    include_docs: bool,
    /// Bytes of answer per row, last measured on a page with documents.
    row_bytes: Option<usize>,
    /// A page with documents was over the response cap: the rest of the
    /// feed is read without them.
    docs_refused: bool,
}

impl Plan {
    fn new(batch_size: usize, include_docs: bool) -> Self {
        Plan {
            batch_size: batch_size.max(1),
            include_docs,
            row_bytes: None,
            docs_refused: false,
        }
    }

    /// Rows to ask for and whether with documents.
    fn next_request(&self) -> (usize, bool) {
        let include_docs = self.include_docs && !self.docs_refused;
        (
            page_rows(self.batch_size, include_docs, self.row_bytes),
            include_docs,
        )
    }

    /// A page with documents was over the response cap: no later page asks
    /// for them (a feed of documents that large gains little from the fast
    /// path, and each refused page costs a request).
    fn refuse_docs(&mut self) {
        self.docs_refused = true;
    }

    /// A page with documents arrived: `bytes` of answer, about `rows` rows.
    fn measured(&mut self, bytes: usize, rows: usize) {
        if rows > 0 {
            self.row_bytes = Some(bytes.div_ceil(rows).max(1));
        }
    }

    /// A page's text was scanned (before the parse): as [`Plan::parsed`],
    /// from the rows its text shows.
    fn scanned(&mut self, seen: RowsSeen) {
        if seen.rows > 0 {
            self.include_docs = seen.first_only * 2 >= seen.rows;
        }
    }

    /// A page was parsed: documents are worth asking for while most rows
    /// are first revisions.
    fn parsed(&mut self, page: &ChangesPage) {
        let first = page
            .results
            .iter()
            .filter(|r| r.is_first_revision_only())
            .count();
        self.include_docs = first * 2 >= page.results.len();
    }
}

/// Rows to ask for: the batch size, bounded by what fits in
/// `MAX_PAGE_BYTES` at the last measured size per row.
fn page_rows(batch_size: usize, include_docs: bool, row_bytes: Option<usize>) -> usize {
    match row_bytes {
        Some(b) => batch_size.min((MAX_PAGE_BYTES / b).max(1)),
        None if include_docs => batch_size.min(FIRST_PAGE_ROWS),
        None => batch_size,
    }
}

/// What a page's text shows of its rows, without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowsSeen {
    /// About how many rows: the `"changes":[` keys. A document with a
    /// `changes` array counts twice (the page looks fuller: at worst one
    /// request too many, answered empty); a server that writes
    /// `"changes": [` counts none (no early request).
    rows: usize,
    /// Of those, the rows listing one leaf at generation 1
    /// (`"changes":[{"rev":"1-…"}]`), the documents the fast path takes from
    /// the feed ([`crate::ChangeRow::is_first_revision_only`]; a generation-1
    /// leaf is never a tombstone that a replication would make).
    first_only: usize,
}

fn scan_rows(text: &[u8]) -> RowsSeen {
    const KEY: &[u8] = br#""changes":["#;
    const FIRST: &[u8] = br#"{"rev":"1-"#;
    let mut seen = RowsSeen {
        rows: 0,
        first_only: 0,
    };
    for at in memchr::memmem::find_iter(text, KEY) {
        seen.rows += 1;
        let Some(rev) = text[at + KEY.len()..].strip_prefix(FIRST) else {
            continue;
        };
        // A revision id has no quote or backslash: its end is the next quote.
        if let Some(end) = memchr::memchr(b'"', rev) {
            if rev[end + 1..].starts_with(b"}]") {
                seen.first_only += 1;
            }
        }
    }
    seen
}

/// The end of a page, as its text states it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedEnd {
    last_seq: Seq,
    pending: Option<u64>,
}

/// Finds `last_seq` (and `pending`, when next to it) in a page's text
/// without parsing the rows: as the last members of the object (CouchDB,
/// PouchDB Server), or as its first member (a proxy that sorts keys).
/// `None` when the text has neither shape; the caller then waits for the
/// full parse.
fn feed_end(text: &[u8]) -> Option<FeedEnd> {
    end_member(text).or_else(|| first_member(text))
}

const LAST_SEQ_KEY: &[u8] = br#""last_seq""#;
const PENDING_KEY: &[u8] = br#""pending""#;

/// `..."last_seq":S}` or `..."last_seq":S,"pending":N}`. Inside a string
/// the key's quotes would be escaped, so the last verbatim `"last_seq"` is
/// a key; that what follows it closes the whole text makes it the page's.
fn end_member(text: &[u8]) -> Option<FeedEnd> {
    let at = memchr::memmem::rfind(text, LAST_SEQ_KEY)?;
    let (last_seq, rest) = member_value(&text[at + LAST_SEQ_KEY.len()..])?;
    let rest = skip_ws(rest);
    let (pending, rest) = match rest.split_first()? {
        (b'}', rest) => (None, rest),
        (b',', rest) => {
            let rest = skip_ws(rest).strip_prefix(PENDING_KEY)?;
            let (pending, rest) = member_value(rest)?;
            let rest = skip_ws(rest).strip_prefix(b"}")?;
            (Some(pending.as_u64()?), rest)
        }
        _ => return None,
    };
    skip_ws(rest).is_empty().then_some(FeedEnd {
        last_seq: Seq(last_seq),
        pending,
    })
}

/// `{"last_seq":S,...` or `{"last_seq":S,"pending":N,...`.
fn first_member(text: &[u8]) -> Option<FeedEnd> {
    let rest = skip_ws(skip_ws(text).strip_prefix(b"{")?).strip_prefix(LAST_SEQ_KEY)?;
    let (last_seq, rest) = member_value(rest)?;
    let rest = skip_ws(skip_ws(rest).strip_prefix(b",")?);
    let pending = match rest.strip_prefix(PENDING_KEY) {
        Some(rest) => {
            let (pending, rest) = member_value(rest)?;
            skip_ws(rest).strip_prefix(b",")?;
            Some(pending.as_u64()?)
        }
        None => None,
    };
    Some(FeedEnd {
        last_seq: Seq(last_seq),
        pending,
    })
}

/// After a key: `: value`, the value and the text after it.
fn member_value(text: &[u8]) -> Option<(Value, &[u8])> {
    let text = skip_ws(skip_ws(text).strip_prefix(b":")?);
    let mut values = serde_json::Deserializer::from_slice(text).into_iter::<Value>();
    let value = values.next()?.ok()?;
    let end = values.byte_offset();
    Some((value, &text[end..]))
}

fn skip_ws(text: &[u8]) -> &[u8] {
    let n = text
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .count();
    &text[n..]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn pages_are_bounded_by_bytes_once_a_size_is_known() {
        assert_eq!(page_rows(1000, false, None), 1000);
        assert_eq!(page_rows(1000, true, None), FIRST_PAGE_ROWS);
        assert_eq!(page_rows(25, true, None), 25);
        assert_eq!(page_rows(1000, true, Some(700)), 1000);
        assert_eq!(page_rows(1000, false, Some(1 << 20)), 4);
        assert_eq!(page_rows(1000, true, Some(64 << 20)), 1);
    }

    fn end(text: &str) -> Option<(Value, Option<u64>)> {
        let e = feed_end(text.as_bytes())?;
        // Whatever is found must be what the full parse says.
        let page: ChangesPage = serde_json::from_str(text).expect("test pages parse");
        assert_eq!(page.last_seq, e.last_seq, "{text}");
        assert_eq!(page.pending, e.pending, "{text}");
        Some((e.last_seq.0, e.pending))
    }

    #[test]
    fn last_seq_is_found_at_either_end_of_the_text() {
        let row = r#"{"id":"a","changes":[{"rev":"1-x"}],"doc":{"_id":"a","last_seq":9},"seq":1}"#;
        // PouchDB Server, CouchDB 1.x: an integer, last.
        assert_eq!(
            end(&format!(r#"{{"results":[{row}],"last_seq":115659}}"#)),
            Some((Value::from(115659), None))
        );
        // CouchDB 3: an opaque string, `pending` after it, newlines.
        let seq = "12-g1AAAACheJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMcoEQiQ1L9____szKYE5lygQLsZqYmBknJSZjKcRqRxwIkGRqA1H-oSSnrB5tkAtSUbGJMmr4UmP17yJPaf";
        assert_eq!(
            end(&format!(
                "{{\"results\":[\n{row}\n],\n\"last_seq\":\"{seq}\",\"pending\":0}}\n"
            )),
            Some((Value::from(seq), Some(0)))
        );
        // A proxy that sorts keys: first.
        assert_eq!(
            end(&format!(
                r#"{{"last_seq":"op-3","pending":7,"results":[{row}]}}"#
            )),
            Some((Value::from("op-3"), Some(7)))
        );
        assert_eq!(
            end(&format!(
                r#"{{ "last_seq" : [3, "x"] , "results":[{row}]}}"#
            )),
            Some((serde_json::json!([3, "x"]), None))
        );
        // An empty page.
        assert_eq!(
            end(r#"{"results":[],"last_seq":"5-abc"}"#),
            Some((Value::from("5-abc"), None))
        );
    }

    #[test]
    fn a_text_of_another_shape_is_left_to_the_full_parse() {
        for text in [
            // Cut short in the middle of the sequence.
            r#"{"results":[],"last_seq":"5-ab"#,
            // Something after the end.
            r#"{"results":[],"last_seq":5}{"#,
            r#"{"results":[],"last_seq":5,"pending":0,"x":1}"#,
            // A document's member, not the page's.
            r#"{"results":[{"id":"a","doc":{"last_seq":4}}]"#,
            r#"{"results":[{"id":"a","doc":{"last_seq":4}}],"x":1}"#,
            "",
            "not json",
        ] {
            assert_eq!(feed_end(text.as_bytes()), None, "{text}");
        }
        // Cut short right after a document's member: the end looks like a
        // page's, and only the full parse, which the stream waits for before
        // it keeps the early request, tells.
        let cut = r#"{"results":[{"id":"a","changes":[{"rev":"1-x"}],"doc":{"last_seq":4}"#;
        assert!(feed_end(cut.as_bytes()).is_some());
        assert!(serde_json::from_str::<ChangesPage>(cut).is_err());
        // Escaped inside a string, the key is not found.
        assert_eq!(
            feed_end(br#"{"results":[{"id":"a","doc":{"t":"\"last_seq\":4}"}}]}"#),
            None
        );
    }

    #[test]
    fn rows_are_counted_from_the_text() {
        let seen = scan_rows(
            br#"{"results":[{"id":"a","changes":[{"rev":"1-x"}],"seq":1},
            {"id":"b","changes":[{"rev":"2-y"}],"seq":2},
            {"id":"c","changes":[{"rev":"1-x"},{"rev":"1-z"}],"seq":3},
            {"id":"d","changes":[{"rev":"1-x"}],"doc":{"_id":"d","_rev":"1-x"},"seq":4}],"last_seq":4}"#,
        );
        assert_eq!(
            seen,
            RowsSeen {
                rows: 4,
                first_only: 2
            }
        );
        let count_rows = |text: &[u8]| scan_rows(text).rows;
        let row = r#"{"id":"a","changes":[{"rev":"1-x"}],"seq":1}"#;
        assert_eq!(
            count_rows(format!(r#"{{"results":[{row},{row},{row}],"last_seq":3}}"#).as_bytes()),
            3
        );
        assert_eq!(count_rows(br#"{"results":[],"last_seq":3}"#), 0);
        // Escaped in a string: not a key.
        assert_eq!(
            count_rows(br#"{"results":[{"doc":{"t":"\"changes\":["}}]}"#),
            0
        );
    }

    #[test]
    fn the_plan_follows_the_pages() {
        let mut plan = Plan::new(1000, true);
        assert_eq!(plan.next_request(), (FIRST_PAGE_ROWS, true));
        plan.measured(100 * 1100, 100);
        assert_eq!(plan.next_request(), (1000, true));
        plan.measured(40 * 100 * 1024, 40);
        assert_eq!(plan.next_request(), (40, true));
        let page: ChangesPage = serde_json::from_str(
            r#"{"results":[{"id":"a","changes":[{"rev":"2-x"}]},{"id":"b","changes":[{"rev":"3-x"}]},
                {"id":"c","changes":[{"rev":"1-x"}]}],"last_seq":3}"#,
        )
        .expect("parses");
        plan.parsed(&page);
        assert_eq!(plan.next_request(), (40, false));
        plan.scanned(RowsSeen {
            rows: 10,
            first_only: 5,
        });
        assert_eq!(plan.next_request(), (40, true));
        plan.scanned(RowsSeen {
            rows: 0,
            first_only: 0,
        });
        assert_eq!(plan.next_request(), (40, true));
        assert_eq!(Plan::new(1000, false).next_request(), (1000, false));
        // Once a page with documents was over the cap, none asks for them,
        // whatever the pages show (still as many rows as fit in 4 MiB at
        // the size measured: `_bulk_get` holds the same documents).
        plan.refuse_docs();
        assert_eq!(plan.next_request(), (40, false));
        plan.scanned(RowsSeen {
            rows: 10,
            first_only: 10,
        });
        assert_eq!(plan.next_request(), (40, false));
        let mut fresh = Plan::new(1000, true);
        fresh.refuse_docs();
        assert_eq!(fresh.next_request(), (1000, false));
    }
}
