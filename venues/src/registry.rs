//! The venue registry: one entry per venue, the only list of venues in Keel.
//!
//! Adding a venue means a folder beside `sim/` and `binance/` that defines a [`VenueEntry`],
//! and one line in [`VENUES`] (plus its id in `keel_core::market::VenueId` and its
//! configuration section). Everything outside this crate asks the registry what a venue can
//! do ([`Capabilities`]), where it is by default ([`Presets`]), and for its connectors, built
//! from its settings ([`VenueSettings`]); none of it names a venue.

use std::sync::Arc;

use crate::market::MarketConnector;
use crate::routing::OrderRouter;
use crate::sim::connector::SimSettings;
use crate::{binance, binance_futures, bybit, bybit_linear, sim, sim_perp};
use keel_core::market::VenueId;

/// Every venue Keel knows, in `VenueId::ALL` order.
pub static VENUES: [&VenueEntry; 6] = [
    &sim::ENTRY,
    &binance::ENTRY,
    &binance_futures::ENTRY,
    &bybit::ENTRY,
    &bybit_linear::ENTRY,
    &sim_perp::ENTRY,
];

/// What a venue can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Live bots may trade on it: it has an order router.
    pub live_orders: bool,
    /// A bot may hold a short position on it (a derivatives venue).
    pub shorting: bool,
    /// It takes exchange credentials (API key and secret) for signed requests.
    pub credentials: bool,
    /// Positions may be leveraged (a margin or derivatives venue).
    pub leverage: bool,
    /// Keel places a live bracket's exits at the venue (an OCO list, or two reduce-only
    /// conditional orders), so they hold while Keel is down. Where false, Keel emulates them.
    pub native_brackets: bool,
}

impl Capabilities {
    /// Market data only (the simulated spot venue).
    pub const NONE: Capabilities = Capabilities {
        live_orders: false,
        shorting: false,
        credentials: false,
        leverage: false,
        native_brackets: false,
    };
}

/// A venue's default base URLs, for mainnet or its testnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presets {
    /// Market-stream WebSocket endpoint.
    pub ws_url: &'static str,
    /// REST endpoint.
    pub rest_url: &'static str,
    /// Private (account) stream endpoint; empty where Keel does not use one.
    pub private_ws_url: &'static str,
}

/// What the registry builds a venue's connectors from: its configuration section.
#[derive(Debug, Clone, PartialEq)]
pub enum VenueSettings {
    /// A venue generated in process (`sim`, `sim_perp`).
    Simulated(SimSettings),
    /// An exchange reached over the network.
    Exchange(ExchangeSettings),
}

/// An exchange's `[venues.<id>]`: where it is, empty strings meaning the preset, and how
/// its signed requests are stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSettings {
    /// Use the testnet presets.
    pub testnet: bool,
    /// Use the venue's demo-trading presets (Bybit: mainnet market data, simulated orders,
    /// demo keys); only venues with a demo environment take it.
    pub demo: bool,
    /// Market-stream endpoint; empty for the preset.
    pub ws_url: String,
    /// REST endpoint; empty for the preset.
    pub rest_url: String,
    /// Private (account) stream endpoint; empty for the preset.
    pub private_ws_url: String,
    /// How long after its timestamp the venue may still accept a signed request (Binance's
    /// `recvWindow`), ms.
    pub recv_window_ms: u64,
}

impl Default for ExchangeSettings {
    fn default() -> Self {
        Self {
            testnet: false,
            demo: false,
            ws_url: String::new(),
            rest_url: String::new(),
            private_ws_url: String::new(),
            recv_window_ms: binance::rest::RECV_WINDOW_MS,
        }
    }
}

impl ExchangeSettings {
    /// The configured WebSocket URL, or `preset` when none is.
    pub fn ws_url_or(&self, preset: &str) -> String {
        or_preset(&self.ws_url, preset)
    }

    /// The configured REST URL, or `preset` when none is.
    pub fn rest_url_or(&self, preset: &str) -> String {
        or_preset(&self.rest_url, preset)
    }
}

fn or_preset(configured: &str, preset: &str) -> String {
    match configured.trim() {
        "" => preset.to_owned(),
        url => url.to_owned(),
    }
}

/// Why a connector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VenueError(pub String);

/// Builds a venue's market-data connector.
pub type BuildMarket = fn(&VenueSettings) -> Result<Arc<dyn MarketConnector>, VenueError>;
/// Builds a venue's order router.
pub type BuildRouter = fn(&VenueSettings) -> Result<Arc<dyn OrderRouter>, VenueError>;

/// What a venue trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketType {
    /// Generated in process.
    Simulated,
    /// Spot: assets bought and sold outright.
    Spot,
    /// Perpetual futures (USDT-margined).
    Perpetual,
}

impl MarketType {
    /// `simulated`, `spot`, `perpetual`.
    pub fn as_str(self) -> &'static str {
        match self {
            MarketType::Simulated => "simulated",
            MarketType::Spot => "spot",
            MarketType::Perpetual => "perpetual",
        }
    }
}

/// One venue: what it can do, where it is, how to build its connectors.
#[derive(Debug)]
pub struct VenueEntry {
    /// Its id.
    pub id: VenueId,
    /// How people name it in messages: `binance (spot)`.
    pub label: &'static str,
    /// What it trades.
    pub market_type: MarketType,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Its default URLs for mainnet (`false`) or testnet (`true`); `None` for a venue with no
    /// network side.
    pub presets: fn(bool) -> Option<&'static Presets>,
    /// Its market-data connector.
    pub market: BuildMarket,
    /// Its order router: `Some` exactly when [`Capabilities::live_orders`] is set.
    pub router: Option<BuildRouter>,
}

impl VenueEntry {
    /// Builds the market-data connector from `settings`.
    ///
    /// # Errors
    /// The settings are of the wrong kind for this venue.
    pub fn market(&self, settings: &VenueSettings) -> Result<Arc<dyn MarketConnector>, VenueError> {
        (self.market)(settings)
    }

    /// Builds the order router from `settings`; `Ok(None)` for a venue without live orders.
    ///
    /// # Errors
    /// The settings are of the wrong kind, or the client cannot be built.
    pub fn router(
        &self,
        settings: &VenueSettings,
    ) -> Result<Option<Arc<dyn OrderRouter>>, VenueError> {
        self.router.map(|build| build(settings)).transpose()
    }
}

/// The entry of `venue`.
pub fn entry(venue: VenueId) -> Option<&'static VenueEntry> {
    VENUES.iter().copied().find(|e| e.id == venue)
}

/// What `venue` can do (nothing, for a venue the registry lacks: a test keeps it complete).
pub fn capabilities(venue: VenueId) -> Capabilities {
    entry(venue).map(|e| e.capabilities).unwrap_or_default()
}

/// `venue`'s default URLs for mainnet or testnet.
pub fn presets(venue: VenueId, testnet: bool) -> Option<&'static Presets> {
    entry(venue).and_then(|e| (e.presets)(testnet))
}

/// The venues that take exchange credentials, in registry order.
pub fn credential_venues() -> impl Iterator<Item = VenueId> {
    VENUES.iter().filter(|e| e.capabilities.credentials).map(|e| e.id)
}

/// The venues live bots may trade on, in registry order.
pub fn live_order_venues() -> impl Iterator<Item = VenueId> {
    VENUES.iter().filter(|e| e.capabilities.live_orders).map(|e| e.id)
}

/// The labels of the venues live bots may trade on, for messages: `binance (spot)`.
pub fn live_order_labels() -> String {
    let labels: Vec<&str> =
        VENUES.iter().filter(|e| e.capabilities.live_orders).map(|e| e.label).collect();
    labels.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::market::{StreamKind, Symbol};

    #[test]
    fn the_registry_lists_every_venue_once_in_venue_id_order() {
        let ids: Vec<VenueId> = VENUES.iter().map(|e| e.id).collect();
        assert_eq!(ids, VenueId::ALL.to_vec());
        for venue in VenueId::ALL {
            assert_eq!(entry(venue).map(|e| e.id), Some(venue));
        }
    }

    #[test]
    fn capabilities_are_what_the_code_used_to_hard_code() {
        // Live orders on the spot venues; shorting and leverage on the derivatives venues;
        // credentials on every exchange.
        let spot = Capabilities { live_orders: true, credentials: true, ..Capabilities::default() };
        let binance_spot = Capabilities { native_brackets: true, ..spot };
        let perpetuals = Capabilities {
            shorting: true,
            credentials: true,
            leverage: true,
            ..Capabilities::default()
        };
        let expected = [
            (VenueId::Sim, Capabilities::default()),
            (VenueId::Binance, binance_spot),
            (
                VenueId::BinanceFutures,
                Capabilities { live_orders: true, native_brackets: true, ..perpetuals },
            ),
            (VenueId::Bybit, spot),
            (
                VenueId::BybitLinear,
                Capabilities { live_orders: true, native_brackets: true, ..perpetuals },
            ),
            // Paper perpetuals: shorts and leverage, nothing live, no keys.
            (VenueId::SimPerp, Capabilities { credentials: false, ..perpetuals }),
        ];
        for (venue, capabilities) in expected {
            assert_eq!(super::capabilities(venue), capabilities, "{venue}");
        }
        let credentials: Vec<&str> = credential_venues().map(VenueId::as_str).collect();
        assert_eq!(credentials, ["binance", "binance_futures", "bybit", "bybit_linear"]);
        assert_eq!(
            live_order_venues().collect::<Vec<_>>(),
            [VenueId::Binance, VenueId::BinanceFutures, VenueId::Bybit, VenueId::BybitLinear]
        );
        // The API's refusal of a live bot elsewhere names them.
        assert_eq!(
            live_order_labels(),
            "binance (spot), binance_futures (USD-M futures), bybit (spot), bybit_linear (USDT perpetuals)"
        );
        for entry in VENUES {
            assert_eq!(entry.router.is_some(), entry.capabilities.live_orders, "{}", entry.id);
        }
    }

    #[test]
    fn presets_exist_for_network_venues_only_and_testnet_differs() {
        for venue in [VenueId::Binance, VenueId::BinanceFutures] {
            for testnet in [false, true] {
                let presets = presets(venue, testnet).unwrap();
                assert!(presets.ws_url.ends_with("/stream"), "{venue} {testnet}");
                assert!(presets.rest_url.starts_with("https://"), "{venue} {testnet}");
            }
            assert_ne!(presets(venue, false), presets(venue, true));
        }
        for venue in [VenueId::Bybit, VenueId::BybitLinear] {
            for testnet in [false, true] {
                let presets = presets(venue, testnet).unwrap();
                assert!(presets.ws_url.starts_with("wss://stream"), "{venue} {testnet}");
                assert!(presets.private_ws_url.ends_with("/v5/private"), "{venue} {testnet}");
                assert!(presets.rest_url.starts_with("https://api"), "{venue} {testnet}");
            }
            assert_ne!(presets(venue, false), presets(venue, true));
        }
        assert_eq!(
            presets(VenueId::BybitLinear, false).unwrap().ws_url,
            "wss://stream.bybit.com/v5/public/linear"
        );
        assert_eq!(presets(VenueId::Sim, false), None);
        assert_eq!(presets(VenueId::SimPerp, true), None);
        assert_eq!(presets(VenueId::Binance, false).unwrap().rest_url, "https://api.binance.com");
        assert_eq!(
            presets(VenueId::BinanceFutures, true).unwrap().ws_url,
            "wss://fstream.binancefuture.com/stream"
        );
    }

    #[test]
    fn connectors_build_from_their_settings_and_refuse_the_wrong_kind() {
        let sim = VenueSettings::Simulated(SimSettings::walk(
            vec![Symbol::parse("BTCUSDT").unwrap()],
            1,
            10,
        ));
        let exchange = VenueSettings::Exchange(ExchangeSettings {
            testnet: true,
            ws_url: String::new(),
            rest_url: "http://127.0.0.1:1".into(),
            recv_window_ms: 7_000,
            ..ExchangeSettings::default()
        });
        for entry in VENUES {
            let simulated = entry.market_type == MarketType::Simulated;
            let (right, wrong) = if simulated { (&sim, &exchange) } else { (&exchange, &sim) };
            let market = entry.market(right).unwrap();
            assert_eq!(market.venue(), entry.id);
            assert!(entry.market(wrong).is_err(), "{}", entry.id);
            // Exactly one way for data to arrive.
            assert_ne!(market.connection().is_some(), market.simulator().is_some(), "{}", entry.id);
            if let Some(connection) = market.connection() {
                let preset = presets(entry.id, true).unwrap();
                assert_eq!(connection.ws_url, preset.ws_url, "empty means the preset");
            }
            let router = entry.router(right).unwrap();
            assert_eq!(router.is_some(), entry.capabilities.live_orders);
            if let Some(router) = router {
                assert_eq!(router.venue(), entry.id);
                // The configured recvWindow, not a constant.
                assert_eq!(router.accept_delay(), std::time::Duration::from_millis(7_000));
            }
        }
    }

    #[test]
    fn stream_kinds_are_what_each_venue_offers() {
        let btc = Symbol::parse("BTCUSDT").unwrap();
        let exchange = VenueSettings::Exchange(ExchangeSettings::default());
        let sim = VenueSettings::Simulated(SimSettings::walk(vec![btc.clone()], 1, 1));
        let market = |venue: VenueId| {
            let entry = entry(venue).unwrap();
            let simulated = entry.market_type == MarketType::Simulated;
            entry.market(if simulated { &sim } else { &exchange }).unwrap()
        };
        let sim = market(VenueId::Sim);
        let spot = market(VenueId::Binance);
        let futures = market(VenueId::BinanceFutures);
        let bybit = market(VenueId::Bybit);
        let bybit_linear = market(VenueId::BybitLinear);
        let sim_perp = market(VenueId::SimPerp);
        for kind in StreamKind::ALL {
            let derivatives_only = matches!(kind, StreamKind::Liquidations | StreamKind::MarkPrice);
            assert_eq!(bybit.supports(kind), !derivatives_only, "{kind:?}");
            assert!(bybit_linear.supports(kind), "{kind:?}");
            let on_sim =
                matches!(kind, StreamKind::Trades | StreamKind::Quotes | StreamKind::Candles1m);
            assert_eq!(sim.supports(kind), on_sim, "{kind:?}");
            assert_eq!(sim.stream_name(&btc, kind), None, "the sim has no upstream streams");
            let on_sim_perp = on_sim || kind == StreamKind::MarkPrice;
            assert_eq!(sim_perp.supports(kind), on_sim_perp, "{kind:?}");
            assert_eq!(sim_perp.stream_name(&btc, kind), None);
            assert_eq!(spot.supports(kind), !derivatives_only, "{kind:?}");
            assert!(futures.supports(kind), "{kind:?}");
            for market in [&spot, &futures, &bybit, &bybit_linear] {
                assert_eq!(market.stream_name(&btc, kind).is_some(), market.supports(kind));
            }
        }
    }
}
