//! Bybit behind the seam: [`BybitMarket`] (market data) and [`BybitRouter`] (orders), for any
//! [`Category`] (spot here, USDT perpetuals in [`crate::bybit_linear`]).

use std::sync::Arc;

use futures_util::FutureExt;

use super::parse::Parser;
use super::private::{self, PrivateStreamConfig};
use super::rest::{RestClient, RestError, VenueOrder};
use super::{Category, Network, streams};
use crate::account::{AccountStream, OwnedSigner};
use crate::connection::ConnectionConfig;
use crate::market::{FrameError, FrameParser, Inbound, Instruments, MarketConnector};
use crate::registry::{ExchangeSettings, VenueError, VenueSettings};
use crate::routing::{
    Balance, FundingPayment, OrderListLegs, OrderReport, OrderRouter, RouteError, RouteErrorKind,
    RouteFuture, Signer, VenuePosition,
};
use keel_core::bot::MarginType;
use keel_core::market::{StreamKind, Symbol, VenueId};
use keel_core::trading::Order;

/// The endpoints a section selects: demo trading, testnet, or mainnet.
pub fn network(settings: &ExchangeSettings) -> Network {
    if settings.demo {
        Network::Demo
    } else if settings.testnet {
        Network::Testnet
    } else {
        Network::Mainnet
    }
}

/// Builds `category`'s market-data connector from its settings (the registry's `market`).
///
/// # Errors
/// The settings are not an exchange's.
pub fn market(
    category: &'static Category,
    settings: &VenueSettings,
) -> Result<Arc<dyn MarketConnector>, VenueError> {
    let settings = exchange(category, settings)?;
    let presets = category.presets(network(settings));
    let ws_url = settings.ws_url_or(presets.ws_url);
    let rest_url = settings.rest_url_or(presets.rest_url);
    Ok(Arc::new(BybitMarket::new(category, ws_url, Some(rest_url))))
}

/// Builds `category`'s order router from its settings (the registry's `router`).
///
/// # Errors
/// The settings are not an exchange's, or the HTTP client cannot be built.
pub fn router(
    category: &'static Category,
    settings: &VenueSettings,
) -> Result<Arc<dyn OrderRouter>, VenueError> {
    let settings = exchange(category, settings)?;
    let presets = category.presets(network(settings));
    let rest_url = settings.rest_url_or(presets.rest_url);
    let client = RestClient::new(category, &rest_url)
        .map_err(|err| VenueError(format!("building the {} REST client: {err}", category.venue)))?
        .with_recv_window(settings.recv_window_ms);
    let router = BybitRouter::new(Arc::new(client));
    let router = match private_stream_url(presets.private_ws_url, settings) {
        Some(url) => router.with_private_stream(PrivateStreamConfig::new(url)),
        None => router,
    };
    Ok(Arc::new(router))
}

/// Where the private stream is: the configured `private_ws_url`, or the preset when the REST
/// endpoint is the preset too (a configured REST endpoint with the preset stream would watch
/// one environment and trade on another: then there is none, and bots poll).
pub fn private_stream_url(preset: &str, settings: &ExchangeSettings) -> Option<String> {
    match (settings.private_ws_url.trim(), settings.rest_url.trim()) {
        ("", "") => Some(preset.to_owned()),
        ("", _) => None,
        (url, _) => Some(url.to_owned()),
    }
}

fn exchange<'a>(
    category: &Category,
    settings: &'a VenueSettings,
) -> Result<&'a ExchangeSettings, VenueError> {
    match settings {
        VenueSettings::Exchange(settings) => Ok(settings),
        VenueSettings::Simulated(_) => {
            Err(VenueError(format!("{} needs exchange settings, not a simulation", category.venue)))
        }
    }
}

/// A Bybit market's public streams.
#[derive(Debug, Clone)]
pub struct BybitMarket {
    category: &'static Category,
    connection: ConnectionConfig,
    rest_url: Option<String>,
}

impl BybitMarket {
    /// `category`'s streams at `ws_url`, its instrument rules from `rest_url` (none without).
    pub fn new(category: &'static Category, ws_url: String, rest_url: Option<String>) -> Self {
        Self { category, connection: streams::connection_config(ws_url), rest_url }
    }

    /// The same with other connection settings (tests shorten the reconnect timings).
    pub fn with_connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }
}

impl MarketConnector for BybitMarket {
    fn venue(&self) -> VenueId {
        self.category.venue
    }

    fn supports(&self, kind: StreamKind) -> bool {
        streams::channel(self.category, kind).is_some()
    }

    fn instruments(&self) -> Instruments {
        let Some(url) = self.rest_url.clone() else { return Instruments::Unavailable };
        let category = self.category;
        Instruments::Fetch(
            async move { RestClient::new(category, &url)?.instruments().await }
                .map(|loaded| loaded.map_err(|err| err.to_string()))
                .boxed(),
        )
    }

    fn connection(&self) -> Option<ConnectionConfig> {
        Some(self.connection.clone())
    }

    fn stream_name(&self, symbol: &Symbol, kind: StreamKind) -> Option<String> {
        streams::topic(self.category, symbol, kind)
    }

    fn parse_stream_name(&self, name: &str) -> Option<(Symbol, StreamKind)> {
        streams::parse_topic(self.category, name)
    }

    fn subscribe_request(&self, id: u64, streams: &[String]) -> String {
        streams::subscribe_request(id, streams)
    }

    fn unsubscribe_request(&self, id: u64, streams: &[String]) -> String {
        streams::unsubscribe_request(id, streams)
    }

    fn streams_per_request(&self) -> usize {
        self.category.topics_per_request
    }

    fn heartbeat(&self, id: u64) -> Option<String> {
        Some(streams::ping_request(id))
    }

    fn parser(&self) -> Box<dyn FrameParser> {
        Box::new(Parser::new(self.category))
    }
}

impl FrameParser for Parser {
    fn parse(&mut self, text: &str, received_us: u64) -> Result<Inbound, FrameError> {
        Parser::parse(self, text, received_us)
    }
}

/// Signed orders on a Bybit market, through one shared [`RestClient`], and the account's
/// private stream.
#[derive(Debug, Clone)]
pub struct BybitRouter {
    rest: Arc<RestClient>,
    private: Option<PrivateStreamConfig>,
}

impl BybitRouter {
    /// Orders through `rest`, without a private stream (the caller polls).
    pub fn new(rest: Arc<RestClient>) -> Self {
        Self { rest, private: None }
    }

    /// The same with the account's private stream at `config`'s URL.
    pub fn with_private_stream(mut self, config: PrivateStreamConfig) -> Self {
        self.private = Some(config);
        self
    }

    /// The REST client.
    pub fn rest(&self) -> &Arc<RestClient> {
        &self.rest
    }

    /// `order` as the seam reports it, with its trades and their fees when it has filled and
    /// they add up to what filled (otherwise the cumulative figures alone: the engine then
    /// estimates the fee, and says so).
    pub(super) async fn with_fills(
        &self,
        symbol: &Symbol,
        order: VenueOrder,
        signer: Signer<'_>,
    ) -> OrderReport {
        let mut out = report(order);
        if out.executed_qty.is_zero() {
            return out;
        }
        match self.rest.fills(symbol, &out.client_order_id, signer).await {
            Ok(fills)
                if fills.iter().map(|f| f.qty).sum::<rust_decimal::Decimal>()
                    == out.executed_qty =>
            {
                out.fills = fills;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(venue = %self.rest.category().venue, error = %err, "trades not read");
            }
        }
        out
    }
}

impl OrderRouter for BybitRouter {
    fn venue(&self) -> VenueId {
        self.rest.category().venue
    }

    fn place<'a>(
        &'a self,
        symbol: &'a Symbol,
        order: &'a Order,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        async move {
            let placed = self.rest.place(symbol, order, signer).await.map_err(route_error)?;
            Ok(self.with_fills(symbol, placed, signer).await)
        }
        .boxed()
    }

    fn cancel<'a>(
        &'a self,
        symbol: &'a Symbol,
        client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        async move {
            let canceled =
                self.rest.cancel(symbol, client_order_id, signer).await.map_err(route_error)?;
            Ok(self.with_fills(symbol, canceled, signer).await)
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
            match self.rest.query(symbol, client_order_id, signer).await {
                Ok(order) => Ok(self.with_fills(symbol, order, signer).await),
                // A query that finds nothing anywhere: the venue never received it.
                Err(err) if err.is_not_open() => {
                    Err(RouteError { kind: RouteErrorKind::NoSuchOrder, message: err.to_string() })
                }
                Err(err) => Err(route_error(err)),
            }
        }
        .boxed()
    }

    /// Derivatives only: each leg a reduce-only conditional order ([`super::brackets`]).
    fn place_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        legs: OrderListLegs<'a>,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::brackets::place(self, symbol, legs, signer).boxed()
    }

    fn cancel_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::brackets::cancel(self, symbol, list_client_order_id, signer).boxed()
    }

    fn query_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::brackets::query(self, symbol, list_client_order_id, signer).boxed()
    }

    fn sync_clock(&self) -> RouteFuture<'_, ()> {
        async move { self.rest.sync_time().await.map(|_| ()).map_err(route_error) }.boxed()
    }

    fn accept_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.rest.recv_window_ms())
    }

    fn balances<'a>(&'a self, signer: Signer<'a>) -> RouteFuture<'a, Vec<Balance>> {
        async move {
            let coins = self.rest.balances(signer).await.map_err(route_error)?;
            Ok(coins
                .into_iter()
                .map(|c| Balance { asset: c.coin, free: c.free, locked: c.locked })
                .collect())
        }
        .boxed()
    }

    fn instruments(&self) -> RouteFuture<'_, crate::market::InstrumentMap> {
        async move { self.rest.instruments().await.map_err(route_error) }.boxed()
    }

    /// On a derivatives category: the account's margin mode first (account-wide on a unified
    /// account, switched only when it differs), then the symbol's leverage for both sides. On
    /// spot: nothing.
    fn prepare<'a>(
        &'a self,
        symbol: &'a Symbol,
        leverage: u32,
        margin_type: MarginType,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, ()> {
        async move {
            if !self.rest.category().derivatives {
                return Ok(());
            }
            self.rest.set_margin_mode(margin_type, signer).await.map_err(route_error)?;
            self.rest.set_leverage(symbol, leverage, signer).await.map_err(route_error)
        }
        .boxed()
    }

    fn positions<'a>(&'a self, signer: Signer<'a>) -> RouteFuture<'a, Vec<VenuePosition>> {
        async move {
            if !self.rest.category().derivatives {
                return Ok(Vec::new());
            }
            // The margin mode is the account's; a position's `tradeMode` is deprecated there.
            let margin = self.rest.margin_mode(signer).await.ok();
            self.rest.positions(&["USDT", "USDC"], margin, signer).await.map_err(route_error)
        }
        .boxed()
    }

    fn funding<'a>(
        &'a self,
        symbol: &'a Symbol,
        since_ms: u64,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<FundingPayment>> {
        async move {
            if !self.rest.category().derivatives {
                return Ok(Vec::new());
            }
            self.rest.funding(symbol, since_ms, signer).await.map_err(route_error)
        }
        .boxed()
    }

    fn account_stream(&self, signer: OwnedSigner) -> Option<AccountStream> {
        let config = self.private.clone()?;
        Some(private::spawn(self.rest.clone(), config, signer))
    }
    fn order_budget(&self) -> Option<&crate::budget::BudgetSlot> {
        Some(self.rest.budget())
    }
}

fn report(order: VenueOrder) -> OrderReport {
    OrderReport {
        status: order.status_word().to_owned(),
        client_order_id: order.order_link_id,
        executed_qty: order.cum_exec_qty,
        cum_quote: order.cum_exec_value,
        // Bybit's order answers carry cumulative figures only: the trades are read apart.
        fills: Vec::new(),
    }
}

/// Classifies a REST error by what it means for the order.
pub fn route_error(err: RestError) -> RouteError {
    let kind = if err.is_clock_skew() {
        RouteErrorKind::ClockSkew
    } else if err.is_not_open() {
        RouteErrorKind::NotOpen
    } else if err.is_unknown_outcome() {
        RouteErrorKind::UnknownOutcome
    } else if matches!(err, RestError::Held(_)) {
        RouteErrorKind::Throttled
    } else if matches!(err, RestError::NotSent(_) | RestError::Backoff(_)) {
        RouteErrorKind::NotSent
    } else {
        RouteErrorKind::Rejected
    };
    RouteError { kind, message: err.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_stream_follows_the_rest_endpoint_and_demo_applies_to_both_markets() {
        let preset = crate::bybit::PRIVATE_WS_URL;
        let mut settings = ExchangeSettings::default();
        assert_eq!(private_stream_url(preset, &settings).as_deref(), Some(preset));
        settings.rest_url = "http://127.0.0.1:1".into();
        assert_eq!(private_stream_url(preset, &settings), None);
        settings.private_ws_url = "ws://127.0.0.1:2/v5/private".into();
        assert_eq!(
            private_stream_url(preset, &settings).as_deref(),
            Some("ws://127.0.0.1:2/v5/private")
        );
        let demo = ExchangeSettings { demo: true, ..ExchangeSettings::default() };
        for category in [&crate::bybit::SPOT, &crate::bybit_linear::LINEAR] {
            let presets = category.presets(network(&demo));
            assert_eq!(presets.rest_url, "https://api-demo.bybit.com");
            assert_eq!(presets.private_ws_url, "wss://stream-demo.bybit.com/v5/private");
        }
    }

    #[test]
    fn rest_errors_are_classified_as_live_trading_reads_them() {
        let api = |status, code| RestError::Api { status, code, msg: String::new() };
        let cases = [
            (api(200, 10002), RouteErrorKind::ClockSkew),
            (api(200, 170_213), RouteErrorKind::NotOpen),
            (api(200, 110_001), RouteErrorKind::NotOpen),
            (api(502, 0), RouteErrorKind::UnknownOutcome),
            (api(200, 10016), RouteErrorKind::UnknownOutcome),
            (RestError::NoAnswer("timeout".into()), RouteErrorKind::UnknownOutcome),
            (RestError::Decode("x".into()), RouteErrorKind::UnknownOutcome),
            (RestError::NotSent("refused".into()), RouteErrorKind::NotSent),
            (RestError::Backoff(5), RouteErrorKind::NotSent),
            (
                RestError::Held(crate::budget::Held { reason: "x".into(), retry_in_ms: 5 }),
                RouteErrorKind::Throttled,
            ),
            (api(403, 0), RouteErrorKind::Rejected),
            (api(200, 10004), RouteErrorKind::Rejected),
            (api(200, 170_131), RouteErrorKind::Rejected),
        ];
        for (err, kind) in cases {
            let message = err.to_string();
            assert_eq!(route_error(err), RouteError { kind, message });
        }
    }
}
