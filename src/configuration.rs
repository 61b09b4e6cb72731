//! Typed settings, layered: embedded `config/default.toml`, then an optional file, then
//! `KEEL__SECTION__KEY` environment variables.
//!
//! Every check names the key it failed on, so an operator knows what to fix without reading code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;

use config::{Config, Environment as EnvSource, File, FileFormat};
use keel_actors::vault::MasterKey;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The embedded defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

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
    /// Recording market data to files.
    pub record: RecordSettings,
    /// Backtests over HTTP.
    pub backtests: BacktestSettings,
    /// Actors' mailbox capacities.
    pub mailboxes: MailboxSettings,
    /// Operator endpoints (`keel backup`).
    #[serde(default)]
    pub admin: AdminSettings,
}

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

/// `[backtests]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BacktestSettings {
    /// Worker threads running backtests; 0 means half the cores, at least 1.
    pub workers: usize,
    /// Backtests waiting for a worker; more answer 503.
    pub queue: usize,
    /// Backtests one user may have queued or running at once; more answer 429.
    pub max_per_user: usize,
    /// Finished backtests kept (in memory) per user.
    pub keep_finished: usize,
    /// Largest uploaded trade file, in bytes; larger uploads answer 413.
    pub max_upload_bytes: u64,
    /// Uploaded files kept per user; older ones are deleted.
    pub max_uploads_per_user: usize,
}

/// `[mailboxes]`: how many messages each actor's bounded mailbox holds. Past it a `try_send`
/// fails: feeds conflate or drop market data, `ask` answers 503 `OVERLOADED`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSettings {
    /// The root and feeds supervisors (lifecycle and status messages).
    pub supervisor: usize,
    /// The bot supervisor, which every bot request passes.
    pub bot_supervisor: usize,
    /// Each running bot (market data and commands).
    pub bot: usize,
    /// Each venue's feed (subscriptions and market requests).
    pub feed: usize,
    /// The vault (credentials and signatures).
    pub vault: usize,
    /// Each connected user's session (bot events).
    pub session: usize,
    /// Each WebSocket connection (session events, subscription answers).
    pub ws_connection: usize,
    /// Each HTTP worker thread's market hub (market events for its connections).
    pub ws_hub: usize,
}

/// Smallest mailbox accepted: actix's own default. 0 would make actix's mailbox unbounded.
const MIN_MAILBOX: usize = 16;
/// Largest mailbox accepted, per actor.
const MAX_MAILBOX: usize = 1 << 20;

impl MailboxSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        for (key, value) in [
            ("mailboxes.supervisor", self.supervisor),
            ("mailboxes.bot_supervisor", self.bot_supervisor),
            ("mailboxes.bot", self.bot),
            ("mailboxes.feed", self.feed),
            ("mailboxes.vault", self.vault),
            ("mailboxes.session", self.session),
            ("mailboxes.ws_connection", self.ws_connection),
            ("mailboxes.ws_hub", self.ws_hub),
        ] {
            if !(MIN_MAILBOX..=MAX_MAILBOX).contains(&value) {
                return Err(invalid(
                    key,
                    format!("must be between {MIN_MAILBOX} and {MAX_MAILBOX} messages"),
                ));
            }
        }
        Ok(())
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the operator endpoints (`GET /admin/backup`), at least 32 bytes; they
    /// are off when unset. A secret: in production from `KEEL__ADMIN__TOKEN` only.
    #[serde(default, serialize_with = "redact")]
    pub token: Option<SecretString>,
}

/// `[bots]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BotsSettings {
    /// Arbiter threads bots run on; 0 means one per CPU core.
    pub arbiters: usize,
    /// Bots one user may define.
    pub max_per_user: usize,
    /// Paper market orders without a quote fill at the last trade this many basis points worse.
    pub paper_slippage_bps: rust_decimal::Decimal,
    /// Most exposure (quote currency: position at mark plus open orders that add to it) one
    /// user's bots may hold together; 0 means no limit.
    pub max_user_exposure: rust_decimal::Decimal,
}

/// `[protection]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionSettings {
    /// Requests served at once; more answer 503 `OVERLOADED` at once (health checks exempt).
    pub max_in_flight: usize,
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

/// `[ws]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Connections allowed in total.
    pub max_connections: usize,
    /// Connections allowed per user.
    pub max_per_user: usize,
    /// Channels one connection may subscribe to.
    pub max_subscriptions: usize,
    /// How long an unauthenticated connection may wait before sending `auth`, ms.
    pub auth_timeout_ms: u64,
    /// Seconds between server pings.
    pub ping_secs: u64,
    /// Seconds without a pong (or any frame) after which the connection is closed.
    pub pong_timeout_secs: u64,
    /// Frames a connection may have waiting for its socket; past it market data is dropped (and
    /// `lagged` sent) and a bot event closes the connection with 1013.
    pub outbound_queue: usize,
    /// Seconds a client may stay behind (dropping market data) before it is disconnected (1013).
    pub max_lag_secs: u64,
}

/// `[feed]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSettings {
    /// Seconds a symbol stays tracked after the last market request.
    pub warm_secs: u64,
    /// Milliseconds a market request waits for the first data.
    pub first_data_wait_ms: u64,
}

/// `[venues]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VenuesSettings {
    /// The simulated venue.
    pub sim: SimVenueSettings,
    /// Binance spot.
    pub binance: BinanceVenueSettings,
    /// Binance USD-M futures.
    pub binance_futures: BinanceVenueSettings,
}

/// `[venues.binance]`, `[venues.binance_futures]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BinanceVenueSettings {
    /// Whether the feed connects.
    pub enabled: bool,
    /// Testnet presets.
    pub testnet: bool,
    /// Combined-stream endpoint; empty for the preset.
    pub ws_url: String,
    /// REST endpoint (exchange info, signed orders); empty for the preset.
    pub rest_url: String,
}

/// `[venues.sim]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimVenueSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// Symbols it lists; from the environment as a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub symbols: Vec<String>,
    /// Random-walk seed.
    pub seed: u64,
    /// Trades per second per watched symbol.
    pub trades_per_sec: u32,
    /// A file (recording, Keel CSV or Binance dump) to replay instead of the random walk; empty
    /// for the random walk.
    pub replay: PathBuf,
    /// Replay pace in events per second; 0 = as fast as subscribers take them.
    pub replay_events_per_sec: u32,
}

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
}

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

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub host: String,
    /// Listen port; 0 picks a free one (tests).
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Deadline for a request to an actor, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long graceful shutdown waits for in-flight requests, in seconds.
    pub shutdown_timeout_secs: u64,
    /// Kernel send buffer of each accepted connection, in bytes (`SO_SNDBUF`); 0 leaves the OS
    /// default, which grows to megabytes.
    pub socket_send_buffer_bytes: usize,
    /// How long a connection's sent data may stay unacknowledged, or its unsent data wait on a
    /// peer that advertises no room, before the kernel drops it (`TCP_USER_TIMEOUT`, Linux), in
    /// seconds; 0 leaves the OS default (no limit while the peer acknowledges window probes).
    pub socket_user_timeout_secs: u64,
}

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
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Level or filter directives.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty in development, JSON in production.
    Auto,
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[supervisor]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The period, in seconds.
    pub period_secs: u64,
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
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { key, problem: problem.into() }
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

    /// Checks ranges and consistency that types alone cannot express.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.validate_record_and_backtests()?;
        let server = &self.server;
        if server.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        self.listen_address()?;
        if server.workers > 256 {
            return Err(invalid("server.workers", "must be at most 256 (0 = one per core)"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&server.max_body_bytes) {
            return Err(invalid("server.max_body_bytes", "must be between 1024 and 67108864"));
        }
        if !(10..=120_000).contains(&server.request_timeout_ms) {
            return Err(invalid("server.request_timeout_ms", "must be between 10 and 120000"));
        }
        if server.shutdown_timeout_secs > 6 {
            // Keel promises to exit within 10 s of SIGTERM; the actors and the final flush need
            // the rest.
            return Err(invalid(
                "server.shutdown_timeout_secs",
                "must be at most 6 so that shutdown completes within 10 s",
            ));
        }
        let send_buffer = server.socket_send_buffer_bytes;
        if send_buffer != 0 && !(4096..=16 * 1024 * 1024).contains(&send_buffer) {
            return Err(invalid(
                "server.socket_send_buffer_bytes",
                "must be 0 (the OS default) or between 4096 and 16777216",
            ));
        }
        if server.socket_user_timeout_secs > 3_600 {
            return Err(invalid(
                "server.socket_user_timeout_secs",
                "must be 0 (the OS default) or at most 3600",
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        if !(1..=65_536).contains(&self.store.cache_capacity_mb) {
            return Err(invalid("store.cache_capacity_mb", "must be between 1 and 65536"));
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("is not a valid filter: {err}")));
        }
        if self.supervisor.max_restarts == 0 {
            return Err(invalid("supervisor.max_restarts", "must be at least 1"));
        }
        if !(1..=3600).contains(&self.supervisor.period_secs) {
            return Err(invalid("supervisor.period_secs", "must be between 1 and 3600"));
        }
        let auth = &self.auth;
        if auth.issuer.trim().is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if auth.audience.trim().is_empty() {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        if !(60..=86_400).contains(&auth.access_ttl_secs) {
            return Err(invalid("auth.access_ttl_secs", "must be between 60 and 86400"));
        }
        if auth.refresh_ttl_secs < auth.access_ttl_secs || auth.refresh_ttl_secs > 31_536_000 {
            return Err(invalid(
                "auth.refresh_ttl_secs",
                "must be at least auth.access_ttl_secs and at most 31536000",
            ));
        }
        if auth.leeway_secs > 300 {
            return Err(invalid("auth.leeway_secs", "must be at most 300"));
        }
        if auth.login_attempts_per_minute_per_account == 0 {
            return Err(invalid(
                "auth.login_attempts_per_minute_per_account",
                "must be at least 1",
            ));
        }
        if auth.login_attempts_per_minute_per_ip == 0 {
            return Err(invalid("auth.login_attempts_per_minute_per_ip", "must be at least 1"));
        }
        if auth.hash_concurrency > 64 {
            return Err(invalid("auth.hash_concurrency", "must be at most 64 (0 = automatic)"));
        }
        if !(1..=86_400).contains(&self.feed.warm_secs) {
            return Err(invalid("feed.warm_secs", "must be between 1 and 86400"));
        }
        if self.bots.arbiters > 256 {
            return Err(invalid("bots.arbiters", "must be at most 256 (0 = one per core)"));
        }
        if !(1..=100_000).contains(&self.bots.max_per_user) {
            return Err(invalid("bots.max_per_user", "must be between 1 and 100000"));
        }
        if self.bots.paper_slippage_bps < rust_decimal::Decimal::ZERO
            || self.bots.paper_slippage_bps > rust_decimal::Decimal::from(1000)
        {
            return Err(invalid("bots.paper_slippage_bps", "must be between 0 and 1000"));
        }
        let protection = &self.protection;
        if protection.max_in_flight == 0
            || protection.per_ip_per_minute == 0
            || protection.per_user_per_minute == 0
        {
            return Err(invalid(
                "protection",
                "max_in_flight, per_ip_per_minute and per_user_per_minute must be positive",
            ));
        }
        if let Some(bad) = protection
            .trusted_proxies
            .iter()
            .find(|p| p.trim().parse::<std::net::IpAddr>().is_err())
        {
            return Err(invalid(
                "protection.trusted_proxies",
                format!("`{bad}` is not an IP address"),
            ));
        }
        if let Some(bad) = protection
            .cors_allowed_origins
            .iter()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return Err(invalid(
                "protection.cors_allowed_origins",
                format!("`{bad}` is not an origin like https://app.example.com"),
            ));
        }
        let ws = &self.ws;
        if ws.max_connections == 0 || ws.max_per_user == 0 || ws.max_subscriptions == 0 {
            return Err(invalid(
                "ws",
                "max_connections, max_per_user and max_subscriptions must be positive",
            ));
        }
        if !(100..=60_000).contains(&ws.auth_timeout_ms) {
            return Err(invalid("ws.auth_timeout_ms", "must be between 100 and 60000"));
        }
        if ws.ping_secs == 0 || ws.pong_timeout_secs <= ws.ping_secs {
            return Err(invalid("ws.pong_timeout_secs", "must be longer than ws.ping_secs (> 0)"));
        }
        if !(1..=3600).contains(&ws.max_lag_secs) {
            return Err(invalid("ws.max_lag_secs", "must be between 1 and 3600"));
        }
        if !(4..=65_536).contains(&ws.outbound_queue) {
            return Err(invalid("ws.outbound_queue", "must be between 4 and 65536"));
        }
        if self.bots.max_user_exposure < rust_decimal::Decimal::ZERO {
            return Err(invalid("bots.max_user_exposure", "must be 0 (no limit) or positive"));
        }
        if !(10..=30_000).contains(&self.feed.first_data_wait_ms) {
            return Err(invalid("feed.first_data_wait_ms", "must be between 10 and 30000"));
        }
        let sim = &self.venues.sim;
        if sim.enabled && sim.symbols.is_empty() {
            return Err(invalid("venues.sim.symbols", "must list at least one symbol"));
        }
        if let Some(bad) =
            sim.symbols.iter().find(|s| keel_core::market::Symbol::parse(s).is_none())
        {
            return Err(invalid(
                "venues.sim.symbols",
                format!("`{bad}` is not a symbol (2-20 letters and digits)"),
            ));
        }
        for (key, venue) in [
            ("venues.binance.ws_url", &self.venues.binance),
            ("venues.binance_futures.ws_url", &self.venues.binance_futures),
        ] {
            let url = venue.ws_url.trim();
            if !(url.is_empty() || url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(invalid(
                    key,
                    "must be a ws:// or wss:// URL (or empty for the preset)",
                ));
            }
        }
        for (key, venue) in [
            ("venues.binance.rest_url", &self.venues.binance),
            ("venues.binance_futures.rest_url", &self.venues.binance_futures),
        ] {
            let url = venue.rest_url.trim();
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    key,
                    "must be an http:// or https:// URL (or empty for the preset)",
                ));
            }
        }
        if sim.trades_per_sec > 100_000 {
            return Err(invalid("venues.sim.trades_per_sec", "must be at most 100000"));
        }
        if !(1..=1_000_000).contains(&self.vault.max_credentials_per_user) {
            return Err(invalid("vault.max_credentials_per_user", "must be between 1 and 1000000"));
        }
        self.sink.postgres.validate()?;
        self.mailboxes.validate()?;
        Ok(())
    }

    /// Checks the secrets: well-formed wherever they come from, and in production present and
    /// taken from the environment (`from_env` says which were).
    fn validate_secrets(&self, from_env: &[(&'static str, bool)]) -> Result<(), SettingsError> {
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose_secret().len() < MIN_JWT_SECRET_BYTES
        {
            return Err(invalid(
                "auth.jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            ));
        }
        if let Some(token) = &self.admin.token
            && token.expose_secret().len() < MIN_JWT_SECRET_BYTES
        {
            return Err(invalid(
                "admin.token",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            ));
        }
        for (key, value) in [
            ("vault.master_key", &self.vault.master_key),
            ("vault.previous_master_key", &self.vault.previous_master_key),
        ] {
            if let Some(value) = value
                && let Err(err) = MasterKey::from_base64(value)
            {
                let problem = err.to_string();
                let problem = problem.strip_prefix("vault.master_key ").unwrap_or(&problem);
                return Err(invalid(key, format!("{problem} (expected base64 of 32 bytes)")));
            }
        }
        if self.environment != Environment::Production {
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

    /// Checks `[record]`, `[backtests]` and the sim venue's replay.
    fn validate_record_and_backtests(&self) -> Result<(), SettingsError> {
        if !(1..=10_000_000).contains(&self.record.queue) {
            return Err(invalid("record.queue", "must be between 1 and 10000000"));
        }
        let bt = &self.backtests;
        if bt.workers > 256 {
            return Err(invalid("backtests.workers", "must be at most 256 (0 = half the cores)"));
        }
        if !(1..=100_000).contains(&bt.queue) {
            return Err(invalid("backtests.queue", "must be between 1 and 100000"));
        }
        if !(1..=1000).contains(&bt.max_per_user) {
            return Err(invalid("backtests.max_per_user", "must be between 1 and 1000"));
        }
        if !(1..=10_000).contains(&bt.keep_finished) {
            return Err(invalid("backtests.keep_finished", "must be between 1 and 10000"));
        }
        if !(1024..=(16u64 << 30)).contains(&bt.max_upload_bytes) {
            return Err(invalid(
                "backtests.max_upload_bytes",
                "must be between 1024 and 17179869184 (16 GiB)",
            ));
        }
        if !(1..=10_000).contains(&bt.max_uploads_per_user) {
            return Err(invalid("backtests.max_uploads_per_user", "must be between 1 and 10000"));
        }
        if self.venues.sim.replay_events_per_sec > 10_000_000 {
            return Err(invalid("venues.sim.replay_events_per_sec", "must be at most 10000000"));
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
        let host = match self.server.host.as_str() {
            "localhost" => "127.0.0.1",
            other => other,
        };
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| invalid("server.host", format!("`{host}` is not an IP address")))?;
        Ok(SocketAddr::new(ip, self.server.port))
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
        if let Some(config) = self.sink_config() {
            config.connection().map_err(|err| invalid("sink.postgres.url", detail(err)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
            (&[("KEEL__RECORD__QUEUE", "0")], "record.queue"),
            (&[("KEEL__BACKTESTS__MAX_PER_USER", "0")], "backtests.max_per_user"),
            (&[("KEEL__BACKTESTS__MAX_UPLOAD_BYTES", "10")], "backtests.max_upload_bytes"),
            (&[("KEEL__MAILBOXES__BOT", "0")], "mailboxes.bot"),
            (&[("KEEL__MAILBOXES__SESSION", "15")], "mailboxes.session"),
            (&[("KEEL__MAILBOXES__WS_HUB", "1048577")], "mailboxes.ws_hub"),
        ];
        for (vars, key) in cases {
            let err = Settings::load_with_env(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: `{err}` does not name `{key}`");
        }
    }

    #[test]
    fn mailbox_caps_default_to_the_built_in_sizes_and_follow_the_environment() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let m = &settings.mailboxes;
        let defaults = [m.supervisor, m.bot_supervisor, m.bot, m.feed, m.vault, m.session];
        assert_eq!(defaults, [256, 1024, 256, 4096, 1024, 4096]);
        assert_eq!((m.ws_connection, m.ws_hub), (4096, 65_536));
        assert_eq!(m.supervisor, keel_actors::supervisor::DEFAULT_MAILBOX);
        assert_eq!(m.bot, keel_actors::bot::actor::BOT_MAILBOX);
        assert_eq!(m.feed, keel_actors::feed::DEFAULT_MAILBOX);
        assert_eq!(m.vault, keel_actors::vault::DEFAULT_MAILBOX);
        assert_eq!(m.session, keel_actors::session::SESSION_MAILBOX);

        let vars =
            env(&[("KEEL__MAILBOXES__BOT", "128"), ("KEEL__MAILBOXES__WS_CONNECTION", "64")]);
        let settings = Settings::load_with_env(None, vars).unwrap();
        assert_eq!((settings.mailboxes.bot, settings.mailboxes.ws_connection), (128, 64));
        assert_eq!(settings.mailboxes.feed, 4096);
        let err = Settings::load_with_env(None, env(&[("KEEL__MAILBOXES__BOT", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 16 and 1048576"), "{err}");
    }

    const JWT: &str = "0123456789abcdef0123456789abcdef";
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

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
        ];
        for (vars, key) in cases {
            let err = Settings::load_with_env(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{vars:?}: `{err}` does not name `{key}`");
            assert!(!err.contains("hunter2"), "the URL leaked: {err}");
        }
    }
}
