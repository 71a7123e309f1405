//! How a remote's requests authenticate: basic auth with the endpoint's
//! credentials (the default), a CouchDB cookie session (`POST /_session`
//! with those credentials, the `AuthSession` cookie on every request,
//! renewed when the server refreshes it or answers 401), or a bearer token
//! (a JWT, for CouchDB's `jwt_authentication_handler`).
//!
//! It owns the session cookie. Secrets (password, cookie, token) never
//! reach a log, an error or a `Debug` output: errors name the `_session`
//! URL, which carries no credentials.

use super::error::root_cause;
use super::{Remote, RemoteError};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{RequestBuilder, StatusCode};
use std::fmt;

/// How requests to a remote authenticate (see [`crate::RemoteConfig::with_auth`]).
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// HTTP basic auth with the endpoint's credentials, on every request
    /// (none when the endpoint has none).
    #[default]
    Basic,
    /// A CouchDB cookie session: `POST /_session` with the endpoint's
    /// credentials once, then only the `AuthSession` cookie; logged in again
    /// when a request is answered 401 (the session expired), and the
    /// cookie replaced whenever the server sends a fresh one.
    Session,
    /// `Authorization: Bearer <token>` on every request (a JWT; Apache
    /// CouchDB 3 with `jwt_authentication_handler`; PouchDB Server has no
    /// JWT support). The endpoint's credentials are not sent.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic => f.write_str("Basic"),
            Auth::Session => f.write_str("Session"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// The current session cookie (`AuthSession=...`), when logged in.
#[derive(Default)]
pub(crate) struct SessionCookie(tokio::sync::Mutex<Option<String>>);

impl fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionCookie(***)")
    }
}

/// The `AuthSession=...` pair of a response's `Set-Cookie` headers.
fn auth_session(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .find(|pair| pair.starts_with("AuthSession=") && pair.len() > "AuthSession=".len())
        .map(str::to_owned)
}

impl Remote {
    /// Adds this remote's authentication to `req`, logging in first when
    /// a session is wanted and none is open. Returns whether the request
    /// carries a session cookie (a 401 to it means the session expired).
    pub(super) async fn authorize(
        &self,
        req: RequestBuilder,
    ) -> Result<(RequestBuilder, bool), RemoteError> {
        match self.auth() {
            Auth::Basic => Ok((
                match self.endpoint().credentials() {
                    Some(c) => req.basic_auth(&c.username, Some(&c.password)),
                    None => req,
                },
                false,
            )),
            Auth::Bearer(token) => Ok((req.bearer_auth(token), false)),
            Auth::Session => {
                let mut cookie = self.session().0.lock().await;
                if cookie.is_none() {
                    *cookie = Some(self.login().await?);
                }
                Ok(match cookie.as_deref() {
                    Some(c) => (req.header(COOKIE, c), true),
                    None => (req, false),
                })
            }
        }
    }

    /// Takes note of a response: a refreshed session cookie replaces the
    /// old one; a 401 to a request that carried one ends the session, so
    /// the next request logs in again. Returns true in that last case.
    pub(super) async fn after_response(
        &self,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        had_session: bool,
    ) -> bool {
        if !had_session {
            return false;
        }
        let mut cookie = self.session().0.lock().await;
        if status == StatusCode::UNAUTHORIZED {
            *cookie = None;
            tracing::debug!(db = %self.endpoint(), "session expired; logging in again");
            return true;
        }
        if let Some(fresh) = auth_session(headers) {
            *cookie = Some(fresh);
        }
        false
    }

    /// `POST /_session` with the endpoint's credentials: the session cookie.
    async fn login(&self) -> Result<String, RemoteError> {
        let url =
            self.endpoint()
                .server_url()
                .join("_session")
                .map_err(|e| RemoteError::InvalidUrl {
                    url: self.endpoint().to_string(),
                    reason: e.to_string(),
                })?;
        let Some(c) = self.endpoint().credentials() else {
            return Err(RemoteError::InvalidUrl {
                url: self.endpoint().to_string(),
                reason: "a cookie session needs a user name and password".to_owned(),
            });
        };
        let body = serde_json::json!({ "name": c.username, "password": c.password });
        let resp = self
            .request(reqwest::Method::POST, url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    RemoteError::Timeout {
                        method: "POST".to_owned(),
                        url: url.to_string(),
                    }
                } else {
                    RemoteError::Connect {
                        url: url.to_string(),
                        cause: root_cause(&e),
                        source: e.without_url(),
                    }
                }
            })?;
        let status = resp.status();
        let cookie = auth_session(resp.headers());
        match cookie {
            Some(cookie) if status.is_success() => {
                tracing::debug!(db = %self.endpoint(), "session opened");
                Ok(cookie)
            }
            _ => Err(RemoteError::Http {
                method: "POST".to_owned(),
                url: url.to_string(),
                status: if status.is_success() {
                    StatusCode::UNAUTHORIZED
                } else {
                    status
                },
                error: "session_refused".to_owned(),
                reason: if status.is_success() {
                    "the server answered without an AuthSession cookie".to_owned()
                } else {
                    format!("POST /_session answered {status}")
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn the_session_cookie_is_found_among_set_cookies() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("other=1; Path=/"));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static("AuthSession=YWRtaW46NjU; Version=1; Path=/; HttpOnly"),
        );
        assert_eq!(auth_session(&h).as_deref(), Some("AuthSession=YWRtaW46NjU"));
        let mut empty = HeaderMap::new();
        empty.append(SET_COOKIE, HeaderValue::from_static("AuthSession=; Path=/"));
        assert_eq!(auth_session(&empty), None);
    }

    #[test]
    fn debug_hides_the_token() {
        assert_eq!(
            format!("{:?}", Auth::Bearer("eyJsecret".into())),
            "Bearer(***)"
        );
    }
}
