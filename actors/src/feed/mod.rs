//! Feed actors: one per venue, holding its market-data source and fanning events out.
//!
//! A feed never names its venue: it drives it through the venue seam
//! ([`keel_venues::market::MarketConnector`]), over upstream connections ([`upstream`]) or a
//! simulator ticked in process ([`simulated`]).
//!
//! Subscriptions are reference-counted per stream (symbol × kind): the source produces a stream
//! only while someone wants it ([`subscriptions`]). Every event is delivered with `try_send` into
//! each subscriber's bounded mailbox, so the feed never waits for a subscriber. A subscriber
//! whose mailbox is full gets the latest quote conflated (delivered on the next tick); a trade it
//! cannot take is dropped and counted in `keel_feed_dropped_total`. The feed also keeps
//! per-symbol state (last trade, best bid/ask, rolling candles) for the market endpoints,
//! subscribing on demand and keeping a symbol warm for a while after the last request
//! ([`requests`]).
//!
//! With a [`Recorder`] configured, every event the feed handles is also queued for recording
//! (never waited on: see [`crate::record`]). A simulated venue can replay a file instead of its
//! random walk ([`replay`]), losslessly and deterministically.

mod cluster;
mod messages;
mod replay;
mod requests;
mod simulated;
mod state;
mod subscriptions;
mod upstream;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
pub use messages::{
    Connectivity, FeedError, GetCandles, GetInstrument, GetTicker, GetVenueStatus, InstrumentError,
    MarketData, Subscribe, SubscriberId, Ticker, Unsubscribe, VenueStatus,
};
pub use replay::{ReplayConfig, ReplayStatus};
pub use state::{BestQuote, LastTrade, SymbolState};

use crate::fanout::Subscribers;
use crate::mailbox::Replier;
use crate::record::Recorder;
use crate::supervisor::{AddressSlot, ChildHandle, ChildSpec, Lifeline, StartError, Stop};
use keel_core::market::{Candle, Interval, StreamKind, Symbol, VenueId};
use keel_venues::market::{InstrumentMap, Instruments, MarketConnector, Simulator};

/// How often the feed runs its housekeeping: sim generation, conflated deliveries, waiters.
const TICK: Duration = Duration::from_millis(10);
/// The default of the feed's own mailbox (`mailboxes.feed`): control messages only (events come
/// from its source).
pub const DEFAULT_MAILBOX: usize = 4096;

/// Configuration of one venue's feed.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The venue, behind the seam (from the venue registry).
    pub market: Arc<dyn MarketConnector>,
    /// How long a symbol stays tracked after the last market request.
    pub warm_for: Duration,
    /// How long a market request waits for the first data.
    pub first_data_wait: Duration,
    /// Replay this file instead of the venue's simulation (simulated venues only).
    pub replay: Option<ReplayConfig>,
    /// Where events are recorded, when recording is on.
    pub recorder: Option<Recorder>,
    /// Capacity of the feed's mailbox (subscriptions and market requests).
    pub mailbox: usize,
    /// The cluster this node belongs to, in cluster mode: the exchange connection of each symbol
    /// is shared through it (venues reached over the network only).
    pub cluster: Option<crate::cluster::Cluster>,
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

/// One venue's feed.
pub struct FeedActor {
    config: FeedConfig,
    /// The venue's data generator, for a simulated venue.
    simulator: Option<Box<dyn Simulator>>,
    /// The venue's connections, for a venue reached over the network.
    upstream: Option<upstream::Upstream>,
    streams: HashMap<(Symbol, StreamKind), Stream>,
    symbols: HashMap<Symbol, SymbolState>,
    warm_until: HashMap<Symbol, Instant>,
    waiters: Vec<Waiter>,
    /// Fractional trades owed per symbol by the simulator's rate.
    sim_debt: HashMap<Symbol, f64>,
    last_tick: Instant,
    last_message: Option<Instant>,
    /// The venue's tradable symbols and their rules, once known.
    instruments: Option<InstrumentMap>,
    /// The file being replayed instead of the simulation.
    replay: Option<replay::Replay>,
    /// Which symbols this node holds or follows, in cluster mode.
    cluster: Option<cluster::FeedCluster>,
    _lifeline: Option<Lifeline>,
}

impl fmt::Debug for FeedActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedActor").field("venue", &self.venue()).finish_non_exhaustive()
    }
}

impl FeedActor {
    /// A feed for `config`.
    pub fn new(config: FeedConfig) -> Self {
        let simulator = config.market.simulator();
        let upstream = config.market.connection().map(upstream::Upstream::new);
        // A simulated venue runs in each node on its own; only an exchange is shared.
        let cluster = config
            .cluster
            .clone()
            .filter(|_| upstream.is_some())
            .map(|cluster| cluster::FeedCluster::new(cluster, config.market.venue()));
        let instruments = match config.market.instruments() {
            Instruments::Fixed(known) => Some(known),
            Instruments::Fetch(_) | Instruments::Unavailable => None,
        };
        Self {
            config,
            simulator,
            upstream,
            streams: HashMap::new(),
            symbols: HashMap::new(),
            warm_until: HashMap::new(),
            waiters: Vec::new(),
            sim_debt: HashMap::new(),
            last_tick: Instant::now(),
            last_message: None,
            instruments,
            replay: None,
            cluster,
            _lifeline: None,
        }
    }

    fn venue(&self) -> VenueId {
        self.config.market.venue()
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick);
        self.last_tick = now;
        if self.replay.is_some() {
            self.play_replay(elapsed);
        } else {
            self.generate(elapsed);
        }
        self.flush_conflated();
        self.answer_waiters(false);
        self.expire_warm();
    }
}

impl Actor for FeedActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox);
        self.last_tick = Instant::now();
        if let Some(replay) = self.config.replay.clone() {
            self.replay = Some(replay::Replay::start(replay));
        }
        ctx.run_interval(TICK, |this, _| this.tick());
        self.load_instruments(ctx);
        self.start_upstream(ctx);
        self.start_cluster(ctx);
        tracing::info!(venue = %self.venue(), "feed started");
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.answer_waiters(true);
        Running::Stop
    }
}

impl Handler<Stop> for FeedActor {
    type Result = ();

    /// In cluster mode, the leases this node holds are released first (bounded in time).
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        match self.release_leases() {
            Some(released) => {
                ctx.wait(actix::fut::wrap_future(released).map(
                    |(), _, ctx: &mut Context<Self>| {
                        ctx.stop();
                    },
                ));
            }
            None => ctx.stop(),
        }
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
        let name = format!("feed.{}", config.market.venue());
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
