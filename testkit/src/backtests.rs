//! Backtests over HTTP: uploading trade files, starting jobs and waiting for them.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::TestApp;

impl TestApp {
    /// Uploads `body` and returns the upload's id.
    pub async fn upload(&self, token: &str, body: Vec<u8>) -> String {
        let res = self
            .client
            .post(format!("{}/api/v1/backtests/uploads", self.address))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "upload: {json}");
        json["id"].as_str().unwrap().to_owned()
    }

    /// Starts a backtest and returns its id.
    pub async fn start_backtest(&self, token: &str, body: &Value) -> u64 {
        let res = self.send(Method::POST, "/api/v1/backtests", Some(body), token).await;
        let status = res.status().as_u16();
        let location = res.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let json: Value = res.json().await.unwrap();
        assert_eq!(status, 202, "start: {json}");
        let id = json["id"].as_u64().unwrap();
        assert_eq!(location.unwrap(), format!("/api/v1/backtests/{id}"));
        id
    }

    /// Polls a backtest until `done` holds; returns it.
    pub async fn backtest_until(
        &self,
        token: &str,
        id: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/api/v1/backtests/{id}");
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            last = self.get_json(&path, token).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("backtest {id} never got there: {last}");
    }

    /// `POST` a raw CSV body with a token.
    pub async fn post_raw_with_token(
        &self,
        path: &str,
        body: Vec<u8>,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}
