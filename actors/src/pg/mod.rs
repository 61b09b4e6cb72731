//! Postgres as the system of record in cluster mode (`[cluster] postgres_url`): the pool every
//! node shares its records through, the errors, and the shared versioned schema
//! ([`migrations`]). Today identity lives here (`identity::pg`); the other areas are to follow
//! the same pattern (docs/CLUSTER.md, "What comes next").
//!
//! Every call runs on the caller's async task through the pool, never on an actor thread with
//! `block_on`, and under a deadline ([`PgRecord::timed`]): a Postgres that hangs makes the call
//! fail with [`RecordError::Timeout`] (503 at the API) instead of holding the request.

pub mod fence;
pub mod migrations;
pub mod text;

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use secrecy::SecretString;

use crate::sink::pg::{PoolLimits, pool_for};
use crate::sink::{PgTls, SinkError, connection_config};

/// Most pooled connections per node.
pub const POOL_SIZE: usize = 8;
/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call may wait for a free pooled connection.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call (its whole transaction) may take before it is abandoned. A transaction
/// abandoned before its `COMMIT` was sent is rolled back; one abandoned while its `COMMIT` was
/// on the wire may have committed, so a caller never takes the error for "not written" (the
/// bot store, for one, stops the bot, whose restart reloads what Postgres holds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the system of record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// `postgres://user:password@host:port/database` (a secret: it may hold a password).
    pub url: SecretString,
    /// Plain TCP, or TLS verified against a CA file and the host name.
    pub tls: PgTls,
}

/// What can go wrong with the system of record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The configuration cannot work (bad URL, unusable CA file).
    #[error("invalid cluster.postgres configuration: {0}")]
    Config(String),
    /// Postgres refused or failed a statement, or the connection broke.
    #[error("postgres")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool (Postgres down, pool exhausted).
    #[error("postgres connection pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A call took longer than its deadline.
    #[error("postgres: {what} took longer than {after:?}")]
    Timeout {
        /// The call.
        what: &'static str,
        /// Its deadline.
        after: Duration,
    },
    /// Postgres holds a schema newer than this binary knows: a newer Keel migrated it.
    #[error(
        "the Postgres system of record is at schema version {found}; this Keel knows up to \
         {supported}: run the newer Keel (or restore a database of this version)"
    )]
    SchemaTooNew {
        /// Version recorded in `keel_schema`.
        found: i32,
        /// Newest version this binary writes.
        supported: i32,
    },
    /// A value does not fit Postgres's `bigint` (an id past 2^63) or a stored value is wrong.
    #[error("a stored value is out of range: {0}")]
    Corrupt(String),
}

impl From<SinkError> for RecordError {
    fn from(err: SinkError) -> Self {
        match err {
            SinkError::Postgres(err) => RecordError::Postgres(err),
            SinkError::Pool(err) => RecordError::Pool(err),
            other => RecordError::Config(other.to_string()),
        }
    }
}

impl RecordError {
    /// Whether Postgres could not be reached or did not answer in time (503, try again), as
    /// opposed to a refused statement or a bad value (a bug: 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            RecordError::Pool(_) | RecordError::Timeout { .. } => true,
            // A broken connection (closed, or an I/O error under the client's own), not the
            // server's verdict on a statement or a value that does not convert.
            RecordError::Postgres(err) => {
                err.is_closed()
                    || std::error::Error::source(err)
                        .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some())
            }
            _ => false,
        }
    }

    /// The SQLSTATE of a statement Postgres refused.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            RecordError::Postgres(err) => err.code(),
            _ => None,
        }
    }

    /// The message with its causes, `outer: inner: innermost`, for logs and readiness.
    pub fn detail(&self) -> String {
        crate::sink::with_causes(self)
    }
}

/// The pooled client of the system of record; cloning shares the pool.
#[derive(Clone)]
pub struct PgRecord {
    pool: Pool,
}

impl std::fmt::Debug for PgRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRecord").field("status", &self.pool.status()).finish()
    }
}

impl PgRecord {
    /// The pool, built with the sink's connection code (URL checks, `verify-full` TLS). It
    /// connects lazily: nothing is sent to Postgres here.
    ///
    /// # Errors
    /// [`RecordError::Config`] when the URL or the CA file cannot work.
    pub fn new(config: &RecordConfig) -> Result<Self, RecordError> {
        let connection = connection_config(&config.url, &config.tls, CONNECT_TIMEOUT)?;
        let limits = PoolLimits {
            size: POOL_SIZE,
            connect_timeout: CONNECT_TIMEOUT,
            wait_timeout: WAIT_TIMEOUT,
        };
        Ok(Self { pool: pool_for(connection, &config.tls, limits)? })
    }

    /// Builds the pool and brings the shared schema up to date ([`migrations::migrate`]).
    ///
    /// # Errors
    /// The configuration cannot work, Postgres cannot be reached, or its schema is newer than
    /// this binary.
    pub async fn connect(config: &RecordConfig) -> Result<Self, RecordError> {
        let record = Self::new(config)?;
        migrations::migrate(&record).await?;
        Ok(record)
    }

    /// A pooled connection.
    ///
    /// # Errors
    /// [`RecordError::Pool`] when none can be had within [`WAIT_TIMEOUT`].
    pub async fn client(&self) -> Result<deadpool_postgres::Client, RecordError> {
        Ok(self.pool.get().await?)
    }

    /// Runs one call under [`CALL_TIMEOUT`].
    ///
    /// # Errors
    /// The call's own error, or [`RecordError::Timeout`].
    pub async fn timed<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, RecordError>>,
    ) -> Result<T, RecordError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(RecordError::Timeout { what, after: CALL_TIMEOUT }),
        }
    }

    /// Checks that Postgres answers (readiness).
    ///
    /// # Errors
    /// Postgres cannot be reached or did not answer within [`CALL_TIMEOUT`].
    pub async fn ping(&self) -> Result<(), RecordError> {
        self.timed("ping", async {
            self.client().await?.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }
}

/// An id as Postgres's `bigint`.
///
/// # Errors
/// [`RecordError::Corrupt`] past 2^63.
pub fn to_db(id: u64) -> Result<i64, RecordError> {
    i64::try_from(id).map_err(|_| RecordError::Corrupt(format!("id {id} does not fit bigint")))
}

/// A `bigint` as an id or a time.
///
/// # Errors
/// [`RecordError::Corrupt`] for a negative value.
pub fn from_db(value: i64) -> Result<u64, RecordError> {
    u64::try_from(value).map_err(|_| RecordError::Corrupt(format!("negative value {value}")))
}

/// `url` with its database replaced by `name` (a test's or a load run's own database on the
/// same server).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let base = match rest.find('/') {
        Some(slash) => &base[..base.len() - rest.len() + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_or_slow_postgres_is_unavailable() {
        let timeout = RecordError::Timeout { what: "users.get", after: CALL_TIMEOUT };
        assert!(timeout.is_unavailable());
        for bug in [
            RecordError::Config("bad".into()),
            RecordError::SchemaTooNew { found: 9, supported: 1 },
            RecordError::Corrupt("negative value -1".into()),
        ] {
            assert!(!bug.is_unavailable(), "{bug}");
        }
        assert!(matches!(to_db(u64::MAX), Err(RecordError::Corrupt(_))));
        assert!(matches!(from_db(-1), Err(RecordError::Corrupt(_))));
        assert_eq!((to_db(7).unwrap(), from_db(7).unwrap()), (7, 7));
    }

    #[test]
    fn a_url_that_cannot_work_is_refused_without_echoing_it() {
        let config = |url: &str| RecordConfig {
            url: SecretString::from(url.to_owned()),
            tls: PgTls::Disable,
        };
        let err = PgRecord::new(&config("mysql://root:hunter2@db/keel")).unwrap_err();
        assert!(matches!(err, RecordError::Config(_)) && !err.to_string().contains("hunter2"));
        let err = PgRecord::new(&config("postgres://k:hunter2@db/keel?sslmode=require"));
        assert!(err.unwrap_err().to_string().contains("verify-full"));
        assert!(PgRecord::new(&config("postgres://keel@127.0.0.1:1/keel")).is_ok(), "lazy");
    }
}

#[cfg(test)]
pub(crate) mod test_db {
    //! A database of the test's own on the Postgres at `KEEL_TEST_POSTGRES_URL`.

    use super::*;

    /// Where the tests find Postgres.
    const URL_VAR: &str = "KEEL_TEST_POSTGRES_URL";

    /// A fresh database, dropped by [`TestDb::drop_db`].
    pub struct TestDb {
        admin: tokio_postgres::Client,
        /// Its name, `keeltest_<random>`.
        pub name: String,
        /// How to reach it.
        pub config: RecordConfig,
    }

    impl TestDb {
        /// A fresh database, or `None` (and a line saying so) without `KEEL_TEST_POSTGRES_URL`.
        pub async fn create(test: &str) -> Option<Self> {
            let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty()) else {
                eprintln!("{test}: skipped: {URL_VAR} is not set (`.ci/run` sets it)");
                return None;
            };
            let (admin, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connects");
            tokio::spawn(connection);
            let name = format!("keeltest_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
            admin.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
            let url = with_database(&url, &name);
            let config = RecordConfig { url: SecretString::from(url), tls: PgTls::Disable };
            Some(Self { admin, name, config })
        }

        /// Drops the database (its pools must be gone, or `WITH (FORCE)` ends them).
        pub async fn drop_db(self) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            self.admin.batch_execute(&sql).await.unwrap();
        }
    }

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "k1"),
            "postgres://postgres@127.0.0.1:5432/k1"
        );
        assert_eq!(with_database("postgres://u@h", "k1"), "postgres://u@h/k1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "k1"),
            "postgres://u@h/k1?sslmode=disable"
        );
    }
}
