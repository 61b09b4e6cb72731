//! The simulated perpetuals (`sim_perp`) over the API, offline: the venue is listed with shorts
//! and leverage; a paper short at 5x receives funding at the sim's (short, test-configured)
//! funding time at the rate its mark price stream published; a 125x short is liquidated when
//! the seeded trend carries the price against it; a leveraged backtest of sim_perp recordings
//! pays the funding rates their mark prices published.

use std::time::{Duration, Instant};

use keel::configuration::Settings;
use keel_actors::record::format::write_recording;
use keel_core::market::{MarketEvent, Symbol, VenueId};
use keel_testkit::{TestApp, Tokens, eventually, spawn_app_with};
use keel_venues::registry::VenueSettings;
use keel_venues::sim::connector::SimSettings;
use keel_venues::sim::{Regime, RegimePlan};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// Funding every 2 s in these tests (the default is 8 hours).
const FUNDING_INTERVAL_MS: u64 = 2_000;

fn perp_bot(leverage: u32, starting_quote: &str) -> Value {
    json!({
        "name": "perp",
        "venue": "sim_perp",
        "symbol": "BTCUSDT",
        "mode": "paper",
        "leverage": leverage,
        "strategy": {"kind": "ema_cross", "params": {"fast": 5000, "slow": 9000, "qty": "0.001"}},
        "paper": {"starting_quote": starting_quote, "fee_bps": "0"}
    })
}

fn dec(value: &Value) -> Decimal {
    value.as_str().unwrap_or_else(|| panic!("not a decimal string: {value}")).parse().unwrap()
}

/// The sim_perp section with a short funding interval and `regime` at `volatility_bps`.
fn perp_settings(s: &mut Settings, regime: &str, volatility_bps: f64, seed: u64) {
    let perp = &mut s.venues.sim_perp;
    perp.enabled = true;
    perp.funding_interval_ms = FUNDING_INTERVAL_MS;
    perp.regime = regime.to_owned();
    perp.volatility_bps = volatility_bps;
    perp.seed = seed;
}

/// Creates and starts a paper bot on sim_perp, then sells `qty` at market once the bot has a
/// price; returns the bot's id and the filled order.
async fn running_short(app: &TestApp, user: &Tokens, body: &Value, qty: &str) -> (u64, Value) {
    let created = app.create_bot(&user.access, body).await;
    let id = created["id"].as_u64().unwrap();
    assert_eq!(app.control(&user.access, id, "start").await.status().as_u16(), 200);
    let sell = json!({"side": "sell", "qty": qty, "type": "market"});
    let orders = format!("/api/v1/bots/{id}/orders");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.send(Method::POST, &orders, Some(&sell), &user.access).await;
        let status = res.status().as_u16();
        let answer: Value = res.json().await.unwrap();
        if status == 200 {
            assert_eq!(answer["status"], "filled", "{answer}");
            return (id, answer);
        }
        // Until the simulation has produced a price for the bot.
        assert!(answer.to_string().contains("NO_PRICE"), "{status}: {answer}");
        assert!(Instant::now() < deadline, "{status}: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first journal line of `kind`, waiting for it up to `secs`.
async fn wait_for_event(app: &TestApp, user: &Tokens, id: u64, kind: &str, secs: u64) -> Value {
    let path = format!("/api/v1/bots/{id}/events?limit=200");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let page = app.get_json(&path, &user.access).await;
        let found = page["items"].as_array().unwrap().iter().find(|e| e["kind"] == kind).cloned();
        if let Some(line) = found {
            return line;
        }
        assert!(Instant::now() < deadline, "no {kind} line: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn a_five_times_leveraged_paper_short_on_sim_perp_receives_funding_at_its_funding_time() {
    // A calm walk: the premium stays tiny, so the rate is the interest, positive.
    let app = spawn_app_with(|s| perp_settings(s, "walk", 0.0, 42)).await;
    let user = app.register("simperp-funding@example.com").await;

    let venues = app.get_json("/api/v1/venues", &user.access).await;
    let perp = venues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["venue"] == "sim_perp")
        .cloned()
        .unwrap_or_else(|| panic!("sim_perp is not listed: {venues}"));
    assert_eq!(perp["enabled"], true, "{perp}");
    assert_eq!(perp["market_type"], "simulated", "{perp}");
    let can = &perp["capabilities"];
    assert_eq!(
        (&can["shorts"], &can["leverage"], &can["live"], &can["paper"], &can["credentials"]),
        (&json!(true), &json!(true), &json!(false), &json!(true), &json!(false)),
        "{perp}"
    );

    // Its ticker, as the sim's: the last trade and the quote around it.
    let ticker = app.get_json("/api/v1/markets/sim_perp/BTCUSDT/ticker", &user.access).await;
    assert_eq!(ticker["venue"], "sim_perp", "{ticker}");
    assert!(dec(&ticker["last_trade"]["price"]) > Decimal::ZERO, "{ticker}");

    // A live bot has nowhere to go on a simulated venue.
    let mut live = perp_bot(5, "1000");
    live["mode"] = json!("live");
    let res = app.send(Method::POST, "/api/v1/bots", Some(&live), &user.access).await;
    assert_eq!(res.status().as_u16(), 422);

    let (id, _) = running_short(&app, &user, &perp_bot(5, "1000"), "0.01").await;
    let record = app.get_json(&format!("/api/v1/bots/{id}"), &user.access).await;
    assert_eq!(record["leverage"], 5, "{record}");
    assert_eq!(record["margin_type"], "isolated", "the default on a leverage venue: {record}");
    let position_path = format!("/api/v1/bots/{id}/position");
    let position = app.get_json(&position_path, &user.access).await;
    assert_eq!(position["qty"], "-0.01", "{position}");
    // 0.01 BTC at about 98,000 is about 980 of notional: a fifth of it is the margin.
    let entry = dec(&position["avg_entry_price"]);
    let margin = dec(&position["margin"]);
    assert_eq!(margin.round_dp(6), (entry * Decimal::new(1, 2) / Decimal::from(5)).round_dp(6));
    assert!(dec(&position["liquidation_price"]) > entry, "{position}");

    let funding = wait_for_event(&app, &user, id, "funding", 15).await;
    let ts = funding["ts"].as_u64().unwrap();
    assert_eq!(ts % FUNDING_INTERVAL_MS, 0, "paid at a funding time: {funding}");
    let data = &funding["data"];
    assert_eq!(data["asset"], "USDT", "{funding}");
    let (rate, mark, amount) = (dec(&data["rate"]), dec(&data["mark_price"]), dec(&data["amount"]));
    assert!(rate > Decimal::ZERO, "a calm market pays the interest: {funding}");
    // A short receives a positive rate: −qty × mark × rate, qty −0.01.
    assert!(amount > Decimal::ZERO, "{funding}");
    assert_eq!(amount, (Decimal::new(1, 2) * mark * rate).round_dp(8).normalize(), "{funding}");
    let position = app.get_json(&position_path, &user.access).await;
    assert!(dec(&position["funding"]) >= amount, "{position}");
}

#[actix_web::test]
async fn a_high_leverage_paper_short_on_sim_perp_is_liquidated_when_the_sim_trends_up() {
    // Seed 7's first BTCUSDT trend leg goes up (the unit test `the_liquidation_tests_seed_trends_
    // up_from_the_start` in venues/src/sim_perp/connector.rs holds it to that).
    let app = spawn_app_with(|s| perp_settings(s, "trend", 50.0, 7)).await;
    let user = app.register("simperp-liquidation@example.com").await;
    let (id, order) = running_short(&app, &user, &perp_bot(125, "100"), "0.01").await;
    let entry = dec(&order["avg_fill_price"]);
    let position_path = format!("/api/v1/bots/{id}/position");

    let liquidated = wait_for_event(&app, &user, id, "liquidated", 20).await;
    let data = &liquidated["data"];
    assert_eq!(data["qty"], "-0.01", "{liquidated}");
    assert_eq!(data["margin_type"], "isolated", "{liquidated}");
    // The mark crossed the liquidation price upwards: about 0.4 % above the entry at 125x.
    let (price, mark) = (dec(&data["price"]), dec(&data["mark_price"]));
    assert!(mark >= price - Decimal::new(1, 2), "{liquidated}");
    let position = app.get_json(&position_path, &user.access).await;
    assert!(dec(&position["qty"]).is_zero(), "{position}");
    assert!(price > entry, "a short is liquidated above its entry: {liquidated}");
    // An isolated position loses its margin (0.01 × entry / 125) and no more; what funding
    // paid meanwhile stays.
    let margin = entry * Decimal::new(1, 2) / Decimal::from(125);
    let expected = Decimal::from(100) - margin + dec(&position["funding"]);
    assert_eq!(dec(&position["quote_balance"]).round_dp(6), expected.round_dp(6), "{position}");
    let bot_path = format!("/api/v1/bots/{id}");
    eventually(Duration::from_secs(5), "the liquidated bot pauses", || async {
        app.get_json(&bot_path, &user.access).await["status"] == "paused"
    })
    .await;
    let record = app.get_json(&bot_path, &user.access).await;
    assert!(record["status_reason"].as_str().unwrap().starts_with("liquidated"), "{record}");
}

#[actix_web::test]
async fn a_leveraged_backtest_of_sim_perp_recordings_pays_the_funding_they_published() {
    let app = spawn_app_with(|s| s.backtests.workers = 1).await;
    let user = app.register("simperp-backtest@example.com").await;
    // Synthetic sim_perp data as its feed records it: each trade, its quote and its mark price,
    // 100 ms apart, funding every second, in a trend (so the premium and the rate move).
    let btc = Symbol::parse("BTCUSDT").unwrap();
    let settings = SimSettings {
        regime: RegimePlan::Fixed(Regime::Trend),
        volatility_bps: 20.0,
        funding_interval_ms: 1_000,
        ..SimSettings::walk(vec![btc.clone()], 3, 10)
    };
    let connector = keel_venues::sim_perp::connector::market(&VenueSettings::Simulated(settings))
        .expect("a simulation's settings");
    let mut sim = connector.simulator().unwrap();
    let day_start = 1_764_547_200_000u64; // 2025-12-01T00:00:00Z
    let events: Vec<MarketEvent> = (0..10_000)
        .flat_map(|i| {
            let ts = day_start + i * 100;
            sim.step(&btc, ts, ts * 1_000).unwrap()
        })
        .collect();
    let record_dir = app.data_dir.path().join("record");
    let path = keel_actors::record::file_path(&record_dir, VenueId::SimPerp, &btc, "2025-12-01");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    write_recording(&mut out, VenueId::SimPerp, &btc, &events).unwrap();
    std::io::Write::flush(&mut out).unwrap();
    drop(out);

    let job = |funding_rate: Option<&str>| {
        let mut futures = json!({"leverage": 3});
        if let Some(rate) = funding_rate {
            futures["funding_rate"] = json!(rate);
        }
        json!({
            "strategy": {"kind": "ema_cross", "params": {"fast": 5, "slow": 20, "qty": "0.01"}},
            "fee_bps": "0",
            "starting_quote": "10000",
            "futures": futures,
            "data": {"recorded": {"venue": "sim_perp", "from": "2025-12-01", "to": "2025-12-01"}}
        })
    };
    // No fixed rate: the recording's rates at its funding times.
    let id = app.start_backtest(&user.access, &job(None)).await;
    let done = app.backtest_until(&user.access, id, |v| v["status"] == "done").await;
    let result = &done["result"];
    assert_eq!(result["ticks"], 30_000, "trades, quotes and mark prices: {done}");
    let funding = dec(&result["position"]["funding"]);
    assert!(!funding.is_zero(), "the recorded rates were paid: {done}");
    // A fixed rate of 0 instead: nothing is paid, the rest is the same run.
    let id = app.start_backtest(&user.access, &job(Some("0"))).await;
    let fixed = app.backtest_until(&user.access, id, |v| v["status"] == "done").await;
    assert!(dec(&fixed["result"]["position"]["funding"]).is_zero(), "{fixed}");
    assert_eq!(fixed["result"]["orders"], result["orders"], "{fixed}");
}
