//! Where bots live in sled: definitions, orders, fills, state and the journal.
//!
//! Layout (keys are big-endian, so one bot's rows scan together and in id order):
//! - `bots`: `id_key(bot)` → [`BotRecord`]
//! - `orders`: `pair_key(bot, order)` → [`Order`] (rewritten as it changes)
//! - `fills`: `pair_key(bot, fill)` → [`Fill`]
//! - `positions`: `id_key(bot)` → [`BotState`] (position, counters, strategy state)
//! - `events`: `pair_key(bot, event)` → [`BotEvent`]
//!
//! One engine call's [`Effects`] are written in one transaction with the new [`BotState`], so
//! after a crash the position always equals the fills that are stored.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::engine::{BotEvent, BotState, Effects};
use super::model::{BotId, BotRecord};
use crate::store::{Store, StoreError, decode, encode, encode_tx, id_key, pair_key, trees};
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
}

/// One page of rows, oldest first, and the cursor for the next one.
#[derive(Debug, Clone, Serialize)]
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
        })
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

    /// Writes one engine call's effects and the state after it, atomically.
    ///
    /// # Errors
    /// Encoding or sled failed; nothing was written.
    pub fn persist(&self, id: BotId, fx: &Effects, state: &BotState) -> Result<(), StoreError> {
        let trees = [&self.orders, &self.fills, &self.events, &self.positions];
        self.store.transaction(&trees, |t| {
            for order in &fx.orders {
                t[0].insert(&pair_key(id, order.id), encode_tx(order)?)?;
            }
            for fill in &fx.fills {
                t[1].insert(&pair_key(id, fill.id), encode_tx(fill)?)?;
            }
            for event in &fx.events {
                t[2].insert(&pair_key(id, event.id), encode_tx(event)?)?;
            }
            t[3].insert(&id_key(id), encode_tx(state)?)?;
            Ok(())
        })
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
