//! schemathesis against a real Keel: generated requests to every operation of the served
//! OpenAPI document, with every check schemathesis has (`--checks=all`): no answer may be a 5xx;
//! every answer's status, content type, headers and body must be what the document says; a
//! request the document calls invalid must be refused, and one it calls valid must be accepted.
//!
//! `KEEL_SCHEMATHESIS` names the `st` executable (`.ci/run` installs a pinned schemathesis into a
//! virtualenv and sets it); without it the test says it was skipped.
//!
//! `POST /auth/logout` and `DELETE /me` end the session whose token the requests carry, so each
//! runs on its own after everything else, as a user of its own, on a short budget (whatever they
//! are sent, they answer 204 once and 401 after, both documented).
//!
//! "Valid data is accepted" has one documented limit: some rules need state the document cannot
//! describe. Those operations may also answer 422 to a request that matches the schema
//! ([`STATEFUL_422`]); every other operation may not.
//!
//! A test binary of its own, so cargo runs it after the API tests rather than beside them: the
//! run keeps a core busy for minutes, which would skew the API tests that wait on real time.
#![allow(clippy::unwrap_used)] // a panic is a failed test with its line

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keel_testkit::{TestApp, spawn_app_with};
use serde_json::{Value, json};

/// Where the test finds schemathesis.
const ST_VAR: &str = "KEEL_SCHEMATHESIS";
/// The operations that end the caller's session: the second run's.
const SESSION_ENDING: [&str; 2] = ["auth_logout", "auth_delete_me"];
/// Operations whose validation needs state the document cannot hold, so that a request that
/// matches the schema may still be refused with 422 `VALIDATION_FAILED` (or `ORDER_REJECTED`):
/// a symbol the venue lists and its tick and step sizes, a strategy's parameters (their shape
/// depends on `kind`), an exchange account of the caller's, an upload that exists, the risk
/// checks, and the content of an uploaded trade file; a notification channel's fields depend on
/// its `kind`, and its URL's host may be a refused address; a strategy module's bytes must be a
/// WebAssembly module speaking the ABI, which a schema of bytes cannot say.
const STATEFUL_422: [&str; 7] = [
    "bots_create",
    "bots_update",
    "trading_place",
    "backtests_create",
    "backtests_upload",
    "notifications_create",
    "strategies_upload",
];
/// Test cases per operation and phase: enough to reach each rule, few enough that the whole
/// run stays within a few minutes of CI.
const MAX_EXAMPLES: &str = "25";
/// Time budget of the main run, seconds; fuzzing repeats until it is spent.
const MAX_SECONDS: &str = "150";
/// Time budget of each session-ending operation's run: one request ends the session, and the
/// rest can only be refused.
const SESSION_ENDING_SECONDS: &str = "15";
/// schemathesis hooks: a serializer for `application/wasm` (the module upload's body).
const HOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis_hooks.py");
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

/// The run's configuration: no cache left behind; half of the generated `{id}` and `{order_id}`
/// values replaced by ones that exist, so requests also reach past the 404; and 422 accepted
/// for valid data only where [`STATEFUL_422`] says.
fn config(ids: &[u64], order_ids: &[u64]) -> String {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let stateful = STATEFUL_422.map(|id| format!("\"{id}\"")).join(", ");
    format!(
        "[cache]\nenabled = false\n\n\
         [dictionaries.ids]\nvalues = [{}]\n\n\
         [dictionaries.order_ids]\nvalues = [{}]\n\n\
         [parameters]\n\
         \"path.id\" = {{ dictionary = \"ids\", probability = 0.5 }}\n\
         \"path.order_id\" = {{ dictionary = \"order_ids\", probability = 0.5 }}\n\n\
         [[operations]]\n\
         include-operation-id = [{stateful}]\n\
         checks.positive_data_acceptance.expected-statuses = \
         [\"2xx\", \"401\", \"403\", \"404\", \"409\", \"422\", \"429\"]\n",
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
    // Notifications never leave the machine: Telegram is a closed loopback port, and the one
    // channel allowed per user is taken here, so generated webhook URLs are answered 409 and
    // never resolved or called.
    let app = spawn_app_with(|s| {
        s.notifications.telegram_api_url = "http://127.0.0.1:9".into();
        s.notifications.max_channels_per_user = 1;
    })
    .await;
    let tokens = app.register("fuzz@example.com").await;
    let telegram = json!({"kind": "telegram", "bot_token": "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "chat_id": "1", "events": ["fill", "bot_status", "kill_switch", "daily_pnl"]});
    created(&app, "/api/v1/notifications/channels", &telegram, &tokens.access, 201).await;
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
    let session_ending = SESSION_ENDING.map(|id| format!("--exclude-operation-id={id}"));
    run(&st, &app, &config_file, &tokens.access, &session_ending, MAX_SECONDS).await;
    // The session-ending operations last, each as a user of its own.
    for id in SESSION_ENDING {
        let user = app.register(&format!("fuzz-{id}@example.com")).await;
        let only = [format!("--include-operation-id={id}")];
        run(&st, &app, &config_file, &user.access, &only, SESSION_ENDING_SECONDS).await;
    }
}

/// Runs schemathesis over the operations `select` picks, as the user of `token`; fails the test
/// with its report when it finds anything.
async fn run(
    st: &Path,
    app: &TestApp,
    config_file: &Path,
    token: &str,
    select: &[String],
    max_seconds: &str,
) {
    let base = format!("{}/api/v1", app.address);
    let mut args = vec![
        format!("--config-file={}", config_file.display()),
        "run".to_owned(),
        format!("{base}/openapi.json"),
        format!("--url={base}"),
        format!("--header=Authorization: Bearer {token}"),
    ];
    args.extend_from_slice(select);
    args.extend([
        "--checks=all".to_owned(),
        "--phases=examples,coverage,fuzzing,stateful".to_owned(),
        format!("--max-examples={MAX_EXAMPLES}"),
        format!("--max-time={max_seconds}"),
        format!("--seed={SEED}"),
        "--generation-deterministic".to_owned(),
        "--workers=1".to_owned(),
        "--request-timeout=10".to_owned(),
        "--no-color".to_owned(),
    ]);
    let started = Instant::now();
    // The app's actors run on this thread: wait for schemathesis on another.
    let dir = config_file.parent().unwrap().to_owned();
    let st = st.to_owned();
    let output: Output = tokio::task::spawn_blocking(move || {
        Command::new(&st).args(args).env("SCHEMATHESIS_HOOKS", HOOKS).current_dir(dir).output()
    })
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
    assert!(took < Duration::from_secs(400), "schemathesis took {took:?}");
}
