//! Binance spot's user data stream: one WebSocket API connection per exchange account,
//! subscribed with `userDataStream.subscribe.signature`, turned into [`AccountEvent`]s.
//!
//! Follows <https://developers.binance.com/docs/binance-spot-api-docs/user-data-stream> and the
//! WebSocket API's "User Data Stream requests"
//! (<https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/user-data-stream-requests>).
//! Binance retired the spot listen key (`POST`/`PUT`/`DELETE /api/v3/userDataStream` and the
//! `/ws/<listenKey>` streams) on 2026-02-20; the WebSocket API subscription is what it documents
//! now. So there is no listen key to keep alive and no `listenKeyExpired`: the subscription lives
//! as long as the connection. The rules this task follows:
//!
//! - the request is `USER_STREAM` signed: `apiKey`, `recvWindow` and `timestamp` (Binance's time,
//!   from the REST client's [`ServerClock`](crate::clock::ServerClock)) sorted by name, HMAC-SHA256
//!   in the vault, hex; a `-1021` answer measures the clock before the next attempt;
//! - the answer must come within [`UserStreamConfig::subscribe_timeout`]; a 5xx, a 4xx, a closed
//!   connection or no answer at all is a failed attempt: reconnect with full-jitter backoff
//!   ([`crate::connection::backoff`]), never faster than a 429/418's `retryAfter`;
//! - events come wrapped as `{"subscriptionId":N,"event":{…}}`; `eventStreamTerminated` ends
//!   the subscription and `serverShutdown` announces the connection's end: both reconnect at once;
//! - a connection lives at most 24 hours at Binance: Keel reconnects before
//!   ([`ConnectionConfig::max_life`]), and a connection silent for
//!   [`ConnectionConfig::silence_timeout`] (the server pings every 20 s) is dead;
//! - after every (re)subscription [`AccountEvent::Connected`] tells the runtime to reconcile, and
//!   every loss is an [`AccountEvent::Disconnected`] (poll meanwhile).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::rest::RestClient;
use crate::account::{
    AccountEvent, AccountStream, Ended, Incoming, OrderUpdate, OwnedSigner, Reconnecting, incoming,
    open_socket, spawn_stream,
};
use crate::connection::ConnectionConfig;
use crate::routing::{Balance, OrderFill, OrderReport};

/// Spot WebSocket API.
/// <https://developers.binance.com/docs/binance-spot-api-docs/websocket-api/general-api-information>
pub const SPOT_WS_API_URL: &str = "wss://ws-api.binance.com:443/ws-api/v3";
/// Spot testnet WebSocket API.
pub const SPOT_TESTNET_WS_API_URL: &str = "wss://ws-api.testnet.binance.vision/ws-api/v3";
/// Binance cuts a WebSocket API connection after 24 hours.
pub const WS_API_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long the subscription's answer may take.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame read (an execution report is well under 2 KiB).
const MAX_FRAME_BYTES: usize = 1 << 20;
/// The method that subscribes an account by signature (HMAC keys included).
pub const SUBSCRIBE_METHOD: &str = "userDataStream.subscribe.signature";

/// Where the stream is and how it reconnects (tests shorten the timings).
#[derive(Debug, Clone)]
pub struct UserStreamConfig {
    /// The WebSocket API endpoint.
    pub url: String,
    /// Backoff, lifetime and silence rules (the market streams' driver's type; only
    /// `backoff_*`, `healthy_after`, `max_life`, `silence_timeout`, `ping_every` and
    /// `max_frame_bytes` apply).
    pub connection: ConnectionConfig,
    /// How long the subscription's answer may take.
    pub subscribe_timeout: Duration,
    /// `recvWindow` sent with the subscription, ms.
    pub recv_window_ms: u64,
}

impl UserStreamConfig {
    /// Binance's documented rules for the WebSocket API at `url`.
    pub fn new(url: String, recv_window_ms: u64) -> Self {
        let connection = ConnectionConfig {
            ws_url: url.clone(),
            max_outgoing_per_sec: 5,
            max_streams: 1,
            max_connects: super::streams::MAX_CONNECTIONS_PER_WINDOW,
            connect_window: super::streams::CONNECTION_WINDOW,
            max_frame_bytes: MAX_FRAME_BYTES,
            stale_after: Duration::from_secs(3600),
            // The server pings every 20 s.
            silence_timeout: Duration::from_secs(65),
            ping_every: Duration::from_secs(30),
            max_life: WS_API_LIFETIME - Duration::from_secs(15 * 60),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        };
        Self { url, connection, subscribe_timeout: SUBSCRIBE_TIMEOUT, recv_window_ms }
    }
}

/// One frame of the WebSocket API, as the user stream reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The answer to request `id`.
    Response {
        /// The request's id.
        id: Option<u64>,
        /// HTTP-like status.
        status: u16,
        /// Binance's error code (0 on success).
        code: i64,
        /// Binance's message.
        msg: String,
        /// How long to wait before asking again (429/418: `retryAfter − serverTime`), ms.
        retry_after_ms: Option<u64>,
    },
    /// An account event.
    Event(AccountEvent),
    /// `eventStreamTerminated`: the subscription ended.
    Terminated,
    /// `serverShutdown`: the connection is about to end.
    ServerShutdown,
    /// An event Keel does not act on (`listStatus`, `externalLockUpdate`, …).
    Ignored(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<WsError>,
    #[serde(default)]
    event: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WsError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// `executionReport`, the fields Keel reads.
#[derive(Deserialize)]
struct ExecutionReport {
    #[serde(rename = "E")]
    event_time: u64,
    s: String,
    c: String,
    #[serde(rename = "C", default)]
    orig_client_order_id: Option<String>,
    #[serde(rename = "X")]
    status: String,
    #[serde(with = "rust_decimal::serde::str")]
    l: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    z: Decimal,
    #[serde(rename = "L", with = "rust_decimal::serde::str")]
    last_price: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    n: Decimal,
    #[serde(rename = "N", default)]
    commission_asset: Option<String>,
    t: i64,
    #[serde(rename = "Z", with = "rust_decimal::serde::str")]
    cum_quote: Decimal,
}

#[derive(Deserialize)]
struct AccountPosition {
    #[serde(rename = "B")]
    balances: Vec<PositionBalance>,
}

#[derive(Deserialize)]
struct PositionBalance {
    a: String,
    #[serde(with = "rust_decimal::serde::str")]
    f: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    l: Decimal,
}

#[derive(Deserialize)]
struct BalanceUpdate {
    a: String,
    #[serde(with = "rust_decimal::serde::str")]
    d: Decimal,
}

/// Reads one text frame.
///
/// # Errors
/// Not JSON, or an event without the fields Binance documents for it.
pub fn parse_frame(text: &str) -> Result<Frame, String> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(status) = envelope.status {
        let id = envelope.id.as_ref().and_then(serde_json::Value::as_u64);
        let (code, msg, retry_after_ms) = match envelope.error {
            Some(err) => {
                // `retryAfter` is when the ban ends (epoch ms), by the server's `serverTime`.
                let retry = err.data.as_ref().and_then(|d| {
                    let until = d.get("retryAfter")?.as_u64()?;
                    let now = d.get("serverTime").and_then(serde_json::Value::as_u64);
                    Some(until.saturating_sub(now.unwrap_or(until)))
                });
                (err.code, err.msg, retry)
            }
            None => (0, String::new(), None),
        };
        return Ok(Frame::Response { id, status, code, msg, retry_after_ms });
    }
    let Some(event) = envelope.event else { return Err("neither an answer nor an event".into()) };
    let kind = event.get("e").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let bad = |e: serde_json::Error| format!("{kind}: {e}");
    Ok(match kind.as_str() {
        "executionReport" => {
            let r: ExecutionReport = serde_json::from_value(event).map_err(bad)?;
            Frame::Event(AccountEvent::Order(order_update(r)))
        }
        "outboundAccountPosition" => {
            let p: AccountPosition = serde_json::from_value(event).map_err(bad)?;
            let balances = p
                .balances
                .into_iter()
                .map(|b| Balance { asset: b.a, free: b.f, locked: b.l })
                .collect();
            Frame::Event(AccountEvent::Balances(balances))
        }
        "balanceUpdate" => {
            let u: BalanceUpdate = serde_json::from_value(event).map_err(bad)?;
            Frame::Event(AccountEvent::BalanceDelta { asset: u.a, delta: u.d })
        }
        "eventStreamTerminated" => Frame::Terminated,
        "serverShutdown" => Frame::ServerShutdown,
        other => Frame::Ignored(other.to_owned()),
    })
}

fn order_update(r: ExecutionReport) -> OrderUpdate {
    // A cancel's report carries the cancel request's id in `c` and the order's in `C`.
    let client_order_id = match r.orig_client_order_id {
        Some(orig) if !orig.is_empty() => orig,
        _ => r.c,
    };
    let traded = r.t >= 0 && !r.l.is_zero();
    let fills = if traded {
        vec![OrderFill {
            price: r.last_price,
            qty: r.l,
            fee: r.n,
            fee_asset: r.commission_asset.unwrap_or_default(),
        }]
    } else {
        Vec::new()
    };
    OrderUpdate {
        symbol: r.s,
        report: OrderReport {
            client_order_id,
            status: r.status,
            executed_qty: r.z,
            cum_quote: r.cum_quote,
            fills,
        },
        trade_id: traded.then_some(r.t as u64),
        event_ms: r.event_time,
    }
}

/// The signature payload of a subscription: its parameters sorted by name, as Binance's
/// WebSocket API signs them.
pub fn signature_payload(api_key: &str, recv_window_ms: u64, timestamp: u64) -> String {
    format!("apiKey={api_key}&recvWindow={recv_window_ms}&timestamp={timestamp}")
}

/// The subscription request.
pub fn subscribe_request(
    id: u64,
    api_key: &str,
    recv_window_ms: u64,
    timestamp: u64,
    signature: &str,
) -> String {
    serde_json::json!({
        "id": id,
        "method": SUBSCRIBE_METHOD,
        "params": {
            "apiKey": api_key,
            "recvWindow": recv_window_ms,
            "timestamp": timestamp,
            "signature": signature,
        }
    })
    .to_string()
}

/// Starts the stream of one account.
pub fn spawn(
    rest: Arc<RestClient>,
    config: UserStreamConfig,
    signer: OwnedSigner,
) -> AccountStream {
    let (venue, connection) = (rest.dialect().venue.as_str(), config.connection.clone());
    spawn_stream(venue, connection, |tx| UserStream { rest, config, signer, tx, next_id: 0 })
}

impl Reconnecting for UserStream {
    fn connect_once(&mut self) -> impl Future<Output = Ended> + Send {
        self.connect_and_serve()
    }
}

struct UserStream {
    rest: Arc<RestClient>,
    config: UserStreamConfig,
    signer: OwnedSigner,
    tx: mpsc::Sender<AccountEvent>,
    next_id: u64,
}

impl UserStream {
    fn venue(&self) -> &'static str {
        self.rest.dialect().venue.as_str()
    }

    async fn connect_and_serve(&mut self) -> Ended {
        let url = self.config.url.as_str();
        let socket =
            match open_socket(url, &self.config.connection, self.config.subscribe_timeout).await {
                Ok(socket) => socket,
                Err(why) => return Ended::early(why),
            };
        let (mut sink, mut stream) = socket.split();
        let request = match self.request().await {
            Ok(request) => request,
            Err(why) => return Ended::early(why),
        };
        let id = self.next_id;
        if let Err(err) = sink.send(Message::text(request)).await {
            return Ended::early(format!("subscribe not sent: {err}"));
        }
        // The answer, within the deadline; pings are answered meanwhile.
        let deadline = tokio::time::Instant::now() + self.config.subscribe_timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Ended::early("no answer to the subscription"),
                Ok(None) => return Ended::early("closed before the subscription was answered"),
                Ok(Some(Err(err))) => {
                    return Ended::early(format!(
                        "closed before the subscription was answered: {err}"
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Ping(payload) => {
                    let _ = sink.send(Message::Pong(payload)).await;
                    continue;
                }
                Message::Close(_) => {
                    return Ended::early("closed before the subscription was answered");
                }
                _ => continue,
            };
            match parse_frame(&text) {
                Ok(Frame::Response { id: Some(answered), status, code, msg, retry_after_ms })
                    if answered == id =>
                {
                    if status == 200 {
                        break;
                    }
                    if code == -1021 {
                        let _ = self.rest.sync_time().await;
                    }
                    let at_least = match status {
                        429 | 418 => Duration::from_millis(retry_after_ms.unwrap_or(60_000)),
                        _ => Duration::ZERO,
                    };
                    let reason = format!("subscription refused: {status} {code} {msg}");
                    return Ended { at_least, ..Ended::early(reason) };
                }
                Ok(_) => continue,
                Err(err) => return Ended::early(format!("unreadable answer: {err}")),
            }
        }
        let subscribed_at = Instant::now();
        metrics::counter!("keel_user_stream_subscriptions_total", "venue" => self.venue())
            .increment(1);
        if self.tx.send(AccountEvent::Connected).await.is_err() {
            return Ended::early("stopped");
        }
        let reason = self.serve(&mut sink, &mut stream, subscribed_at).await;
        let _ = sink.close().await;
        Ended::after(reason, subscribed_at)
    }

    /// The signed subscription. The API key is part of the signed payload, so the vault is asked
    /// for it first (by signing nothing), then for the signature.
    async fn request(&mut self) -> Result<String, String> {
        if self.rest.clock().is_stale() {
            let _ = self.rest.sync_time().await;
        }
        let (api_key, _) =
            (self.signer)(String::new()).await.map_err(|e| format!("signing failed: {e}"))?;
        let recv_window = self.config.recv_window_ms;
        let timestamp = self.rest.timestamp();
        let payload = signature_payload(&api_key, recv_window, timestamp);
        let (_, signature) =
            (self.signer)(payload).await.map_err(|e| format!("signing failed: {e}"))?;
        self.next_id += 1;
        Ok(subscribe_request(self.next_id, &api_key, recv_window, timestamp, &signature))
    }

    /// Forwards events until the connection ends; returns why.
    async fn serve<S, R>(&mut self, sink: &mut S, stream: &mut R, subscribed_at: Instant) -> String
    where
        S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
        R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let silence = self.config.connection.silence_timeout;
        let max_life = self.config.connection.max_life;
        loop {
            let left = max_life.saturating_sub(subscribed_at.elapsed());
            if left.is_zero() {
                return "connection lifetime reached (Binance cuts at 24 h)".into();
            }
            let frame = match tokio::time::timeout(silence.min(left), stream.next()).await {
                Err(_) if subscribed_at.elapsed() >= max_life => continue,
                Err(_) => return format!("silent for {silence:?}"),
                Ok(frame) => frame,
            };
            let text = match incoming(frame, sink).await {
                Incoming::Text(text) => text,
                Incoming::Skip => continue,
                Incoming::Ended(why) => return why,
            };
            match parse_frame(&text) {
                Ok(Frame::Event(event)) => {
                    if self.tx.send(event).await.is_err() {
                        return "stopped".into();
                    }
                }
                Ok(Frame::Terminated) => return "eventStreamTerminated".into(),
                Ok(Frame::ServerShutdown) => return "serverShutdown".into(),
                Ok(Frame::Response { .. } | Frame::Ignored(_)) => {}
                Err(err) => {
                    metrics::counter!("keel_user_stream_bad_frames_total", "venue" => self.venue())
                        .increment(1);
                    tracing::warn!(venue = self.venue(), error = %err, "unreadable user stream frame");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = include_str!("../../../testkit/fixtures/binance/user_stream.jsonl");

    fn fixture(kind: &str) -> &'static str {
        FIXTURES.lines().find(|l| l.contains(kind)).unwrap()
    }

    #[test]
    fn a_trade_report_carries_its_fill_commission_and_trade_id() {
        let Frame::Event(AccountEvent::Order(update)) =
            parse_frame(fixture(r#""x":"TRADE""#)).unwrap()
        else {
            panic!("not an order update");
        };
        assert_eq!(update.symbol, "BTCUSDT");
        assert_eq!(update.report.client_order_id, "keel-7-000001");
        assert_eq!(update.report.status, "PARTIALLY_FILLED");
        assert_eq!(update.report.executed_qty, Decimal::new(4, 2));
        assert_eq!(update.trade_id, Some(12_345));
        let fill = &update.report.fills[0];
        assert_eq!(
            (fill.qty, fill.fee, fill.fee_asset.as_str()),
            (Decimal::new(4, 2), Decimal::new(4, 5), "BTC")
        );
    }

    #[test]
    fn a_cancel_report_names_the_canceled_order_not_the_cancel() {
        let Frame::Event(AccountEvent::Order(update)) =
            parse_frame(fixture(r#""x":"CANCELED""#)).unwrap()
        else {
            panic!("not an order update");
        };
        assert_eq!(update.report.client_order_id, "keel-7-000002");
        assert_eq!(update.report.status, "CANCELED");
        assert!(update.report.fills.is_empty());
        assert_eq!(update.trade_id, None);
    }

    #[test]
    fn balances_deltas_and_stream_ends_are_read() {
        let Frame::Event(AccountEvent::Balances(b)) =
            parse_frame(fixture("outboundAccountPosition")).unwrap()
        else {
            panic!("not balances");
        };
        assert_eq!(b[0].asset, "BTC");
        assert!(matches!(
            parse_frame(fixture("balanceUpdate")).unwrap(),
            Frame::Event(AccountEvent::BalanceDelta { .. })
        ));
        assert_eq!(parse_frame(fixture("eventStreamTerminated")).unwrap(), Frame::Terminated);
        assert_eq!(parse_frame(fixture("serverShutdown")).unwrap(), Frame::ServerShutdown);
        assert!(matches!(parse_frame(fixture("listStatus")).unwrap(), Frame::Ignored(_)));
        let Frame::Response { status, code, retry_after_ms, .. } =
            parse_frame(fixture("retryAfter")).unwrap()
        else {
            panic!("not an answer");
        };
        assert_eq!((status, code, retry_after_ms), (429, -1003, Some(6_469)));
        assert!(parse_frame("not json").is_err());
        assert!(parse_frame(r#"{"event":{"e":"executionReport"}}"#).is_err());
    }

    #[test]
    fn the_subscription_is_signed_over_its_sorted_parameters() {
        let payload = signature_payload("KEY", 5000, 1747385641636);
        assert_eq!(payload, "apiKey=KEY&recvWindow=5000&timestamp=1747385641636");
        let request: serde_json::Value =
            serde_json::from_str(&subscribe_request(3, "KEY", 5000, 1747385641636, "abc")).unwrap();
        assert_eq!(request["method"], SUBSCRIBE_METHOD);
        assert_eq!(request["params"]["signature"], "abc");
        assert_eq!(request["id"], 3);
    }
}
