//! The one JSON error shape, for every error Keel answers.
//!
//! Handlers return [`ApiError`]. Its body is completed with `request_id`, `timestamp` and `path`
//! by the request middleware ([`super::request`]), which also rewrites every other error response
//! (actix's own 404, 405, 413 and extractor errors) into the same shape, so no HTML or plain-text
//! error body can leave the server.
//!
//! Every domain error (bot, trade, vault, identity, feed, backtest, mailbox) becomes an
//! [`ApiError`] in one place: [`from_domain`].

mod from_domain;

pub use from_domain::{backtest_not_found, symbol_not_found};

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// Seconds a client should wait before retrying an overloaded or unavailable actor.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

pub use keel_core::validation::FieldError;

/// The `error` object of an error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`BOT_NOT_FOUND`).
    #[schema(value_type = String, example = "BOT_NOT_FOUND")]
    pub code: Cow<'static, str>,
    /// What happened, for a person.
    pub message: String,
    /// Field errors, for `VALIDATION_FAILED` and readiness.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
    /// The request's id, also in the `X-Request-Id` header.
    pub request_id: String,
    /// When the error was answered, RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The request path.
    pub path: String,
}

/// Every error response's body: `{"error": {...}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

impl ErrorBody {
    /// Renders the response for `status`, keeping the headers already set on `headers_from`.
    pub(crate) fn into_response(
        self,
        status: StatusCode,
        headers_from: &HttpResponse,
    ) -> HttpResponse {
        let mut builder = HttpResponse::build(status);
        for (name, value) in headers_from.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                builder.append_header((name.clone(), value.clone()));
            }
        }
        builder.json(ErrorResponse { error: self })
    }

    /// A complete error body, serialized, for an answer built outside the request pipeline
    /// (a forwarded request the owner could not serve).
    pub(crate) fn standalone(
        code: &'static str,
        message: &str,
        request_id: &str,
        path: &str,
    ) -> bytes::Bytes {
        let mut body = Self::new(code, message.to_owned(), Vec::new());
        body.request_id = request_id.to_owned();
        body.timestamp =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        body.path = path.split('?').next().unwrap_or(path).to_owned();
        serde_json::to_vec(&ErrorResponse { error: body }).unwrap_or_default().into()
    }

    /// The body for an error response that did not come from an [`ApiError`] (actix's own).
    pub(crate) fn for_foreign(
        status: StatusCode,
        req: &HttpRequest,
        cause: Option<String>,
    ) -> Self {
        let (code, message): (&'static str, String) = match status {
            StatusCode::NOT_FOUND => {
                ("NOT_FOUND", format!("no route for {} {}", req.method(), req.path()))
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                ("METHOD_NOT_ALLOWED", format!("{} is not allowed on {}", req.method(), req.path()))
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("PAYLOAD_TOO_LARGE", "the request body is too large".to_owned())
            }
            s if s.is_server_error() => ("INTERNAL", "internal error".to_owned()),
            s => (
                "BAD_REQUEST",
                cause.unwrap_or_else(|| s.canonical_reason().unwrap_or("bad request").to_owned()),
            ),
        };
        Self::new(code, message, Vec::new())
    }

    fn new(code: impl Into<Cow<'static, str>>, message: String, details: Vec<FieldError>) -> Self {
        Self {
            code: code.into(),
            message,
            details,
            request_id: String::new(),
            timestamp: String::new(),
            path: String::new(),
        }
    }
}

/// An error answered to an API client. Boxed, so `Result<T, ApiError>` stays small.
pub struct ApiError {
    inner: Box<Inner>,
}

struct Inner {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
    www_authenticate: bool,
    /// The cause, logged but never sent (5xx bodies leak nothing).
    source: Option<anyhow::Error>,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            inner: Box::new(Inner {
                status,
                body: ErrorBody::new(code, message.into(), Vec::new()),
                retry_after: None,
                www_authenticate: false,
                source: None,
            }),
        }
    }

    /// 404 with a specific code (`BOT_NOT_FOUND`). Also the answer for another user's resource.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 400 for a request that cannot be parsed at all.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 `VALIDATION_FAILED` with the field errors.
    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED", message);
        err.inner.body.details = details;
        err
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 409 `CONFLICT`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    /// 429 `RATE_LIMITED`, retry after `secs`.
    pub fn rate_limited(secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "too many requests")
            .retry_after(secs)
    }

    /// 503 `OVERLOADED`: a mailbox is full; retry shortly.
    pub fn overloaded(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            format!("{what} is overloaded; retry shortly"),
        )
        .retry_after(RETRY_AFTER_SECS)
    }

    /// 500 `INTERNAL`: `source` is logged, the client learns nothing about it.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error");
        err.inner.source = Some(source.into());
        err
    }

    /// Adds field errors under `details`.
    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.inner.body.details = details;
        self
    }

    /// Adds `WWW-Authenticate: Bearer`, as a 401 for a protected resource should.
    pub fn www_authenticate(mut self) -> Self {
        self.inner.www_authenticate = true;
        self
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.inner.retry_after = Some(secs);
        self
    }

    /// The code, for tests and logs.
    pub fn code(&self) -> &str {
        &self.inner.body.code
    }

    /// The field errors, for tests.
    pub fn details(&self) -> &[FieldError] {
        &self.inner.body.details
    }
}

impl fmt::Debug for ApiError {
    /// Walks the whole `source()` chain, so a logged 500 says what really failed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.inner.status.as_u16(),
            self.inner.body.code,
            self.inner.body.message
        )?;
        if let Some(source) = &self.inner.source {
            write!(f, "\ncaused by: {source}")?;
            for cause in source.chain().skip(1) {
                write!(f, "\ncaused by: {cause}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.body.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.inner.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.inner.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = ?self, "request failed");
        } else if self.inner.status.is_server_error() {
            tracing::warn!(error = %self, code = %self.inner.body.code, "request not served");
        }
        let mut response = HttpResponse::build(self.inner.status);
        if let Some(secs) = self.inner.retry_after {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        if self.inner.www_authenticate {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        let mut response = response.json(ErrorResponse { error: self.inner.body.clone() });
        // The request middleware completes this body with the request's id, time and path.
        response.extensions_mut().insert(self.inner.body.clone());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_leak_nothing_but_log_the_chain() {
        let cause = anyhow::anyhow!("disk on fire").context("saving bot 7");
        let err = ApiError::internal(cause);
        assert_eq!(err.inner.body.message, "internal error");
        let logged = format!("{err:?}");
        assert!(logged.contains("saving bot 7") && logged.contains("disk on fire"), "{logged}");
    }
}
