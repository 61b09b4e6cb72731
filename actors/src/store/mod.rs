//! Embedded persistence: one sled database, one tree per entity, flush-before-ack.
//!
//! The promise Keel makes to its users is that nothing it acknowledged is ever lost. sled only
//! makes writes durable when it flushes, and on Linux its flush ends in `sync_file_range`, which
//! survives a crash of the process but not a power loss. So every code path that answers 2xx for
//! a state change first awaits [`Store::commit`], which joins the next group flush and the
//! `fdatasync` of sled's log that follows it (see [`group_commit`]).
//! Changes that touch several trees go through sled transactions ([`Store::transaction`]), so a
//! crash leaves either all of them or none.

pub mod backup;
pub mod compact;
pub mod disk;
mod error;
mod group_commit;
mod migrations;
pub mod permissions;
pub mod retention;
pub mod stats;
pub mod tally;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use compact::StoredRow;
pub use disk::{DiskChange, DiskGuard, DiskLow};
pub use error::StoreError;
pub use group_commit::GroupCommit;
#[cfg(test)]
pub(crate) use migrations::set_schema_version;
pub use migrations::{CURRENT_SCHEMA_VERSION, MIGRATIONS, Migration};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Names of the trees Keel keeps, one per entity (DESIGN.md, "Storage").
pub mod trees {
    /// Schema version and other store-wide facts.
    pub const META: &str = "meta";
    /// User accounts, keyed by user id.
    pub const USERS: &str = "users";
    /// Encrypted exchange credentials, keyed by credential id.
    pub const CREDENTIALS: &str = "credentials";
    /// Bot definitions and their lifecycle state, keyed by bot id.
    pub const BOTS: &str = "bots";
    /// Orders, keyed by bot id then order id.
    pub const ORDERS: &str = "orders";
    /// Fills, keyed by bot id then fill id.
    pub const FILLS: &str = "fills";
    /// Positions, keyed by bot id.
    pub const POSITIONS: &str = "positions";
    /// Per-bot event journal, keyed by bot id then sequence.
    pub const EVENTS: &str = "events";
    /// Every event with a monotonic id, waiting for the optional Postgres sink.
    pub const OUTBOX: &str = "outbox";
    /// Normalised email → user id: the uniqueness index for `users`.
    pub const USER_EMAILS: &str = "user_emails";
    /// Login sessions (refresh-token families), keyed by (user id, session id).
    pub const SESSIONS: &str = "sessions";
    /// Refresh tokens, keyed by the BLAKE2b hash of the token (never the token itself).
    pub const REFRESH_TOKENS: &str = "refresh_tokens";
    /// Sessions revoked while access tokens naming them may still be presented, keyed by
    /// (until, session id) → user id: `until` (seconds since the epoch) is when the last such
    /// token has expired, leeway included. Rows past it are pruned, so the tree stays as small
    /// as the revocations of one token lifetime.
    pub const REVOKED_SESSIONS: &str = "revoked_sessions";
    /// Registration invites, keyed by the BLAKE2b hash of the token (never the token itself).
    pub const INVITES: &str = "invites";

    /// Index of the orders that may still fill: `pair_key(bot, order)` → nothing. Kept in the
    /// transaction that writes `orders` (schema 4), so start-up reads a bot's open orders
    /// without scanning its history.
    pub const OPEN_ORDERS: &str = "open_orders";

    /// Backtest jobs (spec, progress, result), keyed by job id: they survive restarts.
    pub const BACKTESTS: &str = "backtests";

    /// Owners' strategy modules (name, hash, schema), keyed by (owner, module id).
    pub const STRATEGIES: &str = "strategies";
    /// The bytes of each strategy module, under the same key as its `strategies` row.
    pub const STRATEGY_MODULES: &str = "strategy_modules";

    /// Trees added by migration 2 (identity).
    pub const IDENTITY: [&str; 3] = [USER_EMAILS, SESSIONS, REFRESH_TOKENS];

    /// Owners' notification channels (`keel_actors::notify::channels`).
    pub const NOTIFY_CHANNELS: &str = "notify_channels";
    /// Notification deliveries, pending and recent (`keel_actors::notify::outbox`).
    pub const NOTIFY_OUTBOX: &str = "notify_outbox";

    /// Owners' limits over all of their bots, by user id, when the users themselves are in the
    /// cluster's Postgres (`keel_actors::bot::UserLimits`; opened on demand). Otherwise the limits
    /// are in each user's `users` row.
    pub const USER_LIMITS: &str = "user_limits";

    /// Every tree the first migration creates.
    pub const ALL: [&str; 9] =
        [META, USERS, CREDENTIALS, BOTS, ORDERS, FILLS, POSITIONS, EVENTS, OUTBOX];
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory that holds the sled files.
    pub path: PathBuf,
    /// Upper bound of sled's page cache, in bytes. sled's own default is 1 GiB, too much for a
    /// small VPS. sled counts a page at its size in the log, so the memory the cache really
    /// takes is several times this.
    pub cache_capacity_bytes: u64,
    /// sled's background flush period. Acknowledged writes never rely on it (they await
    /// [`Store::commit`]); it only bounds how much unacknowledged work a crash can lose.
    pub background_flush: Option<Duration>,
    /// Free space under [`StoreConfig::path`] below which new work is refused ([`DiskGuard`]);
    /// 0 turns the guard off.
    pub min_free_bytes: u64,
}

impl StoreConfig {
    /// A configuration with Keel's defaults for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_capacity_bytes: 16 * 1024 * 1024,
            background_flush: Some(Duration::from_millis(500)),
            min_free_bytes: 0,
        }
    }
}

/// The one handle to Keel's database. Cheap to clone; every clone shares the same trees and the
/// same group-commit flusher.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    path: PathBuf,
    flusher: GroupCommit,
    /// Shared by every multi-tree transaction, taken exclusively by a backup, so that a backup
    /// holds each transaction whole or not at all ([`backup`]).
    barrier: std::sync::RwLock<()>,
    /// Added to sled's id counter: a restored store starts past every id of its backup
    /// (`meta/id_floor`, written by [`backup::restore`]; 0 otherwise).
    id_floor: u64,
    /// The free-space floor.
    disk: DiskGuard,
    /// Rows and bytes of the trees that grow with trading, kept as they are written.
    tally: tally::Tally,
}

/// Key in the `meta` tree of the id floor, a big-endian `u64`.
pub(crate) const ID_FLOOR_KEY: &[u8] = b"id_floor";

/// Reads `meta/id_floor`; 0 when absent.
pub(crate) fn read_id_floor(db: &sled::Db) -> Result<u64, StoreError> {
    match db.open_tree(trees::META)?.get(ID_FLOOR_KEY)? {
        None => Ok(0),
        Some(raw) => {
            raw.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| {
                StoreError::Corrupt(format!("id_floor has {} bytes, not 8", raw.len()))
            })
        }
    }
}

impl Store {
    /// Opens (or creates) the database and brings its schema up to date.
    ///
    /// This blocks on disk I/O: call it at start-up or from a blocking thread.
    ///
    /// # Errors
    /// [`StoreError::Sled`] when the files cannot be opened (another process holds the lock, a
    /// corrupt file, no permission), and [`StoreError::SchemaTooNew`] when the data was written by
    /// a newer Keel.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        permissions::ensure_private_dir(&config.path)
            .map_err(|source| StoreError::Io { path: config.path.clone(), source })?;
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(config.background_flush.map(|d| d.as_millis() as u64))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let id_floor = read_id_floor(&db)?;
        let flusher = GroupCommit::new(db.clone(), &config.path)?;
        let disk = DiskGuard::new(&config.path, config.min_free_bytes);
        let store = Self {
            inner: Arc::new(Inner {
                disk,
                id_floor,
                flusher,
                db,
                path: config.path.clone(),
                barrier: std::sync::RwLock::new(()),
                tally: tally::Tally::default(),
            }),
        };
        migrations::run(&store)?;
        Ok(store)
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The free-space guard of the data directory.
    pub fn disk(&self) -> &DiskGuard {
        &self.inner.disk
    }

    /// The running figures of the trees that grow with trading: whoever writes or removes their
    /// rows reports it here ([`tally`]).
    pub fn tally(&self) -> &tally::Tally {
        &self.inner.tally
    }

    /// One of the trees named in [`trees`].
    ///
    /// # Errors
    /// Fails only if sled cannot create the tree (I/O error).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Makes every write that finished before this call durable, sharing one flush with every
    /// other writer waiting at the same time. Await it before acknowledging a state change.
    ///
    /// # Errors
    /// The flush failed; nothing written since the last successful flush may be acknowledged.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.inner.flusher.commit().await
    }

    /// Runs `f` as one sled transaction over `trees`, so its writes land together or not at all.
    ///
    /// sled may run the closure more than once on conflict: it must not do I/O or other side
    /// effects. The result is not durable until [`Store::commit`] returns.
    ///
    /// # Errors
    /// [`StoreError::Aborted`] with the closure's own reason, or a storage error.
    pub fn transaction<R>(
        &self,
        trees: &[&sled::Tree],
        f: impl Fn(&[sled::transaction::TransactionalTree]) -> TxResult<R>,
    ) -> Result<R, StoreError> {
        use sled::Transactional;
        let trees: Vec<sled::Tree> = trees.iter().map(|t| (*t).clone()).collect();
        // Held only while sled runs the closure (no I/O, no await): a backup waits for it.
        let _barrier = self.inner.barrier.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        trees.as_slice().transaction(|txs| f(txs)).map_err(|e| match e {
            sled::transaction::TransactionError::Abort(reason) => StoreError::Aborted(reason),
            sled::transaction::TransactionError::Storage(err) => StoreError::Sled(err),
        })
    }

    /// A new id, unique and increasing across restarts. Gaps are possible; reuse is not.
    ///
    /// # Errors
    /// sled persists its id counter periodically and that write can fail.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.id_floor.saturating_add(self.inner.db.generate_id()?))
    }

    /// Checks that the store accepts a durable write: used by the readiness probe.
    ///
    /// # Errors
    /// The write or its flush failed.
    pub async fn probe_writable(&self) -> Result<(), StoreError> {
        let meta = self.tree(trees::META)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        meta.insert(b"probe", &now.to_be_bytes())?;
        self.commit().await
    }

    /// Flushes everything, for shutdown.
    ///
    /// # Errors
    /// The final flush failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit().await
    }

    /// Flushes everything on the calling thread, for tools that run with the server stopped
    /// (`keel store seed`); the server awaits [`Store::commit`] instead.
    ///
    /// # Errors
    /// The flush failed.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner.flusher.commit_blocking()
    }

    /// Syncs of sled's log issued so far by [`Store::commit`] (one per group of commits), for
    /// tests; `keel_store_fsyncs_total` on `/metrics` counts the same.
    pub fn syncs_issued(&self) -> u64 {
        self.inner.flusher.syncs_issued()
    }

    /// Bytes the database occupies on disk, as sled reports it.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }
}

/// A handle that does not keep the store open: for background loops that must end, and let
/// sled release its directory lock, once the application has dropped its [`Store`].
#[derive(Clone, Debug)]
pub struct WeakStore(std::sync::Weak<Inner>);

impl WeakStore {
    /// The store, while something else still holds it open.
    pub fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

impl Store {
    /// A [`WeakStore`] for this store.
    pub fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }
}

/// What a transaction closure returns.
pub type TxResult<R> = sled::transaction::ConflictableTransactionResult<R, String>;

/// [`decode`] inside a transaction closure: a value that does not decode aborts the transaction.
///
/// # Errors
/// The abort, with the decoding error as its reason.
pub fn decode_tx<T: DeserializeOwned>(
    raw: &[u8],
) -> Result<T, sled::transaction::ConflictableTransactionError<String>> {
    decode(raw).map_err(|e| sled::transaction::ConflictableTransactionError::Abort(e.to_string()))
}

/// [`encode`] inside a transaction closure: a value that does not encode aborts the transaction.
///
/// # Errors
/// The abort, with the encoding error as its reason.
pub fn encode_tx<T: Serialize>(
    value: &T,
) -> Result<Vec<u8>, sled::transaction::ConflictableTransactionError<String>> {
    encode(value).map_err(|e| sled::transaction::ConflictableTransactionError::Abort(e.to_string()))
}

/// Big-endian key for an id, so that sled's byte order is numeric order.
pub fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Composite big-endian key (`owner`, `id`), so one owner's rows scan together and in order.
pub fn pair_key(owner: u64, id: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&owner.to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

/// Reads the id back out of a key written by [`id_key`] (or the owner out of a [`pair_key`]).
///
/// # Errors
/// [`StoreError::Corrupt`] when the key is shorter than eight bytes.
pub fn key_id(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("key of {} bytes is not an id", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Encodes a value for storage.
///
/// # Errors
/// The value cannot be serialised (a map with non-string keys, say).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::Codec)
}

/// First byte of a value written by [`encode_packed`] and deflated: JSON never starts with it.
const DEFLATED: u8 = 0x01;
/// Values shorter than this are not worth deflating.
const DEFLATE_FROM: usize = 96;

/// Encodes a value for one of the high-volume trees (orders, fills, positions, events): its JSON,
/// deflated (behind a [`DEFLATED`] byte) when that is shorter. [`decode`] reads both forms, so
/// a tree may hold either, and rows written before this encoding existed still read.
///
/// # Errors
/// The value cannot be serialised.
pub fn encode_packed<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    pack(encode(value)?)
}

/// [`encode_packed`] for JSON already encoded.
///
/// # Errors
/// Deflating failed (it writes to memory, so only on allocation failure).
pub fn pack(json: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    use std::io::Write;
    if json.len() < DEFLATE_FROM {
        return Ok(json);
    }
    let mut out = Vec::with_capacity(json.len() / 2);
    out.push(DEFLATED);
    let mut deflater = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    deflater.write_all(&json).map_err(StoreError::Pack)?;
    let packed = deflater.finish().map_err(StoreError::Pack)?;
    Ok(if packed.len() < json.len() { packed } else { json })
}

/// The JSON of a stored value, inflated if [`encode_packed`] deflated it.
///
/// # Errors
/// A deflated value that does not inflate.
pub fn unpack(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StoreError> {
    use std::io::Read;
    match bytes.split_first() {
        Some((&DEFLATED, deflated)) => {
            let mut json = Vec::with_capacity(deflated.len() * 3);
            flate2::read::DeflateDecoder::new(deflated)
                .read_to_end(&mut json)
                .map_err(StoreError::Pack)?;
            Ok(std::borrow::Cow::Owned(json))
        }
        _ => Ok(std::borrow::Cow::Borrowed(bytes)),
    }
}

/// Decodes a stored value, written by [`encode`] or [`encode_packed`].
///
/// # Errors
/// The bytes are not a valid encoding of `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(&unpack(bytes)?).map_err(StoreError::Codec)
}

/// Retries `attempt` while `in_use` says the store is still locked, for at most 10 s. sled lets go
/// of its directory lock from a background thread a moment after the last handle is dropped, so
/// a test that reopens (or restores into) a directory at once would race that release.
#[cfg(test)]
pub(crate) fn once_released<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    in_use: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match attempt() {
            Err(err) if in_use(&err) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// How long [`open_once_released`] waits for sled to let go of a lock this process held.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Opens the store, waiting (at most [`LOCK_RELEASE_WAIT`]) while its directory lock is still
/// held. Only for a directory whose last handle this process has just dropped: sled releases the
/// lock from a background thread a moment after the drop, so an immediate reopen can find it
/// held. Anywhere else a held lock means another Keel, and [`Store::open`] refuses at once.
///
/// # Errors
/// As [`Store::open`]; a lock still held after the wait.
pub(crate) fn open_once_released(config: &StoreConfig) -> Result<Store, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match Store::open(config) {
            Err(StoreError::Sled(e))
                if e.to_string().contains("lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens the store at `path` in a test, once sled has let go of the lock an earlier handle (or
/// a restore) held on it.
#[cfg(test)]
pub(crate) fn reopen(path: &std::path::Path) -> Store {
    open_once_released(&StoreConfig::new(path))
        .unwrap_or_else(|err| panic!("reopening the store at {}: {err:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        (dir, store)
    }

    #[test]
    fn keys_sort_numerically() {
        let mut keys = [id_key(256), id_key(1), id_key(255)];
        keys.sort();
        assert_eq!(keys, [id_key(1), id_key(255), id_key(256)]);
        assert!(pair_key(1, u64::MAX) < pair_key(2, 0));
        assert_eq!(key_id(&pair_key(7, 9)).unwrap(), 7);
        assert!(key_id(b"short").is_err());
    }

    #[test]
    fn ids_increase() {
        let (_dir, store) = open_temp();
        let a = store.next_id().unwrap();
        let b = store.next_id().unwrap();
        assert!(b > a);
    }

    #[test]
    fn aborted_transaction_writes_nothing() {
        let (_dir, store) = open_temp();
        let orders = store.tree(trees::ORDERS).unwrap();
        let fills = store.tree(trees::FILLS).unwrap();
        let result: Result<(), _> = store.transaction(&[&orders, &fills], |tx| {
            tx[0].insert(&id_key(1), b"order".as_slice())?;
            tx[1].insert(&id_key(1), b"fill".as_slice())?;
            sled::transaction::abort("risk check failed".to_string())
        });
        assert!(
            matches!(result, Err(StoreError::Aborted(reason)) if reason == "risk check failed")
        );
        assert!(orders.is_empty());
        assert!(fills.is_empty());
    }

    #[test]
    fn packed_values_decode_and_short_ones_stay_plain_json() {
        let short = encode_packed(&"abc").unwrap();
        assert_eq!(short, b"\"abc\"");
        let long: Vec<String> = (0..20).map(|i| format!("line {i} of a journal")).collect();
        let packed = encode_packed(&long).unwrap();
        assert_eq!(packed[0], DEFLATED);
        assert!(packed.len() < encode(&long).unwrap().len() / 2, "{} bytes", packed.len());
        assert_eq!(decode::<Vec<String>>(&packed).unwrap(), long);
        assert_eq!(decode::<Vec<String>>(&encode(&long).unwrap()).unwrap(), long);
        assert!(matches!(decode::<String>(&[DEFLATED, 0xff, 0x00]), Err(StoreError::Pack(_))));
    }

    #[tokio::test]
    async fn committed_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
            store.tree(trees::USERS).unwrap().insert(id_key(1), encode(&"alice").unwrap()).unwrap();
            store.commit().await.unwrap();
        }
        // sled lets go of the directory lock a moment after the last handle is dropped.
        let store = reopen(dir.path());
        let raw = store.tree(trees::USERS).unwrap().get(id_key(1)).unwrap().unwrap();
        assert_eq!(decode::<String>(&raw).unwrap(), "alice");
    }

    #[tokio::test]
    async fn readiness_probe_writes_and_flushes() {
        let (_dir, store) = open_temp();
        store.probe_writable().await.unwrap();
        assert!(store.tree(trees::META).unwrap().get(b"probe").unwrap().is_some());
    }

    #[tokio::test]
    async fn commit_fdatasyncs_before_it_returns() {
        let (_dir, store) = open_temp();
        let before = store.syncs_issued();
        store.tree(trees::USERS).unwrap().insert(id_key(1), &b"{}"[..]).unwrap();
        store.commit().await.unwrap();
        assert_eq!(store.syncs_issued(), before + 1);
    }
}
