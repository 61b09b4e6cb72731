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
//!   (`-1021`: more than 1 s ahead of the server, or older than `recvWindow`; or forced by
//!   [`FakeRest::refuse_timestamps_next`]).
//! - `GET /api/v3/account`: signed as above; a `balances` list (10000 USDT free, 1 BTC of which
//!   0.5 locked, unless [`FakeRest::set_balances`] says otherwise), in the shape of Binance's
//!   account endpoint.
//! - [`FakeRest::rate_limit_next`]: the next request, whatever it is, gets a 429 (or 418) with
//!   `Retry-After`.
//!
//! - `GET /api/v3/myTrades`: signed; the trades of `orderId` with their commission
//!   ([`FakeRest::fail_trades_next`] scripts its faults).
//!
//! Orders live in memory, keyed by client order id. A `MARKET` order fills at once at
//! [`FakeRest::set_price`] with one fill paying 0.1 % commission, in the asset
//! [`FakeRest::set_fee_mode`] chose (the quote asset unless told); a `LIMIT` `GTC` order
//! rests (`NEW`) until the test calls [`FakeRest::fill_limit`]. Simplifications: every reused
//! `newClientOrderId` is `-2010 Duplicate order sent.` (the real exchange only refuses ids of
//! *open* orders), limits never cross by themselves, and `IOC`/`FOK` limits expire at once.
//!
//! Faults ([`Fault`], [`FakeRest::fail_next`]) apply to `POST /api/v3/order` requests that passed
//! the key, signature and timestamp checks. Every answer carries `X-MBX-USED-WEIGHT-1M` with a
//! running total (it never resets). Requests over 64 KiB, malformed request lines or queries get a
//! 4xx JSON answer; nothing a client sends can panic the server.
//!
//! This module holds the fake's handle ([`FakeRest`]: start, clock, price, faults, counters) and
//! its routing; the parts it routes to are:
//! - `http`: reading a request and writing an answer (framing, limits, headers);
//! - `signing`: the API key, signature and timestamp checks of signed requests;
//! - `book`: the orders (place, query, cancel) and the faults applied to placements;
//! - `exchange_info`: the symbols and filters the fake lists and enforces;
//! - `order_list`: OCO order lists (`POST /api/v3/orderList/oco`, `DELETE` and
//!   `GET /api/v3/orderList`), whose legs are orders of the book: a leg that executes expires
//!   the other, as on Binance.

#![allow(dead_code)] // each test binary uses a different part of the fake

mod book;
mod exchange_info;
mod http;
mod order_list;
mod signing;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use book::{Book, StoredOrder};
use exchange_info::{futures_exchange_info, spot_exchange_info};
use http::{Answer, Reply, Request, serve};

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
    /// The request is read and the connection closed without an answer. The order is not
    /// stored.
    Drop,
    /// The order is stored (and a market order filled), then the connection is closed without
    /// an answer: the connection dropped after the request arrived.
    AcceptThenDrop,
    /// The order is stored (and a market order filled), then the request is never answered
    /// (held as [`Fault::Hang`] holds it): the client is still waiting when it dies.
    AcceptThenHang,
}

/// The asset the fake charges its 0.1 % commission in (Binance: the asset received, unless the
/// account pays in BNB at a 25 % discount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeeMode {
    /// The quote asset, on buys and sells alike (the fake's default).
    #[default]
    Quote,
    /// The asset received: the base on a buy, the quote on a sell (Binance's rule).
    Received,
    /// BNB at 0.075 %, valued at [`BNB_PRICE`] quote.
    Bnb,
}

/// The BNB price the fake values BNB commissions at.
pub const BNB_PRICE: Decimal = Decimal::from_parts(500, 0, 0, false, 0);

/// What the server tasks share with the handle.
#[derive(Debug)]
struct State {
    skew_ms: AtomicI64,
    price: Mutex<Decimal>,
    book: Mutex<Book>,
    faults: Mutex<VecDeque<Fault>>,
    /// Faults for `GET /api/v3/myTrades`.
    trade_faults: Mutex<VecDeque<Fault>>,
    /// Faults for `DELETE /api/v3/order`.
    cancel_faults: Mutex<VecDeque<Fault>>,
    /// Faults for `GET /api/v3/order` and `GET /api/v3/orderList`.
    query_faults: Mutex<VecDeque<Fault>>,
    /// Faults for `POST /api/v3/orderList/oco`.
    list_faults: Mutex<VecDeque<Fault>>,
    /// Faults for `DELETE /api/v3/orderList`.
    list_cancel_faults: Mutex<VecDeque<Fault>>,
    /// `POST /api/v3/orderList/oco` requests that passed authentication.
    list_posts: AtomicUsize,
    fee_mode: Mutex<FeeMode>,
    posts: AtomicUsize,
    requests: AtomicUsize,
    /// Signed requests that passed the key, signature and timestamp checks.
    signed: AtomicUsize,
    weight: AtomicU32,
    /// Reported in `X-MBX-ORDER-COUNT-10S` (unless the order limit is enforced).
    order_count_10s: AtomicU32,
    /// [`FakeRest::enforce_order_limit`]: the account's new orders per 10 s window, and the
    /// count per window (index: server time / 10 s).
    order_limit: Mutex<Option<u32>>,
    order_windows: Mutex<std::collections::BTreeMap<i64, u32>>,
    /// New orders refused with `-1015`.
    order_limit_refusals: AtomicUsize,
    /// Signed requests still to be refused with `-1021` whatever their timestamp.
    refuse_timestamps: AtomicUsize,
    /// `-1021` answers so far.
    clock_refusals: AtomicUsize,
    /// `GET …/time` requests so far.
    time_requests: AtomicUsize,
    /// The next requests answered 429/418 with `Retry-After` (status, seconds), whatever they
    /// are.
    rate_limits: Mutex<VecDeque<(u16, u64)>>,
    /// What `GET /api/v3/account` lists.
    balances: Mutex<Value>,
    /// Faults for `GET /api/v3/account`.
    account_faults: Mutex<VecDeque<Fault>>,
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
            book: Mutex::new(Book { next_order_id: 28_457, next_list_id: 900, ..Book::default() }),
            faults: Mutex::new(VecDeque::new()),
            trade_faults: Mutex::new(VecDeque::new()),
            cancel_faults: Mutex::new(VecDeque::new()),
            query_faults: Mutex::new(VecDeque::new()),
            list_faults: Mutex::new(VecDeque::new()),
            list_cancel_faults: Mutex::new(VecDeque::new()),
            list_posts: AtomicUsize::new(0),
            fee_mode: Mutex::new(FeeMode::Quote),
            posts: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            signed: AtomicUsize::new(0),
            weight: AtomicU32::new(0),
            order_count_10s: AtomicU32::new(0),
            order_limit: Mutex::new(None),
            order_windows: Mutex::new(std::collections::BTreeMap::new()),
            order_limit_refusals: AtomicUsize::new(0),
            refuse_timestamps: AtomicUsize::new(0),
            clock_refusals: AtomicUsize::new(0),
            time_requests: AtomicUsize::new(0),
            rate_limits: Mutex::new(VecDeque::new()),
            balances: Mutex::new(json!([
                {"asset": "USDT", "free": "10000.00000000", "locked": "0.00000000"},
                {"asset": "BTC", "free": "0.50000000", "locked": "0.50000000"}
            ])),
            account_faults: Mutex::new(VecDeque::new()),
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

    /// The next `n` signed requests that pass the key and signature checks are refused with
    /// `-1021` whatever their timestamp (a clock that jumps between a measurement and the
    /// request).
    pub fn refuse_timestamps_next(&self, n: usize) {
        self.state.refuse_timestamps.store(n, Ordering::SeqCst);
    }

    /// `-1021` answers so far.
    pub fn clock_refusals(&self) -> usize {
        self.state.clock_refusals.load(Ordering::SeqCst)
    }

    /// `GET /api/v3/time` (and `/fapi/v1/time`) requests so far.
    pub fn time_requests(&self) -> usize {
        self.state.time_requests.load(Ordering::SeqCst)
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

    /// The next `n` `GET /api/v3/myTrades` requests (after they pass authentication) suffer
    /// `fault` (the `Accept…` fault answers 503 as well: a lookup changes nothing).
    pub fn fail_trades_next(&self, n: usize, fault: Fault) {
        lock(&self.state.trade_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` cancels (`DELETE /api/v3/order`, after authentication) suffer `fault`:
    /// `ServerError`, `Hang` and `Drop` leave the order as it was; `AcceptThenServerError`
    /// cancels it and answers 503.
    pub fn fail_cancels_next(&self, n: usize, fault: Fault) {
        lock(&self.state.cancel_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` order queries (`GET /api/v3/order` and `GET /api/v3/orderList`, after
    /// authentication) suffer `fault` (a query changes nothing: the `Accept…` faults answer 503
    /// or drop as the others do).
    pub fn fail_queries_next(&self, n: usize, fault: Fault) {
        lock(&self.state.query_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` OCO placements (`POST /api/v3/orderList/oco`, after authentication) suffer
    /// `fault`, as [`fail_next`](Self::fail_next) describes for orders.
    pub fn fail_lists_next(&self, n: usize, fault: Fault) {
        lock(&self.state.list_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// The next `n` order-list cancels (`DELETE /api/v3/orderList`, after authentication)
    /// suffer `fault`, as [`fail_cancels_next`](Self::fail_cancels_next) describes.
    pub fn fail_list_cancels_next(&self, n: usize, fault: Fault) {
        lock(&self.state.list_cancel_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// `POST /api/v3/orderList/oco` requests that passed authentication (faulted ones too).
    pub fn list_posts(&self) -> usize {
        self.state.list_posts.load(Ordering::SeqCst)
    }

    /// The order list `list_client_order_id` in the `GET /api/v3/orderList` shape.
    pub fn order_list(&self, list_client_order_id: &str) -> Option<Value> {
        let book = lock(&self.state.book);
        book.lists.get(list_client_order_id).map(|l| l.json(&book))
    }

    /// Which asset fills pay their commission in from now on.
    pub fn set_fee_mode(&self, mode: FeeMode) {
        *lock(&self.state.fee_mode) = mode;
    }

    /// Fills `qty` of the resting order `client_order_id` (a limit, a limit maker, a triggered
    /// stop-limit at its price; a triggered `STOP_LOSS` at its stop price, or at the fake's price
    /// when trailing). False (and nothing changes) when there is no such open order, or `qty` is
    /// not positive or more than what remains.
    pub fn fill_limit(&self, client_order_id: &str, qty: Decimal) -> bool {
        let now = self.state.now_ms();
        let mode = *lock(&self.state.fee_mode);
        let price = *lock(&self.state.price);
        lock(&self.state.book).fill_limit(client_order_id, qty, now, mode, price)
    }

    /// `POST /api/v3/order` requests that passed the key, signature and timestamp checks
    /// (faulted ones included).
    pub fn posts(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }

    /// Signed requests (any path) that passed the key, signature and timestamp checks: each was
    /// signed with the test account's secret.
    pub fn signed(&self) -> usize {
        self.state.signed.load(Ordering::SeqCst)
    }

    /// Requests read so far, any path, well-formed or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// What every answer reports in `X-MBX-ORDER-COUNT-10S` from now on.
    pub fn set_order_count_10s(&self, count: u32) {
        self.state.order_count_10s.store(count, Ordering::SeqCst);
    }

    /// Counts the account's new orders (an OCO list counts two) per 10 s window aligned to the
    /// epoch, by the fake's clock, as Binance's `ORDERS` limit does, and refuses one past `limit`
    /// with HTTP 429 `-1015` ("Too many new orders"). `X-MBX-ORDER-COUNT-10S` then reports the
    /// current window's count.
    pub fn enforce_order_limit(&self, limit: u32) {
        *lock(&self.state.order_limit) = Some(limit);
    }

    /// New orders taken per 10 s window, by window index (server time ms / 10 000), while the
    /// order limit is enforced.
    pub fn orders_per_window(&self) -> std::collections::BTreeMap<i64, u32> {
        lock(&self.state.order_windows).clone()
    }

    /// New orders refused with `-1015` so far.
    pub fn order_limit_refusals(&self) -> usize {
        self.state.order_limit_refusals.load(Ordering::SeqCst)
    }

    /// The running `X-MBX-USED-WEIGHT-1M` total.
    pub fn used_weight(&self) -> u32 {
        self.state.weight.load(Ordering::SeqCst)
    }

    /// Sets the running weight total (to push a client towards its budget).
    pub fn set_used_weight(&self, weight: u32) {
        self.state.weight.store(weight, Ordering::SeqCst);
    }

    /// The next request, whatever it is, is answered `status` (429, or 418 for a ban) with
    /// `Retry-After: retry_after_secs` and Binance's `-1003` body.
    pub fn rate_limit_next(&self, status: u16, retry_after_secs: u64) {
        lock(&self.state.rate_limits).push_back((status, retry_after_secs));
    }

    /// The next `n` `GET /api/v3/account` requests (after authentication) suffer `fault` (the
    /// `Accept…` fault answers 503 as well: a read changes nothing).
    pub fn fail_account_next(&self, n: usize, fault: Fault) {
        lock(&self.state.account_faults).extend(std::iter::repeat_n(fault, n));
    }

    /// What `GET /api/v3/account` lists from now on: `(asset, free, locked)`.
    pub fn set_balances(&self, balances: &[(&str, &str, &str)]) {
        let list: Vec<Value> = balances
            .iter()
            .map(|(asset, free, locked)| json!({"asset": asset, "free": free, "locked": locked}))
            .collect();
        *lock(&self.state.balances) = Value::Array(list);
    }

    /// The client order ids of every order the book holds (each taken once: a second
    /// `newClientOrderId` is refused with `-2010`), sorted.
    pub fn client_order_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.state.book).orders.keys().cloned().collect();
        ids.sort();
        ids
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

impl State {
    fn now_ms(&self) -> i64 {
        real_now_ms() + self.skew_ms.load(Ordering::SeqCst)
    }

    /// The order-count window of server time `now_ms`.
    fn order_window(now_ms: i64) -> i64 {
        now_ms.div_euclid(10_000)
    }

    /// Counts `orders` new orders in the current window, or refuses them (`-1015`) when the
    /// enforced limit would be passed. Always `Ok` while no limit is enforced.
    pub(super) fn count_new_orders(&self, orders: u32) -> Result<(), Answer> {
        let Some(limit) = *lock(&self.order_limit) else { return Ok(()) };
        let window = Self::order_window(self.now_ms());
        let mut windows = lock(&self.order_windows);
        let count = windows.entry(window).or_insert(0);
        if *count + orders > limit {
            self.order_limit_refusals.fetch_add(1, Ordering::SeqCst);
            let msg =
                format!("Too many new orders; current limit is {limit} orders per 10 SECOND.");
            return Err(Answer::error(429, -1015, &msg));
        }
        *count += orders;
        Ok(())
    }

    /// What `X-MBX-ORDER-COUNT-10S` says: the current window's count when the limit is
    /// enforced, else what the test set.
    pub(super) fn reported_order_count(&self) -> u32 {
        if lock(&self.order_limit).is_none() {
            return self.order_count_10s.load(Ordering::SeqCst);
        }
        let window = Self::order_window(self.now_ms());
        lock(&self.order_windows).get(&window).copied().unwrap_or(0)
    }

    fn add_weight(&self, weight: u32) {
        self.weight.fetch_add(weight, Ordering::SeqCst);
    }

    fn handle(&self, request: &Request) -> Reply {
        if let Some((status, secs)) = lock(&self.rate_limits).pop_front() {
            return Reply::Answer(Answer::rate_limited(status, secs));
        }
        let method = request.method.as_str();
        let answer = match (method, request.path.as_str()) {
            ("GET", "/api/v3/time" | "/fapi/v1/time") => {
                self.add_weight(1);
                self.time_requests.fetch_add(1, Ordering::SeqCst);
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
            ("GET", "/api/v3/account") => {
                self.add_weight(20);
                return match self.authenticate(request) {
                    Err(answer) => Reply::Answer(answer),
                    Ok(_) => match lock(&self.account_faults).pop_front() {
                        Some(Fault::Hang) => Reply::Hang,
                        Some(Fault::Drop) => Reply::Drop,
                        Some(_) => Reply::Answer(Answer::server_error()),
                        None => Reply::Answer(Answer::ok(
                            json!({ "balances": lock(&self.balances).clone() }),
                        )),
                    },
                };
            }
            ("GET", "/api/v3/myTrades") => {
                self.add_weight(5);
                return match self.authenticate(request) {
                    Err(answer) => Reply::Answer(answer),
                    Ok(params) => match lock(&self.trade_faults).pop_front() {
                        Some(Fault::Hang) => Reply::Hang,
                        Some(Fault::Drop) => Reply::Drop,
                        Some(_) => Reply::Answer(Answer::server_error()),
                        None => Reply::Answer(self.my_trades(&params).unwrap_or_else(|e| e)),
                    },
                };
            }
            ("POST" | "GET" | "DELETE", "/api/v3/order") => {
                self.add_weight(if method == "GET" { 4 } else { 1 });
                return self.signed(request);
            }
            ("POST", "/api/v3/orderList/oco") | ("GET" | "DELETE", "/api/v3/orderList") => {
                self.add_weight(if method == "GET" { 4 } else { 1 });
                return match self.authenticate(request) {
                    Err(answer) => Reply::Answer(answer),
                    Ok(params) => self.order_list(method, &params),
                };
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
                "GET" => match lock(&self.query_faults).pop_front() {
                    Some(Fault::Hang) => Reply::Hang,
                    Some(Fault::Drop | Fault::AcceptThenDrop) => Reply::Drop,
                    Some(_) => Reply::Answer(Answer::server_error()),
                    None => Reply::Answer(self.query(&params).unwrap_or_else(|e| e)),
                },
                _ => {
                    let fault = lock(&self.cancel_faults).pop_front();
                    book::faulted(fault, || self.cancel(&params))
                }
            },
        }
    }
}
