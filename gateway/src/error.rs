//! The HTTP error type: one stable JSON shape, one pure mapping to status.
//!
//! ```json
//! {"error": {"code": "forbidden", "message": "…", "path": "/members/0/id_number"}}
//! ```
//!
//! Callers' faults get 4xx with a message that helps fix the request; our own
//! faults get a generic 500/503 body, the detail going to the log only (see
//! [`ApiError::Internal`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One problem with one part of the input: a record index or spreadsheet row,
/// a JSON pointer, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Index of the record in the request (0-based), when there were several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    /// Spreadsheet sheet name, for ledger imports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// Spreadsheet row (1-based, as the spreadsheet shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Spreadsheet column header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// JSON pointer to the offending value ("" for the whole record).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Every way a request can fail, as the caller sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, missing header, invalid parameter.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        path: Option<String>,
    },
    /// The certificate chains but its client is not registered (or disabled).
    #[error("client not registered")]
    UnknownClient,
    /// The caller's role or department may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The route exists but does not answer this method (the `Allow`
    /// header lists the ones it does).
    #[error("this route does not answer that method; see the Allow header")]
    MethodNotAllowed,
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Validation failed; every failing record and field is listed.
    #[error("{} validation error(s)", errors.len())]
    Unprocessable { errors: Vec<FieldError> },
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// A dependency (database, audit store) is unavailable: fail closed.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Our own fault. The source is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    /// A 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            path: None,
        }
    }

    /// Wraps an internal error.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    /// The status and stable code of each variant (pure; table-tested).
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::UnknownClient => (StatusCode::FORBIDDEN, "unknown_client"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unprocessable { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A short class name for metrics and the audit record.
    pub fn class(&self) -> &'static str {
        self.status_and_code().1
    }
}

/// The error class of a failed request, put in response extensions for the
/// audit step and metrics.
#[derive(Clone, Copy, Debug)]
pub struct ErrorClass(pub &'static str);

/// Marker put in response extensions so the logging layer can log internal
/// errors in one place.
#[derive(Clone, Debug)]
pub struct InternalErrorDetail(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::UnknownClient => {
                "the client certificate is valid but its subject is not a registered client; \
                 ask the gateway administrator to register it"
                    .to_owned()
            }
            ApiError::Internal(_) => "internal error; the incident has been logged".to_owned(),
            other => other.to_string(),
        };
        let (path, errors) = match &self {
            ApiError::BadRequest { path, .. } => (path.as_deref(), None),
            ApiError::Unprocessable { errors } => (None, Some(errors.as_slice())),
            _ => (None, None),
        };
        let body = Body {
            error: Inner {
                code,
                message,
                path,
                errors,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorClass(code));
        match &self {
            ApiError::RateLimited { retry_after_secs } => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs.max(&1).to_owned()),
                );
            }
            ApiError::Internal(e) => {
                resp.extensions_mut()
                    .insert(InternalErrorDetail(format!("{e:#}")));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::bad_request("bad_json", "x"), 400, "bad_json"),
            (ApiError::UnknownClient, 403, "unknown_client"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType("x".into()),
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::Unprocessable { errors: vec![] },
                422,
                "validation_failed",
            ),
            (
                ApiError::RateLimited {
                    retry_after_secs: 1,
                },
                429,
                "rate_limited",
            ),
            (ApiError::Unavailable("x"), 503, "unavailable"),
            (
                ApiError::internal(anyhow::anyhow!("db password wrong")),
                500,
                "internal",
            ),
        ];
        for (e, status, code) in cases {
            let (s, c) = e.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code), "{e:?}");
        }
    }

    #[test]
    fn internal_detail_never_reaches_the_body() {
        let resp = ApiError::internal(anyhow::anyhow!("secret detail")).into_response();
        assert!(resp.extensions().get::<InternalErrorDetail>().is_some());
        assert_eq!(resp.status(), 500);
    }
}
