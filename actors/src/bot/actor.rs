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

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;

use super::live::{LiveLink, LiveResult, NOT_FOUND_GRACE, execute};
use super::repo::BotRepo;
use crate::feed::{FeedAddress, MarketData, Subscribe, Unsubscribe};
use crate::mailbox::{Ask, Query, ask};
use crate::supervisor::{Lifeline, Stop, catch_panic};
use keel_core::bot::{BotId, BotStatus};
use keel_core::engine::{
    BotEngine, BotEvent, BotEventKind, BotState, CancelError, Effects, ExecOutcome, Outbound,
};
use keel_core::market::{StreamKind, Symbol};
use keel_core::trading::risk::RiskRejection;
use keel_core::trading::{Order, OrderRequest, Position};

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
/// Venue failures in a row after which a live bot pauses its strategy.
pub const VENUE_FAILURE_LIMIT: u32 = 5;

/// Owner commands a running bot handles.
#[derive(Debug, Clone)]
pub enum TradeCommand {
    /// Place an order.
    Place(OrderRequest),
    /// Cancel one order.
    Cancel(u64),
    /// Flatten the position.
    ClosePosition,
    /// Cancel every open order.
    CancelAll,
}

/// What a [`TradeCommand`] did.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TradeOutcome {
    /// The order placed, canceled or used to close.
    Order(Order),
    /// Nothing to do (closing a flat position).
    Nothing,
    /// How many orders were canceled.
    Canceled(usize),
}

/// Why a [`TradeCommand`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TradeError {
    /// Risk checks or the venue refused the order.
    #[error("{}: {}", .0.code, .0.reason)]
    Rejected(RiskRejection),
    /// The order is not open.
    #[error(transparent)]
    Cancel(#[from] CancelError),
    /// The change could not be stored; it did not happen.
    #[error("could not store the change")]
    Store,
}

impl Query for TradeCommand {
    type Answer = Result<TradeOutcome, TradeError>;
}

/// Pauses or resumes the strategy.
#[derive(Debug, Clone, Copy)]
pub struct SetPaused(pub bool);
impl Query for SetPaused {
    type Answer = ();
}

/// Stops the bot for good: cancels open orders, saves state, then stops the actor.
#[derive(Debug, Clone, Copy)]
pub struct StopBot {
    /// Also flatten the position first (kill switch).
    pub flatten: bool,
}
impl Query for StopBot {
    type Answer = Result<usize, TradeError>;
}

/// What a running bot reports for the read endpoints.
#[derive(Debug, Clone)]
pub struct GetLive;
impl Query for GetLive {
    type Answer = LiveView;
}

/// Durable position and watermarks of a running bot.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    /// Position as of the last flush.
    pub position: Position,
    /// Mark price now, if known.
    pub mark_price: Option<Decimal>,
    /// Fills up to this id are durable.
    pub durable_fill_id: u64,
    /// Journal lines up to this id are durable.
    pub durable_event_id: u64,
    /// Whether the strategy is being called.
    pub status: BotStatus,
}

/// The bot told its supervisor it paused itself.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BotPaused {
    /// The bot.
    pub bot_id: BotId,
    /// Why.
    pub reason: String,
}

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
    /// The venue link of a live bot (`None` for paper).
    pub live: Option<LiveLink>,
    /// The owner's exposure book, when a per-user limit is set.
    pub exposure: Option<super::exposure::ExposureLink>,
    /// The bot's owner.
    pub user_id: keel_core::bot::UserId,
    /// Where the owner's live connections are (events go there once durable).
    pub sessions: crate::session::SessionDirectory,
    /// Capacity of the bot's mailbox ([`BOT_MAILBOX`] unless configured).
    pub mailbox: usize,
}

/// What a write leaves to do once it is durable: applied in write order after the flush that
/// covers it.
struct AfterFlush {
    /// Whether the write itself succeeded (a failed one is never reported durable).
    written: bool,
    /// The engine's state as written.
    state: BotState,
    /// Venue requests, sent only once durable.
    outbound: Vec<Outbound>,
    /// Journal lines for the owner's live connections.
    events: Vec<BotEvent>,
    /// The command's answer.
    then: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl std::fmt::Debug for AfterFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterFlush")
            .field("written", &self.written)
            .field("outbound", &self.outbound.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
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
    /// Venue failures in a row.
    venue_failures: u32,
    /// Stopping: nothing new goes to the venue.
    stopping: bool,
    /// Writes waiting for the next flush.
    awaiting: Vec<AfterFlush>,
    /// Writes the flush in progress covers; `None` when no flush is in progress. One flush at a
    /// time per bot: a bot writing on every event would otherwise pile up one commit future per
    /// write, and actix polls them all each time the actor wakes.
    flushing: Option<Vec<AfterFlush>>,
}

impl BotActor {
    /// A bot actor that has not started yet.
    pub fn new(args: BotActorArgs) -> Self {
        let state = args.engine.snapshot();
        Self {
            paused: args.paused,
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
            venue_failures: 0,
            stopping: false,
            awaiting: Vec::new(),
            flushing: None,
        }
    }

    fn id(&self) -> BotId {
        self.args.bot_id
    }

    /// Writes pending effects in one transaction, then flushes in the background; `then` runs
    /// (with whether it all worked) once durable.
    fn persist(&mut self, ctx: &mut Context<Self>, then: Option<Box<dyn FnOnce(bool) + Send>>) {
        let state = self.args.engine.snapshot();
        let written = if self.fx.is_empty() && then.is_none() {
            return;
        } else {
            self.args.repo.persist(self.id(), &self.fx, &state)
        };
        if let Err(err) = &written {
            // The engine moved on but the store did not: crash so the restart reloads the truth.
            tracing::error!(bot_id = self.id(), error = %err, "bot state could not be stored");
            self.args.lifeline.crashed(format!("store write failed: {err}"));
            ctx.stop();
        }
        if let Some(link) = &self.args.exposure
            && !(self.fx.orders.is_empty() && self.fx.fills.is_empty())
        {
            link.book.publish(link.user_id, self.args.bot_id, self.args.engine.exposure());
        }
        metrics::counter!("keel_fills_total").increment(self.fx.fills.len() as u64);
        for order in &self.fx.orders {
            metrics::counter!("keel_orders_total", "status" => status_label(order.status))
                .increment(1);
        }
        if let Some(reason) = self.fx.paused.take() {
            self.paused = true;
            let _ = self.args.supervisor.try_send(BotPaused { bot_id: self.id(), reason });
        }
        // Sent only once what they concern is durable.
        let outbound = std::mem::take(&mut self.fx.outbound);
        let events = if self.args.sessions.is_connected(self.args.user_id) {
            std::mem::take(&mut self.fx.events)
        } else {
            Vec::new()
        };
        self.fx.clear();
        self.dirty_snapshot = false;
        self.awaiting.push(AfterFlush { written: written.is_ok(), state, outbound, events, then });
        self.flush(ctx);
    }

    /// Starts a flush covering every write so far, unless one is in progress (its completion
    /// starts the next).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing.is_some() || self.awaiting.is_empty() {
            return;
        }
        self.flushing = Some(std::mem::take(&mut self.awaiting));
        let store = self.args.repo.store().clone();
        ctx.spawn(async move { store.commit().await.is_ok() }.into_actor(self).map(
            |durable, act, ctx| {
                let batch = act.flushing.take().unwrap_or_default();
                act.after_flush(batch, durable, ctx);
                act.flush(ctx);
            },
        ));
    }

    /// Applies what waited for a flush, in write order.
    fn after_flush(&mut self, batch: Vec<AfterFlush>, flushed: bool, ctx: &mut Context<Self>) {
        for AfterFlush { written, state, outbound, events, then } in batch {
            let durable = written && flushed;
            if durable {
                self.args.sessions.publish(self.args.user_id, self.args.bot_id, &events);
                if !outbound.is_empty() {
                    self.dispatch(outbound, ctx);
                }
                self.durable_fill_id = self.durable_fill_id.max(state.last_fill_id);
                self.durable_event_id = self.durable_event_id.max(state.last_event_id);
                if state.last_fill_id >= self.durable_fill_id {
                    self.durable_position = state.position;
                }
            }
            if let Some(then) = then {
                then(durable);
            }
        }
    }

    /// Holds the mailbox until everything written is durable, then stops the actor.
    fn stop_after_flush(&mut self, ctx: &mut Context<Self>, then: impl FnOnce(bool) + 'static) {
        let store = self.args.repo.store().clone();
        ctx.wait(async move { store.commit().await.is_ok() }.into_actor(self).map(
            move |durable, act, ctx| {
                // This flush covers every write so far, including any a flush in progress
                // covers: answer them all before stopping.
                let mut batch = act.flushing.take().unwrap_or_default();
                batch.append(&mut act.awaiting);
                act.after_flush(batch, durable, ctx);
                then(durable);
                ctx.stop();
            },
        ));
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
        if !self.fx.is_empty() {
            self.persist(ctx, None);
        }
    }

    /// Sends durable requests to the venue; the answers are applied as they come.
    fn dispatch(&mut self, outbound: Vec<Outbound>, ctx: &mut Context<Self>) {
        let Some(link) = self.args.live.clone() else {
            tracing::error!(bot_id = self.id(), "a paper bot produced venue requests; dropped");
            return;
        };
        if self.stopping {
            // Left as recorded; the next start reconciles them with the venue.
            return;
        }
        for request in &outbound {
            let order = super::live::order_of(request);
            self.in_flight.insert(order.id);
            if matches!(request, Outbound::Place(_)) {
                self.sent_at.insert(order.id, Instant::now());
            }
        }
        let symbol = self.args.symbol.clone();
        ctx.spawn(
            execute(link, symbol, outbound)
                .into_actor(self)
                .map(|results, act, ctx| act.apply_live(results, ctx)),
        );
    }

    /// Applies the venue's answers, pauses the strategy when the venue keeps failing, and stores
    /// (and sends) whatever follows.
    fn apply_live(&mut self, results: Vec<LiveResult>, ctx: &mut Context<Self>) {
        let mut last_error = None;
        self.args.engine.observe_time(keel_venues::now_us() / 1000);
        for result in results {
            let id = result.order_id;
            self.in_flight.remove(&id);
            if result.cancel_failed {
                self.args.engine.cancel_failed(id);
            }
            if let Some(err) = result.venue_error {
                self.venue_failures += 1;
                last_error = Some(err);
            } else if result.order_answered {
                self.venue_failures = 0;
            }
            let Some(report) = result.report else { continue };
            let recent = self.sent_at.get(&id).is_some_and(|t| t.elapsed() < NOT_FOUND_GRACE);
            if report.outcome == ExecOutcome::NotFound && recent {
                continue;
            }
            let engine = &mut self.args.engine;
            let fx = &mut self.fx;
            if let Err(panic) = catch_panic(|| engine.on_exec(report, fx)) {
                tracing::error!(bot_id = self.args.bot_id, %panic, "strategy panicked on a fill");
                self.args.lifeline.crashed(format!("strategy panicked: {panic}"));
                self.persist(ctx, None);
                ctx.stop();
                return;
            }
        }
        if let Some(err) = last_error
            && self.venue_failures >= VENUE_FAILURE_LIMIT
            && !self.paused
        {
            let reason = format!("the venue failed {} times in a row: {err}", self.venue_failures);
            self.args.engine.set_strategy_active(false);
            let now = keel_venues::now_us() / 1000;
            let message = reason.clone();
            self.args.engine.log(
                now,
                BotEventKind::Log { level: "error".into(), message },
                &mut self.fx,
            );
            self.fx.paused = Some(reason);
        }
        let open = self.args.engine.open_orders();
        self.sent_at.retain(|id, _| open.iter().any(|o| o.id == *id));
        self.persist(ctx, None);
    }

    /// Publishes this bot's exposure and reads its budget under the owner's limit.
    fn refresh_exposure(&mut self) {
        let Some(link) = &self.args.exposure else { return };
        let engine = &mut self.args.engine;
        link.book.publish(link.user_id, self.args.bot_id, engine.exposure());
        engine.set_user_budget(link.book.budget(link.user_id, self.args.bot_id));
    }

    /// Asks the venue about every open live order that has no request outstanding.
    fn poll_live(&mut self, ctx: &mut Context<Self>) {
        let requests: Vec<Outbound> = self
            .args
            .engine
            .open_orders()
            .iter()
            .filter(|o| !keel_core::engine::is_armed_stop(o) && !self.in_flight.contains(&o.id))
            .map(|o| Outbound::Query(o.clone()))
            .collect();
        if !requests.is_empty() {
            self.dispatch(requests, ctx);
        }
    }

    fn subscribe(&self, ctx: &mut Context<Self>) {
        let Some(feed) = self.args.feed.get() else {
            tracing::warn!(bot_id = self.id(), "venue feed is not running; the bot waits for data");
            return;
        };
        let recipient = ctx.address().recipient::<MarketData>();
        for kind in [StreamKind::Trades, StreamKind::Quotes] {
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

fn status_label(status: keel_core::trading::OrderStatus) -> &'static str {
    use keel_core::trading::OrderStatus::*;
    match status {
        New => "new",
        Accepted => "accepted",
        PartiallyFilled => "partially_filled",
        Filled => "filled",
        Canceled => "canceled",
        Rejected => "rejected",
        Unknown => "unknown",
        Reconciled => "reconciled",
    }
}

impl Actor for BotActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.args.mailbox);
        self.args.engine.set_strategy_active(!self.paused);
        self.subscribe(ctx);
        ctx.run_interval(SNAPSHOT_INTERVAL, |act, _| {
            if act.dirty_snapshot {
                act.dirty_snapshot = false;
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
            self.poll_live(ctx);
            ctx.run_interval(LIVE_POLL, |act, ctx| act.poll_live(ctx));
        }
        ctx.run_interval(SUPERVISOR_CHECK, |act, ctx| {
            if !act.args.supervisor.connected() {
                act.args.lifeline.crashed("supervisor gone");
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(link) = &self.args.exposure {
            link.book.remove(link.user_id, self.args.bot_id);
        }
        if let Some(feed) = self.args.feed.get() {
            for kind in [StreamKind::Trades, StreamKind::Quotes] {
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

impl Handler<Ask<TradeCommand>> for BotActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<TradeCommand>, ctx: &mut Context<Self>) {
        let (command, replier) = ask.into_parts();
        self.refresh_exposure();
        let engine = &mut self.args.engine;
        engine.observe_time(keel_venues::now_us() / 1000);
        let fx = &mut self.fx;
        let result = match command {
            TradeCommand::Place(req) => {
                engine.place_manual(req, fx).map(TradeOutcome::Order).map_err(TradeError::Rejected)
            }
            TradeCommand::Cancel(id) => engine
                .cancel(id, "canceled by owner", fx)
                .map(TradeOutcome::Order)
                .map_err(TradeError::from),
            TradeCommand::ClosePosition => engine
                .close_position(fx)
                .map(|o| o.map_or(TradeOutcome::Nothing, TradeOutcome::Order))
                .map_err(TradeError::Rejected),
            TradeCommand::CancelAll => {
                Ok(TradeOutcome::Canceled(engine.cancel_all("canceled by owner", fx)))
            }
        };
        self.persist(
            ctx,
            Some(Box::new(move |durable| {
                replier.send(if durable { result } else { Err(TradeError::Store) });
            })),
        );
    }
}

impl Handler<Ask<SetPaused>> for BotActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<SetPaused>, ctx: &mut Context<Self>) {
        let (SetPaused(paused), replier) = ask.into_parts();
        self.paused = paused;
        if !paused {
            self.venue_failures = 0;
        }
        self.args.engine.set_strategy_active(!paused);
        let status = if paused { BotStatus::Paused } else { BotStatus::Running };
        let now = keel_venues::now_us() / 1000;
        self.args.engine.log(now, BotEventKind::Status { status, reason: None }, &mut self.fx);
        self.persist(ctx, Some(Box::new(move |_| replier.send(()))));
    }
}

impl Handler<Ask<StopBot>> for BotActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<StopBot>, ctx: &mut Context<Self>) {
        let (StopBot { flatten }, replier) = ask.into_parts();
        let engine = &mut self.args.engine;
        engine.observe_time(keel_venues::now_us() / 1000);
        let canceled = engine.cancel_all("bot stopped", &mut self.fx);
        if flatten && let Err(rejection) = engine.close_position(&mut self.fx) {
            tracing::warn!(bot_id = self.args.bot_id, reason = %rejection.reason, "could not flatten");
        }
        let now = keel_venues::now_us() / 1000;
        engine.log(
            now,
            BotEventKind::Status { status: BotStatus::Stopped, reason: None },
            &mut self.fx,
        );
        self.args.lifeline.stopped_on_request();
        let reply = move |durable| {
            replier.send(if durable { Ok(canceled) } else { Err(TradeError::Store) });
        };
        let Some(link) = self.args.live.clone() else {
            self.persist(ctx, None);
            self.stop_after_flush(ctx, reply);
            return;
        };
        // Live: the cancels (and the flattening order) are sent and answered before stopping.
        let outbound = std::mem::take(&mut self.fx.outbound);
        self.persist(ctx, None);
        self.stopping = true;
        let store = self.args.repo.store().clone();
        let symbol = self.args.symbol.clone();
        ctx.wait(
            async move {
                match store.commit().await {
                    Ok(()) => execute(link, symbol, outbound).await,
                    Err(_) => Vec::new(),
                }
            }
            .into_actor(self)
            .map(move |results, act, ctx| {
                act.apply_live(results, ctx);
                act.stop_after_flush(ctx, reply);
            }),
        );
    }
}

impl Handler<Ask<GetLive>> for BotActor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetLive>, _: &mut Context<Self>) {
        ask.reply(LiveView {
            position: self.durable_position.clone(),
            mark_price: self.args.engine.mark_price(),
            durable_fill_id: self.durable_fill_id,
            durable_event_id: self.durable_event_id,
            status: if self.paused { BotStatus::Paused } else { BotStatus::Running },
        });
    }
}

impl Handler<Stop> for BotActor {
    type Result = ();

    /// Process shutdown: keep orders and state as they are, so the bot resumes on the next start.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.args.lifeline.stopped_on_request();
        self.persist(ctx, None);
        self.stop_after_flush(ctx, |_| {});
    }
}
