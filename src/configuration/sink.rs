//! `[sink]`: optional sinks that copy Keel's records elsewhere (Postgres).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid, redact};

/// `[sink]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    /// The optional Postgres sink.
    pub postgres: PostgresSinkSettings,
}

/// `[sink.postgres]`: on when `url` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkSettings {
    /// `postgres://user:password@host:port/database`; unset or empty turns the sink off.
    #[serde(default, serialize_with = "redact")]
    pub url: Option<SecretString>,
    /// Schema for the sink's tables (created when missing).
    pub schema: String,
    /// Most pooled connections.
    pub pool_size: usize,
    /// Connecting may take this long, ms.
    pub connect_timeout_ms: u64,
    /// Waiting for a free pooled connection may take this long, ms.
    pub wait_timeout_ms: u64,
    /// One batch's transaction may take this long before it is abandoned and retried, ms.
    pub batch_timeout_ms: u64,
    /// Most outbox rows per Postgres transaction.
    pub batch_size: usize,
    /// How often an empty outbox is looked at, ms.
    pub poll_interval_ms: u64,
    /// Longest wait between retries while Postgres fails, ms.
    pub max_backoff_ms: u64,
    /// Plain TCP, or TLS with the server verified.
    pub sslmode: PgSslMode,
    /// PEM file of the CA(s) the server's certificate must chain to (`verify-full`).
    pub ca_file: PathBuf,
}

/// `sink.postgres.sslmode`: libpq's names. Only the two ends exist: no TLS, or TLS that
/// verifies both the chain and the host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgSslMode {
    /// Plain TCP.
    Disable,
    /// TLS; the chain must lead to `ca_file` and the certificate must name the URL's host.
    VerifyFull,
}

impl SinkSettings {
    /// Checks `[sink]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        self.postgres.validate()
    }
}

impl PostgresSinkSettings {
    /// The sink's configuration, or `None` when it is off.
    pub fn sink_config(&self) -> Option<keel_actors::sink::PgSinkConfig> {
        let url = self.url.as_ref().filter(|u| !u.expose_secret().trim().is_empty())?;
        Some(keel_actors::sink::PgSinkConfig {
            url: url.clone(),
            schema: self.schema.clone(),
            pool_size: self.pool_size,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            wait_timeout: Duration::from_millis(self.wait_timeout_ms),
            batch_timeout: Duration::from_millis(self.batch_timeout_ms),
            batch_size: self.batch_size,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            tls: match self.sslmode {
                PgSslMode::Disable => keel_actors::sink::PgTls::Disable,
                PgSslMode::VerifyFull => {
                    keel_actors::sink::PgTls::VerifyFull { ca_file: self.ca_file.clone() }
                }
            },
        })
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let ranges: [(&'static str, u64, u64, u64); 7] = [
            ("sink.postgres.pool_size", self.pool_size as u64, 1, 64),
            ("sink.postgres.connect_timeout_ms", self.connect_timeout_ms, 100, 60_000),
            ("sink.postgres.wait_timeout_ms", self.wait_timeout_ms, 10, 60_000),
            ("sink.postgres.batch_timeout_ms", self.batch_timeout_ms, 100, 300_000),
            ("sink.postgres.batch_size", self.batch_size as u64, 1, 10_000),
            ("sink.postgres.poll_interval_ms", self.poll_interval_ms, 10, 60_000),
            ("sink.postgres.max_backoff_ms", self.max_backoff_ms, 100, 600_000),
        ];
        for (key, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(invalid(key, format!("must be between {low} and {high}")));
            }
        }
        let detail = |err: keel_actors::sink::SinkError| match err {
            keel_actors::sink::SinkError::Config(detail) => detail,
            other => other.to_string(),
        };
        keel_actors::sink::check_schema(&self.schema)
            .map_err(|err| invalid("sink.postgres.schema", detail(err)))?;
        if self.sslmode == PgSslMode::VerifyFull && self.ca_file.as_os_str().is_empty() {
            return Err(invalid(
                "sink.postgres.ca_file",
                "sslmode verify-full needs the CA file the server's certificate chains to",
            ));
        }
        if let Some(config) = self.sink_config() {
            config.connection().map_err(|err| invalid("sink.postgres.url", detail(err)))?;
            if let keel_actors::sink::PgTls::VerifyFull { ca_file } = &config.tls {
                keel_actors::sink::tls::roots(ca_file)
                    .map_err(|err| invalid("sink.postgres.ca_file", detail(err)))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::env;

    #[test]
    fn the_postgres_sink_is_off_by_default_and_its_keys_are_checked() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        assert!(settings.sink.postgres.sink_config().is_none());
        let empty = env(&[("KEEL__SINK__POSTGRES__URL", "")]);
        assert!(
            Settings::load_with_env(None, empty).unwrap().sink.postgres.sink_config().is_none()
        );

        let url = "postgres://keel:hunter2@127.0.0.1:5432/keel";
        let settings =
            Settings::load_with_env(None, env(&[("KEEL__SINK__POSTGRES__URL", url)])).unwrap();
        let config = settings.sink.postgres.sink_config().expect("on when the URL is set");
        assert_eq!(config.schema, "keel");
        let text = settings.to_redacted_toml().unwrap();
        assert!(!text.contains("hunter2") && !format!("{settings:?}").contains("hunter2"));

        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KEEL__SINK__POSTGRES__URL", "mysql://root:hunter2@x/y")], "sink.postgres.url"),
            (
                &[("KEEL__SINK__POSTGRES__URL", "postgres://k:hunter2@h/d?sslmode=require")],
                "sink.postgres.url",
            ),
            (&[("KEEL__SINK__POSTGRES__SCHEMA", "Robert'); DROP")], "sink.postgres.schema"),
            (&[("KEEL__SINK__POSTGRES__POOL_SIZE", "0")], "sink.postgres.pool_size"),
            (&[("KEEL__SINK__POSTGRES__BATCH_SIZE", "0")], "sink.postgres.batch_size"),
            (&[("KEEL__SINK__POSTGRES__MAX_BACKOFF_MS", "1")], "sink.postgres.max_backoff_ms"),
            (&[("KEEL__SINK__POSTGRES__SSLMODE", "require")], "sink.postgres.sslmode"),
            (&[("KEEL__SINK__POSTGRES__SSLMODE", "verify-full")], "sink.postgres.ca_file"),
            (
                &[
                    ("KEEL__SINK__POSTGRES__URL", url),
                    ("KEEL__SINK__POSTGRES__SSLMODE", "verify-full"),
                    ("KEEL__SINK__POSTGRES__CA_FILE", "/nonexistent/keel-ca.pem"),
                ],
                "sink.postgres.ca_file",
            ),
            (
                &[
                    ("KEEL__SINK__POSTGRES__URL", "postgres://k:hunter2@h/d?sslmode=disable"),
                    ("KEEL__SINK__POSTGRES__SSLMODE", "verify-full"),
                    ("KEEL__SINK__POSTGRES__CA_FILE", "/etc/hostname"),
                ],
                "sink.postgres.url",
            ),
        ];
        for (vars, key) in cases {
            let err = Settings::load_with_env(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: `{err}` does not name `{key}`");
            assert!(!err.contains("hunter2"), "the URL leaked: {err}");
        }
    }
}
