//! Live trading on Bybit USDT perpetuals (`bybit_linear`) against loopback fakes of its public
//! stream, v5 REST API and private stream, through the real HTTP API: a short entry, exits sent
//! reduce-only so they can never open or flip a position, a lost answer settled by a query, the
//! kill switch, fills pushed by the private stream with the fee Bybit charged (no poll needed),
//! a dropped private stream reconnected and reconciled, and native brackets: a long's and a
//! short's take-profit and stop-loss resting at Bybit as conditional orders, the stop firing
//! there while Keel is stopped and Keel settling it when it is back.

use std::time::{Duration, Instant};

use keel_testkit::fake_bybit::{API_KEY, API_SECRET, BybitFault, FakeBybit};
use keel_testkit::fake_bybit_stream::FakeBybitStream;
use keel_testkit::linear::{LinearApp, spawn_app_with_linear};
use keel_testkit::{TestApp, eventually};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct Live {
    app: TestApp,
    stream: FakeBybitStream,
    rest: FakeBybit,
    token: String,
    bot: u64,
}

/// A running live bot on `bybit_linear` BTCUSDT; with `private`, its account's private stream
/// is the fake's (without, the bot polls).
async fn live_bot(email: &str, private: bool) -> Live {
    live_bot_defined(email, private, |_| ()).await
}

/// [`live_bot`] with its definition changed by `edit` (a bracket, say).
async fn live_bot_defined(email: &str, private: bool, edit: impl FnOnce(&mut Value)) -> Live {
    let LinearApp { app, stream, rest } = spawn_app_with_linear(private, |_| {}).await;
    rest.set_price("100".parse().unwrap());
    let user = app.register(email).await;
    let account = app.add_exchange_account(&user.access, "bybit_linear", API_KEY, API_SECRET).await;
    let bot = app.create_live_bot_with(&user.access, "bybit_linear", account, edit).await;
    let res = app.control(&user.access, bot, "start").await;
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stream.topics().contains("orderbook.1.BTCUSDT") {
        assert!(Instant::now() < deadline, "the bot never subscribed: {:?}", stream.topics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if private {
        let fake = rest.private().clone();
        eventually(WAIT, "the private subscription", || {
            let fake = fake.clone();
            async move { fake.live_connections() >= 1 }
        })
        .await;
    }
    Live { app, stream, rest, token: user.access, bot }
}

impl Live {
    fn quote(&self) {
        self.stream.publish(
            "orderbook.1.BTCUSDT",
            &json!({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": 1_700_000_000_000u64,
                "data": {"s": "BTCUSDT", "b": [["99.9", "5"]], "a": [["100.0", "5"]], "u": 1, "seq": 1}}),
        );
    }

    async fn place(&self, order: &Value) -> Value {
        self.app.place_quoted(&self.token, self.bot, order, || self.quote()).await
    }

    async fn wait_for(&self, id: u64, status: &str) -> Value {
        self.app.wait_for_order(&self.token, self.bot, id, status).await
    }

    async fn assert_position(&self, qty: &str) {
        let path = format!("/api/v1/bots/{}/position", self.bot);
        let deadline = Instant::now() + WAIT;
        loop {
            let position = self.app.get_json(&path, &self.token).await;
            let held = position["qty"].as_str().and_then(|q| q.parse::<Decimal>().ok());
            if held == qty.parse::<Decimal>().ok() {
                return;
            }
            assert!(Instant::now() < deadline, "the position never became {qty}: {position}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fills(&self, n: usize) -> Vec<Value> {
        let path = format!("/api/v1/bots/{}/fills", self.bot);
        let deadline = Instant::now() + WAIT;
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

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[actix_web::test]
async fn a_short_entry_is_closed_by_a_reduce_only_exit() {
    let live = live_bot("bybit-linear-short@example.com", false).await;
    let sell = json!({"side": "sell", "qty": "0.1", "type": "market"});
    let order = live.place(&sell).await;
    let entry = live.wait_for(order["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(entry["avg_fill_price"], "100", "{entry}");
    let sent = live.rest.order(entry["client_order_id"].as_str().unwrap()).unwrap();
    assert_eq!(sent["reduceOnly"], false, "an entry is not reduce-only: {sent}");
    assert_eq!(live.rest.position("BTCUSDT").0, dec("-0.1"));
    live.assert_position("-0.1").await;

    let path = format!("/api/v1/bots/{}/close-position", live.bot);
    let res = live.app.send(Method::POST, &path, None, &live.token).await;
    let status = res.status().as_u16();
    let close: Value = res.json().await.unwrap();
    assert!(matches!(status, 200 | 202), "{status}: {close}");
    let close_id = close["id"].as_u64().unwrap_or_else(|| close["order"]["id"].as_u64().unwrap());
    let closed = live.wait_for(close_id, "filled").await;
    assert_eq!(closed["side"], "buy", "{closed}");
    let exit = live.rest.order(closed["client_order_id"].as_str().unwrap()).unwrap();
    assert_eq!(exit["reduceOnly"], true, "the close can never open a long: {exit}");
    assert_eq!(live.rest.position("BTCUSDT").0, Decimal::ZERO);
    live.assert_position("0").await;
    assert_eq!(live.rest.creates(), 2);
}

#[actix_web::test]
async fn a_lost_answer_is_settled_by_a_query_and_never_resent() {
    let live = live_bot("bybit-linear-lost@example.com", false).await;
    // A first order, so the start's own requests are behind us when the fault is set.
    let first = live.place(&json!({"side": "sell", "qty": "0.1", "type": "market"})).await;
    live.wait_for(first["id"].as_u64().unwrap(), "filled").await;
    live.rest.fail_next(1, BybitFault::Drop);
    let sell = json!({"side": "sell", "qty": "0.2", "type": "market"});
    let order = live.place(&sell).await;
    let reconciled = live.wait_for(order["id"].as_u64().unwrap(), "reconciled").await;
    assert_eq!(reconciled["filled_qty"], "0.2", "{reconciled}");
    assert_eq!(live.rest.creates(), 2, "no duplicate order");
    assert_eq!(live.rest.position("BTCUSDT").0, dec("-0.3"));
    live.assert_position("-0.3").await;
}

#[actix_web::test]
async fn the_kill_switch_cancels_resting_orders_at_the_venue() {
    let live = live_bot("bybit-linear-kill@example.com", false).await;
    let mut clients = Vec::new();
    for price in ["110.0", "111.0"] {
        let limit = json!({"side": "sell", "qty": "0.1", "type": "limit", "price": price});
        let order = live.place(&limit).await;
        let id = order["id"].as_u64().unwrap();
        let accepted = live.wait_for(id, "accepted").await;
        clients.push(accepted["client_order_id"].as_str().unwrap().to_owned());
    }
    let res = live.app.post_json("/api/v1/kill-switch", &json!({}), Some(&live.token)).await;
    assert_eq!(res.status().as_u16(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["orders_canceled"], 2, "{report}");
    for client in &clients {
        assert_eq!(live.rest.order(client).unwrap()["orderStatus"], "Cancelled", "{report}");
    }
}

#[actix_web::test]
async fn the_private_stream_fills_orders_with_bybits_fee_and_reconnects_to_reconcile() {
    let live = live_bot("bybit-linear-stream@example.com", true).await;
    let limit = json!({"side": "sell", "qty": "0.2", "type": "limit", "price": "100.0"});
    let order = live.place(&limit).await;
    let id = order["id"].as_u64().unwrap();
    let accepted = live.wait_for(id, "accepted").await;
    let client = accepted["client_order_id"].as_str().unwrap().to_owned();

    // Pushed, not polled: no order look-up between the fill and the bot knowing it (a bot
    // whose stream is up polls every 30 s; the reconciliation its stream's start asks for is
    // given a moment to be done first).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let queries = live.rest.queries();
    assert!(live.rest.fill(&client, dec("0.05")));
    let partial = live.wait_for(id, "partially_filled").await;
    assert_eq!(partial["filled_qty"], "0.05", "{partial}");
    assert_eq!(live.rest.queries(), queries, "the fill came from the private stream");
    let fill = live.fills(1).await[0].clone();
    // The execution's own fee (0.05 × 100 × 0.055 %, USDT), not an estimate at the bot's rate
    // (10 bps: 0.005).
    assert_eq!(fill["commission"]["asset"], "USDT", "{fill}");
    assert_eq!(fill["commission"]["amount"], "0.00275", "{fill}");
    assert_eq!(fill["fee"], "0.00275", "{fill}");
    live.assert_position("-0.05").await;

    // The stream drops and stays down while the rest fills; when it is back, the bot
    // reconciles what it missed.
    let private = live.rest.private().clone();
    private.drop_connections();
    assert!(live.rest.fill(&client, dec("0.15")));
    eventually(WAIT, "a new subscription", || {
        let private = private.clone();
        async move { private.auths() >= 2 && private.live_connections() >= 1 }
    })
    .await;
    let filled = live.wait_for(id, "filled").await;
    let filled_qty = filled["filled_qty"].as_str().and_then(|q| q.parse::<Decimal>().ok());
    assert_eq!(filled_qty, Some(dec("0.2")), "{filled}");
    live.assert_position("-0.2").await;
    assert_eq!(live.rest.creates(), 1);
}

/// `prepare` at bot start is the runtime's (helper `derivrt`): once it calls it, the bot's
/// leverage and margin type are set at Bybit before its first order.
#[actix_web::test]
async fn the_bots_leverage_and_margin_type_are_set_before_its_first_order() {
    let live = live_bot("bybit-linear-prepare@example.com", false).await;
    let rest = live.rest.clone();
    eventually(WAIT, "the leverage set", || {
        let rest = rest.clone();
        async move { rest.leverage("BTCUSDT") == Some(1) }
    })
    .await;
    assert_eq!(live.rest.margin_mode(), "ISOLATED_MARGIN");
}

/// A bot (with the private stream when `private`) with a 2 % take-profit and 1 % stop-loss
/// bracket that entered on `side` (0.1 at 100); both legs checked at Bybit, reduce-only
/// conditional orders triggering at `legs` (take-profit, stop-loss). Returns them as Keel shows
/// them.
async fn bracketed_entry(
    email: &str,
    private: bool,
    side: &str,
    legs: (&str, &str),
) -> (Live, Value, Value) {
    let live = live_bot_defined(email, private, |body| {
        body["bracket"] = json!({"take_profit_pct": "2", "stop_loss_pct": "1"});
    })
    .await;
    // The API says so: on this venue a bracket outlives Keel (bybit spot's does not).
    let venues = live.app.get_json("/api/v1/venues", &live.token).await;
    let native = |venue: &str| {
        let items = venues["items"].as_array().unwrap();
        items.iter().find(|v| v["venue"] == venue).unwrap()["capabilities"]["native_brackets"]
            .clone()
    };
    assert_eq!((native("bybit_linear"), native("bybit")), (json!(true), json!(false)), "{venues}");
    let entry = live.place(&json!({"side": side, "qty": "0.1", "type": "market"})).await;
    let id = entry["id"].as_u64().unwrap();
    live.wait_for(id, "filled").await;
    let tp = live.wait_for(id + 1, "accepted").await;
    let sl = live.wait_for(id + 2, "accepted").await;
    let client = |o: &Value| o["client_order_id"].as_str().unwrap().to_owned();
    let list = format!("{}-oco", client(&tp));
    assert_eq!(
        (tp["venue_list"].as_str(), sl["venue_list"].as_str()),
        (Some(&*list), Some(&*list))
    );
    assert_eq!(
        (tp["origin"].as_str(), sl["origin"].as_str()),
        (Some("take_profit"), Some("stop_loss"))
    );
    // Both legs rest at Bybit as reduce-only conditional orders under their own ids.
    for (leg, trigger) in [(&tp, legs.0), (&sl, legs.1)] {
        let venue = live.rest.order(&client(leg)).expect("the leg is at bybit");
        assert_eq!(venue["orderStatus"], "Untriggered", "{venue}");
        assert_eq!(venue["reduceOnly"], true, "{venue}");
        assert_eq!(venue["triggerPrice"], trigger, "{venue}");
    }
    assert_eq!(live.rest.creates(), 3);
    (live, tp, sl)
}

/// A bracketed entry ([`bracketed_entry`]) on `side`, then Keel stops, the price moves to
/// `crossed` and fires the stop at Bybit, and once Keel is back it shows the stop filled, the
/// take-profit cancelled, the position flat and the trade's P&L with the fees Bybit took.
async fn stop_fires_while_keel_is_down(email: &str, side: &str, legs: (&str, &str), crossed: &str) {
    let (mut live, tp, sl) = bracketed_entry(email, false, side, legs).await;
    let client = |o: &Value| o["client_order_id"].as_str().unwrap().to_owned();

    // Keel stops; while it is down the price crosses the stop and Bybit fires it.
    live.app.stop.stop();
    let deadline = Instant::now() + WAIT;
    let health = format!("{}/health/live", live.app.address);
    while live.app.client.get(&health).send().await.is_ok() {
        assert!(Instant::now() < deadline, "keel never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.rest.set_price(dec(crossed));
    assert_eq!(live.rest.position("BTCUSDT").0, Decimal::ZERO, "the venue closed the position");
    let (ws_url, rest_url) = (live.stream.url.clone(), live.rest.url());
    live.app = live
        .app
        .restart_with(move |s| {
            s.venues.bybit_linear.enabled = true;
            s.venues.bybit_linear.ws_url = ws_url.clone();
            s.venues.bybit_linear.rest_url = rest_url.clone();
        })
        .await;

    let stopped = live.wait_for(sl["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(stopped["avg_fill_price"], crossed, "{stopped}");
    let canceled = live.wait_for(tp["id"].as_u64().unwrap(), "canceled").await;
    assert_eq!(live.rest.order(&client(&tp)).unwrap()["orderStatus"], "Deactivated", "{canceled}");
    live.assert_position("0").await;
    // P&L before fees, and the fees Bybit took on both trades (0.055 % of each's value).
    let path = format!("/api/v1/bots/{}/position", live.bot);
    let position = live.app.get_json(&path, &live.token).await;
    let (entry_value, exit_value) = (dec("10"), dec(crossed) * dec("0.1"));
    let direction = if side == "buy" { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
    let realized = (exit_value - entry_value) * direction;
    let fees = (entry_value + exit_value) * dec("0.00055");
    let read = |k: &str| position[k].as_str().and_then(|v| v.parse::<Decimal>().ok());
    assert_eq!((read("realized_pnl"), read("fees")), (Some(realized), Some(fees)), "{position}");
    assert_eq!(live.rest.creates(), 3, "nothing was sent again");
}

#[actix_web::test]
async fn a_long_brackets_stop_fires_at_bybit_while_keel_is_down_and_is_settled_after() {
    stop_fires_while_keel_is_down(
        "bybit-linear-bracket-long@example.com",
        "buy",
        ("102", "99"),
        "98.5",
    )
    .await;
}

#[actix_web::test]
async fn a_short_brackets_stop_fires_at_bybit_while_keel_is_down_and_is_settled_after() {
    stop_fires_while_keel_is_down(
        "bybit-linear-bracket-short@example.com",
        "sell",
        ("98", "101"),
        "101.5",
    )
    .await;
}

/// With the private stream up, Bybit's pushes of the stop firing (its conditional order
/// `Triggered`, then filled, with the execution's fee) settle the stop-loss leg while Keel
/// runs, and Keel cancels the take-profit.
#[actix_web::test]
async fn a_stop_fired_at_bybit_while_keel_runs_is_pushed_and_its_partner_cancelled() {
    let email = "bybit-linear-bracket-pushed@example.com";
    let (live, tp, sl) = bracketed_entry(email, true, "buy", ("102", "99")).await;
    live.rest.set_price(dec("98.9"));
    let stopped = live.wait_for(sl["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(stopped["avg_fill_price"], "98.9", "{stopped}");
    live.wait_for(tp["id"].as_u64().unwrap(), "canceled").await;
    let tp_client = tp["client_order_id"].as_str().unwrap();
    assert_eq!(live.rest.order(tp_client).unwrap()["orderStatus"], "Deactivated");
    live.assert_position("0").await;
    let fills = live.fills(2).await;
    let stop_fill = fills.iter().find(|f| f["order_id"] == sl["id"]).expect("the stop's fill");
    // 0.1 × 98.9 × 0.055 %, as the execution said.
    assert_eq!(stop_fill["fee"], "0.0054395", "{stop_fill}");
    assert_eq!(live.rest.creates(), 3, "nothing sent again");
}
