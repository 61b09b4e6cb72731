//! Bot actors' lives: launching one (its engine rebuilt from the store, on one of the arbiters),
//! stopping one, restarting one that died within its [`RestartWindow`], marking a bot failed past
//! it, and the process shutdown.
//!
//! Bot actors own a [`Lifeline`] like every supervised actor, so their deaths arrive here as
//! [`ChildExited`] with an [`ExitReason`](crate::supervisor::ExitReason).

use std::time::Instant;

use actix::prelude::*;

use super::postgres::PgWrite;
use super::relaunch::Relaunch;
use super::{BotError, BotSupervisor, RunningBot, SHUTDOWN_GRACE, STOP_DEADLINE, now_ms};
use crate::bot::actor::{BotActor, BotActorArgs, BotPaused, BotResumed, OrderCancel, StopBot};
use crate::bot::exposure::ExposureLink;
use crate::bot::live::LiveLink;
use crate::supervisor::{ChildExited, Lifeline, RestartWindow, Stop};
use keel_core::bot::{BotId, BotMode, BotRecord, BotStatus};
use keel_core::engine::{BotEngine, BotEvent, BotEventKind, BotState, Effects, EngineConfig};
use keel_core::trading::Order;
use keel_core::trading::margin::FuturesConfig;
use keel_core::trading::paper::PaperConfig;
use rust_decimal::Decimal;

use crate::strategies::Modules;

impl BotSupervisor {
    /// Starts the actor of an active bot, rebuilding its engine from the store.
    /// `why` is journaled with the bot's start (`None` when its owner started it); `prepared`
    /// when a derivatives bot's leverage and margin type were just set at the venue (otherwise
    /// the bot sets them before anything else).
    pub(super) fn launch(
        &mut self,
        bot_id: BotId,
        why: Option<String>,
        prepared: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), String> {
        let record = self.bots.get(&bot_id).ok_or("bot vanished")?.clone();
        let postgres = match &self.pg {
            Some(pg) => Some(
                pg.link(record.user_id, self.repo.notifications().cloned())
                    .ok_or("this node does not hold the owner's lease (ownership is moving)")?,
            ),
            None => None,
        };
        let state = self.repo.state(bot_id).map_err(|e| e.to_string())?;
        let open = self.repo.open_orders(bot_id).map_err(|e| e.to_string())?;
        let engine = engine_for(
            &record,
            state,
            open,
            self.config.paper_slippage_bps,
            self.config.modules.as_ref(),
        )?;
        let live = self.live_link(&record)?;
        // The owner's own limits reach the exposure book before the bot's first refresh.
        self.config.user_limits.get(record.user_id).map_err(|e| e.to_string())?;
        self.generation += 1;
        let args = BotActorArgs {
            bot_id,
            symbol: record.symbol.clone(),
            engine,
            paused: record.status == BotStatus::Paused,
            repo: self.repo.clone(),
            feed: self.feeds.get(&record.venue).cloned().unwrap_or_default(),
            lifeline: Lifeline::new(bot_id, self.generation, ctx.address().recipient()),
            supervisor: ctx.address().recipient(),
            resumed: ctx.address().recipient(),
            breaker_paused: record.status == BotStatus::Paused
                && record
                    .status_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(crate::breaker::BREAKER_REASON)),
            reconciled: ctx.address().recipient(),
            live,
            prepared,
            leverage: record.leverage.zip(record.margin_type),
            user_id: record.user_id,
            sessions: self.config.sessions.clone(),
            mailbox: self.config.bot_mailbox,
            start_reason: why,
            postgres,
            indicators: self.indicators.clone(),
            exposure: Some(ExposureLink {
                book: self.config.user_limits.book().clone(),
                user_id: record.user_id,
            }),
        };
        if self.arbiters.is_empty() {
            self.arbiters = (0..self.config.arbiters.max(1)).map(|_| Arbiter::new()).collect();
        }
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let addr = BotActor::start_in_arbiter(&arbiter.handle(), move |_| BotActor::new(args));
        self.running.insert(bot_id, RunningBot { addr, generation: self.generation });
        self.relaunch.launched(bot_id, self.generation);
        self.count_running();
        Ok(())
    }

    pub(super) fn mark_failed(&mut self, bot_id: BotId, reason: String, ctx: &mut Context<Self>) {
        tracing::error!(bot_id, %reason, "bot failed");
        metrics::counter!("keel_actor_failures_total", "actor" => "bot").increment(1);
        self.relaunch_gave_up(bot_id);
        if let Some(mut record) = self.bots.get(&bot_id).cloned() {
            record.status = BotStatus::Failed;
            record.status_reason = Some(reason.clone());
            record.updated_ts = now_ms();
            self.journal_status(&record, Some(reason), ctx);
            self.save_then(record, ctx, |_| ());
        }
    }

    /// A live bot's link to its venue (`None` for a paper bot).
    ///
    /// # Errors
    /// The venue has no order router here, or the bot no exchange account.
    pub(super) fn live_link(&self, record: &BotRecord) -> Result<Option<LiveLink>, String> {
        if record.mode == BotMode::Paper {
            return Ok(None);
        }
        Ok(Some(LiveLink {
            router: self
                .config
                .live
                .routers
                .get(&record.venue)
                .cloned()
                .ok_or_else(|| format!("live orders on {} are not configured", record.venue))?,
            vault: self.config.live.vault.clone(),
            user_id: record.user_id,
            credential_id: record.exchange_account_id.ok_or("a live bot needs an account")?,
            breaker: self
                .config
                .live
                .breakers
                .get(record.venue, record.exchange_account_id.unwrap_or_default()),
            accounts: self.config.live.accounts.clone(),
        }))
    }

    /// Journals a status change of a bot that has no actor (failed, or a failed bot stopped) and
    /// hands it to its owner's connections once durable, as a bot actor does with its own.
    pub(super) fn journal_status(
        &mut self,
        record: &BotRecord,
        reason: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let status = BotEventKind::Status { status: record.status, reason };
        self.journal(record.id, record.user_id, status, ctx);
    }

    /// Journals a line of a bot that has no actor, and hands it to its owner's connections once
    /// durable.
    pub(super) fn journal(
        &mut self,
        bot_id: BotId,
        user_id: u64,
        kind: BotEventKind,
        ctx: &mut Context<Self>,
    ) {
        let written = self.repo.state(bot_id).and_then(|mut state| {
            state.last_event_id += 1;
            let event = BotEvent { id: state.last_event_id, ts: now_ms(), kind };
            let fx = Effects { events: vec![event.clone()], ..Effects::default() };
            self.repo.persist(bot_id, &fx, &state).map(|()| event)
        });
        let event = match written {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(bot_id, error = %err, "status change not journaled");
                return;
            }
        };
        let pg = self.pg.as_ref().map(|pg| {
            let state = self.repo.state(bot_id).unwrap_or_default();
            let fx = Effects { events: vec![event.clone()], ..Effects::default() };
            let deliveries = self.repo.notifications().map_or_else(Vec::new, |notify| {
                notify.recorded_deliveries(user_id, bot_id, std::slice::from_ref(&fx))
            });
            pg.write(user_id, PgWrite::Journal(bot_id, fx, state, deliveries))
        });
        let store = self.repo.store().clone();
        let sessions = self.config.sessions.clone();
        ctx.spawn(
            async move {
                if store.commit().await.is_err() {
                    return;
                }
                if let Some(pg) = pg {
                    let written = match pg {
                        Ok(write) => write.await.map(|_| ()),
                        Err(err) => Err(err),
                    };
                    if let Err(err) = written {
                        tracing::warn!(bot_id, error = %err, "status change not journaled");
                        return;
                    }
                }
                sessions.publish(user_id, bot_id, &[event]);
            }
            .into_actor(self),
        );
    }

    pub(super) fn stop_bot(
        &mut self,
        bot_id: BotId,
        flatten: bool,
        ctx: &mut Context<Self>,
        reply: impl FnOnce(Result<(BotRecord, Vec<OrderCancel>), BotError>) + 'static,
    ) {
        // Stopped by its owner: no longer expected back.
        self.relaunch_gave_up(bot_id);
        let running = self.running.remove(&bot_id);
        self.count_running();
        let Some(running) = running else {
            // Failed bots have no actor: just record the stop.
            let Some(mut record) = self.bots.get(&bot_id).cloned() else {
                return reply(Err(BotError::NotFound(bot_id)));
            };
            record.status = BotStatus::Stopped;
            record.status_reason = None;
            record.updated_ts = now_ms();
            self.journal_status(&record, None, ctx);
            return self.save_then(record, ctx, move |r| reply(r.map(|r| (r, Vec::new()))));
        };
        self.busy.insert(bot_id, ());
        let addr = running.addr;
        ctx.spawn(
            async move { crate::mailbox::ask(&addr, StopBot { flatten }, STOP_DEADLINE, "bot").await }
                .into_actor(self)
                .map(move |answer, act, ctx| {
                    act.busy.remove(&bot_id);
                    let stopped = match answer {
                        Ok(Ok(answers)) => answers,
                        Ok(Err(err)) => return reply(Err(err.into())),
                        Err(err) => return reply(Err(err.into())),
                    };
                    // What the stop could not cancel is chased at the venue while it stays
                    // stopped.
                    act.chase_cancels(bot_id, &stopped, ctx);
                    let Some(mut record) = act.bots.get(&bot_id).cloned() else {
                        return reply(Err(BotError::NotFound(bot_id)));
                    };
                    record.status = BotStatus::Stopped;
                    record.status_reason = None;
                    record.updated_ts = now_ms();
                    act.save_then(record, ctx, move |r| reply(r.map(|r| (r, stopped))));
                }),
        );
    }
}

/// A bot's engine as its definition, its stored state and its open orders make it: how a bot
/// resumes, and how `keel store seed` trades (so seeded history is what a bot would write).
///
/// # Errors
/// The strategy does not build from the definition.
pub(crate) fn engine_for(
    record: &BotRecord,
    mut state: BotState,
    open: Vec<Order>,
    paper_slippage_bps: Decimal,
    modules: Option<&Modules>,
) -> Result<BotEngine, String> {
    let strategy = if Modules::module_of(record).is_some() {
        modules
            .ok_or("strategy modules are not available in this process")?
            .strategy(record.user_id, &record.strategy, &record.filters)
            .map_err(|err| format!("strategy module: {err}"))?
    } else {
        keel_core::strategy::build(&record.strategy, &record.filters)
            .map_err(|errors| format!("strategy does not build: {errors:?}"))?
    };
    let engine_config = EngineConfig {
        bot_id: record.id,
        filters: record.filters.clone(),
        risk: record.risk.clone(),
        bracket: record.bracket,
        paper: PaperConfig { fee_bps: record.paper.fee_bps, slippage_bps: paper_slippage_bps },
        allow_short: keel_venues::registry::capabilities(record.venue).shorting,
        futures: FuturesConfig::for_bot(record),
        live: record.mode == BotMode::Live,
    };
    if state.last_order_id == 0 && state.position == Default::default() {
        state.position.quote_balance = record.paper.starting_quote;
    }
    let mut engine = BotEngine::new(engine_config, state, strategy, open);
    // Live brackets go to the venue as its own OCO order list where it has them.
    engine.set_native_brackets(keel_venues::registry::capabilities(record.venue).native_brackets);
    Ok(engine)
}

impl Actor for BotSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.config.mailbox);
        if let Some(bots) = self.config.postgres.clone() {
            let notify = self.repo.notifications().cloned();
            self.pg = Some(super::postgres::PgSide::start(bots, notify));
            self.follow_leases(ctx);
        }
        let active: Vec<BotId> =
            self.bots.values().filter(|b| b.status.is_active()).map(|b| b.id).collect();
        tracing::info!(bots = self.bots.len(), resuming = active.len(), "bot supervisor started");
        self.relaunch = Relaunch::expect(active.iter().copied());
        if self.relaunch.is_done() {
            self.relaunch_done();
        }
        for bot_id in active {
            if let Err(reason) =
                self.launch(bot_id, Some("resumed as Keel started".into()), false, ctx)
            {
                self.mark_failed(bot_id, reason, ctx);
            }
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics::gauge!("keel_bots_running").set(0.0);
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<ChildExited> for BotSupervisor {
    type Result = ();

    /// A bot actor went away: restart it within its budget, or mark the bot failed.
    fn handle(&mut self, exit: ChildExited, ctx: &mut Context<Self>) {
        let ChildExited { child: bot_id, generation, reason } = exit;
        let current = self.running.get(&bot_id).map(|r| r.generation);
        if current == Some(generation) {
            self.running.remove(&bot_id);
            self.count_running();
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
        if reason.is_requested() {
            return;
        }
        if self.fenced(bot_id, &reason) {
            return;
        }
        tracing::warn!(bot_id, %reason, "bot actor died");
        let policy = self.config.policy;
        let window = self.restarts.entry(bot_id).or_insert_with(|| RestartWindow::new(policy));
        if !window.admit(Instant::now()) {
            self.mark_failed(bot_id, reason.to_string(), ctx);
            return;
        }
        metrics::counter!("keel_actor_restarts_total", "actor" => "bot").increment(1);
        if let Err(launch) =
            self.launch(bot_id, Some(format!("restarted after: {reason}")), false, ctx)
        {
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

impl Handler<BotResumed> for BotSupervisor {
    type Result = ();

    /// Only a bot its account's breaker paused resumes this way: a bot its owner paused (or
    /// stopped) since is left as the owner said.
    fn handle(&mut self, msg: BotResumed, ctx: &mut Context<Self>) {
        let Some(mut record) = self.bots.get(&msg.bot_id).cloned() else { return };
        let by_breaker = record
            .status_reason
            .as_deref()
            .is_some_and(|r| r.starts_with(crate::breaker::BREAKER_REASON));
        if record.status != BotStatus::Paused || !by_breaker {
            return;
        }
        tracing::info!(bot_id = msg.bot_id, "bot resumed: its account's circuit breaker closed");
        record.status = BotStatus::Running;
        record.status_reason = None;
        record.updated_ts = now_ms();
        self.save_then(record, ctx, |_| ());
    }
}

impl Handler<Stop> for BotSupervisor {
    type Result = ();

    /// Process shutdown: bots save their state and stop; they resume on the next start.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.stopping = true;
        if let Some(lifeline) = self.lifeline.as_mut() {
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
