//! `[venues]`: which venues run and where they connect.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid, list_or_csv};
use keel_core::market::Symbol;
use keel_venues::sim::connector::SimSettings;
use keel_venues::sim::{Regime, RegimePlan};

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
    /// The simulated USDT perpetuals.
    pub sim_perp: SimPerpVenueSettings,
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
    /// Seed of the price processes.
    pub seed: u64,
    /// Trades per second per watched symbol.
    pub trades_per_sec: u32,
    /// How prices move: a regime name, or `schedule` for `schedule`'s segments.
    pub regime: String,
    /// Per-symbol regimes, `SYMBOL=REGIME` (a regime name or `schedule`).
    #[serde(deserialize_with = "list_or_csv")]
    pub symbol_regimes: Vec<String>,
    /// The schedule's segments, `REGIME:TRADES`, played in a loop.
    #[serde(deserialize_with = "list_or_csv")]
    pub schedule: Vec<String>,
    /// Typical move of one trade, basis points.
    pub volatility_bps: f64,
    /// A file (recording, Keel CSV or Binance dump) to replay instead of the random walk; empty
    /// for the random walk.
    pub replay: PathBuf,
    /// Replay pace in events per second; 0 = as fast as subscribers take them.
    pub replay_events_per_sec: u32,
}

/// `[venues.sim_perp]`: the sim's market keys (its own symbols, seed and regimes) and the
/// funding interval.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimPerpVenueSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// Symbols it lists; from the environment as a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub symbols: Vec<String>,
    /// Seed of the price processes.
    pub seed: u64,
    /// Trades per second per watched symbol (each followed by a mark price).
    pub trades_per_sec: u32,
    /// How prices move: a regime name, or `schedule` for `schedule`'s segments.
    pub regime: String,
    /// Per-symbol regimes, `SYMBOL=REGIME` (a regime name or `schedule`).
    #[serde(deserialize_with = "list_or_csv")]
    pub symbol_regimes: Vec<String>,
    /// The schedule's segments, `REGIME:TRADES`, played in a loop.
    #[serde(deserialize_with = "list_or_csv")]
    pub schedule: Vec<String>,
    /// Typical move of one trade, basis points.
    pub volatility_bps: f64,
    /// Milliseconds between funding times, counted from 00:00 UTC.
    pub funding_interval_ms: u64,
}

/// Shortest and longest funding interval of the simulated perpetuals, ms (1 s for tests and
/// demos; a day).
const FUNDING_INTERVAL_MS: (u64, u64) = (1_000, 86_400_000);

/// The keys both simulations take, borrowed from either section to check and read them.
struct SimMarketKeys<'a> {
    section: &'static str,
    enabled: bool,
    symbols: &'a [String],
    trades_per_sec: u32,
    regime: &'a str,
    symbol_regimes: &'a [String],
    schedule: &'a [String],
    volatility_bps: f64,
}

impl VenuesSettings {
    /// An exchange's section by its venue id (the table's key): `None` for the simulations and
    /// for an id the configuration has no section for.
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
        self.sim_perp.validate()?;
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
        self.keys().validate()
    }

    /// The plan of a symbol `symbol_regimes` does not name, and those it names.
    ///
    /// # Errors
    /// An unknown regime, a bad schedule segment or a bad `SYMBOL=REGIME`, by key.
    pub fn plans(&self) -> Result<(RegimePlan, Vec<(Symbol, RegimePlan)>), SettingsError> {
        self.keys().plans()
    }

    /// The simulation the registry builds the venue from (no funding: the interval is unused).
    pub fn simulation(&self) -> SimSettings {
        self.keys().simulation(self.seed, keel_core::trading::margin::FUNDING_INTERVAL_MS)
    }

    fn keys(&self) -> SimMarketKeys<'_> {
        SimMarketKeys {
            section: "venues.sim",
            enabled: self.enabled,
            symbols: &self.symbols,
            trades_per_sec: self.trades_per_sec,
            regime: &self.regime,
            symbol_regimes: &self.symbol_regimes,
            schedule: &self.schedule,
            volatility_bps: self.volatility_bps,
        }
    }
}

impl SimPerpVenueSettings {
    /// Checks `[venues.sim_perp]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    fn validate(&self) -> Result<(), SettingsError> {
        let (min, max) = FUNDING_INTERVAL_MS;
        if !(min..=max).contains(&self.funding_interval_ms) {
            return Err(invalid(
                "venues.sim_perp.funding_interval_ms",
                format!("must be from {min} to {max}"),
            ));
        }
        self.keys().validate()
    }

    /// The simulation the registry builds the venue from.
    pub fn simulation(&self) -> SimSettings {
        self.keys().simulation(self.seed, self.funding_interval_ms)
    }

    fn keys(&self) -> SimMarketKeys<'_> {
        SimMarketKeys {
            section: "venues.sim_perp",
            enabled: self.enabled,
            symbols: &self.symbols,
            trades_per_sec: self.trades_per_sec,
            regime: &self.regime,
            symbol_regimes: &self.symbol_regimes,
            schedule: &self.schedule,
            volatility_bps: self.volatility_bps,
        }
    }
}

impl SimMarketKeys<'_> {
    /// The simulation these keys describe. They were validated at load; a plan that does not
    /// parse here falls back to the walk.
    fn simulation(&self, seed: u64, funding_interval_ms: u64) -> SimSettings {
        let (regime, symbol_regimes) =
            self.plans().unwrap_or_else(|_| (RegimePlan::Fixed(Regime::Walk), Vec::new()));
        SimSettings {
            symbols: self.symbols.iter().filter_map(|s| Symbol::parse(s)).collect(),
            seed,
            trades_per_sec: self.trades_per_sec,
            regime,
            symbol_regimes,
            volatility_bps: self.volatility_bps,
            funding_interval_ms,
        }
    }

    /// Checks the symbols, pace, volatility and regimes.
    fn validate(&self) -> Result<(), SettingsError> {
        let key = |name: &str| format!("{}.{name}", self.section);
        if self.enabled && self.symbols.is_empty() {
            return Err(invalid(key("symbols"), "must list at least one symbol"));
        }
        if let Some(bad) = self.symbols.iter().find(|s| Symbol::parse(s).is_none()) {
            return Err(invalid(
                key("symbols"),
                format!("`{bad}` is not a symbol (2-20 letters and digits)"),
            ));
        }
        if self.trades_per_sec > 100_000 {
            return Err(invalid(key("trades_per_sec"), "must be at most 100000"));
        }
        if !(self.volatility_bps.is_finite() && (0.0..=1_000.0).contains(&self.volatility_bps)) {
            return Err(invalid(key("volatility_bps"), "must be from 0 to 1000"));
        }
        self.plans().map(drop)
    }

    fn plans(&self) -> Result<(RegimePlan, Vec<(Symbol, RegimePlan)>), SettingsError> {
        let key = |name: &str| format!("{}.{name}", self.section);
        let schedule = RegimePlan::schedule(self.schedule);
        if let Err(why) = &schedule {
            return Err(invalid(key("schedule"), why.clone()));
        }
        let plan = |name: &str, field: &str| -> Result<RegimePlan, SettingsError> {
            if name.trim() == "schedule" {
                return schedule.clone().map_err(|why| invalid(key("schedule"), why));
            }
            name.parse::<Regime>()
                .map(RegimePlan::Fixed)
                .map_err(|why| invalid(key(field), format!("{why}, schedule")))
        };
        let default = plan(self.regime, "regime")?;
        let per_symbol = self
            .symbol_regimes
            .iter()
            .map(|item| {
                let field = "symbol_regimes";
                let (symbol, regime) = item
                    .split_once('=')
                    .ok_or_else(|| invalid(key(field), format!("`{item}` is not SYMBOL=REGIME")))?;
                let symbol = Symbol::parse(symbol.trim())
                    .ok_or_else(|| invalid(key(field), format!("`{symbol}` is not a symbol")))?;
                Ok((symbol, plan(regime, field)?))
            })
            .collect::<Result<Vec<_>, SettingsError>>()?;
        Ok((default, per_symbol))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::env;
    use keel_core::market::Symbol;
    use keel_venues::sim::{Regime, RegimePlan};

    #[test]
    fn regimes_come_from_the_defaults_the_file_and_the_environment() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let (default, per_symbol) = settings.venues.sim.plans().unwrap();
        let RegimePlan::Schedule(segments) = default else { panic!("{default:?}") };
        let regimes: Vec<Regime> = segments.iter().map(|(r, _)| *r).collect();
        assert_eq!(regimes, &Regime::ALL[1..], "the default schedule plays every lively regime");
        assert!(per_symbol.is_empty());

        let vars = env(&[
            ("KEEL__VENUES__SIM__REGIME", "gaps"),
            ("KEEL__VENUES__SIM__SYMBOL_REGIMES", "ETHUSDT=trend,SOLUSDT=schedule"),
            ("KEEL__VENUES__SIM__SCHEDULE", "walk:10,mean_reversion:20"),
        ]);
        let settings = Settings::load_with_env(None, vars).unwrap();
        let (default, per_symbol) = settings.venues.sim.plans().unwrap();
        assert_eq!(default, RegimePlan::Fixed(Regime::Gaps));
        let schedule = RegimePlan::Schedule(vec![(Regime::Walk, 10), (Regime::MeanReversion, 20)]);
        assert_eq!(
            per_symbol,
            [
                (Symbol::parse("ETHUSDT").unwrap(), RegimePlan::Fixed(Regime::Trend)),
                (Symbol::parse("SOLUSDT").unwrap(), schedule),
            ]
        );
    }

    #[test]
    fn a_bad_regime_names_its_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KEEL__VENUES__SIM__REGIME", "sideways")], "venues.sim.regime"),
            (&[("KEEL__VENUES__SIM__SYMBOL_REGIMES", "ETHUSDT")], "venues.sim.symbol_regimes"),
            (
                &[("KEEL__VENUES__SIM__SYMBOL_REGIMES", "ETH-USDT=gaps")],
                "venues.sim.symbol_regimes",
            ),
            (&[("KEEL__VENUES__SIM__SYMBOL_REGIMES", "ETHUSDT=up")], "venues.sim.symbol_regimes"),
            (&[("KEEL__VENUES__SIM__SCHEDULE", "trend:0")], "venues.sim.schedule"),
            (&[("KEEL__VENUES__SIM__SCHEDULE", "trend")], "venues.sim.schedule"),
            (&[("KEEL__VENUES__SIM__VOLATILITY_BPS", "-1")], "venues.sim.volatility_bps"),
            (&[("KEEL__VENUES__SIM__VOLATILITY_BPS", "NaN")], "venues.sim.volatility_bps"),
            // The simulated perpetuals' section is checked the same way, under its own keys.
            (&[("KEEL__VENUES__SIM_PERP__REGIME", "sideways")], "venues.sim_perp.regime"),
            (&[("KEEL__VENUES__SIM_PERP__SCHEDULE", "trend:0")], "venues.sim_perp.schedule"),
            (&[("KEEL__VENUES__SIM_PERP__SYMBOLS", "BTC-USDT")], "venues.sim_perp.symbols"),
            (
                &[("KEEL__VENUES__SIM_PERP__FUNDING_INTERVAL_MS", "999")],
                "venues.sim_perp.funding_interval_ms",
            ),
            (
                &[("KEEL__VENUES__SIM_PERP__FUNDING_INTERVAL_MS", "86400001")],
                "venues.sim_perp.funding_interval_ms",
            ),
        ];
        for (vars, key) in cases {
            let err = Settings::load_with_env(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: `{err}` does not name `{key}`");
        }
        // An unused schedule is still checked: `regime = "trend"` does not hide a broken one.
        let vars = env(&[
            ("KEEL__VENUES__SIM__REGIME", "trend"),
            ("KEEL__VENUES__SIM__SCHEDULE", "trend:x"),
        ]);
        assert!(Settings::load_with_env(None, vars).is_err());
    }
}
