//! `[bots]`: where bots run and what one user's bots may do.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[bots]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BotsSettings {
    /// Arbiter threads bots run on; 0 means one per CPU core.
    pub arbiters: usize,
    /// Bots one user may define.
    pub max_per_user: usize,
    /// Paper market orders without a quote fill at the last trade this many basis points worse.
    pub paper_slippage_bps: Decimal,
    /// Most exposure (quote currency: position at mark plus open orders that add to it) one
    /// user's bots may hold together; 0 means no limit.
    pub max_user_exposure: Decimal,
    /// Points kept in memory per indicator series of each bot (`GET /bots/{id}/indicators`).
    pub indicator_points: usize,
}

impl BotsSettings {
    /// Checks `[bots]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.arbiters > 256 {
            return Err(invalid("bots.arbiters", "must be at most 256 (0 = one per core)"));
        }
        if !(1..=100_000).contains(&self.max_per_user) {
            return Err(invalid("bots.max_per_user", "must be between 1 and 100000"));
        }
        if self.paper_slippage_bps < Decimal::ZERO || self.paper_slippage_bps > Decimal::from(1000)
        {
            return Err(invalid("bots.paper_slippage_bps", "must be between 0 and 1000"));
        }
        if self.max_user_exposure < Decimal::ZERO {
            return Err(invalid("bots.max_user_exposure", "must be 0 (no limit) or positive"));
        }
        if !(1..=100_000).contains(&self.indicator_points) {
            return Err(invalid("bots.indicator_points", "must be between 1 and 100000"));
        }
        Ok(())
    }
}
