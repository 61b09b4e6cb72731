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
    pub binance: BinanceVenueSettings,
    /// Binance USD-M futures.
    pub binance_futures: BinanceVenueSettings,
}

/// An exchange's section: `[venues.binance]`, `[venues.binance_futures]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BinanceVenueSettings {
    /// Whether the feed connects.
    pub enabled: bool,
    /// Testnet presets.
    pub testnet: bool,
    /// Combined-stream endpoint; empty for the preset.
    pub ws_url: String,
    /// REST endpoint (exchange info, signed orders); empty for the preset.
    pub rest_url: String,
    /// `recvWindow` of signed requests, ms: how long after its timestamp Binance still accepts
    /// one (its default 5000, at most 60000).
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
    pub fn exchange(&self, id: &str) -> Option<&BinanceVenueSettings> {
        match id {
            "binance" => Some(&self.binance),
            "binance_futures" => Some(&self.binance_futures),
            _ => None,
        }
    }

    /// Checks `[venues]`: the sim venue's, then each Binance venue's URLs and `recvWindow`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        self.sim.validate()?;
        for (key, venue) in [
            ("venues.binance.ws_url", &self.binance),
            ("venues.binance_futures.ws_url", &self.binance_futures),
        ] {
            let url = venue.ws_url.trim();
            if !(url.is_empty() || url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(invalid(
                    key,
                    "must be a ws:// or wss:// URL (or empty for the preset)",
                ));
            }
        }
        for (key, venue) in [
            ("venues.binance.rest_url", &self.binance),
            ("venues.binance_futures.rest_url", &self.binance_futures),
        ] {
            let url = venue.rest_url.trim();
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    key,
                    "must be an http:// or https:// URL (or empty for the preset)",
                ));
            }
        }
        for (key, venue) in [
            ("venues.binance.recv_window_ms", &self.binance),
            ("venues.binance_futures.recv_window_ms", &self.binance_futures),
        ] {
            // Binance refuses a larger recvWindow (-1131).
            let max = keel_venues::binance::rest::MAX_RECV_WINDOW_MS;
            if !(1..=max).contains(&venue.recv_window_ms) {
                return Err(invalid(key, format!("must be from 1 to {max} (Binance's maximum)")));
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
