//! A live bot on its account's user data stream ([`crate::account`]): order updates pushed by
//! the venue are applied as they come, polling slows to a safety net while the stream is up and
//! returns to [`LIVE_POLL`](super::LIVE_POLL) while it is down, and every (re)connection
//! reconciles the bot's open orders with the venue at once.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::BotActor;
use crate::account::AccountNews;
use crate::bot::live::{LiveResult, owned_signer, venue_outcome};
use keel_core::engine::{ExecReport, Outbound};
use keel_core::market::Symbol;

/// How often a live bot still polls its open orders while its account's stream is up: a safety
/// net for an update the stream lost, not the way fills arrive.
pub const STREAM_UP_POLL: Duration = Duration::from_secs(30);

/// What a bot knows of its account's stream.
#[derive(Debug)]
pub(super) struct StreamLink {
    /// Subscribed now.
    up: bool,
    /// When the bot last polled.
    last_poll: Instant,
}

impl Default for StreamLink {
    fn default() -> Self {
        Self { up: false, last_poll: Instant::now() }
    }
}

impl BotActor {
    /// Joins the account's stream (opening it if this is the account's first running bot).
    pub(super) fn attach_account(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.args.live else { return };
        let signer = owned_signer(link);
        link.accounts.attach(
            &link.router,
            link.credential_id,
            signer,
            (self.args.bot_id, self.args.symbol.as_str()),
            ctx.address().recipient(),
        );
    }

    /// Leaves the account's stream (closing it if this was the last running bot).
    pub(super) fn detach_account(&mut self, ctx: &mut Context<Self>) {
        let Some(link) = &self.args.live else { return };
        let me = ctx.address().recipient();
        link.accounts.detach(link.router.venue(), link.credential_id, self.args.bot_id, &me);
    }

    /// Whether the periodic poll should run now: always while the stream is down, every
    /// [`STREAM_UP_POLL`] while it is up.
    pub(super) fn poll_due(&mut self) -> bool {
        if self.stream.up && self.stream.last_poll.elapsed() < STREAM_UP_POLL {
            return false;
        }
        self.stream.last_poll = Instant::now();
        true
    }

    /// Applies one order update from the stream. An update that reports a trade after others
    /// the bot has not seen (they were pushed while it was not listening) is not applied as is:
    /// the order is queried, so every missed trade is counted with its own commission.
    fn on_stream_order(
        &mut self,
        update: keel_venues::account::OrderUpdate,
        ctx: &mut Context<Self>,
    ) {
        let Some(order) = self
            .args
            .engine
            .open_orders()
            .iter()
            .find(|o| o.client_order_id == update.report.client_order_id)
            .cloned()
        else {
            // Final already, or not this bot's: nothing to learn.
            return;
        };
        let reported: rust_decimal::Decimal = update.report.fills.iter().map(|f| f.qty).sum();
        let missed = update.report.executed_qty - reported > order.filled_qty;
        if missed && !self.in_flight.contains(&order.id) {
            self.dispatch(vec![Outbound::Query(order)], ctx);
            return;
        }
        let Some(symbol) = Symbol::parse(&update.symbol) else { return };
        let outcome = venue_outcome(&symbol, update.report);
        metrics::counter!("keel_user_stream_order_updates_total").increment(1);
        let result = LiveResult {
            order_id: order.id,
            report: Some(ExecReport { order_id: order.id, outcome }),
            cancel_failed: false,
            venue_error: None,
            order_answered: false,
            refused: false,
        };
        // The order is not in flight because of this: a request outstanding stays so.
        let in_flight = self.in_flight.contains(&order.id);
        self.apply_live(vec![result], ctx);
        if in_flight {
            self.in_flight.insert(order.id);
        }
    }
}

impl Handler<AccountNews> for BotActor {
    type Result = ();

    fn handle(&mut self, news: AccountNews, ctx: &mut Context<Self>) {
        match news {
            AccountNews::StreamUp => {
                // Whatever happened while nobody listened was not pushed: reconcile now.
                self.stream.up = true;
                self.stream.last_poll = Instant::now();
                self.derivatives_stream_up(ctx);
                self.poll_live(ctx);
            }
            AccountNews::StreamDown => self.stream.up = false,
            AccountNews::Order(update) => self.on_stream_order(update, ctx),
            AccountNews::Position(position) => self.on_venue_position(position, ctx),
            AccountNews::Funding(payment) => self.on_funding(payment, ctx),
        }
    }
}
