//! CORS for the origins the server was told to trust, and none other: a
//! page of any other origin gets no `Access-Control-Allow-Origin`, so the
//! browser keeps the replica from it.

use super::ServeConfig;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The request's `Origin` when it is one of the configured ones.
pub(super) fn allowed(config: &ServeConfig, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(ORIGIN)?.to_str().ok()?;
    config
        .cors_origins
        .iter()
        .any(|o| o == origin)
        .then(|| origin.to_owned())
}

/// The answer to a preflight (`OPTIONS`): allowed, or 403 without CORS
/// headers for an origin that is not.
pub(super) fn preflight(origin: Option<&str>) -> Response {
    let mut response = match origin {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => StatusCode::FORBIDDEN.into_response(),
    };
    decorate(&mut response, origin);
    if origin.is_some() {
        let h = response.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, PUT, POST, HEAD, DELETE"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, authorization, content-type, origin, referer"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

/// Adds the CORS headers an allowed origin gets.
pub(super) fn decorate(response: &mut Response, origin: Option<&str>) {
    let h = response.headers_mut();
    h.insert(VARY, HeaderValue::from_static("Origin"));
    let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}
