//! `[protection]`: rate limits, overload shedding, trusted proxies, CORS and security headers.

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid, list_or_csv};

/// `[protection]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionSettings {
    /// Requests served at once; more answer 503 `OVERLOADED` at once (health checks exempt).
    pub max_in_flight: usize,
    /// Connections one client address (an IPv6 /64) may hold open; more are closed as they are
    /// accepted. Trusted proxies are exempt.
    pub max_connections_per_ip: u32,
    /// Requests one client address (an IPv6 /64) may have in flight; more answer 503
    /// `OVERLOADED` at once (health checks exempt).
    pub max_in_flight_per_ip: u32,
    /// Requests per minute per client IP without a valid access token.
    pub per_ip_per_minute: u32,
    /// Requests per minute per authenticated user.
    pub per_user_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed (IP addresses); from the environment as a
    /// comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub trusted_proxies: Vec<String>,
    /// Send `Strict-Transport-Security` (Keel is served over TLS, e.g. behind a proxy).
    pub hsts: bool,
    /// Origins allowed by CORS. Empty: none in production, any in development.
    #[serde(deserialize_with = "list_or_csv")]
    pub cors_allowed_origins: Vec<String>,
}

impl ProtectionSettings {
    /// Checks `[protection]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.max_in_flight == 0 || self.per_ip_per_minute == 0 || self.per_user_per_minute == 0 {
            return Err(invalid(
                "protection",
                "max_in_flight, per_ip_per_minute and per_user_per_minute must be positive",
            ));
        }
        if self.max_connections_per_ip == 0 || self.max_in_flight_per_ip == 0 {
            return Err(invalid(
                "protection",
                "max_connections_per_ip and max_in_flight_per_ip must be positive",
            ));
        }
        if let Some(bad) =
            self.trusted_proxies.iter().find(|p| p.trim().parse::<std::net::IpAddr>().is_err())
        {
            return Err(invalid(
                "protection.trusted_proxies",
                format!("`{bad}` is not an IP address"),
            ));
        }
        if let Some(bad) = self
            .cors_allowed_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return Err(invalid(
                "protection.cors_allowed_origins",
                format!("`{bad}` is not an origin like https://app.example.com"),
            ));
        }
        Ok(())
    }
}
