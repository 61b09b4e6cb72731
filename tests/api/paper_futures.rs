//! Paper futures over the API: a paper bot on a leverage venue (Bybit USDT perpetuals, against
//! a loopback fake of its public stream) trades with 10x leverage, shows its margin and
//! liquidation price, and is liquidated when the price crosses it: the `liquidated` journal
//! line, the position closed at the liquidation price, the bot paused.

use std::time::{Duration, Instant};

use keel_testkit::TestApp;
use keel_testkit::fake_bybit_stream::FakeBybitStream;
use keel_testkit::linear::{LinearApp, spawn_app_with_linear};
use reqwest::Method;
use serde_json::{Value, json};

async fn app_with_linear() -> (TestApp, FakeBybitStream) {
    let LinearApp { app, stream, rest } = spawn_app_with_linear(false, |_| {}).await;
    // The fake REST keeps serving while the app runs.
    std::mem::forget(rest);
    (app, stream)
}

fn bot(leverage: Value) -> Value {
    json!({
        "name": "perp",
        "venue": "bybit_linear",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "leverage": leverage,
        "margin_type": "isolated",
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}},
        "paper": {"starting_quote": "1100", "fee_bps": "0"},
        "risk": {"max_leverage": 20}
    })
}

async fn create(app: &TestApp, token: &str, body: &Value) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.send(Method::POST, "/api/v1/bots", Some(body), token).await;
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        if status != 503 {
            return (status, json);
        }
        assert!(Instant::now() < deadline, "instrument rules never loaded: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn quote(stream: &FakeBybitStream, bid: &str, ask: &str) {
    stream.publish(
        "orderbook.1.BTCUSDT",
        &json!({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1_700_000_000_000u64,
            "data": {"s": "BTCUSDT", "b": [[bid, "5"]], "a": [[ask, "5"]], "u": 1, "seq": 1}}),
    );
}

fn trade(stream: &FakeBybitStream, price: &str, id: &str) {
    stream.publish(
        "publicTrade.BTCUSDT",
        &json!({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1_700_000_000_100u64,
            "data": [{"T": 1_700_000_000_100u64, "s": "BTCUSDT", "S": "Sell", "v": "0.5",
                "p": price, "L": "MinusTick", "i": id, "BT": false}]}),
    );
}

#[actix_web::test]
async fn a_ten_times_leveraged_paper_bot_is_liquidated_at_its_price_and_paused() {
    let (app, stream) = app_with_linear().await;
    let user = app.register("perp@example.com").await;

    // Above the bot's own leverage cap: a field error.
    let (status, refused) = create(&app, &user.access, &bot(json!(25))).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("max_leverage"), "{refused}");

    let (status, created) = create(&app, &user.access, &bot(json!(10))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["leverage"], 10);
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stream.topics().contains("publicTrade.BTCUSDT") {
        assert!(Instant::now() < deadline, "the bot never subscribed: {:?}", stream.topics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 1 BTC at 10,000 with 1,100 of balance: 10x leverage needs 1,000 of margin.
    let buy = json!({"side": "buy", "qty": "1", "type": "market"});
    let orders = format!("/api/v1/bots/{id}/orders");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        quote(&stream, "9999.99", "10000.00");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let res = app.send(Method::POST, &orders, Some(&buy), &user.access).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 200 {
            assert_eq!(body["status"], "filled", "{body}");
            break;
        }
        // Until the bot has a price to value the order at.
        assert!(body.to_string().contains("NO_PRICE"), "{status}: {body}");
        assert!(Instant::now() < deadline, "{status}: {body}");
    }
    let position_path = format!("/api/v1/bots/{id}/position");
    let position = app.get_json(&position_path, &user.access).await;
    assert_eq!(position["qty"], "1", "{position}");
    assert_eq!(position["margin"], "1000.00", "{position}");
    // Binance's formula, isolated: (1000 − 10000) / (0.004 − 1) = 9036.14457831…
    assert_eq!(position["liquidation_price"], "9036.14457831", "{position}");

    // A trade below it liquidates the position.
    trade(&stream, "9000.00", "2f4b3c1a-0000-4000-8000-000000000001");
    let events_path = format!("/api/v1/bots/{id}/events?limit=100");
    let deadline = Instant::now() + Duration::from_secs(10);
    let liquidated = loop {
        let page = app.get_json(&events_path, &user.access).await;
        let found =
            page["items"].as_array().unwrap().iter().find(|e| e["kind"] == "liquidated").cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no liquidation: {page}");
        trade(&stream, "9000.00", "2f4b3c1a-0000-4000-8000-000000000002");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // 9036.1446 on the fake's tick of 0.10 (Bybit's for BTCUSDT), rounded against the trader.
    assert_eq!(liquidated["data"]["price"], "9036.10", "{liquidated}");
    assert_eq!(liquidated["data"]["margin_type"], "isolated");
    let position = app.get_json(&position_path, &user.access).await;
    assert_eq!(position["qty"], "0", "{position}");
    // The margin is lost, no more: 1,100 − 1,000.
    assert_eq!(position["quote_balance"], "100.00", "{position}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let record = app.get_json(&format!("/api/v1/bots/{id}"), &user.access).await;
        if record["status"] == "paused" {
            assert!(record["status_reason"].as_str().unwrap().starts_with("liquidated"));
            break;
        }
        assert!(Instant::now() < deadline, "not paused: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ticker(stream: &FakeBybitStream, ts: u64, mark: &str, rate: &str, next: u64) {
    stream.publish(
        "tickers.BTCUSDT",
        &json!({"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": ts, "cs": 1,
            "data": {"symbol": "BTCUSDT", "markPrice": mark, "indexPrice": mark,
                "fundingRate": rate, "nextFundingTime": next.to_string()}}),
    );
}

#[actix_web::test]
async fn a_leveraged_paper_short_receives_funding_at_the_venues_rate_and_time() {
    let (app, stream) = app_with_linear().await;
    let user = app.register("funding@example.com").await;
    let (status, created) = create(&app, &user.access, &bot(json!(5))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stream.topics().contains("tickers.BTCUSDT") {
        assert!(Instant::now() < deadline, "no mark price stream: {:?}", stream.topics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Short 0.5 at 10,000: 1,000 of margin at 5x.
    let sell = json!({"side": "sell", "qty": "0.5", "type": "market"});
    let orders = format!("/api/v1/bots/{id}/orders");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        quote(&stream, "10000.00", "10000.01");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let res = app.send(Method::POST, &orders, Some(&sell), &user.access).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}: {body}");
    }
    // The venue publishes a positive rate and its next funding time; at that time the short
    // receives 0.5 × 10,000 × 0.0001 = 0.5 USDT.
    let t0 = 1_700_000_000_000u64;
    ticker(&stream, t0, "10000", "0.0001", t0 + 1_000);
    let events_path = format!("/api/v1/bots/{id}/events?limit=100");
    let deadline = Instant::now() + Duration::from_secs(10);
    let funding = loop {
        ticker(&stream, t0 + 1_000, "10000", "0.0001", t0 + 1_000 + 8 * 3_600_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let page = app.get_json(&events_path, &user.access).await;
        let found =
            page["items"].as_array().unwrap().iter().find(|e| e["kind"] == "funding").cloned();
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no funding: {page}");
        ticker(&stream, t0, "10000", "0.0001", t0 + 1_000);
    };
    assert_eq!(funding["ts"], t0 + 1_000, "{funding}");
    assert_eq!(funding["data"]["amount"], "0.5", "{funding}");
    assert_eq!(funding["data"]["asset"], "USDT");
    assert_eq!(funding["data"]["rate"], "0.0001");
    let position = app.get_json(&format!("/api/v1/bots/{id}/position"), &user.access).await;
    assert_eq!(position["funding"], "0.5", "{position}");
}
