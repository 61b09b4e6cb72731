//! `[retention]`: how long old fills, orders, journal rows and recordings are kept, and where
//! they go when they are removed.

use std::path::PathBuf;

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
    /// What happens to removed rows.
    pub archive: ArchiveMode,
    /// Directory of the archive files; empty means `<store.path>/archive`.
    pub archive_dir: PathBuf,
    /// Seconds between two sweeps.
    pub sweep_interval_secs: u64,
}

/// Most days a limit may say (100 years).
const MAX_DAYS: u64 = 36_500;

impl RetentionSettings {
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
        if !(60..=604_800).contains(&self.sweep_interval_secs) {
            return Err(invalid("retention.sweep_interval_secs", "must be between 60 and 604800"));
        }
        Ok(())
    }
}
