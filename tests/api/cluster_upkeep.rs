//! The bot tables in Postgres, operated (cluster mode with `cluster.postgres_url`): their figures
//! on `/metrics` and in `keel store stats`, as `postgres_`-prefixed kinds. One node on a
//! database of the test's own (`KEEL_TEST_POSTGRES_URL`) and NATS (`KEEL_TEST_NATS_URL`).

use std::time::Duration;

use keel::cli::StatsArgs;
use keel_testkit::{eventually, quiet_bot};
use reqwest::Method;
use secrecy::SecretString;

use crate::cluster_identity::Database;
use crate::cluster_users::live_nodes;

#[actix_web::test]
async fn the_bot_tables_figures_in_postgres_are_on_metrics_and_in_store_stats() {
    let test = "cluster_upkeep";
    let Some(nats) = crate::service_url("KEEL_TEST_NATS_URL", test) else { return };
    let Some(db) = Database::create(test).await else { return };
    let nodes = live_nodes(&["n1"], &nats, &db).await;
    let node = &nodes[0];

    // Published on the stats period (the first 5 s after start), from Postgres.
    eventually(Duration::from_secs(30), "Postgres's figures on /metrics", || async {
        let text = node.get("/metrics").await.text().await.unwrap();
        text.lines()
            .any(|l| l.starts_with("keel_store_rows{") && l.contains("kind=\"postgres_bots\""))
            && text.lines().any(|l| {
                l.starts_with("keel_store_bytes{") && l.contains("kind=\"postgres_events\"")
            })
    })
    .await;

    // `keel store stats` (another store: the node's is locked) reads them from Postgres.
    let ada = node.register("ada@example.com").await;
    eventually(Duration::from_secs(15), "ada's bot is created", || async {
        let res = node.send(Method::POST, "/api/v1/bots", Some(&quiet_bot()), &ada.access).await;
        res.status() == 201
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = keel_testkit::test_settings(dir.path());
    settings.cluster.enabled = true;
    settings.cluster.postgres_url = Some(SecretString::from(db.url_via(db.upstream)));
    let stats = std::thread::spawn(move || {
        keel::store_cli::stats(&settings, &StatsArgs { store: None, json: true })
    })
    .join()
    .unwrap()
    .expect("stats");
    let json: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(json["kinds"]["postgres_bots"]["rows"], 1, "{json}");
    assert!(json["kinds"]["postgres_bots"]["bytes"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["kinds"]["bots"]["rows"], 0, "this store is not the node's: {json}");
    for node in &nodes {
        node.stop.stop();
    }
    db.drop_db().await;
}
