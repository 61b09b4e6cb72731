//! Stream keys: which venue, symbol and kind of data a subscriber wants.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Symbol, VenueId};

/// A kind of market stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StreamKind {
    /// Trades.
    #[serde(rename = "trades")]
    Trades,
    /// Best bid/ask.
    #[serde(rename = "quotes")]
    Quotes,
    /// One-minute candles.
    #[serde(rename = "candles.1m")]
    Candles1m,
    /// Book depth.
    #[serde(rename = "depth")]
    Depth,
    /// Liquidations (futures).
    #[serde(rename = "liquidations")]
    Liquidations,
    /// Mark price and funding (perpetuals).
    #[serde(rename = "mark_price")]
    MarkPrice,
}

/// An unknown stream kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown stream `{0}`; expected trades, quotes, candles.1m, depth, liquidations or mark_price"
)]
pub struct StreamKindParseError(pub String);

impl StreamKind {
    /// Every kind.
    pub const ALL: [StreamKind; 6] = [
        StreamKind::Trades,
        StreamKind::Quotes,
        StreamKind::Candles1m,
        StreamKind::Depth,
        StreamKind::Liquidations,
        StreamKind::MarkPrice,
    ];

    /// The channel suffix: `trades`, `quotes`, `candles.1m`, `depth`, `liquidations`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Trades => "trades",
            StreamKind::Quotes => "quotes",
            StreamKind::Candles1m => "candles.1m",
            StreamKind::Depth => "depth",
            StreamKind::Liquidations => "liquidations",
            StreamKind::MarkPrice => "mark_price",
        }
    }

    /// Parses a channel suffix.
    ///
    /// # Errors
    /// The suffix names no stream kind.
    pub fn parse(s: &str) -> Result<Self, StreamKindParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| StreamKindParseError(s.to_owned()))
    }
}

/// One stream: venue, symbol, kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    /// The venue.
    pub venue: VenueId,
    /// The instrument.
    pub symbol: Symbol,
    /// What data.
    pub kind: StreamKind,
}

impl fmt::Display for StreamKey {
    /// The WebSocket channel name: `market:binance:BTCUSDT:trades`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "market:{}:{}:{}", self.venue, self.symbol, self.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_the_protocol() {
        let key = StreamKey {
            venue: VenueId::BinanceFutures,
            symbol: Symbol::parse("btcusdt").unwrap(),
            kind: StreamKind::Candles1m,
        };
        assert_eq!(key.to_string(), "market:binance_futures:BTCUSDT:candles.1m");
        for kind in StreamKind::ALL {
            assert_eq!(StreamKind::parse(kind.as_str()), Ok(kind));
        }
        assert!(StreamKind::parse("orders").is_err());
    }

    #[test]
    fn symbols_are_checked_and_upper_cased() {
        assert_eq!(Symbol::parse("ethusdt").unwrap().as_str(), "ETHUSDT");
        for bad in ["", "x", "BTC-USDT", "btc usdt", "ÄBC", &"A".repeat(21)] {
            assert!(Symbol::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(VenueId::parse("binance_futures"), Some(VenueId::BinanceFutures));
        assert_eq!(VenueId::parse("kraken"), None);
    }
}
