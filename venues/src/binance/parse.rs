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

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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
    "markPriceUpdate",
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
fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ParseError> {
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

/// Decimal strings with up to this many digits are read here; longer ones (which Binance does
/// not send) go through `rust_decimal`'s own parser.
const FAST_DIGITS: usize = 19;

/// Reads a decimal as Binance writes them (`"98234.51000000"`), keeping its scale: an optional
/// `-`, digits, at most one `.`, at least one digit. `None` for anything else.
///
/// `rust_decimal`'s parsers also take `+1` and `1_000` (and `from_str` takes `1e5`), so the
/// grammar is checked here, and the mantissa and scale are read directly: exactly what
/// `Decimal::from_str_exact` gives (a test compares them on random strings) in well under
/// its time. Strings of 8 to 16 bytes with at most 7 integer and 8 fractional digits (most
/// of Binance's prices and quantities) are read eight bytes at a time, the rest a digit at a
/// time; past 19 digits `from_str_exact` takes over, which refuses rather than rounds past 28
/// fractional digits.
// Inlined into its callers: the call and the `Option<Decimal>` round trip cost a tenth of it.
#[inline(always)]
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    let (negative, body) = match s.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        bytes => (false, bytes),
    };
    let (mantissa, scale) = match swar_decimal(body).or_else(|| scalar_decimal(body)) {
        Some(parts) => parts,
        None => return slow_decimal(body, s),
    };
    Some(Decimal::from_parts(mantissa as u32, (mantissa >> 32) as u32, 0, negative, scale))
}

/// `'0'` in every byte.
const ZEROS: u64 = 0x3030_3030_3030_3030;
/// Powers of ten up to the eight fractional digits [`swar_decimal`] reads.
const POW10: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Zero in every byte that is an ASCII digit, non-zero in the first byte that is not.
fn non_digits(v: u64) -> u64 {
    const HIGH_NIBBLES: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    // A digit's high nibble is 3, and stays 3 when 6 is added to it.
    let nibbles =
        (v & HIGH_NIBBLES) | ((v.wrapping_add(0x0606_0606_0606_0606) & HIGH_NIBBLES) >> 4);
    nibbles ^ 0x3333_3333_3333_3333
}

/// The number written by eight digit values (0 to 9, one a byte, the first in the low byte):
/// pairs, then fours, then all eight.
fn eight_digits(d: u64) -> u64 {
    let d = (d.wrapping_mul(10) + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d.wrapping_mul(100) + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    (d.wrapping_mul(10_000) + (d >> 32)) & 0xFFFF_FFFF
}

/// `int.frac` with 8 to 16 bytes, at most 7 integer and 8 fractional digits, as (mantissa,
/// scale); `None` for anything else, valid or not, which the scalar reader then handles.
#[inline(always)]
fn swar_decimal(body: &[u8]) -> Option<(u64, u32)> {
    if body.len() > 16 {
        return None;
    }
    let head = u64::from_le_bytes(*body.first_chunk::<8>()?);
    let tail = u64::from_le_bytes(*body.last_chunk::<8>()?);
    let int_len = (non_digits(head).trailing_zeros() / 8) as usize;
    if int_len >= 8 || body[int_len] != b'.' {
        return None;
    }
    let frac_len = body.len() - int_len - 1;
    if frac_len > 8 {
        return None;
    }
    // The integer digits moved to the top bytes (subtracting '0' from the point and what
    // follows borrows, but only into bytes the shift drops); zero bytes below lead.
    let int = match int_len {
        0 => 0,
        n => eight_digits(head.wrapping_sub(ZEROS) << (8 * (8 - n))),
    };
    // The fraction is the top `frac_len` bytes of `tail`; the bytes below become '0's.
    let keep = match frac_len {
        0 => 0,
        n => u64::MAX << (8 * (8 - n)),
    };
    let frac = (tail & keep) | (ZEROS & !keep);
    if non_digits(frac) != 0 {
        return None;
    }
    let mantissa = int * POW10[frac_len] + eight_digits(frac - ZEROS);
    Some((mantissa, frac_len as u32))
}

/// Up to [`FAST_DIGITS`] digits, one at a time, as (mantissa, scale); `None` if the string is
/// not plain or has more digits.
fn scalar_decimal(body: &[u8]) -> Option<(u64, u32)> {
    if body.len() > FAST_DIGITS + 1 {
        return None;
    }
    // Sums wrap harmlessly past FAST_DIGITS digits: that case is refused below.
    let mut mantissa: u64 = 0;
    let mut int_len = body.len();
    for (i, &b) in body.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            int_len = i;
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    let frac = match body.get(int_len..) {
        Some([b'.', frac @ ..]) => frac,
        Some([]) => &[],
        _ => return None,
    };
    for &b in frac {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    let digits = int_len + frac.len();
    // At most FAST_DIGITS fractional digits: within Decimal's 28.
    (1..=FAST_DIGITS).contains(&digits).then_some((mantissa, frac.len() as u32))
}

/// Not read above: more than [`FAST_DIGITS`] digits, or not a plain decimal at all. The
/// grammar is checked here, the value comes from `rust_decimal`.
#[cold]
fn slow_decimal(body: &[u8], s: &str) -> Option<Decimal> {
    let digits = body.iter().filter(|b| b.is_ascii_digit()).count();
    let points = body.iter().filter(|&&b| b == b'.').count();
    let plain = digits > FAST_DIGITS && points <= 1 && digits + points == body.len();
    plain.then(|| Decimal::from_str_exact(s).ok()).flatten()
}

/// A required decimal above zero (prices, trade quantities).
fn positive(field: &'static str, s: Option<&str>) -> Result<Decimal, ParseError> {
    let s = required(s, field)?;
    match parse_decimal(s) {
        Some(d) if d.is_sign_positive() && !d.is_zero() => Ok(d),
        Some(d) => Err(ParseError::BadValue { field, value: d.to_string() }),
        None => Err(ParseError::BadNumber { field, value: excerpt(s) }),
    }
}

/// A required decimal of zero or more (volumes, depth quantities: zero removes a level).
fn non_negative(field: &'static str, s: Option<&str>) -> Result<Decimal, ParseError> {
    let s = required(s, field)?;
    match parse_decimal(s) {
        Some(d) if d.is_sign_positive() || d.is_zero() => Ok(d),
        Some(d) => Err(ParseError::BadValue { field, value: d.to_string() }),
        None => Err(ParseError::BadNumber { field, value: excerpt(s) }),
    }
}

/// One book level: a positive price, a quantity of zero or more.
fn level(price: &str, qty: &str) -> Result<Level, ParseError> {
    Ok((positive("level price", Some(price))?, non_negative("level qty", Some(qty))?))
}

/// The start of `s`, cut on a character boundary, for an error message.
fn excerpt(s: &str) -> String {
    let mut end = s.len().min(EXCERPT_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A whole frame: the wrapper's `stream` and its `data`, or a raw payload. Both fill the one
/// `body` (half the stack a separate body for each would take, and it is written on every frame):
/// a payload key both in the wrapper and in its `data` is a duplicate field.
#[derive(Default)]
struct Frame<'a> {
    stream: Option<&'a str>,
    data: Presence,
    body: Body<'a>,
}

/// Whether an object-valued key was seen, and as an object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Presence {
    #[default]
    Absent,
    Object,
    Other,
}

/// Every field Keel reads from any payload, all optional, so one pass reads any frame in any
/// key order; objects nested in it are read in place, never moved.
#[derive(Default)]
struct Body<'a> {
    /// `e`.
    event: Option<&'a str>,
    /// `E`.
    event_time: Option<u64>,
    /// `T`: trade or transaction time.
    time: Option<u64>,
    /// `s`.
    symbol: Option<&'a str>,
    /// `t`.
    trade_id: Option<u64>,
    /// `p`.
    price: Option<&'a str>,
    /// `q`.
    qty: Option<&'a str>,
    /// `m`.
    buyer_is_maker: Option<bool>,
    /// `a`: the aggregate trade id (`aggTrade`), best ask (`bookTicker`), asks (`depthUpdate`);
    /// also `asks` (partial depth).
    a: Option<Flex<'a>>,
    /// `b`: best bid (`bookTicker`), bids (`depthUpdate`); also `bids` (partial depth).
    b: Option<Flex<'a>>,
    /// `A`.
    ask_qty: Option<&'a str>,
    /// `B`.
    bid_qty: Option<&'a str>,
    /// `u`: the book update id (`bookTicker`), the last one in a `depthUpdate`.
    update_id: Option<u64>,
    /// `lastUpdateId` (partial depth).
    last_update_id: Option<u64>,
    /// Whether `k` was there, and an object (`kline`).
    k: Presence,
    kline: Option<Kline<'a>>,
    /// Whether `o` was there, and an object (`forceOrder`; `24hrTicker` has a price there).
    o: Presence,
    order: Option<Order<'a>>,
    /// Whether `result` was there, even as `null` (control replies).
    result: bool,
    id: Option<u64>,
    code: Option<i64>,
    msg: Option<String>,
}

/// `k` of a `kline` event.
#[derive(Default)]
struct Kline<'a> {
    open_time: Option<u64>,
    symbol: Option<&'a str>,
    interval: Option<&'a str>,
    open: Option<&'a str>,
    high: Option<&'a str>,
    low: Option<&'a str>,
    close: Option<&'a str>,
    volume: Option<&'a str>,
    closed: Option<bool>,
}

/// `o` of a `forceOrder` event.
#[derive(Default)]
struct Order<'a> {
    symbol: Option<&'a str>,
    side: Option<&'a str>,
    price: Option<&'a str>,
    qty: Option<&'a str>,
    time: Option<u64>,
}

/// Reads one value into `slot`. A key seen twice is an error, as in derived deserializers.
/// `null` is a type error, not an absent field: Binance does not send it in these fields.
fn put<'de, T, A>(slot: &mut Option<T>, map: &mut A, key: &'static str) -> Result<(), A::Error>
where
    T: Deserialize<'de>,
    A: MapAccess<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Reads an object-valued key into `target` in place.
fn put_object<'de, T, A>(
    presence: &mut Presence,
    target: &mut T,
    map: &mut A,
    key: &'static str,
) -> Result<(), A::Error>
where
    T: Fill<'de>,
    A: MapAccess<'de>,
{
    if *presence != Presence::Absent {
        return Err(de::Error::duplicate_field(key));
    }
    *presence = map.next_value_seed(InPlace(target))?;
    Ok(())
}

/// Something filled in place from a JSON object's entries.
trait Fill<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, map: A) -> Result<(), A::Error>;
}

impl<'de> Fill<'de> for Frame<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "stream" => put(&mut self.stream, &mut map, "stream")?,
                "data" => put_object(&mut self.data, &mut self.body, &mut map, "data")?,
                _ => body_entry(&mut self.body, key, &mut map)?,
            }
        }
        Ok(())
    }
}

impl<'de> Fill<'de> for Body<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            body_entry(self, key, &mut map)?;
        }
        Ok(())
    }
}

/// Reads the value of `key` into `b`.
#[inline(always)]
fn body_entry<'de, A: MapAccess<'de>>(
    b: &mut Body<'de>,
    key: &'de str,
    m: &mut A,
) -> Result<(), A::Error> {
    match key.as_bytes() {
        [c] => match c {
            b'e' => put(&mut b.event, m, "e"),
            b'E' => put(&mut b.event_time, m, "E"),
            b's' => put(&mut b.symbol, m, "s"),
            b'p' => put(&mut b.price, m, "p"),
            b'q' => put(&mut b.qty, m, "q"),
            b'T' => put(&mut b.time, m, "T"),
            b't' => put(&mut b.trade_id, m, "t"),
            b'm' => put(&mut b.buyer_is_maker, m, "m"),
            b'u' => put(&mut b.update_id, m, "u"),
            b'a' => put(&mut b.a, m, "a"),
            b'b' => put(&mut b.b, m, "b"),
            b'A' => put(&mut b.ask_qty, m, "A"),
            b'B' => put(&mut b.bid_qty, m, "B"),
            b'k' => put_object(&mut b.k, b.kline.get_or_insert_with(Kline::default), m, "k"),
            b'o' => put_object(&mut b.o, b.order.get_or_insert_with(Order::default), m, "o"),
            _ => ignore(m),
        },
        b"bids" => put(&mut b.b, m, "bids"),
        b"asks" => put(&mut b.a, m, "asks"),
        b"lastUpdateId" => put(&mut b.last_update_id, m, "lastUpdateId"),
        b"result" => {
            if b.result {
                return Err(de::Error::duplicate_field("result"));
            }
            b.result = true;
            ignore(m)
        }
        b"id" => {
            // `"id":null` comes back when Binance could not read the request's id.
            if b.id.is_some() {
                return Err(de::Error::duplicate_field("id"));
            }
            b.id = m.next_value()?;
            Ok(())
        }
        b"code" => put(&mut b.code, m, "code"),
        b"msg" => put(&mut b.msg, m, "msg"),
        _ => ignore(m),
    }
}

impl<'de> Fill<'de> for Kline<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            let m = &mut map;
            match key {
                "t" => put(&mut self.open_time, m, "t")?,
                "s" => put(&mut self.symbol, m, "s")?,
                "i" => put(&mut self.interval, m, "i")?,
                "o" => put(&mut self.open, m, "o")?,
                "h" => put(&mut self.high, m, "h")?,
                "l" => put(&mut self.low, m, "l")?,
                "c" => put(&mut self.close, m, "c")?,
                "v" => put(&mut self.volume, m, "v")?,
                "x" => put(&mut self.closed, m, "x")?,
                _ => ignore(m)?,
            }
        }
        Ok(())
    }
}

impl<'de> Fill<'de> for Order<'de> {
    fn fill<A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            let m = &mut map;
            match key {
                "s" => put(&mut self.symbol, m, "s")?,
                "S" => put(&mut self.side, m, "S")?,
                "p" => put(&mut self.price, m, "p")?,
                "q" => put(&mut self.qty, m, "q")?,
                "T" => put(&mut self.time, m, "T")?,
                _ => ignore(m)?,
            }
        }
        Ok(())
    }
}

fn ignore<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// Fills a [`Fill`] from an object in place; any other value is skipped and reported as
/// [`Presence::Other`], so an event Keel ignores cannot fail on a key it never reads.
struct InPlace<'b, T>(&'b mut T);

impl<'de, T: Fill<'de>> DeserializeSeed<'de> for InPlace<'_, T> {
    type Value = Presence;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Presence, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Fill<'de>> Visitor<'de> for InPlace<'_, T> {
    type Value = Presence;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Presence, A::Error> {
        self.0.fill(map)?;
        Ok(Presence::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Presence, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Presence::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Presence, E> {
        Ok(Presence::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Presence, E> {
        Ok(Presence::Other)
    }
}

/// Book levels, converted to decimals as they are read. A bad number does not fail the JSON
/// pass (the frame may be an event that never looks at it); it is kept and reported if the
/// levels are used.
type Levels = Result<Vec<Level>, Box<ParseError>>;

/// A key whose type depends on the event. Anything unexpected is kept as `Other` rather than
/// failing the frame, so an event Keel ignores cannot be mistaken for a broken one.
enum Flex<'a> {
    Str(&'a str),
    Num(u64),
    Levels(Levels),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Flex<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FlexVisitor(PhantomData))
    }
}

struct FlexVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FlexVisitor<'a> {
    type Value = Flex<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or price levels")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Flex::Str(v))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Flex::Num(v))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Flex::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(LEVELS_CAPACITY);
        let mut bad = None;
        while let Some(RawLevel(price, qty)) = seq.next_element()? {
            if bad.is_none() {
                match level(price, qty) {
                    Ok(l) => out.push(l),
                    Err(e) => bad = Some(Box::new(e)),
                }
            }
        }
        Ok(Flex::Levels(bad.map_or(Ok(out), Err)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Flex::Other)
    }
}

/// `["price", "qty"]`; trailing elements (older payloads had an ignored third) are skipped.
struct RawLevel<'a>(&'a str, &'a str);

impl<'de: 'a, 'a> Deserialize<'de> for RawLevel<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawLevel<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[price, quantity]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let price =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let qty = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawLevel(price, qty))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    // Verbatim copies of /work/shared/fixtures/binance/*.jsonl (Binance's documented shapes),
    // kept here so the crate builds and tests on its own.
    const SPOT_STREAMS: &str = r#"{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}
{"e":"aggTrade","E":1732307467130,"s":"BTCUSDT","a":3301234567,"p":"98234.52000000","q":"0.05000000","f":4212345679,"l":4212345681,"T":1732307467129,"m":false,"M":true}
{"u":55123456789,"s":"BTCUSDT","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000"}
{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}
{"e":"kline","E":1732307520001,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212346001,"o":"98210.00000000","c":"98250.00000000","h":"98251.00000000","l":"98200.00000000","v":"15.00000000","n":6002,"x":true,"q":"1473210.00000000","V":"7.00000000","Q":"687500.00000000","B":"0"}}
{"e":"depthUpdate","E":1732307467300,"s":"BTCUSDT","U":55123456790,"u":55123456795,"b":[["98234.51000000","1.10000000"],["98230.00000000","0.00000000"]],"a":[["98234.52000000","0.50000000"]]}
{"lastUpdateId":55123456795,"bids":[["98234.51000000","1.10000000"],["98234.00000000","0.20000000"]],"asks":[["98234.52000000","0.50000000"],["98235.00000000","2.00000000"]]}
{"e":"24hrTicker","E":1732307467400,"s":"BTCUSDT","p":"1234.56000000","P":"1.272","w":"97500.12345678","x":"96999.95000000","c":"98234.51000000","Q":"0.00120000","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000","o":"96999.95000000","h":"98500.00000000","l":"96500.00000000","v":"23456.78900000","q":"2287123456.12345678","O":1732221067400,"C":1732307467400,"F":4200000000,"L":4212345681,"n":12345682}"#;

    const FUTURES_STREAMS: &str = r#"{"e":"aggTrade","E":1732307467150,"s":"BTCUSDT","a":2409876543,"p":"98260.10","q":"0.015","f":5601234567,"l":5601234569,"T":1732307467149,"m":true}
{"e":"bookTicker","u":7301234567890,"s":"BTCUSDT","b":"98260.10","B":"3.512","a":"98260.20","A":"0.806","T":1732307467151,"E":1732307467152}
{"e":"markPriceUpdate","E":1732307468000,"s":"BTCUSDT","p":"98261.33000000","i":"98255.10234567","P":"98270.11111111","r":"0.00010000","T":1732320000000}
{"e":"forceOrder","E":1732307467500,"o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"98010.00","ap":"98020.40","X":"FILLED","l":"0.014","z":"0.014","T":1732307467498}}
{"e":"kline","E":1732307467600,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":5601230000,"L":5601234569,"o":"98230.00","c":"98260.10","h":"98270.00","l":"98220.00","v":"210.512","n":3021,"x":false,"q":"20681234.56","V":"101.001","Q":"9923456.78","B":"0"}}"#;

    const COMBINED_AND_CONTROL: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":4212345678,"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}}
{"stream":"btcusdt@bookTicker","data":{"u":55123456789,"s":"BTCUSDT","b":"98234.51000000","B":"1.20300000","a":"98234.52000000","A":"0.40100000"}}
{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1732307467200,"s":"BTCUSDT","k":{"t":1732307460000,"T":1732307519999,"s":"BTCUSDT","i":"1m","f":4212340000,"L":4212345681,"o":"98210.00000000","c":"98234.52000000","h":"98240.10000000","l":"98200.00000000","v":"12.34500000","n":5682,"x":false,"q":"1212345.67890000","V":"6.10000000","Q":"599123.45000000","B":"0"}}}
{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}
{"result":null,"id":1}
{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}
{"code":2,"msg":"Invalid request: unknown variable","id":3}
{"code":1,"msg":"Invalid value type: expected Boolean"}
{"e":"serverShutdown","E":1732307999999}"#;

    /// When the frames "arrived", µs.
    const RECEIVED_US: u64 = 1_732_307_467_555_123;
    /// The same in ms: the stand-in event time for frames without one.
    const RECEIVED_MS: u64 = 1_732_307_467_555;

    type Expected = Result<Inbound, &'static str>;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn lv(levels: &[(&str, &str)]) -> Vec<Level> {
        levels.iter().map(|(p, q)| (d(p), d(q))).collect()
    }

    fn event(venue: VenueId, exchange_ts: u64, kind: EventKind) -> Expected {
        Ok(Inbound::Event(MarketEvent {
            venue,
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            exchange_ts,
            received_us: RECEIVED_US,
            kind,
        }))
    }

    fn trade(price: &str, qty: &str, side: Side, trade_id: u64) -> EventKind {
        EventKind::Trade { price: d(price), qty: d(qty), side, trade_id }
    }

    fn quote(bid: &str, bid_qty: &str, ask: &str, ask_qty: &str) -> EventKind {
        EventKind::Quote { bid: d(bid), bid_qty: d(bid_qty), ask: d(ask), ask_qty: d(ask_qty) }
    }

    fn candle(ohlcv: [&str; 5], closed: bool) -> EventKind {
        EventKind::Candle(Candle {
            interval: Interval::M1,
            open_time: 1_732_307_460_000,
            open: d(ohlcv[0]),
            high: d(ohlcv[1]),
            low: d(ohlcv[2]),
            close: d(ohlcv[3]),
            volume: d(ohlcv[4]),
            closed,
        })
    }

    fn spot_depth_update(snapshot: bool) -> EventKind {
        EventKind::Depth {
            bids: lv(&[("98234.51000000", "1.10000000"), ("98230.00000000", "0.00000000")]),
            asks: lv(&[("98234.52000000", "0.50000000")]),
            update_id: 55_123_456_795,
            snapshot,
        }
    }

    fn spot_partial_depth() -> EventKind {
        EventKind::Depth {
            bids: lv(&[("98234.51000000", "1.10000000"), ("98234.00000000", "0.20000000")]),
            asks: lv(&[("98234.52000000", "0.50000000"), ("98235.00000000", "2.00000000")]),
            update_id: 55_123_456_795,
            snapshot: true,
        }
    }

    /// Each raw fixture line: its venue, the stream it comes on, what it parses to unwrapped,
    /// and what it parses to inside the combined-stream wrapper.
    fn raw_fixtures() -> Vec<(VenueId, &'static str, &'static str, Expected, Expected)> {
        use Side::*;
        use VenueId::*;
        let spot_trade = || {
            event(
                Binance,
                1_732_307_467_123,
                trade("98234.51000000", "0.00120000", Sell, 4_212_345_678),
            )
        };
        let spot_agg = || {
            event(
                Binance,
                1_732_307_467_130,
                trade("98234.52000000", "0.05000000", Buy, 3_301_234_567),
            )
        };
        let spot_quote = || {
            event(
                Binance,
                RECEIVED_MS,
                quote("98234.51000000", "1.20300000", "98234.52000000", "0.40100000"),
            )
        };
        let open_candle =
            ["98210.00000000", "98240.10000000", "98200.00000000", "98234.52000000", "12.34500000"];
        let closed_candle =
            ["98210.00000000", "98251.00000000", "98200.00000000", "98250.00000000", "15.00000000"];
        let spot_kline_open = || event(Binance, 1_732_307_467_200, candle(open_candle, false));
        let spot_kline_closed = || event(Binance, 1_732_307_520_001, candle(closed_candle, true));
        let spot_diff = |snapshot| event(Binance, 1_732_307_467_300, spot_depth_update(snapshot));
        let fut_agg = || {
            event(
                BinanceFutures,
                1_732_307_467_150,
                trade("98260.10", "0.015", Sell, 2_409_876_543),
            )
        };
        let fut_quote = || {
            event(
                BinanceFutures,
                1_732_307_467_152,
                quote("98260.10", "3.512", "98260.20", "0.806"),
            )
        };
        let fut_liq = || {
            let kind = EventKind::Liquidation { side: Sell, price: d("98010.00"), qty: d("0.014") };
            event(BinanceFutures, 1_732_307_467_500, kind)
        };
        let fut_kline = || {
            let ohlcv = ["98230.00", "98270.00", "98220.00", "98260.10", "210.512"];
            event(BinanceFutures, 1_732_307_467_600, candle(ohlcv, false))
        };
        let spot: Vec<_> = SPOT_STREAMS.lines().collect();
        let futures: Vec<_> = FUTURES_STREAMS.lines().collect();
        assert_eq!((spot.len(), futures.len()), (8, 5), "a fixture line went missing");
        vec![
            (Binance, spot[0], "btcusdt@trade", spot_trade(), spot_trade()),
            (Binance, spot[1], "btcusdt@aggTrade", spot_agg(), spot_agg()),
            (Binance, spot[2], "btcusdt@bookTicker", spot_quote(), spot_quote()),
            (Binance, spot[3], "btcusdt@kline_1m", spot_kline_open(), spot_kline_open()),
            (Binance, spot[4], "btcusdt@kline_1m", spot_kline_closed(), spot_kline_closed()),
            (Binance, spot[5], "btcusdt@depth@100ms", spot_diff(false), spot_diff(false)),
            // Futures partial depth has the diff's shape: the stream name makes it a snapshot.
            (Binance, spot[5], "btcusdt@depth20@100ms", spot_diff(false), spot_diff(true)),
            // Raw spot partial depth names no symbol.
            (
                Binance,
                spot[6],
                "btcusdt@depth20@100ms",
                Err("missing_field"),
                event(Binance, RECEIVED_MS, spot_partial_depth()),
            ),
            (Binance, spot[7], "btcusdt@ticker", Err("unsupported"), Err("unsupported")),
            (BinanceFutures, futures[0], "btcusdt@aggTrade", fut_agg(), fut_agg()),
            (BinanceFutures, futures[1], "btcusdt@bookTicker", fut_quote(), fut_quote()),
            (
                BinanceFutures,
                futures[2],
                "btcusdt@markPrice",
                Err("unsupported"),
                Err("unsupported"),
            ),
            (BinanceFutures, futures[3], "btcusdt@forceOrder", fut_liq(), fut_liq()),
            (BinanceFutures, futures[4], "btcusdt@kline_1m", fut_kline(), fut_kline()),
        ]
    }

    fn check(venue: VenueId, input: &str, expected: &Expected) {
        let got = parse(venue, input, RECEIVED_US);
        match (&got, expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{input}"),
            (Err(e), Err(reason)) => assert_eq!(e.reason(), *reason, "{input}: {e}"),
            _ => panic!("{input}\n got {got:?}\nwant {expected:?}"),
        }
    }

    fn wrap(stream: &str, payload: &str) -> String {
        format!(r#"{{"stream":"{stream}","data":{payload}}}"#)
    }

    #[test]
    fn every_raw_fixture_line_parses_as_documented_raw_and_wrapped() {
        for (venue, line, stream, raw, wrapped) in raw_fixtures() {
            check(venue, line, &raw);
            check(venue, &wrap(stream, line), &wrapped);
        }
    }

    #[test]
    fn every_combined_and_control_fixture_line_parses_as_documented() {
        let lines: Vec<_> = COMBINED_AND_CONTROL.lines().collect();
        let spot = raw_fixtures();
        let expected: [Expected; 9] = [
            spot[0].4.clone(),
            spot[2].4.clone(),
            spot[3].4.clone(),
            // Keel's own requests are not something Binance sends.
            Err("unknown_event"),
            Ok(Inbound::Ack { id: 1 }),
            Err("unknown_event"),
            Ok(Inbound::Error {
                code: 2,
                msg: "Invalid request: unknown variable".into(),
                id: Some(3),
            }),
            Ok(Inbound::Error {
                code: 1,
                msg: "Invalid value type: expected Boolean".into(),
                id: None,
            }),
            Ok(Inbound::ServerShutdown),
        ];
        assert_eq!(lines.len(), expected.len(), "a fixture line went missing");
        for (line, expected) in lines.iter().zip(&expected) {
            check(VenueId::Binance, line, expected);
        }
    }

    #[test]
    fn wrapped_fixture_payloads_parse_the_same_unwrapped_and_in_any_key_order() {
        for line in COMBINED_AND_CONTROL.lines().take(3) {
            let wrapped = parse(VenueId::Binance, line, RECEIVED_US).unwrap();
            let start = line.find(r#""data":"#).unwrap() + r#""data":"#.len();
            let raw = &line[start..line.len() - 1];
            assert_eq!(parse(VenueId::Binance, raw, RECEIVED_US).unwrap(), wrapped, "{raw}");
            // serde_json's map sorts keys: `data` now precedes `stream`, `E` precedes `e`.
            let reordered = serde_json::from_str::<serde_json::Value>(line).unwrap().to_string();
            assert!(reordered.starts_with(r#"{"data":"#), "{reordered}");
            assert_eq!(parse(VenueId::Binance, &reordered, RECEIVED_US).unwrap(), wrapped);
        }
    }

    #[test]
    fn decimals_keep_the_exchanges_scale() {
        let Inbound::Event(MarketEvent { kind: EventKind::Trade { price, qty, .. }, .. }) =
            parse(VenueId::Binance, SPOT_STREAMS.lines().next().unwrap(), 0).unwrap()
        else {
            panic!("not a trade");
        };
        assert_eq!(
            (price.to_string().as_str(), qty.to_string().as_str()),
            ("98234.51000000", "0.00120000")
        );
        assert_eq!(price, Decimal::from_str("98234.51").unwrap());
    }

    #[test]
    fn control_replies_and_odd_but_valid_frames_are_understood() {
        use VenueId::*;
        let trade = SPOT_STREAMS.lines().next().unwrap();
        let five_minute_kline =
            SPOT_STREAMS.lines().nth(3).unwrap().replace(r#""i":"1m""#, r#""i":"5m""#);
        let Ok(Inbound::Event(MarketEvent { kind: EventKind::Candle(c), .. })) =
            parse(Binance, &five_minute_kline, RECEIVED_US)
        else {
            panic!("5m kline did not parse");
        };
        assert_eq!(c.interval, Interval::M5);
        let cases: Vec<(VenueId, String, Expected)> = vec![
            (Binance, r#"{"result":["btcusdt@trade"],"id":5}"#.into(), Ok(Inbound::Ack { id: 5 })),
            (Binance, r#"{"id":6,"result":null}"#.into(), Ok(Inbound::Ack { id: 6 })),
            (Binance, r#"{"result":null}"#.into(), Err("missing_field")),
            (
                Binance,
                r#"{"code":0,"msg":"Unknown property","id":null}"#.into(),
                Ok(Inbound::Error { code: 0, msg: "Unknown property".into(), id: None }),
            ),
            (
                Binance,
                r#"{"code":3,"msg":"Invalid JSON: \"x\"","id":4}"#.into(),
                Ok(Inbound::Error { code: 3, msg: r#"Invalid JSON: "x""#.into(), id: Some(4) }),
            ),
            (Binance, r#"{"code":-1}"#.into(), Ok(Inbound::Error { code: -1, msg: String::new(), id: None })),
            (BinanceFutures, r#"{"e":"serverShutdown"}"#.into(), Ok(Inbound::ServerShutdown)),
            (
                Binance,
                r#"{"stream":"btcusdt@depth20@100ms","data":{"lastUpdateId":7,"bids":[],"asks":[]}}"#.into(),
                event(Binance, RECEIVED_MS, EventKind::Depth { bids: vec![], asks: vec![], update_id: 7, snapshot: true }),
            ),
            // Older depth payloads carried an ignored third element per level.
            (
                Binance,
                wrap("btcusdt@depth5", r#"{"lastUpdateId":8,"bids":[["1.5","2",[]]],"asks":[]}"#),
                event(Binance, RECEIVED_MS, EventKind::Depth { bids: lv(&[("1.5", "2")]), asks: vec![], update_id: 8, snapshot: true }),
            ),
            // Unknown fields, whitespace, and `T` standing in for a missing `E`.
            (
                Binance,
                r#" { "x" : {"deep":[1,{"y":null}]}, "e":"trade", "T":5, "s":"btcusdt", "t":1, "p":"2", "q":"3", "m":false } "#.into(),
                event(Binance, 5, EventKind::Trade { price: d("2"), qty: d("3"), side: Side::Buy, trade_id: 1 }),
            ),
            // The venue comes from the caller, not the frame.
            (BinanceFutures, trade.into(), {
                let Ok(Inbound::Event(e)) = parse(Binance, trade, RECEIVED_US) else { panic!() };
                Ok(Inbound::Event(MarketEvent { venue: BinanceFutures, ..e }))
            }),
            // A stream name Keel does not know is not cross-checked.
            (Binance, wrap("btcusdt@trade@fast", trade), parse(Binance, trade, RECEIVED_US).map_err(|e| e.reason())),
            (Binance, wrap("nonsense", trade), parse(Binance, trade, RECEIVED_US).map_err(|e| e.reason())),
        ];
        for (venue, input, expected) in &cases {
            check(*venue, input, expected);
        }
    }

    /// The spot trade fixture with `from` replaced by `to`.
    fn spot_trade_with(from: &str, to: &str) -> String {
        let line = SPOT_STREAMS.lines().next().unwrap();
        assert!(line.contains(from), "{from}");
        line.replacen(from, to, 1)
    }

    fn line(file: &'static str, n: usize) -> &'static str {
        file.lines().nth(n).unwrap()
    }

    fn with(file: &'static str, n: usize, from: &str, to: &str) -> String {
        let line = line(file, n);
        assert!(line.contains(from), "{from} not in {line}");
        line.replacen(from, to, 1)
    }

    #[test]
    fn garbage_is_refused_with_the_right_reason_and_never_panics() {
        use VenueId::*;
        let spot_trade = line(SPOT_STREAMS, 0);
        let mut lossy_bytes = spot_trade.as_bytes().to_vec();
        lossy_bytes[0] = 0xff;
        let lossy_frame = String::from_utf8_lossy(&lossy_bytes).into_owned();
        let mut lossy_symbol = spot_trade.as_bytes().to_vec();
        let at = spot_trade.find("BTCUSDT").unwrap() + 3;
        lossy_symbol[at] = 0xc3;
        let lossy_symbol = String::from_utf8_lossy(&lossy_symbol).into_owned();
        let a_mebibyte_of_junk = "x".repeat(MAX_FRAME_BYTES);
        let too_large = format!("{}{}", spot_trade, " ".repeat(MAX_FRAME_BYTES));
        let deep = format!(r#"{{"x":{}"#, "[".repeat(10_000));
        let cases: Vec<(VenueId, String, &str)> = vec![
            (Sim, spot_trade.into(), "unsupported"),
            (Binance, String::new(), "json"),
            (Binance, "   ".into(), "json"),
            (Binance, "{".into(), "json"),
            (Binance, spot_trade[..spot_trade.len() - 1].into(), "json"),
            (Binance, format!("{spot_trade}x"), "json"),
            (Binance, format!("{spot_trade}{spot_trade}"), "json"),
            (Binance, "{'e':'trade'}".into(), "json"),
            (Binance, a_mebibyte_of_junk, "json"),
            (Binance, too_large, "too_large"),
            (Binance, lossy_frame, "json"),
            (Binance, deep, "json"),
            (Binance, "null".into(), "bad_type"),
            (Binance, "42".into(), "bad_type"),
            (Binance, "[]".into(), "bad_type"),
            (Binance, r#""trade""#.into(), "bad_type"),
            (Binance, "{}".into(), "unknown_event"),
            (Binance, r#"{"e":"fooEvent","E":1}"#.into(), "unknown_event"),
            (Binance, r#"{"e":5}"#.into(), "bad_type"),
            (Binance, r#"{"e":"trade","e":"trade"}"#.into(), "bad_type"),
            // Trades.
            (Binance, spot_trade_with(r#""p":"98234.51000000""#, r#""p":98234.51"#), "bad_type"),
            (Binance, spot_trade_with(r#""t":4212345678"#, r#""t":"4212345678""#), "bad_type"),
            (Binance, spot_trade_with(r#""t":4212345678"#, r#""t":-1"#), "bad_type"),
            (Binance, spot_trade_with(r#""t":4212345678"#, r#""t":1.5"#), "bad_type"),
            (
                Binance,
                spot_trade_with(r#""E":1732307467123"#, r#""E":18446744073709551616"#),
                "bad_type",
            ),
            (Binance, spot_trade_with(r#""m":true"#, r#""m":"true""#), "bad_type"),
            (Binance, spot_trade_with("98234.51000000", r"\u0039"), "bad_type"),
            (Binance, spot_trade_with("98234.51000000", "abc"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", ""), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "-"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "."), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "1e5"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "1_000"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "+1"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", " 1"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "1.2.3"), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "NaN"), "bad_number"),
            (
                Binance,
                spot_trade_with("98234.51000000", &format!("0.{}1", "0".repeat(28))),
                "bad_number",
            ),
            (Binance, spot_trade_with("98234.51000000", &"9".repeat(40)), "bad_number"),
            (Binance, spot_trade_with("98234.51000000", "-98234.51"), "bad_value"),
            (Binance, spot_trade_with("98234.51000000", "0.00000000"), "bad_value"),
            (Binance, spot_trade_with("98234.51000000", "-0"), "bad_value"),
            (Binance, spot_trade_with("0.00120000", "0"), "bad_value"),
            (Binance, spot_trade_with(r#""p":"98234.51000000","#, ""), "missing_field"),
            (Binance, spot_trade_with(r#""m":true,"#, ""), "missing_field"),
            (Binance, spot_trade_with(r#""t":4212345678,"#, ""), "missing_field"),
            (
                Binance,
                spot_trade_with(r#""E":1732307467123,"#, "").replace(r#""T":1732307467122,"#, ""),
                "missing_field",
            ),
            (Binance, spot_trade_with(r#""s":"BTCUSDT","#, ""), "missing_field"),
            (Binance, spot_trade_with("BTCUSDT", "BTC-USDT"), "bad_symbol"),
            (Binance, spot_trade_with("BTCUSDT", ""), "bad_symbol"),
            (Binance, spot_trade_with("BTCUSDT", &"A".repeat(30)), "bad_symbol"),
            (Binance, lossy_symbol, "bad_symbol"),
            (Binance, spot_trade_with(r#""s":"BTCUSDT""#, r#""s":null"#), "bad_type"),
            (
                Binance,
                with(SPOT_STREAMS, 1, r#""a":3301234567"#, r#""a":"3301234567""#),
                "bad_type",
            ),
            (Binance, with(SPOT_STREAMS, 1, r#""a":3301234567,"#, ""), "missing_field"),
            // Quotes.
            (Binance, with(SPOT_STREAMS, 2, r#""b":"98234.51000000""#, r#""b":[]"#), "bad_type"),
            (
                Binance,
                with(SPOT_STREAMS, 2, r#""b":"98234.51000000""#, r#""b":"0.00000000""#),
                "bad_value",
            ),
            (Binance, with(SPOT_STREAMS, 2, r#""A":"0.40100000""#, r#""A":"0""#), "bad_value"),
            (Binance, with(SPOT_STREAMS, 2, r#""a":"98234.52000000","#, ""), "missing_field"),
            (
                BinanceFutures,
                with(FUTURES_STREAMS, 1, r#""B":"3.512""#, r#""B":"x""#),
                "bad_number",
            ),
            // Candles.
            (Binance, with(SPOT_STREAMS, 3, r#""i":"1m""#, r#""i":"3m""#), "unsupported"),
            (Binance, with(SPOT_STREAMS, 3, r#""i":"1m""#, r#""i":"nonsense""#), "unsupported"),
            (Binance, with(SPOT_STREAMS, 3, r#""i":"1m","#, ""), "missing_field"),
            (Binance, with(SPOT_STREAMS, 3, r#""h":"98240.10000000""#, r#""h":"1""#), "bad_value"),
            (
                Binance,
                with(SPOT_STREAMS, 3, r#""l":"98200.00000000""#, r#""l":"98299""#),
                "bad_value",
            ),
            (Binance, with(SPOT_STREAMS, 3, r#""v":"12.34500000""#, r#""v":"-1""#), "bad_value"),
            (Binance, with(SPOT_STREAMS, 3, r#""x":false"#, r#""x":0"#), "bad_type"),
            (Binance, with(SPOT_STREAMS, 3, r#""x":false,"#, ""), "missing_field"),
            (Binance, r#"{"e":"kline","E":1,"s":"BTCUSDT"}"#.into(), "missing_field"),
            (Binance, r#"{"e":"kline","E":1,"s":"BTCUSDT","k":[]}"#.into(), "bad_type"),
            // Depth.
            (
                Binance,
                with(
                    SPOT_STREAMS,
                    5,
                    r#""b":[["98234.51000000","1.10000000"],["98230.00000000","0.00000000"]]"#,
                    r#""b":"x""#,
                ),
                "bad_type",
            ),
            (
                Binance,
                with(
                    SPOT_STREAMS,
                    5,
                    r#"["98234.52000000","0.50000000"]"#,
                    r#"["98234.52000000"]"#,
                ),
                "bad_type",
            ),
            (
                Binance,
                with(SPOT_STREAMS, 5, r#"["98234.52000000","0.50000000"]"#, r#"{"p":"1"}"#),
                "bad_type",
            ),
            (
                Binance,
                with(SPOT_STREAMS, 5, r#"["98234.52000000","0.50000000"]"#, r#"[1,2]"#),
                "bad_type",
            ),
            (Binance, with(SPOT_STREAMS, 5, "98234.52000000", "x"), "bad_number"),
            (Binance, with(SPOT_STREAMS, 5, "98234.52000000", "-1"), "bad_value"),
            (Binance, with(SPOT_STREAMS, 5, "0.50000000", "-0.5"), "bad_value"),
            (Binance, with(SPOT_STREAMS, 5, r#""u":55123456795,"#, ""), "missing_field"),
            (Binance, with(SPOT_STREAMS, 6, r#""bids""#, r#""bidz""#), "missing_field"),
            (
                Binance,
                wrap("btcusdt@depth20@100ms", &with(SPOT_STREAMS, 6, "98235.00000000", "0")),
                "bad_value",
            ),
            (
                Binance,
                wrap(
                    "btcusdt@depth20@100ms",
                    &with(SPOT_STREAMS, 6, r#""asks":"#, r#""asks":7,"x":"#),
                ),
                "bad_type",
            ),
            (Binance, wrap("BTC-USDT@depth20@100ms", line(SPOT_STREAMS, 6)), "bad_symbol"),
            // Liquidations.
            (
                BinanceFutures,
                with(FUTURES_STREAMS, 3, r#""S":"SELL""#, r#""S":"SIDEWAYS""#),
                "bad_value",
            ),
            (
                BinanceFutures,
                with(FUTURES_STREAMS, 3, r#""p":"98010.00""#, r#""p":"0""#),
                "bad_value",
            ),
            (BinanceFutures, r#"{"e":"forceOrder","E":1,"o":"x"}"#.into(), "bad_type"),
            (BinanceFutures, r#"{"e":"forceOrder","E":1}"#.into(), "missing_field"),
            (
                BinanceFutures,
                r#"{"e":"forceOrder","o":{"s":"BTCUSDT","S":"BUY","p":"1","q":"1"}}"#.into(),
                "missing_field",
            ),
            // The combined-stream wrapper.
            (Binance, wrap("ethusdt@trade", spot_trade), "stream_mismatch"),
            (Binance, wrap("btcusdt@bookTicker", spot_trade), "stream_mismatch"),
            (Binance, wrap("btcusdt@trade", line(SPOT_STREAMS, 6)), "stream_mismatch"),
            (Binance, wrap("btcusdt@trade", "[]"), "bad_type"),
            (Binance, wrap("btcusdt@trade", "7"), "bad_type"),
            (Binance, wrap("btcusdt@trade", "null"), "bad_type"),
            (Binance, format!(r#"{{"stream":7,"data":{spot_trade}}}"#), "bad_type"),
            (Binance, format!(r#"{{"data":{}}}"#, line(SPOT_STREAMS, 6)), "missing_field"),
            (Binance, wrap("btcusdt@trade", &wrap("btcusdt@trade", spot_trade)), "unknown_event"),
        ];
        for (venue, input, reason) in &cases {
            let got = parse(*venue, input, RECEIVED_US);
            let shown = &input[..input.len().min(120)];
            match got {
                Err(e) => {
                    assert_eq!(e.reason(), *reason, "{shown}: {e}");
                    assert!(e.to_string().len() < 400, "{shown}: error message too long");
                }
                Ok(ok) => panic!("{shown} parsed: {ok:?}"),
            }
        }
    }

    /// A deterministic linear congruential generator (Knuth's MMIX constants).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// What every accepted event must satisfy, however mangled its frame was.
    fn assert_sane(inbound: &Inbound, input: &str) {
        let Inbound::Event(e) = inbound else { return };
        let positive = |d: &Decimal| d.is_sign_positive() && !d.is_zero();
        let ok = match &e.kind {
            EventKind::Trade { price, qty, .. } => positive(price) && positive(qty),
            EventKind::Quote { bid, bid_qty, ask, ask_qty } => {
                [bid, bid_qty, ask, ask_qty].into_iter().all(positive)
            }
            EventKind::Candle(c) => {
                c.low <= c.open && c.open <= c.high && c.low <= c.close && c.close <= c.high
            }
            EventKind::Depth { bids, asks, .. } => bids
                .iter()
                .chain(asks)
                .all(|(p, q)| positive(p) && (q.is_zero() || q.is_sign_positive())),
            EventKind::Liquidation { price, qty, .. } => positive(price) && positive(qty),
            EventKind::Gap { .. } => false,
        };
        assert!(ok, "{input} gave {e:?}");
    }

    #[test]
    fn random_mutations_of_fixture_lines_never_panic() {
        const ALPHABET: &[u8] = br#"{}[]",:0123456789.-+eE \tnulltruefalse@abcxyzBTCUSDT"#;
        let mut seeds: Vec<(VenueId, String)> = Vec::new();
        for (venue, line, stream, _, _) in raw_fixtures() {
            seeds.push((venue, line.to_owned()));
            seeds.push((venue, wrap(stream, line)));
        }
        seeds.extend(COMBINED_AND_CONTROL.lines().map(|l| (VenueId::Binance, l.to_owned())));
        let mut rng = Lcg(0x6b65_656c);
        let mut accepted = 0;
        for (venue, seed) in &seeds {
            // Every truncation.
            for end in 0..seed.len() {
                if let Ok(inbound) = parse(*venue, &seed[..end], RECEIVED_US) {
                    assert_sane(&inbound, &seed[..end]);
                }
            }
            // Random byte edits: overwrite, insert, delete, with random or JSON-ish bytes.
            for _ in 0..1_500 {
                let mut bytes = seed.as_bytes().to_vec();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len() + 1);
                    let byte = if rng.below(2) == 0 {
                        ALPHABET[rng.below(ALPHABET.len())]
                    } else {
                        rng.next() as u8
                    };
                    match rng.below(3) {
                        0 if at < bytes.len() => bytes[at] = byte,
                        1 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, byte),
                    }
                }
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(inbound) = parse(*venue, &text, RECEIVED_US) {
                    assert_sane(&inbound, &text);
                    accepted += 1;
                }
            }
        }
        // Some edits (a digit in an id, a letter in an unknown field) leave a valid frame.
        assert!(accepted > 0);
    }

    #[test]
    fn decimals_match_rust_decimal_on_every_plain_string() {
        // Reference: the grammar, then rust_decimal's exact parser.
        fn reference(s: &str) -> Option<Decimal> {
            let body = s.strip_prefix('-').unwrap_or(s);
            let plain = body.bytes().filter(|&b| b == b'.').count() <= 1
                && body.bytes().any(|b| b.is_ascii_digit())
                && body.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            plain.then(|| Decimal::from_str_exact(s).ok()).flatten()
        }
        let mut rng = Lcg(0x64_6563);
        let mut fixed: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.00",
            "5.",
            ".5",
            "-.5",
            "00001.5000",
            "98234.51000000",
            "0.00120000",
            "18446744073709551615",
            "9999999999999999999",
            "1234567890.123456789",
            "0.0000000000000000001",
            "79228162514264337593543950335",
            "79228162514264337593543950336",
            "0.0000000000000000000000000001",
            "0.00000000000000000000000000001",
            "12345678",
            "1234567.8",
        ]
        .map(String::from)
        .to_vec();
        for _ in 0..50_000 {
            let len = rng.below(32);
            let s: String = (0..len)
                .map(|_| match rng.below(20) {
                    0 => '.',
                    1 => '-',
                    2 => ['+', '_', 'e', ' ', '/', ':'][rng.below(6)],
                    _ => char::from(b'0' + rng.below(10) as u8),
                })
                .collect();
            fixed.push(s);
            // Shaped like Binance's: [-]int[.frac], sometimes with one byte spoiled.
            let digits = |rng: &mut Lcg, n: usize| -> String {
                (0..n).map(|_| char::from(b'0' + rng.below(10) as u8)).collect()
            };
            let (int_len, frac_len) = (rng.below(12), rng.below(12));
            let mut shaped = format!(
                "{}{}{}{}",
                if rng.below(8) == 0 { "-" } else { "" },
                digits(&mut rng, int_len),
                if rng.below(6) == 0 { "" } else { "." },
                digits(&mut rng, frac_len),
            );
            if rng.below(4) == 0 && !shaped.is_empty() {
                let at = rng.below(shaped.len());
                let spoiled = ['.', '-', '/', ':', ' ', 'a', '\u{7f}', '0'][rng.below(8)];
                shaped.replace_range(at..=at, spoiled.encode_utf8(&mut [0; 4]));
            }
            fixed.push(shaped);
        }
        let mut valid = 0;
        for s in &fixed {
            let got = parse_decimal(s);
            let want = reference(s);
            assert_eq!(got, want, "{s:?}");
            valid += usize::from(want.is_some());
            if let (Some(got), Some(want)) = (got, want) {
                assert_eq!(got.scale(), want.scale(), "{s:?}");
                assert_eq!(
                    got.to_string().trim_start_matches('-'),
                    want.to_string().trim_start_matches('-'),
                    "{s:?}"
                );
            }
        }
        assert!(valid > 40_000, "only {valid} plain strings generated");
    }

    #[test]
    fn error_reasons_are_short_stable_labels() {
        let json = serde_json::from_str::<IgnoredAny>("{").unwrap_err();
        let data = serde_json::from_str::<u8>("\"x\"").unwrap_err();
        let errors = [
            ParseError::TooLarge(1),
            ParseError::Json(json),
            ParseError::Json(data),
            ParseError::WrongType("a"),
            ParseError::MissingField("p"),
            ParseError::BadNumber { field: "p", value: "x".into() },
            ParseError::BadValue { field: "p", value: "0".into() },
            ParseError::BadSymbol("x".into()),
            ParseError::StreamMismatch { stream: "x".into(), payload: "y" },
            ParseError::UnknownEvent("x".into()),
            ParseError::Unsupported("x".into()),
        ];
        let reasons: Vec<_> = errors.iter().map(ParseError::reason).collect();
        assert_eq!(
            reasons,
            [
                "too_large",
                "json",
                "bad_type",
                "bad_type",
                "missing_field",
                "bad_number",
                "bad_value",
                "bad_symbol",
                "stream_mismatch",
                "unknown_event",
                "unsupported"
            ]
        );
        let long = ParseError::UnknownEvent(excerpt(&"é".repeat(100)));
        assert!(long.to_string().len() < 100);
    }
}
