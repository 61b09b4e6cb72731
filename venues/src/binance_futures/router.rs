//! Signed orders on Binance USD-M futures, behind the seam ([`FuturesRouter`]).
//!
//! The REST client (signing, clock, weights, back-offs) is spot's [`RestClient`] with the
//! futures [`super::DIALECT`]; what differs is here:
//! - New Order (`POST /fapi/v1/order`) with `newOrderRespType=RESULT`: the answer carries the
//!   cumulative figures (`executedQty`, `cumQuote`) but no fills, so the trades of an order that
//!   executed are read from `GET /fapi/v1/userTrades` (each with its commission). An exit
//!   (`OrderOrigin::TakeProfit`, `StopLoss`, `Close`) is sent `reduceOnly=true`: it can never
//!   open or flip a position (Binance refuses one that would, `-2022`). A post-only limit is
//!   `timeInForce=GTX`. Since Binance moved conditional orders (`STOP`, `TAKE_PROFIT`,
//!   `TRAILING_STOP_MARKET`, …) to the Algo Order API, `/fapi/v1/order` refuses them; Keel
//!   refuses stop-limit and trailing-stop orders here (a plain stop is emulated as on spot).
//!   A bracket's take-profit and stop-loss are the exception: they go to the Algo Order API as
//!   reduce-only conditional orders ([`super::algo`]), so they hold while Keel is down.
//! - [`prepare`](OrderRouter::prepare): one-way position mode is required
//!   (`GET /fapi/v1/positionSide/dual`), then `POST /fapi/v1/marginType` (`-4046` "No need to
//!   change margin type." is success) and `POST /fapi/v1/leverage` (a leverage above the
//!   symbol's bracket is the venue's refusal, passed on as `Rejected`).
//! - Balances: `GET /fapi/v3/balance` (the futures wallet: `availableBalance` is free, the rest
//!   of `balance` is held as margin).
//! - Positions: `GET /fapi/v3/positionRisk` (which has no leverage nor margin type), completed
//!   from `GET /fapi/v1/symbolConfig` (which has both).
//! - Funding: `GET /fapi/v1/income?incomeType=FUNDING_FEE`, `tranId` as the payment's id.
//!
//! Error codes are classified as spot's ([`route_error`]): `-1021` clock, `-2013` no such
//! order, `-2011` not open, 5xx / no answer unknown, 429/418 back-off not sent.
//!
//! Follows <https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api>
//! and <https://developers.binance.com/docs/derivatives/usds-margined-futures/account/rest-api>.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::user_stream::{self, FuturesStreamConfig};
use crate::account::{AccountStream, OwnedSigner};
use crate::binance::connector::route_error;
use crate::binance::rest::{RestClient, RestError};
use crate::registry::{ExchangeSettings, VenueError, VenueSettings};
use crate::routing::{
    Balance, FundingPayment, OrderFill, OrderListLegs, OrderReport, OrderRouter, RouteError,
    RouteErrorKind, RouteFuture, Signer, VenuePosition,
};
use keel_core::bot::MarginType;
use keel_core::market::{Symbol, VenueId};
use keel_core::trading::{Order, OrderOrigin, OrderType, Side, TimeInForce};

/// Binance's answer to a margin-type change that is already so.
pub const NO_NEED_TO_CHANGE_MARGIN_TYPE: i64 = -4046;
/// Most income records one `GET /fapi/v1/income` returns.
const INCOME_PAGE: usize = 1000;
/// Most pages of funding read in one call (10 000 payments).
const INCOME_PAGES: usize = 10;

/// Builds the futures router from its settings (the registry's `router`).
///
/// # Errors
/// The settings are not an exchange's, or the HTTP client cannot be built.
pub fn build(settings: &VenueSettings) -> Result<Arc<dyn OrderRouter>, VenueError> {
    let VenueSettings::Exchange(settings) = settings else {
        return Err(VenueError("binance_futures needs exchange settings, not a simulation".into()));
    };
    let rest_url = settings.rest_url_or(super::DIALECT.presets(settings.testnet).rest_url);
    let client = RestClient::new(&super::DIALECT, &rest_url)
        .map_err(|err| VenueError(format!("building the binance_futures REST client: {err}")))?
        .with_recv_window(settings.recv_window_ms);
    let router = FuturesRouter::new(Arc::new(client));
    let router = match stream_url(settings) {
        Some(url) => router.with_stream(FuturesStreamConfig::new(url)),
        None => router,
    };
    Ok(Arc::new(router))
}

/// Where the user data stream is: the configured `private_ws_url`, or the preset when the REST
/// endpoint is the preset too (a configured REST endpoint with the preset stream would watch
/// one environment and trade on another: no stream then, bots poll).
fn stream_url(settings: &ExchangeSettings) -> Option<String> {
    let preset = super::DIALECT.presets(settings.testnet).private_ws_url;
    match (settings.private_ws_url.trim(), settings.rest_url.trim()) {
        ("", "") => Some(preset.to_owned()),
        ("", _) => None,
        (url, _) => Some(url.to_owned()),
    }
}

/// Signed orders, positions and funding on Binance USD-M futures.
#[derive(Debug, Clone)]
pub struct FuturesRouter {
    rest: Arc<RestClient>,
    /// The user data stream's endpoint and timings, where there is one.
    stream: Option<FuturesStreamConfig>,
}

/// An order as `/fapi/v1/order` reports it (new with `RESULT`, query, cancel).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FuturesOrder {
    /// The venue's order id.
    #[serde(default)]
    pub order_id: u64,
    /// Our client order id.
    #[serde(default)]
    pub client_order_id: String,
    /// `NEW`, `PARTIALLY_FILLED`, `FILLED`, `CANCELED`, `REJECTED`, `EXPIRED`,
    /// `EXPIRED_IN_MATCH`.
    pub status: String,
    /// Filled base quantity.
    #[serde(with = "rust_decimal::serde::str")]
    pub executed_qty: Decimal,
    /// Filled quote amount.
    #[serde(with = "rust_decimal::serde::str")]
    pub cum_quote: Decimal,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DualSide {
    dual_side_position: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WalletBalance {
    asset: String,
    #[serde(with = "rust_decimal::serde::str")]
    balance: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    available_balance: Decimal,
}

/// One entry of `GET /fapi/v3/positionRisk`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PositionRisk {
    symbol: String,
    #[serde(default)]
    position_side: Option<String>,
    #[serde(with = "rust_decimal::serde::str")]
    position_amt: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    entry_price: Decimal,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    mark_price: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    liquidation_price: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str")]
    un_realized_profit: Decimal,
    #[serde(default)]
    update_time: u64,
}

/// One entry of `GET /fapi/v1/symbolConfig`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SymbolConfig {
    symbol: String,
    margin_type: String,
    leverage: u32,
}

/// One entry of `GET /fapi/v1/income`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Income {
    symbol: String,
    income_type: String,
    #[serde(with = "rust_decimal::serde::str")]
    income: Decimal,
    asset: String,
    time: u64,
    /// A number in the documentation's samples; read as a string too.
    tran_id: serde_json::Value,
}

impl FuturesRouter {
    /// Orders through `rest` (a client built with the futures dialect).
    pub fn new(rest: Arc<RestClient>) -> Self {
        Self { rest, stream: None }
    }

    /// The same, with accounts' user data streams at `config` ([`user_stream`]).
    pub fn with_stream(mut self, config: FuturesStreamConfig) -> Self {
        self.stream = Some(config);
        self
    }

    /// The REST client (shared: its weight budget and back-off cover every caller).
    pub fn rest(&self) -> &Arc<RestClient> {
        &self.rest
    }

    async fn place_order(
        &self,
        symbol: &Symbol,
        order: &Order,
        signer: Signer<'_>,
    ) -> Result<OrderReport, RouteError> {
        let params = order_params(symbol, order)?;
        let placed: FuturesOrder = self
            .rest
            .signed(reqwest::Method::POST, "/fapi/v1/order", params, signer)
            .await
            .map_err(route_error)?;
        // The order is placed whatever the trades lookup does: without them its fills are
        // valued without their commission (and logged), never reported as a failed place.
        Ok(self.with_trades(symbol, placed, signer).await.unwrap_or_else(|(order, err)| {
            tracing::warn!(client_order_id = %order.client_order_id, error = %err, "trades of a futures order not read");
            report(order, Vec::new())
        }))
    }

    /// The report of `order`, with its trades when it executed something (a futures order
    /// answer never lists them).
    pub(super) async fn with_trades(
        &self,
        symbol: &Symbol,
        order: FuturesOrder,
        signer: Signer<'_>,
    ) -> Result<OrderReport, (FuturesOrder, RestError)> {
        if order.executed_qty.is_zero() || order.order_id == 0 {
            return Ok(report(order, Vec::new()));
        }
        match self.rest.trades(symbol, order.order_id, signer).await {
            Ok(trades) => {
                let fills = trades
                    .into_iter()
                    .map(|t| OrderFill {
                        price: t.price,
                        qty: t.qty,
                        fee: t.commission,
                        fee_asset: t.commission_asset,
                    })
                    .collect();
                Ok(report(order, fills))
            }
            Err(err) => Err((order, err)),
        }
    }

    async fn prepare_symbol(
        &self,
        symbol: &Symbol,
        leverage: u32,
        margin_type: MarginType,
        signer: Signer<'_>,
    ) -> Result<(), RouteError> {
        let mode: DualSide = self
            .rest
            .signed(reqwest::Method::GET, "/fapi/v1/positionSide/dual", Vec::new(), signer)
            .await
            .map_err(route_error)?;
        if mode.dual_side_position {
            return Err(RouteError {
                kind: RouteErrorKind::Rejected,
                message: "the binance_futures account is in hedge mode (dualSidePosition=true); \
                          Keel trades in one-way mode only: switch the account to one-way mode"
                    .to_owned(),
            });
        }
        let margin = match margin_type {
            MarginType::Isolated => "ISOLATED",
            MarginType::Cross => "CROSSED",
        };
        let params = vec![("symbol", symbol.to_string()), ("marginType", margin.to_owned())];
        let changed: Result<serde_json::Value, RestError> =
            self.rest.signed(reqwest::Method::POST, "/fapi/v1/marginType", params, signer).await;
        match changed {
            Ok(_) | Err(RestError::Api { code: NO_NEED_TO_CHANGE_MARGIN_TYPE, .. }) => {}
            Err(err) => return Err(route_error(err)),
        }
        let params = vec![("symbol", symbol.to_string()), ("leverage", leverage.to_string())];
        let _: serde_json::Value = self
            .rest
            .signed(reqwest::Method::POST, "/fapi/v1/leverage", params, signer)
            .await
            .map_err(route_error)?;
        Ok(())
    }

    async fn read_positions(&self, signer: Signer<'_>) -> Result<Vec<VenuePosition>, RouteError> {
        let risks: Vec<PositionRisk> = self
            .rest
            .signed(reqwest::Method::GET, "/fapi/v3/positionRisk", Vec::new(), signer)
            .await
            .map_err(route_error)?;
        let open: Vec<PositionRisk> = risks
            .into_iter()
            .filter(|p| !p.position_amt.is_zero())
            .filter(|p| p.position_side.as_deref().is_none_or(|s| s == "BOTH"))
            .collect();
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // Leverage and margin type are not in v3's positions: the symbols' configuration has
        // them. Without it the positions are still reported, without those two.
        let configs: HashMap<String, SymbolConfig> = match self
            .rest
            .signed::<Vec<SymbolConfig>>(
                reqwest::Method::GET,
                "/fapi/v1/symbolConfig",
                Vec::new(),
                signer,
            )
            .await
        {
            Ok(configs) => configs.into_iter().map(|c| (c.symbol.clone(), c)).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "binance_futures symbol configuration not read");
                HashMap::new()
            }
        };
        Ok(open
            .into_iter()
            .map(|p| {
                let config = configs.get(&p.symbol);
                VenuePosition {
                    qty: p.position_amt,
                    entry_price: p.entry_price,
                    mark_price: p.mark_price,
                    liquidation_price: p.liquidation_price.filter(|l| !l.is_zero()),
                    unrealized_pnl: p.un_realized_profit,
                    leverage: config.map(|c| c.leverage),
                    margin_type: config.and_then(|c| margin_type_of(&c.margin_type)),
                    updated_ms: p.update_time,
                    symbol: p.symbol,
                }
            })
            .collect())
    }
}

/// Funding payments from `since_ms` on (of `symbol`, or of every symbol), oldest first, each
/// once: `GET /fapi/v1/income?incomeType=FUNDING_FEE`, pages of 1000, `tranId` as the id.
pub(crate) async fn funding_of(
    rest: &RestClient,
    symbol: Option<&Symbol>,
    since_ms: u64,
    signer: Signer<'_>,
) -> Result<Vec<FundingPayment>, RouteError> {
    let mut payments: Vec<FundingPayment> = Vec::new();
    let mut start = since_ms;
    for _ in 0..INCOME_PAGES {
        let mut params = vec![
            ("incomeType", "FUNDING_FEE".to_owned()),
            ("startTime", start.to_string()),
            ("limit", INCOME_PAGE.to_string()),
        ];
        if let Some(symbol) = symbol {
            params.insert(0, ("symbol", symbol.to_string()));
        }
        let page: Vec<Income> = rest
            .signed(reqwest::Method::GET, "/fapi/v1/income", params, signer)
            .await
            .map_err(route_error)?;
        let full = page.len() >= INCOME_PAGE;
        for income in page {
            if income.income_type != "FUNDING_FEE" || income.time < since_ms {
                continue;
            }
            let id = match &income.tran_id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if payments.iter().any(|p| p.id == id) {
                continue;
            }
            start = start.max(income.time);
            payments.push(FundingPayment {
                symbol: income.symbol,
                asset: income.asset,
                amount: income.income,
                time_ms: income.time,
                id,
            });
        }
        if !full {
            break;
        }
    }
    payments.sort_by_key(|p| p.time_ms);
    Ok(payments)
}

/// [`funding_of`] every symbol.
pub(crate) async fn funding_all(
    rest: &RestClient,
    since_ms: u64,
    signer: Signer<'_>,
) -> Result<Vec<FundingPayment>, RouteError> {
    funding_of(rest, None, since_ms, signer).await
}

fn margin_type_of(word: &str) -> Option<MarginType> {
    match word.to_ascii_lowercase().as_str() {
        "isolated" => Some(MarginType::Isolated),
        "crossed" | "cross" => Some(MarginType::Cross),
        _ => None,
    }
}

/// Whether `origin` is an exit: sent reduce-only, so it can never open or flip a position.
pub fn is_exit(origin: OrderOrigin) -> bool {
    matches!(origin, OrderOrigin::TakeProfit | OrderOrigin::StopLoss | OrderOrigin::Close)
}

/// New Order's parameters for `order`, or the refusal of a type futures orders do not take.
fn order_params(symbol: &Symbol, order: &Order) -> Result<Vec<(&'static str, String)>, RouteError> {
    let side = match order.side {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    };
    let decimal = |d: Decimal| d.normalize().to_string();
    let mut params = vec![
        ("symbol", symbol.to_string()),
        ("side", side.to_owned()),
        ("quantity", decimal(order.remaining())),
        ("newClientOrderId", order.client_order_id.clone()),
        ("newOrderRespType", "RESULT".to_owned()),
    ];
    match order.order_type {
        OrderType::Limit { price, time_in_force } => {
            let tif = match time_in_force {
                TimeInForce::Gtc => "GTC",
                TimeInForce::Ioc => "IOC",
                TimeInForce::Fok => "FOK",
                // Good-till-crossing: Binance futures' post-only.
                TimeInForce::PostOnly => "GTX",
            };
            params.push(("type", "LIMIT".to_owned()));
            params.push(("timeInForce", tif.to_owned()));
            params.push(("price", decimal(price)));
        }
        OrderType::Market | OrderType::Stop { .. } => params.push(("type", "MARKET".to_owned())),
        OrderType::StopLimit { .. } | OrderType::TrailingStop { .. } => {
            return Err(RouteError {
                kind: RouteErrorKind::Rejected,
                message: "binance_futures: stop-limit and trailing-stop orders are conditional \
                          orders of Binance's Algo Order API, which Keel does not send"
                    .to_owned(),
            });
        }
    }
    if is_exit(order.origin) {
        params.push(("reduceOnly", "true".to_owned()));
    }
    Ok(params)
}

fn report(order: FuturesOrder, fills: Vec<OrderFill>) -> OrderReport {
    OrderReport {
        client_order_id: order.client_order_id,
        status: order.status,
        executed_qty: order.executed_qty,
        cum_quote: order.cum_quote,
        fills,
    }
}

impl OrderRouter for FuturesRouter {
    fn venue(&self) -> VenueId {
        VenueId::BinanceFutures
    }

    fn place<'a>(
        &'a self,
        symbol: &'a Symbol,
        order: &'a Order,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        self.place_order(symbol, order, signer).boxed()
    }

    fn cancel<'a>(
        &'a self,
        symbol: &'a Symbol,
        client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        async move {
            let params = by_id(symbol, client_order_id);
            let order: FuturesOrder = self
                .rest
                .signed(reqwest::Method::DELETE, "/fapi/v1/order", params, signer)
                .await
                .map_err(route_error)?;
            // The cancel happened whatever the trades lookup does.
            Ok(self.with_trades(symbol, order, signer).await.unwrap_or_else(
                |(order, err)| {
                    tracing::warn!(client_order_id, error = %err, "trades of a canceled futures order not read");
                    report(order, Vec::new())
                },
            ))
        }
        .boxed()
    }

    fn query<'a>(
        &'a self,
        symbol: &'a Symbol,
        client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        async move {
            let params = by_id(symbol, client_order_id);
            let order: FuturesOrder = self
                .rest
                .signed(reqwest::Method::GET, "/fapi/v1/order", params, signer)
                .await
                .map_err(route_error)?;
            // A query that cannot say what was charged fails as a whole: the next poll asks
            // again, rather than a fill counted without its commission.
            self.with_trades(symbol, order, signer).await.map_err(|(_, err)| route_error(err))
        }
        .boxed()
    }

    fn sync_clock(&self) -> RouteFuture<'_, ()> {
        async move { self.rest.sync_time().await.map(|_| ()).map_err(route_error) }.boxed()
    }

    fn accept_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.rest.recv_window_ms())
    }

    fn balances<'a>(&'a self, signer: Signer<'a>) -> RouteFuture<'a, Vec<Balance>> {
        async move {
            let wallet: Vec<WalletBalance> = self
                .rest
                .signed(reqwest::Method::GET, "/fapi/v3/balance", Vec::new(), signer)
                .await
                .map_err(route_error)?;
            Ok(wallet
                .into_iter()
                .map(|b| Balance {
                    free: b.available_balance,
                    locked: (b.balance - b.available_balance).max(Decimal::ZERO),
                    asset: b.asset,
                })
                .collect())
        }
        .boxed()
    }

    fn instruments(&self) -> RouteFuture<'_, crate::market::InstrumentMap> {
        async move { self.rest.exchange_info().await.map_err(route_error) }.boxed()
    }

    fn place_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        legs: OrderListLegs<'a>,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::algo::place(self, symbol, legs, signer).boxed()
    }

    fn cancel_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::algo::cancel(self, symbol, list_client_order_id, signer).boxed()
    }

    fn query_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::algo::query(self, symbol, list_client_order_id, signer).boxed()
    }

    fn prepare<'a>(
        &'a self,
        symbol: &'a Symbol,
        leverage: u32,
        margin_type: MarginType,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, ()> {
        self.prepare_symbol(symbol, leverage, margin_type, signer).boxed()
    }

    fn positions<'a>(&'a self, signer: Signer<'a>) -> RouteFuture<'a, Vec<VenuePosition>> {
        self.read_positions(signer).boxed()
    }

    fn funding<'a>(
        &'a self,
        symbol: &'a Symbol,
        since_ms: u64,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<FundingPayment>> {
        async move { funding_of(&self.rest, Some(symbol), since_ms, signer).await }.boxed()
    }

    fn account_stream(&self, signer: OwnedSigner) -> Option<AccountStream> {
        let config = self.stream.clone()?;
        let reader: Arc<dyn OrderRouter> = Arc::new(FuturesRouter::new(self.rest.clone()));
        Some(user_stream::spawn(self.rest.clone(), reader, config, signer))
    }
    fn order_budget(&self) -> Option<&crate::budget::BudgetSlot> {
        Some(self.rest.budget())
    }
}

/// The parameters that name one of our orders.
fn by_id(symbol: &Symbol, client_order_id: &str) -> Vec<(&'static str, String)> {
    vec![("symbol", symbol.to_string()), ("origClientOrderId", client_order_id.to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_answers_decode() {
        let fixtures = include_str!("../../../testkit/fixtures/binance_futures/rest.jsonl");
        let samples: HashMap<String, serde_json::Value> = fixtures
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["name"].as_str().unwrap().to_owned(), v["body"].clone())
            })
            .collect();
        let order: FuturesOrder = serde_json::from_value(samples["new_order"].clone()).unwrap();
        assert_eq!(order.status, "NEW");
        let risks: Vec<PositionRisk> =
            serde_json::from_value(samples["position_risk_v3"].clone()).unwrap();
        assert_eq!(risks[0].symbol, "ADAUSDT");
        let configs: Vec<SymbolConfig> =
            serde_json::from_value(samples["symbol_config"].clone()).unwrap();
        assert_eq!(margin_type_of(&configs[0].margin_type), Some(MarginType::Cross));
        let income: Vec<Income> = serde_json::from_value(samples["income"].clone()).unwrap();
        assert_eq!(income[0].income_type, "TRANSFER");
        let wallet: Vec<WalletBalance> =
            serde_json::from_value(samples["balance_v3"].clone()).unwrap();
        assert_eq!(wallet[0].asset, "USDT");
        let dual: DualSide = serde_json::from_value(samples["position_side_dual"].clone()).unwrap();
        assert!(dual.dual_side_position);
    }

    #[test]
    fn exits_are_reduce_only_and_entries_are_not() {
        let btc = Symbol::parse("BTCUSDT").unwrap();
        let mut order = Order {
            id: 1,
            bot_id: 1,
            client_order_id: "keel-1-000001".into(),
            side: Side::Sell,
            order_type: OrderType::Market,
            qty: Decimal::ONE,
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status: keel_core::trading::OrderStatus::New,
            origin: OrderOrigin::Strategy,
            tag: 0,
            oco_with: None,
            venue_list: None,
            reason: None,
            created_ts: 0,
            updated_ts: 0,
        };
        let has_reduce_only = |o: &Order| {
            order_params(&btc, o).unwrap().iter().any(|(k, v)| *k == "reduceOnly" && v == "true")
        };
        assert!(!has_reduce_only(&order));
        for origin in [OrderOrigin::TakeProfit, OrderOrigin::StopLoss, OrderOrigin::Close] {
            order.origin = origin;
            assert!(has_reduce_only(&order), "{origin:?}");
        }
        order.order_type = OrderType::limit(Decimal::ONE_HUNDRED);
        let params = order_params(&btc, &order).unwrap();
        assert!(params.contains(&("timeInForce", "GTC".to_owned())));
        assert!(params.contains(&("newOrderRespType", "RESULT".to_owned())));
        order.order_type = OrderType::TrailingStop { trailing_bps: 100 };
        assert_eq!(order_params(&btc, &order).unwrap_err().kind, RouteErrorKind::Rejected);
    }
}
