//! The fake's Algo Order API: conditional orders (`STOP_MARKET`, `TAKE_PROFIT_MARKET`) held
//! until the price crosses their trigger, then sent to the book as market orders.
//!
//! As Binance documents them (USD-M futures, "New Algo Order", "Cancel Algo Order", "Query Algo
//! Order", "Event: Algo Order Update"):
//! - `POST /fapi/v1/algoOrder`: `algoType=CONDITIONAL`, `symbol`, `side`, `type`,
//!   `triggerPrice`, and `quantity` unless `closePosition=true` (which takes neither `quantity`
//!   nor `reduceOnly`); `reduceOnly` cannot be sent in hedge mode; `workingType` `MARK_PRICE` or
//!   `CONTRACT_PRICE` (default); `clientAlgoId` unique among open conditional orders (`-4116`, as
//!   for plain orders). A trigger already crossed is `-2021 Order would immediately trigger.`;
//!   a reduce-only order on the side that would grow the position is `-2022`.
//! - `GET` / `DELETE /fapi/v1/algoOrder` by `algoId` or `clientAlgoId`: an unknown one is
//!   `-2013` (query) / `-2011` (cancel, also for one no longer `NEW`); a cancel answers
//!   `{algoId, clientAlgoId, code: "200", msg: "success"}`.
//! - When the price (the fake's one price is both its last and its mark price) crosses a
//!   trigger: `ALGO_UPDATE` `TRIGGERED` (with the actual order's id `ai`), the market order's own
//!   `ORDER_TRADE_UPDATE`s and `ACCOUNT_UPDATE`, then `ALGO_UPDATE` `FINISHED` (`aq`, `ap`). A
//!   reduce-only order that can no longer reduce is `REJECTED` (`rm` "Reduce Only reject").
//!
//! The documentation does not say which `clientOrderId` the triggered order carries; the fake
//! gives it its own (`algo-<algoId>`), so nothing may rely on it. Only `STOP_MARKET` and
//! `TAKE_PROFIT_MARKET` are served (Keel sends no other); the rest are `-1116`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::book::{Book, State, StoredOrder, execute, order_event};
use super::http::{Answer, error, ok};
use super::{lock, now_ms, s};

/// A conditional order the fake holds.
#[derive(Debug, Clone)]
pub(super) struct StoredAlgo {
    algo_id: u64,
    client_algo_id: String,
    symbol: String,
    side: String,
    order_type: String,
    qty: Decimal,
    trigger: Decimal,
    working_type: String,
    reduce_only: bool,
    close_position: bool,
    price_protect: bool,
    status: String,
    actual: Option<(u64, String)>,
    actual_qty: Decimal,
    actual_price: Decimal,
    reject_reason: String,
    create_time: i64,
    update_time: i64,
    trigger_time: i64,
}

impl StoredAlgo {
    /// As `GET /fapi/v1/algoOrder` (and the place's answer) shows it.
    pub(super) fn json(&self) -> Value {
        let (actual_id, actual_type) = match &self.actual {
            Some((id, _)) => (id.to_string(), "MARKET"),
            None => (String::new(), ""),
        };
        json!({
            "algoId": self.algo_id, "clientAlgoId": self.client_algo_id,
            "algoType": "CONDITIONAL", "orderType": self.order_type, "symbol": self.symbol,
            "side": self.side, "positionSide": "BOTH", "timeInForce": "GTC",
            "quantity": s(self.qty), "algoStatus": self.status,
            "actualOrderId": actual_id, "actualPrice": s(self.actual_price),
            "actualQty": s(self.actual_qty), "actualType": actual_type,
            "triggerPrice": s(self.trigger), "price": "0", "icebergQuantity": null,
            "tpTriggerPrice": "0", "tpPrice": "0", "slTriggerPrice": "0", "slPrice": "0",
            "tpOrderType": "", "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": self.working_type, "priceMatch": "NONE",
            "closePosition": self.close_position, "priceProtect": self.price_protect,
            "reduceOnly": self.reduce_only, "createTime": self.create_time,
            "updateTime": self.update_time, "triggerTime": self.trigger_time, "goodTillDate": 0
        })
    }

    /// `ALGO_UPDATE` for its current state.
    fn event(&self) -> Value {
        let actual = self.actual.as_ref().map_or(String::new(), |(id, _)| id.to_string());
        json!({"e": "ALGO_UPDATE", "T": self.update_time, "E": self.update_time, "o": {
            "caid": self.client_algo_id, "aid": self.algo_id, "at": "CONDITIONAL",
            "o": self.order_type, "s": self.symbol, "S": self.side, "ps": "BOTH", "f": "GTC",
            "q": s(self.qty), "X": self.status, "ai": actual, "ap": s(self.actual_price),
            "aq": s(self.actual_qty), "act": if self.actual.is_some() { "MARKET" } else { "0" },
            "tp": s(self.trigger), "p": "0", "V": "EXPIRE_MAKER", "wt": self.working_type,
            "pm": "NONE", "cp": self.close_position, "pP": self.price_protect,
            "R": self.reduce_only, "tt": self.trigger_time, "gtd": 0, "rm": self.reject_reason
        }})
    }

    /// Whether `price` reaches its trigger: a take-profit above the market for a sell (below for
    /// a buy), a stop the other way round.
    fn crossed_by(&self, price: Decimal) -> bool {
        let sell = self.side == "SELL";
        match self.order_type.as_str() {
            "TAKE_PROFIT_MARKET" if sell => price >= self.trigger,
            "TAKE_PROFIT_MARKET" => price <= self.trigger,
            _ if sell => price <= self.trigger,
            _ => price >= self.trigger,
        }
    }
}

fn missing(name: &str) -> Answer {
    error(
        400,
        -1102,
        &format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

fn flag(params: &HashMap<String, String>, key: &str) -> Option<bool> {
    params.get(key).map(|v| v.eq_ignore_ascii_case("true"))
}

/// `POST /fapi/v1/algoOrder`.
pub(super) fn new_algo_order(state: &State, params: &HashMap<String, String>) -> Answer {
    if params.get("algoType").map(String::as_str) != Some("CONDITIONAL") {
        return missing("algoType");
    }
    let symbol = match params.get("symbol").map(String::as_str) {
        Some(symbol @ ("BTCUSDT" | "ETHUSDT")) => symbol.to_owned(),
        _ => return error(400, -1121, "Invalid symbol."),
    };
    let side = match params.get("side").map(String::as_str) {
        Some(side @ ("BUY" | "SELL")) => side.to_owned(),
        _ => return missing("side"),
    };
    let order_type = match params.get("type").map(String::as_str) {
        Some(t @ ("STOP_MARKET" | "TAKE_PROFIT_MARKET")) => t.to_owned(),
        _ => return error(400, -1116, "Invalid orderType."),
    };
    let Some(trigger) = params.get("triggerPrice").and_then(|p| p.parse::<Decimal>().ok()) else {
        return missing("triggerPrice");
    };
    let working_type = match params.get("workingType").map(String::as_str) {
        None => "CONTRACT_PRICE".to_owned(),
        Some(w @ ("MARK_PRICE" | "CONTRACT_PRICE")) => w.to_owned(),
        Some(_) => return error(400, -1115, "Invalid workingType."),
    };
    let close_position = flag(params, "closePosition").unwrap_or(false);
    let reduce_only = flag(params, "reduceOnly");
    let qty = params.get("quantity").and_then(|q| q.parse::<Decimal>().ok());
    if close_position && params.contains_key("quantity") {
        return error(400, -1106, "Parameter 'quantity' sent when not required.");
    }
    if close_position && reduce_only.is_some() {
        return error(400, -1106, "Parameter 'reduceOnly' sent when not required.");
    }
    let qty = match qty {
        Some(qty) if qty > Decimal::ZERO => qty,
        _ if close_position => Decimal::ZERO,
        _ => return missing("quantity"),
    };
    let Some(client_algo_id) = params.get("clientAlgoId").cloned() else {
        return missing("clientAlgoId (the fake wants one)");
    };
    let price = *lock(&state.price);
    let mut book = lock(&state.book);
    if reduce_only.is_some() && book.dual_side {
        return error(400, -1106, "Parameter 'reduceOnly' sent when not required.");
    }
    if book.algos.get(&client_algo_id).is_some_and(|a| a.status == "NEW") {
        return error(400, -4116, "ClientOrderId is duplicated.");
    }
    let reduce_only = reduce_only.unwrap_or(false);
    if reduce_only {
        let amt = book.positions.get(&symbol).map(|p| p.amt).unwrap_or_default();
        let grows = if side == "BUY" { amt >= Decimal::ZERO } else { amt <= Decimal::ZERO };
        if grows {
            return error(400, -2022, "ReduceOnly Order is rejected.");
        }
    }
    book.next_id += 1;
    let now = now_ms();
    let algo = StoredAlgo {
        algo_id: book.next_id,
        client_algo_id: client_algo_id.clone(),
        symbol,
        side,
        order_type,
        qty,
        trigger,
        working_type,
        reduce_only,
        close_position,
        price_protect: flag(params, "priceProtect").unwrap_or(false),
        status: "NEW".into(),
        actual: None,
        actual_qty: Decimal::ZERO,
        actual_price: Decimal::ZERO,
        reject_reason: String::new(),
        create_time: now,
        update_time: now,
        trigger_time: 0,
    };
    if algo.crossed_by(price) {
        return error(400, -2021, "Order would immediately trigger.");
    }
    state.creates.fetch_add(1, Ordering::Relaxed);
    book.outbox.push(algo.event());
    let answer = algo.json();
    book.algos.insert(client_algo_id, algo);
    ok(answer)
}

/// `GET` / `DELETE /fapi/v1/algoOrder` by `algoId` or `clientAlgoId`.
pub(super) fn get_or_cancel(
    method: &str,
    book: &mut Book,
    params: &HashMap<String, String>,
) -> Answer {
    let by_algo_id = params.get("algoId").and_then(|id| {
        book.algos.values().find(|a| a.algo_id.to_string() == *id).map(|a| a.client_algo_id.clone())
    });
    let Some(id) = params.get("clientAlgoId").cloned().or(by_algo_id) else {
        return if params.contains_key("algoId") {
            not_found(method)
        } else {
            error(
                400,
                -1102,
                "Param 'algoId' or 'clientAlgoId' must be sent, but both were empty/null!",
            )
        };
    };
    let Some(algo) = book.algos.get_mut(&id) else { return not_found(method) };
    if method == "GET" {
        return ok(algo.json());
    }
    if algo.status != "NEW" {
        return error(400, -2011, "Unknown order sent.");
    }
    algo.status = "CANCELED".into();
    algo.update_time = now_ms();
    let (event, algo_id) = (algo.event(), algo.algo_id);
    book.outbox.push(event);
    ok(json!({"algoId": algo_id, "clientAlgoId": id, "code": "200", "msg": "success"}))
}

fn not_found(method: &str) -> Answer {
    if method == "GET" {
        error(400, -2013, "Order does not exist.")
    } else {
        error(400, -2011, "Unknown order sent.")
    }
}

/// Triggers every open conditional order that `price` crosses.
pub(super) fn trigger_crossed(state: &State, price: Decimal) {
    let mut book = lock(&state.book);
    let mut crossed: Vec<(i64, String)> = book
        .algos
        .values()
        .filter(|a| a.status == "NEW" && a.crossed_by(price))
        .map(|a| (a.create_time, a.client_algo_id.clone()))
        .collect();
    crossed.sort();
    for (_, id) in crossed {
        trigger(&mut book, &id, price);
    }
}

/// One conditional order triggers: the market order it becomes executes at `price`, unless it
/// could no longer only reduce the position.
fn trigger(book: &mut Book, client_algo_id: &str, price: Decimal) {
    let Some(algo) = book.algos.get(client_algo_id).cloned() else { return };
    let now = now_ms();
    let amt = book.positions.get(&algo.symbol).map(|p| p.amt).unwrap_or_default();
    let reduces = if algo.side == "BUY" { amt < Decimal::ZERO } else { amt > Decimal::ZERO };
    let qty = if algo.close_position { amt.abs() } else { algo.qty };
    let mut algo = algo;
    algo.update_time = now;
    algo.trigger_time = now;
    if (algo.reduce_only || algo.close_position) && (!reduces || qty > amt.abs()) {
        algo.status = "REJECTED".into();
        algo.reject_reason = "Reduce Only reject".into();
        book.outbox.push(algo.event());
        book.algos.insert(client_algo_id.to_owned(), algo);
        return;
    }
    book.next_id += 1;
    let order_id = book.next_id;
    let actual_id = format!("algo-{}", algo.algo_id);
    algo.status = "TRIGGERED".into();
    algo.actual = Some((order_id, actual_id.clone()));
    book.outbox.push(algo.event());
    let order = StoredOrder {
        order_id,
        symbol: algo.symbol.clone(),
        side: algo.side.clone(),
        order_type: "MARKET".into(),
        tif: "GTC".into(),
        qty,
        price: Decimal::ZERO,
        executed: Decimal::ZERO,
        cum_quote: Decimal::ZERO,
        status: "NEW".into(),
        reduce_only: true,
        time: now,
        update_time: now,
    };
    book.outbox.push(order_event(&order, &actual_id, "NEW", None, Decimal::ZERO));
    book.orders.insert(actual_id.clone(), order);
    execute(book, &actual_id, qty, price);
    let executed = book.orders.get(&actual_id).map(|o| (o.executed, o.cum_quote));
    let (executed, cum_quote) = executed.unwrap_or_default();
    algo.status = "FINISHED".into();
    algo.actual_qty = executed;
    algo.actual_price =
        if executed.is_zero() { Decimal::ZERO } else { (cum_quote / executed).round_dp(8) };
    algo.update_time = now_ms();
    book.outbox.push(algo.event());
    book.algos.insert(client_algo_id.to_owned(), algo);
}
