//! A Bybit public-stream connection through the generic driver, against a loopback fake that
//! speaks Bybit's control protocol: subscribe answers, the JSON heartbeat, trade pushes.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use governor::{Quota, RateLimiter};
use keel_core::market::{EventKind, Symbol};
use keel_venues::bybit::SPOT;
use keel_venues::bybit::connector::BybitMarket;
use keel_venues::connection::{self, Command, Output};
use keel_venues::market::MarketConnector;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What the fake received.
#[derive(Debug, Default)]
struct Seen {
    subscribes: Vec<Vec<String>>,
    pings: usize,
    ping_frames: usize,
}

/// A fake Bybit public endpoint: answers each request as Bybit does, and pushes two trades on
/// every `publicTrade` topic right after its subscription.
async fn fake() -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v5/public/spot", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = shared.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    let text = match message {
                        Message::Text(text) => text.to_string(),
                        Message::Ping(_) => {
                            seen.lock().unwrap().ping_frames += 1;
                            continue;
                        }
                        _ => continue,
                    };
                    let request: Value = serde_json::from_str(&text).unwrap();
                    let req_id = request["req_id"].clone();
                    let mut replies = Vec::new();
                    match request["op"].as_str() {
                        Some("ping") => {
                            seen.lock().unwrap().pings += 1;
                            replies.push(json!({"success": true, "ret_msg": "pong",
                                "conn_id": "fake", "req_id": req_id, "op": "ping"}));
                        }
                        Some("subscribe") => {
                            let topics: Vec<String> = request["args"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|t| t.as_str().unwrap().to_owned())
                                .collect();
                            replies.push(json!({"success": true, "ret_msg": "", "conn_id": "fake",
                                "req_id": req_id, "op": "subscribe"}));
                            for topic in topics.iter().filter(|t| t.starts_with("publicTrade.")) {
                                let symbol = topic.trim_start_matches("publicTrade.");
                                replies.push(json!({"topic": topic, "type": "snapshot", "ts": 1_672_304_486_868u64,
                                    "data": [
                                        {"T": 1_672_304_486_865u64, "s": symbol, "S": "Buy", "v": "0.001", "p": "16578.50", "i": "1"},
                                        {"T": 1_672_304_486_866u64, "s": symbol, "S": "Sell", "v": "0.002", "p": "16578.00", "i": "2"}
                                    ]}));
                            }
                            seen.lock().unwrap().subscribes.push(topics);
                        }
                        _ => {}
                    }
                    for reply in replies {
                        if ws.send(Message::text(reply.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn topics_are_subscribed_ten_a_request_trades_flow_and_the_heartbeat_is_json() {
    let (url, seen) = fake().await;
    let market = BybitMarket::new(&SPOT, url.clone(), None);
    let config = keel_venues::connection::ConnectionConfig {
        ping_every: Duration::from_millis(200),
        max_outgoing_per_sec: 100,
        ..market.connection().unwrap()
    };
    let market: Arc<dyn MarketConnector> = Arc::new(market.with_connection(config.clone()));
    let (commands, command_rx) = mpsc::channel(16);
    let (output_tx, mut output) = mpsc::channel(1024);
    let budget = Arc::new(RateLimiter::direct(Quota::per_second(NonZeroU32::new(10).unwrap())));
    let symbols: Vec<Symbol> =
        (0..12).map(|i| Symbol::parse(&format!("COIN{i}USDT")).unwrap()).collect();
    let topics: Vec<String> = symbols.iter().map(|s| format!("publicTrade.{s}")).collect();
    commands.send(Command::Subscribe(topics.clone())).await.unwrap();
    let task = connection::spawn(0, market, config, budget, command_rx, output_tx);

    let mut trades = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while trades < 24 {
        let next = tokio::time::timeout_at(deadline, output.recv()).await.unwrap().unwrap();
        if let Output::Event(event) = next {
            assert!(matches!(event.kind, EventKind::Trade { .. }), "{event:?}");
            assert_eq!(event.venue.as_str(), "bybit");
            trades += 1;
        }
    }
    // Twelve topics: a request of ten and one of two, as Bybit spot allows.
    let sizes: Vec<usize> = seen.lock().unwrap().subscribes.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 2]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = seen.lock().unwrap();
    assert!(seen.pings >= 2, "JSON heartbeats: {}", seen.pings);
    assert_eq!(seen.ping_frames, 0, "Bybit gets its own heartbeat, not ping frames");
    drop(commands);
    task.abort();
}
