//! Live trading against local fakes of Binance's stream and REST endpoints: orders are signed in
//! the vault, sent once, filled from the venue's answers, and an order whose answer was lost is
//! reconciled by a query instead of being sent twice.

use std::time::{Duration, Instant};

use keel_testkit::{TestApp, assert_error, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};
use crate::fake_binance::FakeBinance;
use crate::fake_rest::{FakeRest, Fault};

pub(crate) struct Live {
    pub(crate) app: TestApp,
    ws: FakeBinance,
    rest: FakeRest,
    pub(crate) token: String,
    pub(crate) bot: u64,
}

/// A running live bot on the fakes, with a quote streamed so market orders can be valued.
pub(crate) async fn live_bot(email: &str) -> Live {
    live_bot_with(email, |_| ()).await
}

/// [`live_bot`] with settings changed by `configure`.
async fn live_bot_with(
    email: &str,
    configure: impl FnOnce(&mut keel::configuration::Settings) + Send + 'static,
) -> Live {
    let ws = FakeBinance::start().await;
    let rest = FakeRest::start().await;
    let (ws_url, rest_url) = (ws.url.clone(), rest.url());
    let app = spawn_app_with(move |s| {
        s.venues.binance.enabled = true;
        s.venues.binance.ws_url = ws_url;
        s.venues.binance.rest_url = rest_url;
        configure(s);
    })
    .await;
    let user = app.register(email).await;
    let account = json!({"venue": "binance", "label": "live", "api_key": API_KEY,
        "api_secret": API_SECRET, "testnet": false});
    let res = app.post_json("/api/v1/exchange-accounts", &account, Some(&user.access)).await;
    assert_eq!(res.status().as_u16(), 201);
    let account_id = res.json::<Value>().await.unwrap()["id"].as_u64().unwrap();

    let body = json!({
        "name": "live", "venue": "binance", "symbol": "BTCUSDT", "mode": "live",
        "exchange_account_id": account_id,
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}},
        "paper": {"starting_quote": "10000", "fee_bps": "10"}
    });
    // Until the exchange's rules are loaded the API answers 503: retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let bot = loop {
        let res = app.send(Method::POST, "/api/v1/bots", Some(&body), &user.access).await;
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        if status == 201 {
            break json["id"].as_u64().unwrap();
        }
        assert_eq!(status, 503, "{json}");
        assert!(Instant::now() < deadline, "instrument rules never loaded: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(app.control(&user.access, bot, "start").await.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ws.subscriptions().contains("btcusdt@bookTicker") {
        assert!(Instant::now() < deadline, "the bot never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Live { app, ws, rest, token: user.access, bot }
}

impl Live {
    fn quote(&self) {
        self.ws.publish(
            "btcusdt@bookTicker",
            r#"{"u":1,"s":"BTCUSDT","b":"99.99000000","B":"5.00000000","a":"100.00000000","A":"5.00000000"}"#,
        );
    }

    /// Places an order, re-quoting until the bot has a price; the answer must be 202.
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
                assert_eq!(body["status"], "new", "{body}");
                return body;
            }
            assert!(Instant::now() < deadline, "{status}: {body}");
        }
    }

    /// Waits until order `id` reaches `status` in `GET /orders`.
    async fn wait_for(&self, id: u64, status: &str) -> Value {
        let path = format!("/api/v1/bots/{}/orders?limit=100", self.bot);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.app.get_json(&path, &self.token).await;
            let order = page["items"].as_array().unwrap().iter().find(|o| o["id"] == id).cloned();
            if let Some(order) = order.filter(|o| o["status"] == status) {
                return order;
            }
            assert!(Instant::now() < deadline, "order {id} never became {status}: {page}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the position shows `qty`. The position endpoint shows only what is durable,
    /// and an order's new status can be read a flush before the position it moved.
    async fn assert_position(&self, qty: &str) {
        let path = format!("/api/v1/bots/{}/position", self.bot);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let position = self.app.get_json(&path, &self.token).await;
            if position["qty"] == qty {
                return;
            }
            assert!(Instant::now() < deadline, "the position never became {qty}: {position}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[actix_web::test]
async fn a_live_order_is_sent_once_and_a_lost_answer_is_reconciled_not_resent() {
    let live = live_bot("live-orders@example.com").await;
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});

    let order = live.place(&buy).await;
    let id = order["id"].as_u64().unwrap();
    let filled = live.wait_for(id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "100", "{filled}");
    assert_eq!(live.rest.posts(), 1);
    // Fills are shown once durable, which may be a moment after the order row.
    let path = format!("/api/v1/bots/{}/fills", live.bot);
    let deadline = Instant::now() + Duration::from_secs(5);
    let fills = loop {
        let fills = live.app.get_json(&path, &live.token).await;
        if !fills["items"].as_array().unwrap().is_empty() {
            break fills;
        }
        assert!(Instant::now() < deadline, "no fill shown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The venue's commission (0.1% in USDT) is the fill's fee.
    assert_eq!(fills["items"][0]["fee"], "0.01", "{fills}");
    live.assert_position("0.1").await;

    // The venue takes the next order but the answer is a 503: the bot must query, not resend.
    live.rest.fail_next(1, Fault::AcceptThenServerError);
    let order = live.place(&buy).await;
    let id = order["id"].as_u64().unwrap();
    let reconciled = live.wait_for(id, "reconciled").await;
    assert_eq!(reconciled["filled_qty"], "0.1", "{reconciled}");
    assert_eq!(live.rest.posts(), 2, "no duplicate order");
    live.assert_position("0.2").await;
}

#[actix_web::test]
async fn a_live_limit_rests_fills_in_part_and_is_canceled_at_the_venue() {
    let live = live_bot("live-limit@example.com").await;
    let limit = json!({"side": "buy", "qty": "0.2", "type": "limit", "price": "90.00"});
    let order = live.place(&limit).await;
    let id = order["id"].as_u64().unwrap();
    let client_id = order["client_order_id"].as_str().unwrap().to_owned();
    live.wait_for(id, "accepted").await;

    assert!(live.rest.fill_limit(&client_id, "0.05".parse().unwrap()));
    let partial = live.wait_for(id, "partially_filled").await;
    assert_eq!(partial["filled_qty"], "0.05", "{partial}");

    let cancel = format!("/api/v1/bots/{}/orders/{id}", live.bot);
    let res = live.app.send(Method::DELETE, &cancel, None, &live.token).await;
    assert_eq!(res.status().as_u16(), 202, "the venue confirms the cancel later");
    let canceled = live.wait_for(id, "canceled").await;
    assert_eq!(canceled["filled_qty"], "0.05");
    assert_eq!(live.rest.order(&client_id).unwrap()["status"], "CANCELED");
    live.assert_position("0.05").await;
    assert_error(live.app.send(Method::DELETE, &cancel, None, &live.token).await, 409, "CONFLICT")
        .await;
}

#[actix_web::test]
async fn a_venue_that_keeps_failing_pauses_the_bot_with_the_reason() {
    let live = live_bot("live-down@example.com").await;
    live.rest.fail_next(super_many(), Fault::ServerError);
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    for _ in 0..5 {
        live.place(&buy).await;
    }
    let path = format!("/api/v1/bots/{}", live.bot);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bot = live.app.get_json(&path, &live.token).await;
        if bot["status"] == "paused" {
            let reason = bot["status_reason"].as_str().unwrap_or_default();
            assert!(reason.contains("venue failed"), "{bot}");
            break;
        }
        assert!(Instant::now() < deadline, "never paused: {bot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bot's status and its reason, once `status` is reached.
async fn wait_for_status(live: &Live, status: &str) -> Value {
    let path = format!("/api/v1/bots/{}", live.bot);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bot = live.app.get_json(&path, &live.token).await;
        if bot["status"] == status {
            return bot;
        }
        assert!(Instant::now() < deadline, "never {status}: {bot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn the_account_breaker_opens_pauses_the_bot_and_closing_resumes_it() {
    let live = live_bot_with("breaker@example.com", |s| {
        s.bots.breaker_failures = 3;
        s.bots.breaker_open_secs = 2;
        s.bots.breaker_half_open_successes = 1;
    })
    .await;
    live.rest.fail_next(3, Fault::ServerError);
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    for _ in 0..3 {
        live.place(&buy).await;
    }
    let paused = wait_for_status(&live, "paused").await;
    let reason = paused["status_reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("circuit breaker open on binance account"), "{paused}");
    assert!(reason.contains("venue failed 3 times in a row"), "{paused}");
    // Open: an order is refused without reaching the venue.
    let posts = live.rest.posts();
    let refused = live.place(&buy).await;
    let refused = live.wait_for(refused["id"].as_u64().unwrap(), "rejected").await;
    assert!(refused["reason"].to_string().contains("circuit breaker"), "{refused}");
    assert_eq!(live.rest.posts(), posts, "nothing was sent while open");

    // The venue works again: after 2 s the bot's next poll is the probe, the breaker closes and
    // the bot resumes by itself.
    let resumed = wait_for_status(&live, "running").await;
    assert!(resumed["status_reason"].is_null(), "{resumed}");
    // Each transition is a journal line (what the `bot:{id}` channel carries), readable once
    // durable (the status can be read a flush earlier).
    let path = format!("/api/v1/bots/{}/events?limit=500", live.bot);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = live.app.get_json(&path, &live.token).await;
        let states: Vec<String> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "breaker")
            .map(|e| e["data"]["state"].as_str().unwrap().to_owned())
            .collect();
        if states == ["open", "half_open", "closed"] {
            break;
        }
        assert!(Instant::now() < deadline, "{states:?}: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Counted (the recorder is shared by every test in this binary: present, not exactly 1).
    let metrics = live.app.get("/metrics").await.text().await.unwrap();
    for to in ["open", "half_open", "closed"] {
        let line = format!("keel_breaker_transitions_total{{venue=\"binance\",to=\"{to}\"}}");
        assert!(metrics.contains(&line), "{line} missing");
    }
    assert!(metrics.contains("keel_breaker_state{venue=\"binance\",account="), "state gauge");
    // Closed: orders go out again.
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
}

#[actix_web::test]
async fn a_bot_its_owner_paused_stays_paused_when_the_breaker_closes() {
    let live = live_bot_with("breaker-owner@example.com", |s| {
        s.bots.breaker_failures = 2;
        s.bots.breaker_open_secs = 1;
    })
    .await;
    live.rest.fail_next(2, Fault::ServerError);
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    for _ in 0..2 {
        live.place(&buy).await;
    }
    wait_for_status(&live, "paused").await;
    // The owner takes over: resume and pause again means "paused by me".
    assert_eq!(live.app.control(&live.token, live.bot, "resume").await.status().as_u16(), 200);
    assert_eq!(live.app.control(&live.token, live.bot, "pause").await.status().as_u16(), 200);
    // Long enough for the breaker to probe and close (1 s open, 3 s polls).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bot = live.app.get_json(&format!("/api/v1/bots/{}", live.bot), &live.token).await;
    assert_eq!(bot["status"], "paused", "{bot}");
    assert!(bot["status_reason"].is_null(), "the owner's pause has no breaker reason: {bot}");
}

#[actix_web::test]
async fn open_live_orders_are_reconciled_with_the_venue_at_start() {
    let mut live = live_bot("live-restart@example.com").await;
    let limit = json!({"side": "buy", "qty": "0.2", "type": "limit", "price": "90.00"});
    let order = live.place(&limit).await;
    let id = order["id"].as_u64().unwrap();
    let client_id = order["client_order_id"].as_str().unwrap().to_owned();
    live.wait_for(id, "accepted").await;

    // While Keel is down the order fills at the venue.
    let (ws_url, rest_url) = (live.ws.url.clone(), live.rest.url());
    live.app = live
        .app
        .restart_with(move |s| {
            s.venues.binance.enabled = true;
            s.venues.binance.ws_url = ws_url.clone();
            s.venues.binance.rest_url = rest_url.clone();
        })
        .await;
    assert!(live.rest.fill_limit(&client_id, "0.2".parse().unwrap()));
    let filled = live.wait_for(id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "90", "{filled}");
    live.assert_position("0.2").await;
    assert_eq!(live.rest.posts(), 1, "nothing re-sent on restart");
}

/// More faults than any test sends requests.
fn super_many() -> usize {
    1_000
}

/// Binance's clock is not Keel's: a venue 20 s ahead from the start is measured before the first
/// signed order, and a later jump is measured for after one refusal (`-1021`) and the order sent
/// once more, never twice into the book.
#[actix_web::test]
async fn a_live_bot_trades_through_a_skewed_venue_clock() {
    let live = live_bot("live-clock@example.com").await;
    live.rest.set_clock_skew_ms(20_000);
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(live.rest.clock_refusals(), 0, "the skew was measured before the first order");

    live.rest.set_clock_skew_ms(-20_000);
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(live.rest.clock_refusals(), 1, "refused once, measured, sent once more");
    assert_eq!(live.rest.posts(), 2, "no duplicate order");
    live.assert_position("0.2").await;
}
