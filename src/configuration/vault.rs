//! `[vault]`: the credential vault's master keys and limits.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keel_actors::vault::MasterKey;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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

    /// Checks that the master keys which are set are base64 of 32 bytes and, in `production`,
    /// that `vault.master_key` is not weak (see [`crate::secrets::weakness`]). The previous key
    /// is not judged: refusing it would stop an operator rotating away from a weak key. The
    /// message never holds the key.
    ///
    /// # Errors
    /// The first malformed key, or a weak master key in production.
    pub(super) fn validate_keys(&self, production: bool) -> Result<(), SettingsError> {
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
        if production && let Some(key) = &self.master_key {
            let text = key.expose_secret();
            // Well-formed: checked just above.
            let bytes = Zeroizing::new(STANDARD.decode(text.trim()).unwrap_or_default());
            if let Some(why) = crate::secrets::weakness(text, &bytes) {
                return Err(invalid(
                    "vault.master_key",
                    format!(
                        "{why}: too weak for production; generate one with `keel vault keygen`"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::{JWT, KEY, env};

    fn production(key: &str, previous: Option<&str>) -> Result<Settings, String> {
        let mut vars = vec![
            ("KEEL__ENVIRONMENT", "production"),
            ("KEEL__AUTH__JWT_SECRET", JWT),
            ("KEEL__VAULT__MASTER_KEY", key),
        ];
        vars.extend(previous.map(|p| ("KEEL__VAULT__PREVIOUS_MASTER_KEY", p)));
        Settings::load_with_env(None, env(&vars)).map_err(|e| e.to_string())
    }

    #[test]
    fn production_refuses_a_weak_master_key_naming_the_key() {
        let zeros = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let weak = [
            ("short", "c2hvcnQ="),
            ("all zero bytes", zeros),
            ("two bytes alternating", "q7urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="),
            ("counting bytes, the old test key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            ("docs placeholder", "<`keel vault keygen`>"),
        ];
        for (what, key) in weak {
            let err = production(key, None).expect_err(what);
            assert!(err.contains("vault.master_key"), "{what}: {err}");
            assert!(!err.contains(key), "{what}: the key leaked: {err}");
        }
        assert!(production(KEY, None).is_ok());
        // Rotating away from a weak key stays possible.
        assert!(production(KEY, Some(zeros)).is_ok());
    }

    #[test]
    fn development_accepts_any_well_formed_master_key() {
        let vars = [("KEEL__VAULT__MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")];
        assert!(Settings::load_with_env(None, env(&vars)).is_ok());
    }
}
