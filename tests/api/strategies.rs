//! Owners' strategy modules over HTTP: upload (201, 413, 415, 422), the list with the built-in
//! kinds' schemas, privacy, bots of kind `wasm` trading on sim, params held to the module's
//! schema, delete while used (409), a trapping module pausing only its own bot, and a wasm bot
//! coming back after a restart with its saved state.

use std::time::{Duration, Instant};

use keel_testkit::{TestApp, Tokens, assert_error, error_fields, eventually, spawn_app};

use crate::status_events::{status_within, subscribe};
use reqwest::Method;
use serde_json::{Value, json};

/// The SDK-less module of docs/STRATEGY_ABI.md: buys 0.01 at market on its first trade, once.
const FIRST_TRADE: &str = include_str!("../../wasm/tests/modules/first_trade.wat");

pub(crate) fn first_trade() -> Vec<u8> {
    wat::parse_str(FIRST_TRADE).unwrap()
}

/// A module with `schema` as its params schema whose `keel_on_trade` runs `on_trade` (which
/// leaves an i32 status).
fn module(schema: &str, on_trade: &str) -> Vec<u8> {
    let escaped = schema.replace('\\', "\\\\").replace('"', "\\\"");
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 0) "{escaped}")
            (func (export "keel_abi_version") (result i32) (i32.const 1))
            (func (export "keel_alloc") (param i32) (result i32) (i32.const 4096))
            (func (export "keel_params_schema") (result i64) (i64.const {len}))
            (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
            (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0))
            (func (export "keel_on_trade") (param i64 i64 i32 i64 i32 i32) (result i32)
                {on_trade}))"#,
        len = schema.len()
    ))
    .unwrap()
}

/// A module that traps on every trade.
fn trapping() -> Vec<u8> {
    module(r#"{"type":"object"}"#, "(unreachable)")
}

pub(crate) fn wasm_bot(name: &str, module_id: u64, params: Value) -> Value {
    json!({
        "name": name,
        "venue": "sim",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "strategy": {"kind": "wasm", "module_id": module_id, "params": params},
        "paper": {"starting_quote": "100000", "fee_bps": "10"}
    })
}

async fn bot(app: &TestApp, user: &Tokens, id: u64) -> Value {
    app.get_json(&format!("/api/v1/bots/{id}"), &user.access).await
}

async fn orders(app: &TestApp, user: &Tokens, id: u64) -> Vec<Value> {
    let page = app.get_json(&format!("/api/v1/bots/{id}/orders?limit=100"), &user.access).await;
    page["items"].as_array().unwrap().clone()
}

/// Waits until the bot has a filled order; returns its orders.
pub(crate) async fn wait_for_fill(app: &TestApp, user: &Tokens, id: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let orders = orders(app, user, id).await;
        if orders.iter().any(|o| o["status"] == "filled") {
            return orders;
        }
        assert!(Instant::now() < deadline, "bot {id} never filled: {orders:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn an_upload_answers_its_fields_and_the_list_shows_builtins_and_own_modules() {
    let app = spawn_app().await;
    let user = app.register("strategies-upload@example.com").await;
    let bytes = first_trade();
    let res = app.upload_strategy(&user.access, "first trade", bytes.clone()).await;
    assert_eq!(res.status().as_u16(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_u64().unwrap();
    assert_eq!(location, format!("/api/v1/strategies/{id}"));
    assert_eq!(created["name"], "first trade");
    assert_eq!(created["size"], bytes.len());
    assert_eq!(created["sha256"].as_str().unwrap(), keel_wasm::sha256_hex(&bytes));
    assert_eq!(created["abi_version"], 1);
    assert_eq!(created["params_schema"]["additionalProperties"], false);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'), "{created}");
    assert_eq!(app.get_json(&location, &user.access).await, created);

    let list = app.get_json("/api/v1/strategies", &user.access).await;
    let items = list["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ema_cross", "rsi", "grid", "dca", "wasm"]);
    let ema = &items[0];
    assert_eq!(ema["builtin"], true);
    assert_eq!(ema["params_schema"]["required"], json!(["fast", "slow", "qty"]));
    assert_eq!(ema["params_schema"]["properties"]["fast"]["default"], 5);
    assert_eq!(items[4]["builtin"], false);
    assert_eq!(items[4]["name"], "first trade");
    assert_eq!(items[4]["module"], created);

    // Private to its owner: another user sees only the built-ins and gets 404 for the id.
    let other = app.register("strategies-other@example.com").await;
    let theirs = app.get_json("/api/v1/strategies", &other.access).await;
    assert_eq!(theirs["items"].as_array().unwrap().len(), 4);
    let path = format!("/api/v1/strategies/{id}");
    let res = app.send(Method::GET, &path, None, &other.access).await;
    assert_error(res, 404, "STRATEGY_NOT_FOUND").await;
    let res = app.send(Method::DELETE, &path, None, &other.access).await;
    assert_error(res, 404, "STRATEGY_NOT_FOUND").await;
    let res = app.send(Method::GET, "/api/v1/strategies/999999", None, &user.access).await;
    assert_error(res, 404, "STRATEGY_NOT_FOUND").await;
}

#[actix_web::test]
async fn a_bad_upload_is_refused_with_what_is_wrong_and_stores_nothing() {
    let app = spawn_app().await;
    let user = app.register("strategies-refused@example.com").await;
    let token = &user.access;

    let res = app
        .client
        .post(format!("{}/api/v1/strategies?name=x", app.address))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(first_trade())
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;

    let huge = vec![0u8; 4 * 1024 * 1024 + 1];
    assert_error(app.upload_strategy(token, "huge", huge).await, 413, "PAYLOAD_TOO_LARGE").await;

    let error = assert_error(
        app.upload_strategy(token, "junk", b"not wasm".to_vec()).await,
        422,
        "INVALID_MODULE",
    )
    .await;
    assert!(
        error["message"].as_str().unwrap().contains("not a valid WebAssembly module"),
        "{error}"
    );

    let bare = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let error =
        assert_error(app.upload_strategy(token, "bare", bare).await, 422, "INVALID_MODULE").await;
    assert!(
        error["message"].as_str().unwrap().contains("missing export `keel_abi_version`"),
        "{error}"
    );

    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
    )
    .unwrap();
    let error =
        assert_error(app.upload_strategy(token, "wasi", wasi).await, 422, "INVALID_MODULE").await;
    assert!(error["message"].as_str().unwrap().contains("unknown import"), "{error}");

    // A start function that never returns is refused within 2 s (fuel), not hung on.
    let endless = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func $spin (loop (br 0))) (start $spin)
            (func (export "keel_abi_version") (result i32) (i32.const 1))
            (func (export "keel_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "keel_init") (param i32 i32) (result i32) (i32.const 0))
            (func (export "keel_on_event") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let started = Instant::now();
    let error =
        assert_error(app.upload_strategy(token, "endless", endless).await, 422, "INVALID_MODULE")
            .await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(error["message"].as_str().unwrap().contains("fuel"), "{error}");

    let bad_schema = module(r#"{"type":"objekt"}"#, "(i32.const 0)");
    let error =
        assert_error(app.upload_strategy(token, "schema", bad_schema).await, 422, "INVALID_MODULE")
            .await;
    assert!(error["message"].as_str().unwrap().contains("JSON Schema"), "{error}");

    let res = app.upload_strategy(token, " ", first_trade()).await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&error), ["name"]);

    let list = app.get_json("/api/v1/strategies", token).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4, "{list}");
}

#[actix_web::test]
async fn a_wasm_bot_trades_on_sim_and_its_module_cannot_be_deleted_while_used() {
    let app = spawn_app().await;
    let user = app.register("strategies-bot@example.com").await;
    let module_id = app.uploaded_strategy(&user.access, "first", first_trade()).await;
    let created = app.create_bot(&user.access, &wasm_bot("wasm", module_id, json!({}))).await;
    let id = created["id"].as_u64().unwrap();
    assert_eq!(created["strategy"]["module_id"], module_id);
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    let orders = wait_for_fill(&app, &user, id).await;
    assert_eq!(orders.len(), 1, "one market buy, once: {orders:?}");
    assert_eq!(orders[0]["side"], "buy");
    let fills = format!("/api/v1/bots/{id}/fills");
    eventually(Duration::from_secs(10), "the fill is listed", || async {
        app.get_json(&fills, &user.access).await["items"].as_array().unwrap().len() == 1
    })
    .await;
    let indicators = app.get_json(&format!("/api/v1/bots/{id}/indicators"), &user.access).await;
    assert!(indicators.to_string().contains("last_price"), "{indicators}");

    let path = format!("/api/v1/strategies/{module_id}");
    let error =
        assert_error(app.send(Method::DELETE, &path, None, &user.access).await, 409, "CONFLICT")
            .await;
    assert!(error["message"].as_str().unwrap().contains(&id.to_string()), "{error}");
    assert_eq!(app.control(&user.access, id, "stop").await.status().as_u16(), 200);
    // Stopped but defined: still used.
    assert_error(app.send(Method::DELETE, &path, None, &user.access).await, 409, "CONFLICT").await;
    let res = app.send(Method::DELETE, &format!("/api/v1/bots/{id}"), None, &user.access).await;
    assert_eq!(res.status().as_u16(), 204);
    let res = app.send(Method::DELETE, &path, None, &user.access).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_error(app.send(Method::GET, &path, None, &user.access).await, 404, "STRATEGY_NOT_FOUND")
        .await;
    // A bot cannot name a deleted module.
    let res = app
        .send(
            Method::POST,
            "/api/v1/bots",
            Some(&wasm_bot("gone", module_id, json!({}))),
            &user.access,
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&error), ["strategy.module_id"]);
}

#[actix_web::test]
async fn a_wasm_bots_params_are_held_to_the_modules_schema() {
    let app = spawn_app().await;
    let user = app.register("strategies-params@example.com").await;
    let schema = r#"{"type":"object","required":["qty"],"additionalProperties":false,"properties":{"qty":{"type":"string","pattern":"^[0-9.]+$"},"levels":{"type":"integer","minimum":2}}}"#;
    let module_id =
        app.uploaded_strategy(&user.access, "schema", module(schema, "(i32.const 0)")).await;
    let cases = [
        (json!({"qty": 5}), vec!["strategy.params.qty"]),
        (json!({"qty": "1", "levels": 1}), vec!["strategy.params.levels"]),
        (json!({"levels": 3}), vec!["strategy.params"]),
        (json!({"qty": "1", "extra": true}), vec!["strategy.params"]),
    ];
    for (params, fields) in cases {
        let body = wasm_bot("params", module_id, params.clone());
        let res = app.send(Method::POST, "/api/v1/bots", Some(&body), &user.access).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(error_fields(&error), fields, "{params}: {error}");
    }
    app.create_bot(&user.access, &wasm_bot("ok", module_id, json!({"qty": "1", "levels": 3})))
        .await;
    // Another user's module is not theirs to run.
    let other = app.register("strategies-params-other@example.com").await;
    let body = wasm_bot("theirs", module_id, json!({"qty": "1"}));
    let res = app.send(Method::POST, "/api/v1/bots", Some(&body), &other.access).await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&error), ["strategy.module_id"]);
    let mut missing = body.clone();
    missing["strategy"] = json!({"kind": "wasm", "params": {}});
    let res = app.send(Method::POST, "/api/v1/bots", Some(&missing), &user.access).await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error_fields(&error), ["strategy.module_id"]);
}

#[actix_web::test]
async fn a_trapping_module_pauses_only_its_own_bot() {
    let app = spawn_app().await;
    let user = app.register("strategies-trap@example.com").await;
    let trap = app.uploaded_strategy(&user.access, "trap", trapping()).await;
    let good = app.uploaded_strategy(&user.access, "good", first_trade()).await;
    let trap_bot = app.create_bot(&user.access, &wasm_bot("trap", trap, json!({}))).await;
    let good_bot = app.create_bot(&user.access, &wasm_bot("good", good, json!({}))).await;
    let (trap_bot, good_bot) = (trap_bot["id"].as_u64().unwrap(), good_bot["id"].as_u64().unwrap());
    let mut socket = subscribe(&app, &user.access, &format!("bot:{trap_bot}")).await;
    for id in [trap_bot, good_bot] {
        assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    }
    // On the bot's channel: started, then paused by its module, with the reason.
    assert_eq!(status_within(&mut socket, Duration::from_secs(5)).await["status"], "running");
    let paused = status_within(&mut socket, Duration::from_secs(20)).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    assert!(paused["reason"].as_str().unwrap().contains("strategy failed"), "{paused}");
    eventually(Duration::from_secs(20), "the trapping bot pauses", || async {
        bot(&app, &user, trap_bot).await["status"] == "paused"
    })
    .await;
    let paused = bot(&app, &user, trap_bot).await;
    let reason = paused["status_reason"].as_str().unwrap();
    assert!(reason.contains("strategy failed") && reason.contains("unreachable"), "{paused}");
    wait_for_fill(&app, &user, good_bot).await;
    assert_eq!(bot(&app, &user, good_bot).await["status"], "running");
    let events =
        app.get_json(&format!("/api/v1/bots/{trap_bot}/events?limit=100"), &user.access).await;
    assert!(events.to_string().contains("strategy failed"), "{events}");
}

#[actix_web::test]
async fn a_wasm_bot_comes_back_after_a_restart_with_its_saved_state() {
    let app = spawn_app().await;
    let user = app.register("strategies-restart@example.com").await;
    let module_id = app.uploaded_strategy(&user.access, "first", first_trade()).await;
    let id = app.create_bot(&user.access, &wasm_bot("wasm", module_id, json!({}))).await["id"]
        .as_u64()
        .unwrap();
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    wait_for_fill(&app, &user, id).await;
    // The module's state ("already bought") is saved with the bot's; give the periodic save a
    // moment past the fill's own save.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = app.restart_with(|_| {}).await;
    eventually(Duration::from_secs(20), "the bot runs again", || async {
        app.send(Method::GET, &format!("/api/v1/bots/{id}"), None, &user.access)
            .await
            .json::<Value>()
            .await
            .is_ok_and(|b| b["status"] == "running")
    })
    .await;
    let indicators = format!("/api/v1/bots/{id}/indicators");
    eventually(Duration::from_secs(20), "the module sees trades again", || async {
        app.get_json(&indicators, &user.access).await.to_string().contains("last_price")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(orders(&app, &user, id).await.len(), 1, "restored: it does not buy again");
    let list = app.get_json("/api/v1/strategies", &user.access).await;
    assert_eq!(list["items"][4]["module"]["id"], module_id);
}
