//! One combined-stream WebSocket connection to Binance, kept alive.
//!
//! A connection task owns the socket. The feed tells it which streams it wants
//! ([`Command`]); it connects, subscribes, answers pings, and sends back parsed events and its
//! state changes ([`Output`]). It reconnects by itself:
//! - on a dropped or refused connection, with exponential backoff and full jitter, the attempt
//!   counter reset once a connection has stayed healthy for a while;
//! - on `serverShutdown`, and before Binance's 24 h cut-off;
//! - when a subscribed stream has been silent for too long (stale), or the server has sent no
//!   frame at all (not even a pong) for too long.
//!
//! After every reconnect it re-subscribes everything and reports a [`Output::Gap`], so strategies
//! know data was missed. Connection attempts share a venue-wide budget (Binance allows 300 per
//! 5 minutes per IP), and outgoing messages are paced under Binance's per-connection limit.

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

use super::parse::{Inbound, MAX_FRAME_BYTES, SymbolCache, parse_with};
use super::streams::{self, subscribe_request, unsubscribe_request};
use crate::now_us;
use keel_core::market::{MarketEvent, VenueId};

/// Streams per `SUBSCRIBE` message; Binance accepts long lists, but small ones keep each
/// message well under frame limits.
const STREAMS_PER_REQUEST: usize = 200;
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

/// Tunables of a connection; [`ConnectionConfig::for_venue`] gives Binance's.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// The venue (decides the parser and limits).
    pub venue: VenueId,
    /// Combined-stream endpoint, e.g. `wss://stream.binance.com:9443/stream`.
    pub ws_url: String,
    /// Messages per second the connection may send.
    pub max_outgoing_per_sec: u32,
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

impl ConnectionConfig {
    /// Binance's documented limits and sensible margins for `venue` at `ws_url`.
    pub fn for_venue(venue: VenueId, ws_url: String) -> Self {
        Self {
            venue,
            ws_url,
            max_outgoing_per_sec: streams::max_incoming_msgs_per_sec(venue).unwrap_or(5),
            stale_after: Duration::from_secs(60),
            silence_timeout: Duration::from_secs(90),
            ping_every: Duration::from_secs(30),
            max_life: streams::CONNECTION_LIFETIME - Duration::from_secs(15 * 60),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// The venue-wide budget of connection attempts: never more than Binance's 300 per 5 minutes.
///
/// GCRA allows `burst` at once plus one per period after, so over any 5-minute window at most
/// `burst + 300 s / period` attempts happen: 60 + 240 = 300.
pub fn connection_budget() -> Arc<DefaultDirectRateLimiter> {
    let quota = Quota::with_period(Duration::from_millis(1_250))
        .map(|q| q.allow_burst(NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN)))
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
    config: ConnectionConfig,
    wanted: BTreeSet<String>,
    commands: mpsc::Receiver<Command>,
    output: mpsc::Sender<Output>,
    next_request_id: u64,
    last_error_log: Option<Instant>,
    symbols: SymbolCache,
}

/// Starts connection number `index` of a venue. It runs until `commands` is closed.
pub fn spawn(
    index: usize,
    config: ConnectionConfig,
    budget: Arc<DefaultDirectRateLimiter>,
    commands: mpsc::Receiver<Command>,
    output: mpsc::Sender<Output>,
) -> tokio::task::JoinHandle<()> {
    let connection = Connection {
        index,
        config,
        wanted: BTreeSet::new(),
        commands,
        output,
        next_request_id: 1,
        last_error_log: None,
        symbols: SymbolCache::default(),
    };
    tokio::spawn(connection.run(budget))
}

impl Connection {
    fn venue(&self) -> &'static str {
        self.config.venue.as_str()
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
                Some(ws_config()),
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
        for chunk in all.chunks(STREAMS_PER_REQUEST) {
            pace.until_ready().await;
            let request = subscribe_request(self.request_id(), chunk);
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
                            subscribe_request(self.request_id(), names)
                        }
                        Command::Unsubscribe(names) => {
                            for name in names {
                                last_seen.remove(name);
                            }
                            unsubscribe_request(self.request_id(), names)
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
                        if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                            return Ended::Reconnect("ping failed".into());
                        }
                    }
                }
            }
        }
    }

    /// Handles one text frame; `Some` ends the connection.
    async fn on_text(
        &mut self,
        text: &str,
        last_seen: &mut HashMap<String, Instant>,
    ) -> Option<Ended> {
        match parse_with(self.config.venue, text, now_us(), &mut self.symbols) {
            Ok(Inbound::Event(event)) => {
                if let Some(name) = event
                    .stream_kind()
                    .and_then(|kind| streams::stream_name(self.config.venue, &event.symbol, kind))
                    && let Some(seen) = last_seen.get_mut(&name)
                {
                    *seen = Instant::now();
                }
                if self.output.send(Output::Event(event)).await.is_err() {
                    return Some(Ended::Shutdown);
                }
            }
            Ok(Inbound::Ack { .. }) => {}
            Ok(Inbound::Error { code, msg, id }) => {
                self.count_error("request_rejected");
                tracing::warn!(venue = self.venue(), code, %msg, ?id, "Binance rejected a request");
            }
            Ok(Inbound::ServerShutdown) => return Some(Ended::Reconnect("serverShutdown".into())),
            Err(err) => {
                self.count_error(err.reason());
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

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
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
