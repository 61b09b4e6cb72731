//! The simulated perpetuals behind the seam: the sim's connector for trades, quotes and
//! candles, plus a [`PerpBook`] per symbol for the mark price stream.

use std::collections::HashMap;
use std::sync::Arc;

use super::PerpBook;
use crate::market::{Instruments, MarketConnector, Simulator};
use crate::registry::{VenueError, VenueSettings};
use crate::sim::SimMarket;
use crate::sim::connector::SimConnector;
use keel_core::market::{EventKind, MarketEvent, StreamKind, Symbol, VenueId};

/// Builds the simulated perpetuals' connector from `[venues.sim_perp]` (the registry's
/// `market`).
///
/// # Errors
/// The settings are not a simulation's.
pub fn market(settings: &VenueSettings) -> Result<Arc<dyn MarketConnector>, VenueError> {
    match settings {
        VenueSettings::Simulated(sim) => {
            Ok(Arc::new(SimPerpConnector { sim: SimConnector::new(sim.clone()) }))
        }
        VenueSettings::Exchange(_) => {
            Err(VenueError("the sim_perp venue needs simulation settings".to_owned()))
        }
    }
}

/// The simulated perpetuals' market data: the sim's streams and `mark_price`.
#[derive(Debug, Clone)]
pub struct SimPerpConnector {
    sim: SimConnector,
}

impl MarketConnector for SimPerpConnector {
    fn venue(&self) -> VenueId {
        VenueId::SimPerp
    }

    fn supports(&self, kind: StreamKind) -> bool {
        kind == StreamKind::MarkPrice || self.sim.supports(kind)
    }

    fn instruments(&self) -> Instruments {
        Instruments::Fixed(self.sim.instrument_map())
    }

    fn simulator(&self) -> Option<Box<dyn Simulator>> {
        let settings = self.sim.settings();
        let market = self.sim.market(VenueId::SimPerp);
        let books = market
            .instruments()
            .map(|i| (i.symbol.clone(), PerpBook::new(settings.funding_interval_ms, i.tick_size)))
            .collect();
        Some(Box::new(Perpetuals {
            market,
            books,
            trades_per_sec: f64::from(settings.trades_per_sec),
        }))
    }
}

/// The running simulation: the sim's price processes and each symbol's funding book.
struct Perpetuals {
    market: SimMarket,
    books: HashMap<Symbol, PerpBook>,
    trades_per_sec: f64,
}

impl Simulator for Perpetuals {
    fn trades_per_sec(&self) -> f64 {
        self.trades_per_sec
    }

    /// The trade and the quote around it, then the mark price they make.
    fn step(&mut self, symbol: &Symbol, now_ms: u64, received_us: u64) -> Option<Vec<MarketEvent>> {
        let [trade, quote] = self.market.step(symbol, now_ms, received_us)?;
        let book = self.books.get_mut(symbol)?;
        let (EventKind::Trade { price, .. }, EventKind::Quote { bid, ask, .. }) =
            (&trade.kind, &quote.kind)
        else {
            return None;
        };
        let mark = MarketEvent { kind: book.observe(*price, *bid, *ask, now_ms), ..quote.clone() };
        Some(vec![trade, quote, mark])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::connector::SimSettings;
    use crate::sim::{Regime, RegimePlan};
    use rust_decimal::Decimal;

    fn btc() -> Symbol {
        Symbol::parse("BTCUSDT").unwrap()
    }

    fn settings(regime: Regime, volatility_bps: f64, seed: u64) -> SimSettings {
        SimSettings {
            regime: RegimePlan::Fixed(regime),
            volatility_bps,
            funding_interval_ms: 2_000,
            ..SimSettings::walk(vec![btc()], seed, 20)
        }
    }

    fn simulate(settings: SimSettings, trades: u64) -> Vec<MarketEvent> {
        let connector = market(&VenueSettings::Simulated(settings)).unwrap();
        let mut sim = connector.simulator().unwrap();
        (0..trades).flat_map(|i| sim.step(&btc(), 1_000 + i * 50, 0).unwrap()).collect()
    }

    #[test]
    fn every_trade_is_followed_by_its_quote_and_a_mark_price_on_this_venue() {
        let events = simulate(settings(Regime::Walk, 0.0, 3), 200);
        assert_eq!(events.len(), 600);
        for step in events.chunks(3) {
            let kinds: Vec<_> = step.iter().map(MarketEvent::stream_kind).collect();
            let expected = [StreamKind::Trades, StreamKind::Quotes, StreamKind::MarkPrice];
            assert_eq!(kinds, expected.map(Some));
            assert!(step.iter().all(|e| e.venue == VenueId::SimPerp));
            let EventKind::MarkPrice { mark_price, funding_rate, next_funding_ms } = &step[2].kind
            else {
                panic!()
            };
            assert!(*mark_price > Decimal::ZERO && (*mark_price % Decimal::new(1, 2)).is_zero());
            // A calm walk's rate is the interest: positive, longs pay shorts.
            assert!(funding_rate.unwrap() > Decimal::ZERO, "{funding_rate:?}");
            let next = next_funding_ms.unwrap();
            assert!(next > step[2].exchange_ts && next % 2_000 == 0);
        }
        // The same prices as the spot simulation of the same settings.
        let spot = crate::sim::connector::market(&VenueSettings::Simulated(settings(
            Regime::Walk,
            0.0,
            3,
        )))
        .unwrap();
        let mut spot = spot.simulator().unwrap();
        let first = spot.step(&btc(), 1_000, 0).unwrap();
        assert_eq!(first[0].kind, events[0].kind);
    }

    #[test]
    fn the_venue_offers_mark_price_and_the_sims_streams() {
        let connector = market(&VenueSettings::Simulated(settings(Regime::Walk, 0.0, 1))).unwrap();
        for kind in StreamKind::ALL {
            let expected = matches!(
                kind,
                StreamKind::Trades
                    | StreamKind::Quotes
                    | StreamKind::Candles1m
                    | StreamKind::MarkPrice
            );
            assert_eq!(connector.supports(kind), expected, "{kind:?}");
        }
        let Instruments::Fixed(map) = connector.instruments() else { panic!() };
        assert!(map.contains_key(&btc()));
        assert!(
            connector.simulator().unwrap().step(&Symbol::parse("NOPE").unwrap(), 0, 0).is_none()
        );
    }

    /// `tests/api/sim_perp.rs` liquidates a high-leverage short on this seed: its first trend
    /// leg on BTCUSDT goes up, far past a 125x short's 0.4 % margin, and the mark follows.
    #[test]
    fn the_liquidation_tests_seed_trends_up_from_the_start() {
        let events = simulate(settings(Regime::Trend, 50.0, LIQUIDATION_SEED), 400);
        let marks: Vec<Decimal> = events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::MarkPrice { mark_price, .. } => Some(mark_price),
                _ => None,
            })
            .collect();
        let start = marks[0];
        for (i, mark) in marks.iter().enumerate().skip(100) {
            assert!(*mark > start * Decimal::new(102, 2), "trade {i}: {mark} from {start}");
        }
    }

    /// The seed `tests/api/sim_perp.rs` runs its trend on.
    const LIQUIDATION_SEED: u64 = 7;
}
