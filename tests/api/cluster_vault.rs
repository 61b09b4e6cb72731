//! Exchange credentials and owners' risk limits in the cluster's Postgres (cluster mode with
//! `cluster.postgres_url`): two nodes on one Postgres (`KEEL_TEST_POSTGRES_URL`, a database of
//! the test's own) and one NATS (`KEEL_TEST_NATS_URL`). A live bot fails over with its owner's
//! credentials and reconciles its open order from the new owner; limits set through one node
//! hold on the next; a node with another vault master key refuses to start.

use std::time::{Duration, Instant};

use keel_testkit::{TestApp, Tokens, eventually};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::accounts::{API_KEY, API_SECRET};
use crate::cluster_failover::{ada_and_her_owner_with, read};
use crate::cluster_identity::{Database, node_with};
use crate::cluster_users::served_by;
use crate::fake_binance::FakeBinance;
use crate::fake_rest::FakeRest;

const QUOTE: &str = r#"{"u":1,"s":"BTCUSDT","b":"99.99000000","B":"5.00000000","a":"100.00000000","A":"5.00000000"}"#;

/// Places `order` on `bot` through `app`, quoting until the bot has a price; the answer is 202.
async fn place(app: &TestApp, ws: &FakeBinance, token: &str, bot: u64, order: &Value) -> Value {
    let path = format!("/api/v1/bots/{bot}/orders");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ws.publish("btcusdt@bookTicker", QUOTE);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let res = app.send(Method::POST, &path, Some(order), token).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 202 {
            return body;
        }
        assert!(Instant::now() < deadline, "{status}: {body}");
    }
}

#[actix_web::test]
async fn a_live_bot_fails_over_with_its_owners_credentials_and_reconciles_its_open_order_once() {
    let test = "cluster_vault_live";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let (ws, rest) = (FakeBinance::start().await, FakeRest::start().await);
    let (ws_url, rest_url) = (ws.url.clone(), rest.url());
    let node_ids = ["vault-a", "vault-b"];
    let (nodes, ada, owner, owner_at) = ada_and_her_owner_with(&node_ids, &nats, &db, move |s| {
        s.venues.binance.enabled = true;
        s.venues.binance.ws_url.clone_from(&ws_url);
        s.venues.binance.rest_url.clone_from(&rest_url);
    })
    .await;
    let elsewhere = &nodes[1 - owner_at];
    let Tokens { access: token, .. } = ada;

    // Ada adds her Binance key through the node that is not her owner (forwarded to it), then
    // creates and starts a live bot there; its limit order rests at the venue.
    let account = json!({"venue": "binance", "label": "live", "api_key": API_KEY,
        "api_secret": API_SECRET, "testnet": false});
    let res =
        elsewhere.send(Method::POST, "/api/v1/exchange-accounts", Some(&account), &token).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (201, owner.clone()));
    let account_id = res.json::<Value>().await.unwrap()["id"].as_u64().expect("an id");
    let bot = elsewhere.create_live_bot_with(&token, "binance", account_id, |_| ()).await;
    assert_eq!(elsewhere.control(&token, bot, "start").await.status().as_u16(), 200);
    let limit = json!({"side": "buy", "qty": "0.2", "type": "limit", "price": "90.00"});
    let order = place(elsewhere, &ws, &token, bot, &limit).await;
    let id = order["id"].as_u64().expect("an order id");
    let client_id = order["client_order_id"].as_str().expect("a client order id").to_owned();
    elsewhere.wait_for_order(&token, bot, id, "accepted").await;
    assert_eq!(rest.posts(), 1);

    // Her owner stops: the other node takes her, with her credentials, and runs the bot.
    nodes[owner_at].stop.stop();
    let path = format!("/api/v1/bots/{bot}");
    eventually(Duration::from_secs(20), "the bot runs on the other node", || async {
        let (by, body) = read(elsewhere, &path, &token).await;
        by != owner && body["status"] == "running"
    })
    .await;
    // The old owner is gone: what the venue is asked from now on comes from the new owner.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signed = rest.signed();
    let (_, accounts) = read(elsewhere, "/api/v1/exchange-accounts", &token).await;
    assert_eq!(accounts["items"][0]["id"], account_id, "{accounts}");

    // The venue fills the resting order: the new owner learns of it (signed with her key), and
    // the order was sent once.
    assert!(rest.fill_limit(&client_id, "0.2".parse().unwrap()));
    let filled = elsewhere.wait_for_order(&token, bot, id, "filled").await;
    assert_eq!(filled["filled_qty"], "0.2", "{filled}");
    eventually(Duration::from_secs(10), "a signed request from the new owner", || async {
        rest.signed() > signed
    })
    .await;
    assert_eq!(rest.posts(), 1, "the open order was not sent again");
    let (_, orders) =
        read(elsewhere, &format!("/api/v1/bots/{bot}/orders?limit=100"), &token).await;
    assert_eq!(orders["items"].as_array().map(Vec::len), Some(1), "{orders}");

    db.finish(nodes).await;
}

#[actix_web::test]
async fn risk_limits_set_through_one_node_are_returned_and_enforced_by_the_next_owner() {
    let test = "cluster_vault_limits";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let node_ids = ["limits-a", "limits-b"];
    let (nodes, ada, owner, owner_at) = ada_and_her_owner_with(&node_ids, &nats, &db, |_| {}).await;
    let elsewhere = &nodes[1 - owner_at];
    let token = ada.access;

    let limits = json!({"max_leverage": 2, "max_notional": "500"});
    let res = elsewhere.send(Method::PUT, "/api/v1/me/risk", Some(&limits), &token).await;
    assert_eq!((res.status().as_u16(), served_by(&res)), (200, owner.clone()));

    nodes[owner_at].stop.stop();
    // Read from Postgres as the other node takes her (until then, and while it loads them, her
    // limits read as none there).
    eventually(Duration::from_secs(20), "the other node holds ada's limits", || async {
        let (by, body) = read(elsewhere, "/api/v1/me/risk", &token).await;
        by != owner && body == limits
    })
    .await;

    // Enforced there: a bot above her max_leverage is refused.
    let perp = json!({
        "name": "perp", "venue": "sim_perp", "symbol": "BTCUSDT", "mode": "paper", "leverage": 5,
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}},
        "paper": {"starting_quote": "1000", "fee_bps": "0"}
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let res = elsewhere.send(Method::POST, "/api/v1/bots", Some(&perp), &token).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status != 503 {
            assert_eq!(status, 422, "{body}");
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.to_string().contains("your max_leverage 2x"), "{refused}");

    db.finish(nodes).await;
}

#[actix_web::test]
async fn a_node_with_another_vault_master_key_refuses_to_start() {
    let test = "cluster_vault_key";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let name = format!("keeltest_{}", uuid::Uuid::new_v4().simple());
    let first = node_with("key-a", &name, &nats, db.url_via(db.upstream), |_| {}).await;

    let dir = tempfile::tempdir().unwrap();
    let mut settings = keel_testkit::test_settings(dir.path());
    settings.cluster.enabled = true;
    settings.cluster.node_id = "key-b".to_owned();
    settings.cluster.nats_url = nats;
    settings.cluster.name = name;
    settings.cluster.postgres_url = Some(SecretString::from(db.url_via(db.upstream)));
    let other = keel_actors::vault::MasterKey::generate().unwrap().to_base64();
    settings.vault.master_key = Some(other);
    let err = match keel::startup::Application::build(settings).await {
        Ok(_) => panic!("a node with another vault key started"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("vault.master_key is not the cluster's"), "{err}");
    assert!(!err.contains(&crate::cluster_identity::CLUSTER_MASTER_KEY[..12]), "{err}");

    first.stop.stop();
    drop(first);
    db.drop_db().await;
}
