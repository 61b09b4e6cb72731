//! `keel store stats` on a seeded store, and the same figures on `/metrics` of a running Keel.

use std::time::Duration;

use keel::cli::StatsArgs;
use keel_testkit::{eventually, spawn_app_with, test_settings};

#[test]
fn keel_store_stats_prints_rows_bytes_growth_and_oldest_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    keel::store_cli::seed_dir(&settings, dir.path(), 1, 2, 40).unwrap();
    let args = StatsArgs { store: None, json: true };
    let json: serde_json::Value =
        serde_json::from_str(&keel::store_cli::stats(&settings, &args).unwrap()).unwrap();
    let orders = &json["kinds"]["orders"];
    assert_eq!(orders["rows"], 40, "{json}");
    assert!(orders["bytes"].as_u64().unwrap() > 40 * 16);
    // Seeded history ends now: all of it was written in the last day.
    assert_eq!(orders["growth_bytes_per_day"], orders["bytes"]);
    assert!(orders["oldest_ms"].as_u64().is_some());
    assert_eq!(json["kinds"]["bots"]["rows"], 2);
    assert!(json["size_on_disk"].as_u64().unwrap() > 0);

    let table = keel::store_cli::stats(&settings, &StatsArgs { store: None, json: false }).unwrap();
    let fills = table.lines().find(|l| l.starts_with("fills ")).expect("a fills line");
    assert_eq!(
        fills.split_whitespace().nth(1),
        json["kinds"]["fills"]["rows"].to_string().as_str().into()
    );
    assert!(table.lines().next().unwrap().contains("growth/day"), "{table}");
}

#[actix_web::test]
async fn the_store_figures_are_on_metrics() {
    let app = spawn_app_with(|settings| {
        let dir = settings.store.path.clone();
        keel::store_cli::seed_dir(settings, &dir, 1, 2, 40).unwrap();
    })
    .await;
    eventually(Duration::from_secs(30), "store figures on /metrics", || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        // Gauges are per process and other tests' apps publish theirs too: values, not counts.
        value("keel_store_rows{kind=\"orders\"}").is_some_and(|r| r > 0.0)
            && value("keel_store_bytes{kind=\"fills\"}").is_some_and(|b| b > 0.0)
            && value("keel_store_growth_bytes_per_day{kind=\"fills\"}").is_some_and(|b| b > 0.0)
            && value("keel_store_oldest_record_seconds{kind=\"orders\"}").is_some_and(|s| s > 1e9)
    })
    .await;
    app.stop.stop();
}
