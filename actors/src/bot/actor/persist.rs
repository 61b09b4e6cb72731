//! Persistence of a bot's effects.
//!
//! Every change the engine reports is written in one sled transaction straight away, and made
//! durable by a shared flush (group commit). What depends on durability waits in [`AfterFlush`]
//! until the flush that covers it: the command's answer, venue requests, journal lines for the
//! owner's connections, and the durable watermarks the read endpoints show.
//!
//! With a Postgres link (cluster mode with `postgres_url`) a flush also writes what it covers to
//! Postgres, as one [`PgBotRepo::persist_calls`](crate::bot::pg::PgBotRepo::persist_calls)
//! transaction under the owner's [`Fence`](crate::pg::fence::Fence), and counts as durable only
//! once that committed, with the notification deliveries its journal lines give in the same
//! transaction. One flush is in flight per bot; the writes made meanwhile wait and go
//! together in the next. A fenced flush stops the bot at once and sends nothing: another node
//! owns the user now. Any other Postgres error stops it as a failed store write does.

use actix::prelude::*;

use super::{BotActor, BotPaused};
use keel_core::bot::BotStatus;
use keel_core::engine::{BotEvent, BotEventKind, BotState, Effects, Outbound};

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
    /// What of the write goes to Postgres (orders, fills, journal lines), when the bot has a
    /// Postgres link.
    record: Option<Effects>,
}

/// How a flush ended.
enum Flushed {
    /// Everything it covers is durable.
    Durable,
    /// The node's store could not flush (nothing it covers is reported durable).
    NotDurable,
    /// Postgres refused the write: the owner's lease is no longer this node's.
    Fenced(String),
    /// Postgres failed (nothing is reported durable; the bot stops).
    Failed(String),
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
        let record = self.args.postgres.as_ref().map(|_| Effects {
            orders: self.fx.orders.clone(),
            fills: self.fx.fills.clone(),
            events: self.fx.events.clone(),
            ..Effects::default()
        });
        let events = std::mem::take(&mut self.fx.events);
        self.fx.clear();
        self.dirty_snapshot = false;
        self.awaiting.push(AfterFlush {
            written: written.is_ok(),
            state,
            outbound,
            events,
            then,
            record,
        });
        self.flush(ctx);
    }

    /// With a Postgres link, queues the strategy's state for the next flush (the snapshot a
    /// quiet bot saves every 10 s); `false` without one.
    pub(super) fn persist_snapshot(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.args.postgres.is_none() {
            return false;
        }
        self.awaiting.push(AfterFlush {
            written: true,
            state: self.args.engine.snapshot(),
            outbound: Vec::new(),
            events: Vec::new(),
            then: None,
            record: Some(Effects::default()),
        });
        self.flush(ctx);
        true
    }

    /// A future that makes `batch` durable: the node's store flushed, then, with a Postgres
    /// link, its records and the state after its last write committed under the owner's fence.
    fn write_batch(
        &self,
        batch: &[AfterFlush],
    ) -> impl std::future::Future<Output = Flushed> + 'static {
        let store = self.args.repo.store().clone();
        let postgres = self.args.postgres.clone().and_then(|link| {
            let state = batch.last()?.state.clone();
            let calls: Vec<Effects> = batch
                .iter()
                .filter_map(|after| {
                    after.record.as_ref().map(|fx| Effects {
                        orders: fx.orders.clone(),
                        fills: fx.fills.clone(),
                        events: fx.events.clone(),
                        ..Effects::default()
                    })
                })
                .collect();
            Some((link, calls, state))
        });
        let bot_id = self.id();
        async move {
            if store.commit().await.is_err() {
                return Flushed::NotDurable;
            }
            let Some((link, calls, state)) = postgres else { return Flushed::Durable };
            let notify = link.notify.as_ref();
            let deliveries = notify
                .map(|n| n.recorded_deliveries(link.fence.user_id, bot_id, &calls))
                .unwrap_or_default();
            let fence = Some(&link.fence);
            match link.repo.persist_calls(bot_id, &calls, &state, &deliveries, fence).await {
                Ok(()) => {
                    if let (false, Some(notify)) = (deliveries.is_empty(), notify) {
                        notify.wake();
                    }
                    Flushed::Durable
                }
                Err(err) if err.is_fenced() => Flushed::Fenced(err.to_string()),
                Err(err) => Flushed::Failed(err.to_string()),
            }
        }
    }

    /// Acts on how a flush ended once what it covered was answered: a fenced bot stops at once
    /// and sends nothing more; a failed Postgres write stops it as a failed store write does
    /// (its restart reloads what is stored). Returns whether the bot goes on.
    fn after_outcome(&mut self, outcome: &Flushed, ctx: &mut Context<Self>) -> bool {
        match outcome {
            Flushed::Durable | Flushed::NotDurable => true,
            Flushed::Fenced(err) => {
                tracing::warn!(
                    bot_id = self.id(),
                    error = %err,
                    "bot stopped: {}",
                    crate::bot::pg::PgBotError::FENCED_REASON
                );
                metrics::counter!("keel_bot_fenced_total").increment(1);
                // The supervisor restarts no bot that exits with this reason: it gives the user
                // up (its new owner runs the bot).
                self.stopping = true;
                self.args.lifeline.crashed(crate::bot::pg::PgBotError::FENCED_REASON);
                ctx.stop();
                false
            }
            Flushed::Failed(err) => {
                tracing::error!(bot_id = self.id(), error = %err, "bot state could not be stored");
                self.stopping = true;
                self.args.lifeline.crashed(format!("store write failed: {err}"));
                ctx.stop();
                false
            }
        }
    }

    /// Starts a flush covering every write so far, unless one is in progress (its completion
    /// starts the next).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing.is_some() || self.awaiting.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.awaiting);
        let write = self.write_batch(&batch);
        self.flushing = Some(batch);
        ctx.spawn(write.into_actor(self).map(|outcome, act, ctx| {
            let batch = act.flushing.take().unwrap_or_default();
            act.after_flush(batch, matches!(outcome, Flushed::Durable), ctx);
            if act.after_outcome(&outcome, ctx) {
                act.flush(ctx);
            }
        }));
    }

    /// Applies what waited for a flush, in write order.
    fn after_flush(&mut self, batch: Vec<AfterFlush>, flushed: bool, ctx: &mut Context<Self>) {
        for AfterFlush { written, state, outbound, events, then, .. } in batch {
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
        // This flush covers every write so far, including any a flush in progress covers (its
        // Postgres rows are written again, in order, which leaves them as they ended): answer
        // them all before stopping.
        let mut batch = self.flushing.take().unwrap_or_default();
        batch.append(&mut self.awaiting);
        let write = self.write_batch(&batch);
        ctx.wait(write.into_actor(self).map(move |outcome, act, ctx| {
            let durable = matches!(outcome, Flushed::Durable);
            act.after_flush(batch, durable, ctx);
            then(durable);
            if act.after_outcome(&outcome, ctx) {
                ctx.stop();
            }
        }));
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
