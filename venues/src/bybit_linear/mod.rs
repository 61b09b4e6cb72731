//! Bybit USDT perpetuals (v5 category `linear`): public market streams with liquidations, and
//! live orders, behind the venue seam.
//!
//! Linear speaks spot's wire format, so streams, parser, REST client, router and private stream
//! are [`crate::bybit`]'s; what differs is its [`Category`]: the public stream URL, the
//! liquidation stream, the subscribe batch, and that it is a derivatives market: exits go
//! reduce-only, and the router sets leverage and margin mode (`prepare`), lists positions and
//! funding payments.

use crate::budget::RateLimit;
use crate::bybit::{self, Category, connector, streams};
use crate::registry::{Capabilities, MarketType, Presets, VenueEntry};
use keel_core::market::VenueId;

/// Bybit USDT perpetuals.
pub static LINEAR: Category = Category {
    venue: VenueId::BybitLinear,
    name: "linear",
    mainnet: Presets {
        ws_url: streams::LINEAR_WS_URL,
        rest_url: bybit::REST_URL,
        private_ws_url: bybit::PRIVATE_WS_URL,
    },
    testnet: Presets {
        ws_url: streams::LINEAR_TESTNET_WS_URL,
        rest_url: bybit::TESTNET_REST_URL,
        private_ws_url: bybit::TESTNET_PRIVATE_WS_URL,
    },
    demo: Presets {
        ws_url: streams::LINEAR_WS_URL,
        rest_url: bybit::DEMO_REST_URL,
        private_ws_url: bybit::DEMO_PRIVATE_WS_URL,
    },
    liquidations: true,
    topics_per_request: streams::LINEAR_TOPICS_PER_REQUEST,
    derivatives: true,
    order_limits: &[RateLimit::rolling(1_000, 10)],
};

/// Bybit USDT perpetuals in the registry: live orders, shorting, leverage and credentials.
pub static ENTRY: VenueEntry = VenueEntry {
    id: VenueId::BybitLinear,
    label: "bybit_linear (USDT perpetuals)",
    market_type: MarketType::Perpetual,
    capabilities: Capabilities {
        live_orders: true,
        shorting: true,
        credentials: true,
        leverage: true,
        native_brackets: true,
    },
    presets: |testnet| {
        Some(LINEAR.presets(if testnet {
            bybit::Network::Testnet
        } else {
            bybit::Network::Mainnet
        }))
    },
    market: |settings| connector::market(&LINEAR, settings),
    router: Some(|settings| connector::router(&LINEAR, settings)),
};
