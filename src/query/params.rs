//! CouchDB's query parameters as `_all_docs` and `GET /db/{id}` read them:
//! a query string split and decoded as CouchDB's HTTP layer (mochiweb)
//! decodes it, or a JSON object whose values are already decoded, each
//! value typed with the error CouchDB answers for a bad one.
//!
//! Both sources become a list of `(name, Param)` pairs in the order given:
//! CouchDB applies parameters in order, so `key=…&startkey=…` and
//! `startkey=…&key=…` differ, and a later repeat wins.

use super::QueryError;
use serde_json::Value;

/// One parameter value: raw text from a query string (JSON parameters
/// still to be decoded) or an already decoded JSON value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Raw(&'a str),
    Json(&'a Value),
}

/// `name=value` pairs of a query string (with or without the leading
/// `?`), `+` and percent escapes decoded as mochiweb's `parse_qs` does.
pub(crate) fn split_query_string(qs: &str) -> Result<Vec<(String, String)>, QueryError> {
    let decode = |s: &str| -> Result<String, QueryError> {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| QueryError::bad("bad_request", "invalid UTF-8 in the query string"))
    };
    qs.trim_start_matches('?')
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The members of a JSON object of parameters, in their order.
pub(crate) fn json_members(params: &Value) -> Result<Vec<(&str, Param<'_>)>, QueryError> {
    let obj = params.as_object().ok_or_else(|| {
        QueryError::bad(
            "bad_request",
            "query parameters must be a JSON object, e.g. {\"limit\": 10}",
        )
    })?;
    Ok(obj
        .iter()
        .map(|(k, v)| (k.as_str(), Param::Json(v)))
        .collect())
}

/// The pairs of [`split_query_string`] as parameters.
pub(crate) fn raw_members(pairs: &[(String, String)]) -> Vec<(&str, Param<'_>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), Param::Raw(v.as_str())))
        .collect()
}

/// How a value shows in CouchDB's messages: Erlang's `~p` of the text
/// (a quoted string) or of the decoded JSON.
fn shown(p: Param<'_>) -> String {
    match p {
        Param::Raw(s) => format!("{s:?}"),
        Param::Json(v) => v.to_string(),
    }
}

impl Param<'_> {
    /// A view-style boolean (`_all_docs`): `true`/`false` in any case, or
    /// a JSON boolean; anything else is CouchDB's `query_parse_error`.
    pub(crate) fn boolean(self) -> Result<bool, QueryError> {
        let text = match self {
            Param::Json(Value::Bool(b)) => return Ok(*b),
            Param::Json(Value::String(s)) => s.as_str(),
            Param::Raw(s) => s,
            Param::Json(_) => "",
        };
        match text.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(QueryError::bad(
                "query_parse_error",
                format!("Invalid boolean parameter: {}", shown(self)),
            )),
        }
    }

    /// A document-read flag (`GET /db/{id}`): CouchDB turns an option on
    /// for the exact text `true` and ignores any other text; a JSON value
    /// must be a boolean.
    pub(crate) fn flag(self, name: &str) -> Result<bool, QueryError> {
        match self {
            Param::Raw(s) => Ok(s == "true"),
            Param::Json(Value::Bool(b)) => Ok(*b),
            Param::Json(v) => Err(QueryError::bad(
                "bad_request",
                format!("`{name}` must be true or false, not {v}"),
            )),
        }
    }

    /// A non-negative integer (`limit`, `skip`), with CouchDB's messages.
    pub(crate) fn pos_int(self) -> Result<usize, QueryError> {
        let n: Option<i128> = match self {
            Param::Raw(s) => s.parse().ok(),
            Param::Json(v) => v.as_i64().map(i128::from),
        };
        let n = n.ok_or_else(|| {
            QueryError::bad(
                "query_parse_error",
                format!("Invalid value for integer: {}", shown(self)),
            )
        })?;
        if n < 0 {
            return Err(QueryError::bad(
                "query_parse_error",
                format!("Invalid value for positive integer: {}", shown(self)),
            ));
        }
        // Larger than memory can hold rows for: as good as no limit.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A JSON value (`key`, `startkey`, `keys`, `open_revs`): decoded from
    /// the text of a query string.
    pub(crate) fn json(self) -> Result<Value, QueryError> {
        match self {
            Param::Json(v) => Ok(v.clone()),
            Param::Raw(s) => serde_json::from_str(s)
                .map_err(|_| QueryError::bad("bad_request", "invalid UTF-8 JSON")),
        }
    }

    /// A plain string (`startkey_docid`): the text itself, not JSON.
    pub(crate) fn string(self, name: &str) -> Result<String, QueryError> {
        match self {
            Param::Raw(s) => Ok(s.to_owned()),
            Param::Json(Value::String(s)) => Ok(s.clone()),
            Param::Json(_) => Err(QueryError::bad(
                "query_parse_error",
                format!("`{name}` must be a string."),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn query_strings_decode_as_couchdb_reads_them() {
        let pairs = split_query_string("?key=%22a+b%2Bc%22&&flag&x=%C3%A9").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("key".to_owned(), "\"a b+c\"".to_owned()),
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), "é".to_owned()),
            ]
        );
        assert!(split_query_string("x=%FF").is_err());
    }

    #[test]
    fn values_are_typed_with_couchdbs_errors() {
        assert!(Param::Raw("TRUE").boolean().unwrap());
        assert!(!Param::Json(&json!(false)).boolean().unwrap());
        let e = Param::Raw("yes").boolean().unwrap_err();
        assert_eq!(e.reason(), "Invalid boolean parameter: \"yes\"");
        assert_eq!(e.error(), "query_parse_error");
        assert_eq!(Param::Raw("12").pos_int().unwrap(), 12);
        assert_eq!(
            Param::Raw("-1").pos_int().unwrap_err().reason(),
            "Invalid value for positive integer: \"-1\""
        );
        assert_eq!(
            Param::Raw("1.5").pos_int().unwrap_err().reason(),
            "Invalid value for integer: \"1.5\""
        );
        assert_eq!(Param::Raw("[1, \"a\"]").json().unwrap(), json!([1, "a"]));
        assert_eq!(
            Param::Raw("a").json().unwrap_err().reason(),
            "invalid UTF-8 JSON"
        );
        assert!(Param::Raw("True").flag("x").is_ok_and(|b| !b));
        assert!(Param::Json(&json!(1)).flag("x").is_err());
    }
}
