//! Bybit's private stream: one connection per exchange account, authenticated and subscribed to
//! `order`, `execution`, `position` and `wallet`, turned into [`AccountEvent`]s.
//!
//! Follows <https://bybit-exchange.github.io/docs/v5/ws/connect> and the private topics
//! (<https://bybit-exchange.github.io/docs/v5/websocket/private/order>, `…/execution`,
//! `…/position`, `…/wallet`):
//!
//! - authentication is `{"op":"auth","args":[api_key, expires, signature]}`, the signature being
//!   the hex HMAC-SHA256 of `"GET/realtime" + expires` (signed in the vault), `expires` a time
//!   in ms by Bybit's clock (the REST client's [`ServerClock`](crate::clock::ServerClock)) a
//!   little ahead; the answer is `{"success":…,"op":"auth",…}`;
//! - then one subscribe for the all-in-one topics, answered the same way;
//! - Bybit drops a connection that sends nothing for 10 minutes and recommends a
//!   `{"op":"ping"}` every 20 s: Keel pings so, and a connection silent past
//!   [`ConnectionConfig::silence_timeout`] (pongs included) is dead;
//! - a failed attempt (refused, no answer, closed) reconnects with full-jitter backoff
//!   ([`crate::connection::backoff`]); after every subscription [`AccountEvent::Connected`] tells
//!   the runtime to reconcile (nothing is replayed), and every loss is an
//!   [`AccountEvent::Disconnected`].
//!
//! The stream carries every category of the account. Each venue (`bybit`, `bybit_linear`) opens
//! its own and keeps its category's orders, executions and positions; the wallet is the unified
//! account's and goes to both.
//!
//! Orders and fills: Bybit reports an order's state (`order`: status, cumulative quantity and
//! value) apart from its executions (`execution`: each fill with its fee and fee coin). Keel's
//! engine counts a fill once, with the commission of the report that first shows it, so the
//! stream leads with executions: each one becomes an update carrying that fill (its commission,
//! its `execId` as the trade id) and the cumulative figures the executions have shown; an order
//! update that shows more filled than the executions seen so far is held back while the order is
//! open or filled (its executions are on their way and say the same, with their fees), and sent
//! as it is when the order ended otherwise (a cancel after fills Keel learned elsewhere). Funding
//! executions (`execType: Funding`) are [`AccountEvent::Funding`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::Category;
use super::rest::{
    RawPosition, RestClient, VenueOrder, coin_amounts, funding_payment, settle_coin, spot_fee_coin,
};
use crate::account::{
    AccountEvent, AccountStream, Ended, Incoming, OrderUpdate, OwnedSigner, Reconnecting, incoming,
    open_socket, spawn_stream,
};
use crate::connection::ConnectionConfig;
use crate::routing::{Balance, OrderFill, OrderReport};

/// The topics Keel subscribes to (all-in-one: every category).
pub const TOPICS: [&str; 4] = ["order", "execution", "position", "wallet"];
/// How often Keel pings (Bybit recommends 20 s).
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How far ahead of Bybit's clock an authentication's `expires` is, ms.
pub const AUTH_EXPIRES_MS: u64 = 10_000;
/// How long the authentication and subscription answers may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame read.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// Orders whose executions the stream follows at most (older ones are forgotten).
const TRACKED_ORDERS: usize = 10_000;

/// Where the private stream is and how it reconnects (tests shorten the timings).
#[derive(Debug, Clone)]
pub struct PrivateStreamConfig {
    /// The private endpoint (`wss://stream.bybit.com/v5/private`).
    pub url: String,
    /// Backoff and silence rules (only `backoff_*`, `healthy_after`, `silence_timeout`,
    /// `ping_every` and `max_frame_bytes` apply).
    pub connection: ConnectionConfig,
    /// How long the authentication and subscription answers may take.
    pub answer_timeout: Duration,
}

impl PrivateStreamConfig {
    /// Bybit's documented rules for the private stream at `url`.
    pub fn new(url: String) -> Self {
        let connection = ConnectionConfig {
            ws_url: url.clone(),
            max_outgoing_per_sec: 5,
            max_streams: TOPICS.len(),
            max_connects: 100,
            connect_window: Duration::from_secs(300),
            max_frame_bytes: MAX_FRAME_BYTES,
            stale_after: Duration::from_secs(3600),
            // Pinged every 20 s, a live connection answers within that.
            silence_timeout: Duration::from_secs(60),
            ping_every: PING_EVERY,
            max_life: Duration::MAX,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        };
        Self { url, connection, answer_timeout: ANSWER_TIMEOUT }
    }
}

/// The text an authentication signs.
pub fn auth_payload(expires: u64) -> String {
    format!("GET/realtime{expires}")
}

/// The authentication request.
pub fn auth_request(req_id: &str, api_key: &str, expires: u64, signature: &str) -> String {
    serde_json::json!({"req_id": req_id, "op": "auth", "args": [api_key, expires, signature]})
        .to_string()
}

/// The subscription request.
pub fn subscribe_request(req_id: &str) -> String {
    serde_json::json!({"req_id": req_id, "op": "subscribe", "args": TOPICS}).to_string()
}

/// The heartbeat.
pub fn ping_request(req_id: &str) -> String {
    serde_json::json!({"req_id": req_id, "op": "ping"}).to_string()
}

/// One frame of the private stream, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An answer to an operation (`auth`, `subscribe`, `pong`).
    Op {
        /// Which.
        op: String,
        /// Whether it succeeded (a pong has no `success`: true).
        success: bool,
        /// Bybit's message.
        msg: String,
    },
    /// What a topic message meant for this category (possibly nothing).
    Events(Vec<AccountEvent>),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    ret_msg: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default, rename = "creationTime")]
    creation_time: u64,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrder {
    category: String,
    symbol: String,
    order_link_id: String,
    order_status: String,
    #[serde(with = "rust_decimal::serde::str")]
    cum_exec_qty: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    cum_exec_value: Decimal,
    #[serde(default)]
    updated_time: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExecution {
    category: String,
    symbol: String,
    #[serde(default)]
    order_link_id: String,
    #[serde(default)]
    side: String,
    exec_id: String,
    exec_type: String,
    exec_fee: String,
    #[serde(default)]
    exec_price: String,
    #[serde(default)]
    exec_qty: String,
    #[serde(default)]
    order_qty: String,
    #[serde(default)]
    leaves_qty: String,
    exec_time: String,
    #[serde(default)]
    fee_currency: String,
}

#[derive(Deserialize)]
struct RawWallet {
    coin: Vec<RawCoin>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCoin {
    coin: String,
    wallet_balance: String,
    #[serde(default)]
    locked: String,
    #[serde(default, rename = "totalOrderIM")]
    total_order_im: String,
    #[serde(default, rename = "totalPositionIM")]
    total_position_im: String,
}

/// What the stream has seen of one order's executions.
#[derive(Debug, Default, Clone)]
struct Track {
    qty: Decimal,
    value: Decimal,
}

/// Reads the private stream's frames for one category, following each order's executions.
#[derive(Debug)]
pub struct PrivateParser {
    category: &'static Category,
    orders: HashMap<String, Track>,
}

impl PrivateParser {
    /// A parser keeping `category`'s events.
    pub fn new(category: &'static Category) -> Self {
        Self { category, orders: HashMap::new() }
    }

    /// Reads one text frame.
    ///
    /// # Errors
    /// Not JSON, or a topic message without the fields Bybit documents for it.
    pub fn parse(&mut self, text: &str) -> Result<Frame, String> {
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(op) = envelope.op {
            let success = envelope.success.unwrap_or(op == "pong");
            return Ok(Frame::Op { op, success, msg: envelope.ret_msg });
        }
        let Some(topic) = envelope.topic else {
            return Err("neither an answer nor a topic".into());
        };
        let data = envelope.data.unwrap_or(serde_json::Value::Null);
        let bad = |e: serde_json::Error| format!("{topic}: {e}");
        // `order`, or a categorised `order.linear`: the category is in each item anyway.
        let kind = topic.split('.').next().unwrap_or_default();
        let mut events = Vec::new();
        match kind {
            "order" => {
                let orders: Vec<RawOrder> = serde_json::from_value(data).map_err(bad)?;
                for order in orders.into_iter().filter(|o| o.category == self.category.name) {
                    events.extend(self.on_order(order, envelope.creation_time));
                }
            }
            "execution" => {
                let executions: Vec<RawExecution> = serde_json::from_value(data).map_err(bad)?;
                for exec in executions.into_iter().filter(|e| e.category == self.category.name) {
                    events.extend(self.on_execution(exec)?);
                }
            }
            "position" => {
                let positions: Vec<RawPosition> = serde_json::from_value(data).map_err(bad)?;
                for position in positions {
                    if position.category.as_deref() != Some(self.category.name) {
                        continue;
                    }
                    let read = position.to_position(None).ok_or_else(|| {
                        format!("position: unreadable numbers for {}", position.symbol)
                    })?;
                    events.push(AccountEvent::Position(read));
                }
            }
            "wallet" => {
                let wallets: Vec<RawWallet> = serde_json::from_value(data).map_err(bad)?;
                let balances: Vec<Balance> = wallets
                    .into_iter()
                    .flat_map(|w| w.coin)
                    .map(|c| {
                        let (free, locked) = coin_amounts(
                            &c.wallet_balance,
                            &c.locked,
                            &c.total_order_im,
                            &c.total_position_im,
                        );
                        Balance { asset: c.coin, free, locked }
                    })
                    .collect();
                if !balances.is_empty() {
                    events.push(AccountEvent::Balances(balances));
                }
            }
            _ => {}
        }
        Ok(Frame::Events(events))
    }

    fn on_order(&mut self, order: RawOrder, creation_time: u64) -> Option<AccountEvent> {
        let seen = self.orders.get(&order.order_link_id).cloned().unwrap_or_default();
        let venue = VenueOrder {
            order_link_id: order.order_link_id.clone(),
            order_status: order.order_status.clone(),
            cum_exec_qty: order.cum_exec_qty,
            cum_exec_value: order.cum_exec_value,
        };
        let word = venue.status_word();
        let open_or_filled = matches!(word, "NEW" | "PARTIALLY_FILLED" | "FILLED");
        if order.cum_exec_qty > seen.qty && open_or_filled {
            // Its executions are on their way, with their fees: they will say it.
            return None;
        }
        if !matches!(word, "NEW" | "PARTIALLY_FILLED") {
            self.orders.remove(&order.order_link_id);
        }
        Some(AccountEvent::Order(OrderUpdate {
            symbol: order.symbol,
            report: OrderReport {
                client_order_id: order.order_link_id,
                status: word.to_owned(),
                executed_qty: order.cum_exec_qty,
                cum_quote: order.cum_exec_value,
                fills: Vec::new(),
            },
            trade_id: None,
            event_ms: order.updated_time.parse().unwrap_or(creation_time),
        }))
    }

    fn on_execution(&mut self, exec: RawExecution) -> Result<Option<AccountEvent>, String> {
        let number = |field: &str, s: &str| -> Result<Decimal, String> {
            s.parse().map_err(|_| format!("execution {}: {field} {s:?}", exec.exec_id))
        };
        if exec.exec_type == "Funding" {
            let payment = funding_payment(
                &exec.symbol,
                &exec.exec_id,
                &exec.exec_fee,
                &exec.exec_time,
                &exec.fee_currency,
            )
            .ok_or_else(|| format!("funding {}: unreadable", exec.exec_id))?;
            return Ok(Some(AccountEvent::Funding(payment)));
        }
        if exec.order_link_id.is_empty() {
            // Not one of ours (an ADL or a liquidation's take-over): positions tell it.
            return Ok(None);
        }
        let qty = number("execQty", &exec.exec_qty)?;
        let price = number("execPrice", &exec.exec_price)?;
        let fee = number("execFee", &exec.exec_fee)?;
        let leaves = number("leavesQty", &exec.leaves_qty)?;
        let ordered = number("orderQty", &exec.order_qty)?;
        if self.orders.len() >= TRACKED_ORDERS && !self.orders.contains_key(&exec.order_link_id) {
            self.orders.clear();
        }
        let track = self.orders.entry(exec.order_link_id.clone()).or_default();
        track.qty += qty;
        track.value += qty * price;
        // Executions before this connection are not pushed: the order's own figures show them,
        // and the bot asks for them.
        let executed = track.qty.max(ordered - leaves);
        let cum_quote = track.value;
        // Kept until the order's own final update, which it answers.
        let status = if leaves.is_zero() { "FILLED" } else { "PARTIALLY_FILLED" };
        let fee_asset = match exec.fee_currency.as_str() {
            "" if self.category.derivatives => settle_coin(&exec.symbol).to_owned(),
            "" => spot_fee_coin(&exec.symbol, &exec.side),
            coin => coin.to_owned(),
        };
        Ok(Some(AccountEvent::Order(OrderUpdate {
            symbol: exec.symbol,
            report: OrderReport {
                client_order_id: exec.order_link_id,
                status: status.to_owned(),
                executed_qty: executed,
                cum_quote,
                fills: vec![OrderFill { price, qty, fee, fee_asset }],
            },
            trade_id: Some(trade_id(&exec.exec_id)),
            event_ms: exec.exec_time.parse().unwrap_or(0),
        })))
    }
}

/// Bybit's execution ids are strings (UUIDs); the seam's trade ids are numbers: a 64-bit
/// FNV-1a hash of the id, the same for the same execution on every connection.
pub fn trade_id(exec_id: &str) -> u64 {
    exec_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Starts the private stream of one account for `rest`'s category.
pub fn spawn(
    rest: Arc<RestClient>,
    config: PrivateStreamConfig,
    signer: OwnedSigner,
) -> AccountStream {
    let (venue, connection) = (rest.category().venue.as_str(), config.connection.clone());
    let parser = PrivateParser::new(rest.category());
    spawn_stream(venue, connection, |tx| PrivateStream {
        rest,
        config,
        signer,
        tx,
        parser,
        next_id: 0,
    })
}

impl Reconnecting for PrivateStream {
    fn connect_once(&mut self) -> impl Future<Output = Ended> + Send {
        self.connect_and_serve()
    }
}

struct PrivateStream {
    rest: Arc<RestClient>,
    config: PrivateStreamConfig,
    signer: OwnedSigner,
    tx: mpsc::Sender<AccountEvent>,
    parser: PrivateParser,
    next_id: u64,
}

impl PrivateStream {
    fn venue(&self) -> &'static str {
        self.rest.category().venue.as_str()
    }

    fn req_id(&mut self) -> String {
        self.next_id += 1;
        format!("keel-{}", self.next_id)
    }

    async fn connect_and_serve(&mut self) -> Ended {
        let url = self.config.url.as_str();
        let socket =
            match open_socket(url, &self.config.connection, self.config.answer_timeout).await {
                Ok(socket) => socket,
                Err(why) => return Ended::early(why),
            };
        let (mut sink, mut stream) = socket.split();
        let auth = match self.auth().await {
            Ok(auth) => auth,
            Err(why) => return Ended::early(why),
        };
        for (request, op) in [(auth, "auth"), (subscribe_request(&self.req_id()), "subscribe")] {
            if let Err(err) = sink.send(Message::text(request)).await {
                return Ended::early(format!("{op} not sent: {err}"));
            }
            if let Err(why) = self.answer(&mut sink, &mut stream, op).await {
                if op == "auth" {
                    // An expired `expires` is one way to fail: measure before the next try.
                    let _ = self.rest.sync_time().await;
                }
                return Ended::early(why);
            }
        }
        let subscribed_at = Instant::now();
        metrics::counter!("keel_user_stream_subscriptions_total", "venue" => self.venue())
            .increment(1);
        if self.tx.send(AccountEvent::Connected).await.is_err() {
            return Ended::early("stopped");
        }
        let reason = self.serve(&mut sink, &mut stream).await;
        let _ = sink.close().await;
        Ended::after(reason, subscribed_at)
    }

    /// The signed authentication. The key is asked of the vault first (by signing nothing).
    async fn auth(&mut self) -> Result<String, String> {
        if self.rest.clock().is_stale() {
            let _ = self.rest.sync_time().await;
        }
        let (api_key, _) =
            (self.signer)(String::new()).await.map_err(|e| format!("signing failed: {e}"))?;
        let expires = self.rest.clock().timestamp() + AUTH_EXPIRES_MS;
        let (_, signature) = (self.signer)(auth_payload(expires))
            .await
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(auth_request(&self.req_id(), &api_key, expires, &signature))
    }

    /// Waits for the answer to `op`; topic messages before it are not expected and dropped.
    async fn answer<S, R>(&mut self, sink: &mut S, stream: &mut R, op: &str) -> Result<(), String>
    where
        S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
        R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let deadline = tokio::time::Instant::now() + self.config.answer_timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return Err(format!("no answer to {op}")),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    return Err(format!("closed before {op} was answered"));
                }
                Ok(Some(Err(err))) => {
                    return Err(format!("closed before {op} was answered: {err}"));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                Message::Text(text) => text,
                Message::Ping(payload) => {
                    let _ = sink.send(Message::Pong(payload)).await;
                    continue;
                }
                _ => continue,
            };
            match self.parser.parse(&text) {
                Ok(Frame::Op { op: answered, success, msg }) if answered == op => {
                    return if success { Ok(()) } else { Err(format!("{op} refused: {msg}")) };
                }
                Ok(_) => continue,
                Err(err) => return Err(format!("unreadable answer to {op}: {err}")),
            }
        }
    }

    /// Forwards events until the connection ends; returns why.
    async fn serve<S, R>(&mut self, sink: &mut S, stream: &mut R) -> String
    where
        S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
        R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let silence = self.config.connection.silence_timeout;
        let ping_every = self.config.connection.ping_every;
        let mut last_frame = tokio::time::Instant::now();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                _ = ping.tick() => {
                    let request = ping_request(&self.req_id());
                    if sink.send(Message::text(request)).await.is_err() {
                        return "ping not sent".into();
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(last_frame + silence) => {
                    return format!("silent for {silence:?}");
                }
                frame = stream.next() => frame,
            };
            last_frame = tokio::time::Instant::now();
            let text = match incoming(frame, sink).await {
                Incoming::Text(text) => text,
                Incoming::Skip => continue,
                Incoming::Ended(why) => return why,
            };
            match self.parser.parse(&text) {
                Ok(Frame::Events(events)) => {
                    for event in events {
                        if self.tx.send(event).await.is_err() {
                            return "stopped".into();
                        }
                    }
                }
                Ok(Frame::Op { .. }) => {}
                Err(err) => {
                    metrics::counter!("keel_user_stream_bad_frames_total", "venue" => self.venue())
                        .increment(1);
                    tracing::warn!(venue = self.venue(), error = %err, "unreadable bybit private frame");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
