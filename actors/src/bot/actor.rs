//! `BotActor`: one running bot. It owns its [`BotEngine`], subscribes to its symbol's trades and
//! quotes, persists every change, and answers its owner's trading commands.
//!
//! Every change the engine reports is written in one sled transaction straight away, and made
//! durable by a shared flush (group commit) before anything is acknowledged: a command's answer is
//! sent after the flush, and the read endpoints show fills and journal lines only up to the last
//! flushed id ([`LiveView`]), so nothing a client saw can be lost to a crash.
//!
//! Strategy code runs inside `catch_unwind`: a panic stops this actor with the panic as its reason
//! and the bot supervisor restarts it from the store, within the restart budget.
//!
//! The actor's parts, each in its own file:
//! - [`messages`]: what the bot supervisor and the API ask of a running bot;
//! - `persist`: writing the engine's effects and acting on them once durable;
//! - `live_orders`: sending a live bot's orders to its venue and applying the answers;
//! - `cancel_retry`: a failed cancel asked again, with back-off, until the venue closes it;
//! - `commands`: the handlers of owner commands, pause/resume and stop.

mod breaker;
mod cancel_retry;
mod commands;
mod derivatives;
mod live_orders;
pub mod messages;
mod persist;
mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;

pub use self::messages::{
    BotPaused, BotReconciled, BotResumed, CancelOutcome, GetLive, LiveView, OrderCancel, SetPaused,
    StopBot, TradeCommand, TradeError, TradeOutcome,
};
use self::persist::AfterFlush;
use super::indicators::IndicatorRing;
use super::live::LiveLink;
use super::repo::BotRepo;
use crate::feed::{FeedAddress, MarketData, Subscribe, Unsubscribe};
use crate::mailbox::ask;
use crate::session::BotIndicator;
use crate::supervisor::{Lifeline, catch_panic};
use keel_core::bot::{BotId, BotStatus};
use keel_core::engine::{BotEngine, BotEventKind, Effects};
use keel_core::market::{StreamKind, Symbol};
use keel_core::strategy::IndicatorUpdate;
use keel_core::trading::Position;

/// The default of a bot's mailbox (`mailboxes.bot`): market data and commands share it; the feed
/// conflates quotes and drops trades (counted) when it is full. Small, because it is multiplied
/// by the number of bots: 1,000 bots that fall behind a busy feed hold at most about 26 MB here.
pub const BOT_MAILBOX: usize = 256;
/// How often the strategy's state is saved even without fills, so a restart loses little warm-up.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(10);
/// A strategy call slower than this counts as over budget.
pub const CALLBACK_BUDGET: Duration = Duration::from_millis(5);
/// Consecutive over-budget calls after which the bot is paused.
const OVER_BUDGET_LIMIT: u32 = 20;
/// Every this many events, one strategy call is timed into the histogram (timing all of them
/// would cost more than some strategies do).
const TIMING_SAMPLE: u64 = 64;
/// How long the bot waits for the feed to accept its subscriptions.
const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);
/// How often the actor checks that its supervisor is still there (an orphan must not trade).
const SUPERVISOR_CHECK: Duration = Duration::from_secs(1);
/// How often a live bot asks the venue about its open orders (and reconciles unknown ones).
pub const LIVE_POLL: Duration = Duration::from_secs(3);

/// Everything a bot actor needs to start.
#[derive(Debug)]
pub struct BotActorArgs {
    /// The bot.
    pub bot_id: BotId,
    /// Its symbol.
    pub symbol: Symbol,
    /// Its engine, rebuilt from the store.
    pub engine: BotEngine,
    /// Whether it starts paused.
    pub paused: bool,
    /// Storage.
    pub repo: BotRepo,
    /// The venue's feed.
    pub feed: FeedAddress,
    /// Tells the bot supervisor when the actor goes away, and why.
    pub lifeline: Lifeline,
    /// Where it reports self-pauses.
    pub supervisor: Recipient<BotPaused>,
    /// Where it reports that it resumed by itself (its account's breaker closed).
    pub resumed: Recipient<BotResumed>,
    /// Paused by its account's circuit breaker (not by its owner): resumes when it closes.
    pub breaker_paused: bool,
    /// Where it reports that it is running with its open orders reconciled.
    pub reconciled: Recipient<BotReconciled>,
    /// The venue link of a live bot (`None` for paper).
    pub live: Option<LiveLink>,
    /// A derivatives bot's leverage and margin type were just set at the venue (its owner's
    /// start): the actor does not set them again.
    pub prepared: bool,
    /// The bot's leverage and margin type (a bot on a venue with leverage).
    pub leverage: Option<(u32, keel_core::bot::MarginType)>,
    /// The owner's exposure book (the operator's per-user limit and the owner's own
    /// `max_notional`); `None` only for a bot tracked by no book.
    pub exposure: Option<super::exposure::ExposureLink>,
    /// The bot's owner.
    pub user_id: keel_core::bot::UserId,
    /// Where the owner's live connections are (events go there once durable).
    pub sessions: crate::session::SessionDirectory,
    /// Capacity of the bot's mailbox ([`BOT_MAILBOX`] unless configured).
    pub mailbox: usize,
    /// Why this incarnation starts (a restart after a crash, Keel's own restart), journaled with
    /// the `status` line it writes on start; `None` when its owner started it.
    pub start_reason: Option<String>,
    /// Where the bot's indicator series are kept.
    pub indicators: super::indicators::IndicatorBook,
    /// Cluster mode with `postgres_url`: every flush is also written to Postgres under the
    /// owner's lease (`None`: the node's own store only).
    pub postgres: Option<super::pg::PgBotLink>,
}

/// One running bot.
#[derive(Debug)]
pub struct BotActor {
    args: BotActorArgs,
    fx: Effects,
    paused: bool,
    durable_fill_id: u64,
    durable_event_id: u64,
    durable_position: Position,
    events_seen: u64,
    over_budget: u32,
    dirty_snapshot: bool,
    /// Live orders with a request outstanding (not polled meanwhile).
    in_flight: HashSet<u64>,
    /// When each live order was last sent (or found open at start).
    sent_at: HashMap<u64, Instant>,
    /// Live orders whose cancel failed and is being retried, with the failures so far.
    cancel_retries: HashMap<u64, u32>,
    /// Paused by the account's circuit breaker, not by the owner.
    breaker_paused: bool,
    /// Stopping: nothing new goes to the venue.
    stopping: bool,
    /// Writes waiting for the next flush.
    awaiting: Vec<AfterFlush>,
    /// Whether [`BotReconciled`] was sent (once per incarnation).
    reported_reconciled: bool,
    /// Writes the flush in progress covers; `None` when no flush is in progress. One flush at a
    /// time per bot: a bot writing on every event would otherwise pile up one commit future per
    /// write, and actix polls them all each time the actor wakes.
    flushing: Option<Vec<AfterFlush>>,
    /// This bot's indicator ring (in `args.indicators`).
    ring: Arc<Mutex<IndicatorRing>>,
    /// Its account's user data stream, as the bot knows it (live bots).
    stream: stream::StreamLink,
    /// The venue's view of a derivatives bot's position.
    venue_book: derivatives::VenueBook,
}

impl BotActor {
    /// A bot actor that has not started yet.
    pub fn new(args: BotActorArgs) -> Self {
        let state = args.engine.snapshot();
        let ring = args.indicators.open(args.bot_id, args.engine.series());
        Self {
            ring,
            paused: args.paused,
            breaker_paused: args.breaker_paused,
            durable_fill_id: state.last_fill_id,
            durable_event_id: state.last_event_id,
            durable_position: state.position,
            fx: Effects::default(),
            args,
            events_seen: 0,
            over_budget: 0,
            dirty_snapshot: false,
            in_flight: HashSet::new(),
            sent_at: HashMap::new(),
            cancel_retries: HashMap::new(),
            stopping: false,
            awaiting: Vec::new(),
            flushing: None,
            reported_reconciled: false,
            stream: stream::StreamLink::default(),
            venue_book: derivatives::VenueBook::default(),
        }
    }

    fn id(&self) -> BotId {
        self.args.bot_id
    }

    /// Tells the supervisor, once, that this bot is running with its open orders reconciled.
    fn report_reconciled(&mut self) {
        if std::mem::replace(&mut self.reported_reconciled, true) {
            return;
        }
        // Once per incarnation and not on a hot path: it must not be lost to a full mailbox,
        // or readiness would wait for it forever.
        self.args.reconciled.do_send(BotReconciled {
            bot_id: self.args.bot_id,
            generation: self.args.lifeline.generation(),
        });
    }

    fn on_event(&mut self, data: &MarketData, ctx: &mut Context<Self>) {
        self.events_seen += 1;
        let timed = self.events_seen.is_multiple_of(TIMING_SAMPLE);
        let started = timed.then(Instant::now);
        let engine = &mut self.args.engine;
        let fx = &mut self.fx;
        if let Err(panic) = catch_panic(|| engine.on_market(&data.0, fx)) {
            tracing::error!(bot_id = self.args.bot_id, %panic, "strategy panicked");
            self.args.lifeline.crashed(format!("strategy panicked: {panic}"));
            ctx.stop();
            return;
        }
        if let Some(started) = started {
            let took = started.elapsed();
            metrics::histogram!("keel_strategy_callback_seconds").record(took.as_secs_f64());
            metrics::histogram!("keel_tick_to_strategy_seconds")
                .record(keel_venues::now_us().saturating_sub(data.0.received_us) as f64 / 1e6);
            self.over_budget = if took > CALLBACK_BUDGET { self.over_budget + 1 } else { 0 };
            if self.over_budget >= OVER_BUDGET_LIMIT && !self.paused {
                let reason = format!(
                    "strategy callbacks exceeded {} ms {OVER_BUDGET_LIMIT} times in a row",
                    CALLBACK_BUDGET.as_millis()
                );
                self.args.engine.set_strategy_active(false);
                self.fx.paused = Some(reason);
            }
        }
        self.dirty_snapshot = true;
        if let Some(update) = self.fx.indicators.take() {
            self.publish_indicators(&update);
        }
        if !self.fx.is_empty() {
            self.persist(ctx, None);
        }
    }

    /// Keeps an indicator update in the bot's ring and streams it to the owner's connections.
    fn publish_indicators(&mut self, update: &IndicatorUpdate) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.push(update);
        if !self.args.sessions.is_connected(self.args.user_id) {
            return;
        }
        let data = serde_json::json!({
            "kind": "indicator",
            "ts": update.ts,
            "values": ring.values_json(update),
        });
        drop(ring);
        self.args.sessions.publish_indicator(
            self.args.user_id,
            BotIndicator { bot_id: self.args.bot_id, ts: update.ts, data: data.to_string().into() },
        );
    }

    /// Publishes this bot's exposure and reads its budgets under the operator's per-user limit
    /// and its owner's own `max_notional`.
    fn refresh_exposure(&mut self) {
        let Some(link) = &self.args.exposure else { return };
        let engine = &mut self.args.engine;
        link.book.publish(link.user_id, self.args.bot_id, engine.exposure());
        engine.set_user_budget(link.book.budget(link.user_id, self.args.bot_id));
        engine.set_user_notional(link.book.owner_notional(link.user_id, self.args.bot_id));
    }

    /// The streams the bot trades on: trades and quotes, and a paper futures bot the mark price
    /// and funding its venue publishes.
    fn stream_kinds(&self) -> Vec<StreamKind> {
        let mut kinds = vec![StreamKind::Trades, StreamKind::Quotes];
        if self.args.engine.futures().is_some() {
            kinds.push(StreamKind::MarkPrice);
        }
        kinds
    }

    fn subscribe(&self, ctx: &mut Context<Self>) {
        let Some(feed) = self.args.feed.get() else {
            tracing::warn!(bot_id = self.id(), "venue feed is not running; the bot waits for data");
            return;
        };
        let recipient = ctx.address().recipient::<MarketData>();
        for kind in self.stream_kinds() {
            let subscribe = Subscribe {
                symbol: self.args.symbol.clone(),
                kind,
                subscriber: self.id(),
                recipient: recipient.clone(),
            };
            let feed = feed.clone();
            let bot_id = self.id();
            ctx.spawn(
                async move {
                    match ask(&feed, subscribe, SUBSCRIBE_DEADLINE, "feed").await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => {
                            tracing::warn!(bot_id, %err, "feed refused the subscription")
                        }
                        Err(err) => {
                            tracing::warn!(bot_id, %err, "feed did not answer the subscription")
                        }
                    }
                }
                .into_actor(self),
            );
        }
    }
}

impl Actor for BotActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.args.mailbox);
        self.args.engine.set_strategy_active(!self.paused);
        // Every incarnation says so on the bot's channel: started by its owner, restarted after a
        // crash, or resumed with the process.
        let status = if self.paused { BotStatus::Paused } else { BotStatus::Running };
        let reason = self.args.start_reason.take();
        let now = keel_venues::now_us() / 1000;
        self.args.engine.log(now, BotEventKind::Status { status, reason }, &mut self.fx);
        if self.is_derivatives() {
            self.args.engine.start_funding_clock(now);
        }
        self.persist(ctx, None);
        self.subscribe(ctx);
        ctx.run_interval(SNAPSHOT_INTERVAL, |act, ctx| {
            if act.dirty_snapshot {
                act.dirty_snapshot = false;
                if act.persist_snapshot(ctx) {
                    return;
                }
                if let Err(err) = act.args.repo.put_state(act.id(), &act.args.engine.snapshot()) {
                    tracing::warn!(bot_id = act.id(), error = %err, "strategy snapshot not stored");
                }
            }
        });
        if self.args.exposure.is_some() {
            self.refresh_exposure();
            ctx.run_interval(super::exposure::REFRESH, |act, _| act.refresh_exposure());
        }
        if self.args.live.is_some() {
            // Orders found open at start may have been sent just before a crash: "no such
            // order" is not believed for them until the grace period has passed.
            let now = Instant::now();
            self.sent_at = self.args.engine.open_orders().iter().map(|o| (o.id, now)).collect();
            // Reconciled once the venue has answered about every order found open.
            self.watch_breaker(ctx);
            // A derivatives bot's leverage is set before anything goes to the venue.
            self.start_derivatives(ctx);
            self.poll_live(ctx);
            self.attach_account(ctx);
            ctx.run_interval(LIVE_POLL, |act, ctx| {
                act.check_breaker(ctx);
                if act.poll_due() {
                    act.poll_live(ctx);
                }
            });
        } else {
            // A paper bot's open orders were restored into its engine as it was built.
            self.report_reconciled();
        }
        ctx.run_interval(SUPERVISOR_CHECK, |act, ctx| {
            if !act.args.supervisor.connected() {
                act.args.lifeline.crashed("supervisor gone");
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if let Some(link) = &self.args.live {
            link.breaker.unsubscribe(self.args.bot_id);
        }
        self.detach_account(ctx);
        if let Some(link) = &self.args.exposure {
            link.book.remove(link.user_id, self.args.bot_id);
        }
        if let Some(feed) = self.args.feed.get() {
            for kind in self.stream_kinds() {
                let _ = feed.try_send(Unsubscribe {
                    symbol: self.args.symbol.clone(),
                    kind,
                    subscriber: self.id(),
                });
            }
        }
        if self.dirty_snapshot {
            let _ = self.args.repo.put_state(self.id(), &self.args.engine.snapshot());
        }
    }
}

impl Handler<MarketData> for BotActor {
    type Result = ();

    fn handle(&mut self, data: MarketData, ctx: &mut Context<Self>) {
        self.on_event(&data, ctx);
    }
}

/// Stop at once and send nothing more, not even cancels: this node no longer holds the owner's
/// lease (cluster mode with `postgres_url`), and the node that does runs the bot now. Nothing
/// is written to Postgres either (the fence would refuse it).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Abandon;

impl Handler<Abandon> for BotActor {
    type Result = ();

    fn handle(&mut self, _: Abandon, ctx: &mut Context<Self>) {
        tracing::info!(bot_id = self.id(), "bot stopped: its owner's lease moved to another node");
        self.stopping = true;
        self.awaiting.clear();
        self.args.lifeline.stopped_on_request();
        ctx.stop();
    }
}
