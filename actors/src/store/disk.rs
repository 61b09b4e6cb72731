//! The disk guard: Keel stops taking on new work while the free space under the data directory
//! is below a floor (`store.min_free_bytes`), so that a filling disk is met with refusals and
//! paused bots, never with a write that fails half-way.
//!
//! The floor is a reserve, not a limit: below it Keel refuses new orders and bot starts (507
//! `INSUFFICIENT_STORAGE`) and pauses its running bots, but what is already live keeps being
//! recorded — fills of open orders, cancels, protective brackets, kill switches, the readiness
//! probe — and those writes are what the reserve is for. When the free space is back above the
//! floor, the guard says so and the bots it paused resume.
//!
//! If the disk fills anyway (another process took the reserve), sled's flush fails: the commit
//! is reported as failed and nothing after it is acknowledged. sled then refuses every write
//! until the process restarts; the log on disk holds every acknowledged write (the
//! `disk_guard` API test fills a tmpfs until writes fail, then reopens the store).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the runtime looks at the free space.
pub const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The free space under the data directory against the configured floor. Cheap to clone; every
/// clone shares the last reading.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    min_free_bytes: u64,
    low: AtomicBool,
    free_bytes: AtomicU64,
}

/// The free space is below the floor: new work is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "free disk space under the data directory ({free_bytes} bytes) is below store.min_free_bytes \
     ({min_free_bytes} bytes); new orders and bot starts are refused until space is freed"
)]
pub struct DiskLow {
    /// Free bytes at the last reading.
    pub free_bytes: u64,
    /// The floor.
    pub min_free_bytes: u64,
}

/// What [`DiskGuard::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskChange {
    /// Still on the same side of the floor.
    Same,
    /// Just went below the floor.
    WentLow,
    /// Just came back above it.
    Recovered,
}

impl DiskGuard {
    /// A guard for the file system holding `path`; `min_free_bytes` 0 turns it off. Reads the
    /// free space once, so a store opened on a full disk starts refusing at once.
    pub fn new(path: &Path, min_free_bytes: u64) -> Self {
        let guard = Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                min_free_bytes,
                low: AtomicBool::new(false),
                free_bytes: AtomicU64::new(u64::MAX),
            }),
        };
        guard.check();
        guard
    }

    /// Reads the free space again, records it (and `keel_store_free_bytes`), and says whether
    /// the guard changed sides. A file system that cannot be asked counts as having room: the
    /// guard must not stop trading on a failed `statvfs`, and a real shortage still shows as
    /// failed commits.
    pub fn check(&self) -> DiskChange {
        let Some(free) = free_bytes(&self.inner.path) else {
            return DiskChange::Same;
        };
        self.inner.free_bytes.store(free, Ordering::Relaxed);
        metrics::gauge!("keel_store_free_bytes").set(free as f64);
        let low = self.inner.min_free_bytes > 0 && free < self.inner.min_free_bytes;
        metrics::gauge!("keel_store_disk_low").set(if low { 1.0 } else { 0.0 });
        match (self.inner.low.swap(low, Ordering::Relaxed), low) {
            (false, true) => {
                tracing::error!(
                    free_bytes = free,
                    min_free_bytes = self.inner.min_free_bytes,
                    "disk space below store.min_free_bytes: refusing new orders and bot starts, \
                     pausing bots"
                );
                DiskChange::WentLow
            }
            (true, false) => {
                tracing::warn!(free_bytes = free, "disk space back above store.min_free_bytes");
                DiskChange::Recovered
            }
            _ => DiskChange::Same,
        }
    }

    /// Whether the free space was below the floor at the last reading.
    pub fn is_low(&self) -> bool {
        self.inner.low.load(Ordering::Relaxed)
    }

    /// Refuses new work while the free space is below the floor.
    ///
    /// # Errors
    /// [`DiskLow`] with the last reading.
    pub fn refuse_if_low(&self) -> Result<(), DiskLow> {
        if self.is_low() {
            return Err(DiskLow {
                free_bytes: self.inner.free_bytes.load(Ordering::Relaxed),
                min_free_bytes: self.inner.min_free_bytes,
            });
        }
        Ok(())
    }

    /// The floor, in bytes (0: off).
    pub fn min_free_bytes(&self) -> u64 {
        self.inner.min_free_bytes
    }

    /// Free bytes at the last reading (`u64::MAX` before one succeeded).
    pub fn free_bytes(&self) -> u64 {
        self.inner.free_bytes.load(Ordering::Relaxed)
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_zero_turns_the_guard_off() {
        let dir = tempfile::tempdir().unwrap();
        let off = DiskGuard::new(dir.path(), 0);
        assert!(!off.is_low() && off.refuse_if_low().is_ok());
        assert!(off.free_bytes() > 0 && off.free_bytes() < u64::MAX);

        let low = DiskGuard::new(dir.path(), u64::MAX);
        let refused = low.refuse_if_low().unwrap_err();
        assert_eq!(refused.min_free_bytes, u64::MAX);
        assert_eq!(refused.free_bytes, low.free_bytes());
        assert_eq!(low.check(), DiskChange::Same, "still low: no change reported");
    }

    #[test]
    fn crossing_the_floor_is_reported_once_each_way() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path(), 1);
        assert!(!guard.is_low());
        // Flip the recorded side by hand: the next reading reports the crossing back, once.
        guard.inner.low.store(true, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskChange::Recovered);
        assert_eq!(guard.check(), DiskChange::Same);
        assert!(guard.refuse_if_low().is_ok());
    }
}
