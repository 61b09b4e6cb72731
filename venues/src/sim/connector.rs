//! The simulated venue behind the seam: a market-data connector whose data is generated in
//! process (no upstream), over the instruments its settings list.

use std::sync::Arc;

use super::{Instrument, SimMarket};
use crate::market::{Instruments, MarketConnector, Simulator};
use crate::registry::{VenueError, VenueSettings};
use keel_core::market::{MarketEvent, StreamKind, Symbol, VenueId};

/// What the simulated venue generates: `[venues.sim]` as the registry takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSettings {
    /// Symbols it simulates.
    pub symbols: Vec<Symbol>,
    /// Seed of the random walk.
    pub seed: u64,
    /// Trades per second per active symbol.
    pub trades_per_sec: u32,
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

/// The simulated venue's market data: trades, quotes and 1 m candles of seeded random walks.
#[derive(Debug, Clone)]
pub struct SimConnector {
    settings: SimSettings,
}

impl SimConnector {
    /// A simulation of `settings`.
    pub fn new(settings: SimSettings) -> Self {
        Self { settings }
    }

    fn instruments(&self) -> impl Iterator<Item = Instrument> + '_ {
        self.settings.symbols.iter().cloned().map(Instrument::for_symbol)
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
        Instruments::Fixed(self.instruments().map(|i| (i.symbol.clone(), i.filters())).collect())
    }

    fn simulator(&self) -> Option<Box<dyn Simulator>> {
        let market = SimMarket::new(self.settings.seed, self.instruments().collect());
        Some(Box::new(Walks { market, trades_per_sec: f64::from(self.settings.trades_per_sec) }))
    }
}

/// The running simulation: one seeded walk per symbol.
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
