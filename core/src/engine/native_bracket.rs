//! Native brackets: on a venue that holds one-cancels-the-other order lists (Binance spot's OCO),
//! a live bracket's take-profit and stop-loss go to the venue as one list, so the position stays
//! protected while Keel is down.
//!
//! The engine still models the two legs as linked orders (`oco_with`), each with its own client
//! order id; both also carry the list's id ([`Order::venue_list`]), derived from the first leg's,
//! so a retry or a query after a lost answer names the same list. Nothing about a leg is armed
//! here: the venue triggers the stop, expires the other leg when one fills, and reports both,
//! which the engine applies like any other order's answers (a fill of one leg cancels its
//! partner, which the venue has already expired: the cancel finds it closed).

use rust_decimal::Decimal;

use super::{BotEngine, BotEventKind, Effects, Outbound, client_order_id};
use crate::bot::BotId;
use crate::trading::{Order, OrderOrigin, OrderRequest, OrderStatus, Side};

/// The client id of the order list whose first leg (the take-profit) is order `first_leg`:
/// `keel-{bot}-{order:06}-oco`, within the venue's 36-character `[.A-Za-z0-9:/_-]` rule.
pub fn list_client_order_id(bot_id: BotId, first_leg: u64) -> String {
    format!("{}-oco", client_order_id(bot_id, first_leg))
}

/// The client ids of the two legs of the list `list_client_order_id`, take-profit first: a
/// venue without a list of its own (Bybit's conditional orders) finds the legs by them. The
/// take-profit is the list's first order and the stop-loss the next one
/// ([`BotEngine::place_native_bracket`] places them one after the other). `None` for an id
/// this module did not make.
pub fn list_leg_ids(list_client_order_id: &str) -> Option<(String, String)> {
    let first = list_client_order_id.strip_suffix("-oco")?;
    let (prefix, number) = first.rsplit_once('-')?;
    let order: u64 = number.parse().ok()?;
    let bot: BotId = prefix.strip_prefix("keel-")?.parse().ok()?;
    (client_order_id(bot, order) == first)
        .then(|| (first.to_owned(), client_order_id(bot, order + 1)))
}

impl BotEngine {
    /// Records both legs (`new`, linked) and asks for them as one order list.
    pub(super) fn place_native_bracket(
        &mut self,
        tp_req: OrderRequest,
        sl_req: OrderRequest,
        fx: &mut Effects,
    ) {
        self.pending_list =
            Some(list_client_order_id(self.config.bot_id, self.state.last_order_id + 1));
        let take_profit = self.place(tp_req, OrderOrigin::TakeProfit, fx);
        let stop_loss = self.place(sl_req, OrderOrigin::StopLoss, fx);
        self.pending_list = None;
        // Bracket legs are exempt from the risk checks, so both are recorded open.
        let (Ok(take_profit), Ok(stop_loss)) = (take_profit, stop_loss) else { return };
        self.link_oco(take_profit.id, stop_loss.id, fx);
        let leg = |engine: &Self, id: u64| -> Option<Order> {
            engine.open.iter().find(|o| o.id == id).cloned()
        };
        if let (Some(take_profit), Some(stop_loss)) =
            (leg(self, take_profit.id), leg(self, stop_loss.id))
        {
            let (take_profit, stop_loss) = (Box::new(take_profit), Box::new(stop_loss));
            fx.outbound.push(Outbound::PlaceList { take_profit, stop_loss });
        }
    }

    /// A leg of a native list ended refused or never received. Once its partner has ended too
    /// with nothing executed (the whole list was refused), the position would be unprotected:
    /// the same exits are placed again as an emulated bracket (the take-profit at the venue, the
    /// stop-loss armed here), for what the position still holds, and the journal says that the
    /// stop now only works while Keel runs.
    pub(super) fn native_list_refused(&mut self, order_id: u64, fx: &mut Effects) {
        let latest = |id: u64| fx.orders.iter().rev().find(|o| o.id == id).cloned();
        let Some(leg) = latest(order_id) else { return };
        let Some(partner_id) = leg.oco_with else { return };
        if leg.status.is_open() || self.open.iter().any(|o| o.id == partner_id) {
            // Still open, or the partner's answer is still to come.
            return;
        }
        let Some(partner) = latest(partner_id) else { return };
        if !(leg.filled_qty.is_zero() && partner.filled_qty.is_zero()) {
            return;
        }
        let (tp, sl) = match leg.origin {
            OrderOrigin::TakeProfit => (leg, partner),
            _ => (partner, leg),
        };
        let pos = self.state.position.qty;
        let holds = !pos.is_zero()
            && pos.is_sign_positive() == (tp.side.opposite() == crate::trading::Side::Buy);
        let free = pos.abs() - self.committed_to_exits(tp.side);
        let qty = self.config.filters.floor_qty(tp.qty.min(free));
        let now = self.now();
        let list = tp.venue_list.clone().unwrap_or_default();
        if !holds || qty <= Decimal::ZERO {
            return;
        }
        let message = format!(
            "the venue refused order list {list} ({}); the bracket is emulated instead: the \
             take-profit rests at the venue, the stop-loss is held by Keel and does not protect \
             the position while Keel is down",
            tp.reason.as_deref().unwrap_or("no reason given")
        );
        self.log(now, BotEventKind::Log { level: "warn".into(), message }, fx);
        let request = |order: &Order| OrderRequest {
            side: order.side,
            qty,
            order_type: order.order_type,
            tag: order.tag,
        };
        let native = std::mem::replace(&mut self.native_brackets, false);
        let placed_tp = self.place(request(&tp), OrderOrigin::TakeProfit, fx);
        let placed_sl = match &placed_tp {
            Ok(order) if !order.status.is_final() => {
                Some(self.place(request(&sl), OrderOrigin::StopLoss, fx))
            }
            _ => None,
        };
        self.native_brackets = native;
        if let (Ok(tp), Some(Ok(sl))) = (placed_tp, placed_sl)
            && sl.status.is_open()
        {
            self.link_oco(tp.id, sl.id, fx);
        }
    }
    /// A leg of a native list ended (`order_id`, which Keel did not ask to cancel): when nothing
    /// of it executed and its partner is still open, it is remembered, and looked at again by
    /// [`protect_half_lists`](Self::protect_half_lists) once the partner's own answer, which
    /// often comes in the same batch (a list's look-up reports both legs), is in too.
    pub(super) fn native_leg_ended(&mut self, order_id: u64, fx: &Effects) {
        if self.open.iter().any(|o| o.id == order_id) {
            return;
        }
        let Some(leg) = fx.orders.iter().rev().find(|o| o.id == order_id) else { return };
        let partner_open = leg.oco_with.is_some_and(|p| self.open.iter().any(|o| o.id == p));
        if leg.filled_qty.is_zero() && partner_open {
            self.half_lists.push(leg.clone());
        }
    }

    /// Half a bracket: a leg of a native list ended with nothing executed (refused, never
    /// received, expired) while its partner rests at the venue and the position still holds.
    /// When the take-profit is what is left the position has no stop at all, so the missing leg
    /// is placed again the emulated way (a stop-loss armed here, a take-profit as a plain limit
    /// at the venue), linked to the leg still working, and the journal says so. Run before
    /// armed stops are checked on a market event, so such a stop works from that event on.
    /// A leg whose partner's answer is still to come waits; one whose partner has ended too
    /// (filled: the venue expired this leg; or refused with it) is dropped.
    pub(super) fn protect_half_lists(&mut self, fx: &mut Effects) {
        if self.half_lists.is_empty() {
            return;
        }
        for ended in std::mem::take(&mut self.half_lists) {
            let Some(working) = ended
                .oco_with
                .and_then(|id| {
                    self.open.iter().find(|o| o.id == id && o.oco_with == Some(ended.id))
                })
                .cloned()
            else {
                continue;
            };
            if matches!(working.status, OrderStatus::New | OrderStatus::Unknown) {
                self.half_lists.push(ended);
                continue;
            }
            if !self.cancel_pending.contains(&working.id) {
                self.replace_missing_leg(&ended, &working, fx);
            }
        }
    }

    fn replace_missing_leg(&mut self, ended: &Order, working: &Order, fx: &mut Effects) {
        let pos = self.state.position.qty;
        let holds = !pos.is_zero() && pos.is_sign_positive() == (ended.side == Side::Sell);
        // The new leg pairs with the one still working: only the rest of the position limits it.
        let free = pos.abs() - self.committed_to_exits(ended.side) + working.remaining();
        let qty = self.config.filters.floor_qty(working.remaining().min(free));
        if !holds || qty <= Decimal::ZERO {
            return;
        }
        let now = self.now();
        let list = ended.venue_list.clone().unwrap_or_default();
        let why = ended.reason.as_deref().unwrap_or("no reason given");
        let message = match ended.origin {
            OrderOrigin::StopLoss => format!(
                "the stop-loss {} of order list {list} is not at the venue ({why}) while its \
                 take-profit {} rests there: the stop is now held by Keel and does not protect \
                 the position while Keel is down",
                ended.id, working.id
            ),
            _ => format!(
                "the take-profit {} of order list {list} is not at the venue ({why}) while its \
                 stop-loss {} rests there: the take-profit is placed again as a plain limit",
                ended.id, working.id
            ),
        };
        self.log(now, BotEventKind::Log { level: "warn".into(), message }, fx);
        let request =
            OrderRequest { side: ended.side, qty, order_type: ended.order_type, tag: ended.tag };
        if let Ok(placed) = self.place(request, ended.origin, fx)
            && placed.status.is_open()
        {
            self.link_oco(working.id, placed.id, fx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lists_legs_are_its_first_order_and_the_next() {
        let list = list_client_order_id(42, 18);
        assert_eq!(list, "keel-42-000018-oco");
        let legs = list_leg_ids(&list).unwrap();
        assert_eq!(legs, ("keel-42-000018".to_owned(), "keel-42-000019".to_owned()));
        let wide = list_leg_ids(&list_client_order_id(7, 1_234_567)).unwrap();
        assert_eq!(wide.1, "keel-7-1234568");
        for other in ["keel-42-000018", "keel-42-18-oco", "spot-test-01-oco", "keel-x-000001-oco"] {
            assert_eq!(list_leg_ids(other), None, "{other}");
        }
    }
}
