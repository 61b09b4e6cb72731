//! Notification channels and their outbox in Postgres (cluster mode with `postgres_url`): the
//! tables `keel_notify_channels` and `keel_notify_outbox` of schema step 5
//! ([`crate::pg::migrations`]).
//!
//! - **Channels.** Postgres is the record; the node holding the owner's lease keeps a working
//!   copy in its `notify_channels` tree (the rules a bot's flush consults), replaced from here
//!   when it takes the owner and dropped when it loses them (`bot::supervisor::postgres`).
//!   Creates and deletes commit here under the owner's [`Fence`] before the answer. A secret is
//!   stored only as the vault's envelope (ciphertext), bound to the channel id drawn here first.
//! - **Outbox.** A bot's deliveries are inserted in the same transaction as the journal lines
//!   they come from (`PgBotRepo::persist_calls`), so a delivery exists exactly when its event
//!   was committed. The notifier of the node holding the owner's lease makes them
//!   (`notify::pg_deliver`), and writes each outcome back under the fence: deliveries pending
//!   when a node dies are made by the next owner (at least once: receivers deduplicate on the
//!   `Keel-Delivery` id and the body's `id`, unique across nodes as they come from the identity
//!   column).

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Transaction;

use super::DeliveryView;
use super::channels::ChannelRecord;
use super::outbox::{DeliveryRecord, DeliveryState};
use crate::pg::fence::{Fence, Fenced, fenced};
use crate::pg::{PgRecord, RecordError, from_db, to_db};

/// Finished rows one retention statement removes at most.
const PRUNE_BATCH: i64 = 1000;

/// The channels' and the outbox's tables.
#[derive(Debug, Clone)]
pub struct PgNotify {
    record: PgRecord,
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, RecordError> {
    serde_json::to_value(value).map_err(|err| RecordError::Corrupt(format!("encoding: {err}")))
}

fn parse<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, RecordError> {
    serde_json::from_value(value).map_err(|err| RecordError::Corrupt(format!("decoding: {err}")))
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    }
}

fn optional(value: Option<u64>) -> Result<Option<i64>, RecordError> {
    value.map(to_db).transpose()
}

/// A delivery row as a record: its id is the row's.
fn delivery(row: &tokio_postgres::Row) -> Result<DeliveryRecord, RecordError> {
    let mut record: DeliveryRecord = parse(row.try_get("body")?)?;
    record.id = from_db(row.try_get("id")?)?;
    Ok(record)
}

/// Inserts `rows` (pending deliveries, their ids ignored) in `tx`: a bot's flush calls it in
/// the transaction that writes the journal lines they come from.
///
/// # Errors
/// Postgres failed or a value does not convert.
pub async fn insert_deliveries(
    tx: &Transaction<'_>,
    rows: &[DeliveryRecord],
) -> Result<(), RecordError> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare(
            "INSERT INTO keel_notify_outbox
                 (user_id, channel_id, state, attempts, next_attempt_ms, finished_at_ms, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    for row in rows {
        let attempts = i32::try_from(row.attempts).unwrap_or(i32::MAX);
        tx.execute(
            &statement,
            &[
                &to_db(row.user_id)?,
                &to_db(row.channel_id)?,
                &state_name(row.state),
                &attempts,
                &optional(row.next_attempt_ms)?,
                &optional(row.finished_at_ms)?,
                &json(row)?,
            ],
        )
        .await?;
    }
    Ok(())
}

impl PgNotify {
    /// The tables of `record` (migrated by [`PgRecord::connect`]).
    pub fn new(record: PgRecord) -> Self {
        Self { record }
    }

    /// A fresh channel id from the identity column (the vault binds the channel's secret to
    /// it before the row is written).
    ///
    /// # Errors
    /// Postgres failed.
    pub async fn next_channel_id(&self) -> Result<u64, RecordError> {
        self.record
            .timed("notify.channel_id", async {
                let client = self.record.client().await?;
                let row = client
                    .query_one(
                        "SELECT nextval(pg_get_serial_sequence('keel_notify_channels', 'id'))",
                        &[],
                    )
                    .await?;
                from_db(row.try_get(0)?)
            })
            .await
    }

    /// Stores a channel under its id (from [`PgNotify::next_channel_id`]). Committed when this
    /// returns `Ok(Ok(()))`.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when this node no longer holds the owner's lease; `Err` when Postgres
    /// failed.
    pub async fn insert_channel(
        &self,
        channel: &ChannelRecord,
        fence: &Fence,
    ) -> Result<Result<(), Fenced>, RecordError> {
        let (id, user_id, created) =
            (to_db(channel.id)?, to_db(channel.user_id)?, to_db(channel.created_at_ms)?);
        let events: Vec<&str> = channel.events.iter().map(|e| e.as_str()).collect();
        let body = json(channel)?;
        fenced!(self.record, "notify.channel_insert", fence, |tx| {
            tx.execute(
                "INSERT INTO keel_notify_channels
                     (id, user_id, kind, events, record, created_at_ms) OVERRIDING SYSTEM VALUE
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &user_id, &channel.target.kind(), &events, &body, &created],
            )
            .await?;
        })
        .await
    }

    /// Deletes one channel of the owner's; whether there was one. Its pending deliveries stay
    /// and fail ("channel deleted") when their turn comes.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when this node no longer holds the owner's lease; `Err` when Postgres
    /// failed.
    pub async fn delete_channel(
        &self,
        user_id: u64,
        id: u64,
        fence: &Fence,
    ) -> Result<Result<bool, Fenced>, RecordError> {
        let row = (user_id, id);
        self.record.delete_owned("notify.channel_delete", "keel_notify_channels", row, fence).await
    }

    /// The owner's channels, oldest first.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn channels_of(&self, user_id: u64) -> Result<Vec<ChannelRecord>, RecordError> {
        let user_id = to_db(user_id)?;
        self.record
            .timed("notify.channels_of", async {
                let client = self.record.client().await?;
                let rows = client
                    .query(
                        "SELECT record FROM keel_notify_channels WHERE user_id = $1 ORDER BY id",
                        &[&user_id],
                    )
                    .await?;
                rows.iter().map(|row| parse(row.try_get("record")?)).collect()
            })
            .await
    }

    /// One channel of the owner's, as a delivery attempt reads it.
    ///
    /// # Errors
    /// Postgres failed or the row does not decode.
    pub async fn channel(
        &self,
        user_id: u64,
        id: u64,
    ) -> Result<Option<ChannelRecord>, RecordError> {
        let (user_id, id) = (to_db(user_id)?, to_db(id)?);
        self.record
            .timed("notify.channel", async {
                let client = self.record.client().await?;
                let row = client
                    .query_opt(
                        "SELECT record FROM keel_notify_channels WHERE user_id = $1 AND id = $2",
                        &[&user_id, &id],
                    )
                    .await?;
                row.map(|row| parse(row.try_get("record")?)).transpose()
            })
            .await
    }

    /// Enqueues `rows` for their owner outside a bot's flush (the kill switch's report, the
    /// daily summary), under the owner's fence.
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when this node no longer holds the owner's lease; `Err` when Postgres
    /// failed.
    pub async fn enqueue(
        &self,
        rows: &[DeliveryRecord],
        fence: &Fence,
    ) -> Result<Result<(), Fenced>, RecordError> {
        fenced!(self.record, "notify.enqueue", fence, |tx| {
            insert_deliveries(&tx, rows).await?;
        })
        .await
    }

    /// Pending deliveries of `users` due at `now_ms`, soonest first, at most `limit`.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn due(
        &self,
        users: &[u64],
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, RecordError> {
        let users = users.iter().map(|&u| to_db(u)).collect::<Result<Vec<i64>, _>>()?;
        let (now, limit) = (to_db(now_ms)?, i64::try_from(limit).unwrap_or(i64::MAX));
        self.record
            .timed("notify.due", async {
                let client = self.record.client().await?;
                let rows = client
                    .query(
                        "SELECT id, body FROM keel_notify_outbox
                         WHERE state = 'pending' AND user_id = ANY($1)
                           AND coalesce(next_attempt_ms, 0) <= $2
                         ORDER BY next_attempt_ms, id LIMIT $3",
                        &[&users, &now, &limit],
                    )
                    .await?;
                rows.iter().map(delivery).collect()
            })
            .await
    }

    /// Writes an attempt's outcome back, under the owner's fence; whether the row was still
    /// there (the account may have been deleted meanwhile).
    ///
    /// # Errors
    /// `Ok(Err(Fenced))` when this node no longer holds the owner's lease (the next owner
    /// makes the delivery again); `Err` when Postgres failed.
    pub async fn record_outcome(
        &self,
        record: &DeliveryRecord,
        fence: &Fence,
    ) -> Result<Result<bool, Fenced>, RecordError> {
        let id = to_db(record.id)?;
        let attempts = i32::try_from(record.attempts).unwrap_or(i32::MAX);
        let (next, finished) =
            (optional(record.next_attempt_ms)?, optional(record.finished_at_ms)?);
        let body = json(record)?;
        fenced!(self.record, "notify.outcome", fence, |tx| {
            let updated = tx
                .execute(
                    "UPDATE keel_notify_outbox
                     SET state = $2, attempts = $3, next_attempt_ms = $4, finished_at_ms = $5,
                         body = $6
                     WHERE id = $1",
                    &[&id, &state_name(record.state), &attempts, &next, &finished, &body],
                )
                .await?;
            updated == 1
        })
        .await
    }

    /// The owner's most recent deliveries, newest first, at most `limit`, made by any node.
    ///
    /// # Errors
    /// Postgres failed or a row does not decode.
    pub async fn recent(
        &self,
        user_id: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryView>, RecordError> {
        let (user_id, limit) = (to_db(user_id)?, i64::try_from(limit).unwrap_or(i64::MAX));
        self.record
            .timed("notify.recent", async {
                let client = self.record.client().await?;
                let rows = client
                    .query(
                        "SELECT id, body FROM keel_notify_outbox WHERE user_id = $1
                         ORDER BY id DESC LIMIT $2",
                        &[&user_id, &limit],
                    )
                    .await?;
                rows.iter().map(|row| Ok(DeliveryView::from(&delivery(row)?))).collect()
            })
            .await
    }

    /// Removes finished deliveries of `users` that finished before `cutoff_ms`, in batches;
    /// how many.
    ///
    /// # Errors
    /// Postgres failed; what earlier batches removed stays removed.
    pub async fn prune(&self, users: &[u64], cutoff_ms: u64) -> Result<u64, RecordError> {
        let users = users.iter().map(|&u| to_db(u)).collect::<Result<Vec<i64>, _>>()?;
        let cutoff = to_db(cutoff_ms)?;
        let mut removed = 0;
        loop {
            let batch = self
                .record
                .timed("notify.prune", async {
                    let client = self.record.client().await?;
                    Ok(client
                        .execute(
                            "DELETE FROM keel_notify_outbox WHERE id IN
                             (SELECT id FROM keel_notify_outbox
                              WHERE state <> 'pending' AND finished_at_ms < $1
                                AND user_id = ANY($2) LIMIT $3)",
                            &[&cutoff, &users, &PRUNE_BATCH],
                        )
                        .await?)
                })
                .await?;
            removed += batch;
            if batch < PRUNE_BATCH as u64 {
                return Ok(removed);
            }
        }
    }
}

/// Cluster mode with `postgres_url`: the tables, and this node's user leases (whose fences
/// every write is made under, and whose users' deliveries this node makes).
#[derive(Debug, Clone)]
pub struct NotifyRecord {
    /// The tables.
    pub table: PgNotify,
    /// This node's user leases.
    pub leases: crate::cluster::users::UserLeases,
}

impl NotifyRecord {
    /// The fence under which this node acts for `user_id`, if it holds the user's lease.
    ///
    /// # Errors
    /// Postgres failed looking the owner up.
    pub async fn fence(&self, user_id: u64) -> Result<Option<Fence>, RecordError> {
        Ok(match self.leases.owner(user_id).await? {
            crate::cluster::users::Owner::Mine(fence) => Some(fence),
            _ => None,
        })
    }
}
