//! Which Bybit topic carries each Keel stream, the subscribe requests, the JSON heartbeat, and
//! the limits Bybit puts on a public connection.
//!
//! Topics are `<channel>.<SYMBOL>` (`publicTrade.BTCUSDT`, `orderbook.50.BTCUSDT`); requests are
//! `{"req_id":"7","op":"subscribe","args":[…]}` and Bybit answers each with
//! `{"success":true,"ret_msg":"","conn_id":"…","req_id":"7","op":"subscribe"}`.
//!
//! Follows <https://bybit-exchange.github.io/docs/v5/ws/connect>.

use std::time::Duration;

use serde::Serialize;

use super::Category;
use crate::connection::ConnectionConfig;
use keel_core::market::{StreamKind, Symbol};

/// Spot public streams.
pub const SPOT_WS_URL: &str = "wss://stream.bybit.com/v5/public/spot";
/// Spot public streams on testnet.
pub const SPOT_TESTNET_WS_URL: &str = "wss://stream-testnet.bybit.com/v5/public/spot";
/// USDT perpetual public streams.
pub const LINEAR_WS_URL: &str = "wss://stream.bybit.com/v5/public/linear";
/// USDT perpetual public streams on testnet.
pub const LINEAR_TESTNET_WS_URL: &str = "wss://stream-testnet.bybit.com/v5/public/linear";

/// Spot takes at most 10 topics in one subscribe request.
pub const SPOT_TOPICS_PER_REQUEST: usize = 10;
/// Derivatives have no per-request count, only a length limit per connection (21,000
/// characters of topics); 100 topics keep each request far under it.
pub const LINEAR_TOPICS_PER_REQUEST: usize = 100;
/// Topics Keel puts on one connection: with the longest Keel topic (`orderbook.50.` plus a
/// 20-character symbol, 33 characters) 500 stay under the 21,000-character limit.
pub const MAX_TOPICS_PER_CONNECTION: usize = 500;
/// Bybit asks clients not to open more than 500 connections in 5 minutes per IP.
pub const MAX_CONNECTIONS_PER_WINDOW: u32 = 500;
/// The window [`MAX_CONNECTIONS_PER_WINDOW`] counts over.
pub const CONNECTION_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Bybit recommends a heartbeat every 20 s, and cuts a connection that has neither data nor a
/// ping for 10 minutes.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(20);
/// Book levels of the depth stream (`orderbook.50`, pushed every 20 ms); Keel sends the top
/// [`DEPTH_LEVELS`] of the local book.
pub const BOOK_TOPIC_DEPTH: u32 = 50;
/// Levels a depth event carries (as Binance's `depth20`).
pub const DEPTH_LEVELS: usize = 20;
/// Largest frame read: an `orderbook.50` snapshot is about 3 KiB.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The channel (topic before `.<SYMBOL>`) carrying `kind` in `category`, if it has one.
pub fn channel(category: &Category, kind: StreamKind) -> Option<&'static str> {
    Some(match kind {
        StreamKind::Trades => "publicTrade",
        // Level 1 of the book, pushed every 10 ms: the best bid and ask with their sizes.
        StreamKind::Quotes => "orderbook.1",
        StreamKind::Candles1m => "kline.1",
        StreamKind::Depth => "orderbook.50",
        StreamKind::Liquidations if category.liquidations => "allLiquidation",
        StreamKind::Liquidations => return None,
        // Derivatives tickers carry the mark price, the funding rate and the next funding
        // time (a snapshot, then deltas of what changed).
        StreamKind::MarkPrice if category.liquidations => "tickers",
        StreamKind::MarkPrice => return None,
    })
}

/// The topic for `kind` of `symbol` (`publicTrade.BTCUSDT`), or `None` where the market has no
/// such stream.
pub fn topic(category: &Category, symbol: &Symbol, kind: StreamKind) -> Option<String> {
    let channel = channel(category, kind)?;
    Some(format!("{channel}.{}", symbol.as_str()))
}

/// The Keel stream a topic carries: the inverse of [`topic`].
pub fn parse_topic(category: &Category, topic: &str) -> Option<(Symbol, StreamKind)> {
    let (channel, symbol) = topic.rsplit_once('.')?;
    let kind =
        StreamKind::ALL.into_iter().find(|&kind| self::channel(category, kind) == Some(channel))?;
    // Bybit symbols are upper case; a lower-case topic is not one Keel sent.
    if symbol.bytes().any(|b| b.is_ascii_lowercase()) {
        return None;
    }
    Some((Symbol::parse(symbol)?, kind))
}

#[derive(Serialize)]
struct Request<'a> {
    req_id: String,
    op: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    args: &'a [String],
}

fn request(id: u64, op: &'static str, topics: &[String]) -> String {
    serde_json::to_string(&Request { req_id: id.to_string(), op, args: topics }).unwrap_or_default()
}

/// `{"req_id":"<id>","op":"subscribe","args":[…]}`.
pub fn subscribe_request(id: u64, topics: &[String]) -> String {
    request(id, "subscribe", topics)
}

/// `{"req_id":"<id>","op":"unsubscribe","args":[…]}`.
pub fn unsubscribe_request(id: u64, topics: &[String]) -> String {
    request(id, "unsubscribe", topics)
}

/// `{"req_id":"<id>","op":"ping"}`: Bybit's heartbeat, answered with a `pong`.
pub fn ping_request(id: u64) -> String {
    request(id, "ping", &[])
}

/// The connection settings for Bybit's public streams at `ws_url`.
pub fn connection_config(ws_url: String) -> ConnectionConfig {
    ConnectionConfig {
        ws_url,
        // Bybit documents no message rate on public connections; Keel sends a handful.
        max_outgoing_per_sec: 10,
        max_streams: MAX_TOPICS_PER_CONNECTION,
        max_connects: MAX_CONNECTIONS_PER_WINDOW,
        connect_window: CONNECTION_WINDOW,
        max_frame_bytes: MAX_FRAME_BYTES,
        stale_after: Duration::from_secs(60),
        silence_timeout: Duration::from_secs(90),
        ping_every: HEARTBEAT_EVERY,
        max_life: Duration::from_secs(24 * 60 * 60),
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(60),
        healthy_after: Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bybit::SPOT;
    use crate::bybit_linear::LINEAR;

    #[test]
    fn topics_round_trip_and_liquidations_are_derivatives_only() {
        let btc = Symbol::parse("BTCUSDT").unwrap();
        for category in [&SPOT, &LINEAR] {
            for kind in StreamKind::ALL {
                let Some(name) = topic(category, &btc, kind) else {
                    assert!(matches!(kind, StreamKind::Liquidations | StreamKind::MarkPrice));
                    assert!(!category.liquidations);
                    continue;
                };
                assert_eq!(parse_topic(category, &name), Some((btc.clone(), kind)), "{name}");
            }
        }
        assert_eq!(topic(&SPOT, &btc, StreamKind::Trades).unwrap(), "publicTrade.BTCUSDT");
        assert_eq!(topic(&SPOT, &btc, StreamKind::Depth).unwrap(), "orderbook.50.BTCUSDT");
        assert_eq!(topic(&SPOT, &btc, StreamKind::Quotes).unwrap(), "orderbook.1.BTCUSDT");
        assert_eq!(topic(&SPOT, &btc, StreamKind::Candles1m).unwrap(), "kline.1.BTCUSDT");
        assert_eq!(
            topic(&LINEAR, &btc, StreamKind::Liquidations).unwrap(),
            "allLiquidation.BTCUSDT"
        );
        assert_eq!(parse_topic(&SPOT, "allLiquidation.BTCUSDT"), None);
        assert_eq!(parse_topic(&SPOT, "orderbook.200.BTCUSDT"), None);
        assert_eq!(parse_topic(&SPOT, "publicTrade.btcusdt"), None);
        assert_eq!(parse_topic(&SPOT, "tickers.BTCUSDT"), None);
    }

    #[test]
    fn requests_are_bybits_json() {
        let topics = vec!["publicTrade.BTCUSDT".to_owned(), "kline.1.ETHUSDT".to_owned()];
        assert_eq!(
            subscribe_request(7, &topics),
            r#"{"req_id":"7","op":"subscribe","args":["publicTrade.BTCUSDT","kline.1.ETHUSDT"]}"#
        );
        assert_eq!(
            unsubscribe_request(8, &topics[..1]),
            r#"{"req_id":"8","op":"unsubscribe","args":["publicTrade.BTCUSDT"]}"#
        );
        assert_eq!(ping_request(9), r#"{"req_id":"9","op":"ping"}"#);
    }
}
