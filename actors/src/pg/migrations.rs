//! The system of record's schema: versioned migrations shared by every node, recorded in
//! `keel_schema` (version, name, applied_at), as `store::migrations` does for sled.
//!
//! Every node runs [`migrate`] at start-up. Each step runs in a transaction of its own, which
//! first takes a transaction-scoped advisory lock and reads the version under it: three nodes
//! starting at once take turns, and each step is applied exactly once (the second node finds it
//! recorded). A database whose version is newer than this binary's is refused
//! ([`RecordError::SchemaTooNew`]): a newer Keel has changed it in ways this one does not know.

use super::{PgRecord, RecordError};

/// Key of the advisory lock held while migrating ("keel_sor").
const MIGRATION_LOCK: i64 = 0x6b65_656c_5f73_6f72;

/// One step of the schema. Applied steps are never edited: add a step instead.
#[derive(Debug)]
pub struct PgMigration {
    /// Version the schema is at after this step; consecutive from 1.
    pub version: i32,
    /// What it does, for logs and `keel_schema.name`.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every step, oldest first.
pub const MIGRATIONS: &[PgMigration] = &[
    PgMigration {
        version: 1,
        name: "identity: users, sessions, refresh tokens, revocations, invites",
        sql: r"
CREATE TABLE keel_users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text   NOT NULL,
    password_hash text   NOT NULL,
    created_at_ms bigint NOT NULL,
    CONSTRAINT keel_users_email_key UNIQUE (email)
);
CREATE TABLE keel_sessions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
    created_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL,
    revoked       text
);
CREATE INDEX keel_sessions_user ON keel_sessions (user_id);
CREATE TABLE keel_refresh_tokens (
    token_hash    bytea   PRIMARY KEY,
    user_id       bigint  NOT NULL,
    session_id    bigint  NOT NULL REFERENCES keel_sessions (id) ON DELETE CASCADE,
    expires_at_ms bigint  NOT NULL,
    used          boolean NOT NULL DEFAULT false
);
CREATE INDEX keel_refresh_tokens_session ON keel_refresh_tokens (session_id);
CREATE INDEX keel_refresh_tokens_expiry ON keel_refresh_tokens (expires_at_ms);
CREATE TABLE keel_revoked_sessions (
    session_id  bigint      PRIMARY KEY,
    user_id     bigint      NOT NULL,
    until_secs  bigint      NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX keel_revoked_sessions_recorded ON keel_revoked_sessions (recorded_at);
CREATE INDEX keel_revoked_sessions_until ON keel_revoked_sessions (until_secs);
CREATE TABLE keel_invites (
    token_hash    bytea  PRIMARY KEY,
    expires_at_ms bigint NOT NULL
);
",
    },
    PgMigration {
        version: 2,
        name: "cluster: nodes and their heartbeats, user leases with an epoch",
        // A lease row is never deleted while its user exists (a released lease expires now), so
        // a user's epoch only ever rises: a fence taken under an old epoch stays stale. Times
        // are Postgres's clock, never a node's.
        sql: r"
CREATE TABLE keel_nodes (
    node_id       text        PRIMARY KEY,
    advertise_url text        NOT NULL DEFAULT '',
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE keel_user_leases (
    user_id    bigint      PRIMARY KEY REFERENCES keel_users (id) ON DELETE CASCADE,
    holder     text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX keel_user_leases_holder ON keel_user_leases (holder);
",
    },
    PgMigration {
        version: 3,
        name: "bots: definitions, orders, fills, positions, journal, the open-order index",
        // Bot ids come from the identity column, so they are unique across nodes, and with them
        // the client order ids `keel-{bot}-{order}` sent to venues. Domain values are the JSON
        // the sled store keeps (decimals as JSON strings, exact); the columns beside them are
        // what rows are looked up, ordered and aged by. `ts` and `updated_ts` are the rows'
        // own times, ms since the epoch. The open-order index is a partial index on the orders
        // that may still fill, kept with the order row in the same statement.
        sql: r"
CREATE TABLE keel_bots (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
    record     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX keel_bots_user ON keel_bots (user_id, id);
CREATE TABLE keel_bot_orders (
    bot_id     bigint  NOT NULL REFERENCES keel_bots (id) ON DELETE CASCADE,
    order_id   bigint  NOT NULL,
    is_open    boolean NOT NULL,
    updated_ts bigint  NOT NULL,
    body       jsonb   NOT NULL,
    PRIMARY KEY (bot_id, order_id)
);
CREATE INDEX keel_bot_orders_open ON keel_bot_orders (bot_id, order_id) WHERE is_open;
CREATE INDEX keel_bot_orders_final_age ON keel_bot_orders (updated_ts) WHERE NOT is_open;
CREATE TABLE keel_bot_fills (
    bot_id  bigint NOT NULL REFERENCES keel_bots (id) ON DELETE CASCADE,
    fill_id bigint NOT NULL,
    ts      bigint NOT NULL,
    body    jsonb  NOT NULL,
    PRIMARY KEY (bot_id, fill_id)
);
CREATE INDEX keel_bot_fills_age ON keel_bot_fills (ts);
CREATE TABLE keel_bot_positions (
    bot_id     bigint      PRIMARY KEY REFERENCES keel_bots (id) ON DELETE CASCADE,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE keel_bot_journal (
    bot_id   bigint NOT NULL REFERENCES keel_bots (id) ON DELETE CASCADE,
    event_id bigint NOT NULL,
    ts       bigint NOT NULL,
    body     jsonb  NOT NULL,
    PRIMARY KEY (bot_id, event_id)
);
CREATE INDEX keel_bot_journal_age ON keel_bot_journal (ts);
",
    },
    PgMigration {
        version: 4,
        name: "vault and owners' limits: credentials (ciphertext), the vault key check, risk limits",
        // Credential ids come from the identity column, so they are unique across nodes; the
        // envelopes are bound to (user id, credential id) and stored as the vault seals them
        // (ciphertext and key id only, never plaintext). The key check is one row: an HMAC of a
        // fixed label under the vault's master key, written by the first node, compared by the
        // others (never the key). Limits are the JSON the sled store keeps.
        sql: r"
CREATE TABLE keel_credentials (
    id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint  NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
    venue         text    NOT NULL,
    label         text    NOT NULL,
    api_key_hint  text    NOT NULL,
    testnet       boolean NOT NULL,
    created_at_ms bigint  NOT NULL,
    api_key       jsonb   NOT NULL,
    api_secret    jsonb   NOT NULL
);
CREATE INDEX keel_credentials_user ON keel_credentials (user_id, id);
CREATE TABLE keel_vault_key (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    check_value text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE keel_user_limits (
    user_id    bigint      PRIMARY KEY REFERENCES keel_users (id) ON DELETE CASCADE,
    limits     jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
",
    },
    PgMigration {
        version: 5,
        name: "owners' strategy modules, notification channels and their outbox",
        // Ids from identity columns, unique across nodes: a module id a bot names, a channel id
        // a channel's sealed secret is bound to, a delivery id receivers deduplicate on
        // (`Keel-Delivery`). `metadata`, `record` and `body` are the JSON the sled store keeps
        // (a channel's secret only as the vault's envelope: ciphertext); the columns beside them
        // are what rows are looked up, ordered and aged by. A delivery keeps no reference to its
        // channel: one whose channel was deleted fails when its turn comes and stays listed,
        // as in sled.
        sql: r"
CREATE TABLE keel_strategy_modules (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
    name          text   NOT NULL,
    sha256        text   NOT NULL,
    wasm          bytea  NOT NULL,
    metadata      jsonb  NOT NULL,
    created_at_ms bigint NOT NULL
);
CREATE INDEX keel_strategy_modules_user ON keel_strategy_modules (user_id, id);
CREATE TABLE keel_notify_channels (
    id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint  NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
    kind          text    NOT NULL,
    events        text[]  NOT NULL,
    record        jsonb   NOT NULL,
    created_at_ms bigint  NOT NULL
);
CREATE INDEX keel_notify_channels_user ON keel_notify_channels (user_id, id);
CREATE TABLE keel_notify_outbox (
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint  NOT NULL REFERENCES keel_users (id) ON DELETE CASCADE,
    channel_id      bigint  NOT NULL,
    state           text    NOT NULL,
    attempts        integer NOT NULL,
    next_attempt_ms bigint,
    finished_at_ms  bigint,
    body            jsonb   NOT NULL
);
CREATE INDEX keel_notify_outbox_user ON keel_notify_outbox (user_id, id);
CREATE INDEX keel_notify_outbox_due ON keel_notify_outbox (user_id, next_attempt_ms)
    WHERE state = 'pending';
CREATE INDEX keel_notify_outbox_finished ON keel_notify_outbox (finished_at_ms)
    WHERE state <> 'pending';
",
    },
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Brings the schema up to [`SCHEMA_VERSION`], one transaction per step, each under the
/// advisory lock. Returns the steps this call applied (none when another node did).
///
/// # Errors
/// Postgres failed (the step being applied was rolled back; earlier ones stay), or the schema
/// is newer than this binary.
pub async fn migrate(record: &PgRecord) -> Result<Vec<i32>, RecordError> {
    let mut client = record.client().await?;
    let mut applied = Vec::new();
    loop {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS keel_schema (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let found: i32 =
            tx.query_one("SELECT coalesce(max(version), 0) FROM keel_schema", &[]).await?.get(0);
        if found > SCHEMA_VERSION {
            return Err(RecordError::SchemaTooNew { found, supported: SCHEMA_VERSION });
        }
        let Some(step) = MIGRATIONS.iter().find(|m| m.version > found) else {
            tx.commit().await?;
            return Ok(applied);
        };
        tracing::info!(version = step.version, name = step.name, "running Postgres migration");
        tx.batch_execute(step.sql).await?;
        tx.execute(
            "INSERT INTO keel_schema (version, name) VALUES ($1, $2)",
            &[&step.version, &step.name],
        )
        .await?;
        tx.commit().await?;
        applied.push(step.version);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_db::TestDb;
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, step) in MIGRATIONS.iter().enumerate() {
            assert_eq!(step.version, i as i32 + 1, "{}", step.name);
        }
    }

    async fn versions(record: &PgRecord) -> Vec<i32> {
        let client = record.client().await.unwrap();
        let rows = client.query("SELECT version FROM keel_schema ORDER BY version", &[]).await;
        rows.unwrap().iter().map(|row| row.get(0)).collect()
    }

    #[tokio::test]
    async fn migrations_run_once_and_a_newer_schema_is_refused() {
        let Some(db) = TestDb::create("migrations_run_once").await else { return };
        let record = PgRecord::new(&db.config).unwrap();
        let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(migrate(&record).await.unwrap(), all);
        assert_eq!(migrate(&record).await.unwrap(), Vec::<i32>::new(), "nothing runs twice");
        assert_eq!(versions(&record).await, all);

        let newer = SCHEMA_VERSION + 1;
        let client = record.client().await.unwrap();
        client
            .execute(
                "INSERT INTO keel_schema (version, name) VALUES ($1, 'from the future')",
                &[&newer],
            )
            .await
            .unwrap();
        drop(client);
        let err = migrate(&record).await.unwrap_err();
        assert!(
            matches!(err, RecordError::SchemaTooNew { found, supported }
                if found == newer && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer Keel"), "{err}");
        drop(record);
        db.drop_db().await;
    }

    #[tokio::test]
    async fn two_nodes_migrating_at_once_apply_each_step_once() {
        let Some(db) = TestDb::create("two_nodes_migrating").await else { return };
        let (a, b) = (PgRecord::new(&db.config).unwrap(), PgRecord::new(&db.config).unwrap());
        let (ran_a, ran_b) = tokio::join!(migrate(&a), migrate(&b));
        let (mut ran_a, ran_b) = (ran_a.unwrap(), ran_b.unwrap());
        ran_a.extend(ran_b);
        ran_a.sort_unstable();
        let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(ran_a, all, "between them, every step ran exactly once");
        assert_eq!(versions(&a).await, all);
        drop((a, b));
        db.drop_db().await;
    }
}
