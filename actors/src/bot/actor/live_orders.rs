//! A live bot's order plumbing: durable venue requests go out through the bot's
//! [`LiveLink`](crate::bot::live::LiveLink), and the venue's answers come back into the engine.
//! Open orders are polled; a venue that keeps failing opens the account's circuit breaker,
//! which pauses the strategy ([`super::breaker`]).

use std::time::Instant;

use actix::prelude::*;

use super::BotActor;
use crate::bot::live::{LiveResult, execute};
use crate::supervisor::catch_panic;
use keel_core::engine::{ExecOutcome, Outbound};

impl BotActor {
    /// Sends durable requests to the venue; the answers are applied as they come.
    pub(super) fn dispatch(&mut self, outbound: Vec<Outbound>, ctx: &mut Context<Self>) {
        self.dispatch_then(outbound, ctx, |_, _, _| {});
    }

    /// [`Self::dispatch`], then `then` with whether the venue answered every request.
    fn dispatch_then(
        &mut self,
        outbound: Vec<Outbound>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, bool, &mut Context<Self>) + 'static,
    ) {
        let Some(link) = self.args.live.clone() else {
            tracing::error!(bot_id = self.id(), "a paper bot produced venue requests; dropped");
            return;
        };
        if self.stopping {
            // Left as recorded; the next start reconciles them with the venue.
            return;
        }
        for request in &outbound {
            let places = matches!(request, Outbound::Place(_) | Outbound::PlaceList { .. });
            for order in request.orders() {
                self.in_flight.insert(order.id);
                if places {
                    self.sent_at.insert(order.id, Instant::now());
                }
            }
        }
        let symbol = self.args.symbol.clone();
        ctx.spawn(execute(link, symbol, outbound).into_actor(self).map(|results, act, ctx| {
            let answered = results.iter().all(|r| r.venue_error.is_none());
            act.apply_live(results, ctx);
            then(act, answered, ctx);
        }));
    }

    /// Applies the venue's answers and stores (and sends) whatever follows.
    pub(super) fn apply_live(&mut self, results: Vec<LiveResult>, ctx: &mut Context<Self>) {
        let grace = self.args.live.as_ref().map(|link| link.not_found_grace()).unwrap_or_default();
        self.args.engine.observe_time(keel_venues::now_us() / 1000);
        for result in results {
            let id = result.order_id;
            self.in_flight.remove(&id);
            if result.cancel_failed {
                self.args.engine.cancel_failed(id);
                let why = result.venue_error.as_deref().unwrap_or("the venue did not cancel it");
                self.retry_cancel_later(id, why, ctx);
            }
            if let Some(err) = &result.venue_error {
                tracing::debug!(bot_id = self.args.bot_id, order_id = id, error = %err, "venue failed");
            }
            let Some(report) = result.report else { continue };
            let recent = self.sent_at.get(&id).is_some_and(|t| t.elapsed() < grace);
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
        let open = self.args.engine.open_orders();
        self.sent_at.retain(|id, _| open.iter().any(|o| o.id == *id));
        self.forget_closed_cancels();
        self.persist(ctx, None);
    }

    /// Asks the venue about every open live order that has no request outstanding. The first
    /// poll the venue answers in full reconciles the orders found open at start.
    pub(super) fn poll_live(&mut self, ctx: &mut Context<Self>) {
        let requests: Vec<Outbound> = self
            .args
            .engine
            .open_orders()
            .iter()
            .filter(|o| !keel_core::engine::is_armed_stop(o) && !self.in_flight.contains(&o.id))
            .map(|o| Outbound::Query(o.clone()))
            .collect();
        if requests.is_empty() {
            if self.in_flight.is_empty() {
                self.orders_reconciled(ctx);
            }
            return;
        }
        self.dispatch_then(requests, ctx, |act, answered, ctx| {
            if answered {
                act.orders_reconciled(ctx);
            }
        });
    }
}
