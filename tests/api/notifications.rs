//! Notifications against the real app and loopback receivers: signed webhooks, retries and the
//! attempt cap, the outbox across a restart, the SSRF guard, Telegram's `sendMessage` and its
//! 429 `retry_after`, secrets never shown again, and owners kept apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel::configuration::Settings;
use keel_testkit::fake_hook::{FakeHook, Received, Reply};
use keel_testkit::{TestApp, Tokens, assert_error, hmac_sha256_hex, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

/// Loopback receivers need private targets allowed; retries are quick.
pub(crate) fn loopback(settings: &mut Settings) {
    settings.notifications.allow_private_targets = true;
    settings.notifications.retry_base_ms = 200;
    settings.notifications.retry_max_ms = 1000;
    settings.notifications.connect_timeout_ms = 500;
    settings.notifications.timeout_ms = 500;
}

pub(crate) async fn add_channel(app: &TestApp, user: &Tokens, body: &Value) -> Value {
    let res =
        app.send(Method::POST, "/api/v1/notifications/channels", Some(body), &user.access).await;
    let status = res.status().as_u16();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn kill_switch(app: &TestApp, user: &Tokens) {
    let res = app.send(Method::POST, "/api/v1/kill-switch", None, &user.access).await;
    assert_eq!(res.status().as_u16(), 200);
}

pub(crate) async fn deliveries(app: &TestApp, user: &Tokens) -> Vec<Value> {
    let body = app.get_json("/api/v1/notifications/deliveries", &user.access).await;
    body["items"].as_array().unwrap().clone()
}

/// Waits until the user has one delivery and `holds` for it; returns it.
async fn delivery_where(
    app: &TestApp,
    user: &Tokens,
    what: &str,
    within: Duration,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        last = deliveries(app, user).await;
        if last.len() == 1 && holds(&last[0]) {
            return last[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no delivery {what} within {within:?}: {last:?}");
}

/// Waits until the user's only delivery is in `state`; returns it.
async fn settled(app: &TestApp, user: &Tokens, state: &str, within: Duration) -> Value {
    delivery_where(app, user, state, within, |d| d["state"] == state).await
}

/// Checks `Keel-Signature` as a receiver would, with an HMAC of its own (not Keel's code).
pub(crate) fn assert_signed(request: &Received, secret: &str) {
    let header = request.header("keel-signature").expect("a Keel-Signature header");
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&request.body);
    assert_eq!(v1, hmac_sha256_hex(secret.as_bytes(), &signed), "signature over t.body");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(now.abs_diff(t.parse().unwrap()) < 60, "t is now");
}

#[actix_web::test]
async fn a_webhook_receives_a_fill_with_a_valid_signature() {
    let hook = FakeHook::start().await;
    let app = spawn_app_with(loopback).await;
    let user = app.register("hook@example.com").await;
    let body = json!({"kind": "webhook", "url": hook.url("/keel"), "events": ["fill"]});
    let created = add_channel(&app, &user, &body).await;
    let secret = created["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() == 70, "{created}");
    assert_eq!(created["events"], json!(["fill"]));

    let bot = app.running_bot(&user).await;
    app.market_buy(&user, bot).await;
    let received = hook.wait_for(1, Duration::from_secs(10)).await;
    let request = &received[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/keel"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_signed(request, &secret);
    let event = request.json();
    assert_eq!(event["type"], "fill", "{event}");
    assert_eq!(event["bot_id"], bot);
    assert_eq!(event["data"]["side"], "buy");
    assert_eq!(request.header("keel-delivery"), Some(event["id"].to_string().as_str()));

    let delivery = settled(&app, &user, "delivered", Duration::from_secs(5)).await;
    assert_eq!(delivery["event"], "fill");
    assert_eq!(
        (delivery["attempts"].as_u64(), delivery["last_status"].as_u64()),
        (Some(1), Some(200))
    );
    assert_eq!(delivery["id"], event["id"]);

    // The secret was shown once: the list never holds it.
    let listed = app.get_json("/api/v1/notifications/channels", &user.access).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&secret), "{listed}");
    assert!(listed["items"][0].get("signing_secret").is_none());
    app.stop.stop();
}

#[actix_web::test]
async fn a_failing_receiver_is_retried_with_backoff_and_fails_after_the_cap() {
    let hook = FakeHook::start().await;
    hook.script([Reply::Json(500, "{}".into()), Reply::Hang]);
    let app = spawn_app_with(|s| {
        loopback(s);
        s.notifications.max_attempts = 4;
    })
    .await;
    let user = app.register("failing@example.com").await;
    let body = json!({"kind": "webhook", "url": hook.url("/h"), "events": ["kill_switch"]});
    add_channel(&app, &user, &body).await;
    kill_switch(&app, &user).await;

    // 500, then a timeout; then the receiver is gone and connections are refused.
    let received = hook.wait_for(2, Duration::from_secs(10)).await;
    hook.close();
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_millis(100), "backoff after the first failure: {gap:?}");
    let delivery = settled(&app, &user, "failed", Duration::from_secs(15)).await;
    assert_eq!(delivery["attempts"], 4, "{delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.starts_with("gave up after 4 attempts: connection failed"), "{error}");
    assert!(
        delivery.get("next_attempt_at_ms").is_none() && delivery.get("delivered_at_ms").is_none()
    );
    assert_eq!(hook.received().len(), 2, "nothing arrived once closed");
    assert_eq!(received[0].body, received[1].body, "the same body on every attempt");
    app.stop.stop();
}

#[actix_web::test]
async fn a_pending_delivery_survives_a_restart() {
    let hook = FakeHook::start().await;
    hook.script([Reply::Json(503, "{}".into())]);
    let slow_retry = |s: &mut Settings| {
        loopback(s);
        s.notifications.retry_base_ms = 3000;
        s.notifications.retry_max_ms = 3000;
    };
    let app = spawn_app_with(slow_retry).await;
    let user = app.register("restart@example.com").await;
    let body = json!({"kind": "webhook", "url": hook.url("/r"), "events": ["kill_switch"]});
    add_channel(&app, &user, &body).await;
    kill_switch(&app, &user).await;
    hook.wait_for(1, Duration::from_secs(10)).await;
    let pending = delivery_where(&app, &user, "tried once", Duration::from_secs(5), |d| {
        d["state"] == "pending" && d["attempts"] == 1
    })
    .await;
    assert_eq!(
        (pending["attempts"].as_u64(), pending["last_status"].as_u64()),
        (Some(1), Some(503))
    );
    assert!(pending["next_attempt_at_ms"].as_u64().is_some(), "{pending}");

    let app = app.restart_with(slow_retry).await;
    let received = hook.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(received[0].body, received[1].body, "the same delivery, from the outbox");
    let delivered = settled(&app, &user, "delivered", Duration::from_secs(5)).await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    assert_eq!(delivered["id"], pending["id"]);
    app.stop.stop();
}

#[actix_web::test]
async fn literal_private_targets_are_refused_when_the_channel_is_created() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register("ssrf@example.com").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.8/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "http://[fc00::1]/",
        "http://[::ffff:192.168.0.1]/",
    ] {
        let body = json!({"kind": "webhook", "url": url, "events": ["fill"]});
        let res = app
            .send(Method::POST, "/api/v1/notifications/channels", Some(&body), &user.access)
            .await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(error["details"][0]["field"], "url", "{url}: {error}");
        let message = error["details"][0]["message"].as_str().unwrap();
        assert!(message.contains("allow_private_targets"), "{url}: {message}");
    }
    let listed = app.get_json("/api/v1/notifications/channels", &user.access).await;
    assert_eq!(listed["items"], json!([]));
    app.stop.stop();
}

#[actix_web::test]
async fn a_host_name_resolving_to_loopback_is_refused_at_delivery_without_connecting() {
    let hook = FakeHook::start().await;
    let app = spawn_app_with(|_| {}).await;
    let user = app.register("rebind@example.com").await;
    let url = format!("http://localhost:{}/hook", hook.port());
    let body = json!({"kind": "webhook", "url": url, "events": ["kill_switch"]});
    add_channel(&app, &user, &body).await;
    kill_switch(&app, &user).await;
    let delivery = settled(&app, &user, "failed", Duration::from_secs(10)).await;
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.starts_with("localhost resolves to") && error.contains("loopback"), "{error}");
    assert_eq!(delivery["attempts"], 1, "refused for good, not retried");
    assert_eq!(hook.connections(), 0, "nothing connected to the receiver");
    app.stop.stop();
}

#[actix_web::test]
async fn telegram_gets_send_message_with_the_chat_id_and_its_retry_after_is_honoured() {
    let telegram = FakeHook::start().await;
    let too_many = json!({"ok": false, "error_code": 429,
        "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}});
    telegram.script([Reply::Json(429, too_many.to_string())]);
    let base = telegram.url("");
    let app = spawn_app_with(move |s| {
        s.notifications.telegram_api_url = base.clone();
        s.notifications.retry_base_ms = 20;
    })
    .await;
    let user = app.register("telegram@example.com").await;
    let body = json!({"kind": "telegram", "bot_token": TOKEN, "chat_id": "-1001234567890",
        "events": ["kill_switch", "daily_pnl"]});
    let created = add_channel(&app, &user, &body).await;
    assert!(created.get("signing_secret").is_none() && !created.to_string().contains(TOKEN));
    assert_eq!(created["chat_id"], "-1001234567890");
    kill_switch(&app, &user).await;

    let received = telegram.wait_for(2, Duration::from_secs(10)).await;
    for request in &received {
        assert_eq!(request.path, format!("/bot{TOKEN}/sendMessage"));
        let message = request.json();
        assert_eq!(message["chat_id"], "-1001234567890");
        assert!(message["text"].as_str().unwrap().contains("kill switch"), "{message}");
    }
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "waited retry_after (1 s), not the backoff: {gap:?}"
    );
    let delivery = settled(&app, &user, "delivered", Duration::from_secs(5)).await;
    assert_eq!(delivery["attempts"], 2);

    // Not readable back: not in the API, not in the store's files.
    let listed = app.get_json("/api/v1/notifications/channels", &user.access).await;
    assert!(!listed.to_string().contains(TOKEN) && listed["items"][0].get("bot_token").is_none());
    let secret_part = TOKEN.split_once(':').unwrap().1.as_bytes();
    for entry in walk(app.data_dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret_part.len()).any(|w| w == secret_part),
            "{entry:?} holds the token"
        );
    }
    app.stop.stop();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[actix_web::test]
async fn channels_are_private_to_their_owner_and_unknown_events_are_named() {
    let app = spawn_app_with(loopback).await;
    let owner = app.register("owner@example.com").await;
    let other = app.register("other@example.com").await;
    let body = json!({"kind": "webhook", "url": "https://hooks.example.com/k", "events": ["fill"]});
    let created = add_channel(&app, &owner, &body).await;
    let path = format!("/api/v1/notifications/channels/{}", created["id"]);

    let res = app.send(Method::DELETE, &path, None, &other.access).await;
    assert_error(res, 404, "NOTIFICATION_CHANNEL_NOT_FOUND").await;
    let theirs = app.get_json("/api/v1/notifications/channels", &other.access).await;
    assert_eq!(theirs["items"], json!([]));
    assert_eq!(deliveries(&app, &other).await, Vec::<Value>::new());

    let bad = json!({"kind": "webhook", "url": "https://hooks.example.com/k",
        "events": ["fill", "fills", "margin_call"]});
    let res =
        app.send(Method::POST, "/api/v1/notifications/channels", Some(&bad), &owner.access).await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    let message = error["details"][0]["message"].as_str().unwrap();
    assert!(message.contains("fills, margin_call"), "{message}");
    let mixed = json!({"kind": "telegram", "url": "https://x.example.com", "events": ["fill"]});
    let res =
        app.send(Method::POST, "/api/v1/notifications/channels", Some(&mixed), &owner.access).await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    let fields: Vec<&str> =
        error["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["url", "bot_token", "chat_id"], "{error}");

    assert_eq!(app.send(Method::DELETE, &path, None, &owner.access).await.status().as_u16(), 204);
    let res = app.send(Method::DELETE, &path, None, &owner.access).await;
    assert_error(res, 404, "NOTIFICATION_CHANNEL_NOT_FOUND").await;
    app.stop.stop();
}

#[actix_web::test]
async fn deleting_the_account_removes_its_channels_and_pending_deliveries() {
    let hook = FakeHook::start().await;
    hook.script([Reply::Json(500, "{}".into())]);
    // The retry comes 0.5 to 1 s after the first attempt: time to delete the account first.
    let app = spawn_app_with(|s| {
        loopback(s);
        s.notifications.retry_base_ms = 1000;
    })
    .await;
    let user = app.register("leaving@example.com").await;
    let body = json!({"kind": "webhook", "url": hook.url("/bye"), "events": ["kill_switch"]});
    add_channel(&app, &user, &body).await;
    kill_switch(&app, &user).await;
    hook.wait_for(1, Duration::from_secs(10)).await;
    delivery_where(&app, &user, "due again", Duration::from_secs(5), |d| d["attempts"] == 1).await;

    let res = app.send(Method::DELETE, "/api/v1/me", None, &user.access).await;
    assert_eq!(res.status().as_u16(), 200);
    // The retry was due within a second; with the row gone nothing more is sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.received().len(), 1, "no delivery after the account is gone");
    app.stop.stop();
}

#[actix_web::test]
async fn the_daily_summary_reports_each_bots_pnl_once_for_the_day_that_ended() {
    use keel_actors::store::{Store, StoreConfig, trees};

    let hook = FakeHook::start().await;
    let app = spawn_app_with(loopback).await;
    let user = app.register("daily@example.com").await;
    let body = json!({"kind": "webhook", "url": hook.url("/daily"), "events": ["daily_pnl"]});
    let secret =
        add_channel(&app, &user, &body).await["signing_secret"].as_str().unwrap().to_owned();
    let bot = app.running_bot(&user).await;
    app.market_buy(&user, bot).await;

    // Offline, the last summary is set five days back, as after a long stop.
    app.stop.stop();
    let today =
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 / 86_400_000;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(&StoreConfig::new(app.data_dir.path())) {
            Ok(store) => break store,
            Err(err) => {
                assert!(std::time::Instant::now() < deadline, "the store stays locked: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let meta = store.tree(trees::META).unwrap();
    meta.insert(keel_actors::notify::DAILY_MARKER, &(today - 5).to_be_bytes()).unwrap();
    store.flush().await.unwrap();
    drop((meta, store));

    let app = app.restart_with(loopback).await;
    let received = hook.wait_for(1, Duration::from_secs(15)).await;
    assert_signed(&received[0], &secret);
    let summary = received[0].json();
    assert_eq!(summary["type"], "daily_pnl", "{summary}");
    let expected_day = keel_core::notify::events::day_label(today - 1);
    assert_eq!(summary["data"]["day"], expected_day.as_str(), "one summary, for yesterday");
    let portfolio = &summary["data"]["portfolio"];
    assert_eq!(portfolio["bots"], 1, "{portfolio}");
    let item = &portfolio["items"][0];
    assert_eq!(item["bot_id"], bot);
    assert!(item["qty"].as_str().is_some_and(|q| q != "0"), "the bought position: {item}");
    assert!(item.get("realized_pnl").is_some() && item.get("unrealized_pnl").is_some());
    // Once: the marker moved, so no second one follows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.received().len(), 1);
    app.stop.stop();
}
