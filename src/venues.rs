//! Where configuration meets the venue registry ([`keel_venues::registry`]): each venue's
//! `[venues.<id>]` section, read as the registry takes it, and the connectors built from it.
//!
//! The `[venues]` table is keyed by venue id, so an exchange's section is found by its id alone
//! (`VenuesSettings::exchange`) and nothing here names a particular exchange.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;

use crate::configuration::Settings;
use keel_core::market::VenueId;
use keel_venues::market::MarketConnector;
use keel_venues::registry::{self, ExchangeSettings, VenueSettings};
use keel_venues::routing::OrderRouter;

/// A venue's section as the registry takes it, and whether it is enabled; `None` for a venue
/// the configuration has no section for.
pub fn venue_settings(settings: &Settings, venue: VenueId) -> Option<(bool, VenueSettings)> {
    let venues = &settings.venues;
    let simulation = match venue {
        VenueId::Sim => Some((venues.sim.enabled, venues.sim.simulation())),
        VenueId::SimPerp => Some((venues.sim_perp.enabled, venues.sim_perp.simulation())),
        _ => None,
    };
    if let Some((enabled, simulation)) = simulation {
        return Some((enabled, VenueSettings::Simulated(simulation)));
    }
    let section = settings.venues.exchange(venue.as_str())?;
    let exchange = ExchangeSettings {
        testnet: section.testnet,
        demo: section.demo,
        ws_url: section.ws_url.clone(),
        rest_url: section.rest_url.clone(),
        private_ws_url: section.private_ws_url.clone(),
        recv_window_ms: section.recv_window_ms,
    };
    Some((section.enabled, VenueSettings::Exchange(exchange)))
}

/// Whether `venue` is configured for play money: its testnet, or its demo trading (which takes
/// keys made for it, as a testnet does). Live bots need credentials marked the same way.
pub fn testnet(settings: &Settings, venue: VenueId) -> bool {
    matches!(venue_settings(settings, venue), Some((_, VenueSettings::Exchange(e))) if e.testnet || e.demo)
}

/// The market-data connector of every enabled venue, in registry order.
///
/// # Errors
/// A venue's section does not suit it.
pub fn markets(settings: &Settings) -> anyhow::Result<Vec<Arc<dyn MarketConnector>>> {
    let mut markets = Vec::new();
    for entry in registry::VENUES {
        let Some((true, venue_settings)) = venue_settings(settings, entry.id) else { continue };
        let market = entry
            .market(&venue_settings)
            .with_context(|| format!("building the {} market-data connector", entry.id))?;
        markets.push(market);
    }
    Ok(markets)
}

/// The order router of every enabled venue that takes live orders.
///
/// # Errors
/// A router cannot be built (its HTTP client, its settings).
pub fn routers(settings: &Settings) -> anyhow::Result<BTreeMap<VenueId, Arc<dyn OrderRouter>>> {
    let mut routers = BTreeMap::new();
    for entry in registry::VENUES {
        let Some((true, venue_settings)) = venue_settings(settings, entry.id) else { continue };
        let router = entry
            .router(&venue_settings)
            .with_context(|| format!("building the {} order router", entry.id))?;
        if let Some(router) = router {
            routers.insert(entry.id, router);
        }
    }
    Ok(routers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::market::Symbol;
    use keel_venues::sim::{Regime, RegimePlan};

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Settings::load_with_env(None, vars).unwrap()
    }

    #[test]
    fn every_venue_has_a_section_of_the_kind_its_connector_takes() {
        let settings = settings(&[]);
        for entry in registry::VENUES {
            let (_, venue_settings) = venue_settings(&settings, entry.id).unwrap();
            assert!(entry.market(&venue_settings).is_ok(), "{}", entry.id);
        }
    }

    #[test]
    fn the_simulated_perpetuals_take_their_own_section() {
        let settings = settings(&[
            ("KEEL__VENUES__SIM_PERP__FUNDING_INTERVAL_MS", "60000"),
            ("KEEL__VENUES__SIM_PERP__SYMBOLS", "SOLUSDT"),
            ("KEEL__VENUES__SIM_PERP__REGIME", "trend"),
            ("KEEL__VENUES__SIM_PERP__SEED", "7"),
        ]);
        let Some((true, VenueSettings::Simulated(perp))) =
            venue_settings(&settings, VenueId::SimPerp)
        else {
            panic!("sim_perp is an enabled simulation by default")
        };
        assert_eq!(perp.funding_interval_ms, 60_000);
        assert_eq!(perp.symbols, [Symbol::parse("SOLUSDT").unwrap()]);
        assert_eq!(perp.regime, RegimePlan::Fixed(Regime::Trend));
        assert_eq!(perp.seed, 7);
        let Some((true, VenueSettings::Simulated(sim))) = venue_settings(&settings, VenueId::Sim)
        else {
            panic!("sim is an enabled simulation")
        };
        assert_eq!(sim.symbols.len(), 2, "the sim keeps its own symbols");
        assert!(!testnet(&settings, VenueId::SimPerp));
        let feeds: Vec<VenueId> = markets(&settings).unwrap().iter().map(|m| m.venue()).collect();
        assert_eq!(feeds, [VenueId::Sim, VenueId::SimPerp], "both simulations run offline");
    }

    #[test]
    fn an_exchanges_section_is_found_by_its_venue_id() {
        let settings = settings(&[
            ("KEEL__VENUES__BINANCE_FUTURES__TESTNET", "true"),
            ("KEEL__VENUES__BINANCE_FUTURES__ENABLED", "true"),
            ("KEEL__VENUES__BINANCE__REST_URL", "http://127.0.0.1:9"),
            ("KEEL__VENUES__BINANCE__RECV_WINDOW_MS", "10000"),
        ]);
        assert!(testnet(&settings, VenueId::BinanceFutures));
        assert!(!testnet(&settings, VenueId::Binance));
        assert!(!testnet(&settings, VenueId::Sim));
        let Some((true, VenueSettings::Exchange(futures))) =
            venue_settings(&settings, VenueId::BinanceFutures)
        else {
            panic!("binance_futures is an enabled exchange")
        };
        assert!(futures.testnet);
        let Some((_, VenueSettings::Exchange(spot))) = venue_settings(&settings, VenueId::Binance)
        else {
            panic!("binance is an exchange")
        };
        assert_eq!(spot.rest_url, "http://127.0.0.1:9");
        // The configured recvWindow reaches the router, and with it the "not found" grace.
        assert_eq!(spot.recv_window_ms, 10_000);
        assert_eq!(futures.recv_window_ms, keel_venues::binance::rest::RECV_WINDOW_MS);
        let router = registry::entry(VenueId::Binance)
            .unwrap()
            .router(&VenueSettings::Exchange(spot))
            .unwrap()
            .unwrap();
        assert_eq!(router.accept_delay(), std::time::Duration::from_secs(10));
        assert!(markets(&settings).unwrap().iter().any(|m| m.venue() == VenueId::BinanceFutures));
    }
}
