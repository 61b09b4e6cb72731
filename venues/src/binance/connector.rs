//! Binance behind the seam: [`BinanceMarket`] (market data) and [`BinanceRouter`] (orders),
//! for any [`Dialect`] (spot here, USD-M futures in [`crate::binance_futures`]).

use std::sync::Arc;

use futures_util::FutureExt;

use super::Dialect;
use super::parse::{self, ParseError, SymbolCache};
use super::rest::{RestClient, RestError, VenueOrder};
use super::streams;
use super::user_stream::{self, UserStreamConfig};
use crate::account::{AccountStream, OwnedSigner};
use crate::connection::ConnectionConfig;
use crate::market::{FrameError, FrameParser, Inbound, Instruments, MarketConnector};
use crate::registry::{ExchangeSettings, VenueError, VenueSettings};
use crate::routing::{
    Balance, OrderFill, OrderListLegs, OrderReport, OrderRouter, RouteError, RouteErrorKind,
    RouteFuture, Signer,
};
use keel_core::market::{StreamKind, Symbol, VenueId};
use keel_core::trading::Order;

/// Builds `dialect`'s market-data connector from its settings (the registry's `market`).
///
/// # Errors
/// The settings are not an exchange's.
pub fn market(
    dialect: &'static Dialect,
    settings: &VenueSettings,
) -> Result<Arc<dyn MarketConnector>, VenueError> {
    let settings = exchange(dialect, settings)?;
    let presets = dialect.presets(settings.testnet);
    let ws_url = settings.ws_url_or(presets.ws_url);
    let rest_url = settings.rest_url_or(presets.rest_url);
    Ok(Arc::new(BinanceMarket::new(dialect, ws_url, Some(rest_url))))
}

/// Builds `dialect`'s order router from its settings (the registry's `router`).
///
/// # Errors
/// The settings are not an exchange's, or the HTTP client cannot be built.
pub fn router(
    dialect: &'static Dialect,
    settings: &VenueSettings,
) -> Result<Arc<dyn OrderRouter>, VenueError> {
    let settings = exchange(dialect, settings)?;
    let rest_url = settings.rest_url_or(dialect.presets(settings.testnet).rest_url);
    let client = RestClient::new(dialect, &rest_url)
        .map_err(|err| VenueError(format!("building the {} REST client: {err}", dialect.venue)))?
        .with_recv_window(settings.recv_window_ms);
    let router = BinanceRouter::new(Arc::new(client));
    let router = match user_stream_url(dialect, settings) {
        Some(url) => router.with_user_stream(UserStreamConfig::new(url, settings.recv_window_ms)),
        None => router,
    };
    Ok(Arc::new(router))
}

/// Where `dialect`'s user data stream is: the configured `private_ws_url`, or the preset when
/// the REST endpoint is the preset too (a configured REST endpoint with the preset stream would
/// watch one environment and trade on another). `None` where the dialect has no preset stream:
/// bots poll. (USD-M futures builds its own router and listen-key stream.)
fn user_stream_url(dialect: &'static Dialect, settings: &ExchangeSettings) -> Option<String> {
    let preset = dialect.presets(settings.testnet).private_ws_url;
    if preset.is_empty() {
        return None;
    }
    match (settings.private_ws_url.trim(), settings.rest_url.trim()) {
        ("", "") => Some(preset.to_owned()),
        ("", _) => None,
        (url, _) => Some(url.to_owned()),
    }
}

fn exchange<'a>(
    dialect: &Dialect,
    settings: &'a VenueSettings,
) -> Result<&'a ExchangeSettings, VenueError> {
    match settings {
        VenueSettings::Exchange(settings) => Ok(settings),
        VenueSettings::Simulated(_) => {
            Err(VenueError(format!("{} needs exchange settings, not a simulation", dialect.venue)))
        }
    }
}

/// A Binance market's public streams.
#[derive(Debug, Clone)]
pub struct BinanceMarket {
    dialect: &'static Dialect,
    connection: ConnectionConfig,
    rest_url: Option<String>,
}

impl BinanceMarket {
    /// `dialect`'s streams at `ws_url`, its instrument rules from `rest_url` (none without).
    pub fn new(dialect: &'static Dialect, ws_url: String, rest_url: Option<String>) -> Self {
        let connection = streams::connection_config(dialect, ws_url);
        Self { dialect, connection, rest_url }
    }

    /// The same with other connection settings (tests shorten the reconnect timings).
    pub fn with_connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    /// The connection settings it gives.
    pub fn connection_config(&self) -> &ConnectionConfig {
        &self.connection
    }
}

impl MarketConnector for BinanceMarket {
    fn venue(&self) -> VenueId {
        self.dialect.venue
    }

    fn supports(&self, kind: StreamKind) -> bool {
        (self.dialect.channel)(kind).is_some()
    }

    fn instruments(&self) -> Instruments {
        let Some(url) = self.rest_url.clone() else { return Instruments::Unavailable };
        let dialect = self.dialect;
        Instruments::Fetch(
            async move {
                let client = RestClient::new(dialect, &url)?;
                client.exchange_info().await
            }
            .map(|loaded| loaded.map_err(|err| err.to_string()))
            .boxed(),
        )
    }

    fn connection(&self) -> Option<ConnectionConfig> {
        Some(self.connection.clone())
    }

    fn stream_name(&self, symbol: &Symbol, kind: StreamKind) -> Option<String> {
        streams::stream_name(self.dialect, symbol, kind)
    }

    fn parse_stream_name(&self, name: &str) -> Option<(Symbol, StreamKind)> {
        streams::parse_stream_name(self.dialect, name)
    }

    fn subscribe_request(&self, id: u64, streams: &[String]) -> String {
        streams::subscribe_request(id, streams)
    }

    fn unsubscribe_request(&self, id: u64, streams: &[String]) -> String {
        streams::unsubscribe_request(id, streams)
    }

    fn parser(&self) -> Box<dyn FrameParser> {
        Box::new(Parser { venue: self.dialect.venue, symbols: SymbolCache::default() })
    }
}

/// One connection's frames, with its symbol cache.
struct Parser {
    venue: VenueId,
    symbols: SymbolCache,
}

impl FrameParser for Parser {
    fn parse(&mut self, text: &str, received_us: u64) -> Result<Inbound, FrameError> {
        parse::parse_with(self.venue, text, received_us, &mut self.symbols).map_err(frame_error)
    }
}

fn frame_error(err: ParseError) -> FrameError {
    FrameError { reason: err.reason(), detail: err.to_string() }
}

/// Signed orders on a Binance market, through one shared [`RestClient`].
#[derive(Debug, Clone)]
pub struct BinanceRouter {
    rest: Arc<RestClient>,
    /// The account stream's endpoint and timings, where there is one.
    user_stream: Option<UserStreamConfig>,
}

impl BinanceRouter {
    /// Orders through `rest`.
    pub fn new(rest: Arc<RestClient>) -> Self {
        Self { rest, user_stream: None }
    }

    /// The same, with accounts' user data streams at `config` (see
    /// [`user_stream`](super::user_stream)).
    pub fn with_user_stream(mut self, config: UserStreamConfig) -> Self {
        self.user_stream = Some(config);
        self
    }

    /// The REST client (shared: its weight budget and back-off cover every caller).
    pub fn rest(&self) -> &Arc<RestClient> {
        &self.rest
    }
}

impl BinanceRouter {
    /// Lists the trades of an order that has executed something, when its answer (a query or
    /// a cancel: Binance lists fills only in a new-order answer) did not: each trade carries the
    /// commission and its asset, which is what the account was charged.
    pub(super) async fn attach_trades(
        &self,
        symbol: &Symbol,
        order: &mut VenueOrder,
        signer: Signer<'_>,
    ) -> Result<(), RestError> {
        if order.executed_qty.is_zero() || !order.fills.is_empty() || order.order_id == 0 {
            return Ok(());
        }
        order.fills = self.rest.trades(symbol, order.order_id, signer).await?;
        Ok(())
    }
}

impl OrderRouter for BinanceRouter {
    fn venue(&self) -> VenueId {
        self.rest.dialect().venue
    }

    fn place<'a>(
        &'a self,
        symbol: &'a Symbol,
        order: &'a Order,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        async move { self.rest.place(symbol, order, signer).await.map(report).map_err(route_error) }
            .boxed()
    }

    fn cancel<'a>(
        &'a self,
        symbol: &'a Symbol,
        client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, OrderReport> {
        async move {
            let mut order =
                self.rest.cancel(symbol, client_order_id, signer).await.map_err(route_error)?;
            // The cancel happened whatever the trades lookup does: without them the fills are
            // valued by estimate (and the journal says so), never reported as a failed cancel.
            if let Err(err) = self.attach_trades(symbol, &mut order, signer).await {
                tracing::warn!(client_order_id, error = %err, "trades of a canceled order not read");
            }
            Ok(report(order))
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
            let mut order =
                self.rest.query(symbol, client_order_id, signer).await.map_err(route_error)?;
            // A query that cannot say what was charged fails as a whole: the next poll asks
            // again, rather than a fill counted without its commission.
            self.attach_trades(symbol, &mut order, signer).await.map_err(route_error)?;
            Ok(report(order))
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
            let balances = self.rest.balances(signer).await.map_err(route_error)?;
            Ok(balances
                .into_iter()
                .map(|b| Balance { asset: b.asset, free: b.free, locked: b.locked })
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
        super::order_list::place(self, symbol, legs, signer).boxed()
    }

    fn cancel_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::order_list::cancel(self, symbol, list_client_order_id, signer).boxed()
    }

    fn query_list<'a>(
        &'a self,
        symbol: &'a Symbol,
        list_client_order_id: &'a str,
        signer: Signer<'a>,
    ) -> RouteFuture<'a, Vec<OrderReport>> {
        super::order_list::query(self, symbol, list_client_order_id, signer).boxed()
    }

    fn account_stream(&self, signer: OwnedSigner) -> Option<AccountStream> {
        let config = self.user_stream.clone()?;
        Some(user_stream::spawn(self.rest.clone(), config, signer))
    }
    fn order_budget(&self) -> Option<&crate::budget::BudgetSlot> {
        Some(self.rest.budget())
    }
}

pub(super) fn report(order: VenueOrder) -> OrderReport {
    OrderReport {
        client_order_id: order.client_order_id,
        status: order.status,
        executed_qty: order.executed_qty,
        cum_quote: order.cummulative_quote_qty,
        fills: order
            .fills
            .into_iter()
            .map(|f| OrderFill {
                price: f.price,
                qty: f.qty,
                fee: f.commission,
                fee_asset: f.commission_asset,
            })
            .collect(),
    }
}

/// Classifies a REST error by what it means for the order.
pub fn route_error(err: RestError) -> RouteError {
    let kind = if err.is_clock_skew() {
        RouteErrorKind::ClockSkew
    } else if err.is_no_such_order() {
        RouteErrorKind::NoSuchOrder
    } else if matches!(err, RestError::Api { code: -2011, .. }) {
        // -2011 "Unknown order sent." is what a cancel of a closed order gets.
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
    fn rest_errors_are_classified_as_live_trading_reads_them() {
        let api = |status, code| RestError::Api { status, code, msg: String::new() };
        let cases = [
            (api(400, -1021), RouteErrorKind::ClockSkew),
            (api(400, -2013), RouteErrorKind::NoSuchOrder),
            (api(400, -2011), RouteErrorKind::NotOpen),
            (api(503, 0), RouteErrorKind::UnknownOutcome),
            (api(400, -1006), RouteErrorKind::UnknownOutcome),
            (RestError::NoAnswer("timeout".into()), RouteErrorKind::UnknownOutcome),
            (RestError::Decode("x".into()), RouteErrorKind::UnknownOutcome),
            (RestError::NotSent("refused".into()), RouteErrorKind::NotSent),
            (RestError::Backoff(5), RouteErrorKind::NotSent),
            (
                RestError::Held(crate::budget::Held { reason: "x".into(), retry_in_ms: 5 }),
                RouteErrorKind::Throttled,
            ),
            (RestError::Sign("no key".into()), RouteErrorKind::Rejected),
            (api(400, -2010), RouteErrorKind::Rejected),
        ];
        for (err, kind) in cases {
            let message = err.to_string();
            assert_eq!(route_error(err), RouteError { kind, message });
        }
    }
}
