//! Live trading against local fakes of Binance's stream and REST endpoints: orders are signed in
//! the vault, sent once, filled from the venue's answers, and an order whose answer was lost is
//! reconciled by a query instead of being sent twice.

use std::time::{Duration, Instant};

use keel_testkit::{TestApp, assert_error, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};
use crate::fake_binance::FakeBinance;
use crate::fake_rest::{FakeRest, Fault, FeeMode};

pub(crate) struct Live {
    pub(crate) app: TestApp,
    pub(crate) ws: FakeBinance,
    pub(crate) rest: FakeRest,
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
    live_bot_defined(email, configure, |_| ()).await
}

/// [`live_bot_with`], its definition changed by `edit` (a bracket, say).
pub(crate) async fn live_bot_defined(
    email: &str,
    configure: impl FnOnce(&mut keel::configuration::Settings) + Send + 'static,
    edit: impl FnOnce(&mut Value),
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
    let account_id = app.add_exchange_account(&user.access, "binance", API_KEY, API_SECRET).await;
    let bot = app.create_live_bot_with(&user.access, "binance", account_id, edit).await;
    assert_eq!(app.control(&user.access, bot, "start").await.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ws.subscriptions().contains("btcusdt@bookTicker") {
        assert!(Instant::now() < deadline, "the bot never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Live { app, ws, rest, token: user.access, bot }
}

impl Live {
    pub(crate) fn quote(&self) {
        self.ws.publish(
            "btcusdt@bookTicker",
            r#"{"u":1,"s":"BTCUSDT","b":"99.99000000","B":"5.00000000","a":"100.00000000","A":"5.00000000"}"#,
        );
    }

    /// Places an order, re-quoting until the bot has a price; the answer must be 202.
    pub(crate) async fn place(&self, order: &Value) -> Value {
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
    pub(crate) async fn wait_for(&self, id: u64, status: &str) -> Value {
        self.app.wait_for_order(&self.token, self.bot, id, status).await
    }

    /// Waits until the position shows `qty`. The position endpoint shows only what is durable,
    /// and an order's new status can be read a flush before the position it moved.
    pub(crate) async fn assert_position(&self, qty: &str) {
        let path = format!("/api/v1/bots/{}/position", self.bot);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let position = self.app.get_json(&path, &self.token).await;
            // Compared as numbers: `0.0` and `0` are the same holding.
            let held = position["qty"].as_str().and_then(|q| q.parse::<f64>().ok());
            if held == qty.parse::<f64>().ok() {
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

/// Binance's clock is not Keel's: the start's first signed call (the account's balances) measures
/// it, and a later jump either way is measured for after one refusal (`-1021`) and the order sent
/// once more, never twice into the book.
#[actix_web::test]
async fn a_live_bot_trades_through_a_skewed_venue_clock() {
    let live = live_bot("live-clock@example.com").await;
    // The start read the account's balances, the first signed call, which measured the clock;
    // the venue's clock then moves, so each order below meets a skew Keel has not measured.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.rest.time_requests() == 0 {
        assert!(Instant::now() < deadline, "the clock was never measured");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    live.rest.set_clock_skew_ms(20_000);
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(live.rest.clock_refusals(), 1, "refused once, measured, sent once more");

    live.rest.set_clock_skew_ms(-20_000);
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(live.rest.clock_refusals(), 2, "refused once, measured, sent once more");
    assert_eq!(live.rest.posts(), 2, "no duplicate order");
    live.assert_position("0.2").await;
}

/// Waits until the bot has `n` fills durable, and returns them.
async fn fills(live: &Live, n: usize) -> Vec<Value> {
    let path = format!("/api/v1/bots/{}/fills", live.bot);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = live.app.get_json(&path, &live.token).await;
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= n {
            return items;
        }
        assert!(Instant::now() < deadline, "{n} fills never shown: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Binance takes a buy's commission from the BTC received: the bot holds what the account holds,
/// the fee is shown in BTC and in USDT, and a close sells what is held rounded down to the step,
/// reporting the dust.
#[actix_web::test]
async fn commission_in_the_base_asset_leaves_the_position_the_account_holds() {
    let live = live_bot("live-fee-base@example.com").await;
    live.rest.set_fee_mode(FeeMode::Received);
    let buy = json!({"side": "buy", "qty": "0.123", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    let fill = fills(&live, 1).await[0].clone();
    assert_eq!(fill["commission"]["asset"], "BTC", "{fill}");
    assert_eq!(fill["commission"]["amount"], "0.000123", "{fill}");
    assert_eq!(fill["commission"]["charged_to"], "base", "{fill}");
    assert_eq!(fill["fee"], "0.0123", "valued in USDT at the fill price: {fill}");
    live.assert_position("0.122877").await;

    let path = format!("/api/v1/bots/{}/close-position", live.bot);
    let res = live.app.send(Method::POST, &path, None, &live.token).await;
    let status = res.status().as_u16();
    let close: Value = res.json().await.unwrap();
    assert!(matches!(status, 200 | 202), "{status}: {close}");
    let close_id = close["id"].as_u64().unwrap_or_else(|| close["order"]["id"].as_u64().unwrap());
    let closed = live.wait_for(close_id, "filled").await;
    assert_eq!(closed["qty"], "0.12287", "held, rounded down to the 0.00001 step: {closed}");
    live.assert_position("0.000007").await;
    let sold = live.rest.order(closed["client_order_id"].as_str().unwrap()).unwrap();
    assert_eq!(sold["origQty"], "0.12287000", "the venue was never asked for more than held");
    let events = live
        .app
        .get_json(&format!("/api/v1/bots/{}/events?limit=500", live.bot), &live.token)
        .await;
    assert!(events.to_string().contains("0.000007 left as dust"), "{events}");
}

/// An account paying fees in BNB: base and quote are untouched by the fee, which is shown in BNB
/// and, estimated at the bot's rate, in USDT.
#[actix_web::test]
async fn commission_in_bnb_touches_neither_base_nor_quote() {
    let live = live_bot("live-fee-bnb@example.com").await;
    live.rest.set_fee_mode(FeeMode::Bnb);
    let buy = json!({"side": "buy", "qty": "0.1", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    let fill = fills(&live, 1).await[0].clone();
    assert_eq!(fill["commission"]["asset"], "BNB", "{fill}");
    assert_eq!(fill["commission"]["amount"], "0.000015", "{fill}");
    assert_eq!(fill["commission"]["quote_value_estimated"], true, "{fill}");
    assert_eq!(fill["fee"], "0.01", "10 bps of 10 USDT: {fill}");
    live.assert_position("0.1").await;
}

/// A limit filled while its answer said nothing of commission: the fills come from the order's
/// trades, each with the BTC Binance took, even after a trades lookup answered 503.
#[actix_web::test]
async fn a_polled_fill_takes_its_commission_from_the_orders_trades() {
    let live = live_bot("live-fee-poll@example.com").await;
    live.rest.set_fee_mode(FeeMode::Received);
    let limit = json!({"side": "buy", "qty": "0.2", "type": "limit", "price": "90.00"});
    let order = live.place(&limit).await;
    let id = order["id"].as_u64().unwrap();
    let client_id = order["client_order_id"].as_str().unwrap().to_owned();
    live.wait_for(id, "accepted").await;
    live.rest.fail_trades_next(2, Fault::ServerError);
    assert!(live.rest.fill_limit(&client_id, "0.2".parse().unwrap()));
    live.wait_for(id, "filled").await;
    let fill = fills(&live, 1).await[0].clone();
    assert_eq!(fill["commission"]["asset"], "BTC", "{fill}");
    assert_eq!(fill["commission"]["amount"], "0.0002", "{fill}");
    live.assert_position("0.1998").await;
}

/// A stop-limit and a trailing stop go to Binance as its own order types and rest there (so they
/// hold while Keel is down), and fill from the venue's answers.
#[actix_web::test]
async fn a_live_stop_limit_and_trailing_stop_rest_at_the_venue() {
    let live = live_bot("live-order-types@example.com").await;
    let buy = json!({"side": "buy", "qty": "0.2", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    live.assert_position("0.2").await;

    let stop_limit = json!({"side": "sell", "qty": "0.1", "type": "stop_limit",
        "stop_price": "95.00", "price": "94.50"});
    let order = live.place(&stop_limit).await;
    let id = order["id"].as_u64().unwrap();
    let client_id = order["client_order_id"].as_str().unwrap().to_owned();
    live.wait_for(id, "accepted").await;
    let stored = live.rest.order(&client_id).unwrap();
    assert_eq!(
        (stored["type"].as_str(), stored["stopPrice"].as_str()),
        (Some("STOP_LOSS_LIMIT"), Some("95.00000000"))
    );
    assert!(live.rest.fill_limit(&client_id, "0.1".parse().unwrap()));
    let filled = live.wait_for(id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "94.5", "{filled}");

    let trailing =
        json!({"side": "sell", "qty": "0.1", "type": "trailing_stop", "trailing_bps": 100});
    let order = live.place(&trailing).await;
    let id = order["id"].as_u64().unwrap();
    let client_id = order["client_order_id"].as_str().unwrap().to_owned();
    live.wait_for(id, "accepted").await;
    assert_eq!(live.rest.order(&client_id).unwrap()["type"], "STOP_LOSS");
    live.rest.set_price("97".parse().unwrap());
    assert!(live.rest.fill_limit(&client_id, "0.1".parse().unwrap()));
    live.wait_for(id, "filled").await;
    live.assert_position("0").await;
    assert_eq!(live.rest.posts(), 3, "each sent once");
}

/// The kill switch answers per order what happened at the venue: canceled when the venue
/// confirmed it (a cancel that met a 503 is sent again and says how many attempts it took),
/// already closed when it had filled. A cancel that never goes through is `cancel_failed`
/// (`live_oco.rs`).
#[actix_web::test]
async fn the_kill_switch_answers_per_order_and_never_reports_a_cancel_that_did_not_happen() {
    let live = live_bot("live-kill@example.com").await;
    let limit = |price: &str| json!({"side": "buy", "qty": "0.1", "type": "limit", "price": price});
    let mut ids = Vec::new();
    for price in ["90.00", "91.00", "92.00"] {
        let order = live.place(&limit(price)).await;
        let id = order["id"].as_u64().unwrap();
        live.wait_for(id, "accepted").await;
        ids.push((id, order["client_order_id"].as_str().unwrap().to_owned()));
    }
    // The second fills at the venue before the kill; the first cancel sent meets a 503.
    assert!(live.rest.fill_limit(&ids[1].1, "0.1".parse().unwrap()));
    live.rest.fail_cancels_next(1, Fault::ServerError);

    let res = live.app.post_json("/api/v1/kill-switch", &json!({}), Some(&live.token)).await;
    assert_eq!(res.status().as_u16(), 200);
    let report: Value = res.json().await.unwrap();
    let outcome = |id: u64| {
        report["orders"].as_array().unwrap().iter().find(|o| o["order_id"] == id).cloned()
    };
    let retried: Vec<Value> = report["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["reason"].as_str().is_some_and(|r| r.contains("after 2 cancel attempts")))
        .cloned()
        .collect();
    assert_eq!(retried.len(), 1, "{report}");
    assert!(
        matches!(retried[0]["outcome"].as_str(), Some("canceled" | "already_closed")),
        "{report}"
    );

    // The filled one is never reported canceled (a poll may have settled it before the kill).
    if let Some(filled) = outcome(ids[1].0) {
        assert_eq!(filled["outcome"], "already_closed", "{report}");
        assert!(filled["reason"].as_str().unwrap().contains("FILLED"), "{report}");
    }
    let canceled: Vec<u64> = report["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == "canceled")
        .map(|o| o["order_id"].as_u64().unwrap())
        .collect();
    assert_eq!(report["orders_canceled"].as_u64().unwrap() as usize, canceled.len(), "{report}");
    assert!(canceled.len() >= 2, "{report}");
    for id in canceled {
        let client = &ids.iter().find(|(i, _)| *i == id).unwrap().1;
        assert_eq!(live.rest.order(client).unwrap()["status"], "CANCELED", "{report}");
    }
}
