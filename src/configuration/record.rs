//! `[record]`: recording market data to files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[record]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSettings {
    /// Whether feeds record the events they handle.
    pub enabled: bool,
    /// Directory of the recordings; empty means `<store.path>/record`.
    pub path: PathBuf,
    /// Events queued for the writer thread; past it events are dropped and counted.
    pub queue: usize,
}

impl RecordSettings {
    /// Checks `[record]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=10_000_000).contains(&self.queue) {
            return Err(invalid("record.queue", "must be between 1 and 10000000"));
        }
        Ok(())
    }
}
