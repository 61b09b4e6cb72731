//! Strategy modules: upload one as the dashboard and the API's clients do.

use serde_json::Value;

use crate::TestApp;

impl TestApp {
    /// `POST /strategies?name=NAME` with `bytes` as `application/wasm`.
    pub async fn upload_strategy(
        &self,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> reqwest::Response {
        let url = format!("{}/api/v1/strategies", self.address);
        let url = reqwest::Url::parse_with_params(&url, [("name", name)]).expect("a URL");
        self.client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("request sent")
    }

    /// Uploads a module, asserting 201; returns its id.
    pub async fn uploaded_strategy(&self, token: &str, name: &str, bytes: Vec<u8>) -> u64 {
        let res = self.upload_strategy(token, name, bytes).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "upload: {body}");
        body["id"].as_u64().unwrap()
    }
}
