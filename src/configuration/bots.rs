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
    /// Highest leverage any bot may be given (1 to 125), whatever its owner's own limits allow:
    /// a bot above it is refused at create, edit and start.
    pub max_leverage: u32,
    /// Venue failures in a row (unreachable, or no answer saying what happened) that open a
    /// venue account's circuit breaker and pause its live bots.
    pub breaker_failures: u32,
    /// Seconds an open breaker refuses requests before it lets a probe through.
    pub breaker_open_secs: u64,
    /// Answered probes in a row that close a half-open breaker (its paused bots resume).
    pub breaker_half_open_successes: u32,
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
        if !(1..=keel_core::bot::MAX_LEVERAGE).contains(&self.max_leverage) {
            return Err(invalid(
                "bots.max_leverage",
                format!("must be between 1 and {}", keel_core::bot::MAX_LEVERAGE),
            ));
        }
        if !(1..=1000).contains(&self.breaker_failures) {
            return Err(invalid("bots.breaker_failures", "must be between 1 and 1000"));
        }
        if !(1..=86_400).contains(&self.breaker_open_secs) {
            return Err(invalid("bots.breaker_open_secs", "must be between 1 and 86400"));
        }
        if !(1..=1000).contains(&self.breaker_half_open_successes) {
            return Err(invalid("bots.breaker_half_open_successes", "must be between 1 and 1000"));
        }
        if !(1..=100_000).contains(&self.indicator_points) {
            return Err(invalid("bots.indicator_points", "must be between 1 and 100000"));
        }
        Ok(())
    }

    /// The circuit breaker policy of every venue account.
    pub fn breaker(&self) -> keel_actors::breaker::BreakerPolicy {
        keel_actors::breaker::BreakerPolicy {
            failure_threshold: self.breaker_failures,
            open_for: std::time::Duration::from_secs(self.breaker_open_secs),
            half_open_successes: self.breaker_half_open_successes,
        }
    }
}
