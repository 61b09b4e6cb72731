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
    /// # Errors
    /// The flush that would have covered this caller failed.
    pub async fn commit(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let ticket = inner.issued.fetch_add(1, Ordering::AcqRel) + 1;
        if inner.durable.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let _leader = inner.leader.lock().await;
        // Whoever held the lock before us may have flushed past our ticket.
        if inner.durable.load(Ordering::Acquire) >= ticket {
            metrics::counter!("keel_store_commits_total", "flush" => "shared").increment(1);
            return Ok(());
        }
        let covered = inner.issued.load(Ordering::Acquire);
        let started = Instant::now();
        inner.db.flush_async().await?;
        metrics::histogram!("keel_store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("keel_store_flushes_total").increment(1);
        metrics::counter!("keel_store_commits_total", "flush" => "led").increment(1);
        inner.durable.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }

    /// Number of flushes led so far and tickets issued, for tests and benchmarks.
    pub fn tickets_issued(&self) -> u64 {
        self.inner.issued.load(Ordering::Acquire)
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
}
