//! The backtest run loop over generated markets, for every built-in strategy.

use keel_core::backtest::{BacktestConfig, Outcome, run};
use keel_core::bot::Bracket;
use keel_core::strategy::StrategySpec;
use keel_core::trading::risk::RiskLimits;
use keel_core::trading::{OrderStatus, OrderType};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use crate::{Tick, events, filters, replay, tick};

/// A built-in strategy with valid parameters that make it trade on a walk around 100.00.
fn strategy() -> impl Strategy<Value = StrategySpec> {
    let spec = |kind: &str, params| StrategySpec { kind: kind.into(), params, module_id: None };
    prop_oneof![
        (1u32..=8, 1u32..=20, 1i64..=50).prop_map(move |(fast, more, qty)| spec(
            "ema_cross",
            json!({"fast": fast, "slow": fast + more, "qty": Decimal::new(qty, 3).to_string()})
        )),
        (2u32..=14, 10u32..=45, 55u32..=90, 1i64..=50).prop_map(move |(period, low, high, qty)| {
            spec(
                "rsi",
                json!({"period": period, "oversold": low, "overbought": high,
                   "qty": Decimal::new(qty, 3).to_string()}),
            )
        }),
        (1i64..=2_000, 2u32..=12, 1i64..=50).prop_map(move |(half, levels, qty)| spec(
            "grid",
            json!({"lower": Decimal::new(10_000 - half, 2).to_string(),
                   "upper": Decimal::new(10_000 + half, 2).to_string(),
                   "levels": levels, "qty_per_level": Decimal::new(qty, 3).to_string()})
        )),
        (1u64..=30, 5i64..=500, 1i64..=500).prop_map(move |(every, quote, tp)| spec(
            "dca",
            json!({"interval_secs": every, "quote_amount": Decimal::from(quote).to_string(),
                   "take_profit_pct": Decimal::new(tp, 2).to_string()})
        )),
    ]
}

fn config(strategy: StrategySpec, bracket: Option<Bracket>) -> BacktestConfig {
    BacktestConfig {
        bot_id: 3,
        strategy,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket,
        fee_bps: Decimal::from(10),
        slippage_bps: Decimal::from(5),
        starting_quote: Decimal::from(100_000),
        futures: None,
    }
}

fn bracket() -> impl Strategy<Value = Option<Bracket>> {
    prop::option::of((1i64..=300, 1i64..=300).prop_map(|(tp, sl)| Bracket {
        take_profit_pct: Decimal::new(tp, 2),
        stop_loss_pct: Decimal::new(sl, 2),
    }))
}

fn backtest(config: &BacktestConfig, ticks: &[Tick]) -> Outcome {
    let events = events(ticks);
    run(config, events.into_iter().map(Ok::<_, ()>)).expect("valid parameters").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The same ticks and settings give the same orders, fills and report; the final position
    /// is the fills replayed, and orders are numbered 1, 2, 3, ... in the order they were made.
    #[test]
    fn a_backtest_is_deterministic_and_its_position_is_its_fills(
        ticks in prop::collection::vec(tick(), 50..400),
        strategy in strategy(),
        bracket in bracket(),
    ) {
        let config = config(strategy, bracket);
        let (a, b) = (backtest(&config, &ticks), backtest(&config, &ticks));
        prop_assert_eq!(&a.orders, &b.orders);
        prop_assert_eq!(&a.fills, &b.fills);
        prop_assert_eq!(
            serde_json::to_value(&a.report).unwrap(),
            serde_json::to_value(&b.report).unwrap()
        );
        prop_assert_eq!(&a.report.position, &replay(config.starting_quote, &a.fills));
        prop_assert!(a.orders.iter().enumerate().all(|(i, o)| o.id == i as u64 + 1));
        prop_assert_eq!(a.orders.len() as u64, a.report.orders);
    }

    /// Every order the engine let through (anything not rejected) has its price on the tick
    /// and its quantity on the step, bracket legs and closes included; and since the market's
    /// prices are on the tick, so is every fill's.
    #[test]
    fn every_accepted_order_and_every_fill_is_on_the_tick_and_the_step(
        ticks in prop::collection::vec(tick(), 50..400),
        strategy in strategy(),
        bracket in bracket(),
    ) {
        let f = filters();
        let outcome = backtest(&config(strategy, bracket), &ticks);
        for o in outcome.orders.iter().filter(|o| o.status != OrderStatus::Rejected) {
            prop_assert!(f.qty_on_step(o.qty), "quantity off the step: {o:?}");
            let price = match o.order_type {
                OrderType::Limit { price, .. }
                | OrderType::Stop { stop_price: price }
                | OrderType::StopLimit { price, .. } => Some(price),
                OrderType::Market | OrderType::TrailingStop { .. } => None,
            };
            prop_assert!(price.is_none_or(|p| f.price_on_tick(p)), "price off the tick: {o:?}");
        }
        for fill in &outcome.fills {
            prop_assert!(f.price_on_tick(fill.price), "fill off the tick: {fill:?}");
        }
    }
}
