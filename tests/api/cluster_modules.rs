//! Owners' strategy modules and notification channels fail over with their owner (cluster mode
//! with `cluster.postgres_url`): three nodes on one Postgres (`KEEL_TEST_POSTGRES_URL`, a
//! database of the test's own) and one NATS (`KEEL_TEST_NATS_URL`). What a user uploads or
//! creates through any node is in Postgres, so the node that takes the user when the owner stops
//! runs her wasm bot from her module and delivers her bots' events to her channels.

use std::sync::OnceLock;
use std::time::Duration;

use keel::configuration::Settings;
use keel_actors::vault::MasterKey;
use secrecy::{ExposeSecret, SecretString};

use keel_testkit::eventually;
use keel_testkit::fake_hook::{FakeHook, Reply};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster_failover::{ada_and_her_owner_with, read};
use crate::cluster_identity::Database;
use crate::cluster_users::served_by;
use crate::notifications::{add_channel, assert_signed, deliveries, loopback};
use crate::strategies::{first_trade, wait_for_fill, wasm_bot};

#[actix_web::test]
async fn a_wasm_bot_runs_on_the_new_owner_from_the_module_in_postgres() {
    let test = "cluster_modules";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let node_ids = ["w1", "w2", "w3"];
    let (nodes, ada, owner, owner_at) = ada_and_her_owner_with(&node_ids, &nats, &db, |_| {}).await;
    let elsewhere = &nodes[(owner_at + 1) % node_ids.len()];

    // Uploaded through a node that does not own Ada (her owner stores it), run by a wasm bot.
    let res = elsewhere.upload_strategy(&ada.access, "first trade", first_trade()).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (201, owner.clone()));
    let module: Value = res.json().await.unwrap();
    let module_id = module["id"].as_u64().expect("a module id");
    let created = elsewhere.create_bot(&ada.access, &wasm_bot("wasm", module_id, json!({}))).await;
    let bot = created["id"].as_u64().unwrap();
    assert_eq!(elsewhere.control(&ada.access, bot, "start").await.status().as_u16(), 200);
    wait_for_fill(elsewhere, &ada, bot).await;

    // Her owner stops gracefully: another node takes her, loads her module from Postgres
    // before her bots start, and runs the bot (without the module it would fail to start).
    nodes[owner_at].stop.stop();
    let path = format!("/api/v1/bots/{bot}");
    eventually(Duration::from_secs(20), "the wasm bot runs on another node", || async {
        let (by, body) = read(elsewhere, &path, &ada.access).await;
        by != owner && !by.is_empty() && body["status"] == "running"
    })
    .await;
    let (new_owner, body) = read(elsewhere, &path, &ada.access).await;
    assert_eq!(body["status"], "running", "{body}");
    let (by, listed) =
        read(elsewhere, &format!("/api/v1/strategies/{module_id}"), &ada.access).await;
    assert_eq!(by, new_owner);
    assert_eq!(listed["sha256"], module["sha256"], "the same module, under its id: {listed}");

    // Deleting it is refused while the bot names it, on the new owner too; once the bot is
    // gone, it is deleted from Postgres: no node has it any more.
    let module_path = format!("/api/v1/strategies/{module_id}");
    let res = elsewhere.send(Method::DELETE, &module_path, None, &ada.access).await;
    assert_eq!(res.status().as_u16(), 409);
    // A 503 or 504 while the user settles on her new node is an answer to retry.
    eventually(Duration::from_secs(20), "the bot stops", || async {
        elsewhere.control(&ada.access, bot, "stop").await.status().as_u16() == 200
    })
    .await;
    let res = elsewhere.send(Method::DELETE, &path, None, &ada.access).await;
    assert_eq!(res.status().as_u16(), 204);
    let res = elsewhere.send(Method::DELETE, &module_path, None, &ada.access).await;
    let status = res.status().as_u16();
    assert_eq!(status, 204, "{}", res.text().await.unwrap());
    let client = tokio_postgres::connect(&db.url_via(db.upstream), tokio_postgres::NoTls).await;
    let (client, connection) = client.expect("connects");
    actix_web::rt::spawn(connection);
    let left: i64 =
        client.query_one("SELECT count(*) FROM keel_strategy_modules", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "deleted in the record");
    drop(client);

    db.finish(nodes).await;
}

/// Loopback receivers allowed, and one vault master key for every node: a channel's secret is
/// sealed by the node that created it and opened by whichever node delivers (as in production,
/// where every node is given the same `vault.master_key`).
fn hook_nodes(settings: &mut Settings) {
    static KEY: OnceLock<String> = OnceLock::new();
    let key = KEY.get_or_init(|| MasterKey::generate().unwrap().to_base64().expose_secret().into());
    loopback(settings);
    settings.vault.master_key = Some(SecretString::from(key.clone()));
}

#[actix_web::test]
async fn a_webhook_created_on_one_node_gets_a_bot_event_from_the_new_owner_after_failover() {
    let test = "cluster_channels";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let hook = FakeHook::start().await;
    let node_ids = ["h1", "h2", "h3"];
    let (nodes, ada, owner, owner_at) =
        ada_and_her_owner_with(&node_ids, &nats, &db, hook_nodes).await;
    let elsewhere = &nodes[(owner_at + 1) % node_ids.len()];

    // A channel created through a node that does not own Ada, wanting her bots' status lines.
    let body = json!({"kind": "webhook", "url": hook.url("/keel"), "events": ["bot_status"]});
    let created = add_channel(elsewhere, &ada, &body).await;
    let secret = created["signing_secret"].as_str().unwrap().to_owned();
    let bot = elsewhere.create_bot(&ada.access, &keel_testkit::quiet_bot()).await;
    let bot = bot["id"].as_u64().unwrap();
    assert_eq!(elsewhere.control(&ada.access, bot, "start").await.status().as_u16(), 200);
    let before = hook.wait_for(1, Duration::from_secs(15)).await;
    assert_signed(&before[0], &secret);
    assert_eq!(before[0].json()["bot_id"], bot);
    // Recorded as delivered before the owner stops: an attempt whose outcome a stop cuts short
    // stays pending and is made again by the next owner (at least once), which is not what
    // this test looks at.
    eventually(Duration::from_secs(10), "the first delivery is recorded", || async {
        deliveries(elsewhere, &ada).await.iter().any(|d| d["state"] == "delivered")
    })
    .await;

    // Her owner stops: the bot starts on the new owner, whose status line reaches the same
    // channel, signed with the same secret, under a delivery id of its own.
    nodes[owner_at].stop.stop();
    let path = format!("/api/v1/bots/{bot}");
    eventually(Duration::from_secs(20), "the bot runs on another node", || async {
        let (by, body) = read(elsewhere, &path, &ada.access).await;
        by != owner && !by.is_empty() && body["status"] == "running"
    })
    .await;
    let received = hook.wait_for(before.len() + 1, Duration::from_secs(15)).await;
    let after = received.last().unwrap();
    assert_signed(after, &secret);
    let event = after.json();
    assert_eq!((event["type"].as_str(), event["bot_id"].as_u64()), (Some("bot_status"), Some(bot)));
    let ids: Vec<String> =
        received.iter().filter_map(|r| r.header("keel-delivery").map(str::to_owned)).collect();
    assert_eq!(ids.len(), received.len());
    assert!(!ids[..ids.len() - 1].contains(ids.last().unwrap()), "a new delivery id: {ids:?}");

    // Every delivery, the old owner's included, is listed through any node that is up.
    for (_, app) in nodes.iter().enumerate().filter(|(at, _)| *at != owner_at) {
        eventually(Duration::from_secs(10), "every delivery is listed", || async {
            let listed = deliveries(app, &ada).await;
            let delivered: Vec<String> = listed
                .iter()
                .filter(|d| d["state"] == "delivered")
                .map(|d| d["id"].to_string())
                .collect();
            ids.iter().all(|id| delivered.contains(id))
        })
        .await;
    }

    db.finish(nodes).await;
}

#[actix_web::test]
async fn a_delivery_left_pending_by_a_stopped_owner_is_made_by_the_next_one() {
    let test = "cluster_pending";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let hook = FakeHook::start().await;
    // The receiver fails the first attempts: the delivery is still pending when the owner stops.
    hook.script((0..4).map(|_| Reply::Json(500, "{}".into())));
    let node_ids = ["p1", "p2", "p3"];
    let (nodes, ada, owner, owner_at) =
        ada_and_her_owner_with(&node_ids, &nats, &db, hook_nodes).await;
    let elsewhere = &nodes[(owner_at + 1) % node_ids.len()];
    let body = json!({"kind": "webhook", "url": hook.url("/keel"), "events": ["kill_switch"]});
    add_channel(elsewhere, &ada, &body).await;
    let res = elsewhere.send(Method::POST, "/api/v1/kill-switch", None, &ada.access).await;
    assert_eq!(res.status().as_u16(), 200);
    let first = hook.wait_for(1, Duration::from_secs(15)).await;
    let id = first[0].header("keel-delivery").expect("a delivery id").to_owned();
    let number: u64 = id.parse().expect("a numeric delivery id");
    nodes[owner_at].stop.stop();
    let stopped = std::time::Instant::now();

    // The next owner finds it pending in Postgres and makes it, under the same id.
    eventually(Duration::from_secs(30), "the next owner delivers it", || async {
        // Read as any client would, through a node that is up, while the user moves (503s).
        let (by, listed) = read(elsewhere, "/api/v1/notifications/deliveries", &ada.access).await;
        let items = listed["items"].as_array().cloned().unwrap_or_default();
        by != owner
            && items.iter().any(|d| d["id"].as_u64() == Some(number) && d["state"] == "delivered")
    })
    .await;
    let after: Vec<_> = hook
        .received()
        .into_iter()
        .filter(|r| r.at > stopped && r.header("keel-delivery") == Some(id.as_str()))
        .collect();
    assert!(!after.is_empty(), "attempts after the owner stopped, under id {id}");
    assert_eq!(after.last().unwrap().json()["type"], "kill_switch");

    db.finish(nodes).await;
}
