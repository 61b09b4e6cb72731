//! The order manager: turns a request into a numbered [`Order`], runs the pre-trade risk checks
//! (bracket legs and closes are exempt), hands it to the paper venue or, live, to the actor, and
//! records every version of it; and cancels open orders.
//!
//! An exit order replaces the bracket: the bracket legs would otherwise hold the quantity being
//! sold, and risk would refuse the exit.

use rust_decimal::Decimal;

use super::{BotEngine, BotEventKind, Effects, Outbound, is_armed_stop};
use crate::bot::BotId;
use crate::trading::paper::Submitted;
use crate::trading::risk::{RiskContext, RiskRejection, check_order};
use crate::trading::{Order, OrderOrigin, OrderRequest, OrderStatus, OrderType, Side};

/// Why a cancel did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// The order is not open: unknown, or already final.
    #[error("order {0} is not open")]
    NotOpen(u64),
}

/// The id sent to the venue for a bot's order: the same on every retry, unique per bot, and
/// within Binance's 36-character, `[.A-Za-z0-9:/_-]` rule.
pub fn client_order_id(bot_id: BotId, order_id: u64) -> String {
    format!("keel-{bot_id}-{order_id:06}")
}

impl BotEngine {
    /// Turns `req` into the bot's next order, checks it (unless `origin` is exempt) and submits
    /// it; the order is recorded in `fx` whatever the outcome.
    pub(super) fn place(
        &mut self,
        req: OrderRequest,
        origin: OrderOrigin,
        fx: &mut Effects,
    ) -> Result<Order, RiskRejection> {
        let reduces = !self.state.position.qty.is_zero()
            && self.state.position.qty.is_sign_positive() != (req.side == Side::Buy);
        if reduces && !matches!(origin, OrderOrigin::TakeProfit | OrderOrigin::StopLoss) {
            // An exit replaces the bracket: its legs would otherwise hold the quantity being sold.
            for id in self.bracket_legs() {
                self.cancel_open(id, "bracket replaced by an exit order", fx);
            }
        }
        let req = self.fit_sell_to_holdings(req, origin, fx);
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
            venue_list: self.pending_list.clone(),
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
            user_notional: self.user_notional,
            exposure: self.exposure(),
            futures: self.config.futures.as_ref().filter(|_| !self.config.live),
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
            Ok(submitted) => {
                order.status = OrderStatus::Accepted;
                self.open.push(order.clone());
                self.views_dirty = true;
                self.record_order(&order, fx);
                for fill in &fills {
                    self.apply_fill(fill, fx);
                }
                fills.clear();
                self.paper_fills = fills;
                if submitted == Submitted::Done
                    && let Some(index) = self.open.iter().position(|o| o.id == id)
                {
                    // An IOC or FOK limit: what did not fill at once expired.
                    let reason = match order.order_type {
                        OrderType::Limit { time_in_force, .. } => {
                            format!("{time_in_force:?} limit: the unfilled rest expired")
                                .to_uppercase()
                        }
                        _ => "expired".to_owned(),
                    };
                    self.venue.cancel(id);
                    self.finish_expired(index, reason, fx);
                }
                // The latest version (immediate fills update it) is the last one recorded.
                Ok(fx.orders.iter().rev().find(|o| o.id == id).cloned().unwrap_or(order))
            }
        }
    }

    /// A strategy's sell on a venue without shorting never asks for more than the account holds:
    /// Binance takes a buy's commission from the base received, so a grid level or an exit that
    /// sells what it bought would be refused for the commission. Such a sell is cut to what is
    /// held less the open sells, rounded down to the step, and the journal says so with the dust
    /// left. A sell with nothing free, or one that would fall below the minimum quantity, goes on
    /// unchanged (the risk checks refuse it with the reason). The owner's own orders are never
    /// changed.
    fn fit_sell_to_holdings(
        &mut self,
        mut req: OrderRequest,
        origin: OrderOrigin,
        fx: &mut Effects,
    ) -> OrderRequest {
        if self.config.allow_short || req.side != Side::Sell || origin != OrderOrigin::Strategy {
            return req;
        }
        let open_sells: Decimal = self
            .open
            .iter()
            .filter(|o| o.side == Side::Sell && o.status.is_open())
            .map(Order::remaining)
            .sum();
        let free = self.state.position.qty - open_sells;
        if req.qty <= free || free <= Decimal::ZERO {
            return req;
        }
        let fitted = self.config.filters.floor_qty(free);
        if fitted.is_zero() || fitted < self.config.filters.min_qty {
            return req;
        }
        let message = format!(
            "sell of {} cut to {fitted}: {free} is held after open sells; {} left as dust",
            req.qty,
            (free - fitted).normalize()
        );
        self.log(self.now(), BotEventKind::Log { level: "info".into(), message }, fx);
        req.qty = fitted;
        req
    }

    /// Ends an open paper order that expired at once (canceled, with the reason).
    fn finish_expired(&mut self, index: usize, reason: String, fx: &mut Effects) {
        let mut order = self.open.remove(index);
        self.views_dirty = true;
        order.status = OrderStatus::Canceled;
        order.reason = Some(reason);
        order.updated_ts = self.now();
        self.record_order(&order, fx);
    }

    /// Records a version of an order and its journal line.
    pub(super) fn record_order(&mut self, order: &Order, fx: &mut Effects) {
        if self.wants_order_updates && order.origin == OrderOrigin::Strategy {
            self.order_updates.push(order.clone());
        }
        fx.orders.push(order.clone());
        self.log(order.updated_ts, BotEventKind::Order(order.clone()), fx);
    }

    /// Cancels an open order (one resting at a live venue: asks the venue to); `None` when it is
    /// not open.
    pub(super) fn cancel_open(
        &mut self,
        order_id: u64,
        reason: &str,
        fx: &mut Effects,
    ) -> Option<Order> {
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
}
