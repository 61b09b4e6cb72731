//! Live trading with the account's user data stream, against local fakes of Binance's market
//! streams, REST API and WebSocket API: the stream fills orders before any poll, a lost stream
//! falls back to polling and reconciles when it is back, balances are shown per exchange account
//! and follow the stream, a bot whose account cannot pay its first order is refused at start, and
//! a 429 holds back every bot of the account.

use std::time::{Duration, Instant};

use keel_testkit::fake_user_stream::{FakeUserStream, LastTrade, execution_report};
use keel_testkit::{TestApp, assert_error, eventually, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};
use crate::fake_binance::FakeBinance;
use crate::fake_rest::{FakeRest, Fault};

/// How long a condition may take.
const WAIT: Duration = Duration::from_secs(10);

struct StreamedAccount {
    app: TestApp,
    ws: FakeBinance,
    rest: FakeRest,
    user_stream: FakeUserStream,
    token: String,
    account: u64,
}

/// Keel on the three fakes, with a user and an exchange account; no bot yet.
async fn streamed_account(email: &str) -> StreamedAccount {
    let ws = FakeBinance::start().await;
    let rest = FakeRest::start().await;
    let user_stream = FakeUserStream::start().await;
    let (ws_url, rest_url, stream_url) = (ws.url.clone(), rest.url(), user_stream.url.clone());
    let app = spawn_app_with(move |s| {
        s.venues.binance.enabled = true;
        s.venues.binance.ws_url = ws_url;
        s.venues.binance.rest_url = rest_url;
        s.venues.binance.private_ws_url = stream_url;
    })
    .await;
    let user = app.register(email).await;
    let account = app.add_exchange_account(&user.access, "binance", API_KEY, API_SECRET).await;
    StreamedAccount { app, ws, rest, user_stream, token: user.access, account }
}

impl StreamedAccount {
    /// Creates and starts a live bot on the account; waits until it is on the stream.
    async fn start_bot(&self) -> u64 {
        let bot = self.app.create_live_bot(&self.token, "binance", self.account).await;
        let res = self.app.control(&self.token, bot, "start").await;
        assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
        let stream = &self.user_stream;
        eventually(WAIT, "the subscription", || async { stream.subscriptions() >= 1 }).await;
        bot
    }

    fn quote(&self) {
        self.ws.publish(
            "btcusdt@bookTicker",
            r#"{"u":1,"s":"BTCUSDT","b":"99.99000000","B":"5.00000000","a":"100.00000000","A":"5.00000000"}"#,
        );
    }

    /// Places `order` on `bot`, quoting until the bot has a price; returns it (202).
    async fn place(&self, bot: u64, order: &Value) -> Value {
        self.app.place_quoted(&self.token, bot, order, || self.quote()).await
    }

    /// Places a resting limit buy of 0.1 at 90; returns (Keel's order id, client order id) once
    /// the venue has it.
    async fn resting_limit(&self, bot: u64) -> (u64, String) {
        let order = json!({"side": "buy", "qty": "0.1", "type": "limit", "price": "90"});
        let placed = self.place(bot, &order).await;
        let id = placed["id"].as_u64().unwrap();
        let accepted = self.app.wait_for_order(&self.token, bot, id, "accepted").await;
        (id, accepted["client_order_id"].as_str().unwrap().to_owned())
    }

    async fn balances(&self) -> Value {
        let path = format!("/api/v1/exchange-accounts/{}/balances", self.account);
        self.app.get_json(&path, &self.token).await
    }
}

fn free(balances: &Value, asset: &str) -> String {
    balances["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == asset)
        .map(|b| b["free"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_stream_fills_an_order_before_any_poll_with_its_commission() {
    let acc = streamed_account("stream-fill@example.com").await;
    let bot = acc.start_bot().await;
    let (id, client_order_id) = acc.resting_limit(bot).await;
    // Filled at the venue as far as the stream says; the REST book still has it resting, so
    // only the stream can make it filled.
    let mut order = acc.rest.order(&client_order_id).unwrap();
    order["status"] = json!("FILLED");
    order["executedQty"] = json!("0.10000000");
    order["cummulativeQuoteQty"] = json!("9.00000000");
    let trade = LastTrade {
        qty: "0.10000000",
        price: "90.00000000",
        commission: "0.00010000",
        asset: "BTC",
        trade_id: 501,
    };
    acc.user_stream.push(execution_report(&order, "TRADE", Some(trade)));
    let filled = acc.app.wait_for_order(&acc.token, bot, id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "90", "{filled}");
    assert_eq!(acc.rest.order(&client_order_id).unwrap()["status"], "NEW", "not from a poll");
    // The commission was taken in BTC, so the position is what the account received.
    let path = format!("/api/v1/bots/{bot}/position");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let position = acc.app.get_json(&path, &acc.token).await;
        if position["qty"] == "0.0999" {
            break;
        }
        assert!(Instant::now() < deadline, "{position}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same trade pushed again adds nothing.
    acc.user_stream.push(execution_report(&order, "TRADE", Some(trade)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fills = acc.app.get_json(&format!("/api/v1/bots/{bot}/fills"), &acc.token).await;
    assert_eq!(fills["items"].as_array().unwrap().len(), 1, "{fills}");
}

#[actix_web::test]
async fn a_lost_stream_falls_back_to_polling_and_a_reconnect_reconciles() {
    let acc = streamed_account("stream-fallback@example.com").await;
    let bot = acc.start_bot().await;

    // While the stream is up, polling is only a 30 s safety net: an order that fills at the venue
    // without an event (one the stream lost) stays as it was...
    let (id, client_order_id) = acc.resting_limit(bot).await;
    assert!(acc.rest.fill_limit(&client_order_id, "0.1".parse().unwrap()));
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let orders = acc.app.get_json(&format!("/api/v1/bots/{bot}/orders"), &acc.token).await;
    let order = orders["items"].as_array().unwrap().iter().find(|o| o["id"] == id).unwrap();
    assert_eq!(order["status"], "accepted", "no 3 s polling while the stream is up: {order}");
    // ...until the stream reconnects: every open order is reconciled at once.
    acc.user_stream.drop_connections();
    let started = Instant::now();
    acc.app.wait_for_order(&acc.token, bot, id, "filled").await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(acc.user_stream.subscriptions(), 2);

    // Down for good: an order filled at the venue is found by polling every 3 s.
    let (id, client_order_id) = acc.resting_limit(bot).await;
    acc.user_stream.refuse(true);
    acc.user_stream.drop_connections();
    assert!(acc.rest.fill_limit(&client_order_id, "0.1".parse().unwrap()));
    let started = Instant::now();
    acc.app.wait_for_order(&acc.token, bot, id, "filled").await;
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    assert_eq!(acc.user_stream.subscriptions(), 2, "still down");
}

#[actix_web::test]
async fn balances_are_shown_per_account_and_follow_the_stream() {
    let acc = streamed_account("stream-balances@example.com").await;
    let idle = acc.balances().await;
    assert_eq!(
        (idle["stream"].as_str(), idle["source"].as_str()),
        (Some("idle"), Some("rest")),
        "{idle}"
    );
    assert_eq!(free(&idle, "USDT"), "10000", "{idle}");

    acc.start_bot().await;
    acc.user_stream.push_account_position(&[("USDT", "9000.00000000", "1000.00000000")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = acc.balances().await;
        if free(&now, "USDT") == "9000" {
            assert_eq!(
                (now["stream"].as_str(), now["source"].as_str()),
                (Some("up"), Some("stream")),
                "{now}"
            );
            assert_eq!(free(&now, "BTC"), "0.5", "assets the event did not list are kept: {now}");
            break;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let other = acc.app.register("stream-balances-other@example.com").await;
    let path = format!("/api/v1/exchange-accounts/{}/balances", acc.account);
    let res = acc.app.send(Method::GET, &path, None, &other.access).await;
    assert_error(res, 404, "EXCHANGE_ACCOUNT_NOT_FOUND").await;
}

#[actix_web::test]
async fn a_live_bot_whose_account_cannot_pay_its_first_order_is_refused_at_start() {
    let acc = streamed_account("stream-funds@example.com").await;
    acc.rest.set_balances(&[("USDT", "12.50000000", "0.00000000")]);
    let mut body = keel_testkit::quiet_bot();
    body["venue"] = json!("binance");
    body["mode"] = json!("live");
    body["exchange_account_id"] = json!(acc.account);
    body["strategy"] = json!({"kind": "dca", "params": {"interval_secs": 60, "quote_amount": "50", "take_profit_pct": "2"}});
    let deadline = Instant::now() + Duration::from_secs(10);
    let bot = loop {
        let res = acc.app.send(Method::POST, "/api/v1/bots", Some(&body), &acc.token).await;
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        if status == 201 {
            break json["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "{status}: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let res = acc.app.control(&acc.token, bot, "start").await;
    let error = assert_error(res, 422, "INSUFFICIENT_BALANCE").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("12.5 USDT free") && message.contains("needs 50 USDT"), "{message}");
    let record = acc.app.get_json(&format!("/api/v1/bots/{bot}"), &acc.token).await;
    assert_eq!(record["status"], "created", "{record}");
    assert_eq!(acc.user_stream.connections(), 0, "nothing started");

    // A venue that fails the balances read (a 5xx, a dropped connection) refuses the start too,
    // as unavailable, not as short of funds.
    acc.rest.set_balances(&[("USDT", "50.00000000", "0.00000000")]);
    for fault in [Fault::ServerError, Fault::Drop] {
        acc.rest.fail_account_next(1, fault);
        let res = acc.app.control(&acc.token, bot, "start").await;
        assert_error(res, 503, "VENUE_UNAVAILABLE").await;
    }
    assert_eq!(acc.app.control(&acc.token, bot, "start").await.status().as_u16(), 200);
}

#[actix_web::test]
async fn a_stream_trade_after_missed_ones_is_settled_by_a_query_with_every_commission() {
    let acc = streamed_account("stream-missed@example.com").await;
    let bot = acc.start_bot().await;
    let (id, client_order_id) = acc.resting_limit(bot).await;
    // Two trades at the venue; the stream delivers only the second (cumulative 0.1, last 0.06).
    assert!(acc.rest.fill_limit(&client_order_id, "0.04".parse().unwrap()));
    assert!(acc.rest.fill_limit(&client_order_id, "0.06".parse().unwrap()));
    let order = acc.rest.order(&client_order_id).unwrap();
    let trade = LastTrade {
        qty: "0.06000000",
        price: "90.00000000",
        commission: "0.00540000",
        asset: "USDT",
        trade_id: 2,
    };
    acc.user_stream.push(execution_report(&order, "TRADE", Some(trade)));
    acc.app.wait_for_order(&acc.token, bot, id, "filled").await;
    // Queried, so both trades are fills with the venue's own commission, none estimated.
    let path = format!("/api/v1/bots/{bot}/fills");
    let deadline = Instant::now() + WAIT;
    let fills = loop {
        let fills = acc.app.get_json(&path, &acc.token).await;
        if fills["items"].as_array().unwrap().len() == 2 {
            break fills;
        }
        assert!(Instant::now() < deadline, "{fills}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let quantities: Vec<&str> =
        fills["items"].as_array().unwrap().iter().map(|f| f["qty"].as_str().unwrap()).collect();
    assert_eq!(quantities, ["0.04", "0.06"], "{fills}");
    for fill in fills["items"].as_array().unwrap() {
        assert_eq!(fill["commission"]["asset"], "USDT", "{fill}");
        assert_eq!(fill["commission"]["quote_value_estimated"], false, "{fill}");
    }
}

#[actix_web::test]
async fn a_429_with_retry_after_holds_back_every_bot_of_the_account() {
    let acc = streamed_account("stream-429@example.com").await;
    let first = acc.start_bot().await;
    let second = acc.start_bot().await;
    assert_eq!(acc.user_stream.subscriptions(), 1, "one stream per account, not per bot");
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});

    acc.rest.rate_limit_next(429, 2);
    let refused = acc.place(first, &buy).await;
    let id = refused["id"].as_u64().unwrap();
    let rejected = acc.app.wait_for_order(&acc.token, first, id, "rejected").await;
    assert!(rejected["reason"].as_str().unwrap().contains("429"), "{rejected}");
    let sent = acc.rest.requests();
    // The other bot of the account is held back too: nothing reaches the venue.
    let held = acc.place(second, &buy).await;
    let id = held["id"].as_u64().unwrap();
    let rejected = acc.app.wait_for_order(&acc.token, second, id, "rejected").await;
    assert!(rejected["reason"].as_str().unwrap().contains("rate limited"), "{rejected}");
    assert_eq!(acc.rest.requests(), sent, "no request during the back-off");

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let placed = acc.place(second, &buy).await;
    let id = placed["id"].as_u64().unwrap();
    acc.app.wait_for_order(&acc.token, second, id, "filled").await;
}
