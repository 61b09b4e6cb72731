//! Which Binance stream carries each Keel stream, the limits Binance puts on a stream
//! connection, spot's stream URLs, and the `SUBSCRIBE` / `UNSUBSCRIBE` requests.
//!
//! Keel opens combined-stream connections (`…/stream`) per venue and subscribes with requests
//! on them, so every data frame arrives wrapped as `{"stream":"<name>","data":{…}}`. The
//! functions taking a [`Dialect`] serve spot and USD-M futures alike.
//!
//! Follows <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>.

use std::time::Duration;

use serde::Serialize;

use super::Dialect;
use crate::connection::ConnectionConfig;
use keel_core::market::{StreamKind, Symbol};

/// Spot market streams, combined-stream endpoint.
/// <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>
pub const SPOT_WS_URL: &str = "wss://stream.binance.com:9443/stream";
/// Spot testnet market streams, combined-stream endpoint.
/// <https://github.com/binance/binance-spot-api-docs/blob/master/testnet/general-info.md>
pub const SPOT_TESTNET_WS_URL: &str = "wss://stream.testnet.binance.vision/stream";
/// Most streams one connection may listen to (spot and futures); a `SUBSCRIBE` past it is
/// refused.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;
/// Most messages a spot client may send per second (requests, pings and pongs all count);
/// a connection over it is closed, and an IP closed repeatedly may be banned.
pub const SPOT_MAX_INCOMING_MSGS_PER_SEC: u32 = 5;
/// Most connection attempts per IP within [`CONNECTION_WINDOW`].
pub const MAX_CONNECTIONS_PER_WINDOW: u32 = 300;
/// The window [`MAX_CONNECTIONS_PER_WINDOW`] counts over.
pub const CONNECTION_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How often the spot server pings; it disconnects a client that has not ponged within a
/// minute.
pub const SPOT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long Binance keeps a connection open before closing it: reconnect before this.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Top-of-book levels in a depth snapshot ([`StreamKind::Depth`] is `depth20@100ms`).
pub const DEPTH_LEVELS: usize = 20;

/// The spot channel (the part of the stream name after `<symbol>@`) carrying `kind`, or `None`
/// where spot has no such stream (liquidations).
pub fn spot_channel(kind: StreamKind) -> Option<&'static str> {
    Some(match kind {
        StreamKind::Trades => "trade",
        StreamKind::Quotes => "bookTicker",
        StreamKind::Candles1m => "kline_1m",
        StreamKind::Depth => "depth20@100ms",
        StreamKind::Liquidations | StreamKind::MarkPrice => return None,
    })
}

/// The Binance stream name for `kind` of `symbol` in `dialect` (`btcusdt@trade`), or `None`
/// where the venue has no such stream.
pub fn stream_name(dialect: &Dialect, symbol: &Symbol, kind: StreamKind) -> Option<String> {
    let channel = (dialect.channel)(kind)?;
    let symbol = symbol.as_str();
    let mut name = String::with_capacity(symbol.len() + 1 + channel.len());
    name.extend(symbol.chars().map(|c| c.to_ascii_lowercase()));
    name.push('@');
    name.push_str(channel);
    Some(name)
}

/// The Keel stream a Binance stream name in `dialect` carries: the inverse of [`stream_name`].
///
/// Only the names [`stream_name`] produces are recognised (`btcusdt@aggTrade` is `None` on
/// spot, where Keel's trades are `@trade`); the symbol part may be in either case.
pub fn parse_stream_name(dialect: &Dialect, name: &str) -> Option<(Symbol, StreamKind)> {
    let (symbol, rest) = name.split_once('@')?;
    let kind = StreamKind::ALL.into_iter().find(|&kind| (dialect.channel)(kind) == Some(rest))?;
    Some((Symbol::parse(symbol)?, kind))
}

/// The kind of data a channel (the part of a stream name after `<symbol>@`) carries, for any
/// variant Binance offers: `trade` and `aggTrade`, `kline_<any interval>`, `depth`,
/// `depth<levels>` with any speed. Used to cross-check a combined-stream frame's payload
/// against the stream it came on.
pub(crate) fn channel_kind(channel: &str) -> Option<StreamKind> {
    match channel {
        "trade" | "aggTrade" => Some(StreamKind::Trades),
        "bookTicker" => Some(StreamKind::Quotes),
        "forceOrder" => Some(StreamKind::Liquidations),
        c if c.starts_with("markPrice") => Some(StreamKind::MarkPrice),
        c if c.starts_with("kline_") => Some(StreamKind::Candles1m),
        c if c.starts_with("depth") => Some(StreamKind::Depth),
        _ => None,
    }
}

/// Whether a channel is a partial book depth stream (`depth5`, `depth20@100ms`, …), whose
/// every frame is a whole top-N book rather than a diff (`depth`, `depth@100ms`).
pub(crate) fn is_partial_depth(channel: &str) -> bool {
    channel.strip_prefix("depth").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// A live-subscription request, as Binance documents it.
#[derive(Serialize)]
struct Request<'a> {
    method: &'a str,
    params: &'a [String],
    id: u64,
}

fn request(method: &str, id: u64, streams: &[String]) -> String {
    // Serialising strings and an integer into a String has no failure path.
    #[allow(clippy::expect_used)]
    serde_json::to_string(&Request { method, params: streams, id }).expect("infallible")
}

/// `{"method":"SUBSCRIBE","params":[…],"id":<id>}`: subscribe this connection to `streams`.
/// Binance answers `{"result":null,"id":<id>}`, or an error with the same id.
pub fn subscribe_request(id: u64, streams: &[String]) -> String {
    request("SUBSCRIBE", id, streams)
}

/// `{"method":"UNSUBSCRIBE","params":[…],"id":<id>}`: stop `streams` on this connection.
pub fn unsubscribe_request(id: u64, streams: &[String]) -> String {
    request("UNSUBSCRIBE", id, streams)
}

/// Binance's documented limits for `dialect`'s stream connections at `ws_url`, with sensible
/// margins for the reconnect policy.
pub fn connection_config(dialect: &Dialect, ws_url: String) -> ConnectionConfig {
    ConnectionConfig {
        ws_url,
        max_outgoing_per_sec: dialect.max_incoming_msgs_per_sec,
        max_streams: MAX_STREAMS_PER_CONNECTION,
        max_connects: MAX_CONNECTIONS_PER_WINDOW,
        connect_window: CONNECTION_WINDOW,
        max_frame_bytes: super::parse::MAX_FRAME_BYTES,
        stale_after: Duration::from_secs(60),
        silence_timeout: Duration::from_secs(90),
        ping_every: Duration::from_secs(30),
        max_life: CONNECTION_LIFETIME - Duration::from_secs(15 * 60),
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(60),
        healthy_after: Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc() -> Symbol {
        Symbol::parse("BTCUSDT").unwrap()
    }

    #[test]
    fn keel_streams_map_to_the_documented_binance_names() {
        use StreamKind::*;
        let (spot, futures) = (&super::super::SPOT, &crate::binance_futures::DIALECT);
        let cases = [
            (spot, Trades, Some("btcusdt@trade")),
            (spot, Quotes, Some("btcusdt@bookTicker")),
            (spot, Candles1m, Some("btcusdt@kline_1m")),
            (spot, Depth, Some("btcusdt@depth20@100ms")),
            (spot, Liquidations, None),
            (futures, Trades, Some("btcusdt@aggTrade")),
            (futures, Quotes, Some("btcusdt@bookTicker")),
            (futures, Candles1m, Some("btcusdt@kline_1m")),
            (futures, Depth, Some("btcusdt@depth20@100ms")),
            (futures, Liquidations, Some("btcusdt@forceOrder")),
        ];
        for (dialect, kind, expected) in cases {
            let name = stream_name(dialect, &btc(), kind);
            assert_eq!(name.as_deref(), expected, "{} {kind:?}", dialect.venue);
            if let Some(name) = name {
                assert_eq!(parse_stream_name(dialect, &name), Some((btc(), kind)), "{name}");
            }
        }
    }

    #[test]
    fn parse_stream_name_recognises_only_keels_names() {
        let (binance, binance_futures) = (&super::super::SPOT, &crate::binance_futures::DIALECT);
        let cases = [
            (binance, "BTCUSDT@trade", Some(StreamKind::Trades)),
            (binance, "btcusdt@aggTrade", None),
            (binance, "btcusdt@forceOrder", None),
            (binance_futures, "btcusdt@trade", None),
            (binance, "btcusdt@depth", None),
            (binance, "btcusdt@depth20", None),
            (binance, "btcusdt@kline_5m", None),
            (binance, "btcusdt@booktricker", None),
            (binance, "btcusdt", None),
            (binance, "@trade", None),
            (binance, "btc-usdt@trade", None),
            (binance, "", None),
        ];
        for (dialect, name, expected) in cases {
            assert_eq!(parse_stream_name(dialect, name).map(|(_, k)| k), expected, "{name}");
        }
    }

    #[test]
    fn channels_are_classified_for_cross_checks() {
        let cases = [
            ("trade", Some(StreamKind::Trades), false),
            ("aggTrade", Some(StreamKind::Trades), false),
            ("bookTicker", Some(StreamKind::Quotes), false),
            ("kline_1m", Some(StreamKind::Candles1m), false),
            ("kline_1h", Some(StreamKind::Candles1m), false),
            ("depth", Some(StreamKind::Depth), false),
            ("depth@100ms", Some(StreamKind::Depth), false),
            ("depth5", Some(StreamKind::Depth), true),
            ("depth20@100ms", Some(StreamKind::Depth), true),
            ("forceOrder", Some(StreamKind::Liquidations), false),
            ("markPrice", Some(StreamKind::MarkPrice), false),
            ("markPrice@1s", Some(StreamKind::MarkPrice), false),
            ("ticker", None, false),
        ];
        for (channel, kind, partial) in cases {
            assert_eq!(channel_kind(channel), kind, "{channel}");
            assert_eq!(is_partial_depth(channel), partial, "{channel}");
        }
    }

    #[test]
    fn requests_match_binances_documented_shape() {
        let streams = ["btcusdt@trade".to_owned(), "btcusdt@bookTicker".to_owned()];
        assert_eq!(
            subscribe_request(1, &streams),
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}"#
        );
        assert_eq!(
            unsubscribe_request(2, &streams[1..]),
            r#"{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}"#
        );
        assert_eq!(subscribe_request(7, &[]), r#"{"method":"SUBSCRIBE","params":[],"id":7}"#);
        // Names are escaped, not pasted in.
        let odd = [r#"a"b"#.to_owned()];
        assert_eq!(
            subscribe_request(3, &odd),
            r#"{"method":"SUBSCRIBE","params":["a\"b"],"id":3}"#
        );
    }

    #[test]
    fn connection_config_follows_the_dialects_limits() {
        let spot = connection_config(&super::super::SPOT, "ws://x/stream".into());
        assert_eq!(spot.max_outgoing_per_sec, 5);
        assert_eq!(spot.max_streams, 1024);
        let futures = connection_config(&crate::binance_futures::DIALECT, "ws://x".into());
        assert_eq!(futures.max_outgoing_per_sec, 10);
        assert_eq!(crate::binance_futures::DIALECT.ping_interval, Duration::from_secs(180));
        assert_eq!(super::super::SPOT.ping_interval, Duration::from_secs(20));
    }
}
