//! `/api/v1/backtests`: backtests as jobs on the backtest worker pool, over an uploaded trade
//! file or a range of the feeds' recordings.
//!
//! - `POST /backtests/uploads` stores a trade file (raw body: Keel CSV, a Binance dump or a
//!   recording; at most `backtests.max_upload_bytes`) under `<store.path>/uploads/<user>/`.
//! - `POST /backtests` validates the request and queues a job: 202 with the job and its
//!   `Location`. `GET /backtests/{id}` shows its progress, then its report; `DELETE` cancels it
//!   (202), or forgets a finished one (204). `GET /backtests` lists the caller's jobs.
//!
//! The handlers only validate and queue: the backtest itself runs on the pool's threads
//! (`keel_actors::backtest::jobs`), never on an HTTP worker. Another user's job is 404.

use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use keel_actors::backtest::BacktestConfig;
use keel_actors::backtest::input::TradeReader;
use keel_actors::backtest::jobs::{Canceled, JobId, JobSpec, JobView};
use keel_actors::bot::Bracket;
use keel_core::market::{Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_venues::sim::Instrument;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::error::{ErrorResponse, backtest_not_found};
use super::{ApiError, FieldError, Items};
use crate::auth::AuthUser;
use crate::startup::AppState;

/// Most daily recordings one backtest may read.
const MAX_RECORDED_DAYS: usize = 366;
/// Upload bytes gathered before they are written out (on a blocking thread).
const UPLOAD_WRITE_CHUNK: usize = 1 << 20;
/// Rows of an upload checked before it is accepted.
const UPLOAD_CHECK_ROWS: usize = 16;
/// Slippage of market orders without a quote, as `keel backtest` uses.
const SLIPPAGE_BPS: i64 = 5;

/// `POST /backtests` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBacktest {
    /// The strategy and its parameters.
    strategy: StrategySpec,
    /// The instrument (rules from the sim venue's table) and, for recordings, whose files.
    #[serde(default = "default_symbol")]
    #[schema(default = "BTCUSDT")]
    symbol: String,
    /// Fee per fill, basis points, 0 to 1000.
    #[serde(default = "default_fee_bps")]
    #[schema(default = "10")]
    fee_bps: Decimal,
    /// Starting quote balance.
    #[serde(default = "default_starting_quote")]
    #[schema(default = "10000")]
    starting_quote: Decimal,
    /// OCO bracket around every filled entry.
    #[serde(default)]
    bracket: Option<Bracket>,
    /// Skip rows that cannot be read instead of failing.
    #[serde(default)]
    skip_bad_rows: bool,
    /// Where the trades come from.
    data: DataSource,
}

/// Where the trades come from: exactly one of the two.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// An id from `POST /backtests/uploads`.
    #[serde(default)]
    upload_id: Option<String>,
    /// A range of the feeds' recordings.
    #[serde(default)]
    recorded: Option<RecordedRange>,
}

/// Recordings of a venue (and the body's symbol), from one UTC day to another, inclusive.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordedRange {
    /// The venue whose recordings to read.
    venue: String,
    /// First UTC day, `YYYY-MM-DD`.
    #[schema(format = Date)]
    from: String,
    /// Last UTC day, `YYYY-MM-DD`.
    #[schema(format = Date)]
    to: String,
}

fn default_symbol() -> String {
    "BTCUSDT".into()
}

fn default_fee_bps() -> Decimal {
    Decimal::TEN
}

fn default_starting_quote() -> Decimal {
    Decimal::from(10_000)
}

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

/// Where a user's uploads are kept.
fn uploads_dir(state: &AppState, user_id: u64) -> PathBuf {
    state.settings.store.path.join("uploads").join(user_id.to_string())
}

/// An upload id is what `POST /backtests/uploads` hands out: 32 lower-case hex digits (so it is
/// also a safe file name).
fn is_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dir = uploads_dir(&state, user.user_id);
    let path = dir.join(format!("{id}.dat"));
    let partial = path.with_extension("part");
    let target = partial.clone();
    let file = blocking(move || {
        std::fs::create_dir_all(&dir)?;
        std::fs::File::create(&target)
    })
    .await?;
    let written = match receive(&mut payload, file, limit).await {
        Ok(written) => written,
        Err(err) => {
            let partial = partial.clone();
            let _ = blocking(move || std::fs::remove_file(partial)).await;
            return Err(err);
        }
    };
    let keep = state.settings.backtests.max_uploads_per_user;
    let checked = blocking(move || check_upload(&partial, &path, keep)).await?;
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

/// Reads the first rows of an upload: accepted, it is renamed into place (and the user's
/// oldest uploads beyond `keep` are deleted); refused, it is deleted with the reason.
fn check_upload(
    partial: &Path,
    path: &Path,
    keep: usize,
) -> std::io::Result<Result<&'static str, String>> {
    let symbol = Symbol::parse(&default_symbol()).ok_or_else(|| std::io::Error::other("symbol"))?;
    let verdict = match TradeReader::open(partial, symbol, false) {
        Err(err) if err.kind() == std::io::ErrorKind::InvalidData => Err(err.to_string()),
        Err(err) => return Err(err),
        Ok(mut reader) => {
            let recording = reader.is_recording();
            let rows: Vec<_> = reader.by_ref().take(UPLOAD_CHECK_ROWS).collect();
            match rows.iter().find_map(|r| r.as_ref().err()) {
                Some(err) => Err(format!("line {}: {}", err.line, err.reason)),
                None if rows.is_empty() => Err("the file has no trades".to_owned()),
                None => Ok(if recording { "recording" } else { "csv" }),
            }
        }
    };
    if verdict.is_err() {
        std::fs::remove_file(partial)?;
        return Ok(verdict.map_err(|reason| {
            reason.rsplit_once(".part: ").map_or(reason.clone(), |(_, r)| r.to_owned())
        }));
    }
    std::fs::rename(partial, path)?;
    if let Some(dir) = path.parent() {
        prune_uploads(dir, keep)?;
    }
    Ok(verdict)
}

/// Deletes the oldest uploads in `dir` beyond `keep`.
fn prune_uploads(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut uploads = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "dat") {
            uploads.push((entry.metadata()?.modified()?, path));
        }
    }
    if uploads.len() <= keep {
        return Ok(());
    }
    uploads.sort();
    for (_, path) in &uploads[..uploads.len() - keep] {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Checks the body's settings; the field errors found.
fn check_settings(body: &NewBacktest, symbol: Option<&Symbol>) -> Vec<FieldError> {
    let mut details = Vec::new();
    if symbol.is_none() {
        details.push(FieldError::new("symbol", "must be 2 to 20 letters and digits"));
    }
    if body.fee_bps < Decimal::ZERO || body.fee_bps > Decimal::from(1000) {
        details.push(FieldError::new("fee_bps", "must be between 0 and 1000"));
    }
    if body.starting_quote <= Decimal::ZERO
        || body.starting_quote > Decimal::from(1_000_000_000_000u64)
    {
        details.push(FieldError::new("starting_quote", "must be above 0 and at most 1e12"));
    }
    if let Some(b) = &body.bracket {
        if b.take_profit_pct <= Decimal::ZERO || b.take_profit_pct > Decimal::from(1000) {
            details.push(FieldError::new(
                "bracket.take_profit_pct",
                "must be above 0 and at most 1000",
            ));
        }
        if b.stop_loss_pct <= Decimal::ZERO || b.stop_loss_pct >= Decimal::ONE_HUNDRED {
            details.push(FieldError::new("bracket.stop_loss_pct", "must be above 0 and below 100"));
        }
    }
    if let Some(symbol) = symbol {
        let filters = Instrument::for_symbol(symbol.clone()).filters();
        if let Err(errors) = keel_core::strategy::build(&body.strategy, &filters) {
            details.extend(errors);
        }
    }
    details
}

/// The files the job reads, or field errors saying why there are none.
async fn data_files(
    state: &AppState,
    user_id: u64,
    data: &DataSource,
    symbol: Option<&Symbol>,
    details: &mut Vec<FieldError>,
) -> Result<Vec<PathBuf>, ApiError> {
    match (&data.upload_id, &data.recorded) {
        (Some(id), None) => {
            if !is_upload_id(id) {
                details.push(FieldError::new("data.upload_id", "is not an upload id"));
                return Ok(Vec::new());
            }
            let path = uploads_dir(state, user_id).join(format!("{id}.dat"));
            let probe = path.clone();
            if blocking(move || Ok(probe.is_file())).await? {
                Ok(vec![path])
            } else {
                details.push(FieldError::new("data.upload_id", format!("no upload {id} of yours")));
                Ok(Vec::new())
            }
        }
        (None, Some(range)) => {
            let venue = VenueId::parse(&range.venue);
            if venue.is_none() {
                details.push(FieldError::new("data.recorded.venue", "is not a venue"));
            }
            for (field, date) in
                [("data.recorded.from", &range.from), ("data.recorded.to", &range.to)]
            {
                if !keel_actors::record::is_date(date) {
                    details.push(FieldError::new(field, "must be a date YYYY-MM-DD"));
                }
            }
            if !details.is_empty() {
                return Ok(Vec::new());
            }
            if range.from > range.to {
                details.push(FieldError::new("data.recorded.to", "must not be before `from`"));
                return Ok(Vec::new());
            }
            let (Some(venue), Some(symbol)) = (venue, symbol.cloned()) else {
                return Ok(Vec::new());
            };
            let name = symbol.to_string();
            let dir = state.settings.record_dir();
            let (from, to) = (range.from.clone(), range.to.clone());
            let files = blocking(move || {
                keel_actors::record::files_between(&dir, venue, &symbol, &from, &to)
            })
            .await?;
            if files.is_empty() {
                let message =
                    format!("no recordings of {venue} {name} from {} to {}", range.from, range.to);
                details.push(FieldError::new("data.recorded", message));
            } else if files.len() > MAX_RECORDED_DAYS {
                details.push(FieldError::new(
                    "data.recorded",
                    format!("spans more than {MAX_RECORDED_DAYS} days of recordings"),
                ));
            }
            Ok(files)
        }
        _ => {
            details.push(FieldError::new("data", "give exactly one of `upload_id` and `recorded`"));
            Ok(Vec::new())
        }
    }
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
    body: web::Json<NewBacktest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let symbol = Symbol::parse(&body.symbol);
    let mut details = check_settings(&body, symbol.as_ref());
    let files = data_files(&state, user.user_id, &body.data, symbol.as_ref(), &mut details).await?;
    let Some(symbol) = symbol.filter(|_| details.is_empty()) else {
        return Err(ApiError::validation(details));
    };
    let spec = JobSpec {
        config: BacktestConfig {
            bot_id: 0,
            filters: Instrument::for_symbol(symbol.clone()).filters(),
            strategy: body.strategy,
            risk: RiskLimits::default(),
            bracket: body.bracket,
            fee_bps: body.fee_bps,
            slippage_bps: Decimal::from(SLIPPAGE_BPS),
            starting_quote: body.starting_quote,
        },
        files,
        symbol,
        skip_bad_rows: body.skip_bad_rows,
    };
    let view = state.backtests.submit(user.user_id, spec)?;
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
        Canceled::Removed => Ok(HttpResponse::NoContent().finish()),
    }
}
