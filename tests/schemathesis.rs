//! schemathesis against a real Keel: generated requests to the auth, exchange-account, bot and
//! bot-trading endpoints, from the served OpenAPI document. No answer may be a 5xx, every
//! answer's status, content type, headers and body must be what the document says, and a request
//! the document calls invalid must be refused.
//!
//! `KEEL_SCHEMATHESIS` names the `st` executable (`.ci/run` installs a pinned schemathesis into a
//! virtualenv and sets it); without it the test says it was skipped.
//!
//! `POST /auth/logout` and `DELETE /me` are left out: either would end the session whose token
//! every other generated request carries, and the rest of the run would only test the 401 path.
//! Both are covered by `tests/api/auth.rs`.
//!
//! A test binary of its own, so cargo runs it after the API tests rather than beside them: the
//! run keeps a core busy for minutes, which would skew the API tests that wait on real time.
#![allow(clippy::unwrap_used)] // a panic is a failed test with its line

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keel_testkit::{TestApp, spawn_app};
use serde_json::{Value, json};

/// Where the test finds schemathesis.
const ST_VAR: &str = "KEEL_SCHEMATHESIS";
/// Operations under test: the auth, account, exchange-account and bot routes (bot trading
/// included), as paths of the document.
const INCLUDE_PATHS: &str = r"^/(auth/|me$|exchange-accounts|bots)";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "40";
/// Time budget of the whole run, seconds; fuzzing repeats until it is spent.
const MAX_SECONDS: &str = "150";
/// Fixed seed, with deterministic generation, so a failure reproduces.
const SEED: &str = "20261202";

fn schemathesis() -> Option<PathBuf> {
    match std::env::var(ST_VAR) {
        Ok(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
        _ => {
            eprintln!(
                "schemathesis: skipped: {ST_VAR} is not set (`.ci/run` installs schemathesis \
                 and sets it)"
            );
            None
        }
    }
}

/// The run's configuration: no cache left behind, and half of the generated `{id}` and
/// `{order_id}` values replaced by ones that exist, so requests also reach past the 404.
fn config(ids: &[u64], order_ids: &[u64]) -> String {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    format!(
        "[cache]\nenabled = false\n\n\
         [dictionaries.ids]\nvalues = [{}]\n\n\
         [dictionaries.order_ids]\nvalues = [{}]\n\n\
         [parameters]\n\
         \"path.id\" = {{ dictionary = \"ids\", probability = 0.5 }}\n\
         \"path.order_id\" = {{ dictionary = \"order_ids\", probability = 0.5 }}\n",
        list(ids),
        list(order_ids)
    )
}

/// `POST`s `body` and returns the answer's JSON, asserting its status.
async fn created(app: &TestApp, path: &str, body: &Value, token: &str, status: u16) -> Value {
    let res = app.post_json(path, body, Some(token)).await;
    let got = res.status().as_u16();
    let json: Value = res.json().await.unwrap();
    assert_eq!(got, status, "POST {path}: {json}");
    json
}

#[actix_web::test]
async fn generated_requests_get_no_5xx_and_only_documented_answers() {
    let Some(st) = schemathesis() else { return };
    let app = spawn_app().await;
    let tokens = app.register("fuzz@example.com").await;
    // Something for the generated requests to find: an exchange account, a running paper bot
    // and a resting order of it.
    let account = app
        .post_json(
            "/api/v1/exchange-accounts",
            &json!({"venue": "binance", "label": "fuzz", "api_key": "k3y", "api_secret": "s3cret"}),
            Some(&tokens.access),
        )
        .await;
    assert_eq!(account.status().as_u16(), 201);
    let account: Value = account.json().await.unwrap();
    // A paper bot whose slow EMA never fills by itself: it only holds the order placed here.
    let bot = json!({"name": "fuzz", "venue": "sim", "symbol": "BTCUSDT", "mode": "paper",
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}}});
    let bot = created(&app, "/api/v1/bots", &bot, &tokens.access, 201).await;
    let bot_id = bot["id"].as_u64().unwrap();
    created(&app, &format!("/api/v1/bots/{bot_id}/start"), &json!({}), &tokens.access, 200).await;
    let limit = json!({"side": "buy", "qty": "0.01", "type": "limit", "price": "1000.00"});
    let orders = format!("/api/v1/bots/{bot_id}/orders");
    let order = created(&app, &orders, &limit, &tokens.access, 200).await;

    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("schemathesis.toml");
    let ids = [bot_id, account["id"].as_u64().unwrap()];
    std::fs::write(&config_file, config(&ids, &[order["id"].as_u64().unwrap()])).unwrap();
    let base = format!("{}/api/v1", app.address);
    let args = [
        format!("--config-file={}", config_file.display()),
        "run".to_owned(),
        format!("{base}/openapi.json"),
        format!("--url={base}"),
        format!("--header=Authorization: Bearer {}", tokens.access),
        format!("--include-path-regex={INCLUDE_PATHS}"),
        "--exclude-operation-id=auth_logout".to_owned(),
        "--exclude-operation-id=auth_delete_me".to_owned(),
        "--checks=not_a_server_error,status_code_conformance,content_type_conformance,\
         response_headers_conformance,response_schema_conformance,negative_data_rejection"
            .to_owned(),
        "--phases=examples,coverage,fuzzing,stateful".to_owned(),
        format!("--max-examples={MAX_EXAMPLES}"),
        format!("--max-time={MAX_SECONDS}"),
        format!("--seed={SEED}"),
        "--generation-deterministic".to_owned(),
        "--workers=1".to_owned(),
        "--request-timeout=10".to_owned(),
        "--no-color".to_owned(),
    ];
    let started = Instant::now();
    // The app's actors run on this thread: wait for schemathesis on another.
    let dir = work.path().to_owned();
    let output: Output =
        tokio::task::spawn_blocking(move || Command::new(&st).args(args).current_dir(dir).output())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot run {ST_VAR}: {e}"));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown by the test harness when the test fails.
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found problems ({}, after {took:?}); its report is above",
        output.status
    );
    assert!(took < Duration::from_secs(600), "schemathesis took {took:?}");
}
