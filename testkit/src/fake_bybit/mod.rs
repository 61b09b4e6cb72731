//! A fake Bybit v5 REST server on loopback, for the Bybit router's tests.
//!
//! It checks what Bybit checks, as its documentation states: the four `X-BAPI-*` headers, the
//! signature (hex HMAC-SHA256 of `timestamp + api_key + recv_window + payload`, the payload
//! being the raw query string of a GET and the raw body of a POST), and the timestamp rule
//! `server_time - recv_window <= timestamp < server_time + 1000` (`10002` otherwise). Orders
//! are kept by `orderLinkId` (a second create with the same id is refused); a market
//! order fills at once at the configured price, a limit order rests until [`FakeBybit::fill`].
//! Answers have Bybit's envelope (`retCode`, `retMsg`, `result`, `time`) and its rate-limit
//! headers. Faults can be injected: a 502, a dropped connection, or `10006`.
//!
//! Derivatives (`category=linear`): a one-way position per symbol that fills move; a
//! `reduceOnly` order that would open, grow or flip it is refused (`110017`); leverage
//! (`set-leverage`, `110043` when unchanged), the unified account's margin mode (`account/info`,
//! `set-margin-mode`), `position/list` and funding executions (`execution/list?execType=Funding`).
//! Conditional orders (`triggerPrice`; linear) rest `Untriggered` and fire when
//! [`FakeBybit::set_price`] reaches their trigger (the `conditional` module); a duplicate
//! `orderLinkId` is `110072` on linear (`170141` on spot).
//! Every fill is pushed on the fake's private stream ([`FakeBybitPrivate`]) as Bybit pushes it:
//! an `execution` with its fee (spot: in the coin received), the `order`, and on linear the
//! `position`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod account;
mod conditional;
mod http;
mod orders;
mod routes;

use crate::fake_bybit_private::FakeBybitPrivate;
use account::margin_mode;
use http::serve;
use orders::fill_order;

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

    /// The last price: what market orders fill at and conditional orders watch. A move that
    /// reaches a conditional order's trigger fires it, as Bybit does.
    pub fn set_price(&self, price: Decimal) {
        *self.state.price.lock().unwrap() = price;
        let mut book = self.state.book.lock().unwrap();
        conditional::fire_crossed(&self.state, &mut book, price);
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

/// A query parameter's raw value.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
