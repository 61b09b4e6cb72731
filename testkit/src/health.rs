//! Health: what the readiness probe reports about each part of the app.

use serde_json::Value;

use crate::TestApp;

impl TestApp {
    /// `checks.sink` from `/health/ready`, asserting readiness answered 200.
    pub async fn sink_report(&self) -> Value {
        let res = self.get("/health/ready").await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "readiness: {body}");
        body["checks"]["sink"].clone()
    }
}
