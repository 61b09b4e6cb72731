//! `[feed]`: how long the market-data feeds keep symbols and wait for data.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[feed]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSettings {
    /// Seconds a symbol stays tracked after the last market request.
    pub warm_secs: u64,
    /// Milliseconds a market request waits for the first data.
    pub first_data_wait_ms: u64,
}

impl FeedSettings {
    /// Checks `[feed]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=86_400).contains(&self.warm_secs) {
            return Err(invalid("feed.warm_secs", "must be between 1 and 86400"));
        }
        if !(10..=30_000).contains(&self.first_data_wait_ms) {
            return Err(invalid("feed.first_data_wait_ms", "must be between 10 and 30000"));
        }
        Ok(())
    }
}
