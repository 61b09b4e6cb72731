//! Where bots live in sled: definitions, orders, fills, state and the journal.
//!
//! Layout (keys are big-endian, so one bot's rows scan together and in id order):
//! - `bots`: `id_key(bot)` → [`BotRecord`]
//! - `orders`: `pair_key(bot, order)` → [`Order`] (rewritten as it changes)
//! - `fills`: `pair_key(bot, fill)` → [`Fill`]
//! - `positions`: `id_key(bot)` → [`BotState`] (position, counters, strategy state)
//! - `events`: `pair_key(bot, last event)` → the [`BotEvent`]s of one write, oldest first (a
//!   list: one row per engine call, not per line; rows written before schema 3 hold one event)
//! - `open_orders`: `pair_key(bot, order)` → nothing, for every order that may still fill
//!   (schema 4). Start-up reads a bot's open orders through it instead of scanning every order
//!   the bot ever placed: written in the same transaction as the order, removed when the order
//!   reaches a final status.
//!
//! A trading bot writes an order, a fill and a journal row on every fill, and sled's memory and
//! disk follow their size and number: those three are written in the compact binary form
//! ([`crate::store::compact`], schema 5), which reads the JSON rows older Keels wrote as well.
//! The state row is JSON, deflated when that is shorter ([`encode_packed`]): it holds the
//! strategy's own JSON, and there is one per bot, not one per fill.
//!
//! - `outbox`: when the Postgres sink is on, a copy of every order change, fill and journal line
//!   (see [`crate::sink::outbox`])
//!
//! - `notify_outbox`: when an owner has notification channels, a delivery per fill, status change
//!   and self-pause their rules ask for (see [`crate::notify::outbox`])
//!
//! One engine call's [`Effects`] are written in one transaction with the new [`BotState`] (and
//! their outbox copies), so after a crash the position always equals the fills that are stored,
//! and the outbox holds exactly what the other trees do.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::notify::Notifications;
use crate::sink::outbox::{Outbox, OutboxRecord, RecordKind};
use crate::store::compact::{decode_journal, encode_journal};
use crate::store::tally::Changes;
use crate::store::{
    Store, StoreError, StoredRow, decode, encode, encode_packed, id_key, pair_key, trees,
};
use keel_core::bot::{BotId, BotRecord, UserId};
use keel_core::engine::{BotEvent, BotState, Effects};
use keel_core::trading::{Fill, Order};

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
    /// The open-order index (see the module doc).
    open_orders: sled::Tree,
    /// Set when the Postgres sink is on: [`BotRepo::persist`] then copies every change here.
    outbox: Option<Outbox>,
    /// Owners' notification rules and outbox: deliveries are staged in the same transaction.
    notify: Option<Notifications>,
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
            open_orders: store.tree(trees::OPEN_ORDERS)?,
            outbox: None,
            notify: None,
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

    /// Also stages a notification delivery for every fill, status change and self-pause an
    /// owner's channels want, in the same transaction as the journal line.
    #[must_use]
    pub fn with_notifications(mut self, notifications: Notifications) -> Self {
        self.notify = Some(notifications);
        self
    }

    /// The notifications handle, when on.
    pub fn notifications(&self) -> Option<&Notifications> {
        self.notify.as_ref()
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
        let tallied = [
            (&self.orders, trees::ORDERS),
            (&self.fills, trees::FILLS),
            (&self.events, trees::EVENTS),
            (&self.open_orders, trees::OPEN_ORDERS),
        ];
        for (tree, name) in tallied {
            let mut changes = Changes::default();
            for key in tree.range(pair_key(id, 0)..=pair_key(id, u64::MAX)).keys() {
                let key = key?;
                if let Some(old) = tree.remove(&key)? {
                    changes.removed(name, &key, &old);
                }
            }
            self.store.tally().apply(&changes);
        }
        Ok(())
    }

    /// Replaces everything stored of a bot with a definition, a state and the orders still open
    /// (read from the system of record, `postgres_url`): the node's working copy of a bot whose
    /// owner it has just taken. Nothing goes to the outbox or the notification outbox: it is not
    /// news. Not yet durable: commit before relying on it.
    ///
    /// # Errors
    /// Encoding or sled failed.
    pub fn replace_bot(
        &self,
        bot: &BotRecord,
        state: &BotState,
        open: &[Order],
    ) -> Result<(), StoreError> {
        self.delete_bot(bot.id)?;
        let quiet = Self { outbox: None, notify: None, ..self.clone() };
        let fx = Effects { orders: open.to_vec(), ..Effects::default() };
        quiet.persist(bot.id, &fx, state)?;
        self.put_bot(bot)
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
        self.positions.insert(id_key(id), encode_packed(state)?)?;
        Ok(())
    }

    /// The bot's orders that may still fill, read through the open-order index: the cost follows
    /// the number of open orders, not the bot's history.
    ///
    /// # Errors
    /// sled failed, a row does not decode, or the index names an order that is not stored.
    pub fn open_orders(&self, id: BotId) -> Result<Vec<Order>, StoreError> {
        let mut open = Vec::new();
        for key in self.open_orders.range(pair_key(id, 0)..=pair_key(id, u64::MAX)).keys() {
            let key = key?;
            let raw = self.orders.get(&key)?.ok_or_else(|| {
                StoreError::Corrupt(format!("open-order index names a missing order {key:?}"))
            })?;
            let order = Order::decode_row(&raw)?;
            // The index is written with the order, so this holds; a final order is skipped
            // rather than resumed if it ever does not.
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
        self.orders.get(pair_key(bot, order))?.map(|raw| Order::decode_row(&raw)).transpose()
    }

    /// Writes one engine call's effects and the state after it, atomically, with their outbox
    /// copies when the sink is on.
    ///
    /// # Errors
    /// Encoding or sled failed; nothing was written.
    pub fn persist(&self, id: BotId, fx: &Effects, state: &BotState) -> Result<(), StoreError> {
        self.persist_calls(id, std::slice::from_ref(fx), state)
    }

    /// Writes the effects of several engine calls, oldest first, and the state after the last,
    /// in one transaction: what [`BotRepo::persist`] would write call by call (one journal row
    /// per call, each order as it ended), for writers that batch (`keel store seed`).
    ///
    /// # Errors
    /// Encoding or sled failed; nothing was written.
    pub fn persist_calls(
        &self,
        id: BotId,
        calls: &[Effects],
        state: &BotState,
    ) -> Result<(), StoreError> {
        // Encoded once, outside the closure: sled may run it more than once. An order that
        // changed twice is written once, as it ended.
        let mut latest: Vec<&Order> = Vec::new();
        for order in calls.iter().flat_map(|fx| &fx.orders) {
            match latest.iter_mut().find(|o| o.id == order.id) {
                Some(slot) => *slot = order,
                None => latest.push(order),
            }
        }
        let orders = encoded(id, &latest, |o| o.id)?;
        // An order enters the open-order index with its first open version and leaves it with
        // its final one.
        let open: Vec<(bool, [u8; 16])> =
            latest.iter().map(|o| (o.status.is_open(), pair_key(id, o.id))).collect();
        let all_fills: Vec<&Fill> = calls.iter().flat_map(|fx| &fx.fills).collect();
        let fills = encoded(id, &all_fills, |f| f.id)?;
        // The journal lines of one call share one row, keyed by the last one's id.
        let mut journal = Vec::with_capacity(calls.len());
        for fx in calls {
            if let Some(last) = fx.events.last() {
                journal.push((pair_key(id, last.id), encode_journal(&fx.events)?));
            }
        }
        let state = encode_packed(state)?;
        let mut trees =
            vec![&self.orders, &self.fills, &self.events, &self.positions, &self.open_orders];
        let staged = match &self.outbox {
            Some(outbox) => {
                trees.push(outbox.tree());
                outbox.stage(&self.outbox_records(id, calls)?)?
            }
            None => Vec::new(),
        };
        let outbox_at = trees.len() - 1;
        let notices = match &self.notify {
            Some(notify) if notify.channels().any() => match self.owner(id)? {
                Some(user_id) => notify.stage(user_id, id, calls)?,
                None => Vec::new(),
            },
            _ => Vec::new(),
        };
        let notices_at = trees.len();
        if let (false, Some(notify)) = (notices.is_empty(), &self.notify) {
            trees.push(notify.tree());
        }
        // What the write did to the store's figures: counted again on each run of the closure.
        let changes = RefCell::new(Changes::default());
        self.store.transaction(&trees, |t| {
            let mut changed = changes.borrow_mut();
            *changed = Changes::default();
            let tables = [(&t[0], &orders, trees::ORDERS), (&t[1], &fills, trees::FILLS)];
            for (table, rows, name) in tables {
                for (_, key, value) in rows {
                    let old = table.insert(key.as_slice(), value.as_slice())?;
                    changed.put(name, key, old.as_deref(), value);
                }
            }
            for (key, value) in &journal {
                let old = t[2].insert(key.as_slice(), value.as_slice())?;
                changed.put(trees::EVENTS, key, old.as_deref(), value);
            }
            t[3].insert(id_key(id).as_slice(), state.as_slice())?;
            for (is_open, key) in &open {
                if *is_open {
                    t[4].insert(key.as_slice(), &[])?;
                } else {
                    t[4].remove(key.as_slice())?;
                }
            }
            if !staged.is_empty() {
                for (key, value) in &staged {
                    t[outbox_at].insert(key.as_slice(), value.as_slice())?;
                }
            }
            if !notices.is_empty() {
                for (key, value) in &notices {
                    t[notices_at].insert(key.as_slice(), value.as_slice())?;
                }
            }
            Ok(())
        })?;
        self.store.tally().apply(&changes.into_inner());
        if let Some(outbox) = &self.outbox {
            outbox.added(staged.len());
        }
        if let Some(notify) = &self.notify {
            notify.written(&notices);
        }
        Ok(())
    }

    /// The outbox copies of `calls`: every version of every order, and JSON, as before.
    fn outbox_records(
        &self,
        id: BotId,
        calls: &[Effects],
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let user_id = self.owner(id)?;
        let record = |kind, entity_id, payload| OutboxRecord {
            kind,
            bot_id: id,
            user_id,
            entity_id,
            payload,
        };
        let mut records = Vec::new();
        for fx in calls {
            for order in &fx.orders {
                records.push(record(RecordKind::Order, order.id, encode(order)?));
            }
            for fill in &fx.fills {
                records.push(record(RecordKind::Fill, fill.id, encode(fill)?));
            }
            for event in &fx.events {
                records.push(record(RecordKind::Event, event.id, encode(event)?));
            }
        }
        Ok(records)
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
        journal_page(&self.events, id, after, upto, limit)
    }

    /// Every fill of a bot, for performance figures.
    ///
    /// # Errors
    /// sled failed or a row does not decode.
    pub fn all_fills(&self, id: BotId, upto: u64) -> Result<Vec<Fill>, StoreError> {
        Ok(page(&self.fills, id, 0, upto, usize::MAX)?.items)
    }
}

/// A row encoded for a transaction: its id, its key and its compact form.
type EncodedRow = (u64, [u8; 16], Vec<u8>);

/// Each row's (id, key, compact form), for a transaction.
fn encoded<T: StoredRow>(
    bot: BotId,
    rows: &[&T],
    id: impl Fn(&T) -> u64,
) -> Result<Vec<EncodedRow>, StoreError> {
    rows.iter().map(|row| Ok((id(row), pair_key(bot, id(row)), row.encode_row()?))).collect()
}

/// Decodes one `events` row, in any stored form ([`decode_journal`]).
///
/// # Errors
/// The row does not decode.
pub(crate) fn journal_lines(raw: &[u8]) -> Result<Vec<BotEvent>, StoreError> {
    decode_journal(raw)
}

/// A page of journal lines with ids in (`after`, `upto`], from rows keyed by their last line.
fn journal_page(
    tree: &sled::Tree,
    owner: u64,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Page<BotEvent>, StoreError> {
    let (Some(from), true) = (after.checked_add(1), after < upto) else {
        return Ok(Page { items: Vec::new(), next_after: None });
    };
    let mut items = Vec::new();
    let mut more = false;
    // A row's key is its last line's id, so the first row with a key past `after` holds the
    // first line wanted; rows keep going past `upto` only as far as the one that crosses it.
    'rows: for row in tree.range(pair_key(owner, from)..=pair_key(owner, u64::MAX)) {
        let (_, raw) = row?;
        for line in journal_lines(&raw)? {
            if line.id <= after {
                continue;
            }
            if line.id > upto {
                break 'rows;
            }
            if items.len() == limit {
                more = true;
                break 'rows;
            }
            items.push(line);
        }
    }
    let next_after = more.then(|| items.last().map_or(after, |e| e.id));
    Ok(Page { items, next_after })
}

fn page<T: StoredRow>(
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
        items.push(T::decode_row(&raw)?);
    }
    Ok(Page { items, next_after: more.then_some(last) })
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::store::StoreConfig;
    use keel_core::engine::BotEventKind;
    use keel_core::trading::{Liquidity, OrderOrigin, OrderStatus, OrderType, Side};

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
            commission: None,
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

    fn line(id: u64) -> BotEvent {
        BotEvent {
            id,
            ts: id,
            kind: BotEventKind::Log { level: "info".into(), message: format!("line {id}") },
        }
    }

    #[test]
    fn journal_pages_cut_through_the_rows_of_several_writes() {
        let (_dir, store) = open();
        let repo = BotRepo::new(&store).unwrap();
        // Writes of 3, 1 and 4 lines: rows keyed 3, 4 and 8.
        for ids in [1..=3, 4..=4, 5..=8] {
            let mut fx = Effects::default();
            fx.events.extend(ids.map(line));
            repo.persist(9, &fx, &BotState::default()).unwrap();
        }
        assert_eq!(store.tree(trees::EVENTS).unwrap().len(), 3);
        let ids = |page: &Page<BotEvent>| page.items.iter().map(|e| e.id).collect::<Vec<_>>();
        let page = repo.events(9, 0, u64::MAX, 2).unwrap();
        assert_eq!((ids(&page), page.next_after), (vec![1, 2], Some(2)));
        let page = repo.events(9, 2, u64::MAX, 3).unwrap();
        assert_eq!((ids(&page), page.next_after), (vec![3, 4, 5], Some(5)));
        let page = repo.events(9, 5, u64::MAX, 10).unwrap();
        assert_eq!((ids(&page), page.next_after), (vec![6, 7, 8], None));
        // Nothing past the durable watermark, even inside a row.
        let page = repo.events(9, 0, 6, 10).unwrap();
        assert_eq!((ids(&page), page.next_after), (vec![1, 2, 3, 4, 5, 6], None));
        let page = repo.events(9, 3, 6, 2).unwrap();
        assert_eq!((ids(&page), page.next_after), (vec![4, 5], Some(5)));
        assert!(repo.events(9, 8, u64::MAX, 10).unwrap().items.is_empty());
        assert!(repo.events(8, 0, u64::MAX, 10).unwrap().items.is_empty());
        assert!(repo.events(10, 0, u64::MAX, 10).unwrap().items.is_empty());
    }

    #[test]
    fn an_order_changed_twice_in_one_write_is_stored_as_it_ended() {
        let (_dir, store) = open();
        let repo = BotRepo::new(&store).unwrap();
        let mut fx = Effects::default();
        let mut order = Order {
            id: 1,
            bot_id: 9,
            client_order_id: "k-9-1".into(),
            side: Side::Buy,
            order_type: keel_core::trading::OrderType::Market,
            qty: Decimal::new(1, 3),
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status: keel_core::trading::OrderStatus::New,
            origin: keel_core::trading::OrderOrigin::Strategy,
            tag: 0,
            oco_with: None,
            venue_list: None,
            reason: None,
            created_ts: 1,
            updated_ts: 1,
        };
        fx.orders.push(order.clone());
        order.status = keel_core::trading::OrderStatus::Filled;
        order.filled_qty = order.qty;
        fx.orders.push(order.clone());
        repo.persist(9, &fx, &BotState::default()).unwrap();
        assert_eq!(repo.order(9, 1).unwrap(), Some(order));
        assert!(repo.open_orders(9).unwrap().is_empty());
    }

    fn limit_order(id: u64, status: OrderStatus) -> Order {
        Order {
            id,
            bot_id: 9,
            client_order_id: format!("keel-9-{id:06}"),
            side: Side::Buy,
            order_type: OrderType::limit(Decimal::new(1000, 0)),
            qty: Decimal::new(1, 3),
            filled_qty: Decimal::ZERO,
            avg_fill_price: Decimal::ZERO,
            status,
            origin: OrderOrigin::Manual,
            tag: 0,
            oco_with: None,
            venue_list: None,
            reason: None,
            created_ts: id,
            updated_ts: id,
        }
    }

    fn write_orders(repo: &BotRepo, bot: BotId, orders: Vec<Order>) {
        let fx = Effects { orders, ..Effects::default() };
        repo.persist(bot, &fx, &BotState::default()).unwrap();
    }

    fn indexed(store: &Store) -> Vec<(u64, u64)> {
        store
            .tree(trees::OPEN_ORDERS)
            .unwrap()
            .iter()
            .keys()
            .map(|k| {
                let k = k.unwrap();
                (crate::store::key_id(&k).unwrap(), crate::store::key_id(&k[8..]).unwrap())
            })
            .collect()
    }

    #[test]
    fn open_orders_are_indexed_with_the_write_and_leave_the_index_when_final() {
        let (_dir, store) = open();
        let repo = BotRepo::new(&store).unwrap();
        write_orders(&repo, 9, (1..=3).map(|id| limit_order(id, OrderStatus::Accepted)).collect());
        write_orders(&repo, 8, vec![limit_order(1, OrderStatus::New)]);
        assert_eq!(indexed(&store), [(8, 1), (9, 1), (9, 2), (9, 3)]);
        // One fills in part (still open), one fills, one is canceled.
        let mut partly = limit_order(1, OrderStatus::PartiallyFilled);
        partly.filled_qty = Decimal::new(5, 4);
        write_orders(
            &repo,
            9,
            vec![
                partly.clone(),
                limit_order(2, OrderStatus::Filled),
                limit_order(3, OrderStatus::Canceled),
            ],
        );
        assert_eq!(indexed(&store), [(8, 1), (9, 1)]);
        assert_eq!(repo.open_orders(9).unwrap(), [partly]);
        // An order created and finished in one write never enters the index.
        write_orders(
            &repo,
            9,
            vec![limit_order(4, OrderStatus::Accepted), limit_order(4, OrderStatus::Filled)],
        );
        assert_eq!(indexed(&store), [(8, 1), (9, 1)]);
        // Deleting a bot removes its entries.
        repo.delete_bot(9).unwrap();
        assert_eq!(indexed(&store), [(8, 1)]);
        assert!(repo.open_orders(9).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_order_filled_after_a_restart_leaves_the_index() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            let repo = BotRepo::new(&store).unwrap();
            write_orders(&repo, 9, vec![limit_order(1, OrderStatus::Accepted)]);
            store.commit().await.unwrap();
        }
        let store = crate::store::reopen(dir.path());
        let repo = BotRepo::new(&store).unwrap();
        let open = repo.open_orders(9).unwrap();
        assert_eq!(open.len(), 1);
        let mut filled = open[0].clone();
        filled.status = OrderStatus::Filled;
        filled.filled_qty = filled.qty;
        write_orders(&repo, 9, vec![filled]);
        assert!(repo.open_orders(9).unwrap().is_empty());
        assert!(indexed(&store).is_empty());
    }

    #[test]
    fn batched_calls_write_what_one_call_at_a_time_would() {
        let (_one_dir, one) = open();
        let (_many_dir, many) = open();
        let (one_repo, many_repo) = (BotRepo::new(&one).unwrap(), BotRepo::new(&many).unwrap());
        let calls: Vec<Effects> = (1..=3)
            .map(|id| {
                let mut fx = Effects::default();
                fx.orders.push(limit_order(id, OrderStatus::Accepted));
                fx.events.push(line(id));
                fx
            })
            .collect();
        for fx in &calls {
            one_repo.persist(9, fx, &BotState::default()).unwrap();
        }
        many_repo.persist_calls(9, &calls, &BotState::default()).unwrap();
        for name in [trees::ORDERS, trees::EVENTS, trees::OPEN_ORDERS, trees::POSITIONS] {
            let rows = |store: &Store| -> Vec<(sled::IVec, sled::IVec)> {
                store.tree(name).unwrap().iter().map(Result::unwrap).collect()
            };
            assert_eq!(rows(&one), rows(&many), "tree {name}");
        }
    }

    #[tokio::test]
    async fn a_schema_2_store_of_json_rows_opens_migrates_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = BotState::default();
        state.position.quote_balance = Decimal::new(10_000, 0);
        state.last_fill_id = 1;
        state.last_event_id = 2;
        state.strategy = Some(serde_json::json!({"fast": {"period": 5, "value": 98_000.5}}));
        let fx = effects(9);
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            // Exactly as schema 2 wrote them: plain JSON, one journal line per row.
            let tree = |name| store.tree(name).unwrap();
            tree(trees::FILLS).insert(pair_key(9, 1), encode(&fx.fills[0]).unwrap()).unwrap();
            for event in &fx.events {
                tree(trees::EVENTS).insert(pair_key(9, event.id), encode(event).unwrap()).unwrap();
            }
            tree(trees::POSITIONS).insert(id_key(9), encode(&state).unwrap()).unwrap();
            crate::store::set_schema_version(&store, 2).unwrap();
            store.commit().await.unwrap();
        }
        let store = crate::store::reopen(dir.path());
        assert_eq!(crate::store::CURRENT_SCHEMA_VERSION, 5);
        let repo = BotRepo::new(&store).unwrap();
        assert_eq!(repo.state(9).unwrap(), state);
        assert_eq!(repo.all_fills(9, u64::MAX).unwrap(), fx.fills);
        assert_eq!(repo.events(9, 0, u64::MAX, 10).unwrap().items, fx.events);
        let page = repo.events(9, 0, u64::MAX, 1).unwrap();
        assert_eq!((page.items, page.next_after), (fx.events[..1].to_vec(), Some(1)));
        // Every journal row is now a list, and the state (long enough) is deflated.
        for row in store.tree(trees::EVENTS).unwrap().iter() {
            let (_, raw) = row.unwrap();
            assert_eq!(crate::store::unpack(&raw).unwrap().first(), Some(&b'['));
        }
        let raw = store.tree(trees::POSITIONS).unwrap().get(id_key(9)).unwrap().unwrap();
        assert_eq!(raw.first(), Some(&1), "state row not deflated");
        // New writes go on from there, in the compact form, beside the old rows.
        let mut more = Effects::default();
        more.events.push(line(3));
        let mut fill = fx.fills[0].clone();
        (fill.id, fill.price) = (2, Decimal::new(10_150, 2));
        more.fills.push(fill.clone());
        repo.persist(9, &more, &state).unwrap();
        let ids: Vec<u64> =
            repo.events(9, 0, u64::MAX, 10).unwrap().items.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(repo.all_fills(9, u64::MAX).unwrap(), [fx.fills[0].clone(), fill]);
        let first_bytes = |name| -> Vec<u8> {
            store.tree(name).unwrap().iter().values().map(|raw| raw.unwrap()[0]).collect()
        };
        // Migration 3 deflated the old fill (0x01); the new one is compact.
        assert_eq!(first_bytes(trees::FILLS), [1, crate::store::compact::COMPACT_V1]);
        assert_eq!(first_bytes(trees::EVENTS)[2..], [crate::store::compact::COMPACT_V1]);
    }
}
