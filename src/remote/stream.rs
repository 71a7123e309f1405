//! Reading the whole changes feed as one streamed request, as CouchDB's own
//! replicator does: `_changes?style=all_docs` without `limit`, its rows
//! taken from the body as they arrive and handed on in pages of
//! `batch_size` rows, each page's `last_seq` its last row's `seq` (a
//! sequence the server accepts as `since`).
//!
//! Why: every page of the paged feed re-opens the database's shards from
//! an opaque `since`; one request reads the feed once (issue 20). The
//! server writes rows as it goes (CouchDB one per line, PouchDB Server all
//! at once; the splitter below does not care where lines break), and the
//! body is read only as fast as the consumer takes pages, so TCP holds the
//! server back and memory stays at the pages in flight plus one row.
//!
//! What it owns: the request, the splitting of the body into rows
//! ([`RowSplitter`]), and starting again after a connection cut mid-body,
//! from the last page it handed on (rows after it were not handed on, and
//! are read again). What it leaves to others: a body whose head is not
//! CouchDB's (`{"results":[`) is read as pages instead
//! ([`Remote::changes_pages`]).

use super::body::RESPONSE_SETTING;
use super::client::transport_error;
use super::feed::MAX_PAGE_BYTES;
use super::feed_query::FeedQuery;
use super::types::{ChangeRow, ChangesPage, Seq};
use super::{Remote, RemoteError};
use futures::Stream;
use reqwest::Method;
use serde_json::Value;

/// What the splitter found next in the body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// One row's JSON text.
    Row(Vec<u8>),
    /// The end of `results`, and what the answer says after it
    /// (`last_seq`, when there).
    End(Option<Seq>),
}

/// Where the splitter is in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before `[` of `{"results":[`.
    Head,
    /// Between rows.
    Rows,
    /// Inside a row: the scan's nesting depth, and whether it is in a
    /// string (and just after a backslash).
    Row {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After `]`: the rest of the object.
    Tail,
}

/// Splits a `_changes` answer, fed in chunks, into rows; each byte is
/// scanned once, however the chunks cut the rows.
pub(crate) struct RowSplitter {
    buf: Vec<u8>,
    /// Where the row (or the part) being scanned starts in `buf`.
    start: usize,
    /// How far `buf` is scanned.
    at: usize,
    part: Part,
    /// The largest row kept, in bytes.
    max_row: usize,
}

/// Why a body cannot be split.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// The answer does not begin as CouchDB's does.
    NotAFeed,
    /// A row over the cap.
    RowTooLarge(usize),
    /// Bytes that are not JSON where a row should be.
    Malformed(&'static str),
}

impl RowSplitter {
    pub(crate) fn new(max_row: usize) -> Self {
        RowSplitter {
            buf: Vec::new(),
            start: 0,
            at: 0,
            part: Part::Head,
            max_row,
        }
    }

    /// Adds the next bytes of the body.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.at -= self.start;
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.at -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next row, if the bytes so far hold one; `done` says the body
    /// has ended (then the rest must be the answer's tail).
    pub(crate) fn next(&mut self, done: bool) -> Result<Option<Piece>, SplitError> {
        loop {
            match self.part {
                Part::Head => {
                    if !self.head()? {
                        return if done {
                            Err(SplitError::NotAFeed)
                        } else {
                            Ok(None)
                        };
                    }
                }
                Part::Rows => {
                    while let Some(&b) = self.buf.get(self.at) {
                        if b.is_ascii_whitespace() || b == b',' {
                            self.at += 1;
                        } else {
                            break;
                        }
                    }
                    self.start = self.at;
                    match self.buf.get(self.at) {
                        None if done => {
                            return Err(SplitError::Malformed("EOF inside the feed's results"))
                        }
                        None => return Ok(None),
                        Some(b'{') => {
                            self.at += 1;
                            self.part = Part::Row {
                                depth: 1,
                                in_string: false,
                                escaped: false,
                            };
                        }
                        Some(b']') => {
                            self.at += 1;
                            self.start = self.at;
                            self.part = Part::Tail;
                        }
                        Some(_) => {
                            return Err(SplitError::Malformed("a row that is not an object"))
                        }
                    }
                }
                Part::Row { .. } => {
                    return match self.scan_row()? {
                        Some(row) => Ok(Some(Piece::Row(row))),
                        None if done => Err(SplitError::Malformed("EOF inside a row of the feed")),
                        None => Ok(None),
                    };
                }
                Part::Tail => {
                    if !done {
                        self.at = self.buf.len();
                        return Ok(None);
                    }
                    return Ok(Some(Piece::End(self.tail_last_seq())));
                }
            }
        }
    }

    /// Reads `{"results":[`; false when more bytes are needed.
    fn head(&mut self) -> Result<bool, SplitError> {
        let text = &self.buf[self.at..];
        let skip_ws = |t: &[u8]| t.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let mut i = skip_ws(text);
        for want in [&b"{"[..], b"\"results\"", b":", b"["] {
            let have = &text[i..];
            if have.len() < want.len() {
                return if want.starts_with(have) {
                    Ok(false)
                } else {
                    Err(SplitError::NotAFeed)
                };
            }
            if !have.starts_with(want) {
                return Err(SplitError::NotAFeed);
            }
            i += want.len();
            i += skip_ws(&text[i..]);
        }
        self.at += i;
        self.start = self.at;
        self.part = Part::Rows;
        Ok(true)
    }

    /// Scans on from where the last call stopped; the row when its
    /// closing brace is in.
    fn scan_row(&mut self) -> Result<Option<Vec<u8>>, SplitError> {
        let Part::Row {
            mut depth,
            mut in_string,
            mut escaped,
        } = self.part
        else {
            return Ok(None);
        };
        while let Some(&b) = self.buf.get(self.at) {
            self.at += 1;
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        let len = self.at - self.start;
                        if len > self.max_row {
                            return Err(SplitError::RowTooLarge(len));
                        }
                        let row = self.buf[self.start..self.at].to_vec();
                        self.start = self.at;
                        self.part = Part::Rows;
                        return Ok(Some(row));
                    }
                }
                _ => {}
            }
        }
        self.part = Part::Row {
            depth,
            in_string,
            escaped,
        };
        let len = self.at - self.start;
        if len > self.max_row {
            return Err(SplitError::RowTooLarge(len));
        }
        Ok(None)
    }

    /// `last_seq` of the answer's tail (`,"last_seq":…,"pending":…}`).
    fn tail_last_seq(&self) -> Option<Seq> {
        let tail = std::str::from_utf8(&self.buf[self.start..]).ok()?;
        let members = tail.trim_start().strip_prefix(',')?;
        let object: serde_json::Map<String, Value> =
            serde_json::from_str(&format!("{{{members}")).ok()?;
        object.get("last_seq").cloned().map(Seq)
    }
}

impl Remote {
    /// The changes feed after `since`, read with one streamed request, as
    /// pages of `batch_size` rows, or fewer when they reach 4 MiB (see the
    /// module doc). The rows carry
    /// their documents when `since` is the start of the feed (a cold load
    /// takes first revisions straight from the feed, as
    /// [`Remote::changes_pages`] does), unless a row with its document is
    /// over [`RemoteConfig::max_response_bytes`]: the feed is then asked
    /// for again without documents from the last page handed on.
    ///
    /// A connection cut mid-body (or a body that stops parsing) asks again
    /// from the last page handed on, as the client's [`RetryPolicy`] says
    /// (its retries count the cuts with no page handed on in between, its
    /// pauses are taken between them); a server whose answer does not
    /// begin as CouchDB's is read as pages instead.
    ///
    /// [`RetryPolicy`]: super::RetryPolicy
    ///
    /// [`RemoteConfig::max_response_bytes`]: super::RemoteConfig::max_response_bytes
    pub(crate) fn changes_stream(
        &self,
        since: Seq,
        batch_size: usize,
        query: FeedQuery,
        live: Option<Live>,
    ) -> impl Stream<Item = Result<ChangesPage, RemoteError>> + Send + 'static {
        let remote = self.clone();
        async_stream::try_stream! {
            let mut include_docs = since == Seq::zero();
            let mut since = since;
            let mut cuts = 0u32;
            // Live: after the feed's end, long polls from there on.
            let mut waiting = false;
            'request: loop {
                let url = remote.changes_stream_url(&since, include_docs, &query, live.filter(|_| waiting));
                let what = format!("{} {url}", query.method());
                let opened = remote.retrying(&what, || remote.open_feed(&url, &query)).await;
                let mut resp = match opened {
                    Ok(resp) => resp,
                    Err(e) if live.is_some() && e.is_transient() => {
                        reconnect(&remote, &mut cuts, e).await;
                        continue 'request;
                    }
                    Err(e) => Err(e)?,
                };
                let max_row = usize::try_from(remote.max_response_bytes()).unwrap_or(usize::MAX);
                let mut splitter = RowSplitter::new(max_row);
                let mut rows: Vec<ChangeRow> = Vec::with_capacity(batch_size.min(10_000));
                let mut page_bytes = 0usize;
                let mut done = false;
                loop {
                    let piece = match splitter.next(done) {
                        Ok(Some(piece)) => piece,
                        Ok(None) => {
                            match resp.chunk().await {
                                Ok(Some(chunk)) => splitter.push(&chunk),
                                Ok(None) => done = true,
                                Err(e) => {
                                    let e = transport_error(&query.method(), &url, e);
                                    match live {
                                        Some(_) if e.is_transient() => reconnect(&remote, &mut cuts, e).await,
                                        _ => cut(&remote, &mut cuts, e).await?,
                                    }
                                    continue 'request;
                                }
                            }
                            continue;
                        }
                        Err(SplitError::NotAFeed) if !waiting => {
                            tracing::info!(%url, "the changes feed does not read as CouchDB's; reading it as pages");
                            let pages = remote.changes_pages(since.clone(), batch_size, query.clone());
                            futures::pin_mut!(pages);
                            while let Some(page) = futures::StreamExt::next(&mut pages).await {
                                let page = page?;
                                since = page.last_seq.clone();
                                yield page;
                            }
                            if live.is_none() {
                                break 'request;
                            }
                            waiting = true;
                            continue 'request;
                        }
                        Err(SplitError::NotAFeed) => {
                            cut(&remote, &mut cuts, invalid(&url, "a long poll that does not read as a changes feed".to_owned())).await?;
                            continue 'request;
                        }
                        Err(SplitError::RowTooLarge(bytes)) if include_docs => {
                            tracing::info!(bytes, "a change row with its document is over the response cap; reading the feed without documents");
                            include_docs = false;
                            continue 'request;
                        }
                        Err(SplitError::RowTooLarge(bytes)) => {
                            tracing::warn!(bytes, "a change row is over the response cap");
                            Err(RemoteError::TooLarge {
                                method: query.method().to_string(),
                                url: url.to_string(),
                                limit: remote.max_response_bytes(),
                                setting: RESPONSE_SETTING,
                            })?
                        }
                        Err(SplitError::Malformed(detail)) => {
                            cut(&remote, &mut cuts, invalid(&url, detail.to_owned())).await?;
                            continue 'request;
                        }
                    };
                    match piece {
                        Piece::Row(text) => {
                            let row: ChangeRow = match serde_json::from_slice(&text) {
                                Ok(row) => row,
                                Err(e) => {
                                    cut(&remote, &mut cuts, invalid(&url, e.to_string())).await?;
                                    continue 'request;
                                }
                            };
                            rows.push(row);
                            page_bytes += text.len();
                            if rows.len() >= batch_size || page_bytes >= MAX_PAGE_BYTES {
                                page_bytes = 0;
                                let page = page_of(std::mem::take(&mut rows), None, &url)?;
                                since = page.last_seq.clone();
                                cuts = 0;
                                yield page;
                            }
                        }
                        Piece::End(None) => Err(RemoteError::InvalidResponse {
                            method: query.method().to_string(),
                            url: url.to_string(),
                            bytes: 0,
                            detail: "the changes feed ends without last_seq; is this a CouchDB server?".to_owned(),
                        })?,
                        Piece::End(Some(last_seq)) => {
                            cuts = 0;
                            // An end past every row (a filter that passed
                            // none of the last ones) is worth a checkpoint
                            // too: the next pull does not read them again.
                            if !rows.is_empty() || last_seq != since {
                                since = last_seq.clone();
                                yield page_of(rows, Some(last_seq), &url)?;
                            }
                            if live.is_none() {
                                break 'request;
                            }
                            waiting = true;
                            include_docs = false;
                            continue 'request;
                        }
                    }
                }
            }
        }
    }

    /// `_changes?feed=normal` after `since` as `query` asks, without
    /// `limit`; a long poll with `live`'s heartbeat when given.
    fn changes_stream_url(
        &self,
        since: &Seq,
        include_docs: bool,
        query: &FeedQuery,
        live: Option<Live>,
    ) -> reqwest::Url {
        let mut url = self.changes_url(since, None, include_docs, query);
        match live {
            None => url.query_pairs_mut().append_pair("feed", "normal"),
            Some(live) => url
                .query_pairs_mut()
                .append_pair("feed", "longpoll")
                .append_pair("heartbeat", &live.heartbeat.as_millis().to_string()),
        };
        url
    }
}

impl Remote {
    /// The pause before a live feed asks again after `failures` transient
    /// failures in a row: the retry policy's pause for that many, at most
    /// its last, with its jitter. A live feed never gives up.
    pub(crate) fn live_pause(&self, failures: u32, e: &RemoteError) -> std::time::Duration {
        let policy = self.retry_policy();
        policy.pause(failures.min(policy.max_retries.max(1)), e)
    }

    /// Waits until the changes feed has something after `since`: one long
    /// poll (`feed=longpoll&limit=1`, the server writing a newline every
    /// `heartbeat` meanwhile). `Ok(true)` when a change is there, `Ok(false)`
    /// when the poll ended without one (ask again). For a caller that then
    /// pulls (the sync service's live mode), so it reads no documents.
    pub(crate) async fn wait_for_change(
        &self,
        since: &Seq,
        heartbeat: std::time::Duration,
    ) -> Result<bool, RemoteError> {
        let mut url = self.changes_url(since, Some(1), false, &FeedQuery::all());
        url.query_pairs_mut()
            .append_pair("feed", "longpoll")
            .append_pair("heartbeat", &heartbeat.as_millis().to_string());
        let resp = self.open_feed(&url, &FeedQuery::all()).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&Method::GET, &url, e))?;
        let page: ChangesPage =
            serde_json::from_slice(&bytes).map_err(|e| invalid(&url, e.to_string()))?;
        Ok(!page.results.is_empty())
    }
}

/// A feed that goes on after its end: each request after the first is a
/// long poll, answered when there is a change, the server writing a
/// newline every `heartbeat` while there is none (so a dead connection
/// shows as a read timeout, not a wait for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live {
    pub(crate) heartbeat: std::time::Duration,
}

/// A live feed never gives up on a transient failure (the server down,
/// the network gone): it waits the retry policy's pause for the failures
/// so far, at most its last, with its jitter, and asks again.
async fn reconnect(remote: &Remote, cuts: &mut u32, e: RemoteError) {
    *cuts = cuts.saturating_add(1);
    let pause = remote.live_pause(*cuts, &e);
    tracing::warn!(error = %e, failures = *cuts, ?pause, "the live changes feed failed; asking again after a pause");
    tokio::time::sleep(pause).await;
}

/// One more cut in a row: `e` once the retry policy's retries are spent
/// (or when it is not transient), else the policy's pause before asking
/// again.
async fn cut(remote: &Remote, cuts: &mut u32, e: RemoteError) -> Result<(), RemoteError> {
    let policy = remote.retry_policy();
    *cuts += 1;
    if !e.is_transient() || *cuts > policy.max_retries {
        return Err(e);
    }
    tracing::warn!(error = %e, attempt = *cuts, "the changes feed was cut; asking again from the last page");
    tokio::time::sleep(policy.pause(*cuts, &e)).await;
    Ok(())
}

/// A body that does not read as a changes feed (one transient failure).
fn invalid(url: &reqwest::Url, detail: String) -> RemoteError {
    RemoteError::InvalidResponse {
        method: Method::GET.to_string(),
        url: url.to_string(),
        bytes: 0,
        detail,
    }
}

/// A page of `rows`: its `last_seq` is the feed's own when given (the end),
/// else its last row's.
fn page_of(
    rows: Vec<ChangeRow>,
    last_seq: Option<Seq>,
    url: &reqwest::Url,
) -> Result<ChangesPage, RemoteError> {
    let last_seq = last_seq
        .or_else(|| rows.last().and_then(|r| r.seq.clone()))
        .ok_or_else(|| invalid(url, "a change row without its seq".to_owned()))?;
    Ok(ChangesPage {
        results: rows,
        last_seq,
        pending: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// Splits `text` fed in chunks of `n` bytes.
    fn split(text: &str, n: usize) -> Result<Vec<Piece>, SplitError> {
        let mut s = RowSplitter::new(1 << 20);
        let mut out = Vec::new();
        let bytes = text.as_bytes();
        let mut fed = 0;
        loop {
            let done = fed >= bytes.len();
            match s.next(done)? {
                Some(p @ Piece::End(_)) => {
                    out.push(p);
                    return Ok(out);
                }
                Some(p) => out.push(p),
                None => {
                    let end = (fed + n).min(bytes.len());
                    s.push(&bytes[fed..end]);
                    fed = end;
                }
            }
        }
    }

    const COUCH: &str = "{\"results\":[\n{\"seq\":\"1-g1\",\"id\":\"a\",\"changes\":[{\"rev\":\"1-x\"}]},\n{\"seq\":\"2-g1\",\"id\":\"b }{\\\"\",\"changes\":[{\"rev\":\"1-y\"}],\"doc\":{\"t\":\"]}\\\\\"}}\n],\n\"last_seq\":\"2-g1\",\"pending\":0}\n";

    #[test]
    fn rows_are_split_wherever_the_chunks_cut_them() {
        for n in [1, 2, 3, 7, 64, 4096] {
            let pieces = split(COUCH, n).unwrap();
            assert_eq!(pieces.len(), 3, "chunks of {n}");
            let Piece::Row(b) = &pieces[1] else { panic!() };
            let row: ChangeRow = serde_json::from_slice(b).unwrap();
            assert_eq!(row.id, "b }{\"");
            assert_eq!(row.doc.unwrap().get(), r#"{"t":"]}\\"}"#);
            assert_eq!(pieces[2], Piece::End(Some(Seq(Value::from("2-g1")))));
        }
        // PouchDB Server: one line, numbers.
        let pouch = r#"{"results":[{"seq":1,"id":"a","changes":[{"rev":"1-x"}]}],"last_seq":1}"#;
        let pieces = split(pouch, 5).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[1], Piece::End(Some(Seq(Value::from(1)))));
        let empty = split("{\"results\":[\n\n],\n\"last_seq\":0}", 3).unwrap();
        assert_eq!(empty, vec![Piece::End(Some(Seq(Value::from(0))))]);
    }

    #[test]
    fn what_is_not_a_feed_or_is_cut_short_is_an_error() {
        assert_eq!(
            split(r#"{"last_seq":1,"results":[]}"#, 4),
            Err(SplitError::NotAFeed)
        );
        assert_eq!(split("<html>", 4), Err(SplitError::NotAFeed));
        assert_eq!(split("", 4), Err(SplitError::NotAFeed));
        let cut = &COUCH[..COUCH.find("\"changes\":[{\"rev\":\"1-y").unwrap()];
        assert!(matches!(split(cut, 8), Err(SplitError::Malformed(_))));
        assert!(matches!(
            split("{\"results\":[1]}", 8),
            Err(SplitError::Malformed(_))
        ));
        let mut s = RowSplitter::new(10);
        s.push(br#"{"results":[{"seq":1,"id":"a long id","#);
        assert_eq!(s.next(false), Err(SplitError::RowTooLarge(26)));
        // Whole in one chunk, too.
        let mut s = RowSplitter::new(10);
        s.push(br#"{"results":[{"seq":1,"id":"a long id"}]}"#);
        assert_eq!(s.next(true), Err(SplitError::RowTooLarge(26)));
    }
}
