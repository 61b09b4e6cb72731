//! A bot's trading surface: manual orders and cancels, closing, the kill switch, and the
//! paged reports (orders, fills, events, position, performance, portfolio).
//!
//! Reports read the store directly, but only up to what the bot has made durable (its
//! [`LiveView`] watermarks), so nothing shown can be lost to a crash.

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use keel_actors::bot::performance;
use keel_actors::bot::supervisor::{ForBot, GetLiveBot, KillSwitch, ListBots};
use keel_actors::bot::{BotRecord, LiveView, TradeCommand, TradeError, TradeOutcome};
use keel_actors::mailbox::ask;
use keel_actors::trading::{OrderRequest, OrderStatus, Position};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::ApiError;
use super::bots::bot_error;
use crate::auth::AuthUser;
use crate::startup::AppState;

/// Rows per page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// `?after=&limit=` on the paged reports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=keel_actors::bot::repo::MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::validation(vec![super::FieldError::new(
                "limit",
                format!("must be 1 to {}", keel_actors::bot::repo::MAX_PAGE),
            )])),
        }
    }
}

/// Maps a bot's trading errors.
pub fn trade_error(err: TradeError) -> ApiError {
    match err {
        TradeError::Rejected(rejection) => ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "ORDER_REJECTED",
            format!("{}: {}", rejection.code, rejection.reason),
        ),
        TradeError::Cancel(err) => ApiError::conflict(err.to_string()),
        TradeError::Store => ApiError::internal(anyhow::anyhow!("order storage failed")),
    }
}

/// The bot (404 unless it is the user's) and, when running, its live view.
async fn live(
    state: &AppState,
    user_id: u64,
    bot_id: u64,
) -> Result<(BotRecord, Option<LiveView>), ApiError> {
    ask(&state.bots()?, GetLiveBot { user_id, bot_id }, state.settings.request_timeout(), "bots")
        .await?
        .map_err(bot_error)
}

/// Reads the store off the worker thread.
async fn read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, keel_actors::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(ApiError::internal)?.map_err(ApiError::internal)
}

fn repo(state: &AppState) -> Result<keel_actors::bot::BotRepo, ApiError> {
    keel_actors::bot::BotRepo::new(&state.store).map_err(ApiError::internal)
}

/// Durable fill and event watermarks: a running bot's, or everything for a stopped one.
fn watermarks(live: Option<&LiveView>) -> (u64, u64) {
    live.map_or((u64::MAX, u64::MAX), |l| (l.durable_fill_id, l.durable_event_id))
}

/// Which of a bot's journals a paged endpoint reads, and its durable watermark.
#[derive(Debug, Clone, Copy)]
enum Journal {
    Orders,
    Fills,
    Events,
}

/// One page of a bot's orders, fills or events, cut at what is durable.
async fn page(
    user: AuthUser,
    state: &AppState,
    bot_id: u64,
    q: &PageQuery,
    journal: Journal,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit()?;
    let (_, live) = live(state, user.user_id, bot_id).await?;
    let (fills_upto, events_upto) = watermarks(live.as_ref());
    let repo = repo(state)?;
    let after = q.after;
    let body = match journal {
        // Orders show their latest state; they carry no watermark.
        Journal::Orders => {
            serde_json::to_value(read(move || repo.orders(bot_id, after, u64::MAX, limit)).await?)
        }
        Journal::Fills => {
            serde_json::to_value(read(move || repo.fills(bot_id, after, fills_upto, limit)).await?)
        }
        Journal::Events => serde_json::to_value(
            read(move || repo.events(bot_id, after, events_upto, limit)).await?,
        ),
    };
    Ok(HttpResponse::Ok().json(body.map_err(ApiError::internal)?))
}

/// `GET /bots/{id}/orders`.
///
/// # Errors
/// 404 for another user's bot, 422 for a bad page.
pub async fn orders(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    page(user, &state, id.into_inner(), &q, Journal::Orders).await
}

/// `GET /bots/{id}/fills`.
///
/// # Errors
/// 404 for another user's bot, 422 for a bad page.
pub async fn fills(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    page(user, &state, id.into_inner(), &q, Journal::Fills).await
}

/// `GET /bots/{id}/events`.
///
/// # Errors
/// 404 for another user's bot, 422 for a bad page.
pub async fn events(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    page(user, &state, id.into_inner(), &q, Journal::Events).await
}

/// A bot's position, the mark price, and the last fill id the position includes: from its live
/// view, or the store.
async fn position_of(
    state: &AppState,
    record: &BotRecord,
    live: Option<&LiveView>,
) -> Result<(Position, Option<Decimal>, u64), ApiError> {
    if let Some(live) = live {
        return Ok((live.position.clone(), live.mark_price, live.durable_fill_id));
    }
    let repo = repo(state)?;
    let bot_id = record.id;
    let stored = read(move || repo.state(bot_id)).await?;
    let mut position = stored.position;
    if stored.last_order_id == 0 {
        position.quote_balance = record.paper.starting_quote;
    }
    Ok((position, None, stored.last_fill_id))
}

fn position_json(
    record: &BotRecord,
    position: &Position,
    mark: Option<Decimal>,
    fills_through: u64,
) -> serde_json::Value {
    serde_json::json!({
        "bot_id": record.id,
        "fills_through": fills_through,
        "symbol": record.symbol,
        "qty": position.qty,
        "avg_entry_price": position.avg_entry_price,
        "realized_pnl": position.realized_pnl,
        "unrealized_pnl": mark.map(|m| position.unrealized_pnl(m)),
        "fees": position.fees,
        "quote_balance": position.quote_balance,
        "mark_price": mark,
        "exposure": mark.map(|m| position.exposure(m)),
    })
}

/// `GET /bots/{id}/position`.
///
/// # Errors
/// 404 for another user's bot.
pub async fn position(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let (record, live) = live(&state, user.user_id, id.into_inner()).await?;
    let (position, mark, through) = position_of(&state, &record, live.as_ref()).await?;
    Ok(HttpResponse::Ok().json(position_json(&record, &position, mark, through)))
}

/// `GET /bots/{id}/performance`.
///
/// # Errors
/// 404 for another user's bot.
pub async fn performance(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let (record, live) = live(&state, user.user_id, id.into_inner()).await?;
    let (upto, _) = watermarks(live.as_ref());
    let mark = live.as_ref().and_then(|l| l.mark_price);
    let repo = repo(&state)?;
    let bot_id = record.id;
    let fills = read(move || repo.all_fills(bot_id, upto)).await?;
    let now = keel_actors::market::now_us() / 1000;
    let figures = performance::compute(&fills, record.paper.starting_quote, mark, now);
    Ok(HttpResponse::Ok().json(figures))
}

async fn command(
    state: &AppState,
    user_id: u64,
    bot_id: u64,
    command: TradeCommand,
) -> Result<HttpResponse, ApiError> {
    let is_cancel = matches!(command, TradeCommand::Cancel(_));
    let query = ForBot { user_id, bot_id, command };
    let outcome = ask(&state.bots()?, query, state.settings.request_timeout(), "bots")
        .await?
        .map_err(bot_error)?;
    // A live order the venue has not answered yet (or a cancel it has not confirmed): 202, and
    // the order's later states show in `GET /bots/{id}/orders` and the bot's events.
    let pending = matches!(&outcome, TradeOutcome::Order(o)
        if o.status == OrderStatus::New || (is_cancel && o.status.is_open()));
    if pending {
        return Ok(HttpResponse::Accepted().json(outcome));
    }
    Ok(HttpResponse::Ok().json(outcome))
}

/// `POST /bots/{id}/orders`: a manual order through the bot's risk checks.
///
/// # Errors
/// 404, 409 when the bot is not running, 422 `ORDER_REJECTED` with the risk check's reason.
#[tracing::instrument(skip_all, fields(user_id = user.user_id, bot_id = %id))]
pub async fn place(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: web::Json<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    command(&state, user.user_id, id.into_inner(), TradeCommand::Place(body.into_inner())).await
}

/// `DELETE /bots/{id}/orders/{order_id}`.
///
/// # Errors
/// 404, 409 when the order is not open or the bot not running.
pub async fn cancel(
    user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(u64, u64)>,
) -> Result<HttpResponse, ApiError> {
    let (bot_id, order_id) = path.into_inner();
    command(&state, user.user_id, bot_id, TradeCommand::Cancel(order_id)).await
}

/// `POST /bots/{id}/close-position`.
///
/// # Errors
/// 404, 409 when the bot is not running, 422 if the closing order is refused.
pub async fn close_position(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    command(&state, user.user_id, id.into_inner(), TradeCommand::ClosePosition).await
}

/// `POST /kill-switch` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    #[serde(default)]
    flatten: bool,
}

/// `POST /kill-switch`: stop every bot of the user and cancel their orders; `flatten` also
/// closes their positions.
///
/// # Errors
/// 503/504 if the bot supervisor is busy.
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn kill_switch(
    user: AuthUser,
    state: web::Data<AppState>,
    body: Option<web::Json<KillBody>>,
) -> Result<HttpResponse, ApiError> {
    let flatten = body.is_some_and(|b| b.flatten);
    let timeout = state.settings.request_timeout() * 3;
    let report =
        ask(&state.bots()?, KillSwitch { user_id: user.user_id, flatten }, timeout, "bots")
            .await?
            .map_err(bot_error)?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /portfolio`: totals across the user's bots.
///
/// # Errors
/// 503/504 if the bot supervisor is busy.
pub async fn portfolio(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let bots = ask(
        &state.bots()?,
        ListBots { user_id: user.user_id },
        state.settings.request_timeout(),
        "bots",
    )
    .await?;
    let state = &state;
    let rows = join_all(bots.iter().map(|bot| async move {
        let (record, live) = live(state, user.user_id, bot.id).await?;
        let (position, mark, through) = position_of(state, &record, live.as_ref()).await?;
        Ok::<_, ApiError>((record, position, mark, through))
    }))
    .await;
    let (mut realized, mut unrealized, mut fees, mut exposure) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    let mut items = Vec::new();
    for row in rows {
        let (record, position, mark, through) = row?;
        realized += position.realized_pnl;
        fees += position.fees;
        if let Some(mark) = mark {
            unrealized += position.unrealized_pnl(mark);
            exposure += position.exposure(mark);
        }
        let mut item = position_json(&record, &position, mark, through);
        item["status"] = serde_json::json!(record.status);
        item["name"] = serde_json::json!(record.name);
        items.push(item);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "bots": items.len(),
        "realized_pnl": realized,
        "unrealized_pnl": unrealized,
        "fees": fees,
        "net_pnl": realized + unrealized - fees,
        "exposure": exposure,
        "items": items,
    })))
}
