//! Property tests of keel-core's invariants, over generated fills, commands and market data.
//!
//! - `position`: [`Position::apply`] is exact bookkeeping (quantity, fees, quote balance, P&L)
//!   and the instrument filters round onto their grid;
//! - `orders`: the engine's order manager, driven by random owner commands and market events,
//!   never changes a final order, never over-fills, and keeps its open list, the position and
//!   the journal consistent with what it reported;
//! - `backtest`: the run loop is deterministic and keeps every order on the tick and the step,
//!   for every built-in strategy, with and without a bracket.
//!
//! Case counts are fixed (a few hundred) so the suite stays well under a few seconds in CI.
#![allow(clippy::unwrap_used)] // a panic is a failed test with its line

mod backtest;
mod orders;
mod position;

use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};
use keel_core::trading::{InstrumentFilters, Position};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// BTCUSDT-like rules: prices in cents, quantities in thousandths.
fn filters() -> InstrumentFilters {
    InstrumentFilters {
        tick_size: Decimal::new(1, 2),
        step_size: Decimal::new(1, 3),
        min_qty: Decimal::new(1, 3),
        max_qty: Decimal::from(1000),
        min_notional: Decimal::ONE,
    }
}

/// One step of a market: the price moves by `delta` cents, then a trade of `qty` thousandths
/// prints, or a quote `spread` cents wide is shown with `qty` at each side.
#[derive(Debug, Clone, Copy)]
struct Tick {
    delta: i64,
    qty: i64,
    quote: bool,
    spread: i64,
}

fn tick() -> impl Strategy<Value = Tick> {
    (-60i64..=60, 1i64..=3000, any::<bool>(), 1i64..=5)
        .prop_map(|(delta, qty, quote, spread)| Tick { delta, qty, quote, spread })
}

/// Turns ticks into market events one second apart, every price on the tick and every quantity
/// on the step; the walk starts at 100.00 and never goes below 1.00.
fn events(ticks: &[Tick]) -> Vec<MarketEvent> {
    let symbol = Symbol::parse("BTCUSDT").unwrap();
    let mut cents: i64 = 10_000;
    ticks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            cents = (cents + t.delta).max(100 + t.spread);
            let price = Decimal::new(cents, 2);
            let qty = Decimal::new(t.qty, 3);
            let ts = 1_764_547_200_000 + i as u64 * 1000;
            let kind = if t.quote {
                EventKind::Quote {
                    bid: price - Decimal::new(t.spread, 2),
                    bid_qty: qty,
                    ask: price,
                    ask_qty: qty,
                }
            } else {
                EventKind::Trade { price, qty, side: Side::Buy, trade_id: i as u64 }
            };
            MarketEvent {
                venue: VenueId::Sim,
                symbol: symbol.clone(),
                exchange_ts: ts,
                received_us: 0,
                kind,
            }
        })
        .collect()
}

/// The position `fills` make from a quote balance of `start`, applied one by one.
fn replay<'a>(
    start: Decimal,
    fills: impl IntoIterator<Item = &'a keel_core::trading::Fill>,
) -> Position {
    let mut position = Position { quote_balance: start, ..Position::default() };
    for f in fills {
        position.apply(f.side, f.qty, f.price, f.fee);
    }
    position
}
