//! Normalised market data: one [`MarketEvent`] type for every venue.
//!
//! Prices and quantities are exact decimals, as exchanges send them. Each event carries the
//! exchange's timestamp and the time Keel received it, so latency can be measured end to end.

mod stream;

use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
pub use stream::{StreamKey, StreamKind, StreamKindParseError};

/// A venue Keel connects to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VenueId {
    /// The built-in simulated market.
    Sim,
    /// Binance spot.
    Binance,
    /// Binance USD-M futures.
    BinanceFutures,
    /// Bybit spot (v5 API, category `spot`).
    Bybit,
    /// Bybit USDT perpetuals (v5 API, category `linear`).
    BybitLinear,
    /// The built-in simulated USDT perpetuals: the sim's prices plus mark price and funding.
    SimPerp,
}

impl VenueId {
    /// Every venue.
    pub const ALL: [VenueId; 6] = [
        VenueId::Sim,
        VenueId::Binance,
        VenueId::BinanceFutures,
        VenueId::Bybit,
        VenueId::BybitLinear,
        VenueId::SimPerp,
    ];

    /// The id used in URLs, channels and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            VenueId::Sim => "sim",
            VenueId::Binance => "binance",
            VenueId::BinanceFutures => "binance_futures",
            VenueId::Bybit => "bybit",
            VenueId::BybitLinear => "bybit_linear",
            VenueId::SimPerp => "sim_perp",
        }
    }

    /// Parses a venue id.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for VenueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instrument symbol, upper case (`BTCUSDT`). Cheap to clone.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, example = "BTCUSDT")]
pub struct Symbol(Arc<str>);

impl Symbol {
    /// Longest symbol accepted.
    pub const MAX_LEN: usize = 20;

    /// Parses and upper-cases a symbol: 2 to 20 ASCII letters and digits.
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            (2..=Self::MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self(Arc::from(s.to_ascii_uppercase())))
    }

    /// The symbol.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which side of the book took liquidity (for trades) or was liquidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

crate::deserialize_from_names!(Side { "buy" => Side::Buy, "sell" => Side::Sell });

/// A price level: (price, quantity).
pub type Level = (Decimal, Decimal);

/// Candle intervals Keel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Interval {
    /// One minute.
    #[serde(rename = "1m")]
    M1,
    /// Five minutes.
    #[serde(rename = "5m")]
    M5,
    /// Fifteen minutes.
    #[serde(rename = "15m")]
    M15,
    /// One hour.
    #[serde(rename = "1h")]
    H1,
}

impl Interval {
    /// Every interval, shortest first.
    pub const ALL: [Interval; 4] = [Interval::M1, Interval::M5, Interval::M15, Interval::H1];

    /// Length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Interval::M1 => 60_000,
            Interval::M5 => 300_000,
            Interval::M15 => 900_000,
            Interval::H1 => 3_600_000,
        }
    }

    /// `1m`, `5m`, `15m`, `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::H1 => "1h",
        }
    }

    /// Parses `1m`, `5m`, `15m`, `1h`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

/// One candle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Candle {
    /// Its interval.
    pub interval: Interval,
    /// Start of the candle, ms since the epoch.
    pub open_time: u64,
    /// Open.
    pub open: Decimal,
    /// High.
    pub high: Decimal,
    /// Low.
    pub low: Decimal,
    /// Close (last price so far while open).
    pub close: Decimal,
    /// Base volume.
    pub volume: Decimal,
    /// Whether the candle is final.
    pub closed: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A trade.
    Trade {
        /// Price.
        price: Decimal,
        /// Quantity.
        qty: Decimal,
        /// The aggressor's side.
        side: Side,
        /// The venue's trade id.
        trade_id: u64,
    },
    /// Best bid and ask.
    Quote {
        /// Best bid price.
        bid: Decimal,
        /// Quantity at the best bid.
        bid_qty: Decimal,
        /// Best ask price.
        ask: Decimal,
        /// Quantity at the best ask.
        ask_qty: Decimal,
    },
    /// A candle update.
    Candle(Candle),
    /// Book levels: a top-N snapshot, or a diff to apply (`snapshot` false).
    Depth {
        /// Bid levels, best first.
        bids: Vec<Level>,
        /// Ask levels, best first.
        asks: Vec<Level>,
        /// The venue's book update id.
        update_id: u64,
        /// Whether these are whole top-N levels rather than changes.
        snapshot: bool,
    },
    /// A forced liquidation.
    Liquidation {
        /// Side of the liquidation order.
        side: Side,
        /// Order price.
        price: Decimal,
        /// Quantity.
        qty: Decimal,
    },
    /// A perpetual's mark price and funding (Binance `markPriceUpdate`, Bybit linear `tickers`).
    MarkPrice {
        /// The mark price.
        mark_price: Decimal,
        /// The funding rate the next funding time will apply, when published.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        funding_rate: Option<Decimal>,
        /// The next funding time, ms since the epoch, when published.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_funding_ms: Option<u64>,
    },
    /// Data may have been missed (reconnect): resynchronise before trusting local state.
    Gap {
        /// Why.
        reason: String,
    },
}

/// One normalised market event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketEvent {
    /// Where it happened.
    pub venue: VenueId,
    /// The instrument.
    pub symbol: Symbol,
    /// The exchange's event time, ms since the epoch.
    pub exchange_ts: u64,
    /// When Keel received it, µs since the epoch (for tick-to-strategy and tick-to-client latency).
    pub received_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl MarketEvent {
    /// The stream this event belongs to.
    pub fn stream_kind(&self) -> Option<StreamKind> {
        Some(match &self.kind {
            EventKind::Trade { .. } => StreamKind::Trades,
            EventKind::Quote { .. } => StreamKind::Quotes,
            EventKind::Candle(_) => StreamKind::Candles1m,
            EventKind::Depth { .. } => StreamKind::Depth,
            EventKind::Liquidation { .. } => StreamKind::Liquidations,
            EventKind::MarkPrice { .. } => StreamKind::MarkPrice,
            EventKind::Gap { .. } => return None,
        })
    }
}
