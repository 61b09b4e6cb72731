//! Live execution: the engine's side of real orders.
//!
//! With [`EngineConfig::live`](super::EngineConfig) set, an order that passes risk is recorded as
//! `new` and handed to the actor as [`Outbound::Place`]; the actor sends it only once that record
//! is durable, so a crash can never leave an order at the venue that the store does not know.
//! What the venue answers comes back as an [`ExecReport`], applied by [`BotEngine::on_exec`]:
//!
//! - fills are derived from the venue's cumulative executed quantity, so a report applied twice,
//!   or a query answer after a new-order answer, never counts a fill twice;
//! - an answer that leaves the outcome open (timeout, 5xx) marks the order `unknown`; it stays
//!   open (it counts against limits) until a query finds what happened, and then ends
//!   `reconciled`;
//! - stops are emulated: a stop-loss rests here armed (`accepted`, never at the venue) and is sent
//!   as a market order when a trade or quote crosses its stop price.

use rust_decimal::Decimal;

use super::{BotEngine, BotEventKind, Effects, Outbound};
use crate::market::{EventKind, MarketEvent};
use crate::trading::paper::PaperFill;
use crate::trading::{Commission, FeeAsset, Liquidity, Order, OrderStatus, OrderType, Side};

/// What the venue said about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecReport {
    /// The order (the bot's id, not the venue's).
    pub order_id: u64,
    /// What was learned.
    pub outcome: ExecOutcome,
}

/// The venue's answer, reduced to what the engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The venue knows the order and reports its state.
    Venue {
        /// Binance's status word: `NEW`, `PARTIALLY_FILLED`, `FILLED`, `CANCELED`, `EXPIRED`, ...
        status: String,
        /// Cumulative filled quantity.
        executed_qty: Decimal,
        /// Cumulative filled quote amount.
        cum_quote: Decimal,
        /// Individual executions, when the answer lists them (new-order answers).
        fills: Vec<VenueFillReport>,
        /// When the answer arrived, ms.
        ts: u64,
    },
    /// The venue refused the order; nothing was placed.
    Rejected(String),
    /// No answer that says what happened: the order may or may not exist.
    Unknown(String),
    /// The venue has no such order (it never arrived).
    NotFound,
}

/// One execution as the venue listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueFillReport {
    /// Price.
    pub price: Decimal,
    /// Quantity.
    pub qty: Decimal,
    /// The commission as the venue charged it, classified against the instrument (see
    /// [`Commission::classify`]); `None` when the venue did not say.
    pub commission: Option<Commission>,
}

impl VenueFillReport {
    /// The commission's value in quote: as is in the quote asset, times the price in the base
    /// asset; `None` for a third asset (BNB), which Keel has no price for.
    pub fn fee_in_quote(&self) -> Option<Decimal> {
        let c = self.commission.as_ref()?;
        if c.amount.is_zero() {
            return Some(Decimal::ZERO);
        }
        match c.charged_to {
            FeeAsset::Quote => Some(c.amount),
            FeeAsset::Base => c.amount.checked_mul(self.price),
            FeeAsset::Other => None,
        }
    }
}

/// A stop-loss that Keel holds armed until its price is crossed (it is not at the venue; a leg
/// of a native order list is).
pub fn is_armed_stop(order: &Order) -> bool {
    matches!(order.order_type, OrderType::Stop { .. })
        && order.status == OrderStatus::Accepted
        && order.venue_list.is_none()
}

impl BotEngine {
    /// Records an order that passed risk and asks for it to be sent (or arms it, for a stop).
    pub(super) fn send_live(&mut self, mut order: Order, fx: &mut Effects) -> Order {
        if order.venue_list.is_some() {
            // A leg of a native order list: the bracket sends both legs as one request.
        } else if matches!(order.order_type, OrderType::Stop { .. }) {
            order.status = OrderStatus::Accepted;
        } else {
            fx.outbound.push(Outbound::Place(order.clone()));
        }
        self.open.push(order.clone());
        self.views_dirty = true;
        self.record_order(&order, fx);
        order
    }

    /// Sends armed stops whose stop price `event` crossed, as market orders.
    pub(super) fn trigger_stops(&mut self, event: &MarketEvent, fx: &mut Effects) {
        let crossed = |order: &Order| {
            let OrderType::Stop { stop_price } = order.order_type else { return false };
            match (&event.kind, order.side) {
                (EventKind::Trade { price, .. }, Side::Sell) => *price <= stop_price,
                (EventKind::Trade { price, .. }, Side::Buy) => *price >= stop_price,
                (EventKind::Quote { bid, .. }, Side::Sell) => *bid <= stop_price,
                (EventKind::Quote { ask, .. }, Side::Buy) => *ask >= stop_price,
                _ => false,
            }
        };
        let now = event.exchange_ts;
        let mut triggered = Vec::new();
        for order in self.open.iter_mut().filter(|o| is_armed_stop(o) && crossed(o)) {
            order.status = OrderStatus::New;
            order.updated_ts = now;
            triggered.push(order.clone());
        }
        for order in triggered {
            self.record_order(&order, fx);
            fx.outbound.push(Outbound::Place(order));
        }
    }

    /// Applies what the venue said about an order.
    pub fn on_exec(&mut self, report: ExecReport, fx: &mut Effects) {
        let Some(index) = self.open.iter().position(|o| o.id == report.order_id) else {
            // Final already (a late answer after a query settled it): nothing to learn.
            return;
        };
        let was_unknown = self.open[index].status == OrderStatus::Unknown;
        let order_id = report.order_id;
        let native_leg = self.open[index].venue_list.is_some();
        let refused = matches!(report.outcome, ExecOutcome::Rejected(_) | ExecOutcome::NotFound);
        let keel_cancel = self.cancel_pending.contains(&order_id);
        self.apply_exec(index, was_unknown, report, fx);
        let open = &self.open;
        self.cancel_pending.retain(|id| open.iter().any(|o| o.id == *id));
        if native_leg && refused {
            self.native_list_refused(order_id, fx);
        } else if native_leg && self.state.position.qty.is_zero() {
            // Nothing left to protect. A venue that does not link the legs (Binance futures'
            // conditional orders) keeps this one working after its partner closed the
            // position, and the cancel asked for then may never have gone out (Keel stopped
            // first): ask again (no second cancel while one is in flight).
            self.cancel_open(order_id, "position is flat", fx);
        }
        if native_leg && !keel_cancel {
            self.native_leg_ended(order_id, fx);
        }
    }

    /// Whether a cancel of `order_id` was sent and not yet answered.
    pub fn cancel_pending(&self, order_id: u64) -> bool {
        self.cancel_pending.contains(&order_id)
    }

    /// Forgets that a cancel was sent (it failed), so another can be.
    pub fn cancel_failed(&mut self, order_id: u64) {
        self.cancel_pending.retain(|id| *id != order_id);
    }

    fn apply_exec(
        &mut self,
        index: usize,
        was_unknown: bool,
        report: ExecReport,
        fx: &mut Effects,
    ) {
        let now = self.now();
        match report.outcome {
            ExecOutcome::Rejected(reason) => {
                self.finish(index, OrderStatus::Rejected, format!("VENUE_REJECTED: {reason}"), fx);
            }
            ExecOutcome::NotFound => {
                let status =
                    if was_unknown { OrderStatus::Reconciled } else { OrderStatus::Rejected };
                self.finish(index, status, "the venue never received the order".into(), fx);
            }
            ExecOutcome::Unknown(reason) => {
                let order = &mut self.open[index];
                if order.status == OrderStatus::Unknown {
                    return;
                }
                order.status = OrderStatus::Unknown;
                order.reason = Some(reason.clone());
                order.updated_ts = now;
                let order = order.clone();
                self.record_order(&order, fx);
                let message =
                    format!("order {} outcome unknown ({reason}); querying the venue", order.id);
                self.log(now, BotEventKind::Log { level: "warn".into(), message }, fx);
            }
            ExecOutcome::Venue { status, executed_qty, cum_quote, fills, ts } => {
                self.apply_venue_fills(index, executed_qty, cum_quote, &fills, ts, fx);
                let Some(index) = self.open.iter().position(|o| o.id == report.order_id) else {
                    // Filled: apply_fill closed it. An order whose outcome was unknown says so.
                    if was_unknown
                        && let Some(filled) =
                            fx.orders.iter().rev().find(|o| o.id == report.order_id).cloned()
                    {
                        let mut order = filled;
                        order.status = OrderStatus::Reconciled;
                        order.reason =
                            Some(format!("outcome was unknown; venue reported {status}"));
                        self.record_order(&order, fx);
                    }
                    return;
                };
                let final_status = match status.as_str() {
                    "CANCELED" | "EXPIRED" | "EXPIRED_IN_MATCH" | "REJECTED" => Some(status),
                    "FILLED" => Some(status),
                    _ => None,
                };
                match final_status {
                    Some(word) => {
                        let end = if was_unknown {
                            OrderStatus::Reconciled
                        } else if word == "REJECTED" {
                            OrderStatus::Rejected
                        } else {
                            OrderStatus::Canceled
                        };
                        self.finish(index, end, format!("venue reported {word}"), fx);
                    }
                    None => {
                        let order = &mut self.open[index];
                        let open_status = if order.filled_qty.is_zero() {
                            OrderStatus::Accepted
                        } else {
                            OrderStatus::PartiallyFilled
                        };
                        if order.status != open_status {
                            order.status = open_status;
                            order.reason = None;
                            order.updated_ts = ts;
                            let order = order.clone();
                            self.record_order(&order, fx);
                        }
                    }
                }
            }
        }
    }

    /// Turns the venue's cumulative execution into fills for what is new since the last report.
    fn apply_venue_fills(
        &mut self,
        index: usize,
        executed_qty: Decimal,
        cum_quote: Decimal,
        fills: &[VenueFillReport],
        ts: u64,
        fx: &mut Effects,
    ) {
        let order = &self.open[index];
        let known_qty = order.filled_qty;
        let known_quote = order.avg_fill_price * order.filled_qty;
        let new_qty = (executed_qty.min(order.qty) - known_qty).max(Decimal::ZERO);
        if new_qty.is_zero() {
            return;
        }
        let order_id = order.id;
        let liquidity = match order.order_type {
            OrderType::Limit { .. } => Liquidity::Maker,
            _ => Liquidity::Taker,
        };
        let fee_bps = self.config.paper.fee_bps;
        let estimate = |price: Decimal, qty: Decimal| price * qty * fee_bps / Decimal::from(10_000);
        let listed: Decimal = fills.iter().map(|f| f.qty).sum();
        let executed = executed_qty.min(order.qty);
        let mut batch = Vec::new();
        if !fills.is_empty() && (listed == executed || listed == new_qty) {
            // Every execution listed (a new-order answer, the order's trades), or exactly the new
            // ones (a stream's execution report): keep them as the venue made them, each with its
            // own commission, skipping what is already counted.
            let skip = if listed == executed { known_qty } else { Decimal::ZERO };
            let mut before = Decimal::ZERO;
            for f in fills {
                let start = before;
                before += f.qty;
                let take = (before - start.max(skip)).max(Decimal::ZERO).min(f.qty);
                if take.is_zero() {
                    continue;
                }
                let share = |amount: Decimal| {
                    if take == f.qty { amount } else { (amount * take / f.qty).round_dp(12) }
                };
                let price = f.price.normalize();
                let qty = take.normalize();
                let fee = f.fee_in_quote().map_or_else(|| estimate(price, qty), share);
                let commission = f.commission.clone().map(|c| Commission {
                    amount: share(c.amount).normalize(),
                    quote_value_estimated: c.charged_to == FeeAsset::Other && !c.amount.is_zero(),
                    ..c
                });
                let fee = fee.normalize();
                batch.push(PaperFill { order_id, price, qty, fee, liquidity, ts, commission });
            }
        } else {
            // Only totals: one fill for the difference, at its average price. The venue did not
            // say what it charged, so the fee is an estimate at the bot's rate.
            let quote = (cum_quote - known_quote).max(Decimal::ZERO);
            let price = (quote / new_qty).round_dp(12).normalize();
            let fee = estimate(price, new_qty).normalize();
            let qty = new_qty.normalize();
            if self.config.live {
                let message = format!(
                    "order {order_id}: the venue reported {qty} filled without its commission; \
                     the fee is estimated and the position may differ from the account by it"
                );
                self.log(ts, BotEventKind::Log { level: "warn".into(), message }, fx);
            }
            batch.push(PaperFill { order_id, price, qty, fee, liquidity, ts, commission: None });
        }
        for fill in &batch {
            self.apply_fill(fill, fx);
        }
    }

    /// Ends an open order with `status`.
    fn finish(&mut self, index: usize, status: OrderStatus, reason: String, fx: &mut Effects) {
        let mut order = self.open.remove(index);
        self.views_dirty = true;
        order.status = status;
        order.reason = Some(reason);
        order.updated_ts = self.now();
        self.record_order(&order, fx);
    }
}
