//! Live trading on Bybit spot against loopback fakes of its public stream and v5 REST API: the
//! same guarantees as on Binance (signed in the vault, sent once, a lost answer reconciled by a
//! query, resting orders followed and cancelled at the venue), through the same live engine.

use std::time::{Duration, Instant};

use keel_testkit::fake_bybit::{API_KEY, API_SECRET, BybitFault, FakeBybit};
use keel_testkit::fake_bybit_stream::FakeBybitStream;
use keel_testkit::{TestApp, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

struct Live {
    app: TestApp,
    stream: FakeBybitStream,
    rest: FakeBybit,
    token: String,
    bot: u64,
}

async fn live_bot(email: &str) -> Live {
    live_bot_with(email, false).await
}

/// A running live bot on Bybit spot; with `private`, its account's private stream is the fake's
/// (without, the bot polls).
async fn live_bot_with(email: &str, private: bool) -> Live {
    let stream = FakeBybitStream::start().await;
    let rest = FakeBybit::start().await;
    rest.set_price("100".parse().unwrap());
    let (ws_url, rest_url) = (stream.url.clone(), rest.url());
    let private_url = if private { rest.private().url.clone() } else { String::new() };
    let app = spawn_app_with(move |s| {
        s.venues.bybit.enabled = true;
        s.venues.bybit.ws_url = ws_url;
        s.venues.bybit.rest_url = rest_url;
        s.venues.bybit.private_ws_url = private_url;
    })
    .await;
    let user = app.register(email).await;
    let account_id = app.add_exchange_account(&user.access, "bybit", API_KEY, API_SECRET).await;
    let bot = app.create_live_bot(&user.access, "bybit", account_id).await;
    assert_eq!(app.control(&user.access, bot, "start").await.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stream.topics().contains("orderbook.1.BTCUSDT") {
        assert!(Instant::now() < deadline, "the bot never subscribed: {:?}", stream.topics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Live { app, stream, rest, token: user.access, bot }
}

impl Live {
    fn quote(&self) {
        self.stream.publish(
            "orderbook.1.BTCUSDT",
            &json!({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1_700_000_000_000u64,
                "data": {"s": "BTCUSDT", "b": [["99.99", "5"]], "a": [["100.00", "5"]], "u": 1, "seq": 1}}),
        );
    }

    async fn place(&self, order: &Value) -> Value {
        let path = format!("/api/v1/bots/{}/orders", self.bot);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.quote();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let res = self.app.send(Method::POST, &path, Some(order), &self.token).await;
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            if status == 202 {
                return body;
            }
            assert!(Instant::now() < deadline, "{status}: {body}");
        }
    }

    async fn wait_for(&self, id: u64, status: &str) -> Value {
        self.app.wait_for_order(&self.token, self.bot, id, status).await
    }

    /// Waits until the bot holds `qty`.
    async fn assert_position(&self, qty: &str) {
        let path = format!("/api/v1/bots/{}/position", self.bot);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let position = self.app.get_json(&path, &self.token).await;
            let held = position["qty"].as_str().and_then(|q| q.parse::<f64>().ok());
            if held == qty.parse::<f64>().ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the position never became {qty}: {position}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The bot's fills once there are `n` (they are shown a moment after the order).
    async fn fills(&self, n: usize) -> Vec<Value> {
        let path = format!("/api/v1/bots/{}/fills", self.bot);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = self.app.get_json(&path, &self.token).await;
            let items = page["items"].as_array().unwrap().clone();
            if items.len() >= n {
                return items;
            }
            assert!(Instant::now() < deadline, "{n} fills never shown: {page}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[actix_web::test]
async fn a_bybit_order_is_sent_once_and_a_lost_answer_is_reconciled_not_resent() {
    let live = live_bot("bybit-orders@example.com").await;
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    let order = live.place(&buy).await;
    let id = order["id"].as_u64().unwrap();
    let filled = live.wait_for(id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "100", "{filled}");
    assert_eq!(live.rest.creates(), 1);

    // Bybit takes the next order but the answer is lost: the bot queries, never resends.
    live.rest.fail_next(1, BybitFault::Drop);
    let order = live.place(&buy).await;
    let id = order["id"].as_u64().unwrap();
    let reconciled = live.wait_for(id, "reconciled").await;
    assert_eq!(reconciled["filled_qty"], "0.1", "{reconciled}");
    assert_eq!(live.rest.creates(), 2, "no duplicate order");
}

#[actix_web::test]
async fn a_bybit_limit_rests_fills_in_part_and_is_cancelled_at_the_venue() {
    let live = live_bot("bybit-limit@example.com").await;
    let limit = json!({"side": "buy", "qty": "0.2", "type": "limit", "price": "90.00"});
    let order = live.place(&limit).await;
    let id = order["id"].as_u64().unwrap();
    let client_id = order["client_order_id"].as_str().unwrap().to_owned();
    live.wait_for(id, "accepted").await;
    assert!(live.rest.fill(&client_id, "0.05".parse().unwrap()));
    let partial = live.wait_for(id, "partially_filled").await;
    assert_eq!(partial["filled_qty"], "0.05", "{partial}");
    let cancel = format!("/api/v1/bots/{}/orders/{id}", live.bot);
    let res = live.app.send(Method::DELETE, &cancel, None, &live.token).await;
    assert_eq!(res.status().as_u16(), 202);
    let canceled = live.wait_for(id, "canceled").await;
    assert_eq!(canceled["filled_qty"], "0.05");
    assert_eq!(live.rest.order(&client_id).unwrap()["orderStatus"], "PartiallyFilledCanceled");
}

/// Bybit spot takes a buy's fee in the coin received: the bot holds what the account holds (the
/// bought quantity less the BTC fee, read from the order's trades), and a close sells that.
#[actix_web::test]
async fn a_bybit_buy_fee_in_btc_leaves_the_position_the_account_holds() {
    let live = live_bot("bybit-fee@example.com").await;
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    let fills = live.fills(1).await;
    let fill = &fills[0];
    assert_eq!(fill["commission"]["asset"], "BTC", "{fill}");
    assert_eq!(fill["commission"]["amount"], "0.0001", "{fill}");
    assert_eq!(fill["commission"]["charged_to"], "base", "{fill}");
    assert_eq!(fill["fee"], "0.01", "valued in USDT at the fill price: {fill}");
    live.assert_position("0.0999").await;

    let close = format!("/api/v1/bots/{}/close-position", live.bot);
    let res = live.app.send(Method::POST, &close, None, &live.token).await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert!(matches!(status, 200 | 202), "{status}: {body}");
    let close_id = body["id"].as_u64().unwrap_or_else(|| body["order"]["id"].as_u64().unwrap());
    let closed = live.wait_for(close_id, "filled").await;
    let sold = live.rest.order(closed["client_order_id"].as_str().unwrap()).unwrap();
    assert_eq!(sold["qty"], "0.0999", "never more than the account holds: {sold}");
}

/// With the private stream, a resting buy's fill arrives pushed, with the BTC Bybit took, and a
/// spot account's stream ignores the account's linear executions.
#[actix_web::test]
async fn the_private_stream_pushes_a_spot_fill_with_its_btc_fee() {
    let live = live_bot_with("bybit-stream@example.com", true).await;
    let private = live.rest.private().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while private.live_connections() == 0 {
        assert!(Instant::now() < deadline, "the private stream never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let limit = json!({"side": "buy", "qty": "0.2", "type": "limit", "price": "100.00"});
    let order = live.place(&limit).await;
    let id = order["id"].as_u64().unwrap();
    let client =
        live.wait_for(id, "accepted").await["client_order_id"].as_str().unwrap().to_owned();
    // A linear execution of the same account on the same symbol is not this bot's business.
    private.publish(
        "execution",
        json!([{"category": "linear", "symbol": "BTCUSDT",
        "execFee": "1", "execId": "x-1", "execPrice": "100", "execQty": "0.2",
        "execType": "Trade", "execValue": "20", "leavesQty": "0", "orderLinkId": client,
        "orderQty": "0.2", "side": "Buy", "execTime": "1", "feeCurrency": ""}]),
    );
    assert!(live.rest.fill(&client, "0.2".parse().unwrap()));
    let filled = live.wait_for(id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "100", "{filled}");
    let fills = live.fills(1).await;
    assert_eq!(fills.len(), 1, "the linear execution is not this bot's: {fills:?}");
    let fill = &fills[0];
    assert_eq!(fill["commission"]["asset"], "BTC", "{fill}");
    assert_eq!(fill["commission"]["amount"], "0.0002", "{fill}");
    live.assert_position("0.1998").await;
}
