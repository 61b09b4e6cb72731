//! The built-in simulated venue: seeded trades and quotes, offline.
//!
//! Each symbol's price moves in a [`regime`] (a walk, trends, mean reversion, volatility
//! clusters, gaps, or a schedule of them) from a realistic starting price, on whole ticks, with
//! quantities in whole lot steps, so what it produces passes the same tick/step checks as a real
//! venue's data. The same seed and the same sequence of calls give the same events.
//! [`connector`] puts it behind the venue seam.

pub mod connector;
pub mod regime;

pub use regime::{Regime, RegimePlan};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::registry::{Capabilities, MarketType, VenueEntry};
use keel_core::market::{EventKind, MarketEvent, Side, Symbol, VenueId};

/// The simulated venue in the registry: paper trading only, no URLs, no credentials.
pub static ENTRY: VenueEntry = VenueEntry {
    id: VenueId::Sim,
    label: "sim (simulated)",
    market_type: MarketType::Simulated,
    capabilities: Capabilities::NONE,
    presets: |_| None,
    market: connector::market,
    router: None,
};

/// Price and size rules of a simulated instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    /// The symbol.
    pub symbol: Symbol,
    /// Smallest price increment.
    pub tick_size: Decimal,
    /// Smallest quantity increment.
    pub step_size: Decimal,
    /// Price the walk starts from.
    pub start_price: Decimal,
}

/// Smallest order value on the simulated venue, in quote (Binance's common spot minimum).
const SIM_MIN_NOTIONAL: Decimal = Decimal::from_parts(5, 0, 0, false, 0);
/// Largest order quantity on the simulated venue, in lots.
const SIM_MAX_LOTS: i64 = 900_000_000;

impl Instrument {
    /// The rules orders on this instrument must follow: prices on the tick, quantities on the
    /// step (one step at least), a 5-quote minimum order value.
    pub fn filters(&self) -> keel_core::trading::InstrumentFilters {
        keel_core::trading::InstrumentFilters {
            tick_size: self.tick_size,
            step_size: self.step_size,
            min_qty: self.step_size,
            max_qty: self.step_size * Decimal::from(SIM_MAX_LOTS),
            min_notional: SIM_MIN_NOTIONAL,
        }
    }

    /// Keel's defaults for well-known symbols, generic ones for the rest.
    pub fn for_symbol(symbol: Symbol) -> Self {
        let (tick, step, start) = match symbol.as_str() {
            "BTCUSDT" => (Decimal::new(1, 2), Decimal::new(1, 5), Decimal::new(98_000, 0)),
            "ETHUSDT" => (Decimal::new(1, 2), Decimal::new(1, 4), Decimal::new(3_500, 0)),
            "SOLUSDT" => (Decimal::new(1, 2), Decimal::new(1, 3), Decimal::new(240, 0)),
            _ => (Decimal::new(1, 4), Decimal::new(1, 2), Decimal::new(100, 0)),
        };
        Self { symbol, tick_size: tick, step_size: step, start_price: start }
    }
}

/// One simulated instrument's walk.
#[derive(Debug)]
struct Walk {
    instrument: Instrument,
    /// Current price in ticks.
    ticks: i64,
    next_trade_id: u64,
    rng: SmallRng,
    process: regime::Process,
}

/// The simulated market: one seeded price process per symbol.
#[derive(Debug)]
pub struct SimMarket {
    walks: Vec<Walk>,
    /// The venue its events carry (`sim`, or `sim_perp` for the perpetuals built on it).
    venue: VenueId,
}

/// Largest move of one step, in ticks.
const MAX_STEP_TICKS: i64 = 25;
/// Spread in ticks between the simulated best bid and ask.
const SPREAD_TICKS: i64 = 1;

impl SimMarket {
    /// A market over `instruments` in the original `walk` regime (a fraction of a basis point a
    /// trade), reproducible from `seed`.
    pub fn new(seed: u64, instruments: Vec<Instrument>) -> Self {
        let plans = instruments.into_iter().map(|i| (i, RegimePlan::Fixed(Regime::Walk))).collect();
        Self::with_regimes(seed, plans, 0.0)
    }

    /// A market over `instruments`, each moving by its plan, with `volatility_bps` the typical
    /// move of one trade; reproducible from `seed`.
    pub fn with_regimes(
        seed: u64,
        instruments: Vec<(Instrument, RegimePlan)>,
        volatility_bps: f64,
    ) -> Self {
        let walks = instruments
            .into_iter()
            .enumerate()
            .map(|(i, (instrument, plan))| {
                let ticks = (instrument.start_price / instrument.tick_size)
                    .trunc()
                    .try_into()
                    .unwrap_or(1_000_000);
                let start: f64 = instrument.start_price.try_into().unwrap_or(100.0);
                Walk {
                    instrument,
                    ticks,
                    next_trade_id: 1,
                    rng: SmallRng::seed_from_u64(
                        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ),
                    process: regime::Process::new(plan, volatility_bps, start),
                }
            })
            .collect();
        Self { walks, venue: VenueId::Sim }
    }

    /// The same market with its events stamped as `venue`'s.
    pub fn on_venue(mut self, venue: VenueId) -> Self {
        self.venue = venue;
        self
    }

    /// The regime `symbol`'s next trade is made in, if simulated.
    pub fn regime(&self, symbol: &Symbol) -> Option<Regime> {
        self.walks.iter().find(|w| &w.instrument.symbol == symbol).map(|w| w.process.regime())
    }

    /// The instruments, in configuration order.
    pub fn instruments(&self) -> impl Iterator<Item = &Instrument> {
        self.walks.iter().map(|w| &w.instrument)
    }

    /// The instrument for `symbol`, if simulated.
    pub fn instrument(&self, symbol: &Symbol) -> Option<&Instrument> {
        self.instruments().find(|i| &i.symbol == symbol)
    }

    /// Advances `symbol` by one trade and returns the trade and the quote around it, stamped
    /// with `now_ms` / `received_us`. `None` for a symbol the market does not simulate.
    pub fn step(
        &mut self,
        symbol: &Symbol,
        now_ms: u64,
        received_us: u64,
    ) -> Option<[MarketEvent; 2]> {
        let walk = self.walks.iter_mut().find(|w| &w.instrument.symbol == symbol)?;
        let tick: f64 = walk.instrument.tick_size.try_into().unwrap_or(0.01);
        walk.ticks = walk.process.step(&mut walk.rng, walk.ticks, tick);
        let lots: i64 = walk.rng.random_range(1..=500);
        let side = if walk.rng.random_bool(0.5) { Side::Buy } else { Side::Sell };
        let Instrument { tick_size, step_size, .. } = walk.instrument;
        let price = tick_size * Decimal::from(walk.ticks);
        let qty = step_size * Decimal::from(lots);
        let trade_id = walk.next_trade_id;
        walk.next_trade_id += 1;
        let venue = self.venue;
        let event = |kind| MarketEvent {
            venue,
            symbol: symbol.clone(),
            exchange_ts: now_ms,
            received_us,
            kind,
        };
        let (bid, ask) = match side {
            Side::Buy => (price - tick_size * Decimal::from(SPREAD_TICKS), price),
            Side::Sell => (price, price + tick_size * Decimal::from(SPREAD_TICKS)),
        };
        let bid_qty = step_size * Decimal::from(walk.rng.random_range(1..=2_000i64));
        let ask_qty = step_size * Decimal::from(walk.rng.random_range(1..=2_000i64));
        Some([
            event(EventKind::Trade { price, qty, side, trade_id }),
            event(EventKind::Quote { bid, bid_qty, ask, ask_qty }),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(seed: u64) -> SimMarket {
        let symbols = ["BTCUSDT", "ETHUSDT", "XYZUSDT"];
        SimMarket::new(
            seed,
            symbols.iter().map(|s| Instrument::for_symbol(Symbol::parse(s).unwrap())).collect(),
        )
    }

    fn run(seed: u64, n: usize) -> Vec<MarketEvent> {
        let mut m = market(seed);
        let btc = Symbol::parse("BTCUSDT").unwrap();
        (0..n).flat_map(|i| m.step(&btc, i as u64, 0).unwrap()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_events_and_another_seed_does_not() {
        assert_eq!(run(7, 500), run(7, 500));
        assert_ne!(run(7, 500), run(8, 500));
    }

    #[test]
    fn prices_and_quantities_respect_tick_and_step_and_quotes_are_not_crossed() {
        let mut m = market(1);
        for symbol in ["BTCUSDT", "ETHUSDT", "XYZUSDT"] {
            let symbol = Symbol::parse(symbol).unwrap();
            let inst = m.instrument(&symbol).unwrap().clone();
            let mut last_id = 0;
            for i in 0..2_000 {
                let [trade, quote] = m.step(&symbol, i, 0).unwrap();
                let EventKind::Trade { price, qty, trade_id, .. } = trade.kind else { panic!() };
                assert!(price > Decimal::ZERO && qty > Decimal::ZERO);
                assert!((price % inst.tick_size).is_zero(), "{price} off tick {}", inst.tick_size);
                assert!((qty % inst.step_size).is_zero(), "{qty} off step {}", inst.step_size);
                assert!(trade_id > last_id);
                last_id = trade_id;
                let EventKind::Quote { bid, ask, .. } = quote.kind else { panic!() };
                assert!(bid < ask && bid <= price && price <= ask);
            }
        }
        assert!(m.step(&Symbol::parse("NOPE").unwrap(), 0, 0).is_none());
    }
}
