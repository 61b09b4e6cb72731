//! The outbox: every order change, fill and journal line, waiting in sled for the Postgres sink.
//!
//! Rows are written by [`crate::bot::BotRepo::persist`] inside the same sled transaction as the
//! rows they copy, so the outbox never holds a change the store does not, and vice versa. Keys
//! are big-endian ids from [`Store::next_id`] (monotonic across restarts, gaps allowed), so a scan
//! returns the oldest rows first. The sink removes a row only after Postgres committed it.
//!
//! A value is a [`OutboxRecord`] in a small binary frame (see [`OutboxRecord::encode`]): a
//! header with the kind and the ids, then the entity's JSON exactly as the store holds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{Store, StoreError, id_key, key_id, trees};

/// Version byte that starts every encoded record; a reader refuses anything else.
const FORMAT_V1: u8 = 1;
/// Bytes before the JSON payload: version, kind, bot id, entity id, user flag, user id.
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 1 + 8;
/// Key in the `meta` tree of this store's sink identity (hex), made once.
const STORE_ID_KEY: &[u8] = b"sink_store_id";

/// What an outbox row copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A new version of an order (created or changed).
    Order,
    /// A fill.
    Fill,
    /// A line of the bot's journal.
    Event,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Order => 1,
            RecordKind::Fill => 2,
            RecordKind::Event => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RecordKind::Order),
            2 => Some(RecordKind::Fill),
            3 => Some(RecordKind::Event),
            _ => None,
        }
    }

    /// A short name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Order => "order",
            RecordKind::Fill => "fill",
            RecordKind::Event => "event",
        }
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// What it copies.
    pub kind: RecordKind,
    /// The bot it belongs to.
    pub bot_id: u64,
    /// The bot's owner, when known.
    pub user_id: Option<u64>,
    /// The order, fill or journal id (per bot).
    pub entity_id: u64,
    /// The entity as JSON, as stored in its own tree.
    pub payload: Vec<u8>,
}

impl OutboxRecord {
    /// The binary frame: version (1), kind (1), bot id (8), entity id (8), user flag (1), user id
    /// (8, zero when absent), then the JSON payload. Integers are big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(FORMAT_V1);
        out.push(self.kind.code());
        out.extend_from_slice(&self.bot_id.to_be_bytes());
        out.extend_from_slice(&self.entity_id.to_be_bytes());
        out.push(u8::from(self.user_id.is_some()));
        out.extend_from_slice(&self.user_id.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads a frame written by [`OutboxRecord::encode`].
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] naming what is wrong: too short, an unknown version or kind, a
    /// bad user flag.
    pub fn decode(raw: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("outbox record: {what}"));
        if raw.len() < HEADER_LEN {
            return Err(corrupt(&format!("{} bytes, shorter than its header", raw.len())));
        }
        let (header, payload) = raw.split_at(HEADER_LEN);
        if header[0] != FORMAT_V1 {
            return Err(corrupt(&format!("unknown format version {}", header[0])));
        }
        let kind = RecordKind::from_code(header[1])
            .ok_or_else(|| corrupt(&format!("unknown kind {}", header[1])))?;
        let bot_id = key_id(&header[2..10])?;
        let entity_id = key_id(&header[10..18])?;
        let user_id = match header[18] {
            0 => None,
            1 => Some(key_id(&header[19..27])?),
            flag => return Err(corrupt(&format!("user flag {flag}"))),
        };
        Ok(Self { kind, bot_id, user_id, entity_id, payload: payload.to_vec() })
    }
}

/// An outbox row ready to insert: its key (the big-endian outbox id) and its encoded record.
pub type StagedRow = ([u8; 8], Vec<u8>);

/// The outbox tree and a count of its rows. Cheap to clone; clones share the count.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Store,
    tree: sled::Tree,
    /// Rows in the tree: counted once at open, then kept by the writers and the sink (sled's
    /// own `len` walks the whole tree).
    backlog: Arc<AtomicU64>,
    /// This store's identity in Postgres: ids (bots, fills, outbox) are only unique within one
    /// store, so a sink schema must be fed by one store only.
    store_id: Arc<str>,
}

impl Outbox {
    /// Opens the outbox, counts its rows, and reads (or makes, once) the store's sink identity.
    ///
    /// This walks the tree and may flush: call it at start-up or on a blocking thread.
    ///
    /// # Errors
    /// sled failed.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let tree = store.tree(trees::OUTBOX)?;
        let mut rows = 0u64;
        for key in tree.iter().keys() {
            key?;
            rows += 1;
        }
        let store_id = store_id(store)?;
        Ok(Self {
            store: store.clone(),
            tree,
            backlog: Arc::new(AtomicU64::new(rows)),
            store_id: store_id.into(),
        })
    }

    /// This store's sink identity, which the sink claims its Postgres schema with.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Whether the outbox tree holds any row, without counting them (cheap).
    ///
    /// # Errors
    /// sled failed.
    pub fn holds_rows(store: &Store) -> Result<bool, StoreError> {
        Ok(!store.tree(trees::OUTBOX)?.is_empty())
    }

    /// The store the outbox lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tree, for writers that add rows inside their own transaction.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Rows waiting.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Acquire)
    }

    /// Gives each record its outbox id and encodes it, ready to insert in a transaction. Ids are
    /// taken here, outside the transaction closure, because the closure may run more than once.
    ///
    /// # Errors
    /// sled could not hand out an id.
    pub fn stage(&self, records: &[OutboxRecord]) -> Result<Vec<StagedRow>, StoreError> {
        records.iter().map(|r| Ok((id_key(self.store.next_id()?), r.encode()))).collect()
    }

    /// Records that a transaction holding `rows` staged rows committed.
    pub fn added(&self, rows: usize) {
        self.backlog.fetch_add(rows as u64, Ordering::AcqRel);
    }

    /// Up to `max` of the oldest rows, as (outbox id, raw value).
    ///
    /// # Errors
    /// sled failed or a key is not an id.
    pub fn oldest(&self, max: usize) -> Result<Vec<(u64, sled::IVec)>, StoreError> {
        let mut rows = Vec::with_capacity(max.min(1024));
        for row in self.tree.iter().take(max) {
            let (key, value) = row?;
            rows.push((key_id(&key)?, value));
        }
        Ok(rows)
    }

    /// Removes rows the sink delivered. Not flushed: a crash before the next flush only means
    /// they are delivered again, which Postgres ignores.
    ///
    /// # Errors
    /// sled failed; nothing was removed.
    pub fn remove(&self, ids: &[u64]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(&id_key(*id)[..]);
        }
        self.tree.apply_batch(batch)?;
        let removed = ids.len() as u64;
        // Only the sink removes rows, and only rows it read, so this cannot go below zero; the
        // saturation is a guard, not a case.
        let _ = self
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(removed)));
        Ok(())
    }
}

/// The store's sink identity: 16 random bytes in hex, made on first use and flushed at once, so
/// it never changes for a store (a new one would make the sink refuse its own schema).
fn store_id(store: &Store) -> Result<String, StoreError> {
    let meta = store.tree(trees::META)?;
    if let Some(raw) = meta.get(STORE_ID_KEY)? {
        return String::from_utf8(raw.to_vec())
            .map_err(|_| StoreError::Corrupt("the sink store id is not text".to_owned()));
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    // Another thread may have made one meanwhile: the first one written wins.
    match meta.compare_and_swap(STORE_ID_KEY, None as Option<&[u8]>, Some(id.as_bytes()))? {
        Ok(()) => {
            // Start-up, before anything is served: a blocking flush is right here.
            meta.flush()?;
            Ok(id)
        }
        Err(_) => store_id(store),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn record(user_id: Option<u64>) -> OutboxRecord {
        OutboxRecord {
            kind: RecordKind::Fill,
            bot_id: 7,
            user_id,
            entity_id: u64::MAX,
            payload: br#"{"id":3}"#.to_vec(),
        }
    }

    #[test]
    fn records_round_trip_with_and_without_a_user() {
        for user in [None, Some(0), Some(42)] {
            let rec = record(user);
            assert_eq!(OutboxRecord::decode(&rec.encode()).unwrap(), rec);
        }
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let good = record(Some(1)).encode();
        let mut bad_version = good.clone();
        bad_version[0] = 9;
        let mut bad_kind = good.clone();
        bad_kind[1] = 0;
        let mut bad_flag = good.clone();
        bad_flag[18] = 2;
        for raw in [&b""[..], &good[..HEADER_LEN - 1], &bad_version, &bad_kind, &bad_flag] {
            assert!(matches!(OutboxRecord::decode(raw), Err(StoreError::Corrupt(_))), "{raw:?}");
        }
    }

    #[test]
    fn staged_rows_come_back_oldest_first_and_removal_keeps_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let outbox = Outbox::open(&store).unwrap();
        let staged = outbox.stage(&[record(None), record(Some(1)), record(Some(2))]).unwrap();
        for (key, value) in &staged {
            outbox.tree().insert(key, value.as_slice()).unwrap();
        }
        outbox.added(staged.len());
        assert_eq!(outbox.backlog(), 3);
        let rows = outbox.oldest(2).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].0 < rows[1].0);
        assert_eq!(OutboxRecord::decode(&rows[0].1).unwrap().user_id, None);
        outbox.remove(&[rows[0].0, rows[1].0]).unwrap();
        assert_eq!(outbox.backlog(), 1);
        // A reopened outbox counts what is there, and keeps the store's identity.
        let again = Outbox::open(&store).unwrap();
        assert_eq!(again.backlog(), 1);
        assert_eq!(again.store_id(), outbox.store_id());
        assert_eq!(outbox.store_id().len(), 32);
        assert!(Outbox::holds_rows(&store).unwrap());
    }
}
