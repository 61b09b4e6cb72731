//! Backtests: parity of a paper bot on the replaying sim venue with the library backtest of the
//! same file, and the HTTP job lifecycle (uploads, recorded ranges, progress, results, cancel,
//! ownership, errors).

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_actors::backtest::input::{TradeReader, synth, write_csv};
use keel_actors::backtest::{BacktestConfig, run};
use keel_actors::bot::Bracket;
use keel_actors::record::format::write_recording;
use keel_core::market::{MarketEvent, Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{Fill, Order, OrderOrigin, OrderStatus};
use keel_testkit::{TestApp, assert_error, eventually, spawn_app_with};
use keel_venues::sim::{Instrument, SimMarket};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn btc() -> Symbol {
    Symbol::parse("BTCUSDT").unwrap()
}

/// `steps` steps of the sim venue's walk (a trade and a quote each), 100 ms apart.
fn walk(steps: u64, seed: u64) -> Vec<MarketEvent> {
    let mut market = SimMarket::new(seed, vec![Instrument::for_symbol(btc())]);
    (0..steps)
        .flat_map(|i| {
            let ts = 1_764_547_200_000 + i * 100;
            market.step(&btc(), ts, ts * 1000).unwrap()
        })
        .collect()
}

fn write_recording_file(path: &Path, events: &[MarketEvent]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write_recording(&mut out, VenueId::Sim, &btc(), events).unwrap();
    std::io::Write::flush(&mut out).unwrap();
}

/// Every page of a bot's orders or fills.
async fn all_pages<T: serde::de::DeserializeOwned>(
    app: &TestApp,
    token: &str,
    bot_id: u64,
    what: &str,
) -> Vec<T> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .get_json(&format!("/api/v1/bots/{bot_id}/{what}?after={after}&limit=500"), token)
            .await;
        for item in page["items"].as_array().unwrap() {
            items.push(serde_json::from_value(item.clone()).unwrap());
        }
        match page["next_after"].as_u64() {
            Some(next) => after = next,
            None => return items,
        }
    }
}

#[actix_web::test]
async fn a_paper_bot_on_a_replayed_file_makes_exactly_the_orders_and_fills_of_its_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parity.krec");
    write_recording_file(&file, &walk(3_000, 11));
    let replay = file.clone();
    let app = spawn_app_with(move |s| {
        s.venues.sim.replay = replay;
        s.venues.sim.symbols = vec!["BTCUSDT".into()];
    })
    .await;
    let user = app.register("parity@example.com").await;
    let strategy = json!({"kind": "ema_cross", "params": {"fast": 5, "slow": 20, "qty": "0.002"}});
    // Tight enough that the sim walk reaches both legs before the strategy's own exit (about
    // 1 and 0.2 quote on BTCUSDT, whose walk moves up to 0.25 a trade).
    let bracket = json!({"take_profit_pct": "0.001", "stop_loss_pct": "0.0002"});
    let bot = app
        .create_bot(
            &user.access,
            &json!({
                "name": "parity",
                "venue": "sim",
                "symbol": "BTCUSDT",
                "mode": "paper",
                "strategy": strategy,
                "bracket": bracket,
                "paper": {"starting_quote": "10000", "fee_bps": "7.5"}
            }),
        )
        .await;
    let bot_id = bot["id"].as_u64().unwrap();

    // The library backtest of the same file, as `keel backtest --data` reads it.
    let config = BacktestConfig {
        bot_id,
        strategy: serde_json::from_value::<StrategySpec>(strategy).unwrap(),
        filters: Instrument::for_symbol(btc()).filters(),
        risk: RiskLimits::default(),
        bracket: Some(serde_json::from_value::<Bracket>(bracket).unwrap()),
        fee_bps: "7.5".parse().unwrap(),
        slippage_bps: Decimal::from(5),
        starting_quote: Decimal::from(10_000),
        futures: None,
    };
    let reader = TradeReader::open(&file, btc(), false).unwrap();
    let expected = run(&config, reader).unwrap().unwrap();
    assert!(expected.fills.len() > 20, "the strategy trades: {:?}", expected.report);
    let leg_filled = |origin| {
        expected.orders.iter().any(|o| o.origin == origin && o.status == OrderStatus::Filled)
    };
    assert!(
        leg_filled(OrderOrigin::TakeProfit) && leg_filled(OrderOrigin::StopLoss),
        "both bracket legs are exercised too"
    );

    assert_eq!(app.control(&user.access, bot_id, "start").await.status().as_u16(), 200);
    eventually(Duration::from_secs(60), "the replay to finish", || async {
        let venues = app.get_json("/api/v1/venues", &user.access).await;
        venues["items"][0]["replay"]["finished"] == true
    })
    .await;
    let venues = app.get_json("/api/v1/venues", &user.access).await;
    assert_eq!(venues["items"][0]["replay"]["played"], 6_000, "{venues}");
    eventually(Duration::from_secs(30), "the bot to catch up with the replay", || async {
        let fills: Vec<Fill> = all_pages(&app, &user.access, bot_id, "fills").await;
        let orders: Vec<Order> = all_pages(&app, &user.access, bot_id, "orders").await;
        fills.len() >= expected.fills.len() && orders == expected.orders
    })
    .await;
    let fills: Vec<Fill> = all_pages(&app, &user.access, bot_id, "fills").await;
    let orders: Vec<Order> = all_pages(&app, &user.access, bot_id, "orders").await;
    assert_eq!(orders, expected.orders, "ids, prices, quantities, statuses, links");
    assert_eq!(fills, expected.fills, "ids, prices, quantities, fees");
}

/// An app with small backtest limits for the job tests.
async fn backtest_app(adjust: impl FnOnce(&mut keel::configuration::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.backtests.workers = 1;
        s.backtests.max_per_user = 2;
        adjust(s);
    })
    .await
}

pub(crate) fn synth_csv(ticks: u64) -> Vec<u8> {
    let mut csv = Vec::new();
    write_csv(synth(ticks, 5, btc()), &mut csv).unwrap();
    csv
}

fn job(data: Value) -> Value {
    json!({
        "strategy": {"kind": "ema_cross", "params": {"fast": 5, "slow": 20, "qty": "0.001"}},
        "fee_bps": "10",
        "starting_quote": "10000",
        "data": data
    })
}

#[actix_web::test]
async fn an_uploaded_file_backtests_to_a_report_that_only_its_owner_sees() {
    let app = backtest_app(|_| {}).await;
    let alice = app.register("bt-alice@example.com").await;
    let bob = app.register("bt-bob@example.com").await;
    let upload = app.upload(&alice.access, synth_csv(20_000)).await;
    let id = app.start_backtest(&alice.access, &job(json!({"upload_id": upload}))).await;
    let done = app.backtest_until(&alice.access, id, |v| v["status"] == "done").await;
    assert_eq!(done["progress"], 1.0);
    assert_eq!(done["result"]["ticks"], 20_000, "{done}");
    assert!(done["result"]["fill_count"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(done["result"]["skipped_rows"], 0);
    // The same run as the library gives.
    let expected = {
        let config = BacktestConfig {
            bot_id: 0,
            strategy: serde_json::from_value(job(Value::Null)["strategy"].clone()).unwrap(),
            filters: Instrument::for_symbol(btc()).filters(),
            risk: RiskLimits::default(),
            bracket: None,
            fee_bps: Decimal::TEN,
            slippage_bps: Decimal::from(5),
            starting_quote: Decimal::from(10_000),
            futures: None,
        };
        run(&config, synth(20_000, 5, btc()).map(Ok::<_, ()>)).unwrap().unwrap()
    };
    assert_eq!(done["result"]["fill_count"], expected.fills.len());
    assert_eq!(done["result"]["net_pnl"], expected.report.performance.net_pnl.to_string());
    // The trades and the equity curve: the last fills (all of them here), and the equity after
    // each, ending where the report does when the run ends flat.
    let fills = done["result"]["fills"].as_array().unwrap();
    let equity = done["result"]["equity"].as_array().unwrap();
    let kept = expected.fills.len().min(2_000);
    assert_eq!((fills.len(), equity.len()), (kept, kept));
    let last = expected.fills.last().unwrap();
    assert_eq!(fills[kept - 1]["id"], last.id, "{}", fills[kept - 1]);
    assert_eq!(equity[kept - 1]["ts"], last.ts);
    let mut position =
        keel_core::trading::Position { quote_balance: Decimal::from(10_000), ..Default::default() };
    for fill in &expected.fills {
        position.apply(fill.side, fill.qty, fill.price, fill.fee);
    }
    let final_equity = position.quote_balance + position.qty * last.price;
    assert_eq!(equity[kept - 1]["equity"], final_equity.to_string());

    let path = format!("/api/v1/backtests/{id}");
    let theirs = app.send(Method::GET, &path, None, &bob.access).await;
    assert_error(theirs, 404, "BACKTEST_NOT_FOUND").await;
    let theirs = app.send(Method::DELETE, &path, None, &bob.access).await;
    assert_error(theirs, 404, "BACKTEST_NOT_FOUND").await;
    // Bob cannot use Alice's upload either.
    let res = app
        .send(
            Method::POST,
            "/api/v1/backtests",
            Some(&job(json!({"upload_id": upload}))),
            &bob.access,
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["details"][0]["field"], "data.upload_id");
    let listed = app.get_json("/api/v1/backtests", &bob.access).await;
    assert_eq!(listed["items"], json!([]));
    let listed = app.get_json("/api/v1/backtests", &alice.access).await;
    assert_eq!(listed["items"][0]["id"], id);
    // Deleting a finished backtest forgets it.
    let res = app.send(Method::DELETE, &path, None, &alice.access).await;
    assert_eq!(res.status().as_u16(), 204);
    assert_error(
        app.send(Method::GET, &path, None, &alice.access).await,
        404,
        "BACKTEST_NOT_FOUND",
    )
    .await;
}

#[actix_web::test]
async fn a_running_backtest_shows_progress_and_stops_when_canceled() {
    let app = backtest_app(|_| {}).await;
    let user = app.register("bt-cancel@example.com").await;
    // A long day of recordings (600,000 events), written in place rather than uploaded.
    let record_dir = app.data_dir.path().join("record");
    let day = keel_actors::record::file_path(&record_dir, VenueId::Sim, &btc(), "2026-10-01");
    write_recording_file(&day, &walk(300_000, 8));
    let data = json!({"recorded": {"venue": "sim", "from": "2026-10-01", "to": "2026-10-01"}});
    let id = app.start_backtest(&user.access, &job(data.clone())).await;
    let running = app
        .backtest_until(&user.access, id, |v| {
            v["status"] == "running" && v["ticks"].as_u64() > Some(0)
        })
        .await;
    let progress = running["progress"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 1.0, "{running}");
    // The per-user limit (2): a third is refused while two are active.
    let second = app.start_backtest(&user.access, &job(data.clone())).await;
    let res = app.send(Method::POST, "/api/v1/backtests", Some(&job(data)), &user.access).await;
    assert_error(res, 429, "TOO_MANY_BACKTESTS").await;
    // The queued one first, so the worker cannot pick it up when the running one stops.
    for job_id in [second, id] {
        let res = app
            .send(Method::DELETE, &format!("/api/v1/backtests/{job_id}"), None, &user.access)
            .await;
        assert_eq!(res.status().as_u16(), 202);
    }
    let canceled = app.backtest_until(&user.access, id, |v| v["status"] == "canceled").await;
    assert!(canceled["progress"].as_f64().unwrap() < 1.0, "{canceled}");
    assert_eq!(canceled["result"], Value::Null);
    let never = app.backtest_until(&user.access, second, |v| v["status"] == "canceled").await;
    assert_eq!(never["started_ts"], Value::Null, "a queued backtest never starts");
}

#[actix_web::test]
async fn a_recorded_range_backtests_the_recordings_of_those_days() {
    let app = backtest_app(|_| {}).await;
    let user = app.register("bt-recorded@example.com").await;
    let record_dir = app.data_dir.path().join("record");
    let events = walk(1_000, 3);
    let (day1, day2) = events.split_at(1_000);
    let file = |date: &str| -> PathBuf {
        keel_actors::record::file_path(&record_dir, VenueId::Sim, &btc(), date)
    };
    write_recording_file(&file("2026-11-30"), day1);
    write_recording_file(&file("2026-12-01"), day2);
    write_recording_file(&file("2026-12-02"), &walk(500, 4));
    let range =
        |from: &str, to: &str| json!({"recorded": {"venue": "sim", "from": from, "to": to}});
    let id = app.start_backtest(&user.access, &job(range("2026-11-30", "2026-12-01"))).await;
    let done = app.backtest_until(&user.access, id, |v| v["status"] == "done").await;
    assert_eq!(done["result"]["ticks"], 2_000, "trades and quotes of both days: {done}");

    let res = app
        .send(
            Method::POST,
            "/api/v1/backtests",
            Some(&job(range("2025-01-01", "2025-01-31"))),
            &user.access,
        )
        .await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["details"][0]["field"], "data.recorded", "{error}");
}

#[actix_web::test]
async fn bad_backtest_requests_answer_400_or_422_in_the_error_shape() {
    let app = backtest_app(|_| {}).await;
    let user = app.register("bt-bad@example.com").await;
    let res = app
        .client
        .post(format!("{}/api/v1/backtests", app.address))
        .bearer_auth(&user.access)
        .header("content-type", "application/json")
        .body("{\"strategy\": ")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "MALFORMED_JSON").await;
    let cases = [
        (json!({"fee_bps": "abc", "data": {}}), "fee_bps"),
        (
            json!({"strategy": {"kind": "nope", "params": {}}, "data": {"upload_id": "0".repeat(32)}}),
            "strategy.kind",
        ),
        (
            job(
                json!({"upload_id": "x", "recorded": {"venue": "sim", "from": "2026-01-01", "to": "2026-01-02"}}),
            ),
            "data",
        ),
        (
            job(json!({"recorded": {"venue": "moon", "from": "2026-01-01", "to": "2026-01-02"}})),
            "data.recorded.venue",
        ),
        (
            job(json!({"recorded": {"venue": "sim", "from": "yesterday", "to": "2026-01-02"}})),
            "data.recorded.from",
        ),
        (
            job(json!({"recorded": {"venue": "sim", "from": "2026-01-03", "to": "2026-01-02"}})),
            "data.recorded.to",
        ),
        (job(json!({"upload_id": "../../etc/passwd"})), "data.upload_id"),
    ];
    for (body, field) in cases {
        let res = app.send(Method::POST, "/api/v1/backtests", Some(&body), &user.access).await;
        let error = assert_error(res, 422, "VALIDATION_FAILED").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["field"].as_str())
            .collect();
        assert!(fields.contains(&field), "{body}: {error}");
    }
    let res = app.send(Method::GET, "/api/v1/backtests/nope", None, &user.access).await;
    assert_error(res, 404, "NOT_FOUND").await;
    let res = app.send(Method::GET, "/api/v1/backtests/999", None, &user.access).await;
    assert_error(res, 404, "BACKTEST_NOT_FOUND").await;
    // Not a trade file.
    let res = app
        .post_raw_with_token("/api/v1/backtests/uploads", b"hello,world\n".to_vec(), &user.access)
        .await;
    let error = assert_error(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(error["details"][0]["field"], "body");
}

#[actix_web::test]
async fn an_upload_over_the_limit_answers_413() {
    let app = backtest_app(|s| s.backtests.max_upload_bytes = 4096).await;
    let user = app.register("bt-big@example.com").await;
    let res =
        app.post_raw_with_token("/api/v1/backtests/uploads", synth_csv(1_000), &user.access).await;
    assert_error(res, 413, "PAYLOAD_TOO_LARGE").await;
    let small = app.upload(&user.access, synth_csv(50)).await;
    assert_eq!(small.len(), 32);
}

#[test]
fn keel_backtest_reads_a_recording_and_plots_its_equity_with_no_progress_bar_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("2026-12-01.krec");
    write_recording_file(&file, &walk(2_000, 6));
    let svg = dir.path().join("equity.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .env_clear()
        .env("KEEL__STORE__PATH", dir.path())
        .args(["backtest", "--strategy", "ema_cross"])
        .args(["--params", r#"{"fast":5,"slow":20,"qty":"0.001"}"#])
        .arg("--data")
        .arg(&file)
        .arg("--plot")
        .arg(&svg)
        .arg("--json")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "no progress bar when stderr is not a terminal: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ticks"], 4_000, "trades and quotes: {report}");
    assert_eq!(report["skipped_rows"], 0);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
}

#[actix_web::test]
async fn backtests_survive_a_restart_queued_ones_run_a_running_one_runs_again_results_stay() {
    let adjust = |s: &mut keel::configuration::Settings| {
        s.backtests.workers = 1;
        s.backtests.max_per_user = 3;
    };
    let app = spawn_app_with(adjust).await;
    let user = app.register("bt-restart@example.com").await;
    let upload = app.upload(&user.access, synth_csv(20_000)).await;
    let small = job(json!({"upload_id": upload}));
    let finished = app.start_backtest(&user.access, &small).await;
    let before = app.backtest_until(&user.access, finished, |v| v["status"] == "done").await;

    // A long recorded day keeps the one worker busy; a second job waits behind it.
    let record_dir = app.data_dir.path().join("record");
    let day = keel_actors::record::file_path(&record_dir, VenueId::Sim, &btc(), "2026-10-02");
    write_recording_file(&day, &walk(150_000, 9));
    let long = job(json!({"recorded": {"venue": "sim", "from": "2026-10-02", "to": "2026-10-02"}}));
    let running = app.start_backtest(&user.access, &long).await;
    app.backtest_until(&user.access, running, |v| {
        v["status"] == "running" && v["ticks"].as_u64() > Some(0)
    })
    .await;
    let queued = app.start_backtest(&user.access, &small).await;
    let path = |id: u64| format!("/api/v1/backtests/{id}");
    assert_eq!(app.get_json(&path(queued), &user.access).await["status"], "queued");

    let app = app.restart_with(adjust).await;
    let token = app.token("bt-restart@example.com", keel_testkit::PASSWORD).await;
    // The interrupted job is back, not finished and not canceled: it runs again.
    let again = app.get_json(&path(running), &token).await;
    assert!(again["status"] == "queued" || again["status"] == "running", "{again}");
    let waiting = app.get_json(&path(queued), &token).await;
    assert!(waiting["status"] == "queued" || waiting["status"] == "running", "{waiting}");
    let rerun = app.backtest_until(&token, running, |v| v["status"] == "done").await;
    assert!(rerun["result"]["ticks"].as_u64().unwrap() > 0, "{rerun}");
    assert_eq!(rerun["progress"], 1.0);
    let ran = app.backtest_until(&token, queued, |v| v["status"] == "done").await;
    // Same input, same report: the queued job and the one finished before the restart agree.
    assert_eq!(ran["result"]["net_pnl"], before["result"]["net_pnl"]);
    assert_eq!(ran["result"]["orders"], before["result"]["orders"]);
    // The finished one is still there, as it ended.
    let kept = app.get_json(&path(finished), &token).await;
    assert_eq!(kept["status"], "done");
    assert_eq!(kept["result"], before["result"], "the stored result reads back unchanged");
    assert_eq!(
        (kept["created_ts"].clone(), kept["finished_ts"].clone()),
        (before["created_ts"].clone(), before["finished_ts"].clone())
    );
    let listed = app.get_json("/api/v1/backtests", &token).await;
    let ids: Vec<u64> =
        listed["items"].as_array().unwrap().iter().map(|v| v["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [queued, running, finished], "newest first, ids kept across the restart");
    // A finished job removed by its owner stays removed after another restart.
    let res = app.send(Method::DELETE, &path(finished), None, &token).await;
    assert_eq!(res.status().as_u16(), 204);
    let app = app.restart_with(adjust).await;
    let token = app.token("bt-restart@example.com", keel_testkit::PASSWORD).await;
    let res = app.call(Method::GET, &path(finished), Some(&token)).await;
    assert_error(res, 404, "BACKTEST_NOT_FOUND").await;
    app.stop.stop();
}

#[test]
fn keel_backtest_runs_a_wasm_module_like_the_built_in_it_mirrors() {
    let module = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sdk/target/wasm32-unknown-unknown/release/examples/ema_cross.wasm"
    );
    assert!(std::path::Path::new(module).exists(), "build the SDK examples first (.ci/run)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("2026-12-01.krec");
    write_recording_file(&file, &walk(2_000, 6));
    let params = r#"{"fast":5,"slow":20,"qty":"0.001"}"#;
    let run = |strategy: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .env_clear()
            .env("KEEL__STORE__PATH", dir.path())
            .arg("backtest")
            .args(strategy)
            .args(["--params", params, "--json"])
            .arg("--data")
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut report: Value = serde_json::from_slice(&out.stdout).unwrap();
        for timing in ["seconds", "ticks_per_sec"] {
            report.as_object_mut().unwrap().remove(timing);
        }
        report
    };
    let built_in = run(&["--strategy", "ema_cross"]);
    let wasm = run(&["--wasm", module]);
    assert!(built_in["orders"].as_u64().unwrap() > 0, "{built_in}");
    assert_eq!(wasm, built_in);

    // Bad params are refused with the module's reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .env_clear()
        .env("KEEL__STORE__PATH", dir.path())
        .args(["backtest", "--wasm", module, "--params", r#"{"fast":9,"slow":3,"qty":"0.001"}"#])
        .arg("--data")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fast: must be below slow"), "{stderr}");
}
