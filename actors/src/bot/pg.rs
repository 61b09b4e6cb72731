//! Bots in Postgres (cluster mode with `postgres_url`): definitions, orders, fills, positions
//! and the journal, the tables of schema step 3 ([`crate::pg::migrations`]).
//!
//! It holds what [`super::repo::BotRepo`] holds in sled, with the same reads (pages cut at a
//! durable watermark, the open orders a restart resumes) and the same write unit: one engine
//! flush (its orders as they ended, its fills, its journal lines and the state after it) is one
//! Postgres transaction, acknowledged only once `COMMIT` returned. There is no separate flush
//! afterwards: a committed transaction is durable.
//!
//! Fencing: a write made for a user under a [`Fence`] checks it first, inside the same
//! transaction ([`Fence::check`], which holds the lease row until the commit). A fenced write
//! is rolled back and reported as [`PgBotError::Fenced`]: the caller stops the bot and sends
//! nothing. Without a fence (`None`: cluster mode before a lease manager hands one out) writes
//! are unfenced, as every node's writes are today.
//!
//! Bot ids come from `keel_bots`' identity column, so two nodes never hand out the same one,
//! and neither the client order ids (`keel-{bot}-{order}`) built from them.

use deadpool_postgres::Transaction as PoolTransaction;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::repo::Page;
use crate::pg::fence::{Fence, Fenced};
use crate::pg::text::scrub_json;
use crate::pg::{PgRecord, RecordError, from_db, to_db};
use keel_core::bot::{BotId, BotRecord, UserId};
use keel_core::engine::{BotEvent, BotState, Effects};
use keel_core::trading::{Fill, Order};

/// What a bot write can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PgBotError {
    /// The node no longer holds the owner's lease: the write was rolled back.
    #[error("fenced: another node owns this user now ({0})")]
    Fenced(#[from] Fenced),
    /// Postgres failed, or a value did not convert; nothing was written.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl PgBotError {
    /// The reason a bot stops with when its write was fenced.
    pub const FENCED_REASON: &'static str = "fenced: another node owns this user now";

    /// Whether the write was refused by the fence (as opposed to Postgres failing).
    pub fn is_fenced(&self) -> bool {
        matches!(self, PgBotError::Fenced(_))
    }
}

/// What a bot actor writes through when its owner's data lives in Postgres: the bot tables and
/// the fence of the owner's lease on this node. Each of the bot's flushes is one
/// [`PgBotRepo::persist_calls`] under this fence.
#[derive(Debug, Clone)]
pub struct PgBotLink {
    /// The bot tables.
    pub repo: PgBotRepo,
    /// The owner's lease, as this node took it.
    pub fence: Fence,
    /// The owner's notifications: a flush's deliveries go in its transaction.
    pub notify: Option<crate::notify::Notifications>,
}

/// Typed access to the bot tables.
#[derive(Debug, Clone)]
pub struct PgBotRepo {
    record: PgRecord,
}

/// `value` as JSON for a `jsonb` column, NUL replaced ([`scrub_json`]): a venue's message or a
/// strategy's log line with one would otherwise fail the whole flush and stop the bot.
fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, RecordError> {
    let mut json = serde_json::to_value(value)
        .map_err(|err| RecordError::Corrupt(format!("encoding: {err}")))?;
    scrub_json(&mut json);
    Ok(json)
}

fn parse<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, RecordError> {
    serde_json::from_value(value).map_err(|err| RecordError::Corrupt(format!("decoding: {err}")))
}

/// An id bound for a range (`after`, `upto`): ids past `bigint` are beyond every stored row.
fn bound(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Runs `fence`'s check in `tx` when there is one.
async fn fenced(
    tx: &Transaction<'_>,
    fence: Option<&Fence>,
) -> Result<Result<(), Fenced>, RecordError> {
    match fence {
        Some(fence) => fence.check(tx).await,
        None => Ok(Ok(())),
    }
}

impl PgBotRepo {
    /// The bot tables of `record` (migrated by [`PgRecord::connect`]).
    pub fn new(record: PgRecord) -> Self {
        Self { record }
    }

    /// The system of record these tables are in (for the owner's other tables: modules,
    /// notification channels).
    pub fn record(&self) -> &PgRecord {
        &self.record
    }

    /// Stores a new bot under a fresh id from `keel_bots`' identity column (unique across
    /// nodes) and returns it with that id; `bot.id` is ignored. Committed when this returns.
    ///
    /// # Errors
    /// [`PgBotError::Fenced`], or Postgres failed (an unknown owner is a refused statement).
    pub async fn create_bot(
        &self,
        bot: &BotRecord,
        fence: Option<&Fence>,
    ) -> Result<BotRecord, PgBotError> {
        let user_id = to_db(bot.user_id)?;
        let body = json(bot)?;
        Ok(self.record
            .timed("bots.create", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                if let Err(fenced) = fenced(&tx, fence).await? {
                    return Ok(Err(fenced));
                }
                // The id is drawn first so the stored definition carries it too.
                let row = tx
                    .query_one(
                        "WITH next AS (SELECT nextval(pg_get_serial_sequence('keel_bots', 'id')) AS id)
                         INSERT INTO keel_bots (id, user_id, record) OVERRIDING SYSTEM VALUE
                         SELECT next.id, $1, jsonb_set($2, '{id}', to_jsonb(next.id)) FROM next
                         RETURNING record",
                        &[&user_id, &body],
                    )
                    .await
                    ?;
                let created = parse(row.try_get("record")?)?;
                tx.commit().await?;
                Ok(Ok(created))
            })
            .await??)
    }

    /// Replaces a stored bot's definition (an edit). False if there is no such bot.
    ///
    /// # Errors
    /// [`PgBotError::Fenced`], or Postgres failed.
    pub async fn put_bot(
        &self,
        bot: &BotRecord,
        fence: Option<&Fence>,
    ) -> Result<bool, PgBotError> {
        let (id, body) = (to_db(bot.id)?, json(bot)?);
        Ok(self
            .record
            .timed("bots.put", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                if let Err(fenced) = fenced(&tx, fence).await? {
                    return Ok(Err(fenced));
                }
                let updated = tx
                    .execute("UPDATE keel_bots SET record = $2 WHERE id = $1", &[&id, &body])
                    .await?;
                tx.commit().await?;
                Ok(Ok(updated == 1))
            })
            .await??)
    }

    /// One bot's definition.
    ///
    /// # Errors
    /// Postgres failed or the row does not decode.
    pub async fn bot(&self, id: BotId) -> Result<Option<BotRecord>, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("bots.get", async {
                let client = self.record.client().await?;
                let row =
                    client.query_opt("SELECT record FROM keel_bots WHERE id = $1", &[&id]).await?;
                row.map(|row| parse(row.try_get("record")?)).transpose()
            })
            .await
    }

    /// One owner's bots, in id order.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn bots_of(&self, user_id: UserId) -> Result<Vec<BotRecord>, RecordError> {
        let user_id = to_db(user_id)?;
        self.record
            .timed("bots.of_user", async {
                let client = self.record.client().await?;
                let sql = "SELECT record FROM keel_bots WHERE user_id = $1 ORDER BY id";
                let rows = client.query(sql, &[&user_id]).await?;
                rows.into_iter().map(|row| parse(row.try_get("record")?)).collect()
            })
            .await
    }

    /// Every bot, in id order.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn all_bots(&self) -> Result<Vec<BotRecord>, RecordError> {
        self.record
            .timed("bots.all", async {
                let client = self.record.client().await?;
                let rows = client.query("SELECT record FROM keel_bots ORDER BY id", &[]).await?;
                rows.into_iter().map(|row| parse(row.try_get("record")?)).collect()
            })
            .await
    }

    /// Deletes a bot and everything it recorded, in one transaction (the rows go with the
    /// definition, `ON DELETE CASCADE`). False if there was no such bot.
    ///
    /// # Errors
    /// [`PgBotError::Fenced`], or Postgres failed.
    pub async fn delete_bot(&self, id: BotId, fence: Option<&Fence>) -> Result<bool, PgBotError> {
        let id = to_db(id)?;
        Ok(self
            .record
            .timed("bots.delete", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                if let Err(fenced) = fenced(&tx, fence).await? {
                    return Ok(Err(fenced));
                }
                let deleted = tx.execute("DELETE FROM keel_bots WHERE id = $1", &[&id]).await?;
                tx.commit().await?;
                Ok(Ok(deleted == 1))
            })
            .await??)
    }

    /// The bot's durable state; the default for a bot that never traded.
    ///
    /// # Errors
    /// Postgres failed or the row does not decode.
    pub async fn state(&self, id: BotId) -> Result<BotState, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("bots.state", async {
                let client = self.record.client().await?;
                let sql = "SELECT state FROM keel_bot_positions WHERE bot_id = $1";
                match client.query_opt(sql, &[&id]).await? {
                    Some(row) => parse(row.try_get("state")?),
                    None => Ok(BotState::default()),
                }
            })
            .await
    }

    /// The bot's orders that may still fill, in id order, through the open-order index.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn open_orders(&self, id: BotId) -> Result<Vec<Order>, RecordError> {
        let id = to_db(id)?;
        self.record
            .timed("bots.open_orders", async {
                let client = self.record.client().await?;
                let sql = "SELECT body FROM keel_bot_orders WHERE bot_id = $1 AND is_open \
                           ORDER BY order_id";
                let rows = client.query(sql, &[&id]).await?;
                rows.into_iter().map(|row| parse(row.try_get("body")?)).collect()
            })
            .await
    }

    /// One order.
    ///
    /// # Errors
    /// Postgres failed or the row does not decode.
    pub async fn order(&self, bot: BotId, order: u64) -> Result<Option<Order>, RecordError> {
        let (bot, order) = (to_db(bot)?, to_db(order)?);
        self.record
            .timed("bots.order", async {
                let client = self.record.client().await?;
                let sql = "SELECT body FROM keel_bot_orders WHERE bot_id = $1 AND order_id = $2";
                let row = client.query_opt(sql, &[&bot, &order]).await?;
                row.map(|row| parse(row.try_get("body")?)).transpose()
            })
            .await
    }

    /// A page of orders with ids above `after` and at most `upto` (the durable watermark).
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn orders(
        &self,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<Order>, RecordError> {
        self.page("bots.orders", "keel_bot_orders", "order_id", id, after, upto, limit).await
    }

    /// A page of fills.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn fills(
        &self,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<Fill>, RecordError> {
        self.page("bots.fills", "keel_bot_fills", "fill_id", id, after, upto, limit).await
    }

    /// A page of journal lines.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn events(
        &self,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<BotEvent>, RecordError> {
        self.page("bots.events", "keel_bot_journal", "event_id", id, after, upto, limit).await
    }

    /// Every fill of a bot up to `upto`, for performance figures.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn all_fills(&self, id: BotId, upto: u64) -> Result<Vec<Fill>, RecordError> {
        Ok(self.fills(id, 0, upto, usize::MAX).await?.items)
    }

    /// Rows of `table` for bot `id` with ids in (`after`, `upto`], at most `limit`.
    #[allow(clippy::too_many_arguments)]
    async fn page<T: DeserializeOwned>(
        &self,
        what: &'static str,
        table: &'static str,
        key: &'static str,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<T>, RecordError> {
        if after >= upto || after >= i64::MAX as u64 {
            return Ok(Page { items: Vec::new(), next_after: None });
        }
        let (id, after_db, upto_db) = (to_db(id)?, bound(after), bound(upto));
        // One row more than asked says whether there is a next page.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1).saturating_add(1);
        self.record
            .timed(what, async {
                let client = self.record.client().await?;
                let sql = format!(
                    "SELECT {key}, body FROM {table} WHERE bot_id = $1 AND {key} > $2 \
                     AND {key} <= $3 ORDER BY {key} LIMIT $4"
                );
                let rows = client.query(&sql, &[&id, &after_db, &upto_db, &fetch]).await?;
                let more = rows.len() > limit;
                let mut items = Vec::with_capacity(rows.len().min(limit));
                let mut last = after;
                for row in rows.into_iter().take(limit) {
                    last = from_db(row.try_get(key)?)?;
                    items.push(parse(row.try_get("body")?)?);
                }
                Ok(Page { items, next_after: more.then_some(last) })
            })
            .await
    }

    /// Writes one engine call's effects and the state after it in one transaction.
    ///
    /// # Errors
    /// As [`PgBotRepo::persist_calls`].
    pub async fn persist(
        &self,
        id: BotId,
        fx: &Effects,
        state: &BotState,
        fence: Option<&Fence>,
    ) -> Result<(), PgBotError> {
        self.persist_calls(id, std::slice::from_ref(fx), state, &[], fence).await
    }

    /// Writes the effects of several engine calls, oldest first, and the state after the last,
    /// in one transaction: each order as it ended (and in or out of the open-order index with
    /// it), every fill and journal line, the state row, and the notification `deliveries` its
    /// journal lines give (`notify::pg`). Acknowledged (`Ok`) only once `COMMIT`
    /// returned. On an error nothing of it is stored, with one exception no client can rule
    /// out: when the connection breaks or the deadline passes while `COMMIT` is under way, the
    /// transaction may have committed. The caller treats every error as "not written" and, as
    /// with a failed sled write, stops the bot so that its restart reloads what Postgres holds.
    ///
    /// # Errors
    /// [`PgBotError::Fenced`] when `fence` no longer holds (rolled back), or Postgres failed
    /// or timed out.
    pub async fn persist_calls(
        &self,
        id: BotId,
        calls: &[Effects],
        state: &BotState,
        deliveries: &[crate::notify::DeliveryRecord],
        fence: Option<&Fence>,
    ) -> Result<(), PgBotError> {
        let rows = Rows::encode(calls, state)?;
        let bot = to_db(id)?;
        Ok(self
            .record
            .timed("bots.persist", async {
                let mut client = self.record.client().await?;
                let tx = client.transaction().await?;
                if let Err(fenced) = fenced(&tx, fence).await? {
                    return Ok(Err(fenced));
                }
                rows.write(&tx, bot).await?;
                crate::notify::pg::insert_deliveries(&tx, deliveries).await?;
                tx.commit().await?;
                Ok(Ok(()))
            })
            .await??)
    }
}

/// One flush, encoded before the transaction starts (as columns, one statement per table).
struct Rows {
    order_ids: Vec<i64>,
    order_open: Vec<bool>,
    order_ts: Vec<i64>,
    order_bodies: Vec<serde_json::Value>,
    fill_ids: Vec<i64>,
    fill_ts: Vec<i64>,
    fill_bodies: Vec<serde_json::Value>,
    event_ids: Vec<i64>,
    event_ts: Vec<i64>,
    event_bodies: Vec<serde_json::Value>,
    state: serde_json::Value,
}

impl Rows {
    fn encode(calls: &[Effects], state: &BotState) -> Result<Self, RecordError> {
        // An order that changed twice is written once, as it ended.
        let mut latest: Vec<&Order> = Vec::new();
        for order in calls.iter().flat_map(|fx| &fx.orders) {
            match latest.iter_mut().find(|o| o.id == order.id) {
                Some(slot) => *slot = order,
                None => latest.push(order),
            }
        }
        let fills: Vec<&Fill> = calls.iter().flat_map(|fx| &fx.fills).collect();
        let events: Vec<&BotEvent> = calls.iter().flat_map(|fx| &fx.events).collect();
        Ok(Self {
            order_ids: latest.iter().map(|o| to_db(o.id)).collect::<Result<_, _>>()?,
            order_open: latest.iter().map(|o| o.status.is_open()).collect(),
            order_ts: latest.iter().map(|o| to_db(o.updated_ts)).collect::<Result<_, _>>()?,
            order_bodies: latest.iter().map(json).collect::<Result<_, _>>()?,
            fill_ids: fills.iter().map(|f| to_db(f.id)).collect::<Result<_, _>>()?,
            fill_ts: fills.iter().map(|f| to_db(f.ts)).collect::<Result<_, _>>()?,
            fill_bodies: fills.iter().map(json).collect::<Result<_, _>>()?,
            event_ids: events.iter().map(|e| to_db(e.id)).collect::<Result<_, _>>()?,
            event_ts: events.iter().map(|e| to_db(e.ts)).collect::<Result<_, _>>()?,
            event_bodies: events.iter().map(json).collect::<Result<_, _>>()?,
            state: json(state)?,
        })
    }

    /// The statements of one flush, in `tx`: prepared once per pooled connection, then sent
    /// together (pipelined) and answered in order, so a flush costs one round trip after its
    /// fence check, not one per table. If one fails, the ones after it fail too (the
    /// transaction is aborted) and nothing is committed.
    async fn write(&self, tx: &PoolTransaction<'_>, bot: i64) -> Result<(), tokio_postgres::Error> {
        let orders = async {
            if self.order_ids.is_empty() {
                return Ok(0);
            }
            let statement = tx.prepare_cached(ORDERS_SQL).await?;
            let params: [&(dyn ToSql + Sync); 5] =
                [&bot, &self.order_ids, &self.order_open, &self.order_ts, &self.order_bodies];
            tx.execute(&statement, &params).await
        };
        let fills = async {
            if self.fill_ids.is_empty() {
                return Ok(0);
            }
            let statement = tx.prepare_cached(FILLS_SQL).await?;
            let params: [&(dyn ToSql + Sync); 4] =
                [&bot, &self.fill_ids, &self.fill_ts, &self.fill_bodies];
            tx.execute(&statement, &params).await
        };
        let events = async {
            if self.event_ids.is_empty() {
                return Ok(0);
            }
            let statement = tx.prepare_cached(JOURNAL_SQL).await?;
            let params: [&(dyn ToSql + Sync); 4] =
                [&bot, &self.event_ids, &self.event_ts, &self.event_bodies];
            tx.execute(&statement, &params).await
        };
        let state = async {
            let statement = tx.prepare_cached(STATE_SQL).await?;
            tx.execute(&statement, &[&bot, &self.state]).await
        };
        futures_util::future::try_join4(orders, fills, events, state).await?;
        Ok(())
    }
}

/// An order as it ended, in or out of the open-order index with it.
const ORDERS_SQL: &str = "INSERT INTO keel_bot_orders (bot_id, order_id, is_open, updated_ts, body)
     SELECT $1, * FROM unnest($2::bigint[], $3::boolean[], $4::bigint[], $5::jsonb[])
     ON CONFLICT (bot_id, order_id) DO UPDATE
     SET is_open = excluded.is_open, updated_ts = excluded.updated_ts, body = excluded.body";
/// Fills (written once; a rewrite replaces).
const FILLS_SQL: &str = "INSERT INTO keel_bot_fills (bot_id, fill_id, ts, body)
     SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::jsonb[])
     ON CONFLICT (bot_id, fill_id) DO UPDATE SET ts = excluded.ts, body = excluded.body";
/// Journal lines.
const JOURNAL_SQL: &str = "INSERT INTO keel_bot_journal (bot_id, event_id, ts, body)
     SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::jsonb[])
     ON CONFLICT (bot_id, event_id) DO UPDATE SET ts = excluded.ts, body = excluded.body";
/// The state after the flush.
const STATE_SQL: &str = "INSERT INTO keel_bot_positions (bot_id, state) VALUES ($1, $2)
     ON CONFLICT (bot_id) DO UPDATE SET state = excluded.state, updated_at = clock_timestamp()";

mod limits;
mod upkeep;
pub use upkeep::{PRUNE_BATCH, Pruned, SWEEP_LOCK};

#[cfg(test)]
mod tests;
