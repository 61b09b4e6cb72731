//! One bot's trading core: strategy, pre-trade risk, order manager, brackets and paper execution.
//!
//! The engine is plain code with no actor, clock or I/O: the bot actor feeds it market events and
//! owner commands and persists the [`Effects`] it reports; a backtest feeds it recorded events.
//! Both therefore make the same decisions from the same events.
//!
//! Order of work for one market event:
//! 1. the paper venue matches resting orders against it and reports fills;
//! 2. each fill updates its order, the position, and the strategy (`on_fill`); a filled entry gets
//!    its bracket, a filled bracket leg cancels the other leg (OCO);
//! 3. the strategy sees the event (unless paused) and its intents go through risk checks;
//! 4. the day's P&L is checked against `max_daily_loss`, which pauses the bot when reached.
//!
//! This module holds the engine itself: its entry points (market events, owner commands) and the
//! strategy loop. The work they share lives beside it:
//! - `state`: the fixed settings and the durable record ([`EngineConfig`], [`BotState`]);
//! - `effects`: what a call reports ([`Effects`], [`Outbound`]) and the journal ([`BotEvent`]);
//! - `orders`: the order manager (risk checks, numbering, cancels);
//! - `fills`: a fill's effect on its order, the position, the bracket and the strategy;
//! - `bracket`: take-profit and stop-loss legs linked as OCO;
//! - `native_bracket`: the same legs placed at the venue (its OCO order list, or
//!   a reduce-only conditional order per leg);
//! - `live`: real orders, answered by the venue instead of filled here.

/// What the strategy sees at `$now`. A macro rather than a method: the context borrows the
/// engine's position, views and config field by field, so the strategy and its intents stay
/// free to borrow mutably beside it.
macro_rules! strategy_context {
    ($engine:expr, $now:expr) => {
        StrategyContext {
            position: &$engine.state.position,
            open_orders: &$engine.views,
            filters: &$engine.config.filters,
            now_ms: $now,
        }
    };
}

mod bracket;
mod derivatives;
mod effects;
mod fills;
mod futures;
mod live;
mod native_bracket;
mod orders;
mod state;

use derivatives::FundingBooking;
pub use derivatives::{FUNDING_IDS_KEPT, FundingLedger, VenuePositionView};
pub use effects::{BotEvent, BotEventKind, Effects, Outbound};
pub use futures::LIQUIDATED_REASON;
pub use live::{ExecOutcome, ExecReport, VenueFillReport, is_armed_stop};
pub use native_bracket::{list_client_order_id, list_leg_ids};
pub use orders::{CancelError, client_order_id};
pub use state::{BotState, EngineConfig};

use rust_decimal::Decimal;

use crate::market::MarketEvent;
use crate::strategy::series::SeriesTracker;
use crate::strategy::{Intent, OpenOrderView, SeriesSpec, Strategy, StrategyContext};
use crate::trading::paper::{PaperFill, PaperVenue};
use crate::trading::risk::{RiskRejection, UserNotional};
use crate::trading::{Order, OrderOrigin, OrderRequest, Position, Side};

/// Rounds of strategy callbacks one event may trigger (fills that cause intents that fill...),
/// so a misbehaving strategy cannot loop forever.
const MAX_INTENT_ROUNDS: usize = 16;

/// One bot's trading core.
#[derive(Debug)]
pub struct BotEngine {
    config: EngineConfig,
    state: BotState,
    strategy: Box<dyn Strategy>,
    venue: PaperVenue,
    /// Open orders, by id.
    open: Vec<Order>,
    /// What the strategy sees of `open`, rebuilt when `open` changes.
    views: Vec<OpenOrderView>,
    views_dirty: bool,
    strategy_active: bool,
    intents: Vec<Intent>,
    /// Versions of the strategy's orders it has not been told of yet (only when it wants them).
    order_updates: Vec<Order>,
    wants_order_updates: bool,
    paper_fills: Vec<PaperFill>,
    /// Live orders the venue was asked to cancel (asked once, until it answers).
    cancel_pending: Vec<u64>,
    /// Most exposure this bot may hold under its owner's limit (the limit less the owner's other
    /// bots), when one is set.
    user_budget: Option<Decimal>,
    /// The owner's own `max_notional` over all their bots and what the others hold, when set.
    user_notional: Option<UserNotional>,
    /// The strategy's indicator series, fixed at build.
    series: Vec<SeriesSpec>,
    published: SeriesTracker,
    /// Live brackets go to the venue as its own OCO order list (see `native_bracket`).
    native_brackets: bool,
    /// The order list the orders being placed belong to (set while a native bracket is built).
    pending_list: Option<String>,
    /// Native legs that ended with nothing executed while their partner was still open: looked
    /// at again once every answer of the batch is in (see `native_bracket`).
    half_lists: Vec<Order>,
}

impl BotEngine {
    /// An engine resuming from `state` with `open_orders` still working.
    pub fn new(
        config: EngineConfig,
        mut state: BotState,
        mut strategy: Box<dyn Strategy>,
        open_orders: Vec<Order>,
    ) -> Self {
        if let Some(saved) = state.strategy.take()
            && let Err(err) = strategy.restore(saved)
        {
            tracing::warn!(bot_id = config.bot_id, %err, "strategy state does not restore; starting it fresh");
        }
        let series = strategy.series();
        let wants_order_updates = strategy.wants_order_updates();
        let published = SeriesTracker::new(series.len());
        let mut venue = PaperVenue::new(config.paper.clone(), config.filters.clone());
        let open: Vec<Order> = open_orders.into_iter().filter(|o| o.status.is_open()).collect();
        if !config.live {
            // Live orders rest at the real venue; the paper venue only tracks prices.
            venue.restore(open.iter().cloned());
        }
        Self {
            config,
            state,
            strategy,
            venue,
            open,
            views: Vec::new(),
            views_dirty: true,
            strategy_active: true,
            intents: Vec::new(),
            order_updates: Vec::new(),
            wants_order_updates,
            paper_fills: Vec::new(),
            cancel_pending: Vec::new(),
            user_budget: None,
            user_notional: None,
            series,
            published,
            native_brackets: false,
            pending_list: None,
            half_lists: Vec::new(),
        }
    }

    /// Places live brackets as the venue's own OCO order list (a venue with the
    /// `native_brackets` capability) instead of emulating them. Paper and backtests never do.
    pub fn set_native_brackets(&mut self, native: bool) {
        self.native_brackets = native && self.config.live;
    }

    /// The indicator series the strategy publishes.
    pub fn series(&self) -> &[SeriesSpec] {
        &self.series
    }

    /// The durable state, with the strategy's state saved into it.
    pub fn snapshot(&self) -> BotState {
        let mut state = self.state.clone();
        state.strategy = Some(self.strategy.save());
        state
    }

    /// Position and balances.
    pub fn position(&self) -> &Position {
        &self.state.position
    }

    /// Open orders.
    pub fn open_orders(&self) -> &[Order] {
        &self.open
    }

    /// Best estimate of the current price.
    pub fn mark_price(&self) -> Option<Decimal> {
        self.venue.mark_price()
    }

    /// Moves the engine's clock to at least `now_ms` (wall time), for changes that do not come
    /// from a market event: owner commands and venue answers. Backtests never call it.
    pub fn observe_time(&mut self, now_ms: u64) {
        self.state.last_event_ms = self.state.last_event_ms.max(now_ms);
    }

    /// Sets the most exposure this bot may hold under its owner's limit (`None`: no limit).
    pub fn set_user_budget(&mut self, budget: Option<Decimal>) {
        self.user_budget = budget;
    }

    /// Sets the owner's `max_notional` over all their bots and what their other bots hold
    /// (`None`: the owner set no such limit).
    pub fn set_user_notional(&mut self, notional: Option<UserNotional>) {
        self.user_notional = notional;
    }

    /// The bot's exposure in quote: its position at the mark price plus the remaining notional
    /// of open orders that would add to it (exits and bracket legs do not).
    pub fn exposure(&self) -> Decimal {
        let mark = self.venue.mark_price();
        let position = mark.map_or(Decimal::ZERO, |m| self.state.position.qty.abs() * m);
        let adding = |o: &&Order| {
            matches!(o.origin, OrderOrigin::Strategy | OrderOrigin::Manual)
                && (self.state.position.qty.is_zero()
                    || self.state.position.qty.is_sign_positive() == (o.side == Side::Buy))
        };
        let orders: Decimal = self
            .open
            .iter()
            .filter(adding)
            .filter_map(|o| Some(o.remaining() * o.order_type.limit_price().or(mark)?))
            .sum();
        position + orders
    }

    /// Whether the strategy is called on events. Resuming tells the strategy (a failed one may
    /// start over).
    pub fn set_strategy_active(&mut self, active: bool) {
        if active && !self.strategy_active {
            self.strategy.resume();
        }
        self.strategy_active = active;
    }

    /// Handles one market event.
    pub fn on_market(&mut self, event: &MarketEvent, fx: &mut Effects) {
        let now = event.exchange_ts;
        self.state.last_event_ms = self.state.last_event_ms.max(now);
        self.paper_fills.clear();
        self.venue.on_market(event, &mut self.paper_fills);
        if self.config.live {
            self.protect_half_lists(fx);
            self.trigger_stops(event, fx);
        }
        if !self.paper_fills.is_empty() {
            let fills = std::mem::take(&mut self.paper_fills);
            for fill in &fills {
                self.apply_fill(fill, fx);
            }
            self.paper_fills = fills;
        }
        self.paper_futures(event, fx);
        if self.strategy_active {
            self.deliver_order_updates(now);
            self.refresh_views();
            let ctx = strategy_context!(self, now);
            self.strategy.on_event(event, &ctx, &mut self.intents);
            self.run_intents(fx);
            self.publish_series(now, fx);
            self.check_strategy(now, fx);
        } else {
            self.order_updates.clear();
        }
        self.check_daily_loss(now, fx);
    }

    /// Places an order for the owner.
    ///
    /// # Errors
    /// The risk checks or the venue refused it; the rejected order is still recorded in `fx`.
    pub fn place_manual(
        &mut self,
        req: OrderRequest,
        fx: &mut Effects,
    ) -> Result<Order, RiskRejection> {
        self.place(req, OrderOrigin::Manual, fx)
    }

    /// Cancels one open order.
    ///
    /// # Errors
    /// The order is not open (it may be final: the caller can tell from the store).
    pub fn cancel(
        &mut self,
        order_id: u64,
        reason: &str,
        fx: &mut Effects,
    ) -> Result<Order, CancelError> {
        self.cancel_open(order_id, reason, fx).ok_or(CancelError::NotOpen(order_id))
    }

    /// Cancels every open order.
    pub fn cancel_all(&mut self, reason: &str, fx: &mut Effects) -> usize {
        let ids: Vec<u64> = self.open.iter().map(|o| o.id).collect();
        for id in &ids {
            self.cancel_open(*id, reason, fx);
        }
        ids.len()
    }

    /// Flattens the position with a market order, after canceling the open orders on the closing
    /// side (bracket legs, resting exits), which would otherwise take it past flat.
    ///
    /// # Errors
    /// Risk or the venue refused the closing order. `Ok(None)` when already flat.
    pub fn close_position(&mut self, fx: &mut Effects) -> Result<Option<Order>, RiskRejection> {
        let held = self.state.position.qty.abs();
        let mut qty = self.config.filters.floor_qty(held);
        if qty < self.config.filters.min_qty {
            qty = Decimal::ZERO;
        }
        let dust = held - qty;
        if !dust.is_zero() {
            // What is below the step (a commission taken in the base asset leaves some) cannot
            // be sold: say so rather than ask the venue for more than the account holds.
            let message = format!(
                "{} left as dust: below the step {} or the minimum quantity {}",
                dust.normalize(),
                self.config.filters.step_size.normalize(),
                self.config.filters.min_qty.normalize()
            );
            self.log(self.now(), BotEventKind::Log { level: "info".into(), message }, fx);
        }
        if qty.is_zero() {
            return Ok(None);
        }
        let side = if self.state.position.qty.is_sign_positive() { Side::Sell } else { Side::Buy };
        // Open orders on the closing side (bracket legs, resting exits) would take the position
        // past flat once the close has filled: a short on spot, a flip on futures.
        let exits: Vec<u64> = self.open.iter().filter(|o| o.side == side).map(|o| o.id).collect();
        for id in exits {
            self.cancel_open(id, "position closed", fx);
        }
        self.place(OrderRequest::market(side, qty), OrderOrigin::Close, fx).map(Some)
    }

    /// Records a journal line.
    pub fn log(&mut self, ts: u64, kind: BotEventKind, fx: &mut Effects) {
        self.state.last_event_id += 1;
        fx.events.push(BotEvent { id: self.state.last_event_id, ts, kind });
    }

    fn refresh_views(&mut self) {
        if !self.views_dirty {
            return;
        }
        self.views.clear();
        self.views.extend(self.open.iter().filter(|o| o.origin == OrderOrigin::Strategy).map(
            |o| OpenOrderView {
                id: o.id,
                side: o.side,
                price: o.order_type.limit_price(),
                remaining: o.remaining(),
                tag: o.tag,
            },
        ));
        self.views_dirty = false;
    }

    fn run_intents(&mut self, fx: &mut Effects) {
        for _ in 0..MAX_INTENT_ROUNDS {
            if self.intents.is_empty() {
                return;
            }
            let mut batch = std::mem::take(&mut self.intents);
            for intent in batch.drain(..) {
                match intent {
                    Intent::Place(req) => {
                        // A rejection is recorded on the order; the strategy sees it next call.
                        let _ = self.place(req, OrderOrigin::Strategy, fx);
                    }
                    Intent::Cancel(id) => {
                        let mine = self
                            .open
                            .iter()
                            .any(|o| o.id == id && o.origin == OrderOrigin::Strategy);
                        if mine {
                            self.cancel_open(id, "canceled by strategy", fx);
                        }
                    }
                    Intent::Log { level, message } => {
                        let now = self.now();
                        self.log(now, BotEventKind::Log { level, message }, fx);
                    }
                    Intent::CancelAll => {
                        let ids: Vec<u64> = self
                            .open
                            .iter()
                            .filter(|o| o.origin == OrderOrigin::Strategy)
                            .map(|o| o.id)
                            .collect();
                        for id in ids {
                            self.cancel_open(id, "canceled by strategy", fx);
                        }
                    }
                }
            }
            let now = self.now();
            self.deliver_order_updates(now);
            if self.intents.is_empty() {
                // Keep the allocation for the next event.
                self.intents = batch;
                return;
            }
        }
        tracing::warn!(
            bot_id = self.config.bot_id,
            "strategy kept reacting to its own fills; intents dropped"
        );
        self.intents.clear();
    }

    /// Tells the strategy of its orders' versions since it was last told.
    fn deliver_order_updates(&mut self, now: u64) {
        if self.order_updates.is_empty() {
            return;
        }
        let updates = std::mem::take(&mut self.order_updates);
        self.refresh_views();
        let ctx = strategy_context!(self, now);
        for order in &updates {
            self.strategy.on_order(order, &ctx, &mut self.intents);
        }
    }

    /// Pauses the bot when its strategy has failed (a sandboxed module trapped), with the reason
    /// in the journal and the effects; it is not called again until the owner resumes it.
    fn check_strategy(&mut self, now: u64, fx: &mut Effects) {
        let Some(reason) = self.strategy.failure() else { return };
        self.strategy_active = false;
        self.intents.clear();
        self.order_updates.clear();
        let reason = format!("strategy failed: {reason}");
        self.log(now, BotEventKind::Log { level: "error".into(), message: reason.clone() }, fx);
        fx.paused = Some(reason);
    }

    /// Reports the series values this call changed.
    fn publish_series(&mut self, now: u64, fx: &mut Effects) {
        if self.series.is_empty() {
            return;
        }
        let ctx = strategy_context!(self, now);
        self.strategy.series_values(&ctx, self.published.slots());
        fx.indicators = self.published.changes(now);
    }

    fn now(&self) -> u64 {
        self.state.last_event_ms
    }

    fn check_daily_loss(&mut self, now: u64, fx: &mut Effects) {
        if self.config.risk.max_daily_loss.is_none() || !self.strategy_active {
            return;
        }
        let pnl = self.state.daily.observe(now, &self.state.position, self.venue.mark_price());
        if self.state.daily.breached(&self.config.risk) {
            self.strategy_active = false;
            let reason = format!("daily loss {} reached max_daily_loss", -pnl);
            self.log(now, BotEventKind::Log { level: "warn".into(), message: reason.clone() }, fx);
            fx.paused = Some(reason);
        }
    }
}

#[cfg(test)]
mod tests;
