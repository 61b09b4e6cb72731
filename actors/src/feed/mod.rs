//! Feed actors: one per venue, holding its market-data source and fanning events out.
//!
//! Subscriptions are reference-counted per stream (symbol × kind): the source produces a stream
//! only while someone wants it. Every event is delivered with `try_send` into each subscriber's
//! bounded mailbox, so the feed never waits for a subscriber. A subscriber whose mailbox is full
//! gets the latest quote conflated (delivered on the next tick); a trade it cannot take is dropped
//! and counted in `keel_feed_dropped_total`. The feed also keeps per-symbol state (last trade,
//! best bid/ask, rolling candles) for the market endpoints, subscribing on demand and keeping a
//! symbol warm for a while after the last request.
//!
//! With a [`Recorder`] configured, every event the feed handles is also queued for recording
//! (never waited on: see [`crate::record`]). The sim venue can replay a file instead of its
//! random walk ([`replay`]), losslessly and deterministically.

mod replay;
mod state;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
pub use replay::{ReplayConfig, ReplayStatus};
use serde::Serialize;
pub use state::{BestQuote, LastTrade, SymbolState};

use crate::fanout::Subscribers;
use crate::mailbox::{Ask, Query, Replier};
use crate::record::Recorder;
use crate::supervisor::{AddressSlot, ChildHandle, ChildSpec, Lifeline, StartError, Stop};
use keel_core::market::{Candle, EventKind, Interval, MarketEvent, StreamKind, Symbol, VenueId};
use keel_venues::binance::connection::{self, Command, ConnectionConfig, Output};
use keel_venues::binance::streams::{self as binance_streams, MAX_STREAMS_PER_CONNECTION};
use keel_venues::now_us;
use keel_venues::sim::{Instrument, SimMarket};

/// How often the feed runs its housekeeping: sim generation, conflated deliveries, waiters.
const TICK: Duration = Duration::from_millis(10);
/// The default of the feed's own mailbox (`mailboxes.feed`): control messages only (events come
/// from its source).
pub const DEFAULT_MAILBOX: usize = 4096;
/// Events buffered between the venue's connections and the feed.
const SOURCE_BUFFER: usize = 65_536;
/// Commands buffered per connection.
const COMMAND_BUFFER: usize = 4_096;

/// A market event delivered to a subscriber. Cloning shares the event.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct MarketData(pub Arc<MarketEvent>);

/// Who subscribed (a bot id, a client connection id); unique per feed.
pub type SubscriberId = u64;

/// Why the feed refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The venue does not list this symbol.
    #[error("{venue} has no symbol {symbol}")]
    UnknownSymbol {
        /// Venue.
        venue: VenueId,
        /// Symbol.
        symbol: String,
    },
    /// The venue does not offer this kind of stream.
    #[error("{venue} has no {kind} stream")]
    Unsupported {
        /// Venue.
        venue: VenueId,
        /// Stream kind.
        kind: &'static str,
    },
    /// Nothing arrived within the wait.
    #[error("no market data for {symbol} on {venue} yet")]
    NoData {
        /// Venue.
        venue: VenueId,
        /// Symbol.
        symbol: String,
    },
}

/// Configuration of a simulated feed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Symbols it simulates.
    pub symbols: Vec<Symbol>,
    /// Seed of the random walk.
    pub seed: u64,
    /// Trades per second per active symbol.
    pub trades_per_sec: u32,
    /// Replay this file instead of the random walk.
    pub replay: Option<ReplayConfig>,
}

/// Configuration common to every feed.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Which venue.
    pub venue: VenueId,
    /// How long a symbol stays tracked after the last market request.
    pub warm_for: Duration,
    /// How long a market request waits for the first data.
    pub first_data_wait: Duration,
    /// The simulated market, for `VenueId::Sim`.
    pub sim: Option<SimConfig>,
    /// The Binance connection settings, for `binance` and `binance_futures`.
    pub binance: Option<ConnectionConfig>,
    /// The venue's REST endpoint, for its instrument rules (exchange info).
    pub rest_url: Option<String>,
    /// Where events are recorded, when recording is on.
    pub recorder: Option<Recorder>,
    /// Capacity of the feed's mailbox (subscriptions and market requests).
    pub mailbox: usize,
}

/// How often a venue's instrument rules are reloaded.
const EXCHANGE_INFO_REFRESH: Duration = Duration::from_secs(3600);
/// How soon a failed load is retried.
const EXCHANGE_INFO_RETRY: Duration = Duration::from_secs(30);

/// Subscribe `recipient` to one stream.
pub struct Subscribe {
    /// Symbol.
    pub symbol: Symbol,
    /// Stream kind.
    pub kind: StreamKind,
    /// Subscriber id (unsubscribe with the same).
    pub subscriber: SubscriberId,
    /// Where events go.
    pub recipient: Recipient<MarketData>,
}

impl fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subscribe({} {} by {})", self.symbol, self.kind.as_str(), self.subscriber)
    }
}

impl Query for Subscribe {
    type Answer = Result<(), FeedError>;
}

/// Stop delivering one stream to a subscriber.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// Symbol.
    pub symbol: Symbol,
    /// Stream kind.
    pub kind: StreamKind,
    /// Subscriber id.
    pub subscriber: SubscriberId,
}

/// The trading rules (tick, step, minimums) of one symbol.
#[derive(Debug, Clone)]
pub struct GetInstrument {
    /// Symbol.
    pub symbol: Symbol,
}
impl Query for GetInstrument {
    type Answer = Result<keel_core::trading::InstrumentFilters, InstrumentError>;
}

/// Why a symbol's rules are not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    /// The venue does not list the symbol.
    #[error("unknown symbol")]
    UnknownSymbol,
    /// The venue's rules are not loaded (its REST endpoint is unreachable).
    #[error("instrument rules unavailable")]
    Unavailable,
}

/// Last trade and best bid/ask of a symbol.
#[derive(Debug, Clone)]
pub struct GetTicker {
    /// Symbol.
    pub symbol: Symbol,
}
impl Query for GetTicker {
    type Answer = Result<Ticker, FeedError>;
}

/// A symbol's ticker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ticker {
    /// Venue.
    pub venue: VenueId,
    /// Symbol.
    pub symbol: Symbol,
    /// Last trade.
    pub last_trade: Option<LastTrade>,
    /// Best bid/ask.
    pub quote: Option<BestQuote>,
}

/// Rolling candles of a symbol.
#[derive(Debug, Clone)]
pub struct GetCandles {
    /// Symbol.
    pub symbol: Symbol,
    /// Interval.
    pub interval: Interval,
    /// How many, newest last.
    pub limit: usize,
}
impl Query for GetCandles {
    type Answer = Result<Vec<Candle>, FeedError>;
}

/// The venue's health.
#[derive(Debug, Clone, Copy)]
pub struct GetVenueStatus;
impl Query for GetVenueStatus {
    type Answer = VenueStatus;
}

/// Connection state of a venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Connectivity {
    /// Receiving data.
    Connected,
    /// Connected but some streams are stale or reconnecting.
    Degraded,
    /// No connection.
    Down,
}

/// What `GET /venues` shows for one venue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VenueStatus {
    /// Venue.
    pub venue: VenueId,
    /// State.
    pub state: Connectivity,
    /// Active streams (`market:sim:BTCUSDT:trades`).
    pub streams: Vec<String>,
    /// Milliseconds since the last message, if any arrived.
    pub last_message_age_ms: Option<u64>,
    /// Subscriptions across all streams.
    pub subscribers: usize,
    /// Where the replay is, when the venue replays a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayStatus>,
}

#[derive(Default)]
struct Stream {
    subscribers: Subscribers<SubscriberId, MarketData>,
    /// Latest undelivered quote per subscriber whose mailbox was full.
    conflated: HashMap<SubscriberId, MarketData>,
}

enum Waiting {
    Ticker(Replier<Result<Ticker, FeedError>>),
    Candles(Interval, usize, Replier<Result<Vec<Candle>, FeedError>>),
}

struct Waiter {
    symbol: Symbol,
    until: Instant,
    what: Waiting,
}

/// One live connection of a venue, as the feed sees it.
struct Link {
    commands: tokio::sync::mpsc::Sender<Command>,
    streams: BTreeSet<String>,
    connected: bool,
}

/// One venue's feed.
pub struct FeedActor {
    config: FeedConfig,
    sim: Option<SimMarket>,
    /// Connections to the venue (Binance), each holding at most 1024 streams.
    links: Vec<Link>,
    /// Where the connections send their output; `None` for the sim.
    source: Option<tokio::sync::mpsc::Sender<Output>>,
    budget: std::sync::Arc<governor::DefaultDirectRateLimiter>,
    streams: HashMap<(Symbol, StreamKind), Stream>,
    symbols: HashMap<Symbol, SymbolState>,
    warm_until: HashMap<Symbol, Instant>,
    waiters: Vec<Waiter>,
    /// Fractional trades owed per symbol by the sim's rate.
    sim_debt: HashMap<Symbol, f64>,
    last_tick: Instant,
    last_message: Option<Instant>,
    /// The venue's tradable symbols and their rules, once exchange info loaded.
    instruments: Option<HashMap<Symbol, keel_core::trading::InstrumentFilters>>,
    /// The file being replayed instead of the sim's random walk.
    replay: Option<replay::Replay>,
    _lifeline: Option<Lifeline>,
}

impl fmt::Debug for FeedActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedActor").field("venue", &self.config.venue).finish_non_exhaustive()
    }
}

impl FeedActor {
    /// A feed for `config`.
    pub fn new(config: FeedConfig) -> Self {
        let sim = config.sim.as_ref().map(|sim| {
            SimMarket::new(
                sim.seed,
                sim.symbols.iter().cloned().map(Instrument::for_symbol).collect(),
            )
        });
        Self {
            config,
            sim,
            links: Vec::new(),
            source: None,
            budget: connection::connection_budget(),
            streams: HashMap::new(),
            symbols: HashMap::new(),
            warm_until: HashMap::new(),
            waiters: Vec::new(),
            sim_debt: HashMap::new(),
            last_tick: Instant::now(),
            last_message: None,
            instruments: None,
            replay: None,
            _lifeline: None,
        }
    }

    /// Loads the venue's exchange info now, and again every hour (every 30 s until it works).
    fn load_instruments(&self, ctx: &mut Context<Self>) {
        let Some(url) = self.config.rest_url.clone() else { return };
        let venue = self.venue();
        let fut = async move {
            let client = keel_venues::binance::rest::RestClient::new(venue, &url)?;
            client.exchange_info().await
        };
        ctx.spawn(fut.into_actor(self).map(|loaded, this, ctx| {
            let next = match loaded {
                Ok(instruments) => {
                    tracing::info!(venue = %this.venue(), symbols = instruments.len(), "exchange info loaded");
                    this.instruments = Some(instruments);
                    EXCHANGE_INFO_REFRESH
                }
                Err(err) => {
                    metrics::counter!("keel_feed_errors_total", "venue" => this.venue().as_str(), "reason" => "exchange_info").increment(1);
                    tracing::warn!(venue = %this.venue(), error = %err, "exchange info not loaded; symbols are checked by syntax only");
                    EXCHANGE_INFO_RETRY
                }
            };
            ctx.run_later(next, |this, ctx| this.load_instruments(ctx));
        }));
    }

    fn venue(&self) -> VenueId {
        self.config.venue
    }

    fn check_symbol(&self, symbol: &Symbol) -> Result<(), FeedError> {
        let unknown = match (&self.sim, &self.instruments) {
            (Some(sim), _) => sim.instrument(symbol).is_none(),
            (None, Some(instruments)) => !instruments.contains_key(symbol),
            // Exchange info not loaded: the symbol's syntax was checked; the venue will say.
            (None, None) => false,
        };
        if unknown {
            return Err(FeedError::UnknownSymbol {
                venue: self.venue(),
                symbol: symbol.to_string(),
            });
        }
        Ok(())
    }

    fn check_kind(&self, kind: StreamKind) -> Result<(), FeedError> {
        let supported = match self.venue() {
            VenueId::Sim => {
                matches!(kind, StreamKind::Trades | StreamKind::Quotes | StreamKind::Candles1m)
            }
            VenueId::Binance => kind != StreamKind::Liquidations,
            VenueId::BinanceFutures => true,
        };
        if supported {
            Ok(())
        } else {
            Err(FeedError::Unsupported { venue: self.venue(), kind: kind.as_str() })
        }
    }

    /// Symbols the source must produce: those with subscribers or kept warm.
    fn active_symbols(&self) -> Vec<Symbol> {
        let mut active: Vec<Symbol> = self.streams.keys().map(|(s, _)| s.clone()).collect();
        active.extend(self.warm_until.keys().cloned());
        active.sort();
        active.dedup();
        active
    }

    /// Brings the venue's subscriptions in line with what is wanted: every subscribed stream,
    /// plus trades and quotes of warm symbols. The first want of a stream subscribes it on a
    /// connection with room (opening one if all are full); the last unsubscribes it.
    fn reconcile(&mut self) {
        let Some(source) = self.source.clone() else { return };
        let Some(config) = self.config.binance.clone() else { return };
        let venue = self.venue();
        let mut wanted: BTreeSet<String> = self
            .streams
            .keys()
            .filter_map(|(symbol, kind)| binance_streams::stream_name(venue, symbol, *kind))
            .collect();
        for symbol in self.warm_until.keys() {
            for kind in [StreamKind::Trades, StreamKind::Quotes] {
                wanted.extend(binance_streams::stream_name(venue, symbol, kind));
            }
        }
        for link in &mut self.links {
            let gone: Vec<String> = link.streams.difference(&wanted).cloned().collect();
            if !gone.is_empty() {
                for name in &gone {
                    link.streams.remove(name);
                }
                send_command(link, Command::Unsubscribe(gone));
            }
        }
        let have: BTreeSet<String> =
            self.links.iter().flat_map(|l| l.streams.iter().cloned()).collect();
        let mut new: Vec<String> = wanted.difference(&have).cloned().collect();
        while !new.is_empty() {
            let index = match self
                .links
                .iter()
                .position(|l| l.streams.len() < MAX_STREAMS_PER_CONNECTION)
            {
                Some(index) => index,
                None => {
                    let (commands, rx) = tokio::sync::mpsc::channel(COMMAND_BUFFER);
                    let index = self.links.len();
                    connection::spawn(
                        index,
                        config.clone(),
                        self.budget.clone(),
                        rx,
                        source.clone(),
                    );
                    self.links.push(Link { commands, streams: BTreeSet::new(), connected: false });
                    index
                }
            };
            let link = &mut self.links[index];
            let room = MAX_STREAMS_PER_CONNECTION - link.streams.len();
            let batch: Vec<String> = new.drain(..room.min(new.len())).collect();
            link.streams.extend(batch.iter().cloned());
            send_command(link, Command::Subscribe(batch));
        }
        let total: usize = self.links.iter().map(|l| l.streams.len()).sum();
        metrics::gauge!("keel_feed_venue_streams", "venue" => venue.as_str()).set(total as f64);
    }

    fn warm(&mut self, symbol: &Symbol) {
        self.warm_until.insert(symbol.clone(), Instant::now() + self.config.warm_for);
    }

    /// Folds an event into state and queues it for recording; returns it shared, with its
    /// stream kind.
    fn observe(&mut self, event: MarketEvent) -> (Arc<MarketEvent>, Option<StreamKind>) {
        self.last_message = Some(Instant::now());
        metrics::counter!("keel_feed_messages_total", "venue" => self.venue().as_str())
            .increment(1);
        self.symbols.entry(event.symbol.clone()).or_default().apply(&event);
        let kind = event.stream_kind();
        let event = Arc::new(event);
        if let Some(recorder) = &self.config.recorder {
            recorder.record(&event);
        }
        (event, kind)
    }

    /// Folds an event into state and fans it out.
    fn dispatch(&mut self, event: MarketEvent) {
        let venue = self.venue().as_str();
        let (event, kind) = self.observe(event);
        let Some(kind) = kind else { return };
        let Some(stream) = self.streams.get_mut(&(event.symbol.clone(), kind)) else { return };
        let data = MarketData(event);
        let Stream { subscribers, conflated } = stream;
        let delivery = subscribers.publish(&data, |subscriber, undelivered| match kind {
            StreamKind::Quotes | StreamKind::Candles1m | StreamKind::Depth => {
                conflated.insert(*subscriber, undelivered);
            }
            StreamKind::Trades | StreamKind::Liquidations => {
                metrics::counter!("keel_feed_dropped_total", "venue" => venue, "stream" => kind.as_str())
                    .increment(1);
            }
        });
        if delivery.delivered > 0 {
            metrics::counter!("keel_feed_deliveries_total", "venue" => venue)
                .increment(delivery.delivered as u64);
        }
    }

    /// Plays the replay's events owed for `elapsed`: each delivered to every subscriber, in
    /// order, with nothing conflated or dropped.
    fn play_replay(&mut self, elapsed: Duration) {
        let Some(replay) = self.replay.as_mut() else { return };
        replay.drain_backlog(&mut self.streams);
        let budget = replay.budget(elapsed.as_secs_f64());
        let mut touched: Vec<Symbol> = Vec::new();
        for _ in 0..budget {
            let Some(replay) = self.replay.as_mut() else { return };
            let Some(mut event) = replay.next_event(&self.streams) else { break };
            event.venue = self.venue();
            event.received_us = now_us();
            if !touched.contains(&event.symbol) {
                touched.push(event.symbol.clone());
            }
            let (event, kind) = self.observe(event);
            let Some(kind) = kind else { continue };
            let id = (event.symbol.clone(), kind);
            if let (Some(replay), Some(stream)) = (self.replay.as_mut(), self.streams.get_mut(&id))
            {
                replay.deliver(&id, stream, &MarketData(event));
            }
        }
        let now_ms = now_us() / 1000;
        for symbol in touched {
            self.publish_candle(&symbol, now_ms);
        }
    }

    /// Retries conflated deliveries; the latest value only.
    fn flush_conflated(&mut self) {
        for stream in self.streams.values_mut() {
            if stream.conflated.is_empty() {
                continue;
            }
            let pending = std::mem::take(&mut stream.conflated);
            for (subscriber, data) in pending {
                let _ = stream.subscribers.publish_to(&subscriber, data, |data| {
                    stream.conflated.insert(subscriber, data);
                });
            }
        }
    }

    fn generate_sim(&mut self, elapsed: Duration) {
        /// Most simulated time one tick generates, seconds.
        const MAX_SIM_CATCH_UP: f64 = 0.05;
        let Some(rate) = self.config.sim.as_ref().map(|s| f64::from(s.trades_per_sec)) else {
            return;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for symbol in self.active_symbols() {
            let debt = self.sim_debt.entry(symbol.clone()).or_default();
            // A tick that ran late does not try to make up for all of it: on a slow machine that
            // spirals (each catch-up makes the next tick later still) and starves the arbiter.
            *debt = (*debt + rate * elapsed.as_secs_f64()).min((rate * MAX_SIM_CATCH_UP).max(1.0));
            let due = debt.floor() as u64;
            *debt -= due as f64;
            for _ in 0..due {
                let Some(sim) = self.sim.as_mut() else { return };
                let Some([trade, quote]) = sim.step(&symbol, now_ms, now_us()) else { break };
                self.dispatch(trade);
                self.dispatch(quote);
            }
            if due > 0 {
                self.publish_candle(&symbol, now_ms);
            }
        }
    }

    /// Sends the current 1 m candle to `candles.1m` subscribers (once per tick at most).
    fn publish_candle(&mut self, symbol: &Symbol, now_ms: u64) {
        if !self.streams.contains_key(&(symbol.clone(), StreamKind::Candles1m)) {
            return;
        }
        let Some(candle) =
            self.symbols.get(symbol).and_then(|s| s.current_candle(Interval::M1)).cloned()
        else {
            return;
        };
        self.dispatch(MarketEvent {
            venue: self.venue(),
            symbol: symbol.clone(),
            exchange_ts: now_ms,
            received_us: now_us(),
            kind: EventKind::Candle(candle),
        });
    }

    fn answer_waiters(&mut self, force_timeout: bool) {
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters {
            let ready = self.symbols.get(&waiter.symbol).is_some_and(SymbolState::has_data);
            if ready {
                self.answer(waiter);
            } else if force_timeout || now >= waiter.until {
                let err =
                    FeedError::NoData { venue: self.venue(), symbol: waiter.symbol.to_string() };
                match waiter.what {
                    Waiting::Ticker(r) => r.send(Err(err)),
                    Waiting::Candles(_, _, r) => r.send(Err(err)),
                }
            } else {
                self.waiters.push(waiter);
            }
        }
    }

    fn answer(&self, waiter: Waiter) {
        let state = self.symbols.get(&waiter.symbol);
        match waiter.what {
            Waiting::Ticker(replier) => replier.send(Ok(Ticker {
                venue: self.venue(),
                symbol: waiter.symbol.clone(),
                last_trade: state.and_then(|s| s.last_trade.clone()),
                quote: state.and_then(|s| s.quote.clone()),
            })),
            Waiting::Candles(interval, limit, replier) => {
                replier.send(Ok(state.map(|s| s.candles(interval, limit)).unwrap_or_default()));
            }
        }
    }

    fn request(&mut self, symbol: Symbol, what: Waiting) {
        if let Err(err) = self.check_symbol(&symbol) {
            match what {
                Waiting::Ticker(r) => r.send(Err(err)),
                Waiting::Candles(_, _, r) => r.send(Err(err)),
            }
            return;
        }
        self.warm(&symbol);
        self.reconcile();
        let waiter = Waiter { symbol, until: Instant::now() + self.config.first_data_wait, what };
        if self.symbols.get(&waiter.symbol).is_some_and(SymbolState::has_data) {
            self.answer(waiter);
        } else {
            self.waiters.push(waiter);
        }
    }

    fn expire_warm(&mut self) {
        let now = Instant::now();
        let before = self.warm_until.len();
        self.warm_until.retain(|_, until| *until > now);
        if self.warm_until.len() != before {
            self.reconcile();
        }
        let streams = &self.streams;
        let warm = &self.warm_until;
        self.symbols.retain(|symbol, _| {
            warm.contains_key(symbol) || streams.keys().any(|(s, _)| s == symbol)
        });
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick);
        self.last_tick = now;
        if self.replay.is_some() {
            self.play_replay(elapsed);
        } else {
            self.generate_sim(elapsed);
        }
        self.flush_conflated();
        self.answer_waiters(false);
        self.expire_warm();
    }

    fn status(&self) -> VenueStatus {
        let mut streams: Vec<String> = self
            .streams
            .keys()
            .map(|(symbol, kind)| format!("market:{}:{}:{}", self.venue(), symbol, kind.as_str()))
            .collect();
        streams.sort();
        let up = self.links.iter().filter(|l| l.connected).count();
        let state = if self.sim.is_some() || (up > 0 && up == self.links.len()) {
            Connectivity::Connected
        } else if up > 0 {
            Connectivity::Degraded
        } else {
            Connectivity::Down
        };
        VenueStatus {
            venue: self.venue(),
            state,
            streams,
            last_message_age_ms: self.last_message.map(|t| t.elapsed().as_millis() as u64),
            subscribers: self.streams.values().map(|s| s.subscribers.len()).sum(),
            replay: self.replay.as_ref().map(|r| r.status.clone()),
        }
    }
}

impl Actor for FeedActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox);
        self.last_tick = Instant::now();
        if let Some(replay) = self.config.sim.as_ref().and_then(|sim| sim.replay.clone()) {
            self.replay = Some(replay::Replay::start(replay));
        }
        ctx.run_interval(TICK, |this, _| this.tick());
        self.load_instruments(ctx);
        if self.config.binance.is_some() {
            let (tx, mut rx) = tokio::sync::mpsc::channel(SOURCE_BUFFER);
            self.source = Some(tx);
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        }
        tracing::info!(venue = %self.venue(), "feed started");
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.answer_waiters(true);
        Running::Stop
    }
}

fn send_command(link: &Link, command: Command) {
    if link.commands.try_send(command).is_err() {
        tracing::error!("a venue connection's command queue is full; its subscriptions may lag");
    }
}

impl StreamHandler<Output> for FeedActor {
    fn handle(&mut self, output: Output, _: &mut Context<Self>) {
        match output {
            Output::Event(event) => self.dispatch(event),
            Output::Connected { connection } => {
                if let Some(link) = self.links.get_mut(connection) {
                    link.connected = true;
                }
            }
            Output::Disconnected { connection, reason } => {
                tracing::warn!(venue = %self.venue(), connection, %reason, "venue connection lost");
                if let Some(link) = self.links.get_mut(connection) {
                    link.connected = false;
                }
            }
            Output::Gap { streams, reason } => {
                let venue = self.venue();
                for name in streams {
                    let Some((symbol, kind)) = binance_streams::parse_stream_name(venue, &name)
                    else {
                        continue;
                    };
                    let gap = MarketData(Arc::new(MarketEvent {
                        venue,
                        symbol: symbol.clone(),
                        exchange_ts: 0,
                        received_us: now_us(),
                        kind: EventKind::Gap { reason: reason.clone() },
                    }));
                    if let Some(recorder) = &self.config.recorder {
                        recorder.record(&gap.0);
                    }
                    let Some(stream) = self.streams.get_mut(&(symbol, kind)) else {
                        continue;
                    };
                    // A gap must not be lost to a full mailbox: it waits with the conflated values.
                    let Stream { subscribers, conflated } = stream;
                    subscribers.publish(&gap, |subscriber, undelivered| {
                        conflated.insert(*subscriber, undelivered);
                    });
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::warn!(venue = %self.venue(), "venue connections ended");
    }
}

impl Handler<Ask<Subscribe>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<Subscribe>, _: &mut Context<Self>) {
        let (sub, replier) = ask.into_parts();
        let checked = self.check_symbol(&sub.symbol).and_then(|()| self.check_kind(sub.kind));
        if checked.is_ok() {
            let stream = self.streams.entry((sub.symbol.clone(), sub.kind)).or_default();
            stream.subscribers.subscribe(sub.subscriber, sub.recipient);
            metrics::gauge!("keel_feed_streams", "venue" => self.venue().as_str())
                .set(self.streams.len() as f64);
            self.reconcile();
        }
        replier.send(checked);
    }
}

impl Handler<Unsubscribe> for FeedActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        let key = (msg.symbol, msg.kind);
        if let Some(stream) = self.streams.get_mut(&key) {
            stream.subscribers.unsubscribe(&msg.subscriber);
            stream.conflated.remove(&msg.subscriber);
            if stream.subscribers.is_empty() {
                self.streams.remove(&key);
                self.reconcile();
            }
        }
        metrics::gauge!("keel_feed_streams", "venue" => self.venue().as_str())
            .set(self.streams.len() as f64);
    }
}

impl Handler<Ask<GetTicker>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetTicker>, _: &mut Context<Self>) {
        let (GetTicker { symbol }, replier) = ask.into_parts();
        self.request(symbol, Waiting::Ticker(replier));
    }
}

impl Handler<Ask<GetCandles>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetCandles>, _: &mut Context<Self>) {
        let (GetCandles { symbol, interval, limit }, replier) = ask.into_parts();
        self.request(symbol, Waiting::Candles(interval, limit, replier));
    }
}

impl Handler<Ask<GetVenueStatus>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetVenueStatus>, _: &mut Context<Self>) {
        ask.reply(self.status());
    }
}

impl Handler<Stop> for FeedActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Ask<GetInstrument>> for FeedActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetInstrument>, _: &mut Context<Self>) {
        let (GetInstrument { symbol }, replier) = ask.into_parts();
        let answer = match (&self.sim, &self.instruments) {
            (Some(sim), _) => sim
                .instrument(&symbol)
                .map(Instrument::filters)
                .ok_or(InstrumentError::UnknownSymbol),
            (None, Some(instruments)) => {
                instruments.get(&symbol).cloned().ok_or(InstrumentError::UnknownSymbol)
            }
            (None, None) => Err(InstrumentError::Unavailable),
        };
        replier.send(answer);
    }
}

/// Where a venue's feed currently is.
pub type FeedAddress = AddressSlot<FeedActor>;

/// Starts a feed under a supervisor, publishing its address.
#[derive(Debug)]
pub struct FeedSpec {
    config: FeedConfig,
    address: FeedAddress,
    name: String,
}

impl FeedSpec {
    /// A spec for `config`, publishing to `address`.
    pub fn new(config: FeedConfig, address: FeedAddress) -> Self {
        let name = format!("feed.{}", config.venue);
        Self { config, address, name }
    }
}

impl ChildSpec for FeedSpec {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let mut feed = FeedActor::new(self.config.clone());
        feed._lifeline = Some(lifeline);
        let addr = feed.start();
        self.address.set(addr.clone());
        Ok(Box::new(addr))
    }
}

#[cfg(test)]
mod tests;
