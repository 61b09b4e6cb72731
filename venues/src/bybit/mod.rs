//! Bybit (v5 API) behind the seam: spot here, USDT perpetuals in [`crate::bybit_linear`].
//!
//! Both markets speak one wire format and differ by the v5 `category` (`spot`, `linear`), their
//! public stream URLs and a few limits; a [`Category`] holds what differs, as
//! [`crate::binance::Dialect`] does for Binance. Modules:
//! - [`streams`]: topic names, subscribe requests, the JSON heartbeat, connection limits;
//! - [`parse`]: public stream frames into market events (with a local order book per symbol);
//! - [`rest`]: the REST client: server time, instruments, signed orders and balances, and for
//!   derivatives leverage, margin mode, positions and funding;
//! - [`private`]: the private stream (orders, executions, positions, wallet) as account events;
//! - [`brackets`]: native brackets on derivatives, each leg a reduce-only conditional order;
//! - [`connector`]: the seam's [`MarketConnector`](crate::market::MarketConnector) and
//!   [`OrderRouter`](crate::routing::OrderRouter).
//!
//! Follows <https://bybit-exchange.github.io/docs/v5/intro> and
//! <https://bybit-exchange.github.io/docs/v5/ws/connect>.

pub mod brackets;
pub mod connector;
pub mod parse;
pub mod private;
pub mod rest;
pub mod streams;

use crate::budget::RateLimit;
use crate::registry::{Capabilities, MarketType, Presets, VenueEntry};
use keel_core::market::VenueId;

/// Mainnet REST endpoint.
pub const REST_URL: &str = "https://api.bybit.com";
/// Testnet REST endpoint.
pub const TESTNET_REST_URL: &str = "https://api-testnet.bybit.com";
/// Demo-trading REST endpoint: mainnet market data, simulated orders and balances, its own keys.
/// <https://bybit-exchange.github.io/docs/v5/demo>
pub const DEMO_REST_URL: &str = "https://api-demo.bybit.com";
/// Mainnet private stream (orders, executions, positions, wallet).
pub const PRIVATE_WS_URL: &str = "wss://stream.bybit.com/v5/private";
/// Testnet private stream.
pub const TESTNET_PRIVATE_WS_URL: &str = "wss://stream-testnet.bybit.com/v5/private";
/// Demo-trading private stream.
pub const DEMO_PRIVATE_WS_URL: &str = "wss://stream-demo.bybit.com/v5/private";

/// What tells one Bybit market apart from another: its venue id, v5 category, URLs and limits.
#[derive(Debug)]
pub struct Category {
    /// Which venue.
    pub venue: VenueId,
    /// The v5 `category` parameter: `spot` or `linear`.
    pub name: &'static str,
    /// Mainnet URLs.
    pub mainnet: Presets,
    /// Testnet URLs.
    pub testnet: Presets,
    /// Demo-trading URLs: the public stream stays mainnet's (demo trading has no market data
    /// of its own); REST and the private stream are the demo hosts.
    pub demo: Presets,
    /// Whether the market has a liquidation stream (`allLiquidation`: derivatives only).
    pub liquidations: bool,
    /// Most topics one subscribe request may carry (spot: 10).
    pub topics_per_request: usize,
    /// A derivatives category: positions, leverage, reduce-only exits, funding.
    pub derivatives: bool,
    /// The documented limit on an account's new orders (`/v5/order/create` per UID and rolling
    /// second, default tier), what the account's order budget counts against
    /// ([`crate::budget`]). <https://bybit-exchange.github.io/docs/v5/rate-limit>
    pub order_limits: &'static [RateLimit],
}

/// Which endpoints a Bybit section points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Real money.
    Mainnet,
    /// Bybit's testnet: its own accounts, keys and market.
    Testnet,
    /// Demo trading: mainnet prices, simulated fills, demo keys.
    Demo,
}

impl Category {
    /// The URLs for `network`.
    pub fn presets(&self, network: Network) -> &Presets {
        match network {
            Network::Mainnet => &self.mainnet,
            Network::Testnet => &self.testnet,
            Network::Demo => &self.demo,
        }
    }
}

/// Bybit spot.
pub static SPOT: Category = Category {
    venue: VenueId::Bybit,
    name: "spot",
    mainnet: Presets {
        ws_url: streams::SPOT_WS_URL,
        rest_url: REST_URL,
        private_ws_url: PRIVATE_WS_URL,
    },
    testnet: Presets {
        ws_url: streams::SPOT_TESTNET_WS_URL,
        rest_url: TESTNET_REST_URL,
        private_ws_url: TESTNET_PRIVATE_WS_URL,
    },
    demo: Presets {
        ws_url: streams::SPOT_WS_URL,
        rest_url: DEMO_REST_URL,
        private_ws_url: DEMO_PRIVATE_WS_URL,
    },
    liquidations: false,
    topics_per_request: streams::SPOT_TOPICS_PER_REQUEST,
    derivatives: false,
    order_limits: &[RateLimit::rolling(1_000, 20)],
};

/// Bybit spot in the registry: live orders (signed v5 REST), credentials, no shorting.
pub static ENTRY: VenueEntry = VenueEntry {
    id: VenueId::Bybit,
    label: "bybit (spot)",
    market_type: MarketType::Spot,
    capabilities: Capabilities {
        live_orders: true,
        shorting: false,
        credentials: true,
        leverage: false,
        native_brackets: false,
    },
    presets: |testnet| {
        Some(SPOT.presets(if testnet { Network::Testnet } else { Network::Mainnet }))
    },
    market: |settings| connector::market(&SPOT, settings),
    router: Some(|settings| connector::router(&SPOT, settings)),
};
