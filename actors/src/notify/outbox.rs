//! The durable outbox of deliveries: the `notify_outbox` tree, `pair_key(user, delivery)` →
//! [`DeliveryRecord`], pending ones and the recent finished ones an owner can list.
//!
//! A delivery is written in the same sled transaction as the journal line it comes from
//! ([`Notifications::stage`], used by [`crate::bot::BotRepo`]), or right after the write it
//! reports (the kill switch, the daily summary: [`Notifications::enqueue`]). The notifier sends
//! nothing before a store commit covers it, so a delivery that a restart could take back is
//! never sent, and one that was acknowledged is never lost.

use std::sync::{Arc, Mutex, PoisonError};

use keel_core::engine::Effects;
use keel_core::notify::NotifyEvent;
use serde::{Deserialize, Serialize};

use super::channels::Channels;
use super::pg::NotifyRecord;
use super::{DeliveryView, NotifyError};
use crate::identity::now_ms;
use crate::store::{Store, StoreError, decode, encode, id_key, pair_key, trees};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = NotificationDeliveryState)]
pub enum DeliveryState {
    /// Waiting for its first or next attempt.
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Given up: attempts exhausted, refused by the SSRF guard, or refused for good.
    Failed,
}

/// A stored delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Its id.
    pub id: u64,
    /// Owner.
    pub user_id: u64,
    /// The channel.
    pub channel_id: u64,
    /// What to tell.
    pub event: NotifyEvent,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// Enqueued, ms since the epoch.
    pub created_at_ms: u64,
    /// When it is due (pending only), ms since the epoch.
    pub next_attempt_ms: Option<u64>,
    /// The last answer's status.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at_ms: Option<u64>,
    /// When it was delivered or given up, ms since the epoch.
    pub finished_at_ms: Option<u64>,
}

impl DeliveryRecord {
    /// Its key in the tree.
    pub fn key(&self) -> [u8; 16] {
        pair_key(self.user_id, self.id)
    }

    /// The webhook body: the same bytes on every attempt.
    pub fn body(&self) -> Vec<u8> {
        serde_json::json!({
            "id": self.id,
            "type": self.event.kind,
            "created_at_ms": self.event.ts,
            "bot_id": self.event.bot_id,
            "data": self.event.data,
        })
        .to_string()
        .into_bytes()
    }
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(r: &DeliveryRecord) -> Self {
        Self {
            id: r.id,
            channel_id: r.channel_id,
            event: r.event.kind,
            bot_id: r.event.bot_id,
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error.clone(),
            next_attempt_at_ms: r.next_attempt_ms,
            delivered_at_ms: r.delivered_at_ms,
            created_at_ms: r.created_at_ms,
        }
    }
}

/// Rows staged for one transaction: (key, value).
pub type Staged = Vec<([u8; 16], Vec<u8>)>;

/// The handle on channels and the outbox that the bot repository, the HTTP façade and the
/// notifier share.
#[derive(Debug, Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// Cluster mode with `postgres_url`: channels and deliveries are recorded in Postgres.
    record: Option<NotifyRecord>,
    channels: Channels,
    outbox: sled::Tree,
    /// Keys written since the notifier last looked.
    fresh: Mutex<Vec<[u8; 16]>>,
    /// Wakes the notifier.
    wake: tokio::sync::Notify,
}

impl Notifications {
    /// Opens the trees and loads the rules.
    ///
    /// # Errors
    /// The store failed.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Self::open_in(store, None)
    }

    /// Opens the trees and loads the rules; with `record` (cluster mode with `postgres_url`)
    /// channels and deliveries are recorded in Postgres ([`super::pg`]) and the trees hold
    /// the working copy of the channels of the users this node holds.
    ///
    /// # Errors
    /// The store failed.
    pub fn open_in(store: &Store, record: Option<NotifyRecord>) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                record,
                channels: Channels::open(store)?,
                outbox: store.tree(trees::NOTIFY_OUTBOX)?,
                fresh: Mutex::default(),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// The channels.
    pub fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    /// The outbox tree, for a transaction that stages rows.
    pub fn tree(&self) -> &sled::Tree {
        &self.inner.outbox
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Cluster mode with `postgres_url`: the tables channels and deliveries are recorded in.
    pub fn record(&self) -> Option<&NotifyRecord> {
        self.inner.record.as_ref()
    }

    fn rows(&self, user_id: u64, events: Vec<NotifyEvent>) -> Result<Staged, StoreError> {
        let mut rows = Staged::new();
        for record in self.deliveries(user_id, events, || self.inner.store.next_id())? {
            rows.push((record.key(), encode(&record)?));
        }
        Ok(rows)
    }

    /// The pending deliveries `events` give the owner's channels that want them, with ids from
    /// `next_id`.
    fn deliveries(
        &self,
        user_id: u64,
        events: Vec<NotifyEvent>,
        mut next_id: impl FnMut() -> Result<u64, StoreError>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut deliveries = Vec::new();
        let now = now_ms();
        for event in events {
            for channel_id in self.inner.channels.subscribers(user_id, event.kind) {
                deliveries.push(DeliveryRecord {
                    id: next_id()?,
                    user_id,
                    channel_id,
                    event: event.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    created_at_ms: now,
                    next_attempt_ms: Some(now),
                    last_status: None,
                    last_error: None,
                    delivered_at_ms: None,
                    finished_at_ms: None,
                });
            }
        }
        Ok(deliveries)
    }

    /// Cluster mode with `postgres_url`: the deliveries one bot flush gives (ids are Postgres's),
    /// inserted in the flush's own Postgres transaction. Empty, at the cost of one map lookup,
    /// for an owner with no channels.
    pub fn recorded_deliveries(
        &self,
        user_id: u64,
        bot_id: u64,
        calls: &[Effects],
    ) -> Vec<DeliveryRecord> {
        if self.inner.record.is_none() || !self.inner.channels.has_any(user_id) {
            return Vec::new();
        }
        let events = calls
            .iter()
            .flat_map(|fx| &fx.events)
            .flat_map(|line| NotifyEvent::from_journal(bot_id, line))
            .collect();
        self.deliveries(user_id, events, || Ok(0)).unwrap_or_default()
    }

    /// Wakes the notifier (rows were committed in Postgres).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The deliveries one bot write gives (fills, status changes, self-pauses), for the
    /// transaction that writes its journal lines. Ids are taken here: the transaction's closure
    /// may run more than once. Empty, at the cost of one map lookup, for an owner with no
    /// channels.
    ///
    /// # Errors
    /// The store failed to give an id, or encoding failed.
    pub fn stage(
        &self,
        user_id: u64,
        bot_id: u64,
        calls: &[Effects],
    ) -> Result<Staged, StoreError> {
        // With Postgres the deliveries go in the bot's Postgres flush instead.
        if self.inner.record.is_some() || !self.inner.channels.has_any(user_id) {
            return Ok(Staged::new());
        }
        let events = calls
            .iter()
            .flat_map(|fx| &fx.events)
            .flat_map(|line| NotifyEvent::from_journal(bot_id, line))
            .collect();
        self.rows(user_id, events)
    }

    /// Tells the notifier that `rows` were written (once their transaction has).
    pub fn written(&self, rows: &Staged) {
        if rows.is_empty() {
            return;
        }
        self.inner
            .fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(rows.iter().map(|(key, _)| *key));
        self.inner.wake.notify_one();
    }

    /// Enqueues `event` for the owner's channels that want it, outside a bot's transaction
    /// (the kill switch's report, the daily summary). Durable at the next store commit.
    ///
    /// # Errors
    /// The store failed.
    pub fn enqueue(&self, user_id: u64, event: NotifyEvent) -> Result<usize, StoreError> {
        if let Some(record) = self.inner.record.clone() {
            return Ok(self.enqueue_recorded(record, user_id, event));
        }
        let rows = self.rows(user_id, vec![event])?;
        for (key, value) in &rows {
            self.inner.outbox.insert(key, value.as_slice())?;
        }
        self.written(&rows);
        Ok(rows.len())
    }

    /// Cluster mode with `postgres_url`: inserts the event's deliveries in Postgres under the
    /// owner's fence, on a task of its own (the callers are actors); how many. One this node
    /// cannot record (the owner moved, Postgres failed) is logged and lost.
    fn enqueue_recorded(&self, record: NotifyRecord, user_id: u64, event: NotifyEvent) -> usize {
        let rows = self.deliveries(user_id, vec![event], || Ok(0)).unwrap_or_default();
        let count = rows.len();
        if count == 0 {
            return 0;
        }
        let notifications = self.clone();
        actix::spawn(async move {
            let written = match record.fence(user_id).await {
                Ok(Some(fence)) => record.table.enqueue(&rows, &fence).await.map(|r| r.is_ok()),
                Ok(None) => Ok(false),
                Err(err) => Err(err),
            };
            match written {
                Ok(true) => notifications.wake(),
                Ok(false) => tracing::warn!(user_id, "notification not enqueued: owner moved"),
                Err(err) => {
                    tracing::warn!(user_id, error = %err.detail(), "notification not enqueued")
                }
            }
        });
        count
    }

    /// Takes the keys written since the last call.
    pub(super) fn take_fresh(&self) -> Vec<[u8; 16]> {
        std::mem::take(&mut *self.inner.fresh.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until something is written.
    pub(super) async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    /// One delivery.
    ///
    /// # Errors
    /// The store failed.
    pub fn delivery(&self, key: &[u8]) -> Result<Option<DeliveryRecord>, StoreError> {
        self.inner.outbox.get(key)?.map(|raw| decode(&raw)).transpose()
    }

    /// Writes a delivery's row as it now stands.
    ///
    /// # Errors
    /// The store failed.
    pub fn put_delivery(&self, record: &DeliveryRecord) -> Result<(), StoreError> {
        self.inner.outbox.insert(record.key(), encode(record)?)?;
        Ok(())
    }

    /// Every pending delivery (start-up).
    ///
    /// # Errors
    /// The store failed.
    pub fn pending(&self) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut pending = Vec::new();
        for raw in self.inner.outbox.iter().values() {
            let record: DeliveryRecord = decode(&raw?)?;
            if record.state == DeliveryState::Pending {
                pending.push(record);
            }
        }
        Ok(pending)
    }

    /// A user's most recent deliveries, newest first, at most `limit`.
    ///
    /// # Errors
    /// The store failed.
    pub fn recent(&self, user_id: u64, limit: usize) -> Result<Vec<DeliveryView>, StoreError> {
        self.inner
            .outbox
            .scan_prefix(id_key(user_id))
            .values()
            .rev()
            .take(limit)
            .map(|raw| Ok(DeliveryView::from(&decode::<DeliveryRecord>(&raw?)?)))
            .collect()
    }

    /// Removes finished deliveries that finished before `cutoff_ms`; returns how many.
    ///
    /// # Errors
    /// The store failed.
    pub fn prune(&self, cutoff_ms: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.inner.outbox.iter() {
            let (key, raw) = entry?;
            let record: DeliveryRecord = decode(&raw)?;
            if record.finished_at_ms.is_some_and(|at| at < cutoff_ms) {
                self.inner.outbox.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Account deletion: the user's channels and every delivery row of theirs. Not durable
    /// until the caller commits.
    ///
    /// # Errors
    /// The store failed.
    pub fn remove_user(&self, user_id: u64) -> Result<(usize, usize), NotifyError> {
        let channels = self.inner.channels.remove_user(user_id)?;
        let keys: Vec<_> =
            self.inner.outbox.scan_prefix(id_key(user_id)).keys().collect::<Result<_, _>>()?;
        for key in &keys {
            self.inner.outbox.remove(key)?;
        }
        Ok((channels, keys.len()))
    }
}

#[cfg(test)]
mod tests {
    use keel_core::bot::BotStatus;
    use keel_core::engine::{BotEvent, BotEventKind};
    use keel_core::notify::EventKind;

    use super::*;
    use crate::notify::channels::{ChannelRecord, Target};
    use crate::store::StoreConfig;
    use crate::vault::Envelope;

    fn channel(id: u64, user_id: u64, events: Vec<EventKind>) -> ChannelRecord {
        ChannelRecord {
            id,
            user_id,
            target: Target::Webhook { url: format!("https://example.com/{id}") },
            events,
            secret: Envelope {
                key_id: "k".into(),
                dek_nonce: String::new(),
                wrapped_dek: String::new(),
                nonce: String::new(),
                ciphertext: String::new(),
            },
            created_at_ms: 0,
        }
    }

    fn paused(reason: Option<&str>) -> Effects {
        let kind =
            BotEventKind::Status { status: BotStatus::Paused, reason: reason.map(String::from) };
        Effects { events: vec![BotEvent { id: 1, ts: 5, kind }], ..Effects::default() }
    }

    #[test]
    fn a_write_stages_one_row_per_channel_that_wants_each_event_and_deletion_removes_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let notifications = Notifications::open(&store).unwrap();
        assert!(notifications.stage(1, 10, &[paused(Some("daily loss"))]).unwrap().is_empty());

        let channels = notifications.channels();
        channels
            .insert(&channel(100, 1, vec![EventKind::BotStatus, EventKind::RiskPause]))
            .unwrap();
        channels.insert(&channel(101, 1, vec![EventKind::RiskPause])).unwrap();
        channels.insert(&channel(102, 1, vec![EventKind::Fill])).unwrap();
        channels.insert(&channel(200, 2, vec![EventKind::RiskPause])).unwrap();

        // An owner's pause is a status change only; a self-pause is also a risk pause.
        assert_eq!(notifications.stage(1, 10, &[paused(None)]).unwrap().len(), 1);
        let rows = notifications.stage(1, 10, &[paused(Some("daily loss"))]).unwrap();
        let mut got: Vec<(u64, EventKind)> = rows
            .iter()
            .map(|(_, raw)| decode::<DeliveryRecord>(raw).unwrap())
            .map(|r| (r.channel_id, r.event.kind))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [(100, EventKind::BotStatus), (100, EventKind::RiskPause), (101, EventKind::RiskPause)]
        );
        for (key, value) in &rows {
            notifications.tree().insert(key, value.as_slice()).unwrap();
        }
        notifications.written(&rows);
        assert_eq!(notifications.take_fresh().len(), 3);
        assert_eq!(notifications.pending().unwrap().len(), 3);
        let event =
            NotifyEvent { kind: EventKind::RiskPause, bot_id: None, ts: 1, data: "x".into() };
        assert_eq!(notifications.enqueue(2, event).unwrap(), 1);
        assert_eq!(notifications.recent(1, 2).unwrap().len(), 2, "limited, newest first");

        assert_eq!(notifications.remove_user(1).unwrap(), (3, 3));
        assert!(!channels.has_any(1) && channels.list(1).unwrap().is_empty());
        assert!(notifications.recent(1, 10).unwrap().is_empty());
        assert_eq!(notifications.recent(2, 10).unwrap().len(), 1, "other users keep theirs");
        // The rules survive a reopen.
        let reopened = Notifications::open(&store).unwrap();
        assert_eq!(reopened.channels().subscribers(2, EventKind::RiskPause), vec![200]);
        assert!(channels.any() && reopened.channels().any());
        channels.remove(2, 200).unwrap();
        assert!(!channels.any(), "none left");
    }
}
