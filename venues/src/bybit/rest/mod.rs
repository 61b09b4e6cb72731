//! Bybit v5 REST: server time, instrument rules, signed orders and wallet balances.
//!
//! This module holds the client, its errors and the market and wallet calls; [`orders`] the
//! order calls and a create's body; [`derivatives`] leverage, margin mode, positions and
//! funding; `transport` how a request is signed, sent and its envelope read.
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
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;

pub mod derivatives;
pub mod orders;
mod transport;

pub use derivatives::{RawPosition, funding_payment, settle_coin};
pub use orders::{
    BracketLeg, VenueOrder, conditional_body, create_body, reduce_only, spot_fee_coin,
    trigger_direction,
};

use super::Category;
use crate::budget::{BudgetSlot, Held};
use crate::clock::{CLOCK_REFRESH, ServerClock, local_ms};
use crate::routing::Signer;
use crate::urlencode;
use keel_core::market::Symbol;
use keel_core::trading::InstrumentFilters;

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
    /// The account's shared order budget held the new order back; nothing was sent.
    #[error("{0}")]
    Held(#[from] Held),
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
    /// What each new order asks first ([`crate::budget`]): granted until a shared one is set.
    budget: BudgetSlot,
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
            budget: BudgetSlot::default(),
        })
    }

    /// The account order budget new orders ask before they are sent (shared across nodes in
    /// cluster mode: set it once with [`BudgetSlot::set`]).
    pub fn budget(&self) -> &BudgetSlot {
        &self.budget
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
        self.clock.record_within(offset, u64::try_from((now - sent) / 2).unwrap_or(0));
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
