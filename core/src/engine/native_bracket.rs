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

use super::{BotEngine, Effects, Outbound, client_order_id};
use crate::bot::BotId;
use crate::trading::{Order, OrderOrigin, OrderRequest};

/// The client id of the order list whose first leg (the take-profit) is order `first_leg`:
/// `keel-{bot}-{order:06}-oco`, within the venue's 36-character `[.A-Za-z0-9:/_-]` rule.
pub fn list_client_order_id(bot_id: BotId, first_leg: u64) -> String {
    format!("{}-oco", client_order_id(bot_id, first_leg))
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
}
