//! Typed settings, layered: embedded `config/default.toml`, then an optional file, then
//! `KEEL__SECTION__KEY` environment variables.
//!
//! Every check names the key it failed on, so an operator knows what to fix without reading code.
//! Each section's type sits in its own file beside its own `validate`; [`Settings::validate`]
//! calls them in order, and the secrets (which depend on where a value came from) are checked
//! here after loading.

mod access_log;
mod admin;
mod auth;
mod backtests;
mod bots;
mod cluster;
mod feed;
mod log;
mod mailboxes;
mod notifications;
mod protection;
mod record;
#[cfg(test)]
mod reference;
mod retention;
mod runtime;
mod server;
mod sink;
mod store;
mod supervisor;
mod vault;
mod venues;
mod wasm;
mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment as EnvSource, File, FileFormat};
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

pub use access_log::{AccessLogOutput, AccessLogSettings};
pub use admin::AdminSettings;
pub use auth::{AuthSettings, MIN_JWT_SECRET_BYTES, Registration};
pub use backtests::BacktestSettings;
pub use bots::BotsSettings;
pub use cluster::ClusterSettings;
pub use feed::FeedSettings;
pub use log::{LogFormat, LogSettings};
pub use mailboxes::MailboxSettings;
pub use notifications::NotificationSettings;
pub use protection::ProtectionSettings;
pub use record::RecordSettings;
pub use retention::{ArchiveMode, RetentionSettings};
pub use server::ServerSettings;
pub use sink::{PgSslMode, PostgresSinkSettings, SinkSettings};
pub use store::StoreSettings;
pub use supervisor::SupervisorSettings;
pub use vault::VaultSettings;
pub use venues::{ExchangeVenueSettings, SimVenueSettings, VenuesSettings};
pub use wasm::WasmSettings;
pub use ws::WsSettings;

/// The embedded defaults.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

/// Prefix of environment variables that override settings.
const ENV_PREFIX: &str = "KEEL";
/// Separator between the prefix, sections and keys in environment variable names.
const ENV_SEPARATOR: &str = "__";

/// Where Keel runs; decides log format and how strict secret handling is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine: pretty logs, secrets generated on first start.
    Development,
    /// A real deployment: JSON logs, secrets only from the environment.
    Production,
}

/// All of Keel's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `development` or `production`.
    pub environment: Environment,
    /// The HTTP server.
    pub server: ServerSettings,
    /// The embedded database.
    pub store: StoreSettings,
    /// Logging.
    pub log: LogSettings,
    /// The access log: one JSON line per request.
    pub access_log: AccessLogSettings,
    /// Restart budget of the supervisors.
    pub supervisor: SupervisorSettings,
    /// Users and tokens.
    pub auth: AuthSettings,
    /// The credential vault.
    pub vault: VaultSettings,
    /// Market-data feeds.
    pub feed: FeedSettings,
    /// Bots.
    pub bots: BotsSettings,
    /// The WebSocket API.
    pub ws: WsSettings,
    /// Rate limits, overload shedding, proxies, CORS and security headers.
    pub protection: ProtectionSettings,
    /// Venues.
    pub venues: VenuesSettings,
    /// Optional sinks that copy Keel's records elsewhere.
    pub sink: SinkSettings,
    /// Owners' notifications (webhooks, Telegram).
    pub notifications: NotificationSettings,
    /// Recording market data to files.
    pub record: RecordSettings,
    /// Backtests over HTTP.
    pub backtests: BacktestSettings,
    /// The sandbox of owners' WebAssembly strategy modules.
    pub wasm: WasmSettings,
    /// How long history is kept.
    pub retention: RetentionSettings,
    /// Actors' mailbox capacities.
    pub mailboxes: MailboxSettings,
    /// Cluster mode: several nodes sharing market data through NATS.
    pub cluster: ClusterSettings,
    /// Operator endpoints (`keel backup`).
    #[serde(default)]
    pub admin: AdminSettings,
}

/// Accepts a TOML list or, as environment variables must give it, a comma-separated string.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(deserializer)? {
        ListOrCsv::List(list) => list,
        ListOrCsv::Csv(csv) => {
            csv.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
    })
}

/// Serialises a secret as `[redacted]`, so printing settings cannot leak it.
fn redact<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

/// A setting that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The sources could not be read or parsed (the message names the key where it can).
    #[error("configuration error: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is out of range or inconsistent.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// The key, dotted (`server.port`).
        key: std::borrow::Cow<'static, str>,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(
    key: impl Into<std::borrow::Cow<'static, str>>,
    problem: impl Into<String>,
) -> SettingsError {
    SettingsError::Invalid { key: key.into(), problem: problem.into() }
}

impl Settings {
    /// Loads the layered settings and validates them.
    ///
    /// # Errors
    /// A source cannot be read, a value has the wrong type, a key is unknown, or a value is out
    /// of range. The message names the key.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
        Self::load_with_env(file, std::env::vars().filter(|(k, _)| k.starts_with(&prefix)))
    }

    /// Like [`Settings::load`] but with environment variables from `vars` only (for tests).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_with_env(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let from_env = |key: &str| vars.contains_key(key);
        let secrets_from_env = [
            ("auth.jwt_secret", from_env("KEEL__AUTH__JWT_SECRET")),
            ("vault.master_key", from_env("KEEL__VAULT__MASTER_KEY")),
            ("vault.previous_master_key", from_env("KEEL__VAULT__PREVIOUS_MASTER_KEY")),
            ("admin.token", from_env("KEEL__ADMIN__TOKEN")),
        ];
        let source = EnvSource::with_prefix(ENV_PREFIX).source(Some(vars));
        let settings = Self::load_from(file, source)?;
        settings.validate_secrets(&secrets_from_env)?;
        Ok(settings)
    }

    fn load_from(file: Option<&Path>, env: EnvSource) -> Result<Self, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let env = env.prefix_separator(ENV_SEPARATOR).separator(ENV_SEPARATOR).try_parsing(true);
        let settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges and consistency that types alone cannot express, section by section.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.record.validate()?;
        self.backtests.validate()?;
        self.wasm.validate()?;
        self.retention.validate()?;
        self.server.validate()?;
        self.store.validate()?;
        self.log.validate()?;
        self.access_log.validate()?;
        self.supervisor.validate()?;
        self.auth.validate()?;
        self.feed.validate()?;
        self.bots.validate()?;
        self.protection.validate()?;
        self.ws.validate()?;
        self.venues.validate()?;
        self.vault.validate()?;
        self.sink.validate()?;
        self.notifications.validate()?;
        self.mailboxes.validate()?;
        self.cluster.validate()?;
        Ok(())
    }

    /// Checks the secrets: well-formed wherever they come from, and in production present and
    /// taken from the environment (`from_env` says which were).
    fn validate_secrets(&self, from_env: &[(&'static str, bool)]) -> Result<(), SettingsError> {
        let production = self.environment == Environment::Production;
        self.auth.validate_secret(production)?;
        self.admin.validate_secret()?;
        self.vault.validate_keys(production)?;
        if !production {
            return Ok(());
        }
        for (key, present, required) in [
            ("auth.jwt_secret", self.auth.jwt_secret.is_some(), true),
            ("vault.master_key", self.vault.master_key.is_some(), true),
            ("vault.previous_master_key", self.vault.previous_master_key.is_some(), false),
            ("admin.token", self.admin.token.is_some(), false),
        ] {
            let env_name = format!("KEEL__{}", key.replace('.', "__").to_uppercase());
            let in_env = from_env.iter().any(|(k, yes)| *k == key && *yes);
            if required && !present {
                return Err(invalid(key, format!("is required in production: set {env_name}")));
            }
            if present && !in_env {
                return Err(invalid(
                    key,
                    format!(
                        "must come from the environment ({env_name}) in production, not a file"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where recordings are: `record.path`, or `<store.path>/record` when it is empty.
    pub fn record_dir(&self) -> PathBuf {
        if self.record.path.as_os_str().is_empty() {
            self.store.path.join("record")
        } else {
            self.record.path.clone()
        }
    }

    /// The socket address to bind.
    ///
    /// # Errors
    /// `server.host` is not an IP address or `localhost`.
    pub fn listen_address(&self) -> Result<SocketAddr, SettingsError> {
        self.server.listen_address()
    }

    /// The actor request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }

    /// The effective configuration as TOML, secrets redacted.
    ///
    /// # Errors
    /// Serialisation failed (a bug).
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_embedded_defaults_serve_on_localhost_8080_in_development() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(settings.environment, Environment::Development);
        assert_eq!(settings.listen_address().unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(settings.store.path, PathBuf::from("./data"));
    }

    #[test]
    fn environment_variables_override_the_file_which_overrides_the_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[server]\nport = 9000\nhost = \"0.0.0.0\"").unwrap();
        let settings =
            Settings::load_with_env(Some(file.path()), env(&[("KEEL__SERVER__PORT", "9100")]))
                .unwrap();
        assert_eq!(settings.server.port, 9100);
        assert_eq!(settings.server.host, "0.0.0.0");
        let vars = env(&[("KEEL__VENUES__SIM__SYMBOLS", "BTCUSDT,SOLUSDT")]);
        let settings = Settings::load_with_env(None, vars).unwrap();
        assert_eq!(settings.venues.sim.symbols, ["BTCUSDT", "SOLUSDT"]);
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KEEL__SERVER__PORT", "eighty")], "server.port"),
            (&[("KEEL__SERVER__PORT", "70000")], "server.port"),
            (&[("KEEL__ENVIRONMENT", "staging")], "environment"),
            (&[("KEEL__SERVER__HOST", "my host")], "server.host"),
            (&[("KEEL__SERVER__MAX_BODY_BYTES", "1")], "server.max_body_bytes"),
            (&[("KEEL__STORE__CACHE_CAPACITY_MB", "0")], "store.cache_capacity_mb"),
            (&[("KEEL__LOG__LEVEL", "info,[")], "log.level"),
            (&[("KEEL__LOG__FORMAT", "xml")], "log.format"),
            (&[("KEEL__SERVER__SHUTDOWN_TIMEOUT_SECS", "60")], "server.shutdown_timeout_secs"),
            (&[("KEEL__SUPERVISOR__MAX_RESTARTS", "0")], "supervisor.max_restarts"),
            (&[("KEEL__VENUES__SIM__SYMBOLS", "BTC-USDT")], "venues.sim.symbols"),
            (&[("KEEL__VENUES__BINANCE__WS_URL", "http://x")], "venues.binance.ws_url"),
            (&[("KEEL__VENUES__BINANCE__REST_URL", "ws://x")], "venues.binance.rest_url"),
            (
                &[("KEEL__VENUES__BINANCE__RECV_WINDOW_MS", "60001")],
                "venues.binance.recv_window_ms",
            ),
            (
                &[("KEEL__VENUES__BINANCE_FUTURES__RECV_WINDOW_MS", "0")],
                "venues.binance_futures.recv_window_ms",
            ),
            (&[("KEEL__RECORD__QUEUE", "0")], "record.queue"),
            (&[("KEEL__BACKTESTS__MAX_PER_USER", "0")], "backtests.max_per_user"),
            (&[("KEEL__BACKTESTS__MAX_UPLOAD_BYTES", "10")], "backtests.max_upload_bytes"),
            (&[("KEEL__WASM__FUEL_PER_CALL", "5")], "wasm.fuel_per_call"),
            (&[("KEEL__WASM__MAX_MODULE_BYTES", "0")], "wasm.max_module_bytes"),
            (&[("KEEL__MAILBOXES__BOT", "0")], "mailboxes.bot"),
            (&[("KEEL__MAILBOXES__SESSION", "15")], "mailboxes.session"),
            (&[("KEEL__MAILBOXES__WS_HUB", "1048577")], "mailboxes.ws_hub"),
        ];
        for (vars, key) in cases {
            let err = Settings::load_with_env(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: `{err}` does not name `{key}`");
        }
    }

    pub(super) const JWT: &str = "lVwZcAFkljE+4l5V88iPNti55hbrHqEs/c4Vcz4/8f6L";
    pub(super) const KEY: &str = "1Wgkm8aZYCEqi46QDF34G7GYxQuqXpzLVQ7FHRXI6to=";

    #[test]
    fn production_refuses_to_start_without_its_secrets_from_the_environment() {
        let prod = ("KEEL__ENVIRONMENT", "production");
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[prod], Some("auth.jwt_secret")),
            (&[prod, ("KEEL__AUTH__JWT_SECRET", JWT)], Some("vault.master_key")),
            (
                &[prod, ("KEEL__AUTH__JWT_SECRET", "too short"), ("KEEL__VAULT__MASTER_KEY", KEY)],
                Some("auth.jwt_secret"),
            ),
            (
                &[prod, ("KEEL__AUTH__JWT_SECRET", JWT), ("KEEL__VAULT__MASTER_KEY", "c2hvcnQ=")],
                Some("vault.master_key"),
            ),
            (&[prod, ("KEEL__AUTH__JWT_SECRET", JWT), ("KEEL__VAULT__MASTER_KEY", KEY)], None),
        ];
        for (vars, failing_key) in cases {
            let result = Settings::load_with_env(None, env(vars));
            match failing_key {
                Some(key) => {
                    let err = result.unwrap_err().to_string();
                    assert!(err.contains(key), "{vars:?}: `{err}` does not name {key}");
                    assert!(!err.contains(JWT) && !err.contains(KEY), "a secret leaked: {err}");
                }
                None => assert!(result.is_ok(), "{vars:?}: {:?}", result.err()),
            }
        }
    }

    #[test]
    fn production_secrets_in_a_file_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "environment = \"production\"\n[auth]\njwt_secret = \"{JWT}\"").unwrap();
        let vars = env(&[("KEEL__VAULT__MASTER_KEY", KEY)]);
        let err = Settings::load_with_env(Some(file.path()), vars).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret") && err.contains("environment"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let vars = env(&[("KEEL__AUTH__JWT_SECRET", JWT), ("KEEL__VAULT__MASTER_KEY", KEY)]);
        let settings = Settings::load_with_env(None, vars).unwrap();
        let text = settings.to_redacted_toml().unwrap();
        assert!(!text.contains(JWT) && !text.contains(KEY), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        let debug = format!("{settings:?}");
        assert!(!debug.contains(JWT) && !debug.contains(KEY), "{debug}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = Settings::load_with_env(None, env(&[("KEEL__SERVER__PROT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let err = Settings::load_with_env(Some(Path::new("/nonexistent/keel.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/keel.toml"), "{err}");
    }

    #[test]
    fn the_effective_configuration_prints_as_toml_that_loads_again() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let text = settings.to_redacted_toml().unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let again = Settings::load_with_env(Some(file.path()), env(&[])).unwrap();
        assert_eq!(again.server.port, settings.server.port);
    }
}
