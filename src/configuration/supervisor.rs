//! `[supervisor]`: the supervisors' restart budget.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[supervisor]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The period, in seconds.
    pub period_secs: u64,
}

impl SupervisorSettings {
    /// Checks `[supervisor]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.max_restarts == 0 {
            return Err(invalid("supervisor.max_restarts", "must be at least 1"));
        }
        if !(1..=3600).contains(&self.period_secs) {
            return Err(invalid("supervisor.period_secs", "must be between 1 and 3600"));
        }
        Ok(())
    }
}
