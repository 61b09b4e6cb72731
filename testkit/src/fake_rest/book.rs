//! The fake's order book: placing (`POST`), querying (`GET`) and canceling (`DELETE`) orders, in
//! the answer shapes of Binance's spot REST API, with the scripted [`Fault`]s applied to
//! placements.
//!
//! A `MARKET` order fills at once at the fake's price with one fill paying 0.1 % commission (in the
//! asset [`FeeMode`] says: the quote by default); a `LIMIT` `GTC` order rests (`NEW`) until the
//! test fills it; `IOC` and `FOK` limits expire at once, since limits never cross by themselves
//! here. Every fill is a trade that `GET /api/v3/myTrades` lists with its commission.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::exchange_info::{FILTERS, SYMBOLS};
use super::http::{Answer, Reply};
use super::{BNB_PRICE, Fault, FeeMode, State, d8, lock};

/// Commission rate on fills.
const COMMISSION_RATE: Decimal = Decimal::from_parts(1, 0, 0, false, 3);
/// Commission rate when paid in BNB (Binance's 25 % discount).
const BNB_RATE: Decimal = Decimal::from_parts(75, 0, 0, false, 5);

/// One execution, as `GET /api/v3/myTrades` lists it.
#[derive(Debug, Clone)]
pub(super) struct Trade {
    id: u64,
    order_id: u64,
    symbol: String,
    price: Decimal,
    qty: Decimal,
    commission: Decimal,
    commission_asset: String,
    time: i64,
    is_buyer: bool,
    is_maker: bool,
}

impl Trade {
    /// The `fills[]` entry of a FULL new-order answer.
    fn fill_json(&self) -> Value {
        json!({
            "price": d8(self.price),
            "qty": d8(self.qty),
            "commission": d8(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.id,
        })
    }

    /// The `GET /api/v3/myTrades` shape.
    fn my_trade_json(&self) -> Value {
        json!({
            "symbol": self.symbol,
            "id": self.id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": d8(self.price),
            "qty": d8(self.qty),
            "quoteQty": d8(self.price * self.qty),
            "commission": d8(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "isBestMatch": true,
        })
    }
}

/// The commission on `qty` at `price` for a `side` order on `symbol`, and its asset.
fn commission(
    mode: FeeMode,
    symbol: &str,
    side: &str,
    qty: Decimal,
    price: Decimal,
) -> (Decimal, String) {
    let (base, quote) =
        SYMBOLS.iter().find(|s| s.0 == symbol).map_or(("BTC", "USDT"), |s| (s.1, s.2));
    let quote_qty = qty * price;
    match mode {
        FeeMode::Quote => (quote_qty * COMMISSION_RATE, quote.to_owned()),
        FeeMode::Received if side == "BUY" => (qty * COMMISSION_RATE, base.to_owned()),
        FeeMode::Received => (quote_qty * COMMISSION_RATE, quote.to_owned()),
        FeeMode::Bnb => ((quote_qty * BNB_RATE / BNB_PRICE).round_dp(8), "BNB".to_owned()),
    }
}

/// One order in the book.
#[derive(Debug, Clone)]
pub(super) struct StoredOrder {
    pub(super) symbol: String,
    pub(super) order_id: u64,
    pub(super) client_order_id: String,
    pub(super) side: String,
    pub(super) kind: String,
    pub(super) time_in_force: String,
    /// Limit price; zero for a market order, as Binance reports it.
    pub(super) price: Decimal,
    /// Trigger price of a `STOP_LOSS…` order; zero otherwise.
    pub(super) stop_price: Decimal,
    /// A trailing stop's `trailingDelta` (BIPS); zero otherwise.
    pub(super) trailing_delta: u32,
    pub(super) orig_qty: Decimal,
    pub(super) executed_qty: Decimal,
    pub(super) cumm_quote: Decimal,
    pub(super) status: &'static str,
    pub(super) time: i64,
    pub(super) update_time: i64,
    /// The order list it is a leg of (`orderListId`), -1 for none.
    pub(super) order_list_id: i64,
}

impl StoredOrder {
    pub(super) fn is_open(&self) -> bool {
        matches!(self.status, "NEW" | "PARTIALLY_FILLED")
    }

    /// The `GET /api/v3/order` shape.
    pub(super) fn query_json(&self) -> Value {
        json!({
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "price": d8(self.price),
            "origQty": d8(self.orig_qty),
            "executedQty": d8(self.executed_qty),
            "cummulativeQuoteQty": d8(self.cumm_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.kind,
            "side": self.side,
            "stopPrice": d8(self.stop_price),
            "icebergQty": d8(Decimal::ZERO),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": true,
            "workingTime": self.time,
            "origQuoteOrderQty": d8(Decimal::ZERO),
            "selfTradePreventionMode": "NONE",
        })
    }

    /// The `POST /api/v3/order` shape for `resp_type` (`ACK`, `RESULT` or `FULL`).
    pub(super) fn new_order_json(&self, resp_type: &str, fills: &[Value]) -> Value {
        let mut v = json!({
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "transactTime": self.time,
        });
        if resp_type == "ACK" {
            return v;
        }
        let more = json!({
            "price": d8(self.price),
            "origQty": d8(self.orig_qty),
            "executedQty": d8(self.executed_qty),
            "origQuoteOrderQty": d8(Decimal::ZERO),
            "cummulativeQuoteQty": d8(self.cumm_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.kind,
            "side": self.side,
            "workingTime": self.time,
            "selfTradePreventionMode": "NONE",
        });
        merge(&mut v, more);
        if resp_type == "FULL" {
            merge(&mut v, json!({ "fills": fills }));
        }
        v
    }

    /// The `DELETE /api/v3/order` shape; `cancel_id` is the cancel request's own client id.
    pub(super) fn cancel_json(&self, cancel_id: &str, now: i64) -> Value {
        json!({
            "symbol": self.symbol,
            "origClientOrderId": self.client_order_id,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": cancel_id,
            "transactTime": now,
            "price": d8(self.price),
            "origQty": d8(self.orig_qty),
            "executedQty": d8(self.executed_qty),
            "origQuoteOrderQty": d8(Decimal::ZERO),
            "cummulativeQuoteQty": d8(self.cumm_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.kind,
            "side": self.side,
            "selfTradePreventionMode": "NONE",
        })
    }
}

/// The orders the fake holds, and the counters it hands ids out from.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) orders: HashMap<String, StoredOrder>,
    pub(super) next_order_id: u64,
    pub(super) next_trade_id: u64,
    pub(super) next_generated_id: u64,
    pub(super) trades: Vec<Trade>,
    /// Order lists by their client id.
    pub(super) lists: HashMap<String, super::order_list::StoredList>,
    pub(super) next_list_id: i64,
}

impl Book {
    /// Fills `qty` of the resting limit order `client_order_id` at its price, at `now`. False
    /// (and nothing changes) when there is no such open limit order, or `qty` is not positive or
    /// more than what remains.
    pub(super) fn fill_limit(
        &mut self,
        client_order_id: &str,
        qty: Decimal,
        now: i64,
        mode: FeeMode,
        market_price: Decimal,
    ) -> bool {
        let Some(order) = self.orders.get_mut(client_order_id) else { return false };
        if order.kind == "MARKET" || !order.is_open() || qty <= Decimal::ZERO {
            return false;
        }
        // A triggered STOP_LOSS trades at the market: at its stop price here, or, trailing,
        // at the fake's price as the test set it.
        let price = match order.kind.as_str() {
            "STOP_LOSS" if order.trailing_delta > 0 => market_price,
            "STOP_LOSS" => order.stop_price,
            _ => order.price,
        };
        if order.executed_qty + qty > order.orig_qty {
            return false;
        }
        order.executed_qty += qty;
        order.cumm_quote += qty * price;
        order.status =
            if order.executed_qty == order.orig_qty { "FILLED" } else { "PARTIALLY_FILLED" };
        order.update_time = now;
        let (fee, asset) = commission(mode, &order.symbol, &order.side, qty, price);
        let trade = Trade {
            id: self.next_trade_id + 1,
            order_id: order.order_id,
            symbol: order.symbol.clone(),
            price,
            qty,
            commission: fee,
            commission_asset: asset,
            time: now,
            is_buyer: order.side == "BUY",
            is_maker: true,
        };
        self.next_trade_id += 1;
        self.trades.push(trade);
        // A leg of an OCO list that executes expires the other leg.
        self.expire_partner(client_order_id, now);
        true
    }
}

fn merge(into: &mut Value, more: Value) {
    if let (Value::Object(into), Value::Object(more)) = (into, more) {
        into.extend(more);
    }
}

/// A new order's (or order list's) `symbol`, which must be trading, and `side`.
pub(super) fn trading_symbol_and_side(
    params: &HashMap<String, String>,
) -> Result<(String, String), Answer> {
    let symbol = params.get("symbol").ok_or_else(|| Answer::mandatory("symbol"))?;
    let Some(&(_, _, _, status)) = SYMBOLS.iter().find(|s| s.0 == symbol) else {
        return Err(Answer::bad(-1121, "Invalid symbol."));
    };
    if status != "TRADING" {
        return Err(Answer::bad(-2010, "Market is closed."));
    }
    let side = match params.get("side").map(String::as_str) {
        Some(s @ ("BUY" | "SELL")) => s.to_owned(),
        Some(_) => return Err(Answer::bad(-1117, "Invalid side.")),
        None => return Err(Answer::mandatory("side")),
    };
    Ok((symbol.clone(), side))
}

/// What a request that suffers `fault` answers: `act` runs first for the faults that say the
/// venue acted, and its answer is sent when there is no fault.
pub(super) fn faulted(fault: Option<Fault>, act: impl FnOnce() -> Result<Answer, Answer>) -> Reply {
    match fault {
        Some(Fault::Hang) => Reply::Hang,
        Some(Fault::Drop) => Reply::Drop,
        Some(Fault::ServerError) => Reply::Answer(Answer::server_error()),
        Some(Fault::AcceptThenServerError) => {
            let _ = act();
            Reply::Answer(Answer::server_error())
        }
        Some(Fault::AcceptThenDrop) => {
            let _ = act();
            Reply::Drop
        }
        Some(Fault::AcceptThenHang) => {
            let _ = act();
            Reply::Hang
        }
        None => Reply::Answer(act().unwrap_or_else(|e| e)),
    }
}

pub(super) fn decimal_param(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Decimal, Answer> {
    params
        .get(name)
        .and_then(|v| v.parse::<Decimal>().ok())
        .filter(|d| *d > Decimal::ZERO)
        .ok_or_else(|| Answer::mandatory(name))
}

impl State {
    pub(super) fn post(&self, params: &HashMap<String, String>) -> Reply {
        self.posts.fetch_add(1, Ordering::SeqCst);
        if let Err(refused) = self.count_new_orders(1) {
            return Reply::Answer(refused);
        }
        let fault = lock(&self.faults).pop_front();
        faulted(fault, || self.new_order(params))
    }

    fn new_order(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let (symbol, side) = trading_symbol_and_side(params)?;
        let symbol = &symbol;
        let kind = match params.get("type").map(String::as_str) {
            Some(t @ ("MARKET" | "LIMIT" | "LIMIT_MAKER" | "STOP_LOSS" | "STOP_LOSS_LIMIT")) => {
                t.to_owned()
            }
            Some(_) => return Err(Answer::bad(-1116, "Invalid orderType.")),
            None => return Err(Answer::mandatory("type")),
        };
        // Which of the optional parameters each type takes (Binance refuses the others).
        let takes: &[&str] = match kind.as_str() {
            "LIMIT" => &["price", "timeInForce"],
            "LIMIT_MAKER" => &["price"],
            "STOP_LOSS_LIMIT" => &["price", "timeInForce", "stopPrice", "trailingDelta"],
            "STOP_LOSS" => &["stopPrice", "trailingDelta"],
            _ => &[],
        };
        for extra in ["price", "timeInForce", "stopPrice", "trailingDelta"] {
            if params.contains_key(extra) && !takes.contains(&extra) {
                return Err(Answer::bad(
                    -1106,
                    &format!("Parameter '{extra}' sent when not required."),
                ));
            }
        }
        let qty = decimal_param(params, "quantity")?;
        let market_price = *lock(&self.price);
        let has_price = takes.contains(&"price");
        let price = if has_price { decimal_param(params, "price")? } else { Decimal::ZERO };
        let time_in_force = if takes.contains(&"timeInForce") {
            match params.get("timeInForce").map(String::as_str) {
                Some(t @ ("GTC" | "IOC" | "FOK")) => t.to_owned(),
                Some(_) => return Err(Answer::bad(-1115, "Invalid timeInForce.")),
                None => return Err(Answer::mandatory("timeInForce")),
            }
        } else {
            "GTC".to_owned()
        };
        let stop_price = match params.get("stopPrice") {
            Some(_) => decimal_param(params, "stopPrice")?,
            None => Decimal::ZERO,
        };
        let trailing_delta = match params.get("trailingDelta").map(|v| v.parse::<u32>()) {
            Some(Ok(bips)) if (10..=2000).contains(&bips) => bips,
            Some(_) => return Err(Answer::bad(-2010, "Invalid trailingDelta.")),
            None => 0,
        };
        if kind.starts_with("STOP_LOSS") && stop_price.is_zero() && trailing_delta == 0 {
            return Err(Answer::mandatory("stopPrice"));
        }
        if kind == "LIMIT_MAKER" {
            let takes_now = match side.as_str() {
                "BUY" => price >= market_price,
                _ => price <= market_price,
            };
            if takes_now {
                return Err(Answer::bad(-2010, "Order would immediately match and take."));
            }
        }
        let f = &FILTERS;
        if qty < f.min_qty || qty > f.max_qty || !(qty % f.step).is_zero() {
            return Err(Answer::bad(-1013, "Filter failure: LOT_SIZE"));
        }
        let off_filter = |p: Decimal| p < f.min_price || p > f.max_price || !(p % f.tick).is_zero();
        if (has_price && off_filter(price)) || (!stop_price.is_zero() && off_filter(stop_price)) {
            return Err(Answer::bad(-1013, "Filter failure: PRICE_FILTER"));
        }
        let notional_price = if has_price { price } else { market_price };
        if qty * notional_price < f.min_notional {
            return Err(Answer::bad(-1013, "Filter failure: NOTIONAL"));
        }
        let resp_type = match params.get("newOrderRespType").map(String::as_str) {
            None => "FULL",
            Some(t @ ("ACK" | "RESULT" | "FULL")) => t,
            Some(_) => return Err(Answer::bad(-1100, "Illegal characters found in a parameter.")),
        };

        let now = self.now_ms();
        let mut book = lock(&self.book);
        let client_order_id = match params.get("newClientOrderId") {
            Some(id) if !id.is_empty() => id.clone(),
            _ => {
                book.next_generated_id += 1;
                format!("fakeGenerated{}", book.next_generated_id)
            }
        };
        if book.orders.contains_key(&client_order_id) {
            return Err(Answer::bad(-2010, "Duplicate order sent."));
        }
        book.next_order_id += 1;
        let mut order = StoredOrder {
            symbol: symbol.clone(),
            order_id: book.next_order_id,
            client_order_id: client_order_id.clone(),
            side,
            kind,
            time_in_force,
            price,
            stop_price,
            trailing_delta,
            orig_qty: qty,
            executed_qty: Decimal::ZERO,
            cumm_quote: Decimal::ZERO,
            status: "NEW",
            time: now,
            update_time: now,
            order_list_id: -1,
        };
        let mut fills = Vec::new();
        if order.kind == "MARKET" {
            let quote_qty = qty * market_price;
            book.next_trade_id += 1;
            let mode = *lock(&self.fee_mode);
            let (fee, asset) = commission(mode, symbol, &order.side, qty, market_price);
            let trade = Trade {
                id: book.next_trade_id,
                order_id: order.order_id,
                symbol: symbol.clone(),
                price: market_price,
                qty,
                commission: fee,
                commission_asset: asset,
                time: now,
                is_buyer: order.side == "BUY",
                is_maker: false,
            };
            fills.push(trade.fill_json());
            book.trades.push(trade);
            order.executed_qty = qty;
            order.cumm_quote = quote_qty;
            order.status = "FILLED";
        } else if order.kind == "LIMIT" && order.time_in_force != "GTC" {
            // Limits never cross in the fake, so IOC and FOK expire unfilled.
            order.status = "EXPIRED";
        }
        let answer = order.new_order_json(resp_type, &fills);
        book.orders.insert(client_order_id, order);
        Ok(Answer::ok(answer))
    }

    /// The order `params` name (`origClientOrderId` or `orderId`, and its `symbol`).
    fn find<'b>(
        book: &'b mut Book,
        params: &HashMap<String, String>,
    ) -> Result<Option<&'b mut StoredOrder>, Answer> {
        let symbol = params.get("symbol").ok_or_else(|| Answer::mandatory("symbol"))?;
        let found = match (params.get("origClientOrderId"), params.get("orderId")) {
            (Some(id), _) => book.orders.get_mut(id),
            (None, Some(id)) => {
                let id = id.parse::<u64>().map_err(|_| Answer::mandatory("orderId"))?;
                book.orders.values_mut().find(|o| o.order_id == id)
            }
            (None, None) => {
                return Err(Answer::bad(
                    -1102,
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were \
                     empty/null!",
                ));
            }
        };
        Ok(found.filter(|o| &o.symbol == symbol))
    }

    /// `GET /api/v3/myTrades` by `orderId` (the only filter Keel uses; without it, every trade
    /// of the symbol).
    pub(super) fn my_trades(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let symbol = params.get("symbol").ok_or_else(|| Answer::mandatory("symbol"))?;
        let order_id = match params.get("orderId") {
            Some(id) => Some(id.parse::<u64>().map_err(|_| Answer::mandatory("orderId"))?),
            None => None,
        };
        let book = lock(&self.book);
        let trades: Vec<Value> = book
            .trades
            .iter()
            .filter(|t| &t.symbol == symbol && order_id.is_none_or(|id| t.order_id == id))
            .map(Trade::my_trade_json)
            .collect();
        Ok(Answer::ok(Value::Array(trades)))
    }

    pub(super) fn query(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let mut book = lock(&self.book);
        match Self::find(&mut book, params)? {
            Some(order) => Ok(Answer::ok(order.query_json())),
            None => Err(Answer::bad(-2013, "Order does not exist.")),
        }
    }

    pub(super) fn cancel(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let now = self.now_ms();
        let mut book = lock(&self.book);
        book.next_generated_id += 1;
        let cancel_id = match params.get("newClientOrderId") {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!("fakeCancel{}", book.next_generated_id),
        };
        match Self::find(&mut book, params)? {
            Some(order) if order.is_open() => {
                order.status = "CANCELED";
                order.update_time = now;
                Ok(Answer::ok(order.cancel_json(&cancel_id, now)))
            }
            _ => Err(Answer::bad(-2011, "Unknown order sent.")),
        }
    }
}
