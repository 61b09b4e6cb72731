//! The WebSocket relay (cluster mode with `cluster.postgres_url`): two nodes on one Postgres
//! (`KEEL_TEST_POSTGRES_URL`, a database of the test's own) and one NATS (`KEEL_TEST_NATS_URL`).
//! A user's paper bot runs on the user's owner; a WebSocket on the other node subscribed to the
//! bot's channel gets its lines, in order and once, catching up first with `since`, `account`
//! gets them on either node, and another user is refused the channel as on a single node.

use std::time::Duration;

use keel_testkit::{eventually, quiet_bot};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster_identity::{Database, node};
use crate::cluster_users::{all_heartbeat, bots, served_by};
use crate::ws::{bot_seqs_until, connect, expect_type, fill_one, journal_ids, send};

#[actix_web::test]
async fn a_websocket_on_another_node_gets_the_owners_bot_lines_in_order_once_and_only_for_its_owner()
 {
    let test = "cluster_ws";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let ids = ["w1", "w2"];
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(node(id, &name, &nats, db.url_via(db.upstream)).await);
    }
    all_heartbeat(&db, ids.len()).await;
    let ada = nodes[0].register("ada-ws@example.com").await;
    let eve = nodes[0].register("eve-ws@example.com").await;
    eventually(Duration::from_secs(15), "ada's and eve's requests are served", || async {
        bots(&nodes[0], &ada.access).await.0 == 200 && bots(&nodes[0], &eve.access).await.0 == 200
    })
    .await;
    let (_, owner, _) = bots(&nodes[0], &ada.access).await;
    let owner_at = ids.iter().position(|id| *id == owner).expect("one of the nodes");
    let (on_owner, elsewhere) = (&nodes[owner_at], &nodes[1 - owner_at]);

    // Ada's bot, made and started through the other node, runs on her owner.
    let res = elsewhere.send(Method::POST, "/api/v1/bots", Some(&quiet_bot()), &ada.access).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (201, owner.clone()));
    let bot = res.json::<Value>().await.unwrap()["id"].as_u64().expect("a bot id");
    assert_eq!(elsewhere.control(&ada.access, bot, "start").await.status().as_u16(), 200);
    let channel = format!("bot:{bot}");

    // A WebSocket on the other node, from the start of the journal: the catch-up read comes
    // from the owner, then the live lines, every id once and in order.
    let mut resumed = connect(elsewhere, Some(&ada.access)).await.unwrap();
    send(&mut resumed, json!({"op": "subscribe", "channels": [&channel], "since": {&channel: 0}}))
        .await;
    assert_eq!(expect_type(&mut resumed, "subscribed").await["channels"], json!([&channel]));
    fill_one(elsewhere, &ada.access, bot).await;
    let journal = journal_ids(elsewhere, &ada.access, bot).await;
    let held = *journal.last().expect("the bot has journal lines");
    let seen = bot_seqs_until(&mut resumed, &channel, held).await;
    assert_eq!(seen, journal, "the whole journal, in order, once");

    // A second one without `since` starts with the next live line; `account` (every bot of
    // hers) gets the same lines on either node: relayed on the other one.
    let mut live = connect(elsewhere, Some(&ada.access)).await.unwrap();
    send(&mut live, json!({"op": "subscribe", "channels": [&channel]})).await;
    expect_type(&mut live, "subscribed").await;
    let mut accounts = Vec::new();
    for app in [elsewhere, on_owner] {
        let mut account = connect(app, Some(&ada.access)).await.unwrap();
        send(&mut account, json!({"op": "subscribe", "channels": ["account"]})).await;
        assert_eq!(expect_type(&mut account, "subscribed").await["channels"], json!(["account"]));
        accounts.push(account);
    }
    fill_one(elsewhere, &ada.access, bot).await;
    let last = *journal_ids(elsewhere, &ada.access, bot).await.last().unwrap();
    assert!(last > held, "the second order added lines");
    let expected: Vec<u64> = (held + 1..=last).collect();
    assert_eq!(bot_seqs_until(&mut resumed, &channel, last).await, expected, "no gap, no repeat");
    for (account, on) in accounts.iter_mut().zip(["the other node", "her owner"]) {
        assert_eq!(account_ids_until(account, last).await, expected, "account on {on}");
    }
    let fresh = bot_seqs_until(&mut live, &channel, last).await;
    assert!(fresh.first().is_some_and(|first| *first > held), "{fresh:?}");
    assert_eq!(fresh, (fresh[0]..=last).collect::<Vec<_>>(), "consecutive from the first");
    // The fill is among them, as the owner journaled it.
    let after = format!("/api/v1/bots/{bot}/events?after={held}");
    let page = on_owner.get_json(&after, &ada.access).await;
    let kinds: Vec<Value> =
        page["items"].as_array().unwrap().iter().map(|e| e["kind"].clone()).collect();
    assert!(kinds.contains(&json!("fill")), "{kinds:?}");

    // Someone else gets the single-node refusal on either node, for this bot and a missing one.
    for app in [elsewhere, on_owner] {
        let mut intruder = connect(app, Some(&eve.access)).await.unwrap();
        for id in [bot, 999_999] {
            send(&mut intruder, json!({"op": "subscribe", "channels": [format!("bot:{id}")]}))
                .await;
            let error = expect_type(&mut intruder, "error").await;
            assert_eq!(error["code"], "FORBIDDEN_CHANNEL");
            assert_eq!(error["message"], format!("bot:{id} is not a bot of yours"));
        }
    }
    // And a missing bot of Ada's is refused the same way on the node that relays.
    send(&mut live, json!({"op": "subscribe", "channels": ["bot:999999"]})).await;
    assert_eq!(expect_type(&mut live, "error").await["code"], "FORBIDDEN_CHANNEL");

    drop((resumed, live, accounts));
    db.finish(nodes).await;
}

/// Reads `account` events until the journal line `upto` of the (one) bot arrives; their journal
/// ids, in order.
async fn account_ids_until(socket: &mut crate::ws::Socket, upto: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.last().is_none_or(|last| *last < upto) {
        let event = expect_type(socket, "event").await;
        if event["channel"] == "account" && event["data"]["kind"] != "indicator" {
            ids.push(event["data"]["id"].as_u64().expect("a journal line's id"));
        }
    }
    ids
}
