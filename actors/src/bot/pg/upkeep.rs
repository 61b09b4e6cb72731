//! Upkeep of the bot tables: retention ([`PgBotRepo::sweep`], [`PgBotRepo::prune`]) and the
//! figures `/metrics` shows of them ([`PgBotRepo::figures`]).
//!
//! Every node of a cluster runs the retention sweep on the same period, but the rows are the
//! cluster's, so one node at a time prunes them: a sweep first takes a Postgres advisory lock
//! ([`SWEEP_LOCK`], `pg_try_advisory_lock`); a node that does not get it skips that sweep (the
//! other is doing the work). The lock belongs to the session of a connection taken out of the
//! pool for the sweep and closed after it, so however a sweep ends (done, failed, timed out,
//! its task dropped) the lock goes with the connection and never stays held by a pooled one.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{PgBotRepo, bound};
use crate::pg::{RecordError, from_db};
use crate::store::retention::RetentionConfig;
use crate::store::stats::KindStats;
use crate::store::trees;

/// Rows one retention statement removes at most: each statement is its own short transaction,
/// so a sweep never holds many row locks, nor for long.
pub const PRUNE_BATCH: i64 = 1000;
/// The advisory lock key of the retention sweep (the bytes of `keelrtn1`), held by the one
/// node sweeping.
pub const SWEEP_LOCK: i64 = 0x6b65_656c_7274_6e31;
/// One day, in milliseconds.
const DAY_MS: u64 = 86_400_000;

/// Rows removed by one retention pass ([`PgBotRepo::prune`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Fills.
    pub fills: u64,
    /// Final orders.
    pub orders: u64,
    /// Journal lines.
    pub events: u64,
}

impl PgBotRepo {
    /// One retention sweep at `now_ms` with the `[retention]` settings the sled sweep uses
    /// ([`crate::store::retention::sweep`]): fills, final orders and journal lines older than
    /// their kind's limit (zero keeps the kind). `None` when another node is sweeping.
    ///
    /// # Errors
    /// As [`PgBotRepo::prune`].
    pub async fn sweep(
        &self,
        config: &RetentionConfig,
        now_ms: u64,
    ) -> Result<Option<Pruned>, RecordError> {
        let cutoff = |max_age: Duration| {
            (!max_age.is_zero()).then(|| {
                now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX))
            })
        };
        self.prune(
            cutoff(config.fills_max_age),
            cutoff(config.orders_max_age),
            cutoff(config.bot_events_max_age),
        )
        .await
    }

    /// Removes fills with `ts`, final orders with `updated_ts`, and journal lines with `ts`
    /// before the given cutoffs (ms since the epoch; `None` keeps that kind), in statements of
    /// at most [`PRUNE_BATCH`] rows each, each committed on its own. Definitions, positions and
    /// open orders are never removed: start-up and a bot's restart need them. Only while this
    /// node holds [`SWEEP_LOCK`]: `None`, nothing removed, when another session holds it.
    ///
    /// # Errors
    /// Postgres failed or a statement took longer than its deadline; what earlier batches
    /// removed stays removed.
    pub async fn prune(
        &self,
        fills_before: Option<u64>,
        orders_before: Option<u64>,
        events_before: Option<u64>,
    ) -> Result<Option<Pruned>, RecordError> {
        // Out of the pool: dropped at the end, it closes, and its session's lock goes with it.
        let client = self
            .record
            .timed("bots.prune", async {
                let client = deadpool_postgres::Client::take(self.record.client().await?);
                let row =
                    client.query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK]).await?;
                Ok(row.try_get::<_, bool>(0)?.then_some(client))
            })
            .await?;
        let Some(client) = client else { return Ok(None) };
        let mut pruned = Pruned::default();
        let kinds = [
            (fills_before, "keel_bot_fills", "ts", "true", &mut pruned.fills),
            (orders_before, "keel_bot_orders", "updated_ts", "NOT is_open", &mut pruned.orders),
            (events_before, "keel_bot_journal", "ts", "true", &mut pruned.events),
        ];
        for (cutoff, table, column, only, count) in kinds {
            let Some(cutoff) = cutoff else { continue };
            let cutoff = bound(cutoff);
            let sql = format!(
                "DELETE FROM {table} WHERE ctid IN \
                 (SELECT ctid FROM {table} WHERE {column} < $1 AND {only} LIMIT $2)"
            );
            loop {
                let removed = self
                    .record
                    .timed("bots.prune", async {
                        Ok(client.execute(&sql, &[&cutoff, &PRUNE_BATCH]).await?)
                    })
                    .await?;
                *count += removed;
                if removed < PRUNE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(Some(pruned))
    }
}

/// The tables behind each kind of [`PgBotRepo::figures`], named as the sled trees are, with
/// the column holding the rows' own time (ms since the epoch) where they have one.
const FIGURE_TABLES: [(&str, &str, Option<&str>); 5] = [
    (trees::BOTS, "keel_bots", None),
    (trees::ORDERS, "keel_bot_orders", Some("updated_ts")),
    (trees::FILLS, "keel_bot_fills", Some("ts")),
    (trees::POSITIONS, "keel_bot_positions", None),
    (trees::EVENTS, "keel_bot_journal", Some("ts")),
];

impl PgBotRepo {
    /// What the bot tables hold at `now_ms`, by kind as `keel store stats` names the sled
    /// trees: rows, bytes on disk with indexes and TOAST (`pg_total_relation_size`), bytes of
    /// the rows of the last 24 hours (by their own time, through the time index; the JSON
    /// bodies, `pg_column_size`) and the oldest row's time. Rows are counted exactly: a full
    /// scan of each table, for the periodic figures, not for a request path.
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn figures(&self, now_ms: u64) -> Result<BTreeMap<String, KindStats>, RecordError> {
        let since = bound(now_ms.saturating_sub(DAY_MS));
        self.record
            .timed("bots.figures", async {
                let client = self.record.client().await?;
                let mut kinds = BTreeMap::new();
                for (kind, table, time) in FIGURE_TABLES {
                    let sql =
                        format!("SELECT count(*), pg_total_relation_size('{table}') FROM {table}");
                    let row = client.query_one(&sql, &[]).await?;
                    let mut stats = KindStats {
                        rows: from_db(row.try_get(0)?)?,
                        bytes: from_db(row.try_get(1)?)?,
                        ..KindStats::default()
                    };
                    if let Some(time) = time {
                        let sql = format!(
                            "SELECT (SELECT min({time}) FROM {table}), \
                             (SELECT coalesce(sum(pg_column_size(body)), 0)::bigint \
                              FROM {table} WHERE {time} >= $1)"
                        );
                        let row = client.query_one(&sql, &[&since]).await?;
                        let oldest: Option<i64> = row.try_get(0)?;
                        stats.oldest_ms = oldest.map(from_db).transpose()?;
                        stats.growth_bytes_per_day = Some(from_db(row.try_get(1)?)?);
                    }
                    kinds.insert(kind.to_owned(), stats);
                }
                Ok(kinds)
            })
            .await
    }
}
