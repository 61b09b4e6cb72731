//! Binance's user data stream (WebSocket API signature subscription) against local fakes: the
//! subscription is signed as Binance checks it, events arrive as account events, and every way
//! the venue can fail while subscribing (5xx, no answer, a dropped connection, a refused
//! handshake, a 429 with `retryAfter`) or later (dropped, `eventStreamTerminated`,
//! `serverShutdown`, the 24 h cut) ends in a new subscription.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_testkit::fake_rest::{API_KEY, FakeRest, SECRET_KEY};
use keel_testkit::fake_user_stream::{FakeUserStream, LastTrade, SubscribeFault, execution_report};
use keel_testkit::routing::signer;
use keel_venues::account::{AccountEvent, AccountStream, OwnedSigner};
use keel_venues::binance::rest::RestClient;
use keel_venues::binance::user_stream::{self, UserStreamConfig};
use rust_decimal::Decimal;
use serde_json::json;

/// Short timings: tests must not wait for production backoffs.
fn config(fake: &FakeUserStream) -> UserStreamConfig {
    let mut config = UserStreamConfig::new(fake.url.clone(), 5_000);
    config.connection.backoff_base = Duration::from_millis(20);
    config.connection.backoff_cap = Duration::from_millis(100);
    config.subscribe_timeout = Duration::from_millis(500);
    config
}

fn owned(api_key: &str, secret: &str) -> OwnedSigner {
    Arc::from(signer(api_key, secret))
}

async fn start(fake: &FakeUserStream, config: UserStreamConfig) -> (AccountStream, FakeRest) {
    let rest = FakeRest::start().await;
    let client = Arc::new(RestClient::new(&keel_venues::binance::SPOT, &rest.url()).unwrap());
    let _ = fake;
    (user_stream::spawn(client, config, owned(API_KEY, SECRET_KEY)), rest)
}

/// The next event, within 5 s.
async fn next(stream: &mut AccountStream) -> AccountEvent {
    tokio::time::timeout(Duration::from_secs(5), stream.events.recv())
        .await
        .expect("an event within 5 s")
        .expect("the stream is running")
}

/// Skips events until `Connected`; returns the reasons of the disconnections seen on the way.
async fn until_connected(stream: &mut AccountStream) -> Vec<String> {
    let mut reasons = Vec::new();
    loop {
        match next(stream).await {
            AccountEvent::Connected => return reasons,
            AccountEvent::Disconnected(why) => reasons.push(why),
            other => panic!("unexpected before subscribing: {other:?}"),
        }
    }
}

async fn until_disconnected(stream: &mut AccountStream) -> String {
    loop {
        if let AccountEvent::Disconnected(why) = next(stream).await {
            return why;
        }
    }
}

#[tokio::test]
async fn a_signed_subscription_delivers_executions_and_balances() {
    let fake = FakeUserStream::start().await;
    let (mut stream, _rest) = start(&fake, config(&fake)).await;
    assert!(until_connected(&mut stream).await.is_empty());
    assert_eq!((fake.subscriptions(), fake.refusals()), (1, 0));

    let order = json!({"symbol": "BTCUSDT", "orderId": 9, "clientOrderId": "keel-3-000001",
        "price": "100.00000000", "origQty": "0.10000000", "executedQty": "0.10000000",
        "cummulativeQuoteQty": "10.00000000", "status": "FILLED", "timeInForce": "GTC",
        "type": "LIMIT", "side": "BUY", "stopPrice": "0.00000000", "time": 1});
    let trade = LastTrade {
        qty: "0.10000000",
        price: "100.00000000",
        commission: "0.00010000",
        asset: "BTC",
        trade_id: 77,
    };
    fake.push(execution_report(&order, "TRADE", Some(trade)));
    let AccountEvent::Order(update) = next(&mut stream).await else { panic!("not an order") };
    assert_eq!(update.report.client_order_id, "keel-3-000001");
    assert_eq!(update.report.status, "FILLED");
    assert_eq!(update.trade_id, Some(77));
    assert_eq!(update.report.fills[0].fee_asset, "BTC");
    assert_eq!(update.report.fills[0].fee, Decimal::new(1, 4));

    fake.push_account_position(&[("BTC", "0.09990000", "0.00000000")]);
    let AccountEvent::Balances(balances) = next(&mut stream).await else { panic!("not balances") };
    assert_eq!((balances[0].asset.as_str(), balances[0].free), ("BTC", Decimal::new(999, 4)));
    fake.push(json!({"e": "balanceUpdate", "E": 1, "a": "USDT", "d": "-5.00000000", "T": 1}));
    assert_eq!(
        next(&mut stream).await,
        AccountEvent::BalanceDelta { asset: "USDT".into(), delta: Decimal::from(-5) }
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_retried_with_backoff_not_in_a_loop() {
    let fake = FakeUserStream::start().await;
    let rest = FakeRest::start().await;
    let client = Arc::new(RestClient::new(&keel_venues::binance::SPOT, &rest.url()).unwrap());
    let mut stream = user_stream::spawn(client, config(&fake), owned(API_KEY, "not-the-secret"));
    let why = until_disconnected(&mut stream).await;
    assert!(why.contains("-1022"), "{why}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.refusals() >= 1);
    assert!(fake.subscribe_requests() < 30, "retried with backoff: {}", fake.subscribe_requests());
    assert_eq!(fake.subscriptions(), 0);
}

#[tokio::test]
async fn subscription_faults_each_end_in_a_new_connection_that_subscribes() {
    let fake = FakeUserStream::start().await;
    fake.fail_next(1, SubscribeFault::ServerError);
    fake.fail_next(1, SubscribeFault::Hang);
    fake.fail_next(1, SubscribeFault::Drop);
    let (mut stream, _rest) = start(&fake, config(&fake)).await;
    let reasons = until_connected(&mut stream).await;
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("503"), "{reasons:?}");
    assert!(reasons[1].contains("no answer"), "{reasons:?}");
    assert!(reasons[2].contains("closed before"), "{reasons:?}");
    assert_eq!((fake.subscribe_requests(), fake.subscriptions()), (4, 1));
}

#[tokio::test]
async fn a_refused_handshake_is_retried_until_the_venue_takes_it() {
    let fake = FakeUserStream::start().await;
    fake.refuse(true);
    let (mut stream, _rest) = start(&fake, config(&fake)).await;
    let why = until_disconnected(&mut stream).await;
    assert!(why.contains("connect failed"), "{why}");
    fake.refuse(false);
    until_connected(&mut stream).await;
    assert!(fake.connections() >= 2);
    assert_eq!(fake.subscriptions(), 1);
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after_before_subscribing_again() {
    let fake = FakeUserStream::start().await;
    fake.fail_next(1, SubscribeFault::RateLimited(800));
    let (mut stream, _rest) = start(&fake, config(&fake)).await;
    let why = until_disconnected(&mut stream).await;
    let refused_at = Instant::now();
    assert!(why.contains("429"), "{why}");
    until_connected(&mut stream).await;
    assert!(refused_at.elapsed() >= Duration::from_millis(700), "{:?}", refused_at.elapsed());
    assert_eq!(fake.subscribe_requests(), 2);
}

#[tokio::test]
async fn drops_terminations_and_shutdowns_resubscribe() {
    let fake = FakeUserStream::start().await;
    let (mut stream, _rest) = start(&fake, config(&fake)).await;
    until_connected(&mut stream).await;
    fake.drop_connections();
    assert!(until_disconnected(&mut stream).await.contains("closed"));
    until_connected(&mut stream).await;
    fake.terminate();
    assert_eq!(until_disconnected(&mut stream).await, "eventStreamTerminated");
    until_connected(&mut stream).await;
    fake.server_shutdown();
    assert_eq!(until_disconnected(&mut stream).await, "serverShutdown");
    until_connected(&mut stream).await;
    assert_eq!(fake.subscriptions(), 4);
}

#[tokio::test]
async fn a_connection_is_renewed_before_binances_24_hour_cut_and_when_silent() {
    type Shorten = fn(&mut UserStreamConfig);
    let cases: [(Shorten, &str); 2] = [
        (|c| c.connection.max_life = Duration::from_millis(300), "lifetime"),
        (|c| c.connection.silence_timeout = Duration::from_millis(300), "silent"),
    ];
    for (shorten, reason) in cases {
        let fake = FakeUserStream::start().await;
        let mut config = config(&fake);
        shorten(&mut config);
        let (mut stream, _rest) = start(&fake, config).await;
        until_connected(&mut stream).await;
        let why = until_disconnected(&mut stream).await;
        assert!(why.contains(reason), "{why}");
        until_connected(&mut stream).await;
        assert!(fake.subscriptions() >= 2);
    }
}

#[tokio::test]
async fn dropping_the_stream_stops_its_task_and_connection() {
    let fake = FakeUserStream::start().await;
    let (mut stream, _rest) = start(&fake, config(&fake)).await;
    until_connected(&mut stream).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = fake.connections();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.connections(), before, "no reconnection after the stream is dropped");
}
