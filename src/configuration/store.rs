//! `[store]`: the embedded database's directory, cache and free-space floor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Data directory.
    pub path: PathBuf,
    /// sled page cache cap, in MiB.
    pub cache_capacity_mb: u64,
    /// sled background flush period, in milliseconds; 0 turns it off.
    pub background_flush_ms: u64,
    /// Free space under `path` below which new orders and bot starts are refused (507) and
    /// running bots are paused; 0 turns the guard off.
    pub min_free_bytes: u64,
}

impl StoreSettings {
    /// Checks `[store]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        if !(1..=65_536).contains(&self.cache_capacity_mb) {
            return Err(invalid("store.cache_capacity_mb", "must be between 1 and 65536"));
        }
        Ok(())
    }
}
