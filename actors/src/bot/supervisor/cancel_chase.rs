//! A stopped bot's failed cancels, chased at the venue until it has closed the orders.
//!
//! A stop (and the kill switch) retries a failed cancel a few times before it answers
//! (`bot/actor/cancel_retry.rs`); an order whose cancel still did not go through may be working
//! at the venue with no bot actor left to ask again. The bot supervisor asks again, after
//! [`CHASE_FIRST`] doubling up to [`CHASE_MAX`], for as long as the bot stays stopped, the order
//! is open in the store and [`CHASE_FOR`] has not passed. Each failure and the end are lines in
//! the bot's journal (so on `GET /bots/{id}/events` and the `bot:{id}` channel). The order row
//! itself is left as it was: the engine that owns it settles it from the venue when the bot is
//! next started (its fills, if it filled meanwhile, belong to the position).

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::BotSupervisor;
use crate::bot::actor::{CancelOutcome, OrderCancel};
use crate::bot::live::{LiveLink, LiveResult, execute};
use keel_core::bot::{BotId, BotStatus};
use keel_core::engine::{BotEventKind, ExecOutcome, Outbound};
use keel_core::market::Symbol;

/// The first wait before a stopped bot's failed cancel is sent again.
const CHASE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const CHASE_MAX: Duration = Duration::from_secs(30);
/// How long a cancel is chased before the journal says it was given up.
const CHASE_FOR: Duration = Duration::from_secs(3_600);

/// One order being chased.
#[derive(Debug, Clone)]
struct Chase {
    bot_id: BotId,
    user_id: u64,
    symbol: Symbol,
    link: LiveLink,
    order_id: u64,
    /// Cancels sent so far (the stop's included).
    attempts: u32,
    since: Instant,
}

impl BotSupervisor {
    /// Chases the cancels the stop of `bot_id` reported failed.
    pub(super) fn chase_cancels(
        &mut self,
        bot_id: BotId,
        answers: &[OrderCancel],
        ctx: &mut Context<Self>,
    ) {
        let failed: Vec<u64> = answers
            .iter()
            .filter(|a| a.bot_id == bot_id && a.outcome == CancelOutcome::CancelFailed)
            .map(|a| a.order_id)
            .collect();
        let Some(record) = self.bots.get(&bot_id).cloned() else { return };
        let Ok(Some(link)) = self.live_link(&record) else { return };
        for order_id in failed {
            let chase = Chase {
                bot_id,
                user_id: record.user_id,
                symbol: record.symbol.clone(),
                link: link.clone(),
                order_id,
                attempts: 1,
                since: Instant::now(),
            };
            self.chase_later(chase, ctx);
        }
    }

    fn chase_later(&mut self, chase: Chase, ctx: &mut Context<Self>) {
        let wait = CHASE_FIRST.saturating_mul(1 << chase.attempts.saturating_sub(1).min(16));
        ctx.run_later(wait.min(CHASE_MAX), move |act, ctx| act.chase(chase, ctx));
    }

    /// Sends the cancel once more, unless the bot was started again (its own actor settles the
    /// order) or the order is closed in the store.
    fn chase(&mut self, mut chase: Chase, ctx: &mut Context<Self>) {
        let stopped = self.bots.get(&chase.bot_id).is_some_and(|r| r.status == BotStatus::Stopped);
        let order = self.repo.order(chase.bot_id, chase.order_id).ok().flatten();
        let Some(order) = order.filter(|o| stopped && o.status.is_open()) else { return };
        chase.attempts += 1;
        let (link, symbol) = (chase.link.clone(), chase.symbol.clone());
        ctx.spawn(
            async move { execute(link, symbol, vec![Outbound::Cancel(order)]).await }
                .into_actor(self)
                .map(move |results, act, ctx| act.chased(chase, results.first(), ctx)),
        );
    }

    /// Journals what the venue said, and asks again if the order is still open there.
    fn chased(&mut self, chase: Chase, result: Option<&LiveResult>, ctx: &mut Context<Self>) {
        let (id, n) = (chase.order_id, chase.attempts);
        let closed = result.filter(|r| !r.cancel_failed).and_then(|r| match &r.report {
            Some(report) => match &report.outcome {
                ExecOutcome::Venue { status, .. }
                    if !matches!(status.as_str(), "NEW" | "PARTIALLY_FILLED") =>
                {
                    Some(status.clone())
                }
                ExecOutcome::NotFound => Some("never received".to_owned()),
                _ => None,
            },
            None => None,
        });
        let (level, message) = if let Some(status) = closed {
            let message = format!(
                "order {id} is closed at the venue ({status}) after {n} cancel attempts; the bot \
                 shows it when next started"
            );
            ("info", message)
        } else if chase.since.elapsed() >= CHASE_FOR {
            let message = format!(
                "gave up canceling order {id} after {n} attempts: it may still be working at the \
                 venue; cancel it there, or start the bot to reconcile it"
            );
            ("error", message)
        } else {
            let why = result
                .and_then(|r| r.venue_error.clone())
                .unwrap_or_else(|| "the venue still reports it open".to_owned());
            let message = format!(
                "cancel of stopped bot's order {id} failed again ({why}); cancel attempt {} \
                 follows",
                n + 1
            );
            self.journal(chase.bot_id, chase.user_id, log("warn", message), ctx);
            self.chase_later(chase, ctx);
            return;
        };
        self.journal(chase.bot_id, chase.user_id, log(level, message), ctx);
    }
}

fn log(level: &str, message: String) -> BotEventKind {
    BotEventKind::Log { level: level.to_owned(), message }
}
