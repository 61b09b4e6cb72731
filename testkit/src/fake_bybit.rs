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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::hmac_sha256_hex;

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
        let state = Arc::new(State {
            book: Mutex::new(Book::default()),
            skew_ms: AtomicI64::new(0),
            price: Mutex::new(Decimal::new(1_657_850, 2)),
            requests: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            time_requests: AtomicUsize::new(0),
            clock_refusals: AtomicUsize::new(0),
            signed: Mutex::new(Vec::new()),
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
        let Some(order) = book.orders.get_mut(order_link_id) else { return false };
        if !matches!(order["orderStatus"].as_str(), Some("New" | "PartiallyFilled")) {
            return false;
        }
        execute(order, qty, price);
        true
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
        _ => refuse(10001, "unknown endpoint"),
    }
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
    let price = *state.price.lock().unwrap();
    let order_id = format!("{}", 1_321_003_749_386_327_552u64 + book.orders.len() as u64);
    let mut order = json!({
        "orderId": order_id, "orderLinkId": link, "symbol": text("symbol"), "side": text("side"),
        "orderType": order_type, "price": body["price"].as_str().unwrap_or("0"), "qty": text("qty"),
        "orderStatus": "New", "cumExecQty": "0", "cumExecValue": "0", "leavesQty": text("qty"),
        "timeInForce": body["timeInForce"].as_str().unwrap_or("IOC"),
    });
    if order_type == "Market" {
        let qty = text("qty").parse::<Decimal>().unwrap_or_default();
        execute(&mut order, qty, price);
    }
    book.orders.insert(link.clone(), order);
    book.created.push(link.clone());
    state.creates.fetch_add(1, Ordering::Relaxed);
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
