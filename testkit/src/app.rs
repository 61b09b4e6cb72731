//! `spawn_app()`: the real application on a free port with its own data directory, and the
//! plain HTTP calls every test makes through it.
//!
//! Typed helpers for one area of the API sit in modules of their own ([`crate::auth`],
//! [`crate::bots`], [`crate::backtests`], [`crate::health`]), each adding to [`TestApp`].

use std::time::{Duration, Instant};

use keel::configuration::Settings;
use keel::startup::{Application, StopHandle};
use reqwest::Method;
use serde_json::Value;

/// A running Keel for one test.
#[derive(Debug)]
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

/// Settings for a test: port 0, a fresh data directory, quiet logs.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    let vars = [
        ("KEEL__SERVER__PORT", "0".to_owned()),
        ("KEEL__SERVER__WORKERS", "1".to_owned()),
        ("KEEL__STORE__PATH", data_dir.display().to_string()),
        ("KEEL__LOG__LEVEL", "warn".to_owned()),
        // Tests that read the access log point it at a file of their own.
        ("KEEL__ACCESS_LOG__OUTPUT", "off".to_owned()),
        ("KEEL__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        // Tests poll; the limits themselves are tested in `protection.rs` with low values.
        ("KEEL__PROTECTION__PER_IP_PER_MINUTE", "100000".to_owned()),
        ("KEEL__PROTECTION__PER_USER_PER_MINUTE", "100000".to_owned()),
        ("KEEL__AUTH__REGISTRATIONS_PER_HOUR_PER_IP", "100000".to_owned()),
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
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// A request with a JSON body and a token.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: &str,
    ) -> reqwest::Response {
        let mut req =
            self.client.request(method, format!("{}{path}", self.address)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request sent")
    }

    /// `GET` as JSON, asserting 200.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let res = self.send(Method::GET, path, None, token).await;
        assert_eq!(res.status().as_u16(), 200, "GET {path}");
        res.json().await.unwrap()
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

/// A reqwest client for talking to the app (with rustls's crypto provider installed first).
pub fn http_client() -> reqwest::Client {
    keel_venues::tls::install_crypto_provider();
    // Idle connections are dropped well before actix's 5 s keep-alive closes them: a request sent
    // on a connection the server is closing at that moment fails with `IncompleteMessage` (seen
    // when a test spends ~5 s writing a fixture between two requests).
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("a reqwest client")
}
