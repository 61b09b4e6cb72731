//! A local fake of Binance's spot WebSocket API, as far as the user data stream goes, with
//! scripted faults.
//!
//! It speaks the shapes of `fixtures/binance/user_stream.jsonl` (Binance's `user-data-stream.md`
//! and the WebSocket API's request, response and rate-limit formats):
//! - `userDataStream.subscribe.signature` with `apiKey`, `timestamp`, `signature` (and optional
//!   `recvWindow`), checked as Binance does: the key ([`API_KEY`], else `-2015`), the HMAC-SHA256
//!   signature over every other parameter sorted by name (`-1022`), the timestamp against
//!   `recvWindow` (`-1021`); answered `{"id":…,"status":200,"result":{"subscriptionId":N},
//!   "rateLimits":[…]}` or `{"id":…,"status":400,"error":{"code":…,"msg":…}}`;
//! - events pushed by the test go to every subscribed connection as
//!   `{"subscriptionId":N,"event":{…}}`; `serverShutdown` goes unwrapped;
//! - any other method is answered `400`/`-1100`.
//!
//! Faults ([`SubscribeFault`]) apply to the next subscriptions: a 503 answer, no answer, or the
//! connection closed without one; [`FakeUserStream::refuse`] answers the WebSocket handshake
//! itself with HTTP 503.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::fake_rest::{API_KEY, SECRET_KEY};
use crate::hmac_sha256_hex;

/// What the next subscription suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeFault {
    /// Answered with status 503 (Binance: execution status unknown; reconnect).
    ServerError,
    /// Never answered (the connection stays open).
    Hang,
    /// The connection is closed without an answer.
    Drop,
    /// Answered 429 `-1003` with `retryAfter` this many ms after `serverTime`.
    RateLimited(u64),
}

#[derive(Debug, Clone)]
enum Script {
    /// Send to every subscribed connection.
    Send(Message),
    /// Close every connection abruptly.
    Drop,
}

#[derive(Debug, Default)]
struct State {
    connections: AtomicUsize,
    subscribe_requests: AtomicUsize,
    subscriptions: AtomicUsize,
    refuse: AtomicBool,
    faults: Mutex<VecDeque<SubscribeFault>>,
    /// Subscriptions refused for their key, signature or timestamp.
    refusals: AtomicUsize,
}

/// A running fake on a free loopback port.
#[derive(Debug)]
pub struct FakeUserStream {
    /// `ws://127.0.0.1:PORT/ws-api/v3`.
    pub url: String,
    state: Arc<State>,
    script: broadcast::Sender<Script>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FakeUserStream {
    /// Starts the server on 127.0.0.1 with a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws-api/v3", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let (script, _) = broadcast::channel(1024);
        let (s, tx) = (state.clone(), script.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp, s.clone(), tx.subscribe()));
            }
        });
        Self { url, state, script }
    }

    /// WebSocket connections accepted so far (refused handshakes included).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Subscription requests read so far.
    pub fn subscribe_requests(&self) -> usize {
        self.state.subscribe_requests.load(Ordering::SeqCst)
    }

    /// Subscriptions answered 200 so far.
    pub fn subscriptions(&self) -> usize {
        self.state.subscriptions.load(Ordering::SeqCst)
    }

    /// Subscriptions refused for their key, signature or timestamp.
    pub fn refusals(&self) -> usize {
        self.state.refusals.load(Ordering::SeqCst)
    }

    /// The next `n` subscriptions suffer `fault`.
    pub fn fail_next(&self, n: usize, fault: SubscribeFault) {
        self.state.faults.lock().unwrap().extend(std::iter::repeat_n(fault, n));
    }

    /// Answers every WebSocket handshake with HTTP 503 from now on (or stops).
    pub fn refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Pushes a user data stream event (the `event` object) to every subscription.
    pub fn push(&self, event: Value) {
        let text = json!({ "subscriptionId": 0, "event": event }).to_string();
        let _ = self.script.send(Script::Send(Message::text(text)));
    }

    /// Ends every subscription with `eventStreamTerminated`.
    pub fn terminate(&self) {
        self.push(json!({ "e": "eventStreamTerminated", "E": now_ms() }));
    }

    /// Announces `serverShutdown`.
    pub fn server_shutdown(&self) {
        let text = json!({ "event": { "e": "serverShutdown", "E": now_ms() } }).to_string();
        let _ = self.script.send(Script::Send(Message::text(text)));
    }

    /// Closes every connection abruptly.
    pub fn drop_connections(&self) {
        let _ = self.script.send(Script::Drop);
    }

    /// Pushes `outboundAccountPosition` with `(asset, free, locked)` balances.
    pub fn push_account_position(&self, balances: &[(&str, &str, &str)]) {
        let b: Vec<Value> =
            balances.iter().map(|(a, f, l)| json!({ "a": a, "f": f, "l": l })).collect();
        self.push(json!({ "e": "outboundAccountPosition", "E": now_ms(), "u": now_ms(), "B": b }));
    }
}

/// One execution of an [`execution_report`]: quantity, price, commission, its asset and the
/// trade id.
#[derive(Debug, Clone, Copy)]
pub struct LastTrade<'a> {
    /// `l`.
    pub qty: &'a str,
    /// `L`.
    pub price: &'a str,
    /// `n`.
    pub commission: &'a str,
    /// `N`.
    pub asset: &'a str,
    /// `t`.
    pub trade_id: u64,
}

/// An `executionReport` for `order` (the fake REST's `GET /api/v3/order` shape, as
/// [`FakeRest::order`](crate::fake_rest::FakeRest::order) gives it) with execution type
/// `exec_type`, reporting `last` as its trade.
pub fn execution_report(order: &Value, exec_type: &str, last: Option<LastTrade<'_>>) -> Value {
    let zero = "0.00000000";
    let (l, price, n, asset, t) = match last {
        Some(t) => (t.qty, t.price, t.commission, json!(t.asset), json!(t.trade_id)),
        None => (zero, zero, "0", Value::Null, json!(-1)),
    };
    json!({
        "e": "executionReport", "E": now_ms(), "s": order["symbol"],
        "c": order["clientOrderId"], "S": order["side"], "o": order["type"],
        "f": order["timeInForce"], "q": order["origQty"], "p": order["price"],
        "P": order["stopPrice"], "F": zero, "g": -1, "C": "", "x": exec_type,
        "X": order["status"], "r": "NONE", "i": order["orderId"], "l": l,
        "z": order["executedQty"], "L": price, "n": n, "N": asset, "T": now_ms(), "t": t,
        "I": 1, "w": true, "m": false, "M": false, "O": order["time"],
        "Z": order["cummulativeQuoteQty"], "Y": zero, "Q": zero, "V": "NONE"
    })
}

async fn serve(
    tcp: tokio::net::TcpStream,
    state: Arc<State>,
    mut script: broadcast::Receiver<Script>,
) {
    let refuse = state.refuse.load(Ordering::SeqCst);
    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = move |_: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if refuse {
            let mut refused = ErrorResponse::new(Some("service unavailable".into()));
            *refused.status_mut() =
                tokio_tungstenite::tungstenite::http::StatusCode::SERVICE_UNAVAILABLE;
            return Err(refused);
        }
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else { return };
    let (mut sink, mut stream) = ws.split();
    let mut subscribed = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { return };
                match frame {
                    Message::Text(text) => {
                        let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        let answer = match request["method"].as_str() {
                            Some("userDataStream.subscribe.signature") => {
                                state.subscribe_requests.fetch_add(1, Ordering::SeqCst);
                                let fault = state.faults.lock().unwrap().pop_front();
                                match fault {
                                    Some(SubscribeFault::Drop) => return,
                                    Some(SubscribeFault::Hang) => continue,
                                    Some(SubscribeFault::ServerError) => error(&request, 503, -1001, "Internal error; unable to process your request. Please try again."),
                                    Some(SubscribeFault::RateLimited(ms)) => {
                                        let mut a = error(&request, 429, -1003, "Too much request weight used.");
                                        a["error"]["data"] = json!({ "serverTime": now_ms(), "retryAfter": now_ms() + ms });
                                        a
                                    }
                                    None => match check(&request["params"]) {
                                        Ok(()) => {
                                            subscribed = true;
                                            state.subscriptions.fetch_add(1, Ordering::SeqCst);
                                            json!({
                                                "id": request["id"], "status": 200,
                                                "result": { "subscriptionId": 0 },
                                                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 2}]
                                            })
                                        }
                                        Err((code, msg)) => {
                                            state.refusals.fetch_add(1, Ordering::SeqCst);
                                            error(&request, 400, code, msg)
                                        }
                                    },
                                }
                            }
                            _ => error(&request, 400, -1100, "Unknown method."),
                        };
                        if sink.send(Message::text(answer.to_string())).await.is_err() { return; }
                    }
                    Message::Ping(payload) => {
                        let answered = sink.send(Message::Pong(payload)).await;
                        if answered.is_err() { return; }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
            order = script.recv() => match order {
                Ok(Script::Drop) | Err(broadcast::error::RecvError::Closed) => return,
                Ok(Script::Send(message)) => {
                    if subscribed && sink.send(message).await.is_err() { return; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
        }
    }
}

fn error(request: &Value, status: u16, code: i64, msg: &str) -> Value {
    json!({ "id": request["id"], "status": status, "error": { "code": code, "msg": msg } })
}

/// Binance's checks of a `USER_STREAM` signature subscription, in its order.
fn check(params: &Value) -> Result<(), (i64, &'static str)> {
    let Some(params) = params.as_object() else {
        return Err((-1102, "Mandatory parameter 'apiKey' was not sent."));
    };
    if params.get("apiKey").and_then(Value::as_str) != Some(API_KEY) {
        return Err((-2015, "Invalid API-key, IP, or permissions for action."));
    }
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "signature")
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    pairs.sort();
    let payload = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let expected = hmac_sha256_hex(SECRET_KEY.as_bytes(), payload.as_bytes());
    if params.get("signature").and_then(Value::as_str) != Some(expected.as_str()) {
        return Err((-1022, "Signature for this request is not valid."));
    }
    let timestamp = params.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
    let window = params.get("recvWindow").and_then(Value::as_u64).unwrap_or(5_000);
    let now = now_ms();
    if timestamp > now + 1_000 || now.saturating_sub(timestamp) > window {
        return Err((-1021, "Timestamp for this request is outside of the recvWindow."));
    }
    Ok(())
}
