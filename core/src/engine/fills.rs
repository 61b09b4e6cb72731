//! Fills: one execution updates its order (filled quantity, average price, status), the
//! position and balances, and the journal; a filled bracket leg cancels its partner (OCO), a
//! filled entry gets its bracket, a leg filled in part shrinks its partner, a flat position loses its bracket legs, and the strategy is
//! told (`on_fill`) about fills of its own orders.

use rust_decimal::Decimal;

use super::{BotEngine, BotEventKind, Effects};
use crate::strategy::StrategyContext;
use crate::trading::paper::PaperFill;
use crate::trading::{Fill, OrderOrigin, OrderStatus};

impl BotEngine {
    /// Applies one execution of an open order; a fill for an order that is not open is ignored.
    pub(super) fn apply_fill(&mut self, pf: &PaperFill, fx: &mut Effects) {
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
            commission: pf.commission.clone(),
        };
        self.state.position.apply_fill(&fill);
        if order.status == OrderStatus::Filled {
            self.open.remove(index);
        }
        self.record_order(&order, fx);
        fx.fills.push(fill.clone());
        self.log(fill.ts, BotEventKind::Fill(fill.clone()), fx);
        self.log(fill.ts, BotEventKind::Position(self.state.position.clone()), fx);

        if order.status == OrderStatus::PartiallyFilled
            && let Some(other) = order.oco_with
        {
            self.shrink_partner(other, order.remaining(), fx);
        }
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
        let ctx = strategy_context!(self, fill.ts);
        if order.origin == OrderOrigin::Strategy && self.strategy_active {
            self.strategy.on_fill(&fill, &ctx, &mut self.intents);
        }
    }
}
