//! Where bots live in sled: definitions, orders, fills, state and the journal.
//!
//! Layout (keys are big-endian, so one bot's rows scan together and in id order):
//! - `bots`: `id_key(bot)` → [`BotRecord`]
//! - `orders`: `pair_key(bot, order)` → [`Order`] (rewritten as it changes)
//! - `fills`: `pair_key(bot, fill)` → [`Fill`]
//! - `positions`: `id_key(bot)` → [`BotState`] (position, counters, strategy state)
//! - `events`: `pair_key(bot, event)` → [`BotEvent`]
//!
//! - `outbox`: when the Postgres sink is on, a copy of every order change, fill and journal line
//!   (see [`crate::sink::outbox`])
//!
//! One engine call's [`Effects`] are written in one transaction with the new [`BotState`] (and
//! their outbox copies), so after a crash the position always equals the fills that are stored,
//! and the outbox holds exactly what the other trees do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::engine::{BotEvent, BotState, Effects};
use super::model::{BotId, BotRecord, UserId};
use crate::sink::outbox::{Outbox, OutboxRecord, RecordKind};
use crate::store::{Store, StoreError, decode, encode, id_key, pair_key, trees};
use crate::trading::{Fill, Order};

/// Most rows one page returns.
pub const MAX_PAGE: usize = 500;

/// Typed access to the bot trees.
#[derive(Debug, Clone)]
pub struct BotRepo {
    store: Store,
    bots: sled::Tree,
    orders: sled::Tree,
    fills: sled::Tree,
    positions: sled::Tree,
    events: sled::Tree,
    /// Set when the Postgres sink is on: [`BotRepo::persist`] then copies every change here.
    outbox: Option<Outbox>,
    /// Bot → owner, for the outbox rows (an owner never changes; read once per bot).
    owners: Arc<Mutex<HashMap<BotId, UserId>>>,
}

/// One page of rows, oldest first, and the cursor for the next one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

impl BotRepo {
    /// Opens the trees.
    ///
    /// # Errors
    /// sled could not open a tree.
    pub fn new(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            store: store.clone(),
            bots: store.tree(trees::BOTS)?,
            orders: store.tree(trees::ORDERS)?,
            fills: store.tree(trees::FILLS)?,
            positions: store.tree(trees::POSITIONS)?,
            events: store.tree(trees::EVENTS)?,
            outbox: None,
            owners: Arc::default(),
        })
    }

    /// Also writes every order change, fill and journal line to `outbox`, in the same
    /// transaction. Only for the Postgres sink: without a sink draining it the outbox would grow
    /// without bound.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Whether changes are copied to the outbox.
    pub fn writes_outbox(&self) -> bool {
        self.outbox.is_some()
    }

    /// The store, for commits.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes a bot definition (not yet durable: commit before acknowledging).
    ///
    /// # Errors
    /// Encoding or sled failed.
    pub fn put_bot(&self, bot: &BotRecord) -> Result<(), StoreError> {
        self.bots.insert(id_key(bot.id), encode(bot)?)?;
        Ok(())
    }

    /// One bot's definition.
    ///
    /// # Errors
    /// sled failed or the row does not decode.
    pub fn bot(&self, id: BotId) -> Result<Option<BotRecord>, StoreError> {
        self.bots.get(id_key(id))?.map(|raw| decode(&raw)).transpose()
    }

    /// Every bot, in id order.
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn all_bots(&self) -> Result<Vec<BotRecord>, StoreError> {
        self.bots.iter().values().map(|raw| decode(&raw?)).collect()
    }

    /// Deletes a bot and everything it recorded. The definition goes first, so an interrupted
    /// delete leaves only unreachable rows behind.
    ///
    /// # Errors
    /// sled failed.
    pub fn delete_bot(&self, id: BotId) -> Result<(), StoreError> {
        self.bots.remove(id_key(id))?;
        self.owners.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        self.positions.remove(id_key(id))?;
        for tree in [&self.orders, &self.fills, &self.events] {
            for key in tree.range(pair_key(id, 0)..=pair_key(id, u64::MAX)).keys() {
                tree.remove(key?)?;
            }
        }
        Ok(())
    }

    /// The bot's durable state; the default for a bot that never traded.
    ///
    /// # Errors
    /// sled failed or the row does not decode.
    pub fn state(&self, id: BotId) -> Result<BotState, StoreError> {
        Ok(self.positions.get(id_key(id))?.map(|raw| decode(&raw)).transpose()?.unwrap_or_default())
    }

    /// Writes the state alone (periodic strategy snapshots).
    ///
    /// # Errors
    /// Encoding or sled failed.
    pub fn put_state(&self, id: BotId, state: &BotState) -> Result<(), StoreError> {
        self.positions.insert(id_key(id), encode(state)?)?;
        Ok(())
    }

    /// The bot's orders that may still fill.
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn open_orders(&self, id: BotId) -> Result<Vec<Order>, StoreError> {
        let mut open = Vec::new();
        for raw in self.orders.range(pair_key(id, 0)..=pair_key(id, u64::MAX)).values() {
            let order: Order = decode(&raw?)?;
            if order.status.is_open() {
                open.push(order);
            }
        }
        Ok(open)
    }

    /// One order.
    ///
    /// # Errors
    /// sled failed or the row does not decode.
    pub fn order(&self, bot: BotId, order: u64) -> Result<Option<Order>, StoreError> {
        self.orders.get(pair_key(bot, order))?.map(|raw| decode(&raw)).transpose()
    }

    /// Writes one engine call's effects and the state after it, atomically, with their outbox
    /// copies when the sink is on.
    ///
    /// # Errors
    /// Encoding or sled failed; nothing was written.
    pub fn persist(&self, id: BotId, fx: &Effects, state: &BotState) -> Result<(), StoreError> {
        // Encoded once, outside the closure: sled may run it more than once.
        let orders = encoded(id, &fx.orders, |o| o.id)?;
        let fills = encoded(id, &fx.fills, |f| f.id)?;
        let events = encoded(id, &fx.events, |e| e.id)?;
        let state = encode(state)?;
        let mut trees = vec![&self.orders, &self.fills, &self.events, &self.positions];
        let staged = match &self.outbox {
            Some(outbox) => {
                trees.push(outbox.tree());
                let user_id = self.owner(id)?;
                let copies = [
                    (RecordKind::Order, &orders),
                    (RecordKind::Fill, &fills),
                    (RecordKind::Event, &events),
                ];
                let records: Vec<OutboxRecord> = copies
                    .into_iter()
                    .flat_map(|(kind, rows)| {
                        rows.iter().map(move |(entity_id, _, payload)| OutboxRecord {
                            kind,
                            bot_id: id,
                            user_id,
                            entity_id: *entity_id,
                            payload: payload.clone(),
                        })
                    })
                    .collect();
                outbox.stage(&records)?
            }
            None => Vec::new(),
        };
        self.store.transaction(&trees, |t| {
            for (table, rows) in [(&t[0], &orders), (&t[1], &fills), (&t[2], &events)] {
                for (_, key, value) in rows {
                    table.insert(key.as_slice(), value.as_slice())?;
                }
            }
            t[3].insert(id_key(id).as_slice(), state.as_slice())?;
            if let Some(outbox) = t.get(4) {
                for (key, value) in &staged {
                    outbox.insert(key.as_slice(), value.as_slice())?;
                }
            }
            Ok(())
        })?;
        if let Some(outbox) = &self.outbox {
            outbox.added(staged.len());
        }
        Ok(())
    }

    /// The bot's owner, from the cache or the `bots` tree.
    fn owner(&self, id: BotId) -> Result<Option<UserId>, StoreError> {
        if let Some(user) = self.owners.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
            return Ok(Some(*user));
        }
        let Some(bot) = self.bot(id)? else { return Ok(None) };
        self.owners.lock().unwrap_or_else(PoisonError::into_inner).insert(id, bot.user_id);
        Ok(Some(bot.user_id))
    }

    /// A page of orders with ids above `after` (and at most `upto`, the durable watermark).
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn orders(
        &self,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<Order>, StoreError> {
        page(&self.orders, id, after, upto, limit)
    }

    /// A page of fills.
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn fills(
        &self,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<Fill>, StoreError> {
        page(&self.fills, id, after, upto, limit)
    }

    /// A page of journal events.
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn events(
        &self,
        id: BotId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Page<BotEvent>, StoreError> {
        page(&self.events, id, after, upto, limit)
    }

    /// Every fill of a bot, for performance figures.
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn all_fills(&self, id: BotId, upto: u64) -> Result<Vec<Fill>, StoreError> {
        Ok(page(&self.fills, id, 0, upto, usize::MAX)?.items)
    }
}

/// A row encoded for a transaction: its id, its key and its JSON.
type EncodedRow = (u64, [u8; 16], Vec<u8>);

/// Each row's (id, key, JSON), for a transaction.
fn encoded<T: Serialize>(
    bot: BotId,
    rows: &[T],
    id: impl Fn(&T) -> u64,
) -> Result<Vec<EncodedRow>, StoreError> {
    rows.iter().map(|row| Ok((id(row), pair_key(bot, id(row)), encode(row)?))).collect()
}

fn page<T: DeserializeOwned>(
    tree: &sled::Tree,
    owner: u64,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Page<T>, StoreError> {
    let (Some(from), true) = (after.checked_add(1), after < upto) else {
        return Ok(Page { items: Vec::new(), next_after: None });
    };
    let mut items = Vec::new();
    let mut last = after;
    let mut more = false;
    for row in tree.range(pair_key(owner, from)..=pair_key(owner, upto)) {
        let (key, raw) = row?;
        if items.len() == limit {
            more = true;
            break;
        }
        last = crate::store::key_id(key.get(8..).unwrap_or_default())?;
        items.push(decode(&raw)?);
    }
    Ok(Page { items, next_after: more.then_some(last) })
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::bot::engine::BotEventKind;
    use crate::store::StoreConfig;
    use crate::trading::{Liquidity, Side};

    fn effects(bot_id: BotId) -> Effects {
        let mut fx = Effects::default();
        fx.fills.push(Fill {
            id: 1,
            bot_id,
            order_id: 1,
            side: Side::Buy,
            price: Decimal::new(100, 0),
            qty: Decimal::new(1, 3),
            fee: Decimal::ZERO,
            liquidity: Liquidity::Taker,
            tag: 0,
            ts: 1,
        });
        for id in [1, 2] {
            fx.events.push(BotEvent {
                id,
                ts: 1,
                kind: BotEventKind::Log { level: "info".into(), message: format!("line {id}") },
            });
        }
        fx
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        (dir, store)
    }

    #[test]
    fn without_the_sink_nothing_goes_to_the_outbox() {
        let (_dir, store) = open();
        let repo = BotRepo::new(&store).unwrap();
        assert!(!repo.writes_outbox());
        repo.persist(9, &effects(9), &BotState::default()).unwrap();
        assert_eq!(repo.all_fills(9, u64::MAX).unwrap().len(), 1);
        assert!(store.tree(trees::OUTBOX).unwrap().is_empty());
    }

    #[test]
    fn with_the_sink_every_fill_and_event_is_copied_in_the_same_write() {
        let (_dir, store) = open();
        let outbox = Outbox::open(&store).unwrap();
        let repo = BotRepo::new(&store).unwrap().with_outbox(outbox.clone());
        repo.persist(9, &effects(9), &BotState::default()).unwrap();
        assert_eq!(outbox.backlog(), 3);
        let rows: Vec<OutboxRecord> = outbox
            .oldest(10)
            .unwrap()
            .iter()
            .map(|(_, raw)| OutboxRecord::decode(raw).unwrap())
            .collect();
        let kinds: Vec<(RecordKind, u64)> = rows.iter().map(|r| (r.kind, r.entity_id)).collect();
        assert_eq!(kinds, [(RecordKind::Fill, 1), (RecordKind::Event, 1), (RecordKind::Event, 2)],);
        // No bot record was stored, so the owner is unknown rather than invented.
        assert!(rows.iter().all(|r| r.bot_id == 9 && r.user_id.is_none()));
        let fill: Fill = decode(&rows[0].payload).unwrap();
        assert_eq!(fill, repo.all_fills(9, u64::MAX).unwrap()[0]);
    }
}
