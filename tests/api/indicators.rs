//! Indicators: a running ema_cross bot publishes `ema_fast` and `ema_slow`, readable at
//! `GET /bots/{id}/indicators` (owner only) and streamed as `indicator` events on `bot:{id}`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use keel_testkit::{assert_error, spawn_app};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn busy_bot() -> Value {
    json!({
        "name": "busy",
        "venue": "sim",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "strategy": {"kind": "ema_cross", "params": {"fast": 2, "slow": 3, "qty": "0.001"}},
        "paper": {"starting_quote": "10000", "fee_bps": "10"}
    })
}

#[actix_web::test]
async fn a_running_bot_streams_and_keeps_its_indicator_series() {
    let app = spawn_app().await;
    let alice = app.register("ind-alice@example.com").await;
    let mallory = app.register("ind-mallory@example.com").await;
    let bot = app.create_bot(&alice.access, &busy_bot()).await["id"].as_u64().unwrap();
    let path = format!("/api/v1/bots/{bot}/indicators");

    // Before the bot first runs: its series are not known yet, and nobody else may look.
    let view = app.get_json(&path, &alice.access).await;
    assert_eq!(view, json!({"bot_id": bot, "series": []}));
    assert_error(app.send(Method::GET, &path, None, &mallory.access).await, 404, "BOT_NOT_FOUND")
        .await;
    let bad = format!("{path}?limit=0");
    assert_error(app.send(Method::GET, &bad, None, &alice.access).await, 422, "VALIDATION_FAILED")
        .await;

    let url = format!("{}/api/v1/ws", app.address.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    let bearer = format!("Bearer {}", alice.access).parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let subscribe = json!({"op": "subscribe", "channels": [format!("bot:{bot}")]});
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    assert_eq!(app.control(&alice.access, bot, "start").await.status().as_u16(), 200);

    // Two indicator events: the first may carry only the fast EMA (ready one trade earlier).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut events = Vec::new();
    while events.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, socket.next()).await.expect("indicator events");
        let Some(Ok(Message::Text(text))) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "event" && frame["data"]["kind"] == "indicator" {
            events.push(frame);
        }
    }
    let last = &events[1];
    assert_eq!(last["channel"], format!("bot:{bot}"));
    assert!(last["seq"].is_u64(), "{last}");
    let values = last["data"]["values"].as_object().unwrap();
    assert!(values.keys().all(|k| k == "ema_fast" || k == "ema_slow"), "{last}");
    for value in values.values() {
        value.as_str().unwrap().parse::<f64>().expect("a decimal string");
    }
    assert_eq!(last["data"]["ts"], last["ts"]);

    // Indicator events are not journal lines.
    let journal =
        app.get_json(&format!("/api/v1/bots/{bot}/events?limit=500"), &alice.access).await;
    assert!(journal["items"].as_array().unwrap().iter().all(|e| e["kind"] != "indicator"));

    let view = app.get_json(&format!("{path}?limit=5"), &alice.access).await;
    let series = view["series"].as_array().unwrap();
    let names: Vec<&str> = series.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ema_fast", "ema_slow"]);
    for s in series {
        assert_eq!((s["pane"].as_str(), s["style"].as_str()), (Some("price"), Some("line")));
        assert_eq!((s["min"].clone(), s["max"].clone()), (Value::Null, Value::Null));
        let points = s["points"].as_array().unwrap();
        assert!(!points.is_empty() && points.len() <= 5, "{s}");
        let ts: Vec<u64> = points.iter().map(|p| p["ts"].as_u64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "oldest first: {ts:?}");
        assert!(points.iter().all(|p| p["value"].is_string()));
    }
    // `since` cuts older points off.
    let newest = series[0]["points"].as_array().unwrap().last().unwrap()["ts"].as_u64().unwrap();
    let view = app.get_json(&format!("{path}?since={newest}"), &alice.access).await;
    let points = view["series"][0]["points"].as_array().unwrap();
    assert!(points.iter().all(|p| p["ts"].as_u64().unwrap() >= newest), "{view}");
    assert_error(app.send(Method::GET, &path, None, &mallory.access).await, 404, "BOT_NOT_FOUND")
        .await;
}
