//! Bybit v5 REST: server time, instrument rules, signed orders and wallet balances.
//!
//! Signing, as <https://bybit-exchange.github.io/docs/v5/guide> documents it: the headers
//! `X-BAPI-API-KEY`, `X-BAPI-TIMESTAMP`, `X-BAPI-RECV-WINDOW` and `X-BAPI-SIGN`, the last
//! being the hex HMAC-SHA256 of `timestamp + api_key + recv_window + payload`, where the payload
//! is the query string of a GET and the exact JSON body of a POST. The key is part of the signed
//! text, and the vault holds it: the client asks the [`Signer`] once with an empty payload to
//! learn the key (the signature of that call is thrown away), then signs the real text.
//!
//! Time: Bybit refuses a request whose timestamp is not within
//! `server_time - recv_window <= timestamp < server_time + 1000` (retCode `10002`). As for
//! Binance, the offset to Bybit's clock is measured before the first signed call and every
//! [`CLOCK_REFRESH`], and a `10002` is measured for and sent once more.
//!
//! Answers: Bybit says HTTP 200 with `retCode` 0 on success and a non-zero `retCode` on most
//! errors. Rate limits: `X-Bapi-Limit-Status` is what is left of the endpoint's budget and
//! `X-Bapi-Limit-Reset-Timestamp` when it refills; at 0 left, or after a `10006`, requests wait
//! for the reset. An HTTP 403 is Bybit's IP ban ("access too frequent"): 10 minutes without
//! requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Category;
use crate::clock::{CLOCK_REFRESH, ServerClock, local_ms, signed_call};
use crate::routing::{FundingPayment, OrderFill, Signer, VenuePosition};
use crate::urlencode;
use keel_core::bot::MarginType;
use keel_core::market::Symbol;
use keel_core::trading::{InstrumentFilters, Order, OrderOrigin, OrderType, Side, TimeInForce};

/// How long one REST call may take.
pub const REST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bybit's default `recv_window`, ms.
pub const RECV_WINDOW_MS: u64 = 5_000;
/// How long Bybit bans an IP that sent too much (HTTP 403), ms.
const IP_BAN_MS: u64 = 10 * 60 * 1000;
/// Back-off after a `10006` without a reset time, ms.
const DEFAULT_BACKOFF_MS: u64 = 1_000;
/// `set-leverage`'s answer when the leverage already is what was asked: success for Keel.
pub const LEVERAGE_NOT_MODIFIED: i64 = 110_043;
/// The widest time range `/v5/execution/list` answers for, ms (7 days).
const EXECUTION_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most funding windows one [`RestClient::funding`] call walks: the two years Bybit keeps
/// executions for.
const MAX_FUNDING_WINDOWS: u64 = 105;

/// What went wrong with a REST call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// Bybit answered with an error code (`retCode`), or an HTTP error status.
    #[error("bybit answered {status}: retCode {code} {msg}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Bybit's `retCode` (0 when the body had none).
        code: i64,
        /// Bybit's `retMsg`.
        msg: String,
    },
    /// Sent, but no answer came (timeout, connection dropped): the outcome is unknown.
    #[error("no answer from bybit: {0}")]
    NoAnswer(String),
    /// Never sent (connection refused).
    #[error("not sent to bybit: {0}")]
    NotSent(String),
    /// An answer that is not what Bybit documents.
    #[error("unreadable bybit answer: {0}")]
    Decode(String),
    /// The vault could not sign.
    #[error("signing failed: {0}")]
    Sign(String),
    /// An order type Keel does not route to Bybit (stop-limit, trailing stop); nothing was sent.
    #[error("not supported on bybit: {0}")]
    Unsupported(String),
    /// Held back by a rate limit or ban for this many more ms.
    #[error("bybit rate limit: retry in {0} ms")]
    Backoff(u64),
}

impl RestError {
    /// Refused for its timestamp (`10002`): nothing happened.
    pub fn is_clock_skew(&self) -> bool {
        matches!(self, RestError::Api { code: 10002, .. })
    }

    /// The order does not exist, or is no longer open (cancel of a closed order).
    pub fn is_not_open(&self) -> bool {
        // 110001: derivatives "order does not exist"; 170213: spot "Order does not exist."
        matches!(self, RestError::Api { code: 110_001 | 170_213, .. })
    }

    /// The request may or may not have taken effect.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            // 10000: server timeout; 10016: server error.
            RestError::Api { status, code, .. } => *status >= 500 || matches!(code, 10000 | 10016),
            RestError::NoAnswer(_) | RestError::Decode(_) => true,
            _ => false,
        }
    }
}

/// An order as Bybit lists it (`/v5/order/realtime`, `/v5/order/history`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VenueOrder {
    /// Our client order id.
    pub order_link_id: String,
    /// `New`, `PartiallyFilled`, `Filled`, `Cancelled`, `PartiallyFilledCanceled`, `Rejected`,
    /// `Untriggered`, `Triggered`, `Deactivated`.
    pub order_status: String,
    /// Filled base quantity so far.
    #[serde(with = "rust_decimal::serde::str")]
    pub cum_exec_qty: Decimal,
    /// Filled quote amount so far.
    #[serde(with = "rust_decimal::serde::str")]
    pub cum_exec_value: Decimal,
}

impl VenueOrder {
    /// The status in the words the seam uses (Binance's): `NEW`, `PARTIALLY_FILLED`, `FILLED`,
    /// `CANCELED`, `REJECTED`, `EXPIRED`.
    pub fn status_word(&self) -> &'static str {
        match self.order_status.as_str() {
            "PartiallyFilled" => "PARTIALLY_FILLED",
            "Filled" => "FILLED",
            "Cancelled" | "PartiallyFilledCanceled" => "CANCELED",
            "Rejected" => "REJECTED",
            "Deactivated" => "EXPIRED",
            // New, Untriggered (a conditional order waiting), Triggered (just sent to the book).
            _ => "NEW",
        }
    }
}

/// One coin of the unified account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinBalance {
    /// The coin.
    pub coin: String,
    /// Available: the wallet balance less what orders hold.
    pub free: Decimal,
    /// Held by open orders.
    pub locked: Decimal,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<T> {
    ret_code: i64,
    #[serde(default)]
    ret_msg: String,
    #[serde(default)]
    result: Option<T>,
    #[serde(default)]
    time: i64,
}

#[derive(Deserialize)]
struct List<T> {
    list: Vec<T>,
    #[serde(default, rename = "nextPageCursor")]
    next_page_cursor: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instrument {
    symbol: String,
    status: String,
    lot_size_filter: LotSizeFilter,
    price_filter: PriceFilter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LotSizeFilter {
    /// Spot's quantity step.
    base_precision: Option<String>,
    /// Derivatives' quantity step.
    qty_step: Option<String>,
    min_order_qty: String,
    max_order_qty: String,
    /// Spot's minimum order value.
    min_order_amt: Option<String>,
    /// Derivatives' minimum order value.
    min_notional_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceFilter {
    tick_size: String,
}

#[derive(Deserialize)]
struct Wallet {
    coin: Vec<WalletCoin>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WalletCoin {
    coin: String,
    wallet_balance: String,
    #[serde(default)]
    locked: String,
    #[serde(default, rename = "totalOrderIM")]
    total_order_im: String,
    #[serde(default, rename = "totalPositionIM")]
    total_position_im: String,
}

/// A unified account coin's free and held amounts: held is what spot orders lock (`locked`)
/// plus the initial margin of derivatives orders and positions (`totalOrderIM`,
/// `totalPositionIM`; empty where the account mode does not give them per coin).
pub fn coin_amounts(
    wallet_balance: &str,
    locked: &str,
    order_im: &str,
    position_im: &str,
) -> (Decimal, Decimal) {
    let total = decimal_or_zero(wallet_balance);
    let held = decimal_or_zero(locked) + decimal_or_zero(order_im) + decimal_or_zero(position_im);
    ((total - held).max(Decimal::ZERO), held)
}

/// Bybit's REST endpoint for one category, with its clock offset and rate-limit state. Share one
/// per venue.
#[derive(Debug)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    category: &'static Category,
    clock: ServerClock,
    recv_window_ms: u64,
    /// No request before this time (ms since the epoch).
    blocked_until_ms: AtomicU64,
}

impl RestClient {
    /// A client for `category` at `base` (`https://api.bybit.com`, or a local fake in tests).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(category: &'static Category, base: &str) -> Result<Self, RestError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(REST_TIMEOUT)
            .build()
            .map_err(|e| RestError::NotSent(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            category,
            clock: ServerClock::new(CLOCK_REFRESH),
            recv_window_ms: RECV_WINDOW_MS,
            blocked_until_ms: AtomicU64::new(0),
        })
    }

    /// The same with `recv_window` = `ms`.
    pub fn with_recv_window(mut self, ms: u64) -> Self {
        self.recv_window_ms = ms.max(1);
        self
    }

    /// The same measuring the clock every `refresh` (tests).
    pub fn with_clock_refresh(mut self, refresh: Duration) -> Self {
        self.clock = ServerClock::new(refresh);
        self
    }

    /// The configured `recv_window`, ms.
    pub fn recv_window_ms(&self) -> u64 {
        self.recv_window_ms
    }

    /// The clock offset as measured.
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// Which market.
    pub fn category(&self) -> &'static Category {
        self.category
    }

    fn venue(&self) -> &'static str {
        self.category.venue.as_str()
    }

    /// Measures the offset to Bybit's clock (`GET /v5/market/time`), ms.
    ///
    /// # Errors
    /// The call failed.
    pub async fn sync_time(&self) -> Result<i64, RestError> {
        let sent = local_ms() as i64;
        let envelope = self.send(self.http.get(format!("{}/v5/market/time", self.base))).await?;
        let now = local_ms() as i64;
        if envelope.time <= 0 {
            return Err(RestError::Decode("no `time` in the server time answer".into()));
        }
        let offset = envelope.time - (sent + now) / 2;
        self.clock.record(offset);
        metrics::gauge!("keel_venue_clock_offset_ms", "venue" => self.venue()).set(offset as f64);
        Ok(offset)
    }

    /// Every trading symbol's rules (`GET /v5/market/instruments-info`, every page).
    ///
    /// # Errors
    /// The call failed or the answer is not instrument info.
    pub async fn instruments(&self) -> Result<HashMap<Symbol, InstrumentFilters>, RestError> {
        let mut out = HashMap::new();
        let mut cursor = String::new();
        // Spot answers in one page; derivatives page by 1000. A bound keeps a looping cursor
        // from looping forever.
        for _ in 0..50 {
            let mut url = format!(
                "{}/v5/market/instruments-info?category={}&limit=1000",
                self.base, self.category.name
            );
            if !cursor.is_empty() {
                url.push_str("&cursor=");
                url.push_str(&urlencode(&cursor));
            }
            let page: List<Instrument> = self.result(self.send(self.http.get(url)).await?)?;
            for instrument in page.list.iter().filter(|i| i.status == "Trading") {
                if let (Some(symbol), Some(filters)) =
                    (Symbol::parse(&instrument.symbol), filters_of(instrument))
                {
                    out.insert(symbol, filters);
                }
            }
            if page.next_page_cursor.is_empty() {
                return Ok(out);
            }
            cursor = page.next_page_cursor;
        }
        Ok(out)
    }

    /// Places `order` (`POST /v5/order/create`, `orderLinkId` = our client order id), then reads
    /// it back once: a create answer carries only the ids, and a market order has usually filled
    /// by then. If the read fails the order is reported `NEW` (it was accepted), for the caller to
    /// query later. A stop is sent as the market order it becomes (Keel emulates stops). A market
    /// buy on spot is sized in the base coin (`marketUnit=baseCoin`; Bybit's default for it is
    /// the quote coin).
    ///
    /// # Errors
    /// See [`RestError::is_unknown_outcome`].
    pub async fn place(
        &self,
        symbol: &Symbol,
        order: &Order,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let body = create_body(self.category, symbol, order)?;
        let _: serde_json::Value =
            self.signed(reqwest::Method::POST, "/v5/order/create", body, signer).await?;
        match self.query(symbol, &order.client_order_id, signer).await {
            Ok(found) => Ok(found),
            Err(err) => {
                tracing::debug!(venue = self.venue(), error = %err, "placed; state not read back");
                Ok(VenueOrder {
                    order_link_id: order.client_order_id.clone(),
                    order_status: "New".into(),
                    cum_exec_qty: Decimal::ZERO,
                    cum_exec_value: Decimal::ZERO,
                })
            }
        }
    }

    /// Looks an order up by our client id: open orders first, then the recent closed ones
    /// (`openOnly=1`), then the order history (Bybit keeps only the last 500 closed orders in
    /// the first two, and none after one of its restarts).
    ///
    /// # Errors
    /// `Api { code: 170213 }`-like "not found" as [`RestError::is_not_open`] when Bybit has no
    /// such order anywhere.
    pub async fn query(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let base = format!(
            "category={}&symbol={}&orderLinkId={}",
            self.category.name,
            symbol.as_str(),
            urlencode(client_order_id)
        );
        for (path, extra) in [
            ("/v5/order/realtime", ""),
            ("/v5/order/realtime", "&openOnly=1"),
            ("/v5/order/history", ""),
        ] {
            let query = format!("{base}{extra}");
            let page: List<VenueOrder> =
                self.signed(reqwest::Method::GET, path, query, signer).await?;
            if let Some(found) = page.list.into_iter().find(|o| o.order_link_id == client_order_id)
            {
                return Ok(found);
            }
        }
        Err(RestError::Api { status: 200, code: 170_213, msg: "Order does not exist.".into() })
    }

    /// Cancels an order by our client id (`POST /v5/order/cancel`), then reads its final state.
    /// A cancel that Bybit accepted but whose state cannot be read is an unknown outcome for the
    /// order's fills: the caller queries it.
    ///
    /// # Errors
    /// [`RestError::is_not_open`] when it is not open there.
    pub async fn cancel(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<VenueOrder, RestError> {
        let body = serde_json::json!({
            "category": self.category.name,
            "symbol": symbol.as_str(),
            "orderLinkId": client_order_id,
        })
        .to_string();
        let _: serde_json::Value =
            self.signed(reqwest::Method::POST, "/v5/order/cancel", body, signer).await?;
        self.query(symbol, client_order_id, signer).await.map_err(|err| {
            RestError::NoAnswer(format!("cancel accepted, final state not read: {err}"))
        })
    }

    /// The unified account's balances (`GET /v5/account/wallet-balance?accountType=UNIFIED`).
    ///
    /// # Errors
    /// The call failed.
    pub async fn balances(&self, signer: Signer<'_>) -> Result<Vec<CoinBalance>, RestError> {
        let page: List<Wallet> = self
            .signed(
                reqwest::Method::GET,
                "/v5/account/wallet-balance",
                "accountType=UNIFIED".to_owned(),
                signer,
            )
            .await?;
        let mut out = Vec::new();
        for coin in page.list.into_iter().flat_map(|w| w.coin) {
            let (free, locked) = coin_amounts(
                &coin.wallet_balance,
                &coin.locked,
                &coin.total_order_im,
                &coin.total_position_im,
            );
            out.push(CoinBalance { coin: coin.coin, free, locked });
        }
        Ok(out)
    }

    /// The trades of the order `client_order_id` with the fee of each and its coin
    /// (`GET /v5/execution/list?orderLinkId=…&execType=Trade`, the last 7 days), oldest first.
    /// Bybit's order answers carry cumulative figures only; these make a position
    /// commission-aware (spot takes the fee in the coin received).
    ///
    /// # Errors
    /// The call failed or an execution's numbers are not numbers.
    pub async fn fills(
        &self,
        symbol: &Symbol,
        client_order_id: &str,
        signer: Signer<'_>,
    ) -> Result<Vec<OrderFill>, RestError> {
        let query = format!(
            "category={}&symbol={}&orderLinkId={}&execType=Trade&limit=100",
            self.category.name,
            symbol.as_str(),
            urlencode(client_order_id)
        );
        let page: List<RawExecution> =
            self.signed(reqwest::Method::GET, "/v5/execution/list", query, signer).await?;
        let mut fills = Vec::new();
        // Newest first as Bybit sorts them; the engine wants them in the order they happened.
        for exec in page.list.iter().rev().filter(|e| e.exec_type == "Trade") {
            let number = |field: &str, s: &str| -> Result<Decimal, RestError> {
                s.parse().map_err(|_| RestError::Decode(format!("execution {field} {s:?}")))
            };
            let fee_asset = match exec.fee_currency.as_str() {
                "" if self.category.derivatives => settle_coin(&exec.symbol).to_owned(),
                "" => spot_fee_coin(&exec.symbol, &exec.side),
                coin => coin.to_owned(),
            };
            fills.push(OrderFill {
                price: number("execPrice", &exec.exec_price)?,
                qty: number("execQty", &exec.exec_qty)?,
                fee: number("execFee", &exec.exec_fee)?,
                fee_asset,
            });
        }
        Ok(fills)
    }

    /// Sets `symbol`'s leverage for both sides (`POST /v5/position/set-leverage`; one-way mode
    /// wants them equal). Already so (`110043`) is success.
    ///
    /// # Errors
    /// The call failed.
    pub async fn set_leverage(
        &self,
        symbol: &Symbol,
        leverage: u32,
        signer: Signer<'_>,
    ) -> Result<(), RestError> {
        let body = serde_json::json!({
            "category": self.category.name,
            "symbol": symbol.as_str(),
            "buyLeverage": leverage.to_string(),
            "sellLeverage": leverage.to_string(),
        })
        .to_string();
        match self
            .signed::<serde_json::Value>(
                reqwest::Method::POST,
                "/v5/position/set-leverage",
                body,
                signer,
            )
            .await
        {
            Err(RestError::Api { code: LEVERAGE_NOT_MODIFIED, .. }) | Ok(_) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The unified account's margin mode (`GET /v5/account/info`): isolated, or cross (regular
    /// and portfolio margin are both cross-margined).
    ///
    /// # Errors
    /// The call failed, or the mode is not one Bybit documents.
    pub async fn margin_mode(&self, signer: Signer<'_>) -> Result<MarginType, RestError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            margin_mode: String,
        }
        let info: Info =
            self.signed(reqwest::Method::GET, "/v5/account/info", String::new(), signer).await?;
        match info.margin_mode.as_str() {
            "ISOLATED_MARGIN" => Ok(MarginType::Isolated),
            "REGULAR_MARGIN" | "PORTFOLIO_MARGIN" => Ok(MarginType::Cross),
            other => Err(RestError::Decode(format!("unknown margin mode {other:?}"))),
        }
    }

    /// Makes the unified account's margin mode `margin_type`, unless it already is: a unified
    /// account sets it for the whole account (`POST /v5/account/set-margin-mode`,
    /// `ISOLATED_MARGIN` or `REGULAR_MARGIN`); the per-symbol `switch-isolated` is for classic
    /// accounts only. Bybit refuses the switch while positions or orders stand in its way, with
    /// its reasons.
    ///
    /// # Errors
    /// The call failed or Bybit gave reasons not to switch.
    pub async fn set_margin_mode(
        &self,
        margin_type: MarginType,
        signer: Signer<'_>,
    ) -> Result<(), RestError> {
        if self.margin_mode(signer).await? == margin_type {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct Reasons {
            #[serde(default)]
            reasons: Vec<Reason>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Reason {
            #[serde(default)]
            reason_code: String,
            #[serde(default)]
            reason_msg: String,
        }
        let mode = match margin_type {
            MarginType::Isolated => "ISOLATED_MARGIN",
            MarginType::Cross => "REGULAR_MARGIN",
        };
        let body = serde_json::json!({ "setMarginMode": mode }).to_string();
        let answer: Reasons =
            self.signed(reqwest::Method::POST, "/v5/account/set-margin-mode", body, signer).await?;
        match answer.reasons.first() {
            None => Ok(()),
            Some(reason) => Err(RestError::Api {
                status: 200,
                code: reason.reason_code.parse().unwrap_or(0),
                msg: reason.reason_msg.clone(),
            }),
        }
    }

    /// The account's open positions in this category (`GET /v5/position/list`, by settle
    /// coin, every page); flat ones are left out.
    ///
    /// # Errors
    /// The call failed.
    pub async fn positions(
        &self,
        settle_coins: &[&str],
        margin_type: Option<MarginType>,
        signer: Signer<'_>,
    ) -> Result<Vec<VenuePosition>, RestError> {
        let mut out = Vec::new();
        for coin in settle_coins {
            let mut cursor = String::new();
            for _ in 0..50 {
                let mut query =
                    format!("category={}&settleCoin={coin}&limit=200", self.category.name);
                if !cursor.is_empty() {
                    query.push_str("&cursor=");
                    query.push_str(&urlencode(&cursor));
                }
                let page: List<RawPosition> =
                    self.signed(reqwest::Method::GET, "/v5/position/list", query, signer).await?;
                out.extend(
                    page.list
                        .iter()
                        .filter_map(|p| p.to_position(margin_type))
                        .filter(|p| !p.qty.is_zero()),
                );
                if page.next_page_cursor.is_empty() {
                    break;
                }
                cursor = page.next_page_cursor;
            }
        }
        Ok(out)
    }

    /// Funding paid or received on `symbol` from `since_ms` on, oldest first: the executions
    /// of type `Funding` (`GET /v5/execution/list?execType=Funding`), asked for in the 7-day
    /// windows Bybit answers for, every page, at most the last two years (what Bybit keeps).
    ///
    /// # Errors
    /// The call failed.
    pub async fn funding(
        &self,
        symbol: &Symbol,
        since_ms: u64,
        signer: Signer<'_>,
    ) -> Result<Vec<FundingPayment>, RestError> {
        let now = self.clock.timestamp().max(since_ms);
        let mut out = Vec::new();
        let mut start = since_ms.max(now.saturating_sub(MAX_FUNDING_WINDOWS * EXECUTION_WINDOW_MS));
        for _ in 0..=MAX_FUNDING_WINDOWS {
            let end = (start + EXECUTION_WINDOW_MS - 1).min(now);
            let mut cursor = String::new();
            for _ in 0..50 {
                let mut query = format!(
                    "category={}&symbol={}&execType=Funding&startTime={start}&endTime={end}&limit=100",
                    self.category.name,
                    symbol.as_str()
                );
                if !cursor.is_empty() {
                    query.push_str("&cursor=");
                    query.push_str(&urlencode(&cursor));
                }
                let page: List<RawExecution> =
                    self.signed(reqwest::Method::GET, "/v5/execution/list", query, signer).await?;
                out.extend(page.list.iter().filter(|e| e.exec_type == "Funding").filter_map(|e| {
                    funding_payment(
                        &e.symbol,
                        &e.exec_id,
                        &e.exec_fee,
                        &e.exec_time,
                        &e.fee_currency,
                    )
                }));
                if page.next_page_cursor.is_empty() {
                    break;
                }
                cursor = page.next_page_cursor;
            }
            if end >= now {
                break;
            }
            start = end + 1;
        }
        out.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then_with(|| a.id.cmp(&b.id)));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// A signed call with the clock applied (`crate::clock::signed_call`): measured first when
    /// stale, and once more after a `10002`, then sent again. Nothing else is retried.
    async fn signed<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        payload: String,
        signer: Signer<'_>,
    ) -> Result<T, RestError> {
        signed_call(
            &self.clock,
            self.venue(),
            || self.measure(),
            || self.signed_once(method.clone(), path, &payload, signer),
            RestError::is_clock_skew,
        )
        .await
    }

    async fn measure(&self) -> Result<i64, RestError> {
        let measured = self.sync_time().await;
        if let Err(err) = &measured {
            tracing::warn!(venue = self.venue(), error = %err, "bybit clock not measured");
        }
        measured
    }

    async fn signed_once<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        payload: &str,
        signer: Signer<'_>,
    ) -> Result<T, RestError> {
        // The vault holds the key; learn it (the signature of an empty text is discarded).
        let (api_key, _) = signer(String::new()).await.map_err(RestError::Sign)?;
        let timestamp = self.clock.timestamp().to_string();
        let recv_window = self.recv_window_ms.to_string();
        let text = format!("{timestamp}{api_key}{recv_window}{payload}");
        let (_, signature) = signer(text).await.map_err(RestError::Sign)?;
        let req = if method == reqwest::Method::GET {
            let url = if payload.is_empty() {
                format!("{}{path}", self.base)
            } else {
                format!("{}{path}?{payload}", self.base)
            };
            self.http.get(url)
        } else {
            self.http
                .request(method, format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload.to_owned())
        };
        let req = req
            .header("X-BAPI-API-KEY", &api_key)
            .header("X-BAPI-TIMESTAMP", &timestamp)
            .header("X-BAPI-RECV-WINDOW", &recv_window)
            .header("X-BAPI-SIGN", &signature);
        let envelope = self.send(req).await?;
        self.result(envelope)
    }

    /// The `result` of a successful answer; a non-zero `retCode` as an error. The result is read
    /// only after the code: an error's `result` is `{}`.
    fn result<T: DeserializeOwned>(
        &self,
        envelope: Envelope<serde_json::Value>,
    ) -> Result<T, RestError> {
        if envelope.ret_code != 0 {
            metrics::counter!("keel_venue_errors_total", "venue" => self.venue(), "code" => envelope.ret_code.to_string()).increment(1);
            if envelope.ret_code == 10006 {
                // Too many visits: wait for the budget's reset (the header, when sent, already set it).
                let until = local_ms() + DEFAULT_BACKOFF_MS;
                self.blocked_until_ms.fetch_max(until, Ordering::Relaxed);
            }
            return Err(RestError::Api {
                status: 200,
                code: envelope.ret_code,
                msg: envelope.ret_msg,
            });
        }
        let result = envelope.result.ok_or_else(|| RestError::Decode("no `result`".into()))?;
        serde_json::from_value(result).map_err(|e| RestError::Decode(e.to_string()))
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Envelope<serde_json::Value>, RestError> {
        let now = local_ms();
        let blocked_until = self.blocked_until_ms.load(Ordering::Relaxed);
        if now < blocked_until {
            return Err(RestError::Backoff(blocked_until - now));
        }
        let res = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_builder() {
                RestError::NotSent(e.to_string())
            } else {
                RestError::NoAnswer(e.to_string())
            }
        })?;
        let status = res.status().as_u16();
        let headers = res.headers();
        let left = header_u64(headers, "x-bapi-limit-status");
        let reset = header_u64(headers, "x-bapi-limit-reset-timestamp");
        if left == Some(0)
            && let Some(reset) = reset
        {
            self.blocked_until_ms.fetch_max(reset, Ordering::Relaxed);
        }
        if status == 403 {
            self.blocked_until_ms.fetch_max(local_ms() + IP_BAN_MS, Ordering::Relaxed);
            tracing::warn!(venue = self.venue(), "bybit refused this IP (403): pausing 10 minutes");
        }
        let body = res.bytes().await.map_err(|e| RestError::NoAnswer(e.to_string()))?;
        if !(200..300).contains(&status) {
            let msg: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            let code = serde_json::from_slice::<Envelope<serde_json::Value>>(&body)
                .map(|e| e.ret_code)
                .unwrap_or(0);
            return Err(RestError::Api { status, code, msg });
        }
        serde_json::from_slice(&body).map_err(|e| RestError::Decode(e.to_string()))
    }
}

/// The JSON body of `POST /v5/order/create` for `order`.
///
/// # Errors
/// [`RestError::Unsupported`] for a stop-limit or a trailing stop: Keel does not route those to
/// Bybit yet, and refuses them rather than send something else.
pub fn create_body(
    category: &Category,
    symbol: &Symbol,
    order: &Order,
) -> Result<String, RestError> {
    let side = match order.side {
        Side::Buy => "Buy",
        Side::Sell => "Sell",
    };
    let mut body = serde_json::json!({
        "category": category.name,
        "symbol": symbol.as_str(),
        "side": side,
        "qty": order.remaining().normalize().to_string(),
        "orderLinkId": order.client_order_id,
    });
    if reduce_only(category, order) {
        // An exit can only shrink the position, never open or flip one.
        body["reduceOnly"] = true.into();
    }
    match order.order_type {
        OrderType::Limit { price, time_in_force } => {
            body["orderType"] = "Limit".into();
            body["price"] = price.normalize().to_string().into();
            body["timeInForce"] = match time_in_force {
                TimeInForce::Gtc => "GTC",
                TimeInForce::Ioc => "IOC",
                TimeInForce::Fok => "FOK",
                TimeInForce::PostOnly => "PostOnly",
            }
            .into();
        }
        OrderType::StopLimit { .. } | OrderType::TrailingStop { .. } => {
            return Err(RestError::Unsupported(
                "stop-limit and trailing-stop orders are not routed to bybit".into(),
            ));
        }
        OrderType::Market | OrderType::Stop { .. } => {
            body["orderType"] = "Market".into();
            if category.name == "spot" {
                body["marketUnit"] = "baseCoin".into();
            }
        }
    }
    Ok(body.to_string())
}

/// Whether `order` goes to the venue reduce-only: an exit (take-profit, stop-loss, close) on a
/// derivatives category. Spot has no positions to reduce.
pub fn reduce_only(category: &Category, order: &Order) -> bool {
    category.derivatives
        && matches!(
            order.origin,
            OrderOrigin::TakeProfit | OrderOrigin::StopLoss | OrderOrigin::Close
        )
}

/// The coin Bybit spot takes a taker's fee in when an execution does not say: the coin received
/// (the base on a buy, the quote on a sell).
pub fn spot_fee_coin(symbol: &str, side: &str) -> String {
    let quote = ["USDT", "USDC", "BTC", "ETH", "EUR"]
        .into_iter()
        .find(|q| symbol.ends_with(q) && symbol.len() > q.len())
        .unwrap_or("");
    if side == "Buy" { symbol[..symbol.len() - quote.len()].to_owned() } else { quote.to_owned() }
}

/// The coin a linear contract settles in: USDT perpetuals end in `USDT`; the others are USDC's.
pub fn settle_coin(symbol: &str) -> &'static str {
    if symbol.ends_with("USDT") { "USDT" } else { "USDC" }
}

/// A position as Bybit lists it (`/v5/position/list`) and pushes it (the private `position`
/// topic): the same fields in both.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPosition {
    /// `linear`, `inverse`, `option` (the stream says; the REST list does not repeat it).
    #[serde(default)]
    pub category: Option<String>,
    /// Symbol.
    pub symbol: String,
    /// `Buy` (long), `Sell` (short), or empty / `None` when flat.
    #[serde(default)]
    pub side: String,
    /// Size, unsigned.
    pub size: String,
    /// Average entry price.
    #[serde(default)]
    pub avg_price: Option<String>,
    /// The stream's older name for it.
    #[serde(default)]
    pub entry_price: Option<String>,
    /// Mark price.
    #[serde(default)]
    pub mark_price: Option<String>,
    /// Liquidation price ("" when none).
    #[serde(default)]
    pub liq_price: Option<String>,
    /// Unrealised P&L.
    #[serde(default)]
    pub unrealised_pnl: Option<String>,
    /// Leverage.
    #[serde(default)]
    pub leverage: Option<String>,
    /// Last change, ms.
    #[serde(default)]
    pub updated_time: Option<String>,
}

impl RawPosition {
    /// The seam's position; `None` when its numbers are not numbers. `margin_type` is the
    /// account's (a unified account's margin mode is account-wide; `tradeMode` is deprecated).
    pub fn to_position(&self, margin_type: Option<MarginType>) -> Option<VenuePosition> {
        let number = |s: &Option<String>| -> Option<Decimal> {
            s.as_deref().filter(|v| !v.is_empty()).and_then(|v| v.parse().ok())
        };
        let size: Decimal = self.size.parse().ok()?;
        let qty = match self.side.as_str() {
            "Sell" => -size,
            "Buy" => size,
            _ => Decimal::ZERO,
        };
        let entry = number(&self.avg_price).or_else(|| number(&self.entry_price));
        let leverage = number(&self.leverage)
            .and_then(|l| rust_decimal::prelude::ToPrimitive::to_u32(&l.round()));
        Some(VenuePosition {
            symbol: self.symbol.clone(),
            qty,
            entry_price: if qty.is_zero() { Decimal::ZERO } else { entry.unwrap_or_default() },
            mark_price: number(&self.mark_price),
            liquidation_price: number(&self.liq_price).filter(|p| !p.is_zero()),
            unrealized_pnl: number(&self.unrealised_pnl).unwrap_or_default(),
            leverage: leverage.filter(|l| *l > 0),
            margin_type,
            updated_ms: self.updated_time.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0),
        })
    }
}

/// An execution as `/v5/execution/list` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExecution {
    symbol: String,
    exec_id: String,
    exec_type: String,
    exec_fee: String,
    exec_time: String,
    #[serde(default)]
    fee_currency: String,
    #[serde(default)]
    side: String,
    #[serde(default)]
    exec_price: String,
    #[serde(default)]
    exec_qty: String,
}

/// A funding execution as a payment. Bybit's `execFee` of a funding is what the account paid
/// (negative when it received), so the payment's signed amount is its negation.
pub fn funding_payment(
    symbol: &str,
    exec_id: &str,
    exec_fee: &str,
    exec_time: &str,
    fee_currency: &str,
) -> Option<FundingPayment> {
    let fee: Decimal = exec_fee.parse().ok()?;
    let asset = if fee_currency.is_empty() { settle_coin(symbol) } else { fee_currency };
    Some(FundingPayment {
        symbol: symbol.to_owned(),
        asset: asset.to_owned(),
        amount: -fee,
        time_ms: exec_time.parse().ok()?,
        id: exec_id.to_owned(),
    })
}

fn filters_of(instrument: &Instrument) -> Option<InstrumentFilters> {
    let lot = &instrument.lot_size_filter;
    let step = lot.qty_step.as_deref().or(lot.base_precision.as_deref())?;
    let min_notional = lot.min_notional_value.as_deref().or(lot.min_order_amt.as_deref());
    Some(InstrumentFilters {
        tick_size: instrument.price_filter.tick_size.parse().ok()?,
        step_size: step.parse().ok()?,
        min_qty: lot.min_order_qty.parse().ok()?,
        max_qty: lot.max_order_qty.parse().ok()?,
        min_notional: min_notional.and_then(|v| v.parse().ok()).unwrap_or_default(),
    })
}

fn decimal_or_zero(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}
