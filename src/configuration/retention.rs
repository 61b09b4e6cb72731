//! `[retention]`: how long old fills, orders, journal rows and recordings are kept, and where
//! they go when they are removed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// What happens to rows past their age when they are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveMode {
    /// Removed without a copy (with the Postgres sink on, its copy is the archive: rows wait
    /// until the sink has them).
    None,
    /// Appended as JSON lines to files under `retention.archive_dir` first.
    Files,
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days fills are kept; 0 keeps them forever.
    pub fills_days: u64,
    /// Days final orders are kept (open orders are always kept); 0 keeps them forever.
    pub orders_days: u64,
    /// Days bot journal rows are kept; 0 keeps them forever.
    pub bot_events_days: u64,
    /// Days of daily market recordings kept; 0 keeps them forever.
    pub recordings_days: u64,
    /// Seconds fills are kept, for a limit finer than a day; 0 leaves it to `fills_days`.
    pub fills_max_age_secs: u64,
    /// Seconds final orders are kept; 0 leaves it to `orders_days`.
    pub orders_max_age_secs: u64,
    /// Seconds bot journal rows are kept; 0 leaves it to `bot_events_days`.
    pub bot_events_max_age_secs: u64,
    /// What happens to removed rows.
    pub archive: ArchiveMode,
    /// Directory of the archive files; empty means `<store.path>/archive`.
    pub archive_dir: PathBuf,
    /// Seconds between two sweeps.
    pub sweep_interval_secs: u64,
}

/// Most days a limit may say (100 years).
const MAX_DAYS: u64 = 36_500;
/// The shortest limit in seconds: one minute, the shortest sweep interval.
const MIN_SECS: u64 = 60;

impl RetentionSettings {
    /// How long fills are kept: `fills_max_age_secs` when set, else `fills_days`; zero keeps
    /// them forever.
    pub fn fills_max_age(&self) -> Duration {
        max_age(self.fills_max_age_secs, self.fills_days)
    }

    /// How long final orders are kept (see [`RetentionSettings::fills_max_age`]).
    pub fn orders_max_age(&self) -> Duration {
        max_age(self.orders_max_age_secs, self.orders_days)
    }

    /// How long bot journal rows are kept (see [`RetentionSettings::fills_max_age`]).
    pub fn bot_events_max_age(&self) -> Duration {
        max_age(self.bot_events_max_age_secs, self.bot_events_days)
    }

    /// Checks `[retention]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for (key, days) in [
            ("retention.fills_days", self.fills_days),
            ("retention.orders_days", self.orders_days),
            ("retention.bot_events_days", self.bot_events_days),
            ("retention.recordings_days", self.recordings_days),
        ] {
            if days > MAX_DAYS {
                return Err(invalid(key, "must be between 0 (keep forever) and 36500"));
            }
        }
        for (key, secs) in [
            ("retention.fills_max_age_secs", self.fills_max_age_secs),
            ("retention.orders_max_age_secs", self.orders_max_age_secs),
            ("retention.bot_events_max_age_secs", self.bot_events_max_age_secs),
        ] {
            if secs != 0 && !(MIN_SECS..=MAX_DAYS * 86_400).contains(&secs) {
                return Err(invalid(
                    key,
                    "must be 0 (the days setting applies) or between 60 and 3153600000",
                ));
            }
        }
        if !(60..=604_800).contains(&self.sweep_interval_secs) {
            return Err(invalid("retention.sweep_interval_secs", "must be between 60 and 604800"));
        }
        Ok(())
    }
}

/// A limit in seconds when given (non-zero), else the one in days.
fn max_age(secs: u64, days: u64) -> Duration {
    if secs > 0 {
        Duration::from_secs(secs)
    } else {
        Duration::from_secs(days.saturating_mul(86_400))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Settings;
    use super::super::tests::env;

    #[test]
    fn limits_in_seconds_replace_the_days_and_zero_leaves_the_days() {
        let defaults = Settings::load_with_env(None, env(&[])).unwrap().retention_config();
        assert_eq!(defaults.fills_max_age, Duration::from_secs(365 * 86_400));
        assert_eq!(defaults.bot_events_max_age, Duration::from_secs(90 * 86_400));

        let vars = env(&[
            ("KEEL__RETENTION__FILLS_MAX_AGE_SECS", "120"),
            ("KEEL__RETENTION__BOT_EVENTS_MAX_AGE_SECS", "60"),
            ("KEEL__RETENTION__ORDERS_DAYS", "0"),
        ]);
        let config = Settings::load_with_env(None, vars).unwrap().retention_config();
        assert_eq!(config.fills_max_age, Duration::from_secs(120));
        assert_eq!(config.bot_events_max_age, Duration::from_secs(60));
        assert_eq!(config.orders_max_age, Duration::ZERO, "0 days keeps orders");
        assert!(config.is_on());

        for (key, value) in [
            ("KEEL__RETENTION__FILLS_MAX_AGE_SECS", "59"),
            ("KEEL__RETENTION__ORDERS_MAX_AGE_SECS", "1"),
            ("KEEL__RETENTION__BOT_EVENTS_MAX_AGE_SECS", "3153600001"),
        ] {
            let err = Settings::load_with_env(None, env(&[(key, value)])).unwrap_err().to_string();
            let named = key.trim_start_matches("KEEL__RETENTION__").to_lowercase();
            assert!(err.contains(&format!("retention.{named}")), "{key}={value}: {err}");
        }
    }
}
