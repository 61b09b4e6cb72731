//! Binance stream frames into [`Inbound`]: market events, subscription replies, shutdown notices.
//!
//! One pass of `serde_json` over the frame, filling `Body` in place: a borrowed struct with a
//! slot for every field any frame Keel meets can carry (event fields, control-reply fields; the
//! combined-stream wrapper's `data` fills a second one). Nothing depends on the order of keys,
//! nothing is parsed twice, nothing big is moved. The few keys whose type differs between
//! events (`a` is an aggregate trade id, a best ask or ask levels) read into `Flex`. Prices
//! and quantities stay borrowed strings until the event type is known, then become exact
//! [`Decimal`]s ([`parse_decimal`]); depth levels are converted as they are read, straight into the
//! event's vectors.
//!
//! Where Binance sends no event time (spot `bookTicker`, spot partial depth), `exchange_ts` is
//! the receive time in milliseconds: no earlier than the truth, never zero. Do not measure
//! exchange-to-Keel latency from those events.
//!
//! A partial-depth frame (`depth<N>`) is a whole top-N book; on futures it has the same shape as
//! a diff (`depthUpdate`), so only the stream name tells them apart, and only wrapped frames
//! (Keel's combined-stream connection sends nothing else) are recognised as snapshots.
//!
//! Cost: `benches/market_parse.rs` compares [`parse`] with a bare `serde_json` read of the same
//! frame into borrowed strings; the JSON pass costs the same, the rest is the decimals and the
//! symbol ([`Symbol::parse`], two allocations, or a [`SymbolCache`] hit on a connection).
//!
//! This module turns a read frame into an event; `frame` holds the frame's borrowed shape and
//! its one-pass reader, `decimal` the decimal reader and field checks.

mod decimal;
mod frame;

use std::collections::HashMap;

use serde::de::Deserializer;

pub use decimal::parse_decimal;
use decimal::{excerpt, non_negative, positive};
use frame::{Body, Flex, Frame, InPlace, Kline, Order, Presence};

use super::streams::{channel_kind, is_partial_depth};
use keel_core::market::{Candle, EventKind, Interval, Level, MarketEvent, Side, Symbol, VenueId};

/// Largest frame parsed. A `depth20` frame is about 2 KiB; anything past this is not a stream
/// Keel subscribes to, and is refused before any work is spent on it.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Levels each side of a depth event is allocated for up front: a `depth20` book never grows.
const LEVELS_CAPACITY: usize = 20;

/// Most bytes of input an error keeps (for logs), so junk frames cannot bloat them.
const EXCERPT_BYTES: usize = 64;

/// Event types Binance documents on its public market streams that Keel does not consume.
const UNSUPPORTED_EVENTS: &[&str] = &[
    "24hrTicker",
    "24hrMiniTicker",
    "1hTicker",
    "4hTicker",
    "1dTicker",
    "avgPrice",
    "continuous_kline",
    "compositeIndex",
    "contractInfo",
    "assetIndexUpdate",
];

/// One frame from a Binance market-stream connection: the seam's frame type.
pub use crate::market::Inbound;

/// Why a frame could not be used.
///
/// Every variant concerns one frame only: the feed counts it under
/// `keel_feed_errors_total{venue, reason}` ([`ParseError::reason`]) and carries on with the
/// next. None says the connection itself is broken.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The frame is over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not JSON, or a field of the wrong JSON type.
    #[error("unreadable frame: {0}")]
    Json(#[from] serde_json::Error),
    /// A field that takes several types (`a`, `b`, `o`) has the wrong one for this event.
    #[error("field `{0}` has the wrong type")]
    WrongType(&'static str),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A decimal string that is not a plain decimal (`"abc"`, `"1e5"`, `"1_0"`, too many digits).
    #[error("field `{field}` is not a decimal: {value:?}")]
    BadNumber {
        /// The field.
        field: &'static str,
        /// The start of what was there.
        value: String,
    },
    /// A value outside what the field allows: a price that is not positive, a side that is
    /// neither buy nor sell, a candle whose high is below its low.
    #[error("field `{field}` is out of range: {value}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The start of what was there.
        value: String,
    },
    /// Not a symbol Keel accepts.
    #[error("bad symbol {0:?}")]
    BadSymbol(String),
    /// A combined-stream frame whose payload is for another symbol or kind than its stream.
    #[error("payload ({payload}) does not belong on stream {stream:?}")]
    StreamMismatch {
        /// The wrapper's stream name.
        stream: String,
        /// What the payload was.
        payload: &'static str,
    },
    /// A frame of a type Binance does not document on market streams.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A documented frame Keel does not consume (`markPriceUpdate`, `24hrTicker`, a kline
    /// interval Keel does not keep).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl ParseError {
    /// A short, stable label for the `reason` of `keel_feed_errors_total{venue, reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::TooLarge(_) => "too_large",
            ParseError::Json(e) if e.is_data() => "bad_type",
            ParseError::Json(_) => "json",
            ParseError::WrongType(_) => "bad_type",
            ParseError::MissingField(_) => "missing_field",
            ParseError::BadNumber { .. } => "bad_number",
            ParseError::BadValue { .. } => "bad_value",
            ParseError::BadSymbol(_) => "bad_symbol",
            ParseError::StreamMismatch { .. } => "stream_mismatch",
            ParseError::UnknownEvent(_) => "unknown_event",
            ParseError::Unsupported(_) => "unsupported",
        }
    }
}

/// Parses one text frame received at `received_us` (µs since the epoch) on `venue`'s
/// combined-stream connection. Raw (unwrapped) payloads are accepted too.
///
/// # Errors
/// The frame is malformed, inconsistent, or not market data Keel consumes; see [`ParseError`].
pub fn parse(venue: VenueId, text: &str, received_us: u64) -> Result<Inbound, ParseError> {
    parse_with(venue, text, received_us, &mut SymbolCache::default())
}

/// Symbols already seen on one connection: an event's symbol is then a clone of a shared one (an
/// atomic increment) instead of a validated, upper-cased new allocation.
#[derive(Debug, Default)]
pub struct SymbolCache {
    last: Option<Symbol>,
    known: HashMap<Box<str>, Symbol>,
}

impl SymbolCache {
    /// Most distinct spellings kept (a connection carries at most 1024 streams).
    const MAX: usize = 4096;

    /// The symbol spelled `raw` (as the frame has it), parsed once.
    pub fn get(&mut self, raw: &str) -> Option<Symbol> {
        if let Some(last) = &self.last
            && last.as_str() == raw
        {
            return Some(last.clone());
        }
        let symbol = match self.known.get(raw) {
            Some(symbol) => symbol.clone(),
            None => {
                let symbol = Symbol::parse(raw)?;
                if self.known.len() < Self::MAX {
                    self.known.insert(raw.into(), symbol.clone());
                }
                symbol
            }
        };
        self.last = Some(symbol.clone());
        Some(symbol)
    }
}

/// [`parse`] with a connection's [`SymbolCache`].
///
/// # Errors
/// As [`parse`].
pub fn parse_with(
    venue: VenueId,
    text: &str,
    received_us: u64,
    symbols: &mut SymbolCache,
) -> Result<Inbound, ParseError> {
    if venue == VenueId::Sim {
        return Err(ParseError::Unsupported("the sim venue has no Binance streams".to_owned()));
    }
    if text.len() > MAX_FRAME_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    let mut frame = Frame::default();
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(InPlace(&mut frame))?;
    de.end()?;
    // By reference: a `Body` is a few hundred bytes, not worth moving.
    match frame.data {
        Presence::Object => convert(venue, &mut frame.body, frame.stream, received_us, symbols),
        Presence::Other => Err(ParseError::WrongType("data")),
        Presence::Absent => convert(venue, &mut frame.body, None, received_us, symbols),
    }
}

/// Builds the [`Inbound`] for a payload, wrapped in `stream` or not.
fn convert(
    venue: VenueId,
    b: &mut Body<'_>,
    stream: Option<&str>,
    received_us: u64,
    symbols: &mut SymbolCache,
) -> Result<Inbound, ParseError> {
    let (stream_symbol, channel) = match stream.and_then(|s| s.split_once('@')) {
        Some((symbol, channel)) => (Some(symbol), Some(channel)),
        None => (None, None),
    };
    let received_ms = received_us / 1000;
    let event_time = b.event_time.or(b.time);
    let event_time = move || required(event_time, "E");
    let (symbol, exchange_ts, kind) = match b.event {
        Some("trade") => {
            let id = required(b.trade_id, "t")?;
            (b.symbol, event_time()?, trade(b, id)?)
        }
        Some("aggTrade") => {
            let id = match b.a {
                Some(Flex::Num(id)) => id,
                Some(_) => return Err(ParseError::WrongType("a")),
                None => return Err(ParseError::MissingField("a")),
            };
            (b.symbol, event_time()?, trade(b, id)?)
        }
        Some("bookTicker") => (b.symbol, event_time()?, quote(b)?),
        Some("markPriceUpdate") => (b.symbol, event_time()?, mark_price(b)?),
        Some("kline") => {
            let k = object(b.k, &b.kline, "k")?;
            (b.symbol.or(k.symbol), event_time()?, candle(k)?)
        }
        Some("depthUpdate") => {
            let update_id = required(b.update_id, "u")?;
            let kind = EventKind::Depth {
                bids: levels(b.b.take(), "b")?,
                asks: levels(b.a.take(), "a")?,
                update_id,
                snapshot: channel.is_some_and(is_partial_depth),
            };
            (b.symbol, event_time()?, kind)
        }
        Some("forceOrder") => {
            let order = object(b.o, &b.order, "o")?;
            let ts = required(b.event_time.or(order.time), "E")?;
            (order.symbol, ts, liquidation(order)?)
        }
        Some("serverShutdown") => return Ok(Inbound::ServerShutdown),
        Some(other) if UNSUPPORTED_EVENTS.contains(&other) => {
            return Err(ParseError::Unsupported(format!("event {other}")));
        }
        Some(other) => return Err(ParseError::UnknownEvent(excerpt(other))),
        // Frames without an event type: spot partial depth and bookTicker, control replies.
        None => {
            if let Some(update_id) = b.last_update_id {
                let bids = levels(b.b.take(), "bids")?;
                let asks = levels(b.a.take(), "asks")?;
                let kind = EventKind::Depth { bids, asks, update_id, snapshot: true };
                // The payload names no symbol: it must come from the wrapper's stream name.
                let symbol = required(stream_symbol, "stream")?;
                (Some(symbol), received_ms, kind)
            } else if let Some(code) = b.code {
                let msg = b.msg.take().unwrap_or_default();
                return Ok(Inbound::Error { code, msg, id: b.id });
            } else if b.result {
                return Ok(Inbound::Ack { id: required(b.id, "id")? });
            } else if b.update_id.is_some() {
                (b.symbol, received_ms, quote(b)?)
            } else {
                return Err(ParseError::UnknownEvent("(no event type)".to_owned()));
            }
        }
    };

    let symbol = match (symbol, stream_symbol) {
        (Some(ours), Some(theirs)) if !ours.eq_ignore_ascii_case(theirs) => {
            return Err(mismatch(stream, "another symbol"));
        }
        (Some(symbol), _) | (None, Some(symbol)) => symbol,
        (None, None) => return Err(ParseError::MissingField("s")),
    };
    let symbol = symbols.get(symbol).ok_or_else(|| ParseError::BadSymbol(excerpt(symbol)))?;
    let event = MarketEvent { venue, symbol, exchange_ts, received_us, kind };
    if let Some(expected) = channel.and_then(channel_kind)
        && event.stream_kind() != Some(expected)
    {
        return Err(mismatch(stream, "another kind of data"));
    }
    Ok(Inbound::Event(event))
}

fn mismatch(stream: Option<&str>, payload: &'static str) -> ParseError {
    ParseError::StreamMismatch { stream: excerpt(stream.unwrap_or_default()), payload }
}

/// A required field. (`Option::ok_or` would build, then drop, the error every time.)
pub(super) fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ParseError> {
    match value {
        Some(value) => Ok(value),
        None => Err(ParseError::MissingField(field)),
    }
}

/// An object-valued field (`k`, `o`) must be there, and be an object.
fn object<'x, T>(
    presence: Presence,
    value: &'x Option<T>,
    field: &'static str,
) -> Result<&'x T, ParseError> {
    match (presence, value) {
        (Presence::Object, Some(value)) => Ok(value),
        (Presence::Absent, _) => Err(ParseError::MissingField(field)),
        _ => Err(ParseError::WrongType(field)),
    }
}

/// `trade` and `aggTrade`: `m` says the buyer was the maker, so the aggressor sold.
fn trade(b: &Body<'_>, trade_id: u64) -> Result<EventKind, ParseError> {
    let price = positive("p", b.price)?;
    let qty = positive("q", b.qty)?;
    let side = match required(b.buyer_is_maker, "m")? {
        true => Side::Sell,
        false => Side::Buy,
    };
    Ok(EventKind::Trade { price, qty, side, trade_id })
}

/// `bookTicker`. An empty book side (zero price) is refused: a strategy must never see it.
fn quote(b: &Body<'_>) -> Result<EventKind, ParseError> {
    Ok(EventKind::Quote {
        bid: positive("b", flex_str(&b.b, "b")?)?,
        bid_qty: positive("B", b.bid_qty)?,
        ask: positive("a", flex_str(&b.a, "a")?)?,
        ask_qty: positive("A", b.ask_qty)?,
    })
}

/// USD-M `markPriceUpdate`: the mark price `p`, the funding rate `r` (empty for a delivery
/// contract) and the next funding time `T` (0 when there is none).
fn mark_price(b: &Body<'_>) -> Result<EventKind, ParseError> {
    let mark_price = positive("p", b.price)?;
    let funding_rate = match b.funding_rate {
        None | Some("") => None,
        Some(r) => {
            let (negative, digits) = match r.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, r),
            };
            let rate = decimal::parse_decimal(digits)
                .ok_or_else(|| ParseError::BadNumber { field: "r", value: excerpt(r) })?;
            Some(if negative { -rate } else { rate })
        }
    };
    let next_funding_ms = b.time.filter(|t| *t > 0);
    Ok(EventKind::MarkPrice { mark_price, funding_rate, next_funding_ms })
}

fn candle(k: &Kline<'_>) -> Result<EventKind, ParseError> {
    let interval = required(k.interval, "k.i")?;
    let interval = Interval::parse(interval)
        .ok_or_else(|| ParseError::Unsupported(format!("kline interval {}", excerpt(interval))))?;
    let candle = Candle {
        interval,
        open_time: required(k.open_time, "k.t")?,
        open: positive("k.o", k.open)?,
        high: positive("k.h", k.high)?,
        low: positive("k.l", k.low)?,
        close: positive("k.c", k.close)?,
        volume: non_negative("k.v", k.volume)?,
        closed: required(k.closed, "k.x")?,
    };
    let (low, high) = (candle.low, candle.high);
    if [candle.open, candle.close].iter().any(|p| *p < low || *p > high) {
        return Err(ParseError::BadValue {
            field: "k",
            value: format!("o {} h {high} l {low} c {}", candle.open, candle.close),
        });
    }
    Ok(EventKind::Candle(candle))
}

/// `forceOrder`: the liquidation order's side, price and original quantity.
fn liquidation(order: &Order<'_>) -> Result<EventKind, ParseError> {
    let side = match required(order.side, "o.S")? {
        "BUY" => Side::Buy,
        "SELL" => Side::Sell,
        other => return Err(ParseError::BadValue { field: "o.S", value: excerpt(other) }),
    };
    Ok(EventKind::Liquidation {
        side,
        price: positive("o.p", order.price)?,
        qty: positive("o.q", order.qty)?,
    })
}

fn flex_str<'a>(
    flex: &Option<Flex<'a>>,
    field: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match flex {
        Some(Flex::Str(s)) => Ok(Some(s)),
        Some(_) => Err(ParseError::WrongType(field)),
        None => Ok(None),
    }
}

fn levels(flex: Option<Flex<'_>>, field: &'static str) -> Result<Vec<Level>, ParseError> {
    match flex {
        Some(Flex::Levels(levels)) => levels.map_err(|e| *e),
        Some(_) => Err(ParseError::WrongType(field)),
        None => Err(ParseError::MissingField(field)),
    }
}

#[cfg(test)]
mod tests;
