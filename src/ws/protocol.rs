//! The WebSocket protocol's messages and channel names (see `docs/WEBSOCKET.md`).

use std::fmt::Write as _;

use keel_core::market::{MarketEvent, StreamKind, Symbol, VenueId};
use serde::Deserialize;

/// Channels one `subscribe` or `unsubscribe` may name.
pub const MAX_CHANNELS_PER_OP: usize = 100;

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientOp {
    /// Authenticate (or re-authenticate before the token expires).
    Auth {
        /// An access token.
        token: String,
    },
    /// Start receiving channels.
    Subscribe {
        /// Channel names.
        channels: Vec<String>,
        /// Resume points: for a `bot:{id}` channel named in `channels`, the last journal id the
        /// client holds. The server sends the bot's durable lines after it, then the live ones,
        /// with no gap and none twice.
        #[serde(default)]
        since: std::collections::BTreeMap<String, u64>,
    },
    /// Stop receiving channels.
    Unsubscribe {
        /// Channel names.
        channels: Vec<String>,
    },
    /// Answered with `pong`.
    Ping,
}

/// Why a client message was refused: a code and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Stable code.
    pub code: &'static str,
    /// Explanation.
    pub message: String,
}

impl OpError {
    /// An error.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Reads one client text frame.
///
/// # Errors
/// `BAD_MESSAGE` for anything that is not a JSON object with a known `op` and its fields,
/// `UNKNOWN_OP` for an `op` this server does not have.
pub fn parse_op(text: &str) -> Result<ClientOp, OpError> {
    match serde_json::from_str::<ClientOp>(text) {
        Ok(op) => Ok(op),
        Err(err) => {
            let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
            let op = value.as_ref().and_then(|v| v.get("op")).and_then(|v| v.as_str());
            match op {
                Some(op) if !["auth", "subscribe", "unsubscribe", "ping"].contains(&op) => {
                    let op: String = op.chars().take(40).collect();
                    Err(OpError::new(
                        "UNKNOWN_OP",
                        format!("unknown op `{op}`: use auth, subscribe, unsubscribe or ping"),
                    ))
                }
                _ => Err(OpError::new("BAD_MESSAGE", format!("not a valid message: {err}"))),
            }
        }
    }
}

/// A channel a connection can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `market:{venue}:{symbol}:{kind}`.
    Market {
        /// Venue.
        venue: VenueId,
        /// Symbol.
        symbol: Symbol,
        /// Stream.
        kind: StreamKind,
    },
    /// `bot:{id}`: one bot's orders, fills, position, status and logs (its owner only).
    Bot(u64),
    /// `account`: every one of the user's bots.
    Account,
}

impl Channel {
    /// Parses a channel name; `None` if it names no channel this server has.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "account" {
            return Some(Channel::Account);
        }
        if let Some(id) = name.strip_prefix("bot:") {
            return id.parse().ok().filter(|id| *id > 0).map(Channel::Bot);
        }
        let mut parts = name.strip_prefix("market:")?.splitn(3, ':');
        let venue = VenueId::parse(parts.next()?)?;
        let symbol = Symbol::parse(parts.next()?)?;
        let kind = StreamKind::parse(parts.next()?).ok()?;
        Some(Channel::Market { venue, symbol, kind })
    }

    /// The channel's name, as clients write it (symbols upper-case).
    pub fn name(&self) -> String {
        match self {
            Channel::Market { venue, symbol, kind } => {
                format!("market:{}:{}:{}", venue.as_str(), symbol, kind.as_str())
            }
            Channel::Bot(id) => format!("bot:{id}"),
            Channel::Account => "account".to_owned(),
        }
    }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    // Channel names and codes are ASCII without quotes; serde_json handles anything else.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// An event frame's text before and after its `seq`, built once per event and channel and shared
/// by every client of the channel (only the `seq` is theirs).
#[derive(Debug)]
pub struct EventFrame {
    head: String,
    tail: String,
}

impl EventFrame {
    /// `{"type":"event","channel":…,"seq":…,"ts":…,"data":…}` with `data` already JSON.
    pub fn new(channel: &str, ts: u64, data: &str) -> Self {
        let mut head = String::with_capacity(channel.len() + 40);
        head.push_str(r#"{"type":"event","channel":"#);
        push_json_str(&mut head, channel);
        head.push_str(r#","seq":"#);
        let mut tail = String::with_capacity(data.len() + 32);
        let _ = write!(tail, r#","ts":{ts},"data":"#);
        tail.push_str(data);
        tail.push('}');
        Self { head, tail }
    }

    /// The text before and after the `seq`.
    pub fn parts(&self) -> (&str, &str) {
        (&self.head, &self.tail)
    }

    /// The frame with `seq`.
    pub fn with_seq(&self, seq: u64) -> String {
        let mut digits = itoa::Buffer::new();
        let seq = digits.format(seq);
        let mut out = String::with_capacity(self.head.len() + seq.len() + self.tail.len());
        out.push_str(&self.head);
        out.push_str(seq);
        out.push_str(&self.tail);
        out
    }
}

/// One event frame (see [`EventFrame`]).
pub fn event_frame(channel: &str, seq: u64, ts: u64, data: &str) -> String {
    EventFrame::new(channel, ts, data).with_seq(seq)
}

/// A control message (`subscribed`, `error`, `lagged`, ...), from a JSON value.
pub fn control_frame(value: &serde_json::Value) -> String {
    value.to_string()
}

/// The event's JSON (`data`). The thread's hub writes it once per event for all its clients.
pub fn market_data_json(event: &MarketEvent) -> String {
    serde_json::to_string(event).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_bad_ones_are_refused() {
        for name in
            ["market:sim:BTCUSDT:trades", "market:binance:ETHUSDT:candles.1m", "bot:42", "account"]
        {
            assert_eq!(Channel::parse(name).map(|c| c.name()).as_deref(), Some(name));
        }
        assert_eq!(
            Channel::parse("market:sim:btcusdt:quotes").map(|c| c.name()).as_deref(),
            Some("market:sim:BTCUSDT:quotes")
        );
        for bad in [
            "",
            "bot:",
            "bot:0",
            "bot:-1",
            "bot:x",
            "market:sim:BTCUSDT",
            "market:nowhere:BTCUSDT:trades",
            "market:sim:BTC-USDT:trades",
            "market:sim:BTCUSDT:everything",
            "accounts",
        ] {
            assert_eq!(Channel::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ops_parse_and_errors_say_which_kind() {
        assert!(matches!(parse_op(r#"{"op":"ping"}"#), Ok(ClientOp::Ping)));
        assert!(matches!(
            parse_op(r#"{"op":"subscribe","channels":["account"]}"#),
            Ok(ClientOp::Subscribe { channels, since }) if channels == ["account"] && since.is_empty()
        ));
        assert!(matches!(
            parse_op(r#"{"op":"subscribe","channels":["bot:7"],"since":{"bot:7":12}}"#),
            Ok(ClientOp::Subscribe { since, .. }) if since.get("bot:7") == Some(&12)
        ));
        assert_eq!(parse_op(r#"{"op":"dance"}"#).unwrap_err().code, "UNKNOWN_OP");
        for bad in [
            "",
            "{",
            "[]",
            "42",
            r#"{"op":1}"#,
            r#"{"op":"subscribe","channels":"account"}"#,
            r#"{"op":"auth"}"#,
            r#"{"channels":[]}"#,
            r#"{"op":"subscribe","channels":["bot:7"],"since":{"bot:7":-1}}"#,
            r#"{"op":"subscribe","channels":["bot:7"],"since":["bot:7"]}"#,
        ] {
            assert_eq!(parse_op(bad).unwrap_err().code, "BAD_MESSAGE", "{bad}");
        }
    }

    #[test]
    fn one_event_frame_serves_every_seq() {
        let frame = EventFrame::new("market:sim:BTCUSDT:trades", 17, r#"{"price":"1.5"}"#);
        for seq in [0, 1, 9, 10, 12_345, u64::MAX] {
            let text = frame.with_seq(seq);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["seq"], seq, "{text}");
            assert_eq!(value["ts"], 17);
            assert_eq!(value["channel"], "market:sim:BTCUSDT:trades");
            assert_eq!(value["data"]["price"], "1.5");
        }
    }

    #[test]
    fn an_event_frame_is_valid_json_with_the_data_inline() {
        let frame = event_frame("bot:7", 3, 1_700_000_000_000, r#"{"kind":"fill"}"#);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["type"], "event");
        assert_eq!(value["channel"], "bot:7");
        assert_eq!(value["seq"], 3);
        assert_eq!(value["data"]["kind"], "fill");
    }
}
