//! Checks shared by every API test: the one error shape, and polling for a condition with a
//! deadline instead of sleeping for a guess.

use std::time::{Duration, Instant};

use serde_json::Value;

/// Asserts `response` is an error in the one JSON shape with `status` and `code`, and returns
/// its `error` object.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("every response has X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let body: Value = response.json().await.expect("the error body is JSON");
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "code in {body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    assert_eq!(error["request_id"], header_id.as_str(), "request_id matches the header");
    assert!(error["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "timestamp in {body}");
    assert!(error["path"].as_str().is_some_and(|p| p.starts_with('/')), "path in {body}");
    error
}

/// The `field` of each of an error's `details`, in order.
pub fn error_fields(error: &Value) -> Vec<&str> {
    let details = error["details"].as_array().map(Vec::as_slice).unwrap_or_default();
    details.iter().filter_map(|d| d["field"].as_str()).collect()
}

/// Polls `check` every 20 ms until it holds, or fails the test after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {within:?} waiting for: {what}");
}
