//! The fake's orders: create (with Bybit's checks), cancel, and fills with what they push on
//! the private stream.

use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::account::position_json;
use super::conditional;
use super::http::{Answer, Request, ok, refuse};
use super::{Book, LINEAR_FEE_RATE, SPOT_FEE_RATE, State, now_ms};

pub(super) fn execute(order: &mut Value, qty: Decimal, price: Decimal) {
    let dec = |v: &Value| v.as_str().unwrap_or("0").parse::<Decimal>().unwrap_or_default();
    let total = dec(&order["qty"]);
    let done = dec(&order["cumExecQty"]);
    let qty = qty.min(total - done);
    let value = dec(&order["cumExecValue"]) + qty * price;
    let done = done + qty;
    order["cumExecQty"] = json!(done.normalize().to_string());
    order["cumExecValue"] = json!(value.normalize().to_string());
    order["leavesQty"] = json!((total - done).normalize().to_string());
    order["orderStatus"] = json!(if done >= total { "Filled" } else { "PartiallyFilled" });
}

/// Fills `qty` of order `link` at `price`: the order's figures, the linear position, and the
/// private stream's `execution`, `order` and `position` pushes.
pub(super) fn fill_order(state: &State, book: &mut Book, link: &str, qty: Decimal, price: Decimal) {
    let Some(order) = book.orders.get_mut(link) else { return };
    let before = dec_of(&order["cumExecQty"]);
    execute(order, qty, price);
    let qty = dec_of(&order["cumExecQty"]) - before;
    if qty.is_zero() {
        return;
    }
    let category = order["category"].as_str().unwrap_or("spot").to_owned();
    let symbol = order["symbol"].as_str().unwrap_or_default().to_owned();
    let side = order["side"].as_str().unwrap_or_default().to_owned();
    let value = qty * price;
    let (fee, fee_currency) = if category == "spot" {
        let rate: Decimal = SPOT_FEE_RATE.parse().unwrap();
        if side == "Buy" {
            (qty * rate, symbol.trim_end_matches("USDT").to_owned())
        } else {
            (value * rate, "USDT".to_owned())
        }
    } else {
        (value * LINEAR_FEE_RATE.parse::<Decimal>().unwrap(), String::new())
    };
    order["cumExecFee"] = json!((dec_of(&order["cumExecFee"]) + fee).normalize().to_string());
    order["updatedTime"] = json!(now_ms().to_string());
    let order = order.clone();
    book.executions += 1;
    let exec = json!({"category": category, "symbol": symbol, "execFee": fee.normalize().to_string(),
        "execId": format!("e0f4{:04x}-4edf-5800-a352-{:012x}", book.executions, book.executions),
        "execPrice": price.normalize().to_string(), "execQty": qty.normalize().to_string(),
        "execType": "Trade", "execValue": value.normalize().to_string(), "isMaker": false,
        "feeRate": if category == "spot" { SPOT_FEE_RATE } else { LINEAR_FEE_RATE },
        "leavesQty": order["leavesQty"].clone(), "orderId": order["orderId"].clone(),
        "orderLinkId": link, "orderPrice": order["price"].clone(), "orderQty": order["qty"].clone(),
        "orderType": order["orderType"].clone(), "side": side, "execTime": now_ms().to_string(),
        "isLeverage": "0", "closedSize": "", "seq": book.executions, "feeCurrency": fee_currency});
    book.trades.push(exec.clone());
    state.private.publish("execution", json!([exec]));
    state.private.publish("order", json!([order]));
    if category == "linear" {
        let (held, entry) = book.positions.get(&symbol).copied().unwrap_or_default();
        let signed = if side == "Buy" { qty } else { -qty };
        let now = held + signed;
        let entry = if now.is_zero() {
            Decimal::ZERO
        } else if held.is_zero() || (held > Decimal::ZERO) != (now > Decimal::ZERO) {
            price
        } else if (held > Decimal::ZERO) == (signed > Decimal::ZERO) {
            (held * entry + signed * price) / now
        } else {
            entry
        };
        book.positions.insert(symbol.clone(), (now, entry));
        let position = position_json(book, &symbol, now, entry, price);
        state.private.publish("position", json!([position]));
    }
}

pub(super) fn dec_of(v: &Value) -> Decimal {
    v.as_str().unwrap_or("0").parse().unwrap_or_default()
}

pub(super) fn create(request: &Request, state: &State) -> Answer {
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return refuse(10001, "params error: body is not JSON");
    };
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let link = text("orderLinkId");
    let order_type = text("orderType");
    if text("category") == "spot"
        && order_type == "Market"
        && text("side") == "Buy"
        && text("marketUnit") != "baseCoin"
    {
        // Bybit reads a spot market buy's qty in the quote coin unless told otherwise; the
        // fake refuses it rather than guess, so a client that forgets is caught.
        return refuse(170_137, "Order quantity has too many decimals (qty in quote coin)");
    }
    let mut book = state.book.lock().unwrap();
    let category = text("category");
    if book.orders.contains_key(&link) {
        return match category.as_str() {
            "spot" => refuse(170_141, "Duplicate clientOrderId"),
            _ => refuse(110_072, "OrderLinkedID is duplicate"),
        };
    }
    let reduce_only = body["reduceOnly"].as_bool().unwrap_or(false);
    let qty = text("qty").parse::<Decimal>().unwrap_or_default();
    if reduce_only {
        if category == "spot" {
            return refuse(170_130, "reduceOnly is not supported on spot");
        }
        let (held, _) = book.positions.get(&text("symbol")).copied().unwrap_or_default();
        let reduces = match text("side").as_str() {
            "Buy" => held < Decimal::ZERO && qty <= -held,
            _ => held > Decimal::ZERO && qty <= held,
        };
        if !reduces {
            return refuse(110_017, "Reduce-only rule not satisfied");
        }
    }
    let price = *state.price.lock().unwrap();
    let trigger = match conditional::check(&body, &category, price) {
        Ok(trigger) => trigger,
        Err(refusal) => return refusal,
    };
    let order_id = format!("{}", 1_321_003_749_386_327_552u64 + book.orders.len() as u64);
    let order = json!({
        "category": category, "orderId": order_id, "orderLinkId": link, "symbol": text("symbol"),
        "side": text("side"), "orderType": order_type,
        "price": body["price"].as_str().unwrap_or("0"), "qty": text("qty"),
        "orderStatus": if trigger.is_some() { "Untriggered" } else { "New" }, "cumExecQty": "0", "cumExecValue": "0", "cumExecFee": "0",
        "leavesQty": text("qty"), "reduceOnly": reduce_only,
        "timeInForce": body["timeInForce"].as_str().unwrap_or("IOC"),
        "createdTime": now_ms().to_string(), "updatedTime": now_ms().to_string(),
        "stopOrderType": if trigger.is_some() { "Stop" } else { "" },
        "triggerPrice": trigger.map(|t| t.normalize().to_string()).unwrap_or_default(),
        "triggerDirection": body["triggerDirection"].as_u64().unwrap_or(0),
        "triggerBy": body["triggerBy"].as_str().unwrap_or(if trigger.is_some() { "LastPrice" } else { "" }),
        "closeOnTrigger": body["closeOnTrigger"].as_bool().unwrap_or(false),
    });
    book.orders.insert(link.clone(), order.clone());
    book.created.push(link.clone());
    state.creates.fetch_add(1, Ordering::Relaxed);
    state.private.publish("order", json!([order]));
    if order_type == "Market" && trigger.is_none() {
        fill_order(state, &mut book, &link, qty, price);
    }
    ok(json!({"orderId": order_id, "orderLinkId": link}))
}

pub(super) fn cancel(request: &Request, state: &State) -> Answer {
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return refuse(10001, "params error: body is not JSON");
    };
    let link = body["orderLinkId"].as_str().unwrap_or_default();
    let mut book = state.book.lock().unwrap();
    let Some(order) = book.orders.get_mut(link) else {
        return refuse(170_213, "Order does not exist.");
    };
    let status = order["orderStatus"].as_str().unwrap_or_default().to_owned();
    if !matches!(status.as_str(), "New" | "PartiallyFilled" | "Untriggered") {
        return refuse(170_213, "Order does not exist.");
    }
    // A conditional order cancelled before it fired is `Deactivated` on a unified account.
    order["orderStatus"] = json!(match status.as_str() {
        "PartiallyFilled" => "PartiallyFilledCanceled",
        "Untriggered" => "Deactivated",
        _ => "Cancelled",
    });
    order["updatedTime"] = json!(now_ms().to_string());
    let pushed = order.clone();
    state.private.publish("order", json!([pushed]));
    ok(json!({"orderId": order["orderId"].clone(), "orderLinkId": link}))
}
