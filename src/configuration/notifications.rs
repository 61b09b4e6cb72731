//! `[notifications]`: owners' webhooks and Telegram chats, their delivery and its guard.

use std::time::Duration;

use keel_actors::notify::NotifyConfig;
use keel_core::notify::backoff::Backoff;
use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// `[notifications]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// Whether webhooks may target private, loopback, link-local, unique-local, CGNAT,
    /// multicast and unspecified addresses.
    pub allow_private_targets: bool,
    /// The Telegram Bot API's base URL.
    pub telegram_api_url: String,
    /// Connecting to a receiver may take this long, ms.
    pub connect_timeout_ms: u64,
    /// One attempt may take this long in all, ms.
    pub timeout_ms: u64,
    /// The wait after a first failed attempt, ms (it doubles, with jitter).
    pub retry_base_ms: u64,
    /// The longest wait between attempts, ms.
    pub retry_max_ms: u64,
    /// Attempts per delivery, the first included; then it is `failed`.
    pub max_attempts: u32,
    /// Channels per user.
    pub max_channels_per_user: usize,
    /// Hours finished deliveries stay listed.
    pub keep_deliveries_hours: u64,
    /// Attempts under way at once.
    pub max_in_flight: usize,
}

impl NotificationSettings {
    /// The runtime's view.
    pub fn notify_config(&self) -> NotifyConfig {
        NotifyConfig {
            allow_private_targets: self.allow_private_targets,
            telegram_api_url: self.telegram_api_url.trim_end_matches('/').to_owned(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            backoff: Backoff {
                base: Duration::from_millis(self.retry_base_ms),
                max: Duration::from_millis(self.retry_max_ms),
                max_attempts: self.max_attempts,
            },
            max_channels_per_user: self.max_channels_per_user,
            keep_finished: Duration::from_secs(self.keep_deliveries_hours * 3600),
            max_in_flight: self.max_in_flight,
        }
    }

    /// Checks `[notifications]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let url = &self.telegram_api_url;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid("notifications.telegram_api_url", "must be an http(s) URL"));
        }
        let ranges: [(&'static str, u64, u64, u64); 8] = [
            ("notifications.connect_timeout_ms", self.connect_timeout_ms, 100, 60_000),
            ("notifications.timeout_ms", self.timeout_ms, 100, 120_000),
            ("notifications.retry_base_ms", self.retry_base_ms, 10, 3_600_000),
            ("notifications.retry_max_ms", self.retry_max_ms, 10, 86_400_000),
            ("notifications.max_attempts", u64::from(self.max_attempts), 1, 100),
            ("notifications.max_channels_per_user", self.max_channels_per_user as u64, 1, 1000),
            ("notifications.keep_deliveries_hours", self.keep_deliveries_hours, 1, 8760),
            ("notifications.max_in_flight", self.max_in_flight as u64, 1, 1024),
        ];
        for (key, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(invalid(key, format!("must be between {low} and {high}")));
            }
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err(invalid(
                "notifications.retry_max_ms",
                "must be at least notifications.retry_base_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::env;

    #[test]
    fn private_targets_are_refused_by_default_and_the_keys_are_checked() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let config = settings.notifications.notify_config();
        assert!(!config.allow_private_targets);
        assert_eq!(config.telegram_api_url, "https://api.telegram.org");
        for (key, value) in [
            ("KEEL__NOTIFICATIONS__TELEGRAM_API_URL", "ftp://x"),
            ("KEEL__NOTIFICATIONS__MAX_ATTEMPTS", "0"),
            ("KEEL__NOTIFICATIONS__RETRY_BASE_MS", "5000000"),
        ] {
            let err = Settings::load_with_env(None, env(&[(key, value)])).unwrap_err();
            let name = key.trim_start_matches("KEEL__").replace("__", ".").to_lowercase();
            assert!(err.to_string().contains(&name), "{key}: {err}");
        }
    }
}
