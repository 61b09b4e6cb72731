//! Binance REST: exchange info (its filters are read in [`super::filters`]), signed spot orders
//! and account balances.
//!
//! Follows <https://developers.binance.com/docs/binance-spot-api-docs/rest-api>; the paths and
//! exchange-info filters of the market at hand come from its [`Dialect`]. Signed requests
//! carry `timestamp` (local time corrected by the server-time offset, measured before the first
//! signed call and again every [`CLOCK_REFRESH`]: see
//! [`super::clock`]) and the configured `recvWindow`; a call refused with `-1021` all the same
//! is sent once more after a new measurement (Binance checks the timestamp before it looks at
//! the order, so nothing happened). The payload is signed in the vault (HMAC-SHA256, hex), never
//! here. Request weight used is read from `X-MBX-USED-WEIGHT-1M` and requests wait when the
//! budget (the market's: spot 6000, USD-M futures 2400 a minute) is nearly spent; a 429 or 418
//! stops every request on the venue for its `Retry-After`; an account whose
//! `X-MBX-ORDER-COUNT-10S` is near the market's budget (spot 100, USD-M futures 300) gets no new
//! order until the window passes. An answer that
//! does not say what happened (a timeout, a 5xx, an unreadable 2xx) is
//! [`RestError::is_unknown_outcome`]: the order must be queried before any retry.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::Dialect;
use super::filters::ExchangeInfo;
use crate::budget::{AccountKey, BudgetAsk, BudgetSlot, Held};
use crate::clock::{CLOCK_REFRESH, ServerClock, signed_call};
use crate::urlencode;
use keel_core::market::Symbol;
use keel_core::trading::{InstrumentFilters, Order, OrderType, Side, TimeInForce};

/// Spot REST API.
/// <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-api-information>
pub const SPOT_REST_URL: &str = "https://api.binance.com";
/// Spot testnet REST API.
/// <https://github.com/binance/binance-spot-api-docs/blob/master/testnet/general-info.md>
pub const SPOT_TESTNET_REST_URL: &str = "https://testnet.binance.vision";

/// How long one REST call may take.
pub const REST_TIMEOUT: Duration = Duration::from_secs(5);
/// `recvWindow` sent with signed requests unless configured otherwise, ms: Binance's default.
pub const RECV_WINDOW_MS: u64 = 5_000;
/// The largest `recvWindow` Binance takes, ms.
pub const MAX_RECV_WINDOW_MS: u64 = 60_000;
/// Binance's request-weight budget per minute per IP (spot).
pub const WEIGHT_PER_MINUTE: u32 = 6_000;
/// Back-off after a 429/418 without `Retry-After`, seconds.
const DEFAULT_BACKOFF_SECS: u64 = 60;
/// Longest back-off honoured as given (418 bans run from 2 minutes to 3 days), seconds.
const MAX_BACKOFF_SECS: u64 = 3 * 24 * 3600;
/// Orders per 10 s per account on spot (Binance's `ORDERS` limit); Keel stops 5 short of a
/// market's budget.
pub const ORDERS_PER_10S: u32 = 100;
/// The order-count window, ms.
const ORDER_WINDOW_MS: u64 = 10_000;

/// What went wrong with a REST call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// Binance answered with an error.
    #[error("binance answered {status}: {code} {msg}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Binance's error code (`-2010`), 0 when the body had none.
        code: i64,
        /// Binance's message.
        msg: String,
    },
    /// No answer in time, or the connection broke after the request left.
    #[error("no answer from binance: {0}")]
    NoAnswer(String),
    /// The request could not be sent at all (bad URL, refused connection).
    #[error("request not sent: {0}")]
    NotSent(String),
    /// A 2xx whose body is not what Binance documents.
    #[error("unreadable answer: {0}")]
    Decode(String),
    /// The vault would not sign.
    #[error("signing failed: {0}")]
    Sign(String),
    /// Binance asked for a pause (429, or 418 for an IP ban) and it has not passed; nothing was
    /// sent.
    #[error("rate limited by binance for another {0} ms")]
    Backoff(u64),
    /// The account's shared order budget held the new order back; nothing was sent.
    #[error("{0}")]
    Held(#[from] Held),
}

impl RestError {
    /// Whether the order may or may not exist now: query it before doing anything else.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            // -1006/-1007: Binance's own "execution status unknown" codes.
            RestError::Api { status, code, .. } => *status >= 500 || matches!(code, -1006 | -1007),
            RestError::NoAnswer(_) | RestError::Decode(_) => true,
            RestError::NotSent(_)
            | RestError::Sign(_)
            | RestError::Backoff(_)
            | RestError::Held(_) => false,
        }
    }

    /// `-1021`: the timestamp is outside `recvWindow` (resync the clock and retry).
    pub fn is_clock_skew(&self) -> bool {
        matches!(self, RestError::Api { code: -1021, .. })
    }

    /// `-2013`: the order does not exist.
    pub fn is_no_such_order(&self) -> bool {
        matches!(self, RestError::Api { code: -2013, .. })
    }
}

/// Signs a payload: the vault's `Sign`, as the seam passes it.
pub use crate::routing::Signer;

/// A venue's REST endpoint with its clock offset and weight budget. Share one per venue.
#[derive(Debug)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    dialect: &'static Dialect,
    /// The offset to Binance's clock.
    clock: ServerClock,
    /// `recvWindow` sent with signed requests, ms.
    recv_window_ms: u64,
    used_weight: AtomicU32,
    /// No request before this time (ms since the epoch): Binance's `Retry-After`.
    blocked_until_ms: AtomicU64,
    /// Per account (API key): orders counted in the current 10 s window and when it was read.
    order_counts: std::sync::Mutex<HashMap<String, (u32, u64)>>,
    /// What each new order asks first ([`crate::budget`]): granted until a shared one is set.
    budget: BudgetSlot,
}

/// An order as Binance reports it (new order, query, cancel).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VenueOrder {
    /// The venue's order id (0 when the answer did not carry it).
    #[serde(default)]
    pub order_id: u64,
    /// Our client order id.
    #[serde(default)]
    pub client_order_id: String,
    /// `NEW`, `PARTIALLY_FILLED`, `FILLED`, `CANCELED`, `REJECTED`, `EXPIRED`, …
    pub status: String,
    /// Filled base quantity so far.
    #[serde(with = "rust_decimal::serde::str")]
    pub executed_qty: Decimal,
    /// Filled quote amount so far.
    #[serde(with = "rust_decimal::serde::str")]
    pub cummulative_quote_qty: Decimal,
    /// Executions in this answer (new orders with `newOrderRespType=FULL` only).
    #[serde(default)]
    pub fills: Vec<VenueFill>,
}

/// One execution in a FULL new-order answer, or one trade of `GET /api/v3/myTrades` (the same
/// fields, under the same names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VenueFill {
    /// Price.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// Quantity.
    #[serde(with = "rust_decimal::serde::str")]
    pub qty: Decimal,
    /// Fee.
    #[serde(with = "rust_decimal::serde::str")]
    pub commission: Decimal,
    /// The fee's asset.
    pub commission_asset: String,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    code: i64,
    msg: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerTime {
    server_time: i64,
}

#[derive(Deserialize)]
struct Account {
    balances: Vec<AccountBalance>,
}

/// One asset of `GET /api/v3/account`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountBalance {
    /// The asset.
    pub asset: String,
    /// Available.
    #[serde(with = "rust_decimal::serde::str")]
    pub free: Decimal,
    /// Held by open orders.
    #[serde(with = "rust_decimal::serde::str")]
    pub locked: Decimal,
}

impl RestClient {
    /// A client for `dialect`'s market at `base` (`https://api.binance.com`, or a local fake in
    /// tests).
    ///
    /// # Errors
    /// The HTTP client cannot be built (TLS set-up).
    pub fn new(dialect: &'static Dialect, base: &str) -> Result<Self, RestError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(REST_TIMEOUT)
            .connect_timeout(REST_TIMEOUT)
            .build()
            .map_err(|e| RestError::NotSent(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            dialect,
            clock: ServerClock::new(CLOCK_REFRESH),
            recv_window_ms: RECV_WINDOW_MS,
            used_weight: AtomicU32::new(0),
            blocked_until_ms: AtomicU64::new(0),
            order_counts: std::sync::Mutex::default(),
            budget: BudgetSlot::default(),
        })
    }

    /// The account order budget new orders ask before they are sent (shared across nodes in
    /// cluster mode: set it once with [`BudgetSlot::set`]).
    pub fn budget(&self) -> &BudgetSlot {
        &self.budget
    }

    /// The same with `recvWindow` `ms` (kept within Binance's 1..=60000).
    pub fn with_recv_window(mut self, ms: u64) -> Self {
        self.recv_window_ms = ms.clamp(1, MAX_RECV_WINDOW_MS);
        self
    }

    /// The same with the clock measured again every `refresh` instead of
    /// [`CLOCK_REFRESH`] (tests shorten it).
    pub fn with_clock_refresh(mut self, refresh: Duration) -> Self {
        self.clock = ServerClock::new(refresh);
        self
    }

    /// The `recvWindow` sent with signed requests, ms.
    pub fn recv_window_ms(&self) -> u64 {
        self.recv_window_ms
    }

    /// The clock offset and when it was measured.
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    fn path(&self, path: &'static str) -> String {
        format!("{}{path}", self.base)
    }

    fn venue(&self) -> &'static str {
        self.dialect.venue.as_str()
    }

    fn venue_id(&self) -> keel_core::market::VenueId {
        self.dialect.venue
    }

    /// The market this client talks to.
    pub fn dialect(&self) -> &'static Dialect {
        self.dialect
    }

    /// Binance's time now, by our clock and the last measured offset, ms.
    pub fn timestamp(&self) -> u64 {
        self.clock.timestamp()
    }

    /// Measures the offset to Binance's clock (`GET /api/v3/time`), half the round trip
    /// included.
    ///
    /// # Errors
    /// The call failed.
    pub async fn sync_time(&self) -> Result<i64, RestError> {
        // Wait for the budget first, so the wait is not counted as network time.
        self.throttle().await;
        let sent = crate::now_us() as i64 / 1000;
        let res = self.send(self.http.get(self.path(self.dialect.paths.time))).await?;
        let now = crate::now_us() as i64 / 1000;
        let time: ServerTime = decode(&res)?;
        let offset = time.server_time - (sent + now) / 2;
        self.clock.record_within(offset, u64::try_from((now - sent) / 2).unwrap_or(0));
        metrics::gauge!("keel_venue_clock_offset_ms", "venue" => self.venue()).set(offset as f64);
        Ok(offset)
    }

    /// Every tradable symbol's rules (`GET /api/v3/exchangeInfo` on spot).
    ///
    /// # Errors
    /// The call failed or the answer is not exchange info.
    pub async fn exchange_info(&self) -> Result<HashMap<Symbol, InstrumentFilters>, RestError> {
        let url = self.path(self.dialect.paths.exchange_info);
        self.throttle().await;
        let body = self.send(self.http.get(url)).await?;
        let info: ExchangeInfo = decode(&body)?;
        Ok(info.tradable(self.dialect.min_notional))
    }

    /// Places `order` (`POST /api/v3/order`, `newOrderRespType=FULL`). A stop is sent as the
    /// market order it becomes when triggered (Keel emulates plain stops); a stop-limit is
    /// `STOP_LOSS_LIMIT`, a trailing stop `STOP_LOSS` with `trailingDelta`, a post-only limit
    /// `LIMIT_MAKER`, and a limit's time in force is sent as `GTC`, `IOC` or `FOK`.
    ///
    /// # Errors
    /// See [`RestError::is_unknown_outcome`].
    pub async fn place(
        &self,
        symbol: &Symbol,
        order: &Order,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let side = match order.side {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        };
        let qty = order.remaining().normalize().to_string();
        let mut params = vec![
            ("symbol", symbol.to_string()),
            ("side", side.to_owned()),
            ("quantity", qty),
            ("newClientOrderId", order.client_order_id.clone()),
            ("newOrderRespType", "FULL".to_owned()),
        ];
        let decimal = |d: Decimal| d.normalize().to_string();
        match order.order_type {
            OrderType::Limit { price, time_in_force: TimeInForce::PostOnly } => {
                // Binance refuses a LIMIT_MAKER that would trade at once (-2010).
                params.push(("type", "LIMIT_MAKER".to_owned()));
                params.push(("price", decimal(price)));
            }
            OrderType::Limit { price, time_in_force } => {
                let tif = match time_in_force {
                    TimeInForce::Ioc => "IOC",
                    TimeInForce::Fok => "FOK",
                    TimeInForce::Gtc | TimeInForce::PostOnly => "GTC",
                };
                params.push(("type", "LIMIT".to_owned()));
                params.push(("timeInForce", tif.to_owned()));
                params.push(("price", decimal(price)));
            }
            OrderType::StopLimit { stop_price, price } => {
                // STOP_LOSS_LIMIT triggers a buy at or above `stopPrice`, a sell at or below.
                params.push(("type", "STOP_LOSS_LIMIT".to_owned()));
                params.push(("timeInForce", "GTC".to_owned()));
                params.push(("price", decimal(price)));
                params.push(("stopPrice", decimal(stop_price)));
            }
            OrderType::TrailingStop { trailing_bps } => {
                // A STOP_LOSS with only `trailingDelta` trails from the moment it is placed.
                params.push(("type", "STOP_LOSS".to_owned()));
                params.push(("trailingDelta", trailing_bps.to_string()));
            }
            OrderType::Market | OrderType::Stop { .. } => {
                params.push(("type", "MARKET".to_owned()))
            }
        }
        self.signed(reqwest::Method::POST, self.dialect.paths.order, params, signer).await
    }

    /// Looks an order up by our client id (`GET /api/v3/order`).
    ///
    /// # Errors
    /// [`RestError::is_no_such_order`] when Binance never received it.
    pub async fn query(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let params = by_id(symbol, client_order_id);
        self.signed(reqwest::Method::GET, self.dialect.paths.order, params, signer).await
    }

    /// Cancels an order by our client id (`DELETE /api/v3/order`). The answer's
    /// `client_order_id` is the cancel's own id; ours is `origClientOrderId`.
    ///
    /// # Errors
    /// `-2011` ("Unknown order sent.") when it is not open there.
    pub async fn cancel(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let params = by_id(symbol, client_order_id);
        self.signed(reqwest::Method::DELETE, self.dialect.paths.order, params, signer).await
    }

    /// The account's trades of one order (`GET /api/v3/myTrades?orderId=`), each with the
    /// commission Binance charged and its asset: what a query or cancel answer leaves out.
    ///
    /// # Errors
    /// The call failed.
    pub async fn trades(
        &self,
        symbol: &Symbol,
        order_id: u64,
        signer: Signer<'_>,
    ) -> Result<Vec<VenueFill>, RestError> {
        let params = vec![("symbol", symbol.to_string()), ("orderId", order_id.to_string())];
        self.signed(reqwest::Method::GET, self.dialect.paths.trades, params, signer).await
    }

    /// The account's balances (`GET /api/v3/account`), where the market has that endpoint.
    ///
    /// # Errors
    /// The call failed, or the market has no such endpoint ([`RestError::NotSent`]).
    pub async fn balances(&self, signer: Signer<'_>) -> Result<Vec<AccountBalance>, RestError> {
        let Some(path) = self.dialect.paths.account else {
            return Err(RestError::NotSent(format!("{} has no account endpoint", self.venue())));
        };
        let account: Account = self.signed(reqwest::Method::GET, path, Vec::new(), signer).await?;
        Ok(account.balances)
    }

    /// Sends a signed request: measures the clock first when it is stale, and once more after a
    /// `-1021`, then sends the request again with a new timestamp (a second `-1021` is
    /// returned). Only `-1021` is retried: Binance checks the timestamp before anything else, so
    /// the first request did nothing, even a placement. Any other failure, an unknown outcome
    /// above all, is returned as it is.
    pub(crate) async fn signed<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        params: Vec<(&str, String)>,
        signer: Signer<'_>,
    ) -> Result<T, RestError> {
        signed_call(
            &self.clock,
            self.venue(),
            || self.measure(),
            || self.signed_once(method.clone(), path, params.clone(), signer),
            RestError::is_clock_skew,
        )
        .await
    }

    /// A request that carries the API key but no signature (Binance's `USER_STREAM` security:
    /// the futures listen key), with `params` in the query string.
    ///
    /// # Errors
    /// The call failed.
    pub(crate) async fn keyed<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, String)],
        api_key: &str,
    ) -> Result<T, RestError> {
        self.throttle().await;
        let query = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let req = self.http.request(method, url).header("X-MBX-APIKEY", api_key);
        let (body, _) = self.send_reading(req).await?;
        decode(&body)
    }

    /// [`sync_time`](Self::sync_time), logging a failure.
    async fn measure(&self) -> Result<i64, RestError> {
        let measured = self.sync_time().await;
        if let Err(err) = &measured {
            tracing::warn!(venue = self.venue(), error = %err, "binance clock not measured");
        }
        measured
    }

    /// One signed request, stamped now.
    async fn signed_once<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        mut params: Vec<(&str, String)>,
        signer: Signer<'_>,
    ) -> Result<T, RestError> {
        self.throttle().await;
        params.push(("recvWindow", self.recv_window_ms.to_string()));
        params.push(("timestamp", self.timestamp().to_string()));
        let query = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let (api_key, signature) = signer(query.clone()).await.map_err(RestError::Sign)?;
        let places = method == reqwest::Method::POST;
        if places {
            self.check_order_rate(&api_key)?;
        }
        let orders = self.new_orders(&method, path);
        if orders > 0 {
            let account = AccountKey::new(self.venue_id(), &api_key);
            let limits = self.dialect.order_limits;
            let ask = BudgetAsk {
                account: &account,
                limits,
                orders,
                now_ms: self.timestamp(),
                uncertainty_ms: self.clock.uncertainty_ms(),
            };
            self.budget.take(ask).await?;
        }
        let url = format!("{}{path}?{query}&signature={signature}", self.base);
        let req = self.http.request(method, url).header("X-MBX-APIKEY", &api_key);
        let (body, headers) = self.send_reading(req).await?;
        if places && let Some(count) = header_u32(&headers, "x-mbx-order-count-10s") {
            let now = crate::now_us() / 1000;
            let mut counts = self.order_counts.lock().unwrap_or_else(PoisonError::into_inner);
            if counts.len() > 10_000 {
                counts.retain(|_, (_, at)| now.saturating_sub(*at) < ORDER_WINDOW_MS);
            }
            counts.insert(api_key, (count, now));
        }
        decode(&body)
    }

    /// How many orders a request creates: what it asks of the account's order budget.
    fn new_orders(&self, method: &reqwest::Method, path: &str) -> u32 {
        if *method != reqwest::Method::POST {
            return 0;
        }
        let paths = self.dialect.paths.new_orders;
        paths.iter().find(|(p, _)| *p == path).map_or(0, |(_, orders)| *orders)
    }

    /// Near the minute's budget: spread what is left rather than get banned (-1003/418).
    async fn throttle(&self) {
        // Keel slows down above 90 % of the market's budget.
        if self.used_weight.load(Ordering::Relaxed) >= self.dialect.weight_per_minute * 9 / 10 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends (callers [`throttle`](Self::throttle) first, before taking any timestamp).
    /// Refuses a new order on an account that has used nearly all of its 10-second order budget
    /// (Binance: 100 per 10 s per account on spot), instead of being refused by Binance.
    fn check_order_rate(&self, api_key: &str) -> Result<(), RestError> {
        let counts = self.order_counts.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(&(count, at)) = counts.get(api_key) else { return Ok(()) };
        let elapsed = (crate::now_us() / 1000).saturating_sub(at);
        let slowdown = self.dialect.orders_per_10s.saturating_sub(5);
        if count >= slowdown && elapsed < ORDER_WINDOW_MS {
            return Err(RestError::Backoff(ORDER_WINDOW_MS - elapsed));
        }
        Ok(())
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, RestError> {
        self.send_reading(req).await.map(|(body, _)| body)
    }

    /// Sends, and returns the body with the headers of a 2xx answer.
    async fn send_reading(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(Vec<u8>, reqwest::header::HeaderMap), RestError> {
        let now = crate::now_us() / 1000;
        let blocked_until = self.blocked_until_ms.load(Ordering::Relaxed);
        if now < blocked_until {
            // Sending during a 429/418 back-off gets the ban extended (up to days for 418).
            return Err(RestError::Backoff(blocked_until - now));
        }
        let res = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_builder() {
                RestError::NotSent(e.to_string())
            } else {
                RestError::NoAnswer(e.to_string())
            }
        })?;
        if let Some(weight) = header_u32(res.headers(), "x-mbx-used-weight-1m") {
            self.used_weight.store(weight, Ordering::Relaxed);
        }
        // `X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)`, one per interval Binance counts
        // for this IP (spot budgets only the minute, which paces requests above); all shown.
        for (interval, weight) in used_weights(res.headers()) {
            metrics::gauge!("keel_venue_used_weight", "venue" => self.venue(), "interval" => interval)
                .set(f64::from(weight));
        }
        let status = res.status().as_u16();
        if matches!(status, 418 | 429) {
            let wait_secs = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(DEFAULT_BACKOFF_SECS);
            let until = crate::now_us() / 1000 + wait_secs.min(MAX_BACKOFF_SECS) * 1000;
            self.blocked_until_ms.fetch_max(until, Ordering::Relaxed);
            tracing::warn!(venue = self.venue(), status, wait_secs, "binance asked for a pause");
        }
        let headers = res.headers().clone();
        let body = res.bytes().await.map_err(|e| RestError::NoAnswer(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok((body.to_vec(), headers));
        }
        let (code, msg) = match serde_json::from_slice::<ApiErrorBody>(&body) {
            Ok(e) => (e.code, e.msg),
            Err(_) => (0, String::from_utf8_lossy(&body).chars().take(200).collect()),
        };
        metrics::counter!("keel_venue_errors_total", "venue" => self.venue(), "code" => code.to_string()).increment(1);
        Err(RestError::Api { status, code, msg })
    }
}

/// Every `X-MBX-USED-WEIGHT-*` header: (interval, lower-cased as sent: `1m`, `1s`), weight.
fn used_weights(headers: &reqwest::header::HeaderMap) -> Vec<(String, u32)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let interval = name.as_str().strip_prefix("x-mbx-used-weight-")?;
            Some((interval.to_owned(), value.to_str().ok()?.trim().parse().ok()?))
        })
        .collect()
}

fn header_u32(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u32> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RestError> {
    serde_json::from_slice(body).map_err(|e| RestError::Decode(e.to_string()))
}

/// The parameters that name one of our orders: its symbol and our client order id.
fn by_id(symbol: &Symbol, client_order_id: &str) -> Vec<(&'static str, String)> {
    vec![("symbol", symbol.to_string()), ("origClientOrderId", client_order_id.to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_order_answers_decode() {
        let fixtures = include_str!("../../../testkit/fixtures/binance/rest_spot.jsonl");
        let mut lines = fixtures.lines();
        let full: VenueOrder = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!((full.status.as_str(), full.fills.len()), ("FILLED", 1));
        assert_eq!(full.client_order_id, "keel-42-000017");
        let query: VenueOrder = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(query.status, "NEW");
    }

    #[tokio::test]
    async fn a_429_stops_every_request_for_its_retry_after() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let body = r#"{"code":-1003,"msg":"Too many requests."}"#;
                let answer = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            }
        });
        let client = RestClient::new(&super::super::SPOT, &base).unwrap();
        let first = client.sync_time().await.unwrap_err();
        assert!(matches!(first, RestError::Api { status: 429, code: -1003, .. }), "{first:?}");
        assert!(!first.is_unknown_outcome(), "a 429 was refused, not lost");
        match client.sync_time().await.unwrap_err() {
            RestError::Backoff(ms) => assert!((6_000..=7_000).contains(&ms), "{ms}"),
            other => panic!("expected a back-off, got {other:?}"),
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "nothing is sent during the back-off");
    }

    #[tokio::test]
    async fn balances_are_read_from_a_signed_account_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let request = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = request.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            *seen.lock().unwrap() = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = r#"{"balances":[{"asset":"USDT","free":"10.50","locked":"1.25"}]}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(answer.as_bytes()).await.unwrap();
        });
        let client = RestClient::new(&super::super::SPOT, &base).unwrap();
        client.clock().record(0); // measured: the one request this server answers is the account's
        let signer = |payload: String| -> futures_util::future::BoxFuture<
            'static,
            Result<(String, String), String>,
        > {
            Box::pin(async move { Ok(("key".to_owned(), format!("sig-{}", payload.len()))) })
        };
        let balances = client.balances(&signer).await.unwrap();
        assert_eq!(balances.len(), 1);
        assert_eq!(
            (balances[0].asset.as_str(), balances[0].free, balances[0].locked),
            ("USDT", Decimal::new(1050, 2), Decimal::new(125, 2))
        );
        let request = request.lock().unwrap().clone();
        assert!(request.starts_with("GET /api/v3/account?recvWindow="), "{request}");
        assert!(request.contains("&signature=sig-"), "{request}");
        assert!(request.to_ascii_lowercase().contains("x-mbx-apikey: key"), "{request}");
        let futures = RestClient::new(&crate::binance_futures::DIALECT, &base).unwrap();
        assert!(matches!(futures.balances(&signer).await, Err(RestError::NotSent(_))));
    }

    #[test]
    fn every_used_weight_header_is_read_by_interval() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-mbx-used-weight-1m", "321".parse().unwrap());
        headers.insert("x-mbx-used-weight-1s", "4".parse().unwrap());
        headers.insert("x-mbx-order-count-10s", "2".parse().unwrap());
        let mut read = used_weights(&headers);
        read.sort();
        assert_eq!(read, vec![("1m".to_owned(), 321), ("1s".to_owned(), 4)]);
    }

    #[test]
    fn only_answers_that_leave_the_outcome_open_are_unknown() {
        let api = |status, code| RestError::Api { status, code, msg: String::new() };
        assert!(api(503, 0).is_unknown_outcome());
        assert!(!api(400, -2010).is_unknown_outcome());
        assert!(api(400, -1021).is_clock_skew());
        assert!(RestError::NoAnswer("timeout".into()).is_unknown_outcome());
        assert!(!RestError::NotSent("refused".into()).is_unknown_outcome());
        assert_eq!(urlencode("keel-1-000001"), "keel-1-000001");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
