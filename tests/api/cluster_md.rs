//! Cluster mode, market data (docs/CLUSTER.md): two nodes against one fake Binance and a real
//! NATS (`KEEL_TEST_NATS_URL`). The exchange sees one connection; the other node's WebSocket
//! clients get the holder's trades through JetStream, once each; when the holder stops
//! gracefully it releases its lease and the other node takes it at its next lease round; a
//! holder that dies without a word (its lease left behind) is replaced once the lease expires.
//! Metrics carry the node's id.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::{SinkExt, StreamExt};
use keel::configuration::Settings;
use keel_actors::cluster::LEASE_TTL;
use keel_testkit::{TestApp, spawn_app_with};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fake_binance::FakeBinance;
use crate::fake_rest::FakeRest;
use crate::ws::{Socket, connect, expect_type};

const URL_VAR: &str = "KEEL_TEST_NATS_URL";
const TRADES: &str = "market:binance:BTCUSDT:trades";
/// The lease key of Binance's BTCUSDT.
const LEASE: &str = "binance.BTCUSDT";

/// A node of cluster `name` on the fake exchange.
async fn node(id: &str, name: &str, nats: &str, fake: &FakeBinance, rest: &FakeRest) -> TestApp {
    node_with(id, name, nats, fake, rest, |_| ()).await
}

/// [`node`], with `adjust` applied to its settings last.
pub(crate) async fn node_with(
    id: &str,
    name: &str,
    nats: &str,
    fake: &FakeBinance,
    rest: &FakeRest,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
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
        adjust(s);
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

    // The holder stops gracefully (as on SIGTERM): it deletes its lease (a KV delete marker,
    // which an expiry never leaves), and B takes the lease at its next round and connects, well
    // before the lease would have expired.
    let leases = lease_bucket(&nats, &name).await;
    let mut changes = leases.watch(LEASE).await.unwrap();
    let stopped = Instant::now();
    a.stop.stop();
    drop(on_a);
    wait_for("B connects to the exchange", Duration::from_secs(10), || fake.connections() >= 2)
        .await;
    let took = stopped.elapsed();
    assert!(took < LEASE_TTL, "takeover took {took:?}, as long as an expiry");
    let mut seen = Vec::new();
    while !seen.contains(&"b".to_owned()) {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
        let entry = change.expect("the lease's changes").unwrap().unwrap();
        seen.push(match entry.operation {
            kv::Operation::Put => String::from_utf8_lossy(&entry.value).into_owned(),
            kv::Operation::Delete | kv::Operation::Purge => "released".to_owned(),
        });
    }
    seen.retain(|holder| holder != "a"); // A's renewals before it stopped
    assert_eq!(seen, ["released", "b"], "A did not release its lease before B took it");
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

#[actix_web::test]
async fn a_lease_left_by_a_dead_holder_is_taken_once_it_expires() {
    let Some(nats) = crate::service_url(URL_VAR, "cluster_md") else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let fake = FakeBinance::start().await;
    let rest = FakeRest::start().await;
    let b = node("b", &name, &nats, &fake, &rest).await;

    // A holder killed with SIGKILL leaves its lease as it was: written here for node "dead".
    let leases = lease_bucket(&nats, &name).await;
    leases.create(LEASE, "dead".into()).await.unwrap();
    let left = Instant::now();
    let mut on_b = trades_client(&b, "cluster-dead@example.com").await;
    // B follows the dead node meanwhile and does not connect; once the lease expires (5 s after
    // it was written) its next lease round takes it.
    wait_for("B connects to the exchange", Duration::from_secs(10), || fake.connections() >= 1)
        .await;
    let took = left.elapsed();
    assert!(took >= Duration::from_secs(4), "B took a live lease after {took:?}");
    let holder = leases.get(LEASE).await.unwrap().unwrap();
    assert_eq!(&holder[..], b"b");
    let (_, first) = first_trade(&fake, &mut on_b, 1).await;
    assert!(first >= 1);
}

/// The lease bucket of cluster `name` (its nodes create it when they join).
async fn lease_bucket(nats: &str, name: &str) -> kv::Store {
    let client = async_nats::connect(nats).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    jetstream.get_key_value(format!("{name}_md_leases")).await.unwrap()
}
