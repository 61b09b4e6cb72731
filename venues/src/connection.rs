//! One market-stream WebSocket connection to a venue, kept alive: the generic driver every
//! upstream [`MarketConnector`] plugs into.
//!
//! A connection task owns the socket. The feed tells it which streams it wants
//! ([`Command`]); it connects, subscribes, answers pings, and sends back parsed events and its
//! state changes ([`Output`]). What it says and how it reads frames is the connector's
//! business; when and how it reconnects is this module's, tuned by [`ConnectionConfig`]:
//! - on a dropped or refused connection, with exponential backoff and full jitter, the attempt
//!   counter reset once a connection has stayed healthy for a while;
//! - on a server shutdown notice, and before the venue's connection cut-off;
//! - when a subscribed stream has been silent for too long (stale), or the server has sent no
//!   frame at all (not even a pong) for too long.
//!
//! After every reconnect it re-subscribes everything and reports a [`Output::Gap`], so strategies
//! know data was missed. Connection attempts share a venue-wide budget
//! ([`connection_budget`]), and outgoing messages are paced under the venue's per-connection
//! limit.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::market::{FrameParser, Inbound, MarketConnector};
use crate::now_us;
use keel_core::market::MarketEvent;

/// How long a TCP + TLS + WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Feed errors are logged at debug level at most this often per connection.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(5);

/// What the feed tells a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start these streams.
    Subscribe(Vec<String>),
    /// Stop these streams.
    Unsubscribe(Vec<String>),
}

/// What a connection tells the feed.
#[derive(Debug)]
pub enum Output {
    /// Market data.
    Event(MarketEvent),
    /// Connected and (re)subscribed.
    Connected {
        /// Which connection.
        connection: usize,
    },
    /// Lost the connection; it is reconnecting.
    Disconnected {
        /// Which connection.
        connection: usize,
        /// Why.
        reason: String,
    },
    /// Reconnected after a loss: data may have been missed on these streams.
    Gap {
        /// The streams that were subscribed across the loss.
        streams: Vec<String>,
        /// Why the connection was lost.
        reason: String,
    },
}

/// Where a venue's market streams are, its limits, and the reconnect policy: what
/// [`MarketConnector::connection`] gives (tests shorten the timings).
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Market-stream endpoint, e.g. `wss://stream.binance.com:9443/stream`.
    pub ws_url: String,
    /// Messages per second the connection may send.
    pub max_outgoing_per_sec: u32,
    /// Most streams one connection may carry; the feed opens another past it.
    pub max_streams: usize,
    /// Most connection attempts per IP within [`connect_window`](Self::connect_window).
    pub max_connects: u32,
    /// The window [`max_connects`](Self::max_connects) counts over.
    pub connect_window: Duration,
    /// Largest frame (and message) read; a bigger one breaks the connection.
    pub max_frame_bytes: usize,
    /// A subscribed stream with no data for this long is stale: reconnect.
    pub stale_after: Duration,
    /// No frame at all (data, ping, pong) for this long: the connection is dead.
    pub silence_timeout: Duration,
    /// How often to ping the server ourselves, to detect a dead one.
    pub ping_every: Duration,
    /// Reconnect before the server's cut-off.
    pub max_life: Duration,
    /// First backoff ceiling.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// Connected this long counts as healthy: the backoff starts over.
    pub healthy_after: Duration,
}

/// The venue-wide budget of connection attempts: never more than `config.max_connects` per
/// `config.connect_window`.
///
/// GCRA allows `burst` at once plus one per period after, so over any window at most
/// `burst + window / period` attempts happen. A fifth of the allowance is the burst: for
/// Binance's 300 per 5 minutes, 60 at once and one per 1.25 s after (60 + 240 = 300).
pub fn connection_budget(config: &ConnectionConfig) -> Arc<DefaultDirectRateLimiter> {
    let max = config.max_connects.max(2);
    let burst = (max / 5).max(1);
    let period = config.connect_window / (max - burst);
    let quota = Quota::with_period(period)
        .map(|q| q.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
    Arc::new(RateLimiter::direct(quota))
}

/// Full-jitter backoff: a random wait between zero and `min(cap, base × 2^attempt)`.
pub fn backoff(config: &ConnectionConfig, attempt: u32) -> Duration {
    let ceiling =
        config.backoff_base.saturating_mul(1u32 << attempt.min(16)).min(config.backoff_cap);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Why a live connection ended.
enum Ended {
    /// The feed dropped its command channel: stop for good.
    Shutdown,
    /// Reconnect, for this reason.
    Reconnect(String),
}

struct Connection {
    index: usize,
    venue: &'static str,
    market: Arc<dyn MarketConnector>,
    config: ConnectionConfig,
    wanted: BTreeSet<String>,
    commands: mpsc::Receiver<Command>,
    output: mpsc::Sender<Output>,
    next_request_id: u64,
    last_error_log: Option<Instant>,
    parser: Box<dyn FrameParser>,
}

/// Starts connection number `index` of `market`'s venue. It runs until `commands` is closed.
pub fn spawn(
    index: usize,
    market: Arc<dyn MarketConnector>,
    config: ConnectionConfig,
    budget: Arc<DefaultDirectRateLimiter>,
    commands: mpsc::Receiver<Command>,
    output: mpsc::Sender<Output>,
) -> tokio::task::JoinHandle<()> {
    let connection = Connection {
        index,
        venue: market.venue().as_str(),
        parser: market.parser(),
        market,
        config,
        wanted: BTreeSet::new(),
        commands,
        output,
        next_request_id: 1,
        last_error_log: None,
    };
    tokio::spawn(connection.run(budget))
}

impl Connection {
    fn venue(&self) -> &'static str {
        self.venue
    }

    async fn run(mut self, budget: Arc<DefaultDirectRateLimiter>) {
        crate::tls::install_crypto_provider();
        let mut attempt: u32 = 0;
        let mut lost: Option<String> = None;
        loop {
            // Take commands that arrived while disconnected, so the first SUBSCRIBE is complete.
            while let Ok(command) = self.commands.try_recv() {
                self.apply(&command);
            }
            budget.until_ready().await;
            metrics::counter!("keel_feed_connect_attempts_total", "venue" => self.venue())
                .increment(1);
            let connect = tokio_tungstenite::connect_async_with_config(
                self.config.ws_url.as_str(),
                Some(ws_config(self.config.max_frame_bytes)),
                false,
            );
            let socket = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok((socket, _response))) => socket,
                Ok(Err(err)) => {
                    self.wait_before_retry(&mut attempt, format!("connect failed: {err}")).await;
                    if self.commands.is_closed() {
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    self.wait_before_retry(&mut attempt, "connect timed out".into()).await;
                    continue;
                }
            };
            let connected_at = Instant::now();
            if let Some(reason) = lost.take() {
                metrics::counter!("keel_feed_reconnects_total", "venue" => self.venue())
                    .increment(1);
                let streams = self.wanted.iter().cloned().collect();
                let _ = self.output.send(Output::Gap { streams, reason }).await;
            }
            let _ = self.output.send(Output::Connected { connection: self.index }).await;
            let ended = self.serve(socket, connected_at).await;
            match ended {
                Ended::Shutdown => return,
                Ended::Reconnect(reason) => {
                    tracing::info!(venue = self.venue(), connection = self.index, %reason, "reconnecting");
                    let _ = self
                        .output
                        .send(Output::Disconnected {
                            connection: self.index,
                            reason: reason.clone(),
                        })
                        .await;
                    if connected_at.elapsed() >= self.config.healthy_after {
                        attempt = 0;
                    }
                    lost = Some(reason.clone());
                    self.wait_before_retry(&mut attempt, reason).await;
                }
            }
        }
    }

    async fn wait_before_retry(&mut self, attempt: &mut u32, reason: String) {
        let wait = backoff(&self.config, *attempt);
        *attempt = attempt.saturating_add(1);
        tracing::debug!(venue = self.venue(), connection = self.index, %reason, ?wait, "connection down");
        let until = tokio::time::Instant::now() + wait;
        // Keep taking commands while waiting, so the wanted set is current on reconnect.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                command = self.commands.recv() => match command {
                    Some(command) => self.apply(&command),
                    None => return,
                },
            }
        }
    }

    fn apply(&mut self, command: &Command) {
        match command {
            Command::Subscribe(names) => self.wanted.extend(names.iter().cloned()),
            Command::Unsubscribe(names) => {
                for name in names {
                    self.wanted.remove(name);
                }
            }
        }
    }

    async fn serve<S>(&mut self, socket: S, connected_at: Instant) -> Ended
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
            + Unpin,
    {
        let (mut sink, mut stream) = socket.split();
        let pace = RateLimiter::direct(Quota::per_second(
            NonZeroU32::new(self.config.max_outgoing_per_sec).unwrap_or(NonZeroU32::MIN),
        ));
        let all: Vec<String> = self.wanted.iter().cloned().collect();
        for chunk in all.chunks(self.market.streams_per_request()) {
            pace.until_ready().await;
            let id = self.request_id();
            let request = self.market.subscribe_request(id, chunk);
            if let Err(err) = sink.send(Message::text(request)).await {
                return Ended::Reconnect(format!("subscribe failed: {err}"));
            }
        }
        let mut last_frame = Instant::now();
        let mut last_seen: HashMap<String, Instant> =
            self.wanted.iter().map(|s| (s.clone(), Instant::now())).collect();
        let mut housekeeping =
            tokio::time::interval(Duration::from_millis(250).min(self.config.stale_after / 2));
        let mut last_ping = Instant::now();
        loop {
            tokio::select! {
                frame = stream.next() => {
                    let Some(frame) = frame else { return Ended::Reconnect("closed by the server".into()) };
                    last_frame = Instant::now();
                    match frame {
                        Ok(Message::Text(text)) => {
                            if let Some(ended) = self.on_text(text.as_str(), &mut last_seen).await {
                                return ended;
                            }
                        }
                        Ok(Message::Ping(payload)) => {
                            if sink.send(Message::Pong(payload)).await.is_err() {
                                return Ended::Reconnect("pong failed".into());
                            }
                        }
                        Ok(Message::Close(frame)) => {
                            return Ended::Reconnect(format!("closed by the server: {frame:?}"));
                        }
                        Ok(Message::Binary(_)) => self.count_error("binary"),
                        Ok(Message::Pong(_) | Message::Frame(_)) => {}
                        Err(err) => {
                            // Invalid UTF-8, an oversized frame, a protocol violation: the socket
                            // cannot be trusted any more. Count it and start afresh.
                            self.count_error(error_reason(&err));
                            return Ended::Reconnect(format!("read failed: {err}"));
                        }
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else {
                        let _ = sink.close().await;
                        return Ended::Shutdown;
                    };
                    self.apply(&command);
                    let request = match &command {
                        Command::Subscribe(names) => {
                            for name in names {
                                last_seen.insert(name.clone(), Instant::now());
                            }
                            let id = self.request_id();
                            self.market.subscribe_request(id, names)
                        }
                        Command::Unsubscribe(names) => {
                            for name in names {
                                last_seen.remove(name);
                            }
                            let id = self.request_id();
                            self.market.unsubscribe_request(id, names)
                        }
                    };
                    pace.until_ready().await;
                    if let Err(err) = sink.send(Message::text(request)).await {
                        return Ended::Reconnect(format!("send failed: {err}"));
                    }
                }
                _ = housekeeping.tick() => {
                    let now = Instant::now();
                    if now.duration_since(last_frame) > self.config.silence_timeout {
                        return Ended::Reconnect("the server went silent".into());
                    }
                    if let Some((stream, _)) = last_seen.iter().find(|(_, t)| now.duration_since(**t) > self.config.stale_after) {
                        metrics::counter!("keel_feed_stale_total", "venue" => self.venue()).increment(1);
                        return Ended::Reconnect(format!("stream {stream} is stale"));
                    }
                    if connected_at.elapsed() > self.config.max_life {
                        return Ended::Reconnect("connection lifetime reached".into());
                    }
                    if now.duration_since(last_ping) >= self.config.ping_every {
                        last_ping = now;
                        let id = self.next_request_id;
                        let ping = match self.market.heartbeat(id) {
                            Some(text) => {
                                self.next_request_id += 1;
                                Message::Text(text.into())
                            }
                            None => Message::Ping(Vec::new().into()),
                        };
                        if sink.send(ping).await.is_err() {
                            return Ended::Reconnect("ping failed".into());
                        }
                    }
                }
            }
        }
    }

    /// Sends one event on to the feed, marking its stream as alive; `Some` ends the connection.
    async fn forward(
        &mut self,
        event: MarketEvent,
        last_seen: &mut HashMap<String, Instant>,
    ) -> Option<Ended> {
        if let Some(name) =
            event.stream_kind().and_then(|kind| self.market.stream_name(&event.symbol, kind))
            && let Some(seen) = last_seen.get_mut(&name)
        {
            *seen = Instant::now();
        }
        if self.output.send(Output::Event(event)).await.is_err() {
            return Some(Ended::Shutdown);
        }
        None
    }

    /// Handles one text frame; `Some` ends the connection.
    async fn on_text(
        &mut self,
        text: &str,
        last_seen: &mut HashMap<String, Instant>,
    ) -> Option<Ended> {
        match self.parser.parse(text, now_us()) {
            Ok(Inbound::Event(event)) => return self.forward(event, last_seen).await,
            Ok(Inbound::Events(events)) => {
                for event in events {
                    if let Some(ended) = self.forward(event, last_seen).await {
                        return Some(ended);
                    }
                }
            }
            Ok(Inbound::Ack { .. }) => {}
            Ok(Inbound::Error { code, msg, id }) => {
                self.count_error("request_rejected");
                tracing::warn!(venue = self.venue(), code, %msg, ?id, "the venue rejected a request");
            }
            Ok(Inbound::ServerShutdown) => return Some(Ended::Reconnect("serverShutdown".into())),
            Err(err) => {
                self.count_error(err.reason);
                let now = Instant::now();
                if self.last_error_log.is_none_or(|t| now.duration_since(t) > ERROR_LOG_EVERY) {
                    self.last_error_log = Some(now);
                    let sample: String = text.chars().take(200).collect();
                    tracing::debug!(venue = self.venue(), error = %err, %sample, "unusable frame");
                }
            }
        }
        None
    }

    fn count_error(&self, reason: &'static str) {
        metrics::counter!("keel_feed_errors_total", "venue" => self.venue(), "reason" => reason)
            .increment(1);
    }

    fn request_id(&mut self) -> u64 {
        self.next_request_id += 1;
        self.next_request_id
    }
}

fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

fn error_reason(err: &tokio_tungstenite::tungstenite::Error) -> &'static str {
    use tokio_tungstenite::tungstenite::Error as E;
    match err {
        E::Utf8(_) => "invalid_utf8",
        E::Capacity(_) => "too_large",
        E::Protocol(_) => "protocol",
        _ => "io",
    }
}
