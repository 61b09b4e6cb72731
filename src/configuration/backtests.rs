//! `[backtests]`: the backtest worker pool, its queue and uploads.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[backtests]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestSettings {
    /// Worker threads running backtests; 0 means half the cores, at least 1.
    pub workers: usize,
    /// Backtests waiting for a worker; more answer 503.
    pub queue: usize,
    /// Backtests one user may have queued or running at once; more answer 429.
    pub max_per_user: usize,
    /// Finished backtests kept (in memory) per user.
    pub keep_finished: usize,
    /// Largest uploaded trade file, in bytes; larger uploads answer 413.
    pub max_upload_bytes: u64,
    /// Uploaded files kept per user; older ones are deleted.
    pub max_uploads_per_user: usize,
}

impl BacktestSettings {
    /// Checks `[backtests]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.workers > 256 {
            return Err(invalid("backtests.workers", "must be at most 256 (0 = half the cores)"));
        }
        if !(1..=100_000).contains(&self.queue) {
            return Err(invalid("backtests.queue", "must be between 1 and 100000"));
        }
        if !(1..=1000).contains(&self.max_per_user) {
            return Err(invalid("backtests.max_per_user", "must be between 1 and 1000"));
        }
        if !(1..=10_000).contains(&self.keep_finished) {
            return Err(invalid("backtests.keep_finished", "must be between 1 and 10000"));
        }
        if !(1024..=(16u64 << 30)).contains(&self.max_upload_bytes) {
            return Err(invalid(
                "backtests.max_upload_bytes",
                "must be between 1024 and 17179869184 (16 GiB)",
            ));
        }
        if !(1..=10_000).contains(&self.max_uploads_per_user) {
            return Err(invalid("backtests.max_uploads_per_user", "must be between 1 and 10000"));
        }
        Ok(())
    }
}
