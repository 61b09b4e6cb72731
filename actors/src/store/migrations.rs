//! Versioned schema migrations, recorded in the `meta` tree and run at every start.
//!
//! Each migration runs once: its version is written to `meta/schema_version` after it succeeds,
//! and the next start skips it. A migration must itself be safe to re-run, because a crash after
//! its writes but before the version is recorded runs it again.

use super::{Store, StoreError, trees};

/// Key in the `meta` tree holding the schema version, a big-endian `u32`.
const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

/// One schema step.
#[derive(Debug)]
pub struct Migration {
    /// Version the store is at after this step; versions are consecutive from 1.
    pub version: u32,
    /// What it does, for logs.
    pub name: &'static str,
    /// The step itself. Must be idempotent.
    pub apply: fn(&Store) -> Result<(), StoreError>,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "create entity trees", apply: create_trees },
    Migration { version: 2, name: "create identity trees", apply: create_identity_trees },
    Migration {
        version: 3,
        name: "pack bot rows, one journal row per write",
        apply: pack_bot_rows,
    },
    Migration { version: 4, name: "index open orders", apply: index_open_orders },
    Migration { version: 5, name: "compact bot rows", apply: compact_bot_rows },
];

/// The schema version this binary writes.
pub const CURRENT_SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

fn create_trees(store: &Store) -> Result<(), StoreError> {
    for name in trees::ALL {
        store.tree(name)?;
    }
    Ok(())
}

fn create_identity_trees(store: &Store) -> Result<(), StoreError> {
    for name in trees::IDENTITY {
        store.tree(name)?;
    }
    Ok(())
}

/// Rows rewritten per sled batch by [`pack_bot_rows`].
const PACK_BATCH: usize = 1024;

/// Schema 3: rows of `orders`, `fills`, `positions` and `events` are packed JSON
/// ([`super::encode_packed`]), and an `events` row holds the list of lines one write made. Rows
/// of schema 2 are rewritten in that form: each JSON value packed, each journal line made a list
/// of one (its key, the line's id, is already the id of the last line in the row). Re-running it
/// finds everything packed already and changes nothing.
fn pack_bot_rows(store: &Store) -> Result<(), StoreError> {
    for name in [trees::ORDERS, trees::FILLS, trees::POSITIONS, trees::EVENTS] {
        let tree = store.tree(name)?;
        let journal = name == trees::EVENTS;
        let mut batch = sled::Batch::default();
        let mut queued = 0;
        for row in tree.iter() {
            let (key, raw) = row?;
            let json = super::unpack(&raw)?;
            let packed = if journal && json.first() == Some(&b'{') {
                let mut list = Vec::with_capacity(json.len() + 2);
                list.push(b'[');
                list.extend_from_slice(&json);
                list.push(b']');
                super::pack(list)?
            } else {
                super::pack(json.into_owned())?
            };
            if packed != raw.as_ref() {
                batch.insert(key, packed);
                queued += 1;
            }
            if queued == PACK_BATCH {
                tree.apply_batch(std::mem::take(&mut batch))?;
                queued = 0;
            }
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// Schema 4: the `open_orders` tree indexes every order that may still fill, so start-up reads
/// open orders without scanning history. This builds it from `orders`: a key for every open
/// order, and none for an order that is final (or gone). Re-running it rebuilds the same index.
fn index_open_orders(store: &Store) -> Result<(), StoreError> {
    let orders = store.tree(trees::ORDERS)?;
    let index = store.tree(trees::OPEN_ORDERS)?;
    // Entries that do not name an open order go first (a store can only have them if it was
    // written by a newer Keel and then by an older one, but the index must end exact).
    let mut batch = sled::Batch::default();
    for key in index.iter().keys() {
        let key = key?;
        let open = match orders.get(&key)? {
            Some(raw) => super::decode::<OrderStatusOnly>(&raw)?.status.is_open(),
            None => false,
        };
        if !open {
            batch.remove(key);
        }
    }
    index.apply_batch(batch)?;
    let mut batch = sled::Batch::default();
    let mut queued = 0;
    for row in orders.iter() {
        let (key, raw) = row?;
        if super::decode::<OrderStatusOnly>(&raw)?.status.is_open() {
            batch.insert(key, &[]);
            queued += 1;
        }
        if queued == PACK_BATCH {
            index.apply_batch(std::mem::take(&mut batch))?;
            queued = 0;
        }
    }
    index.apply_batch(batch)?;
    Ok(())
}

/// Schema 5: orders, fills and journal rows are written in the compact binary form
/// ([`super::compact`]) from now on. Nothing is rewritten: every reader reads the JSON forms too,
/// and rewriting history at open would make start-up time grow with it. The version is what keeps
/// an older Keel, which cannot read a compact row, from opening the store
/// ([`StoreError::SchemaTooNew`]).
fn compact_bot_rows(_store: &Store) -> Result<(), StoreError> {
    Ok(())
}

/// The one field of a stored order the index needs.
#[derive(serde::Deserialize)]
struct OrderStatusOnly {
    status: keel_core::trading::OrderStatus,
}

/// Reads the recorded schema version; 0 for a new store.
pub(crate) fn schema_version(store: &Store) -> Result<u32, StoreError> {
    let meta = store.tree(trees::META)?;
    match meta.get(SCHEMA_VERSION_KEY)? {
        None => Ok(0),
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!("schema_version has {} bytes, not 4", raw.len()))
            })?;
            Ok(u32::from_be_bytes(bytes))
        }
    }
}

/// Records `version` as the store's schema version, for tests that build a store as an older
/// Keel left it.
#[cfg(test)]
pub(crate) fn set_schema_version(store: &Store, version: u32) -> Result<(), StoreError> {
    store.tree(trees::META)?.insert(SCHEMA_VERSION_KEY, &version.to_be_bytes())?;
    store.tree(trees::META)?.flush()?;
    Ok(())
}

/// Brings the store up to [`CURRENT_SCHEMA_VERSION`], flushing after each step.
pub(crate) fn run(store: &Store) -> Result<(), StoreError> {
    run_list(store, MIGRATIONS)
}

fn run_list(store: &Store, migrations: &[Migration]) -> Result<(), StoreError> {
    let supported = migrations.last().map_or(0, |m| m.version);
    let found = schema_version(store)?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    let meta = store.tree(trees::META)?;
    for migration in migrations.iter().filter(|m| m.version > found) {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "running store migration"
        );
        (migration.apply)(store).map_err(|source| StoreError::Migration {
            version: migration.version,
            name: migration.name,
            source: Box::new(source),
        })?;
        meta.insert(SCHEMA_VERSION_KEY, &migration.version.to_be_bytes())?;
        // Start-up is the one place a blocking flush is right: nothing is served yet.
        meta.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::StoreConfig;

    static APPLIED: AtomicU32 = AtomicU32::new(0);

    fn count_and_write(store: &Store) -> Result<(), StoreError> {
        APPLIED.fetch_add(1, Ordering::SeqCst);
        store.tree(trees::META)?.insert(b"marker", b"v6".as_slice())?;
        Ok(())
    }

    const WITH_NEXT: &[Migration] = &[
        Migration { version: 1, name: "create entity trees", apply: create_trees },
        Migration { version: 2, name: "create identity trees", apply: create_identity_trees },
        Migration { version: 3, name: "pack bot rows", apply: pack_bot_rows },
        Migration { version: 4, name: "index open orders", apply: index_open_orders },
        Migration { version: 5, name: "compact bot rows", apply: compact_bot_rows },
        Migration { version: 6, name: "test marker", apply: count_and_write },
    ];

    #[test]
    fn a_new_store_is_at_the_current_version_and_reopening_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        assert_eq!(schema_version(&store).unwrap(), CURRENT_SCHEMA_VERSION);
        run(&store).unwrap();
        assert_eq!(schema_version(&store).unwrap(), CURRENT_SCHEMA_VERSION);
    }

    #[test]
    fn pending_migrations_run_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        APPLIED.store(0, Ordering::SeqCst);
        run_list(&store, WITH_NEXT).unwrap();
        run_list(&store, WITH_NEXT).unwrap();
        assert_eq!(APPLIED.load(Ordering::SeqCst), 1);
        assert_eq!(schema_version(&store).unwrap(), 6);
    }

    /// A stored order with `status`, in the packed form bots write.
    fn order_row(bot: u64, id: u64, status: &str) -> (Vec<u8>, Vec<u8>) {
        let json = serde_json::json!({
            "id": id, "bot_id": bot, "client_order_id": format!("keel-{bot}-{id:06}"),
            "side": "buy", "type": "limit", "price": "1000", "qty": "0.001",
            "filled_qty": "0", "avg_fill_price": "0", "status": status, "origin": "manual",
            "tag": 0, "oco_with": null, "reason": null, "created_ts": id, "updated_ts": id,
        });
        (crate::store::pair_key(bot, id).to_vec(), crate::store::encode_packed(&json).unwrap())
    }

    #[test]
    fn migration_4_indexes_exactly_the_open_orders_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let orders = store.tree(trees::ORDERS).unwrap();
        let index = store.tree(trees::OPEN_ORDERS).unwrap();
        // A schema-3 store: orders and no index (and a stale entry, to show it goes).
        let statuses =
            ["filled", "accepted", "canceled", "partially_filled", "new", "unknown", "rejected"];
        for (i, status) in statuses.iter().enumerate() {
            let (key, value) = order_row(7, i as u64 + 1, status);
            orders.insert(key, value).unwrap();
        }
        for id in 1..=2_000 {
            let (key, value) = order_row(8, id, if id == 2_000 { "accepted" } else { "filled" });
            orders.insert(key, value).unwrap();
        }
        index.insert(crate::store::pair_key(7, 1), b"".as_slice()).unwrap();
        set_schema_version(&store, 3).unwrap();
        let listed = || -> Vec<(u64, u64)> {
            index
                .iter()
                .keys()
                .map(|k| {
                    let k = k.unwrap();
                    (crate::store::key_id(&k).unwrap(), crate::store::key_id(&k[8..]).unwrap())
                })
                .collect()
        };
        run(&store).unwrap();
        assert_eq!(schema_version(&store).unwrap(), CURRENT_SCHEMA_VERSION);
        let expected = [(7, 2), (7, 4), (7, 5), (7, 6), (8, 2_000)];
        assert_eq!(listed(), expected);
        // Run again, as after a crash before the version was recorded: the same index.
        index_open_orders(&store).unwrap();
        assert_eq!(listed(), expected);
        set_schema_version(&store, 3).unwrap();
        run(&store).unwrap();
        assert_eq!(listed(), expected);
    }

    #[test]
    fn a_store_from_a_newer_keel_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        run_list(&store, WITH_NEXT).unwrap();
        let err = run_list(&store, MIGRATIONS).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { found: 6, supported: 5 }));
    }
}
