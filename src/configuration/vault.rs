//! `[vault]`: the credential vault's master keys and limits.

use keel_actors::vault::MasterKey;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid, redact};

/// `[vault]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// Base64 of the 32-byte master key; generated in development when absent.
    #[serde(default, serialize_with = "redact")]
    pub master_key: Option<SecretString>,
    /// The key being rotated away from.
    #[serde(default, serialize_with = "redact")]
    pub previous_master_key: Option<SecretString>,
    /// Exchange accounts per user.
    pub max_credentials_per_user: usize,
}

impl VaultSettings {
    /// Checks `[vault]` apart from its keys (see [`VaultSettings::validate_keys`]).
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=1_000_000).contains(&self.max_credentials_per_user) {
            return Err(invalid("vault.max_credentials_per_user", "must be between 1 and 1000000"));
        }
        Ok(())
    }

    /// Checks that the master keys which are set are base64 of 32 bytes. The message never
    /// holds the key.
    ///
    /// # Errors
    /// The first malformed key.
    pub(super) fn validate_keys(&self) -> Result<(), SettingsError> {
        for (key, value) in [
            ("vault.master_key", &self.master_key),
            ("vault.previous_master_key", &self.previous_master_key),
        ] {
            if let Some(value) = value
                && let Err(err) = MasterKey::from_base64(value)
            {
                let problem = err.to_string();
                let problem = problem.strip_prefix("vault.master_key ").unwrap_or(&problem);
                return Err(invalid(key, format!("{problem} (expected base64 of 32 bytes)")));
            }
        }
        Ok(())
    }
}
