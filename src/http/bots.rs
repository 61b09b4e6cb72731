//! `/api/v1/bots`: define, edit, delete and drive bots. Every change goes through the bot
//! supervisor. A definition is checked by `keel_actors::bot::admission` (which asks the venue's
//! feed and the vault) and the pure checks of `keel_core::bot::admission`.

use actix_web::{HttpResponse, web};
use keel_actors::bot::admission::Admission;
use keel_actors::bot::supervisor::{ControlBot, CreateBot, DeleteBot, GetBot, UpdateBot};
use keel_actors::bot::{BotMode, BotRecord, BotStatus, Bracket, Control, PaperSettings};
use keel_actors::mailbox::ask;
use keel_core::bot::MarginType;
use keel_core::bot::admission::{check_editable, parse_market};
use keel_core::bot::user_risk::LeverageCaps;
use keel_core::market::VenueId;
use keel_core::strategy::StrategySpec;
use keel_core::trading::InstrumentFilters;
use keel_core::trading::risk::RiskLimits;
use serde::Deserialize;

use super::error::ErrorResponse;
use super::json::Json;
use super::{ApiError, FieldError, Items};
use crate::auth::AuthUser;
use crate::state::AppState;

/// `POST /bots` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBot {
    /// The owner's label: at most 64 characters, not all blank, no control characters.
    #[schema(
        max_length = 64,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
    )]
    name: String,
    /// An enabled venue (`GET /venues`).
    #[schema(value_type = VenueId, example = "sim")]
    venue: String,
    /// The instrument, 2 to 20 letters and digits.
    #[schema(pattern = "^[A-Za-z0-9]{2,20}$", example = "BTCUSDT")]
    symbol: String,
    /// Paper or live.
    mode: BotMode,
    /// The exchange account a live bot trades with.
    #[serde(default, deserialize_with = "super::id::optional_int64")]
    exchange_account_id: Option<u64>,
    /// The strategy and its parameters.
    strategy: StrategySpec,
    /// Pre-trade limits; none by default.
    #[serde(default)]
    risk: RiskLimits,
    /// OCO bracket around every filled entry.
    #[serde(default)]
    bracket: Option<Bracket>,
    /// Paper account settings.
    #[serde(default)]
    paper: PaperSettings,
    /// Leverage, on a venue with leverage only (`GET /venues`); 1 there when left out. Keel
    /// sets it at the venue before the bot's first order.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 125)]
    leverage: Option<u32>,
    /// Margin type, on a venue with leverage only; `isolated` there when left out. Keel sets it
    /// at the venue before the bot's first order.
    #[serde(default)]
    margin_type: Option<MarginType>,
}

/// `PATCH /bots/{id}` body: any subset of the editable fields. `bracket: null` removes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotPatch {
    /// New label: at most 64 characters, not all blank, no control characters.
    #[serde(default)]
    #[schema(
        max_length = 64,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
    )]
    name: Option<String>,
    /// New strategy.
    #[serde(default)]
    strategy: Option<StrategySpec>,
    /// New limits (replacing all of them).
    #[serde(default)]
    risk: Option<RiskLimits>,
    /// New bracket; `null` removes it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Bracket>)]
    bracket: Option<Option<Bracket>>,
    /// New paper settings.
    #[serde(default)]
    paper: Option<PaperSettings>,
    /// New leverage (a venue with leverage only).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 125)]
    leverage: Option<u32>,
    /// New margin type (a venue with leverage only).
    #[serde(default)]
    margin_type: Option<MarginType>,
}

/// The `{id}` of `/bots/{id}/…`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct BotPath(
    /// The bot's id.
    pub u64,
);

/// 404 of a route under `/bots/{id}`.
pub const BOT_NOT_FOUND: &str = "No such bot of the caller's (`BOT_NOT_FOUND`).";
/// 504 of a route that asks the bot supervisor.
pub const SUPERVISOR_TIMEOUT: &str = "The bot supervisor did not answer in time (`TIMEOUT`).";
/// 507 of a route the disk guard refuses.
pub const DISK_LOW: &str = "The server's free disk space is below `store.min_free_bytes`: new \
    orders, bot starts and resumes are refused until space is freed (`INSUFFICIENT_STORAGE`).";

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(de).map(Some)
    }
}

fn now_ms() -> u64 {
    keel_venues::now_us() / 1000
}

/// Validates a whole definition, filling in the instrument's rules; field errors are collected
/// and reported together.
async fn validate(
    state: &AppState,
    record: &mut BotRecord,
    details: Vec<FieldError>,
) -> Result<(), ApiError> {
    let venue = record.venue;
    let venue_testnet = crate::venues::testnet(&state.settings, venue);
    let owner = state.user_limits.get(record.user_id)?;
    let admission = Admission {
        feed: state.feeds.get(&venue),
        vault: &state.vault,
        timeout: state.settings.request_timeout(),
        venue_testnet,
        modules: &state.strategies,
        leverage_caps: LeverageCaps {
            owner: owner.max_leverage,
            server: state.settings.bots.max_leverage,
        },
    };
    let mut details = admission.check(record, details).await?;
    if record.mode == BotMode::Live && !keel_venues::registry::capabilities(venue).live_orders {
        // Say so plainly rather than accept a bot that cannot trade.
        let venues = keel_venues::registry::live_order_labels();
        details.push(FieldError::new(
            "mode",
            format!("live orders are taken on {venues} only, not {}", record.venue),
        ));
    }
    if details.is_empty() { Ok(()) } else { Err(ApiError::validation(details)) }
}

/// `POST /bots`.
///
/// # Errors
/// 422 with every bad field, 409 past the per-user bot limit.
#[utoipa::path(post, path = "/bots", tag = "bots", request_body = NewBot,
    responses(
        (status = 201, description = "The bot, created (not started).", body = BotRecord),
        (status = 409, description = "At the per-user bot limit (`CONFLICT`).",
            body = ErrorResponse),
        (status = 422, description = "Every bad field (`VALIDATION_FAILED`).",
            body = ErrorResponse),
        (status = 504, description = "An actor did not answer in time (`TIMEOUT`).",
            body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn create(
    user: AuthUser,
    state: web::Data<AppState>,
    body: Json<NewBot>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut details = Vec::new();
    let enabled: Vec<VenueId> = state.feeds.keys().copied().collect();
    let Some((venue, symbol)) = parse_market(&enabled, &body.venue, &body.symbol, &mut details)
    else {
        details.extend(keel_core::bot::validate_static(
            &body.name,
            body.mode,
            body.exchange_account_id,
            &body.risk,
            body.bracket.as_ref(),
            &body.paper,
        ));
        return Err(ApiError::validation(details));
    };
    let now = now_ms();
    let mut record = BotRecord {
        id: 0,
        user_id: user.user_id,
        name: body.name.trim().to_owned(),
        venue,
        symbol,
        mode: body.mode,
        exchange_account_id: body.exchange_account_id,
        strategy: body.strategy,
        risk: body.risk,
        bracket: body.bracket,
        paper: body.paper,
        leverage: body.leverage,
        margin_type: body.margin_type,
        filters: InstrumentFilters::default(),
        status: BotStatus::Created,
        status_reason: None,
        created_ts: now,
        updated_ts: now,
    };
    validate(&state, &mut record, details).await?;
    let created =
        ask(&state.bots()?, CreateBot(record), state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::Created().json(created))
}

/// `GET /bots`: read from the bots' read model, so it answers even while the bot supervisor is
/// busy.
#[utoipa::path(get, path = "/bots", tag = "bots",
    responses(
        (status = 200, description = "The caller's bots.", body = Items<BotRecord>),
    ))]
pub async fn list(user: AuthUser, state: web::Data<AppState>) -> HttpResponse {
    // The bot supervisor's published list (`BotsView`): no actor hop, serialised once per change.
    let body = match state.bots_view.get(user.user_id) {
        Some(owned) => {
            let mut body = bytes::BytesMut::with_capacity(owned.json.len() + 10);
            body.extend_from_slice(b"{\"items\":");
            body.extend_from_slice(&owned.json);
            body.extend_from_slice(b"}");
            body.freeze()
        }
        None => bytes::Bytes::from_static(b"{\"items\":[]}"),
    };
    HttpResponse::Ok()
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderValue::from_static("application/json"),
        ))
        .body(body)
}

/// One of the user's bots, or 404.
pub async fn owned_bot(state: &AppState, user_id: u64, bot_id: u64) -> Result<BotRecord, ApiError> {
    Ok(ask(&state.bots()?, GetBot { user_id, bot_id }, state.settings.request_timeout(), "bots")
        .await??)
}

/// `GET /bots/{id}`.
///
/// # Errors
/// 404 for an unknown bot or another user's.
#[utoipa::path(get, path = "/bots/{id}", tag = "bots", params(BotPath),
    responses(
        (status = 200, description = "The bot.", body = BotRecord),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn get(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(owned_bot(&state, user.user_id, id.into_inner()).await?))
}

/// `PATCH /bots/{id}`: only while the bot is not running.
///
/// # Errors
/// 404, 409 while running, 422 with every bad field.
#[utoipa::path(patch, path = "/bots/{id}", tag = "bots", params(BotPath), request_body = BotPatch,
    responses(
        (status = 200, description = "The bot, edited.", body = BotRecord),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 409, description = "The bot is running or paused (`CONFLICT`).",
            body = ErrorResponse),
        (status = 422, description = "Every bad field (`VALIDATION_FAILED`).",
            body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id, bot_id = %id))]
pub async fn update(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: Json<BotPatch>,
) -> Result<HttpResponse, ApiError> {
    let mut record = owned_bot(&state, user.user_id, id.into_inner()).await?;
    check_editable(&record)?;
    let patch = body.into_inner();
    if let Some(name) = patch.name {
        record.name = name.trim().to_owned();
    }
    if let Some(strategy) = patch.strategy {
        record.strategy = strategy;
    }
    if let Some(risk) = patch.risk {
        record.risk = risk;
    }
    if let Some(bracket) = patch.bracket {
        record.bracket = bracket;
    }
    if let Some(paper) = patch.paper {
        record.paper = paper;
    }
    if let Some(leverage) = patch.leverage {
        record.leverage = Some(leverage);
    }
    if let Some(margin_type) = patch.margin_type {
        record.margin_type = Some(margin_type);
    }
    record.updated_ts = now_ms();
    validate(&state, &mut record, Vec::new()).await?;
    let updated =
        ask(&state.bots()?, UpdateBot(record), state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::Ok().json(updated))
}

/// `DELETE /bots/{id}`: only while the bot is not running; its history goes with it.
///
/// # Errors
/// 404, 409 while running.
#[utoipa::path(delete, path = "/bots/{id}", tag = "bots", params(BotPath),
    responses(
        (status = 204, description = "Deleted, with its history."),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 409, description = "The bot is running or paused (`CONFLICT`).",
            body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn delete(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let query = DeleteBot { user_id: user.user_id, bot_id: id.into_inner() };
    ask(&state.bots()?, query, state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /bots/{id}/{start|stop|pause|resume}`.
///
/// # Errors
/// 404 for an unknown bot or action, 409 for a transition the state machine does not allow.
#[utoipa::path(post, path = "/bots/{id}/{action}", tag = "bots",
    params(
        ("id" = u64, Path, description = "The bot's id."),
        ("action" = Control, Path, description = "The lifecycle command."),
    ),
    responses(
        (status = 200, description = "The bot in its new state.", body = BotRecord),
        (status = 404, description = "No such bot of the caller's (`BOT_NOT_FOUND`), or no \
            such action (`NOT_FOUND`).", body = ErrorResponse),
        (status = 409, description = "The state machine does not allow it from the bot's \
            state (`CONFLICT`).", body = ErrorResponse),
        (status = 422, description = "`start` of a live bot whose exchange account cannot pay \
            for its first order (`INSUFFICIENT_BALANCE`: the asset, the amount needed and the \
            amount free); `start` of a live bot on a derivatives venue that refused its \
            leverage or margin type (`LEVERAGE_REFUSED`, with the venue's words; the bot stays \
            as it was).", body = ErrorResponse),
        (status = 503, description = "`start` of a live bot whose venue did not give the \
            balances, or did not answer setting a derivatives bot's leverage and margin type \
            (`VENUE_UNAVAILABLE`); or the bot supervisor is overloaded (`OVERLOADED`).",
            body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
        (status = 507, description = DISK_LOW, body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn control(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(u64, String)>,
) -> Result<HttpResponse, ApiError> {
    let (bot_id, action) = path.into_inner();
    let control = Control::parse(&action)
        .ok_or_else(|| ApiError::not_found("NOT_FOUND", format!("no bot action `{action}`")))?;
    if matches!(control, Control::Start | Control::Resume) {
        state.store.disk().refuse_if_low()?;
    }
    if control == Control::Start {
        check_funding(&state, user.user_id, bot_id).await?;
    }
    let query = ControlBot { user_id: user.user_id, bot_id, control };
    let record = ask(&state.bots()?, query, state.settings.request_timeout(), "bots").await??;
    Ok(HttpResponse::Ok().json(record))
}

/// Refuses the start of a live bot whose account cannot pay for its first order (only from a
/// state the bot can start from: otherwise the state machine answers).
async fn check_funding(state: &AppState, user_id: u64, bot_id: u64) -> Result<(), ApiError> {
    let Some(owned) = state.bots_view.get(user_id) else { return Ok(()) };
    let Some(record) = owned.records.iter().find(|r| r.id == bot_id) else { return Ok(()) };
    if record.status.after(Control::Start).is_none() {
        return Ok(());
    }
    let funding = keel_actors::bot::funding::Funding {
        live: &state.live,
        vault: &state.vault,
        feed: state.feeds.get(&record.venue),
    };
    funding.check(record).await?;
    Ok(())
}
