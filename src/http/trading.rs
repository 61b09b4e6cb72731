//! A bot's trading surface: manual orders and cancels, closing, the kill switch, and the
//! paged reports (orders, fills, events, position, performance, portfolio).
//!
//! Reports read the store directly, but only up to what the bot has made durable (its
//! [`LiveView`] watermarks), so nothing shown can be lost to a crash. The figures themselves are
//! computed in keel-core ([`performance`], [`report`]).

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use keel_actors::bot::repo::Page;
use keel_actors::bot::supervisor::KillReport;
use keel_actors::bot::supervisor::{ForBot, GetLiveBot, KillSwitch, ListBots};
use keel_actors::bot::{BotRecord, LiveView, TradeCommand, TradeOutcome};
use keel_actors::mailbox::ask;
use keel_core::bot::performance;
use keel_core::bot::report::{self, Portfolio, PositionView};
use keel_core::engine::BotEvent;
use keel_core::trading::{
    Fill, Order, OrderRequest, OrderStatus, OrderType, Position, Side, TimeInForce,
};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::ApiError;
use super::bots::{BOT_NOT_FOUND, BotPath, DISK_LOW, SUPERVISOR_TIMEOUT};
use super::error::ErrorResponse;
use super::json::{Json, OptionalJson};

/// 422 of the paged reports.
const BAD_PAGE: &str = "A bad `after` or `limit` (`VALIDATION_FAILED`).";
/// 409 of the trading commands.
const NOT_RUNNING: &str = "The bot is not running (`CONFLICT`).";
use crate::auth::AuthUser;
use crate::state::AppState;

/// Rows per page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// `?after=&limit=` on the paged reports.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows after this id (the last page's `next_after`); from the start by default.
    #[serde(default, deserialize_with = "super::id::int64")]
    after: u64,
    /// Rows per page, 1 to 500; 100 by default.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
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

/// The bot (404 unless it is the user's) and, when running, its live view.
async fn live(
    state: &AppState,
    user_id: u64,
    bot_id: u64,
) -> Result<(BotRecord, Option<LiveView>), ApiError> {
    let query = GetLiveBot { user_id, bot_id };
    Ok(ask(&state.bots()?, query, state.settings.request_timeout(), "bots").await??)
}

/// Reads the store off the worker thread.
async fn read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, keel_actors::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(web::block(f).await.map_err(ApiError::internal)??)
}

fn repo(state: &AppState) -> Result<keel_actors::bot::BotRepo, ApiError> {
    Ok(keel_actors::bot::BotRepo::new(&state.store)?)
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
    let after = q.after;
    if let Some(repo) = state.bot_history() {
        let body = match journal {
            Journal::Orders => {
                serde_json::to_value(repo.orders(bot_id, after, u64::MAX, limit).await?)
            }
            Journal::Fills => {
                serde_json::to_value(repo.fills(bot_id, after, fills_upto, limit).await?)
            }
            Journal::Events => {
                serde_json::to_value(repo.events(bot_id, after, events_upto, limit).await?)
            }
        };
        return Ok(HttpResponse::Ok().json(body.map_err(ApiError::internal)?));
    }
    let repo = repo(state)?;
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
#[utoipa::path(get, path = "/bots/{id}/orders", tag = "trading", params(BotPath, PageQuery),
    responses(
        (status = 200, description = "A page of the bot's orders, in their latest state.",
            body = Page<Order>),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 422, description = BAD_PAGE, body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
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
#[utoipa::path(get, path = "/bots/{id}/fills", tag = "trading", params(BotPath, PageQuery),
    responses(
        (status = 200, description = "A page of the bot's durable fills.", body = Page<Fill>),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 422, description = BAD_PAGE, body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
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
#[utoipa::path(get, path = "/bots/{id}/events", tag = "trading", params(BotPath, PageQuery),
    responses(
        (status = 200, description = "A page of the bot's durable journal.",
            body = Page<BotEvent>),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 422, description = BAD_PAGE, body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
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
    let position = report::stored_position(record, stored.position, stored.last_order_id);
    Ok((position, None, stored.last_fill_id))
}

/// `GET /bots/{id}/position`.
///
/// # Errors
/// 404 for another user's bot.
#[utoipa::path(get, path = "/bots/{id}/position", tag = "trading", params(BotPath),
    responses(
        (status = 200, description = "The bot's position: its own book, and for a running \
            live bot on a derivatives venue also the venue's (`venue`: entry and liquidation \
            prices, unrealised P&L, leverage, margin type, mark).", body = PositionView),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn position(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let (record, live) = live(&state, user.user_id, id.into_inner()).await?;
    let (position, mark, through) = position_of(&state, &record, live.as_ref()).await?;
    let venue = live.and_then(|l| l.venue_position);
    let view = PositionView::new(&record, &position, mark, through).with_venue(venue);
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /bots/{id}/performance`.
///
/// # Errors
/// 404 for another user's bot.
#[utoipa::path(get, path = "/bots/{id}/performance", tag = "trading", params(BotPath),
    responses(
        (status = 200, description = "The bot's figures over its durable fills.",
            body = performance::Performance),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn performance(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    let (record, live) = live(&state, user.user_id, id.into_inner()).await?;
    let (upto, _) = watermarks(live.as_ref());
    let mark = live.as_ref().and_then(|l| l.mark_price);
    let bot_id = record.id;
    let fills = match state.bot_history() {
        Some(repo) => repo.all_fills(bot_id, upto).await?,
        None => {
            let repo = repo(&state)?;
            read(move || repo.all_fills(bot_id, upto)).await?
        }
    };
    let now = keel_venues::now_us() / 1000;
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
    let outcome = ask(&state.bots()?, query, state.settings.request_timeout(), "bots").await??;
    // A live order the venue has not answered yet (or a cancel it has not confirmed): 202, and
    // the order's later states show in `GET /bots/{id}/orders` and the bot's events.
    let pending = matches!(&outcome, TradeOutcome::Order(o)
        if o.status == OrderStatus::New || (is_cancel && o.status.is_open()));
    if pending {
        return Ok(HttpResponse::Accepted().json(outcome));
    }
    Ok(HttpResponse::Ok().json(outcome))
}

/// `POST /bots/{id}/orders` body: a manual order. `type` says which price fields it has, and
/// it may have no others.
///
/// Not [`OrderRequest`] itself: that one flattens its order type, and serde cannot refuse
/// unknown fields beside a flattened one (nor, it turns out, in the variants of an internally
/// tagged enum). The schema is this enum's; the body is read as [`OrderFields`] and then checked
/// against its `type`.
#[derive(Debug, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewOrder {
    /// At the best available price, now.
    Market {
        /// Buy or sell.
        side: Side,
        /// Base quantity, positive.
        qty: Decimal,
        /// A label of the owner's; it comes back on fills.
        #[serde(default)]
        #[schema(format = Int64, maximum = 4_294_967_295_u32)]
        tag: u32,
    },
    /// At `price` or better; rests until the market trades through it, as long as
    /// `time_in_force` allows. A `limit` that also has a `stop_price` is a stop-limit.
    Limit {
        /// Buy or sell.
        side: Side,
        /// Base quantity, positive.
        qty: Decimal,
        /// Limit price.
        price: Decimal,
        /// `gtc` (the default), `ioc`, `fok`, or `post_only` (refused if it would trade at
        /// once; Binance `LIMIT_MAKER`).
        #[serde(default)]
        time_in_force: TimeInForce,
        /// A label of the owner's; it comes back on fills.
        #[serde(default)]
        #[schema(format = Int64, maximum = 4_294_967_295_u32)]
        tag: u32,
    },
    /// A market order armed until the market trades at or through `stop_price` (emulated by
    /// Keel on every venue).
    Stop {
        /// Buy or sell.
        side: Side,
        /// Base quantity, positive.
        qty: Decimal,
        /// Trigger price.
        stop_price: Decimal,
        /// A label of the owner's; it comes back on fills.
        #[serde(default)]
        #[schema(format = Int64, maximum = 4_294_967_295_u32)]
        tag: u32,
    },
    /// A limit at `price` armed until the market trades at or through `stop_price` (a buy: at
    /// or above; a sell: at or below). Native on Binance (`STOP_LOSS_LIMIT`), emulated on paper.
    StopLimit {
        /// Buy or sell.
        side: Side,
        /// Base quantity, positive.
        qty: Decimal,
        /// Trigger price.
        stop_price: Decimal,
        /// Limit price once triggered.
        price: Decimal,
        /// A label of the owner's; it comes back on fills.
        #[serde(default)]
        #[schema(format = Int64, maximum = 4_294_967_295_u32)]
        tag: u32,
    },
    /// A market order triggered when the price retraces `trailing_bps` basis points from its
    /// best since placement. Native on Binance (`STOP_LOSS` + `trailingDelta`), emulated on
    /// paper.
    TrailingStop {
        /// Buy or sell.
        side: Side,
        /// Base quantity, positive.
        qty: Decimal,
        /// The retracement that triggers it, 10 to 2000 basis points.
        #[schema(minimum = 10, maximum = 2000)]
        trailing_bps: u32,
        /// A label of the owner's; it comes back on fills.
        #[serde(default)]
        #[schema(format = Int64, maximum = 4_294_967_295_u32)]
        tag: u32,
    },
}

/// Every field any [`NewOrder`] has: what the body is read as.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFields {
    #[serde(rename = "type")]
    kind: OrderKind,
    side: Side,
    qty: Decimal,
    #[serde(default)]
    price: Option<Decimal>,
    #[serde(default)]
    stop_price: Option<Decimal>,
    #[serde(default)]
    time_in_force: Option<TimeInForce>,
    #[serde(default)]
    trailing_bps: Option<u32>,
    #[serde(default)]
    tag: u32,
}

/// The `type` of a [`NewOrder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OrderKind {
    Market,
    Limit,
    Stop,
    StopLimit,
    TrailingStop,
}

impl<'de> Deserialize<'de> for NewOrder {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let OrderFields { kind, side, qty, price, stop_price, time_in_force, trailing_bps, tag } =
            OrderFields::deserialize(de)?;
        // A limit with a trigger is a stop-limit: the stop price is never dropped.
        let kind = if kind == OrderKind::Limit && stop_price.is_some() {
            OrderKind::StopLimit
        } else {
            kind
        };
        let name = match kind {
            OrderKind::Market => "market",
            OrderKind::Limit => "limit",
            OrderKind::Stop => "stop",
            OrderKind::StopLimit => "stop_limit",
            OrderKind::TrailingStop => "trailing_stop",
        };
        // Worded as serde words its own, so the field is named in the answer's details.
        let refuse = |fields: &[(&str, bool)]| match fields.iter().find(|(_, sent)| *sent) {
            Some((field, _)) => {
                Err(D::Error::custom(format!("unknown field `{field}`: a {name} order has none")))
            }
            None => Ok(()),
        };
        let need = |field: &'static str, value: Option<Decimal>| {
            value.ok_or_else(|| D::Error::missing_field(field))
        };
        let (has_price, has_stop) = (price.is_some(), stop_price.is_some());
        let (has_tif, has_trail) = (time_in_force.is_some(), trailing_bps.is_some());
        match kind {
            OrderKind::Market => {
                refuse(&[("price", has_price), ("stop_price", has_stop)])?;
                refuse(&[("time_in_force", has_tif), ("trailing_bps", has_trail)])?;
                Ok(NewOrder::Market { side, qty, tag })
            }
            OrderKind::Limit => {
                refuse(&[("trailing_bps", has_trail)])?;
                let price = need("price", price)?;
                let time_in_force = time_in_force.unwrap_or_default();
                Ok(NewOrder::Limit { side, qty, price, time_in_force, tag })
            }
            OrderKind::Stop => {
                refuse(&[("price", has_price), ("time_in_force", has_tif)])?;
                refuse(&[("trailing_bps", has_trail)])?;
                let stop_price = need("stop_price", stop_price)?;
                Ok(NewOrder::Stop { side, qty, stop_price, tag })
            }
            OrderKind::StopLimit => {
                refuse(&[("time_in_force", has_tif), ("trailing_bps", has_trail)])?;
                let stop_price = need("stop_price", stop_price)?;
                let price = need("price", price)?;
                Ok(NewOrder::StopLimit { side, qty, stop_price, price, tag })
            }
            OrderKind::TrailingStop => {
                refuse(&[("price", has_price), ("stop_price", has_stop)])?;
                refuse(&[("time_in_force", has_tif)])?;
                let trailing_bps =
                    trailing_bps.ok_or_else(|| D::Error::missing_field("trailing_bps"))?;
                Ok(NewOrder::TrailingStop { side, qty, trailing_bps, tag })
            }
        }
    }
}

impl From<NewOrder> for OrderRequest {
    fn from(order: NewOrder) -> Self {
        let (side, qty, order_type, tag) = match order {
            NewOrder::Market { side, qty, tag } => (side, qty, OrderType::Market, tag),
            NewOrder::Limit { side, qty, price, time_in_force, tag } => {
                (side, qty, OrderType::Limit { price, time_in_force }, tag)
            }
            NewOrder::Stop { side, qty, stop_price, tag } => {
                (side, qty, OrderType::Stop { stop_price }, tag)
            }
            NewOrder::StopLimit { side, qty, stop_price, price, tag } => {
                (side, qty, OrderType::StopLimit { stop_price, price }, tag)
            }
            NewOrder::TrailingStop { side, qty, trailing_bps, tag } => {
                (side, qty, OrderType::TrailingStop { trailing_bps }, tag)
            }
        };
        OrderRequest { side, qty, order_type, tag }
    }
}

/// `POST /bots/{id}/orders`: a manual order through the bot's risk checks.
///
/// # Errors
/// 404, 409 when the bot is not running, 422 `ORDER_REJECTED` with the risk check's reason.
#[utoipa::path(post, path = "/bots/{id}/orders", tag = "trading", params(BotPath),
    request_body = NewOrder,
    responses(
        (status = 200, description = "The order, as it stands after risk checks (a paper \
            order may already be filled).", body = Order),
        (status = 202, description = "A live order the venue has not answered yet; its later \
            states show in the bot's orders and events.", body = Order),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 409, description = NOT_RUNNING, body = ErrorResponse),
        (status = 422, description = "Invalid fields (`VALIDATION_FAILED`), or refused by \
            the risk checks or the venue (`ORDER_REJECTED`).", body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
        (status = 507, description = DISK_LOW, body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id, bot_id = %id))]
pub async fn place(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
    body: Json<NewOrder>,
) -> Result<HttpResponse, ApiError> {
    state.store.disk().refuse_if_low()?;
    let order = OrderRequest::from(body.into_inner());
    command(&state, user.user_id, id.into_inner(), TradeCommand::Place(order)).await
}

/// `DELETE /bots/{id}/orders/{order_id}`.
///
/// # Errors
/// 404, 409 when the order is not open or the bot not running.
#[utoipa::path(delete, path = "/bots/{id}/orders/{order_id}", tag = "trading",
    params(
        ("id" = u64, Path, description = "The bot's id."),
        ("order_id" = u64, Path, description = "The order's id (per bot)."),
    ),
    responses(
        (status = 200, description = "The order, canceled.", body = Order),
        (status = 202, description = "A live order whose cancel the venue has not confirmed \
            yet.", body = Order),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 409, description = "The order is not open, or the bot is not running \
            (`CONFLICT`).", body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
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
#[utoipa::path(post, path = "/bots/{id}/close-position", tag = "trading", params(BotPath),
    responses(
        (status = 200, description = "The closing order, or null when the position was \
            already flat.", body = Option<Order>),
        (status = 202, description = "A live closing order the venue has not answered yet.",
            body = Order),
        (status = 404, description = BOT_NOT_FOUND, body = ErrorResponse),
        (status = 409, description = NOT_RUNNING, body = ErrorResponse),
        (status = 422, description = "The closing order was refused (`ORDER_REJECTED`).",
            body = ErrorResponse),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn close_position(
    user: AuthUser,
    state: web::Data<AppState>,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    command(&state, user.user_id, id.into_inner(), TradeCommand::ClosePosition).await
}

/// `POST /kill-switch` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    /// Also close every position with market orders.
    #[serde(default)]
    flatten: bool,
}

/// `POST /kill-switch`: stop every bot of the user and cancel their orders; `flatten` also
/// closes their positions. The body is optional (none, or `null`, is `{}`), but one that is sent
/// must be valid: a typo must not quietly turn a flattening kill switch into one that leaves
/// positions open.
///
/// # Errors
/// 400/415/422 for a body that is not a valid [`KillBody`]; 503/504 if the bot supervisor is busy.
#[utoipa::path(post, path = "/kill-switch", tag = "trading",
    request_body(content = Option<KillBody>, description = "Optional: no body, or `null`, is \
        `{}`."),
    responses(
        (status = 200, description = "What was stopped and canceled.", body = KillReport),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
#[tracing::instrument(skip_all, fields(user_id = user.user_id))]
pub async fn kill_switch(
    user: AuthUser,
    state: web::Data<AppState>,
    body: OptionalJson<KillBody>,
) -> Result<HttpResponse, ApiError> {
    let flatten = body.into_inner().unwrap_or_default().flatten;
    let timeout = state.settings.request_timeout() * 3;
    let query = KillSwitch { user_id: user.user_id, flatten };
    let report = ask(&state.bots()?, query, timeout, "bots").await??;
    // The owner's `kill_switch` notifications were enqueued with the report: durable first.
    state.store.commit().await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /portfolio`: totals across the user's bots.
///
/// # Errors
/// 503/504 if the bot supervisor is busy.
#[utoipa::path(get, path = "/portfolio", tag = "trading",
    responses(
        (status = 200, description = "Totals across the caller's bots.", body = Portfolio),
        (status = 504, description = SUPERVISOR_TIMEOUT, body = ErrorResponse),
    ))]
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
    let rows = rows.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(Portfolio::new(rows)))
}
