//! The optional Postgres sink: a copy of every order change, fill and journal line in Postgres,
//! for reporting and analytics, without making Postgres part of the trading path.
//!
//! - [`outbox`]: bot writes put a copy of each change in the sled `outbox` tree, in the same
//!   transaction as the change itself;
//! - [`pg`]: the sink's own Postgres schema (versioned migrations) and the batch insert;
//! - [`actor`]: `PgSink`, a supervised actor that drains the outbox in batches: one Postgres
//!   transaction per batch with `ON CONFLICT DO NOTHING`, and the rows are removed from sled only
//!   after `COMMIT` succeeded;
//! - [`health`]: the sink's state for readiness and metrics.
//!
//! Nothing is lost and nothing is duplicated across Postgres outages: a batch that did not commit
//! stays in the outbox and is sent again; a batch that committed but whose answer was lost is sent
//! again too, and every table's primary key (from the entity's own ids) makes the repeat a no-op.

pub mod actor;
pub mod health;
pub mod outbox;
pub mod pg;
pub mod tls;

use std::time::Duration;

pub use actor::{PgSink, PgSinkSpec};
pub use health::{SinkHealth, SinkReport, SinkState};
pub use outbox::{Outbox, OutboxRecord, RecordKind};
use secrecy::{ExposeSecret, SecretString};
pub use tls::PgTls;
use tokio_postgres::config::SslMode;

use crate::store::StoreError;

/// The supervisor child's name, as readiness and metrics show it.
pub const SINK_CHILD_NAME: &str = "pg_sink";

/// How the sink connects and drains.
#[derive(Debug, Clone)]
pub struct PgSinkConfig {
    /// `postgres://user:password@host:port/db` (a secret: it may hold a password).
    pub url: SecretString,
    /// Schema the sink's tables live in; created when missing.
    pub schema: String,
    /// Most connections in the pool.
    pub pool_size: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// How long to wait for a free pooled connection.
    pub wait_timeout: Duration,
    /// How long one batch (its whole transaction) may take before it is abandoned and retried.
    pub batch_timeout: Duration,
    /// Most outbox rows per Postgres transaction.
    pub batch_size: usize,
    /// How often an empty outbox is looked at again.
    pub poll_interval: Duration,
    /// Longest wait between retries after errors (the waits grow from 100 ms, with jitter).
    pub max_backoff: Duration,
    /// Plain TCP, or TLS verified against a CA file and the host name.
    pub tls: PgTls,
}

/// What can go wrong in the sink, split by whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration cannot work (bad URL, schema name, TLS demanded): retrying will not help.
    #[error("invalid sink.postgres configuration: {0}")]
    Config(String),
    /// Postgres refused or failed a statement, or the connection broke.
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool (Postgres down, pool exhausted).
    #[error("connection pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A step took longer than its deadline (a connection that hangs).
    #[error("{what} took longer than {after:?}")]
    Timeout {
        /// The step.
        what: &'static str,
        /// Its deadline.
        after: Duration,
    },
    /// Postgres holds a sink schema newer than this binary knows.
    #[error("the Postgres schema is at version {found}; this Keel knows up to {supported}")]
    SchemaTooNew {
        /// Version recorded in Postgres.
        found: i32,
        /// Newest version this binary writes.
        supported: i32,
    },
    /// Another Keel store feeds this schema: its ids would collide with ours.
    #[error(
        "schema {schema} is fed by another Keel (store {owner}); give each Keel its own \
         sink.postgres.schema"
    )]
    ClaimedByAnother {
        /// The schema.
        schema: String,
        /// The store id that claimed it.
        owner: String,
    },
    /// Reading or trimming the outbox failed.
    #[error("outbox")]
    Store(#[from] StoreError),
    /// A blocking task (outbox read or trim) did not finish.
    #[error("outbox task failed: {0}")]
    Task(String),
}

impl SinkError {
    /// Whether trying again later can succeed without a person changing something.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            SinkError::Config(_)
                | SinkError::ClaimedByAnother { .. }
                | SinkError::SchemaTooNew { .. }
        )
    }

    /// The message with its causes, `outer: inner: innermost`, for logs and readiness (the
    /// causes say *why*: "connection refused", the server's own error).
    pub fn detail(&self) -> String {
        let mut text = with_causes(self);
        if let Some(hint) = self.certificate_error().and_then(certificate_hint) {
            text.push_str(" (");
            text.push_str(hint);
            text.push(')');
        }
        text
    }

    /// The rustls error behind a failed TLS handshake, if that is what this is.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(cause) = source {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            // An io::Error's `source` skips the error it wraps: look inside.
            if let Some(tls) = cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(tls);
            }
            source = cause.source();
        }
        None
    }

    /// The reason the server's certificate was refused, if it was.
    fn certificate_error(&self) -> Option<&rustls::CertificateError> {
        match self.tls_error()? {
            rustls::Error::InvalidCertificate(err) => Some(err),
            _ => None,
        }
    }

    /// A short label for metrics (`keel_sink_errors_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Config(_) => "config",
            _ if self.tls_error().is_some() => "tls",
            SinkError::Postgres(_) => "postgres",
            SinkError::Pool(_) => "connect",
            SinkError::Timeout { .. } => "timeout",
            SinkError::SchemaTooNew { .. } | SinkError::ClaimedByAnother { .. } => "schema",
            SinkError::Store(_) | SinkError::Task(_) => "outbox",
        }
    }
}

/// An error's message with its causes, `outer: inner: innermost` (a cause that a wrapper's own
/// message already ends with is not repeated).
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What a person should look at when the server's certificate is refused.
fn certificate_hint(err: &rustls::CertificateError) -> Option<&'static str> {
    use rustls::CertificateError as E;
    match err {
        E::UnknownIssuer | E::BadSignature => {
            Some("the server's certificate does not chain to a CA in sink.postgres.ca_file")
        }
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            Some("the server's certificate does not name the host of sink.postgres.url")
        }
        E::Expired | E::ExpiredContext { .. } | E::NotValidYet | E::NotValidYetContext { .. } => {
            Some("the server's certificate is outside its validity period")
        }
        _ => None,
    }
}

/// Longest schema name accepted (Postgres identifiers are at most 63 bytes).
const MAX_SCHEMA_LEN: usize = 63;

impl PgSinkConfig {
    /// Parses the URL into a connection configuration and checks the schema name. With
    /// `verify-full` TLS is required (the URL may not say `sslmode=disable`).
    ///
    /// # Errors
    /// [`SinkError::Config`] saying what is wrong, never echoing the URL (it may hold a password).
    pub fn connection(&self) -> Result<tokio_postgres::Config, SinkError> {
        check_schema(&self.schema)?;
        connection_config(&self.url, &self.tls, self.connect_timeout)
    }
}

/// Parses a Postgres URL into a connection configuration for `tls` (shared by the sink and the
/// cluster's system of record). With `verify-full` TLS is required (the URL may not say
/// `sslmode=disable`).
///
/// # Errors
/// [`SinkError::Config`] saying what is wrong, never echoing the URL (it may hold a password).
pub fn connection_config(
    url: &SecretString,
    tls: &PgTls,
    connect_timeout: Duration,
) -> Result<tokio_postgres::Config, SinkError> {
    let mut config = parse_url(url.expose_secret())?;
    if let PgTls::VerifyFull { .. } = tls {
        if config.get_ssl_mode() == SslMode::Disable {
            return Err(SinkError::Config(
                "the URL says sslmode=disable but the configured sslmode is verify-full".to_owned(),
            ));
        }
        config.ssl_mode(SslMode::Require);
    }
    config.connect_timeout(connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("keel");
    }
    Ok(config)
}

/// Checks a Postgres URL without connecting: it parses, names a host, and does not ask for TLS
/// itself. TLS is `sslmode = "verify-full"` with `ca_file` (`[sink.postgres]`, or the
/// `postgres_` keys of `[cluster]`); the
/// URL's `sslmode=require` (TLS that trusts any certificate, in libpq) is refused rather than
/// quietly run with or without verification.
///
/// # Errors
/// [`SinkError::Config`] saying what is wrong, without the URL itself.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, SinkError> {
    // The parser's own message may quote the text it choked on, password included: not shown.
    let config: tokio_postgres::Config = url.parse().map_err(|_: tokio_postgres::Error| {
        SinkError::Config(
            "the URL does not parse (expected postgres://user:password@host:port/database)"
                .to_owned(),
        )
    })?;
    if config.get_hosts().is_empty() {
        return Err(SinkError::Config("the URL names no host".to_owned()));
    }
    if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(SinkError::Config(
            "sslmode in the URL may be disable or prefer: for TLS set the section's sslmode = \
             \"verify-full\" and its ca_file (the server's certificate is always verified)"
                .to_owned(),
        ));
    }
    Ok(config)
}

/// Checks a schema name: lower-case letters, digits and `_`, not starting with a digit, so it
/// can be written into SQL without quoting.
///
/// # Errors
/// [`SinkError::Config`] saying what is wrong.
pub fn check_schema(schema: &str) -> Result<(), SinkError> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= MAX_SCHEMA_LEN {
        Ok(())
    } else {
        Err(SinkError::Config(format!(
            "schema `{schema}` must be 1-{MAX_SCHEMA_LEN} characters of a-z, 0-9 and _, \
             not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_echoing_them() {
        assert!(parse_url("postgres://keel@127.0.0.1:5432/keel").is_ok());
        assert!(parse_url("postgres://keel@localhost/keel?sslmode=disable").is_ok());
        for bad in [
            "mysql://root:hunter2@localhost/x",
            "postgres://keel:hunter2@localhost/keel?sslmode=require",
            "not a url at all hunter2",
        ] {
            let err = parse_url(bad).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn verify_full_requires_tls_and_the_url_cannot_turn_it_off() {
        let config = |url: &str, tls: PgTls| PgSinkConfig {
            url: SecretString::from(url.to_owned()),
            schema: "keel".to_owned(),
            pool_size: 1,
            connect_timeout: Duration::from_secs(1),
            wait_timeout: Duration::from_secs(1),
            batch_timeout: Duration::from_secs(1),
            batch_size: 1,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            tls,
        };
        let verify = || PgTls::VerifyFull { ca_file: "/etc/keel/ca.pem".into() };
        let plain = config("postgres://keel@db.example.com/keel", PgTls::Disable);
        assert_eq!(plain.connection().unwrap().get_ssl_mode(), SslMode::Prefer);
        for url in ["postgres://keel@db.example.com/keel", "host=db sslmode=prefer user=keel"] {
            let tls = config(url, verify()).connection().unwrap();
            assert_eq!(tls.get_ssl_mode(), SslMode::Require, "{url}");
        }
        let err = config("postgres://keel:hunter2@db/keel?sslmode=disable", verify())
            .connection()
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode=disable") && !err.contains("hunter2"), "{err}");
        let err = config("postgres://keel@db/keel?sslmode=require", verify())
            .connection()
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn the_detail_names_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = SinkError::Store(StoreError::Sled(sled::Error::Io(io)));
        assert_eq!(err.detail(), "outbox: storage error: IO error: connection refused");
    }

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        for good in ["keel", "_x", "keel_test_1a2b"] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        for bad in ["", "1keel", "Keel", "keel; drop table x", "a\"b", &"k".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
