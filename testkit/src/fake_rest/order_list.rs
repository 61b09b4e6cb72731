//! The fake's OCO order lists, in the answer shapes of Binance's spot REST API
//! (`testkit/fixtures/binance/order_list_spot.jsonl`):
//!
//! - `POST /api/v3/orderList/oco`: `symbol`, `side`, `quantity`, `aboveType` and `belowType`
//!   (one `LIMIT_MAKER`, one `STOP_LOSS` or `STOP_LOSS_LIMIT`) with their prices, and the
//!   optional `listClientOrderId`, `aboveClientOrderId`, `belowClientOrderId`. Prices must be
//!   on the documented sides of the fake's price (a sell: limit above, stop below; a buy the
//!   other way round), else `-2010`. Both legs become orders of the book (`NEW`), queried,
//!   filled and traded like any other; an execution of one expires the other (`EXPIRED`) and
//!   ends the list (`ALL_DONE`).
//! - `DELETE /api/v3/orderList` by `listClientOrderId` or `orderListId`: cancels both legs;
//!   `-2011 Unknown order list sent.` when the list is not executing.
//! - `GET /api/v3/orderList` by `origClientOrderId` or `orderListId`: the list without
//!   `orderReports`; `-2013 Order list does not exist.` when unknown.
//!
//! Faults: [`super::FakeRest::fail_lists_next`] for placements, `fail_list_cancels_next` for
//! cancels, `fail_queries_next` for lookups.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::book::{Book, StoredOrder, decimal_param, faulted, trading_symbol_and_side};
use super::exchange_info::FILTERS;
use super::http::{Answer, Reply};
use super::{State, lock};

/// One order list.
#[derive(Debug, Clone)]
pub(super) struct StoredList {
    order_list_id: i64,
    list_client_order_id: String,
    symbol: String,
    /// The legs' client order ids: the stop leg first, as Binance lists them.
    legs: [String; 2],
    transaction_time: i64,
}

impl StoredList {
    /// Whether any leg is still open.
    fn executing(&self, book: &Book) -> bool {
        self.legs.iter().any(|id| book.orders.get(id).is_some_and(StoredOrder::is_open))
    }

    /// The list in the `GET /api/v3/orderList` shape.
    pub(super) fn json(&self, book: &Book) -> Value {
        let executing = self.executing(book);
        json!({
            "orderListId": self.order_list_id,
            "contingencyType": "OCO",
            "listStatusType": if executing { "EXEC_STARTED" } else { "ALL_DONE" },
            "listOrderStatus": if executing { "EXECUTING" } else { "ALL_DONE" },
            "listClientOrderId": self.list_client_order_id,
            "transactionTime": self.transaction_time,
            "symbol": self.symbol,
            "orders": self.legs.iter().filter_map(|id| book.orders.get(id)).map(|o| json!({
                "symbol": o.symbol,
                "orderId": o.order_id,
                "clientOrderId": o.client_order_id,
            })).collect::<Vec<_>>(),
        })
    }
}

impl Book {
    /// After an execution of `client_order_id`: the other leg of its list, if open, expires.
    pub(super) fn expire_partner(&mut self, client_order_id: &str, now: i64) {
        let Some(list) =
            self.lists.values().find(|l| l.legs.iter().any(|id| id == client_order_id))
        else {
            return;
        };
        let other = list.legs.iter().find(|id| *id != client_order_id).cloned();
        if let Some(order) = other.and_then(|id| self.orders.get_mut(&id))
            && order.is_open()
        {
            order.status = "EXPIRED";
            order.update_time = now;
        }
    }

    fn list_named(&self, params: &HashMap<String, String>, key: &str) -> Option<String> {
        if let Some(id) = params.get(key) {
            return self.lists.contains_key(id).then(|| id.clone());
        }
        let id = params.get("orderListId")?.parse::<i64>().ok()?;
        self.lists.values().find(|l| l.order_list_id == id).map(|l| l.list_client_order_id.clone())
    }
}

/// One leg's parameters, read under its prefix (`above` or `below`).
struct Leg {
    kind: String,
    price: Decimal,
    stop_price: Decimal,
    client_order_id: Option<String>,
}

fn leg(params: &HashMap<String, String>, prefix: &str) -> Result<Leg, Answer> {
    let key = |name: &str| format!("{prefix}{name}");
    let kind = match params.get(&key("Type")).map(String::as_str) {
        Some(t @ ("LIMIT_MAKER" | "STOP_LOSS" | "STOP_LOSS_LIMIT")) => t.to_owned(),
        Some(_) => return Err(Answer::bad(-1116, "Invalid orderType.")),
        None => return Err(Answer::mandatory(&key("Type"))),
    };
    let price = match kind.as_str() {
        "STOP_LOSS" => Decimal::ZERO,
        _ => decimal_param(params, &key("Price"))?,
    };
    let stop_price = match kind.as_str() {
        "LIMIT_MAKER" => Decimal::ZERO,
        _ => decimal_param(params, &key("StopPrice"))?,
    };
    let client_order_id = params.get(&key("ClientOrderId")).filter(|id| !id.is_empty()).cloned();
    Ok(Leg { kind, price, stop_price, client_order_id })
}

impl State {
    /// Routes the three order-list requests (authenticated already).
    pub(super) fn order_list(&self, method: &str, params: &HashMap<String, String>) -> Reply {
        let faults = match method {
            "POST" => {
                self.list_posts.fetch_add(1, Ordering::SeqCst);
                if let Err(refused) = self.count_new_orders(2) {
                    return Reply::Answer(refused);
                }
                &self.list_faults
            }
            "DELETE" => &self.list_cancel_faults,
            _ => &self.query_faults,
        };
        let fault = lock(faults).pop_front();
        faulted(fault, || match method {
            "POST" => self.new_oco(params),
            "DELETE" => self.cancel_list(params),
            _ => self.query_list(params),
        })
    }

    fn new_oco(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let (symbol, side) = trading_symbol_and_side(params)?;
        let symbol = &symbol;
        let qty = decimal_param(params, "quantity")?;
        let (above, below) = (leg(params, "above")?, leg(params, "below")?);
        let (limit, stop) = match (above.kind.as_str(), below.kind.as_str()) {
            ("LIMIT_MAKER", k) if k.starts_with("STOP_LOSS") => (&above, &below),
            (k, "LIMIT_MAKER") if k.starts_with("STOP_LOSS") => (&below, &above),
            _ => return Err(Answer::bad(-1166, "Invalid contingency type / order type pair.")),
        };
        let market = *lock(&self.price);
        // The documented price relationships: a sell's limit above the market and stop below;
        // a buy's limit below and stop above.
        let related = match side.as_str() {
            "SELL" => {
                std::ptr::eq(limit, &above) && limit.price > market && stop.stop_price < market
            }
            _ => std::ptr::eq(limit, &below) && limit.price < market && stop.stop_price > market,
        };
        if !related {
            return Err(Answer::bad(
                -2010,
                "The relationship of the prices for the orders is not correct.",
            ));
        }
        let f = &FILTERS;
        if qty < f.min_qty || qty > f.max_qty || !(qty % f.step).is_zero() {
            return Err(Answer::bad(-1013, "Filter failure: LOT_SIZE"));
        }
        let off = |p: Decimal| p < f.min_price || p > f.max_price || !(p % f.tick).is_zero();
        if off(limit.price) || off(stop.stop_price) || (!stop.price.is_zero() && off(stop.price)) {
            return Err(Answer::bad(-1013, "Filter failure: PRICE_FILTER"));
        }
        let now = self.now_ms();
        let mut book = lock(&self.book);
        let fresh_id = |book: &mut Book| {
            book.next_generated_id += 1;
            format!("fakeGenerated{}", book.next_generated_id)
        };
        let list_client_order_id = match params.get("listClientOrderId") {
            Some(id) if !id.is_empty() => id.clone(),
            _ => fresh_id(&mut book),
        };
        // A list id is free again once its list is done (Binance's rule).
        if book.lists.get(&list_client_order_id).is_some_and(|l| l.executing(&book)) {
            return Err(Answer::bad(-2010, "Duplicate order sent."));
        }
        let stop_id = stop.client_order_id.clone().unwrap_or_else(|| fresh_id(&mut book));
        let limit_id = limit.client_order_id.clone().unwrap_or_else(|| fresh_id(&mut book));
        if stop_id == limit_id
            || book.orders.contains_key(&stop_id)
            || book.orders.contains_key(&limit_id)
        {
            return Err(Answer::bad(-2010, "Duplicate order sent."));
        }
        book.next_list_id += 1;
        let order_list_id = book.next_list_id;
        let mut reports = Vec::new();
        for (leg, id) in [(stop, &stop_id), (limit, &limit_id)] {
            book.next_order_id += 1;
            let order = StoredOrder {
                symbol: symbol.clone(),
                order_id: book.next_order_id,
                client_order_id: id.clone(),
                side: side.clone(),
                kind: leg.kind.clone(),
                time_in_force: "GTC".to_owned(),
                price: leg.price,
                stop_price: leg.stop_price,
                trailing_delta: 0,
                orig_qty: qty,
                executed_qty: Decimal::ZERO,
                cumm_quote: Decimal::ZERO,
                status: "NEW",
                time: now,
                update_time: now,
                order_list_id,
            };
            let mut report = order.new_order_json("RESULT", &[]);
            if !leg.stop_price.is_zero()
                && let Value::Object(fields) = &mut report
            {
                fields.insert("stopPrice".into(), json!(super::d8(leg.stop_price)));
            }
            reports.push(report);
            book.orders.insert(id.clone(), order);
        }
        let list = StoredList {
            order_list_id,
            list_client_order_id: list_client_order_id.clone(),
            symbol: symbol.clone(),
            legs: [stop_id, limit_id],
            transaction_time: now,
        };
        let mut answer = list.json(&book);
        if let Value::Object(fields) = &mut answer {
            fields.insert("orderReports".into(), Value::Array(reports));
        }
        book.lists.insert(list_client_order_id, list);
        Ok(Answer::ok(answer))
    }

    fn cancel_list(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let symbol = params.get("symbol").ok_or_else(|| Answer::mandatory("symbol"))?;
        let now = self.now_ms();
        let mut book = lock(&self.book);
        let unknown = || Answer::bad(-2011, "Unknown order list sent.");
        let id = book.list_named(params, "listClientOrderId").ok_or_else(unknown)?;
        let list = book.lists.get(&id).cloned().ok_or_else(unknown)?;
        if &list.symbol != symbol || !list.executing(&book) {
            return Err(unknown());
        }
        book.next_generated_id += 1;
        let cancel_id = format!("fakeCancel{}", book.next_generated_id);
        let mut reports = Vec::new();
        for leg in &list.legs {
            if let Some(order) = book.orders.get_mut(leg) {
                if order.is_open() {
                    order.status = "CANCELED";
                    order.update_time = now;
                }
                let mut report = order.cancel_json(&cancel_id, now);
                if !order.stop_price.is_zero()
                    && let Value::Object(fields) = &mut report
                {
                    fields.insert("stopPrice".into(), json!(super::d8(order.stop_price)));
                }
                reports.push(report);
            }
        }
        let mut answer = list.json(&book);
        if let Value::Object(fields) = &mut answer {
            fields.insert("transactionTime".into(), json!(now));
            fields.insert("orderReports".into(), Value::Array(reports));
        }
        Ok(Answer::ok(answer))
    }

    fn query_list(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let book = lock(&self.book);
        let missing = || Answer::bad(-2013, "Order list does not exist.");
        let id = book.list_named(params, "origClientOrderId").ok_or_else(missing)?;
        let list = book.lists.get(&id).ok_or_else(missing)?;
        Ok(Answer::ok(list.json(&book)))
    }
}
