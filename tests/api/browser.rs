//! The dashboard in a real browser: `tests/browser/dashboard_flow.py` (selenium) drives headless
//! Chromium through the main flow against this app, fails on any console error or CSP violation,
//! and writes screenshots and measurements under `<target>/dashboard-screenshots/`.
//!
//! Needs `chromium`, `chromedriver` and a Python with selenium (`.ci/run` installs them and sets
//! `KEEL_BROWSER_PYTHON`); without them it says so and passes as skipped.

use std::path::PathBuf;
use std::process::Command;

use keel_testkit::spawn_app;

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
    let app = spawn_app().await;
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
            .status()
    })
    .await
    .unwrap()
    .expect("the browser test runs");
    assert!(status.success(), "the browser flow failed (see its output and failure.png)");
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
