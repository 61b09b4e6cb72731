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
//! - `POST`, `GET`, `DELETE /fapi/v1/algoOrder`: conditional orders, triggered when
//!   [`FakeFutures::set_price`] crosses them ([`algo`]);
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
//! `POST /fapi/v1/order` and `POST /fapi/v1/algoOrder` requests that passed the checks; [`FakeFutures::rate_limit_next`]
//! answers the next request with a 429 or 418 and `Retry-After`. Liquidation prices are a rough
//! `entry × (1 ∓ 1/leverage)` on isolated margin and absent (`"0"`) on cross.

mod algo;
mod book;
mod http;
mod routes;
mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use book::{Book, State, execute};
use http::serve;
use stream::serve_stream;

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

/// The running fake (dropping every handle does not stop it; it lives with the runtime).
#[derive(Debug, Clone)]
pub struct FakeFutures {
    url: String,
    ws_url: String,
    state: Arc<State>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn s(d: Decimal) -> String {
    d.normalize().to_string()
}

pub(super) fn now_ms() -> i64 {
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
                algos: HashMap::new(),
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
        algo::trigger_crossed(&self.state, price);
        self.state.flush();
    }

    /// One conditional order as `GET /fapi/v1/algoOrder` answers for it.
    pub fn algo(&self, client_algo_id: &str) -> Option<Value> {
        lock(&self.state.book).algos.get(client_algo_id).map(algo::StoredAlgo::json)
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
