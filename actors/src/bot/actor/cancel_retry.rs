//! A failed cancel is asked again until the venue has closed the order.
//!
//! A cancel fails when the venue refuses it, answers 5xx, times out or drops the connection, or
//! when it answers "unknown order" (`-2011`) but a query does not show the order final. The order
//! stays open in Keel (it may still fill at the venue) and the cancel is sent again after
//! [`CANCEL_RETRY_FIRST`], doubling up to [`CANCEL_RETRY_MAX`], for as long as the bot runs and
//! the order is open. Each failure is a `warn` line in the bot's journal (so on
//! `GET /bots/{id}/events` and the `bot:{id}` channel), and the order's own line says how it
//! ended. A stop (and the kill switch) retries within its answer's deadline instead
//! ([`STOP_RETRIES`]); what is still open after that the bot supervisor chases at the venue
//! while the bot stays stopped (`bot/supervisor/cancel_chase.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::BotActor;
use crate::bot::live::{LiveLink, LiveResult, execute};
use keel_core::engine::{BotEventKind, Outbound};
use keel_core::market::Symbol;

/// The first wait before a failed cancel is sent again.
pub(super) const CANCEL_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub(super) const CANCEL_RETRY_MAX: Duration = Duration::from_secs(30);
/// How many times a stop (or the kill switch) sends a failed cancel again before it answers,
/// waiting [`STOP_RETRY_WAIT`] doubled each time (its answer has a deadline of a few seconds).
pub(super) const STOP_RETRIES: u32 = 3;
/// The first wait of a stop's retries.
pub(super) const STOP_RETRY_WAIT: Duration = Duration::from_millis(200);

/// How long a stop keeps retrying failed cancels before it answers with what it has.
const STOP_RETRY_BUDGET: Duration = Duration::from_millis(2_500);

/// A stop's requests (its cancels, and the flattening order), with each failed cancel sent
/// again up to [`STOP_RETRIES`] times within [`STOP_RETRY_BUDGET`]. Returns the latest result for
/// each order and how many cancels each order's answer took.
pub(super) async fn execute_stop(
    link: LiveLink,
    symbol: Symbol,
    outbound: Vec<Outbound>,
) -> (Vec<LiveResult>, HashMap<u64, u32>) {
    let started = Instant::now();
    let cancels: Vec<Outbound> =
        outbound.iter().filter(|o| matches!(o, Outbound::Cancel(_))).cloned().collect();
    let mut attempts: HashMap<u64, u32> =
        cancels.iter().flat_map(Outbound::orders).map(|o| (o.id, 1)).collect();
    let mut results = execute(link.clone(), symbol.clone(), outbound).await;
    for retry in 1..=STOP_RETRIES {
        let failed: Vec<Outbound> = cancels
            .iter()
            .filter(|request| {
                request.orders().iter().any(|o| {
                    results
                        .iter()
                        .rev()
                        .find(|r| r.order_id == o.id)
                        .is_some_and(|r| r.cancel_failed)
                })
            })
            .cloned()
            .collect();
        let wait = backoff(STOP_RETRY_WAIT, retry);
        if failed.is_empty() || started.elapsed() + wait > STOP_RETRY_BUDGET {
            break;
        }
        tokio::time::sleep(wait).await;
        for order in failed.iter().flat_map(Outbound::orders) {
            *attempts.entry(order.id).or_insert(0) += 1;
        }
        let again = execute(link.clone(), symbol.clone(), failed).await;
        results.retain(|r| !again.iter().any(|a| a.order_id == r.order_id));
        results.extend(again);
    }
    (results, attempts)
}

/// The wait before attempt `failures + 1`.
pub(super) fn backoff(first: Duration, failures: u32) -> Duration {
    let doubled = first.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(CANCEL_RETRY_MAX)
}

impl BotActor {
    /// Counts a failed cancel of `order_id`, journals it and sends the cancel again later.
    pub(super) fn retry_cancel_later(&mut self, order_id: u64, why: &str, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let failures = self.cancel_retries.entry(order_id).or_insert(0);
        *failures += 1;
        let failures = *failures;
        let wait = backoff(CANCEL_RETRY_FIRST, failures);
        metrics::counter!("keel_cancel_retries_total").increment(1);
        let message = format!(
            "cancel of order {order_id} failed ({why}); the order may still be working at the \
             venue; cancel attempt {} in {} ms",
            failures + 1,
            wait.as_millis()
        );
        let now = keel_venues::now_us() / 1000;
        self.args.engine.log(
            now,
            BotEventKind::Log { level: "warn".into(), message },
            &mut self.fx,
        );
        ctx.run_later(wait, move |act, ctx| act.retry_cancel(order_id, ctx));
    }

    /// Sends the cancel of `order_id` again, unless the order closed meanwhile.
    fn retry_cancel(&mut self, order_id: u64, ctx: &mut Context<Self>) {
        if self.stopping || !self.cancel_retries.contains_key(&order_id) {
            return;
        }
        if self.in_flight.contains(&order_id) {
            // A poll is asking about it: try again once it has answered.
            ctx.run_later(CANCEL_RETRY_FIRST, move |act, ctx| act.retry_cancel(order_id, ctx));
            return;
        }
        let engine = &mut self.args.engine;
        engine.observe_time(keel_venues::now_us() / 1000);
        if engine.cancel(order_id, "cancel retried", &mut self.fx).is_err() {
            self.cancel_retries.remove(&order_id);
            return;
        }
        self.persist(ctx, None);
    }

    /// Forgets the retries of orders that are closed now, and journals how many it took.
    pub(super) fn forget_closed_cancels(&mut self) {
        let open = self.args.engine.open_orders();
        let closed: Vec<(u64, u32)> = self
            .cancel_retries
            .iter()
            .filter(|(id, _)| !open.iter().any(|o| o.id == **id))
            .map(|(id, n)| (*id, *n))
            .collect();
        let now = keel_venues::now_us() / 1000;
        for (order_id, failures) in closed {
            self.cancel_retries.remove(&order_id);
            let message = format!(
                "order {order_id} is closed at the venue after {failures} failed cancel attempt(s)"
            );
            self.args.engine.log(
                now,
                BotEventKind::Log { level: "info".into(), message },
                &mut self.fx,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_first_up_to_the_cap() {
        let waits: Vec<u128> =
            (1..=9).map(|n| backoff(CANCEL_RETRY_FIRST, n).as_millis()).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(backoff(STOP_RETRY_WAIT, 3), Duration::from_millis(800));
        assert_eq!(backoff(CANCEL_RETRY_FIRST, u32::MAX), CANCEL_RETRY_MAX);
    }
}
