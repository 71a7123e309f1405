//! Where a remote database lives: its URL split into server root, database
//! name and credentials, and the one place document ids become URL paths.
//!
//! Credentials are taken out of the URL as soon as it is parsed and kept
//! only here, so nothing else (logs, errors, stored metadata, replication
//! ids) can ever see them: [`Endpoint`]'s `Display` and every URL it hands
//! out are credential-free.

use super::RemoteError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use url::Url;

/// Everything but RFC 3986's unreserved characters is escaped in a path
/// segment: `a/b` → `a%2Fb`, `+` → `%2B`, `%` → `%25`, `é` → `%C3%A9`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Basic-auth credentials for a remote.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A remote CouchDB database: `http://[user:pass@]host:port[/prefix]/db`.
///
/// ```
/// use settee::Endpoint;
///
/// let ep = Endpoint::parse("http://admin:secret@127.0.0.1:5984/course%2F1").unwrap();
/// assert_eq!(ep.db_name(), "course/1");
/// assert_eq!(ep.to_string(), "http://127.0.0.1:5984/course%2F1");
/// assert_eq!(ep.doc_url("a/b").as_str(), "http://127.0.0.1:5984/course%2F1/a%2Fb");
/// assert_eq!(ep.doc_url("_design/elo").as_str(), "http://127.0.0.1:5984/course%2F1/_design/elo");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    server: Url,
    db_name: String,
    credentials: Option<Credentials>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.to_string())
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.db_url().as_str())
    }
}

/// Redacts anything that may be credentials (all before the last `@`, after
/// a `scheme://` if there is one) from a URL-ish string we could not parse,
/// for errors: `admin:secret@host/db` and `http//u:p@h/db` leak nothing.
pub(crate) fn redact(raw: &str) -> String {
    let Some(at) = raw.rfind('@') else {
        return raw.to_owned();
    };
    let keep = match raw.find("://") {
        Some(scheme_end) if scheme_end < at => scheme_end + 3,
        _ => 0,
    };
    format!("{}***@{}", &raw[..keep], &raw[at + 1..])
}

/// Whether a URL path can name this document id or attachment name: a
/// segment `.` or `..` (even written `%2e`) is removed from every URL path
/// by the URL standard, so no request can reach such a document one by one.
pub(crate) fn addressable(id_or_name: &str, split_slashes: bool) -> bool {
    let dot = |s: &str| s == "." || s == "..";
    if split_slashes {
        return !id_or_name.split('/').any(dot);
    }
    let rest = ["_design/", "_local/"]
        .iter()
        .find_map(|p| id_or_name.strip_prefix(p))
        .unwrap_or(id_or_name);
    !dot(rest)
}

impl Endpoint {
    /// Parses a database URL. The last path segment is the database name
    /// (percent-decoded: a name with `/` is written `%2F`); anything before
    /// it is a path prefix of the server (CouchDB behind a reverse proxy).
    pub fn parse(raw: &str) -> Result<Self, RemoteError> {
        let invalid = |reason: &str| RemoteError::InvalidUrl {
            url: redact(raw),
            reason: reason.to_owned(),
        };
        let mut url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a database URL takes no query or fragment"));
        }
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| invalid("the credentials are not valid UTF-8"))
            };
            Some(Credentials {
                username: decode(url.username())?,
                password: decode(url.password().unwrap_or(""))?,
            })
        };
        // Clearing cannot fail for http(s) URLs with a host, checked above.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut segments: Vec<String> = url
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let db_segment = segments.pop().ok_or_else(|| {
            invalid("the URL names no database: expected http://host:5984/<database>")
        })?;
        let db_name = percent_encoding::percent_decode_str(&db_segment)
            .decode_utf8()
            .map_err(|_| invalid("the database name is not valid UTF-8"))?
            .into_owned();
        // CouchDB's own databases can be replicated; other `_` names are
        // endpoints (`_all_dbs`, `_utils`, ...), not databases.
        if db_name.starts_with('_') && !matches!(db_name.as_str(), "_users" | "_replicator") {
            return Err(invalid(
                "the URL names a system endpoint, not a database (names start with a letter)",
            ));
        }
        let mut prefix = String::from("/");
        for s in &segments {
            prefix.push_str(s);
            prefix.push('/');
        }
        url.set_path(&prefix);
        Ok(Endpoint {
            server: url,
            db_name,
            credentials,
        })
    }

    /// Replaces the credentials (e.g. from a command-line option).
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Merges credentials given apart from the URL (command-line options,
    /// configuration) over those of the URL: each of `username` and
    /// `password` given replaces the URL's, the other is kept (empty when
    /// the URL had none). With neither given the endpoint is unchanged.
    ///
    /// ```
    /// use settee::Endpoint;
    ///
    /// let ep = Endpoint::parse("http://admin:old@127.0.0.1:5984/course").unwrap();
    /// let ep = ep.merge_credentials(None, Some("new".to_owned()));
    /// let c = ep.credentials().unwrap();
    /// assert_eq!((c.username.as_str(), c.password.as_str()), ("admin", "new"));
    /// ```
    pub fn merge_credentials(self, username: Option<String>, password: Option<String>) -> Self {
        if username.is_none() && password.is_none() {
            return self;
        }
        let from_url = self.credentials.clone();
        let username = username
            .or_else(|| from_url.as_ref().map(|c| c.username.clone()))
            .unwrap_or_default();
        let password = password
            .or_else(|| from_url.map(|c| c.password))
            .unwrap_or_default();
        self.with_credentials(Some(Credentials { username, password }))
    }

    /// The database name, decoded.
    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// The credentials to send, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The server root, credential-free, ending in `/`.
    pub fn server_url(&self) -> &Url {
        &self.server
    }

    /// The database URL, credential-free.
    pub fn db_url(&self) -> Url {
        self.join(&[&utf8_percent_encode(&self.db_name, SEGMENT).to_string()])
    }

    /// `host:port` of the server, for messages.
    pub fn authority(&self) -> String {
        match (self.server.host_str(), self.server.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => self.server.to_string(),
        }
    }

    fn join(&self, encoded: &[&str]) -> Url {
        let mut url = self.server.clone();
        let mut path = url.path().to_owned();
        path.push_str(&encoded.join("/"));
        url.set_path(&path);
        url
    }

    fn db_segment(&self) -> String {
        utf8_percent_encode(&self.db_name, SEGMENT).to_string()
    }

    /// `{db}/{rest}` where `rest` is already a valid path (`_changes`, `_bulk_get`).
    pub(crate) fn db_path(&self, rest: &str) -> Url {
        self.join(&[&self.db_segment(), rest])
    }

    /// The URL of a document. `_design/` and `_local/` keep their slash (as
    /// CouchDB routes them); everything else in the id is escaped.
    pub fn doc_url(&self, id: &str) -> Url {
        self.join(&[&self.db_segment(), &encode_doc_id(id)])
    }

    /// The URL of an attachment; `/` inside its name is kept (CouchDB allows
    /// attachment names that look like paths), all else is escaped.
    pub fn attachment_url(&self, id: &str, name: &str) -> Url {
        let name: Vec<String> = name
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        self.join(&[&self.db_segment(), &encode_doc_id(id), &name.join("/")])
    }
}

fn encode_doc_id(id: &str) -> String {
    for prefix in ["_design/", "_local/"] {
        if let Some(rest) = id.strip_prefix(prefix) {
            return format!("{prefix}{}", utf8_percent_encode(rest, SEGMENT));
        }
    }
    utf8_percent_encode(id, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splits_credentials_prefix_and_name() {
        let ep = Endpoint::parse("https://u%40x:p%3Aw@example.com/couch/my%2Fdb/").unwrap();
        assert_eq!(ep.db_name(), "my/db");
        assert_eq!(
            ep.credentials(),
            Some(&Credentials {
                username: "u@x".into(),
                password: "p:w".into()
            })
        );
        assert_eq!(ep.server_url().as_str(), "https://example.com/couch/");
        assert_eq!(ep.to_string(), "https://example.com/couch/my%2Fdb");
        assert!(!format!("{ep:?}").contains("p:w"));
    }

    #[test]
    fn encodes_hostile_ids() {
        let ep = Endpoint::parse("http://h:1/db").unwrap();
        let cases = [
            ("a/b", "a%2Fb"),
            ("with space", "with%20space"),
            ("plus+sign", "plus%2Bsign"),
            ("100%", "100%25"),
            ("q?x#y", "q%3Fx%23y"),
            ("unicodé", "unicod%C3%A9"),
            ("_design/with/slash", "_design/with%2Fslash"),
            ("_local/x y", "_local/x%20y"),
        ];
        for (id, want) in cases {
            assert_eq!(
                ep.doc_url(id).as_str(),
                format!("http://h:1/db/{want}"),
                "{id}"
            );
        }
        assert_eq!(
            ep.attachment_url("d", "img/a b.png").as_str(),
            "http://h:1/db/d/img/a%20b.png"
        );
    }

    #[test]
    fn rejects_bad_urls_without_leaking_passwords() {
        for bad in [
            "not a url",
            "ftp://h/db",
            "http://h:5984",
            "http://h:5984/",
            "http://h/_all_dbs",
            "http://h/db?x=1",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(RemoteError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        for leaky in [
            "http://u:hunter2@/db",
            "admin:hunter2@127.0.0.1:5984/db",
            "http//admin:hunter2@127.0.0.1:5984/db",
            "ftp://admin:hunter2@h/db",
        ] {
            let err = Endpoint::parse(leaky).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn couchdbs_own_databases_can_be_replicated() {
        assert_eq!(
            Endpoint::parse("http://h/_users").unwrap().db_name(),
            "_users"
        );
        assert!(Endpoint::parse("http://h/_replicator").is_ok());
        assert!(Endpoint::parse("http://h/_utils").is_err());
    }

    #[test]
    fn dot_segments_cannot_be_addressed() {
        for id in [".", "..", "_design/..", "_local/."] {
            assert!(!addressable(id, false), "{id}");
        }
        for id in ["...", "a/..", "./a", ".a", "_design/x"] {
            assert!(addressable(id, false), "{id}");
        }
        assert!(!addressable("a/../b", true));
        assert!(!addressable("..", true));
        assert!(addressable("img/a.b/c", true));
    }
}
