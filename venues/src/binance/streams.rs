//! Which Binance stream carries each Keel stream, the limits Binance puts on a stream
//! connection, its base URLs, and the `SUBSCRIBE` / `UNSUBSCRIBE` requests.
//!
//! Keel opens one combined-stream connection (`…/stream`) per venue and subscribes with
//! requests on it, so every data frame arrives wrapped as `{"stream":"<name>","data":{…}}`.
//!
//! Spot follows <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>,
//! USD-M futures <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>.

use std::time::Duration;

use serde::Serialize;

use keel_core::market::{StreamKind, Symbol, VenueId};

/// Spot market streams, combined-stream endpoint.
/// <https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams>
pub const SPOT_WS_URL: &str = "wss://stream.binance.com:9443/stream";
/// Spot testnet market streams, combined-stream endpoint.
/// <https://github.com/binance/binance-spot-api-docs/blob/master/testnet/general-info.md>
pub const SPOT_TESTNET_WS_URL: &str = "wss://stream.testnet.binance.vision/stream";
/// USD-M futures market streams, combined-stream endpoint.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams>
pub const FUTURES_WS_URL: &str = "wss://fstream.binance.com/stream";
/// USD-M futures testnet market streams, combined-stream endpoint.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const FUTURES_TESTNET_WS_URL: &str = "wss://fstream.binancefuture.com/stream";
/// Spot REST API.
/// <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/general-api-information>
pub const SPOT_REST_URL: &str = "https://api.binance.com";
/// Spot testnet REST API.
/// <https://github.com/binance/binance-spot-api-docs/blob/master/testnet/general-info.md>
pub const SPOT_TESTNET_REST_URL: &str = "https://testnet.binance.vision";
/// USD-M futures REST API.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const FUTURES_REST_URL: &str = "https://fapi.binance.com";
/// USD-M futures testnet REST API.
/// <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>
pub const FUTURES_TESTNET_REST_URL: &str = "https://testnet.binancefuture.com";

/// Most streams one connection may listen to (spot and futures); a `SUBSCRIBE` past it is
/// refused.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;
/// Most messages a spot client may send per second (requests, pings and pongs all count);
/// a connection over it is closed, and an IP closed repeatedly may be banned.
pub const SPOT_MAX_INCOMING_MSGS_PER_SEC: u32 = 5;
/// Most messages a futures client may send per second; over it, as on spot.
pub const FUTURES_MAX_INCOMING_MSGS_PER_SEC: u32 = 10;
/// Most connection attempts per IP within [`CONNECTION_WINDOW`].
pub const MAX_CONNECTIONS_PER_WINDOW: u32 = 300;
/// The window [`MAX_CONNECTIONS_PER_WINDOW`] counts over.
pub const CONNECTION_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How often the spot server pings; it disconnects a client that has not ponged within a
/// minute.
pub const SPOT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How often the futures server pings; it disconnects a client that has not ponged within
/// ten minutes.
pub const FUTURES_PING_INTERVAL: Duration = Duration::from_secs(3 * 60);
/// How long Binance keeps a connection open before closing it: reconnect before this.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Top-of-book levels in a depth snapshot ([`StreamKind::Depth`] is `depth20@100ms`).
pub const DEPTH_LEVELS: usize = 20;

/// The channel part of the stream name (after `<symbol>@`) carrying `kind` on `venue`, or
/// `None` where the venue has no such stream.
pub fn channel(venue: VenueId, kind: StreamKind) -> Option<&'static str> {
    let futures = match venue {
        VenueId::Binance => false,
        VenueId::BinanceFutures => true,
        VenueId::Sim => return None,
    };
    Some(match kind {
        // USD-M futures has no raw `@trade` stream; aggregate trades are its public tape.
        StreamKind::Trades if futures => "aggTrade",
        StreamKind::Trades => "trade",
        StreamKind::Quotes => "bookTicker",
        StreamKind::Candles1m => "kline_1m",
        StreamKind::Depth => "depth20@100ms",
        StreamKind::Liquidations if futures => "forceOrder",
        StreamKind::Liquidations => return None,
    })
}

/// The Binance stream name for `kind` of `symbol` on `venue` (`btcusdt@trade`), or `None`
/// where the venue has no such stream (liquidations on spot, anything on `sim`).
pub fn stream_name(venue: VenueId, symbol: &Symbol, kind: StreamKind) -> Option<String> {
    let channel = channel(venue, kind)?;
    let symbol = symbol.as_str();
    let mut name = String::with_capacity(symbol.len() + 1 + channel.len());
    name.extend(symbol.chars().map(|c| c.to_ascii_lowercase()));
    name.push('@');
    name.push_str(channel);
    Some(name)
}

/// The Keel stream a Binance stream name on `venue` carries: the inverse of [`stream_name`].
///
/// Only the names [`stream_name`] produces are recognised (`btcusdt@aggTrade` is `None` on
/// spot, where Keel's trades are `@trade`); the symbol part may be in either case.
pub fn parse_stream_name(venue: VenueId, name: &str) -> Option<(Symbol, StreamKind)> {
    let (symbol, rest) = name.split_once('@')?;
    let kind = StreamKind::ALL.into_iter().find(|&kind| channel(venue, kind) == Some(rest))?;
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

/// The most messages per second Binance accepts from a client on `venue`'s stream
/// connection (`None` for `sim`).
pub fn max_incoming_msgs_per_sec(venue: VenueId) -> Option<u32> {
    match venue {
        VenueId::Binance => Some(SPOT_MAX_INCOMING_MSGS_PER_SEC),
        VenueId::BinanceFutures => Some(FUTURES_MAX_INCOMING_MSGS_PER_SEC),
        VenueId::Sim => None,
    }
}

/// How often `venue`'s stream server pings (`None` for `sim`).
pub fn ping_interval(venue: VenueId) -> Option<Duration> {
    match venue {
        VenueId::Binance => Some(SPOT_PING_INTERVAL),
        VenueId::BinanceFutures => Some(FUTURES_PING_INTERVAL),
        VenueId::Sim => None,
    }
}

/// The combined-stream WebSocket URL preset for `venue` (`None` for `sim`).
pub fn ws_url(venue: VenueId, testnet: bool) -> Option<&'static str> {
    match (venue, testnet) {
        (VenueId::Binance, false) => Some(SPOT_WS_URL),
        (VenueId::Binance, true) => Some(SPOT_TESTNET_WS_URL),
        (VenueId::BinanceFutures, false) => Some(FUTURES_WS_URL),
        (VenueId::BinanceFutures, true) => Some(FUTURES_TESTNET_WS_URL),
        (VenueId::Sim, _) => None,
    }
}

/// The REST base URL preset for `venue` (`None` for `sim`).
pub fn rest_url(venue: VenueId, testnet: bool) -> Option<&'static str> {
    match (venue, testnet) {
        (VenueId::Binance, false) => Some(SPOT_REST_URL),
        (VenueId::Binance, true) => Some(SPOT_TESTNET_REST_URL),
        (VenueId::BinanceFutures, false) => Some(FUTURES_REST_URL),
        (VenueId::BinanceFutures, true) => Some(FUTURES_TESTNET_REST_URL),
        (VenueId::Sim, _) => None,
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
        use VenueId::*;
        let cases = [
            (Binance, Trades, Some("btcusdt@trade")),
            (Binance, Quotes, Some("btcusdt@bookTicker")),
            (Binance, Candles1m, Some("btcusdt@kline_1m")),
            (Binance, Depth, Some("btcusdt@depth20@100ms")),
            (Binance, Liquidations, None),
            (BinanceFutures, Trades, Some("btcusdt@aggTrade")),
            (BinanceFutures, Quotes, Some("btcusdt@bookTicker")),
            (BinanceFutures, Candles1m, Some("btcusdt@kline_1m")),
            (BinanceFutures, Depth, Some("btcusdt@depth20@100ms")),
            (BinanceFutures, Liquidations, Some("btcusdt@forceOrder")),
            (Sim, Trades, None),
        ];
        for (venue, kind, expected) in cases {
            let name = stream_name(venue, &btc(), kind);
            assert_eq!(name.as_deref(), expected, "{venue} {kind:?}");
            if let Some(name) = name {
                assert_eq!(parse_stream_name(venue, &name), Some((btc(), kind)), "{name}");
            }
        }
    }

    #[test]
    fn parse_stream_name_recognises_only_keels_names() {
        use VenueId::*;
        let cases = [
            (Binance, "BTCUSDT@trade", Some(StreamKind::Trades)),
            (Binance, "btcusdt@aggTrade", None),
            (Binance, "btcusdt@forceOrder", None),
            (BinanceFutures, "btcusdt@trade", None),
            (Binance, "btcusdt@depth", None),
            (Binance, "btcusdt@depth20", None),
            (Binance, "btcusdt@kline_5m", None),
            (Binance, "btcusdt@booktricker", None),
            (Binance, "btcusdt", None),
            (Binance, "@trade", None),
            (Binance, "btc-usdt@trade", None),
            (Binance, "", None),
            (Sim, "btcusdt@trade", None),
        ];
        for (venue, name, expected) in cases {
            assert_eq!(parse_stream_name(venue, name).map(|(_, k)| k), expected, "{name}");
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
            ("markPrice", None, false),
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
    fn presets_exist_for_binance_venues_only() {
        for venue in [VenueId::Binance, VenueId::BinanceFutures] {
            for testnet in [false, true] {
                assert!(ws_url(venue, testnet).is_some_and(|u| u.ends_with("/stream")));
                assert!(rest_url(venue, testnet).is_some_and(|u| u.starts_with("https://")));
            }
            assert!(ping_interval(venue).is_some());
            assert!(max_incoming_msgs_per_sec(venue).is_some());
        }
        assert_eq!(ws_url(VenueId::Sim, false), None);
        assert_eq!(ping_interval(VenueId::BinanceFutures), Some(Duration::from_secs(180)));
        assert_eq!(max_incoming_msgs_per_sec(VenueId::Binance), Some(5));
    }
}
