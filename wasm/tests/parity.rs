//! Parity: the SDK's `ema_cross` example, compiled to WebAssembly, makes the same orders and
//! fills as the built-in ema_cross on the same input, through the same backtest loop.
//!
//! The module is built by .ci/run before the tests:
//! `cargo build --release --target wasm32-unknown-unknown --manifest-path sdk/Cargo.toml --examples`
#![allow(clippy::unwrap_used)]

use keel_core::backtest::{self, BacktestConfig};
use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use keel_core::strategy::StrategySpec;
use keel_core::trading::InstrumentFilters;
use keel_core::trading::risk::RiskLimits;
use keel_wasm::{WasmConfig, WasmHost};
use rust_decimal::Decimal;
use serde_json::json;

/// The SDK example's path (built by .ci/run).
pub fn example(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../sdk/target/wasm32-unknown-unknown/release/examples/{name}.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{path}: {e}; build it with `cargo build --release --target wasm32-unknown-unknown \
             --manifest-path sdk/Cargo.toml --examples`"
        )
    })
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A deterministic random walk with quotes between trades (a "recorded" input).
fn ticks(n: u64) -> Vec<MarketEvent> {
    let mut price: i64 = 9_800_000; // cents
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        price += (seed % 201) as i64 - 100;
        let p = Decimal::new(price, 2);
        let kind = if i % 5 == 4 {
            EventKind::Quote {
                bid: p - d("0.01"),
                bid_qty: d("1"),
                ask: p + d("0.01"),
                ask_qty: d("1"),
            }
        } else {
            let side = if seed.is_multiple_of(2) { Side::Buy } else { Side::Sell };
            EventKind::Trade {
                price: p,
                qty: Decimal::new((seed % 1000) as i64 + 1, 4),
                side,
                trade_id: i,
            }
        };
        out.push(MarketEvent {
            venue: VenueId::Sim,
            symbol: Symbol::parse("BTCUSDT").unwrap(),
            exchange_ts: 1_700_000_000_000 + i * 100,
            received_us: 0,
            kind,
        });
    }
    out
}

pub fn config(params: serde_json::Value) -> BacktestConfig {
    BacktestConfig {
        bot_id: 1,
        strategy: StrategySpec { kind: "ema_cross".into(), params, module_id: None },
        filters: InstrumentFilters {
            tick_size: d("0.01"),
            step_size: d("0.00001"),
            min_qty: d("0.00001"),
            max_qty: d("9000"),
            min_notional: d("5"),
        },
        risk: RiskLimits::default(),
        bracket: None,
        fee_bps: d("10"),
        slippage_bps: d("2"),
        starting_quote: d("100000"),
        futures: None,
    }
}

mod erased {
    pub trait Json {
        fn text(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn text(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }
}

#[test]
fn the_wasm_ema_cross_makes_the_same_orders_and_fills_as_the_built_in() {
    let bytes = example("ema_cross");
    let host = WasmHost::new(WasmConfig { max_instances: 4, ..WasmConfig::default() }).unwrap();
    let info = host.inspect(&bytes).unwrap();
    assert_eq!(info.params_schema["required"], json!(["fast", "slow", "qty"]));
    let input = ticks(20_000);
    for params in [
        json!({"fast": 5, "slow": 20, "qty": "0.01"}),
        json!({"fast": 12, "slow": 26, "qty": "0.5"}),
        json!({"fast": 1, "slow": 2, "qty": "0.001"}),
    ] {
        // What a bot's creation checks first: the params meet the module's schema.
        assert_eq!(keel_wasm::params::validate(&info.params_schema, &params).unwrap(), vec![]);
        let config = config(params.clone());
        let ok = input.iter().cloned().map(Ok::<_, ()>);
        let built_in = backtest::run(&config, ok.clone()).unwrap().unwrap();
        let wasm = host.strategy(&bytes, &params, &config.filters).unwrap();
        let module = backtest::run_with(&config, Box::new(wasm), ok).unwrap();
        assert!(built_in.fills.len() >= 10, "{params}: too few fills to compare");
        assert_eq!(module.orders, built_in.orders, "{params}");
        assert_eq!(module.fills, built_in.fills, "{params}");
        assert_eq!(module.report.position, built_in.report.position, "{params}");
        // The same decimals to the digit, not only the same values.
        let text = |v: &dyn erased::Json| v.text();
        assert_eq!(text(&module.fills), text(&built_in.fills), "{params}");
        assert_eq!(text(&module.orders), text(&built_in.orders), "{params}");
    }
    // Params are the built-in's: the module refuses what the built-in refuses.
    let config = config(json!({}));
    let refused =
        host.strategy(&bytes, &json!({"fast": 20, "slow": 5, "qty": "0.01"}), &config.filters);
    let why = refused.unwrap_err().to_string();
    assert!(why.contains("fast: must be below slow"), "{why}");
}
