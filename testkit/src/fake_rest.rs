//! A local fake of Binance's spot REST API (and the two public USD-M futures endpoints the client
//! reads), with scripted faults.
//!
//! It speaks plain HTTP/1.1 on 127.0.0.1, one request per connection (`Connection: close`), and
//! answers in the shapes of `../shared/fixtures/binance/rest_spot.jsonl` (new order with
//! `newOrderRespType=FULL`, query order, cancel order, error bodies, exchange info) and with the
//! signing rules of `../shared/fixtures/binance/signing.txt` (Binance's documented example key
//! pair, [`API_KEY`] and [`SECRET_KEY`]):
//!
//! - `GET /api/v3/time`, `GET /fapi/v1/time`: `{"serverTime":…}`, by the fake's clock (real time
//!   plus [`FakeRest::set_clock_skew_ms`]).
//! - `GET /api/v3/exchangeInfo`, `GET /fapi/v1/exchangeInfo`: BTCUSDT and ETHUSDT trading, plus
//!   LUNAUSDT not trading (spot status `BREAK`; futures status `SETTLING`, as Binance's futures
//!   API has no `BREAK`). Spot uses the `NOTIONAL` filter, futures the `MIN_NOTIONAL` filter with
//!   `notional`, as the real endpoints do.
//! - `POST`, `GET`, `DELETE /api/v3/order`: signed. Checked in Binance's order: the
//!   `X-MBX-APIKEY` header (`-2015`, HTTP 401), the `signature` over the query string followed by
//!   the body with the `signature` pair removed (`-1022`), `timestamp` against `recvWindow`
//!   (`-1021`: more than 1 s ahead of the server, or older than `recvWindow`).
//!
//! Orders live in memory, keyed by client order id. A `MARKET` order fills at once at
//! [`FakeRest::set_price`] with one fill paying 0.1 % in the quote asset; a `LIMIT` `GTC` order
//! rests (`NEW`) until the test calls [`FakeRest::fill_limit`]. Simplifications: every reused
//! `newClientOrderId` is `-2010 Duplicate order sent.` (the real exchange only refuses ids of
//! *open* orders), limits never cross by themselves, and `IOC`/`FOK` limits expire at once.
//!
//! Faults ([`Fault`], [`FakeRest::fail_next`]) apply to `POST /api/v3/order` requests that passed
//! the key, signature and timestamp checks. Every answer carries `X-MBX-USED-WEIGHT-1M` with a
//! running total (it never resets). Requests over 64 KiB, malformed request lines or queries get a
//! 4xx JSON answer; nothing a client sends can panic the server.

#![allow(dead_code)] // each test binary uses a different part of the fake

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::hmac_sha256_hex;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The API key of Binance's signing example (`signing.txt`).
pub const API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
/// The secret key of Binance's signing example (`signing.txt`).
pub const SECRET_KEY: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
/// Largest request (head and body) the fake reads.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a [`Fault::Hang`] holds the connection (unless the fake is dropped first).
pub const HANG_FOR: Duration = Duration::from_secs(30);
/// How long a client may take to send its whole request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Commission rate on fills, in the quote asset.
const COMMISSION_RATE: Decimal = Decimal::from_parts(1, 0, 0, false, 3);

/// The spot symbols: (symbol, base, quote, status).
const SYMBOLS: [(&str, &str, &str, &str); 3] = [
    ("BTCUSDT", "BTC", "USDT", "TRADING"),
    ("ETHUSDT", "ETH", "USDT", "TRADING"),
    ("LUNAUSDT", "LUNA", "USDT", "BREAK"),
];

/// The filters every symbol has (PRICE_FILTER, LOT_SIZE, NOTIONAL).
struct Filters {
    min_price: Decimal,
    max_price: Decimal,
    tick: Decimal,
    min_qty: Decimal,
    max_qty: Decimal,
    step: Decimal,
    min_notional: Decimal,
}

const FILTERS: Filters = Filters {
    min_price: Decimal::from_parts(1, 0, 0, false, 2),
    max_price: Decimal::from_parts(1_000_000, 0, 0, false, 0),
    tick: Decimal::from_parts(1, 0, 0, false, 2),
    min_qty: Decimal::from_parts(1, 0, 0, false, 5),
    max_qty: Decimal::from_parts(9_000, 0, 0, false, 0),
    step: Decimal::from_parts(1, 0, 0, false, 5),
    min_notional: Decimal::from_parts(5, 0, 0, false, 0),
};

/// What the next order request suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 503 `-1001`; the order is not stored.
    ServerError,
    /// The order is stored (and a market order filled) but the answer is HTTP 503 `-1001`: the
    /// client cannot know what happened.
    AcceptThenServerError,
    /// The request is read and never answered; the connection is held for [`HANG_FOR`] or until
    /// the fake is dropped. The order is not stored.
    Hang,
}

/// One order in the book.
#[derive(Debug, Clone)]
struct StoredOrder {
    symbol: String,
    order_id: u64,
    client_order_id: String,
    side: String,
    kind: String,
    time_in_force: String,
    /// Limit price; zero for a market order, as Binance reports it.
    price: Decimal,
    orig_qty: Decimal,
    executed_qty: Decimal,
    cumm_quote: Decimal,
    status: &'static str,
    time: i64,
    update_time: i64,
}

impl StoredOrder {
    fn is_open(&self) -> bool {
        matches!(self.status, "NEW" | "PARTIALLY_FILLED")
    }

    /// The `GET /api/v3/order` shape.
    fn query_json(&self) -> Value {
        json!({
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": d8(self.price),
            "origQty": d8(self.orig_qty),
            "executedQty": d8(self.executed_qty),
            "cummulativeQuoteQty": d8(self.cumm_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.kind,
            "side": self.side,
            "stopPrice": d8(Decimal::ZERO),
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
    fn new_order_json(&self, resp_type: &str, fills: &[Value]) -> Value {
        let mut v = json!({
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
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
    fn cancel_json(&self, cancel_id: &str, now: i64) -> Value {
        json!({
            "symbol": self.symbol,
            "origClientOrderId": self.client_order_id,
            "orderId": self.order_id,
            "orderListId": -1,
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

#[derive(Debug, Default)]
struct Book {
    orders: HashMap<String, StoredOrder>,
    next_order_id: u64,
    next_trade_id: u64,
    next_generated_id: u64,
}

#[derive(Debug)]
struct State {
    skew_ms: AtomicI64,
    price: Mutex<Decimal>,
    book: Mutex<Book>,
    faults: Mutex<VecDeque<Fault>>,
    posts: AtomicUsize,
    requests: AtomicUsize,
    weight: AtomicU32,
    /// Reported in `X-MBX-ORDER-COUNT-10S`.
    order_count_10s: AtomicU32,
}

/// A running fake on a free loopback port. Dropping it stops the server and releases hung
/// connections.
#[derive(Debug)]
pub struct FakeRest {
    url: String,
    state: Arc<State>,
    /// Dropped with the fake: every task waiting on a receiver ends.
    _shutdown: watch::Sender<()>,
}

impl FakeRest {
    /// Starts the server on 127.0.0.1 with a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            skew_ms: AtomicI64::new(0),
            price: Mutex::new(Decimal::ONE_HUNDRED),
            book: Mutex::new(Book { next_order_id: 28_457, ..Book::default() }),
            faults: Mutex::new(VecDeque::new()),
            posts: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            weight: AtomicU32::new(0),
            order_count_10s: AtomicU32::new(0),
        });
        let (shutdown, mut stop) = watch::channel(());
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        tokio::spawn(serve(tcp, s.clone(), stop.clone()));
                    }
                    _ = stop.changed() => return,
                }
            }
        });
        Self { url: format!("http://{addr}"), state, _shutdown: shutdown }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Moves the fake's clock: server time is real time plus `skew_ms`.
    pub fn set_clock_skew_ms(&self, skew_ms: i64) {
        self.state.skew_ms.store(skew_ms, Ordering::SeqCst);
    }

    /// The fake's time now, ms since the epoch.
    pub fn server_time_ms(&self) -> i64 {
        self.state.now_ms()
    }

    /// The price market orders fill at from now on (100 at start).
    pub fn set_price(&self, price: Decimal) {
        *lock(&self.state.price) = price;
    }

    /// The next `n` order placements (after they pass authentication) suffer `fault`, after any
    /// faults already queued.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        lock(&self.state.faults).extend(std::iter::repeat_n(fault, n));
    }

    /// Fills `qty` of the resting limit order `client_order_id` at its price. False (and nothing
    /// changes) when there is no such open limit order, or `qty` is not positive or more than
    /// what remains.
    pub fn fill_limit(&self, client_order_id: &str, qty: Decimal) -> bool {
        let now = self.state.now_ms();
        let mut book = lock(&self.state.book);
        let Some(order) = book.orders.get_mut(client_order_id) else { return false };
        if order.kind != "LIMIT" || !order.is_open() || qty <= Decimal::ZERO {
            return false;
        }
        if order.executed_qty + qty > order.orig_qty {
            return false;
        }
        order.executed_qty += qty;
        order.cumm_quote += qty * order.price;
        order.status =
            if order.executed_qty == order.orig_qty { "FILLED" } else { "PARTIALLY_FILLED" };
        order.update_time = now;
        true
    }

    /// `POST /api/v3/order` requests that passed the key, signature and timestamp checks
    /// (faulted ones included).
    pub fn posts(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }

    /// Requests read so far, any path, well-formed or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// What every answer reports in `X-MBX-ORDER-COUNT-10S` from now on.
    pub fn set_order_count_10s(&self, count: u32) {
        self.state.order_count_10s.store(count, Ordering::SeqCst);
    }

    /// The running `X-MBX-USED-WEIGHT-1M` total.
    pub fn used_weight(&self) -> u32 {
        self.state.weight.load(Ordering::SeqCst)
    }

    /// Sets the running weight total (to push a client towards its budget).
    pub fn set_used_weight(&self, weight: u32) {
        self.state.weight.store(weight, Ordering::SeqCst);
    }

    /// The stored order, in the `GET /api/v3/order` shape.
    pub fn order(&self, client_order_id: &str) -> Option<Value> {
        lock(&self.state.book).orders.get(client_order_id).map(StoredOrder::query_json)
    }
}

/// Locks, ignoring poisoning (a panicking test thread must not take the server down with it).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A decimal as Binance writes it: a string with 8 decimals.
fn d8(d: Decimal) -> String {
    format!("{:.8}", d.round_dp(8))
}

fn merge(into: &mut Value, more: Value) {
    if let (Value::Object(into), Value::Object(more)) = (into, more) {
        into.extend(more);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A parsed request.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    /// The raw (still percent-encoded) query string, without `?`.
    query: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An answer: HTTP status and JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self { status: 200, body: body.to_string() }
    }

    fn error(status: u16, code: i64, msg: &str) -> Self {
        Self { status, body: json!({ "code": code, "msg": msg }).to_string() }
    }

    fn bad(code: i64, msg: &str) -> Self {
        Self::error(400, code, msg)
    }

    fn mandatory(param: &str) -> Self {
        Self::bad(
            -1102,
            &format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    fn server_error() -> Self {
        Self::error(503, -1001, "Internal error; unable to process your request. Please try again.")
    }
}

enum Reply {
    Answer(Answer),
    /// Say nothing; hold the connection.
    Hang,
}

async fn serve(mut tcp: TcpStream, state: Arc<State>, mut stop: watch::Receiver<()>) {
    let read = tokio::time::timeout(READ_TIMEOUT, read_request(&mut tcp)).await;
    let reply = match read {
        Err(_) | Ok(Err(None)) => return,
        Ok(Err(Some(bad))) => {
            state.requests.fetch_add(1, Ordering::SeqCst);
            state.weight.fetch_add(1, Ordering::SeqCst);
            Reply::Answer(bad)
        }
        Ok(Ok(request)) => {
            state.requests.fetch_add(1, Ordering::SeqCst);
            state.handle(&request)
        }
    };
    match reply {
        Reply::Answer(answer) => {
            let _ = write_answer(&mut tcp, &state, &answer).await;
        }
        Reply::Hang => {
            tokio::select! {
                () = tokio::time::sleep(HANG_FOR) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Reads one request. `Err(None)`: the peer went away; `Err(Some(_))`: answer this and close.
async fn read_request(tcp: &mut TcpStream) -> Result<Request, Option<Answer>> {
    let too_large = || Some(Answer::error(413, -1000, "Request larger than 64 KiB."));
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            return Err(too_large());
        }
        let n = tcp.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                None
            } else {
                Some(Answer::bad(-1000, "Incomplete request head."))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let malformed = || Some(Answer::bad(-1000, "Malformed request."));
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| malformed())?.to_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(malformed());
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return Err(malformed()) };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if header("transfer-encoding").is_some() {
        return Err(Some(Answer::error(411, -1000, "Send a Content-Length, not chunks.")));
    }
    let length = match header("content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| malformed())?,
    };
    let body_start = head_end + 4;
    if body_start.saturating_add(length) > MAX_REQUEST {
        return Err(too_large());
    }
    while buf.len() < body_start + length {
        let n = tcp.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(Some(Answer::bad(-1000, "Body shorter than Content-Length.")));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = std::str::from_utf8(&buf[body_start..body_start + length])
        .map_err(|_| malformed())?
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}

async fn write_answer(tcp: &mut TcpStream, state: &State, answer: &Answer) -> std::io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut out = String::with_capacity(answer.body.len() + 200);
    let _ = write!(
        out,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\n\
         Content-Length: {}\r\nX-MBX-USED-WEIGHT-1M: {}\r\nX-MBX-ORDER-COUNT-10S: {}\r\n\
         Connection: close\r\n\r\n{}",
        answer.status,
        answer.body.len(),
        state.weight.load(Ordering::SeqCst),
        state.order_count_10s.load(Ordering::SeqCst),
        answer.body,
    );
    tcp.write_all(out.as_bytes()).await?;
    tcp.flush().await?;
    tcp.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// Binance

/// Percent-decodes a query component (`+` is a space). `None` for a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `raw` without its `signature=` pair, and the signature.
fn split_signature(raw: &str) -> (String, Option<String>) {
    let mut signature = None;
    let rest: Vec<&str> = raw
        .split('&')
        .filter(|pair| match pair.strip_prefix("signature=") {
            Some(sig) => {
                signature = Some(sig.to_owned());
                false
            }
            None => true,
        })
        .collect();
    (rest.join("&"), signature)
}

/// The decoded parameters of the query string and body together.
fn parse_params(request: &Request) -> Result<HashMap<String, String>, Answer> {
    let mut params = HashMap::new();
    for raw in [request.query.as_str(), request.body.as_str()] {
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) else {
                return Err(Answer::bad(-1100, "Illegal characters found in a parameter."));
            };
            if params.insert(k, v).is_some() {
                return Err(Answer::bad(-1101, "Duplicate values for a parameter detected."));
            }
        }
    }
    Ok(params)
}

fn decimal_param(params: &HashMap<String, String>, name: &str) -> Result<Decimal, Answer> {
    params
        .get(name)
        .and_then(|v| v.parse::<Decimal>().ok())
        .filter(|d| *d > Decimal::ZERO)
        .ok_or_else(|| Answer::mandatory(name))
}

impl State {
    fn now_ms(&self) -> i64 {
        real_now_ms() + self.skew_ms.load(Ordering::SeqCst)
    }

    fn add_weight(&self, weight: u32) {
        self.weight.fetch_add(weight, Ordering::SeqCst);
    }

    fn handle(&self, request: &Request) -> Reply {
        let method = request.method.as_str();
        let answer = match (method, request.path.as_str()) {
            ("GET", "/api/v3/time" | "/fapi/v1/time") => {
                self.add_weight(1);
                Answer::ok(json!({ "serverTime": self.now_ms() }))
            }
            ("GET", "/api/v3/exchangeInfo") => {
                self.add_weight(20);
                Answer::ok(spot_exchange_info(self.now_ms()))
            }
            ("GET", "/fapi/v1/exchangeInfo") => {
                self.add_weight(1);
                Answer::ok(futures_exchange_info(self.now_ms()))
            }
            ("POST" | "GET" | "DELETE", "/api/v3/order") => {
                self.add_weight(if method == "GET" { 4 } else { 1 });
                return self.signed(request);
            }
            (_, "/api/v3/order" | "/api/v3/time" | "/api/v3/exchangeInfo") => {
                self.add_weight(1);
                Answer::error(405, -1000, "Method not allowed.")
            }
            _ => {
                self.add_weight(1);
                Answer::error(404, -1000, "Unknown path.")
            }
        };
        Reply::Answer(answer)
    }

    /// A signed order request: key, signature and timestamp, then the order book.
    fn signed(&self, request: &Request) -> Reply {
        match self.authenticate(request) {
            Err(answer) => Reply::Answer(answer),
            Ok(params) => match request.method.as_str() {
                "POST" => self.post(&params),
                "GET" => Reply::Answer(self.query(&params).unwrap_or_else(|e| e)),
                _ => Reply::Answer(self.cancel(&params).unwrap_or_else(|e| e)),
            },
        }
    }

    fn authenticate(&self, request: &Request) -> Result<HashMap<String, String>, Answer> {
        let params = parse_params(request)?;
        if request.header("x-mbx-apikey") != Some(API_KEY) {
            return Err(Answer::error(
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ));
        }
        let (query, query_sig) = split_signature(&request.query);
        let (body, body_sig) = split_signature(&request.body);
        let Some(signature) = query_sig.or(body_sig) else {
            return Err(Answer::mandatory("signature"));
        };
        let payload = format!("{query}{body}");
        let valid = hmac_sha256_hex(SECRET_KEY.as_bytes(), payload.as_bytes())
            .eq_ignore_ascii_case(&signature);
        if !valid {
            return Err(Answer::bad(-1022, "Signature for this request is not valid."));
        }
        let timestamp = params
            .get("timestamp")
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| Answer::mandatory("timestamp"))?;
        let recv_window = match params.get("recvWindow") {
            None => 5_000,
            Some(v) => match v.parse::<i64>() {
                Ok(w) if (1..=60_000).contains(&w) => w,
                _ => return Err(Answer::bad(-1131, "recvWindow must be less than 60000")),
            },
        };
        let now = self.now_ms();
        if timestamp > now + 1_000 {
            return Err(Answer::bad(
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ));
        }
        if now - timestamp > recv_window {
            return Err(Answer::bad(
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ));
        }
        Ok(params)
    }

    fn post(&self, params: &HashMap<String, String>) -> Reply {
        self.posts.fetch_add(1, Ordering::SeqCst);
        let fault = lock(&self.faults).pop_front();
        match fault {
            Some(Fault::Hang) => Reply::Hang,
            Some(Fault::ServerError) => Reply::Answer(Answer::server_error()),
            Some(Fault::AcceptThenServerError) => {
                let _ = self.new_order(params);
                Reply::Answer(Answer::server_error())
            }
            None => Reply::Answer(self.new_order(params).unwrap_or_else(|e| e)),
        }
    }

    fn new_order(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let symbol = params.get("symbol").ok_or_else(|| Answer::mandatory("symbol"))?;
        let Some(&(_, _, quote, status)) = SYMBOLS.iter().find(|s| s.0 == symbol) else {
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
        let kind = match params.get("type").map(String::as_str) {
            Some(t @ ("MARKET" | "LIMIT")) => t.to_owned(),
            Some(_) => return Err(Answer::bad(-1116, "Invalid orderType.")),
            None => return Err(Answer::mandatory("type")),
        };
        let qty = decimal_param(params, "quantity")?;
        let market_price = *lock(&self.price);
        let (price, time_in_force) = if kind == "LIMIT" {
            let price = decimal_param(params, "price")?;
            let tif = match params.get("timeInForce").map(String::as_str) {
                Some(t @ ("GTC" | "IOC" | "FOK")) => t.to_owned(),
                Some(_) => return Err(Answer::bad(-1115, "Invalid timeInForce.")),
                None => return Err(Answer::mandatory("timeInForce")),
            };
            (price, tif)
        } else {
            for extra in ["price", "timeInForce"] {
                if params.contains_key(extra) {
                    return Err(Answer::bad(
                        -1106,
                        &format!("Parameter '{extra}' sent when not required."),
                    ));
                }
            }
            (Decimal::ZERO, "GTC".to_owned())
        };
        let f = &FILTERS;
        if qty < f.min_qty || qty > f.max_qty || !(qty % f.step).is_zero() {
            return Err(Answer::bad(-1013, "Filter failure: LOT_SIZE"));
        }
        if kind == "LIMIT"
            && (price < f.min_price || price > f.max_price || !(price % f.tick).is_zero())
        {
            return Err(Answer::bad(-1013, "Filter failure: PRICE_FILTER"));
        }
        let notional_price = if kind == "LIMIT" { price } else { market_price };
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
            orig_qty: qty,
            executed_qty: Decimal::ZERO,
            cumm_quote: Decimal::ZERO,
            status: "NEW",
            time: now,
            update_time: now,
        };
        let mut fills = Vec::new();
        if order.kind == "MARKET" {
            let quote_qty = qty * market_price;
            book.next_trade_id += 1;
            fills.push(json!({
                "price": d8(market_price),
                "qty": d8(qty),
                "commission": d8(quote_qty * COMMISSION_RATE),
                "commissionAsset": quote,
                "tradeId": book.next_trade_id,
            }));
            order.executed_qty = qty;
            order.cumm_quote = quote_qty;
            order.status = "FILLED";
        } else if order.time_in_force != "GTC" {
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

    fn query(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
        let mut book = lock(&self.book);
        match Self::find(&mut book, params)? {
            Some(order) => Ok(Answer::ok(order.query_json())),
            None => Err(Answer::bad(-2013, "Order does not exist.")),
        }
    }

    fn cancel(&self, params: &HashMap<String, String>) -> Result<Answer, Answer> {
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

fn spot_symbol(symbol: &str, base: &str, quote: &str, status: &str) -> Value {
    json!({
        "symbol": symbol,
        "status": status,
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": true,
        "ocoAllowed": true,
        "otoAllowed": true,
        "quoteOrderQtyMarketAllowed": true,
        "allowTrailingStop": true,
        "cancelReplaceAllowed": true,
        "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": d8(FILTERS.min_price),
             "maxPrice": d8(FILTERS.max_price), "tickSize": d8(FILTERS.tick)},
            {"filterType": "LOT_SIZE", "minQty": d8(FILTERS.min_qty),
             "maxQty": d8(FILTERS.max_qty), "stepSize": d8(FILTERS.step)},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": d8(Decimal::ZERO),
             "maxQty": "83.43584621", "stepSize": d8(Decimal::ZERO)},
            {"filterType": "NOTIONAL", "minNotional": d8(FILTERS.min_notional),
             "applyMinToMarket": true, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": false, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

fn spot_exchange_info(now: i64) -> Value {
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ],
        "exchangeFilters": [],
        "symbols": SYMBOLS.iter().map(|s| spot_symbol(s.0, s.1, s.2, s.3)).collect::<Vec<_>>(),
    })
}

fn futures_symbol(symbol: &str, base: &str, quote: &str, status: &str) -> Value {
    json!({
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4_133_404_800_000_i64,
        "onboardDate": 1_569_398_400_000_i64,
        "status": status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 2,
        "quantityPrecision": 5,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000",
             "tickSize": "0.01"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000",
             "stepSize": "0.00001"},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00001", "maxQty": "120",
             "stepSize": "0.00001"},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
             "multiplierDown": "0.9500", "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    })
}

fn futures_exchange_info(now: i64) -> Value {
    let status = |s: &str| if s == "TRADING" { "TRADING" } else { "SETTLING" };
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": true, "autoAssetExchange": "-10000"}],
        "symbols": SYMBOLS
            .iter()
            .map(|s| futures_symbol(s.0, s.1, s.2, status(s.3)))
            .collect::<Vec<_>>(),
    })
}
