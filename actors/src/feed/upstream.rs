//! The feed's side of a venue reached over the network: its connections (each carrying at most
//! the venue's stream limit), keeping them subscribed to what is wanted, what they report, and
//! the venue's instrument rules. The venue's protocol is its connector's business
//! ([`keel_venues::market::MarketConnector`]); the connections are [`keel_venues::connection`]'s.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::MarketData;
use super::{FeedActor, Stream};
use keel_core::market::{EventKind, MarketEvent, StreamKind, Symbol};
use keel_venues::connection::{self, Command, ConnectionConfig, Output};
use keel_venues::market::Instruments;
use keel_venues::now_us;

/// Events buffered between the venue's connections and the feed.
const SOURCE_BUFFER: usize = 65_536;
/// Commands buffered per connection.
const COMMAND_BUFFER: usize = 4_096;
/// How often a venue's instrument rules are reloaded.
const EXCHANGE_INFO_REFRESH: Duration = Duration::from_secs(3600);
/// How soon a failed load is retried.
const EXCHANGE_INFO_RETRY: Duration = Duration::from_secs(30);

/// One live connection of a venue, as the feed sees it.
pub(super) struct Link {
    commands: tokio::sync::mpsc::Sender<Command>,
    streams: BTreeSet<String>,
    pub(super) connected: bool,
}

/// A venue's connections and what they share.
pub(super) struct Upstream {
    config: ConnectionConfig,
    /// Connection attempts across all of the venue's connections.
    budget: Arc<governor::DefaultDirectRateLimiter>,
    pub(super) links: Vec<Link>,
    /// Where the connections send their output, once the feed has started.
    source: Option<tokio::sync::mpsc::Sender<Output>>,
}

impl Upstream {
    /// The connections of a venue configured by `config` (none open yet).
    pub(super) fn new(config: ConnectionConfig) -> Self {
        let budget = connection::connection_budget(&config);
        Self { config, budget, links: Vec::new(), source: None }
    }
}

impl FeedActor {
    /// Routes the venue's connection output into the feed's mailbox-free stream.
    pub(super) fn start_upstream(&mut self, ctx: &mut Context<Self>) {
        let Some(upstream) = self.upstream.as_mut() else { return };
        let (tx, mut rx) = tokio::sync::mpsc::channel(SOURCE_BUFFER);
        upstream.source = Some(tx);
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    }

    /// Loads the venue's instrument rules now, and again every hour (every 30 s until it works),
    /// when the venue's connector fetches them.
    pub(super) fn load_instruments(&self, ctx: &mut Context<Self>) {
        let Instruments::Fetch(fut) = self.config.market.instruments() else { return };
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

    /// Brings the venue's subscriptions in line with what is wanted: every subscribed stream,
    /// plus trades and quotes of warm symbols. The first want of a stream subscribes it on a
    /// connection with room (opening one if all are full); the last unsubscribes it.
    pub(super) fn reconcile(&mut self) {
        let market = self.config.market.clone();
        let venue = self.venue();
        let Some(upstream) = self.upstream.as_mut() else { return };
        let Some(source) = upstream.source.clone() else { return };
        // In cluster mode, only the symbols this node holds the lease of.
        let cluster = &self.cluster;
        let held = |symbol: &Symbol| cluster.as_ref().is_none_or(|c| c.holds(symbol));
        let mut wanted: BTreeSet<String> = self
            .streams
            .keys()
            .filter(|(symbol, _)| held(symbol))
            .filter_map(|(symbol, kind)| market.stream_name(symbol, *kind))
            .collect();
        for symbol in self.warm_until.keys().filter(|symbol| held(symbol)) {
            for kind in [StreamKind::Trades, StreamKind::Quotes] {
                wanted.extend(market.stream_name(symbol, kind));
            }
        }
        for link in &mut upstream.links {
            let gone: Vec<String> = link.streams.difference(&wanted).cloned().collect();
            if !gone.is_empty() {
                for name in &gone {
                    link.streams.remove(name);
                }
                send_command(link, Command::Unsubscribe(gone));
            }
        }
        let have: BTreeSet<String> =
            upstream.links.iter().flat_map(|l| l.streams.iter().cloned()).collect();
        let mut new: Vec<String> = wanted.difference(&have).cloned().collect();
        let max_streams = upstream.config.max_streams.max(1);
        while !new.is_empty() {
            let index = match upstream.links.iter().position(|l| l.streams.len() < max_streams) {
                Some(index) => index,
                None => {
                    let (commands, rx) = tokio::sync::mpsc::channel(COMMAND_BUFFER);
                    let index = upstream.links.len();
                    connection::spawn(
                        index,
                        market.clone(),
                        upstream.config.clone(),
                        upstream.budget.clone(),
                        rx,
                        source.clone(),
                    );
                    upstream.links.push(Link {
                        commands,
                        streams: BTreeSet::new(),
                        connected: false,
                    });
                    index
                }
            };
            let link = &mut upstream.links[index];
            let room = max_streams - link.streams.len();
            let batch: Vec<String> = new.drain(..room.min(new.len())).collect();
            link.streams.extend(batch.iter().cloned());
            send_command(link, Command::Subscribe(batch));
        }
        let total: usize = upstream.links.iter().map(|l| l.streams.len()).sum();
        metrics::gauge!("keel_feed_venue_streams", "venue" => venue.as_str()).set(total as f64);
    }

    fn link_mut(&mut self, connection: usize) -> Option<&mut Link> {
        self.upstream.as_mut()?.links.get_mut(connection)
    }

    /// Tells the subscribers of `streams` that data may have been missed on them (and, in
    /// cluster mode, the followers of their symbols).
    fn gap(&mut self, streams: Vec<String>, reason: String) {
        let mut relayed = BTreeSet::new();
        for name in streams {
            let Some((symbol, kind)) = self.config.market.parse_stream_name(&name) else {
                continue;
            };
            let gap = self.gap_event(&symbol, &reason);
            if relayed.insert(symbol.clone()) {
                self.relay(&gap);
            }
            self.deliver_gap(gap, kind);
        }
    }

    /// Tells the subscribers of every stream of `symbol` that data may have been missed.
    pub(super) fn gap_symbol(&mut self, symbol: &Symbol, reason: &str) {
        let kinds: Vec<StreamKind> =
            self.streams.keys().filter(|(s, _)| s == symbol).map(|(_, kind)| *kind).collect();
        for kind in kinds {
            let gap = self.gap_event(symbol, reason);
            self.deliver_gap(gap, kind);
        }
    }

    fn gap_event(&self, symbol: &Symbol, reason: &str) -> MarketEvent {
        MarketEvent {
            venue: self.venue(),
            symbol: symbol.clone(),
            exchange_ts: 0,
            received_us: now_us(),
            kind: EventKind::Gap { reason: reason.to_owned() },
        }
    }

    fn deliver_gap(&mut self, gap: MarketEvent, kind: StreamKind) {
        let gap = Arc::new(gap);
        if let Some(recorder) = &self.config.recorder {
            recorder.record(&gap);
        }
        let Some(stream) = self.streams.get_mut(&(gap.symbol.clone(), kind)) else { return };
        let gap = MarketData(gap);
        // A gap must not be lost to a full mailbox: it waits with the conflated values.
        let Stream { subscribers, conflated } = stream;
        subscribers.publish(&gap, |subscriber, undelivered| {
            conflated.insert(*subscriber, undelivered);
        });
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
            Output::Event(event) => {
                self.relay(&event);
                self.dispatch(event);
            }
            Output::Connected { connection } => {
                if let Some(link) = self.link_mut(connection) {
                    link.connected = true;
                }
            }
            Output::Disconnected { connection, reason } => {
                tracing::warn!(venue = %self.venue(), connection, %reason, "venue connection lost");
                if let Some(link) = self.link_mut(connection) {
                    link.connected = false;
                }
            }
            Output::Gap { streams, reason } => self.gap(streams, reason),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::warn!(venue = %self.venue(), "venue connections ended");
    }
}
