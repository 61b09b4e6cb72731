//! Bybit public stream frames into [`Inbound`]: market events, request answers, heartbeats.
//!
//! A data frame is `{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":…,"data":…}` where
//! `data` is a list of rows (trades, candles, liquidations) or one book object. A control frame
//! answers a request: `{"success":true,"ret_msg":"","conn_id":"…","req_id":"7","op":"subscribe"}`,
//! and the heartbeat's answer is `ret_msg` `pong` (spot) or `op` `pong` (derivatives).
//!
//! The order book topics send a snapshot and then deltas (a size of 0 removes a level); the
//! parser keeps one local book per topic, applies each update in `u` order (an older one is
//! dropped), and emits what the book now says: the best bid and ask for `orderbook.1`, the top
//! [`DEPTH_LEVELS`] levels for `orderbook.50`. A new snapshot (after a resubscribe, or Bybit's
//! own restart with `u` = 1) replaces the book.
//!
//! Trade ids: spot's `i` is a decimal number; linear's is a UUID, reduced to its first 64 bits,
//! which keeps it unique enough to tell trades apart and stable across reconnects.
//!
//! Liquidations: Bybit's `S` is the side of the position that was liquidated (`Buy`: a long);
//! Keel's [`EventKind::Liquidation`] carries the liquidation order's side, the opposite.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::Category;
use super::streams::{DEPTH_LEVELS, parse_topic};
use crate::market::{FrameError, Inbound};
use keel_core::market::{
    Candle, EventKind, Interval, Level, MarketEvent, Side, StreamKind, Symbol,
};

#[derive(Deserialize)]
struct Frame {
    topic: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    ts: Option<u64>,
    data: Option<Data>,
    op: Option<String>,
    success: Option<bool>,
    ret_msg: Option<String>,
    req_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Data {
    Rows(Vec<Row>),
    Book(BookData),
    Ticker(TickerData),
}

/// A linear `tickers` snapshot or delta: the fields Keel reads (a delta has only those that
/// changed).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TickerData {
    symbol: String,
    mark_price: Option<String>,
    funding_rate: Option<String>,
    next_funding_time: Option<String>,
}

/// One `tickers` topic's latest values.
#[derive(Debug, Default)]
struct Ticker {
    mark_price: Option<Decimal>,
    funding_rate: Option<Decimal>,
    next_funding_ms: Option<u64>,
}

/// A trade, candle or liquidation row: every field any of them has.
#[derive(Deserialize)]
struct Row {
    // Trades and liquidations.
    #[serde(rename = "T")]
    time: Option<u64>,
    s: Option<String>,
    #[serde(rename = "S")]
    side: Option<String>,
    v: Option<String>,
    p: Option<String>,
    i: Option<String>,
    // Candles.
    start: Option<u64>,
    interval: Option<String>,
    open: Option<String>,
    close: Option<String>,
    high: Option<String>,
    low: Option<String>,
    volume: Option<String>,
    confirm: Option<bool>,
    timestamp: Option<u64>,
}

#[derive(Deserialize)]
struct BookData {
    s: String,
    #[serde(default)]
    b: Vec<[String; 2]>,
    #[serde(default)]
    a: Vec<[String; 2]>,
    u: u64,
}

/// One topic's local book.
#[derive(Debug, Default)]
struct Book {
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    update_id: u64,
}

/// Parses one connection's frames, keeping its order books.
#[derive(Debug)]
pub struct Parser {
    category: &'static Category,
    books: HashMap<String, Book>,
    tickers: HashMap<String, Ticker>,
}

impl Parser {
    /// A parser for a connection to `category`'s public streams.
    pub fn new(category: &'static Category) -> Self {
        Self { category, books: HashMap::new(), tickers: HashMap::new() }
    }

    /// Parses one text frame received at `received_us`.
    ///
    /// # Errors
    /// The frame is malformed, inconsistent, or not data Keel consumes.
    pub fn parse(&mut self, text: &str, received_us: u64) -> Result<Inbound, FrameError> {
        let frame: Frame = serde_json::from_str(text).map_err(|e| error("malformed", e))?;
        if let Some(op) = frame.op.as_deref() {
            return control(op, &frame);
        }
        let topic = frame.topic.as_deref().ok_or_else(|| error("malformed", "no topic or op"))?;
        let (symbol, kind) = parse_topic(self.category, topic)
            .ok_or_else(|| error("unsupported", format!("topic {topic}")))?;
        let data = frame.data.ok_or_else(|| error("malformed", "no data"))?;
        let ts = frame.ts.unwrap_or(received_us / 1000);
        let venue = self.category.venue;
        let event = |exchange_ts: u64, kind| MarketEvent {
            venue,
            symbol: symbol.clone(),
            exchange_ts,
            received_us,
            kind,
        };
        let events: Vec<MarketEvent> = match (kind, data) {
            (StreamKind::Trades, Data::Rows(rows)) => rows
                .iter()
                .map(|row| Ok(event(row.time.unwrap_or(ts), trade(row, &symbol)?)))
                .collect::<Result<_, FrameError>>()?,
            (StreamKind::Liquidations, Data::Rows(rows)) => rows
                .iter()
                .map(|row| Ok(event(row.time.unwrap_or(ts), liquidation(row, &symbol)?)))
                .collect::<Result<_, FrameError>>()?,
            (StreamKind::Candles1m, Data::Rows(rows)) => rows
                .iter()
                .map(|row| Ok(event(row.timestamp.unwrap_or(ts), candle(row)?)))
                .collect::<Result<_, FrameError>>()?,
            (StreamKind::Quotes | StreamKind::Depth, Data::Book(book)) => {
                if book.s != symbol.as_str() {
                    return Err(error("inconsistent", format!("{} on {topic}", book.s)));
                }
                let snapshot = match frame.kind.as_deref() {
                    Some("snapshot") => true,
                    Some("delta") => false,
                    other => return Err(error("malformed", format!("book type {other:?}"))),
                };
                match self.apply_book(topic, snapshot, &book)? {
                    Some(book) => vec![event(ts, book_event(kind, book))],
                    None => Vec::new(),
                }
            }
            (StreamKind::MarkPrice, Data::Ticker(ticker)) => {
                if ticker.symbol != symbol.as_str() {
                    return Err(error("inconsistent", format!("{} on {topic}", ticker.symbol)));
                }
                match self.apply_ticker(topic, &ticker)? {
                    Some(kind) => vec![event(ts, kind)],
                    None => Vec::new(),
                }
            }
            _ => return Err(error("malformed", format!("unexpected data on {topic}"))),
        };
        Ok(match events.len() {
            1 => Inbound::Event(events.into_iter().next().expect("one event")),
            _ => Inbound::Events(events),
        })
    }

    /// Folds a `tickers` snapshot or delta into `topic`'s values: the mark price event, or
    /// `None` while no mark price has come yet.
    fn apply_ticker(
        &mut self,
        topic: &str,
        data: &TickerData,
    ) -> Result<Option<EventKind>, FrameError> {
        let mark_price = data.mark_price.as_deref().map(positive).transpose()?;
        let funding_rate =
            data.funding_rate.as_deref().filter(|r| !r.is_empty()).map(signed).transpose()?;
        let next_funding_ms = match data.next_funding_time.as_deref() {
            None | Some("") => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .map_err(|_| error("malformed", format!("nextFundingTime {t:?}")))?,
            ),
        };
        let ticker = self.tickers.entry(topic.to_owned()).or_default();
        ticker.mark_price = mark_price.or(ticker.mark_price);
        ticker.funding_rate = funding_rate.or(ticker.funding_rate);
        ticker.next_funding_ms = next_funding_ms.filter(|t| *t > 0).or(ticker.next_funding_ms);
        Ok(ticker.mark_price.map(|mark_price| EventKind::MarkPrice {
            mark_price,
            funding_rate: ticker.funding_rate,
            next_funding_ms: ticker.next_funding_ms,
        }))
    }

    /// Applies a book update to `topic`'s book; `None` when the update was stale.
    fn apply_book(
        &mut self,
        topic: &str,
        snapshot: bool,
        update: &BookData,
    ) -> Result<Option<&Book>, FrameError> {
        if snapshot {
            let book = self.books.entry(topic.to_owned()).or_default();
            book.bids.clear();
            book.asks.clear();
            book.update_id = update.u;
            apply_levels(&mut book.bids, &update.b)?;
            apply_levels(&mut book.asks, &update.a)?;
            return Ok(Some(book));
        }
        let Some(book) = self.books.get_mut(topic) else {
            return Err(error("book_gap", format!("a delta on {topic} before its snapshot")));
        };
        if update.u <= book.update_id {
            return Ok(None);
        }
        book.update_id = update.u;
        apply_levels(&mut book.bids, &update.b)?;
        apply_levels(&mut book.asks, &update.a)?;
        Ok(Some(book))
    }
}

fn apply_levels(
    side: &mut BTreeMap<Decimal, Decimal>,
    levels: &[[String; 2]],
) -> Result<(), FrameError> {
    for [price, qty] in levels {
        let price = positive(price)?;
        let qty = non_negative(qty)?;
        if qty.is_zero() {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
    }
    Ok(())
}

fn book_event(kind: StreamKind, book: &Book) -> EventKind {
    let bids: Vec<Level> =
        book.bids.iter().rev().take(DEPTH_LEVELS).map(|(p, q)| (*p, *q)).collect();
    let asks: Vec<Level> = book.asks.iter().take(DEPTH_LEVELS).map(|(p, q)| (*p, *q)).collect();
    match (kind, bids.first(), asks.first()) {
        (StreamKind::Quotes, Some(&(bid, bid_qty)), Some(&(ask, ask_qty))) => {
            EventKind::Quote { bid, bid_qty, ask, ask_qty }
        }
        // A one-sided (or empty) top of book is still a book, not a quote.
        _ => EventKind::Depth { bids, asks, update_id: book.update_id, snapshot: true },
    }
}

fn control(op: &str, frame: &Frame) -> Result<Inbound, FrameError> {
    let id = frame.req_id.as_deref().and_then(|id| id.parse().ok());
    let msg = frame.ret_msg.clone().unwrap_or_default();
    match (op, frame.success) {
        // The heartbeat's answer: spot says `ret_msg: pong`, derivatives `op: pong`.
        ("pong", _) | ("ping", Some(true)) => Ok(Inbound::Ack { id: id.unwrap_or(0) }),
        (_, Some(true)) => Ok(Inbound::Ack { id: id.unwrap_or(0) }),
        (_, Some(false)) => Ok(Inbound::Error { code: -1, msg, id }),
        _ => Err(error("unsupported", format!("op {op}"))),
    }
}

fn trade(row: &Row, symbol: &Symbol) -> Result<EventKind, FrameError> {
    same_symbol(row, symbol)?;
    Ok(EventKind::Trade {
        price: positive(field(&row.p, "p")?)?,
        qty: positive(field(&row.v, "v")?)?,
        side: side(field(&row.side, "S")?)?,
        trade_id: trade_id(field(&row.i, "i")?)?,
    })
}

fn liquidation(row: &Row, symbol: &Symbol) -> Result<EventKind, FrameError> {
    same_symbol(row, symbol)?;
    let position = side(field(&row.side, "S")?)?;
    let order_side = match position {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    };
    Ok(EventKind::Liquidation {
        side: order_side,
        price: positive(field(&row.p, "p")?)?,
        qty: positive(field(&row.v, "v")?)?,
    })
}

fn candle(row: &Row) -> Result<EventKind, FrameError> {
    if row.interval.as_deref() != Some("1") {
        return Err(error("inconsistent", format!("interval {:?} on kline.1", row.interval)));
    }
    let open_time = row.start.ok_or_else(|| error("malformed", "no start"))?;
    Ok(EventKind::Candle(Candle {
        interval: Interval::M1,
        open_time,
        open: positive(field(&row.open, "open")?)?,
        high: positive(field(&row.high, "high")?)?,
        low: positive(field(&row.low, "low")?)?,
        close: positive(field(&row.close, "close")?)?,
        volume: non_negative(field(&row.volume, "volume")?)?,
        closed: row.confirm.unwrap_or(false),
    }))
}

fn same_symbol(row: &Row, symbol: &Symbol) -> Result<(), FrameError> {
    match row.s.as_deref() {
        Some(s) if s == symbol.as_str() => Ok(()),
        other => Err(error("inconsistent", format!("row for {other:?} on {symbol}"))),
    }
}

fn field<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, FrameError> {
    value.as_deref().ok_or_else(|| error("malformed", format!("no `{name}`")))
}

fn side(s: &str) -> Result<Side, FrameError> {
    match s {
        "Buy" => Ok(Side::Buy),
        "Sell" => Ok(Side::Sell),
        other => Err(error("malformed", format!("side {other:?}"))),
    }
}

/// Spot's numeric id as is; linear's UUID as its first 16 hex digits.
fn trade_id(id: &str) -> Result<u64, FrameError> {
    if let Ok(n) = id.parse::<u64>() {
        return Ok(n);
    }
    let hex: String = id.chars().filter(|c| *c != '-').take(16).collect();
    if hex.len() == 16
        && let Ok(n) = u64::from_str_radix(&hex, 16)
    {
        return Ok(n);
    }
    Err(error("malformed", format!("trade id {id:?}")))
}

/// A decimal that may be negative (a funding rate).
fn signed(s: &str) -> Result<Decimal, FrameError> {
    match s.strip_prefix('-') {
        Some(rest) => decimal(rest).map(|d| -d),
        None => decimal(s),
    }
}

fn decimal(s: &str) -> Result<Decimal, FrameError> {
    if s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(error("bad_number", format!("{s:?}")));
    }
    Decimal::from_str(s).map_err(|e| error("bad_number", format!("{s:?}: {e}")))
}

fn positive(s: &str) -> Result<Decimal, FrameError> {
    let d = decimal(s)?;
    if d.is_zero() {
        return Err(error("bad_number", format!("{s:?} is not positive")));
    }
    Ok(d)
}

fn non_negative(s: &str) -> Result<Decimal, FrameError> {
    decimal(s)
}

fn error(reason: &'static str, detail: impl std::fmt::Display) -> FrameError {
    let mut detail = detail.to_string();
    detail.truncate(200);
    FrameError { reason, detail }
}
