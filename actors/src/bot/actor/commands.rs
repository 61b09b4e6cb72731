//! The bot's handlers for what its owner and its supervisor ask: trading commands, pause and
//! resume, stop (for good, or for a process shutdown), and the live view.
//!
//! Every answer is sent only once the change it reports is durable.

use actix::prelude::*;

use super::BotActor;
use super::messages::{
    CancelOutcome, GetLive, LiveView, OrderCancel, SetPaused, StopBot, TradeCommand, TradeError,
    TradeOutcome,
};
use std::collections::HashMap;

use super::cancel_retry::execute_stop;
use crate::bot::live::LiveResult;
use crate::mailbox::Ask;
use crate::supervisor::Stop;
use keel_core::bot::BotStatus;
use keel_core::engine::{BotEventKind, ExecOutcome, Outbound};

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
                engine.place_manual(req, fx).map(order_outcome).map_err(TradeError::Rejected)
            }
            TradeCommand::Cancel(id) => engine
                .cancel(id, "canceled by owner", fx)
                .map(order_outcome)
                .map_err(TradeError::from),
            TradeCommand::ClosePosition => engine
                .close_position(fx)
                .map(|o| o.map_or(TradeOutcome::Nothing, order_outcome))
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
        // The owner decided: the breaker no longer resumes (or pauses) this bot by itself.
        self.breaker_paused = false;
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
        self.breaker_paused = false;
        let engine = &mut self.args.engine;
        engine.observe_time(keel_venues::now_us() / 1000);
        let open: Vec<(u64, String)> =
            engine.open_orders().iter().map(|o| (o.id, o.client_order_id.clone())).collect();
        engine.cancel_all("bot stopped", &mut self.fx);
        let bot_id = self.args.bot_id;
        // Orders only Keel held (paper orders, armed stops) are canceled now; the others when
        // the venue answers their cancel.
        let at_venue: Vec<u64> = self
            .fx
            .outbound
            .iter()
            .filter_map(|o| match o {
                Outbound::Cancel(order) => Some(order.id),
                _ => None,
            })
            .collect();
        let mut answers: Vec<OrderCancel> = open
            .iter()
            .filter(|(id, _)| !at_venue.contains(id))
            .map(|(order_id, client_order_id)| OrderCancel {
                bot_id,
                order_id: *order_id,
                client_order_id: client_order_id.clone(),
                outcome: CancelOutcome::Canceled,
                reason: None,
            })
            .collect();
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
        let Some(link) = self.args.live.clone() else {
            let reply = move |durable| {
                replier.send(if durable { Ok(answers) } else { Err(TradeError::Store) });
            };
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
                    Ok(()) => execute_stop(link, symbol, outbound).await,
                    Err(_) => (Vec::new(), HashMap::new()),
                }
            }
            .into_actor(self)
            .map(move |(results, attempts), act, ctx| {
                for (id, client_order_id) in open.iter().filter(|(id, _)| at_venue.contains(id)) {
                    let mut answer = cancel_answer(bot_id, *id, client_order_id, &results);
                    let tries = attempts.get(id).copied().unwrap_or(1);
                    if answer.outcome == CancelOutcome::CancelFailed {
                        let message = format!(
                            "cancel of order {id} failed after {tries} attempt(s) ({}); it may \
                             still be working at the venue; Keel keeps asking the venue to \
                             cancel it while the bot stays stopped",
                            answer.reason.as_deref().unwrap_or("no answer")
                        );
                        let now = keel_venues::now_us() / 1000;
                        let line = BotEventKind::Log { level: "error".into(), message };
                        act.args.engine.log(now, line, &mut act.fx);
                    }
                    if tries > 1 {
                        let reason = answer.reason.take().unwrap_or_default();
                        answer.reason = Some(
                            format!("{reason} (after {tries} cancel attempts)")
                                .trim_start()
                                .to_owned(),
                        );
                    }
                    answers.push(answer);
                }
                let reply = move |durable| {
                    replier.send(if durable { Ok(answers) } else { Err(TradeError::Store) });
                };
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
            venue_position: self.venue_book.position.clone(),
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

fn order_outcome(order: keel_core::trading::Order) -> TradeOutcome {
    TradeOutcome::Order(Box::new(order))
}

/// What the venue's answer (in `results`) says of the cancel of `order_id`: canceled only when
/// the venue answered the cancel itself with `CANCELED`; closed already when it reported the
/// order final otherwise (or never received); failed, with the reason, in every other case.
/// Never a cancel that did not happen.
fn cancel_answer(
    bot_id: u64,
    order_id: u64,
    client_order_id: &str,
    results: &[LiveResult],
) -> OrderCancel {
    let answer = |outcome, reason: Option<String>| OrderCancel {
        bot_id,
        order_id,
        client_order_id: client_order_id.to_owned(),
        outcome,
        reason,
    };
    let Some(result) = results.iter().find(|r| r.order_id == order_id) else {
        return answer(CancelOutcome::CancelFailed, Some("the cancel was not sent".into()));
    };
    match result.report.as_ref().map(|r| &r.outcome) {
        Some(ExecOutcome::Venue { status, .. })
            if status == "CANCELED" && result.order_answered =>
        {
            answer(CancelOutcome::Canceled, None)
        }
        Some(ExecOutcome::Venue { status, .. })
            if matches!(
                status.as_str(),
                "FILLED" | "CANCELED" | "EXPIRED" | "EXPIRED_IN_MATCH" | "REJECTED"
            ) =>
        {
            answer(CancelOutcome::AlreadyClosed, Some(format!("the venue reports it {status}")))
        }
        Some(ExecOutcome::NotFound) => {
            answer(CancelOutcome::AlreadyClosed, Some("the venue never received the order".into()))
        }
        Some(ExecOutcome::Venue { status, .. }) => answer(
            CancelOutcome::CancelFailed,
            Some(format!("the venue still reports it {status}")),
        ),
        Some(ExecOutcome::Rejected(reason) | ExecOutcome::Unknown(reason)) => {
            answer(CancelOutcome::CancelFailed, Some(reason.clone()))
        }
        None => answer(
            CancelOutcome::CancelFailed,
            Some(result.venue_error.clone().unwrap_or_else(|| "no answer".into())),
        ),
    }
}
