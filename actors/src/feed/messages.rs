//! The feed's messages: subscriptions, market requests and what they answer, and the market
//! data a subscriber receives.

use std::fmt;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use super::replay::ReplayStatus;
use super::state::{BestQuote, LastTrade};
use crate::mailbox::Query;
use keel_core::market::{Candle, Interval, MarketEvent, StreamKind, Symbol, VenueId};

/// A market event delivered to a subscriber. Cloning shares the event.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct MarketData(pub Arc<MarketEvent>);

/// Who subscribed (a bot id, a client connection id); unique per feed.
pub type SubscriberId = u64;

/// Why the feed refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The venue does not list this symbol.
    #[error("{venue} has no symbol {symbol}")]
    UnknownSymbol {
        /// Venue.
        venue: VenueId,
        /// Symbol.
        symbol: String,
    },
    /// The venue does not offer this kind of stream.
    #[error("{venue} has no {kind} stream")]
    Unsupported {
        /// Venue.
        venue: VenueId,
        /// Stream kind.
        kind: &'static str,
    },
    /// Nothing arrived within the wait.
    #[error("no market data for {symbol} on {venue} yet")]
    NoData {
        /// Venue.
        venue: VenueId,
        /// Symbol.
        symbol: String,
    },
}

/// Subscribe `recipient` to one stream.
pub struct Subscribe {
    /// Symbol.
    pub symbol: Symbol,
    /// Stream kind.
    pub kind: StreamKind,
    /// Subscriber id (unsubscribe with the same).
    pub subscriber: SubscriberId,
    /// Where events go.
    pub recipient: Recipient<MarketData>,
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subscribe({} {} by {})", self.symbol, self.kind.as_str(), self.subscriber)
    }
}

impl Query for Subscribe {
    type Answer = Result<(), FeedError>;
}

/// Stop delivering one stream to a subscriber.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// Symbol.
    pub symbol: Symbol,
    /// Stream kind.
    pub kind: StreamKind,
    /// Subscriber id.
    pub subscriber: SubscriberId,
}

/// The trading rules (tick, step, minimums) of one symbol.
#[derive(Debug, Clone)]
pub struct GetInstrument {
    /// Symbol.
    pub symbol: Symbol,
}
impl Query for GetInstrument {
    type Answer = Result<keel_core::trading::InstrumentFilters, InstrumentError>;
}

/// Why a symbol's rules are not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    /// The venue does not list the symbol.
    #[error("unknown symbol")]
    UnknownSymbol,
    /// The venue's rules are not loaded (its REST endpoint is unreachable).
    #[error("instrument rules unavailable")]
    Unavailable,
}

/// Last trade and best bid/ask of a symbol.
#[derive(Debug, Clone)]
pub struct GetTicker {
    /// Symbol.
    pub symbol: Symbol,
}
impl Query for GetTicker {
    type Answer = Result<Ticker, FeedError>;
}

/// A symbol's ticker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ticker {
    /// Venue.
    pub venue: VenueId,
    /// Symbol.
    pub symbol: Symbol,
    /// Last trade.
    pub last_trade: Option<LastTrade>,
    /// Best bid/ask.
    pub quote: Option<BestQuote>,
}

/// Rolling candles of a symbol.
#[derive(Debug, Clone)]
pub struct GetCandles {
    /// Symbol.
    pub symbol: Symbol,
    /// Interval.
    pub interval: Interval,
    /// How many, newest last.
    pub limit: usize,
}
impl Query for GetCandles {
    type Answer = Result<Vec<Candle>, FeedError>;
}

/// The venue's health.
#[derive(Debug, Clone, Copy)]
pub struct GetVenueStatus;
impl Query for GetVenueStatus {
    type Answer = VenueStatus;
}

/// Connection state of a venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Connectivity {
    /// Receiving data.
    Connected,
    /// Connected but some streams are stale or reconnecting.
    Degraded,
    /// No connection.
    Down,
    /// Not enabled in this instance's configuration: no feed runs for it.
    Disabled,
}

/// What `GET /venues` shows for one venue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VenueStatus {
    /// Venue.
    pub venue: VenueId,
    /// State.
    pub state: Connectivity,
    /// Active streams (`market:sim:BTCUSDT:trades`).
    pub streams: Vec<String>,
    /// Milliseconds since the last message, if any arrived.
    pub last_message_age_ms: Option<u64>,
    /// Subscriptions across all streams.
    pub subscribers: usize,
    /// Where the replay is, when the venue replays a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,
}
