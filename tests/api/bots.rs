//! Bots over HTTP: validation, the lifecycle state machine, ownership, manual trading, risk
//! rejections and the kill switch, on the sim venue.

use std::time::Duration;

use keel_testkit::{assert_error, quiet_bot, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};

#[actix_web::test]
async fn create_reports_every_bad_field_together() {
    let app = spawn_app().await;
    let user = app.register("bots-validate@example.com").await;
    let cases = [
        (json!({"strategy": {"kind": "martingale", "params": {}}}), vec!["strategy.kind"]),
        (
            json!({"strategy": {"kind": "ema_cross", "params": {"fast": 30, "slow": 10, "qty": "-1"}}}),
            vec!["strategy.params.fast", "strategy.params.qty"],
        ),
        // BTCUSDT's step on sim is 0.00001.
        (
            json!({"strategy": {"kind": "ema_cross", "params": {"fast": 3, "slow": 10, "qty": "0.0000001"}}}),
            vec!["strategy.params.qty"],
        ),
        (json!({"venue": "nowhere"}), vec!["venue"]),
        (json!({"symbol": "NOPEUSDT"}), vec!["symbol"]),
        (json!({"mode": "live"}), vec!["exchange_account_id"]),
        // sim is a spot venue: no leverage, no margin type.
        (json!({"leverage": 5, "margin_type": "cross"}), vec!["leverage", "margin_type"]),
        (
            json!({"risk": {"max_order_notional": "-5"}, "paper": {"starting_quote": "0"}}),
            vec!["risk.max_order_notional", "paper.starting_quote"],
        ),
    ];
    for (patch, fields) in cases {
        let mut body = quiet_bot();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = app.send(Method::POST, "/api/v1/bots", Some(&body), &user.access).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        let got: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        for field in &fields {
            assert!(
                got.iter().any(|g| g.starts_with(field)),
                "{patch}: expected {field} in {got:?}"
            );
        }
    }
    // Wrong types and unknown fields are 422 too, malformed JSON 400.
    let mut body = quiet_bot();
    body["mode"] = json!(7);
    assert_error(
        app.send(Method::POST, "/api/v1/bots", Some(&body), &user.access).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    body = quiet_bot();
    body["surprise"] = json!(true);
    assert_error(
        app.send(Method::POST, "/api/v1/bots", Some(&body), &user.access).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let res = app
        .client
        .post(format!("{}/api/v1/bots", app.address))
        .bearer_auth(&user.access)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "MALFORMED_JSON").await;
}

#[actix_web::test]
async fn the_lifecycle_follows_the_state_machine_and_answers_409_otherwise() {
    let app = spawn_app().await;
    let user = app.register("bots-lifecycle@example.com").await;
    let bot = app.create_bot(&user.access, &quiet_bot()).await;
    let id = bot["id"].as_u64().unwrap();
    assert_eq!(bot["status"], "created");
    assert_eq!(bot["filters"]["step_size"], "0.00001");

    assert_error(app.control(&user.access, id, "pause").await, 409, "CONFLICT").await;
    let steps = [("start", "running"), ("pause", "paused"), ("resume", "running")];
    for (action, status) in steps {
        let res = app.control(&user.access, id, action).await;
        assert_eq!(res.status().as_u16(), 200, "{action}");
        assert_eq!(res.json::<Value>().await.unwrap()["status"], status, "{action}");
    }
    assert_error(app.control(&user.access, id, "start").await, 409, "CONFLICT").await;
    // Editing and deleting need a stopped bot.
    let patch = json!({"name": "renamed"});
    assert_error(
        app.send(Method::PATCH, &format!("/api/v1/bots/{id}"), Some(&patch), &user.access).await,
        409,
        "CONFLICT",
    )
    .await;
    assert_error(
        app.send(Method::DELETE, &format!("/api/v1/bots/{id}"), None, &user.access).await,
        409,
        "CONFLICT",
    )
    .await;
    assert_error(app.control(&user.access, id, "explode").await, 404, "NOT_FOUND").await;

    let res = app.control(&user.access, id, "stop").await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "stopped");
    let res =
        app.send(Method::PATCH, &format!("/api/v1/bots/{id}"), Some(&patch), &user.access).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "renamed");
    let bad = json!({"strategy": {"kind": "ema_cross", "params": {"fast": 9, "slow": 9, "qty": "0.001"}}});
    assert_error(
        app.send(Method::PATCH, &format!("/api/v1/bots/{id}"), Some(&bad), &user.access).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;

    let listed = app.get_json("/api/v1/bots", &user.access).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let res = app.send(Method::DELETE, &format!("/api/v1/bots/{id}"), None, &user.access).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_error(
        app.send(Method::GET, &format!("/api/v1/bots/{id}"), None, &user.access).await,
        404,
        "BOT_NOT_FOUND",
    )
    .await;
}

#[actix_web::test]
async fn another_users_bot_is_not_found_everywhere() {
    let app = spawn_app().await;
    let owner = app.register("bots-owner@example.com").await;
    let other = app.register("bots-other@example.com").await;
    let id = app.create_bot(&owner.access, &quiet_bot()).await["id"].as_u64().unwrap();
    let order = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let attempts = [
        (Method::GET, format!("/api/v1/bots/{id}"), None),
        (Method::PATCH, format!("/api/v1/bots/{id}"), Some(json!({"name": "mine"}))),
        (Method::DELETE, format!("/api/v1/bots/{id}"), None),
        (Method::POST, format!("/api/v1/bots/{id}/start"), None),
        (Method::GET, format!("/api/v1/bots/{id}/orders"), None),
        (Method::GET, format!("/api/v1/bots/{id}/fills"), None),
        (Method::GET, format!("/api/v1/bots/{id}/position"), None),
        (Method::GET, format!("/api/v1/bots/{id}/performance"), None),
        (Method::GET, format!("/api/v1/bots/{id}/events"), None),
        (Method::POST, format!("/api/v1/bots/{id}/orders"), Some(order)),
        (Method::DELETE, format!("/api/v1/bots/{id}/orders/1"), None),
        (Method::POST, format!("/api/v1/bots/{id}/close-position"), None),
    ];
    for (method, path, body) in attempts {
        let res = app.send(method.clone(), &path, body.as_ref(), &other.access).await;
        assert_error(res, 404, "BOT_NOT_FOUND").await;
    }
    // And the owner's bot was not touched.
    assert_eq!(
        app.get_json(&format!("/api/v1/bots/{id}"), &owner.access).await["status"],
        "created"
    );
    assert!(
        app.get_json("/api/v1/bots", &other.access).await["items"].as_array().unwrap().is_empty()
    );
}

#[actix_web::test]
async fn manual_orders_fill_on_paper_update_the_position_and_respect_risk() {
    let app = spawn_app().await;
    let user = app.register("bots-trade@example.com").await;
    let mut body = quiet_bot();
    body["risk"] = json!({"max_order_notional": "500", "max_open_orders": 2});
    let id = app.create_bot(&user.access, &body).await["id"].as_u64().unwrap();
    let orders = format!("/api/v1/bots/{id}/orders");
    let buy = json!({"side": "buy", "qty": "0.002", "type": "market"});
    // Not running: 409.
    assert_error(app.send(Method::POST, &orders, Some(&buy), &user.access).await, 409, "CONFLICT")
        .await;
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);

    // A market order needs a price: wait for the sim to quote.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let filled: Value = loop {
        let res = app.send(Method::POST, &orders, Some(&buy), &user.access).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert!(std::time::Instant::now() < until, "no market buy filled in 10 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(filled["status"], "filled", "{filled}");
    assert_eq!(
        filled["client_order_id"].as_str().unwrap(),
        format!("keel-{id}-{:06}", filled["id"].as_u64().unwrap())
    );
    let position = app.get_json(&format!("/api/v1/bots/{id}/position"), &user.access).await;
    assert_eq!(position["qty"], "0.002", "{position}");

    // Risk: notional above 500 is refused with the reason.
    let big = json!({"side": "buy", "qty": "1", "type": "market"});
    let error = assert_error(
        app.send(Method::POST, &orders, Some(&big), &user.access).await,
        422,
        "ORDER_REJECTED",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("MAX_ORDER_NOTIONAL"), "{error}");
    // Precision finer than the tick.
    let off_tick = json!({"side": "buy", "qty": "0.001", "type": "limit", "price": "1000.001"});
    let error = assert_error(
        app.send(Method::POST, &orders, Some(&off_tick), &user.access).await,
        422,
        "ORDER_REJECTED",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("PRICE_OFF_TICK"), "{error}");
    // Absurd and negative quantities.
    for qty in ["-1", "0", "1e40"] {
        let bad = json!({"side": "buy", "qty": qty, "type": "market"});
        let res = app.send(Method::POST, &orders, Some(&bad), &user.access).await;
        assert!(matches!(res.status().as_u16(), 422), "qty {qty}: {}", res.status());
    }

    // A resting limit far below the market, then its cancel.
    let limit = json!({"side": "buy", "qty": "0.01", "type": "limit", "price": "1000.00"});
    let res = app.send(Method::POST, &orders, Some(&limit), &user.access).await;
    assert_eq!(res.status().as_u16(), 200);
    let resting: Value = res.json().await.unwrap();
    assert_eq!(resting["status"], "accepted", "{resting}");
    let cancel = format!("{orders}/{}", resting["id"]);
    let res = app.send(Method::DELETE, &cancel, None, &user.access).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "canceled");
    assert_error(app.send(Method::DELETE, &cancel, None, &user.access).await, 409, "CONFLICT")
        .await;

    // Close the position: flat afterwards, P&L is realised.
    let res = app
        .send(Method::POST, &format!("/api/v1/bots/{id}/close-position"), None, &user.access)
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let position = app.get_json(&format!("/api/v1/bots/{id}/position"), &user.access).await;
    let qty: rust_decimal::Decimal = position["qty"].as_str().unwrap().parse().unwrap();
    assert!(qty.is_zero(), "{position}");
    let fills = app.get_json(&format!("/api/v1/bots/{id}/fills"), &user.access).await;
    assert_eq!(fills["items"].as_array().unwrap().len(), 2, "{fills}");
    let perf = app.get_json(&format!("/api/v1/bots/{id}/performance"), &user.access).await;
    assert_eq!(perf["trade_count"], 1, "{perf}");
    let events = app.get_json(&format!("/api/v1/bots/{id}/events?limit=3"), &user.access).await;
    assert_eq!(events["items"].as_array().unwrap().len(), 3);
    assert!(events["next_after"].as_u64().is_some(), "{events}");
    assert_error(
        app.send(Method::GET, &format!("/api/v1/bots/{id}/events?limit=0"), None, &user.access)
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let portfolio = app.get_json("/api/v1/portfolio", &user.access).await;
    assert_eq!(portfolio["bots"], 1);
}

#[actix_web::test]
async fn the_kill_switch_stops_every_bot_and_cancels_their_orders() {
    let app = spawn_app().await;
    let user = app.register("bots-kill@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
        assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
        ids.push(id);
    }
    let limit = json!({"side": "buy", "qty": "0.01", "type": "limit", "price": "1000.00"});
    let res = app
        .send(Method::POST, &format!("/api/v1/bots/{}/orders", ids[0]), Some(&limit), &user.access)
        .await;
    assert_eq!(res.status().as_u16(), 200);

    let res = app
        .send(Method::POST, "/api/v1/kill-switch", Some(&json!({"flatten": true})), &user.access)
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["bots_stopped"], 3, "{report}");
    assert_eq!(report["orders_canceled"], 1, "{report}");
    assert_eq!(report["orders"][0]["outcome"], "canceled", "a paper order: {report}");
    assert_eq!(report["orders"][0]["bot_id"], ids[0], "{report}");
    for id in ids {
        assert_eq!(
            app.get_json(&format!("/api/v1/bots/{id}"), &user.access).await["status"],
            "stopped"
        );
    }
}

#[actix_web::test]
async fn the_kill_switch_takes_no_body_but_refuses_a_bad_one() {
    let app = spawn_app().await;
    let user = app.register("bots-kill-body@example.com").await;
    let res = app.send(Method::POST, "/api/v1/kill-switch", None, &user.access).await;
    assert_eq!(res.status().as_u16(), 200);
    for bad in [json!({"flatten": "yes"}), json!({"flaten": true}), json!(true)] {
        let res = app.send(Method::POST, "/api/v1/kill-switch", Some(&bad), &user.access).await;
        assert_error(res, 422, "VALIDATION_FAILED").await;
    }
    let res = app
        .client
        .post(format!("{}/api/v1/kill-switch", app.address))
        .bearer_auth(&user.access)
        .header("content-type", "application/json")
        .body("{\"flatten\": tru")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "MALFORMED_JSON").await;
}

#[actix_web::test]
async fn a_users_bots_together_stay_within_the_exposure_limit() {
    // Sim BTCUSDT starts at 98k: 0.002 is about 196, the limit 320 leaves about 124.
    let app = keel_testkit::spawn_app_with(|s| s.bots.max_user_exposure = 320.into()).await;
    let user = app.register("bots-exposure@example.com").await;
    let first = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    let second = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    for id in [first, second] {
        assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    }
    let buy = json!({"side": "buy", "qty": "0.002", "type": "market"});
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("/api/v1/bots/{first}/orders");
        let res = app.send(Method::POST, &path, Some(&buy), &user.access).await;
        if res.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < until, "no market buy filled in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second bot learns of the first one's position within its refresh interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let path = format!("/api/v1/bots/{second}/orders");
    let error = assert_error(
        app.send(Method::POST, &path, Some(&buy), &user.access).await,
        422,
        "ORDER_REJECTED",
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("USER_EXPOSURE"), "{error}");
    // A smaller order fits in what is left.
    let small = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let res = app.send(Method::POST, &path, Some(&small), &user.access).await;
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
}
