//! The outermost middleware: request id, tracing span, the final form of every error body, and
//! the security headers of every response (`protect::security_headers`).

use std::time::SystemTime;

use actix_web::HttpMessage;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

use super::error::ErrorBody;

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client-supplied request id Keel accepts; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 64;

/// The id of the request being served; handlers may read it from the request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Keeps a client's id if it is short and plain (so it is safe in logs), else makes one.
fn request_id_for(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Assigns the request id, runs the request inside its span, echoes the id, and completes or
/// rewrites error bodies into the one JSON shape.
///
/// # Errors
/// Passes on an inner middleware's error.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = request_id_for(&req);
    let is_api = req.path().starts_with(super::API_PREFIX);
    let hsts = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .is_some_and(|state| state.protection.hsts());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(),
        path = %req.path());
    // Handlers' and extractors' errors arrive here as responses; an `Err` can only come from an
    // inner middleware, and without the request it cannot be reshaped: actix renders it with
    // its `ResponseError`, which for Keel's own errors is already the JSON shape.
    let res = next.call(req).instrument(span.clone()).await?.map_into_boxed_body();
    let mut res = span.in_scope(|| finish_error(res, &id));
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let is_error = res.status().is_client_error() || res.status().is_server_error();
    super::protect::security_headers(res.headers_mut(), is_api, is_error, hsts);
    Ok(res)
}

fn finish_error(res: ServiceResponse<BoxBody>, request_id: &str) -> ServiceResponse<BoxBody> {
    let status = res.status();
    // An answer forwarded from the user's owner is already in the JSON error shape, with this
    // request's id.
    let forwarded = res.response().extensions().contains::<super::forward::ForwardedAnswer>();
    if !(status.is_client_error() || status.is_server_error()) || forwarded {
        return res;
    }
    let (req, response) = res.into_parts();
    let mut body = match response.extensions().get::<ErrorBody>() {
        Some(ours) => ours.clone(),
        None => {
            let cause = response.error().map(ToString::to_string);
            if status.is_server_error() {
                tracing::error!(cause = cause.as_deref().unwrap_or("none"), %status,
                    "internal error outside a handler");
            }
            ErrorBody::for_foreign(status, &req, cause)
        }
    };
    body.request_id = request_id.to_owned();
    body.timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    body.path = req.path().to_owned();
    tracing::debug!(%status, code = %body.code, "error answered");
    let response = body.into_response(status, &response);
    ServiceResponse::new(req, response)
}
