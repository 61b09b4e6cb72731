//! Each built-in strategy, backtested (`keel_core::backtest::run`, the engine paper bots run) on
//! the sim venue's regime that suits it, makes money after fees on every seed tried, and more
//! than it makes on the plain `walk` (where mostly it loses its fees).
//! The table of which regime suits which strategy is in `venues/src/sim/regime.rs` and
//! docs/SIM.md.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test with its line

use keel_core::backtest::{BacktestConfig, run};
use keel_core::market::{MarketEvent, Symbol};
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_venues::sim::{Instrument, Regime, RegimePlan, SimMarket};
use rust_decimal::Decimal;
use serde_json::json;

/// Trades per run: 25 minutes of a watched symbol at the default 20 a second.
const TRADES: u64 = 30_000;
/// The default `venues.sim.volatility_bps`.
const VOLATILITY_BPS: f64 = 2.0;

fn eth() -> Symbol {
    Symbol::parse("ETHUSDT").unwrap()
}

fn ticks(regime: Regime, seed: u64) -> Vec<MarketEvent> {
    let instrument = Instrument::for_symbol(eth());
    let mut market = SimMarket::with_regimes(
        seed,
        vec![(instrument, RegimePlan::Fixed(regime))],
        VOLATILITY_BPS,
    );
    let start = 1_764_547_200_000;
    (0..TRADES).flat_map(|i| market.step(&eth(), start + i * 50, 0).unwrap()).collect()
}

fn strategy(kind: &str) -> StrategySpec {
    let params = match kind {
        "ema_cross" => json!({"fast": 50, "slow": 400, "qty": "1"}),
        "rsi" => json!({"period": 100, "oversold": 40, "overbought": 60, "qty": "1"}),
        "grid" => {
            json!({"lower": "3360.00", "upper": "3640.00", "levels": 15, "qty_per_level": "0.2"})
        }
        "dca" => json!({"interval_secs": 30, "quote_amount": "500", "take_profit_pct": "1"}),
        _ => unreachable!(),
    };
    StrategySpec { kind: kind.to_owned(), params, module_id: None }
}

fn net_pnl(kind: &str, regime: Regime, seed: u64) -> Decimal {
    let config = BacktestConfig {
        bot_id: 1,
        strategy: strategy(kind),
        filters: Instrument::for_symbol(eth()).filters(),
        risk: RiskLimits::default(),
        bracket: None,
        fee_bps: Decimal::new(75, 1),
        slippage_bps: Decimal::from(5),
        starting_quote: Decimal::from(100_000),
        futures: None,
    };
    let events = ticks(regime, seed);
    let outcome = run(&config, events.into_iter().map(Ok::<_, ()>)).unwrap().unwrap();
    outcome.report.performance.net_pnl
}

/// Which regime suits which strategy (the table in `keel_venues::sim::regime`).
const SUITS: [(&str, Regime); 4] = [
    ("ema_cross", Regime::Trend),
    ("rsi", Regime::MeanReversion),
    ("grid", Regime::Gaps),
    ("dca", Regime::VolatilityClusters),
];
const SEEDS: std::ops::RangeInclusive<u64> = 1..=6;

#[test]
fn each_builtin_strategy_makes_money_on_its_regime_and_not_on_the_walk() {
    for (kind, regime) in SUITS {
        let suited: Vec<Decimal> = SEEDS.map(|seed| net_pnl(kind, regime, seed)).collect();
        let walk: Vec<Decimal> = SEEDS.map(|seed| net_pnl(kind, Regime::Walk, seed)).collect();
        println!("{kind:10} {:20} {suited:?}", regime.as_str());
        println!("{kind:10} {:20} {walk:?}", "walk");
        assert!(
            suited.iter().all(|pnl| *pnl > Decimal::ZERO),
            "{kind} on {}: net P&L by seed {suited:?}",
            regime.as_str()
        );
        let total = |v: &[Decimal]| v.iter().copied().sum::<Decimal>();
        assert!(
            total(&suited) > total(&walk),
            "{kind}: {} on {} vs {} on the walk",
            total(&suited),
            regime.as_str(),
            total(&walk)
        );
    }
}

/// The figures docs/SIM.md shows: every built-in on every regime (`--ignored --nocapture`).
#[test]
#[ignore = "prints the table for docs/SIM.md"]
fn table() {
    for (kind, _) in SUITS {
        for regime in Regime::ALL {
            let pnls: Vec<String> =
                SEEDS.map(|seed| net_pnl(kind, regime, seed).round_dp(0).to_string()).collect();
            println!("| `{kind}` | `{}` | {} |", regime.as_str(), pnls.join(" | "));
        }
    }
}
