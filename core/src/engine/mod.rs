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

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::bot::{BotId, Bracket};
use crate::market::MarketEvent;
use crate::strategy::{Intent, OpenOrderView, Strategy, StrategyContext};
use crate::trading::paper::{PaperConfig, PaperFill, PaperVenue};
use crate::trading::risk::{DailyLoss, RiskContext, RiskLimits, RiskRejection, check_order};
use crate::trading::{
    Fill, InstrumentFilters, Order, OrderOrigin, OrderRequest, OrderStatus, OrderType, Position,
};

/// A bot's durable counters and position: one record, rewritten with every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BotState {
    /// Position and balances.
    pub position: Position,
    /// Last order id handed out.
    pub last_order_id: u64,
    /// Last fill id handed out.
    pub last_fill_id: u64,
    /// Last journal event id handed out.
    pub last_event_id: u64,
    /// The strategy's saved state.
    pub strategy: Option<serde_json::Value>,
    /// The day's P&L tracker for `max_daily_loss`.
    pub daily: DailyLoss,
    /// Event time of the last market event seen, ms.
    pub last_event_ms: u64,
}

/// One line of a bot's journal (`GET /bots/{id}/events`, and the owner's live channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BotEvent {
    /// Per-bot sequence number.
    pub id: u64,
    /// When, ms since the epoch.
    pub ts: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: BotEventKind,
}

/// What a journal line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum BotEventKind {
    /// An order was created or changed.
    Order(Order),
    /// A fill.
    Fill(Fill),
    /// The position after a fill.
    Position(Position),
    /// The lifecycle state changed.
    Status {
        /// New state.
        status: crate::bot::BotStatus,
        /// Why, when the runtime decided it.
        reason: Option<String>,
    },
    /// Something the owner should read.
    Log {
        /// `info`, `warn` or `error`.
        level: String,
        /// The message.
        message: String,
    },
}

/// What one call changed, for the actor to persist (in one transaction) and publish.
#[derive(Debug, Default)]
pub struct Effects {
    /// Orders created or changed, latest version last.
    pub orders: Vec<Order>,
    /// New fills.
    pub fills: Vec<Fill>,
    /// New journal lines.
    pub events: Vec<BotEvent>,
    /// Set when the engine paused the strategy, with the reason.
    pub paused: Option<String>,
    /// Requests for a live venue, to send once the effects above are durable.
    pub outbound: Vec<Outbound>,
}

/// A request for a live venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Place this order (a triggered stop goes as a market order).
    Place(Order),
    /// Cancel this order.
    Cancel(Order),
    /// Ask what became of this order (its outcome is unknown).
    Query(Order),
}

impl Effects {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.fills.is_empty()
            && self.events.is_empty()
            && self.paused.is_none()
            && self.outbound.is_empty()
    }

    /// Empties it for reuse.
    pub fn clear(&mut self) {
        self.orders.clear();
        self.fills.clear();
        self.events.clear();
        self.paused = None;
        self.outbound.clear();
    }
}

/// The fixed settings of one bot's engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The bot.
    pub bot_id: BotId,
    /// The instrument's filters.
    pub filters: InstrumentFilters,
    /// Pre-trade limits.
    pub risk: RiskLimits,
    /// Bracket around entries.
    pub bracket: Option<Bracket>,
    /// Paper fees and slippage.
    pub paper: PaperConfig,
    /// Whether the venue allows short positions (futures).
    pub allow_short: bool,
    /// Real orders on the venue (sent through [`Effects::outbound`]) instead of paper fills.
    pub live: bool,
}

/// Why a cancel did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// The order is not open: unknown, or already final.
    #[error("order {0} is not open")]
    NotOpen(u64),
}

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
    paper_fills: Vec<PaperFill>,
    /// Live orders the venue was asked to cancel (asked once, until it answers).
    cancel_pending: Vec<u64>,
    /// Most exposure this bot may hold under its owner's limit (the limit less the owner's other
    /// bots), when one is set.
    user_budget: Option<Decimal>,
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
            paper_fills: Vec::new(),
            cancel_pending: Vec::new(),
            user_budget: None,
        }
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

    /// The bot's exposure in quote: its position at the mark price plus the remaining notional
    /// of open orders that would add to it (exits and bracket legs do not).
    pub fn exposure(&self) -> Decimal {
        let mark = self.venue.mark_price();
        let position = mark.map_or(Decimal::ZERO, |m| self.state.position.qty.abs() * m);
        let adding = |o: &&Order| {
            matches!(o.origin, OrderOrigin::Strategy | OrderOrigin::Manual)
                && (self.state.position.qty.is_zero()
                    || self.state.position.qty.is_sign_positive()
                        == (o.side == crate::trading::Side::Buy))
        };
        let orders: Decimal = self
            .open
            .iter()
            .filter(adding)
            .filter_map(|o| Some(o.remaining() * o.order_type.limit_price().or(mark)?))
            .sum();
        position + orders
    }

    /// Whether the strategy is called on events.
    pub fn set_strategy_active(&mut self, active: bool) {
        self.strategy_active = active;
    }

    /// Handles one market event.
    pub fn on_market(&mut self, event: &MarketEvent, fx: &mut Effects) {
        let now = event.exchange_ts;
        self.state.last_event_ms = self.state.last_event_ms.max(now);
        self.paper_fills.clear();
        self.venue.on_market(event, &mut self.paper_fills);
        if self.config.live {
            self.trigger_stops(event, fx);
        }
        if !self.paper_fills.is_empty() {
            let fills = std::mem::take(&mut self.paper_fills);
            for fill in &fills {
                self.apply_fill(fill, fx);
            }
            self.paper_fills = fills;
        }
        if self.strategy_active {
            self.refresh_views();
            let ctx = StrategyContext {
                position: &self.state.position,
                open_orders: &self.views,
                filters: &self.config.filters,
                now_ms: now,
            };
            self.strategy.on_event(event, &ctx, &mut self.intents);
            self.run_intents(fx);
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

    /// Flattens the position with a market order (after canceling bracket legs).
    ///
    /// # Errors
    /// Risk or the venue refused the closing order. `Ok(None)` when already flat.
    pub fn close_position(&mut self, fx: &mut Effects) -> Result<Option<Order>, RiskRejection> {
        let qty = self.config.filters.floor_qty(self.state.position.qty.abs());
        if qty.is_zero() {
            return Ok(None);
        }
        let side = if self.state.position.qty.is_sign_positive() {
            crate::trading::Side::Sell
        } else {
            crate::trading::Side::Buy
        };
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

    fn now(&self) -> u64 {
        self.state.last_event_ms
    }

    fn place(
        &mut self,
        req: OrderRequest,
        origin: OrderOrigin,
        fx: &mut Effects,
    ) -> Result<Order, RiskRejection> {
        let reduces = !self.state.position.qty.is_zero()
            && self.state.position.qty.is_sign_positive()
                != (req.side == crate::trading::Side::Buy);
        if reduces && !matches!(origin, OrderOrigin::TakeProfit | OrderOrigin::StopLoss) {
            // An exit replaces the bracket: its legs would otherwise hold the quantity being sold.
            for id in self.bracket_legs() {
                self.cancel_open(id, "bracket replaced by an exit order", fx);
            }
        }
        let now = self.now();
        self.state.last_order_id += 1;
        let id = self.state.last_order_id;
        let mut order = Order {
            id,
            bot_id: self.config.bot_id,
            client_order_id: client_order_id(self.config.bot_id, id),
            side: req.side,
            order_type: req.order_type,
            qty: req.qty,
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status: OrderStatus::New,
            origin,
            tag: req.tag,
            oco_with: None,
            reason: None,
            created_ts: now,
            updated_ts: now,
        };
        let ctx = RiskContext {
            filters: &self.config.filters,
            limits: &self.config.risk,
            position: &self.state.position,
            open_orders: &self.open,
            mark_price: self.venue.mark_price(),
            allow_short: self.config.allow_short,
            base_balance_check: !self.config.allow_short,
            user_exposure_headroom: self.user_budget.map(|budget| budget - self.exposure()),
        };
        let exempt =
            matches!(origin, OrderOrigin::TakeProfit | OrderOrigin::StopLoss | OrderOrigin::Close);
        let checked = if exempt { Ok(()) } else { check_order(&req, &ctx) };
        if let Err(rejection) = checked {
            order.status = OrderStatus::Rejected;
            order.reason = Some(format!("{}: {}", rejection.code, rejection.reason));
            self.record_order(&order, fx);
            return Err(rejection);
        }
        if self.config.live {
            return Ok(self.send_live(order, fx));
        }
        self.paper_fills.clear();
        let mut fills = std::mem::take(&mut self.paper_fills);
        let submitted = self.venue.submit(&order, now, &mut fills);
        match submitted {
            Err(reason) => {
                order.status = OrderStatus::Rejected;
                order.reason = Some(format!("VENUE_REJECTED: {reason}"));
                self.record_order(&order, fx);
                self.paper_fills = fills;
                Err(RiskRejection { code: "VENUE_REJECTED", reason })
            }
            Ok(()) => {
                order.status = OrderStatus::Accepted;
                self.open.push(order.clone());
                self.views_dirty = true;
                self.record_order(&order, fx);
                for fill in &fills {
                    self.apply_fill(fill, fx);
                }
                fills.clear();
                self.paper_fills = fills;
                // The latest version (immediate fills update it) is the last one recorded.
                Ok(fx.orders.iter().rev().find(|o| o.id == id).cloned().unwrap_or(order))
            }
        }
    }

    fn record_order(&mut self, order: &Order, fx: &mut Effects) {
        fx.orders.push(order.clone());
        self.log(order.updated_ts, BotEventKind::Order(order.clone()), fx);
    }

    fn cancel_open(&mut self, order_id: u64, reason: &str, fx: &mut Effects) -> Option<Order> {
        let index = self.open.iter().position(|o| o.id == order_id)?;
        if self.config.live && !is_armed_stop(&self.open[index]) {
            // The venue has it: ask it to cancel; the order ends when the venue says so.
            let order = self.open[index].clone();
            if self.cancel_pending.contains(&order_id) {
                return Some(order);
            }
            self.cancel_pending.push(order_id);
            fx.outbound.push(Outbound::Cancel(order.clone()));
            let message = format!("cancel of order {order_id} requested: {reason}");
            self.log(self.now(), BotEventKind::Log { level: "info".into(), message }, fx);
            return Some(order);
        }
        self.venue.cancel(order_id);
        let mut order = self.open.remove(index);
        self.views_dirty = true;
        order.status = OrderStatus::Canceled;
        order.reason = Some(reason.to_owned());
        order.updated_ts = self.now();
        self.record_order(&order, fx);
        Some(order)
    }

    fn apply_fill(&mut self, pf: &PaperFill, fx: &mut Effects) {
        let Some(index) = self.open.iter().position(|o| o.id == pf.order_id) else {
            tracing::warn!(
                bot_id = self.config.bot_id,
                order_id = pf.order_id,
                "fill for an order that is not open; ignored"
            );
            return;
        };
        let order = &mut self.open[index];
        let filled_before = order.filled_qty;
        order.filled_qty += pf.qty;
        if !order.filled_qty.is_zero() {
            order.avg_fill_price =
                (order.avg_fill_price * filled_before + pf.price * pf.qty) / order.filled_qty;
        }
        order.status = if order.remaining() <= Decimal::ZERO {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        order.updated_ts = pf.ts;
        let order = order.clone();
        self.views_dirty = true;
        self.state.last_fill_id += 1;
        let fill = Fill {
            id: self.state.last_fill_id,
            bot_id: self.config.bot_id,
            order_id: order.id,
            side: order.side,
            price: pf.price,
            qty: pf.qty,
            fee: pf.fee,
            liquidity: pf.liquidity,
            tag: order.tag,
            ts: pf.ts,
        };
        self.state.position.apply(fill.side, fill.qty, fill.price, fill.fee);
        if order.status == OrderStatus::Filled {
            self.open.remove(index);
        }
        self.record_order(&order, fx);
        fx.fills.push(fill.clone());
        self.log(fill.ts, BotEventKind::Fill(fill.clone()), fx);
        self.log(fill.ts, BotEventKind::Position(self.state.position.clone()), fx);

        if order.status == OrderStatus::Filled {
            if let Some(other) = order.oco_with {
                self.cancel_open(other, "other bracket leg filled", fx);
            }
            if matches!(order.origin, OrderOrigin::Strategy | OrderOrigin::Manual) {
                self.place_bracket(&order, fx);
            }
        }
        if self.state.position.qty.is_zero() {
            // Nothing left to protect: bracket legs would open a new position.
            for id in self.bracket_legs() {
                self.cancel_open(id, "position is flat", fx);
            }
        }
        self.refresh_views();
        let ctx = StrategyContext {
            position: &self.state.position,
            open_orders: &self.views,
            filters: &self.config.filters,
            now_ms: fill.ts,
        };
        if order.origin == OrderOrigin::Strategy && self.strategy_active {
            self.strategy.on_fill(&fill, &ctx, &mut self.intents);
        }
    }

    /// Ids of the open bracket legs.
    fn bracket_legs(&self) -> Vec<u64> {
        self.open
            .iter()
            .filter(|o| matches!(o.origin, OrderOrigin::TakeProfit | OrderOrigin::StopLoss))
            .map(|o| o.id)
            .collect()
    }

    /// Places the take-profit limit and stop-loss stop around a filled entry, linked as OCO.
    fn place_bracket(&mut self, entry: &Order, fx: &mut Effects) {
        let Some(bracket) = self.config.bracket else { return };
        // Only entries that opened or added to the position get a bracket.
        let pos = self.state.position.qty;
        let adds =
            (entry.side == crate::trading::Side::Buy) == pos.is_sign_positive() && !pos.is_zero();
        if !adds {
            return;
        }
        let qty = self.config.filters.floor_qty(entry.filled_qty.min(pos.abs()));
        if qty.is_zero() {
            return;
        }
        let hundred = Decimal::ONE_HUNDRED;
        let entry_price = entry.avg_fill_price;
        let (tp, sl) = match entry.side {
            crate::trading::Side::Buy => (
                entry_price * (hundred + bracket.take_profit_pct) / hundred,
                entry_price * (hundred - bracket.stop_loss_pct) / hundred,
            ),
            crate::trading::Side::Sell => (
                entry_price * (hundred - bracket.take_profit_pct) / hundred,
                entry_price * (hundred + bracket.stop_loss_pct) / hundred,
            ),
        };
        let exit = entry.side.opposite();
        let filters = &self.config.filters;
        let tp_req = OrderRequest {
            side: exit,
            qty,
            order_type: OrderType::Limit { price: filters.round_price(tp) },
            tag: entry.tag,
        };
        let sl_req = OrderRequest {
            side: exit,
            qty,
            order_type: OrderType::Stop { stop_price: filters.round_price(sl) },
            tag: entry.tag,
        };
        let Ok(tp_order) = self.place(tp_req, OrderOrigin::TakeProfit, fx) else { return };
        if tp_order.status.is_final() {
            return;
        }
        match self.place(sl_req, OrderOrigin::StopLoss, fx) {
            Ok(sl_order) if sl_order.status.is_open() => {
                self.link_oco(tp_order.id, sl_order.id, fx);
            }
            _ => {}
        }
    }

    fn link_oco(&mut self, a: u64, b: u64, fx: &mut Effects) {
        for (id, other) in [(a, b), (b, a)] {
            if let Some(order) = self.open.iter_mut().find(|o| o.id == id) {
                order.oco_with = Some(other);
                fx.orders.push(order.clone());
            }
        }
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

/// The id sent to the venue for a bot's order: the same on every retry, unique per bot, and
/// within Binance's 36-character, `[.A-Za-z0-9:/_-]` rule.
pub fn client_order_id(bot_id: BotId, order_id: u64) -> String {
    format!("keel-{bot_id}-{order_id:06}")
}

mod live;
pub use live::is_armed_stop;
pub use live::{ExecOutcome, ExecReport, VenueFillReport, fee_in_quote};

#[cfg(test)]
mod tests;
