//! Strict input: every JSON body refuses unknown fields (naming them) and anything that is not
//! the object the OpenAPI document says it is. The body-taking routes are found by walking the
//! one route table against the document, so a new route is covered without a new test.

use keel::http::openapi::ApiDoc;
use keel::http::{API_PREFIX, Access, api_routes};
use keel_testkit::{TestApp, assert_error, quiet_bot, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use utoipa::OpenApi as _;

use crate::protection::concrete;

/// A field no body type has.
const STRANGER: &str = "zzz_not_a_field";

/// Each route of the table whose documented body is JSON, with that body's schema.
fn json_body_routes() -> Vec<(Method, &'static str, Access, Value)> {
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let routes: Vec<_> = api_routes()
        .into_iter()
        .filter_map(|route| {
            let method = route.method.as_str().to_lowercase();
            let operation = &doc["paths"][route.path][&method];
            assert!(operation.is_object(), "{route:?} is not in the document");
            let schema = operation["requestBody"]["content"]["application/json"]["schema"].clone();
            let schema = resolve(&doc, &schema);
            (!schema.is_null()).then(|| {
                let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
                (method, route.path, route.access, schema)
            })
        })
        .collect();
    assert!(routes.len() >= 9, "suspiciously few JSON body routes: {}", routes.len());
    routes
}

/// The body's own schema: through a `$ref`, and past a `null` alternative (the kill switch's).
fn resolve(doc: &Value, schema: &Value) -> Value {
    if let Some(target) = schema["$ref"].as_str() {
        return doc.pointer(&target[1..]).unwrap().clone();
    }
    if let Some(parts) = schema["oneOf"].as_array()
        && parts.iter().any(|p| p["type"] == "null")
    {
        let part = parts.iter().find(|p| p["type"] != "null").unwrap();
        return resolve(doc, part);
    }
    schema.clone()
}

/// An object with only the stranger in it, and the tag a tagged body needs before serde looks
/// at its other fields (`{"type": "market", …}`).
fn stranger_body(schema: &Value) -> Value {
    let mut body = json!({ STRANGER: true });
    if let Some(first) = schema["oneOf"].as_array().and_then(|variants| variants.first()) {
        body["type"] = first["properties"]["type"]["enum"][0].clone();
    }
    body
}

async fn send_raw(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: &str,
    token: &str,
) -> reqwest::Response {
    app.client
        .request(method.clone(), format!("{}{API_PREFIX}{}", app.address, concrete(path)))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn every_json_body_refuses_an_unknown_field_and_names_it() {
    let app = spawn_app().await;
    let user = app.register("strict-fields@example.com").await;
    for (method, path, _, schema) in json_body_routes() {
        let body = stranger_body(&schema).to_string();
        let res = send_raw(&app, &method, path, &body, &user.access).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert_eq!(fields, [STRANGER], "{method} {path}: {error}");
    }
}

#[actix_web::test]
async fn every_json_body_refuses_arrays_and_other_non_objects() {
    let app = spawn_app().await;
    let user = app.register("strict-shapes@example.com").await;
    for (method, path, _, _) in json_body_routes() {
        let nullable = path == "/kill-switch";
        let mut bodies = vec!["[]", "[true]", r#"["a", "b", "c"]"#, r#""text""#, "1", "true"];
        if !nullable {
            bodies.push("null");
        }
        for body in bodies {
            let res = send_raw(&app, &method, path, body, &user.access).await;
            let error = assert_error(res, 422, "VALIDATION_FAILED").await;
            assert_eq!(error["details"][0]["field"], "body", "{method} {path} {body}: {error}");
        }
        for body in ["{", "[true", "{} {}", "nope"] {
            let res = send_raw(&app, &method, path, body, &user.access).await;
            assert_error(res, 400, "MALFORMED_JSON").await;
        }
    }
}

#[actix_web::test]
async fn the_kill_switch_refuses_a_positional_flatten_and_keeps_the_position() {
    let app = spawn_app().await;
    let user = app.register("strict-kill@example.com").await;
    let bot = app.running_bot(&user).await;
    app.market_buy(&user, bot).await;
    let position = format!("/api/v1/bots/{bot}/position");
    let held = app.get_json(&position, &user.access).await["qty"].clone();
    assert_ne!(held, "0", "the buy made a position");
    let res = send_raw(&app, &Method::POST, "/kill-switch", "[true]", &user.access).await;
    assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(app.get_json(&position, &user.access).await["qty"], held, "nothing was flattened");
    let bots = app.get_json("/api/v1/bots", &user.access).await;
    assert_eq!(bots["items"][0]["status"], "running", "nothing was stopped");
    // What the document allows is accepted: no body, `null`, and `{}` (none flattens).
    for body in [None, Some("null"), Some("{}")] {
        let mut req = app
            .client
            .post(format!("{}/api/v1/kill-switch", app.address))
            .bearer_auth(&user.access);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{body:?}");
    }
    assert_eq!(app.get_json(&position, &user.access).await["qty"], held);
}

#[actix_web::test]
async fn a_positional_array_creates_no_bot() {
    let app = spawn_app().await;
    let user = app.register("strict-bots@example.com").await;
    let positional = json!(["quiet", "sim", "BTCUSDT", "paper", null,
        {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}}]);
    let res = app.post_json("/api/v1/bots", &positional, Some(&user.access)).await;
    assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(app.get_json("/api/v1/bots", &user.access).await["items"], json!([]));
}

/// `quiet_bot()` with `key` set to `value`.
fn bot_with(key: &str, value: Value) -> Value {
    let mut bot = quiet_bot();
    bot[key] = value;
    bot
}

#[actix_web::test]
async fn nested_objects_are_objects_too_and_errors_name_the_nested_field() {
    let app = spawn_app().await;
    let user = app.register("strict-nested@example.com").await;
    let cases = [
        (bot_with("risk", json!(["100"])), "risk"),
        (bot_with("paper", json!(["10000", "10"])), "paper"),
        (bot_with("bracket", json!(["1", "1"])), "bracket"),
        (bot_with("strategy", json!(["ema_cross", {}])), "strategy"),
        (bot_with("risk", json!({"max_position": "1", STRANGER: 1})), "risk.zzz_not_a_field"),
        (
            bot_with("strategy", json!({"kind": "dca", "params": {}, STRANGER: 1})),
            "strategy.zzz_not_a_field",
        ),
        (bot_with("paper", json!({"starting_quote": 10000})), "paper.starting_quote"),
        (bot_with("paper", json!({"fee_bps": "10"})), "paper.starting_quote"),
    ];
    for (body, field) in cases {
        let res = app.post_json("/api/v1/bots", &body, Some(&user.access)).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(error["details"][0]["field"], field, "{body}: {error}");
    }
    assert_eq!(app.get_json("/api/v1/bots", &user.access).await["items"], json!([]));
}

#[actix_web::test]
async fn an_order_has_only_its_types_fields_and_decimal_strings() {
    let app = spawn_app().await;
    let user = app.register("strict-orders@example.com").await;
    let bot = app.running_bot(&user).await;
    let orders = format!("/api/v1/bots/{bot}/orders");
    let cases = [
        (json!({"side": "buy", "qty": "0.001", "type": "market", "price": "1"}), "price"),
        (
            json!({"side": "buy", "qty": "0.001", "type": "stop", "stop_price": "1", "price": "1"}),
            "price",
        ),
        (json!({"side": "buy", "qty": 0.001, "type": "market"}), "qty"),
        (json!({"side": "buy", "qty": "0.001", "type": "limit"}), "price"),
    ];
    for (body, field) in cases {
        let res = app.post_json(&orders, &body, Some(&user.access)).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert_eq!(fields, [field], "{body}: {error}");
    }
    let orders_placed = app.get_json(&orders, &user.access).await;
    assert_eq!(orders_placed["items"], json!([]), "no order was placed");
}

/// The order types beyond market, limit and stop: each with its own fields, and a `limit` with a
/// `stop_price` is a stop-limit (the trigger is never dropped).
#[actix_web::test]
async fn stop_limit_trailing_stop_and_time_in_force_are_read_strictly() {
    let app = spawn_app().await;
    let user = app.register("strict-order-types@example.com").await;
    let bot = app.running_bot(&user).await;
    let orders = format!("/api/v1/bots/{bot}/orders");
    let refused = [
        (
            json!({"side": "buy", "qty": "0.001", "type": "limit", "price": "1", "trailing_bps": 50}),
            "trailing_bps",
        ),
        (json!({"side": "buy", "qty": "0.001", "type": "stop_limit", "stop_price": "1"}), "price"),
        (
            json!({"side": "buy", "qty": "0.001", "type": "stop_limit", "price": "1", "stop_price": "1", "time_in_force": "ioc"}),
            "time_in_force",
        ),
        (json!({"side": "buy", "qty": "0.001", "type": "trailing_stop"}), "trailing_bps"),
        (
            json!({"side": "buy", "qty": "0.001", "type": "trailing_stop", "trailing_bps": 50, "price": "1"}),
            "price",
        ),
        (
            json!({"side": "buy", "qty": "0.001", "type": "market", "time_in_force": "gtc"}),
            "time_in_force",
        ),
        (
            json!({"side": "buy", "qty": "0.001", "type": "limit", "price": "1", "time_in_force": "day"}),
            "time_in_force",
        ),
    ];
    for (body, field) in refused {
        let res = app.post_json(&orders, &body, Some(&user.access)).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(error["details"][0]["field"], field, "{body}: {error}");
    }
    // A limit with a trigger is a stop-limit, kept as one.
    let body = json!({"side": "sell", "qty": "0.001", "type": "limit", "price": "1.00",
        "stop_price": "2.00"});
    let res = app.post_json(&orders, &body, Some(&user.access)).await;
    let status = res.status().as_u16();
    let order: Value = res.json().await.unwrap();
    // A paper bot with nothing to sell refuses it on risk; either way it is a stop-limit.
    assert!(matches!(status, 200 | 422), "{status}: {order}");
    let page = app.get_json(&orders, &user.access).await;
    let placed = &page["items"][0];
    assert_eq!(placed["type"], "stop_limit", "{page}");
    assert_eq!(
        (placed["stop_price"].as_str(), placed["price"].as_str()),
        (Some("2.00"), Some("1.00"))
    );
    // Out of the trailing range: refused by the risk checks with the reason.
    let body = json!({"side": "buy", "qty": "0.001", "type": "trailing_stop", "trailing_bps": 5});
    let res = app.post_json(&orders, &body, Some(&user.access)).await;
    let error = assert_error(res, 422, "ORDER_REJECTED").await;
    assert!(error.to_string().contains("TRAILING_DELTA"), "{error}");
}
