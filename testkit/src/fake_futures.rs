//! A fake Binance USD-M futures REST API on loopback, for the futures router's tests.
//!
//! It answers in the shapes of `fixtures/binance_futures/rest.jsonl` (copied from Binance's
//! USD-M futures documentation) and checks what Binance checks, in its order: the
//! `X-MBX-APIKEY` header (`-2015`, HTTP 401), the `signature` (hex HMAC-SHA256 of the query
//! string without the `signature` pair, followed by the body: `-1022`), and `timestamp` against
//! `recvWindow` (`-1021`: more than 1 s ahead of the server, or older than `recvWindow`).
//!
//! Endpoints:
//! - `GET /fapi/v1/time`, `GET /fapi/v1/exchangeInfo` (BTCUSDT and ETHUSDT, `MIN_NOTIONAL` 5);
//! - `POST`, `GET`, `DELETE /fapi/v1/order` (by `newClientOrderId` / `origClientOrderId`),
//!   `GET /fapi/v1/userTrades`;
//! - `GET /fapi/v1/positionSide/dual` ([`FakeFutures::set_dual_side`]), `POST /fapi/v1/marginType`
//!   (`-4046` when already so, `-4048` with a position open), `POST /fapi/v1/leverage` (`-4028`
//!   above the symbol's bracket: 125 on BTCUSDT, 75 on ETHUSDT);
//! - `GET /fapi/v3/balance`, `GET /fapi/v3/positionRisk`, `GET /fapi/v1/symbolConfig`,
//!   `GET /fapi/v1/income` ([`FakeFutures::pay_funding`]);
//! - `POST`/`PUT`/`DELETE /fapi/v1/listenKey` (API key only, `-1125` for a keep-alive of no key)
//!   and the user data stream at [`FakeFutures::ws_url`]`/ws/<listenKey>` (a wrong key is refused
//!   at the handshake): every order change pushes `ORDER_TRADE_UPDATE` (`NEW`, `TRADE`,
//!   `CANCELED`), every execution an `ACCOUNT_UPDATE` (`ORDER`) with the position;
//!   [`FakeFutures::charge_funding`] an `ACCOUNT_UPDATE` (`FUNDING_FEE`), and
//!   [`FakeFutures::expire_listen_key`] `listenKeyExpired` (then the connection closes).
//!
//! One-way position mode: each symbol has one signed position. A `MARKET` order fills at once at
//! [`FakeFutures::set_price`] paying 0.04 % commission in USDT; a `LIMIT` `GTC`/`GTX` order rests
//! until [`FakeFutures::fill`]; `IOC`/`FOK` limits expire at once. A `reduceOnly` order that
//! would open, increase or flip the position is `-2022 ReduceOnly Order is rejected.`
//! (simplification: Binance trims a reduce-only order larger than the position; the fake
//! refuses it). A reused `newClientOrderId` is `-4116`. Faults ([`FuturesFault`]) apply to
//! `POST /fapi/v1/order` requests that passed the checks; [`FakeFutures::rate_limit_next`]
//! answers the next request with a 429 or 418 and `Retry-After`. Liquidation prices are a rough
//! `entry × (1 ∓ 1/leverage)` on isolated margin and absent (`"0"`) on cross.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as Request2, Response,
};

use crate::hmac_sha256_hex;

/// The API key the fake accepts (Binance's signing example, as the spot fake's).
pub const API_KEY: &str = crate::fake_rest::API_KEY;
/// Its secret.
pub const SECRET_KEY: &str = crate::fake_rest::SECRET_KEY;
/// The wallet the account starts with, USDT.
pub const WALLET_USDT: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
/// The leverage a symbol has before anyone sets it (Binance's default).
pub const DEFAULT_LEVERAGE: u32 = 20;

/// What the next order placement suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuturesFault {
    /// HTTP 503 `-1001`; the order is not stored.
    ServerError,
    /// The order is stored (a market order filled) but the answer is HTTP 503 `-1001`.
    AcceptThenServerError,
    /// The connection is closed without an answer; the order is not stored.
    Drop,
    /// The order is stored (a market order filled), then the connection closed unanswered.
    AcceptThenDrop,
}

#[derive(Debug, Clone)]
struct StoredOrder {
    order_id: u64,
    symbol: String,
    side: String,
    order_type: String,
    tif: String,
    qty: Decimal,
    price: Decimal,
    executed: Decimal,
    cum_quote: Decimal,
    status: String,
    reduce_only: bool,
    time: i64,
    update_time: i64,
}

impl StoredOrder {
    fn json(&self) -> Value {
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
struct Position {
    amt: Decimal,
    entry: Decimal,
    update_time: i64,
}

#[derive(Debug)]
struct Book {
    orders: HashMap<String, StoredOrder>,
    trades: Vec<Value>,
    positions: HashMap<String, Position>,
    /// Per symbol: leverage and margin type (`ISOLATED` / `CROSSED`).
    configs: HashMap<String, (u32, String)>,
    income: Vec<Value>,
    dual_side: bool,
    faults: VecDeque<FuturesFault>,
    rate_limit: Option<(u16, u64)>,
    /// Signed requests that passed the checks, as `METHOD /path?query` (signature removed).
    log: Vec<String>,
    next_id: u64,
    /// User data stream events made by the last change, pushed once the book is released.
    outbox: Vec<Value>,
    /// The account's valid listen key, if any.
    listen_key: Option<String>,
    listen_keys_made: u64,
}

#[derive(Debug)]
struct State {
    book: Mutex<Book>,
    skew_ms: AtomicI64,
    price: Mutex<Decimal>,
    requests: AtomicUsize,
    creates: AtomicUsize,
    time_requests: AtomicUsize,
    clock_refusals: AtomicUsize,
    weight: AtomicU32,
    order_count_10s: AtomicU32,
    /// Frames for every user data stream connection.
    stream: broadcast::Sender<Message>,
    stream_connections: AtomicUsize,
    keepalives: AtomicUsize,
}

impl State {
    /// Pushes what the last change made to the user data stream connections.
    fn flush(&self) {
        let events = std::mem::take(&mut lock(&self.book).outbox);
        for event in events {
            let _ = self.stream.send(Message::text(event.to_string()));
        }
    }
}

/// The running fake (dropping every handle does not stop it; it lives with the runtime).
#[derive(Debug, Clone)]
pub struct FakeFutures {
    url: String,
    ws_url: String,
    state: Arc<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn s(d: Decimal) -> String {
    d.normalize().to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

impl FakeFutures {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let configs = ["BTCUSDT", "ETHUSDT"]
            .iter()
            .map(|s| ((*s).to_owned(), (DEFAULT_LEVERAGE, "CROSSED".to_owned())))
            .collect();
        let state = Arc::new(State {
            book: Mutex::new(Book {
                orders: HashMap::new(),
                trades: Vec::new(),
                positions: HashMap::new(),
                configs,
                income: Vec::new(),
                dual_side: false,
                faults: VecDeque::new(),
                rate_limit: None,
                log: Vec::new(),
                next_id: 8_389_765_000,
                outbox: Vec::new(),
                listen_key: None,
                listen_keys_made: 0,
            }),
            skew_ms: AtomicI64::new(0),
            price: Mutex::new(Decimal::from(50_000)),
            requests: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            time_requests: AtomicUsize::new(0),
            clock_refusals: AtomicUsize::new(0),
            weight: AtomicU32::new(0),
            order_count_10s: AtomicU32::new(0),
            stream: broadcast::channel(1024).0,
            stream_connections: AtomicUsize::new(0),
            keepalives: AtomicUsize::new(0),
        });
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, served.clone()));
            }
        });
        let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}", ws_listener.local_addr().unwrap());
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = ws_listener.accept().await {
                let pushes = served.stream.subscribe();
                tokio::spawn(serve_stream(tcp, served.clone(), pushes));
            }
        });
        Self { url, ws_url, state }
    }

    /// `X-MBX-ORDER-COUNT-10S` on the next order answers is `count` (then it counts on).
    pub fn set_order_count_10s(&self, count: u32) {
        self.state.order_count_10s.store(count, Ordering::SeqCst);
    }

    /// The user data stream's base (`ws://127.0.0.1:port`; connect to `/ws/<listenKey>`).
    pub fn ws_url(&self) -> String {
        self.ws_url.clone()
    }

    /// User data stream connections accepted so far.
    pub fn stream_connections(&self) -> usize {
        self.state.stream_connections.load(Ordering::SeqCst)
    }

    /// Listen keys created (`POST /fapi/v1/listenKey` without a valid one).
    pub fn listen_keys_made(&self) -> u64 {
        lock(&self.state.book).listen_keys_made
    }

    /// `PUT /fapi/v1/listenKey` requests that kept a valid key alive.
    pub fn keepalives(&self) -> usize {
        self.state.keepalives.load(Ordering::SeqCst)
    }

    /// The listen key lapses: `listenKeyExpired` goes to every connection, the key is invalid.
    pub fn expire_listen_key(&self) {
        let key = lock(&self.state.book).listen_key.take();
        if let Some(key) = key {
            let event = json!({"e": "listenKeyExpired", "E": now_ms(), "listenKey": key});
            let _ = self.state.stream.send(Message::text(event.to_string()));
        }
    }

    /// Sends `event` to every user data stream connection, as it is.
    pub fn push(&self, event: &Value) {
        let _ = self.state.stream.send(Message::text(event.to_string()));
    }

    /// A funding fee is charged: recorded in income history and announced by an
    /// `ACCOUNT_UPDATE` with reason `FUNDING_FEE` (cross margin: the balance only).
    pub fn charge_funding(&self, symbol: &str, amount: Decimal, tran_id: u64) {
        let now = now_ms();
        self.pay_funding(symbol, amount, now, tran_id);
        let event = json!({"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {"m": "FUNDING_FEE",
            "B": [{"a": "USDT", "wb": s(WALLET_USDT + amount), "cw": s(WALLET_USDT + amount), "bc": s(amount)}]}});
        self.push(&event);
    }

    /// Its base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Moves the server's clock by `skew_ms` from local time.
    pub fn set_clock_skew_ms(&self, skew_ms: i64) {
        self.state.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// The price market orders fill at (and the mark price).
    pub fn set_price(&self, price: Decimal) {
        *lock(&self.state.price) = price;
    }

    /// Hedge mode (`dualSidePosition`) on or off.
    pub fn set_dual_side(&self, dual: bool) {
        lock(&self.state.book).dual_side = dual;
    }

    /// The next `n` order placements meet `fault`.
    pub fn fail_next(&self, n: usize, fault: FuturesFault) {
        lock(&self.state.book).faults.extend(std::iter::repeat_n(fault, n));
    }

    /// The next request, whatever it is, gets `status` (429 or 418) with `Retry-After`.
    pub fn rate_limit_next(&self, status: u16, retry_after_secs: u64) {
        lock(&self.state.book).rate_limit = Some((status, retry_after_secs));
    }

    /// Records a funding payment of `amount` USDT on `symbol` at `time_ms`, with `tran_id`.
    pub fn pay_funding(&self, symbol: &str, amount: Decimal, time_ms: i64, tran_id: u64) {
        lock(&self.state.book).income.push(json!({
            "symbol": symbol, "incomeType": "FUNDING_FEE", "income": s(amount), "asset": "USDT",
            "info": "FUNDING_FEE", "time": time_ms, "tranId": tran_id, "tradeId": ""
        }));
    }

    /// Fills `qty` more of the resting order `client_order_id` at the set price; false when it
    /// is not open.
    pub fn fill(&self, client_order_id: &str, qty: Decimal) -> bool {
        let price = *lock(&self.state.price);
        let mut book = lock(&self.state.book);
        let Some(order) = book.orders.get(client_order_id) else { return false };
        if !matches!(order.status.as_str(), "NEW" | "PARTIALLY_FILLED") {
            return false;
        }
        execute(&mut book, client_order_id, qty, price);
        drop(book);
        self.state.flush();
        true
    }

    /// One order as the fake answers a query for it.
    pub fn order(&self, client_order_id: &str) -> Option<Value> {
        let book = lock(&self.state.book);
        let order = book.orders.get(client_order_id)?;
        let mut json = order.json();
        json["clientOrderId"] = json!(client_order_id);
        Some(json)
    }

    /// The signed position on `symbol` (zero when flat).
    pub fn position(&self, symbol: &str) -> Decimal {
        lock(&self.state.book).positions.get(symbol).map(|p| p.amt).unwrap_or_default()
    }

    /// `symbol`'s leverage and margin type (`ISOLATED` / `CROSSED`).
    pub fn config(&self, symbol: &str) -> Option<(u32, String)> {
        lock(&self.state.book).configs.get(symbol).cloned()
    }

    /// Signed requests that passed the checks, in order, as `METHOD /path?query` without the
    /// signature.
    pub fn log(&self) -> Vec<String> {
        lock(&self.state.book).log.clone()
    }

    /// Requests served, of any kind.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// `POST /fapi/v1/order` requests that created an order.
    pub fn creates(&self) -> usize {
        self.state.creates.load(Ordering::Relaxed)
    }

    /// `GET /fapi/v1/time` requests.
    pub fn time_requests(&self) -> usize {
        self.state.time_requests.load(Ordering::Relaxed)
    }

    /// Requests refused with `-1021`.
    pub fn clock_refusals(&self) -> usize {
        self.state.clock_refusals.load(Ordering::Relaxed)
    }
}

/// Executes `qty` more of an order at `price`: its figures, a trade, the position.
fn execute(book: &mut Book, client_order_id: &str, qty: Decimal, price: Decimal) {
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
fn order_event(
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

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: String,
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if length > 64 * 1024 {
        return None;
    }
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// An answer: status, body, extra headers.
type Answer = (u16, Value, Vec<(&'static str, String)>);

fn error(status: u16, code: i64, msg: &str) -> Answer {
    (status, json!({"code": code, "msg": msg}), Vec::new())
}

fn ok(body: Value) -> Answer {
    (200, body, Vec::new())
}

async fn write(stream: &mut TcpStream, state: &State, (status, body, headers): Answer) {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    };
    let weight = state.weight.fetch_add(1, Ordering::Relaxed) + 1;
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-MBX-USED-WEIGHT-1M: {weight}\r\n",
        text.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn params_of(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let Some(request) = read_request(&mut stream).await else { return };
    state.requests.fetch_add(1, Ordering::Relaxed);
    let rate_limit = lock(&state.book).rate_limit.take();
    if let Some((status, retry)) = rate_limit {
        let mut answer =
            error(status, -1003, "Too many requests; current limit is 2400 requests per minute.");
        answer.2.push(("Retry-After", retry.to_string()));
        write(&mut stream, &state, answer).await;
        return;
    }
    let server_time = now_ms() + state.skew_ms.load(Ordering::Relaxed);
    let route = (request.method.as_str(), request.path.as_str());
    let answer = match route {
        ("GET", "/fapi/v1/time") => {
            state.time_requests.fetch_add(1, Ordering::Relaxed);
            ok(json!({"serverTime": server_time}))
        }
        ("GET", "/fapi/v1/exchangeInfo") => ok(exchange_info(server_time)),
        ("GET", "/fapi/v1/ping") => ok(json!({})),
        ("POST" | "PUT" | "DELETE", "/fapi/v1/listenKey") => listen_key(&request, &state),
        _ => match check_signed(&request, &state, server_time) {
            Err(answer) => answer,
            Ok(params) => {
                let unsigned = request
                    .query
                    .split('&')
                    .filter(|p| !p.starts_with("signature="))
                    .collect::<Vec<_>>()
                    .join("&");
                lock(&state.book)
                    .log
                    .push(format!("{} {}?{unsigned}", request.method, request.path));
                if route == ("POST", "/fapi/v1/order") {
                    let fault = lock(&state.book).faults.pop_front();
                    match fault {
                        Some(FuturesFault::Drop) => return,
                        Some(FuturesFault::ServerError) => error(
                            503,
                            -1001,
                            "Internal error; unable to process your request. Please try again.",
                        ),
                        Some(
                            after @ (FuturesFault::AcceptThenDrop
                            | FuturesFault::AcceptThenServerError),
                        ) => {
                            let _ = new_order(&state, &params);
                            if after == FuturesFault::AcceptThenDrop {
                                // The venue's events go out even though its answer does not.
                                state.flush();
                                return;
                            }
                            error(
                                503,
                                -1001,
                                "Internal error; unable to process your request. Please try again.",
                            )
                        }
                        None => new_order(&state, &params),
                    }
                } else {
                    signed_route(route, &state, &params)
                }
            }
        },
    };
    state.flush();
    write(&mut stream, &state, answer).await;
}

/// `POST` (create, or the valid key again), `PUT` (keep alive) and `DELETE` (close) of the
/// account's listen key: the API key only, no signature (`USER_STREAM`).
fn listen_key(request: &Request, state: &State) -> Answer {
    if request.headers.get("x-mbx-apikey").map(String::as_str) != Some(API_KEY) {
        return error(401, -2015, "Invalid API-key, IP, or permissions for action.");
    }
    let mut book = lock(&state.book);
    match request.method.as_str() {
        "POST" => {
            if book.listen_key.is_none() {
                book.listen_keys_made += 1;
                let key = format!(
                    "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a{:05}",
                    book.listen_keys_made
                );
                book.listen_key = Some(key);
            }
            ok(json!({"listenKey": book.listen_key}))
        }
        "PUT" => match &book.listen_key {
            Some(key) => {
                state.keepalives.fetch_add(1, Ordering::SeqCst);
                ok(json!({"listenKey": key}))
            }
            None => error(400, -1125, "This listenKey does not exist."),
        },
        _ => {
            book.listen_key = None;
            ok(json!({}))
        }
    }
}

/// One user data stream connection: `/ws/<listenKey>` with the valid key, then every pushed
/// frame until either side closes.
async fn serve_stream(tcp: TcpStream, state: Arc<State>, mut pushes: broadcast::Receiver<Message>) {
    let valid = lock(&state.book).listen_key.clone();
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback =
        move |request: &Request2, response: Response| -> Result<Response, ErrorResponse> {
            let path = request.uri().path();
            if valid.as_ref().is_some_and(|key| path == format!("/ws/{key}")) {
                return Ok(response);
            }
            let mut refused = ErrorResponse::new(Some("invalid listen key".into()));
            *refused.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
            Err(refused)
        };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    state.stream_connections.fetch_add(1, Ordering::SeqCst);
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Ping(payload))) => {
                    if sink.send(Message::Pong(payload)).await.is_err() { return; }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            pushed = pushes.recv() => match pushed {
                Ok(message) => {
                    let expired = message.to_text().is_ok_and(|t| t.contains("listenKeyExpired"));
                    if sink.send(message).await.is_err() { return; }
                    if expired {
                        let _ = sink.close().await;
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// The key, signature and timestamp checks; the request's parameters when they pass.
fn check_signed(
    request: &Request,
    state: &State,
    server_time: i64,
) -> Result<HashMap<String, String>, Answer> {
    if request.headers.get("x-mbx-apikey").map(String::as_str) != Some(API_KEY) {
        return Err(error(401, -2015, "Invalid API-key, IP, or permissions for action."));
    }
    let Some((payload, signature)) = request.query.rsplit_once("&signature=") else {
        return Err(error(
            400,
            -1102,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        ));
    };
    let signed = format!("{payload}{}", request.body);
    if hmac_sha256_hex(SECRET_KEY.as_bytes(), signed.as_bytes()) != signature {
        return Err(error(400, -1022, "Signature for this request is not valid."));
    }
    let mut params = params_of(payload);
    params.extend(params_of(&request.body));
    let Some(timestamp) = params.get("timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return Err(error(
            400,
            -1102,
            "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
        ));
    };
    let recv_window: i64 = params.get("recvWindow").and_then(|w| w.parse().ok()).unwrap_or(5_000);
    if timestamp > server_time + 1_000 || server_time - timestamp > recv_window {
        state.clock_refusals.fetch_add(1, Ordering::Relaxed);
        return Err(error(400, -1021, "Timestamp for this request is outside of the recvWindow."));
    }
    Ok(params)
}

fn decimal(params: &HashMap<String, String>, key: &str) -> Option<Decimal> {
    params.get(key)?.parse::<Decimal>().ok().filter(|d| *d > Decimal::ZERO)
}

fn known_symbol(params: &HashMap<String, String>) -> Result<String, Answer> {
    match params.get("symbol").map(String::as_str) {
        Some(symbol @ ("BTCUSDT" | "ETHUSDT")) => Ok(symbol.to_owned()),
        _ => Err(error(400, -1121, "Invalid symbol.")),
    }
}

fn new_order(state: &State, params: &HashMap<String, String>) -> Answer {
    let symbol = match known_symbol(params) {
        Ok(symbol) => symbol,
        Err(answer) => return answer,
    };
    let side = match params.get("side").map(String::as_str) {
        Some(side @ ("BUY" | "SELL")) => side.to_owned(),
        _ => {
            return error(
                400,
                -1102,
                "Mandatory parameter 'side' was not sent, was empty/null, or malformed.",
            );
        }
    };
    let Some(qty) = decimal(params, "quantity") else {
        return error(
            400,
            -1102,
            "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
        );
    };
    let order_type = params.get("type").cloned().unwrap_or_default();
    let (tif, price) = match order_type.as_str() {
        "MARKET" => (String::from("GTC"), Decimal::ZERO),
        "LIMIT" => {
            let Some(price) = decimal(params, "price") else {
                return error(
                    400,
                    -1102,
                    "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
                );
            };
            match params.get("timeInForce").map(String::as_str) {
                Some(tif @ ("GTC" | "IOC" | "FOK" | "GTX" | "GTD")) => (tif.to_owned(), price),
                _ => {
                    return error(
                        400,
                        -1102,
                        "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
                    );
                }
            }
        }
        "STOP" | "STOP_MARKET" | "TAKE_PROFIT" | "TAKE_PROFIT_MARKET" | "TRAILING_STOP_MARKET" => {
            return error(
                400,
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            );
        }
        _ => return error(400, -1116, "Invalid orderType."),
    };
    let reduce_only = params.get("reduceOnly").map(String::as_str) == Some("true");
    let Some(client_id) = params.get("newClientOrderId").cloned() else {
        return error(
            400,
            -1102,
            "Mandatory parameter 'newClientOrderId' was not sent (the fake wants one).",
        );
    };
    let market_price = *lock(&state.price);
    let mut book = lock(&state.book);
    if book.orders.contains_key(&client_id) {
        return error(400, -4116, "ClientOrderId is duplicated.");
    }
    if reduce_only {
        let amt = book.positions.get(&symbol).map(|p| p.amt).unwrap_or_default();
        let reduces = if side == "BUY" { amt < Decimal::ZERO } else { amt > Decimal::ZERO };
        if !reduces || qty > amt.abs() {
            return error(400, -2022, "ReduceOnly Order is rejected.");
        }
    }
    if order_type == "LIMIT" && tif == "GTX" {
        let crosses = if side == "BUY" { price >= market_price } else { price <= market_price };
        if crosses {
            return error(
                400,
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be rejected. The order will not be recorded in the order history",
            );
        }
    }
    book.next_id += 1;
    let (now, order_id) = (now_ms(), book.next_id);
    book.orders.insert(
        client_id.clone(),
        StoredOrder {
            order_id,
            symbol,
            side,
            order_type: order_type.clone(),
            tif: tif.clone(),
            qty,
            price,
            executed: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            status: "NEW".into(),
            reduce_only,
            time: now,
            update_time: now,
        },
    );
    state.creates.fetch_add(1, Ordering::Relaxed);
    let placed = book.orders[&client_id].clone();
    book.outbox.push(order_event(&placed, &client_id, "NEW", None, Decimal::ZERO));
    if order_type == "MARKET" {
        execute(&mut book, &client_id, qty, market_price);
    } else if matches!(tif.as_str(), "IOC" | "FOK")
        && let Some(order) = book.orders.get_mut(&client_id)
    {
        order.status = "EXPIRED".into();
    }
    let mut json = book.orders[&client_id].json();
    json["clientOrderId"] = json!(client_id);
    json.as_object_mut().map(|o| o.remove("time"));
    let count = state.order_count_10s.fetch_add(1, Ordering::SeqCst) + 1;
    (
        200,
        json,
        vec![
            ("X-MBX-ORDER-COUNT-10S", count.to_string()),
            ("X-MBX-ORDER-COUNT-1M", count.to_string()),
        ],
    )
}

fn signed_route(route: (&str, &str), state: &State, params: &HashMap<String, String>) -> Answer {
    let price = *lock(&state.price);
    let mut book = lock(&state.book);
    match route {
        ("GET" | "DELETE", "/fapi/v1/order") => {
            if let Err(answer) = known_symbol(params) {
                return answer;
            }
            let Some(id) = params.get("origClientOrderId") else {
                return error(
                    400,
                    -1102,
                    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
                );
            };
            let Some(order) = book.orders.get_mut(id) else {
                return if route.0 == "GET" {
                    error(400, -2013, "Order does not exist.")
                } else {
                    error(400, -2011, "Unknown order sent.")
                };
            };
            if route.0 == "DELETE" {
                if !matches!(order.status.as_str(), "NEW" | "PARTIALLY_FILLED") {
                    return error(400, -2011, "Unknown order sent.");
                }
                order.status = "CANCELED".into();
                order.update_time = now_ms();
            }
            let mut json = order.json();
            json["clientOrderId"] = json!(id);
            if route.0 == "DELETE" {
                let event = order_event(&order.clone(), id, "CANCELED", None, Decimal::ZERO);
                book.outbox.push(event);
            }
            ok(json)
        }
        ("GET", "/fapi/v1/userTrades") => {
            let order_id: Option<u64> = params.get("orderId").and_then(|o| o.parse().ok());
            let symbol = params.get("symbol").cloned().unwrap_or_default();
            let trades: Vec<Value> = book
                .trades
                .iter()
                .filter(|t| t["symbol"] == json!(symbol))
                .filter(|t| order_id.is_none_or(|id| t["orderId"] == json!(id)))
                .cloned()
                .collect();
            ok(Value::Array(trades))
        }
        ("GET", "/fapi/v1/positionSide/dual") => ok(json!({"dualSidePosition": book.dual_side})),
        ("POST", "/fapi/v1/marginType") => {
            let symbol = match known_symbol(params) {
                Ok(symbol) => symbol,
                Err(answer) => return answer,
            };
            let wanted = match params.get("marginType").map(String::as_str) {
                Some(m @ ("ISOLATED" | "CROSSED")) => m.to_owned(),
                _ => return error(400, -4044, "The margin type is invalid."),
            };
            let open = book.positions.get(&symbol).is_some_and(|p| !p.amt.is_zero());
            let config = book.configs.entry(symbol).or_insert((DEFAULT_LEVERAGE, "CROSSED".into()));
            if config.1 == wanted {
                return error(400, -4046, "No need to change margin type.");
            }
            if open {
                return error(
                    400,
                    -4048,
                    "Margin type cannot be changed if there exists position.",
                );
            }
            config.1 = wanted;
            ok(json!({"code": 200, "msg": "success"}))
        }
        ("POST", "/fapi/v1/leverage") => {
            let symbol = match known_symbol(params) {
                Ok(symbol) => symbol,
                Err(answer) => return answer,
            };
            let max = if symbol == "BTCUSDT" { 125 } else { 75 };
            let leverage = params.get("leverage").and_then(|l| l.parse::<u32>().ok());
            let Some(leverage) = leverage.filter(|l| (1..=max).contains(l)) else {
                let given = params.get("leverage").cloned().unwrap_or_default();
                return error(400, -4028, &format!("Leverage {given} is not valid"));
            };
            book.configs.entry(symbol.clone()).or_insert((DEFAULT_LEVERAGE, "CROSSED".into())).0 =
                leverage;
            let notional = if leverage > 100 { "50000" } else { "1000000" };
            ok(json!({"leverage": leverage, "maxNotionalValue": notional, "symbol": symbol}))
        }
        ("GET", "/fapi/v3/balance") => {
            let margin: Decimal = book
                .positions
                .iter()
                .map(|(symbol, p)| {
                    let leverage = book.configs.get(symbol).map_or(DEFAULT_LEVERAGE, |c| c.0);
                    p.amt.abs() * p.entry / Decimal::from(leverage)
                })
                .sum();
            let funding: Decimal = book
                .income
                .iter()
                .filter_map(|i| i["income"].as_str()?.parse::<Decimal>().ok())
                .sum();
            let wallet = WALLET_USDT + funding;
            let available = (wallet - margin).max(Decimal::ZERO);
            ok(json!([{
                "accountAlias": "SgsR", "asset": "USDT", "balance": s(wallet),
                "crossWalletBalance": s(wallet), "crossUnPnl": "0.00000000",
                "availableBalance": s(available), "maxWithdrawAmount": s(available),
                "marginAvailable": true, "updateTime": now_ms()
            }]))
        }
        ("GET", "/fapi/v3/positionRisk") => {
            let wanted = params.get("symbol");
            let risks: Vec<Value> = book
                .positions
                .iter()
                .filter(|(symbol, p)| !p.amt.is_zero() && wanted.is_none_or(|w| w == *symbol))
                .map(|(symbol, p)| {
                    let (leverage, margin) =
                        book.configs.get(symbol).cloned().unwrap_or((DEFAULT_LEVERAGE, "CROSSED".into()));
                    let lev = Decimal::from(leverage);
                    let notional = p.amt * price;
                    let isolated = margin == "ISOLATED";
                    let liquidation = if isolated {
                        let sign = if p.amt > Decimal::ZERO { -Decimal::ONE } else { Decimal::ONE };
                        (p.entry * (Decimal::ONE + sign / lev)).round_dp(8)
                    } else {
                        Decimal::ZERO
                    };
                    let initial = notional.abs() / lev;
                    json!({
                        "symbol": symbol, "positionSide": "BOTH", "positionAmt": s(p.amt),
                        "entryPrice": s(p.entry), "breakEvenPrice": s(p.entry), "markPrice": s(price),
                        "unRealizedProfit": s(p.amt * (price - p.entry)),
                        "liquidationPrice": s(liquidation),
                        "isolatedMargin": if isolated { s(initial) } else { "0".into() },
                        "notional": s(notional), "marginAsset": "USDT",
                        "isolatedWallet": if isolated { s(initial) } else { "0".into() },
                        "initialMargin": s(initial), "maintMargin": s(notional.abs() * Decimal::new(4, 3)),
                        "positionInitialMargin": s(initial), "openOrderInitialMargin": "0", "adl": 1,
                        "bidNotional": "0", "askNotional": "0", "updateTime": p.update_time
                    })
                })
                .collect();
            ok(Value::Array(risks))
        }
        ("GET", "/fapi/v1/symbolConfig") => {
            let wanted = params.get("symbol");
            let configs: Vec<Value> = book
                .configs
                .iter()
                .filter(|(symbol, _)| wanted.is_none_or(|w| w == *symbol))
                .map(|(symbol, (leverage, margin))| {
                    json!({"symbol": symbol, "marginType": margin, "isAutoAddMargin": "false",
                           "leverage": leverage, "maxNotionalValue": "1000000"})
                })
                .collect();
            ok(Value::Array(configs))
        }
        ("GET", "/fapi/v1/income") => {
            let symbol = params.get("symbol");
            let kind = params.get("incomeType");
            let start: i64 = params.get("startTime").and_then(|t| t.parse().ok()).unwrap_or(0);
            let limit: usize =
                params.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).min(1000);
            let mut income: Vec<Value> = book
                .income
                .iter()
                .filter(|i| symbol.is_none_or(|s| i["symbol"] == json!(s)))
                .filter(|i| kind.is_none_or(|k| i["incomeType"] == json!(k)))
                .filter(|i| i["time"].as_i64().unwrap_or(0) >= start)
                .cloned()
                .collect();
            income.sort_by_key(|i| i["time"].as_i64().unwrap_or(0));
            income.truncate(limit);
            ok(Value::Array(income))
        }
        _ => error(404, -1000, "Unknown endpoint."),
    }
}

fn exchange_info(now: i64) -> Value {
    let symbol = |symbol: &str, base: &str, tick: &str, step: &str| {
        json!({
            "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "status": "TRADING",
            "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT",
            "pricePrecision": 2, "quantityPrecision": 3,
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120", "stepSize": step},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": 4}
            ]
        })
    };
    json!({
        "timezone": "UTC", "serverTime": now, "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
        ],
        "symbols": [symbol("BTCUSDT", "BTC", "0.10", "0.001"), symbol("ETHUSDT", "ETH", "0.01", "0.001")]
    })
}
