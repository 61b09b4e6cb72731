//! `BotSupervisor`: owns every bot's definition and lifecycle, and supervises the bot actors.
//!
//! All changes to bot definitions go through this one actor, so a start cannot race an edit or a
//! delete. Running bots are spread over a pool of arbiters (threads), so one slow or panicking bot
//! never stalls another. A bot actor that dies is restarted from the store; past the restart budget
//! the bot is marked `failed` with the reason, and its owner sees it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::actor::{
    BotActor, BotActorArgs, BotExited, BotLifeline, BotPaused, GetLive, LiveView, SetPaused,
    StopBot, TradeCommand, TradeError, TradeOutcome,
};
use super::exposure::{ExposureBook, ExposureLink};
use super::live::LiveLink;
use super::repo::BotRepo;
use crate::feed::FeedAddress;
use crate::mailbox::{Ask, AskError, Query};
use crate::store::StoreError;
use crate::supervisor::{
    AddressSlot, ChildHandle, ChildSpec, Lifeline, RestartPolicy, StartError, Stop,
};
use keel_core::bot::{BotId, BotMode, BotRecord, BotStatus, Control, UserId};
use keel_core::engine::{BotEngine, EngineConfig};
use keel_core::market::VenueId;
use keel_core::trading::paper::PaperConfig;

/// How long the supervisor waits for a bot to answer a forwarded command.
const BOT_DEADLINE: Duration = Duration::from_secs(5);
/// How long shutdown waits for bots to save their state.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the bot supervisor's current address is published.
pub type BotsAddress = AddressSlot<BotSupervisor>;

/// Why a bot request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BotError {
    /// No such bot for this user (another user's bot is "not found" too).
    #[error("no bot {0} for this user")]
    NotFound(BotId),
    /// The bot's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A per-user limit was reached.
    #[error("{0}")]
    Limit(String),
    /// The bot's command failed.
    #[error(transparent)]
    Trade(#[from] TradeError),
    /// The bot actor did not answer.
    #[error(transparent)]
    Unavailable(#[from] AskError),
    /// Storage failed; nothing changed.
    #[error("storage failed")]
    Store,
}

impl From<StoreError> for BotError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "bot storage failed");
        BotError::Store
    }
}

/// Settings of the bot supervisor.
#[derive(Debug, Clone)]
pub struct BotsConfig {
    /// Restart budget per bot.
    pub policy: RestartPolicy,
    /// Arbiter threads bots are spread over.
    pub arbiters: usize,
    /// Most bots one user may define.
    pub max_bots_per_user: usize,
    /// Paper slippage when there is no quote, in basis points.
    pub paper_slippage_bps: rust_decimal::Decimal,
    /// What live bots trade through.
    pub live: LiveVenues,
    /// Most exposure (quote) one user's bots may hold together; `None` for no limit.
    pub max_user_exposure: Option<rust_decimal::Decimal>,
    /// Where users' live connections are, for bot events.
    pub sessions: crate::session::SessionDirectory,
    /// Capacity of the supervisor's own mailbox: every bot request from the API passes it.
    pub mailbox: usize,
    /// Capacity of each bot's mailbox (market data and commands share it).
    pub bot_mailbox: usize,
}

/// The venues live bots can trade on, and the vault that signs for them.
#[derive(Debug, Clone, Default)]
pub struct LiveVenues {
    /// The vault.
    pub vault: crate::vault::VaultAddress,
    /// One order router per venue that takes live orders (from the venue registry).
    pub routers: BTreeMap<VenueId, Arc<dyn keel_venues::routing::OrderRouter>>,
}

macro_rules! query {
    ($name:ident => $answer:ty) => {
        impl Query for $name {
            type Answer = $answer;
        }
    };
}

/// Defines a new bot (`id` is assigned here).
#[derive(Debug, Clone)]
pub struct CreateBot(pub BotRecord);
query!(CreateBot => Result<BotRecord, BotError>);

/// Replaces an idle bot's definition.
#[derive(Debug, Clone)]
pub struct UpdateBot(pub BotRecord);
query!(UpdateBot => Result<BotRecord, BotError>);

/// Deletes an idle bot and its history.
#[derive(Debug, Clone, Copy)]
pub struct DeleteBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
}
query!(DeleteBot => Result<(), BotError>);

/// One bot's definition.
#[derive(Debug, Clone, Copy)]
pub struct GetBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
}
query!(GetBot => Result<BotRecord, BotError>);

/// The user's bots.
#[derive(Debug, Clone, Copy)]
pub struct ListBots {
    /// Owner.
    pub user_id: UserId,
}
query!(ListBots => Vec<BotRecord>);

/// Start, stop, pause or resume.
#[derive(Debug, Clone, Copy)]
pub struct ControlBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
    /// What to do.
    pub control: Control,
}
query!(ControlBot => Result<BotRecord, BotError>);

/// An owner's trading command for a running bot.
#[derive(Debug, Clone)]
pub struct ForBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
    /// The command.
    pub command: TradeCommand,
}
query!(ForBot => Result<TradeOutcome, BotError>);

/// A bot's definition and, when running, its live view.
#[derive(Debug, Clone, Copy)]
pub struct GetLiveBot {
    /// Owner.
    pub user_id: UserId,
    /// Bot.
    pub bot_id: BotId,
}
query!(GetLiveBot => Result<(BotRecord, Option<LiveView>), BotError>);

/// Stops every bot of a user, canceling their orders, and optionally flattens them.
#[derive(Debug, Clone, Copy)]
pub struct KillSwitch {
    /// Owner.
    pub user_id: UserId,
    /// Close positions with market orders first.
    pub flatten: bool,
}
query!(KillSwitch => Result<KillReport, BotError>);

/// What the kill switch did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct KillReport {
    /// Bots stopped.
    pub bots_stopped: usize,
    /// Orders canceled.
    pub orders_canceled: usize,
    /// Bots that did not answer in time (their state is unchanged).
    pub failed: Vec<BotId>,
}

#[derive(Debug)]
struct RunningBot {
    addr: Addr<BotActor>,
    generation: u64,
}

/// The bot supervisor.
pub struct BotSupervisor {
    repo: BotRepo,
    feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
    config: BotsConfig,
    bots: BTreeMap<BotId, BotRecord>,
    running: HashMap<BotId, RunningBot>,
    restarts: HashMap<BotId, VecDeque<Instant>>,
    /// Bots with a lifecycle change in flight; another change meanwhile is a conflict.
    busy: HashMap<BotId, ()>,
    arbiters: Vec<Arbiter>,
    next_arbiter: usize,
    generation: u64,
    stopping: bool,
    /// The per-user exposure book, when a limit is configured.
    exposure: Option<Arc<ExposureBook>>,
    _lifeline: Option<Lifeline>,
}

impl std::fmt::Debug for BotSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotSupervisor")
            .field("bots", &self.bots.len())
            .field("running", &self.running.len())
            .finish_non_exhaustive()
    }
}

impl BotSupervisor {
    /// Loads every bot definition.
    ///
    /// # Errors
    /// The store could not be read.
    pub fn new(
        repo: BotRepo,
        feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
        config: BotsConfig,
    ) -> Result<Self, StoreError> {
        let bots = repo.all_bots()?.into_iter().map(|b| (b.id, b)).collect();
        let exposure =
            config.max_user_exposure.map(|limit| Arc::new(ExposureBook::new(Some(limit))));
        Ok(Self {
            exposure,
            repo,
            feeds,
            config,
            bots,
            running: HashMap::new(),
            restarts: HashMap::new(),
            busy: HashMap::new(),
            arbiters: Vec::new(),
            next_arbiter: 0,
            generation: 0,
            stopping: false,
            _lifeline: None,
        })
    }

    fn owned(&self, user_id: UserId, bot_id: BotId) -> Result<&BotRecord, BotError> {
        self.bots.get(&bot_id).filter(|b| b.user_id == user_id).ok_or(BotError::NotFound(bot_id))
    }

    fn not_busy(&self, bot_id: BotId) -> Result<(), BotError> {
        if self.busy.contains_key(&bot_id) {
            return Err(BotError::Conflict(format!(
                "bot {bot_id} has a change in progress; retry"
            )));
        }
        Ok(())
    }

    /// Saves a definition and answers once it is durable.
    fn save_then<R: 'static>(
        &mut self,
        record: BotRecord,
        ctx: &mut Context<Self>,
        reply: impl FnOnce(Result<BotRecord, BotError>) -> R + 'static,
    ) {
        if let Err(err) = self.repo.put_bot(&record) {
            reply(Err(err.into()));
            return;
        }
        self.bots.insert(record.id, record.clone());
        let store = self.repo.store().clone();
        ctx.spawn(async move { store.commit().await }.into_actor(self).map(move |done, _, _| {
            reply(done.map(|()| record).map_err(BotError::from));
        }));
    }

    /// Starts the actor of an active bot, rebuilding its engine from the store.
    fn launch(&mut self, bot_id: BotId, ctx: &mut Context<Self>) -> Result<(), String> {
        let record = self.bots.get(&bot_id).ok_or("bot vanished")?.clone();
        let strategy = keel_core::strategy::build(&record.strategy, &record.filters)
            .map_err(|errors| format!("strategy does not build: {errors:?}"))?;
        let state = self.repo.state(bot_id).map_err(|e| e.to_string())?;
        let open = self.repo.open_orders(bot_id).map_err(|e| e.to_string())?;
        let engine_config = EngineConfig {
            bot_id,
            filters: record.filters.clone(),
            risk: record.risk.clone(),
            bracket: record.bracket,
            paper: PaperConfig {
                fee_bps: record.paper.fee_bps,
                slippage_bps: self.config.paper_slippage_bps,
            },
            allow_short: keel_venues::registry::capabilities(record.venue).shorting,
            live: record.mode == BotMode::Live,
        };
        let live =
            match record.mode {
                BotMode::Paper => None,
                BotMode::Live => Some(LiveLink {
                    router: self.config.live.routers.get(&record.venue).cloned().ok_or_else(
                        || format!("live orders on {} are not configured", record.venue),
                    )?,
                    vault: self.config.live.vault.clone(),
                    user_id: record.user_id,
                    credential_id: record
                        .exchange_account_id
                        .ok_or("a live bot needs an account")?,
                }),
            };
        let mut state = state;
        if state.last_order_id == 0 && state.position == Default::default() {
            state.position.quote_balance = record.paper.starting_quote;
        }
        let engine = BotEngine::new(engine_config, state, strategy, open);
        self.generation += 1;
        let args = BotActorArgs {
            bot_id,
            symbol: record.symbol.clone(),
            engine,
            paused: record.status == BotStatus::Paused,
            repo: self.repo.clone(),
            feed: self.feeds.get(&record.venue).cloned().unwrap_or_default(),
            lifeline: BotLifeline::new(bot_id, self.generation, ctx.address().recipient()),
            supervisor: ctx.address().recipient(),
            live,
            user_id: record.user_id,
            sessions: self.config.sessions.clone(),
            mailbox: self.config.bot_mailbox,
            exposure: self
                .exposure
                .as_ref()
                .map(|book| ExposureLink { book: book.clone(), user_id: record.user_id }),
        };
        if self.arbiters.is_empty() {
            self.arbiters = (0..self.config.arbiters.max(1)).map(|_| Arbiter::new()).collect();
        }
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let addr = BotActor::start_in_arbiter(&arbiter.handle(), move |_| BotActor::new(args));
        self.running.insert(bot_id, RunningBot { addr, generation: self.generation });
        Ok(())
    }

    fn mark_failed(&mut self, bot_id: BotId, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(bot_id, %reason, "bot failed");
        metrics::counter!("keel_actor_failures_total", "actor" => "bot").increment(1);
        if let Some(mut record) = self.bots.get(&bot_id).cloned() {
            record.status = BotStatus::Failed;
            record.status_reason = Some(reason);
            record.updated_ts = now_ms();
            self.save_then(record, ctx, |_| ());
        }
    }

    fn stop_bot(
        &mut self,
        bot_id: BotId,
        flatten: bool,
        ctx: &mut Context<Self>,
        reply: impl FnOnce(Result<(BotRecord, usize), BotError>) + 'static,
    ) {
        let Some(running) = self.running.remove(&bot_id) else {
            // Failed bots have no actor: just record the stop.
            let Some(mut record) = self.bots.get(&bot_id).cloned() else {
                return reply(Err(BotError::NotFound(bot_id)));
            };
            record.status = BotStatus::Stopped;
            record.status_reason = None;
            record.updated_ts = now_ms();
            return self.save_then(record, ctx, move |r| reply(r.map(|r| (r, 0))));
        };
        self.busy.insert(bot_id, ());
        let addr = running.addr;
        ctx.spawn(
            async move { crate::mailbox::ask(&addr, StopBot { flatten }, BOT_DEADLINE, "bot").await }
                .into_actor(self)
                .map(move |answer, act, ctx| {
                    act.busy.remove(&bot_id);
                    let canceled = match answer {
                        Ok(Ok(n)) => n,
                        Ok(Err(err)) => return reply(Err(err.into())),
                        Err(err) => return reply(Err(err.into())),
                    };
                    let Some(mut record) = act.bots.get(&bot_id).cloned() else {
                        return reply(Err(BotError::NotFound(bot_id)));
                    };
                    record.status = BotStatus::Stopped;
                    record.status_reason = None;
                    record.updated_ts = now_ms();
                    act.save_then(record, ctx, move |r| reply(r.map(|r| (r, canceled))));
                }),
        );
    }
}

fn now_ms() -> u64 {
    keel_venues::now_us() / 1000
}

impl Actor for BotSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox);
        let active: Vec<BotId> =
            self.bots.values().filter(|b| b.status.is_active()).map(|b| b.id).collect();
        tracing::info!(bots = self.bots.len(), resuming = active.len(), "bot supervisor started");
        for bot_id in active {
            if let Err(reason) = self.launch(bot_id, ctx) {
                self.mark_failed(bot_id, reason, ctx);
            }
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<Ask<CreateBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<CreateBot>, ctx: &mut Context<Self>) {
        let (CreateBot(mut record), replier) = ask.into_parts();
        let owned = self.bots.values().filter(|b| b.user_id == record.user_id).count();
        if owned >= self.config.max_bots_per_user {
            return replier.send(Err(BotError::Limit(format!(
                "a user may have at most {} bots",
                self.config.max_bots_per_user
            ))));
        }
        record.id = match self.repo.store().next_id() {
            Ok(id) => id + 1,
            Err(err) => return replier.send(Err(err.into())),
        };
        record.status = BotStatus::Created;
        self.save_then(record, ctx, move |r| replier.send(r));
    }
}

impl Handler<Ask<UpdateBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<UpdateBot>, ctx: &mut Context<Self>) {
        let (UpdateBot(record), replier) = ask.into_parts();
        let current = match self.owned(record.user_id, record.id) {
            Ok(current) => current,
            Err(err) => return replier.send(Err(err)),
        };
        if !current.status.is_idle() || self.busy.contains_key(&record.id) {
            return replier.send(Err(BotError::Conflict(format!(
                "bot {} is {:?}; stop it before editing",
                record.id, current.status
            ))));
        }
        let record = BotRecord { status: current.status, created_ts: current.created_ts, ..record };
        self.save_then(record, ctx, move |r| replier.send(r));
    }
}

impl Handler<Ask<DeleteBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<DeleteBot>, ctx: &mut Context<Self>) {
        let (DeleteBot { user_id, bot_id }, replier) = ask.into_parts();
        let status = match self.owned(user_id, bot_id) {
            Ok(record) => record.status,
            Err(err) => return replier.send(Err(err)),
        };
        if !status.is_idle() || self.busy.contains_key(&bot_id) {
            return replier.send(Err(BotError::Conflict(format!(
                "bot {bot_id} is {status:?}; stop it before deleting"
            ))));
        }
        if let Err(err) = self.repo.delete_bot(bot_id) {
            return replier.send(Err(err.into()));
        }
        self.bots.remove(&bot_id);
        self.restarts.remove(&bot_id);
        let store = self.repo.store().clone();
        ctx.spawn(async move { store.commit().await }.into_actor(self).map(move |done, _, _| {
            replier.send(done.map_err(BotError::from));
        }));
    }
}

impl Handler<Ask<GetBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetBot>, _: &mut Context<Self>) {
        let (GetBot { user_id, bot_id }, replier) = ask.into_parts();
        replier.send(self.owned(user_id, bot_id).cloned());
    }
}

impl Handler<Ask<ListBots>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<ListBots>, _: &mut Context<Self>) {
        let (ListBots { user_id }, replier) = ask.into_parts();
        replier.send(self.bots.values().filter(|b| b.user_id == user_id).cloned().collect());
    }
}

impl Handler<Ask<ControlBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<ControlBot>, ctx: &mut Context<Self>) {
        let (ControlBot { user_id, bot_id, control }, replier) = ask.into_parts();
        let record = match self.owned(user_id, bot_id).cloned() {
            Ok(record) => record,
            Err(err) => return replier.send(Err(err)),
        };
        if let Err(err) = self.not_busy(bot_id) {
            return replier.send(Err(err));
        }
        let Some(next) = record.status.after(control) else {
            return replier.send(Err(BotError::Conflict(format!(
                "cannot {control:?} a bot that is {:?}",
                record.status
            ))));
        };
        match control {
            Control::Stop => {
                self.stop_bot(bot_id, false, ctx, move |r| replier.send(r.map(|(r, _)| r)))
            }
            Control::Start => {
                let mut record = record;
                record.status = next;
                record.status_reason = None;
                record.updated_ts = now_ms();
                self.bots.insert(bot_id, record.clone());
                self.restarts.remove(&bot_id);
                if let Err(reason) = self.launch(bot_id, ctx) {
                    self.mark_failed(bot_id, reason.clone(), ctx);
                    return replier
                        .send(Err(BotError::Conflict(format!("bot cannot start: {reason}"))));
                }
                self.save_then(record, ctx, move |r| replier.send(r));
            }
            Control::Pause | Control::Resume => {
                let Some(running) = self.running.get(&bot_id) else {
                    return replier
                        .send(Err(BotError::Conflict(format!("bot {bot_id} is not running"))));
                };
                let addr = running.addr.clone();
                self.busy.insert(bot_id, ());
                let paused = control == Control::Pause;
                ctx.spawn(
                    async move {
                        crate::mailbox::ask(&addr, SetPaused(paused), BOT_DEADLINE, "bot").await
                    }
                    .into_actor(self)
                    .map(move |answer, act, ctx| {
                        act.busy.remove(&bot_id);
                        if let Err(err) = answer {
                            return replier.send(Err(err.into()));
                        }
                        let mut record = record;
                        record.status = next;
                        record.status_reason = None;
                        record.updated_ts = now_ms();
                        act.save_then(record, ctx, move |r| replier.send(r));
                    }),
                );
            }
        }
    }
}

impl Handler<Ask<ForBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<ForBot>, ctx: &mut Context<Self>) {
        let (ForBot { user_id, bot_id, command }, replier) = ask.into_parts();
        let status = match self.owned(user_id, bot_id) {
            Ok(record) => record.status,
            Err(err) => return replier.send(Err(err)),
        };
        let Some(running) = self.running.get(&bot_id) else {
            return replier.send(Err(BotError::Conflict(format!(
                "bot {bot_id} is {status:?}; start it to trade"
            ))));
        };
        let addr = running.addr.clone();
        ctx.spawn(
            async move {
                match crate::mailbox::ask(&addr, command, BOT_DEADLINE, "bot").await {
                    Ok(answer) => answer.map_err(BotError::from),
                    Err(err) => Err(err.into()),
                }
            }
            .into_actor(self)
            .map(move |answer, _, _| replier.send(answer)),
        );
    }
}

impl Handler<Ask<GetLiveBot>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<GetLiveBot>, ctx: &mut Context<Self>) {
        let (GetLiveBot { user_id, bot_id }, replier) = ask.into_parts();
        let record = match self.owned(user_id, bot_id) {
            Ok(record) => record.clone(),
            Err(err) => return replier.send(Err(err)),
        };
        let Some(running) = self.running.get(&bot_id) else {
            return replier.send(Ok((record, None)));
        };
        let addr = running.addr.clone();
        ctx.spawn(
            async move { crate::mailbox::ask(&addr, GetLive, BOT_DEADLINE, "bot").await }
                .into_actor(self)
                .map(move |answer, _, _| {
                    replier.send(answer.map(|live| (record, Some(live))).map_err(BotError::from));
                }),
        );
    }
}

impl Handler<Ask<KillSwitch>> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, ask: Ask<KillSwitch>, ctx: &mut Context<Self>) {
        let (KillSwitch { user_id, flatten }, replier) = ask.into_parts();
        let targets: Vec<BotId> = self
            .bots
            .values()
            .filter(|b| {
                b.user_id == user_id && (b.status.is_active() || b.status == BotStatus::Failed)
            })
            .map(|b| b.id)
            .collect();
        tracing::warn!(user_id, bots = targets.len(), flatten, "kill switch");
        let report = std::rc::Rc::new(std::cell::RefCell::new(KillReport::default()));
        let replier = std::rc::Rc::new(std::cell::RefCell::new(Some(replier)));
        let pending = std::rc::Rc::new(std::cell::Cell::new(targets.len()));
        if targets.is_empty() {
            if let Some(r) = replier.borrow_mut().take() {
                r.send(Ok(KillReport::default()));
            }
            return;
        }
        for bot_id in targets {
            let (report, replier, pending) = (report.clone(), replier.clone(), pending.clone());
            // A bot busy with another change is stopped anyway: the kill switch wins.
            self.busy.remove(&bot_id);
            self.stop_bot(bot_id, flatten, ctx, move |result| {
                {
                    let mut report = report.borrow_mut();
                    match result {
                        Ok((_, canceled)) => {
                            report.bots_stopped += 1;
                            report.orders_canceled += canceled;
                        }
                        Err(_) => report.failed.push(bot_id),
                    }
                }
                pending.set(pending.get() - 1);
                if pending.get() == 0
                    && let Some(r) = replier.borrow_mut().take()
                {
                    r.send(Ok(report.borrow().clone()));
                }
            });
        }
    }
}

impl Handler<BotExited> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, exit: BotExited, ctx: &mut Context<Self>) {
        let BotExited { bot_id, generation, reason } = exit;
        let current = self.running.get(&bot_id).map(|r| r.generation);
        if current == Some(generation) {
            self.running.remove(&bot_id);
        } else {
            // An incarnation already replaced or stopped on purpose.
            if self.stopping && self.running.is_empty() {
                ctx.stop();
            }
            return;
        }
        if self.stopping {
            if self.running.is_empty() {
                ctx.stop();
            }
            return;
        }
        if reason == "stopped on request" {
            return;
        }
        tracing::warn!(bot_id, %reason, "bot actor died");
        let window = self.restarts.entry(bot_id).or_default();
        let now = Instant::now();
        while window.front().is_some_and(|t| now.duration_since(*t) > self.config.policy.period) {
            window.pop_front();
        }
        if window.len() as u32 >= self.config.policy.max_restarts {
            self.mark_failed(bot_id, reason, ctx);
            return;
        }
        window.push_back(now);
        metrics::counter!("keel_actor_restarts_total", "actor" => "bot").increment(1);
        if let Err(launch) = self.launch(bot_id, ctx) {
            self.mark_failed(bot_id, format!("{reason}; restart failed: {launch}"), ctx);
        }
    }
}

impl Handler<BotPaused> for BotSupervisor {
    type Result = ();

    fn handle(&mut self, msg: BotPaused, ctx: &mut Context<Self>) {
        let Some(mut record) = self.bots.get(&msg.bot_id).cloned() else { return };
        if record.status != BotStatus::Running {
            return;
        }
        tracing::warn!(bot_id = msg.bot_id, reason = %msg.reason, "bot paused itself");
        record.status = BotStatus::Paused;
        record.status_reason = Some(msg.reason);
        record.updated_ts = now_ms();
        self.save_then(record, ctx, |_| ());
    }
}

impl Handler<Stop> for BotSupervisor {
    type Result = ();

    /// Process shutdown: bots save their state and stop; they resume on the next start.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.stopping = true;
        if let Some(lifeline) = self._lifeline.as_mut() {
            lifeline.stopped_on_request();
        }
        if self.running.is_empty() {
            ctx.stop();
            return;
        }
        for running in self.running.values() {
            running.addr.do_send(Stop);
        }
        ctx.run_later(SHUTDOWN_GRACE, |_, ctx| ctx.stop());
    }
}

/// Starts (and restarts) the bot supervisor under the root supervisor.
#[derive(Debug)]
pub struct BotsSpec {
    repo: BotRepo,
    feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
    config: BotsConfig,
    address: BotsAddress,
}

impl BotsSpec {
    /// A spec publishing the supervisor's address to `address`.
    pub fn new(
        repo: BotRepo,
        feeds: Arc<BTreeMap<VenueId, FeedAddress>>,
        config: BotsConfig,
        address: BotsAddress,
    ) -> Self {
        Self { repo, feeds, config, address }
    }
}

impl ChildSpec for BotsSpec {
    fn name(&self) -> &str {
        "bots"
    }

    fn start(&mut self, lifeline: Lifeline) -> Result<Box<dyn ChildHandle>, StartError> {
        let mut supervisor =
            BotSupervisor::new(self.repo.clone(), self.feeds.clone(), self.config.clone())
                .map_err(|e| StartError(format!("bots do not load: {e}")))?;
        supervisor._lifeline = Some(lifeline);
        let addr = supervisor.start();
        self.address.set(addr.clone());
        Ok(Box::new(addr))
    }
}
