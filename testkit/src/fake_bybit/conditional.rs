//! The fake's conditional orders (linear), as Bybit documents them: a create with
//! `triggerPrice` rests `Untriggered` (`stopOrderType` `Stop`) and holds no margin;
//! `triggerDirection` `1` must be above the last price and `2` below (`110092`, `110093`
//! otherwise). When the last price reaches the trigger the order fires: `Triggered`, then `New`
//! as the order it carries (a market order fills at once, a limit fills when the price is at
//! or through it). A reduce-only order that fires with nothing left to reduce is cancelled
//! (`cancelType` `CancelByReduceOnly`), and one larger than the position is cut to it. Every
//! step is pushed on the private stream's `order` topic; the fill pushes as any fill does.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::http::{Answer, refuse};
use super::orders::{dec_of, fill_order};
use super::{Book, State, now_ms};

/// The trigger of a create's body (`None` for a plain order), or Bybit's refusal.
pub(super) fn check(
    body: &Value,
    category: &str,
    last: Decimal,
) -> Result<Option<Decimal>, Answer> {
    let Some(trigger) = body["triggerPrice"].as_str().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if category != "linear" {
        return Err(refuse(10001, "params error: the fake's conditional orders are linear only"));
    }
    let Ok(trigger) = trigger.parse::<Decimal>() else {
        return Err(refuse(10001, "params error: triggerPrice"));
    };
    match body["triggerDirection"].as_u64() {
        Some(1) if trigger <= last => Err(refuse(
            110_092,
            &format!("expect Rising, but trigger_price[{trigger}] <= current[{last}]??LastPrice"),
        )),
        Some(2) if trigger >= last => Err(refuse(
            110_093,
            &format!("expect Falling, but trigger_price[{trigger}] >= current[{last}]??LastPrice"),
        )),
        Some(1 | 2) => Ok(Some(trigger)),
        _ => Err(refuse(10001, "params error: triggerDirection is 1 or 2")),
    }
}

/// Fires every `Untriggered` order whose trigger `price` has reached, oldest first.
pub(super) fn fire_crossed(state: &State, book: &mut Book, price: Decimal) {
    let due: Vec<String> = book
        .created
        .iter()
        .filter(|id| book.orders.get(*id).is_some_and(|o| reached(o, price)))
        .cloned()
        .collect();
    for link in due {
        fire(state, book, &link, price);
    }
}

fn reached(order: &Value, price: Decimal) -> bool {
    if order["orderStatus"] != "Untriggered" {
        return false;
    }
    let trigger = dec_of(&order["triggerPrice"]);
    match order["triggerDirection"].as_u64() {
        Some(1) => price >= trigger,
        Some(2) => price <= trigger,
        _ => false,
    }
}

fn fire(state: &State, book: &mut Book, link: &str, price: Decimal) {
    let Some(order) = book.orders.get(link) else { return };
    let symbol = order["symbol"].as_str().unwrap_or_default().to_owned();
    let buy = order["side"] == "Buy";
    let reduce_only = order["reduceOnly"].as_bool().unwrap_or(false);
    let (held, _) = book.positions.get(&symbol).copied().unwrap_or_default();
    // What a reduce-only order may still take out of the position.
    let room = match (buy, held > Decimal::ZERO) {
        (true, false) => -held,
        (false, true) => held,
        _ => Decimal::ZERO,
    };
    let Some(order) = book.orders.get_mut(link) else { return };
    let step = |order: &mut Value, status: &str| {
        order["orderStatus"] = json!(status);
        order["updatedTime"] = json!(now_ms().to_string());
        state.private.publish("order", json!([order.clone()]));
    };
    step(order, "Triggered");
    if reduce_only && room <= Decimal::ZERO {
        order["cancelType"] = json!("CancelByReduceOnly");
        step(order, "Cancelled");
        return;
    }
    let mut qty = dec_of(&order["qty"]);
    if reduce_only && qty > room {
        qty = room;
        order["qty"] = json!(qty.normalize().to_string());
        order["leavesQty"] = json!(qty.normalize().to_string());
    }
    step(order, "New");
    let fill_at = match order["orderType"].as_str() {
        Some("Market") => Some(price),
        _ => {
            let limit = dec_of(&order["price"]);
            let marketable = if buy { price <= limit } else { price >= limit };
            marketable.then_some(limit)
        }
    };
    if let Some(at) = fill_at {
        fill_order(state, book, link, qty, at);
    }
}
