//! Group commit: many writers, one flush.
//!
//! A writer that must not acknowledge before its write is durable calls [`GroupCommit::commit`]
//! after the write. Each call takes a ticket. One caller at a time leads a flush and, before it
//! starts, notes the newest ticket issued: every write behind those tickets is covered by that
//! flush, so all of their callers return when it completes. Under load this turns N fsyncs into
//! about two, while a lone writer pays exactly one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Mutex;

use super::StoreError;

/// Shares sled flushes between concurrent writers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    /// Last ticket handed out.
    issued: AtomicU64,
    /// Highest ticket known to be durable.
    durable: AtomicU64,
    /// Held by the caller that is flushing; the others queue behind it.
    leader: Mutex<()>,
}

impl GroupCommit {
    /// A flusher for `db`.
    pub fn new(db: sled::Db) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                issued: AtomicU64::new(0),
                durable: AtomicU64::new(0),
                leader: Mutex::new(()),
            }),
        }
    }

    /// Returns once every write that completed before this call is on disk.
    ///
    /// The waiting and the flushing happen in a task of their own, not in the caller's future: a
    /// caller may stop being polled while it holds the lock. An actix actor does not poll the
    /// futures it spawned while it waits (`ctx.wait`) on another one, so a bot whose spawned flush
    /// led when it began waiting on a second commit (its stop) held the lock forever, and every
    /// commit in the process queued behind it.
    ///
    /// # Errors
    /// The flush that would have covered this caller failed.
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

    /// Tickets issued so far (one per `commit` call), for tests and benchmarks.
    pub fn tickets_issued(&self) -> u64 {
        self.inner.issued.load(Ordering::Acquire)
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
        metrics::histogram!("keel_store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("keel_store_flushes_total").increment(1);
        metrics::counter!("keel_store_commits_total", "flush" => "led").increment(1);
        self.durable.fetch_max(covered, Ordering::AcqRel);
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
        let group = GroupCommit::new(db.clone());
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
    }

    /// A commit whose caller stops polling it (as an actix actor stops polling its spawned
    /// futures while it waits on another) does not hold up the commits behind it.
    #[tokio::test]
    async fn a_commit_nobody_polls_any_more_does_not_block_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupCommit::new(db.clone());
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
