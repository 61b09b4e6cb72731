//! Binance spot: public market streams, signed REST orders and the account's user data stream
//! (WebSocket API), behind the venue seam.
//!
//! Follows <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams> and
//! <https://developers.binance.com/docs/binance-spot-api-docs/rest-api>. USD-M futures speaks
//! the same wire format with other URLs, channels and limits: it lives in
//! [`crate::binance_futures`] and shares this folder's helpers through a [`Dialect`].

/// The clock offset, shared with other venues (it lives at the crate root).
pub use crate::clock;
pub mod connector;
pub mod filters;
pub mod order_list;
pub mod parse;
pub mod rest;
pub mod streams;
pub mod user_stream;

use std::time::Duration;

use rust_decimal::Decimal;

use crate::budget::RateLimit;
use crate::registry::{Capabilities, MarketType, Presets, VenueEntry};
use keel_core::market::{StreamKind, VenueId};

/// What tells one Binance market apart from another that speaks the same wire format: its
/// URLs, stream channels, limits, REST paths and exchange-info filters.
#[derive(Debug)]
pub struct Dialect {
    /// Which venue.
    pub venue: VenueId,
    /// Mainnet and testnet base URLs.
    pub mainnet: Presets,
    /// Testnet base URLs.
    pub testnet: Presets,
    /// The channel (after `<symbol>@`) carrying a Keel stream kind, if the venue has one.
    pub channel: fn(StreamKind) -> Option<&'static str>,
    /// Most messages per second a client may send on a stream connection.
    pub max_incoming_msgs_per_sec: u32,
    /// How often the stream server pings.
    pub ping_interval: Duration,
    /// REST paths.
    pub paths: RestPaths,
    /// Reads the minimum order value from a symbol's exchange-info filters.
    pub min_notional: fn(&[serde_json::Value]) -> Option<Decimal>,
    /// The request-weight budget per minute per IP (`REQUEST_WEIGHT`).
    pub weight_per_minute: u32,
    /// Orders per 10 s per account (`ORDERS`).
    pub orders_per_10s: u32,
    /// Every documented limit on an account's new orders (`ORDERS`), what the account's order
    /// budget counts against ([`crate::budget`]).
    pub order_limits: &'static [RateLimit],
}

/// The REST endpoints Keel calls, relative to the base URL.
#[derive(Debug)]
pub struct RestPaths {
    /// Server time.
    pub time: &'static str,
    /// Exchange info (instrument rules).
    pub exchange_info: &'static str,
    /// New order, query order, cancel order.
    pub order: &'static str,
    /// Account information with balances in the spot shape, if the venue has it.
    pub account: Option<&'static str>,
    /// The account's trades of one order (with each trade's commission).
    pub trades: &'static str,
    /// The `POST` paths that create orders, each with how many (an OCO list is two): what a
    /// request asks of the account's order budget.
    pub new_orders: &'static [(&'static str, u32)],
}

impl Dialect {
    /// The base URLs for mainnet or testnet.
    pub fn presets(&self, testnet: bool) -> &Presets {
        if testnet { &self.testnet } else { &self.mainnet }
    }
}

/// Binance spot.
pub static SPOT: Dialect = Dialect {
    venue: VenueId::Binance,
    mainnet: Presets {
        ws_url: streams::SPOT_WS_URL,
        rest_url: rest::SPOT_REST_URL,
        private_ws_url: user_stream::SPOT_WS_API_URL,
    },
    testnet: Presets {
        ws_url: streams::SPOT_TESTNET_WS_URL,
        rest_url: rest::SPOT_TESTNET_REST_URL,
        private_ws_url: user_stream::SPOT_TESTNET_WS_API_URL,
    },
    channel: streams::spot_channel,
    max_incoming_msgs_per_sec: streams::SPOT_MAX_INCOMING_MSGS_PER_SEC,
    ping_interval: streams::SPOT_PING_INTERVAL,
    paths: RestPaths {
        time: "/api/v3/time",
        exchange_info: "/api/v3/exchangeInfo",
        order: "/api/v3/order",
        account: Some("/api/v3/account"),
        trades: "/api/v3/myTrades",
        new_orders: &[("/api/v3/order", 1), (order_list::ORDER_LIST_OCO, 2)],
    },
    min_notional: filters::spot_min_notional,
    weight_per_minute: rest::WEIGHT_PER_MINUTE,
    orders_per_10s: rest::ORDERS_PER_10S,
    // <https://developers.binance.com/docs/binance-spot-api-docs/faqs/order_count_decrement>;
    // the daily 200,000 is left to the venue's own count.
    order_limits: &[RateLimit::aligned(10_000, rest::ORDERS_PER_10S)],
};

/// Binance spot in the registry: live orders, credentials, no shorting.
pub static ENTRY: VenueEntry = VenueEntry {
    id: VenueId::Binance,
    label: "binance (spot)",
    market_type: MarketType::Spot,
    capabilities: Capabilities {
        live_orders: true,
        shorting: false,
        credentials: true,
        leverage: false,
        // A bracket is one OCO order list (`order_list.rs`).
        native_brackets: true,
    },
    presets: |testnet| Some(SPOT.presets(testnet)),
    market: |settings| connector::market(&SPOT, settings),
    router: Some(|settings| connector::router(&SPOT, settings)),
};
