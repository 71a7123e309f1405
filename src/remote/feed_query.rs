//! What a `_changes` request asks for beyond `since` and `limit`: the
//! server-side filter and which revisions each row lists, in the wire's
//! terms (query parameters, a JSON body). The pull decides what to ask
//! for (`replicate::filter`); this only says how it goes on the wire, so
//! the streamed feed, the paged one and their fallbacks ask alike.

use reqwest::{Method, Url};
use serde_json::Value;

/// The filter parameters of a changes request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FeedQuery {
    /// Query parameters added after `since`/`limit` (`filter=…` and the
    /// filter's own).
    pub(crate) params: Vec<(String, String)>,
    /// A JSON body (`doc_ids`, `selector`): the request is then a POST.
    pub(crate) body: Option<Value>,
    /// Only each document's winning revision (`style=main_only` and
    /// CouchDB 3.3's `winning_revs_only=true`) instead of every leaf.
    pub(crate) winners_only: bool,
}

impl FeedQuery {
    /// The whole feed, every leaf of every document.
    pub(crate) fn all() -> Self {
        FeedQuery::default()
    }

    /// GET, or POST when there is a body.
    pub(crate) fn method(&self) -> Method {
        match self.body {
            Some(_) => Method::POST,
            None => Method::GET,
        }
    }

    /// Adds which revisions each row lists (`style=all_docs`, or
    /// `winning_revs_only=true`) to `url`: the first parameters of a
    /// changes request, as they always were.
    pub(crate) fn apply_style(&self, url: &mut Url) {
        let mut q = url.query_pairs_mut();
        if self.winners_only {
            q.append_pair("winning_revs_only", "true");
        } else {
            q.append_pair("style", "all_docs");
        }
    }

    /// Adds the filter's parameters to `url`: the last ones.
    pub(crate) fn apply_filter(&self, url: &mut Url) {
        let mut q = url.query_pairs_mut();
        for (k, v) in &self.params {
            q.append_pair(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_body_makes_a_post_and_the_filter_follows_the_style() {
        let apply = |q: &FeedQuery| {
            let mut url = Url::parse("http://h/db/_changes").unwrap();
            q.apply_style(&mut url);
            url.query_pairs_mut().append_pair("since", "0");
            q.apply_filter(&mut url);
            url.query().unwrap_or("").to_owned()
        };
        assert_eq!(apply(&FeedQuery::all()), "style=all_docs&since=0");
        assert_eq!(FeedQuery::all().method(), Method::GET);
        let q = FeedQuery {
            params: vec![("filter".into(), "_selector".into())],
            body: Some(serde_json::json!({"selector": {"a": 1}})),
            winners_only: true,
        };
        assert_eq!(apply(&q), "winning_revs_only=true&since=0&filter=_selector");
        assert_eq!(q.method(), Method::POST);
    }
}
