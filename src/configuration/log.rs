//! `[log]`: log level and format.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Level or filter directives.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty in development, JSON in production.
    Auto,
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogSettings {
    /// Checks `[log]`: the level must be a filter `tracing` accepts.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.level) {
            return Err(invalid("log.level", format!("is not a valid filter: {err}")));
        }
        Ok(())
    }
}
