//! A fake Bybit v5 REST server on loopback, for the Bybit router's tests.
//!
//! It checks what Bybit checks, as its documentation states: the four `X-BAPI-*` headers, the
//! signature (hex HMAC-SHA256 of `timestamp + api_key + recv_window + payload`, the payload
//! being the raw query string of a GET and the raw body of a POST), and the timestamp rule
//! `server_time - recv_window <= timestamp < server_time + 1000` (`10002` otherwise). Orders
//! are kept by `orderLinkId` (a second create with the same id is refused, `170141`); a market
//! order fills at once at the configured price, a limit order rests until [`FakeBybit::fill`].
//! Answers have Bybit's envelope (`retCode`, `retMsg`, `result`, `time`) and its rate-limit
//! headers. Faults can be injected: a 502, a dropped connection, or `10006`.
//!
//! Derivatives (`category=linear`): a one-way position per symbol that fills move; a
//! `reduceOnly` order that would open, grow or flip it is refused (`110017`); leverage
//! (`set-leverage`, `110043` when unchanged), the unified account's margin mode (`account/info`,
//! `set-margin-mode`), `position/list` and funding executions (`execution/list?execType=Funding`).
//! Every fill is pushed on the fake's private stream ([`FakeBybitPrivate`]) as Bybit pushes it:
//! an `execution` with its fee (spot: in the coin received), the `order`, and on linear the
//! `position`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fake_bybit_private::FakeBybitPrivate;
use crate::hmac_sha256_hex;

/// Spot's fee rate in the fake (taken in the coin received).
pub const SPOT_FEE_RATE: &str = "0.001";
/// Linear's taker fee rate in the fake (taken in USDT).
pub const LINEAR_FEE_RATE: &str = "0.00055";

/// The API key the fake accepts.
pub const API_KEY: &str = "K8x2Lq9Vt4Wm7Pz3Rb";
/// Its secret.
pub const API_SECRET: &str = "Qh7Zr2Kd9Xw4Mn6Bv1Tc8Ly3Pf5Gs0Ja7Ue2W";

/// A fault for the next requests to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BybitFault {
    /// HTTP 502 after doing the work (the outcome is unknown to the client).
    BadGateway,
    /// Close the connection without an answer, after doing the work.
    Drop,
    /// `retCode` 10006 "Too many visits!", with `X-Bapi-Limit-Status: 0`, without doing it.
    TooManyVisits,
}

#[derive(Debug, Default)]
struct Book {
    orders: HashMap<String, Value>,
    /// The order of creation, for `realtime` listings.
    created: Vec<String>,
    faults: Vec<BybitFault>,
    /// Linear positions: signed size and entry price, by symbol.
    positions: HashMap<String, (Decimal, Decimal)>,
    /// Leverage by symbol (Bybit's default 10 until set).
    leverage: HashMap<String, u32>,
    /// The unified account's margin mode (`REGULAR_MARGIN` until set).
    margin_mode: Option<String>,
    /// Funding executions, as `execution/list` lists them.
    funding: Vec<Value>,
    /// Trade executions, oldest first.
    trades: Vec<Value>,
    /// Executions so far (for their ids).
    executions: u64,
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
    /// Signed texts the fake verified, for tests to read.
    signed: Mutex<Vec<String>>,
    set_leverage_calls: AtomicUsize,
    margin_switches: AtomicUsize,
    /// Signed order look-ups (`order/realtime`, `order/history`).
    queries: AtomicUsize,
    private: FakeBybitPrivate,
}

/// The running fake.
#[derive(Debug, Clone)]
pub struct FakeBybit {
    url: String,
    state: Arc<State>,
}

impl FakeBybit {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let private = FakeBybitPrivate::start().await;
        let state = Arc::new(State {
            book: Mutex::new(Book::default()),
            skew_ms: AtomicI64::new(0),
            price: Mutex::new(Decimal::new(1_657_850, 2)),
            requests: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            time_requests: AtomicUsize::new(0),
            clock_refusals: AtomicUsize::new(0),
            signed: Mutex::new(Vec::new()),
            set_leverage_calls: AtomicUsize::new(0),
            margin_switches: AtomicUsize::new(0),
            queries: AtomicUsize::new(0),
            private,
        });
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, served.clone()));
            }
        });
        Self { url, state }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Moves the server's clock by `skew_ms` from local time.
    pub fn set_clock_skew_ms(&self, skew_ms: i64) {
        self.state.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// The price market orders fill at.
    pub fn set_price(&self, price: Decimal) {
        *self.state.price.lock().unwrap() = price;
    }

    /// The next requests meet `fault`, one each.
    pub fn fail_next(&self, n: usize, fault: BybitFault) {
        self.state.book.lock().unwrap().faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Fills `qty` more of the resting order `order_link_id`; false when there is none open.
    pub fn fill(&self, order_link_id: &str, qty: Decimal) -> bool {
        let price = *self.state.price.lock().unwrap();
        let mut book = self.state.book.lock().unwrap();
        let Some(order) = book.orders.get(order_link_id) else { return false };
        if !matches!(order["orderStatus"].as_str(), Some("New" | "PartiallyFilled")) {
            return false;
        }
        fill_order(&self.state, &mut book, order_link_id, qty, price);
        true
    }

    /// The private stream that pushes this account's fills.
    pub fn private(&self) -> &FakeBybitPrivate {
        &self.state.private
    }

    /// The linear position on `symbol`: signed size and entry price.
    pub fn position(&self, symbol: &str) -> (Decimal, Decimal) {
        let book = self.state.book.lock().unwrap();
        book.positions.get(symbol).copied().unwrap_or_default()
    }

    /// Sets the linear position on `symbol` (as if opened before the test).
    pub fn set_position(&self, symbol: &str, qty: Decimal, entry: Decimal) {
        self.state.book.lock().unwrap().positions.insert(symbol.to_owned(), (qty, entry));
    }

    /// `symbol`'s leverage as last set (`None` before any `set-leverage`).
    pub fn leverage(&self, symbol: &str) -> Option<u32> {
        self.state.book.lock().unwrap().leverage.get(symbol).copied()
    }

    /// The account's margin mode (`REGULAR_MARGIN`, `ISOLATED_MARGIN`).
    pub fn margin_mode(&self) -> String {
        margin_mode(&self.state.book.lock().unwrap())
    }

    /// Signed order look-ups received (`GET /v5/order/realtime` and `/v5/order/history`).
    pub fn queries(&self) -> usize {
        self.state.queries.load(Ordering::Relaxed)
    }

    /// `set-leverage` requests received (changed or not).
    pub fn set_leverage_calls(&self) -> usize {
        self.state.set_leverage_calls.load(Ordering::Relaxed)
    }

    /// `set-margin-mode` requests received.
    pub fn margin_switches(&self) -> usize {
        self.state.margin_switches.load(Ordering::Relaxed)
    }

    /// Books a funding execution on `symbol`: `exec_fee` paid (negative: received) at `time_ms`,
    /// and pushes it on the private stream.
    pub fn add_funding(&self, symbol: &str, exec_fee: &str, time_ms: u64) {
        let mut book = self.state.book.lock().unwrap();
        book.executions += 1;
        let exec = json!({"category": "linear", "symbol": symbol, "execFee": exec_fee,
            "execId": format!("funding-{}", book.executions), "execPrice": "0", "execQty": "0",
            "execType": "Funding", "execValue": "0", "isMaker": false, "feeRate": "0.0001",
            "leavesQty": "0", "orderId": "", "orderLinkId": "", "orderPrice": "0", "orderQty": "0",
            "orderType": "UNKNOWN", "side": "Sell", "execTime": time_ms.to_string(),
            "isLeverage": "0", "feeCurrency": ""});
        book.funding.push(exec.clone());
        self.state.private.publish("execution", json!([exec]));
    }

    /// One order as the fake holds it.
    pub fn order(&self, order_link_id: &str) -> Option<Value> {
        self.state.book.lock().unwrap().orders.get(order_link_id).cloned()
    }

    /// Requests served, of any kind.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// `POST /v5/order/create` requests that created an order.
    pub fn creates(&self) -> usize {
        self.state.creates.load(Ordering::Relaxed)
    }

    /// `GET /v5/market/time` requests.
    pub fn time_requests(&self) -> usize {
        self.state.time_requests.load(Ordering::Relaxed)
    }

    /// Requests refused with `10002`.
    pub fn clock_refusals(&self) -> usize {
        self.state.clock_refusals.load(Ordering::Relaxed)
    }

    /// The texts whose signatures the fake verified, in order.
    pub fn signed_texts(&self) -> Vec<String> {
        self.state.signed.lock().unwrap().clone()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn execute(order: &mut Value, qty: Decimal, price: Decimal) {
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

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let Some(request) = read_request(&mut stream).await else { return };
    state.requests.fetch_add(1, Ordering::Relaxed);
    let fault = {
        let mut book = state.book.lock().unwrap();
        (!book.faults.is_empty()).then(|| book.faults.remove(0))
    };
    let server_time = now_ms() + state.skew_ms.load(Ordering::Relaxed);
    let (status, body, limit_left) = match fault {
        Some(BybitFault::TooManyVisits) => {
            (200, envelope(10006, "Too many visits!", json!({}), server_time), 0)
        }
        _ => {
            let (code, msg, result) = answer(&request, &state, server_time);
            (200, envelope(code, &msg, result, server_time), 99)
        }
    };
    match fault {
        Some(BybitFault::Drop) => return,
        Some(BybitFault::BadGateway) => {
            let text = "<html>502 Bad Gateway</html>";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
        _ => {}
    }
    let reset = server_time + 1_000;
    let text = body.to_string();
    let _ = stream
        .write_all(
            format!(
                "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Bapi-Limit: 100\r\nX-Bapi-Limit-Status: {limit_left}\r\nX-Bapi-Limit-Reset-Timestamp: {reset}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
            .as_bytes(),
        )
        .await;
}

fn envelope(code: i64, msg: &str, result: Value, time: i64) -> Value {
    json!({"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": time})
}

type Answer = (i64, String, Value);

fn ok(result: Value) -> Answer {
    (0, "OK".into(), result)
}

fn refuse(code: i64, msg: &str) -> Answer {
    (code, msg.into(), json!({}))
}

fn answer(request: &Request, state: &State, server_time: i64) -> Answer {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v5/market/time") => {
            state.time_requests.fetch_add(1, Ordering::Relaxed);
            let secs = server_time / 1000;
            ok(
                json!({"timeSecond": secs.to_string(), "timeNano": (server_time as i128 * 1_000_000).to_string()}),
            )
        }
        ("GET", "/v5/market/instruments-info")
            if param(&request.query, "category").as_deref() == Some("linear") =>
        {
            ok(json!({
                "category": "linear",
                "list": [{"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "status": "Trading",
                    "baseCoin": "BTC", "quoteCoin": "USDT", "settleCoin": "USDT",
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
                    "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001",
                        "qtyStep": "0.001", "postOnlyMaxOrderQty": "1190.000",
                        "maxMktOrderQty": "500.000", "minNotionalValue": "5"}}],
                "nextPageCursor": ""
            }))
        }
        ("GET", "/v5/market/instruments-info") => ok(json!({
            "category": param(&request.query, "category").unwrap_or_default(),
            "list": [{"symbol": "BTCUSDT", "status": "Trading", "baseCoin": "BTC", "quoteCoin": "USDT",
                "lotSizeFilter": {"basePrecision": "0.000001", "minOrderQty": "0.000048",
                    "maxOrderQty": "71.73956243", "minOrderAmt": "1", "maxOrderAmt": "2000000"},
                "priceFilter": {"tickSize": "0.01"}}],
            "nextPageCursor": ""
        })),
        (method, path) => {
            let payload = if method == "GET" { &request.query } else { &request.body };
            if let Err(refusal) = authenticate(request, payload, state, server_time) {
                return refusal;
            }
            signed(method, path, request, state)
        }
    }
}

fn authenticate(
    request: &Request,
    payload: &str,
    state: &State,
    server_time: i64,
) -> Result<(), Answer> {
    let header = |name: &str| request.headers.get(name).cloned().unwrap_or_default();
    let (key, timestamp, window, sign) = (
        header("x-bapi-api-key"),
        header("x-bapi-timestamp"),
        header("x-bapi-recv-window"),
        header("x-bapi-sign"),
    );
    if key != API_KEY {
        return Err(refuse(10003, "API key is invalid."));
    }
    let (Ok(ts), Ok(recv_window)) = (timestamp.parse::<i64>(), window.parse::<i64>()) else {
        return Err(refuse(10001, "params error: timestamp or recv_window"));
    };
    let text = format!("{timestamp}{key}{window}{payload}");
    if hmac_sha256_hex(API_SECRET.as_bytes(), text.as_bytes()) != sign {
        return Err(refuse(10004, &format!("error sign! origin_string[{text}]")));
    }
    if !(server_time - recv_window <= ts && ts < server_time + 1000) {
        state.clock_refusals.fetch_add(1, Ordering::Relaxed);
        return Err(refuse(
            10002,
            &format!(
                "invalid request, please check your server timestamp or recv_window param. req_timestamp[{ts}],server_timestamp[{server_time}],recv_window[{recv_window}]"
            ),
        ));
    }
    state.signed.lock().unwrap().push(text);
    Ok(())
}

fn signed(method: &str, path: &str, request: &Request, state: &State) -> Answer {
    match (method, path) {
        ("POST", "/v5/order/create") => create(request, state),
        ("POST", "/v5/order/cancel") => cancel(request, state),
        ("GET", "/v5/order/realtime" | "/v5/order/history") => {
            state.queries.fetch_add(1, Ordering::Relaxed);
            let link = param(&request.query, "orderLinkId").unwrap_or_default();
            let closed_only = path == "/v5/order/history"
                || param(&request.query, "openOnly").as_deref() == Some("1");
            let book = state.book.lock().unwrap();
            let list: Vec<Value> = book
                .created
                .iter()
                .rev()
                .filter(|id| link.is_empty() || **id == link)
                .filter_map(|id| book.orders.get(id))
                .filter(|o| {
                    let open = matches!(o["orderStatus"].as_str(), Some("New" | "PartiallyFilled"));
                    open != closed_only
                })
                .cloned()
                .collect();
            ok(
                json!({"list": list, "nextPageCursor": "", "category": param(&request.query, "category")}),
            )
        }
        ("GET", "/v5/account/wallet-balance") => ok(json!({"list": [{"accountType": "UNIFIED",
            "coin": [{"coin": "USDT", "walletBalance": "1000.5", "locked": "100.25"},
                     {"coin": "BTC", "walletBalance": "0.01", "locked": "0"}]}]})),
        ("POST", "/v5/position/set-leverage") => set_leverage(request, state),
        ("GET", "/v5/account/info") => {
            let book = state.book.lock().unwrap();
            ok(json!({"marginMode": margin_mode(&book), "unifiedMarginStatus": 5,
                "isMasterTrader": false, "spotHedgingStatus": "OFF",
                "updatedTime": now_ms().to_string(), "dcpStatus": "OFF", "timeWindow": 10,
                "smpGroup": 0}))
        }
        ("POST", "/v5/account/set-margin-mode") => {
            state.margin_switches.fetch_add(1, Ordering::Relaxed);
            let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
                return refuse(10001, "params error: body is not JSON");
            };
            let mode = body["setMarginMode"].as_str().unwrap_or_default();
            if !matches!(mode, "ISOLATED_MARGIN" | "REGULAR_MARGIN" | "PORTFOLIO_MARGIN") {
                return refuse(10001, "params error: setMarginMode");
            }
            state.book.lock().unwrap().margin_mode = Some(mode.to_owned());
            ok(json!({"reasons": []}))
        }
        ("GET", "/v5/position/list") => {
            let category = param(&request.query, "category").unwrap_or_default();
            let settle = param(&request.query, "settleCoin");
            let symbol = param(&request.query, "symbol");
            if category != "linear" || (settle.is_none() && symbol.is_none()) {
                return refuse(10001, "params error: category linear and symbol or settleCoin");
            }
            let price = *state.price.lock().unwrap();
            let book = state.book.lock().unwrap();
            let list: Vec<Value> = book
                .positions
                .iter()
                .filter(|(s, _)| symbol.as_deref().is_none_or(|want| want == s.as_str()))
                .filter(|(s, _)| settle.as_deref().is_none_or(|c| s.ends_with(c)))
                .map(|(s, (qty, entry))| position_json(&book, s, *qty, *entry, price))
                .collect();
            ok(json!({"list": list, "nextPageCursor": "", "category": "linear"}))
        }
        ("GET", "/v5/execution/list") => {
            let query = &request.query;
            let symbol = param(query, "symbol");
            let link = param(query, "orderLinkId");
            let exec_type = param(query, "execType");
            let category = param(query, "category").unwrap_or_default();
            let bound = |name: &str| param(query, name).and_then(|v| v.parse::<u64>().ok());
            let (start, end) = (bound("startTime"), bound("endTime"));
            if let (Some(start), Some(end)) = (start, end)
                && end.saturating_sub(start) > 7 * 24 * 3600 * 1000
            {
                return refuse(10001, "params error: the time range is longer than 7 days");
            }
            let book = state.book.lock().unwrap();
            // Newest first, as Bybit sorts them.
            let mut list: Vec<Value> = book
                .funding
                .iter()
                .chain(book.trades.iter())
                .filter(|e| e["category"] == category.as_str())
                .filter(|e| symbol.as_deref().is_none_or(|s| e["symbol"] == s))
                .filter(|e| link.as_deref().is_none_or(|l| e["orderLinkId"] == l))
                .filter(|e| exec_type.as_deref().is_none_or(|t| e["execType"] == t))
                .filter(|e| {
                    let t = e["execTime"].as_str().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
                    start.is_none_or(|s| s <= t) && end.is_none_or(|e| t <= e)
                })
                .cloned()
                .collect();
            list.reverse();
            list.sort_by_key(|e| {
                std::cmp::Reverse(e["execTime"].as_str().and_then(|t| t.parse::<u64>().ok()))
            });
            ok(json!({"list": list, "nextPageCursor": "", "category": category}))
        }
        _ => refuse(10001, "unknown endpoint"),
    }
}

fn margin_mode(book: &Book) -> String {
    book.margin_mode.clone().unwrap_or_else(|| "REGULAR_MARGIN".to_owned())
}

fn set_leverage(request: &Request, state: &State) -> Answer {
    state.set_leverage_calls.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return refuse(10001, "params error: body is not JSON");
    };
    let (buy, sell) = (body["buyLeverage"].as_str(), body["sellLeverage"].as_str());
    let (Some(buy), Some(sell)) = (buy.and_then(|v| v.parse::<u32>().ok()), sell) else {
        return refuse(10001, "params error: buyLeverage and sellLeverage are strings");
    };
    if body["category"] != "linear" || sell != buy.to_string() || !(1..=100).contains(&buy) {
        return refuse(10001, "params error: leverage");
    }
    let symbol = body["symbol"].as_str().unwrap_or_default().to_owned();
    let mut book = state.book.lock().unwrap();
    if book.leverage.insert(symbol, buy) == Some(buy) {
        return refuse(110_043, "leverage not modified");
    }
    ok(json!({}))
}

fn position_json(book: &Book, symbol: &str, qty: Decimal, entry: Decimal, mark: Decimal) -> Value {
    let side = if qty > Decimal::ZERO {
        "Buy"
    } else if qty < Decimal::ZERO {
        "Sell"
    } else {
        ""
    };
    let leverage = book.leverage.get(symbol).copied().unwrap_or(10);
    let pnl = (mark - entry) * qty;
    // A rough liquidation price: the entry moved against the position by 1 / leverage.
    let liq = if qty.is_zero() {
        String::new()
    } else {
        let step = entry / Decimal::from(leverage);
        let liq = if qty > Decimal::ZERO { entry - step } else { entry + step };
        liq.normalize().to_string()
    };
    json!({"positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": symbol,
        "side": side, "size": qty.abs().normalize().to_string(),
        "avgPrice": entry.normalize().to_string(),
        "positionValue": (qty.abs() * entry).normalize().to_string(), "tradeMode": 0,
        "autoAddMargin": 0, "positionStatus": "Normal", "leverage": leverage.to_string(),
        "markPrice": mark.normalize().to_string(), "liqPrice": liq, "bustPrice": "",
        "positionIM": "0", "positionMM": "0", "positionBalance": "0", "tpslMode": "Full",
        "takeProfit": "0", "stopLoss": "0", "trailingStop": "0",
        "unrealisedPnl": pnl.normalize().to_string(), "curRealisedPnl": "0",
        "cumRealisedPnl": "0", "adlRankIndicator": 2, "isReduceOnly": false,
        "createdTime": "1676538056258", "updatedTime": now_ms().to_string(), "seq": 1,
        "category": "linear"})
}

/// Fills `qty` of order `link` at `price`: the order's figures, the linear position, and the
/// private stream's `execution`, `order` and `position` pushes.
fn fill_order(state: &State, book: &mut Book, link: &str, qty: Decimal, price: Decimal) {
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

fn dec_of(v: &Value) -> Decimal {
    v.as_str().unwrap_or("0").parse().unwrap_or_default()
}

fn create(request: &Request, state: &State) -> Answer {
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
    if book.orders.contains_key(&link) {
        return refuse(170_141, "Duplicate clientOrderId");
    }
    let category = text("category");
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
    let order_id = format!("{}", 1_321_003_749_386_327_552u64 + book.orders.len() as u64);
    let order = json!({
        "category": category, "orderId": order_id, "orderLinkId": link, "symbol": text("symbol"),
        "side": text("side"), "orderType": order_type,
        "price": body["price"].as_str().unwrap_or("0"), "qty": text("qty"),
        "orderStatus": "New", "cumExecQty": "0", "cumExecValue": "0", "cumExecFee": "0",
        "leavesQty": text("qty"), "reduceOnly": reduce_only,
        "timeInForce": body["timeInForce"].as_str().unwrap_or("IOC"),
        "createdTime": now_ms().to_string(), "updatedTime": now_ms().to_string(),
    });
    book.orders.insert(link.clone(), order.clone());
    book.created.push(link.clone());
    state.creates.fetch_add(1, Ordering::Relaxed);
    state.private.publish("order", json!([order]));
    if order_type == "Market" {
        fill_order(state, &mut book, &link, qty, price);
    }
    ok(json!({"orderId": order_id, "orderLinkId": link}))
}

fn cancel(request: &Request, state: &State) -> Answer {
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return refuse(10001, "params error: body is not JSON");
    };
    let link = body["orderLinkId"].as_str().unwrap_or_default();
    let mut book = state.book.lock().unwrap();
    let Some(order) = book.orders.get_mut(link) else {
        return refuse(170_213, "Order does not exist.");
    };
    let status = order["orderStatus"].as_str().unwrap_or_default().to_owned();
    if !matches!(status.as_str(), "New" | "PartiallyFilled") {
        return refuse(170_213, "Order does not exist.");
    }
    order["orderStatus"] =
        json!(if status == "PartiallyFilled" { "PartiallyFilledCanceled" } else { "Cancelled" });
    order["updatedTime"] = json!(now_ms().to_string());
    let pushed = order.clone();
    state.private.publish("order", json!([pushed]));
    ok(json!({"orderId": order["orderId"].clone(), "orderLinkId": link}))
}

/// A query parameter's raw value.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
