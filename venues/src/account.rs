//! The account half of the venue seam: what a venue pushes about one exchange account (order
//! executions and balances), as an [`AccountStream`] a router opens once per account.
//!
//! A live bot does not need a stream to trade: its router's queries tell it everything, only
//! later. An account stream makes that real time, and the runtime keeps polling as the fallback
//! while the stream is down ([`AccountEvent::Disconnected`]) and reconciles every open order when
//! it is back ([`AccountEvent::Connected`]), since nothing the venue sent meanwhile is replayed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::connection::{ConnectionConfig, backoff};
use crate::routing::{Balance, FundingPayment, OrderReport, VenuePosition};

/// Signs a payload for as long as the stream lives: the vault's `Sign`, owned (a stream task
/// outlives any one request), answering `(api_key, signature)`.
pub type OwnedSigner =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<(String, String), String>> + Send + Sync>;

/// How many events may wait for the runtime before the stream task waits too.
pub const ACCOUNT_EVENTS_BUFFER: usize = 1024;

/// What the venue said about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    /// Subscribed: events flow from now on. Whatever happened before (or while disconnected)
    /// was not pushed: reconcile open orders and read balances now.
    Connected,
    /// The stream is down (and reconnecting, with backoff): poll meanwhile.
    Disconnected(String),
    /// An order changed (placed, traded, canceled, expired, rejected).
    Order(OrderUpdate),
    /// The free and locked amounts of the listed assets, as they are now (Binance's
    /// `outboundAccountPosition`: the assets an event may have changed).
    Balances(Vec<Balance>),
    /// A deposit, withdrawal or transfer moved `delta` of `asset` in or out (Binance's
    /// `balanceUpdate`); the free amount changes by it.
    BalanceDelta {
        /// The asset.
        asset: String,
        /// Signed change.
        delta: Decimal,
    },
    /// A derivatives position changed (Binance futures' `ACCOUNT_UPDATE`, Bybit's `position`):
    /// its state as it is now.
    Position(VenuePosition),
    /// A funding payment was made or received on a perpetual position.
    Funding(FundingPayment),
}

/// One order's change, as the stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderUpdate {
    /// The symbol, in the venue's spelling (`BTCUSDT`).
    pub symbol: String,
    /// The order's state: our client order id (for a cancel, the canceled order's, not the
    /// cancel request's), status and cumulative execution, and the execution this update
    /// reports, if it reports one (with its commission).
    pub report: OrderReport,
    /// The venue's id of the trade this update reports, if it reports one.
    pub trade_id: Option<u64>,
    /// When the venue made the change, ms.
    pub event_ms: u64,
}

/// A running account stream: its events, and the task behind them (stopped when the
/// [`TaskGuard`] is dropped).
#[derive(Debug)]
pub struct AccountStream {
    /// What the venue pushes, in order.
    pub events: mpsc::Receiver<AccountEvent>,
    /// Stops the task when dropped.
    pub guard: TaskGuard,
}

/// Aborts its task when dropped.
#[derive(Debug)]
pub struct TaskGuard(pub tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An account stream's WebSocket.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens an account stream's WebSocket to `url` within `timeout`, its frames capped as
/// `connection` says.
///
/// # Errors
/// Why it could not connect, for [`Ended`].
pub async fn open_socket(
    url: &str,
    connection: &ConnectionConfig,
    timeout: Duration,
) -> Result<Socket, String> {
    let ws = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(connection.max_frame_bytes))
        .max_frame_size(Some(connection.max_frame_bytes));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws), false);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(err)) => Err(format!("connect failed: {err}")),
        Err(_) => Err("connect timed out".to_owned()),
    }
}

/// What one item of an account stream's socket asks of its reader ([`incoming`]).
#[derive(Debug)]
pub enum Incoming {
    /// A text frame, to parse.
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// Nothing to read: a ping (answered) or a frame of no interest.
    Skip,
    /// The connection ended, for this reason.
    Ended(String),
}

/// Takes the socket's next item: answers a ping with its pong, and tells a text frame from a
/// frame to skip and from the connection's end (closed, failed, or a pong that could not go).
pub async fn incoming<S>(item: Option<Result<Message, WsError>>, sink: &mut S) -> Incoming
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    match item {
        None | Some(Ok(Message::Close(_))) => Incoming::Ended("closed by the server".into()),
        Some(Err(err)) => Incoming::Ended(format!("connection closed: {err}")),
        Some(Ok(Message::Text(text))) => Incoming::Text(text),
        Some(Ok(Message::Ping(payload))) => match sink.send(Message::Pong(payload)).await {
            Ok(()) => Incoming::Skip,
            Err(_) => Incoming::Ended("pong not sent".into()),
        },
        Some(Ok(_)) => Incoming::Skip,
    }
}

/// How one connection of an account stream ended.
#[derive(Debug)]
pub struct Ended {
    /// Why, for the log and [`AccountEvent::Disconnected`].
    pub reason: String,
    /// When it was subscribed, if it got that far (a connection that stayed up long enough
    /// starts the backoff over).
    pub subscribed_at: Option<Instant>,
    /// The least wait before the next attempt (a venue's `retryAfter` on a ban).
    pub at_least: Duration,
}

impl Ended {
    /// A connection that ended before it was subscribed.
    pub fn early(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), subscribed_at: None, at_least: Duration::ZERO }
    }

    /// A connection subscribed at `subscribed_at` that ended for `reason`.
    pub fn after(reason: impl Into<String>, subscribed_at: Instant) -> Self {
        Self { reason: reason.into(), subscribed_at: Some(subscribed_at), at_least: Duration::ZERO }
    }
}

/// One account stream's connection: what [`keep_connected`] runs again and again.
pub trait Reconnecting: Send {
    /// Connects, subscribes, and forwards the venue's events until the connection ends.
    fn connect_once(&mut self) -> impl Future<Output = Ended> + Send;
}

/// Starts an account stream: the connection `make` builds around the events' sender, kept up by
/// [`keep_connected`] in its own task.
pub fn spawn_stream<S: Reconnecting + 'static>(
    venue: &'static str,
    connection: ConnectionConfig,
    make: impl FnOnce(mpsc::Sender<AccountEvent>) -> S,
) -> AccountStream {
    crate::tls::install_crypto_provider();
    let (tx, events) = mpsc::channel(ACCOUNT_EVENTS_BUFFER);
    let stream = make(tx.clone());
    let task = tokio::spawn(keep_connected(venue, tx, connection, stream));
    AccountStream { events, guard: TaskGuard(task) }
}

/// Keeps an account stream connected for as long as the runtime reads it: runs one connection
/// of `stream` to its end again and again, reports each end as [`AccountEvent::Disconnected`],
/// and waits with full-jitter backoff before the next, starting over after a connection that
/// stayed subscribed `healthy_after`. Returns when the receiver is gone.
pub async fn keep_connected(
    venue: &'static str,
    tx: mpsc::Sender<AccountEvent>,
    connection: ConnectionConfig,
    mut stream: impl Reconnecting,
) {
    let mut attempt: u32 = 0;
    loop {
        let ended = stream.connect_once().await;
        if tx.is_closed() {
            return;
        }
        metrics::counter!("keel_user_stream_disconnects_total", "venue" => venue).increment(1);
        tracing::info!(venue, reason = %ended.reason, "account stream down");
        if tx.send(AccountEvent::Disconnected(ended.reason)).await.is_err() {
            return;
        }
        if ended.subscribed_at.is_some_and(|at| at.elapsed() >= connection.healthy_after) {
            attempt = 0;
        }
        let wait = backoff(&connection, attempt).max(ended.at_least);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(wait).await;
    }
}
