//! `[venues]`: which venues run and where they connect.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid, list_or_csv};

/// `[venues]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VenuesSettings {
    /// The simulated venue.
    pub sim: SimVenueSettings,
    /// Binance spot.
    pub binance: ExchangeVenueSettings,
    /// Binance USD-M futures.
    pub binance_futures: ExchangeVenueSettings,
    /// Bybit spot.
    pub bybit: ExchangeVenueSettings,
    /// Bybit USDT perpetuals.
    pub bybit_linear: ExchangeVenueSettings,
}

/// An exchange's section: `[venues.binance]`, `[venues.binance_futures]`, `[venues.bybit]`,
/// `[venues.bybit_linear]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeVenueSettings {
    /// Whether the feed connects.
    pub enabled: bool,
    /// Testnet presets.
    pub testnet: bool,
    /// Demo-trading presets (Bybit): mainnet market data, simulated orders, demo keys.
    pub demo: bool,
    /// Public market-stream endpoint; empty for the preset.
    pub ws_url: String,
    /// REST endpoint (instrument rules, signed orders); empty for the preset.
    pub rest_url: String,
    /// Private (account) stream endpoint; empty for the preset.
    pub private_ws_url: String,
    /// How long after its timestamp the venue still accepts a signed request, ms (Binance's
    /// `recvWindow`, Bybit's `X-BAPI-RECV-WINDOW`; both default to 5000).
    pub recv_window_ms: u64,
}

/// `[venues.sim]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimVenueSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// Symbols it lists; from the environment as a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub symbols: Vec<String>,
    /// Random-walk seed.
    pub seed: u64,
    /// Trades per second per watched symbol.
    pub trades_per_sec: u32,
    /// A file (recording, Keel CSV or Binance dump) to replay instead of the random walk; empty
    /// for the random walk.
    pub replay: PathBuf,
    /// Replay pace in events per second; 0 = as fast as subscribers take them.
    pub replay_events_per_sec: u32,
}

impl VenuesSettings {
    /// An exchange's section by its venue id (the table's key): `None` for `sim` and for an id
    /// the configuration has no section for.
    pub fn exchange(&self, id: &str) -> Option<&ExchangeVenueSettings> {
        self.exchanges().into_iter().find(|(key, _)| *key == id).map(|(_, section)| section)
    }

    /// Every exchange's section with its venue id.
    fn exchanges(&self) -> [(&'static str, &ExchangeVenueSettings); 4] {
        [
            ("binance", &self.binance),
            ("binance_futures", &self.binance_futures),
            ("bybit", &self.bybit),
            ("bybit_linear", &self.bybit_linear),
        ]
    }

    /// Checks `[venues]`: the sim venue's, then each exchange's URLs, network and receive
    /// window.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        self.sim.validate()?;
        for (id, venue) in self.exchanges() {
            for (field, url, schemes) in [
                ("ws_url", &venue.ws_url, ["ws://", "wss://"]),
                ("private_ws_url", &venue.private_ws_url, ["ws://", "wss://"]),
                ("rest_url", &venue.rest_url, ["http://", "https://"]),
            ] {
                let url = url.trim();
                if !(url.is_empty() || schemes.iter().any(|s| url.starts_with(s))) {
                    return Err(invalid(
                        format!("venues.{id}.{field}"),
                        format!(
                            "must be a {} or {} URL (or empty for the preset)",
                            schemes[0], schemes[1]
                        ),
                    ));
                }
            }
            if venue.demo && venue.testnet {
                return Err(invalid(
                    format!("venues.{id}.demo"),
                    "demo trading and testnet are different networks: set one",
                ));
            }
            if venue.demo && !id.starts_with("bybit") {
                return Err(invalid(format!("venues.{id}.demo"), "only Bybit has demo trading"));
            }
            // Binance refuses a larger recvWindow (-1131); Keel holds Bybit to the same bound.
            let max = keel_venues::binance::rest::MAX_RECV_WINDOW_MS;
            if !(1..=max).contains(&venue.recv_window_ms) {
                return Err(invalid(
                    format!("venues.{id}.recv_window_ms"),
                    format!("must be from 1 to {max}"),
                ));
            }
        }
        Ok(())
    }
}

impl SimVenueSettings {
    /// Checks `[venues.sim]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    fn validate(&self) -> Result<(), SettingsError> {
        if self.replay_events_per_sec > 10_000_000 {
            return Err(invalid("venues.sim.replay_events_per_sec", "must be at most 10000000"));
        }
        if self.enabled && self.symbols.is_empty() {
            return Err(invalid("venues.sim.symbols", "must list at least one symbol"));
        }
        if let Some(bad) =
            self.symbols.iter().find(|s| keel_core::market::Symbol::parse(s).is_none())
        {
            return Err(invalid(
                "venues.sim.symbols",
                format!("`{bad}` is not a symbol (2-20 letters and digits)"),
            ));
        }
        if self.trades_per_sec > 100_000 {
            return Err(invalid("venues.sim.trades_per_sec", "must be at most 100000"));
        }
        Ok(())
    }
}
