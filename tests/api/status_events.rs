//! Every bot state change reaches the bot's WebSocket channel within a second: started, paused
//! and resumed by the owner, paused by the bot itself (a risk limit), and stopped.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use keel_testkit::{TestApp, quiet_bot, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn subscribe(app: &TestApp, token: &str, channel: &str) -> Socket {
    let url = format!("{}/api/v1/ws", app.address.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let subscribe = json!({"op": "subscribe", "channels": [channel]});
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    loop {
        let frame = next_json(&mut socket, Duration::from_secs(5)).await;
        if frame["type"] == "subscribed" {
            assert_eq!(frame["channels"], json!([channel]), "{frame}");
            return socket;
        }
    }
}

pub(crate) async fn next_json(socket: &mut Socket, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("nothing heard within {within:?}"),
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).unwrap(),
            Ok(Some(Ok(_))) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
}

/// Waits at most `within` for a `status` event on the channel and returns its data.
pub(crate) async fn status_within(socket: &mut Socket, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no status event within {within:?}");
        let frame = next_json(socket, left).await;
        if frame["type"] == "event" && frame["data"]["kind"] == "status" {
            return frame["data"]["data"].clone();
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[actix_web::test]
async fn owner_controls_reach_the_bot_channel_within_a_second() {
    let app = spawn_app().await;
    let user = app.register("status-owner@example.com").await;
    let bot = app.create_bot(&user.access, &quiet_bot()).await["id"].as_u64().unwrap();
    let mut socket = subscribe(&app, &user.access, &format!("bot:{bot}")).await;

    for (action, status) in
        [("start", "running"), ("pause", "paused"), ("resume", "running"), ("stop", "stopped")]
    {
        let sent = Instant::now();
        assert_eq!(app.control(&user.access, bot, action).await.status().as_u16(), 200);
        let event = status_within(&mut socket, SECOND.saturating_sub(sent.elapsed())).await;
        assert_eq!(event["status"], status, "after {action}: {event}");
    }
    // The journal holds them too, so a client that reconnects can catch up.
    let journal = app.get_json(&format!("/api/v1/bots/{bot}/events?limit=100"), &user.access).await;
    let statuses: Vec<&str> = journal["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "status")
        .map(|e| e["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["running", "paused", "running", "stopped"]);
}

#[actix_web::test]
async fn a_bot_that_pauses_itself_says_so_with_its_reason() {
    let app = spawn_app().await;
    let user = app.register("status-risk@example.com").await;
    let mut body = quiet_bot();
    // Any fee is a loss past this limit: the first trade after a fill pauses the bot.
    body["risk"] = json!({"max_daily_loss": "0.0001"});
    let bot = app.create_bot(&user.access, &body).await["id"].as_u64().unwrap();
    let mut socket = subscribe(&app, &user.access, &format!("bot:{bot}")).await;
    assert_eq!(app.control(&user.access, bot, "start").await.status().as_u16(), 200);
    assert_eq!(status_within(&mut socket, SECOND).await["status"], "running");

    let orders = format!("/api/v1/bots/{bot}/orders");
    let buy = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.send(Method::POST, &orders, Some(&buy), &user.access).await.status() != 200 {
        assert!(Instant::now() < deadline, "no market order filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused = status_within(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    let reason = paused["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("max_daily_loss"), "{paused}");
    // The definition agrees with what the channel said.
    let record = app.get_json(&format!("/api/v1/bots/{bot}"), &user.access).await;
    assert_eq!(record["status"], "paused", "{record}");
}

#[actix_web::test]
async fn a_bot_given_up_is_journaled_failed_and_stopping_it_reaches_its_channel() {
    let live = crate::live::live_bot("status-failed@example.com").await;
    let (token, bot) = (live.token.clone(), live.bot);
    // Keel comes back without the bot's venue: the bot cannot load and is given up.
    let app = live.app.restart_with(|s| s.venues.binance.enabled = false).await;
    let record = app.get_json(&format!("/api/v1/bots/{bot}"), &token).await;
    assert_eq!(record["status"], "failed", "{record}");
    let journal = app.get_json(&format!("/api/v1/bots/{bot}/events?limit=500"), &token).await;
    let last = journal["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "status", "{last}");
    assert_eq!(last["data"]["status"], "failed", "{last}");
    assert_eq!(last["data"]["reason"], record["status_reason"], "{last}");

    // A failed bot has no actor; stopping it is still a status change on its channel.
    let mut socket = subscribe(&app, &token, &format!("bot:{bot}")).await;
    let sent = Instant::now();
    assert_eq!(app.control(&token, bot, "stop").await.status().as_u16(), 200);
    let mut event = status_within(&mut socket, SECOND.saturating_sub(sent.elapsed())).await;
    if event["status"] == "failed" {
        // The `failed` line read above is handed to the channel once durable, which on a loaded
        // machine can come after this subscription: the same line, not a new status.
        assert_eq!(event["reason"], last["data"]["reason"], "{event}");
        event = status_within(&mut socket, SECOND.saturating_sub(sent.elapsed())).await;
    }
    assert_eq!(event["status"], "stopped", "{event}");
}
