//! `spawn_app()`: the real application on a free port with its own data directory.

use std::time::{Duration, Instant};

use keel::configuration::Settings;
use keel::startup::{Application, StopHandle};
use serde_json::Value;

/// A running Keel for one test.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// A client with a short timeout.
    pub client: reqwest::Client,
    /// Stops the app as SIGTERM would.
    pub stop: StopHandle,
    /// Kept alive for the test's duration; removed afterwards.
    pub data_dir: tempfile::TempDir,
}

/// The JWT secret every test app signs with, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";
/// A password that satisfies the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// A registered user's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// User id.
    pub user_id: u64,
    /// Bearer access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
}

/// Settings for a test: port 0, a fresh data directory, quiet logs.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    let vars = [
        ("KEEL__SERVER__PORT", "0".to_owned()),
        ("KEEL__SERVER__WORKERS", "1".to_owned()),
        ("KEEL__STORE__PATH", data_dir.display().to_string()),
        ("KEEL__LOG__LEVEL", "warn".to_owned()),
        ("KEEL__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        // Tests poll; the limits themselves are tested in `protection.rs` with low values.
        ("KEEL__PROTECTION__PER_IP_PER_MINUTE", "100000".to_owned()),
        ("KEEL__PROTECTION__PER_USER_PER_MINUTE", "100000".to_owned()),
    ];
    Settings::load_with_env(None, vars.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .expect("test settings are valid")
}

/// Starts the application as `main` does, with `adjust` applied to the settings first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    let mut settings = test_settings(data_dir.path());
    adjust(&mut settings);
    keel::telemetry::init(&settings);
    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = app.stop_handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp { address, client: http_client(), stop, data_dir }
}

impl TestApp {
    /// Stops this app and starts another on the same data directory (a graceful restart), with
    /// `adjust` applied to fresh test settings.
    pub async fn restart_with(self, adjust: impl Fn(&mut Settings)) -> TestApp {
        self.stop.stop();
        let data_dir = self.data_dir;
        // The first app releases the store's lock as it stops.
        let deadline = Instant::now() + Duration::from_secs(10);
        let app = loop {
            let mut settings = test_settings(data_dir.path());
            adjust(&mut settings);
            match Application::build(settings).await {
                Ok(app) => break app,
                Err(err) => {
                    assert!(Instant::now() < deadline, "no restart on the same data: {err:#}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let address = format!("http://127.0.0.1:{}", app.port());
        let stop = app.stop_handle();
        actix_web::rt::spawn(app.run_until_stopped());
        TestApp { address, client: http_client(), stop, data_dir }
    }
}

/// Starts the application with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    /// `GET` a path.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.expect("request sent")
    }

    /// `POST` JSON.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.address)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// Any method, with an optional bearer token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// Registers `email` with [`PASSWORD`] and returns its tokens.
    pub async fn register(&self, email: &str) -> Tokens {
        let res = self
            .post_json(
                "/api/v1/auth/register",
                &serde_json::json!({"email": email, "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(res.status().as_u16(), 201, "register {email}");
        let body: Value = res.json().await.unwrap();
        Tokens {
            user_id: body["user"]["id"].as_u64().unwrap(),
            access: body["tokens"]["access_token"].as_str().unwrap().to_owned(),
            refresh: body["tokens"]["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs in and returns the response.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    /// `GET /api/v1/me` with `token`: its status.
    pub async fn me_status(&self, token: &str) -> u16 {
        self.call(reqwest::Method::GET, "/api/v1/me", Some(token)).await.status().as_u16()
    }

    /// `POST` a raw body with a content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }
}

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

/// A reqwest client for talking to the app (with rustls's crypto provider installed first).
pub fn http_client() -> reqwest::Client {
    keel_venues::tls::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a reqwest client")
}
