//! `[admin]`: the operator endpoints' token.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::auth::MIN_JWT_SECRET_BYTES;
use super::{SettingsError, invalid, redact};

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the operator endpoints (`GET /admin/backup`), at least 32 bytes; they
    /// are off when unset. A secret: in production from `KEEL__ADMIN__TOKEN` only.
    #[serde(default, serialize_with = "redact")]
    pub token: Option<SecretString>,
}

impl AdminSettings {
    /// Checks `admin.token`, when set, is as long as a JWT secret must be.
    ///
    /// # Errors
    /// The token is shorter than [`MIN_JWT_SECRET_BYTES`].
    pub(super) fn validate_secret(&self) -> Result<(), SettingsError> {
        if let Some(token) = &self.token
            && token.expose_secret().len() < MIN_JWT_SECRET_BYTES
        {
            return Err(invalid(
                "admin.token",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::{JWT, KEY, env};

    #[test]
    fn the_admin_token_must_be_long_and_in_production_from_the_environment() {
        let dev = Settings::load_with_env(None, env(&[("KEEL__ADMIN__TOKEN", "short")]));
        assert!(dev.unwrap_err().to_string().contains("admin.token"));
        let token = "admin-token-admin-token-admin-token!";
        let dev = Settings::load_with_env(None, env(&[("KEEL__ADMIN__TOKEN", token)])).unwrap();
        assert!(dev.admin.token.is_some());
        assert!(!dev.to_redacted_toml().unwrap().contains(token));
        let prod = [
            ("KEEL__ENVIRONMENT", "production"),
            ("KEEL__AUTH__JWT_SECRET", JWT),
            ("KEEL__VAULT__MASTER_KEY", KEY),
            ("KEEL__ADMIN__TOKEN", token),
        ];
        assert!(Settings::load_with_env(None, env(&prod)).is_ok());
    }
}
