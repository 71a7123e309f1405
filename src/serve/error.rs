//! Errors as CouchDB sends them: a status and `{"error", "reason"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An answer that is not a success, in CouchDB's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) error: String,
    pub(crate) reason: String,
    /// `Content-Range` of a 416: the attachment's length.
    pub(crate) content_range: Option<String>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, error: &str, reason: impl Into<String>) -> Self {
        HttpError {
            status,
            error: error.to_owned(),
            reason: reason.into(),
            content_range: None,
        }
    }

    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }

    pub(crate) fn not_found(reason: &str) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, "not_found", reason)
    }

    /// A method the path does not take (CouchDB's 405 body).
    pub(crate) fn method_not_allowed(allowed: &str) -> Self {
        HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("Only {allowed} allowed"),
        )
    }

    /// A write naming a revision that is not the current one.
    pub(crate) fn conflict() -> Self {
        HttpError::new(
            StatusCode::CONFLICT,
            "conflict",
            "Document update conflict.",
        )
    }

    pub(crate) fn unauthorized() -> Self {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Name or password is incorrect.",
        )
    }

    /// The replica could not be read: the client can do nothing about it
    /// but try again; the log says what happened.
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "serving a request failed");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            e.to_string(),
        )
    }
}

impl From<crate::query::QueryError> for HttpError {
    fn from(e: crate::query::QueryError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError::new(status, e.error(), e.reason())
    }
}

impl From<crate::StoreError> for HttpError {
    fn from(e: crate::StoreError) -> Self {
        HttpError::internal(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(range) = self
            .content_range
            .and_then(|r| axum::http::HeaderValue::from_str(&r).ok())
        {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_RANGE, range);
        }
        response
    }
}
