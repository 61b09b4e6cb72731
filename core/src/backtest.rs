//! Backtests: a strategy over recorded or historical trades, through the very [`BotEngine`] live
//! and paper bots run (strategy, risk, order manager, brackets, paper fills), on a simulated
//! clock. Deterministic: the same ticks and parameters give the same orders and fills.
//!
//! This is the run loop only; reading trade files and running backtests as jobs belong to the
//! runtime (`keel_actors::backtest`).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::bot::Bracket;
use crate::bot::performance::{self, Performance};
use crate::engine::{BotEngine, BotEventKind, BotState, Effects, EngineConfig};
use crate::market::MarketEvent;
use crate::strategy::StrategySpec;
use crate::trading::margin::FuturesConfig;
use crate::trading::paper::PaperConfig;
use crate::trading::risk::RiskLimits;
use crate::trading::{Fill, InstrumentFilters, Order, Position};
use crate::validation::FieldError;

/// A backtest's settings.
#[derive(Debug, Clone)]
pub struct BacktestConfig {
    /// The bot id orders are made for (it is part of their client order ids); 0 for a plain
    /// backtest, a bot's own id to compare with what that bot did.
    pub bot_id: u64,
    /// The strategy and its parameters.
    pub strategy: StrategySpec,
    /// The instrument's rules.
    pub filters: InstrumentFilters,
    /// Pre-trade limits.
    pub risk: RiskLimits,
    /// Bracket around entries.
    pub bracket: Option<Bracket>,
    /// Fee per fill, basis points.
    pub fee_bps: Decimal,
    /// Slippage for market orders without a quote, basis points.
    pub slippage_bps: Decimal,
    /// Starting quote balance.
    pub starting_quote: Decimal,
    /// Paper futures: leverage, margin type, maintenance rate and the funding rate to apply
    /// at each funding time (`None`: spot, as before).
    pub futures: Option<FuturesConfig>,
}

/// What a backtest found.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// P&L, fees, trades, win rate, drawdown, exposure.
    #[serde(flatten)]
    pub performance: Performance,
    /// Position at the end.
    pub position: Position,
    /// Orders created (any outcome).
    pub orders: u64,
    /// Ticks fed to the engine.
    pub ticks: u64,
    /// Wall time of the run, seconds (0 until the caller, who owns the clock, times it with
    /// [`Report::timed`]).
    pub seconds: f64,
    /// Ticks per second of wall time.
    pub ticks_per_sec: f64,
    /// First and last tick time, ms.
    pub span_ms: (u64, u64),
    /// Paper futures: when the position was liquidated (the strategy stops there), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liquidated_ms: Option<u64>,
}

impl Report {
    /// This report with the wall time the run took: the run loop reads no clock, so that the
    /// same input always gives the same report.
    #[must_use]
    pub fn timed(mut self, seconds: f64) -> Self {
        self.seconds = seconds;
        self.ticks_per_sec = if seconds > 0.0 { self.ticks as f64 / seconds } else { 0.0 };
        self
    }
}

/// The result of a run: the report, every order in its final state and every fill, in order
/// (for equity curves and parity checks).
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Figures.
    pub report: Report,
    /// Orders by id, as they ended.
    pub orders: Vec<Order>,
    /// Fills.
    pub fills: Vec<Fill>,
}

/// Runs `config` over `ticks` (in time order).
///
/// # Errors
/// The strategy's parameters are invalid (field errors); a tick that cannot be read ends the run
/// with its error.
pub fn run<E>(
    config: &BacktestConfig,
    ticks: impl IntoIterator<Item = Result<MarketEvent, E>>,
) -> Result<Result<Outcome, E>, Vec<FieldError>> {
    let strategy = crate::strategy::build(&config.strategy, &config.filters)?;
    Ok(run_with(config, strategy, ticks))
}

/// Runs `config` with a strategy built elsewhere (an uploaded module) over `ticks`, through the
/// same engine; `config.strategy` is not read.
///
/// # Errors
/// A tick that cannot be read ends the run with its error.
pub fn run_with<E>(
    config: &BacktestConfig,
    strategy: Box<dyn crate::strategy::Strategy>,
    ticks: impl IntoIterator<Item = Result<MarketEvent, E>>,
) -> Result<Outcome, E> {
    let engine_config = EngineConfig {
        bot_id: config.bot_id,
        filters: config.filters.clone(),
        risk: config.risk.clone(),
        bracket: config.bracket,
        paper: PaperConfig { fee_bps: config.fee_bps, slippage_bps: config.slippage_bps },
        // A leveraged backtest trades both ways, as on a derivatives venue.
        allow_short: config.futures.is_some(),
        futures: config.futures.clone(),
        live: false,
    };
    let state = BotState {
        position: Position { quote_balance: config.starting_quote, ..Position::default() },
        ..BotState::default()
    };
    let mut engine = BotEngine::new(engine_config, state, strategy, Vec::new());
    let mut fx = Effects::default();
    let mut fills = Vec::new();
    let mut orders: Vec<Order> = Vec::new();
    let mut ticks_seen: u64 = 0;
    let (mut first_ts, mut last_ts) = (None, 0);
    let mut liquidated_ms = None;
    for tick in ticks {
        let tick = tick?;
        ticks_seen += 1;
        first_ts.get_or_insert(tick.exchange_ts);
        last_ts = tick.exchange_ts;
        engine.on_market(&tick, &mut fx);
        if !fx.fills.is_empty() {
            fills.append(&mut fx.fills);
        }
        // Order ids count up from 1, so each version replaces its order in place.
        for order in fx.orders.drain(..) {
            match usize::try_from(order.id.saturating_sub(1)) {
                Ok(index) if index < orders.len() => orders[index] = order,
                _ => orders.push(order),
            }
        }
        if liquidated_ms.is_none()
            && fx.events.iter().any(|e| matches!(e.kind, BotEventKind::Liquidated { .. }))
        {
            liquidated_ms = Some(tick.exchange_ts);
        }
        // Journal lines are what a bot would store; a backtest has no use for them.
        fx.clear();
    }
    let mark = engine.mark_price();
    let performance = performance::compute(&fills, config.starting_quote, mark, last_ts);
    let report = Report {
        performance,
        position: engine.position().clone(),
        orders: engine.snapshot().last_order_id,
        ticks: ticks_seen,
        seconds: 0.0,
        ticks_per_sec: 0.0,
        span_ms: (first_ts.unwrap_or(0), last_ts),
        liquidated_ms,
    };
    Ok(Outcome { report, orders, fills })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing;

    fn config() -> BacktestConfig {
        BacktestConfig {
            bot_id: 0,
            strategy: StrategySpec {
                kind: "ema_cross".into(),
                params: serde_json::json!({"fast": 5, "slow": 20, "qty": "0.001"}),
                module_id: None,
            },
            filters: testing::filters(),
            risk: RiskLimits::default(),
            bracket: None,
            fee_bps: Decimal::TEN,
            slippage_bps: Decimal::from(5),
            starting_quote: Decimal::from(10_000),
            futures: None,
        }
    }

    /// A seeded random walk of `n` trades, 100 ms apart (xorshift: the test needs no RNG).
    fn synth(n: u64, seed: u64) -> Vec<MarketEvent> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut cents: i64 = 9_800_000;
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                cents = (cents + (state % 201) as i64 - 100).max(100);
                testing::trade(1_700_000_000_000 + i * 100, Decimal::new(cents, 2))
            })
            .collect()
    }

    #[test]
    fn a_run_is_deterministic_and_its_position_is_the_sum_of_its_fills() {
        let ticks = synth(20_000, 7);
        let run = |ticks: &[MarketEvent]| {
            run(&config(), ticks.iter().cloned().map(Ok::<_, ()>)).unwrap().unwrap()
        };
        let (a, b) = (run(&ticks), run(&ticks));
        assert!(a.report.performance.fill_count > 10, "the strategy trades: {:?}", a.report);
        assert_eq!(a.fills, b.fills);
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.orders.len() as u64, a.report.orders);
        assert!(a.orders.iter().enumerate().all(|(i, o)| o.id == i as u64 + 1));
        assert!(a.fills.iter().all(|f| a.orders[f.order_id as usize - 1].filled_qty >= f.qty));
        let mut replay = Position { quote_balance: Decimal::from(10_000), ..Position::default() };
        for fill in &a.fills {
            replay.apply(fill.side, fill.qty, fill.price, fill.fee);
        }
        assert_eq!(replay, a.report.position);
        assert_eq!(a.report.ticks, 20_000);
    }

    #[test]
    fn a_leveraged_backtest_pays_funding_and_is_liquidated_by_a_crash() {
        use crate::bot::MarginType;
        let mut leveraged = config();
        leveraged.strategy.params = serde_json::json!({"fast": 3, "slow": 10, "qty": "1"});
        let mut futures = FuturesConfig::new(10, MarginType::Isolated);
        futures.funding_rate = Some(Decimal::new(1, 4));
        leveraged.futures = Some(futures);
        // 2023-11-15T00:00:00Z: flat, then a rise (the fast average crosses up: a long), a
        // funding time at 08:00, then a crash far past the liquidation price.
        let day = 1_700_006_400_000u64;
        let minute = 60_000u64;
        let mut prices: Vec<(u64, i64)> = (0..20).map(|i| (day + i * minute, 100)).collect();
        prices.extend((20..40).map(|i| (day + i * minute, 100 + (i as i64 - 19))));
        prices.push((day + 8 * 3_600_000, 121));
        prices.push((day + 8 * 3_600_000 + minute, 60));
        prices.push((day + 8 * 3_600_000 + 2 * minute, 59));
        let ticks: Vec<_> =
            prices.iter().map(|&(ts, p)| testing::trade(ts, Decimal::from(p))).collect();
        let outcome = run(&leveraged, ticks.into_iter().map(Ok::<_, ()>)).unwrap().unwrap();
        let report = &outcome.report;
        assert_eq!(report.liquidated_ms, Some(day + 8 * 3_600_000 + minute), "{report:?}");
        assert!(report.position.qty.is_zero());
        assert!(report.position.funding < Decimal::ZERO, "a long pays: {:?}", report.position);
        let entry = outcome.fills[0].price;
        let margin = entry / Decimal::TEN;
        let p = &report.position;
        // The trading loss is the margin (and the entry's fee), not the 40 % crash.
        let loss = -(p.realized_pnl - p.fees);
        assert_eq!(loss, margin + outcome.fills[0].fee, "{p:?}");
        // The strategy stops at the liquidation: no order after it.
        assert!(outcome.orders.iter().all(|o| o.created_ts <= day + 8 * 3_600_000 + minute));
    }

    #[test]
    fn bad_parameters_are_field_errors_and_a_bad_tick_ends_the_run() {
        let mut bad = config();
        bad.strategy.params = serde_json::json!({"fast": 30, "slow": 10, "qty": "0.001"});
        assert!(run(&bad, Vec::<Result<MarketEvent, ()>>::new()).is_err());
        let ticks = vec![Ok(synth(1, 1).remove(0)), Err("line 2: bad price")];
        assert_eq!(run(&config(), ticks).unwrap().unwrap_err(), "line 2: bad price");
    }
}
