//! The access log, written to a file in the test's own directory: one well-formed JSON line per
//! request, by route pattern, with the user when authenticated.

use std::time::Duration;

use keel_testkit::{TestApp, eventually, spawn_app_with};
use reqwest::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const FIELDS: [&str; 8] =
    ["time", "request_id", "method", "route", "status", "duration_ms", "user_id", "client_ip"];

/// Sends `method path` with a chosen request id (and a token), returning the status.
async fn request(app: &TestApp, method: Method, path: &str, id: &str, token: Option<&str>) -> u16 {
    let mut req = app.client.request(method, format!("{}{path}", app.address));
    req = req.header("x-request-id", id);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], id);
    res.status().as_u16()
}

/// Every line of the log, each checked to be one JSON object with exactly the documented fields.
fn lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let object = value.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut expected = FIELDS.to_vec();
            expected.sort_unstable();
            assert_eq!(keys, expected, "{line}");
            value
        })
        .collect()
}

pub(crate) async fn line_for(path: &std::path::Path, id: &str) -> Value {
    let what = format!("an access-log line for request {id}");
    eventually(Duration::from_secs(5), &what, || async {
        lines(path).iter().any(|l| l["request_id"] == id)
    })
    .await;
    let matching: Vec<Value> = lines(path).into_iter().filter(|l| l["request_id"] == id).collect();
    assert_eq!(matching.len(), 1, "one line per request: {matching:#?}");
    matching.into_iter().next().unwrap()
}

#[actix_web::test]
async fn each_request_is_one_json_line_with_its_route_pattern_status_and_user() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let file = path.display().to_string();
    let app = spawn_app_with(move |s| s.access_log.output = file).await;
    let tokens = app.register("reader@example.com").await;

    assert_eq!(request(&app, Method::GET, "/health/live", "anon-1", None).await, 200);
    let line = line_for(&path, "anon-1").await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/health/live");
    assert_eq!(line["status"], 200);
    assert!(line["user_id"].is_null(), "anonymous: {line}");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
    let time = line["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && humantime::parse_rfc3339(time).is_ok(), "{time}");

    let status = request(&app, Method::GET, "/api/v1/bots/4242", "user-1", Some(&tokens.access));
    assert_eq!(status.await, 404);
    let line = line_for(&path, "user-1").await;
    assert_eq!(line["route"], "/api/v1/bots/{id}");
    assert_eq!(line["status"], 404);
    assert_eq!(line["user_id"], tokens.user_id);

    // A token that does not authenticate names no user.
    let status = request(&app, Method::GET, "/api/v1/me", "bad-token-1", Some("not-a-token"));
    assert_eq!(status.await, 401);
    let line = line_for(&path, "bad-token-1").await;
    assert_eq!((line["route"].as_str(), line["status"].as_u64()), (Some("/api/v1/me"), Some(401)));
    assert!(line["user_id"].is_null(), "{line}");

    assert_eq!(request(&app, Method::GET, "/no/such/secret-path", "none-1", None).await, 404);
    let line = line_for(&path, "none-1").await;
    assert_eq!((line["route"].as_str(), line["status"].as_u64()), (Some("unmatched"), Some(404)));

    let purge = Method::from_bytes(b"PURGE").unwrap();
    request(&app, purge, "/health/live", "odd-method-1", None).await;
    assert_eq!(line_for(&path, "odd-method-1").await["method"], "other");

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret-path") && !text.contains("4242"), "raw paths leaked: {text}");
    assert!(!text.contains(&tokens.access), "a token leaked");
    let register = lines(&path).into_iter().find(|l| l["route"] == "/api/v1/auth/register");
    assert_eq!(register.map(|l| l["status"].clone()), Some(Value::from(201)));
}

#[actix_web::test]
async fn a_websocket_upgrade_is_logged_when_it_is_answered() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let file = path.display().to_string();
    let app = spawn_app_with(move |s| s.access_log.output = file).await;
    let tokens = app.register("watcher@example.com").await;

    let url = format!("{}/api/v1/ws", app.address.replacen("http://", "ws://", 1));
    let mut upgrade = url.into_client_request().unwrap();
    let headers = upgrade.headers_mut();
    headers.insert("authorization", format!("Bearer {}", tokens.access).parse().unwrap());
    headers.insert("x-request-id", "ws-1".parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(upgrade).await.unwrap();

    // The connection is still open: the line came with the upgrade, not at the end.
    let line = line_for(&path, "ws-1").await;
    assert_eq!(line["route"], "/api/v1/ws");
    assert_eq!(line["status"], 101);
    assert_eq!(line["user_id"], tokens.user_id);
    drop(socket);
}
