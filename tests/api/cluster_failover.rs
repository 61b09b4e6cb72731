//! Bots fail over with their owner (cluster mode with `cluster.postgres_url`): three nodes on one
//! Postgres (`KEEL_TEST_POSTGRES_URL`, a database of the test's own) and one NATS
//! (`KEEL_TEST_NATS_URL`). A user's paper bot runs on the node holding the user's lease; when
//! that node stops, another takes the user and runs the bot from what Postgres holds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use keel_testkit::{TestApp, Tokens, eventually, quiet_bot};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster_identity::Database;
use crate::cluster_users::{live_nodes_with, served_by};
use crate::ws::{bot_seqs_until, connect, expect_type, journal_ids, send};

/// `GET path` on `app`: the node that served it and the body (`Null` unless 200).
pub(crate) async fn read(app: &TestApp, path: &str, token: &str) -> (String, Value) {
    let res = app.send(Method::GET, path, None, token).await;
    let by = served_by(&res);
    if res.status().as_u16() != 200 {
        return (by, Value::Null);
    }
    (by, res.json().await.unwrap_or(Value::Null))
}

/// The ids in a page's items.
fn ids(page: &Value) -> Vec<u64> {
    page["items"].as_array().map_or_else(Vec::new, |items| {
        items.iter().filter_map(|item| item["id"].as_u64()).collect()
    })
}

/// Buys at market through `app` (any node: the request reaches the owner) until the bot has
/// `fills` fills, read through `app` as well.
async fn fill_until(app: &TestApp, token: &str, bot: u64, fills: usize) {
    let buy = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let orders = format!("/api/v1/bots/{bot}/orders");
    let path = format!("/api/v1/bots/{bot}/fills?limit=500");
    eventually(Duration::from_secs(20), "the bot fills", || async {
        let (_, page) = read(app, &path, token).await;
        let have = ids(&page).len();
        if have >= fills {
            return true;
        }
        // A refusal (the sim venue has no price yet) is retried.
        let _ = app.send(Method::POST, &orders, Some(&buy), token).await;
        false
    })
    .await;
}

/// Nodes `node_ids` up on `db`, Ada registered and served: the nodes, her tokens, the node that
/// owns her and its index.
async fn ada_and_her_owner(
    node_ids: &[&'static str],
    nats: &str,
    db: &Database,
) -> (Vec<TestApp>, Tokens, String, usize) {
    ada_and_her_owner_with(node_ids, nats, db, |_| {}).await
}

/// [`ada_and_her_owner`], with `more` settings on every node.
pub(crate) async fn ada_and_her_owner_with(
    node_ids: &[&'static str],
    nats: &str,
    db: &Database,
    more: impl Fn(&mut keel::configuration::Settings) + Clone + Send + 'static,
) -> (Vec<TestApp>, Tokens, String, usize) {
    let nodes = live_nodes_with(node_ids, nats, db, more).await;
    let ada = nodes[0].register("ada@example.com").await;
    eventually(Duration::from_secs(15), "ada's requests are served", || async {
        nodes[0].send(Method::GET, "/api/v1/bots", None, &ada.access).await.status() == 200
    })
    .await;
    let (owner, _) = read(&nodes[0], "/api/v1/bots", &ada.access).await;
    let owner_at = node_ids.iter().position(|id| *id == owner).expect("one of the nodes");
    (nodes, ada, owner, owner_at)
}

#[actix_web::test]
async fn a_users_running_bot_moves_to_another_node_with_its_fills_when_its_owner_stops() {
    let test = "cluster_failover";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let node_ids = ["n1", "n2", "n3"];
    let (nodes, ada, owner, owner_at) = ada_and_her_owner(&node_ids, &nats, &db).await;
    let elsewhere = &nodes[(owner_at + 1) % node_ids.len()];

    // A paper bot on the sim venue, started on its owner, fills.
    let res = elsewhere.send(Method::POST, "/api/v1/bots", Some(&quiet_bot()), &ada.access).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (201, owner.clone()));
    let bot = res.json::<Value>().await.unwrap()["id"].as_u64().expect("a bot id");
    assert_eq!(elsewhere.control(&ada.access, bot, "start").await.status().as_u16(), 200);
    fill_until(elsewhere, &ada.access, bot, 3).await;
    let fills = format!("/api/v1/bots/{bot}/fills?limit=500");
    let orders = format!("/api/v1/bots/{bot}/orders?limit=500");
    let (_, before) = read(elsewhere, &fills, &ada.access).await;
    let before = ids(&before);

    // The owner stops: another node takes Ada and runs her bot.
    let stopped = Instant::now();
    nodes[owner_at].stop.stop();
    let path = format!("/api/v1/bots/{bot}");
    eventually(Duration::from_secs(15), "the bot runs on another node", || async {
        let (by, body) = read(elsewhere, &path, &ada.access).await;
        by != owner && body["status"] == "running"
    })
    .await;
    let failover = stopped.elapsed();
    eprintln!(
        "cluster_failover: the bot ran again on another node {failover:?} after its owner's stop"
    );
    let (new_owner, _) = read(elsewhere, &path, &ada.access).await;
    for (at, app) in nodes.iter().enumerate().filter(|(at, _)| *at != owner_at) {
        let (by, body) = read(app, &path, &ada.access).await;
        assert_eq!((by.as_str(), &body["status"]), (new_owner.as_str(), &json!("running")), "{at}");
    }

    // Its earlier fills are all there, and new ones follow them.
    let (_, after) = read(elsewhere, &fills, &ada.access).await;
    assert_eq!(ids(&after)[..before.len()], before[..], "the earlier fills, in order");
    fill_until(elsewhere, &ada.access, bot, before.len() + 2).await;
    let (_, all_fills) = read(elsewhere, &fills, &ada.access).await;
    let fill_ids = ids(&all_fills);
    assert_eq!(fill_ids.iter().collect::<BTreeSet<_>>().len(), fill_ids.len(), "{all_fills}");
    let (_, all_orders) = read(elsewhere, &orders, &ada.access).await;
    let order_ids = ids(&all_orders);
    assert!(order_ids.len() >= fill_ids.len(), "{all_orders}");
    assert_eq!(order_ids.iter().collect::<BTreeSet<_>>().len(), order_ids.len(), "{all_orders}");
    let (_, list) = read(elsewhere, "/api/v1/bots", &ada.access).await;
    assert_eq!(ids(&list), vec![bot], "one bot, under its id");

    // A WebSocket resuming from the start on the new owner, where the bot now runs, gets the
    // whole journal, lines from before the failover included (they are in Postgres, not in
    // this node's working copy).
    let new_owner_at = node_ids.iter().position(|id| *id == new_owner).expect("a node");
    let journal = journal_ids(&nodes[new_owner_at], &ada.access, bot).await;
    let held = *journal.last().expect("the bot has journal lines");
    let channel = format!("bot:{bot}");
    let mut socket = connect(&nodes[new_owner_at], Some(&ada.access)).await.unwrap();
    send(&mut socket, json!({"op": "subscribe", "channels": [&channel], "since": {&channel: 0}}))
        .await;
    expect_type(&mut socket, "subscribed").await;
    let seen = bot_seqs_until(&mut socket, &channel, held).await;
    assert!(seen.starts_with(&journal), "the whole journal from before the failover: {seen:?}");

    db.finish(nodes).await;
}

#[actix_web::test]
async fn a_node_whose_lease_was_taken_has_its_next_flush_refused_and_the_new_owner_runs_the_bot() {
    let test = "cluster_fencing";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    // Node ids of this test's own: the pause below is by node id, process-wide.
    let node_ids = ["fence-a", "fence-b"];
    let (nodes, ada, owner, owner_at) = ada_and_her_owner(&node_ids, &nats, &db).await;
    let (stale, other) = (&nodes[owner_at], &nodes[1 - owner_at]);
    let res = other.send(Method::POST, "/api/v1/bots", Some(&quiet_bot()), &ada.access).await;
    let bot = res.json::<Value>().await.unwrap()["id"].as_u64().expect("a bot id");
    assert_eq!(other.control(&ada.access, bot, "start").await.status().as_u16(), 200);
    fill_until(other, &ada.access, bot, 2).await;
    let fills = format!("/api/v1/bots/{bot}/fills?limit=500");
    let orders = format!("/api/v1/bots/{bot}/orders?limit=500");
    let (_, before) = read(other, &orders, &ada.access).await;

    // The owner's lease task stalls: its lease expires, the other node takes Ada and runs the
    // bot, and the stalled node still believes it owns her.
    keel_actors::cluster::users::pause_rounds(&owner, true);
    let stalled = Instant::now();
    let path = format!("/api/v1/bots/{bot}");
    eventually(Duration::from_secs(30), "the other node runs the bot", || async {
        let (by, body) = read(other, &path, &ada.access).await;
        by != owner && body["status"] == "running"
    })
    .await;
    eprintln!(
        "cluster_fencing: the bot ran on the other node {:?} after its owner's lease rounds stalled",
        stalled.elapsed()
    );

    // An order reaching the stalled node (as a forwarded request, so it serves it itself) is not
    // taken: its bot's flush is refused by the fence (this one's, or an earlier one: the bot
    // saves its strategy's state every 10 s), the bot stops there and sends nothing.
    let buy = json!({"side": "buy", "qty": "0.001", "type": "market"});
    let res = stale
        .client
        .post(format!("{}/api/v1/bots/{bot}/orders", stale.address))
        .bearer_auth(&ada.access)
        .header("keel-forwarded", "test")
        .json(&buy)
        .send()
        .await
        .unwrap();
    assert_eq!(served_by(&res), owner);
    let status = res.status().as_u16();
    let body = res.text().await.unwrap();
    assert!(status >= 500, "a fenced bot takes no order: {status} {body}");
    eprintln!("cluster_fencing: the order on the stalled node: {status} {body}");
    eventually(Duration::from_secs(15), "the stalled node's bot flush is fenced", || async {
        let metrics = stale.get("/metrics").await.text().await.unwrap();
        metrics.lines().any(|l| l.starts_with("keel_bot_fenced_total") && !l.ends_with(" 0"))
    })
    .await;

    // Postgres holds none of it: the new owner shows the orders as they were, and its own new
    // orders and fills follow under ids never used before.
    let (_, after) = read(other, &orders, &ada.access).await;
    assert_eq!(ids(&after), ids(&before), "the refused order was not written");
    let (_, had) = read(other, &fills, &ada.access).await;
    fill_until(other, &ada.access, bot, ids(&had).len() + 1).await;
    let (_, all_orders) = read(other, &orders, &ada.access).await;
    let order_ids = ids(&all_orders);
    assert_eq!(order_ids.iter().collect::<BTreeSet<_>>().len(), order_ids.len(), "{all_orders}");
    assert!(order_ids.len() > ids(&before).len());

    keel_actors::cluster::users::pause_rounds(&owner, false);
    db.finish(nodes).await;
}
