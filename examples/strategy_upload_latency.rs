//! Upload-to-first-order latency of an owner's WebAssembly strategy, over HTTP, end to end: `POST
//! /api/v1/strategies` (streamed, checked in the sandbox, stored and committed), `POST /bots` of
//! kind `wasm` (params checked against the module's schema, `keel_init` run once), `POST
//! /bots/{id}/start` (the bot actor builds a `WasmStrategy` from the stored module) and the first
//! order the module places on the next sim trade, as `GET /bots/{id}/orders` shows it.
//!
//! The real application runs in this process on port 0 (as the API tests start it). The module is
//! the SDK-less `wasm/tests/modules/first_trade.wat` (it buys at market on its first trade), made
//! unique in each round by a data segment, so every upload compiles afresh (no SHA-256 cache hit).
//! Prints each round's split (upload, bot created, started, first order) and the medians.
//!
//!   cargo run --release --example strategy_upload_latency -- --rounds 20
use std::time::{Duration, Instant};

use clap::Parser;
use keel_testkit::spawn_app_with;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Uploads measured (one module and one bot each).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
}

/// The hand-written module of docs/STRATEGY_ABI.md.
const FIRST_TRADE: &str = include_str!("../wasm/tests/modules/first_trade.wat");

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = spawn_app_with(|s| s.bots.max_per_user = args.rounds.max(1)).await;
    let user = app.register("upload-latency@example.com").await;
    let token = user.access.as_str();
    let mut splits: [Vec<f64>; 4] = Default::default();
    println!("round  upload_ms  created_ms  started_ms  first_order_ms");
    for round in 0..args.rounds {
        let unique = format!("(data (i32.const 1024) \"round {round}\")\n)");
        let source =
            FIRST_TRADE.trim_end().strip_suffix(')').ok_or("module text")?.to_owned() + &unique;
        let bytes = wat::parse_str(&source)?;
        let t0 = Instant::now();
        let res = app.upload_strategy(token, &format!("round-{round}"), bytes).await;
        let module: Value = res.json().await?;
        let module_id = module["id"].as_u64().ok_or_else(|| format!("upload: {module}"))?;
        let t_upload = t0.elapsed();
        let body = json!({
            "name": format!("wasm-{round}"), "venue": "sim", "symbol": "BTCUSDT", "mode": "paper",
            "strategy": {"kind": "wasm", "module_id": module_id, "params": {}},
            "paper": {"starting_quote": "100000", "fee_bps": "10"}
        });
        let bot: Value =
            app.send(Method::POST, "/api/v1/bots", Some(&body), token).await.json().await?;
        let id = bot["id"].as_u64().ok_or_else(|| format!("bot: {bot}"))?;
        let t_created = t0.elapsed();
        let started =
            app.send(Method::POST, &format!("/api/v1/bots/{id}/start"), None, token).await;
        if !started.status().is_success() {
            return Err(format!("start: {}", started.text().await?).into());
        }
        let t_started = t0.elapsed();
        let orders = format!("/api/v1/bots/{id}/orders");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let page = app.get_json(&orders, token).await;
            if page["items"].as_array().is_some_and(|o| !o.is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("bot {id} placed no order").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let t_order = t0.elapsed();
        let round_ms = [t_upload, t_created, t_started, t_order].map(ms);
        println!(
            "{round:>5}  {:>9.1}  {:>10.1}  {:>10.1}  {:>14.1}",
            round_ms[0], round_ms[1], round_ms[2], round_ms[3]
        );
        for (split, v) in splits.iter_mut().zip(round_ms) {
            split.push(v);
        }
        let res = app.send(Method::POST, &format!("/api/v1/bots/{id}/stop"), None, token).await;
        assert!(res.status().is_success());
    }
    let [upload, created, started, order] = splits.map(median);
    println!(
        "median of {}: upload {upload:.1} ms, bot created {created:.1} ms, started {started:.1} ms, \
         first order {order:.1} ms",
        args.rounds
    );
    Ok(())
}
