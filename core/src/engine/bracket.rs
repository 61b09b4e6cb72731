//! Brackets: a take-profit limit and a stop-loss stop placed around a filled entry and linked as
//! one-cancels-the-other, so that whichever fills first cancels its partner.
//!
//! Only an entry that opened or added to the position gets a bracket, for at most the part of the
//! position no other open exit already takes out. When the take-profit leg is refused no stop is
//! placed, and the legs are linked only when both are open.

use rust_decimal::Decimal;

use super::{BotEngine, BotEventKind, Effects, is_armed_stop};
use crate::trading::{Order, OrderOrigin, OrderRequest, OrderType, Side};

impl BotEngine {
    /// Ids of the open bracket legs.
    pub(super) fn bracket_legs(&self) -> Vec<u64> {
        self.open
            .iter()
            .filter(|o| matches!(o.origin, OrderOrigin::TakeProfit | OrderOrigin::StopLoss))
            .map(|o| o.id)
            .collect()
    }

    /// Places the take-profit limit and stop-loss stop around a filled entry, linked as OCO.
    pub(super) fn place_bracket(&mut self, entry: &Order, fx: &mut Effects) {
        let Some(bracket) = self.config.bracket else { return };
        // Only entries that opened or added to the position get a bracket.
        let pos = self.state.position.qty;
        let adds = (entry.side == Side::Buy) == pos.is_sign_positive() && !pos.is_zero();
        if !adds {
            return;
        }
        let free = pos.abs() - self.committed_to_exits(entry.side.opposite());
        let qty = self.config.filters.floor_qty(entry.filled_qty.min(free));
        if qty <= Decimal::ZERO {
            return;
        }
        let hundred = Decimal::ONE_HUNDRED;
        let entry_price = entry.avg_fill_price;
        let (tp, sl) = match entry.side {
            Side::Buy => (
                entry_price * (hundred + bracket.take_profit_pct) / hundred,
                entry_price * (hundred - bracket.stop_loss_pct) / hundred,
            ),
            Side::Sell => (
                entry_price * (hundred - bracket.take_profit_pct) / hundred,
                entry_price * (hundred + bracket.stop_loss_pct) / hundred,
            ),
        };
        let exit = entry.side.opposite();
        let filters = &self.config.filters;
        let tp_req = OrderRequest {
            side: exit,
            qty,
            order_type: OrderType::limit(filters.round_price(tp)),
            tag: entry.tag,
        };
        let sl_req = OrderRequest {
            side: exit,
            qty,
            order_type: OrderType::Stop { stop_price: filters.round_price(sl) },
            tag: entry.tag,
        };
        if self.native_brackets {
            self.place_native_bracket(tp_req, sl_req, fx);
            return;
        }
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

    /// How much of the position open orders on the exit side already take out: each bracket
    /// pair counts once (one leg cancels the other), and without shorting every other resting
    /// sell too, since the venue holds the base it would sell. A new bracket only covers the
    /// rest, or an entry that fills after part of the position was closed would get legs that
    /// together exit more than is held.
    pub(super) fn committed_to_exits(&self, exit: Side) -> Decimal {
        let open_ids: Vec<u64> = self.open.iter().map(|o| o.id).collect();
        self.open
            .iter()
            .filter(|o| o.side == exit && o.status.is_open())
            .filter(|o| match o.origin {
                OrderOrigin::TakeProfit | OrderOrigin::StopLoss => true,
                _ => !self.config.allow_short,
            })
            // The second leg of a pair whose first leg is still open is already counted.
            .filter(|o| !o.oco_with.is_some_and(|p| p < o.id && open_ids.contains(&p)))
            .map(Order::remaining)
            .sum()
    }

    /// Keeps a bracket's legs the same size: when one leg has filled in part, its partner may
    /// only exit what the first still has to, or the pair would sell (or buy) more than the
    /// position holds once both are done. A partner resting at a live venue would need a
    /// cancel and replace there; it is left as it is and the journal says so.
    pub(super) fn shrink_partner(&mut self, partner: u64, remaining: Decimal, fx: &mut Effects) {
        let now = self.now();
        let live = self.config.live;
        let Some(order) = self.open.iter_mut().find(|o| o.id == partner) else { return };
        if order.remaining() <= remaining {
            return;
        }
        if live && !is_armed_stop(order) {
            let message = format!(
                "bracket leg {partner} at the venue still exits {}; its partner has {remaining} left",
                order.remaining()
            );
            self.log(now, BotEventKind::Log { level: "warn".into(), message }, fx);
            return;
        }
        order.qty = order.filled_qty + remaining;
        order.updated_ts = now;
        let order = order.clone();
        self.venue.reduce(partner, remaining);
        self.views_dirty = true;
        self.record_order(&order, fx);
    }

    pub(super) fn link_oco(&mut self, a: u64, b: u64, fx: &mut Effects) {
        for (id, other) in [(a, b), (b, a)] {
            if let Some(order) = self.open.iter_mut().find(|o| o.id == id) {
                order.oco_with = Some(other);
                fx.orders.push(order.clone());
            }
        }
    }
}
