//! Live trading on Binance USD-M futures over the real HTTP API, against loopback fakes of its
//! market stream and REST API (`keel_testkit::fake_futures`): a short entry, reduce-only exits,
//! a lost answer settled by a query, the kill switch closing the position reduce-only, and
//! native brackets (two reduce-only conditional orders at the venue) for a long and a short.
//!
//! `bot_start_sets_margin_type_and_leverage_before_the_first_order` needs the runtime to call
//! `OrderRouter::prepare` at bot start (helper `derivrt`'s part of issue 22): it is ignored until
//! that merges; run it with `--ignored` then and drop the `ignore`.

use std::time::{Duration, Instant};

use keel_testkit::fake_binance::FakeBinance;
use keel_testkit::fake_futures::{API_KEY, FakeFutures, FuturesFault, SECRET_KEY};
use keel_testkit::{TestApp, spawn_app_with};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

struct Live {
    app: TestApp,
    ws: FakeBinance,
    rest: FakeFutures,
    token: String,
    bot: u64,
}

async fn live_futures_bot(email: &str) -> Live {
    live_futures_bot_with(email, true).await
}

/// A running live futures bot; with `user_stream`, the account's user data stream is the
/// fake's (else the bot polls).
async fn live_futures_bot_with(email: &str, user_stream: bool) -> Live {
    live_futures_bot_defined(email, user_stream, |_| ()).await
}

/// The same, with `edit` applied to the bot's definition.
async fn live_futures_bot_defined(
    email: &str,
    user_stream: bool,
    edit: impl FnOnce(&mut Value),
) -> Live {
    let ws = FakeBinance::start().await;
    let rest = FakeFutures::start().await;
    rest.set_price("100".parse().unwrap());
    let (ws_url, rest_url, private_ws_url) = (ws.url.clone(), rest.url(), rest.ws_url());
    let app = spawn_app_with(move |s| {
        s.venues.binance_futures.enabled = true;
        s.venues.binance_futures.ws_url = ws_url;
        s.venues.binance_futures.rest_url = rest_url;
        if user_stream {
            s.venues.binance_futures.private_ws_url = private_ws_url;
        }
    })
    .await;
    let user = app.register(email).await;
    let account_id =
        app.add_exchange_account(&user.access, "binance_futures", API_KEY, SECRET_KEY).await;
    let bot = app
        .create_live_bot_with(&user.access, "binance_futures", account_id, |body| {
            body["leverage"] = json!(3);
            body["margin_type"] = json!("isolated");
            edit(body);
        })
        .await;
    let bot_json = app.get_json(&format!("/api/v1/bots/{bot}"), &user.access).await;
    assert_eq!(
        (bot_json["leverage"].clone(), bot_json["margin_type"].clone()),
        (json!(3), json!("isolated")),
        "{bot_json}"
    );
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
            r#"{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BTCUSDT","b":"99.90","B":"31.21000000","a":"100.00","A":"40.66000000"}"#,
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

    /// Waits until the bot's position is `qty` (compared as numbers).
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

    /// The order requests the fake accepted, in order.
    fn order_posts(&self) -> Vec<String> {
        self.rest.log().into_iter().filter(|l| l.starts_with("POST /fapi/v1/order?")).collect()
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[actix_web::test]
async fn a_short_entry_fills_a_lost_answer_is_settled_and_the_kill_switch_closes_reduce_only() {
    for user_stream in [true, false] {
        short_and_kill(user_stream).await;
    }
}

async fn short_and_kill(user_stream: bool) {
    let email = format!("futures-short-{user_stream}@example.com");
    let live = live_futures_bot_with(&email, user_stream).await;
    if user_stream {
        let deadline = Instant::now() + Duration::from_secs(5);
        while live.rest.stream_connections() == 0 {
            assert!(Instant::now() < deadline, "the account stream never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A short entry from flat: a plain sell, not reduce-only.
    let sell = json!({"side": "sell", "qty": "0.5", "type": "market"});
    let order = live.place(&sell).await;
    let id = order["id"].as_u64().unwrap();
    let filled = live.wait_for(id, "filled").await;
    assert_eq!(filled["avg_fill_price"], "100", "{filled}");
    assert_eq!(live.rest.position("BTCUSDT"), dec("-0.5"));
    let posts = live.order_posts();
    assert_eq!(posts.len(), 1);
    assert!(posts[0].contains("side=SELL") && !posts[0].contains("reduceOnly"), "{}", posts[0]);

    // The venue takes the next sell but the answer is lost: the bot queries, never resends.
    live.rest.fail_next(1, FuturesFault::AcceptThenDrop);
    let more = json!({"side": "sell", "qty": "0.25", "type": "market"});
    let order = live.place(&more).await;
    let id = order["id"].as_u64().unwrap();
    // Settled by the query (polling), or by the venue's own report of it (user stream).
    let settled = if user_stream { "filled" } else { "reconciled" };
    let reconciled = live.wait_for(id, settled).await;
    assert_eq!(reconciled["filled_qty"], "0.25", "{reconciled}");
    assert_eq!(live.rest.creates(), 2, "no duplicate order");
    assert_eq!(live.rest.position("BTCUSDT"), dec("-0.75"));
    live.assert_position("-0.75").await;

    // The kill switch flattens: a reduce-only buy of the whole short.
    let res = live
        .app
        .post_json("/api/v1/kill-switch", &json!({"flatten": true}), Some(&live.token))
        .await;
    let status = res.status().as_u16();
    let report: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{report}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live.rest.position("BTCUSDT").is_zero() {
        assert!(Instant::now() < deadline, "the kill switch never closed the short: {report}");
        live.quote();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let close = live.order_posts().pop().unwrap();
    assert!(close.contains("side=BUY") && close.contains("reduceOnly=true"), "{close}");
    assert!(close.contains("quantity=0.75"), "{close}");
    assert_eq!(live.rest.creates(), 3);
    live.assert_position("0").await;
}

#[actix_web::test]
async fn bot_start_sets_margin_type_and_leverage_before_the_first_order() {
    let live = live_futures_bot("futures-prepare@example.com").await;
    let buy = json!({"side": "buy", "qty": "0.5", "type": "market"});
    let order = live.place(&buy).await;
    live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    let paths: Vec<String> =
        live.rest.log().iter().map(|l| l.split('?').next().unwrap().to_owned()).collect();
    let at = |path: &str| paths.iter().position(|p| p == path);
    let (margin, leverage, first_order) =
        (at("POST /fapi/v1/marginType"), at("POST /fapi/v1/leverage"), at("POST /fapi/v1/order"));
    assert!(margin.is_some() && leverage.is_some(), "{paths:?}");
    assert!(margin < leverage && leverage < first_order, "{paths:?}");
    assert_eq!(live.rest.config("BTCUSDT"), Some((3, "ISOLATED".to_owned())));
    // Its exits (a take-profit, a close) go reduce-only.
    let close = format!("/api/v1/bots/{}/close-position", live.bot);
    let res = live.app.send(Method::POST, &close, Some(&json!({})), &live.token).await;
    assert!(res.status().is_success(), "{}", res.status());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live.rest.position("BTCUSDT").is_zero() {
        assert!(Instant::now() < deadline, "the close never reached the venue");
        live.quote();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live.order_posts().pop().unwrap().contains("reduceOnly=true"));
}

/// A decimal field as a number.
fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// A running live futures bot with a 10 % take-profit and 5 % stop-loss bracket.
async fn bracket_bot(email: &str) -> Live {
    live_futures_bot_defined(email, true, |body| {
        body["bracket"] = json!({"take_profit_pct": "10", "stop_loss_pct": "5"});
    })
    .await
}

/// Enters 0.5 on `side` at market (100 at the fake); waits for the bracket's legs to be open;
/// returns (take-profit, stop-loss) as `GET /orders` shows them.
async fn bracketed_entry(live: &Live, side: &str) -> (Value, Value) {
    let entry = live.place(&json!({"side": side, "qty": "0.5", "type": "market"})).await;
    let id = entry["id"].as_u64().unwrap();
    live.wait_for(id, "filled").await;
    let tp = live.wait_for(id + 1, "accepted").await;
    let sl = live.wait_for(id + 2, "accepted").await;
    (tp, sl)
}

fn client_id(order: &Value) -> String {
    order["client_order_id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_bracket_rests_at_the_venue_and_its_stop_fills_while_keel_is_down_for_a_long_and_a_short()
{
    // (entry side, exit side, take-profit, stop, realised P&L, fees: 0.04 % of each side)
    let cases =
        [("buy", "SELL", 110.0, 95.0, -2.5, 0.039), ("sell", "BUY", 90.0, 105.0, -2.5, 0.041)];
    for (entry, exit, take_profit, stop, realized, fees) in cases {
        let mut live = bracket_bot(&format!("futures-bracket-{entry}@example.com")).await;
        let (tp, sl) = bracketed_entry(&live, entry).await;
        assert_eq!((tp["origin"].as_str(), num(&tp["price"])), (Some("take_profit"), take_profit));
        assert_eq!((sl["origin"].as_str(), num(&sl["stop_price"])), (Some("stop_loss"), stop));
        assert_eq!(tp["venue_list"], format!("{}-oco", client_id(&tp)), "{tp}");
        // Both legs rest at the venue as reduce-only conditional orders under their own ids;
        // no plain order was sent for them.
        for (leg, kind) in [(&tp, "TAKE_PROFIT_MARKET"), (&sl, "STOP_MARKET")] {
            let venue = live.rest.algo(&client_id(leg)).expect("the leg is at the venue");
            assert_eq!(
                (venue["orderType"].as_str(), venue["algoStatus"].as_str(), venue["side"].as_str()),
                (Some(kind), Some("NEW"), Some(exit)),
                "{venue}"
            );
            assert_eq!((venue["reduceOnly"].clone(), num(&venue["quantity"])), (json!(true), 0.5));
        }
        assert_eq!(live.order_posts().len(), 1, "only the entry went to /fapi/v1/order");

        // Keel stops; the price goes through the stop meanwhile and the venue closes the
        // position; Keel comes back.
        let (ws_url, rest_url, private_ws_url) =
            (live.ws.url.clone(), live.rest.url(), live.rest.ws_url());
        let venue = live.rest.clone();
        let moved = std::sync::atomic::AtomicBool::new(false);
        live.app = live
            .app
            .restart_with(move |s| {
                if !moved.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    venue.set_price(Decimal::try_from(stop).unwrap());
                }
                s.venues.binance_futures.enabled = true;
                s.venues.binance_futures.ws_url = ws_url.clone();
                s.venues.binance_futures.rest_url = rest_url.clone();
                s.venues.binance_futures.private_ws_url = private_ws_url.clone();
            })
            .await;
        assert_eq!(live.rest.position("BTCUSDT"), Decimal::ZERO, "the venue's stop closed it");
        let stopped = live.wait_for(sl["id"].as_u64().unwrap(), "filled").await;
        assert_eq!(num(&stopped["avg_fill_price"]), stop, "{stopped}");
        live.wait_for(tp["id"].as_u64().unwrap(), "canceled").await;
        assert_eq!(live.rest.algo(&client_id(&tp)).unwrap()["algoStatus"], "CANCELED");
        live.assert_position("0").await;
        let path = format!("/api/v1/bots/{}/position", live.bot);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let position = live.app.get_json(&path, &live.token).await;
            let (got_realized, got_fees) = (num(&position["realized_pnl"]), num(&position["fees"]));
            if (got_realized - realized).abs() < 1e-9 && (got_fees - fees).abs() < 1e-9 {
                break;
            }
            assert!(Instant::now() < deadline, "P&L and fees never settled: {position}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(live.order_posts().len(), 1, "nothing was sent again");
    }
}

#[actix_web::test]
async fn a_bracket_the_venue_refuses_is_emulated_instead() {
    let live = bracket_bot("futures-bracket-refused@example.com").await;
    // Hedge mode behind Keel's back (after its start checked the mode): the venue refuses
    // reduce-only conditional orders (`reduceOnly` cannot be sent in hedge mode).
    live.rest.set_dual_side(true);
    let entry = live.place(&json!({"side": "buy", "qty": "0.5", "type": "market"})).await;
    let id = entry["id"].as_u64().unwrap();
    live.wait_for(id, "filled").await;
    live.wait_for(id + 1, "rejected").await;
    live.wait_for(id + 2, "rejected").await;
    // The same exits again, emulated: the take-profit a reduce-only limit at the venue, the
    // stop-loss held by Keel.
    let tp = live.wait_for(id + 3, "accepted").await;
    let sl = live.wait_for(id + 4, "accepted").await;
    assert!(tp["venue_list"].is_null() && sl["venue_list"].is_null(), "{tp} {sl}");
    let posted = live.order_posts().pop().unwrap();
    assert!(posted.contains("type=LIMIT") && posted.contains("reduceOnly=true"), "{posted}");
    assert!(live.rest.algo(&client_id(&sl)).is_none(), "the stop is held by Keel");
}
