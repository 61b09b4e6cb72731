//! The figures of docs/PERFORMANCE.md for WebAssembly strategies, in one process:
//!
//! 1. a 1M-tick backtest with the SDK's wasm ema_cross against the built-in ema_cross, same run,
//!    alternating, median of 5 each;
//! 2. the RSS of 1,000 running wasm ema_cross strategies (each warmed with 100 trades);
//! 3. upload-to-first-order latency: checking a module as an upload does, building the strategy,
//!    then events until its first order, median of 20 (a fresh host each time, so the compile is
//!    included).
//!
//! ```sh
//! cargo build --release --target wasm32-unknown-unknown --manifest-path sdk/Cargo.toml --examples
//! cargo run --release -p keel-wasm --example figures
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use keel_core::backtest::{self, BacktestConfig};
use keel_core::engine::{BotEngine, BotState, Effects, EngineConfig};
use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use keel_core::strategy::{Strategy, StrategySpec};
use keel_core::trading::paper::PaperConfig;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{InstrumentFilters, Position};
use keel_wasm::{WasmConfig, WasmHost};
use rust_decimal::Decimal;
use serde_json::json;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn ticks(n: u64) -> Vec<MarketEvent> {
    let mut price: i64 = 9_800_000;
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            price += (seed % 201) as i64 - 100;
            let side = if seed.is_multiple_of(2) { Side::Buy } else { Side::Sell };
            MarketEvent {
                venue: VenueId::Sim,
                symbol: Symbol::parse("BTCUSDT").unwrap(),
                exchange_ts: 1_700_000_000_000 + i * 100,
                received_us: 0,
                kind: EventKind::Trade {
                    price: Decimal::new(price, 2),
                    qty: Decimal::new((seed % 1000) as i64 + 1, 4),
                    side,
                    trade_id: i,
                },
            }
        })
        .collect()
}

fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: d("0.01"),
        step_size: d("0.00001"),
        min_qty: d("0.00001"),
        max_qty: d("9000"),
        min_notional: d("5"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sdk/target/wasm32-unknown-unknown/release/examples/ema_cross.wasm"
    );
    let bytes = std::fs::read(path).expect("build the SDK examples first");
    let params = json!({"fast": 50, "slow": 200, "qty": "0.01"});
    let config = BacktestConfig {
        bot_id: 1,
        strategy: StrategySpec {
            kind: "ema_cross".into(),
            params: params.clone(),
            module_id: None,
        },
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        fee_bps: d("10"),
        slippage_bps: d("2"),
        starting_quote: d("1000000"),
        futures: None,
    };
    let input = ticks(1_000_000);
    let host = WasmHost::new(WasmConfig { max_instances: 1_100, ..WasmConfig::default() }).unwrap();

    // 1. Throughput.
    let (mut built_in, mut wasm) = (Vec::new(), Vec::new());
    let mut fills = (0, 0);
    for _ in 0..5 {
        let started = Instant::now();
        let out = backtest::run(&config, input.iter().cloned().map(Ok::<_, ()>)).unwrap().unwrap();
        built_in.push(input.len() as f64 / started.elapsed().as_secs_f64());
        fills.0 = out.fills.len();
        let strategy = host.strategy(&bytes, &params, &config.filters).unwrap();
        let started = Instant::now();
        let out =
            backtest::run_with(&config, Box::new(strategy), input.iter().cloned().map(Ok::<_, ()>))
                .unwrap();
        wasm.push(input.len() as f64 / started.elapsed().as_secs_f64());
        fills.1 = out.fills.len();
    }
    assert_eq!(fills.0, fills.1, "parity");
    let (b, w) = (median(built_in), median(wasm));
    println!(
        "1M-tick backtest, ema_cross 50/200 ({} fills): built-in {:.0} ticks/s, wasm {:.0} ticks/s \
         (median of 5 each, same run): wasm at {:.0}% of built-in",
        fills.0,
        b,
        w,
        100.0 * w / b
    );

    // 2. RSS of 1,000 running wasm bots (engine + strategy, each warmed with 100 trades).
    let warm = input[..100].to_vec();
    drop(input);
    let before = rss_kib();
    let mut bots = Vec::with_capacity(1_000);
    for i in 0..1_000 {
        let strategy = host.strategy(&bytes, &params, &filters()).unwrap();
        let mut engine = paper_engine(i, Box::new(strategy), d("10000"));
        let mut fx = Effects::default();
        for tick in &warm {
            engine.on_market(tick, &mut fx);
            fx.clear();
        }
        let _ = engine.snapshot();
        bots.push(engine);
    }
    let after = rss_kib();
    println!(
        "1,000 wasm ema_cross bots: RSS {:.1} MB before, {:.1} MB after: {:.1} MB for the bots \
         ({:.0} KiB each)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / 1000.0
    );
    drop(bots);

    // 3. Upload to first order: inspect (compile, check, start) + strategy + events until the
    //    first order, with a fresh host (no compile cache) each time.
    let fast = json!({"fast": 2, "slow": 3, "qty": "0.01"});
    let trades = ticks(1_000);
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let host = WasmHost::new(WasmConfig { max_instances: 4, ..WasmConfig::default() }).unwrap();
        let started = Instant::now();
        host.inspect(&bytes).unwrap();
        let strategy = host.strategy(&bytes, &fast, &filters()).unwrap();
        let mut engine = paper_engine(1, Box::new(strategy), d("100000"));
        let mut fx = Effects::default();
        let mut n = 0;
        for tick in &trades {
            n += 1;
            engine.on_market(tick, &mut fx);
            if !fx.orders.is_empty() {
                break;
            }
        }
        assert!(!fx.orders.is_empty());
        latencies.push((started.elapsed().as_secs_f64() * 1000.0, n));
    }
    let events = latencies[0].1;
    let ms = median(latencies.into_iter().map(|(ms, _)| ms).collect());
    println!(
        "upload to first order (check + compile + instantiate + init + {events} trades): median \
         {ms:.1} ms of 20"
    );
}

/// A paper bot's engine as the figures run it: 10 bp fees, 2 bp slippage, `quote` to start.
fn paper_engine(bot_id: u64, strategy: Box<dyn Strategy>, quote: Decimal) -> BotEngine {
    let config = EngineConfig {
        bot_id,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: d("10"), slippage_bps: d("2") },
        allow_short: false,
        futures: None,
        live: false,
    };
    let state = BotState {
        position: Position { quote_balance: quote, ..Position::default() },
        ..BotState::default()
    };
    BotEngine::new(config, state, strategy, Vec::new())
}
