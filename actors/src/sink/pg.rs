//! The sink's side of Postgres: its pool, its own versioned schema, and the batch insert.
//!
//! Tables (in the configured schema), each keyed so that delivering a row twice is a no-op:
//! - `keel_order_updates`: every version of every order, `(bot_id, order_id, seq)`, where `seq`
//!   is the outbox id (it grows with each change); the view `keel_orders` shows the latest;
//! - `keel_fills`: `(bot_id, fill_id)`;
//! - `keel_bot_events`: the bots' journals, `(bot_id, event_id)`;
//! - `keel_outbox_rejects`: outbox rows this Keel could not read, kept raw for a person to look
//!   at rather than dropped or retried forever, `(outbox_id)`;
//! - `keel_schema_migrations`: the versions applied;
//! - `keel_sink_owner`: the one Keel store feeding this schema. Ids are unique only within a
//!   store, so a second Keel writing here would have its rows silently taken for repeats; the
//!   sink refuses a schema another store claimed.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::outbox::{OutboxRecord, RecordKind};
use super::{PgSinkConfig, PgTls, SinkError, tls};

/// Key of the advisory lock held while migrating, so two Keels sharing a database take turns.
const MIGRATION_LOCK: i64 = 0x6b65_656c_5f70_6773; // "keel_pgs"

/// One step of the sink's schema. `{schema}` is replaced with the configured schema name.
struct PgMigration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every step, oldest first. Applied ones are never edited: add a step instead.
const PG_MIGRATIONS: &[PgMigration] = &[PgMigration {
    version: 1,
    name: "orders, fills, bot events, rejects, owner",
    sql: r"
CREATE TABLE {schema}.keel_order_updates (
    bot_id      bigint      NOT NULL,
    order_id    bigint      NOT NULL,
    seq         bigint      NOT NULL,
    user_id     bigint,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, order_id, seq)
);
CREATE TABLE {schema}.keel_fills (
    bot_id      bigint      NOT NULL,
    fill_id     bigint      NOT NULL,
    user_id     bigint,
    outbox_id   bigint      NOT NULL,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, fill_id)
);
CREATE TABLE {schema}.keel_bot_events (
    bot_id      bigint      NOT NULL,
    event_id    bigint      NOT NULL,
    user_id     bigint,
    outbox_id   bigint      NOT NULL,
    kind        text,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, event_id)
);
CREATE TABLE {schema}.keel_outbox_rejects (
    outbox_id   bigint      PRIMARY KEY,
    reason      text        NOT NULL,
    raw         bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {schema}.keel_sink_owner (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id    text        NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX keel_fills_user ON {schema}.keel_fills (user_id, bot_id);
CREATE INDEX keel_order_updates_user ON {schema}.keel_order_updates (user_id, bot_id);
CREATE VIEW {schema}.keel_orders AS
    SELECT DISTINCT ON (bot_id, order_id) bot_id, order_id, seq, user_id, data, recorded_at
    FROM {schema}.keel_order_updates
    ORDER BY bot_id, order_id, seq DESC;
",
}];

/// The schema version this binary writes.
pub const PG_SCHEMA_VERSION: i32 = 1;

/// Builds the pool: plain TCP, or TLS verified against `ca_file` (read here, so a CA file
/// replaced on disk is read again when the sink restarts). It connects lazily: a Postgres that
/// is down now is not an error here.
///
/// # Errors
/// [`SinkError::Config`] when the configuration cannot work.
pub fn pool(config: &PgSinkConfig) -> Result<Pool, SinkError> {
    let limits = PoolLimits {
        size: config.pool_size,
        connect_timeout: config.connect_timeout,
        wait_timeout: config.wait_timeout,
    };
    pool_for(config.connection()?, &config.tls, limits)
}

/// The size and deadlines of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Most connections.
    pub size: usize,
    /// How long opening (and recycling) a connection may take.
    pub connect_timeout: std::time::Duration,
    /// How long to wait for a free connection.
    pub wait_timeout: std::time::Duration,
}

/// A pool over `connection`, plain TCP or TLS as `tls` says (shared by the sink and the
/// cluster's system of record). It connects lazily.
///
/// # Errors
/// [`SinkError::Config`] when the CA file cannot be used or the pool cannot be built.
pub fn pool_for(
    connection: tokio_postgres::Config,
    tls: &PgTls,
    limits: PoolLimits,
) -> Result<Pool, SinkError> {
    // `Fast` only checks that the connection is not closed; a broken one that looks open fails
    // its statement, and the caller then drops it instead of returning it to the pool.
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match tls {
        PgTls::Disable => Manager::from_config(connection, NoTls, recycling),
        PgTls::VerifyFull { ca_file } => {
            Manager::from_config(connection, tls::connector(ca_file)?, recycling)
        }
    };
    Pool::builder(manager)
        .max_size(limits.size)
        .wait_timeout(Some(limits.wait_timeout))
        .create_timeout(Some(limits.connect_timeout))
        .recycle_timeout(Some(limits.connect_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| SinkError::Config(format!("the connection pool: {err}")))
}

/// Brings the sink's schema up to [`PG_SCHEMA_VERSION`] and claims it for `store_id`, in one
/// transaction under an advisory lock. Safe to run on every connect: a current schema costs a
/// few small queries.
///
/// # Errors
/// Postgres failed (nothing was applied), its schema is newer than this binary, or another
/// store feeds it.
pub async fn migrate(
    client: &mut deadpool_postgres::Client,
    schema: &str,
    store_id: &str,
) -> Result<(), SinkError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    // Created only when missing: a role that may use a schema a DBA made need not be able to
    // create schemas.
    let exists = tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).await?;
    if exists.is_none() {
        tx.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.keel_schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let row = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {schema}.keel_schema_migrations"),
            &[],
        )
        .await?;
    let found: i32 = row.try_get(0)?;
    if found > PG_SCHEMA_VERSION {
        return Err(SinkError::SchemaTooNew { found, supported: PG_SCHEMA_VERSION });
    }
    for step in PG_MIGRATIONS.iter().filter(|m| m.version > found) {
        tracing::info!(version = step.version, name = step.name, %schema,
            "running Postgres sink migration");
        tx.batch_execute(&step.sql.replace("{schema}", schema)).await?;
        tx.execute(
            &format!("INSERT INTO {schema}.keel_schema_migrations (version, name) VALUES ($1, $2)"),
            &[&step.version, &step.name],
        )
        .await?;
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.keel_sink_owner (store_id) VALUES ($1) ON CONFLICT DO NOTHING"
        ),
        &[&store_id],
    )
    .await?;
    let owner: String = tx
        .query_one(&format!("SELECT store_id FROM {schema}.keel_sink_owner"), &[])
        .await?
        .try_get(0)?;
    if owner != store_id {
        return Err(SinkError::ClaimedByAnother { schema: schema.to_owned(), owner });
    }
    tx.commit().await?;
    Ok(())
}

/// The columns of one table's insert, as arrays for `UNNEST`.
#[derive(Debug, Default)]
struct Columns {
    bot: Vec<i64>,
    entity: Vec<i64>,
    user: Vec<Option<i64>>,
    outbox: Vec<i64>,
    data: Vec<serde_json::Value>,
}

impl Columns {
    fn push(&mut self, outbox_id: i64, record: &OutboxRecord, data: serde_json::Value) -> bool {
        let (Ok(bot), Ok(entity)) = (i64::try_from(record.bot_id), i64::try_from(record.entity_id))
        else {
            return false;
        };
        let user = match record.user_id.map(i64::try_from) {
            None => None,
            Some(Ok(user)) => Some(user),
            Some(Err(_)) => return false,
        };
        self.bot.push(bot);
        self.entity.push(entity);
        self.user.push(user);
        self.outbox.push(outbox_id);
        self.data.push(data);
        true
    }

    fn len(&self) -> usize {
        self.bot.len()
    }

    fn is_empty(&self) -> bool {
        self.bot.is_empty()
    }
}

/// One batch of outbox rows, sorted into their tables.
#[derive(Debug, Default)]
pub struct Batch {
    /// Every outbox id in the batch, to remove once Postgres committed.
    pub ids: Vec<u64>,
    orders: Columns,
    fills: Columns,
    events: Columns,
    rejects: Vec<(i64, String, Vec<u8>)>,
}

impl Batch {
    /// Sorts raw outbox rows into a batch. A row that cannot be read (corrupt, not JSON, an id
    /// past Postgres's `bigint`) becomes a reject: it goes to `keel_outbox_rejects` with the
    /// reason, so it neither blocks the sink nor disappears.
    pub fn from_rows(rows: &[(u64, sled::IVec)]) -> Self {
        let mut batch = Batch::default();
        for (id, raw) in rows {
            let Ok(outbox_id) = i64::try_from(*id) else {
                // Past 2^63 writes: not reachable in practice. The row stays in the outbox (it is
                // not in `ids`), so nothing is lost; a person has to look.
                tracing::error!(outbox_id = id, "outbox id beyond bigint; row left in the outbox");
                continue;
            };
            batch.ids.push(*id);
            if let Err(reason) = batch.add(outbox_id, raw) {
                tracing::error!(outbox_id, %reason, "unreadable outbox row kept as a reject");
                batch.rejects.push((outbox_id, reason, raw.to_vec()));
            }
        }
        batch
    }

    fn add(&mut self, outbox_id: i64, raw: &[u8]) -> Result<(), String> {
        let record = OutboxRecord::decode(raw).map_err(|e| e.to_string())?;
        let mut data: serde_json::Value = serde_json::from_slice(&record.payload)
            .map_err(|e| format!("payload is not JSON: {e}"))?;
        // jsonb refuses NUL: one in a journal line would stall the sink on this batch forever.
        crate::pg::text::scrub_json(&mut data);
        let columns = match record.kind {
            RecordKind::Order => &mut self.orders,
            RecordKind::Fill => &mut self.fills,
            RecordKind::Event => &mut self.events,
        };
        if columns.push(outbox_id, &record, data) {
            Ok(())
        } else {
            Err("an id does not fit in bigint".to_owned())
        }
    }

    /// Rows per kind: orders, fills, events, rejects.
    pub fn counts(&self) -> [(&'static str, usize); 4] {
        [
            ("order", self.orders.len()),
            ("fill", self.fills.len()),
            ("event", self.events.len()),
            ("reject", self.rejects.len()),
        ]
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The insert statements for one schema.
#[derive(Debug, Clone)]
pub struct Statements {
    orders: String,
    fills: String,
    events: String,
    rejects: String,
}

impl Statements {
    /// The statements for `schema` (already checked to be a plain identifier).
    pub fn new(schema: &str) -> Self {
        let unnest = "UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::jsonb[]) \
                      AS r(bot, entity, usr, outbox, data)";
        Self {
            orders: format!(
                "INSERT INTO {schema}.keel_order_updates (bot_id, order_id, seq, user_id, data) \
                 SELECT bot, entity, outbox, usr, data FROM {unnest} ON CONFLICT DO NOTHING"
            ),
            fills: format!(
                "INSERT INTO {schema}.keel_fills (bot_id, fill_id, user_id, outbox_id, data) \
                 SELECT bot, entity, usr, outbox, data FROM {unnest} ON CONFLICT DO NOTHING"
            ),
            events: format!(
                "INSERT INTO {schema}.keel_bot_events \
                 (bot_id, event_id, user_id, outbox_id, kind, data) \
                 SELECT bot, entity, usr, outbox, data->>'kind', data FROM {unnest} \
                 ON CONFLICT DO NOTHING"
            ),
            rejects: format!(
                "INSERT INTO {schema}.keel_outbox_rejects (outbox_id, reason, raw) \
                 SELECT * FROM UNNEST($1::int8[], $2::text[], $3::bytea[]) ON CONFLICT DO NOTHING"
            ),
        }
    }
}

/// Writes a batch in one transaction. When this returns `Ok`, Postgres has committed it.
///
/// # Errors
/// Postgres failed; the transaction was rolled back (or its outcome is unknown, which the
/// primary keys make harmless to repeat).
pub async fn write(
    client: &mut deadpool_postgres::Client,
    statements: &Statements,
    batch: &Batch,
) -> Result<(), SinkError> {
    let tx = client.transaction().await?;
    for (sql, columns) in [
        (&statements.orders, &batch.orders),
        (&statements.fills, &batch.fills),
        (&statements.events, &batch.events),
    ] {
        if columns.is_empty() {
            continue;
        }
        let statement = tx.prepare_cached(sql).await?;
        tx.execute(
            &statement,
            &[&columns.bot, &columns.entity, &columns.user, &columns.outbox, &columns.data],
        )
        .await?;
    }
    if !batch.rejects.is_empty() {
        let ids: Vec<i64> = batch.rejects.iter().map(|r| r.0).collect();
        let reasons: Vec<&str> = batch.rejects.iter().map(|r| r.1.as_str()).collect();
        let raws: Vec<&[u8]> = batch.rejects.iter().map(|r| r.2.as_slice()).collect();
        let statement = tx.prepare_cached(&statements.rejects).await?;
        tx.execute(&statement, &[&ids, &reasons, &raws]).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: RecordKind, entity_id: u64, payload: &[u8]) -> sled::IVec {
        OutboxRecord { kind, bot_id: 3, user_id: Some(4), entity_id, payload: payload.to_vec() }
            .encode()
            .into()
    }

    #[test]
    fn rows_are_sorted_by_kind_and_unreadable_ones_become_rejects() {
        let rows = vec![
            (10, raw(RecordKind::Order, 1, br#"{"id":1}"#)),
            (11, raw(RecordKind::Fill, 1, br#"{"id":1}"#)),
            (12, raw(RecordKind::Event, 1, br#"{"kind":"log"}"#)),
            (13, raw(RecordKind::Event, 2, b"{not json")),
            (14, sled::IVec::from(&b"\x07garbage"[..])),
            (15, raw(RecordKind::Fill, u64::MAX, b"{}")),
        ];
        let batch = Batch::from_rows(&rows);
        assert_eq!(batch.ids, [10, 11, 12, 13, 14, 15]);
        assert_eq!(batch.counts(), [("order", 1), ("fill", 1), ("event", 1), ("reject", 3)]);
        assert_eq!(batch.orders.user, [Some(4)]);
        assert_eq!(batch.orders.outbox, [10]);
    }

    #[test]
    fn statements_name_the_schema_and_never_update() {
        let statements = Statements::new("keel_x");
        for sql in [&statements.orders, &statements.fills, &statements.events, &statements.rejects]
        {
            assert!(sql.contains("keel_x.keel_"), "{sql}");
            assert!(sql.ends_with("ON CONFLICT DO NOTHING"), "{sql}");
        }
    }

    #[test]
    fn the_schema_version_is_the_last_migration() {
        assert_eq!(PG_MIGRATIONS.last().map(|m| m.version), Some(PG_SCHEMA_VERSION));
    }
}
