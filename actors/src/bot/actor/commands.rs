//! The bot's handlers for what its owner and its supervisor ask: trading commands, pause and
//! resume, stop (for good, or for a process shutdown), and the live view.
//!
//! Every answer is sent only once the change it reports is durable.

use actix::prelude::*;

use super::BotActor;
use super::messages::{
    GetLive, LiveView, SetPaused, StopBot, Stopped, TradeCommand, TradeError, TradeOutcome,
};
use crate::bot::live::execute;
use crate::mailbox::Ask;
use crate::supervisor::Stop;
use keel_core::bot::BotStatus;
use keel_core::engine::BotEventKind;

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
        let reply = move |durable, still_open| {
            let stopped = Stopped { canceled, still_open };
            replier.send(if durable { Ok(stopped) } else { Err(TradeError::Store) });
        };
        let Some(link) = self.args.live.clone() else {
            self.persist(ctx, None);
            self.stop_after_flush(ctx, move |durable| reply(durable, Vec::new()));
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
                // What the venue did not confirm canceled (armed stops never left Keel).
                let still_open: Vec<_> = act
                    .args
                    .engine
                    .open_orders()
                    .iter()
                    .filter(|o| !keel_core::engine::is_armed_stop(o))
                    .cloned()
                    .collect();
                act.stop_after_flush(ctx, move |durable| reply(durable, still_open));
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
