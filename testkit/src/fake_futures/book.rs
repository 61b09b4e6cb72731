//! The fake's account: orders, trades, positions and configuration behind one lock, and what an
//! execution does to them (figures, a trade, the position, the user stream events).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use super::{FuturesFault, WALLET_USDT, lock, now_ms, s};

#[derive(Debug, Clone)]
pub(super) struct StoredOrder {
    pub(super) order_id: u64,
    pub(super) symbol: String,
    pub(super) side: String,
    pub(super) order_type: String,
    pub(super) tif: String,
    pub(super) qty: Decimal,
    pub(super) price: Decimal,
    pub(super) executed: Decimal,
    pub(super) cum_quote: Decimal,
    pub(super) status: String,
    pub(super) reduce_only: bool,
    pub(super) time: i64,
    pub(super) update_time: i64,
}

impl StoredOrder {
    pub(super) fn json(&self) -> Value {
        let avg = if self.executed.is_zero() {
            Decimal::ZERO
        } else {
            (self.cum_quote / self.executed).round_dp(5)
        };
        json!({
            "clientOrderId": "", // set by the caller
            "cumQty": s(self.executed),
            "cumQuote": s(self.cum_quote),
            "executedQty": s(self.executed),
            "orderId": self.order_id,
            "avgPrice": s(avg),
            "origQty": s(self.qty),
            "price": s(self.price),
            "reduceOnly": self.reduce_only,
            "side": self.side,
            "positionSide": "BOTH",
            "status": self.status,
            "stopPrice": "0",
            "closePosition": false,
            "symbol": self.symbol,
            "time": self.time,
            "timeInForce": self.tif,
            "type": self.order_type,
            "origType": self.order_type,
            "updateTime": self.update_time,
            "workingType": "CONTRACT_PRICE",
            "priceProtect": false,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0
        })
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Position {
    pub(super) amt: Decimal,
    pub(super) entry: Decimal,
    pub(super) update_time: i64,
}

#[derive(Debug)]
pub(super) struct Book {
    pub(super) orders: HashMap<String, StoredOrder>,
    /// Conditional orders of the Algo Order API, by `clientAlgoId`.
    pub(super) algos: HashMap<String, super::algo::StoredAlgo>,
    pub(super) trades: Vec<Value>,
    pub(super) positions: HashMap<String, Position>,
    /// Per symbol: leverage and margin type (`ISOLATED` / `CROSSED`).
    pub(super) configs: HashMap<String, (u32, String)>,
    pub(super) income: Vec<Value>,
    pub(super) dual_side: bool,
    pub(super) faults: VecDeque<FuturesFault>,
    pub(super) rate_limit: Option<(u16, u64)>,
    /// Signed requests that passed the checks, as `METHOD /path?query` (signature removed).
    pub(super) log: Vec<String>,
    pub(super) next_id: u64,
    /// User data stream events made by the last change, pushed once the book is released.
    pub(super) outbox: Vec<Value>,
    /// The account's valid listen key, if any.
    pub(super) listen_key: Option<String>,
    pub(super) listen_keys_made: u64,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) book: Mutex<Book>,
    pub(super) skew_ms: AtomicI64,
    pub(super) price: Mutex<Decimal>,
    pub(super) requests: AtomicUsize,
    pub(super) creates: AtomicUsize,
    pub(super) time_requests: AtomicUsize,
    pub(super) clock_refusals: AtomicUsize,
    pub(super) weight: AtomicU32,
    pub(super) order_count_10s: AtomicU32,
    /// Frames for every user data stream connection.
    pub(super) stream: broadcast::Sender<Message>,
    pub(super) stream_connections: AtomicUsize,
    pub(super) keepalives: AtomicUsize,
}

impl State {
    /// Pushes what the last change made to the user data stream connections.
    pub(super) fn flush(&self) {
        let events = std::mem::take(&mut lock(&self.book).outbox);
        for event in events {
            let _ = self.stream.send(Message::text(event.to_string()));
        }
    }
}

/// Executes `qty` more of an order at `price`: its figures, a trade, the position.
pub(super) fn execute(book: &mut Book, client_order_id: &str, qty: Decimal, price: Decimal) {
    let now = now_ms();
    book.next_id += 1;
    let trade_id = book.next_id;
    let Some(order) = book.orders.get_mut(client_order_id) else { return };
    let qty = qty.min(order.qty - order.executed);
    if qty <= Decimal::ZERO {
        return;
    }
    order.executed += qty;
    order.cum_quote += qty * price;
    order.status = if order.executed >= order.qty { "FILLED" } else { "PARTIALLY_FILLED" }.into();
    order.update_time = now;
    let order = order.clone();
    let commission = (qty * price * Decimal::new(4, 4)).round_dp(8);
    let signed = if order.side == "BUY" { qty } else { -qty };
    let position = book.positions.entry(order.symbol.clone()).or_default();
    let before = position.amt;
    let after = before + signed;
    let realized = if before.is_zero() || before.is_sign_positive() == signed.is_sign_positive() {
        position.entry = (before.abs() * position.entry + qty * price) / after.abs();
        Decimal::ZERO
    } else {
        let closed = qty.min(before.abs());
        let pnl = closed
            * (price - position.entry)
            * if before > Decimal::ZERO { Decimal::ONE } else { -Decimal::ONE };
        if after.is_zero() {
            position.entry = Decimal::ZERO;
        } else if after.is_sign_positive() != before.is_sign_positive() {
            position.entry = price;
        }
        pnl
    };
    position.amt = after;
    position.update_time = now;
    let position = *position;
    let margin = book
        .configs
        .get(&order.symbol)
        .map_or("cross".to_owned(), |c| c.1.to_lowercase().replace("crossed", "cross"));
    book.outbox.push(order_event(
        &order,
        client_order_id,
        "TRADE",
        Some((qty, price, commission, trade_id)),
        realized,
    ));
    book.outbox.push(json!({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {"m": "ORDER",
        "B": [{"a": "USDT", "wb": s(WALLET_USDT), "cw": s(WALLET_USDT), "bc": "0"}],
        "P": [{"s": order.symbol, "pa": s(position.amt), "ep": s(position.entry), "bep": s(position.entry),
               "cr": "0", "up": "0", "mt": margin, "iw": "0", "ps": "BOTH"}]}}));
    book.trades.push(json!({
        "buyer": order.side == "BUY", "commission": s(commission), "commissionAsset": "USDT",
        "id": trade_id, "maker": order.order_type == "LIMIT", "orderId": order.order_id,
        "price": s(price), "qty": s(qty), "quoteQty": s(qty * price), "realizedPnl": s(realized),
        "side": order.side, "positionSide": "BOTH", "symbol": order.symbol, "time": now
    }));
}

/// `ORDER_TRADE_UPDATE` for `order` (after the change), execution type `x`, with the trade it
/// reports (quantity, price, commission, id) if any.
pub(super) fn order_event(
    order: &StoredOrder,
    client_order_id: &str,
    x: &str,
    trade: Option<(Decimal, Decimal, Decimal, u64)>,
    realized: Decimal,
) -> Value {
    let avg =
        if order.executed.is_zero() { Decimal::ZERO } else { order.cum_quote / order.executed };
    let (l, last_price, n, t) = trade.unwrap_or_default();
    let mut o = json!({
        "s": order.symbol, "c": client_order_id, "S": order.side, "o": order.order_type,
        "f": order.tif, "q": s(order.qty), "p": s(order.price), "ap": s(avg.round_dp(8)), "sp": "0",
        "x": x, "X": order.status, "i": order.order_id, "l": s(l), "z": s(order.executed),
        "L": s(last_price), "T": order.update_time, "t": t, "b": "0", "a": "0",
        "m": order.order_type == "LIMIT", "R": order.reduce_only, "wt": "CONTRACT_PRICE",
        "ot": order.order_type, "ps": "BOTH", "cp": false, "rp": s(realized), "pP": false,
        "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0
    });
    if trade.is_some() {
        o["N"] = json!("USDT");
        o["n"] = json!(s(n));
    }
    json!({"e": "ORDER_TRADE_UPDATE", "E": order.update_time, "T": order.update_time, "o": o})
}
