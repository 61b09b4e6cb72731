//! The dashboard in a real browser: `tests/browser/dashboard_flow.py` (selenium) drives headless
//! Chromium through the main flow against this app, fails on any console error or CSP violation,
//! and writes screenshots and measurements under `<target>/dashboard-screenshots/`.
//!
//! The app also runs Bybit USDT perpetuals against loopback fakes (a venue with leverage, its
//! market kept moving here), and another user's live perpetual bot holding a position the venue
//! reports, which the flow looks at last.
//!
//! Needs `chromium`, `chromedriver` and a Python with selenium (`.ci/run` installs them and sets
//! `KEEL_BROWSER_PYTHON`); without them it says so and passes as skipped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use keel_testkit::fake_bybit::{API_KEY, API_SECRET, FakeBybit};
use keel_testkit::linear::{LinearApp, spawn_app_with_linear};
use keel_testkit::{TestApp, eventually, spawn_app};
use serde_json::json;

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

#[actix_web::test]
async fn the_dashboard_main_flow_works_in_headless_chromium_with_a_clean_console() {
    let python = std::env::var("KEEL_BROWSER_PYTHON").ok();
    let missing: Vec<&str> = [
        (!on_path("chromium")).then_some("chromium"),
        (!on_path("chromedriver")).then_some("chromedriver"),
        python.is_none().then_some("KEEL_BROWSER_PYTHON (a Python with selenium)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        eprintln!("skipped: the browser test needs {}", missing.join(", "));
        return;
    }
    let (app, perps) = app_with_perpetuals().await;
    let (live_email, live_bot) = live_perpetual_bot(&app, &perps.rest).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard_flow.py");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    let out = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    // The SDK-less module of docs/STRATEGY_ABI.md, for the Strategies page's upload.
    let module = out.join("first_trade.wasm");
    let wat = include_str!("../../wasm/tests/modules/first_trade.wat");
    std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
    let address = app.address.clone();
    let status = actix_web::rt::task::spawn_blocking(move || {
        Command::new(python.unwrap())
            .arg(script)
            .arg(address)
            .arg(&out)
            .args(["--heap-seconds", "20"])
            .arg("--module")
            .arg(&module)
            .args(["--live-user", live_email, "--live-bot", &live_bot.to_string()])
            .status()
    })
    .await
    .unwrap()
    .expect("the browser test runs");
    assert!(status.success(), "the browser flow failed (see its output and failure.png)");
}

/// The Bybit fakes behind `bybit_linear`, and the task keeping its market moving.
struct Perpetuals {
    rest: FakeBybit,
    publisher: actix_web::rt::task::JoinHandle<()>,
}

impl Drop for Perpetuals {
    fn drop(&mut self) {
        self.publisher.abort();
    }
}

/// The app with `bybit_linear` enabled against loopback fakes, whose public stream prints a
/// quote and a trade near 10,000 every 250 ms (so its chart, marks and paper fills work).
async fn app_with_perpetuals() -> (TestApp, Perpetuals) {
    let LinearApp { app, stream, rest } = spawn_app_with_linear(true, |_| {}).await;
    rest.set_price("10000".parse().unwrap());
    let stream = Arc::new(stream);
    let publisher = actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        for n in 0u64.. {
            ticks.tick().await;
            let ts = keel_venues::now_us() / 1000;
            let price = format!("{}.{}", 9990 + n % 20, n % 10);
            stream.publish(
                "orderbook.1.BTCUSDT",
                &json!({"topic": "orderbook.1.BTCUSDT", "type": "snapshot", "ts": ts,
                    "data": {"s": "BTCUSDT", "b": [[price, "5"]], "a": [[format!("{price}1"), "5"]],
                        "u": n + 1, "seq": n + 1}}),
            );
            stream.publish(
                "publicTrade.BTCUSDT",
                &json!({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": ts,
                    "data": [{"T": ts, "s": "BTCUSDT", "S": "Buy", "v": "0.01", "p": price,
                        "L": "PlusTick", "i": format!("t{n}"), "BT": false}]}),
            );
        }
    });
    (app, Perpetuals { rest, publisher })
}

/// Another user's running live `bybit_linear` bot whose account holds a long the venue reports
/// (entry 9,800, at 5x, with its liquidation price); returns the user's email and the bot.
async fn live_perpetual_bot(app: &TestApp, rest: &FakeBybit) -> (&'static str, u64) {
    let email = "browser-perp-live@example.com";
    let user = app.register(email).await;
    rest.set_position("BTCUSDT", "0.01".parse().unwrap(), "9800".parse().unwrap());
    let account = app.add_exchange_account(&user.access, "bybit_linear", API_KEY, API_SECRET).await;
    // At 5x the venue reports a liquidation price (at 1x a long has none).
    let bot = app
        .create_live_bot_with(&user.access, "bybit_linear", account, |b| b["leverage"] = json!(5))
        .await;
    let res = app.control(&user.access, bot, "start").await;
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    let path = format!("/api/v1/bots/{bot}/position");
    let (path, token) = (&path, &user.access);
    eventually(
        Duration::from_secs(15),
        "the venue's position on the live bot",
        move || async move { app.get_json(path, token).await["venue"]["entry_price"].is_string() },
    )
    .await;
    (email, bot)
}

#[actix_web::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy_and_revalidated() {
    let app = spawn_app().await;
    let csp = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
               connect-src 'self'; frame-ancestors 'none'";
    let page = app.get("/").await;
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.headers()["content-security-policy"], csp);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/ui/js/main.js">"#), "{html}");

    let module = app.get("/ui/js/main.js").await;
    assert_eq!(module.status().as_u16(), 200);
    assert_eq!(module.headers()["content-security-policy"], csp);
    assert!(module.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let etag = module.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(format!("{}/ui/js/main.js", app.address))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);

    // Compressed when the client takes gzip (the chart library is most of the first load).
    let library = app
        .client
        .get(format!(
            "{}/ui/vendor/lightweight-charts/lightweight-charts.standalone.production.mjs",
            app.address
        ))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(library.headers()["content-encoding"], "gzip");

    let missing = app.get("/ui/js/nope.js").await;
    keel_testkit::assert_error(missing, 404, "NOT_FOUND").await;
}
