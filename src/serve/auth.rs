//! Who may call the endpoint: the configured user, by Basic auth or by a
//! cookie session (`POST /_session`, as CouchDB's), or anyone when no
//! credentials are set (loopback only, see `ServeConfig::validate`).
//!
//! Sessions live in memory and end after [`IDLE`] without a request, on
//! `DELETE /_session`, or when the server stops; their tokens are 122
//! random bits, never logged. Passwords are compared in constant time.

use super::error::HttpError;
use super::{Answer, Request, ServeConfig};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session ends after this long without a request (CouchDB's default
/// `couch_httpd_auth/timeout`).
const IDLE: Duration = Duration::from_secs(600);

/// The most sessions kept at once: a client logging in in a loop cannot
/// grow the table without bound (the oldest goes first).
const MAX_SESSIONS: usize = 10_000;

const COOKIE_NAME: &str = "AuthSession";

/// The open cookie sessions: token → last use.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    fn open(&self) -> String {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, used| now.duration_since(*used) < IDLE);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                live.remove(&oldest);
            }
        }
        live.insert(token.clone(), now);
        token
    }

    /// True (and the session kept alive) when `token` is an open session.
    fn touch(&self, token: &str) -> bool {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        match live.get_mut(token) {
            Some(used) if now.duration_since(*used) < IDLE => {
                *used = now;
                true
            }
            Some(_) => {
                live.remove(token);
                false
            }
            None => false,
        }
    }

    fn close(&self, token: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(token);
    }
}

/// Byte-wise equality whose time does not depend on where two secrets of
/// equal length differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn is_user(config: &ServeConfig, name: &str, password: &str) -> bool {
    match &config.credentials {
        // Bitwise `&`: both compared, whichever differs.
        Some((user, pass)) => same_secret(name, user) & same_secret(password, pass),
        None => true,
    }
}

/// The `AuthSession` cookie a request carries.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

/// Lets a request through when no credentials are set, or it carries
/// them (Basic) or an open session's cookie; CouchDB's 401 otherwise.
pub(super) fn authorize(
    config: &ServeConfig,
    sessions: &Sessions,
    headers: &HeaderMap,
) -> Result<(), HttpError> {
    if config.credentials.is_none() {
        return Ok(());
    }
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if let Some((u, p)) = basic.as_deref().and_then(|g| g.split_once(':')) {
        return match is_user(config, u, p) {
            true => Ok(()),
            false => Err(HttpError::unauthorized()),
        };
    }
    match session_cookie(headers) {
        Some(token) if sessions.touch(token) => Ok(()),
        _ => Err(HttpError::unauthorized()),
    }
}

/// `POST /_session` is how a client without credentials gets them, so it
/// is answered before [`authorize`].
pub(super) fn is_login(method: &Method, path: &str) -> bool {
    *method == Method::POST && path.trim_end_matches('/') == "/_session"
}

/// `/_session`: `GET` says who is calling, `POST` (name and password, as
/// JSON or a form) opens a cookie session, `DELETE` ends it.
pub(super) fn session(
    config: &ServeConfig,
    sessions: &Sessions,
    req: &Request,
) -> Result<Answer, HttpError> {
    let user = config.credentials.as_ref().map(|(u, _)| u.clone());
    match req.method {
        Method::GET | Method::HEAD => super::ok(json!({
            "ok": true,
            // Whoever got past `authorize` is this server's one user.
            "userCtx": {"name": user, "roles": ["_admin"]},
            "info": {
                "authentication_handlers": ["cookie", "default"],
                "authenticated": if session_cookie(&req.headers).is_some() { "cookie" } else { "default" },
            },
        })),
        Method::POST => {
            let (name, password) = login_form(req)?;
            if !is_user(config, &name, &password) {
                return Err(HttpError::unauthorized());
            }
            let token = sessions.open();
            let cookie = format!(
                "{COOKIE_NAME}={token}; Version=1; Path=/; Max-Age={}; HttpOnly",
                IDLE.as_secs()
            );
            let body = json!({"ok": true, "name": user.or(Some(name)), "roles": ["_admin"]});
            with_cookie(body, &cookie)
        }
        Method::DELETE => {
            if let Some(token) = session_cookie(&req.headers) {
                sessions.close(token);
            }
            with_cookie(
                json!({"ok": true}),
                &format!("{COOKIE_NAME}=; Version=1; Path=/; Max-Age=0; HttpOnly"),
            )
        }
        _ => Err(HttpError::method_not_allowed("DELETE,GET,HEAD,POST")),
    }
}

/// `name` and `password` of a login, from a JSON or a form body.
fn login_form(req: &Request) -> Result<(String, String), HttpError> {
    let form = req
        .header(CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let field = |body: &Value, key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let (name, password) = match form {
        true => {
            let mut name = None;
            let mut password = None;
            for (k, v) in url::form_urlencoded::parse(&req.body) {
                match &*k {
                    "name" => name = Some(v.into_owned()),
                    "password" => password = Some(v.into_owned()),
                    _ => {}
                }
            }
            (name, password)
        }
        false => {
            let body = req.json()?;
            (field(&body, "name"), field(&body, "password"))
        }
    };
    match (name, password) {
        (Some(n), Some(p)) => Ok((n, p)),
        _ => Err(HttpError::bad_request(
            "a login needs `name` and `password`",
        )),
    }
}

fn with_cookie(body: Value, cookie: &str) -> Result<Answer, HttpError> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        SET_COOKIE,
        HeaderValue::from_str(cookie).map_err(HttpError::internal)?,
    );
    Ok(Answer::Stream {
        status: StatusCode::OK,
        headers,
        body: axum::body::Body::from(body.to_string()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn basic_credentials_or_an_open_session_get_in() {
        let sessions = Sessions::default();
        let mut headers = HeaderMap::new();
        let config = ServeConfig::builder()
            .db_name("db")
            .credentials("u", "p:q")
            .build();
        let Ok(config) = config else {
            unreachable!("a loopback config with credentials builds")
        };
        assert!(authorize(&config, &sessions, &headers).is_err());
        let good = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        headers.insert("authorization", format!("Basic {good}").parse().unwrap());
        assert!(authorize(&config, &sessions, &headers).is_ok());
        let bad = base64::engine::general_purpose::STANDARD.encode("u:p:x");
        headers.insert("authorization", format!("Basic {bad}").parse().unwrap());
        assert!(authorize(&config, &sessions, &headers).is_err());

        let token = sessions.open();
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            format!("a=b; AuthSession={token}").parse().unwrap(),
        );
        assert!(authorize(&config, &sessions, &headers).is_ok());
        sessions.close(&token);
        assert!(authorize(&config, &sessions, &headers).is_err());
        assert!(
            same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("ab", "abc")
        );
    }
}
