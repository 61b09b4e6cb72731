//! An owner's limits over all of their bots (`GET/PUT /api/v1/me/risk`): validated, stored with
//! the user across a restart; `max_leverage` refuses a bot above it at create, edit and start
//! and is not lowered under a running bot; `max_notional` refuses an order that would take the
//! notional of all the owner's bots past it (`MAX_USER_NOTIONAL`); the operator's
//! `bots.max_leverage` caps every bot.

use std::time::{Duration, Instant};

use keel_testkit::linear::spawn_app_with_linear;
use keel_testkit::{PASSWORD, TestApp, assert_error, error_fields, quiet_bot, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

const RISK: &str = "/api/v1/me/risk";

async fn put_risk(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.send(Method::PUT, RISK, Some(body), token).await
}

#[actix_web::test]
async fn limits_are_validated_stored_with_the_user_and_kept_across_a_restart() {
    let app = spawn_app().await;
    let email = "risk-limits@example.com";
    let user = app.register(email).await;
    let none = json!({"max_leverage": null, "max_notional": null});
    assert_eq!(app.get_json(RISK, &user.access).await, none, "a new user has no limits");

    let refused = [
        (json!({"max_leverage": 0, "max_notional": "0"}), vec!["max_leverage", "max_notional"]),
        (json!({"max_leverage": 126}), vec!["max_leverage"]),
        (json!({"max_notional": "-5"}), vec!["max_notional"]),
        (json!({"max_notional": 500}), vec!["max_notional"]),
        (json!({"max_leverage": "5"}), vec!["max_leverage"]),
        (json!({"max_leverage": 5, "max_levrage": 5}), vec!["max_levrage"]),
    ];
    for (body, fields) in refused {
        let error =
            assert_error(put_risk(&app, &user.access, &body).await, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&error), fields, "{body}: {error}");
    }
    assert_eq!(app.get_json(RISK, &user.access).await, none, "nothing refused was stored");

    let limits = json!({"max_leverage": 5, "max_notional": "2500.5"});
    let res = put_risk(&app, &user.access, &limits).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), limits);
    // Another user's limits are their own.
    let other = app.register("risk-limits-other@example.com").await;
    assert_eq!(app.get_json(RISK, &other.access).await, none);

    let app = app.restart_with(|_| {}).await;
    let token = app.token(email, PASSWORD).await;
    assert_eq!(app.get_json(RISK, &token).await, limits, "the limits survive a restart");
    // A field left out is no limit.
    let res = put_risk(&app, &token, &json!({"max_notional": "100"})).await;
    assert_eq!(res.status().as_u16(), 200);
    let only_notional = json!({"max_leverage": null, "max_notional": "100"});
    assert_eq!(app.get_json(RISK, &token).await, only_notional);
    let anonymous = app.call(Method::GET, RISK, None).await;
    assert_error(anonymous, 401, "UNAUTHORIZED").await;
}

#[actix_web::test]
async fn orders_past_the_owners_max_notional_across_two_bots_are_refused_and_journaled() {
    // Sim BTCUSDT starts near 98k: 0.002 is about 196; a limit of 320 leaves about 124 for the
    // second bot, which a 0.001 order fits in and a 0.002 order does not.
    let app = spawn_app().await;
    let user = app.register("risk-notional@example.com").await;
    let res = put_risk(&app, &user.access, &json!({"max_notional": "320"})).await;
    assert_eq!(res.status().as_u16(), 200);
    let first = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    let second = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    for id in [first, second] {
        assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    }
    app.market_buy_of(&user, first, "0.002").await;
    let buy = json!({"side": "buy", "qty": "0.002", "type": "market"});
    // The second bot learns of the first one's position within its refresh interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let path = format!("/api/v1/bots/{second}/orders");
    let error = assert_error(
        app.send(Method::POST, &path, Some(&buy), &user.access).await,
        422,
        "ORDER_REJECTED",
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("MAX_USER_NOTIONAL"), "{error}");
    assert!(message.contains("max_notional is 320"), "{error}");
    // The refusal is an order of its own, rejected, and a journal line.
    let orders = app.all_pages(&user, second, "orders").await;
    let rejected = orders.iter().find(|o| o["status"] == "rejected").expect("a rejected order");
    assert!(rejected["reason"].as_str().unwrap().starts_with("MAX_USER_NOTIONAL"), "{rejected}");
    let events = app.all_pages(&user, second, "events").await;
    assert!(
        events.iter().any(|e| e["kind"] == "order"
            && e["data"]["status"] == "rejected"
            && e["data"]["reason"].as_str().is_some_and(|r| r.starts_with("MAX_USER_NOTIONAL"))),
        "{events:?}"
    );
    // A smaller order fits in what is left.
    let small = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let res = app.send(Method::POST, &path, Some(&small), &user.access).await;
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    // Lifted, the limit no longer applies: the bots read it before each owner command.
    let res = put_risk(&app, &user.access, &json!({})).await;
    assert_eq!(res.status().as_u16(), 200);
    let res = app.send(Method::POST, &path, Some(&buy), &user.access).await;
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
}

/// An app with Bybit USDT perpetuals (a venue with leverage) against loopback fakes.
async fn app_with_linear(max_leverage: u32) -> TestApp {
    let linear = spawn_app_with_linear(false, move |s| s.bots.max_leverage = max_leverage).await;
    // The fakes keep serving while the app runs.
    std::mem::forget((linear.stream, linear.rest));
    linear.app
}

fn perp(leverage: u32) -> Value {
    json!({
        "name": "perp",
        "venue": "bybit_linear",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "leverage": leverage,
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}},
        "paper": {"starting_quote": "1000", "fee_bps": "0"}
    })
}

/// `method` on `path`, retried while the venue's instrument rules are not loaded (503).
async fn send_loaded(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &Value,
    token: &str,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.send(method.clone(), path, Some(body), token).await;
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        if status != 503 {
            return (status, json);
        }
        assert!(Instant::now() < deadline, "instrument rules never loaded: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn leverage_message(error: &Value) -> &str {
    assert_eq!(error["error"]["code"], "VALIDATION_FAILED", "{error}");
    assert_eq!(error_fields(&error["error"]), ["leverage"], "{error}");
    error["error"]["details"][0]["message"].as_str().unwrap()
}

#[actix_web::test]
async fn a_bot_above_its_owners_max_leverage_is_refused_at_create_edit_and_start() {
    let app = app_with_linear(125).await;
    let user = app.register("risk-leverage@example.com").await;
    let (status, created) =
        send_loaded(&app, Method::POST, "/api/v1/bots", &perp(10), &user.access).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();

    // Lowered under a bot that is not running: it stays defined but cannot start.
    let res = put_risk(&app, &user.access, &json!({"max_leverage": 5})).await;
    assert_eq!(res.status().as_u16(), 200);
    let res = app.control(&user.access, id, "start").await;
    assert_eq!(res.status().as_u16(), 422);
    let refused: Value = res.json().await.unwrap();
    assert!(leverage_message(&refused).contains("your max_leverage 5x"), "{refused}");
    assert_eq!(
        app.get_json(&format!("/api/v1/bots/{id}"), &user.access).await["status"],
        "created"
    );

    // Create and edit are held to it too.
    let (status, refused) =
        send_loaded(&app, Method::POST, "/api/v1/bots", &perp(8), &user.access).await;
    assert_eq!(status, 422, "{refused}");
    assert!(leverage_message(&refused).contains("your max_leverage 5x"), "{refused}");
    let path = format!("/api/v1/bots/{id}");
    let (status, refused) =
        send_loaded(&app, Method::PATCH, &path, &json!({"leverage": 6}), &user.access).await;
    assert_eq!(status, 422, "{refused}");
    assert!(leverage_message(&refused).contains("your max_leverage 5x"), "{refused}");
    let (status, edited) =
        send_loaded(&app, Method::PATCH, &path, &json!({"leverage": 5}), &user.access).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);

    // Not lowered under a running bot: the answer names it, and the limit stays.
    let error = assert_error(
        put_risk(&app, &user.access, &json!({"max_leverage": 3})).await,
        409,
        "CONFLICT",
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&format!("bot {id} (5x)")), "{error}");
    assert_eq!(app.get_json(RISK, &user.access).await["max_leverage"], 5);
    // Once it is stopped, the limit may go under it (and the bot cannot start again).
    assert_eq!(app.control(&user.access, id, "stop").await.status().as_u16(), 200);
    let res = put_risk(&app, &user.access, &json!({"max_leverage": 3})).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 422);
}

#[actix_web::test]
async fn the_servers_max_leverage_caps_every_bot_whatever_its_owner_allows() {
    let app = app_with_linear(4).await;
    let user = app.register("risk-server-cap@example.com").await;
    let res = put_risk(&app, &user.access, &json!({"max_leverage": 20})).await;
    assert_eq!(res.status().as_u16(), 200, "an owner's limit may be above the server's");
    let (status, refused) =
        send_loaded(&app, Method::POST, "/api/v1/bots", &perp(5), &user.access).await;
    assert_eq!(status, 422, "{refused}");
    assert!(leverage_message(&refused).contains("bots.max_leverage 4x"), "{refused}");
    let (status, created) =
        send_loaded(&app, Method::POST, "/api/v1/bots", &perp(4), &user.access).await;
    assert_eq!(status, 201, "{created}");
}
