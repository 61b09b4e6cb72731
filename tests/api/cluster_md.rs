//! Cluster mode, market data (docs/CLUSTER.md): two nodes against one fake Binance and a real
//! NATS (`KEEL_TEST_NATS_URL`). The exchange sees one connection; the other node's WebSocket
//! clients get the holder's trades through JetStream, once each; when the holder stops, the
//! other node takes the lease and connects within 10 s. Metrics carry the node's id.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use keel::configuration::Settings;
use keel_testkit::{TestApp, spawn_app_with};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_binance::FakeBinance;
use crate::fake_rest::FakeRest;
use crate::ws::{Socket, connect, expect_type};

const URL_VAR: &str = "KEEL_TEST_NATS_URL";
const TRADES: &str = "market:binance:BTCUSDT:trades";

/// A node of cluster `name` on the fake exchange.
async fn node(id: &str, name: &str, nats: &str, fake: &FakeBinance, rest: &FakeRest) -> TestApp {
    let (id, name, nats) = (id.to_owned(), name.to_owned(), nats.to_owned());
    let (ws_url, rest_url) = (fake.url.clone(), rest.url());
    spawn_app_with(move |s: &mut Settings| {
        s.venues.binance.enabled = true;
        s.venues.binance.ws_url = ws_url;
        s.venues.binance.rest_url = rest_url;
        s.cluster.enabled = true;
        s.cluster.node_id = id;
        s.cluster.nats_url = nats;
        s.cluster.name = name;
    })
    .await
}

/// A client of `app` subscribed to BTCUSDT's trades on Binance.
async fn trades_client(app: &TestApp, email: &str) -> Socket {
    let user = app.register(email).await;
    let mut socket = connect(app, Some(&user.access)).await.unwrap();
    expect_type(&mut socket, "authenticated").await;
    let op = json!({"op": "subscribe", "channels": [TRADES]});
    socket.send(Message::Text(op.to_string().into())).await.unwrap();
    let subscribed = expect_type(&mut socket, "subscribed").await;
    assert_eq!(subscribed["channels"], json!([TRADES]), "{subscribed}");
    socket
}

fn trade(fake: &FakeBinance, id: u64) {
    let payload = format!(
        r#"{{"e":"trade","E":1732307467123,"s":"BTCUSDT","t":{id},"p":"98234.51000000","q":"0.00120000","T":1732307467122,"m":true,"M":true}}"#
    );
    fake.publish("btcusdt@trade", &payload);
}

/// The trade id of the next trade event; a gap before it fails the test.
async fn next_trade(socket: &mut Socket) -> u64 {
    let (gap, id) = next_trade_after_gap(socket).await;
    assert!(gap.is_none(), "a gap was reported: {gap:?}");
    id
}

/// The next trade event's id, and the reason of the gap reported before it, if any.
async fn next_trade_after_gap(socket: &mut Socket) -> (Option<String>, u64) {
    let mut gap = None;
    let id = next_trade_noting_gaps(socket, &mut gap).await;
    (gap, id)
}

/// The next trade event's id; a gap reported before it goes to `gap`, where it stays if this
/// is cancelled before the trade comes.
async fn next_trade_noting_gaps(socket: &mut Socket, gap: &mut Option<String>) -> u64 {
    loop {
        let event = expect_type(socket, "event").await;
        assert_eq!(event["channel"], TRADES, "{event}");
        match event["data"]["kind"].as_str() {
            Some("trade") => return event["data"]["trade_id"].as_u64().unwrap(),
            Some("gap") => *gap = Some(event["data"]["reason"].to_string()),
            _ => panic!("unexpected event {event}"),
        }
    }
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes trade ids from `from` every 100 ms until `socket` receives one; returns it, with
/// the gap reported before it.
async fn first_trade(fake: &FakeBinance, socket: &mut Socket, from: u64) -> (Option<String>, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = from;
    // Kept across the waits: a gap that came just before a wait ran out is still the one
    // reported before the trade.
    let mut gap = None;
    loop {
        assert!(Instant::now() < deadline, "no trade reached the client within 10 s");
        trade(fake, id);
        id += 1;
        let next = next_trade_noting_gaps(socket, &mut gap);
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(100), next).await {
            return (gap, got);
        }
    }
}

#[actix_web::test]
async fn one_node_holds_the_exchange_connection_and_another_takes_over_when_it_stops() {
    let Some(nats) = crate::service_url(URL_VAR, "cluster_md") else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let fake = FakeBinance::start().await;
    let rest = FakeRest::start().await;
    let a = node("a", &name, &nats, &fake, &rest).await;
    let b = node("b", &name, &nats, &fake, &rest).await;

    // A wants BTCUSDT first, takes its lease and connects.
    let mut on_a = trades_client(&a, "cluster-a@example.com").await;
    wait_for("A subscribes at the exchange", Duration::from_secs(10), || {
        fake.subscriptions().contains("btcusdt@trade")
    })
    .await;
    assert_eq!(fake.connections(), 1);

    // B wants it too: it follows A through NATS instead of connecting.
    let mut on_b = trades_client(&b, "cluster-b@example.com").await;
    let (gap, first) = first_trade(&fake, &mut on_b, 1_000).await;
    assert!(first >= 1_000 && gap.is_none(), "{first} {gap:?}");
    // The same trade twice from the exchange reaches B once, with no gap reported.
    trade(&fake, 5_000);
    trade(&fake, 5_000);
    trade(&fake, 5_001);
    let mut seen = Vec::new();
    while seen.last() != Some(&5_001) {
        seen.push(next_trade(&mut on_b).await);
    }
    seen.retain(|id| *id >= 5_000);
    assert_eq!(seen, vec![5_000, 5_001], "B saw a trade twice or missed one");
    // Still one connection at the exchange for the two nodes.
    assert_eq!(fake.connections(), 1);
    // A's own client gets the exchange's trades directly.
    assert!(next_trade(&mut on_a).await >= 1_000);

    let ready: Value = b.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["cluster"]["nats"], "connected", "{ready}");
    assert_eq!(ready["checks"]["cluster"]["node_id"], "b", "{ready}");

    // The holder goes away without a word: B takes the lease when it lapses and connects.
    let stopped = Instant::now();
    a.stop.stop();
    drop(on_a);
    wait_for("B connects to the exchange", Duration::from_secs(10), || fake.connections() >= 2)
        .await;
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    // B's client hears that data may have been missed at the handover, then trades again.
    let (gap, after) = first_trade(&fake, &mut on_b, 9_000).await;
    assert!(after >= 9_000, "{after}");
    assert!(gap.is_some_and(|g| g.contains("moved")), "no gap reported at the handover");
    assert_eq!(fake.connections(), 2, "one new connection, not one per retry");

    let metrics = b.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("keel_cluster_md_received_total"), "no relay metric");
    // Every sample carries this node's id (the comments do not).
    let samples: Vec<&str> =
        metrics.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert!(samples.len() > 10, "{metrics}");
    for sample in samples {
        assert!(sample.contains(r#"node_id="b""#), "without node_id: {sample}");
    }
}
