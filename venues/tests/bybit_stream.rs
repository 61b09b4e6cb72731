//! A Bybit public-stream connection through the generic driver, against a loopback fake that
//! speaks Bybit's control protocol: subscribe answers, the JSON heartbeat, trade pushes.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use keel_core::market::{EventKind, Symbol};
use keel_testkit::fake_bybit_stream::FakeBybitStream;
use keel_venues::bybit::SPOT;
use keel_venues::bybit::connector::BybitMarket;
use keel_venues::connection::{self, Command, Output};
use keel_venues::market::MarketConnector;
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::test]
async fn topics_are_subscribed_ten_a_request_trades_flow_and_the_heartbeat_is_json() {
    let fake = FakeBybitStream::start().await;
    let market = BybitMarket::new(&SPOT, fake.url.clone(), None);
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

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.topics().len() < 12 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed: {:?}", fake.topics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Twelve topics: a request of ten and one of two, as Bybit spot allows.
    assert_eq!(fake.subscribe_sizes(), [10, 2]);
    for (topic, symbol) in topics.iter().zip(&symbols) {
        fake.publish(topic, &json!({"topic": topic, "type": "snapshot", "ts": 1_672_304_486_868u64,
            "data": [
                {"T": 1_672_304_486_865u64, "s": symbol.as_str(), "S": "Buy", "v": "0.001", "p": "16578.50", "i": "1"},
                {"T": 1_672_304_486_866u64, "s": symbol.as_str(), "S": "Sell", "v": "0.002", "p": "16578.00", "i": "2"}
            ]}));
    }
    let mut trades = 0;
    while trades < 24 {
        let next = tokio::time::timeout_at(deadline, output.recv()).await.unwrap().unwrap();
        if let Output::Event(event) = next {
            assert!(matches!(event.kind, EventKind::Trade { .. }), "{event:?}");
            assert_eq!(event.venue.as_str(), "bybit");
            trades += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (pings, ping_frames) = fake.pings();
    assert!(pings >= 2, "JSON heartbeats: {pings}");
    assert_eq!(ping_frames, 0, "Bybit gets its own heartbeat, not ping frames");
    drop(commands);
    task.abort();
}
