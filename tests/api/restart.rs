//! Restart on a seeded store: `keel store seed` writes a store Keel opens as its own, and
//! readiness waits until every bot that was running is back with its open orders.

use std::time::{Duration, Instant};

use keel_actors::seed::{SEED_PASSWORD, seed_email};
use keel_testkit::{TestApp, spawn_app_with};
use reqwest::Method;
use serde_json::Value;

/// Polls `/health/ready` until it answers 200, and returns its body.
async fn ready(app: &TestApp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = app.get("/health/ready").await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if status == 200 {
            return body;
        }
        assert_eq!(status, 503, "readiness: {body}");
        assert!(Instant::now() < deadline, "not ready in 20 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bot's orders that are still open, from the API.
async fn open_orders(app: &TestApp, token: &str, bot: u64) -> Vec<Value> {
    let orders = app.get_json(&format!("/api/v1/bots/{bot}/orders?limit=500"), token).await;
    orders["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "accepted")
        .cloned()
        .collect()
}

#[actix_web::test]
async fn a_seeded_store_opens_with_its_users_and_running_bots_and_survives_a_restart() {
    let app = spawn_app_with(|settings| {
        let dir = settings.store.path.clone();
        keel::store_cli::seed_dir(settings, &dir, 2, 4, 40).unwrap();
    })
    .await;
    let body = ready(&app).await;
    let bots = &body["checks"]["bots"];
    assert_eq!((bots["expected"].as_u64(), bots["pending_count"].as_u64()), (Some(4), Some(0)));
    assert_eq!(bots["failed"], 0);

    let token = app.token(&seed_email(1), SEED_PASSWORD).await;
    let listed = app.get_json("/api/v1/bots", &token).await;
    let ids: Vec<u64> =
        listed["items"].as_array().unwrap().iter().map(|b| b["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{listed}");
    for bot in listed["items"].as_array().unwrap() {
        assert_eq!(bot["status"], "running", "{bot}");
    }
    for id in &ids {
        assert_eq!(open_orders(&app, &token, *id).await.len(), 3, "bot {id}");
        let position = app.get_json(&format!("/api/v1/bots/{id}/position"), &token).await;
        assert!(position.get("qty").is_some(), "{position}");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for name in ["keel_bots_running", "keel_startup_seconds"] {
        assert!(metrics.contains(name), "{name} is not on /metrics");
    }

    // Cancel one open order; after a restart the bot resumes with the other two.
    let bot = ids[0];
    let open = open_orders(&app, &token, bot).await;
    let cancel = format!("/api/v1/bots/{bot}/orders/{}", open[0]["id"]);
    assert_eq!(app.send(Method::DELETE, &cancel, None, &token).await.status().as_u16(), 200);
    let app = app.restart_with(|_| {}).await;
    let body = ready(&app).await;
    assert_eq!(body["checks"]["bots"]["expected"], 4);
    let token = app.token(&seed_email(1), SEED_PASSWORD).await;
    let still = open_orders(&app, &token, bot).await;
    assert_eq!(still.len(), 2);
    assert!(still.iter().all(|o| o["id"] != open[0]["id"]));
}
