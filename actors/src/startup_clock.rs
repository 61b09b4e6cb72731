//! When the process started, for `keel_startup_seconds` (from process start to ready).
//!
//! `main` marks the start first thing; a process that never did (a test) starts the clock at
//! the first reading.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks now as the process start, unless it was marked already.
pub fn mark_process_start() {
    STARTED.get_or_init(Instant::now);
}

/// Time since the process started.
pub fn since_start() -> Duration {
    STARTED.get_or_init(Instant::now).elapsed()
}
