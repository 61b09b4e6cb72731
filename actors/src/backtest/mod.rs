//! Backtests as the runtime runs them: the run loop (`keel_core::backtest`) timed by the wall
//! clock, over trade files, and as jobs.
//!
//! - [`input`]: trade files (Keel's CSV, Binance's `trades` and `aggTrades` dumps, recordings)
//!   and the synthetic series `keel data synth` writes;
//! - [`run`]: the core run loop, timed;
//! - [`jobs`]: backtests as jobs on a bounded pool of worker threads (the HTTP API's);
//! - [`request`]: a backtest as a user asks for one, validated into a job;
//! - [`upload`]: uploaded trade files: naming, the check of their first rows, pruning.

pub mod input;
pub mod jobs;
pub mod request;
pub mod upload;

use std::time::Instant;

use keel_core::market::MarketEvent;
use keel_core::validation::FieldError;

pub use keel_core::backtest::{BacktestConfig, Outcome, Report};

/// Runs `config` over `ticks` (in time order) and times it.
///
/// # Errors
/// As [`keel_core::backtest::run`]: invalid strategy parameters, or the first unreadable tick.
pub fn run<E>(
    config: &BacktestConfig,
    ticks: impl IntoIterator<Item = Result<MarketEvent, E>>,
) -> Result<Result<Outcome, E>, Vec<FieldError>> {
    let started = Instant::now();
    let outcome = keel_core::backtest::run(config, ticks)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(outcome.map(|mut o| {
        o.report = o.report.timed(seconds);
        o
    }))
}
