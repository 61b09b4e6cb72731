//! Group commit: many writers, one flush, one `fdatasync`.
//!
//! A writer that must not acknowledge before its write is durable calls [`GroupCommit::commit`]
//! after the write. Each call takes a ticket. One caller at a time leads a flush and, before it
//! starts, notes the newest ticket issued: every write behind those tickets is covered by that
//! flush, so all of their callers return when it completes. Under load this turns N syncs into
//! about two, while a lone writer pays exactly one.
//!
//! # Why Keel syncs sled's files itself
//!
//! On Linux, sled 0.34's `flush` ends each log write with `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)`: the pages reach the device, but neither the drive's volatile write cache nor the
//! file's metadata (its size, when the log grew) is flushed. Only sled's periodic flusher thread
//! calls `fsync`. An acknowledged write could therefore vanish on power loss. So the leader, after
//! sled's flush, calls `fdatasync` (`File::sync_data`) on sled's log file, `<path>/db`, through a
//! handle Keel opens itself ([`DurableFiles`]). `fdatasync` rather than `fsync`: it flushes the
//! data and whatever metadata reading it back needs (the size), skipping timestamps; on ext4 and
//! xfs it issues the cache flush (FUA/preflush) that `sync_file_range` never does.
//!
//! The alternative, a write-ahead log of Keel's own fdatasynced before sled is touched, would
//! double every write and need its own replay; sled's log already holds every write in order, it
//! only lacks the final barrier, so Keel adds that barrier and nothing else.
//!
//! The other files sled 0.34.7 writes:
//! - `conf`: written once at creation, then only read; sled `sync_all`s it.
//! - `snap.<lsn>`: snapshots, `sync_all`ed by sled before the rename; they are a cache of the log
//!   (recovery replays the log past them), so losing one loses nothing acknowledged.
//! - `blobs/<lsn>`: a value or page too large for a log segment (over a quarter of the 512 KiB
//!   segment) goes to a file of its own, which sled never syncs. The log only points at it, so an
//!   acknowledged write in a blob is durable only once the blob is: the leader also `fdatasync`s
//!   every blob file it has not synced before, then the `blobs` directory (new entries). Keel's
//!   rows are far smaller, so in practice this finds nothing; it costs one `readdir` per group.
//! - The `db` file and the `blobs` directory are new entries of the store directory when a store is
//!   created: [`DurableFiles::open`] fsyncs the directory once.
//!
//! The sync runs on tokio's blocking pool (`spawn_blocking`), never on an actor thread, and once per
//! group: the writers that share a flush share its sync. [`GroupCommit::syncs_issued`] and the
//! `keel_store_fsyncs_total` counter count them.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Mutex;

use super::StoreError;

/// Shares sled flushes, and the `fdatasync` after each, between concurrent writers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    files: Arc<DurableFiles>,
    /// Last ticket handed out.
    issued: AtomicU64,
    /// Highest ticket known to be durable.
    durable: AtomicU64,
    /// Syncs led so far (one per group), for tests; `keel_store_fsyncs_total` on `/metrics`.
    syncs: AtomicU64,
    /// Held by the caller that is flushing; the others queue behind it.
    leader: Mutex<()>,
}

impl GroupCommit {
    /// A flusher for `db`, whose files are in the directory `path`.
    ///
    /// Opens Keel's own handle on sled's log and fsyncs `path` (see [`DurableFiles::open`]); this
    /// blocks on disk I/O, like opening sled does.
    ///
    /// # Errors
    /// [`StoreError::Io`] when sled's log cannot be opened or the directory cannot be synced.
    pub fn new(db: sled::Db, path: &Path) -> Result<Self, StoreError> {
        let files = DurableFiles::open(path)
            .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                files: Arc::new(files),
                issued: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                syncs: AtomicU64::new(0),
                leader: Mutex::new(()),
            }),
        })
    }

    /// Returns once every write that completed before this call is on disk: flushed by sled and
    /// `fdatasync`ed by Keel.
    ///
    /// The waiting and the flushing happen in a task of their own, not in the caller's future: a
    /// caller may stop being polled while it holds the lock. An actix actor does not poll the
    /// futures it spawned while it waits (`ctx.wait`) on another one, so a bot whose spawned flush
    /// led when it began waiting on a second commit (its stop) held the lock forever, and every
    /// commit in the process queued behind it.
    ///
    /// # Errors
    /// The flush or the sync that would have covered this caller failed.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let ticket = self.inner.issued.fetch_add(1, Ordering::AcqRel) + 1;
        if self.inner.durable.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let inner = self.inner.clone();
        match tokio::spawn(async move { inner.flush_past(ticket).await }).await {
            Ok(flushed) => flushed,
            Err(never_finished) => {
                let reason = format!("the flush did not finish: {never_finished}");
                Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(reason))))
            }
        }
    }

    /// Flushes and syncs on the calling thread, for tools that run with the server stopped.
    ///
    /// # Errors
    /// The flush or the sync failed.
    pub fn commit_blocking(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        self.inner.files.sync().map_err(sync_failed)?;
        self.inner.syncs.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("keel_store_fsyncs_total").increment(1);
        Ok(())
    }

    /// Tickets issued so far (one per `commit` call), for tests and benchmarks.
    pub fn tickets_issued(&self) -> u64 {
        self.inner.issued.load(Ordering::Acquire)
    }

    /// Syncs of sled's log issued so far: one per group of commits, not one per commit.
    pub fn syncs_issued(&self) -> u64 {
        self.inner.syncs.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Makes `ticket` durable: by the flush of whoever holds the lock, or by leading one.
    async fn flush_past(&self, ticket: u64) -> Result<(), StoreError> {
        let _leader = self.leader.lock().await;
        // Whoever held the lock before us may have flushed past our ticket.
        if self.durable.load(Ordering::Acquire) >= ticket {
            metrics::counter!("keel_store_commits_total", "flush" => "shared").increment(1);
            return Ok(());
        }
        let covered = self.issued.load(Ordering::Acquire);
        let started = Instant::now();
        self.db.flush_async().await?;
        // sled's flush ended in sync_file_range, which leaves the drive's cache and the file's
        // size unflushed: fdatasync on the blocking pool, never on the caller's (actor) thread.
        let files = self.files.clone();
        match tokio::task::spawn_blocking(move || files.sync()).await {
            Ok(synced) => synced.map_err(sync_failed)?,
            Err(never_finished) => {
                let reason = format!("the sync did not finish: {never_finished}");
                return Err(sync_failed(std::io::Error::other(reason)));
            }
        }
        self.syncs.fetch_add(1, Ordering::AcqRel);
        metrics::counter!("keel_store_fsyncs_total").increment(1);
        metrics::histogram!("keel_store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("keel_store_flushes_total").increment(1);
        metrics::counter!("keel_store_commits_total", "flush" => "led").increment(1);
        self.durable.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }
}

/// A failed `fdatasync`, reported like a failed sled flush: nothing since the last good sync may
/// be acknowledged.
fn sync_failed(err: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(err))
}

/// Keel's own handles on the sled files that sled's flush does not make power-loss durable (see
/// the module doc).
#[derive(Debug)]
struct DurableFiles {
    /// sled's log, `<path>/db`, opened read-only: `fdatasync` needs no write access.
    log: File,
    /// `<path>/blobs`, where sled puts values too large for a log segment.
    blobs: PathBuf,
    /// Blob files already synced, so each is synced once; pruned to what the directory holds.
    synced_blobs: std::sync::Mutex<HashSet<OsString>>,
}

impl DurableFiles {
    /// Opens sled's log in `path` (sled has created it by now) and fsyncs `path` itself, so that
    /// the entries of a store created just now (`db`, `conf`, `blobs`) survive a power loss.
    fn open(path: &Path) -> std::io::Result<Self> {
        let log = File::open(path.join("db"))?;
        File::open(path)?.sync_all()?;
        let blobs = path.join("blobs");
        let files = Self { log, blobs, synced_blobs: std::sync::Mutex::new(HashSet::new()) };
        // Blobs written before this process started are synced once now, not at the first commit.
        files.sync_blobs()?;
        Ok(files)
    }

    /// `fdatasync`s sled's log, then any blob file not synced yet.
    fn sync(&self) -> std::io::Result<()> {
        self.log.sync_data()?;
        self.sync_blobs()
    }

    /// `fdatasync`s each blob file not synced before, then the `blobs` directory if any was new.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let mut synced =
            self.synced_blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(blob) => blob.sync_data()?,
                    // sled removed it (garbage collected) since the listing.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&self.blobs)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_return_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0u64..64 {
            let group = group.clone();
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.insert(i.to_be_bytes(), &[1u8][..]).unwrap();
                group.commit().await.unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(group.tickets_issued(), 64);
        assert_eq!(db.len(), 64);
        let syncs = group.syncs_issued();
        assert!((1..64).contains(&syncs), "64 commits issued {syncs} syncs");
    }

    #[tokio::test]
    async fn a_commit_syncs_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path()).unwrap();
        assert_eq!(group.syncs_issued(), 0);
        db.insert(b"order", &[1u8][..]).unwrap();
        group.commit().await.unwrap();
        assert_eq!(group.syncs_issued(), 1);
        db.insert(b"fill", &[2u8][..]).unwrap();
        group.commit().await.unwrap();
        assert_eq!(group.syncs_issued(), 2, "each commit after a write pays its own sync");
    }

    /// Writers that arrive while a flush is in progress all ride on the next one: one sync for
    /// the whole group, never one per writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path()).unwrap();
        // Stands in for a leader whose flush is still running.
        let busy = group.inner.leader.lock().await;
        let mut tasks = Vec::new();
        for i in 0u64..32 {
            db.insert(i.to_be_bytes(), &[1u8][..]).unwrap();
            let group = group.clone();
            tasks.push(tokio::spawn(async move { group.commit().await }));
        }
        while group.tickets_issued() < 32 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(busy);
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(group.syncs_issued(), 1, "32 waiting commits shared one sync");
    }

    /// sled never syncs a blob (a value too large for a log segment); the commit does.
    #[tokio::test]
    async fn a_commit_syncs_new_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path()).unwrap();
        db.insert(b"large", vec![7u8; 1 << 20]).unwrap();
        group.commit().await.unwrap();
        let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
        assert!(blobs > 0, "a 1 MiB value is a blob in sled 0.34");
        let synced = group.inner.files.synced_blobs.lock().unwrap().len();
        assert_eq!(synced, blobs);
    }

    /// A commit whose caller stops polling it (as an actix actor stops polling its spawned
    /// futures while it waits on another) does not hold up the commits behind it.
    #[tokio::test]
    async fn a_commit_nobody_polls_any_more_does_not_block_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupCommit::new(db.clone(), dir.path()).unwrap();
        db.insert(b"first", vec![1u8; 4096]).unwrap();
        let mut abandoned = Box::pin(group.commit());
        // Polled once (with the lock in its own hands before this change), then never again.
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(abandoned.as_mut().poll(cx).is_ready())
        })
        .await;
        assert!(!first, "the first poll cannot have flushed already");
        db.insert(b"second", vec![2u8; 4096]).unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), group.commit()).await;
        assert!(
            matches!(next, Ok(Ok(()))),
            "the next commit waited on the abandoned one: {next:?}"
        );
        drop(abandoned);
    }
}
