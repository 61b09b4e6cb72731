//! Health checks and metrics.

use keel_testkit::{eventually, spawn_app};
use serde_json::Value;

use std::time::Duration;

#[actix_web::test]
async fn live_answers_200() {
    let app = spawn_app().await;
    let res = app.get("/health/live").await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "live");
}

#[actix_web::test]
async fn ready_answers_200_with_the_checks_as_json() {
    let app = spawn_app().await;
    let res = app.get("/health/ready").await;
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"], "ok");
    assert_eq!(body["checks"]["actors"]["name"], "root");
    // The probe wrote to the store in the app's own data directory.
    assert!(app.data_dir.path().join("db").exists());
}

#[actix_web::test]
async fn a_stopped_app_stops_listening() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/live").await.status().as_u16(), 200);
    app.stop.stop();
    let url = format!("{}/health/live", app.address);
    eventually(Duration::from_secs(10), "the listener is closed", || async {
        app.client.get(&url).send().await.is_err()
    })
    .await;
}

#[actix_web::test]
async fn metrics_count_requests_by_route_pattern_never_by_raw_path() {
    let app = spawn_app().await;
    for path in ["/health/live", "/no/such/thing/1", "/no/such/thing/2"] {
        app.get(path).await;
    }
    let res = app.get("/metrics").await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(text.contains("keel_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/health/live""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(!text.contains("/no/such/thing"), "raw paths must not become labels");
    assert!(text.contains("keel_http_request_duration_seconds_bucket"), "{text}");
    for process_metric in
        ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"]
    {
        assert!(text.contains(process_metric), "{process_metric} missing");
    }
    // A node on its own has no node id to label with (cluster mode adds it: cluster_md.rs).
    assert!(!text.contains("node_id="), "a single node's metrics carry node_id");
}
