//! The simulated venue behind the seam: a market-data connector whose data is generated in
//! process (no upstream), over the instruments its settings list.

use std::sync::Arc;

use super::{Instrument, Regime, RegimePlan, SimMarket};
use crate::market::{InstrumentMap, Instruments, MarketConnector, Simulator};
use crate::registry::{VenueError, VenueSettings};
use keel_core::market::{MarketEvent, StreamKind, Symbol, VenueId};

/// What the simulated venue generates: `[venues.sim]` as the registry takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// Symbols it simulates.
    pub symbols: Vec<Symbol>,
    /// Seed of the price processes.
    pub seed: u64,
    /// Trades per second per active symbol.
    pub trades_per_sec: u32,
    /// How prices move, for a symbol `symbol_regimes` does not name.
    pub regime: RegimePlan,
    /// Per-symbol plans.
    pub symbol_regimes: Vec<(Symbol, RegimePlan)>,
    /// Typical move of one trade, basis points.
    pub volatility_bps: f64,
    /// Milliseconds between funding times, counted from 00:00 UTC: used by the simulated
    /// perpetuals (`sim_perp`) only; the spot simulation has no funding.
    pub funding_interval_ms: u64,
}

impl SimSettings {
    /// `symbols` in the original `walk` regime.
    pub fn walk(symbols: Vec<Symbol>, seed: u64, trades_per_sec: u32) -> Self {
        Self {
            symbols,
            seed,
            trades_per_sec,
            regime: RegimePlan::Fixed(Regime::Walk),
            symbol_regimes: Vec::new(),
            volatility_bps: 0.0,
            funding_interval_ms: keel_core::trading::margin::FUNDING_INTERVAL_MS,
        }
    }

    /// The plan of `symbol`.
    pub fn plan(&self, symbol: &Symbol) -> &RegimePlan {
        self.symbol_regimes.iter().find(|(s, _)| s == symbol).map_or(&self.regime, |(_, p)| p)
    }
}

/// Builds the simulated venue's connector from its settings (the registry's `market`).
///
/// # Errors
/// The settings are not a simulation's.
pub fn market(settings: &VenueSettings) -> Result<Arc<dyn MarketConnector>, VenueError> {
    match settings {
        VenueSettings::Simulated(sim) => Ok(Arc::new(SimConnector::new(sim.clone()))),
        VenueSettings::Exchange(_) => {
            Err(VenueError("the sim venue needs simulation settings".to_owned()))
        }
    }
}

/// The simulated venue's market data: trades, quotes and 1 m candles of seeded price processes.
#[derive(Debug, Clone)]
pub struct SimConnector {
    settings: SimSettings,
}

impl SimConnector {
    /// A simulation of `settings`.
    pub fn new(settings: SimSettings) -> Self {
        Self { settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &SimSettings {
        &self.settings
    }

    /// The rules of every instrument it simulates.
    pub fn instrument_map(&self) -> InstrumentMap {
        self.instruments().map(|i| (i.symbol.clone(), i.filters())).collect()
    }

    fn instruments(&self) -> impl Iterator<Item = Instrument> + '_ {
        self.settings.symbols.iter().cloned().map(Instrument::for_symbol)
    }

    /// The seeded market of its settings, its events stamped as `venue`'s.
    pub fn market(&self, venue: VenueId) -> SimMarket {
        let plans = self
            .instruments()
            .map(|i| {
                let plan = self.settings.plan(&i.symbol).clone();
                (i, plan)
            })
            .collect();
        SimMarket::with_regimes(self.settings.seed, plans, self.settings.volatility_bps)
            .on_venue(venue)
    }
}

impl MarketConnector for SimConnector {
    fn venue(&self) -> VenueId {
        VenueId::Sim
    }

    fn supports(&self, kind: StreamKind) -> bool {
        matches!(kind, StreamKind::Trades | StreamKind::Quotes | StreamKind::Candles1m)
    }

    fn instruments(&self) -> Instruments {
        Instruments::Fixed(self.instrument_map())
    }

    fn simulator(&self) -> Option<Box<dyn Simulator>> {
        let market = self.market(VenueId::Sim);
        Some(Box::new(Walks { market, trades_per_sec: f64::from(self.settings.trades_per_sec) }))
    }
}

/// The running simulation: one seeded price process per symbol.
struct Walks {
    market: SimMarket,
    trades_per_sec: f64,
}

impl Simulator for Walks {
    fn trades_per_sec(&self) -> f64 {
        self.trades_per_sec
    }

    fn step(&mut self, symbol: &Symbol, now_ms: u64, received_us: u64) -> Option<Vec<MarketEvent>> {
        self.market.step(symbol, now_ms, received_us).map(Vec::from)
    }
}
