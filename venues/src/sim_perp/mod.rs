//! The built-in simulated perpetuals (`sim_perp`): USDT-margined perpetual futures over the sim
//! venue's seeded prices, offline, for paper bots and backtests only.
//!
//! Trades, quotes and candles come from the same [`crate::sim`] market and regimes as the spot
//! simulation (its own `[venues.sim_perp]` seed, symbols and regimes); each trade is followed by
//! a `mark_price` event whose index, mark price and funding rate [`funding`] derives the way
//! Binance USD-M does, with funding every configured interval. Paper bots on it get Keel's
//! paper futures (`keel_core::trading::margin`): leverage, both directions, margin, funding
//! and liquidation. It has no order router: no live orders.

pub mod connector;
pub mod funding;

pub use funding::PerpBook;

use crate::registry::{Capabilities, MarketType, VenueEntry};
use keel_core::market::VenueId;

/// The simulated perpetuals in the registry: paper only, shorts and leverage, no credentials.
pub static ENTRY: VenueEntry = VenueEntry {
    id: VenueId::SimPerp,
    label: "sim_perp (simulated USDT perpetuals)",
    market_type: MarketType::Simulated,
    capabilities: Capabilities { shorting: true, leverage: true, ..Capabilities::NONE },
    presets: |_| None,
    market: connector::market,
    router: None,
};
