//! `/api/v1/venues` and `/api/v1/markets/{venue}/{symbol}/…`: market state from the feeds.

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use keel_actors::feed::{
    Connectivity, FeedActor, GetCandles, GetTicker, GetVenueStatus, Ticker, VenueStatus,
};
use keel_actors::mailbox::ask;
use keel_core::market::{Candle, Interval, Symbol, VenueId};
use serde::{Deserialize, Serialize};

use super::error::{ErrorResponse, symbol_not_found};
use super::{ApiError, FieldError, Items};
use crate::auth::AuthUser;
use crate::state::AppState;

/// Most candles one request returns.
pub const MAX_CANDLES: usize = 1_000;
/// Candles returned when `limit` is not given.
const DEFAULT_CANDLES: usize = 100;

fn feed_for(state: &AppState, venue: &str) -> Result<(VenueId, actix::Addr<FeedActor>), ApiError> {
    let not_found =
        || ApiError::not_found("VENUE_NOT_FOUND", format!("no venue `{venue}` is enabled"));
    let id = VenueId::parse(venue).ok_or_else(not_found)?;
    let slot = state.feeds.get(&id).ok_or_else(not_found)?;
    let addr = slot
        .get()
        .ok_or_else(|| ApiError::from(keel_actors::mailbox::AskError::Gone { actor: "feed" }))?;
    Ok((id, addr))
}

fn symbol(venue: VenueId, raw: &str) -> Result<Symbol, ApiError> {
    Symbol::parse(raw).ok_or_else(|| symbol_not_found(venue, raw))
}

/// What Keel can do on a venue, for a client deciding what to offer.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct VenueCapabilities {
    /// Market data streams (every venue Keel lists).
    pub market_data: bool,
    /// Paper bots (simulated fills on the venue's prices): every venue.
    pub paper: bool,
    /// Live bots: orders at the venue with the owner's keys.
    pub live: bool,
    /// Short positions.
    pub shorts: bool,
    /// Leveraged positions.
    pub leverage: bool,
    /// A live bracket's exits rest at the venue as its own orders (Binance spot: one OCO list;
    /// Binance USD-M futures and Bybit linear: two reduce-only conditional orders), which hold
    /// while Keel is down; where false, Keel emulates them.
    pub native_brackets: bool,
    /// It takes exchange credentials.
    pub credentials: bool,
}

/// One venue as `GET /venues` lists it: what it is, what Keel can do there, and its feed's
/// state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VenueInfo {
    /// Venue id.
    pub venue: VenueId,
    /// Its name for people: `bybit (spot)`.
    pub label: &'static str,
    /// `simulated`, `spot` or `perpetual`.
    #[schema(example = "spot")]
    pub market_type: &'static str,
    /// Whether this instance runs its feed (its `[venues.<id>]` section is enabled).
    pub enabled: bool,
    /// What Keel can do on it.
    pub capabilities: VenueCapabilities,
    /// Feed state (`disabled` when not enabled).
    pub state: Connectivity,
    /// Active streams (`market:sim:BTCUSDT:trades`).
    pub streams: Vec<String>,
    /// Milliseconds since the last message, if any arrived.
    pub last_message_age_ms: Option<u64>,
    /// Subscriptions across all streams.
    pub subscribers: usize,
    /// Where the replay is, when the venue replays a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<keel_actors::feed::ReplayStatus>,
}

/// `GET /venues`: every venue Keel knows, with its market type, capabilities, and (for the
/// enabled ones) the feed's state, streams and data age.
///
/// # Errors
/// 401 without a token.
#[utoipa::path(get, path = "/venues", tag = "markets",
    responses((status = 200, description = "Every venue, enabled or not, with what Keel can do there.",
        body = Items<VenueInfo>)))]
pub async fn venues(_user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let timeout = state.settings.request_timeout();
    let state = &state;
    let asks = keel_venues::registry::VENUES.iter().map(|entry| async move {
        let venue = entry.id;
        let slot = state.feeds.get(&venue);
        let status = match slot.and_then(|slot| slot.get()) {
            Some(addr) => ask(&addr, GetVenueStatus, timeout, "feed").await.ok(),
            None => None,
        };
        // A feed that is restarting or does not answer is shown as down.
        let status = status.unwrap_or(VenueStatus {
            venue,
            state: if slot.is_some() { Connectivity::Down } else { Connectivity::Disabled },
            streams: Vec::new(),
            last_message_age_ms: None,
            subscribers: 0,
            replay: None,
        });
        let can = entry.capabilities;
        VenueInfo {
            venue,
            label: entry.label,
            market_type: entry.market_type.as_str(),
            enabled: slot.is_some(),
            capabilities: VenueCapabilities {
                market_data: true,
                paper: true,
                live: can.live_orders,
                shorts: can.shorting,
                leverage: can.leverage,
                native_brackets: can.native_brackets,
                credentials: can.credentials,
            },
            state: status.state,
            streams: status.streams,
            last_message_age_ms: status.last_message_age_ms,
            subscribers: status.subscribers,
            replay: status.replay,
        }
    });
    let items = join_all(asks).await;
    Ok(HttpResponse::Ok().json(Items { items }))
}

/// `GET /markets/{venue}/{symbol}/ticker`: last trade and best bid/ask.
///
/// # Errors
/// 404 for an unknown venue or symbol, 503 `MARKET_DATA_UNAVAILABLE` if no data arrives in time.
#[utoipa::path(get, path = "/markets/{venue}/{symbol}/ticker", tag = "markets",
    params(MarketPath),
    responses(
        (status = 200, description = "Last trade and best bid/ask.", body = Ticker),
        (status = 404, description = UNKNOWN_MARKET, body = ErrorResponse),
        (status = 503, description = NO_DATA, body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 504, description = FEED_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn ticker(
    _user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (venue, raw_symbol) = path.into_inner();
    let (venue, feed) = feed_for(&state, &venue)?;
    let symbol = symbol(venue, &raw_symbol)?;
    let ticker =
        ask(&feed, GetTicker { symbol }, state.settings.request_timeout(), "feed").await??;
    Ok(HttpResponse::Ok().json(ticker))
}

/// Query of `GET /markets/{venue}/{symbol}/candles`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CandlesQuery {
    /// `1m`, `5m`, `15m` or `1h`; `1m` by default.
    #[param(value_type = Option<Interval>)]
    interval: Option<String>,
    /// How many candles, newest last: 1 to 1000, 100 by default.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `{venue}` and `{symbol}` of `/markets/{venue}/{symbol}/…`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MarketPath {
    /// An enabled venue.
    #[param(example = "sim")]
    pub venue: String,
    /// The instrument.
    #[param(example = "BTCUSDT")]
    pub symbol: String,
}

/// Rolling candles of one symbol.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandlesView {
    /// Venue.
    venue: VenueId,
    /// Symbol.
    symbol: Symbol,
    /// Interval.
    interval: Interval,
    /// The candles, oldest first.
    items: Vec<Candle>,
}

/// 404 of the market routes.
const UNKNOWN_MARKET: &str = "No such enabled venue (`VENUE_NOT_FOUND`) or symbol (`SYMBOL_NOT_FOUND`), or the venue does \
     not keep this (`NOT_FOUND`).";
/// 503 of the market routes.
const NO_DATA: &str = "No market data arrived in time (`MARKET_DATA_UNAVAILABLE`), or the feed \
     is restarting (`UNAVAILABLE`).";
/// 504 of the market routes.
const FEED_TIMEOUT: &str = "The feed did not answer in time (`TIMEOUT`).";

/// `GET /markets/{venue}/{symbol}/candles?interval=1m&limit=100`: rolling in-memory candles.
///
/// # Errors
/// 404 for an unknown venue or symbol, 422 for a bad interval or limit, 503 without data.
#[utoipa::path(get, path = "/markets/{venue}/{symbol}/candles", tag = "markets",
    params(MarketPath, CandlesQuery),
    responses(
        (status = 200, description = "Rolling in-memory candles.", body = CandlesView),
        (status = 404, description = UNKNOWN_MARKET, body = ErrorResponse),
        (status = 422, description = "A bad interval or limit (`VALIDATION_FAILED`).",
            body = ErrorResponse),
        (status = 503, description = NO_DATA, body = ErrorResponse,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 504, description = FEED_TIMEOUT, body = ErrorResponse),
    ))]
pub async fn candles(
    _user: AuthUser,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<CandlesQuery>,
) -> Result<HttpResponse, ApiError> {
    let (venue, raw_symbol) = path.into_inner();
    let (venue, feed) = feed_for(&state, &venue)?;
    let symbol = symbol(venue, &raw_symbol)?;
    let mut details = Vec::new();
    let interval = match query.interval.as_deref() {
        None => Some(Interval::M1),
        Some(raw) => Interval::parse(raw),
    };
    if interval.is_none() {
        details.push(FieldError::new("interval", "must be one of 1m, 5m, 15m, 1h"));
    }
    let limit = query.limit.unwrap_or(DEFAULT_CANDLES);
    if !(1..=MAX_CANDLES).contains(&limit) {
        details.push(FieldError::new("limit", format!("must be between 1 and {MAX_CANDLES}")));
    }
    let Some(interval) = interval.filter(|_| details.is_empty()) else {
        return Err(ApiError::validation(details));
    };
    let request = GetCandles { symbol: symbol.clone(), interval, limit };
    let candles = ask(&feed, request, state.settings.request_timeout(), "feed").await??;
    Ok(HttpResponse::Ok().json(CandlesView { venue, symbol, interval, items: candles }))
}
