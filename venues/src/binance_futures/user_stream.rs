//! Binance USD-M futures' user data stream: a listen key per exchange account and the
//! WebSocket `<private_ws_url>/ws/<listenKey>`, turned into [`AccountEvent`]s.
//!
//! Follows <https://developers.binance.com/docs/derivatives/usds-margined-futures/user-data-streams>:
//! - `POST /fapi/v1/listenKey` (API key, no signature) gives the key (the same one while it is
//!   valid); `PUT` keeps it alive for 60 minutes, sent every [`KEEPALIVE_EVERY`] (a refused
//!   keep-alive, `-1125`, starts over with a new key). No `DELETE`: a stopped stream's key lapses
//!   by itself within the hour, and other Keel processes may share it;
//! - events come unwrapped: `ORDER_TRADE_UPDATE` → [`AccountEvent::Order`] (cumulative `z`,
//!   status `X`, the trade `t` with `l` at `L` and its commission `n` in `N`; the cumulative quote
//!   is `ap × z`, since the event has no cumulative quote), `ACCOUNT_UPDATE` →
//!   [`AccountEvent::Position`] for each one-way (`ps` `BOTH`) position in `P`, then
//!   [`AccountEvent::Balances`] read from `GET /fapi/v3/balance` (the event's `wb`/`cw` say
//!   nothing of what is free); with reason `m` `FUNDING_FEE`, [`AccountEvent::Funding`] for the
//!   payments of `GET /fapi/v1/income?incomeType=FUNDING_FEE` since shortly before the event, so
//!   each carries its `tranId` (the event has none, and names no symbol on cross margin);
//! - `ALGO_UPDATE` (a conditional order of a native bracket, [`super::algo`]) → an
//!   [`AccountEvent::Order`] of the leg `caid`: status `X` read as an order status
//!   ([`super::algo::status_word`]), executed `aq` at `ap`, without fills (an update with
//!   executions it does not carry makes the bot query the leg, which reads the trades). Once it
//!   names the market order it became (`ai`), that order's `ORDER_TRADE_UPDATE`s (whose client
//!   id the documentation does not give) are reported under the leg's client id, with their
//!   trades;
//! - `listenKeyExpired`, a close, silence or a connection at its 24-hour limit reconnect with
//!   full-jitter backoff, a new listen key first. After every connection
//!   [`AccountEvent::Connected`] tells the runtime to reconcile; every loss is an
//!   [`AccountEvent::Disconnected`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::account::{
    AccountEvent, AccountStream, Ended, Incoming, OrderUpdate, OwnedSigner, Reconnecting, incoming,
    open_socket, spawn_stream,
};
use crate::binance::rest::{RestClient, RestError};
use crate::connection::ConnectionConfig;
use crate::routing::{OrderFill, OrderReport, OrderRouter, VenuePosition};

/// USD-M futures private stream base (`/ws/<listenKey>` is appended).
pub const PRIVATE_WS_URL: &str = "wss://fstream.binance.com";
/// USD-M futures testnet private stream base.
pub const TESTNET_PRIVATE_WS_URL: &str = "wss://fstream.binancefuture.com";
/// The listen key's path.
pub const LISTEN_KEY_PATH: &str = "/fapi/v1/listenKey";
/// How often the listen key is kept alive (Binance: it lapses 60 minutes after the last).
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(30 * 60);
/// Binance cuts a user stream connection after 24 hours.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far before a funding event's time its payments are looked up, ms.
const FUNDING_LOOKBACK_MS: u64 = 60_000;
/// Most triggered conditional orders remembered per connection (their order id → the leg).
const TRIGGERED_KEPT: usize = 1024;
/// Largest frame read.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Where the stream is and how it reconnects (tests shorten the timings).
#[derive(Debug, Clone)]
pub struct FuturesStreamConfig {
    /// The private stream base (`wss://fstream.binance.com`).
    pub url: String,
    /// Backoff, lifetime and silence rules (only `backoff_*`, `healthy_after`, `max_life`,
    /// `silence_timeout` and `max_frame_bytes` apply).
    pub connection: ConnectionConfig,
    /// How often the listen key is kept alive.
    pub keepalive_every: Duration,
    /// How long a connect may take.
    pub connect_timeout: Duration,
}

impl FuturesStreamConfig {
    /// Binance's documented rules for the stream at `url`.
    pub fn new(url: String) -> Self {
        let connection = ConnectionConfig {
            ws_url: url.clone(),
            max_outgoing_per_sec: super::MAX_INCOMING_MSGS_PER_SEC,
            max_streams: 1,
            max_connects: crate::binance::streams::MAX_CONNECTIONS_PER_WINDOW,
            connect_window: crate::binance::streams::CONNECTION_WINDOW,
            max_frame_bytes: MAX_FRAME_BYTES,
            stale_after: Duration::from_secs(3600),
            // The server pings every 3 minutes; an account may be quiet for longer, so silence
            // counts pings too.
            silence_timeout: super::PING_INTERVAL * 2 + Duration::from_secs(30),
            ping_every: Duration::from_secs(60),
            max_life: CONNECTION_LIFETIME - Duration::from_secs(15 * 60),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        };
        Self {
            url,
            connection,
            keepalive_every: KEEPALIVE_EVERY,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One frame of the stream, as the task reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// An order changed (`order_id` is the venue's id of it, `i`).
    Order {
        /// The update.
        update: OrderUpdate,
        /// The venue's order id.
        order_id: u64,
    },
    /// A conditional order changed (`ALGO_UPDATE`): its leg's update, and the market order it
    /// became once triggered (`ai`).
    Algo {
        /// The leg's update, under its client id (`caid`).
        update: OrderUpdate,
        /// The triggered market order's id, once there is one.
        actual_order: Option<u64>,
    },
    /// The account changed (`ACCOUNT_UPDATE`): its reason `m`, its one-way positions, and when.
    Account {
        /// `ORDER`, `FUNDING_FEE`, `DEPOSIT`, …
        reason: String,
        /// The positions it reports (one-way entries only).
        positions: Vec<VenuePosition>,
        /// Transaction time `T`, ms.
        time_ms: u64,
    },
    /// `listenKeyExpired`: reconnect with a new key.
    Expired,
    /// An event Keel does not act on (`MARGIN_CALL`, `ACCOUNT_CONFIG_UPDATE`, `TRADE_LITE`, …).
    Ignored(String),
}

#[derive(Deserialize)]
struct OrderTradeUpdate {
    #[serde(rename = "E")]
    event_time: u64,
    o: OrderFields,
}

#[derive(Deserialize)]
struct OrderFields {
    s: String,
    c: String,
    #[serde(rename = "X")]
    status: String,
    #[serde(with = "rust_decimal::serde::str")]
    l: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    z: Decimal,
    #[serde(rename = "L", with = "rust_decimal::serde::str")]
    last_price: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    ap: Decimal,
    /// Absent until the order trades.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    n: Option<Decimal>,
    #[serde(rename = "N", default)]
    commission_asset: Option<String>,
    #[serde(default)]
    t: i64,
    #[serde(default)]
    i: u64,
}

#[derive(Deserialize)]
struct AlgoUpdateEvent {
    #[serde(rename = "E")]
    event_time: u64,
    o: AlgoFields,
}

#[derive(Deserialize)]
struct AlgoFields {
    caid: String,
    s: String,
    #[serde(rename = "X")]
    status: String,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    q: Option<Decimal>,
    #[serde(default)]
    ai: serde_json::Value,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    ap: Option<Decimal>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    aq: Option<Decimal>,
}

#[derive(Deserialize)]
struct AccountUpdate {
    #[serde(rename = "T")]
    time: u64,
    a: AccountFields,
}

#[derive(Deserialize)]
struct AccountFields {
    m: String,
    #[serde(rename = "P", default)]
    positions: Vec<PositionFields>,
}

#[derive(Deserialize)]
struct PositionFields {
    s: String,
    #[serde(with = "rust_decimal::serde::str")]
    pa: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    ep: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    up: Decimal,
    #[serde(default)]
    mt: String,
    #[serde(default)]
    ps: String,
}

/// Reads one text frame.
///
/// # Errors
/// Not JSON, or an event without the fields Binance documents for it.
pub fn parse_frame(text: &str) -> Result<Frame, String> {
    let event: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let kind = event.get("e").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let bad = |e: serde_json::Error| format!("{kind}: {e}");
    Ok(match kind.as_str() {
        "ORDER_TRADE_UPDATE" => {
            let u: OrderTradeUpdate = serde_json::from_value(event).map_err(bad)?;
            let order_id = u.o.i;
            Frame::Order { update: order_update(u), order_id }
        }
        "ALGO_UPDATE" => {
            let u: AlgoUpdateEvent = serde_json::from_value(event).map_err(bad)?;
            algo_update(u)?
        }
        "ACCOUNT_UPDATE" => {
            let u: AccountUpdate = serde_json::from_value(event).map_err(bad)?;
            let positions =
                u.a.positions
                    .into_iter()
                    .filter(|p| p.ps.is_empty() || p.ps == "BOTH")
                    .map(|p| VenuePosition {
                        symbol: p.s,
                        qty: p.pa,
                        entry_price: p.ep,
                        mark_price: None,
                        liquidation_price: None,
                        unrealized_pnl: p.up,
                        leverage: None,
                        margin_type: match p.mt.as_str() {
                            "isolated" => Some(keel_core::bot::MarginType::Isolated),
                            "cross" | "crossed" => Some(keel_core::bot::MarginType::Cross),
                            _ => None,
                        },
                        updated_ms: u.time,
                    })
                    .collect();
            Frame::Account { reason: u.a.m, positions, time_ms: u.time }
        }
        "listenKeyExpired" => Frame::Expired,
        "" => return Err("a frame without an event type".into()),
        other => Frame::Ignored(other.to_owned()),
    })
}

fn order_update(u: OrderTradeUpdate) -> OrderUpdate {
    let o = u.o;
    let traded = o.t > 0 && !o.l.is_zero();
    let fills = if traded {
        vec![OrderFill {
            price: o.last_price,
            qty: o.l,
            fee: o.n.unwrap_or_default(),
            fee_asset: o.commission_asset.unwrap_or_default(),
        }]
    } else {
        Vec::new()
    };
    OrderUpdate {
        symbol: o.s,
        report: OrderReport {
            client_order_id: o.c,
            status: o.status,
            executed_qty: o.z,
            cum_quote: o.ap * o.z,
            fills,
        },
        trade_id: traded.then_some(o.t as u64),
        event_ms: u.event_time,
    }
}

fn algo_update(u: AlgoUpdateEvent) -> Result<Frame, String> {
    let o = u.o;
    let executed = o.aq.unwrap_or_default();
    let Some(status) = super::algo::status_word(&o.status, executed, o.q.unwrap_or_default())
    else {
        return Err(format!("ALGO_UPDATE: unknown algo status {}", o.status));
    };
    let actual_order = super::algo::order_id_of(&o.ai);
    let update = OrderUpdate {
        symbol: o.s,
        report: OrderReport {
            client_order_id: o.caid,
            status: status.to_owned(),
            executed_qty: executed,
            cum_quote: executed * o.ap.unwrap_or_default(),
            fills: Vec::new(),
        },
        trade_id: None,
        event_ms: u.event_time,
    };
    Ok(Frame::Algo { update, actual_order })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListenKey {
    listen_key: String,
}

/// Starts the stream of one account; `router` reads balances and funding for it.
pub fn spawn(
    rest: Arc<RestClient>,
    router: Arc<dyn OrderRouter>,
    config: FuturesStreamConfig,
    signer: OwnedSigner,
) -> AccountStream {
    let connection = config.connection.clone();
    spawn_stream("binance_futures", connection, |tx| FuturesStream {
        rest,
        router,
        config,
        signer,
        tx,
    })
}

impl Reconnecting for FuturesStream {
    fn connect_once(&mut self) -> impl Future<Output = Ended> + Send {
        self.connect_and_serve()
    }
}

struct FuturesStream {
    rest: Arc<RestClient>,
    router: Arc<dyn OrderRouter>,
    config: FuturesStreamConfig,
    signer: OwnedSigner,
    tx: mpsc::Sender<AccountEvent>,
}

impl FuturesStream {
    async fn api_key(&self) -> Result<String, String> {
        (self.signer)(String::new())
            .await
            .map(|(key, _)| key)
            .map_err(|e| format!("signing failed: {e}"))
    }

    async fn listen_key(
        &self,
        method: reqwest::Method,
        api_key: &str,
    ) -> Result<String, RestError> {
        let key: ListenKey = self.rest.keyed(method, LISTEN_KEY_PATH, &[], api_key).await?;
        Ok(key.listen_key)
    }

    /// One connection: a listen key, the socket, events until it ends.
    async fn connect_and_serve(&self) -> Ended {
        let api_key = match self.api_key().await {
            Ok(key) => key,
            Err(why) => return Ended::early(why),
        };
        let listen_key = match self.listen_key(reqwest::Method::POST, &api_key).await {
            Ok(key) => key,
            Err(err) => return Ended::early(format!("no listen key: {err}")),
        };
        let url = format!("{}/ws/{listen_key}", self.config.url.trim_end_matches('/'));
        let connection = &self.config.connection;
        let socket = match open_socket(&url, connection, self.config.connect_timeout).await {
            Ok(socket) => socket,
            Err(why) => return Ended::early(why),
        };
        let connected_at = Instant::now();
        metrics::counter!("keel_user_stream_subscriptions_total", "venue" => "binance_futures")
            .increment(1);
        if self.tx.send(AccountEvent::Connected).await.is_err() {
            return Ended::after("stopped", connected_at);
        }
        let (mut sink, mut stream) = socket.split();
        let reason = self.serve(&mut sink, &mut stream, connected_at, &api_key).await;
        let _ = sink.close().await;
        Ended::after(reason, connected_at)
    }

    async fn serve<S, R>(
        &self,
        sink: &mut S,
        stream: &mut R,
        connected_at: Instant,
        api_key: &str,
    ) -> String
    where
        S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
        R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let silence = self.config.connection.silence_timeout;
        let max_life = self.config.connection.max_life;
        // Triggered conditional orders: the market order's id → the leg's client id.
        let mut triggered: HashMap<u64, String> = HashMap::new();
        let mut keepalive = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.keepalive_every,
            self.config.keepalive_every,
        );
        loop {
            let left = max_life.saturating_sub(connected_at.elapsed());
            if left.is_zero() {
                return "connection lifetime reached (Binance cuts at 24 h)".into();
            }
            let frame = tokio::select! {
                _ = keepalive.tick() => {
                    if let Err(err) = self.listen_key(reqwest::Method::PUT, api_key).await {
                        // -1125: the key does not exist any more; anything else may pass, but a
                        // key not kept alive lapses: start over with a new one either way.
                        return format!("listen key not kept alive: {err}");
                    }
                    continue;
                }
                next = tokio::time::timeout(silence.min(left), stream.next()) => next,
            };
            let frame = match frame {
                Err(_) if connected_at.elapsed() >= max_life => continue,
                Err(_) => return format!("silent for {silence:?}"),
                Ok(frame) => frame,
            };
            let text = match incoming(frame, sink).await {
                Incoming::Text(text) => text,
                Incoming::Skip => continue,
                Incoming::Ended(why) => return why,
            };
            let sent = match parse_frame(&text) {
                Ok(Frame::Order { mut update, order_id }) => {
                    if let Some(leg) = triggered.get(&order_id) {
                        update.report.client_order_id.clone_from(leg);
                    }
                    self.tx.send(AccountEvent::Order(update)).await.is_ok()
                }
                Ok(Frame::Algo { update, actual_order }) => {
                    if let Some(order_id) = actual_order {
                        if triggered.len() >= TRIGGERED_KEPT {
                            triggered.clear();
                        }
                        triggered.insert(order_id, update.report.client_order_id.clone());
                    }
                    self.tx.send(AccountEvent::Order(update)).await.is_ok()
                }
                Ok(Frame::Account { reason, positions, time_ms }) => {
                    self.account_changed(&reason, positions, time_ms).await
                }
                Ok(Frame::Expired) => return "listenKeyExpired".into(),
                Ok(Frame::Ignored(_)) => true,
                Err(err) => {
                    metrics::counter!("keel_user_stream_bad_frames_total", "venue" => "binance_futures")
                        .increment(1);
                    tracing::warn!(venue = "binance_futures", error = %err, "unreadable user stream frame");
                    true
                }
            };
            if !sent {
                return "stopped".into();
            }
        }
    }

    /// Forwards an `ACCOUNT_UPDATE`: its positions, the balances now, and on a funding fee
    /// the payments with their ids. False once the receiver is gone.
    async fn account_changed(
        &self,
        reason: &str,
        positions: Vec<VenuePosition>,
        time_ms: u64,
    ) -> bool {
        for position in positions {
            if self.tx.send(AccountEvent::Position(position)).await.is_err() {
                return false;
            }
        }
        let signer = &*self.signer;
        match self.router.balances(signer).await {
            Ok(balances) => {
                if self.tx.send(AccountEvent::Balances(balances)).await.is_err() {
                    return false;
                }
            }
            Err(err) => {
                tracing::warn!(venue = "binance_futures", error = %err, "balances not read after an account update");
            }
        }
        if reason == "FUNDING_FEE" {
            let since = time_ms.saturating_sub(FUNDING_LOOKBACK_MS);
            for payment in self.funding_since(since).await {
                if self.tx.send(AccountEvent::Funding(payment)).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// Funding payments since `since_ms`, all symbols (a cross-margin funding event names
    /// none), read as the router reads them.
    async fn funding_since(&self, since_ms: u64) -> Vec<crate::routing::FundingPayment> {
        match super::router::funding_all(&self.rest, since_ms, &*self.signer).await {
            Ok(payments) => payments,
            Err(err) => {
                tracing::warn!(venue = "binance_futures", error = %err, "funding not read after a funding event");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str =
        include_str!("../../../testkit/fixtures/binance_futures/user_stream.jsonl");

    fn fixture(kind: &str) -> &'static str {
        FIXTURES.lines().find(|l| l.contains(kind)).unwrap()
    }

    #[test]
    fn the_documented_events_are_read() {
        let Frame::Order { update, .. } = parse_frame(fixture("ORDER_TRADE_UPDATE")).unwrap()
        else {
            panic!("not an order update");
        };
        assert_eq!(
            (update.symbol.as_str(), update.report.client_order_id.as_str()),
            ("BTCUSDT", "TEST")
        );
        assert_eq!(update.report.status, "NEW");
        assert!(update.report.fills.is_empty());
        assert_eq!(update.trade_id, None);
        let Frame::Account { reason, positions, .. } =
            parse_frame(fixture("ACCOUNT_UPDATE")).unwrap()
        else {
            panic!("not an account update");
        };
        assert_eq!(reason, "ORDER");
        // The sample's LONG and SHORT entries are hedge mode's: only the one-way entry is read.
        assert_eq!(positions.len(), 1);
        assert_eq!(positions[0].margin_type, Some(keel_core::bot::MarginType::Isolated));
        assert_eq!(parse_frame(fixture("listenKeyExpired")).unwrap(), Frame::Expired);
        assert!(parse_frame("not json").is_err());
        assert!(parse_frame(r#"{"e":"ORDER_TRADE_UPDATE","E":1}"#).is_err());
        assert_eq!(
            parse_frame(r#"{"e":"MARGIN_CALL"}"#).unwrap(),
            Frame::Ignored("MARGIN_CALL".into())
        );
    }

    #[test]
    fn a_trade_carries_its_fill_commission_and_trade_id() {
        let text = r#"{"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465650,"o":{"s":"BTCUSDT","c":"keel-7-000001","S":"SELL","o":"MARKET","f":"GTC","q":"0.010","p":"0","ap":"50000","sp":"0","x":"TRADE","X":"PARTIALLY_FILLED","i":8886774,"l":"0.004","z":"0.004","L":"50000","N":"USDT","n":"0.08","T":1568879465650,"t":12345,"b":"0","a":"0","m":false,"R":false,"wt":"CONTRACT_PRICE","ot":"MARKET","ps":"BOTH","cp":false,"rp":"0","pP":false,"si":0,"ss":0,"V":"EXPIRE_TAKER","pm":"NONE","gtd":0}}"#;
        let Frame::Order { update, order_id } = parse_frame(text).unwrap() else {
            panic!("not an order")
        };
        assert_eq!(order_id, 8_886_774);
        assert_eq!(update.trade_id, Some(12_345));
        assert_eq!(update.report.cum_quote, Decimal::from(200));
        let fill = &update.report.fills[0];
        assert_eq!(
            (fill.qty, fill.fee, fill.fee_asset.as_str()),
            (Decimal::new(4, 3), Decimal::new(8, 2), "USDT")
        );
    }

    #[test]
    fn the_documented_algo_update_is_read_as_its_legs_order_update() {
        let Frame::Algo { update, actual_order } = parse_frame(fixture("ALGO_UPDATE")).unwrap()
        else {
            panic!("not an algo update")
        };
        assert_eq!(update.report.client_order_id, "Q5xaq5EGKgXXa0fD7fs0Ip");
        assert_eq!(
            (update.symbol.as_str(), update.report.status.as_str()),
            ("BNBUSDT", "CANCELED")
        );
        assert_eq!((actual_order, update.trade_id), (None, None));
    }

    #[test]
    fn a_finished_stop_names_its_market_order_and_what_it_executed() {
        let text = r#"{"e":"ALGO_UPDATE","T":1,"E":2,"o":{"caid":"keel-7-000019","aid":5,"at":"CONDITIONAL","o":"STOP_MARKET","s":"BTCUSDT","S":"SELL","ps":"BOTH","f":"GTC","q":"0.5","X":"FINISHED","ai":"8389765012","ap":"95","aq":"0.5","act":"MARKET","tp":"95","p":"0","V":"EXPIRE_MAKER","wt":"CONTRACT_PRICE","pm":"NONE","cp":false,"pP":false,"R":true,"tt":1,"gtd":0,"rm":""}}"#;
        let Frame::Algo { update, actual_order } = parse_frame(text).unwrap() else {
            panic!("not an algo update")
        };
        assert_eq!(actual_order, Some(8_389_765_012));
        assert_eq!(update.report.status, "FILLED");
        assert_eq!(update.report.executed_qty, Decimal::new(5, 1));
        assert_eq!(update.report.cum_quote, Decimal::new(475, 1));
        assert!(update.report.fills.is_empty());
        let unknown = text.replace("FINISHED", "SOMETHING_ELSE");
        assert!(parse_frame(&unknown).is_err());
    }
}
