//! Binance USD-M futures: public market streams (with liquidations), behind the venue seam.
//!
//! Futures speaks spot's wire format, so the connection, parser and REST client are
//! [`crate::binance`]'s; what differs is here, in its [`Dialect`]: URLs, the channel of each
//! stream (aggregate trades, `forceOrder` liquidations), limits, REST paths and the
//! exchange-info filters. Live orders, leverage, margin type, positions and funding go through
//! [`router::FuturesRouter`] (one-way position mode only).
//!
//! Follows <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>
//! and <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>.

use std::time::Duration;

use rust_decimal::Decimal;

use crate::binance::filters::{filter_field, find_filter, spot_min_notional};
use crate::binance::{Dialect, RestPaths, connector};
use crate::budget::RateLimit;
use crate::registry::{Capabilities, MarketType, Presets, VenueEntry};
use keel_core::market::{StreamKind, VenueId};

pub mod algo;
pub mod router;
pub mod user_stream;

/// USD-M futures market streams, combined-stream endpoint.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>
pub const WS_URL: &str = "wss://fstream.binance.com/stream";
/// USD-M futures testnet market streams, combined-stream endpoint.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const TESTNET_WS_URL: &str = "wss://fstream.binancefuture.com/stream";
/// USD-M futures REST API.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const REST_URL: &str = "https://fapi.binance.com";
/// USD-M futures testnet REST API.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const TESTNET_REST_URL: &str = "https://testnet.binancefuture.com";
/// Most messages a futures client may send per second; over it, the connection is closed.
pub const MAX_INCOMING_MSGS_PER_SEC: u32 = 10;
/// How often the futures server pings; it disconnects a client that has not ponged within
/// ten minutes.
pub const PING_INTERVAL: Duration = Duration::from_secs(3 * 60);

/// USD-M futures' request-weight budget per minute per IP (`REQUEST_WEIGHT` in exchange info).
pub const WEIGHT_PER_MINUTE: u32 = 2_400;
/// USD-M futures' order budget per 10 s per account (`ORDERS`, besides 1200 per minute).
pub const ORDERS_PER_10S: u32 = 300;
/// USD-M futures' order budget per minute per account (`ORDERS`).
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const ORDERS_PER_MINUTE: u32 = 1_200;

/// The futures channel (after `<symbol>@`) carrying `kind`.
pub fn channel(kind: StreamKind) -> Option<&'static str> {
    Some(match kind {
        // USD-M futures has no raw `@trade` stream; aggregate trades are its public tape.
        StreamKind::Trades => "aggTrade",
        StreamKind::Quotes => "bookTicker",
        StreamKind::Candles1m => "kline_1m",
        StreamKind::Depth => "depth20@100ms",
        StreamKind::Liquidations => "forceOrder",
        // Mark price and funding rate every 3 s (`markPriceUpdate`).
        StreamKind::MarkPrice => "markPrice",
    })
}

/// Futures' minimum order value: `MIN_NOTIONAL.notional` (spot's fields as a fallback).
pub fn min_notional(filters: &[serde_json::Value]) -> Option<Decimal> {
    find_filter(filters, "MIN_NOTIONAL")
        .and_then(|f| filter_field(f, "notional"))
        .or_else(|| spot_min_notional(filters))
}

/// Binance USD-M futures.
pub static DIALECT: Dialect = Dialect {
    venue: VenueId::BinanceFutures,
    mainnet: Presets {
        ws_url: WS_URL,
        rest_url: REST_URL,
        private_ws_url: user_stream::PRIVATE_WS_URL,
    },
    testnet: Presets {
        ws_url: TESTNET_WS_URL,
        rest_url: TESTNET_REST_URL,
        private_ws_url: user_stream::TESTNET_PRIVATE_WS_URL,
    },
    channel,
    max_incoming_msgs_per_sec: MAX_INCOMING_MSGS_PER_SEC,
    ping_interval: PING_INTERVAL,
    paths: RestPaths {
        time: "/fapi/v1/time",
        exchange_info: "/fapi/v1/exchangeInfo",
        order: "/fapi/v1/order",
        account: None,
        trades: "/fapi/v1/userTrades",
        new_orders: &[("/fapi/v1/order", 1), (algo::ALGO_ORDER, 1)],
    },
    min_notional,
    weight_per_minute: WEIGHT_PER_MINUTE,
    orders_per_10s: ORDERS_PER_10S,
    order_limits: &[
        RateLimit::aligned(10_000, ORDERS_PER_10S),
        RateLimit::aligned(60_000, ORDERS_PER_MINUTE),
    ],
};

/// Binance USD-M futures in the registry: live orders (reduce-only exits), shorting, leverage,
/// margin type, and native brackets (a bracket's exits rest at the venue as reduce-only
/// conditional orders of the Algo Order API: [`algo`]).
pub static ENTRY: VenueEntry = VenueEntry {
    id: VenueId::BinanceFutures,
    label: "binance_futures (USD-M futures)",
    market_type: MarketType::Perpetual,
    capabilities: Capabilities {
        live_orders: true,
        shorting: true,
        credentials: true,
        leverage: true,
        native_brackets: true,
    },
    presets: |testnet| Some(DIALECT.presets(testnet)),
    market: |settings| connector::market(&DIALECT, settings),
    router: Some(router::build),
};
