//! Backup files: a consistent copy of every sled tree, and its restore into an empty directory.
//!
//! Format (all integers big-endian), version [`FORMAT_VERSION`]:
//!
//! ```text
//! magic "KEELBKUP" | format u32 | schema u32 | created_at_ms u64 | id_watermark u64
//! records: 0x01 name_len u32, name            (the trees that follow belong to it)
//!          0x02 key_len u32, key, val_len u32, value
//!          0x00 entries u64                   (end; the number of 0x02 records)
//! BLAKE2b-256 of every byte before it (32 bytes)
//! ```
//!
//! The checksum is verified over the whole file before anything is imported, so a truncated or
//! altered file is refused with nothing written. `id_watermark` is an id the source store had
//! handed out when the backup was taken; restore records `meta/id_floor` past it, which
//! [`Store::next_id`] adds to sled's counter, so ids are never reused.
//!
//! Consistency: [`Store::write_backup`] holds the store's write barrier while it copies, and
//! every multi-tree change ([`Store::transaction`]) holds the same barrier shared: a transaction
//! is in the backup whole or not at all. Single-key writes outside transactions are atomic each.
//! Everything acknowledged (flushed) before the backup started is in it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use orion::hazardous::hash::blake2::blake2b::Blake2b;

use super::{Store, StoreError, migrations};

/// First bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"KEELBKUP";
/// The layout this Keel writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the header: magic, format, schema, created-at, id watermark.
const HEADER_BYTES: u64 = 8 + 4 + 4 + 8 + 8;
/// Bytes of the checksum trailer.
const CHECKSUM_BYTES: usize = 32;
/// Longest tree name accepted.
const MAX_NAME_BYTES: usize = 1024;
/// Longest key or value accepted (sled's own limit is far above what Keel writes).
const MAX_VALUE_BYTES: usize = 256 * 1024 * 1024;
/// Entries per sled batch on import.
const IMPORT_BATCH: usize = 10_000;

const TAG_END: u8 = 0;
const TAG_TREE: u8 = 1;
const TAG_ENTRY: u8 = 2;

/// Why a backup could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not a Keel backup, or not one this Keel reads.
    #[error("not a Keel backup: {0}")]
    NotABackup(String),
    /// The file is truncated or altered.
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    /// The backup was taken by a newer Keel.
    #[error("the backup is at schema version {found}; this Keel knows up to {supported}")]
    SchemaTooNew {
        /// The backup's schema version.
        found: u32,
        /// Newest this binary knows.
        supported: u32,
    },
    /// The target directory already holds data.
    #[error("{0} is not empty: restore into an empty directory, or pass --force")]
    NotEmpty(PathBuf),
    /// The target store is open in another process.
    #[error("the store at {path} is in use (is Keel running?): {reason}")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// sled's message.
        reason: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// What a backup's header says, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The file layout's version.
    pub format_version: u32,
    /// The store's schema version when it was taken.
    pub schema_version: u32,
    /// When it was taken, ms since the epoch.
    pub created_at_ms: u64,
    /// An id the source store had already handed out.
    pub id_watermark: u64,
    /// Trees in it.
    pub trees: u64,
    /// Key/value pairs in it.
    pub entries: u64,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Blake2b,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]).map_err(|_| io::Error::other("hashing failed"))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn new_hasher() -> io::Result<Blake2b> {
    Blake2b::new(CHECKSUM_BYTES).map_err(|_| io::Error::other("cannot start BLAKE2b"))
}

fn put_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("value over 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)
}

impl Store {
    /// Waits for multi-tree transactions in progress, then writes every tree to `out` in the
    /// backup format while new transactions wait. Blocking: call it from a blocking thread.
    /// Returns what was written.
    ///
    /// # Errors
    /// Reading the store or writing `out` failed.
    pub fn write_backup(&self, out: impl Write) -> Result<BackupInfo, BackupError> {
        let _barrier =
            self.inner.barrier.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        write_db(&self.inner.db, migrations::schema_version(self)?, out)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn write_db(db: &sled::Db, schema: u32, out: impl Write) -> Result<BackupInfo, BackupError> {
    let mut w =
        Hashing { inner: BufWriter::new(out), hasher: new_hasher().map_err(io_err("hash"))? };
    let mut info = BackupInfo {
        format_version: FORMAT_VERSION,
        schema_version: schema,
        created_at_ms: now_ms(),
        id_watermark: super::read_id_floor(db)?
            .saturating_add(db.generate_id().map_err(StoreError::from)?),
        trees: 0,
        entries: 0,
    };
    let header = [
        MAGIC.as_slice(),
        &FORMAT_VERSION.to_be_bytes(),
        &schema.to_be_bytes(),
        &info.created_at_ms.to_be_bytes(),
        &info.id_watermark.to_be_bytes(),
    ]
    .concat();
    w.write_all(&header).map_err(io_err("writing the backup"))?;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(StoreError::from)?;
        w.write_all(&[TAG_TREE]).map_err(io_err("writing the backup"))?;
        put_bytes(&mut w, &name).map_err(io_err("writing the backup"))?;
        info.trees += 1;
        for item in tree.iter() {
            let (key, value) = item.map_err(StoreError::from)?;
            w.write_all(&[TAG_ENTRY]).map_err(io_err("writing the backup"))?;
            put_bytes(&mut w, &key).map_err(io_err("writing the backup"))?;
            put_bytes(&mut w, &value).map_err(io_err("writing the backup"))?;
            info.entries += 1;
        }
    }
    w.write_all(&[TAG_END]).map_err(io_err("writing the backup"))?;
    w.write_all(&info.entries.to_be_bytes()).map_err(io_err("writing the backup"))?;
    let digest = w.hasher.finalize().map_err(|_| BackupError::Corrupt("hash".into()))?;
    let mut inner = w.inner;
    inner.write_all(digest.as_ref()).map_err(io_err("writing the backup"))?;
    inner.flush().map_err(io_err("writing the backup"))?;
    Ok(info)
}

/// Writes a backup of the store at `store_dir` while no Keel runs on it (`keel backup
/// --offline`).
///
/// # Errors
/// The store is in use or cannot be read, or `out` cannot be written.
pub fn write_offline(store_dir: &Path, out: impl Write) -> Result<BackupInfo, BackupError> {
    let db = open_exclusive(store_dir)?;
    let store_schema = schema_of(&db)?;
    write_db(&db, store_schema, out)
}

fn schema_of(db: &sled::Db) -> Result<u32, BackupError> {
    let meta = db.open_tree(super::trees::META).map_err(StoreError::from)?;
    match meta.get(b"schema_version").map_err(StoreError::from)? {
        None => Ok(0),
        Some(raw) => raw
            .as_ref()
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("schema_version is not 4 bytes".into()).into()),
    }
}

/// Opens sled at `dir`; a lock held by another process is [`BackupError::InUse`].
fn open_exclusive(dir: &Path) -> Result<sled::Db, BackupError> {
    sled::Config::new().path(dir).open().map_err(|err| match err {
        sled::Error::Io(io)
            if io.kind() == io::ErrorKind::WouldBlock || io.raw_os_error() == Some(11) =>
        {
            BackupError::InUse { path: dir.to_owned(), reason: io.to_string() }
        }
        sled::Error::Io(io) if io.to_string().contains("lock") => {
            BackupError::InUse { path: dir.to_owned(), reason: io.to_string() }
        }
        other => BackupError::Store(other.into()),
    })
}

/// Checks the file's checksum and structure and returns its header and counts. Nothing else is
/// read into memory.
///
/// # Errors
/// [`BackupError::NotABackup`], [`BackupError::Corrupt`] or an I/O error.
pub fn verify(path: &Path) -> Result<BackupInfo, BackupError> {
    let read = format!("reading {}", path.display());
    let mut file = File::open(path).map_err(io_err(read.clone()))?;
    let len = file.metadata().map_err(io_err(read.clone()))?.len();
    if len < HEADER_BYTES + 9 + CHECKSUM_BYTES as u64 {
        let mut head = [0u8; 8];
        let n = file.read(&mut head).map_err(io_err(read.clone()))?;
        if n == head.len() && &head == MAGIC {
            return Err(BackupError::Corrupt(format!("only {len} bytes: truncated")));
        }
        return Err(BackupError::NotABackup(format!("{len} bytes, no Keel header")));
    }
    let body_len = len - CHECKSUM_BYTES as u64;
    let mut hasher = new_hasher().map_err(io_err("hash"))?;
    let mut reader = BufReader::new(&mut file).take(body_len);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(io_err(read.clone()))?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]).map_err(|_| BackupError::Corrupt("hash".into()))?;
    }
    let mut stored = [0u8; CHECKSUM_BYTES];
    let file = reader.into_inner().into_inner();
    file.seek(SeekFrom::Start(body_len)).map_err(io_err(read.clone()))?;
    file.read_exact(&mut stored).map_err(io_err(read.clone()))?;
    let digest = hasher.finalize().map_err(|_| BackupError::Corrupt("hash".into()))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(read.clone()))?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic).map_err(io_err(read.clone()))?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup("no Keel header".into()));
    }
    if orion::util::secure_cmp(digest.as_ref(), &stored).is_err() {
        return Err(BackupError::Corrupt(
            "the checksum does not match: the file is truncated or altered".into(),
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err(read))?;
    let mut records = Records::new(BufReader::new(file).take(body_len))?;
    while records.next_record()?.is_some() {}
    Ok(records.info)
}

/// One record of the body.
enum Record {
    Tree(Vec<u8>),
    Entry(Vec<u8>, Vec<u8>),
}

/// Reads the header, then records one at a time.
struct Records<R> {
    reader: R,
    info: BackupInfo,
    in_tree: bool,
    done: bool,
}

fn corrupt(what: &str) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |err| BackupError::Corrupt(format!("{what}: {err}"))
}

impl<R: Read> Records<R> {
    fn new(mut reader: R) -> Result<Self, BackupError> {
        let mut header = [0u8; HEADER_BYTES as usize];
        reader.read_exact(&mut header).map_err(corrupt("header"))?;
        let u32_at =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[i..i + 8]);
            u64::from_be_bytes(b)
        };
        if &header[..8] != MAGIC {
            return Err(BackupError::NotABackup("no Keel header".into()));
        }
        let format_version = u32_at(8);
        if format_version != FORMAT_VERSION {
            return Err(BackupError::NotABackup(format!(
                "format version {format_version}; this Keel reads {FORMAT_VERSION}"
            )));
        }
        let info = BackupInfo {
            format_version,
            schema_version: u32_at(12),
            created_at_ms: u64_at(16),
            id_watermark: u64_at(24),
            trees: 0,
            entries: 0,
        };
        Ok(Self { reader, info, in_tree: false, done: false })
    }

    fn bytes(&mut self, limit: usize, what: &str) -> Result<Vec<u8>, BackupError> {
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len).map_err(corrupt(what))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > limit {
            return Err(BackupError::Corrupt(format!("{what} of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf).map_err(corrupt(what))?;
        Ok(buf)
    }

    fn next_record(&mut self) -> Result<Option<Record>, BackupError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.reader.read_exact(&mut tag).map_err(corrupt("record"))?;
        match tag[0] {
            TAG_TREE => {
                let name = self.bytes(MAX_NAME_BYTES, "tree name")?;
                self.in_tree = true;
                self.info.trees += 1;
                Ok(Some(Record::Tree(name)))
            }
            TAG_ENTRY if self.in_tree => {
                let key = self.bytes(MAX_VALUE_BYTES, "key")?;
                let value = self.bytes(MAX_VALUE_BYTES, "value")?;
                self.info.entries += 1;
                Ok(Some(Record::Entry(key, value)))
            }
            TAG_END => {
                let mut count = [0u8; 8];
                self.reader.read_exact(&mut count).map_err(corrupt("end"))?;
                if u64::from_be_bytes(count) != self.info.entries {
                    return Err(BackupError::Corrupt("the entry count does not match".into()));
                }
                let mut rest = [0u8; 1];
                if self.reader.read(&mut rest).map_err(corrupt("end"))? != 0 {
                    return Err(BackupError::Corrupt("bytes after the end record".into()));
                }
                self.done = true;
                Ok(None)
            }
            other => Err(BackupError::Corrupt(format!("unknown record tag {other}"))),
        }
    }
}

/// Whether `dir` is absent or an empty directory.
fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(err) => Err(io_err(format!("reading {}", dir.display()))(err)),
    }
}

/// Restores the backup at `file` into the store directory `target` while no Keel runs on it.
///
/// The file is verified first (checksum, structure, schema version). The data is imported into
/// a new directory beside `target` and renamed into place when complete, so an interrupted
/// restore leaves `target` as it was. A non-empty `target` is refused unless `force`; then it
/// is kept, renamed to `<target>.before-restore-<ms>`, and that path is returned.
///
/// # Errors
/// The file is refused, `target` is in use or not empty, or the import failed.
pub fn restore(
    file: &Path,
    target: &Path,
    force: bool,
) -> Result<(BackupInfo, Option<PathBuf>), BackupError> {
    let info = verify(file)?;
    let supported = migrations::CURRENT_SCHEMA_VERSION;
    if info.schema_version > supported {
        return Err(BackupError::SchemaTooNew { found: info.schema_version, supported });
    }
    let target_empty = is_empty_dir(target)?;
    if !target_empty {
        // A running Keel holds the lock: refuse before anything moves.
        drop(open_exclusive(target)?);
        if !force {
            return Err(BackupError::NotEmpty(target.to_owned()));
        }
    }
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = target.with_file_name(format!(".{name}.restoring-{}", now_ms()));
    let imported = import_into(file, &staging, &info);
    if let Err(err) = imported {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    let mut kept = None;
    if target.exists() {
        if target_empty {
            std::fs::remove_dir(target)
                .map_err(io_err(format!("removing {}", target.display())))?;
        } else {
            let aside = target.with_file_name(format!("{name}.before-restore-{}", now_ms()));
            std::fs::rename(target, &aside)
                .map_err(io_err(format!("moving {} aside", target.display())))?;
            kept = Some(aside);
        }
    }
    std::fs::rename(&staging, target)
        .map_err(io_err(format!("moving the restored store to {}", target.display())))?;
    // The renames are directory entries: durable only once the parent directory is synced.
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err(format!("syncing {}", parent.display())))?;
    Ok((info, kept))
}

fn import_into(file: &Path, dir: &Path, info: &BackupInfo) -> Result<(), BackupError> {
    let read = format!("reading {}", file.display());
    let len = std::fs::metadata(file).map_err(io_err(read.clone()))?.len();
    let reader = File::open(file).map_err(io_err(read))?;
    let mut records = Records::new(BufReader::new(reader).take(len - CHECKSUM_BYTES as u64))?;
    {
        // The restored directory becomes the data directory: private like one Keel creates.
        super::permissions::ensure_private_dir(dir)
            .map_err(io_err(format!("creating {}", dir.display())))?;
        let db = open_exclusive(dir)?;
        let mut tree: Option<sled::Tree> = None;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        while let Some(record) = records.next_record()? {
            match record {
                Record::Tree(name) => {
                    if let Some(tree) = &tree {
                        tree.apply_batch(std::mem::take(&mut batch)).map_err(StoreError::from)?;
                    }
                    pending = 0;
                    tree = Some(db.open_tree(name).map_err(StoreError::from)?);
                }
                Record::Entry(key, value) => {
                    batch.insert(key, value);
                    pending += 1;
                    if pending >= IMPORT_BATCH
                        && let Some(tree) = &tree
                    {
                        tree.apply_batch(std::mem::take(&mut batch)).map_err(StoreError::from)?;
                        pending = 0;
                    }
                }
            }
        }
        if let Some(tree) = &tree {
            tree.apply_batch(batch).map_err(StoreError::from)?;
        }
        advance_ids(&db, info.id_watermark)?;
        db.flush().map_err(StoreError::from)?;
    }
    // Opening it as Keel does runs the migrations of an older backup and checks the result. The
    // handle above was the only one and this directory is ours alone, so a lock still held is
    // sled releasing it (from a background thread, a moment after the drop).
    let store = super::open_once_released(&super::StoreConfig::new(dir))?;
    let next = store.next_id()?;
    if next <= info.id_watermark {
        return Err(BackupError::Corrupt(format!(
            "the restored id counter ({next}) is not past the backup's ({})",
            info.id_watermark
        )));
    }
    // Flush and fdatasync the whole log: a restore is not done until a power cut cannot undo it.
    store.flush_blocking()?;
    Ok(())
}

/// Makes every id the new store hands out larger than `watermark` (see [`Store::next_id`]).
fn advance_ids(db: &sled::Db, watermark: u64) -> Result<(), BackupError> {
    let meta = db.open_tree(super::trees::META).map_err(StoreError::from)?;
    meta.insert(super::ID_FLOOR_KEY, &watermark.saturating_add(1).to_be_bytes())
        .map_err(StoreError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreConfig, id_key, trees};

    /// `f`, retried while the store reads as in use ([`crate::store::once_released`]).
    fn once_released<T>(f: impl FnMut() -> Result<T, BackupError>) -> Result<T, BackupError> {
        crate::store::once_released(f, |err| matches!(err, BackupError::InUse { .. }))
    }

    fn store_with_rows() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path().join("data"))).unwrap();
        for i in 0..100u64 {
            store.next_id().unwrap();
            store
                .tree(trees::USERS)
                .unwrap()
                .insert(id_key(i), format!("user {i}").as_bytes())
                .unwrap();
        }
        store.tree(trees::FILLS).unwrap().insert(b"k", b"v".as_slice()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_backup_restores_every_tree_and_moves_the_id_counter_past_it() {
        let (dir, store) = store_with_rows();
        let file = dir.path().join("keel.backup");
        let info = store.write_backup(File::create(&file).unwrap()).unwrap();
        assert_eq!(verify(&file).unwrap(), info);
        assert!(info.entries >= 101);
        let watermark = info.id_watermark;
        drop(store);

        let target = dir.path().join("restored");
        let (restored, kept) = restore(&file, &target, false).unwrap();
        assert_eq!(restored.entries, info.entries);
        assert!(kept.is_none());
        // `restore` opened the target itself; sled lets go of its lock a moment after.
        let store = crate::store::reopen(&target);
        let users = store.tree(trees::USERS).unwrap();
        assert_eq!(users.len(), 100);
        assert_eq!(&*users.get(id_key(42)).unwrap().unwrap(), b"user 42");
        assert_eq!(&*store.tree(trees::FILLS).unwrap().get(b"k").unwrap().unwrap(), b"v");
        assert!(store.next_id().unwrap() > watermark);
    }

    #[test]
    fn truncated_or_altered_backups_are_refused() {
        let (dir, store) = store_with_rows();
        let mut bytes = Vec::new();
        store.write_backup(&mut bytes).unwrap();
        let file = dir.path().join("bad.backup");
        for end in [0, 5, 8, 40, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&file, &bytes[..end]).unwrap();
            let err = restore(&file, &dir.path().join("t"), false).unwrap_err();
            assert!(
                matches!(err, BackupError::Corrupt(_) | BackupError::NotABackup(_)),
                "{end}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        assert!(matches!(verify(&file), Err(BackupError::Corrupt(_))));
        std::fs::write(&file, b"not a backup at all, just some text that is long enough to test")
            .unwrap();
        assert!(matches!(verify(&file), Err(BackupError::NotABackup(_))));
        assert!(!dir.path().join("t").exists());
    }

    #[test]
    fn restore_refuses_a_store_in_use_and_a_non_empty_one_without_force() {
        let (dir, store) = store_with_rows();
        let file = dir.path().join("keel.backup");
        store.write_backup(File::create(&file).unwrap()).unwrap();
        let err = restore(&file, store.path(), true).unwrap_err();
        assert!(matches!(err, BackupError::InUse { .. }), "{err}");
        let path = store.path().to_owned();
        drop(store);
        let err = once_released(|| restore(&file, &path, false)).unwrap_err();
        assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
        let (_, kept) = once_released(|| restore(&file, &path, true)).unwrap();
        assert!(kept.unwrap().exists());
        assert_eq!(crate::store::reopen(&path).tree(trees::USERS).unwrap().len(), 100);
    }

    #[test]
    fn an_offline_backup_reads_a_stopped_store() {
        let (dir, store) = store_with_rows();
        let path = store.path().to_owned();
        drop(store);
        let mut bytes = Vec::new();
        let info = once_released(|| {
            bytes.clear();
            write_offline(&path, &mut bytes)
        })
        .unwrap();
        assert_eq!(info.schema_version, migrations::CURRENT_SCHEMA_VERSION);
        let file = dir.path().join("offline.backup");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(verify(&file).unwrap().entries, info.entries);
    }
}
