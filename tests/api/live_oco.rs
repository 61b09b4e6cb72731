//! Protection that outlives Keel, and lost answers: a live bracket on Binance spot is one OCO
//! order list at the venue; failed cancels are retried until the venue has closed the order; and
//! whatever the venue does to a request (5xx, a timeout, a dropped connection, before or after
//! it acted), every order Keel placed ends in agreement with it, and no intent is ever sent
//! twice. Against the loopback fakes of Binance's stream and REST endpoints.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::fake_rest::Fault;
use crate::live::{Live, live_bot_defined};

/// A running live bot with a 2 % take-profit and 1 % stop-loss bracket, and a short
/// `recvWindow` so "never received" is believed after 2.5 s.
async fn bracket_bot(email: &str) -> Live {
    live_bot_defined(
        email,
        |s| s.venues.binance.recv_window_ms = 500,
        |body| body["bracket"] = json!({"take_profit_pct": "2", "stop_loss_pct": "1"}),
    )
    .await
}

/// A running live bot without a bracket and with the short `recvWindow`; its account's
/// circuit breaker tolerates the runs of faults these tests script (the breaker has its own
/// tests in `live.rs`).
async fn plain_bot(email: &str) -> Live {
    let configure = |s: &mut keel::configuration::Settings| {
        s.venues.binance.recv_window_ms = 500;
        s.bots.breaker_failures = 100;
    };
    live_bot_defined(email, configure, |_| ()).await
}

/// The bot's order `id` as `GET /orders` shows it now.
async fn order_now(live: &Live, id: u64) -> Value {
    let path = format!("/api/v1/bots/{}/orders?limit=100", live.bot);
    let page = live.app.get_json(&path, &live.token).await;
    page["items"].as_array().unwrap().iter().find(|o| o["id"] == id).cloned().unwrap_or_default()
}

/// Buys 0.1 at market (100 at the fake) and waits for its bracket's two legs to be open at the
/// venue; returns (take-profit, stop-loss) as `GET /orders` shows them.
async fn bracketed_entry(live: &Live) -> (Value, Value) {
    let entry = live.place(&json!({"side": "buy", "qty": "0.1", "type": "market"})).await;
    let id = entry["id"].as_u64().unwrap();
    live.wait_for(id, "filled").await;
    let tp = live.wait_for(id + 1, "accepted").await;
    let sl = live.wait_for(id + 2, "accepted").await;
    (tp, sl)
}

/// A decimal field as a number (`102.00` and `102` are the same price).
fn num(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

fn client_id(order: &Value) -> String {
    order["client_order_id"].as_str().unwrap().to_owned()
}

/// The list's client id Keel derives from the take-profit's.
fn list_id(tp: &Value) -> String {
    format!("{}-oco", client_id(tp))
}

/// The journal lines (`log` kind) whose message contains `needle`, waiting up to 10 s for at
/// least `n` of them.
async fn journal_lines(live: &Live, needle: &str, n: usize) -> Vec<String> {
    let path = format!("/api/v1/bots/{}/events?limit=500", live.bot);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = live.app.get_json(&path, &live.token).await;
        let lines: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "log")
            .filter_map(|e| e["data"]["message"].as_str())
            .filter(|m| m.contains(needle))
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "fewer than {n} lines with `{needle}`: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn a_live_bracket_on_binance_spot_is_one_oco_order_list_held_by_the_venue() {
    let live = bracket_bot("oco-native@example.com").await;
    let (tp, sl) = bracketed_entry(&live).await;
    assert_eq!((tp["origin"].as_str(), num(&tp["price"])), (Some("take_profit"), 102.0), "{tp}");
    assert_eq!((sl["origin"].as_str(), num(&sl["stop_price"])), (Some("stop_loss"), 99.0), "{sl}");
    assert_eq!(tp["venue_list"], list_id(&tp).as_str(), "{tp}");
    assert_eq!(sl["venue_list"], list_id(&tp).as_str(), "{sl}");

    // At the venue: one list, both legs open under Keel's own ids; only the entry went through
    // the single-order endpoint.
    let list = live.rest.order_list(&list_id(&tp)).expect("the list is at the venue");
    assert_eq!(list["listOrderStatus"], "EXECUTING", "{list}");
    assert_eq!((live.rest.posts(), live.rest.list_posts()), (1, 1));
    let venue_sl = live.rest.order(&client_id(&sl)).unwrap();
    assert_eq!(
        (venue_sl["type"].as_str(), venue_sl["status"].as_str()),
        (Some("STOP_LOSS"), Some("NEW"))
    );
    let venue_tp = live.rest.order(&client_id(&tp)).unwrap();
    assert_eq!(venue_tp["type"], "LIMIT_MAKER");

    // Prices crossing the stop change nothing in Keel: the venue holds the stop.
    live.ws.publish(
        "btcusdt@bookTicker",
        r#"{"u":2,"s":"BTCUSDT","b":"98.00000000","B":"5.00000000","a":"98.01000000","A":"5.00000000"}"#,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live.rest.posts(), 1, "no market order for an emulated stop");

    // The take-profit fills at the venue, which expires the stop: Keel settles both.
    assert!(live.rest.fill_limit(&client_id(&tp), "0.1".parse().unwrap()));
    let filled = live.wait_for(tp["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(num(&filled["avg_fill_price"]), 102.0, "{filled}");
    let expired = live.wait_for(sl["id"].as_u64().unwrap(), "canceled").await;
    assert!(expired["reason"].as_str().unwrap().contains("EXPIRED"), "{expired}");
    live.assert_position("0").await;
    assert_eq!((live.rest.posts(), live.rest.list_posts()), (1, 1), "nothing re-sent");
}

#[actix_web::test]
async fn a_stop_leg_that_filled_while_keel_was_down_settles_the_position_and_nothing_is_resent() {
    let mut live = bracket_bot("oco-restart@example.com").await;
    let (tp, sl) = bracketed_entry(&live).await;
    let (ws_url, rest_url) = (live.ws.url.clone(), live.rest.url());
    live.app = live
        .app
        .restart_with(move |s| {
            s.venues.binance.enabled = true;
            s.venues.binance.ws_url = ws_url.clone();
            s.venues.binance.rest_url = rest_url.clone();
            s.venues.binance.recv_window_ms = 500;
        })
        .await;
    // While Keel comes back the stop triggers at the venue (at 99) and the list expires the
    // take-profit.
    assert!(live.rest.fill_limit(&client_id(&sl), "0.1".parse().unwrap()));
    let stopped = live.wait_for(sl["id"].as_u64().unwrap(), "filled").await;
    assert_eq!(num(&stopped["avg_fill_price"]), 99.0, "{stopped}");
    let expired = live.wait_for(tp["id"].as_u64().unwrap(), "canceled").await;
    assert!(expired["reason"].as_str().unwrap().contains("EXPIRED"), "{expired}");
    live.assert_position("0").await;
    assert_eq!((live.rest.posts(), live.rest.list_posts()), (1, 1), "nothing re-sent");
    assert_eq!(live.rest.order_list(&list_id(&tp)).unwrap()["listOrderStatus"], "ALL_DONE");
}

/// Every fault at the order-list placement: the legs end as the venue has them (open when the
/// venue took the list, reconciled with nothing when it never did), and the list is sent once.
#[actix_web::test]
async fn a_lost_oco_placement_is_queried_never_resent_and_ends_as_the_venue_has_it() {
    let cases = [
        (Fault::ServerError, false),
        (Fault::AcceptThenServerError, true),
        (Fault::Drop, false),
        (Fault::AcceptThenDrop, true),
        (Fault::Hang, false),
    ];
    let runs = cases.iter().enumerate().map(|(i, (fault, stored))| async move {
        let live = bracket_bot(&format!("oco-place-{i}@example.com")).await;
        live.rest.fail_lists_next(1, *fault);
        let entry = live.place(&json!({"side": "buy", "qty": "0.1", "type": "market"})).await;
        let id = entry["id"].as_u64().unwrap();
        live.wait_for(id, "filled").await;
        let end = if *stored { "accepted" } else { "reconciled" };
        let tp = live.wait_for(id + 1, end).await;
        let sl = live.wait_for(id + 2, end).await;
        let at_venue = live.rest.order_list(&list_id(&tp));
        assert_eq!(at_venue.is_some(), *stored, "{fault:?}");
        for leg in [&tp, &sl] {
            match live.rest.order(&client_id(leg)) {
                Some(venue) => {
                    assert_eq!(venue["status"], "NEW", "{fault:?}");
                    assert_eq!(leg["filled_qty"], "0", "{fault:?}: {leg}");
                }
                None => assert_eq!(leg["filled_qty"], "0", "{fault:?}: {leg}"),
            }
        }
        assert_eq!(live.rest.list_posts(), 1, "{fault:?}: the list is never sent twice");
        if !*stored {
            // Never received: the same exits come back emulated, under new orders.
            let tp = live.wait_for(id + 3, "accepted").await;
            let sl = live.wait_for(id + 4, "accepted").await;
            assert_eq!(
                (tp["origin"].as_str(), sl["origin"].as_str()),
                (Some("take_profit"), Some("stop_loss"))
            );
            assert!(tp["venue_list"].is_null() && sl["venue_list"].is_null(), "{tp} {sl}");
            assert!(live.rest.order(&client_id(&sl)).is_none(), "the stop is held by Keel");
            journal_lines(&live, "emulated instead", 1).await;
        }
    });
    futures_util::future::join_all(runs).await;
}

/// Every fault at the order-list cancel: the cancel is retried with back-off until the venue
/// has closed the list, each failure is in the journal, and both legs end canceled.
#[actix_web::test]
async fn a_failed_oco_cancel_is_retried_until_the_venue_has_closed_the_list() {
    let faults =
        [Fault::ServerError, Fault::AcceptThenServerError, Fault::Drop, Fault::AcceptThenDrop];
    let runs = faults.iter().enumerate().map(|(i, fault)| async move {
        let live = bracket_bot(&format!("oco-cancel-{i}@example.com")).await;
        let (tp, sl) = bracketed_entry(&live).await;
        live.rest.fail_list_cancels_next(2, *fault);
        let tp_id = tp["id"].as_u64().unwrap();
        let cancel = format!("/api/v1/bots/{}/orders/{tp_id}", live.bot);
        let res = live.app.send(Method::DELETE, &cancel, None, &live.token).await;
        assert_eq!(res.status().as_u16(), 202, "{fault:?}");
        live.wait_for(tp_id, "canceled").await;
        live.wait_for(sl["id"].as_u64().unwrap(), "canceled").await;
        for leg in [&tp, &sl] {
            let venue = live.rest.order(&client_id(leg)).unwrap();
            assert_eq!(venue["status"], "CANCELED", "{fault:?}");
        }
        let failures = journal_lines(&live, &format!("cancel of order {tp_id} failed"), 1).await;
        assert!(failures[0].contains("cancel attempt 2"), "{fault:?}: {failures:?}");
        journal_lines(&live, &format!("order {tp_id} is closed at the venue after"), 1).await;
        assert_eq!(live.rest.list_posts(), 1, "{fault:?}");
        live.assert_position("0.1").await;
    });
    futures_util::future::join_all(runs).await;
}

/// Every fault at a single order's placement, query and cancel: the order ends with the
/// venue's status and executed quantity, and it is placed once.
#[actix_web::test]
async fn every_fault_at_place_query_and_cancel_ends_in_agreement_with_the_venue() {
    let faults =
        [Fault::ServerError, Fault::AcceptThenServerError, Fault::Drop, Fault::AcceptThenDrop];
    let runs = faults.iter().enumerate().map(|(i, fault)| async move {
        let live = plain_bot(&format!("faults-{i}@example.com")).await;
        // Place: lost or refused, then the first queries fail too.
        live.rest.fail_next(1, *fault);
        live.rest.fail_queries_next(2, *fault);
        let limit = json!({"side": "buy", "qty": "0.1", "type": "limit", "price": "90.00"});
        let placed = live.place(&limit).await;
        let id = placed["id"].as_u64().unwrap();
        let client = client_id(&placed);
        let stored = matches!(fault, Fault::AcceptThenServerError | Fault::AcceptThenDrop);
        let settled = if stored {
            // At the venue: it becomes accepted once a query gets through.
            live.wait_for(id, "accepted").await
        } else {
            live.wait_for(id, "reconciled").await
        };
        assert_eq!(live.rest.posts(), 1, "{fault:?}: one intent, one venue order");
        match live.rest.order(&client) {
            Some(venue) => assert_eq!(venue["executedQty"], "0.00000000", "{fault:?}"),
            None => assert!(!stored, "{fault:?}"),
        }
        assert_eq!(settled["filled_qty"], "0", "{fault:?}");
        if !stored {
            return;
        }
        // Cancel: the first two attempts fail, the third goes through.
        assert!(live.rest.fill_limit(&client, "0.04".parse().unwrap()));
        live.wait_for(id, "partially_filled").await;
        live.rest.fail_cancels_next(2, *fault);
        let cancel = format!("/api/v1/bots/{}/orders/{id}", live.bot);
        assert_eq!(
            live.app.send(Method::DELETE, &cancel, None, &live.token).await.status().as_u16(),
            202
        );
        let canceled = live.wait_for(id, "canceled").await;
        let venue = live.rest.order(&client).unwrap();
        assert_eq!(venue["status"], "CANCELED", "{fault:?}");
        assert_eq!(canceled["filled_qty"], "0.04", "{fault:?}: {canceled}");
        live.assert_position("0.04").await;
        assert_eq!(live.rest.posts(), 1, "{fault:?}");
        journal_lines(&live, &format!("order {id} is closed at the venue after"), 1).await;
    });
    futures_util::future::join_all(runs).await;
}

/// The kill switch retries a failed cancel within its answer: a cancel that went through on a
/// later attempt is `canceled` and says so; one that did not is `cancel_failed`, never counted,
/// journaled as still working at the venue, and chased there while the bot stays stopped until
/// the venue has canceled it.
#[actix_web::test]
async fn the_kill_switch_retries_failed_cancels_and_reports_only_what_the_venue_confirmed() {
    let retried = plain_bot("kill-retry@example.com").await;
    let stuck = plain_bot("kill-stuck@example.com").await;
    // The stuck one's stop sends its cancel 4 times within its answer: all 4 fail.
    for (live, faults) in [(&retried, 1), (&stuck, 4)] {
        let limit = json!({"side": "buy", "qty": "0.1", "type": "limit", "price": "90.00"});
        let order = live.place(&limit).await;
        let id = order["id"].as_u64().unwrap();
        live.wait_for(id, "accepted").await;
        live.rest.fail_cancels_next(faults, Fault::ServerError);
        let res = live.app.post_json("/api/v1/kill-switch", &json!({}), Some(&live.token)).await;
        assert_eq!(res.status().as_u16(), 200);
        let report: Value = res.json().await.unwrap();
        let answer = &report["orders"][0];
        let venue = live.rest.order(&client_id(&order)).unwrap();
        let reason = answer["reason"].as_str().unwrap_or_default();
        if faults == 1 {
            assert_eq!(answer["outcome"], "canceled", "{report}");
            assert!(reason.contains("after 2 cancel attempts"), "{report}");
            assert_eq!(venue["status"], "CANCELED");
            assert_eq!(report["orders_canceled"], 1);
        } else {
            assert_eq!(answer["outcome"], "cancel_failed", "{report}");
            assert!(reason.contains("503") && reason.contains("cancel attempts"), "{report}");
            assert_eq!(venue["status"], "NEW", "still working at the venue");
            assert_eq!(report["orders_canceled"], 0);
            assert_eq!(order_now(live, id).await["status"], "accepted", "still open in Keel");
            journal_lines(live, &format!("cancel of order {id} failed after"), 1).await;
            // Chased at the venue after the stop, until the venue has canceled it.
            let closed = format!("order {id} is closed at the venue (CANCELED)");
            journal_lines(live, &closed, 1).await;
            assert_eq!(live.rest.order(&client_id(&order)).unwrap()["status"], "CANCELED");
        }
    }
}

/// The retries of a failed cancel are on the bot's WebSocket channel as they happen: each
/// failure, the order's end, and the line that says it is closed at the venue.
#[actix_web::test]
async fn a_cancel_being_retried_shows_its_progress_on_the_bot_channel() {
    let live = plain_bot("cancel-progress@example.com").await;
    let limit = json!({"side": "buy", "qty": "0.1", "type": "limit", "price": "90.00"});
    let placed = live.place(&limit).await;
    let id = placed["id"].as_u64().unwrap();
    live.wait_for(id, "accepted").await;
    let mut socket =
        crate::status_events::subscribe(&live.app, &live.token, &format!("bot:{}", live.bot)).await;
    live.rest.fail_cancels_next(2, Fault::ServerError);
    let cancel = format!("/api/v1/bots/{}/orders/{id}", live.bot);
    assert_eq!(
        live.app.send(Method::DELETE, &cancel, None, &live.token).await.status().as_u16(),
        202
    );

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the retries never finished on the channel: {seen:#?}");
        let frame = crate::status_events::next_json(&mut socket, left).await;
        if frame["type"] != "event" {
            continue;
        }
        let data = &frame["data"];
        let line = match data["kind"].as_str() {
            Some("log") => data["data"]["message"].as_str().unwrap_or_default().to_owned(),
            Some("order") if data["data"]["id"] == id => {
                format!("order {}", data["data"]["status"].as_str().unwrap_or_default())
            }
            _ => continue,
        };
        let done = line.contains("is closed at the venue after 2 failed cancel attempt(s)");
        seen.push(line);
        if done {
            break;
        }
    }
    let position = |needle: &str| seen.iter().position(|l| l.contains(needle));
    let first = position("cancel attempt 2").expect("first failure");
    let second = position("cancel attempt 3").expect("second failure");
    let canceled = position("order canceled").expect("the order's end");
    assert!(first < second && second < canceled, "{seen:#?}");
    assert_eq!(live.rest.order(&client_id(&placed)).unwrap()["status"], "CANCELED");
}
