//! `[auth]`: users' tokens, login throttling and password hashing.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid, redact};

/// Fewest bytes accepted for `auth.jwt_secret`.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// `[auth]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret; generated in development when absent.
    #[serde(default, serialize_with = "redact")]
    pub jwt_secret: Option<SecretString>,
    /// `iss` of issued tokens, required on presented ones.
    pub issuer: String,
    /// `aud` of issued tokens, required on presented ones.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Session (refresh-token family) lifetime, seconds.
    pub refresh_ttl_secs: u64,
    /// Tolerated clock skew, seconds.
    pub leeway_secs: u64,
    /// Login attempts per minute per account.
    pub login_attempts_per_minute_per_account: u32,
    /// Login attempts per minute per client IP.
    pub login_attempts_per_minute_per_ip: u32,
    /// Concurrent password hashes; 0 = half the cores, at least 1.
    pub hash_concurrency: usize,
    /// Password hashes allowed to wait.
    pub hash_queue: usize,
    /// Who may register: `open` (anyone), `invite` (with an invite from `POST /admin/invites`)
    /// or `closed` (no one).
    pub registration: Registration,
    /// Registrations per hour per client IP (refused ones count too).
    pub registrations_per_hour_per_ip: u32,
    /// How long an invite stays valid, seconds.
    pub invite_ttl_secs: u64,
}

/// `auth.registration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may register.
    Open,
    /// Only with a valid invite.
    Invite,
    /// No one may register.
    Closed,
}

impl AuthSettings {
    /// Checks `[auth]` apart from its secret (see [`AuthSettings::validate_secret`]).
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.issuer.trim().is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        if !(60..=86_400).contains(&self.access_ttl_secs) {
            return Err(invalid("auth.access_ttl_secs", "must be between 60 and 86400"));
        }
        if self.refresh_ttl_secs < self.access_ttl_secs || self.refresh_ttl_secs > 31_536_000 {
            return Err(invalid(
                "auth.refresh_ttl_secs",
                "must be at least auth.access_ttl_secs and at most 31536000",
            ));
        }
        if self.leeway_secs > 300 {
            return Err(invalid("auth.leeway_secs", "must be at most 300"));
        }
        if self.login_attempts_per_minute_per_account == 0 {
            return Err(invalid(
                "auth.login_attempts_per_minute_per_account",
                "must be at least 1",
            ));
        }
        if self.login_attempts_per_minute_per_ip == 0 {
            return Err(invalid("auth.login_attempts_per_minute_per_ip", "must be at least 1"));
        }
        if self.registrations_per_hour_per_ip == 0 {
            return Err(invalid("auth.registrations_per_hour_per_ip", "must be at least 1"));
        }
        if !(60..=31_536_000).contains(&self.invite_ttl_secs) {
            return Err(invalid("auth.invite_ttl_secs", "must be between 60 and 31536000"));
        }
        if self.hash_concurrency > 64 {
            return Err(invalid("auth.hash_concurrency", "must be at most 64 (0 = automatic)"));
        }
        Ok(())
    }

    /// Checks `auth.jwt_secret`, when set, is long enough, and in `production` not weak (see
    /// [`crate::secrets::weakness`]). Secrets are checked after loading, with where they came
    /// from (see `Settings::load_with_env`).
    ///
    /// # Errors
    /// The secret is shorter than [`MIN_JWT_SECRET_BYTES`], or weak in production. The message
    /// never holds the secret.
    pub(super) fn validate_secret(&self, production: bool) -> Result<(), SettingsError> {
        let Some(secret) = &self.jwt_secret else { return Ok(()) };
        let secret = secret.expose_secret();
        if secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            ));
        }
        if production && let Some(why) = crate::secrets::weakness(secret, secret.as_bytes()) {
            return Err(invalid(
                "auth.jwt_secret",
                format!(
                    "{why}: too weak for production; generate one with `openssl rand -base64 48`"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::{JWT, KEY, env};

    fn production(jwt: &str) -> Result<Settings, String> {
        let vars = [
            ("KEEL__ENVIRONMENT", "production"),
            ("KEEL__AUTH__JWT_SECRET", jwt),
            ("KEEL__VAULT__MASTER_KEY", KEY),
        ];
        Settings::load_with_env(None, env(&vars)).map_err(|e| e.to_string())
    }

    #[test]
    fn production_refuses_a_weak_jwt_secret_naming_the_key() {
        let weak = [
            ("short", "k".repeat(31)),
            ("one character", "k".repeat(48)),
            ("tiny alphabet", "abcabcabcabcabcabcabcabcabcabcabcabcX".to_owned()),
            ("repeated block", "0123456789abcdef".repeat(3)),
            ("example", "test-secret-test-secret-test-secret!".to_owned()),
            (
                "docs placeholder",
                "<at least 32 random bytes, e.g. `openssl rand -base64 48`>".into(),
            ),
        ];
        for (what, secret) in weak {
            let err = production(&secret).expect_err(what);
            assert!(err.contains("auth.jwt_secret"), "{what}: {err}");
            assert!(!err.contains(&secret), "{what}: the secret leaked: {err}");
        }
        assert!(production(JWT).is_ok());
    }

    #[test]
    fn development_keeps_accepting_any_long_enough_jwt_secret() {
        let vars = [("KEEL__AUTH__JWT_SECRET", "test-secret-test-secret-test-secret!")];
        assert!(Settings::load_with_env(None, env(&vars)).is_ok());
    }
}
