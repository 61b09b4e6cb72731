//! Persistence of a bot's effects.
//!
//! Every change the engine reports is written in one sled transaction straight away, and made
//! durable by a shared flush (group commit). What depends on durability waits in [`AfterFlush`]
//! until the flush that covers it: the command's answer, venue requests, journal lines for the
//! owner's connections, and the durable watermarks the read endpoints show.

use actix::prelude::*;

use super::{BotActor, BotPaused};
use keel_core::bot::BotStatus;
use keel_core::engine::{BotEvent, BotEventKind, BotState, Outbound};

/// What a write leaves to do once it is durable: applied in write order after the flush that
/// covers it.
pub(super) struct AfterFlush {
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

impl BotActor {
    /// Writes pending effects in one transaction, then flushes in the background; `then` runs
    /// (with whether it all worked) once durable.
    pub(super) fn persist(
        &mut self,
        ctx: &mut Context<Self>,
        then: Option<Box<dyn FnOnce(bool) + Send>>,
    ) {
        if let Some(reason) = self.fx.paused.clone() {
            // A self-pause (risk, breaker, venue failures, slow strategy) is a status change
            // like an owner's pause: journaled, so it reaches the bot's channel.
            let now = keel_venues::now_us() / 1000;
            let status = BotEventKind::Status { status: BotStatus::Paused, reason: Some(reason) };
            self.args.engine.log(now, status, &mut self.fx);
        }
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
        // Sent only once what they concern is durable. The journal lines are kept whoever is
        // connected now: whether to hand them to the owner's session is decided when they are
        // durable (`SessionDirectory::publish`). Deciding here lost them for a client that
        // connected in between: not live (dropped here), and not by its catch-up read either,
        // which is cut at the durable watermark that this flush had not moved yet.
        let outbound = std::mem::take(&mut self.fx.outbound);
        // In flight from now: a poll in the meantime (the account stream coming up, say) must
        // not ask the venue about an order it has not been sent yet and take "no such order"
        // for "never received".
        for request in &outbound {
            self.in_flight.extend(request.orders().into_iter().map(|order| order.id));
        }
        let events = std::mem::take(&mut self.fx.events);
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
            } else {
                for request in &outbound {
                    for order in request.orders() {
                        self.in_flight.remove(&order.id);
                    }
                }
            }
            if durable {
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
    pub(super) fn stop_after_flush(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(bool) + 'static,
    ) {
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
