//! The market-data half of the venue seam: what a feed needs from a venue.
//!
//! A feed holds an `Arc<dyn MarketConnector>` and never names the venue behind it. Data reaches
//! it one of two ways, and a connector offers exactly one:
//! - **upstream** ([`MarketConnector::connection`] is `Some`): the feed opens WebSocket
//!   connections with the generic driver in [`crate::connection`], which speaks the venue's
//!   protocol through the connector: stream names, subscribe/unsubscribe bodies, frame parsing;
//! - **simulated** ([`MarketConnector::simulator`] is `Some`): the feed asks a [`Simulator`] for
//!   events on its own tick, with no network at all.

use std::collections::HashMap;
use std::fmt;

use futures_util::future::BoxFuture;

use crate::connection::ConnectionConfig;
use keel_core::market::{MarketEvent, StreamKind, Symbol, VenueId};
use keel_core::trading::InstrumentFilters;

/// Every tradable symbol of a venue and its rules.
pub type InstrumentMap = HashMap<Symbol, InstrumentFilters>;

/// Where a venue's instrument rules come from.
pub enum Instruments {
    /// Known without asking anyone (the simulated venue): valid from the feed's start on.
    Fixed(InstrumentMap),
    /// Fetched from the venue (exchange info); the feed reloads them now and then and, until
    /// the first load succeeds, checks symbols by syntax only.
    Fetch(BoxFuture<'static, Result<InstrumentMap, String>>),
    /// Not known and not fetchable (no REST endpoint configured): symbols are checked by
    /// syntax only, and the venue itself refuses what it does not list.
    Unavailable,
}

impl fmt::Debug for Instruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Instruments::Fixed(map) => write!(f, "Fixed({} symbols)", map.len()),
            Instruments::Fetch(_) => f.write_str("Fetch(..)"),
            Instruments::Unavailable => f.write_str("Unavailable"),
        }
    }
}

/// One frame from a venue's market-stream connection, as its connector understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Market data.
    Event(MarketEvent),
    /// Several events from one frame, in order (Bybit batches trades; a book update may give a
    /// quote and a depth snapshot).
    Events(Vec<MarketEvent>),
    /// A `SUBSCRIBE`/`UNSUBSCRIBE` (or other request) succeeded: `{"result":…,"id":…}`.
    Ack {
        /// The request's id.
        id: u64,
    },
    /// A request failed: `{"code":2,"msg":"…","id":3}`; `id` is absent when the venue could
    /// not read the request's.
    Error {
        /// The venue's error code.
        code: i64,
        /// The venue's message.
        msg: String,
        /// The failed request's id.
        id: Option<u64>,
    },
    /// The server is about to close the connection: reconnect now.
    ServerShutdown,
}

/// Why one frame could not be used. It concerns that frame only: the connection counts it
/// under `keel_feed_errors_total{venue, reason}` and carries on with the next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct FrameError {
    /// A short, stable label for the metric's `reason`.
    pub reason: &'static str,
    /// What was wrong, for the log.
    pub detail: String,
}

/// Parses the frames of one connection; it may keep state across frames (a symbol cache).
pub trait FrameParser: Send {
    /// Parses one text frame received at `received_us` (µs since the epoch).
    ///
    /// # Errors
    /// The frame is malformed, inconsistent, or not data Keel consumes.
    fn parse(&mut self, text: &str, received_us: u64) -> Result<Inbound, FrameError>;
}

/// Generates a simulated venue's data in process, on the feed's tick.
pub trait Simulator: Send {
    /// Trades per second per active symbol.
    fn trades_per_sec(&self) -> f64;

    /// Advances `symbol` by one trade and returns the events it makes (the trade and the quote
    /// around it), stamped with `now_ms` / `received_us`; `None` for a symbol not simulated.
    fn step(&mut self, symbol: &Symbol, now_ms: u64, received_us: u64) -> Option<Vec<MarketEvent>>;
}

/// What a feed needs from a venue to carry its market data.
///
/// The contract:
/// - [`venue`](Self::venue) is fixed for the connector's life; every event it produces (by
///   parsing or simulating) carries that venue.
/// - [`supports`](Self::supports) is the whole list of stream kinds the venue offers; the feed
///   refuses a subscription to any other. For an upstream venue, [`stream_name`](Self::stream_name)
///   is `Some` exactly for the supported kinds, and [`parse_stream_name`](Self::parse_stream_name)
///   is its inverse: it recognises only names `stream_name` produces.
/// - Exactly one of [`connection`](Self::connection) and [`simulator`](Self::simulator) is
///   `Some`. The protocol methods (`stream_name`, requests, [`parser`](Self::parser)) are only
///   called on a connector with a connection; their defaults suit one without.
/// - Nothing here blocks: [`instruments`](Self::instruments) returns a future the feed polls on
///   its own.
pub trait MarketConnector: fmt::Debug + Send + Sync {
    /// Which venue this is.
    fn venue(&self) -> VenueId;

    /// Whether the venue offers `kind` streams.
    fn supports(&self, kind: StreamKind) -> bool;

    /// The venue's instrument rules, or how to fetch them.
    fn instruments(&self) -> Instruments;

    /// The upstream connection settings: URL, limits, reconnect policy. `None` for a venue
    /// whose data is simulated.
    fn connection(&self) -> Option<ConnectionConfig> {
        None
    }

    /// A simulator for a venue whose data is generated in process; `None` for an upstream one.
    fn simulator(&self) -> Option<Box<dyn Simulator>> {
        None
    }

    /// The venue's name for the stream carrying `kind` of `symbol` (`btcusdt@trade`), or `None`
    /// where it has no such stream.
    fn stream_name(&self, _symbol: &Symbol, _kind: StreamKind) -> Option<String> {
        None
    }

    /// The Keel stream a venue stream name carries: the inverse of
    /// [`stream_name`](Self::stream_name).
    fn parse_stream_name(&self, _name: &str) -> Option<(Symbol, StreamKind)> {
        None
    }

    /// The body of a request subscribing one connection to `streams`; `id` is echoed in the
    /// venue's answer ([`Inbound::Ack`] / [`Inbound::Error`]).
    fn subscribe_request(&self, _id: u64, _streams: &[String]) -> String {
        String::new()
    }

    /// The body of a request stopping `streams` on one connection.
    fn unsubscribe_request(&self, _id: u64, _streams: &[String]) -> String {
        String::new()
    }

    /// Most streams one subscribe or unsubscribe request may name. Binance accepts long lists
    /// (200 keeps each message well under its frame limits); Bybit spot takes 10.
    fn streams_per_request(&self) -> usize {
        200
    }

    /// The text of an application-level ping, for a venue that wants one instead of (or as
    /// well as) WebSocket ping frames; `None` (the default) sends ping frames only.
    fn heartbeat(&self, _id: u64) -> Option<String> {
        None
    }

    /// A parser for one new connection's frames.
    fn parser(&self) -> Box<dyn FrameParser> {
        Box::new(NoFrames)
    }
}

/// The parser of a venue without an upstream: nothing it could be given is data.
struct NoFrames;

impl FrameParser for NoFrames {
    fn parse(&mut self, _text: &str, _received_us: u64) -> Result<Inbound, FrameError> {
        Err(FrameError { reason: "unsupported", detail: "this venue has no streams".to_owned() })
    }
}
