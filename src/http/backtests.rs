//! `/api/v1/backtests`: backtests as jobs on the backtest worker pool, over an uploaded trade
//! file or a range of the feeds' recordings.
//!
//! - `POST /backtests/uploads` stores a trade file (raw body: Keel CSV, a Binance dump or a
//!   recording; at most `backtests.max_upload_bytes`) under `<store.path>/uploads/<user>/`.
//! - `POST /backtests` validates the request and queues a job: 202 with the job and its
//!   `Location`. `GET /backtests/{id}` shows its progress, then its report; `DELETE` cancels it
//!   (202), or forgets a finished one (204). `GET /backtests` lists the caller's jobs.
//!
//! The handlers only stream, hand over and queue: an upload's check and a request's validation
//! are `keel_actors::backtest::{upload, request}`, run on blocking threads, and the backtest
//! itself runs on the pool's threads (`keel_actors::backtest::jobs`), never on an HTTP worker.
//! Another user's job is 404.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use keel_actors::backtest::jobs::{Canceled, JobId, JobView};
use keel_actors::backtest::request::NewBacktest;
use keel_actors::backtest::upload::{PendingUpload, uploads_dir};
use serde::Serialize;

use super::error::{ErrorResponse, backtest_not_found};
use super::json::Json;
use super::{ApiError, FieldError, Items};
use crate::auth::AuthUser;
use crate::state::AppState;

/// Upload bytes gathered before they are written out (on a blocking thread).
const UPLOAD_WRITE_CHUNK: usize = 1 << 20;

/// What an upload answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Upload {
    /// The id to name in `data.upload_id`.
    id: String,
    /// Bytes stored.
    bytes: u64,
    /// `csv` or `recording`.
    #[schema(value_type = String, example = "csv")]
    format: &'static str,
}

/// 404 of `/backtests/{id}`.
const BACKTEST_NOT_FOUND: &str = "No such backtest of the caller's (`BACKTEST_NOT_FOUND`).";

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("uploads are limited to {limit} bytes (backtests.max_upload_bytes)"),
    )
}

/// Runs file-system work off the HTTP worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(ApiError::internal)?.map_err(ApiError::internal)
}

/// `POST /backtests/uploads`: stores the raw body as a trade file of the caller's.
///
/// # Errors
/// 413 past `backtests.max_upload_bytes`, 422 when the start of the file is not a trade file
/// Keel reads.
#[utoipa::path(post, path = "/backtests/uploads", tag = "backtests",
    request_body(content = String, content_type = "application/octet-stream",
        description = "A trade file: Keel CSV, a Binance trades dump or a Keel recording."),
    responses(
        (status = 201, description = "Stored.", body = Upload),
        (status = 422, description = "The start of the file is not a trade file Keel reads \
            (`VALIDATION_FAILED`).", body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn upload(
    user: AuthUser,
    state: web::Data<AppState>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let limit = state.settings.backtests.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let dir = uploads_dir(&state.settings.store.path, user.user_id);
    let (pending, file) = blocking(move || PendingUpload::create(&dir)).await?;
    let written = match receive(&mut payload, file, limit).await {
        Ok(written) => written,
        Err(err) => {
            let partial = pending.clone();
            let _ = blocking(move || partial.discard()).await;
            return Err(err);
        }
    };
    let keep = state.settings.backtests.max_uploads_per_user;
    let id = pending.id.clone();
    let checked = blocking(move || pending.accept(keep)).await?;
    match checked {
        Ok(format) => Ok(HttpResponse::Created().json(Upload { id, bytes: written, format })),
        Err(reason) => Err(ApiError::validation(vec![FieldError::new("body", reason)])),
    }
}

/// Streams the body into `file`, writing on a blocking thread a chunk at a time; the bytes
/// written.
async fn receive(
    payload: &mut web::Payload,
    mut file: std::fs::File,
    limit: u64,
) -> Result<u64, ApiError> {
    let mut written: u64 = 0;
    let mut buffer = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("BAD_REQUEST", format!("cannot read the body: {e}"))
        })?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(too_large(limit));
        }
        buffer.extend_from_slice(&chunk);
        if buffer.len() >= UPLOAD_WRITE_CHUNK {
            let bytes = buffer.split().freeze();
            file = blocking(move || {
                std::io::Write::write_all(&mut file, &bytes)?;
                Ok(file)
            })
            .await?;
        }
    }
    let bytes = buffer.split().freeze();
    blocking(move || {
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_data()
    })
    .await?;
    Ok(written)
}

/// `POST /backtests`: validates and queues a backtest.
///
/// # Errors
/// 422 with every bad field, 429 `TOO_MANY_BACKTESTS` past the user's limit, 503 when the
/// queue is full.
#[utoipa::path(post, path = "/backtests", tag = "backtests", request_body = NewBacktest,
    responses(
        (status = 202, description = "Queued.", body = JobView,
            headers(("Location" = String, description = "The job's URL."))),
        (status = 422, description = "Every bad field (`VALIDATION_FAILED`).",
            body = ErrorResponse),
        (status = 429, description = "As many backtests queued or running as allowed \
            (`TOO_MANY_BACKTESTS`), or too many requests (`RATE_LIMITED`).",
            body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn create(
    user: AuthUser,
    state: web::Data<AppState>,
    body: Json<NewBacktest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let uploads = uploads_dir(&state.settings.store.path, user.user_id);
    let record_dir = state.settings.record_dir();
    let spec = blocking(move || body.into_job(&uploads, &record_dir)).await?;
    let spec = spec.map_err(ApiError::validation)?;
    let view = state.backtests.submit(user.user_id, spec)?;
    // The job is stored: it must be durable before the 202, or a restart could lose it.
    if let Some(store) = state.backtests.store() {
        store.commit().await?;
    }
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("{}/backtests/{}", super::API_PREFIX, view.id)))
        .json(view))
}

/// `GET /backtests`: the caller's backtests, newest first.
///
/// # Errors
/// None beyond authentication.
#[utoipa::path(get, path = "/backtests", tag = "backtests",
    responses((status = 200, description = "The caller's backtests.", body = Items<JobView>)))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(Items { items: state.backtests.list(user.user_id) }))
}

/// `GET /backtests/{id}`: progress, then the report.
///
/// # Errors
/// 404 for an unknown id or another user's.
#[utoipa::path(get, path = "/backtests/{id}", tag = "backtests",
    params(("id" = u64, Path, description = "The backtest's id.")),
    responses(
        (status = 200, description = "Progress, then the report.", body = JobView),
        (status = 404, description = BACKTEST_NOT_FOUND, body = ErrorResponse),
    ))]
pub async fn get(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<JobId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let view = state.backtests.get(user.user_id, id).ok_or_else(|| backtest_not_found(id))?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /backtests/{id}`: cancels a queued or running backtest (202), or forgets a finished
/// one (204).
///
/// # Errors
/// 404 for an unknown id or another user's.
#[utoipa::path(delete, path = "/backtests/{id}", tag = "backtests",
    params(("id" = u64, Path, description = "The backtest's id.")),
    responses(
        (status = 202, description = "Cancel requested; the job as it was.", body = JobView),
        (status = 204, description = "A finished job, forgotten."),
        (status = 404, description = BACKTEST_NOT_FOUND, body = ErrorResponse),
    ))]
pub async fn cancel(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<JobId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.backtests.cancel(user.user_id, id).ok_or_else(|| backtest_not_found(id))? {
        Canceled::Requested(view) => Ok(HttpResponse::Accepted().json(*view)),
        Canceled::Removed => {
            if let Some(store) = state.backtests.store() {
                store.commit().await?;
            }
            Ok(HttpResponse::NoContent().finish())
        }
    }
}
